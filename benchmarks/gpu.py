"""GPU benchmark and CPU/GPU agreement, for a session that has a CUDA machine (see
benchmarks/gpu_check.sh, which runs this after the GPU tests). JSON lines on stdout and
appended to --out as each measurement finishes (a timeout loses only what was not done).

    python -m benchmarks.gpu [--out FILE] [--stages forward,agreement] [--batch 256]

forward: images/s of one forward pass at batch 256 (CuPy, synchronised) for CaffeNet and
  SqueezeNet v1.0 with random weights, in float and in 8-bit dynamic fixed point (every
  Convolution/InnerProduct as its Ristretto layer: the fused trim kernels), side by side
  with PyTorch float32 (cuDNN, TF32 off) and PyTorch with torch.fake_quantize_per_tensor_affine
  on each conv/fc input, output and weights (scale 2^-fl, 8 bits).
agreement: the same random-weight nets (LeNet, CaffeNet, SqueezeNet v1.0, ResNet-50) on
  NumPy and on CuPy: top-1 agreement, largest |difference| relative to the largest |logit|,
  and for the 8-bit nets the fraction of output elements equal bit for bit.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from .common import REPO, deploy_with_batch, random_weights

NETS = {"lenet": "models/lenet/lenet.prototxt", "caffenet": "models/caffenet/deploy.prototxt",
        "squeezenet_v1.0": "models/squeezenet_v1.0/deploy.prototxt", "resnet50": "models/resnet50/deploy.prototxt"}
OUT_FILE: Path | None = None


def emit(record: dict) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if OUT_FILE is not None:
        with OUT_FILE.open("a") as f:
            f.write(line + "\n")


def quantized(prototxt: Path, out: Path, bw: int = 8) -> Path:
    """Every Convolution / InnerProduct as ConvolutionRistretto / FcRistretto, bw-bit dynamic
    fixed point (fl chosen for random-weight ranges; speed does not depend on it)."""
    from google.protobuf import text_format

    from ristretto_cli.caffe.prototxt import read_net

    net = read_net(str(prototxt))
    for layer in net.layer:
        if layer.type in ("Convolution", "InnerProduct"):
            layer.type = "ConvolutionRistretto" if layer.type == "Convolution" else "FcRistretto"
            q = layer.quantization_param
            q.bw_layer_in = q.bw_layer_out = q.bw_params = bw
            q.fl_layer_in, q.fl_layer_out, q.fl_params = bw - 5, bw - 6, bw - 1
    out.write_text(text_format.MessageToString(net))
    return out


def load(prototxt, weights, gpu):
    from ristretto_cli.backend import get_backend
    from ristretto_cli.net.loading import load_net

    return load_net(str(prototxt), str(weights), "TEST", get_backend(gpu, 0))


def time_gpu(fn, sync, min_time=3.0, warmup=3) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_time or len(times) < 5:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


# -- PyTorch peers (hand-written CaffeNet and SqueezeNet v1.0, the shapes of models/) --------

def torch_net(name, quant_bits=None):
    import torch
    from torch import nn

    class FQ(nn.Module):
        def __init__(self, fl):
            super().__init__()
            self.scale = 2.0 ** -fl

        def forward(self, x):
            return torch.fake_quantize_per_tensor_affine(x, self.scale, 0, -(1 << (quant_bits - 1)),
                                                         (1 << (quant_bits - 1)) - 1)

    class Q(nn.Module):      # trims input, weights (a copy, as Ristretto) and output
        def __init__(self, layer):
            super().__init__()
            self.layer, self.fin, self.fout, self.fw = layer, FQ(quant_bits - 5), FQ(quant_bits - 6), FQ(quant_bits - 1)

        def forward(self, x):
            w = self.fw(self.layer.weight)
            b = self.fw(self.layer.bias)
            x = self.fin(x)
            if isinstance(self.layer, nn.Conv2d):
                y = nn.functional.conv2d(x, w, b, self.layer.stride, self.layer.padding, 1, self.layer.groups)
            else:
                y = nn.functional.linear(x, w, b)
            return self.fout(y)

    def q(layer):
        return Q(layer) if quant_bits else layer

    def conv(i, o, k, s=1, p=0, g=1):
        return q(nn.Conv2d(i, o, k, s, p, groups=g))

    if name == "caffenet":
        return nn.Sequential(
            conv(3, 96, 11, 4), nn.ReLU(True), nn.MaxPool2d(3, 2, ceil_mode=True), nn.LocalResponseNorm(5, 1e-4, 0.75),
            conv(96, 256, 5, 1, 2, 2), nn.ReLU(True), nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.LocalResponseNorm(5, 1e-4, 0.75), conv(256, 384, 3, 1, 1), nn.ReLU(True),
            conv(384, 384, 3, 1, 1, 2), nn.ReLU(True), conv(384, 256, 3, 1, 1, 2), nn.ReLU(True),
            nn.MaxPool2d(3, 2, ceil_mode=True), nn.Flatten(), q(nn.Linear(9216, 4096)), nn.ReLU(True),
            q(nn.Linear(4096, 4096)), nn.ReLU(True), q(nn.Linear(4096, 1000)), nn.Softmax(1)), (3, 227, 227)

    class Fire(nn.Module):
        def __init__(self, i, s, e):
            super().__init__()
            self.s, self.e1, self.e3 = conv(i, s, 1), conv(s, e, 1), conv(s, e, 3, 1, 1)

        def forward(self, x):
            x = torch.relu(self.s(x))
            return torch.cat([torch.relu(self.e1(x)), torch.relu(self.e3(x))], 1)

    return nn.Sequential(
        conv(3, 96, 7, 2), nn.ReLU(True), nn.MaxPool2d(3, 2, ceil_mode=True), Fire(96, 16, 64), Fire(128, 16, 64),
        Fire(128, 32, 128), nn.MaxPool2d(3, 2, ceil_mode=True), Fire(256, 32, 128), Fire(256, 48, 192),
        Fire(384, 48, 192), Fire(384, 64, 256), nn.MaxPool2d(3, 2, ceil_mode=True), Fire(512, 64, 256),
        conv(512, 1000, 1), nn.ReLU(True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Softmax(1)), (3, 227, 227)


def bench_torch(name, batch, quant_bits=None):
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    model, shape = torch_net(name, quant_bits)
    model = model.cuda().eval()
    x = torch.randn(batch, *shape, device="cuda")
    with torch.inference_mode():
        seconds = time_gpu(lambda: model(x), torch.cuda.synchronize)
    return seconds


def stage_forward(tmp: Path, batch: int) -> None:
    from ristretto_cli.backend import synchronize

    for name in ("caffenet", "squeezenet_v1.0"):
        proto = deploy_with_batch(str(REPO / NETS[name]), batch, tmp / f"{name}_b{batch}.prototxt")
        weights = random_weights(proto, tmp / f"{name}.caffemodel")
        for fmt, p in (("float", proto), ("dfp8", quantized(proto, tmp / f"{name}_b{batch}_q.prototxt"))):
            for impl in ("ours", "pytorch"):
                rec = {"bench": "forward_gpu", "net": name, "format": fmt, "impl": impl, "batch": batch}
                try:
                    if impl == "ours":
                        net = load(p, weights, 0)
                        xp = net.backend.xp
                        x = xp.asarray(np.random.default_rng(0).standard_normal(
                            net.blob_shapes[net.inputs[0]]).astype(np.float32))
                        seconds = time_gpu(lambda: net.forward({net.inputs[0]: x}), lambda: synchronize(xp))
                    else:
                        seconds = bench_torch(name, batch, 8 if fmt == "dfp8" else None)
                    rec.update(ms_per_batch=round(seconds * 1e3, 3), images_per_s=round(batch / seconds, 1))
                except Exception as exc:  # one failure must not stop the others
                    rec["error"] = f"{type(exc).__name__}: {exc}"[-400:]
                    traceback.print_exc(file=sys.stderr)
                emit(rec)


def stage_agreement(tmp: Path) -> None:
    batches = {"lenet": 64, "caffenet": 8, "squeezenet_v1.0": 8, "resnet50": 4}
    for name, batch in batches.items():
        proto = deploy_with_batch(str(REPO / NETS[name]), batch, tmp / f"{name}_a{batch}.prototxt")
        weights = random_weights(proto, tmp / f"{name}_a.caffemodel")
        for fmt, p in (("float", proto), ("dfp8", quantized(proto, tmp / f"{name}_a{batch}_q.prototxt"))):
            rec = {"bench": "cpu_gpu_agreement", "net": name, "format": fmt, "batch": batch}
            try:
                outs = {}
                for gpu in (None, 0):
                    net = load(p, weights, gpu)
                    x = np.random.default_rng(1).standard_normal(net.blob_shapes[net.inputs[0]]).astype(np.float32)
                    net.forward({net.inputs[0]: net.backend.asarray(x)})
                    last = net.outputs[0] if getattr(net, "outputs", None) else list(net.blobs)[-1]
                    outs[gpu] = net.backend.to_numpy(net.blobs[last]).reshape(batch, -1)
                a, b = outs[None], outs[0]
                scale = float(np.abs(a).max()) or 1.0
                rec.update(top1_agreement=float((a.argmax(1) == b.argmax(1)).mean()),
                           max_rel_diff=float(np.abs(a - b).max() / scale),
                           equal_elements=float((a == b).mean()))
            except Exception as exc:
                rec["error"] = f"{type(exc).__name__}: {exc}"[-400:]
                traceback.print_exc(file=sys.stderr)
            emit(rec)


def main(argv=None) -> None:
    global OUT_FILE
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=None, help="append the JSON lines here too")
    ap.add_argument("--stages", default="agreement,forward")
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args(argv)
    OUT_FILE = args.out
    from ristretto_cli.backend import cuda_devices

    emit({"bench": "device", **cuda_devices()[0]})
    with tempfile.TemporaryDirectory() as tmp:
        for stage in args.stages.split(","):
            t0 = time.perf_counter()
            if stage == "forward":
                stage_forward(Path(tmp), args.batch)
            elif stage == "agreement":
                stage_agreement(Path(tmp))
            emit({"bench": "stage_done", "stage": stage, "seconds": round(time.perf_counter() - t0, 1)})


if __name__ == "__main__":
    main()
