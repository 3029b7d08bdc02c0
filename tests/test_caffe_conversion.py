"""The Caffe -> TensorFlow converter (convert-models/) against Caffe's semantics.

Caffemodels with random weights are written byte by byte (tests/caffe_reference.py),
converted, run in TensorFlow, and every layer conv1..fc8 is compared with an
independent numpy forward pass that follows Caffe (NCHW, BGR input, grouped
convolutions, Caffe's LRN and pooling, NCHW flatten before fc6).

Tolerance: each layer must agree within ``REL_TOL * max|reference|``, with
``REL_TOL = 1e-5``.  TensorFlow computes in float32 (unit roundoff 6e-8) and sums up
to 9,216 products per output; the reference computes in float64.  The measured
worst case is 6e-7 of a layer's largest value (small and full widths alike), so the
bound leaves a margin of about 15x, while any conversion mistake (a wrong flatten
order, a swapped group, a missing BGR flip, a wrong LRN constant) moves outputs by a
sizeable fraction of their range.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "deep-spectrum"))
sys.path.insert(0, str(REPO / "convert-models"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import caffe_reference as ref  # noqa: E402
from caffe_alexnet import (  # noqa: E402
    CaffeConversionError,
    caffe_to_tf_weights,
    convert_caffe_alexnet,
    load_caffe_alexnet,
)
from deep_spectrum_extractor.backend.alexnet import FULL_WIDTHS, LAYERS, SMALL_WIDTHS  # noqa: E402
from deep_spectrum_extractor.backend.convention import (  # noqa: E402
    IMPORT_PREFIX,
    INPUT_NAME,
    layer_names,
)
from deep_spectrum_extractor.errors import DeepSpectrumError  # noqa: E402

REL_TOL = 1e-5
CONVERTER = REPO / "convert-models" / "convert_caffe.py"


# --------------------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def weights():
    """Small AlexNet (SMALL_WIDTHS) in Caffe's layout."""
    return ref.random_caffe_weights(SMALL_WIDTHS, seed=7)


@pytest.fixture(scope="module")
def images():
    """Two 227x227 RGB plots with 0..255 integer pixels, as the extractor feeds them."""
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, size=(2, 227, 227, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def reference(weights, images):
    """Caffe's blobs for ``images``: channels flipped to BGR, NCHW."""
    return ref.forward(images[..., ::-1].transpose(0, 3, 1, 2), weights)


@pytest.fixture(scope="module")
def files(tmp_path_factory, weights):
    """The small network written in the formats the converter reads."""
    folder = tmp_path_factory.mktemp("caffe")
    contents = {
        # Like BVLC's caffemodel: V1, a training snapshot with parameters.
        "v1.caffemodel": ref.caffemodel_bytes(weights, v1=True, training_net=True),
        "v1_blobs_only.caffemodel": ref.caffemodel_bytes(weights, v1=True, with_params=False),
        "current.caffemodel": ref.caffemodel_bytes(weights, v1=False),
        "current_blobs_only.caffemodel": ref.caffemodel_bytes(weights, v1=False,
                                                              with_params=False),
        "deploy.prototxt": ref.prototxt_text(SMALL_WIDTHS).encode(),
        "deploy_v1.prototxt": ref.prototxt_text(SMALL_WIDTHS, v1=True).encode(),
    }
    paths = {}
    for name, data in contents.items():
        paths[name] = folder / name
        paths[name].write_bytes(data)
    return paths


def run_graph(pb_path: Path, images: np.ndarray, *, optimize: bool = True) -> dict:
    """Import a converted graph as the extractor does and compute every layer.

    Also returns the output of the graph's bilinear resize as ``"resized"``.
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    graph_def = v1.GraphDef()
    graph_def.ParseFromString(pb_path.read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        v1.import_graph_def(graph_def, name=IMPORT_PREFIX)
    operations = graph.get_operations()
    assert layer_names(op.name for op in operations) == sorted(LAYERS)
    resizes = [op for op in operations if op.type == "ResizeBilinear"]
    assert len(resizes) == 1
    fetches = {name: graph.get_tensor_by_name(f"{IMPORT_PREFIX}/{name}/{name}:0")
               for name in LAYERS}
    fetches["resized"] = resizes[0].outputs[0]
    config = v1.ConfigProto()
    if not optimize:
        # Grappler needs ~20 s to optimise a full-size AlexNet once; the arithmetic
        # is the same without it.
        config.graph_options.rewrite_options.disable_meta_optimizer = True
    with v1.Session(graph=graph, config=config) as session:
        return session.run(fetches, {f"{IMPORT_PREFIX}/{INPUT_NAME}:0": images})


def assert_matches_reference(outputs: dict, reference: dict, images: np.ndarray) -> None:
    """Every layer within REL_TOL of Caffe's; the 227x227 resize is the identity."""
    # The inputs are already 227x227: the graph's resize must only flip RGB -> BGR,
    # so that the comparison below isolates the network from the resize.
    np.testing.assert_array_equal(outputs["resized"], images[..., ::-1])
    for name in LAYERS:
        expected = reference[name]
        if expected.ndim == 4:
            expected = expected.transpose(0, 2, 3, 1)  # NCHW -> the graph's NHWC
        actual = outputs[name]
        assert actual.shape == expected.shape, name
        scale = np.abs(expected).max()
        assert scale > 1.0, f"{name} is degenerate"
        np.testing.assert_allclose(actual, expected, rtol=0, atol=REL_TOL * scale,
                                   err_msg=f"layer {name}")


def assert_same_weights(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for name in first:
        for a, b in zip(first[name], second[name]):
            assert a.dtype == b.dtype == np.float32
            np.testing.assert_array_equal(a, b, err_msg=name)


# --------------------------------------------------------------------------- reference

def test_reference_exercises_lrn_and_relu(reference):
    # With raw 0..255 pixels the LRN denominators are far from 1 and about half of
    # the ReLU outputs are zero: both non-linearities are really tested.
    assert reference["scale1"].max() > 2.0
    assert reference["scale2"].max() > 1.2
    for name in ("conv1", "conv3", "conv5", "fc6", "fc7"):
        zeros = (reference[name] == 0).mean()
        assert 0.1 < zeros < 0.9, name


def test_reference_lrn_window_is_caffes():
    # Channel c is normalised by channels c-2..c+2 (local_size 5), zero beyond the ends.
    x = np.zeros((1, 7, 1, 1))
    x[0, 0, 0, 0] = 10.0
    scale = ref.lrn_scale(x, local_size=5, alpha=5.0, k=1.0)[0, :, 0, 0]
    np.testing.assert_allclose(scale, [101, 101, 101, 1, 1, 1, 1])


def test_reference_pooling_rounds_up():
    # Caffe: ceil((6 - 3) / 2) + 1 = 3 outputs; the last window is clipped to [4, 6).
    x = np.arange(36, dtype=float).reshape(1, 1, 6, 6)
    y = ref.max_pool(x, kernel=3, stride=2)
    assert y.shape == (1, 1, 3, 3)
    assert y[0, 0, 2, 2] == 35.0 and y[0, 0, 0, 0] == 14.0


# --------------------------------------------------------------------------- conversion

def test_v1_caffemodel_with_deploy_prototxt_matches_caffe(files, tmp_path, images, reference):
    # BVLC's combination: a V1 caffemodel and the current-format deploy.prototxt.
    result = convert_caffe_alexnet(files["v1.caffemodel"], tmp_path / "AlexNet.pb",
                                   prototxt=files["deploy.prototxt"])
    assert result.output == tmp_path / "AlexNet.pb"
    assert result.network.weights_format == "V1"
    assert result.network.widths == SMALL_WIDTHS
    assert result.network.caffe_names == {name: name for name in LAYERS}
    assert_matches_reference(run_graph(result.output, images), reference, images)


def test_current_format_through_command_line(files, tmp_path, images, reference):
    output = tmp_path / "nested" / "AlexNet.pb"
    completed = subprocess.run(
        [sys.executable, str(CONVERTER), "--prototxt", str(files["deploy.prototxt"]),
         "--caffemodel", str(files["current.caffemodel"]), "-o", str(output)],
        capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert f"wrote {output}" in completed.stderr
    assert "current caffemodel" in completed.stderr
    assert_matches_reference(run_graph(output, images), reference, images)


def test_every_definition_source_gives_the_same_weights(files):
    expected = load_caffe_alexnet(files["v1.caffemodel"], files["deploy.prototxt"]).weights
    variants = [
        (files["v1.caffemodel"], None),  # the definition stored in the caffemodel
        (files["v1_blobs_only.caffemodel"], files["deploy_v1.prototxt"]),
        (files["v1_blobs_only.caffemodel"], files["deploy.prototxt"]),
        (files["current.caffemodel"], None),
        (files["current_blobs_only.caffemodel"], files["deploy.prototxt"]),
    ]
    for caffemodel, prototxt in variants:
        assert_same_weights(load_caffe_alexnet(caffemodel, prototxt).weights, expected)


def test_converted_shapes_and_layouts(files, weights):
    converted = load_caffe_alexnet(files["current.caffemodel"], files["deploy.prototxt"])
    conv2_caffe, _ = weights["conv2"]
    conv2_tf, _ = converted.weights["conv2"]
    assert conv2_tf.shape == (5, 5, SMALL_WIDTHS["conv1"] // 2, SMALL_WIDTHS["conv2"])
    # Kernel row i, column j, input channel c of output o is Caffe's w[o, c, i, j].
    np.testing.assert_array_equal(conv2_tf[1, 3, 2, 9], conv2_caffe[9, 2, 1, 3])
    fc8_caffe, fc8_bias = weights["fc8"]
    np.testing.assert_array_equal(converted.weights["fc8"][0], fc8_caffe.T)
    np.testing.assert_array_equal(converted.weights["fc8"][1], fc8_bias)
    assert converted.parameters == sum(w.size + b.size for w, b in weights.values())


def test_fc6_rows_follow_the_nhwc_flatten():
    # fc6 applied to pool5 must give Caffe's result when the graph flattens NHWC.
    rng = np.random.default_rng(11)
    pool5 = rng.standard_normal((3, 5, 6, 6))
    caffe_fc6 = rng.standard_normal((4, 5 * 36)).astype(np.float32)
    kernel, _ = caffe_to_tf_weights({"fc6": (caffe_fc6, np.zeros(4))})["fc6"]
    caffe_out = pool5.reshape(3, -1) @ caffe_fc6.T.astype(np.float64)
    graph_out = pool5.transpose(0, 2, 3, 1).reshape(3, -1) @ kernel.astype(np.float64)
    np.testing.assert_allclose(graph_out, caffe_out, rtol=1e-12, atol=1e-12)
    # A plain transpose, the classic mistake, is far off.
    wrong = pool5.transpose(0, 2, 3, 1).reshape(3, -1) @ caffe_fc6.T.astype(np.float64)
    assert np.abs(wrong - caffe_out).max() > 1.0


def test_full_size_alexnet_matches_caffe(tmp_path, images):
    # BVLC AlexNet's real widths (61 M parameters, a 244 MB caffemodel); takes
    # about 30 s and 4.5 GB of memory.
    weights = ref.random_caffe_weights(FULL_WIDTHS, seed=5)
    caffemodel = tmp_path / "bvlc_alexnet.caffemodel"
    caffemodel.write_bytes(ref.caffemodel_bytes(weights, v1=True, training_net=True))
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text(ref.prototxt_text(FULL_WIDTHS))
    result = convert_caffe_alexnet(caffemodel, tmp_path / "AlexNet.pb", prototxt=prototxt)
    caffemodel.unlink()
    assert result.network.widths == FULL_WIDTHS
    assert result.network.parameters == 60_965_224
    reference = ref.forward(images[..., ::-1].transpose(0, 3, 1, 2), weights)
    del weights, result
    assert_matches_reference(run_graph(tmp_path / "AlexNet.pb", images, optimize=False),
                             reference, images)


# --------------------------------------------------------------------------- errors

def test_errors_are_deep_spectrum_errors():
    assert issubclass(CaffeConversionError, DeepSpectrumError)


def test_missing_caffemodel(tmp_path):
    path = tmp_path / "nope.caffemodel"
    with pytest.raises(CaffeConversionError, match=r"caffemodel .*nope\.caffemodel does not exist"):
        load_caffe_alexnet(path)


def test_corrupt_caffemodel(tmp_path, files):
    path = tmp_path / "corrupt.caffemodel"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(CaffeConversionError) as info:
        load_caffe_alexnet(path, files["deploy.prototxt"])
    message = str(info.value)
    assert str(path) in message
    assert "not a valid caffemodel" in message
    assert "cannot be parsed" in message


def test_empty_caffemodel(tmp_path):
    path = tmp_path / "empty.caffemodel"
    path.write_bytes(b"")
    with pytest.raises(CaffeConversionError,
                       match=r"empty\.caffemodel: .*no layers \(the file is empty\)"):
        load_caffe_alexnet(path)


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.999])
def test_truncated_caffemodel(tmp_path, files, fraction):
    data = files["v1.caffemodel"].read_bytes()
    path = tmp_path / "truncated.caffemodel"
    path.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(CaffeConversionError, match="corrupt or truncated") as info:
        load_caffe_alexnet(path, files["deploy.prototxt"])
    assert str(path) in str(info.value)


def test_caffemodel_truncated_between_layers(tmp_path, files, weights):
    # Cut right after drop7: still valid protobuf, but fc8's weights are missing.
    full = files["current.caffemodel"].read_bytes()
    head = ref.caffemodel_bytes(weights, v1=False, layers=ref.ALEXNET_LAYERS[:-2])
    assert full.startswith(head) and len(head) < len(full)
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(head)
    with pytest.raises(CaffeConversionError,
                       match=r"cut\.caffemodel: fc8: the caffemodel holds no weights for "
                             r"layer 'fc8' \(truncated file"):
        load_caffe_alexnet(path, files["deploy.prototxt"])
    # Without a prototxt the stored definition itself is incomplete.
    with pytest.raises(CaffeConversionError,
                       match=r"not AlexNet's topology .*the network ends after 'relu7'; "
                             r"AlexNet continues with fc8 \(InnerProduct\)"):
        load_caffe_alexnet(path)


def test_prototxt_syntax_error(tmp_path, files):
    path = tmp_path / "broken.prototxt"
    path.write_text('name: "AlexNet"\nlayer {\n  name: "conv1"\n  kernel_size: 11\n}\n')
    with pytest.raises(CaffeConversionError,
                       match=r"broken\.prototxt: not a valid Caffe network definition: "
                             r"4:3 .*kernel_size"):
        load_caffe_alexnet(files["v1.caffemodel"], path)


def test_files_swapped(files):
    with pytest.raises(CaffeConversionError, match="not UTF-8 text"):
        load_caffe_alexnet(files["v1.caffemodel"], files["v1.caffemodel"])
    with pytest.raises(CaffeConversionError, match="not a valid caffemodel"):
        load_caffe_alexnet(files["deploy.prototxt"], files["deploy.prototxt"])


def _swap_norm_and_pool(layers):
    # CaffeNet's order: pool1 before norm1.
    changed = list(layers)
    changed[2] = ("pool1", "pool", "conv1", "pool1")
    changed[3] = ("norm1", "lrn", "pool1", "norm1")
    changed[4] = ("conv2", "conv", "norm1", "conv2")
    return changed


def _without_conv5(layers):
    kept = [layer for layer in layers if layer[0] not in ("conv5", "relu5")]
    return [("pool5", "pool", "conv4", "pool5") if layer[0] == "pool5" else layer
            for layer in kept]


def _with_branch(layers):
    return [("conv2", "conv", "conv1", "conv2") if layer[0] == "conv2" else layer
            for layer in layers]


def _with_extra_fc(layers):
    return list(layers[:-1]) + [("fc9", "ip", "fc8", "fc9"), ("prob", "softmax", "fc9", "prob")]


@pytest.mark.parametrize("change, message", [
    (_swap_norm_and_pool,
     r"not AlexNet's topology \(conv1 \(Convolution\), relu1 \(ReLU\), norm1 \(LRN\), .*\): "
     r"layer 'pool1' \(Pooling\) comes where AlexNet has norm1 \(LRN\)"),
    (_without_conv5,
     r"not AlexNet's topology .*layer 'pool5' \(Pooling\) comes where AlexNet has "
     r"conv5 \(Convolution\)"),
    (_with_branch,
     r"layer 'conv2' reads blob 'conv1', but the layer before it writes 'pool1'"),
    (_with_extra_fc,
     r"layer 'fc9' \(InnerProduct\) follows fc8 \('fc8'\), where AlexNet ends"),
])
def test_prototxt_that_is_not_alexnet(tmp_path, files, change, message):
    path = tmp_path / "other.prototxt"
    widths = dict(SMALL_WIDTHS, fc9=5)
    path.write_text(ref.prototxt_text(widths, layers=change(ref.ALEXNET_LAYERS)))
    with pytest.raises(CaffeConversionError, match=message) as info:
        load_caffe_alexnet(files["v1.caffemodel"], path)
    assert str(info.value).startswith(f"{path}: ")


def test_prototxt_with_unknown_layer_type(tmp_path, files):
    text = ref.prototxt_text(SMALL_WIDTHS).replace('type: "ReLU"', 'type: "PReLU"', 1)
    path = tmp_path / "prelu.prototxt"
    path.write_text(text)
    with pytest.raises(CaffeConversionError,
                       match=r"layer 'relu1' has type PReLU, which AlexNet does not use"):
        load_caffe_alexnet(files["v1.caffemodel"], path)


@pytest.mark.parametrize("overrides, message", [
    ({"conv1": {"stride": 2}},
     r"conv1: kernel 11x11, stride 2, pad 0, group 1; AlexNet's conv1 has kernel 11x11, "
     r"stride 4, pad 0, group 1"),
    ({"conv4": {"group": 1}}, r"conv4: kernel 3x3, stride 1, pad 1, group 1; AlexNet's conv4 has "
                              r"kernel 3x3, stride 1, pad 1, group 2"),
    ({"norm2": {"alpha": 0.001}},
     r"norm2: LRN across channels local_size 5, alpha 0.001, beta 0.75, k 1; AlexNet's norm2 "
     r"has LRN across channels local_size 5, alpha 0.0001"),
    ({"pool5": {"pool": "AVE"}}, r"pool5: AVE pooling, kernel 3x3, stride 2, pad 0; AlexNet's "
                                 r"pool5 has MAX pooling"),
])
def test_prototxt_with_other_parameters(tmp_path, files, overrides, message):
    path = tmp_path / "changed.prototxt"
    path.write_text(ref.prototxt_text(SMALL_WIDTHS, overrides=overrides))
    with pytest.raises(CaffeConversionError, match=message):
        load_caffe_alexnet(files["v1.caffemodel"], path)


def test_prototxt_with_other_input_size(tmp_path, files):
    path = tmp_path / "224.prototxt"
    path.write_text(ref.prototxt_text(SMALL_WIDTHS, input_size=224))
    with pytest.raises(CaffeConversionError,
                       match=r"input has shape 10 x 3 x 224 x 224; AlexNet takes "
                             r"N x 3 x 227 x 227 images"):
        load_caffe_alexnet(files["v1.caffemodel"], path)


def test_weights_that_do_not_fit_the_definition(tmp_path, files):
    path = tmp_path / "wider.prototxt"
    path.write_text(ref.prototxt_text(dict(SMALL_WIDTHS, conv3=32)))
    with pytest.raises(CaffeConversionError,
                       match=r"v1\.caffemodel: conv3: the weights blob has shape "
                             r"\(24, 16, 3, 3\), but the network definition needs "
                             r"\(32, 16, 3, 3\)"):
        load_caffe_alexnet(files["v1.caffemodel"], path)


def test_command_line_errors_are_reported_without_traceback(tmp_path, files):
    corrupt = tmp_path / "corrupt.caffemodel"
    corrupt.write_bytes(b"\xff" * 100)
    output = tmp_path / "AlexNet.pb"
    completed = subprocess.run(
        [sys.executable, str(CONVERTER), "--caffemodel", str(corrupt),
         "--prototxt", str(files["deploy.prototxt"]), "-o", str(output)],
        capture_output=True, text=True, timeout=120)
    assert completed.returncode == 1
    assert completed.stderr.startswith(
        f"convert_caffe.py: error: {corrupt}: not a valid caffemodel")
    assert "Traceback" not in completed.stderr
    assert not output.exists()
    usage = subprocess.run([sys.executable, str(CONVERTER), "--prototxt", "x"],
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2
    assert "--caffemodel" in usage.stderr
