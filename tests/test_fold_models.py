"""BatchNorm folding on the real definitions in models/ (ResNet-50, MobileNet v1 and v2):
random weights with non-trivial BatchNorm statistics, deploy nets at 224x224 and batch 1,
every blob's float output unchanged within 1e-5 relative, and no BatchNorm or Scale left."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import REPO
from ristretto_cli.backend import Backend
from ristretto_cli.caffe.caffemodel import write_caffemodel
from ristretto_cli.caffe.prototxt import read_net
from ristretto_cli.net import Net
from ristretto_cli.quantize.fold import fold_files
from tests import small_nets

#: net -> (BatchNorm layers, Scale layers) in its deploy definition
MODELS = {"resnet50": (53, 53), "mobilenet_v1": (27, 27), "mobilenet_v2": (53, 53)}


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


@pytest.mark.parametrize("name", list(MODELS))
def test_fold_keeps_the_float_outputs_of_the_model(tmp_path, name):
    model = REPO / "models" / name / "deploy.prototxt"
    net = Net(read_net(str(model)), "TEST", backend=Backend(np, seed=0))
    assert net.blob_shapes["data"] == (1, 3, 224, 224)
    small_nets.random_weights(net, seed=7)
    bns = [l for l in net.layers if l.type == "BatchNorm"]
    scales = [l for l in net.layers if l.type == "Scale"]
    assert (len(bns), len(scales)) == MODELS[name]
    for bn in bns:   # the statistics are really non-trivial: scale factor != 1, mean != 0, var != 1
        assert bn.blobs[2][0] != 1 and np.any(bn.blobs[0] != 0) and np.any(bn.blobs[1] != bn.blobs[2][0])
    for sc in scales:
        assert np.any(sc.blobs[0] != 1) and len(sc.blobs) == 2 and np.any(sc.blobs[1] != 0)
    weights = tmp_path / "w.caffemodel"
    write_caffemodel(weights, net.to_proto(with_weights=True))

    folded = fold_files(str(model), str(weights), str(tmp_path / "f.prototxt"), str(tmp_path / "f.caffemodel"))
    # every BatchNorm of these nets follows a Convolution whose output feeds nothing else
    assert not folded.kept, folded.kept
    assert len(folded.folds) == len(bns)
    assert {f.batchnorm for f in folded.folds} == {l.name for l in bns}
    assert {f.scale for f in folded.folds} == {l.name for l in scales}
    assert {net.layer(f.into).type for f in folded.folds} == {"Convolution"}
    fparam = read_net(str(tmp_path / "f.prototxt"))
    assert not {lp.type for lp in fparam.layer} & {"BatchNorm", "Scale"}
    fnet = Net(fparam, "TEST", backend=Backend(np))
    fnet.load_weights(str(tmp_path / "f.caffemodel"))

    x = np.random.default_rng(1).normal(0, 1, (1, 3, 224, 224)).astype(np.float32)
    net.forward({"data": x})
    before = {k: np.asarray(v, np.float64) for k, v in net.blobs.items()}
    fnet.forward({"data": x})
    after = {k: np.asarray(v, np.float64) for k, v in fnet.blobs.items()}
    # a renamed BatchNorm top (MobileNet v2's linear bottlenecks) is gone, with the Splits named after it
    common = set(after) & set(before)
    assert len(common) > 0.5 * len(after) and "prob" in common
    errors = {k: _rel(after[k], before[k]) for k in common}
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-5, (worst, errors[worst])
    assert errors["prob"] < 1e-5 and np.argmax(after["prob"]) == np.argmax(before["prob"])
    print(f"{name}: {len(folded.folds)} folds, max relative error {errors[worst]:.2e} ('{worst}'), "
          f"prob {errors['prob']:.2e}")
