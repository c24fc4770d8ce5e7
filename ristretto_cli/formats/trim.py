"""Ristretto's number formats as pure functions on arrays (DESIGN.md section 3).

Each ``trim_*`` function takes an array (NumPy or CuPy; the module is found from
the array), returns a new array of the same shape and floating dtype, and never
modifies its input. float32 in, float32 out; float64 inputs (gradient checks)
are trimmed to the same values and stay float64. Rounding ``R`` is one of
:class:`~ristretto_cli.formats.rounding.Rounding`; STOCHASTIC needs ``rng``.

These follow the original's CUDA kernels (the path the paper's numbers came
from), which ``../shared/golden`` reproduces bit for bit.

A float32 CuPy array goes to the fused CUDA kernels of ``kernels/trim.cu`` (through
:mod:`.gpu`), which compute exactly what the NumPy code here computes: this module is
their twin. STOCHASTIC rounding takes any generator with ``random(size, dtype)``; a
:class:`~.counter_rng.CounterRNG` makes the draws a function of (seed, call, element),
the same on the CPU and in the kernels.
"""
from __future__ import annotations

import contextlib
import math

from ..backend import array_module, is_numpy
from .rounding import FormatError, Rounding, as_rounding, round_to_integer

__all__ = [
    "FormatError", "Rounding", "check_fixed_point", "check_minifloat", "check_pow2",
    "fixed_point_grid", "minifloat_bias", "minifloat_max", "minifloat_min", "trim_fixed_point",
    "trim_fixed_point_unsigned",
    "trim_minifloat", "trim_pow2",
]

MAX_BITS = 32
#: exponents of 2 that float32 can hold (denormals included)
FLOAT32_EXP_RANGE = (-149, 127)


def _is_int(v) -> bool:
    return isinstance(v, int) or (hasattr(v, "__index__") and not isinstance(v, bool))


def check_fixed_point(bw, fl) -> None:
    """Raise FormatError unless ``bw`` in 1..32 and ``fl`` an integer."""
    if not _is_int(bw) or not 1 <= int(bw) <= MAX_BITS:
        raise FormatError(f"dynamic fixed point bit width must be an integer in 1..{MAX_BITS}, got {bw!r}")
    if not _is_int(fl) or not -256 <= int(fl) <= 256:
        raise FormatError(f"dynamic fixed point fractional length must be an integer in -256..256, got {fl!r}")


def check_minifloat(mant_bits, exp_bits) -> None:
    """Raise FormatError unless 0 <= mant_bits <= 23, 1 <= exp_bits <= 8 (at most float32)."""
    if not _is_int(mant_bits) or not 0 <= int(mant_bits) <= 23:
        raise FormatError(f"minifloat mant_bits must be an integer in 0..23, got {mant_bits!r}")
    if not _is_int(exp_bits) or not 1 <= int(exp_bits) <= 8:
        raise FormatError(f"minifloat exp_bits must be an integer in 1..8, got {exp_bits!r}")


def check_pow2(exp_min, exp_max) -> None:
    """Raise FormatError unless exp_min <= exp_max, both powers float32 can hold."""
    lo, hi = FLOAT32_EXP_RANGE
    for name, v in (("exp_min", exp_min), ("exp_max", exp_max)):
        if not _is_int(v) or not lo <= int(v) <= hi:
            raise FormatError(f"power-of-two {name} must be an integer in {lo}..{hi}, got {v!r}")
    if int(exp_min) > int(exp_max):
        raise FormatError(f"power-of-two exp_min ({exp_min}) must not exceed exp_max ({exp_max})")


# -- NumPy-free helpers for people who design the hardware --------------------

def fixed_point_grid(bw: int, fl: int) -> tuple[float, float, float]:
    """(min, max, step) of dynamic fixed point (bw, fl), exact Python floats.

    min = -2^(bw-1) * 2^-fl, max = (2^(bw-1) - 1) * 2^-fl, step = 2^-fl. (In
    float32 arithmetic a max with bw > 24 is not representable and rounds up to
    2^(bw-1) * 2^-fl, which is what :func:`trim_fixed_point` then saturates to.)
    """
    check_fixed_point(bw, fl)
    step = math.ldexp(1.0, -int(fl))
    return -math.ldexp(1.0, int(bw) - 1) * step, (math.ldexp(1.0, int(bw) - 1) - 1) * step, step


def minifloat_bias(exp_bits: int) -> int:
    """Exponent bias 2^(e-1) - 1."""
    return (1 << (int(exp_bits) - 1)) - 1


def minifloat_max(mant_bits: int, exp_bits: int) -> float:
    """Saturation value (2 - 2^-m) * 2^(2^(e-1)): largest code, all exponent and mantissa bits set.

    (4, 3) -> 480, (10, 5) -> 131008. A mantissa that rounds up at the top exponent
    carries past it (to 2^(2^(e-1)+1), 512 in (4, 3)) unless
    ``saturate_after_rounding`` is asked for; see :func:`trim_minifloat`.
    """
    check_minifloat(mant_bits, exp_bits)
    return (2.0 - math.ldexp(1.0, -int(mant_bits))) * math.ldexp(1.0, 1 << (int(exp_bits) - 1))


def minifloat_min(mant_bits: int, exp_bits: int) -> float:
    """Smallest nonzero magnitude 2^-bias (biased exponent 0 is normal; no denormals)."""
    check_minifloat(mant_bits, exp_bits)
    return math.ldexp(1.0, -minifloat_bias(exp_bits))


# -- the formats -------------------------------------------------------------

def _gpu():
    """The CUDA kernels' module (:mod:`.gpu`), imported on first use by a CuPy array."""
    from . import gpu

    return gpu


def _float_input(x):
    xp = array_module(x)
    x = xp.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(xp.float32)
    return xp, x


@contextlib.contextmanager
def _quiet(xp):
    """Silence NumPy's overflow/invalid warnings where inf/NaN are the intended result."""
    if hasattr(xp, "errstate"):
        with xp.errstate(all="ignore"):
            yield
    else:  # pragma: no cover
        yield


#: elements per block of the in-place elementwise passes on the CPU: each block stays in
#: cache while all of its passes run over it (the result does not depend on the blocking)
CPU_BLOCK = 1 << 16


def _pow2_scalar(xp, dtype, e: int):
    """2^e as a scalar of ``dtype`` when it is a normal number there, else None.

    Multiplying by a normal power of two gives the correctly rounded x * 2^e, which is
    exactly what ``ldexp(x, e)`` returns (both exact unless the product under- or
    overflows, and then rounded the same way), at a fraction of ldexp's cost.
    """
    info = xp.finfo(dtype)
    if int(info.minexp) <= e < int(info.maxexp):
        return dtype.type(2.0 ** e)
    return None


def _scale(xp, v, e: int, out=None):
    """v * 2^e, rounded like ldexp (a multiplication when 2^e is a normal number of v's dtype)."""
    f = _pow2_scalar(xp, v.dtype, e)
    if f is None:
        r = xp.ldexp(v, e).astype(v.dtype, copy=False)
        if out is None:
            return r
        out[...] = r
        return out
    return xp.multiply(v, f, out=out)


def _block_pairs(xp, x, out):
    """(input, output) pairs of flat blocks of ``CPU_BLOCK`` elements (NumPy, contiguous
    arrays), else the whole arrays as one pair."""
    if not is_numpy(xp) or x.size <= CPU_BLOCK or not (x.flags.c_contiguous and out.flags.c_contiguous):
        return [(x, out)]
    xf, of = x.reshape(-1), out.reshape(-1)
    return [(xf[i:i + CPU_BLOCK], of[i:i + CPU_BLOCK]) for i in range(0, xf.size, CPU_BLOCK)]


def _round_in_place(v, rounding, xp):
    if rounding == Rounding.NEAREST:
        xp.rint(v, out=v)
    elif rounding == Rounding.TRUNCATE:
        xp.floor(v, out=v)
    elif rounding == Rounding.TOWARD_ZERO:
        xp.trunc(v, out=v)
    else:
        v[...] = round_to_integer(v, rounding, xp)


def _check_out(x, out, xp):
    if out is None:
        return xp.empty_like(x)
    if tuple(out.shape) != tuple(x.shape) or out.dtype != x.dtype:
        raise FormatError(f"out has shape {tuple(out.shape)} {out.dtype}, the input {tuple(x.shape)} {x.dtype}")
    return out


def trim_fixed_point(x, bw: int, fl: int, rounding=Rounding.NEAREST, rng=None, out=None):
    """Dynamic fixed point: clamp to [-2^(bw-1), 2^(bw-1)-1] * 2^-fl, then R(x * 2^fl) * 2^-fl.

    Saturation happens before rounding, as in the original. The bounds are
    rounded to the array's dtype (float32: bw > 24 saturates at 2^(bw-1) * 2^-fl).
    NaN saturates to the upper bound (C ``fmin``/``fmax`` semantics).

    ``out``: an array of the input's shape and dtype to write the result into (it
    may be ``x`` itself: an in-place trim); the result is returned either way.
    The arithmetic is that of ``ldexp`` in the input's dtype; with deterministic
    rounding it runs as five in-place passes over cache-sized blocks.
    """
    check_fixed_point(bw, fl)
    rounding = as_rounding(rounding)
    xp, x = _float_input(x)
    bw, fl = int(bw), int(fl)
    if not is_numpy(xp):
        out = _check_out(x, out, xp) if out is not None else None
        if _gpu().handles(x):
            return _gpu().trim_fixed_point(x, bw, fl, rounding, rng, out)
        rng = _gpu().device_rng(rng, xp)
    hi = x.dtype.type((2.0 ** (bw - 1) - 1) * 2.0 ** -fl)
    lo = x.dtype.type(-(2.0 ** (bw - 1)) * 2.0 ** -fl)
    out = _check_out(x, out, xp)
    up, down = _pow2_scalar(xp, x.dtype, fl), _pow2_scalar(xp, x.dtype, -fl)
    with _quiet(xp):
        if rounding == Rounding.STOCHASTIC or up is None or down is None:
            v = xp.fmax(xp.fmin(x, hi), lo)
            k = round_to_integer(_scale(xp, v, fl), rounding, xp, rng)
            return _scale(xp, k, -fl, out=out)
        # clip is one pass for both bounds and, with no bound at zero (where fmin/fmax
        # may give either zero's sign), the same bits as fmax(fmin(x, hi), lo), except
        # that it keeps NaN, which fmin/fmax send to the upper bound: a NaN left at the
        # end (a max reduction shows it) is set to R(hi) then.
        clip = hi != 0 and lo != 0
        nan_value = None
        # With fl < 0, x * 2^fl underflows to -0 for tiny negative x, whose floor loses
        # the -1 that TRUNCATE owes every negative value (any negative x floors to <= -1).
        truncate_underflow = rounding == Rounding.TRUNCATE and fl < 0
        for xb, ob in _block_pairs(xp, x, out):
            negative = (xb < 0) if truncate_underflow else None
            if clip:
                xp.clip(xb, lo, hi, out=ob)
            else:
                xp.fmin(xb, hi, out=ob)
                xp.fmax(ob, lo, out=ob)
            xp.multiply(ob, up, out=ob)
            _round_in_place(ob, rounding, xp)
            xp.multiply(ob, down, out=ob)
            if negative is not None:
                ob[negative & (ob == 0)] = -down
            if clip and ob.size and bool(xp.isnan(ob.max())):
                if nan_value is None:
                    nan_value = trim_fixed_point(xp.full(1, hi, dtype=x.dtype), bw, fl, rounding)[0]
                ob[xp.isnan(ob)] = nan_value
    return out


def trim_fixed_point_unsigned(x, bw: int, fl: int, rounding=Rounding.NEAREST, rng=None, out=None):
    """Unsigned dynamic fixed point (our addition): clamp to [0, (2^bw - 1) * 2^-fl], then
    R(x * 2^fl) * 2^-fl; all ``bw`` bits hold magnitude (for activations that are never
    negative, e.g. after a ReLU). NaN saturates to the upper bound; ``out`` as
    :func:`trim_fixed_point`."""
    check_fixed_point(bw, fl)
    rounding = as_rounding(rounding)
    xp, x = _float_input(x)
    bw, fl = int(bw), int(fl)
    if not is_numpy(xp):
        out = _check_out(x, out, xp) if out is not None else None
        if _gpu().handles(x):
            return _gpu().trim_fixed_point_unsigned(x, bw, fl, rounding, rng, out)
        rng = _gpu().device_rng(rng, xp)
    hi = x.dtype.type((2.0 ** bw - 1) * 2.0 ** -fl)
    out = _check_out(x, out, xp)
    with _quiet(xp):
        v = xp.fmax(xp.fmin(x, hi), x.dtype.type(0))
        k = round_to_integer(_scale(xp, v, fl), rounding, xp, rng)
        return _scale(xp, k, -fl, out=out)


def trim_minifloat(x, mant_bits: int, exp_bits: int, rounding=Rounding.NEAREST, rng=None,
                   saturate_after_rounding: bool = False, out=None):
    """Minifloat with ``mant_bits`` mantissa and ``exp_bits`` exponent bits, on the float32 bits.

    bias = 2^(e-1) - 1. From float32 sign s, biased exponent E, 23-bit mantissa M:
    E == 0 (zero, denormal) -> +0; exp = E - 127 + bias; exp < 0 -> +0; exp > 2^e - 1
    -> saturate (exp = 2^e - 1, mant = 2^m - 1); else mant = R(M / 2^(23-m)) with a
    carry to 2^m kept. Result (-1)^s (1 + mant/2^m) 2^(exp-bias). Zeros are +0.

    R acts on the signed scaled mantissa, so every scheme means what it means for
    fixed point (TRUNCATE goes toward minus infinity also for negative values);
    for the symmetric schemes this is R applied to the magnitude, as the original.

    ``saturate_after_rounding`` (our option, not the original's) clamps a result
    that rounded past the saturation value back to it, which makes the mapping
    monotone: in (4, 3) 496 then gives 480 instead of 512.

    ``out``: an array of the input's shape and dtype to write the result into (may be
    ``x``). float32 input with NEAREST rounding takes a fast path on the bits (see
    :func:`_minifloat_nearest_bits`); everything else the formula above element-wise.
    """
    check_minifloat(mant_bits, exp_bits)
    rounding = as_rounding(rounding)
    xp, x = _float_input(x)
    m, e = int(mant_bits), int(exp_bits)
    if not is_numpy(xp):
        out = _check_out(x, out, xp) if out is not None else None
        if _gpu().handles(x):
            return _gpu().trim_minifloat(x, m, e, rounding, rng, saturate_after_rounding, out)
        rng = _gpu().device_rng(rng, xp)
    out = _check_out(x, out, xp)
    if rounding != Rounding.NEAREST or x.dtype != xp.float32:
        out[...] = _minifloat_formula(x, m, e, rounding, rng, saturate_after_rounding, xp)
        return out
    bias = minifloat_bias(e)
    lo = xp.float32(max(2.0 ** -126, 2.0 ** -bias))           # smallest magnitude kept
    with _quiet(xp):                                           # e = 8: the maximum is inf
        top = xp.float32(minifloat_max(m, e))

    def formula(v):
        return _minifloat_formula(v, m, e, rounding, rng, saturate_after_rounding, xp)

    in_place = out is x
    for xb, ob in _block_pairs(xp, x, out):
        _minifloat_nearest_bits(xb, ob, m, lo, top, formula, in_place)
    return out


def _minifloat_nearest_bits(xb, ob, m: int, lo, top, formula, in_place: bool) -> None:
    """``ob`` = minifloat NEAREST of the float32 block ``xb``, computed on the bits.

    For |x| in [lo, top] (kept, not saturated) the result is |x| rounded to ``m``
    mantissa bits, half to even, a carry into the exponent kept: on the bits that is
    ``(b + 2^(s-1) - 1 + bit_s(b)) & ~(2^s - 1)`` with s = 23 - m (no carry reaches the
    sign bit, |b| < 0x7F800000), exactly the formula's (1 + R(M/2^s)/2^m) 2^(E-127)
    including the case R(M/2^s) = 2^m. |x| < lo (zeros, denormals, exp < 0) gives +0
    (the bits times 0). The rest, |x| > top or NaN (saturation, the top exponent's
    carry past the maximum, inf), is rare and goes through ``formula``.
    ``in_place``: ``ob`` is ``xb`` (the bits are then built in a scratch array first).
    """
    xp = array_module(xb)
    shift = 23 - m
    mag = xp.abs(xb)
    keep = mag >= lo
    special = ~(mag <= top)
    fix = formula(xb[special]) if bool(special.any()) else None
    b = xb.view(xp.uint32)
    t = xp.empty_like(b) if in_place else ob.view(xp.uint32)
    if shift == 0:
        t[...] = b
    else:
        if shift < 23:
            xp.right_shift(b, shift, out=t)
            xp.bitwise_and(t, xp.uint32(1), out=t)      # the kept mantissa's last bit: ties to even
            xp.add(t, b, out=t)
        else:                                            # m = 0: that bit is the implicit 0
            t[...] = b
        xp.add(t, xp.uint32((1 << (shift - 1)) - 1), out=t)
        xp.bitwise_and(t, xp.uint32(0xFFFFFFFF ^ ((1 << shift) - 1)), out=t)
    xp.multiply(t, keep, out=t)
    if in_place:
        ob.view(xp.uint32)[...] = t
    if fix is not None:
        ob[special] = fix


def _minifloat_formula(x, m, e, rounding, rng, saturate_after_rounding, xp):
    """The formula of :func:`trim_minifloat` element-wise (any rounding, any float dtype)."""
    bias = minifloat_bias(e)
    max_exp = (1 << e) - 1

    bits = x.astype(xp.float32).view(xp.uint32)
    negative = (bits >> 31).astype(xp.bool_)
    big_e = ((bits >> 23) & 0xFF).astype(xp.int32)
    mant_in = (bits & 0x7FFFFF).astype(xp.float64)
    exp = big_e - 127 + bias

    scaled = xp.ldexp(mant_in, m - 23)  # exact in float64
    signed = xp.where(negative, -scaled, scaled)
    mant = xp.abs(round_to_integer(signed, rounding, xp, rng))
    saturate = exp > max_exp
    mant = xp.where(saturate, float((1 << m) - 1), mant)
    exp = xp.where(saturate, max_exp, exp)

    mag = xp.ldexp(1.0 + xp.ldexp(mant, -m), exp - bias)  # float64, exact
    if saturate_after_rounding:
        mag = xp.minimum(mag, minifloat_max(m, e))
    mag = xp.where((big_e == 0) | (exp < 0), 0.0, mag)
    out = xp.where(negative & (mag != 0), -mag, mag)
    with _quiet(xp):  # e = 8 saturates to inf, like the original's powf(2, 128)
        return out.astype(xp.float32).astype(x.dtype, copy=False)


def trim_pow2(x, exp_min: int, exp_max: int, rounding=Rounding.NEAREST, rng=None):
    """Integer power of two: sign(x) * 2^clamp(R(log2|x|), exp_min, exp_max), sign(0) = +1.

    log2 is computed in float32 (as ``log2f``): float32(±2^(k+0.5)) then gives an
    exact tie k + 0.5 that a float64 log2 would miss. Zeros (either sign) have
    log2 = -inf, clamped to exp_min, and so become +2^exp_min, as in the original.
    """
    check_pow2(exp_min, exp_max)
    rounding = as_rounding(rounding)
    xp, x = _float_input(x)
    if not is_numpy(xp):
        if _gpu().handles(x):
            return _gpu().trim_pow2(x, int(exp_min), int(exp_max), rounding, rng)
        rng = _gpu().device_rng(rng, xp)
    with _quiet(xp):
        e = xp.log2(xp.abs(x.astype(xp.float32)))
        e = round_to_integer(e, rounding, xp, rng)
        e = xp.fmax(xp.fmin(e, xp.float32(exp_max)), xp.float32(exp_min))
    sign = xp.where(x >= 0, 1.0, -1.0).astype(x.dtype)
    return (sign * xp.ldexp(xp.ones_like(x), e.astype(xp.int32))).astype(x.dtype, copy=False)
