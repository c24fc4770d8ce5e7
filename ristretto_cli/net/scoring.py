"""Scoring a net over batches, as `caffe test` does: every output blob per batch and
their means, loss-weighted blobs reported with their contribution to the loss."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .net import Net


@dataclass
class Scores:
    """Per-batch values of every output element and their means over batches."""

    names: list[str] = field(default_factory=list)           # "blob" or "blob[i]" for multi-element outputs
    loss_weights: dict[str, float] = field(default_factory=dict)
    batches: list[list[float]] = field(default_factory=list)

    @property
    def means(self) -> dict[str, float]:
        if not self.batches:
            return {n: float("nan") for n in self.names}
        arr = np.asarray(self.batches, dtype=np.float64)
        return dict(zip(self.names, arr.mean(axis=0).tolist()))

    @property
    def loss(self) -> float:
        m = self.means
        return sum(w * m[n] for n, w in self.loss_weights.items() if n in m)

    def to_json(self) -> dict:
        return {
            "iterations": len(self.batches),
            "outputs": self.names,
            "loss_weights": self.loss_weights,
            "batches": [dict(zip(self.names, b)) for b in self.batches],
            "means": self.means,
            "loss": self.loss,
        }


def output_values(net: Net, outputs: dict) -> tuple[list[str], list[float]]:
    """Flatten the output blobs into named scalars (Caffe prints each element)."""
    names, values = [], []
    for blob, arr in outputs.items():
        flat = net.backend.to_numpy(arr).reshape(-1)
        if flat.size == 1:
            names.append(blob)
            values.append(float(flat[0]))
        else:
            for i, v in enumerate(flat):
                names.append(f"{blob}[{i}]")
                values.append(float(v))
    return names, values


def score(net: Net, iterations: int, on_batch: Callable | None = None, feed: Callable | None = None) -> Scores:
    """Forward ``iterations`` batches; ``feed(i)`` may supply input arrays for batch i."""
    result = Scores(loss_weights={n: w for n, w in net.loss_weights.items() if n in net.outputs})
    for i in range(iterations):
        outputs = net.forward(feed(i) if feed else None)
        names, values = output_values(net, outputs)
        if not result.names:
            result.names = names
        result.batches.append(values)
        if on_batch is not None:
            on_batch(i, dict(zip(names, values)))
    return result
