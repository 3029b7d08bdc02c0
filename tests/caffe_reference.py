"""Caffe's side of the converter tests, written independently of ``convert-models/``.

* :func:`forward` is AlexNet's forward pass in plain numpy, NCHW, float64, with
  Caffe's own semantics: zero-padded (grouped) cross-correlation, ReLU, cross-channel
  LRN ``b = a / (k + alpha/n * sum(a^2 over n channels))^beta`` with Caffe's window
  (``pre_pad = (n-1)//2`` channels before, the rest after), max pooling with Caffe's
  ceil-rounded output size and clipped windows, and inner products on the NCHW
  flatten.  It returns every intermediate blob.
* :func:`caffemodel_bytes` writes caffemodels with a minimal protobuf wire-format
  encoder, from the field numbers of Caffe's ``caffe.proto`` (not from the
  converter's declarations, so a wrong field number on either side shows up), in the
  V1 ``layers`` format (legacy num/channels/height/width blob shapes, inner-product
  weights as (1, 1, out, in)) or the current ``layer`` format (``BlobShape``).
* :func:`prototxt_text` writes the matching network definitions.
* :func:`random_caffe_weights` makes weights in Caffe's layouts.

The architecture is spelled out here once more on purpose (:data:`CONV`, :data:`LRN`,
:data:`POOL`): the reference must not take it from the code under test.
"""
from __future__ import annotations

import math
import struct

import numpy as np

#: conv layers: (kernel, stride, pad, group), from BVLC's deploy.prototxt.
CONV = {
    "conv1": (11, 4, 0, 1),
    "conv2": (5, 1, 2, 2),
    "conv3": (3, 1, 1, 1),
    "conv4": (3, 1, 1, 2),
    "conv5": (3, 1, 1, 2),
}
FC = ("fc6", "fc7", "fc8")
LRN = {"local_size": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0}
POOL = {"kernel": 3, "stride": 2}
INPUT_SIZE = 227

#: AlexNet as in deploy.prototxt: (name, kind, bottom, top).
ALEXNET_LAYERS = (
    ("conv1", "conv", "data", "conv1"), ("relu1", "relu", "conv1", "conv1"),
    ("norm1", "lrn", "conv1", "norm1"), ("pool1", "pool", "norm1", "pool1"),
    ("conv2", "conv", "pool1", "conv2"), ("relu2", "relu", "conv2", "conv2"),
    ("norm2", "lrn", "conv2", "norm2"), ("pool2", "pool", "norm2", "pool2"),
    ("conv3", "conv", "pool2", "conv3"), ("relu3", "relu", "conv3", "conv3"),
    ("conv4", "conv", "conv3", "conv4"), ("relu4", "relu", "conv4", "conv4"),
    ("conv5", "conv", "conv4", "conv5"), ("relu5", "relu", "conv5", "conv5"),
    ("pool5", "pool", "conv5", "pool5"),
    ("fc6", "ip", "pool5", "fc6"), ("relu6", "relu", "fc6", "fc6"),
    ("drop6", "dropout", "fc6", "fc6"),
    ("fc7", "ip", "fc6", "fc7"), ("relu7", "relu", "fc7", "fc7"),
    ("drop7", "dropout", "fc7", "fc7"),
    ("fc8", "ip", "fc7", "fc8"),
    ("prob", "softmax", "fc8", "prob"),
)

# Caffe's V1LayerParameter.LayerType numbers and the current type strings.
_V1_TYPES = {"conv": 4, "relu": 18, "lrn": 15, "pool": 17, "ip": 14, "dropout": 6,
             "softmax": 20, "data": 5, "loss": 21}
_TYPES = {"conv": "Convolution", "relu": "ReLU", "lrn": "LRN", "pool": "Pooling",
          "ip": "InnerProduct", "dropout": "Dropout", "softmax": "Softmax",
          "data": "Data", "loss": "SoftmaxWithLoss", "input": "Input"}
# Field numbers of the parameter messages in V1LayerParameter / LayerParameter.
_V1_PARAM_FIELDS = {"conv": 10, "lrn": 18, "pool": 19, "ip": 17, "dropout": 12}
_PARAM_FIELDS = {"conv": 106, "lrn": 118, "pool": 121, "ip": 117, "dropout": 108}
_TEXT_PARAMS = {"conv": "convolution_param", "lrn": "lrn_param", "pool": "pooling_param",
                "ip": "inner_product_param", "dropout": "dropout_param"}


# --------------------------------------------------------------------------- weights

def weight_shapes(widths: dict[str, int]) -> dict[str, tuple[tuple[int, ...], tuple[int]]]:
    """Caffe-layout blob shapes: conv (out, in/group, k, k), fc (out, in)."""
    shapes, channels, size = {}, 3, INPUT_SIZE
    for name, (kernel, stride, pad, group) in CONV.items():
        shapes[name] = ((widths[name], channels // group, kernel, kernel), (widths[name],))
        channels = widths[name]
        size = (size + 2 * pad - kernel) // stride + 1
        if name in ("conv1", "conv2", "conv5"):
            size = math.ceil((size - POOL["kernel"]) / POOL["stride"]) + 1
    features = channels * size * size
    for name in FC:
        shapes[name] = ((widths[name], features), (widths[name],))
        features = widths[name]
    return shapes


def random_caffe_weights(widths: dict[str, int], *, seed: int = 0) -> dict:
    """Random float32 weights in Caffe's layout, He-scaled so activations stay O(1..1e3).

    With raw 0..255 pixels, conv1's outputs are a few hundred, which puts Caffe's
    LRN (alpha 1e-4) in its non-linear range: the tests exercise it for real.
    """
    rng = np.random.default_rng(seed)
    weights = {}
    for name, (wshape, bshape) in weight_shapes(widths).items():
        fan_in = int(np.prod(wshape[1:]))
        w = rng.standard_normal(wshape, dtype=np.float32) * np.float32(math.sqrt(2.0 / fan_in))
        b = rng.uniform(-0.5, 1.0, size=bshape).astype(np.float32)
        weights[name] = (w, b)
    return weights


# --------------------------------------------------------------------------- forward pass

def conv2d(x, w, b, *, stride: int, pad: int, group: int):
    """Caffe's convolution (cross-correlation) in NCHW with zero padding and groups."""
    n, c, h, wd = x.shape
    out, c_group, kh, kw = w.shape
    assert c == c_group * group and out % group == 0
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho = (h + 2 * pad - kh) // stride + 1
    wo = (wd + 2 * pad - kw) // stride + 1
    windows = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride][:, :, :ho, :wo]  # (n, c, ho, wo, kh, kw)
    o_group = out // group
    parts = []
    for g in range(group):
        xg = windows[:, g * c_group:(g + 1) * c_group]
        wg = w[g * o_group:(g + 1) * o_group]
        parts.append(np.tensordot(xg, wg, axes=([1, 4, 5], [1, 2, 3])))  # (n, ho, wo, og)
    y = np.concatenate(parts, axis=3).transpose(0, 3, 1, 2)
    return y + b.reshape(1, -1, 1, 1)


def relu(x):
    return np.maximum(x, 0.0)


def lrn_scale(x, *, local_size: int, alpha: float, k: float):
    """Caffe's LRN scale ``k + alpha/n * sum of squares`` over the channel window."""
    pre = (local_size - 1) // 2
    squares = np.pad(x * x, ((0, 0), (pre, local_size - pre - 1), (0, 0), (0, 0)))
    total = sum(squares[:, i:i + x.shape[1]] for i in range(local_size))
    return k + alpha / local_size * total


def lrn(x, *, local_size: int, alpha: float, beta: float, k: float):
    """Caffe's cross-channel local response normalisation."""
    return x * lrn_scale(x, local_size=local_size, alpha=alpha, k=k) ** (-beta)


def max_pool(x, *, kernel: int, stride: int, pad: int = 0):
    """Caffe's max pooling: output size rounded up, windows clipped to the input."""
    n, c, h, w = x.shape

    def out_size(size):
        out = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
        if pad and (out - 1) * stride >= size + pad:
            out -= 1
        return out

    ho, wo = out_size(h), out_size(w)
    y = np.empty((n, c, ho, wo), dtype=x.dtype)
    for i in range(ho):
        h0 = i * stride - pad
        h1, h0 = min(h0 + kernel, h), max(h0, 0)
        for j in range(wo):
            w0 = j * stride - pad
            w1, w0 = min(w0 + kernel, w), max(w0, 0)
            y[:, :, i, j] = x[:, :, h0:h1, w0:w1].max(axis=(2, 3))
    return y


def inner_product(x, w, b):
    """Caffe's InnerProduct: the input flattened in NCHW order, times W^T, plus b."""
    return x.reshape(x.shape[0], -1) @ w.T + b


def forward(bgr, weights: dict) -> dict:
    """AlexNet's forward pass as Caffe computes it (test phase: dropout is the identity).

    Parameters
    ----------
    bgr : np.ndarray [shape=(n, 3, 227, 227)]
        Images in Caffe's channel order (BGR), NCHW.
    weights : dict
        ``{layer: (weights, bias)}`` in Caffe's layout (:func:`random_caffe_weights`).

    Returns
    -------
    dict[str, np.ndarray]
        Every blob, float64: conv1..conv5 (after their in-place ReLU), norm1, norm2,
        pool1, pool2, pool5 (NCHW), fc6, fc7 (after ReLU), fc8 (logits), and the LRN
        scales ``scale1``, ``scale2``.
    """
    w64 = {name: (np.float64(w), np.float64(b)) for name, (w, b) in weights.items()}
    blobs = {}
    x = np.asarray(bgr, dtype=np.float64)
    for name, (_kernel, stride, pad, group) in CONV.items():
        x = relu(conv2d(x, *w64[name], stride=stride, pad=pad, group=group))
        blobs[name] = x
        if name in ("conv1", "conv2"):
            index = name[-1]
            blobs[f"scale{index}"] = lrn_scale(x, local_size=LRN["local_size"],
                                               alpha=LRN["alpha"], k=LRN["k"])
            x = blobs[f"norm{index}"] = lrn(x, **LRN)
            x = blobs[f"pool{index}"] = max_pool(x, **POOL)
        elif name == "conv5":
            x = blobs["pool5"] = max_pool(x, **POOL)
    for name in FC:
        x = inner_product(x, *w64[name])
        if name != "fc8":
            x = relu(x)
        blobs[name] = x
    return blobs


# --------------------------------------------------------------------------- protobuf

def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _int(number: int, value: int) -> bytes:
    return _key(number, 0) + _varint(value)


def _float(number: int, value: float) -> bytes:
    return _key(number, 5) + struct.pack("<f", value)


def _delimited(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _varint(len(payload)) + payload


def _string(number: int, text: str) -> bytes:
    return _delimited(number, text.encode())


def blob_bytes(array, *, legacy: bool) -> bytes:
    """A BlobProto: legacy num(1)/channels(2)/height(3)/width(4) or shape(7); data(5)."""
    array = np.asarray(array, dtype="<f4")
    if legacy:
        dims = (1,) * (4 - array.ndim) + array.shape
        header = b"".join(_int(number, d) for number, d in zip((1, 2, 3, 4), dims))
    else:
        header = _delimited(7, _delimited(1, b"".join(_varint(d) for d in array.shape)))
    return header + _delimited(5, array.tobytes())


def _param_bytes(kind: str, name: str, widths: dict) -> bytes:
    if kind == "conv":
        kernel, stride, pad, group = CONV[name]
        out = _int(1, widths[name]) + _int(4, kernel)
        if stride != 1:
            out += _int(6, stride)
        if pad:
            out += _int(3, pad)
        if group != 1:
            out += _int(5, group)
        return out
    if kind == "lrn":
        return _int(1, LRN["local_size"]) + _float(2, LRN["alpha"]) + _float(3, LRN["beta"])
    if kind == "pool":
        return _int(1, 0) + _int(2, POOL["kernel"]) + _int(3, POOL["stride"])
    if kind == "ip":
        return _int(1, widths[name])
    if kind == "dropout":
        return _float(1, 0.5)
    return b""


def caffemodel_bytes(weights: dict, *, v1: bool, with_params: bool = True,
                     layers=ALEXNET_LAYERS, training_net: bool = False) -> bytes:
    """Serialise a NetParameter holding ``weights`` (Caffe layout).

    Parameters
    ----------
    weights : dict
        ``{layer: (weights, bias)}``; layers not in it get no blobs.
    v1 : bool
        Old format: ``layers`` (field 2) of V1LayerParameter (name 4, type 5 enum,
        bottom 2, top 3, blobs 6, params 10/12/17/18/19) with legacy blob shapes.
        Otherwise ``layer`` (field 100) of LayerParameter (name 1, type 2 string,
        bottom 3, top 4, blobs 7, params 106/108/117/118/121) with BlobShape.
    with_params : bool
        Store the layer parameters too (as Caffe's snapshots do), not only blobs.
    layers : sequence of (name, kind, bottom, top)
        The network; AlexNet by default.
    training_net : bool
        Like a training snapshot: a data layer restricted to the TRAIN phase first
        and a SoftmaxWithLoss layer instead of the softmax.
    """
    widths = {name: w.shape[0] for name, (w, _) in weights.items()}
    if training_net:
        layers = ([("data", "data", None, ("data", "label"))]
                  + [layer for layer in layers if layer[1] != "softmax"]
                  + [("loss", "loss", ("fc8", "label"), "loss")])
    out = _string(1, "AlexNet")
    for name, kind, bottom, top in layers:
        bottoms = [] if bottom is None else [bottom] if isinstance(bottom, str) else bottom
        tops = [top] if isinstance(top, str) else top
        if v1:
            body = _string(4, name) + _int(5, _V1_TYPES[kind])
            body += b"".join(_string(2, b) for b in bottoms)
            body += b"".join(_string(3, t) for t in tops)
            if kind == "data":  # include { phase: TRAIN }
                body += _delimited(32, _int(1, 0))
            if with_params and kind in _V1_PARAM_FIELDS:
                body += _delimited(_V1_PARAM_FIELDS[kind], _param_bytes(kind, name, widths))
            for array in weights.get(name, ()):
                body += _delimited(6, blob_bytes(array, legacy=True))
            out += _delimited(2, body)
        else:
            body = _string(1, name) + _string(2, _TYPES[kind])
            body += b"".join(_string(3, b) for b in bottoms)
            body += b"".join(_string(4, t) for t in tops)
            if kind == "data":
                body += _delimited(8, _int(1, 0))
            if with_params and kind in _PARAM_FIELDS:
                body += _delimited(_PARAM_FIELDS[kind], _param_bytes(kind, name, widths))
            for array in weights.get(name, ()):
                body += _delimited(7, blob_bytes(array, legacy=False))
            out += _delimited(100, body)
    return out


# --------------------------------------------------------------------------- prototxt

def _param_text(kind: str, name: str, widths: dict, overrides: dict) -> str:
    if kind == "conv":
        kernel, stride, pad, group = CONV[name]
        fields = {"num_output": widths[name], "kernel_size": kernel, "stride": stride,
                  "pad": pad, "group": group}
    elif kind == "lrn":
        fields = {"local_size": LRN["local_size"], "alpha": LRN["alpha"],
                  "beta": LRN["beta"]}
    elif kind == "pool":
        fields = {"pool": "MAX", "kernel_size": POOL["kernel"], "stride": POOL["stride"]}
    elif kind == "ip":
        fields = {"num_output": widths[name]}
    elif kind == "dropout":
        fields = {"dropout_ratio": 0.5}
    else:
        return ""
    fields.update(overrides.get(name, {}))
    body = " ".join(f"{key}: {value}" for key, value in fields.items())
    return f"  {_TEXT_PARAMS[kind]} {{ {body} }}\n"


def prototxt_text(widths: dict, *, v1: bool = False, layers=ALEXNET_LAYERS,
                  overrides: dict | None = None, input_size: int = INPUT_SIZE) -> str:
    """A deploy.prototxt for AlexNet with the given widths.

    The current format follows BVLC's deploy.prototxt (an ``Input`` layer, ``param``
    learning-rate blocks); the V1 format its 2014 predecessor (``input``/``input_dim``,
    ``layers`` with enum types, ``blobs_lr``, fillers).  ``overrides`` replaces
    parameters: ``{"conv1": {"stride": 2}}``.
    """
    overrides = overrides or {}
    dims = (10, 3, input_size, input_size)
    lines = ['name: "AlexNet"']
    if v1:
        lines.append('input: "data"')
        lines.extend(f"input_dim: {d}" for d in dims)
    else:
        shape = " ".join(f"dim: {d}" for d in dims)
        lines.append(f'layer {{ name: "data" type: "Input" top: "data" '
                     f'input_param {{ shape: {{ {shape} }} }} }}')
    v1_names = {"conv": "CONVOLUTION", "relu": "RELU", "lrn": "LRN", "pool": "POOLING",
                "ip": "INNER_PRODUCT", "dropout": "DROPOUT", "softmax": "SOFTMAX"}
    for name, kind, bottom, top in layers:
        head = (f'layers {{\n  name: "{name}"\n  type: {v1_names[kind]}\n' if v1 else
                f'layer {{\n  name: "{name}"\n  type: "{_TYPES[kind]}"\n')
        text = head + f'  bottom: "{bottom}"\n  top: "{top}"\n'
        if kind in ("conv", "ip"):
            if v1:
                text += "  blobs_lr: 1\n  blobs_lr: 2\n  weight_decay: 1\n  weight_decay: 0\n"
            else:
                text += ("  param { lr_mult: 1 decay_mult: 1 }\n"
                         "  param { lr_mult: 2 decay_mult: 0 }\n")
        params = _param_text(kind, name, widths, overrides)
        if params and kind in ("conv", "ip"):
            filler = ' weight_filler { type: "gaussian" std: 0.01 } }\n'
            params = params.rstrip().removesuffix("}") + filler
        lines.append(text + params + "}")
    return "\n".join(lines) + "\n"
