"""The network: graph construction (filtering, splits) and the forward/backward executor."""
from .graph import filter_net, insert_splits, state_meets_rule
from .net import Net, ParamRef

__all__ = ["Net", "ParamRef", "filter_net", "insert_splits", "state_meets_rule"]
