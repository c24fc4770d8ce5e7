"""Forward speed on every deploy net of models/ and ../shared/zoo: ours against OpenCV DNN.

    python -m benchmarks.zoo                     # every net, batch 1 and 16
    python -m benchmarks.zoo --nets resnet50 mobilenet_v2 --batches 4 --rounds 5

Random weights (``ristretto init --filler xavier``; BatchNorm statistics and Scale factors
drawn around 1, as tests/test_opencv_parity.py does, so values stay finite through deep
BatchNorm nets); both implementations read the same
prototxt and .caffemodel and get the same input in one process. OpenCV runs with as
many threads as our BLAS (``cv2.setNumThreads``). Per net and batch the two alternate
for ``--rounds`` rounds (ours, OpenCV, ours, ...); a round repeats its forward pass for
at least ``--min-time`` seconds and keeps the mean; the best round of each counts. One
JSON record per (net, batch) with both times and the ratio (ours / OpenCV speed: above 1
means we are faster), the load average before and after, then the geometric mean.
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import REPO, SHARED, deploy_with_batch, emit, random_weights


def deploy_nets() -> dict[str, Path]:
    """{name: prototxt} of every deploy net (an Input layer or net-level inputs, no Data layer)."""
    from ristretto_cli.caffe.prototxt import read_net

    out = {}
    roots = [("", REPO / "models"), ("zoo/", SHARED / "zoo")]
    for prefix, root in roots:
        if not root.is_dir():
            continue
        for p in sorted(root.rglob("*.prototxt")):
            if "solver" in p.name:
                continue
            try:
                net = read_net(str(p))
            except Exception:  # noqa: BLE001 - not a net we can benchmark
                continue
            types = {l.type for l in net.layer}
            if "Data" in types or not ("Input" in types or len(net.input)):
                continue
            rel = p.relative_to(root).with_suffix("").as_posix()
            name = prefix + (rel[: -len("/deploy")] if rel.endswith("/deploy") else rel)
            out[name] = p
    return out


def _input_shape(param) -> list[int]:
    for l in param.layer:
        if l.type == "Input":
            return [int(d) for d in l.input_param.shape[0].dim]
    raise ValueError("no Input layer")


def _best_round_seconds(fn, min_time: float) -> float:
    """Mean seconds per call over one round of at least ``min_time`` (>= 1 call)."""
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / calls


def randomize_normalization(model: Path, seed: int = 0) -> None:
    """BatchNorm statistics (mean ~ 0, variance ~ 1, factor 1) and Scale weights ~ 1, bias ~ 0:
    ``init`` fills only blobs of >= 2 axes, and zero statistics overflow deep nets."""
    from ristretto_cli.caffe.blobproto import array_to_blob, blob_to_array
    from ristretto_cli.caffe.caffemodel import read_caffemodel, write_caffemodel

    rng = np.random.default_rng(seed)
    param = read_caffemodel(model)
    touched = False
    for lp in param.layer:
        if lp.type not in ("BatchNorm", "Scale"):
            continue
        arrays = [blob_to_array(b) for b in lp.blobs]
        if lp.type == "BatchNorm":
            c = arrays[0].shape
            arrays = [rng.normal(0.0, 0.1, c).astype(np.float32), rng.uniform(0.5, 1.5, c).astype(np.float32),
                      np.ones(1, np.float32)]
        else:
            arrays = [(rng.uniform(0.5, 1.5, a.shape) if i == 0 else rng.normal(0, 0.1, a.shape)).astype(np.float32)
                      for i, a in enumerate(arrays)]
        del lp.blobs[:]
        for a in arrays:
            lp.blobs.add().CopyFrom(array_to_blob(a))
        touched = True
    if touched:
        write_caffemodel(model, param)


def blas_threads() -> int:
    from threadpoolctl import threadpool_info

    counts = [i.get("num_threads", 1) for i in threadpool_info() if i.get("user_api") == "blas"]
    return int(max(counts)) if counts else 1


def measure(name: str, src: Path, batch: int, workdir: Path, rounds: int, min_time: float) -> dict:
    import cv2

    from ristretto_cli.backend import get_backend
    from ristretto_cli.caffe.prototxt import read_net
    from ristretto_cli.net.loading import load_net

    safe = name.replace("/", "_")
    proto = deploy_with_batch(str(src), batch, workdir / f"{safe}_{batch}.prototxt")
    weights = random_weights(proto, workdir / f"{safe}.caffemodel")
    randomize_normalization(weights)
    shape = _input_shape(read_net(str(proto)))
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)

    net = load_net(str(proto), str(weights), "TEST", get_backend(None, 0))
    feed = {net.inputs[0]: x}
    cvnet = cv2.dnn.readNetFromCaffe(str(proto), str(weights))
    cvnet.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)

    def ours():
        net.forward(feed)

    def theirs():
        cvnet.setInput(x)
        cvnet.forward()

    load_before = os.getloadavg()[0]
    ours(), theirs()  # warm up (allocations, plans)
    t_ours, t_cv = [], []
    for _ in range(rounds):
        t_ours.append(_best_round_seconds(ours, min_time))
        t_cv.append(_best_round_seconds(theirs, min_time))
    a, b = min(t_ours), min(t_cv)
    return {"bench": "zoo_forward", "net": name, "batch": batch, "layers": len(net.layers),
            "ours_ms": round(a * 1000, 3), "opencv_ms": round(b * 1000, 3),
            "ours_images_per_s": round(batch / a, 1), "opencv_images_per_s": round(batch / b, 1),
            "ours_over_opencv_speed": round(b / a, 3), "rounds": rounds,
            "load_avg_1m_before": round(load_before, 2), "load_avg_1m_after": round(os.getloadavg()[0], 2)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", nargs="*", help="names (see --list); default: every deploy net")
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 16])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=0.3)
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args(argv)
    try:
        import cv2
    except ImportError:
        emit({"bench": "zoo_forward", "skipped": "opencv-python is not installed"})
        return
    nets = deploy_nets()
    if args.list:
        for k, v in nets.items():
            print(k, v)
        return
    if args.nets:
        unknown = [n for n in args.nets if n not in nets]
        if unknown:
            raise SystemExit(f"unknown nets {unknown}; choose from {', '.join(nets)}")
        nets = {n: nets[n] for n in args.nets}
    threads = blas_threads()
    cv2.setNumThreads(threads)
    emit({"bench": "zoo_setup", "blas_threads": threads, "opencv_threads": cv2.getNumThreads(),
          "opencv": cv2.__version__, "numpy": np.__version__, "load_avg": [round(v, 2) for v in os.getloadavg()],
          "nets": list(nets), "batches": args.batches})
    ratios = {b: [] for b in args.batches}
    with tempfile.TemporaryDirectory() as tmp:
        for name, src in nets.items():
            for batch in args.batches:
                try:
                    rec = measure(name, src, batch, Path(tmp), args.rounds, args.min_time)
                except Exception as exc:  # noqa: BLE001 - one net failing must not stop the table
                    emit({"bench": "zoo_forward", "net": name, "batch": batch, "error": str(exc)[-300:]})
                    continue
                ratios[batch].append(rec["ours_over_opencv_speed"])
                emit(rec)
    geo = {str(b): round(math.exp(sum(map(math.log, r)) / len(r)), 3) for b, r in ratios.items() if r}
    emit({"bench": "zoo_forward_geomean", "ours_over_opencv_speed": geo,
          "nets": {str(b): len(r) for b, r in ratios.items()},
          "load_avg": [round(v, 2) for v in os.getloadavg()]})


if __name__ == "__main__":
    main()
