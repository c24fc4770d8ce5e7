"""Every Caffe net in ../shared/zoo (and data/caffemodels/) builds with Caffe's shapes.

Data layers read LMDBs that the tests do not have, so a helper rewrites each Data
layer into an Input layer of the shape Caffe's DataLayer would give its tops:
``data`` = (batch_size, C, crop or H, crop or W) and ``label`` = (batch_size,), with
C/H/W of the dataset the source names (MNIST 1x28x28, CIFAR-10 3x32x32, ImageNet LMDBs
3x256x256 before the crop). Expected blob shapes below are worked out by hand from
Caffe's rules (convolution floors, pooling ceils, Accuracy/loss tops are scalars).
Every solver prototxt must parse, and the nets inlined in a solver must build.
"""
from __future__ import annotations

import math

import pytest

from conftest import REPO, SHARED
from ristretto_cli.proto import caffe_pb2

# --------------------------------------------------------------------------------------
# Helper: Data layers -> Input layers (also used by tests/test_models.py)
# --------------------------------------------------------------------------------------
#: substring of a data source (case-insensitive) -> (C, H, W) of its records
DATASET_CHW = {
    "mnist": (1, 28, 28),
    "cifar": (3, 32, 32),
    "ilsvrc": (3, 256, 256),
    "imagenet": (3, 256, 256),
}
DATA_LAYER_TYPES = ("Data",)


def dataset_chw(layer) -> tuple[int, int, int]:
    source = layer.data_param.source.lower()
    for key, chw in DATASET_CHW.items():
        if key in source:
            return chw
    raise ValueError(f"layer '{layer.name}': cannot tell the record shape of source "
                     f"'{layer.data_param.source}'; pass chw=")


def data_top_shapes(layer, chw=None) -> list[tuple[int, ...]]:
    """The shapes Caffe's DataLayer gives its tops: (N, C, crop|H, crop|W) and (N,)."""
    c, h, w = chw or dataset_chw(layer)
    crop = layer.transform_param.crop_size
    if crop:
        h = w = crop
    n = layer.data_param.batch_size
    return [(n, c, h, w), (n,)][:len(layer.top)]


def data_layers_to_input(net_param, chw=None):
    """A copy of ``net_param`` whose Data layers are Input layers of the same name, tops,
    include/exclude rules and shapes (see :func:`data_top_shapes`)."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net_param)
    for lp in out.layer:
        if lp.type not in DATA_LAYER_TYPES:
            continue
        new = caffe_pb2.LayerParameter(name=lp.name, type="Input")
        new.top.extend(lp.top)
        new.include.extend(lp.include)
        new.exclude.extend(lp.exclude)
        for shape in data_top_shapes(lp, chw):
            new.input_param.shape.add().dim.extend(shape)
        lp.CopyFrom(new)
    return out


def constant_fillers(net_param):
    """A copy whose weight/bias fillers are all constant: shape inference without spending
    seconds drawing CaffeNet's 61M Gaussian weights."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net_param)
    for lp in out.layer:
        for field in ("convolution_param", "inner_product_param"):
            if lp.HasField(field):
                for f in ("weight_filler", "bias_filler"):
                    if getattr(lp, field).HasField(f):
                        getattr(lp, field).ClearField(f)
    return out


def build(net_param, phase, stages=None, chw=None, fill=False):
    """Net of ``net_param`` with Data layers as Inputs; fillers drawn only when ``fill``."""
    from ristretto_cli.net import Net

    param = data_layers_to_input(net_param, chw)
    return Net(param if fill else constant_fillers(param), phase=phase, stages=stages)


def batch_of(net) -> int:
    return net.blob_shapes[net.inputs[0]][0]


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------
def _is_solver(path) -> bool:
    return "solver" in path.name


def _discover():
    roots = [(SHARED / "zoo", "zoo"), (REPO / "data" / "caffemodels", "data/caffemodels")]
    nets, solvers = [], []
    for root, tag in roots:
        if not root.is_dir():
            continue
        for p in sorted(root.rglob("*.prototxt")):
            rel = f"{tag}/{p.relative_to(root).as_posix()}"
            (solvers if _is_solver(p) else nets).append(pytest.param(p, rel, id=rel))
    skip = pytest.mark.skip(reason=f"{SHARED / 'zoo'} not present")
    nets = nets or [pytest.param(None, "", id="no-zoo", marks=skip)]
    solvers = solvers or [pytest.param(None, "", id="no-zoo", marks=skip)]
    return nets, solvers


NET_FILES, SOLVER_FILES = _discover()

# --------------------------------------------------------------------------------------
# Expected shapes, batch axis left out; () marks a scalar top (loss, accuracy).
# --------------------------------------------------------------------------------------
LENET = {"data": (1, 28, 28), "conv1": (20, 24, 24), "pool1": (20, 12, 12), "conv2": (50, 8, 8),
         "pool2": (50, 4, 4), "ip1": (500,), "ip2": (10,)}
# 32 -> pool 3/2 (ceil) 16 -> 8 -> 4
CIFAR_COMMON = {"data": (3, 32, 32), "conv1": (32, 32, 32), "pool1": (32, 16, 16), "conv2": (32, 16, 16),
                "pool2": (32, 8, 8), "conv3": (64, 8, 8), "pool3": (64, 4, 4)}
CIFAR_FULL = {**CIFAR_COMMON, "norm1": (32, 16, 16), "norm2": (32, 8, 8), "ip1": (10,)}
CIFAR_QUICK = {**CIFAR_COMMON, "ip1": (64,), "ip2": (10,)}
CIFAR_SIGMOID = {**CIFAR_COMMON, "Sigmoid1": (32, 16, 16), "Sigmoid2": (32, 16, 16), "Sigmoid3": (64, 8, 8),
                 "ip1": (10,)}
CIFAR_SIGMOID_BN = {**CIFAR_SIGMOID, "bn1": (32, 16, 16), "bn2": (32, 16, 16), "bn3": (64, 8, 8)}
# 227 -conv11/4-> 55 -pool3/2-> 27 -> 27 -pool-> 13 -> 13 -pool-> 6
CAFFENET = {"data": (3, 227, 227), "conv1": (96, 55, 55), "pool1": (96, 27, 27), "norm1": (96, 27, 27),
            "conv2": (256, 27, 27), "pool2": (256, 13, 13), "norm2": (256, 13, 13), "conv3": (384, 13, 13),
            "conv4": (384, 13, 13), "conv5": (256, 13, 13), "pool5": (256, 6, 6), "fc6": (4096,),
            "fc7": (4096,), "fc8": (1000,)}
# 227 -conv7/2-> 111 -pool-> 55 -pool4-> 27 -pool8-> 13; conv10 pads 1 around a 1x1 kernel -> 15
SQUEEZENET_V10 = {"data": (3, 227, 227), "conv1": (96, 111, 111), "pool1": (96, 55, 55),
                  "fire2/squeeze1x1": (16, 55, 55), "fire2/expand3x3": (64, 55, 55), "fire2/concat": (128, 55, 55),
                  "fire3/concat": (128, 55, 55), "fire4/concat": (256, 55, 55), "pool4": (256, 27, 27),
                  "fire5/concat": (256, 27, 27), "fire6/concat": (384, 27, 27), "fire7/concat": (384, 27, 27),
                  "fire8/concat": (512, 27, 27), "pool8": (512, 13, 13), "fire9/concat": (512, 13, 13),
                  "conv10": (1000, 15, 15), "pool10": (1000, 1, 1)}

SCALAR_TOPS = ("loss", "accuracy", "accuracy_top5")
EXPECTED = {
    "zoo/lenet/lenet_train_test.prototxt": LENET,
    "zoo/lenet/lenet.prototxt": {**LENET, "prob": (10,)},
    "zoo/bvlc_caffe_2014_v1_format/mnist/lenet_train_test.prototxt": LENET,
    "zoo/bvlc_caffe_2014_v1_format/mnist/lenet.prototxt": {**LENET, "prob": (10,)},
    "zoo/cifar10/cifar10_full_train_test.prototxt": CIFAR_FULL,
    "zoo/cifar10/cifar10_full.prototxt": {**CIFAR_FULL, "prob": (10,)},
    "zoo/bvlc_caffe_2014_v1_format/cifar10/cifar10_full_train_test.prototxt": CIFAR_FULL,
    "zoo/bvlc_caffe_2014_v1_format/cifar10/cifar10_full.prototxt": {**CIFAR_FULL, "prob": (10,)},
    "zoo/cifar10/cifar10_quick_train_test.prototxt": CIFAR_QUICK,
    "zoo/cifar10/cifar10_quick.prototxt": {**CIFAR_QUICK, "prob": (10,)},
    "zoo/bvlc_caffe_2014_v1_format/cifar10/cifar10_quick_train_test.prototxt": CIFAR_QUICK,
    "zoo/bvlc_caffe_2014_v1_format/cifar10/cifar10_quick.prototxt": {**CIFAR_QUICK, "prob": (10,)},
    "zoo/cifar10/cifar10_full_sigmoid_train_test.prototxt": CIFAR_SIGMOID,
    "zoo/cifar10/cifar10_full_sigmoid_train_test_bn.prototxt": CIFAR_SIGMOID_BN,
    "zoo/bvlc_reference_caffenet/train_val.prototxt": CAFFENET,
    "zoo/bvlc_reference_caffenet/deploy.prototxt": {**CAFFENET, "prob": (1000,)},
    "zoo/squeezenet_v1.0/train_val.prototxt": SQUEEZENET_V10,
    "zoo/squeezenet_v1.0/deploy.prototxt": {**SQUEEZENET_V10, "prob": (1000, 1, 1)},
}
#: batch sizes Caffe would use: {file: (TRAIN batch, TEST batch)} for train/test nets, deploy batch otherwise
BATCH = {
    "zoo/lenet/lenet_train_test.prototxt": (64, 100),
    "zoo/lenet/lenet.prototxt": (64, 64),
    "zoo/cifar10/cifar10_full_train_test.prototxt": (100, 100),
    "zoo/cifar10/cifar10_full.prototxt": (1, 1),
    "zoo/cifar10/cifar10_full_sigmoid_train_test_bn.prototxt": (100, 1000),
    "zoo/bvlc_reference_caffenet/train_val.prototxt": (256, 50),
    "zoo/bvlc_reference_caffenet/deploy.prototxt": (10, 10),
    "zoo/squeezenet_v1.0/train_val.prototxt": (32, 25),
    "zoo/squeezenet_v1.0/deploy.prototxt": (10, 10),
}


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
@pytest.mark.parametrize("path,rel", NET_FILES)
def test_zoo_net_builds_with_caffe_shapes(path, rel, phase):
    from ristretto_cli.caffe.prototxt import read_net

    param = read_net(path)
    net = build(param, phase)
    assert net.layers, f"{rel}: no layers in {phase}"
    for name, shape in net.blob_shapes.items():
        assert all(d > 0 for d in shape), f"{rel} {phase}: blob {name} has shape {shape}"
    n = batch_of(net)
    if rel in BATCH:
        assert n == BATCH[rel][0 if phase == "TRAIN" else 1]
    for blob, dims in EXPECTED.get(rel, {}).items():
        assert net.blob_shapes[blob] == (n, *dims), f"{rel} {phase}: {blob}"
    for blob in SCALAR_TOPS:
        if blob in net.blob_shapes:
            assert net.blob_shapes[blob] == (), f"{rel} {phase}: {blob} should be a scalar"
    if any(l.type == "SoftmaxWithLoss" for l in net.layers):
        assert net.loss_weights, f"{rel} {phase}: loss layer without loss weight"


def test_known_shapes_caffenet_squeezenet_lenet():
    """The figures the brief names, spelled out once more on the deploy/train files."""
    from ristretto_cli.caffe.prototxt import read_net

    zoo = SHARED / "zoo"
    if not zoo.is_dir():
        pytest.skip(f"{zoo} not present")
    caffenet = build(read_net(zoo / "bvlc_reference_caffenet/deploy.prototxt"), "TEST")
    assert caffenet.blob_shapes["pool5"] == (10, 256, 6, 6)
    assert caffenet.blob_shapes["fc6"] == (10, 4096)
    assert caffenet.blob_shapes["prob"] == (10, 1000)
    squeeze = build(read_net(zoo / "squeezenet_v1.0/train_val.prototxt"), "TEST")
    assert squeeze.blob_shapes["conv10"] == (25, 1000, 15, 15)
    assert squeeze.blob_shapes["pool10"] == (25, 1000, 1, 1)
    assert "loss" not in squeeze.blob_shapes  # its loss layer is TRAIN-only
    squeeze_train = build(read_net(zoo / "squeezenet_v1.0/train_val.prototxt"), "TRAIN")
    assert squeeze_train.blob_shapes["pool10"] == (32, 1000, 1, 1)
    assert "accuracy" not in squeeze_train.blob_shapes
    assert squeeze_train.loss_weights == {"loss": 1.0}
    lenet = build(read_net(zoo / "lenet/lenet_train_test.prototxt"), "TRAIN")
    assert lenet.blob_shapes["ip1"] == (64, 500)
    assert lenet.blob_shapes["label"] == (64,)


def test_parameter_counts_match_published_figures():
    """Learnable parameter totals: CaffeNet 60,965,224 (grouped conv2/4/5), SqueezeNet v1.0
    1,248,424, LeNet 431,080 (20*25+20 + 50*500+50 + 800*500+500 + 500*10+10)."""
    from ristretto_cli.caffe.prototxt import read_net

    zoo = SHARED / "zoo"
    if not zoo.is_dir():
        pytest.skip(f"{zoo} not present")
    for rel, count in [("lenet/lenet.prototxt", 431_080),
                       ("bvlc_reference_caffenet/deploy.prototxt", 60_965_224),
                       ("squeezenet_v1.0/deploy.prototxt", 1_248_424)]:
        net = build(read_net(zoo / rel), "TEST")
        shapes = [tuple(b.shape) for l in net.layers for b in l.blobs]
        assert sum(math.prod(s) for s in shapes) == count, rel


def test_v1_format_nets_equal_their_current_format_twins():
    """The 2014 V1 files upgrade to the same layers (types, tops, params) as today's files."""
    from ristretto_cli.caffe.prototxt import read_net

    zoo = SHARED / "zoo"
    if not zoo.is_dir():
        pytest.skip(f"{zoo} not present")
    for old, new in [("mnist/lenet_train_test.prototxt", "lenet/lenet_train_test.prototxt"),
                     ("cifar10/cifar10_quick_train_test.prototxt", "cifar10/cifar10_quick_train_test.prototxt"),
                     ("cifar10/cifar10_full_train_test.prototxt", "cifar10/cifar10_full_train_test.prototxt")]:
        a = read_net(zoo / "bvlc_caffe_2014_v1_format" / old)
        b = read_net(zoo / new)
        assert [l.name for l in a.layer] == [l.name for l in b.layer], old
        for la, lb in zip(a.layer, b.layer):
            assert la.type == lb.type, (old, la.name)
            assert list(la.bottom) == list(lb.bottom) and list(la.top) == list(lb.top), (old, la.name)
            for field in ("convolution_param", "pooling_param", "inner_product_param", "lrn_param"):
                assert getattr(la, field) == getattr(lb, field), (old, la.name, field)
            assert [(p.lr_mult, p.decay_mult) for p in la.param] == \
                [(p.lr_mult, p.decay_mult) for p in lb.param], (old, la.name)
        for phase in ("TRAIN", "TEST"):
            assert build(a, phase).blob_shapes == build(b, phase).blob_shapes, (old, phase)


@pytest.mark.parametrize("path,rel", SOLVER_FILES)
def test_zoo_solver_parses(path, rel):
    from ristretto_cli.caffe.prototxt import read_solver

    s = read_solver(path)
    assert s.base_lr > 0
    assert s.max_iter > 0
    assert s.net or s.train_net or s.HasField("net_param") or s.HasField("train_net_param")


def test_solver_values_survive_parsing():
    """Spot checks against the text of the files (including the V1 ``solver_type`` era)."""
    from ristretto_cli.caffe.prototxt import read_solver

    zoo = SHARED / "zoo"
    if not zoo.is_dir():
        pytest.skip(f"{zoo} not present")
    s = read_solver(zoo / "lenet/lenet_solver.prototxt")
    assert s.lr_policy == "inv" and s.max_iter == 10000 and s.snapshot == 5000
    assert (s.base_lr, s.gamma, s.power, s.momentum, s.weight_decay) == pytest.approx((0.01, 1e-4, 0.75, 0.9, 5e-4))
    s = read_solver(zoo / "lenet/lenet_solver_adam.prototxt")
    assert s.type == "Adam" and s.momentum2 == pytest.approx(0.999) and s.lr_policy == "fixed"
    s = read_solver(zoo / "lenet/lenet_adadelta_solver.prototxt")
    assert s.type == "AdaDelta" and s.delta == pytest.approx(1e-6) and s.momentum == pytest.approx(0.95)
    s = read_solver(zoo / "lenet/lenet_solver_rmsprop.prototxt")
    assert s.type == "RMSProp" and s.rms_decay == pytest.approx(0.98)
    s = read_solver(zoo / "lenet/lenet_multistep_solver.prototxt")
    assert list(s.stepvalue) == [5000, 7000, 8000, 9000, 9500] and s.gamma == pytest.approx(0.9)
    s = read_solver(zoo / "squeezenet_v1.0/solver.prototxt")
    assert (s.iter_size, s.lr_policy, s.power, s.random_seed) == (16, "poly", 1.0, 42)
    assert s.test_initialization is False and s.average_loss == 40
    s = read_solver(zoo / "lenet/lenet_auto_solver.prototxt")
    assert s.train_net == "mnist/lenet_auto_train.prototxt" and list(s.test_net) == ["mnist/lenet_auto_test.prototxt"]


def test_consolidated_solver_inline_net_builds_per_stage():
    """lenet_consolidated_solver inlines a V1 net whose TEST Data layers differ by stage."""
    from ristretto_cli.caffe.prototxt import read_solver

    path = SHARED / "zoo" / "lenet" / "lenet_consolidated_solver.prototxt"
    if not path.exists():
        pytest.skip(f"{path} not present")
    s = read_solver(path)
    assert list(s.test_iter) == [100, 600]
    assert [list(t.stage) for t in s.test_state] == [["test-on-test-set"], ["test-on-train-set"]]
    assert s.random_seed == 1701
    param = s.net_param
    assert not len(param.layers), "inline V1 net should be upgraded to layer {}"
    train = build(param, "TRAIN")
    assert train.blob_shapes["data"] == (64, 1, 28, 28) and train.blob_shapes["ip1"] == (64, 500)
    for stages in (["test-on-test-set"], ["test-on-train-set"]):
        net = build(param, "TEST", stages=stages)
        assert net.blob_shapes["data"] == (100, 1, 28, 28), stages
        assert net.blob_shapes["accuracy"] == ()
        assert sum(1 for l in net.layers if l.type == "Input") == 1, stages


def test_data_layers_to_input_helper():
    """The rewrite keeps names, tops and phase rules and applies the crop."""
    from google.protobuf import text_format

    p = caffe_pb2.NetParameter()
    text_format.Merge('''
      layer { name: "d" type: "Data" top: "data" top: "label" include { phase: TRAIN }
              transform_param { crop_size: 227 mirror: true } data_param { source: "x/ilsvrc12_train_lmdb" batch_size: 7 } }
      layer { name: "d" type: "Data" top: "data" include { phase: TEST }
              data_param { source: "cifar10_test_lmdb" batch_size: 3 } }
      layer { name: "r" type: "ReLU" bottom: "data" top: "data" }''', p)
    out = data_layers_to_input(p)
    a, b, c = out.layer
    assert (a.type, a.name, list(a.top), a.include[0].phase) == ("Input", "d", ["data", "label"], caffe_pb2.TRAIN)
    assert [list(s.dim) for s in a.input_param.shape] == [[7, 3, 227, 227], [7]]
    assert [list(s.dim) for s in b.input_param.shape] == [[3, 3, 32, 32]]
    assert b.include[0].phase == caffe_pb2.TEST and c == p.layer[2]
    assert p.layer[0].type == "Data"  # the input message is left alone
    with pytest.raises(ValueError):
        data_layers_to_input(text_format.Parse(
            'layer { name: "d" type: "Data" top: "data" data_param { source: "foo" batch_size: 1 } }',
            caffe_pb2.NetParameter()))
