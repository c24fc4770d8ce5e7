"""The whole-graph Ristretto types (our extension): trimmed inputs, the float layer, trimmed outputs."""
from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from ristretto_cli.errors import RistrettoError
from ristretto_cli.formats import trim_fixed_point
from ristretto_cli.formats.trim import trim_fixed_point_unsigned
from ristretto_cli.layers import TEST, create_layer
from ristretto_cli.proto import caffe_pb2
from tests.backends import on_backend, reseeded

f32 = np.float32
QP = "quantization_param { bw_layer_in: 8 fl_layer_in: 4 bw_layer_out: 6 fl_layer_out: 3 %s }"


def make(backend, type_, text, bottom_shapes, qp_extra=""):
    lp = text_format.Parse(f'name: "q" type: "{type_}" {text} {QP % qp_extra}', caffe_pb2.LayerParameter())
    layer = create_layer(lp, TEST, reseeded(backend, 0))
    layer.setup([tuple(s) for s in bottom_shapes])
    layer.reshape([tuple(s) for s in bottom_shapes])
    return on_backend(layer, backend)


def tin(x):
    return trim_fixed_point(x, 8, 4)


def tout(x):
    return trim_fixed_point(np.asarray(x, f32), 6, 3)


def _x(shape, seed=0, lo=-5, hi=5):
    return np.random.default_rng(seed).uniform(lo, hi, shape).astype(f32)


def _float(type_, text, bottoms, blobs=None):
    lp = text_format.Parse(f'name: "f" type: "{type_}" {text}', caffe_pb2.LayerParameter())
    from ristretto_cli.backend import Backend

    layer = create_layer(lp, TEST, Backend(np, 0))
    layer.setup([b.shape for b in bottoms])
    layer.reshape([b.shape for b in bottoms])
    if blobs is not None:
        layer.blobs = [np.array(b) for b in blobs]
    return layer.forward([b.copy() for b in bottoms])[0]


@pytest.mark.parametrize("pool", ["pool: AVE kernel_size: 3 stride: 2 pad: 1", "pool: MAX kernel_size: 2 stride: 2",
                                  "pool: AVE global_pooling: true"])
def test_pooling_trims_input_in_place_and_rounds_the_result(backend, pool):
    text = f"pooling_param {{ {pool} }}"
    layer = make(backend, "PoolingRistretto", text, [(2, 3, 6, 6)])
    x = _x((2, 3, 6, 6))
    top = layer.forward([x.copy()])[0]
    np.testing.assert_array_equal(top, tout(_float("Pooling", text, [tin(x)])))
    assert np.all(top * 8 == np.round(top * 8))


def test_pooling_has_no_mask_top(backend):
    lp = text_format.Parse(f'name: "q" type: "PoolingRistretto" top: "a" top: "m" pooling_param {{ pool: MAX '
                           f'kernel_size: 2 }} {QP % ""}', caffe_pb2.LayerParameter())
    with pytest.raises(RistrettoError, match="mask"):
        create_layer(lp, TEST, backend).setup([(1, 1, 4, 4)])


@pytest.mark.parametrize("op", ["operation: SUM coeff: 1 coeff: -0.5", "operation: PROD", "operation: MAX"])
def test_eltwise_aligns_its_inputs_before_the_operation(backend, op):
    text = f"eltwise_param {{ {op} }}"
    layer = make(backend, "EltwiseRistretto", text, [(2, 3, 4), (2, 3, 4)])
    a, b = _x((2, 3, 4), 1), _x((2, 3, 4), 2)
    top = layer.forward([a.copy(), b.copy()])[0]
    np.testing.assert_array_equal(top, tout(_float("Eltwise", text, [tin(a), tin(b)])))


def test_eltwise_bottoms_are_trimmed_in_place():
    from ristretto_cli.backend import Backend

    lp = text_format.Parse(f'name: "q" type: "EltwiseRistretto" {QP % ""}', caffe_pb2.LayerParameter())
    layer = create_layer(lp, TEST, Backend(np, 0))
    layer.setup([(4,), (4,)])
    a, b = _x((4,), 1), _x((4,), 2)
    a0 = a.copy()
    layer.forward([a, b])
    np.testing.assert_array_equal(a, tin(a0))   # later readers of the shortcut see the aligned values


def test_concat_puts_its_inputs_in_one_format(backend):
    layer = make(backend, "ConcatRistretto", "", [(2, 2, 3), (2, 1, 3)])
    a, b = _x((2, 2, 3), 3), _x((2, 1, 3), 4)
    top = layer.forward([a.copy(), b.copy()])[0]
    np.testing.assert_array_equal(top, tout(np.concatenate([tin(a), tin(b)], axis=1)))


def test_batchnorm_uses_its_statistics_untrimmed(backend):
    layer = make(backend, "BatchNormRistretto", "", [(2, 3, 2, 2)])
    from tests.backends import to_device

    stats = [np.array([0.3, -1.1, 2.0], f32), np.array([0.5, 2.0, 0.01], f32), np.array([2.0], f32)]
    inner = getattr(layer, "layer", layer)
    inner.blobs = to_device(backend, [s.copy() for s in stats])
    x = _x((2, 3, 2, 2), 5)
    top = layer.forward([x.copy()])[0]
    np.testing.assert_array_equal(top, tout(_float("BatchNorm", "", [tin(x)], stats)))


def test_scale_trims_factors_as_weights_and_bias_in_its_own_format(backend):
    text = "scale_param { bias_term: true }"
    layer = make(backend, "ScaleRistretto", text, [(2, 3, 2)], "bw_params: 4 fl_params: 2 bw_bias: 8 fl_bias: 6")
    from tests.backends import to_device

    blobs = [np.array([0.3, -1.1, 2.0], f32), np.array([0.123, -0.77, 1.5], f32)]
    getattr(layer, "layer", layer).blobs = to_device(backend, [b.copy() for b in blobs])
    x = _x((2, 3, 2), 6)
    top = layer.forward([x.copy()])[0]
    q = [trim_fixed_point(blobs[0], 4, 2), trim_fixed_point(blobs[1], 8, 6)]
    np.testing.assert_array_equal(top, tout(_float("Scale", text, [tin(x)], q)))


def test_relu_with_an_unsigned_output(backend):
    layer = make(backend, "ReLURistretto", "", [(3, 5)], "is_unsigned_layer_out: true")
    x = _x((3, 5), 7, -20, 20)
    top = layer.forward([x.copy()])[0]
    np.testing.assert_array_equal(top, trim_fixed_point_unsigned(np.maximum(tin(x), 0), 6, 3))
    assert top.max() <= 63 / 8 and top.max() > 31 / 8   # the unsigned range reaches twice as far


def test_prelu_trims_its_slopes(backend):
    layer = make(backend, "PReLURistretto", "", [(2, 3, 2)], "bw_params: 3 fl_params: 2")
    from tests.backends import to_device

    slopes = np.array([0.3, 0.6, -0.1], f32)
    getattr(layer, "layer", layer).blobs = to_device(backend, [slopes.copy()])
    x = _x((2, 3, 2), 8)
    top = layer.forward([x.copy()])[0]
    np.testing.assert_array_equal(top, tout(_float("PReLU", "", [tin(x)], [trim_fixed_point(slopes, 3, 2)])))


def test_depthwise_convolution_ristretto(backend):
    """group == channels (MobileNet's depthwise convolution) through ConvolutionRistretto."""
    text = ('convolution_param { num_output: 4 kernel_size: 3 pad: 1 group: 4 '
            'weight_filler { type: "uniform" min: -1 max: 1 } bias_filler { type: "uniform" min: -1 max: 1 } }')
    layer = make(backend, "ConvolutionRistretto", text, [(2, 4, 5, 5)], "bw_params: 6 fl_params: 5")
    inner = getattr(layer, "layer", layer)
    w, b = (backend.to_numpy(a) for a in inner.blobs)
    x = _x((2, 4, 5, 5), 9)
    top = layer.forward([x.copy()])[0]
    wq, bq = trim_fixed_point(w, 6, 5), trim_fixed_point(b, 6, 5)
    ref = _float("Convolution", text, [tin(x)], [wq, bq])
    np.testing.assert_allclose(top, tout(ref), atol=1e-6)
    # per channel: channel c sees only input channel c
    xin = tin(x).astype(np.float64)
    for c in range(4):
        one = np.zeros((2, 5, 5))
        padded = np.pad(xin[:, c], ((0, 0), (1, 1), (1, 1)))
        for i in range(3):
            for j in range(3):
                one += wq[c, 0, i, j] * padded[:, i:i + 5, j:j + 5]
        np.testing.assert_allclose(ref[:, c], one + bq[c], rtol=1e-5, atol=1e-5)


def test_quantization_param_on_a_type_that_cannot_take_one_names_the_layer():
    from ristretto_cli.caffe.prototxt import parse_net_text
    from ristretto_cli.net import Net

    text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }\n'
            'layer { name: "soft" type: "Softmax" bottom: "data" top: "p" quantization_param { bw_layer_in: 8 } }')
    with pytest.raises(RistrettoError, match=r"layer 'soft' \(Softmax\) cannot take a quantization_param"):
        Net(parse_net_text(text))
