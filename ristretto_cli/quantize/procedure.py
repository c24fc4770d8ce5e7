"""The `quantize` procedure (DESIGN.md section 5), one step per function:

1. :func:`plan`    - check the settings and the output path, read the net, build the
   float net with its weights, resolve the score blob;
2. :func:`observe` - score the float net (the baseline) and measure value ranges on the
   TRAIN-phase net (the integer lengths follow from them);
3. :func:`search`  - try candidates in the original's order (:mod:`.choose`); with
   ``search="per-layer"`` (ours) :func:`refine` then narrows layer by layer from that
   result (:mod:`.per_layer`);
4. :func:`write`   - rewrite the net with the chosen formats, write the prototxt and
   build the report.

:func:`quantize` runs the four. It reaches the original's choices with the original's
arithmetic (same candidates in the same order, same stopping rule, same fields in the
written prototxt) but scores candidates on cached batches and starts each forward at
the first layer the candidate changes (see :mod:`ristretto_cli.quantize.runner`).
Nothing here prints: progress goes to an ``on_progress(done, total, info)`` callback
(:mod:`ristretto_cli.progress`), the outcome is returned as data.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass

from ..backend import one_blas_thread
from ..caffe.atomic import check_output_path, write_json
from ..errors import RistrettoError
from ..formats.trim import FLOAT32_EXP_RANGE, MAX_BITS
from ..progress import OnProgress, Steps
from . import choose, observe as observing, per_layer
from .costing import candidate_cost, layer_objective, objective_costs, search_costs
from .choose import DFP_WIDTHS, SearchResult
from .observe import (ACTIVATION_RANGES, AFTER_PASS, CALIBRATIONS, PRE_ACTIVATION, STAT_BATCHES, STAT_TYPES,
                      WHOLE_GRAPH_STAT_TYPES)
from .report import parameter_memory, report_json
from .rewrite import (CONV_TYPES, DYNAMIC_FIXED_POINT, FC_TYPES, MINIFLOAT, MODES, POWER_OF_2, changed_layers,
                      dfp, minifloat, power_of_2, ristretto_layers, rewrite_net)
from .runner import CandidateRunner, Counters

DEFAULT_ITERATIONS = 50      # the original's --iterations
DEFAULT_ERROR_MARGIN = 2.0   # the original's --error_margin, in percent
DEFAULT_CACHE_BYTES = 2 << 30


@dataclass
class QuantizeSettings:
    """How to search; the defaults are the original's.

    ``widths`` replaces the widths tried per category (dynamic fixed point: 16, 8, 4,
    2, 1; minifloat: 16, 8, ... while a mantissa bit is left); ``exp_min`` / ``exp_max``
    / ``activation_bits`` set the power-of-two mode. ``cache_bytes``: memory for batches
    kept between candidates. ``threads`` scores batches in parallel (None: one per core
    on the CPU); the scores do not depend on it. ``score_blob``: None for the net's first
    output. ``seed`` / ``gpu`` make the backend when the caller gives none.
    ``early_stop``: stop scoring a candidate once its batches decide it (exact: same
    choices and final score; only where the score blob comes from an Accuracy layer,
    whose values lie in [0, 1]); False scores every candidate on every batch.
    """

    iterations: int = DEFAULT_ITERATIONS
    error_margin: float = DEFAULT_ERROR_MARGIN
    widths: list[int] | None = None
    exp_min: int = -8
    exp_max: int = -1
    activation_bits: int = 8
    cache_bytes: int = DEFAULT_CACHE_BYTES
    threads: int | None = None
    score_blob: str | None = None
    seed: int | None = None
    gpu: int | None = None
    # -- our additions (README "Beyond the original"); the defaults are the original's --
    fold: bool = False                   # fold BatchNorm (+ Scale) first (quantize/fold.py)
    fold_layers: list[str] | None = None  # only these BatchNorms (each must fold)
    folded_weights: str | None = None    # where the folded caffemodel goes (default: beside the prototxt)
    whole_graph: bool = False            # also Pooling, Eltwise, Concat, BatchNorm, Scale, ReLU, PReLU
    activation_range: str = "original"   # original | signed | unsigned
    bias_bits: int | None = None         # a bias format of its own, this wide
    calibration: str = "max"             # max | percentile | mse
    percentile: float = 99.99
    stats_batches: int = STAT_BATCHES
    stats: str = AFTER_PASS              # after | pre-activation
    early_stop: bool = True              # stop scoring a candidate once its batches decide it
    accumulator: bool = False            # also choose accum_bits per layer (quantize/accumulator.py)
    accumulator_overflow: str = "saturate"  # saturate | wrap: what those accumulators do at overflow
    search: str = "global"               # global (the original's three sweeps) | per-layer (quantize/per_layer.py)
    objective: str = per_layer.DEFAULT_OBJECTIVE  # per-layer: bitops | weight-bits | energy
    per_layer_widths: list[int] | None = None     # per-layer: the width ladder (default: per_layer.ladder(widths))


@dataclass
class Plan:
    """What the search works on, read and checked before any batch is scored."""

    model: str
    weights: str
    model_quantized: str
    trimming_mode: str
    settings: QuantizeSettings
    param: object                # the float NetParameter (folded with --fold)
    float_net: object            # its TEST-phase Net with the weights (data layers open)
    score_blob: str
    total_steps: int             # batches to score, for progress reports
    folded: object = None        # --fold: the fold.Folded result
    folded_model: object = None  # --fold: the folded caffemodel (NetParameter), written by write()


@dataclass
class Observation:
    """The float net measured: its score and the value ranges of its layers."""

    runner: CandidateRunner
    baseline: float
    ranges: list
    lengths: dict


@dataclass
class QuantizeOutcome:
    """The result of :func:`quantize`: the search, the report dict, the written path,
    the layer-forward counters, the parameter memory and the wall time."""

    result: SearchResult
    report: dict
    model_quantized: str
    counters: Counters | None = None
    memory: dict | None = None
    wall_s: float = 0.0
    per_layer: per_layer.PerLayerResult | None = None   # --search per-layer: its result (result.final is its)


# ----------------------------------------------------------------------------- checks

def check_settings(trimming_mode: str, settings: QuantizeSettings) -> None:
    """One-line errors for settings the search cannot use."""
    s = settings
    if trimming_mode not in MODES:
        raise RistrettoError(f"unknown trimming mode '{trimming_mode}'; use {', '.join(MODES)}")
    if int(s.iterations) < 1:
        raise RistrettoError(f"--iterations must be at least 1, got {s.iterations}")
    if not math.isfinite(s.error_margin) or s.error_margin < 0:
        raise RistrettoError(f"--error_margin must be a finite percentage >= 0, got {s.error_margin}")
    for w in list(s.widths or []) + [s.activation_bits]:
        if not isinstance(w, int) or not 1 <= w <= MAX_BITS:
            raise RistrettoError(f"bit widths must be integers in 1..{MAX_BITS}, got {w}")
    if s.widths is not None and len(s.widths) == 0:
        raise RistrettoError("--widths needs at least one bit width")
    if s.exp_min > s.exp_max:
        raise RistrettoError(f"--exp_min ({s.exp_min}) must not exceed --exp_max ({s.exp_max})")
    lo, hi = FLOAT32_EXP_RANGE
    for name, v in (("--exp_min", s.exp_min), ("--exp_max", s.exp_max)):
        if not lo <= v <= hi:
            raise RistrettoError(f"{name} must be a power of two float32 can hold ({lo}..{hi}), got {v}")
    if s.activation_range not in ACTIVATION_RANGES:
        raise RistrettoError(f"--activation-range must be one of {', '.join(ACTIVATION_RANGES)}, "
                             f"got '{s.activation_range}'")
    if s.calibration not in CALIBRATIONS:
        raise RistrettoError(f"--calibration must be one of {', '.join(CALIBRATIONS)}, got '{s.calibration}'")
    if not (isinstance(s.percentile, (int, float)) and 0 < s.percentile <= 100):
        raise RistrettoError(f"--percentile must be in (0, 100], got {s.percentile}")
    if s.stats not in (AFTER_PASS, PRE_ACTIVATION):
        raise RistrettoError(f"--stats must be {AFTER_PASS} or {PRE_ACTIVATION}, got '{s.stats}'")
    if int(s.stats_batches) < 1:
        raise RistrettoError(f"--stats-batches must be at least 1, got {s.stats_batches}")
    if s.bias_bits is not None and not (isinstance(s.bias_bits, int) and 1 <= s.bias_bits <= MAX_BITS):
        raise RistrettoError(f"--bias-bits must be an integer in 1..{MAX_BITS}, got {s.bias_bits}")
    if s.bias_bits is not None and trimming_mode == MINIFLOAT:
        raise RistrettoError("--bias-bits is dynamic fixed point; it does not combine with minifloat")
    if s.fold_layers and not s.fold:
        raise RistrettoError("--fold-layer needs --fold")
    if s.accumulator and trimming_mode == MINIFLOAT:
        raise RistrettoError("--accumulator simulates integer accumulators; it does not combine with minifloat")
    if str(s.accumulator_overflow).lower() not in ("saturate", "wrap"):
        raise RistrettoError(f"--accumulator-overflow must be saturate or wrap, got '{s.accumulator_overflow}'")
    if s.search not in per_layer.SEARCHES:
        raise RistrettoError(f"--search must be one of {', '.join(per_layer.SEARCHES)}, got '{s.search}'")
    if s.objective not in per_layer.OBJECTIVES:
        raise RistrettoError(f"--objective must be one of {', '.join(per_layer.OBJECTIVES)}, got '{s.objective}'")
    if s.search == "per-layer" and trimming_mode != DYNAMIC_FIXED_POINT:
        raise RistrettoError(f"--search per-layer searches dynamic fixed point widths; --trimming_mode is "
                             f"{trimming_mode}")
    if s.per_layer_widths is not None:
        if not s.per_layer_widths:
            raise RistrettoError("--per-layer-widths needs at least one bit width")
        for w in s.per_layer_widths:
            if not isinstance(w, int) or not 1 <= w <= MAX_BITS:
                raise RistrettoError(f"--per-layer-widths: bit widths must be integers in 1..{MAX_BITS}, got {w}")


def parse_widths(text: str | None) -> list[int] | None:
    """'16,8,4' -> [16, 8, 4]; one-line error for anything else."""
    if text is None or text == "":
        return None
    try:
        return [int(p) for p in text.replace(" ", "").split(",") if p != ""]
    except ValueError:
        raise RistrettoError(f"--widths: expected comma-separated integers like 16,8,4, got '{text}'") from None


def resolve_score_blob(net, requested: str | None) -> str:
    """The blob whose first element is the score: ``requested``, or the net's first
    output in Caffe's order (output names sorted), which must be an accuracy-like blob."""
    if requested:
        if requested not in net.blob_shapes:
            raise RistrettoError(f"score blob '{requested}' does not exist in the TEST-phase net '{net.name}'; "
                                 f"its outputs are {', '.join(sorted(net.outputs)) or 'none'}")
        if requested in net.loss_weights:
            raise RistrettoError(f"score blob '{requested}' is a loss; the search needs a score where higher is "
                                 f"better (an accuracy)")
        return requested
    outputs = sorted(net.outputs)
    producers = {t: net.layers[i] for i, ts in enumerate(net.top_names) for t in ts}
    if outputs:
        first = outputs[0]
        layer = producers.get(first)
        if first not in net.loss_weights and layer is not None and layer.type == "Accuracy":
            return first
    raise RistrettoError(
        f"net '{net.name}' has no accuracy-like first output in the TEST phase (outputs: "
        f"{', '.join(outputs) or 'none'}); the score is the first output, which must come from an Accuracy "
        f"layer; add one or name a blob with --score_blob")


def planned_steps(trimming_mode: str, settings: QuantizeSettings) -> int:
    """Batches the search scores at most: baseline, statistics, every candidate."""
    iterations = int(settings.iterations)
    n_widths = len(settings.widths) if settings.widths else None
    candidates = {DYNAMIC_FIXED_POINT: 3 * (n_widths or len(DFP_WIDTHS)) + 1,
                  MINIFLOAT: n_widths or len(choose.minifloat_widths(observing.MIN_EXP_BITS)),
                  POWER_OF_2: 1}[trimming_mode]
    accumulator = int(settings.stats_batches) if settings.accumulator else 0
    return iterations + int(settings.stats_batches) + candidates * iterations + accumulator


# ----------------------------------------------------------------------------- the steps

def plan(model: str, weights: str | None, model_quantized: str, trimming_mode: str,
         settings: QuantizeSettings, backend=None) -> Plan:
    """Check everything that can be checked before scoring and build the float net.
    The caller closes ``plan.float_net``'s data layers (``Net.close``)."""
    from ..backend import get_backend
    from ..caffe.prototxt import read_net
    from ..net import Net

    check_settings(trimming_mode, settings)
    if not model_quantized:
        raise RistrettoError("--model_quantized is required")
    check_output_path(model_quantized, [model, weights or ""], "--model-quantized")
    if not weights:
        raise RistrettoError("--weights is required: the search scores the trained net")
    param = read_net(model)
    already = ristretto_layers(param)
    if already:
        name, typ = already[0]
        raise RistrettoError(f"{model}: layer '{name}' is already a {typ} layer; quantize the float model")
    folded = folded_model = None
    if settings.fold:
        from .fold import fold_net, folded_caffemodel, read_weight_files, stored_arrays

        check_output_path(folded_weights_path(model_quantized, settings), [model, weights, model_quantized],
                          "--folded-weights")
        caffemodel = read_weight_files(weights)
        folded = fold_net(param, stored_arrays(caffemodel), settings.fold_layers)
        folded_model = folded_caffemodel(caffemodel, folded)
        param = folded.param
    backend = backend or get_backend(settings.gpu, settings.seed)
    float_net = Net(param, phase="TEST", backend=backend, source=model)
    try:
        if folded_model is not None:
            from .fold import load_folded

            load_folded(float_net, folded_model)
        else:
            float_net.load_weights(weights)
        score_blob = resolve_score_blob(float_net, settings.score_blob)
    except BaseException:
        float_net.close()
        raise
    return Plan(model, weights, model_quantized, trimming_mode, settings, param, float_net, score_blob,
                planned_steps(trimming_mode, settings), folded, folded_model)


def folded_weights_path(model_quantized: str, settings: QuantizeSettings) -> str:
    """Where --fold writes the folded caffemodel: --folded-weights, else the quantized
    prototxt's path with the extension .caffemodel."""
    if settings.folded_weights:
        return settings.folded_weights
    root, _ = os.path.splitext(model_quantized)
    return root + ".caffemodel"


def extend(candidate, settings: QuantizeSettings):
    """A candidate of the original's search with our additions the settings ask for."""
    changes = {}
    if settings.whole_graph:
        changes["whole_graph"] = True
    if settings.bias_bits is not None and candidate.precision != MINIFLOAT:
        changes["bias"] = int(settings.bias_bits)
    return dataclasses.replace(candidate, **changes) if changes else candidate


def observe(p: Plan, steps: Steps) -> Observation:
    """Score the float net over ``iterations`` batches (5.1), then record the value ranges
    of the TRAIN-phase net over the statistics batches (5.2) and their integer lengths (5.3)."""
    s = p.settings
    runner = CandidateRunner(p.param, p.float_net, int(s.iterations), p.score_blob, cache_bytes=s.cache_bytes,
                             on_batch=lambda info: steps.advance(1, info), workers=s.threads,
                             on_skip=lambda n, info: steps.advance(n, info))
    baseline = runner.run_baseline(_start_layers(p.param, p.trimming_mode, s))
    p.float_net.close()  # before the TRAIN net opens its data (an LMDB may serve both phases)
    train_net = _train_net(p.param, p.model, p.weights, p.float_net, p.folded_model)
    types = STAT_TYPES + (WHOLE_GRAPH_STAT_TYPES if s.whole_graph else ())
    batches = int(s.stats_batches)
    try:
        with one_blas_thread():  # like the scoring passes: maxima independent of the core count
            ranges = observing.observe_ranges(train_net, batches,
                                              on_batch=lambda b: steps.advance(1, "statistics (TRAIN)"),
                                              types=types, when=s.stats, calibration=s.calibration,
                                              percentile=float(s.percentile))
        runner.count_stats(train_net, batches)
    finally:
        train_net.close()
    lengths = observing.lengths_by_layer(ranges, s.activation_range)
    runner.lengths = lengths
    return Observation(runner, baseline, ranges, lengths)


def search(p: Plan, o: Observation, steps: Steps) -> tuple[SearchResult, int | None]:
    """The trimming mode's search (5.4 - 5.6): the result, and the minifloat exponent bits
    (None in the other modes)."""
    s = p.settings
    iterations = int(s.iterations)

    def skipped(n):
        steps.advance(n * iterations, "")

    rule = stopping_rule(p, o.baseline)
    keep = None
    if s.search == "per-layer" and p.trimming_mode == DYNAMIC_FIXED_POINT:
        keep = [l.name for l in per_layer_specs(p, o, dfp())]
        keep = keep if _reference_fits(o, s, keep, 3) else None

    def evaluate(candidate, *args, **kwargs):
        # (the runner's arguments: a stopping rule, counted=...) --search per-layer starts from
        # the combination (the last candidate, the only one with all three categories set): its
        # run keeps its blobs for the per-layer steps
        combined = None not in (candidate.conv_params, candidate.fc_params, candidate.activations)
        return o.runner.evaluate(extend(candidate, s), *args, keep=keep if combined else None, **kwargs)

    if p.trimming_mode == DYNAMIC_FIXED_POINT:
        result, exp_bits = choose.search_dynamic_fixed_point(evaluate, o.baseline, s.error_margin,
                                                             s.widths or DFP_WIDTHS, skipped, rule), None
    elif p.trimming_mode == MINIFLOAT:
        exp_bits = observing.minifloat_exp_bits(o.ranges)
        for w in s.widths or ():
            if w - 1 - exp_bits > 23:
                raise RistrettoError(f"--widths: a {w}-bit minifloat with {exp_bits} exponent bits needs "
                                     f"{w - 1 - exp_bits} mantissa bits; float32 has 23")
        result = choose.search_minifloat(evaluate, o.baseline, s.error_margin, exp_bits, s.widths, skipped,
                                         rule)
    else:
        result, exp_bits = choose.search_power_of_2(evaluate, o.baseline, s.error_margin, s.exp_min, s.exp_max,
                                                    s.activation_bits), None
    # the candidates as scored (with our additions), also in the trials the report lists
    result.final = extend(result.final, s) if result.final is not None else None
    for t in result.trials:
        t.candidate = extend(t.candidate, s)
    return result, exp_bits


def score_is_accuracy(net, blob: str) -> bool:
    """Does ``blob`` come from an Accuracy layer (values provably in [0, 1])?"""
    writers = [net.layers[i] for i, ts in enumerate(net.top_names) if blob in ts]
    return bool(writers) and all(l.type == "Accuracy" for l in writers)


def stopping_rule(p: Plan, baseline: float):
    """The early-stopping rule of the search, or None (disabled, or a score that is not an
    accuracy, whose range we cannot bound)."""
    s = p.settings
    if not s.early_stop or not score_is_accuracy(p.float_net, p.score_blob):
        return None
    return choose.StoppingRule(baseline, s.error_margin, int(s.iterations))


def choose_accumulators(p: Plan, o: Observation, final, steps: Steps) -> dict:
    """``--accumulator``: {layer: accum_bits} of the chosen net ``final``, from its exact partial
    sums on the TEST net over the statistics batches (:mod:`.accumulator`)."""
    from .accumulator import choose_accumulators as choose_widths

    net = o.runner.build(final)
    try:
        with one_blas_thread():
            bits, _ = choose_widths(net, int(p.settings.stats_batches), p.settings.accumulator_overflow,
                                    on_batch=lambda: steps.advance(1, "accumulators (TEST)"))
    finally:
        net.close()
    return bits


def per_layer_specs(p: Plan, o: Observation, final) -> list[per_layer.LayerSpec]:
    """The conv / FC layers the per-layer search narrows, in file order, with their widths in
    ``final`` (the global result): those the TEST net runs before the score is known."""
    specs, seen = [], set()
    for lp in p.param.layer:
        if lp.name in seen or (lp.type not in CONV_TYPES and lp.type not in FC_TYPES) or lp.name not in o.lengths:
            continue
        k = o.runner.start_index([lp.name])
        if k is None or k >= o.runner.end:
            continue
        seen.add(lp.name)
        params, acts = final.widths_of(lp.name, lp.type)
        specs.append(per_layer.LayerSpec(lp.name, params if params is not None else choose.FLOAT_WIDTH,
                                         acts if acts is not None else choose.FLOAT_WIDTH))
    return specs


def _reference_fits(o: Observation, s: QuantizeSettings, names: list[str], sets: int = 2) -> bool:
    """Can the per-layer search keep ``sets`` configurations' blobs in front of ``names`` (the
    start, its base, the candidate being scored) beside the float net's, within --cache-mb?"""
    return o.runner.cached and sets * o.runner.reference_bytes(names) <= s.cache_bytes - o.runner.cache_used


def per_layer_ladder(settings: QuantizeSettings) -> list[int]:
    """--per-layer-widths as given, else the search's widths with their midpoints."""
    if settings.per_layer_widths:
        return sorted(set(settings.per_layer_widths), reverse=True)
    return per_layer.ladder(settings.widths or DFP_WIDTHS)


def refine(p: Plan, o: Observation, steps: Steps, result: SearchResult) -> per_layer.PerLayerResult:
    """``--search per-layer``: narrow the global result layer by layer (:mod:`.per_layer`).

    Scoring reuses what candidates share: the configuration the search stands on (the
    global result, then each accepted step) keeps its blobs in front of every searched
    layer, so a candidate that changes one layer starts there (when the memory allows);
    the global result's blobs stay too, for the widths scored alone from it. An accepted
    step that was scored as a sensitivity (without keeping blobs) is not run again: the
    old blobs stay, and candidates start where they first differ from them."""
    s = p.settings
    runner = o.runner
    specs = per_layer_specs(p, o, result.final)
    names = [l.name for l in specs]
    widths = per_layer_ladder(s)
    below = sum(len([w for w in widths if w < x]) for l in specs for x in (l.params, l.activations))
    top = max(s.widths or DFP_WIDTHS)
    above = sum(len([w for w in widths if x < w <= top]) for l in specs for x in (l.params, l.activations))
    steps.total = steps.done + int(s.iterations) * (2 * below + 2 * len(specs) + 1  # an upper bound
                                                    + 2 * len(specs) * above)
    use_reference = _reference_fits(o, s, names, 3)
    # the global search's combination kept its blobs (search()): the start, when it is that net;
    # its blobs stay for the widths scored alone from it during the greedy
    state: dict = {"reference": None, "start": None, "last": (None, runner.last_reference)}

    def evaluate(candidate):
        state["last"] = None
        refs = [r for r in (state["reference"], state["start"]) if r is not None]
        score = runner.evaluate(extend(candidate, s), reference=refs, keep=names if use_reference else None)
        state["last"] = (candidate, runner.last_reference)
        return score.value

    def on_base(candidate):
        if not use_reference:
            return
        last = state["last"]
        if last is not None and last[1] is not None and \
                (last[0] == candidate or last[1].first_difference(runner.test_param(extend(candidate, s))) is None):
            state["reference"] = last[1]
            state["start"] = last[1] if state["start"] is None else state["start"]
        # else (a step known from the sensitivities, scored without keeping its blobs): keep the
        # old base's; a candidate starts where it first differs from them, which is still right
        state["last"] = None

    costs = objective_costs(p.float_net, p.param, o.lengths, s.objective)
    res = per_layer.search_per_layer(evaluate, lambda c: costs(extend(c, s)), result.final, result.final_score,
                                     specs, result.baseline, s.error_margin, widths, s.objective, on_base,
                                     max_width=max(s.widths or DFP_WIDTHS))
    state.clear()
    res.start, res.final, res.base = extend(res.start, s), extend(res.final, s), extend(res.base, s)
    for step in res.steps + res.accepted + res.repair:
        step.candidate = extend(step.candidate, s)
    steps.total = steps.done
    return res


def per_layer_json(p: Plan, o: Observation, res: per_layer.PerLayerResult, seconds: dict) -> dict:
    """The report's ``per_layer`` section: per layer the widths, sensitivities and objective
    before (global) and after; the totals of both configurations; every step; wall times."""
    before = candidate_cost(p.float_net, p.param, res.start, o.lengths)
    after = candidate_cost(p.float_net, p.param, res.final, o.lengths)
    obj_before, obj_after = layer_objective(before, res.objective), layer_objective(after, res.objective)
    layers = []
    for name, chosen in res.chosen.items():
        g = res.start.override(name)
        layers.append({
            "layer": name,
            "global": {"params": g[0], "activations": g[1]},
            "chosen": chosen,
            "floor": res.floors[name],
            "sensitivities": {part: [{"width": w, "score": sc, "passed": ok} for w, sc, ok in rows]
                              for part, rows in res.sensitivities[name].items()},
            "objective_before": obj_before.get(name, 0.0),
            "objective_after": obj_after.get(name, 0.0),
        })
    return {"objective": res.objective, "widths": res.widths,
            "global": {"score": res.start_score, "label": res.start.label(), **before.summary()},
            "per_layer": {"score": res.final_score, "label": res.final.label(), **after.summary()},
            "start_within_margin": res.start_within_margin, "repaired": res.repaired,
            "repair": [st.to_json() for st in res.repair],
            "base": {"score": res.base_score, "label": res.base.label()},
            "layers": layers, "steps": [st.to_json() for st in res.steps],
            "accepted": [st.to_json() for st in res.accepted],
            "scored": len(res.steps), "wall_s": seconds}


def write(p: Plan, o: Observation, result: SearchResult, exp_bits: int | None, t_start: float,
          refined: per_layer.PerLayerResult | None = None, seconds: dict | None = None,
          accumulators: dict | None = None) -> QuantizeOutcome:
    """Write the quantized prototxt (the float net with the chosen formats) and build the
    report; ``t_start``: :func:`time.perf_counter` when the procedure began. ``refined``: the
    per-layer search's result (its configuration is written), ``seconds``: phase wall times,
    ``accumulators``: {layer: accum_bits} to write too."""
    if refined is not None:
        result.final, result.final_score = refined.final, refined.final_score
    from ..caffe.prototxt import write_text

    out = rewrite_net(p.param, result.final, o.lengths)
    if accumulators:
        from .accumulator import write_accumulator_bits

        write_accumulator_bits(out, accumulators, p.settings.accumulator_overflow)
    write_text(p.model_quantized, out)
    if p.folded_model is not None:
        from ..caffe.caffemodel import write_caffemodel

        write_caffemodel(folded_weights_path(p.model_quantized, p.settings), p.folded_model)
    memory = parameter_memory(p.float_net, result.final)
    wall = time.perf_counter() - t_start
    runner = o.runner
    settings = {"model": p.model, "weights": p.weights, "model_quantized": p.model_quantized,
                "trimming_mode": p.trimming_mode, "iterations": int(p.settings.iterations),
                "error_margin": float(p.settings.error_margin), "score_blob": p.score_blob,
                "statistics_batches": int(p.settings.stats_batches), "backend": repr(p.float_net.backend),
                "threads": runner.workers,
                "early_stop": stopping_rule(p, o.baseline) is not None}
    s = p.settings
    ours = {"fold": s.fold, "whole_graph": s.whole_graph, "activation_range": s.activation_range,
            "bias_bits": s.bias_bits, "calibration": s.calibration, "stats": s.stats}
    defaults = QuantizeSettings()
    if s.search != defaults.search:
        ours.update(search=s.search, objective=s.objective, per_layer_widths=per_layer_ladder(s))
    if any(getattr(s, k) != getattr(defaults, k) for k in ours):  # the original's report keys otherwise
        settings.update(ours)
        if s.calibration == "percentile":
            settings["percentile"] = float(s.percentile)
    if s.accumulator:
        settings["accumulator_overflow"] = str(s.accumulator_overflow).lower()
        settings["accumulator_bits"] = dict(accumulators or {})
    if p.folded is not None:
        settings["folded_weights"] = folded_weights_path(p.model_quantized, s)
        settings["folds"] = [f.to_json() for f in p.folded.folds]
        settings["kept_batchnorm"] = [{"layer": n, "reason": r} for n, r in p.folded.kept]
    data = report_json(settings=settings, result=result, ranges=o.ranges, lengths=o.lengths,
                       evaluations=runner.evaluations, baseline_eval=runner.baseline_evaluation, memory=memory,
                       counters=runner.counters, wall_s=wall, exp_bits=exp_bits, cached=runner.cached)
    # the hardware cost of every configuration tried (ristretto report draws the Pareto front)
    data["cost"] = search_costs(p.float_net, p.param, o.lengths, runner.evaluations, result.final, result.baseline)
    if refined is not None:
        data["per_layer"] = per_layer_json(p, o, refined, seconds or {})
    return QuantizeOutcome(result, data, p.model_quantized, runner.counters, memory, wall, refined)


# ----------------------------------------------------------------------------- the procedure

def quantize(model: str, weights: str | None, model_quantized: str, trimming_mode: str,
             settings: QuantizeSettings | None = None, *, report: str | None = None, backend=None,
             on_progress: OnProgress | None = None, **kwargs) -> QuantizeOutcome:
    """Search word widths for ``model`` + ``weights`` and write ``model_quantized``, as
    ``ristretto quantize`` (this is ``ristretto_cli.quantize`` of the Python API).

    ``trimming_mode``: ``"dynamic_fixed_point"``, ``"minifloat"`` or
    ``"integer_power_of_2_weights"``. ``settings``: a :class:`QuantizeSettings`; keyword
    arguments set its fields too, with the command's option names: ``iterations`` (50),
    ``error_margin`` (2.0, percent), ``score_blob``, ``widths`` (a list, e.g. ``[8, 4]``),
    ``exp_min`` / ``exp_max`` / ``activation_bits`` (power-of-two mode), ``cache_bytes``
    (the command's ``--cache-mb`` times 2^20), ``threads``, ``seed``, ``gpu``; ours:
    ``search="per-layer"`` with ``objective`` ("bitops", "weight-bits", "energy") and
    ``per_layer_widths`` narrows the result layer by layer (:mod:`.per_layer`; its result is
    ``outcome.per_layer``, its report ``outcome.report["per_layer"]``).
    ``report``: a file to write the JSON report to (it is returned as
    ``outcome.report`` either way). ``backend``: the backend to run on (else one for
    ``gpu`` / ``seed``). ``on_progress(done, total, info)``: called as batches are
    scored. Prints nothing.

    Returns a :class:`QuantizeOutcome`: ``result.chosen`` (the chosen width per
    category), ``report`` (every measurement), ``model_quantized``, ``counters``,
    ``memory``, ``wall_s``.

    Example::

        outcome = ristretto_cli.quantize("lenet_train_test.prototxt", "lenet_iter_10000.caffemodel",
                                         "lenet_quantized.prototxt", "dynamic_fixed_point",
                                         iterations=100, error_margin=1)
        print(outcome.result.chosen, outcome.report["baseline"], outcome.report["final"]["score"])
    """
    settings = dataclasses.replace(settings or QuantizeSettings(), **kwargs)
    t_start = time.perf_counter()
    if report == "-":
        raise RistrettoError("report '-' (stdout): the library writes files only; use outcome.report")
    if report:
        check_output_path(report, [model, weights or "", model_quantized], "--report")
    p = plan(model, weights, model_quantized, trimming_mode, settings, backend)
    refined, seconds = None, {}
    try:  # data layers hold their LMDB open; close them whatever happens
        with Steps(on_progress, p.total_steps) as steps:
            observation = observe(p, steps)
            t_search = time.perf_counter()
            result, exp_bits = search(p, observation, steps)
            seconds["global_search"] = time.perf_counter() - t_search
            if settings.search == "per-layer":
                t_refine = time.perf_counter()
                refined = refine(p, observation, steps, result)
                seconds["per_layer_search"] = time.perf_counter() - t_refine
            final = refined.final if refined is not None else result.final
            accumulators = choose_accumulators(p, observation, final, steps) if settings.accumulator else None
    finally:
        p.float_net.close()
    outcome = write(p, observation, result, exp_bits, t_start, refined, seconds, accumulators)
    if report:
        write_json(report, outcome.report)
    return outcome


def _start_layers(param, mode: str, settings: QuantizeSettings | None = None) -> list[str]:
    """The first layer each kind of candidate rewrites (where snapshots are kept)."""
    if mode == DYNAMIC_FIXED_POINT:
        probes = [dfp(conv_params=8), dfp(fc_params=8), dfp(activations=8)]
    elif mode == MINIFLOAT:
        probes = [minifloat(16, 4)]
    else:
        probes = [power_of_2()]
    names = []
    for cand in probes:
        names += changed_layers(param, extend(cand, settings) if settings is not None else cand)
    return names


def _train_net(param, model, weights, float_net, folded_model=None):
    """The TRAIN-phase float net with the same weights (shared arrays where the layer
    exists in the TEST net too, except BatchNorm's statistics, which a TRAIN-phase forward
    updates: those are copies, so that the candidates keep the stored ones)."""
    from ..net import Net

    try:
        train_net = Net(param, phase="TRAIN", backend=float_net.backend, source=model)
    except RistrettoError as exc:
        detail = str(exc).removeprefix(f"{model}: ")  # Net already names the file
        raise RistrettoError(f"{model}: the TRAIN-phase net (the search measures value ranges on it) cannot be "
                             f"built: {detail}") from None
    train_net.share_weights_from(float_net)
    if any(l.blobs and l.name not in float_net.layer_names for l in train_net.layers):
        if folded_model is not None:
            from .fold import load_folded

            load_folded(train_net, folded_model)
        else:
            train_net.load_weights(weights)
    for layer in train_net.layers:
        if layer.type == "BatchNorm" and layer.blobs:
            layer.blobs = [train_net.xp.array(b, copy=True) for b in layer.blobs]
    return train_net
