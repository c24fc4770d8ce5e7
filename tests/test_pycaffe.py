"""``import ristretto_cli.pycaffe as caffe``: pycaffe scripts run unchanged but for the import
line. Classic scripts on real data (LeNet on MNIST t10k, SqueezeNet v1.0 on the ImageNet
sample through ``io.Transformer`` and ``Classifier``), ``SGDSolver.step`` against
``ristretto finetune`` bit for bit, and pycaffe's semantics one by one (views into the
net, ``forward()`` returning the outputs, in-place blobs once, ``params`` by layer name)."""
from __future__ import annotations

import gzip
import os
import textwrap

import numpy as np
import pytest
from PIL import Image

import ristretto_cli.pycaffe as caffe
from ristretto_cli.caffe.caffemodel import read_caffemodel
from ristretto_cli.caffe.blobproto import blob_to_array
from ristretto_cli.data.lmdb_io import make_datum, write_datums

from conftest import run_cli, shared_path

IMPORT_LINE = "import ristretto_cli.pycaffe as caffe"


def run_pycaffe_script(script: str, **variables) -> dict:
    """Run a pycaffe script whose only change is the import line; its globals after the run."""
    script = textwrap.dedent(script)
    assert script.count("import caffe\n") == 1
    namespace = dict(variables)
    exec(compile(script.replace("import caffe\n", IMPORT_LINE + "\n"), "<pycaffe script>", "exec"), namespace)
    return namespace


def read_idx(path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


# --------------------------------------------------------------------------- LeNet on MNIST

LENET_SCRIPT = """
import numpy as np
import caffe

caffe.set_mode_cpu()
net = caffe.Net(model_def, model_weights, caffe.TEST)
batch = 500
net.blobs['data'].reshape(batch, 1, 28, 28)
correct = 0
for start in range(0, len(images), batch):
    net.blobs['data'].data[...] = images[start:start + batch, np.newaxis] * 0.00390625
    out = net.forward()
    correct += (out['prob'].argmax(axis=1) == labels[start:start + batch]).sum()
accuracy = correct / float(len(images))
"""


def test_the_classic_lenet_script_reaches_the_manifest_accuracy_on_mnist():
    model = shared_path("zoo", "lenet", "lenet.prototxt")
    weights = shared_path("data", "caffemodels", "lenet_v2", "lenet_iter_10000.caffemodel")
    images = read_idx(shared_path("data", "mnist", "t10k-images-idx3-ubyte.gz"))
    labels = read_idx(shared_path("data", "mnist", "t10k-labels-idx1-ubyte.gz"))
    ns = run_pycaffe_script(LENET_SCRIPT, model_def=str(model), model_weights=str(weights), images=images,
                            labels=labels)
    assert ns["accuracy"] == pytest.approx(0.9911, abs=1e-9)  # MANIFEST: 99.11 % on all 10000
    net = ns["net"]
    assert list(net.blobs) == ["data", "conv1", "pool1", "conv2", "pool2", "ip1", "ip2", "prob"]
    assert list(net.params) == ["conv1", "conv2", "ip1", "ip2"]
    assert [p.data.shape for p in net.params["conv1"]] == [(20, 1, 5, 5), (20,)]
    assert net.inputs == ["data"] and net.outputs == ["prob"]
    assert net.blobs["prob"].data.shape == (500, 10) and net.blobs["data"].num == 500


# --------------------------------------------------------------------------- SqueezeNet on ImageNet

# The Deep Compression deploy prototxt: its layer names (fireN/conv1x1_1 ...) are those of
# the decoded caffemodel; the DeepScale zoo deploy names them fireN/squeeze1x1 ...
SQUEEZENET = ("data", "caffemodels", "squeezenet_v1.0_deep_compression", "SqueezeNet_deploy.prototxt")
SQUEEZENET_WEIGHTS = ("data", "caffemodels", "squeezenet_v1.0_decoded", "squeezenet_v1.0.caffemodel")
SAMPLE_STEP = 50  # every 50th of the 1000 sample images: 20 images


def imagenet_sample():
    folder = shared_path("data", "imagenet", "sample_1000")
    wnids = [line.split()[0] for line in shared_path("data", "imagenet", "synset_words.txt").read_text().splitlines()]
    files = sorted(f for f in os.listdir(folder) if f.endswith(".JPEG"))[::SAMPLE_STEP]
    return [folder / f for f in files], np.array([wnids.index(f[:9]) for f in files])


def reference_squeezenet_scores(net, images, mean) -> np.ndarray:
    """What Classifier.predict(oversample=False) must compute, written out: each image resized
    to 256x256, the centre 227x227 crop, RGB -> BGR, x 255, minus the BGR mean, one forward
    pass of the library's net underneath."""
    batch = np.zeros((len(images), 3, 227, 227), dtype=np.float32)
    for i, image in enumerate(images):
        crop = caffe.io.resize_image(image, (256, 256))[14:241, 14:241]
        batch[i] = (crop[:, :, ::-1] * 255).transpose(2, 0, 1) - mean[:, None, None]
    core = net.core
    core.reshape({"data": batch.shape})
    return core.backend.to_numpy(core.forward({"data": batch})["pool_final"]).reshape(len(images), -1)


CLASSIFIER_SCRIPT = """
import numpy as np
import caffe

mu = np.load(mean_file).mean(1).mean(1)  # the per-channel BGR mean, as Caffe's example
net = caffe.Classifier(model_def, model_weights, image_dims=(256, 256), mean=mu, raw_scale=255,
                       channel_swap=(2, 1, 0))
net.blobs['data'].reshape(len(image_files), 3, 227, 227)
images = [caffe.io.load_image(f) for f in image_files]
scores = net.predict(images, oversample=False)
top1 = scores.reshape(len(images), -1).argmax(axis=1)
"""

TRANSFORMER_SCRIPT = """
import numpy as np
import caffe

net = caffe.Net(model_def, caffe.TEST, weights=model_weights)
mu = np.load(mean_file).mean(1).mean(1)
transformer = caffe.io.Transformer({'data': net.blobs['data'].data.shape})
transformer.set_transpose('data', (2, 0, 1))
transformer.set_mean('data', mu)
transformer.set_raw_scale('data', 255)
transformer.set_channel_swap('data', (2, 1, 0))
net.blobs['data'].reshape(len(image_files), 3, 227, 227)
transformer = caffe.io.Transformer({'data': net.blobs['data'].data.shape})
transformer.set_transpose('data', (2, 0, 1))
transformer.set_mean('data', mu)
transformer.set_raw_scale('data', 255)
transformer.set_channel_swap('data', (2, 1, 0))
for i, f in enumerate(image_files):
    image = caffe.io.load_image(f)
    net.blobs['data'].data[i] = transformer.preprocess('data', image)
output = net.forward()
top1 = output['pool_final'].reshape(len(image_files), -1).argmax(axis=1)
"""


@pytest.fixture(scope="module")
def squeezenet_files():
    paths, labels = imagenet_sample()
    return {"model_def": str(shared_path(*SQUEEZENET)), "model_weights": str(shared_path(*SQUEEZENET_WEIGHTS)),
            "mean_file": str(shared_path("data", "imagenet", "ilsvrc_2012_mean.npy")),
            "image_files": [str(p) for p in paths], "labels": labels}


def test_the_classic_classifier_script_classifies_real_imagenet_images(squeezenet_files):
    ns = run_pycaffe_script(CLASSIFIER_SCRIPT, **{k: v for k, v in squeezenet_files.items() if k != "labels"})
    labels = squeezenet_files["labels"]
    top1 = ns["top1"]
    accuracy = float((top1 == labels).mean())
    # MANIFEST: 65.5 % top-1 on all 1000; 20 images leave a wide band around it
    assert 0.45 <= accuracy <= 0.85, accuracy
    # the same numbers as the pipeline written out (resize, centre crop, BGR, scale, mean)
    reference = reference_squeezenet_scores(ns["net"], ns["images"], ns["mu"])
    assert np.allclose(ns["scores"].reshape(len(labels), -1), reference, rtol=1e-4, atol=1e-4)
    assert np.array_equal(reference.argmax(axis=1), top1)


def test_the_classic_transformer_script_feeds_a_batch_and_reads_the_output(squeezenet_files):
    files = dict(squeezenet_files, image_files=squeezenet_files["image_files"][:10])
    ns = run_pycaffe_script(TRANSFORMER_SCRIPT, **{k: v for k, v in files.items() if k != "labels"})
    net = ns["net"]
    assert net.blobs["data"].data.shape == (10, 3, 227, 227) and net.blobs["pool_final"].shape == (10, 1000, 1, 1)
    # the whole image squeezed to 227x227 (no crop) is still mostly right on these images
    assert (ns["top1"] == files["labels"][:10]).mean() >= 0.4


# --------------------------------------------------------------------------- solver

NET = '''
name: "toy"
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
        transform_param {{ mirror: true }}
        data_param {{ source: "{train}" batch_size: 4 backend: LMDB }} }}
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
        data_param {{ source: "{test}" batch_size: 5 backend: LMDB }} }}
layer {{ name: "ip1" type: "{ip}" bottom: "data" top: "h"
        inner_product_param {{ num_output: 6 weight_filler {{ type: "xavier" }} }} {quant} }}
layer {{ name: "relu" type: "ReLU" bottom: "h" top: "h" }}
layer {{ name: "drop" type: "Dropout" bottom: "h" top: "h" include {{ phase: TRAIN }} }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "h" top: "score"
        inner_product_param {{ num_output: 2 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }}
layer {{ name: "accuracy" type: "Accuracy" bottom: "score" bottom: "label" top: "accuracy"
        include {{ phase: TEST }} }}
'''

SOLVER = '''net: "{net}"
test_iter: 2
test_interval: 5
base_lr: 0.05
momentum: 0.9
weight_decay: 0.001
lr_policy: "step"
gamma: 0.5
stepsize: 7
display: 4
max_iter: 20
snapshot: 0
snapshot_prefix: "{prefix}"
random_seed: 11
'''

QUANT = ('quantization_param { precision: DYNAMIC_FIXED_POINT bw_layer_in: 8 bw_layer_out: 8 bw_params: 4 '
         'fl_layer_in: 4 fl_layer_out: 4 fl_params: 2 }')


def make_db(path, n, seed):
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        label = i % 2
        x = rng.normal(loc=2.0 * label - 1.0, size=(4, 1, 1)).astype(np.float32)
        records.append((f"{i:08d}", make_datum(x, label)))
    write_datums(str(path), records)


@pytest.fixture
def toy_solver(tmp_path):
    make_db(tmp_path / "train_lmdb", 12, 0)
    make_db(tmp_path / "test_lmdb", 10, 1)

    def write(ip="InnerProduct", quant=""):
        net = tmp_path / f"net_{ip}.prototxt"
        net.write_text(NET.format(train=tmp_path / "train_lmdb", test=tmp_path / "test_lmdb", ip=ip, quant=quant))
        (tmp_path / "snap").mkdir(exist_ok=True)
        solver = tmp_path / f"solver_{ip}.prototxt"
        solver.write_text(SOLVER.format(net=net, prefix=tmp_path / "snap" / ip))
        return str(solver)

    return write


SOLVER_SCRIPT = """
import caffe

caffe.set_mode_cpu()
solver = caffe.SGDSolver(solver_file)
solver.step(20)
weights = {name: [blob.data.copy() for blob in blobs] for name, blobs in solver.net.params.items()}
iterations = solver.iter
"""


@pytest.mark.parametrize("ip,quant", [("InnerProduct", ""), ("FcRistretto", QUANT)], ids=["float", "ristretto"])
def test_twenty_sgd_solver_steps_equal_finetune_bit_for_bit(toy_solver, tmp_path, capsys, ip, quant):
    solver_file = toy_solver(ip, quant)
    ns = run_pycaffe_script(SOLVER_SCRIPT, solver_file=solver_file)
    assert ns["iterations"] == 20
    solver = ns["solver"]
    test_net = solver.test_nets[0]
    assert solver.net.inputs == [] and test_net.inputs == []          # Data layers are not net inputs
    out = test_net.forward()                                           # reads the next TEST batch
    assert set(out) == {"accuracy", "loss"} and 0.0 <= float(out["accuracy"]) <= 1.0
    assert test_net.params["ip1"][0].data is solver.net.params["ip1"][0].data  # shared with the train net
    solver.close()
    code, _, err = run_cli(["finetune", "--solver", solver_file], capsys)
    assert code == 0, err
    written = {l.name: [blob_to_array(b) for b in l.blobs]
               for l in read_caffemodel(str(tmp_path / "snap" / f"{ip}_iter_20.caffemodel")).layer if l.blobs}
    assert sorted(written) == sorted(ns["weights"]) == ["ip1", "ip2"]
    for name, arrays in written.items():
        for ours, theirs in zip(ns["weights"][name], arrays):
            assert ours.dtype == np.float32 and ours.tobytes() == theirs.astype(np.float32).tobytes(), name


def test_a_solver_trains_an_input_net_on_what_the_script_writes(tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text('''
    layer { name: "in" type: "Input" top: "x" top: "y" input_param { shape { dim: 8 dim: 3 } shape { dim: 8 } } }
    layer { name: "ip" type: "InnerProduct" bottom: "x" top: "s"
            inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.1 } } }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "s" bottom: "y" top: "loss" }
    ''')
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(f'net: "{net}"\nbase_lr: 0.5\nlr_policy: "fixed"\nmax_iter: 100\nrandom_seed: 3\n'
                           f'snapshot_after_train: false\n')
    solver = caffe.get_solver(str(solver_file))
    rng = np.random.default_rng(0)
    y = np.arange(8) % 2
    x = (rng.normal(size=(8, 3)) + (2 * y[:, None] - 1)).astype(np.float32)
    solver.net.blobs["x"].data[...] = x
    solver.net.blobs["y"].data[...] = y
    solver.step(1)
    first = float(solver.net.blobs["loss"].data)
    solver.step(30)
    assert solver.iter == 31 and float(solver.net.blobs["loss"].data) < first / 4
    assert np.array_equal(solver.net.blobs["x"].data, x)  # what was written stays the input


# --------------------------------------------------------------------------- pycaffe semantics

TINY = '''
name: "tiny"
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }
layer { name: "a" type: "InnerProduct" bottom: "ip" top: "a"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "b" type: "InnerProduct" bottom: "ip" top: "b"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "sum" }
'''


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.prototxt"
    path.write_text(TINY)
    caffe.set_random_seed(5)
    return caffe.Net(str(path), caffe.TEST)


def test_blobs_hold_in_place_tops_once_in_caffes_order_with_splits(tiny):
    assert list(tiny.blobs) == ["data", "ip", "ip_relu_0_split_0", "ip_relu_0_split_1", "a", "b", "sum"]
    assert tiny._layer_names == ["input", "ip", "relu", "ip_relu_0_split", "a", "b", "sum"]
    assert [l.type for l in tiny.layers] == ["Input", "InnerProduct", "ReLU", "Split", "InnerProduct",
                                             "InnerProduct", "Eltwise"]
    assert list(tiny.params) == ["ip", "a", "b"] and len(tiny.params["ip"]) == 2 and len(tiny.params["a"]) == 2
    assert tiny.inputs == ["data"] and tiny.outputs == ["sum"]
    assert tiny.top_names["relu"] == ["ip"] and tiny.bottom_names["sum"] == ["a", "b"]
    blob = tiny.blobs["data"]
    assert blob.shape == (2, 3) and blob.count == 6 and (blob.num, blob.channels, blob.height, blob.width) == (2, 3, 1, 1)


def test_forward_returns_the_outputs_and_data_is_the_nets_own_array(tiny):
    x = np.arange(6, dtype=np.float32).reshape(2, 3) / 6 - 0.4
    tiny.blobs["data"].data[...] = x                  # written before forward: consumed by it
    out = tiny.forward()
    assert set(out) == {"sum"}
    W, b = (p.data for p in tiny.params["ip"])
    h = np.maximum(x @ W.T + b, 0)
    (Wa, ba), (Wb, bb) = ([p.data for p in tiny.params[n]] for n in "ab")
    expected = h @ Wa.T + ba + h @ Wb.T + bb
    assert np.allclose(out["sum"], expected, rtol=1e-5, atol=1e-6)
    assert out["sum"] is tiny.blobs["sum"].data       # the returned array is the blob's
    assert np.allclose(tiny.blobs["ip"].data, h)      # the in-place blob holds the ReLU's result
    assert tiny.blobs["ip"].data is tiny.core.blobs["ip"]
    # a write into a weight reaches the net: scaling W of "a" by 0 leaves only branch b
    tiny.params["a"][0].data[...] = 0
    tiny.params["a"][1].data[...] = 0
    assert np.allclose(tiny.forward()["sum"], h @ Wb.T + bb, rtol=1e-5, atol=1e-6)
    # keyword inputs, extra blobs, start/end by layer name (end inclusive)
    out = tiny.forward(blobs=["ip"], data=2 * x)
    assert set(out) == {"sum", "ip"} and np.array_equal(tiny.blobs["data"].data, 2 * x)
    tiny.blobs["ip"].data[...] = 1.0                  # start after "ip": the written values are read
    out = tiny.forward(start="ip_relu_0_split", end="b")
    assert set(out) == {"b"} and np.allclose(out["b"], np.ones((2, 4)) @ Wb.T + bb, rtol=1e-5)
    with pytest.raises(Exception, match="do not match"):
        tiny.forward(other=x)


def test_input_blob_reshape_carries_through_the_net(tiny):
    tiny.blobs["data"].reshape(5, 3)
    tiny.blobs["data"].data[...] = 0.5
    assert tiny.forward()["sum"].shape == (5, 2) and tiny.blobs["a"].shape == (5, 2)
    tiny.blobs["data"].reshape(1, 3)
    tiny.reshape()
    assert tiny.blobs["ip"].shape == (1, 4) and tiny.blobs["ip"].data.shape == (1, 4)


def test_backward_fills_diffs_of_blobs_and_params(tiny):
    x = np.array([[0.3, -0.2, 0.5], [0.1, 0.4, -0.6]], dtype=np.float32)
    tiny.forward(data=x)
    g = np.ones((2, 2), dtype=np.float32)
    tiny.backward(sum=g)
    (Wa, _), (Wb, _) = ([p.data for p in tiny.params[n]] for n in "ab")
    h = tiny.blobs["ip"].data
    assert np.allclose(tiny.params["a"][0].diff, g.T @ h, rtol=1e-5)
    assert np.allclose(tiny.params["a"][1].diff, g.sum(0), rtol=1e-5)
    dh = g @ Wa + g @ Wb
    W = tiny.params["ip"][0].data
    assert np.allclose(tiny.params["ip"][0].diff, (dh * (h > 0)).T @ x, rtol=1e-4, atol=1e-6)
    assert np.allclose(tiny.blobs["ip"].diff, dh * (h > 0), rtol=1e-5)  # in-place: the pre-ReLU gradient
    assert W.shape == (4, 3)
    before = tiny.params["a"][0].diff.copy()
    tiny.backward(sum=g)                                # parameter gradients add up, as Caffe's
    assert np.allclose(tiny.params["a"][0].diff, 2 * before, rtol=1e-5)
    tiny.clear_param_diffs()
    assert not tiny.params["a"][0].diff.any()


def test_save_and_copy_from_round_trip(tiny, tmp_path):
    out = tmp_path / "tiny.caffemodel"
    tiny.save(str(out))
    other = caffe.Net(str(tmp_path / "tiny.prototxt"), str(out), caffe.TEST)  # the older form
    for name in tiny.params:
        for a, b in zip(tiny.params[name], other.params[name]):
            assert np.array_equal(a.data, b.data)
    third = caffe.Net(str(tmp_path / "tiny.prototxt"), caffe.TEST)
    third.copy_from(str(out))
    assert np.array_equal(third.params["ip"][0].data, tiny.params["ip"][0].data)


def test_forward_all_batches_and_drops_the_padding(tiny):
    x = np.random.default_rng(2).normal(size=(5, 3)).astype(np.float32)
    every = tiny.forward_all(data=x)["sum"]
    assert every.shape == (5, 2)
    one = caffe.Net.forward(tiny, data=x[4:5].repeat(2, axis=0))["sum"][0]
    assert np.allclose(every[4], one, rtol=1e-6)


def test_ristretto_layers_show_their_formats(tmp_path):
    text = TINY.replace('name: "a" type: "InnerProduct"', 'name: "a" type: "FcRistretto"').replace(
        'inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }\nlayer { name: "b"',
        'inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } }\n'
        '        quantization_param { bw_params: 4 fl_params: 3 bw_layer_in: 8 fl_layer_in: 5 bw_layer_out: 8 '
        'fl_layer_out: 4 } }\nlayer { name: "b"', 1)
    path = tmp_path / "q.prototxt"
    path.write_text(text)
    net = caffe.Net(str(path), caffe.TEST)
    q = net.layer_dict["a"].quantization
    assert net.layer_dict["a"].type == "FcRistretto" and net.layer_dict["b"].quantization is None
    assert (q.bw_params, q.fl_params, q.bw_layer_in, q.fl_layer_in) == (4, 3, 8, 5)
    out = net.forward(data=np.full((2, 3), 0.3, np.float32), blobs=["a"])
    W = net.params["a"][0].data  # the float shadow weights; the layer computed with their 4-bit trim
    from ristretto_cli import trim_fixed_point

    h = trim_fixed_point(net.blobs["ip_relu_0_split_0"].data, 8, 5)
    expected = trim_fixed_point(h @ trim_fixed_point(W, 4, 3).T, 8, 4)
    assert np.array_equal(out["a"], expected)


# --------------------------------------------------------------------------- io

def test_transformer_does_pycaffes_steps_in_pycaffes_order():
    t = caffe.io.Transformer({"data": (1, 3, 4, 5)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255.0)
    t.set_mean("data", np.array([10.0, 20.0, 30.0]))
    t.set_input_scale("data", 0.5)
    image = np.random.default_rng(0).random((4, 5, 3)).astype(np.float32)
    kept = image.copy()
    got = t.preprocess("data", image)
    expected = (image.transpose(2, 0, 1)[::-1] * 255.0 - np.array([10.0, 20.0, 30.0])[:, None, None]) * 0.5
    assert got.shape == (3, 4, 5) and got.dtype == np.float32
    assert np.allclose(got, expected, rtol=1e-6)
    assert np.array_equal(image, kept)
    assert np.allclose(t.deprocess("data", got), image, atol=1e-5)
    with pytest.raises(Exception, match="not one of the net inputs"):
        t.preprocess("other", image)
    with pytest.raises(ValueError, match="Mean channels"):
        t.set_mean("data", np.zeros(4))


def test_load_image_and_resize_image(tmp_path):
    rgb = np.zeros((6, 8, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    rgb[2:4, 2:6, 1] = 128
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(np.dstack([rgb, np.full((6, 8), 7, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb[..., 1]).save(tmp_path / "grey.png")
    img = caffe.io.load_image(str(tmp_path / "a.png"))
    assert img.shape == (6, 8, 3) and img.dtype == np.float32
    assert np.array_equal(img, rgb.astype(np.float32) / 255)
    assert np.array_equal(caffe.io.load_image(str(tmp_path / "rgba.png")), img)     # alpha dropped
    grey = caffe.io.load_image(str(tmp_path / "grey.png"))
    assert grey.shape == (6, 8, 3) and np.array_equal(grey[..., 0], grey[..., 2])  # tiled to RGB
    assert caffe.io.load_image(str(tmp_path / "grey.png"), color=False).shape == (6, 8, 1)
    assert np.allclose(caffe.io.load_image(str(tmp_path / "a.png"), color=False)[..., 0],
                       img[..., 0] * 0.2125 + img[..., 1] * 0.7154 + img[..., 2] * 0.0721, atol=1e-6)
    # bilinear with pixel centres aligned: halving averages 2x2 blocks exactly
    x = np.random.default_rng(1).random((4, 6, 3)).astype(np.float32)
    half = caffe.io.resize_image(x, (2, 3))
    assert np.allclose(half, x.reshape(2, 2, 3, 2, 3).mean(axis=(1, 3)), atol=1e-6)
    assert caffe.io.resize_image(np.full((3, 3, 1), 0.25, np.float32), (5, 7)).tolist() == \
        np.full((5, 7, 1), 0.25).tolist()
    assert np.array_equal(caffe.io.resize_image(x, (4, 6)), x)


def test_oversample_takes_corners_centre_and_mirrors():
    im = np.arange(6 * 8, dtype=np.float32).reshape(6, 8, 1)
    crops = caffe.io.oversample([im], (4, 4))
    assert crops.shape == (10, 4, 4, 1)
    assert np.array_equal(crops[0], im[:4, :4]) and np.array_equal(crops[3], im[2:, 4:])
    assert np.array_equal(crops[4], im[1:5, 2:6]) and np.array_equal(crops[9], im[1:5, 2:6][:, ::-1])


def test_blob_and_datum_conversions():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert np.array_equal(caffe.io.blobproto_to_array(caffe.io.array_to_blobproto(a)), a)
    assert all(np.array_equal(x, y) for x, y in zip(
        caffe.io.blobprotovector_str_to_arraylist(caffe.io.arraylist_to_blobprotovector_str([a, a + 1])),
        [a, a + 1]))
    u = (a % 256).astype(np.uint8)
    datum = caffe.io.array_to_datum(u, label=3)
    assert datum.label == 3 and np.array_equal(caffe.io.datum_to_array(datum), u)
    assert np.array_equal(caffe.io.datum_to_array(caffe.io.array_to_datum(a)), a)
