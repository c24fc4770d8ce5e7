"""Whole-graph quantization on CIFAR-10 full: the original flow against `--whole-graph` and its variants.

Each variant runs `ristretto quantize` (dynamic fixed point) on the trained cifar10_full
caffemodel over the JPEG test set (converted as benchmarks/accuracy.py does) and prints
one JSON line: the baseline, the chosen widths, the quantized net's score and the bits of
every tensor the quantized prototxt trims (layer inputs, outputs, weights, biases).

    python -m benchmarks.whole_graph [--iterations 20] [--workdir /tmp/wg] [variant ...]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from .accuracy import CIFAR_CASES, DATA, Skip, cifar_db, need, rewrite, ristretto
from .common import emit

VARIANTS = {
    "original": [],
    "whole_graph": ["--whole-graph"],
    "whole_graph_signed": ["--whole-graph", "--activation-range", "signed"],
    "whole_graph_unsigned": ["--whole-graph", "--activation-range", "unsigned"],
    "whole_graph_percentile": ["--whole-graph", "--activation-range", "unsigned", "--calibration", "percentile"],
    "whole_graph_mse": ["--whole-graph", "--activation-range", "unsigned", "--calibration", "mse"],
    "whole_graph_bias16": ["--whole-graph", "--activation-range", "unsigned", "--bias-bits", "16"],
}


def tensor_bits(prototxt: Path) -> dict:
    """{layer: {in, out, weights, bias}: bits} from a quantized prototxt."""
    from ristretto_cli.caffe.prototxt import read_net

    out = {}
    for lp in read_net(str(prototxt)).layer:
        if not lp.HasField("quantization_param"):
            continue
        q = lp.quantization_param
        entry = {"type": lp.type, "in": q.bw_layer_in, "out": q.bw_layer_out}
        if q.is_unsigned_layer_in or q.is_unsigned_layer_out:
            entry["unsigned"] = [s for s, on in (("in", q.is_unsigned_layer_in), ("out", q.is_unsigned_layer_out))
                                 if on]
        if lp.type in ("ConvolutionRistretto", "FcRistretto", "ScaleRistretto", "PReLURistretto"):
            entry["weights"] = q.bw_params
            entry["bias"] = q.bw_bias if q.HasField("bw_bias") else q.bw_params
        out[lp.name] = entry
    return out


def run_variant(name: str, model: Path, weights: Path, iterations: int, wd: Path) -> dict:
    q, report = wd / f"{name}.prototxt", wd / f"{name}.report.json"
    _, wall = ristretto(["quantize", "--model", model, "--weights", weights, "--model-quantized", q,
                         "--trimming-mode", "dynamic_fixed_point", "--iterations", iterations, "--error-margin", 1,
                         "--report", report, *VARIANTS[name]], log=wd / f"{name}.log")
    rep = json.loads(report.read_text())
    return {"bench": "whole_graph", "variant": name, "flags": VARIANTS[name], "iterations": iterations,
            "baseline": rep["baseline"], "chosen": rep["chosen"], "score": rep["final"]["score"],
            "parameter_bits": rep["parameter_memory"]["bits_after"], "wall_s": round(wall, 1),
            "tensor_bits": tensor_bits(q)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="*", metavar="VARIANT", help=f"some of {', '.join(VARIANTS)} (default: all)")
    ap.add_argument("--iterations", type=int, default=20, help="batches of 100 test images per candidate")
    ap.add_argument("--workdir", type=Path, default=None, help="keep (and reuse) the LMDB here")
    args = ap.parse_args(argv)
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    args.variants = args.variants or list(VARIANTS)
    weights, proto, _, kind = CIFAR_CASES["cifar10_full"]
    mean = DATA / "cifar10" / "mean.binaryproto"
    with tempfile.TemporaryDirectory() as tmp:
        wd = args.workdir or Path(tmp)
        wd.mkdir(parents=True, exist_ok=True)
        try:
            need(weights, proto, mean)
            db = cifar_db(wd)
        except Skip as exc:
            emit({"bench": "whole_graph", "skipped": str(exc)})
            return 0
        model = rewrite(proto, wd / "cifar10_full.prototxt",
                        {f"examples/cifar10/cifar10_test_{kind}": db, f"examples/cifar10/cifar10_train_{kind}": db,
                         "examples/cifar10/mean.binaryproto": mean})
        for name in args.variants:
            emit(run_variant(name, model, weights, args.iterations, wd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
