"""`ristretto cost`: what a (quantized) net costs on hardware that computes in its
formats (:mod:`ristretto_cli.cost`); `ristretto report`: a quantize report as one HTML page."""
from __future__ import annotations

import click

from . import ui
from ..cost.energy import energy_text
from .options import model_option, phase_option, weights_option


def cost_tables(cost) -> list[tuple[str, list[str], list[list]]]:
    """(title, columns, rows) of a :class:`~ristretto_cli.cost.NetCost`: per layer, then the totals."""
    rows = []
    for l in cost.layers:
        rows.append([l.name, l.type, l.format, f"{l.macs:,}", f"{l.bitops:,}",
                     "" if l.accumulator_bits is None else l.accumulator_bits, f"{l.weight_bits:,}",
                     f"{l.activation_bits:,}", energy_text(l.energy_pj)])
    rows.append(["total", "", "", f"{cost.macs:,}", f"{cost.bitops:,}", "", f"{cost.weight_bits:,}",
                 f"peak {cost.peak_activation_bits:,}", energy_text(cost.energy_pj())])
    batch = f"batch {cost.batch}" if cost.batch else "batch ?"
    per_layer = (f"{cost.name or 'net'}: cost of one forward pass ({batch})",
                 ["layer", "type", "format", "MACs", "bitops", "acc bits", "weight bits", "act. bits", "energy"],
                 rows)
    per_image = (lambda v: f"{v / cost.batch:,.0f}") if cost.batch else (lambda v: "")
    totals = [
        ["multiply-accumulates", f"{cost.macs:,}", per_image(cost.macs)],
        ["bit operations", f"{cost.bitops:,}", per_image(cost.bitops)],
        ["weight memory (bits)", f"{cost.weight_bits:,}", ""],
        ["peak activation memory (bits)", f"{cost.peak_activation_bits:,}",
         f"at {cost.peak_layer}" if cost.peak_layer else ""],
        ["energy: arithmetic", energy_text(cost.energy_pj("compute")), ""],
        ["energy: weights from DRAM", energy_text(cost.energy_pj("weights")), ""],
        ["energy: activations in SRAM", energy_text(cost.energy_pj("activations")), ""],
        ["energy: total", energy_text(cost.energy_pj()),
         energy_text(cost.energy_pj() / cost.batch) + " per image" if cost.batch else ""],
    ]
    return [per_layer, ("Totals", ["", "per pass", "per image"], totals)]


@click.command("cost")
@model_option
@weights_option
@phase_option
@click.option("--energy", "energy", default=None, metavar="TABLE.yaml", type=click.Path(dir_okay=False),
              help="Energy per operation in pJ (YAML: int_mult_8: 0.2, dram_read_64: 1950, ...) over the "
                   "default 45 nm table (Horowitz, ISSCC 2014).")
@click.option("--json", "json_out", default=None, metavar="OUT|-", help="Also write the figures as JSON ('-': stdout).")
def cost(model, weights, phase, energy, json_out):
    """Per layer and in total: MACs, bit operations, accumulator width, weight and peak
    activation memory, energy of one forward pass, in each layer's format."""
    from ..caffe.atomic import check_output_path
    from ..cost import load_energy_table, net_cost
    from ..net import load_net

    if json_out and json_out != "-":
        check_output_path(json_out, [model, weights or "", energy or ""], "--json")
    table = load_energy_table(energy)
    net = load_net(model, weights, phase)
    try:
        result = net_cost(net, energy=table)
    finally:
        net.close()
    console = ui.err if json_out == "-" else ui.out
    for title, columns, rows in cost_tables(result):
        ui.table(title, columns, rows, console=console)
    ui.log(f"energy figures: {table.source}")
    if json_out:
        ui.write_json(json_out, {"model": model, "weights": weights, "phase": phase.upper(), **result.to_json()})


@click.command("report")
@click.argument("report_json", metavar="REPORT.json", type=click.Path(dir_okay=False))
@click.option("--output", "-o", required=True, metavar="OUT.html", type=click.Path(dir_okay=False),
              help="The HTML page to write (self-contained: tables and inline SVG pictures; '-': stdout).")
def report(report_json, output):
    """A quantize report (quantize --report R.json) as one self-contained HTML page."""
    from ..caffe.atomic import atomic_write_text, check_output_path
    from ..report import read_report, render_html

    check_output_path(output, [report_json], "--output")
    page = render_html(read_report(report_json), source=report_json)
    if output == "-":
        click.echo(page, nl=False)
        return
    atomic_write_text(output, page)
    ui.log(f"wrote {output}")


COMMANDS = [cost, report]
