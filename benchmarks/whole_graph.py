"""Whole-graph quantization on real weights: the original flow against `--whole-graph` and its variants.

Each variant runs `ristretto quantize` (dynamic fixed point, `--error-margin 1`) and prints
one JSON line: the baseline, the chosen widths, the quantized net's score and the bits of
every tensor the quantized prototxt trims (layer inputs, outputs, weights, biases).

Nets (`--net`):
  cifar10_full   the trained cifar10_full V2 caffemodel over the JPEG test set (converted as
                 benchmarks/accuracy.py does); default `--iterations 20` of batch 100.
  squeezenet     SqueezeNet v1.0 (Deep Compression weights decoded to a caffemodel) on the
                 1,000-image ImageNet sample (resized 256x256, centre crop 227, as
                 benchmarks/accuracy.py's case_squeezenet); default `--iterations 5` of batch
                 50 = 250 images for the search, as the original's SqueezeNet runs. The
                 statistics are measured on the same 250 images: the TRAIN data layer is
                 rewritten to the same LMDB with batch 50 and no mirror, `--stats-batches 5`
                 (TRAIN phase, so Caffe's random 227 crops of them).

    python -m benchmarks.whole_graph [--net cifar10_full|squeezenet] [--iterations N] [--workdir /tmp/wg] [variant ...]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from .accuracy import SQUEEZENET_PROTO, Skip, cifar_model, ristretto, squeezenet_model
from .common import emit

VARIANTS = {
    "original": [],
    "whole_graph": ["--whole-graph"],
    "whole_graph_signed": ["--whole-graph", "--activation-range", "signed"],
    "whole_graph_unsigned": ["--whole-graph", "--activation-range", "unsigned"],
    "whole_graph_signed_percentile": ["--whole-graph", "--activation-range", "signed", "--calibration", "percentile"],
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


#: the variants a net runs when none is named
DEFAULT_VARIANTS = {
    "cifar10_full": list(VARIANTS),
    "squeezenet": ["original", "whole_graph", "whole_graph_signed", "whole_graph_signed_percentile",
                   "whole_graph_unsigned"],
}


def run_variant(name: str, model: Path, weights: Path, iterations: int, wd: Path, net: str = "cifar10_full",
                stats_batches: int | None = None) -> dict:
    tag = name if net == "cifar10_full" else f"{net}_{name}"
    q, report = wd / f"{tag}.prototxt", wd / f"{tag}.report.json"
    extra = ["--stats-batches", stats_batches] if stats_batches else []
    _, wall = ristretto(["quantize", "--model", model, "--weights", weights, "--model-quantized", q,
                         "--trimming-mode", "dynamic_fixed_point", "--iterations", iterations, "--error-margin", 1,
                         "--report", report, *extra, *VARIANTS[name]], log=wd / f"{tag}.log")
    rep = json.loads(report.read_text())
    return {"bench": "whole_graph", "net": net, "variant": name, "flags": VARIANTS[name], "iterations": iterations,
            "stats_batches": rep.get("statistics_batches", stats_batches),
            "baseline": rep["baseline"], "chosen": rep["chosen"], "score": rep["final"]["score"],
            "parameter_bits": rep["parameter_memory"]["bits_after"], "wall_s": round(wall, 1),
            "tensor_bits": tensor_bits(q)}


def cifar10_full(wd: Path) -> tuple[Path, Path]:
    return cifar_model("cifar10_full", wd)


def squeezenet(wd: Path) -> tuple[Path, Path]:
    """SqueezeNet v1.0's train_val on the ImageNet sample; the TRAIN layer reads the same LMDB
    with the TEST layer's batch (50) and no mirror, so the statistics see the search's images."""
    model, weights = squeezenet_model(wd)
    proto = SQUEEZENET_PROTO
    text = model.read_text()
    for old, new in (("batch_size: 32", "batch_size: 50"), ("mirror: true", "mirror: false")):
        if text.count(old) != 1:
            raise RuntimeError(f"{proto}: expected one '{old}'")
        text = text.replace(old, new)
    model.write_text(text)
    return model, weights


NETS = {"cifar10_full": (cifar10_full, 20, None), "squeezenet": (squeezenet, 5, 5)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="*", metavar="VARIANT", help=f"some of {', '.join(VARIANTS)} (default: all)")
    ap.add_argument("--net", choices=list(NETS), default="cifar10_full")
    ap.add_argument("--iterations", type=int, default=None,
                    help="test batches per candidate (cifar10_full: 20 of 100 images; squeezenet: 5 of 50)")
    ap.add_argument("--stats-batches", type=int, default=None,
                    help="TRAIN batches for the statistics (cifar10_full: quantize's default; squeezenet: 5)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep (and reuse) the LMDB here")
    args = ap.parse_args(argv)
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    prepare, iterations, stats_batches = NETS[args.net]
    args.variants = args.variants or DEFAULT_VARIANTS[args.net]
    iterations = args.iterations or iterations
    stats_batches = args.stats_batches or stats_batches
    with tempfile.TemporaryDirectory() as tmp:
        wd = args.workdir or Path(tmp)
        wd.mkdir(parents=True, exist_ok=True)
        try:
            model, weights = prepare(wd)
        except Skip as exc:
            emit({"bench": "whole_graph", "net": args.net, "skipped": str(exc)})
            return 0
        for name in args.variants:
            emit(run_variant(name, model, weights, iterations, wd, args.net, stats_batches))
    return 0


if __name__ == "__main__":
    sys.exit(main())
