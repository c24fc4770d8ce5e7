"""Binary ``.caffemodel`` files (a serialized NetParameter holding the layers' blobs).

Python's protobuf runtime has no 64 MB message limit (Caffe lifts its own limit
to 2 GB too); messages of 2 GB and more cannot be represented in protobuf at all.
Before decoding, the top level of the file is walked so that a cut-off download or
a file of another kind is reported in one line naming the file.
"""
from __future__ import annotations

import os

from google.protobuf.message import DecodeError

from ..errors import RistrettoError
from ..proto import caffe_pb2
from .atomic import atomic_write_bytes, read_bytes
from .upgrade import upgrade_net

# Top-level NetParameter fields and their wire types (0 varint, 2 length-delimited).
_NET_FIELDS = {1: 2, 2: 2, 3: 2, 4: (0, 2), 5: 0, 6: 2, 7: 0, 8: 2, 100: 2}
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# Field numbers that older Caffe-Ristretto builds used for LayerParameter.quantization_param
# (ours is 149, see caffe.proto). BVLC master later gave them to clip_param (148) and
# swish_param (147): in a layer of another type, such a field holds a QuantizationParameter.
LEGACY_QUANTIZATION_FIELDS = (148, 147)
_LEGACY_QUANTIZATION_OWNERS = {148: ("clip_param", "Clip"), 147: ("swish_param", "Swish")}
_MAX_PROTO_BYTES = 2**31 - 1


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if i >= len(data):
            raise IndexError
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def check_net_wire_format(data: bytes) -> str | None:
    """None when ``data`` is plausibly a NetParameter, else "truncated" or "not a Caffe NetParameter".

    Walks only the top level (a few dozen fields), so it costs nothing next to decoding.
    """
    if not data:
        return "not a Caffe NetParameter (empty file)"
    if data.startswith(_HDF5_SIGNATURE):
        return "not a Caffe NetParameter (an HDF5 file; HDF5 weights are not supported, convert them to .caffemodel)"
    i, n, seen_layers = 0, len(data), False
    try:
        while i < n:
            key, i = _read_varint(data, i)
            field, wire = key >> 3, key & 7
            expected = _NET_FIELDS.get(field)
            if expected is None or wire not in (expected if isinstance(expected, tuple) else (expected,)):
                return "not a Caffe NetParameter"
            if wire == 0:
                _, i = _read_varint(data, i)
            else:
                length, i = _read_varint(data, i)
                if i + length > n:
                    return "truncated (the file ends inside a layer)"
                i += length
            seen_layers |= field in (2, 100)
    except IndexError:
        return "truncated"
    except ValueError:
        return "not a Caffe NetParameter"
    if not seen_layers:
        return "not a Caffe NetParameter (no layers)"
    return None


def parse_caffemodel_bytes(data: bytes, filename: str = "<bytes>", upgrade: bool = True) -> "caffe_pb2.NetParameter":
    """Decode (and by default upgrade) a binary NetParameter; errors name ``filename``."""
    if len(data) > _MAX_PROTO_BYTES:
        raise RistrettoError(f"{filename}: {len(data)} bytes is beyond what a protobuf message can hold (2 GB)")
    problem = check_net_wire_format(data)
    if problem:
        raise RistrettoError(f"{filename}: {problem}")
    net = caffe_pb2.NetParameter()
    try:
        net.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise RistrettoError(f"{filename}: not a Caffe NetParameter or truncated ({e})") from None
    adopt_legacy_quantization_params(net)
    if upgrade:
        upgrade_net(net, filename)
    return net


def adopt_legacy_quantization_params(net: "caffe_pb2.NetParameter") -> int:
    """Move a QuantizationParameter stored under an older field number into ``quantization_param``.

    Returns how many layers were changed. A layer that already has ``quantization_param``
    keeps it; data under the old numbers that does not decode is left alone.
    """
    changed = 0
    for layer in net.layer:
        if layer.HasField("quantization_param"):
            continue
        for number in LEGACY_QUANTIZATION_FIELDS:
            field, owner = _LEGACY_QUANTIZATION_OWNERS[number]
            if layer.type == owner or not layer.HasField(field):
                continue
            # QuantizationParameter's fields have other wire types than Clip's / Swish's
            # floats, so the runtime kept them as unknown fields: the bytes are intact.
            q = caffe_pb2.QuantizationParameter()
            try:
                q.ParseFromString(getattr(layer, field).SerializePartialToString())
            except DecodeError:
                continue
            layer.ClearField(field)
            layer.quantization_param.CopyFrom(q)
            changed += 1
            break
    return changed


def read_caffemodel(path, upgrade: bool = True) -> "caffe_pb2.NetParameter":
    """Read a ``.caffemodel`` (V0, V1 or V2 layers) and return it in the V2 format."""
    path = os.fspath(path)
    return parse_caffemodel_bytes(read_bytes(path), path, upgrade)


def write_caffemodel(path, net_param: "caffe_pb2.NetParameter") -> None:
    """Write ``net_param`` in binary form, atomically (temporary file + rename)."""
    try:
        data = net_param.SerializeToString()
    except (ValueError, RuntimeError) as e:  # e.g. beyond 2 GB
        raise RistrettoError(f"{os.fspath(path)}: cannot serialize the net: {e}") from None
    atomic_write_bytes(path, data)
