"""One handler per Caffe layer type, and the table ``HANDLERS`` (type name -> handler).

A handler gets a :class:`Site` (the graph, the built layer, its bottoms as ONNX
tensors, shapes known statically from the net) and returns one ONNX tensor per top.
Shapes are static (the net's blob shapes), so Flatten/Reshape/Crop/Slice become
ONNX ops with constant arguments. Where Caffe's arithmetic has no exact ONNX form
(STOCHASTIC pooling, a pooling window ONNX cannot clip as Caffe does) the handler
raises an error that names the layer and the reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import RistrettoError
from .graph import OnnxGraph

#: Caffe layers that ``export onnx`` leaves out of an inference graph (logged)
DROPPED_TYPES = {"Accuracy", "SoftmaxWithLoss", "EuclideanLoss", "SigmoidCrossEntropyLoss", "HingeLoss",
                 "InfogainLoss", "MultinomialLogisticLoss", "ContrastiveLoss", "Silence"}
#: layers whose tops are their bottom's array in TEST (no ONNX node)
ALIAS_TYPES = {"Split", "Dropout"}
#: layers that become graph inputs
INPUT_TYPES = {"Input", "Data", "ImageData", "DummyData"}


@dataclass
class Site:
    g: OnnxGraph
    layer: object
    bottoms: list
    bottom_shapes: list
    tops: list
    top_shapes: list
    params: list  # numpy arrays the export computes with
    param_tensors: dict = field(default_factory=dict)  # index -> ONNX tensor (quantized weights)

    @property
    def name(self) -> str:
        return self.layer.name

    def error(self, message: str) -> RistrettoError:
        return RistrettoError(f"layer '{self.layer.name}' ({self.layer.type}): {message}")

    def param(self, i: int, shape=None) -> str:
        """Parameter blob ``i`` as an ONNX tensor (reshaped to ``shape`` when given)."""
        if i in self.param_tensors:
            t = self.param_tensors[i]
            if shape is not None:
                t = self.g.node("Reshape", [t, self.g.int64s(f"{self.name}/shape{i}", shape)],
                                f"{self.name}/param{i}")[0]
            return t
        a = np.asarray(self.params[i], dtype=np.float32)
        if shape is not None:
            a = a.reshape(shape)
        return self.g.const(f"{self.name}/param{i}", a)

    def node(self, op, inputs, n_out=1, name=None, **attrs):
        return self.g.node(op, inputs, name or (self.tops[0] if self.tops else self.name), n_out=n_out, **attrs)


def _one(op):
    def handler(s: Site):
        return s.node(op, [s.bottoms[0]])
    handler.__name__ = f"unary_{op}"
    return handler


def convolution(s: Site, transposed=False):
    l = s.layer
    if l.channel_axis != 1:
        raise s.error(f"axis {l.channel_axis}: ONNX convolutions take channels on axis 1")
    g = l.geom
    attrs = dict(kernel_shape=list(g.kernel), strides=list(g.stride), pads=list(g.pad) * 2,
                 dilations=list(g.dilation), group=l.group)
    inputs = [None, s.param(0)] + ([s.param(1)] if l.bias_term else [])
    op = "ConvTranspose" if transposed else "Conv"
    outs = []
    for i, b in enumerate(s.bottoms):
        inputs[0] = b
        outs.append(s.g.node(op, list(inputs), s.tops[i], **attrs)[0])
    return outs


def deconvolution(s: Site):
    return convolution(s, transposed=True)


def inner_product(s: Site):
    l = s.layer
    shape = s.bottom_shapes[0]
    x = s.bottoms[0]
    if len(shape) != 2 or l.axis != 1:
        x = s.node("Flatten", [x], name=f"{s.name}/flatten", axis=l.axis)[0]
    inputs = [x, s.param(0)] + ([s.param(1)] if l.bias_term else [])
    y = s.node("Gemm", inputs, name=f"{s.name}/gemm" if len(s.top_shapes[0]) != 2 else None,
               transB=0 if l.transpose else 1)[0]
    if len(s.top_shapes[0]) != 2:
        y = s.node("Reshape", [y, s.g.int64s(f"{s.name}/top_shape", s.top_shapes[0])])[0]
    return [y]


def relu(s: Site):
    if s.layer.slope:
        return s.node("LeakyRelu", [s.bottoms[0]], alpha=s.layer.slope)
    return s.node("Relu", [s.bottoms[0]])


def prelu(s: Site):
    ndim = len(s.bottom_shapes[0])
    shape = [1] if s.layer.channel_shared else [s.bottom_shapes[0][1]] + [1] * (ndim - 2)
    return s.node("PRelu", [s.bottoms[0], s.param(0, shape)])


def elu(s: Site):
    return s.node("Elu", [s.bottoms[0]], alpha=s.layer.alpha)


def clip(s: Site):
    p = s.layer.param.clip_param
    return s.node("Clip", [s.bottoms[0], s.g.scalar(p.min), s.g.scalar(p.max)])


def power(s: Site):
    l = s.layer
    y = s.bottoms[0]
    if l.power == 0 or l.scale == 0:  # Caffe: a constant, 1 or shift^power
        value = 1.0 if l.power == 0 else float(np.float32(l.shift) ** np.float32(l.power))
        return s.node("Add", [s.node("Mul", [y, s.g.scalar(0.0)], name=f"{s.name}/zero")[0], s.g.scalar(value)])
    if l.scale != 1:
        y = s.node("Mul", [y, s.g.scalar(l.scale)], name=f"{s.name}/scale")[0]
    if l.shift != 0:
        y = s.node("Add", [y, s.g.scalar(l.shift)], name=f"{s.name}/shift")[0]
    if l.power != 1:
        y = s.node("Pow", [y, s.g.scalar(l.power)])[0]
    elif y == s.bottoms[0]:
        y = s.node("Identity", [y])[0]
    return [y]


def exp(s: Site):
    l = s.layer
    y = s.bottoms[0]
    if l.inner_scale != 1:
        y = s.node("Mul", [y, s.g.scalar(l.inner_scale)], name=f"{s.name}/inner")[0]
    y = s.node("Exp", [y], name=f"{s.name}/exp" if l.outer_scale != 1 else None)[0]
    if l.outer_scale != 1:
        y = s.node("Mul", [y, s.g.scalar(l.outer_scale)])[0]
    return [y]


def log(s: Site):
    l = s.layer
    y = s.bottoms[0]
    if l.scale != 1:
        y = s.node("Mul", [y, s.g.scalar(l.scale)], name=f"{s.name}/scale")[0]
    if l.shift != 0:
        y = s.node("Add", [y, s.g.scalar(l.shift)], name=f"{s.name}/shift")[0]
    y = s.node("Log", [y], name=f"{s.name}/log" if l.base_scale != 1 else None)[0]
    if l.base_scale != 1:
        y = s.node("Mul", [y, s.g.scalar(l.base_scale)])[0]
    return [y]


def pooling(s: Site):
    from ..layers.pooling import AVE, MAX

    l = s.layer
    if len(s.tops) > 1:
        raise s.error("the second (argmax mask) top of MAX pooling has no ONNX form")
    if l.method not in (MAX, AVE):
        raise s.error("STOCHASTIC pooling has no ONNX form")
    in_hw = tuple(s.bottom_shapes[0][2:])
    kernel, stride, pad, out = l.geometry(in_hw)
    x = s.bottoms[0]
    if l.global_pooling or (tuple(kernel) == in_hw and out == (1, 1) and not any(pad)):
        return s.node("GlobalMaxPool" if l.method == MAX else "GlobalAveragePool", [x])
    # Symmetric pads with ceil_mode where Caffe's count (ceil, minus a window that would
    # start in the padding) and ONNX's shape inference agree; otherwise end pads chosen so
    # that floor mode gives Caffe's count.
    floor_out = tuple((i + 2 * p - k) // st + 1 for i, k, st, p in zip(in_hw, kernel, stride, pad))
    ceil_out = tuple(-(-(i + 2 * p - k) // st) + 1 for i, k, st, p in zip(in_hw, kernel, stride, pad))
    if out == floor_out:
        return s.node("MaxPool" if l.method == MAX else "AveragePool", [x], kernel_shape=list(kernel),
                      strides=list(stride), pads=list(pad) * 2,
                      **({} if l.method == MAX else {"count_include_pad": 1}))
    # some last window runs past the padded input (Caffe's ceil mode)
    if any((o - 1) * st - p >= i for o, st, p, i in zip(out, stride, pad, in_hw)):
        raise s.error(f"pooling a {in_hw} plane with kernel {kernel}, stride {stride}, pad {pad}: Caffe's last "
                      "window lies wholly outside the input (it gives -FLT_MAX or 0/0 there); ONNX has no such "
                      "window")
    if l.method == AVE:
        # Caffe divides by the window clipped to in + pad; ONNX AveragePool with ceil_mode
        # and count_include_pad clips the same way, when its shape inference agrees.
        if out != ceil_out:
            raise s.error(f"AVE pooling of a {in_hw} plane with kernel {kernel}, stride {stride}, pad {pad}: "
                          f"Caffe drops a last window that ONNX's ceil mode keeps; no ONNX form divides "
                          "as Caffe does")
        return s.node("AveragePool", [x], kernel_shape=list(kernel), strides=list(stride), pads=list(pad) * 2,
                      ceil_mode=1, count_include_pad=1)
    ends = [(o - 1) * st + k - i - p for o, st, k, i, p in zip(out, stride, kernel, in_hw, pad)]
    if any(e >= k or e < 0 for e, k in zip(ends, kernel)):
        raise s.error(f"MAX pooling of a {in_hw} plane with kernel {kernel}, stride {stride}, pad {pad}: "
                      f"ONNX would need end pads {ends}, not smaller than the kernel")
    return s.node("MaxPool", [x], kernel_shape=list(kernel), strides=list(stride),
                  pads=list(pad) + ends)


def lrn(s: Site):
    from ..layers.lrn import ACROSS_CHANNELS

    l = s.layer
    x = s.bottoms[0]
    if l.norm_region == ACROSS_CHANNELS:
        # ONNX LRN: x / (bias + alpha/size * sum of squares)^beta, Caffe's formula
        return s.node("LRN", [x], size=l.size, alpha=l.alpha, beta=l.beta, bias=l.k)
    # WITHIN_CHANNEL as Caffe builds it: square, AVE-pool size x size (pad (size-1)/2, the
    # divisor size^2 everywhere), 1 + alpha * that, ^-beta, times x
    pre = (l.size - 1) // 2
    sq = s.node("Mul", [x, x], name=f"{s.name}/square")[0]
    avg = s.node("AveragePool", [sq], name=f"{s.name}/pool", kernel_shape=[l.size] * 2, strides=[1, 1],
                 pads=[pre] * 4, count_include_pad=1)[0]
    base = s.node("Add", [s.node("Mul", [avg, s.g.scalar(l.alpha)], name=f"{s.name}/alpha")[0], s.g.scalar(1.0)],
                  name=f"{s.name}/base")[0]
    scale = s.node("Pow", [base, s.g.scalar(-l.beta)], name=f"{s.name}/power")[0]
    return s.node("Mul", [x, scale])


def concat(s: Site):
    return s.node("Concat", list(s.bottoms), axis=s.layer.axis)


def eltwise(s: Site):
    from ..proto import caffe_pb2

    op = s.layer.op
    E = caffe_pb2.EltwiseParameter
    if op == E.PROD:
        y = s.bottoms[0]
        for i, b in enumerate(s.bottoms[1:], 1):
            y = s.node("Mul", [y, b], name=None if i == len(s.bottoms) - 1 else f"{s.name}/prod{i}")[0]
        return [y]
    if op == E.MAX:
        return s.node("Max", list(s.bottoms))
    terms = []
    for i, (b, c) in enumerate(zip(s.bottoms, s.layer.coeffs)):
        terms.append(b if c == 1 else s.node("Mul", [b, s.g.scalar(c)], name=f"{s.name}/coeff{i}")[0])
    return s.node("Sum", terms)


def batch_norm(s: Site):
    l = s.layer
    if not l.use_global_stats:
        raise s.error("use_global_stats: false normalises with the batch's own statistics; an inference "
                      "graph needs the stored ones")
    if len(s.bottom_shapes[0]) < 2:
        raise s.error("ONNX BatchNormalization needs (N, C, ...) inputs")
    factor = float(np.asarray(s.params[2]).reshape(-1)[0])
    factor = 0.0 if factor == 0 else 1.0 / factor
    mean = np.asarray(s.params[0], np.float32) * np.float32(factor)
    var = np.asarray(s.params[1], np.float32) * np.float32(factor)
    c = l.channels
    return s.node("BatchNormalization", [s.bottoms[0], s.g.const(f"{s.name}/gamma", np.ones(c, np.float32)),
                                         s.g.const(f"{s.name}/beta", np.zeros(c, np.float32)),
                                         s.g.const(f"{s.name}/mean", mean), s.g.const(f"{s.name}/var", var)],
                  epsilon=l.eps)


def _broadcast_shape(shape, axis, param_shape):
    return list(param_shape) + [1] * (len(shape) - axis - len(param_shape))


def scale(s: Site):
    l = s.layer
    p = l.param.scale_param
    shape = s.bottom_shapes[0]
    x = s.bottoms[0]
    axis = l.canonical_axis(p.axis, len(shape))
    has_bias = bool(p.bias_term)
    if len(s.bottoms) > 1:
        sshape = s.bottom_shapes[1]
        if len(sshape) == 0:
            axis = 0
        target = _broadcast_shape(shape, axis, sshape)
        factor = s.node("Reshape", [s.bottoms[1], s.g.int64s(f"{s.name}/scale_shape", target)],
                        name=f"{s.name}/scale")[0]
        bias_index = 0
    else:
        sshape = np.asarray(s.params[0]).shape
        if len(sshape) == 0:
            axis = 0
        factor = s.param(0, _broadcast_shape(shape, axis, sshape))
        bias_index = 1
    y = s.node("Mul", [x, factor], name=f"{s.name}/mul" if has_bias else None)[0]
    if has_bias:
        bshape = np.asarray(s.params[bias_index]).shape
        baxis = 0 if len(bshape) == 0 else l.canonical_axis(p.axis, len(shape))
        y = s.node("Add", [y, s.param(bias_index, _broadcast_shape(shape, baxis, bshape))])[0]
    return [y]


def bias(s: Site):
    l = s.layer
    p = l.param.bias_param
    shape = s.bottom_shapes[0]
    if len(s.bottoms) > 1:
        bshape = s.bottom_shapes[1]
        axis = 0 if len(bshape) == 0 else l.canonical_axis(p.axis, len(shape))
        b = s.node("Reshape", [s.bottoms[1], s.g.int64s(f"{s.name}/bias_shape",
                                                        _broadcast_shape(shape, axis, bshape))],
                   name=f"{s.name}/bias")[0]
    else:
        bshape = np.asarray(s.params[0]).shape
        axis = 0 if len(bshape) == 0 else l.canonical_axis(p.axis, len(shape))
        b = s.param(0, _broadcast_shape(shape, axis, bshape))
    return s.node("Add", [s.bottoms[0], b])


def softmax(s: Site):
    axis = s.layer.canonical_axis(s.layer.param.softmax_param.axis, len(s.bottom_shapes[0]))
    if s.g.opset < 13:
        raise s.error("Softmax over one axis needs opset 13 or later")
    return s.node("Softmax", [s.bottoms[0]], axis=axis)


def reshape(s: Site):
    return s.node("Reshape", [s.bottoms[0], s.g.int64s(f"{s.name}/shape", s.top_shapes[0])])


def slice_(s: Site):
    axis, sizes = s.layer._sizes(tuple(s.bottom_shapes[0]))
    if len(sizes) == 1:
        return s.node("Identity", [s.bottoms[0]])
    outs = [s.g.fresh(t) for t in s.tops]
    s.g.node("Split", [s.bottoms[0], s.g.int64s(f"{s.name}/split", sizes)], s.name, outputs=outs, axis=axis)
    return outs


def crop(s: Site):
    shape, ref = tuple(s.bottom_shapes[0]), tuple(s.bottom_shapes[1])
    offsets = s.layer._offsets(shape, ref)
    start = s.layer.canonical_axis(s.layer.param.crop_param.axis, len(shape))
    axes = list(range(start, len(shape)))
    starts = [offsets[a] for a in axes]
    ends = [offsets[a] + ref[a] for a in axes]
    return s.node("Slice", [s.bottoms[0], s.g.int64s(f"{s.name}/starts", starts),
                            s.g.int64s(f"{s.name}/ends", ends), s.g.int64s(f"{s.name}/axes", axes)])


def bnll(s: Site):
    return s.node("Softplus", [s.bottoms[0]])


HANDLERS = {
    "Convolution": convolution,
    "Deconvolution": deconvolution,
    "InnerProduct": inner_product,
    "ReLU": relu,
    "PReLU": prelu,
    "ELU": elu,
    "Clip": clip,
    "Sigmoid": _one("Sigmoid"),
    "TanH": _one("Tanh"),
    "AbsVal": _one("Abs"),
    "BNLL": bnll,
    "Power": power,
    "Exp": exp,
    "Log": log,
    "Pooling": pooling,
    "LRN": lrn,
    "Concat": concat,
    "Eltwise": eltwise,
    "BatchNorm": batch_norm,
    "Scale": scale,
    "Bias": bias,
    "Softmax": softmax,
    "Flatten": reshape,
    "Reshape": reshape,
    "Slice": slice_,
    "Crop": crop,
}

#: the float layer each Ristretto type computes (``--format float`` exports these)
FLOAT_OF = {"ConvolutionRistretto": "Convolution", "FcRistretto": "InnerProduct",
            "DeconvolutionRistretto": "Deconvolution", "LRNRistretto": "LRN"}

