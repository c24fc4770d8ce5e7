"""pycaffe's ``caffe.Net``, ``Blob`` and ``Layer`` over :class:`ristretto_cli.net.Net`.

The library's net rebinds ``blobs[name]`` to new arrays on each forward pass, so a
:class:`Blob` holds no array: it looks its array up by name each time ``data`` is
read, and ``data`` is then the very array the net computed (writes into it reach the
net, as into a Caffe blob). Input blobs (the tops of ``Input`` layers, Caffe's
``net.inputs``) are the exception that makes writes *before* a forward count: the
wrapper owns one array per input, hands out that array, feeds it to every forward
pass and keeps it in place afterwards (holding what the pass left there: a Ristretto
layer trims its bottom in place, as in Caffe-Ristretto).
"""
from __future__ import annotations

import math
import os
from collections import OrderedDict

import numpy as np

from ..errors import RistrettoError
from ..layers import TEST, TRAIN
from . import modes

__all__ = ["TEST", "TRAIN", "Blob", "Layer", "Net"]


class Blob:
    """One named blob of a :class:`Net`: ``data`` and ``diff`` are the net's arrays."""

    def __init__(self, net: "Net", name: str):
        self._net = net
        self._name = name

    @property
    def data(self):
        """The blob's values: the array the net reads and writes (a view, never a copy)."""
        return self._net._data(self._name)

    @property
    def diff(self):
        """The gradient of the loss (or of the diffs given to ``backward``) with respect to
        the blob, after ``backward``; zeros before."""
        return self._net._diff(self._name)

    @property
    def shape(self) -> tuple:
        return tuple(int(d) for d in self._net._shape(self._name))

    @property
    def count(self) -> int:
        return int(math.prod(self.shape))

    def _legacy(self, i: int) -> int:
        shape = self.shape
        if len(shape) > 4:
            raise RistrettoError(f"blob '{self._name}' has {len(shape)} axes; num/channels/height/width need 4 or fewer")
        return shape[i] if i < len(shape) else 1

    @property
    def num(self) -> int:
        return self._legacy(0)

    @property
    def channels(self) -> int:
        return self._legacy(1)

    @property
    def height(self) -> int:
        return self._legacy(2)

    @property
    def width(self) -> int:
        return self._legacy(3)

    def reshape(self, *shape) -> None:
        """Give the blob a new shape (contents are zeros afterwards). For an input blob,
        the next ``forward`` (or ``net.reshape()``) carries the shape through the net."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        self._net._reshape_blob(self._name, tuple(int(d) for d in shape))

    def __repr__(self) -> str:
        return f"<Blob {self._name!r} {self.shape}>"


class ParamBlob:
    """One learnable array of a layer (``net.params[name][k]``): ``data`` is the layer's
    array (the one the solver updates in place), ``diff`` its accumulated gradient."""

    def __init__(self, layer, index: int):
        self._layer = layer
        self._index = index

    @property
    def data(self):
        return self._layer.blobs[self._index]

    @property
    def diff(self):
        layer = self._layer
        if len(layer.diffs) != len(layer.blobs):
            layer.zero_diffs()
        return layer.diffs[self._index]

    @property
    def shape(self) -> tuple:
        return tuple(int(d) for d in self.data.shape)

    @property
    def count(self) -> int:
        return int(math.prod(self.shape))

    def _legacy(self, i: int) -> int:
        shape = self.shape
        return shape[i] if i < len(shape) else 1

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))

    def reshape(self, *shape) -> None:
        raise RistrettoError(f"layer '{self._layer.name}': learnable blobs keep the shape the layer gave them")

    def __repr__(self) -> str:
        return f"<ParamBlob {self._layer.name}[{self._index}] {self.shape}>"


class Layer:
    """One layer as pycaffe shows it: ``type``, ``blobs`` (its learnable arrays) and, ours,
    ``quantization`` (the Ristretto formats) and ``name``."""

    def __init__(self, layer):
        self._layer = layer
        self.blobs = [ParamBlob(layer, k) for k in range(len(layer.blobs))]

    @property
    def type(self) -> str:
        return self._layer.type

    @property
    def name(self) -> str:
        return self._layer.name

    @property
    def quantization(self):
        """The layer's number formats (:class:`ristretto_cli.formats.QuantConfig`: precision,
        bit widths, fractional lengths or exponent bits, rounding) for a Ristretto layer
        (ConvolutionRistretto, FcRistretto, DeconvolutionRistretto, LRNRistretto); None
        for a float layer."""
        return getattr(self._layer, "quant_config", None)

    def __repr__(self) -> str:
        return f"<Layer {self.name!r} ({self.type})>"


def _phase(value) -> int:
    if isinstance(value, str):
        names = {"TRAIN": TRAIN, "TEST": TEST}
        if value.upper() not in names:
            raise RistrettoError(f"unknown phase {value!r}; use caffe.TRAIN or caffe.TEST")
        return names[value.upper()]
    if value not in (TRAIN, TEST):
        raise RistrettoError(f"unknown phase {value!r}; use caffe.TRAIN ({TRAIN}) or caffe.TEST ({TEST})")
    return int(value)


class Net:
    """A Caffe net as pycaffe's ``caffe.Net``.

    ``Net(model, phase, level=0, stages=None, weights=None)`` or the older
    ``Net(model, weights, phase)``; ``phase`` is ``caffe.TEST`` or ``caffe.TRAIN``.
    ``model``: any Caffe prototxt (V0/V1/V2, Ristretto layers); ``weights``: a caffemodel
    (copied by layer name). The net computes on the backend of the current mode
    (:func:`~ristretto_cli.pycaffe.set_mode_gpu`).
    """

    def __init__(self, network_file, *args, phase=None, level: int = 0, stages=None, weights=None):
        if len(args) == 2:          # Net(model, weights, phase): pycaffe's older form
            weights, phase = args
        elif len(args) == 1:
            phase = args[0]
        elif args:
            raise TypeError("Net(model, phase, weights=...) or Net(model, weights, phase)")
        if phase is None:
            raise TypeError("Net() needs a phase: caffe.TEST or caffe.TRAIN")
        from ..net.loading import load_net

        network_file = os.fspath(network_file)
        for path, what in ((network_file, "model"), (weights, "weights")):
            if path is not None and not os.path.isfile(os.fspath(path)):
                raise RistrettoError(f"{os.fspath(path)}: no such {what} file")
        core = load_net(network_file, os.fspath(weights) if weights is not None else None, _phase(phase),
                        modes.new_backend(), level=level, stages=tuple(stages or ()))
        self._attach(core)

    @classmethod
    def _wrap(cls, core) -> "Net":
        """A pycaffe view of an existing library Net (a solver's)."""
        self = cls.__new__(cls)
        self._attach(core)
        return self

    def _attach(self, core) -> None:
        self._net = core
        self._diffs: dict = {}
        self._inputs = [t for layer, ts in zip(core.layers, core.top_names) if layer.type == "Input" for t in ts]
        xp = core.xp
        self._input_arrays = {name: xp.zeros(core.blob_shapes[name], dtype=xp.float32) for name in self._inputs}
        names: list[str] = []
        for ts in core.top_names:
            names += [t for t in ts if t not in names]
        self._blob_names = names
        self._blobs = OrderedDict((name, Blob(self, name)) for name in names)
        self._layers = [Layer(layer) for layer in core.layers]

    # -- pycaffe's attributes ------------------------------------------------
    @property
    def blobs(self) -> "OrderedDict[str, Blob]":
        """Every blob by name, input to output (in-place tops once), as pycaffe."""
        return self._blobs

    @property
    def params(self) -> "OrderedDict[str, list]":
        """The learnable blobs by layer name (layers without any left out), as pycaffe."""
        return OrderedDict((name, layer.blobs) for name, layer in zip(self._layer_names, self._layers)
                           if layer.blobs)

    @property
    def layers(self) -> list:
        return self._layers

    @property
    def layer_dict(self) -> "OrderedDict[str, Layer]":
        return OrderedDict(zip(self._layer_names, self._layers))

    @property
    def _layer_names(self) -> list:
        return list(self._net.layer_names)

    @property
    def inputs(self) -> list:
        """The tops of the Input layers (Caffe's net inputs; Data layers are not inputs)."""
        return list(self._inputs)

    @property
    def outputs(self) -> list:
        """The blobs no layer reads, in name order (Caffe's)."""
        return list(self._net.outputs)

    @property
    def top_names(self) -> "OrderedDict[str, list]":
        return OrderedDict((n, list(t)) for n, t in zip(self._net.layer_names, self._net.top_names))

    @property
    def bottom_names(self) -> "OrderedDict[str, list]":
        return OrderedDict((n, list(b)) for n, b in zip(self._net.layer_names, self._net.bottom_names))

    @property
    def blob_loss_weights(self) -> "OrderedDict[str, float]":
        return OrderedDict((n, float(self._net.loss_weights.get(n, 0.0))) for n in self._blob_names)

    @property
    def phase(self) -> int:
        return int(self._net.phase)

    @property
    def core(self):
        """The library's :class:`ristretto_cli.net.Net` underneath (ours, not pycaffe's)."""
        return self._net

    # -- arrays ----------------------------------------------------------------
    def _shape(self, name: str) -> tuple:
        if name in self._input_arrays:
            return tuple(self._input_arrays[name].shape)
        return tuple(self._net.blob_shapes[name])

    def _data(self, name: str):
        if name in self._input_arrays:
            return self._input_arrays[name]
        net = self._net
        arr = net.blobs.get(name)
        if arr is None:  # before the first forward pass, or after a reshape
            arr = net.xp.zeros(net.blob_shapes[name], dtype=net.xp.float32)
            net.blobs[name] = arr  # so that writes before a partial forward are what it reads
        return arr

    def _diff(self, name: str):
        d = self._diffs.get(name)
        shape = self._shape(name)
        if d is None or tuple(d.shape) != shape:
            d = self._net.xp.zeros(shape, dtype=self._net.xp.float32)
            self._diffs[name] = d
        return d

    def _reshape_blob(self, name: str, shape: tuple) -> None:
        if any(d <= 0 for d in shape):
            raise RistrettoError(f"blob '{name}': every dimension must be positive, got {shape}")
        xp = self._net.xp
        if name in self._input_arrays:
            self._input_arrays[name] = xp.zeros(shape, dtype=xp.float32)
        else:
            self._net.blob_shapes[name] = shape
            self._net.blobs[name] = xp.zeros(shape, dtype=xp.float32)

    def reshape(self) -> None:
        """Carry the input blobs' shapes through the net (Caffe's ``Net::Reshape``); forward
        does it by itself when an input blob was reshaped."""
        changed = {n: tuple(a.shape) for n, a in self._input_arrays.items()
                   if tuple(a.shape) != tuple(self._net.blob_shapes[n])}
        if changed:
            self._net.reshape(changed)

    def _feed(self) -> dict:
        """The input arrays for the next forward pass (reshaping the net when needed)."""
        self.reshape()
        return dict(self._input_arrays)

    def _after_forward(self) -> None:
        """Keep the wrapper's input arrays as the net's blobs, holding what the pass left
        in them (an in-place trim of a Ristretto layer)."""
        blobs = self._net.blobs
        for name, arr in self._input_arrays.items():
            used = blobs.get(name)
            if used is not None and used is not arr:
                arr[...] = used
            blobs[name] = arr

    # -- forward / backward ------------------------------------------------------
    def _layer_index(self, name: str, what: str) -> int:
        try:
            return self._layer_names.index(name)
        except ValueError:
            raise RistrettoError(f"{what}: net '{self._net.name}' has no layer '{name}'") from None

    def forward(self, blobs=None, start=None, end=None, **kwargs) -> dict:
        """Run the net forward, as pycaffe: ``kwargs`` set the input blobs (all of them,
        batch-sized), ``start`` / ``end`` name the first and the last layer (inclusive).
        Returns ``{blob: array}`` for the outputs (or ``end``'s tops) and ``blobs``; the
        arrays are the net's own."""
        blobs = list(blobs or [])
        start_ind = self._layer_index(start, "start") if start is not None else 0
        if end is not None:
            end_ind = self._layer_index(end, "end")
            outputs = set(self._net.top_names[end_ind] + blobs)
        else:
            end_ind = len(self._layers) - 1
            outputs = set(self.outputs + blobs)
        if kwargs:
            if set(kwargs) != set(self._inputs):
                raise RistrettoError(f"input blob arguments {sorted(kwargs)} do not match the net's inputs "
                                     f"{self._inputs}")
            for name, value in kwargs.items():
                if not hasattr(value, "shape"):
                    value = np.asarray(value, dtype=np.float32)
                if value.shape[0] != self._input_arrays[name].shape[0]:
                    raise RistrettoError(f"input '{name}' has {value.shape[0]} items, the blob's batch is "
                                         f"{self._input_arrays[name].shape[0]}")
                self._input_arrays[name][...] = self._net.xp.asarray(value)
        feed = self._feed()
        try:
            self._net.forward(feed, start=start_ind, end=end_ind + 1, keep_for_backward=True)
        finally:
            self._after_forward()
        return {out: self._data(out) for out in outputs}

    def backward(self, diffs=None, start=None, end=None, **kwargs) -> dict:
        """Back-propagate from the loss (or from ``kwargs``: a gradient for every output
        blob), as pycaffe; parameter gradients add up in ``params[...][k].diff`` (see
        :meth:`clear_param_diffs`). Returns ``{blob: diff}`` for the inputs and ``diffs``.
        Only whole passes: ``start`` / ``end`` are refused."""
        if start is not None or end is not None:
            raise RistrettoError("backward(start=..., end=...) is not supported; run the whole backward pass")
        if kwargs:
            if set(kwargs) != set(self.outputs):
                raise RistrettoError(f"top diff arguments {sorted(kwargs)} do not match the net's outputs "
                                     f"{self.outputs}")
            for name, d in kwargs.items():
                if d.shape[0] != self._shape(name)[0]:
                    raise RistrettoError(f"diff for '{name}' is not batch sized")
        got = self._net.backward(top_diffs=kwargs or None)
        self._diffs = {}
        for name, d in got.items():
            self._diffs[name] = d
        return {out: self._diff(out) for out in set(self._inputs + list(diffs or []))}

    def forward_all(self, blobs=None, **kwargs) -> dict:
        """Forward many items in batches of the net's batch size (the last one padded with
        zeros, the padding dropped from the result), as pycaffe: ``{blob: array}``."""
        all_outs = {out: [] for out in set(self.outputs + list(blobs or []))}
        for batch in self._batch(kwargs):
            outs = self.forward(blobs=blobs, **batch)
            for out, arr in outs.items():
                all_outs[out].extend(np.array(self._net.backend.to_numpy(arr)))
        for out in all_outs:
            all_outs[out] = np.asarray(all_outs[out])
        if kwargs:
            pad = len(next(iter(all_outs.values()))) - len(next(iter(kwargs.values())))
            if pad:
                for out in all_outs:
                    all_outs[out] = all_outs[out][:-pad]
        return all_outs

    def _batch(self, blobs: dict):
        if not blobs:
            yield {}
            return
        num = len(next(iter(blobs.values())))
        batch_size = next(iter(self._blobs.values())).shape[0]
        full, remainder = divmod(num, batch_size)
        for b in range(full):
            i = b * batch_size
            yield {name: blobs[name][i:i + batch_size] for name in blobs}
        if remainder:
            padded = {}
            for name, arr in blobs.items():
                arr = np.asarray(arr)
                padding = np.zeros((batch_size - remainder,) + arr.shape[1:], dtype=arr.dtype)
                padded[name] = np.concatenate([arr[-remainder:], padding])
            yield padded

    def clear_param_diffs(self) -> None:
        """Zero every parameter gradient (Caffe's ``Net::ClearParamDiffs``)."""
        self._net.zero_diffs()

    # -- weights -----------------------------------------------------------------
    def copy_from(self, weights) -> None:
        """Copy weights by layer name from a caffemodel (Caffe's ``CopyTrainedLayersFrom``)."""
        self._net.load_weights(os.fspath(weights))

    def save(self, filename) -> None:
        """Write the net's weights as a caffemodel (binary NetParameter) that Caffe reads."""
        from ..caffe.caffemodel import write_caffemodel

        write_caffemodel(os.fspath(filename), self._net.to_proto(with_weights=True))

    def share_with(self, other: "Net") -> None:
        """Use ``other``'s parameter arrays for layers of the same name (Caffe's ``ShareTrainedLayersWith``)."""
        self._net.share_weights_from(other._net)
        self._layers = [Layer(layer) for layer in self._net.layers]

    def close(self) -> None:
        """Close the data layers' databases and threads (ours; pycaffe frees them with the net)."""
        self._net.close()

    def __repr__(self) -> str:
        return f"<pycaffe Net {self._net.name!r}: {len(self._layers)} layers, inputs {self._inputs}, " \
               f"outputs {self.outputs}>"
