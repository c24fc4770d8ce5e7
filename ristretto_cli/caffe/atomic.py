"""File access with one-line errors: atomic output (a reader never sees a half-written
model, mean or prototxt) and checked reads.

The bytes go to a temporary file in the destination folder (same file system, so
the final ``os.replace`` is atomic), are flushed and fsync'ed, and only then take
the destination's name. On any failure the temporary file is removed and the
destination is left as it was.
"""
from __future__ import annotations

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
