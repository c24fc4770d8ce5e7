"""A chip's integer accumulator, simulated exactly (our extension, ``accum_bits``).

A Ristretto Convolution / InnerProduct on a chip multiplies integer codes and sums the
products in an accumulator of a fixed width. :func:`accumulate_fixed_point` computes
that sum bit for bit:

* **Units.** Inputs are codes ``x_int = x * 2^fl_in``, weights ``w_int = w * 2^fl_w``
  (dynamic fixed point: ``fl_w = fl_params``; power-of-two weights ``±2^e``,
  ``e >= exp_min``: ``fl_w = -exp_min``, so every weight is an integer code), the bias
  ``b * 2^F``. The accumulator holds integers in units of ``2^-F`` with
  ``F = max(fl_in + fl_w, fl_bias)`` (:func:`accumulator_fl`; ``fl_bias`` is
  ``fl_params`` unless the layer has its own bias format), the convention of
  ``ristretto export integers``: each product is shifted left by
  ``F - fl_in - fl_w >= 0`` and the bias by ``F - fl_bias >= 0``, so nothing is lost.
  In the usual case (``fl_in >= 0``, the bias in the weights' format) ``F = fl_in + fl_w``,
  the unit of a product. A power-of-two layer without a bias format keeps the
  original's float32 bias; a chip cannot add that, so it is rounded to the unit
  (half to even) there.
* **Order** (Caffe's GEMM): output ``y[m, o] = sum_k x[m, k] w[o, k]`` in increasing
  ``k``, then the bias as one last addition. InnerProduct: ``k`` runs over the
  flattened input of one item; Convolution: over the im2col column, ``(c, kh, kw)``
  in C order (within the layer's group).
* **Overflow** at ``bits``: the representable range is ``[-2^(bits-1), 2^(bits-1) - 1]``.
  SATURATE clamps every partial sum (the product additions and the bias addition) into
  it, so later additions start from the clamped value. WRAP keeps the low ``bits``
  bits (two's complement). Wrap-around is the ring homomorphism ``Z -> Z/2^bits``, so
  the wrapped running sum equals the wrap of the exact sum at every step: the result
  is ``wrap(exact)`` whatever the intermediate overflows were (exact whenever the
  complete sum fits), and it is computed that way. Saturation is not a homomorphism:
  an output whose exact partial sums ever leave the range is re-summed step by step.
* **Counts.** ``overflows``: the partial sums that overflowed, i.e. the additions
  whose exact result (from the value the register held) left the range. With WRAP an
  overflow can be undone by a later one, so ``inexact`` (outputs whose accumulated
  value differs from the exact sum) can be smaller.

The exact sums are computed in int64; the operands must keep every exact partial sum
below 2^62 in magnitude (checked: :class:`AccumulatorRangeError`), which any format of
the layers (at most 32-bit codes) meets unless the codes are nearly 32 bits wide.
Everything runs on the array module of the inputs (NumPy or CuPy).
:func:`accumulate_reference` is the same in plain Python, one addition at a time.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from ..backend import array_module
from .rounding import FormatError

#: exact partial sums are held in int64 and must stay below this in magnitude
EXACT_LIMIT = 1 << 62
#: accumulator widths that can be simulated
MIN_BITS, MAX_BITS = 2, 64
#: below this every integer sum of float64 values is exact
FLOAT64_EXACT = 1 << 53
#: elements of the blocked (rows, outputs, k) product tensor (int64: 32 MiB)
BLOCK_ELEMENTS = 1 << 22


class AccumulatorOverflow(IntEnum):
    """Values of the proto enum ``caffe.QuantizationParameter.AccumulatorOverflow``."""

    SATURATE = 0
    WRAP = 1


def as_overflow(value) -> AccumulatorOverflow:
    if isinstance(value, AccumulatorOverflow):
        return value
    if isinstance(value, str):
        try:
            return AccumulatorOverflow[value.upper()]
        except KeyError:
            raise FormatError(f"unknown accumulator overflow '{value}'; known: "
                              f"{', '.join(o.name for o in AccumulatorOverflow)}") from None
    try:
        return AccumulatorOverflow(int(value))
    except (ValueError, TypeError):
        raise FormatError(f"unknown accumulator overflow {value!r}") from None


def check_accumulator_bits(bits) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise FormatError(f"accum_bits must be an integer in {MIN_BITS}..{MAX_BITS}, got {bits!r}")


def accumulator_fl(fl_in: int, fl_w: int, fl_bias: int | None = None) -> int:
    """F: the accumulator's unit is 2^-F, F = max(fl_in + fl_w, fl_bias)."""
    f = int(fl_in) + int(fl_w)
    return f if fl_bias is None else max(f, int(fl_bias))


def bits_needed(lo: int, hi: int) -> int:
    """The smallest two's complement width holding every integer in [lo, hi] (at least 1)."""
    return max(int(hi), -int(lo) - 1, 0).bit_length() + 1


class AccumulatorRangeError(FormatError):
    """The exact partial sums could exceed what int64 simulates exactly."""


@dataclass
class Accumulation:
    """What :func:`accumulate_fixed_point` found.

    ``acc``: the accumulated integers (rows, outputs), int64; ``overflows``: partial
    sums that overflowed; ``inexact``: outputs whose ``acc`` differs from the exact
    sum; ``partial_min`` / ``partial_max``: the extreme exact partial sums (every step,
    the bias addition included), ``sum_min`` / ``sum_max``: the extreme exact sums
    (what WRAP needs to hold); Python ints (0 for an empty input; the partial ones None
    when ``partial_stats=False`` skipped them).
    """

    acc: object
    overflows: int = 0
    inexact: int = 0
    partial_min: int | None = 0
    partial_max: int | None = 0
    sum_min: int = 0
    sum_max: int = 0


def _bounds(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def accumulate_fixed_point(x_int, w_int, bias_int=None, bits: int | None = None,
                           overflow=AccumulatorOverflow.SATURATE, partial_stats: bool = True) -> Accumulation:
    """Sum ``x_int[m, k] * w_int[o, k]`` over k in increasing order, then ``+ bias_int[o]``,
    in a ``bits``-wide accumulator that saturates or wraps at every partial sum
    (``bits`` None: an unbounded accumulator, the exact sums).

    ``x_int`` (M, K), ``w_int`` (O, K) and ``bias_int`` (O,) are integer arrays (any
    integer or integer-valued dtype; used as int64). Returns an :class:`Accumulation`
    whose ``acc`` is (M, O) int64.

    ``partial_stats=False`` allows a shortcut when only ``acc`` and the counts matter
    (``partial_min`` / ``partial_max`` are None then): while every exact partial sum
    stays below 2^53, two float64 products are exact, ``x @ w.T`` (the sums) and
    ``|x| @ |w|.T + |b|`` (a bound on every partial sum of an output); only the rows with
    an output whose bound reaches the range are summed step by step.
    """
    xp = array_module(x_int)
    x = xp.asarray(x_int).astype(xp.int64, copy=False)
    w = xp.asarray(w_int).astype(xp.int64, copy=False)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"need x (M, K) and w (O, K), got {tuple(x.shape)} and {tuple(w.shape)}")
    m, k = x.shape
    o = w.shape[0]
    b = None if bias_int is None else xp.asarray(bias_int).astype(xp.int64, copy=False).reshape(-1)
    if b is not None and b.shape[0] != o:
        raise ValueError(f"bias has {b.shape[0]} values for {o} outputs")
    overflow = as_overflow(overflow)
    if bits is not None:
        check_accumulator_bits(bits)
    if m == 0 or o == 0:
        return Accumulation(xp.zeros((m, o), dtype=xp.int64))
    bound = _check_exact(x, w, b, xp)
    if not partial_stats and bits is not None and bound < FLOAT64_EXACT:
        return _bounded_first(x, w, b, bits, overflow, xp)
    # Bits >= 63 cannot overflow: every exact partial sum is below 2^62.
    track = bits is not None and bits < 63
    lo, hi = _bounds(bits) if track else (0, 0)
    half, shift = (1 << (bits - 1), bits) if track else (0, 0)

    exact = xp.empty((m, o), dtype=xp.int64)
    stats = [None, None]          # partial min / max
    wrap_events = 0
    escaped_rows = []             # (row index array, out index array) of outputs that left the range
    # rows per chunk so that a block of at least min(k, 8) products fits the budget
    rows = max(1, BLOCK_ELEMENTS // (o * min(k, 8)))
    for r0 in range(0, m, rows):
        r1 = min(m, r0 + rows)
        xs = x[r0:r1]
        run = xp.zeros((r1 - r0, o), dtype=xp.int64)
        pmin = xp.zeros_like(run) if track else None
        pmax = xp.zeros_like(run) if track else None
        width = max(1, min(k, BLOCK_ELEMENTS // ((r1 - r0) * o)))
        gmin = gmax = None
        for k0 in range(0, k, width):
            k1 = min(k, k0 + width)
            prods = xs[:, None, k0:k1] * w[None, :, k0:k1]            # (rows, O, block)
            cs = xp.cumsum(prods, axis=2)
            cs += run[:, :, None]
            bmin, bmax = cs.min(axis=2), cs.max(axis=2)
            gmin = bmin.min() if gmin is None else xp.minimum(gmin, bmin.min())
            gmax = bmax.max() if gmax is None else xp.maximum(gmax, bmax.max())
            if track:
                xp.minimum(pmin, bmin, out=pmin)
                xp.maximum(pmax, bmax, out=pmax)
                if overflow == AccumulatorOverflow.WRAP:
                    q = (cs + half) >> shift
                    wrap_events += int(xp.count_nonzero(q[:, :, 0] != ((run + half) >> shift)))
                    wrap_events += int(xp.count_nonzero(q[:, :, 1:] != q[:, :, :-1]))
            run = cs[:, :, -1].copy()
        if b is not None:
            before = run
            run = run + b[None, :]
            gmin, gmax = xp.minimum(gmin, run.min()), xp.maximum(gmax, run.max())
            if track:
                xp.minimum(pmin, run, out=pmin)
                xp.maximum(pmax, run, out=pmax)
                if overflow == AccumulatorOverflow.WRAP:
                    wrap_events += int(xp.count_nonzero(((run + half) >> shift) != ((before + half) >> shift)))
        exact[r0:r1] = run
        stats[0] = int(gmin) if stats[0] is None else min(stats[0], int(gmin))
        stats[1] = int(gmax) if stats[1] is None else max(stats[1], int(gmax))
        if track and overflow == AccumulatorOverflow.SATURATE:
            mi, oi = xp.nonzero((pmin < lo) | (pmax > hi))
            if mi.size:
                escaped_rows.append((mi + r0, oi))
    result = Accumulation(exact, 0, 0, stats[0], stats[1], int(exact.min()), int(exact.max()))
    if not track:
        return result
    if overflow == AccumulatorOverflow.WRAP:
        acc = ((exact + half) & ((1 << bits) - 1)) - half
        result.acc = acc
        result.overflows = wrap_events
        result.inexact = int(xp.count_nonzero(acc != exact))
        return result
    acc = exact.copy()
    clamps = 0
    for mi, oi in escaped_rows:
        got, n = _saturating_sums(x, w, b, mi, oi, lo, hi, xp)
        acc[mi, oi] = got
        clamps += n
    result.acc = acc
    result.overflows = clamps
    result.inexact = int(xp.count_nonzero(acc != exact))
    return result


def _saturating_sums(x, w, b, mi, oi, lo: int, hi: int, xp):
    """The saturating sums of the outputs (mi[j], oi[j]), one addition at a time (in
    chunks of outputs); returns (values, clamps)."""
    k = x.shape[1]
    out = xp.empty(mi.shape[0], dtype=xp.int64)
    clamps = 0
    step = max(1, BLOCK_ELEMENTS // k)
    for s0 in range(0, mi.shape[0], step):
        s1 = min(mi.shape[0], s0 + step)
        prods = x[mi[s0:s1]] * w[oi[s0:s1]]                 # (S, K)
        acc = xp.zeros(s1 - s0, dtype=xp.int64)
        addends = [prods[:, j] for j in range(k)]
        if b is not None:
            addends.append(b[oi[s0:s1]])
        for p in addends:
            acc += p
            clamps += int(xp.count_nonzero((acc < lo) | (acc > hi)))
            xp.clip(acc, lo, hi, out=acc)
        out[s0:s1] = acc
    return out, clamps


def _check_exact(x, w, b, xp) -> int:
    """max|x| * max_o sum_k |w[o, k]| + max|b|, which bounds every exact partial sum;
    AccumulatorRangeError unless it is below 2^62."""
    xmax = int(xp.abs(x).max())
    wsum = int(xp.abs(w).sum(axis=1).max())
    bmax = int(xp.abs(b).max()) if b is not None and b.size else 0
    bound = xmax * wsum + bmax
    if bound >= EXACT_LIMIT:
        raise AccumulatorRangeError("the exact partial sums may reach 2^62 (the formats' codes are too wide for "
                                    "an exact int64 simulation)")
    return bound


def _bounded_first(x, w, b, bits: int, overflow, xp) -> Accumulation:
    """The shortcut of ``partial_stats=False`` (every partial sum below 2^53)."""
    xf, wf = x.astype(xp.float64), w.astype(xp.float64)
    exact = (xf @ wf.T).astype(xp.int64)
    worst = xp.abs(xf) @ xp.abs(wf).T
    if b is not None:
        exact += b[None, :]
        worst += xp.abs(b).astype(xp.float64)[None, :]
    result = Accumulation(exact, 0, 0, None, None, int(exact.min()), int(exact.max()))
    if bits >= 63:
        return result
    rows = xp.nonzero(xp.any(worst > float((1 << (bits - 1)) - 1), axis=1))[0]
    if rows.size:
        sub = accumulate_fixed_point(x[rows], w, b, bits, overflow)
        acc = exact.copy()
        acc[rows] = sub.acc
        result.acc, result.overflows, result.inexact = acc, sub.overflows, sub.inexact
    return result


def accumulate_reference(x_int, w_int, bias_int=None, bits: int | None = None,
                         overflow=AccumulatorOverflow.SATURATE):
    """:func:`accumulate_fixed_point` in plain Python integers, one addition at a time
    (the reference the tests compare with): returns (acc as nested lists, overflows)."""
    overflow = as_overflow(overflow)
    lo, hi = _bounds(bits) if bits is not None else (None, None)
    rows = [[int(v) for v in row] for row in x_int]
    ws = [[int(v) for v in row] for row in w_int]
    bias = None if bias_int is None else [int(v) for v in bias_int]
    acc_out, events = [], 0
    for xr in rows:
        line = []
        for oi, wr in enumerate(ws):
            acc = 0
            addends = [a * c for a, c in zip(xr, wr)] + ([bias[oi]] if bias is not None else [])
            for p in addends:
                acc += p
                if bits is None or lo <= acc <= hi:
                    continue
                events += 1
                if overflow == AccumulatorOverflow.SATURATE:
                    acc = min(max(acc, lo), hi)
                else:
                    acc = ((acc - lo) % (1 << bits)) + lo
            line.append(acc)
        acc_out.append(line)
    return acc_out, events


@dataclass
class AccumulatorStats:
    """Exact partial sums seen over several accumulations (``quantize --accumulator``
    records them with an unbounded accumulator), and the width that holds them."""

    partial_min: int = 0
    partial_max: int = 0
    sum_min: int = 0
    sum_max: int = 0
    outputs: int = 0

    def add(self, a: Accumulation) -> None:
        n = int(a.acc.size)
        if n == 0:
            return
        if self.outputs == 0:
            self.partial_min, self.partial_max, self.sum_min, self.sum_max = (
                a.partial_min, a.partial_max, a.sum_min, a.sum_max)
        else:
            self.partial_min = min(self.partial_min, a.partial_min)
            self.partial_max = max(self.partial_max, a.partial_max)
            self.sum_min = min(self.sum_min, a.sum_min)
            self.sum_max = max(self.sum_max, a.sum_max)
        self.outputs += n

    def bits(self, overflow=AccumulatorOverflow.SATURATE) -> int:
        """The smallest width at which no accumulation seen changes: SATURATE must hold
        every partial sum (then nothing is clamped), WRAP only every complete sum (a
        wrap of an intermediate sum is undone by the time the sum is complete)."""
        if as_overflow(overflow) == AccumulatorOverflow.WRAP:
            return bits_needed(self.sum_min, self.sum_max)
        return bits_needed(self.partial_min, self.partial_max)
