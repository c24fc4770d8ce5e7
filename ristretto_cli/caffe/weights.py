"""Trained weights by layer name, as Caffe's ``--weights a.caffemodel,b.caffemodel`` reads them.

Caffe (``Net::CopyTrainedLayersFrom``) copies, file after file, the blobs of every
stored layer whose name matches a layer of the net; a later file replaces what an
earlier one gave that layer; stored layers without a match are ignored. The number
of blobs must match, and each blob's shape must equal the target's -- except that a
blob stored with the legacy num/channels/height/width fields matches a target whose
shape, padded with leading 1s to four axes, equals those four numbers
(``Blob::ShapeEquals``), e.g. V1 InnerProduct weights (1, 1, 500, 800) for (500, 800).
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import RistrettoError
from .blobproto import blob_to_array, is_legacy_blob
from .caffemodel import read_caffemodel


def load_weights(paths, with_source: bool = False) -> dict[str, list[tuple]]:
    """Layer name -> its stored blobs ``[(array float32, legacy_shape_flag), ...]`` in file order.

    ``paths`` is a list of caffemodel paths (a single path or "a,b" string is
    accepted too); later files override earlier ones layer by layer. Every
    stored layer is listed, also those without blobs (so a caller can check blob
    counts as Caffe does). With ``with_source=True`` the tuples are
    ``(array, legacy, filename)``.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [p for p in os.fspath(paths).split(",") if p]
    out: dict[str, list[tuple]] = {}
    for path in paths:
        path = os.fspath(path)
        net = read_caffemodel(path)
        for layer in net.layer:
            blobs = []
            for k, blob in enumerate(layer.blobs):
                array = blob_to_array(blob, where=f"{path}: layer '{layer.name}' blob {k}")
                legacy = is_legacy_blob(blob)
                blobs.append((array, legacy, path) if with_source else (array, legacy))
            out[layer.name] = blobs
            del layer.blobs[:]  # let the decoded message go as we convert
    return out


def legacy_shape(shape) -> tuple[int, ...] | None:
    """``shape`` padded with leading 1s to four axes, or None when it has more than four."""
    shape = tuple(int(d) for d in shape)
    if len(shape) > 4:
        return None
    return (1,) * (4 - len(shape)) + shape


def blob_fits(array_shape, legacy: bool, target_shape) -> bool:
    """Whether a stored blob of ``array_shape`` may fill a target blob, by Caffe's rule."""
    array_shape = tuple(int(d) for d in array_shape)
    target_shape = tuple(int(d) for d in target_shape)
    if legacy:
        return len(array_shape) == 4 and legacy_shape(target_shape) == array_shape
    return array_shape == target_shape


def fit_blob(array: np.ndarray, legacy: bool, target_shape, layer: str, index: int,
             filename: str) -> np.ndarray:
    """``array`` reshaped to ``target_shape``, or a RistrettoError naming layer, blob, shapes and file."""
    target_shape = tuple(int(d) for d in target_shape)
    if not blob_fits(array.shape, legacy, target_shape):
        kind = " (legacy 4-d)" if legacy else ""
        raise RistrettoError(
            f"{filename}: layer '{layer}' blob {index}: stored shape {tuple(array.shape)}{kind} does not fit "
            f"the net's shape {target_shape}")
    return array.reshape(target_shape)
