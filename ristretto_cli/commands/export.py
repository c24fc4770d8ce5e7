"""export onnx / export integers / import onnx: thin commands over ristretto_cli.export."""
from __future__ import annotations

import click

from . import ui
from ..caffe.atomic import atomic_write_bytes, check_output_path
from ..errors import RistrettoError
from .options import model_option, weights_option


def _parse_shapes(specs) -> dict:
    shapes = {}
    for spec in specs:
        blob, sep, dims = spec.partition("=")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            shape = ()
        if not sep or not blob or not shape or min(shape) <= 0:
            raise RistrettoError(f"--input-shape {spec!r}: expected BLOB=N,C,H,W (positive integers)")
        shapes[blob] = shape
    return shapes


@click.group("export")
def export_group():
    """Write a Caffe net for other runtimes and for hardware: ONNX, QONNX, integers."""


@export_group.command("onnx", short_help="A Caffe net (TEST phase) as an ONNX model: float, Q/DQ or QONNX.")
@model_option
@weights_option
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="The .onnx file to write.")
@click.option("--format", "fmt", type=click.Choice(["float", "qdq", "qonnx"]), default=None,
              help="float: standard ops; qdq: QuantizeLinear/DequantizeLinear for the Ristretto layers; qonnx: "
                   "QONNX Quant nodes. Default: qdq when the net has Ristretto layers, float otherwise.")
@click.option("--opset", type=int, default=None, help="ONNX opset (default 21; 13 or later).")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="BLOB=N,C,H,W",
              help="Make this data blob a graph input of this shape without opening its database (repeatable).")
def export_onnx_cmd(model, weights, output, fmt, opset, input_shapes):
    """Export the TEST-phase net of a prototxt (+ weights) to ONNX. Data layers become graph
    inputs; loss and Accuracy layers are left out."""
    from ..export.onnx_export import export_onnx

    check_output_path(output, [model, weights or ""])
    result = export_onnx(model, weights, fmt, opset, _parse_shapes(input_shapes))
    atomic_write_bytes(output, result.to_bytes())
    for note in result.notes:
        ui.log(note)
    ins = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in result.inputs.items())
    outs = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in result.outputs.items())
    ui.log(f"wrote {output} ({result.format}, opset {result.opset}, {len(result.model.graph.node)} nodes); "
           f"inputs: {ins}; outputs: {outs}")



@export_group.command("integers", short_help="Integer weight codes, formats and shifts of every quantized layer.")
@model_option
@weights_option
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False),
              help="Folder to write weights.npz, weights.h, layers.json and README.txt into (created if missing).")
def export_integers_cmd(model, weights, output):
    """Write what a chip needs to reproduce `ristretto forward` of a quantized net: integer
    weight and bias codes, fractional lengths, input/output formats, shifts (.npz, C header)
    and a README of the arithmetic."""
    import os

    from ..export.integers import export_integers
    from ..export.onnx_export import load_for_export

    if os.path.exists(output) and not os.path.isdir(output):
        raise RistrettoError(f"{output}: cannot write (--output): it is a file, not a folder")
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise RistrettoError(f"{output}: cannot write (--output): {parent} does not exist")
    net = load_for_export(model, weights)
    files, notes = export_integers(net, source=model)
    os.makedirs(output, exist_ok=True)
    for name, data in files.items():
        atomic_write_bytes(os.path.join(output, name), data)
    for note in notes:
        ui.log(note)
    ui.log(f"wrote {', '.join(files)} to {output}")



@click.group("import")
def import_group():
    """Read nets of other formats into Caffe's."""


@import_group.command("onnx", short_help="An ONNX model (the CNN subset) as a Caffe prototxt + caffemodel.")
@click.argument("onnx_file", type=click.Path(dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="The prototxt to write.")
@click.option("--weights-out", required=True, type=click.Path(dir_okay=False), help="The caffemodel to write.")
def import_onnx_cmd(onnx_file, output, weights_out):
    """Convert an ONNX model of the CNN subset (Conv, Gemm/MatMul, pooling, LRN, BatchNormalization,
    activations, Concat/Sum/Mul/Max, Softmax, Flatten/Reshape, Split, Identity) into a Caffe net."""
    from ..caffe.atomic import read_bytes
    from ..caffe.prototxt import message_to_text
    from ..export.onnx_import import import_onnx, split_weights

    check_output_path(output, [onnx_file])
    check_output_path(weights_out, [onnx_file, output], "--weights-out")
    try:
        data = read_bytes(onnx_file)
    except OSError as exc:
        raise RistrettoError(f"{onnx_file}: cannot read: {exc.strerror or exc}") from None
    net, _ = import_onnx(data, onnx_file)
    definition, weights = split_weights(net)
    text = message_to_text(definition)
    weight_bytes = weights.SerializeToString()
    atomic_write_bytes(weights_out, weight_bytes)
    atomic_write_bytes(output, text.encode())
    ui.log(f"wrote {output} ({len(definition.layer)} layers) and {weights_out}")


COMMANDS = [export_group, import_group]
