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

from ..errors import RistrettoError

#: layer types the statistics cover (exact names, as the original compares them)
STAT_TYPES = ("Convolution", "InnerProduct")
#: batches of the TRAIN-phase net the original measures
STAT_BATCHES = 10
#: the original starts the minifloat exponent search at 4 bits
MIN_EXP_BITS = 4


@dataclass
class LayerRange:
    """Largest magnitudes seen at one layer."""

    name: str
    type: str
    max_in: float = 0.0
    max_out: float = 0.0
    max_params: float = 0.0

    def update(self, max_in: float, max_out: float, max_params: float) -> None:
        self.max_in = max(self.max_in, max_in)
        self.max_out = max(self.max_out, max_out)
        self.max_params = max(self.max_params, max_params)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class IntegerLengths:
    """Integer bits of dynamic fixed point at a layer's three trim sites."""

    il_in: int
    il_out: int
    il_params: int

    def to_json(self) -> dict:
        return asdict(self)


def abs_max(array, backend) -> float:
    """max |array| as a Python float (exact: the array is float32 or float64)."""
    if array.size == 0:
        return 0.0
    return float(backend.to_numpy(abs(array).max()))


def observe_ranges(net, batches: int = STAT_BATCHES, on_batch: Callable | None = None) -> list[LayerRange]:
    """Forward ``net`` ``batches`` times (data from its own input layers) and return the
    ranges of its Convolution / InnerProduct layers, in net order."""
    watched = [(i, LayerRange(layer.name, layer.type)) for i, layer in enumerate(net.layers)
               if layer.type in STAT_TYPES]
    for b in range(batches):
        net.forward(keep_for_backward=False)
        for i, rng in watched:
            layer = net.layers[i]
            if not net.bottom_names[i] or not net.top_names[i] or not layer.blobs:
                raise RistrettoError(f"layer '{layer.name}' ({layer.type}) has no bottom, top or weights "
                                     f"to measure")
            rng.update(abs_max(net.blobs[net.bottom_names[i][0]], net.backend),
                       abs_max(net.blobs[net.top_names[i][0]], net.backend),
                       abs_max(layer.blobs[0], net.backend))
        if on_batch is not None:
            on_batch(b)
    for _, rng in watched:
        for what in ("max_in", "max_out", "max_params"):
            v = getattr(rng, what)
            if not math.isfinite(v):
                raise RistrettoError(f"layer '{rng.name}': {what.replace('max_', '')} magnitude is {v} in the "
                                     f"TRAIN-phase statistics; the float net overflows, nothing can be quantized")
    return [r for _, r in watched]


def integer_length(maximum: float, extra: float = 0.0) -> int:
    """ceil(log2(maximum) + extra), in double precision as the original computes it.

    A maximum of 0 (a blob that was zero in every statistics batch) has no
    logarithm; the original's arithmetic is undefined there. We use the length of a
    maximum of 1, i.e. ceil(extra).
    """
    if maximum <= 0.0:
        return math.ceil(extra)
    return math.ceil(math.log2(maximum) + extra)


def integer_lengths(rng: LayerRange) -> IntegerLengths:
    """il_in = ceil(log2 max_in), il_out = ceil(log2 max_out), il_params = ceil(log2 max_params + 1)."""
    return IntegerLengths(integer_length(rng.max_in), integer_length(rng.max_out),
                          integer_length(rng.max_params, 1.0))


def lengths_by_layer(ranges: Iterable[LayerRange]) -> dict[str, IntegerLengths]:
    """{layer name: IntegerLengths}; a name seen twice keeps its first entry, as the
    original's lookup (first match in its layer list) does."""
    out: dict[str, IntegerLengths] = {}
    for r in ranges:
        out.setdefault(r.name, integer_lengths(r))
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
