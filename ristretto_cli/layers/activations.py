"""Element-wise ("neuron") layers of Caffe 1.0: one bottom, one top of the same shape.

ReLU, PReLU, Sigmoid, TanH, ELU, Power, Exp, Log, AbsVal, BNLL, Dropout.
Formulas and special cases follow Caffe's ``*_layer.cpp``; gradients use the
bottom or the top exactly where Caffe does, so in-place use behaves the same.
"""
from __future__ import annotations

import math

from ..proto.caffe_pb2 import FillerParameter
from .base import TRAIN, Layer, register
from .fillers import fill

BNLL_THRESHOLD = 50.0  # kBNLL_THRESHOLD in bnll_layer.cpp


class NeuronLayer(Layer):
    """One bottom, one top of the bottom's shape."""

    num_bottoms = 1
    num_tops = 1

    def reshape(self, bottom_shapes):
        return [tuple(bottom_shapes[0])]

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        if not propagate_down[0] or top_diffs[0] is None:
            return [None]
        return [self.bottom_diff(top_diffs[0], bottoms[0], tops[0])]

    def bottom_diff(self, diff, x, y):  # pragma: no cover - every subclass overrides
        raise NotImplementedError


def _ones_where(xp, cond, other, dtype):
    """``1`` where ``cond`` holds, ``other`` elsewhere, in ``dtype``."""
    return xp.where(cond, xp.ones((), dtype=dtype), xp.asarray(other, dtype=dtype))


@register("ReLU")
class ReLU(NeuronLayer):
    """max(x, 0) + negative_slope * min(x, 0)."""

    def setup(self, bottom_shapes):
        self.slope = float(self.param.relu_param.negative_slope)

    def forward(self, bottoms):
        x = bottoms[0]
        xp = self.xp
        if self.slope == 0.0:
            return [xp.maximum(x, 0)]
        return [xp.maximum(x, 0) + self.slope * xp.minimum(x, 0)]

    runs_in_place = True

    def forward_in_place(self, bottoms):
        x = bottoms[0]
        xp = self.xp
        if self.slope == 0.0:
            return [xp.maximum(x, 0, out=x)]
        negative = self.slope * xp.minimum(x, 0)
        xp.maximum(x, 0, out=x)
        x += negative
        return [x]

    def bottom_diff(self, diff, x, y):
        return diff * _ones_where(self.xp, x > 0, self.slope, diff.dtype)


@register("PReLU")
class PReLU(NeuronLayer):
    """ReLU with a learned negative slope per channel (axis 1) or one shared slope."""

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        if len(shape) < 2:
            raise self.error(f"bottom must have at least 2 axes, got shape {shape}")
        p = self.param.prelu_param
        self.channel_shared = p.channel_shared
        if p.HasField("filler"):
            filler = p.filler
        else:
            filler = FillerParameter(type="constant", value=0.25)
        blob_shape = () if self.channel_shared else (shape[1],)
        self.blobs = [fill(filler, blob_shape, self.backend)]

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        if len(shape) < 2:
            raise self.error(f"bottom must have at least 2 axes, got shape {shape}")
        n = int(math.prod(self.blobs[0].shape))
        want = 1 if self.channel_shared else shape[1]
        if n != want:
            raise self.error(f"negative slope blob has {n} values, the prototxt configuration needs {want}")
        return [shape]

    def _slope(self, x):
        s = self.compute_params()[0].astype(x.dtype, copy=False).reshape(-1)
        if self.channel_shared:
            return s.reshape(())
        return s.reshape((1, -1) + (1,) * (x.ndim - 2))

    def forward(self, bottoms):
        x = bottoms[0]
        xp = self.xp
        return [xp.maximum(x, 0) + self._slope(x) * xp.minimum(x, 0)]

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        diff, x = top_diffs[0], bottoms[0]
        if diff is None:
            return [None]
        neg = (x <= 0).astype(diff.dtype)
        grad = diff * x * neg
        axes = tuple(range(x.ndim)) if self.channel_shared else (0,) + tuple(range(2, x.ndim))
        slope_grad = grad.sum(axis=axes).reshape(self.blobs[0].shape)
        self.accumulate_param_diffs(slope_grad)
        if not propagate_down[0]:
            return [None]
        slope = self._slope(x)
        return [diff * ((1 - neg) + slope * neg)]


@register("Sigmoid")
class Sigmoid(NeuronLayer):
    """1 / (1 + exp(-x)), evaluated through exp(-|x|) so that nothing overflows."""

    def forward(self, bottoms):
        x = bottoms[0]
        xp = self.xp
        e = xp.exp(-xp.abs(x))
        return [xp.where(x >= 0, 1, e) / (1 + e)]

    def bottom_diff(self, diff, x, y):
        return diff * y * (1 - y)


@register("TanH")
class TanH(NeuronLayer):
    def forward(self, bottoms):
        return [self.xp.tanh(bottoms[0])]

    def bottom_diff(self, diff, x, y):
        return diff * (1 - y * y)


@register("ELU")
class ELU(NeuronLayer):
    """x for x > 0, alpha * (exp(x) - 1) otherwise."""

    def setup(self, bottom_shapes):
        self.alpha = float(self.param.elu_param.alpha)

    def forward(self, bottoms):
        x = bottoms[0]
        xp = self.xp
        return [xp.maximum(x, 0) + self.alpha * (xp.exp(xp.minimum(x, 0)) - 1)]

    def bottom_diff(self, diff, x, y):
        return diff * _ones_where(self.xp, x > 0, y + self.alpha, diff.dtype)


@register("Power")
class Power(NeuronLayer):
    """(shift + scale * x) ^ power."""

    def setup(self, bottom_shapes):
        p = self.param.power_param
        self.power, self.scale, self.shift = float(p.power), float(p.scale), float(p.shift)
        self.diff_scale = self.power * self.scale

    def forward(self, bottoms):
        x = bottoms[0]
        xp = self.xp
        if self.diff_scale == 0.0:  # the input is ignored: power or scale is 0
            value = 1.0 if self.power == 0.0 else self.shift ** self.power
            return [xp.full(x.shape, value, dtype=x.dtype)]
        y = x * self.scale if self.scale != 1.0 else x.copy()
        if self.shift != 0.0:
            y += self.shift
        if self.power != 1.0:
            y = xp.power(y, self.power)
        return [y]

    def bottom_diff(self, diff, x, y):
        xp = self.xp
        if self.diff_scale == 0.0:
            return xp.zeros_like(diff)
        if self.power == 1.0:
            return diff * self.diff_scale
        if self.power == 2.0:
            # dy/dx = 2 scale (shift + scale x)
            grad = (self.diff_scale * self.scale) * x
            if self.shift != 0.0:
                grad += self.diff_scale * self.shift
        elif self.shift == 0.0:
            # dy/dx = power * y / x
            grad = y / x * self.power
        else:
            # dy/dx = diff_scale * y / (shift + scale x)
            base = x * self.scale + self.shift
            grad = y / base * self.diff_scale
        return grad * diff


def _log_base(layer, base: float) -> float:
    """ln(base), with base -1 meaning e (Caffe's Exp and Log layers)."""
    if base == -1.0:
        return 1.0
    if not base > 0:
        raise layer.error(f"base must be strictly positive (or -1 for e), got {base}")
    return math.log(base)


@register("Exp")
class Exp(NeuronLayer):
    """base ^ (shift + scale * x); base -1 means e."""

    def setup(self, bottom_shapes):
        p = self.param.exp_param
        base = float(p.base)
        log_base = _log_base(self, base)
        self.inner_scale = log_base * float(p.scale)
        shift = float(p.shift)
        if shift == 0.0:
            self.outer_scale = 1.0
        else:
            self.outer_scale = math.exp(shift) if base == -1.0 else base ** shift

    def forward(self, bottoms):
        x = bottoms[0]
        y = self.xp.exp(x * self.inner_scale if self.inner_scale != 1.0 else x)
        if self.outer_scale != 1.0:
            y *= self.outer_scale
        return [y]

    def bottom_diff(self, diff, x, y):
        grad = y * diff
        return grad * self.inner_scale if self.inner_scale != 1.0 else grad


@register("Log")
class Log(NeuronLayer):
    """log_base(shift + scale * x); base -1 means e."""

    def setup(self, bottom_shapes):
        p = self.param.log_param
        log_base = _log_base(self, float(p.base))
        if log_base == 0.0:
            raise self.error("base 1 gives an infinite scale 1/log(base)")
        self.base_scale = 1.0 / log_base
        self.scale, self.shift = float(p.scale), float(p.shift)
        self.backward_num_scale = self.scale / log_base

    def _inner(self, x):
        if self.scale == 1.0 and self.shift == 0.0:
            return x
        y = x * self.scale if self.scale != 1.0 else x.copy()
        if self.shift != 0.0:
            y += self.shift
        return y

    def forward(self, bottoms):
        y = self.xp.log(self._inner(bottoms[0]))
        if self.base_scale != 1.0:
            y *= self.base_scale
        return [y]

    def bottom_diff(self, diff, x, y):
        grad = 1 / self._inner(x)
        if self.backward_num_scale != 1.0:
            grad *= self.backward_num_scale
        return grad * diff


@register("AbsVal")
class AbsVal(NeuronLayer):
    def forward(self, bottoms):
        return [self.xp.abs(bottoms[0])]

    def bottom_diff(self, diff, x, y):
        return diff * self.xp.sign(x).astype(diff.dtype, copy=False)


@register("BNLL")
class BNLL(NeuronLayer):
    """Binomial normal log likelihood: log(1 + exp(x)), computed without overflow."""

    def forward(self, bottoms):
        x = bottoms[0]
        xp = self.xp
        return [xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))]

    def bottom_diff(self, diff, x, y):
        e = self.xp.exp(self.xp.minimum(x, BNLL_THRESHOLD))
        return diff * e / (e + 1)


@register("Dropout")
class Dropout(NeuronLayer):
    """TRAIN: keep each value with probability 1 - dropout_ratio and scale it by 1 / (1 - ratio);
    TEST: identity. With ``scale_train: false`` (an OpenCV/fork extension, honoured when the
    schema has it) the TRAIN pass does not scale and TEST multiplies by 1 - ratio instead."""

    def setup(self, bottom_shapes):
        p = self.param.dropout_param
        self.ratio = float(p.dropout_ratio)
        if not 0.0 <= self.ratio < 1.0:
            raise self.error(f"dropout_ratio must be in [0, 1), got {self.ratio}")
        self.scale_train = bool(getattr(p, "scale_train", True))
        self.scale = 1.0 / (1.0 - self.ratio)
        self.mask = None

    def forward(self, bottoms):
        x = bottoms[0]
        if self.phase == TRAIN:
            keep = self.backend.rng.random(x.shape) >= self.ratio
            self.mask = keep.astype(x.dtype)
            if self.scale_train:
                self.mask *= self.scale
            return [x * self.mask]
        if not self.scale_train:
            return [x * (1.0 - self.ratio)]
        return [x.copy()]

    def bottom_diff(self, diff, x, y):
        if self.phase == TRAIN:
            if self.mask is None or self.mask.shape != diff.shape:
                raise self.error("backward without a matching TRAIN forward")
            return diff * self.mask
        if not self.scale_train:
            return diff * (1.0 - self.ratio)
        return diff
