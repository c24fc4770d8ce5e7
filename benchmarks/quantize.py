"""The word-width search on LeNet / MNIST t10k (dynamic fixed point, 100 batches of 100
per candidate, the trained V2 caffemodel from ../shared): wall time, and the layer
forwards it ran next to those the original's procedure runs for the same choices
(a full forward of every batch for every candidate). The original's wall time for this
search, 184 s on 2 cores, is a reference figure from the issue, not measured here.

    python -m benchmarks.quantize                  # DFP, with and without early stopping
    python -m benchmarks.quantize --iterations 20 --mode minifloat
    python -m benchmarks.quantize --mode all       # the three trimming modes

Each record says how many candidate batches were scored and how many early stopping
saved (``--no-early-stop`` scores every batch of every candidate, as the original).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from .common import REPO, SHARED, emit, peak_rss_mb

ORIGINAL_REFERENCE_S = 184.0  # dynamic fixed point, iterations 100, LeNet, 2 cores (from the issue)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--mode", default="dynamic_fixed_point")
    ap.add_argument("--here", action="store_true",
                    help="measure in this process (default: a fresh one, so the peak memory is the search's own)")
    ap.add_argument("--early-stop", choices=("on", "off", "both"), default=None,
                    help="default: both for one dynamic fixed point run, on otherwise")
    args = ap.parse_args(argv)
    if not args.here:
        modes = ["dynamic_fixed_point", "minifloat", "integer_power_of_2_weights"] if args.mode == "all" \
            else [args.mode]
        early = args.early_stop or ("both" if args.mode == "dynamic_fixed_point" else "on")
        for mode in modes:
            for flag in (("on", "off") if early == "both" else (early,)):
                out = subprocess.run([sys.executable, "-m", "benchmarks.quantize", "--here", "--iterations",
                                      str(args.iterations), "--mode", mode, "--early-stop", flag],
                                     cwd=REPO, capture_output=True, text=True)
                if out.returncode:
                    emit({"bench": "quantize_cpu", "net": "lenet", "mode": mode, "error": out.stderr.strip()[-300:]})
                    continue
                emit(json.loads(out.stdout.strip().splitlines()[-1]))
        return
    from .lenet import bench_lenet

    root = SHARED
    needed = [root / "data" / "mnist" / "t10k-images-idx3-ubyte.gz",
              root / "data" / "mnist" / "train-images-idx3-ubyte.gz",
              root / "data" / "caffemodels" / "lenet_v2" / "lenet_iter_10000.caffemodel",
              root / "zoo" / "lenet" / "lenet_train_test.prototxt"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        emit({"bench": "quantize_cpu", "net": "lenet", "skipped": f"{missing[0]} not present (../shared is optional)"})
        return
    load = round(os.getloadavg()[0], 2)
    r = bench_lenet(iterations=args.iterations, trimming_mode=args.mode, early_stop=args.early_stop != "off")
    rec = {"bench": "quantize_cpu", "net": "lenet", "trimming_mode": r["trimming_mode"],
           "iterations": r["iterations"], "wall_s": round(r["wall_s"], 2), "cpu_s": round(r["cpu_s"], 2),
           "layer_forwards": r["layer_forwards"], "original_layer_forwards": r["original_layer_forwards"],
           "original_over_ours_layer_forwards": round(r["original_layer_forwards"] / max(1, r["layer_forwards"]), 2),
           "choices": r["choices"], "baseline": r["baseline"], "final_score": r["final_score"],
           "threads": r.get("threads"), "early_stop": r["early_stop"], "batches_scored": r["batches_scored"],
           "batches_saved": r["batches_saved"], "candidates_decided_early": r["candidates_decided_early"],
           "peak_rss_mb": round(peak_rss_mb(), 1), "load_avg_1m_at_start": load}
    if args.mode == "dynamic_fixed_point" and args.iterations == 100:
        rec["original_reference_s"] = ORIGINAL_REFERENCE_S
        rec["original_reference_over_ours_wall"] = round(ORIGINAL_REFERENCE_S / r["wall_s"], 2)
        rec["note"] = ("original_reference_s: the original Ristretto's wall time for this search quoted in the "
                       "issue (2 cores), not measured here")
    emit(rec)


if __name__ == "__main__":
    main()
