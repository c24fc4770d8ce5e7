"""Build a ready-to-run Net from files: prototxt, optional weights, phase, backend."""
from __future__ import annotations

from .backend import Backend
from .net import Net


def load_net(model: str, weights=None, phase="TEST", backend: Backend | None = None, level=None,
             stages=None) -> Net:
    """Read ``model`` (any Caffe prototxt version), build it for ``phase`` and copy ``weights``
    (a path, "a,b" or a list) by layer name."""
    from .caffe.prototxt import read_net

    net = Net(read_net(model), phase=phase, backend=backend, level=level, stages=stages, source=model)
    if weights:
        net.load_weights(weights)
    return net
