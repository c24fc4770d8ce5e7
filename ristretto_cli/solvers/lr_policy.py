"""Caffe's learning-rate policies (SGDSolver::GetLearningRate), as pure functions.

``iter`` is the number of updates done so far (Caffe's ``iter_``). The rate is
computed in double precision and handed back as a Python float; the update rules
cast it to the parameters' dtype as Caffe does (``Dtype rate``).

- fixed:     base_lr
- step:      base_lr * gamma ^ floor(iter / stepsize)
- exp:       base_lr * gamma ^ iter
- inv:       base_lr * (1 + gamma * iter) ^ (-power)
- multistep: base_lr * gamma ^ current_step, where current_step advances by one
             (at most one per call, as in Caffe) when iter >= stepvalue[current_step]
- poly:      base_lr * (1 - iter / max_iter) ^ power
- sigmoid:   base_lr * 1 / (1 + exp(-gamma * (iter - stepsize)))
"""
from __future__ import annotations

import math

from ..errors import RistrettoError

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def check_policy(param, where: str = "solver") -> None:
    """Reject what Caffe would CHECK-fail on, with a one-line message."""
    policy = param.lr_policy
    if not policy:
        raise RistrettoError(f"{where}: lr_policy is not set; use one of {', '.join(POLICIES)}")
    if policy not in POLICIES:
        raise RistrettoError(f"{where}: unknown lr_policy '{policy}'; use one of {', '.join(POLICIES)}")
    if policy in ("step", "sigmoid") and param.stepsize <= 0:
        raise RistrettoError(f"{where}: lr_policy '{policy}' needs stepsize > 0")
    if policy in ("step", "exp", "inv", "multistep", "sigmoid") and param.gamma < 0:
        raise RistrettoError(f"{where}: lr_policy '{policy}' needs gamma >= 0, got {param.gamma:g}")
    if policy == "poly" and param.max_iter <= 0:
        raise RistrettoError(f"{where}: lr_policy 'poly' needs max_iter > 0")
    if policy == "multistep":
        values = list(param.stepvalue)
        if any(b <= a for a, b in zip(values, values[1:])):
            raise RistrettoError(f"{where}: stepvalue must increase, got {values}")


def _pow(x: float, y: float) -> float:
    """C's pow: NaN (not a complex number) for a negative base and a fractional exponent."""
    try:
        return math.pow(x, y)
    except (ValueError, OverflowError):
        return float("nan") if x < 0 else float("inf")


def learning_rate(param, iteration: int, current_step: int = 0) -> tuple[float, int]:
    """Return ``(rate, current_step)`` for update number ``iteration``.

    ``current_step`` is the solver state that ``step`` and ``multistep`` keep (Caffe
    stores it in the .solverstate); pass back the returned value next time.
    """
    policy = param.lr_policy
    base = float(param.base_lr)
    gamma = float(param.gamma)
    if policy == "fixed":
        rate = base
    elif policy == "step":
        current_step = iteration // param.stepsize
        rate = base * gamma ** current_step
    elif policy == "exp":
        rate = base * gamma ** iteration
    elif policy == "inv":
        rate = base * (1.0 + gamma * iteration) ** (-float(param.power))
    elif policy == "multistep":
        if current_step < len(param.stepvalue) and iteration >= param.stepvalue[current_step]:
            current_step += 1
        rate = base * gamma ** current_step
    elif policy == "poly":
        frac = 1.0 - iteration / float(param.max_iter)
        rate = base * _pow(frac, float(param.power))
    elif policy == "sigmoid":
        z = -gamma * (iteration - float(param.stepsize))
        rate = base * (1.0 / (1.0 + math.exp(z))) if z < 700 else 0.0  # exp overflows to inf in C
    else:
        check_policy(param)
        raise AssertionError(policy)  # pragma: no cover
    return rate, current_step
