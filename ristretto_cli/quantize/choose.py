"""The candidate order and the stopping rule of the original search (DESIGN.md 5.4 - 5.6).

Every function here takes ``evaluate(candidate) -> score`` and knows nothing of
nets, so a test can drive it with a made-up scorer.

The rule, in the original's own arithmetic: a candidate fails when
``score + error_margin / 100 < baseline``, where score and baseline are float32
means and the margin a double in percent (scores are accuracies in [0, 1]).
Within a category the widths are tried in order and the category stops at the
first failing width (that width is scored and reported, nothing after it). The
chosen width is the last one before the first failure, or 32 when the very first
width fails.

Early stopping (exact, on by default where the score is an accuracy): the score is a
float32 mean of per-batch values in [0, 1]. Float32 addition and division round
monotonically, so with some batches scored, summing in batch order with every unscored
batch at 1 gives the largest score the candidate can still reach, and with every one
at 0 the smallest, both in the very arithmetic of the full run. When the largest fails
the margin rule the candidate fails; when the smallest passes it passes; either way its
remaining batches cannot change the decision (:class:`StoppingRule`). A stopped
candidate's score is the mean of the batches it scored and says so (``batches``,
``decided_early``); the final net is always scored on every batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .rewrite import DYNAMIC_FIXED_POINT, MINIFLOAT, POWER_OF_2, Candidate, dfp, minifloat, power_of_2

#: bit widths the original tries for dynamic fixed point (16, halving while > 0)
DFP_WIDTHS = (16, 8, 4, 2, 1)
#: first minifloat width; halving while a mantissa bit is left
MINIFLOAT_START = 16
#: the width a category keeps when its first candidate already fails
FLOAT_WIDTH = 32

CATEGORY_TITLES = {
    "conv_params": "CONV weights",
    "fc_params": "FC weights",
    "activations": "layer activations",
    "minifloat": "minifloat net",
    "power_of_2": "power-of-two weights",
}

Evaluate = Callable[..., "float | Score"]


def mean_score(values) -> float:
    """Sum in float32 in batch order, then divide by the count in float32 (the original)."""
    total = np.float32(0.0)
    for v in values:
        total = np.float32(total + np.float32(v))
    return float(np.float32(total / np.float32(len(values))))


@dataclass
class Score:
    """What an evaluation returns when it may stop early: the score (the mean of the
    batches scored), the decision when the batches scored already settle it, how many
    batches were scored, and whether that is fewer than all (``decided_early``)."""

    value: float
    passed: bool | None = None
    batches: int | None = None
    decided_early: bool = False


class StoppingRule:
    """Decides a candidate from some of its ``iterations`` batch values, exactly.

    ``decide(values)``: ``values`` has one entry per batch, None where not scored yet;
    returns True (passes whatever the rest scores), False (fails whatever the rest
    scores) or None (not decided). Sound only for per-batch values in [0, 1] (an
    Accuracy layer's output), which the caller checks.
    """

    def __init__(self, baseline: float, error_margin: float, iterations: int, low: float = 0.0,
                 high: float = 1.0):
        self.baseline = float(baseline)
        self.error_margin = float(error_margin)
        self.iterations = int(iterations)
        self.low, self.high = float(low), float(high)

    def bounds(self, values) -> tuple[float, float]:
        """(smallest, largest) full-run score still possible, in the full run's arithmetic."""
        lo = mean_score([self.low if v is None else v for v in values])
        hi = mean_score([self.high if v is None else v for v in values])
        return lo, hi

    def decide(self, values) -> bool | None:
        if len(values) != self.iterations:
            raise ValueError(f"{len(values)} batch values for {self.iterations} iterations")
        if all(v is not None for v in values):
            return within_margin(mean_score(values), self.baseline, self.error_margin)
        lo, hi = self.bounds(values)
        if not within_margin(hi, self.baseline, self.error_margin):
            return False
        if within_margin(lo, self.baseline, self.error_margin):
            return True
        return None


def _scored(result) -> Score:
    return result if isinstance(result, Score) else Score(float(result))


def within_margin(score: float, baseline: float, error_margin: float) -> bool:
    """True unless ``score + error_margin/100 < baseline`` (float32 scores, double margin)."""
    return float(np.float32(score)) + float(error_margin) / 100.0 >= float(np.float32(baseline))


@dataclass
class Trial:
    """One scored candidate."""

    category: str
    bit_width: int
    candidate: Candidate
    score: float
    passed: bool
    batches: int | None = None      # batches scored (None: not reported by the scorer)
    decided_early: bool = False     # True: ``score`` is the mean of ``batches`` batches only

    def to_json(self) -> dict:
        return {"category": self.category, "bit_width": self.bit_width, "score": self.score,
                "passed": self.passed, "batches_scored": self.batches, "decided_early": self.decided_early,
                "partial": self.decided_early, "config": self.candidate.to_json()}


@dataclass
class SearchResult:
    mode: str
    baseline: float
    error_margin: float
    trials: list[Trial] = field(default_factory=list)
    chosen: dict = field(default_factory=dict)     # category -> chosen width (+ mode extras)
    final: Candidate | None = None
    final_score: float | None = None

    def trials_of(self, category: str) -> list[Trial]:
        return [t for t in self.trials if t.category == category]


def descend(category: str, widths: Sequence[int], make: Callable[[int], Candidate], evaluate: Evaluate,
            baseline: float, error_margin: float, skipped: Callable[[int], None] | None = None,
            rule: StoppingRule | None = None) -> list[Trial]:
    """Score ``make(w)`` for each width in order, stopping after the first failure.

    ``skipped(n)`` hears how many planned widths were left out (for progress bars).
    With a ``rule``, candidates are scored as ``evaluate(candidate, rule)``, which may
    stop early and return a :class:`Score` with the decision.
    """
    trials: list[Trial] = []
    for k, w in enumerate(widths):
        cand = make(w)
        res = _scored(evaluate(cand, rule) if rule is not None else evaluate(cand))
        ok = res.passed if res.passed is not None else within_margin(res.value, baseline, error_margin)
        trials.append(Trial(category, int(w), cand, float(res.value), bool(ok), res.batches, res.decided_early))
        if not ok:
            if skipped is not None and len(widths) - k - 1 > 0:
                skipped(len(widths) - k - 1)
            break
    return trials


def chosen_width(trials: Sequence[Trial], default: int = FLOAT_WIDTH) -> int:
    """The width of the last passing trial before the first failing one (``default`` if none)."""
    best = default
    for t in trials:
        if not t.passed:
            break
        best = t.bit_width
    return best


def search_dynamic_fixed_point(evaluate: Evaluate, baseline: float, error_margin: float,
                               widths: Sequence[int] = DFP_WIDTHS, skipped=None,
                               rule: StoppingRule | None = None) -> SearchResult:
    """CONV weights alone, then FC weights alone, then activations (in = out) alone;
    keep the smallest passing width of each and score the combination (in full)."""
    res = SearchResult(DYNAMIC_FIXED_POINT, float(baseline), float(error_margin))
    makers = {
        "conv_params": lambda w: dfp(conv_params=w),
        "fc_params": lambda w: dfp(fc_params=w),
        "activations": lambda w: dfp(activations=w),
    }
    for category, make in makers.items():
        trials = descend(category, widths, make, evaluate, baseline, error_margin, skipped, rule)
        res.trials += trials
        res.chosen[category] = chosen_width(trials)
    res.final = dfp(res.chosen["conv_params"], res.chosen["fc_params"], res.chosen["activations"])
    res.final_score = _scored(evaluate(res.final)).value
    return res


def minifloat_widths(exp_bits: int, start: int = MINIFLOAT_START) -> list[int]:
    """16, 8, 4, ... while at least one mantissa bit is left (bw - 1 - exp_bits > 0)."""
    out, bw = [], start
    while bw > 0 and bw - 1 - exp_bits > 0:
        out.append(bw)
        bw //= 2
    return out


def search_minifloat(evaluate: Evaluate, baseline: float, error_margin: float, exp_bits: int,
                     widths: Sequence[int] | None = None, skipped=None,
                     rule: StoppingRule | None = None) -> SearchResult:
    """One exponent width for the whole net; try total widths until one fails.

    The original writes the smallest passing width and does not score it again
    (its score is the trial's; a trial stopped early is scored again in full). When no
    width passes it keeps 32 bits, which it
    writes as mant_bits = 32 - 1 - exp_bits, more than float32 has; we write float32
    itself (exp 8, mant 23) and score that.
    """
    res = SearchResult(MINIFLOAT, float(baseline), float(error_margin))
    if widths is None:
        widths = minifloat_widths(exp_bits)
    else:
        widths = [w for w in widths if w - 1 - exp_bits > 0]
    trials = descend("minifloat", widths, lambda w: minifloat(w, exp_bits), evaluate, baseline,
                     error_margin, skipped, rule)
    res.trials += trials
    best = chosen_width(trials)
    res.chosen = {"minifloat": best, "exp_bits": exp_bits}
    if best == FLOAT_WIDTH:
        res.final = minifloat(FLOAT_WIDTH, 8)
        res.final_score = _scored(evaluate(res.final)).value
    else:
        t = next(t for t in trials if t.bit_width == best)
        res.final, res.final_score = t.candidate, t.score
        if t.decided_early:  # finish it: the same net, which the original scored once
            res.final_score = _scored(evaluate(t.candidate, counted=False)).value
    res.chosen["mant_bits"] = res.final.mant_bits
    res.chosen["exp_bits"] = res.final.exp_bits
    return res


def search_power_of_2(evaluate: Evaluate, baseline: float, error_margin: float, exp_min: int = -8,
                      exp_max: int = -1, activation_bits: int = 8) -> SearchResult:
    """Weights 2^[exp_min, exp_max] with activations in dynamic fixed point; scored once."""
    res = SearchResult(POWER_OF_2, float(baseline), float(error_margin))
    cand = power_of_2(exp_min, exp_max, activation_bits)
    scored = _scored(evaluate(cand))  # the final net: always every batch
    score = scored.value
    res.trials.append(Trial("power_of_2", pow2_weight_bits(exp_min, exp_max), cand, score,
                            within_margin(score, baseline, error_margin), scored.batches))
    res.chosen = {"exp_min": exp_min, "exp_max": exp_max, "activations": activation_bits,
                  "weight_bits": pow2_weight_bits(exp_min, exp_max)}
    res.final, res.final_score = cand, score
    return res


def pow2_weight_bits(exp_min: int, exp_max: int) -> int:
    """Sign + enough bits for the exponents exp_min..exp_max (4 for the original's -8..-1)."""
    n = exp_max - exp_min + 1
    return 1 + max(1, (n - 1).bit_length())
