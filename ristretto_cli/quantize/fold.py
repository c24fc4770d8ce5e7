"""Fold BatchNorm (+ Scale) into the Convolution / InnerProduct / Deconvolution before it.

Caffe's BatchNorm in the TEST phase computes ``(x - mean) / sqrt(var + eps)`` per
channel with ``mean = blobs[0] * f``, ``var = blobs[1] * f`` and ``f = 0`` when
``blobs[2] == 0`` else ``1 / blobs[2]`` (batch_norm_layer.cpp); a following Scale
multiplies by ``gamma`` and adds ``beta`` (with ``bias_term``). Both are affine per
output channel of the layer before them, so with ``a = gamma / sqrt(var + eps)``:

    W' = W * a (per output channel),   b' = (b - mean) * a + beta     (b = 0 without a bias)

computed in float64 and stored as float32. The BatchNorm (and Scale) layers are
removed and the layer before them writes their last top, so in-place chains
``conv -> bn -> scale -> relu`` and renamed tops both keep their readers.

A fold is done only where it cannot change a float output: the BatchNorm's input
must come from a float Convolution / InnerProduct (axis 1) / Deconvolution with one
top, be read by nothing else, the layers must be in the same phases, the weights
must not be shared by name and the BatchNorm must use its stored statistics in the
TEST phase. A Scale is folded with its BatchNorm when it reads the BatchNorm's
output alone (one bottom, axis 1, one axis). Every BatchNorm that stays is listed
with the reason; naming it in ``only`` makes that reason an error.

The graph is read in file order over all phases (a blob version read in any phase
counts as read), the weights as stored in the caffemodel.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..caffe.blobproto import array_to_blob, blob_to_array, is_legacy_blob
from ..caffe.caffemodel import read_caffemodel, write_caffemodel
from ..caffe.prototxt import read_net, write_text
from ..caffe.weights import fit_blob
from ..errors import RistrettoError
from ..proto import caffe_pb2

FOLD_INTO = ("Convolution", "InnerProduct", "Deconvolution")


@dataclass
class Fold:
    """One BatchNorm (+ Scale) folded into the layer ``into``, which now writes ``top``."""

    batchnorm: str
    scale: str | None
    into: str
    top: str
    added_bias: bool

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Folded:
    """The folded net: ``param`` (NetParameter), ``weights`` (layer name -> float32 arrays of
    the layers whose weights changed), what was folded and what stayed (name, reason)."""

    param: object
    weights: dict
    folds: list[Fold] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)

    @property
    def removed(self) -> set[str]:
        return {f.batchnorm for f in self.folds} | {f.scale for f in self.folds if f.scale}


# ----------------------------------------------------------------------------- the graph

def _versions(param):
    """(writer, readers): ``writer[i][b]`` is the layer index whose output layer i reads as
    bottom b (None: no writer before it); ``readers[(blob, j)]`` the layers that read the
    version of ``blob`` layer j wrote."""
    current: dict[str, int] = {}
    writer: list[dict] = []
    readers: dict[tuple[str, int], list[int]] = {}
    for i, lp in enumerate(param.layer):
        w = {}
        for b in lp.bottom:
            j = current.get(b)
            w[b] = j
            if j is not None:
                readers.setdefault((b, j), []).append(i)
        writer.append(w)
        for t in lp.top:
            current[t] = i
    return writer, readers


def _rules(lp) -> tuple:
    return (tuple(r.SerializeToString(deterministic=True) for r in lp.include),
            tuple(r.SerializeToString(deterministic=True) for r in lp.exclude))


@dataclass
class _Chain:
    producer: int
    batchnorm: int
    scale: int | None


def _plan(param) -> tuple[list[_Chain], dict[str, str]]:
    """The chains to fold and, for every BatchNorm that stays, why."""
    layers = param.layer
    writer, readers = _versions(param)
    chains: list[_Chain] = []
    kept: dict[str, str] = {}
    for bi, bn in enumerate(layers):
        if bn.type != "BatchNorm":
            continue
        reason = _why_not(layers, writer, readers, bi)
        if reason:
            kept[bn.name] = reason
            continue
        pi = writer[bi][bn.bottom[0]]
        si = _scale_after(layers, readers, bi)
        last = si if si is not None else bi
        top = layers[last].top[0]
        chain = {pi, bi} | ({si} if si is not None else set())
        clash = [layers[k].name for k in range(pi + 1, last) if k not in chain
                 and (top in layers[k].top or top in layers[k].bottom)]
        if clash:
            kept[bn.name] = (f"layer '{clash[0]}' between '{layers[pi].name}' and it uses blob '{top}', which "
                             f"'{layers[pi].name}' would write after the fold")
            continue
        chains.append(_Chain(pi, bi, si))
    return chains, kept


def _why_not(layers, writer, readers, bi) -> str | None:
    bn = layers[bi]
    if len(bn.bottom) != 1 or len(bn.top) != 1:
        return "it has not exactly one bottom and one top"
    p = bn.batch_norm_param
    if p.HasField("use_global_stats") and not p.use_global_stats:
        return "use_global_stats: false normalizes with batch statistics in the TEST phase too"
    x = bn.bottom[0]
    pi = writer[bi][x]
    if pi is None:
        return f"no layer before it writes its input '{x}'"
    prod = layers[pi]
    if prod.type not in FOLD_INTO:
        return (f"its input '{x}' comes from {prod.type} layer '{prod.name}', not a "
                f"{' / '.join(FOLD_INTO)} layer")
    if len(prod.top) != 1 or prod.top[0] in prod.bottom:
        return f"'{prod.name}' does not write exactly one top of its own"
    others = [layers[k].name for k in readers.get((x, pi), []) if k != bi]
    if others:
        return (f"'{x}' from '{prod.name}' also feeds {', '.join(repr(o) for o in others)}; folding would "
                f"change what they read")
    if _rules(prod) != _rules(bn):
        return f"'{prod.name}' and it are not in the same phases (include/exclude rules differ)"
    if any(spec.name for spec in prod.param):
        return f"'{prod.name}' shares its weights by param name with other layers"
    if prod.type == "InnerProduct" and prod.inner_product_param.axis != 1:
        return f"InnerProduct '{prod.name}' has axis {prod.inner_product_param.axis}, not 1"
    return None


def _scale_after(layers, readers, bi) -> int | None:
    """The Scale that reads the BatchNorm's output alone and can be folded with it, or None."""
    bn = layers[bi]
    after = readers.get((bn.top[0], bi), [])
    if len(after) != 1:
        return None
    si = after[0]
    sc = layers[si]
    sp = sc.scale_param
    if (sc.type != "Scale" or len(sc.bottom) != 1 or len(sc.top) != 1 or sp.axis != 1 or sp.num_axes != 1
            or _rules(sc) != _rules(bn) or any(spec.name for spec in sc.param)):
        return None
    return si


# ----------------------------------------------------------------------------- the arithmetic

def _affine(bn_blobs, eps: float, scale_blobs, bias_term: bool):
    """(a, c) in float64 such that scale(bn(x)) = a * x + c per channel."""
    if len(bn_blobs) != 3:
        raise ValueError(f"a BatchNorm has 3 blobs, got {len(bn_blobs)}")
    b0, b1, b2 = (np.asarray(b, np.float64).reshape(-1) for b in bn_blobs)
    factor = 0.0 if b2[0] == 0 else 1.0 / b2[0]
    mean, var = b0 * factor, b1 * factor
    a = 1.0 / np.sqrt(var + eps)
    c = -mean * a
    if scale_blobs is not None:
        gamma = np.asarray(scale_blobs[0], np.float64).reshape(-1)
        a, c = a * gamma, c * gamma
        if bias_term:
            c = c + np.asarray(scale_blobs[1], np.float64).reshape(-1)
    return a, c


def _out_channel_index(lp, w_shape) -> tuple[int, np.ndarray | None]:
    """(axis, index): the weights' output channels run along ``axis``; for a grouped
    Deconvolution ``index`` maps W[i, j] to its output channel (else None)."""
    if lp.type == "InnerProduct":
        return (1 if lp.inner_product_param.transpose else 0), None
    if lp.type == "Deconvolution":
        group = max(1, int(lp.convolution_param.group))
        cin, cout_g = w_shape[0], w_shape[1]
        rows = np.arange(cin) // (cin // group)
        return 1, rows[:, None] * cout_g + np.arange(cout_g)[None, :]
    return 0, None


def fold_arrays(lp, w, b, a, c):
    """(W', b') float32 for layer ``lp`` (weights ``w``, bias ``b`` or None) and per-channel
    ``a``, ``c`` (float64)."""
    w64 = np.asarray(w, np.float64)
    if lp.type == "InnerProduct" and w64.ndim != 2:  # a V1 blob (1, 1, N, K)
        w64 = w64.reshape(w64.shape[-2], w64.shape[-1])
    axis, index = _out_channel_index(lp, w64.shape)
    n = a.size
    if index is not None:
        if index.max() + 1 != n:
            raise ValueError(f"{index.max() + 1} output channels, BatchNorm has {n}")
        w_new = w64 * a[index].reshape(index.shape + (1,) * (w64.ndim - 2))
    else:
        if w64.shape[axis] != n:
            raise ValueError(f"{w64.shape[axis]} output channels, BatchNorm has {n}")
        shape = [1] * w64.ndim
        shape[axis] = n
        w_new = w64 * a.reshape(shape)
    b64 = np.zeros(n) if b is None else np.asarray(b, np.float64).reshape(-1)
    return w_new.astype(np.float32), (b64 * a + c).astype(np.float32)


# ----------------------------------------------------------------------------- the net

def fold_net(param, weights, only=None) -> Folded:
    """Fold every BatchNorm (+ Scale) that can be folded (or the BatchNorms named in
    ``only``, each of which must be foldable).

    ``weights``: layer name -> list of arrays as stored (a caffemodel's blobs).
    Returns the folded NetParameter and the new arrays of the layers folded into.
    """
    chains, kept = _plan(param)
    layers = param.layer
    names = [lp.name for lp in layers]
    if only:
        for name in only:
            if name not in names:
                raise RistrettoError(f"no layer '{name}' in the net to fold")
            k = names.index(name)
            if layers[k].type != "BatchNorm":
                raise RistrettoError(f"layer '{name}' is a {layers[k].type} layer, not a BatchNorm to fold")
            if name in kept:
                raise RistrettoError(f"layer '{name}' (BatchNorm) cannot be folded: {kept[name]}")
        chains = [c for c in chains if names[c.batchnorm] in only]
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    new_weights: dict[str, list] = {}
    folds: list[Fold] = []
    drop: set[int] = set()
    for ch in chains:
        prod, bn = out.layer[ch.producer], out.layer[ch.batchnorm]
        sc = out.layer[ch.scale] if ch.scale is not None else None
        for lp in (prod, bn) + ((sc,) if sc is not None else ()):
            if lp.name not in weights:
                raise RistrettoError(f"layer '{lp.name}' ({lp.type}) has no stored weights to fold")
        pw = weights[prod.name]
        try:
            a, c = _affine(weights[bn.name], float(bn.batch_norm_param.eps),
                           weights[sc.name] if sc is not None else None,
                           bool(sc is not None and sc.scale_param.bias_term))
            has_bias = len(pw) > 1
            w, b = fold_arrays(prod, pw[0], pw[1] if has_bias else None, a, c)
        except (ValueError, IndexError) as exc:
            raise RistrettoError(f"layer '{bn.name}' cannot be folded into '{prod.name}': {exc}") from None
        new_weights[prod.name] = [w, b]
        top = (sc if sc is not None else bn).top[0]
        folds.append(Fold(bn.name, sc.name if sc is not None else None, prod.name, top, not has_bias))
        del prod.top[:]
        prod.top.append(top)
        if not has_bias:
            if prod.type == "InnerProduct":
                prod.inner_product_param.bias_term = True
            else:
                prod.convolution_param.bias_term = True
        drop.add(ch.batchnorm)
        if ch.scale is not None:
            drop.add(ch.scale)
    for k in sorted(drop, reverse=True):
        del out.layer[k]
    return Folded(out, new_weights, folds, sorted(kept.items(), key=lambda kv: names.index(kv[0])))


def read_weight_files(weights) -> "caffe_pb2.NetParameter":
    """The caffemodel(s) ``weights`` ("a,b" or a list) as one NetParameter: layers by name,
    a later file's layer replacing an earlier one's (Caffe's rule)."""
    paths = [p for p in os.fspath(weights).split(",") if p] if isinstance(weights, (str, os.PathLike)) \
        else list(weights)
    merged = caffe_pb2.NetParameter()
    for path in paths:
        net = read_caffemodel(path)
        if not merged.name:
            merged.name = net.name
        index = {lp.name: i for i, lp in enumerate(merged.layer)}
        for lp in net.layer:
            if lp.name in index:
                merged.layer[index[lp.name]].CopyFrom(lp)
            else:
                index[lp.name] = len(merged.layer)
                merged.layer.add().CopyFrom(lp)
    return merged


def stored_arrays(caffemodel) -> dict[str, list[np.ndarray]]:
    """Layer name -> its stored blobs as float32 arrays."""
    return {lp.name: [blob_to_array(b, where=f"layer '{lp.name}' blob {k}") for k, b in enumerate(lp.blobs)]
            for lp in caffemodel.layer if len(lp.blobs)}


def _copy_except(src, dst, skip: str) -> None:
    """Copy every set field of message ``src`` but ``skip`` into the empty ``dst``."""
    for field, value in src.ListFields():
        if field.name == skip:
            continue
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
        if repeated:
            getattr(dst, field.name).extend(value)
        elif field.type == field.TYPE_MESSAGE:
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


def folded_caffemodel(caffemodel, folded: Folded) -> "caffe_pb2.NetParameter":
    """``caffemodel`` without the folded layers and with the new weights (and tops) of the
    layers folded into; every other stored blob is kept as it was stored. Each kept blob is
    copied once (ResNet-50's 100 MB: copying the whole message twice more cost seconds)."""
    removed = folded.removed
    tops = {f.into: f.top for f in folded.folds}
    kept = caffe_pb2.NetParameter()
    _copy_except(caffemodel, kept, "layer")
    for lp in caffemodel.layer:
        if lp.name in removed:
            continue
        new = kept.layer.add()
        if lp.name not in folded.weights:
            new.CopyFrom(lp)
            continue
        _copy_except(lp, new, "blobs")
        for arr in folded.weights[lp.name]:
            array_to_blob(arr, new.blobs.add())
        if lp.name in tops and len(new.top) == 1:
            new.top[0] = tops[lp.name]
    return kept


def load_folded(net, caffemodel) -> int:
    """Copy ``caffemodel``'s blobs into ``net`` by layer name (Caffe's shape rules); returns
    how many layers received weights."""
    by_name = {l.name: l for l in net.layers}
    n = 0
    for lp in caffemodel.layer:
        layer = by_name.get(lp.name)
        if layer is None or not layer.blobs:
            continue
        if len(lp.blobs) != len(layer.blobs):
            raise RistrettoError(f"layer '{lp.name}' ({layer.type}): {len(lp.blobs)} stored blobs, the net's "
                                 f"layer has {len(layer.blobs)}")
        for k, blob in enumerate(lp.blobs):
            arr = fit_blob(blob_to_array(blob), is_legacy_blob(blob), tuple(layer.blobs[k].shape), lp.name, k,
                           "folded weights")
            layer.blobs[k][...] = net.xp.asarray(arr, dtype=layer.blobs[k].dtype)
        n += 1
    return n


def fold_files(model: str, weights, model_out: str, weights_out: str, only=None) -> Folded:
    """Read ``model`` + ``weights``, fold, write ``model_out`` + ``weights_out``."""
    param = read_net(model)
    caffemodel = read_weight_files(weights)
    folded = fold_net(param, stored_arrays(caffemodel), only)
    write_text(model_out, folded.param)
    write_caffemodel(weights_out, folded_caffemodel(caffemodel, folded))
    return folded
