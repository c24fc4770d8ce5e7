"""The reference definitions under models/: current, buildable, and equal to the real nets.

* models/generate.py reproduces every file byte for byte (no hand edits drift);
* every net file builds in TRAIN and TEST (Data layers swapped for Input of the same
  shape, see tests/test_zoo.py), every solver parses and names a net that exists;
* where ../shared/zoo holds the same net, ours equals it layer by layer: names, types,
  bottoms/tops, phase rules, param specs and every layer parameter (paths aside), and the
  shapes after inference; solvers agree on every hyperparameter;
* SqueezeNet v1.1 and GoogLeNet, absent from the zoo, are checked against figures
  published with them (output sizes of the paper's tables, parameter totals).
"""
from __future__ import annotations

import importlib.util
import math

import pytest

from conftest import REPO, SHARED
from test_zoo import build
from ristretto_cli.proto import caffe_pb2

MODELS = REPO / "models"
NETS = sorted(p for p in MODELS.glob("*/*.prototxt") if "solver" not in p.name)
SOLVERS = sorted(p for p in MODELS.glob("*/*.prototxt") if "solver" in p.name)


def _rel(p) -> str:
    return p.relative_to(MODELS).as_posix()


def _generator():
    spec = importlib.util.spec_from_file_location("ristretto_models_generate", MODELS / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _read(rel):
    from ristretto_cli.caffe.prototxt import read_net

    return read_net(MODELS / rel)


# ours -> the zoo's file of the same net
ZOO_TWINS = {
    "lenet/lenet_train_test.prototxt": "lenet/lenet_train_test.prototxt",
    "lenet/lenet.prototxt": "lenet/lenet.prototxt",
    "cifar10_full/cifar10_full_train_test.prototxt": "cifar10/cifar10_full_train_test.prototxt",
    "cifar10_full/cifar10_full.prototxt": "cifar10/cifar10_full.prototxt",
    "cifar10_quick/cifar10_quick_train_test.prototxt": "cifar10/cifar10_quick_train_test.prototxt",
    "cifar10_quick/cifar10_quick.prototxt": "cifar10/cifar10_quick.prototxt",
    "caffenet/train_val.prototxt": "bvlc_reference_caffenet/train_val.prototxt",
    "caffenet/deploy.prototxt": "bvlc_reference_caffenet/deploy.prototxt",
    "squeezenet_v1.0/train_val.prototxt": "squeezenet_v1.0/train_val.prototxt",
    "squeezenet_v1.0/deploy.prototxt": "squeezenet_v1.0/deploy.prototxt",
}
SOLVER_TWINS = {
    "lenet/lenet_solver.prototxt": "lenet/lenet_solver.prototxt",
    "cifar10_full/cifar10_full_solver.prototxt": "cifar10/cifar10_full_solver.prototxt",
    "cifar10_full/cifar10_full_solver_lr1.prototxt": "cifar10/cifar10_full_solver_lr1.prototxt",
    "cifar10_full/cifar10_full_solver_lr2.prototxt": "cifar10/cifar10_full_solver_lr2.prototxt",
    "cifar10_quick/cifar10_quick_solver.prototxt": "cifar10/cifar10_quick_solver.prototxt",
    "cifar10_quick/cifar10_quick_solver_lr1.prototxt": "cifar10/cifar10_quick_solver_lr1.prototxt",
    "caffenet/solver.prototxt": "bvlc_reference_caffenet/solver.prototxt",
    "squeezenet_v1.0/solver.prototxt": "squeezenet_v1.0/solver.prototxt",
}
# Where the files live (paths) and how they run (device, snapshot file format) are ours to choose.
SOLVER_LOCAL_FIELDS = ("net", "snapshot_prefix", "solver_mode", "snapshot_format")
# Layer parameter messages that define what a layer computes or learns.
LAYER_FIELDS = ("convolution_param", "pooling_param", "inner_product_param", "lrn_param", "dropout_param",
                "accuracy_param", "loss_param", "softmax_param", "concat_param", "relu_param",
                "transform_param", "data_param", "input_param")


# --------------------------------------------------------------------------------------
def test_generated_files_are_current():
    gen = _generator()
    produced = gen.files()
    on_disk = {_rel(p) for p in NETS + SOLVERS}
    assert set(produced) == on_disk, "models/ holds files generate.py does not write (or misses some)"
    for rel, text in produced.items():
        assert (MODELS / rel).read_text() == text, f"models/{rel} differs from generate.py; run it"


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
@pytest.mark.parametrize("path", NETS, ids=_rel)
def test_model_builds(path, phase):
    from ristretto_cli.caffe.prototxt import read_net

    net = build(read_net(path), phase)
    types = [l.type for l in net.layers]
    for shape in net.blob_shapes.values():
        assert all(d > 0 for d in shape)
    if "Input" in types and "Softmax" in types:  # deploy net: one Softmax at the end
        assert types[-1] == "Softmax" and net.outputs == ["prob"]
    else:
        # a train/val net scores itself: a loss in TRAIN, accuracy in TEST (SqueezeNet v1.0
        # computes its loss in TRAIN only, v1.1 computes everything in both phases)
        assert ("SoftmaxWithLoss" in types) == (phase == "TRAIN" or "squeezenet_v1.0" not in str(path))
        assert ("Accuracy" in types) == (phase == "TEST" or "squeezenet_v1.1" in str(path))
        assert bool(net.loss_weights) == ("SoftmaxWithLoss" in types)


@pytest.mark.parametrize("path", SOLVERS, ids=_rel)
def test_model_solver_parses_and_names_its_net(path):
    from ristretto_cli.caffe.prototxt import read_solver

    s = read_solver(path)
    assert (REPO / s.net).is_file(), f"{_rel(path)}: net {s.net} missing (paths are relative to the repo root)"
    assert s.base_lr > 0 and s.max_iter > 0 and s.test_iter and s.test_interval > 0
    assert s.snapshot_prefix.startswith(str(MODELS.relative_to(REPO)) + "/")


# --------------------------------------------------------------------------------------
def _normalized(param):
    """Paths cleared and the (upgraded) input layer's name ignored: only structure remains."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    for lp in out.layer:
        lp.data_param.ClearField("source")
        lp.transform_param.ClearField("mean_file")
        if lp.type == "Input":
            lp.name = "<input>"
    return out


@pytest.mark.parametrize("ours", sorted(ZOO_TWINS), ids=str)
def test_model_equals_zoo_net_layer_by_layer(ours):
    from ristretto_cli.caffe.prototxt import read_net

    zoo_path = SHARED / "zoo" / ZOO_TWINS[ours]
    if not zoo_path.exists():
        pytest.skip(f"{zoo_path} not present")
    raw_a, raw_b = _read(ours), read_net(zoo_path)
    a, b = _normalized(raw_a), _normalized(raw_b)
    assert a.name == b.name
    assert [l.name for l in a.layer] == [l.name for l in b.layer]
    for la, lb in zip(a.layer, b.layer):
        where = f"{ours}: layer {la.name}"
        assert la.type == lb.type, where
        assert list(la.bottom) == list(lb.bottom) and list(la.top) == list(lb.top), where
        assert list(la.include) == list(lb.include) and list(la.exclude) == list(lb.exclude), where
        assert list(la.param) == list(lb.param), f"{where}: param specs"
        assert list(la.loss_weight) == list(lb.loss_weight), where
        for field in LAYER_FIELDS:
            assert getattr(la, field) == getattr(lb, field), f"{where}: {field}"
        assert la == lb, where  # nothing else differs either
    for phase in ("TRAIN", "TEST"):
        na, nb = build(raw_a, phase), build(raw_b, phase)
        named = lambda net: [n for n, l in zip(net.layer_names, net.layers) if l.type != "Input"]  # noqa: E731
        assert named(na) == named(nb)
        assert na.blob_shapes == nb.blob_shapes, phase
        assert na.loss_weights == nb.loss_weights, phase
        assert [[tuple(x.shape) for x in l.blobs] for l in na.layers] == \
            [[tuple(x.shape) for x in l.blobs] for l in nb.layers], phase


@pytest.mark.parametrize("ours", sorted(SOLVER_TWINS), ids=str)
def test_model_solver_equals_zoo_solver(ours):
    from ristretto_cli.caffe.prototxt import read_solver

    zoo_path = SHARED / "zoo" / SOLVER_TWINS[ours]
    if not zoo_path.exists():
        pytest.skip(f"{zoo_path} not present")
    a, b = read_solver(MODELS / ours), read_solver(zoo_path)
    for s in (a, b):
        for field in SOLVER_LOCAL_FIELDS:
            s.ClearField(field)
    assert a == b


# --------------------------------------------------------------------------------------
# Nets the zoo does not hold: published figures
# --------------------------------------------------------------------------------------
def _params(net) -> int:
    return sum(math.prod(b.shape) for l in net.layers for b in l.blobs)


def test_squeezenet_v1_1_matches_its_description():
    """v1.1 (DeepScale README): conv1 = 64 filters 3x3/2, max pools after conv1, fire3 and
    fire5 (not fire4/fire8), fire modules as in v1.0, conv10 without padding -> 13x13."""
    net = build(_read("squeezenet_v1.1/deploy.prototxt"), "TEST")
    s = net.blob_shapes
    assert s["conv1"] == (10, 64, 113, 113)  # (227 - 3) / 2 + 1
    assert s["pool1"] == (10, 64, 56, 56)  # ceil((113 - 3) / 2) + 1
    assert s["fire3/concat"] == (10, 128, 56, 56) and s["pool3"] == (10, 128, 28, 28)
    assert s["fire5/concat"] == (10, 256, 28, 28) and s["pool5"] == (10, 256, 14, 14)
    assert s["fire9/concat"] == (10, 512, 14, 14)
    assert s["conv10"] == (10, 1000, 14, 14) and s["pool10"] == (10, 1000, 1, 1)
    assert "pool4" not in s and "pool8" not in s
    # torchvision's squeezenet1_1 / squeezenet1_0 (the same Caffe weights) report these totals
    assert _params(net) == 1_235_496
    assert _params(build(_read("squeezenet_v1.0/deploy.prototxt"), "TEST")) == 1_248_424
    # the rest of v1.1 is v1.0's
    v10 = _read("squeezenet_v1.0/train_val.prototxt")
    v11 = _read("squeezenet_v1.1/train_val.prototxt")
    fires = lambda p: [(l.name, l.convolution_param) for l in p.layer if l.name.startswith("fire")]  # noqa: E731
    assert fires(v10) == fires(v11)
    assert [l for l in v10.layer if l.type == "Data"] == [l for l in v11.layer if l.type == "Data"]


def test_squeezenet_v1_1_train_val_scores_in_both_phases():
    for phase in ("TRAIN", "TEST"):
        net = build(_read("squeezenet_v1.1/train_val.prototxt"), phase)
        assert {"loss", "accuracy", "accuracy_top5"} <= set(net.outputs)
        assert net.layer("accuracy_top5").param.accuracy_param.top_k == 5


# GoogLeNet, Szegedy et al. 2015, Table 1: output size of each stage (channels x H x W at 224)
GOOGLENET_TABLE1 = {
    "conv1/7x7_s2": (64, 112, 112), "pool1/3x3_s2": (64, 56, 56), "conv2/3x3": (192, 56, 56),
    "pool2/3x3_s2": (192, 28, 28), "inception_3a/output": (256, 28, 28), "inception_3b/output": (480, 28, 28),
    "pool3/3x3_s2": (480, 14, 14), "inception_4a/output": (512, 14, 14), "inception_4b/output": (512, 14, 14),
    "inception_4c/output": (512, 14, 14), "inception_4d/output": (528, 14, 14),
    "inception_4e/output": (832, 14, 14), "pool4/3x3_s2": (832, 7, 7), "inception_5a/output": (832, 7, 7),
    "inception_5b/output": (1024, 7, 7), "pool5/7x7_s1": (1024, 1, 1), "loss3/classifier": (1000,),
}


def test_googlenet_matches_table_1():
    net = build(_read("googlenet/deploy.prototxt"), "TEST")
    for blob, dims in GOOGLENET_TABLE1.items():
        assert net.blob_shapes[blob] == (10, *dims), blob
    # 5x5 branches really are 5x5 (pad 2), pool branches 3x3/1 max with pad 1
    for l in net.layers:
        if l.name.endswith("/5x5"):
            assert tuple(l.param.convolution_param.kernel_size) == (5,) and tuple(l.param.convolution_param.pad) == (2,)
        if l.name.endswith("/pool") and l.name.startswith("inception"):
            pp = l.param.pooling_param
            assert (pp.pool, pp.kernel_size, pp.stride, pp.pad) == (caffe_pb2.PoolingParameter.MAX, 3, 1, 1)
    # bvlc_googlenet.caffemodel: 6,998,552 weights on the main path, 13,378,280 with both
    # auxiliary classifiers (53.5 MB of float32)
    assert _params(net) == 6_998_552
    train = build(_read("googlenet/train_val.prototxt"), "TRAIN")
    assert _params(train) == 13_378_280


def test_googlenet_train_val_auxiliary_heads():
    """loss1 on inception_4a, loss2 on inception_4d: 5x5/3 average pool -> 4x4, 128 1x1 conv,
    1024 fc, 70% dropout, 1000-way classifier, weight 0.3; the main loss weighs 1."""
    for phase in ("TRAIN", "TEST"):
        net = build(_read("googlenet/train_val.prototxt"), phase)
        n = 32 if phase == "TRAIN" else 50
        assert net.blob_shapes["data"] == (n, 3, 224, 224)
        assert net.loss_weights == {"loss1/loss1": pytest.approx(0.3), "loss2/loss2": pytest.approx(0.3),
                                    "loss3/loss3": 1.0}
        for k, src in ((1, "inception_4a/output"), (2, "inception_4d/output")):
            assert net.bottom_names[net.layer_names.index(f"loss{k}/ave_pool")][0].startswith(src)
            assert net.blob_shapes[f"loss{k}/ave_pool"] == (n, 512 if k == 1 else 528, 4, 4)
            assert net.blob_shapes[f"loss{k}/fc"] == (n, 1024)
            assert net.layer(f"loss{k}/drop_fc").param.dropout_param.dropout_ratio == pytest.approx(0.7)
        accuracies = {l.name for l in net.layers if l.type == "Accuracy"}
        assert accuracies == (set() if phase == "TRAIN" else
                              {f"loss{k}/top-{t}" for k in (1, 2, 3) for t in (1, 5)})
    deploy = _read("googlenet/deploy.prototxt")
    train_val = _read("googlenet/train_val.prototxt")
    main_path = {l.name: l for l in train_val.layer if not l.name.startswith(("loss1", "loss2"))}
    for l in deploy.layer:
        if l.type not in ("Input", "Softmax"):
            assert l == main_path[l.name], l.name


# --------------------------------------------------------------------------------------
# ResNet-50 and MobileNet v1/v2: the published totals and the published layout
# --------------------------------------------------------------------------------------
def _learned(net) -> int:
    """Weights a framework without Caffe's BatchNorm statistics counts (torchvision,
    Keras trainable): everything but BatchNorm's three statistics blobs."""
    return sum(math.prod(b.shape) for l in net.layers if l.type != "BatchNorm" for b in l.blobs)


# deploy file -> (learned weights, logits shape, BatchNorm layers)
BN_NETS = {
    # torchvision resnet50: 25,557,032 parameters
    "resnet50": (25_557_032, (1, 1000), 53),
    # Keras MobileNet(alpha=1.0, 224): 4,231,976 trainable parameters
    "mobilenet_v1": (4_231_976, (1, 1000, 1, 1), 27),
    # torchvision mobilenet_v2: 3,504,872; shicai's Caffe file also expands the first
    # block (32 -> 32, 1x1: 1024 weights + 64 scale/bias)
    "mobilenet_v2": (3_504_872 + 1088, (1, 1000, 1, 1), 53),
}


@pytest.mark.parametrize("name", sorted(BN_NETS))
def test_batchnorm_net_matches_published_figures(name):
    params, logits, n_bn = BN_NETS[name]
    net = build(_read(f"{name}/deploy.prototxt"), "TEST")
    assert _learned(net) == params
    assert net.blob_shapes[net.bottom_names[-1][0]] == logits
    types = [l.type for l in net.layers]
    assert types.count("BatchNorm") == n_bn == types.count("Scale")
    for i, l in enumerate(net.layers):
        if l.type in ("BatchNorm", "Scale"):  # in place on a bias-free convolution's top
            assert net.bottom_names[i] == net.top_names[i]
        if l.type == "BatchNorm":
            assert l.param.batch_norm_param.use_global_stats
            prev = net.layers[i - 1]
            assert prev.type == "Convolution" and not prev.param.convolution_param.bias_term
    # the train/val net is the deploy net with data, losses and trainable statistics
    train = build(_read(f"{name}/train_val.prototxt"), "TRAIN")
    assert _learned(train) == params
    assert all(not l.use_global_stats for l in train.layers if l.type == "BatchNorm")
    deploy = _read(f"{name}/deploy.prototxt")
    tv = {l.name: l for l in _read(f"{name}/train_val.prototxt").layer}
    for l in deploy.layer:
        if l.type in ("Input", "Softmax"):
            continue
        other = tv[l.name]
        assert (l.type, list(l.bottom), list(l.top)) == (other.type, list(other.bottom), list(other.top))
        assert l.convolution_param.num_output == other.convolution_param.num_output, l.name
        assert l.convolution_param.group == other.convolution_param.group, l.name


def test_resnet50_stages():
    s = build(_read("resnet50/deploy.prototxt"), "TEST").blob_shapes
    assert s["conv1"] == (1, 64, 112, 112) and s["pool1"] == (1, 64, 56, 56)
    assert s["res2c"] == (1, 256, 56, 56) and s["res3d"] == (1, 512, 28, 28)
    assert s["res4f"] == (1, 1024, 14, 14) and s["res5c"] == (1, 2048, 7, 7)
    assert s["pool5"] == (1, 2048, 1, 1)


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
def test_mobilenet_depthwise_layers(name):
    """Depthwise convolutions are Convolutions with group == channels == num_output, 3x3 pad 1."""
    net = build(_read(f"{name}/deploy.prototxt"), "TEST")
    dw = [l for l in net.layers if l.type == "Convolution" and l.group > 1]
    assert len(dw) == (13 if name == "mobilenet_v1" else 17)
    for l in dw:
        assert l.group == l.channels == l.num_output and l.geom.kernel == (3, 3) and l.geom.pad == (1, 1)
    s = net.blob_shapes
    if name == "mobilenet_v1":
        assert s["conv6/sep"] == (1, 1024, 7, 7)
    else:
        assert s["conv6_3/linear"] == (1, 320, 7, 7) and s["conv6_4"] == (1, 1280, 7, 7)
        blocks = [l.name for l in net.layers if l.type == "Eltwise"]
        assert len(blocks) == 10  # the inverted residual connections of Sandler et al. Table 2
