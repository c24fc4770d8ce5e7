"""Training images/s on the CPU: LeNet (models/lenet, batch 64, Caffe's LeNet solver
settings: SGD, momentum 0.9, weight decay 5e-4, "inv" learning rate, bias lr_mult 2)
with our Solver, side by side with a peer on the same data and settings: PyTorch on the
CPU when ``torch`` is importable, else a plain NumPy LeNet written below. One process
per measurement so each peak memory is that run's own.

Data: real MNIST from ../shared/data/mnist (the first images of the training set,
converted into a temporary LMDB with ``convert_mnist``), or synthetic digits when
../shared is absent. Our Solver reads the LMDB through its Data layer (as `caffe
train` does); the peer gets the same images as arrays already in memory.

Before timing, a check runs both on the same first two batches from the same initial
weights and reports the largest relative difference of the weights after two updates
(``train_cpu_peer_check``): the peer computes the same thing.

For scale: the original Caffe trains LeNet at about 1,440 images/s on this kind of
machine (a reference figure, not measured here).

    python -m benchmarks.train                       # check, ours / peer twice each, ratio
    python -m benchmarks.train --iterations 50 --repeat 1   # shorter
    python -m benchmarks.train --one ours --workdir W   (internal: one measurement)
"""
from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import REPO, SHARED, emit, peak_rss_mb


def conditions() -> dict:
    """What the figures depend on: BLAS threads of this process and the machine's load
    (other people may be running CPU-heavy work at the same time)."""
    import os

    out = {"load_avg_1m": round(os.getloadavg()[0], 2)}
    try:
        from threadpoolctl import threadpool_info

        out["blas_threads"] = max((i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"),
                                  default=None)
    except ImportError:  # pragma: no cover
        pass
    return out

BATCH = 64
CAFFE_REFERENCE_IMAGES_PER_S = 1440.0
SOLVER = REPO / "models" / "lenet" / "lenet_solver.prototxt"
NET = REPO / "models" / "lenet" / "lenet_train_test.prototxt"
TRAIN_SOURCE = "examples/mnist/mnist_train_lmdb"
TEST_SOURCE = "examples/mnist/mnist_test_lmdb"


# ----------------------------------------------------------------------------- data

def read_idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_idx(path: Path, arr: np.ndarray) -> None:
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(head + np.ascontiguousarray(arr, np.uint8).tobytes())


def prepare(workdir: Path, records: int) -> dict:
    """idx files (real MNIST or synthetic), an LMDB of them, and the net + solver
    settings rewritten to read it. Returns what the measurements need."""
    from ristretto_cli.data.converters import convert_mnist

    mnist = SHARED / "data" / "mnist"
    images, labels = mnist / "train-images-idx3-ubyte.gz", mnist / "train-labels-idx1-ubyte.gz"
    if images.exists() and labels.exists():
        data = "mnist"
    else:
        # Synthetic digits: a class-dependent blob plus noise, so the loss can fall.
        data = "synthetic"
        rng = np.random.default_rng(0)
        lab = rng.integers(0, 10, records).astype(np.uint8)
        yy, xx = np.mgrid[0:28, 0:28]
        protos = np.stack([255 * np.exp(-((yy - 6 - 2 * k) ** 2 + (xx - 20 + k) ** 2) / 30.0) for k in range(10)])
        img = np.clip(protos[lab] + rng.normal(0, 40, (records, 28, 28)), 0, 255).astype(np.uint8)
        images, labels = workdir / "synthetic-images-idx3-ubyte", workdir / "synthetic-labels-idx1-ubyte"
        write_idx(images, img)
        write_idx(labels, lab)
    db = workdir / "train_lmdb"
    if not db.exists():
        convert_mnist(images, labels, db, limit=records)
    text = NET.read_text().replace(TRAIN_SOURCE, str(db)).replace(TEST_SOURCE, str(db))
    net = workdir / "lenet_train_test.prototxt"
    net.write_text(text)
    return {"data": data, "images": str(images), "labels": str(labels), "net": str(net), "records": records}


def load_arrays(setup: dict) -> tuple[np.ndarray, np.ndarray]:
    """The LMDB's images as the Data layer delivers them (x 1/256, N x 1 x 28 x 28)."""
    n = setup["records"]
    x = read_idx(Path(setup["images"]))[:n].astype(np.float32) * np.float32(0.00390625)
    y = read_idx(Path(setup["labels"]))[:n].astype(np.int64)
    return x[:, None], y


def solver_param(net: str, max_iter: int):
    """Caffe's LeNet solver with nothing but training left: no tests, display or snapshots."""
    from ristretto_cli.caffe.prototxt import read_solver

    p = read_solver(str(SOLVER))
    p.net = net
    del p.test_iter[:]
    p.test_interval = 0
    p.display = 0
    p.snapshot = 0
    p.snapshot_after_train = False
    p.max_iter = max_iter
    p.random_seed = 1
    return p


# ----------------------------------------------------------------------------- the NumPy peer

class NumpyLeNet:
    """LeNet forward / backward and Caffe's SGD in plain NumPy (float32): im2col
    convolutions, 2x2 max pooling, inner products, ReLU, softmax loss."""

    LAYERS = (("conv1", (20, 1, 5, 5)), ("conv2", (50, 20, 5, 5)), ("ip1", (500, 800)), ("ip2", (10, 500)))

    def __init__(self, solver, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.params = {}
        for name, shape in self.LAYERS:  # xavier: U(-a, a), a = sqrt(3 / fan_in); zero biases
            a = np.sqrt(3.0 / int(np.prod(shape[1:])))
            self.params[name] = [rng.uniform(-a, a, shape).astype(np.float32), np.zeros(shape[0], np.float32)]
        self.history = {k: [np.zeros_like(v) for v in vs] for k, vs in self.params.items()}
        self.base_lr, self.momentum = float(solver.base_lr), float(solver.momentum)
        self.weight_decay, self.gamma, self.power = float(solver.weight_decay), float(solver.gamma), float(solver.power)
        self.iter = 0

    # -- layers
    @staticmethod
    def _cols(x, k):
        n, c, h, w = x.shape
        win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))  # n c ho wo k k
        ho, wo = h - k + 1, w - k + 1
        return np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(n * ho * wo, c * k * k), ho, wo

    def conv_forward(self, x, name):
        w, b = self.params[name]
        cols, ho, wo = self._cols(x, w.shape[2])
        y = cols @ w.reshape(w.shape[0], -1).T + b
        return y.reshape(x.shape[0], ho, wo, -1).transpose(0, 3, 1, 2), cols

    def conv_backward(self, dy, x, cols, name, need_dx):
        w, _ = self.params[name]
        o, c, k, _ = w.shape
        n, _, ho, wo = dy.shape
        dy2 = dy.transpose(0, 2, 3, 1).reshape(-1, o)
        grads = [(dy2.T @ cols).reshape(w.shape), dy2.sum(0)]
        if not need_dx:
            return grads, None
        dcols = (dy2 @ w.reshape(o, -1)).reshape(n, ho, wo, c, k, k)
        dx = np.zeros_like(x)
        for i in range(k):
            for j in range(k):
                dx[:, :, i:i + ho, j:j + wo] += dcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
        return grads, dx

    @staticmethod
    def pool_forward(x):
        n, c, h, w = x.shape  # 2x2 windows, stride 2, even sizes (24 and 8 in LeNet)
        win = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
        arg = win.argmax(-1)  # first maximum, as Caffe
        return np.take_along_axis(win, arg[..., None], -1)[..., 0], arg

    @staticmethod
    def pool_backward(dy, arg, shape):
        n, c, h, w = shape
        d = np.zeros((n, c, h // 2, w // 2, 4), dy.dtype)
        np.put_along_axis(d, arg[..., None], dy[..., None], -1)
        return d.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(shape)

    # -- one iteration
    def forward_backward(self, x, y):
        p = self.params
        c1, cols1 = self.conv_forward(x, "conv1")
        p1, a1 = self.pool_forward(c1)
        c2, cols2 = self.conv_forward(p1, "conv2")
        p2, a2 = self.pool_forward(c2)
        f = p2.reshape(len(x), -1)
        h = f @ p["ip1"][0].T + p["ip1"][1]
        r = np.maximum(h, 0)
        z = r @ p["ip2"][0].T + p["ip2"][1]
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        prob = e / e.sum(1, keepdims=True)
        n = len(x)
        loss = float(-np.log(np.maximum(prob[np.arange(n), y], np.finfo(np.float32).tiny)).mean())
        dz = prob
        dz[np.arange(n), y] -= 1
        dz /= n
        g = {"ip2": [dz.T @ r, dz.sum(0)]}
        dr = dz @ p["ip2"][0]
        dh = dr * (h > 0)
        g["ip1"] = [dh.T @ f, dh.sum(0)]
        dp2 = (dh @ p["ip1"][0]).reshape(p2.shape)
        dc2 = self.pool_backward(dp2, a2, c2.shape)
        g["conv2"], dp1 = self.conv_backward(dc2, p1, cols2, "conv2", True)
        dc1 = self.pool_backward(dp1, a1, c1.shape)
        g["conv1"], _ = self.conv_backward(dc1, x, cols1, "conv1", False)
        return loss, g

    def step(self, x, y) -> float:
        """Caffe's SGD: diff += wd * w; v = momentum * v + lr * lr_mult * diff; w -= v."""
        loss, grads = self.forward_backward(x, y)
        rate = self.base_lr * (1.0 + self.gamma * self.iter) ** (-self.power)
        for name, gs in grads.items():
            for k, g in enumerate(gs):
                w, v = self.params[name][k], self.history[name][k]
                g = g + np.float32(self.weight_decay) * w
                v *= np.float32(self.momentum)
                v += np.float32(rate * (1.0, 2.0)[k]) * g
                w -= v
        self.iter += 1
        return loss


# ----------------------------------------------------------------------------- the PyTorch peer

class TorchLeNet:
    """The same net with torch.nn on the CPU; torch's SGD equals Caffe's for a fixed rate
    (v = m v + g + wd w; w -= lr v), and the inv rate is set per iteration."""

    def __init__(self, solver, seed: int = 1):
        import torch

        torch.manual_seed(seed)
        nn = torch.nn
        self.torch = torch
        self.model = nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2), nn.Conv2d(20, 50, 5),
                                   nn.MaxPool2d(2, 2), nn.Flatten(), nn.Linear(800, 500), nn.ReLU(),
                                   nn.Linear(500, 10))
        self.layers = {"conv1": self.model[0], "conv2": self.model[2], "ip1": self.model[5], "ip2": self.model[7]}
        for m in self.layers.values():
            a = float(np.sqrt(3.0 / int(np.prod(m.weight.shape[1:]))))
            nn.init.uniform_(m.weight, -a, a)
            nn.init.zeros_(m.bias)
        weights = [m.weight for m in self.layers.values()]
        biases = [m.bias for m in self.layers.values()]
        self.base_lr, self.gamma, self.power = float(solver.base_lr), float(solver.gamma), float(solver.power)
        self.opt = torch.optim.SGD([{"params": weights, "lr_mult": 1.0}, {"params": biases, "lr_mult": 2.0}],
                                   lr=self.base_lr, momentum=float(solver.momentum),
                                   weight_decay=float(solver.weight_decay))
        self.loss_fn = nn.CrossEntropyLoss()
        self.iter = 0

    @property
    def params(self):
        return {k: [m.weight.detach().numpy(), m.bias.detach().numpy()] for k, m in self.layers.items()}

    def set_params(self, params):
        with self.torch.no_grad():
            for k, m in self.layers.items():
                m.weight.copy_(self.torch.from_numpy(params[k][0]))
                m.bias.copy_(self.torch.from_numpy(params[k][1]))

    def step(self, x, y) -> float:
        torch = self.torch
        rate = self.base_lr * (1.0 + self.gamma * self.iter) ** (-self.power)
        for group in self.opt.param_groups:
            # torch scales the momentum buffer's sum by the current lr; with a varying rate
            # this differs from Caffe's v = m v + lr g by a factor close to 1 (speed only).
            group["lr"] = rate * group["lr_mult"]
        self.opt.zero_grad(set_to_none=False)
        loss = self.loss_fn(self.model(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        self.opt.step()
        self.iter += 1
        return float(loss)


def make_peer(kind: str, solver):
    return TorchLeNet(solver) if kind == "torch" else NumpyLeNet(solver)


def peer_kind() -> str:
    try:
        import torch  # noqa: F401
    except ImportError:
        return "numpy"
    return "torch"


# ----------------------------------------------------------------------------- measurements

def measure(impl: str, setup: dict, warmup: int, iterations: int) -> dict:
    total = warmup + iterations
    stamps = {}
    if impl == "ours":
        from ristretto_cli.solvers.solver import Solver

        solver = Solver(solver_param(setup["net"], total), log=lambda m: None)

        def on_iteration(s):
            if s.iter == warmup:
                stamps["t0"], stamps["c0"] = time.perf_counter(), time.process_time()

        solver.on_iteration = on_iteration
        with solver:
            solver.solve()
        t1, c1 = time.perf_counter(), time.process_time()
        loss = solver.smoothed_loss
        impl_desc = "ristretto Solver (Data layer from LMDB)"
    else:
        x, y = load_arrays(setup)
        peer = make_peer(impl, solver_param(setup["net"], total))
        n_batches = len(x) // BATCH
        loss = None
        for it in range(total):
            if it == warmup:
                stamps["t0"], stamps["c0"] = time.perf_counter(), time.process_time()
            b = it % n_batches
            loss = peer.step(x[b * BATCH:(b + 1) * BATCH], y[b * BATCH:(b + 1) * BATCH])
        t1, c1 = time.perf_counter(), time.process_time()
        impl_desc = {"numpy": "NumPy reference LeNet (benchmarks/train.py)", "torch": "PyTorch CPU"}[impl]
    seconds = t1 - stamps["t0"]
    return {"bench": "train_cpu", "net": "lenet", "impl": impl, "what": impl_desc, "data": setup["data"],
            "batch": BATCH, "iterations": iterations, "warmup_iterations": warmup,
            "ms_per_iter": round(1000 * seconds / iterations, 3),
            "images_per_s": round(iterations * BATCH / seconds, 1),
            "cpu_s_per_iter": round((c1 - stamps["c0"]) / iterations, 5),
            "final_loss": round(float(loss), 5), "peak_rss_mb": round(peak_rss_mb(), 1), **conditions()}


def check_peer(kind: str, setup: dict, steps: int = 2) -> dict:
    """Our Solver and the peer, same initial weights, same first ``steps`` batches:
    losses and the largest relative weight difference after the updates."""
    from ristretto_cli.solvers.solver import Solver

    solver = Solver(solver_param(setup["net"], steps), log=lambda m: None)
    peer = make_peer(kind, solver.param)
    init = {name: [np.array(b) for b in solver.net.layer(name).blobs] for name, _ in NumpyLeNet.LAYERS}
    if kind == "torch":
        peer.set_params(init)
    else:
        peer.params = {k: [a.copy() for a in v] for k, v in init.items()}
    ours_losses = []
    solver.on_iteration = lambda s: ours_losses.append(float(s.losses[-1]))
    with solver:
        solver.solve()
    x, y = load_arrays(setup)
    peer_losses = [peer.step(x[i * BATCH:(i + 1) * BATCH], y[i * BATCH:(i + 1) * BATCH]) for i in range(steps)]
    worst = 0.0
    for name, _ in NumpyLeNet.LAYERS:
        for ours, theirs in zip(solver.net.layer(name).blobs, peer.params[name]):
            ours = np.asarray(ours)
            worst = max(worst, float(np.abs(ours - theirs).max() / (np.abs(ours).max() + 1e-12)))
    return {"bench": "train_cpu_peer_check", "peer": kind, "steps": steps,
            "loss_ours": [round(v, 6) for v in ours_losses], "loss_peer": [round(v, 6) for v in peer_losses],
            "max_rel_weight_diff": float(f"{worst:.3g}"), "same": worst < 1e-3}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=100, help="timed iterations per implementation")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=2, help="alternating runs of each implementation")
    ap.add_argument("--one", choices=("ours", "numpy", "torch"))
    ap.add_argument("--workdir")
    args = ap.parse_args(argv)
    records = (args.warmup + args.iterations) * BATCH
    if args.one:
        setup = json.loads((Path(args.workdir) / "setup.json").read_text())
        emit(measure(args.one, setup, args.warmup, args.iterations))
        return
    kind = peer_kind()
    runs: dict[str, list[dict]] = {"ours": [], kind: []}
    with tempfile.TemporaryDirectory(prefix="ristretto-bench-train-") as tmp:
        wd = Path(tmp)
        setup = prepare(wd, records)
        (wd / "setup.json").write_text(json.dumps(setup))
        emit(check_peer(kind, setup))
        # Alternate the two (ours, peer, ours, peer ...): other work on the machine then
        # tends to hit both alike; the ratio uses each one's best run.
        for rep in range(args.repeat):
            for impl in ("ours", kind):
                out = subprocess.run([sys.executable, "-m", "benchmarks.train", "--one", impl, "--workdir", str(wd),
                                      "--iterations", str(args.iterations), "--warmup", str(args.warmup)],
                                     cwd=REPO, capture_output=True, text=True)
                if out.returncode:
                    emit({"bench": "train_cpu", "net": "lenet", "impl": impl, "error": out.stderr.strip()[-300:]})
                    continue
                rec = json.loads(out.stdout.strip().splitlines()[-1])
                rec["run"] = rep + 1
                runs[impl].append(rec)
                emit(rec)
    best = {impl: max(rs, key=lambda r: r["images_per_s"]) for impl, rs in runs.items() if rs}
    if "ours" in best:
        ours = best["ours"]
        ratio = {"bench": "train_cpu_ratio", "net": "lenet", "batch": BATCH, "peer": kind,
                 "runs_each": args.repeat, "ours_images_per_s": ours["images_per_s"]}
        if kind in best:
            peer = best[kind]
            ratio["peer_images_per_s"] = peer["images_per_s"]
            ratio["ours_over_peer_speed"] = round(ours["images_per_s"] / peer["images_per_s"], 3)
            ratio["ours_over_peer_cpu_per_iter"] = round(min(r["cpu_s_per_iter"] for r in runs["ours"]) /
                                                         min(r["cpu_s_per_iter"] for r in runs[kind]), 3)
            ratio["ours_over_peer_peak_rss"] = round(ours["peak_rss_mb"] / peer["peak_rss_mb"], 3)
        ratio["original_reference_images_per_s"] = CAFFE_REFERENCE_IMAGES_PER_S
        ratio["ours_over_original_reference"] = round(ours["images_per_s"] / CAFFE_REFERENCE_IMAGES_PER_S, 3)
        ratio["note"] = ("best run of each; original_reference_images_per_s: Caffe's LeNet training speed quoted "
                         "in the issue, not measured here")
        emit(ratio)


if __name__ == "__main__":
    main()
