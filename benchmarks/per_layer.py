"""The per-layer search against the original's global one, on LeNet / MNIST and CIFAR-10 full.

Each run is `ristretto quantize --trimming-mode dynamic_fixed_point` in a subprocess at the
original's margin (2 %), `--search global` and `--search per-layer` one after the other on
the same data; one JSON line per run: the score, the cost of the written configuration
(weight bits, bitops, energy), the wall and CPU time of the whole command, the wall time of
each phase, layer forwards, and the chosen widths per layer. A last line per net gives the
per-layer / global ratios. On a machine other jobs share, the CPU time and the layer
forwards are the steadier measures of the work.

    python -m benchmarks.per_layer [--nets lenet cifar10_full] [--objective bitops]
                                   [--lenet-iterations 100] [--cifar-iterations 20] [--workdir W]
                                   [--flags="--activation-range signed"]
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

from .accuracy import Skip, cifar_model, ristretto
from .common import emit
from .lenet import make_lenet_workdir


def run(net: str, model: Path, weights: Path, iterations: int, search: str, objective: str, wd: Path,
        flags: list[str] = (), tag: str = "") -> dict:
    q, report = wd / f"{net}_{search}{tag}.prototxt", wd / f"{net}_{search}{tag}.report.json"
    extra = ["--search", search] + (["--objective", objective] if search == "per-layer" else []) + list(flags)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    _, wall = ristretto(["quantize", "--model", model, "--weights", weights, "--model-quantized", q,
                         "--trimming-mode", "dynamic_fixed_point", "--iterations", iterations, "--quiet",
                         "--report", report, *extra], log=wd / f"{net}_{search}.log")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rep = json.loads(report.read_text())
    total = rep["cost"]["final"]["total"]
    widths = {l["name"]: [l["config"].get("bw_params"), l["config"].get("bw_layer_in")]
              for l in rep["cost"]["final"]["layers"] if l.get("config")}
    out = {"bench": "per_layer", "net": net, "search": search, "flags": list(flags), "iterations": iterations,
           "error_margin": rep["error_margin"], "baseline": rep["baseline"], "score": rep["final"]["score"],
           "weight_bits": total["weight_bits"], "bitops": total["bitops"], "energy_pj": round(total["energy_pj"]),
           "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "search_wall_s": round(rep["wall_s"], 1),
           "widths_w_a": widths,
           "candidates_scored": rep["candidates_scored"], "layer_forwards": rep["layer_forwards"]}
    if "per_layer" in rep:
        out["objective"] = objective
        out["phases_s"] = {k: round(v, 1) for k, v in rep["per_layer"]["wall_s"].items()}
        out["per_layer_scored"] = rep["per_layer"]["scored"]
    return out


def nets(wd: Path, which: list[str]):
    if "lenet" in which:
        model, weights = make_lenet_workdir(str(wd))
        yield "lenet", Path(model), Path(weights)
    if "cifar10_full" in which:
        model, weights = cifar_model("cifar10_full", wd)
        yield "cifar10_full", model, weights


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", nargs="+", default=["lenet", "cifar10_full"], choices=["lenet", "cifar10_full"])
    ap.add_argument("--objective", default="bitops", choices=["bitops", "weight-bits", "energy"])
    ap.add_argument("--lenet-iterations", type=int, default=100, help="batches of 100 MNIST test images")
    ap.add_argument("--cifar-iterations", type=int, default=20, help="batches of 100 CIFAR-10 test images")
    ap.add_argument("--workdir", type=Path, default=None, help="keep (and reuse) the LMDBs here")
    ap.add_argument("--flags", default="",
                    help="more quantize flags for both searches, e.g. '--activation-range signed'")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wd = args.workdir or Path(tmp)
        wd.mkdir(parents=True, exist_ok=True)
        try:
            for net, model, weights in nets(wd, args.nets):
                iterations = args.lenet_iterations if net == "lenet" else args.cifar_iterations
                flags = args.flags.split()
                tag = "".join(f.strip("-").replace("-", "_") + "_" for f in flags).rstrip("_")
                tag = f"_{args.objective}_{tag}" if tag else f"_{args.objective}"
                rows = {s: run(net, model, weights, iterations, s, args.objective, wd, flags, tag)
                        for s in ("global", "per-layer")}
                for r in rows.values():
                    emit(r)
                g, p = rows["global"], rows["per-layer"]
                emit({"bench": "per_layer_ratio", "net": net, "objective": args.objective, "flags": flags,
                      **{k: round(p[k] / g[k], 3) for k in ("weight_bits", "bitops", "energy_pj", "wall_s", "cpu_s",
                                                            "layer_forwards")},
                      "score_change": round(p["score"] - g["score"], 4)})
        except Skip as exc:
            emit({"bench": "per_layer", "skipped": str(exc)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
