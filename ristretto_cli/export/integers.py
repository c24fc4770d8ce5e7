"""The integers a chip stores and the shifts it applies, for every quantized layer.

For a dynamic fixed point layer (DESIGN.md section 3) with input (bw_in, fl_in),
parameters (bw_p, fl_p) and output (bw_out, fl_out):

* weight and bias codes ``k = w * 2^fl_p`` (integers of bw_p bits, exactly the trimmed
  values our forward computes with);
* the accumulator holds ``acc_fl = max(fl_in + fl_p, fl_p)`` fractional bits: each
  product ``x_code * w_code`` is shifted left by ``acc_fl - fl_in - fl_p``, the bias code
  by ``acc_fl - fl_p`` (both >= 0, so nothing is lost);
* the output code is ``sat_bw_out(R(acc * 2^(fl_out - acc_fl)))``: an arithmetic shift by
  ``out_shift = acc_fl - fl_out`` (right when positive) with the layer's rounding
  (NEAREST: round half to even), then saturation to bw_out bits.

Power-of-two layers store each weight as a sign and an exponent (w = sign * 2^exp); their
bias is not trimmed (float32, as our forward). Minifloat layers are not integer
arithmetic and are listed as such.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass, field

import numpy as np

from ..errors import RistrettoError
from ..formats.config import Precision
from .quant import integer_codes

RISTRETTO_TYPES = ("ConvolutionRistretto", "FcRistretto", "DeconvolutionRistretto", "LRNRistretto")


@dataclass
class IntegerLayer:
    name: str
    type: str
    precision: str
    rounding: str
    formats: dict  # bw_in, fl_in, bw_params, fl_params, bw_out, fl_out, acc_fl, product_shift, ...
    arrays: dict = field(default_factory=dict)  # name -> integer (or float32 bias) array
    geometry: dict = field(default_factory=dict)


def container(bw: int):
    return np.int8 if bw <= 8 else (np.int16 if bw <= 16 else np.int32)


def _geometry(layer) -> dict:
    if hasattr(layer, "geom"):
        g = layer.geom
        return {"kernel": list(g.kernel), "stride": list(g.stride), "pad": list(g.pad),
                "dilation": list(g.dilation), "group": layer.group, "num_output": layer.num_output,
                "transposed": bool(layer.transposed)}
    return {"num_output": layer.num_output, "axis": layer.axis, "transpose": bool(layer.transpose)}


def integer_layers(net, notes: list | None = None) -> list[IntegerLayer]:
    """The integer view of every Ristretto layer of ``net`` (a TEST-phase Net)."""
    out = []
    for layer in net.layers:
        if layer.type not in RISTRETTO_TYPES:
            continue
        cfg = layer.quant_config
        where = f"layer '{layer.name}' ({layer.type})"
        if layer.type == "LRNRistretto" or cfg.precision == Precision.MINIFLOAT:
            if notes is not None:
                notes.append(f"{where}: minifloat is not integer arithmetic; not exported")
            continue
        from ..formats.rounding import Rounding

        if cfg.rounding_scheme == Rounding.STOCHASTIC:
            raise RistrettoError(f"{where}: STOCHASTIC rounding has no fixed integer weights")
        trimmed = [np.asarray(layer.backend.to_numpy(a)) for a in layer.quantized_blobs(cfg, cfg.rounding_scheme)]
        f = {"bw_in": cfg.bw_layer_in, "fl_in": cfg.fl_layer_in, "bw_out": cfg.bw_layer_out,
             "fl_out": cfg.fl_layer_out}
        arrays = {}
        if cfg.precision == Precision.DYNAMIC_FIXED_POINT:
            fl_p = cfg.fl_params
            acc_fl = max(cfg.fl_layer_in + fl_p, fl_p)
            f.update(bw_params=cfg.bw_params, fl_params=fl_p, acc_fl=acc_fl,
                     product_shift=acc_fl - cfg.fl_layer_in - fl_p, bias_shift=acc_fl - fl_p,
                     out_shift=acc_fl - cfg.fl_layer_out)
            arrays["weights"] = integer_codes(trimmed[0], fl_p).astype(container(cfg.bw_params))
            if len(trimmed) > 1:
                arrays["bias"] = integer_codes(trimmed[1], fl_p).astype(container(cfg.bw_params))
        else:  # power-of-two weights
            w = trimmed[0].astype(np.float64)
            exps = np.rint(np.log2(np.abs(w))).astype(np.int64)
            if not np.array_equal(np.ldexp(np.sign(w), exps), w):
                raise RistrettoError(f"{where}: trimmed weights are not powers of two")
            f.update(exp_min=cfg.exp_min, exp_max=cfg.exp_max)
            arrays["weights_sign"] = np.where(w < 0, -1, 1).astype(np.int8)
            arrays["weights_exp"] = exps.astype(np.int8)
            if len(trimmed) > 1:
                arrays["bias_float32"] = trimmed[1].astype(np.float32)
        out.append(IntegerLayer(layer.name, layer.type, cfg.precision.name, cfg.rounding_scheme.name, f, arrays,
                                _geometry(layer)))
    return out


def npz_bytes(layers: list[IntegerLayer]) -> bytes:
    """One .npz: ``<layer>/<array>`` integer arrays and ``<layer>/formats`` (int64, in the
    order of ``<layer>/format_names``); no pickles."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        def put(name, array):
            with zf.open(f"{name}.npy", "w") as fh:
                np.lib.format.write_array(fh, np.asarray(array), allow_pickle=False)
        for l in layers:
            for k, a in l.arrays.items():
                put(f"{l.name}/{k}", a)
            put(f"{l.name}/formats", np.array(list(l.formats.values()), dtype=np.int64))
            put(f"{l.name}/format_names", np.array(list(l.formats), dtype="U16"))
    return buf.getvalue()


def c_identifier(name: str) -> str:
    ident = re.sub(r"\W", "_", name)
    return ident if re.match(r"[A-Za-z_]", ident) else f"l_{ident}"


C_TYPES = {np.dtype(np.int8): "int8_t", np.dtype(np.int16): "int16_t", np.dtype(np.int32): "int32_t",
           np.dtype(np.float32): "float"}


def c_header(layers: list[IntegerLayer], net_name: str) -> str:
    guard = c_identifier(f"RISTRETTO_{net_name or 'net'}_H").upper()
    lines = [f"/* Integer weights of {net_name or 'the net'}, written by ristretto export integers.",
             " * See README.txt for the arithmetic. Arrays are row-major in Caffe's blob layout. */",
             f"#ifndef {guard}", f"#define {guard}", "#include <stdint.h>", ""]
    for l in layers:
        ident = c_identifier(l.name)
        lines.append(f"/* {l.name}: {l.type}, {l.precision}, rounding {l.rounding}, "
                     + ", ".join(f"{k} {v}" for k, v in l.geometry.items()) + " */")
        for k, v in l.formats.items():
            lines.append(f"#define {ident.upper()}_{k.upper()} ({int(v)})")
        for k, a in l.arrays.items():
            shape = "x".join(map(str, a.shape))
            ctype = C_TYPES[a.dtype]
            values = ", ".join(repr(float(v)) + "f" if ctype == "float" else str(int(v)) for v in a.reshape(-1))
            lines.append(f"/* {shape} */")
            lines.append(f"static const {ctype} {ident}_{k}[{a.size}] = {{{values}}};")
        lines.append("")
    lines.append(f"#endif /* {guard} */")
    return "\n".join(lines) + "\n"


README = """Integer export of {net} ({source})
========================================

Files: weights.npz (per layer: <layer>/weights, <layer>/bias integer codes; <layer>/formats
with <layer>/format_names), weights.h (the same as C arrays and #defines), layers.json.

Every value v of a dynamic fixed point format (bw, fl) is the integer code k = v * 2^fl,
|k| < 2^(bw-1) (two's complement, bw bits). To reproduce `ristretto forward` bit for bit,
a Ristretto layer (ConvolutionRistretto, FcRistretto, DeconvolutionRistretto) computes:

1. Input: x_code = sat(bw_in, R(x * 2^fl_in)); from the integer output code c of a previous
   layer with fl_prev: x_code = sat(bw_in, R(c * 2^(fl_in - fl_prev))), a shift. Max pooling and
   ReLU between layers act on the codes unchanged. The trimmed input replaces the blob: every
   later reader of it sees x_code * 2^-fl_in.
2. Accumulate in a wide integer (int64 is always enough here):
       acc = sum(x_code * w_code) << PRODUCT_SHIFT  +  bias_code << BIAS_SHIFT
   over the layer's window (Caffe's convolution / inner product geometry, as in layers.json).
   acc has ACC_FL fractional bits.
3. Output: y_code = sat(bw_out, R(acc / 2^OUT_SHIFT)) (a left shift when OUT_SHIFT < 0),
   with R the layer's rounding: NEAREST = round half to even (a remainder of exactly half
   an LSB goes to the even neighbour), then saturation:
       sat(bw, k) = min(max(k, -2^(bw-1)), 2^(bw-1) - 1).
   The output value is y_code * 2^-fl_out.

The clamp of step 1 before rounding and this round-then-saturate order give the same codes
(the bounds are on the grid). Our float32 simulation accumulates in float32; it equals the
integer result whenever the partial sums stay below 2^24 LSBs of the accumulator, which the
integer test of this export checks on LeNet.

Power-of-two layers: weights are sign * 2^exp (<layer>/weights_sign, <layer>/weights_exp): a
product is a shift of x_code; the bias is float32 (not trimmed, as in Ristretto).
{notes}"""


def export_integers(net, source: str = "") -> tuple[dict, list[str]]:
    """{file name: bytes} of the integer export of ``net``, and notes for the user."""
    notes: list[str] = []
    layers = integer_layers(net, notes)
    if not layers:
        raise RistrettoError(f"{source or net.name}: no dynamic fixed point or power-of-two Ristretto layer to "
                             "export as integers")
    meta = [{"name": l.name, "type": l.type, "precision": l.precision, "rounding": l.rounding,
             "formats": l.formats, "geometry": l.geometry,
             "arrays": {k: {"dtype": str(a.dtype), "shape": list(a.shape)} for k, a in l.arrays.items()}}
            for l in layers]
    files = {
        "weights.npz": npz_bytes(layers),
        "weights.h": c_header(layers, net.name).encode(),
        "layers.json": (json.dumps({"net": net.name, "source": source, "layers": meta}, indent=1) + "\n").encode(),
        "README.txt": README.format(net=net.name or "the net", source=source,
                                    notes="".join(f"\nNote: {n}" for n in notes)).encode(),
    }
    return files, notes
