"""The CNN subset of ONNX back into a Caffe net: ``import_onnx(bytes) -> NetParameter``.

One handler per ONNX op (the table ``IMPORTERS``); each appends Caffe layers (with
their weights as blobs) for one node. Quantized models (Q/DQ, QONNX ``Quant``) are
read by :mod:`.quant_import` first: the trims around a Conv / ConvTranspose / Gemm /
MatMul become one Ristretto layer in that node's place. Shapes come from ONNX shape inference, so
Flatten/Reshape become Caffe Reshape layers with explicit dimensions. Anything outside
the subset is an error naming the node and its op.
"""
from __future__ import annotations

import numpy as np

from ..errors import RistrettoError
from ..proto import caffe_pb2
from .quant_import import QuantGraph, is_quant, without_qonnx

MIN_IMPORT_OPSET = 7


class Importer:
    def __init__(self, model, where: str):
        from onnx import numpy_helper

        self.where = where
        self.model = model
        self.net = caffe_pb2.NetParameter(name=model.graph.name or "net")
        self.consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.shapes: dict[str, tuple] = {}
        self.blob: dict[str, str] = {}  # onnx tensor -> caffe blob
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.layer_names: set[str] = set()

    # -- helpers ----------------------------------------------------------
    def error(self, node, message: str) -> RistrettoError:
        return RistrettoError(f"{self.where}: node '{node.name or node.output[0]}' ({node.op_type}): {message}")

    def const(self, node, name: str, what: str = "input"):
        if name not in self.consts:
            raise self.error(node, f"{what} '{name}' must be a constant (an initializer or Constant node)")
        return self.consts[name]

    def bottom(self, node, name: str) -> str:
        if name not in self.blob:
            raise self.error(node, f"input '{name}' is neither a graph input nor computed by a supported node")
        return self.blob[name]

    def layer(self, node, type_: str, bottoms, top: str | None = None, suffix: str = "", name: str | None = None):
        lp = self.net.layer.add()
        base = name or ((node.name or node.output[0]) + suffix)
        name, i = base, 1
        while name in self.layer_names:
            name, i = f"{base}_{i}", i + 1
        self.layer_names.add(name)
        lp.name, lp.type = name, type_
        lp.bottom.extend(bottoms)
        top = top or node.output[0]
        lp.top.append(top)
        return lp

    def finish(self, node, lp, output: str | None = None) -> None:
        output = output or node.output[0]
        self.blob[output] = lp.top[0]

    @staticmethod
    def attrs(node) -> dict:
        from onnx import helper

        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    @staticmethod
    def add_blob(lp, array) -> None:
        from ..caffe.blobproto import array_to_blob

        lp.blobs.add().CopyFrom(array_to_blob(np.asarray(array, dtype=np.float32)))


def _symmetric(imp, node, pads, n):
    pads = list(pads or [0] * (2 * n))
    if pads[:n] != pads[n:]:
        return None
    return pads[:n]


def _conv(imp: Importer, node, transposed=False):
    w = imp.const(node, node.input[1], "weight")
    b = imp.const(node, node.input[2], "bias") if len(node.input) > 2 and node.input[2] else None
    lp = conv_layer(imp, node, w, b, imp.bottom(node, node.input[0]), transposed=transposed)
    imp.finish(node, lp)


def conv_layer(imp: Importer, node, w, b, bottom: str, top: str | None = None, transposed=False,
               type_: str | None = None, name: str | None = None):
    """The Caffe (De)Convolution layer of a Conv / ConvTranspose node with weights ``w`` and
    bias ``b`` (None: no bias term)."""
    a = imp.attrs(node)
    n = w.ndim - 2
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
        raise imp.error(node, f"auto_pad {a['auto_pad']!r} is not supported; give explicit pads")
    pads = _symmetric(imp, node, a.get("pads"), n)
    if pads is None:
        raise imp.error(node, f"asymmetric pads {list(a['pads'])}: Caffe pads both sides equally")
    if transposed and any(a.get("output_padding", [0] * n)) or "output_shape" in a:
        raise imp.error(node, "output_padding / output_shape have no Caffe form")
    lp = imp.layer(node, type_ or ("Deconvolution" if transposed else "Convolution"), [bottom], top, name=name)
    cp = lp.convolution_param
    group = int(a.get("group", 1))
    cp.num_output = w.shape[1] * group if transposed else w.shape[0]
    cp.kernel_size.extend(int(k) for k in w.shape[2:])
    cp.stride.extend(int(s) for s in a.get("strides", [1] * n))
    cp.pad.extend(int(p) for p in pads)
    cp.dilation.extend(int(d) for d in a.get("dilations", [1] * n))
    if group != 1:
        cp.group = group
    imp.add_blob(lp, w)
    if b is not None:
        imp.add_blob(lp, b)
    else:
        cp.bias_term = False
    return lp


def _gemm(imp: Importer, node):
    a = imp.attrs(node)
    if a.get("transA", 0):
        raise imp.error(node, "transA = 1 has no InnerProduct form")
    w = imp.const(node, node.input[1], "B") * np.float32(a.get("alpha", 1.0))
    c = None
    if len(node.input) > 2 and node.input[2]:
        c = imp.const(node, node.input[2], "C") * np.float32(a.get("beta", 1.0))
    lp = fc_layer(imp, node, w, c, imp.bottom(node, node.input[0]), transpose=not a.get("transB", 0))
    imp.finish(node, lp)


def fc_layer(imp: Importer, node, w, b, bottom: str, top: str | None = None, transpose=False, axis: int = 1,
             type_: str = "InnerProduct", name: str | None = None):
    """An InnerProduct layer: ``w`` is (num_output, K), or (K, num_output) with ``transpose``;
    ``b`` broadcasts to (num_output,) (None: no bias term)."""
    lp = imp.layer(node, type_, [bottom], top, name=name)
    ip = lp.inner_product_param
    ip.num_output = w.shape[1] if transpose else w.shape[0]
    if transpose:
        ip.transpose = True
    if axis != 1:
        ip.axis = axis
    imp.add_blob(lp, w)
    if b is not None:
        imp.add_blob(lp, np.broadcast_to(np.asarray(b).reshape(-1), (ip.num_output,)))
    else:
        ip.bias_term = False
    return lp


def _matmul(imp: Importer, node):
    w = imp.const(node, node.input[1], "second input")
    if w.ndim != 2:
        raise imp.error(node, "only a 2-D constant second input is an InnerProduct")
    lp = fc_layer(imp, node, w, None, imp.bottom(node, node.input[0]), transpose=True,
                  axis=matmul_axis(imp, node))
    imp.finish(node, lp)


def matmul_axis(imp: Importer, node) -> int:
    """The InnerProduct axis of a MatMul: its first input's last axis."""
    shape = imp.shapes.get(node.input[0])
    return len(shape) - 1 if shape is not None and len(shape) > 2 else 1


def ristretto_layer(imp: Importer, plan) -> None:
    """The Ristretto layer of a quantized Conv / ConvTranspose / Gemm / MatMul (a
    :class:`.quant_import.Plan`): trimmed input (in place), weights, bias, output."""
    node = plan.node
    inp = plan.inp
    if inp.out in imp.blob:
        bottom = imp.blob[inp.out]  # an earlier layer trimmed this blob already (idempotent)
    else:
        bottom = imp.bottom(node, inp.x)
        imp.blob[inp.out] = bottom  # trimmed in place
    top = plan.out.out
    name = plan.layer_name if plan.layer_name and plan.layer_name not in imp.layer_names else None
    b = plan.bias.values if plan.bias is not None else None
    if plan.kind in ("conv", "deconv"):
        deconv = plan.kind == "deconv"
        lp = conv_layer(imp, node, plan.weight.values, b, bottom, top, transposed=deconv,
                        type_="DeconvolutionRistretto" if deconv else "ConvolutionRistretto", name=name)
    else:
        lp = fc_layer(imp, node, plan.weight.values, b, bottom, top, transpose=plan.fc_transpose,
                      axis=plan.fc_axis, type_="FcRistretto", name=name)
    plan.config.to_proto(lp.quantization_param)
    imp.blob[top] = top


def _simple(type_, setter=None):
    def handler(imp: Importer, node):
        lp = imp.layer(node, type_, [imp.bottom(node, node.input[0])])
        if setter:
            setter(imp, node, lp, imp.attrs(node))
        imp.finish(node, lp)
    return handler


def _clip_param(imp, node, lp, a):
    def bound(i, attr):
        if imp.opset < 11:
            return a.get(attr)
        if len(node.input) > i and node.input[i]:
            return float(np.asarray(imp.const(node, node.input[i])).reshape(-1)[0])
        return None

    lo, hi = bound(1, "min"), bound(2, "max")
    if lo == 0 and hi is None:
        lp.type = "ReLU"
        return
    lp.clip_param.min = -3.4028234663852886e38 if lo is None else lo
    lp.clip_param.max = 3.4028234663852886e38 if hi is None else hi


def _prelu(imp: Importer, node):
    slope = imp.const(node, node.input[1], "slope").reshape(-1)
    lp = imp.layer(node, "PReLU", [imp.bottom(node, node.input[0])])
    if slope.size == 1:
        lp.prelu_param.channel_shared = True
    imp.add_blob(lp, slope if slope.size > 1 else slope.reshape(()))
    imp.finish(node, lp)


def _pool(imp: Importer, node):
    a = imp.attrs(node)
    shape = imp.shapes.get(node.input[0])
    out = imp.shapes.get(node.output[0])
    is_max = node.op_type == "MaxPool"
    if len(node.output) > 1 and node.output[1]:
        raise imp.error(node, "the Indices output has no Caffe form")
    k = list(a["kernel_shape"])
    if len(k) != 2 or shape is None or out is None:
        raise imp.error(node, "only 2-D pooling of known shape is supported")
    if any(d != 1 for d in a.get("dilations", [1, 1])):
        raise imp.error(node, "dilated pooling has no Caffe form")
    s = list(a.get("strides", [1, 1]))
    pads = list(a.get("pads", [0, 0, 0, 0]))
    begin = pads[:2]
    if not is_max and any(begin) and not a.get("count_include_pad", 0):
        raise imp.error(node, "AveragePool with count_include_pad = 0 and padding: Caffe divides by the window "
                        "including the padding")
    if pads[:2] != pads[2:] and not is_max:
        raise imp.error(node, f"asymmetric pads {pads}: Caffe pads both sides equally")
    from ..layers.pooling import pooled_size

    want = tuple(out[2:])
    got = {mode: tuple(pooled_size(i, kk, ss, p, any(begin), mode) for i, kk, ss, p in zip(shape[2:], k, s, begin))
           for mode in (False, True)}
    lp = imp.layer(node, "Pooling", [imp.bottom(node, node.input[0])])
    pp = lp.pooling_param
    pp.pool = pp.MAX if is_max else pp.AVE
    pp.kernel_h, pp.kernel_w = k
    pp.stride_h, pp.stride_w = s
    if any(begin):
        pp.pad_h, pp.pad_w = begin
    if got[False] == want:
        pass  # Caffe's default (ceil) gives ONNX's size
    elif got[True] == want:
        pp.round_mode = pp.FLOOR
    else:
        raise imp.error(node, f"output {want} of a {tuple(shape[2:])} plane: no Caffe pooling gives it")
    imp.finish(node, lp)


def _global_pool(imp: Importer, node):
    lp = imp.layer(node, "Pooling", [imp.bottom(node, node.input[0])])
    lp.pooling_param.pool = lp.pooling_param.MAX if node.op_type == "GlobalMaxPool" else lp.pooling_param.AVE
    lp.pooling_param.global_pooling = True
    imp.finish(node, lp)


def _lrn(imp: Importer, node):
    a = imp.attrs(node)
    lp = imp.layer(node, "LRN", [imp.bottom(node, node.input[0])])
    p = lp.lrn_param
    p.local_size, p.alpha, p.beta, p.k = int(a["size"]), a.get("alpha", 1e-4), a.get("beta", 0.75), a.get("bias", 1.0)
    imp.finish(node, lp)


def _concat(imp: Importer, node):
    lp = imp.layer(node, "Concat", [imp.bottom(node, x) for x in node.input])
    axis = int(imp.attrs(node)["axis"])
    lp.concat_param.axis = axis if axis >= 0 else axis + len(imp.shapes[node.output[0]])
    imp.finish(node, lp)


def _eltwise(op):
    def handler(imp: Importer, node):
        if any(x in imp.consts for x in node.input):
            return _with_constant(imp, node)
        shapes = {imp.shapes.get(x) for x in node.input}
        if len(shapes) != 1:
            raise imp.error(node, "inputs of different shapes (broadcasting) have no Eltwise form")
        lp = imp.layer(node, "Eltwise", [imp.bottom(node, x) for x in node.input])
        lp.eltwise_param.operation = op
        imp.finish(node, lp)
    return handler


def _with_constant(imp: Importer, node):
    """Mul/Add of a tensor and a constant: Power for a scalar, Scale/Bias for a broadcast blob."""
    x, c = (node.input[0], node.input[1]) if node.input[1] in imp.consts else (node.input[1], node.input[0])
    if node.op_type not in ("Mul", "Add"):
        raise imp.error(node, "a constant operand is supported for Mul and Add only")
    value = imp.consts[c].astype(np.float32)
    shape = imp.shapes.get(x)
    if value.size == 1:
        lp = imp.layer(node, "Power", [imp.bottom(node, x)])
        if node.op_type == "Mul":
            lp.power_param.scale = float(value.reshape(-1)[0])
        else:
            lp.power_param.shift = float(value.reshape(-1)[0])
        imp.finish(node, lp)
        return
    if shape is None:
        raise imp.error(node, "unknown input shape")
    # right-aligned broadcast: strip the constant's leading and trailing 1s; what is left
    # must equal the input's axes there (Caffe's axis / num_axes)
    vshape = list(value.shape)
    lead = next((i for i, d in enumerate(vshape) if d != 1), len(vshape))
    trail = next((i for i, d in enumerate(reversed(vshape)) if d != 1), len(vshape))
    dims = vshape[lead:len(vshape) - trail]
    axis = len(shape) - len(vshape) + lead
    if axis < 0 or list(shape[axis:axis + len(dims)]) != dims:
        raise imp.error(node, f"a constant of shape {value.shape} does not broadcast like a Caffe Scale/Bias")
    kind = "Scale" if node.op_type == "Mul" else "Bias"
    lp = imp.layer(node, kind, [imp.bottom(node, x)])
    param = lp.scale_param if kind == "Scale" else lp.bias_param
    param.axis, param.num_axes = axis, len(dims)
    imp.add_blob(lp, value.reshape(dims))
    imp.finish(node, lp)


def _batchnorm(imp: Importer, node):
    a = imp.attrs(node)
    gamma, beta, mean, var = (imp.const(node, n) for n in node.input[1:5])
    lp = imp.layer(node, "BatchNorm", [imp.bottom(node, node.input[0])])
    lp.batch_norm_param.eps = a.get("epsilon", 1e-5)
    lp.batch_norm_param.use_global_stats = True
    imp.add_blob(lp, mean)
    imp.add_blob(lp, var)
    imp.add_blob(lp, np.ones(1, np.float32))
    if np.any(gamma != 1) or np.any(beta != 0):
        sp = imp.layer(node, "Scale", [lp.top[0]], suffix="/scale")
        sp.scale_param.bias_term = True
        imp.add_blob(sp, gamma)
        imp.add_blob(sp, beta)
        lp = sp
    imp.finish(node, lp)


def _softmax(imp: Importer, node):
    shape = imp.shapes.get(node.output[0])
    axis = int(imp.attrs(node).get("axis", -1 if imp.opset >= 13 else 1))
    axis = axis if axis >= 0 else axis + len(shape)
    if imp.opset < 13 and axis != len(shape) - 1:
        raise imp.error(node, "before opset 13 Softmax flattens from its axis; only the last axis maps to Caffe")
    lp = imp.layer(node, "Softmax", [imp.bottom(node, node.input[0])])
    lp.softmax_param.axis = axis
    imp.finish(node, lp)


def _reshape(imp: Importer, node):
    out = imp.shapes.get(node.output[0])
    if out is None or None in out:
        raise imp.error(node, "the output shape is not known statically")
    lp = imp.layer(node, "Reshape", [imp.bottom(node, node.input[0])])
    lp.reshape_param.shape.dim.extend(int(d) for d in out)
    imp.finish(node, lp)


def _identity(imp: Importer, node):
    imp.blob[node.output[0]] = imp.bottom(node, node.input[0])


def _split(imp: Importer, node):
    a = imp.attrs(node)
    shape = imp.shapes.get(node.input[0])
    axis = int(a.get("axis", 0))
    axis = axis if axis >= 0 else axis + len(shape)
    sizes = [imp.shapes[o][axis] for o in node.output]
    lp = imp.layer(node, "Slice", [imp.bottom(node, node.input[0])])
    del lp.top[:]
    lp.top.extend(node.output)
    lp.slice_param.axis = axis
    lp.slice_param.slice_point.extend(int(p) for p in np.cumsum(sizes)[:-1])
    for o in node.output:
        imp.blob[o] = o


def _exp(imp: Importer, node):
    lp = imp.layer(node, "Exp", [imp.bottom(node, node.input[0])])
    imp.finish(node, lp)


def _pow(imp: Importer, node):
    e = imp.const(node, node.input[1], "exponent")
    if e.size != 1:
        raise imp.error(node, "only a scalar constant exponent is a Caffe Power layer")
    lp = imp.layer(node, "Power", [imp.bottom(node, node.input[0])])
    lp.power_param.power = float(e.reshape(-1)[0])
    imp.finish(node, lp)


def _slice(imp: Importer, node):
    """Constant starts/ends (step 1): one Caffe Slice per cut axis, the cut-off parts silenced."""
    shape = imp.shapes.get(node.input[0])
    starts, ends = (imp.const(node, n).reshape(-1) for n in node.input[1:3])
    axes = imp.const(node, node.input[3]).reshape(-1) if len(node.input) > 3 and node.input[3] \
        else np.arange(len(starts))
    if len(node.input) > 4 and node.input[4] and np.any(imp.const(node, node.input[4]) != 1):
        raise imp.error(node, "steps other than 1 have no Caffe form")
    if shape is None:
        raise imp.error(node, "unknown input shape")
    blob = imp.bottom(node, node.input[0])
    for a, b, e in zip(axes, starts, ends):
        a = int(a) + (len(shape) if a < 0 else 0)
        n = shape[a]
        b = int(min(max(b + (n if b < 0 else 0), 0), n))
        e = int(min(max(e + (n if e < 0 else 0), 0), n))
        if (b, e) == (0, n):
            continue
        lp = imp.layer(node, "Slice", [blob], suffix=f"/axis{a}")
        del lp.top[:]
        points = [p for p in (b, e) if 0 < p < n]
        names = [f"{lp.name}/before"] * (b > 0) + [f"{lp.name}/kept"] + [f"{lp.name}/after"] * (e < n)
        lp.top.extend(names)
        lp.slice_param.axis = a
        lp.slice_param.slice_point.extend(points)
        blob = f"{lp.name}/kept"
        cut = [t for t in names if t != blob]
        if cut:
            sl = imp.layer(node, "Silence", cut, suffix=f"/axis{a}/silence")
            del sl.top[:]
    imp.blob[node.output[0]] = blob


IMPORTERS = {
    "Pow": _pow,
    "Slice": _slice,
    "Conv": _conv,
    "ConvTranspose": lambda imp, node: _conv(imp, node, transposed=True),
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Relu": _simple("ReLU"),
    "LeakyRelu": _simple("ReLU", lambda imp, n, lp, a: setattr(lp.relu_param, "negative_slope", a.get("alpha", 0.01))),
    "PRelu": _prelu,
    "Elu": _simple("ELU", lambda imp, n, lp, a: setattr(lp.elu_param, "alpha", a.get("alpha", 1.0))),
    "Sigmoid": _simple("Sigmoid"),
    "Tanh": _simple("TanH"),
    "Abs": _simple("AbsVal"),
    "Exp": _exp,
    "Log": _simple("Log"),
    "Softplus": _simple("BNLL"),
    "Clip": _simple("Clip", _clip_param),
    "MaxPool": _pool,
    "AveragePool": _pool,
    "GlobalMaxPool": _global_pool,
    "GlobalAveragePool": _global_pool,
    "LRN": _lrn,
    "Concat": _concat,
    "Sum": _eltwise(caffe_pb2.EltwiseParameter.SUM),
    "Add": _eltwise(caffe_pb2.EltwiseParameter.SUM),
    "Mul": _eltwise(caffe_pb2.EltwiseParameter.PROD),
    "Max": _eltwise(caffe_pb2.EltwiseParameter.MAX),
    "BatchNormalization": _batchnorm,
    "Softmax": _softmax,
    "Flatten": _reshape,
    "Reshape": _reshape,
    "Identity": _identity,
    "Dropout": _identity,
    "Split": _split,
}


def parse_onnx_bytes(data: bytes, where: str):
    """An ``onnx.ModelProto`` from bytes, or a one-line error (truncated, not ONNX)."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_from_string(data)
    except (DecodeError, ValueError, RuntimeError, IndexError) as exc:
        raise RistrettoError(f"{where}: not a readable ONNX model (truncated or another format): "
                             f"{' '.join(str(exc).split())[:200] or type(exc).__name__}") from None
    if not model.HasField("graph") or not model.graph.node:
        raise RistrettoError(f"{where}: not an ONNX model (no graph nodes); truncated or another format?")
    return model


def import_onnx(data: bytes, where: str = "<onnx>"):
    """The Caffe NetParameter (layers with weight blobs) of an ONNX model of the CNN subset."""
    import onnx
    import onnx.defs
    from onnx import numpy_helper

    model = parse_onnx_bytes(data, where)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    top = onnx.defs.onnx_opset_version()
    if opset is None or not MIN_IMPORT_OPSET <= opset <= top:
        raise RistrettoError(f"{where}: opset {opset} is not supported; importable opsets are "
                             f"{MIN_IMPORT_OPSET}..{top}")
    try:  # (QONNX's Quant as an Identity: ONNX's inference knows no QONNX op)
        inferred = onnx.shape_inference.infer_shapes(without_qonnx(model), strict_mode=True)
    except Exception as exc:
        raise RistrettoError(f"{where}: ONNX shape inference fails: {' '.join(str(exc).split())[:300]}") from None
    del inferred.graph.node[:]
    inferred.graph.node.extend(model.graph.node)
    imp = Importer(inferred, where)
    for n in inferred.graph.node:
        if n.op_type == "Constant":
            imp.consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t) if n.attribute[0].HasField("t") \
                else np.array(onnx.helper.get_attribute_value(n.attribute[0]), np.float32)
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            imp.shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
    for name, array in imp.consts.items():
        imp.shapes.setdefault(name, tuple(array.shape))
    for vi in inferred.graph.input:
        if vi.name in imp.consts:
            continue
        shape = imp.shapes.get(vi.name)
        if shape is None or not shape or any(d is None or d <= 0 for d in shape[1:]):
            raise RistrettoError(f"{where}: graph input '{vi.name}' has no static shape (give its dimensions)")
        lp = imp.net.layer.add(name=vi.name, type="Input")
        imp.layer_names.add(vi.name)
        lp.top.append(vi.name)
        lp.input_param.shape.add().dim.extend(int(d or 1) for d in shape)
        imp.blob[vi.name] = vi.name
    quantized = QuantGraph(imp, inferred, where)
    quantized.find()
    for index, node in enumerate(inferred.graph.node):
        if node.op_type == "Constant":
            continue
        if index in quantized.plans:
            ristretto_layer(imp, quantized.plans[index])
            continue
        if index in quantized.claimed:
            continue
        if is_quant(node):
            raise quantized.unclaimed_error(index)
        if node.domain not in ("", "ai.onnx"):
            raise RistrettoError(f"{where}: node '{node.name or node.output[0]}' ({node.domain}.{node.op_type}) "
                                 f"is outside standard ONNX; importable ops: {', '.join(sorted(IMPORTERS))}")
        handler = IMPORTERS.get(node.op_type)
        if handler is None:
            raise RistrettoError(f"{where}: node '{node.name or node.output[0]}' has op {node.op_type}, which has no "
                                 f"Caffe form here; importable ops: {', '.join(sorted(IMPORTERS))}")
        handler(imp, node)
    # graph outputs: the Caffe blob holding each (an Identity makes an alias)
    outputs = {o.name: imp.blob.get(o.name) for o in inferred.graph.output}
    return imp.net, outputs


def split_weights(net) -> tuple:
    """(prototxt NetParameter without blobs, caffemodel NetParameter with them)."""
    definition = caffe_pb2.NetParameter()
    definition.CopyFrom(net)
    for lp in definition.layer:
        del lp.blobs[:]
    return definition, net
