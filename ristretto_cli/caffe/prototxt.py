"""Text prototxt files: nets and solvers in, any message out.

Readers always return today's format (see :mod:`.upgrade`). Parse errors become a
one-line RistrettoError ``FILE:LINE:COL: message``.
"""
from __future__ import annotations

import os
import re

from google.protobuf import text_format

from ..errors import RistrettoError
from ..proto import caffe_pb2
from .atomic import atomic_write_bytes, read_bytes
from .upgrade import upgrade_net, upgrade_solver

_POSITION = re.compile(r"^\s*(\d+):(\d+)\s*:\s*")

# QuantizationParameter.Precision names of the first Caffe-Ristretto release (2016), same
# numbers as today's; read as today's names, so what we write uses only today's.
LEGACY_PRECISION_NAMES = {
    "FIXED_POINT": "DYNAMIC_FIXED_POINT",
    "MINI_FLOATING_POINT": "MINIFLOAT",
    "POWER_2_WEIGHTS": "INTEGER_POWER_OF_2_WEIGHTS",
}
_LEGACY_PRECISION = re.compile(r"(\bprecision\s*:\s*)(" + "|".join(LEGACY_PRECISION_NAMES) + r")\b")


def rename_legacy_enum_names(text: str) -> tuple[str, list[tuple[int, int, int]]]:
    """``text`` with the 2016 precision names replaced by today's, and the edits made as
    ``(line, column after the new name, columns added)`` (1-based) to map error positions back."""
    if "precision" not in text:
        return text, []
    edits = []

    def repl(m):
        new = LEGACY_PRECISION_NAMES[m.group(2)]
        line = text.count("\n", 0, m.start(2)) + 1
        col = m.start(2) - (text.rfind("\n", 0, m.start(2)) + 1) + 1
        shift = sum(d for l, _, d in edits if l == line)
        edits.append((line, col + shift + len(new), len(new) - len(m.group(2))))
        return m.group(1) + new

    return _LEGACY_PRECISION.sub(repl, text), edits


def read_text_file(path) -> str:
    """The file's text (UTF-8); a missing or unreadable file is a one-line error naming it."""
    path = os.fspath(path)
    data = read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise RistrettoError(f"{path}:{line}:{col}: not a text file (invalid UTF-8)") from None


def parse_text(text: str, message, filename: str = "<text>"):
    """Merge prototxt ``text`` into ``message`` (cleared first) and return it.

    Unknown fields and enum names are errors, as in Caffe; the 2016 Ristretto release's
    precision names (FIXED_POINT ...) are read as today's (see LEGACY_PRECISION_NAMES).
    """
    message.Clear()
    text, edits = rename_legacy_enum_names(text)
    try:
        text_format.Parse(text, message, allow_unknown_extension=False)
    except text_format.ParseError as e:
        line, col = e.GetLine(), e.GetColumn()
        if col is not None:  # a position in the file as written
            col -= sum(d for l, end, d in edits if l == line and end <= col)
        detail = _POSITION.sub("", str(e), count=1)
        if line is not None:
            raise RistrettoError(f"{filename}:{line}:{col}: {detail}") from None
        raise RistrettoError(f"{filename}: {detail}") from None
    return message


def parse_net_text(text: str, filename: str = "<text>") -> "caffe_pb2.NetParameter":
    """A NetParameter from prototxt text, upgraded to the V2 format."""
    net = parse_text(text, caffe_pb2.NetParameter(), filename)
    return upgrade_net(net, filename)


def parse_solver_text(text: str, filename: str = "<text>") -> "caffe_pb2.SolverParameter":
    """A SolverParameter from prototxt text, upgraded (``type`` string, V2 inline nets)."""
    solver = parse_text(text, caffe_pb2.SolverParameter(), filename)
    return upgrade_solver(solver, filename)


def read_net(path) -> "caffe_pb2.NetParameter":
    """Read a net prototxt (V0, V1 or V2) and return it in the V2 format."""
    path = os.fspath(path)
    return parse_net_text(read_text_file(path), path)


def read_solver(path) -> "caffe_pb2.SolverParameter":
    """Read a solver prototxt, upgraded. Net paths inside stay as written; see :func:`resolve_path`."""
    path = os.fspath(path)
    return parse_solver_text(read_text_file(path), path)


def read_text_message(path, message):
    """Read any prototxt into ``message`` without upgrading (e.g. a NetState or a LabelMap)."""
    path = os.fspath(path)
    return parse_text(read_text_file(path), message, path)


def message_to_text(message) -> str:
    """The prototxt text of ``message`` (Caffe-style: two-space indent, fields in number order)."""
    return text_format.MessageToString(message, as_utf8=True)


def write_text(path, message) -> None:
    """Write ``message`` as prototxt, atomically (temporary file in the same folder + rename)."""
    atomic_write_bytes(path, message_to_text(message).encode("utf-8"))


def resolve_path(base_file, p: str) -> str:
    """Find a file named inside ``base_file`` (a solver's ``net:``, a ``mean_file`` ...).

    Tries ``p`` as given (absolute, or relative to the current folder), then
    relative to ``base_file``'s folder, then ``p``'s file name alone in that folder
    (zoo solvers say ``examples/mnist/...`` but sit next to their nets). Returns
    the first that exists, else ``p`` unchanged, so the caller's error names the
    path as written.
    """
    p = os.path.expanduser(p)
    if os.path.exists(p) or os.path.isabs(p) or base_file is None:
        return p
    folder = os.path.dirname(os.path.abspath(os.fspath(base_file)))
    for candidate in (os.path.join(folder, p), os.path.join(folder, os.path.basename(p))):
        if os.path.exists(candidate):
            return candidate
    return p
