"""CPU/GPU parity of the non-vision layers: the same code through CuPy must give NumPy's
results (skipped where CuPy or a GPU is missing)."""
from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from ristretto_cli.backend import Backend
from ristretto_cli.layers import TEST, TRAIN, create_layer
from ristretto_cli.proto import caffe_pb2

cupy = pytest.importorskip("cupy")
try:
    cupy.cuda.runtime.getDeviceCount()
except Exception:  # pragma: no cover - depends on the machine
    pytest.skip("no CUDA device", allow_module_level=True)

X = (2, 3, 4, 5)
CASES = [
    ('type: "ReLU" relu_param { negative_slope: 0.1 }', [X], TRAIN),
    ('type: "PReLU"', [X], TRAIN),
    ('type: "Sigmoid"', [X], TRAIN),
    ('type: "TanH"', [X], TRAIN),
    ('type: "ELU"', [X], TRAIN),
    ('type: "BNLL"', [X], TRAIN),
    ('type: "AbsVal"', [X], TRAIN),
    ('type: "Exp" exp_param { base: 2 scale: 0.5 }', [X], TRAIN),
    ('type: "Power" power_param { power: 2 scale: 0.5 shift: 1 }', [X], TRAIN),
    ('type: "Softmax"', [X], TRAIN),
    ('type: "SoftmaxWithLoss" loss_param { ignore_label: 1 }', [(6, 4), (6,)], TRAIN),
    ('type: "Accuracy" top: "a" top: "b" accuracy_param { top_k: 2 }', [(6, 4), (6,)], TEST),
    ('type: "EuclideanLoss"', [X, X], TRAIN),
    ('type: "Concat"', [X, X], TRAIN),
    ('type: "Eltwise" eltwise_param { operation: MAX }', [X, X, X], TRAIN),
    ('type: "Eltwise" eltwise_param { operation: PROD }', [X, X], TRAIN),
    ('type: "Slice" top: "a" top: "b" slice_param { axis: 3 slice_point: 2 }', [X], TRAIN),
    ('type: "Crop" crop_param { offset: 1 }', [X, (1, 1, 2, 3)], TRAIN),
    ('type: "ArgMax" argmax_param { top_k: 3 out_max_val: true }', [X], TEST),
    ('type: "BatchNorm"', [X], TRAIN),
    ('type: "BatchNorm"', [X], TEST),
    ('type: "Scale" scale_param { bias_term: true filler { type: "gaussian" } }', [X], TRAIN),
    ('type: "Bias" bias_param { axis: 2 }', [X, (4, 5)], TRAIN),
]


def _inputs(shapes, text):
    rng = np.random.default_rng(0)
    out = []
    for i, s in enumerate(shapes):
        if i == 1 and ("Loss" in text and "Euclid" not in text or "Accuracy" in text):
            out.append(rng.integers(0, 4, size=s).astype(np.float32))
        else:
            out.append(rng.standard_normal(s).astype(np.float32))
    return out


def _run(backend, text, shapes, phase):
    param = text_format.Parse('name: "l" ' + text, caffe_pb2.LayerParameter())
    layer = create_layer(param, phase, backend)
    layer.setup(shapes)
    layer.blobs = [backend.xp.asarray(np.random.default_rng(1).uniform(0.5, 1.5, b.shape).astype(np.float32))
                   for b in layer.blobs]
    if param.type == "BatchNorm":
        layer.blobs[2][...] = 1
    layer.reshape(shapes)
    bottoms = [backend.xp.asarray(b) for b in _inputs(shapes, text)]
    tops = layer.forward(bottoms)
    out = [backend.to_numpy(t) for t in tops]
    if phase == TRAIN:
        layer.zero_diffs()
        diffs = [backend.xp.asarray(np.random.default_rng(2).standard_normal(t.shape).astype(np.float32))
                 for t in tops]
        grads = layer.backward(diffs, bottoms, tops, [True] + [False] * (len(bottoms) - 1))
        out += [backend.to_numpy(g) for g in grads if g is not None]
        out += [backend.to_numpy(d) for d in layer.diffs]
    return out


@pytest.mark.parametrize("text,shapes,phase", CASES, ids=[c[0].split('"')[1] + str(i) for i, c in enumerate(CASES)])
def test_cpu_gpu_parity(text, shapes, phase):
    cpu = _run(Backend(np, 0), text, shapes, phase)
    gpu = _run(Backend(cupy, 0, device=0), text, shapes, phase)
    assert len(cpu) == len(gpu)
    for a, b in zip(cpu, gpu):
        np.testing.assert_allclose(b, a, rtol=2e-5, atol=1e-6)
