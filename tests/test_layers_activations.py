"""Neuron layers: forward against the formulas of Caffe's *_layer.cpp, backward against
finite differences (float64)."""
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


def make(text, phase=TEST, backend=None, shapes=None):
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    layer = on_backend(create_layer(param, phase, backend or f64_backend()))
    if shapes is not None:
        layer.setup(shapes)
        layer.reshape(shapes)
    return layer


def away_from_zero(shape, seed=0, margin=0.1):
    """Random values with |x| >= margin, so kinks at 0 are not probed by finite differences."""
    x = np.random.default_rng(seed).uniform(-2, 2, size=shape)
    return np.where(np.abs(x) < margin, np.sign(x + 1e-12) * margin + x, x)


X = away_from_zero((2, 3, 4, 5))


def run(layer, x):
    layer.setup([x.shape])
    assert layer.reshape([x.shape]) == [x.shape]
    return layer.forward([x.copy()])[0]


# -- ReLU ------------------------------------------------------------------
def test_relu_forward_with_negative_slope(backend):
    y = run(make('name: "r" type: "ReLU" relu_param { negative_slope: 0.1 }', backend=backend), X)
    np.testing.assert_allclose(y, np.where(X > 0, X, np.float32(0.1) * X), rtol=1e-15)


def test_relu_plain_keeps_float32(backend):
    x = X.astype(np.float32)
    y = run(make('name: "r" type: "ReLU"', backend=reseeded(backend, 0)), x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, np.maximum(x, 0))


@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_relu_gradient(backend, slope):
    check_layer_gradient(make(f'name: "r" type: "ReLU" relu_param {{ negative_slope: {slope} }}', backend=backend), [X])


def test_relu_gradient_at_zero_is_slope_like_caffe(backend):
    layer = make('name: "r" type: "ReLU" relu_param { negative_slope: 0.5 }', shapes=[(3,)], backend=backend)
    x = np.array([-1.0, 0.0, 1.0])
    d = layer.backward([np.ones(3)], [x], layer.forward([x]), [True])[0]
    np.testing.assert_array_equal(d, [0.5, 0.5, 1.0])  # Caffe: (x > 0) + slope * (x <= 0)


# -- PReLU -----------------------------------------------------------------
def test_prelu_default_filler_is_0_25_per_channel(backend):
    layer = make('name: "p" type: "PReLU"', shapes=[X.shape], backend=backend)
    assert layer.blobs[0].shape == (3,)
    np.testing.assert_array_equal(layer.blobs[0], 0.25)
    y = layer.forward([X])[0]
    np.testing.assert_allclose(y, np.where(X > 0, X, 0.25 * X))


def test_prelu_per_channel_slopes_and_shared(backend):
    layer = make('name: "p" type: "PReLU"', shapes=[X.shape], backend=backend)
    layer.blobs[0] = np.array([0.1, -0.5, 2.0])
    y = layer.forward([X])[0]
    np.testing.assert_allclose(y, np.where(X > 0, X, layer.blobs[0][None, :, None, None] * X))
    shared = make('name: "p" type: "PReLU" prelu_param { channel_shared: true '
                  'filler { type: "constant" value: 0.3 } }', shapes=[X.shape], backend=backend)
    assert shared.blobs[0].size == 1 and shared.blobs[0].shape == ()
    np.testing.assert_allclose(shared.forward([X])[0], np.where(X > 0, X, np.float32(0.3) * X))


def test_prelu_two_axis_bottom_and_bad_slope_count(backend):
    x = away_from_zero((4, 3), seed=1)
    layer = make('name: "p" type: "PReLU"', shapes=[x.shape], backend=backend)
    np.testing.assert_allclose(layer.forward([x])[0], np.where(x > 0, x, 0.25 * x))
    layer.blobs[0] = np.zeros(5)
    with pytest.raises(RistrettoError):
        layer.reshape([x.shape])
    with pytest.raises(RistrettoError):
        make('name: "p" type: "PReLU"', shapes=[(5,)], backend=backend)


@pytest.mark.parametrize("shared", ["false", "true"])
def test_prelu_gradient_bottom_and_slopes(backend, shared):
    layer = make(f'name: "p" type: "PReLU" prelu_param {{ channel_shared: {shared} '
                 'filler { type: "uniform" min: -0.5 max: 0.8 } }', backend=backend)
    check_layer_gradient(layer, [X])


# -- smooth element-wise functions -----------------------------------------
SMOOTH = [
    ('name: "s" type: "Sigmoid"', lambda x: 1 / (1 + np.exp(-x))),
    ('name: "t" type: "TanH"', np.tanh),
    ('name: "e" type: "ELU" elu_param { alpha: 0.7 }',
     lambda x: np.where(x > 0, x, np.float32(0.7) * (np.exp(x) - 1))),
    ('name: "e" type: "ELU"', lambda x: np.where(x > 0, x, np.exp(x) - 1)),
    ('name: "b" type: "BNLL"', lambda x: np.log(1 + np.exp(x))),
    ('name: "a" type: "AbsVal"', np.abs),
    ('name: "x" type: "Exp"', np.exp),
    ('name: "x" type: "Exp" exp_param { base: 2 scale: 0.5 shift: -1 }', lambda x: 2.0 ** (-1 + 0.5 * x)),
    ('name: "x" type: "Exp" exp_param { scale: -2 shift: 0.5 }', lambda x: np.exp(0.5 - 2 * x)),
    ('name: "l" type: "Log" log_param { shift: 3 }', lambda x: np.log(3 + x)),
    ('name: "l" type: "Log" log_param { base: 10 scale: 2 shift: 5 }', lambda x: np.log10(5 + 2 * x)),
    ('name: "l" type: "Log" log_param { base: 2 scale: -1 shift: 4 }', lambda x: np.log2(4 - x)),
    ('name: "w" type: "Power" power_param { power: 2 scale: 1.5 shift: 0.5 }', lambda x: (0.5 + 1.5 * x) ** 2),
    ('name: "w" type: "Power" power_param { power: 3 scale: 2 }', lambda x: (2 * x) ** 3),
    ('name: "w" type: "Power" power_param { power: 0.5 scale: 0.5 shift: 2 }', lambda x: np.sqrt(2 + 0.5 * x)),
    ('name: "w" type: "Power" power_param { power: -1.5 shift: 3 }', lambda x: (3 + x) ** -1.5),
    ('name: "w" type: "Power" power_param { scale: -3 shift: 1 }', lambda x: 1 - 3 * x),
]


@pytest.mark.parametrize("text,ref", SMOOTH, ids=[t.split('"')[3] + str(i) for i, (t, _) in enumerate(SMOOTH)])
def test_elementwise_forward_and_gradient(backend, text, ref):
    x = away_from_zero((2, 3, 3, 2), seed=3)
    np.testing.assert_allclose(run(make(text, backend=backend), x), ref(x), rtol=1e-6, atol=1e-12)
    check_layer_gradient(make(text, backend=backend), [x])


def test_large_inputs_do_not_overflow(backend):
    x = np.array([-1000.0, -60.0, 0.0, 60.0, 1000.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s = run(make('name: "s" type: "Sigmoid"', backend=backend), x)
        b = run(make('name: "b" type: "BNLL"', backend=backend), x)
    np.testing.assert_allclose(s, [0, 1 / (1 + math.exp(60)), 0.5, 1 / (1 + math.exp(-60)), 1])
    np.testing.assert_allclose(b, [0, math.log1p(math.exp(-60)), math.log(2), 60 + math.log1p(math.exp(-60)), 1000])
    layer = make('name: "b" type: "BNLL"', shapes=[x.shape], backend=backend)
    d = layer.backward([np.ones(5)], [x], [b], [True])[0]  # Caffe caps exp at x = 50
    np.testing.assert_allclose(d[-1], math.exp(50) / (math.exp(50) + 1))


def test_power_constant_cases(backend):
    x = away_from_zero((3, 4))
    y = run(make('name: "w" type: "Power" power_param { power: 0 scale: 2 shift: 5 }', backend=backend), x)
    np.testing.assert_array_equal(y, 1.0)
    layer = make('name: "w" type: "Power" power_param { power: 2 scale: 0 shift: 3 }', backend=backend)
    y = run(layer, x)
    np.testing.assert_array_equal(y, 9.0)
    d = layer.backward([np.ones_like(x)], [x], [y], [True])[0]
    np.testing.assert_array_equal(d, 0.0)


def test_absval_gradient_is_sign(backend):
    layer = make('name: "a" type: "AbsVal"', shapes=[(3,)], backend=backend)
    x = np.array([-2.0, 0.0, 3.0])
    d = layer.backward([np.full(3, 5.0)], [x], layer.forward([x]), [True])[0]
    np.testing.assert_array_equal(d, [-5.0, 0.0, 5.0])


@pytest.mark.parametrize("text", ['name: "x" type: "Exp" exp_param { base: -2 }',
                                  'name: "x" type: "Exp" exp_param { base: 0 }',
                                  'name: "l" type: "Log" log_param { base: 1 }',
                                  'name: "l" type: "Log" log_param { base: -3 }'])
def test_bad_base_is_an_error(backend, text):
    with pytest.raises(RistrettoError, match="base"):
        make(text, shapes=[(2, 2)], backend=backend)


def test_propagate_down_false_gives_none(backend):
    layer = make('name: "t" type: "TanH"', shapes=[X.shape], backend=backend)
    y = layer.forward([X])
    assert layer.backward([np.ones_like(X)], [X], y, [False]) == [None]
    assert layer.backward([None], [X], y, [True]) == [None]


# -- Dropout ---------------------------------------------------------------
def test_dropout_test_phase_is_identity(backend):
    layer = make('name: "d" type: "Dropout" dropout_param { dropout_ratio: 0.7 }', phase=TEST, backend=backend)
    y = run(layer, X)
    np.testing.assert_array_equal(y, X)
    d = layer.backward([X * 2], [X], [y], [True])[0]
    np.testing.assert_array_equal(d, X * 2)


def test_dropout_train_masks_and_scales(backend):
    x = np.random.default_rng(0).uniform(1, 2, size=(200, 50))
    layer = make('name: "d" type: "Dropout" dropout_param { dropout_ratio: 0.3 }', phase=TRAIN,
                 backend=reseeded(backend, 7))
    y = run(layer, x)
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(y[kept], x[kept] / 0.7, rtol=1e-6)
    g = np.random.default_rng(1).standard_normal(x.shape)
    d = layer.backward([g], [x], [y], [True])[0]
    np.testing.assert_allclose(d, np.where(kept, g / 0.7, 0), rtol=1e-6)
    # a fresh mask every forward, reproducible from the seed
    y2 = layer.forward([x])[0]
    assert (y2 != 0).tolist() != kept.tolist()
    again = make('name: "d" type: "Dropout" dropout_param { dropout_ratio: 0.3 }', phase=TRAIN,
                 backend=reseeded(backend, 7))
    np.testing.assert_array_equal(run(again, x), y)


class _FixedRngBackend(Backend):
    """A backend whose generator restarts at every use, so Dropout draws the same mask each forward."""

    @property
    def rng(self):
        return self.xp.random.default_rng(3)

    @rng.setter
    def rng(self, value):
        pass


def test_dropout_train_gradient_with_fixed_mask(backend):
    layer = make('name: "d" type: "Dropout" dropout_param { dropout_ratio: 0.4 }', phase=TRAIN,
                 backend=_FixedRngBackend(backend.xp, device=backend.device))
    check_layer_gradient(layer, [X])


@pytest.mark.parametrize("text", [t for t, _ in SMOOTH] + ['name: "r" type: "ReLU" relu_param { negative_slope: 0.1 }',
                                                         'name: "p" type: "PReLU"'])
def test_float32_in_float32_out(backend, text):
    x = away_from_zero((2, 3, 2), seed=5).astype(np.float32)
    layer = make(text, backend=reseeded(backend, 0))
    y = run(layer, x)
    assert y.dtype == np.float32
    layer.zero_diffs()  # the caller makes the diffs (Net.backward does)
    d = layer.backward([np.ones_like(y)], [x], [y], [True])[0]
    assert d.dtype == np.float32
