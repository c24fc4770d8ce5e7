"""The pieces of the `quantize` search (DESIGN.md section 5), one concern per module:

* :mod:`.observe` - value ranges of a float net and the integer lengths / exponent
  bits derived from them (5.2, 5.3, 5.5),
* :mod:`.choose`  - the candidate order and the stopping rule, against any scorer
  (5.4 - 5.6),
* :mod:`.per_layer` - ours, ``--search per-layer``: sensitivities and a greedy narrowing of
  each layer's widths from the original's result, against any scorer and cost,
* :mod:`.rewrite` - a candidate as a NetParameter with Ristretto layer types and
  ``quantization_param`` fields, exactly the ones the original sets,
* :mod:`.runner`  - scores candidates on cached batches, starting each forward at
  the first layer the candidate changes,
* :mod:`.report`  - summary tables (as data), parameter memory, the JSON report dict,
* :mod:`.costing` - the hardware cost (:mod:`ristretto_cli.cost`) of every configuration
  tried, for the report, and the per-layer search's objective.

:mod:`.procedure` puts them together: plan -> observe -> search -> write, settings in
one :class:`~.procedure.QuantizeSettings`; it prints nothing (``ristretto quantize``
draws the progress bar and the summary).

The package is callable: ``ristretto_cli.quantize(model, weights, model_quantized,
trimming_mode, **options)`` runs :func:`.procedure.quantize` (the Python API's
``quantize``, under the name the package top gives it; a module attribute of that name
would be replaced by this subpackage whenever it is imported).

What it may import: ``net``, ``layers`` (the Ristretto layers' weight freezing),
``formats``, ``caffe``, ``cost``, ``proto``, ``backend``, ``progress``, ``errors``; never
``commands`` or ``solvers``.
"""

import sys as _sys
import types as _types


class _CallablePackage(_types.ModuleType):
    """This package, callable as the Python API's ``quantize`` function."""

    def __call__(self, *args, **kwargs):
        from .procedure import quantize

        return quantize(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallablePackage
