"""Input files the commands read on the user's behalf (arrays given on the command line)."""
from __future__ import annotations

import os

import numpy as np

from ..errors import RistrettoError

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def read_npy(path: str) -> np.ndarray:
    """A numeric array from a ``.npy`` file as float32; never unpickles. Anything else
    (missing file, text, an ``.npz`` archive, object or string arrays, a cut-off file) is a
    one-line RistrettoError naming the file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(len(_NPY_MAGIC))
    except FileNotFoundError:
        raise RistrettoError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise RistrettoError(f"{path}: is a folder, not a .npy file") from None
    except OSError as exc:
        raise RistrettoError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if head.startswith(_ZIP_MAGIC):
        raise RistrettoError(f"{path}: an .npz archive, not a .npy array; save one array with numpy.save")
    if head != _NPY_MAGIC:
        raise RistrettoError(f"{path}: not a .npy file (no NumPy header); save the array with numpy.save")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc):
            raise RistrettoError(f"{path}: holds Python objects, not numbers (pickled data is never loaded)") \
                from None
        raise RistrettoError(f"{path}: not a readable .npy array ({exc})") from None
    except (EOFError, OSError) as exc:
        raise RistrettoError(f"{path}: not a readable .npy array (truncated? {exc})") from None
    if array.dtype.kind not in "biuf":
        raise RistrettoError(f"{path}: array of {array.dtype} values; expected numbers (int, float or bool)")
    return array.astype(np.float32, copy=False)
