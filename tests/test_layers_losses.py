"""Softmax, SoftmaxWithLoss, EuclideanLoss and Accuracy against hand-computed references."""
from __future__ import annotations

import math

import numpy as np
import pytest
from google.protobuf import text_format

from backends import on_backend, reseeded
from gradient_check import check_layer_gradient, f64_backend
from ristretto_cli.backend import Backend
from ristretto_cli.errors import RistrettoError
from ristretto_cli.layers import TEST, TRAIN, create_layer
from ristretto_cli.proto import caffe_pb2

FLT_MIN = float(np.finfo(np.float32).tiny)


def make(text, phase=TRAIN, backend=None, shapes=None):
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    layer = on_backend(create_layer(param, phase, backend or f64_backend()))
    if shapes is not None:
        layer.setup(shapes)
        layer.reshape(shapes)
    return layer


def ref_softmax(x, axis):
    """Per-slice loop reference: exp(v - max v) / sum exp(v - max v)."""
    x = np.moveaxis(x, axis, -1)
    out = np.empty_like(x)
    for idx in np.ndindex(x.shape[:-1]):
        v = x[idx] - max(x[idx])
        e = np.array([math.exp(t) for t in v])
        out[idx] = e / e.sum()
    return np.moveaxis(out, -1, axis)


RNG = np.random.default_rng(0)
SCORES = RNG.standard_normal((4, 5, 2, 3)) * 3


# -- Softmax ---------------------------------------------------------------
@pytest.mark.parametrize("axis", [1, 2, -1, 0])
def test_softmax_forward(backend, axis):
    layer = make(f'name: "s" type: "Softmax" softmax_param {{ axis: {axis} }}', shapes=[SCORES.shape], backend=backend)
    y = layer.forward([SCORES])[0]
    np.testing.assert_allclose(y, ref_softmax(SCORES, axis), rtol=1e-12)
    np.testing.assert_allclose(y.sum(axis=axis), 1.0, rtol=1e-12)


def test_softmax_is_stable_for_huge_scores(backend):
    x = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1000.0, -1000.0]], dtype=np.float32)
    layer = make('name: "s" type: "Softmax"', backend=reseeded(backend, 0), shapes=[x.shape])
    y = layer.forward([x])[0]
    assert y.dtype == np.float32 and np.all(np.isfinite(y))
    np.testing.assert_allclose(y, ref_softmax(x.astype(np.float64), 1), rtol=1e-6)


@pytest.mark.parametrize("axis", [1, 3])
def test_softmax_gradient(backend, axis):
    check_layer_gradient(make(f'name: "s" type: "Softmax" softmax_param {{ axis: {axis} }}', backend=backend), [SCORES])


def test_softmax_axis_out_of_range(backend):
    with pytest.raises(RistrettoError, match="axis 4"):
        make('name: "s" type: "Softmax" softmax_param { axis: 4 }', shapes=[SCORES.shape], backend=backend)


# -- SoftmaxWithLoss ---------------------------------------------------------
LABELS = RNG.integers(0, 5, size=(4, 1, 2, 3)).astype(np.float64)


def ref_loss(scores, labels, ignore=None, mode="VALID"):
    """Loop over every (n, h, w) position, as Caffe's Forward_cpu does."""
    prob = ref_softmax(scores, 1)
    n, c, h, w = scores.shape
    total, count = 0.0, 0
    for i in range(n):
        for y in range(h):
            for x in range(w):
                lab = int(labels[i, 0, y, x])
                if ignore is not None and lab == ignore:
                    continue
                total -= math.log(max(prob[i, lab, y, x], FLT_MIN))
                count += 1
    norm = {"VALID": count, "FULL": n * h * w, "BATCH_SIZE": n, "NONE": 1}[mode]
    return total / max(1.0, norm)


def loss_layer(extra="", tops=1, backend=None):
    top = 'top: "loss"' + (' top: "prob"' if tops == 2 else "")
    return make(f'name: "loss" type: "SoftmaxWithLoss" bottom: "s" bottom: "l" {top} {extra}',
                shapes=[SCORES.shape, LABELS.shape], backend=backend)


def test_softmax_loss_default_is_valid_mean_and_weight_one(backend):
    layer = loss_layer(backend=backend)
    assert layer.is_loss and layer.loss_weights(1) == [1.0]
    loss = layer.forward([SCORES, LABELS])[0]
    assert loss.shape == ()
    assert float(loss) == pytest.approx(ref_loss(SCORES, LABELS), rel=1e-12)


@pytest.mark.parametrize("mode", ["VALID", "FULL", "BATCH_SIZE", "NONE"])
def test_softmax_loss_normalization_modes_with_ignore_label(backend, mode):
    layer = loss_layer(f"loss_param {{ ignore_label: 2 normalization: {mode} }}", backend=backend)
    loss = float(layer.forward([SCORES, LABELS])[0])
    assert (LABELS == 2).any() and (LABELS != 2).any()
    assert loss == pytest.approx(ref_loss(SCORES, LABELS, ignore=2, mode=mode), rel=1e-12)


@pytest.mark.parametrize("normalize,mode", [("true", "VALID"), ("false", "BATCH_SIZE")])
def test_deprecated_normalize_flag(backend, normalize, mode):
    layer = loss_layer(f"loss_param {{ ignore_label: 1 normalize: {normalize} }}", backend=backend)
    loss = float(layer.forward([SCORES, LABELS])[0])
    assert loss == pytest.approx(ref_loss(SCORES, LABELS, ignore=1, mode=mode), rel=1e-12)
    # an explicit normalization wins over the deprecated flag
    layer = loss_layer(f"loss_param {{ ignore_label: 1 normalize: {normalize} normalization: FULL }}", backend=backend)
    loss = float(layer.forward([SCORES, LABELS])[0])
    assert loss == pytest.approx(ref_loss(SCORES, LABELS, ignore=1, mode="FULL"), rel=1e-12)


def test_all_labels_ignored_gives_zero_loss_and_gradient(backend):
    labels = np.full(LABELS.shape, 3.0)
    layer = loss_layer("loss_param { ignore_label: 3 }", backend=backend)
    tops = layer.forward([SCORES, labels])
    assert float(tops[0]) == 0.0
    d = layer.backward([np.array(1.0)], [SCORES, labels], tops, [True, False])[0]
    np.testing.assert_array_equal(d, 0.0)


def test_probability_top_and_hand_computed_case(backend):
    x = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    lab = np.array([2.0, 0.0])
    layer = make('name: "loss" type: "SoftmaxWithLoss" top: "loss" top: "prob"', shapes=[x.shape, lab.shape], backend=backend)
    loss, prob = layer.forward([x, lab])
    p = np.exp([1.0, 2.0, 3.0]) / np.exp([1.0, 2.0, 3.0]).sum()
    np.testing.assert_allclose(prob, [p, [1 / 3] * 3], rtol=1e-12)
    assert float(loss) == pytest.approx((-math.log(p[2]) + math.log(3)) / 2, rel=1e-12)
    assert layer.loss_weights(2) == [1.0, 0.0]


def test_zero_probability_is_clamped_to_flt_min(backend):
    x = np.array([[0.0, 2000.0]])
    lab = np.array([0.0])
    layer = make('name: "loss" type: "SoftmaxWithLoss"', shapes=[x.shape, lab.shape], backend=backend)
    assert float(layer.forward([x, lab])[0]) == pytest.approx(-math.log(FLT_MIN), rel=1e-12)


def test_softmax_loss_backward_formula_and_loss_weight(backend):
    layer = loss_layer("loss_param { ignore_label: 4 normalization: FULL }", backend=backend)
    tops = layer.forward([SCORES, LABELS])
    d = layer.backward([np.array(2.5)], [SCORES, LABELS], tops, [True, False])
    assert d[1] is None
    prob = ref_softmax(SCORES, 1)
    onehot = (np.arange(5)[None, :, None, None] == LABELS).astype(float)
    valid = (LABELS != 4).astype(float)
    want = (prob - onehot) * valid * 2.5 / (4 * 2 * 3)
    np.testing.assert_allclose(d[0], want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("extra", ["", "loss_param { ignore_label: 0 }",
                                   "loss_param { ignore_label: 3 normalization: BATCH_SIZE }",
                                   "loss_param { normalization: NONE } softmax_param { axis: 1 }"])
def test_softmax_loss_gradient(backend, extra):
    layer = make(f'name: "loss" type: "SoftmaxWithLoss" {extra}', backend=backend)
    check_layer_gradient(layer, [SCORES, LABELS], check_bottoms=[0])


def test_softmax_loss_other_axis(backend):
    x = RNG.standard_normal((3, 4, 6))
    lab = RNG.integers(0, 6, size=(3, 4)).astype(float)
    layer = make('name: "loss" type: "SoftmaxWithLoss" softmax_param { axis: -1 }', shapes=[x.shape, lab.shape], backend=backend)
    prob = ref_softmax(x, 2)
    want = -np.mean([math.log(prob[i, j, int(lab[i, j])]) for i in range(3) for j in range(4)])
    assert float(layer.forward([x, lab])[0]) == pytest.approx(want, rel=1e-12)
    check_layer_gradient(make('name: "loss" type: "SoftmaxWithLoss" softmax_param { axis: -1 }', backend=backend),
                         [x, lab], check_bottoms=[0])


def test_softmax_loss_label_errors(backend):
    with pytest.raises(RistrettoError, match="labels"):
        make('name: "loss" type: "SoftmaxWithLoss"', shapes=[(4, 5, 2, 3), (4, 1, 2, 2)], backend=backend)
    layer = make('name: "loss" type: "SoftmaxWithLoss"', shapes=[(2, 3), (2,)], backend=backend)
    with pytest.raises(RistrettoError, match="label 3"):
        layer.forward([np.zeros((2, 3)), np.array([0.0, 3.0])])


# -- EuclideanLoss ---------------------------------------------------------
def test_euclidean_loss_forward_and_gradient(backend):
    a = RNG.standard_normal((4, 3, 2))
    b = RNG.standard_normal((4, 6))
    layer = make('name: "e" type: "EuclideanLoss"', shapes=[a.shape, b.shape], backend=backend)
    assert layer.is_loss
    loss = float(layer.forward([a, b])[0])
    assert loss == pytest.approx(((a.reshape(4, 6) - b) ** 2).sum() / 4 / 2, rel=1e-12)
    check_layer_gradient(make('name: "e" type: "EuclideanLoss"', backend=backend), [a, b])
    with pytest.raises(RistrettoError):
        make('name: "e" type: "EuclideanLoss"', shapes=[(4, 3), (4, 2)], backend=backend)


# -- Accuracy --------------------------------------------------------------
def acc_layer(extra="", tops=1, shapes=((3, 4), (3,)), backend=None):
    top = 'top: "acc"' + (' top: "per_class"' if tops == 2 else "")
    return make(f'name: "acc" type: "Accuracy" {top} {extra}', phase=TEST, shapes=list(shapes), backend=backend)


def test_accuracy_top1_and_topk(backend):
    x = np.array([[0.1, 0.5, 0.3, 0.2],
                  [0.9, 0.05, 0.03, 0.02],
                  [0.2, 0.3, 0.4, 0.1]])
    lab = np.array([2.0, 0.0, 0.0])
    assert float(acc_layer(backend=backend).forward([x, lab])[0]) == pytest.approx(1 / 3)
    assert float(acc_layer("accuracy_param { top_k: 2 }", backend=backend).forward([x, lab])[0]) == pytest.approx(2 / 3)
    assert float(acc_layer("accuracy_param { top_k: 3 }", backend=backend).forward([x, lab])[0]) == pytest.approx(1.0)


def test_accuracy_ties_count_against_the_true_class(backend):
    # Caffe 1.0: correct iff fewer than k other classes score >= the true class.
    x = np.array([[1.0, 1.0, 0.0, 0.0],
                  [1.0, 1.0, 0.0, 0.0],
                  [0.0, 0.0, 0.0, 0.0]])
    lab = np.array([0.0, 1.0, 3.0])
    assert float(acc_layer(backend=backend).forward([x, lab])[0]) == 0.0
    assert float(acc_layer("accuracy_param { top_k: 2 }", backend=backend).forward([x, lab])[0]) == pytest.approx(2 / 3)
    assert float(acc_layer("accuracy_param { top_k: 4 }", backend=backend).forward([x, lab])[0]) == 1.0


def test_accuracy_ignore_label_and_per_class_top(backend):
    x = np.array([[0.9, 0.1, 0.0],
                  [0.1, 0.8, 0.1],
                  [0.7, 0.2, 0.1],
                  [0.3, 0.3, 0.4],
                  [0.1, 0.1, 0.8]])
    lab = np.array([0.0, 0.0, 1.0, 2.0, 1.0])
    layer = acc_layer("accuracy_param { ignore_label: 1 }", tops=2, shapes=((5, 3), (5,)), backend=backend)
    assert layer.reshape([(5, 3), (5,)]) == [(), (3,)]
    acc, per_class = layer.forward([x, lab])
    assert float(acc) == pytest.approx(2 / 3)       # labels 1 are skipped
    np.testing.assert_allclose(per_class, [0.5, 0.0, 1.0])
    all_ignored = layer.forward([x, np.ones(5)])
    assert float(all_ignored[0]) == 0.0
    np.testing.assert_array_equal(all_ignored[1], 0.0)


def test_accuracy_spatial_labels_on_axis_1(backend):
    x = RNG.standard_normal((2, 4, 3, 3))
    lab = RNG.integers(0, 4, size=(2, 1, 3, 3)).astype(float)
    layer = acc_layer(shapes=(x.shape, lab.shape), backend=backend)
    want = np.mean(x.argmax(axis=1) == lab[:, 0])
    assert float(layer.forward([x, lab])[0]) == pytest.approx(want)
    assert layer.backward([None], [x, lab], [], [True, False]) == [None, None]


def test_accuracy_top_k_larger_than_classes_is_an_error(backend):
    with pytest.raises(RistrettoError, match="top_k"):
        acc_layer("accuracy_param { top_k: 5 }", backend=backend)
