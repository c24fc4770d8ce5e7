"""Softmax, the losses and Accuracy, with Caffe 1.0 semantics (tag 1.0 where master differs).

Loss tops are 0-axis arrays (shape ``()``), as Caffe's loss blobs have no axes.
The net passes ``loss_weight`` (times any upstream factor) as the top diff.
"""
from __future__ import annotations

import math

from ..caffe.blobproto import read_binaryproto
from ..proto import caffe_pb2
from .base import Layer, register

FLT_MIN = 1.1754943508222875e-38  # Caffe clamps probabilities to FLT_MIN before the log
KLOG_THRESHOLD = 1e-20  # Caffe's kLOG_THRESHOLD (loss_layer.hpp), the clamp of the other losses

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


def loss_normalizer(layer: Layer, mode, outer: int, inner: int, valid_count: int) -> float:
    """Caffe's ``get_normalizer``: the divisor of a summed loss for ``loss_param.normalization``
    (FULL: outer * inner, VALID: the non-ignored count, BATCH_SIZE: outer, NONE: 1), at least 1
    so that a batch whose labels are all ignored gives 0, not NaN."""
    if mode == _FULL:
        n = outer * inner
    elif mode == _VALID:
        n = valid_count
    elif mode == _BATCH_SIZE:
        n = outer
    elif mode == _NONE:
        n = 1
    else:
        raise layer.error(f"unknown loss normalization mode {mode}")
    return max(1.0, float(n))


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


class _LossLayer(Layer):
    """Caffe's LossLayer: a 0-axis loss top weighted 1 by default, the first dimensions of
    the prediction and the label equal, and no gradient for the label (bottom 1): a
    ``force_backward`` net does not ask for it, and asking anyway (``propagate_down``, or
    a label that itself needs a gradient) is an error, as Caffe's LOG(FATAL)."""

    num_bottoms = 2
    num_tops = 1
    is_loss = True
    #: bottoms whose gradient Caffe refuses to compute
    label_bottoms: tuple[int, ...] = (1,)

    def allow_force_backward(self, bottom_index):
        return bottom_index not in self.label_bottoms

    def _check_first_dims(self, bottom_shapes):
        a, b = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        if a[:1] != b[:1]:
            raise self.error(f"data {a} and label {b} must have the same first dimension")
        return a, b

    def _refuse_label_gradient(self, propagate_down):
        for i in self.label_bottoms:
            if i < len(propagate_down) and propagate_down[i]:
                what = "label" if i == 1 else "infogain"
                raise self.error(f"cannot backpropagate to {what} inputs (bottom {i})")

    def _weight(self, top_diff, dtype):
        """The loss weight (the top diff), an xp scalar of ``dtype``."""
        return self.xp.asarray(top_diff, dtype=dtype)

    def _scalar(self, value, dtype):
        return self.xp.asarray(value, dtype=dtype).reshape(())


@register("SoftmaxWithLoss")
class SoftmaxWithLoss(_LossLayer, _LabelLayer):
    """Mean negative log of the softmax probability of the true label.

    Labels equal to ``loss_param.ignore_label`` contribute nothing. The sum is divided
    by the normalizer of ``loss_param.normalization`` (VALID: non-ignored labels,
    FULL: all labels, BATCH_SIZE: outer count, NONE: 1), at least 1. The deprecated
    ``normalize`` (when ``normalization`` is unset) means VALID if true, BATCH_SIZE if
    false. An optional second top returns the probabilities. No gradient for the labels.
    """

    num_tops = (1, 2)

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
        return loss_normalizer(self, self.normalization, outer, inner, valid_count)

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
        self._refuse_label_gradient(propagate_down)
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


def _legacy_dims(shape) -> tuple:
    """Caffe's 4-axis num/channels/height/width view of a blob of at most 4 axes."""
    shape = tuple(shape) + (1,) * (4 - len(shape))
    return shape[:4]


def _per_item_labels(layer: Layer, data_shape, label_shape) -> None:
    """One label per item: (N,), (N, 1), (N, 1, 1, 1), ... (Caffe reads label[i] for i < N)."""
    if len(label_shape) > 4 or math.prod(label_shape[1:]) != 1:
        raise layer.error(f"labels {tuple(label_shape)} must hold one value per item, shape (N,) or (N, 1, 1, 1)")
    if label_shape[0] != data_shape[0]:
        raise layer.error(f"{label_shape[0]} labels for {data_shape[0]} items")


@register("MultinomialLogisticLoss")
class MultinomialLogisticLoss(_LossLayer):
    """-1/N sum_n log(max(p[n, l_n], 1e-20)): the bottom holds probabilities (N, dim), e.g. a
    Softmax top, and the labels one class index per item. Backward, as Caffe 1.0: the only
    nonzero gradient is -w / (N max(p[n, l_n], 1e-20)) at the true class (also where the
    clamp is active). No ``loss_param`` (ignore_label, normalization) in Caffe 1.0."""

    def reshape(self, bottom_shapes):
        data, label = self._check_first_dims(bottom_shapes)
        _per_item_labels(self, data, label)
        return [()]

    def _true_probs(self, x, label):
        xp = self.xp
        n = x.shape[0]
        p = x.reshape(n, -1)
        lab = label.reshape(n).astype("int64")
        if bool(((lab < 0) | (lab >= p.shape[1])).any()):
            bad = int(lab[(lab < 0) | (lab >= p.shape[1])][0])
            raise self.error(f"label {bad} is outside 0..{p.shape[1] - 1}")
        true = xp.take_along_axis(p, lab[:, None], axis=1)[:, 0]
        return xp.maximum(true, xp.asarray(KLOG_THRESHOLD, dtype=x.dtype)), lab

    def forward(self, bottoms):
        x, label = bottoms
        prob, _ = self._true_probs(x, label)
        return [self._scalar(-self.xp.log(prob).sum() / x.shape[0], x.dtype)]

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        self._refuse_label_gradient(propagate_down)
        x, label = bottoms
        if not propagate_down[0] or top_diffs[0] is None:
            return [None, None]
        xp = self.xp
        n = x.shape[0]
        prob, lab = self._true_probs(x, label)
        grad = xp.zeros((n, math.prod(x.shape[1:])), dtype=x.dtype)
        scale = -self._weight(top_diffs[0], x.dtype) / n
        grad[xp.arange(n), lab] = scale / prob
        return [grad.reshape(x.shape), None]


@register("HingeLoss")
class HingeLoss(_LossLayer):
    """One-vs-all hinge loss of scores (N, dim) and one label per item, Caffe 1.0:
    t[n, k] = max(0, 1 + d[n, k] x[n, k]) with d = -1 at the true class and +1 elsewhere;
    loss = sum t / N (``hinge_loss_param.norm: L1``, the default) or sum t^2 / N (L2).
    Gradient d * sign(t) w / N (L1) or 2 d t w / N (L2). No ``loss_param``."""

    def setup(self, bottom_shapes):
        self.norm = self.param.hinge_loss_param.norm
        if self.norm not in (caffe_pb2.HingeLossParameter.L1, caffe_pb2.HingeLossParameter.L2):
            raise self.error(f"unknown norm {self.norm}")

    def reshape(self, bottom_shapes):
        data, label = self._check_first_dims(bottom_shapes)
        _per_item_labels(self, data, label)
        return [()]

    def _signed_margins(self, x, label):
        """(t, d): the margins t (N, dim) and the signs d (+1, -1 at the true class)."""
        xp = self.xp
        n = x.shape[0]
        s = x.reshape(n, -1)
        lab = label.reshape(n).astype("int64")
        if bool(((lab < 0) | (lab >= s.shape[1])).any()):
            bad = int(lab[(lab < 0) | (lab >= s.shape[1])][0])
            raise self.error(f"label {bad} is outside 0..{s.shape[1] - 1}")
        sign = xp.ones(s.shape, dtype=x.dtype)
        sign[xp.arange(n), lab] = -1
        return xp.maximum(0, 1 + sign * s), sign

    def forward(self, bottoms):
        x, label = bottoms
        t, _ = self._signed_margins(x, label)
        total = t.sum() if self.norm == caffe_pb2.HingeLossParameter.L1 else (t * t).sum()
        return [self._scalar(total / x.shape[0], x.dtype)]

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        self._refuse_label_gradient(propagate_down)
        x, label = bottoms
        if not propagate_down[0] or top_diffs[0] is None:
            return [None, None]
        t, sign = self._signed_margins(x, label)
        w = self._weight(top_diffs[0], x.dtype) / x.shape[0]
        if self.norm == caffe_pb2.HingeLossParameter.L1:
            grad = sign * (t > 0).astype(x.dtype) * w  # caffe_cpu_sign(d t): sign(0) = 0
        else:
            grad = sign * t * (2 * w)
        return [grad.reshape(x.shape), None]


@register("ContrastiveLoss")
class ContrastiveLoss(_LossLayer):
    """Contrastive loss of feature pairs a, b (N, C) with a similarity label y (N) (Hadsell et
    al.), Caffe 1.0: with d = ||a - b||, a pair counts d^2 when int(y) != 0 (similar) and
    max(margin - d, 0)^2 when not (``legacy_version: true``: max(margin - d^2, 0)); loss =
    sum / (2N). ``contrastive_loss_param.margin`` defaults to 1.

    Backward as Caffe 1.0 (so a few 1e-4 off the exact derivative): a dissimilar pair gets
    -w/N (margin - d) / (d + 1e-4) (a - b) into a (the 1e-4 keeps d = 0 finite), and b the
    negation. The label gets no gradient; Caffe ignores ``propagate_down`` for it."""

    num_bottoms = 3
    label_bottoms = (2,)

    def setup(self, bottom_shapes):
        p = self.param.contrastive_loss_param
        self.margin = float(p.margin)
        self.legacy = bool(p.legacy_version)

    def reshape(self, bottom_shapes):
        a, b = self._check_first_dims(bottom_shapes)
        for what, shape in (("first", a), ("second", b), ("label", tuple(bottom_shapes[2]))):
            if len(shape) > 4:
                raise self.error(f"{what} bottom {shape} has more than 4 axes")
        la, lb, ly = _legacy_dims(a), _legacy_dims(b), _legacy_dims(bottom_shapes[2])
        if la[1] != lb[1] or la[2:] != (1, 1) or lb[2:] != (1, 1):
            raise self.error(f"bottoms {a} and {b} must be (N, C) or (N, C, 1, 1) with the same C")
        if ly[1:] != (1, 1, 1) or ly[0] != la[0]:
            raise self.error(f"the similarity label {tuple(bottom_shapes[2])} must hold one value per pair, "
                             f"shape ({la[0]},) or ({la[0]}, 1, 1, 1)")
        return [()]

    def _pairs(self, a, b, y):
        n = a.shape[0]
        diff = a.reshape(n, -1) - b.reshape(n, -1)
        dist_sq = (diff * diff).sum(axis=1)
        similar = y.reshape(n).astype("int64") != 0  # static_cast<int>(label)
        return diff, dist_sq, similar

    def forward(self, bottoms):
        a, b, y = bottoms
        xp = self.xp
        diff, dist_sq, similar = self._pairs(a, b, y)
        if self.legacy:
            apart = xp.maximum(self.margin - dist_sq, 0)
        else:
            apart = xp.maximum(self.margin - xp.sqrt(dist_sq), 0)
            apart = apart * apart
        loss = xp.where(similar, dist_sq, apart).sum() / a.shape[0] / 2
        return [self._scalar(loss, a.dtype)]

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        a, b, y = bottoms
        if top_diffs[0] is None or not (propagate_down[0] or propagate_down[1]):
            return [None, None, None]
        xp = self.xp
        diff, dist_sq, similar = self._pairs(a, b, y)
        alpha = self._weight(top_diffs[0], a.dtype) / a.shape[0]
        if self.legacy:
            mdist = self.margin - dist_sq
            beta = -xp.ones_like(dist_sq)
        else:
            dist = xp.sqrt(dist_sq)
            mdist = self.margin - dist
            beta = -mdist / (dist + 1e-4)
        factor = xp.where(similar, 1, xp.where(mdist > 0, beta, 0)).astype(a.dtype)
        grad = diff * (factor * alpha)[:, None]
        return [grad.reshape(a.shape) if propagate_down[0] else None,
                (-grad).reshape(b.shape) if propagate_down[1] else None,
                None]


@register("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLoss(_LossLayer):
    """Cross-entropy of sigmoid(x) against targets t in [0, 1] (same count as x), Caffe 1.0:
    loss = -sum [x (t - [x >= 0]) - log(1 + exp(x - 2 x [x >= 0]))] / normalizer, the stable
    form of -sum [t log s + (1 - t) log(1 - s)].

    ``loss_param.ignore_label`` skips targets with int(t) == ignore_label (value and
    gradient). ``loss_param.normalization`` divides as SoftmaxWithLoss; when neither it nor
    the deprecated ``normalize`` is set the default is BATCH_SIZE (Caffe 1.0's choice for
    this layer, not the proto's VALID). Gradient (sigmoid(x) - t) w / normalizer."""

    def setup(self, bottom_shapes):
        lp = self.param.loss_param
        self.ignore = int(lp.ignore_label) if lp.HasField("ignore_label") else None
        if lp.HasField("normalization"):
            self.normalization = lp.normalization
        elif lp.HasField("normalize"):
            self.normalization = _VALID if lp.normalize else _BATCH_SIZE
        else:
            self.normalization = _BATCH_SIZE

    def reshape(self, bottom_shapes):
        data, target = self._check_first_dims(bottom_shapes)
        if math.prod(data) != math.prod(target):
            raise self.error(f"inputs {data} and targets {target} must have the same count")
        return [()]

    def _parts(self, x, target):
        """(x, t, valid mask, normalizer), x and t flat as (N, count/N)."""
        n = x.shape[0]
        xf = x.reshape(n, -1)
        t = target.reshape(xf.shape).astype(x.dtype, copy=False)
        if self.ignore is None:
            valid = None
            count = xf.size
        else:
            valid = target.reshape(xf.shape).astype("int64") != self.ignore
            count = int(valid.sum())
        return xf, t, valid, loss_normalizer(self, self.normalization, n, xf.shape[1], count)

    def forward(self, bottoms):
        x, target = bottoms
        xp = self.xp
        xf, t, valid, norm = self._parts(x, target)
        pos = (xf >= 0).astype(x.dtype)
        log_lik = xf * (t - pos) - xp.log1p(xp.exp(xf - 2 * xf * pos))
        if valid is not None:
            log_lik = log_lik * valid
        return [self._scalar(-log_lik.sum() / norm, x.dtype)]

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        self._refuse_label_gradient(propagate_down)
        x, target = bottoms
        if not propagate_down[0] or top_diffs[0] is None:
            return [None, None]
        xp = self.xp
        xf, t, valid, norm = self._parts(x, target)
        e = xp.exp(-xp.abs(xf))
        sig = xp.where(xf >= 0, 1, e) / (1 + e)
        grad = sig - t
        if valid is not None:
            grad = grad * valid
        return [(grad * (self._weight(top_diffs[0], x.dtype) / norm)).reshape(x.shape), None]


@register("InfogainLoss")
class InfogainLoss(_LossLayer, _LabelLayer):
    """Infogain loss, Caffe 1.0 as released (tag 1.0): the first bottom holds SCORES (logits),
    to which the layer applies a softmax along ``infogain_loss_param.axis`` (default 1), as
    SoftmaxWithLoss. (The 1.0 header still describes probability inputs; its code, BVLC PR
    #5396, already had the internal softmax, and master keeps it. Caffe rc5 and earlier took
    probabilities.) With p = softmax(x) and the label l of each position:

        loss = -sum over positions of sum_k H[l, k] log(max(p_k, 1e-20)) / normalizer

    H (C x C) is the third bottom, or else the BlobProto file ``infogain_loss_param.source``
    (read once at set-up). ``loss_param.ignore_label`` skips positions; ``normalization``
    (default VALID) divides as SoftmaxWithLoss; the deprecated ``normalize`` is refused, as
    Caffe 1.0 refuses it for this layer. Gradient (p sum_k H[l, k] - H[l, :]) w / normalizer
    (exact while no probability is clamped). An optional second top returns p. Neither the
    labels nor H get a gradient (Caffe refuses both; note that a ``force_backward`` net asks
    for H's, as Caffe's does)."""

    num_bottoms = (2, 3)
    num_tops = (1, 2)
    label_bottoms = (1, 2)

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1  # Caffe's LossLayer default: only the label is exempt

    def setup(self, bottom_shapes):
        lp = self.param.loss_param
        if lp.HasField("normalize"):
            raise self.error('loss_param { normalize } is deprecated for this layer; use "normalization"')
        self.ignore = int(lp.ignore_label) if lp.HasField("ignore_label") else None
        self.normalization = lp.normalization
        self.prob = None
        self.infogain = None
        if len(bottom_shapes) < 3:
            ip = self.param.infogain_loss_param
            if not ip.HasField("source"):
                raise self.error("infogain matrix source must be specified (infogain_loss_param { source }) "
                                 "when there is no third bottom")
            self.infogain = self.backend.asarray(read_binaryproto(ip.source))

    def reshape(self, bottom_shapes):
        score, label = self._check_first_dims(bottom_shapes)
        axis, outer, channels, inner = self._layout(score, label, self.param.infogain_loss_param.axis)
        h_count = math.prod(bottom_shapes[2]) if len(bottom_shapes) >= 3 else (
            None if self.infogain is None else int(self.infogain.size))
        if h_count is not None and h_count != channels * channels:
            raise self.error(f"the infogain matrix H has {h_count} values; it must be {channels}x{channels}")
        tops = [()]
        if len(self.param.top) >= 2:
            tops.append(score)
        return tops

    def _matrix(self, bottoms, channels, dtype):
        h = bottoms[2] if len(bottoms) >= 3 else self.infogain
        if h is None:
            raise self.error("no infogain matrix: call setup first")
        return h.reshape(channels, channels).astype(dtype, copy=False)

    def _prepare(self, bottoms):
        x, label = bottoms[0], bottoms[1]
        axis, outer, channels, inner = self._layout(x.shape, label.shape, self.param.infogain_loss_param.axis)
        lab, valid, safe = self._labels(label, outer, inner, channels, self.ignore)
        h = self._matrix(bottoms, channels, x.dtype)
        rows = h[safe]  # (outer, inner, C): H[l, :] of each position
        count = int(valid.sum())
        return axis, outer, channels, inner, valid, rows, loss_normalizer(self, self.normalization, outer, inner,
                                                                          count)

    def forward(self, bottoms):
        x = bottoms[0]
        xp = self.xp
        axis, outer, channels, inner, valid, rows, norm = self._prepare(bottoms)
        prob = softmax(xp, x, axis)
        self.prob = prob
        p3 = prob.reshape(outer, channels, inner)
        logs = xp.log(xp.maximum(p3, xp.asarray(KLOG_THRESHOLD, dtype=x.dtype)))
        per_position = (rows * logs.transpose(0, 2, 1)).sum(axis=2)  # (outer, inner)
        loss = -(per_position * valid).sum() / norm
        tops = [self._scalar(loss, x.dtype)]
        if len(self.param.top) >= 2:
            tops.append(prob)
        return tops

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        self._refuse_label_gradient(propagate_down)
        x = bottoms[0]
        none = [None] * len(bottoms)
        if not propagate_down[0] or top_diffs[0] is None:
            return none
        xp = self.xp
        axis, outer, channels, inner, valid, rows, norm = self._prepare(bottoms)
        prob = self.prob if self.prob is not None and self.prob.shape == x.shape else softmax(xp, x, axis)
        p3 = prob.reshape(outer, channels, inner)
        row_sums = rows.sum(axis=2)  # (outer, inner)
        grad = p3 * row_sums[:, None, :] - rows.transpose(0, 2, 1)
        grad = grad * valid[:, None, :].astype(x.dtype)
        grad = grad * (self._weight(top_diffs[0], x.dtype) / norm)
        return [grad.reshape(x.shape)] + none[1:]
