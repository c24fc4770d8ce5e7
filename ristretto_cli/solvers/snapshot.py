"""Snapshot files: Caffe's ``<prefix>_iter_<N>.caffemodel`` + ``.solverstate`` and our
``<prefix>_iter_<N>.rngstate.json`` sidecar.

The .solverstate is Caffe's ``SolverState`` message (iter, learned_net = the
caffemodel's path, history blobs in learnable-parameter order with the second set of
AdaDelta/Adam after the first, current_step), so Caffe can resume from our
snapshots and we from Caffe's.

Caffe does not store where the random generator and the data layers stand, so its
resumed runs differ from uninterrupted ones. The sidecar (our addition) stores the
backend generator's state, the number of batches each net has read and the data
layers' own seeds, which makes a resume reproduce the uninterrupted run exactly.
Every file is written atomically; the .solverstate last, so its presence means the
other two are complete.
"""
from __future__ import annotations

import json
import os

import numpy as np
from google.protobuf.message import DecodeError

from ..caffe.atomic import atomic_write_bytes
from ..caffe.blobproto import array_to_blob, blob_to_array
from ..errors import RistrettoError
from ..proto import caffe_pb2

SIDECAR_FORMAT = "ristretto-rngstate"
SIDECAR_VERSION = 1


def snapshot_filename(prefix: str, iteration: int, extension: str) -> str:
    """Caffe's Solver::SnapshotFilename: ``<prefix>_iter_<N><extension>``."""
    return f"{prefix}_iter_{int(iteration)}{extension}"


def sidecar_path(solverstate_path: str) -> str:
    """``X_iter_N.solverstate`` -> ``X_iter_N.rngstate.json``."""
    base = solverstate_path[: -len(".solverstate")] if solverstate_path.endswith(".solverstate") \
        else solverstate_path
    return base + ".rngstate.json"


# --------------------------------------------------------------------------- SolverState


def write_solverstate(path: str, iteration: int, learned_net: str, history: list, current_step: int) -> None:
    """Write a Caffe SolverState (history as float32 BlobProtos) atomically."""
    state = caffe_pb2.SolverState()
    state.iter = int(iteration)
    state.learned_net = learned_net
    state.current_step = int(current_step)
    for h in history:
        array_to_blob(np.asarray(h), state.history.add())
    atomic_write_bytes(path, state.SerializeToString())


def read_solverstate(path: str):
    """Read a binary SolverState; errors name the file."""
    if path.endswith(".h5"):
        raise RistrettoError(f"{path}: HDF5 solver states are not supported; snapshot with "
                             f"snapshot_format: BINARYPROTO")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise RistrettoError(f"{path}: cannot read solver state: {exc.strerror or exc}") from None
    state = caffe_pb2.SolverState()
    try:
        state.ParseFromString(data)
    except DecodeError:
        raise RistrettoError(f"{path}: not a Caffe SolverState (.solverstate) file") from None
    if not data or not state.HasField("iter"):
        raise RistrettoError(f"{path}: not a Caffe SolverState (no iteration count)")
    return state


def history_arrays(state, path: str) -> list[np.ndarray]:
    return [blob_to_array(b, f"{path}: history blob {k}") for k, b in enumerate(state.history)]


# --------------------------------------------------------------------------- random state


def rng_state(backend):
    """The backend generator's state as JSON-able data, or None where it cannot be read."""
    try:
        state = backend.rng.bit_generator.state
    except AttributeError:
        return None
    try:
        json.dumps(state)
    except TypeError:
        return None
    return state


def set_rng_state(backend, state) -> bool:
    """Put the generator back into ``state``; False when the backend cannot."""
    if state is None:
        return False
    try:
        backend.rng.bit_generator.state = state
    except (AttributeError, TypeError, ValueError):
        return False
    return True


def data_layers(net) -> list:
    """Layers of ``net`` that read batches from somewhere (Data, ImageData, ...)."""
    return [l for l in net.layers if hasattr(l, "reset") and (hasattr(l, "next_batch") or hasattr(l, "get_state"))]


def data_state(net, batches: int) -> dict:
    """Where the data layers of ``net`` stand after ``batches`` forward passes."""
    layers = {}
    for layer in data_layers(net):
        if hasattr(layer, "get_state") and hasattr(layer, "set_state"):
            layers[layer.name] = {"state": layer.get_state()}
        else:
            seed = getattr(layer, "_seed", None)
            layers[layer.name] = {"seed": None if seed is None else int(seed)}
    return {"batches": int(batches), "data_layers": layers}


def restore_data_state(net, state: dict) -> list[str]:
    """Move the data layers of ``net`` to where ``state`` says: their own state when
    they can save one, else start over with the stored seed and skip the batches read.
    Returns the names of the layers that had to read past batches to get there."""
    batches = int(state.get("batches", 0))
    skipped = []
    stored = state.get("data_layers", {})
    for layer in data_layers(net):
        entry = stored.get(layer.name)
        if entry is None:
            continue
        if "state" in entry and hasattr(layer, "set_state"):
            layer.set_state(entry["state"])
            continue
        if entry.get("seed") is not None and hasattr(layer, "_seed"):
            layer._seed = int(entry["seed"])
        layer.reset()
        if batches:
            skipped.append(layer.name)
            skip = getattr(layer, "next_batch", None) or (lambda: layer.forward([]))
            for _ in range(batches):
                skip()
    return skipped


def write_sidecar(path: str, data: dict) -> None:
    payload = {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, **data}
    atomic_write_bytes(path, (json.dumps(payload, indent=1) + "\n").encode())


def read_sidecar(path: str) -> dict | None:
    """The sidecar's content, None when there is none; a broken one is an error."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise RistrettoError(f"{path}: cannot read the random-state sidecar ({exc}); delete it to resume "
                             f"like Caffe (without the generator and data positions)") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise RistrettoError(f"{path}: not a ristretto random-state file")
    if data.get("version") != SIDECAR_VERSION:
        raise RistrettoError(f"{path}: random-state format version {data.get('version')} is not supported "
                             f"(this ristretto reads version {SIDECAR_VERSION})")
    return data
