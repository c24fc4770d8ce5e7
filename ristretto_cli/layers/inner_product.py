"""InnerProduct with Caffe 1.0 semantics (inner_product_layer.cpp).

The bottom is flattened from ``axis`` on: (M, K) with M = prod(shape[:axis]) and
K = prod(shape[axis:]); the top is shape[:axis] + (num_output,). Weights are
(num_output, K), or (K, num_output) with ``transpose: true``; the bias is (num_output,).

Hooks as in Convolution: forward and the bottom gradient compute with
:meth:`Layer.compute_params`; :meth:`_forward_with` / :meth:`_backward_with` take the
weight and bias explicitly; the weight gradient goes to ``self.diffs``.
"""
from __future__ import annotations

import math

from .base import Layer, register
from .fillers import fill


@register("InnerProduct")
class InnerProduct(Layer):
    num_bottoms = 1
    num_tops = 1

    def _parse(self, bottom_shape):
        ip = self.param.inner_product_param
        self.num_output = int(ip.num_output)
        if self.num_output <= 0:
            raise self.error("num_output must be positive")
        self.bias_term = bool(ip.bias_term)
        self.transpose = bool(ip.transpose)
        self.axis = self.canonical_axis(int(ip.axis), len(bottom_shape))
        self.k = math.prod(bottom_shape[self.axis:])

    def weight_shape(self) -> tuple:
        return (self.k, self.num_output) if self.transpose else (self.num_output, self.k)

    def setup(self, bottom_shapes):
        self._parse(tuple(bottom_shapes[0]))
        ip = self.param.inner_product_param
        self.blobs = [fill(ip.weight_filler, self.weight_shape(), self.backend)]
        if self.bias_term:
            self.blobs.append(fill(ip.bias_filler, (self.num_output,), self.backend))
        self.diffs = []

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        if not hasattr(self, "axis"):
            self._parse(shape)
        axis = self.canonical_axis(int(self.param.inner_product_param.axis), len(shape))
        k = math.prod(shape[axis:])
        if k != self.k:
            raise self.error(f"input size incompatible with inner product parameters: bottom {shape} "
                             f"has {k} values per item from axis {axis}, the weights expect {self.k}")
        return [shape[:axis] + (self.num_output,)]

    def _weight_and_bias(self):
        """(weight, bias or None) from :meth:`compute_params`, read at call time."""
        params = self.compute_params()
        return params[0], (params[1] if self.bias_term else None)

    def macs(self, bottom_shapes, top_shapes) -> int:
        """One MAC per weight feeding each output element: K per top element."""
        if not self.blobs:
            return 0
        w = self.blobs[0]
        fan_in = w.shape[0] if self.transpose else math.prod(w.shape[1:])
        return int(math.prod(top_shapes[0]) * fan_in)

    def _flat(self, x):
        axis = self.canonical_axis(int(self.param.inner_product_param.axis), x.ndim)
        return x.reshape(math.prod(x.shape[:axis]), -1), x.shape[:axis]

    def _forward_with(self, x, weight, bias):
        x2, lead = self._flat(x)
        y = x2 @ (weight if self.transpose else weight.T)
        if bias is not None:
            y += bias.astype(y.dtype, copy=False)
        return y.reshape(lead + (self.num_output,))

    def _backward_with(self, x, dy, weight, need_dx=True, need_dw=True, need_db=True):
        """(dx or None, dweight or None, dbias or None) for top gradient ``dy``."""
        x2, _ = self._flat(x)
        dy2 = dy.reshape(x2.shape[0], self.num_output)
        dx = dw = db = None
        if need_dw:
            dw = x2.T @ dy2 if self.transpose else dy2.T @ x2
        if need_db:
            db = dy2.sum(axis=0)
        if need_dx:
            dx = (dy2 @ (weight.T if self.transpose else weight)).reshape(x.shape)
        return dx, dw, db

    def forward(self, bottoms):
        weight, bias = self._weight_and_bias()
        return [self._forward_with(bottoms[0], weight, bias)]

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        weight, _ = self._weight_and_bias()
        x, dy = bottoms[0], top_diffs[0]
        need_dx = bool(propagate_down[0])
        if dy is None:
            return [self.xp.zeros_like(x) if need_dx else None]
        mult = self.param_multipliers()
        dx, dw, db = self._backward_with(x, dy, weight, need_dx, mult[0][0] != 0,
                                         self.bias_term and mult[1][0] != 0)
        self.accumulate_param_diffs(dw, db)
        return [dx]
