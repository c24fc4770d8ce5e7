"""The training loop: Caffe's Solver::Solve / Step / TestAll / Snapshot / Restore.

``Solver(param)`` builds the train net and the test nets from a SolverParameter the
way Caffe's ``Solver::Init`` does (net / train_net / net_param / train_net_param,
test_net / test_net_param and the generic net once per remaining ``test_iter``,
NetStates merged solver default < net's own < train_state/test_state), seeds the
backend generator with ``random_seed`` before any net exists, and shares the train
net's parameter arrays with the test nets.

One iteration (Solver::Step): zero the diffs; every ``test_interval`` iterations (and
at 0 when ``test_initialization``) score each test net over its ``test_iter``
batches; ``iter_size`` times forward + backward on the train net (diffs add up);
smooth the loss over ``average_loss`` iterations; display; apply the update rule
(see :mod:`.updates`); count the iteration; snapshot every ``snapshot`` iterations
or on request. After ``max_iter`` a final snapshot (``snapshot_after_train``), a
final display forward and a final test, as Caffe does.

Requests: SIGINT stops after the current iteration with a snapshot, SIGHUP
snapshots and goes on (Caffe's defaults; ``sigint_effect`` / ``sighup_effect``
change them; see :mod:`.signals`). A loss that is NaN or infinite stops training
with a RistrettoError before the update, and no snapshot of non-finite weights is
ever written. Nothing here prints: messages go to ``log``, progress to ``on_progress``.
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from .. import backend as _backend
from ..backend import Backend, get_backend
from ..caffe.caffemodel import write_caffemodel
from ..caffe.prototxt import read_net, read_solver, resolve_path
from ..errors import RistrettoError
from ..net.scoring import score
from ..net import Net
from ..progress import OnProgress, Steps
from ..proto import caffe_pb2
from . import snapshot as snap
from .signals import EFFECTS, handle_signals
from .lr_policy import check_policy, learning_rate
from .updates import make_update_rule, solver_type_name

logger = logging.getLogger(__name__)

@dataclass
class TestResult:
    """The scores of one test pass over one test net."""

    iteration: int
    net_index: int
    means: dict[str, float]
    loss: float | None = None
    complete: bool = True


@dataclass
class TrainResult:
    """What :meth:`Solver.solve` reports."""

    iterations: int
    stopped_by: str | None = None           # "SIGINT", "request" ... when stopped early
    final_weights: str | None = None        # caffemodel of the last snapshot, None when none
    final_state: str | None = None
    snapshots: list[str] = field(default_factory=list)
    score_name: str | None = None
    best_score: float | None = None
    best_iteration: int | None = None
    last_score: float | None = None
    last_iteration: int | None = None
    last_loss: float | None = None


class _TestInterrupted(Exception):
    pass


def _fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def solver_device(param, gpu: int | None, where: str = "solver") -> tuple[int | None, str | None]:
    """The device to train on and a one-line notice (or None), by Caffe's rule (``caffe
    train``): ``gpu`` (the --gpu flag, -1 for the CPU) wins; without it, a solver file that
    sets ``solver_mode: GPU`` trains on ``device_id`` (0 when unset), and any other on the
    CPU. Most solver files of the Caffe era say ``solver_mode: GPU``: where CuPy or a CUDA
    device is missing they train on the CPU, with a notice, rather than fail."""
    if gpu is not None:
        return gpu, None
    if not (param.HasField("solver_mode") and param.solver_mode == caffe_pb2.SolverParameter.GPU):
        return None, None
    device = int(param.device_id) if param.HasField("device_id") else 0
    ok, why = _backend.cuda_available()
    if not ok:
        return None, (f"{where}: solver_mode GPU needs CuPy and a CUDA device ({why}); "
                      f"running on the CPU")
    return device, f"{where}: solver_mode GPU; running on CUDA device {device} (--gpu -1 for the CPU)"


class Solver:
    """Train a Caffe net as ``caffe train`` does.

    ``param``: a SolverParameter. ``source``: the solver file (paths inside are
    resolved relative to the current folder first, then to its folder).
    ``backend``: a Backend to use (reseeded with ``random_seed``), else one is made
    for ``gpu``. ``train_feed(batch)`` / ``test_feeds[k](batch)``: optional callables
    that return input arrays for the next batch (for nets with Input layers);
    ``batch`` counts the batches that net has read. ``level`` / ``stages`` add to
    ``train_state`` as Caffe's ``--level`` / ``--stage`` do. ``snapshot_prefix``
    overrides the solver's. ``log``: where messages go (one line each; default: this
    module's logger at INFO level). ``on_progress(done, total, info)``: called when
    :meth:`solve` starts (done 0) and after every iteration (see :mod:`ristretto_cli.progress`).
    """

    def __init__(self, param, *, source: str | None = None, backend: Backend | None = None, gpu: int | None = None,
                 train_feed: Callable | None = None, test_feeds: list | None = None, level: int | None = None,
                 stages=(), snapshot_prefix: str | None = None, log: Callable[[str], None] | None = None,
                 on_progress: OnProgress | None = None):
        self.param = caffe_pb2.SolverParameter()
        self.param.CopyFrom(param)
        self.source = source
        self.where = source or "solver"
        self.log = log or logger.info
        self.on_progress = on_progress
        self.train_feed = train_feed
        if level is not None:
            self.param.train_state.level = int(level)
        for s in stages:
            self.param.train_state.stage.append(s)
        self._check_param()
        self.type_name = solver_type_name(self.param, self.where)
        self.snapshot_prefix = self._resolve_prefix(snapshot_prefix)

        # Seed before any net exists: fillers, data layers' seeds, dropout, stochastic rounding.
        seed = int(self.param.random_seed) if self.param.random_seed >= 0 else None
        if backend is None:
            backend = get_backend(gpu, seed)
        elif seed is not None:
            backend.seed(seed)
        self.backend = backend

        self.net = self._build_train_net()
        self.test_nets = self._build_test_nets()
        for tn in self.test_nets:
            tn.share_weights_from(self.net)
        self.test_feeds = list(test_feeds or [None] * len(self.test_nets))
        if len(self.test_feeds) != len(self.test_nets):
            raise RistrettoError(f"{len(self.test_feeds)} test feeds for {len(self.test_nets)} test nets")
        self.params = self.net.learnable_params()
        if not self.net.loss_weights:
            self.log(f"{self.where}: the train net has no loss (no loss layer or loss_weight); nothing will learn")
        self.rule = make_update_rule(self.param, self.params, self.backend.xp)

        self.iter = 0
        self.current_step = 0
        self.train_batches = 0
        self.test_batches = [0] * len(self.test_nets)
        self.losses: deque = deque(maxlen=max(1, int(self.param.average_loss)))
        self.smoothed_loss: float | None = None
        self.rate: float | None = None
        self.test_results: list[TestResult] = []
        self.best: dict | None = None          # {"name", "value", "iteration", "higher"}
        self.last: dict | None = None
        self.snapshots: list[str] = []
        self.last_snapshot_iter: int | None = None
        self.last_snapshot_model: str | None = None
        self.last_snapshot_state: str | None = None
        self.on_iteration: Callable | None = None   # called with the solver after every update
        self._stop_requested: str | None = None
        self._snapshot_requested = False
        self.writing = False      # True while a snapshot is written (a second SIGINT waits for it)

    @classmethod
    def from_file(cls, path: str, **kwargs) -> "Solver":
        """Read a solver prototxt (any Caffe version) and build the solver."""
        return cls(read_solver(path), source=path, **kwargs)

    def close(self) -> None:
        """Stop prefetch threads and close the databases of every data layer."""
        for net in [self.net, *self.test_nets]:
            net.close()

    def __enter__(self) -> "Solver":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ configuration
    def _check_param(self) -> None:
        p, where = self.param, self.where
        if p.average_loss < 1:
            raise RistrettoError(f"{where}: average_loss must be at least 1, got {p.average_loss}")
        if p.iter_size < 1:
            raise RistrettoError(f"{where}: iter_size must be at least 1, got {p.iter_size}")
        if p.max_iter < 0:
            raise RistrettoError(f"{where}: max_iter must not be negative, got {p.max_iter}")
        if p.display < 0 or p.snapshot < 0 or p.test_interval < 0:
            raise RistrettoError(f"{where}: display, snapshot and test_interval must not be negative")
        check_policy(p, where)
        if p.HasField("snapshot_format") and p.snapshot_format == caffe_pb2.SolverParameter.HDF5:
            self.log(f"{where}: snapshot_format HDF5 is not supported; writing BINARYPROTO snapshots")
        if p.snapshot_diff:
            self.log(f"{where}: snapshot_diff is ignored (snapshots hold weights only)")

    def _path(self, p: str) -> str:
        return resolve_path(self.source, p) if self.source else p

    def _read_net_file(self, p: str, field_name: str):
        path = self._path(p)
        if not os.path.exists(path):
            raise RistrettoError(f"{self.where}: {field_name} '{p}' not found (looked in the current folder"
                                 f"{' and next to the solver' if self.source else ''})")
        return read_net(path), path

    def _resolve_prefix(self, override: str | None) -> str:
        """snapshot_prefix as Caffe resolves it (relative to the current folder), with
        two helps: the solver's folder when the prefix's folder is only found there, and
        Caffe's upgrade for an empty prefix (solver file name without extension) or a
        folder (folder / solver file stem)."""
        stem = os.path.splitext(os.path.basename(self.source))[0] if self.source else "ristretto"
        prefix = override if override is not None else self.param.snapshot_prefix
        if not prefix:
            return os.path.splitext(self.source)[0] if self.source else stem
        if prefix.endswith(("/", os.sep)) or os.path.isdir(prefix):
            return os.path.join(prefix, stem)
        folder = os.path.dirname(prefix)
        if override is None and folder and not os.path.isdir(folder) and self.source:
            alt = os.path.join(os.path.dirname(os.path.abspath(self.source)), prefix)
            if os.path.isdir(os.path.dirname(alt)):
                return alt
        return prefix

    def _check_snapshot_folder(self) -> None:
        """Fail before training, not after it, when snapshots cannot be written (Caffe's
        CheckSnapshotWritePermissions)."""
        if not (self.param.snapshot or self.param.snapshot_after_train):
            return
        folder = os.path.dirname(os.path.abspath(self.snapshot_prefix))
        try:
            fd, probe = tempfile.mkstemp(prefix=".ristretto-probe.", dir=folder)
        except OSError as exc:
            raise RistrettoError(f"{self.where}: cannot write snapshots with prefix '{self.snapshot_prefix}': "
                                 f"folder {folder} {'does not exist' if not os.path.isdir(folder) else 'is not writable'}"
                                 f" ({exc.strerror or exc}); create it or pass --snapshot-prefix") from None
        os.close(fd)
        os.unlink(probe)

    @staticmethod
    def _merged_state(phase: int, net_param, override) -> caffe_pb2.NetState:
        state = caffe_pb2.NetState()
        state.phase = phase
        state.MergeFrom(net_param.state)
        if override is not None:
            state.MergeFrom(override)
        return state

    def _build(self, net_param, state, source) -> Net:
        net_param.state.CopyFrom(state)
        return Net(net_param, phase=state.phase, backend=self.backend, level=state.level,
                   stages=tuple(state.stage), source=source)

    def _build_train_net(self) -> Net:
        p = self.param
        fields = [f for f in ("train_net_param", "train_net", "net_param", "net") if p.HasField(f)]
        if not fields:
            raise RistrettoError(f"{self.where}: no train net; set one of net, net_param, train_net, "
                                 f"train_net_param")
        if len(fields) > 1:
            raise RistrettoError(f"{self.where}: more than one train net ({', '.join(fields)}); keep one")
        f = fields[0]
        if f.endswith("_param"):
            net_param, source = caffe_pb2.NetParameter(), f"{self.where}: {f}"
            net_param.CopyFrom(getattr(p, f))
        else:
            net_param, source = self._read_net_file(getattr(p, f), f)
        state = self._merged_state(caffe_pb2.TRAIN, net_param, p.train_state)
        self.train_source = source
        return self._build(net_param, state, source)

    def _build_test_nets(self) -> list[Net]:
        p = self.param
        generic = [f for f in ("net_param", "net") if p.HasField(f)]
        explicit = len(p.test_net_param) + len(p.test_net)
        if generic:
            if len(p.test_iter) < explicit:
                raise RistrettoError(f"{self.where}: test_iter must be given for each test net "
                                     f"({explicit} test nets, {len(p.test_iter)} test_iter)")
        elif len(p.test_iter) != explicit:
            raise RistrettoError(f"{self.where}: test_iter must be given once per test net "
                                 f"({explicit} test nets, {len(p.test_iter)} test_iter)")
        instances = len(p.test_iter) if generic else explicit
        if len(p.test_state) and len(p.test_state) != instances:
            raise RistrettoError(f"{self.where}: test_state must be left out or given once per test net "
                                 f"({instances} test nets, {len(p.test_state)} test_state)")
        if instances and p.test_interval <= 0:
            raise RistrettoError(f"{self.where}: {instances} test net(s) but test_interval is "
                                 f"{p.test_interval}; set test_interval > 0 (or drop test_iter)")
        specs = []
        for tp in p.test_net_param:
            q = caffe_pb2.NetParameter()
            q.CopyFrom(tp)
            specs.append((q, f"{self.where}: test_net_param"))
        for tf in p.test_net:
            specs.append(self._read_net_file(tf, "test_net"))
        for _ in range(instances - explicit):
            if p.HasField("net_param"):
                q = caffe_pb2.NetParameter()
                q.CopyFrom(p.net_param)
                specs.append((q, f"{self.where}: net_param"))
            else:
                specs.append(self._read_net_file(p.net, "net"))
        nets = []
        for i, (net_param, source) in enumerate(specs):
            override = p.test_state[i] if len(p.test_state) else None
            nets.append(self._build(net_param, self._merged_state(caffe_pb2.TEST, net_param, override), source))
        return nets

    # ------------------------------------------------------------------ weights and options
    def solver_weights(self) -> list[str]:
        """The caffemodels of the solver's own ``weights:`` entries (BVLC master; each may list
        several, comma-separated), resolved like its net paths; what Caffe loads into every
        net at start unless --weights replaces them or --snapshot resumes."""
        names = [n.strip() for entry in self.param.weights for n in entry.split(",")]
        return [self._path(n) for n in names if n]

    def load_weights(self, weights) -> None:
        """Copy weights by layer name into the train net and every test net (Caffe's CopyLayers)."""
        self.net.load_weights(weights)
        for tn in self.test_nets:
            tn.load_weights(weights)

    def start_from(self, weights=None, snapshot: str | None = None) -> None:
        """Where training starts, as ``caffe train`` decides: resume from ``snapshot`` (a
        .solverstate), else copy ``weights`` (a caffemodel path, "a,b" or a list) into
        every net, else the solver's own ``weights:`` entries, else the fillers' values.
        ``weights`` and ``snapshot`` together are an error."""
        if isinstance(weights, (list, tuple)):
            weights = ",".join(str(w) for w in weights)
        if weights and snapshot:
            raise RistrettoError("give --snapshot to resume training or --weights to fine-tune, not both")
        if not snapshot and not weights and self.solver_weights():
            weights = ",".join(self.solver_weights())  # the solver's weights: field, as in Caffe
            for w in self.solver_weights():
                if not os.path.isfile(w):
                    raise RistrettoError(f"{self.where}: no such weights file '{w}' (weights:)")
        if snapshot:
            self.log(f"Resuming from {snapshot}")
            self.restore(snapshot)
        elif weights:
            self.load_weights(weights)
            self.log(f"Fine-tuning from {weights}")

    def set_trim_activations(self, enabled: bool = True) -> int:
        """Trim activations in TRAIN too, on every layer that offers it; returns how many."""
        n = 0
        for net in [self.net, *self.test_nets]:
            for layer in net.layers:
                if hasattr(layer, "trim_activations_in_train"):
                    layer.trim_activations_in_train = bool(enabled)
                    n += net is self.net
        return n

    # ------------------------------------------------------------------ requests
    def request_stop(self, reason: str = "request") -> None:
        """Stop after the current iteration (or test batch) and snapshot."""
        self._stop_requested = reason

    def request_snapshot(self) -> None:
        """Snapshot after the current iteration (or test batch) and go on."""
        self._snapshot_requested = True

    def _handle_requests(self) -> bool:
        """Act on pending requests; True when training must stop."""
        if self._snapshot_requested:
            self._snapshot_requested = False
            if self.last_snapshot_iter != self.iter:
                self.snapshot()
        return self._stop_requested is not None

    # ------------------------------------------------------------------ testing
    def _score_name(self, net: Net, names: list[str], loss_weights: dict) -> tuple[str, bool]:
        for n in names:
            if n.split("[")[0] not in loss_weights:
                return n, True
        return names[0], False

    def test(self, index: int) -> TestResult:
        """Score test net ``index`` over its test_iter batches, as Caffe's Solver::Test."""
        net = self.test_nets[index]
        iterations = int(self.param.test_iter[index])
        self.log(f"Iteration {self.iter}, Testing net (#{index})")
        feed_fn = self.test_feeds[index]
        start = self.test_batches[index]

        def feed(i):
            return feed_fn(start + i) if feed_fn else None

        def on_batch(i, values):
            self.test_batches[index] += 1
            if self._handle_requests() and i + 1 < iterations:
                raise _TestInterrupted

        try:
            scores = score(net, iterations, on_batch=on_batch, feed=feed if feed_fn else None)
        except _TestInterrupted:
            self.log("Test interrupted.")
            return TestResult(self.iter, index, {}, complete=False)
        means = scores.means
        loss = scores.loss if self.param.test_compute_loss else None
        if loss is not None:
            self.log(f"Test loss: {loss:.6g}")
        for k, (name, value) in enumerate(means.items()):
            w = scores.loss_weights.get(name.split("[")[0])
            extra = f" (* {w:g} = {w * value:.6g} loss)" if w else ""
            self.log(f"    Test net output #{k}: {name} = {value:.6g}{extra}")
        result = TestResult(self.iter, index, means, loss)
        self.test_results.append(result)
        if index == 0 and means:
            name, higher = self._score_name(net, list(means), scores.loss_weights)
            value = means[name]
            self.last = {"name": name, "value": value, "iteration": self.iter, "higher": higher}
            better = self.best is None or self.best["name"] != name or (
                value > self.best["value"] if higher else value < self.best["value"])
            if better and math.isfinite(value):
                self.best = dict(self.last)
        return result

    def test_all(self) -> list[TestResult]:
        out = []
        for i in range(len(self.test_nets)):
            if self._stop_requested:
                break
            out.append(self.test(i))
        return out

    # ------------------------------------------------------------------ one iteration
    def _batch_size(self) -> int | None:
        for name in self.net.inputs:
            shape = self.net.blob_shapes.get(name)
            if shape:
                return int(shape[0])
        return None

    def forward_backward(self) -> float:
        """iter_size x (forward, loss, backward) on the train net; the mean loss.
        A non-finite loss raises before anything is updated."""
        total = 0.0
        n = int(self.param.iter_size)
        for k in range(n):
            feed = self.train_feed(self.train_batches) if self.train_feed else None
            self.net.forward(feed, keep_for_backward=True)
            self.train_batches += 1
            loss = self.net.loss()
            if not math.isfinite(loss):
                self._diverged(loss, k)
            self.net.backward()
            total += loss
        self.net.release()
        return total / n

    def _diverged(self, loss: float, k: int):
        where = f"iteration {self.iter}" + (f" (batch {k + 1} of iter_size {self.param.iter_size})"
                                             if self.param.iter_size > 1 else "")
        if self.last_snapshot_state:
            keep = (f"the last good snapshot is {self.last_snapshot_state} (resume with "
                    f"--snapshot {self.last_snapshot_state})")
        else:
            keep = "no snapshot was written"
        raise RistrettoError(f"{self.where}: {where}: the loss is {loss}; training stopped and nothing was "
                             f"saved for this iteration; {keep}; try a lower base_lr or set clip_gradients")

    def _smooth(self, loss: float) -> float:
        self.losses.append(loss)
        self.smoothed_loss = sum(self.losses) / len(self.losses)
        return self.smoothed_loss

    def _display(self, rate: float, outputs: dict, timing: dict) -> None:
        now = time.perf_counter()
        done = self.iter - timing["last_iter"]
        lapse = now - timing["last_time"]
        per_s = done / lapse if lapse > 0 and done > 0 else float("nan")
        bs = self._batch_size()
        run_iters = self.iter - timing["start_iter"]
        elapsed = now - timing["start_time"]
        speed = ""
        if per_s == per_s:
            speed = f" ({per_s:.3g} iter/s"
            if bs:
                speed += f", {per_s * bs * self.param.iter_size:.1f} images/s"
            if run_iters > 0:
                speed += f", ETA {_fmt_duration((self.param.max_iter - self.iter) * elapsed / run_iters)}"
            speed += ")"
        self.log(f"Iteration {self.iter}{speed}, loss = {self.smoothed_loss:.6g}, lr = {rate:.6g}")
        k = 0
        for name, arr in outputs.items():
            flat = self.backend.to_numpy(arr).reshape(-1)
            w = self.net.loss_weights.get(name, 0.0)
            for v in flat[:20]:
                extra = f" (* {w:g} = {w * float(v):.6g} loss)" if w else ""
                self.log(f"    Train net output #{k}: {name} = {float(v):.6g}{extra}")
                k += 1
        timing["last_iter"], timing["last_time"] = self.iter, now

    # ------------------------------------------------------------------ the loop
    def _timing(self) -> dict:
        now = time.perf_counter()
        return {"start_iter": self.iter, "start_time": now, "last_iter": self.iter, "last_time": now}

    def step(self, iters: int) -> None:
        """Run ``iters`` iterations from the current one, as Caffe's ``Solver::Step`` (what
        pycaffe's ``solver.step(n)`` calls): tests every ``test_interval`` iterations,
        displays, updates and snapshots every ``snapshot`` iterations exactly as
        :meth:`solve` does inside its loop, but without the final snapshot, display and
        test that :meth:`solve` adds after ``max_iter``, and without signal handling.
        A stop request (:meth:`request_stop`) ends it early."""
        if int(iters) < 0:
            raise RistrettoError(f"step: the number of iterations must not be negative, got {iters}")
        if self.param.snapshot:
            self._check_snapshot_folder()
        self._iterate(self.iter + int(iters), self._timing(), None)

    def _iterate(self, stop_iter: int, timing: dict, steps: Steps | None) -> None:
        """The body of Caffe's Solver::Step until ``stop_iter`` or a stop request."""
        p = self.param
        while self.iter < stop_iter:
            self.net.zero_diffs()
            if p.test_interval and self.iter % p.test_interval == 0 and (self.iter > 0 or p.test_initialization):
                self.test_all()
                if self._stop_requested:
                    break
            display = bool(p.display) and self.iter % p.display == 0
            loss = self.forward_backward()
            self._smooth(loss)
            rate, self.current_step = learning_rate(p, self.iter, self.current_step)
            self.rate = rate
            if display:
                self._display(rate, {o: self.net.blobs[o] for o in self.net.outputs if o in self.net.blobs},
                              timing)
            self.rule.apply(rate, self.iter)
            if display and self.rule.last_clip:
                norm, scale = self.rule.last_clip
                self.log(f"Gradient clipping: scaling down gradients (L2 norm {norm:.6g} > "
                         f"{p.clip_gradients:g}) by scale factor {scale:.6g}")
            self.iter += 1
            if steps is not None:
                steps.advance(1, info=f"loss {self.smoothed_loss:.4g} lr {rate:.3g}")
            if self.on_iteration is not None:
                self.on_iteration(self)
            if p.snapshot and self.iter % p.snapshot == 0:
                self.snapshot()
            if self._handle_requests():
                break

    def solve(self, sigint_effect: str = "stop", sighup_effect: str = "snapshot") -> TrainResult:
        """Train until max_iter (or a stop request); see the module docstring."""
        self._check_snapshot_folder()
        p = self.param
        start_iter = self.iter
        self.log(f"Solving {self.net.name or self.train_source} with {self.type_name} "
                 f"({self.net.count_params():,} parameters), iterations {self.iter} -> {p.max_iter}")
        timing = self._timing()
        stopped = None
        with handle_signals(self, sigint_effect, sighup_effect), \
                Steps(self.on_progress, max(0, p.max_iter - start_iter)) as steps:
            self._iterate(p.max_iter, timing, steps)
            stopped = self._stop_requested
            if stopped or (p.snapshot_after_train and self.last_snapshot_iter != self.iter):
                if self.last_snapshot_iter != self.iter:
                    self.snapshot()
            if not stopped:
                if p.display and self.iter % p.display == 0 and self.iter > start_iter:
                    feed = self.train_feed(self.train_batches) if self.train_feed else None
                    self.net.forward(feed, keep_for_backward=False)
                    self.train_batches += 1
                    self._smooth(self.net.loss())
                    self.log(f"Iteration {self.iter}, loss = {self.smoothed_loss:.6g}")
                if p.test_interval and self.iter % p.test_interval == 0:
                    self.test_all()
        return self._result(stopped)

    def _result(self, stopped) -> TrainResult:
        r = TrainResult(iterations=self.iter, stopped_by=stopped, snapshots=list(self.snapshots),
                        last_loss=self.smoothed_loss)
        if self.last_snapshot_iter == self.iter:
            r.final_weights, r.final_state = self.last_snapshot_model, self.last_snapshot_state
        if self.best:
            r.score_name = self.best["name"]
            r.best_score, r.best_iteration = self.best["value"], self.best["iteration"]
        if self.last:
            r.score_name = self.last["name"]
            r.last_score, r.last_iteration = self.last["value"], self.last["iteration"]
        return r

    # ------------------------------------------------------------------ snapshots
    def _check_finite_params(self) -> None:
        xp = self.backend.xp
        for ref in self.params:
            if not bool(xp.isfinite(ref.data).all()):
                raise RistrettoError(f"{self.where}: iteration {self.iter}: parameter '{ref.name}' holds NaN or "
                                     f"infinite values; training stopped without writing a snapshot"
                                     + (f"; the last good snapshot is {self.last_snapshot_state}"
                                        if self.last_snapshot_state else "")
                                     + "; try a lower base_lr or set clip_gradients")

    def snapshot(self) -> tuple[str, str]:
        """Write ``<prefix>_iter_<N>.caffemodel``, ``.rngstate.json`` and ``.solverstate``."""
        self._check_finite_params()
        model = snap.snapshot_filename(self.snapshot_prefix, self.iter, ".caffemodel")
        state = snap.snapshot_filename(self.snapshot_prefix, self.iter, ".solverstate")
        self.writing = True
        try:
            self.log(f"Snapshotting to binary proto file {model}")
            write_caffemodel(model, self.net.to_proto(with_weights=True))
            snap.write_sidecar(snap.sidecar_path(state), self._sidecar())
            self.log(f"Snapshotting solver state to binary proto file {state}")
            history = [self.backend.to_numpy(h) for h in self.rule.history]
            snap.write_solverstate(state, self.iter, model, history, self.current_step)
        finally:
            self.writing = False
        self.snapshots.append(state)
        self.last_snapshot_iter = self.iter
        self.last_snapshot_model, self.last_snapshot_state = model, state
        return model, state

    def _sidecar(self) -> dict:
        return {
            "iter": self.iter,
            "solver_type": self.type_name,
            "backend_rng": snap.rng_state(self.backend),
            "train": snap.data_state(self.net, self.train_batches),
            "test": [snap.data_state(n, b) for n, b in zip(self.test_nets, self.test_batches)],
            "losses": list(self.losses),
            "best": self.best,
            "last": self.last,
        }

    def restore(self, path: str) -> None:
        """Resume from a .solverstate (Caffe's Solver::Restore), plus our sidecar when present."""
        state = snap.read_solverstate(path)
        if state.iter < 0:
            raise RistrettoError(f"{path}: negative iteration {state.iter}")
        if state.HasField("learned_net") and state.learned_net:
            model = resolve_path(path, state.learned_net)
            if not os.path.exists(model):
                raise RistrettoError(f"{path}: its weights file '{state.learned_net}' (learned_net) was not found "
                                     f"(looked in the current folder and next to the solver state)")
            self.net.load_weights(model)
        self.rule.set_history(snap.history_arrays(state, path), path)
        self.iter = int(state.iter)
        self.current_step = int(state.current_step)
        self.last_snapshot_iter = self.iter
        self.last_snapshot_model = resolve_path(path, state.learned_net) if state.learned_net else None
        self.last_snapshot_state = path
        side = snap.read_sidecar(snap.sidecar_path(path))
        if side is None:
            self.log(f"{path}: no {os.path.basename(snap.sidecar_path(path))} beside it; resuming like Caffe "
                     f"(data read from the start, fresh random draws)")
            return
        if side.get("solver_type") not in (None, self.type_name):
            self.log(f"{path}: was written by the {side.get('solver_type')} solver, resuming with "
                     f"{self.type_name}; its history is reused as it is")
        if int(side.get("iter", -1)) != self.iter:
            self.log(f"{snap.sidecar_path(path)}: is for iteration {side.get('iter')}, the solver state for "
                     f"{self.iter}; ignoring it")
            return
        train = side.get("train") or {}
        self.train_batches = int(train.get("batches", 0))
        if self.train_batches and snap.data_layers(self.net):
            self.log(f"Moving the train data to batch {self.train_batches} (reading past the batches used)")
        snap.restore_data_state(self.net, train)
        for k, (net, st) in enumerate(zip(self.test_nets, side.get("test") or [])):
            snap.restore_data_state(net, st)
            self.test_batches[k] = int(st.get("batches", 0))
        if not snap.set_rng_state(self.backend, side.get("backend_rng")):
            self.log(f"{path}: the random generator state could not be restored on this backend; "
                     f"random draws after the resume will differ")
        self.losses.clear()
        self.losses.extend(float(v) for v in side.get("losses") or [])
        if self.losses:
            self.smoothed_loss = sum(self.losses) / len(self.losses)
        self.best, self.last = side.get("best"), side.get("last")
