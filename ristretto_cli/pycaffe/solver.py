"""pycaffe's solvers (``caffe.SGDSolver(path)``, ``caffe.get_solver(path)``) over
:class:`ristretto_cli.solvers.Solver`: the same training loop as ``ristretto finetune``,
so ``solver.step(n)`` gives the weights ``finetune`` gives after n iterations, bit for bit.

As in Caffe, ``SGDSolver(path)`` trains with SGD whatever the file's ``type`` says
(``AdamSolver`` with Adam, ...), and :func:`get_solver` takes the file's ``type``. The
solver's ``weights:`` entries are loaded at construction (Caffe master's
``Solver::InitTrainNet``). Nets with Input layers train on what the script writes into
``solver.net.blobs[...].data`` (and ``test_nets[k]`` likewise), as in pycaffe.
"""
from __future__ import annotations

import os

from ..errors import RistrettoError
from . import modes
from .net import Net

__all__ = ["AdaDeltaSolver", "AdaGradSolver", "AdamSolver", "NesterovSolver", "RMSPropSolver", "SGDSolver",
           "Solver", "get_solver"]


class Solver:
    """A Caffe solver built from a solver prototxt; see the module docstring."""

    #: the update rule this class forces (None: the file's ``type``)
    solver_type: str | None = None

    def __init__(self, filename):
        from ..caffe.prototxt import read_solver
        from ..solvers.solver import Solver as LibrarySolver

        filename = os.fspath(filename)
        if not os.path.isfile(filename):
            raise RistrettoError(f"{filename}: no such solver file")
        param = read_solver(filename)
        if self.solver_type is not None:
            param.type = self.solver_type
            param.ClearField("solver_type")
        self._solver = LibrarySolver(param, source=filename, backend=modes.new_backend())
        self._net = Net._wrap(self._solver.net)
        self._test_nets = [Net._wrap(n) for n in self._solver.test_nets]
        if self._net.inputs:
            self._solver.train_feed = lambda batch: self._net._feed()
        self._solver.test_feeds = [(lambda batch, n=n: n._feed()) if n.inputs else None for n in self._test_nets]
        self._solver.start_from()  # the solver's own weights: entries, as Caffe

    @property
    def net(self) -> Net:
        """The train net (its parameter arrays are the ones the solver updates)."""
        return self._net

    @property
    def test_nets(self) -> list:
        """The test nets (sharing the train net's parameters)."""
        return list(self._test_nets)

    @property
    def iter(self) -> int:
        """The number of iterations done."""
        return int(self._solver.iter)

    @property
    def param(self):
        """The SolverParameter (a copy; changing it changes nothing)."""
        from ..proto import caffe_pb2

        p = caffe_pb2.SolverParameter()
        p.CopyFrom(self._solver.param)
        return p

    @property
    def lr(self) -> float:
        """The learning rate of the next iteration (``SGDSolver::GetLearningRate``)."""
        from ..solvers.lr_policy import learning_rate

        rate, _ = learning_rate(self._solver.param, self._solver.iter, self._solver.current_step)
        return float(rate)

    @property
    def core(self):
        """The library's :class:`ristretto_cli.solvers.Solver` underneath (ours, not pycaffe's)."""
        return self._solver

    def step(self, iters: int) -> None:
        """Train ``iters`` iterations (tests, display, snapshots on their intervals), as
        Caffe's ``Solver::Step``."""
        self._solver.step(int(iters))
        self._after_step()

    def solve(self, resume_file=None) -> None:
        """Train to ``max_iter`` (resuming from the .solverstate ``resume_file`` first), with
        the final snapshot and test, as Caffe's ``Solver::Solve``."""
        if resume_file:
            self.restore(resume_file)
        self._solver.solve()
        self._after_step()

    def _after_step(self) -> None:
        for n in [self._net, *self._test_nets]:
            n._after_forward()

    def restore(self, state_file) -> None:
        """Resume from a .solverstate (and the weights it names)."""
        self._solver.restore(os.fspath(state_file))

    def snapshot(self) -> None:
        """Write ``<prefix>_iter_<N>.caffemodel`` and ``.solverstate`` now."""
        self._solver.snapshot()

    def close(self) -> None:
        """Close the data layers of every net (ours; pycaffe frees them with the solver)."""
        self._solver.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._solver.type_name} at iteration {self.iter}>"


class SGDSolver(Solver):
    """Stochastic gradient descent with momentum (``caffe.SGDSolver``)."""

    solver_type = "SGD"


class NesterovSolver(Solver):
    solver_type = "Nesterov"


class AdaGradSolver(Solver):
    solver_type = "AdaGrad"


class RMSPropSolver(Solver):
    solver_type = "RMSProp"


class AdaDeltaSolver(Solver):
    solver_type = "AdaDelta"


class AdamSolver(Solver):
    solver_type = "Adam"


def get_solver(filename) -> Solver:
    """The solver the file's ``type`` names (``caffe.get_solver``)."""
    return Solver(filename)
