"""BatchNorm (Caffe's three statistic blobs), Scale and Bias."""
from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from backends import on_backend, reseeded
from gradient_check import check_layer_gradient, f64_backend
from ristretto_cli.backend import Backend
from ristretto_cli.errors import RistrettoError
from ristretto_cli.layers import TEST, TRAIN, create_layer
from ristretto_cli.proto import caffe_pb2

RNG = np.random.default_rng(0)
X = RNG.standard_normal((4, 3, 2, 5)) * np.array([1.0, 3.0, 0.5])[None, :, None, None] + \
    np.array([0.5, -2.0, 4.0])[None, :, None, None]


def make(text, phase=TRAIN, shapes=None, backend=None):
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    layer = on_backend(create_layer(param, phase, backend or f64_backend()))
    if shapes is not None:
        layer.setup([tuple(s) for s in shapes])
        layer.top_shapes = layer.reshape([tuple(s) for s in shapes])
    return layer


# -- BatchNorm -------------------------------------------------------------
def test_batchnorm_blobs_and_solver_masking(backend):
    layer = make('name: "bn" type: "BatchNorm"', shapes=[X.shape], backend=backend)
    assert [b.shape for b in layer.blobs] == [(3,), (3,), (1,)]
    assert all(b.dtype == np.float32 and not b.any() for b in layer.blobs)
    assert layer.param_multipliers() == [(0.0, 1.0)] * 3
    with pytest.raises(RistrettoError, match="lr_mult"):
        make('name: "bn" type: "BatchNorm" param { lr_mult: 1 }', shapes=[X.shape], backend=backend)
    make('name: "bn" type: "BatchNorm" param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 }',
         shapes=[X.shape], backend=backend)


def test_batchnorm_global_stats_divide_by_the_scale_factor(backend):
    layer = make('name: "bn" type: "BatchNorm" batch_norm_param { eps: 0.001 }', phase=TEST, shapes=[X.shape], backend=backend)
    assert layer.use_global_stats
    mean, var, factor = np.array([1.0, -2.0, 0.5]), np.array([4.0, 0.25, 1.0]), 2.5
    layer.blobs = [mean * factor, var * factor, np.array([factor])]
    y = layer.forward([X])[0]
    want = (X - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + np.float32(0.001))
    np.testing.assert_allclose(y, want, rtol=1e-12)
    # a zero scale factor means zero mean and variance (Caffe's guard)
    layer.blobs[2] = np.array([0.0])
    np.testing.assert_allclose(layer.forward([X])[0], X / np.sqrt(float(np.float32(0.001))), rtol=1e-12)


def test_batchnorm_train_uses_batch_stats_and_updates_running_sums(backend):
    layer = make('name: "bn" type: "BatchNorm" batch_norm_param { moving_average_fraction: 0.9 }',
                 shapes=[X.shape], backend=backend)
    assert not layer.use_global_stats
    y = layer.forward([X])[0]
    mu = X.mean(axis=(0, 2, 3))
    var = X.var(axis=(0, 2, 3))
    eps = float(np.float32(1e-5))
    np.testing.assert_allclose(y, (X - mu[None, :, None, None]) / np.sqrt(var[None, :, None, None] + eps),
                               rtol=1e-6)
    m = X.size // 3
    f = float(np.float32(0.9))
    np.testing.assert_allclose(layer.blobs[2], [1.0])
    np.testing.assert_allclose(layer.blobs[0], mu, rtol=1e-6)
    np.testing.assert_allclose(layer.blobs[1], var * m / (m - 1), rtol=1e-6)
    X2 = X * 2 + 1
    layer.forward([X2])
    mu2, var2 = X2.mean(axis=(0, 2, 3)), X2.var(axis=(0, 2, 3))
    np.testing.assert_allclose(layer.blobs[2], [1.0 * f + 1], rtol=1e-6)
    np.testing.assert_allclose(layer.blobs[0], mu2 + f * mu, rtol=1e-6)
    np.testing.assert_allclose(layer.blobs[1], (var2 + f * var) * m / (m - 1), rtol=1e-6)
    # the estimates a TEST net then uses: sums / factor
    test = make('name: "bn" type: "BatchNorm"', phase=TEST, shapes=[X.shape], backend=backend)
    test.blobs = layer.blobs
    est_mean = (mu2 + f * mu) / (1 + f)
    est_var = (var2 + f * var) * m / (m - 1) / (1 + f)
    np.testing.assert_allclose(test.forward([X])[0],
                               (X - est_mean[None, :, None, None]) / np.sqrt(est_var[None, :, None, None] + eps),
                               rtol=1e-5)


def test_batchnorm_use_global_stats_overrides_phase(backend):
    layer = make('name: "bn" type: "BatchNorm" batch_norm_param { use_global_stats: true }', shapes=[X.shape], backend=backend)
    assert layer.use_global_stats
    layer.forward([X])
    assert not layer.blobs[2].any()  # no running update with global stats
    layer = make('name: "bn" type: "BatchNorm" batch_norm_param { use_global_stats: false }', phase=TEST,
                 shapes=[X.shape], backend=backend)
    assert not layer.use_global_stats


def test_batchnorm_two_axis_bottom(backend):
    x = RNG.standard_normal((8, 4))
    layer = make('name: "bn" type: "BatchNorm"', shapes=[x.shape], backend=backend)
    y = layer.forward([x])[0]
    np.testing.assert_allclose(y, (x - x.mean(0)) / np.sqrt(x.var(0) + float(np.float32(1e-5))), rtol=1e-6)
    with pytest.raises(RistrettoError, match="channels"):
        layer.reshape([(8, 5)])


@pytest.mark.parametrize("spec,phase", [("", TRAIN), ("", TEST),
                                        ("batch_norm_param { use_global_stats: true }", TRAIN)])
def test_batchnorm_gradient(backend, spec, phase):
    layer = make(f'name: "bn" type: "BatchNorm" {spec}', phase=phase, backend=backend)
    if phase == TEST or "true" in spec:
        layer.setup([X.shape])
        layer.blobs = [np.array([1.0, -2.0, 0.5]), np.array([4.0, 0.25, 1.0]), np.array([1.0])]
        check_layer_gradient(layer, [X], setup=False, check_params=False)
    else:
        check_layer_gradient(layer, [X], check_params=False)


def test_batchnorm_keeps_float32(backend):
    x = X.astype(np.float32)
    layer = make('name: "bn" type: "BatchNorm"', shapes=[x.shape], backend=reseeded(backend, 0))
    y = layer.forward([x])[0]
    assert y.dtype == np.float32 and all(b.dtype == np.float32 for b in layer.blobs)
    d = layer.backward([np.ones_like(y)], [x], [y], [True])[0]
    assert d.dtype == np.float32


# -- Scale -----------------------------------------------------------------
def test_scale_default_filler_is_one_and_bias_zero(backend):
    layer = make('name: "s" type: "Scale" scale_param { bias_term: true }', shapes=[X.shape], backend=backend)
    assert [b.shape for b in layer.blobs] == [(3,), (3,)]
    np.testing.assert_array_equal(layer.blobs[0], 1)
    np.testing.assert_array_equal(layer.blobs[1], 0)
    layer.blobs = [np.array([2.0, -1.0, 0.5]), np.array([0.1, 0.2, 0.3])]
    np.testing.assert_allclose(layer.forward([X])[0],
                               X * layer.blobs[0][None, :, None, None] + layer.blobs[1][None, :, None, None])


@pytest.mark.parametrize("spec,pshape", [
    ("", (3,)),
    ("scale_param { axis: 1 num_axes: 2 }", (3, 2)),
    ("scale_param { axis: 0 num_axes: -1 }", (4, 3, 2, 5)),
    ("scale_param { axis: -1 }", (5,)),
    ("scale_param { num_axes: 0 }", ()),
    ("scale_param { axis: 2 num_axes: 2 bias_term: true }", (2, 5)),
])
def test_scale_learned_parameter_shapes_and_gradient(backend, spec, pshape):
    text = f'name: "s" type: "Scale" {spec}'
    layer = make(text, shapes=[X.shape], backend=backend)
    assert layer.blobs[0].shape == pshape
    s = RNG.standard_normal(pshape)
    layer.blobs[0] = s
    axis = {(3,): 1, (3, 2): 1, (4, 3, 2, 5): 0, (5,): 3, (): 0, (2, 5): 2}[pshape]
    expanded = s.reshape((1,) * axis + pshape + (1,) * (4 - axis - len(pshape)))
    want = X * expanded
    if len(layer.blobs) == 2:
        want = want + layer.blobs[1].reshape(expanded.shape)
    np.testing.assert_allclose(layer.forward([X])[0], want, rtol=1e-15)
    check_layer_gradient(make(text, backend=backend), [X], max_checks=60)


@pytest.mark.parametrize("bias", ["false", "true"])
def test_scale_with_second_bottom(backend, bias):
    s = RNG.standard_normal((3, 2))
    text = f'name: "s" type: "Scale" scale_param {{ bias_term: {bias} bias_filler {{ type: "gaussian" }} }}'
    layer = make(text, shapes=[X.shape, s.shape], backend=backend)
    assert len(layer.blobs) == (1 if bias == "true" else 0)
    if layer.blobs:
        assert layer.blobs[0].shape == (3, 2)
    want = X * s[None, :, :, None] + (layer.blobs[0][None, :, :, None] if layer.blobs else 0)
    np.testing.assert_allclose(layer.forward([X, s])[0], want, rtol=1e-15)
    check_layer_gradient(make(text, backend=backend), [X, s], max_checks=60)


def test_scale_shape_mismatch(backend):
    with pytest.raises(RistrettoError, match="does not match"):
        make('name: "s" type: "Scale"', shapes=[X.shape, (4,)], backend=backend)
    with pytest.raises(RistrettoError, match="num_axes"):
        make('name: "s" type: "Scale" scale_param { axis: 2 num_axes: 3 }', shapes=[X.shape], backend=backend)


def test_scale_param_gradient_accumulates(backend):
    layer = make('name: "s" type: "Scale" scale_param { bias_term: true }', shapes=[X.shape], backend=backend)
    y = layer.forward([X])
    d = RNG.standard_normal(X.shape)
    layer.zero_diffs()
    layer.backward([d], [X], y, [False])
    layer.backward([d], [X], y, [False])
    np.testing.assert_allclose(layer.diffs[0], 2 * (d * X).sum(axis=(0, 2, 3)))
    np.testing.assert_allclose(layer.diffs[1], 2 * d.sum(axis=(0, 2, 3)))


# -- Bias ------------------------------------------------------------------
@pytest.mark.parametrize("spec,pshape", [("", (3,)), ("bias_param { axis: 2 num_axes: -1 }", (2, 5)),
                                         ("bias_param { num_axes: 0 }", ())])
def test_bias_learned(backend, spec, pshape):
    text = f'name: "b" type: "Bias" {spec}'
    layer = make(text, shapes=[X.shape], backend=backend)
    assert layer.blobs[0].shape == pshape
    np.testing.assert_array_equal(layer.blobs[0], 0)
    check_layer_gradient(make(text, backend=backend), [X], max_checks=60)


def test_bias_second_bottom(backend):
    b = RNG.standard_normal((2, 5))
    text = 'name: "b" type: "Bias" bias_param { axis: 2 }'
    layer = make(text, shapes=[X.shape, b.shape], backend=backend)
    assert layer.blobs == []
    np.testing.assert_allclose(layer.forward([X, b])[0], X + b[None, None])
    check_layer_gradient(make(text, backend=backend), [X, b], max_checks=60)
