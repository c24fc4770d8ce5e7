"""Array-module selection: every layer computes through ``backend.xp``.

NumPy is always available; CuPy is used when a GPU is requested and importable.
The random generator lives here too, so a seed makes fillers, dropout, stochastic
rounding and data shuffling reproducible on either backend.
"""
from __future__ import annotations

import contextlib

import numpy as np
from threadpoolctl import threadpool_limits

from .errors import RistrettoError


class Backend:
    """One array module (``xp``) plus a seeded random generator."""

    def __init__(self, xp=np, seed: int | None = None, device: int | None = None):
        self.xp = xp
        self.device = device
        self.name = "cupy" if xp is not np else "numpy"
        self.seed(seed)

    def seed(self, seed: int | None) -> None:
        """Reseed the generator (None: from the OS)."""
        self.rng = self.xp.random.default_rng(seed) if self.xp is np else self.xp.random.default_rng(seed)

    def asarray(self, a, dtype=None):
        return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, a) -> np.ndarray:
        """Bring an array back to host memory as NumPy."""
        if self.xp is np:
            return np.asarray(a)
        return self.xp.asnumpy(a)

    def __repr__(self) -> str:
        return f"Backend({self.name}{'' if self.device is None else f', device={self.device}'})"


def get_backend(gpu: int | None = None, seed: int | None = None) -> Backend:
    """NumPy when ``gpu`` is None or negative, else CuPy on device ``gpu``."""
    if gpu is None or gpu < 0:
        return Backend(np, seed)
    try:
        import cupy
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise RistrettoError(f"--gpu {gpu}: CuPy is not installed ({exc}); run without --gpu") from exc
    try:
        cupy.cuda.Device(gpu).use()
    except Exception as exc:  # pragma: no cover
        raise RistrettoError(f"--gpu {gpu}: no such CUDA device ({exc})") from exc
    return Backend(cupy, seed, device=gpu)


_default = Backend(np)


def default_backend() -> Backend:
    return _default


@contextlib.contextmanager
def one_blas_thread():
    """Hold BLAS to one thread. OpenBLAS splits a product differently across threads,
    which can change its last bits, and its threads spin on cores that other work
    holds: passes whose results must not depend on the core count (quantize scoring)
    and worker threads that are themselves the parallelism run inside this."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield
