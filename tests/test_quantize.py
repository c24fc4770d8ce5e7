"""The quantize search (DESIGN.md section 5): formulas, stopping rule, rewrite, end to end."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ristretto_cli.errors import RistrettoError
from ristretto_cli.quantize import choose, observe
from ristretto_cli.quantize.observe import IntegerLengths, LayerRange
from ristretto_cli.quantize.rewrite import dfp, minifloat, power_of_2, rewrite_net
from ristretto_cli.quantize.runner import mean_score
from tests.conftest import shared_path

# --------------------------------------------------------------------------- integer lengths


@pytest.mark.parametrize("maximum, il, il_params", [
    (1.0, 0, 1),        # log2 1 = 0; params: ceil(0 + 1)
    (0.75, 0, 1),       # ceil(-0.415) = 0; ceil(0.585) = 1
    (0.5, -1, 0),       # exact power of two: no extra bit
    (0.49, -1, 0),      # ceil(-1.03) = -1; ceil(-0.03) = 0
    (2.0, 1, 2),
    (2.5, 2, 3),        # ceil(1.32) = 2; ceil(2.32) = 3
    (100.0, 7, 8),      # 2^6 < 100 < 2^7
    (2.0 ** -10, -10, -9),
    (0.0, 0, 1),        # never active: treated as a maximum of 1
])
def test_integer_lengths_from_maxima(maximum, il, il_params):
    got = observe.integer_lengths(LayerRange("l", "Convolution", maximum, maximum, maximum))
    assert got == IntegerLengths(il, il, il_params)


def test_integer_lengths_per_site_and_fractional_lengths():
    r = LayerRange("conv1", "Convolution", max_in=0.99609375, max_out=7.3, max_params=0.41)
    il = observe.integer_lengths(r)
    assert (il.il_in, il.il_out, il.il_params) == (0, 3, 0)   # ceil(log2 .41 + 1) = ceil(-0.286) = 0
    # fl = bw - il, as the rewrite writes it
    q = rewrite_net(_lenet_like(), dfp(conv_params=8, activations=8), {"conv1": il, "ip1": il})
    qp = q.layer[1].quantization_param
    assert (qp.fl_params, qp.fl_layer_in, qp.fl_layer_out) == (8, 8, 5)


@pytest.mark.parametrize("maximum, bits", [
    (1.5, None), (2.0, None),              # log2(log2 m - 1) undefined: ignored like the original
    (3.0, 1),                              # ceil(log2(0.585) + 1) = ceil(0.226) = 1
    (300.0, 4),                            # ceil(log2(7.23) + 1) = ceil(3.85)
    (1e5, 5),                              # ceil(log2(15.6) + 1) = ceil(4.96)
    (3.0e38, 8),
])
def test_minifloat_exponent_bits_formula(maximum, bits):
    assert observe.exp_bits_for(maximum) == bits


def test_minifloat_exponent_bits_over_layers():
    ranges = [LayerRange("a", "Convolution", 1.0, 300.0, 1e30), LayerRange("b", "InnerProduct", 1e5, 0.5, 1.0)]
    assert observe.minifloat_exp_bits(ranges) == 5                 # weights (1e30) ignored
    assert observe.minifloat_exp_bits([LayerRange("c", "Convolution", 1.0, 2.0, 9.0)]) == 4  # never below 4


# --------------------------------------------------------------------------- stopping rule


def test_margin_rule_uses_float32_scores_and_percent():
    assert choose.within_margin(0.97, 0.99, 2.0)
    assert not choose.within_margin(0.969, 0.99, 2.0)
    # float32(0.98) + 0.01 = 0.99000001907 >= float32(0.99) = 0.99000000954: passes as in the original
    assert choose.within_margin(np.float32(0.98), np.float32(0.99), 1.0)
    b, s = np.float32(0.99), np.float32(0.98)
    assert choose.within_margin(s, b, 1.0) == (float(s) + 0.01 >= float(b))


class FakeScorer:
    """Scores from a table keyed by candidate; records what was asked."""

    def __init__(self, table):
        self.table, self.asked = table, []

    def __call__(self, cand):
        self.asked.append(cand)
        return self.table[cand]


def test_dynamic_fixed_point_order_stopping_and_choice():
    base = 0.99
    table = {dfp(conv_params=w): s for w, s in zip((16, 8, 4, 2, 1), (0.99, 0.985, 0.975, 0.5, 0.1))}
    table.update({dfp(fc_params=w): s for w, s in zip((16, 8, 4, 2, 1), (0.2, 0.99, 0.99, 0.99, 0.99))})
    table.update({dfp(activations=w): s for w, s in zip((16, 8, 4, 2, 1), (0.99, 0.99, 0.99, 0.98, 0.97))})
    table[dfp(4, 32, 1)] = 0.9
    scorer = FakeScorer(table)
    res = choose.search_dynamic_fixed_point(scorer, base, 2.0)
    # conv: 16, 8, 4 pass, 2 fails -> stop (1 never tried); fc: 16 fails at once -> 32; activations: all pass
    assert [(t.category, t.bit_width) for t in res.trials] == [
        ("conv_params", 16), ("conv_params", 8), ("conv_params", 4), ("conv_params", 2),
        ("fc_params", 16),
        ("activations", 16), ("activations", 8), ("activations", 4), ("activations", 2), ("activations", 1)]
    assert [t.passed for t in res.trials] == [True, True, True, False, False, True, True, True, True, True]
    assert res.chosen == {"conv_params": 4, "fc_params": 32, "activations": 1}
    assert res.final == dfp(4, 32, 1) and scorer.asked[-1] == res.final and res.final_score == 0.9
    assert dfp(conv_params=1) not in scorer.asked


def test_chosen_width_is_the_last_pass_before_the_first_failure():
    mk = lambda w, ok: choose.Trial("x", w, dfp(activations=w), 0.0, ok)  # noqa: E731
    assert choose.chosen_width([mk(16, True), mk(8, False)]) == 16
    assert choose.chosen_width([mk(16, False)]) == 32
    assert choose.chosen_width([mk(16, True), mk(8, True), mk(4, False), mk(2, True)]) == 8


def test_minifloat_widths_and_choice():
    assert choose.minifloat_widths(4) == [16, 8]      # 8 - 1 - 4 = 3 mantissa bits; 4 - 1 - 4 < 0
    assert choose.minifloat_widths(6) == [16, 8]
    assert choose.minifloat_widths(7) == [16]          # 8 - 1 - 7 = 0 mantissa bits: not tried
    scorer = FakeScorer({minifloat(16, 5): 0.99, minifloat(8, 5): 0.5})
    res = choose.search_minifloat(scorer, 0.99, 2.0, exp_bits=5)
    assert [t.bit_width for t in res.trials] == [16, 8]
    assert res.final == minifloat(16, 5) and res.final.mant_bits == 10 and res.final_score == 0.99
    assert len(scorer.asked) == 2                      # the original does not score the chosen net again
    # nothing passes: 32 bits, written as float32 itself and scored
    scorer = FakeScorer({minifloat(16, 4): 0.1, minifloat(32, 8): 0.99})
    res = choose.search_minifloat(scorer, 0.99, 2.0, exp_bits=4)
    assert res.chosen["minifloat"] == 32 and (res.final.mant_bits, res.final.exp_bits) == (23, 8)


def test_power_of_two_is_scored_once():
    scorer = FakeScorer({power_of_2(-8, -1, 8): 0.95})
    res = choose.search_power_of_2(scorer, 0.99, 2.0)
    assert len(scorer.asked) == 1 and res.final_score == 0.95
    assert res.chosen["weight_bits"] == 4               # sign + 3 bits for 8 exponents, the original's "4bit"


def test_mean_score_is_float32_like_the_original():
    vals = [np.float32(0.99), np.float32(0.98), np.float32(0.97)]
    total = np.float32(0)
    for v in vals:
        total = np.float32(total + v)
    assert mean_score(vals) == float(np.float32(total / np.float32(3)))


# --------------------------------------------------------------------------- rewrite

LENET_LIKE = """
name: "n"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 2 kernel_size: 3 } }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1" }
layer { name: "up" type: "Deconvolution" bottom: "norm1" top: "up" convolution_param { num_output: 2 kernel_size: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "up" top: "ip1" inner_product_param { num_output: 3 } }
"""


def _lenet_like():
    from ristretto_cli.caffe.prototxt import parse_net_text

    return parse_net_text(LENET_LIKE)


LENGTHS = {"conv1": IntegerLengths(1, 3, 0), "ip1": IntegerLengths(4, 5, -1)}


def _qp_fields(layer) -> dict:
    return {f.name: v for f, v in layer.quantization_param.ListFields()}


@pytest.mark.parametrize("cand, conv_fields, ip_fields", [
    (dfp(conv_params=8), {"bw_params": 8, "fl_params": 8}, None),
    (dfp(fc_params=4), None, {"bw_params": 4, "fl_params": 5}),
    (dfp(activations=16),
     {"bw_layer_in": 16, "fl_layer_in": 15, "bw_layer_out": 16, "fl_layer_out": 13},
     {"bw_layer_in": 16, "fl_layer_in": 12, "bw_layer_out": 16, "fl_layer_out": 11}),
    (dfp(2, 4, 8),
     {"bw_params": 2, "fl_params": 2, "bw_layer_in": 8, "fl_layer_in": 7, "bw_layer_out": 8, "fl_layer_out": 5},
     {"bw_params": 4, "fl_params": 5, "bw_layer_in": 8, "fl_layer_in": 4, "bw_layer_out": 8, "fl_layer_out": 3}),
    (minifloat(8, 4), {"precision": 1, "mant_bits": 3, "exp_bits": 4}, {"precision": 1, "mant_bits": 3, "exp_bits": 4}),
    (power_of_2(),
     {"precision": 2, "exp_min": -8, "exp_max": -1, "bw_layer_in": 8, "fl_layer_in": 7, "bw_layer_out": 8,
      "fl_layer_out": 5},
     {"precision": 2, "exp_min": -8, "exp_max": -1, "bw_layer_in": 8, "fl_layer_in": 4, "bw_layer_out": 8,
      "fl_layer_out": 3}),
])
def test_rewrite_sets_the_originals_types_and_fields_only(cand, conv_fields, ip_fields):
    from ristretto_cli.caffe.original_schema import parse_with_original_schema
    from ristretto_cli.caffe.prototxt import message_to_text

    src = _lenet_like()
    out = rewrite_net(src, cand, LENGTHS)
    parsed = parse_with_original_schema(message_to_text(out), filename="quantized.prototxt")
    by_name = {lp.name: lp for lp in parsed.layer}
    for name, fields, float_type, r_type in (("conv1", conv_fields, "Convolution", "ConvolutionRistretto"),
                                             ("ip1", ip_fields, "InnerProduct", "FcRistretto")):
        lp = by_name[name]
        if fields is None:
            assert lp.type == float_type and not lp.HasField("quantization_param")
        else:
            assert lp.type == r_type and _qp_fields(lp) == fields
    # LRN and Deconvolution are never touched by the search; the source is unchanged
    assert by_name["norm1"].type == "LRN" and not by_name["norm1"].HasField("quantization_param")
    assert by_name["up"].type == "Deconvolution" and not by_name["up"].HasField("quantization_param")
    assert src.layer[1].type == "Convolution"


def test_rewrite_without_statistics_names_the_layer():
    with pytest.raises(RistrettoError, match="'ip1'.*TRAIN-phase"):
        rewrite_net(_lenet_like(), dfp(fc_params=8), {"conv1": LENGTHS["conv1"]})


def test_parameter_memory_bits():
    from ristretto_cli.net import Net
    from ristretto_cli.quantize.report import parameter_memory

    net = Net(_lenet_like(), "TEST")
    sizes = {l.name: [int(b.size) for b in l.blobs] for l in net.layers if l.blobs}
    before = 32 * sum(sum(v) for v in sizes.values())
    mem = parameter_memory(net, dfp(2, 4, 8))
    other = 32 * sum(sizes["up"])
    assert mem["bits_before"] == before
    assert mem["bits_after"] == 2 * sum(sizes["conv1"]) + 4 * sum(sizes["ip1"]) + other
    mem = parameter_memory(net, power_of_2())
    assert mem["bits_after"] == 4 * sizes["conv1"][0] + 32 * sizes["conv1"][1] + 4 * sizes["ip1"][0] \
        + 32 * sizes["ip1"][1] + other


# --------------------------------------------------------------------------- a tiny synthetic net end to end

TINY = """
name: "tiny"
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
        transform_param {{ scale: 0.0625 mean_value: 7.5 }}
        data_param {{ source: "{db}" batch_size: 8 backend: LMDB }} }}
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
        transform_param {{ scale: 0.0625 mean_value: 7.5 }}
        data_param {{ source: "{db}" batch_size: 8 backend: LMDB }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param {{ num_output: 8 kernel_size: 3 weight_filler {{ type: "gaussian" std: 0.6 }}
                            bias_filler {{ type: "gaussian" std: 0.05 }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
        inner_product_param {{ num_output: 5 weight_filler {{ type: "gaussian" std: 0.7 }}
                              bias_filler {{ type: "gaussian" std: 0.05 }} }} }}
layer {{ name: "accuracy" type: "Accuracy" bottom: "ip1" bottom: "label" top: "accuracy"
        include {{ phase: TEST }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }}
"""
TINY_BATCHES = 6


def _write_db(path, images, labels):
    from ristretto_cli.data.lmdb_io import LMDBWriter, make_datum

    with LMDBWriter(path) as w:
        for i, (img, lab) in enumerate(zip(images, labels)):
            w.put(f"{i:08d}", make_datum(img, int(lab)).SerializeToString())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random net and images labelled with the float net's own predictions (baseline 1.0)."""
    from ristretto_cli.backend import Backend
    from ristretto_cli.caffe.caffemodel import write_caffemodel
    from ristretto_cli.caffe.prototxt import parse_net_text
    from ristretto_cli.net import Net

    d = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(7)
    # noisy copies of 5 patterns, so that the random net tells them apart a little
    patterns = rng.integers(0, 16, size=(5, 1, 10, 10))
    which = rng.integers(0, 5, size=8 * TINY_BATCHES)
    noise = rng.integers(-3, 4, size=(len(which), 1, 10, 10))
    images = np.clip(patterns[which] + noise, 0, 15).astype(np.uint8)
    _write_db(d / "db0", images, np.zeros(len(images)))
    net = Net(parse_net_text(TINY.format(db=d / "db0")), "TEST", backend=Backend(np, seed=3))
    net.close()
    x = (images.astype(np.float32) - np.float32(7.5)) * np.float32(0.0625)
    preds = []
    for b in range(TINY_BATCHES):
        net.forward({"data": x[8 * b:8 * b + 8], "label": np.zeros(8, np.float32)})
        preds += list(np.argmax(net.blobs["ip1"], axis=1))
    assert np.count_nonzero(np.bincount(preds)) >= 3   # not one class for everything
    _write_db(d / "db", images, preds)
    model = d / "tiny.prototxt"
    model.write_text(TINY.format(db=d / "db"))
    weights = d / "tiny.caffemodel"
    write_caffemodel(weights, net.to_proto(with_weights=True))
    return str(model), str(weights), d


def _independent_score(model, weights, cand, lengths, iterations):
    """Score a candidate the plain way: its own net, its own data layer, every layer."""
    from ristretto_cli.caffe.prototxt import read_net
    from ristretto_cli.net.scoring import score
    from ristretto_cli.net import Net

    net = Net(rewrite_net(read_net(model), cand, lengths), "TEST")
    net.load_weights(weights)
    try:
        s = score(net, iterations)
    finally:
        net.close()
    return [np.float32(b[s.names.index("accuracy")]) for b in s.batches]


def _candidate_from_json(cfg):
    from ristretto_cli.quantize.rewrite import Candidate

    return Candidate(**cfg)


def test_tiny_search_scores_and_choices_match_plain_evaluation(tiny):
    from ristretto_cli.quantize.procedure import quantize

    model, weights, d = tiny
    out = quantize(model, weights, str(d / "q.prototxt"), "dynamic_fixed_point", iterations=TINY_BATCHES,
                   report=str(d / "report.json"))
    rep = json.loads((d / "report.json").read_text())
    assert rep["baseline"] == 1.0
    lengths = {l["name"]: IntegerLengths(l["il_in"], l["il_out"], l["il_params"]) for l in rep["layers"]}
    plain = {}
    for c in rep["candidates"]:
        cand = _candidate_from_json(c["config"])
        batches = _independent_score(model, weights, cand, lengths, TINY_BATCHES)
        plain[cand] = mean_score(batches)
        if c["decided_early"]:  # the mean of the batches it scored, which decided it
            assert c["partial"] and c["batches_scored"] < TINY_BATCHES
            assert c["passed"] == choose.within_margin(plain[cand], 1.0, 2.0), c["label"]
        else:
            assert c["score"] == plain[cand], c["label"]
    # the stopping rule replayed on the plain scores gives the same trials and widths
    replay = choose.search_dynamic_fixed_point(lambda c: plain.get(c) if c in plain else mean_score(
        _independent_score(model, weights, c, lengths, TINY_BATCHES)), 1.0, 2.0)
    assert [(t.category, t.bit_width, t.passed) for t in replay.trials] == \
        [(t.category, t.bit_width, t.passed) for t in out.result.trials]
    for r, t in zip(replay.trials, out.result.trials):
        if not t.decided_early:
            assert r.score == t.score
    assert replay.chosen == out.result.chosen == rep["chosen"]
    assert replay.final_score == rep["final"]["score"]
    # something was actually trimmed away, and the stop came before 1 bit somewhere
    assert any(not t.passed for t in out.result.trials)
    assert rep["layer_forwards"] < rep["original_layer_forwards"]


@pytest.mark.parametrize("mode", ["dynamic_fixed_point", "minifloat", "integer_power_of_2_weights"])
def test_a_final_net_decided_early_is_scored_in_full(tiny, mode):
    """With a 100 % margin every candidate passes after its first batch (even a zero
    remainder stays within it), the final one too: its score is still the mean over every
    batch, the same as without early stopping."""
    from ristretto_cli.quantize.procedure import quantize

    model, weights, d = tiny
    reps = {early: quantize(model, weights, str(d / f"all_pass_{mode}_{early}.prototxt"), mode,
                            iterations=TINY_BATCHES, error_margin=100.0, early_stop=early).report
            for early in (True, False)}
    a, b = reps[True], reps[False]
    assert a["chosen"] == b["chosen"] and a["final"]["score"] == b["final"]["score"]
    if mode != "integer_power_of_2_weights":  # its one candidate is the final net
        assert a["batches_saved"] > 0


@pytest.mark.parametrize("mode", ["dynamic_fixed_point", "minifloat", "integer_power_of_2_weights"])
def test_tiny_early_stop_changes_nothing_but_the_work(tiny, mode):
    """Same trials, decisions, choices, written net and final score (scored in full) with and
    without early stopping; the full scores of stopped candidates agree with the decision."""
    from ristretto_cli.quantize.procedure import quantize

    model, weights, d = tiny
    reps = {}
    for early in (True, False):
        q = d / f"es_{mode}_{early}.prototxt"
        reps[early] = quantize(model, weights, str(q), mode, iterations=TINY_BATCHES, early_stop=early,
                               threads=2).report
        reps[early]["written"] = q.read_text()
    a, b = reps[True], reps[False]
    assert a["early_stop"] and not b["early_stop"]
    assert [(c["category"], c["bit_width"], c["passed"]) for c in a["candidates"]] == \
        [(c["category"], c["bit_width"], c["passed"]) for c in b["candidates"]]
    assert a["chosen"] == b["chosen"] and a["final"] == b["final"] and a["written"] == b["written"]
    assert b["batches_saved"] == 0 and not any(c["decided_early"] for c in b["candidates"])
    for ca, cb in zip(a["candidates"], b["candidates"]):
        if not ca["decided_early"]:
            assert ca["score"] == cb["score"]
        assert cb["batches_scored"] == TINY_BATCHES
    final = [e for e in a["evaluations"] if e["label"] == a["final"]["label"]][-1]
    assert final["batches_scored"] == TINY_BATCHES and not final["decided_early"]
    # the batches a stopped candidate keeps are the first prefix that decides it, whatever
    # the threads' timing: one thread, two threads and the re-reading path agree
    for cache, threads in ((2 << 30, 1), (0, 1)):
        other = quantize(model, weights, str(d / f"es_{mode}_{cache}_{threads}.prototxt"), mode,
                         iterations=TINY_BATCHES, cache_bytes=cache, threads=threads).report
        assert [e["batches"] for e in other["evaluations"]] == [e["batches"] for e in a["evaluations"]]
        assert other["candidates"] == a["candidates"]
    if mode == "dynamic_fixed_point":
        assert a["batches_saved"] > 0 and a["batches_scored"] < b["batches_scored"]
        assert a["layer_forwards"] < b["layer_forwards"]
    if mode == "integer_power_of_2_weights":  # its one candidate is the final net
        assert a["batches_saved"] == 0


def test_tiny_cache_and_reread_agree(tiny):
    from ristretto_cli.quantize.procedure import quantize

    model, weights, d = tiny
    runs = {}
    for cache, threads in ((2 << 30, 2), (2 << 30, 1), (0, 1)):
        runs[cache, threads] = quantize(model, weights, str(d / f"q{cache}_{threads}.prototxt"), "minifloat",
                                        iterations=TINY_BATCHES, cache_bytes=cache,
                                        threads=threads, early_stop=False).report
    a, b = runs[2 << 30, 2], runs[0, 1]
    assert a["batch_cache"] and not b["batch_cache"] and a["threads"] == 2
    for other in (runs[2 << 30, 1], b):
        assert [e["batches"] for e in a["evaluations"]] == [e["batches"] for e in other["evaluations"]]
        assert a["baseline_batches"] == other["baseline_batches"]  # the baseline in threads too
        assert [(c["bit_width"], c["score"]) for c in a["candidates"]] == \
            [(c["bit_width"], c["score"]) for c in other["candidates"]]
        assert a["chosen"] == other["chosen"] and a["original_layer_forwards"] == other["original_layer_forwards"]
    assert a["layer_forwards"] < b["layer_forwards"]
    assert (d / f"q{2 << 30}_2.prototxt").read_text() == (d / "q0_1.prototxt").read_text()


# --------------------------------------------------------------------------- bad input


def _cli(args):
    from ristretto_cli.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code


@pytest.mark.parametrize("extra, message", [
    (["--trimming_mode=fixed"], "unknown trimming mode 'fixed'"),
    (["--trimming_mode=dynamic_fixed_point", "--score_blob=nope"], "score blob 'nope' does not exist"),
    (["--trimming_mode=dynamic_fixed_point", "--score_blob=loss"], "is a loss"),
    (["--trimming_mode=dynamic_fixed_point", "--widths=16,0"], "bit widths must be integers in 1..32"),
    (["--trimming_mode=dynamic_fixed_point", "--widths=33"], "bit widths must be integers in 1..32"),
    (["--trimming_mode=integer_power_of_2_weights", "--exp_min=-1", "--exp_max=-8"], "must not exceed"),
    (["--trimming_mode=minifloat", "--iterations=0"], "at least 1"),
])
def test_bad_input_is_one_line_and_status_2(tiny, capsys, extra, message):
    model, weights, d = tiny
    out = d / "bad.prototxt"
    code = _cli(["quantize", f"--model={model}", f"--weights={weights}", f"--model_quantized={out}"] + extra)
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and err.startswith("ristretto: error:") and "\n" not in err
    assert not out.exists()


def test_net_without_accuracy_output_is_refused(tiny, capsys):
    model, weights, d = tiny
    text = open(model).read()
    start = text.index('layer { name: "accuracy"')
    no_acc = d / "no_acc.prototxt"
    no_acc.write_text(text[:start] + text[text.index('layer { name: "loss"'):])
    code = _cli(["quantize", "-m", str(no_acc), "-w", weights, "--model-quantized", str(d / "x.prototxt"),
                 "--trimming-mode", "minifloat"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no accuracy-like first output" in err and "\n" not in err


# --------------------------------------------------------------------------- LeNet on MNIST


LENET_ITERATIONS = 10


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    from ristretto_cli.data.converters import convert_mnist

    mnist = shared_path("data", "mnist")
    weights = shared_path("data", "caffemodels", "lenet_v2", "lenet_iter_10000.caffemodel")
    zoo = shared_path("zoo", "lenet", "lenet_train_test.prototxt")
    d = tmp_path_factory.mktemp("lenet")
    db = d / "mnist_test_lmdb"
    convert_mnist(mnist / "t10k-images-idx3-ubyte.gz", mnist / "t10k-labels-idx1-ubyte.gz", db,
                  limit=100 * LENET_ITERATIONS)
    text = zoo.read_text().replace("examples/mnist/mnist_train_lmdb", str(db))
    model = d / "lenet.prototxt"
    model.write_text(text.replace("examples/mnist/mnist_test_lmdb", str(db)))  # stats read the same LMDB
    return str(model), str(weights), d


@pytest.mark.parametrize("mode", ["dynamic_fixed_point", "minifloat", "integer_power_of_2_weights"])
def test_lenet_quantize_then_benchmark_reproduces_the_final_score(lenet, mode, capsys):
    from ristretto_cli.caffe.original_schema import parse_with_original_schema
    from ristretto_cli.net.loading import load_net

    model, weights, d = lenet
    q, rep_path, bench_path = d / f"{mode}.prototxt", d / f"{mode}.json", d / f"{mode}_bench.json"
    code = _cli_ok(["quantize", f"--model={model}", f"--weights={weights}", f"--model_quantized={q}",
                    f"--trimming_mode={mode}", f"--iterations={LENET_ITERATIONS}", f"--report={rep_path}"])
    assert code == 0
    shown = capsys.readouterr().out
    rep = json.loads(rep_path.read_text())
    assert 0.95 < rep["baseline"] <= 1.0 and rep["score_blob"] == "accuracy"
    assert f"{rep['final']['score']:.6g}" in shown and "baseline 32-bit float" in shown
    assert [l["name"] for l in rep["layers"]] == ["conv1", "conv2", "ip1", "ip2"]
    # every category follows the stopping rule: all pass but the last, which ends the category
    for cat in {c["category"] for c in rep["candidates"]}:
        trials = [c for c in rep["candidates"] if c["category"] == cat]
        for t in trials:
            if not t["decided_early"]:
                assert t["passed"] == (t["score"] + rep["error_margin"] / 100 >= rep["baseline"])
        assert all(t["passed"] for t in trials[:-1])
    assert rep["layer_forwards"] < rep["original_layer_forwards"]
    assert rep["parameter_memory"]["bits_after"] < rep["parameter_memory"]["bits_before"]
    # the written net is readable by the original and by us, and scores as quantize said
    text = q.read_text()
    parse_with_original_schema(text, filename=str(q))
    net = load_net(str(q), weights)
    assert {l.type for l in net.layers} >= {"ConvolutionRistretto", "FcRistretto"}
    net.close()
    assert _cli_ok(["benchmark", "--model", str(q), "--weights", weights, "--iterations", str(LENET_ITERATIONS),
                    "--json", str(bench_path)]) == 0
    bench = json.loads(bench_path.read_text())
    final = [e for e in rep["evaluations"] if e["label"] == rep["final"]["label"]][-1]
    assert [b["accuracy"] for b in bench["batches"]] == pytest.approx(final["batches"], abs=0)
    assert math.isclose(bench["means"]["accuracy"], rep["final"]["score"], abs_tol=1e-6)


@pytest.mark.parametrize("mode", ["dynamic_fixed_point", "minifloat", "integer_power_of_2_weights"])
def test_lenet_early_stop_same_choices_fewer_batches(lenet, mode):
    from ristretto_cli.quantize.procedure import quantize

    model, weights, d = lenet
    reps = {early: quantize(model, weights, str(d / f"es_{mode}_{early}.prototxt"), mode,
                            iterations=LENET_ITERATIONS, early_stop=early).report for early in (True, False)}
    a, b = reps[True], reps[False]
    assert [(c["category"], c["bit_width"], c["passed"]) for c in a["candidates"]] == \
        [(c["category"], c["bit_width"], c["passed"]) for c in b["candidates"]]
    assert a["chosen"] == b["chosen"] and a["final"]["score"] == b["final"]["score"]
    assert a["batches_scored"] + a["batches_saved"] == b["batches_scored"]
    assert a["original_layer_forwards"] == b["original_layer_forwards"]
    assert a["candidates_scored"] == b["candidates_scored"]
    if mode == "integer_power_of_2_weights":  # its one candidate is the final net
        assert a["batches_saved"] == 0
    elif mode == "dynamic_fixed_point":  # the failing widths stop early
        assert a["batches_saved"] > 0


def _cli_ok(args):
    from ristretto_cli.cli import main

    try:
        main(args)
    except SystemExit as exc:
        return exc.code
    return 0


# --------------------------------------------------------------------------- early stopping
def test_stopping_rule_is_exact_against_every_completion():
    """Whenever the rule decides from some batches, every completion of the others (values
    in [0, 1], extremes included) gives the same full-run decision."""
    rng = np.random.default_rng(21)
    for _ in range(400):
        n = int(rng.integers(1, 12))
        grid = int(rng.choice([1, 2, 8, 100]))
        full = [np.float32(rng.integers(0, grid + 1) / grid) for _ in range(n)]
        baseline = float(np.float32(rng.choice([1.0, 0.9911, 0.5, float(full[0])])))
        margin = float(rng.choice([0.0, 1.0, 2.0, 10.0]))
        rule = choose.StoppingRule(baseline, margin, n)
        known = rng.random(n) < rng.random()
        values = [v if k else None for v, k in zip(full, known)]
        decision = rule.decide(values)
        if decision is None:
            continue
        for _ in range(5):
            fill = [v if v is not None else np.float32(rng.choice([0.0, 1.0, rng.random()])) for v in values]
            assert choose.within_margin(mean_score(fill), baseline, margin) == decision
        assert choose.within_margin(mean_score(full), baseline, margin) == decision


def test_stopping_rule_bounds_and_edges():
    rule = choose.StoppingRule(0.99, 2.0, 4)
    assert rule.decide([None] * 4) is None
    assert rule.decide([0.0, 0.0, None, None]) is False     # at most 0.5 < 0.97
    assert rule.decide([1.0, 1.0, 1.0, None]) is None       # 0.75 .. 1.0 straddles 0.97
    assert rule.decide([1.0, 1.0, 1.0, 1.0]) is True
    assert rule.decide([0.96, 0.98, 0.97, 0.97]) is choose.within_margin(mean_score([0.96, 0.98, 0.97, 0.97]),
                                                                            0.99, 2.0)
    assert choose.StoppingRule(0.5, 0.0, 3).decide([1.0, 1.0, None]) is True   # >= 2/3 whatever comes
    with pytest.raises(ValueError):
        rule.decide([1.0])
