"""NetParameter rewrites done before a net is built, as Caffe's Net::Init does them:
phase/level/stage filtering (FilterNet) and Split insertion (insert_splits.cpp)."""
from __future__ import annotations

from ..errors import RistrettoError
from ..proto import caffe_pb2


def state_meets_rule(phase: int, level: int, stages: set[str], rule) -> bool:
    if rule.HasField("phase") and rule.phase != phase:
        return False
    if rule.HasField("min_level") and level < rule.min_level:
        return False
    if rule.HasField("max_level") and level > rule.max_level:
        return False
    if any(s not in stages for s in rule.stage):
        return False
    return not any(s in stages for s in rule.not_stage)


def filter_net(param, phase: int, level: int = 0, stages=()) -> "caffe_pb2.NetParameter":
    """A copy of ``param`` holding only the layers its include/exclude rules admit."""
    stages = set(stages)
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    for layer in param.layer:
        if len(layer.include) and len(layer.exclude):
            raise RistrettoError(f"layer '{layer.name}': specify include rules or exclude rules, not both")
        if len(layer.include):
            keep = any(state_meets_rule(phase, level, stages, r) for r in layer.include)
        else:
            keep = not any(state_meets_rule(phase, level, stages, r) for r in layer.exclude)
        if keep:
            out.layer.add().CopyFrom(layer)
    out.state.phase = phase
    out.state.level = level
    del out.state.stage[:]
    out.state.stage.extend(sorted(stages))
    return out


def split_layer_name(blob: str, layer: str, top_idx: int) -> str:
    return f"{blob}_{layer}_{top_idx}_split"


def split_blob_name(blob: str, layer: str, top_idx: int, split_idx: int) -> str:
    return f"{blob}_{layer}_{top_idx}_split_{split_idx}"


def insert_splits(param) -> "caffe_pb2.NetParameter":
    """Give every blob read by several layers one Split layer, named as Caffe names them.

    A top that carries a loss weight counts as one more reader, as in Caffe, so the
    loss survives on the Split's first top.
    """
    last_producer: dict[str, tuple[int, int]] = {}
    readers: dict[tuple[int, int], int] = {}
    for i, layer in enumerate(param.layer):
        for b in layer.bottom:
            if b not in last_producer:
                raise RistrettoError(f"layer '{layer.name}' ({layer.type}): unknown bottom blob '{b}' "
                                     f"(no earlier layer produces it)")
            key = last_producer[b]
            readers[key] = readers.get(key, 0) + 1
        for j, t in enumerate(layer.top):
            last_producer[t] = (i, j)
            if j < len(layer.loss_weight) and layer.loss_weight[j] != 0:
                readers[(i, j)] = readers.get((i, j), 0) + 1

    if all(n <= 1 for n in readers.values()):
        return param

    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    last_producer.clear()
    next_split: dict[tuple[int, int], int] = {}
    for i, src in enumerate(param.layer):
        layer = out.layer.add()
        layer.CopyFrom(src)
        for k, b in enumerate(src.bottom):
            key = last_producer[b]
            if readers.get(key, 0) > 1:
                n = next_split.get(key, 0)
                next_split[key] = n + 1
                layer.bottom[k] = split_blob_name(b, param.layer[key[0]].name, key[1], n)
        for j, t in enumerate(src.top):
            last_producer[t] = (i, j)
            count = readers.get((i, j), 0)
            if count > 1:
                split = out.layer.add()
                split.name = split_layer_name(t, src.name, j)
                split.type = "Split"
                split.bottom.append(t)
                has_loss = j < len(src.loss_weight) and src.loss_weight[j] != 0
                for n in range(count):
                    split.top.append(split_blob_name(t, src.name, j, n))
                if has_loss:
                    split.loss_weight.extend([src.loss_weight[j]] + [0.0] * (count - 1))
                    layer.loss_weight[j] = 0.0
                    next_split[(i, j)] = 1  # the loss takes split top 0
    return out
