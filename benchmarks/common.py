"""Helpers shared by the benchmarks: nets with a chosen batch, random weights, timing."""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RISTRETTO_SHARED", REPO.parent / "shared"))


def emit(record: dict) -> None:
    print(json.dumps(record, sort_keys=False), flush=True)


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries
    ru_maxrss across exec, so a child would report its parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def deploy_with_batch(prototxt: str, batch: int, out: Path) -> Path:
    """Copy a deploy prototxt with its Input batch dimension set to ``batch``."""
    from google.protobuf import text_format

    from ristretto_cli.caffe.prototxt import read_net

    net = read_net(prototxt)
    for layer in net.layer:
        if layer.type == "Input":
            for shape in layer.input_param.shape:
                shape.dim[0] = batch
    out.write_text(text_format.MessageToString(net))
    return out


def random_weights(prototxt: Path, out: Path, seed: int = 0) -> Path:
    from ristretto_cli.cli import main

    try:
        main(["init", "--model", str(prototxt), "--output", str(out), "--seed", str(seed), "--filler", "xavier"])
    except SystemExit as exc:
        if exc.code:
            raise
    return out


def time_per_call(fn, min_time: float = 2.0, warmup: int = 2) -> float:
    """Median seconds per call over at least ``min_time`` seconds."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_time or len(times) < 5:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


if __name__ == "__main__":
    sys.exit("import me")
