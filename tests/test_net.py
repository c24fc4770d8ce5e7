"""The net executor: rule filtering, Split insertion, in-place rebinding, outputs,
summed gradients of shared blobs, weight sharing — checked on tiny nets against
hand-computed values."""
import numpy as np
import pytest
from google.protobuf import text_format

from ristretto_cli.backend import Backend
from ristretto_cli.errors import RistrettoError
from ristretto_cli.net import Net, insert_splits
from ristretto_cli.proto import caffe_pb2


def parse(text):
    return text_format.Parse(text, caffe_pb2.NetParameter())


BRANCHY = """
name: "branchy"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "tin" type: "Input" top: "t" input_param { shape { dim: 2 dim: 2 } } }
layer { name: "a" type: "InnerProduct" bottom: "x" top: "a"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } } }
layer { name: "relu" type: "ReLU" bottom: "a" top: "a" }
layer { name: "b" type: "InnerProduct" bottom: "a" top: "b" inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
layer { name: "c" type: "InnerProduct" bottom: "a" top: "c" inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
layer { name: "sum" type: "Eltwise" bottom: "b" bottom: "c" top: "s" }
layer { name: "loss" type: "EuclideanLoss" bottom: "s" bottom: "t" top: "loss" }
"""


def test_splits_named_like_caffe():
    # 'a' after the in-place ReLU is read twice -> one Split named after the ReLU.
    net = insert_splits(parse(BRANCHY))
    names = [l.name for l in net.layer]
    assert "a_relu_0_split" in names
    split = net.layer[names.index("a_relu_0_split")]
    assert list(split.top) == ["a_relu_0_split_0", "a_relu_0_split_1"]
    b = net.layer[names.index("b")]
    c = net.layer[names.index("c")]
    assert list(b.bottom) == ["a_relu_0_split_0"] and list(c.bottom) == ["a_relu_0_split_1"]


def test_unknown_bottom_is_an_error():
    bad = parse('layer { name: "r" type: "ReLU" bottom: "nope" top: "r" }')
    with pytest.raises(RistrettoError, match="unknown bottom blob 'nope'"):
        insert_splits(bad)


def test_phase_rules_filter_layers():
    text = """
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }
    layer { name: "train_only" type: "ReLU" bottom: "x" top: "y" include { phase: TRAIN } }
    layer { name: "test_only" type: "Sigmoid" bottom: "x" top: "y" include { phase: TEST } }
    layer { name: "staged" type: "TanH" bottom: "x" top: "z" include { stage: "deploy" } }
    layer { name: "not_lvl" type: "AbsVal" bottom: "x" top: "w" exclude { min_level: 1 } }
    """
    be = Backend(np, 0)

    def names(net):  # Splits are inserted after filtering; leave them out here
        return [n for n in net.layer_names if not n.endswith("_split")]

    assert names(Net(parse(text), "TRAIN", be)) == ["in", "train_only", "not_lvl"]
    assert names(Net(parse(text), "TEST", be, stages=["deploy"])) == ["in", "test_only", "staged", "not_lvl"]
    assert names(Net(parse(text), "TEST", be, level=2)) == ["in", "test_only"]


def test_given_stages_add_to_the_prototxt_state_like_caffe():
    text = """
    state { stage: "a" }
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }
    layer { name: "need_a" type: "ReLU" bottom: "x" top: "y" include { stage: "a" } }
    layer { name: "need_b" type: "TanH" bottom: "x" top: "z" include { stage: "b" } }
    layer { name: "need_ab" type: "AbsVal" bottom: "x" top: "w" include { stage: "a" stage: "b" } }
    """
    be = Backend(np, 0)
    assert Net(parse(text), "TEST", be).layer_names == ["in", "need_a"]
    names = Net(parse(text), "TEST", be, stages=["b"]).layer_names
    assert [n for n in names if n.startswith("need")] == ["need_a", "need_b", "need_ab"]


def test_forward_backward_against_hand_computation(backend):
    net = Net(parse(BRANCHY), "TRAIN", backend)
    host = backend.to_numpy
    assert net.outputs == ["loss"]
    assert net.loss_weights == {"loss": 1.0}
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    t = rng.standard_normal((2, 2)).astype(np.float32)
    net.forward({"x": backend.asarray(x), "t": backend.asarray(t)})
    Wa, ba = (host(v).astype(np.float64) for v in net.layer("a").blobs)
    Wb, bb = (host(v).astype(np.float64) for v in net.layer("b").blobs)
    Wc, bc = (host(v).astype(np.float64) for v in net.layer("c").blobs)
    h = np.maximum(x @ Wa.T + ba, 0)
    s = h @ Wb.T + bb + h @ Wc.T + bc
    loss = ((s - t) ** 2).sum() / 2 / 2
    assert host(net.blobs["loss"]).reshape(()) == pytest.approx(loss, rel=1e-5)
    assert np.allclose(host(net.blobs["a"]), h, rtol=1e-5, atol=1e-6)  # in-place ReLU rebinds 'a'
    net.zero_diffs()
    diffs = net.backward()
    ds = (s - t) / 2
    dh = ds @ Wb + ds @ Wc                     # the Split sums both branches
    da = dh * (h > 0)
    assert np.allclose(host(net.layer("a").diffs[0]), da.T @ x, rtol=1e-4, atol=1e-6)
    assert np.allclose(host(net.layer("b").diffs[0]), ds.T @ h, rtol=1e-4, atol=1e-6)
    assert "x" not in diffs  # nothing below the inputs needs a gradient


def test_weight_sharing_by_param_name(backend):
    text = """
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "p" type: "InnerProduct" bottom: "x" top: "p" param { name: "w" } param { name: "bias" }
            inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }
    layer { name: "q" type: "InnerProduct" bottom: "p" top: "q" param { name: "w" } param { name: "bias" }
            inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }
    """
    net = Net(parse(text), "TRAIN", backend)
    assert net.layer("p").blobs[0] is net.layer("q").blobs[0]
    assert [r.name for r in net.learnable_params()] == ["w", "bias"]


def test_feeding_unknown_blob_is_an_error():
    net = Net(parse(BRANCHY), "TEST", Backend(np, 0))
    with pytest.raises(RistrettoError, match="no blob 'nope'"):
        net.forward({"nope": np.zeros(1)})


def test_fed_inputs_are_copied(backend):
    net = Net(parse(BRANCHY), "TEST", backend)
    x = backend.asarray(np.ones((2, 3), np.float32))
    net.forward({"x": x, "t": backend.asarray(np.zeros((2, 2), np.float32))})
    assert net.blobs["x"] is not x


# -- in-place layers ----------------------------------------------------------------------
IN_PLACE = """
name: "inplace"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 5 dim: 5 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "y"
        convolution_param { num_output: 4 kernel_size: 3 bias_term: false weight_filler { type: "gaussian" } } }
layer { name: "bn" type: "BatchNorm" bottom: "y" top: "y" }
layer { name: "scale" type: "Scale" bottom: "y" top: "y"
        scale_param { bias_term: true filler { type: "gaussian" } bias_filler { type: "gaussian" } } }
layer { name: "relu" type: "ReLU" bottom: "y" top: "y" relu_param { negative_slope: 0.1 } }
layer { name: "flat" type: "Flatten" bottom: "y" top: "f" }
layer { name: "relu2" type: "ReLU" bottom: "f" top: "f" }
layer { name: "ip" type: "InnerProduct" bottom: "f" top: "z"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "z" bottom: "t" top: "loss" }
layer { name: "tin" type: "Input" top: "t" input_param { shape { dim: 2 dim: 3 } } }
"""


def _in_place_net(backend, phase, allow=True):
    param = parse(IN_PLACE)
    # the target's Input first, before the loss reads it
    layers = list(param.layer)
    param.ClearField("layer")
    param.layer.extend([layers[0], layers[-1]] + layers[1:-1])
    net = Net(param, phase, backend=Backend(backend.xp, seed=3, device=backend.device))
    bn = net.layer("bn")
    rng = np.random.default_rng(4)
    bn.blobs[0][...] = backend.asarray(rng.standard_normal(4).astype(np.float32))
    bn.blobs[1][...] = backend.asarray(rng.uniform(0.5, 2, 4).astype(np.float32))
    bn.blobs[2][...] = 1.0
    if not allow:
        for layer in net.layers:
            layer.runs_in_place = False
    return net


def _calls(net):
    seen = []
    for layer in net.layers:
        if layer.runs_in_place:
            run = layer.forward_in_place

            def spy(bottoms, run=run, layer=layer):
                tops = run(bottoms)
                seen.append((layer.name, tops[0] is bottoms[0]))
                return tops
            layer.forward_in_place = spy
    return seen


def test_in_place_layers_write_into_their_bottom_in_test(backend):
    """BatchNorm, Scale and ReLU overwrite the convolution's output (top == bottom); the
    ReLU on a Flatten view of a blob still bound to another name does not (the 'y' blob
    keeps its negative values), and every blob equals the out-of-place net's."""
    x = np.random.default_rng(5).standard_normal((2, 3, 5, 5)).astype(np.float32)
    t = np.zeros((2, 3), np.float32)
    net, ref = _in_place_net(backend, "TEST"), _in_place_net(backend, "TEST", allow=False)
    seen = _calls(net)
    net.forward({"x": x, "t": t})
    ref.forward({"x": x, "t": t})
    assert seen == [("bn", True), ("scale", True), ("relu", True)]
    for name in ref.blobs:
        np.testing.assert_array_equal(backend.to_numpy(net.blobs[name]), backend.to_numpy(ref.blobs[name]))
    assert (backend.to_numpy(net.blobs["y"]) < 0).any()  # leaky ReLU, and 'f' did not clobber it
    assert (backend.to_numpy(net.blobs["f"]) >= 0).all()


def test_in_place_refused_when_the_array_is_held(backend):
    """A caller holding the previous pass's array, or a TRAIN pass that keeps bottoms for
    backward: the layers compute out of place, and backward sees the saved inputs."""
    x = np.random.default_rng(6).standard_normal((2, 3, 5, 5)).astype(np.float32)
    t = np.zeros((2, 3), np.float32)
    net = _in_place_net(backend, "TEST")
    seen = _calls(net)
    held = []
    net.forward({"x": x, "t": t}, on_layer=lambda i, layer, names, tops: held.append(tops[0]))
    assert seen == []  # every top is referenced by `held`, so nothing is overwritten
    train, ref = _in_place_net(backend, "TRAIN"), _in_place_net(backend, "TRAIN", allow=False)
    seen = _calls(train)
    for n in (train, ref):
        n.forward({"x": x, "t": t})
        n.backward()
    assert seen == []
    for a, b in zip(train.layers, ref.layers):
        for da, db in zip(a.diffs, b.diffs):
            np.testing.assert_array_equal(backend.to_numpy(da), backend.to_numpy(db))
