"""`quantize --search per-layer` (ours): per-layer candidates, the policy, the search end to end."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from ristretto_cli.quantize import choose, per_layer
from ristretto_cli.quantize.observe import IntegerLengths
from ristretto_cli.quantize.per_layer import (ACTIVATIONS, PARAMS, LayerSpec, higher, ladder, lower,
                                              search_per_layer)
from ristretto_cli.quantize.rewrite import Candidate, changed_layers, dfp, rewrite_net
from tests.test_quantize import (LENGTHS, TINY_BATCHES, _cli, _independent_score, _lenet_like, _qp_fields,  # noqa: F401
                                 tiny)

# --------------------------------------------------------------------------- per-layer candidates


def test_per_layer_candidate_writes_each_layers_widths_in_the_originals_fields():
    from ristretto_cli.caffe.original_schema import parse_with_original_schema
    from ristretto_cli.caffe.prototxt import message_to_text

    cand = replace(dfp(2, 4, 8), layers={"ip1": (3, 6)})
    out = rewrite_net(_lenet_like(), cand, LENGTHS)
    parsed = parse_with_original_schema(message_to_text(out), filename="q.prototxt")
    by_name = {lp.name: lp for lp in parsed.layer}
    # conv1 keeps the category widths, ip1 has its own; fl = bw - il as always
    assert _qp_fields(by_name["conv1"]) == {"bw_params": 2, "fl_params": 2, "bw_layer_in": 8, "fl_layer_in": 7,
                                            "bw_layer_out": 8, "fl_layer_out": 5}
    assert _qp_fields(by_name["ip1"]) == {"bw_params": 3, "fl_params": 4, "bw_layer_in": 6, "fl_layer_in": 2,
                                          "bw_layer_out": 6, "fl_layer_out": 1}


def test_per_layer_candidate_json_round_trip_and_hashing():
    cand = replace(dfp(2, 4, 8), layers={"conv1": (1, None), "ip1": [3, 6]})
    assert cand.layers == (("conv1", 1, None), ("ip1", 3, 6))
    assert Candidate(**cand.to_json()) == cand and hash(Candidate(**cand.to_json())) == hash(cand)
    assert json.loads(json.dumps(cand.to_json()))["layers"] == {"conv1": [1, None], "ip1": [3, 6]}
    assert "per layer conv1 1/-, ip1 3/6" in cand.label()
    assert cand.widths_of("conv1", "Convolution") == (1, 8) and cand.widths_of("ip1", "InnerProduct") == (3, 6)
    with pytest.raises(ValueError):
        Candidate("minifloat", mant_bits=3, exp_bits=4, layers={"conv1": (1, 1)})


def test_first_changed_layer_of_a_per_layer_candidate():
    param = _lenet_like()
    # only ip1 is named and no category is set: the candidate changes ip1 alone (the runner starts there)
    only_ip1 = replace(dfp(), layers={"ip1": (4, None)})
    assert changed_layers(param, only_ip1) == ["ip1"]
    out = rewrite_net(param, only_ip1, LENGTHS)
    assert [lp.type for lp in out.layer if lp.name in ("conv1", "ip1")] == ["Convolution", "FcRistretto"]
    assert changed_layers(param, replace(dfp(activations=8), layers={"ip1": (4, None)})) == ["conv1", "ip1"]


def test_parameter_memory_of_a_per_layer_candidate():
    from ristretto_cli.net import Net
    from ristretto_cli.quantize.report import parameter_memory

    net = Net(_lenet_like(), "TEST")
    sizes = {l.name: sum(int(b.size) for b in l.blobs) for l in net.layers if l.blobs}
    mem = parameter_memory(net, replace(dfp(2, 4, 8), layers={"ip1": (3, 6)}))
    assert mem["bits_after"] == 2 * sizes["conv1"] + 3 * sizes["ip1"] + 32 * sizes["up"]


# --------------------------------------------------------------------------- the policy


def test_ladder_inserts_midpoints():
    assert ladder() == [16, 12, 8, 6, 4, 3, 2, 1]
    assert ladder([8, 4]) == [8, 6, 4]
    assert lower(8, ladder()) == 6 and lower(32, ladder()) == 16 and lower(1, ladder()) is None
    assert lower(5, ladder()) == 4   # a width off the ladder steps to the next one on it


class Scorer:
    """A made-up score: 1.0 minus a penalty per layer for each bit below its limit; records calls."""

    def __init__(self, limits):
        self.limits, self.asked = limits, []

    def __call__(self, cand):
        self.asked.append(cand)
        loss = 0.0
        for name, p, a in cand.layers:
            lp, la = self.limits[name]
            loss += 0.004 * (max(0, lp - p) + max(0, la - a))   # 0.4 % per bit below the limit
        return 1.0 - loss


def _costs(macs):
    """bitops per layer = macs x weight width x activation width."""
    return lambda c: {name: macs[name] * p * a for name, p, a in c.layers}


LAYERS = [LayerSpec("conv1", 8, 8), LayerSpec("conv2", 8, 8), LayerSpec("ip1", 8, 8)]
MACS = {"conv1": 100, "conv2": 1000, "ip1": 10}


def _search(scorer, margin=2.0, start_score=1.0, on_base=None):
    return search_per_layer(scorer, _costs(MACS), dfp(8, 8, 8), start_score, LAYERS, 1.0, margin, ladder(), "bitops",
                            on_base)


def test_per_layer_search_lowers_within_the_margin_and_never_scores_twice():
    scorer = Scorer({"conv1": (6, 6), "conv2": (3, 6), "ip1": (2, 2)})
    res = _search(scorer)
    assert len(scorer.asked) == len(set(scorer.asked)), "a configuration was scored twice"
    assert choose.within_margin(res.final_score, 1.0, 2.0)
    assert res.final_score == scorer(res.final)
    # every layer got at least as narrow as its free limit allows, and the objective went down
    total = lambda c: sum(_costs(MACS)(c).values())  # noqa: E731
    assert total(res.final) < total(res.start)
    assert res.chosen["ip1"] == {PARAMS: 2, ACTIVATIONS: 2}   # free bits first: no score lost there
    # the most costly layer is tried first: the first greedy step is conv2's
    assert res.accepted[0].layer == "conv2"


def test_sensitivities_are_measured_once_per_layer_and_part_and_prune_the_greedy():
    scorer = Scorer({"conv1": (8, 8), "conv2": (8, 8), "ip1": (8, 8)})
    res = _search(scorer, margin=1.0)    # 1 %: two bits below a limit (0.8 %) pass, three (1.2 %) fail
    sens = [s for s in res.steps if s.phase == "sensitivity"]
    # the first step of every layer and part alone, before any greedy step
    first = [(s.layer, s.part, s.width) for s in res.steps[:6]]
    assert first == [(n, part, 6) for n in ("conv1", "conv2", "ip1") for part in (PARAMS, ACTIVATIONS)]
    assert all(s.phase == "sensitivity" and s.passed for s in res.steps[:6])
    # the greedy takes conv2's weights to 6 (most costly layer; known from its sensitivity, not scored
    # again), wants 4 next: scored alone once (1.6 %: fails), so never tried in combination
    assert res.accepted[0].candidate == sens[2].candidate and (res.accepted[0].layer, res.accepted[0].part) == \
        ("conv2", PARAMS)
    assert res.sensitivities["conv2"][PARAMS] == [(6, sens[2].score, True), (4, pytest.approx(0.984), False)]
    assert all(s.width >= 6 for s in res.steps if s.phase == "greedy")
    # every other step in combination with it is 1.6 % down: fails, dropped; no lower width scored alone
    assert [len(res.sensitivities[n][p]) for n in ("conv1", "conv2", "ip1") for p in (PARAMS, ACTIVATIONS)] == \
        [1, 1, 2, 1, 1, 1]
    assert len(scorer.asked) == len(set(scorer.asked)) == len(res.steps)
    assert res.floors["conv2"] == {PARAMS: 6, ACTIVATIONS: 6}
    assert choose.within_margin(res.final_score, 1.0, 1.0)


def test_higher_steps_up_the_ladder_not_above_the_largest_width():
    assert higher(8, ladder()) == 12 and higher(12, ladder()) == 16 and higher(16, ladder()) is None
    assert higher(32, ladder()) is None and higher(5, ladder()) == 6
    assert higher(8, ladder(), max_width=8) is None and higher(6, ladder(), max_width=8) == 8


def test_a_start_outside_the_margin_that_no_step_up_repairs_stays_as_it_is():
    asked = []

    def flat(c):
        asked.append(c)
        return 0.5

    res = _search(flat, start_score=0.5)
    assert res.final == res.start and res.final_score == 0.5 and not res.accepted
    assert res.start_within_margin is False and res.repaired is False
    assert res.base == res.start
    assert res.chosen == {l.name: {PARAMS: 8, ACTIVATIONS: 8} for l in LAYERS}
    # it raised until nothing could be raised (every part 8 -> 12 -> 16: 12 steps up), all equal: the
    # cheapest first (ip1, the fewest multiply-accumulates; its weights before its activations in file order)
    assert len(res.repair) == 12 and (res.repair[0].layer, res.repair[0].part, res.repair[0].width) == \
        ("ip1", PARAMS, 12)
    assert all(s.phase == "repair" and s.width <= 16 for s in res.steps)
    assert len(asked) == len(set(asked)) == len(res.steps)
    # never above the global search's largest width
    res = search_per_layer(flat, _costs(MACS), dfp(8, 8, 8), 0.5, LAYERS, 1.0, 2.0, ladder(), "bitops",
                           max_width=12)
    assert len(res.repair) == 6 and all(s.width == 12 for s in res.steps) and res.repaired is False


def test_a_start_outside_the_margin_is_repaired_then_narrowed():
    # conv1's activations want 12 bits: G (all 8) loses 1.6 % there, outside a 1 % margin
    scorer = Scorer({"conv1": (2, 12), "conv2": (4, 4), "ip1": (2, 2)})
    g = dfp(8, 8, 8)
    res = _search(scorer, margin=1.0, start_score=1.0 - 0.016)
    assert not choose.within_margin(res.start_score, 1.0, 1.0)
    assert res.start_within_margin is False and res.repaired is True
    # every step up from G scored once; the best (conv1's activations to 12) taken, and that was enough
    repair = [s for s in res.steps if s.phase == "repair"]
    assert [(s.layer, s.part, s.width) for s in repair] == \
        [(n, part, 12) for n in ("conv1", "conv2", "ip1") for part in (PARAMS, ACTIVATIONS)]
    assert [(s.layer, s.part, s.width) for s in res.repair] == [("conv1", ACTIVATIONS, 12)]
    assert res.base == res.repair[0].candidate and res.base_score == 1.0
    assert res.steps.index(repair[-1]) == 5      # the repair came first
    # then the descent from the repaired configuration: every other part narrowed, conv1's activations kept
    assert res.accepted and choose.within_margin(res.final_score, 1.0, 1.0)
    assert res.chosen["conv1"][ACTIVATIONS] == 12
    assert res.chosen["ip1"] == {PARAMS: 2, ACTIVATIONS: 2} and max(res.chosen["conv2"].values()) < 8
    total = lambda c: sum(_costs(MACS)(c).values())  # noqa: E731
    assert total(res.final) < total(res.start)
    # lowering conv1's activations back to 8 from R is G: known, not scored again
    assert len(scorer.asked) == len(set(scorer.asked)) == len(res.steps)
    assert replace(g, layers=res.start.layers) not in scorer.asked
    assert res.sensitivities["conv1"][ACTIVATIONS][0] == (8, pytest.approx(0.984), False)


def test_a_start_within_the_margin_needs_no_repair():
    res = _search(Scorer({"conv1": (8, 8), "conv2": (8, 8), "ip1": (2, 2)}))
    assert res.start_within_margin is True and res.repaired is True and not res.repair
    assert res.base == res.start and not [s for s in res.steps if s.phase == "repair"]


def test_on_base_hears_the_start_then_each_accepted_step():
    bases = []
    res = _search(Scorer({"conv1": (8, 8), "conv2": (8, 8), "ip1": (2, 2)}), on_base=bases.append)
    assert bases[0] == res.start and bases[1:] == [s.candidate for s in res.accepted]
    assert bases[-1] == res.final


def test_weight_bits_objective_tries_activation_steps_last():
    costs = lambda c: {name: MACS[name] * p for name, p, a in c.layers}  # noqa: E731
    scorer = Scorer({"conv1": (1, 1), "conv2": (1, 1), "ip1": (1, 1)})   # everything free
    res = search_per_layer(scorer, costs, dfp(8, 8, 8), 1.0, LAYERS, 1.0, 2.0, [8, 6], "weight-bits")
    greedy = [s for s in res.accepted]
    parts = [s.part for s in greedy]
    assert parts == [PARAMS] * 3 + [ACTIVATIONS] * 3   # weight steps save weight bits; activation steps none
    assert [s.layer for s in greedy[:3]] == ["conv2", "conv1", "ip1"]


# --------------------------------------------------------------------------- end to end on the tiny net


def _quantize(tiny, name, **kw):
    from ristretto_cli.quantize.procedure import quantize

    model, weights, d = tiny
    return quantize(model, weights, str(d / f"{name}.prototxt"), "dynamic_fixed_point", iterations=TINY_BATCHES,
                    report=str(d / f"{name}.json"), **kw)


@pytest.mark.parametrize("cache", [2 << 30, 0])
def test_tiny_per_layer_beats_global_within_the_margin(tiny, cache):
    model, weights, d = tiny
    g = _quantize(tiny, f"g{cache}", activation_range="signed", cache_bytes=cache)
    p = _quantize(tiny, f"p{cache}", activation_range="signed", cache_bytes=cache, search="per-layer")
    # the global part of the per-layer run is the original's search, unchanged
    assert [(t.category, t.bit_width, t.score) for t in p.result.trials] == \
        [(t.category, t.bit_width, t.score) for t in g.result.trials]
    assert p.result.chosen == g.result.chosen
    sec = p.report["per_layer"]
    assert sec["global"]["score"] == g.result.final_score
    assert sec["per_layer"]["weight_bits"] < sec["global"]["weight_bits"]
    assert sec["per_layer"]["bitops"] < sec["global"]["bitops"]
    assert p.report["cost"]["final"]["total"]["bitops"] == sec["per_layer"]["bitops"]
    assert choose.within_margin(p.result.final_score, p.result.baseline, 2.0)
    # the written prototxt holds per-layer widths and scores as the search said (plain evaluation)
    rep = json.loads((d / f"p{cache}.json").read_text())
    assert rep["search"] == "per-layer" and rep["objective"] == "bitops"
    final = Candidate(**rep["final"]["config"])
    assert final.layers and final == p.result.final
    lengths = {l["name"]: IntegerLengths(l["il_in"], l["il_out"], l["il_params"], l.get("unsigned_in", False),
                                         l.get("unsigned_out", False)) for l in rep["layers"]}
    from ristretto_cli.quantize.runner import mean_score

    assert mean_score(_independent_score(model, weights, final, lengths, TINY_BATCHES)) == rep["final"]["score"]
    from ristretto_cli.caffe.prototxt import read_net

    written = {lp.name: lp.quantization_param for lp in read_net(str(d / f"p{cache}.prototxt")).layer
               if lp.HasField("quantization_param")}
    for l in sec["layers"]:
        assert (written[l["layer"]].bw_params, written[l["layer"]].bw_layer_in) == \
            (l["chosen"]["params"], l["chosen"]["activations"])
    # every per-layer step's score is the plain score of its net
    for st in rep["per_layer"]["steps"]:
        ev = next(e for e in rep["evaluations"] if e["label"] == st["label"])
        cand = Candidate(**ev["config"])
        assert mean_score(_independent_score(model, weights, cand, lengths, TINY_BATCHES)) == st["score"]


def test_tiny_original_range_global_outside_the_margin_tries_a_repair(tiny):
    from ristretto_cli.quantize.report import per_layer_table

    model, weights, d = tiny
    # with the original's activation range G is outside the margin; its activations stay float (32:
    # nothing to raise), and raising conv1's weights does not bring it back: G is kept, as the original's
    g = _quantize(tiny, "gorig")
    assert not choose.within_margin(g.result.final_score, g.result.baseline, 2.0)
    p = _quantize(tiny, "porig", search="per-layer")
    sec = p.report["per_layer"]
    assert sec["start_within_margin"] is False and sec["repaired"] is False
    assert p.result.final_score == g.result.final_score and sec["per_layer"]["label"] == sec["global"]["label"]
    assert sec["repair"] and all(st["phase"] == "repair" for st in sec["steps"])
    assert [st["label"] for st in sec["repair"]] == [st["label"] for st in sec["steps"]]
    assert not sec["accepted"]
    top = max(choose.DFP_WIDTHS)
    for st in sec["repair"]:
        assert st["width"] <= top and not st["passed"]
        assert any(e["label"] == st["label"] for e in p.report["evaluations"])
    rows = per_layer_table(sec)[2]
    assert rows[-1][0] == "repair" and "global kept" in rows[-1][-1]


def test_tiny_per_layer_candidates_start_where_they_leave_the_base(tiny):
    p = _quantize(tiny, "pstart", activation_range="signed", search="per-layer")
    rep = p.report
    assert rep["batch_cache"]
    order = ["conv1", "ip1"]
    for st in rep["per_layer"]["steps"]:
        ev = next(e for e in rep["evaluations"] if e["label"] == st["label"])
        # never after the layer the step changes; a sensitivity (one layer from the global result,
        # whose blobs were kept) exactly there
        assert order.index(ev["start_layer"]) <= order.index(st["layer"])
        if st["phase"] == "sensitivity":
            assert ev["start_layer"] == st["layer"]
    assert any(e["start_layer"] == "ip1" for e in rep["evaluations"])


def test_tiny_sensitivities_are_scored_once(tiny, monkeypatch):
    from ristretto_cli.quantize.runner import CandidateRunner

    calls = []
    original = CandidateRunner.evaluate

    def counting(self, candidate, *a, **kw):
        calls.append((candidate, bool(kw.get("keep"))))
        return original(self, candidate, *a, **kw)

    monkeypatch.setattr(CandidateRunner, "evaluate", counting)
    p = _quantize(tiny, "pcount", activation_range="signed", search="per-layer")
    sec = p.per_layer
    n_global = len(p.result.trials) + 1
    per = calls[n_global:]
    scored = [c for c, _ in per]
    # each per-layer configuration is scored once by the runner (the global result is not scored again:
    # the global search's run of it kept its blobs), and every sensitivity is one of them
    assert len(scored) == len(set(scored)) == len(sec.steps)
    assert all(k for _, k in per) and calls[n_global - 1][1]   # they keep blobs, as did the combination
    sens = [s.candidate for s in sec.steps if s.phase == "sensitivity"]
    assert set(sens) <= set(scored)
    assert len(sens) == sum(len(rows) for parts in sec.sensitivities.values() for rows in parts.values())


def test_default_search_is_the_originals(tiny):
    from ristretto_cli.quantize.procedure import QuantizeSettings

    assert QuantizeSettings().search == "global" and QuantizeSettings().objective == "bitops"
    out = _quantize(tiny, "default")
    assert out.per_layer is None and "per_layer" not in out.report and "search" not in out.report
    assert out.result.final.layers is None


def test_per_layer_needs_dynamic_fixed_point(tiny, capsys):
    model, weights, d = tiny
    code = _cli(["quantize", f"--model={model}", f"--weights={weights}", f"--model_quantized={d / 'x.prototxt'}",
                 "--trimming_mode=minifloat", "--search=per-layer"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--search per-layer searches dynamic fixed point" in err and "\n" not in err


def test_cli_per_layer_shows_its_table(tiny, capsys):
    from tests.test_quantize import _cli_ok

    model, weights, d = tiny
    code = _cli_ok(["quantize", f"--model={model}", f"--weights={weights}", f"--model_quantized={d / 'cli.prototxt'}",
                    "--trimming_mode=dynamic_fixed_point", f"--iterations={TINY_BATCHES}", "--search=per-layer",
                    "--objective=weight-bits", "--activation-range=signed", "--per-layer-widths=16,8,6,4",
                    f"--report-html={d / 'cli.html'}"])
    out = capsys.readouterr().out
    assert code == 0 and "Per-layer search (objective weight-bits; widths 16, 8, 6, 4)" in out
    assert "score of the global configuration" in out
    page = (d / "cli.html").read_text()
    assert '<section id="per_layer">' in page and "weights alone" in page


def test_per_layer_module_knows_no_nets():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(per_layer))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"__future__", "dataclasses", "typing", "choose", "rewrite"}
