"""ristretto: Caffe-compatible simulation and search of reduced-precision CNN arithmetic.

The Python API, at the package top (each name is loaded on first use, so ``import
ristretto_cli`` itself stays light and prints nothing):

* ``benchmark(model, weights, iterations=50, ...)`` -> ``Scores``
* ``quantize(model, weights, model_quantized, trimming_mode, ...)`` -> ``QuantizeOutcome``
* ``finetune(solver, weights=None, snapshot=None, gpu=None, ...)`` -> ``TrainResult``
* ``forward(model, weights, inputs, ...)`` -> ``{blob: array}``
* ``load_net(model, weights, phase)`` -> ``Net``
* ``trim_fixed_point``, ``trim_minifloat``, ``trim_power_of_two``; ``Rounding``, ``QuantConfig``

See :mod:`ristretto_cli.api` for their documentation and
:mod:`ristretto_cli.pycaffe` (``import ristretto_cli.pycaffe as caffe``) for pycaffe's
interface. ``quantize`` is also the name of the subpackage that holds the search;
the subpackage is callable and runs :func:`ristretto_cli.api.quantize`.
"""

import importlib
import logging

__version__ = "0.1.0"

# The library reports through logging (and callbacks) and never prints: without a handler
# of the caller's, its warnings go nowhere (not to Python's last-resort stderr handler).
logging.getLogger(__name__).addHandler(logging.NullHandler())

# what the package top offers, from ristretto_cli.api, imported on first access (PEP 562)
_API = ("Net", "QuantConfig", "QuantizeOutcome", "QuantizeSettings", "Rounding", "benchmark", "finetune", "forward",
        "load_net", "trim_fixed_point", "trim_minifloat", "trim_power_of_two")

__all__ = sorted([*_API, "quantize"])


def __getattr__(name):
    if name == "quantize":  # the subpackage, callable (see its docstring)
        return importlib.import_module("ristretto_cli.quantize")
    if name in _API:
        from . import api

        value = getattr(api, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
