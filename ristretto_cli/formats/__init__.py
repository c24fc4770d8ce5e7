"""Number formats (pure functions on NumPy/CuPy arrays) and the Ristretto layers.

``ristretto_cli.layers.ristretto`` registers ConvolutionRistretto, FcRistretto,
DeconvolutionRistretto and LRNRistretto; it is imported by the layer registry
(``ristretto_cli.layers.load_all``), not here, to keep this package import light.
"""
from ..backend import array_module  # re-exported: formats take arrays of either module
from .config import Precision, QuantConfig
from .trim import (fixed_point_grid, minifloat_bias, minifloat_max, minifloat_min, trim_fixed_point,
                      trim_minifloat, trim_pow2)
from .rounding import FormatError, Rounding, round_to_integer

__all__ = [
    "FormatError", "Precision", "QuantConfig", "Rounding", "array_module", "fixed_point_grid",
    "minifloat_bias", "minifloat_max", "minifloat_min", "round_to_integer", "trim_fixed_point",
    "trim_minifloat", "trim_pow2",
]
