"""The other Caffe 1.0 losses (MultinomialLogisticLoss, HingeLoss, ContrastiveLoss,
SigmoidCrossEntropyLoss, InfogainLoss) and Im2col, against loop references written
from Caffe's formulas (tag 1.0) and finite differences."""
from __future__ import annotations

import math

import numpy as np
import pytest
from google.protobuf import text_format

from backends import on_backend
from gradient_check import check_layer_gradient, f64_backend
from ristretto_cli.caffe.blobproto import write_binaryproto
from ristretto_cli.errors import RistrettoError
from ristretto_cli.layers import LAYER_TYPES, TRAIN, create_layer
from ristretto_cli.layers.refused import REFUSED_TYPES
from ristretto_cli.net import Net
from ristretto_cli.proto import caffe_pb2

NEW_TYPES = ("Im2col", "ContrastiveLoss", "HingeLoss", "InfogainLoss", "MultinomialLogisticLoss",
             "SigmoidCrossEntropyLoss")
RNG = np.random.default_rng(7)


def make(text, backend=None, shapes=None):
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    layer = on_backend(create_layer(param, TRAIN, backend or f64_backend()))
    if shapes is not None:
        layer.setup(shapes)
        assert layer.reshape(shapes)[0] is not None
    return layer


def backward(layer, bottoms, weight=1.0, prop=None):
    tops = layer.forward([b.copy() for b in bottoms])
    prop = prop if prop is not None else [True] + [False] * (len(bottoms) - 1)
    return layer.backward([np.array(weight)] + [None] * (len(tops) - 1), bottoms, tops, prop)


def ref_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_these_types_are_computed_not_refused():
    for t in NEW_TYPES:
        assert t in LAYER_TYPES and t not in REFUSED_TYPES
        assert LAYER_TYPES[t].__name__ == t


@pytest.mark.parametrize("t", ["ContrastiveLoss", "HingeLoss", "InfogainLoss", "MultinomialLogisticLoss",
                               "SigmoidCrossEntropyLoss", "SoftmaxWithLoss"])
def test_losses_weigh_their_top_by_one_and_no_label_is_forced(t):
    layer = make(f'name: "l" type: "{t}"')
    assert layer.is_loss and layer.loss_weights(1) == [1.0]
    label = 2 if t == "ContrastiveLoss" else 1
    assert not layer.allow_force_backward(label) and layer.allow_force_backward(0)


def test_softmax_with_loss_refuses_label_gradients_too(backend):
    x, lab = RNG.standard_normal((3, 4)), np.array([0.0, 3.0, 1.0])
    layer = make('name: "s" type: "SoftmaxWithLoss"', backend, shapes=[x.shape, lab.shape])
    with pytest.raises(RistrettoError, match="layer 's' .*cannot backpropagate to label"):
        backward(layer, [x, lab], prop=[True, True])


# -- MultinomialLogisticLoss -------------------------------------------------------------------
def test_multinomial_logistic_loss_forward_and_clamp(backend):
    p = RNG.uniform(0.05, 1.0, size=(4, 5))
    p[2, 3] = 0.0  # clamped to kLOG_THRESHOLD
    lab = np.array([1.0, 0.0, 3.0, 4.0])
    layer = make('name: "m" type: "MultinomialLogisticLoss"', backend, shapes=[p.shape, lab.shape])
    want = -sum(math.log(max(p[i, int(lab[i])], 1e-20)) for i in range(4)) / 4
    loss = layer.forward([p, lab])[0]
    assert loss.shape == () and float(loss) == pytest.approx(want, rel=1e-12)


def test_multinomial_logistic_loss_backward_is_caffes(backend):
    p = RNG.uniform(0.05, 1.0, size=(3, 2, 2))
    p[1, 1, 0] = 0.0
    lab = np.array([[0.0], [2.0], [3.0]])
    layer = make('name: "m" type: "MultinomialLogisticLoss"', backend, shapes=[p.shape, lab.shape])
    d = backward(layer, [p, lab], weight=3.0)
    want = np.zeros((3, 4))
    for i in range(3):
        want[i, int(lab[i, 0])] = -3.0 / 3 / max(p.reshape(3, 4)[i, int(lab[i, 0])], 1e-20)
    assert d[1] is None
    np.testing.assert_allclose(d[0], want.reshape(p.shape), rtol=1e-12)


def test_multinomial_logistic_loss_gradient(backend):
    p = RNG.uniform(0.1, 1.0, size=(4, 3, 1, 1))
    lab = np.array([0.0, 2.0, 1.0, 2.0]).reshape(4, 1, 1, 1)
    check_layer_gradient(make('name: "m" type: "MultinomialLogisticLoss"', backend), [p, lab], check_bottoms=[0])


def test_multinomial_logistic_loss_shape_and_label_errors(backend):
    with pytest.raises(RistrettoError, match="one value per item"):
        make('name: "m" type: "MultinomialLogisticLoss"', backend, shapes=[(4, 3), (4, 2)])
    layer = make('name: "m" type: "MultinomialLogisticLoss"', backend, shapes=[(2, 3), (2,)])
    with pytest.raises(RistrettoError, match="label 3"):
        layer.forward([np.full((2, 3), 0.5), np.array([0.0, 3.0])])
    with pytest.raises(RistrettoError, match="cannot backpropagate to label"):
        backward(layer, [np.full((2, 3), 0.5), np.array([0.0, 1.0])], prop=[True, True])


# -- HingeLoss ---------------------------------------------------------------------------------
def ref_hinge(x, lab, norm):
    n = x.shape[0]
    s = x.reshape(n, -1)
    total = 0.0
    for i in range(n):
        for j in range(s.shape[1]):
            v = -s[i, j] if j == int(lab[i]) else s[i, j]
            t = max(0.0, 1.0 + v)
            total += t if norm == "L1" else t * t
    return total / n


def hinge_scores(shape, seed=0):
    """Scores at least 0.05 away from the kinks at -1 and +1."""
    x = np.random.default_rng(seed).uniform(-2, 2, size=shape)
    for k in (-1.0, 1.0):
        near = np.abs(x - k) < 0.05
        x[near] = k + np.where(x[near] >= k, 0.1, -0.1)
    return x


@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge_loss_forward_and_gradient(backend, norm):
    x = hinge_scores((5, 4))
    lab = np.array([0.0, 3.0, 1.0, 1.0, 2.0])
    text = f'name: "h" type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}'
    layer = make(text, backend, shapes=[x.shape, lab.shape])
    assert float(layer.forward([x, lab])[0]) == pytest.approx(ref_hinge(x, lab, norm), rel=1e-12)
    check_layer_gradient(make(text, backend), [x, lab], check_bottoms=[0])


def test_hinge_loss_default_norm_is_l1_and_spatial_scores_flatten(backend):
    x = hinge_scores((3, 2, 2, 1), seed=1)
    lab = np.array([3.0, 0.0, 2.0])
    layer = make('name: "h" type: "HingeLoss"', backend, shapes=[x.shape, lab.shape])
    assert float(layer.forward([x, lab])[0]) == pytest.approx(ref_hinge(x, lab, "L1"), rel=1e-12)


def test_hinge_loss_backward_formula_with_loss_weight(backend):
    x = np.array([[0.5, -1.0, 3.0], [-2.0, 0.2, 0.9]])  # (0, 1) sits on the kink: t = 0, sign 0
    lab = np.array([2.0, 0.0])
    for norm in ("L1", "L2"):
        layer = make(f'name: "h" type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}', backend,
                     shapes=[x.shape, lab.shape])
        d = backward(layer, [x, lab], weight=2.0)
        sign = np.ones_like(x)
        sign[0, 2] = sign[1, 0] = -1
        t = np.maximum(0, 1 + sign * x)
        want = sign * np.sign(t) * 2.0 / 2 if norm == "L1" else sign * t * 2 * 2.0 / 2
        np.testing.assert_allclose(d[0], want, rtol=1e-12)
        assert d[0][0, 1] == 0.0
    with pytest.raises(RistrettoError, match="cannot backpropagate to label"):
        backward(layer, [x, lab], prop=[True, True])


# -- ContrastiveLoss ---------------------------------------------------------------------------
def ref_contrastive(a, b, y, margin, legacy):
    n = a.shape[0]
    total = 0.0
    for i in range(n):
        d2 = float(((a[i].ravel() - b[i].ravel()) ** 2).sum())
        if int(y.ravel()[i]):
            total += d2
        elif legacy:
            total += max(margin - d2, 0.0)
        else:
            total += max(margin - math.sqrt(d2), 0.0) ** 2
    return total / n / 2


def ref_contrastive_grad(a, b, y, margin, legacy, weight):
    """Caffe's Backward_cpu for bottom 0, loop by loop (with its dist + 1e-4)."""
    n = a.shape[0]
    out = np.zeros((n, a[0].size))
    alpha = weight / n
    for i in range(n):
        diff = a[i].ravel() - b[i].ravel()
        d2 = float((diff ** 2).sum())
        if int(y.ravel()[i]):
            out[i] = alpha * diff
            continue
        if legacy:
            mdist, beta = margin - d2, -alpha
        else:
            dist = math.sqrt(d2)
            mdist, beta = margin - dist, -alpha * (margin - dist) / (dist + 1e-4)
        out[i] = beta * diff if mdist > 0 else 0.0
    return out.reshape(a.shape)


def contrastive_pairs(n=8, c=3, seed=3, margin=1.0, legacy=False):
    """Pairs whose distance (squared for legacy) stays 0.05 away from the margin."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, c)) * 0.4
    b = rng.standard_normal((n, c)) * 0.4
    for i in range(n):
        d = np.linalg.norm(a[i] - b[i]) ** (2 if legacy else 1)
        while abs(d - margin) < 0.05:
            b[i] *= 1.3
            d = np.linalg.norm(a[i] - b[i]) ** (2 if legacy else 1)
    y = (np.arange(n) % 3 == 0).astype(float)
    return a, b, y


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("margin", [1.0, 0.7])
def test_contrastive_loss_forward_and_caffes_backward(backend, legacy, margin):
    a, b, y = contrastive_pairs(margin=margin, legacy=legacy)
    a4, b4 = a.reshape(8, 3, 1, 1), b.reshape(8, 3, 1, 1)
    text = (f'name: "c" type: "ContrastiveLoss" contrastive_loss_param {{ margin: {margin} '
            f'legacy_version: {str(legacy).lower()} }}')
    layer = make(text, backend, shapes=[a4.shape, b4.shape, y.shape])
    m = float(np.float32(margin))  # the proto field is a float
    loss = float(layer.forward([a4, b4, y])[0])
    assert loss == pytest.approx(ref_contrastive(a, b, y, m, legacy), rel=1e-12)
    same = ref_contrastive(a, b, y, m, legacy)
    assert (np.linalg.norm(a - b, axis=1)[y == 0] < m).any() and same > 0  # some dissimilar pairs count
    da, db, dy = backward(layer, [a4, b4, y], weight=1.5, prop=[True, True, True])
    want = ref_contrastive_grad(a4, b4, y, m, legacy, 1.5)
    np.testing.assert_allclose(da, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(db, -want, rtol=1e-12, atol=1e-15)
    assert dy is None  # Caffe ignores propagate_down for the similarity label


@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive_loss_gradient(backend, legacy):
    a, b, y = contrastive_pairs(seed=5, legacy=legacy)
    text = f'name: "c" type: "ContrastiveLoss" contrastive_loss_param {{ legacy_version: {str(legacy).lower()} }}'
    layer = make(text, backend)
    # Caffe's dist + 1e-4 puts the non-legacy gradient a relative 1e-4/dist off the exact one
    check_layer_gradient(layer, [a, b, y], check_bottoms=[0, 1], rtol=1e-3)


def test_contrastive_loss_shape_errors(backend):
    with pytest.raises(RistrettoError, match="same C"):
        make('name: "c" type: "ContrastiveLoss"', backend, shapes=[(4, 3), (4, 2), (4,)])
    with pytest.raises(RistrettoError, match="same C"):
        make('name: "c" type: "ContrastiveLoss"', backend, shapes=[(4, 3, 2, 1), (4, 3, 2, 1), (4,)])
    with pytest.raises(RistrettoError, match="one value per pair"):
        make('name: "c" type: "ContrastiveLoss"', backend, shapes=[(4, 3), (4, 3), (4, 2)])
    with pytest.raises(RistrettoError, match="3 bottom"):
        param = text_format.Parse('name: "c" type: "ContrastiveLoss"', caffe_pb2.LayerParameter())
        create_layer(param, TRAIN, f64_backend()).check_arity(2, 1)


# -- SigmoidCrossEntropyLoss -------------------------------------------------------------------
def ref_sce(x, t, ignore=None, mode="BATCH_SIZE"):
    """-sum [t log s + (1 - t) log(1 - s)] over non-ignored targets, the naive form."""
    total, count = 0.0, 0
    for v, tv in zip(x.ravel(), t.ravel()):
        if ignore is not None and int(tv) == ignore:
            continue
        s = 1 / (1 + math.exp(-v))
        total -= tv * math.log(s) + (1 - tv) * math.log(1 - s)
        count += 1
    norm = {"VALID": count, "FULL": x.size, "BATCH_SIZE": x.shape[0], "NONE": 1}[mode]
    return total / max(1.0, norm)


X_SCE = RNG.standard_normal((3, 4, 2)) * 3
T_SCE = RNG.integers(-1, 2, size=(3, 8)).astype(float)  # -1: the ignored targets below


def test_sigmoid_cross_entropy_default_is_batch_size(backend):
    t = np.clip(T_SCE, 0, 1)
    layer = make('name: "s" type: "SigmoidCrossEntropyLoss"', backend, shapes=[X_SCE.shape, t.shape])
    assert float(layer.forward([X_SCE, t])[0]) == pytest.approx(ref_sce(X_SCE, t), rel=1e-12)
    soft = RNG.uniform(0, 1, size=t.shape)  # probabilities as targets
    assert float(layer.forward([X_SCE, soft])[0]) == pytest.approx(ref_sce(X_SCE, soft), rel=1e-12)


@pytest.mark.parametrize("mode", ["VALID", "FULL", "BATCH_SIZE", "NONE"])
def test_sigmoid_cross_entropy_normalization_and_ignore_label(backend, mode):
    text = f'name: "s" type: "SigmoidCrossEntropyLoss" loss_param {{ ignore_label: -1 normalization: {mode} }}'
    layer = make(text, backend, shapes=[X_SCE.shape, T_SCE.shape])
    assert (T_SCE == -1).any()
    assert float(layer.forward([X_SCE, T_SCE])[0]) == pytest.approx(ref_sce(X_SCE, T_SCE, -1, mode), rel=1e-12)
    check_layer_gradient(make(text, backend), [X_SCE, T_SCE], check_bottoms=[0])


@pytest.mark.parametrize("normalize,mode", [("true", "VALID"), ("false", "BATCH_SIZE")])
def test_sigmoid_cross_entropy_deprecated_normalize(backend, normalize, mode):
    text = f'name: "s" type: "SigmoidCrossEntropyLoss" loss_param {{ ignore_label: -1 normalize: {normalize} }}'
    layer = make(text, backend, shapes=[X_SCE.shape, T_SCE.shape])
    assert float(layer.forward([X_SCE, T_SCE])[0]) == pytest.approx(ref_sce(X_SCE, T_SCE, -1, mode), rel=1e-12)


def test_sigmoid_cross_entropy_backward_and_stability(backend):
    layer = make('name: "s" type: "SigmoidCrossEntropyLoss" loss_param { ignore_label: -1 }', backend,
                 shapes=[X_SCE.shape, T_SCE.shape])
    d = backward(layer, [X_SCE, T_SCE], weight=2.0)
    want = (1 / (1 + np.exp(-X_SCE.reshape(3, 8))) - T_SCE) * (T_SCE != -1) * 2.0 / 3
    np.testing.assert_allclose(d[0], want.reshape(X_SCE.shape), rtol=1e-12, atol=1e-15)
    with pytest.raises(RistrettoError, match="cannot backpropagate to label"):
        backward(layer, [X_SCE, T_SCE], prop=[True, True])
    x = np.array([[1000.0, -1000.0, 30.0, -30.0]], dtype=np.float32)
    t = np.array([[0.0, 1.0, 1.0, 0.0]], dtype=np.float32)
    layer = make('name: "s" type: "SigmoidCrossEntropyLoss"', backend, shapes=[x.shape, t.shape])
    loss = layer.forward([x, t])[0]
    assert loss.dtype == np.float32 and float(loss) == pytest.approx(2000 + 2 * math.log1p(math.exp(-30)), rel=1e-6)
    d = backward(layer, [x, t])[0]
    assert d.dtype == np.float32 and np.all(np.isfinite(d))
    np.testing.assert_allclose(d, [[1.0, -1.0, 0.0, 0.0]], atol=1e-6)


def test_sigmoid_cross_entropy_count_mismatch(backend):
    with pytest.raises(RistrettoError, match="same count"):
        make('name: "s" type: "SigmoidCrossEntropyLoss"', backend, shapes=[(3, 4), (3, 5)])


# -- InfogainLoss ------------------------------------------------------------------------------
SCORES = RNG.standard_normal((3, 4, 2, 2)) * 2
LABELS = RNG.integers(0, 4, size=(3, 1, 2, 2)).astype(float)
H = RNG.uniform(0, 1, size=(4, 4))


def ref_infogain(x, lab, h, axis=1, ignore=None, mode="VALID"):
    """Caffe 1.0's Forward_cpu loop: softmax, then -sum_k H[l, k] log max(p_k, 1e-20)."""
    prob = np.moveaxis(ref_softmax(x, axis), axis, -1)
    labels = lab.reshape(prob.shape[:-1])
    total, count = 0.0, 0
    for idx in np.ndindex(labels.shape):
        lv = int(labels[idx])
        if ignore is not None and lv == ignore:
            continue
        total -= sum(h[lv, k] * math.log(max(prob[idx][k], 1e-20)) for k in range(prob.shape[-1]))
        count += 1
    outer = int(np.prod(x.shape[:axis]))
    norm = {"VALID": count, "FULL": labels.size, "BATCH_SIZE": outer, "NONE": 1}[mode]
    return total / max(1.0, norm)


def infogain(extra="", tops=1, backend=None, shapes=None):
    top = 'top: "loss"' + (' top: "prob"' if tops == 2 else "")
    return make(f'name: "i" type: "InfogainLoss" {top} {extra}', backend, shapes=shapes)


@pytest.mark.parametrize("mode", ["VALID", "FULL", "BATCH_SIZE", "NONE"])
def test_infogain_loss_takes_scores_with_h_as_third_bottom(backend, mode):
    extra = f"loss_param {{ ignore_label: 2 normalization: {mode} }}"
    layer = infogain(extra, backend=backend, shapes=[SCORES.shape, LABELS.shape, (1, 1, 4, 4)])
    h4 = H.reshape(1, 1, 4, 4)
    assert (LABELS == 2).any()
    loss = float(layer.forward([SCORES, LABELS, h4])[0])
    assert loss == pytest.approx(ref_infogain(SCORES, LABELS, H, ignore=2, mode=mode), rel=1e-12)
    check_layer_gradient(infogain(extra, backend=backend), [SCORES, LABELS, h4], check_bottoms=[0])


def test_infogain_loss_h_from_binaryproto_source(backend, tmp_path):
    path = tmp_path / "H.binaryproto"
    write_binaryproto(path, H.reshape(1, 1, 4, 4).astype(np.float32))
    layer = infogain(f'infogain_loss_param {{ source: "{path}" }}', tops=2, backend=backend,
                     shapes=[SCORES.shape, LABELS.shape])
    assert layer.reshape([SCORES.shape, LABELS.shape]) == [(), SCORES.shape]
    loss, prob = layer.forward([SCORES, LABELS])
    h32 = H.astype(np.float32).astype(np.float64)
    assert float(loss) == pytest.approx(ref_infogain(SCORES, LABELS, h32), rel=1e-12)
    np.testing.assert_allclose(prob, ref_softmax(SCORES, 1), rtol=1e-12)
    check_layer_gradient(infogain(f'infogain_loss_param {{ source: "{path}" }}', backend=backend),
                         [SCORES, LABELS], check_bottoms=[0])


def test_infogain_loss_with_identity_h_is_softmax_with_loss(backend):
    eye = np.eye(4).reshape(1, 1, 4, 4)
    layer = infogain(backend=backend, shapes=[SCORES.shape, LABELS.shape, eye.shape])
    soft = make('name: "s" type: "SoftmaxWithLoss"', backend, shapes=[SCORES.shape, LABELS.shape])
    assert float(layer.forward([SCORES, LABELS, eye])[0]) == pytest.approx(
        float(soft.forward([SCORES, LABELS])[0]), rel=1e-12)
    d_info = backward(layer, [SCORES, LABELS, eye], weight=0.5)
    d_soft = backward(soft, [SCORES, LABELS], weight=0.5)
    np.testing.assert_allclose(d_info[0], d_soft[0], rtol=1e-12, atol=1e-15)
    assert d_info[1] is None and d_info[2] is None


def test_infogain_loss_other_axis_and_backward_formula(backend):
    x = RNG.standard_normal((2, 3, 5))
    lab = RNG.integers(0, 5, size=(2, 3)).astype(float)
    h = RNG.uniform(0, 2, size=(5, 5))
    extra = "infogain_loss_param { axis: -1 }"
    layer = infogain(extra, backend=backend, shapes=[x.shape, lab.shape, h.shape])
    assert float(layer.forward([x, lab, h])[0]) == pytest.approx(ref_infogain(x, lab, h, axis=2), rel=1e-12)
    d = backward(layer, [x, lab, h], weight=2.0)[0]
    p = ref_softmax(x, 2)
    rows = h[lab.astype(int)]
    want = (p * rows.sum(axis=-1, keepdims=True) - rows) * 2.0 / 6
    np.testing.assert_allclose(d, want, rtol=1e-12, atol=1e-15)
    check_layer_gradient(infogain(extra, backend=backend), [x, lab, h], check_bottoms=[0])


def test_infogain_loss_refusals(backend, tmp_path):
    with pytest.raises(RistrettoError, match="source must be specified"):
        infogain(backend=backend, shapes=[SCORES.shape, LABELS.shape])
    with pytest.raises(RistrettoError, match="normalize"):
        infogain("loss_param { normalize: true }", backend=backend, shapes=[SCORES.shape, LABELS.shape, H.shape])
    with pytest.raises(RistrettoError, match="4x4"):
        infogain(backend=backend, shapes=[SCORES.shape, LABELS.shape, (3, 3)])
    path = tmp_path / "H3.binaryproto"
    write_binaryproto(path, np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3))
    with pytest.raises(RistrettoError, match="4x4"):
        infogain(f'infogain_loss_param {{ source: "{path}" }}', backend=backend, shapes=[SCORES.shape, LABELS.shape])
    layer = infogain(backend=backend, shapes=[SCORES.shape, LABELS.shape, H.shape])
    for prop, what in (([True, True, False], "label"), ([True, False, True], "infogain")):
        with pytest.raises(RistrettoError, match=f"cannot backpropagate to {what}"):
            backward(layer, [SCORES, LABELS, H], prop=prop)


# -- Im2col ------------------------------------------------------------------------------------
def ref_im2col_2d(x, kh, kw, ph, pw, sh, sw, dh, dw):
    """Caffe's im2col_cpu, per image: channel c*kh*kw + i*kw + j, output position (y, x)."""
    n, c, h, w = x.shape
    oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    ow = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    out = np.zeros((n, c * kh * kw, oh, ow))
    for b in range(n):
        for ch in range(c):
            for i in range(kh):
                for j in range(kw):
                    for y in range(oh):
                        for xx in range(ow):
                            r, q = y * sh - ph + i * dh, xx * sw - pw + j * dw
                            if 0 <= r < h and 0 <= q < w:
                                out[b, (ch * kh + i) * kw + j, y, xx] = x[b, ch, r, q]
    return out


@pytest.mark.parametrize("conv,args", [
    ("kernel_size: 3", (3, 3, 0, 0, 1, 1, 1, 1)),
    ("kernel_size: 2 stride: 2 pad: 1", (2, 2, 1, 1, 2, 2, 1, 1)),
    ("kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 0 stride_h: 1 stride_w: 2 dilation: 2", (3, 2, 1, 0, 1, 2, 2, 2)),
    ("kernel_size: 3 pad: 2 force_nd_im2col: true", (3, 3, 2, 2, 1, 1, 1, 1)),
])
def test_im2col_forward_against_caffes_loop_and_gradient(backend, conv, args):
    x = RNG.standard_normal((2, 3, 6, 7))
    text = f'name: "c" type: "Im2col" convolution_param {{ {conv} }}'
    layer = make(text, backend, shapes=[x.shape])
    want = ref_im2col_2d(x, *args)
    assert tuple(layer.reshape([x.shape])[0]) == want.shape
    np.testing.assert_array_equal(layer.forward([x])[0], want)
    check_layer_gradient(make(text, backend), [x])


def test_im2col_backward_is_col2im(backend):
    x = RNG.standard_normal((1, 2, 4, 4))
    layer = make('name: "c" type: "Im2col" convolution_param { kernel_size: 3 pad: 1 }', backend, shapes=[x.shape])
    top = layer.forward([x])[0]
    dy = RNG.standard_normal(top.shape)
    dx = layer.backward([dy], [x], [top], [True])[0]
    # col2im: every column value goes back to the input element it was copied from
    want = np.zeros_like(x)
    for ch in range(2):
        for i in range(3):
            for j in range(3):
                for y in range(4):
                    for xx in range(4):
                        r, q = y - 1 + i, xx - 1 + j
                        if 0 <= r < 4 and 0 <= q < 4:
                            want[0, ch, r, q] += dy[0, (ch * 3 + i) * 3 + j, y, xx]
    np.testing.assert_allclose(dx, want, rtol=1e-12)
    assert layer.backward([dy], [x], [top], [False]) == [None]


def test_im2col_nd_and_channel_axis(backend):
    x = RNG.standard_normal((2, 2, 3, 4, 5))  # 3 spatial axes
    layer = make('name: "c" type: "Im2col" convolution_param { kernel_size: 2 kernel_size: 1 kernel_size: 3 }',
                 backend, shapes=[x.shape])
    y = layer.forward([x])[0]
    assert y.shape == (2, 2 * 2 * 1 * 3, 2, 4, 3)
    # channel c*6 + (i*1 + j)*3 + k holds x[:, c, a+i, b+j, d+k]
    np.testing.assert_array_equal(y[:, 1 * 6 + 1 * 3 + 2], x[:, 1, 1:3, 0:4, 2:5])
    check_layer_gradient(make('name: "c" type: "Im2col" convolution_param { kernel_size: 2 stride: 2 pad: 1 }',
                              backend), [x[:, :, :3, :3, :3]])
    # axis 2: (A, B, C, H, W) with A, B batch axes
    x = RNG.standard_normal((2, 3, 2, 4, 4))
    layer = make('name: "c" type: "Im2col" convolution_param { kernel_size: 2 axis: 2 }', backend, shapes=[x.shape])
    y = layer.forward([x])[0]
    assert y.shape == (2, 3, 8, 3, 3)
    np.testing.assert_array_equal(y.reshape(6, 8, 3, 3), ref_im2col_2d(x.reshape(6, 2, 4, 4), 2, 2, 0, 0, 1, 1, 1, 1))


def test_im2col_errors(backend):
    with pytest.raises(RistrettoError, match="kernel_size"):
        make('name: "c" type: "Im2col"', backend, shapes=[(1, 2, 4, 4)])
    with pytest.raises(RistrettoError, match="smaller than"):
        make('name: "c" type: "Im2col" convolution_param { kernel_size: 5 }', backend, shapes=[(1, 2, 4, 4)])


# -- in a net ----------------------------------------------------------------------------------
NET = """
force_backward: true
layer { name: "in" type: "Input" top: "x" top: "label"
        input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }
layer { name: "fc" type: "InnerProduct" bottom: "x" top: "s"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "hinge" type: "HingeLoss" bottom: "s" bottom: "label" top: "hinge" }
layer { name: "mlr_prob" type: "Softmax" bottom: "s" top: "p" }
layer { name: "mlr" type: "MultinomialLogisticLoss" bottom: "p" bottom: "label" top: "mlr" loss_weight: 0.5 }
"""


def test_force_backward_net_does_not_ask_the_losses_for_label_gradients(backend):
    param = text_format.Parse(NET, caffe_pb2.NetParameter())
    net = Net(param, "TRAIN", backend)
    x = RNG.standard_normal((4, 3)).astype(np.float32)
    label = np.array([0.0, 4.0, 2.0, 1.0], dtype=np.float32)  # read by both losses: a Split feeds them
    net.forward({"x": backend.asarray(x), "label": backend.asarray(label)})
    net.zero_diffs()
    diffs = net.backward()
    assert "x" in diffs and "label" not in diffs
    assert float(np.abs(backend.to_numpy(net.layer("fc").diffs[0])).sum()) > 0
    # asking explicitly is refused, as Caffe's LOG(FATAL)
    param.layer[2].propagate_down.extend([True, True])
    net = Net(param, "TRAIN", backend)
    net.forward({"x": backend.asarray(x), "label": backend.asarray(label)})
    with pytest.raises(RistrettoError, match="layer 'hinge' .*cannot backpropagate to label"):
        net.backward()
