"""Reading PyTorch state dicts without torch: the real weights, handcrafted files, hostile
pickles."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deep-spectrum"))

import builtins
import pickle
import shlex
import struct
import zipfile

import numpy as np
import pytest

from deep_spectrum_extractor.backend import torch_weights
from deep_spectrum_extractor.backend.efficientnet import weights_path
from deep_spectrum_extractor.backend.torch_weights import read_state_dict
from deep_spectrum_extractor.errors import ModelError

# ---------------------------------------------------------------------------
# A tiny pickle writer: protocol-2 opcodes, written by hand because the globals a
# state dict names (torch._utils._rebuild_tensor_v2, torch.FloatStorage) cannot be
# pickled without torch.


def op_str(text: str) -> bytes:
    data = text.encode("utf-8")
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def op_int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)  # BININT


def op_tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


def op_global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()  # GLOBAL


def op_ordered_dict(items: list[tuple[bytes, bytes]]) -> bytes:
    # OrderedDict() via REDUCE, then SETITEMS
    body = b"".join(key + value for key, value in items)
    return op_global("collections", "OrderedDict") + b")R" + b"(" + body + b"u"


def whole_pickle(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."  # PROTO 2 ... STOP


# Storages: key -> (torch storage class, numpy values).
rng = np.random.default_rng(7)
STORAGES = {
    "s0": ("FloatStorage", rng.standard_normal(12).astype(np.float32)),
    "s1": ("DoubleStorage", rng.standard_normal(10)),
    "s2": ("LongStorage", np.array([7, -3, 2**40 + 5], dtype=np.int64)),
    "s3": ("HalfStorage", rng.standard_normal(6).astype(np.float16)),
    "s4": ("ByteStorage", np.array([0, 1, 200, 255, 17], dtype=np.uint8)),
}

# Tensors: name -> (storage key, legacy view (view key, start, count) or None,
# storage offset, size, stride).
TENSORS = {
    "a.weight": ("s0", None, 0, (3, 4), (4, 1)),
    "a.transposed": ("s0", None, 0, (4, 3), (1, 4)),
    "b.slice": ("s1", None, 2, (2, 3), (4, 1)),
    "c.scalar": ("s2", None, 1, (), ()),
    "d.expanded": ("s1", None, 5, (3, 2), (0, 1)),
    "e.view": ("s0", ("v0", 6, 4), 1, (3,), (1,)),
    "f.half": ("s3", None, 0, (2, 3), (1, 2)),
    "g.bytes": ("s4", None, 1, (4,), (1,)),
    "h.empty": ("s0", None, 0, (0, 3), (3, 1)),
}


def expected_tensor(name: str) -> np.ndarray:
    """The tensor computed element by element from the storage, offset and strides."""
    key, view, offset, size, stride = TENSORS[name]
    storage = STORAGES[key][1]
    start = view[1] if view else 0
    out = np.empty(size, dtype=storage.dtype)
    for index in np.ndindex(*size):
        out[index] = storage[start + offset + sum(i * s for i, s in zip(index, stride))]
    return out


def tensor_ops(name: str, *, legacy: bool) -> bytes:
    key, view, offset, size, stride = TENSORS[name]
    storage_class, values = STORAGES[key]
    if legacy:
        view_ops = op_tuple(op_str(view[0]), op_int(view[1]), op_int(view[2])) if view else b"N"
        pid = op_tuple(op_str("storage"), op_global("torch", storage_class), op_str(key),
                       op_str("cpu"), op_int(values.size), view_ops)
    else:
        pid = op_tuple(op_str("storage"), op_global("torch", storage_class), op_str(key),
                       op_str("cpu"), op_int(values.size))
    hooks = op_global("collections", "OrderedDict") + b")R"
    args = op_tuple(pid + b"Q", op_int(offset), op_tuple(*map(op_int, size)),
                    op_tuple(*map(op_int, stride)), b"\x89", hooks)  # Q: BINPERSID
    return op_global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def legacy_file(path: Path, names, *, body: bytes | None = None, header=None,
                storage_bytes: dict | None = None) -> Path:
    """Write a legacy-format .pth holding ``names`` (or a custom state-dict pickle)."""
    header = header or [pickle.dumps(torch_weights.MAGIC_NUMBER, protocol=2),
                        pickle.dumps(torch_weights.PROTOCOL_VERSION, protocol=2),
                        pickle.dumps({"protocol_version": 1001, "little_endian": True,
                                      "type_sizes": {"short": 2, "int": 4, "long": 4}},
                                     protocol=2)]
    if body is None:
        body = whole_pickle(op_ordered_dict(
            [(op_str(name), tensor_ops(name, legacy=True)) for name in names]))
    keys = sorted({TENSORS[name][0] for name in names}, reverse=True)  # any order works
    blobs = b""
    for key in keys:
        values = STORAGES[key][1]
        little = values.astype(values.dtype.newbyteorder("<"))
        blobs += (storage_bytes or {}).get(key, struct.pack("<q", values.size) + little.tobytes())
    path.write_bytes(b"".join(header) + body + pickle.dumps(keys, protocol=2) + blobs)
    return path


def zip_file(path: Path, names, *, body: bytes | None = None) -> Path:
    if body is None:
        body = whole_pickle(op_ordered_dict(
            [(op_str(name), tensor_ops(name, legacy=False)) for name in names]))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/data.pkl", body)
        archive.writestr("model/byteorder", "little")
        for key in sorted({TENSORS[name][0] for name in names}):
            archive.writestr(f"model/data/{key}", STORAGES[key][1].tobytes())
        archive.writestr("model/version", "3\n")
    return path


# ---------------------------------------------------------------------------
# The real weights


def expected_lite0_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape for EfficientNet-Lite0, from the EfficientNet-B0 block table."""
    shapes = {}

    def conv_bn(conv, bn, shape):
        shapes[f"{conv}.weight"] = shape
        for field in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{bn}.{field}"] = (shape[0],)
        shapes[f"{bn}.num_batches_tracked"] = ()

    conv_bn("_conv_stem", "_bn0", (32, 3, 3, 3))
    stages = [(1, 3, 1, 16), (2, 3, 6, 24), (2, 5, 6, 40), (3, 3, 6, 80), (3, 5, 6, 112),
              (4, 5, 6, 192), (1, 3, 6, 320)]  # repeats, kernel, expansion, out channels
    channels, index = 32, 0
    for repeats, kernel, expand, out in stages:
        for _ in range(repeats):
            hidden = channels * expand
            prefix = f"_blocks.{index}"
            if expand != 1:
                conv_bn(f"{prefix}._expand_conv", f"{prefix}._bn0", (hidden, channels, 1, 1))
            conv_bn(f"{prefix}._depthwise_conv", f"{prefix}._bn1", (hidden, 1, kernel, kernel))
            conv_bn(f"{prefix}._project_conv", f"{prefix}._bn2", (out, hidden, 1, 1))
            channels, index = out, index + 1
    conv_bn("_conv_head", "_bn1", (1280, 320, 1, 1))
    shapes["_fc.weight"] = (1000, 1280)
    shapes["_fc.bias"] = (1000,)
    return shapes


def test_real_weights_load_with_expected_keys_and_shapes():
    state = read_state_dict(weights_path())
    expected = expected_lite0_shapes()
    assert len(state) == 296 == len(expected)
    assert {key: value.shape for key, value in state.items()} == expected
    assert sum(value.size for value in state.values()) == 4_694_073
    assert next(iter(state)) == "_conv_stem.weight" and next(reversed(state)) == "_fc.bias"
    for key, value in state.items():
        assert value.dtype == (np.int64 if key.endswith("num_batches_tracked") else np.float32), key
        assert np.isfinite(value).all(), key
        if key.endswith("running_var"):
            assert (value >= 0).all(), key
    # Trained weights, not zeros or a constant fill: the classifier spreads widely.
    assert 0.01 < state["_fc.weight"].std() < 1.0


# ---------------------------------------------------------------------------
# Handcrafted files


def assert_round_trip(state, names):
    assert list(state) == list(names)
    for name in names:
        expected = expected_tensor(name)
        value = state[name]
        assert value.dtype == expected.dtype.newbyteorder("="), name
        assert value.shape == expected.shape, name
        np.testing.assert_array_equal(value, expected, err_msg=name)
        assert value.flags.c_contiguous and value.flags.owndata and value.flags.writeable, name


def test_legacy_round_trip_respects_offsets_strides_and_views(tmp_path):
    path = legacy_file(tmp_path / "hand.pth", list(TENSORS))
    state = read_state_dict(path)
    assert_round_trip(state, list(TENSORS))
    # The transpose shares its storage with a.weight in the file but not in memory.
    np.testing.assert_array_equal(state["a.transposed"], state["a.weight"].T)
    state["a.weight"][0, 0] = 1e6
    assert state["a.transposed"][0, 0] != 1e6


def test_zip_round_trip(tmp_path):
    names = [name for name in TENSORS if TENSORS[name][1] is None]  # zip has no views
    state = read_state_dict(zip_file(tmp_path / "hand.pt", names))
    assert_round_trip(state, names)


def test_bfloat16_is_widened_to_float32(tmp_path):
    values = np.array([1.0, -2.5, 3.140625, 65280.0], dtype=np.float32)
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)  # exact in bfloat16
    STORAGES["bf"] = ("BFloat16Storage", bits)
    TENSORS["bf.weight"] = ("bf", None, 0, (2, 2), (2, 1))
    try:
        state = read_state_dict(legacy_file(tmp_path / "bf.pth", ["bf.weight"]))
    finally:
        del STORAGES["bf"], TENSORS["bf.weight"]
    assert state["bf.weight"].dtype == np.float32
    np.testing.assert_array_equal(state["bf.weight"], values.reshape(2, 2))


# ---------------------------------------------------------------------------
# Hostile pickles: refused by name, never executed


def payload(module: str, name: str, argument: str) -> bytes:
    """Pickle ops that call module.name(argument)."""
    return op_global(module, name) + op_tuple(op_str(argument)) + b"R"


@pytest.mark.parametrize("module, name, make_argument", [
    ("os", "system", lambda target: f"touch {shlex.quote(str(target))}"),
    ("builtins", "eval", lambda target: f"open({str(target)!r}, 'w').close()"),
    ("builtins", "exec", lambda target: f"open({str(target)!r}, 'w').close()"),
])
def test_hostile_global_in_state_dict_is_refused_unexecuted(tmp_path, module, name, make_argument):
    target = tmp_path / "pwned"
    evil = payload(module, name, make_argument(target))
    # The payload works: an ordinary unpickler runs it and creates the file.
    pickle.loads(whole_pickle(evil))
    assert target.exists()
    target.unlink()

    body = whole_pickle(op_ordered_dict([
        (op_str("a.weight"), tensor_ops("a.weight", legacy=True)),
        (op_str("evil"), evil),
    ]))
    path = legacy_file(tmp_path / "evil.pth", ["a.weight"], body=body)
    with pytest.raises(ModelError) as info:
        read_state_dict(path)
    message = str(info.value)
    assert f"'{module}.{name}'" in message
    assert str(path) in message
    assert not target.exists()


def test_made_up_module_is_refused_by_name(tmp_path):
    body = whole_pickle(op_ordered_dict([(op_str("x"), payload("no_such_module_q9", "run", "1"))]))
    with pytest.raises(ModelError, match=r"'no_such_module_q9\.run'"):
        read_state_dict(legacy_file(tmp_path / "evil.pth", ["a.weight"], body=body))


class _Exploit:
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return builtins.exec, (f"open({self.target!r}, 'w').close()",)


def test_protocol4_stack_global_in_the_header_is_refused(tmp_path):
    # Protocol 4 names globals with STACK_GLOBAL; here the payload replaces the
    # magic number, the very first pickle read.
    target = tmp_path / "pwned"
    evil = pickle.dumps(_Exploit(target), protocol=4)
    pickle.loads(evil)
    assert target.exists()
    target.unlink()
    path = legacy_file(tmp_path / "evil.pth", ["a.weight"], header=[evil, b"", b""])
    with pytest.raises(ModelError, match=r"'builtins\.exec'"):
        read_state_dict(path)
    assert not target.exists()


def test_hostile_zip_is_refused_unexecuted(tmp_path):
    target = tmp_path / "pwned"
    # Protocol 2 (what torch.save uses) spells builtins by its Python 2 name.
    evil = pickle.dumps({"x": _Exploit(target)}, protocol=2)
    path = zip_file(tmp_path / "evil.pt", ["a.weight"], body=evil)
    with pytest.raises(ModelError, match=r"'__builtin__\.exec'"):
        read_state_dict(path)
    assert not target.exists()


def test_foreign_persistent_id_is_refused(tmp_path):
    pid = op_tuple(op_str("module"), op_str("os"), op_str("x.py"), op_str("src"))
    body = whole_pickle(op_ordered_dict([(op_str("m"), pid + b"Q")]))
    with pytest.raises(ModelError, match="persistent id"):
        read_state_dict(legacy_file(tmp_path / "pid.pth", ["a.weight"], body=body))


def test_tampering_with_stand_ins_is_refused(tmp_path):
    # BUILD on an allowed global's stand-in must not alter it for later loads.
    body = whole_pickle(op_ordered_dict([
        (op_str("t"), op_global("torch", "FloatStorage")
         + b"}" + op_str("dtype") + op_str("<i8") + b"s" + b"b"),  # EMPTY_DICT SETITEM BUILD
    ]))
    with pytest.raises(ModelError):
        read_state_dict(legacy_file(tmp_path / "build.pth", ["a.weight"], body=body))
    assert_round_trip(read_state_dict(legacy_file(tmp_path / "ok.pth", ["a.weight"])),
                      ["a.weight"])


# ---------------------------------------------------------------------------
# Broken files


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="cannot read"):
        read_state_dict(tmp_path / "absent.pth")


def test_not_a_torch_file(tmp_path):
    path = tmp_path / "other.pth"
    path.write_bytes(pickle.dumps(12345, protocol=2) + b"\0" * 16)
    with pytest.raises(ModelError, match="magic number"):
        read_state_dict(path)


@pytest.mark.parametrize("storage_bytes, match", [
    ({"s0": struct.pack("<q", 12) + b"\0" * 20}, "truncated"),
    ({"s0": struct.pack("<q", 11) + b"\0" * 44}, "holds 11 elements"),
])
def test_bad_storage_data(tmp_path, storage_bytes, match):
    path = legacy_file(tmp_path / "bad.pth", ["a.weight"], storage_bytes=storage_bytes)
    with pytest.raises(ModelError, match=match):
        read_state_dict(path)


def test_tensor_outside_its_storage(tmp_path):
    TENSORS["oob"] = ("s0", None, 3, (3, 4), (4, 1))  # reaches element 14 of 12
    try:
        with pytest.raises(ModelError, match="reaches element 14"):
            read_state_dict(legacy_file(tmp_path / "oob.pth", ["oob"]))
    finally:
        del TENSORS["oob"]


def test_not_a_state_dict(tmp_path):
    body = whole_pickle(op_tuple(op_int(1), op_int(2)))
    path = legacy_file(tmp_path / "tuple.pth", [], body=body)
    with pytest.raises(ModelError, match="not a state dict"):
        read_state_dict(path)
