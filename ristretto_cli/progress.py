"""How the library reports progress without printing.

A long-running library function takes ``on_progress(done, total, info)``, a callable
given by the caller: ``done`` steps of ``total`` (None when unknown) are finished and
``info`` is a short status text (None: unchanged). It is called once with ``done == 0``
when the work starts, then after every step. The command line turns these calls into
progress bars (:mod:`ristretto_cli.commands.ui`); without a callback nothing is shown.
"""
from __future__ import annotations

from typing import Callable, Optional

OnProgress = Callable[[int, Optional[int], Optional[str]], None]


class Steps:
    """Counts the steps of one task and reports them to ``on_progress`` (may be None)."""

    def __init__(self, on_progress: OnProgress | None, total: int | None):
        self.on_progress = on_progress
        self.total = total
        self.done = 0
        if on_progress is not None:
            on_progress(0, total, None)

    def advance(self, n: int = 1, info: str | None = None) -> None:
        self.done += n
        if self.on_progress is not None:
            self.on_progress(self.done, self.total, info)
