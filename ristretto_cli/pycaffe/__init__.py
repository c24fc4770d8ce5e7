"""pycaffe, re-created on this library: ``import ristretto_cli.pycaffe as caffe``.

A script written for Caffe's Python module runs with that one line changed::

    import ristretto_cli.pycaffe as caffe

    caffe.set_mode_cpu()
    net = caffe.Net("lenet.prototxt", "lenet_iter_10000.caffemodel", caffe.TEST)
    net.blobs["data"].reshape(100, 1, 28, 28)
    net.blobs["data"].data[...] = images * 0.00390625
    out = net.forward()
    predicted = out["prob"].argmax(axis=1)

What is here, with pycaffe's names and semantics:

* :class:`Net` (``Net(model, weights, phase)`` and ``Net(model, phase, weights=...)``):
  ``blobs`` and ``params`` (OrderedDicts, Caffe's order, in-place tops once, Splits
  included), blobs with ``data`` / ``diff`` (the net's own arrays: writes reach it),
  ``shape``, ``count``, ``num`` / ``channels`` / ``height`` / ``width``,
  ``reshape(*shape)``; ``forward(blobs=, start=, end=, **inputs)``, ``backward(diffs=,
  **top_diffs)``, ``forward_all``, ``reshape()``, ``save``, ``copy_from``, ``share_with``,
  ``clear_param_diffs``, ``layers`` (``.type``, ``.blobs``, and ours: ``.quantization``),
  ``layer_dict``, ``inputs`` / ``outputs``, ``top_names`` / ``bottom_names``,
  ``_layer_names``, ``_blob_names``, ``blob_loss_weights``;
* :class:`Classifier` (pycaffe's classifier.py: resize, centre crop or oversample);
* the solvers :class:`SGDSolver`, :class:`NesterovSolver`, :class:`AdaGradSolver`,
  :class:`RMSPropSolver`, :class:`AdaDeltaSolver`, :class:`AdamSolver` and
  :func:`get_solver` (``step(n)``, ``solve()``, ``net``, ``test_nets``, ``iter``,
  ``restore``, ``snapshot``);
* ``TRAIN`` / ``TEST``, :func:`set_mode_cpu`, :func:`set_mode_gpu`, :func:`set_device`,
  :func:`set_random_seed`, :func:`layer_type_list`;
* :mod:`.io`: ``Transformer``, ``load_image``, ``resize_image``, ``oversample`` and the
  blob / datum conversions.

Ristretto layers load like any other; ``net.layers[i].quantization`` shows a layer's
formats (a :class:`ristretto_cli.formats.QuantConfig`, None for float layers).

Where pycaffe differs from this module (no Python layers, no HDF5, GPU arrays, ...),
see the README's "Python API" section.

What it may import: ``net``, ``solvers``, ``layers`` (the phases and the registry),
``caffe`` (file I/O), ``proto``, ``backend``,
``errors``. Nothing of the library imports this package but :mod:`ristretto_cli.api`.
"""
from __future__ import annotations

from . import io
from .classifier import Classifier
from .modes import layer_type_list, set_device, set_mode_cpu, set_mode_gpu, set_random_seed
from .net import TEST, TRAIN, Blob, Layer, Net
from .solver import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver, RMSPropSolver, SGDSolver,
                     Solver, get_solver)

__all__ = [
    "AdaDeltaSolver", "AdaGradSolver", "AdamSolver", "Blob", "Classifier", "Layer", "NesterovSolver", "Net",
    "RMSPropSolver", "SGDSolver", "Solver", "TEST", "TRAIN", "get_solver", "io", "layer_type_list", "set_device",
    "set_mode_cpu", "set_mode_gpu", "set_random_seed",
]
