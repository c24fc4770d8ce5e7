"""The CuPy side of the trimmers: ``kernels/trim.cu`` launched on float32 CuPy arrays.

:mod:`.trim` sends a float32 CuPy array here; everything else (NumPy arrays, float64
CuPy arrays) stays on the ``xp`` array code. Each kernel fuses clamp, scaling, rounding
and rescaling in one pass and computes what trim.py computes, bit for bit (trim.py is
the twin the tests compare the kernels with).

STOCHASTIC rounding draws u per element: from a :class:`~.counter_rng.CounterRNG` given
as ``rng``, inside the kernel (Philox4x32-10 keyed by seed, call counter, element index:
no array of draws, the same numbers as the NumPy twin); from any other generator (the
backend's CuPy ``Generator``), as one float64 array ``rng.random(size=x.shape)``, the
draws the ``xp`` path would have made.

This module never imports cupy: the compiled module comes from
:func:`ristretto_cli.backend.cuda_module`, launches take NumPy scalars.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from ..backend import array_module, cuda_module, is_numpy
from .counter_rng import CounterRNG
from .rounding import FormatError, Rounding

BLOCK = 256
MAX_GRID = 1 << 16          # grid-stride loops cover the rest


def handles(x) -> bool:
    """Whether the kernels take ``x``: a float32 CuPy array."""
    xp = array_module(x)
    return not is_numpy(xp) and x.dtype == xp.float32


def module():
    """The compiled ``trim.cu`` (compiled once per device, then cached)."""
    return cuda_module(kernels.source("trim.cu"))


def device_rng(rng, xp):
    """``rng`` such that its draws are arrays of ``xp``: a :class:`CounterRNG`'s NumPy
    draws are copied to the device (for the ``xp`` path of non-float32 CuPy arrays)."""
    if isinstance(rng, CounterRNG) and not is_numpy(xp):
        return _DeviceDraws(rng, xp)
    return rng


class _DeviceDraws:
    def __init__(self, rng, xp):
        self.rng, self.xp = rng, xp

    def random(self, size=None, dtype=np.float64):
        return self.xp.asarray(self.rng.random(size=size, dtype=dtype))


def _draw_args(x, rounding, rng, xp):
    """(u array, has_u, seed, call) for a launch."""
    if rounding != Rounding.STOCHASTIC:
        return xp.zeros(1, dtype=xp.float64), np.int32(0), np.uint64(0), np.uint64(0)
    if rng is None:
        raise FormatError("STOCHASTIC rounding needs a random generator (rng)")
    if isinstance(rng, CounterRNG):
        return xp.zeros(1, dtype=xp.float64), np.int32(0), np.uint64(rng.seed), np.uint64(rng.take_call())
    u = xp.ascontiguousarray(xp.asarray(rng.random(size=x.shape, dtype=xp.float64), dtype=xp.float64))
    return u, np.int32(1), np.uint64(0), np.uint64(0)


def _launch(name, x, out, scalars, rounding, rng):
    """Run kernel ``name`` over the float32 CuPy array ``x`` into ``out`` (or a new array)."""
    xp = array_module(x)
    src = xp.ascontiguousarray(x)
    draws = _draw_args(src, rounding, rng, xp)
    direct = out is not None and out.flags.c_contiguous and (_same(out, src) or not _overlaps(out, src))
    dst = out if direct else xp.empty_like(src)
    n = src.size
    if n:
        grid = min((n + BLOCK - 1) // BLOCK, MAX_GRID)
        module().get_function(name)((grid,), (BLOCK,), (src, dst, np.uint64(n), *scalars, *draws))
    if out is None:
        return dst
    if dst is not out:
        out[...] = dst
    return out


def _same(a, b) -> bool:
    """Whether two contiguous device arrays are the same memory (an in-place trim)."""
    return a.data.ptr == b.data.ptr and a.nbytes == b.nbytes


def _overlaps(a, b) -> bool:
    """Whether two device arrays may share memory (then the kernel writes a scratch copy)."""
    a0, b0 = a.data.ptr, b.data.ptr
    return a0 < b0 + b.nbytes and b0 < a0 + a.nbytes


def trim_fixed_point(x, bw: int, fl: int, rounding: Rounding, rng, out):
    """Dynamic fixed point on a float32 CuPy array: the bounds, scales and TRUNCATE fix as
    trim.py computes them (every scaling is exact-then-rounded-once, for any fl)."""
    with np.errstate(all="ignore"):
        hi = np.float32((2.0 ** (bw - 1) - 1) * 2.0 ** -fl)
        lo = np.float32(-(2.0 ** (bw - 1)) * 2.0 ** -fl)
    fix = rounding == Rounding.TRUNCATE and -126 <= fl < 0      # trim.py: 2^fl and 2^-fl normal, fl < 0
    return _fixed(x, hi, lo, fl, rounding, rng, out, fix)


def trim_fixed_point_unsigned(x, bw: int, fl: int, rounding: Rounding, rng, out):
    """Unsigned dynamic fixed point on a float32 CuPy array: clamp to [0, (2^bw-1) 2^-fl]."""
    with np.errstate(all="ignore"):
        hi = np.float32((2.0 ** bw - 1) * 2.0 ** -fl)
    return _fixed(x, hi, np.float32(0), fl, rounding, rng, out, False)


def _fixed(x, hi, lo, fl, rounding, rng, out, fix):
    scalars = (np.float32(hi), np.float32(lo), np.float64(2.0 ** fl), np.float64(2.0 ** -fl),
               np.int32(int(rounding)), np.int32(bool(fix)))
    return _launch("rt_trim_fixed_point_f32", x, out, scalars, rounding, rng)


def trim_minifloat(x, m: int, e: int, rounding: Rounding, rng, saturate_after_rounding: bool, out):
    """Minifloat on a float32 CuPy array (the formula of trim.py, every rounding)."""
    top = (2.0 - 2.0 ** -m) * 2.0 ** (1 << (e - 1))
    scalars = (np.int32(m), np.int32(e), np.int32(int(rounding)), np.int32(bool(saturate_after_rounding)),
               np.float64(top))
    return _launch("rt_trim_minifloat_f32", x, out, scalars, rounding, rng)


def trim_pow2(x, exp_min: int, exp_max: int, rounding: Rounding, rng):
    """Power of two on a float32 CuPy array."""
    scalars = (np.float32(exp_min), np.float32(exp_max), np.int32(int(rounding)))
    return _launch("rt_trim_pow2_f32", x, None, scalars, rounding, rng)


def uniform(seed: int, call: int, n: int, xp):
    """The kernel's own draws ``rt_uniform(seed, call, 0 .. n-1)`` as a float64 CuPy array
    (for tests against :func:`.counter_rng.uniform`)."""
    y = xp.empty(int(n), dtype=xp.float64)
    if n:
        grid = min((int(n) + BLOCK - 1) // BLOCK, MAX_GRID)
        module().get_function("rt_uniform_f64")((grid,), (BLOCK,), (y, np.uint64(n), np.uint64(seed), np.uint64(call)))
    return y
