"""Refusing model files that could do more than compute, or need more memory than there is.

A ``.pb`` from elsewhere is data, but TensorFlow runs whatever ops it names, and some
ops read or write files (``ReadFile``, ``WriteFile``, ``Save``), talk to the network or
other processes, or call back into Python (``PyFunc``).  Before a graph is imported
its op types are checked against :data:`ALLOWED_OPS`, a list of pure math,
array and neural-network ops; anything else stops the run with a ModelError naming it.

A small file can also declare tensors far larger than itself: a ``Const`` may store a
single value for a shape of 2**40 elements (TensorFlow repeats the last stored value
to fill the shape when the graph first runs), and ``Fill``, ``Tile``, ``Range`` or
``Pad`` take their output shapes from constant inputs.  :func:`check_graph_sizes`
works those sizes out from the GraphDef alone, without TensorFlow and without decoding
weights, and refuses a graph that declares a tensor larger than the machine's memory
(:func:`memory_limit`) or a constant whose stored bytes disagree with its shape.
Weights stored in full pass however large they are (VGG16's fc1 holds 411 MB): the
limit is the memory, not a fixed size.
"""
from __future__ import annotations

import itertools
import math
import os
import struct
from pathlib import Path
from typing import NamedTuple

from ..errors import ModelError

#: Op types a feature-extraction graph may contain: tensors in, tensors out, no I/O.
ALLOWED_OPS = frozenset("""
    Placeholder PlaceholderWithDefault Const Identity IdentityN NoOp StopGradient
    Add AddV2 AddN Sub Mul Div RealDiv DivNoNan FloorDiv FloorMod Maximum Minimum Neg
    Abs Sign Square Sqrt Rsqrt Reciprocal Exp Log Log1p Pow SquaredDifference Floor Ceil
    Round Tanh Sigmoid Erf Sin Cos Cast Select SelectV2 ClipByValue
    Less LessEqual Greater GreaterEqual Equal NotEqual LogicalAnd LogicalOr LogicalNot
    Relu Relu6 Elu Selu LeakyRelu Softplus Softsign Softmax LogSoftmax
    MatMul BatchMatMul BatchMatMulV2 BatchMatMulV3 BiasAdd Einsum
    Conv2D DepthwiseConv2dNative Conv2DBackpropInput Conv3D
    MaxPool MaxPoolV2 AvgPool MaxPool3D AvgPool3D LRN
    FusedBatchNorm FusedBatchNormV2 FusedBatchNormV3
    Mean Sum Max Min Prod ArgMax ArgMin All Any
    Reshape Squeeze ExpandDims Transpose ConcatV2 Concat Split SplitV Pack Unpack
    Slice StridedSlice Gather GatherV2 GatherNd Tile Pad PadV2 MirrorPad Fill ZerosLike
    OnesLike Shape ShapeN Size Rank Range ReverseV2 BroadcastTo BroadcastArgs
    ResizeBilinear ResizeNearestNeighbor ResizeBicubic ResizeArea
    SpaceToDepth DepthToSpace SpaceToBatchND BatchToSpaceND
""".split())


def check_graph_ops(graph_def, source: str) -> None:
    """Raise ModelError if ``graph_def`` uses an op outside :data:`ALLOWED_OPS`.

    Functions in the graph's library are checked too, since any op can hide there.
    """
    used = {node.op: node.name for node in graph_def.node}
    for function in graph_def.library.function:
        for node in function.node_def:
            used.setdefault(node.op, f"{function.signature.name}/{node.name}")
    refused = sorted(op for op in used if op not in ALLOWED_OPS)
    if refused:
        details = ", ".join(f"{op} (node {used[op]!r})" for op in refused)
        raise ModelError(f"model file {source} contains op(s) that are not pure computation "
                         f"and is refused: {details}")


#: Files holding the memory limit of this process's cgroup (version 2, then version 1);
#: a file that is missing or says ``max`` sets no limit.
CGROUP_MEMORY_FILES = ("/sys/fs/cgroup/memory.max",
                       "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def memory_limit() -> int | None:
    """Bytes of memory this process can have at most.

    The physical memory (``SC_PAGE_SIZE * SC_PHYS_PAGES``), lowered by the memory limit
    of the cgroup the process runs in (a container, a batch job's slice) where one of
    :data:`CGROUP_MEMORY_FILES` holds a number.

    Returns
    -------
    int or None
        None where the operating system does not report its memory; sizes are then not
        compared with it.
    """
    try:
        limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    if limit <= 0:
        return None
    for path in CGROUP_MEMORY_FILES:
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limit = min(limit, int(text))
    return limit


def format_bytes(size: int) -> str:
    """A byte count for people, in powers of 1000: ``16 bytes``, ``4.0 MB``, ``4.4 TB``."""
    if size < 1000:
        return f"{size} bytes"
    scaled = float(size)
    for unit in ("KB", "MB", "GB", "TB", "PB"):
        scaled /= 1000
        if scaled < 999.95:
            return f"{scaled:.1f} {unit}"
    scaled /= 1000
    return f"{scaled:.1f} EB" if scaled < 999.95 else f"{scaled:.3g} EB"


#: Bytes of a string element before its characters (``sizeof(tensorflow::tstring)``).
_STRING_BYTES = 24

#: TensorProto ``dtype`` -> (name, bytes per element, field of the value list).  Other
#: types (resources, variants, references, sub-byte integers) are refused in constants:
#: a feature-extraction graph has no use for them and their sizes are not worked out.
_DTYPES = {
    1: ("float32", 4, "float_val"), 2: ("float64", 8, "double_val"),
    3: ("int32", 4, "int_val"), 4: ("uint8", 1, "int_val"), 5: ("int16", 2, "int_val"),
    6: ("int8", 1, "int_val"), 7: ("string", _STRING_BYTES, "string_val"),
    8: ("complex64", 8, "scomplex_val"), 9: ("int64", 8, "int64_val"),
    10: ("bool", 1, "bool_val"), 11: ("qint8", 1, "int_val"), 12: ("quint8", 1, "int_val"),
    13: ("qint32", 4, "int_val"), 14: ("bfloat16", 2, "half_val"),
    15: ("qint16", 2, "int_val"), 16: ("quint16", 2, "int_val"),
    17: ("uint16", 2, "int_val"), 18: ("complex128", 16, "dcomplex_val"),
    19: ("float16", 2, "half_val"), 22: ("uint32", 4, "uint32_val"),
    23: ("uint64", 8, "uint64_val"), 24: ("float8_e5m2", 1, "float8_val"),
    25: ("float8_e4m3fn", 1, "float8_val"), 26: ("float8_e4m3fnuz", 1, "float8_val"),
    27: ("float8_e4m3b11fnuz", 1, "float8_val"), 28: ("float8_e5m2fnuz", 1, "float8_val"),
}

#: Element counts stop growing here, far beyond any memory, so that a shape of many
#: huge dimensions costs no time to multiply out.
_HUGE = 1 << 100


def check_graph_sizes(graph_def, source: str, *, memory: int | None = None) -> None:
    """Raise ModelError if ``graph_def`` declares tensors that cannot be held in memory.

    Refused, each with a message naming the node:

    * a tensor attribute (the value of a ``Const``) whose ``tensor_content`` is not
      exactly its shape's element count times its type's size, that lists more values
      than its shape has elements, or whose type is not a number, bool or string type;
    * such a tensor, expanded to its shape, larger than ``memory``, or all of them
      together larger than ``memory``;
    * a node whose output size follows from the graph alone (``Fill``, ``Tile``,
      ``BroadcastTo``, ``Range``, ``Pad``, a resize to a constant size, broadcasting
      arithmetic ...; see :func:`_static_shapes`) with an output larger than ``memory``.

    Every node is visited once and no weights are decoded: a full VGG16 (553 MB) takes
    well under a second, most of it protobuf copying the stored weights.

    Parameters
    ----------
    graph_def : tensorflow.compat.v1.GraphDef
    source : str
        The model file, for messages.
    memory : int, optional
        Bytes a tensor may take at most; default :func:`memory_limit`.  Where that is
        unknown only the stored-versus-declared checks run.
    """
    limit = memory_limit() if memory is None else memory
    if limit is not None:
        available = f"more than this machine's {format_bytes(limit)} of memory"

    def refuse(node_name, op, problem):
        raise ModelError(f"model file {source} is refused: node {node_name!r} ({op}) {problem}")

    total = 0
    named_nodes = [(node.name, node) for node in graph_def.node]
    for function in graph_def.library.function:
        named_nodes += [(f"{function.signature.name}/{node.name}", node)
                        for node in function.node_def]
    for name, node in named_nodes:
        for tensor in _attr_tensors(node):
            size = _tensor_bytes(tensor, lambda problem, name=name, op=node.op:
                                 refuse(name, op, problem))
            if limit is not None and size > limit:
                refuse(name, node.op, f"declares {format_bytes(size)}, {available}")
            total += size
    if limit is not None and total > limit:
        raise ModelError(f"model file {source} is refused: its constants declare "
                         f"{format_bytes(total)} in total, {available}")
    if limit is None:
        return
    for node, known in _static_shapes(graph_def.node):
        if known.shape is None or node.op in ("Const", "Placeholder"):
            continue
        dtype, itemsize = _output_type(node)
        size = _elements(known.shape) * itemsize
        if size > limit:
            bounds = "" if known.exact else ", unknown dimensions counted as 1"
            refuse(node.name, node.op,
                   f"would produce {'' if known.exact else 'at least '}{format_bytes(size)} "
                   f"(shape {_shape_text(known.shape)} of {dtype}{bounds}), {available}")


def _attr(node, key):
    """``node.attr[key]`` or None; never adds the key (indexing a protobuf map would)."""
    return node.attr[key] if key in node.attr else None


def _attr_tensors(node):
    """The TensorProtos among a node's attributes (a Const's ``value``)."""
    for key in node.attr:
        value = node.attr[key]
        kind = value.WhichOneof("value")
        if kind == "tensor":
            yield value.tensor
        elif kind == "list":
            yield from value.list.tensor


def _elements(dims) -> int:
    count = 1
    for size in dims:
        count = min(count * size, _HUGE)
    return count


def _shape_text(dims) -> str:
    return "[" + ", ".join(str(size) for size in dims) + "]"


def _tensor_bytes(tensor, refuse) -> int:
    """Bytes ``tensor`` takes once expanded to its shape; ``refuse(problem)`` if malformed.

    ``tensor_content`` must hold exactly the bytes of the shape (string tensors: at
    least one byte per element, the shortest encoding TensorFlow reads); a value list
    may be shorter than the shape, since TensorFlow repeats its last value (that is how
    ``tf.zeros`` and ``tf.fill`` constants are stored), but not longer.
    """
    dims = [dim.size for dim in tensor.tensor_shape.dim]
    if tensor.tensor_shape.unknown_rank:
        refuse("declares a tensor of unknown rank, which a constant cannot have")
    if any(size < 0 for size in dims):
        refuse(f"declares the shape {_shape_text(dims)}, which has a negative dimension")
    if tensor.dtype not in _DTYPES:
        type_name = tensor.DESCRIPTOR.fields_by_name["dtype"].enum_type.values_by_number.get(
            tensor.dtype)
        refuse(f"holds a tensor of type {type_name.name if type_name else tensor.dtype}, "
               f"which is refused: constants must be numbers, booleans or strings")
    dtype, itemsize, field = _DTYPES[tensor.dtype]
    elements = _elements(dims)
    shape = _shape_text(dims)
    stored = len(tensor.tensor_content)
    if dtype == "string":
        if stored:
            if stored < elements:
                refuse(f"stores {stored} bytes but its shape {shape} of string needs at least "
                       f"{elements} bytes")
            return elements * _STRING_BYTES + stored
        values = tensor.string_val
        if len(values) > elements:
            refuse(f"stores {len(values)} values but its shape {shape} of string holds "
                   f"only {elements}")
        repeated = (elements - len(values)) * len(values[-1]) if len(values) else 0
        return elements * _STRING_BYTES + sum(len(value) for value in values) + repeated
    needed = elements * itemsize
    if stored:
        if stored != needed:
            refuse(f"stores {stored} bytes but its shape {shape} of {dtype} needs "
                   f"{needed} bytes")
        return needed
    count = len(getattr(tensor, field))
    if dtype.startswith("complex"):
        count //= 2  # real and imaginary parts
    if count > elements:
        refuse(f"stores {count} values but its shape {shape} of {dtype} holds only {elements}")
    return needed


def _output_type(node) -> tuple[str, int]:
    """Name and bytes per element of a node's output type (1 byte where unknown)."""
    if node.op in _OUTPUT_TYPES:
        return _OUTPUT_TYPES[node.op]
    for key in _TYPE_ATTRS.get(node.op, ("T", "dtype")):
        value = _attr(node, key)
        if value is not None and value.type in _DTYPES:
            dtype, itemsize, _field = _DTYPES[value.type]
            return dtype, itemsize
    return "unknown type", 1


_OUTPUT_TYPES = {
    **{op: ("bool", 1) for op in "Less LessEqual Greater GreaterEqual Equal NotEqual".split()},
    **{op: ("float32", 4) for op in ("ResizeBilinear", "ResizeBicubic", "ResizeArea")},
}
_TYPE_ATTRS = {"Range": ("Tidx",), "Shape": ("out_type",), "Cast": ("DstT",)}


# -- output shapes that follow from the graph alone --

class _Known(NamedTuple):
    """What is known of a node's first output.

    ``shape``: its dimensions, or None where not even the rank is known; ``exact``
    False means some dimensions are lower bounds, from an input dimension that is only
    known at run time (deep-spectrum feeds at least one image of at least one pixel, so
    such a dimension is at least 1).  ``value``: the elements of a small tensor whose
    values are known (shapes, paddings, multiples, range bounds).
    """
    shape: tuple | None = None
    value: tuple | None = None
    exact: bool = True


_UNKNOWN = _Known()

#: Tensors of at most this many elements have their values tracked; larger ones only
#: their shapes.
_VALUE_LIMIT = 256

#: TensorProto ``dtype`` -> (``struct`` code, value list field) of the types whose
#: values are tracked.
_VALUE_TYPES = {1: ("f", "float_val"), 2: ("d", "double_val"), 3: ("i", "int_val"),
                9: ("q", "int64_val")}


def _static_shapes(nodes):
    """``(node, _Known)`` for every node of a graph, inputs before the nodes they feed.

    Shapes are known where they follow from the graph: a ``Const``'s declared shape, a
    placeholder's (unknown dimensions counted as at least 1), the shape an op computes
    from constant inputs (``Fill`` dims, ``Tile`` multiples, ``Reshape`` shape, a
    resize's size ...), carried through the ops of :data:`_SHAPE_RULES`.  Everything
    else is unknown and left alone.  Inputs are followed by name (``name``, ``name:0``;
    ``^name`` control inputs are not data).
    """
    by_name = {node.name: node for node in nodes}
    known: dict[str, _Known] = {}
    for name in _inputs_first(by_name):
        node = by_name[name]
        rule = _SHAPE_RULES.get(node.op)
        result = _UNKNOWN
        if rule is not None:
            inputs = [known.get(source, _UNKNOWN) if index == 0 else _UNKNOWN
                      for source, index in _data_inputs(node)]
            try:
                result = rule(node, inputs)
            except (IndexError, ValueError, TypeError, ZeroDivisionError, OverflowError,
                    struct.error):
                result = _UNKNOWN  # malformed: TensorFlow reports it when the graph loads
        known[name] = result
        yield node, result


def _data_inputs(node):
    """``(node name, output index)`` of a node's data inputs (control inputs left out)."""
    for spec in node.input:
        if spec.startswith("^"):
            continue
        name, _, index = spec.partition(":")
        yield name, int(index) if index.isdigit() else 0


def _inputs_first(by_name):
    """Node names ordered so that every node comes after its inputs (cycles broken)."""
    order, seen = [], set()
    for root in by_name:
        stack = [(root, False)]
        while stack:
            name, finished = stack.pop()
            if finished:
                order.append(name)
                continue
            if name in seen or name not in by_name:
                continue
            seen.add(name)
            stack.append((name, True))
            stack.extend((source, False) for source, _index in _data_inputs(by_name[name])
                         if source not in seen)
    return order


def _exact(*inputs) -> bool:
    return all(known.exact for known in inputs)


def _dims(value):
    """A shape from a tracked value: non-negative integers, or None."""
    if value is None or not all(isinstance(size, int) and size >= 0 for size in value):
        return None
    return tuple(value)


def _scalar(value):
    return value[0] if value is not None and len(value) == 1 else None


def _broadcast(*shapes):
    """The NumPy broadcast of compatible shapes (of lower bounds: the largest), or None."""
    if any(shape is None for shape in shapes):
        return None
    aligned = itertools.zip_longest(*(reversed(shape) for shape in shapes), fillvalue=1)
    return tuple(reversed([0 if 0 in sizes else max(sizes) for sizes in aligned]))


def _axis(value, rank):
    axis = _scalar(value)
    if not isinstance(axis, int) or not -rank <= axis < rank:
        raise ValueError("axis out of range")
    return axis % rank


def _const_rule(node, inputs):
    value = _attr(node, "value")
    if value is None or value.WhichOneof("value") != "tensor":
        return _UNKNOWN
    tensor = value.tensor
    dims = tuple(dim.size for dim in tensor.tensor_shape.dim)
    kind = _VALUE_TYPES.get(tensor.dtype)
    count = _elements(dims)
    if kind is None or count > _VALUE_LIMIT:
        return _Known(dims)
    code, field = kind
    if tensor.tensor_content:
        return _Known(dims, struct.unpack(f"={count}{code}", tensor.tensor_content))
    values = list(getattr(tensor, field))[:count]
    filler = values[-1] if values else 0
    return _Known(dims, tuple(values + [filler] * (count - len(values))))


def _placeholder_rule(node, inputs):
    shape = _attr(node, "shape")
    if shape is None or shape.shape.unknown_rank:
        return _UNKNOWN
    dims = [dim.size for dim in shape.shape.dim]
    return _Known(tuple(max(size, 1) for size in dims), exact=min(dims, default=0) >= 0)


def _identity_rule(node, inputs):
    return inputs[0]


def _same_shape_rule(node, inputs):
    return _Known(inputs[0].shape, exact=inputs[0].exact)


def _cast_rule(node, inputs):
    """A Cast keeps tracked values where it casts to a tracked type (``tf.range`` casts
    its delta)."""
    target = _attr(node, "DstT")
    code = _VALUE_TYPES.get(target.type, ("",))[0] if target is not None else ""
    if inputs[0].value is None or not code:
        return _same_shape_rule(node, inputs)
    return inputs[0]._replace(value=tuple(float(item) if code in "fd" else int(item)
                                          for item in inputs[0].value))


def _broadcast_rule(node, inputs):
    return _Known(_broadcast(*(known.shape for known in inputs)), exact=_exact(*inputs))


def _fill_rule(node, inputs):
    return _Known(_dims(inputs[0].value), exact=inputs[0].exact)


def _broadcast_to_rule(node, inputs):
    target = _dims(inputs[1].value)
    if target is not None and inputs[0].shape is not None:
        return _Known(_broadcast(inputs[0].shape, target), exact=_exact(*inputs))
    return _Known(target, exact=inputs[1].exact)


def _tile_rule(node, inputs):
    shape, multiples = inputs[0].shape, _dims(inputs[1].value)
    if shape is None or multiples is None or len(shape) != len(multiples):
        return _UNKNOWN
    return _Known(tuple(size * times for size, times in zip(shape, multiples)),
                  exact=_exact(*inputs))


def _range_rule(node, inputs):
    start, limit, delta = (_scalar(known.value) for known in inputs[:3])
    if start is None or limit is None or not delta or not _exact(*inputs[:3]):
        return _UNKNOWN
    if all(isinstance(bound, int) for bound in (start, limit, delta)):
        count = -((start - limit) // delta)
    else:
        count = math.ceil((limit - start) / delta)
    return _Known((max(count, 0),))


def _pad_rule(node, inputs):
    shape, paddings = inputs[0].shape, _dims(inputs[1].value)
    if shape is None or paddings is None or len(paddings) != 2 * len(shape):
        return _UNKNOWN
    return _Known(tuple(size + paddings[2 * axis] + paddings[2 * axis + 1]
                        for axis, size in enumerate(shape)), exact=_exact(*inputs))


def _reshape_rule(node, inputs):
    target = inputs[1].value
    if target is None or not all(isinstance(size, int) and size >= -1 for size in target):
        return _UNKNOWN
    if target.count(-1) == 0:
        return _Known(tuple(target), exact=inputs[1].exact)
    rest = _elements(size for size in target if size != -1)
    if target.count(-1) > 1 or inputs[0].shape is None or rest == 0:
        return _UNKNOWN
    return _Known(tuple(_elements(inputs[0].shape) // rest if size == -1 else size
                        for size in target), exact=_exact(*inputs))


def _expand_dims_rule(node, inputs):
    shape = inputs[0].shape
    if shape is None:
        return _UNKNOWN
    axis = _axis(inputs[1].value, len(shape) + 1)
    return _Known(shape[:axis] + (1,) + shape[axis:], exact=_exact(*inputs))


def _concat_rule(node, inputs):
    parts, axis_input = (inputs[1:], inputs[0]) if node.op == "Concat" else (inputs[:-1],
                                                                              inputs[-1])
    shapes = [known.shape for known in parts]
    if not shapes or any(shape is None or len(shape) != len(shapes[0]) for shape in shapes):
        return _UNKNOWN
    axis = _axis(axis_input.value, len(shapes[0]))
    joined = sum(shape[axis] for shape in shapes)
    return _Known(shapes[0][:axis] + (joined,) + shapes[0][axis + 1:], exact=_exact(*inputs))


def _pack_rule(node, inputs):
    shape = _broadcast(*(known.shape for known in inputs))  # equal shapes; bounds: largest
    if shape is None or any(len(known.shape) != len(shape) for known in inputs):
        return _UNKNOWN
    axis_attr = _attr(node, "axis")
    axis = _axis((axis_attr.i if axis_attr is not None else 0,), len(shape) + 1)
    return _Known(shape[:axis] + (len(inputs),) + shape[axis:], exact=_exact(*inputs))


def _shape_rule(node, inputs):
    shape = inputs[0].shape
    if shape is None:
        return _UNKNOWN
    exact = inputs[0].exact and len(shape) <= _VALUE_LIMIT
    return _Known((len(shape),), shape if exact else None)


def _matmul_rule(node, inputs):
    a, b = inputs[0].shape, inputs[1].shape
    if a is None or b is None or len(a) != 2 or len(b) != 2:
        return _UNKNOWN
    transpose_a, transpose_b = (_attr(node, key) for key in ("transpose_a", "transpose_b"))
    rows = a[1] if transpose_a is not None and transpose_a.b else a[0]
    columns = b[0] if transpose_b is not None and transpose_b.b else b[1]
    return _Known((rows, columns), exact=_exact(*inputs[:2]))


def _gather_rule(node, inputs):
    params, indices = inputs[0].shape, inputs[1].shape
    batch_dims = _attr(node, "batch_dims")
    if params is None or indices is None or (batch_dims is not None and batch_dims.i):
        return _UNKNOWN
    axis = _axis(inputs[2].value, len(params)) if node.op == "GatherV2" else 0
    return _Known(params[:axis] + indices + params[axis + 1:], exact=_exact(*inputs))


def _resize_rule(node, inputs):
    images, size = inputs[0].shape, _dims(inputs[1].value)
    if images is None or size is None or len(images) != 4 or len(size) != 2:
        return _UNKNOWN
    return _Known((images[0], *size, images[3]), exact=_exact(*inputs[:2]))


def _conv_backprop_input_rule(node, inputs):
    return _Known(_dims(inputs[0].value), exact=inputs[0].exact)


#: Op type -> rule giving a node's output (``_Known``) from its inputs'.
_SHAPE_RULES = {
    "Const": _const_rule, "Placeholder": _placeholder_rule, "Identity": _identity_rule,
    "StopGradient": _identity_rule, "Cast": _cast_rule, "Fill": _fill_rule,
    "BroadcastTo": _broadcast_to_rule, "Tile": _tile_rule, "Range": _range_rule,
    "Pad": _pad_rule, "PadV2": _pad_rule, "MirrorPad": _pad_rule, "Reshape": _reshape_rule,
    "ExpandDims": _expand_dims_rule, "ConcatV2": _concat_rule, "Concat": _concat_rule,
    "Pack": _pack_rule, "Shape": _shape_rule, "MatMul": _matmul_rule,
    "Gather": _gather_rule, "GatherV2": _gather_rule, "AddN": _broadcast_rule,
    "BiasAdd": _same_shape_rule, "Conv2DBackpropInput": _conv_backprop_input_rule,
    **{op: _resize_rule for op in """
        ResizeBilinear ResizeNearestNeighbor ResizeBicubic ResizeArea""".split()},
    **{op: _same_shape_rule for op in """
        ZerosLike OnesLike Neg Abs Sign Square Sqrt Rsqrt Reciprocal Exp Log Log1p Floor
        Ceil Round Tanh Sigmoid Erf Sin Cos Relu Relu6 Elu Selu LeakyRelu Softplus
        Softsign LogicalNot Softmax LogSoftmax ReverseV2 LRN""".split()},
    **{op: _broadcast_rule for op in """
        Add AddV2 Sub Mul Div RealDiv DivNoNan FloorDiv FloorMod Maximum Minimum Pow
        SquaredDifference Less LessEqual Greater GreaterEqual Equal NotEqual LogicalAnd
        LogicalOr SelectV2""".split()},
}
