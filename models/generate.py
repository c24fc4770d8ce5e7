#!/usr/bin/env python3
"""Write the reference network definitions under models/ from compact descriptions.

Each net is described once, as Python, from its published architecture (the paper and
the authors' released Caffe definition); the train/val and deploy variants come out of
the same description, so they cannot drift apart. Run ``python models/generate.py`` to
rewrite the files; ``python models/generate.py --check`` exits 1 when a file on disk
differs from what this script produces (tests/test_models.py runs the same check).

Sources of the facts (architecture, fillers, multipliers, solver schedules):
  LeNet, CIFAR-10 full/quick, CaffeNet: BVLC Caffe 1.0 examples and models (BSD-2);
  SqueezeNet v1.0 / v1.1: Iandola et al. 2016, arXiv:1602.07360, DeepScale/SqueezeNet (BSD-2);
  GoogLeNet: Szegedy et al. 2015, arXiv:1409.4842, Caffe's bvlc_googlenet (BSD-2, unrestricted);
  ResNet-50: He et al. 2016, arXiv:1512.03385, KaimingHe/deep-residual-networks (deploy file; the
    train/val file adds Caffe's usual BatchNorm/Scale training settings, which were not published);
  MobileNet v1 / v2: Howard et al. 2017, arXiv:1704.04861; Sandler et al. 2018, arXiv:1801.04381,
    layer names and settings of shicai/MobileNet-Caffe (BSD-3).

Paths inside the files (LMDB sources, mean files, snapshot prefixes) follow Caffe's layout
relative to the working directory (``examples/mnist/mnist_train_lmdb`` ...); the solvers
name their nets as ``models/<net>/<file>`` so they run from the repository root.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------------------
# A tiny prototxt writer. A message is a list of (field, value) pairs; a value is a str
# (written quoted), an Enum (written bare), a bool, a number, or a nested message.
# --------------------------------------------------------------------------------------
class Enum(str):
    """An enum constant (MAX, TRAIN, LMDB ...): written without quotes."""


def _scalar(v) -> str:
    if isinstance(v, Enum):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else repr(v)  # 1.0 -> "1", 5e-05 -> "5e-05"
    raise TypeError(f"cannot write {v!r}")


def render_message(fields, indent: int = 0) -> list[str]:
    pad = "  " * indent
    out = []
    for key, value in fields:
        if isinstance(value, list):
            out.append(f"{pad}{key} {{")
            out.extend(render_message(value, indent + 1))
            out.append(f"{pad}}}")
        else:
            out.append(f"{pad}{key}: {_scalar(value)}")
    return out


def render_file(header: str, fields) -> str:
    lines = [f"# {h}" if h else "#" for h in header.strip("\n").split("\n")]
    return "\n".join(lines + render_message(fields)) + "\n"


# --------------------------------------------------------------------------------------
# Layer constructors (Caffe 1.0 LayerParameter fields)
# --------------------------------------------------------------------------------------
TRAIN, TEST = Enum("TRAIN"), Enum("TEST")
MAX, AVE = Enum("MAX"), Enum("AVE")


def filler(kind: str, **kw):
    f = [("type", kind)]
    for k in ("mean", "std", "value"):
        if k in kw:
            f.append((k, kw[k]))
    return f


def mults(*pairs):
    """``param {}`` specs: each pair is (lr_mult, decay_mult) with None meaning 'not written'."""
    out = []
    for lr, decay in pairs:
        spec = []
        if lr is not None:
            spec.append(("lr_mult", lr))
        if decay is not None:
            spec.append(("decay_mult", decay))
        out.append(("param", spec))
    return out


def layer(name, type_, bottoms=(), tops=(), *body, include=None):
    f = [("name", name), ("type", type_)]
    f += [("bottom", b) for b in bottoms]
    f += [("top", t) for t in tops]
    if include is not None:
        f.append(("include", [("phase", include)]))
    for part in body:
        f.extend(part)
    return ("layer", f)


def input_layer(shape, name="data", top="data"):
    return layer(name, "Input", (), (top,), [("input_param", [("shape", [("dim", d) for d in shape])])])


def data_layer(name, phase, source, batch, transform):
    return layer(name, "Data", (), ("data", "label"),
                 [("transform_param", transform)] if transform else [],
                 [("data_param", [("source", source), ("batch_size", batch), ("backend", Enum("LMDB"))])],
                 include=phase)


def conv(name, bottom, top, num_output, kernel, stride=None, pad=None, group=None,
         weight=None, bias=None, params=()):
    p = [("num_output", num_output)]
    if pad is not None:
        p.append(("pad", pad))
    p.append(("kernel_size", kernel))
    if group is not None:
        p.append(("group", group))
    if stride is not None:
        p.append(("stride", stride))
    if weight is not None:
        p.append(("weight_filler", weight))
    if bias is not None:
        p.append(("bias_filler", bias))
    return layer(name, "Convolution", (bottom,), (top,), list(params), [("convolution_param", p)])


def fc(name, bottom, top, num_output, weight=None, bias=None, params=()):
    p = [("num_output", num_output)]
    if weight is not None:
        p.append(("weight_filler", weight))
    if bias is not None:
        p.append(("bias_filler", bias))
    return layer(name, "InnerProduct", (bottom,), (top,), list(params), [("inner_product_param", p)])


def pool(name, bottom, top, method, kernel=None, stride=None, pad=None, global_pooling=False):
    p = [("pool", method)]
    if global_pooling:
        p.append(("global_pooling", True))
    else:
        p.append(("kernel_size", kernel))
        if stride is not None:
            p.append(("stride", stride))
        if pad is not None:
            p.append(("pad", pad))
    return layer(name, "Pooling", (bottom,), (top,), [("pooling_param", p)])


def relu(name, blob):
    return layer(name, "ReLU", (blob,), (blob,))


def lrn(name, bottom, top, size, alpha, beta, within_channel=False):
    p = [("local_size", size), ("alpha", alpha), ("beta", beta)]
    if within_channel:
        p.append(("norm_region", Enum("WITHIN_CHANNEL")))
    return layer(name, "LRN", (bottom,), (top,), [("lrn_param", p)])


def dropout(name, blob, ratio):
    return layer(name, "Dropout", (blob,), (blob,), [("dropout_param", [("dropout_ratio", ratio)])])


def concat(name, bottoms, top):
    return layer(name, "Concat", tuple(bottoms), (top,))


def softmax(name, bottom, top):
    return layer(name, "Softmax", (bottom,), (top,))


def loss(name, bottom, top, include=None, weight=None):
    extra = [("loss_weight", weight)] if weight is not None else []
    return layer(name, "SoftmaxWithLoss", (bottom, "label"), (top,), extra, include=include)


def accuracy(name, bottom, top, top_k=None, include=TEST):
    extra = [("accuracy_param", [("top_k", top_k)])] if top_k else []
    return layer(name, "Accuracy", (bottom, "label"), (top,), extra, include=include)


# --------------------------------------------------------------------------------------
# LeNet (LeCun et al. 1998 as trained in Caffe's MNIST example)
# --------------------------------------------------------------------------------------
def lenet(deploy: bool):
    xavier, zero = filler("xavier"), filler("constant")
    w2 = mults((1, None), (2, None))
    if deploy:
        head = [input_layer((64, 1, 28, 28))]
    else:
        scale = [("scale", 0.00390625)]
        head = [data_layer("mnist", TRAIN, "examples/mnist/mnist_train_lmdb", 64, scale),
                data_layer("mnist", TEST, "examples/mnist/mnist_test_lmdb", 100, scale)]
    body = [
        conv("conv1", "data", "conv1", 20, 5, stride=1, weight=xavier, bias=zero, params=w2),
        pool("pool1", "conv1", "pool1", MAX, 2, 2),
        conv("conv2", "pool1", "conv2", 50, 5, stride=1, weight=xavier, bias=zero, params=w2),
        pool("pool2", "conv2", "pool2", MAX, 2, 2),
        fc("ip1", "pool2", "ip1", 500, xavier, zero, w2),
        relu("relu1", "ip1"),
        fc("ip2", "ip1", "ip2", 10, xavier, zero, w2),
    ]
    tail = [softmax("prob", "ip2", "prob")] if deploy else [
        accuracy("accuracy", "ip2", "accuracy"), loss("loss", "ip2", "loss")]
    return [("name", "LeNet")] + head + body + tail


LENET_SOLVER = [
    ("net", "models/lenet/lenet_train_test.prototxt"),
    ("test_iter", 100), ("test_interval", 500),
    ("base_lr", 0.01), ("momentum", 0.9), ("weight_decay", 0.0005),
    ("lr_policy", "inv"), ("gamma", 0.0001), ("power", 0.75),
    ("display", 100), ("max_iter", 10000),
    ("snapshot", 5000), ("snapshot_prefix", "models/lenet/lenet"),
    ("solver_mode", Enum("CPU")),
]


# --------------------------------------------------------------------------------------
# CIFAR-10 "full" and "quick" (Krizhevsky's cuda-convnet layers-18pct, Caffe example)
# --------------------------------------------------------------------------------------
def _cifar_head(deploy, mean="examples/cifar10/mean.binaryproto"):
    if deploy:
        return [input_layer((1, 3, 32, 32))]
    t = [("mean_file", mean)]
    return [data_layer("cifar", TRAIN, "examples/cifar10/cifar10_train_lmdb", 100, t),
            data_layer("cifar", TEST, "examples/cifar10/cifar10_test_lmdb", 100, t)]


def cifar10_full(deploy: bool):
    g = (lambda std: None) if deploy else (lambda std: filler("gaussian", std=std))
    zero = None if deploy else filler("constant")
    w2 = mults((1, None), (2, None))
    body = [
        conv("conv1", "data", "conv1", 32, 5, stride=1, pad=2, weight=g(0.0001), bias=zero, params=w2),
        pool("pool1", "conv1", "pool1", MAX, 3, 2),
        relu("relu1", "pool1"),
        lrn("norm1", "pool1", "norm1", 3, 5e-05, 0.75, within_channel=True),
        conv("conv2", "norm1", "conv2", 32, 5, stride=1, pad=2, weight=g(0.01), bias=zero, params=w2),
        relu("relu2", "conv2"),
        pool("pool2", "conv2", "pool2", AVE, 3, 2),
        lrn("norm2", "pool2", "norm2", 3, 5e-05, 0.75, within_channel=True),
        conv("conv3", "norm2", "conv3", 64, 5, stride=1, pad=2, weight=g(0.01), bias=zero),
        relu("relu3", "conv3"),
        pool("pool3", "conv3", "pool3", AVE, 3, 2),
        fc("ip1", "pool3", "ip1", 10, g(0.01), zero, mults((1, 250), (2, 0))),
    ]
    tail = [softmax("prob", "ip1", "prob")] if deploy else [
        accuracy("accuracy", "ip1", "accuracy"), loss("loss", "ip1", "loss")]
    return [("name", "CIFAR10_full_deploy" if deploy else "CIFAR10_full")] + \
        _cifar_head(deploy) + body + tail


def cifar10_quick(deploy: bool):
    g = (lambda std: None) if deploy else (lambda std: filler("gaussian", std=std))
    zero = None if deploy else filler("constant")
    w2 = mults((1, None), (2, None))
    body = [
        conv("conv1", "data", "conv1", 32, 5, stride=1, pad=2, weight=g(0.0001), bias=zero, params=w2),
        pool("pool1", "conv1", "pool1", MAX, 3, 2),
        relu("relu1", "pool1"),
        conv("conv2", "pool1", "conv2", 32, 5, stride=1, pad=2, weight=g(0.01), bias=zero, params=w2),
        relu("relu2", "conv2"),
        pool("pool2", "conv2", "pool2", AVE, 3, 2),
        conv("conv3", "pool2", "conv3", 64, 5, stride=1, pad=2, weight=g(0.01), bias=zero, params=w2),
        relu("relu3", "conv3"),
        pool("pool3", "conv3", "pool3", AVE, 3, 2),
        fc("ip1", "pool3", "ip1", 64, g(0.1), zero, w2),
        fc("ip2", "ip1", "ip2", 10, g(0.1), zero, w2),
    ]
    tail = [softmax("prob", "ip2", "prob")] if deploy else [
        accuracy("accuracy", "ip2", "accuracy"), loss("loss", "ip2", "loss")]
    return [("name", "CIFAR10_quick_test" if deploy else "CIFAR10_quick")] + \
        _cifar_head(deploy) + body + tail


def _cifar_solver(net, base_lr, max_iter, snapshot, test_interval, display):
    return [
        ("net", f"models/{net}/{net}_train_test.prototxt"),
        ("test_iter", 100), ("test_interval", test_interval),
        ("base_lr", base_lr), ("momentum", 0.9), ("weight_decay", 0.004),
        ("lr_policy", "fixed"), ("display", display), ("max_iter", max_iter),
        ("snapshot", snapshot), ("snapshot_prefix", f"models/{net}/{net}"),
        ("solver_mode", Enum("CPU")),
    ]


# --------------------------------------------------------------------------------------
# CaffeNet (AlexNet, Krizhevsky et al. 2012, with pooling before normalization)
# --------------------------------------------------------------------------------------
def _imagenet_data(crop, train_batch, test_batch, mirror=None, mean_file=None, mean_values=None):
    def transform(m):
        t = []
        if m is not None:
            t.append(("mirror", m))
        t.append(("crop_size", crop))
        if mean_file:
            t.append(("mean_file", mean_file))
        for v in mean_values or ():
            t.append(("mean_value", v))
        return t

    return [data_layer("data", TRAIN, "examples/imagenet/ilsvrc12_train_lmdb", train_batch,
                       transform(True if mirror else None)),
            data_layer("data", TEST, "examples/imagenet/ilsvrc12_val_lmdb", test_batch,
                       transform(False if mirror else None))]


def caffenet(deploy: bool):
    def g(std):
        return None if deploy else filler("gaussian", std=std)

    def c(value):
        return None if deploy else filler("constant", value=value)

    w = () if deploy else mults((1, 1), (2, 0))
    if deploy:
        head = [input_layer((10, 3, 227, 227))]
    else:
        head = _imagenet_data(227, 256, 50, mirror=True, mean_file="data/ilsvrc12/imagenet_mean.binaryproto")
    body = [
        conv("conv1", "data", "conv1", 96, 11, stride=4, weight=g(0.01), bias=c(0), params=w),
        relu("relu1", "conv1"),
        pool("pool1", "conv1", "pool1", MAX, 3, 2),
        lrn("norm1", "pool1", "norm1", 5, 0.0001, 0.75),
        conv("conv2", "norm1", "conv2", 256, 5, pad=2, group=2, weight=g(0.01), bias=c(1), params=w),
        relu("relu2", "conv2"),
        pool("pool2", "conv2", "pool2", MAX, 3, 2),
        lrn("norm2", "pool2", "norm2", 5, 0.0001, 0.75),
        conv("conv3", "norm2", "conv3", 384, 3, pad=1, weight=g(0.01), bias=c(0), params=w),
        relu("relu3", "conv3"),
        conv("conv4", "conv3", "conv4", 384, 3, pad=1, group=2, weight=g(0.01), bias=c(1), params=w),
        relu("relu4", "conv4"),
        conv("conv5", "conv4", "conv5", 256, 3, pad=1, group=2, weight=g(0.01), bias=c(1), params=w),
        relu("relu5", "conv5"),
        pool("pool5", "conv5", "pool5", MAX, 3, 2),
        fc("fc6", "pool5", "fc6", 4096, g(0.005), c(1), w),
        relu("relu6", "fc6"),
        dropout("drop6", "fc6", 0.5),
        fc("fc7", "fc6", "fc7", 4096, g(0.005), c(1), w),
        relu("relu7", "fc7"),
        dropout("drop7", "fc7", 0.5),
        fc("fc8", "fc7", "fc8", 1000, g(0.01), c(0), w),
    ]
    tail = [softmax("prob", "fc8", "prob")] if deploy else [
        accuracy("accuracy", "fc8", "accuracy"), loss("loss", "fc8", "loss")]
    return [("name", "CaffeNet")] + head + body + tail


CAFFENET_SOLVER = [
    ("net", "models/caffenet/train_val.prototxt"),
    ("test_iter", 1000), ("test_interval", 1000),
    ("base_lr", 0.01), ("lr_policy", "step"), ("gamma", 0.1), ("stepsize", 100000),
    ("display", 20), ("max_iter", 450000), ("momentum", 0.9), ("weight_decay", 0.0005),
    ("snapshot", 10000), ("snapshot_prefix", "models/caffenet/caffenet_train"),
    ("solver_mode", Enum("CPU")),
]


# --------------------------------------------------------------------------------------
# SqueezeNet v1.0 and v1.1 (Fire modules: squeeze 1x1 -> expand 1x1 || expand 3x3)
# --------------------------------------------------------------------------------------
def fire(n: int, bottom: str, squeeze: int, expand: int, fillers: bool):
    x = filler("xavier") if fillers else None
    p = f"fire{n}/"
    return [
        conv(p + "squeeze1x1", bottom, p + "squeeze1x1", squeeze, 1, weight=x),
        relu(p + "relu_squeeze1x1", p + "squeeze1x1"),
        conv(p + "expand1x1", p + "squeeze1x1", p + "expand1x1", expand, 1, weight=x),
        relu(p + "relu_expand1x1", p + "expand1x1"),
        conv(p + "expand3x3", p + "squeeze1x1", p + "expand3x3", expand, 3, pad=1, weight=x),
        relu(p + "relu_expand3x3", p + "expand3x3"),
        concat(p + "concat", (p + "expand1x1", p + "expand3x3"), p + "concat"),
    ]


#: (fire index, squeeze, expand) and where the stride-2 max pools sit, per version.
SQUEEZE_FIRES = [(2, 16, 64), (3, 16, 64), (4, 32, 128), (5, 32, 128),
                 (6, 48, 192), (7, 48, 192), (8, 64, 256), (9, 64, 256)]
SQUEEZE_VERSIONS = {
    # conv1 (num_output, kernel), fires followed by a max pool, conv10 pad
    "1.0": dict(conv1=(96, 7), pool_after=(4, 8), conv10_pad=1),
    "1.1": dict(conv1=(64, 3), pool_after=(3, 5), conv10_pad=None),
}


def squeezenet(version: str, deploy: bool, fillers: bool):
    v = SQUEEZE_VERSIONS[version]
    x = filler("xavier") if fillers else None
    if deploy:
        head = [input_layer((10, 3, 227, 227))]
    else:
        head = _imagenet_data(227, 32, 25, mean_values=(104, 117, 123))
    n1, k1 = v["conv1"]
    layers = [conv("conv1", "data", "conv1", n1, k1, stride=2, weight=x),
              relu("relu_conv1", "conv1"),
              pool("pool1", "conv1", "pool1", MAX, 3, 2)]
    bottom = "pool1"
    for n, s, e in SQUEEZE_FIRES:
        layers += fire(n, bottom, s, e, fillers)
        bottom = f"fire{n}/concat"
        if n in v["pool_after"]:
            layers.append(pool(f"pool{n}", bottom, f"pool{n}", MAX, 3, 2))
            bottom = f"pool{n}"
    layers += [
        dropout("drop9", bottom, 0.5),
        conv("conv10", bottom, "conv10", 1000, 1, pad=v["conv10_pad"],
             weight=filler("gaussian", mean=0.0, std=0.01) if fillers else None),
        relu("relu_conv10", "conv10"),
        pool("pool10", "conv10", "pool10", AVE, global_pooling=True),
    ]
    if deploy:
        tail = [softmax("prob", "pool10", "prob")]
    elif version == "1.0":
        tail = [loss("loss", "pool10", "loss", include=TRAIN),
                accuracy("accuracy", "pool10", "accuracy"),
                accuracy("accuracy_top5", "pool10", "accuracy_top5", top_k=5)]
    else:  # v1.1 computes the loss and both accuracies in every phase
        tail = [loss("loss", "pool10", "loss"),
                accuracy("accuracy", "pool10", "accuracy", include=None),
                accuracy("accuracy_top5", "pool10", "accuracy_top5", top_k=5, include=None)]
    return head + layers + tail


def squeezenet_solver(version: str):
    return [
        ("net", f"models/squeezenet_v{version}/train_val.prototxt"),
        ("test_iter", 2000), ("test_interval", 1000), ("test_initialization", False),
        ("base_lr", 0.04), ("lr_policy", "poly"), ("power", 1.0),
        ("momentum", 0.9), ("weight_decay", 0.0002),
        ("iter_size", 16), ("max_iter", 170000),
        ("display", 40), ("average_loss", 40),
        ("snapshot", 1000), ("snapshot_prefix", f"models/squeezenet_v{version}/train"),
        ("random_seed", 42), ("solver_mode", Enum("CPU")),
    ]


# --------------------------------------------------------------------------------------
# GoogLeNet (Inception v1), the BVLC Caffe replication
# --------------------------------------------------------------------------------------
#: name: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) — Table 1 of the paper.
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


def _gconv(name, bottom, num_output, kernel, stride=None, pad=None, bias=0.2):
    return conv(name, bottom, name, num_output, kernel, stride=stride, pad=pad,
                weight=filler("xavier"), bias=filler("constant", value=bias), params=mults((1, 1), (2, 0)))


def _gfc(name, bottom, num_output, bias):
    return fc(name, bottom, name, num_output, filler("xavier"), filler("constant", value=bias),
              mults((1, 1), (2, 0)))


def inception(tag: str, bottom: str):
    n1, r3, n3, r5, n5, pp = INCEPTION[tag]
    p = f"inception_{tag}/"
    return [
        _gconv(p + "1x1", bottom, n1, 1), relu(p + "relu_1x1", p + "1x1"),
        _gconv(p + "3x3_reduce", bottom, r3, 1), relu(p + "relu_3x3_reduce", p + "3x3_reduce"),
        _gconv(p + "3x3", p + "3x3_reduce", n3, 3, pad=1), relu(p + "relu_3x3", p + "3x3"),
        _gconv(p + "5x5_reduce", bottom, r5, 1), relu(p + "relu_5x5_reduce", p + "5x5_reduce"),
        _gconv(p + "5x5", p + "5x5_reduce", n5, 5, pad=2), relu(p + "relu_5x5", p + "5x5"),
        pool(p + "pool", bottom, p + "pool", MAX, 3, 1, 1),
        _gconv(p + "pool_proj", p + "pool", pp, 1), relu(p + "relu_pool_proj", p + "pool_proj"),
        concat(p + "output", (p + "1x1", p + "3x3", p + "5x5", p + "pool_proj"), p + "output"),
    ]


def auxiliary_head(k: int, bottom: str):
    """The training-only side classifiers loss1 (on 4a) and loss2 (on 4d), weight 0.3."""
    p = f"loss{k}/"
    return [
        pool(p + "ave_pool", bottom, p + "ave_pool", AVE, 5, 3),
        _gconv(p + "conv", p + "ave_pool", 128, 1), relu(p + "relu_conv", p + "conv"),
        _gfc(p + "fc", p + "conv", 1024, 0.2), relu(p + "relu_fc", p + "fc"),
        dropout(p + "drop_fc", p + "fc", 0.7),
        _gfc(p + "classifier", p + "fc", 1000, 0),
        loss(p + "loss", p + "classifier", f"{p}loss{k}", weight=0.3),
        accuracy(p + "top-1", p + "classifier", p + "top-1"),
        accuracy(p + "top-5", p + "classifier", p + "top-5", top_k=5),
    ]


def googlenet(deploy: bool):
    if deploy:
        head = [input_layer((10, 3, 224, 224))]
    else:
        head = _imagenet_data(224, 32, 50, mirror=True, mean_values=(104, 117, 123))
    L = [
        _gconv("conv1/7x7_s2", "data", 64, 7, stride=2, pad=3), relu("conv1/relu_7x7", "conv1/7x7_s2"),
        pool("pool1/3x3_s2", "conv1/7x7_s2", "pool1/3x3_s2", MAX, 3, 2),
        lrn("pool1/norm1", "pool1/3x3_s2", "pool1/norm1", 5, 0.0001, 0.75),
        _gconv("conv2/3x3_reduce", "pool1/norm1", 64, 1), relu("conv2/relu_3x3_reduce", "conv2/3x3_reduce"),
        _gconv("conv2/3x3", "conv2/3x3_reduce", 192, 3, pad=1), relu("conv2/relu_3x3", "conv2/3x3"),
        lrn("conv2/norm2", "conv2/3x3", "conv2/norm2", 5, 0.0001, 0.75),
        pool("pool2/3x3_s2", "conv2/norm2", "pool2/3x3_s2", MAX, 3, 2),
    ]
    bottom = "pool2/3x3_s2"
    for tag in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"):
        L += inception(tag, bottom)
        bottom = f"inception_{tag}/output"
        if tag == "3b":
            L.append(pool("pool3/3x3_s2", bottom, "pool3/3x3_s2", MAX, 3, 2))
            bottom = "pool3/3x3_s2"
        elif tag == "4e":
            L.append(pool("pool4/3x3_s2", bottom, "pool4/3x3_s2", MAX, 3, 2))
            bottom = "pool4/3x3_s2"
        elif tag == "4a" and not deploy:
            L += auxiliary_head(1, bottom)
        elif tag == "4d" and not deploy:
            L += auxiliary_head(2, bottom)
    L += [
        pool("pool5/7x7_s1", bottom, "pool5/7x7_s1", AVE, 7, 1),
        dropout("pool5/drop_7x7_s1", "pool5/7x7_s1", 0.4),
        _gfc("loss3/classifier", "pool5/7x7_s1", 1000, 0),
    ]
    if deploy:
        L.append(softmax("prob", "loss3/classifier", "prob"))
    else:
        L += [loss("loss3/loss3", "loss3/classifier", "loss3/loss3", weight=1),
              accuracy("loss3/top-1", "loss3/classifier", "loss3/top-1"),
              accuracy("loss3/top-5", "loss3/classifier", "loss3/top-5", top_k=5)]
    return [("name", "GoogleNet")] + head + L


def googlenet_solver(quick: bool):
    sched = [("lr_policy", "poly"), ("power", 0.5), ("max_iter", 2400000)] if quick else \
        [("lr_policy", "step"), ("stepsize", 320000), ("gamma", 0.96), ("max_iter", 10000000)]
    return [
        ("net", "models/googlenet/train_val.prototxt"),
        ("test_iter", 1000), ("test_interval", 4000), ("test_initialization", False),
        ("display", 40), ("average_loss", 40), ("base_lr", 0.01),
        *sched,
        ("momentum", 0.9), ("weight_decay", 0.0002),
        ("snapshot", 40000),
        ("snapshot_prefix", "models/googlenet/bvlc_googlenet" + ("_quick" if quick else "")),
        ("solver_mode", Enum("CPU")),
    ]


# --------------------------------------------------------------------------------------
# Nets with batch normalization: Convolution (no bias) -> BatchNorm -> Scale (bias), the
# two normalization layers in place on the convolution's top, as the published files.
# --------------------------------------------------------------------------------------
BN_STATS = mults((0, 0), (0, 0), (0, 0))  # the statistics are not learned


def conv_bn(name, bottom, top, num_output, kernel, stride=None, pad=None, group=None, deploy=True,
            bn=None, scale=None, weight=None, relu_name=None, names=None):
    """Convolution without bias, BatchNorm + Scale in place, optionally a ReLU in place.

    ``names`` = (batch norm layer, scale layer); ``deploy`` nets fix the statistics
    (use_global_stats: true), train/val nets let Caffe pick them by phase.
    """
    bn_name, scale_name = names
    p = [("num_output", num_output), ("bias_term", False)]
    if pad is not None:
        p.append(("pad", pad))
    p.append(("kernel_size", kernel))
    if group is not None:
        p.append(("group", group))
    if stride is not None:
        p.append(("stride", stride))
    if weight is not None and not deploy:
        p.append(("weight_filler", weight))
    out = [layer(name, "Convolution", (bottom,), (top,), [] if deploy else mults((1, 1)),
                 [("convolution_param", p)])]
    bnp = [("use_global_stats", True)] if deploy else []
    bnp += bn or []
    out.append(layer(bn_name, "BatchNorm", (top,), (top,), [] if deploy else BN_STATS,
                     [("batch_norm_param", bnp)] if bnp else []))
    sp = [("bias_term", True)] + (scale or [])
    out.append(layer(scale_name, "Scale", (top,), (top,), [] if deploy else mults((1, 0), (1, 0)),
                     [("scale_param", sp)]))
    if relu_name:
        out.append(relu(relu_name, top))
    return out


def eltwise(name, bottoms, top):
    return layer(name, "Eltwise", tuple(bottoms), (top,))


def _bn_head(deploy, crop=224, train_batch=32, test_batch=50):
    if deploy:
        return [input_layer((1, 3, crop, crop))]
    return _imagenet_data(crop, train_batch, test_batch, mirror=True, mean_values=(104, 117, 123))


def _bn_tail(deploy, logits):
    if deploy:
        return [softmax("prob", logits, "prob")]
    return [loss("loss", logits, "loss"),
            accuracy("accuracy", logits, "accuracy"),
            accuracy("accuracy_top5", logits, "accuracy_top5", top_k=5)]


# --------------------------------------------------------------------------------------
# ResNet-50 (He et al. 2016, arXiv:1512.03385), KaimingHe/deep-residual-networks
# --------------------------------------------------------------------------------------
#: (stage, blocks, bottleneck width); the output has 4x the width.
RESNET50_STAGES = [(2, 3, 64), (3, 4, 128), (4, 6, 256), (5, 3, 512)]


def resnet50(deploy: bool):
    msra = filler("msra")

    def cbn(name, bottom, num_output, kernel, stride=None, pad=None, relu_after=True):
        suffix = name[3:] if name.startswith("res") else "_" + name
        return conv_bn(name, bottom, name, num_output, kernel, stride=stride, pad=pad, deploy=deploy,
                       weight=msra, relu_name=(name + "_relu") if relu_after else None,
                       names=("bn" + suffix, "scale" + suffix))

    L = cbn("conv1", "data", 64, 7, stride=2, pad=3)
    L.append(pool("pool1", "conv1", "pool1", MAX, 3, 2))
    bottom = "pool1"
    for stage, blocks, width in RESNET50_STAGES:
        for b in range(blocks):
            tag = f"{stage}{chr(ord('a') + b)}"
            stride = 2 if (b == 0 and stage > 2) else None
            if b == 0:  # projection shortcut
                shortcut = f"res{tag}_branch1"
                L += cbn(shortcut, bottom, 4 * width, 1, stride=stride, relu_after=False)
            else:
                shortcut = bottom
            L += cbn(f"res{tag}_branch2a", bottom, width, 1, stride=stride)
            L += cbn(f"res{tag}_branch2b", f"res{tag}_branch2a", width, 3, pad=1)
            L += cbn(f"res{tag}_branch2c", f"res{tag}_branch2b", 4 * width, 1, relu_after=False)
            L.append(eltwise(f"res{tag}", (shortcut, f"res{tag}_branch2c"), f"res{tag}"))
            L.append(relu(f"res{tag}_relu", f"res{tag}"))
            bottom = f"res{tag}"
    L.append(pool("pool5", bottom, "pool5", AVE, 7, 1))
    L.append(fc("fc1000", "pool5", "fc1000", 1000, None if deploy else msra,
                None if deploy else filler("constant"), () if deploy else mults((1, 1), (2, 0))))
    return [("name", "ResNet-50")] + _bn_head(deploy) + L + _bn_tail(deploy, "fc1000")


# --------------------------------------------------------------------------------------
# MobileNet v1 / v2 (Howard et al. 2017, arXiv:1704.04861; Sandler et al. 2018,
# arXiv:1801.04381), as converted to Caffe in shicai/MobileNet-Caffe: depthwise layers
# are Convolutions with group == channels, BatchNorm eps 1e-5, plain ReLU.
# --------------------------------------------------------------------------------------
MOBILENET_BN = [("eps", 1e-05)]
#: (depthwise stride, pointwise outputs) of the 13 separable blocks and their names
MOBILENET_V1_BLOCKS = [("2_1", 1, 64), ("2_2", 2, 128), ("3_1", 1, 128), ("3_2", 2, 256),
                       ("4_1", 1, 256), ("4_2", 2, 512), ("5_1", 1, 512), ("5_2", 1, 512),
                       ("5_3", 1, 512), ("5_4", 1, 512), ("5_5", 1, 512), ("5_6", 2, 1024),
                       ("6", 1, 1024)]


def _mobile_conv(deploy, name, bottom, num_output, kernel, relu_name, stride=None, pad=None, group=None):
    return conv_bn(name, bottom, name, num_output, kernel, stride=stride, pad=pad, group=group,
                   deploy=deploy, bn=MOBILENET_BN, weight=filler("msra"), relu_name=relu_name,
                   names=(name + "/bn", name + "/scale"))


def _mobile_classifier(deploy, bottom):
    p = [("num_output", 1000), ("kernel_size", 1)]
    if not deploy:
        p += [("weight_filler", filler("msra")), ("bias_filler", filler("constant"))]
    return [pool("pool6", bottom, "pool6", AVE, global_pooling=True),
            layer("fc7", "Convolution", ("pool6",), ("fc7",), [] if deploy else mults((1, 1), (2, 0)),
                  [("convolution_param", p)])]


def mobilenet_v1(deploy: bool):
    L = _mobile_conv(deploy, "conv1", "data", 32, 3, "relu1", stride=2, pad=1)
    bottom, channels = "conv1", 32
    for tag, stride, out in MOBILENET_V1_BLOCKS:
        dw, sep = f"conv{tag}/dw", f"conv{tag}/sep"
        L += _mobile_conv(deploy, dw, bottom, channels, 3, f"relu{tag}/dw", stride=stride, pad=1,
                          group=channels)
        L += _mobile_conv(deploy, sep, dw, out, 1, f"relu{tag}/sep")
        bottom, channels = sep, out
    L += _mobile_classifier(deploy, bottom)
    return [("name", "MOBILENET")] + _bn_head(deploy) + L + _bn_tail(deploy, "fc7")


#: inverted residual blocks: (name, expansion outputs, outputs, depthwise stride)
MOBILENET_V2_BLOCKS = [
    ("2_1", 32, 16, 1), ("2_2", 96, 24, 2), ("3_1", 144, 24, 1), ("3_2", 144, 32, 2),
    ("4_1", 192, 32, 1), ("4_2", 192, 32, 1), ("4_3", 192, 64, 2), ("4_4", 384, 64, 1),
    ("4_5", 384, 64, 1), ("4_6", 384, 64, 1), ("4_7", 384, 96, 1), ("5_1", 576, 96, 1),
    ("5_2", 576, 96, 1), ("5_3", 576, 160, 2), ("6_1", 960, 160, 1), ("6_2", 960, 160, 1),
    ("6_3", 960, 320, 1),
]


def mobilenet_v2(deploy: bool):
    L = _mobile_conv(deploy, "conv1", "data", 32, 3, "relu1", stride=2, pad=1)
    bottom, channels = "conv1", 32
    for tag, expand, out, stride in MOBILENET_V2_BLOCKS:
        p = f"conv{tag}/"
        L += _mobile_conv(deploy, p + "expand", bottom, expand, 1, f"relu{tag}/expand")
        L += _mobile_conv(deploy, p + "dwise", p + "expand", expand, 3, f"relu{tag}/dwise",
                          stride=stride if stride > 1 else None, pad=1, group=expand)
        L += _mobile_conv(deploy, p + "linear", p + "dwise", out, 1, None)
        top = p + "linear"
        if stride == 1 and out == channels:  # residual connection
            top = f"block_{tag}"
            L.append(eltwise(top, (bottom, p + "linear"), top))
        bottom, channels = top, out
    L += _mobile_conv(deploy, "conv6_4", bottom, 1280, 1, "relu6_4")
    L += _mobile_classifier(deploy, "conv6_4")
    return [("name", "MOBILENET_V2")] + _bn_head(deploy) + L + _bn_tail(deploy, "fc7")


def _bn_solver(net, base_lr, weight_decay, max_iter):
    return [
        ("net", f"models/{net}/train_val.prototxt"),
        ("test_iter", 1000), ("test_interval", 5000), ("test_initialization", False),
        ("display", 40), ("average_loss", 40), ("base_lr", base_lr),
        ("lr_policy", "poly"), ("power", 1.0), ("max_iter", max_iter),
        ("momentum", 0.9), ("weight_decay", weight_decay),
        ("snapshot", 10000), ("snapshot_prefix", f"models/{net}/{net}"),
        ("solver_mode", Enum("CPU")),
    ]


# --------------------------------------------------------------------------------------
# The files
# --------------------------------------------------------------------------------------
CITE = {
    "lenet": "LeNet on MNIST (LeCun et al. 1998), as in Caffe's MNIST example.",
    "cifar10_full": "CIFAR-10 'full' net (cuda-convnet layers-18pct), as in Caffe's CIFAR-10 example.",
    "cifar10_quick": "CIFAR-10 'quick' net, as in Caffe's CIFAR-10 example.",
    "caffenet": "CaffeNet: AlexNet (Krizhevsky et al. 2012) with pooling before LRN, BVLC reference model.",
    "squeezenet_v1.0": "SqueezeNet v1.0 (Iandola et al. 2016, arXiv:1602.07360).",
    "squeezenet_v1.1": "SqueezeNet v1.1: 64 3x3 conv1 filters, pools after fire3/fire5 (DeepScale).",
    "googlenet": "GoogLeNet / Inception v1 (Szegedy et al. 2015, arXiv:1409.4842), BVLC replication.",
    "resnet50": "ResNet-50 (He et al. 2016, arXiv:1512.03385), as KaimingHe/deep-residual-networks.",
    "mobilenet_v1": "MobileNet v1 (Howard et al. 2017, arXiv:1704.04861), as shicai/MobileNet-Caffe.",
    "mobilenet_v2": "MobileNet v2 (Sandler et al. 2018, arXiv:1801.04381), as shicai/MobileNet-Caffe.",
}


def files() -> dict[str, str]:
    """Every file this script writes: {path relative to models/: text}."""
    out: dict[str, str] = {}

    def put(rel, kind, fields):
        net = rel.split("/")[0]
        header = f"{CITE[net]}\n{kind}\nWritten by models/generate.py; edit that script, not this file."
        out[rel] = render_file(header, fields)

    put("lenet/lenet_train_test.prototxt", "Train/test net.", lenet(False))
    put("lenet/lenet.prototxt", "Deploy net.", lenet(True))
    put("lenet/lenet_solver.prototxt", "Solver.", LENET_SOLVER)

    put("cifar10_full/cifar10_full_train_test.prototxt", "Train/test net.", cifar10_full(False))
    put("cifar10_full/cifar10_full.prototxt", "Deploy net.", cifar10_full(True))
    put("cifar10_full/cifar10_full_solver.prototxt", "Solver, stage 1 (then _lr1, _lr2).",
        _cifar_solver("cifar10_full", 0.001, 60000, 10000, 1000, 200))
    put("cifar10_full/cifar10_full_solver_lr1.prototxt", "Solver, stage 2.",
        _cifar_solver("cifar10_full", 0.0001, 65000, 5000, 1000, 200))
    put("cifar10_full/cifar10_full_solver_lr2.prototxt", "Solver, stage 3.",
        _cifar_solver("cifar10_full", 0.00001, 70000, 5000, 1000, 200))

    put("cifar10_quick/cifar10_quick_train_test.prototxt", "Train/test net.", cifar10_quick(False))
    put("cifar10_quick/cifar10_quick.prototxt", "Deploy net.", cifar10_quick(True))
    put("cifar10_quick/cifar10_quick_solver.prototxt", "Solver, stage 1 (then _lr1).",
        _cifar_solver("cifar10_quick", 0.001, 4000, 4000, 500, 100))
    put("cifar10_quick/cifar10_quick_solver_lr1.prototxt", "Solver, stage 2.",
        _cifar_solver("cifar10_quick", 0.0001, 5000, 5000, 500, 100))

    put("caffenet/train_val.prototxt", "Train/val net.", caffenet(False))
    put("caffenet/deploy.prototxt", "Deploy net.", caffenet(True))
    put("caffenet/solver.prototxt", "Solver.", CAFFENET_SOLVER)

    # The v1.0 deploy file was published without fillers, the v1.1 one with them.
    put("squeezenet_v1.0/train_val.prototxt", "Train/val net.", squeezenet("1.0", False, True))
    put("squeezenet_v1.0/deploy.prototxt", "Deploy net.", squeezenet("1.0", True, False))
    put("squeezenet_v1.0/solver.prototxt", "Solver (batch 32 x iter_size 16 = 512).", squeezenet_solver("1.0"))
    put("squeezenet_v1.1/train_val.prototxt", "Train/val net.", squeezenet("1.1", False, True))
    put("squeezenet_v1.1/deploy.prototxt", "Deploy net.", squeezenet("1.1", True, True))
    put("squeezenet_v1.1/solver.prototxt", "Solver (batch 32 x iter_size 16 = 512).", squeezenet_solver("1.1"))

    put("googlenet/train_val.prototxt", "Train/val net with the two auxiliary classifiers.", googlenet(False))
    put("googlenet/deploy.prototxt", "Deploy net.", googlenet(True))
    put("googlenet/solver.prototxt", "Solver (step schedule).", googlenet_solver(False))
    put("googlenet/quick_solver.prototxt", "Solver (quick, poly schedule).", googlenet_solver(True))

    put("resnet50/train_val.prototxt", "Train/val net (BatchNorm statistics by phase).", resnet50(False))
    put("resnet50/deploy.prototxt", "Deploy net.", resnet50(True))
    put("resnet50/solver.prototxt", "Solver (poly schedule).", _bn_solver("resnet50", 0.1, 0.0001, 600000))
    put("mobilenet_v1/train_val.prototxt", "Train/val net (depthwise = group == channels).", mobilenet_v1(False))
    put("mobilenet_v1/deploy.prototxt", "Deploy net.", mobilenet_v1(True))
    put("mobilenet_v1/solver.prototxt", "Solver (poly schedule).", _bn_solver("mobilenet_v1", 0.1, 4e-05, 600000))
    put("mobilenet_v2/train_val.prototxt", "Train/val net (inverted residuals, linear bottlenecks).",
        mobilenet_v2(False))
    put("mobilenet_v2/deploy.prototxt", "Deploy net.", mobilenet_v2(True))
    put("mobilenet_v2/solver.prototxt", "Solver (poly schedule).", _bn_solver("mobilenet_v2", 0.045, 4e-05, 600000))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="only report files that differ; exit 1 if any")
    args = ap.parse_args(argv)
    stale = []
    for rel, text in files().items():
        path = HERE / rel
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(rel)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(text)
            tmp.replace(path)
            print(f"wrote models/{rel}")
    if args.check and stale:
        print("stale (run python models/generate.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
