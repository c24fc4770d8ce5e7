"""The hardware cost model: what a net costs in the formats of its layers.

* :mod:`.model`  - per layer and in total: multiply-accumulates, bit operations,
  accumulator width, weight memory, peak activation memory, energy (the counting
  rules are in its docstring);
* :mod:`.energy` - energy per operation: Horowitz (ISSCC 2014) 45 nm figures,
  interpolated per bit width, a user's YAML table on top.

It reads a built net's structure and shapes and never runs it; it prints nothing
(``ristretto cost`` draws the tables).

What it may import: ``formats`` (QuantConfig), ``layers`` (the registry: which types
have a ``quantization_param``), ``caffe`` (reading the YAML file), ``errors``; never
``net`` (a Net is passed in), ``quantize`` or ``commands``.
"""
from .energy import EnergyTable, load_energy_table, parse_energy_table
from .model import LayerCost, LayerFormat, NetCost, formats_from_param, formats_of, layer_format, net_cost

__all__ = ["EnergyTable", "LayerCost", "LayerFormat", "NetCost", "formats_from_param", "formats_of",
           "layer_format", "load_energy_table", "net_cost", "parse_energy_table"]
