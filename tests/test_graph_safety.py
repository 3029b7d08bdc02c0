"""Model files with file, process or Python ops are refused before they run."""
import numpy as np
import pytest
import tensorflow as tf

from deep_spectrum_extractor.backend.convention import write_graph_def
from deep_spectrum_extractor.backend.extractor import FrozenGraphExtractor
from deep_spectrum_extractor.backend.graph_safety import ALLOWED_OPS
from deep_spectrum_extractor.errors import ModelError


def graph_reading_a_file(secret_path):
    """A graph in the convention whose fc7 layer secretly depends on ReadFile."""
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name="input")
        content = tf.io.read_file(str(secret_path), name="steal")
        length = tf.cast(tf.strings.length(content), tf.float32)
        pooled = tf.reduce_mean(images, axis=[1, 2])
        with tf.name_scope("fc7"):
            tf.identity(pooled + length, name="fc7")
    return graph.as_graph_def()


def test_graph_with_read_file_is_refused_before_it_runs(tmp_path, monkeypatch):
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    model = write_graph_def(graph_reading_a_file(secret), tmp_path / "evil.pb")
    # the graph really does read the file when run
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_reading_a_file(secret), name="x")
    with tf.compat.v1.Session(graph=graph) as session:
        assert session.run("x/fc7/fc7:0", {"x/input:0": np.zeros((1, 2, 2, 3))})[0, 0] == 7

    imported = []
    monkeypatch.setattr(tf.compat.v1, "import_graph_def",
                        lambda *a, **k: imported.append(1))
    with pytest.raises(ModelError) as info:
        FrozenGraphExtractor(model, "fc7")
    message = str(info.value)
    assert "evil.pb" in message and "ReadFile (node 'steal')" in message
    assert imported == []  # refused before TensorFlow imported the graph


@pytest.mark.parametrize("op", ["WriteFile", "PyFunc", "EagerPyFunc", "ReadFile", "Save",
                                "Restore", "MatchingFiles", "ImmutableConst", "PrintV2"])
def test_io_and_python_ops_are_not_allowed(op):
    assert op not in ALLOWED_OPS


def test_shipped_architectures_pass(small_model, tmp_path, monkeypatch):
    from deep_spectrum_extractor.backend.efficientnet import ensure_efficientnet_lite0

    for model in (small_model, ensure_efficientnet_lite0(tmp_path / "e.pb")):
        FrozenGraphExtractor(model, "fc7" if model == small_model else "global_pool").close()
