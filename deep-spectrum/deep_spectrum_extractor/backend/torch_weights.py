"""Read PyTorch state dicts (``.pth``/``.pt``) into numpy arrays, without torch.

``torch.save`` writes pickles, and unpickling is code execution in general: a pickle
can name any importable callable and call it.  This module reads a state dict with a
restricted unpickler that resolves only the handful of globals a state dict needs

* ``collections.OrderedDict`` (the dict itself and the empty backward-hooks dicts),
* ``torch._utils._rebuild_tensor_v2`` and ``torch._utils._rebuild_tensor``,
* the typed storage classes ``torch.FloatStorage``, ``torch.LongStorage`` ...,

each mapped to an inert stand-in defined here.  Any other global (``os.system``,
``builtins.eval`` ...) stops the load with a :class:`~deep_spectrum_extractor.errors.ModelError`
before anything is called.

Two container formats are understood:

Legacy (``_use_new_zipfile_serialization=False``, and every file written before
PyTorch 1.6) -- one stream of pickles followed by raw bytes:

1. the magic number ``0x1950a86a20f9469cfc6c``,
2. the protocol version ``1001``,
3. a dict of system information (``little_endian``, ``type_sizes``),
4. the object itself; tensors refer to storages through persistent ids
   ``('storage', StorageType, key, location, numel, view_metadata)``,
5. the list of storage keys in the order their data follows,
6. for each of those keys: the element count as 8-byte little-endian integer,
   then ``count * itemsize`` bytes of data.

Zip (the default since PyTorch 1.6) -- ``<archive>/data.pkl`` holds the object, with
persistent ids ``('storage', StorageType, key, location, numel)``, and each
storage's bytes are the record ``<archive>/data/<key>``.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from pathlib import Path

from typing import Literal

import numpy as np

from ..errors import ModelError

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

#: Typed storage classes and the (little-endian) numpy dtype of their elements.
#: ``BFloat16Storage`` has no numpy dtype: it is read as uint16 bit patterns and
#: widened to float32 (exactly) after the tensor has been cut out.
STORAGE_DTYPES = {
    "DoubleStorage": "<f8",
    "FloatStorage": "<f4",
    "HalfStorage": "<f2",
    "BFloat16Storage": "<u2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}

_REBUILD_FUNCTIONS = {"_rebuild_tensor": 4, "_rebuild_tensor_v2": 6}

#: The globals a state dict may name, as ``module.name`` (for error messages).
ALLOWED_GLOBALS = (
    ("collections.OrderedDict",)
    + tuple(f"torch._utils.{name}" for name in _REBUILD_FUNCTIONS)
    + tuple(f"torch.{name}" for name in STORAGE_DTYPES)
)


# Stand-ins for the torch objects a pickle may name.  They keep their fields in
# slots (no ``__dict__``), refuse attribute assignment and refuse pickle's BUILD
# opcode (``__setstate__``), so a hostile pickle cannot rewrite a storage size or a
# stride after it has been checked.

class _Inert:
    __slots__ = ()

    def __init__(self, **fields):
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise ModelError(f"refusing to modify {type(self).__name__}.{name}")

    def __delattr__(self, name):
        raise ModelError(f"refusing to modify {type(self).__name__}.{name}")

    def __setstate__(self, state):
        raise ModelError(f"refusing to apply pickled state to {type(self).__name__}")

    def __repr__(self):
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


class _StorageType(_Inert):
    __slots__ = ("name", "dtype")
    name: str
    dtype: np.dtype

    def __eq__(self, other):
        return isinstance(other, _StorageType) and other.name == self.name

    __hash__ = None  # type: ignore[assignment]  # equal by name, so not hashable


class _StorageRef(_Inert):
    """A storage as a tensor sees it: ``numel`` elements from ``start`` of ``key``."""

    __slots__ = ("key", "storage_type", "start", "numel")
    key: str
    storage_type: _StorageType
    start: int
    numel: int


class _TensorRef(_Inert):
    __slots__ = ("storage", "offset", "size", "stride")
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


class _RebuildTensor(_Inert):
    """Callable stand-in for ``torch._utils._rebuild_tensor[_v2]``."""

    __slots__ = ("name", "source")

    def __call__(self, *args):
        minimum = _REBUILD_FUNCTIONS[self.name]
        if not minimum <= len(args) <= minimum + 1:
            raise ModelError(f"{self.source}: {self.name} called with {len(args)} arguments, "
                             f"expected {minimum}")
        storage, offset, size, stride = args[:4]
        if not isinstance(storage, _StorageRef):
            raise ModelError(f"{self.source}: {self.name} expects a storage, "
                             f"got {type(storage).__name__}")
        offset = _non_negative_int(offset, "storage offset", self.source)
        size = _int_tuple(size, "size", self.source)
        stride = _int_tuple(stride, "stride", self.source)
        if len(size) != len(stride):
            raise ModelError(f"{self.source}: tensor size {size} and stride {stride} "
                             "differ in length")
        return _TensorRef(storage=storage, offset=offset, size=size, stride=stride)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only state-dict globals and storage persistent ids.

    Parameters
    ----------
    file : binary file
        Positioned at the start of one pickle.
    source : str
        The file name, for error messages.
    storage_id_length : int or None
        Length of the persistent-id tuples to accept (6 in legacy files, 5 in zip
        files); ``None`` accepts no persistent id and no global at all (used for the
        header pickles of the legacy format).
    """

    def __init__(self, file, *, source: str, storage_id_length: int | None):
        super().__init__(file)
        self.source = source
        self.storage_id_length = storage_id_length
        self.storages: dict[str, _StorageType] = {}  # root key -> element type
        self.root_numel: dict[str, int] = {}

    def find_class(self, module, name):  # pickle's hook
        if self.storage_id_length is not None:
            if module == "collections" and name == "OrderedDict":
                return collections.OrderedDict
            if module == "torch._utils" and name in _REBUILD_FUNCTIONS:
                return _RebuildTensor(name=name, source=self.source)
            if module == "torch" and name in STORAGE_DTYPES:
                return _StorageType(name=name, dtype=np.dtype(STORAGE_DTYPES[name]))
        raise ModelError(
            f"{self.source}: refusing to load global '{module}.{name}': a state dict may "
            f"only name {', '.join(ALLOWED_GLOBALS)}; this file is not a plain state "
            "dict or has been tampered with")

    def persistent_load(self, pid):  # pickle's hook
        expected = self.storage_id_length
        if (expected is None or not isinstance(pid, tuple) or len(pid) != expected
                or _ascii(pid[0]) != "storage"):
            raise ModelError(f"{self.source}: refusing persistent id {_short_repr(pid)}: "
                             "only storage references are allowed")
        storage_type, key, location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise ModelError(f"{self.source}: persistent id names {_short_repr(storage_type)} "
                             "where a storage type is expected")
        key = _ascii(key)
        if not isinstance(key, str) or not isinstance(_ascii(location), str):
            raise ModelError(f"{self.source}: malformed storage reference {_short_repr(pid)}")
        numel = _non_negative_int(numel, "storage size", self.source)
        known = self.storages.setdefault(key, storage_type)
        if known != storage_type:
            raise ModelError(f"{self.source}: storage {key!r} used as both {known.name} "
                             f"and {storage_type.name}")
        if self.root_numel.setdefault(key, numel) != numel:
            raise ModelError(f"{self.source}: storage {key!r} declared with sizes "
                             f"{self.root_numel[key]} and {numel}")
        view = pid[5] if expected == 6 else None
        if view is None:
            return _StorageRef(key=key, storage_type=storage_type, start=0, numel=numel)
        if not isinstance(view, tuple) or len(view) != 3:
            raise ModelError(f"{self.source}: malformed storage view {_short_repr(view)}")
        start = _non_negative_int(view[1], "storage view offset", self.source)
        count = _non_negative_int(view[2], "storage view size", self.source)
        if start + count > numel:
            raise ModelError(f"{self.source}: storage view [{start}, {start + count}) "
                             f"exceeds storage {key!r} of {numel} elements")
        return _StorageRef(key=key, storage_type=storage_type, start=start, numel=count)


def read_state_dict(path: str | os.PathLike) -> collections.OrderedDict[str, np.ndarray]:
    """Read a PyTorch state dict without torch and without running pickled code.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by ``torch.save(model.state_dict(), path)``, in the legacy
        format or the zip format.

    Returns
    -------
    collections.OrderedDict[str, np.ndarray]
        The tensors in file order, as C-contiguous arrays in native byte order that
        own their data; storage offsets, sizes and strides are applied, so views
        (transposes, slices) come out as the tensors they were.  ``BFloat16``
        tensors become float32.

    Raises
    ------
    ModelError
        If the file is missing, is neither format, is truncated or inconsistent,
        names a global other than those in :data:`ALLOWED_GLOBALS`, or does not hold
        a mapping from names to tensors.

    Examples
    --------
    >>> weights = read_state_dict("efficientnet-lite0.pth")  # doctest: +SKIP
    >>> weights["_conv_stem.weight"].shape  # doctest: +SKIP
    (32, 3, 3, 3)
    """
    path = Path(path)
    source = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read PyTorch weights {source}: {exc}") from exc
    if data[:4] == b"PK\x03\x04":
        tensors, arrays = _read_zip(data, source)
    else:
        tensors, arrays = _read_legacy(data, source)
    return _materialise(tensors, arrays, source)


def _read_legacy(data: bytes, source: str):
    stream = io.BytesIO(data)
    if _load(stream, source, None, "magic number") != MAGIC_NUMBER:
        raise ModelError(f"{source} is not a PyTorch file (no zip archive, wrong magic number)")
    protocol = _load(stream, source, None, "protocol version")
    if protocol != PROTOCOL_VERSION:
        raise ModelError(f"{source}: unsupported PyTorch protocol version {protocol!r}")
    sys_info = _load(stream, source, None, "system information")
    byteorder: Literal["<", ">"] = "<"
    if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
        byteorder = ">"
    unpickler = _RestrictedUnpickler(stream, source=source, storage_id_length=6)
    tensors = _run(unpickler, source, "state dict")
    keys = _load(stream, source, None, "storage key list")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ModelError(f"{source}: the storage key list is malformed")
    if set(keys) != set(unpickler.storages) or len(keys) != len(set(keys)):
        raise ModelError(f"{source}: the storage key list does not match the storages "
                         "the tensors use")
    arrays = {}
    for key in keys:
        dtype = unpickler.storages[key].dtype.newbyteorder(byteorder)
        count_bytes = stream.read(8)
        if len(count_bytes) != 8:
            raise ModelError(f"{source} is truncated: storage {key!r} is missing")
        (count,) = struct.unpack("<q", count_bytes)
        if count != unpickler.root_numel[key]:
            raise ModelError(f"{source}: storage {key!r} holds {count} elements, the "
                             f"tensors expect {unpickler.root_numel[key]}")
        raw = stream.read(count * dtype.itemsize)
        if len(raw) != count * dtype.itemsize:
            raise ModelError(f"{source} is truncated inside storage {key!r}")
        arrays[key] = np.frombuffer(raw, dtype=dtype)
    return tensors, arrays


def _read_zip(data: bytes, source: str):
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"{source} is not a readable zip archive: {exc}") from exc
    pickles = [name for name in names if name.endswith("data.pkl")
               and name.count("/") == 1]
    if len(pickles) != 1:
        raise ModelError(f"{source}: expected one '<archive>/data.pkl' in the zip archive, "
                         f"found {len(pickles)}")
    prefix = pickles[0][: -len("data.pkl")]
    try:
        byteorder = archive.read(prefix + "byteorder").decode("ascii")
    except KeyError:
        byteorder = "little"
    if byteorder not in ("little", "big"):
        raise ModelError(f"{source}: unknown byte order {byteorder!r}")
    unpickler = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), source=source,
                                     storage_id_length=5)
    tensors = _run(unpickler, source, "state dict")
    arrays = {}
    for key, storage_type in unpickler.storages.items():
        dtype = storage_type.dtype.newbyteorder("<" if byteorder == "little" else ">")
        try:
            raw = archive.read(f"{prefix}data/{key}")
        except KeyError as exc:
            raise ModelError(f"{source}: storage record {prefix}data/{key} is missing") from exc
        expected = unpickler.root_numel[key] * dtype.itemsize
        if len(raw) != expected:
            raise ModelError(f"{source}: storage {key!r} has {len(raw)} bytes, "
                             f"the tensors expect {expected}")
        arrays[key] = np.frombuffer(raw, dtype=dtype)
    return tensors, arrays


def _materialise(tensors, arrays, source):
    if not isinstance(tensors, dict):
        raise ModelError(f"{source} holds a {type(tensors).__name__}, not a state dict")
    result = collections.OrderedDict()
    for name, ref in tensors.items():
        if not isinstance(name, str) or not isinstance(ref, _TensorRef):
            raise ModelError(f"{source}: entry {_short_repr(name)} is not a named tensor; "
                             "only plain state dicts (name -> tensor) are supported")
        result[name] = _tensor_array(ref, arrays[ref.storage.key], name, source)
    return result


def _tensor_array(ref: _TensorRef, storage: np.ndarray, name: str, source: str) -> np.ndarray:
    view = storage[ref.storage.start: ref.storage.start + ref.storage.numel]
    if any(n < 0 for n in ref.size) or any(s < 0 for s in ref.stride):
        raise ModelError(f"{source}: tensor {name!r} has negative size {ref.size} "
                         f"or stride {ref.stride}")
    if 0 in ref.size:
        array = np.empty(ref.size, dtype=view.dtype)
    else:
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
        if last >= view.size:
            raise ModelError(f"{source}: tensor {name!r} (offset {ref.offset}, size "
                             f"{ref.size}, stride {ref.stride}) reaches element {last} "
                             f"of a storage with {view.size}")
        strided = np.lib.stride_tricks.as_strided(
            view[ref.offset:], shape=ref.size,
            strides=tuple(s * view.itemsize for s in ref.stride), writeable=False)
        array = np.array(strided, dtype=view.dtype.newbyteorder("="), order="C")
    if ref.storage.storage_type.name == "BFloat16Storage":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _load(stream, source, storage_id_length, what):
    return _run(_RestrictedUnpickler(stream, source=source,
                                     storage_id_length=storage_id_length), source, what)


def _run(unpickler: _RestrictedUnpickler, source: str, what: str):
    try:
        return unpickler.load()
    except ModelError:
        raise
    except Exception as exc:  # any malformed pickle: EOFError, UnpicklingError, TypeError ...
        raise ModelError(f"{source}: cannot read the {what}: {type(exc).__name__}: {exc}") from exc


def _ascii(value):
    # Files pickled by Python 2 may carry internal strings as bytes.
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            return value
    return value


def _non_negative_int(value, what, source) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ModelError(f"{source}: {what} must be a non-negative integer, "
                         f"got {_short_repr(value)}")
    return value


def _int_tuple(value, what, source) -> tuple[int, ...]:
    if isinstance(value, list):
        value = tuple(value)
    if not isinstance(value, tuple) or any(
            isinstance(v, bool) or not isinstance(v, int) for v in value):
        raise ModelError(f"{source}: tensor {what} must be a tuple of integers, "
                         f"got {_short_repr(value)}")
    return value


def _short_repr(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
