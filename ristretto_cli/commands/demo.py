"""`ristretto demo`: the whole flow on built-in real data (scikit-learn's digits)."""
from __future__ import annotations

import click

from . import ui
from .quantize import show_outcome


@click.command("demo")
@click.option("--workdir", default="runs/demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the LMDBs, prototxts, snapshots and report.")
@click.option("--train-iters", type=click.IntRange(min=1), default=1500, show_default=True)
@click.option("--finetune-iters", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--error-margin", type=float, default=1.0, show_default=True, help="Allowed accuracy drop, percent.")
@click.option("--trimming-mode", type=click.Choice(["dynamic_fixed_point", "minifloat", "integer_power_of_2_weights"]),
              default="dynamic_fixed_point", show_default=True)
@click.option("--activation-range", type=click.Choice(["original", "signed", "unsigned"]), default="original",
              show_default=True, help="The search's activation formats (see quantize --activation-range).")
def demo(workdir, train_iters, finetune_iters, error_margin, trimming_mode, activation_range):
    """Train, quantize, fine-tune and benchmark a small net on scikit-learn's handwritten digits."""
    from ..demo import run_demo

    with ui.progress_reports() as report:
        r = run_demo(workdir, train_iters, finetune_iters, error_margin, trimming_mode, log=ui.log,
                     on_progress=report, on_quantized=show_outcome, activation_range=activation_range)
    ui.table("demo: accuracy on 450 held-out digits", ["net", "accuracy"], [
        ["float", r.float_accuracy],
        [f"quantized ({trimming_mode})", r.quantized_accuracy],
        ["quantized + fine-tuned", r.finetuned_accuracy],
    ])
    ui.out.print(f"chosen: {r.chosen}")
    ui.out.print(f"quantized model: {r.quantized_model}\nfine-tuned weights: {r.finetuned_weights}")


COMMANDS = [demo]
