"""Value ranges of the float net and what the search derives from them (DESIGN.md 5.2, 5.3, 5.5).

The original (``Net::RangeInLayers``) runs the TRAIN-phase net for 10 batches and,
after each whole forward pass, records for every layer whose type is exactly
``Convolution`` or ``InnerProduct``: max|first bottom|, max|first top| and
max|first parameter blob| (the weights; the bias is ignored). Reading after the
whole pass means an in-place ReLU on a top is already applied. Maxima start at 0
and keep the largest value seen over the batches.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import numpy as np

from ..errors import RistrettoError

#: layer types the statistics cover (exact names, as the original compares them)
STAT_TYPES = ("Convolution", "InnerProduct")
#: batches of the TRAIN-phase net the original measures
STAT_BATCHES = 10
#: the original starts the minifloat exponent search at 4 bits
MIN_EXP_BITS = 4


#: the float types ``--whole-graph`` measures (and rewrites) besides STAT_TYPES
WHOLE_GRAPH_STAT_TYPES = ("Pooling", "Eltwise", "Concat", "BatchNorm", "Scale", "ReLU", "PReLU")
#: when a layer's values are read: after the whole forward pass (the original: an in-place
#: ReLU on a top is included) or when the layer has run ("pre-activation")
AFTER_PASS, PRE_ACTIVATION = "after", "pre-activation"
#: how the range that sets an integer length is found from the values seen
CALIBRATIONS = ("max", "percentile", "mse")
#: values kept per trim site and batch for percentile / mse calibration
SAMPLE_PER_BATCH = 1 << 14
#: the bit width mse calibration fits the integer length for
MSE_BITS = 8


@dataclass
class LayerRange:
    """Largest magnitudes seen at one layer (and, our additions, the smallest values of its
    input and output, the largest bias magnitude, and the calibrated ranges)."""

    name: str
    type: str
    max_in: float = 0.0
    max_out: float = 0.0
    max_params: float = 0.0
    min_in: float = 0.0
    min_out: float = 0.0
    max_bias: float | None = None
    cal_in: float | None = None
    cal_out: float | None = None

    def update(self, max_in: float, max_out: float, max_params: float) -> None:
        self.max_in = max(self.max_in, max_in)
        self.max_out = max(self.max_out, max_out)
        self.max_params = max(self.max_params, max_params)

    @property
    def range_in(self) -> float:
        """The magnitude the input's integer length is made for (max unless calibrated)."""
        return self.max_in if self.cal_in is None else self.cal_in

    @property
    def range_out(self) -> float:
        return self.max_out if self.cal_out is None else self.cal_out

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class IntegerLengths:
    """Integer bits of dynamic fixed point at a layer's three trim sites (and, our additions,
    unsigned activation sites and the bias's integer length)."""

    il_in: int
    il_out: int
    il_params: int
    unsigned_in: bool = False
    unsigned_out: bool = False
    il_bias: int | None = None

    def to_json(self) -> dict:
        return asdict(self)


def abs_max(array, backend) -> float:
    """max |array| as a Python float (exact: the array is float32 or float64)."""
    if array.size == 0:
        return 0.0
    return float(backend.to_numpy(abs(array).max()))


class _Site:
    """What one trim site has seen: max |x|, min x and (for calibration) a sample of |x|."""

    __slots__ = ("max", "min", "samples")

    def __init__(self):
        self.max, self.min, self.samples = 0.0, 0.0, []

    def add(self, array, backend, sample: bool) -> None:
        if array.size == 0:
            return
        self.max = max(self.max, abs_max(array, backend))
        self.min = min(self.min, float(backend.to_numpy(array.min())))
        if sample:
            flat = backend.to_numpy(abs(array)).reshape(-1)
            step = max(1, flat.size // SAMPLE_PER_BATCH)
            self.samples.append(np.array(flat[::step], dtype=np.float32))


def observe_ranges(net, batches: int = STAT_BATCHES, on_batch: Callable | None = None, types=STAT_TYPES,
                   when: str = AFTER_PASS, calibration: str = "max", percentile: float = 99.99) -> list[LayerRange]:
    """Forward ``net`` ``batches`` times (data from its own input layers) and return the
    ranges of its layers of ``types`` (the original: Convolution / InnerProduct), in net order.

    Convolution / InnerProduct read their first bottom, other types every bottom (an
    Eltwise's or Concat's inputs share one format). ``when``: AFTER_PASS (the original)
    or PRE_ACTIVATION (each blob as its producer wrote it, e.g. before an in-place ReLU).
    ``calibration``: "max" (the original), "percentile" (that percentile of |x|) or
    "mse" (the integer length whose MSE_BITS-bit format errs least on the values).
    """
    if calibration not in CALIBRATIONS:
        raise RistrettoError(f"unknown calibration '{calibration}'; use {', '.join(CALIBRATIONS)}")
    if when not in (AFTER_PASS, PRE_ACTIVATION):
        raise RistrettoError(f"unknown statistics point '{when}'; use {AFTER_PASS} or {PRE_ACTIVATION}")
    sample = calibration != "max"
    watched = [(i, LayerRange(layer.name, layer.type)) for i, layer in enumerate(net.layers)
               if layer.type in types]
    sites = {i: (_Site(), _Site()) for i, _ in watched}
    index = {i: r for i, r in watched}
    backend = net.backend

    def check(i, layer):
        if not net.bottom_names[i] or not net.top_names[i] or (layer.type in STAT_TYPES and not layer.blobs):
            raise RistrettoError(f"layer '{layer.name}' ({layer.type}) has no bottom, top or weights "
                                 f"to measure")

    def record(i, ins, outs):
        layer = net.layers[i]
        multi = layer.type not in STAT_TYPES
        s_in, s_out = sites[i]
        for a in (ins if multi else ins[:1]):
            s_in.add(a, backend, sample)
        s_out.add(outs[0], backend, sample)
        rng = index[i]
        params = abs_max(layer.blobs[0], backend) if layer.blobs and layer.type != "BatchNorm" else 0.0
        rng.max_params = max(rng.max_params, params)
        if _has_bias_blob(layer):
            rng.max_bias = max(rng.max_bias or 0.0, abs_max(layer.blobs[-1], backend))

    for b in range(batches):
        if when == PRE_ACTIVATION:
            current: dict = {}

            def on_layer(i, layer, names, tops, current=current):
                if i in index:
                    check(i, layer)
                    record(i, [current[n] for n in net.bottom_names[i]], tops)
                for n, t in zip(names, tops):
                    current[n] = t

            net.forward(keep_for_backward=False, on_layer=on_layer)
        else:
            net.forward(keep_for_backward=False)
            for i, _ in watched:
                layer = net.layers[i]
                check(i, layer)
                record(i, [net.blobs[n] for n in net.bottom_names[i]], [net.blobs[n] for n in net.top_names[i]])
        if on_batch is not None:
            on_batch(b)
    for i, rng in watched:
        s_in, s_out = sites[i]
        rng.max_in, rng.max_out = max(rng.max_in, s_in.max), max(rng.max_out, s_out.max)
        rng.min_in, rng.min_out = s_in.min, s_out.min
        for what in ("max_in", "max_out", "max_params"):
            v = getattr(rng, what)
            if not math.isfinite(v):
                raise RistrettoError(f"layer '{rng.name}': {what.replace('max_', '')} magnitude is {v} in the "
                                     f"TRAIN-phase statistics; the float net overflows, nothing can be quantized")
        if sample:
            rng.cal_in = calibrated_range(s_in.samples, rng.max_in, calibration, percentile)
            rng.cal_out = calibrated_range(s_out.samples, rng.max_out, calibration, percentile)
    return [r for _, r in watched]


def _has_bias_blob(layer) -> bool:
    if layer.type in ("Convolution", "Deconvolution"):
        return layer.param.convolution_param.bias_term and len(layer.blobs) > 1
    if layer.type == "InnerProduct":
        return layer.param.inner_product_param.bias_term and len(layer.blobs) > 1
    if layer.type == "Scale":
        return bool(layer.param.scale_param.bias_term) and bool(layer.blobs)
    return False


def calibrated_range(samples, maximum: float, calibration: str, percentile: float = 99.99) -> float:
    """The magnitude an integer length is made for: ``maximum`` ("max"), the ``percentile``
    of the sampled |x| ("percentile"), or 2^il for the il whose MSE_BITS-bit unsigned grid
    has the least squared error on the samples, il from ceil(log2 max) down 8 ("mse").
    A range of 0 (nothing sampled, or mostly zeros) falls back to ``maximum``."""
    if calibration == "max" or not samples or maximum <= 0:
        return maximum
    values = np.concatenate(samples).astype(np.float64)
    if calibration == "percentile":
        v = float(np.percentile(values, percentile))
        return v if v > 0 else maximum
    top = integer_length(maximum)
    best, best_err = top, math.inf
    for il in range(top, top - 9, -1):
        step = 2.0 ** (il - MSE_BITS)
        q = np.minimum(np.rint(values / step), 2 ** MSE_BITS - 1) * step
        err = float(np.mean((q - values) ** 2))
        if err < best_err:
            best, best_err = il, err
    return min(maximum, 2.0 ** best)


def integer_length(maximum: float, extra: float = 0.0) -> int:
    """ceil(log2(maximum) + extra), in double precision as the original computes it.

    A maximum of 0 (a blob that was zero in every statistics batch) has no
    logarithm; the original's arithmetic is undefined there. We use the length of a
    maximum of 1, i.e. ceil(extra).
    """
    if maximum <= 0.0:
        return math.ceil(extra)
    return math.ceil(math.log2(maximum) + extra)


ACTIVATION_RANGES = ("original", "signed", "unsigned")


def integer_lengths(rng: LayerRange, activation_range: str = "original") -> IntegerLengths:
    """il_in = ceil(log2 max_in), il_out = ceil(log2 max_out), il_params = ceil(log2 max_params + 1).

    Our ``activation_range`` choices: "original" (as written, no sign bit), "signed" (one
    more integer bit for the sign) and "unsigned" (a site that was never negative gets an
    unsigned format of the same integer length, every bit for magnitude; others as
    "signed"). Calibrated ranges replace the maxima where observe_ranges set them. The
    bias (when measured) gets ceil(log2 max_bias + 1), as the weights.
    """
    if activation_range not in ACTIVATION_RANGES:
        raise RistrettoError(f"unknown activation range '{activation_range}'; use {', '.join(ACTIVATION_RANGES)}")
    sites = []
    for rg, low in ((rng.range_in, rng.min_in), (rng.range_out, rng.min_out)):
        il = integer_length(rg)
        unsigned = activation_range == "unsigned" and low >= 0
        if activation_range != "original" and not unsigned:
            il += 1
        sites.append((il, unsigned))
    il_bias = None if rng.max_bias is None else integer_length(rng.max_bias, 1.0)
    return IntegerLengths(sites[0][0], sites[1][0], integer_length(rng.max_params, 1.0), sites[0][1], sites[1][1],
                          il_bias)


def lengths_by_layer(ranges: Iterable[LayerRange], activation_range: str = "original") -> dict[str, IntegerLengths]:
    """{layer name: IntegerLengths}; a name seen twice keeps its first entry, as the
    original's lookup (first match in its layer list) does."""
    out: dict[str, IntegerLengths] = {}
    for r in ranges:
        out.setdefault(r.name, integer_lengths(r, activation_range))
    return out


def exp_bits_for(maximum: float) -> int | None:
    """ceil(log2(log2(maximum) - 1) + 1), or None where that is undefined (maximum <= 2).

    The original computes this in double precision and converts to int; for a
    maximum of at most 2 the logarithm is of a number <= 0, the conversion is
    undefined (INT_MIN on x86) and its std::max ignores the value. So do we.
    """
    if not maximum > 2.0:
        return None
    return math.ceil(math.log2(math.log2(maximum) - 1.0) + 1.0)


def minifloat_exp_bits(ranges: Iterable[LayerRange], start: int = MIN_EXP_BITS) -> int:
    """Exponent bits so that no layer input or output saturates: the largest of
    ``start`` and :func:`exp_bits_for` over every max_in and max_out (weights are
    ignored, as in the original)."""
    bits = start
    for r in ranges:
        for m in (r.max_in, r.max_out):
            e = exp_bits_for(m)
            if e is not None:
                bits = max(bits, e)
    return bits
