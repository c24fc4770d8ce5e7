"""`ristretto quantize`: the original's word-width search (DESIGN.md section 5)."""
from __future__ import annotations

import click

from . import ui
from ..errors import RistrettoError
from .options import gpu_option, model_option, seed_option

# --trimming_mode spellings of the first Caffe-Ristretto release (2016) -> today's
LEGACY_TRIMMING_MODES = {
    "fixed_point": "dynamic_fixed_point",
    "mini_floating_point": "minifloat",
    "power_of_2_weights": "integer_power_of_2_weights",
}


@click.command("quantize")
@model_option
@click.option("--weights", "-w", required=True, help="Trained caffemodel(s); 'a,b' for several.")
@click.option("--model-quantized", "model_quantized", required=True, type=click.Path(dir_okay=False),
              help="Where to write the quantized prototxt (Ristretto layer types + quantization_param).")
@click.option("--trimming-mode", "trimming_mode", required=True, metavar="MODE",
              help="dynamic_fixed_point, minifloat or integer_power_of_2_weights (the 2016 names "
                   "fixed_point, mini_floating_point, power_of_2_weights also work).")
@click.option("--iterations", "-i", type=int, default=50, show_default=True,
              help="Batches scored per candidate.")
@click.option("--error-margin", "error_margin", type=float, default=2.0, show_default=True,
              help="Allowed score drop in percent (a score is an accuracy in [0, 1]).")
@gpu_option
@click.option("--score-blob", "score_blob", default=None,
              help="Score this blob (element 0, mean over batches) instead of the net's first output.")
@click.option("--report", default=None, metavar="OUT.json",
              help="Write every measurement as JSON ('-': stdout).")
@click.option("--report-html", "report_html", default=None, metavar="OUT.html", type=click.Path(dir_okay=False),
              help="Also write the report as one self-contained HTML page (tables and pictures).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, tables or status line (reports are still written).")
@click.option("--widths", default=None, metavar="16,8,4,2,1",
              help="Bit widths to try per category, in order (default: the original's).")
@click.option("--exp-min", "exp_min", type=int, default=-8, show_default=True,
              help="Power-of-two mode: smallest weight exponent.")
@click.option("--exp-max", "exp_max", type=int, default=-1, show_default=True,
              help="Power-of-two mode: largest weight exponent.")
@click.option("--activation-bits", "activation_bits", type=int, default=8, show_default=True,
              help="Power-of-two mode: dynamic fixed point width of layer inputs and outputs.")
@click.option("--cache-mb", "cache_mb", type=click.IntRange(min=0), default=2048, show_default=True,
              help="Memory for batches kept between candidates; beyond it every candidate re-reads the data.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="Batches scored side by side (0: one per core on the CPU); scores do not depend on it.")
@click.option("--early-stop/--no-early-stop", "early_stop", default=True, show_default=True,
              help="Stop scoring a candidate once its batches decide it (same choices and final score).")
@seed_option
@click.option("--fold", is_flag=True,
              help="Ours: fold BatchNorm (+ Scale) into the convolution before it first (see `ristretto fold`); "
                   "the folded weights go to --folded-weights.")
@click.option("--fold-layer", "fold_layers", multiple=True, metavar="BN",
              help="Ours, with --fold: fold only this BatchNorm (repeatable); one that cannot fold is an error.")
@click.option("--folded-weights", "folded_weights", default=None, type=click.Path(dir_okay=False),
              help="Ours, with --fold: where the folded caffemodel goes (default: the quantized prototxt's path "
                   "with .caffemodel).")
@click.option("--whole-graph", "whole_graph", is_flag=True,
              help="Ours: also quantize the activations of Pooling, Eltwise, Concat, BatchNorm, Scale, ReLU and "
                   "PReLU (their Ristretto types), measured and searched with the activations.")
@click.option("--activation-range", "activation_range", type=click.Choice(["original", "signed", "unsigned"]),
              default="original", show_default=True,
              help="Ours: integer length of activations: original (ceil(log2 max), no sign bit), signed (one bit "
                   "more), unsigned (never-negative activations unsigned, every bit for magnitude; others signed).")
@click.option("--bias-bits", "bias_bits", type=int, default=None,
              help="Ours: give biases their own dynamic fixed point format this wide (fl from the bias range); "
                   "default: the weights' format, as the original.")
@click.option("--calibration", type=click.Choice(["max", "percentile", "mse"]), default="max", show_default=True,
              help="Ours: the range an activation's integer length is made for: max (the original), a percentile "
                   "of |x| (--percentile), or the least squared error of an 8-bit grid.")
@click.option("--percentile", type=float, default=99.99, show_default=True,
              help="Ours, with --calibration percentile: which percentile of |x|.")
@click.option("--stats-batches", "stats_batches", type=int, default=10, show_default=True,
              help="TRAIN-phase batches the ranges are measured on (the original: 10).")
@click.option("--stats", "stats", type=click.Choice(["after", "pre-activation"]), default="after",
              show_default=True,
              help="Ours: read each layer's values after the whole forward pass (the original: an in-place ReLU "
                   "is included) or as the layer wrote them (pre-activation).")
@click.option("--accumulator", is_flag=True,
              help="Ours: after the search, write each Convolution/InnerProduct layer's accum_bits: the smallest "
                   "integer accumulator at which nothing changes on the statistics batches (TEST net).")
@click.option("--accumulator-overflow", "accumulator_overflow", type=click.Choice(["saturate", "wrap"]),
              default="saturate", show_default=True,
              help="Ours, with --accumulator: what those accumulators do at overflow (wrap: only complete sums "
                   "must fit).")
@click.option("--search", "search", type=click.Choice(["global", "per-layer"]), default="global",
              show_default=True,
              help="Ours: global is the original's three sweeps (one width per category); per-layer then lowers "
                   "each conv/FC layer's weight and activation width one step at a time, most costly layer first, "
                   "while the score stays within the margin (dynamic fixed point).")
@click.option("--objective", type=click.Choice(["bitops", "weight-bits", "energy"]), default="bitops",
              show_default=True, help="Ours, with --search per-layer: the cost model's figure that orders the steps.")
@click.option("--per-layer-widths", "per_layer_widths", default=None, metavar="16,12,8,6,4,3,2,1",
              help="Ours, with --search per-layer: the widths a step goes through (default: --widths with the "
                   "midpoint of each two neighbours).")
def quantize(model, weights, model_quantized, trimming_mode, iterations, error_margin, gpu, score_blob, report,
             report_html, quiet, widths, exp_min, exp_max, activation_bits, cache_mb, threads, seed, fold,
             fold_layers, folded_weights, whole_graph, activation_range, bias_bits, calibration, percentile,
             stats_batches, stats, early_stop, accumulator, accumulator_overflow, search, objective,
             per_layer_widths):
    """Find the smallest bit widths that keep the score within the error margin and
    write the quantized net (then fine-tune it)."""
    from ..caffe.atomic import check_output_path
    from ..quantize.procedure import QuantizeSettings, parse_widths, quantize as run_quantize

    # before the search, not after it: outputs must be writable and must not replace an input
    check_output_path(model_quantized, [model, weights], "--model-quantized")
    trimming_mode = LEGACY_TRIMMING_MODES.get(trimming_mode, trimming_mode)
    if report:
        check_output_path(report, [model, weights, model_quantized], "--report")
    if report_html:
        if report_html == "-" or report_html == report:
            raise RistrettoError(f"--report-html {report_html}: give an HTML file of its own (not '-' or --report's)")
        check_output_path(report_html, [model, weights, model_quantized], "--report-html")
    settings = QuantizeSettings(iterations=iterations, error_margin=error_margin, gpu=gpu, score_blob=score_blob,
                                seed=seed, widths=parse_widths(widths), exp_min=exp_min, exp_max=exp_max,
                                activation_bits=activation_bits, cache_bytes=int(cache_mb) << 20,
                                threads=threads or None, fold=fold, fold_layers=list(fold_layers) or None,
                                folded_weights=folded_weights, whole_graph=whole_graph,
                                activation_range=activation_range, bias_bits=bias_bits, calibration=calibration,
                                percentile=percentile, stats_batches=stats_batches, stats=stats,
                                early_stop=early_stop, accumulator=accumulator,
                                accumulator_overflow=accumulator_overflow, search=search, objective=objective,
                                per_layer_widths=parse_widths(per_layer_widths))
    if quiet:
        outcome = run_quantize(model, weights, model_quantized, trimming_mode, settings)
    else:
        with ui.progress_callback("quantize") as on_progress:
            outcome = run_quantize(model, weights, model_quantized, trimming_mode, settings, on_progress=on_progress)
        show_outcome(outcome, console=ui.err if report == "-" else ui.out)  # stdout holds nothing but the JSON then
    if report:
        ui.write_json(report, outcome.report)
    if report_html:
        from ..caffe.atomic import atomic_write_text
        from ..report import render_html

        atomic_write_text(report_html, render_html(outcome.report, source=report if report not in (None, "-")
                                                   else None))
        if not quiet:
            ui.log(f"wrote {report_html}")


def show_outcome(outcome, console=None) -> None:
    """The original's summary tables, then one line: what was written and what it cost."""
    from ..quantize.report import summary_tables

    for title, columns, rows in summary_tables(outcome.result, outcome.memory, outcome.report.get("per_layer")):
        ui.table(title, columns, rows, console=console or ui.out)
    counters = outcome.counters
    accumulators = outcome.report.get("accumulator_bits")
    if accumulators:
        ui.table(f"Accumulators ({outcome.report.get('accumulator_overflow', 'saturate')})", ["layer", "accum_bits"],
                 [[name, bits] for name, bits in accumulators.items()], console=console or ui.out)
    folded = outcome.report.get("folded_weights")
    if folded:
        ui.log(f"folded {len(outcome.report['folds'])} BatchNorm layer(s); the quantized net's weights: {folded}")
    per = outcome.report.get("per_layer")
    if per:
        wall = per["wall_s"]
        ui.log(f"per-layer search: {per['scored']} configurations scored in {wall.get('per_layer_search', 0):.1f} s "
               f"(the global search: {wall.get('global_search', 0):.1f} s)")
    ui.log(f"wrote {outcome.model_quantized}; layer forwards {counters.layer_forwards:,} "
           f"(the original procedure: {counters.original_layer_forwards:,}); candidate batches "
           f"{counters.batches_scored:,} scored, {counters.batches_saved:,} saved by early stopping "
           f"({counters.decided_early} candidates decided early); {outcome.wall_s:.1f} s. Please fine-tune.")


COMMANDS = [quantize]
