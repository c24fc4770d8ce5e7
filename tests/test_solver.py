"""Solvers against hand computation: every update rule, weight decay (L2 / L1),
lr_mult / decay_mult, iter_size, clip_gradients and lr policy, on a tiny
InnerProduct + EuclideanLoss net whose gradient is written out here in NumPy from
the textbook formulas; snapshots and exact resume; signals; a non-finite loss."""
from __future__ import annotations

import math
import os
import signal

import numpy as np
import pytest
from google.protobuf import text_format

from ristretto_cli.caffe.caffemodel import read_caffemodel
from ristretto_cli.errors import RistrettoError
from ristretto_cli.proto import caffe_pb2
from ristretto_cli.solvers import Solver, learning_rate
from ristretto_cli.solvers import snapshot as snap

N, IN, OUT = 4, 3, 2

TINY_NET = f'''
name: "tiny"
layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ dim: {N} dim: {IN} }} }} }}
layer {{ name: "y" type: "Input" top: "y" input_param {{ shape {{ dim: {N} dim: {OUT} }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "out" {{params}}
        inner_product_param {{ num_output: {OUT} weight_filler {{ type: "gaussian" std: 0.5 }}
                               bias_filler {{ type: "uniform" min: -0.5 max: 0.5 }} }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "y" top: "loss" }}
'''


def tiny_solver(solver_text: str, params: str = "", batches=None, seed: int = 3, **kw) -> Solver:
    sp = caffe_pb2.SolverParameter()
    text_format.Parse(solver_text, sp)
    if not sp.HasField("random_seed"):
        sp.random_seed = seed
    sp.snapshot_after_train = sp.snapshot_after_train if sp.HasField("snapshot_after_train") else False
    text_format.Parse(TINY_NET.replace("{params}", params), sp.net_param)
    batches = batches if batches is not None else make_batches(8)
    return Solver(sp, train_feed=lambda i: batches[i % len(batches)], log=lambda m: None, **kw)


def make_batches(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(size=(N, IN)).astype(np.float32),
             "y": rng.normal(size=(N, OUT)).astype(np.float32)} for _ in range(n)]


# ---------------------------------------------------------------- hand reference


def grads(W, b, batch):
    """d/dW, d/db of EuclideanLoss = sum((xW^T + b - y)^2) / (2 N)."""
    x, y = batch["x"].astype(np.float64), batch["y"].astype(np.float64)
    dout = (x @ W.T + b - y) / x.shape[0]
    return [dout.T @ x, dout.sum(axis=0)]


def reference(kind, cfg, W0, b0, batches, iters, mults=((1, 1), (1, 1))):
    """Caffe's ApplyUpdate written out: clip, /iter_size, decay, rule, data -= update."""
    params = [W0.astype(np.float64), b0.astype(np.float64)]
    hist = [np.zeros_like(p) for p in params]
    hist2 = [np.zeros_like(p) for p in params]
    it_size = cfg.get("iter_size", 1)
    mom, wd = cfg.get("momentum", 0.0), cfg.get("weight_decay", 0.0)
    delta = cfg.get("delta", 1e-8)
    k = 0
    for it in range(iters):
        g = [np.zeros_like(p) for p in params]
        for _ in range(it_size):
            for acc, d in zip(g, grads(params[0], params[1], batches[k % len(batches)])):
                acc += d
            k += 1
        clip = cfg.get("clip_gradients", -1)
        if clip >= 0:
            norm = math.sqrt(sum(float((d * d).sum()) for d in g))
            if norm > clip:
                g = [d * (clip / norm) for d in g]
        g = [d / it_size for d in g]
        rate = cfg["rate"](it)
        for i, (p, d) in enumerate(zip(params, g)):
            lr_mult, decay_mult = mults[i]
            decay = wd * decay_mult
            if cfg.get("reg", "L2") == "L2":
                d = d + decay * p
            else:
                d = d + decay * np.sign(p)
            lr = rate * lr_mult
            if kind == "SGD":
                hist[i] = mom * hist[i] + lr * d
                upd = hist[i]
            elif kind == "Nesterov":
                prev = hist[i]
                hist[i] = mom * hist[i] + lr * d
                upd = (1 + mom) * hist[i] - mom * prev
            elif kind == "AdaGrad":
                hist[i] = hist[i] + d * d
                upd = lr * d / (np.sqrt(hist[i]) + delta)
            elif kind == "RMSProp":
                rd = cfg["rms_decay"]
                hist[i] = (1 - rd) * d * d + rd * hist[i]
                upd = lr * d / (np.sqrt(hist[i]) + delta)
            elif kind == "AdaDelta":
                hist[i] = (1 - mom) * d * d + mom * hist[i]
                u = d * np.sqrt((hist2[i] + delta) / (hist[i] + delta))
                hist2[i] = (1 - mom) * u * u + mom * hist2[i]
                upd = lr * u
            elif kind == "Adam":
                b1, b2 = mom, cfg["momentum2"]
                t = it + 1
                hist[i] = b1 * hist[i] + (1 - b1) * d
                hist2[i] = b2 * hist2[i] + (1 - b2) * d * d
                upd = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * hist[i] / (np.sqrt(hist2[i]) + delta)
            params[i] = p - upd
    return params, hist, hist2


def initial(s: Solver):
    ip = s.net.layer("ip")
    return ip.blobs[0].copy(), ip.blobs[1].copy()


f32 = lambda v: float(np.float32(v))  # noqa: E731  (solver fields are float32)

CASES = {
    "sgd_momentum_l2": ("SGD", 'type: "SGD" base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 weight_decay: 0.05',
                        {"momentum": f32(0.9), "weight_decay": f32(0.05), "rate": lambda it: f32(0.1)}),
    "sgd_l1_step": ("SGD", 'base_lr: 0.2 lr_policy: "step" gamma: 0.5 stepsize: 2 momentum: 0.5 '
                           'weight_decay: 0.1 regularization_type: "L1"',
                    {"momentum": 0.5, "weight_decay": f32(0.1), "reg": "L1",
                     "rate": lambda it: f32(0.2) * 0.5 ** (it // 2)}),
    "nesterov": ("Nesterov", 'type: "Nesterov" base_lr: 0.05 lr_policy: "fixed" momentum: 0.9 weight_decay: 0.01',
                 {"momentum": f32(0.9), "weight_decay": f32(0.01), "rate": lambda it: f32(0.05)}),
    "adagrad": ("AdaGrad", 'type: "AdaGrad" base_lr: 0.3 lr_policy: "fixed" weight_decay: 0.01 delta: 1e-6',
                {"weight_decay": f32(0.01), "delta": f32(1e-6), "rate": lambda it: f32(0.3)}),
    "rmsprop": ("RMSProp", 'type: "RMSProp" base_lr: 0.01 lr_policy: "fixed" rms_decay: 0.9 delta: 1e-6',
                {"rms_decay": f32(0.9), "delta": f32(1e-6), "rate": lambda it: f32(0.01)}),
    "adadelta": ("AdaDelta", 'type: "AdaDelta" base_lr: 1.0 lr_policy: "fixed" momentum: 0.95 delta: 1e-6 '
                             'weight_decay: 0.001',
                 {"momentum": f32(0.95), "delta": f32(1e-6), "weight_decay": f32(0.001), "rate": lambda it: 1.0}),
    "adam": ("Adam", 'type: "Adam" base_lr: 0.01 lr_policy: "fixed" momentum: 0.9 momentum2: 0.999 delta: 1e-8',
             {"momentum": f32(0.9), "momentum2": f32(0.999), "delta": f32(1e-8), "rate": lambda it: f32(0.01)}),
    "sgd_iter_size": ("SGD", 'base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 iter_size: 3 weight_decay: 0.01',
                      {"momentum": f32(0.9), "weight_decay": f32(0.01), "iter_size": 3, "rate": lambda it: f32(0.1)}),
    "sgd_clip": ("SGD", 'base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 iter_size: 2 clip_gradients: 0.05',
                 {"momentum": f32(0.9), "iter_size": 2, "clip_gradients": f32(0.05), "rate": lambda it: f32(0.1)}),
    "adam_inv": ("Adam", 'type: "Adam" base_lr: 0.02 lr_policy: "inv" gamma: 0.5 power: 0.75 momentum: 0.8',
                 {"momentum": f32(0.8), "momentum2": f32(0.999), "rate": lambda it: f32(0.02) * (1 + 0.5 * it) ** -0.75}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_update_rule_matches_hand_computation(case):
    kind, text, cfg = CASES[case]
    iters = 3
    batches = make_batches(9)
    s = tiny_solver(text + f" max_iter: {iters}", batches=batches)
    assert s.type_name == kind
    W0, b0 = initial(s)
    s.solve()
    (W, b), h1, h2 = reference(kind, cfg, W0, b0, batches, iters)
    ip = s.net.layer("ip")
    np.testing.assert_allclose(ip.blobs[0], W, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(ip.blobs[1], b, rtol=2e-5, atol=1e-6)
    # history in Caffe's layout: one set, or two (AdaDelta, Adam) with the second after the first
    hist = [np.asarray(h) for h in s.rule.history]
    expect = h1 + (h2 if kind in ("AdaDelta", "Adam") else [])
    if kind in ("AdaDelta", "Adam"):
        assert len(hist) == 4
    else:
        assert len(hist) == 2
    for got, want in zip(hist, expect):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    assert s.iter == iters


def test_lr_mult_and_decay_mult():
    params = "param { lr_mult: 0.5 decay_mult: 2 } param { lr_mult: 2 decay_mult: 0 }"
    batches = make_batches(4)
    s = tiny_solver('base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 weight_decay: 0.1 max_iter: 3', params,
                    batches=batches)
    W0, b0 = initial(s)
    s.solve()
    (W, b), _, _ = reference("SGD", {"momentum": f32(0.9), "weight_decay": f32(0.1), "rate": lambda it: f32(0.1)},
                             W0, b0, batches, 3, mults=((0.5, 2), (2, 0)))
    ip = s.net.layer("ip")
    np.testing.assert_allclose(ip.blobs[0], W, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(ip.blobs[1], b, rtol=2e-5, atol=1e-6)


def test_lr_mult_zero_freezes_a_parameter():
    s = tiny_solver('base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 weight_decay: 0.1 max_iter: 3',
                    "param { lr_mult: 0 } param { lr_mult: 1 }")
    W0, b0 = initial(s)
    s.solve()
    np.testing.assert_array_equal(s.net.layer("ip").blobs[0], W0)
    assert not np.array_equal(s.net.layer("ip").blobs[1], b0)


def test_clip_gradients_scales_the_global_norm():
    batches = make_batches(2)
    s = tiny_solver('base_lr: 1 lr_policy: "fixed" clip_gradients: 0.01 max_iter: 1', batches=batches)
    W0, b0 = initial(s)
    g = grads(W0.astype(np.float64), b0.astype(np.float64), batches[0])
    norm = math.sqrt(sum(float((d * d).sum()) for d in g))
    assert norm > 0.01
    s.solve()
    assert s.rule.last_clip is not None
    assert s.rule.last_clip[0] == pytest.approx(norm, rel=1e-5)
    step = np.concatenate([(W0 - s.net.layer("ip").blobs[0]).ravel(), (b0 - s.net.layer("ip").blobs[1]).ravel()])
    assert np.linalg.norm(step) == pytest.approx(0.01, rel=1e-4)


def test_test_nets_share_the_updated_arrays():
    sp = caffe_pb2.SolverParameter()
    text_format.Parse('base_lr: 0.1 lr_policy: "fixed" max_iter: 2 test_iter: 1 test_interval: 1 '
                      'random_seed: 1 snapshot_after_train: false', sp)
    text_format.Parse(TINY_NET.replace("{params}", ""), sp.net_param)
    batches = make_batches(3)
    s = Solver(sp, train_feed=lambda i: batches[i % 3], test_feeds=[lambda i: batches[0]],
               log=lambda m: None)
    assert len(s.test_nets) == 1
    s.solve()
    assert s.test_nets[0].layer("ip").blobs[0] is s.net.layer("ip").blobs[0]
    # tests at 0 (test_initialization), 1 and 2 (after the last update)
    assert [r.iteration for r in s.test_results] == [0, 1, 2]
    losses = [r.means["loss"] for r in s.test_results]
    assert losses[2] < losses[0]
    assert s.best["name"] == "loss" and s.best["higher"] is False and s.best["value"] == min(losses)


# ---------------------------------------------------------------- lr policies


def _param(text):
    p = caffe_pb2.SolverParameter()
    text_format.Parse(text, p)
    return p


@pytest.mark.parametrize("text,formula", [
    ('lr_policy: "fixed" base_lr: 0.01', lambda it: f32(0.01)),
    ('lr_policy: "step" base_lr: 0.01 gamma: 0.1 stepsize: 100', lambda it: f32(0.01) * f32(0.1) ** (it // 100)),
    ('lr_policy: "exp" base_lr: 0.01 gamma: 0.99', lambda it: f32(0.01) * f32(0.99) ** it),
    ('lr_policy: "inv" base_lr: 0.01 gamma: 0.0001 power: 0.75',
     lambda it: f32(0.01) * (1 + f32(0.0001) * it) ** -0.75),
    ('lr_policy: "poly" base_lr: 0.01 power: 2 max_iter: 1000', lambda it: f32(0.01) * (1 - it / 1000) ** 2),
    ('lr_policy: "poly" base_lr: 0.01 power: 0.9 max_iter: 1000', lambda it: f32(0.01) * (1 - it / 1000) ** f32(0.9)),
    ('lr_policy: "sigmoid" base_lr: 0.01 gamma: -0.05 stepsize: 200',
     lambda it: f32(0.01) * (1 / (1 + math.exp(f32(0.05) * (it - 200))))),
])
def test_lr_policy_formula(text, formula):
    p = _param(text)
    for it in (0, 1, 99, 100, 250, 999):
        rate, _ = learning_rate(p, it, 0)
        # the solver fields are float32, as in Caffe: the references use the same values
        assert rate == pytest.approx(formula(it), rel=1e-12)


def test_multistep_advances_one_step_per_call_and_keeps_current_step():
    p = _param('lr_policy: "multistep" base_lr: 1 gamma: 0.5 stepvalue: 3 stepvalue: 5')
    step, rates = 0, []
    for it in range(8):
        rate, step = learning_rate(p, it, step)
        rates.append(rate)
    assert rates == [1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.25]
    assert step == 2
    # Caffe's `if` (not `while`): a resumed state with current_step 0 at iteration 6 catches up one per call
    r, s = learning_rate(p, 6, 0)
    assert (r, s) == (0.5, 1)


def test_sigmoid_far_from_the_step_does_not_overflow():
    p = _param('lr_policy: "sigmoid" base_lr: 0.1 gamma: 1 stepsize: 10000')
    assert learning_rate(p, 0, 0)[0] == 0.0


@pytest.mark.parametrize("text,msg", [
    ('lr_policy: "cosine" base_lr: 0.1 max_iter: 1', "unknown lr_policy"),
    ('lr_policy: "step" base_lr: 0.1 max_iter: 1', "stepsize"),
    ('base_lr: 0.1 max_iter: 1', "lr_policy is not set"),
    ('lr_policy: "fixed" type: "Adamax" max_iter: 1', "unknown type"),
    ('lr_policy: "fixed" type: "AdaGrad" momentum: 0.9 max_iter: 1', "momentum cannot be used"),
    ('lr_policy: "fixed" regularization_type: "L3" weight_decay: 0.1 max_iter: 1', "regularization_type"),
    ('lr_policy: "fixed" average_loss: 0 max_iter: 1', "average_loss"),
    ('lr_policy: "fixed" max_iter: 1 test_iter: 2 test_iter: 3', "test_iter"),
    ('lr_policy: "fixed" max_iter: 1 test_iter: 2', "test_interval"),
])
def test_bad_solver_parameters_are_one_line_errors(text, msg):
    with pytest.raises(RistrettoError, match=msg):
        tiny_solver(text)


# ---------------------------------------------------------------- snapshots and resume

DROPOUT_NET = '''
name: "drop"
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 4 dim: 3 } } }
layer { name: "y" type: "Input" top: "y" input_param { shape { dim: 4 dim: 2 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h"
        inner_product_param { num_output: 8 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }
layer { name: "drop" type: "Dropout" bottom: "h" top: "h" dropout_param { dropout_ratio: 0.5 } }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "out"
        inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "y" top: "loss" }
'''


def dropout_solver(tmp_path, text, batches, seed=5):
    sp = caffe_pb2.SolverParameter()
    text_format.Parse(text, sp)
    sp.random_seed = seed
    sp.snapshot_prefix = str(tmp_path / "snap")
    text_format.Parse(DROPOUT_NET, sp.net_param)
    return Solver(sp, train_feed=lambda i: batches[i % len(batches)], log=lambda m: None)


def all_weights(s):
    return [np.array(r.data) for r in s.params]


RESUME_TEXT = ('type: "Adam" base_lr: 0.05 lr_policy: "multistep" gamma: 0.5 stepvalue: 2 stepvalue: 5 '
               'momentum: 0.9 weight_decay: 0.01 iter_size: 2 max_iter: 8 snapshot: 4 display: 2 average_loss: 3')


def test_snapshot_files_hold_caffes_solver_state(tmp_path):
    batches = make_batches(5)
    s = dropout_solver(tmp_path, RESUME_TEXT, batches)
    s.param.max_iter = 4
    result = s.solve()
    model, state = str(tmp_path / "snap_iter_4.caffemodel"), str(tmp_path / "snap_iter_4.solverstate")
    assert result.final_weights == model and result.final_state == state
    st = snap.read_solverstate(state)
    assert st.iter == 4 and st.learned_net == model and st.current_step == 1
    assert len(st.history) == 2 * len(s.params)  # Adam: m for every param, then v
    for k, ref in enumerate(s.params):
        np.testing.assert_array_equal(snap.history_arrays(st, state)[k], np.asarray(s.rule.history[k]))
        assert tuple(st.history[k].shape.dim) == tuple(ref.data.shape)
    net = read_caffemodel(model)
    blobs = {l.name: l for l in net.layer}
    np.testing.assert_array_equal(np.asarray(blobs["ip1"].blobs[0].data, np.float32).reshape(8, 3),
                                  s.net.layer("ip1").blobs[0])
    assert os.path.exists(tmp_path / "snap_iter_4.rngstate.json")
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_resume_equals_uninterrupted_run_bit_for_bit(tmp_path):
    batches = make_batches(7)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    full = dropout_solver(tmp_path / "a", RESUME_TEXT, batches)
    full.solve()
    first = dropout_solver(tmp_path / "b", RESUME_TEXT, batches)
    first.param.max_iter = 4
    first.solve()
    # a fresh process: same solver, other seed even (the sidecar restores the generator)
    resumed = dropout_solver(tmp_path / "b", RESUME_TEXT, batches, seed=99)
    resumed.restore(str(tmp_path / "b" / "snap_iter_4.solverstate"))
    assert resumed.iter == 4 and resumed.current_step == 1 and resumed.train_batches == 8
    resumed.solve()
    for a, b in zip(all_weights(full), all_weights(resumed)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(full.rule.history, resumed.rule.history):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert full.current_step == resumed.current_step == 2
    assert full.smoothed_loss == resumed.smoothed_loss


def test_resume_without_sidecar_works_like_caffe(tmp_path):
    batches = make_batches(3)
    s = dropout_solver(tmp_path, RESUME_TEXT, batches)
    s.param.max_iter = 4
    s.solve()
    os.remove(tmp_path / "snap_iter_4.rngstate.json")
    messages = []
    r = dropout_solver(tmp_path, RESUME_TEXT, batches)
    r.log = messages.append
    r.restore(str(tmp_path / "snap_iter_4.solverstate"))
    assert any("resuming like Caffe" in m for m in messages)
    for a, b in zip(all_weights(s), all_weights(r)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(s.rule.history, r.rule.history):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_resume_rejects_history_of_another_solver(tmp_path):
    batches = make_batches(3)
    s = dropout_solver(tmp_path, RESUME_TEXT, batches)
    s.param.max_iter = 4
    s.solve()
    sgd = dropout_solver(tmp_path, RESUME_TEXT.replace('type: "Adam"', 'type: "SGD"'), batches)
    with pytest.raises(RistrettoError, match="history blobs"):
        sgd.restore(str(tmp_path / "snap_iter_4.solverstate"))


def test_resume_errors_name_the_file(tmp_path):
    s = dropout_solver(tmp_path, RESUME_TEXT, make_batches(2))
    bad = tmp_path / "bad.solverstate"
    bad.write_bytes(b"\xff\xff\xff garbage")
    with pytest.raises(RistrettoError, match="bad.solverstate"):
        s.restore(str(bad))
    with pytest.raises(RistrettoError, match="cannot read"):
        s.restore(str(tmp_path / "missing.solverstate"))


# ---------------------------------------------------------------- signals and divergence


@pytest.fixture(params=["inherited", "ignored", "default"])
def sigint_before(request):
    """SIGINT's disposition when the solve starts: as the test process inherited it (SIG_IGN
    under `make test &`), ignored, or Python's default; restored afterwards."""
    inherited = signal.getsignal(signal.SIGINT)
    if request.param == "ignored":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    elif request.param == "default":
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, inherited)


def test_sigint_snapshots_and_stops(tmp_path, sigint_before):
    s = dropout_solver(tmp_path, RESUME_TEXT.replace("snapshot: 4", "snapshot: 0"), make_batches(3))

    def on_iteration(solver):
        if solver.iter == 3:
            os.kill(os.getpid(), signal.SIGINT)

    s.on_iteration = on_iteration
    result = s.solve()
    assert result.stopped_by == "SIGINT" and result.iterations == 3
    assert result.final_state == str(tmp_path / "snap_iter_3.solverstate")
    assert os.path.exists(result.final_state) and os.path.exists(result.final_weights)
    # the handler from before the solve is back, whatever it was
    assert signal.getsignal(signal.SIGINT) is sigint_before


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP here")
def test_sighup_snapshots_and_goes_on(tmp_path):
    s = dropout_solver(tmp_path, RESUME_TEXT.replace("snapshot: 4", "snapshot: 0"), make_batches(3))
    s.on_iteration = lambda solver: solver.iter == 2 and os.kill(os.getpid(), signal.SIGHUP)
    before = signal.getsignal(signal.SIGHUP)  # SIG_IGN under nohup
    result = s.solve()
    assert signal.getsignal(signal.SIGHUP) is before
    assert result.stopped_by is None and result.iterations == 8
    assert os.path.exists(tmp_path / "snap_iter_2.solverstate")
    assert os.path.exists(tmp_path / "snap_iter_8.solverstate")


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_snapshot(tmp_path):
    batches = make_batches(6)
    bad = {"x": np.full((4, 3), np.nan, np.float32), "y": batches[0]["y"]}
    feed = lambda i: bad if i == 6 else batches[i % 6]  # noqa: E731  (batch 6 = iteration 3 with iter_size 2)
    s = dropout_solver(tmp_path, RESUME_TEXT.replace("snapshot: 4", "snapshot: 1"), batches)
    s.train_feed = feed
    with pytest.raises(RistrettoError) as info:
        s.solve()
    msg = str(info.value)
    assert "iteration 3" in msg and "loss is nan" in msg and "snap_iter_3.solverstate" in msg
    assert "\n" not in msg
    assert sorted(p for p in os.listdir(tmp_path) if p.endswith(".solverstate")) == [
        "snap_iter_1.solverstate", "snap_iter_2.solverstate", "snap_iter_3.solverstate"]
    for p in tmp_path.glob("*.caffemodel"):
        for layer in read_caffemodel(str(p)).layer:
            for blob in layer.blobs:
                assert np.isfinite(np.asarray(blob.data)).all()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_weights_that_overflow_are_never_snapshotted(tmp_path):
    s = dropout_solver(tmp_path, 'base_lr: 1e30 lr_policy: "fixed" max_iter: 3 snapshot: 1', make_batches(3))
    with pytest.raises(RistrettoError, match="NaN or infinite|loss is"):
        s.solve()
    for p in tmp_path.glob("*.caffemodel"):
        for layer in read_caffemodel(str(p)).layer:
            for blob in layer.blobs:
                assert np.isfinite(np.asarray(blob.data)).all()


def test_random_seed_makes_training_reproducible(tmp_path):
    batches = make_batches(4)
    text = 'base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 max_iter: 4 snapshot_after_train: false'
    a = dropout_solver(tmp_path, text, batches, seed=11)
    b = dropout_solver(tmp_path, text, batches, seed=11)
    c = dropout_solver(tmp_path, text, batches, seed=12)
    for s in (a, b, c):
        s.solve()
    for x, y in zip(all_weights(a), all_weights(b)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(all_weights(a)[0], all_weights(c)[0])


def test_snapshot_prefix_resolution(tmp_path, monkeypatch):
    (tmp_path / "solvers").mkdir()
    (tmp_path / "solvers" / "out").mkdir()
    solver_file = tmp_path / "solvers" / "my_solver.prototxt"
    sp = caffe_pb2.SolverParameter()
    text_format.Parse('base_lr: 0.1 lr_policy: "fixed" max_iter: 1', sp)
    text_format.Parse(TINY_NET.replace("{params}", ""), sp.net_param)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    quiet = {"log": lambda m: None}
    # empty prefix: the solver file without its extension (Caffe's upgrade)
    assert Solver(sp, source=str(solver_file), **quiet).snapshot_prefix == str(tmp_path / "solvers" / "my_solver")
    # a folder: folder / solver stem
    sp.snapshot_prefix = "."
    assert Solver(sp, source=str(solver_file), **quiet).snapshot_prefix == os.path.join(".", "my_solver")
    # relative to the current folder when that folder exists there, else next to the solver
    sp.snapshot_prefix = "out/net"
    assert Solver(sp, source=str(solver_file), **quiet).snapshot_prefix == str(tmp_path / "solvers" / "out" / "net")
    (work / "out").mkdir()
    assert Solver(sp, source=str(solver_file), **quiet).snapshot_prefix == "out/net"
    # a folder that exists nowhere fails before training starts
    sp.snapshot_prefix = "nowhere/net"
    s = Solver(sp, source=str(solver_file), train_feed=lambda i: make_batches(1)[0], **quiet)
    with pytest.raises(RistrettoError, match="cannot write snapshots"):
        s.solve()


def test_net_states_merge_like_caffe():
    """Solver default phase < the net's own state < train_state / test_state."""
    sp = caffe_pb2.SolverParameter()
    text_format.Parse('base_lr: 0.1 lr_policy: "fixed" max_iter: 0 test_iter: 1 test_iter: 1 test_interval: 1 '
                      'train_state { stage: "extra" } test_state { } test_state { stage: "extra" } '
                      'snapshot_after_train: false', sp)
    text_format.Parse(TINY_NET.replace("{params}", "") + '''
        layer { name: "more" type: "Power" bottom: "out" top: "more" include { stage: "extra" } }''', sp.net_param)
    s = Solver(sp, log=lambda m: None, test_feeds=[None, None])
    assert "more" in s.net.layer_names
    assert "more" not in s.test_nets[0].layer_names and "more" in s.test_nets[1].layer_names
    assert s.net.phase == 0 and all(n.phase == 1 for n in s.test_nets)
    s2 = Solver(sp, log=lambda m: None, stages=["other"], level=0)
    assert list(s2.param.train_state.stage) == ["extra", "other"]
