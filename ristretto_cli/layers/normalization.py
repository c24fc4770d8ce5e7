"""BatchNorm, Scale and Bias with Caffe 1.0 semantics.

Caffe's BatchNorm only normalizes; the learned affine part is a following Scale
layer (usually with ``bias_term: true``). BatchNorm's three blobs are the running
sums exactly as Caffe stores them: blobs[0] = sum of means, blobs[1] = sum of
(unbiased) variances, blobs[2] = [scale factor]; the estimates are
blobs[0] / blobs[2] and blobs[1] / blobs[2] (0 when the factor is 0).
"""
from __future__ import annotations

from ..proto.caffe_pb2 import FillerParameter
from .base import TEST, Layer, register
from .fillers import fill


@register("BatchNorm")
class BatchNorm(Layer):
    """(x - mean) / sqrt(var + eps) per channel (axis 1), over the batch and spatial axes.

    ``use_global_stats`` defaults to phase == TEST. With batch statistics, every forward
    also updates the running sums: factor = factor * f + 1, mean_sum = mean + f * mean_sum,
    var_sum = m/(m-1) * var + f * var_sum with f = moving_average_fraction and m the
    number of values per channel.
    """

    num_bottoms = 1
    num_tops = 1

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        p = self.param.batch_norm_param
        self.use_global_stats = p.use_global_stats if p.HasField("use_global_stats") else self.phase == TEST
        self.moving_average_fraction = float(p.moving_average_fraction)
        self.eps = float(p.eps)
        self.channels = 1 if len(shape) == 1 else shape[1]
        xp = self.xp
        self.blobs = [xp.zeros((self.channels,), dtype="float32"),
                      xp.zeros((self.channels,), dtype="float32"),
                      xp.zeros((1,), dtype="float32")]
        for i, spec in enumerate(self.param.param[:3]):
            if spec.lr_mult != 0:
                raise self.error(f"param {i} has lr_mult {spec.lr_mult}; batch normalization statistics "
                                 "cannot be learned (use lr_mult: 0 or leave param out)")
        self._std = None

    def param_multipliers(self):
        # Caffe masks the statistics from the solver by forcing lr_mult 0.
        out = []
        for i in range(len(self.blobs)):
            decay = self.param.param[i].decay_mult if i < len(self.param.param) else 1.0
            out.append((0.0, decay))
        return out

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        channels = 1 if len(shape) == 1 else shape[1]
        if channels != self.channels:
            raise self.error(f"bottom has {channels} channels, the layer was set up for {self.channels}")
        return [shape]

    def _view(self, a):
        return a.reshape(a.shape[0], self.channels, -1)

    def forward(self, bottoms):
        x = bottoms[0]
        xp = self.xp
        x3 = self._view(x)
        if self.use_global_stats:
            factor = float(self.blobs[2].reshape(-1)[0])
            factor = 0.0 if factor == 0 else 1.0 / factor
            mean = self.blobs[0].astype(x.dtype) * factor
            var = self.blobs[1].astype(x.dtype) * factor
            centered = x3 - mean[None, :, None]
        else:
            mean = x3.mean(axis=(0, 2))
            centered = x3 - mean[None, :, None]
            var = (centered * centered).mean(axis=(0, 2))
            f = self.moving_average_fraction
            m = x.size // self.channels
            correction = m / (m - 1) if m > 1 else 1.0
            b0, b1, b2 = self.blobs
            b2 *= f
            b2 += 1
            b0[...] = (mean + f * b0.astype(x.dtype)).astype(b0.dtype)
            b1[...] = (correction * var + f * b1.astype(x.dtype)).astype(b1.dtype)
        std = xp.sqrt(var + self.eps)
        self._std = std
        return [(centered / std[None, :, None]).reshape(x.shape)]

    runs_in_place = True

    def forward_in_place(self, bottoms):
        """With the stored statistics: the same two operations, written into the bottom."""
        if not self.use_global_stats:
            return self.forward(bottoms)
        x = bottoms[0]
        x3 = self._view(x)
        factor = float(self.blobs[2].reshape(-1)[0])
        factor = 0.0 if factor == 0 else 1.0 / factor
        mean = self.blobs[0].astype(x.dtype) * factor
        var = self.blobs[1].astype(x.dtype) * factor
        std = self.xp.sqrt(var + self.eps)
        self._std = std
        x3 -= mean[None, :, None]
        x3 /= std[None, :, None]
        return [x]

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        diff = top_diffs[0]
        if not propagate_down[0] or diff is None:
            return [None]
        x = bottoms[0]
        if self._std is None:
            raise self.error("backward before forward")
        std = self._std[None, :, None]
        d3 = self._view(diff)
        if self.use_global_stats:
            return [(d3 / std).reshape(x.shape)]
        y3 = self._view(tops[0])
        # dE/dx = (dE/dy - mean(dE/dy) - mean(dE/dy * y) * y) / sqrt(var + eps)
        mean_d = d3.mean(axis=(0, 2), keepdims=True)
        mean_dy = (d3 * y3).mean(axis=(0, 2), keepdims=True)
        return [((d3 - mean_d - mean_dy * y3) / std).reshape(x.shape)]


def _param_shape(layer, shape, axis_value, num_axes):
    """Shape of a learned Scale/Bias parameter: bottom axes axis .. axis+num_axes (-1: to the end)."""
    axis = layer.canonical_axis(axis_value, len(shape))
    if num_axes < -1:
        raise layer.error(f"num_axes must be non-negative, or -1 to extend to the end; got {num_axes}")
    if num_axes >= 0 and len(shape) < axis + num_axes:
        raise layer.error(f"axis {axis} + num_axes {num_axes} exceeds the bottom's {len(shape)} axes")
    return tuple(shape[axis:] if num_axes == -1 else shape[axis:axis + num_axes])


def _broadcast_axis(layer, shape, param_shape, axis_value) -> int:
    """The bottom axis where a Scale/Bias parameter starts, checked against the bottom shape."""
    axis = 0 if len(param_shape) == 0 else layer.canonical_axis(axis_value, len(shape))
    if len(shape) < axis + len(param_shape) or tuple(shape[axis:axis + len(param_shape)]) != tuple(param_shape):
        raise layer.error(f"parameter of shape {tuple(param_shape)} does not match bottom {tuple(shape)} "
                          f"at axis {axis}")
    return axis


def _expand(a, axis: int, ndim: int):
    """Reshape parameter ``a`` so it broadcasts against an ``ndim``-axis blob from ``axis`` on."""
    return a.reshape((1,) * axis + tuple(a.shape) + (1,) * (ndim - axis - a.ndim))


def _reduce_to(grad, axis: int, n: int):
    """Sum ``grad`` over every axis outside axis .. axis+n."""
    axes = tuple(range(axis)) + tuple(range(axis + n, grad.ndim))
    return grad.sum(axis=axes) if axes else grad


@register("Bias")
class Bias(Layer):
    """top = bottom[0] + b, b a learned blob or bottom[1], broadcast from ``axis`` over ``num_axes``."""

    num_bottoms = (1, 2)
    num_tops = 1

    def setup(self, bottom_shapes):
        if len(bottom_shapes) == 1:
            p = self.param.bias_param
            shape = _param_shape(self, tuple(bottom_shapes[0]), p.axis, p.num_axes)
            self.blobs = [fill(p.filler, shape, self.backend)]

    def _bias_shape(self, bottom_shapes):
        return tuple(bottom_shapes[1]) if len(bottom_shapes) > 1 else tuple(self.blobs[0].shape)

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        _broadcast_axis(self, shape, self._bias_shape(bottom_shapes), self.param.bias_param.axis)
        return [shape]

    def forward(self, bottoms):
        x = bottoms[0]
        b = bottoms[1] if len(bottoms) > 1 else self.blobs[0]
        axis = _broadcast_axis(self, x.shape, b.shape, self.param.bias_param.axis)
        return [x + _expand(b.astype(x.dtype, copy=False), axis, x.ndim)]

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        diff = top_diffs[0]
        if diff is None:
            return [None] * len(bottoms)
        x = bottoms[0]
        b = bottoms[1] if len(bottoms) > 1 else self.blobs[0]
        axis = _broadcast_axis(self, x.shape, b.shape, self.param.bias_param.axis)
        out = [diff if propagate_down[0] else None]
        grad = _reduce_to(diff, axis, b.ndim).reshape(b.shape)
        if len(bottoms) > 1:
            out.append(grad if propagate_down[1] else None)
        else:
            self.accumulate_param_diffs(grad)
        return out


@register("Scale")
class Scale(Layer):
    """top = bottom[0] * s (+ bias), s a learned blob (default 1) or bottom[1], broadcast from
    ``axis`` over ``num_axes``. blobs: [scale, bias] with one bottom, [bias] with two
    (bias only with ``bias_term``)."""

    num_bottoms = (1, 2)
    num_tops = 1

    def setup(self, bottom_shapes):
        p = self.param.scale_param
        shape = tuple(bottom_shapes[0])
        self.blobs = []
        if len(bottom_shapes) == 1:
            scale_shape = _param_shape(self, shape, p.axis, p.num_axes)
            if p.HasField("filler"):
                filler = p.filler
            else:
                filler = FillerParameter(type="constant", value=1.0)
            self.blobs.append(fill(filler, scale_shape, self.backend))
        if p.bias_term:
            bias_axes = len(bottom_shapes[1]) if len(bottom_shapes) > 1 else p.num_axes
            bias_shape = _param_shape(self, shape, p.axis, bias_axes)
            self.blobs.append(fill(p.bias_filler, bias_shape, self.backend))

    def _parts(self, bottoms_or_shapes, shapes: bool):
        two = len(bottoms_or_shapes) > 1
        blobs = self.blobs if shapes else self.compute_params()
        bias = blobs[-1] if self.param.scale_param.bias_term else None
        if two:
            scale = bottoms_or_shapes[1]
            scale_shape = tuple(scale) if shapes else tuple(scale.shape)
        else:
            scale = blobs[0]
            scale_shape = tuple(scale.shape)
        return scale, scale_shape, bias

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        axis_value = self.param.scale_param.axis
        _, scale_shape, bias = self._parts(bottom_shapes, True)
        _broadcast_axis(self, shape, scale_shape, axis_value)
        if bias is not None:
            _broadcast_axis(self, shape, tuple(bias.shape), axis_value)
        return [shape]

    def forward(self, bottoms):
        x = bottoms[0]
        axis_value = self.param.scale_param.axis
        scale, scale_shape, bias = self._parts(bottoms, False)
        axis = _broadcast_axis(self, x.shape, scale_shape, axis_value)
        y = x * _expand(scale.astype(x.dtype, copy=False), axis, x.ndim)
        if bias is not None:
            baxis = _broadcast_axis(self, x.shape, bias.shape, axis_value)
            y += _expand(bias.astype(x.dtype, copy=False), baxis, x.ndim)
        return [y]

    runs_in_place = True

    def forward_in_place(self, bottoms):
        if len(bottoms) != 1:
            return self.forward(bottoms)
        x = bottoms[0]
        axis_value = self.param.scale_param.axis
        scale, scale_shape, bias = self._parts(bottoms, False)
        axis = _broadcast_axis(self, x.shape, scale_shape, axis_value)
        x *= _expand(scale.astype(x.dtype, copy=False), axis, x.ndim)
        if bias is not None:
            baxis = _broadcast_axis(self, x.shape, bias.shape, axis_value)
            x += _expand(bias.astype(x.dtype, copy=False), baxis, x.ndim)
        return [x]

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        diff = top_diffs[0]
        if diff is None:
            return [None] * len(bottoms)
        x = bottoms[0]
        axis_value = self.param.scale_param.axis
        scale, scale_shape, bias = self._parts(bottoms, False)
        axis = _broadcast_axis(self, x.shape, scale_shape, axis_value)
        grads = [None] * len(self.blobs)  # [scale, bias] with one bottom, [bias] with two
        if bias is not None:
            baxis = _broadcast_axis(self, x.shape, bias.shape, axis_value)
            grads[-1] = _reduce_to(diff, baxis, bias.ndim)
        out = [diff * _expand(scale.astype(diff.dtype, copy=False), axis, x.ndim) if propagate_down[0] else None]
        two = len(bottoms) > 1
        if not two or propagate_down[1]:
            grad = _reduce_to(diff * x, axis, len(scale_shape)).reshape(scale_shape)
            if two:
                out.append(grad)
            else:
                grads[0] = grad
        elif two:
            out.append(None)
        self.accumulate_param_diffs(*grads)
        return out
