"""Caffe file I/O: prototxt nets and solvers, caffemodels, binaryproto blobs, V0/V1 upgrade.

Everything returns ``ristretto_cli.proto.caffe_pb2`` messages or NumPy arrays, and
reports bad input as one-line RistrettoErrors that name the file (and line:column
for text).

What it may import: ``proto`` and ``errors`` only; every other package reads and
writes Caffe files through it.
"""
from .atomic import atomic_write_bytes, atomic_write_text
from .blobproto import (array_to_blob, blob_shape, blob_to_array, is_legacy_blob, read_binaryproto,
                        read_blobproto, read_blobproto_vector, write_binaryproto, write_blobproto_vector)
from .caffemodel import parse_caffemodel_bytes, read_caffemodel, write_caffemodel
from .prototxt import (message_to_text, parse_net_text, parse_solver_text, parse_text, read_net, read_solver,
                       read_text_message, resolve_path, write_text)
from .upgrade import upgrade_net, upgrade_solver
from .weights import blob_fits, fit_blob, load_weights

__all__ = [
    "atomic_write_bytes", "atomic_write_text",
    "array_to_blob", "blob_shape", "blob_to_array", "is_legacy_blob", "read_binaryproto", "read_blobproto",
    "read_blobproto_vector", "write_binaryproto", "write_blobproto_vector",
    "parse_caffemodel_bytes", "read_caffemodel", "write_caffemodel",
    "message_to_text", "parse_net_text", "parse_solver_text", "parse_text", "read_net", "read_solver",
    "read_text_message", "resolve_path", "write_text",
    "upgrade_net", "upgrade_solver",
    "blob_fits", "fit_blob", "load_weights",
]
