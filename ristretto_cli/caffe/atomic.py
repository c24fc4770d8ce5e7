"""File access with one-line errors: atomic output (a reader never sees a half-written
model, mean, prototxt or report), checks of output paths before long work starts, and
checked reads.

The bytes go to a temporary file in the destination folder (same file system, so
the final ``os.replace`` is atomic), are flushed and fsync'ed, and only then take
the destination's name. On any failure the temporary file is removed and the
destination is left as it was.
"""
from __future__ import annotations

import json
import math
import os
import tempfile

from ..errors import RistrettoError


def _read_umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


_UMASK = _read_umask()  # read once at import, not while other threads may create files


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically; errors name the file or its folder."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise RistrettoError(f"{path}: cannot write: folder {folder} does not exist")
    if os.path.isdir(path):
        raise RistrettoError(f"{path}: cannot write: it is a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    except OSError as e:
        raise RistrettoError(f"{path}: cannot write into folder {folder}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the usual permissions (umask applied).
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise RistrettoError(f"{path}: cannot write: {e.strerror or e}") from None
        raise
    _fsync_dir(folder)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def check_output_path(path: str | os.PathLike, inputs=(), option: str = "--output") -> None:
    """Fail before any work when ``path`` cannot be written or would replace an input file.

    ``inputs``: paths (or "a,b" lists of paths) the command reads; none may be overwritten.
    ``option`` names the setting in the messages. "-" (stdout) always passes.
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


def json_text(data) -> str:
    """``data`` as indented JSON text with a final newline. NaN and infinities, which JSON
    cannot hold, become null; NumPy scalars become numbers."""
    return json.dumps(_finite(data), indent=2, sort_keys=False, default=float, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, data) -> None:
    """Write ``data`` as JSON (see :func:`json_text`) to ``path`` atomically."""
    atomic_write_bytes(path, json_text(data).encode())


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0:  # NumPy scalars
        return _finite(value.item())
    return value


def _fsync_dir(folder: str) -> None:
    # Make the rename durable where the platform allows it; never an error.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_bytes(path: str | os.PathLike) -> bytes:
    """The whole file; a missing, folder or unreadable path is a one-line error naming it."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise RistrettoError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise RistrettoError(f"{path}: is a folder, not a file") from None
    except OSError as e:
        raise RistrettoError(f"{path}: cannot read: {e.strerror or e}") from None
