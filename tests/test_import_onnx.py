"""`ristretto import onnx`: the CNN subset of ONNX into a Caffe net; Caffe -> ONNX -> Caffe
keeps outputs; bad input is a one-line error with exit status 2 and nothing written."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import REPO
from test_export_onnx import MODELS, random_net, relative_error, run_ort

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _run(argv, capsys):
    from ristretto_cli.cli import run

    status = run(argv)
    return status, capsys.readouterr().err


def _load(proto, weights):
    from ristretto_cli.net.loading import load_net

    return load_net(str(proto), str(weights))


@pytest.mark.parametrize("prototxt,batch", [
    (REPO / "tests/data/export_all_layers.prototxt", None),
    (MODELS / "lenet/lenet.prototxt", 2),
    (MODELS / "squeezenet_v1.1/deploy.prototxt", 1),
], ids=["all_layers", "lenet", "squeezenet_v1.1"])
def test_caffe_to_onnx_to_caffe_keeps_the_outputs(prototxt, batch, tmp_path, capsys):
    from ristretto_cli.export.onnx_export import export_net

    net = random_net(prototxt, batch)
    result = export_net(net, "float")
    (tmp_path / "net.onnx").write_bytes(result.to_bytes())
    proto, weights = tmp_path / "back.prototxt", tmp_path / "back.caffemodel"
    status, err = _run(["import", "onnx", str(tmp_path / "net.onnx"), "-o", str(proto),
                        "--weights-out", str(weights)], capsys)
    assert status == 0, err
    back = _load(proto, weights)
    rng = np.random.default_rng(1)
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in result.inputs.items()}
    ours = net.forward(dict(feeds))
    again = back.forward(dict(feeds))
    for name in result.outputs:
        assert relative_error(again[name], ours[name]) < 1e-5, name


def _model(nodes, inits, in_shape, out_name, opset=17):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_onnx_ops_of_the_subset_import_and_agree_with_onnx_runtime(tmp_path, capsys):
    """Clip(0, 6), LeakyRelu, GlobalAveragePool, MatMul + Add, Identity, a per-channel Mul,
    BatchNormalization with gamma/beta, Flatten, Gemm with transB = 0."""
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((4, 3, 3, 3)), "b": rng.standard_normal(4),
             "zero": np.array(0.0), "six": np.array(6.0), "ch": rng.standard_normal((4, 1, 1)),
             "gamma": rng.uniform(0.5, 2, 4), "beta": rng.standard_normal(4), "mean": rng.standard_normal(4),
             "var": rng.uniform(0.5, 2, 4), "m": rng.standard_normal((4, 5)), "bias": rng.standard_normal(5),
             "g": rng.standard_normal((5, 3)), "gb": rng.standard_normal(3)}
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Clip", ["c", "zero", "six"], ["r6"], name="relu6"),
        helper.make_node("Mul", ["r6", "ch"], ["s"], name="scale"),
        helper.make_node("BatchNormalization", ["s", "gamma", "beta", "mean", "var"], ["bn"], name="bn"),
        helper.make_node("LeakyRelu", ["bn"], ["lr"], alpha=0.2, name="leaky"),
        helper.make_node("Identity", ["lr"], ["id"], name="id"),
        helper.make_node("GlobalAveragePool", ["id"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
        helper.make_node("MatMul", ["flat", "m"], ["mm"], name="mm"),
        helper.make_node("Add", ["mm", "bias"], ["fc"], name="fc"),
        helper.make_node("Gemm", ["fc", "g", "gb"], ["out"], name="gemm"),
    ]
    model = _model(nodes, inits, [2, 3, 6, 6], "out")
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    proto, weights = tmp_path / "m.prototxt", tmp_path / "m.caffemodel"
    status, err = _run(["import", "onnx", str(path), "-o", str(proto), "--weights-out", str(weights)], capsys)
    assert status == 0, err
    text = proto.read_text()
    for t in ('type: "Clip"', 'type: "Scale"', 'type: "BatchNorm"', 'negative_slope: 0.2', 'global_pooling: true',
              'type: "Bias"', "transpose: true"):
        assert t in text, t
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    ort = pytest.importorskip("onnxruntime")
    (ref,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    net = _load(proto, weights)
    out = net.forward({"x": x})
    assert relative_error(out["out"], ref) < 1e-5


# -- bad input ---------------------------------------------------------------------------

def _import_fails(tmp_path, capsys, data: bytes, expected: str):
    src = tmp_path / "bad.onnx"
    src.write_bytes(data)
    proto, weights = tmp_path / "out.prototxt", tmp_path / "out.caffemodel"
    status, err = _run(["import", "onnx", str(src), "-o", str(proto), "--weights-out", str(weights)], capsys)
    assert status == 2, err
    assert err.count("\n") == 1 and str(src) in err and expected in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def _lenet_onnx():
    from ristretto_cli.export.onnx_export import export_net

    return export_net(random_net(MODELS / "lenet/lenet.prototxt", 1), "float").model


def test_a_truncated_onnx_file_is_a_one_line_error(tmp_path, capsys):
    data = _lenet_onnx().SerializeToString()
    _import_fails(tmp_path, capsys, data[: len(data) // 3], "not a readable ONNX model")


def test_an_unsupported_opset_is_a_one_line_error(tmp_path, capsys):
    model = _lenet_onnx()
    model.opset_import[0].version = 6
    _import_fails(tmp_path, capsys, model.SerializeToString(), "opset 6 is not supported")


def test_an_unsupported_op_is_named_with_its_node(tmp_path, capsys):
    nodes = [helper.make_node("Erf", ["x"], ["y"], name="the_erf")]
    model = _model(nodes, {}, [1, 3], "y")
    _import_fails(tmp_path, capsys, model.SerializeToString(), "node 'the_erf' has op Erf")
