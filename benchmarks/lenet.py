"""LeNet / MNIST t10k for the quantize benchmark: LMDBs from ../shared, the zoo prototxt
reading them, and one timed search."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from ristretto_cli.quantize.procedure import DEFAULT_CACHE_BYTES, quantize
from ristretto_cli.quantize.rewrite import DYNAMIC_FIXED_POINT

from .common import SHARED


def lenet_with_sources(test_lmdb: str, train_lmdb: str) -> str:
    """The zoo's lenet_train_test.prototxt text with its two LMDB sources replaced."""
    text = (SHARED / "zoo" / "lenet" / "lenet_train_test.prototxt").read_text()
    text = text.replace("examples/mnist/mnist_train_lmdb", str(train_lmdb))
    return text.replace("examples/mnist/mnist_test_lmdb", str(test_lmdb))


def make_lenet_workdir(workdir: str, train_records: int | None = 640,
                       test_records: int | None = None) -> tuple[str, str]:
    """MNIST LMDBs (t10k for TEST, the first ``train_records`` training images for the
    statistics) and a LeNet prototxt that reads them. Returns (model, weights)."""
    from ristretto_cli.data.converters import convert_mnist

    mnist = SHARED / "data" / "mnist"
    wd = Path(workdir)
    test_db, train_db = wd / "mnist_test_lmdb", wd / "mnist_train_lmdb"
    if not test_db.exists():
        convert_mnist(mnist / "t10k-images-idx3-ubyte.gz", mnist / "t10k-labels-idx1-ubyte.gz", test_db,
                      limit=test_records)
    if not train_db.exists():
        convert_mnist(mnist / "train-images-idx3-ubyte.gz", mnist / "train-labels-idx1-ubyte.gz", train_db,
                      limit=train_records)
    model = wd / "lenet_train_test.prototxt"
    model.write_text(lenet_with_sources(str(test_db), str(train_db)))
    weights = SHARED / "data" / "caffemodels" / "lenet_v2" / "lenet_iter_10000.caffemodel"
    return str(model), str(weights)


def bench_lenet(iterations: int = 100, trimming_mode: str = DYNAMIC_FIXED_POINT, workdir: str | None = None,
                gpu: int | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES, threads: int | None = None,
                early_stop: bool = True) -> dict:
    """Quantize LeNet (trained weights from ../shared) on MNIST t10k and time it.

    Returns {wall_s, layer_forwards, original_layer_forwards, choices, baseline,
    final_score, iterations, trimming_mode}. wall_s covers the search only, not
    building the LMDBs. The original needs ~184 s on 2 cores for dynamic fixed
    point with iterations=100.
    """
    with tempfile.TemporaryDirectory(prefix="ristretto-bench-") as tmp:
        wd = workdir or tmp
        model, weights = make_lenet_workdir(wd)
        out = os.path.join(wd, "lenet_quantized.prototxt")
        t0, c0 = time.perf_counter(), time.process_time()
        outcome = quantize(model, weights, out, trimming_mode, iterations=iterations, gpu=gpu,
                           cache_bytes=cache_bytes, threads=threads, early_stop=early_stop)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rep = outcome.report
    return {"wall_s": wall, "cpu_s": cpu, "layer_forwards": rep["layer_forwards"],
            "original_layer_forwards": rep["original_layer_forwards"], "choices": rep["chosen"],
            "baseline": rep["baseline"], "final_score": rep["final"]["score"],
            "candidates": [(c["category"], c["bit_width"], c["score"]) for c in rep["candidates"]],
            "iterations": iterations, "trimming_mode": trimming_mode, "threads": rep["threads"],
            "batch_cache": rep["batch_cache"], "early_stop": rep["early_stop"],
            "batches_scored": rep["batches_scored"], "batches_saved": rep["batches_saved"],
            "candidates_decided_early": rep["candidates_decided_early"]}
