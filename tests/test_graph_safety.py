"""Model files with file, process or Python ops are refused before they run."""
import os
import time

import numpy as np
import pytest
import tensorflow as tf

from deep_spectrum_extractor.backend.graph_io import write_graph_def
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


# -- sizes: constants and constant-shaped ops are checked against the machine's memory --

def graph_adding(make_extra):
    """A graph in the convention whose fc7 is the pooled image plus the sum of ``make_extra()``."""
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name="input")
        extra = tf.cast(tf.reduce_sum(make_extra()), tf.float32)
        pooled = tf.reduce_mean(images, axis=[1, 2])
        with tf.name_scope("fc7"):
            tf.identity(pooled + extra, name="fc7")
    return graph.as_graph_def()


def node_named(graph_def, name):
    return next(node for node in graph_def.node if node.name == name)


def declare_shape(graph_def, name, dims):
    """Change the shape a Const declares, keeping the values it stores."""
    shape = node_named(graph_def, name).attr["value"].tensor.tensor_shape
    del shape.dim[:]
    for size in dims:
        shape.dim.add(size=size)
    return graph_def


def refusal(tmp_path, monkeypatch, graph_def, name="huge.pb"):
    """The ModelError message loading ``graph_def`` gives; fails if TensorFlow imported it."""
    model = write_graph_def(graph_def, tmp_path / name)

    def import_graph_def(*args, **kwargs):
        raise AssertionError("the graph reached tf.import_graph_def")

    monkeypatch.setattr(tf.compat.v1, "import_graph_def", import_graph_def)
    started = time.monotonic()
    with pytest.raises(ModelError) as info:
        FrozenGraphExtractor(model, "fc7", gpu=False)
    elapsed = time.monotonic() - started
    assert elapsed < 5, f"refusing took {elapsed:.1f} s"
    message = str(info.value)
    assert "\n" not in message
    return message


def extracted(model, image):
    with FrozenGraphExtractor(model, "fc7", gpu=False) as extractor:
        return extractor.features(image[np.newaxis])[0]


def test_const_declaring_a_huge_shape_is_refused_before_import(tmp_path, monkeypatch):
    graph_def = declare_shape(graph_adding(lambda: tf.constant(1.0, shape=[4], name="big")),
                              "big", [2 ** 40])
    value = node_named(graph_def, "big").attr["value"].tensor
    assert list(value.float_val) == [1.0] and not value.tensor_content  # a few bytes in the file
    message = refusal(tmp_path, monkeypatch, graph_def)
    assert "model file " in message and "huge.pb is refused: node 'big' (Const) declares " \
        "4.4 TB, more than this machine's " in message
    assert message.endswith((" GB of memory", " TB of memory"))


def test_const_whose_content_disagrees_with_its_shape_is_refused(tmp_path, monkeypatch):
    stored = np.arange(4, dtype=np.float32)
    graph_def = declare_shape(graph_adding(lambda: tf.constant(stored, name="weights")),
                              "weights", [1000000])
    assert len(node_named(graph_def, "weights").attr["value"].tensor.tensor_content) == 16
    message = refusal(tmp_path, monkeypatch, graph_def)
    assert message.endswith("huge.pb is refused: node 'weights' (Const) stores 16 bytes but "
                            "its shape [1000000] of float32 needs 4000000 bytes")

    graph_def = declare_shape(graph_adding(lambda: tf.constant(stored, name="weights")),
                              "weights", [2])
    message = refusal(tmp_path, monkeypatch, graph_def)
    assert "stores 16 bytes but its shape [2] of float32 needs 8 bytes" in message


def test_const_with_more_values_than_its_shape_holds_is_refused(tmp_path, monkeypatch):
    graph_def = graph_adding(lambda: tf.constant(1.0, shape=[4], name="big"))
    node_named(graph_def, "big").attr["value"].tensor.float_val.extend([2.0, 3.0, 4.0, 5.0])
    message = refusal(tmp_path, monkeypatch, graph_def)
    assert "node 'big' (Const) stores 5 values but its shape [4] of float32 holds only 4" \
        in message


def test_string_and_unknown_constants(tmp_path, monkeypatch):
    graph_def = graph_adding(lambda: (tf.constant("abc", shape=[3], name="text"), 0.0)[1])
    declare_shape(graph_def, "text", [2 ** 40])
    assert "node 'text' (Const) declares " in refusal(tmp_path, monkeypatch, graph_def)

    graph_def = graph_adding(lambda: tf.constant(1.0, shape=[4], name="odd"))
    node_named(graph_def, "odd").attr["value"].tensor.dtype = 21  # DT_VARIANT
    message = refusal(tmp_path, monkeypatch, graph_def)
    assert "node 'odd' (Const) holds a tensor of type DT_VARIANT" in message


HUGE_OPS = {
    "Fill": lambda: tf.fill(tf.constant([2 ** 20, 2 ** 20], tf.int64), 1.0, name="big"),
    "Tile": lambda: tf.tile(tf.constant(np.arange(1000, dtype=np.float32)),
                            tf.constant([2 ** 32], tf.int64), name="big"),
    "BroadcastTo": lambda: tf.broadcast_to(1.0, tf.constant([2 ** 40], tf.int64), name="big"),
    "Range": lambda: tf.range(tf.constant(0, tf.int64), 2 ** 40, name="big"),
    "Pad": lambda: tf.pad(tf.constant([1.0, 2.0]), tf.constant([[0, 2 ** 40]], tf.int64),
                          name="big"),
    "PadV2": lambda: tf.pad(tf.constant([1.0, 2.0]), tf.constant([[2 ** 40, 0]], tf.int64),
                            constant_values=3.0, name="big"),
    # elementwise broadcasting of two 4 MB constants
    "AddV2": lambda: tf.add(tf.constant(1.0, shape=[2 ** 20, 1]),
                            tf.constant(2.0, shape=[1, 2 ** 20]), name="big"),
    # the tiled tensor's shape is known through a Reshape and a Tile of constants
    "Tile of Tile": lambda: tf.tile(
        tf.reshape(tf.tile(tf.constant([1.0, 2.0]), [500]), [10, 100]),
        tf.constant([2 ** 20, 2 ** 20], tf.int64), name="big"),
    "Tile of ExpandDims": lambda: tf.tile(tf.expand_dims(tf.constant(np.ones(1000, np.float32)),
                                                         0), [2 ** 30, 1], name="big"),
    "MatMul": lambda: tf.matmul(tf.constant(1.0, shape=[2 ** 20, 1]),
                                tf.constant(1.0, shape=[1, 2 ** 20]), name="big"),
    "GatherV2": lambda: tf.gather(tf.constant(1.0, shape=[10, 2 ** 20]),
                                  tf.constant(0, shape=[2 ** 20]), name="big"),
    # parts that fit (8.6 GB each, under the 16 GB these tests allow), a whole that does not
    "ConcatV2": lambda: tf.concat([tf.constant(1.0, shape=[2 ** 31])] * 3, 0, name="big"),
    "Pack": lambda: tf.stack([tf.constant(1.0, shape=[2 ** 31])] * 3, name="big"),
    "MirrorPad": lambda: tf.pad(tf.constant(1.0, shape=[2 ** 31]),
                                [[2 ** 31 - 1, 2 ** 31 - 1]], mode="REFLECT", name="big"),
    # a transposed convolution's output shape is its constant input_sizes
    "Conv2DBackpropInput": lambda: tf.nn.conv2d_transpose(
        tf.constant(1.0, shape=[1, 2, 2, 1]), tf.constant(1.0, shape=[1, 1, 1, 1]),
        [1, 2 ** 20, 2 ** 20, 1], strides=[1, 2 ** 19, 2 ** 19, 1], name="big"),
}


@pytest.mark.parametrize("case", sorted(HUGE_OPS))
def test_ops_with_huge_constant_output_sizes_are_refused(tmp_path, monkeypatch, case):
    from deep_spectrum_extractor.backend import graph_safety

    graph_def = graph_adding(HUGE_OPS[case])
    op = case.split()[0]
    assert node_named(graph_def, "big").op == op
    monkeypatch.setattr(graph_safety, "memory_limit", lambda: 16_000_000_000, raising=False)
    message = refusal(tmp_path, monkeypatch, graph_def)
    assert f"huge.pb is refused: node 'big' ({op}) would produce " in message
    assert message.endswith(", more than this machine's 16.0 GB of memory")


def test_resizing_the_input_image_to_a_huge_constant_size_is_refused(tmp_path, monkeypatch):
    def graph(size):
        graph = tf.Graph()
        with graph.as_default():
            images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name="input")
            resized = tf.compat.v1.image.resize_bilinear(images, size, name="resized")
            with tf.name_scope("fc7"):
                tf.identity(tf.reduce_mean(resized, axis=[1, 2]), name="fc7")
        return graph.as_graph_def()

    message = refusal(tmp_path, monkeypatch, graph([2 ** 20, 2 ** 20]))
    assert "node 'resized' (ResizeBilinear) would produce at least 13.2 TB (shape " \
        "[1, 1048576, 1048576, 3] of float32, unknown dimensions counted as 1)" in message
    model = write_graph_def(graph([227, 227]), tmp_path / "fine.pb")
    monkeypatch.undo()
    image = np.full((4, 4, 3), 7.0, np.float32)
    np.testing.assert_allclose(extracted(model, image), [7.0, 7.0, 7.0], rtol=1e-6)


def test_constant_inputs_are_followed_through_identity_and_input_suffixes(tmp_path,
                                                                          monkeypatch):
    def make():
        dims = tf.identity(tf.constant([2 ** 20, 2 ** 20], tf.int64, name="dims"), name="same")
        marker = tf.constant(0.0, name="marker")
        return tf.fill(dims, 1.0, name="big") + marker

    graph_def = graph_adding(make)
    fill = node_named(graph_def, "big")
    fill.input[0] = "same:0"
    fill.input.append("^marker")
    message = refusal(tmp_path, monkeypatch, graph_def)
    assert "node 'big' (Fill) would produce 4.4 TB (shape [1048576, 1048576] of float32)" \
        in message


def test_constants_in_the_function_library_are_checked_too():
    from deep_spectrum_extractor.backend import graph_safety

    graph_def = graph_adding(lambda: tf.constant(1.0, shape=[4], name="small"))
    function = graph_def.library.function.add()
    function.signature.name = "helper"
    function.node_def.add().CopyFrom(node_named(graph_def, "small"))
    shape = function.node_def[0].attr["value"].tensor.tensor_shape
    shape.dim[0].size = 2 ** 40
    with pytest.raises(ModelError, match=r"node 'helper/small' \(Const\) declares 4.4 TB"):
        graph_safety.check_graph_sizes(graph_def, "f.pb", memory=16_000_000_000)


@pytest.mark.parametrize("corruption", ["garbage", "truncated", "bad text"])
def test_unparsable_model_files_give_one_line(tmp_path, small_model, corruption):
    data = small_model.read_bytes()
    model = tmp_path / "broken.pb"
    model.write_bytes({"garbage": b"\xff\xfe this is not a protobuf \x00\x01",
                       "truncated": data[:len(data) // 2],
                       "bad text": b"\x0a\x05\x0a\x03\xff\xfe\xfd"}[corruption])
    with pytest.raises(ModelError) as info:
        FrozenGraphExtractor(model, "fc7", gpu=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"model file {model} is not a TensorFlow GraphDef (.pb): ")


def test_zeros_like_constants_and_small_fills_are_accepted(tmp_path):
    def make():
        return (tf.reduce_sum(tf.constant(0.25, shape=[4096], name="quarter"))
                + tf.reduce_sum(tf.zeros([64, 64])))

    graph_def = graph_adding(make)
    value = node_named(graph_def, "quarter").attr["value"].tensor
    assert list(value.float_val) == [0.25] and not value.tensor_content
    model = write_graph_def(graph_def, tmp_path / "zeros.pb")
    image = np.random.default_rng(0).uniform(0, 255, (8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(extracted(model, image), image.mean(axis=(0, 1)) + 1024.0,
                               rtol=1e-6)


def test_limit_is_the_machines_memory_not_a_fixed_size(tmp_path, monkeypatch):
    from deep_spectrum_extractor.backend import graph_safety

    weights = np.arange(1000000, dtype=np.float32) / np.float32(1e6)  # 4 MB stored in full
    graph_def = graph_adding(lambda: tf.constant(weights, name="weights"))
    model = write_graph_def(graph_def, tmp_path / "fits.pb")
    image = np.random.default_rng(1).uniform(0, 255, (8, 8, 3)).astype(np.float32)

    monkeypatch.setattr(graph_safety, "memory_limit", lambda: 8_000_000)
    np.testing.assert_allclose(extracted(model, image),
                               image.mean(axis=(0, 1)) + weights.sum(dtype=np.float64),
                               rtol=1e-5)
    # a constant stored in full is as large as the file, which is refused unread
    monkeypatch.setattr(graph_safety, "memory_limit", lambda: 3_000_000)
    message = refusal(tmp_path, monkeypatch, graph_def, name="fits.pb")
    assert message.endswith("fits.pb is refused: it is 4.0 MB, more than this machine's "
                            "3.0 MB of memory")
    with pytest.raises(ModelError) as info:
        graph_safety.check_graph_sizes(graph_def, "fits.pb", memory=3_000_000)
    assert str(info.value) == ("model file fits.pb is refused: node 'weights' (Const) declares "
                               "4.0 MB, more than this machine's 3.0 MB of memory")


def test_memory_limit_is_physical_memory_lowered_by_a_cgroup_limit(tmp_path, monkeypatch):
    from deep_spectrum_extractor.backend import graph_safety

    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = tmp_path / "memory.max"
    monkeypatch.setattr(graph_safety, "CGROUP_MEMORY_FILES", (str(tmp_path / "none"), str(limit)))
    limit.write_text("max\n")
    assert graph_safety.memory_limit() == physical
    limit.write_text("123456789\n")
    assert graph_safety.memory_limit() == 123456789
    limit.write_text(f"{physical * 2}\n")
    assert graph_safety.memory_limit() == physical


def test_cli_refuses_a_huge_model_with_one_line(tmp_path, corpus, monkeypatch, capsys):
    from deep_spectrum_extractor.cli.extract_ds_features import main

    graph_def = declare_shape(graph_adding(lambda: tf.constant(1.0, shape=[4], name="big")),
                              "big", [2 ** 40])
    write_graph_def(graph_def, tmp_path / "huge.pb")
    config = tmp_path / "deep.conf"
    config.write_text("[main]\nsize = 227\ngpu = 0\nbackend = tensorflow\n\n"
                      "[tensorflow-nets]\nhuge = huge.pb\n")

    def import_graph_def(*args, **kwargs):
        raise AssertionError("the graph reached tf.import_graph_def")

    monkeypatch.setattr(tf.compat.v1, "import_graph_def", import_graph_def)
    out = tmp_path / "f.arff"
    started = time.monotonic()
    code = main(["-i", str(corpus), "-o", str(out), "-net", "huge", "-config", str(config),
                 "-np", "1"])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and err.endswith(errors[0] + "\n"), err
    assert errors[0].startswith("extract_ds_features: error: model file ")
    assert "huge.pb is refused: node 'big' (Const) declares 4.4 TB, more than this " \
        "machine's " in errors[0]
    assert elapsed < 30


def test_a_graph_tensorflow_cannot_import_is_a_model_error(tmp_path):
    graph_def = graph_adding(lambda: tf.constant(1.0, shape=[4], name="extra"))
    node_named(graph_def, "extra").input.append("nowhere")  # an input naming no node
    write_graph_def(graph_def, tmp_path / "broken.pb")
    with pytest.raises(ModelError, match=r"broken.pb is not a valid graph: .*nowhere"):
        FrozenGraphExtractor(tmp_path / "broken.pb", "fc7", gpu=False)
