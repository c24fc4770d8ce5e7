"""Shared fixtures: the ../shared folder (skip cleanly when absent), backends."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ristretto_cli.backend import Backend

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RISTRETTO_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """Path under ../shared, skipping the calling test when it is missing."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not present (../shared is optional)")
    return p


@pytest.fixture
def shared():
    return shared_path


@pytest.fixture
def backend():
    return Backend(np, seed=0)


def run_cli(args, capsys=None):
    """`ristretto ARGS` in-process: the exit status, or (status, stdout, stderr) with ``capsys``."""
    from ristretto_cli.cli import run

    status = run([str(a) for a in args])
    if capsys is None:
        return status
    out, err = capsys.readouterr()
    return status, out, err
