"""Data side: LMDB Datum I/O, Caffe's data transformer, the Data / ImageData layers,
dataset converters and mean computation.

Importing :mod:`ristretto_cli.data.layers` registers the "Data" and "ImageData" layer
types (``ristretto_cli.layers.load_all`` does that).
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
