"""Keras applications and model files as frozen graphs (convert-models/keras_export.py).

Every exported graph is run the way deep-spectrum runs it, through
:class:`FrozenGraphExtractor` (import under ``extractor``, op allowlist, layer lookup),
and compared with the Keras model's own output on the same images: resized in numpy
with the half-pixel bilinear rule written out below and preprocessed with the
application's own ``preprocess_input``.  Networks are built untrained
(``weights=None``) with a fixed seed, so the reference model built here has the very
weights of the exported one.

Tolerance: the graph runs the same TensorFlow kernels as Keras; the differences come
from the resize (float32 in the graph, float64 here: about 1e-5 of a pixel value)
carried through the network.  Measured: at most 5e-6 of the layer's largest
activation (resnet50 conv1_relu), usually 1e-7 to 1e-6.  The tests allow 1e-4 of it
(``_assert_close``), twenty times the largest measured error and far below what a
wrong preprocessing, resize rule or layer gives (TensorFlow 1's resize rule instead
of half-pixel centres: more than 1e-2, checked below).

Sizes and times on 2 shared CPU cores (untrained, seed 0): VGG16 is 553 MB and takes
about 15 s to build, freeze and write, so it is checked on its default layer fc2 with
one image; mobilenet_v2, resnet50, densenet121 and xception are compared on two
layers each, mobilenet from a weights file.  The five other networks are checked
against Keras without freezing (every table layer resolves, feature sizes and input
size match); the freezing code is the same for all.  For all ten,
``preprocess_input`` is checked against the table's mode.
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

# Keras' own saving code converts variables with np.array(x), which NumPy 2 warns about.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

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


def resize_bilinear(images: np.ndarray, height: int, width: int, *,
                    half_pixel: bool = True) -> np.ndarray:
    """Bilinear resize, in float64.

    With half-pixel centres, output pixel ``i`` samples the input at
    ``(i + 0.5) * in / out - 0.5``; without (TensorFlow 1's rule) at ``i * in / out``.
    Positions are clamped to the image; the value interpolates the two neighbouring
    pixels on each axis.
    """
    x = images.astype(np.float64)

    def axis(out_size, in_size):
        scale = in_size / out_size
        position = ((np.arange(out_size) + 0.5) * scale - 0.5 if half_pixel
                    else np.arange(out_size) * scale)
        position = np.clip(position, 0, in_size - 1)
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, in_size - 1)
        return low, high, position - low

    top, bottom, fy = axis(height, x.shape[1])
    left, right, fx = axis(width, x.shape[2])
    rows = x[:, top] * (1 - fy)[None, :, None, None] + x[:, bottom] * fy[None, :, None, None]
    fx = fx[None, None, :, None]
    return rows[:, :, left] * (1 - fx) + rows[:, :, right] * fx


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
    if len(expected) > 1:  # different images must give different features
        spread = float(np.abs(expected - expected[:1]).max())
        assert spread > 1e-3 * scale, f"{what}: features hardly depend on the image"
    error = float(np.abs(actual - expected).max())
    assert error <= 1e-4 * scale, f"{what}: max error {error:g} for values up to {scale:g}"


@pytest.fixture(scope="module")
def keras():
    return keras_export._keras()


def _reference(keras, spec, model, names, images):
    """Keras' own outputs of the named table layers for raw RGB images, flattened."""
    refs = dict(spec.layers)
    probe = keras.Model(model.inputs[0], [refs[name].resolve(model).output for name in names])
    resized = resize_bilinear(images, *spec.input_size).astype(np.float32)
    return _flat_outputs(probe(spec.preprocess_input()(resized), training=False), len(images))


def _flat_outputs(outputs, count):
    if not isinstance(outputs, (list, tuple)):  # a model with one output returns it bare
        outputs = [outputs]
    return [np.asarray(output).reshape(count, -1) for output in outputs]


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


@pytest.mark.parametrize("name", ["vgg19", "inception_resnet_v2", "densenet169", "densenet201",
                                  "mobilenet"])
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
    with pytest.raises(keras_export.KerasExportError,
                       match=r"unknown network 'vgg'; available: .*vgg16"):
        keras_export.get_network("vgg")
    assert keras_export.get_network("VGG16") is keras_export.NETWORKS["vgg16"]


# --- exported applications against Keras -----------------------------------------------

#: network -> the layers compared: an early one (resize and preprocessing show there
#: first) and the default feature layer.
VALUE_CASES = {
    "mobilenet_v2": ("expanded_conv_project_BN", "avg_pool"),
    "resnet50": ("conv1_relu", "avg_pool"),
    "densenet121": ("pool2_pool", "avg_pool"),
    "xception": ("block2_out", "avg_pool"),  # an unnamed Add found by LayerRef(after=...)
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
    """The later DeepSpectrum's VGG16 and its feature layer fc2 (4096-d), on one image.

    The 553 MB graph is run in a session without Grappler: TensorFlow's graph
    optimiser spends about 35 s on the constants of a graph this big before the first
    run (13 s for AlexNet), whatever graph it is.  Running it through the extractor
    is covered by the other networks.
    """
    spec = keras_export.get_network("vgg16")
    graph = keras_export.build_application_graph("vgg16", weights=None, seed=SEED)
    assert graph.feature_sizes == {"block1_pool": 802816, "block2_pool": 401408,
                                   "block3_pool": 200704, "block4_pool": 100352,
                                   "block5_pool": 25088, "fc1": 4096, "fc2": 4096,
                                   "predictions": 1000}
    assert graph.default_layer == "fc2" and graph.preprocessing == "caffe"
    result = keras_export.export_graph(graph, tmp_path / "vgg16.pb")
    del graph.graph_def.node[:]
    gc.collect()
    _check_graph_file(result.output, graph)
    images = plot_like_images(1, 227, 227, seed=4)
    features = _run_without_grappler(result.output, "fc2", images)
    keras.utils.set_random_seed(SEED)
    model = spec.constructor()(weights=None)
    [reference] = _reference(keras, spec, model, ["fc2"], images)
    _assert_close(features, reference, "vgg16 fc2")
    del model
    keras.backend.clear_session()
    gc.collect()


def _run_without_grappler(path, layer, images):
    from deep_spectrum_extractor.backend.convention import IMPORT_PREFIX
    from deep_spectrum_extractor.backend.tf import tensorflow

    tf = tensorflow()
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(read_graph_def(path), name=IMPORT_PREFIX)
    config = tf.compat.v1.ConfigProto()
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    with tf.compat.v1.Session(graph=graph, config=config) as session:
        output = session.run(f"{IMPORT_PREFIX}/{layer}/{layer}:0",
                             {f"{IMPORT_PREFIX}/{INPUT_NAME}:0": images.astype(np.float32)})
    return output.reshape(len(images), -1)


def test_local_weights_file(keras, tmp_path):
    """The offline route: Keras' legacy .h5 weights, as an application and as a model file."""
    spec = keras_export.get_network("mobilenet")
    keras.utils.set_random_seed(SEED + 1)
    model = spec.constructor()(weights=None)
    weights = tmp_path / "mobilenet.h5"
    model.save(weights)  # legacy HDF5, the format of the files Keras downloads
    images = plot_like_images(2, 227, 227, seed=6)
    expected = _reference(keras, spec, model, ["conv_pw_1_relu", "avg_pool"], images)
    from_weights = keras_export.build_application_graph("mobilenet", weights=weights)
    from_file = keras_export.build_model_file_graph(weights, network="mobilenet")
    assert from_weights.weights == str(weights) and from_file.source == str(weights)
    assert from_file.weights == "the model file's"
    for graph in (from_weights, from_file):
        assert graph.layers == list(spec.layer_names)
        assert graph.default_layer == "avg_pool" and graph.feature_sizes["avg_pool"] == 1024
        path = keras_export.export_graph(graph, tmp_path / "mobilenet.pb").output
        for layer, reference in zip(["conv_pw_1_relu", "avg_pool"], expected):
            _, features = _extract(path, layer, images)
            _assert_close(features, reference, f"mobilenet {layer} from {graph.source}")
    del model
    keras.backend.clear_session()


# --- Keras model files --------------------------------------------------------------------

SMALL_LAYERS = ["conv", "bn", "act", "dw", "pool", "gap", "drop", "probs"]


def _small_model(keras, *, size=(32, 32)):
    """Conv, batch norm (with non-trivial statistics), dropout and softmax, seeded."""
    keras.utils.set_random_seed(SEED)
    layers = keras.layers
    inputs = keras.Input(shape=(*size, 3), name="image")
    x = layers.Conv2D(8, 3, strides=2, padding="same", name="conv")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU(name="act")(x)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.MaxPooling2D(name="pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.5, name="drop")(x)
    outputs = layers.Dense(5, activation="softmax", name="probs")(x)
    model = keras.Model(inputs, outputs, name="small")
    rng = np.random.default_rng(SEED)
    model.get_layer("bn").set_weights([rng.uniform(0.5, 1.5, 8), rng.normal(0, 0.1, 8),
                                       rng.normal(0, 20, 8), rng.uniform(50, 500, 8)])
    return model


def _small_reference(keras, model, names, images, size, mode, *, half_pixel=True):
    probe = keras.Model(model.inputs[0], [model.get_layer(name).output for name in names])
    resized = resize_bilinear(images, *size, half_pixel=half_pixel)
    x = _independent_preprocess(resized, mode).astype(np.float32)
    return _flat_outputs(probe(x, training=False), len(images))


@pytest.mark.parametrize("mode", list(keras_export.PREPROCESSING))
def test_model_file_each_preprocessing(keras, tmp_path, mode):
    model = _small_model(keras)
    path = tmp_path / "small.keras"
    model.save(path)
    graph = keras_export.build_model_file_graph(path, preprocessing=mode)
    assert graph.layers == SMALL_LAYERS and graph.default_layer == "probs"
    assert graph.feature_sizes == {"conv": 16 * 16 * 8, "bn": 2048, "act": 2048, "dw": 2048,
                                   "pool": 512, "gap": 8, "drop": 8, "probs": 5}
    assert graph.input_size == (32, 32) and graph.preprocessing == mode
    out = keras_export.export_graph(graph, tmp_path / "small.pb").output
    images = plot_like_images(3, 45, 37, seed=7)
    names = ["act", "probs"]
    for layer, reference in zip(names, _small_reference(keras, model, names, images,
                                                        (32, 32), mode)):
        _, features = _extract(out, layer, images)
        _assert_close(features, reference, f"small {layer} {mode}")
    if mode == "tf":  # the comparison tells resize rules apart: TF1's rule is far off
        [legacy] = _small_reference(keras, model, ["act"], images, (32, 32), mode,
                                    half_pixel=False)
        _, features = _extract(out, "act", images)
        assert np.abs(features - legacy).max() > 1e-2 * np.abs(legacy).max()


def test_cli_model_file(keras, tmp_path, capsys):
    model = _small_model(keras, size=(None, None))
    path = tmp_path / "small.h5"
    model.save(path)
    output = tmp_path / "out" / "small.pb"
    args = ["--keras-model", str(path), "-o", str(output), "--preprocess", "torch"]
    assert export_keras.main(args) == 1
    assert "accepts images of any size" in capsys.readouterr().err
    assert not output.exists()

    assert export_keras.main(args + ["--input-size", "40", "48", "--layers", "act, gap,probs"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {output}" in printed and "resized to 40x48, preprocessing torch" in printed
    rows = [line.split() for line in printed.splitlines() if line.startswith("  ")]
    assert rows == [["act", str(20 * 24 * 8)], ["gap", "8"], ["probs", "5", "(default)"]]
    assert printed.splitlines()[-1] == "default layer: probs (5 features)"
    images = plot_like_images(2, 60, 50, seed=8)
    expected = _small_reference(keras, model, ["act", "probs"], images, (40, 48), "torch")
    for layer, reference in zip(["act", "probs"], expected):
        layers, features = _extract(output, layer, images)
        assert layers == ["act", "gap", "probs"]
        _assert_close(features, reference, f"cli {layer}")
    assert sorted(p.name for p in output.parent.iterdir()) == ["small.pb"]  # no leftovers


# --- command line errors ------------------------------------------------------------------

def _fails(capsys, args, *fragments):
    assert export_keras.main(args) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("export_keras.py: error: ")
    for fragment in fragments:
        assert fragment in captured.err
    return captured.err


def test_cli_unknown_network(tmp_path, capsys):
    output = tmp_path / "x.pb"
    _fails(capsys, ["alexnet", "-o", str(output)], "unknown network 'alexnet'",
           "available: densenet121, ")
    assert not output.exists()


def test_cli_unreadable_files(keras, tmp_path, capsys):
    output = tmp_path / "x.pb"
    missing = tmp_path / "missing.h5"
    _fails(capsys, ["mobilenet", "-o", str(output), "--weights", str(missing)],
           f"weights file {missing} does not exist")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an HDF5 file")
    _fails(capsys, ["mobilenet", "-o", str(output), "--weights", str(junk)],
           f"cannot load the weights file {junk} into mobilenet")
    _fails(capsys, ["-o", str(output), "--keras-model", str(missing), "--preprocess", "tf"],
           f"Keras model file {missing} does not exist")
    _fails(capsys, ["-o", str(output), "--keras-model", str(junk), "--preprocess", "tf"],
           f"cannot load the Keras model file {junk}")
    text = tmp_path / "model.txt"
    text.write_text("hello")
    _fails(capsys, ["-o", str(output), "--keras-model", str(text), "--preprocess", "tf"],
           "is not a Keras model file")
    _fails(capsys, ["-o", str(output), "--keras-model", str(junk)],
           "preprocessing must be one of caffe, tf, torch, bgr, none")
    assert set(tmp_path.iterdir()) == {junk, text}  # nothing written, no temporary files


def test_cli_imagenet_weights_without_network(keras, tmp_path, capsys, monkeypatch):
    """Keras' download fails as it does offline; the message says to pass a local file."""
    from keras.src.utils import file_utils

    def offline(fname=None, origin=None, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary "
                        f"failure in name resolution")

    monkeypatch.setattr(file_utils, "get_file", offline)
    output = tmp_path / "x.pb"
    err = _fails(capsys, ["mobilenet", "-o", str(output)],
                 "cannot get the ImageNet weights of mobilenet", "URL fetch failure on https://",
                 "pass it with --weights FILE")
    assert ".h5" in err  # the file to fetch is named
    assert not output.exists()


def test_cli_usage_errors(tmp_path, capsys):
    model = tmp_path / "m.keras"
    for args in (["vgg16"], ["-o", "x.pb"],
                 ["-o", "x.pb", "--keras-model", str(model), "--weights", "none"],
                 ["vgg16", "-o", "x.pb", "--layers", "fc2"],
                 ["vgg16", "-o", "x.pb", "--seed", "1"],
                 ["vgg16", "-o", "x.pb", "--preprocess", "zscore"]):
        with pytest.raises(SystemExit) as exit_info:
            export_keras.main(args)
        assert exit_info.value.code == 2
        assert "export_keras.py: error:" in capsys.readouterr().err


def test_cli_list(capsys):
    assert export_keras.main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == EXPECTED_NETWORKS
    assert ("vgg16: keras.applications.VGG16, 224x224, preprocessing caffe, default layer "
            "fc2 (4096); layers block1_pool,") in "\n".join(lines)


def test_invalid_layer_choices(keras, tmp_path):
    path = tmp_path / "small.keras"
    _small_model(keras).save(path)
    for layers, message in ((["act", "act"], "layer names repeat: act"),
                            (["no-such"], "cannot be exposed"),
                            (["nowhere"], "has no layer 'nowhere'")):
        with pytest.raises(keras_export.KerasExportError, match=message):
            keras_export.build_model_file_graph(path, layers=layers, preprocessing="none")
