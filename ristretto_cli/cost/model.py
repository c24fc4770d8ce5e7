"""What a net costs on hardware that computes in its formats: per layer and in total,
multiply-accumulates, bit operations, the accumulator width, weight memory, activation
memory and an energy estimate (one forward pass of the net's batch).

A layer's format is its ``quantization_param`` (a layer with ``quant_config``: the
Ristretto layers); every other layer computes and stores in float32. The rules:

* **MACs**: :meth:`Layer.macs` (what ``ristretto info`` shows).
* **Bit operations per MAC**: fixed point ``bw_layer_in x bw_params``; minifloat the
  mantissa multiplier plus the exponent adder, ``(mant_bits + 1)^2 + exp_bits`` (the
  inputs and weights share the format); power-of-two weights ``bw_layer_in`` (a shift
  and an add, no multiplier); float ``32 x 32``.
* **Accumulator**: the adder that sums a layer's products as the simulation does: a
  layer's ``accum_bits`` when set (``quantize --accumulator``), else, fixed
  point: exact, ``bw_in + bw_params + ceil(log2 fan_in)`` bits (fan-in = MACs per output
  value); power-of-two weights: ``bw_in + (exp_max - exp_min) + ceil(log2 fan_in)``;
  minifloat and float: a 32-bit float adder (Ristretto sums minifloat products in
  float32 and rounds the output once).
* **Weight memory**: every parameter blob in its format: weights and bias in
  ``bw_params`` (fixed point), ``1 + exp + mant`` bits (minifloat); power-of-two
  weights in sign + exponent-code bits, their bias untouched (32); float 32. An array
  shared between layers counts once.
* **Activation memory**: the largest live set in forward order. A blob lives from the
  layer that writes it to its last reader (a net output to the end); an in-place layer
  rewrites its blob; Split, Flatten and Reshape tops share their bottom's storage (as
  in Caffe). A blob's bits per value are the output format of the layer that writes it
  (``bw_layer_out``, minifloat width), 32 when that layer is a float layer.
* **Energy** (:mod:`.energy`): per MAC one multiply (bw_in x bw_params integer;
  minifloat and float: a float multiply of the format's width; none for power-of-two
  weights) and one add at the accumulator width; every weight bit read once from DRAM;
  every bottom read and top written once in SRAM (a write costs a read), except the
  shared-storage tops above. Bias adds are not counted.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ..formats.config import Precision, QuantConfig
from .energy import EnergyTable

FLOAT_BITS = 32
#: layer types whose tops share their bottom's storage (Caffe's ShareData)
ALIAS_TYPES = ("Split", "Flatten", "Reshape")


def pow2_weight_bits(exp_min: int, exp_max: int) -> int:
    """Sign + enough bits for the exponents exp_min..exp_max (4 for -8..-1)."""
    n = exp_max - exp_min + 1
    return 1 + max(1, (n - 1).bit_length())


@dataclass(frozen=True)
class LayerFormat:
    """The formats one layer computes and stores in, in bits."""

    kind: str                 # "float", "dynamic_fixed_point", "minifloat", "integer_power_of_2_weights"
    in_bits: int = FLOAT_BITS
    out_bits: int = FLOAT_BITS
    weight_bits: int = FLOAT_BITS
    bias_bits: int = FLOAT_BITS
    config: dict | None = None   # the quantization_param fields that matter, for reports

    @property
    def label(self) -> str:
        c = self.config or {}
        if self.kind == "dynamic_fixed_point":
            return f"fixed in {self.in_bits} w {self.weight_bits} out {self.out_bits}"
        if self.kind == "minifloat":
            return f"minifloat {self.in_bits} (e{c['exp_bits']} m{c['mant_bits']})"
        if self.kind == "integer_power_of_2_weights":
            return f"2^[{c['exp_min']},{c['exp_max']}] w, fixed in {self.in_bits} out {self.out_bits}"
        return "float32"


FLOAT = LayerFormat("float")


def layer_format(cfg: QuantConfig | None) -> LayerFormat:
    """The :class:`LayerFormat` of a ``quantization_param`` (None: float32)."""
    if cfg is None:
        return FLOAT
    if cfg.precision == Precision.MINIFLOAT:
        b = 1 + cfg.mant_bits + cfg.exp_bits
        return LayerFormat("minifloat", b, b, b, b, {"precision": "minifloat", "mant_bits": cfg.mant_bits,
                                                     "exp_bits": cfg.exp_bits})
    acts = {"bw_layer_in": cfg.bw_layer_in, "fl_layer_in": cfg.fl_layer_in,
            "bw_layer_out": cfg.bw_layer_out, "fl_layer_out": cfg.fl_layer_out}
    if cfg.accum_bits is not None:
        acts["accum_bits"] = cfg.accum_bits
    if cfg.precision == Precision.INTEGER_POWER_OF_2_WEIGHTS:
        return LayerFormat("integer_power_of_2_weights", cfg.bw_layer_in, cfg.bw_layer_out,
                           pow2_weight_bits(cfg.exp_min, cfg.exp_max), FLOAT_BITS,
                           {"precision": "integer_power_of_2_weights", "exp_min": cfg.exp_min,
                            "exp_max": cfg.exp_max, **acts})
    return LayerFormat("dynamic_fixed_point", cfg.bw_layer_in, cfg.bw_layer_out, cfg.bw_params, cfg.bw_params,
                       {"precision": "dynamic_fixed_point", **acts, "bw_params": cfg.bw_params,
                        "fl_params": cfg.fl_params})


def bitops_per_mac(fmt: LayerFormat) -> int:
    """Bit operations of one multiply-accumulate (module docstring)."""
    if fmt.kind == "dynamic_fixed_point":
        return fmt.in_bits * fmt.weight_bits
    if fmt.kind == "minifloat":
        return (fmt.config["mant_bits"] + 1) ** 2 + fmt.config["exp_bits"]
    if fmt.kind == "integer_power_of_2_weights":
        return fmt.in_bits
    return FLOAT_BITS * FLOAT_BITS


def accumulator_bits(fmt: LayerFormat, fan_in: int) -> int:
    """Width of the adder that sums ``fan_in`` products exactly (fixed point) or in
    float32 (minifloat, float); a layer's ``accum_bits`` when it sets one."""
    if fmt.config and fmt.config.get("accum_bits") is not None:
        return int(fmt.config["accum_bits"])
    grow = math.ceil(math.log2(fan_in)) if fan_in > 1 else 0
    if fmt.kind == "dynamic_fixed_point":
        return fmt.in_bits + fmt.weight_bits + grow
    if fmt.kind == "integer_power_of_2_weights":
        return fmt.in_bits + (fmt.config["exp_max"] - fmt.config["exp_min"]) + grow
    return FLOAT_BITS


def mac_energy(fmt: LayerFormat, acc_bits: int, table: EnergyTable) -> tuple[float, float]:
    """(multiply, add) energy in pJ of one MAC in ``fmt``."""
    if fmt.kind == "dynamic_fixed_point":
        return table.op("int", "mult", fmt.in_bits, fmt.weight_bits), table.op("int", "add", acc_bits)
    if fmt.kind == "integer_power_of_2_weights":
        return 0.0, table.op("int", "add", acc_bits)
    width = fmt.in_bits if fmt.kind == "minifloat" else FLOAT_BITS
    return table.op("float", "mult", width, width), table.op("float", "add", acc_bits)


@dataclass
class LayerCost:
    name: str
    type: str
    format: str
    macs: int = 0
    bitops: int = 0
    accumulator_bits: int | None = None
    weight_bits: int = 0
    activation_bits: int = 0          # bits of the tops this layer stores (new storage)
    compute_pj: float = 0.0
    weight_pj: float = 0.0
    activation_pj: float = 0.0
    config: dict | None = None

    @property
    def energy_pj(self) -> float:
        return self.compute_pj + self.weight_pj + self.activation_pj

    def to_json(self) -> dict:
        return {**asdict(self), "energy_pj": self.energy_pj}


@dataclass
class NetCost:
    """Per layer and in total; :meth:`to_json` for reports."""

    name: str
    batch: int | None
    layers: list[LayerCost]
    peak_activation_bits: int
    peak_layer: str | None
    peak_blobs: list[str]
    energy: EnergyTable = field(repr=False, default_factory=EnergyTable)

    @property
    def macs(self) -> int:
        return sum(l.macs for l in self.layers)

    @property
    def bitops(self) -> int:
        return sum(l.bitops for l in self.layers)

    @property
    def weight_bits(self) -> int:
        return sum(l.weight_bits for l in self.layers)

    def energy_pj(self, part: str | None = None) -> float:
        attr = {None: "energy_pj", "compute": "compute_pj", "weights": "weight_pj",
                "activations": "activation_pj"}[part]
        return sum(getattr(l, attr) for l in self.layers)

    def summary(self) -> dict:
        """The totals, JSON-ready."""
        return {"macs": self.macs, "bitops": self.bitops, "weight_bits": self.weight_bits,
                "activation_bits": self.peak_activation_bits, "energy_pj": self.energy_pj(),
                "compute_pj": self.energy_pj("compute"), "weight_pj": self.energy_pj("weights"),
                "activation_pj": self.energy_pj("activations")}

    def to_json(self) -> dict:
        return {"net": self.name, "batch": self.batch, "layers": [l.to_json() for l in self.layers],
                "total": self.summary(),
                "peak_activation": {"bits": self.peak_activation_bits, "layer": self.peak_layer,
                                    "blobs": self.peak_blobs},
                "energy_table": self.energy.to_json()}


def formats_of(net) -> dict[str, QuantConfig]:
    """Layer name -> the ``quantization_param`` of every layer of ``net`` that has one
    (the layers with a ``quant_config``)."""
    out = {}
    for layer in net.layers:
        if hasattr(type(layer), "quant_config"):
            out[layer.name] = layer.quant_config
    return out


def formats_from_param(net_param) -> dict[str, QuantConfig]:
    """Layer name -> ``quantization_param`` of every layer of a NetParameter whose type
    has one (a rewritten candidate, applied to the float net's structure)."""
    from ..layers import LAYER_TYPES

    out = {}
    for lp in net_param.layer:
        cls = LAYER_TYPES.get(lp.type)
        if cls is not None and hasattr(cls, "quant_config"):
            out[lp.name] = QuantConfig.from_proto(lp.quantization_param).validate()
    return out


def _count(shape) -> int:
    return int(math.prod(shape)) if shape is not None else 0


def net_cost(net, formats: dict[str, QuantConfig] | None = None, energy: EnergyTable | None = None) -> NetCost:
    """The cost of one forward pass of ``net`` (a built :class:`~ristretto_cli.net.Net`;
    only its structure, shapes and parameter sizes are read). ``formats``: layer name ->
    QuantConfig to cost the net in (default: the net's own, :func:`formats_of`); layers
    not named compute in float32."""
    energy = energy or EnergyTable()
    formats = formats_of(net) if formats is None else formats
    fmts = [layer_format(formats.get(layer.name)) for layer in net.layers]
    n = len(net.layers)

    # storage: blob name -> storage id; storage id -> [bits, born, last use, first name]
    storage_of: dict[str, int] = {}
    storages: list[list] = []
    bits_per_value: dict[str, int] = {}
    costs: list[LayerCost] = []
    seen_params: set[int] = set()
    for i, layer in enumerate(net.layers):
        fmt = fmts[i]
        bottoms, tops = net.bottom_names[i], net.top_names[i]
        bshapes = [net.blob_shapes[b] for b in bottoms]
        tshapes = [net.blob_shapes[t] for t in tops]
        macs = int(layer.macs(bshapes, tshapes))
        lc = LayerCost(layer.name, layer.type, fmt.label, macs=macs, config=fmt.config)

        if macs:
            outputs = max(1, sum(_count(s) for s in tshapes[:1]))
            fan_in = math.ceil(macs / outputs)
            lc.bitops = macs * bitops_per_mac(fmt)
            lc.accumulator_bits = accumulator_bits(fmt, fan_in)
            mult, add = mac_energy(fmt, lc.accumulator_bits, energy)
            lc.compute_pj = macs * (mult + add)

        for k, blob in enumerate(layer.blobs):
            if id(blob) in seen_params:
                continue
            seen_params.add(id(blob))
            per = fmt.weight_bits if k == 0 else fmt.bias_bits if k == 1 else FLOAT_BITS
            lc.weight_bits += _count(blob.shape) * per
        lc.weight_pj = lc.weight_bits * energy.dram_bit()

        for b in bottoms:
            storages[storage_of[b]][2] = i
        alias = layer.type in ALIAS_TYPES and bottoms
        moved = 0
        for t, shape in zip(tops, tshapes):
            if t in bottoms:                       # in place: the same storage, rewritten
                moved += _count(shape) * bits_per_value[t]
            elif alias:                            # shares the bottom's storage
                storage_of[t] = storage_of[bottoms[0]]
                bits_per_value[t] = bits_per_value[bottoms[0]]
                storages[storage_of[t]][2] = i
            else:
                bits_per_value[t] = fmt.out_bits
                bits = _count(shape) * fmt.out_bits
                storage_of[t] = len(storages)
                storages.append([bits, i, i, t])
                lc.activation_bits += bits
                moved += bits
        if not alias:
            moved += sum(_count(s) * bits_per_value[b] for b, s in zip(bottoms, bshapes))
        lc.activation_pj = moved * energy.sram_bit()
        costs.append(lc)

    for name in net.outputs:
        if name in storage_of:
            storages[storage_of[name]][2] = n - 1
    peak, peak_at, peak_blobs = 0, None, []
    for i in range(n):
        live = [s for s in storages if s[1] <= i <= s[2]]
        bits = sum(s[0] for s in live)
        if bits > peak:
            peak, peak_at, peak_blobs = bits, net.layers[i].name, [s[3] for s in live]
    batch = None
    if net.inputs and net.blob_shapes.get(net.inputs[0]):
        batch = int(net.blob_shapes[net.inputs[0]][0])
    return NetCost(net.name, batch, costs, peak, peak_at, peak_blobs, energy)
