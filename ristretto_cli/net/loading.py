"""Build a ready-to-run Net from files: prototxt, optional weights, phase, backend."""
from __future__ import annotations

import logging

from ..backend import Backend
from ..errors import RistrettoError
from .net import Net

logger = logging.getLogger(__name__)


def load_net(model: str, weights=None, phase="TEST", backend: Backend | None = None, level=None,
             stages=None) -> Net:
    """Read ``model`` (any Caffe prototxt version), build it for ``phase`` and copy ``weights``
    (a path, "a,b" or a list) by layer name. Weights that match no layer are a logged
    warning (the net keeps its fillers' values), not an error."""
    from ..caffe.prototxt import read_net

    param = read_net(model)
    if not param.layer:
        raise RistrettoError(f"{model}: no layers; is this a net prototxt?")
    net = Net(param, phase=phase, backend=backend, level=level, stages=stages, source=model)
    if not net.layers:
        raise RistrettoError(f"{model}: no layer is included in the {str(phase).upper()} phase")
    if weights and not net.load_weights(weights) and any(layer.blobs for layer in net.layers):
        logger.warning("warning: no layer of %s matches a layer name of %s; the weights are the fillers'",
                       weights, model)
    return net
