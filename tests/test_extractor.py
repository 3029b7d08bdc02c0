"""The frozen-graph backend against a direct Session.run, and its errors."""
import numpy as np
import pytest
import tensorflow as tf

from deep_spectrum_extractor.backend.alexnet import LAYERS
from deep_spectrum_extractor.backend.convention import layer_names
from deep_spectrum_extractor.backend.extractor import FrozenGraphExtractor, available_layers
from deep_spectrum_extractor.errors import ModelError


def direct_run(model, layer, images):
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(model.read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="extractor")
    # the graph evaluated op by op, as the extractor runs it: without Grappler's fusions,
    # which (with oneDNN kernels) round differently in the last bits
    config = tf.compat.v1.ConfigProto()
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    with tf.compat.v1.Session(graph=graph, config=config) as session:
        out = session.run(f"extractor/{layer}/{layer}:0", {"extractor/input:0": images})
    return out.reshape(len(images), -1)


@pytest.mark.parametrize("layer", ["conv3", "fc7", "fc8"])
def test_features_equal_direct_session_run(small_model, layer):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(5, 227, 227, 3), dtype=np.uint8)
    with FrozenGraphExtractor(small_model, layer, gpu=False) as extractor:
        got = extractor.features(images)
    expected = direct_run(small_model, layer, images.astype(np.float32))
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    assert np.ptp(got, axis=0).max() > 0  # depends on the image


def test_layers_follow_the_naming_convention(small_model):
    assert available_layers(small_model) == sorted(LAYERS)
    assert layer_names(["extractor/fc7/fc7", "extractor/pool5", "conv1/weights", "a/b",
                        "extractor/block3/block3"]) == ["block3", "fc7"]


def test_unknown_layer_lists_available_layers_sorted(small_model):
    with pytest.raises(ModelError) as info:
        FrozenGraphExtractor(small_model, "fc9", gpu=False)
    message = str(info.value)
    assert "'fc9'" in message and "small.pb" in message
    assert "conv1, conv2, conv3, conv4, conv5, fc6, fc7, fc8" in message


def test_missing_and_corrupt_model_files(tmp_path):
    with pytest.raises(ModelError, match="cannot read model file .*nothing.pb"):
        FrozenGraphExtractor(tmp_path / "nothing.pb", "fc7")
    corrupt = tmp_path / "corrupt.pb"
    corrupt.write_bytes(b"\xff\xfe this is not a protobuf \x00\x01")
    with pytest.raises(ModelError, match="corrupt.pb is not a TensorFlow GraphDef"):
        FrozenGraphExtractor(corrupt, "fc7")
