"""Issue #8: every command line the original (Caffe / Caffe-Ristretto) accepts works.

--gpu in Caffe's syntax on every command, --level/--stage on test/benchmark/time, `time`
in the TRAIN phase with per-layer backward times, `device_query`, glog flags, --flagfile,
and `forward` reshaping the net to the fed arrays.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from ristretto_cli.data.lmdb_io import make_datum, write_datums
from ristretto_cli.errors import RistrettoError

from conftest import CUPY, run_cli

# A net on an LMDB whose extra outputs depend on the NetState: a layer only at level >= 1
# and one only with the stage "extra".
STATE_NET = '''name: "state"
layer {{ name: "data" type: "Data" top: "data" top: "label"
        transform_param {{ scale: 0.00390625 }}
        data_param {{ source: "{db}" batch_size: 2 backend: LMDB }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param {{ num_output: 2 kernel_size: 2 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "relu" type: "ReLU" bottom: "conv" top: "conv" }}
layer {{ name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
layer {{ name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" include {{ phase: TEST }} }}
layer {{ name: "high" type: "Power" bottom: "ip" top: "high" include {{ min_level: 1 }} }}
layer {{ name: "staged" type: "Power" bottom: "ip" top: "staged" include {{ stage: "extra" }} }}
'''

SOLVER = '''net: "{net}"
base_lr: 0.01
lr_policy: "fixed"
max_iter: 1
snapshot_after_train: false
'''


@pytest.fixture(scope="module")
def g(tmp_path_factory):
    d = tmp_path_factory.mktemp("compat")
    rng = np.random.default_rng(0)
    write_datums(str(d / "db"), [(f"{i:08d}", make_datum(rng.integers(0, 256, (1, 4, 4), dtype=np.uint8), i % 3))
                                 for i in range(6)])
    ns = SimpleNamespace(dir=d)
    ns.net = d / "state.prototxt"
    ns.net.write_text(STATE_NET.format(db=d / "db"))
    ns.net = str(ns.net)
    ns.weights = str(d / "state.caffemodel")
    assert run_cli(["init", "-m", ns.net, "-o", ns.weights, "--seed", "1"]) == 0
    ns.solver = d / "solver.prototxt"
    ns.solver.write_text(SOLVER.format(net=ns.net))
    ns.solver = str(ns.solver)
    x = np.zeros((2, 1, 4, 4), np.float32)
    np.save(d / "x.npy", x)
    np.save(d / "y.npy", np.zeros(2, np.float32))
    ns.x, ns.y = str(d / "x.npy"), str(d / "y.npy")
    return ns


def table_rows(text: str) -> dict[str, list[str]]:
    """First cell -> the other cells of every row of a rich table ("name[k]" rows of a
    multi-element output count under "name" too)."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            rows[cells[0]] = cells[1:]
            rows.setdefault(cells[0].partition("[")[0], cells[1:])
    return rows


def assert_one_line_error(code, err, *parts):
    err = err.strip()
    assert code == 2, err
    assert "Traceback" not in err and "\n" not in err, err
    assert err.startswith("ristretto: error: "), err
    for p in parts:
        assert str(p) in err, f"{p!r} not in {err!r}"


# --------------------------------------------------------------------------- 5. --gpu in Caffe's syntax

GPU_COMMANDS = {
    "benchmark": lambda g, out: ["benchmark", "-m", g.net, "-w", g.weights, "-i", "1"],
    "test": lambda g, out: ["test", "-m", g.net, "-w", g.weights, "-i", "1"],
    "forward": lambda g, out: ["forward", "-m", g.net, "-w", g.weights, "--input", f"data={g.x}",
                          "--input", f"label={g.y}", "-o", out / "fwd.npz"],
    "time": lambda g, out: ["time", "-m", g.net, "-w", g.weights, "-i", "1"],
    "quantize": lambda g, out: ["quantize", "-m", g.net, "-w", g.weights, "--model-quantized", out / "q.prototxt",
                           "--trimming-mode", "dynamic_fixed_point", "-i", "1"],
    "finetune": lambda g, out: ["finetune", "--solver", g.solver],
    "train": lambda g, out: ["train", "--solver", g.solver],
}


def test_parse_gpu_accepts_caffes_syntax(capsys):
    from ristretto_cli.commands.options import parse_gpu, parse_gpu_list

    assert parse_gpu(None) is None and parse_gpu("") is None
    assert parse_gpu("-1") is None and parse_gpu(-1) is None
    assert parse_gpu("0") == 0 and parse_gpu("3") == 3 and parse_gpu(" 2 ") == 2
    assert capsys.readouterr().err == ""
    assert parse_gpu("all") == 0 and parse_gpu("ALL") == 0
    assert parse_gpu("1,0") == 1 and parse_gpu("2, 3") == 2
    err = capsys.readouterr().err
    assert "--gpu all" in err and "--gpu 1,0" in err and "using device 1" in err
    assert parse_gpu_list("0,2") == [0, 2] and parse_gpu_list("all") == "all" and parse_gpu_list("-1") is None
    for bad in ("x", "0,x", "1.5", "-1,0"):
        with pytest.raises(RistrettoError, match="--gpu"):
            parse_gpu(bad)


@pytest.mark.parametrize("command", sorted(GPU_COMMANDS))
@pytest.mark.parametrize("spelling", [["--gpu", "-1"], ["--gpu=-1"], ["-gpu", "-1"], ["-gpu=-1"]])
def test_gpu_minus_one_is_the_cpu_on_every_command(g, tmp_path, capsys, command, spelling):
    code, out, err = run_cli(GPU_COMMANDS[command](g, tmp_path) + spelling, capsys)
    assert code == 0, err


@pytest.mark.skipif(CUPY is not None, reason="CuPy and a device are present")
@pytest.mark.parametrize("command", sorted(GPU_COMMANDS))
@pytest.mark.parametrize("value", ["0", "all", "0,1"])
def test_gpu_without_cupy_is_one_error_on_every_command(g, tmp_path, capsys, command, value):
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed")
    except ImportError:
        pass
    code, out, err = run_cli(GPU_COMMANDS[command](g, tmp_path) + ["--gpu", value], capsys)
    lines = err.strip().splitlines()
    if value != "0":  # the notice that one device is used, then the error
        assert "one device" in lines[0] and "using device 0" in lines[0], err
        lines = lines[1:]
    assert_one_line_error(code, "\n".join(lines), "--gpu 0", "CuPy is not installed")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("command", sorted(GPU_COMMANDS))
def test_gpu_garbage_is_one_error_on_every_command(g, tmp_path, capsys, command):
    code, out, err = run_cli(GPU_COMMANDS[command](g, tmp_path) + ["--gpu", "first"], capsys)
    assert_one_line_error(code, err, "--gpu 'first'", "'all'")


# --------------------------------------------------------------------------- 6. --level/--stage, time, device_query

@pytest.mark.parametrize("verb", ["benchmark", "test"])
def test_benchmark_level_and_stage_select_layers(g, capsys, verb):
    base = [verb, "-m", g.net, "-w", g.weights, "-i", "1"]
    code, out, err = run_cli(base, capsys)
    assert code == 0, err
    rows = table_rows(out)
    assert "loss" in rows and "high" not in rows and "staged" not in rows
    code, out, err = run_cli(base + ["--level", "1", "--stage", "other,extra"], capsys)
    assert code == 0, err
    rows = table_rows(out)
    assert "high" in rows and "staged" in rows
    code, out, err = run_cli(base + ["-level=1", "-stage=other"], capsys)
    assert code == 0, err
    rows = table_rows(out)
    assert "high" in rows and "staged" not in rows


def test_time_defaults_to_train_with_per_layer_backward(g, capsys):
    code, out, err = run_cli(["time", "-m", g.net, "-w", g.weights, "-i", "2"], capsys)
    assert code == 0, err
    assert "(TRAIN)" in out
    header = next(line for line in out.splitlines() if "layer" in line and "type" in line)
    assert "forward ms" in header and "backward ms" in header
    rows = table_rows(out)
    for name in ("data", "conv", "relu", "ip", "loss"):
        assert name in rows
        assert float(rows[name][1]) >= 0 and float(rows[name][2]) >= 0  # forward, backward
    assert float(rows["conv"][2]) > 0 and float(rows["loss"][2]) > 0  # these layers ran backward
    assert float(rows["backward"][2]) >= float(rows["conv"][2])
    fb = float(rows["forward-backward"][1])
    assert fb == pytest.approx(float(rows["forward"][1]) + float(rows["backward"][2]), rel=1e-3, abs=2e-3)


def test_time_test_phase_and_level_stage(g, capsys):
    code, out, err = run_cli(["time", "-m", g.net, "-w", g.weights, "-i", "1", "--phase", "TEST",
                              "--level", "1", "--stage", "extra"], capsys)
    assert code == 0, err
    rows = table_rows(out)
    assert "(TEST)" in out and "backward" not in rows and "high" in rows and "staged" in rows


def test_net_backward_reports_each_layer(g):
    from ristretto_cli.net.loading import load_net

    net = load_net(g.net, g.weights, "TRAIN")
    net.forward()
    seen = []
    diffs = net.backward(on_layer=lambda i, layer, names, bottom_diffs: seen.append((i, layer.name, list(names))))
    assert [s[1] for s in seen] == ["loss", "ip", "relu", "conv"]  # in reverse order, the data layer gets none
    assert seen[0] == (4, "loss", ["ip", "label"])
    assert set(diffs) == {"loss", "ip", "conv"}  # every blob a gradient reached; none for the label


@pytest.mark.parametrize("verb", ["device_query", "device-query"])
def test_device_query_without_cupy_is_one_error(capsys, verb):
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed")
    except ImportError:
        pass
    code, out, err = run_cli([verb], capsys)
    assert_one_line_error(code, err, "device_query", "CuPy is not installed")
    code, out, err = run_cli([verb, "--gpu", "0"], capsys)
    assert_one_line_error(code, err, "CuPy is not installed")


def test_device_query_refuses_a_cpu_or_garbage_id(capsys):
    code, out, err = run_cli(["device_query", "--gpu", "x"], capsys)
    assert_one_line_error(code, err, "--gpu 'x'")
    code, out, err = run_cli(["device_query", "-gpu", "-1"], capsys)
    assert_one_line_error(code, err, "--gpu -1", "device id")


@pytest.mark.gpu
@pytest.mark.skipif(CUPY is None, reason="needs CuPy and a CUDA device")
def test_device_query_lists_the_devices(capsys):
    count = CUPY.cuda.runtime.getDeviceCount()
    code, out, err = run_cli(["device_query"], capsys)
    assert code == 0, err
    rows = table_rows(out)
    assert [str(i) for i in range(count)] == [k for k in rows if k.isdigit()]
    props = CUPY.cuda.runtime.getDeviceProperties(0)
    assert rows["0"][1] == f"{props['major']}.{props['minor']}"
    code, out, err = run_cli(["device_query", "--gpu", "0"], capsys)
    assert code == 0 and "0" in table_rows(out)
    code, out, err = run_cli(["device_query", "--gpu", str(count)], capsys)
    assert_one_line_error(code, err, f"--gpu {count}", "no such CUDA device")


# --------------------------------------------------------------------------- 7. glog flags, --flagfile

GLOG_HABITS = [
    ["--logtostderr"], ["-logtostderr"], ["-alsologtostderr"], ["--alsologtostderr=1"], ["--logtostderr=true"],
    ["--nologtostderr"], ["-colorlogtostderr"], ["--v=2"], ["-v", "1"], ["-v=3"], ["--v", "0"],
    ["--minloglevel=1"], ["-minloglevel", "0"], ["--stderrthreshold=0"], ["-log_dir=/tmp"], ["--log-dir", "/tmp"],
    ["--vmodule=net=2"], ["--logbufsecs=0"], ["--undefok=foo"],
]


@pytest.mark.parametrize("habit", GLOG_HABITS, ids=" ".join)
def test_glog_flags_are_accepted_anywhere_and_ignored(g, capsys, habit):
    args = ["info", "-m", g.net]
    code, plain, err = run_cli(args, capsys)
    assert code == 0, err
    for line in (habit + args, args[:1] + habit + args[1:], args + habit):
        code, out, err = run_cli(line, capsys)
        assert code == 0, (line, err)
        assert out == plain and err == "", line


def test_glog_flags_do_not_reach_past_a_double_dash(g, capsys):
    from ristretto_cli.cli import expand_gflags

    assert expand_gflags(["-v", "2", "info", "--", "--logtostderr"]) == ["info", "--", "--logtostderr"]
    assert expand_gflags(["info", "-m", "-1", "--gpu", "-1"]) == ["info", "-m", "-1", "--gpu", "-1"]


def test_flagfile_flags_are_read_in_place(g, tmp_path, capsys):
    flags = tmp_path / "test.flags"
    flags.write_text(f"# the model to score\n\n  --model={g.net}\n-weights={g.weights}\n"
                     "--logtostderr\n--iterations=1\n")
    code, expected, err = run_cli(["test", "-m", g.net, "-w", g.weights, "-i", "1"], capsys)
    assert code == 0, err
    for line in (["test", f"--flagfile={flags}"], ["test", "-flagfile", flags], [f"-flagfile={flags}", "test"],
                 ["--debug", "test", "--flagfile", flags]):
        code, out, err = run_cli(line, capsys)
        assert code == 0, (line, err)
        assert out == expected, line
    # flags after --flagfile win, as later flags do in gflags
    code, out, err = run_cli(["test", f"--flagfile={flags}", "--iterations=2"], capsys)
    assert code == 0 and "mean over 2 batches" in out, err


def test_flagfile_program_filters_and_nesting(g, tmp_path, capsys):
    inner = tmp_path / "inner.flags"
    inner.write_text(f"--model={g.net}\n")
    outer = tmp_path / "outer.flags"
    outer.write_text(f"--flagfile={inner}\nconvert_imageset\n--nonsense=1\ncaffe ristretto\n--phase=TRAIN\n")
    from ristretto_cli.cli import expand_gflags

    assert expand_gflags(["info", f"--flagfile={outer}"]) == ["info", f"--model={g.net}", "--phase=TRAIN"]
    code, out, err = run_cli(["info", f"--flagfile={outer}"], capsys)
    assert code == 0 and "(TRAIN" in out, err


def test_missing_or_looping_flagfile_is_one_error(g, tmp_path, capsys):
    missing = tmp_path / "missing.flags"
    code, out, err = run_cli(["test", f"--flagfile={missing}"], capsys)
    assert_one_line_error(code, err, f"--flagfile {missing}: no such file")
    code, out, err = run_cli(["test", "-m", g.net, "--flagfile"], capsys)
    assert_one_line_error(code, err, "--flagfile", "needs a file name")
    code, out, err = run_cli(["test", f"--flagfile={tmp_path}"], capsys)
    assert_one_line_error(code, err, str(tmp_path), "directory")
    loop = tmp_path / "loop.flags"
    loop.write_text(f"--flagfile={loop}\n")
    code, out, err = run_cli(["test", f"--flagfile={loop}"], capsys)
    assert_one_line_error(code, err, str(loop), "includes itself")


def test_flags_before_the_verb_work_as_in_caffe(g, capsys):
    code, expected, err = run_cli(["info", "-m", g.net, "--phase", "TRAIN"], capsys)
    assert code == 0, err
    for line in ([f"-model={g.net}", "info", "--phase=TRAIN"], ["--model", g.net, "-phase", "TRAIN", "info"],
                 ["--debug", f"--model={g.net}", "info", "--phase=TRAIN"]):
        code, out, err = run_cli(line, capsys)
        assert code == 0, (line, err)
        assert out == expected


# --------------------------------------------------------------------------- 9. forward reshapes the net

# LeNet as deployed (batch 64), with an LRN and a two-branch Concat between the convolutions
LENET_DEPLOY = '''name: "lenet_deploy"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 64 dim: 1 dim: 28 dim: 28 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 5 weight_filler { type: "xavier" }
                            bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1" lrn_param { local_size: 3 alpha: 0.1 beta: 0.75 } }
layer { name: "conv2a" type: "Convolution" bottom: "norm1" top: "conv2a"
        convolution_param { num_output: 6 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "conv2b" type: "Convolution" bottom: "norm1" top: "conv2b"
        convolution_param { num_output: 4 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "concat" type: "Concat" bottom: "conv2a" bottom: "conv2b" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
        pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"
        inner_product_param { num_output: 20 weight_filler { type: "xavier" }
                              bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "prob" type: "Softmax" bottom: "ip2" top: "prob" }
'''

# fully convolutional: every layer follows a new plane size
FULLY_CONV = '''name: "fcn"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 16 dim: 16 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 6 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1" lrn_param { local_size: 5 alpha: 0.01 beta: 0.75 } }
layer { name: "conv2" type: "Convolution" bottom: "norm1" top: "conv2"
        convolution_param { num_output: 4 kernel_size: 1 weight_filler { type: "xavier" } } }
layer { name: "concat" type: "Concat" bottom: "conv2" bottom: "norm1" top: "cat" }
layer { name: "score" type: "Convolution" bottom: "cat" top: "score"
        convolution_param { num_output: 5 kernel_size: 1 weight_filler { type: "xavier" } } }
layer { name: "prob" type: "Softmax" bottom: "score" top: "prob" }
'''


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    d = tmp_path_factory.mktemp("reshape")
    ns = SimpleNamespace(dir=d)
    for name, text in (("lenet", LENET_DEPLOY), ("fcn", FULLY_CONV)):
        model = d / f"{name}.prototxt"
        model.write_text(text)
        assert run_cli(["init", "-m", model, "-o", d / f"{name}.caffemodel", "--seed", "4"]) == 0
        setattr(ns, name, (str(model), str(d / f"{name}.caffemodel")))
    return ns


def test_forward_a_smaller_batch_gives_the_same_per_image_outputs(nets, tmp_path, capsys):
    model, weights = nets.lenet
    rng = np.random.default_rng(2)
    full = rng.normal(size=(64, 1, 28, 28)).astype(np.float32)
    np.save(tmp_path / "full.npy", full)
    np.save(tmp_path / "three.npy", full[:3])
    code, _, err = run_cli(["forward", "-m", model, "-w", weights, "--input", f"data={tmp_path / 'full.npy'}",
                            "-o", tmp_path / "full.npz"], capsys)
    assert code == 0 and "reshaped" not in err, err
    code, _, err = run_cli(["forward", "-m", model, "-w", weights, "--input", f"data={tmp_path / 'three.npy'}",
                            "-o", tmp_path / "three.npz"], capsys)
    assert code == 0, err
    assert "(64, 1, 28, 28) -> (3, 1, 28, 28)" in err
    a, b = np.load(tmp_path / "full.npz"), np.load(tmp_path / "three.npz")
    assert sorted(a.files) == sorted(b.files)
    for name in a.files:
        assert b[name].shape == (3,) + a[name].shape[1:], name
        np.testing.assert_allclose(b[name], a[name][:3], rtol=2e-5, atol=1e-6, err_msg=name)


def test_net_reshape_follows_the_batch_and_keeps_the_weights(nets, backend):
    from ristretto_cli.net.loading import load_net

    model, weights = nets.lenet
    net = load_net(model, weights, "TEST", backend)
    ref = load_net(model, weights, "TEST", backend)
    declared = dict(net.blob_shapes)
    x = np.random.default_rng(3).normal(size=(64, 1, 28, 28)).astype(np.float32)
    net.reshape({"data": (5, 1, 28, 28)})
    for name, shape in declared.items():
        assert net.blob_shapes[name] == (5,) + shape[1:], name
    out = net.forward({"data": backend.asarray(x[:5])})
    expected = ref.forward({"data": backend.asarray(x)})
    np.testing.assert_allclose(backend.to_numpy(out["prob"]), backend.to_numpy(expected["prob"])[:5],
                               rtol=2e-5, atol=1e-7)
    net.reshape({"data": (64, 1, 28, 28)})  # and back
    assert net.blob_shapes == declared


def test_net_reshape_of_a_fully_convolutional_net_to_another_plane(nets, backend, tmp_path):
    from ristretto_cli.net.loading import load_net

    model, weights = nets.fcn
    declared_there = tmp_path / "fcn_2x20x24.prototxt"
    declared_there.write_text(FULLY_CONV.replace("dim: 1 dim: 3 dim: 16 dim: 16", "dim: 2 dim: 3 dim: 20 dim: 24"))
    net = load_net(model, weights, "TEST", backend)
    ref = load_net(str(declared_there), weights, "TEST", backend)
    net.reshape({"data": (2, 3, 20, 24)})
    assert net.blob_shapes == ref.blob_shapes
    assert net.blob_shapes["prob"] == (2, 5, 10, 12)  # Caffe's ceil-mode pooling
    x = backend.asarray(np.random.default_rng(5).normal(size=(2, 3, 20, 24)).astype(np.float32))
    out, expected = net.forward({"data": x}), ref.forward({"data": x})
    for name in ref.blobs:
        np.testing.assert_array_equal(backend.to_numpy(net.blobs[name]), backend.to_numpy(ref.blobs[name]))
    assert out.keys() == expected.keys()


def test_forward_a_fully_convolutional_net_on_a_larger_image(nets, tmp_path, capsys):
    model, weights = nets.fcn
    np.save(tmp_path / "big.npy", np.random.default_rng(6).normal(size=(1, 3, 33, 17)).astype(np.float32))
    code, _, err = run_cli(["forward", "-m", model, "-w", weights, "--input", f"data={tmp_path / 'big.npy'}",
                            "-o", tmp_path / "big.npz"], capsys)
    assert code == 0, err
    assert np.load(tmp_path / "big.npz")["prob"].shape == (1, 5, 16, 8)


@pytest.mark.parametrize("shape, parts", [
    ((3, 1, 32, 32), ["layer 'ip1' (InnerProduct)", "the weights expect 160", "(3, 10, 5, 5)",
                      "(64, 10, 4, 4) as declared"]),
    ((3, 2, 28, 28), ["layer 'conv1' (Convolution)", "2 channels", "(3, 2, 28, 28)", "(64, 1, 28, 28)"]),
    ((3, 1, 6, 6), ["layer 'conv2a' (Convolution)", "(3, 8, 1, 1)"]),
    ((3, 28, 28), ["layer 'conv1' (Convolution)", "3 axes"]),
])
def test_forward_an_incompatible_shape_is_one_line_naming_layer_and_shapes(nets, tmp_path, capsys, shape, parts):
    model, weights = nets.lenet
    np.save(tmp_path / "x.npy", np.zeros(shape, np.float32))
    code, out, err = run_cli(["forward", "-m", model, "-w", weights, "--input", f"data={tmp_path / 'x.npy'}",
                              "-o", tmp_path / "out.npz"], capsys)
    assert_one_line_error(code, err, f"--input data={tmp_path / 'x.npy'}", f"shape {shape}", *parts)
    assert not (tmp_path / "out.npz").exists()


def test_net_reshape_refuses_what_is_no_input_and_leaves_the_net_as_it_was(nets):
    from ristretto_cli.net.loading import load_net

    model, weights = nets.lenet
    net = load_net(model, weights)
    declared = dict(net.blob_shapes)
    with pytest.raises(RistrettoError, match="no input blob 'conv1'"):
        net.reshape({"conv1": (1, 8, 24, 24)})
    with pytest.raises(RistrettoError, match=r"layer 'ip1'.*\(64, 10, 4, 4\) as declared"):
        net.reshape({"data": (64, 1, 32, 32)})
    assert net.blob_shapes == declared
