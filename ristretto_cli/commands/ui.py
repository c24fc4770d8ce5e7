"""Terminal output: progress bars on stderr, tables on stdout (rich), status lines and the
library's logged warnings on stderr. The only module that draws; the library reports
through callbacks (:mod:`ristretto_cli.progress`) and :mod:`logging`."""
from __future__ import annotations

import contextlib
import logging
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


def _bar(style: str = "status") -> Progress:
    """A rich progress bar on stderr. "status": count, ETA and a free-text status field
    ``info``, shown on a terminal (or when RISTRETTO_PROGRESS is set); "count": count and
    times (the dataset converters' bar), shown on a terminal."""
    if style == "count":
        return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=err, disable=not err.is_terminal,
                        transient=False)
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                    console=err, transient=not err.is_terminal, disable=not err.is_terminal
                    and not os.environ.get("RISTRETTO_PROGRESS"))


@contextlib.contextmanager
def progress(description: str, total: int | None):
    """A progress bar with count, ETA and a free-text status field ``info``."""
    with _bar() as bar:
        task = bar.add_task(description, total=total, info="")

        def advance(n: int = 1, info: str | None = None):
            bar.update(task, advance=n, **({"info": info} if info is not None else {}))

        yield advance


class _Bars:
    """Progress bars for a library's ``on_progress(done, total, info)`` reports: a bar opens
    when a task starts (done == 0, or another description), closes when it is complete."""

    def __init__(self, style: str):
        self.style = style
        self.bar: Progress | None = None
        self.task = None
        self.description = None

    def report(self, description: str, done: int, total: int | None, info: str | None = None) -> None:
        if self.bar is not None and (done == 0 or description != self.description):
            self.close()
        if self.bar is None:
            if done and total is not None and done >= total:
                return  # a finished task reporting once more
            self.bar = _bar(self.style)
            self.bar.start()
            self.description = description
            self.task = self.bar.add_task(description, total=total, info="")
        self.bar.update(self.task, completed=done, total=total, **({"info": info} if info is not None else {}))
        if total is not None and done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


@contextlib.contextmanager
def progress_reports(style: str = "status"):
    """Yields ``report(description, done, total, info=None)``, which draws the reports of one
    or more library tasks as progress bars (see :func:`_bar` for ``style``); any open bar
    closes on exit."""
    bars = _Bars(style)
    try:
        yield bars.report
    finally:
        bars.close()


@contextlib.contextmanager
def progress_callback(description: str, style: str = "status"):
    """Yields an ``on_progress(done, total, info)`` callback for a library call: its task
    drawn as a progress bar named ``description``."""
    with progress_reports(style) as report:
        yield lambda done, total, info=None: report(description, done, total, info)


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
    from ..caffe.atomic import json_text, write_json as write_json_file

    if path == "-":
        sys.stdout.write(json_text(data))
        return
    write_json_file(path, data)


class _MessageHandler(logging.Handler):
    """A logged record as one status line: its message as written (see :func:`log`)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            log(record.getMessage())
        except Exception:  # pragma: no cover - like logging's own handlers
            self.handleError(record)


def show_library_warnings() -> None:
    """Show the library's logged warnings (``ristretto_cli.*`` loggers) as plain lines on
    stderr; called by the command line, once is enough."""
    logger = logging.getLogger("ristretto_cli")
    if not any(isinstance(h, _MessageHandler) for h in logger.handlers):
        logger.addHandler(_MessageHandler(logging.WARNING))
