"""Finite-difference gradient checks in the manner of Caffe's GradientChecker.

The layer runs in float64 so that central differences are accurate; the
objective is sum(top_i * w_i) with fixed random weights w_i, so every element of
every top contributes.
"""
from __future__ import annotations

import numpy as np

from ristretto_cli.backend import Backend

from backends import on_backend


def check_layer_gradient(layer, bottoms, *, check_bottoms=None, check_params=True, eps=1e-4,
                         rtol=1e-4, atol=1e-6, seed=0, setup=True, forward_kwargs=None,
                         max_checks=200):
    """Compare ``layer.backward`` with central differences of the weighted top sum.

    ``bottoms`` are float64 NumPy arrays; the layer may live on any backend (its
    arrays go through :func:`backends.on_backend`). ``check_bottoms`` lists the bottom
    indices to check (default: all). At most ``max_checks`` elements per array are
    probed (chosen at random) to keep tests fast.
    """
    layer = on_backend(layer)  # a CuPy layer is driven from host arrays
    rng = np.random.default_rng(seed)
    bottoms = [np.array(b, dtype=np.float64) for b in bottoms]
    shapes = [b.shape for b in bottoms]
    if setup:
        layer.setup(shapes)
        layer.blobs = [np.array(b, dtype=np.float64) for b in layer.blobs]
    top_shapes = layer.reshape(shapes)
    weights = [rng.standard_normal(s) for s in top_shapes]

    def objective():
        tops = layer.forward([b.copy() for b in bottoms])
        return sum(float(np.sum(t * w)) for t, w in zip(tops, weights))

    tops = layer.forward([b.copy() for b in bottoms])
    layer.zero_diffs()
    check_bottoms = range(len(bottoms)) if check_bottoms is None else check_bottoms
    prop = [i in check_bottoms for i in range(len(bottoms))]
    grads = layer.backward([w.copy() for w in weights], [b.copy() for b in bottoms], tops, prop)

    targets = [("bottom", i, bottoms[i], grads[i]) for i in check_bottoms]
    if check_params:
        targets += [("param", i, blob, layer.diffs[i]) for i, blob in enumerate(layer.blobs)]
    for kind, idx, arr, analytic in targets:
        assert analytic is not None, f"{kind} {idx}: backward returned no gradient"
        analytic = np.asarray(analytic)
        assert analytic.shape == arr.shape, f"{kind} {idx}: gradient shape {analytic.shape} != {arr.shape}"
        flat = arr.reshape(-1)
        picks = rng.choice(flat.size, size=min(max_checks, flat.size), replace=False)
        for j in picks:
            orig = flat[j]
            flat[j] = orig + eps
            plus = objective()
            flat[j] = orig - eps
            minus = objective()
            flat[j] = orig
            numeric = (plus - minus) / (2 * eps)
            got = analytic.reshape(-1)[j]
            scale = max(abs(numeric), abs(got), 1.0)
            assert abs(numeric - got) <= atol + rtol * scale, (
                f"{kind} {idx} element {j}: analytic {got!r} vs numeric {numeric!r}")


def f64_backend(seed=0):
    return Backend(np, seed)
