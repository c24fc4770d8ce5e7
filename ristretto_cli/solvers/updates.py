"""Caffe's update rules (sgd_solver.cpp and its subclasses), one class each.

One step, in Caffe's order (SGDSolver::ApplyUpdate):

1. ClipGradients: when ``clip_gradients >= 0`` and the L2 norm of all parameter
   diffs together exceeds it, scale every diff by ``clip_gradients / norm``
   (before the iter_size normalisation, as Caffe does).
2. per parameter: Normalize (diff *= 1 / iter_size), Regularize (diff += decay *
   data, or decay * sign(data) for L1, decay = weight_decay * decay_mult),
   ComputeUpdateValue (the rule below, with local_rate = rate * lr_mult; it may keep
   history), then data -= update, in place (test nets share the arrays).

History layout is Caffe's ``history_``, which the .solverstate stores in this order:
one array per learnable parameter, and for AdaDelta and Adam a second set after the
first (AdaDelta: squared updates; Adam: second moments ``v`` after the means ``m``).
"""
from __future__ import annotations

import math

from ..errors import RistrettoError

#: Caffe's registered solver names, in SolverParameter.SolverType enum order.
CAFFE_SOLVERS = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")


class UpdateRule:
    """Plain SGD with momentum; the base of every other rule."""

    caffe_name = "SGD"
    history_sets = 1

    def __init__(self, param, params: list, xp):
        self.param = param
        self.params = params
        self.xp = xp
        self.check(param)
        if param.regularization_type not in ("L1", "L2"):
            raise RistrettoError(f"solver: unknown regularization_type '{param.regularization_type}'; "
                                 f"use L2 or L1")
        self.history = [xp.zeros(p.data.shape, dtype=p.data.dtype)
                        for _ in range(self.history_sets) for p in params]
        #: (norm, scale) of the last clipped step, None when the last step was not clipped
        self.last_clip: tuple[float, float] | None = None

    # -- checks Caffe makes in the solver constructors ------------------------
    @classmethod
    def check(cls, param) -> None:
        pass

    # -- one step -------------------------------------------------------------
    def apply(self, rate: float, iteration: int) -> None:
        """Turn the accumulated diffs into updates and subtract them from the data."""
        self.clip_gradients()
        iter_size = max(1, int(self.param.iter_size))
        for i, ref in enumerate(self.params):
            g = ref.diff
            dt = g.dtype.type
            if iter_size != 1:
                g *= dt(1.0) / dt(iter_size)
            self.regularize(ref, g)
            local_rate = dt(rate) * dt(ref.lr_mult)
            update = self.compute_update(i, g, local_rate, iteration)
            data = ref.data
            data -= update

    def clip_gradients(self) -> None:
        self.last_clip = None
        clip = float(self.param.clip_gradients)
        if clip < 0:
            return
        sumsq = 0.0
        for ref in self.params:
            g = ref.diff
            sumsq += float((g * g).sum())
        norm = math.sqrt(sumsq)
        if norm > clip:
            scale = clip / norm
            for ref in self.params:
                g = ref.diff
                g *= g.dtype.type(scale)
            self.last_clip = (norm, scale)

    def regularize(self, ref, g) -> None:
        dt = g.dtype.type
        local_decay = dt(self.param.weight_decay) * dt(ref.decay_mult)
        if not local_decay:
            return
        if self.param.regularization_type == "L2":
            g += local_decay * ref.data
        else:  # L1: sign(0) = 0, as caffe_cpu_sign
            g += local_decay * self.xp.sign(ref.data)

    def compute_update(self, i: int, g, local_rate, iteration: int):
        """SGD: h = momentum * h + local_rate * g; update = h."""
        h = self.history[i]
        h *= h.dtype.type(self.param.momentum)
        h += local_rate * g
        return h

    # -- state ----------------------------------------------------------------
    def set_history(self, arrays: list, where: str) -> None:
        """Replace the history with arrays from a .solverstate (Caffe's order)."""
        if len(arrays) != len(self.history):
            raise RistrettoError(f"{where}: has {len(arrays)} history blobs, the {self.caffe_name} solver on "
                                 f"this net needs {len(self.history)} (a different net or solver type?)")
        for k, (mine, theirs) in enumerate(zip(self.history, arrays)):
            if int(mine.size) != int(theirs.size):
                ref = self.params[k % len(self.params)]
                raise RistrettoError(f"{where}: history blob {k} has {theirs.size} values, parameter "
                                     f"'{ref.name}' has {mine.size}")
            mine[...] = self.xp.asarray(theirs, dtype=mine.dtype).reshape(mine.shape)


class Nesterov(UpdateRule):
    """h' = momentum * h + local_rate * g; update = (1 + momentum) * h' - momentum * h."""

    caffe_name = "Nesterov"

    def compute_update(self, i, g, local_rate, iteration):
        h = self.history[i]
        m = h.dtype.type(self.param.momentum)
        previous = h.copy()
        h *= m
        h += local_rate * g
        update = (m + h.dtype.type(1)) * h
        update -= m * previous
        return update


class AdaGrad(UpdateRule):
    """h += g^2; update = local_rate * g / (sqrt(h) + delta)."""

    caffe_name = "AdaGrad"

    @classmethod
    def check(cls, param):
        if param.momentum != 0:
            raise RistrettoError("solver: momentum cannot be used with AdaGrad (set momentum: 0)")

    def compute_update(self, i, g, local_rate, iteration):
        xp = self.xp
        h = self.history[i]
        h += g * g
        denom = xp.sqrt(h)
        denom += h.dtype.type(self.param.delta)
        return local_rate * (g / denom)


class RMSProp(UpdateRule):
    """h = (1 - rms_decay) * g^2 + rms_decay * h; update = local_rate * g / (sqrt(h) + delta)."""

    caffe_name = "RMSProp"

    @classmethod
    def check(cls, param):
        if param.momentum != 0:
            raise RistrettoError("solver: momentum cannot be used with RMSProp (set momentum: 0)")
        if not 0 <= param.rms_decay <= 1:
            raise RistrettoError(f"solver: rms_decay must lie in [0, 1], got {param.rms_decay:g}")

    def compute_update(self, i, g, local_rate, iteration):
        xp = self.xp
        h = self.history[i]
        dt = h.dtype.type
        decay = dt(self.param.rms_decay)
        h *= decay
        h += (dt(1) - decay) * (g * g)
        denom = xp.sqrt(h)
        denom += dt(self.param.delta)
        return local_rate * (g / denom)


class AdaDelta(UpdateRule):
    """With m = momentum (Caffe uses it as the decay), hg = history of g^2, hu = history
    of squared updates: hg = (1-m) g^2 + m hg; u = g * sqrt((hu + delta) / (hg + delta));
    hu = (1-m) u^2 + m hu; update = local_rate * u."""

    caffe_name = "AdaDelta"
    history_sets = 2

    def compute_update(self, i, g, local_rate, iteration):
        xp = self.xp
        n = len(self.params)
        hg, hu = self.history[i], self.history[n + i]
        dt = hg.dtype.type
        m = dt(self.param.momentum)
        delta = dt(self.param.delta)
        hg *= m
        hg += (dt(1) - m) * (g * g)
        u = g * xp.sqrt((hu + delta) / (hg + delta))
        hu *= m
        hu += (dt(1) - m) * (u * u)
        u *= local_rate
        return u


class Adam(UpdateRule):
    """m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; with t = iter + 1,
    update = local_rate * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + delta);
    b1 = momentum, b2 = momentum2."""

    caffe_name = "Adam"
    history_sets = 2

    def compute_update(self, i, g, local_rate, iteration):
        xp = self.xp
        n = len(self.params)
        m, v = self.history[i], self.history[n + i]
        dt = m.dtype.type
        b1, b2 = dt(self.param.momentum), dt(self.param.momentum2)
        t = iteration + 1
        correction = dt(math.sqrt(1.0 - float(b2) ** t) / (1.0 - float(b1) ** t))
        m *= b1
        m += (dt(1) - b1) * g
        v *= b2
        v += (dt(1) - b2) * (g * g)
        denom = xp.sqrt(v)
        denom += dt(self.param.delta)
        return (local_rate * correction) * (m / denom)


RULES = {cls.caffe_name.lower(): cls for cls in (UpdateRule, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam)}


def solver_type_name(param, where: str = "solver") -> str:
    """Caffe's name of the solver type: ``type`` (string), or the deprecated
    ``solver_type`` enum when only that is set (read_solver upgrades it already)."""
    if not param.HasField("type") and param.HasField("solver_type"):
        return CAFFE_SOLVERS[int(param.solver_type)]
    name = param.type or "SGD"
    cls = RULES.get(name.lower())
    if cls is None:
        raise RistrettoError(f"{where}: unknown type '{name}'; use one of {', '.join(CAFFE_SOLVERS)}")
    return cls.caffe_name


def make_update_rule(param, params: list, xp) -> UpdateRule:
    return RULES[solver_type_name(param).lower()](param, params, xp)
