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
  (straight-through estimator). ``self.blobs`` is never modified. One forward draws
  once; its backward reuses that draw (``trimmed_blobs``).

The float layer never sees the difference: it computes with
:meth:`Layer.compute_params`, which the mix-in answers with the trimmed copies.
``freeze_params()`` / ``unfreeze_params()`` fix one deterministic trim for many
forwards (the quantize search, whose weights do not change while it scores).

Every ``quantization_param`` field is applied, defaults included (bw 32 / fl 16
still rounds activations to 2^-16 and saturates them at +-32768; DESIGN.md 5).

LRNRistretto trims every intermediate of cross-channel LRN to minifloat in every
phase (as the original's CUDA kernel does); its backward is the float LRN gradient at
the trimmed top and scale.

Accumulator simulation (our extension, ``accum_bits`` in ``quantization_param``):
ConvolutionRistretto and FcRistretto then compute their products and sums on integer
codes in an accumulator of that width, which saturates or wraps at every partial sum
(:mod:`ristretto_cli.formats.accumulator`: units, summation order, overflow), and
convert the sum back to float32 before the output trim. Only when activations are
trimmed (TEST phase, or ``trim_activations_in_train``): the codes need inputs on the
grid. ``layer.accum_overflows`` counts the partial sums that overflowed in the last
forward (``accum_inexact``: the outputs whose sum differs from the exact one); a
``layer.accum_probe`` (:class:`AccumulatorStats`) set by a caller makes the layer
compute through the integer path (unbounded unless ``accum_bits`` is set) and record
its exact partial sums there (``quantize --accumulator``).

Whole-graph types (our extension, not in the original; ``quantize --whole-graph``
writes them): PoolingRistretto, EltwiseRistretto, ConcatRistretto,
BatchNormRistretto, ScaleRistretto, ReLURistretto and PReLURistretto trim like the
others: every bottom in place in the input format (so an Eltwise's or a Concat's
inputs meet in one format before they are added or joined), then the float layer,
then the top in the output format (an AVE pool's division and an Eltwise's
coefficients are rounded there). Scale's factors and PReLU's slopes are weights
(their bias the bias format); a BatchNorm's statistics are used as they are.
"""
from __future__ import annotations

import math

from ..formats.accumulator import AccumulatorRangeError, AccumulatorStats, accumulate_fixed_point
from ..formats.config import INPUT, OUTPUT, Precision, QuantConfig
from ..formats.rounding import FormatError, Rounding
from ..formats.trim import trim_minifloat
from .activations import PReLU, ReLU
from .base import TEST, register
from .conv import Convolution, Deconvolution
from .im2col import im2col
from .inner_product import InnerProduct
from .lrn import ACROSS_CHANNELS, LRN
from .normalization import BatchNorm, Scale
from .pooling import Pooling
from .structure import Concat, Eltwise


class RistrettoMixin:
    """Reduced-precision trims around a float layer; put it first in the bases.

    The float layer computes with :meth:`compute_params`, which this mix-in answers
    with trimmed copies of ``self.blobs``; its gradients still go to ``self.diffs``.
    """

    takes_quantization_param = True
    #: False: the learned blobs are used as they are (BatchNorm's statistics)
    trims_params: bool = True

    #: the finetune command may set this (per layer) to trim activations in TRAIN too
    trim_activations_in_train: bool = False
    #: the trimmed weight copies the last forward computed with, kept when they were
    #: drawn stochastically (TRAIN) for backward to reuse; else None (backward retrims)
    trimmed_blobs: list | None = None
    #: trimmed weights fixed by :meth:`freeze_params` (None: trim at every forward)
    frozen_blobs: list | None = None
    #: True where ``accum_bits`` can be simulated (ConvolutionRistretto, FcRistretto)
    accumulates: bool = False
    #: partial sums that overflowed the accumulator in the last forward (accum_bits)
    accum_overflows: int = 0
    #: outputs of the last forward whose accumulated sum differs from the exact one
    accum_inexact: int = 0
    #: set by a caller: compute through the integer accumulator and record exact sums here
    accum_probe: AccumulatorStats | None = None
    #: the config of the forward in progress when it runs through the integer accumulator
    _accumulating: QuantConfig | None = None

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
        cfg = self.quant_config  # fail early on impossible formats
        if cfg.accum_bits is not None and not self.accumulates:
            raise self.error("quantization_param: accum_bits is simulated in ConvolutionRistretto and FcRistretto "
                             f"only, not in {self.type}")
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
        if not self.blobs or not self.trims_params:
            return list(self.blobs)
        rng = self.backend.rng
        out = [cfg.trim_weights(self.blobs[0], rounding, rng)]
        if len(self.blobs) > 1:
            out.append(cfg.trim_bias(self.blobs[1], rounding, rng))
        out.extend(self.blobs[2:])
        return out

    # -- the arrays the float layer computes with ---------------------------------
    def compute_params(self) -> list:
        """The trimmed weights (and bias): the frozen ones, else those the last forward
        used (a stochastic draw is reused by backward), else trimmed now."""
        if self.frozen_blobs is not None:
            return self.frozen_blobs
        q = self.trimmed_blobs
        if q is None or [tuple(a.shape) for a in q] != [tuple(b.shape) for b in self.blobs]:
            q = self.quantized_blobs()
        return q

    @property
    def freezable(self) -> bool:
        """Can one trim of the weights serve every forward: TEST phase and a deterministic
        rounding (a stochastic one must draw anew each time)."""
        return (self.phase == TEST and bool(self.blobs)
                and self.quant_config.rounding_scheme != Rounding.STOCHASTIC)

    def freeze_params(self, trimmed: list | None = None) -> list:
        """Compute with fixed trimmed weights until :meth:`unfreeze_params`: ``trimmed``
        (e.g. the arrays another net's layer of the same name froze), by default the
        weights trimmed now. The quantize search uses it: the weights do not change
        while it scores a candidate, so trimming them at every batch would redo the
        same work. Returns the frozen arrays."""
        if not self.freezable:
            raise self.error("only a TEST-phase layer with weights and a deterministic rounding can freeze "
                             "its trimmed weights")
        self.frozen_blobs = list(self.quantized_blobs() if trimmed is None else trimmed)
        return self.frozen_blobs

    def unfreeze_params(self) -> None:
        """Trim the weights at every forward again (they may have changed)."""
        self.frozen_blobs = None

    # -- contract -----------------------------------------------------------
    def forward(self, bottoms):
        cfg = self.quant_config
        rng = self.backend.rng
        trim = self._trims_activations
        if trim:
            for b in bottoms:
                try:
                    cfg.trim_activation(b, INPUT, rng=rng, out=b)
                except ValueError as exc:  # read-only input array
                    raise self.error(f"cannot trim its bottom blob in place ({exc})") from None
        qblobs = self.frozen_blobs if self.frozen_blobs is not None else self.quantized_blobs(cfg)
        # Keep a stochastic draw for backward; a deterministic one is recomputed (saves memory).
        keep = self.phase != TEST or cfg.rounding_scheme == Rounding.STOCHASTIC
        self.trimmed_blobs = qblobs  # what compute_params hands the float forward
        self.accum_overflows = self.accum_inexact = 0
        if (trim and self.accumulates and cfg.precision != Precision.MINIFLOAT
                and (cfg.accum_bits is not None or self.accum_probe is not None)):
            self._accumulating = cfg  # the float layer's _forward_with goes through _accumulate
        try:
            tops = super().forward(bottoms)
        finally:
            self._accumulating = None
            if not keep:
                self.trimmed_blobs = None
        if trim:
            fresh = []
            for t in tops:  # a new array from the float layer: trimmed where it is
                shared = any(t is b for b in bottoms)
                fresh.append(cfg.trim_activation(t, OUTPUT, rng=rng, out=None if shared else t))
            tops = fresh
        return tops

    # -- the integer accumulator (accum_bits) ---------------------------------------
    def _accumulate(self, rows, weight, bias, cfg: QuantConfig):
        """float32 (M, O): the rows (M, K) of trimmed inputs times the trimmed ``weight``
        (O, K), plus ``bias`` (O,) or None, summed in the integer accumulator of ``cfg``
        (units of 2^-F, F = cfg.accumulator_fl; every product shifted to that unit)."""
        xp = self.xp
        f = cfg.accumulator_fl
        # x * 2^(F - fl_w) = x_code << (F - fl_in - fl_w): exact (x is on the 2^-fl_in grid)
        x_int = xp.rint(rows.astype(xp.float64) * 2.0 ** (f - cfg.weight_fl)).astype(xp.int64)
        w_int = xp.rint(weight.astype(xp.float64) * 2.0 ** cfg.weight_fl).astype(xp.int64)
        # exact, except a power-of-two layer's float32 bias: rounded (half to even) to the unit
        b_int = None if bias is None else xp.rint(bias.astype(xp.float64) * 2.0 ** f).astype(xp.int64)
        try:
            a = accumulate_fixed_point(x_int, w_int, b_int, cfg.accum_bits, cfg.accum_overflow,
                                       partial_stats=self.accum_probe is not None)
        except AccumulatorRangeError as exc:
            raise self.error(f"accum_bits: {exc}") from None
        self.accum_overflows += a.overflows
        self.accum_inexact += a.inexact
        if self.accum_probe is not None:
            self.accum_probe.add(a)
        return (a.acc.astype(xp.float64) * 2.0 ** -f).astype(rows.dtype)


@register("ConvolutionRistretto")
class ConvolutionRistretto(RistrettoMixin, Convolution):
    """Convolution with Ristretto's reduced-precision trims."""

    accumulates = True

    def _forward_with(self, x, weight, bias):
        cfg = self._accumulating
        if cfg is None:
            return super()._forward_with(x, weight, bias)
        # im2col: rows (n * P, K_g) per group, k over (c, kh, kw) in C order
        xp = self.xp
        xf, lead = self._flat(x)
        n, c = xf.shape[:2]
        out_spatial = self._output_spatial(xf.shape[2:])
        p = math.prod(out_spatial)
        cols = im2col(xf, self.geom, out_spatial, xp).reshape(n, c * self.geom.kernel_count, p)
        g = self.group
        kg = cols.shape[1] // g
        og = self.num_output // g
        parts = []
        for i in range(g):
            rows = cols[:, i * kg:(i + 1) * kg].transpose(0, 2, 1).reshape(n * p, kg)
            wg = weight[i * og:(i + 1) * og].reshape(og, kg)
            bg = None if bias is None else bias[i * og:(i + 1) * og]
            parts.append(self._accumulate(rows, wg, bg, cfg).reshape(n, p, og).transpose(0, 2, 1))
        y = parts[0] if g == 1 else xp.concatenate(parts, axis=1)
        return xp.ascontiguousarray(y).reshape(lead + (self.num_output,) + tuple(out_spatial))


@register("FcRistretto")
class FcRistretto(RistrettoMixin, InnerProduct):
    """InnerProduct with Ristretto's reduced-precision trims."""

    accumulates = True

    def _forward_with(self, x, weight, bias):
        cfg = self._accumulating
        if cfg is None:
            return super()._forward_with(x, weight, bias)
        x2, lead = self._flat(x)
        y = self._accumulate(x2, weight.T if self.transpose else weight, bias, cfg)
        return y.reshape(lead + (self.num_output,))


@register("DeconvolutionRistretto")
class DeconvolutionRistretto(RistrettoMixin, Deconvolution):
    """Deconvolution with Ristretto's reduced-precision trims."""


@register("PoolingRistretto")
class PoolingRistretto(RistrettoMixin, Pooling):
    """Pooling with trimmed input and output (our extension); AVE rounds its mean to the
    output format."""

    def setup(self, bottom_shapes):
        if len(self.param.top) > 1:
            raise self.error("has no mask top (the argmax mask is not a number to trim); use one top")
        super().setup(bottom_shapes)


@register("EltwiseRistretto")
class EltwiseRistretto(RistrettoMixin, Eltwise):
    """Eltwise whose inputs are aligned to the input format before SUM / PROD / MAX (our extension)."""


@register("ConcatRistretto")
class ConcatRistretto(RistrettoMixin, Concat):
    """Concat whose inputs share the input format (our extension)."""


@register("BatchNormRistretto")
class BatchNormRistretto(RistrettoMixin, BatchNorm):
    """BatchNorm with trimmed input and output; the statistics are used as stored (our extension;
    fold it into the convolution before it for hardware: ``ristretto fold``)."""

    trims_params = False


@register("ScaleRistretto")
class ScaleRistretto(RistrettoMixin, Scale):
    """Scale with trimmed input, factors (weights format), bias (bias format) and output (our extension)."""

    def quantized_blobs(self, cfg: QuantConfig | None = None, rounding=None) -> list:
        if len(self.param.bottom) > 1 and self.blobs:  # the factors come from bottom 1; blobs = [bias]
            cfg = cfg or self.quant_config
            rounding = self.weight_rounding(cfg) if rounding is None else rounding
            return [cfg.trim_bias(self.blobs[0], rounding, self.backend.rng)]
        return super().quantized_blobs(cfg, rounding)


@register("ReLURistretto")
class ReLURistretto(RistrettoMixin, ReLU):
    """ReLU with trimmed input and output (our extension)."""


@register("PReLURistretto")
class PReLURistretto(RistrettoMixin, PReLU):
    """PReLU with trimmed input, slopes (weights format) and output (our extension)."""


#: the whole-graph types (ours), by the float type they replace
WHOLE_GRAPH_TYPES = {"Pooling": "PoolingRistretto", "Eltwise": "EltwiseRistretto", "Concat": "ConcatRistretto",
                     "BatchNorm": "BatchNormRistretto", "Scale": "ScaleRistretto", "ReLU": "ReLURistretto",
                     "PReLU": "PReLURistretto"}


@register("LRNRistretto")
class LRNRistretto(LRN):
    """Cross-channel LRN whose every intermediate is a minifloat, in every phase (the
    original's forward has no phase test).

    Per pixel column, in channel order (the original's sliding window): q(x), q(q(x)^2),
    the running sum q(sum + sq) / q(sum - sq), q(sum * alpha/size), scale = q(k + that),
    q(scale^-beta), top = q(q(x) * q(scale^-beta)); q is minifloat (mant_bits, exp_bits)
    with the layer's rounding scheme (the original hard-wires NEAREST, the default).

    Backward is Caffe's float LRN gradient evaluated at the trimmed values, as the
    original's (it reuses LRNLayer's backward on its blobs): dx = dy * scale^-beta -
    (2 alpha beta / n) * x * S(dy * top / scale) with the untrimmed bottom x, the trimmed
    top and the trimmed scale (straight-through for the trims themselves).
    """

    takes_quantization_param = True

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
        if self.param.lrn_param.norm_region != ACROSS_CHANNELS:
            raise self.error("supports only norm_region ACROSS_CHANNELS (as the original)")
        if len(bottom_shapes) == 1 and len(bottom_shapes[0]) != 4:
            raise self.error(f"needs a 4-D bottom (N, C, H, W), got shape {tuple(bottom_shapes[0])}")
        super().setup(bottom_shapes)

    def forward(self, bottoms):
        return [self._forward_trimmed(bottoms[0], self.quant_config)]

    def bottom_gradient(self, x, dy, top, blk):
        return self._backward_with(x[blk], self.scale_q[blk], dy[blk], top=top[blk])

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
