"""Layers that move data around without arithmetic of their own (Caffe 1.0 semantics).

Concat, Eltwise, Split, Slice, Flatten, Reshape, Crop, ArgMax, Silence.

Pass-through layers (Split, Reshape, Flatten, one-bottom Concat, one-top Slice)
return the bottom array itself or a view of it, as Caffe shares the memory of
such blobs. Their backward may likewise return the top diff (or a view of it);
callers must not modify returned gradients in place.
"""
from __future__ import annotations

import math

from ..backend import is_numpy
from ..proto import caffe_pb2
from .base import Layer, register

_SUM, _PROD, _MAX = caffe_pb2.EltwiseParameter.SUM, caffe_pb2.EltwiseParameter.PROD, caffe_pb2.EltwiseParameter.MAX


def _count(shape, start=0, end=None) -> int:
    return math.prod(shape[start:end])


def _axis_slice(ndim: int, axis: int, start: int, stop: int) -> tuple:
    index = [slice(None)] * ndim
    index[axis] = slice(start, stop)
    return tuple(index)


@register("Concat")
class Concat(Layer):
    """Join bottoms along ``axis`` (or the deprecated ``concat_dim``)."""

    num_bottoms = (1, None)
    num_tops = 1

    def setup(self, bottom_shapes):
        p = self.param.concat_param
        if p.HasField("axis") and p.HasField("concat_dim"):
            raise self.error("give either concat_param.axis or concat_dim, not both")

    def _axis(self, ndim: int) -> int:
        p = self.param.concat_param
        if p.HasField("concat_dim"):
            if p.concat_dim >= ndim:
                raise self.error(f"concat_dim {p.concat_dim} is out of range for a {ndim}-axis blob")
            return int(p.concat_dim)
        return self.canonical_axis(p.axis, ndim)

    def reshape(self, bottom_shapes):
        first = tuple(bottom_shapes[0])
        axis = self._axis(len(first))
        total = 0
        for i, shape in enumerate(bottom_shapes):
            if len(shape) != len(first):
                raise self.error(f"bottom {i} has {len(shape)} axes, bottom 0 has {len(first)}; "
                                 "all inputs must have the same number of axes")
            for j, (a, b) in enumerate(zip(first, shape)):
                if j != axis and a != b:
                    raise self.error(f"bottom {i} has shape {tuple(shape)}, bottom 0 {first}: "
                                     f"all axes but the concat axis {axis} must match")
            total += shape[axis]
        self.axis = axis
        top = list(first)
        top[axis] = total
        return [tuple(top)]

    def forward(self, bottoms):
        if len(bottoms) == 1:
            return [bottoms[0]]
        axis = self._axis(bottoms[0].ndim)
        return [self.xp.concatenate(bottoms, axis=axis)]

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        diff = top_diffs[0]
        if diff is None:
            return [None] * len(bottoms)
        if len(bottoms) == 1:
            return [diff if propagate_down[0] else None]
        axis = self._axis(diff.ndim)
        out, start = [], 0
        for bottom, prop in zip(bottoms, propagate_down):
            n = bottom.shape[axis]
            out.append(self.xp.ascontiguousarray(diff[_axis_slice(diff.ndim, axis, start, start + n)])
                       if prop else None)
            start += n
        return out


@register("Eltwise")
class Eltwise(Layer):
    """Element-wise SUM (with ``coeff``), PROD or MAX of two or more equally shaped bottoms."""

    num_bottoms = (2, None)
    num_tops = 1

    def setup(self, bottom_shapes):
        p = self.param.eltwise_param
        self.op = p.operation
        if len(p.coeff) not in (0, len(bottom_shapes)):
            raise self.error(f"eltwise_param has {len(p.coeff)} coeff values for {len(bottom_shapes)} "
                             "bottoms; give one per bottom")
        if self.op == _PROD and len(p.coeff):
            raise self.error("eltwise_param.coeff is only allowed for operation SUM")
        self.coeffs = [float(c) for c in p.coeff] or [1.0] * len(bottom_shapes)
        self.stable_prod_grad = p.stable_prod_grad

    def reshape(self, bottom_shapes):
        first = tuple(bottom_shapes[0])
        for i, shape in enumerate(bottom_shapes[1:], 1):
            if tuple(shape) != first:
                raise self.error(f"bottom {i} has shape {tuple(shape)}, bottom 0 {first}; shapes must match")
        return [first]

    def _max_index(self, bottoms):
        """Caffe's argmax mask: the first pair goes to bottom 1 on ties, later bottoms need to be greater."""
        xp = self.xp
        first_wins = bottoms[0] > bottoms[1]
        top = xp.where(first_wins, bottoms[0], bottoms[1])
        index = xp.where(first_wins, 0, 1).astype("int32")
        for k, b in enumerate(bottoms[2:], 2):
            greater = b > top
            top = xp.where(greater, b, top)
            index = xp.where(greater, k, index).astype("int32")
        return top, index

    def forward(self, bottoms):
        if self.op == _SUM:
            top = bottoms[0] * self.coeffs[0] if self.coeffs[0] != 1.0 else bottoms[0].copy()
            for c, b in zip(self.coeffs[1:], bottoms[1:]):
                top += b * c if c != 1.0 else b
            return [top]
        if self.op == _PROD:
            top = bottoms[0] * bottoms[1]
            for b in bottoms[2:]:
                top *= b
            return [top]
        if self.op == _MAX:
            return [self._max_index(bottoms)[0]]
        raise self.error(f"unknown eltwise operation {self.op}")

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        diff = top_diffs[0]
        if diff is None:
            return [None] * len(bottoms)
        index = self._max_index(bottoms)[1] if self.op == _MAX else None
        out = []
        for i, (bottom, prop) in enumerate(zip(bottoms, propagate_down)):
            if not prop:
                out.append(None)
            elif self.op == _SUM:
                c = self.coeffs[i]
                out.append(diff * c if c != 1.0 else diff.copy())
            elif self.op == _PROD:
                if self.stable_prod_grad:
                    others = [b for j, b in enumerate(bottoms) if j != i]
                    grad = others[0].copy()
                    for b in others[1:]:
                        grad *= b
                else:
                    grad = tops[0] / bottom
                out.append(grad * diff)
            else:
                out.append(diff * (index == i).astype(diff.dtype))
        return out


@register("Split")
class Split(Layer):
    """One blob, several consumers: every top IS the bottom array; backward sums the top diffs."""

    num_bottoms = 1
    num_tops = (1, None)

    def reshape(self, bottom_shapes):
        return [tuple(bottom_shapes[0])] * max(len(self.param.top), 1)

    def forward(self, bottoms):
        return [bottoms[0]] * max(len(self.param.top), 1)

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        if not propagate_down[0]:
            return [None]
        diffs = [d for d in top_diffs if d is not None]
        if not diffs:
            return [None]
        total = diffs[0] if len(diffs) == 1 else diffs[0] + diffs[1]
        for d in diffs[2:]:
            total += d
        return [total]


@register("Slice")
class Slice(Layer):
    """Cut a bottom along ``axis`` (or the deprecated ``slice_dim``) at ``slice_point``s, or evenly."""

    num_bottoms = 1
    num_tops = (1, None)

    def _axis(self, ndim: int) -> int:
        p = self.param.slice_param
        if p.HasField("slice_dim"):
            if p.slice_dim >= ndim:
                raise self.error(f"slice_dim {p.slice_dim} is out of range for a {ndim}-axis blob")
            return int(p.slice_dim)
        return self.canonical_axis(p.axis, ndim)

    def _sizes(self, shape) -> tuple[int, list[int]]:
        axis = self._axis(len(shape))
        n_tops = max(len(self.param.top), 1)
        length = shape[axis]
        points = list(self.param.slice_param.slice_point)
        if points:
            if len(points) != n_tops - 1:
                raise self.error(f"{len(points)} slice_point values for {n_tops} tops; "
                                 "give one fewer than the number of tops")
            if n_tops > length:
                raise self.error(f"{n_tops} tops cannot slice an axis of size {length}")
            sizes, prev = [], 0
            for p in points:
                if p <= prev:
                    raise self.error(f"slice_point values must increase and be > 0, got {points}")
                sizes.append(p - prev)
                prev = p
            sizes.append(length - prev)
            if sizes[-1] < 0:
                raise self.error(f"slice_point {prev} is beyond the axis size {length}")
        else:
            if length % n_tops:
                raise self.error(f"{n_tops} tops do not evenly divide the slice axis of size {length}")
            sizes = [length // n_tops] * n_tops
        return axis, sizes

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        axis, sizes = self._sizes(shape)
        return [shape[:axis] + (s,) + shape[axis + 1:] for s in sizes]

    def forward(self, bottoms):
        x = bottoms[0]
        axis, sizes = self._sizes(x.shape)
        if len(sizes) == 1:
            return [x]
        out, start = [], 0
        for s in sizes:
            out.append(self.xp.ascontiguousarray(x[_axis_slice(x.ndim, axis, start, start + s)]))
            start += s
        return out

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        if not propagate_down[0] or all(d is None for d in top_diffs):
            return [None]
        x = bottoms[0]
        axis, sizes = self._sizes(x.shape)
        if len(sizes) == 1:
            return [top_diffs[0]]
        parts = [d if d is not None else self.xp.zeros(t.shape, dtype=x.dtype)
                 for d, t in zip(top_diffs, tops)]
        return [self.xp.concatenate(parts, axis=axis)]


class _ViewLayer(Layer):
    """A layer whose top is its bottom under the shape ``reshape`` gives: a view forward,
    the top gradient viewed back backward."""

    num_bottoms = 1
    num_tops = 1

    def forward(self, bottoms):
        return [bottoms[0].reshape(self.reshape([bottoms[0].shape])[0])]

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        if not propagate_down[0] or top_diffs[0] is None:
            return [None]
        return [top_diffs[0].reshape(bottoms[0].shape)]


@register("Flatten")
class Flatten(_ViewLayer):
    """Merge axes ``axis`` .. ``end_axis`` into one (a view of the bottom)."""

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        p = self.param.flatten_param
        start = self.canonical_axis(p.axis, len(shape))
        end = self.canonical_axis(p.end_axis, len(shape), "end_axis")
        if end + 1 < start:
            raise self.error(f"end_axis {p.end_axis} comes before axis {p.axis}")
        return [shape[:start] + (_count(shape, start, end + 1),) + shape[end + 1:]]


@register("Reshape")
class Reshape(_ViewLayer):
    """New shape for the same data: 0 copies a bottom dimension, -1 is inferred; ``axis``/``num_axes``
    choose the range of bottom axes that ``shape`` replaces."""

    def setup(self, bottom_shapes):
        dims = list(self.param.reshape_param.shape.dim)
        self.copy_axes = [i for i, d in enumerate(dims) if d == 0]
        inferred = [i for i, d in enumerate(dims) if d == -1]
        bad = [d for d in dims if d < -1]
        if bad:
            raise self.error(f"reshape_param.shape has dimension {bad[0]}; use > 0, 0 (copy) or -1 (infer)")
        if len(inferred) > 1:
            raise self.error("reshape_param.shape has several -1 dimensions; at most one may be inferred")
        self.inferred_axis = inferred[0] if inferred else -1
        self.constant_count = math.prod(d for d in dims if d > 0)
        self.dims = dims

    def reshape(self, bottom_shapes):
        if not hasattr(self, "dims"):
            self.setup(bottom_shapes)
        shape = tuple(bottom_shapes[0])
        ndim = len(shape)
        p = self.param.reshape_param
        start = p.axis if p.axis >= 0 else ndim + p.axis + 1
        if not 0 <= start <= ndim:
            raise self.error(f"reshape_param.axis {p.axis} is out of range for a {ndim}-axis bottom")
        if p.num_axes < -1:
            raise self.error(f"reshape_param.num_axes must be >= 0, or -1 for all; got {p.num_axes}")
        end = ndim if p.num_axes == -1 else start + p.num_axes
        if end > ndim:
            raise self.error(f"axis {start} + num_axes {p.num_axes} exceeds the bottom's {ndim} axes")
        top = list(shape[:start]) + list(self.dims) + list(shape[end:])
        for i in self.copy_axes:
            if start + i >= ndim:
                raise self.error("reshape_param.shape has a 0 with no corresponding bottom axis to copy")
            top[start + i] = shape[start + i]
        count = _count(shape)
        if self.inferred_axis >= 0:
            explicit = self.constant_count * _count(shape, 0, start) * _count(shape, end)
            for i in self.copy_axes:
                explicit *= top[start + i]
            if explicit == 0 or count % explicit:
                raise self.error(f"cannot infer the -1 dimension: bottom count {count} is not a multiple "
                                 f"of the other dimensions' product {explicit}")
            top[start + self.inferred_axis] = count // explicit
        if _count(top) != count:
            raise self.error(f"output shape {tuple(top)} has {_count(top)} elements, bottom {shape} has {count}")
        return [tuple(int(d) for d in top)]



@register("Crop")
class Crop(Layer):
    """Crop bottom 0 to the shape of bottom 1 on axes >= ``axis``, starting at ``offset``."""

    num_bottoms = 2
    num_tops = 1

    def setup(self, bottom_shapes):
        p = self.param.crop_param
        ndim = len(bottom_shapes[0])
        start = self.canonical_axis(p.axis, ndim)
        if len(p.offset) > 1 and start + len(p.offset) != ndim:
            raise self.error(f"{len(p.offset)} crop offsets for axes {start}..{ndim - 1}; give one offset, "
                             "or one per cropped axis")

    def _offsets(self, shape, ref) -> list[int]:
        p = self.param.crop_param
        ndim = len(shape)
        if len(ref) != ndim:
            raise self.error(f"bottom 1 has {len(ref)} axes, bottom 0 has {ndim}")
        start = self.canonical_axis(p.axis, ndim)
        if len(p.offset) > 1 and start + len(p.offset) != ndim:
            raise self.error(f"{len(p.offset)} crop offsets for axes {start}..{ndim - 1}; give one offset, "
                             "or one per cropped axis")
        offsets = []
        for i in range(ndim):
            off = 0
            if i >= start:
                if len(p.offset) == 1:
                    off = int(p.offset[0])
                elif len(p.offset) > 1:
                    off = int(p.offset[i - start])
                if shape[i] - off < ref[i]:
                    raise self.error(f"crop of axis {i} is out of bounds: size {ref[i]} at offset {off} "
                                     f"in a dimension of {shape[i]}")
            offsets.append(off)
        return offsets

    def _region(self, shape, ref):
        p = self.param.crop_param
        start = self.canonical_axis(p.axis, len(shape))
        offsets = self._offsets(shape, ref)
        return tuple(slice(None) if i < start else slice(o, o + ref[i]) for i, o in enumerate(offsets))

    def reshape(self, bottom_shapes):
        shape, ref = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        self._offsets(shape, ref)
        start = self.canonical_axis(self.param.crop_param.axis, len(shape))
        return [shape[:start] + ref[start:]]

    def forward(self, bottoms):
        region = self._region(bottoms[0].shape, bottoms[1].shape)
        return [self.xp.ascontiguousarray(bottoms[0][region])]

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        diff = top_diffs[0]
        if not propagate_down[0] or diff is None:
            return [None, None]
        grad = self.xp.zeros(bottoms[0].shape, dtype=diff.dtype)
        grad[self._region(bottoms[0].shape, bottoms[1].shape)] = diff
        return [grad, None]  # Caffe never propagates to the reference blob


@register("ArgMax")
class ArgMax(Layer):
    """Indices (and optionally values) of the ``top_k`` largest entries per item or along ``axis``.

    Ties go to the larger index, as Caffe's ``partial_sort`` with ``std::greater`` on
    (value, index) pairs does. No backward.
    """

    num_bottoms = 1
    num_tops = 1

    def setup(self, bottom_shapes):
        p = self.param.argmax_param
        shape = tuple(bottom_shapes[0])
        self.top_k = int(p.top_k)
        if self.top_k < 1:
            raise self.error("argmax_param.top_k must be at least 1")
        if p.HasField("axis"):
            axis = self.canonical_axis(p.axis, len(shape))
            if self.top_k > shape[axis]:
                raise self.error(f"top_k {self.top_k} exceeds the size {shape[axis]} of axis {axis}")
        elif self.top_k > _count(shape, 1):
            raise self.error(f"top_k {self.top_k} exceeds the {_count(shape, 1)} values per item")

    def reshape(self, bottom_shapes):
        p = self.param.argmax_param
        shape = tuple(bottom_shapes[0])
        k = int(p.top_k)
        if p.HasField("axis"):
            axis = self.canonical_axis(p.axis, len(shape))
            top = list(shape)
            top[axis] = k
            return [tuple(top)]
        top = [1] * max(len(shape), 3)
        top[0] = shape[0]
        top[2] = k
        if p.out_max_val:
            top[1] = 2
        return [tuple(top)]

    def _top_k(self, x, axis: int):
        """Indices and values of the k largest along ``axis``, ties to the larger index."""
        xp = self.xp
        k = int(self.param.argmax_param.top_k)
        n = x.shape[axis]
        rev = xp.flip(x, axis=axis)
        # CuPy's argsort is always stable and takes no kind="stable"; NumPy needs it
        stable = {"kind": "stable"} if is_numpy(xp) else {}
        order = xp.argsort(-rev, axis=axis, **stable)
        order = order[_axis_slice(x.ndim, axis, 0, k)]
        values = xp.take_along_axis(rev, order, axis=axis)
        return (n - 1 - order).astype(x.dtype), values

    def forward(self, bottoms):
        x = bottoms[0]
        p = self.param.argmax_param
        top_shape = self.reshape([x.shape])[0]
        if p.HasField("axis"):
            axis = self.canonical_axis(p.axis, x.ndim)
            idx, val = self._top_k(x, axis)
            return [(val if p.out_max_val else idx).reshape(top_shape)]
        flat = x.reshape(x.shape[0], -1)
        idx, val = self._top_k(flat, 1)
        out = self.xp.concatenate([idx, val], axis=1) if p.out_max_val else idx
        return [out.reshape(top_shape)]


@register("Silence")
class Silence(Layer):
    """Consumes its bottoms, produces nothing; backward gives zero gradients."""

    num_bottoms = (1, None)
    num_tops = 0

    def reshape(self, bottom_shapes):
        return []

    def forward(self, bottoms):
        return []

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        return [self.xp.zeros_like(b) if prop else None for b, prop in zip(bottoms, propagate_down)]
