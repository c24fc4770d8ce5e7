"""`make e2e`, part 2: the Ristretto paper's flow on LeNet / MNIST with the CLI.

1. `ristretto benchmark` the trained float LeNet (shared V2 caffemodel) on t10k;
2. `ristretto quantize` it to an aggressive dynamic fixed point configuration
   (widths 4 and 2 only, a 10 % error margin: it picks 2-bit CONV weights, 4-bit FC
   weights and 4-bit activations) and `ristretto benchmark` the quantized net with
   the float weights: the accuracy drops visibly;
3. `ristretto finetune` the quantized net from the float weights (a solver written
   into the work dir: base_lr 0.001, momentum 0.9, weight decay 5e-4, fixed rate,
   2000 iterations of 64 on the MNIST training set), then `ristretto benchmark` the
   quantized net with the fine-tuned weights. Twice: as the original fine-tunes
   (activations trimmed in the TEST phase only, so training never sees the 4-bit
   activations) and with `--trim-activations` (trimmed in training too).

One JSON line with the accuracies (and the settings, choices and times).

    python -m benchmarks.paper_flow [--workdir W] [--finetune-iterations N] [--variants both|original|trim]
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from .accuracy import CAFFEMODELS, REPO, Skip, benchmark, mnist_db, need, ristretto, rewrite
from .common import emit

SOLVER = """# Fine-tune the quantized LeNet (written by benchmarks/paper_flow.py)
net: "{net}"
test_iter: 100
test_interval: 500
base_lr: 0.001
momentum: 0.9
weight_decay: 0.0005
lr_policy: "fixed"
display: 100
max_iter: {max_iter}
snapshot: 0
snapshot_prefix: "{prefix}"
random_seed: 1
solver_mode: CPU
"""


#: finetune: the original's (activations trimmed only in TEST) and with --trim-activations
VARIANTS = {"both": [("finetune", False), ("finetune_trim_activations", True)],
            "original": [("finetune", False)], "trim": [("finetune_trim_activations", True)]}


def run(wd: Path, widths: str, error_margin: float, iterations: int, finetune_iterations: int,
        variants: str = "both") -> dict:
    weights = CAFFEMODELS / "lenet_v2" / "lenet_iter_10000.caffemodel"
    need(weights)
    train_db, test_db = mnist_db(wd, "train"), mnist_db(wd, "test")
    flow = wd / "paper_flow"
    flow.mkdir(exist_ok=True)
    model = rewrite(REPO / "models" / "lenet" / "lenet_train_test.prototxt", flow / "lenet_train_test.prototxt",
                    {"examples/mnist/mnist_test_lmdb": test_db, "examples/mnist/mnist_train_lmdb": train_db})
    float_scores, float_wall = benchmark(model, weights, 100, flow, "float")

    quantized = flow / "lenet_quantized.prototxt"
    report = flow / "quantize_report.json"
    _, q_wall = ristretto(["quantize", "--model", model, "--weights", weights, "--model_quantized", quantized,
                           "--trimming_mode", "dynamic_fixed_point", "--iterations", iterations,
                           "--error_margin", error_margin, "--widths", widths, "--report", report],
                          log=flow / "quantize.log")
    rep = json.loads(report.read_text())
    before, before_wall = benchmark(quantized, weights, 100, flow, "quantized_before_finetune")

    finetunes = {}
    for variant, trim in VARIANTS[variants]:
        prefix = flow / f"lenet_finetuned{'_trim' if trim else ''}"
        solver = flow / f"finetune_solver{'_trim' if trim else ''}.prototxt"
        solver.write_text(SOLVER.format(net=quantized, max_iter=finetune_iterations, prefix=prefix))
        log = flow / f"finetune{'_trim' if trim else ''}.log"
        out, ft_wall = ristretto(["finetune", "--solver", solver, "--weights", weights,
                                  *(["--trim-activations"] if trim else [])], log=log)
        finetuned = Path(f"{prefix}_iter_{finetune_iterations}.caffemodel")
        after, after_wall = benchmark(quantized, finetuned, 100, flow, f"quantized_after_{variant}")
        rates = [float(m) for m in re.findall(r"([0-9.]+) images/s", log.read_text())]
        tests = [float(m) for m in re.findall(r"Test net output #0: accuracy = ([0-9.]+)", log.read_text())]
        finetunes[variant] = {"accuracy": round(after["means"]["accuracy"], 6), "trim_activations_in_training": trim,
                              "test_accuracy_every_500": tests,
                              "images_per_s_median_display": round(statistics.median(rates), 1) if rates else None,
                              "wall_s": round(ft_wall, 1), "benchmark_wall_s": round(after_wall, 1)}
    acc = lambda s: round(s["means"]["accuracy"], 6)  # noqa: E731
    rec = {"bench": "paper_flow", "net": "lenet", "data": "MNIST t10k (10000 images)",
           "accuracy_float": acc(float_scores),
           "accuracy_quantized_before_finetune": acc(before)}
    for variant, f in finetunes.items():
        rec[f"accuracy_quantized_after_{variant}"] = f["accuracy"]
    rec.update({"trimming_mode": "dynamic_fixed_point", "widths_tried": widths, "error_margin": error_margin,
                "search_iterations": iterations, "choices": rep["chosen"], "search_final_score": rep["final"]["score"],
                "finetune_settings": {"iterations": finetune_iterations, "batch": 64, "base_lr": 0.001,
                                      "lr_policy": "fixed", "momentum": 0.9, "weight_decay": 0.0005},
                "finetune": finetunes,
                "wall_s": {"benchmark_float": round(float_wall, 1), "quantize": round(q_wall, 1),
                           "benchmark_quantized": round(before_wall, 1)}})
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", help="keep LMDBs and outputs here (reused by later runs); default: a temporary one")
    ap.add_argument("--widths", default="4,2", help="bit widths the search tries (default 4,2)")
    ap.add_argument("--error-margin", type=float, default=10.0, help="allowed accuracy drop in percent (default 10)")
    ap.add_argument("--iterations", type=int, default=100, help="batches of 100 per search candidate")
    ap.add_argument("--finetune-iterations", type=int, default=2000)
    ap.add_argument("--variants", choices=list(VARIANTS), default="both",
                    help="fine-tune as the original (activations untrimmed in training), with --trim-activations, "
                         "or both (default)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ristretto-paper-flow-") as tmp:
        wd = Path(args.workdir) if args.workdir else Path(tmp)
        wd.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        try:
            rec = run(wd, args.widths, args.error_margin, args.iterations, args.finetune_iterations, args.variants)
        except Skip as exc:
            emit({"bench": "paper_flow", "skipped": str(exc)})
            return 0
        except RuntimeError as exc:
            emit({"bench": "paper_flow", "error": str(exc)})
            return 1
        rec["wall_s"]["total"] = round(time.perf_counter() - t0, 1)
        emit(rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
