"""`ristretto fold`: fold BatchNorm (+ Scale) into the convolution before it (our addition)."""
from __future__ import annotations

import click

from . import ui
from .options import model_option


@click.command("fold")
@model_option
@click.option("--weights", "-w", required=True, help="Trained caffemodel(s); 'a,b' for several.")
@click.option("--output", "-o", "model_out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the folded prototxt.")
@click.option("--weights-out", "weights_out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the folded caffemodel.")
@click.option("--layer", "layers", multiple=True, metavar="BN",
              help="Fold only this BatchNorm layer (repeatable); one that cannot be folded is an error.")
def fold(model, weights, model_out, weights_out, layers):
    """Fold BatchNorm and the Scale after it into the Convolution, InnerProduct or
    Deconvolution before them, exactly (float64 arithmetic), where no float output changes."""
    from ..caffe.atomic import check_output_path
    from ..quantize.fold import fold_files

    inputs = [model] + [w for w in weights.split(",") if w]
    check_output_path(model_out, inputs, "--output")
    check_output_path(weights_out, inputs + [model_out], "--weights-out")
    folded = fold_files(model, weights, model_out, weights_out, list(layers) or None)
    rows = [[f.batchnorm + (f" + {f.scale}" if f.scale else ""), f.into, f.top,
             "added" if f.added_bias else "updated"] for f in folded.folds]
    ui.table(f"folded {len(folded.folds)} BatchNorm layer(s)", ["folded", "into", "writes", "bias"], rows)
    for name, reason in folded.kept:
        ui.log(f"kept BatchNorm '{name}': {reason}")
    ui.log(f"wrote {model_out} and {weights_out}")


COMMANDS = [fold]
