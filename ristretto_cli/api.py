"""The Python API: what the ``ristretto`` commands do, as functions that return data.

Everything here is also reachable from the package top (``ristretto_cli.benchmark``,
``ristretto_cli.trim_fixed_point``, ...), loaded on first use so that ``import
ristretto_cli`` stays light. Nothing here prints: long calls take
``on_progress(done, total, info)`` (see :mod:`ristretto_cli.progress`) and the library
logs through the ``ristretto_cli`` logger, silent unless you configure logging.

Functions (keyword arguments are the commands' options):

* :func:`benchmark` - score a net on its data layer, like ``ristretto benchmark``;
  returns a :class:`~ristretto_cli.net.scoring.Scores`.
* :func:`quantize` - the word-width search, like ``ristretto quantize``; writes the
  quantized prototxt and returns a :class:`~ristretto_cli.quantize.procedure.QuantizeOutcome`.
* :func:`finetune` - train with a Caffe solver, like ``ristretto finetune``; returns a
  :class:`~ristretto_cli.solvers.solver.TrainResult`.
* :func:`forward` - one forward pass on arrays, like ``ristretto forward``; returns every
  blob as a NumPy array.
* :func:`load_net` and :class:`Net` - a net to drive by hand (``forward``, ``backward``,
  ``blobs``, ``layers``, ``load_weights``, ``to_proto``). For pycaffe's interface, use
  :mod:`ristretto_cli.pycaffe`.
* the number formats :func:`trim_fixed_point`, :func:`trim_minifloat`,
  :func:`trim_power_of_two`, with :class:`Rounding` and :class:`QuantConfig`.

Errors in the input (a file, a layer, a shape) raise
:class:`~ristretto_cli.errors.RistrettoError` with the one-line message the commands show.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np

from .errors import RistrettoError
from .formats.config import QuantConfig
from .formats.rounding import Rounding
from .formats.trim import trim_fixed_point, trim_minifloat, trim_pow2
from .net.loading import load_net
from .net.net import Net
from .progress import OnProgress, Steps
from .quantize.procedure import QuantizeOutcome, QuantizeSettings, quantize

__all__ = [
    "Net", "QuantConfig", "QuantizeOutcome", "QuantizeSettings", "Rounding", "benchmark", "finetune", "forward",
    "load_net", "quantize", "trim_fixed_point", "trim_minifloat", "trim_pow2", "trim_power_of_two",
]

trim_power_of_two = trim_pow2
"""Integer power of two: ``sign(x) * 2^clamp(R(log2|x|), exp_min, exp_max)``, ``sign(0) = +1``
(the same function as :func:`ristretto_cli.formats.trim_pow2`; see its documentation)."""


def benchmark(model, weights=None, iterations: int = 50, *, gpu: int | None = None, seed: int | None = None,
              on_progress: OnProgress | None = None):
    """Score ``model`` (a prototxt with a data layer) over ``iterations`` batches in the TEST
    phase, as ``ristretto benchmark`` / ``caffe test``.

    ``weights``: a caffemodel (or "a,b", or a list) copied by layer name; ``gpu``: a CUDA
    device id (needs CuPy), None for the CPU; ``seed``: the random generator's seed;
    ``on_progress(done, total, info)``: called after every batch.

    Returns a :class:`~ristretto_cli.net.scoring.Scores`: ``means`` ({output: mean over
    batches}, an output with several elements as ``"blob[i]"``), ``batches`` (the values
    of every batch), ``loss_weights`` and ``loss``; ``to_json()`` gives what
    ``--json`` writes.

    Example::

        scores = ristretto_cli.benchmark("lenet_train_test.prototxt", "lenet_iter_10000.caffemodel",
                                         iterations=100)
        print(scores.means["accuracy"])
    """
    from .backend import get_backend
    from .net.scoring import score

    if int(iterations) < 1:
        raise RistrettoError(f"iterations must be at least 1, got {iterations}")
    net = load_net(os.fspath(model), _weights(weights), "TEST", get_backend(gpu, seed))
    try:
        with Steps(on_progress, int(iterations)) as steps:
            def on_batch(i, values):
                steps.advance(1, info=" ".join(f"{k}={v:.4g}" for k, v in list(values.items())[:3]))

            return score(net, int(iterations), on_batch)
    finally:
        net.close()


def forward(model, weights=None, inputs: dict | None = None, *, phase: str = "TEST", gpu: int | None = None,
            seed: int | None = None) -> dict:
    """One forward pass of ``model`` on ``inputs`` ({input blob: array}), as ``ristretto
    forward``; returns every blob as it stands at the end ({name: NumPy array}, the
    arrays the command writes to its .npz).

    An input of another shape than the prototxt declares (another batch size, image
    size) reshapes the net first. Inputs left out keep their Input layer's zeros; a
    net with data layers reads its next batch.

    Example::

        blobs = ristretto_cli.forward("lenet.prototxt", "lenet_iter_10000.caffemodel",
                                      {"data": images.reshape(-1, 1, 28, 28) * 0.00390625})
        predicted = blobs["prob"].argmax(axis=1)
    """
    from .backend import get_backend

    backend = get_backend(gpu, seed)
    net = load_net(os.fspath(model), _weights(weights), phase, backend)
    try:
        feeds = {name: np.asarray(value, dtype=np.float32) for name, value in (inputs or {}).items()}
        if feeds:  # names input blobs, feeds whole layers; other shapes reshape the net (Net::Reshape)
            net.reshape({name: a.shape for name, a in feeds.items()})
        net.forward({k: backend.asarray(v) for k, v in feeds.items()})
        return {name: backend.to_numpy(arr) for name, arr in net.blobs.items()}
    finally:
        net.close()


def finetune(solver, weights=None, snapshot=None, gpu: int | None = None, *, trim_activations: bool = False,
             snapshot_prefix: str | None = None, level: int | None = None, stages=(),
             sigint_effect: str = "stop", sighup_effect: str = "snapshot", on_progress: OnProgress | None = None,
             log: Callable[[str], None] | None = None):
    """Train with the Caffe solver file ``solver``, as ``ristretto finetune`` / ``caffe train``.

    ``weights``: caffemodel(s) to start from (copied by layer name), or ``snapshot``: a
    .solverstate to resume (not both; with neither, the solver's ``weights:`` entries or
    the fillers). ``gpu``: CUDA device id, None for the CPU. ``trim_activations``: also
    trim the activations of Ristretto layers while training (quantization-aware; the
    original trims them only in TEST). ``snapshot_prefix``, ``level``, ``stages``: as the
    command's options. ``sigint_effect`` / ``sighup_effect``: "stop", "snapshot" or
    "none" (handlers are installed only when called from the main thread).
    ``on_progress(done, total, info)``: after every iteration; ``log(line)``: Caffe's log
    lines (default: the ``ristretto_cli`` logger at INFO).

    Returns a :class:`~ristretto_cli.solvers.solver.TrainResult`: ``iterations``,
    ``final_weights`` / ``final_state`` (the last snapshot), ``snapshots``, the best and
    last test score, ``last_loss``, ``stopped_by``.

    Example::

        result = ristretto_cli.finetune("lenet_finetune_solver.prototxt",
                                        weights="lenet_iter_10000.caffemodel")
        print(result.final_weights, result.last_score)
    """
    from .solvers.solver import Solver

    path = os.fspath(solver)
    if not os.path.isfile(path):
        raise RistrettoError(f"{path}: no such solver file")
    if snapshot and not os.path.isfile(os.fspath(snapshot)):
        raise RistrettoError(f"{snapshot}: no such solver state file")
    weights = _weights(weights)
    for w in (weights or "").split(","):
        if w and not os.path.isfile(w):
            raise RistrettoError(f"{w}: no such weights file")
    with Solver.from_file(path, gpu=gpu, level=level, stages=list(stages or ()), snapshot_prefix=snapshot_prefix,
                          log=log, on_progress=on_progress) as s:
        if trim_activations:
            s.set_trim_activations(True)
        s.start_from(weights, os.fspath(snapshot) if snapshot else None)
        return s.solve(sigint_effect=sigint_effect, sighup_effect=sighup_effect)


def _weights(weights) -> str | None:
    """A caffemodel path, "a,b" or a list of paths as the "a,b" the loaders take."""
    if weights is None:
        return None
    if isinstance(weights, (list, tuple)):
        return ",".join(os.fspath(w) for w in weights)
    return os.fspath(weights)
