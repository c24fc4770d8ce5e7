"""Our format additions: unsigned activations and the bias's own format (QuantConfig)."""
from __future__ import annotations

import numpy as np
import pytest

from ristretto_cli.caffe.original_schema import parse_with_original_schema
from ristretto_cli.caffe.prototxt import message_to_text
from ristretto_cli.formats import INPUT, OUTPUT, QuantConfig
from ristretto_cli.formats.rounding import FormatError, Rounding
from ristretto_cli.formats.trim import trim_fixed_point_unsigned
from ristretto_cli.proto import caffe_pb2


def test_unsigned_fixed_point_uses_every_bit_for_magnitude():
    x = np.array([-3.0, -0.1, 0.0, 0.26, 1.74, 3.75, 3.8, 100.0, np.nan], np.float32)
    got = trim_fixed_point_unsigned(x, 4, 2)           # grid 0.25, top (2^4 - 1) / 4 = 3.75
    np.testing.assert_array_equal(got, np.array([0, 0, 0, 0.25, 1.75, 3.75, 3.75, 3.75, 3.75], np.float32))
    assert got.dtype == np.float32
    out = x.copy()
    assert trim_fixed_point_unsigned(out, 4, 2, out=out) is out
    # stochastic rounding never leaves the range
    rng = np.random.default_rng(0)
    y = trim_fixed_point_unsigned(np.linspace(0, 3.75, 1000, dtype=np.float32), 4, 2, Rounding.STOCHASTIC, rng)
    assert y.min() >= 0 and y.max() <= 3.75 and np.all(y * 4 == np.round(y * 4))


def test_unsigned_sites_of_a_config():
    cfg = QuantConfig(bw_layer_in=8, fl_layer_in=4, bw_layer_out=8, fl_layer_out=4,
                      is_unsigned_layer_out=True).validate()
    x = np.array([-1.0, 20.0], np.float32)
    np.testing.assert_array_equal(cfg.trim_activation(x, INPUT), [-1.0, 127 / 16])
    np.testing.assert_array_equal(cfg.trim_activation(x, OUTPUT), [0.0, 255 / 16])


def test_bias_format_defaults_to_the_weights_and_can_be_its_own():
    b = np.array([0.3, -5.0, 40.0], np.float32)
    cfg = QuantConfig(bw_params=4, fl_params=2)
    np.testing.assert_array_equal(cfg.trim_bias(b), cfg.trim_weights(b))
    own = cfg.replace(bw_bias=16, fl_bias=8).validate()
    np.testing.assert_array_equal(own.trim_bias(b), np.round(b * 256) / 256)
    with pytest.raises(FormatError, match="bw_bias and fl_bias go together"):
        cfg.replace(bw_bias=8).validate()
    with pytest.raises(FormatError, match="bw_bias/fl_bias"):
        cfg.replace(bw_bias=40, fl_bias=0).validate()


def test_extensions_are_written_only_when_set():
    plain = QuantConfig(bw_params=8, fl_params=7).to_proto()
    assert not plain.HasField("bw_bias") and not plain.HasField("is_unsigned_layer_in")
    lp = caffe_pb2.LayerParameter(name="c", type="ConvolutionRistretto")
    lp.quantization_param.CopyFrom(plain)
    net = caffe_pb2.NetParameter()
    net.layer.add().CopyFrom(lp)
    parse_with_original_schema(message_to_text(net))   # readable by the original
    ours = QuantConfig(bw_bias=12, fl_bias=0, is_unsigned_layer_out=True).to_proto()
    assert ours.HasField("fl_bias") and ours.fl_bias == 0 and ours.is_unsigned_layer_out
    back = QuantConfig.from_proto(ours)
    assert (back.bw_bias, back.fl_bias, back.is_unsigned_layer_out, back.is_unsigned_layer_in) == (12, 0, True, False)
    assert QuantConfig.from_proto(plain).bw_bias is None
