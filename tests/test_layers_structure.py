"""Concat, Eltwise, Split, Slice, Flatten, Reshape, Crop, ArgMax, Silence."""
from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from backends import on_backend, reseeded
from gradient_check import check_layer_gradient, f64_backend
from ristretto_cli.errors import RistrettoError
from ristretto_cli.layers import TRAIN, create_layer
from ristretto_cli.proto import caffe_pb2

RNG = np.random.default_rng(0)


def make(text, shapes=None, backend=None):
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    layer = on_backend(create_layer(param, TRAIN, backend or f64_backend()))
    if shapes is not None:
        layer.setup([tuple(s) for s in shapes])
        layer.top_shapes = layer.reshape([tuple(s) for s in shapes])
    return layer


def fwd(text, *bottoms, backend=None):
    layer = make(text, [b.shape for b in bottoms], backend=backend)
    tops = layer.forward(list(bottoms))
    assert [t.shape for t in tops] == layer.top_shapes
    return tops


# -- Concat ----------------------------------------------------------------
@pytest.mark.parametrize("spec,axis", [("", 1), ("concat_param { axis: 0 }", 0),
                                       ("concat_param { axis: -1 }", 3), ("concat_param { concat_dim: 2 }", 2)])
def test_concat_axes(backend, spec, axis):
    shapes = []
    for k in (1, 3):
        s = [2, 3, 4, 5]
        s[axis] = k
        shapes.append(s)
    a, b = RNG.standard_normal(shapes[0]), RNG.standard_normal(shapes[1])
    (top,) = fwd(f'name: "c" type: "Concat" {spec}', a, b, backend=backend)
    np.testing.assert_array_equal(top, np.concatenate([a, b], axis=axis))
    check_layer_gradient(make(f'name: "c" type: "Concat" {spec}', backend=backend), [a, b])


def test_concat_errors_and_single_bottom(backend):
    with pytest.raises(RistrettoError, match="not both"):
        make('name: "c" type: "Concat" concat_param { axis: 1 concat_dim: 1 }', [(2, 3)], backend=backend)
    with pytest.raises(RistrettoError, match="must match"):
        make('name: "c" type: "Concat"', [(2, 3, 4), (2, 3, 5)], backend=backend)
    with pytest.raises(RistrettoError, match="same number of axes"):
        make('name: "c" type: "Concat"', [(2, 3, 4), (2, 3)], backend=backend)
    a = RNG.standard_normal((2, 3))
    assert fwd('name: "c" type: "Concat"', a, backend=backend)[0] is a


def test_concat_backward_skips_bottoms_not_propagated(backend):
    a, b = RNG.standard_normal((2, 2)), RNG.standard_normal((2, 3))
    layer = make('name: "c" type: "Concat"', [a.shape, b.shape], backend=backend)
    top = layer.forward([a, b])
    d = np.arange(10.0).reshape(2, 5)
    got = layer.backward([d], [a, b], top, [False, True])
    assert got[0] is None
    np.testing.assert_array_equal(got[1], d[:, 2:])


# -- Eltwise ---------------------------------------------------------------
A, B, C = (RNG.standard_normal((2, 3, 4)) for _ in range(3))


def test_eltwise_sum_with_coeff(backend):
    (top,) = fwd('name: "e" type: "Eltwise" eltwise_param { operation: SUM coeff: 1 coeff: -0.5 coeff: 2 }', A, B, C, backend=backend)
    np.testing.assert_allclose(top, A - 0.5 * B + 2 * C, rtol=1e-15)
    (top,) = fwd('name: "e" type: "Eltwise"', A, B, backend=backend)  # SUM is the default
    np.testing.assert_array_equal(top, A + B)


def test_eltwise_prod_and_max(backend):
    (top,) = fwd('name: "e" type: "Eltwise" eltwise_param { operation: PROD }', A, B, C, backend=backend)
    np.testing.assert_allclose(top, A * B * C, rtol=1e-15)
    (top,) = fwd('name: "e" type: "Eltwise" eltwise_param { operation: MAX }', A, B, C, backend=backend)
    np.testing.assert_array_equal(top, np.maximum(np.maximum(A, B), C))


def test_eltwise_max_tie_routing_follows_caffe(backend):
    # First pair: a tie goes to bottom 1; later bottoms must be strictly greater.
    a = np.array([1.0, 1.0, 0.0])
    b = np.array([1.0, 0.0, 2.0])
    c = np.array([1.0, 1.0, 2.0])
    layer = make('name: "e" type: "Eltwise" eltwise_param { operation: MAX }', [(3,)] * 3, backend=backend)
    top = layer.forward([a, b, c])
    da, db, dc = layer.backward([np.array([10.0, 20.0, 30.0])], [a, b, c], top, [True] * 3)
    np.testing.assert_array_equal(da, [0, 20, 0])
    np.testing.assert_array_equal(db, [10, 0, 30])
    np.testing.assert_array_equal(dc, [0, 0, 0])


@pytest.mark.parametrize("spec", ["operation: SUM coeff: 0.5 coeff: -2 coeff: 3",
                                  "operation: PROD",
                                  "operation: PROD stable_prod_grad: false",
                                  "operation: MAX"])
def test_eltwise_gradients(backend, spec):
    # distinct values (|a - b| large relative to eps) keep MAX away from its kinks
    bottoms = [A, B + 0.3, C - 0.3]
    check_layer_gradient(make(f'name: "e" type: "Eltwise" eltwise_param {{ {spec} }}', backend=backend), bottoms)


def test_eltwise_errors(backend):
    with pytest.raises(RistrettoError, match="coeff"):
        make('name: "e" type: "Eltwise" eltwise_param { coeff: 1 }', [(2,), (2,)], backend=backend)
    with pytest.raises(RistrettoError, match="SUM"):
        make('name: "e" type: "Eltwise" eltwise_param { operation: PROD coeff: 1 coeff: 2 }', [(2,), (2,)], backend=backend)
    with pytest.raises(RistrettoError, match="shape"):
        make('name: "e" type: "Eltwise"', [(2, 3), (3, 2)], backend=backend)


# -- Split -----------------------------------------------------------------
def test_split_tops_are_the_bottom_and_backward_sums(backend):
    layer = make('name: "s" type: "Split" bottom: "x" top: "a" top: "b" top: "c"', [A.shape], backend=backend)
    assert layer.top_shapes == [A.shape] * 3
    tops = layer.forward([A])
    assert all(t is A for t in tops)
    (d,) = layer.backward([B, None, C], [A], tops, [True])
    np.testing.assert_array_equal(d, B + C)
    assert layer.backward([None, None, None], [A], tops, [True]) == [None]
    check_layer_gradient(make('name: "s" type: "Split" top: "a" top: "b"', backend=backend), [A])


# -- Slice -----------------------------------------------------------------
X = RNG.standard_normal((6, 5, 4))


@pytest.mark.parametrize("spec,axis,points", [
    ('slice_param { axis: 1 slice_point: 1 slice_point: 3 }', 1, [1, 3]),
    ('slice_param { axis: 0 }', 0, [2, 4]),
    ('slice_param { slice_dim: 2 slice_point: 1 slice_point: 2 }', 2, [1, 2]),
    ('slice_param { axis: -1 slice_point: 3 slice_point: 4 }', 2, [3, 4]),
])
def test_slice_points(backend, spec, axis, points):
    text = f'name: "s" type: "Slice" top: "a" top: "b" top: "c" {spec}'
    tops = fwd(text, X, backend=backend)
    for got, want in zip(tops, np.split(X, points, axis=axis)):
        np.testing.assert_array_equal(got, want)
    check_layer_gradient(make(text, backend=backend), [X])


def test_slice_backward_with_missing_top_diff_and_errors(backend):
    layer = make('name: "s" type: "Slice" top: "a" top: "b" slice_param { slice_point: 2 }', [X.shape], backend=backend)
    tops = layer.forward([X])
    (d,) = layer.backward([None, np.ones((6, 3, 4))], [X], tops, [True])
    np.testing.assert_array_equal(d[:, :2], 0)
    np.testing.assert_array_equal(d[:, 2:], 1)
    with pytest.raises(RistrettoError, match="evenly"):
        make('name: "s" type: "Slice" top: "a" top: "b"', [X.shape], backend=backend)
    with pytest.raises(RistrettoError, match="slice_point"):
        make('name: "s" type: "Slice" top: "a" top: "b" slice_param { slice_point: 1 slice_point: 2 }', [X.shape], backend=backend)
    with pytest.raises(RistrettoError, match="increase"):
        make('name: "s" type: "Slice" top: "a" top: "b" top: "c" slice_param { slice_point: 3 slice_point: 2 }',
             [X.shape], backend=backend)


# -- Flatten / Reshape -----------------------------------------------------
@pytest.mark.parametrize("spec,shape", [("", (2, 60)),
                                        ("flatten_param { axis: 2 }", (2, 3, 20)),
                                        ("flatten_param { axis: 1 end_axis: 2 }", (2, 12, 5)),
                                        ("flatten_param { axis: 0 end_axis: -2 }", (24, 5))])
def test_flatten(backend, spec, shape):
    x = RNG.standard_normal((2, 3, 4, 5))
    (top,) = fwd(f'name: "f" type: "Flatten" {spec}', x, backend=backend)
    assert top.shape == shape
    assert np.shares_memory(top, x)  # Caffe shares the data
    np.testing.assert_array_equal(top.reshape(-1), x.reshape(-1))
    check_layer_gradient(make(f'name: "f" type: "Flatten" {spec}', backend=backend), [x])


@pytest.mark.parametrize("spec,shape", [
    ("shape { dim: 0 dim: -1 }", (2, 60)),
    ("shape { dim: 0 dim: 0 dim: 20 }", (2, 3, 20)),
    ("shape { dim: -1 dim: 4 dim: 5 }", (6, 4, 5)),
    ("shape { dim: 6 dim: 2 dim: 2 dim: 5 }", (6, 2, 2, 5)),
    ("shape { dim: 2 dim: 2 } axis: 2 num_axes: 1", (2, 3, 2, 2, 5)),
    ("shape { dim: -1 } axis: 1", (2, 60)),
    ("shape { dim: 1 } axis: 0 num_axes: 0", (1, 2, 3, 4, 5)),
    ("shape { dim: 1 dim: 1 } axis: -1 num_axes: 0", (2, 3, 4, 5, 1, 1)),
    ("shape { dim: 0 dim: -1 } axis: -3", (2, 3, 4, 5)),
    ("shape { dim: 12 } axis: 1 num_axes: 2", (2, 12, 5)),
])
def test_reshape(backend, spec, shape):
    x = RNG.standard_normal((2, 3, 4, 5))
    (top,) = fwd(f'name: "r" type: "Reshape" reshape_param {{ {spec} }}', x, backend=backend)
    assert top.shape == shape
    np.testing.assert_array_equal(top.reshape(-1), x.reshape(-1))
    check_layer_gradient(make(f'name: "r" type: "Reshape" reshape_param {{ {spec} }}', backend=backend), [x], max_checks=20)


def test_reshape_follows_batch_size_in_forward(backend):
    layer = make('name: "r" type: "Reshape" reshape_param { shape { dim: 0 dim: -1 } }', [(2, 3, 4)], backend=backend)
    assert layer.forward([np.zeros((7, 3, 4))])[0].shape == (7, 12)


@pytest.mark.parametrize("spec,match", [
    ("shape { dim: -1 dim: -1 }", "several -1"),
    ("shape { dim: 7 dim: -1 }", "infer"),
    ("shape { dim: 7 dim: 9 }", "elements"),
    ("shape { dim: 0 dim: 0 dim: 0 dim: 0 dim: 0 }", "no corresponding"),
    ("shape { dim: 1 } axis: 6", "axis"),
    ("shape { dim: -2 dim: 60 }", "dimension -2"),
])
def test_reshape_errors(backend, spec, match):
    with pytest.raises(RistrettoError, match=match):
        make(f'name: "r" type: "Reshape" reshape_param {{ {spec} }}', [(2, 3, 4, 5)], backend=backend)


# -- Crop ------------------------------------------------------------------
Big = RNG.standard_normal((2, 3, 8, 9))


@pytest.mark.parametrize("spec,ref_shape,region", [
    ("", (1, 1, 5, 4), np.s_[:, :, 0:5, 0:4]),
    ("crop_param { axis: 2 offset: 2 }", (1, 1, 5, 4), np.s_[:, :, 2:7, 2:6]),
    ("crop_param { axis: 2 offset: 3 offset: 1 }", (1, 1, 5, 4), np.s_[:, :, 3:8, 1:5]),
    ("crop_param { axis: 1 offset: 1 offset: 0 offset: 4 }", (1, 2, 6, 5), np.s_[:, 1:3, 0:6, 4:9]),
    ("crop_param { axis: -1 offset: 5 }", (1, 1, 1, 4), np.s_[:, :, :, 5:9]),
])
def test_crop_offsets(backend, spec, ref_shape, region):
    ref = np.zeros(ref_shape)
    (top,) = fwd(f'name: "c" type: "Crop" {spec}', Big, ref, backend=backend)
    np.testing.assert_array_equal(top, Big[region])
    layer = make(f'name: "c" type: "Crop" {spec}', [Big.shape, ref.shape], backend=backend)
    d = RNG.standard_normal(top.shape)
    got = layer.backward([d], [Big, ref], [top], [True, True])
    assert got[1] is None
    want = np.zeros_like(Big)
    want[region] = d
    np.testing.assert_array_equal(got[0], want)
    check_layer_gradient(make(f'name: "c" type: "Crop" {spec}', backend=backend), [Big, ref], check_bottoms=[0], max_checks=50)


def test_crop_errors(backend):
    with pytest.raises(RistrettoError, match="out of bounds"):
        make('name: "c" type: "Crop" crop_param { offset: 4 }', [Big.shape, (1, 1, 5, 4)], backend=backend)
    with pytest.raises(RistrettoError, match="offsets"):
        make('name: "c" type: "Crop" crop_param { offset: 1 offset: 1 offset: 1 }', [Big.shape, (1, 1, 5, 4)], backend=backend)


# -- ArgMax ----------------------------------------------------------------
def test_argmax_per_item_top_k_and_values(backend):
    x = np.array([[[3.0, 1.0], [5.0, 1.0]], [[0.0, 2.0], [2.0, -1.0]]])  # (2, 2, 2) -> 4 values per item
    (top,) = fwd('name: "a" type: "ArgMax"', x, backend=backend)
    assert top.shape == (2, 1, 1)
    np.testing.assert_array_equal(top.reshape(-1), [2, 2])  # item 1 ties 1 and 2: larger index wins
    (top,) = fwd('name: "a" type: "ArgMax" argmax_param { top_k: 2 out_max_val: true }', x, backend=backend)
    assert top.shape == (2, 2, 2)
    np.testing.assert_array_equal(top[0], [[2, 0], [5, 3]])
    np.testing.assert_array_equal(top[1], [[2, 1], [2, 2]])


def test_argmax_along_axis(backend):
    x = RNG.standard_normal((2, 5, 3, 4))
    (idx,) = fwd('name: "a" type: "ArgMax" argmax_param { axis: 1 }', x, backend=backend)
    assert idx.shape == (2, 1, 3, 4)
    np.testing.assert_array_equal(idx[:, 0], x.argmax(axis=1))
    (val,) = fwd('name: "a" type: "ArgMax" argmax_param { axis: 1 top_k: 2 out_max_val: true }', x, backend=backend)
    np.testing.assert_array_equal(val, -np.sort(-x, axis=1)[:, :2])
    (idx,) = fwd('name: "a" type: "ArgMax" argmax_param { axis: -1 top_k: 3 }', x, backend=backend)
    np.testing.assert_array_equal(idx, np.argsort(-x, axis=-1)[..., :3])


def test_argmax_top_k_too_large(backend):
    with pytest.raises(RistrettoError, match="top_k"):
        make('name: "a" type: "ArgMax" argmax_param { top_k: 7 }', [(2, 3, 2)], backend=backend)


# -- Silence ---------------------------------------------------------------
def test_silence(backend):
    layer = make('name: "s" type: "Silence"', [A.shape, B.shape], backend=backend)
    assert layer.top_shapes == [] and layer.forward([A, B]) == []
    da, db = layer.backward([], [A, B], [], [True, False])
    np.testing.assert_array_equal(da, 0)
    assert db is None
