"""SIGINT / SIGHUP as requests to a running solver, as Caffe's ``--sigint_effect`` /
``--sighup_effect``: "stop" (after the current iteration, with a snapshot), "snapshot"
(and go on) or "none". A second SIGINT after a stop request aborts at once
(KeyboardInterrupt), unless a snapshot is being written.
"""
from __future__ import annotations

import contextlib
import signal
import threading

from ..errors import RistrettoError

EFFECTS = ("stop", "snapshot", "none")


def check_effects(*effects: str) -> None:
    for e in effects:
        if e not in EFFECTS:
            raise RistrettoError(f"unknown signal effect '{e}'; use one of {', '.join(EFFECTS)}")


@contextlib.contextmanager
def handle_signals(solver, sigint_effect: str = "stop", sighup_effect: str = "snapshot"):
    """While inside, SIGINT and SIGHUP call ``solver.request_stop(name)`` or
    ``solver.request_snapshot()`` as the effects say (main thread only; elsewhere nothing
    is installed). On exit the handlers installed before are back, whatever they were
    (one installed outside Python, which Python cannot reinstall, becomes SIG_DFL).
    ``solver.writing``, when true, keeps a second SIGINT from aborting."""
    check_effects(sigint_effect, sighup_effect)
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigint_seen = False

    def handler(signum, frame):
        nonlocal sigint_seen
        is_int = signum == signal.SIGINT
        effect = sigint_effect if is_int else sighup_effect
        if effect == "none":
            return
        if is_int and sigint_seen and not getattr(solver, "writing", False):
            raise KeyboardInterrupt
        if is_int:
            sigint_seen = True
        name = "SIGINT" if is_int else "SIGHUP"
        if effect == "stop":
            solver.request_stop(name)
        else:
            solver.request_snapshot()

    sigs = [signal.SIGINT] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    before = {s: signal.getsignal(s) for s in sigs}
    try:
        for s in sigs:
            signal.signal(s, handler)
        yield
    finally:
        for s, h in before.items():
            signal.signal(s, signal.SIG_DFL if h is None else h)
