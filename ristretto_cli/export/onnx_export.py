"""A Caffe net (TEST phase) as an ONNX model: float, Q/DQ or QONNX.

``export_onnx(model, weights, fmt, opset)`` builds the TEST-phase net, walks its
layers in order through the handler table, and returns an :class:`OnnxExport` with
the checked ``onnx.ModelProto`` and notes for the user (layers left out and why).
Data layers become graph inputs of their blob's shape; a label top that only loss or
Accuracy layers read is left out with them. The model passes
``onnx.checker.check_model(full_check=True)`` and strict shape inference, and every
tensor that holds a Caffe blob has the blob's shape (checked).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import numpy as np

from .. import __version__
from ..errors import RistrettoError
from .graph import OnnxGraph
from .handlers import ALIAS_TYPES, DROPPED_TYPES, FLOAT_OF, HANDLERS, INPUT_TYPES, Site
from .quant import QONNX_DOMAIN, describe, export_ristretto

logger = logging.getLogger(__name__)

FORMATS = ("float", "qdq", "qonnx")
DEFAULT_OPSET = 21
MIN_OPSET = 13


@dataclass
class OnnxExport:
    model: object  # onnx.ModelProto
    format: str
    opset: int
    notes: list[str] = field(default_factory=list)
    inputs: dict = field(default_factory=dict)  # graph input -> shape
    outputs: dict = field(default_factory=dict)  # graph output (Caffe blob name) -> shape
    tensors: dict = field(default_factory=dict)  # Caffe blob -> the ONNX tensor of its final value

    def to_bytes(self) -> bytes:
        return self.model.SerializeToString()


def max_opset() -> int:
    import onnx.defs

    return onnx.defs.onnx_opset_version()


def load_for_export(model: str, weights=None, input_shapes: dict | None = None):
    """The TEST-phase Net of ``model`` (Data layers named in ``input_shapes`` replaced by
    Input layers of that shape, so no database is opened for them)."""
    from ..caffe.prototxt import read_net
    from ..net import Net

    param = read_net(model)
    if not param.layer:
        raise RistrettoError(f"{model}: no layers; is this a net prototxt?")
    for blob, shape in (input_shapes or {}).items():
        hits = [lp for lp in param.layer if blob in lp.top and not lp.bottom]
        if not hits:
            raise RistrettoError(f"--input-shape {blob}: no input or data layer of {model} makes a blob '{blob}'")
        for lp in hits:
            if lp.type == "Input":
                shapes = [list(sh.dim) for sh in lp.input_param.shape]
                shapes += [shapes[-1] if shapes else []] * (len(lp.top) - len(shapes))
            else:  # a data layer: its label top (if any) is one value per item, as Caffe's
                shapes = [[int(shape[0])] for _ in lp.top]
            shapes[list(lp.top).index(blob)] = [int(d) for d in shape]
            lp.type = "Input"
            for f in ("data_param", "image_data_param", "transform_param", "dummy_data_param", "input_param"):
                lp.ClearField(f)
            for dims in shapes:
                lp.input_param.shape.add().dim.extend(dims)
    net = Net(param, phase="TEST", source=model)
    if weights:
        if not net.load_weights(weights) and any(l.blobs for l in net.layers):
            logger.warning("warning: no layer of %s matches a layer name of %s; the weights are the fillers'",
                           weights, model)
    return net


def has_ristretto_layers(net) -> bool:
    return any(l.type in FLOAT_OF for l in net.layers)


def export_net(net, fmt: str | None = None, opset: int | None = None, source: str = "") -> OnnxExport:
    """``net`` (a TEST-phase Net) as an ONNX model in ``fmt`` (default: qdq when it has
    Ristretto layers, float otherwise)."""
    import onnx
    from onnx import helper

    fmt = fmt or ("qdq" if has_ristretto_layers(net) else "float")
    if fmt not in FORMATS:
        raise RistrettoError(f"unknown ONNX format '{fmt}'; choose one of {', '.join(FORMATS)}")
    top_opset = max_opset()
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if not MIN_OPSET <= opset <= top_opset:
        raise RistrettoError(f"--opset {opset}: supported opsets are {MIN_OPSET}..{top_opset} (this onnx "
                             f"{onnx.__version__})")
    g = OnnxGraph(opset)
    notes: list[str] = []
    where = source or net.name or "net"

    kept = [i for i, l in enumerate(net.layers) if l.type not in DROPPED_TYPES]
    dropped = [f"{net.layer_names[i]} ({net.layers[i].type})" for i in range(len(net.layers)) if i not in set(kept)]
    read_by_kept: set[str] = set()  # blobs (or their Split/Dropout aliases) that a computing layer reads
    aliases: dict[str, str] = {}
    for i in kept:
        if net.layers[i].type in ALIAS_TYPES:
            b = net.bottom_names[i][0]
            aliases.update({t: aliases.get(b, b) for t in net.top_names[i]})
        else:
            read_by_kept.update(aliases.get(b, b) for b in net.bottom_names[i])
    if dropped:
        notes.append(f"left out (no place in an inference graph): {', '.join(dropped)}")
    if fmt == "float" and has_ristretto_layers(net):
        notes.append("--format float: the Ristretto layers are exported as their float layers (no trims)")

    expected: dict[str, tuple] = {}  # onnx tensor -> Caffe shape
    quant_meta: dict[str, dict] = {}
    quant_nodes: dict[str, str] = {}  # ONNX node -> the Ristretto layer it belongs to (for the import)
    for i in kept:
        layer, bnames, tnames = net.layers[i], net.bottom_names[i], net.top_names[i]
        ttype = layer.type
        if ttype in INPUT_TYPES:
            unused = []
            for t in tnames:
                if t in read_by_kept or t == tnames[0]:
                    expected[g.add_input(t, net.blob_shapes[t])] = net.blob_shapes[t]
                else:
                    unused.append(t)
            if unused:
                notes.append(f"input '{', '.join(unused)}' of layer '{layer.name}' is read only by left-out "
                             "layers; not a graph input")
            continue
        if ttype in ALIAS_TYPES:
            if bnames[0] not in g.current:  # e.g. a Split of a label only left-out layers read
                continue
            for t in tnames:
                g.alias(t, bnames[0])
            continue
        site = Site(g, layer, [g.tensor_of(b) for b in bnames], [net.blob_shapes[b] for b in bnames],
                    list(tnames), [net.blob_shapes[t] for t in tnames],
                    [np.asarray(net.backend.to_numpy(b)) for b in layer.blobs])
        if ttype in FLOAT_OF:
            quant_meta[layer.name] = describe(layer.quant_config)
            if fmt == "float":
                outs = HANDLERS[FLOAT_OF[ttype]](site)
            else:
                first = len(g.nodes)
                outs = export_ristretto(site, fmt, list(bnames))
                quant_nodes.update((n.name, layer.name) for n in g.nodes[first:])
        elif ttype in HANDLERS:
            outs = HANDLERS[ttype](site)
        else:
            known = sorted(set(HANDLERS) | ALIAS_TYPES | INPUT_TYPES | DROPPED_TYPES | set(FLOAT_OF))
            raise RistrettoError(f"{where}: layer '{layer.name}' of type {ttype} has no ONNX export; exported "
                                 f"types: {', '.join(known)}")
        for t, o in zip(tnames, outs):
            g.bind(t, o)
            expected[o] = net.blob_shapes[t]

    # outputs: blobs that no later kept layer reads
    available: dict[str, None] = {}
    root: dict[str, str] = {}  # a Split/Dropout top -> the blob whose array it is
    for i in kept:
        layer = net.layers[i]
        if layer.type in ALIAS_TYPES:
            for t in net.top_names[i]:
                root[t] = root.get(net.bottom_names[i][0], net.bottom_names[i][0])
            continue
        for b in net.bottom_names[i]:
            available.pop(root.get(b, b), None)
        if layer.type in INPUT_TYPES:
            continue
        for t in net.top_names[i]:
            root.pop(t, None)
            available[t] = None
    if not available:
        raise RistrettoError(f"{where}: nothing to export: no layer computes an output")
    outputs = sorted(available)
    _name_outputs(g, outputs, expected)

    graph = helper.make_graph(
        g.nodes, net.name or "net", g.inputs,
        [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, list(net.blob_shapes[o])) for o in outputs],
        initializer=g.initializers)
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in g.domains.items()]
    if any(n.domain == QONNX_DOMAIN for n in g.nodes):
        imports.append(helper.make_opsetid(QONNX_DOMAIN, 1))
    model = helper.make_model(graph, opset_imports=imports, producer_name="ristretto",
                              producer_version=__version__)
    model.ir_version = min(model.ir_version, _ir_version_for(opset))
    meta = {"source_prototxt": source or "", "net_name": net.name or "", "ristretto_version": __version__,
            "format": fmt, "quantization": json.dumps(quant_meta, sort_keys=True)}
    if quant_nodes:
        meta["quantization_nodes"] = json.dumps(quant_nodes, sort_keys=True)
    helper.set_model_props(model, meta)
    _check(model, expected, where, fmt)
    return OnnxExport(model, fmt, opset, notes, {i.name: net.blob_shapes[i.name] for i in g.inputs if
                                                 i.name in net.blob_shapes},
                      {o: net.blob_shapes[o] for o in outputs}, dict(g.current))


def export_onnx(model: str, weights=None, fmt: str | None = None, opset: int | None = None,
                input_shapes: dict | None = None) -> OnnxExport:
    """Read ``model`` (+ ``weights``) and export its TEST-phase net (see :func:`export_net`)."""
    net = load_for_export(model, weights, input_shapes)
    try:
        return export_net(net, fmt, opset, source=model)
    finally:
        for layer in net.layers:
            layer.close()


def _ir_version_for(opset: int) -> int:
    from onnx import helper

    for entry in helper.VERSION_TABLE:  # (release, ir, ai.onnx opset, ...)
        if entry[2] >= opset:
            return entry[1]
    return helper.VERSION_TABLE[-1][1]


def _name_outputs(g: OnnxGraph, outputs: list[str], expected: dict) -> None:
    """Give each output tensor its Caffe blob name (an earlier tensor of that name is renamed)."""
    renames: dict[str, str] = {}
    for blob in outputs:
        t = g.current[blob]
        if t == blob:
            continue
        if blob in g.used:
            renames[blob] = g.fresh(f"{blob}_0")
        renames[t] = blob
    if not renames:
        return
    for n in g.nodes:
        n.input[:] = [renames.get(x, x) for x in n.input]
        n.output[:] = [renames.get(x, x) for x in n.output]
    for vi in g.inputs:
        vi.name = renames.get(vi.name, vi.name)
    for init in g.initializers:
        init.name = renames.get(init.name, init.name)
    for old, new in renames.items():
        if old in expected:
            expected[new] = expected.pop(old) if new not in expected else expected[old]
    for blob in outputs:
        g.current[blob] = blob


SKELETON_BYTES = 64 << 20


def _skeleton(model):
    """``model`` itself, or for a big one (whose checks would copy every weight several
    times) the same graph with its large initializers as graph inputs of the same type
    and shape: what the checker and shape inference look at, without the bytes."""
    from onnx import helper

    big = [t for t in model.graph.initializer if len(t.raw_data) > 1 << 20]
    if sum(len(t.raw_data) for t in big) < SKELETON_BYTES:
        return model
    names = {t.name for t in big}
    graph = helper.make_graph(model.graph.node, model.graph.name,
                              list(model.graph.input) + [helper.make_tensor_value_info(t.name, t.data_type, t.dims)
                                                         for t in big],
                              model.graph.output, [t for t in model.graph.initializer if t.name not in names])
    skeleton = helper.make_model(graph, opset_imports=model.opset_import, producer_name=model.producer_name)
    skeleton.ir_version = model.ir_version
    return skeleton


def _check(model, expected: dict, where: str, fmt: str) -> None:
    """The ONNX checker (full), strict shape inference, and Caffe's shape for every blob tensor."""
    import onnx

    try:
        skeleton = _skeleton(model)
        onnx.checker.check_model(skeleton, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(skeleton, strict_mode=True, check_type=True)
    except Exception as exc:  # onnx raises its own checker / inference errors
        raise RistrettoError(f"{where}: the exported ONNX model fails ONNX's checks: "
                             f"{' '.join(str(exc).split())[:400]}") from None
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        dims = vi.type.tensor_type.shape.dim
        if vi.type.tensor_type.HasField("shape"):
            shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    for tensor, shape in expected.items():
        got = shapes.get(tensor)
        if got is not None and None not in got and tuple(got) != tuple(shape):
            raise RistrettoError(f"{where}: ONNX infers shape {got} for '{tensor}', Caffe's is {tuple(shape)}")
