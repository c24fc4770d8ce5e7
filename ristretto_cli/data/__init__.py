"""Data side: LMDB Datum I/O, Caffe's data transformer, batch sources with prefetch
(:mod:`.sources`), dataset converters and mean computation.

The Data / ImageData layers that read through these live in
:mod:`ristretto_cli.layers.data`.

What it may import: ``caffe``, ``proto``, ``progress``, ``errors``; never ``layers``
or ``net`` (layers -> data, one direction) and never ``commands`` (converters report
through ``log`` / ``on_progress`` callbacks).
"""
from .lmdb_io import (
    LMDBReader,
    LMDBWriter,
    datum_to_array,
    make_datum,
    make_encoded_datum,
    parse_datum,
    read_datums,
    write_datums,
)
from .transform import DataTransformer, decode_image, encode_image, load_mean_file, read_image, resize_image

__all__ = [
    "DataTransformer",
    "LMDBReader",
    "LMDBWriter",
    "datum_to_array",
    "decode_image",
    "encode_image",
    "load_mean_file",
    "make_datum",
    "make_encoded_datum",
    "parse_datum",
    "read_datums",
    "read_image",
    "resize_image",
    "write_datums",
]
