"""The `quantize` procedure (DESIGN.md section 5): observe, choose, rewrite.

:func:`quantize` reaches the original's choices with the original's arithmetic
(same candidates in the same order, same stopping rule, same fields in the
written prototxt) but scores candidates on cached batches and starts each forward
at the first layer the candidate changes (see :mod:`ristretto_cli.quantize.runner`).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

from ..errors import RistrettoError
from . import choose, observe
from .choose import DFP_WIDTHS, SearchResult
from .observe import STAT_BATCHES
from .report import parameter_memory, print_summary, report_json
from .rewrite import (DYNAMIC_FIXED_POINT, MINIFLOAT, MODES, POWER_OF_2, changed_layers, dfp,
                               minifloat, power_of_2, ristretto_layers, rewrite_net)
from ..backend import one_blas_thread
from .runner import CandidateRunner

DEFAULT_ITERATIONS = 50      # the original's --iterations
DEFAULT_ERROR_MARGIN = 2.0   # the original's --error_margin, in percent
DEFAULT_CACHE_BYTES = 2 << 30
MAX_BITS = 32


@dataclass
class QuantizeOutcome:
    result: SearchResult
    report: dict
    model_quantized: str


# ----------------------------------------------------------------------------- checks

def check_settings(trimming_mode: str, iterations: int, error_margin: float, widths, exp_min: int, exp_max: int,
                   activation_bits: int) -> None:
    """One-line errors for settings the search cannot use."""
    if trimming_mode not in MODES:
        raise RistrettoError(f"unknown trimming mode '{trimming_mode}'; use {', '.join(MODES)}")
    if int(iterations) < 1:
        raise RistrettoError(f"--iterations must be at least 1, got {iterations}")
    if not math.isfinite(error_margin) or error_margin < 0:
        raise RistrettoError(f"--error_margin must be a finite percentage >= 0, got {error_margin}")
    for w in list(widths or []) + [activation_bits]:
        if not isinstance(w, int) or not 1 <= w <= MAX_BITS:
            raise RistrettoError(f"bit widths must be integers in 1..{MAX_BITS}, got {w}")
    if widths is not None and len(widths) == 0:
        raise RistrettoError("--widths needs at least one bit width")
    if exp_min > exp_max:
        raise RistrettoError(f"--exp_min ({exp_min}) must not exceed --exp_max ({exp_max})")
    for name, v in (("--exp_min", exp_min), ("--exp_max", exp_max)):
        if not -149 <= v <= 127:
            raise RistrettoError(f"{name} must be a power of two float32 can hold (-149..127), got {v}")


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


def _check_output_path(model: str, model_quantized: str) -> None:
    if not model_quantized:
        raise RistrettoError("--model_quantized is required")
    if os.path.abspath(model_quantized) == os.path.abspath(model) or (
            os.path.exists(model_quantized) and os.path.samefile(model, model_quantized)):
        raise RistrettoError(f"{model_quantized}: would overwrite the input model; choose another path")
    folder = os.path.dirname(os.path.abspath(model_quantized))
    if not os.path.isdir(folder):
        raise RistrettoError(f"{model_quantized}: cannot write: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise RistrettoError(f"{model_quantized}: cannot write into folder {folder}")


def _start_layers(param, mode: str) -> list[str]:
    """The first layer each kind of candidate rewrites (where snapshots are kept)."""
    if mode == DYNAMIC_FIXED_POINT:
        probes = [dfp(conv_params=8), dfp(fc_params=8), dfp(activations=8)]
    elif mode == MINIFLOAT:
        probes = [minifloat(16, 4)]
    else:
        probes = [power_of_2()]
    names = []
    for cand in probes:
        names += changed_layers(param, cand)
    return names


# ----------------------------------------------------------------------------- the procedure

def quantize(model: str, weights: str | None, model_quantized: str, trimming_mode: str,
             iterations: int = DEFAULT_ITERATIONS, error_margin: float = DEFAULT_ERROR_MARGIN,
             gpu: int | None = None, score_blob: str | None = None, report: str | None = None,
             seed: int | None = None, widths=None, exp_min: int = -8, exp_max: int = -1,
             activation_bits: int = 8, cache_bytes: int = DEFAULT_CACHE_BYTES, show: bool = True,
             backend=None, threads: int | None = None) -> QuantizeOutcome:
    """Search word widths for ``model`` + ``weights`` and write ``model_quantized``.

    ``widths`` replaces the widths tried per category (dynamic fixed point:
    16, 8, 4, 2, 1; minifloat: 16, 8, ... while a mantissa bit is left);
    ``exp_min`` / ``exp_max`` / ``activation_bits`` set the power-of-two mode.
    The defaults are the original's. ``show`` prints progress and the summary.
    ``threads`` scores batches in parallel (None: one per core on the CPU); the
    scores do not depend on it.
    """
    from ..commands import ui
    from ..backend import get_backend
    from ..caffe.prototxt import read_net, write_text
    from ..net import Net

    t_start = time.perf_counter()
    check_settings(trimming_mode, iterations, error_margin, widths, exp_min, exp_max, activation_bits)
    _check_output_path(model, model_quantized)
    if not weights:
        raise RistrettoError("--weights is required: the search scores the trained net")
    param = read_net(model)
    already = ristretto_layers(param)
    if already:
        name, typ = already[0]
        raise RistrettoError(f"{model}: layer '{name}' is already a {typ} layer; quantize the float model")
    backend = backend or get_backend(gpu, seed)
    float_net = Net(param, phase="TEST", backend=backend, source=model)
    nets = [float_net]
    try:  # data layers hold their LMDB open; close them whatever happens
        float_net.load_weights(weights)
        score_blob = resolve_score_blob(float_net, score_blob)
        iterations = int(iterations)
        n_widths = len(widths) if widths else None
        planned = {DYNAMIC_FIXED_POINT: 3 * (n_widths or len(DFP_WIDTHS)) + 1,
                   MINIFLOAT: n_widths or len(choose.minifloat_widths(observe.MIN_EXP_BITS)),
                   POWER_OF_2: 1}[trimming_mode]
        total = iterations + STAT_BATCHES + planned * iterations
        with (ui.progress("quantize", total) if show else _no_progress()) as advance:
            runner = CandidateRunner(param, float_net, iterations, score_blob, cache_bytes=cache_bytes,
                                     on_batch=lambda info: advance(1, info), workers=threads)
            baseline = runner.run_baseline(_start_layers(param, trimming_mode))
            float_net.close()  # before the TRAIN net opens its data (an LMDB may serve both phases)
            train_net = _train_net(param, model, weights, float_net)
            nets.append(train_net)
            with one_blas_thread():  # like the scoring passes: maxima independent of the core count
                ranges = observe.observe_ranges(train_net, STAT_BATCHES,
                                                on_batch=lambda b: advance(1, "statistics (TRAIN)"))
            runner.count_stats(train_net, STAT_BATCHES)
            train_net.close()
            lengths = observe.lengths_by_layer(ranges)
            runner.lengths = lengths

            def skipped(n):
                advance(n * iterations, "")

            exp_bits = None
            if trimming_mode == DYNAMIC_FIXED_POINT:
                result = choose.search_dynamic_fixed_point(runner.evaluate, baseline, error_margin,
                                                           widths or DFP_WIDTHS, skipped)
            elif trimming_mode == MINIFLOAT:
                exp_bits = observe.minifloat_exp_bits(ranges)
                for w in widths or ():
                    if w - 1 - exp_bits > 23:
                        raise RistrettoError(f"--widths: a {w}-bit minifloat with {exp_bits} exponent bits needs "
                                             f"{w - 1 - exp_bits} mantissa bits; float32 has 23")
                result = choose.search_minifloat(runner.evaluate, baseline, error_margin, exp_bits, widths,
                                                 skipped)
            else:
                result = choose.search_power_of_2(runner.evaluate, baseline, error_margin, exp_min, exp_max,
                                                  activation_bits)
    finally:
        for net in nets:
            net.close()

    quantized = rewrite_net(param, result.final, lengths)
    write_text(model_quantized, quantized)
    memory = parameter_memory(float_net, result.final)
    wall = time.perf_counter() - t_start
    settings = {"model": model, "weights": weights, "model_quantized": model_quantized,
                "trimming_mode": trimming_mode, "iterations": iterations, "error_margin": float(error_margin),
                "score_blob": score_blob, "statistics_batches": STAT_BATCHES, "backend": repr(backend),
                "threads": runner.workers}
    data = report_json(settings=settings, result=result, ranges=ranges, lengths=lengths,
                       evaluations=runner.evaluations, baseline_eval=runner.baseline_evaluation, memory=memory,
                       counters=runner.counters, wall_s=wall, exp_bits=exp_bits, cached=runner.cached)
    if show:
        print_summary(result, memory, console=ui.err if report == "-" else ui.out)
        ui.log(f"wrote {model_quantized}; layer forwards {runner.counters.layer_forwards:,} "
               f"(the original procedure: {runner.counters.original_layer_forwards:,}); {wall:.1f} s. "
               f"Please fine-tune.")
    if report:
        ui.write_json(report, data)
    return QuantizeOutcome(result, data, model_quantized)


def _train_net(param, model, weights, float_net):
    """The TRAIN-phase float net with the same weights (shared arrays where the layer
    exists in the TEST net too)."""
    from ..net import Net

    try:
        train_net = Net(param, phase="TRAIN", backend=float_net.backend, source=model)
    except RistrettoError as exc:
        detail = str(exc).removeprefix(f"{model}: ")  # Net already names the file
        raise RistrettoError(f"{model}: the TRAIN-phase net (the search measures value ranges on it) cannot be "
                             f"built: {detail}") from None
    train_net.share_weights_from(float_net)
    if any(l.blobs and l.name not in float_net.layer_names for l in train_net.layers):
        train_net.load_weights(weights)
    return train_net


class _no_progress:
    def __enter__(self):
        return lambda n=1, info=None: None

    def __exit__(self, *exc):
        return False
