"""AlexNet (BVLC, Krizhevsky et al. 2012) as a frozen graph in deep-spectrum's convention.

:func:`build_alexnet_graph` turns a set of weights into a ``GraphDef``: the input
placeholder, the RGB -> BGR flip, a TF1-style bilinear resize to 227x227, then
conv1..conv5 (each the ReLU output, with cross-channel LRN after conv1 and conv2 and
max pooling after norm1, norm2 and conv5), fc6, fc7 (ReLU outputs) and fc8 (logits).
Weights are constants, so the graph is frozen as built.

Weights use TensorFlow's layouts: convolution kernels ``(kh, kw, in/group, out)``,
fully connected matrices ``(in, out)`` where fc6's input is pool5 flattened in NHWC
order.  The Caffe converter (``convert-models/``) produces exactly this from a
``.caffemodel``; tests use :func:`random_alexnet_weights` with fewer channels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .convention import INPUT_NAME
from .tf import tensorflow

INPUT_SIZE = 227
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


@dataclass(frozen=True)
class ConvSpec:
    kernel: int
    stride: int
    padding: str
    group: int


# Caffe's deploy.prototxt for bvlc_alexnet: conv1 and the pools use no padding
# (VALID); conv2 (pad 2, k 5) and conv3..5 (pad 1, k 3) keep their size (SAME).
CONV_SPECS = {
    "conv1": ConvSpec(kernel=11, stride=4, padding="VALID", group=1),
    "conv2": ConvSpec(kernel=5, stride=1, padding="SAME", group=2),
    "conv3": ConvSpec(kernel=3, stride=1, padding="SAME", group=1),
    "conv4": ConvSpec(kernel=3, stride=1, padding="SAME", group=2),
    "conv5": ConvSpec(kernel=3, stride=1, padding="SAME", group=2),
}
LRN = {"local_size": 5, "alpha": 1e-4, "beta": 0.75}
POOL = {"size": 3, "stride": 2}
POOL5_SIZE = 6  # 227 -> conv1 55 -> pool1 27 -> pool2 13 -> pool5 6

#: Output channels of the real network.
FULL_WIDTHS = {"conv1": 96, "conv2": 256, "conv3": 384, "conv4": 384, "conv5": 256,
               "fc6": 4096, "fc7": 4096, "fc8": 1000}
#: Same topology, fewer channels: small enough for fast tests (every conv width even
#: so that the two-way groups split evenly).
SMALL_WIDTHS = {"conv1": 8, "conv2": 16, "conv3": 24, "conv4": 24, "conv5": 16,
                "fc6": 64, "fc7": 48, "fc8": 10}


def weight_shapes(widths: dict[str, int]) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Kernel and bias shapes (TF layout) for AlexNet with the given widths."""
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    channels = 3
    for name in LAYERS[:5]:
        spec = CONV_SPECS[name]
        out = widths[name]
        shapes[name] = ((spec.kernel, spec.kernel, channels // spec.group, out), (out,))
        channels = out
    features = POOL5_SIZE * POOL5_SIZE * channels
    for name in LAYERS[5:]:
        shapes[name] = ((features, widths[name]), (widths[name],))
        features = widths[name]
    return shapes


def random_alexnet_weights(widths: dict[str, int] = SMALL_WIDTHS, *, seed: int = 0):
    """Random weights for AlexNet's topology, scaled so that activations stay finite.

    Kernels use He scaling (``sqrt(2/fan_in)``), which keeps the magnitude of ReLU
    activations roughly constant from layer to layer, so that every layer's output
    depends on the image rather than on the biases alone.
    """
    rng = np.random.default_rng(seed)
    weights = {}
    for name, (kshape, bshape) in weight_shapes(widths).items():
        fan_in = int(np.prod(kshape[:-1]))
        kernel = rng.standard_normal(kshape).astype(np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        bias = rng.uniform(0.0, 0.1, size=bshape).astype(np.float32)
        weights[name] = (kernel, bias)
    return weights


def build_alexnet_graph(weights):
    """Build AlexNet as a frozen ``GraphDef`` in the deep-spectrum convention.

    Parameters
    ----------
    weights : dict[str, tuple[np.ndarray, np.ndarray]]
        ``{layer: (kernel, bias)}`` for conv1..conv5 and fc6..fc8 in TF layout.

    Returns
    -------
    tensorflow.compat.v1.GraphDef
    """
    tf = tensorflow()

    v1 = tf.compat.v1
    missing = [name for name in LAYERS if name not in weights]
    if missing:
        raise ValueError(f"weights missing for layers: {', '.join(missing)}")
    graph = tf.Graph()
    with graph.as_default():
        images = v1.placeholder(tf.float32, shape=[None, None, None, 3], name=INPUT_NAME)
        bgr = tf.reverse(images, axis=[-1], name="rgb_to_bgr")
        net = v1.image.resize_bilinear(bgr, [INPUT_SIZE, INPUT_SIZE], align_corners=False,
                                       half_pixel_centers=False, name="resize")
        for name in LAYERS[:5]:
            net = _conv(tf, net, name, CONV_SPECS[name], *weights[name])
            if name in ("conv1", "conv2"):
                index = name[-1]
                net = tf.nn.local_response_normalization(
                    net, depth_radius=LRN["local_size"] // 2, bias=1.0,
                    alpha=LRN["alpha"] / LRN["local_size"], beta=LRN["beta"],
                    name=f"norm{index}")
                net = _max_pool(tf, net, f"pool{index}")
            elif name == "conv5":
                net = _max_pool(tf, net, "pool5")
        net = tf.reshape(net, [-1, int(np.prod(net.shape[1:]))], name="flatten")
        for name in LAYERS[5:]:
            kernel, bias = weights[name]
            with tf.name_scope(name):
                out = tf.nn.bias_add(tf.matmul(net, tf.constant(kernel, name="weights")),
                                     tf.constant(bias, name="biases"),
                                     name=name if name == "fc8" else "preactivation")
                net = out if name == "fc8" else tf.nn.relu(out, name=name)
    return graph.as_graph_def()


def _conv(tf, net, name, spec: ConvSpec, kernel, bias):
    with tf.name_scope(name):
        kernel_t = tf.constant(kernel, name="weights")
        bias_t = tf.constant(bias, name="biases")
        strides = [1, spec.stride, spec.stride, 1]
        if spec.group == 1:
            out = tf.nn.conv2d(net, kernel_t, strides, spec.padding)
        else:
            inputs = tf.split(net, spec.group, axis=3)
            kernels = tf.split(kernel_t, spec.group, axis=3)
            out = tf.concat([tf.nn.conv2d(i, k, strides, spec.padding)
                             for i, k in zip(inputs, kernels)], axis=3)
        return tf.nn.relu(tf.nn.bias_add(out, bias_t), name=name)


def _max_pool(tf, net, name):
    size, stride = POOL["size"], POOL["stride"]
    return tf.nn.max_pool2d(net, ksize=size, strides=stride, padding="VALID", name=name)
