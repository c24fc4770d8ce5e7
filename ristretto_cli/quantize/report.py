"""What the search tells people, as data: the original's summary as (title, columns,
rows) tables, parameter memory, and every measurement as a JSON-ready dict. Drawing the
tables and writing the report is the caller's (``ristretto quantize`` does both)."""
from __future__ import annotations

import math

from .choose import CATEGORY_TITLES, SearchResult, pow2_weight_bits
from .rewrite import (CONV_TYPES, DYNAMIC_FIXED_POINT, FC_TYPES, MINIFLOAT, POWER_OF_2, WHOLE_GRAPH_PARAM_BITS,
                      WHOLE_GRAPH_TYPES, Candidate)

FLOAT_BITS = 32
MODE_TITLES = {
    DYNAMIC_FIXED_POINT: "dynamic fixed point",
    MINIFLOAT: "minifloat",
    POWER_OF_2: "integer power of 2 weights",
}


def blob_bits(candidate: Candidate | None, layer_type: str, index: int, layer_name: str | None = None) -> int:
    """Bits per element of parameter blob ``index`` (0 weights, 1 bias) of a layer (``layer_name``:
    for a candidate with per-layer widths)."""
    override = candidate.override(layer_name) if candidate is not None and layer_name is not None else None
    if override is not None and override[0] is not None and layer_type in CONV_TYPES + FC_TYPES:
        if index == 1 and candidate.bias is not None:
            return int(candidate.bias)
        return int(override[0]) if index <= 1 else FLOAT_BITS
    if candidate is None or not candidate.changes(layer_type) or index > 1:
        return FLOAT_BITS
    if layer_type == "BatchNorm":  # ours (whole graph): the statistics are used as stored
        return FLOAT_BITS
    if index == 1 and candidate.bias is not None and candidate.precision != MINIFLOAT:
        return int(candidate.bias)
    if layer_type in WHOLE_GRAPH_TYPES:  # ours: Scale factors / PReLU slopes
        if candidate.precision == MINIFLOAT:
            return 1 + candidate.exp_bits + candidate.mant_bits
        return WHOLE_GRAPH_PARAM_BITS
    if candidate.precision == DYNAMIC_FIXED_POINT:
        bw = candidate.conv_params if layer_type in CONV_TYPES else candidate.fc_params
        return FLOAT_BITS if bw is None else int(bw)  # the bias uses the weights' format
    if candidate.precision == MINIFLOAT:
        return 1 + candidate.exp_bits + candidate.mant_bits
    if candidate.precision == "integer_power_of_2_weights":
        return pow2_weight_bits(candidate.exp_min, candidate.exp_max) if index == 0 else FLOAT_BITS
    return FLOAT_BITS


def parameter_memory(net, candidate: Candidate | None) -> dict:
    """Parameter storage of ``net`` in bits, float32 and with ``candidate``'s formats.

    Arrays shared between layers count once (at their first layer).
    """
    seen: set[int] = set()
    per_layer, before, after = [], 0, 0
    for layer in net.layers:
        if not layer.blobs:
            continue
        lb = la = 0
        for k, blob in enumerate(layer.blobs):
            if id(blob) in seen:
                continue
            seen.add(id(blob))
            n = int(math.prod(blob.shape))
            lb += n * FLOAT_BITS
            la += n * blob_bits(candidate, layer.type, k, layer.name)
        per_layer.append({"layer": layer.name, "type": layer.type, "bits_before": lb, "bits_after": la})
        before += lb
        after += la
    return {"bits_before": before, "bits_after": after,
            "ratio": (after / before) if before else None, "per_layer": per_layer}


def _fmt_score(v) -> float | str:
    return "" if v is None else float(v)


def summary_tables(result: SearchResult, memory: dict | None = None,
                   per_layer: dict | None = None) -> list[tuple[str, list[str], list[list]]]:
    """(title, columns, rows) of the summary the original logs at the end of a search;
    with ``memory`` (:func:`parameter_memory`) the chosen formats' parameter memory too;
    with ``per_layer`` (the report's section of ``--search per-layer``) its table."""
    mode = result.mode
    rows: list[list] = [["baseline 32-bit float", FLOAT_BITS, float(result.baseline), ""]]
    for t in result.trials:
        score = float(t.score)
        if t.decided_early:  # the mean of the batches scored before the outcome was certain
            score = f"{score:g} (partial: {t.batches} batches)"
        rows.append([CATEGORY_TITLES.get(t.category, t.category), t.bit_width, score,
                     "yes" if t.passed else "no"])
    margin = f"{result.error_margin:g}%"
    scores = (f"Accuracy analysis of CONV and FC layers, {MODE_TITLES.get(mode, mode)} "
              f"(error margin {margin})", ["part", "bit width", "score", "within margin"], rows)
    chosen: list[list] = []
    c = result.chosen
    if mode == DYNAMIC_FIXED_POINT:
        chosen = [["CONV weights", f"{c['conv_params']} bit"], ["FC weights", f"{c['fc_params']} bit"],
                  ["layer activations", f"{c['activations']} bit"]]
    elif mode == MINIFLOAT:
        chosen = [["CONV and FC layers", f"{c['minifloat']} bit"], ["exponent bits", c["exp_bits"]],
                  ["mantissa bits", c["mant_bits"]]]
    elif mode == POWER_OF_2:
        chosen = [["weights", f"2^e, e in [{c['exp_min']}, {c['exp_max']}] ({c['weight_bits']} bit)"],
                  ["layer activations", f"{c['activations']} bit dynamic fixed point"]]
    if per_layer is not None:
        chosen.append(["score of the global configuration", _fmt_score(per_layer["global"]["score"])])
        chosen.append(["per-layer widths", "see the per-layer table"])
    chosen.append(["score of the quantized net", _fmt_score(result.final_score)])
    if memory is not None:
        chosen.append(["parameter memory", f"{memory['bits_before']:,} -> {memory['bits_after']:,} bits"])
    tables = [scores, (f"Quantized net ({MODE_TITLES.get(mode, mode)})", ["", "chosen"], chosen)]
    if per_layer is not None:
        tables.append(per_layer_table(per_layer))
    return tables


def _sensitivity_text(rows: list[dict]) -> str:
    return " ".join(f"{r['width']}:{r['score']:.4g}{'' if r['passed'] else '✗'}" for r in rows) or "-"


def per_layer_table(section: dict) -> tuple[str, list[str], list[list]]:
    """The per-layer search as a table: per layer the global and chosen widths (weights /
    activations), the scores of the widths tried alone, the objective before and after;
    then the totals of both configurations."""
    obj = section["objective"]
    figure = {"bitops": "bitops", "weight-bits": "weight_bits", "energy": "energy_pj"}[obj]
    rows = []
    for l in section["layers"]:
        g, c = l["global"], l["chosen"]
        rows.append([l["layer"], f"{g['params']} / {g['activations']}", f"{c['params']} / {c['activations']}",
                     _sensitivity_text(l["sensitivities"]["params"]),
                     _sensitivity_text(l["sensitivities"]["activations"]),
                     f"{l['objective_before']:,.0f} -> {l['objective_after']:,.0f}"])
    g, p = section["global"], section["per_layer"]
    rows.append([f"total {obj}", "", "", "", "", f"{g[figure]:,.0f} -> {p[figure]:,.0f}"])
    rows.append(["score", "", "", "", "", f"{g['score']:.6g} -> {p['score']:.6g}"])
    if section.get("start_within_margin") is False:
        taken = ", ".join(f"{r['layer']} {'weights' if r['part'] == 'params' else 'activations'} -> {r['width']}"
                          for r in section.get("repair", []))
        rows.append(["repair", "", "", "", "", f"global outside the margin; raised {taken or 'nothing'}"
                     + ("" if section.get("repaired") else "; no step up brought it within: global kept")])
    return (f"Per-layer search (objective {obj}; widths {', '.join(map(str, section['widths']))})",
            ["layer", "global w / a", "per-layer w / a", "weights alone (width:score)",
             "activations alone (width:score)", obj], rows)


def report_json(*, settings: dict, result: SearchResult, ranges, lengths, evaluations, baseline_eval,
                memory: dict, counters, wall_s: float, exp_bits: int | None, cached: bool) -> dict:
    """Every measurement of one search, JSON-ready."""
    return {
        **settings,
        "baseline": float(result.baseline),
        "baseline_batches": list(baseline_eval.batches),
        "layers": [{**r.to_json(), **(lengths[r.name].to_json() if r.name in lengths else {})} for r in ranges],
        "exp_bits": exp_bits,
        "candidates": [
            {**t.to_json(), "label": t.candidate.label()} for t in result.trials
        ],
        "evaluations": [
            {"label": e.candidate.label(), "config": e.candidate.to_json(), "score": e.score,
             "start_layer": e.start_layer, "layer_forwards": e.layer_forwards, "seconds": e.seconds,
             "batches": e.batches, "batches_scored": e.batches_scored, "decided_early": e.decided_early,
             "partial": e.decided_early, "passed": e.passed}
            for e in evaluations
        ],
        "chosen": result.chosen,
        "final": {"config": result.final.to_json() if result.final else None, "label":
                  result.final.label() if result.final else None, "score": result.final_score},
        "parameter_memory": memory,
        "layer_forwards": counters.layer_forwards,
        "original_layer_forwards": counters.original_layer_forwards,
        "candidates_scored": counters.candidates,
        "candidates_reused": counters.reused,
        "batches_scored": counters.batches_scored,
        "batches_saved": counters.batches_saved,
        "candidates_decided_early": counters.decided_early,
        "batch_cache": cached,
        "wall_s": wall_s,
    }
