"""The smaller layers of Caffe's final schema (BVLC master, which Caffe-Ristretto merged in
2019) that no reference net of ours uses, each a few lines after Caffe's ``*_layer.cpp``:

Clip, Swish, Threshold (neurons); Tile, Reduction, MVN (reshaping and statistics);
Embed, Parameter (learnable lookups); Filter, BatchReindex (row selection); SPP (a
pyramid of Pooling layers, flattened and joined).
"""
from __future__ import annotations

import math

from ..proto import caffe_pb2
from .activations import NeuronLayer
from .base import Layer, register
from .fillers import fill
from .pooling import Pooling



# -- neurons ---------------------------------------------------------------------------

@register("Clip")
class Clip(NeuronLayer):
    """max(min, min(x, max)); the gradient passes where min <= x <= max."""

    def setup(self, bottom_shapes):
        p = self.param.clip_param
        if not (p.HasField("min") and p.HasField("max")):
            raise self.error("clip_param needs both min and max")
        self.lo, self.hi = float(p.min), float(p.max)

    def forward(self, bottoms):
        x = bottoms[0]
        dt = x.dtype.type
        return [self.xp.maximum(dt(self.lo), self.xp.minimum(x, dt(self.hi)))]

    def bottom_diff(self, diff, x, y):
        return diff * ((x >= self.lo) & (x <= self.hi)).astype(diff.dtype)


@register("Swish")
class Swish(NeuronLayer):
    """x * sigmoid(beta x) (swish_param.beta, default 1)."""

    def setup(self, bottom_shapes):
        self.beta = float(self.param.swish_param.beta)

    def forward(self, bottoms):
        x = bottoms[0]
        xp = self.xp
        z = x * x.dtype.type(self.beta)
        e = xp.exp(-xp.abs(z))
        self._sigmoid = xp.where(z >= 0, 1, e) / (1 + e)  # kept for backward, as Caffe keeps it
        return [x * self._sigmoid]

    def bottom_diff(self, diff, x, y):
        s, b = self._sigmoid, self.beta
        return diff * (b * y + s * (1 - b * y))


@register("Threshold")
class Threshold(NeuronLayer):
    """1 where x > threshold, else 0. Caffe has no backward for it; neither do we."""

    def setup(self, bottom_shapes):
        self.threshold = float(self.param.threshold_param.threshold)

    def forward(self, bottoms):
        x = bottoms[0]
        return [(x > x.dtype.type(self.threshold)).astype(x.dtype)]

    def bottom_diff(self, diff, x, y):
        raise self.error("has no gradient (Caffe's Threshold layer has no backward either)")


# -- reshaping and statistics -----------------------------------------------------------

@register("Tile")
class Tile(Layer):
    """Repeat the bottom ``tiles`` times along ``axis`` (whole blocks, like numpy.tile)."""

    num_bottoms = 1
    num_tops = 1

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        p = self.param.tile_param
        if not p.HasField("tiles"):
            raise self.error("tile_param.tiles is required")
        if p.tiles <= 0:
            raise self.error(f"tiles must be positive, got {p.tiles}")
        self.axis = self.canonical_axis(p.axis, len(shape))
        self.tiles = int(p.tiles)
        return [shape[:self.axis] + (shape[self.axis] * self.tiles,) + shape[self.axis + 1:]]

    def forward(self, bottoms):
        x = bottoms[0]
        outer = math.prod(x.shape[:self.axis])
        block = x.reshape(outer, 1, -1)
        out = self.xp.broadcast_to(block, (outer, self.tiles, block.shape[2]))
        return [self.xp.ascontiguousarray(out).reshape(self.reshape([x.shape])[0])]

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        if not propagate_down[0] or top_diffs[0] is None:
            return [None]
        x = bottoms[0]
        outer = math.prod(x.shape[:self.axis])
        return [top_diffs[0].reshape(outer, self.tiles, -1).sum(axis=1).reshape(x.shape)]


SUM, ASUM, SUMSQ, MEAN = 1, 2, 3, 4  # ReductionParameter.ReductionOp


@register("Reduction")
class Reduction(Layer):
    """Reduce every axis from ``axis`` on (SUM, ASUM, SUMSQ or MEAN), times ``coeff``; the top
    keeps the axes before ``axis`` (axis 0: a 0-axis blob)."""

    num_bottoms = 1
    num_tops = 1

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        p = self.param.reduction_param
        self.op = int(p.operation)
        if self.op not in (SUM, ASUM, SUMSQ, MEAN):
            raise self.error(f"unknown reduction operation {self.op}")
        self.axis = self.canonical_axis(p.axis, len(shape)) if shape else 0
        self.coeff = float(p.coeff)
        return [shape[:self.axis]]

    def forward(self, bottoms):
        x = bottoms[0]
        flat = x.reshape(x.shape[:self.axis] + (-1,))
        xp = self.xp
        if self.op == SUM:
            r = flat.sum(axis=-1)
        elif self.op == ASUM:
            r = xp.abs(flat).sum(axis=-1)
        elif self.op == SUMSQ:
            r = (flat * flat).sum(axis=-1)
        else:
            r = flat.sum(axis=-1) / x.dtype.type(flat.shape[-1])
        return [xp.asarray(r * x.dtype.type(self.coeff), dtype=x.dtype)]

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        if not propagate_down[0] or top_diffs[0] is None:
            return [None]
        x = bottoms[0]
        flat = x.reshape(x.shape[:self.axis] + (-1,))
        d = top_diffs[0].reshape(top_diffs[0].shape + (1,)) * x.dtype.type(self.coeff)
        if self.op == SUM:
            g = self.xp.broadcast_to(d, flat.shape)
        elif self.op == ASUM:
            g = d * self.xp.sign(flat)
        elif self.op == SUMSQ:
            g = d * 2 * flat
        else:
            g = self.xp.broadcast_to(d / x.dtype.type(flat.shape[-1]), flat.shape)
        return [self.xp.ascontiguousarray(g).reshape(x.shape)]


@register("MVN")
class MVN(Layer):
    """Subtract the mean per sample and channel (``across_channels``: per sample) and, with
    ``normalize_variance``, divide by sqrt(variance) + eps, as mvn_layer.cpp does."""

    num_bottoms = 1
    num_tops = 1

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        if len(shape) < 2:
            raise self.error(f"bottom must have at least 2 axes, got shape {shape}")
        return [shape]

    def _rows(self, a):
        p = self.param.mvn_param
        return a.reshape(a.shape[0] if p.across_channels else a.shape[0] * a.shape[1], -1)

    def forward(self, bottoms):
        x = bottoms[0]
        p = self.param.mvn_param
        rows = self._rows(x)
        centered = rows - rows.mean(axis=1, keepdims=True)
        if not p.normalize_variance:
            return [centered.reshape(x.shape)]
        self._std = self.xp.sqrt((centered * centered).mean(axis=1, keepdims=True)) + x.dtype.type(p.eps)
        return [(centered / self._std).reshape(x.shape)]

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        if not propagate_down[0] or top_diffs[0] is None:
            return [None]
        x = bottoms[0]
        dy = self._rows(top_diffs[0])
        g = dy - dy.mean(axis=1, keepdims=True)
        if self.param.mvn_param.normalize_variance:
            y = self._rows(tops[0])
            g = (g - y * (y * dy).mean(axis=1, keepdims=True)) / self._std
        return [g.reshape(x.shape)]


# -- learnable lookups ------------------------------------------------------------------

@register("Embed")
class Embed(Layer):
    """A lookup table: integer bottom values in [0, input_dim) pick rows of the (input_dim,
    num_output) weight, plus the bias; the top gets a last axis of num_output."""

    num_bottoms = 1
    num_tops = 1

    def setup(self, bottom_shapes):
        p = self.param.embed_param
        if p.num_output <= 0 or p.input_dim <= 0:
            raise self.error(f"embed_param needs positive num_output and input_dim, got {p.num_output} and "
                             f"{p.input_dim}")
        self.n_out, self.n_in, self.bias_term = int(p.num_output), int(p.input_dim), bool(p.bias_term)
        self.blobs = [fill(p.weight_filler, (self.n_in, self.n_out), self.backend)]
        if self.bias_term:
            self.blobs.append(fill(p.bias_filler, (self.n_out,), self.backend))

    def reshape(self, bottom_shapes):
        return [tuple(bottom_shapes[0]) + (self.n_out,)]

    def _indices(self, x):
        xp = self.xp
        idx = x.astype("int64")
        if bool(xp.any(idx != x)) or bool(xp.any(idx < 0)) or bool(xp.any(idx >= self.n_in)):
            raise self.error(f"inputs must be integers in [0, {self.n_in}) (input_dim)")
        return idx

    def forward(self, bottoms):
        out = self.blobs[0][self._indices(bottoms[0])]
        if self.bias_term:
            out = out + self.blobs[1]
        return [out]

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        if propagate_down[0]:
            raise self.error("cannot propagate a gradient to its input (indices), as in Caffe")
        if top_diffs[0] is None:
            return [None]
        from ..backend import scatter_add

        d = top_diffs[0].reshape(-1, self.n_out)
        dw = self.xp.zeros_like(self.blobs[0])
        scatter_add(dw, self._indices(bottoms[0]).reshape(-1), d)
        self.accumulate_param_diffs(dw, d.sum(axis=0) if self.bias_term else None)
        return [None]


@register("Parameter")
class Parameter(Layer):
    """No bottom; its top is its one learnable blob (parameter_param.shape, zeros at first)."""

    num_bottoms = 0
    num_tops = 1

    def setup(self, bottom_shapes):
        shape = tuple(int(d) for d in self.param.parameter_param.shape.dim)
        self.blobs = [self.xp.zeros(shape, dtype="float32")]

    def reshape(self, bottom_shapes):
        return [tuple(self.blobs[0].shape)]

    def forward(self, bottoms):
        return [self.blobs[0]]

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        if top_diffs[0] is not None:
            self.accumulate_param_diffs(top_diffs[0])
        return []


# -- row selection ----------------------------------------------------------------------

@register("Filter")
class Filter(Layer):
    """Keep the items (axis 0) whose selector (the last bottom) is nonzero, in every other
    bottom. The top shapes declared before any data are the bottoms' (as Caffe's first
    reshape); a forward returns only the selected items."""

    num_bottoms = (2, None)
    num_tops = (1, None)

    def reshape(self, bottom_shapes):
        *data, selector = [tuple(s) for s in bottom_shapes]
        if len(self.param.top) != len(data):
            raise self.error(f"needs one top per filtered bottom ({len(data)}), got {len(self.param.top)}")
        if any(d != 1 for d in selector[1:]):
            raise self.error(f"selector blob dimensions must be 1 except the first, got {selector}")
        for s in data:
            if not s or s[0] != selector[0]:
                raise self.error(f"every bottom needs the selector's first dimension {selector[0]}, got {s}")
        return data

    def forward(self, bottoms):
        *data, selector = bottoms
        self._keep = self.xp.nonzero(selector.reshape(-1) != 0)[0]
        return [d[self._keep] for d in data]

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        if propagate_down[-1]:
            raise self.error("cannot propagate a gradient to the selector (the last bottom)")
        out = []
        for d, x, down in zip(top_diffs, bottoms, propagate_down):
            if not down:
                out.append(None)
                continue
            g = self.xp.zeros_like(x)
            if d is not None:
                g[self._keep] = d
            out.append(g)
        return out + [None]


@register("BatchReindex")
class BatchReindex(Layer):
    """top[i] = bottom[0][permut[i]] along axis 0 (permut: the second bottom, 1 axis)."""

    num_bottoms = 2
    num_tops = 1

    def reshape(self, bottom_shapes):
        data, permut = (tuple(s) for s in bottom_shapes)
        if len(permut) != 1:
            raise self.error(f"the index bottom must have 1 axis, got shape {permut}")
        return [permut + data[1:]]

    def _indices(self, x, permut):
        idx = permut.astype("int64")
        if bool(self.xp.any(idx < 0)) or bool(self.xp.any(idx >= x.shape[0])):
            raise self.error(f"indices must lie in [0, {x.shape[0]})")
        return idx

    def forward(self, bottoms):
        x, permut = bottoms
        return [x[self._indices(x, permut)]]

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        if propagate_down[1]:
            raise self.error("cannot propagate a gradient to the indices (the second bottom)")
        if not propagate_down[0] or top_diffs[0] is None:
            return [None, None]
        from ..backend import scatter_add

        x, permut = bottoms
        g = self.xp.zeros_like(x)
        scatter_add(g, self._indices(x, permut), top_diffs[0])
        return [g, None]


# -- spatial pyramid pooling ------------------------------------------------------------

@register("SPP")
class SPP(Layer):
    """Pool the plane into 1, 2x2, 4x4 ... bins (``pyramid_height`` levels) and join the
    flattened results along axis 1; a pyramid of height 1 keeps the pooled (N, C, 1, 1)."""

    num_bottoms = 1
    num_tops = 1

    def _pooling(self, level, h, w):
        """Caffe's SPPLayer::GetPoolingParam: a Pooling layer for one pyramid level."""
        bins = 2 ** level
        kh, kw = -(-h // bins), -(-w // bins)
        lp = caffe_pb2.LayerParameter(name=f"{self.name}/level{level}", type="Pooling")
        pp = lp.pooling_param
        pp.pad_h, pp.pad_w = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
        pp.kernel_h, pp.kernel_w, pp.stride_h, pp.stride_w = kh, kw, kh, kw
        pp.pool = int(self.param.spp_param.pool)
        layer = Pooling(lp, self.phase, self.backend)
        layer.error = self.error  # problems name the SPP layer
        return layer

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        if len(shape) != 4:
            raise self.error(f"input must have 4 axes (num, channels, height, width), got shape {shape}")
        if not self.param.spp_param.HasField("pyramid_height") or self.param.spp_param.pyramid_height < 1:
            raise self.error("spp_param.pyramid_height must be at least 1")
        self.levels = [self._pooling(i, shape[2], shape[3]) for i in range(self.param.spp_param.pyramid_height)]
        outs = []
        for layer in self.levels:
            layer.setup([shape])
            outs.append(layer.reshape([shape])[0])
        if len(outs) == 1:
            return [outs[0]]
        return [(shape[0], sum(math.prod(o[1:]) for o in outs))]

    def forward(self, bottoms):
        x = bottoms[0]
        if getattr(self, "_shape", None) != x.shape:
            self.reshape([x.shape])
            self._shape = x.shape
        tops = [layer.forward([x])[0] for layer in self.levels]
        self._level_shapes = [t.shape for t in tops]
        if len(tops) == 1:
            return tops
        return [self.xp.concatenate([t.reshape(x.shape[0], -1) for t in tops], axis=1)]

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        if not propagate_down[0] or top_diffs[0] is None:
            return [None]
        x = bottoms[0]
        d = top_diffs[0].reshape(x.shape[0], -1)
        grad, start = None, 0
        for layer, s in zip(self.levels, self._level_shapes):
            n = math.prod(s[1:])
            part = self.xp.ascontiguousarray(d[:, start:start + n]).reshape(s)
            start += n
            g = layer.backward([part], [x], [None], [True])[0]
            grad = g if grad is None else grad + g
        return [grad]
