"""The network: graph construction (filtering, splits), the forward/backward executor and
:func:`load_net` (a ready Net from a prototxt and weights)."""
from .graph import filter_net, insert_splits, state_meets_rule
from .loading import load_net
from .net import Net, ParamRef

__all__ = ["Net", "ParamRef", "filter_net", "insert_splits", "load_net", "state_meets_rule"]
