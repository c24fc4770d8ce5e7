"""Build a ready-to-run Net from files: prototxt, optional weights, phase, backend;
read input arrays; check output paths before long work starts."""
from __future__ import annotations

import os

import numpy as np

from .backend import Backend
from .errors import RistrettoError
from .net import Net

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def load_net(model: str, weights=None, phase="TEST", backend: Backend | None = None, level=None,
             stages=None) -> Net:
    """Read ``model`` (any Caffe prototxt version), build it for ``phase`` and copy ``weights``
    (a path, "a,b" or a list) by layer name."""
    from .caffe.prototxt import read_net

    param = read_net(model)
    if not param.layer:
        raise RistrettoError(f"{model}: no layers; is this a net prototxt?")
    net = Net(param, phase=phase, backend=backend, level=level, stages=stages, source=model)
    if not net.layers:
        raise RistrettoError(f"{model}: no layer is included in the {str(phase).upper()} phase")
    if weights and not net.load_weights(weights) and any(layer.blobs for layer in net.layers):
        from .commands.ui import log

        log(f"warning: no layer of {weights} matches a layer name of {model}; the weights are the fillers'")
    return net


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


def check_output_path(path: str, inputs=(), option: str = "--output") -> None:
    """Fail before any work when ``path`` cannot be written or would replace an input file.

    ``inputs``: paths (or "a,b" lists of paths) the command reads; none may be overwritten.
    """
    path = os.fspath(path)
    if path == "-":
        return
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise RistrettoError(f"{path}: cannot write ({option}): it is a folder")
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise RistrettoError(f"{path}: cannot write ({option}): {folder} {what}")
    if not os.access(folder, os.W_OK):
        raise RistrettoError(f"{path}: cannot write ({option}): folder {folder} is not writable")
    target = os.path.abspath(path)
    for entry in inputs:
        for p in ([entry] if not isinstance(entry, str) else entry.split(",")):
            if not p:
                continue
            p = os.fspath(p)
            same = os.path.abspath(p) == target
            if not same and os.path.exists(p) and os.path.exists(path):
                same = os.path.samefile(p, path)
            if same:
                raise RistrettoError(f"{path}: {option} would overwrite the input {p}; choose another path")
