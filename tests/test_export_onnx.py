"""`ristretto export onnx`: ONNX Runtime runs the exported nets and agrees with our forward.

Float nets within 1e-5 relative to the largest magnitude (logits, i.e. the blob a final
Softmax reads, and every other blob where the layer zoo test asks); every layer type of
the handler table on one synthetic net; quantized LeNet (8-bit dynamic fixed point)
exported as Q/DQ equal to ours bit for bit.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import REPO, SHARED

onnx = pytest.importorskip("onnx")

RTOL = 1e-5


def relative_error(ours, ref) -> float:
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64).reshape(ours.shape)
    scale = np.abs(ref).max()
    return float(np.abs(ours - ref).max() / scale) if scale > 0 else float(np.abs(ours).max())


def run_ort(result, feeds: dict, blobs=(), exact: bool = True) -> dict:
    """Run an export in ONNX Runtime; returns {blob: array} for the outputs and ``blobs``.
    ``exact``: without ORT's QDQ fusions (QLinearConv & co. requantize their own way)."""
    ort = pytest.importorskip("onnxruntime")
    model = onnx.ModelProto()
    model.CopyFrom(result.model)
    names = {o.name for o in model.graph.output}
    wanted = {}
    for b in list(result.outputs) + list(blobs):
        t = result.tensors[b]
        wanted[b] = t
        if t not in names and t not in {i.name for i in model.graph.input}:
            model.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
            names.add(t)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    if exact:
        opts.add_session_config_entry("session.disable_quant_qdq", "1")
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in sess.get_outputs()]
    values = dict(zip(out_names, sess.run(None, feeds)))
    return {b: values[t] if t in values else feeds[t] for b, t in wanted.items()}


def random_net(prototxt, batch=None, seed=3):
    """The TEST-phase net of a deploy prototxt with random weights (xavier-like draws,
    Gaussian biases), batch set on its Input layer."""
    from ristretto_cli.backend import Backend
    from ristretto_cli.caffe.prototxt import read_net
    from ristretto_cli.net import Net

    param = read_net(str(prototxt))
    for lp in param.layer:
        if lp.type == "Input" and batch:
            for s in lp.input_param.shape:
                s.dim[0] = batch
    if batch and len(param.input_shape):
        for s in param.input_shape:
            s.dim[0] = batch
    if batch and len(param.input_dim):
        param.input_dim[0] = batch
    net = Net(param, phase="TEST", backend=Backend(np, seed=seed), source=str(prototxt))
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        for k, blob in enumerate(layer.blobs):
            if layer.type == "BatchNorm":
                blob[...] = rng.uniform(0.5, 2.0, blob.shape) if k != 0 else rng.standard_normal(blob.shape)
            elif blob.ndim >= 2:
                fan_in = int(np.prod(blob.shape[1:]))
                blob[...] = (rng.random(blob.shape, dtype=np.float32) - 0.5) * np.float32(2 * np.sqrt(3.0 / fan_in))
            else:
                blob[...] = rng.standard_normal(blob.shape) * 0.5
    return net


def compare_float(net, logits, blobs=(), seed=0):
    from ristretto_cli.export.onnx_export import export_net

    result = export_net(net, "float")
    rng = np.random.default_rng(seed)
    feeds = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in result.inputs.items()}
    net.forward(dict(feeds))
    ours = {b: np.array(v) for b, v in net.blobs.items()}
    theirs = run_ort(result, feeds, [logits, *blobs])
    errors = {b: relative_error(ours[b], theirs[b]) for b in theirs}
    return errors


MODELS = REPO / "models"
NETS = [
    ("models/lenet", MODELS / "lenet/lenet.prototxt", "ip2", 2),
    ("models/cifar10_full", MODELS / "cifar10_full/cifar10_full.prototxt", "ip1", 2),
    ("models/cifar10_quick", MODELS / "cifar10_quick/cifar10_quick.prototxt", "ip2", 2),
    ("models/squeezenet_v1.0", MODELS / "squeezenet_v1.0/deploy.prototxt", "pool10", 1),
    ("models/squeezenet_v1.1", MODELS / "squeezenet_v1.1/deploy.prototxt", "pool10", 1),
    ("models/caffenet", MODELS / "caffenet/deploy.prototxt", "fc8", 1),
    ("models/googlenet", MODELS / "googlenet/deploy.prototxt", "loss3/classifier", 1),
    ("zoo/squeezenet_v1.0", SHARED / "zoo/squeezenet_v1.0/deploy.prototxt", "pool10", 1),
    ("zoo/cifar10_quick", SHARED / "zoo/cifar10/cifar10_quick.prototxt", "ip2", 2),
    ("zoo/v1/lenet", SHARED / "zoo/bvlc_caffe_2014_v1_format/mnist/lenet.prototxt", "ip2", 2),
    ("zoo/v1/cifar10_full", SHARED / "zoo/bvlc_caffe_2014_v1_format/cifar10/cifar10_full.prototxt", "ip1", 2),
]


@pytest.mark.parametrize("name,prototxt,logits,batch", NETS, ids=[n[0] for n in NETS])
def test_onnx_runtime_runs_exported_deploy_nets_like_our_forward(name, prototxt, logits, batch):
    if not prototxt.exists():
        pytest.skip(f"{prototxt} not present")
    errors = compare_float(random_net(prototxt, batch), logits)
    assert max(errors.values()) < RTOL, errors


def test_every_handled_layer_type_runs_in_onnx_runtime_like_our_forward():
    """One net with every type of the table (grouped dilated conv, leaky ReLU, PReLU, ELU,
    BatchNorm + Scale + Bias, MAX/AVE pooling with Caffe's ceil rule, both LRN regions,
    Eltwise with coefficients, Deconvolution, Crop, Slice, Dropout, Flatten, InnerProduct
    with transpose and axis, Reshape, Softmax on an axis, global pooling); every blob agrees."""
    net = random_net(REPO / "tests/data/export_all_layers.prototxt")
    errors = compare_float(net, "softmax", blobs=list(net.blob_shapes))
    assert len(errors) == len(net.blob_shapes)
    assert max(errors.values()) < RTOL, {k: v for k, v in errors.items() if v >= RTOL}


POOLS = [(size, k, s, p, method) for size in (5, 6, 7, 8) for k in (2, 3) for s in (1, 2, 3) for p in (0, 1)
         for method in ("MAX", "AVE") if p < k]


def test_pooling_geometries_export_exactly_or_refuse_with_the_reason(tmp_path):
    """Caffe's ceil-mode windows (and the dropped window that would start in the padding):
    every geometry either agrees with ONNX Runtime or is refused naming the layer."""
    from ristretto_cli.errors import RistrettoError

    lines = ['layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: %d dim: %d } } }']
    refused, compared = [], 0
    for size, k, s, p, method in POOLS:
        proto = tmp_path / "pool.prototxt"
        proto.write_text(lines[0] % (size, size) + "\n" + (
            f'layer {{ name: "pool" type: "Pooling" bottom: "data" top: "pool" '
            f'pooling_param {{ pool: {method} kernel_size: {k} stride: {s} pad: {p} }} }}\n'))
        net = random_net(proto)
        try:
            errors = compare_float(net, "pool")
        except RistrettoError as exc:
            assert "layer 'pool' (Pooling)" in str(exc)
            refused.append((size, k, s, p, method))
            continue
        compared += 1
        assert max(errors.values()) < RTOL, (size, k, s, p, method, errors)
    assert compared > 0.9 * len(POOLS), refused


# -- quantized nets -------------------------------------------------------------------

def mnist_test_images(n: int):
    """The first ``n`` MNIST t10k images scaled like LeNet's data layer (x / 256) and their labels."""
    import gzip

    from conftest import shared_path

    folder = shared_path("data", "mnist")
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:n]
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    return (images.astype(np.float32) * np.float32(0.00390625)), labels.astype(np.int64)


def quantized_lenet(tmp_path, images, bw=8):
    """models/lenet deploy net as ConvolutionRistretto/FcRistretto, dynamic fixed point ``bw``
    bits everywhere, integer lengths from the float net's ranges on ``images`` (a hand-made
    quantize: fl = bw - 1 - ceil(log2 max)); returns (prototxt, caffemodel)."""
    from conftest import shared_path
    from ristretto_cli.caffe.prototxt import read_net, write_text
    from ristretto_cli.net.loading import load_net

    weights = shared_path("data", "caffemodels", "lenet_v2", "lenet_iter_10000.caffemodel")
    param = read_net(str(REPO / "models/lenet/lenet.prototxt"))
    param.layer[0].input_param.shape[0].dim[0] = len(images)
    float_proto = tmp_path / "lenet_float.prototxt"
    write_text(float_proto, param)
    net = load_net(str(float_proto), str(weights))
    ranges = {}

    def on_layer(i, layer, names, tops):
        if layer.type in ("Convolution", "InnerProduct"):
            ranges[layer.name] = [float(np.abs(net.blobs[net.bottom_names[i][0]]).max()),
                                  float(np.abs(tops[0]).max()), float(np.abs(layer.blobs[0]).max())]

    net.forward({"data": images}, on_layer=on_layer)

    def fl(m):
        return bw - 1 - int(np.ceil(np.log2(m)))

    for lp in param.layer:
        if lp.name in ranges:
            m_in, m_out, m_w = ranges[lp.name]
            lp.type = {"Convolution": "ConvolutionRistretto", "InnerProduct": "FcRistretto"}[lp.type]
            q = lp.quantization_param
            q.bw_layer_in = q.bw_layer_out = q.bw_params = bw
            q.fl_layer_in, q.fl_layer_out, q.fl_params = fl(m_in), fl(m_out), fl(m_w)
    proto = tmp_path / "lenet_q.prototxt"
    write_text(proto, param)
    return proto, weights


def ort_session(model_bytes, exact: bool):
    ort = pytest.importorskip("onnxruntime")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    if exact:  # ORT's QDQ fusions (QLinearConv, ...) requantize their own way
        opts.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def test_quantized_lenet_exported_as_qdq_equals_our_forward_bit_for_bit(tmp_path):
    from ristretto_cli.export.onnx_export import export_onnx
    from ristretto_cli.net.loading import load_net

    images, labels = mnist_test_images(200)
    proto, weights = quantized_lenet(tmp_path, images)
    result = export_onnx(str(proto), str(weights))  # default format: qdq (Ristretto layers)
    assert result.format == "qdq"
    ops = [n.op_type for n in result.model.graph.node]
    assert ops.count("QuantizeLinear") == 8 and ops.count("DequantizeLinear") == 8 + 8  # + weights, biases
    assert {i.data_type for i in result.model.graph.initializer} >= {onnx.TensorProto.INT8}
    net = load_net(str(proto), str(weights))
    net.forward({"data": images})
    ours = {b: np.array(v) for b, v in net.blobs.items()}
    # Q/DQ semantics as ONNX defines them (ORT without its QDQ fusions): every trimmed blob
    # bit for bit (float32 accumulation is exact at these widths), the Softmax to float rounding
    blobs = ["conv1", "pool1", "conv2", "pool2", "ip1", "ip2"]
    exact = run_ort(result, {"data": images}, blobs, exact=True)
    for b in blobs:
        np.testing.assert_array_equal(exact[b], ours[b], err_msg=b)
    assert relative_error(ours["prob"], exact["prob"]) < RTOL
    # ORT's default session fuses Q/DQ into integer kernels with its own requantization
    fused = run_ort(result, {"data": images}, ["ip2"], exact=False)
    differing = float((fused["ip2"] != ours["ip2"]).mean())
    print(f"qdq LeNet: ORT's default session differs from ours in {differing:.4f} of the logits")
    np.testing.assert_array_equal(fused["ip2"].argmax(1), ours["ip2"].argmax(1))
    assert (ours["ip2"].argmax(1) == labels).mean() > 0.97


@pytest.mark.parametrize("case", ["lenet_dfp", "conv_variants_dfp", "pow2"])
def test_golden_quantized_nets_exported_as_qdq_match_the_original_bit_for_bit(case, shared):
    """The original Ristretto's GPU-semantics outputs (../shared/golden): 16/8/4/2-bit
    weights, 8- and 16-bit activations, negative fl, ties everywhere, power-of-two weights."""
    from ristretto_cli.export.onnx_export import export_onnx

    folder = shared("golden", case)
    result = export_onnx(str(folder / "net.prototxt"), str(folder / "weights.caffemodel"), "qdq")
    feeds = {p.stem[len("input_"):]: np.load(p) for p in folder.glob("input_*.npy")}
    sess = ort_session(result.to_bytes(), exact=True)
    for out, value in zip(sess.get_outputs(), sess.run(None, feeds)):
        np.testing.assert_array_equal(value, np.load(folder / "expected_gpusem" / f"final__{out.name}.npy"))


def qonnx_reference_evaluator(model):
    """onnx's reference evaluator with QONNX's Quant (clamp to the signed or unsigned bw-bit range, round)."""
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun

    modes = {"ROUND": np.rint, "FLOOR": np.floor, "DOWN": np.trunc,
             "HALF_UP": lambda v: np.sign(v) * np.floor(np.abs(v) + 0.5)}

    class Quant(OpRun):
        op_domain = "qonnx.custom_op.general"

        def _run(self, x, scale, zeropt, bitwidth, signed=None, narrow=None, rounding_mode=None):
            bw = int(np.asarray(bitwidth).reshape(-1)[0])
            assert narrow == 0
            lo, hi = (-(2 ** (bw - 1)), 2 ** (bw - 1) - 1) if signed == 1 else (0, 2 ** bw - 1)
            y = np.clip(x / scale + zeropt, lo, hi)
            return (((modes[rounding_mode](y) - zeropt) * scale).astype(x.dtype),)

    return ReferenceEvaluator(model, new_ops=[Quant])


@pytest.mark.parametrize("case", ["lenet_dfp", "pow2"])
def test_qonnx_export_with_quant_semantics_matches_the_original_bit_for_bit(case, shared):
    from ristretto_cli.export.onnx_export import export_onnx

    folder = shared("golden", case)
    result = export_onnx(str(folder / "net.prototxt"), str(folder / "weights.caffemodel"), "qonnx")
    quants = [n for n in result.model.graph.node if n.op_type == "Quant"]
    assert quants and all(n.domain == "qonnx.custom_op.general" for n in quants)
    assert "qonnx.custom_op.general" in {o.domain for o in result.model.opset_import}
    feeds = {"data": np.load(folder / "input_data.npy")}
    outs = qonnx_reference_evaluator(result.model).run(None, feeds)
    for out, value in zip(result.model.graph.output, outs):
        np.testing.assert_array_equal(value, np.load(folder / "expected_gpusem" / f"final__{out.name}.npy"))


@pytest.mark.parametrize("case", ["lenet_dfp", "pow2", "conv_variants_dfp"])
def test_qonnx_export_runs_in_the_qonnx_executor_like_the_original(case, shared):
    """The qonnx package's own executor (its Quant implementation, not ours) reproduces
    the original's GPU-semantics outputs bit for bit."""
    pytest.importorskip("qonnx")
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    from ristretto_cli.export.onnx_export import export_onnx

    folder = shared("golden", case)
    result = export_onnx(str(folder / "net.prototxt"), str(folder / "weights.caffemodel"), "qonnx")
    feeds = {p.stem[len("input_"):]: np.load(p) for p in folder.glob("input_*.npy")}
    outputs = execute_onnx(ModelWrapper(result.model).transform(InferShapes()), feeds)
    for out in result.model.graph.output:
        np.testing.assert_array_equal(outputs[out.name],
                                      np.load(folder / "expected_gpusem" / f"final__{out.name}.npy"))


def test_metadata_names_the_source_the_quantization_and_our_version(shared):
    import json

    from ristretto_cli import __version__
    from ristretto_cli.export.onnx_export import export_onnx

    folder = shared("golden", "lenet_dfp")
    result = export_onnx(str(folder / "net.prototxt"), str(folder / "weights.caffemodel"))
    meta = {p.key: p.value for p in result.model.metadata_props}
    assert meta["source_prototxt"].endswith("net.prototxt") and meta["ristretto_version"] == __version__
    q = json.loads(meta["quantization"])
    assert q["conv1"] == {"precision": "DYNAMIC_FIXED_POINT", "rounding": "NEAREST", "bw_layer_in": 8,
                          "fl_layer_in": 7, "bw_layer_out": 16, "fl_layer_out": 9, "bw_params": 4, "fl_params": 3}
    onnx.checker.check_model(result.model, full_check=True)
    onnx.shape_inference.infer_shapes(result.model, strict_mode=True)


# -- the command and what it refuses ------------------------------------------------------

def _run(argv, capsys):
    from ristretto_cli.cli import run

    status = run(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_export_onnx_command_writes_a_model_and_says_what_it_left_out(tmp_path, capsys):
    out = tmp_path / "lenet.onnx"
    status, _, err = _run(["export", "onnx", "--model", str(REPO / "models/lenet/lenet_train_test.prototxt"),
                           "--input-shape", "data=2,1,28,28", "-o", str(out)], capsys)
    assert status == 0, err
    assert "accuracy (Accuracy)" in err and "loss (SoftmaxWithLoss)" in err and "label" in err
    model = onnx.load(str(out))
    assert [i.name for i in model.graph.input] == ["data"]
    assert [o.name for o in model.graph.output] == ["ip2"]
    assert {p.key: p.value for p in model.metadata_props}["format"] == "float"


def _quantized_golden_copy(tmp_path, shared, case, **changes):
    from ristretto_cli.caffe.prototxt import read_net, write_text

    folder = shared("golden", case)
    param = read_net(str(folder / "net.prototxt"))
    for lp in param.layer:
        if lp.HasField("quantization_param"):
            for k, v in changes.items():
                setattr(lp.quantization_param, k, v)
    proto = tmp_path / f"{case}.prototxt"
    write_text(proto, param)
    return str(proto), str(folder / "weights.caffemodel")


@pytest.mark.parametrize("case,changes,fmt,expected", [
    ("minifloat", {}, "qdq", "minifloat has no exact ONNX form"),
    ("minifloat", {}, "qonnx", "minifloat has no exact ONNX form"),
    ("lenet_dfp", {"bw_layer_in": 6}, "qdq", "bw_layer_in 6: QuantizeLinear saturates"),
    ("lenet_dfp", {"rounding_scheme": 4}, "qdq", "QuantizeLinear rounds half to even"),
    ("lenet_dfp", {"rounding_scheme": 1}, "qonnx", "STOCHASTIC rounding draws anew"),
    ("lenet_dfp", {"fl_layer_out": 200}, "qonnx", "is not a normal float32"),
    ("lenet_dfp", {"bw_params": 1}, "qonnx", "bipolar"),
])
def test_formats_that_onnx_cannot_express_exactly_are_refused_with_the_reason(
        tmp_path, capsys, shared, case, changes, fmt, expected):
    proto, weights = _quantized_golden_copy(tmp_path, shared, case, **changes)
    out = tmp_path / "q.onnx"
    status, _, err = _run(["export", "onnx", "-m", proto, "-w", weights, "-o", str(out), "--format", fmt], capsys)
    assert status == 2 and expected in err and err.count("\n") == 1, err
    assert "layer '" in err
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / f"{case}.prototxt"]


def test_a_6_bit_net_refused_as_qdq_exports_as_qonnx_and_an_opset_below_21_refuses_int16(tmp_path, capsys, shared):
    from ristretto_cli.export.onnx_export import export_onnx
    from ristretto_cli.net.loading import load_net

    proto, weights = _quantized_golden_copy(tmp_path, shared, "lenet_dfp", bw_layer_in=6)
    result = export_onnx(proto, weights, "qonnx")
    data = np.load(shared("golden", "lenet_dfp") / "input_data.npy")
    net = load_net(proto, weights)
    net.forward({"data": data})
    (value,) = qonnx_reference_evaluator(result.model).run(None, {"data": data})
    np.testing.assert_array_equal(value, np.asarray(net.blobs["ip2"]))
    folder = shared("golden", "lenet_dfp")
    status, _, err = _run(["export", "onnx", "-m", str(folder / "net.prototxt"), "-w",
                           str(folder / "weights.caffemodel"), "-o", str(tmp_path / "x.onnx"), "--opset", "17"], capsys)
    assert status == 2 and "int16 QuantizeLinear needs opset 21" in err


def test_an_unsupported_layer_and_an_unsupported_opset_are_one_line_errors(tmp_path, capsys):
    proto = tmp_path / "net.prototxt"
    proto.write_text('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }\n'
                     'layer { name: "am" type: "ArgMax" bottom: "data" top: "am" }\n')
    out = tmp_path / "net.onnx"
    status, _, err = _run(["export", "onnx", "-m", str(proto), "-o", str(out)], capsys)
    assert status == 2 and "layer 'am' of type ArgMax has no ONNX export" in err and not out.exists()
    status, _, err = _run(["export", "onnx", "-m", str(REPO / "models/lenet/lenet.prototxt"), "-o", str(out),
                           "--opset", "9"], capsys)
    assert status == 2 and "--opset 9: supported opsets are 13.." in err and not out.exists()
