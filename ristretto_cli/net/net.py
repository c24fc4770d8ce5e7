"""The executor: builds layers from a NetParameter and runs forward / backward.

Blobs live in ``self.blobs`` by name. A layer's forward returns new arrays and the
net rebinds the top names, so an in-place layer (top == bottom) simply replaces
the blob; a layer that opts in (``runs_in_place``: ReLU, BatchNorm, Scale) writes
into the bottom instead when no backward pass needs it and no one else holds it. Layers that trim their bottom in place (the Ristretto layers) mutate the
array object, which every reader of the blob shares, as Caffe's memory does.
"""
from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass
from typing import Callable

from ..backend import Backend, default_backend
from ..errors import RistrettoError
from ..layers import TEST, TRAIN, Layer, create_layer
from ..proto import caffe_pb2
from .graph import filter_net, insert_splits

log = logging.getLogger(__name__)

PHASES = {"TRAIN": TRAIN, "TEST": TEST, TRAIN: TRAIN, TEST: TEST}


@dataclass
class ParamRef:
    """One learnable array of the net, as the solver sees it."""

    layer: Layer
    index: int
    lr_mult: float
    decay_mult: float
    name: str  # "<layer>/<index>" or the shared ParamSpec name

    @property
    def data(self):
        return self.layer.blobs[self.index]

    @property
    def diff(self):
        return self.layer.diffs[self.index]


#: references to a blob's array while the net calls a layer on it: self.blobs, the
#: bottoms list and sys.getrefcount's own argument
_NET_REFERENCES = 3


def _exclusive(array) -> bool:
    """May an in-place layer overwrite ``array``? Only when it owns its memory (not a
    view of another blob), is writeable, and nothing but the net's blob table refers to
    it: no second blob name (a Split or pass-through top), no view of it, no array
    kept for backward, no caller holding the previous pass's outputs."""
    if sys.getrefcount(array) > _NET_REFERENCES + 1:  # (+1: this function's own argument)
        return False
    if not getattr(array.flags, "writeable", True):  # (a flags object refers to its array)
        return False
    base = getattr(array, "base", None)
    if base is None:
        return True
    # A reshaped result (a view of an array the layer made and let go) is fine when the
    # array it views is held by nothing else: base pointer, ``base`` here, getrefcount.
    return type(base) is type(array) and getattr(base, "base", None) is None and sys.getrefcount(base) <= 3


def _phase(phase) -> int:
    if isinstance(phase, str):
        phase = phase.upper()
    if phase not in PHASES:
        raise RistrettoError(f"unknown phase {phase!r}; use TRAIN or TEST")
    return PHASES[phase]


class Net:
    """A Caffe network built for one phase on one backend.

    ``level`` replaces the prototxt's ``state { level }`` when given; ``stages`` are added
    to its ``state { stage }`` entries, as Caffe's ``Net(file, phase, level, &stages)``.
    """

    def __init__(self, param, phase="TEST", backend: Backend | None = None, level: int | None = None,
                 stages=None, source: str = "<net>"):
        try:
            self._build(param, phase, backend, level, stages, source)
        except RistrettoError as exc:  # a fault in the definition names the file it came from
            if source in ("<net>", "") or str(exc).startswith(f"{source}:"):
                raise
            raise RistrettoError(f"{source}: {exc}") from None

    def _build(self, param, phase, backend, level, stages, source) -> None:
        self.backend = backend or default_backend()
        self.xp = self.backend.xp
        self.phase = _phase(phase)
        self.source = source
        level = param.state.level if level is None else level
        stages = tuple(param.state.stage) + tuple(stages or ())  # Caffe's Net adds the given stages
        self.name = param.name
        self.param = filter_net(param, self.phase, level, stages)  # what to_proto writes back
        built = insert_splits(self.param)

        self.layers: list[Layer] = []
        self.bottom_names: list[list[str]] = []
        self.top_names: list[list[str]] = []
        self.blob_shapes: dict[str, tuple] = {}
        self.loss_weights: dict[str, float] = {}
        for lp in built.layer:
            layer = create_layer(lp, self.phase, self.backend)
            bottoms, tops = list(lp.bottom), list(lp.top)
            layer.check_arity(len(bottoms), len(tops))
            shapes = [self.blob_shapes[b] for b in bottoms]
            layer.setup(shapes)
            top_shapes = layer.reshape(shapes)
            if len(top_shapes) != len(tops):
                raise layer.error(f"produced {len(top_shapes)} tops for {len(tops)} top names")
            for t, s, w in zip(tops, top_shapes, layer.loss_weights(len(tops))):
                self.blob_shapes[t] = tuple(int(d) for d in s)
                if any(d <= 0 for d in self.blob_shapes[t]):
                    raise layer.error(f"top '{t}' would have shape {self.blob_shapes[t]}; every dimension "
                                      f"must be positive")
                if w:
                    self.loss_weights[t] = float(w)
            self.layers.append(layer)
            self.bottom_names.append(bottoms)
            self.top_names.append(tops)
        self.layer_names = [l.name for l in self.layers]
        self._by_name = {l.name: l for l in self.layers}
        # Outputs are the blobs nothing reads after their last producer, in name order
        # like Caffe's std::set of available blobs ("first output" = first name).
        available: set[str] = set()
        for bs, ts in zip(self.bottom_names, self.top_names):
            available.difference_update(bs)
            available.update(ts)
        self.outputs = sorted(available)
        self.inputs = [t for i, ts in enumerate(self.top_names) if not self.bottom_names[i] for t in ts]
        self._share_named_params()
        self.blobs: dict = {}
        self._saved: list = [None] * len(self.layers)

    # -- construction helpers ---------------------------------------------
    def _share_named_params(self) -> None:
        """Layers whose ``param { name: ... }`` agree share one array (Caffe's weight sharing)."""
        owners: dict[str, tuple[Layer, int]] = {}
        self._shared: dict[tuple[int, int], tuple[Layer, int]] = {}
        for li, layer in enumerate(self.layers):
            for pi, spec in enumerate(layer.param.param):
                if not spec.name or pi >= len(layer.blobs):
                    continue
                if spec.name not in owners:
                    owners[spec.name] = (layer, pi)
                    continue
                owner, oi = owners[spec.name]
                src = owner.blobs[oi]
                if tuple(src.shape) != tuple(layer.blobs[pi].shape):
                    if spec.share_mode != caffe_pb2.ParamSpec.PERMISSIVE or src.size != layer.blobs[pi].size:
                        raise layer.error(f"shared param '{spec.name}' has shape {tuple(layer.blobs[pi].shape)}, "
                                          f"owner '{owner.name}' has {tuple(src.shape)}")
                layer.blobs[pi] = src if src.shape == layer.blobs[pi].shape else src.reshape(layer.blobs[pi].shape)
                self._shared[(li, pi)] = (owner, oi)

    def layer(self, name: str) -> Layer:
        try:
            return self._by_name[name]
        except KeyError:
            raise RistrettoError(f"net '{self.name}' has no layer '{name}'") from None

    def reshape(self, input_shapes: dict) -> None:
        """Follow new input shapes, like Caffe's ``Net::Reshape``: ``input_shapes`` gives
        {input blob: shape} (all the inputs that change, together); every layer's
        ``reshape`` (pure shape inference; ``setup`` is not re-run, the parameters stay)
        runs in order on the new bottom shapes and ``blob_shapes`` follows. A batch
        change only changes the batch axis; a shape the parameters cannot take (another
        fan-in for an InnerProduct, other channels for a Convolution) is a one-line error
        naming the layer and both shapes, and leaves the net as it was. Feed arrays of
        the new shapes to the next ``forward`` (an unfed Input layer still gives zeros of
        its declared shape)."""
        shapes = {name: tuple(int(d) for d in s) for name, s in input_shapes.items()}
        for name in shapes:
            if name not in self.inputs:
                raise RistrettoError(f"{self._where()}no input blob '{name}' to reshape; its inputs are "
                                     f"{', '.join(self.inputs) or 'none'}")
        fed = ", ".join(f"{n} {s}" for n, s in shapes.items())
        new: dict[str, tuple] = {}
        for i, layer in enumerate(self.layers):
            bnames, tnames = self.bottom_names[i], self.top_names[i]
            given = [t for t in tnames if t in shapes]
            if given and len(given) < len(tnames):
                raise layer.error(f"makes {', '.join(tnames)}; give shapes for all of them, not only "
                                  f"{', '.join(given)}")
            if given:
                top_shapes = [shapes[t] for t in tnames]
            else:
                bottom_shapes = [new[b] for b in bnames]
                try:
                    top_shapes = layer.reshape(bottom_shapes)
                except RistrettoError as exc:
                    now = "; ".join(f"bottom '{b}' {new[b]} after reshaping, {self.blob_shapes[b]} as declared"
                                    for b in bnames)
                    raise RistrettoError(f"{self._where()}{exc} ({now})") from None
            for t, s in zip(tnames, top_shapes):
                s = tuple(int(d) for d in s)
                if any(d <= 0 for d in s):
                    raise RistrettoError(f"{self._where()}{layer.error(f'top {t!r} would have shape {s}')} "
                                         f"with inputs {fed}")
                new[t] = s
        self.blob_shapes.update(new)
        self.blobs = {}
        self._saved = [None] * len(self.layers)

    def _where(self) -> str:
        return "" if self.source in ("<net>", "") else f"{self.source}: "

    # -- execution ---------------------------------------------------------
    def forward(self, inputs: dict | None = None, *, start: int = 0, end: int | None = None,
                on_layer: Callable | None = None, keep_for_backward: bool | None = None) -> dict:
        """Run layers ``start`` .. ``end``-1 and return {output blob: array}.

        ``inputs`` feeds blobs by name: a layer without bottoms whose tops are all fed
        is skipped (so arrays can replace Input or Data layers). ``on_layer(i, layer,
        top_names, tops)`` is called right after each layer runs. Starting later than
        0 reuses the blobs of the previous pass (the quantize search relies on it).
        """
        xp = self.xp
        inputs = inputs or {}
        for name, arr in inputs.items():
            if name not in self.blob_shapes:
                raise RistrettoError(f"net '{self.name}' has no blob '{name}' to feed; inputs are "
                                     f"{', '.join(self.inputs) or 'none'}")
            # Copy like Caffe's input blobs: layers that trim their bottom in place must not
            # change the caller's array.
            self.blobs[name] = xp.array(arr, dtype=xp.float32, copy=True)
        if keep_for_backward is None:
            keep_for_backward = self.phase == TRAIN
        end = len(self.layers) if end is None else end
        for i in range(start, end):
            layer, bnames, tnames = self.layers[i], self.bottom_names[i], self.top_names[i]
            if not bnames and tnames and all(t in inputs for t in tnames):
                tops = [self.blobs[t] for t in tnames]
                bottoms = []
            else:
                try:
                    bottoms = [self.blobs[b] for b in bnames]
                except KeyError as exc:
                    raise RistrettoError(f"layer '{layer.name}': blob {exc} has no value; run the "
                                         f"layers before it or feed it") from None
                if (layer.runs_in_place and not keep_for_backward and len(bnames) == 1
                        and tnames == bnames and _exclusive(bottoms[0])):
                    tops = layer.forward_in_place(bottoms)
                else:
                    tops = layer.forward(bottoms)
            if keep_for_backward:
                self._saved[i] = (bottoms, tops)
            self.blobs.update(zip(tnames, tops))
            if on_layer is not None:
                on_layer(i, layer, tnames, tops)
            bottoms = tops = None  # the blob table holds them now (see _exclusive)
        return {o: self.blobs[o] for o in self.outputs if o in self.blobs}

    def loss(self) -> float:
        """Sum over loss-weighted blobs of weight * sum(blob), as Caffe's Net::ForwardBackward reports."""
        total = 0.0
        for name, w in self.loss_weights.items():
            if name in self.blobs:
                total += w * float(self.blobs[name].sum())
        return total

    def needs_backward(self, force: bool | None = None) -> list[bool]:
        """Per layer: does any gradient reach or leave it (Caffe's layer_need_backward);
        ``force`` (default: the net's ``force_backward``) counts every layer with bottoms."""
        need_blob: set[str] = set()
        force = self.param.force_backward if force is None else force
        out = []
        for i, layer in enumerate(self.layers):
            learns = any(m[0] != 0 for m in layer.param_multipliers()) if layer.blobs else False
            from_below = any(b in need_blob for b in self.bottom_names[i])
            need = learns or from_below or (force and bool(self.bottom_names[i]))
            out.append(need)
            if need:
                need_blob.update(self.top_names[i])
        return out

    def backward(self, top_diffs: dict | None = None, *, on_layer: Callable | None = None) -> dict:
        """Back-propagate from the loss-weighted tops; parameter gradients accumulate
        into each layer's ``diffs`` (call ``zero_diffs`` between iterations). Returns
        the gradient of every blob that got one (an in-place blob: the gradient at its
        first producer's top, as Caffe's shared diff ends). ``top_diffs`` ({blob: array})
        sets the gradient arriving at those blobs instead (pycaffe's ``net.backward(**diffs)``);
        the loss-weighted tops not named keep their loss weight. ``on_layer(i, layer,
        bottom_names, bottom_diffs)`` is called right after each layer's backward runs
        (layers that get no gradient are skipped), mirroring ``forward``'s."""
        xp = self.xp
        diffs: dict = {}
        for name, w in self.loss_weights.items():
            diffs[name] = xp.full(self.blobs[name].shape, w, dtype=self.blobs[name].dtype)
        for name, d in (top_diffs or {}).items():
            if name not in self.blobs:
                raise RistrettoError(f"net '{self.name}' has no blob '{name}' with a value to take a gradient")
            d = xp.asarray(d, dtype=self.blobs[name].dtype)
            if tuple(d.shape) != tuple(self.blobs[name].shape):
                raise RistrettoError(f"gradient for blob '{name}' has shape {tuple(d.shape)}, the blob "
                                     f"{tuple(self.blobs[name].shape)}")
            diffs[name] = d
        for layer in self.layers:  # the net's guarantee: layers may assume their diffs exist
            if len(layer.diffs) != len(layer.blobs):
                layer.zero_diffs()
        force = bool(self.param.force_backward)
        need = self.needs_backward()
        # Caffe: force_backward adds each layer's own bottoms (where AllowForceBackward says
        # so, not a loss layer's labels) to what the gradient flow itself needs
        natural = self.needs_backward(force=False) if force else need
        reached: dict = {}
        need_blob = set()
        for i, ts in enumerate(self.top_names):
            if natural[i]:
                need_blob.update(ts)
        for i in range(len(self.layers) - 1, -1, -1):
            if not need[i]:
                continue
            saved = self._saved[i]
            if saved is None:
                raise RistrettoError("backward needs a forward pass with keep_for_backward=True first")
            layer, bnames, tnames = self.layers[i], self.bottom_names[i], self.top_names[i]
            arriving = [diffs.pop(t, None) for t in tnames]
            for t, d in zip(tnames, arriving):
                if d is not None:
                    reached[t] = d  # an in-place blob ends with its producer's top gradient, as in Caffe
            if all(d is None for d in arriving):
                continue
            bottoms, tops = saved
            if len(layer.param.propagate_down):
                prop = [bool(p) for p in layer.param.propagate_down]
            else:
                prop = [(b in need_blob) or (force and layer.allow_force_backward(j)) for j, b in enumerate(bnames)]
            bdiffs = layer.backward(arriving, bottoms, tops, prop)
            for b, d, p in zip(bnames, bdiffs, prop):
                if d is None or not p:
                    continue
                diffs[b] = d if b not in diffs else diffs[b] + d
            if on_layer is not None:
                on_layer(i, layer, bnames, bdiffs)
        for (li, pi), (owner, oi) in self._shared.items():
            sharer = self.layers[li]
            owner.diffs[oi] += sharer.diffs[pi].reshape(owner.diffs[oi].shape)
            sharer.diffs[pi][...] = 0
        reached.update(diffs)
        return reached

    def zero_diffs(self) -> None:
        for layer in self.layers:
            if layer.blobs:
                layer.zero_diffs()

    def close(self) -> None:
        """Stop the data layers' prefetch threads and close their databases (every
        layer's ``close``). Best effort, so that it can run in ``finally`` blocks: a
        layer that fails to close is logged and the others still close."""
        for layer in self.layers:
            try:
                layer.close()
            except Exception as exc:  # noqa: BLE001 - closing must not hide the error being handled
                log.warning("layer '%s': close failed: %s", layer.name, exc)

    def release(self) -> None:
        """Drop activations kept for backward."""
        self._saved = [None] * len(self.layers)

    # -- parameters -------------------------------------------------------
    def learnable_params(self) -> list[ParamRef]:
        """Every learnable array once (shared arrays are listed at their owner)."""
        out = []
        for li, layer in enumerate(self.layers):
            for pi, (lr, decay) in enumerate(layer.param_multipliers()):
                if (li, pi) in self._shared:
                    continue
                name = layer.param.param[pi].name if pi < len(layer.param.param) and layer.param.param[pi].name \
                    else f"{layer.name}/{pi}"
                out.append(ParamRef(layer, pi, lr, decay, name))
        return out

    def load_weights(self, paths) -> int:
        """Copy weights by layer name from one or more caffemodels (later ones win), like
        Caffe; returns how many layers with parameters received weights."""
        from ..caffe.weights import load_weights

        if isinstance(paths, str):
            paths = [p for p in paths.split(",") if p]
        copied = 0
        for name, entries in load_weights(list(paths), with_source=True).items():
            layer = self._by_name.get(name)
            if layer is None:
                continue
            self._assign(layer, entries, paths)
            copied += bool(layer.blobs)
        return copied

    def _assign(self, layer: Layer, entries, paths=()) -> None:
        from ..caffe.weights import fit_blob

        if len(entries) != len(layer.blobs):
            where = entries[0][2] if entries else ",".join(map(str, paths)) or "weights"
            raise RistrettoError(f"{where}: layer '{layer.name}' ({layer.type}): {len(entries)} stored blobs, "
                                 f"the net's layer has {len(layer.blobs)}")
        for k, entry in enumerate(entries):
            array, legacy, filename = entry
            target = layer.blobs[k]
            fitted = fit_blob(array, legacy, tuple(target.shape), layer.name, k, filename)
            target[...] = self.xp.asarray(fitted, dtype=target.dtype)

    def share_weights_from(self, other: "Net") -> None:
        """Make layers of the same name use ``other``'s arrays (Caffe's ShareTrainedLayersWith)."""
        for layer in self.layers:
            src = other._by_name.get(layer.name)
            if src is None or not layer.blobs:
                continue
            if len(src.blobs) != len(layer.blobs):
                raise layer.error(f"cannot share weights with '{src.name}': {len(src.blobs)} vs "
                                  f"{len(layer.blobs)} blobs")
            for k in range(len(layer.blobs)):
                if tuple(src.blobs[k].shape) != tuple(layer.blobs[k].shape):
                    raise layer.error(f"cannot share blob {k}: shape {tuple(src.blobs[k].shape)} vs "
                                      f"{tuple(layer.blobs[k].shape)}")
            layer.blobs = src.blobs

    def to_proto(self, with_weights: bool = True):
        """The net's NetParameter (without inserted Splits), with its current weights."""
        from ..caffe.blobproto import array_to_blob

        out = caffe_pb2.NetParameter()
        out.CopyFrom(self.param)
        if with_weights:
            for lp in out.layer:
                layer = self._by_name.get(lp.name)
                del lp.blobs[:]
                if layer is None:
                    continue
                for b in layer.blobs:
                    lp.blobs.add().CopyFrom(array_to_blob(self.backend.to_numpy(b)))
        return out

    # -- reporting -----------------------------------------------------------
    def count_params(self) -> int:
        return sum(int(math.prod(r.data.shape)) for r in self.learnable_params())

    def __repr__(self) -> str:
        phase = "TRAIN" if self.phase == TRAIN else "TEST"
        return f"<Net {self.name!r} {phase}: {len(self.layers)} layers, outputs {self.outputs}>"
