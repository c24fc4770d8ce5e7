"""Helpers of the typed tests (the ``backend`` fixture of conftest.py).

A test keeps its inputs and references in host memory (NumPy). :func:`on_backend`
gives it the layer to drive: on NumPy the layer itself (the test runs exactly as it
always did), on CuPy a :class:`HostView` that moves every array argument to the
device with ``backend.asarray`` and brings every array result back with
``backend.to_numpy`` before the test compares it.
"""
from __future__ import annotations

from ristretto_cli.backend import Backend, is_numpy


def reseeded(backend: Backend, seed: int | None) -> Backend:
    """A backend of the same kind and device with its own seed."""
    return Backend(backend.xp, seed=seed, device=backend.device)


def to_device(backend: Backend, a):
    """A host array (or None, or a list of them) on the backend."""
    if a is None:
        return None
    if isinstance(a, (list, tuple)):
        return [to_device(backend, x) for x in a]
    return backend.asarray(a)


def to_host(backend: Backend, a):
    """A backend array (or None, or a list of them) as NumPy."""
    if a is None:
        return None
    if isinstance(a, (list, tuple)):
        return [to_host(backend, x) for x in a]
    return backend.to_numpy(a)


def on_backend(layer, backend: Backend | None = None):
    """The layer itself on NumPy, a :class:`HostView` of it on CuPy."""
    if isinstance(layer, HostView):
        return layer
    backend = backend or layer.backend
    if is_numpy(backend.xp):
        return layer
    return HostView(layer, backend)


class _HostBlobs(list):
    """Host copies of a layer's parameter blobs; an element set or changed in place
    reaches the device before the layer's next call."""


class HostView:
    """A device layer seen from host memory: NumPy in, NumPy out.

    ``blobs`` reads give host copies that stay the same objects while the layer's blob
    list does: a test may change them in place (the gradient checker perturbs them) or
    assign new ones, and the change is copied to the device before every call and the
    copies refreshed from the device after it. ``diffs`` reads give host copies.
    """

    def __init__(self, layer, backend: Backend):
        object.__setattr__(self, "layer", layer)
        object.__setattr__(self, "backend", backend)
        object.__setattr__(self, "_host", None)

    # -- parameters -------------------------------------------------------------------
    @property
    def blobs(self):
        host = self._host
        if host is None or len(host) != len(self.layer.blobs):
            host = _HostBlobs(to_host(self.backend, list(self.layer.blobs)))
            object.__setattr__(self, "_host", host)
        return host

    @blobs.setter
    def blobs(self, values):
        self.layer.blobs = to_device(self.backend, list(values))
        object.__setattr__(self, "_host", None)

    @property
    def diffs(self):
        return to_host(self.backend, list(self.layer.diffs))

    @diffs.setter
    def diffs(self, values):
        self.layer.diffs = to_device(self.backend, list(values))

    def _push(self):
        host = self._host
        if host is None:
            return
        blobs = list(self.layer.blobs)
        for i, h in enumerate(host):
            dev = blobs[i] if i < len(blobs) else None
            if dev is not None and dev.shape == h.shape and dev.dtype == h.dtype:
                dev[...] = self.backend.asarray(h)  # in place: the layer may hold it elsewhere too
            else:
                blobs[i:i + 1] = [self.backend.asarray(h)]
        self.layer.blobs = blobs if len(blobs) != len(self.layer.blobs) or \
            any(a is not b for a, b in zip(blobs, self.layer.blobs)) else self.layer.blobs

    def _pull(self):
        host = self._host
        if host is None:
            return
        if len(host) != len(self.layer.blobs):
            object.__setattr__(self, "_host", None)
            return
        for i, dev in enumerate(self.layer.blobs):
            fresh = self.backend.to_numpy(dev)
            if host[i].shape == fresh.shape and host[i].dtype == fresh.dtype and host[i].flags.writeable:
                host[i][...] = fresh
            else:
                host[i] = fresh

    def _call(self, fn, *args, **kwargs):
        self._push()
        try:
            return fn(*args, **kwargs)
        finally:
            self._pull()

    # -- the layer interface ------------------------------------------------------------
    def setup(self, bottom_shapes):
        object.__setattr__(self, "_host", None)
        return self.layer.setup(bottom_shapes)

    def reshape(self, bottom_shapes):
        return self._call(self.layer.reshape, bottom_shapes)

    def forward(self, bottoms, *args, **kwargs):
        tops = self._call(self.layer.forward, to_device(self.backend, list(bottoms)), *args, **kwargs)
        return to_host(self.backend, tops)

    def backward(self, top_diffs, bottoms, tops, propagate_down, *args, **kwargs):
        grads = self._call(self.layer.backward, to_device(self.backend, list(top_diffs)),
                           to_device(self.backend, list(bottoms)), to_device(self.backend, list(tops)),
                           propagate_down, *args, **kwargs)
        return to_host(self.backend, grads)

    def zero_diffs(self):
        return self._call(self.layer.zero_diffs)

    def __getattr__(self, name):
        return getattr(self.layer, name)

    def __setattr__(self, name, value):
        if name in ("blobs", "diffs"):
            type(self).__dict__[name].__set__(self, value)
        else:
            setattr(self.layer, name, value)

    def __repr__(self) -> str:
        return f"HostView({self.layer!r}, {self.backend!r})"
