"""QuantConfig: one layer's ``quantization_param`` as a validated, hashable value.

It mirrors ``caffe.QuantizationParameter`` field for field (same names, same
defaults), and knows which format each of a layer's four trim sites uses:

============================  ==================  =================  ================
precision                     inputs              weights            bias
============================  ==================  =================  ================
DYNAMIC_FIXED_POINT           bw/fl_layer_in      bw/fl_params       bw/fl_params
MINIFLOAT                     mant/exp_bits       mant/exp_bits      mant/exp_bits
INTEGER_POWER_OF_2_WEIGHTS    bw/fl_layer_in      exp_min..exp_max   untouched
============================  ==================  =================  ================

Outputs use bw/fl_layer_out (minifloat: mant/exp_bits).

Our additions (written only when set, so a config without them stays readable by
the original): ``is_unsigned_layer_in`` / ``is_unsigned_layer_out`` make that
activation site unsigned dynamic fixed point, [0, (2^bw - 1) 2^-fl];
``bw_bias`` / ``fl_bias`` (both or neither) give the bias its own dynamic fixed
point format in every precision (unset: the table above). ``accum_bits`` (unset:
None) makes a ConvolutionRistretto / FcRistretto sum its products in an integer
accumulator of that width which saturates or wraps (``accum_overflow``, default
SATURATE) at every partial sum (:mod:`.accumulator`); dynamic fixed point and
power-of-two weights only.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import IntEnum

from . import trim
from .accumulator import AccumulatorOverflow, accumulator_fl, as_overflow, check_accumulator_bits
from .rounding import FormatError, Rounding, as_rounding


#: the two activation trim sites of a layer (``QuantConfig.trim_activation``)
INPUT, OUTPUT = "in", "out"


class Precision(IntEnum):
    """Values of the proto enum ``caffe.QuantizationParameter.Precision``."""

    DYNAMIC_FIXED_POINT = 0
    MINIFLOAT = 1
    INTEGER_POWER_OF_2_WEIGHTS = 2


def as_precision(value) -> Precision:
    if isinstance(value, str):
        try:
            return Precision[value.upper()]
        except KeyError:
            raise FormatError(f"unknown precision '{value}'; known: "
                              f"{', '.join(p.name for p in Precision)}") from None
    try:
        return Precision(int(value))
    except (ValueError, TypeError):
        raise FormatError(f"unknown precision {value!r}") from None


#: our fields (not in the original's schema): written only when set
_EXTENSIONS = ("saturate_after_rounding", "is_unsigned_layer_in", "is_unsigned_layer_out", "bw_bias", "fl_bias",
               "accum_bits", "accum_overflow")
#: fields without a proto default: None while unset
_UNSET_IS_NONE = ("bw_bias", "fl_bias", "accum_bits")


@dataclass(frozen=True)
class QuantConfig:
    precision: Precision = Precision.DYNAMIC_FIXED_POINT
    rounding_scheme: Rounding = Rounding.NEAREST
    bw_layer_in: int = 32
    bw_layer_out: int = 32
    bw_params: int = 32
    fl_layer_in: int = 16
    fl_layer_out: int = 16
    fl_params: int = 16
    mant_bits: int = 23
    exp_bits: int = 8
    exp_min: int = -8
    exp_max: int = -1
    saturate_after_rounding: bool = False
    is_unsigned_layer_in: bool = False
    is_unsigned_layer_out: bool = False
    bw_bias: int | None = None
    fl_bias: int | None = None
    accum_bits: int | None = None
    accum_overflow: AccumulatorOverflow = AccumulatorOverflow.SATURATE

    def __post_init__(self):
        object.__setattr__(self, "precision", as_precision(self.precision))
        object.__setattr__(self, "rounding_scheme", as_rounding(self.rounding_scheme))
        object.__setattr__(self, "accum_overflow", as_overflow(self.accum_overflow))

    # -- proto ------------------------------------------------------------
    @classmethod
    def from_proto(cls, qp) -> "QuantConfig":
        """From a ``caffe_pb2.QuantizationParameter`` (unset fields take the proto defaults)."""
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in _UNSET_IS_NONE and not qp.HasField(f.name):
                continue
            kwargs[f.name] = getattr(qp, f.name)
        return cls(**kwargs)

    def to_proto(self, qp=None):
        """Fill (or create) a ``QuantizationParameter``.

        Every field of the original's schema is written explicitly; our extensions
        (``saturate_after_rounding``, ``is_unsigned_layer_*``, ``bw/fl_bias``) only when
        they are set, so that a config without them stays readable by Caffe-Ristretto.
        """
        if qp is None:
            from ..proto import caffe_pb2

            qp = caffe_pb2.QuantizationParameter()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _EXTENSIONS and (value is None or value is False or (
                    f.name == "accum_overflow" and value == AccumulatorOverflow.SATURATE)):
                qp.ClearField(f.name)
                continue
            setattr(qp, f.name, int(value) if isinstance(value, IntEnum) else value)
        return qp

    def replace(self, **changes) -> "QuantConfig":
        return dataclasses.replace(self, **changes)

    # -- checks -----------------------------------------------------------
    def validate(self) -> "QuantConfig":
        """Raise FormatError for impossible settings of the chosen precision; return self."""
        p = self.precision
        if self.accum_bits is not None:
            check_accumulator_bits(self.accum_bits)
            if p == Precision.MINIFLOAT:
                raise FormatError("accum_bits simulates an integer accumulator: dynamic fixed point or power-of-two "
                                  "weights only, not MINIFLOAT")
        if (self.bw_bias is None) != (self.fl_bias is None):
            raise FormatError("bw_bias and fl_bias go together: set both or neither")
        if self.bw_bias is not None:
            try:
                trim.check_fixed_point(self.bw_bias, self.fl_bias)
            except FormatError as exc:
                raise FormatError(f"bw_bias/fl_bias: {exc}") from None
        if p == Precision.DYNAMIC_FIXED_POINT:
            for site in ("layer_in", "layer_out", "params"):
                try:
                    trim.check_fixed_point(getattr(self, f"bw_{site}"), getattr(self, f"fl_{site}"))
                except FormatError as exc:
                    raise FormatError(f"bw_{site}/fl_{site}: {exc}") from None
        elif p == Precision.MINIFLOAT:
            trim.check_minifloat(self.mant_bits, self.exp_bits)
        elif p == Precision.INTEGER_POWER_OF_2_WEIGHTS:
            trim.check_pow2(self.exp_min, self.exp_max)
            for site in ("layer_in", "layer_out"):
                try:
                    trim.check_fixed_point(getattr(self, f"bw_{site}"), getattr(self, f"fl_{site}"))
                except FormatError as exc:
                    raise FormatError(f"bw_{site}/fl_{site}: {exc}") from None
        return self

    # -- the four trim sites ----------------------------------------------
    def trim_activation(self, x, site: str = INPUT, rounding=None, rng=None, out=None):
        """A layer input (``site`` INPUT) or output (OUTPUT) in this layer's activation
        format, written into ``out`` when given (``out`` may be ``x``: an in-place trim),
        else a new array; returns the result."""
        r = self.rounding_scheme if rounding is None else rounding
        if self.precision == Precision.MINIFLOAT:
            return trim.trim_minifloat(x, self.mant_bits, self.exp_bits, r, rng, self.saturate_after_rounding,
                                       out=out)
        if site == INPUT:
            bw, fl, unsigned = self.bw_layer_in, self.fl_layer_in, self.is_unsigned_layer_in
        elif site == OUTPUT:
            bw, fl, unsigned = self.bw_layer_out, self.fl_layer_out, self.is_unsigned_layer_out
        else:
            raise ValueError(f"activation site must be {INPUT!r} or {OUTPUT!r}, got {site!r}")
        if unsigned:
            return trim.trim_fixed_point_unsigned(x, bw, fl, r, rng, out=out)
        return trim.trim_fixed_point(x, bw, fl, r, rng, out=out)

    def trim_weights(self, w, rounding=None, rng=None):
        """Weights in the parameter format (new array)."""
        r = self.rounding_scheme if rounding is None else rounding
        if self.precision == Precision.MINIFLOAT:
            return trim.trim_minifloat(w, self.mant_bits, self.exp_bits, r, rng,
                                          self.saturate_after_rounding)
        if self.precision == Precision.INTEGER_POWER_OF_2_WEIGHTS:
            return trim.trim_pow2(w, self.exp_min, self.exp_max, r, rng)
        return trim.trim_fixed_point(w, self.bw_params, self.fl_params, r, rng)

    def trim_bias(self, b, rounding=None, rng=None):
        """Bias in its own format when ``bw_bias`` is set, else in the weights' format;
        power-of-two layers leave it as it is then (same array)."""
        if self.bw_bias is not None:
            r = self.rounding_scheme if rounding is None else rounding
            return trim.trim_fixed_point(b, self.bw_bias, self.fl_bias, r, rng)
        if self.precision == Precision.INTEGER_POWER_OF_2_WEIGHTS:
            return b
        return self.trim_weights(b, rounding, rng)

    # -- the integer accumulator (accum_bits) ---------------------------------
    @property
    def weight_fl(self) -> int:
        """Fractional bits of a weight code: fl_params; power-of-two weights: -exp_min
        (the smallest weight 2^exp_min is one unit)."""
        if self.precision == Precision.INTEGER_POWER_OF_2_WEIGHTS:
            return -int(self.exp_min)
        return int(self.fl_params)

    @property
    def bias_fl(self) -> int | None:
        """Fractional bits of a bias code: fl_bias, else fl_params; None for the
        float32 bias a power-of-two layer keeps."""
        if self.fl_bias is not None:
            return int(self.fl_bias)
        if self.precision == Precision.INTEGER_POWER_OF_2_WEIGHTS:
            return None
        return int(self.fl_params)

    @property
    def accumulator_fl(self) -> int:
        """F: the accumulator holds integers in units of 2^-F,
        F = max(fl_layer_in + weight_fl, bias_fl) (:mod:`.accumulator`)."""
        return accumulator_fl(self.fl_layer_in, self.weight_fl, self.bias_fl)

    def describe(self) -> str:
        """Short human-readable summary, e.g. for tables and error messages."""
        p = self.precision
        r = self.rounding_scheme.name
        if p == Precision.MINIFLOAT:
            return f"minifloat m{self.mant_bits} e{self.exp_bits} {r}"
        acc = "" if self.accum_bits is None else f" acc {self.accum_bits} {self.accum_overflow.name}"
        if p == Precision.INTEGER_POWER_OF_2_WEIGHTS:
            return (f"pow2 weights 2^[{self.exp_min},{self.exp_max}] in {self.bw_layer_in}/{self.fl_layer_in} "
                    f"out {self.bw_layer_out}/{self.fl_layer_out} {r}{acc}")
        return (f"dfp in {self.bw_layer_in}/{self.fl_layer_in} params {self.bw_params}/{self.fl_params} "
                f"out {self.bw_layer_out}/{self.fl_layer_out} {r}{acc}")
