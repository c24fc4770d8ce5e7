"""Scoring candidate nets on the same batches, without redoing what they cannot change.

The original builds every candidate from the prototxt, reads the first
``iterations`` batches from the data layer again and runs every layer. A candidate
only changes the layers it rewrites, so:

* the float TEST net runs once over the batches (the baseline); on the way we keep,
  per batch, the blobs that are alive just before each layer where some candidate
  will start (its first rewritten layer), and the tops of data layers after it;
* a candidate restores those blobs (as fresh copies: a Ristretto layer trims its
  bottom in place, and two names that were one array stay one array) and runs
  only from its first rewritten layer on.

When the kept blobs would exceed ``cache_bytes``, candidates fall back to the
original's way: a fresh net that reads its data layers from the first record.

A candidate can also start from a :class:`Reference`: a candidate scored before whose
blobs were kept in front of some layers (the per-layer search keeps its current
configuration so). A candidate that agrees with it on every layer before one of those
starts there, on the reference's blobs.

Scores follow the original's arithmetic: element 0 of the score blob per batch,
summed in float32 and divided by the number of batches in float32.

With a stopping rule (:class:`~ristretto_cli.quantize.choose.StoppingRule`) a candidate
stops as soon as the batches scored decide it; the memo keeps what was scored, so a
later full evaluation of the same net (the final one) scores only the batches missing.
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..backend import is_numpy, one_blas_thread
from ..errors import RistrettoError
from ..layers.base import TEST
from ..layers.ristretto import RistrettoMixin
from ..net import Net
from ..net.graph import filter_net
from ..proto import caffe_pb2
from .choose import Score, StoppingRule, mean_score
from .rewrite import Candidate, changed_layers, rewrite_net


@dataclass
class Counters:
    """Layer forwards done here, and what the original procedure would have done."""

    layer_forwards: int = 0
    original_layer_forwards: int = 0
    candidates: int = 0
    reused: int = 0           # candidates answered from the memo (same net as one scored before)
    batches_scored: int = 0   # candidate batches run
    batches_saved: int = 0    # candidate batches not run because the scored ones decided the outcome
    decided_early: int = 0    # candidates stopped before their last batch

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Evaluation:
    candidate: Candidate
    score: float
    start_layer: str | None      # first layer run; None: nothing to run (same net as the float one)
    layer_forwards: int
    batches: list[float] = field(default_factory=list)   # the values scored, in batch order
    seconds: float = 0.0
    values: list = field(default_factory=list)            # one per batch, None where not scored
    passed: bool | None = None                            # the stopping rule's decision, if any

    @property
    def batches_scored(self) -> int:
        return sum(v is not None for v in self.values) if self.values else len(self.batches)

    @property
    def decided_early(self) -> bool:
        return bool(self.values) and any(v is None for v in self.values)

    def to_score(self) -> Score:
        return Score(self.score, self.passed, self.batches_scored, self.decided_early)


@dataclass
class Reference:
    """A scored candidate and, per batch, its blobs alive in front of some layers
    (float-net layer index -> one dict per batch); made by :meth:`CandidateRunner.evaluate`
    with ``keep``."""

    candidate: Candidate
    layers: list[tuple[str, bytes]]           # its TEST net's layers (name, serialized), in order
    snapshots: dict[int, list[dict]]

    def first_difference(self, tparam) -> str | None:
        """Name of the first layer of ``tparam`` (a TEST NetParameter) that differs from
        this reference's (None: the same layers)."""
        mine = self.layers
        for i, lp in enumerate(tparam.layer):
            if i >= len(mine) or mine[i] != (lp.name, lp.SerializeToString(deterministic=True)):
                return lp.name
        return None if len(tparam.layer) == len(mine) else "<end>"


def first_element(array, backend) -> np.float32:
    flat = backend.to_numpy(array).reshape(-1)
    if flat.size == 0:
        raise RistrettoError("the score blob is empty")
    return np.float32(flat[0])


class CandidateRunner:
    """Scores the float net and candidates of it on ``iterations`` batches.

    ``param``: the NetParameter as read (both phases); ``float_net``: the TEST-phase
    float net with its weights; ``lengths``: integer lengths by layer name (set
    before the first candidate); ``on_batch(info)`` is called after every batch for
    progress (``on_skip(n, info)`` for n batches not run; default: ``on_batch`` n times);
    ``workers``: threads that score batches side by side.
    Call :meth:`run_baseline` first, then :meth:`evaluate` per candidate.
    """

    def __init__(self, param, float_net: Net, iterations: int, score_blob: str, lengths=None,
                 cache_bytes: int = 2 << 30, on_batch: Callable[[str], None] | None = None,
                 workers: int | None = None, on_skip: Callable[[int, str], None] | None = None):
        self.param = param
        self.workers = default_workers(float_net.backend) if workers is None else max(1, int(workers))
        self.float_net = float_net
        self.backend = float_net.backend
        self.xp = float_net.xp
        self.iterations = int(iterations)
        self.score_blob = score_blob
        self.lengths = lengths or {}
        self.cache_bytes = int(cache_bytes)
        self.on_batch = on_batch or (lambda info: None)
        self.on_skip = on_skip or (lambda n, info: [self.on_batch(info) for _ in range(n)])
        self.counters = Counters()
        self.evaluations: list[Evaluation] = []
        self._memo: dict[bytes, Evaluation] = {}
        self._snapshots: dict[int, list[dict]] = {}
        self._feeds: list[dict] = []
        self.last_reference: Reference | None = None
        self.cached = False
        self.cache_used = 0       # bytes the float net's kept blobs take
        self.baseline: float | None = None
        n = len(float_net.layers)
        self._index = {name: i for i, name in enumerate(float_net.layer_names)}
        self._bottomless = [i for i in range(n) if not float_net.bottom_names[i]]
        # Layers after the last one that writes the score blob cannot change the score.
        writers = [i for i, tops in enumerate(float_net.top_names) if score_blob in tops]
        self.end = (max(writers) + 1) if writers else n

    # -- planning -------------------------------------------------------------
    def start_index(self, changed: list[str]) -> int | None:
        """Index in the TEST net of the first of ``changed`` (None: none of them is in it)."""
        idx = [self._index[c] for c in changed if c in self._index]
        return min(idx) if idx else None

    def live_blobs(self, k: int) -> list[str]:
        """Blobs produced before layer k that layer k or a later one reads, plus the score blob."""
        net = self.float_net
        produced = set()
        for ts in net.top_names[:k]:
            produced.update(ts)
        needed: list[str] = []
        for bs in net.bottom_names[k:self.end]:
            for b in bs:
                if b in produced and b not in needed:
                    needed.append(b)
        if self.score_blob in produced and self.score_blob not in needed:
            needed.append(self.score_blob)
        return needed

    def _batch_bytes(self, starts: list[int]) -> int:
        shapes = self.float_net.blob_shapes
        itemsize = 4
        total = 0
        for k in starts:
            total += sum(int(np.prod(shapes[b])) * itemsize for b in set(self.live_blobs(k)))
        first = min(starts) if starts else len(self.float_net.layers)
        for i in self._bottomless:
            if i >= first:
                total += sum(int(np.prod(shapes[t])) * itemsize for t in self.float_net.top_names[i])
        return total

    # -- the float net ----------------------------------------------------------
    def run_baseline(self, start_layers: list[str]) -> float:
        """Score the float net over the batches, keeping the snapshots when they fit."""
        net = self.float_net
        starts = sorted({k for k in (self.start_index([s]) for s in start_layers)
                         if k is not None and 0 < k < self.end})
        self.cached = bool(starts) and self._batch_bytes(starts) * self.iterations <= self.cache_bytes
        self.cache_used = self._batch_bytes(starts) * self.iterations if self.cached else 0
        snap_after = {k - 1: k for k in starts} if self.cached else {}
        first = min(starts) if starts else None
        self._snapshots = {k: [] for k in snap_after.values()}
        self._feeds = []
        live = {k: self.live_blobs(k) for k in snap_after.values()}
        t0 = time.perf_counter()
        prefix = self._data_prefix()
        workers = max(1, min(self.workers, self.iterations))
        if workers > 1 and prefix is not None:
            values = self._baseline_in_threads(prefix, workers, snap_after, live, first)
        else:
            values = self._baseline_in_order(snap_after, live, first)
        n = len(net.layers)
        self.counters.layer_forwards += self.end * self.iterations
        self.counters.original_layer_forwards += n * self.iterations
        self.baseline = mean_score(values)
        ev = Evaluation(Candidate("float"), self.baseline, net.layer_names[0] if n else None,
                        self.end * self.iterations, [float(v) for v in values], time.perf_counter() - t0)
        self.baseline_evaluation = ev
        self._memo[net.param.SerializeToString(deterministic=True)] = ev
        return self.baseline

    def _baseline_in_order(self, snap_after: dict, live: dict, first) -> list:
        """The float net batch after batch, as Caffe runs it."""
        net = self.float_net
        values = []
        with one_blas_thread():  # as every scoring pass: same bits whatever the core count
            for b in range(self.iterations):
                feeds: dict = {}

                def on_layer(i, layer, names, tops, feeds=feeds):
                    if i in snap_after:
                        k = snap_after[i]
                        self._snapshots[k].append(_copy_blobs(net.blobs, live[k], self.xp))
                    if self.cached and first is not None and i >= first and not net.bottom_names[i]:
                        feeds[i] = _copy_blobs(dict(zip(names, tops)), None, self.xp)

                net.forward(on_layer=on_layer, end=self.end, keep_for_backward=False)
                self._feeds.append(feeds)
                values.append(first_element(self._blob(net), self.backend))
                self.on_batch("float baseline")
        return values

    def _data_prefix(self) -> int | None:
        """Index of the first layer with bottoms when every bottomless (data) layer comes
        before it, else None."""
        net = self.float_net
        with_bottoms = [i for i in range(len(net.layers)) if net.bottom_names[i]]
        if not with_bottoms:
            return None
        p = with_bottoms[0]
        return p if all(i < p for i in self._bottomless) and p > 0 else None

    def _baseline_in_threads(self, prefix: int, workers: int, snap_after: dict, live: dict, first) -> list:
        """The float net's data layers read the batches in order (``workers`` at a time);
        the rest of the net runs on ``workers`` copies of it fed with them, in threads.
        The same layers on the same inputs with the same weights: the same values."""
        net = self.float_net
        shapes = net.blob_shapes
        fed = _inputs_instead_of_data(net.param, shapes)
        nets = []
        for _ in range(workers):
            w = Net(fed, phase=TEST, backend=self.backend, source=net.source)
            w.share_weights_from(net)
            if w.layer_names != net.layer_names:  # pragma: no cover - a net we cannot mirror
                return self._baseline_in_order(snap_after, live, first)
            nets.append(w)
        n = self.iterations
        values: list = [None] * n
        snaps = {k: [None] * n for k in snap_after.values()}
        data_tops = [t for i in range(prefix) for t in net.top_names[i]]
        stop = threading.Event()

        def run(w: int, b: int, feed: dict) -> None:
            if stop.is_set():
                return
            wn = nets[w]

            def on_layer(i, layer, names, tops):
                if i in snap_after:
                    k = snap_after[i]
                    snaps[k][b] = _copy_blobs(wn.blobs, live[k], self.xp)

            wn.forward(feed, on_layer=on_layer, end=self.end, keep_for_backward=False)
            values[b] = first_element(self._blob(wn), self.backend)
            self.on_batch("float baseline")

        with one_blas_thread(), ThreadPoolExecutor(workers) as pool:
            for g in range(0, n, workers):
                futures = []
                for w, b in enumerate(range(g, min(n, g + workers))):
                    net.forward(end=prefix, keep_for_backward=False)  # the data layers, in order
                    feed = _copy_blobs({t: net.blobs[t] for t in data_tops}, None, self.xp)
                    futures.append(pool.submit(run, w, b, feed))
                try:
                    for f in futures:
                        f.result()
                except BaseException:
                    stop.set()
                    raise
        for k, lst in snaps.items():
            self._snapshots[k] = lst
        self._feeds = [{} for _ in range(n)]  # no data layer after the first start layer
        return values

    def _blob(self, net):
        try:
            return net.blobs[self.score_blob]
        except KeyError:
            raise RistrettoError(f"score blob '{self.score_blob}' has no value after the forward pass") from None

    # -- candidates -------------------------------------------------------------
    def _test_param(self, cparam):
        st = self.param.state
        return filter_net(cparam, TEST, st.level, tuple(st.stage))

    def test_param(self, candidate: Candidate):
        """The TEST-phase NetParameter ``candidate`` describes."""
        return self._test_param(rewrite_net(self.param, candidate, self.lengths))

    def build(self, candidate: Candidate, fed_inputs: bool = False) -> Net:
        """The candidate's TEST net, sharing the float net's weight arrays.

        ``fed_inputs``: layers without bottoms become Input layers of the same shapes
        (the cached path feeds them anyway), so no data source is opened.
        """
        tparam = self._test_param(rewrite_net(self.param, candidate, self.lengths))
        if fed_inputs:
            tparam = _inputs_instead_of_data(tparam, self.float_net.blob_shapes)
        net = Net(tparam, phase=TEST, backend=self.backend, source=self.float_net.source)
        net.share_weights_from(self.float_net)
        return net

    def evaluate(self, candidate: Candidate, rule: StoppingRule | None = None, counted: bool = True, *,
                 reference: Reference | list[Reference] | None = None, keep: list[str] | None = None) -> Score:
        """Score ``candidate`` on the batches (memoized on the TEST net it describes).

        With ``rule``, stop as soon as the scored batches decide the candidate; the
        returned :class:`Score` then holds the decision and the mean of the batches
        scored. Without one, every batch is scored (reusing those scored before).
        ``counted=False``: finishing a net stopped early that the original procedure
        scored only once (not a candidate of its own in the counters).

        ``reference`` (one or several): start where the candidate first differs from it, when
        that is later than its first rewritten layer (of several, the latest such start).
        ``keep``: layer names; the run scores every batch, keeps the blobs in front of them
        and ``self.last_reference`` becomes this candidate's :class:`Reference` (None when
        the run could not keep them).
        """
        if self.baseline is None:
            raise RuntimeError("run_baseline first")
        t0 = time.perf_counter()
        n = len(self.float_net.layers)
        if counted:
            self.counters.candidates += 1
            self.counters.original_layer_forwards += n * self.iterations
        label = candidate.label()
        tparam = self.test_param(candidate)
        key = tparam.SerializeToString(deterministic=True)
        prev = self._memo.get(key)
        k = self.start_index(changed_layers(self.param, candidate))
        if prev is None and (k is None or k >= self.end):
            prev = self.baseline_evaluation  # nothing that reaches the score differs from the float net
        self.last_reference = None
        keeping = bool(keep) and k is not None and k < self.end
        values = list(prev.values) if prev is not None and prev.values else (
            [float(v) for v in prev.batches] if prev is not None else [None] * self.iterations)
        decide = (lambda vals: rule.decide(vals)) if rule is not None and not keeping else None
        done = prev is not None and not keeping and (all(v is not None for v in values) or
                                                     (decide is not None and decide(values) is not None))
        if done:
            self.counters.reused += 1
            self.on_skip(self.iterations, label + " (same net as scored before)")
            ev = Evaluation(candidate, prev.score, None, 0, list(prev.batches), time.perf_counter() - t0,
                            list(values), decide(values) if decide is not None else None)
        else:
            before = sum(v is not None for v in values)
            snaps = self._snapshots.get(k) if self.cached else None
            kept = dict(self._snapshots) if snaps is not None else {}
            refs = () if reference is None else (reference,) if isinstance(reference, Reference) else reference
            for ref in refs if self.cached else ():   # the one that lets the run start latest
                kr = self._index.get(ref.first_difference(tparam))
                if kr is not None and k is not None and kr > k and kr in ref.snapshots:
                    k, snaps, kept = kr, ref.snapshots[kr], dict(ref.snapshots)
            if snaps is not None:
                if keeping:  # the blobs of every batch are kept: run them all
                    values, before = [None] * self.iterations, 0
                points = [self._index[name] for name in keep or () if self._index.get(name, -1) > k]
                forwards_per_batch, ran, captured = self._run_cached(candidate, k, label, values, decide, snaps,
                                                                     points)
                start_name = self.float_net.layer_names[k]
                if keeping:
                    kept = {i: v for i, v in kept.items() if i <= k}
                    kept.update(captured)
                    self.last_reference = Reference(candidate, _layer_keys(tparam), kept)
            else:
                values = [None] * self.iterations  # a fresh net reads the data from the first record
                before = 0
                forwards_per_batch, ran = self._run_reread(candidate, label, values, decide)
                start_name = self.float_net.layer_names[0]
            if before:
                self.on_skip(before, label + " (batches scored before)")
            forwards = forwards_per_batch * ran
            self.counters.layer_forwards += forwards
            self.counters.batches_scored += ran
            scored = [v for v in values if v is not None]
            passed = decide(values) if decide is not None else None
            if len(scored) < self.iterations:
                self.counters.decided_early += 1
                self.on_skip(self.iterations - len(scored), label + " (decided early)")
            ev = Evaluation(candidate, mean_score(scored), start_name, forwards, [float(v) for v in scored],
                            time.perf_counter() - t0, [None if v is None else float(v) for v in values], passed)
            self._memo[key] = ev
        # Saved: every distinct candidate net on every batch (what scoring without early
        # stopping runs) minus the batches run (a net stopped early and later finished saved
        # nothing; batches run past a deciding prefix by a second thread count as run).
        nets = sum(1 for e in self._memo.values() if e is not self.baseline_evaluation)
        self.counters.batches_saved = max(0, nets * self.iterations - self.counters.batches_scored)
        self.evaluations.append(ev)
        return ev.to_score()

    def reference_bytes(self, names: list[str]) -> int:
        """Memory a :class:`Reference` kept in front of ``names`` takes (all batches)."""
        idx = [self._index[n] for n in names if n in self._index]
        shapes = self.float_net.blob_shapes
        return self.iterations * sum(int(np.prod(shapes[b])) * 4 for k in idx for b in set(self.live_blobs(k)))

    def _run_cached(self, candidate: Candidate, k: int, label: str, values: list, decide=None,
                    snapshots: list | None = None, keep: list[int] = ()) -> tuple[int, int, dict]:
        """The batches of ``values`` still None, from layer k on (from ``snapshots``, default
        the float net's), on ``self.workers`` nets in parallel threads, until ``decide``
        settles the candidate on a prefix of the batches (values past that prefix are
        dropped again, so the outcome does not depend on the threads' timing); with the
        blobs in front of the layers ``keep`` copied. Returns (layer forwards per batch,
        batches run, the copies: index -> one dict per batch)."""
        snapshots = self._snapshots[k] if snapshots is None else snapshots
        todo = [b for b, v in enumerate(values) if v is None]
        workers = max(1, min(self.workers, len(todo)))
        nets = [self.build(candidate, fed_inputs=True) for _ in range(workers)]
        _trim_weights_once(nets)
        end = max(self.end, k)
        run = sum(1 for i in range(k, end) if nets[0].bottom_names[i])  # data layers are fed
        after = {i - 1: i for i in keep if k < i < end}   # copy once layer i - 1 has run
        live = {i: self.live_blobs(i) for i in after.values()}
        captured = {i: [None] * self.iterations for i in after.values()}
        stop = threading.Event()
        lock = threading.Lock()
        n = len(values)
        prefix = [todo[0] if todo else n]   # values[:prefix] are all scored
        decided_at: list[int] = []
        ran = [0]

        def work(w: int) -> None:
            net = nets[w]
            for b in todo[w::workers]:
                if stop.is_set():
                    return
                # Fresh copies every time: the candidate trims some of them in place.
                net.blobs = _copy_blobs(snapshots[b], None, self.xp)
                feeds = {}
                for i, tops in self._feeds[b].items():
                    if i >= k:
                        feeds.update(_copy_blobs(tops, None, self.xp))

                def on_layer(i, layer, names, tops, b=b, net=net):
                    if i in after:
                        captured[after[i]][b] = _copy_blobs(net.blobs, live[after[i]], self.xp)

                net.forward(feeds, start=k, end=end, keep_for_backward=False,
                            on_layer=on_layer if after else None)
                value = first_element(self._blob(net), self.backend)
                with lock:
                    values[b] = value
                    ran[0] += 1
                    # Decide on the scored prefix only, one batch at a time: the first prefix
                    # that decides is the same whatever order the threads finish in.
                    while decide is not None and not decided_at and prefix[0] < n and values[prefix[0]] is not None:
                        prefix[0] += 1
                        p = prefix[0]
                        if decide(values[:p] + [None] * (n - p)) is not None:
                            decided_at.append(p)
                            stop.set()
                self.on_batch(label)
        if workers == 1:
            with one_blas_thread():
                work(0)
        else:
            with one_blas_thread(), ThreadPoolExecutor(workers) as pool:
                futures = [pool.submit(work, w) for w in range(workers)]
                try:
                    for f in futures:
                        f.result()
                except BaseException:  # an error or Ctrl-C: let the other threads stop soon
                    stop.set()
                    raise
        if decided_at:  # batches other threads scored past the deciding prefix are dropped
            for b in range(decided_at[0], n):
                values[b] = None
        return run, ran[0], captured

    def _run_reread(self, candidate: Candidate, label: str, values: list, decide=None) -> tuple[int, int]:
        """The original's way: a fresh net reads its data layers from the first record;
        returns (layer forwards per batch, batches run)."""
        net = self.build(candidate)
        try:
            _trim_weights_once([net])
            with one_blas_thread():
                for b in range(self.iterations):
                    net.forward(end=self.end, keep_for_backward=False)
                    values[b] = first_element(self._blob(net), self.backend)
                    self.on_batch(label)
                    if decide is not None and decide(values) is not None:
                        break
        finally:
            net.close()
        return self.end, sum(v is not None for v in values)

    def count_stats(self, net: Net, batches: int) -> None:
        """Account for the statistics pass (the same in both procedures)."""
        self.counters.layer_forwards += len(net.layers) * batches
        self.counters.original_layer_forwards += len(net.layers) * batches


def default_workers(backend) -> int:
    """Threads that score batches side by side: one per core (at most 4) on the CPU when
    BLAS can be held to one thread meanwhile, else 1 (and always 1 on a GPU)."""
    if not is_numpy(backend.xp):
        return 1
    return max(1, min(os.cpu_count() or 1, 4))


def _layer_keys(tparam) -> list[tuple[str, bytes]]:
    return [(lp.name, lp.SerializeToString(deterministic=True)) for lp in tparam.layer]


def _inputs_instead_of_data(tparam, shapes: dict):
    """``tparam`` with every bottomless layer turned into an Input layer of its tops' shapes."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(tparam)
    for lp in out.layer:
        if len(lp.bottom) or not len(lp.top) or any(t not in shapes for t in lp.top):
            continue
        keep = caffe_pb2.LayerParameter(name=lp.name, type="Input", top=list(lp.top))
        keep.include.extend(lp.include)
        keep.exclude.extend(lp.exclude)
        for t in lp.top:
            keep.input_param.shape.add().dim.extend(int(d) for d in shapes[t])
        lp.CopyFrom(keep)
    return out


def _trim_weights_once(nets) -> None:
    """Freeze each Ristretto layer's trimmed weights for all batches (TEST phase,
    deterministic rounding): the weights do not change during the search, the per-batch
    trim would redo the same work. Nets of one candidate share one trimmed copy."""
    frozen: dict[str, list] = {}
    for net in nets:
        for layer in net.layers:
            if isinstance(layer, RistrettoMixin) and layer.freezable:
                frozen[layer.name] = layer.freeze_params(frozen.get(layer.name))


def _copy_blobs(blobs: dict, names, xp) -> dict:
    """Copies of ``blobs[names]`` (all when names is None); names bound to one array stay one array."""
    memo: dict[int, object] = {}
    out = {}
    for name in (blobs if names is None else names):
        arr = blobs[name]
        c = memo.get(id(arr))
        if c is None:
            c = memo[id(arr)] = xp.array(arr, copy=True)
        out[name] = c
    return out

