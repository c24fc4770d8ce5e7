"""BlobProto <-> NumPy, and the ``.binaryproto`` files (mean images, blob vectors).

Caffe's rule for a stored blob's shape (``Blob::FromProto``): when any of the
legacy fields num/channels/height/width is present the shape is those four
numbers, otherwise it is ``shape.dim``. Values come from ``double_data`` when it
is non-empty, else from ``data``; the count must match the shape.
"""
from __future__ import annotations

import math
import os

import numpy as np

from ..errors import RistrettoError
from ..proto import caffe_pb2
from .atomic import atomic_write_bytes, read_bytes

_LEGACY_FIELDS = ("num", "channels", "height", "width")


def is_legacy_blob(blob: "caffe_pb2.BlobProto") -> bool:
    """True when the blob states its shape with the deprecated 4-d fields."""
    return any(blob.HasField(f) for f in _LEGACY_FIELDS)


def blob_shape(blob: "caffe_pb2.BlobProto") -> tuple[int, ...]:
    """The shape Caffe gives this stored blob (legacy 4-d fields win when present)."""
    if is_legacy_blob(blob):
        return (blob.num, blob.channels, blob.height, blob.width)
    return tuple(int(d) for d in blob.shape.dim)


def blob_to_array(blob: "caffe_pb2.BlobProto", where: str = "blob") -> np.ndarray:
    """The blob's values as a float32 array of its shape.

    ``where`` names the blob in error messages (e.g. ``"weights.caffemodel: layer conv1 blob 0"``).
    """
    shape = blob_shape(blob)
    if any(d < 0 for d in shape):
        raise RistrettoError(f"{where}: negative dimension in shape {shape}")
    count = math.prod(shape)
    if len(blob.double_data):
        values = np.asarray(blob.double_data, dtype=np.float64)
    else:
        values = np.asarray(blob.data, dtype=np.float32)
    if values.size != count:
        raise RistrettoError(
            f"{where}: {values.size} stored values do not fill shape {shape} ({count} values)")
    return values.astype(np.float32, copy=False).reshape(shape)


def array_to_blob(array, blob: "caffe_pb2.BlobProto | None" = None) -> "caffe_pb2.BlobProto":
    """A BlobProto (``shape`` + float ``data``) holding ``array`` as float32.

    When ``blob`` is given it is cleared and filled in place (and returned).
    """
    a = np.asarray(array, dtype="<f4")
    out = caffe_pb2.BlobProto() if blob is None else blob
    out.Clear()
    # Build the wire form directly: extending a repeated field element by element
    # costs seconds for a large layer, parsing packed bytes costs milliseconds.
    shape = caffe_pb2.BlobShape()
    shape.dim.extend(int(d) for d in a.shape)
    shape_bytes = shape.SerializeToString()
    raw = np.ascontiguousarray(a).tobytes()
    wire = b"".join([
        _key(7, 2), _varint(len(shape_bytes)), shape_bytes,
        _key(5, 2), _varint(len(raw)), raw,
    ])
    out.MergeFromString(wire)
    return out


def _key(field: int, wire_type: int) -> bytes:
    return _varint((field << 3) | wire_type)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# -- files ---------------------------------------------------------------------------

def _parse(path, data: bytes, message, what: str):
    from google.protobuf.message import DecodeError

    try:
        message.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise RistrettoError(f"{path}: not a Caffe {what} file (truncated or another format: {e})") from None
    return message


def read_blobproto(path) -> "caffe_pb2.BlobProto":
    """The BlobProto message stored in ``path``."""
    path = os.fspath(path)
    data = read_bytes(path)
    blob = _parse(path, data, caffe_pb2.BlobProto(), "BlobProto (.binaryproto)")
    if not data or not (len(blob.data) or len(blob.double_data)):
        raise RistrettoError(f"{path}: not a Caffe BlobProto (.binaryproto) file: it holds no values")
    return blob


def read_binaryproto(path) -> np.ndarray:
    """A mean file (BlobProto) as a float32 array, e.g. shape (1, 3, 32, 32)."""
    path = os.fspath(path)
    return blob_to_array(read_blobproto(path), where=path)


def write_binaryproto(path, array) -> None:
    """Write ``array`` as a BlobProto file, atomically."""
    atomic_write_bytes(path, array_to_blob(array).SerializeToString())


def read_blobproto_vector(path) -> list[np.ndarray]:
    """The arrays of a BlobProtoVector file (e.g. Caffe's ``extract_features`` output)."""
    path = os.fspath(path)
    data = read_bytes(path)
    vec = _parse(path, data, caffe_pb2.BlobProtoVector(), "BlobProtoVector")
    if not data or not len(vec.blobs):
        raise RistrettoError(f"{path}: not a Caffe BlobProtoVector file: it holds no blobs")
    return [blob_to_array(b, where=f"{path}: blob {i}") for i, b in enumerate(vec.blobs)]


def write_blobproto_vector(path, arrays) -> None:
    """Write a list of arrays as a BlobProtoVector file, atomically."""
    vec = caffe_pb2.BlobProtoVector()
    for a in arrays:
        array_to_blob(a, vec.blobs.add())
    atomic_write_bytes(path, vec.SerializeToString())
