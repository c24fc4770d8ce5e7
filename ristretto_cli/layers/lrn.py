"""Local response normalisation with Caffe 1.0 semantics (lrn_layer.cpp).

ACROSS_CHANNELS: ``scale = k + alpha/n * sum(x^2 over n channels centred on c)``
(zero padded, ``(n-1)/2`` before), ``y = x * scale^-beta``.

WITHIN_CHANNEL: Caffe builds it from split / square / AVE pooling (kernel n, pad
(n-1)/2, stride 1) / power / product. With stride 1 and that pad every window's
clipped size is n*n, so padded zeros count in the average; the power layer's
shift is 1, so ``k`` is ignored: ``scale = 1 + alpha/n^2 * sum(x^2 over the n x n
window)``, ``y = x * scale^-beta``.

Backward (both): ``dx = dy * scale^-beta - c * x * S(dy * y / scale)`` where S is
the same (symmetric) window sum and ``c = 2 alpha beta / n`` across channels,
``2 alpha beta / n^2`` within a channel.

Hooks: :meth:`LRN.scale_of` (the denominator base), :meth:`_forward_with`
and :meth:`_backward_with` (explicit scale).
"""
from __future__ import annotations

from ..backend import is_numpy
from ..proto import caffe_pb2
from .base import Layer, register

ACROSS_CHANNELS, WITHIN_CHANNEL = caffe_pb2.LRNParameter.ACROSS_CHANNELS, caffe_pb2.LRNParameter.WITHIN_CHANNEL
#: bytes of input per block of elementwise work on the CPU
LRN_BLOCK_BYTES = 256 << 10


def negative_power(xp, s, beta: float):
    """``s ** -beta``, with cheaper exact-enough forms for Caffe's common betas."""
    if beta == 0.75:
        r = xp.sqrt(s)
        return 1 / (r * xp.sqrt(r))
    if beta == 0.5:
        return 1 / xp.sqrt(s)
    if beta == 1.0:
        return 1 / s
    if beta == 0.0:
        return xp.ones_like(s)
    return xp.power(s, -beta)


def channel_window_sum(xp, a, size: int):
    """Sum over ``size`` channels centred on each channel (zero padded), a: (N, C, ...)."""
    out = a.copy()
    for d in range(1, (size - 1) // 2 + 1):
        if d >= a.shape[1]:
            break
        out[:, d:] += a[:, :-d]
        out[:, :-d] += a[:, d:]
    return out


def spatial_window_sum(xp, a, size: int):
    """Sum over the ``size`` x ``size`` window centred on each pixel (zero padded), a: (N, C, H, W)."""
    rows = a.copy()
    h, w = a.shape[2:]
    for d in range(1, (size - 1) // 2 + 1):
        if d < h:
            rows[:, :, d:] += a[:, :, :-d]
            rows[:, :, :-d] += a[:, :, d:]
    out = rows.copy()
    for d in range(1, (size - 1) // 2 + 1):
        if d < w:
            out[..., d:] += rows[..., :-d]
            out[..., :-d] += rows[..., d:]
    return out


@register("LRN")
class LRN(Layer):
    num_bottoms = 1
    num_tops = 1

    def _parse(self):
        lp = self.param.lrn_param
        self.size = int(lp.local_size)
        if self.size % 2 != 1:
            raise self.error(f"LRN only supports odd values for local_size, got {self.size}")
        self.alpha = float(lp.alpha)
        self.beta = float(lp.beta)
        self.k = float(lp.k)
        self.norm_region = int(lp.norm_region)
        if self.norm_region not in (ACROSS_CHANNELS, WITHIN_CHANNEL):
            raise self.error(f"unknown norm_region {self.norm_region}")

    def setup(self, bottom_shapes):
        self._parse()

    def reshape(self, bottom_shapes):
        if not hasattr(self, "size"):
            self._parse()
        shape = tuple(bottom_shapes[0])
        if len(shape) != 4:
            raise self.error(f"input must have 4 axes (num, channels, height, width), got shape {shape}")
        return [shape]

    # -- arithmetic ---------------------------------------------------------------
    def window_sum(self, a):
        """The normalisation window's sum (channels or n x n plane) of ``a``."""
        if self.norm_region == ACROSS_CHANNELS:
            return channel_window_sum(self.xp, a, self.size)
        return spatial_window_sum(self.xp, a, self.size)

    def _window_norm(self) -> float:
        return float(self.size if self.norm_region == ACROSS_CHANNELS else self.size * self.size)

    def scale_of(self, x):
        """The base of the denominator: k + alpha/n * sum (across) or 1 + alpha/n^2 * sum (within)."""
        dt = x.dtype.type
        shift = self.k if self.norm_region == ACROSS_CHANNELS else 1.0
        s = self.window_sum(x * x)
        s *= dt(self.alpha / self._window_norm())
        s += dt(shift)
        return s

    def _forward_with(self, x, scale=None):
        """(top, scale) for bottom ``x``; ``scale`` defaults to :meth:`scale_of`."""
        xp = self.xp
        scale = self.scale_of(x) if scale is None else scale
        if self.beta == 0.75:  # x / (sqrt(s) * s^(1/4)): four cheap passes instead of a pow
            d = xp.sqrt(scale)
            d *= xp.sqrt(d)
            return x / d, scale
        return x * negative_power(xp, scale, self.beta), scale

    def _backward_with(self, x, scale, dy, top=None):
        """Bottom gradient for top gradient ``dy`` at bottom ``x`` with denominator base ``scale``:
        dy * scale^-beta - (2 alpha beta / n) * x * S(dy * top / scale), where ``top`` is
        x * scale^-beta unless given (Caffe's kernel reads the stored top)."""
        dt = x.dtype.type
        inv = negative_power(self.xp, scale, self.beta)
        dx = dy * inv
        ratio = dx * x if top is None else dy * top
        ratio /= scale
        ratio *= dt(2.0 * self.alpha * self.beta / self._window_norm())
        acc = self.window_sum(ratio)
        acc *= x
        dx -= acc
        return dx

    # -- blocking ----------------------------------------------------------------
    def blocks(self, shape, itemsize):
        """Index tuples that cut (N, C, H, W) into independent blocks of about
        ``LRN_BLOCK_BYTES`` (whole samples / row bands across channels, whole planes within),
        so that the dozen elementwise passes run in cache. One block on a GPU."""
        n, c, h, w = shape
        if not is_numpy(self.xp):
            return [(slice(None),)]
        budget = LRN_BLOCK_BYTES
        if self.norm_region == ACROSS_CHANNELS:
            sample = c * h * w * itemsize
            if sample <= budget:
                step = max(1, budget // sample)
                return [(slice(i, min(n, i + step)),) for i in range(0, n, step)]
            rows = max(1, budget // (c * w * itemsize))
            return [(slice(i, i + 1), slice(None), slice(r, min(h, r + rows)))
                    for i in range(n) for r in range(0, h, rows)]
        plane = h * w * itemsize
        step = max(1, budget // plane)
        return [(slice(i, i + 1), slice(j, min(c, j + step))) for i in range(n) for j in range(0, c, step)] \
            if step < c else [(slice(i, min(n, i + max(1, step // c))),) for i in range(0, n, max(1, step // c))]

    # -- contract -----------------------------------------------------------------
    def forward(self, bottoms):
        x = bottoms[0]
        y = self.xp.empty_like(x)
        for blk in self.blocks(x.shape, x.dtype.itemsize):
            y[blk] = self._forward_with(x[blk])[0]
        return [y]

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        if not propagate_down[0]:
            return [None]
        x, dy = bottoms[0], top_diffs[0]
        if dy is None:
            return [self.xp.zeros_like(x)]
        dx = self.xp.empty(x.shape, dtype=self.xp.result_type(x.dtype, dy.dtype))
        for blk in self.blocks(x.shape, dx.dtype.itemsize):
            dx[blk] = self.bottom_gradient(x, dy, tops[0], blk)
        return [dx]

    def bottom_gradient(self, x, dy, top, blk):
        """The bottom gradient on block ``blk`` (the float LRN recomputes its scale there)."""
        xb = x[blk]
        return self._backward_with(xb, self.scale_of(xb), dy[blk])
