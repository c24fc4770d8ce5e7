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


# -- backends (Caffe's TestDtypesAndDevices) -----------------------------------------
#
# Tests that compute arrays take the ``backend`` fixture and run once per backend:
# NumPy always, CuPy where CuPy and a CUDA device are present (skipped otherwise).
# RISTRETTO_TEST_GPU=1 demands the CuPy runs (they fail, not skip, when CuPy or a
# GPU is missing); RISTRETTO_TEST_GPU=0 leaves them out.
GPU_SWITCH = os.environ.get("RISTRETTO_TEST_GPU", "").strip().lower()
GPU_REQUESTED = GPU_SWITCH in ("1", "true", "yes", "on")
GPU_REFUSED = GPU_SWITCH in ("0", "false", "no", "off")


def _find_cupy():
    """(cupy, "") when CuPy and a CUDA device are usable, else (None, why not)."""
    if GPU_REFUSED:
        return None, "RISTRETTO_TEST_GPU=0"
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install
        return None, f"CuPy is not importable ({type(exc).__name__}: {exc})"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None, "no CUDA device"
    except Exception as exc:  # pragma: no cover - depends on the machine
        return None, f"no CUDA device ({exc})"
    return cupy, ""


CUPY, NO_CUPY_REASON = _find_cupy()

BACKENDS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("cupy", id="cupy", marks=[pytest.mark.gpu, pytest.mark.skipif(
        CUPY is None and not GPU_REQUESTED, reason=f"CuPy backend: {NO_CUPY_REASON}")]),
]


def make_backend(name: str, seed: int | None = 0) -> Backend:
    """The NumPy or CuPy backend; CuPy's absence fails the test under RISTRETTO_TEST_GPU=1."""
    if name == "numpy":
        return Backend(np, seed=seed)
    if CUPY is None:
        pytest.fail(f"RISTRETTO_TEST_GPU=1 asks for the CuPy backend, but: {NO_CUPY_REASON}")
    return Backend(CUPY, seed=seed, device=0)


@pytest.fixture(params=BACKENDS)
def backend(request):
    """The backend a typed test runs on (NumPy, then CuPy), seeded with 0."""
    return make_backend(request.param)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: the CuPy twin of a typed test (runs on a CUDA device)")


def run_cli(args, capsys=None):
    """`ristretto ARGS` in-process: the exit status, or (status, stdout, stderr) with ``capsys``."""
    from ristretto_cli.cli import run

    status = run([str(a) for a in args])
    if capsys is None:
        return status
    out, err = capsys.readouterr()
    return status, out, err
