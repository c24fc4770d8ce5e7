"""Number formats against DESIGN.md section 3, with independent slow references.

The references work on one Python float at a time with exact rationals
(fractions.Fraction) and math.frexp, never with the array code under test.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ristretto_cli.backend import is_numpy
from ristretto_cli.errors import RistrettoError
from ristretto_cli.formats import (FormatError, Rounding, fixed_point_grid, minifloat_max, minifloat_min,
                                 trim_fixed_point, trim_minifloat, trim_pow2)
from ristretto_cli.formats.trim import minifloat_bias

DETERMINISTIC = [r for r in Rounding if r != Rounding.STOCHASTIC]
f32 = np.float32
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- the format functions on each backend (host arrays in, host arrays out) -----

class _OnBackend:
    """``trim_*`` of ristretto_cli.formats run on ``backend``: array arguments move there
    with ``backend.asarray``, results come back with ``backend.to_numpy``, and a NumPy
    generator is replaced by one of the backend's seeded from it. On NumPy these are the
    functions themselves."""

    def __init__(self, backend):
        self.backend = backend
        numpy = is_numpy(backend.xp)
        for fn in (trim_fixed_point, trim_minifloat, trim_pow2):
            setattr(self, fn.__name__, fn if numpy else self._typed(fn))

    def _typed(self, fn):
        be = self.backend

        def call(x, *args, **kwargs):
            args = list(args)
            for i, a in enumerate(args):
                if isinstance(a, np.random.Generator):
                    args[i] = be.xp.random.default_rng(int(a.integers(2 ** 63)))
            if isinstance(kwargs.get("rng"), np.random.Generator):
                kwargs["rng"] = be.xp.random.default_rng(int(kwargs["rng"].integers(2 ** 63)))
            if isinstance(kwargs.get("out"), np.ndarray):
                kwargs["out"] = be.asarray(kwargs["out"])
            return be.to_numpy(fn(be.asarray(np.asarray(x)), *args, **kwargs))

        return call


@pytest.fixture
def fmt(backend):
    return _OnBackend(backend)


# -- independent references ----------------------------------------------------

def ref_round(t: Fraction, rounding: Rounding) -> int:
    """R(t) on an exact rational."""
    if rounding == Rounding.NEAREST:
        return round(t)  # Python rounds half to even
    if rounding == Rounding.NEAREST_TIES_AWAY:
        return int(math.copysign(math.floor(abs(t) + Fraction(1, 2)), t))
    if rounding == Rounding.NEAREST_TIES_UP:
        return math.floor(t + Fraction(1, 2))
    if rounding == Rounding.TRUNCATE:
        return math.floor(t)
    if rounding == Rounding.TOWARD_ZERO:
        return math.trunc(t)
    raise AssertionError(rounding)


def ref_fixed(x: float, bw: int, fl: int, rounding: Rounding) -> float:
    step = Fraction(2) ** -fl
    lo = -(2 ** (bw - 1)) * step
    hi = Fraction(float(f32(float((2 ** (bw - 1) - 1) * step))))  # the bound as float32 holds it
    v = min(max(Fraction(x), lo), hi)
    return float(ref_round(v / step, rounding) * step)


def ref_minifloat(x: float, m: int, e: int, rounding: Rounding, saturate_after_rounding=False) -> float:
    """DESIGN.md 3, minifloat, on one float32 value given as a Python float."""
    if x == 0 or abs(x) < 2.0 ** -126:  # zero or float32 denormal
        return 0.0
    bias = 2 ** (e - 1) - 1
    frac, ex = math.frexp(abs(x))  # |x| = frac * 2^ex, frac in [0.5, 1)
    unbiased = ex - 1
    exp = unbiased + bias
    if exp < 0:
        return 0.0
    sign = -1 if x < 0 else 1
    if exp > 2 ** e - 1:
        mag = (2 - Fraction(1, 2 ** m)) * Fraction(2) ** (2 ** e - 1 - bias)
    else:
        mant_exact = (Fraction(abs(x)) / Fraction(2) ** unbiased - 1) * 2 ** m  # in [0, 2^m)
        mant = abs(ref_round(sign * mant_exact, rounding))
        mag = (1 + Fraction(mant, 2 ** m)) * Fraction(2) ** unbiased
        if saturate_after_rounding:
            mag = min(mag, Fraction(minifloat_max(m, e)))
    return float(sign * mag)


def ref_pow2(x: float, exp_min: int, exp_max: int, rounding: Rounding) -> float:
    sign = 1.0 if x >= 0 else -1.0  # -0.0 >= 0 holds: sign(0) = +1
    if x == 0:
        j = exp_min
    else:
        lg = Fraction(float(f32(math.log2(abs(x)))))  # log2 in float32 (correctly rounded)
        j = min(max(ref_round(lg, rounding), exp_min), exp_max)
    return sign * 2.0 ** j


def same(a, b) -> bool:
    """Bitwise-equal values, except that +0 == -0 (golden README: compare with ==)."""
    return a == b or (math.isnan(a) and math.isnan(b))


floats32 = st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=True)
deterministic = st.sampled_from(DETERMINISTIC)


# -- dynamic fixed point -----------------------------------------------------

@SETTINGS
@given(xs=st.lists(st.floats(-300, 300, width=32), min_size=1, max_size=30),
       bw=st.integers(1, 32), fl=st.integers(-6, 30), rounding=deterministic)
def test_fixed_point_matches_reference(xs, bw, fl, rounding):
    x = np.array(xs, dtype=f32)
    got = trim_fixed_point(x, bw, fl, rounding)
    assert got.dtype == f32 and got.shape == x.shape
    for xi, gi in zip(x.tolist(), got.tolist()):
        assert same(gi, ref_fixed(xi, bw, fl, rounding)), (xi, gi)


@SETTINGS
@given(xs=st.lists(floats32, min_size=1, max_size=30), bw=st.integers(1, 24), fl=st.integers(-8, 40),
       rounding=st.sampled_from(list(Rounding)))
def test_fixed_point_on_grid_and_in_range(xs, bw, fl, rounding):
    x = np.array(xs, dtype=f32)
    got = trim_fixed_point(x, bw, fl, rounding, rng=np.random.default_rng(0))
    lo, hi, step = fixed_point_grid(bw, fl)
    for gi in got.tolist():
        assert lo <= gi <= hi
        k = Fraction(gi) / Fraction(step)
        assert k.denominator == 1, f"{gi} is not a multiple of 2^{-fl}"


@SETTINGS
@given(xs=st.lists(st.floats(-100, 100, width=32), min_size=1, max_size=30), bw=st.integers(8, 16),
       fl=st.integers(0, 6))
def test_fixed_point_nearest_error_and_ties(xs, bw, fl):
    x = np.array(xs, dtype=f32)
    lo, hi, step = fixed_point_grid(bw, fl)
    got = trim_fixed_point(x, bw, fl, Rounding.NEAREST)
    for xi, gi in zip(x.tolist(), got.tolist()):
        if lo <= xi <= hi:
            assert abs(gi - xi) <= step / 2
            if abs(gi - xi) == step / 2:  # a tie goes to the even multiple
                assert (Fraction(gi) / Fraction(step)).numerator % 2 == 0


def test_fixed_point_rounding_semantics(fmt):
    x = np.array([-2.5, -1.5, -1.25, -0.5, 0.5, 1.25, 1.5, 2.5, 0.49999997], dtype=f32)
    want = {
        Rounding.NEAREST: [-2, -2, -1, 0, 0, 1, 2, 2, 0],
        Rounding.NEAREST_TIES_AWAY: [-3, -2, -1, -1, 1, 1, 2, 3, 0],
        Rounding.NEAREST_TIES_UP: [-2, -1, -1, 0, 1, 1, 2, 3, 0],
        Rounding.TRUNCATE: [-3, -2, -2, -1, 0, 1, 1, 2, 0],
        Rounding.TOWARD_ZERO: [-2, -1, -1, 0, 0, 1, 1, 2, 0],
    }
    for rounding, w in want.items():
        np.testing.assert_array_equal(fmt.trim_fixed_point(x, 8, 0, rounding), np.array(w, dtype=f32),
                                      err_msg=rounding.name)


def test_fixed_point_saturates_then_rounds(fmt):
    # bw 4, fl 1: grid 0.5, range [-4, 3.5]
    x = np.array([3.5, 3.74, 3.76, 100.0, -4.0, -4.2, -1e30, 1e30], dtype=f32)
    np.testing.assert_array_equal(fmt.trim_fixed_point(x, 4, 1), [3.5, 3.5, 3.5, 3.5, -4, -4, -4, 3.5])
    # negative fl: grid coarser than 1; fl > bw: range smaller than 1
    np.testing.assert_array_equal(fmt.trim_fixed_point(np.array([5.0, 6.0, 7.0, 1000.0], f32), 4, -2),
                                  [4, 8, 8, 28])
    np.testing.assert_array_equal(fmt.trim_fixed_point(np.array([0.1, 0.3, -0.3], f32), 2, 3),
                                  [0.125, 0.125, -0.25])
    # defaults (bw 32, fl 16) still round to 2^-16 and saturate at +-32768
    np.testing.assert_array_equal(fmt.trim_fixed_point(np.array([1e-6, 3e-5, 1e6, -1e6], f32), 32, 16),
                                  [0.0, 2.0 ** -15, 32768.0, -32768.0])


def test_fixed_point_grid_helper():
    assert fixed_point_grid(8, 2) == (-32.0, 31.75, 0.25)
    assert fixed_point_grid(4, -1) == (-16.0, 14.0, 2.0)
    assert fixed_point_grid(1, 0) == (-1.0, 0.0, 1.0)


# -- stochastic rounding -------------------------------------------------------

@pytest.mark.parametrize("value,bw,fl", [(0.3, 8, 0), (-2.7, 8, 0), (0.1, 16, 3), (-0.01, 8, 4), (5.0, 8, 0)])
def test_stochastic_fixed_point_unbiased(fmt, value, bw, fl):
    n = 20000
    x = np.full(n, value, dtype=f32)
    got = fmt.trim_fixed_point(x, bw, fl, Rounding.STOCHASTIC, rng=np.random.default_rng(1)).astype(np.float64)
    step = 2.0 ** -fl
    lo = math.floor(float(f32(value)) / step) * step
    assert set(np.unique(got)).issubset({lo, lo + step})
    p = (float(f32(value)) - lo) / step
    sigma = step * math.sqrt(max(p * (1 - p), 1e-12) / n)
    assert abs(got.mean() - float(f32(value))) <= 5 * sigma + 1e-12


def test_stochastic_minifloat_and_pow2_unbiased(fmt):
    n = 20000
    rng = np.random.default_rng(2)
    # minifloat (m3, e4): 0.3 lies between 0.28125 and 0.3125
    x = np.full(n, 0.3, dtype=f32)
    got = fmt.trim_minifloat(x, 3, 4, Rounding.STOCHASTIC, rng).astype(np.float64)
    assert set(np.unique(got)) == {0.28125, 0.3125}
    p = (float(f32(0.3)) - 0.28125) / 0.03125
    assert abs(got.mean() - float(f32(0.3))) <= 5 * 0.03125 * math.sqrt(p * (1 - p) / n)
    # negative values too
    got = fmt.trim_minifloat(-x, 3, 4, Rounding.STOCHASTIC, rng).astype(np.float64)
    assert abs(got.mean() + float(f32(0.3))) <= 5 * 0.03125 * math.sqrt(p * (1 - p) / n)
    # pow2 rounds the exponent: E[R(log2|x|)] = log2|x|
    x = np.full(n, -0.3, dtype=f32)
    got = fmt.trim_pow2(x, -8, -1, Rounding.STOCHASTIC, rng)
    e = np.log2(-got.astype(np.float64))
    lg = math.log2(float(f32(0.3)))
    q = lg - math.floor(lg)
    assert set(np.unique(e)) == {math.floor(lg), math.floor(lg) + 1}
    assert abs(e.mean() - lg) <= 5 * math.sqrt(q * (1 - q) / n)


def test_stochastic_needs_rng_and_is_reproducible(fmt):
    x = np.linspace(-3, 3, 101, dtype=f32)
    with pytest.raises(FormatError):
        fmt.trim_fixed_point(x, 8, 2, Rounding.STOCHASTIC)
    a = fmt.trim_fixed_point(x, 8, 2, Rounding.STOCHASTIC, rng=np.random.default_rng(5))
    b = fmt.trim_fixed_point(x, 8, 2, Rounding.STOCHASTIC, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)


# -- minifloat -----------------------------------------------------------------

@SETTINGS
@given(xs=st.lists(floats32, min_size=1, max_size=30),
       me=st.sampled_from([(3, 4), (7, 4), (10, 5), (2, 3), (0, 2), (5, 1), (23, 8), (1, 6), (12, 7)]),
       rounding=deterministic, sat=st.booleans())
def test_minifloat_matches_reference(xs, me, rounding, sat):
    m, e = me
    x = np.array(xs, dtype=f32)
    with np.errstate(over="ignore"):
        got = trim_minifloat(x, m, e, rounding, saturate_after_rounding=sat)
    assert got.dtype == f32
    for xi, gi in zip(x.tolist(), got.tolist()):
        with np.errstate(over="ignore"):
            want = float(f32(ref_minifloat(xi, m, e, rounding, sat)))
        assert same(gi, want), (xi, gi, want)
        if gi == 0:
            assert math.copysign(1, gi) == 1, "zeros come out as +0"


def test_minifloat_4_3_examples(fmt):
    """(exp_bits 4, mant_bits 3): bias 7, range 2^-7 .. 480, no denormals."""
    x = np.array([496, 500, 511, 512, 480, 464, 470, 479, -600, 1e5, 3e38, 2.0 ** -7, 2.0 ** -8,
                  -(2.0 ** -8), -1e-20, 0.0, -0.0, 1e-40, -1e-45, 0.3], dtype=f32)
    want = [512, 512, 512, 480, 480, 448, 480, 480, -480, 480, 480, 2.0 ** -7, 0, 0, 0, 0, 0, 0, 0, 0.3125]
    got = fmt.trim_minifloat(x, 3, 4)
    np.testing.assert_array_equal(got, np.array(want, dtype=f32))
    assert not np.signbit(got[got == 0]).any(), "underflow and zeros become +0"
    # 464 is a tie between 448 and 480: ties to even (448); C round() would give 480
    assert fmt.trim_minifloat(np.float32([464]), 3, 4, Rounding.NEAREST_TIES_AWAY)[0] == 480
    assert minifloat_max(3, 4) == 480 and minifloat_min(3, 4) == 2.0 ** -7 and minifloat_bias(4) == 7
    assert minifloat_max(10, 5) == 131008 and minifloat_max(7, 4) == 2.0 ** 8 * (2 - 2.0 ** -7)


def test_minifloat_5_10_examples(fmt):
    got = fmt.trim_minifloat(np.array([2e5, 1e-6, 65504, 1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11], f32), 10, 5)
    np.testing.assert_array_equal(got, [131008, 0, 65504, 1.0, 1.0 + 2 * 2.0 ** -10])


def test_minifloat_saturate_after_rounding_is_monotone(fmt):
    x = np.sort(np.concatenate([np.linspace(-600, 600, 4801, dtype=f32),
                                np.random.default_rng(0).standard_normal(2000).astype(f32) * 100]))
    plain = fmt.trim_minifloat(x, 3, 4)
    assert (np.diff(plain) < 0).any(), "the original's carry is not monotone"
    for rounding in DETERMINISTIC:
        sat = fmt.trim_minifloat(x, 3, 4, rounding, saturate_after_rounding=True)
        assert (np.diff(sat) >= 0).all(), rounding.name
        assert np.abs(sat).max() == 480
    np.testing.assert_array_equal(fmt.trim_minifloat(np.float32([496, 512, -511]), 3, 4,
                                                 saturate_after_rounding=True), [480, 480, -480])


def test_minifloat_specials(fmt):
    x = np.array([np.inf, -np.inf, np.nan], dtype=f32)
    np.testing.assert_array_equal(fmt.trim_minifloat(x, 3, 4), [480, -480, 480])
    with np.errstate(over="ignore"):
        # exp_bits 8 keeps float32's range; its "saturation" exponent 2^128 is inf, as powf gives
        np.testing.assert_array_equal(fmt.trim_minifloat(np.float32([np.inf, 1.0, -3.0]), 23, 8),
                                      [np.inf, 1.0, -3.0])


def test_minifloat_truncate_rounds_down_signed(fmt):
    x = np.array([0.3, -0.3, 1.9, -1.9], dtype=f32)
    np.testing.assert_array_equal(fmt.trim_minifloat(x, 2, 4, Rounding.TRUNCATE), [0.25, -0.3125, 1.75, -2.0])
    np.testing.assert_array_equal(fmt.trim_minifloat(x, 2, 4, Rounding.TOWARD_ZERO), [0.25, -0.25, 1.75, -1.75])


# -- power of two ------------------------------------------------------------

@SETTINGS
@given(xs=st.lists(floats32, min_size=1, max_size=30), lo=st.integers(-20, 5), span=st.integers(0, 10),
       rounding=deterministic)
def test_pow2_matches_reference(xs, lo, span, rounding):
    x = np.array(xs, dtype=f32)
    got = trim_pow2(x, lo, lo + span, rounding)
    assert got.dtype == f32
    for xi, gi in zip(x.tolist(), got.tolist()):
        assert gi == ref_pow2(xi, lo, lo + span, rounding), (xi, gi)
        assert math.copysign(1, gi) == (1 if xi >= 0 else -1)
        j = math.log2(abs(gi))
        assert j == int(j) and lo <= j <= lo + span


def test_pow2_zero_sign_and_clamp(fmt):
    x = np.array([0.0, -0.0, 1e-6, -1e-6, 1e-45, 100.0, -100.0, 0.5, -0.25, 0.3], dtype=f32)
    want = [2.0 ** -8, 2.0 ** -8, 2.0 ** -8, -(2.0 ** -8), 2.0 ** -8, 0.5, -0.5, 0.5, -0.25, 0.25]
    np.testing.assert_array_equal(fmt.trim_pow2(x, -8, -1), np.array(want, dtype=f32))


def test_pow2_float32_log2_ties(fmt):
    ks = np.arange(-8, -1)
    x = np.array([float(f32(2.0 ** (k + 0.5))) for k in ks], dtype=f32)
    assert (np.log2(x) == (ks + 0.5).astype(f32)).all(), "float32 log2 gives exact ties here"
    even = np.where(ks % 2 == 0, ks, ks + 1)  # rint: k + 0.5 -> the even neighbour
    np.testing.assert_array_equal(fmt.trim_pow2(x, -8, -1), 2.0 ** even)
    np.testing.assert_array_equal(fmt.trim_pow2(-x, -8, -1), -(2.0 ** even))
    # ties away from zero: k + 0.5 -> k + 1 for negative k + 0.5 ... -> away from zero
    away = np.where(ks + 0.5 > 0, ks + 1, ks)
    np.testing.assert_array_equal(fmt.trim_pow2(x, -8, -1, Rounding.NEAREST_TIES_AWAY), 2.0 ** away)


# -- the fast path (scale by exact powers of two, in place, in blocks) --------

def _ldexp_fixed_point(x, bw, fl, rounding):
    """The formula with ldexp and fresh arrays, element by element as NumPy computes it."""
    with np.errstate(all="ignore"):
        hi = x.dtype.type((2.0 ** (bw - 1) - 1) * 2.0 ** -fl)
        lo = x.dtype.type(-(2.0 ** (bw - 1)) * 2.0 ** -fl)
        v = np.ldexp(np.fmax(np.fmin(x, hi), lo), fl)
        k = {Rounding.NEAREST: np.rint, Rounding.TRUNCATE: np.floor, Rounding.TOWARD_ZERO: np.trunc,
             Rounding.NEAREST_TIES_UP: lambda a: np.floor(a) + (a - np.floor(a) >= 0.5),
             Rounding.NEAREST_TIES_AWAY: lambda a: np.copysign(np.floor(np.abs(a)) + (np.abs(a) - np.floor(np.abs(a))
                                                                                     >= 0.5), a)}[rounding](v)
        return np.ldexp(k.astype(x.dtype), -fl).astype(x.dtype)


def _awkward(n, dtype):
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.standard_normal(n) * 40, rng.standard_normal(n) * 1e-38,
                        (rng.integers(-4000, 4000, n) / 16), [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -3e38]])
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bw,fl", [(8, 3), (32, 16), (2, 1), (1, 0), (1, 5), (25, 0), (16, 140), (30, -130), (4, 126), (4, 127),
                                   (4, 128), (8, -127), (32, 200), (16, -200)])
def test_fixed_point_blocks_in_place_equal_the_ldexp_formula(dtype, bw, fl):
    """Large arrays go through cache-sized blocks, multiplying by 2^fl instead of ldexp;
    same values as the plain formula, also written in place and into a strided view."""
    from ristretto_cli.formats import trim as formats

    x = _awkward(formats.CPU_BLOCK + 1000, dtype)
    for rounding in DETERMINISTIC:
        want = _ldexp_fixed_point(x, bw, fl, rounding)
        got = trim_fixed_point(x, bw, fl, rounding)
        np.testing.assert_array_equal(got, want)
        inplace = x.copy()
        assert trim_fixed_point(inplace, bw, fl, rounding, out=inplace) is inplace
        np.testing.assert_array_equal(inplace, want)
        strided = np.repeat(x, 2)[::2]
        np.testing.assert_array_equal(trim_fixed_point(strided, bw, fl, rounding), want)
    np.testing.assert_array_equal(trim_fixed_point(x, 8, 3, Rounding.STOCHASTIC, np.random.default_rng(3)),
                                  trim_fixed_point(x.copy(), 8, 3, Rounding.STOCHASTIC, np.random.default_rng(3),
                                                   out=np.empty_like(x)))
    with pytest.raises(FormatError):
        trim_fixed_point(x, 8, 3, out=np.empty(3, dtype))


@pytest.mark.parametrize("m,e", [(3, 4), (4, 3), (10, 5), (0, 1), (0, 4), (23, 8), (7, 8), (2, 2), (23, 1), (1, 8)])
@pytest.mark.parametrize("sat", [False, True])
def test_minifloat_bit_path_equals_the_formula(m, e, sat):
    """float32 NEAREST goes through the rounding on the bits, in blocks, with the rare
    saturating / NaN / inf elements sent through the element-wise formula: the same bits
    as the formula everywhere, in place and into a strided view too."""
    from ristretto_cli.formats import trim as formats

    rng = np.random.default_rng(11)
    n = formats.CPU_BLOCK + 777
    x = np.concatenate([rng.standard_normal(n) * 3, rng.standard_normal(n) * 1e4, np.exp(rng.uniform(-100, 100, n)),
                        (rng.integers(-2 ** 12, 2 ** 12, n) / 2 ** 6), [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45,
                                                                         -3e38, 3.4028235e38, 496.0, 512.0, 464.0]])
    with np.errstate(over="ignore"):
        x = x.astype(f32)
    want = formats._minifloat_formula(x, m, e, Rounding.NEAREST, None, sat, np)
    got = trim_minifloat(x, m, e, Rounding.NEAREST, None, sat)
    assert got.tobytes() == want.tobytes()
    inplace = x.copy()
    assert trim_minifloat(inplace, m, e, saturate_after_rounding=sat, out=inplace) is inplace
    assert inplace.tobytes() == want.tobytes()
    strided = np.repeat(x, 2)[::2]
    assert trim_minifloat(strided, m, e, saturate_after_rounding=sat).tobytes() == want.tobytes()
    k = x.size // 4 * 4
    np.testing.assert_array_equal(trim_minifloat(x[:k].reshape(4, -1)[:, ::3], m, e, saturate_after_rounding=sat),
                                  want[:k].reshape(4, -1)[:, ::3])


# -- dtype, purity, parameters -----------------------------------------------

def test_dtype_kept_and_input_untouched(fmt):
    x = np.array([0.3, -1.7, 400.0], dtype=np.float64)
    keep = x.copy()
    for out in (fmt.trim_fixed_point(x, 8, 4), fmt.trim_minifloat(x, 3, 4), fmt.trim_pow2(x, -8, -1)):
        assert out.dtype == np.float64
    np.testing.assert_array_equal(x, keep)
    np.testing.assert_array_equal(fmt.trim_minifloat(x, 3, 4), fmt.trim_minifloat(x.astype(f32), 3, 4))
    assert fmt.trim_fixed_point(np.zeros((2, 3, 4), f32), 8, 4).shape == (2, 3, 4)


@pytest.mark.parametrize("call", [
    lambda x: trim_fixed_point(x, 0, 0), lambda x: trim_fixed_point(x, 33, 0),
    lambda x: trim_fixed_point(x, 8.5, 0), lambda x: trim_fixed_point(x, 8, 2, rounding=9),
    lambda x: trim_minifloat(x, 24, 4), lambda x: trim_minifloat(x, -1, 4),
    lambda x: trim_minifloat(x, 3, 0), lambda x: trim_minifloat(x, 3, 9),
    lambda x: trim_pow2(x, -1, -8), lambda x: trim_pow2(x, -200, 0),
    lambda x: fixed_point_grid(0, 1), lambda x: minifloat_max(3, 0),
])
def test_invalid_parameters_raise(call):
    with pytest.raises(FormatError) as info:
        call(np.ones(3, f32))
    assert isinstance(info.value, RistrettoError) and isinstance(info.value, ValueError)


def test_same_values_as_numpy_on_every_backend(fmt):
    """The same bits from either array module (was the hand-listed CuPy check)."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(5000).astype(f32) * 50,
                        np.array([0, -0.0, 496, 512, 464, 1e-40, 3e38, 2.0 ** -7], f32),
                        np.array([f32(2.0 ** (k + 0.5)) for k in range(-8, -1)], f32)])
    for rounding in DETERMINISTIC:
        for name, args in (("trim_fixed_point", (8, 3)), ("trim_minifloat", (3, 4)), ("trim_minifloat", (10, 5)),
                           ("trim_pow2", (-8, -1))):
            np.testing.assert_array_equal(getattr(fmt, name)(x, *args, rounding), globals()[name](x, *args, rounding),
                                          err_msg=f"{name}{args} {rounding.name}")


def test_truncate_keeps_the_lsb_of_tiny_negatives_with_negative_fl(fmt):
    # x * 2^fl underflows to -0 in float32; floor of the exact product is still -1.
    x = np.array([-1.401298464324817e-45, -3e-39, 1e-45], np.float32)
    got = fmt.trim_fixed_point(x, 4, -1, Rounding.TRUNCATE)
    assert got.tolist() == [-2.0, -2.0, 0.0]


def test_quant_config_trims_activations_at_either_site_in_place_or_not():
    from ristretto_cli.formats import INPUT, OUTPUT, QuantConfig

    cfg = QuantConfig(bw_layer_in=8, fl_layer_in=4, bw_layer_out=6, fl_layer_out=1)
    x0 = np.random.default_rng(0).uniform(-9, 9, 50).astype(np.float32)
    np.testing.assert_array_equal(cfg.trim_activation(x0, INPUT), trim_fixed_point(x0, 8, 4))
    np.testing.assert_array_equal(cfg.trim_activation(x0, OUTPUT), trim_fixed_point(x0, 6, 1))
    x = x0.copy()
    assert cfg.trim_activation(x, OUTPUT, out=x) is x
    np.testing.assert_array_equal(x, trim_fixed_point(x0, 6, 1))
    mini = QuantConfig(precision=1, mant_bits=3, exp_bits=4)  # minifloat: one format for both sites
    np.testing.assert_array_equal(mini.trim_activation(x0, INPUT), mini.trim_activation(x0, OUTPUT))
    with pytest.raises(ValueError, match="site"):
        cfg.trim_activation(x0, "middle")
