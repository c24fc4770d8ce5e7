"""Quantized ONNX back into Ristretto layers (the inverse of :mod:`.quant`).

Around a Conv, ConvTranspose, Gemm or MatMul (+ Add of a bias) node, the pattern

* input:   DequantizeLinear(QuantizeLinear(x))      or  Quant(x)
* weights: DequantizeLinear(integer constant)        or  Quant(float constant)
           (DequantizeLinear(QuantizeLinear(float constant)) too), or an exact float
           constant (power-of-two weights, named so by the export's metadata)
* bias:    the same as the weights (optional)
* output:  DequantizeLinear(QuantizeLinear(y))       or  Quant(y)

becomes one ConvolutionRistretto / DeconvolutionRistretto / FcRistretto with
``quantization_param``: dynamic fixed point (bw, fl) with fl = -log2(scale) (an exact
power of two, zero point 0, one scale per tensor), bw from the integer type of Q/DQ
(int8 -> 8, int16 -> 16, int4 -> 4; unsigned types -> our ``is_unsigned_layer_*``) or
QONNX's bitwidth, rounding NEAREST for Q/DQ and QONNX's rounding_mode mapped back.
A Flatten between the input trim and a Gemm, a Reshape between a Gemm and the output
trim (InnerProduct's ``axis``) and the Add of a MatMul's bias belong to the layer.

The export's ``metadata_props`` (``quantization``: the per-layer choices as JSON;
``quantization_nodes``: which ONNX node belongs to which Caffe layer) restore what the
graph alone does not say: the layer's name, bw_params where the integer container is
wider than the format, power-of-two weights (exp_min, exp_max). Metadata that
contradicts the graph is an error; without metadata the graph alone decides (dynamic
fixed point, bw = the container's width).

Every imported layer reproduces the graph exactly: its trims of the imported weights
and bias are checked to be the identity, a re-trim of an already trimmed blob (a Q/DQ
pair shared by two layers) is idempotent, and the in-place input trim of a Ristretto
layer is accepted only where no ONNX reader sees the difference. Anything else
quantized (per-channel or blocked scales, nonzero zero points, scales that are not
powers of two, Q/DQ around other ops, narrow ranges, QONNX's bipolar 1-bit Quant) is
an error naming the node and the reason.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import RistrettoError
from ..formats.config import Precision, QuantConfig
from ..formats.rounding import FormatError, Rounding

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
QONNX_DOMAINS = ("qonnx.custom_op.general", "onnx.brevitas")
QONNX_OPS = ("Quant", "IntQuant")
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: QONNX rounding_mode -> our rounding (the inverse of quant.QONNX_ROUNDING, HALF_EVEN = ROUND)
QONNX_ROUNDING_BACK = {"ROUND": Rounding.NEAREST, "HALF_EVEN": Rounding.NEAREST, "HALF_UP": Rounding.NEAREST_TIES_AWAY,
                       "FLOOR": Rounding.TRUNCATE, "DOWN": Rounding.TOWARD_ZERO}
_QONNX_NUMPY = {Rounding.NEAREST: np.rint, Rounding.TRUNCATE: np.floor, Rounding.TOWARD_ZERO: np.trunc,
                Rounding.NEAREST_TIES_AWAY: lambda v: np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))}


def _integer_types() -> dict:
    """ONNX integer element type -> (bits, signed)."""
    from onnx import TensorProto as T

    types = {T.INT8: (8, True), T.UINT8: (8, False), T.INT16: (16, True), T.UINT16: (16, False),
             T.INT32: (32, True), T.UINT32: (32, False)}
    for name, bits, signed in (("INT4", 4, True), ("UINT4", 4, False), ("INT2", 2, True), ("UINT2", 2, False)):
        if hasattr(T, name):
            types[getattr(T, name)] = (bits, signed)
    return types


def is_qonnx(node) -> bool:
    return node.domain in QONNX_DOMAINS and node.op_type in QONNX_OPS


def is_quant(node) -> bool:
    """A Q/DQ or QONNX Quant node."""
    return (node.domain in ("", "ai.onnx") and node.op_type in QDQ_OPS) or is_qonnx(node)


def without_qonnx(model):
    """A copy of ``model`` with every QONNX Quant as an Identity of its input (the same
    shape), for ONNX's shape inference, which knows no QONNX op."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for n in copy.graph.node:
        if is_qonnx(n):
            n.op_type, n.domain = "Identity", ""
            del n.input[1:]
            del n.attribute[:]
    return copy


@dataclass
class Act:
    """An activation trim: DequantizeLinear(QuantizeLinear(x)) or Quant(x)."""

    x: str  # the tensor trimmed
    out: str  # the trimmed tensor
    nodes: list  # indices of its nodes
    bw: int
    fl: int
    unsigned: bool
    rounding: Rounding


@dataclass
class Param:
    """A weight or bias: float values, and (bw, fl) when it is a dynamic fixed point blob."""

    values: np.ndarray
    nodes: list
    bw: int | None = None
    fl: int | None = None
    source: str = ""  # node (or initializer) it came from, for messages


@dataclass
class Plan:
    index: int  # the compute node's position
    node: object  # the compute node
    kind: str  # conv / deconv / fc
    inp: Act
    weight: Param
    bias: Param | None
    out: Act
    claimed: set = field(default_factory=set)  # node indices that this layer stands for
    fc_axis: int = 1
    fc_transpose: bool = False
    config: QuantConfig | None = None
    layer_name: str | None = None


class QuantGraph:
    """The quantized layers of one model, found before the import walks its nodes."""

    def __init__(self, imp, model, where: str):
        self.imp = imp
        self.where = where
        self.nodes = list(model.graph.node)
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        for i, n in enumerate(self.nodes):
            for o in n.output:
                if o:
                    self.producer[o] = i
            for x in n.input:
                if x:
                    self.consumers.setdefault(x, []).append(i)
        self.graph_outputs = {o.name for o in model.graph.output}
        self.types = {t.name: t.data_type for t in model.graph.initializer}
        for n in self.nodes:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].HasField("t"):
                self.types[n.output[0]] = n.attribute[0].t.data_type
        meta = {p.key: p.value for p in model.metadata_props}
        self.meta_format = meta.get("format")
        try:
            self.meta = json.loads(meta.get("quantization") or "{}")
            self.meta_nodes = json.loads(meta.get("quantization_nodes") or "{}")
        except ValueError:
            raise RistrettoError(f"{where}: metadata 'quantization' is not JSON") from None
        self.plans: dict[int, Plan] = {}
        self.claimed: dict[int, int] = {}  # node index -> the first plan that claims it

    # -- messages ------------------------------------------------------------
    def error(self, i: int, message: str) -> RistrettoError:
        n = self.nodes[i]
        return RistrettoError(f"{self.where}: node '{n.name or n.output[0]}' ({n.op_type}): {message}")

    def label(self, i: int) -> str:
        n = self.nodes[i]
        return f"'{n.name or n.output[0]}' ({n.op_type})"

    # -- small readers -----------------------------------------------------------
    def const(self, name: str):
        return self.imp.consts.get(name)

    def node_of(self, tensor: str):
        i = self.producer.get(tensor)
        return (i, self.nodes[i]) if i is not None else (None, None)

    def only_consumer(self, tensor: str):
        c = self.consumers.get(tensor, [])
        if len(c) == 1 and tensor not in self.graph_outputs:
            return c[0], self.nodes[c[0]]
        return None, None

    def attrs(self, i: int) -> dict:
        return self.imp.attrs(self.nodes[i])

    def scale_fl(self, i: int, name: str) -> int:
        """fl of a per-tensor power-of-two scale 2^-fl (the scale input ``name`` of node ``i``)."""
        s = self.const(name)
        if s is None:
            raise self.error(i, f"scale '{name}' must be a constant")
        s = np.asarray(s, dtype=np.float64)
        if s.size != 1:
            raise self.error(i, f"per-channel scales ({s.size} values, shape {list(s.shape)}): ristretto's "
                             "dynamic fixed point has one scale 2^-fl per blob")
        if self.nodes[i].op_type in QDQ_OPS and self.attrs(i).get("block_size", 0):
            raise self.error(i, "blocked quantization: ristretto's dynamic fixed point has one scale per blob")
        v = float(s.reshape(-1)[0])
        m, e = math.frexp(v) if math.isfinite(v) and v > 0 else (0.0, 0)
        if m != 0.5:
            raise self.error(i, f"scale {v:g} is not a power of two; ristretto's dynamic fixed point needs "
                             "scale 2^-fl")
        fl = 1 - e
        if not -126 <= fl <= 126:
            raise self.error(i, f"scale 2^{-fl} is outside float32's normal range")
        return fl

    def zero_point_zero(self, i: int, name: str | None) -> None:
        if not name:
            return
        z = self.const(name)
        if z is None:
            raise self.error(i, f"zero point '{name}' must be a constant")
        z = np.asarray(z)
        if z.size != 1:
            raise self.error(i, f"per-channel zero points ({z.size} values): ristretto's dynamic fixed point "
                             "has one format per blob")
        if z.reshape(-1)[0] != 0:
            raise self.error(i, f"zero point {z.reshape(-1)[0]}: ristretto's dynamic fixed point is symmetric "
                             "(zero point 0)")

    def qdq_type(self, i: int) -> tuple[int, bool]:
        """(bits, signed) of a QuantizeLinear's output / a DequantizeLinear's input type."""
        n = self.nodes[i]
        if len(n.input) > 2 and n.input[2]:
            t = self.types.get(n.input[2])
        elif n.op_type == "DequantizeLinear":
            t = self.types.get(n.input[0])
        else:
            from onnx import TensorProto

            t = self.attrs(i).get("output_dtype") or TensorProto.UINT8  # ONNX's default: uint8
        ints = _integer_types()
        if t not in ints:
            from onnx import helper

            name = helper.tensor_dtype_to_string(t) if t else "unknown"
            raise self.error(i, f"quantized type {name}: ristretto's dynamic fixed point is an integer type "
                             "(int4/int8/int16/int32 or unsigned)")
        return ints[t]

    def qonnx_format(self, i: int, activation: bool) -> tuple[int, int, bool, Rounding]:
        """(bw, fl, unsigned, rounding) of a QONNX Quant node."""
        n = self.nodes[i]
        if len(n.input) != 4:
            raise self.error(i, "a Quant node takes x, scale, zeropt and bitwidth")
        fl = self.scale_fl(i, n.input[1])
        self.zero_point_zero(i, n.input[2])
        b = self.const(n.input[3])
        if b is None or np.asarray(b).size != 1:
            raise self.error(i, "bitwidth must be a constant scalar")
        bw_f = float(np.asarray(b).reshape(-1)[0])
        a = self.attrs(i)
        signed, narrow = int(a.get("signed", 1)), int(a.get("narrow", 0))
        mode = a.get("rounding_mode", "ROUND")
        mode = (mode.decode() if isinstance(mode, bytes) else str(mode)).upper()
        if bw_f != int(bw_f) or not 1 <= int(bw_f) <= 32:
            raise self.error(i, f"bitwidth {bw_f:g}: ristretto's dynamic fixed point has 1 to 32 bits")
        bw = int(bw_f)
        if narrow:
            raise self.error(i, "narrow = 1 leaves out the most negative code; ristretto's dynamic fixed point "
                             "has the full two's complement range")
        if signed and bw == 1:
            raise self.error(i, "a signed 1-bit Quant is bipolar in QONNX (+-scale); ristretto's 1-bit format "
                             "is {-1, 0} * 2^-fl")
        if mode not in QONNX_ROUNDING_BACK:
            raise self.error(i, f"rounding_mode {mode} has no ristretto rounding scheme (ROUND, HALF_EVEN, "
                             "HALF_UP, FLOOR and DOWN have)")
        return bw, fl, not signed, QONNX_ROUNDING_BACK[mode]

    # -- patterns ------------------------------------------------------------------
    def activation(self, tensor: str, compute: int, role: str) -> Act | None:
        """The activation trim whose result is ``tensor``, None when ``tensor`` is not one."""
        i, n = self.node_of(tensor)
        if n is None or not is_quant(n):
            return None
        if is_qonnx(n):
            if self.const(n.input[0]) is not None:
                raise self.error(compute, f"{role} '{tensor}' is a Quant of a constant; a Ristretto layer's "
                                 f"{role} is an activation")
            bw, fl, unsigned, r = self.qonnx_format(i, True)
            return Act(n.input[0], tensor, [i], bw, fl, unsigned, r)
        if n.op_type != "DequantizeLinear":
            raise self.error(compute, f"{role} '{tensor}' is a QuantizeLinear output; a Ristretto layer reads "
                             "DequantizeLinear(QuantizeLinear(x))")
        qi, q = self.node_of(n.input[0])
        if q is None or q.op_type != "QuantizeLinear" or q.domain not in ("", "ai.onnx"):
            raise self.error(i, f"the {role} of node {self.label(compute)} is DequantizeLinear of "
                             f"'{n.input[0]}', not of a QuantizeLinear; ristretto trims an activation as "
                             "DequantizeLinear(QuantizeLinear(x))")
        if self.only_consumer(q.output[0])[0] != i:
            raise self.error(qi, "its output is read by other nodes than the one DequantizeLinear; ristretto "
                             "trims a blob as a QuantizeLinear -> DequantizeLinear pair")
        fl_q, fl_d = self.scale_fl(qi, q.input[1]), self.scale_fl(i, n.input[1])
        if fl_q != fl_d:
            raise self.error(i, f"scale 2^{-fl_d} differs from its QuantizeLinear's 2^{-fl_q}")
        for k, node in ((qi, q), (i, n)):
            self.zero_point_zero(k, node.input[2] if len(node.input) > 2 else None)
        bw, signed = self.qdq_type(qi)  # (ONNX's typing makes the DequantizeLinear's the same)
        if q.attribute and self.attrs(qi).get("saturate", 1) != 1:
            raise self.error(qi, "saturate = 0: ristretto's dynamic fixed point saturates")
        return Act(q.input[0], tensor, [qi, i], bw, fl_q, not signed, Rounding.NEAREST)

    def param(self, tensor: str, compute: int, role: str) -> Param:
        """A weight / bias input: a float constant, DequantizeLinear of integers, or a Q/DQ
        or Quant of a float constant (evaluated here)."""
        c = self.const(tensor)
        if c is not None:
            if not np.issubdtype(np.asarray(c).dtype, np.floating):
                raise self.error(compute, f"{role} '{tensor}' is an integer tensor without a DequantizeLinear")
            return Param(np.asarray(c, np.float32), [], source=tensor)
        i, n = self.node_of(tensor)
        if n is not None and is_qonnx(n):
            w = self.const(n.input[0])
            if w is None:
                raise self.error(compute, f"{role} '{tensor}' must be Quant of a constant")
            bw, fl, unsigned, r = self.qonnx_format(i, False)
            if unsigned:
                raise self.error(i, f"an unsigned {role}: ristretto's weights are signed dynamic fixed point")
            codes = _round(np.asarray(w, np.float32) / np.float32(2.0 ** -fl), bw, False, r)
            return Param((codes * np.float32(2.0 ** -fl)).astype(np.float32), [i], bw, fl, self.label(i))
        if n is not None and n.op_type == "DequantizeLinear" and n.domain in ("", "ai.onnx"):
            fl = self.scale_fl(i, n.input[1])
            self.zero_point_zero(i, n.input[2] if len(n.input) > 2 else None)
            bw, signed = self.qdq_type(i)
            if not signed:
                raise self.error(i, f"an unsigned {role}: ristretto's weights are signed dynamic fixed point")
            codes = self.const(n.input[0])
            nodes = [i]
            if codes is None:  # DequantizeLinear(QuantizeLinear(float constant))
                qi, q = self.node_of(n.input[0])
                w = self.const(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
                if w is None:
                    raise self.error(i, f"the {role} of node {self.label(compute)} must be DequantizeLinear of an "
                                     "integer constant (or of QuantizeLinear of a float constant)")
                if self.scale_fl(qi, q.input[1]) != fl or self.qdq_type(qi) != (bw, signed):
                    raise self.error(qi, "its scale or type differs from its DequantizeLinear's")
                self.zero_point_zero(qi, q.input[2] if len(q.input) > 2 else None)
                codes = _round(np.asarray(w, np.float32) / np.float32(2.0 ** -fl), bw, False, Rounding.NEAREST)
                nodes.append(qi)
            values = np.asarray(codes).astype(np.float32) * np.float32(2.0 ** -fl)
            return Param(values.astype(np.float32), nodes, bw, fl, self.label(i))
        if n is not None and is_quant(n):
            raise self.error(compute, f"{role} '{tensor}' comes from {self.label(i)}; expected DequantizeLinear")
        raise self.error(compute, f"{role} '{tensor}' must be a constant, or DequantizeLinear / Quant of one")

    def output(self, tensor: str, compute: int) -> Act | None:
        """The output trim reading ``tensor`` (its only reader), None when there is none."""
        i, n = self.only_consumer(tensor)
        if n is None or not is_quant(n):
            return None
        if is_qonnx(n):
            bw, fl, unsigned, r = self.qonnx_format(i, True)
            return Act(tensor, n.output[0], [i], bw, fl, unsigned, r)
        if n.op_type != "QuantizeLinear":
            raise self.error(i, f"node {self.label(compute)}'s output goes to a DequantizeLinear without a "
                             "QuantizeLinear")
        di, d = self.only_consumer(n.output[0])
        if d is None or d.op_type != "DequantizeLinear":
            raise self.error(i, "its output must go to exactly one DequantizeLinear (a Ristretto layer's output "
                             "trim is a QuantizeLinear -> DequantizeLinear pair)")
        act = self.activation(d.output[0], compute, "output")
        act.x = tensor
        return act

    # -- one layer -------------------------------------------------------------------
    def plan(self, i: int) -> Plan | None:
        n = self.nodes[i]
        if len(n.input) < 2:
            return None
        claimed = {i}
        # input (through a Flatten for Gemm)
        data = n.input[0]
        flatten = None
        fi, f = self.node_of(data)
        if n.op_type == "Gemm" and f is not None and f.op_type == "Flatten" and self.only_consumer(data)[0] == i:
            pi, p = self.node_of(f.input[0])
            if p is not None and is_quant(p):
                flatten, data = fi, f.input[0]
        inp = self.activation(data, i, "input")
        w_node = self.node_of(n.input[1])[1]
        if w_node is None or not is_quant(w_node):
            if inp is None or n.name not in self.meta_nodes:
                # float weights: a float layer (that may read a blob another layer trimmed);
                # with trimmed activations a Ristretto layer only where the export's metadata
                # names it (power-of-two weights)
                return None
        elif inp is None:
            raise self.error(i, f"its input '{data}' is not trimmed (DequantizeLinear(QuantizeLinear(x)) or "
                             "Quant(x)) while its weights are; a Ristretto layer trims its input, weights and "
                             "output")
        # the computed tensor: Conv/Gemm output, a Reshape after Gemm, the Add of a MatMul's bias
        y = n.output[0]
        bias_tensor = n.input[2] if len(n.input) > 2 and n.input[2] else None
        extra = []
        if n.op_type == "Gemm":
            ri, r = self.only_consumer(y)
            if r is not None and r.op_type == "Reshape" and self.output(r.output[0], i) is not None:
                extra.append(ri)
                y = r.output[0]
        elif n.op_type == "MatMul":
            ai, a = self.only_consumer(y)
            if a is not None and a.op_type == "Add":
                other = a.input[1] if a.input[0] == y else a.input[0]
                on = self.node_of(other)[1]
                if (on is not None and is_quant(on)) or self.const(other) is not None:
                    extra.append(ai)
                    bias_tensor, y = other, a.output[0]
        out = self.output(y, i)
        if out is None:
            raise self.error(i, f"its output '{y}' is not trimmed by one QuantizeLinear -> DequantizeLinear pair "
                             "(or Quant) that alone reads it; a Ristretto layer trims its output")
        kind = {"Conv": "conv", "ConvTranspose": "deconv"}.get(n.op_type, "fc")
        plan = Plan(i, n, kind, inp, self.param(n.input[1], i, "weights"), None, out)
        if bias_tensor:
            plan.bias = self.param(bias_tensor, i, "bias")
        if n.op_type == "Gemm":
            a = self.attrs(i)
            if a.get("transA", 0):
                raise self.error(i, "transA = 1 has no InnerProduct form")
            if a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
                raise self.error(i, "alpha / beta other than 1 would scale the quantized weights off their grid")
            plan.fc_transpose = not a.get("transB", 0)
            in_shape = self.imp.shapes.get(data)
            if flatten is not None:
                axis = int(self.attrs(flatten).get("axis", 1))
                plan.fc_axis = axis + (len(in_shape) if axis < 0 and in_shape else 0)
            if plan.fc_axis != 1 or extra:
                want = None if in_shape is None else list(in_shape[:plan.fc_axis]) + [
                    plan.weight.values.shape[1 if plan.fc_transpose else 0]]
                got = self.imp.shapes.get(y)
                if want is None or got is None or list(got) != want:
                    raise self.error(i, f"Flatten(axis {plan.fc_axis}) / Reshape around it give {got}, not "
                                     f"InnerProduct's {want}")
        elif n.op_type == "MatMul":
            if plan.weight.values.ndim != 2:
                raise self.error(i, "only a 2-D constant second input is an InnerProduct")
            plan.fc_transpose = True
            shape = self.imp.shapes.get(data)
            plan.fc_axis = len(shape) - 1 if shape is not None and len(shape) > 2 else 1
        claimed.update(inp.nodes, out.nodes, plan.weight.nodes, extra)
        if plan.bias is not None:
            claimed.update(plan.bias.nodes)
        if flatten is not None:
            claimed.add(flatten)
        plan.claimed = claimed
        plan.layer_name, meta = self.metadata_for(plan)
        plan.config = self.config(plan, meta)
        return plan

    def metadata_for(self, plan: Plan):
        """(Caffe layer name, its metadata entry) of the export that wrote this layer, or (None, None)."""
        if not self.meta:
            return None, None
        n = self.nodes[plan.index]
        name = self.meta_nodes.get(n.name)
        if name is None and not self.meta_nodes:  # older exports: weight nodes are named <layer>/param<i>
            for k in plan.weight.nodes:
                full = self.nodes[k].name
                cut = [p for p in range(len(full)) if full[p] == "/"]
                name = next((full[:p] for p in reversed(cut) if full[:p] in self.meta), None)
                if name is not None:
                    break
        if name is None or name not in self.meta:
            return None, None
        return name, self.meta[name]

    def config(self, plan: Plan, meta: dict | None) -> QuantConfig:
        i = plan.index
        inp, out, w, b = plan.inp, plan.out, plan.weight, plan.bias
        if inp.rounding != out.rounding:
            raise self.error(i, f"its input trim rounds {inp.rounding.name}, its output trim "
                             f"{out.rounding.name}; a Ristretto layer has one rounding scheme")
        fields = dict(rounding_scheme=inp.rounding, bw_layer_in=inp.bw, fl_layer_in=inp.fl, bw_layer_out=out.bw,
                      fl_layer_out=out.fl, is_unsigned_layer_in=inp.unsigned, is_unsigned_layer_out=out.unsigned)
        if w.bw is not None:
            fields.update(precision=Precision.DYNAMIC_FIXED_POINT, bw_params=w.bw, fl_params=w.fl)
        elif meta is None or meta.get("precision") != Precision.INTEGER_POWER_OF_2_WEIGHTS.name:
            why = ("" if meta is None else f" (the metadata of layer '{plan.layer_name}' says "
                   f"{meta.get('precision')})")
            raise self.error(i, f"its weights '{self.nodes[i].input[1]}' are float, not DequantizeLinear of "
                             f"integers or Quant{why}; a Ristretto layer trims its weights (power-of-two weights "
                             "are recognised from the metadata of ristretto's export)")
        if b is not None and b.bw is not None and (w.bw is None or (b.bw, b.fl) != (w.bw, w.fl)):
            fields.update(bw_bias=b.bw, fl_bias=b.fl)  # a bias in its own format
        if meta is not None:
            fields = self.with_metadata(plan, meta, fields)
        try:
            cfg = QuantConfig(**fields).validate()
        except (FormatError, TypeError, ValueError) as exc:
            raise self.error(i, f"no valid quantization_param: {exc}") from None
        self.check_identity(plan, cfg)
        return cfg

    def with_metadata(self, plan: Plan, meta: dict, fields: dict) -> dict:
        """``fields`` (read from the graph) completed by the export's metadata, which must agree."""
        i = plan.index
        name = plan.layer_name

        def clash(key, said, graph):
            return self.error(i, f"the model's metadata gives layer '{name}' {key} {said}, the graph {graph} "
                              "(edited after the export?)")

        try:
            precision = Precision[meta["precision"]]
            rounding = Rounding[meta["rounding"]]
        except KeyError as exc:
            raise self.error(i, f"the model's metadata of layer '{name}' has no valid {exc}") from None
        if precision == Precision.MINIFLOAT:
            raise clash("precision", "MINIFLOAT", "dynamic fixed point")
        if rounding != fields["rounding_scheme"]:
            raise clash("rounding", rounding.name, fields["rounding_scheme"].name)
        for key in ("bw_layer_in", "fl_layer_in", "bw_layer_out", "fl_layer_out"):
            if key in meta and int(meta[key]) != fields[key]:
                raise clash(key, meta[key], fields[key])
        for key in ("is_unsigned_layer_in", "is_unsigned_layer_out"):
            if bool(meta.get(key, False)) != fields[key]:
                raise clash(key, bool(meta.get(key, False)), fields[key])
        fields = dict(fields, precision=precision)
        if precision == Precision.DYNAMIC_FIXED_POINT:
            if plan.weight.bw is None:
                raise clash("precision", "DYNAMIC_FIXED_POINT", "float weights")
            if int(meta.get("fl_params", fields["fl_params"])) != fields["fl_params"]:
                raise clash("fl_params", meta["fl_params"], fields["fl_params"])
            bw = int(meta.get("bw_params", fields["bw_params"]))
            if bw > fields["bw_params"]:
                raise clash("bw_params", bw, f"a {fields['bw_params']}-bit container")
            fields["bw_params"] = bw
            if "bw_bias" not in meta and "bw_bias" in fields and (fields["bw_bias"], fields["fl_bias"]) != (
                    fields["bw_params"], fields["fl_params"]):
                if fields["fl_bias"] != fields["fl_params"]:
                    raise clash("bias format", "the weights'", f"scale 2^{-fields['fl_bias']}")
                fields.pop("bw_bias"), fields.pop("fl_bias")  # the bias in the weights' (narrower) format
        else:
            if plan.weight.bw is not None:
                raise clash("precision", precision.name, "integer weights")
            fields.update(exp_min=int(meta["exp_min"]), exp_max=int(meta["exp_max"]))
        if "bw_bias" in meta:
            bb, fb = int(meta["bw_bias"]), int(meta["fl_bias"])
            if plan.bias is None or plan.bias.fl != fb or plan.bias.bw is None or bb > plan.bias.bw:
                raise clash("bw_bias/fl_bias", f"{bb}/{fb}", "another bias")
            fields.update(bw_bias=bb, fl_bias=fb)
        return fields

    def check_identity(self, plan: Plan, cfg: QuantConfig) -> None:
        """The layer's own trims leave the imported weights and bias as they are (else the
        Caffe layer would compute something else than the graph)."""
        w = plan.weight.values
        if not np.array_equal(cfg.trim_weights(w), w):
            raise self.error(plan.index, f"the weights from {plan.weight.source} are not all values of the "
                             f"layer's format ({cfg.describe()})")
        if plan.bias is not None:
            b = plan.bias.values
            if not np.array_equal(cfg.trim_bias(b), b):
                raise self.error(plan.index, f"the bias from {plan.bias.source} is not all values of its format "
                                 f"({'bias ' + str(cfg.bw_bias) + '/' + str(cfg.fl_bias) if cfg.bw_bias else cfg.describe()}"
                                 "); a Ristretto layer trims its bias in the weights' format unless bw_bias is set")

    # -- the whole graph ---------------------------------------------------------------
    def find(self) -> None:
        for i, n in enumerate(self.nodes):
            if n.op_type in COMPUTE_OPS and n.domain in ("", "ai.onnx"):
                plan = self.plan(i)
                if plan is not None:
                    self.plans[i] = plan
                    for k in plan.claimed:
                        self.claimed.setdefault(k, i)
        for p, plan in self.plans.items():
            self.check_order(p, plan)

    def when(self, k: int) -> int:
        """Where node ``k`` computes in the Caffe net: a claimed node with its layer."""
        return self.claimed.get(k, k)

    def check_order(self, p: int, plan: Plan) -> None:
        """The layer's input trim is in place (every later reader of the blob sees it): no
        ONNX reader may see the difference."""
        inp = plan.inp
        if min(self.claimed[k] for k in inp.nodes) != p:
            return  # an earlier layer's trim: this layer re-trims a trimmed blob (idempotent)
        if inp.x in self.graph_outputs:
            raise self.error(p, f"its input '{inp.x}' is a graph output too; the Ristretto layer trims it in place")
        for r in self.consumers.get(inp.x, []):
            if r not in plan.claimed and self.when(r) > p:
                raise self.error(p, f"node {self.label(r)} reads '{inp.x}' untrimmed after this layer; the "
                                 "Ristretto layer trims its input blob in place, for every later reader")
        for r in self.consumers.get(inp.out, []):
            if r not in plan.claimed and self.when(r) < p:
                raise self.error(p, f"node {self.label(r)} reads the trimmed '{inp.out}' before this layer "
                                 "computes; the Ristretto layer trims its input where it computes")

    def unclaimed_error(self, i: int) -> RistrettoError:
        """A Q/DQ / Quant node that no Ristretto layer stands for."""
        seen, k = set(), i
        while k is not None and k not in seen and is_quant(self.nodes[k]):
            seen.add(k)
            c = self.consumers.get(self.nodes[k].output[0], [])
            k = c[0] if c else None
        around = f" around {self.label(k)}" if k is not None and k not in seen else ""
        hint = ""
        if k is not None and self.nodes[k].op_type in COMPUTE_OPS and len(self.nodes[k].input) > 1 and \
                self.const(self.nodes[k].input[1]) is not None:
            hint = " (its weights are float: power-of-two weights are recognised only from the metadata of " \
                   "ristretto's export)"
        return self.error(i, f"quantization{around} has no Ristretto form{hint}; Q/DQ and QONNX Quant are "
                          "imported only as the input, weight, bias and output trims of Conv, ConvTranspose, "
                          "Gemm and MatMul(+Add)")


def _round(v, bw: int, unsigned: bool, rounding: Rounding):
    """Saturate to the bw-bit integer range, then round (QuantizeLinear / Quant on a constant)."""
    lo, hi = (0, 2 ** bw - 1) if unsigned else (-(2 ** (bw - 1)), 2 ** (bw - 1) - 1)
    return _QONNX_NUMPY[rounding](np.clip(v, np.float32(lo), np.float32(hi))).astype(np.float32)
