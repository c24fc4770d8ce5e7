"""Layer base class and the registry that maps Caffe type names to classes.

Contract (the net knows nothing else of a layer):

* ``__init__(param, phase, backend)`` stores the ``LayerParameter``; no arrays yet.
* ``setup(bottom_shapes)`` runs once before the first ``reshape``: it checks the
  parameters and creates the learnable ``self.blobs`` (float32, from fillers) when
  the layer has any. Weights from a caffemodel replace them afterwards.
* ``reshape(bottom_shapes) -> top_shapes`` is pure shape inference.
* ``forward(bottoms) -> tops`` returns new arrays (or the bottom itself for a
  pass-through). A layer may keep in ``self`` what its backward needs.
* ``backward(top_diffs, bottoms, tops, propagate_down) -> bottom_diffs``: adds the
  parameter gradients into ``self.diffs`` (same shapes as ``self.blobs``; the caller,
  normally the net, has made them exist: a layer may assume them) and returns one
  gradient (or None) per bottom. ``top_diffs[i]`` may be None when nothing
  downstream needs top i; treat it as zero.

Hooks with defaults here: ``allow_force_backward(i)`` (may ``force_backward`` ask
for bottom i's gradient; not for a loss layer's labels), ``compute_params()`` (the arrays forward and the bottom
gradient compute with: ``self.blobs``; the Ristretto layers hand trimmed copies),
``macs(bottom_shapes, top_shapes)`` (multiply-accumulates of one forward),
``canonical_axis(axis, ndim)``, ``accumulate_param_diffs(*grads)`` and ``close()``
(release files and threads; the data layers).

In place (an explicit opt-in): a layer with ``runs_in_place = True`` provides
``forward_in_place(bottoms) -> tops`` that writes its top into ``bottoms[0]`` and
returns it, with the same values as ``forward``. The net calls it only where Caffe's
graph makes the top the bottom (one bottom, one top, same name), nothing keeps the
bottom for a backward pass, and no other blob or caller holds that array (see
``Net.forward``); everywhere else it calls ``forward``.

Layers compute with ``self.xp`` only, and in the dtype of their inputs/params,
so gradient checks can run in float64 and the GPU path is the same code.
"""
from __future__ import annotations

from ..errors import RistrettoError
from ..proto import caffe_pb2
from .refused import REFUSED_TYPES

LAYER_TYPES: dict[str, type["Layer"]] = {}

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST  # caffe.Phase values


def register(*type_names: str):
    """Class decorator: register a layer class under one or more Caffe type names."""

    def deco(cls):
        for name in type_names:
            if name in LAYER_TYPES and LAYER_TYPES[name] is not cls:
                raise ValueError(f"layer type {name!r} registered twice")
            LAYER_TYPES[name] = cls
        cls.type_names = tuple(type_names)
        return cls

    return deco


def create_layer(param, phase: int, backend) -> "Layer":
    """Instantiate the registered class for ``param.type`` (importing the package
    :mod:`ristretto_cli.layers` has registered every type)."""
    cls = LAYER_TYPES.get(param.type)
    if cls is None:
        if param.type in REFUSED_TYPES:
            raise RistrettoError(f"layer '{param.name}': type '{param.type}' is refused: {REFUSED_TYPES[param.type]}")
        known = ", ".join(sorted(LAYER_TYPES))
        refused = ", ".join(sorted(REFUSED_TYPES))
        raise RistrettoError(f"layer '{param.name}': unknown type '{param.type}'; supported types: {known}; "
                             f"refused types: {refused}")
    if param.HasField("quantization_param") and not cls.takes_quantization_param:
        takers = ", ".join(sorted(n for n, c in LAYER_TYPES.items() if c.takes_quantization_param))
        raise RistrettoError(f"layer '{param.name}' ({param.type}) cannot take a quantization_param; the "
                             f"Ristretto types can: {takers}")
    return cls(param, phase, backend)


class Layer:
    type_names: tuple[str, ...] = ()
    #: the Ristretto layers read a ``quantization_param``; on any other type it is an error
    takes_quantization_param: bool = False
    # Arity: an int, a (min, max) tuple with max None for unbounded, or None for any.
    num_bottoms: int | tuple | None = None
    num_tops: int | tuple | None = None
    #: loss layers weigh their first top by 1 unless loss_weight says otherwise
    is_loss: bool = False
    #: provides forward_in_place (see the module docstring)
    runs_in_place: bool = False

    def __init__(self, param, phase: int, backend):
        self.param = param
        self.phase = phase
        self.backend = backend
        self.xp = backend.xp
        self.blobs: list = []
        self.diffs: list = []

    # -- identity ---------------------------------------------------------
    @property
    def name(self) -> str:
        return self.param.name

    @property
    def type(self) -> str:
        return self.param.type

    def error(self, message: str) -> RistrettoError:
        """An error that names this layer; ``raise self.error('...')``."""
        return RistrettoError(f"layer '{self.name}' ({self.type}): {message}")

    # -- contract ---------------------------------------------------------
    def check_arity(self, n_bottoms: int, n_tops: int) -> None:
        for what, n, rule in (("bottom", n_bottoms, self.num_bottoms), ("top", n_tops, self.num_tops)):
            if rule is None:
                continue
            lo, hi = (rule, rule) if isinstance(rule, int) else rule
            if n < lo or (hi is not None and n > hi):
                want = str(lo) if lo == hi else f"{lo}..{'' if hi is None else hi}"
                raise self.error(f"takes {want} {what} blob(s), got {n}")

    def canonical_axis(self, axis: int, ndim: int, what: str = "axis") -> int:
        """Caffe's ``Blob::CanonicalAxisIndex``: -ndim <= axis < ndim, negatives count
        from the end; an axis out of range is an error that names this layer."""
        axis = int(axis)
        if not -ndim <= axis < ndim:
            raise self.error(f"{what} {axis} is out of range for a {ndim}-axis blob")
        return axis + ndim if axis < 0 else axis

    def setup(self, bottom_shapes: list[tuple]) -> None:
        pass

    def reshape(self, bottom_shapes: list[tuple]) -> list[tuple]:
        raise NotImplementedError

    def forward(self, bottoms: list) -> list:
        raise NotImplementedError

    def backward(self, top_diffs: list, bottoms: list, tops: list, propagate_down: list[bool]) -> list:
        return [None] * len(bottoms)

    def allow_force_backward(self, bottom_index: int) -> bool:
        """Caffe's ``AllowForceBackward``: may a net's ``force_backward`` ask for the gradient
        of this bottom? Yes here; the loss layers say no for their labels."""
        return True

    def forward_in_place(self, bottoms: list) -> list:
        """``forward`` writing the top into ``bottoms[0]`` (layers with ``runs_in_place``)."""
        return self.forward(bottoms)

    def compute_params(self) -> list:
        """The learnable arrays that forward and the bottom gradient compute with, read
        at call time: ``self.blobs``. A subclass may hand other arrays of the same
        shapes (the Ristretto layers: trimmed copies); the parameter gradients still
        go to ``self.diffs``, for ``self.blobs`` (straight-through)."""
        return self.blobs

    def macs(self, bottom_shapes: list[tuple], top_shapes: list[tuple]) -> int:
        """Multiply-accumulates of one forward pass from the blob shapes (0: a layer
        without weighted sums; the convolution and inner-product layers override it)."""
        return 0

    def close(self) -> None:
        """Release files and threads (the data layers); idempotent. Nothing here."""

    # -- learning ---------------------------------------------------------
    def zero_diffs(self) -> None:
        self.diffs = [self.xp.zeros_like(b) for b in self.blobs]

    def accumulate_param_diffs(self, *grads) -> None:
        """Add one gradient per learnable blob (None: none) into ``self.diffs``, in the
        diffs' dtype. The diffs exist already (the net makes them before backward)."""
        if len(self.diffs) != len(self.blobs):
            raise self.error(f"backward with {len(self.diffs)} diffs for {len(self.blobs)} learnable blobs; "
                             f"call zero_diffs() first (Net.backward does)")
        for diff, grad in zip(self.diffs, grads):
            if grad is not None:
                diff += grad.astype(diff.dtype, copy=False).reshape(diff.shape)

    def param_multipliers(self) -> list[tuple[float, float]]:
        """(lr_mult, decay_mult) per learnable blob, from ``param {}`` entries."""
        out = []
        for i in range(len(self.blobs)):
            if i < len(self.param.param):
                spec = self.param.param[i]
                out.append((spec.lr_mult, spec.decay_mult))
            else:
                out.append((1.0, 1.0))
        return out

    def loss_weights(self, n_tops: int) -> list[float]:
        if len(self.param.loss_weight):
            if len(self.param.loss_weight) != n_tops:
                raise self.error(f"loss_weight has {len(self.param.loss_weight)} entries for {n_tops} tops")
            return list(self.param.loss_weight)
        return [1.0 if (self.is_loss and i == 0) else 0.0 for i in range(n_tops)]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
