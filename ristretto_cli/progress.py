"""How the library reports progress without printing.

A long-running library function takes ``on_progress(done, total, info)``, a callable
given by the caller: ``done`` steps of ``total`` (None when unknown) are finished and
``info`` is a short status text (None: unchanged). It is called once with ``done == 0``
when the work starts and after every step; ``done == total`` comes once, when the task
is over (its last step and any wrapping up are done). The command line turns these
calls into progress bars (:mod:`ristretto_cli.commands.ui`); without a callback
nothing is shown.
"""
from __future__ import annotations

from typing import Callable, Optional

OnProgress = Callable[[int, Optional[int], Optional[str]], None]


class Steps:
    """Counts the steps of one task and reports them to ``on_progress`` (may be None).

    Use it as a context manager: reports stay below ``total`` while the task runs and
    the final count comes when the block ends without an error (see the module docstring).
    """

    def __init__(self, on_progress: OnProgress | None, total: int | None):
        self.on_progress = on_progress
        self.total = total
        self.done = 0
        self._info: str | None = None
        if on_progress is not None:
            on_progress(0, total, None)

    def advance(self, n: int = 1, info: str | None = None) -> None:
        self.done += n
        if info is not None:
            self._info = info
        if self.on_progress is not None and (self.total is None or self.done < self.total):
            self.on_progress(self.done, self.total, info)

    def finish(self) -> None:
        """The task is over: report the final count (once) with the last status text."""
        if self.on_progress is not None and self.total is not None and self.done >= self.total:
            self.on_progress(self.done, self.total, self._info)

    def __enter__(self) -> "Steps":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.finish()
        return False
