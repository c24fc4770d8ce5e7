"""`ristretto import onnx` of quantized models: Q/DQ and QONNX trims around Conv /
ConvTranspose / Gemm / MatMul(+Add) become Ristretto layers.

Round trips (issue #10): Caffe -> ONNX -> Caffe keeps the golden outputs of the original
Ristretto bit for bit and every quantization_param field; ONNX -> Caffe -> ONNX gives a
model with the same outputs bit for bit (ONNX Runtime without its QDQ fusions for qdq,
onnx's reference evaluator with QONNX's Quant for qonnx), and within 1e-5 for float.
What has no Ristretto form is a one-line error naming the node, exit status 2, nothing
written.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import REPO
from test_export_onnx import MODELS, ort_session, qonnx_reference_evaluator, random_net, relative_error

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

GOLDEN = ["lenet_dfp", "conv_variants_dfp", "pow2"]
FORMATS = ["qdq", "qonnx"]


def _run(argv, capsys):
    from ristretto_cli.cli import run

    status = run(argv)
    return status, capsys.readouterr().err


def import_file(tmp_path, capsys, model, stem="back"):
    """``ristretto import onnx`` of ``model``; returns (prototxt, caffemodel) paths."""
    src = tmp_path / f"{stem}.onnx"
    src.write_bytes(model.SerializeToString() if hasattr(model, "SerializeToString") else model)
    proto, weights = tmp_path / f"{stem}.prototxt", tmp_path / f"{stem}.caffemodel"
    status, err = _run(["import", "onnx", str(src), "-o", str(proto), "--weights-out", str(weights)], capsys)
    assert status == 0, err
    return proto, weights


def quant_configs(param) -> dict:
    from ristretto_cli.formats.config import QuantConfig

    return {lp.name: (lp.type, QuantConfig.from_proto(lp.quantization_param)) for lp in param.layer
            if lp.HasField("quantization_param")}


def run_model(model, fmt, feeds):
    """The outputs of an ONNX model: ORT's exact session (no QDQ fusions) or onnx's
    reference evaluator with QONNX's Quant."""
    if fmt == "qonnx":
        values = qonnx_reference_evaluator(model).run(None, feeds)
        return dict(zip([o.name for o in model.graph.output], values))
    sess = ort_session(model.SerializeToString(), exact=True)
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def golden_feeds(folder):
    return {p.stem[len("input_"):]: np.load(p) for p in folder.glob("input_*.npy")}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", GOLDEN)
def test_caffe_to_onnx_to_caffe_keeps_the_golden_outputs_and_every_quantization_field(
        case, fmt, tmp_path, capsys, shared):
    from ristretto_cli.caffe.prototxt import read_net
    from ristretto_cli.export.onnx_export import export_onnx
    from ristretto_cli.net.loading import load_net

    folder = shared("golden", case)
    model = export_onnx(str(folder / "net.prototxt"), str(folder / "weights.caffemodel"), fmt).model
    proto, weights = import_file(tmp_path, capsys, model)
    assert quant_configs(read_net(str(proto))) == quant_configs(read_net(str(folder / "net.prototxt")))
    net = load_net(str(proto), str(weights))
    outs = net.forward(golden_feeds(folder))
    assert [o.name for o in model.graph.output] == list(outs)
    for name, value in outs.items():
        np.testing.assert_array_equal(np.asarray(value), np.load(folder / "expected_gpusem" / f"final__{name}.npy"),
                                      err_msg=name)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", GOLDEN)
def test_onnx_to_caffe_to_onnx_gives_the_same_outputs_bit_for_bit(case, fmt, tmp_path, capsys, shared):
    from ristretto_cli.export.onnx_export import export_onnx

    folder = shared("golden", case)
    first = export_onnx(str(folder / "net.prototxt"), str(folder / "weights.caffemodel"), fmt).model
    proto, weights = import_file(tmp_path, capsys, first)
    again = export_onnx(str(proto), str(weights), fmt).model
    feeds = golden_feeds(folder)
    a, b = run_model(first, fmt, feeds), run_model(again, fmt, feeds)
    assert list(a) == list(b)
    for name in a:
        np.testing.assert_array_equal(b[name], a[name], err_msg=name)
        np.testing.assert_array_equal(a[name], np.load(folder / "expected_gpusem" / f"final__{name}.npy"))
    ops = sorted(n.op_type for n in first.graph.node)
    assert sorted(n.op_type for n in again.graph.node) == ops


@pytest.mark.parametrize("case", ["lenet_dfp", "conv_variants_dfp"])
def test_without_metadata_the_qdq_pattern_alone_gives_dynamic_fixed_point(case, tmp_path, capsys, shared):
    """bw_params is then the integer container's width (int4 for a 2-bit format): the
    same arithmetic, so the golden outputs still come out bit for bit."""
    from ristretto_cli.caffe.prototxt import read_net
    from ristretto_cli.export.onnx_export import export_onnx
    from ristretto_cli.net.loading import load_net

    folder = shared("golden", case)
    model = export_onnx(str(folder / "net.prototxt"), str(folder / "weights.caffemodel"), "qdq").model
    del model.metadata_props[:]
    proto, weights = import_file(tmp_path, capsys, model)
    back = [lp for lp in read_net(str(proto)).layer if lp.HasField("quantization_param")]
    orig = list(quant_configs(read_net(str(folder / "net.prototxt"))).values())
    assert len(back) == len(orig)
    for lp, (type_, cfg) in zip(back, orig):
        q = lp.quantization_param
        assert lp.type == type_
        assert (q.bw_layer_in, q.fl_layer_in, q.bw_layer_out, q.fl_layer_out, q.fl_params) == (
            cfg.bw_layer_in, cfg.fl_layer_in, cfg.bw_layer_out, cfg.fl_layer_out, cfg.fl_params)
        assert q.bw_params == (4 if cfg.bw_params <= 4 else cfg.bw_params)
    net = load_net(str(proto), str(weights))
    for name, value in net.forward(golden_feeds(folder)).items():
        np.testing.assert_array_equal(np.asarray(value), np.load(folder / "expected_gpusem" / f"final__{name}.npy"))


def test_qonnx_keeps_any_width_and_the_rounding_scheme(tmp_path, capsys, shared):
    """6-bit activations and TOWARD_ZERO rounding (neither has a Q/DQ form) survive
    QONNX -> Caffe: the Quant nodes' bitwidth and rounding_mode map back."""
    from ristretto_cli.caffe.prototxt import read_net, write_text
    from ristretto_cli.export.onnx_export import export_onnx
    from ristretto_cli.net.loading import load_net

    folder = shared("golden", "lenet_dfp")
    param = read_net(str(folder / "net.prototxt"))
    for lp in param.layer:
        if lp.HasField("quantization_param"):
            lp.quantization_param.bw_layer_in = 6
            lp.quantization_param.rounding_scheme = 5  # TOWARD_ZERO
    proto = tmp_path / "q.prototxt"
    write_text(proto, param)
    model = export_onnx(str(proto), str(folder / "weights.caffemodel"), "qonnx").model
    del model.metadata_props[:]  # the graph alone says it
    back, weights = import_file(tmp_path, capsys, model)
    got = quant_configs(read_net(str(back)))
    want = quant_configs(param)
    assert sorted(got.values(), key=repr) == sorted(want.values(), key=repr)
    data = golden_feeds(folder)
    ours = load_net(str(proto), str(folder / "weights.caffemodel")).forward(dict(data))
    again = load_net(str(back), str(weights)).forward(dict(data))
    np.testing.assert_array_equal(np.asarray(again["ip2"]), np.asarray(ours["ip2"]))


DECONV_FC = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 5 dim: 5 } } }
layer { name: "up" type: "DeconvolutionRistretto" bottom: "data" top: "up"
  convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 }
  quantization_param { bw_layer_in: 8 fl_layer_in: 6 bw_params: 6 fl_params: 7 bw_layer_out: 16 fl_layer_out: 9
                       bw_bias: 16 fl_bias: 12 } }
layer { name: "relu" type: "ReLU" bottom: "up" top: "up" }
layer { name: "fc_axis2" type: "FcRistretto" bottom: "up" top: "fc_axis2"
  inner_product_param { num_output: 5 axis: 2 }
  quantization_param { bw_layer_in: 8 fl_layer_in: 5 is_unsigned_layer_in: true bw_params: 8 fl_params: 8
                       bw_layer_out: 8 fl_layer_out: 4 } }
layer { name: "p2" type: "ConvolutionRistretto" bottom: "data" top: "p2"
  convolution_param { num_output: 2 kernel_size: 1 }
  quantization_param { precision: INTEGER_POWER_OF_2_WEIGHTS bw_layer_in: 8 fl_layer_in: 6 exp_min: -6 exp_max: 0
                       bw_layer_out: 8 fl_layer_out: 4 is_unsigned_layer_out: true bw_bias: 8 fl_bias: 5 } }
layer { name: "fc_t" type: "FcRistretto" bottom: "fc_axis2" top: "fc_t"
  inner_product_param { num_output: 3 transpose: true bias_term: false }
  quantization_param { bw_layer_in: 16 fl_layer_in: 8 bw_params: 12 fl_params: 10 bw_layer_out: 16 fl_layer_out: 8 } }
"""


@pytest.mark.parametrize("fmt", FORMATS)
def test_deconvolution_and_inner_products_with_axis_and_transpose_round_trip_bit_for_bit(fmt, tmp_path, capsys):
    """DeconvolutionRistretto, FcRistretto on axis 2 (Flatten + Gemm + Reshape in ONNX, one
    layer again), FcRistretto with transpose and no bias, 12-bit weights in int16, and our
    extensions: a bias in its own format (bw_bias), unsigned activations (uint8 / signed=0),
    a power-of-two layer with a fixed point bias reading a blob another layer trimmed."""
    from ristretto_cli.caffe.prototxt import read_net
    from ristretto_cli.export.onnx_export import export_net
    from ristretto_cli.net.loading import load_net

    src = tmp_path / "net.prototxt"
    src.write_text(DECONV_FC)
    net = random_net(src)
    model = export_net(net, fmt).model
    proto, weights = import_file(tmp_path, capsys, model)
    back = read_net(str(proto))
    assert quant_configs(back) == quant_configs(read_net(str(src)))
    assert sorted(lp.type for lp in back.layer) == ["ConvolutionRistretto", "DeconvolutionRistretto", "FcRistretto",
                                                    "FcRistretto", "Input", "ReLU"]
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32)
    ours = {k: np.asarray(v) for k, v in net.forward({"data": x}).items()}
    again = load_net(str(proto), str(weights)).forward({"data": x})
    ref = run_model(model, fmt, {"data": x})
    assert sorted(ours) == sorted(again) == sorted(ref) == ["fc_t", "p2"]
    for name in ours:
        np.testing.assert_array_equal(np.asarray(again[name]), ours[name], err_msg=name)
        np.testing.assert_array_equal(ref[name], ours[name], err_msg=name)
    assert (ours["p2"] >= 0).all() and (ours["p2"] > 0).any()


@pytest.mark.parametrize("prototxt,batch", [
    (MODELS / "lenet/lenet.prototxt", 2),
    (REPO / "tests/data/export_all_layers.prototxt", None),
], ids=["lenet", "all_layers"])
def test_float_onnx_to_caffe_to_onnx_keeps_the_outputs(prototxt, batch, tmp_path, capsys):
    from ristretto_cli.export.onnx_export import export_net, export_onnx

    result = export_net(random_net(prototxt, batch), "float")
    proto, weights = import_file(tmp_path, capsys, result.model)
    again = export_onnx(str(proto), str(weights), "float").model
    rng = np.random.default_rng(2)
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in result.inputs.items()}
    a, b = run_model(result.model, "qdq", feeds), run_model(again, "qdq", feeds)
    for name in a:
        assert relative_error(b[name], a[name]) < 1e-5, name


# -- Q/DQ models of the same shape from other tools ----------------------------------------

def _init(name, array, dtype=None):
    if dtype == TensorProto.INT4:
        a = np.asarray(array)
        return helper.make_tensor(name, TensorProto.INT4, list(a.shape), a.reshape(-1).tolist())
    return numpy_helper.from_array(np.asarray(array), name)


def _qdq(x, scale, zp, out, name):
    return [helper.make_node("QuantizeLinear", [x, scale, zp], [f"{out}_q"], name=f"{name}_q"),
            helper.make_node("DequantizeLinear", [f"{out}_q", scale, zp], [out], name=f"{name}_dq")]


def other_tool_model():
    """An ORT-style Q/DQ graph: uint8 activations (zero point 0), int8 weights, int32
    biases at scale s_in * s_w, a Q/DQ pair shared by the output of one layer and the input
    of the next, one input pair read by two convolutions, MatMul + Add, weights given as
    DequantizeLinear(QuantizeLinear(float constant)), Relu between trims."""
    rng = np.random.default_rng(5)
    inits = [
        _init("s_in", np.float32(2.0 ** -6)), _init("zp_u8", np.uint8(0)), _init("zp_i8", np.int8(0)),
        _init("zp_i32", np.int32(0)), _init("s_w", np.float32(2.0 ** -7)), _init("s_b", np.float32(2.0 ** -13)),
        _init("s_a", np.float32(2.0 ** -4)), _init("s_o", np.float32(2.0 ** -3)),
        _init("w1", rng.integers(-128, 128, (4, 3, 3, 3)).astype(np.int8)),
        _init("b1", rng.integers(-5000, 5000, 4).astype(np.int32)),
        _init("w2f", (rng.standard_normal((4, 3, 1, 1)) * 0.3).astype(np.float32)),
        _init("w3", rng.integers(-128, 128, (4 * 6 * 6, 5)).astype(np.int8)),
        _init("b3", rng.integers(-3000, 3000, 5).astype(np.int32)),
        _init("shape", np.array([2, -1], np.int64)),
    ]
    nodes = _qdq("x", "s_in", "zp_u8", "xq", "in")  # read by conv1 and conv2: trimmed once
    nodes += [helper.make_node("DequantizeLinear", ["w1", "s_w", "zp_i8"], ["w1f"], name="w1_dq"),
              helper.make_node("DequantizeLinear", ["b1", "s_b", "zp_i32"], ["b1f"], name="b1_dq"),
              helper.make_node("Conv", ["xq", "w1f", "b1f"], ["c1"], pads=[1, 1, 1, 1], name="conv1")]
    nodes += _qdq("c1", "s_a", "zp_i8", "c1q", "c1")
    nodes += [helper.make_node("QuantizeLinear", ["w2f", "s_w", "zp_i8"], ["w2q"], name="w2_q"),
              helper.make_node("DequantizeLinear", ["w2q", "s_w", "zp_i8"], ["w2d"], name="w2_dq"),
              helper.make_node("Conv", ["xq", "w2d"], ["c2"], name="conv2")]
    nodes += _qdq("c2", "s_a", "zp_i8", "c2q", "c2")
    nodes += [helper.make_node("Add", ["c1q", "c2q"], ["sum"], name="sum"),
              helper.make_node("Relu", ["sum"], ["r"], name="relu"),
              helper.make_node("Reshape", ["r", "shape"], ["flat"], name="flat")]
    nodes += _qdq("flat", "s_a", "zp_u8", "flatq", "fc_in")
    nodes += [helper.make_node("DequantizeLinear", ["w3", "s_w", "zp_i8"], ["w3f"], name="w3_dq"),
              helper.make_node("DequantizeLinear", ["b3", "s_b", "zp_i32"], ["b3f"], name="b3_dq"),
              helper.make_node("MatMul", ["flatq", "w3f"], ["mm"], name="fc"),
              helper.make_node("Add", ["mm", "b3f"], ["fc_b"], name="fc_bias")]
    nodes += _qdq("fc_b", "s_o", "zp_i8", "y", "fc_out")
    graph = helper.make_graph(nodes, "other", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_a_qdq_model_of_another_tool_imports_and_computes_like_onnx_runtime(tmp_path, capsys):
    from ristretto_cli.caffe.prototxt import read_net
    from ristretto_cli.net.loading import load_net

    model = other_tool_model()
    onnx.checker.check_model(model, full_check=True)
    proto, weights = import_file(tmp_path, capsys, model)
    configs = quant_configs(read_net(str(proto)))
    assert {k: v[0] for k, v in configs.items()} == {"conv1": "ConvolutionRistretto", "conv2": "ConvolutionRistretto",
                                                     "fc": "FcRistretto"}
    c1 = configs["conv1"][1]
    assert (c1.bw_layer_in, c1.fl_layer_in, c1.is_unsigned_layer_in, c1.bw_params, c1.fl_params, c1.bw_bias,
            c1.fl_bias) == (8, 6, True, 8, 7, 32, 13)
    assert configs["conv2"][1].bw_bias is None and configs["fc"][1].is_unsigned_layer_in
    x = np.random.default_rng(1).uniform(-1, 3, (2, 3, 6, 6)).astype(np.float32)
    (ref,) = run_model(model, "qdq", {"x": x}).values()
    out = load_net(str(proto), str(weights)).forward({"x": x})
    np.testing.assert_array_equal(np.asarray(out["y"]), ref)


# -- what has no Ristretto form ---------------------------------------------------------------

def _import_fails(tmp_path, capsys, model, expected: str, node: str | None = None):
    src = tmp_path / "bad.onnx"
    src.write_bytes(model.SerializeToString())
    proto, weights = tmp_path / "out.prototxt", tmp_path / "out.caffemodel"
    status, err = _run(["import", "onnx", str(src), "-o", str(proto), "--weights-out", str(weights)], capsys)
    assert status == 2, err
    assert err.count("\n") == 1 and str(src) in err and expected in err, err
    if node:
        assert f"node '{node}'" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def _golden_qdq(shared, case="lenet_dfp", fmt="qdq"):
    from ristretto_cli.export.onnx_export import export_onnx

    folder = shared("golden", case)
    return export_onnx(str(folder / "net.prototxt"), str(folder / "weights.caffemodel"), fmt).model


def _set_init(model, name, array, dtype=None):
    for i, t in enumerate(model.graph.initializer):
        if t.name == name:
            model.graph.initializer[i].CopyFrom(_init(name, array, dtype))
            return
    model.graph.initializer.append(_init(name, array, dtype))


def _node(model, prefix, op):
    return next(n for n in model.graph.node if n.name.startswith(prefix) and n.op_type == op)


def test_a_scale_that_is_not_a_power_of_two_is_refused(tmp_path, capsys, shared):
    model = _golden_qdq(shared)
    dq = _node(model, "conv1/param0", "DequantizeLinear")
    dq.input[1] = "bad_scale"
    _set_init(model, "bad_scale", np.float32(0.3))
    _import_fails(tmp_path, capsys, model, "scale 0.3 is not a power of two; ristretto's dynamic fixed point needs "
                  "scale 2^-fl", dq.name)


def test_per_channel_scales_are_refused(tmp_path, capsys, shared):
    model = _golden_qdq(shared)
    dq = _node(model, "conv1/param0", "DequantizeLinear")
    dq.input[1] = "per_channel"
    _set_init(model, "per_channel", np.full(20, 2.0 ** -3, np.float32))
    dq.attribute.append(helper.make_attribute("axis", 0))
    _import_fails(tmp_path, capsys, model, "per-channel scales (20 values", dq.name)


def test_a_nonzero_zero_point_is_refused(tmp_path, capsys, shared):
    model = _golden_qdq(shared)
    q = _node(model, "conv2/", "QuantizeLinear")
    dq = next(n for n in model.graph.node if n.input and n.input[0] == q.output[0])
    q.input[2] = dq.input[2] = "zp3"
    _set_init(model, "zp3", np.int8(3))
    _import_fails(tmp_path, capsys, model, "zero point 3: ristretto's dynamic fixed point is symmetric", q.name)


def test_qdq_around_an_op_without_a_ristretto_layer_is_refused(tmp_path, capsys):
    inits = [_init("s", np.float32(0.25)), _init("zp", np.int8(0))]
    nodes = _qdq("x", "s", "zp", "xq", "in") + [helper.make_node("Relu", ["xq"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    _import_fails(tmp_path, capsys, model, "quantization around 'relu' (Relu) has no Ristretto form", "in_q")


def test_qonnx_narrow_range_and_an_unknown_rounding_mode_are_refused(tmp_path, capsys, shared):
    model = _golden_qdq(shared, fmt="qonnx")
    quant = _node(model, "conv1/", "Quant")
    for a in quant.attribute:
        if a.name == "narrow":
            a.i = 1
    _import_fails(tmp_path, capsys, model, "narrow = 1 leaves out the most negative code", quant.name)
    model = _golden_qdq(shared, fmt="qonnx")
    quant = _node(model, "conv2/", "Quant")
    for a in quant.attribute:
        if a.name == "rounding_mode":
            a.s = b"CEIL"
    _import_fails(tmp_path, capsys, model, "rounding_mode CEIL has no ristretto rounding scheme", quant.name)


def test_power_of_two_weights_need_the_metadata_and_contradicting_metadata_is_refused(tmp_path, capsys, shared):
    import json

    model = _golden_qdq(shared, "pow2")
    del model.metadata_props[:]
    _import_fails(tmp_path, capsys, model, "power-of-two weights are recognised only from the metadata")
    model = _golden_qdq(shared)
    meta = {p.key: p for p in model.metadata_props}
    q = json.loads(meta["quantization"].value)
    q["conv1"]["fl_layer_in"] = 6
    meta["quantization"].value = json.dumps(q)
    _import_fails(tmp_path, capsys, model, "metadata gives layer 'conv1' fl_layer_in 6, the graph 7")


def test_a_trimmed_input_read_untrimmed_after_the_layer_is_refused(tmp_path, capsys):
    """A Ristretto layer trims its bottom in place; an ONNX node that reads the untrimmed
    tensor after it would see another value in Caffe."""
    model = other_tool_model()
    model.graph.node.append(helper.make_node("Relu", ["x"], ["x_relu"], name="late_reader"))
    model.graph.output.append(helper.make_tensor_value_info("x_relu", TensorProto.FLOAT, [2, 3, 6, 6]))
    _import_fails(tmp_path, capsys, model, "reads 'x' untrimmed after this layer", "conv1")


def test_quantize_linear_without_a_zero_point_is_uint8_and_imports_as_unsigned(tmp_path, capsys):
    """ONNX's default: QuantizeLinear without a zero point gives uint8 (our unsigned input)."""
    from ristretto_cli.caffe.prototxt import read_net
    from ristretto_cli.net.loading import load_net

    rng = np.random.default_rng(3)
    inits = [_init("s_in", np.float32(2.0 ** -5)), _init("s_w", np.float32(2.0 ** -6)),
             _init("s_o", np.float32(2.0 ** -2)), _init("zp", np.int8(0)),
             _init("w", rng.integers(-8, 8, (2, 3, 3, 3)).astype(np.int8))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s_in"], ["xq8"], name="in_q"),
             helper.make_node("DequantizeLinear", ["xq8", "s_in"], ["xq"], name="in_dq"),
             helper.make_node("DequantizeLinear", ["w", "s_w"], ["wf"], name="w_dq"),
             helper.make_node("Conv", ["xq", "wf"], ["c"], name="conv")] + _qdq("c", "s_o", "zp", "y", "out")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    proto, weights = import_file(tmp_path, capsys, model)
    (type_, cfg), = quant_configs(read_net(str(proto))).values()
    assert type_ == "ConvolutionRistretto" and cfg.is_unsigned_layer_in and not cfg.is_unsigned_layer_out
    assert (cfg.bw_layer_in, cfg.fl_layer_in, cfg.bw_params, cfg.fl_params, cfg.bw_layer_out, cfg.fl_layer_out) == (
        8, 5, 8, 6, 8, 2)
    x = np.random.default_rng(4).uniform(-2, 10, (1, 3, 4, 4)).astype(np.float32)
    (ref,) = run_model(model, "qdq", {"x": x}).values()
    np.testing.assert_array_equal(np.asarray(load_net(str(proto), str(weights)).forward({"x": x})["y"]), ref)
