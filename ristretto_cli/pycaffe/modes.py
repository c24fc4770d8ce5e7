"""Caffe's process-wide mode: CPU or GPU, the device, the random seed (``caffe.set_mode_gpu()``).

Nets and solvers made after a call use it; those made before keep their backend.
"""
from __future__ import annotations

from ..backend import Backend, get_backend

_state = {"gpu": False, "device": 0, "seed": None}


def set_mode_cpu() -> None:
    """Nets and solvers made from now on compute with NumPy."""
    _state["gpu"] = False


def set_mode_gpu() -> None:
    """Nets and solvers made from now on compute with CuPy on the device of
    :func:`set_device` (0 unless set). Their blobs' ``data`` are then CuPy arrays."""
    _state["gpu"] = True


def set_device(device_id: int) -> None:
    """The CUDA device that GPU mode uses."""
    _state["device"] = int(device_id)


def set_random_seed(seed: int) -> None:
    """Seed the generator of nets made from now on (fillers, dropout, stochastic
    rounding); a solver's own ``random_seed`` still wins, as in Caffe."""
    _state["seed"] = int(seed)


def gpu_id() -> int | None:
    """The device nets are made on now, None for the CPU."""
    return _state["device"] if _state["gpu"] else None


def new_backend() -> Backend:
    """A backend for a new net or solver, as the mode says."""
    return get_backend(gpu_id(), _state["seed"])


def layer_type_list() -> list[str]:
    """Every layer type name that can be built (Caffe's ``LayerRegistry::LayerTypeList``)."""
    from ..layers import LAYER_TYPES

    return sorted(LAYER_TYPES)
