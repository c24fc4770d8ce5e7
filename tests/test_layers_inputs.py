"""Input and DummyData."""
from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from backends import on_backend, reseeded
from ristretto_cli.backend import Backend
from ristretto_cli.errors import RistrettoError
from ristretto_cli.layers import TEST, create_layer
from ristretto_cli.proto import caffe_pb2


def make(text, seed=0, backend=None):
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    layer = on_backend(create_layer(param, TEST, reseeded(backend, seed) if backend else Backend(np, seed)))
    layer.setup([])
    return layer


def test_input_one_shape_per_top_or_shared(backend):
    layer = make('name: "in" type: "Input" top: "data" top: "label" '
                 'input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } shape { dim: 2 } }', backend=backend)
    assert layer.reshape([]) == [(2, 3, 4, 4), (2,)]
    tops = layer.forward([])
    assert [t.shape for t in tops] == [(2, 3, 4, 4), (2,)] and tops[0].dtype == np.float32
    shared = make('name: "in" type: "Input" top: "a" top: "b" input_param { shape { dim: 5 dim: 1 } }', backend=backend)
    assert shared.reshape([]) == [(5, 1), (5, 1)]


def test_input_feed_and_errors(backend):
    layer = make('name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } }', backend=backend)
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    layer.feed([x])
    assert layer.reshape([]) == [(3, 2)] and layer.forward([])[0] is x
    with pytest.raises(RistrettoError, match="fed 2"):
        layer.feed([x, x])
    with pytest.raises(RistrettoError, match="3 shapes for 2 tops"):
        make('name: "in" type: "Input" top: "a" top: "b" '
             'input_param { shape { dim: 1 } shape { dim: 2 } shape { dim: 3 } }', backend=backend)
    with pytest.raises(RistrettoError, match="no shape"):
        make('name: "in" type: "Input" top: "a"', backend=backend).reshape([])


def test_dummy_data_constant_is_filled_once_and_random_refilled(backend):
    layer = make('name: "d" type: "DummyData" top: "a" top: "b" dummy_data_param { '
                 'shape { dim: 2 dim: 3 } shape { dim: 4 } '
                 'data_filler { type: "constant" value: 7 } data_filler { type: "gaussian" std: 2 } }', backend=backend)
    assert layer.reshape([]) == [(2, 3), (4,)]
    a1, b1 = layer.forward([])
    a2, b2 = layer.forward([])
    np.testing.assert_array_equal(a1, 7)
    assert a2 is a1  # constant tops are not refilled
    assert not np.array_equal(b1, b2)  # the gaussian top is drawn again
    assert a1.dtype == b1.dtype == np.float32


def test_dummy_data_defaults_and_legacy_dims(backend):
    layer = make('name: "d" type: "DummyData" top: "a" top: "b" dummy_data_param { '
                 'num: 2 channels: 3 channels: 1 height: 4 width: 5 }', backend=backend)
    assert layer.reshape([]) == [(2, 3, 4, 5), (2, 1, 4, 5)]
    for t in layer.forward([]):
        np.testing.assert_array_equal(t, 0)  # no filler: constant 0
    one = make('name: "d" type: "DummyData" top: "a" top: "b" dummy_data_param { '
               'shape { dim: 1000 } data_filler { type: "uniform" min: 2 max: 3 } }', backend=backend)
    a, b = one.forward([])
    assert a.min() >= 2 and a.max() < 3 and not np.array_equal(a, b)


@pytest.mark.parametrize("spec,match", [
    ("shape { dim: 1 } num: 1 channels: 1 height: 1 width: 1", "not both"),
    ("num: 1 channels: 1 height: 1", "'width'"),
    ("shape { dim: 1 } shape { dim: 1 } shape { dim: 1 }", "shape entries"),
    ("shape { dim: 1 } data_filler {} data_filler {} data_filler {}", "data_filler"),
])
def test_dummy_data_errors(backend, spec, match):
    with pytest.raises(RistrettoError, match=match):
        make(f'name: "d" type: "DummyData" top: "a" top: "b" dummy_data_param {{ {spec} }}', backend=backend)
