"""Folding BatchNorm (+ Scale) into the layer before it (quantize/fold.py, `ristretto fold`)."""
from __future__ import annotations

import numpy as np
import pytest

from ristretto_cli.backend import Backend
from ristretto_cli.caffe.caffemodel import write_caffemodel
from ristretto_cli.caffe.prototxt import parse_net_text, read_net
from ristretto_cli.errors import RistrettoError
from ristretto_cli.net import Net
from ristretto_cli.quantize.fold import fold_files, fold_net
from tests import small_nets


def _random_net(text, seed=0):
    net = Net(parse_net_text(text), "TEST", backend=Backend(np, seed=seed))
    small_nets.random_weights(net, seed)
    return net


def _files(tmp_path, text, seed=0):
    net = _random_net(text, seed)
    model, weights = tmp_path / "m.prototxt", tmp_path / "w.caffemodel"
    model.write_text(text)
    write_caffemodel(weights, net.to_proto(with_weights=True))
    return net, str(model), str(weights)


def _forward_all(net, x):
    """Every blob's value at the end of a forward pass, as float64."""
    net.forward({"data": x})
    return {k: np.asarray(v, np.float64) for k, v in net.blobs.items()}


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _fold_and_compare(tmp_path, text, seed=0):
    net, model, weights = _files(tmp_path, text, seed)
    folded = fold_files(model, weights, str(tmp_path / "f.prototxt"), str(tmp_path / "f.caffemodel"))
    fnet = Net(read_net(str(tmp_path / "f.prototxt")), "TEST", backend=Backend(np))
    fnet.load_weights(str(tmp_path / "f.caffemodel"))
    x = np.random.default_rng(seed + 1).normal(0, 1, net.blob_shapes["data"]).astype(np.float32)
    before, after = _forward_all(net, x), _forward_all(fnet, x)
    common = set(before) & set(after)
    for name in common:
        assert _rel(after[name], before[name]) < 1e-5, name
    return folded, fnet, before, after


@pytest.mark.parametrize("kind", ["resnet", "mobilenet"])
def test_folded_net_computes_the_same_float_outputs(tmp_path, kind):
    text = small_nets.net_text(kind, small_nets.input_head())
    folded, fnet, before, after = _fold_and_compare(tmp_path, text)
    last = small_nets.last_blob(kind)
    assert _rel(after[last], before[last]) < 1e-5
    types = [l.type for l in fnet.layers]
    assert "BatchNorm" not in types and "Scale" not in types   # every one of them folded
    assert not folded.kept
    n_bn = text.count('type: "BatchNorm"')
    assert len(folded.folds) == n_bn


CONV_BN = """
name: "t"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 4 kernel_size: 3 %s } }
%s
layer { name: "out" type: "ReLU" bottom: "%s" top: "out" }
"""


@pytest.mark.parametrize("conv_extra", ["", "bias_term: false"])
@pytest.mark.parametrize("chain, last, with_scale", [
    ('layer { name: "bn" type: "BatchNorm" bottom: "c" top: "c" }', "c", False),
    ('layer { name: "bn" type: "BatchNorm" bottom: "c" top: "c" }\n'
     'layer { name: "sc" type: "Scale" bottom: "c" top: "c" scale_param { bias_term: true } }', "c", True),
    ('layer { name: "bn" type: "BatchNorm" bottom: "c" top: "c" }\n'
     'layer { name: "sc" type: "Scale" bottom: "c" top: "c" }', "c", True),
    ('layer { name: "bn" type: "BatchNorm" bottom: "c" top: "b" }\n'
     'layer { name: "sc" type: "Scale" bottom: "b" top: "s" scale_param { bias_term: true } }', "s", True),
    ('layer { name: "bn" type: "BatchNorm" bottom: "c" top: "b" }', "b", False),
], ids=["inplace-bn", "inplace-bn-scale-bias", "inplace-bn-scale-nobias", "renamed-bn-scale", "renamed-bn"])
def test_fold_cases(tmp_path, conv_extra, chain, last, with_scale):
    text = CONV_BN % (conv_extra, chain, last)
    folded, fnet, before, after = _fold_and_compare(tmp_path, text, seed=3)
    assert [(f.batchnorm, f.scale, f.into, f.top) for f in folded.folds] == \
        [("bn", "sc" if with_scale else None, "conv", last)]
    assert folded.folds[0].added_bias == (conv_extra != "")
    assert [l.name for l in fnet.layers] == ["data", "conv", "out"]
    assert len(fnet.layer("conv").blobs) == 2
    assert _rel(after["out"], before["out"]) < 1e-5


def test_zero_scale_factor_means_zero_statistics(tmp_path):
    text = CONV_BN % ("", 'layer { name: "bn" type: "BatchNorm" bottom: "c" top: "c" '
                          'batch_norm_param { eps: 0.001 } }', "c")
    net = _random_net(text)
    net.layer("bn").blobs[2][...] = 0   # Caffe: scale factor 0 -> mean = var = 0
    model, weights = tmp_path / "m.prototxt", tmp_path / "w.caffemodel"
    model.write_text(text)
    write_caffemodel(weights, net.to_proto(with_weights=True))
    fold_files(str(model), str(weights), str(tmp_path / "f.prototxt"), str(tmp_path / "f.caffemodel"))
    fnet = Net(read_net(str(tmp_path / "f.prototxt")), "TEST")
    fnet.load_weights(str(tmp_path / "f.caffemodel"))
    x = np.random.default_rng(0).normal(size=(2, 3, 6, 6)).astype(np.float32)
    a, b = _forward_all(net, x)["out"], _forward_all(fnet, x)["out"]
    assert _rel(b, a) < 1e-5
    w0 = net.layer("conv").blobs[0]
    np.testing.assert_allclose(fnet.layer("conv").blobs[0], w0 / np.sqrt(0.001), rtol=1e-6)


def test_inner_product_and_grouped_deconvolution_fold(tmp_path):
    text = """
name: "t"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 dim: 3 dim: 3 } } }
layer { name: "up" type: "Deconvolution" bottom: "data" top: "up"
        convolution_param { num_output: 6 kernel_size: 2 stride: 2 group: 2 } }
layer { name: "bn_up" type: "BatchNorm" bottom: "up" top: "up" }
layer { name: "sc_up" type: "Scale" bottom: "up" top: "up" scale_param { bias_term: true } }
layer { name: "ip" type: "InnerProduct" bottom: "up" top: "ip" inner_product_param { num_output: 5 } }
layer { name: "bn_ip" type: "BatchNorm" bottom: "ip" top: "ip" }
layer { name: "ipt" type: "InnerProduct" bottom: "ip" top: "ipt"
        inner_product_param { num_output: 3 transpose: true bias_term: false } }
layer { name: "bn_ipt" type: "BatchNorm" bottom: "ipt" top: "ipt" }
"""
    folded, fnet, before, after = _fold_and_compare(tmp_path, text, seed=5)
    assert [f.into for f in folded.folds] == ["up", "ip", "ipt"]
    assert _rel(after["ipt"], before["ipt"]) < 1e-5


SHARED_INPUT = """
name: "t"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "bn" type: "BatchNorm" bottom: "c" top: "b" }
layer { name: "side" type: "ReLU" bottom: "c" top: "side" }
layer { name: "pool" type: "Pooling" bottom: "data" top: "p" pooling_param { pool: MAX kernel_size: 2 } }
layer { name: "bn_pool" type: "BatchNorm" bottom: "p" top: "p" }
layer { name: "conv2" type: "Convolution" bottom: "b" top: "c2" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "bn2" type: "BatchNorm" bottom: "c2" top: "b2" }
layer { name: "sc2" type: "Scale" bottom: "b2" top: "s2" }
layer { name: "other" type: "ReLU" bottom: "b2" top: "o2" }
"""


def test_what_a_fold_would_change_stays(tmp_path):
    folded, fnet, before, after = _fold_and_compare(tmp_path, SHARED_INPUT, seed=2)
    kept = dict(folded.kept)
    assert set(kept) == {"bn", "bn_pool"}
    assert "'side'" in kept["bn"] and "Pooling layer 'pool'" in kept["bn_pool"]
    # bn2 folds, but its Scale stays: the BatchNorm's output also feeds 'other'
    assert [(f.batchnorm, f.scale) for f in folded.folds] == [("bn2", None)]
    assert [l.name for l in fnet.layers if l.type in ("BatchNorm", "Scale")] == ["bn", "bn_pool", "sc2"]
    for name in ("side", "o2", "s2", "b"):
        assert _rel(after[name], before[name]) < 1e-5


def test_asking_for_a_layer_that_cannot_be_folded_is_a_one_line_error(tmp_path):
    param = parse_net_text(SHARED_INPUT)
    with pytest.raises(RistrettoError, match=r"^layer 'bn' \(BatchNorm\) cannot be folded: 'c' from 'conv' also "
                                             r"feeds 'side'"):
        fold_net(param, {}, only=["bn"])
    with pytest.raises(RistrettoError, match="no layer 'nope' in the net to fold"):
        fold_net(param, {}, only=["nope"])
    with pytest.raises(RistrettoError, match="'side' is a ReLU layer, not a BatchNorm"):
        fold_net(param, {}, only=["side"])


def test_batch_statistics_in_test_phase_are_not_folded():
    param = parse_net_text(CONV_BN % ("", 'layer { name: "bn" type: "BatchNorm" bottom: "c" top: "c" '
                                          'batch_norm_param { use_global_stats: false } }', "c"))
    folded = fold_net(param, {})
    assert not folded.folds and "use_global_stats" in dict(folded.kept)["bn"]


def test_fold_command(tmp_path):
    from ristretto_cli.cli import run

    text = small_nets.net_text("resnet", small_nets.input_head())
    _, model, weights = _files(tmp_path, text)
    out = tmp_path / "f.prototxt"
    assert run(["fold", "--model", model, "--weights", weights, "-o", str(out),
                "--weights-out", str(tmp_path / "f.caffemodel")]) == 0
    assert "BatchNorm" not in out.read_text()
    assert run(["fold", "--model", model, "--weights", weights, "-o", model,
                "--weights-out", str(tmp_path / "g.caffemodel")]) == 2     # never overwrite an input
    assert run(["fold", "--model", model, "--weights", weights, "-o", str(tmp_path / "g.prototxt"),
                "--weights-out", str(tmp_path / "g.caffemodel"), "--layer", "relu1"]) == 2
    assert not (tmp_path / "g.prototxt").exists()
