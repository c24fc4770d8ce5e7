"""README-level accuracy on real data: `ristretto convert mnist` + `ristretto benchmark`
reproduce the trained LeNets' MNIST t10k accuracies listed in ../shared/data/MANIFEST.md
(V2 caffemodel 99.11 %, V1 caffemodel with the 2014 V1 prototxt 99.05 %), i.e. exactly
9911 and 9905 of the 10000 test images (100 batches of 100)."""
from __future__ import annotations

import json

import pytest

from ristretto_cli.backend import one_blas_thread
from ristretto_cli.cli import main

from conftest import REPO, run_cli, shared_path

TRAIN_SOURCE = "examples/mnist/mnist_train_lmdb"
TEST_SOURCE = "examples/mnist/mnist_test_lmdb"


def _with_sources(prototxt, out, db):
    """A copy of a train/test prototxt whose data layers read ``db`` (both phases:
    `benchmark` builds only the TEST net, but no path of the Caffe tree should remain)."""
    text = prototxt.read_text()
    assert TEST_SOURCE in text
    out.write_text(text.replace(TEST_SOURCE, str(db)).replace(TRAIN_SOURCE, str(db)))
    return out


@pytest.fixture(scope="module")
def mnist_test_db(tmp_path_factory):
    mnist = shared_path("data", "mnist")
    db = tmp_path_factory.mktemp("mnist") / "mnist_test_lmdb"
    try:
        main(["convert", "mnist", str(mnist / "t10k-images-idx3-ubyte.gz"),
              str(mnist / "t10k-labels-idx1-ubyte.gz"), str(db), "--quiet"])
    except SystemExit as exc:
        assert not exc.code, f"ristretto convert mnist failed ({exc.code})"
    return db


def _benchmark(model, weights, tmp_path, capsys):
    report = tmp_path / "scores.json"
    with one_blas_thread():  # 2 cores shared with the other test workers
        code, out, err = run_cli(["benchmark", "--model", str(model), "--weights", str(weights),
                                  "--iterations", "100", "--json", str(report)], capsys)
    assert code == 0, err
    data = json.loads(report.read_text())
    assert data["iterations"] == 100 and len(data["batches"]) == 100
    assert "accuracy" in out  # the summary table
    return data


@pytest.mark.parametrize("case", ["v2", "v1"])
def test_trained_lenet_accuracy_on_mnist_t10k(case, mnist_test_db, tmp_path, capsys):
    if case == "v2":
        # The repository's copy of Caffe's LeNet (identical to the zoo's) + the V2 caffemodel.
        prototxt = REPO / "models" / "lenet" / "lenet_train_test.prototxt"
        weights = shared_path("data", "caffemodels", "lenet_v2", "lenet_iter_10000.caffemodel")
        expected = 9911
    else:
        # Caffe of Nov 2014: V1 NetParameter (`layers`, enum types) in both files.
        prototxt = shared_path("zoo", "bvlc_caffe_2014_v1_format", "mnist", "lenet_train_test.prototxt")
        weights = shared_path("data", "caffemodels", "lenet_v1_format", "lenet_iter_10000.caffemodel")
        expected = 9905
    model = _with_sources(prototxt, tmp_path / "lenet_train_test.prototxt", mnist_test_db)
    data = _benchmark(model, weights, tmp_path, capsys)
    # Every batch is 100 images, so each batch accuracy is a whole count / 100.
    correct = sum(round(b["accuracy"] * 100) for b in data["batches"])
    assert correct == expected
    assert data["means"]["accuracy"] == pytest.approx(expected / 10000, abs=1e-6)
    # The loss is the mean softmax loss: positive, and small for a net this accurate.
    assert 0 < data["means"]["loss"] < 0.1
    assert data["loss_weights"] == {"loss": 1.0}


