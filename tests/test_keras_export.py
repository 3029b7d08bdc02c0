"""Keras applications and Keras model files exported as frozen graphs (convert-models/keras_export.py).

Every exported graph is run the way deep-spectrum runs it, through
:class:`FrozenGraphExtractor` (import under ``extractor``, op allowlist, layer lookup),
and compared with the Keras model's own output on the same images: resized in numpy
with the half-pixel bilinear rule written out below and preprocessed with the
application's own ``preprocess_input``.  Networks are built untrained
(``weights=None``) with a fixed seed, so the reference model built here has the very
weights of the exported one.

Tolerance: the graph runs the same TensorFlow kernels as Keras; the differences come
from the resize (float32 in the graph, float64 here, about 1e-5 of a pixel value) and
are carried through the network.  Measured: at most ~1e-6 of the layer's largest
activation.  The tests allow 1e-4 of it (``_assert_close``), far below what any wrong
preprocessing, resize or layer produces (those differ by 1e-2 and more).

Sizes and times on 2 shared CPU cores (untrained, seed 0): VGG16 is 553 MB and takes
about 15 s to build, freeze and write, so it is checked on its default layer fc2 with
one image; mobilenet_v2, resnet50 and densenet121 are compared on two layers each.
The six other networks are checked against Keras without freezing (every table layer
resolves, feature sizes and input size match, and ``preprocess_input`` matches the
table's mode); the freezing code is the same for all.
"""
from __future__ import annotations

import gc

import numpy as np
import pytest

import export_keras
import keras_export
from deep_spectrum_extractor.backend.convention import INPUT_NAME, layer_names
from deep_spectrum_extractor.backend.extractor import FrozenGraphExtractor, read_graph_def
from deep_spectrum_extractor.backend.graph_safety import check_graph_ops

SEED = 0
#: The networks later DeepSpectrum releases offered through keras.applications.
EXPECTED_NETWORKS = ["densenet121", "densenet169", "densenet201", "inception_resnet_v2",
                     "mobilenet", "mobilenet_v2", "resnet50", "vgg16", "vgg19", "xception"]
#: Written out from keras/src/applications/imagenet_utils.py, not imported from it.
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68])
TORCH_MEAN = np.array([0.485, 0.456, 0.406])
TORCH_STD = np.array([0.229, 0.224, 0.225])


def _independent_preprocess(images: np.ndarray, mode: str) -> np.ndarray:
    x = images.astype(np.float64)
    if mode == "caffe":
        return x[..., ::-1] - CAFFE_MEAN_BGR
    if mode == "tf":
        return x / 127.5 - 1.0
    if mode == "torch":
        return (x / 255.0 - TORCH_MEAN) / TORCH_STD
    if mode == "bgr":
        return x[..., ::-1]
    assert mode == "none"
    return x


def resize_bilinear(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres, in float64.

    Output pixel ``i`` samples the input at ``(i + 0.5) * in / out - 0.5``, clamped to
    the image; the value interpolates the two neighbouring pixels on each axis.
    """
    x = images.astype(np.float64)

    def axis(out_size, in_size):
        position = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
        position = np.clip(position, 0, in_size - 1)
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, in_size - 1)
        return low, high, position - low

    top, bottom, fy = axis(height, x.shape[1])
    left, right, fx = axis(width, x.shape[2])
    rows = x[:, top] * (1 - fy)[None, :, None, None] + x[:, bottom] * fy[None, :, None, None]
    return rows[:, :, left] * (1 - fx)[None, None, :, None] + rows[:, :, right] * fx[None, None, :, None]


def plot_like_images(count: int, height: int, width: int, seed: int) -> np.ndarray:
    """Smooth colour bands with noise, like a spectrogram plot (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 1, height)[:, None, None]
    cols = np.linspace(0, 1, width)[None, :, None]
    images = []
    for _ in range(count):
        phase = rng.uniform(0, 2 * np.pi, size=3)
        base = 127 + 100 * np.sin(6 * rows + 3 * cols + phase)
        images.append(base + rng.normal(0, 20, size=(height, width, 3)))
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def _assert_close(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert actual.shape == expected.shape, what
    scale = float(np.abs(expected).max())
    assert scale > 0, f"{what}: the reference is all zeros, the comparison would say nothing"
    error = float(np.abs(actual - expected).max())
    print(f"ERR {what}: {error:g} / {scale:g} = {error/scale:g}")
    assert error <= 1e-4 * scale, f"{what}: max error {error:g} for values up to {scale:g}"


@pytest.fixture(scope="module")
def keras():
    return keras_export._keras()


def _reference(keras, spec, model, names, images):
    """Keras' own outputs of the named table layers for raw RGB images, flattened."""
    refs = dict(spec.layers)
    probe = keras.Model(model.inputs, [refs[name].resolve(model).output for name in names])
    resized = resize_bilinear(images, *spec.input_size).astype(np.float32)
    outputs = probe(spec.preprocess_input()(resized), training=False)
    return [np.asarray(output).reshape(len(images), -1) for output in outputs]


def _extract(path, layer, images):
    with FrozenGraphExtractor(path, layer, gpu=False) as extractor:
        return extractor.layers, extractor.features(images)


def _check_graph_file(path, graph):
    graph_def = read_graph_def(path)  # parses and applies the op allowlist
    check_graph_ops(graph_def, str(path))
    assert layer_names(node.name for node in graph_def.node) == sorted(graph.layers)
    placeholders = [node for node in graph_def.node if node.op == "Placeholder"]
    assert [node.name for node in placeholders] == [INPUT_NAME]
    dims = [dim.size for dim in placeholders[0].attr["shape"].shape.dim]
    assert dims == [-1, -1, -1, 3]
    assert not any(node.op in ("ReadVariableOp", "VarHandleOp", "NoOp")
                   for node in graph_def.node)


# --- the table ------------------------------------------------------------------------

def test_table_lists_the_later_deepspectrum_networks():
    assert keras_export.available_networks() == EXPECTED_NETWORKS
    for name, spec in keras_export.NETWORKS.items():
        assert spec.name == name
        assert spec.preprocessing in keras_export.PREPROCESSING
        assert spec.default_layer in spec.layer_names
        assert len(set(spec.layer_names)) == len(spec.layer_names)
        assert layer_names(f"{layer}/{layer}" for layer in spec.layer_names) == sorted(
            spec.layer_names)
    assert keras_export.NETWORKS["vgg16"].default_layer == "fc2"
    assert keras_export.NETWORKS["vgg19"].default_layer == "fc2"


@pytest.mark.parametrize("name", EXPECTED_NETWORKS)
def test_preprocessing_mode_is_the_applications_own(keras, name):
    spec = keras_export.get_network(name)
    images = plot_like_images(2, 5, 7, seed=3).astype(np.float32)
    got = spec.preprocess_input()(images.copy())
    np.testing.assert_allclose(got, _independent_preprocess(images, spec.preprocessing),
                               rtol=0, atol=1e-5)  # float32 arithmetic on values < 300


@pytest.mark.parametrize("name", ["vgg19", "inception_resnet_v2", "xception", "densenet169",
                                  "densenet201", "mobilenet"])
def test_table_entry_matches_keras_model(keras, name):
    """Networks not frozen here: each table layer exists once and the sizes are Keras'."""
    spec = keras_export.get_network(name)
    model = spec.constructor()(weights=None)
    try:
        assert tuple(model.input_shape[1:3]) == spec.input_size
        layers = [ref.resolve(model) for _, ref in spec.layers]
        assert len({id(layer) for layer in layers}) == len(layers)
        default = layers[spec.layer_names.index(spec.default_layer)]
        assert int(np.prod(default.output.shape[1:])) == spec.feature_size
        if "predictions" in spec.layer_names:
            assert layers[spec.layer_names.index("predictions")].output is model.outputs[0]
    finally:
        del model
        keras.backend.clear_session()


def test_get_network_names_the_choices():
    with pytest.raises(keras_export.KerasExportError, match=r"unknown network 'vgg'; available: .*vgg16"):
        keras_export.get_network("vgg")
    assert keras_export.get_network("VGG16") is keras_export.NETWORKS["vgg16"]


# --- exported applications against Keras -----------------------------------------------

#: network -> the layers compared: an early one (resize and preprocessing show there
#: first) and the default feature layer.
VALUE_CASES = {
    "mobilenet_v2": ("expanded_conv_project_BN", "avg_pool"),
    "resnet50": ("conv1_relu", "avg_pool"),
    "densenet121": ("pool2_pool", "avg_pool"),
}


@pytest.mark.parametrize("name", list(VALUE_CASES))
def test_exported_application_matches_keras(keras, tmp_path, name):
    spec = keras_export.get_network(name)
    graph = keras_export.build_application_graph(name, weights=None, seed=SEED)
    result = keras_export.export_graph(graph, tmp_path / f"{name}.pb")
    assert graph.layers == list(spec.layer_names)
    assert graph.default_layer == spec.default_layer
    assert graph.feature_sizes[spec.default_layer] == spec.feature_size
    assert graph.preprocessing == spec.preprocessing
    assert result.size_bytes == result.output.stat().st_size
    del graph.graph_def.node[:]  # the file holds it now
    _check_graph_file(result.output, graph)

    images = plot_like_images(2, 227, 227, seed=1)  # deep-spectrum's default plot size
    keras.utils.set_random_seed(SEED)
    model = spec.constructor()(weights=None)
    expected = _reference(keras, spec, model, VALUE_CASES[name], images)
    for layer, reference in zip(VALUE_CASES[name], expected):
        layers, features = _extract(result.output, layer, images)
        assert layers == sorted(spec.layer_names)
        assert features.shape == (2, graph.feature_sizes[layer])
        _assert_close(features, reference, f"{name} {layer}")
    if name == "mobilenet_v2":  # any image size; the network's own size passes unchanged
        for size in ((224, 224), (150, 301)):
            images = plot_like_images(1, *size, seed=2)
            _, features = _extract(result.output, "avg_pool", images)
            [reference] = _reference(keras, spec, model, ["avg_pool"], images)
            _assert_close(features, reference, f"{name} avg_pool {size}")
    del model
    keras.backend.clear_session()


def test_vgg16_fc2(keras, tmp_path):
    """The later DeepSpectrum's VGG16 feature layer, 4096-d, on one image (553 MB graph)."""
    spec = keras_export.get_network("vgg16")
    graph = keras_export.build_application_graph("vgg16", weights=None, seed=SEED)
    assert graph.feature_sizes == {"block1_pool": 802816, "block2_pool": 401408,
                                   "block3_pool": 200704, "block4_pool": 100352,
                                   "block5_pool": 25088, "fc1": 4096, "fc2": 4096,
                                   "predictions": 1000}
    result = keras_export.export_graph(graph, tmp_path / "vgg16.pb")
    del graph.graph_def.node[:]
    gc.collect()
    _check_graph_file(result.output, graph)
    images = plot_like_images(1, 227, 227, seed=4)
    layers, features = _extract(result.output, "fc2", images)
    assert layers == sorted(spec.layer_names)
    keras.utils.set_random_seed(SEED)
    model = spec.constructor()(weights=None)
    [reference] = _reference(keras, spec, model, ["fc2"], images)
    _assert_close(features, reference, "vgg16 fc2")
    del model
    keras.backend.clear_session()
    gc.collect()
