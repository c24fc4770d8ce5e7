"""The network: graph construction and the executor.

What lives here: :mod:`.graph` (phase/level/stage filtering, Split insertion for
blobs with several consumers), :mod:`.net` (``Net``: builds layers from a
``NetParameter``, infers shapes, runs forward / backward, shares and loads weights,
makes the layers' diffs exist before backward, ``close()`` releases the data
layers) and :mod:`.scoring` (a net's outputs averaged over batches) and :mod:`.loading`
(``load_net``: a ready Net from a prototxt and weights).

What it may import: ``layers`` (through the registry only: the net knows no layer
internals), ``caffe`` (weights I/O), ``proto``, ``backend``, ``errors``. Nothing under
``layers``, ``formats`` or ``data`` imports this package.
"""
from .graph import filter_net, insert_splits, state_meets_rule
from .loading import load_net
from .net import Net, ParamRef

__all__ = ["Net", "ParamRef", "filter_net", "insert_splits", "load_net", "state_meets_rule"]
