"""Quantized nets out to ONNX Runtime on the full test sets (issue #10): `ristretto quantize`
(the original's search, default margin) on LeNet / MNIST t10k and CIFAR-10 full, then
`ristretto benchmark` on the quantized prototxt, then `ristretto export onnx --format qdq`,
scored in ONNX Runtime on the same 10,000 test images (fed from our TEST net's data layer,
so both see the same inputs). One JSON line per net: accuracy in ours and in ORT (exact
session, and ORT's default session whose QDQ fusions requantize their own way; Caffe's
Accuracy rule, a tie counts against the true class), and the fraction of test images
whose logits differ from ours in any element, and the fraction of differing logits.

    python -m benchmarks.export_accuracy [lenet] [cifar10_full] [--workdir W]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from .accuracy import Skip, cifar_model, lenet_model, ristretto
from .common import emit

ITERATIONS = 100  # batches of 100: the whole 10,000-image test sets


NETS = {"lenet": lenet_model, "cifar10_full": lambda wd: cifar_model("cifar10_full", wd)}


def ort_session(model_bytes: bytes, exact: bool):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if exact:  # without ORT's QDQ fusions (QLinearConv & co. requantize their own way)
        opts.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def caffe_top1_correct(logits: np.ndarray, labels: np.ndarray) -> int:
    """Caffe 1.0's Accuracy (top_k 1): right when no other class scores >= the true class."""
    true = logits[np.arange(len(labels)), labels]
    return int(((logits >= true[:, None]).sum(axis=1) - 1 < 1).sum())


def score_in_ort(quantized: Path, weights: Path, onnx_bytes: bytes, iterations: int) -> dict:
    """Top-1 accuracy of the ONNX model in ORT (exact and default sessions) on the batches our
    TEST net's data layer reads, and how often their top-1 differs from our forward's."""
    from ristretto_cli.net.loading import load_net

    net = load_net(str(quantized), str(weights), "TEST")
    sessions = {"exact": ort_session(onnx_bytes, exact=True)}
    notes = {}
    try:
        sessions["default"] = ort_session(onnx_bytes, exact=False)
    except Exception as exc:  # ORT's own QDQ graph rewrites fail on some valid models
        notes["default_session_error"] = str(exc).splitlines()[0][:300]
    (input_name,) = [i.name for i in sessions["exact"].get_inputs()]
    logits_name = sessions["exact"].get_outputs()[0].name
    data_layer = next(i for i, bottoms in enumerate(net.bottom_names) if not bottoms)
    label_blob = net.top_names[data_layer][1]
    correct = {"ours": 0, **{kind: 0 for kind in sessions}}
    differ = {kind: 0 for kind in sessions}
    differ_elements = {kind: 0 for kind in sessions}
    seen = elements = 0
    try:
        for _ in range(iterations):
            net.forward()  # our quantized forward; the data layer fills data and label
            labels = net.backend.to_numpy(net.blobs[label_blob]).astype(int).reshape(-1)
            ours = net.backend.to_numpy(net.blobs[logits_name]).reshape(len(labels), -1)
            # the first Ristretto layer trimmed the data blob in place; ORT's QuantizeLinear
            # trims it again to the same values (a trim is idempotent)
            images = np.asarray(net.backend.to_numpy(net.blobs[net.top_names[data_layer][0]]))
            correct["ours"] += caffe_top1_correct(ours, labels)
            for kind, sess in sessions.items():
                logits = sess.run([logits_name], {input_name: images})[0].reshape(len(labels), -1)
                correct[kind] += caffe_top1_correct(logits, labels)
                differ[kind] += int((logits != ours).any(axis=1).sum())
                differ_elements[kind] += int((logits != ours).sum())
            seen += len(labels)
            elements += ours.size
    finally:
        net.close()
    return {"images": seen, **{f"accuracy_{k}": v / seen for k, v in correct.items()},
            **{f"images_with_a_differing_logit_{k}": v / seen for k, v in differ.items()},
            **{f"differing_logits_{k}": v / elements for k, v in differ_elements.items()}, **notes}


def run_net(name: str, wd: Path) -> dict:
    from ristretto_cli.export.onnx_export import export_onnx

    model, weights = NETS[name](wd)
    quantized = wd / f"{name}_quantized.prototxt"
    t0 = time.perf_counter()
    ristretto(["quantize", "--model", model, "--weights", weights, "--model_quantized", quantized,
               "--trimming_mode", "dynamic_fixed_point", "--iterations", ITERATIONS, "-q",
               "--report", wd / f"{name}_report.json"])
    report = json.loads((wd / f"{name}_report.json").read_text())
    scores = wd / f"{name}_quantized.scores.json"
    ristretto(["benchmark", "--model", quantized, "--weights", weights, "--iterations", ITERATIONS,
               "--json", scores])
    benchmark_accuracy = json.loads(scores.read_text())["means"]["accuracy"]
    exported = export_onnx(str(quantized), str(weights), "qdq")
    ort = score_in_ort(quantized, weights, exported.to_bytes(), ITERATIONS)
    return {"bench": "export_accuracy", "net": name, "chosen": report["chosen"],
            "benchmark_accuracy": benchmark_accuracy, **ort, "format": exported.format,
            "opset": exported.opset, "wall_s": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("nets", nargs="*", help=f"some of {', '.join(NETS)} (default: all)")
    ap.add_argument("--workdir", default=None, help="keep (and reuse) the LMDBs here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ristretto-export-") as tmp:
        wd = Path(args.workdir or tmp)
        wd.mkdir(parents=True, exist_ok=True)
        for name in args.nets or list(NETS):
            try:
                emit(run_net(name, wd))
            except Skip as exc:
                emit({"bench": "export_accuracy", "net": name, "skipped": str(exc)})


if __name__ == "__main__":
    main()
