"""Caffe's solvers: update rules, learning-rate policies, snapshots and the training loop.

- :mod:`.updates`   SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam (sgd_solver.cpp & co.)
- :mod:`.lr_policy` fixed, step, exp, inv, multistep, poly, sigmoid
- :mod:`.snapshot`  .caffemodel + .solverstate (+ our .rngstate.json for exact resume)
- :mod:`.solver`    :class:`Solver`: builds the nets from a SolverParameter and trains
- :mod:`.signals`   SIGINT / SIGHUP as stop / snapshot requests while training

What it may import: ``net``, ``caffe``, ``proto``, ``backend``, ``progress``,
``errors``; never ``commands`` (the training loop logs and calls back) or ``quantize``.
"""
from .lr_policy import POLICIES, learning_rate
from .snapshot import snapshot_filename
from .solver import Solver, TestResult, TrainResult
from .updates import CAFFE_SOLVERS, make_update_rule

__all__ = ["CAFFE_SOLVERS", "POLICIES", "Solver", "TestResult", "TrainResult", "learning_rate",
           "make_update_rule", "snapshot_filename"]
