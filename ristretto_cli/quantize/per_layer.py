"""The per-layer search (ours, ``quantize --search per-layer``): from the original's
result, lower one layer's weight or activation width at a time while the score stays
within the margin. Policy only: like :mod:`.choose`, it knows no nets; it takes
``evaluate(candidate) -> score`` and ``layer_costs(candidate) -> {layer: cost}`` (the
objective of the cost model, per layer), so a test can drive it with made-up ones.

The algorithm, from the global (three-sweep) result ``G``:

1. **Widths.** Each layer has a weight width and an activation width (its ``bw_layer_in``
   = ``bw_layer_out``), both starting at ``G``'s. A *step* lowers one of them to the
   next smaller width of the ladder (:func:`ladder`: the search's widths with the
   midpoint between each two neighbours, 16, 12, 8, 6, 4, 3, 2, 1 by default); a *step up*
   raises one to the next larger width of the ladder, never above ``max_width`` (the global
   search's largest width; a part at 32, float, is never raised).
2. **Repair** (only when ``G`` itself is outside the margin: the original never scores its
   combination against it). Repeat: score every step up from the current configuration
   (each configuration once), take the one with the best score (ties: the lower objective,
   then file order), until the configuration is within the margin. When nothing can be
   raised any more and it is still outside, the search stops there and returns ``G``
   (``start_within_margin`` False, ``repaired`` False). The repaired configuration ``R``
   is the descent's base; when ``G`` is within the margin, ``R`` is ``G``.
3. **Sensitivities** (each measured once). A layer's part at a width *alone*: that part of
   that layer lowered from ``R``, nothing else. The first step of every layer and part is
   scored alone before the greedy starts; a lower width is scored alone the first time the
   greedy wants to step to it (so no more are scored than a descent of each part until its
   first failure, and often fewer).
4. **Greedy.** Repeat: list the steps from the current configuration whose layer and part
   have not failed before. Order them: steps that lower the objective first, then the most
   costly layer first (its objective in the current configuration), then the larger
   saving, then the better score alone, then file order. Take them in that order: a step
   whose width fails alone is dropped for good without being tried in combination; else
   the current configuration with the step is scored, and the first one within the margin
   is taken and the list is made again; a step that fails is dropped for good (the other
   layers only get narrower, so it would fail again). Stop when no step fits. Any part
   may be lowered, a repaired one too (below its width in ``G`` as well).

No configuration is scored twice (the sensitivity of a single step from ``R`` is
also the greedy's first score of it; a configuration the repair scored is not scored again).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

from .choose import DFP_WIDTHS, within_margin
from .rewrite import DYNAMIC_FIXED_POINT, Candidate

PARAMS, ACTIVATIONS = "params", "activations"
PARTS = (PARAMS, ACTIVATIONS)
OBJECTIVES = ("bitops", "weight-bits", "energy")
DEFAULT_OBJECTIVE = "bitops"
SEARCHES = ("global", "per-layer")

LayerCosts = Callable[[Candidate], dict]


def ladder(widths: Sequence[int] = DFP_WIDTHS) -> list[int]:
    """The widths a per-layer step goes through: ``widths`` with the (integer) midpoint of
    each two neighbours inserted, largest first (16, 8, 4, 2, 1 -> 16, 12, 8, 6, 4, 3, 2, 1)."""
    ws = sorted({int(w) for w in widths}, reverse=True)
    out = set(ws)
    for a, b in zip(ws, ws[1:]):
        out.add((a + b) // 2)
    return sorted(out, reverse=True)


def lower(width: int, widths: Sequence[int]) -> int | None:
    """The next width of ``widths`` below ``width`` (None: none is smaller)."""
    below = [w for w in widths if w < width]
    return max(below) if below else None


def higher(width: int, widths: Sequence[int], max_width: int | None = None) -> int | None:
    """The next width of ``widths`` above ``width``, not above ``max_width`` (default: the
    largest of ``widths``); None: there is none."""
    top = max(widths) if max_width is None else int(max_width)
    above = [w for w in widths if width < w <= top]
    return min(above) if above else None


@dataclass
class LayerSpec:
    """A layer the search may narrow, in file order: its name and its widths in ``G``."""

    name: str
    params: int
    activations: int


@dataclass
class Step:
    """One scored configuration of the per-layer search."""

    phase: str                # "repair", "sensitivity" or "greedy"
    layer: str
    part: str                 # "params" or "activations"
    width: int
    candidate: Candidate
    score: float
    passed: bool

    def to_json(self) -> dict:
        return {"phase": self.phase, "layer": self.layer, "part": self.part, "width": self.width,
                "score": self.score, "passed": self.passed, "label": self.candidate.label()}


@dataclass
class PerLayerResult:
    start: Candidate                       # the global result G
    start_score: float
    final: Candidate
    final_score: float
    widths: list[int]                      # the ladder
    objective: str
    #: layer -> part -> [(width, score, passed)] of the widths scored alone, largest first
    sensitivities: dict = field(default_factory=dict)
    floors: dict = field(default_factory=dict)       # layer -> part -> lowest width that passed alone (or G's)
    steps: list[Step] = field(default_factory=list)   # every scored configuration, in order
    accepted: list[Step] = field(default_factory=list)  # the greedy's steps taken, in order
    chosen: dict = field(default_factory=dict)       # layer -> {"params": w, "activations": w}
    start_within_margin: bool = True                 # G within the margin (else the repair ran)
    repair: list[Step] = field(default_factory=list)  # the repair's steps up taken, in order
    repaired: bool = True            # False: G was outside and no step up brought it within (final is G)
    base: Candidate | None = None    # the descent's base R: G, or G repaired
    base_score: float | None = None


def with_widths(start: Candidate, config: dict[str, list[int]], order: Sequence[str]) -> Candidate:
    """``start`` with every layer of ``order`` at its ``config`` widths [params, activations]."""
    return replace(start, layers=tuple((name, config[name][0], config[name][1]) for name in order))


def search_per_layer(evaluate: Callable[[Candidate], float], layer_costs: LayerCosts, start: Candidate,
                     start_score: float, layers: Sequence[LayerSpec], baseline: float, error_margin: float,
                     widths: Sequence[int] | None = None, objective: str = DEFAULT_OBJECTIVE,
                     on_base: Callable[[Candidate], None] | None = None,
                     max_width: int | None = None) -> PerLayerResult:
    """The per-layer search from ``start`` (the global result, scored ``start_score``); see the
    module docstring. ``widths``: the ladder, any order (default: :func:`ladder` of the
    original's widths). ``max_width``: the repair raises no part above it (default: the
    largest of ``widths``). ``on_base(candidate)`` hears which configuration the next
    candidates are made from (``start``, each repair step taken, then each accepted step), so
    that the scorer can reuse what they share."""
    if start.precision != DYNAMIC_FIXED_POINT:
        raise ValueError("the per-layer search is dynamic fixed point only")
    widths = sorted({int(w) for w in widths}, reverse=True) if widths else ladder(DFP_WIDTHS)
    order = [l.name for l in layers]
    base = {l.name: [int(l.params), int(l.activations)] for l in layers}
    start_cfg = with_widths(start, base, order)
    res = PerLayerResult(start_cfg, float(start_score), start_cfg, float(start_score), widths, objective)
    scores: dict[Candidate, float] = {start_cfg: float(start_score)}
    on_base = on_base or (lambda c: None)
    index = {n: i for i, n in enumerate(order)}

    def score(cand: Candidate) -> float:
        if cand not in scores:
            scores[cand] = float(evaluate(cand))
        return scores[cand]

    def moved(cfg: dict, name: str, part: str, width: int) -> Candidate:
        new = {k: list(v) for k, v in cfg.items()}
        new[name][PARTS.index(part)] = width
        return with_widths(start, new, order)

    def sensitivity(name: str, part: str, w: int) -> bool:
        """Score ``name``'s ``part`` at width ``w`` alone from R (once); does it pass?"""
        if w not in res.sensitivities[name][part]:
            cand = moved(base, name, part, w)
            known = cand in scores
            s = score(cand)
            ok = within_margin(s, baseline, error_margin)
            res.sensitivities[name][part][w] = (s, ok)
            if not known:
                res.steps.append(Step("sensitivity", name, part, w, cand, s, ok))
        return res.sensitivities[name][part][w][1]

    def total_cost(cand: Candidate) -> float:
        return float(sum(layer_costs(cand).values()))

    # 2. repair: while outside the margin, take the best-scoring step up
    on_base(start_cfg)
    res.start_within_margin = within_margin(start_score, baseline, error_margin)
    current, current_score = start_cfg, float(start_score)
    while not within_margin(current_score, baseline, error_margin):
        options = []
        for name in order:
            for p, part in enumerate(PARTS):
                w = higher(base[name][p], widths, max_width)
                if w is None:
                    continue
                cand = moved(base, name, part, w)
                known = cand in scores
                s = score(cand)
                ok = within_margin(s, baseline, error_margin)
                if not known:
                    res.steps.append(Step("repair", name, part, w, cand, s, ok))
                options.append(((-s, total_cost(cand), index[name], p), Step("repair", name, part, w, cand, s, ok)))
        if not options:   # nothing can be raised: G stays, as the original wrote it
            res.repaired = False
            break
        step = min(options, key=lambda o: o[0])[1]
        res.repair.append(step)
        base[step.layer][PARTS.index(step.part)] = step.width
        current, current_score = step.candidate, step.score
        on_base(current)
    if not res.repaired:
        res.base, res.base_score = start_cfg, float(start_score)
        res.chosen = {n: {PARAMS: b.params, ACTIVATIONS: b.activations} for n, b in zip(order, layers)}
        for name in order:
            res.sensitivities[name] = {part: [] for part in PARTS}
            res.floors[name] = {PARAMS: res.chosen[name][PARAMS], ACTIVATIONS: res.chosen[name][ACTIVATIONS]}
        return res
    res.base, res.base_score = current, current_score

    # 3. sensitivities: the first step of each layer and part alone from R (the rest when needed)
    for name in order:
        res.sensitivities[name] = {part: {} for part in PARTS}
        for p, part in enumerate(PARTS):
            w = lower(base[name][p], widths)
            if w is not None:
                sensitivity(name, part, w)

    # 4. greedy: one step at a time, most costly layer first, while a step fits
    cfg = {k: list(v) for k, v in base.items()}
    failed: set[tuple[str, str]] = set()

    def alone(name: str, part: str, w: int) -> float:
        """The score alone at ``w``, else at the nearest width above it measured (for the order)."""
        rows = res.sensitivities[name][part]
        above = [x for x in rows if x >= w]
        return rows[min(above)][0] if above else 0.0

    while True:
        costs = layer_costs(current)
        total = sum(costs.values())
        options = []
        for name in order:
            for p, part in enumerate(PARTS):
                w = lower(cfg[name][p], widths)
                if (name, part) in failed or w is None:
                    continue
                cand = moved(cfg, name, part, w)
                saving = total - sum(layer_costs(cand).values())
                key = (saving <= 0, -costs.get(name, 0), -saving, -alone(name, part, w), index[name], p)
                options.append((key, name, part, w, cand))
        options.sort(key=lambda o: o[0])
        for _, name, part, w, cand in options:
            if not sensitivity(name, part, w):   # fails alone: never tried in combination
                failed.add((name, part))
                continue
            known = cand in scores
            s = score(cand)
            ok = within_margin(s, baseline, error_margin)
            step = Step("greedy", name, part, w, cand, s, ok)
            if not known:
                res.steps.append(step)
            if ok:
                res.accepted.append(step)
                cfg[name][PARTS.index(part)] = w
                current, current_score = cand, s
                on_base(current)
                break
            failed.add((name, part))
        else:
            break
    res.final, res.final_score = current, current_score
    res.chosen = {n: {PARAMS: cfg[n][0], ACTIVATIONS: cfg[n][1]} for n in order}
    for name in order:  # widths scored alone, in ladder order, and the lowest that passed
        rows = res.sensitivities[name]
        res.sensitivities[name] = {part: [(w, *rows[part][w]) for w in sorted(rows[part], reverse=True)]
                                   for part in PARTS}
        res.floors[name] = {part: min([w for w, _, ok in res.sensitivities[name][part] if ok]
                                      + [base[name][p]]) for p, part in enumerate(PARTS)}
    return res
