"""A quantize report (the JSON of ``ristretto quantize --report``) as one self-contained
HTML page: tables and inline SVG pictures, no scripts, no external files.

Sections (each a ``<section id=...>``): ``summary`` (settings and outcome),
``scores`` (score against width per category), ``pareto`` (score against cost of
every configuration tried), ``ranges`` (observed value ranges against the chosen
formats) and ``cost`` (the chosen configuration per layer, and the float net beside it);
a report of ``--search per-layer`` adds ``per_layer`` (widths, sensitivities and cost per
layer, global against per-layer).
"""
from __future__ import annotations

import html
import json

from ..cost.energy import energy_text
from ..errors import RistrettoError
from ..quantize.choose import CATEGORY_TITLES
from . import figures

SECTIONS = ("summary", "scores", "pareto", "ranges", "cost")
REQUIRED_KEYS = ("baseline", "candidates", "layers", "chosen", "final")

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 70em; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f4f4f4; }
table.kv td { text-align: left; }
tr.chosen td { background: #fff3d6; font-weight: bold; }
tr.fail td { color: #a33; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
p.note { color: #666; font-size: .9em; }
"""


def read_report(path: str) -> dict:
    """The report dict of ``path``; one-line errors for a missing file, bad JSON or a
    JSON that is not a quantize report."""
    from ..caffe.atomic import read_bytes

    raw = read_bytes(path)
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise RistrettoError(f"{path}: not UTF-8 text; expected the JSON of 'ristretto quantize --report'") from None
    except json.JSONDecodeError as exc:
        raise RistrettoError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    check_report(data, path)
    return data


def check_report(data, where: str = "report") -> None:
    if not isinstance(data, dict):
        raise RistrettoError(f"{where}: not a quantize report (expected a JSON object, got {type(data).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise RistrettoError(f"{where}: not a quantize report (no {', '.join(repr(k) for k in missing)}); "
                             f"make one with 'ristretto quantize ... --report R.json'")


# ----------------------------------------------------------------------------- helpers

def _e(v) -> str:
    return html.escape("" if v is None else str(v))


def _num(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def table(columns: list[str], rows: list[list], classes: list[str] | None = None, kind: str = "") -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for k, r in enumerate(rows):
        cls = f' class="{classes[k]}"' if classes and classes[k] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_e(_num(v))}</td>" for v in r) + "</tr>")
    cls = f' class="{kind}"' if kind else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _section(sid: str, title: str, *parts: str) -> str:
    return f'<section id="{sid}">\n<h2>{_e(title)}</h2>\n' + "\n".join(parts) + "\n</section>"


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>"


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


# ----------------------------------------------------------------------------- sections

def _summary(data: dict, source: str | None) -> str:
    final = data.get("final") or {}
    rows = [["model", data.get("model")], ["weights", data.get("weights")],
            ["quantized model", data.get("model_quantized")], ["trimming mode", data.get("trimming_mode")],
            ["batches per candidate", data.get("iterations")], ["error margin (%)", data.get("error_margin")],
            ["score blob", data.get("score_blob")], ["float baseline", data.get("baseline")]]
    for k, v in (data.get("chosen") or {}).items():
        rows.append([f"chosen: {k}", v])
    rows += [["chosen configuration", final.get("label")], ["score of the quantized net", final.get("score")]]
    mem = data.get("parameter_memory") or {}
    if mem:
        rows.append(["parameter memory (bits)", f"{mem.get('bits_before', 0):,} -> {mem.get('bits_after', 0):,}"])
    if data.get("wall_s") is not None:
        rows.append(["search time (s)", round(float(data["wall_s"]), 2)])
    rows.append(["layer forwards (original procedure)",
                 f"{data.get('layer_forwards', 0):,} ({data.get('original_layer_forwards', 0):,})"])
    intro = _note(f"Made from {source}." if source else "")
    return _section("summary", "Summary", intro if source else "", table(["", "value"], rows, kind="kv"))


def _scores(data: dict) -> str:
    cands = data.get("candidates") or []
    rows = [["baseline 32-bit float", 32, data["baseline"], ""]]
    classes = [""]
    for c in cands:
        rows.append([CATEGORY_TITLES.get(c["category"], c["category"]), c["bit_width"], c["score"],
                     "yes" if c["passed"] else "no"])
        classes.append("" if c["passed"] else "fail")
    parts = [table(["part", "bit width", "score", "within margin"], rows, classes)]
    if cands:
        svg = figures.scores_by_width(cands, float(data["baseline"]), float(data.get("error_margin", 0.0)),
                                      CATEGORY_TITLES)
        parts.insert(0, _figure(svg, "Each category alone; the search keeps the smallest width within the "
                                     "margin."))
    else:
        parts.append(_note("No candidates were scored."))
    return _section("scores", "Score against bit width", *parts)


def _configs(data: dict) -> list[dict]:
    cost = data.get("cost") or {}
    if not cost:
        return []
    return [cost["float"]] + list(cost.get("evaluations") or [])


def _pareto(data: dict) -> str:
    configs = _configs(data)
    if not configs:
        return _section("pareto", "Score against cost", _note(
            "This report has no cost data (it was made by an older ristretto); run quantize again."))
    chosen = (data.get("final") or {}).get("label")
    pts = [(c["weight_bits"], c["score"]) for c in configs]
    front = set(figures.pareto_front(pts))
    rows, classes = [], []
    for k, c in enumerate(configs):
        rows.append([c["label"], c["score"], c["weight_bits"], c["bitops"], c["activation_bits"],
                     energy_text(c["energy_pj"]), "yes" if k in front else ""])
        classes.append("chosen" if c["label"] == chosen else "")
    svg = figures.score_against_cost(configs, chosen)
    return _section("pareto", "Score against cost", _figure(
        svg, "Every configuration the search scored; the Pareto front keeps those no other beats in both "
             "score and cost."),
        table(["configuration", "score", "weight bits", "bitops", "peak activation bits", "energy",
               "Pareto (weight bits)"], rows, classes))


def _final_configs(data: dict) -> dict[str, dict | None]:
    final = (data.get("cost") or {}).get("final") or {}
    return {l["name"]: l.get("config") for l in final.get("layers") or []}


def _ranges(data: dict) -> str:
    layers = data.get("layers") or []
    if not layers:
        return _section("ranges", "Value ranges", _note("No layer ranges in this report."))
    configs = _final_configs(data)
    rows = []
    for l in layers:
        cfg = configs.get(l["name"])
        cells = [l["name"], l.get("type")]
        for site, key in figures.SITES:
            rng = figures.format_range(cfg, site)
            cells += [l.get(key), "float32" if rng is None else f"{rng[0]:.3g} .. {rng[1]:.4g}"]
        rows.append(cells)
    svg = figures.value_ranges(layers, configs)
    parts = [_figure(svg, "Largest magnitudes observed on the TRAIN-phase net against what the chosen formats "
                          "represent.")]
    if not configs:
        parts.append(_note("This report has no per-layer formats (no cost data); bars are missing."))
    parts.append(table(["layer", "type", "max |in|", "chosen in", "max |weights|", "chosen weights",
                        "max |out|", "chosen out"], rows))
    return _section("ranges", "Value ranges against the chosen formats", *parts)


def _cost(data: dict) -> str:
    cost = data.get("cost") or {}
    final = cost.get("final")
    if not final:
        return _section("cost", "Cost of the chosen configuration", _note("This report has no cost data."))
    rows = []
    for l in final["layers"]:
        if not (l["macs"] or l["weight_bits"] or l["activation_bits"]):
            continue
        rows.append([l["name"], l["type"], l["format"], l["macs"], l["bitops"], l["accumulator_bits"],
                     l["weight_bits"], l["activation_bits"], energy_text(l["energy_pj"])])
    t = final["total"]
    rows.append(["total", "", "", t["macs"], t["bitops"], "", t["weight_bits"],
                 f"peak {t['activation_bits']:,}", energy_text(t["energy_pj"])])
    fl = cost["float"]
    compare = []
    for name, key in (("multiply-accumulates", "macs"), ("bit operations", "bitops"),
                      ("weight memory (bits)", "weight_bits"), ("peak activation memory (bits)", "activation_bits"),
                      ("energy: arithmetic", "compute_pj"), ("energy: weights from DRAM", "weight_pj"),
                      ("energy: activations in SRAM", "activation_pj"), ("energy: total", "energy_pj")):
        a, b = fl[key], t[key]
        shown = (energy_text(a), energy_text(b)) if key.endswith("_pj") else (a, b)
        compare.append([name, *shown, f"{b / a:.3g}" if a else ""])
    src = (cost.get("energy_table") or {}).get("source", "")
    batch = final.get("batch")
    return _section(
        "cost", "Cost of the chosen configuration",
        _note(f"One forward pass of batch {batch if batch else '?'}; layers without arithmetic, weights or "
              f"stored activations are left out. Energy figures: {src}."),
        table(["layer", "type", "format", "MACs", "bitops", "acc bits", "weight bits", "act. bits", "energy"], rows,
              [""] * (len(rows) - 1) + ["chosen"]),
        table(["", "float", "chosen", "ratio"], compare))


def _per_layer(data: dict) -> str:
    from ..quantize.report import per_layer_table

    sec = data["per_layer"]
    title, columns, rows = per_layer_table(sec)
    wall = sec.get("wall_s") or {}
    note = _note(f"{title}. Widths are weights / activations; a width scored alone below the margin is marked "
                 f"\u2717. {sec.get('scored', 0)} configurations scored in {wall.get('per_layer_search', 0):.1f} s "
                 f"(the global search: {wall.get('global_search', 0):.1f} s).")
    return _section("per_layer", "Per-layer search", note, table(columns, rows))


def render_html(data: dict, source: str | None = None) -> str:
    """The page for report dict ``data`` (``source``: where it was read from, shown)."""
    check_report(data, source or "report")
    title = f"ristretto quantize: {data.get('model', '')} ({data.get('trimming_mode', '')})"
    parts = [_summary(data, source), _scores(data), _pareto(data), _ranges(data), _cost(data)]
    if data.get("per_layer"):
        parts.append(_per_layer(data))
    body = "\n".join(parts)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            "<link rel=\"icon\" href=\"data:,\">\n"
            f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{_e(title)}</h1>\n{body}\n</body>\n</html>\n")
