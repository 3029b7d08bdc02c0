"""Model files whose bytes depend on the graph alone: the same in every process and runtime.

A ``GraphDef`` holds protobuf maps: every node's ``attr`` (and, in a function library,
the maps of each function).  Protobuf writes a map in the order of its hash table
unless asked for a deterministic encoding, and the tables of the Python runtime (upb)
are seeded per process, so ``SerializeToString()`` gives one graph different bytes in
every process: a network built on two machines would have two SHA-256 values, and
provenance and the merge of shards, which compare them, would tell identical runs
apart.  Even the deterministic encoding is fixed only within one runtime: upb writes
the attributes ``Tidx`` and ``T`` in one order, the pure-Python runtime in the other.

:func:`serialize_graph` writes every map with its entries sorted by key (strings in
code point order, numbers by value) and every field in field-number order, as the
protobuf encoding recommends; messages that cannot hold a map at any depth (tensors,
shapes) are left to protobuf's own encoder, for which the order is fixed.  Every
writer of a model file in this project goes through :func:`write_graph_def`.
"""
from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

from google.protobuf.descriptor import FieldDescriptor

#: Wire type of a length-delimited field (a message, a map entry).
_LENGTH_DELIMITED = 2

#: Fixed-width types: wire type and ``struct`` layout (little-endian).
_FIXED = {FieldDescriptor.TYPE_FIXED32: (5, "<I"), FieldDescriptor.TYPE_SFIXED32: (5, "<i"),
          FieldDescriptor.TYPE_FLOAT: (5, "<f"), FieldDescriptor.TYPE_FIXED64: (1, "<Q"),
          FieldDescriptor.TYPE_SFIXED64: (1, "<q"), FieldDescriptor.TYPE_DOUBLE: (1, "<d")}

# message type (full name) -> whether a message of it can hold a map at any depth
_HOLDS_MAP: dict[str, bool] = {}


def serialize_graph(graph_def) -> bytes:
    """Encode a GraphDef the same way in every process and on every machine.

    Parameters
    ----------
    graph_def : tensorflow.compat.v1.GraphDef
        Or any other protobuf message.

    Returns
    -------
    bytes
        The protobuf encoding with map entries sorted by key; it parses back to a
        message equal to ``graph_def``.
    """
    return _encode(graph_def)


def write_graph_def(graph_def, path: str | os.PathLike) -> Path:
    """Write a GraphDef to ``path`` as :func:`serialize_graph` encodes it, atomically.

    The bytes go to a temporary file in the same folder, which is then renamed to
    ``path``, so that a reader never sees a partial file and an interrupted write
    leaves none.

    Parameters
    ----------
    graph_def : tensorflow.compat.v1.GraphDef
    path : str or os.PathLike
        The ``.pb`` file; its folder is created if needed, an existing file replaced.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    data = serialize_graph(graph_def)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _encode(message) -> bytes:
    if not _holds_map(message.DESCRIPTOR):
        return message.SerializeToString(deterministic=True)
    out = bytearray()
    for field, value in sorted(message.ListFields(), key=lambda item: item[0].number):
        if _is_map(field):
            for entry in _map_entries(value):
                out += _delimited(field.number, entry)
        elif field.type == field.TYPE_MESSAGE:
            for item in (value if field.is_repeated else (value,)):
                out += _delimited(field.number, _encode(item))
        else:  # scalars, strings, enums (single or lists): protobuf's own encoding
            alone = type(message)()
            if field.is_repeated:
                getattr(alone, field.name).extend(value)
            elif field.message_type is not None:  # a proto2 group
                getattr(alone, field.name).CopyFrom(value)
            else:
                setattr(alone, field.name, value)
            out += alone.SerializeToString(deterministic=True)
    return bytes(out)


def _map_entries(mapping):
    """Each entry of a protobuf map encoded as a message ``{key: 1, value: 2}``, by key.

    Key and value are both always written, as the C++ and pure-Python runtimes write
    map entries (upb leaves out a default value).
    """
    descriptor = mapping.GetEntryClass().DESCRIPTOR
    key_field = descriptor.fields_by_name["key"]
    value_field = descriptor.fields_by_name["value"]
    for key in sorted(mapping):
        value = mapping[key]
        if value_field.message_type is not None:
            encoded = _delimited(value_field.number, _encode(value))
        else:
            encoded = _scalar(value_field, value)
        yield _scalar(key_field, key) + encoded


def _scalar(field, value) -> bytes:
    """One scalar, string or enum field, encoded even when it holds its default."""
    kind = field.type
    if kind in (field.TYPE_STRING, field.TYPE_BYTES):
        return _delimited(field.number, value.encode("utf-8") if isinstance(value, str)
                          else bytes(value))
    if kind in _FIXED:
        wire_type, layout = _FIXED[kind]
        return _varint(field.number << 3 | wire_type) + struct.pack(layout, value)
    value = int(value)
    if kind in (field.TYPE_SINT32, field.TYPE_SINT64):
        value = (value << 1) ^ (value >> 63)  # zigzag
    return _varint(field.number << 3) + _varint(value & 0xFFFFFFFFFFFFFFFF)


def _delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _is_map(field) -> bool:
    return (field.is_repeated and field.message_type is not None
            and field.message_type.GetOptions().map_entry)


def _holds_map(descriptor) -> bool:
    """Whether a message of this type can hold a map field, itself or at any depth."""
    name = descriptor.full_name
    if name not in _HOLDS_MAP:
        seen = {name}
        pending = [descriptor]
        found = False
        while pending and not found:
            for field in pending.pop().fields:
                if _is_map(field):
                    found = True
                    break
                nested = field.message_type
                if nested is not None and nested.full_name not in seen:
                    seen.add(nested.full_name)
                    pending.append(nested)
        _HOLDS_MAP[name] = found
    return _HOLDS_MAP[name]
