"""``quantize --accumulator`` (our extension): the accumulator width of every layer.

After the search, the chosen net's TEST phase runs over the statistics batches with
every ConvolutionRistretto / FcRistretto summing in an unbounded integer accumulator
(the same integers a bounded one would hold while it does not overflow; see
:mod:`ristretto_cli.formats.accumulator`) and recording its exact partial sums. A
layer's width is then the smallest at which none of those accumulations changes:

* SATURATE: every partial sum (each product added, in Caffe's GEMM order, then the
  bias) fits, so nothing is ever clamped -- the layer's output equals the unbounded
  one and its overflow count is 0 on these batches;
* WRAP: every complete sum fits (an intermediate wrap is undone by the end of the sum,
  two's complement being arithmetic modulo 2^bits), so every output equals the
  unbounded one; partial sums may still wrap on the way (``accum_overflows`` > 0).

This is exact, not a search: the width follows from the extreme partial sums, and a
binary search over widths that compares outputs would find the same one except where
the output trim hides a clamped sum (a saturated output), which the next data may
not. Widths are at least 2 (the format's minimum); more than 64 is an error.
"""
from __future__ import annotations

from typing import Callable

from ..errors import RistrettoError
from ..formats.accumulator import MAX_BITS, MIN_BITS, AccumulatorOverflow, AccumulatorStats, as_overflow
from ..formats.config import Precision
from ..layers.ristretto import RistrettoMixin

OVERFLOWS = ("saturate", "wrap")


def accumulating_layers(net) -> list:
    """The layers of ``net`` whose accumulator can be simulated: ConvolutionRistretto and
    FcRistretto in dynamic fixed point or power-of-two weights."""
    return [l for l in net.layers if isinstance(l, RistrettoMixin) and l.accumulates
            and l.quant_config.precision != Precision.MINIFLOAT]


def record_accumulators(net, batches: int, on_batch: Callable[[], None] | None = None) -> dict:
    """{layer name: AccumulatorStats} of the exact partial sums over ``batches`` forward
    passes of the TEST-phase ``net`` (each reads its next batch)."""
    layers = accumulating_layers(net)
    stats = {l.name: AccumulatorStats() for l in layers}
    for l in layers:
        l.accum_probe = stats[l.name]
    try:
        for _ in range(int(batches)):
            net.forward(keep_for_backward=False)
            if on_batch is not None:
                on_batch()
    finally:
        for l in layers:
            l.accum_probe = None
    return stats


def accumulator_bits(stats: dict, overflow="saturate") -> dict:
    """{layer name: the smallest width at which nothing recorded changes} (module doc)."""
    ov = as_overflow(overflow)
    out = {}
    for name, s in stats.items():
        bits = max(MIN_BITS, s.bits(ov))
        if bits > MAX_BITS:
            raise RistrettoError(f"layer '{name}': its partial sums need {bits} accumulator bits; at most "
                                 f"{MAX_BITS} can be simulated")
        out[name] = bits
    return out


def write_accumulator_bits(param, bits: dict, overflow="saturate"):
    """``param`` (a NetParameter, changed in place and returned) with ``accum_bits`` (and
    ``accum_overflow: WRAP`` when wrapping; SATURATE is the default and not written) on
    the named layers."""
    ov = as_overflow(overflow)
    for lp in param.layer:
        if lp.name in bits:
            qp = lp.quantization_param
            qp.accum_bits = int(bits[lp.name])
            if ov == AccumulatorOverflow.WRAP:
                qp.accum_overflow = int(ov)
            else:
                qp.ClearField("accum_overflow")
    return param


def choose_accumulators(net, batches: int, overflow="saturate", on_batch=None) -> tuple[dict, dict]:
    """(widths, stats): :func:`record_accumulators` then :func:`accumulator_bits`."""
    stats = record_accumulators(net, batches, on_batch)
    return accumulator_bits(stats, overflow), stats
