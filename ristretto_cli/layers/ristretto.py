"""The Ristretto layers: the float layers with reduced-precision trims around them.

ConvolutionRistretto, FcRistretto and DeconvolutionRistretto subclass the float
Convolution / InnerProduct / Deconvolution classes through :class:`RistrettoMixin`
(DESIGN.md section 4):

* TEST phase: trim each bottom IN PLACE (every later reader of that blob sees the
  trimmed values, as Caffe's shared memory does), trim copies of weights and bias
  with the layer's rounding, run the float layer on the copies, trim the tops.
* TRAIN phase: activations are left alone (unless ``trim_activations_in_train``);
  the weight copies are trimmed with STOCHASTIC rounding from ``backend.rng``; the
  forward pass and the bottom gradient use the trimmed copies, and the weight
  gradient lands in ``self.diffs`` for the full-precision shadow ``self.blobs``
  (straight-through estimator). ``self.blobs`` is never modified.

Every ``quantization_param`` field is applied, defaults included (bw 32 / fl 16
still rounds activations to 2^-16 and saturates them at +-32768; DESIGN.md 5).

LRNRistretto trims every intermediate of cross-channel LRN to minifloat in the
TEST phase (as the original's CUDA kernel does) and is the float LRN in TRAIN.
"""
from __future__ import annotations

import importlib

from ..errors import RistrettoError
from .base import LAYER_TYPES, TEST, Layer, register
from ..formats.config import Precision, QuantConfig
from ..formats.trim import trim_fixed_point, trim_minifloat
from ..formats.rounding import FormatError, Rounding

# Modules that register the float layers we wrap (whichever of them exist).
_FLOAT_MODULES = (
    "ristretto_cli.layers.vision",
    "ristretto_cli.layers.conv",
    "ristretto_cli.layers.inner_product",
    "ristretto_cli.layers.normalization",
)

for _mod in _FLOAT_MODULES:
    try:
        importlib.import_module(_mod)
    except ModuleNotFoundError as _exc:
        if _exc.name != _mod:
            raise


def _float_class(type_name: str) -> type:
    """The registered float layer class, or a stand-in that explains what is missing."""
    cls = LAYER_TYPES.get(type_name)
    if cls is not None:
        return cls

    class _Missing(Layer):
        def __init__(self, param, phase, backend):
            raise RistrettoError(f"layer '{param.name}' ({param.type}): needs the float layer type "
                                 f"'{type_name}', which is not available in this build")

    _Missing.__name__ = f"Missing{type_name}"
    return _Missing


class RistrettoMixin:
    """Reduced-precision trims around a float layer; put it first in the bases."""

    #: the finetune command may set this (per layer) to trim activations in TRAIN too
    trim_activations_in_train: bool = False
    #: the trimmed weight copies the last forward computed with, kept when they were
    #: drawn stochastically (TRAIN) for backward to reuse; else None (backward retrims)
    trimmed_blobs: list | None = None

    # -- configuration ------------------------------------------------------
    @property
    def quant_config(self) -> QuantConfig:
        """This layer's ``quantization_param``, validated (read anew each call, so a
        caller that edits ``self.param.quantization_param`` sees the change)."""
        try:
            return QuantConfig.from_proto(self.param.quantization_param).validate()
        except FormatError as exc:
            raise self.error(f"quantization_param: {exc}") from None

    def setup(self, bottom_shapes):
        self.quant_config  # noqa: B018  (fail early on impossible formats)
        super().setup(bottom_shapes)

    @property
    def _trims_activations(self) -> bool:
        return self.phase == TEST or self.trim_activations_in_train

    def weight_rounding(self, cfg: QuantConfig) -> Rounding:
        """TEST: the layer's scheme; TRAIN: STOCHASTIC (the original's fine-tuning rule)."""
        return cfg.rounding_scheme if self.phase == TEST else Rounding.STOCHASTIC

    def quantized_blobs(self, cfg: QuantConfig | None = None, rounding=None) -> list:
        """New arrays: weights (and bias) trimmed as this layer's forward would use them."""
        cfg = cfg or self.quant_config
        rounding = self.weight_rounding(cfg) if rounding is None else rounding
        if not self.blobs:
            return []
        rng = self.backend.rng
        out = [cfg.trim_weights(self.blobs[0], rounding, rng)]
        if len(self.blobs) > 1:
            out.append(cfg.trim_bias(self.blobs[1], rounding, rng))
        out.extend(self.blobs[2:])
        return out

    def _with_blobs(self, blobs, fn, *args):
        shadow = self.blobs
        self.blobs = blobs
        try:
            return fn(*args)
        finally:
            self.blobs = shadow

    # -- contract -----------------------------------------------------------
    def forward(self, bottoms):
        cfg = self.quant_config
        rng = self.backend.rng
        trim = self._trims_activations
        if trim:
            for b in bottoms:
                try:
                    trim_activation(cfg, b, "in", rng, out=b)
                except ValueError as exc:  # read-only input array
                    raise self.error(f"cannot trim its bottom blob in place ({exc})") from None
        qblobs = self.quantized_blobs(cfg)
        # Keep a stochastic draw for backward; a deterministic one is recomputed (saves memory).
        keep = self.phase != TEST or cfg.rounding_scheme == Rounding.STOCHASTIC
        self.trimmed_blobs = qblobs if keep else None
        tops = self._with_blobs(qblobs, super().forward, bottoms)
        if trim:
            fresh = []
            for t in tops:  # a new array from the float layer: trimmed where it is
                shared = any(t is b for b in bottoms)
                fresh.append(trim_activation(cfg, t, "out", rng, out=None if shared else t))
            tops = fresh
        return tops

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        qblobs = self.trimmed_blobs
        if qblobs is None or [tuple(q.shape) for q in qblobs] != [tuple(b.shape) for b in self.blobs]:
            qblobs = self.quantized_blobs()
        if not self.diffs and self.blobs:
            self.zero_diffs()
        return self._with_blobs(qblobs, super().backward, top_diffs, bottoms, tops, propagate_down)


def trim_activation(cfg: QuantConfig, x, site: str, rng=None, out=None):
    """``cfg.trim_input`` (site "in") or ``cfg.trim_output`` ("out") of ``x``, written into
    ``out`` when given (``out`` may be ``x``: an in-place trim); returns the result."""
    if cfg.precision == Precision.MINIFLOAT:
        return trim_minifloat(x, cfg.mant_bits, cfg.exp_bits, cfg.rounding_scheme, rng, cfg.saturate_after_rounding,
                              out=out)
    bw, fl = (cfg.bw_layer_in, cfg.fl_layer_in) if site == "in" else (cfg.bw_layer_out, cfg.fl_layer_out)
    return trim_fixed_point(x, bw, fl, cfg.rounding_scheme, rng, out=out)


def _ristretto(type_name: str, float_type: str, doc: str) -> type:
    base = _float_class(float_type)
    cls = type(f"{type_name}Layer", (RistrettoMixin, base), {"__doc__": doc, "float_type": float_type})
    return register(type_name)(cls)


ConvolutionRistretto = _ristretto(
    "ConvolutionRistretto", "Convolution", "Convolution with Ristretto's reduced-precision trims.")
FcRistretto = _ristretto(
    "FcRistretto", "InnerProduct", "InnerProduct with Ristretto's reduced-precision trims.")
DeconvolutionRistretto = _ristretto(
    "DeconvolutionRistretto", "Deconvolution", "Deconvolution with Ristretto's reduced-precision trims.")


_LRNBase = _float_class("LRN")


@register("LRNRistretto")
class LRNRistretto(_LRNBase):
    """Cross-channel LRN whose every intermediate is a minifloat (TEST phase).

    Per pixel column, in channel order (the original's sliding window): q(x), q(q(x)^2),
    the running sum q(sum + sq) / q(sum - sq), q(sum * alpha/size), scale = q(k + that),
    q(scale^-beta), top = q(q(x) * q(scale^-beta)); q is minifloat (mant_bits, exp_bits)
    with the layer's rounding scheme (the original hard-wires NEAREST, the default).
    TRAIN phase is the float LRN.
    """

    float_type = "LRN"

    @property
    def quant_config(self) -> QuantConfig:
        try:
            cfg = QuantConfig.from_proto(self.param.quantization_param).validate()
        except FormatError as exc:
            raise self.error(f"quantization_param: {exc}") from None
        if cfg.precision != Precision.MINIFLOAT:
            raise self.error(f"supports only MINIFLOAT precision, got {cfg.precision.name}")
        return cfg

    def setup(self, bottom_shapes):
        self.quant_config  # noqa: B018
        if self.phase == TEST and self.param.lrn_param.norm_region != 0:
            raise self.error("supports only norm_region ACROSS_CHANNELS in the TEST phase")
        if self.phase == TEST and len(bottom_shapes) == 1 and len(bottom_shapes[0]) != 4:
            raise self.error(f"needs a 4-D bottom (N, C, H, W), got shape {tuple(bottom_shapes[0])}")
        super().setup(bottom_shapes)

    def forward(self, bottoms):
        if self.phase != TEST:
            return super().forward(bottoms)
        return [self._forward_trimmed(bottoms[0], self.quant_config)]

    def backward(self, top_diffs, bottoms, tops, propagate_down):
        if self.phase == TEST:  # straight-through: the float LRN's gradient at this input
            tops = super().forward(bottoms)
        return super().backward(top_diffs, bottoms, tops, propagate_down)

    def _forward_trimmed(self, x, cfg: QuantConfig):
        xp = self.xp
        rng = self.backend.rng
        lp = self.param.lrn_param
        dt = x.dtype.type
        size = int(lp.local_size)
        n, c, h, w = x.shape
        post = size - (size - 1) // 2 - 1
        alpha_over_size = dt(dt(lp.alpha) / dt(size))
        k, neg_beta = dt(lp.k), dt(-lp.beta)

        def q(v, out=None):
            return trim_minifloat(v, cfg.mant_bits, cfg.exp_bits, cfg.rounding_scheme, rng,
                                  cfg.saturate_after_rounding, out=out)

        # Every intermediate is a fresh result of one operation, trimmed where it lies.
        xq = q(x)
        sq = xq * xq
        q(sq, out=sq)
        scale = xp.empty_like(xq)
        accum = xp.zeros((n, h, w), dtype=x.dtype)
        t = xp.empty_like(accum)
        for head in range(c + post):
            if head < c:
                xp.add(accum, sq[:, head], out=accum)
                q(accum, out=accum)
            if head >= size:
                xp.subtract(accum, sq[:, head - size], out=accum)
                q(accum, out=accum)
            if head >= post:
                xp.multiply(accum, alpha_over_size, out=t)
                q(t, out=t)
                dst = scale[:, head - post]
                xp.add(k, t, out=dst)
                q(dst, out=dst)
        self.scale_q = scale
        p = xp.power(scale, neg_beta)
        q(p, out=p)
        xp.multiply(xq, p, out=p)
        return q(p, out=p)
