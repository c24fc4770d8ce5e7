"""The run commands end to end: `ristretto benchmark` (alias `test`), `forward`, `init`,
`info`, `time`, `--help` and `--version`.

References are independent of the code under test: a NumPy forward written out here from
the layer definitions (convolution as explicit windows, softmax loss, accuracy), the LMDB
records as written, filler formulas from Caffe's filler.hpp, MACs counted by hand, and
OpenCV's Caffe importer for the files we write. On real data (../shared): LeNet V2 weights
on MNIST scored by OpenCV.
"""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from ristretto_cli import __version__
from ristretto_cli.caffe.blobproto import blob_to_array
from ristretto_cli.caffe.caffemodel import read_caffemodel
from ristretto_cli.cli import cli, main
from ristretto_cli.data.lmdb_io import make_datum, write_datums
from ristretto_cli.net.loading import load_net

from conftest import REPO, run_cli, shared_path

SCALE = 1 / 255
BATCH = 4
RECORDS = 8


def table_rows(text: str) -> dict[str, list[str]]:
    """First cell -> the other cells of every row of a rich table in ``text``."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            rows[cells[0]] = cells[1:]
    return rows


# --------------------------------------------------------------------------- a toy net on an LMDB

TOY_NET = '''name: "toy"
layer {{ name: "data" type: "Data" top: "data" top: "label"
        transform_param {{ scale: {scale} }}
        data_param {{ source: "{db}" batch_size: {batch} backend: LMDB }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param {{ num_output: 2 kernel_size: 3
          weight_filler {{ type: "gaussian" std: 0.5 }} bias_filler {{ type: "gaussian" std: 0.5 }} }} }}
layer {{ name: "relu" type: "ReLU" bottom: "conv" top: "conv" }}
layer {{ name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param {{ num_output: 4 weight_filler {{ type: "gaussian" std: 1 }}
          bias_filler {{ type: "gaussian" std: 1 }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" loss_weight: 0.5 }}
layer {{ name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" }}
'''


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """An LMDB of 8 one-channel 4x4 images (labels 0..3), the toy net reading it, and
    weights written by `ristretto init`. Returns (model, weights, images, labels, folder)."""
    d = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(RECORDS, 1, 4, 4), dtype=np.uint8)
    labels = np.arange(RECORDS) % 4
    write_datums(str(d / "db"), [(f"{i:08d}", make_datum(images[i], int(labels[i]))) for i in range(RECORDS)])
    model = d / "toy.prototxt"
    model.write_text(TOY_NET.format(scale=SCALE, db=d / "db", batch=BATCH))
    weights = d / "toy.caffemodel"
    try:
        main(["init", "-m", str(model), "-o", str(weights), "--seed", "11"])
    except SystemExit as exc:
        assert exc.code == 0
    return str(model), str(weights), images, labels, d


def stored_blobs(weights) -> dict[str, list[np.ndarray]]:
    return {l.name: [blob_to_array(b) for b in l.blobs] for l in read_caffemodel(weights).layer if l.blobs}


def toy_reference(weights, images, labels, batch_index):
    """Loss and accuracy of one batch, computed here from the definitions."""
    w = stored_blobs(weights)
    start = (batch_index * BATCH) % RECORDS  # the data layer wraps around at the end
    x = images[start:start + BATCH].astype(np.float64) * np.float32(SCALE)
    y = labels[start:start + BATCH]
    cw, cb = (a.astype(np.float64) for a in w["conv"])
    conv = np.zeros((BATCH, 2, 2, 2))
    for n in range(BATCH):
        for o in range(2):
            for i in range(2):
                for j in range(2):
                    conv[n, o, i, j] = np.sum(x[n, :, i:i + 3, j:j + 3] * cw[o]) + cb[o]
    h = np.maximum(conv, 0).reshape(BATCH, -1)
    iw, ib = (a.astype(np.float64) for a in w["ip"])
    logits = h @ iw.T + ib
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = -logp[np.arange(BATCH), y].mean()
    accuracy = np.mean(logits.argmax(axis=1) == y)
    return float(loss), float(accuracy)


@pytest.mark.parametrize("verb", ["benchmark", "test"])
def test_benchmark_batches_means_and_loss_contribution(toy, tmp_path, capsys, verb):
    model, weights, images, labels, _ = toy
    out_json = tmp_path / "scores.json"
    code, out, err = run_cli([verb, "-m", model, "-w", weights, "-i", 3, "--json", out_json], capsys)
    assert code == 0, err
    data = json.loads(out_json.read_text())
    assert data["iterations"] == 3 and data["outputs"] == ["accuracy", "loss"]
    assert data["loss_weights"] == {"loss": 0.5}
    refs = [toy_reference(weights, images, labels, b) for b in range(3)]
    for got, (loss, accuracy) in zip(data["batches"], refs):
        assert got["loss"] == pytest.approx(loss, rel=1e-5)
        assert got["accuracy"] == accuracy
    mean_loss = np.mean([r[0] for r in refs])
    mean_acc = np.mean([r[1] for r in refs])
    assert data["means"]["loss"] == pytest.approx(mean_loss, rel=1e-5)
    assert data["means"]["accuracy"] == pytest.approx(mean_acc, abs=1e-12)
    assert data["loss"] == pytest.approx(0.5 * mean_loss, rel=1e-5)
    # what is printed is what the JSON holds
    rows = table_rows(out)
    assert rows["accuracy"][0] == f"{data['means']['accuracy']:.6g}"
    assert rows["loss"][0] == f"{data['means']['loss']:.6g}"
    m = data["means"]["loss"]
    assert rows["loss"][1] == f"0.5 x {m:.6g} = {0.5 * m:.6g} loss"
    assert f"Loss: {data['loss']:.6g}" in out
    # stderr is not a terminal here: one log line per batch, as `caffe test` prints
    for b, got in enumerate(data["batches"]):
        assert f"Batch {b}, accuracy = {got['accuracy']:.6g}, loss = {got['loss']:.6g}" in err


def test_benchmark_json_to_stdout_is_pure_json(toy, capsys):
    model, weights, *_ = toy
    code, out, err = run_cli(["benchmark", "-m", model, "-w", weights, "-i", 2, "--json", "-"], capsys)
    assert code == 0, err
    data = json.loads(out)  # the table went to stderr
    assert data["model"] == model and data["weights"] == weights and len(data["batches"]) == 2
    assert f"{data['means']['loss']:.6g}" in err


def test_benchmark_lenet_on_mnist_agrees_with_opencv(tmp_path, capsys):
    cv2 = pytest.importorskip("cv2")
    import gzip

    from ristretto_cli.data.converters import convert_mnist

    mnist = shared_path("data", "mnist")
    weights = shared_path("data", "caffemodels", "lenet_v2", "lenet_iter_10000.caffemodel")
    zoo = shared_path("zoo", "lenet")
    n = 200
    db = tmp_path / "mnist_test_lmdb"
    convert_mnist(mnist / "t10k-images-idx3-ubyte.gz", mnist / "t10k-labels-idx1-ubyte.gz", db, limit=n)
    model = tmp_path / "lenet_train_test.prototxt"
    model.write_text((zoo / "lenet_train_test.prototxt").read_text()
                     .replace("examples/mnist/mnist_test_lmdb", str(db))
                     .replace("examples/mnist/mnist_train_lmdb", str(db)))
    code, _, err = run_cli(["benchmark", "-m", model, "-w", weights, "-i", 2, "--json", tmp_path / "s.json"],
                           capsys)
    assert code == 0, err
    data = json.loads((tmp_path / "s.json").read_text())
    # OpenCV runs the deploy net on the same 200 images
    raw = gzip.decompress((mnist / "t10k-images-idx3-ubyte.gz").read_bytes())[16:16 + n * 784]  # idx header
    images = np.frombuffer(raw, np.uint8).reshape(n, 28, 28).astype(np.float32) * np.float32(0.00390625)
    labels = np.frombuffer(gzip.decompress((mnist / "t10k-labels-idx1-ubyte.gz").read_bytes())[8:8 + n], np.uint8)
    labels = labels.astype(int)
    cvnet = cv2.dnn.readNetFromCaffe(str(zoo / "lenet.prototxt"), str(weights))
    cvnet.setInput(images[:, None])
    prob = cvnet.forward().reshape(n, 10).astype(np.float64)
    for b, got in enumerate(data["batches"]):
        sl = slice(100 * b, 100 * b + 100)
        assert got["accuracy"] == pytest.approx(np.mean(prob[sl].argmax(1) == labels[sl]), abs=1e-6)
        assert got["loss"] == pytest.approx(-np.log(prob[sl][np.arange(100), labels[sl]]).mean(), rel=1e-3)
    assert data["means"]["accuracy"] > 0.97


# --------------------------------------------------------------------------- forward

FORWARD_NET = '''name: "fwd"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 3 dim: 2 dim: 5 dim: 5 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1/out"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "xavier" }
          bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv1/out" top: "conv1/out" }
layer { name: "drop" type: "Dropout" bottom: "conv1/out" top: "file" dropout_param { dropout_ratio: 0.5 } }
layer { name: "train_only" type: "Power" bottom: "file" top: "squared" power_param { power: 2 }
        include { phase: TRAIN } }
layer { name: "ip" type: "InnerProduct" bottom: "file" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
'''


@pytest.fixture(scope="module")
def fwd_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fwd")
    model = d / "fwd.prototxt"
    model.write_text(FORWARD_NET)
    weights = d / "fwd.caffemodel"
    try:
        main(["init", "-m", str(model), "-o", str(weights), "--seed", "3"])
    except SystemExit as exc:
        assert exc.code == 0
    x = np.random.default_rng(0).normal(size=(3, 2, 5, 5)).astype(np.float32)
    np.save(d / "x.npy", x)
    return str(model), str(weights), d / "x.npy", x


def test_forward_saves_every_blob_equal_to_a_net_forward(fwd_files, tmp_path, capsys):
    model, weights, x_path, x = fwd_files
    out = tmp_path / "out.npz"
    code, _, err = run_cli(["forward", "-m", model, "-w", weights, "--input", f"data={x_path}", "-o", out], capsys)
    assert code == 0, err
    saved = np.load(out, allow_pickle=False)
    net = load_net(model, weights, "TEST")
    net.forward({"data": x})
    assert sorted(saved.files) == sorted(net.blobs) == sorted(["data", "conv1/out", "file", "ip"])
    for name, value in net.blobs.items():
        np.testing.assert_array_equal(saved[name], value)
    np.testing.assert_array_equal(saved["data"], x)
    # TEST-phase dropout is the identity; the ReLU ran in place on conv1/out
    np.testing.assert_array_equal(saved["file"], saved["conv1/out"])
    assert saved["conv1/out"].min() >= 0
    w, b = stored_blobs(weights)["ip"]
    np.testing.assert_allclose(saved["ip"], saved["file"].reshape(3, -1) @ w.T + b, rtol=1e-5, atol=1e-6)


def test_forward_train_phase_uses_train_layers_and_dropout(fwd_files, tmp_path, capsys):
    model, weights, x_path, _ = fwd_files
    outs = []
    for k in range(2):
        out = tmp_path / f"train{k}.npz"
        code, _, err = run_cli(["forward", "-m", model, "-w", weights, "--input", f"data={x_path}", "-o", out,
                                "--phase", "TRAIN", "--seed", 9], capsys)
        assert code == 0, err
        outs.append(np.load(out))
    a, b = outs
    assert "squared" in a.files  # the TRAIN-only layer ran
    for name in a.files:  # same seed, same dropout mask
        np.testing.assert_array_equal(a[name], b[name])
    kept = a["file"] != 0
    np.testing.assert_allclose(a["file"][kept], 2 * a["conv1/out"][kept], rtol=1e-6)  # scaled by 1/(1-0.5)
    positive = a["conv1/out"] > 0
    assert 0.3 < kept[positive].mean() < 0.7
    np.testing.assert_allclose(a["squared"], a["file"] ** 2, rtol=1e-6)


def test_forward_replaces_a_data_layer_with_fed_arrays(toy, tmp_path, capsys):
    model, weights, images, labels, _ = toy
    x = images[4:8].astype(np.float32) * np.float32(SCALE)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", labels[4:8])
    out = tmp_path / "out.npz"
    code, _, err = run_cli(["forward", "-m", model, "-w", weights, "--input", f"data={tmp_path / 'x.npy'}",
                            "--input", f"label={tmp_path / 'y.npy'}", "-o", out], capsys)
    assert code == 0, err
    saved = np.load(out)
    loss, accuracy = toy_reference(weights, images, labels, 1)
    assert float(saved["loss"]) == pytest.approx(loss, rel=1e-5)
    assert float(saved["accuracy"]) == accuracy


# --------------------------------------------------------------------------- init

INIT_NET = '''name: "init"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 8 dim: 12 dim: 12 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 64 kernel_size: 5
          weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "constant" value: 0.2 } } }
layer { name: "conv_msra" type: "Convolution" bottom: "conv" top: "conv_msra"
        convolution_param { num_output: 32 kernel_size: 3 weight_filler { type: "msra" }
          bias_filler { type: "constant" value: -0.3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "conv_msra" top: "ip"
        inner_product_param { num_output: 40 weight_filler { type: "xavier" } } }
'''
FANS = {"conv": 8 * 5 * 5, "conv_msra": 64 * 3 * 3, "ip": 32 * 6 * 6}  # weights per output


@pytest.fixture(scope="module")
def init_model(tmp_path_factory):
    p = tmp_path_factory.mktemp("init") / "init.prototxt"
    p.write_text(INIT_NET)
    return p


def init_blobs(model, tmp_path, capsys, *extra):
    out = tmp_path / "w.caffemodel"
    code, _, err = run_cli(["init", "-m", model, "-o", out, *extra], capsys)
    assert code == 0, err
    return stored_blobs(out), out


def uniform_bound_matches(w, bound):
    assert np.abs(w).max() <= bound * (1 + 1e-6)
    assert np.abs(w).max() > 0.98 * bound
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.04)
    assert abs(w.mean()) < 0.05 * bound


def test_init_draws_from_the_prototxt_fillers(init_model, tmp_path, capsys):
    blobs, _ = init_blobs(init_model, tmp_path, capsys, "--seed", 1)
    assert set(blobs) == {"conv", "conv_msra", "ip"}
    w, b = blobs["conv"]
    assert w.shape == (64, 8, 5, 5) and w.std() == pytest.approx(0.1, rel=0.03) and abs(w.mean()) < 0.005
    np.testing.assert_array_equal(b, np.full(64, 0.2, np.float32))
    w, b = blobs["conv_msra"]
    assert w.std() == pytest.approx(math.sqrt(2 / FANS["conv_msra"]), rel=0.03)
    np.testing.assert_array_equal(b, np.full(32, -0.3, np.float32))
    w, b = blobs["ip"]
    assert w.shape == (40, FANS["ip"])
    uniform_bound_matches(w, math.sqrt(3 / FANS["ip"]))  # Caffe's xavier: U(-sqrt(3/fan_in), +)
    np.testing.assert_array_equal(b, np.zeros(40, np.float32))  # no bias_filler: constant 0


@pytest.mark.parametrize("filler", ["xavier", "msra", "gaussian", "constant"])
def test_init_filler_option_replaces_weights_not_biases(init_model, tmp_path, capsys, filler):
    blobs, _ = init_blobs(init_model, tmp_path, capsys, "--seed", 2, "--filler", filler)
    for layer, (w, b) in blobs.items():
        fan_in = FANS[layer]
        if filler == "xavier":
            uniform_bound_matches(w, math.sqrt(3 / fan_in))
        elif filler == "msra":
            assert w.std() == pytest.approx(math.sqrt(2 / fan_in), rel=0.04)
            assert abs(w.mean()) < 0.05 * math.sqrt(2 / fan_in)
        elif filler == "gaussian":  # FillerParameter defaults: mean 0, std 1
            assert w.std() == pytest.approx(1.0, rel=0.04) and abs(w.mean()) < 0.05
        else:  # constant, value 0 by default
            assert not w.any()
    # biases keep the prototxt's fillers
    np.testing.assert_array_equal(blobs["conv"][1], np.full(64, 0.2, np.float32))
    np.testing.assert_array_equal(blobs["conv_msra"][1], np.full(32, -0.3, np.float32))
    np.testing.assert_array_equal(blobs["ip"][1], np.zeros(40, np.float32))


def test_init_bilinear_filler_is_the_upsampling_kernel(tmp_path, capsys):
    model = tmp_path / "up.prototxt"
    model.write_text('''layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }
layer { name: "up" type: "Deconvolution" bottom: "data" top: "up"
        convolution_param { num_output: 3 group: 3 kernel_size: 4 stride: 2 pad: 1 bias_term: false } }''')
    blobs, _ = init_blobs(model, tmp_path, capsys, "--filler", "bilinear")
    (w,) = blobs["up"]
    # filler.hpp for k = 4: f = 2, c = 0.75, weight(x, y) = (1 - |x/f - c|)(1 - |y/f - c|)
    row = np.array([0.25, 0.75, 0.75, 0.25], np.float32)
    assert w.shape == (3, 1, 4, 4)
    for k in range(3):
        np.testing.assert_allclose(w[k, 0], np.outer(row, row), rtol=1e-6)


def test_init_seed_reproduces_the_file(init_model, tmp_path, capsys):
    files = []
    for k, seed in enumerate([4, 4, 5]):
        out = tmp_path / f"w{k}.caffemodel"
        assert run_cli(["init", "-m", init_model, "-o", out, "--seed", seed, "--filler", "msra"], capsys)[0] == 0
        files.append(out.read_bytes())
    assert files[0] == files[1] and files[0] != files[2]


def test_init_file_reads_in_opencv(init_model, tmp_path, capsys):
    cv2 = pytest.importorskip("cv2")
    blobs, out = init_blobs(init_model, tmp_path, capsys, "--seed", 6)
    cvnet = cv2.dnn.readNetFromCaffe(str(init_model), str(out))
    for name in ("conv", "conv_msra", "ip"):
        lid = cvnet.getLayerId(name)
        np.testing.assert_array_equal(cvnet.getParam(lid, 0).reshape(blobs[name][0].shape), blobs[name][0])
        np.testing.assert_array_equal(cvnet.getParam(lid, 1).ravel(), blobs[name][1])


# --------------------------------------------------------------------------- info

# LeNet per image, by hand: conv1 20 maps of 24x24, 1x5x5 weights each; conv2 50 maps of
# 8x8 from 20x5x5; ip1 500 x 800 (50x4x4 after pool2); ip2 10 x 500.
LENET_MACS = {"conv1": 20 * 24 * 24 * 25, "conv2": 50 * 8 * 8 * 20 * 25, "ip1": 500 * 800, "ip2": 10 * 500}
LENET_PARAMS = {"conv1": 20 * 25 + 20, "conv2": 50 * 20 * 25 + 50, "ip1": 500 * 800 + 500, "ip2": 10 * 500 + 10}


def test_info_lenet_macs_and_parameters(capsys):
    code, out, err = run_cli(["info", "-m", REPO / "models" / "lenet" / "lenet.prototxt"], capsys)
    assert code == 0, err
    rows = table_rows(out)
    batch = 64
    for layer, macs in LENET_MACS.items():
        assert int(rows[layer][3]) == batch * macs, layer
        assert int(rows[layer][2]) == LENET_PARAMS[layer], layer
    for layer in ("data", "pool1", "pool2", "relu1", "prob"):
        assert rows[layer][2:] == ["0", "0"]
    assert rows["conv1"][:2] == ["Convolution", "64x20x24x24"]
    assert rows["ip1"][:2] == ["InnerProduct", "64x500"]
    assert rows["total"][2:] == [str(sum(LENET_PARAMS.values())), str(batch * sum(LENET_MACS.values()))]
    per_image = sum(LENET_MACS.values())
    assert per_image == 2_293_000
    assert f"batch 64, {per_image:,} MACs per image" in out


def test_info_with_trained_weights_and_v1_prototxt(capsys):
    v1 = shared_path("zoo", "bvlc_caffe_2014_v1_format", "mnist", "lenet.prototxt")
    weights = shared_path("data", "caffemodels", "lenet_v1_format", "lenet_iter_10000.caffemodel")
    code, out, err = run_cli(["info", "-m", v1, "-w", weights], capsys)
    assert code == 0, err
    assert int(table_rows(out)["total"][2]) == sum(LENET_PARAMS.values())


def test_layer_macs_of_grouped_transposed_and_deconvolution_layers(tmp_path):
    model = tmp_path / "m.prototxt"
    model.write_text('''layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 6 dim: 9 dim: 9 } } }
layer { name: "g" type: "Convolution" bottom: "data" top: "g"
        convolution_param { num_output: 4 group: 2 kernel_h: 3 kernel_w: 2 stride: 2 } }
layer { name: "d" type: "Deconvolution" bottom: "g" top: "d"
        convolution_param { num_output: 6 group: 2 kernel_size: 3 stride: 2 } }
layer { name: "t" type: "InnerProduct" bottom: "d" top: "t" inner_product_param { num_output: 5 transpose: true } }''')
    net = load_net(str(model))
    macs = {name: net.layer(name).macs([net.blob_shapes[b] for b in net.bottom_names[i]],
                                       [net.blob_shapes[t] for t in net.top_names[i]])
            for i, name in enumerate(net.layer_names)}
    # grouped conv: 4 maps of 4x4 per image, each output sums 6/2 channels x 3x2 window
    assert net.blob_shapes["g"] == (2, 4, 4, 4) and macs["g"] == 2 * 4 * 4 * 4 * (3 * 3 * 2)
    # deconvolution scatters every input value through 6/2 maps x 3x3 weights
    assert macs["d"] == 2 * 4 * 4 * 4 * (3 * 3 * 3)
    fan_in = math.prod(net.blob_shapes["d"][1:])
    assert macs["t"] == 2 * 5 * fan_in and macs["data"] == 0


def test_ristretto_layers_count_the_macs_of_their_float_layer(tmp_path):
    model = tmp_path / "m.prototxt"
    model.write_text('''layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "c" type: "ConvolutionRistretto" bottom: "data" top: "c" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "d" type: "DeconvolutionRistretto" bottom: "c" top: "d" convolution_param { num_output: 2 kernel_size: 2 } }
layer { name: "f" type: "FcRistretto" bottom: "d" top: "f" inner_product_param { num_output: 5 } }''')
    net = load_net(str(model))
    shapes = net.blob_shapes
    macs = {name: net.layer(name).macs([shapes[b] for b in net.bottom_names[i]], [shapes[t] for t in net.top_names[i]])
            for i, name in enumerate(net.layer_names)}
    assert macs["c"] == 2 * 4 * 6 * 6 * (3 * 3 * 3)
    assert macs["d"] == 2 * 4 * 6 * 6 * (2 * 2 * 2)
    assert macs["f"] == 2 * 5 * math.prod(shapes["d"][1:])


# --------------------------------------------------------------------------- time, help, version


@pytest.mark.parametrize("phase", ["TEST", "TRAIN"])
def test_time_lists_every_layer(toy, capsys, phase):
    model, weights, *_ = toy
    code, out, err = run_cli(["time", "-m", model, "-w", weights, "-i", 2, "--phase", phase], capsys)
    assert code == 0, err
    rows = table_rows(out)
    net = load_net(model, weights, phase)
    for name, layer in zip(net.layer_names, net.layers):
        assert rows[name][0] == layer.type
        assert float(rows[name][1]) >= 0
    assert float(rows["forward"][1]) >= 0
    assert ("backward" in rows) == (phase == "TRAIN")


def all_commands():
    names = []
    for name, cmd in cli.commands.items():
        names.append([name])
        for sub in getattr(cmd, "commands", {}):
            names.append([name, sub])
    return names


def test_every_command_has_working_help(capsys):
    commands = all_commands()
    expected = {"benchmark", "test", "forward", "init", "info", "time", "quantize", "finetune", "train",
                "convert", "compute-mean"}
    assert expected <= {c[0] for c in commands}
    for words in commands:
        code, out, err = run_cli([*words, "--help"], capsys)
        assert code == 0, (words, err)
        assert out.startswith(f"Usage: ristretto {' '.join(words)} "), words
        assert "--help" in out
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0 and all(c in out for c in expected)


def test_version(capsys):
    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and re.fullmatch(rf"ristretto, version {re.escape(__version__)}\s*", out)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the NaN is the point
def test_benchmark_json_holds_null_for_values_that_are_not_numbers(toy, tmp_path, capsys):
    model, weights, *_ = toy
    text = open(model).read() + '''layer { name: "root" type: "Power" bottom: "ip" top: "root"
        power_param { power: 0.5 shift: -1000 } }
layer { name: "dist" type: "EuclideanLoss" bottom: "root" bottom: "ip" top: "dist" }'''
    nan_model = tmp_path / "nan.prototxt"
    nan_model.write_text(text)
    code, out, err = run_cli(["benchmark", "-m", nan_model, "-w", weights, "-i", 2, "--json", tmp_path / "s.json"],
                             capsys)
    assert code == 0, err

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    data = json.loads((tmp_path / "s.json").read_text(), parse_constant=refuse)
    assert data["means"]["dist"] is None and [b["dist"] for b in data["batches"]] == [None, None]
    assert data["loss"] is None and data["loss_weights"] == {"dist": 1.0, "loss": 0.5}
    assert data["means"]["accuracy"] is not None and table_rows(out)["dist"][0] == "nan"


def test_forward_says_which_inputs_were_left_at_zero(tmp_path, capsys):
    model = tmp_path / "two.prototxt"
    model.write_text('''layer { name: "a" type: "Input" top: "a" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "b" type: "Input" top: "b" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "sum" }''')
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.save(tmp_path / "a.npy", a)
    code, _, err = run_cli(["forward", "-m", model, "--input", f"a={tmp_path / 'a.npy'}", "-o", tmp_path / "o.npz"],
                           capsys)
    assert code == 0, err
    assert "b not given; the Input layer 'b' gives zeros" in err
    saved = np.load(tmp_path / "o.npz")
    np.testing.assert_array_equal(saved["sum"], a)
    assert not saved["b"].any()
