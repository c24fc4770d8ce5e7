"""Caffe's weight fillers (filler.hpp), drawing from the backend's generator."""
from __future__ import annotations

import math

from ..errors import RistrettoError

FILLERS = ("constant", "gaussian", "xavier", "msra", "uniform", "positive_unitball", "bilinear")


def _fans(shape) -> tuple[float, float]:
    count = math.prod(shape)
    fan_in = count / shape[0] if len(shape) >= 1 and shape[0] else count
    fan_out = count / shape[1] if len(shape) >= 2 and shape[1] else count
    return fan_in, fan_out


def _variance_n(filler, shape) -> float:
    fan_in, fan_out = _fans(shape)
    norm = filler.variance_norm  # FAN_IN = 0, FAN_OUT = 1, AVERAGE = 2
    if norm == 2:
        return (fan_in + fan_out) / 2.0
    return fan_out if norm == 1 else fan_in


def fill(filler, shape, backend, dtype="float32"):
    """Return a new array of ``shape`` filled as Caffe's filler ``filler.type`` does."""
    xp, rng = backend.xp, backend.rng
    shape = tuple(int(s) for s in shape)
    kind = filler.type or "constant"
    if kind == "constant":
        return xp.full(shape, filler.value, dtype=dtype)
    if kind == "uniform":
        return rng.uniform(filler.min, filler.max, size=shape).astype(dtype)
    if kind == "gaussian":
        out = rng.normal(filler.mean, filler.std, size=shape).astype(dtype)
        if filler.sparse >= 0:
            num_outputs = shape[0] if shape else 1
            keep = rng.random(size=shape) < (filler.sparse / num_outputs)
            out = out * keep.astype(dtype)
        return out
    if kind == "xavier":
        scale = math.sqrt(3.0 / _variance_n(filler, shape))
        return rng.uniform(-scale, scale, size=shape).astype(dtype)
    if kind == "msra":
        std = math.sqrt(2.0 / _variance_n(filler, shape))
        return rng.normal(0.0, std, size=shape).astype(dtype)
    if kind == "positive_unitball":
        out = rng.uniform(0.0, 1.0, size=shape).astype(dtype)
        rows = out.reshape(shape[0], -1)
        rows /= rows.sum(axis=1, keepdims=True)
        return out
    if kind == "bilinear":
        if len(shape) != 4 or shape[2] != shape[3]:
            raise RistrettoError(f"bilinear filler needs a square 4-D kernel, got shape {shape}")
        k = shape[3]
        f = math.ceil(k / 2.0)
        c = (2 * f - 1 - f % 2) / (2.0 * f)
        ys = xp.arange(k, dtype="float64")
        w1 = 1 - xp.abs(ys / f - c)
        kernel = (w1[:, None] * w1[None, :]).astype(dtype)
        return xp.broadcast_to(kernel, shape).copy()
    raise RistrettoError(f"unknown filler type '{kind}'; known: {', '.join(FILLERS)}")
