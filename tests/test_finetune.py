"""`ristretto finetune` / `train` end to end: LMDB data in tmp, snapshots, exact resume
(the files of a resumed run equal those of an uninterrupted one byte for byte),
SIGINT, bad input, --trim-activations, and a short LeNet training on real MNIST."""
from __future__ import annotations

import os
import re
import signal

import numpy as np
import pytest
from google.protobuf import text_format

from ristretto_cli.backend import one_blas_thread
from ristretto_cli.caffe.caffemodel import read_caffemodel
from ristretto_cli.data.lmdb_io import make_datum, write_datums
from ristretto_cli.proto import caffe_pb2
from ristretto_cli.solvers import Solver

from conftest import run_cli, shared_path

NET = '''
name: "blobs"
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
        transform_param {{ mirror: true }}
        data_param {{ source: "{train}" batch_size: 4 backend: LMDB }} }}
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
        data_param {{ source: "{test}" batch_size: 5 backend: LMDB }} }}
layer {{ name: "ip1" type: "{ip}" bottom: "data" top: "h"
        inner_product_param {{ num_output: 6 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "relu" type: "ReLU" bottom: "h" top: "h" }}
layer {{ name: "drop" type: "Dropout" bottom: "h" top: "h" include {{ phase: TRAIN }} }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "h" top: "score"
        inner_product_param {{ num_output: 2 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }}
layer {{ name: "accuracy" type: "Accuracy" bottom: "score" bottom: "label" top: "accuracy"
        include {{ phase: TEST }} }}
'''

SOLVER = '''net: "{net}"
test_iter: 2
test_interval: 4
base_lr: 0.1
momentum: 0.9
weight_decay: 0.001
lr_policy: "step"
gamma: 0.5
stepsize: 3
display: 2
max_iter: 8
snapshot: 4
snapshot_prefix: "{prefix}"
random_seed: 7
{extra}
'''


def make_db(path, n, seed):
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        label = i % 2
        x = rng.normal(loc=2.0 * label - 1.0, size=(4, 1, 1)).astype(np.float32)
        records.append((f"{i:08d}", make_datum(x, label)))
    write_datums(str(path), records)


@pytest.fixture
def setup(tmp_path):
    """A two-class toy problem as LMDBs, a net and a solver in tmp_path; returns a writer."""
    make_db(tmp_path / "train_lmdb", 10, 0)
    make_db(tmp_path / "test_lmdb", 10, 1)

    def write(name="solver.prototxt", prefix="snap/blobs", extra="", ip="InnerProduct"):
        net = tmp_path / f"net_{ip}.prototxt"
        net.write_text(NET.format(train=tmp_path / "train_lmdb", test=tmp_path / "test_lmdb", ip=ip))
        (tmp_path / os.path.dirname(prefix)).mkdir(parents=True, exist_ok=True)
        solver = tmp_path / name
        solver.write_text(SOLVER.format(net=net, prefix=tmp_path / prefix, extra=extra))
        return str(solver)

    return write


def test_finetune_trains_snapshots_and_reports(setup, tmp_path, capsys):
    solver = setup()
    code, out, err = run_cli(["finetune", "--solver", solver], capsys)
    assert code == 0, err
    for it in (4, 8):
        for ext in (".caffemodel", ".solverstate", ".rngstate.json"):
            assert (tmp_path / "snap" / f"blobs_iter_{it}{ext}").exists()
    assert "Iteration 4, Testing net (#0)" in err and "Test net output #0: accuracy = " in err
    assert "lr = 0.1" in err and "lr = 0.05" in err  # step policy at iterations 0 and 4 (stepsize 3)
    assert re.search(r"Test score accuracy: best [0-9.]+ \(iteration \d+\), last [0-9.]+ \(iteration 8\)", out)
    assert f"Final weights: {tmp_path / 'snap' / 'blobs_iter_8.caffemodel'}" in out
    names = [l.name for l in read_caffemodel(str(tmp_path / "snap" / "blobs_iter_8.caffemodel")).layer]
    assert "ip1" in names and "ip2" in names


def test_resume_gives_the_same_files_as_an_uninterrupted_run(setup, tmp_path, capsys):
    solver = setup()
    (tmp_path / "full").mkdir()
    code, _, err = run_cli(["train", "--solver", solver, "--snapshot-prefix", str(tmp_path / "full" / "x")], capsys)
    assert code == 0, err
    # first half, then a resume in a fresh solver (reading data from the LMDB position it left)
    half = setup(name="half.prototxt", prefix="half/x")
    text = open(half).read().replace("max_iter: 8", "max_iter: 4")
    open(half, "w").write(text)
    code, _, err = run_cli(["train", "--solver", half], capsys)
    assert code == 0, err
    open(half, "w").write(text.replace("max_iter: 4", "max_iter: 8"))
    code, out, err = run_cli(["train", "--solver", half, "--snapshot", str(tmp_path / "half" / "x_iter_4.solverstate")],
                             capsys)
    assert code == 0, err
    assert "Resuming from" in err
    for ext in (".caffemodel", ".solverstate"):
        a = (tmp_path / "full" / f"x_iter_8{ext}").read_bytes()
        b = (tmp_path / "half" / f"x_iter_8{ext}").read_bytes()
        if ext == ".solverstate":  # learned_net names each run's own file; compare the rest
            sa, sb = caffe_pb2.SolverState(), caffe_pb2.SolverState()
            sa.ParseFromString(a)
            sb.ParseFromString(b)
            sa.ClearField("learned_net")
            sb.ClearField("learned_net")
            assert sa == sb
        else:
            assert a == b


def test_sigint_snapshots_and_exits_cleanly(setup, tmp_path, capsys, monkeypatch):
    solver = setup(extra="snapshot_after_train: false")
    original = Solver.forward_backward

    def forward_backward(self):
        if self.iter == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self)

    monkeypatch.setattr(Solver, "forward_backward", forward_backward)
    code, out, err = run_cli(["finetune", "--solver", solver], capsys)
    assert code == 0, err
    state = tmp_path / "snap" / "blobs_iter_4.solverstate"
    assert state.exists()
    assert "stopped early (SIGINT) at iteration 4" in out
    assert f"--snapshot {state}" in out
    assert not (tmp_path / "snap" / "blobs_iter_8.caffemodel").exists()


def test_weights_are_copied_by_layer_name(setup, tmp_path, capsys):
    solver = setup()
    from ristretto_cli.caffe.caffemodel import write_caffemodel

    with Solver.from_file(solver, log=lambda m: None) as s:
        s.net.layer("ip1").blobs[0][...] = 0.25
        write_caffemodel(str(tmp_path / "start.caffemodel"), s.net.to_proto())
    with Solver.from_file(solver, log=lambda m: None) as t:
        t.load_weights(str(tmp_path / "start.caffemodel"))
        assert (t.net.layer("ip1").blobs[0] == 0.25).all()
        assert (t.test_nets[0].layer("ip1").blobs[0] == 0.25).all()
    code, out, err = run_cli(["finetune", "--solver", solver, "--weights", str(tmp_path / "start.caffemodel")], capsys)
    assert code == 0 and "Fine-tuning from" in err


@pytest.mark.parametrize("args,msg", [
    (["finetune"], "needs --solver"),
    (["finetune", "--solver", "{solver}", "--weights", "a.caffemodel", "--snapshot", "b.solverstate"], "not both"),
    (["finetune", "--solver", "{tmp}/missing.prototxt"], "missing.prototxt: no such file"),
    (["finetune", "--solver", "{tmp}"], "is not a file"),
    (["finetune", "--solver", "{solver}", "--snapshot", "{tmp}/nope.solverstate"], "nope.solverstate"),
    (["finetune", "--solver", "{solver}", "--weights", "{tmp}/nope.caffemodel"], "nope.caffemodel"),
    (["finetune", "--solver", "{tmp}/garbage.prototxt"], "garbage.prototxt:1"),
    (["train", "--solver", "{solver}", "--gpu", "x"], "--gpu"),
])
def test_bad_input_is_a_one_line_error(setup, tmp_path, capsys, args, msg):
    solver = setup()
    (tmp_path / "garbage.prototxt").write_text("this is { not a solver\n")
    args = [a.format(solver=solver, tmp=tmp_path) for a in args]
    code, out, err = run_cli(args, capsys)
    assert code == 2
    assert err.startswith("ristretto: error: ") and msg in err
    assert len(err.strip().splitlines()) == 1
    assert not list((tmp_path / "snap").glob("*"))


def test_underscore_spellings_and_train_alias(setup, tmp_path, capsys):
    solver = setup()
    (tmp_path / "other").mkdir()
    code, out, err = run_cli(["train", f"--solver={solver}", "--snapshot_prefix", str(tmp_path / "other" / "y"),
                              "--sigint_effect=none"], capsys)
    assert code == 0, err
    assert (tmp_path / "other" / "y_iter_8.caffemodel").exists()


def test_trim_activations_flag(setup, tmp_path, capsys):
    solver = setup(ip="FcRistretto")
    with Solver.from_file(solver, log=lambda m: None) as s:
        layer = s.net.layer("ip1")
        assert layer.trim_activations_in_train is False
        assert s.set_trim_activations(True) == 1
        assert layer.trim_activations_in_train is True
    code, out, err = run_cli(["finetune", "--solver", solver, "--trim-activations"], capsys)
    assert code == 0, err
    assert "trimming activations in 1 layer(s)" in err


def test_lenet_learns_mnist(tmp_path, capsys):
    """Caffe's LeNet recipe (models/lenet) for 150 iterations on real MNIST: > 90 % test accuracy
    on 500 test images (Caffe's run is at about 93 % there)."""
    from ristretto_cli.caffe.prototxt import read_net, write_text
    from ristretto_cli.data.converters import convert_mnist

    mnist = shared_path("data", "mnist")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    convert_mnist(mnist / "train-images-idx3-ubyte.gz", mnist / "train-labels-idx1-ubyte.gz",
                  str(tmp_path / "train_lmdb"), limit=64 * 150)
    convert_mnist(mnist / "t10k-images-idx3-ubyte.gz", mnist / "t10k-labels-idx1-ubyte.gz",
                  str(tmp_path / "test_lmdb"), limit=500)
    net = read_net(os.path.join(repo, "models", "lenet", "lenet_train_test.prototxt"))
    for layer in net.layer:
        if layer.type == "Data":
            train = layer.include[0].phase == caffe_pb2.TRAIN
            layer.data_param.source = str(tmp_path / ("train_lmdb" if train else "test_lmdb"))
    write_text(str(tmp_path / "lenet.prototxt"), net)
    solver = caffe_pb2.SolverParameter()
    text_format.Parse(open(os.path.join(repo, "models", "lenet", "lenet_solver.prototxt")).read(), solver)
    solver.net = str(tmp_path / "lenet.prototxt")
    solver.test_iter[:] = [5]
    solver.max_iter = solver.test_interval = 150
    solver.snapshot = 0
    solver.snapshot_prefix = str(tmp_path / "lenet")
    solver.random_seed = 1
    (tmp_path / "solver.prototxt").write_text(text_format.MessageToString(solver))
    with one_blas_thread():  # 2 cores shared with other workers: threaded BLAS only thrashes
        code, out, err = run_cli(["train", "--solver", str(tmp_path / "solver.prototxt")], capsys)
    assert code == 0, err
    match = re.search(r"Test score accuracy: best ([0-9.]+) \(iteration \d+\), last ([0-9.]+) \(iteration 150\)", out)
    assert match, out
    assert float(match.group(2)) > 0.9
    assert (tmp_path / "lenet_iter_150.caffemodel").exists()




def test_ristretto_layers_train_full_precision_shadow_weights(setup, tmp_path, capsys):
    """TRAIN trims the weight copy (4-bit, steps of 1/8 here); the solver updates the float
    weights, so they leave the grid, and the snapshot stores them in full precision."""
    solver = setup(ip="FcRistretto")
    net_file = tmp_path / "net_FcRistretto.prototxt"
    net_file.write_text(net_file.read_text().replace(
        'inner_product_param { num_output: 6 weight_filler { type: "xavier" } }',
        'inner_product_param { num_output: 6 weight_filler { type: "xavier" } } '
        'quantization_param { bw_params: 4 fl_params: 3 }'))
    code, out, err = run_cli(["finetune", "--solver", solver], capsys)
    assert code == 0, err
    layers = {l.name: l for l in read_caffemodel(str(tmp_path / "snap" / "blobs_iter_8.caffemodel")).layer}
    assert layers["ip1"].type == "FcRistretto"
    w = np.asarray(layers["ip1"].blobs[0].data, np.float64)
    assert not np.allclose(w * 8, np.round(w * 8))


def test_the_solver_weights_field_is_loaded_unless_weights_or_snapshot_say_otherwise(setup, tmp_path, capsys,
                                                                                      monkeypatch):
    """BVLC master's SolverParameter.weights (42): loaded like --weights, which replaces it; a
    --snapshot resume ignores it (tools/caffe.cpp clears it)."""
    from ristretto_cli.caffe.caffemodel import write_caffemodel

    plain = setup()
    with Solver.from_file(plain, log=lambda m: None) as s:
        s.net.layer("ip1").blobs[0][...] = 0.25
        write_caffemodel(str(tmp_path / "start.caffemodel"), s.net.to_proto())
        write_caffemodel(str(tmp_path / "other.caffemodel"), s.net.to_proto())
    loaded = []
    original = Solver.load_weights

    def load_weights(self, weights):
        original(self, weights)
        loaded.append((weights, float(self.net.layer("ip1").blobs[0].reshape(-1)[0])))

    monkeypatch.setattr(Solver, "load_weights", load_weights)
    # a relative name resolves next to the solver, like its net
    solver = setup(name="with_weights.prototxt", extra='weights: "start.caffemodel"')
    code, out, err = run_cli(["finetune", "--solver", solver], capsys)
    assert code == 0, err
    assert loaded == [(str(tmp_path / "start.caffemodel"), 0.25)]
    assert f"Fine-tuning from {tmp_path / 'start.caffemodel'}" in err
    loaded.clear()
    code, out, err = run_cli(["finetune", "--solver", solver, "--weights", tmp_path / "other.caffemodel"], capsys)
    assert code == 0, err
    assert [w for w, _ in loaded] == [str(tmp_path / "other.caffemodel")]
    loaded.clear()
    code, out, err = run_cli(["finetune", "--solver", solver, "--snapshot",
                              tmp_path / "snap" / "blobs_iter_4.solverstate"], capsys)
    assert code == 0, err
    assert loaded == []
    missing = setup(name="missing_weights.prototxt", extra='weights: "start.caffemodel, nope.caffemodel"')
    code, out, err = run_cli(["finetune", "--solver", missing], capsys)
    assert code == 2 and "nope.caffemodel" in err and missing in err and "\n" not in err.strip()


# -- solver_mode: GPU (Caffe's rule: --gpu wins, else the solver file's mode and device_id) --

def test_solver_mode_gpu_without_cupy_trains_on_the_cpu_with_a_notice(setup, capsys, monkeypatch):
    import ristretto_cli.backend as backend

    monkeypatch.setattr(backend, "cuda_available", lambda: (False, "CuPy is not installed (fake)"))
    solver = setup(extra="solver_mode: GPU\ndevice_id: 1")
    code, out, err = run_cli(["finetune", "--solver", solver], capsys)
    assert code == 0, err
    notice = [line for line in err.splitlines() if "solver_mode GPU" in line]
    assert len(notice) == 1 and "needs CuPy" in notice[0] and "running on the CPU" in notice[0], err
    assert "Optimization done" in out


def test_solver_mode_gpu_picks_device_id_unless_gpu_is_given(monkeypatch):
    import ristretto_cli.backend as backend
    from ristretto_cli.proto import caffe_pb2
    from ristretto_cli.solvers.solver import solver_device

    monkeypatch.setattr(backend, "cuda_available", lambda: (True, ""))
    p = caffe_pb2.SolverParameter()
    assert solver_device(p, None) == (None, None)            # solver_mode unset: the CPU (Caffe checks has_)
    p.solver_mode = caffe_pb2.SolverParameter.GPU
    assert solver_device(p, None)[0] == 0                    # device_id unset: device 0
    p.device_id = 3
    device, notice = solver_device(p, None, "s.prototxt")
    assert device == 3 and "CUDA device 3" in notice
    assert solver_device(p, 1) == (1, None)                  # --gpu wins
    assert solver_device(p, -1) == (-1, None)                # --gpu -1: the CPU
    p.solver_mode = caffe_pb2.SolverParameter.CPU
    assert solver_device(p, None) == (None, None)
    monkeypatch.setattr(backend, "cuda_available", lambda: (False, "no CUDA device"))
    p.solver_mode = caffe_pb2.SolverParameter.GPU
    device, notice = solver_device(p, None, "s.prototxt")
    assert device is None and notice.startswith("s.prototxt: solver_mode GPU needs CuPy")


def test_gpu_minus_one_overrides_solver_mode_gpu(setup, capsys, monkeypatch):
    import ristretto_cli.backend as backend

    monkeypatch.setattr(backend, "cuda_available", lambda: (True, ""))    # would pick the GPU otherwise
    solver = setup(extra="solver_mode: GPU")
    code, out, err = run_cli(["finetune", "--solver", solver, "--gpu", "-1"], capsys)
    assert code == 0, err
    assert "solver_mode GPU" not in err
