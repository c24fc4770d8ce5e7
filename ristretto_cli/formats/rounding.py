"""Rounding schemes R(v) -> integer-valued array, written once against the array module.

The numeric values of :class:`Rounding` are those of the proto enum
``caffe.QuantizationParameter.Rounding`` (field ``rounding_scheme``), so a value
read from a prototxt can be passed straight in.
"""
from __future__ import annotations

from enum import IntEnum

from ..errors import RistrettoError


class FormatError(RistrettoError, ValueError):
    """An impossible number format or rounding request (bit width, exponent range...)."""


class Rounding(IntEnum):
    """How R(v) rounds to an integer; the values are those of the proto's ``rounding_scheme``."""

    #: round half to even (C ``rint``, CUDA ``rint``): the original's GPU path
    NEAREST = 0
    #: floor(v + u), u ~ U[0, 1): unbiased, E[R(v)] = v
    STOCHASTIC = 1
    #: round half away from zero (C ``round``): the original's CPU path
    NEAREST_TIES_AWAY = 2
    #: round half up, floor(v + 0.5) without its float pitfalls
    NEAREST_TIES_UP = 3
    #: floor(v), toward minus infinity
    TRUNCATE = 4
    #: trunc(v), toward zero
    TOWARD_ZERO = 5


def as_rounding(value) -> Rounding:
    """``Rounding`` from an int, a proto enum value, a name, or a ``Rounding``."""
    if isinstance(value, Rounding):
        return value
    if isinstance(value, str):
        try:
            return Rounding[value.upper()]
        except KeyError:
            raise FormatError(f"unknown rounding scheme '{value}'; known: "
                              f"{', '.join(r.name for r in Rounding)}") from None
    try:
        return Rounding(int(value))
    except (ValueError, TypeError):
        raise FormatError(f"unknown rounding scheme {value!r}; known: "
                          f"{', '.join(f'{r.name}={int(r)}' for r in Rounding)}") from None


def round_to_integer(v, rounding, xp, rng=None):
    """R(v): every element of the float array ``v`` rounded to an integer value.

    The result has the dtype of ``v``. Ties are detected exactly (the fractional
    part of a float is representable), never through ``v + 0.5``, which can round
    0.49999997 up to 1 in float32. STOCHASTIC draws ``u`` from ``rng`` (a NumPy
    or CuPy ``Generator``) and adds in float64, as the original's CUDA kernel
    adds a double, so that E[R(v)] = v also for large ``v``.
    """
    rounding = as_rounding(rounding)
    if rounding == Rounding.NEAREST:
        return xp.rint(v)
    if rounding == Rounding.TRUNCATE:
        return xp.floor(v)
    if rounding == Rounding.TOWARD_ZERO:
        return xp.trunc(v)
    if rounding == Rounding.NEAREST_TIES_UP:
        f = xp.floor(v)
        return f + (v - f >= 0.5).astype(v.dtype)
    if rounding == Rounding.NEAREST_TIES_AWAY:
        a = xp.abs(v)
        f = xp.floor(a)
        f = f + (a - f >= 0.5).astype(v.dtype)
        return xp.copysign(f, v)
    if rounding == Rounding.STOCHASTIC:
        if rng is None:
            raise FormatError("STOCHASTIC rounding needs a random generator (rng)")
        u = rng.random(size=v.shape, dtype=xp.float64)
        return xp.floor(v.astype(xp.float64) + u).astype(v.dtype)
    raise FormatError(f"unknown rounding scheme {rounding!r}")  # pragma: no cover
