"""Convolution, Deconvolution and Im2col with Caffe 1.0 semantics (base_conv_layer.cpp,
im2col_layer.cpp).

Weights are (num_output, channels/group, *kernel) for Convolution and
(channels, num_output/group, *kernel) for Deconvolution; the bias is (num_output,).
Spatial axes are every axis after ``axis`` (the channel axis, default 1); axes
before it are flattened into the batch.

Subclass hooks (the Ristretto layers use them): ``forward`` and the bottom gradient
compute with :meth:`Layer.compute_params` (``self.blobs`` unless a subclass hands
trimmed copies), the weight gradient goes to ``self.diffs``; the arithmetic lives in
:meth:`_forward_with` / :meth:`_backward_with`, which take the weight and bias
explicitly.
"""
from __future__ import annotations

import math

from .base import Layer, register
from .fillers import fill
from .im2col import (ConvGeometry, col2im, convolution, convolution_grad, convolution_transpose,
                     convolution_transpose_grad, im2col)


def _repeated(cp, name: str, n_spatial: int, default: int, layer: Layer) -> tuple:
    """A repeated per-axis field with its 2-D ``name_h``/``name_w`` alternative."""
    has_hw = cp.HasField(f"{name}_h") or cp.HasField(f"{name}_w")
    field = "kernel_size" if name == "kernel" else name
    values = list(getattr(cp, field))
    if has_hw:
        if n_spatial != 2:
            raise layer.error(f"{name}_h/{name}_w can only be used for 2-D convolution "
                              f"(the bottom has {n_spatial} spatial axes)")
        if values:
            raise layer.error(f"either {field} or {name}_h/{name}_w should be specified, not both")
        return (int(getattr(cp, f"{name}_h")), int(getattr(cp, f"{name}_w")))
    if not values:
        if default is None:
            raise layer.error("kernel_size (or kernel_h and kernel_w) must be specified")
        return (default,) * n_spatial
    if len(values) not in (1, n_spatial):
        raise layer.error(f"{field} must be given once or once per spatial axis ({n_spatial}), "
                          f"got {len(values)} values")
    return tuple(int(values[0 if len(values) == 1 else i]) for i in range(n_spatial))


def conv_geometry(cp, bottom_shape, layer: Layer) -> tuple[int, ConvGeometry]:
    """(channel axis, kernel/stride/pad/dilation) of a ``convolution_param`` for a bottom
    of ``bottom_shape``, checked as Caffe's BaseConvolutionLayer / Im2colLayer set-up."""
    num_axes = len(bottom_shape)
    channel_axis = layer.canonical_axis(cp.axis, num_axes)
    n_spatial = num_axes - channel_axis - 1
    if n_spatial < 1:
        raise layer.error(f"needs at least one spatial axis after axis {channel_axis}, "
                          f"bottom shape is {tuple(bottom_shape)}")
    kernel = _repeated(cp, "kernel", n_spatial, None, layer)
    stride = _repeated(cp, "stride", n_spatial, 1, layer)
    pad = _repeated(cp, "pad", n_spatial, 0, layer)
    dil = list(cp.dilation)
    if len(dil) not in (0, 1, n_spatial):
        raise layer.error(f"dilation must be given once or once per spatial axis ({n_spatial}), "
                          f"got {len(dil)} values")
    dilation = tuple(int(dil[0 if len(dil) == 1 else i]) if dil else 1 for i in range(n_spatial))
    if any(k <= 0 for k in kernel):
        raise layer.error(f"filter dimensions must be nonzero, got kernel {kernel}")
    if any(s <= 0 for s in stride):
        raise layer.error(f"stride must be positive, got {stride}")
    if any(d <= 0 for d in dilation):
        raise layer.error(f"dilation must be positive, got {dilation}")
    return channel_axis, ConvGeometry(kernel, stride, pad, dilation)


class _ConvBase(Layer):
    """Shared parameter handling of Convolution and Deconvolution."""

    num_bottoms = (1, None)
    num_tops = (1, None)
    #: True for Deconvolution (Caffe's reverse_dimensions)
    transposed = False

    # -- parameters -------------------------------------------------------
    def _parse(self, bottom_shape) -> None:
        cp = self.param.convolution_param
        self.channel_axis, self.geom = conv_geometry(cp, bottom_shape, self)
        self.num_output = int(cp.num_output)
        if self.num_output <= 0:
            raise self.error("num_output must be positive")
        self.group = int(cp.group)
        self.channels = int(bottom_shape[self.channel_axis])
        if self.group <= 0:
            raise self.error("group must be positive")
        if self.channels % self.group:
            raise self.error(f"{self.channels} input channels are not divisible by group {self.group}")
        if self.num_output % self.group:
            raise self.error(f"num_output {self.num_output} is not divisible by group {self.group}")
        self.bias_term = bool(cp.bias_term)

    def weight_shape(self) -> tuple:
        k = self.geom.kernel
        if self.transposed:
            return (self.channels, self.num_output // self.group) + k
        return (self.num_output, self.channels // self.group) + k

    # -- contract ---------------------------------------------------------
    def setup(self, bottom_shapes):
        self._parse(bottom_shapes[0])
        cp = self.param.convolution_param
        self.blobs = [fill(cp.weight_filler, self.weight_shape(), self.backend)]
        if self.bias_term:
            self.blobs.append(fill(cp.bias_filler, (self.num_output,), self.backend))
        self.diffs = []

    def _output_spatial(self, in_spatial) -> tuple:
        try:
            if self.transposed:
                return self.geom.transposed_output_shape(in_spatial)
            return self.geom.output_shape(in_spatial)
        except ValueError as exc:
            raise self.error(str(exc)) from None

    def reshape(self, bottom_shapes):
        if not hasattr(self, "geom"):
            self._parse(bottom_shapes[0])
        first = tuple(bottom_shapes[0])
        for s in bottom_shapes[1:]:
            if tuple(s) != first:
                raise self.error(f"all bottoms must have the same shape: {first} vs {tuple(s)}")
        if len(first) != self.channel_axis + 1 + self.geom.ndim:
            raise self.error(f"bottom has {len(first)} axes, the layer was set up for "
                             f"{self.channel_axis + 1 + self.geom.ndim}")
        if first[self.channel_axis] != self.channels:
            raise self.error(f"input has {first[self.channel_axis]} channels, the layer was set up for "
                             f"{self.channels}")
        top = first[: self.channel_axis] + (self.num_output,) + self._output_spatial(
            first[self.channel_axis + 1:])
        return [top] * len(bottom_shapes)

    def _weight_and_bias(self):
        """(weight, bias or None) from :meth:`compute_params`, read at call time."""
        params = self.compute_params()
        return params[0], (params[1] if self.bias_term else None)

    def forward(self, bottoms):
        weight, bias = self._weight_and_bias()
        return [self._forward_with(x, weight, bias) for x in bottoms]

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        weight, _ = self._weight_and_bias()
        mult = self.param_multipliers()
        need_dw = mult[0][0] != 0
        need_db = self.bias_term and mult[1][0] != 0
        out = []
        for i, x in enumerate(bottoms):
            dy = top_diffs[i] if i < len(top_diffs) else None
            need_dx = bool(propagate_down[i]) if i < len(propagate_down) else True
            if dy is None:
                out.append(self.xp.zeros_like(x) if need_dx else None)
                continue
            dx, dw, db = self._backward_with(x, dy, weight, need_dx, need_dw, need_db)
            self.accumulate_param_diffs(dw, db)
            out.append(dx)
        return out

    def macs(self, bottom_shapes, top_shapes) -> int:
        """One MAC per weight feeding each output element: (C/group * kernel) per top
        element; Deconvolution scatters each bottom element through (O/group * kernel)
        weights instead."""
        if not self.blobs:
            return 0
        per_value = math.prod(self.blobs[0].shape[1:])
        shape = bottom_shapes[0] if self.transposed else top_shapes[0]
        return int(math.prod(shape) * per_value)

    # -- arithmetic ---------------------------------------------------------
    def _flat(self, x):
        """x as (N, C, *spatial), the leading axes before the channel axis flattened."""
        lead = x.shape[: self.channel_axis]
        return x.reshape((math.prod(lead),) + x.shape[self.channel_axis:]), lead

    def _bias_view(self, bias):
        return bias.reshape((1, -1) + (1,) * self.geom.ndim)

    def _forward_with(self, x, weight, bias):
        raise NotImplementedError

    def _backward_with(self, x, dy, weight, need_dx=True, need_dw=True, need_db=True):
        """(dx or None, dweight or None, dbias or None) for top gradient ``dy``."""
        xf, _ = self._flat(x)
        dyf = dy.reshape((xf.shape[0],) + dy.shape[self.channel_axis:])
        dx = dw = db = None
        if need_dx or need_dw:
            dx, dw = self._input_weight_grads(xf, dyf, weight, need_dx, need_dw)
        if need_db:
            db = dyf.reshape(dyf.shape[0], dyf.shape[1], -1).sum(axis=(0, 2))
        if dx is not None:
            dx = dx.reshape(x.shape)
        return dx, dw, db

    def _input_weight_grads(self, xf, dyf, weight, need_dx, need_dw):
        raise NotImplementedError


@register("Convolution")
class Convolution(_ConvBase):
    """Caffe's Convolution: cross-correlation with pad / stride / dilation / group."""

    transposed = False

    def _forward_with(self, x, weight, bias):
        """Top for one bottom ``x`` with explicit ``weight`` (O, C/G, *k) and ``bias`` (O,) or None."""
        xf, lead = self._flat(x)
        y = convolution(xf, weight, self.geom, self.group, self.xp, bias=bias)
        return y.reshape(lead + y.shape[1:])

    def _input_weight_grads(self, xf, dyf, weight, need_dx, need_dw):
        return convolution_grad(xf, dyf, weight, self.geom, self.group, self.xp, need_dx=need_dx, need_dw=need_dw)


@register("Deconvolution")
class Deconvolution(_ConvBase):
    """Caffe's Deconvolution: the transpose (adjoint) of Convolution with the same weights."""

    transposed = True

    def _forward_with(self, x, weight, bias):
        """Top for one bottom ``x`` with explicit ``weight`` (C, O/G, *k) and ``bias`` (O,) or None."""
        xf, lead = self._flat(x)
        out_spatial = self._output_spatial(xf.shape[2:])
        y = convolution_transpose(xf, weight, self.geom, self.group, out_spatial, self.xp)
        if bias is not None:
            y += self._bias_view(bias).astype(y.dtype, copy=False)
        return y.reshape(lead + y.shape[1:])

    def _input_weight_grads(self, xf, dyf, weight, need_dx, need_dw):
        return convolution_transpose_grad(xf, dyf, weight, self.geom, self.group, self.xp,
                                          need_dy=need_dx, need_dw=need_dw)


@register("Im2col")
class Im2col(Layer):
    """Caffe's Im2col: the convolution columns of the bottom as a blob, no weights.

    ``convolution_param`` gives kernel / stride / pad / dilation (and ``axis``, the channel
    axis; ``num_output`` and the fillers are not read). A bottom (N, C, *S) becomes
    (N, C * prod(kernel), *out) with out = (S + 2 pad - extent) // stride + 1; channel
    ``c * prod(kernel) + k`` holds kernel offset ``k`` (row-major) of input channel ``c``,
    as im2col_layer.cpp. Axes before ``axis`` are batch axes. ``force_nd_im2col`` selects
    Caffe's N-D routine, which gives the same values; it is accepted and changes nothing.
    Backward is col2im: every column value is added back to the input element it came
    from (padding drops out).
    """

    num_bottoms = 1
    num_tops = 1

    def setup(self, bottom_shapes):
        self.channel_axis, self.geom = conv_geometry(self.param.convolution_param, bottom_shapes[0], self)

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        if not hasattr(self, "geom"):
            self.setup(bottom_shapes)
        ax = self.channel_axis
        if len(shape) != ax + 1 + self.geom.ndim:
            raise self.error(f"bottom has {len(shape)} axes, the layer was set up for {ax + 1 + self.geom.ndim}")
        try:
            out = self.geom.output_shape(shape[ax + 1:])
        except ValueError as exc:
            raise self.error(str(exc)) from None
        return [shape[:ax] + (shape[ax] * self.geom.kernel_count,) + out]

    def _flat_shape(self, shape) -> tuple:
        ax = self.channel_axis
        return (math.prod(shape[:ax]),) + tuple(shape[ax:])

    def forward(self, bottoms):
        x = bottoms[0]
        top_shape = self.reshape([x.shape])[0]
        xf = x.reshape(self._flat_shape(x.shape))
        col = im2col(xf, self.geom, top_shape[self.channel_axis + 1:], self.xp)  # (N, C, *kernel, *out)
        return [col.reshape(top_shape)]

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        x = bottoms[0]
        dy = top_diffs[0]
        if not propagate_down[0]:
            return [None]
        if dy is None:
            return [self.xp.zeros_like(x)]
        xf_shape = self._flat_shape(x.shape)
        nd = self.geom.ndim
        out_spatial = tuple(dy.shape[self.channel_axis + 1:])
        col = dy.reshape(xf_shape[:2] + tuple(self.geom.kernel) + out_spatial)
        dx = col2im(col, self.geom, xf_shape[2:2 + nd], self.xp)
        return [dx.reshape(x.shape)]
