"""Array-module selection: every layer computes through ``backend.xp``.

NumPy is always available; CuPy is used when a GPU is requested and importable.
The random generator lives here too, so a seed makes fillers, dropout, stochastic
rounding and data shuffling reproducible on either backend.

This is the one module that imports ``cupy`` / ``cupyx`` and the one place that asks
"which array module is this?": :func:`array_module`, :func:`is_numpy`,
:func:`scatter_add` and :func:`synchronize` serve the rest of the package, which
only ever sees ``xp``. It imports nothing of the library but :mod:`.errors`.
"""
from __future__ import annotations

import contextlib

import numpy as np
from threadpoolctl import threadpool_limits

from .errors import RistrettoError


def array_module(x):
    """NumPy or CuPy, whichever ``x`` belongs to (NumPy for scalars and lists)."""
    if type(x).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


def is_numpy(xp) -> bool:
    """Whether the array module ``xp`` is NumPy (host memory), not CuPy."""
    return xp is np or getattr(xp, "__name__", "") == "numpy"


def scatter_add(dst, index, values) -> None:
    """``dst[index] += values`` in place, adding repeated indices once each
    (``np.add.at``; ``cupyx.scatter_add`` where CuPy lacks ``ufunc.at``)."""
    xp = array_module(dst)
    at = getattr(xp.add, "at", None)
    if at is not None:
        at(dst, index, values)
    else:  # pragma: no cover - CuPy without ufunc.at
        import cupyx

        cupyx.scatter_add(dst, index, values)


def synchronize(backend_or_xp) -> None:
    """Wait until the device has finished the work queued so far (no-op on NumPy), so
    that a host clock read afterwards times the device work."""
    xp = getattr(backend_or_xp, "xp", backend_or_xp)
    if not is_numpy(xp):
        xp.cuda.Stream.null.synchronize()


class Backend:
    """One array module (``xp``) plus a seeded random generator."""

    def __init__(self, xp=np, seed: int | None = None, device: int | None = None):
        self.xp = xp
        self.device = device
        self.name = "numpy" if is_numpy(xp) else "cupy"
        self.seed(seed)

    def seed(self, seed: int | None) -> None:
        """Reseed the generator (None: from the OS)."""
        self.rng = self.xp.random.default_rng(seed)

    def asarray(self, a, dtype=None):
        return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, a) -> np.ndarray:
        """Bring an array back to host memory as NumPy."""
        if is_numpy(self.xp):
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


_modules: dict = {}


def cuda_module(source: str, options: tuple = ()):
    """The CUDA C ``source`` compiled by CuPy (``cupy.RawModule``) for the current device,
    cached per (source, options, device): the first call compiles (NVRTC, and CuPy's disk
    cache), later calls return the same module. No fast-math unless ``options`` say so."""
    import cupy

    key = (source, tuple(options), cupy.cuda.Device().id)
    module = _modules.get(key)
    if module is None:
        module = _modules[key] = cupy.RawModule(code=source, options=tuple(options))
    return module


def cuda_available() -> tuple[bool, str]:
    """(True, "") when CuPy imports and sees a CUDA device, else (False, why not), in words."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install
        return False, f"CuPy is not installed ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # pragma: no cover - depends on the machine (no driver, no device)
        return False, f"no CUDA device ({' '.join(str(exc).split())})"
    if count < 1:  # pragma: no cover - depends on the machine
        return False, "no CUDA device"
    return True, ""


def cuda_devices(ids=None) -> list[dict]:
    """The CUDA devices CuPy sees, like Caffe's ``device_query``: for each of ``ids`` (all
    when None) its id, name, compute capability, total memory in bytes, multiprocessors and
    clock rate. A one-line error without CuPy, without a device, or for an absent id."""
    try:
        import cupy
    except ImportError as exc:
        raise RistrettoError(f"device_query: CuPy is not installed ({exc}); "
                             f"install it with pip install -e '.[gpu]'") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # pragma: no cover - depends on the machine (no driver, no device)
        raise RistrettoError(f"device_query: no CUDA device ({' '.join(str(exc).split())})") from None
    if count < 1:  # pragma: no cover - depends on the machine
        raise RistrettoError("device_query: no CUDA device")
    ids = list(range(count)) if ids is None else list(ids)
    out = []
    for i in ids:
        if not 0 <= i < count:
            raise RistrettoError(f"--gpu {i}: no such CUDA device; this machine has "
                                 f"{count} (ids 0..{count - 1})")
        p = cupy.cuda.runtime.getDeviceProperties(i)
        name = p.get("name", b"")
        out.append({
            "id": i,
            "name": name.decode(errors="replace") if isinstance(name, bytes) else str(name),
            "compute_capability": f"{p.get('major', '?')}.{p.get('minor', '?')}",
            "total_memory": int(p.get("totalGlobalMem", 0)),
            "multiprocessors": int(p.get("multiProcessorCount", 0)),
            "clock_khz": int(p.get("clockRate", 0)),
        })
    return out


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
