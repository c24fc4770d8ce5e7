"""The Python API at the package top: ``ristretto_cli.benchmark / quantize / finetune /
forward / load_net / Net`` and the number formats, loaded lazily (``import ristretto_cli``
stays light and quiet), returning data and agreeing with the commands."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import ristretto_cli
from ristretto_cli.errors import RistrettoError
from conftest import run_cli, shared_path
from test_pycaffe import toy_solver  # noqa: F401  (the toy LMDB + solver fixture)
from test_quantize import TINY_BATCHES, tiny  # noqa: F401  (the tiny net fixture)


def test_importing_the_package_is_light_and_quiet():
    code = ("import sys, ristretto_cli\n"
            "heavy = sorted(m for m in sys.modules if m.startswith('ristretto_cli.') or m in ('numpy', 'click'))\n"
            "print(' '.join(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.split() == []
    code = "import ristretto_cli as r; r.benchmark; r.trim_fixed_point; r.quantize; import ristretto_cli.pycaffe"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", done.stderr


def test_the_top_names_are_the_documented_ones():
    assert set(ristretto_cli.__all__) == {
        "Net", "QuantConfig", "QuantizeOutcome", "QuantizeSettings", "Rounding", "benchmark", "finetune", "forward",
        "load_net", "quantize", "trim_fixed_point", "trim_minifloat", "trim_power_of_two"}
    from ristretto_cli.formats import trim_pow2
    from ristretto_cli.net import Net, load_net

    assert ristretto_cli.Net is Net and ristretto_cli.load_net is load_net
    assert ristretto_cli.trim_power_of_two is trim_pow2
    for name in ristretto_cli.__all__:
        assert getattr(ristretto_cli, name).__doc__, name
    with pytest.raises(AttributeError):
        ristretto_cli.no_such_name  # noqa: B018


def test_the_number_formats_follow_the_design():
    f = ristretto_cli
    x = np.array([0.3, -0.3, 1.26, 100.0, -100.0, 0.125], dtype=np.float32)
    # dynamic fixed point (8, 4): clamp to [-8, 7.9375], round half to even on a 1/16 grid
    assert f.trim_fixed_point(x, 8, 4).tolist() == [0.3125, -0.3125, 1.25, 7.9375, -8.0, 0.125]
    assert f.trim_fixed_point(np.float32([0.03125, 0.09375]), 8, 4).tolist() == [0.0, 0.125]  # ties to even
    # minifloat (3 mantissa, 4 exponent bits): the carry at the top is kept, 496 -> 512, 512 -> 480
    assert f.trim_minifloat(np.float32([496.0, 512.0, 1.03, 0.0]), 3, 4).tolist() == [512.0, 480.0, 1.0, 0.0]
    # power of two in [-8, -1]: sign(0) = +1, so zero becomes +2^-8
    assert f.trim_power_of_two(np.float32([0.3, -0.02, 0.0, 3.0]), -8, -1).tolist() == \
        [0.25, -0.015625, 2.0 ** -8, 0.5]
    stochastic = f.trim_fixed_point(np.full(4000, 0.25, np.float32), 8, 1, f.Rounding.STOCHASTIC,
                                    rng=np.random.default_rng(0))
    assert set(stochastic.tolist()) == {0.0, 0.5} and abs(stochastic.mean() - 0.25) < 0.03


def test_the_quantize_package_is_the_quantize_function(tiny, tmp_path):  # noqa: F811
    model, weights, _ = tiny
    import ristretto_cli.quantize.procedure  # noqa: F401  (binds the subpackage as the attribute)

    outcome = ristretto_cli.quantize(model, weights, str(tmp_path / "q.prototxt"), "dynamic_fixed_point",
                                     iterations=TINY_BATCHES, error_margin=5.0)
    assert isinstance(outcome, ristretto_cli.QuantizeOutcome)
    assert (tmp_path / "q.prototxt").exists() and outcome.report["iterations"] == TINY_BATCHES
    from ristretto_cli.api import quantize

    again = quantize(model, weights, str(tmp_path / "q2.prototxt"), "dynamic_fixed_point",
                     iterations=TINY_BATCHES, error_margin=5.0)
    assert again.result.chosen == outcome.result.chosen
    net = ristretto_cli.load_net(str(tmp_path / "q.prototxt"), weights)
    quantized = [l for l in net.layers if getattr(l, "quant_config", None) is not None]
    assert quantized and all(isinstance(l.quant_config, ristretto_cli.QuantConfig) for l in quantized)
    net.close()


def test_benchmark_returns_the_scores_the_command_prints(tiny, capsys):  # noqa: F811
    model, weights, d = tiny
    calls = []
    scores = ristretto_cli.benchmark(model, weights, iterations=TINY_BATCHES, on_progress=lambda *a: calls.append(a))
    assert len(scores.batches) == TINY_BATCHES and scores.means["accuracy"] == pytest.approx(1.0)
    assert calls[0] == (0, TINY_BATCHES, None) and calls[-1][0] == TINY_BATCHES
    code, out, err = run_cli(["benchmark", "-m", model, "-w", weights, "-i", TINY_BATCHES, "--json", "-"], capsys)
    assert code == 0, err
    assert json.loads(out)["means"] == scores.means


def test_forward_returns_every_blob_and_reshapes_for_other_batch_sizes():
    model = shared_path("zoo", "lenet", "lenet.prototxt")
    weights = shared_path("data", "caffemodels", "lenet_v2", "lenet_iter_10000.caffemodel")
    from test_pycaffe import read_idx

    images = read_idx(shared_path("data", "mnist", "t10k-images-idx3-ubyte.gz"))[:200]
    labels = read_idx(shared_path("data", "mnist", "t10k-labels-idx1-ubyte.gz"))[:200]
    blobs = ristretto_cli.forward(model, weights, {"data": images[:, None] * 0.00390625})
    assert set(blobs) == {"data", "conv1", "pool1", "conv2", "pool2", "ip1", "ip2", "prob"}
    assert blobs["prob"].shape == (200, 10) and isinstance(blobs["prob"], np.ndarray)
    assert (blobs["prob"].argmax(axis=1) == labels).mean() >= 0.98
    with pytest.raises(RistrettoError, match="no input blob 'x'"):
        ristretto_cli.forward(model, weights, {"x": images[:1]})


def test_finetune_returns_the_train_result_of_the_command(toy_solver, tmp_path):  # noqa: F811
    solver = toy_solver()
    result = ristretto_cli.finetune(solver)
    assert result.iterations == 20 and result.stopped_by is None
    assert result.final_weights == str(tmp_path / "snap" / "InnerProduct_iter_20.caffemodel")
    assert result.score_name == "accuracy" and result.last_iteration == 20
    again = ristretto_cli.finetune(solver, weights=result.final_weights, snapshot_prefix=str(tmp_path / "snap" / "b"))
    assert again.final_weights.endswith("b_iter_20.caffemodel")
    with pytest.raises(RistrettoError, match="not both"):
        ristretto_cli.finetune(solver, weights=result.final_weights, snapshot=result.final_weights)
