"""CUDA C sources loaded by CuPy (package data of this package), each with a NumPy twin
in the library that tests compare it to. Imports nothing of the library."""
from __future__ import annotations

from importlib import resources


def source(name: str) -> str:
    """The text of the CUDA source ``name`` (e.g. ``"trim.cu"``) shipped in this package."""
    return resources.files(__name__).joinpath(name).read_text()


def names() -> list[str]:
    """The CUDA sources this package ships, sorted."""
    return sorted(p.name for p in resources.files(__name__).iterdir() if p.name.endswith((".cu", ".cuh")))
