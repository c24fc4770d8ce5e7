"""OnnxGraph: the ONNX graph under construction, and where each Caffe blob lives in it.

ONNX tensors are written once; Caffe blobs are not (in-place layers, and the
Ristretto layers trim their bottom blob in place so that every later reader sees the
trimmed values). ``OnnxGraph`` keeps, for every Caffe blob, the ONNX tensor that holds
its current value, and groups of blobs that share one array (a Split's tops, a
TEST-phase Dropout): rebinding one member of a group rebinds them all, as an in-place
write to a shared array would.
"""
from __future__ import annotations

import numpy as np

from ..errors import RistrettoError


class OnnxGraph:
    def __init__(self, opset: int):
        from onnx import helper, numpy_helper

        self._helper, self._numpy_helper = helper, numpy_helper
        self.opset = int(opset)
        self.nodes: list = []
        self.initializers: list = []
        self.inputs: list = []  # ValueInfoProto
        self.used: set[str] = set()
        self.current: dict[str, str] = {}  # caffe blob -> onnx tensor
        self.group: dict[str, int] = {}  # caffe blob -> alias group id
        self._next_group = 0
        self.domains: dict[str, int] = {}  # extra opset imports (QONNX)
        self._consts: dict[tuple, str] = {}

    # -- names ------------------------------------------------------------
    def fresh(self, base: str) -> str:
        """A tensor/node name not used before, ``base`` itself when it is free."""
        base = base or "t"
        name, i = base, 1
        while name in self.used:
            name = f"{base}_{i}"
            i += 1
        self.used.add(name)
        return name

    # -- blobs ------------------------------------------------------------
    def tensor_of(self, blob: str) -> str:
        try:
            return self.current[blob]
        except KeyError:
            raise RistrettoError(f"blob '{blob}' has no value in the exported graph") from None

    def bind(self, blob: str, tensor: str) -> None:
        """``blob`` now holds ``tensor`` (a new array: it leaves any alias group)."""
        self.current[blob] = tensor
        self.group[blob] = self._next_group
        self._next_group += 1

    def alias(self, blob: str, of: str) -> None:
        """``blob`` is the same array as ``of`` (Split top, TEST-phase Dropout)."""
        self.current[blob] = self.tensor_of(of)
        self.group[blob] = self.group[of]

    def rebind_in_place(self, blob: str, tensor: str) -> None:
        """An in-place write to ``blob``'s array: every blob sharing it now holds ``tensor``."""
        g = self.group.get(blob)
        for b, gb in self.group.items():
            if gb == g:
                self.current[b] = tensor
        self.current[blob] = tensor

    # -- nodes and constants ----------------------------------------------
    def node(self, op: str, inputs: list[str], name: str, n_out: int = 1, outputs: list[str] | None = None,
             domain: str | None = None, **attrs) -> list[str]:
        """Append a node; returns its output tensor names (fresh, based on ``name``)."""
        outs = outputs or [self.fresh(name if n_out == 1 else f"{name}:{i}") for i in range(n_out)]
        node_name = self.fresh(f"{name}/{op}")
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(self._helper.make_node(op, inputs, outs, name=node_name, domain=domain, **attrs))
        return outs

    def const(self, base: str, array, dtype=None) -> str:
        """An initializer holding ``array`` (as ``dtype`` if given); returns its name."""
        a = np.asarray(array, dtype=dtype) if dtype is not None else np.asarray(array)
        name = self.fresh(base)
        self.initializers.append(self._numpy_helper.from_array(np.ascontiguousarray(a), name))
        return name

    def scalar(self, value, dtype=np.float32) -> str:
        """A shared scalar initializer (float32 unless told)."""
        key = (np.dtype(dtype).str, float(value))
        if key not in self._consts:
            self._consts[key] = self.const(f"const_{np.dtype(dtype).name}_{value:g}".replace("-", "m"),
                                           np.array(value, dtype=dtype))
        return self._consts[key]

    def int64s(self, base: str, values) -> str:
        return self.const(base, np.asarray(list(values), dtype=np.int64))

    def add_input(self, blob: str, shape) -> str:
        from onnx import TensorProto

        name = self.fresh(blob)
        self.inputs.append(self._helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        self.bind(blob, name)
        return name
