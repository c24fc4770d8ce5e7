"""Softmax, the losses and Accuracy, with Caffe 1.0 semantics.

Loss tops are 0-axis arrays (shape ``()``), as Caffe's loss blobs have no axes.
The net passes ``loss_weight`` (times any upstream factor) as the top diff.
"""
from __future__ import annotations

import math

from ..proto import caffe_pb2
from .base import Layer, register

FLT_MIN = 1.1754943508222875e-38  # Caffe clamps probabilities to FLT_MIN before the log

_NORM = caffe_pb2.LossParameter
_FULL, _VALID, _BATCH_SIZE, _NONE = _NORM.FULL, _NORM.VALID, _NORM.BATCH_SIZE, _NORM.NONE


def softmax(xp, x, axis: int):
    """exp(x - max) / sum(exp(x - max)) along ``axis``."""
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


def _split_axis(shape, axis: int) -> tuple[int, int, int]:
    """(outer, channels, inner) counts around ``axis``."""
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])


@register("Softmax")
class Softmax(Layer):
    num_bottoms = 1
    num_tops = 1

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        self.canonical_axis(self.param.softmax_param.axis, len(shape))
        return [shape]

    def forward(self, bottoms):
        x = bottoms[0]
        return [softmax(self.xp, x, self.canonical_axis(self.param.softmax_param.axis, x.ndim))]

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        diff = top_diffs[0]
        if not propagate_down[0] or diff is None:
            return [None]
        y = tops[0]
        axis = self.canonical_axis(self.param.softmax_param.axis, y.ndim)
        return [(diff - (diff * y).sum(axis=axis, keepdims=True)) * y]


class _LabelLayer(Layer):
    """Shared checks of layers that compare scores (N, ..., C at ``axis``, ...) with integer labels."""

    def _layout(self, score_shape, label_shape, axis_value: int):
        axis = self.canonical_axis(axis_value, len(score_shape))
        outer, channels, inner = _split_axis(tuple(score_shape), axis)
        n_labels = math.prod(label_shape)
        if outer * inner != n_labels:
            raise self.error(
                f"{n_labels} labels for predictions of shape {tuple(score_shape)}: with axis {axis} "
                f"there must be {outer * inner} labels (e.g. N*H*W for (N, C, H, W)), values in 0..{channels - 1}")
        return axis, outer, channels, inner

    def _labels(self, label, outer, inner, channels, ignore):
        """Integer labels as (outer, inner), the valid mask, and the labels clipped for indexing."""
        xp = self.xp
        lab = label.reshape(outer, inner).astype("int64")  # static_cast<int>: truncation
        valid = lab != ignore if ignore is not None else xp.ones(lab.shape, dtype=bool)
        bad = valid & ((lab < 0) | (lab >= channels))
        if bool(bad.any()):
            first = int(lab[bad][0])
            raise self.error(f"label {first} is outside 0..{channels - 1}")
        return lab, valid, xp.where(valid, lab, 0)


@register("SoftmaxWithLoss")
class SoftmaxWithLoss(_LabelLayer):
    """Mean negative log of the softmax probability of the true label.

    Labels equal to ``loss_param.ignore_label`` contribute nothing. The sum is divided
    by the normalizer of ``loss_param.normalization`` (VALID: non-ignored labels,
    FULL: all labels, BATCH_SIZE: outer count, NONE: 1), at least 1. The deprecated
    ``normalize`` (when ``normalization`` is unset) means VALID if true, BATCH_SIZE if
    false. An optional second top returns the probabilities.
    """

    num_bottoms = 2
    num_tops = (1, 2)
    is_loss = True

    def setup(self, bottom_shapes):
        lp = self.param.loss_param
        self.ignore = int(lp.ignore_label) if lp.HasField("ignore_label") else None
        if not lp.HasField("normalization") and lp.HasField("normalize"):
            self.normalization = _VALID if lp.normalize else _BATCH_SIZE
        else:
            self.normalization = lp.normalization
        self.prob = None

    def reshape(self, bottom_shapes):
        score, label = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        if score[:1] != label[:1]:
            raise self.error(f"data {score} and label {label} must have the same first dimension")
        self._layout(score, label, self.param.softmax_param.axis)
        tops = [()]
        if len(self.param.top) >= 2:
            tops.append(score)
        return tops

    def _normalizer(self, outer, inner, valid_count):
        mode = self.normalization
        if mode == _FULL:
            n = outer * inner
        elif mode == _VALID:
            n = valid_count
        elif mode == _BATCH_SIZE:
            n = outer
        elif mode == _NONE:
            n = 1
        else:
            raise self.error(f"unknown loss normalization mode {mode}")
        return max(1.0, float(n))

    def forward(self, bottoms):
        x, label = bottoms
        xp = self.xp
        axis, outer, channels, inner = self._layout(x.shape, label.shape, self.param.softmax_param.axis)
        prob = softmax(xp, x, axis)
        self.prob = prob
        lab, valid, safe = self._labels(label, outer, inner, channels, self.ignore)
        p3 = prob.reshape(outer, channels, inner)
        p_true = xp.take_along_axis(p3, safe[:, None, :], axis=1)[:, 0, :]
        logs = xp.log(xp.maximum(p_true, FLT_MIN))
        count = int(valid.sum())
        loss = -(logs * valid).sum() / self._normalizer(outer, inner, count)
        tops = [xp.asarray(loss, dtype=x.dtype).reshape(())]
        if len(self.param.top) >= 2:
            tops.append(prob)
        return tops

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        x, label = bottoms
        weight = top_diffs[0]
        if not propagate_down[0] or weight is None:
            return [None, None]
        xp = self.xp
        axis, outer, channels, inner = self._layout(x.shape, label.shape, self.param.softmax_param.axis)
        prob = self.prob if self.prob is not None and self.prob.shape == x.shape else softmax(xp, x, axis)
        lab, valid, safe = self._labels(label, outer, inner, channels, self.ignore)
        one_hot = xp.arange(channels).reshape(1, channels, 1) == safe[:, None, :]
        grad = (prob.reshape(outer, channels, inner) - one_hot.astype(x.dtype)) * valid[:, None, :].astype(x.dtype)
        count = int(valid.sum())
        scale = xp.asarray(weight, dtype=x.dtype) / self._normalizer(outer, inner, count)
        return [(grad * scale).reshape(x.shape), None]


@register("EuclideanLoss")
class EuclideanLoss(Layer):
    """sum((a - b)^2) / (2 N), N the first dimension."""

    num_bottoms = 2
    num_tops = 1
    is_loss = True

    def reshape(self, bottom_shapes):
        a, b = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        if a[:1] != b[:1]:
            raise self.error(f"bottoms {a} and {b} must have the same first dimension")
        if math.prod(a[1:]) != math.prod(b[1:]):
            raise self.error(f"bottoms {a} and {b} must have the same number of values per item")
        return [()]

    def forward(self, bottoms):
        a, b = bottoms
        d = a - b.reshape(a.shape)
        loss = (d * d).sum() / a.shape[0] / 2
        return [self.xp.asarray(loss, dtype=a.dtype).reshape(())]

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        weight = top_diffs[0]
        a, b = bottoms
        if weight is None:
            return [None, None]
        d = a - b.reshape(a.shape)
        alpha = self.xp.asarray(weight, dtype=a.dtype) / a.shape[0]
        out = []
        for bottom, sign, prop in zip(bottoms, (1.0, -1.0), propagate_down):
            out.append((d * (sign * alpha)).reshape(bottom.shape) if prop else None)
        return out


@register("Accuracy")
class Accuracy(_LabelLayer):
    """Top-k accuracy, Caffe 1.0 rule: an item counts as correct when fewer than ``top_k`` other
    classes score >= the true class (so a tie with the true class counts against it). Labels
    equal to ``accuracy_param.ignore_label`` are skipped. An optional second top gives the
    accuracy per class (0 for classes absent from the batch). No backward."""

    num_bottoms = 2
    num_tops = (1, 2)

    def setup(self, bottom_shapes):
        p = self.param.accuracy_param
        self.top_k = int(p.top_k)
        self.ignore = int(p.ignore_label) if p.HasField("ignore_label") else None

    def reshape(self, bottom_shapes):
        score, label = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        n_labels = math.prod(label)
        if n_labels == 0 or self.top_k > math.prod(score) // n_labels:
            raise self.error(f"top_k {self.top_k} must not exceed the number of classes")
        axis, outer, channels, inner = self._layout(score, label, self.param.accuracy_param.axis)
        tops = [()]
        if len(self.param.top) >= 2:
            tops.append((channels,))
        return tops

    def forward(self, bottoms):
        x, label = bottoms
        xp = self.xp
        axis, outer, channels, inner = self._layout(x.shape, label.shape, self.param.accuracy_param.axis)
        lab, valid, safe = self._labels(label, outer, inner, channels, self.ignore)
        s3 = x.reshape(outer, channels, inner)
        true_score = xp.take_along_axis(s3, safe[:, None, :], axis=1)
        # the true class itself scores >= itself (unless NaN), hence the -1
        better = (s3 >= true_score).sum(axis=1) - 1
        correct = (better < self.top_k) & valid
        count = int(valid.sum())
        hits = correct.sum()
        acc = hits / count if count else hits * 0
        tops = [xp.asarray(acc, dtype=x.dtype).reshape(())]
        if len(self.param.top) >= 2:
            nums = xp.bincount(lab[valid].reshape(-1), minlength=channels).astype(x.dtype)
            per_hits = xp.bincount(lab[correct].reshape(-1), minlength=channels).astype(x.dtype)
            per_class = xp.where(nums > 0, per_hits / xp.maximum(nums, 1), 0).astype(x.dtype)
            tops.append(per_class)
        return tops

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        return [None, None]  # not differentiable; Caffe never asks (its loss weight is 0)
