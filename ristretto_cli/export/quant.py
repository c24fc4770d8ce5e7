"""The Ristretto layers in ONNX: reduced-precision formats around the float handlers.

``qdq`` (standard ONNX): a dynamic fixed point blob (bw, fl) is QuantizeLinear /
DequantizeLinear with scale 2^-fl and zero point 0 of a signed integer type whose
saturation bounds are the format's own: int8 for 8 bits, int16 for 16 (opset >= 21),
int4 for 4 (opset >= 21). QuantizeLinear rounds half to even, which is our NEAREST;
it saturates before the rounding can leave the range, as our clamp-then-round does.
Weights and biases are integer initializers (the codes k = w * 2^fl, any width up to
32 bits fits a container exactly, as no QuantizeLinear runs on them) feeding a
DequantizeLinear. Power-of-two weights are exact float initializers.

``qonnx``: QONNX ``Quant`` nodes (domain ``qonnx.custom_op.general``; inputs scale,
zeropt, bitwidth; attributes signed, narrow, rounding_mode) express any width and
more rounding schemes; weights are the trimmed float values behind a Quant node.

Refused, with the reason: minifloat (ONNX's float8 types and QONNX's FloatQuant have
subnormals and other saturation rules than Ristretto's minifloat), STOCHASTIC
rounding (not a function of the input), activation widths whose saturation no ONNX
integer type gives (qdq), rounding schemes other than NEAREST in qdq.
"""
from __future__ import annotations

import numpy as np

from ..formats.config import Precision, QuantConfig
from ..formats.rounding import Rounding
from .handlers import FLOAT_OF, HANDLERS, Site

QONNX_DOMAIN = "qonnx.custom_op.general"
#: our rounding schemes as QONNX rounding_mode values
QONNX_ROUNDING = {Rounding.NEAREST: "ROUND", Rounding.NEAREST_TIES_AWAY: "HALF_UP", Rounding.TRUNCATE: "FLOOR",
                  Rounding.TOWARD_ZERO: "DOWN"}


def describe(cfg: QuantConfig) -> dict:
    """The quantization choices of one layer, for the model's metadata (JSON)."""
    d = {"precision": cfg.precision.name, "rounding": cfg.rounding_scheme.name}
    if cfg.precision == Precision.MINIFLOAT:
        d.update(mant_bits=cfg.mant_bits, exp_bits=cfg.exp_bits)
        return d
    d.update(bw_layer_in=cfg.bw_layer_in, fl_layer_in=cfg.fl_layer_in, bw_layer_out=cfg.bw_layer_out,
             fl_layer_out=cfg.fl_layer_out)
    for key in ("is_unsigned_layer_in", "is_unsigned_layer_out"):  # our extensions, only when set
        if getattr(cfg, key):
            d[key] = True
    if cfg.bw_bias is not None:
        d.update(bw_bias=cfg.bw_bias, fl_bias=cfg.fl_bias)
    if cfg.precision == Precision.DYNAMIC_FIXED_POINT:
        d.update(bw_params=cfg.bw_params, fl_params=cfg.fl_params)
    else:
        d.update(exp_min=cfg.exp_min, exp_max=cfg.exp_max)
    return d


def _scale_exponent_ok(fl: int) -> bool:
    return -126 <= fl <= 126  # 2^-fl a normal float32


def activation_type(bw: int, opset: int, unsigned: bool = False):
    """The ONNX integer type whose saturation is exactly (bw)-bit two's complement (or
    unsigned: 0..2^bw - 1), or the reason why none."""
    from onnx import TensorProto

    u = "u" if unsigned else ""
    if bw == 8:
        return (TensorProto.UINT8 if unsigned else TensorProto.INT8), None
    if bw == 16:
        return ((TensorProto.UINT16 if unsigned else TensorProto.INT16), None) if opset >= 21 else (
            None, f"{u}int16 QuantizeLinear needs opset 21 or later")
    if bw == 4:
        return ((TensorProto.UINT4 if unsigned else TensorProto.INT4), None) if opset >= 21 else (
            None, f"{u}int4 QuantizeLinear needs opset 21 or later")
    lo, hi = (0, (1 << bw) - 1) if unsigned else (-(1 << (bw - 1)), (1 << (bw - 1)) - 1)
    return None, (f"QuantizeLinear saturates at its integer type's bounds ({u}int8: "
                  f"{'0..255' if unsigned else '-128..127'}), a {bw}-bit format at {lo}..{hi}; only 4 (opset >= "
                  "21), 8 and 16 (opset >= 21) bit activations have an exact Q/DQ form (use --format qonnx)")


def weight_container(bw: int, opset: int):
    """(ONNX type, numpy dtype) holding bw-bit codes exactly (no QuantizeLinear saturates them)."""
    from onnx import TensorProto

    if bw <= 4 and opset >= 21:
        return TensorProto.INT4, np.int8
    if bw <= 8:
        return TensorProto.INT8, np.int8
    if bw <= 16 and opset >= 21:
        return TensorProto.INT16, np.int16
    return TensorProto.INT32, np.int32


def check_exportable(s: Site, cfg: QuantConfig, fmt: str) -> None:
    """Raise (naming the layer and the reason) when ``fmt`` cannot express ``cfg`` exactly."""
    if s.layer.type == "LRNRistretto" or cfg.precision == Precision.MINIFLOAT:
        raise s.error("minifloat has no exact ONNX form: ONNX's float8 types and QONNX's FloatQuant keep "
                      "subnormals and saturate differently from Ristretto's minifloat (no denormals, the "
                      "rounding carry kept); export --format float for the float net")
    r = cfg.rounding_scheme
    if r == Rounding.STOCHASTIC:
        raise s.error("STOCHASTIC rounding draws anew at every forward; an ONNX graph is a function of its "
                      "input (use NEAREST)")
    if fmt == "qdq" and r != Rounding.NEAREST:
        raise s.error(f"rounding {r.name}: QuantizeLinear rounds half to even (NEAREST) only; use --format qonnx")
    if fmt == "qonnx" and r not in QONNX_ROUNDING:
        raise s.error(f"rounding {r.name} has no QONNX rounding_mode")
    sites = [("layer_in", cfg.bw_layer_in, cfg.fl_layer_in), ("layer_out", cfg.bw_layer_out, cfg.fl_layer_out)]
    if cfg.precision == Precision.DYNAMIC_FIXED_POINT:
        sites.append(("params", cfg.bw_params, cfg.fl_params))
    if cfg.bw_bias is not None and len(s.params) > 1:
        sites.append(("bias", cfg.bw_bias, cfg.fl_bias))
    for site, bw, fl in sites:
        if not _scale_exponent_ok(fl):
            raise s.error(f"fl_{site} {fl}: the scale 2^{-fl} is not a normal float32")
        if fmt == "qonnx" and bw == 1 and not (site.startswith("layer_") and getattr(cfg, f"is_unsigned_{site}")):
            raise s.error(f"bw_{site} 1: QONNX reads a signed 1-bit Quant as the bipolar values +-scale; "
                          f"Ristretto's 1-bit format is {{-1, 0}} * 2^-fl")
        if fmt == "qdq" and site.startswith("layer_"):
            t, why = activation_type(bw, s.g.opset, getattr(cfg, f"is_unsigned_{site}"))
            if t is None:
                raise s.error(f"bw_{site} {bw}: {why}")


def _activation(s: Site, x: str, bw: int, fl: int, cfg: QuantConfig, fmt: str, what: str,
                unsigned: bool = False) -> str:
    g = s.g
    scale = g.scalar(2.0 ** -fl)
    base = f"{s.name}/{what}"
    if fmt == "qonnx":
        return g.node("Quant", [x, scale, g.scalar(0.0), g.scalar(float(bw))], base, domain=QONNX_DOMAIN,
                      signed=0 if unsigned else 1, narrow=0, rounding_mode=QONNX_ROUNDING[cfg.rounding_scheme])[0]
    t, _ = activation_type(bw, g.opset, unsigned)
    zp = _zero_point(g, t)
    q = g.node("QuantizeLinear", [x, scale, zp], f"{base}_q")[0]
    return g.node("DequantizeLinear", [q, scale, zp], base)[0]


def _zero_point(g, onnx_type) -> str:
    from onnx import helper

    key = ("zp", onnx_type)
    if key not in g._consts:
        name = g.fresh(f"zero_point_{helper.tensor_dtype_to_string(onnx_type).split('.')[-1].lower()}")
        g.initializers.append(helper.make_tensor(name, onnx_type, [], [0]))
        g._consts[key] = name
    return g._consts[key]


def _int_param(s: Site, values, bw: int, fl: int, fmt: str, index: int) -> str:
    """An integer-coded parameter blob: qdq: codes + DequantizeLinear; qonnx: floats + Quant."""
    from onnx import helper

    g = s.g
    scale = g.scalar(2.0 ** -fl)
    if fmt == "qonnx":
        w = g.const(f"{s.name}/param{index}", np.asarray(values, np.float32))
        return g.node("Quant", [w, scale, g.scalar(0.0), g.scalar(float(bw))], f"{s.name}/param{index}_quant",
                      domain=QONNX_DOMAIN, signed=1, narrow=0, rounding_mode="ROUND")[0]
    codes = integer_codes(values, fl)
    t, np_dtype = weight_container(bw, g.opset)
    name = g.fresh(f"{s.name}/param{index}_int{bw}")
    g.initializers.append(helper.make_tensor(name, t, list(codes.shape), codes.astype(np_dtype).reshape(-1).tolist())
                          if t == 22 else _np_tensor(codes.astype(np_dtype), name))
    return g.node("DequantizeLinear", [name, scale, _zero_point(g, t)], f"{s.name}/param{index}")[0]


def _np_tensor(a, name):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.ascontiguousarray(a), name)


def integer_codes(values, fl: int) -> np.ndarray:
    """k = v * 2^fl as int64; ``values`` must lie on the 2^-fl grid (trimmed)."""
    k = np.ldexp(np.asarray(values, dtype=np.float64), int(fl))
    codes = np.rint(k)
    if not np.array_equal(codes, k):
        raise ValueError("values are not on the fixed point grid")
    return codes.astype(np.int64)


def export_ristretto(s: Site, fmt: str, in_blobs: list[str]) -> list[str]:
    """The quantized layer: trim inputs in place (rebinding every reader), quantized
    parameters, the float computation, trimmed outputs."""
    layer = s.layer
    cfg = layer.quant_config
    check_exportable(s, cfg, fmt)
    # inputs: trimmed in place, so every later reader of the blob sees the trimmed tensor
    new_bottoms = []
    for blob, x in zip(in_blobs, s.bottoms):
        t = _activation(s, x, cfg.bw_layer_in, cfg.fl_layer_in, cfg, fmt, f"{blob}_in", cfg.is_unsigned_layer_in)
        s.g.rebind_in_place(blob, t)
        new_bottoms.append(t)
    s.bottoms = new_bottoms
    trimmed = [np.asarray(layer.backend.to_numpy(a)) for a in layer.quantized_blobs(cfg, cfg.rounding_scheme)]
    s.params = trimmed
    if cfg.precision == Precision.DYNAMIC_FIXED_POINT:
        s.param_tensors[0] = _int_param(s, trimmed[0], cfg.bw_params, cfg.fl_params, fmt, 0)
    if len(trimmed) > 1:  # the bias: its own format, else the weights' (power of two: untouched, float)
        if cfg.bw_bias is not None:
            s.param_tensors[1] = _int_param(s, trimmed[1], cfg.bw_bias, cfg.fl_bias, fmt, 1)
        elif cfg.precision == Precision.DYNAMIC_FIXED_POINT:
            s.param_tensors[1] = _int_param(s, trimmed[1], cfg.bw_params, cfg.fl_params, fmt, 1)
    tops = HANDLERS[FLOAT_OF[layer.type]](s)
    return [_activation(s, t, cfg.bw_layer_out, cfg.fl_layer_out, cfg, fmt, f"{blob}_out", cfg.is_unsigned_layer_out)
            for t, blob in zip(tops, s.tops)]
