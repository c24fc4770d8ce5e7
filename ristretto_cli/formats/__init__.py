"""Number formats: rounding and trimming as pure functions on NumPy/CuPy arrays.

What lives here: :mod:`.rounding` (rounding schemes, integer rounding),
:mod:`.trim` (dynamic fixed point, minifloat, power-of-two trims) and
:mod:`.config` (``QuantConfig``: one layer's ``quantization_param``, validated, with
its trim sites: ``trim_activation(x, INPUT | OUTPUT, out=)``, ``trim_weights``,
``trim_bias``).

What it may import: ``errors``, ``backend`` (which array module), ``proto`` (only to write a QuantizationParameter)
and ``kernels`` (the CUDA source :mod:`.gpu` launches on float32 CuPy arrays), nothing else of the package.
:mod:`.counter_rng` is a counter-based generator (Philox4x32-10) whose draws the kernels repeat. The Ristretto layers that use these formats live in
:mod:`ristretto_cli.layers.ristretto` (layers -> formats, never the other way).
"""
from ..backend import array_module  # re-exported: formats take arrays of either module
from .config import INPUT, OUTPUT, Precision, QuantConfig
from .trim import (fixed_point_grid, minifloat_bias, minifloat_max, minifloat_min, trim_fixed_point,
                      trim_minifloat, trim_pow2)
from .rounding import FormatError, Rounding, round_to_integer
from .counter_rng import CounterRNG

__all__ = [
    "CounterRNG", "FormatError", "INPUT", "OUTPUT", "Precision", "QuantConfig", "Rounding", "array_module", "fixed_point_grid",
    "minifloat_bias", "minifloat_max", "minifloat_min", "round_to_integer", "trim_fixed_point",
    "trim_minifloat", "trim_pow2",
]
