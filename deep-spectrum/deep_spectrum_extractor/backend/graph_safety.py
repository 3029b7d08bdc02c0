"""Refusing model files that could do more than compute.

A ``.pb`` from elsewhere is data, but TensorFlow runs whatever ops it names, and some
ops read or write files (``ReadFile``, ``WriteFile``, ``Save``), talk to the network or
other processes, or call back into Python (``PyFunc``).  Before a graph is imported
its op types are checked against :data:`ALLOWED_OPS`, a list of pure math,
array and neural-network ops; anything else stops the run with a ModelError naming it.
"""
from __future__ import annotations

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
