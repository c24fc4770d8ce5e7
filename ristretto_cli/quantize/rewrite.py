"""A candidate configuration -> a NetParameter with Ristretto layers (the original's
``EditNetDescription*``).

What the original does, and so what we do:

* Layers of type Convolution (or already ConvolutionRistretto) become
  ``ConvolutionRistretto``; InnerProduct (or FcRistretto) become ``FcRistretto``.
  Deconvolution and LRN layers are never touched by the search.
* Only the fields the original sets are written, so every other field keeps its
  proto default (and the Ristretto layer trims with that default, DESIGN.md 5):

  - dynamic fixed point, weights of a category: ``bw_params``, ``fl_params = bw - il_params``
    (no ``precision``: its default is DYNAMIC_FIXED_POINT);
  - dynamic fixed point, activations: ``bw_layer_in``, ``fl_layer_in = bw - il_in``,
    ``bw_layer_out``, ``fl_layer_out = bw - il_out`` on conv and FC layers;
  - minifloat: ``precision: MINIFLOAT``, ``mant_bits = bw - 1 - exp_bits``, ``exp_bits``;
  - power-of-two weights: ``precision: INTEGER_POWER_OF_2_WEIGHTS``, ``exp_min``,
    ``exp_max``, then the activation fields as above (8 bits).

* Every layer of those types in the file is rewritten, whatever its phase; the
  integer lengths are looked up by layer name.

Our additions, only when a candidate asks for them (so the original flow writes what
it always wrote): ``whole_graph`` also rewrites Pooling, Eltwise, Concat, BatchNorm,
Scale, ReLU and PReLU into their Ristretto types with the activation format (Scale's
factors and PReLU's slopes get WHOLE_GRAPH_PARAM_BITS-bit dynamic fixed point);
unsigned activation sites (IntegerLengths.unsigned_in/out) write
``is_unsigned_layer_in/out``; ``bias`` writes ``bw_bias`` / ``fl_bias = bias - il_bias``
on layers with a bias; ``layers`` (the per-layer search, dynamic fixed point only) gives
named conv / FC layers their own weight and activation widths instead of their
category's.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

from ..errors import RistrettoError
from ..layers.ristretto import WHOLE_GRAPH_TYPES  # whole-graph float types (ours) -> their Ristretto types
from ..proto import caffe_pb2
from .observe import IntegerLengths

DYNAMIC_FIXED_POINT = "dynamic_fixed_point"
MINIFLOAT = "minifloat"
POWER_OF_2 = "integer_power_of_2_weights"
MODES = (DYNAMIC_FIXED_POINT, MINIFLOAT, POWER_OF_2)

CONV_TYPES = ("Convolution", "ConvolutionRistretto")
FC_TYPES = ("InnerProduct", "FcRistretto")
RISTRETTO_TYPES = ("ConvolutionRistretto", "FcRistretto", "DeconvolutionRistretto", "LRNRistretto") + \
    tuple(WHOLE_GRAPH_TYPES.values())
#: the whole-graph types with weights to trim (Scale's factors, PReLU's slopes): fixed width, not searched
WHOLE_GRAPH_PARAM_BITS = 16

_QP = caffe_pb2.QuantizationParameter


@dataclass(frozen=True)
class Candidate:
    """One net configuration the search scores.

    Dynamic fixed point: ``conv_params`` / ``fc_params`` are the weight bit widths of
    conv / FC layers and ``activations`` the width of their inputs and outputs; None
    leaves that part in float (the layer may still become a Ristretto layer with
    default fields). Minifloat: ``mant_bits`` + ``exp_bits``. Power of two:
    ``exp_min``..``exp_max`` for weights and ``activations`` bits of dynamic fixed point.
    """

    precision: str
    conv_params: int | None = None
    fc_params: int | None = None
    activations: int | None = None
    mant_bits: int | None = None
    exp_bits: int | None = None
    exp_min: int | None = None
    exp_max: int | None = None
    whole_graph: bool | None = None   # ours: also the whole-graph types
    bias: int | None = None           # ours: bias bit width (None: the weights' format)
    #: ours (``--search per-layer``): ((layer, bw_params, bw_act), ...) in file order; a width
    #: replaces the layer's category width (None: the category's); dynamic fixed point only
    layers: tuple | None = None

    def __post_init__(self):
        if self.layers is None:
            return
        items = self.layers.items() if isinstance(self.layers, dict) else \
            ((row[0], tuple(row[1:])) for row in self.layers)
        rows = tuple((str(name), *(None if w is None else int(w) for w in widths)) for name, widths in items)
        if any(len(r) != 3 for r in rows):
            raise ValueError("per-layer widths are (layer, bw_params, bw_act)")
        if rows and self.precision != DYNAMIC_FIXED_POINT:
            raise ValueError("per-layer widths are dynamic fixed point only")
        object.__setattr__(self, "layers", rows or None)

    def override(self, layer_name: str) -> tuple[int | None, int | None] | None:
        """(bw_params, bw_act) this candidate gives the named layer, None when it names none."""
        for name, params, acts in self.layers or ():
            if name == layer_name:
                return params, acts
        return None

    def widths_of(self, layer_name: str, layer_type: str) -> tuple[int | None, int | None]:
        """(weights, activations) widths of a conv / FC layer in dynamic fixed point (None: float)."""
        params = self.conv_params if layer_type in CONV_TYPES else self.fc_params
        acts = self.activations
        o = self.override(layer_name)
        if o is not None:
            params = params if o[0] is None else o[0]
            acts = acts if o[1] is None else o[1]
        return params, acts

    @property
    def bit_width(self) -> int | None:
        """Minifloat: total width 1 + exp + mant."""
        if self.precision == MINIFLOAT:
            return 1 + self.exp_bits + self.mant_bits
        return None

    def label(self) -> str:
        extras = (", whole graph" if self.whole_graph else "") + \
            (f", {self.bias}-bit bias" if self.bias is not None else "")
        return self._label() + extras

    def _label(self) -> str:
        if self.precision == MINIFLOAT:
            return f"minifloat {self.bit_width}-bit (exp {self.exp_bits}, mant {self.mant_bits})"
        if self.precision == POWER_OF_2:
            act = "" if self.activations is None else f", {self.activations}-bit activations"
            return f"power-of-two weights 2^[{self.exp_min},{self.exp_max}]{act}"
        parts = []
        if self.conv_params is not None:
            parts.append(f"CONV weights {self.conv_params}-bit")
        if self.fc_params is not None:
            parts.append(f"FC weights {self.fc_params}-bit")
        if self.activations is not None:
            parts.append(f"activations {self.activations}-bit")
        text = ", ".join(parts) or "float"
        if self.layers:  # weights/activations per named layer; '-': the category's
            text += "; per layer " + ", ".join(f"{n} {'-' if p is None else p}/{'-' if a is None else a}"
                                               for n, p, a in self.layers)
        return text

    def to_json(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if v is not None}
        if self.layers:
            out["layers"] = {name: [p, a] for name, p, a in self.layers}
        return out

    def changes(self, layer_type: str) -> bool:
        """Does this candidate turn a layer of ``layer_type`` into a Ristretto layer?"""
        conv, fc = layer_type in CONV_TYPES, layer_type in FC_TYPES
        if self.whole_graph and (layer_type in WHOLE_GRAPH_TYPES or layer_type in WHOLE_GRAPH_TYPES.values()):
            return self.precision == MINIFLOAT or self.activations is not None
        if not (conv or fc):
            return False
        if self.precision == DYNAMIC_FIXED_POINT:
            weights = self.conv_params if conv else self.fc_params
            return weights is not None or self.activations is not None
        return True

    def changes_layer(self, lp) -> bool:
        """Does this candidate turn the layer ``lp`` (a LayerParameter) into a Ristretto layer?"""
        if self.changes(lp.type):
            return True
        if self.layers and (lp.type in CONV_TYPES or lp.type in FC_TYPES):
            return any(w is not None for w in self.widths_of(lp.name, lp.type))
        return False


def dfp(conv_params=None, fc_params=None, activations=None) -> Candidate:
    return Candidate(DYNAMIC_FIXED_POINT, conv_params=conv_params, fc_params=fc_params, activations=activations)


def minifloat(bit_width: int, exp_bits: int) -> Candidate:
    return Candidate(MINIFLOAT, mant_bits=bit_width - 1 - exp_bits, exp_bits=exp_bits)


def power_of_2(exp_min: int = -8, exp_max: int = -1, activations: int | None = 8) -> Candidate:
    return Candidate(POWER_OF_2, exp_min=exp_min, exp_max=exp_max, activations=activations)


def ristretto_type(layer_type: str) -> str:
    return "ConvolutionRistretto" if layer_type in CONV_TYPES else "FcRistretto"


def changed_layers(param, candidate: Candidate) -> list[str]:
    """Names of the layers of ``param`` that ``candidate`` rewrites, in file order."""
    return [lp.name for lp in param.layer if candidate.changes_layer(lp)]


def _lengths(lengths: Mapping[str, IntegerLengths], lp) -> IntegerLengths:
    try:
        return lengths[lp.name]
    except KeyError:
        raise RistrettoError(f"layer '{lp.name}' ({lp.type}) is not in the TRAIN-phase net, so it has no "
                             f"statistics to choose its integer lengths from; the quantize search needs every "
                             f"Convolution / InnerProduct layer in the TRAIN phase too") from None


def _set_activations(qp, bits: int, il: IntegerLengths) -> None:
    qp.bw_layer_in = bits
    qp.fl_layer_in = bits - il.il_in
    qp.bw_layer_out = bits
    qp.fl_layer_out = bits - il.il_out
    if il.unsigned_in:
        qp.is_unsigned_layer_in = True
    if il.unsigned_out:
        qp.is_unsigned_layer_out = True


def has_bias(lp) -> bool:
    """Does this layer definition have a bias blob?"""
    if lp.type in CONV_TYPES or lp.type in ("Deconvolution", "DeconvolutionRistretto"):
        return lp.convolution_param.bias_term
    if lp.type in FC_TYPES:
        return lp.inner_product_param.bias_term
    if lp.type in ("Scale", "ScaleRistretto"):
        return lp.scale_param.bias_term
    return False


def _set_bias(qp, bits: int | None, il: IntegerLengths, lp) -> None:
    if bits is None or not has_bias(lp) or il.il_bias is None:
        return
    qp.bw_bias = bits
    qp.fl_bias = bits - il.il_bias


def _rewrite_whole_graph(lp, candidate: Candidate, lengths) -> None:
    """A Pooling / Eltwise / Concat / BatchNorm / Scale / ReLU / PReLU layer in its Ristretto type."""
    if lp.type in WHOLE_GRAPH_TYPES:
        lp.type = WHOLE_GRAPH_TYPES[lp.type]
    qp = lp.quantization_param
    if candidate.precision == MINIFLOAT:
        qp.precision = _QP.MINIFLOAT
        qp.mant_bits = candidate.mant_bits
        qp.exp_bits = candidate.exp_bits
        return
    il = _lengths(lengths, lp)
    _set_activations(qp, candidate.activations, il)
    if lp.type in ("ScaleRistretto", "PReLURistretto"):
        qp.bw_params = WHOLE_GRAPH_PARAM_BITS
        qp.fl_params = WHOLE_GRAPH_PARAM_BITS - il.il_params
        _set_bias(qp, candidate.bias, il, lp)


def rewrite_net(param, candidate: Candidate, lengths: Mapping[str, IntegerLengths] | None = None):
    """A copy of ``param`` with ``candidate`` applied (see the module docstring).

    ``lengths`` maps layer names to integer lengths; dynamic fixed point and the
    activations of power-of-two need them.
    """
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    lengths = lengths or {}
    for lp in out.layer:
        if not candidate.changes_layer(lp):
            continue
        if lp.type not in CONV_TYPES and lp.type not in FC_TYPES:
            _rewrite_whole_graph(lp, candidate, lengths)
            continue
        lp.type = ristretto_type(lp.type)
        qp = lp.quantization_param
        if candidate.precision == DYNAMIC_FIXED_POINT:
            weights, activations = candidate.widths_of(lp.name, lp.type)
            il = _lengths(lengths, lp)
            if weights is not None:
                qp.bw_params = weights
                qp.fl_params = weights - il.il_params
            if activations is not None:
                _set_activations(qp, activations, il)
            _set_bias(qp, candidate.bias, il, lp)
        elif candidate.precision == MINIFLOAT:
            qp.precision = _QP.MINIFLOAT
            qp.mant_bits = candidate.mant_bits
            qp.exp_bits = candidate.exp_bits
        elif candidate.precision == POWER_OF_2:
            qp.precision = _QP.INTEGER_POWER_OF_2_WEIGHTS
            qp.exp_min = candidate.exp_min
            qp.exp_max = candidate.exp_max
            if candidate.activations is not None:
                _set_activations(qp, candidate.activations, _lengths(lengths, lp))
            if candidate.bias is not None:
                _set_bias(qp, candidate.bias, _lengths(lengths, lp), lp)
        else:
            raise RistrettoError(f"unknown trimming mode '{candidate.precision}'; use {', '.join(MODES)}")
    return out


def ristretto_layers(param) -> list[tuple[str, str]]:
    """(name, type) of layers that are already Ristretto layers."""
    return [(lp.name, lp.type) for lp in param.layer if lp.type in RISTRETTO_TYPES]
