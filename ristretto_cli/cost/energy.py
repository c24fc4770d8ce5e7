"""Energy per operation: a table of published figures, interpolated per bit width.

The defaults are the 45 nm, 0.9 V figures of M. Horowitz, "Computing's energy problem
(and what we can do about it)", ISSCC 2014 (picojoules per operation):

=========================  ==========
operation                  pJ
=========================  ==========
8-bit integer add          0.03
32-bit integer add         0.1
8-bit integer multiply     0.2
32-bit integer multiply    3.1
16-bit float add           0.4
32-bit float add           0.9
16-bit float multiply      1.1
32-bit float multiply      3.7
SRAM read, 8 KB, 64 bit    10
DRAM read, 64 bit          1300-2600 (we take the midpoint, 1950)
=========================  ==========

Interpolation rule: an operation's energy is piecewise linear in its *size* through
(0, 0) and the table's points of the same kind (integer / float) and operation; past
the largest point the last segment goes on. The size of a multiplier of an a-bit by a
b-bit operand is a*b (array multipliers grow with the product of the widths; the
table's n-bit entries are n x n); the size of an adder is its width, the larger of
its operands'. So a 4 x 4-bit integer multiply costs 0.2 * 16/64 = 0.05 pJ and a
24-bit integer add 0.03 + (24 - 8)/(32 - 8) * 0.07 = 0.077 pJ. Memory energy is per
bit: a 64-bit access's energy / 64.

A user's table (YAML, a flat mapping) overrides or adds entries: ``int_add_N``,
``int_mult_N``, ``float_add_N``, ``float_mult_N`` (N = bits, the energy of one N-bit /
N x N-bit operation in pJ), ``sram_read_64``, ``dram_read_64`` and ``source`` (a
label naming where the figures come from).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from ..errors import RistrettoError

HOROWITZ_2014 = ("M. Horowitz, \"Computing's energy problem (and what we can do about it)\", "
                 "ISSCC 2014, 45 nm, 0.9 V")

#: (kind, op) -> {bits: pJ}; kind "int" or "float", op "add" or "mult"
DEFAULT_OPS: dict[tuple[str, str], dict[int, float]] = {
    ("int", "add"): {8: 0.03, 32: 0.1},
    ("int", "mult"): {8: 0.2, 32: 3.1},
    ("float", "add"): {16: 0.4, 32: 0.9},
    ("float", "mult"): {16: 1.1, 32: 3.7},
}
DEFAULT_SRAM_READ_64 = 10.0
DEFAULT_DRAM_READ_64 = 1950.0   # Horowitz: 1300-2600 pJ; the midpoint

KINDS, OPS = ("int", "float"), ("add", "mult")
_OP_KEY = re.compile(r"^(int|float)_(add|mult)_([0-9]+)$")
MEMORY_KEYS = ("sram_read_64", "dram_read_64")
KNOWN_KEYS = "int_add_N, int_mult_N, float_add_N, float_mult_N (N = bits, 1..64), sram_read_64, dram_read_64, source"


@dataclass
class EnergyTable:
    """Energy figures in pJ; :meth:`op` interpolates them (see the module docstring)."""

    ops: dict = field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_OPS.items()})
    sram_read_64: float = DEFAULT_SRAM_READ_64
    dram_read_64: float = DEFAULT_DRAM_READ_64
    source: str = HOROWITZ_2014
    overrides: list = field(default_factory=list)   # the keys a user's table set

    def op(self, kind: str, op: str, a: int, b: int | None = None) -> float:
        """Energy (pJ) of one ``kind`` ("int"/"float") ``op`` ("add"/"mult"): a multiply
        of an a-bit by a b-bit operand, or an add of width max(a, b)."""
        if op == "mult":
            size = a * (a if b is None else b)
            points = [(n * n, e) for n, e in sorted(self.ops[kind, op].items())]
        else:
            size = max(a, a if b is None else b)
            points = sorted(self.ops[kind, op].items())
        return interpolate(points, size)

    def sram_bit(self) -> float:
        return self.sram_read_64 / 64.0

    def dram_bit(self) -> float:
        return self.dram_read_64 / 64.0

    def to_json(self) -> dict:
        out = {"source": self.source, "unit": "pJ"}
        for (kind, op), pts in sorted(self.ops.items()):
            for bits, e in sorted(pts.items()):
                out[f"{kind}_{op}_{bits}"] = e
        out["sram_read_64"] = self.sram_read_64
        out["dram_read_64"] = self.dram_read_64
        return out


def energy_text(pj: float | None) -> str:
    """Picojoules with a unit that keeps 4 significant digits readable ("62.36 µJ")."""
    if pj is None:
        return ""
    for unit, scale in (("J", 1e12), ("mJ", 1e9), ("µJ", 1e6), ("nJ", 1e3)):
        if abs(pj) >= scale:
            return f"{pj / scale:.4g} {unit}"
    return f"{pj:.4g} pJ"


def interpolate(points: list[tuple[float, float]], x: float) -> float:
    """Piecewise linear through (0, 0) and ``points`` (sorted by x), the last segment
    extended past the largest x."""
    pts = [(0.0, 0.0)] + [(float(px), float(py)) for px, py in points if px > 0]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    (x0, y0), (x1, y1) = pts[-2], pts[-1]
    return y1 + (y1 - y0) * (x - x1) / (x1 - x0)


def parse_energy_table(data, where: str = "<energy table>", lines: dict | None = None) -> EnergyTable:
    """An :class:`EnergyTable`: the defaults with ``data``'s entries (a dict from YAML)
    on top; one-line errors naming ``where`` (and the key's line when ``lines`` has it)."""
    table = EnergyTable()
    if data is None:
        return table
    if not isinstance(data, dict):
        raise RistrettoError(f"{where}: expected a mapping of energy entries (like 'int_mult_8: 0.2'), "
                             f"got {type(data).__name__}")
    lines = lines or {}
    for key, value in data.items():
        at = f"{where}:{lines[key]}" if key in lines else where
        if not isinstance(key, str):
            raise RistrettoError(f"{at}: key {key!r} is not a name; known keys: {KNOWN_KEYS}")
        if key == "source":
            if not isinstance(value, str) or not value.strip():
                raise RistrettoError(f"{at}: 'source' must be a text naming where the figures come from")
            table.source = value.strip()
            continue
        m = _OP_KEY.match(key)
        if not m and key not in MEMORY_KEYS:
            raise RistrettoError(f"{at}: unknown key '{key}'; known keys: {KNOWN_KEYS}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise RistrettoError(f"{at}: '{key}' must be a finite number of picojoules >= 0, got {value!r}")
        if m:
            bits = int(m.group(3))
            if not 1 <= bits <= 64:
                raise RistrettoError(f"{at}: '{key}': the width must be 1..64 bits, got {bits}")
            table.ops[m.group(1), m.group(2)][bits] = float(value)
        else:
            setattr(table, key, float(value))
        table.overrides.append(key)
    if table.overrides and table.source == HOROWITZ_2014:
        table.source = f"{HOROWITZ_2014}, with {where}"
    return table


def load_energy_table(path: str | None) -> EnergyTable:
    """The default table, with the entries of the YAML file ``path`` (None: defaults only)."""
    if path is None:
        return EnergyTable()
    import yaml

    from ..caffe.atomic import read_bytes

    raw = read_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RistrettoError(f"{path}: not UTF-8 text; an energy table is a YAML file") from None
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RistrettoError(f"{where}: not valid YAML: {problem}") from None
    lines = {}
    if isinstance(node, yaml.MappingNode):
        for k, _v in node.value:
            if isinstance(k, yaml.ScalarNode):
                lines.setdefault(k.value, k.start_mark.line + 1)
    return parse_energy_table(data, path, lines)
