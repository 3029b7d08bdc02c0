"""Read BVLC AlexNet in Caffe's format and turn it into deep-spectrum's frozen graph.

A Caffe network comes as two files: the definition (``deploy.prototxt``, protobuf
text) and the trained weights (``.caffemodel``, binary protobuf, which usually also
holds the definition it was trained with).  This module

1. reads both with the message classes of :mod:`caffe_proto`, in the old ``V1``
   format (``layers``, as in BVLC's 2014 AlexNet caffemodel) or the current one
   (``layer``);
2. follows the network from its input and checks that it is AlexNet: the layer
   sequence conv1, relu, norm1, pool1, conv2, relu, norm2, pool2, conv3, relu, conv4,
   relu, conv5, relu, pool5, fc6, relu, fc7, relu, fc8 (dropout layers and a final
   softmax/loss/accuracy are allowed), with the kernel sizes, strides, paddings,
   groups, LRN and pooling settings of AlexNet, since those are what
   :func:`deep_spectrum_extractor.backend.alexnet.build_alexnet_graph` builds;
   channel widths may differ;
3. takes each layer's blobs from the caffemodel by layer name, as Caffe does when it
   loads trained weights, checks their shapes against the definition, and converts
   them to TensorFlow's layouts (:func:`caffe_to_tf_weights`);
4. builds the graph and writes it (:func:`convert_caffe_alexnet`).

No mean is subtracted and no other preprocessing is added: the graph convention has
none.  Everything is checked before TensorFlow is imported.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from google.protobuf import message as protobuf_message
from google.protobuf import text_format

import caffe_proto
from deep_spectrum_extractor.backend import alexnet
from deep_spectrum_extractor.errors import ModelError

__all__ = [
    "ALEXNET_SEQUENCE",
    "CaffeAlexNet",
    "CaffeConversionError",
    "CaffeLayer",
    "ConversionResult",
    "caffe_to_tf_weights",
    "convert_caffe_alexnet",
    "load_caffe_alexnet",
    "net_layers",
    "read_caffemodel",
    "read_prototxt",
    "weights_format",
]


class CaffeConversionError(ModelError):
    """A Caffe file cannot be read, is not AlexNet, or its weights do not fit."""


#: AlexNet's computing layers in order: (role, Caffe layer type).  Roles are the
#: names the layers get in the converted graph (conv1..conv5, fc6..fc8) and the
#: names of BVLC's deploy.prototxt for the others.
ALEXNET_SEQUENCE = (
    ("conv1", "Convolution"), ("relu1", "ReLU"), ("norm1", "LRN"), ("pool1", "Pooling"),
    ("conv2", "Convolution"), ("relu2", "ReLU"), ("norm2", "LRN"), ("pool2", "Pooling"),
    ("conv3", "Convolution"), ("relu3", "ReLU"),
    ("conv4", "Convolution"), ("relu4", "ReLU"),
    ("conv5", "Convolution"), ("relu5", "ReLU"), ("pool5", "Pooling"),
    ("fc6", "InnerProduct"), ("relu6", "ReLU"),
    ("fc7", "InnerProduct"), ("relu7", "ReLU"),
    ("fc8", "InnerProduct"),
)
_ROLE_TYPES = dict(ALEXNET_SEQUENCE)

#: Layer types that produce the network's input.
DATA_TYPES = frozenset({"Input", "Data", "ImageData", "MemoryData", "HDF5Data",
                        "WindowData", "DummyData"})
#: Layer types allowed after fc8, reading it; they are not part of the graph.
HEAD_TYPES = frozenset({"Softmax", "SoftmaxWithLoss", "Accuracy"})
#: Layer types that are the identity at test time.
IDENTITY_TYPES = frozenset({"Dropout"})

_PARAM_FIELDS = {
    "Convolution": "convolution_param",
    "InnerProduct": "inner_product_param",
    "LRN": "lrn_param",
    "Pooling": "pooling_param",
    "ReLU": "relu_param",
}


@dataclass(frozen=True)
class CaffeLayer:
    """One layer of a Caffe network, the same for the V1 and the current format.

    Attributes
    ----------
    name : str
        The layer's name (``conv1``).
    type : str
        The layer type as the current format spells it (``Convolution``); V1 enum
        values are translated as Caffe's own upgrade does.
    bottoms, tops : tuple of str
        Names of the blobs the layer reads and writes.
    message : LayerParameter or V1LayerParameter
        The protobuf message, for the type-specific parameters and the blobs.
    """

    name: str
    type: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    message: object = field(repr=False, compare=False)

    def params(self):
        """The layer's type-specific parameter message (defaults if unset)."""
        return getattr(self.message, _PARAM_FIELDS[self.type])

    @property
    def blobs(self):
        """The layer's stored parameter blobs (``BlobProto`` messages)."""
        return self.message.blobs


@dataclass(frozen=True)
class CaffeAlexNet:
    """AlexNet weights read from Caffe files, in TensorFlow's layout.

    Attributes
    ----------
    weights : dict[str, tuple[np.ndarray, np.ndarray]]
        ``{layer: (kernel, bias)}`` for conv1..conv5, fc6..fc8, float32, in the
        layout :func:`~deep_spectrum_extractor.backend.alexnet.build_alexnet_graph`
        takes.
    widths : dict[str, int]
        Output channels per layer.
    caffe_names : dict[str, str]
        Role (``conv1``) -> the layer's name in the Caffe files.
    weights_format : str
        ``"V1"`` when the caffemodel uses the old ``layers`` field, else ``"current"``.
    """

    weights: dict
    widths: dict
    caffe_names: dict
    weights_format: str

    @property
    def parameters(self) -> int:
        """Number of weight and bias values."""
        return int(sum(k.size + b.size for k, b in self.weights.values()))


@dataclass(frozen=True)
class ConversionResult:
    """What :func:`convert_caffe_alexnet` wrote.

    Attributes
    ----------
    output : pathlib.Path
        The frozen graph.
    network : CaffeAlexNet
        The weights it holds.
    """

    output: Path
    network: CaffeAlexNet


# --------------------------------------------------------------------------- reading

def read_caffemodel(path: str | os.PathLike):
    """Parse a binary ``.caffemodel`` (or any binary ``NetParameter``) file.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    caffe_proto.NetParameter

    Raises
    ------
    CaffeConversionError
        If the file cannot be read, is not a valid protobuf ``NetParameter`` (corrupt
        or truncated), or holds no layers.
    """
    path = Path(path)
    data = _read_bytes(path, "caffemodel")
    net = caffe_proto.NetParameter()
    try:
        net.ParseFromString(data)
    except (protobuf_message.DecodeError, RuntimeError, ValueError) as exc:
        raise CaffeConversionError(
            f"{path}: not a valid caffemodel: the binary protobuf data cannot be parsed "
            f"({exc}); the file is corrupt or truncated, or not a Caffe model "
            f"(a .prototxt must be given with --prototxt)") from exc
    if not net.layer and not net.layers:
        raise CaffeConversionError(
            f"{path}: not a valid caffemodel: it holds no layers"
            + (" (the file is empty)" if not data else
               " (the file is corrupt or truncated, or not a Caffe model)"))
    return net


def read_prototxt(path: str | os.PathLike):
    """Parse a network definition in protobuf text format (``deploy.prototxt``).

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    caffe_proto.NetParameter

    Raises
    ------
    CaffeConversionError
        If the file cannot be read or is not a valid definition (the message names
        the line and the problem), or defines no layers.
    """
    path = Path(path)
    data = _read_bytes(path, "prototxt")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CaffeConversionError(
            f"{path}: not a network definition: the file is not UTF-8 text "
            f"(a binary .caffemodel must be given with --caffemodel)") from exc
    net = caffe_proto.NetParameter()
    try:
        text_format.Parse(text, net)
    except text_format.ParseError as exc:
        raise CaffeConversionError(
            f"{path}: not a valid Caffe network definition: {exc}") from exc
    if not net.layer and not net.layers:
        raise CaffeConversionError(f"{path}: the network definition has no layers")
    return net


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise CaffeConversionError(f"{what} {path} does not exist") from exc
    except IsADirectoryError as exc:
        raise CaffeConversionError(f"{what} {path} is a directory, not a file") from exc
    except OSError as exc:
        raise CaffeConversionError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def weights_format(net) -> str:
    """``"V1"`` for a net in the old ``layers`` format, ``"current"`` otherwise."""
    return "V1" if net.layers else "current"


def net_layers(net, *, source: str | os.PathLike = "network", test_phase_only: bool = True
               ) -> list[CaffeLayer]:
    """The layers of a ``NetParameter`` in file order, in one representation.

    Parameters
    ----------
    net : caffe_proto.NetParameter
        A parsed caffemodel or prototxt, in either format.
    source : str or os.PathLike
        Name of the file, for error messages.
    test_phase_only : bool
        Drop layers that Caffe leaves out of a network run in the TEST phase (their
        ``include``/``exclude`` rules), as Caffe does for deployment.

    Returns
    -------
    list of CaffeLayer

    Raises
    ------
    CaffeConversionError
        If the net mixes both formats or a layer has no type.
    """
    if net.layer and net.layers:
        raise CaffeConversionError(
            f"{source}: uses both the V1 'layers' and the current 'layer' fields; "
            "Caffe accepts only one of them")
    layers = []
    for message in (net.layers or net.layer):
        if test_phase_only and not _in_test_phase(message):
            continue
        if net.layers:
            type_ = caffe_proto.V1_LAYER_TYPES.get(message.type, "")
        else:
            type_ = message.type
        if not type_:
            raise CaffeConversionError(
                f"{source}: layer '{message.name}' has no type (very old V0 layers are "
                "not supported; upgrade the file with Caffe's upgrade_net_proto tools)")
        layers.append(CaffeLayer(message.name, type_, tuple(message.bottom),
                                 tuple(message.top), message))
    return layers


def _in_test_phase(message) -> bool:
    """Caffe's include/exclude filtering for the state phase=TEST, level 0, no stages."""

    def meets(rule) -> bool:
        if rule.HasField("phase") and rule.phase != caffe_proto.TEST:
            return False
        if rule.HasField("min_level") and rule.min_level > 0:
            return False
        if rule.HasField("max_level") and rule.max_level < 0:
            return False
        return not rule.stage

    if message.include:
        return any(meets(rule) for rule in message.include)
    return not any(meets(rule) for rule in message.exclude)


def _input_shape(net, layers: list[CaffeLayer]) -> tuple[int, ...] | None:
    """The declared shape of the network's input blob, if the definition gives one."""
    if net.input:
        if net.input_shape:
            return tuple(net.input_shape[0].dim)
        if len(net.input_dim) >= 4:
            return tuple(net.input_dim[:4])
    for layer in layers:
        if layer.type == "Input" and layer.message.input_param.shape:
            return tuple(layer.message.input_param.shape[0].dim)
    return None


# --------------------------------------------------------------------------- topology

@dataclass(frozen=True)
class _Structure:
    layers: dict            # role -> CaffeLayer
    widths: dict            # role -> output channels (conv1..fc8)
    input_channels: dict    # role -> input channels / features (conv1..fc8)


def _alexnet_structure(net, source) -> _Structure:
    """Check that ``net`` is AlexNet and map its layers to AlexNet's roles."""
    layers = net_layers(net, source=source)
    shape = _input_shape(net, layers)
    if shape is not None and (len(shape) != 4 or shape[1] != 3
                              or tuple(shape[2:]) != (alexnet.INPUT_SIZE,) * 2):
        raise CaffeConversionError(
            f"{source}: the network input has shape {' x '.join(map(str, shape))}; "
            f"AlexNet takes N x 3 x {alexnet.INPUT_SIZE} x {alexnet.INPUT_SIZE} images")
    expected = ", ".join(f"{role} ({type_})" for role, type_ in ALEXNET_SEQUENCE)
    not_alexnet = f"{source}: not AlexNet's topology ({expected}): "
    chain: list[CaffeLayer] = []
    current = None
    for layer in layers:
        if layer.type in DATA_TYPES:
            if chain:
                raise CaffeConversionError(
                    not_alexnet + f"data layer '{layer.name}' ({layer.type}) comes after "
                    f"layer '{chain[-1].name}'")
            if current is None and layer.tops:
                current = layer.tops[0]
            continue
        if layer.type in HEAD_TYPES:
            if len(chain) < len(ALEXNET_SEQUENCE):
                raise CaffeConversionError(
                    not_alexnet + f"layer '{layer.name}' ({layer.type}) comes where AlexNet "
                    f"has {_expectation(len(chain))}")
            if not layer.bottoms or layer.bottoms[0] != current:
                raise CaffeConversionError(
                    not_alexnet + f"layer '{layer.name}' ({layer.type}) does not read the "
                    f"output of fc8 ('{current}')")
            continue
        if layer.type not in _PARAM_FIELDS and layer.type not in IDENTITY_TYPES:
            raise CaffeConversionError(
                not_alexnet + f"layer '{layer.name}' has type {layer.type}, which AlexNet "
                "does not use")
        if len(layer.bottoms) != 1 or len(layer.tops) != 1:
            raise CaffeConversionError(
                not_alexnet + f"layer '{layer.name}' ({layer.type}) reads {len(layer.bottoms)} "
                f"and writes {len(layer.tops)} blobs; AlexNet is a chain of layers with one "
                "input and one output each")
        if current is None:
            current = layer.bottoms[0]
        if layer.bottoms[0] != current:
            raise CaffeConversionError(
                not_alexnet + f"layer '{layer.name}' reads blob '{layer.bottoms[0]}', but the "
                f"layer before it writes '{current}'; AlexNet is a single chain")
        current = layer.tops[0]
        if layer.type in IDENTITY_TYPES:
            continue
        if len(chain) == len(ALEXNET_SEQUENCE):
            raise CaffeConversionError(
                not_alexnet + f"layer '{layer.name}' ({layer.type}) follows fc8 "
                f"('{chain[-1].name}'), where AlexNet ends")
        role, type_ = ALEXNET_SEQUENCE[len(chain)]
        if layer.type != type_:
            raise CaffeConversionError(
                not_alexnet + f"layer '{layer.name}' ({layer.type}) comes where AlexNet has "
                f"{_expectation(len(chain))}")
        chain.append(layer)
    if len(chain) < len(ALEXNET_SEQUENCE):
        last = f"after '{chain[-1].name}'" if chain else "before its first layer"
        raise CaffeConversionError(
            not_alexnet + f"the network ends {last}; AlexNet continues with "
            f"{_expectation(len(chain))}")
    roles = {role: layer for (role, _), layer in zip(ALEXNET_SEQUENCE, chain)}
    return _check_parameters(roles, source)


def _expectation(index: int) -> str:
    role, type_ = ALEXNET_SEQUENCE[index]
    return f"{role} ({type_})"


def _describe(role: str, layer: CaffeLayer) -> str:
    return role if role == layer.name else f"{role} (layer '{layer.name}')"


def _pair(values, h, w, has_h: bool, has_w: bool, default: int, what: str,
          where: str) -> tuple[int, int]:
    """A 2-D size from Caffe's ``x`` (1 or 2 values) or ``x_h``/``x_w`` fields."""
    values = list(values)
    if has_h or has_w:
        if not (has_h and has_w) or values:
            raise CaffeConversionError(
                f"{where}: give {what} either as {what}_h and {what}_w together or as "
                f"{what}, not both")
        return int(h), int(w)
    if not values:
        return default, default
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    raise CaffeConversionError(f"{where}: {what} has {len(values)} values; a 2-D layer "
                               "takes 1 or 2")


def _check_parameters(roles: dict, source) -> _Structure:
    """Check the layer parameters against what the AlexNet graph builder builds."""
    widths, inputs = {}, {}
    channels = 3
    for role, layer in roles.items():
        where = f"{source}: {_describe(role, layer)}"
        p = layer.params()
        if layer.type == "Convolution":
            spec = alexnet.CONV_SPECS[role]
            kernel = _pair(p.kernel_size, p.kernel_h, p.kernel_w, p.HasField("kernel_h"),
                           p.HasField("kernel_w"), 0, "kernel_size", where)
            stride = _pair(p.stride, p.stride_h, p.stride_w, p.HasField("stride_h"),
                           p.HasField("stride_w"), 1, "stride", where)
            pad = _pair(p.pad, p.pad_h, p.pad_w, p.HasField("pad_h"), p.HasField("pad_w"),
                        0, "pad", where)
            dilation = _pair(p.dilation, 0, 0, False, False, 1, "dilation", where)
            # TF's SAME padding equals Caffe's symmetric (k-1)/2 for stride 1, odd k.
            spec_pad = 0 if spec.padding == "VALID" else (spec.kernel - 1) // 2
            found = (kernel, stride, pad, dilation, p.group)
            wanted = ((spec.kernel,) * 2, (spec.stride,) * 2, (spec_pad,) * 2, (1, 1),
                      spec.group)
            if found != wanted:
                raise CaffeConversionError(
                    f"{where}: {_conv_text(*found)}; AlexNet's {role} has "
                    f"{_conv_text(*wanted)}, the only configuration the graph supports")
            if p.axis != 1:
                raise CaffeConversionError(f"{where}: axis {p.axis} is not supported "
                                           "(AlexNet convolves over axis 1)")
            width = _num_output(p, where)
            if width % spec.group or channels % spec.group:
                raise CaffeConversionError(
                    f"{where}: group {spec.group} must divide the {channels} input and the "
                    f"{width} output channels")
            widths[role], inputs[role] = width, channels
            channels = width
        elif layer.type == "InnerProduct":
            if p.axis != 1:
                raise CaffeConversionError(f"{where}: axis {p.axis} is not supported "
                                           "(AlexNet's inner products use axis 1)")
            width = _num_output(p, where)
            if role == "fc6":
                channels *= alexnet.POOL5_SIZE ** 2
            widths[role], inputs[role] = width, channels
            channels = width
        elif layer.type == "LRN":
            found = (p.local_size, np.float32(p.alpha), np.float32(p.beta), np.float32(p.k),
                     p.norm_region)
            wanted = (alexnet.LRN["local_size"], np.float32(alexnet.LRN["alpha"]),
                      np.float32(alexnet.LRN["beta"]), np.float32(1.0), 0)
            if found != wanted:
                raise CaffeConversionError(
                    f"{where}: {_lrn_text(*found)}; AlexNet's {role} has "
                    f"{_lrn_text(*wanted)}, the only configuration the graph supports")
        elif layer.type == "Pooling":
            if p.global_pooling:
                raise CaffeConversionError(f"{where}: global pooling; AlexNet's {role} pools "
                                           "3x3 windows")
            kernel = _pair(_set(p, "kernel_size"), p.kernel_h, p.kernel_w,
                           p.HasField("kernel_h"), p.HasField("kernel_w"), 0, "kernel_size",
                           where)
            stride = _pair(_set(p, "stride"), p.stride_h, p.stride_w, p.HasField("stride_h"),
                           p.HasField("stride_w"), 1, "stride", where)
            pad = _pair(_set(p, "pad"), p.pad_h, p.pad_w, p.HasField("pad_h"),
                        p.HasField("pad_w"), 0, "pad", where)
            size, step = alexnet.POOL["size"], alexnet.POOL["stride"]
            # Ceil and floor rounding (round_mode) give the same sizes for AlexNet's
            # 55 -> 27 -> 13 -> 6, so either is accepted.
            found = (p.pool, kernel, stride, pad)
            wanted = (0, (size, size), (step, step), (0, 0))
            if found != wanted:
                raise CaffeConversionError(
                    f"{where}: {_pool_text(*found)}; AlexNet's {role} has "
                    f"{_pool_text(*wanted)}, the only configuration the graph supports")
        elif layer.type == "ReLU":
            if p.negative_slope != 0:
                raise CaffeConversionError(
                    f"{where}: leaky ReLU (negative_slope {p.negative_slope}); AlexNet uses "
                    "a plain ReLU")
    return _Structure(roles, widths, inputs)


def _set(params, name: str) -> list[int]:
    """An optional scalar field as a list: ``[value]`` if set, ``[]`` if not."""
    return [getattr(params, name)] if params.HasField(name) else []


def _num_output(p, where: str) -> int:
    if not p.num_output:
        raise CaffeConversionError(f"{where}: num_output is missing or 0")
    return int(p.num_output)


def _conv_text(kernel, stride, pad, dilation, group) -> str:
    text = (f"kernel {kernel[0]}x{kernel[1]}, stride {_sizes(stride)}, pad {_sizes(pad)}, "
            f"group {group}")
    return text if dilation == (1, 1) else text + f", dilation {_sizes(dilation)}"


def _lrn_text(local_size, alpha, beta, k, region) -> str:
    region = "across channels" if region == 0 else "within channel"
    return (f"LRN {region} local_size {local_size}, alpha {float(alpha):g}, "
            f"beta {float(beta):g}, k {float(k):g}")


def _pool_text(method, kernel, stride, pad) -> str:
    method = {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}.get(method, str(method))
    return (f"{method} pooling, kernel {kernel[0]}x{kernel[1]}, stride {_sizes(stride)}, "
            f"pad {_sizes(pad)}")


def _sizes(pair) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


# --------------------------------------------------------------------------- weights

def _blob_shape(blob) -> tuple[int, ...]:
    if any(blob.HasField(name) for name in ("num", "channels", "height", "width")):
        return (blob.num, blob.channels, blob.height, blob.width)
    return tuple(int(d) for d in blob.shape.dim)


def _blob_array(blob, expected: tuple[int, ...], where: str) -> np.ndarray:
    """A blob's values as float32 of shape ``expected``.

    Like Caffe's ``Blob::ShapeEquals``, a 4-D legacy shape (num, channels, height,
    width) matches ``expected`` padded with leading 1s: V1 files store inner-product
    weights as (1, 1, out, in) and biases as (1, 1, 1, out).
    """
    shape = _blob_shape(blob)
    padded = (1,) * (4 - len(expected)) + tuple(expected)
    if shape != tuple(expected) and shape != padded:
        raise CaffeConversionError(
            f"{where} has shape {_shape_text(shape)}, but the network definition needs "
            f"{_shape_text(expected)}")
    count = int(np.prod(expected))
    if len(blob.data):
        values = np.asarray(blob.data, dtype=np.float32)
    elif len(blob.double_data):
        values = np.asarray(blob.double_data, dtype=np.float64).astype(np.float32)
    else:
        raise CaffeConversionError(f"{where} holds no values (the file is truncated or "
                                   "stores no trained weights)")
    if values.size != count:
        raise CaffeConversionError(
            f"{where} holds {values.size} values, but its shape {_shape_text(shape)} needs "
            f"{count} (the file is corrupt)")
    return values.reshape(expected)


def _shape_text(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _caffe_blobs(structure: _Structure, weight_layers: dict, source) -> dict:
    """``{role: (weights, bias)}`` in Caffe's layout, taken from the caffemodel."""
    blobs = {}
    for role in alexnet.LAYERS:
        layer = structure.layers[role]
        where = f"{source}: {_describe(role, layer)}"
        stored = weight_layers.get(layer.name)
        if stored is None or not stored.blobs:
            raise CaffeConversionError(
                f"{where}: the caffemodel holds no weights for layer '{layer.name}' "
                "(truncated file, or a model of another network?)")
        p = layer.params()
        out, inp = structure.widths[role], structure.input_channels[role]
        if layer.type == "Convolution":
            spec = alexnet.CONV_SPECS[role]
            shape = (out, inp // spec.group, spec.kernel, spec.kernel)
        elif p.transpose:
            shape = (inp, out)
        else:
            shape = (out, inp)
        wanted = 2 if p.bias_term else 1
        if len(stored.blobs) != wanted:
            raise CaffeConversionError(
                f"{where}: the caffemodel holds {len(stored.blobs)} blobs for layer "
                f"'{layer.name}', the definition needs {wanted} (weights"
                f"{' and bias' if p.bias_term else ''})")
        weights = _blob_array(stored.blobs[0], shape, f"{where}: the weights blob")
        if layer.type == "InnerProduct" and p.transpose:
            weights = weights.T
        if p.bias_term:
            bias = _blob_array(stored.blobs[1], (out,), f"{where}: the bias blob")
        else:
            bias = np.zeros(out, dtype=np.float32)
        blobs[role] = (weights, bias)
    return blobs


def caffe_to_tf_weights(blobs: dict) -> dict:
    """Convert AlexNet weights from Caffe's layouts to TensorFlow's.

    Parameters
    ----------
    blobs : dict[str, tuple[np.ndarray, np.ndarray]]
        ``{layer: (weights, bias)}`` for conv1..conv5 and fc6..fc8 in Caffe's
        layout: convolution weights ``[shape=(out, in/group, kh, kw)]``,
        inner-product weights ``[shape=(out, in)]``, where fc6's input is pool5
        flattened in Caffe's NCHW order (channel, row, column).

    Returns
    -------
    dict[str, tuple[np.ndarray, np.ndarray]]
        Float32 ``{layer: (kernel, bias)}``: convolution kernels
        ``[shape=(kh, kw, in/group, out)]`` (the groups stay split along the last
        axis, as Caffe splits its outputs) and inner-product matrices
        ``[shape=(in, out)]`` where fc6's rows follow TensorFlow's NHWC flatten
        (row, column, channel) of pool5.

    Examples
    --------
    >>> import numpy as np
    >>> fc6 = np.arange(2 * 3 * 6 * 6, dtype=np.float32).reshape(2, 3 * 36)
    >>> tf_fc6 = caffe_to_tf_weights({"fc6": (fc6, np.zeros(2))})["fc6"][0]
    >>> tf_fc6.shape
    (108, 2)
    >>> # NHWC row (h=0, w=1, c=2) is Caffe's column c*36 + h*6 + w = 73
    >>> int(tf_fc6[0 * 18 + 1 * 3 + 2, 0])
    73
    """
    converted = {}
    for name, (weights, bias) in blobs.items():
        weights = np.asarray(weights, dtype=np.float32)
        if weights.ndim == 4:
            kernel = weights.transpose(2, 3, 1, 0)
        elif name == "fc6":
            out, features = weights.shape
            side = alexnet.POOL5_SIZE
            channels, rest = divmod(features, side * side)
            if rest:
                raise CaffeConversionError(
                    f"fc6 has {features} inputs, not a multiple of pool5's "
                    f"{side}x{side} positions")
            kernel = (weights.reshape(out, channels, side, side)
                      .transpose(2, 3, 1, 0).reshape(side * side * channels, out))
        else:
            kernel = weights.T
        converted[name] = (np.ascontiguousarray(kernel),
                           np.ascontiguousarray(bias, dtype=np.float32))
    return converted


def load_caffe_alexnet(caffemodel: str | os.PathLike,
                       prototxt: str | os.PathLike | None = None) -> CaffeAlexNet:
    """Read AlexNet from Caffe files and convert its weights to TensorFlow's layout.

    Parameters
    ----------
    caffemodel : str or os.PathLike
        The trained weights (binary ``NetParameter``, V1 or current format).
    prototxt : str or os.PathLike, optional
        The network definition (``deploy.prototxt``).  Without it, the definition
        stored in the caffemodel is used (BVLC's caffemodel carries one).  With it,
        the prototxt defines the network and the caffemodel supplies the blobs of the
        layers with the same names, as when Caffe loads trained weights.

    Returns
    -------
    CaffeAlexNet

    Raises
    ------
    CaffeConversionError
        If a file cannot be read or parsed, the network is not AlexNet, or the blobs
        are missing or do not have the shapes the definition implies.
    """
    model = read_caffemodel(caffemodel)
    if prototxt is not None:
        definition, source = read_prototxt(prototxt), Path(prototxt)
    else:
        definition, source = model, Path(caffemodel)
    structure = _alexnet_structure(definition, source)
    weight_layers = {}
    for layer in net_layers(model, source=caffemodel, test_phase_only=False):
        if not layer.blobs:
            continue
        if layer.name in weight_layers:
            raise CaffeConversionError(
                f"{caffemodel}: two layers named '{layer.name}' hold weights")
        weight_layers[layer.name] = layer
    blobs = _caffe_blobs(structure, weight_layers, Path(caffemodel))
    weights = caffe_to_tf_weights(blobs)
    expected = alexnet.weight_shapes(structure.widths)
    for name, (kernel_shape, bias_shape) in expected.items():
        kernel, bias = weights[name]
        if kernel.shape != kernel_shape or bias.shape != bias_shape:  # pragma: no cover
            raise CaffeConversionError(
                f"internal error: converted {name} has shapes {kernel.shape}, {bias.shape}; "
                f"the graph builder expects {kernel_shape}, {bias_shape}")
    names = {role: structure.layers[role].name for role in alexnet.LAYERS}
    return CaffeAlexNet(weights, dict(structure.widths), names, weights_format(model))


def convert_caffe_alexnet(caffemodel: str | os.PathLike, output: str | os.PathLike, *,
                          prototxt: str | os.PathLike | None = None) -> ConversionResult:
    """Convert BVLC AlexNet (or a narrower net with its topology) to a frozen graph.

    Parameters
    ----------
    caffemodel : str or os.PathLike
        The trained weights.
    output : str or os.PathLike
        Where to write the frozen ``GraphDef`` (``AlexNet.pb``); written atomically,
        so a failed conversion leaves no partial file.
    prototxt : str or os.PathLike, optional
        The network definition; see :func:`load_caffe_alexnet`.

    Returns
    -------
    ConversionResult

    Raises
    ------
    CaffeConversionError
        See :func:`load_caffe_alexnet`; also if the output cannot be written.
    """
    from deep_spectrum_extractor.backend.graph_io import write_graph_def

    network = load_caffe_alexnet(caffemodel, prototxt)
    graph_def = alexnet.build_alexnet_graph(network.weights)
    try:
        path = write_graph_def(graph_def, output)
    except OSError as exc:
        raise CaffeConversionError(f"cannot write {output}: {exc.strerror or exc}") from exc
    return ConversionResult(Path(path), network)
