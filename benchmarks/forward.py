"""Forward images/s on the CPU: ours and OpenCV's DNN on the same weights, one
process per (net, implementation) so peak memory is that run's own.

    python -m benchmarks.forward            # all nets, both implementations
    python -m benchmarks.forward --one lenet ours   (internal: one measurement)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .common import REPO, deploy_with_batch, emit, peak_rss_mb, random_weights, time_per_call

NETS = {"lenet": ("models/lenet/lenet.prototxt", 64), "caffenet": ("models/caffenet/deploy.prototxt", 10)}


def measure(net_name: str, impl: str, prototxt: Path, weights: Path, batch: int) -> dict:
    rng = np.random.default_rng(0)
    if impl == "ours":
        from ristretto_cli.backend import get_backend
        from ristretto_cli.net.loading import load_net

        net = load_net(str(prototxt), str(weights), "TEST", get_backend(None, 0))
        x = rng.standard_normal(net.blob_shapes[net.inputs[0]]).astype(np.float32)
        feed = {net.inputs[0]: x}
        seconds = time_per_call(lambda: net.forward(feed))
    else:
        import cv2

        cvnet = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
        cvnet.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        from ristretto_cli.caffe.prototxt import read_net

        shape = [d for l in read_net(str(prototxt)).layer if l.type == "Input" for d in l.input_param.shape[0].dim]
        x = rng.standard_normal(shape).astype(np.float32)

        def run():
            cvnet.setInput(x)
            cvnet.forward()

        seconds = time_per_call(run)
    return {"bench": "forward_cpu", "net": net_name, "impl": impl, "batch": batch,
            "ms_per_batch": round(seconds * 1000, 3), "images_per_s": round(batch / seconds, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", nargs=2, metavar=("NET", "IMPL"))
    ap.add_argument("--prototxt")
    ap.add_argument("--weights")
    args = ap.parse_args(argv)
    if args.one:
        net_name, impl = args.one
        emit(measure(net_name, impl, Path(args.prototxt), Path(args.weights), NETS[net_name][1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for net_name, (proto, batch) in NETS.items():
            prototxt = deploy_with_batch(str(REPO / proto), batch, tmp / f"{net_name}.prototxt")
            weights = random_weights(prototxt, tmp / f"{net_name}.caffemodel")
            results = {}
            for impl in ("ours", "opencv"):
                out = subprocess.run([sys.executable, "-m", "benchmarks.forward", "--one", net_name, impl,
                                      "--prototxt", str(prototxt), "--weights", str(weights)],
                                     cwd=REPO, capture_output=True, text=True)
                if out.returncode:
                    emit({"bench": "forward_cpu", "net": net_name, "impl": impl, "error": out.stderr.strip()[-300:]})
                    continue
                rec = json.loads(out.stdout.strip().splitlines()[-1])
                results[impl] = rec
                emit(rec)
            if len(results) == 2:
                emit({"bench": "forward_cpu_ratio", "net": net_name, "batch": batch,
                      "ours_over_opencv_speed": round(results["ours"]["images_per_s"] /
                                                      results["opencv"]["images_per_s"], 3),
                      "ours_over_opencv_peak_rss": round(results["ours"]["peak_rss_mb"] /
                                                         results["opencv"]["peak_rss_mb"], 3)})


if __name__ == "__main__":
    main()
