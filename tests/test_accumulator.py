"""The integer accumulator (our extension, ``accum_bits``): partial sums of a Ristretto
Convolution / InnerProduct held in a fixed-width register that saturates or wraps at
every step, in Caffe's GEMM order, the bias added last."""
from __future__ import annotations

import json

import numpy as np
import pytest
from google.protobuf import text_format

from conftest import run_cli, shared_path
from ristretto_cli.errors import RistrettoError
from ristretto_cli.formats import QuantConfig
from ristretto_cli.formats import accumulator as accmod
from ristretto_cli.formats.accumulator import (AccumulatorOverflow, AccumulatorStats, accumulate_fixed_point,
                                               accumulate_reference, bits_needed)
from ristretto_cli.formats.rounding import FormatError
from ristretto_cli.layers import TEST, create_layer
from ristretto_cli.proto import caffe_pb2
from tests.backends import on_backend, reseeded

f32 = np.float32
SAT, WRAP = AccumulatorOverflow.SATURATE, AccumulatorOverflow.WRAP


def acc(backend, x, w, b=None, bits=None, overflow=SAT):
    xp = backend.xp
    r = accumulate_fixed_point(xp.asarray(np.asarray(x, np.int64)), xp.asarray(np.asarray(w, np.int64)),
                               None if b is None else xp.asarray(np.asarray(b, np.int64)), bits, overflow)
    return backend.to_numpy(r.acc), r


# --------------------------------------------------------------------------- hand-computed sums

def test_two_products_of_100_in_8_bits_wrap_to_minus_56_and_saturate_at_127(backend):
    x, w = [[10, 10]], [[10, 10]]                      # 100 + 100 = 200 > 127
    got, r = acc(backend, x, w, bits=8, overflow=WRAP)
    assert got.tolist() == [[-56]] and r.overflows == 1 and r.inexact == 1
    got, r = acc(backend, x, w, bits=8, overflow=SAT)
    assert got.tolist() == [[127]] and r.overflows == 1 and r.inexact == 1
    got, r = acc(backend, x, w, bits=9)                # fits in 9 bits
    assert got.tolist() == [[200]] and r.overflows == 0
    assert (r.partial_min, r.partial_max, r.sum_min, r.sum_max) == (100, 200, 200, 200)


def test_saturation_at_an_intermediate_step_differs_from_wrap_which_comes_back():
    from ristretto_cli.backend import Backend

    backend = Backend(np, 0)
    x, w = [[10, 10, 10]], [[10, 10, -10]]             # partial sums 100, 200, 100: only the middle one escapes
    got, r = acc(backend, x, w, bits=8, overflow=SAT)
    assert got.tolist() == [[27]]                      # 100 -> 127 (clamped) -> 27
    assert (r.overflows, r.inexact) == (1, 1)
    got, r = acc(backend, x, w, bits=8, overflow=WRAP)
    assert got.tolist() == [[100]]                     # 100 -> -56 -> -156 = 100 (mod 256): exact again
    assert (r.overflows, r.inexact) == (2, 0)
    assert accumulate_reference(x, w, None, 8, SAT) == ([[27]], 1)
    assert accumulate_reference(x, w, None, 8, WRAP) == ([[100]], 2)


def test_the_bias_is_the_last_addition(backend):
    # products 100, 100 then bias -100: the sum 200 saturates before the bias comes (bias first: no overflow)
    got, r = acc(backend, [[10, 10]], [[10, 10]], [-100], bits=8, overflow=SAT)
    assert got.tolist() == [[27]] and r.overflows == 1
    # and the bias addition itself can overflow
    got, r = acc(backend, [[10, 2]], [[10, 10]], [20], bits=8, overflow=SAT)
    assert got.tolist() == [[127]] and r.overflows == 1


@pytest.mark.parametrize("overflow", [SAT, WRAP])
def test_random_sums_equal_the_one_addition_at_a_time_reference(backend, overflow, monkeypatch):
    monkeypatch.setattr(accmod, "BLOCK_ELEMENTS", 37)  # many row chunks and k blocks
    rng = np.random.default_rng(3)
    for trial in range(40):
        m, k, o = (int(v) for v in rng.integers(1, 7, 3))
        x = rng.integers(-128, 128, (m, k))
        w = rng.integers(-128, 128, (o, k))
        b = rng.integers(-5000, 5000, o) if trial % 2 else None
        bits = int(rng.integers(2, 20))
        got, r = acc(backend, x, w, b, bits, overflow)
        ref, events = accumulate_reference(x, w, b, bits, overflow)
        assert got.tolist() == ref and r.overflows == events, trial
        xp = backend.xp  # the shortcut (float64 sums and bounds, step by step only where a bound escapes)
        quick = accumulate_fixed_point(xp.asarray(x), xp.asarray(w), None if b is None else xp.asarray(b), bits,
                                       overflow, partial_stats=False)
        assert backend.to_numpy(quick.acc).tolist() == ref and quick.overflows == events, trial
        exact = x @ w.T + (0 if b is None else b)
        assert r.inexact == np.count_nonzero(got != exact)
        if overflow == WRAP:  # two's complement wrap is a ring homomorphism: wrap(exact sum)
            half = 1 << (bits - 1)
            assert got.tolist() == (((exact + half) % (1 << bits)) - half).tolist()


def test_unbounded_and_wide_accumulators_give_the_exact_sums(backend):
    rng = np.random.default_rng(1)
    x, w, b = rng.integers(-2**15, 2**15, (5, 300)), rng.integers(-2**15, 2**15, (4, 300)), rng.integers(-9, 9, 4)
    exact = x @ w.T + b
    for bits in (None, 63, 64):
        got, r = acc(backend, x, w, b, bits)
        np.testing.assert_array_equal(got, exact)
        assert r.overflows == 0
    got, r = acc(backend, x, w, b, bits_needed(r.partial_min, r.partial_max))
    np.testing.assert_array_equal(got, exact)
    assert r.overflows == 0


def test_codes_too_wide_for_an_exact_int64_sum_are_refused():
    with pytest.raises(accmod.AccumulatorRangeError, match="2\\^62"):
        accumulate_fixed_point(np.full((1, 4), 2**31, np.int64), np.full((1, 4), 2**31, np.int64), None, 32)


@pytest.mark.parametrize("lo, hi, bits", [(0, 0, 1), (-1, 0, 1), (-128, 127, 8), (-129, 0, 9), (0, 128, 9),
                                          (-2**40, 5, 41)])
def test_bits_needed(lo, hi, bits):
    assert bits_needed(lo, hi) == bits


def test_stats_width_saturate_holds_every_partial_sum_wrap_only_the_sums():
    s = AccumulatorStats()
    s.add(accumulate_fixed_point(np.array([[10, 10, 10]]), np.array([[10, 10, -10]])))
    assert (s.partial_min, s.partial_max, s.sum_min, s.sum_max) == (100, 200, 100, 100)
    assert s.bits(SAT) == 9 and s.bits(WRAP) == 8


# --------------------------------------------------------------------------- config and schema

def test_config_reads_writes_and_checks_accum_fields():
    cfg = QuantConfig(accum_bits=24, accum_overflow="wrap").validate()
    qp = cfg.to_proto()
    assert qp.HasField("accum_bits") and qp.accum_bits == 24 and qp.accum_overflow == 1
    assert QuantConfig.from_proto(qp) == cfg
    plain = QuantConfig(accum_bits=24).to_proto()
    assert not plain.HasField("accum_overflow")         # SATURATE is the default: not written
    default = QuantConfig().to_proto()
    assert not default.HasField("accum_bits") and QuantConfig.from_proto(default).accum_bits is None
    assert "acc 24 WRAP" in cfg.describe()
    with pytest.raises(FormatError, match="accum_bits must be an integer in 2..64"):
        QuantConfig(accum_bits=65).validate()
    with pytest.raises(FormatError, match="not MINIFLOAT"):
        QuantConfig(precision="MINIFLOAT", accum_bits=32).validate()


def test_accumulator_units():
    assert QuantConfig(fl_layer_in=5, fl_params=9).accumulator_fl == 14
    assert QuantConfig(fl_layer_in=-3, fl_params=9).accumulator_fl == 9       # the bias code stays whole
    assert QuantConfig(fl_layer_in=2, fl_params=4, bw_bias=16, fl_bias=10).accumulator_fl == 10
    assert QuantConfig(precision="INTEGER_POWER_OF_2_WEIGHTS", fl_layer_in=4, exp_min=-8).accumulator_fl == 12


def test_a_prototxt_with_accum_fields_is_ours_without_them_the_originals():
    from ristretto_cli.caffe.original_schema import parse_with_original_schema

    text = 'layer { name: "ip" type: "FcRistretto" quantization_param { bw_params: 8 %s } }'
    parse_with_original_schema(text % "", filename="plain.prototxt")
    with pytest.raises(RistrettoError):
        parse_with_original_schema(text % "accum_bits: 20 accum_overflow: WRAP", filename="ours.prototxt")


# --------------------------------------------------------------------------- layers

QP = "quantization_param { bw_layer_in: 8 fl_layer_in: %d bw_params: 8 fl_params: %d bw_layer_out: 16 " \
     "fl_layer_out: %d %s }"


def make(backend, type_, text, shape, qp):
    lp = text_format.Parse(f'name: "q" type: "{type_}" {text} {qp}', caffe_pb2.LayerParameter())
    layer = create_layer(lp, TEST, reseeded(backend, 0))
    layer.setup([tuple(shape)])
    layer.reshape([tuple(shape)])
    return layer


IP = 'inner_product_param { num_output: 1 }'


@pytest.mark.parametrize("overflow, expected", [("SATURATE", 127), ("WRAP", -56)])
def test_fc_layer_with_an_8_bit_accumulator(backend, overflow, expected):
    layer = make(backend, "FcRistretto", IP, (1, 2), QP % (0, 0, 0, f"accum_bits: 8 accum_overflow: {overflow}"))
    view = on_backend(layer, backend)
    view.blobs = [np.array([[10, 10]], f32), np.zeros(1, f32)]
    (y,) = view.forward([np.array([[10, 10]], f32)])
    assert y.tolist() == [[expected]] and layer.accum_overflows == 1 and layer.accum_inexact == 1
    (y,) = view.forward([np.array([[10, 2]], f32)])
    assert y.tolist() == [[120]] and layer.accum_overflows == 0   # counts are per forward


def _im2col_reference(x, w, b, pad, stride, group, bits, overflow):
    """Convolution by explicit loops: k over (c, kh, kw) in C order within the group, then the bias."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, o, oh, ow), np.int64)
    og = o // group
    for i in range(n):
        for q in range(o):
            g = q // og
            for yy in range(oh):
                for xx in range(ow):
                    row = [xp[i, g * cg + cc, yy * stride + a, xx * stride + e]
                           for cc in range(cg) for a in range(kh) for e in range(kw)]
                    wr = [w[q, cc, a, e] for cc in range(cg) for a in range(kh) for e in range(kw)]
                    (v,), _ = accumulate_reference([row], [wr], [b[q]], bits, overflow)
                    out[i, q, yy, xx] = v[0]
    return out


@pytest.mark.parametrize("overflow", ["SATURATE", "WRAP"])
def test_convolution_sums_in_im2col_order_then_the_bias(backend, overflow):
    rng = np.random.default_rng(5)
    x_code = rng.integers(-128, 128, (2, 4, 5, 5))
    w_code = rng.integers(-128, 128, (6, 2, 3, 3))
    b_code = rng.integers(-128, 128, 6)
    fl_in, fl_p = 4, 6                                 # F = 10: bias codes in 2^-6 shift left by 4
    text = 'convolution_param { num_output: 6 kernel_size: 3 pad: 1 stride: 2 group: 2 }'
    layer = make(backend, "ConvolutionRistretto", text, x_code.shape,
                 QP % (fl_in, fl_p, 10, f"accum_bits: 14 accum_overflow: {overflow}"))
    view = on_backend(layer, backend)
    view.blobs = [(w_code * 2.0 ** -fl_p).astype(f32), (b_code * 2.0 ** -fl_p).astype(f32)]
    (y,) = view.forward([(x_code * 2.0 ** -fl_in).astype(f32)])
    ref = _im2col_reference(x_code, w_code, b_code << 4, 1, 2, 2, 14, AccumulatorOverflow[overflow])
    # the output format (16 bits, fl 10) holds every 14-bit accumulator value exactly
    np.testing.assert_array_equal(y * 2.0 ** 10, ref)
    assert layer.accum_overflows > 0


@pytest.mark.parametrize("type_, text, shape", [
    ("ConvolutionRistretto", 'convolution_param { num_output: 5 kernel_size: 3 pad: 1 group: 1 }', (2, 3, 6, 6)),
    ("ConvolutionRistretto", 'convolution_param { num_output: 4 kernel_size: 2 stride: 2 group: 2 }', (2, 4, 6, 6)),
    ("FcRistretto", 'inner_product_param { num_output: 7 }', (3, 2, 4, 4)),
    ("FcRistretto", 'inner_product_param { num_output: 7 transpose: true }', (3, 32)),
])
def test_a_wide_accumulator_equals_the_float_path_bit_for_bit(backend, type_, text, shape):
    rng = np.random.default_rng(2)
    x = rng.uniform(-4, 4, shape).astype(f32)
    outs, blobs = [], None
    for extra in ("", "accum_bits: 40"):
        layer = make(backend, type_, text, shape, QP % (5, 6, 4, extra))
        view = on_backend(layer, backend)
        if blobs is None:
            blobs = [rng.uniform(-1, 1, b.shape).astype(f32) for b in view.blobs]
        view.blobs = [b.copy() for b in blobs]
        (y,) = view.forward([x.copy()])
        outs.append(y)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_power_of_two_weights_accumulate_in_units_of_2_to_exp_min(backend):
    qp = ("quantization_param { precision: INTEGER_POWER_OF_2_WEIGHTS exp_min: -4 exp_max: -1 bw_layer_in: 8 "
          "fl_layer_in: 3 bw_layer_out: 16 fl_layer_out: 7 %s }")
    x = np.array([[1.5, -2.0, 0.125, 3.0]], f32)
    w = np.array([[0.5, -0.25, 0.0625, 0.125], [-0.5, 0.5, 0.5, 0.5]], f32)
    outs = []
    for extra in ("", "accum_bits: 20", "accum_bits: 6"):
        layer = make(backend, "FcRistretto", 'inner_product_param { num_output: 2 }', (1, 4), qp % extra)
        view = on_backend(layer, backend)
        view.blobs = [w, np.array([0.25, 0.0], f32)]    # the float bias: on the 2^-7 unit here
        (y,) = view.forward([x.copy()])
        outs.append((y, layer.accum_overflows))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    # units of 2^-(3 + 4): x codes 12, -16, 1, 24 times weight codes 8, -4, 1, 2: partial sums 96, 160, 161,
    # 209, then the bias 0.25 = 32 units: 241 (1.8828125 in float); 6 bits hold -32..31: saturated at 31 * 2^-7
    assert outs[0][0][0, 0] == f32(241 / 128)
    assert outs[2][0][0, 0] == f32(31 / 128) and outs[2][1] > 0


def test_accum_bits_on_a_layer_that_cannot_simulate_it_is_an_error(backend):
    text = 'convolution_param { num_output: 2 kernel_size: 2 }'
    with pytest.raises(RistrettoError, match="'q'.*accum_bits is simulated in ConvolutionRistretto and FcRistretto"):
        make(backend, "DeconvolutionRistretto", text, (1, 2, 3, 3), QP % (4, 4, 4, "accum_bits: 20"))
    with pytest.raises(RistrettoError, match="not MINIFLOAT"):
        make(backend, "FcRistretto", IP, (1, 2), "quantization_param { precision: MINIFLOAT accum_bits: 20 }")


# --------------------------------------------------------------------------- LeNet

def _lenet_with(tmp_path, proto, bits, overflow="SATURATE"):
    from ristretto_cli.caffe.prototxt import read_net, write_text

    param = read_net(str(proto))
    for lp in param.layer:
        if lp.type in ("ConvolutionRistretto", "FcRistretto"):
            lp.quantization_param.accum_bits = bits
            lp.quantization_param.accum_overflow = caffe_pb2.QuantizationParameter.AccumulatorOverflow.Value(overflow)
    out = tmp_path / f"lenet_acc{bits}_{overflow}.prototxt"
    write_text(out, param)
    return out


@pytest.mark.parametrize("overflow", ["SATURATE", "WRAP"])
def test_lenet_8_bit_with_a_40_bit_accumulator_equals_plain_forward_bit_for_bit(tmp_path, overflow):
    from test_export_onnx import mnist_test_images, quantized_lenet
    from ristretto_cli.net.loading import load_net

    images, _ = mnist_test_images(64)
    proto, weights = quantized_lenet(tmp_path, images)
    plain = load_net(str(proto), str(weights))
    plain.forward({"data": images.copy()})
    wide = load_net(str(_lenet_with(tmp_path, proto, 40, overflow)), str(weights))
    wide.forward({"data": images.copy()})
    assert sorted(plain.blobs) == sorted(wide.blobs)
    for name in plain.blobs:
        np.testing.assert_array_equal(plain.blobs[name], wide.blobs[name], err_msg=name)
    assert all(l.accum_overflows == 0 for l in wide.layers if getattr(l, "accumulates", False))


def test_forward_logs_overflow_counts_of_a_small_accumulator(tmp_path, capsys):
    from test_export_onnx import mnist_test_images, quantized_lenet

    images, _ = mnist_test_images(16)
    proto, weights = quantized_lenet(tmp_path, images)
    np.save(tmp_path / "x.npy", images)
    small = _lenet_with(tmp_path, proto, 12)
    code, _, err = run_cli(["forward", "-m", small, "-w", weights, "--input", f"data={tmp_path / 'x.npy'}",
                            "-o", tmp_path / "out.npz"], capsys)
    assert code == 0, err
    lines = [l for l in err.splitlines() if "accumulator" in l]
    assert lines and all("12-bit accumulator (SATURATE)" in l and "partial sums overflowed" in l for l in lines)
    wide = _lenet_with(tmp_path, proto, 40)
    code, _, err = run_cli(["forward", "-m", wide, "-w", weights, "--input", f"data={tmp_path / 'x.npy'}",
                            "-o", tmp_path / "out2.npz"], capsys)
    assert code == 0 and "accumulator" not in err


STATS_BATCHES = 2


@pytest.fixture(scope="module")
def lenet_db(tmp_path_factory):
    from ristretto_cli.data.converters import convert_mnist

    mnist = shared_path("data", "mnist")
    weights = shared_path("data", "caffemodels", "lenet_v2", "lenet_iter_10000.caffemodel")
    zoo = shared_path("zoo", "lenet", "lenet_train_test.prototxt")
    d = tmp_path_factory.mktemp("lenet_acc")
    db = d / "mnist_test_lmdb"
    convert_mnist(mnist / "t10k-images-idx3-ubyte.gz", mnist / "t10k-labels-idx1-ubyte.gz", db, limit=200)
    text = zoo.read_text().replace("examples/mnist/mnist_train_lmdb", str(db))
    model = d / "lenet.prototxt"
    model.write_text(text.replace("examples/mnist/mnist_test_lmdb", str(db)))
    return str(model), str(weights), d


def _overflows_over_batches(model, weights, batches, layer_name=None):
    from ristretto_cli.net.loading import load_net

    net = load_net(str(model), weights)
    try:
        counts = {}
        for _ in range(batches):
            net.forward()
            for l in net.layers:
                if getattr(l, "accumulates", False):
                    counts[l.name] = counts.get(l.name, 0) + l.accum_overflows
        return counts
    finally:
        net.close()


def test_quantize_accumulator_writes_the_smallest_widths_without_overflow(lenet_db, capsys):
    from ristretto_cli.caffe.original_schema import parse_with_original_schema
    from ristretto_cli.caffe.prototxt import read_net, write_text

    model, weights, d = lenet_db
    q, rep = d / "q.prototxt", d / "q.json"
    code, out, err = run_cli(["quantize", "-m", model, "-w", weights, "--model-quantized", q,
                              "--trimming-mode", "dynamic_fixed_point", "--iterations", "2", "--widths", "8",
                              "--stats-batches", STATS_BATCHES, "--accumulator", "--report", rep], capsys)
    assert code == 0, err
    report = json.loads(rep.read_text())
    bits = report["accumulator_bits"]
    assert list(bits) == ["conv1", "conv2", "ip1", "ip2"] and report["accumulator_overflow"] == "saturate"
    assert "Accumulators (saturate)" in out
    param = read_net(str(q))
    written = {lp.name: lp.quantization_param.accum_bits for lp in param.layer
               if lp.quantization_param.HasField("accum_bits")}
    assert written == bits and all(8 < b <= 32 for b in bits.values())
    assert not any(lp.quantization_param.HasField("accum_overflow") for lp in param.layer)
    with pytest.raises(RistrettoError):  # our field: the original cannot read it
        parse_with_original_schema(q.read_text(), filename=str(q))
    # on the statistics batches: no overflow at the chosen widths, some with one bit less
    assert _overflows_over_batches(q, weights, STATS_BATCHES) == {name: 0 for name in bits}
    for name in bits:
        narrower = read_net(str(q))
        lp = next(lp for lp in narrower.layer if lp.name == name)
        lp.quantization_param.accum_bits -= 1
        path = d / f"q_{name}.prototxt"
        write_text(path, narrower)
        assert _overflows_over_batches(path, weights, STATS_BATCHES)[name] > 0, name


def test_quantize_accumulator_refuses_minifloat(lenet_db, capsys):
    model, weights, d = lenet_db
    code, _, err = run_cli(["quantize", "-m", model, "-w", weights, "--model-quantized", d / "mf.prototxt",
                            "--trimming-mode", "minifloat", "--accumulator"], capsys)
    assert code == 2 and "--accumulator" in err and "minifloat" in err and not (d / "mf.prototxt").exists()


def test_cost_model_uses_accum_bits_as_the_accumulator_width(tmp_path):
    from test_export_onnx import mnist_test_images, quantized_lenet
    from ristretto_cli.cost import net_cost
    from ristretto_cli.net.loading import load_net

    images, _ = mnist_test_images(4)
    proto, weights = quantized_lenet(tmp_path, images)
    before = {l.name: l.accumulator_bits for l in net_cost(load_net(str(proto), str(weights))).layers}
    after = {l.name: l.accumulator_bits for l in
             net_cost(load_net(str(_lenet_with(tmp_path, proto, 17)), str(weights))).layers}
    assert before["conv2"] == 8 + 8 + 9 and after["conv2"] == after["ip1"] == 17
