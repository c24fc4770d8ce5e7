"""`quantize --fold --whole-graph` end to end on the real definitions in models/: their
train_val nets with the Data layers rewritten to a synthetic LMDB (random uint8 images of
the crop size, batch 2) and random weights (BatchNorm with non-trivial statistics). After
the search every blob of the quantized TEST net is on its format's grid."""
from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest

from conftest import REPO
from ristretto_cli.backend import Backend
from ristretto_cli.caffe.caffemodel import read_caffemodel, write_caffemodel
from ristretto_cli.caffe.prototxt import parse_net_text, read_net
from ristretto_cli.net import Net
from ristretto_cli.quantize.fold import load_folded
from tests import small_nets
from tests.test_whole_graph_quantize import _write_db, check_every_blob_on_its_grid

BATCH, RECORDS = 2, 4

#: net -> (crop size, BatchNorm layers, extra quantize arguments)
MODELS = {"resnet50": (224, 53, []), "mobilenet_v1": (224, 27, []), "mobilenet_v2": (224, 53, []),
          # the TEST outputs begin with the auxiliary heads' losses: score the main head
          "googlenet": (224, 0, ["--score-blob", "loss3/top-1"]), "squeezenet_v1.1": (227, 0, [])}


def synthetic_train_val(name: str, db) -> str:
    """models/NAME/train_val.prototxt reading ``db`` in both phases, batch BATCH."""
    text = (REPO / "models" / name / "train_val.prototxt").read_text()
    text, n = re.subn(r'source: "[^"]*"', f'source: "{db}"', text)
    assert n == 2
    text, n = re.subn(r"batch_size: \d+", f"batch_size: {BATCH}", text)
    assert n == 2
    return text


def make_model(d, name, seed=0):
    crop = MODELS[name][0]
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(RECORDS, 3, crop, crop)).astype(np.uint8)
    _write_db(d / "db", images, rng.integers(0, 1000, RECORDS))
    text = synthetic_train_val(name, d / "db")
    net = Net(parse_net_text(text), "TEST", backend=Backend(np, seed=seed))
    try:
        small_nets.random_weights(net, seed)
        model, weights = d / "train_val.prototxt", d / "random.caffemodel"
        model.write_text(text)
        write_caffemodel(weights, net.to_proto(with_weights=True))
    finally:
        net.close()
    return str(model), str(weights)


@pytest.mark.parametrize("name", list(MODELS))
def test_fold_whole_graph_quantize_on_the_model(tmp_path, name):
    from ristretto_cli.cli import run

    t0 = time.perf_counter()
    model, weights = make_model(tmp_path, name)
    t1 = time.perf_counter()
    q, rep = tmp_path / "q.prototxt", tmp_path / "r.json"
    status = run(["quantize", "--model", model, "--weights", weights, "--model-quantized", str(q),
                  "--trimming-mode", "dynamic_fixed_point", "--iterations", "1", "--stats-batches", "1",
                  "--error-margin", "100", "--widths", "8", "--fold", "--whole-graph", "--report", str(rep)]
                 + MODELS[name][2])
    assert status == 0
    t2 = time.perf_counter()
    report = json.loads(rep.read_text())
    n_bn = MODELS[name][1]
    assert report["whole_graph"] and report["fold"] and len(report["folds"]) == n_bn
    assert not report["kept_batchnorm"]
    param = read_net(str(q))
    types = {lp.type for lp in param.layer}
    assert not types & {"BatchNorm", "Scale", "Pooling", "Eltwise", "Concat", "ReLU", "Convolution",
                        "InnerProduct"}, types
    net = Net(param, "TEST", backend=Backend(np))
    try:
        # the folded weights (written by --fold even when nothing folded)
        load_folded(net, read_caffemodel(str(q.with_suffix(".caffemodel"))))
        checked = check_every_blob_on_its_grid(net)
    finally:
        net.close()
    assert checked > 20
    t3 = time.perf_counter()
    print(f"{name}: make {t1 - t0:.1f} s, quantize {t2 - t1:.1f} s, grid check {t3 - t2:.1f} s "
          f"({checked} blobs on their grid)")
