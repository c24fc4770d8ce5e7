"""Terminal output: progress bars on stderr, tables on stdout (rich)."""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)


@contextlib.contextmanager
def progress(description: str, total: int | None):
    """A progress bar with count, ETA and a free-text status field ``info``."""
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                   console=err, transient=not err.is_terminal, disable=not err.is_terminal
                   and not os.environ.get("RISTRETTO_PROGRESS"))
    with bar:
        task = bar.add_task(description, total=total, info="")

        def advance(n: int = 1, info: str | None = None):
            bar.update(task, advance=n, **({"info": info} if info is not None else {}))

        yield advance


def table(title: str, columns: list[str], rows: list[list], console: Console = out) -> None:
    """Print a table; names and values are plain text (no rich markup), and output that is
    not a terminal gets the table's full width, so no cell is cut short with an ellipsis."""
    t = Table(title=Text(title), title_justify="left")
    for i, c in enumerate(columns):
        t.add_column(Text(c), justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*[Text(fmt(v)) for v in r])
    if console.is_terminal:
        console.print(t)
        return
    needed = Measurement.get(console, console.options.update(width=1 << 16), t).maximum
    saved = console.width
    console.width = max(saved, needed)
    try:
        console.print(t)
    finally:
        console.width = saved


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def log(message: str) -> None:
    """One status line on stderr, as written (no markup, not wrapped)."""
    err.print(message, markup=False, highlight=False, soft_wrap=True)


def write_json(path: str, data) -> None:
    """Write ``data`` as JSON atomically ('-' = stdout). NaN and infinities, which JSON
    cannot hold, become null."""
    text = json.dumps(_finite(data), indent=2, sort_keys=False, default=float, allow_nan=False)
    if path == "-":
        sys.stdout.write(text + "\n")
        return
    from ..caffe.atomic import atomic_write_bytes

    atomic_write_bytes(path, (text + "\n").encode())


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0:  # NumPy scalars
        return _finite(value.item())
    return value
