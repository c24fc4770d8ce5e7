"""Caffe file I/O: prototxt / caffemodel / binaryproto readers and writers, the V0/V1 upgrade,
weights by layer name, and one-line errors for bad files."""
from __future__ import annotations

import os

import numpy as np
import pytest
from google.protobuf import text_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import shared_path
from ristretto_cli.caffe import atomic, upgrade
from ristretto_cli.caffe.blobproto import (array_to_blob, blob_to_array, read_binaryproto, read_blobproto_vector,
                                          write_binaryproto, write_blobproto_vector)
from ristretto_cli.caffe.caffemodel import read_caffemodel, write_caffemodel
from ristretto_cli.caffe.prototxt import (parse_net_text, parse_solver_text, read_net, read_solver, resolve_path,
                                         write_text)
from ristretto_cli.caffe.weights import blob_fits, fit_blob, load_weights
from ristretto_cli.errors import RistrettoError
from ristretto_cli.proto import caffe_pb2

V1_ZOO = ("zoo", "bvlc_caffe_2014_v1_format")


def _no_temp_files(folder) -> bool:
    return not [n for n in os.listdir(folder) if n.endswith(".tmp")]


# -- prototxt ------------------------------------------------------------------------

def test_all_zoo_nets_and_solvers_read(shared):
    zoo = shared("zoo")
    for path in sorted(zoo.rglob("*.prototxt")):
        if "solver" in path.name:
            solver = read_solver(path)
            assert solver.HasField("base_lr") and not solver.HasField("solver_type")
        else:
            net = read_net(path)
            assert len(net.layer) > 0 and len(net.layers) == 0 and len(net.input) == 0
            assert all(l.type for l in net.layer)


V1_V2_PAIRS = [
    ("mnist/lenet_train_test", "lenet/lenet_train_test"),
    ("mnist/lenet", "lenet/lenet"),
    ("cifar10/cifar10_quick_train_test", "cifar10/cifar10_quick_train_test"),
    ("cifar10/cifar10_full_train_test", "cifar10/cifar10_full_train_test"),
    ("cifar10/cifar10_quick", "cifar10/cifar10_quick"),
    ("cifar10/cifar10_full", "cifar10/cifar10_full"),
]


@pytest.mark.parametrize("v1,v2", V1_V2_PAIRS)
def test_v1_zoo_net_upgrades_to_its_v2_twin(v1, v2):
    old = read_net(shared_path(*V1_ZOO, v1 + ".prototxt"))
    new = read_net(shared_path("zoo", v2 + ".prototxt"))
    assert old.name == new.name
    assert len(old.layer) == len(new.layer)
    for a, b in zip(old.layer, new.layer):
        assert a.type == b.type
        if a.type == "Input":  # V1 `input:` lines become a layer named "input"
            assert a.name == "input" and a.input_param == b.input_param and list(a.top) == list(b.top)
            continue
        assert (a.name, list(a.bottom), list(a.top)) == (b.name, list(b.bottom), list(b.top))
        assert list(a.include) == list(b.include) and list(a.exclude) == list(b.exclude)
        assert list(a.param) == list(b.param)  # blobs_lr / weight_decay -> lr_mult / decay_mult
        assert a.transform_param == b.transform_param
        for field in ("convolution_param", "pooling_param", "inner_product_param", "lrn_param", "relu_param",
                      "accuracy_param", "loss_param", "softmax_param"):
            assert getattr(a, field) == getattr(b, field), (a.name, field)
        if a.type == "Data":  # 2014 cifar used LevelDB, today's zoo LMDB; the rest matches
            assert a.data_param.batch_size == b.data_param.batch_size


def test_v1_enum_types_all_map_to_strings():
    v1 = caffe_pb2.V1LayerParameter
    assert set(upgrade.V1_TYPE_NAMES) == {v.number for v in v1.LayerType.DESCRIPTOR.values}
    text = "\n".join(f'layers {{ name: "l{v.number}" type: {v.name} }}' for v in v1.LayerType.DESCRIPTOR.values)
    net = parse_net_text(text, "all.prototxt")
    got = {l.name: l.type for l in net.layer}
    assert got["l4"] == "Convolution" and got["l14"] == "InnerProduct" and got["l21"] == "SoftmaxWithLoss"
    assert got["l39"] == "Deconvolution" and got["l35"] == "AbsVal" and got["l0"] == ""


def test_v1_upgrade_of_param_specs_and_share_modes():
    net = parse_net_text("""
      layers { name: "ip" type: INNER_PRODUCT bottom: "x" top: "y"
               param: "w" param: "b" blob_share_mode: PERMISSIVE
               blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 loss_weight: 0.5
               inner_product_param { num_output: 3 }
               include { phase: TRAIN stage: "s" } }""")
    l = net.layer[0]
    assert [(p.name, p.lr_mult, p.decay_mult) for p in l.param] == [("w", 1, 1), ("b", 2, 0)]
    assert l.param[0].share_mode == caffe_pb2.ParamSpec.PERMISSIVE and not l.param[1].HasField("share_mode")
    assert list(l.loss_weight) == [0.5] and l.inner_product_param.num_output == 3
    assert l.include[0].phase == caffe_pb2.TRAIN and list(l.include[0].stage) == ["s"]


def test_v1_data_layer_transform_fields_move():
    net = parse_net_text("""
      layers { name: "d" type: DATA top: "data"
               data_param { source: "db" batch_size: 4 scale: 0.5 mean_file: "m.binaryproto" crop_size: 3
                            mirror: true } }
      layers { name: "i" type: IMAGE_DATA top: "img" image_data_param { source: "list" scale: 2 } }""")
    d, i = net.layer
    assert (d.transform_param.scale, d.transform_param.mean_file, d.transform_param.crop_size,
            d.transform_param.mirror) == (0.5, "m.binaryproto", 3, True)
    for f in ("scale", "mean_file", "crop_size", "mirror"):
        assert not d.data_param.HasField(f)
    assert d.data_param.source == "db" and d.data_param.batch_size == 4
    assert i.transform_param.scale == 2 and not i.image_data_param.HasField("scale")


V0_NET = """
name: "v0"
input: "data"
input_dim: 2 input_dim: 3 input_dim: 8 input_dim: 8
layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
layers { layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 stride: 2 biasterm: false
                 weight_filler { type: "gaussian" std: 0.01 } blobs_lr: 1 blobs_lr: 2 weight_decay: 1 }
         bottom: "pad1" top: "conv1" }
layers { layer { name: "relu1" type: "relu" } bottom: "conv1" top: "conv1" }
layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 2 stride: 2 } bottom: "conv1" top: "pool1" }
layers { layer { name: "norm1" type: "lrn" local_size: 3 alpha: 0.1 beta: 0.5 } bottom: "pool1" top: "norm1" }
layers { layer { name: "drop" type: "dropout" dropout_ratio: 0.3 } bottom: "norm1" top: "norm1" }
layers { layer { name: "fc" type: "innerproduct" num_output: 5 } bottom: "norm1" top: "fc" }
layers { layer { name: "prob" type: "softmax" } bottom: "fc" top: "prob" }
"""


def test_v0_net_upgrades_with_padding_folded():
    net = parse_net_text(V0_NET, "v0.prototxt")
    assert [l.type for l in net.layer] == ["Input", "Convolution", "ReLU", "Pooling", "LRN", "Dropout",
                                           "InnerProduct", "Softmax"]
    inp, conv, _, pool, lrn, drop, fc, _ = net.layer
    assert list(inp.top) == ["data"] and list(inp.input_param.shape[0].dim) == [2, 3, 8, 8]
    assert list(conv.bottom) == ["data"]  # the padding layer is gone, its input taken over
    c = conv.convolution_param
    assert (c.num_output, list(c.kernel_size), list(c.stride), list(c.pad), c.bias_term) == (4, [3], [2], [2], False)
    assert c.weight_filler.type == "gaussian" and c.weight_filler.std == pytest.approx(0.01)
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(1, 1), (2, 1)]
    assert pool.pooling_param.pool == caffe_pb2.PoolingParameter.AVE
    assert (pool.pooling_param.kernel_size, pool.pooling_param.stride) == (2, 2)
    assert (lrn.lrn_param.local_size, lrn.lrn_param.beta) == (3, 0.5)
    assert drop.dropout_param.dropout_ratio == pytest.approx(0.3)
    assert fc.inner_product_param.num_output == 5


def test_v0_unknown_type_is_an_error():
    with pytest.raises(RistrettoError, match="v0.prototxt: V0 layer 'x' has unknown type 'nonsense'"):
        parse_net_text('input: "d" layers { layer { name: "x" type: "nonsense" } bottom: "d" top: "y" }',
                       "v0.prototxt")


def test_net_input_upgrade_variants():
    net = parse_net_text('input: "a" input: "b" input_shape { dim: 1 dim: 2 } input_shape { dim: 3 }\n'
                         'layer { name: "s" type: "Silence" bottom: "a" bottom: "b" }')
    assert net.layer[0].name == "input" and list(net.layer[0].top) == ["a", "b"]
    assert [list(s.dim) for s in net.layer[0].input_param.shape] == [[1, 2], [3]]
    assert net.layer[1].name == "s" and not len(net.input) and not len(net.input_shape)
    # a bare input list (old caffemodels) is just dropped
    bare = parse_net_text('input: "a" layer { name: "s" type: "Silence" bottom: "a" }')
    assert [l.name for l in bare.layer] == ["s"] and not len(bare.input)
    with pytest.raises(RistrettoError, match="2 net inputs need 8 input_dim values, found 4"):
        parse_net_text('input: "a" input: "b" input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1', "n.prototxt")


def test_batchnorm_param_upgrade():
    net = parse_net_text('layer { name: "bn" type: "BatchNorm" param { lr_mult: 1 } param { lr_mult: 1 } '
                         'param { lr_mult: 1 decay_mult: 2 } }\n'
                         'layer { name: "bn2" type: "BatchNorm" param { lr_mult: 1 } }')
    assert [(p.lr_mult, p.decay_mult) for p in net.layer[0].param] == [(0, 0)] * 3
    assert net.layer[1].param[0].lr_mult == 1  # only the three-spec form is the old convention


def test_solver_type_upgrade_and_conflict():
    s = parse_solver_text('base_lr: 0.1 solver_type: ADAM net: "n.prototxt"')
    assert s.type == "Adam" and not s.HasField("solver_type")
    for enum, name in [("SGD", "SGD"), ("NESTEROV", "Nesterov"), ("ADAGRAD", "AdaGrad"), ("RMSPROP", "RMSProp"),
                       ("ADADELTA", "AdaDelta")]:
        assert parse_solver_text(f"solver_type: {enum}").type == name
    assert parse_solver_text('type: "Adam"').type == "Adam"
    assert parse_solver_text("base_lr: 1").type == "SGD"  # the default
    with pytest.raises(RistrettoError, match="s.prototxt: both"):
        parse_solver_text('solver_type: ADAM type: "Adam"', "s.prototxt")
    inline = parse_solver_text('net_param { layers { name: "c" type: CONVOLUTION } }')
    assert inline.net_param.layer[0].type == "Convolution"


def test_malformed_prototxt_names_file_line_column(tmp_path):
    p = tmp_path / "bad.prototxt"
    p.write_text('name: "x"\nlayer {\n  nme: "conv"\n}\n')
    with pytest.raises(RistrettoError) as e:
        read_net(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}:3:3: ") and "nme" in msg and "\n" not in msg
    p.write_text('layer {\n  name: "a"\n  type: "ReLU"\n')
    with pytest.raises(RistrettoError, match=rf"^{p}:\d+:\d+: "):
        read_net(p)
    p.write_text('layer { include { phase: TRIAN } }')
    with pytest.raises(RistrettoError, match=rf"^{p}:1:\d+: .*TRIAN"):
        read_net(p)


def test_missing_and_binary_prototxt(tmp_path):
    with pytest.raises(RistrettoError, match=r"nope\.prototxt: no such file"):
        read_net(tmp_path / "nope.prototxt")
    with pytest.raises(RistrettoError, match="is a folder"):
        read_solver(tmp_path)
    p = tmp_path / "bin.prototxt"
    p.write_bytes(b'name: "x"\n\xff\xfe')
    with pytest.raises(RistrettoError, match=rf"^{p}:2:1: not a text file"):
        read_net(p)


def test_write_text_round_trip(tmp_path):
    net = read_net(shared_path("zoo", "lenet", "lenet_train_test.prototxt"))
    out = tmp_path / "copy.prototxt"
    write_text(out, net)
    assert read_net(out) == net
    assert _no_temp_files(tmp_path)


def test_resolve_path(tmp_path, monkeypatch):
    (tmp_path / "nets").mkdir()
    solver = tmp_path / "nets" / "solver.prototxt"
    solver.write_text("")
    (tmp_path / "nets" / "train.prototxt").write_text("")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    (elsewhere / "train.prototxt").write_text("")
    monkeypatch.chdir(elsewhere)
    assert resolve_path(solver, "train.prototxt") == "train.prototxt"  # relative to the CWD first
    os.remove(elsewhere / "train.prototxt")
    assert resolve_path(solver, "train.prototxt") == str(tmp_path / "nets" / "train.prototxt")
    assert resolve_path(solver, "examples/mnist/train.prototxt") == str(tmp_path / "nets" / "train.prototxt")
    assert resolve_path(solver, "missing.prototxt") == "missing.prototxt"
    assert resolve_path(solver, str(tmp_path / "abs.prototxt")) == str(tmp_path / "abs.prototxt")


# -- caffemodels -----------------------------------------------------------------------

def test_lenet_v1_and_v2_caffemodels_agree():
    v1_path = shared_path("data", "caffemodels", "lenet_v1_format", "lenet_iter_10000.caffemodel")
    v2_path = shared_path("data", "caffemodels", "lenet_v2", "lenet_iter_10000.caffemodel")
    v1, v2 = load_weights([str(v1_path)]), load_weights([str(v2_path)])
    with_blobs = lambda w: {k: v for k, v in w.items() if v}  # noqa: E731
    assert sorted(with_blobs(v1)) == sorted(with_blobs(v2)) == ["conv1", "conv2", "ip1", "ip2"]
    for name, blobs in with_blobs(v2).items():
        assert len(v1[name]) == len(blobs)
        for k, (array, legacy) in enumerate(blobs):
            assert not legacy
            old, old_legacy = v1[name][k]
            assert old_legacy and old.ndim == 4
            fitted = fit_blob(old, old_legacy, array.shape, name, k, str(v1_path))
            assert fitted.shape == array.shape and fitted.dtype == np.float32
    assert v2["ip1"][0][0].shape == (500, 800) and v1["ip1"][0][0].shape == (1, 1, 500, 800)
    # the V1 model's layers come back with V2 type strings
    net = read_caffemodel(v1_path)
    assert {l.name: l.type for l in net.layer if l.blobs} == {
        "conv1": "Convolution", "conv2": "Convolution", "ip1": "InnerProduct", "ip2": "InnerProduct"}


def test_caffemodel_write_read_round_trip(tmp_path):
    src = shared_path("data", "caffemodels", "cifar10_quick_v2", "cifar10_quick_iter_4000.caffemodel")
    net = read_caffemodel(src)
    out = tmp_path / "copy.caffemodel"
    write_caffemodel(out, net)
    assert read_caffemodel(out) == net
    a, b = load_weights([str(src)]), load_weights([str(out)])
    assert a.keys() == b.keys()
    for name in a:
        for (x, lx), (y, ly) in zip(a[name], b[name]):
            assert lx == ly and np.array_equal(x, y)
    assert _no_temp_files(tmp_path)


def _tiny_model(path, value, layers=("conv1", "ip1")):
    net = caffe_pb2.NetParameter(name="tiny")
    for name in layers:
        l = net.layer.add(name=name, type="Convolution")
        array_to_blob(np.full((2, 3), value, np.float32), l.blobs.add())
        array_to_blob(np.full((2,), value, np.float32), l.blobs.add())
    write_caffemodel(path, net)
    return str(path)


def test_later_weight_files_override_earlier(tmp_path):
    a = _tiny_model(tmp_path / "a.caffemodel", 1.0)
    b = _tiny_model(tmp_path / "b.caffemodel", 2.0, layers=("conv1",))
    w = load_weights([a, b])
    assert w["conv1"][0][0][0, 0] == 2.0 and w["ip1"][0][0][0, 0] == 1.0
    w = load_weights([b, a])
    assert w["conv1"][0][0][0, 0] == 1.0
    assert load_weights(f"{a},{b}")["conv1"][1][0][0] == 2.0  # "a,b" like --weights
    src = load_weights([a, b], with_source=True)
    assert src["conv1"][0][2] == b and src["ip1"][0][2] == a


def test_fit_blob_rules():
    w = np.arange(6, dtype=np.float32)
    assert fit_blob(w.reshape(1, 1, 2, 3), True, (2, 3), "ip", 0, "m").shape == (2, 3)
    assert fit_blob(w.reshape(1, 1, 1, 6), True, (6,), "ip", 1, "m").shape == (6,)
    assert fit_blob(w.reshape(2, 3), False, (2, 3), "ip", 0, "m").shape == (2, 3)
    assert not blob_fits((2, 3), False, (3, 2))
    assert not blob_fits((2, 3), False, (1, 2, 3))  # a modern blob must match exactly
    assert not blob_fits((1, 1, 2, 3), True, (1, 6))
    assert not blob_fits((1, 1, 1, 2, 3), True, (1, 1, 2, 3, 1))
    with pytest.raises(RistrettoError) as e:
        fit_blob(w.reshape(1, 1, 2, 3), True, (3, 2), "ip1", 0, "lenet.caffemodel")
    msg = str(e.value)
    for part in ("lenet.caffemodel", "ip1", "blob 0", "(1, 1, 2, 3)", "(3, 2)"):
        assert part in msg


def test_truncated_caffemodel(tmp_path):
    src = shared_path("data", "caffemodels", "lenet_v2", "lenet_iter_10000.caffemodel").read_bytes()
    for cut in (len(src) // 2, len(src) - 3, 5):
        p = tmp_path / f"cut{cut}.caffemodel"
        p.write_bytes(src[:cut])
        with pytest.raises(RistrettoError, match=rf"^{p}: truncated"):
            read_caffemodel(p)


def test_foreign_files_as_caffemodel(tmp_path):
    png = next(iter(sorted(shared_path("data", "cifar10", "test_png_first20").glob("*.png"))))
    with pytest.raises(RistrettoError, match=rf"^{png}: not a Caffe NetParameter"):
        read_caffemodel(png)
    txt = shared_path("zoo", "lenet", "lenet.prototxt")
    with pytest.raises(RistrettoError, match="not a Caffe NetParameter"):
        read_caffemodel(txt)
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    with pytest.raises(RistrettoError, match="empty"):
        read_caffemodel(empty)
    h5 = tmp_path / "w.caffemodel.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(RistrettoError, match="HDF5"):
        load_weights([str(h5)])
    with pytest.raises(RistrettoError, match="missing.caffemodel: no such file"):
        load_weights([str(tmp_path / "missing.caffemodel")])


def test_large_caffemodel_over_64_mb(tmp_path):
    """Protobuf's historical 64 MB default must not apply (Caffe reads up to 2 GB)."""
    n = 17 * 2**20  # 68 MB of float32
    values = np.arange(n, dtype=np.float32)
    net = caffe_pb2.NetParameter(name="big")
    layer = net.layer.add(name="fc", type="InnerProduct")
    array_to_blob(values.reshape(17 * 1024, 1024), layer.blobs.add())
    path = tmp_path / "big.caffemodel"
    write_caffemodel(path, net)
    del net, layer
    assert path.stat().st_size > 64 * 2**20
    w = load_weights([str(path)])
    got = w["fc"][0][0]
    assert got.shape == (17 * 1024, 1024) and np.array_equal(got.ravel(), values)


# -- writes are atomic ------------------------------------------------------------------

def test_unwritable_destination(tmp_path):
    net = caffe_pb2.NetParameter(name="x")
    missing = tmp_path / "no" / "such" / "dir" / "m.caffemodel"
    with pytest.raises(RistrettoError, match=r"dir/m\.caffemodel: cannot write: folder .* does not exist"):
        write_caffemodel(missing, net)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(RistrettoError, match="cannot write"):
        write_text(a_file / "n.prototxt", net)
    with pytest.raises(RistrettoError, match="is a folder"):
        write_binaryproto(tmp_path, np.zeros(3))


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    dest = tmp_path / "model.caffemodel"
    dest.write_bytes(b"old content")

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(RistrettoError, match=r"model\.caffemodel: cannot write: No space left"):
        write_caffemodel(dest, caffe_pb2.NetParameter(name="new"))
    assert dest.read_bytes() == b"old content"
    assert sorted(os.listdir(tmp_path)) == ["model.caffemodel"]
    # an interrupted write (e.g. Ctrl-C) cleans up too
    monkeypatch.setattr(atomic.os, "replace", lambda s, d: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        write_binaryproto(tmp_path / "mean.binaryproto", np.zeros((1, 3, 2, 2)))
    assert sorted(os.listdir(tmp_path)) == ["model.caffemodel"]


def test_atomic_write_replaces_and_keeps_permissions_sane(tmp_path):
    p = tmp_path / "out.bin"
    atomic.atomic_write_bytes(p, b"one")
    atomic.atomic_write_bytes(p, b"two")
    assert p.read_bytes() == b"two"
    assert p.stat().st_mode & 0o044  # readable by others under a usual umask (not mkstemp's 0600)
    assert _no_temp_files(tmp_path)


# -- binaryproto --------------------------------------------------------------------------

def test_cifar10_mean_binaryproto():
    mean = read_binaryproto(shared_path("data", "cifar10", "mean.binaryproto"))
    assert mean.shape == (1, 3, 32, 32) and mean.dtype == np.float32
    np.testing.assert_allclose(mean.mean(axis=(0, 2, 3)), [125.3, 122.95, 113.87], atol=0.02)


def test_binaryproto_round_trip_and_errors(tmp_path):
    arr = np.random.default_rng(0).normal(size=(1, 3, 4, 5)).astype(np.float32)
    p = tmp_path / "m.binaryproto"
    write_binaryproto(p, arr)
    assert np.array_equal(read_binaryproto(p), arr)
    vec = tmp_path / "v.binaryproto"
    write_blobproto_vector(vec, [arr, arr[0, 0]])
    got = read_blobproto_vector(vec)
    assert len(got) == 2 and np.array_equal(got[1], arr[0, 0])
    model = shared_path("data", "caffemodels", "lenet_v2", "lenet_iter_10000.caffemodel")
    with pytest.raises(RistrettoError, match=rf"^{model}: not a Caffe BlobProto"):
        read_binaryproto(model)
    png = next(iter(sorted(shared_path("data", "cifar10", "test_png_first20").glob("*.png"))))
    with pytest.raises(RistrettoError, match=rf"^{png}: not a Caffe BlobProto"):
        read_binaryproto(png)
    with pytest.raises(RistrettoError, match="no such file"):
        read_binaryproto(tmp_path / "none.binaryproto")


def test_blob_to_array_legacy_double_and_mismatch():
    b = caffe_pb2.BlobProto(num=1, channels=2, height=1, width=3)
    b.double_data.extend([0.5, 1, 2, 3, 4, 5])
    b.data.extend([9] * 6)  # double_data wins when present
    a = blob_to_array(b)
    assert a.shape == (1, 2, 1, 3) and a.dtype == np.float32 and a[0, 0, 0, 0] == 0.5
    legacy_and_shape = caffe_pb2.BlobProto(num=1, channels=1, height=2, width=3)
    legacy_and_shape.shape.dim.extend([6])
    legacy_and_shape.data.extend(range(6))
    assert blob_to_array(legacy_and_shape).shape == (1, 1, 2, 3)  # Caffe: legacy fields win
    bad = caffe_pb2.BlobProto()
    bad.shape.dim.extend([2, 2])
    bad.data.extend([1, 2, 3])
    with pytest.raises(RistrettoError, match="layer x blob 1: 3 stored values do not fill shape"):
        blob_to_array(bad, where="layer x blob 1")


# -- properties ---------------------------------------------------------------------------

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=6),
                  elements=st.floats(width=32, allow_nan=True, allow_infinity=True)))
def test_blob_round_trip_is_bit_exact(arr):
    blob = array_to_blob(arr)
    assert list(blob.shape.dim) == list(arr.shape)
    wire = caffe_pb2.BlobProto.FromString(blob.SerializeToString())
    back = blob_to_array(wire)
    assert back.shape == arr.shape and back.dtype == np.float32
    assert np.array_equal(back.view(np.uint32), arr.view(np.uint32))


_names = st.text("abcdefghij_/0123456789", min_size=1, max_size=8)
_f32 = st.floats(width=32, allow_nan=False, allow_infinity=True)
_small = st.integers(0, 20)


@st.composite
def _layer(draw):
    kind = draw(st.sampled_from(["Convolution", "Pooling", "InnerProduct", "ReLU", "Dropout",
                                 "ConvolutionRistretto"]))
    l = caffe_pb2.LayerParameter(name=draw(_names), type=kind)
    l.bottom.extend(draw(st.lists(_names, max_size=2)))
    l.top.extend(draw(st.lists(_names, min_size=1, max_size=2)))
    for _ in range(draw(st.integers(0, 2))):
        l.param.add(lr_mult=draw(_f32), decay_mult=draw(_f32))
    if draw(st.booleans()):
        l.include.add(phase=draw(st.sampled_from([caffe_pb2.TRAIN, caffe_pb2.TEST])))
    if kind in ("Convolution", "ConvolutionRistretto"):
        c = l.convolution_param
        c.num_output = draw(_small)
        c.kernel_size.extend(draw(st.lists(_small, min_size=1, max_size=2)))
        c.stride.extend(draw(st.lists(_small, max_size=2)))
        if draw(st.booleans()):
            c.bias_term = draw(st.booleans())
        c.weight_filler.type = draw(st.sampled_from(["xavier", "gaussian", "msra"]))
        c.weight_filler.std = draw(_f32)
        if kind == "ConvolutionRistretto":
            q = l.quantization_param
            q.precision = draw(st.sampled_from([0, 1, 2]))
            q.rounding_scheme = draw(st.sampled_from(range(6)))
            q.bw_params = draw(st.integers(1, 32))
            q.fl_params = draw(st.integers(-40, 40))
            q.exp_min = draw(st.integers(-20, 0))
    elif kind == "Pooling":
        l.pooling_param.pool = draw(st.sampled_from([0, 1, 2]))
        l.pooling_param.kernel_size = draw(_small)
        l.pooling_param.global_pooling = draw(st.booleans())
    elif kind == "InnerProduct":
        l.inner_product_param.num_output = draw(st.integers(0, 2**32 - 1))
        l.inner_product_param.axis = draw(st.integers(-2**31, 2**31 - 1))
    elif kind == "ReLU":
        if draw(st.booleans()):
            l.relu_param.negative_slope = draw(_f32)
    else:
        l.dropout_param.dropout_ratio = draw(_f32)
    return l


@settings(max_examples=60, deadline=None)
@given(st.text("abc XYZ\"'\\\n\u00e9", max_size=10), st.lists(_layer(), max_size=4))
def test_prototxt_text_round_trip(name, layers):
    net = caffe_pb2.NetParameter(name=name)
    net.layer.extend(layers)
    text = text_format.MessageToString(net, as_utf8=True)
    assert parse_net_text(text, "rt.prototxt") == net


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(RistrettoError, match=r"m\.caffemodel: cannot write into folder"):
            write_caffemodel(ro / "m.caffemodel", caffe_pb2.NetParameter(name="x"))
        assert os.listdir(ro) == []
    finally:
        ro.chmod(0o700)


def _wire_field(number: int, payload: bytes) -> bytes:
    def varint(n):
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)
    return varint(number << 3 | 2) + varint(len(payload)) + payload


@pytest.mark.parametrize("number", [147, 148, 149])
def test_quantization_param_under_older_field_numbers(tmp_path, number):
    """Older Caffe-Ristretto builds stored quantization_param as 147 or 148; we write 149."""
    q = caffe_pb2.QuantizationParameter(precision=caffe_pb2.QuantizationParameter.MINIFLOAT, mant_bits=3,
                                        exp_bits=4).SerializeToString()
    layer = caffe_pb2.LayerParameter(name="conv1", type="ConvolutionRistretto")
    array_to_blob(np.ones((2, 1, 1, 1), np.float32), layer.blobs.add())
    path = tmp_path / "old.caffemodel"
    path.write_bytes(_wire_field(100, layer.SerializeToString() + _wire_field(number, q)))
    got = read_caffemodel(path).layer[0]
    assert got.quantization_param.mant_bits == 3 and got.quantization_param.exp_bits == 4
    # written back, it sits under 149
    write_caffemodel(path, read_caffemodel(path))
    assert _wire_field(149, q) in path.read_bytes()
