"""A BatchNorm net trained here, then folded: the TEST-phase outputs before and after the
fold agree within 1e-5 relative (issue #11, "a BatchNorm net trained here").

The train_val leaves ``use_global_stats`` unset, as Caffe's ResNet / MobileNet train_vals
do: batch statistics in the TRAIN phase (the running sums accumulate in the three blobs,
``lr_mult: 0``), the stored statistics in the TEST phase."""
from __future__ import annotations

import numpy as np
from google.protobuf import text_format

from ristretto_cli.backend import Backend
from ristretto_cli.caffe.caffemodel import write_caffemodel
from ristretto_cli.caffe.prototxt import read_net
from ristretto_cli.data.lmdb_io import make_datum, write_datums
from ristretto_cli.net import Net
from ristretto_cli.proto import caffe_pb2
from ristretto_cli.quantize.fold import fold_files
from ristretto_cli.solvers import Solver

BN_PARAMS = "param { lr_mult: 0 decay_mult: 0 } " * 3
SCALE_PARAMS = "param { lr_mult: 1 decay_mult: 0 } param { lr_mult: 1 decay_mult: 0 }"


def _conv_bn(name, bottom, n, bias=False):
    b = "" if bias else " bias_term: false"
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
            f'convolution_param {{ num_output: {n} kernel_size: 3 pad: 1{b} weight_filler {{ type: "msra" }} }} }}\n'
            f'layer {{ name: "{name}_bn" type: "BatchNorm" bottom: "{name}" top: "{name}" {BN_PARAMS} }}\n'
            f'layer {{ name: "{name}_scale" type: "Scale" bottom: "{name}" top: "{name}" {SCALE_PARAMS} '
            f'scale_param {{ bias_term: true }} }}\n'
            f'layer {{ name: "{name}_relu" type: "ReLU" bottom: "{name}" top: "{name}" }}\n')


def train_val(train_db, test_db) -> str:
    head = ""
    for phase, db, batch in (("TRAIN", train_db, 8), ("TEST", test_db, 8)):
        head += (f'layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: {phase} }} '
                 f'transform_param {{ scale: 0.0078125 mean_value: 128 }} '
                 f'data_param {{ source: "{db}" batch_size: {batch} backend: LMDB }} }}\n')
    return ('name: "bn_trained"\n' + head + _conv_bn("conv1", "data", 8) +
            'layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" '
            'pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n' + _conv_bn("conv2", "pool1", 8, bias=True) +
            'layer { name: "fc" type: "InnerProduct" bottom: "conv2" top: "fc" '
            'inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }\n'
            f'layer {{ name: "fc_bn" type: "BatchNorm" bottom: "fc" top: "fc_bn" {BN_PARAMS} }}\n'
            'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc_bn" bottom: "label" top: "loss" }\n'
            'layer { name: "accuracy" type: "Accuracy" bottom: "fc_bn" bottom: "label" top: "accuracy" '
            'include { phase: TEST } }\n')


def make_db(path, n, seed):
    """Three classes of 3x8x8 uint8 images: a bright square in a class-dependent corner, noise."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        label = i % 3
        img = rng.integers(0, 120, size=(3, 8, 8))
        r, c = divmod(label, 2)
        img[:, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 120
        records.append((f"{i:08d}", make_datum(img.astype(np.uint8), label)))
    write_datums(str(path), records)


SOLVER = """net: "{net}"
base_lr: 0.05
momentum: 0.9
weight_decay: 0.0005
lr_policy: "fixed"
max_iter: {iters}
display: 0
snapshot: 0
snapshot_after_train: false
snapshot_prefix: "{prefix}"
random_seed: 3
solver_mode: CPU
"""

ITERATIONS = 40


def _test_outputs(model, weights, batches):
    net = Net(read_net(model), "TEST", backend=Backend(np))
    try:
        net.load_weights(weights)
        out = []
        for _ in range(batches):
            net.forward()
            out.append({k: np.array(v, np.float64) for k, v in net.blobs.items()})
        return out, [l.type for l in net.layers]
    finally:
        net.close()


def test_a_batchnorm_net_trained_here_folds_exactly(tmp_path):
    make_db(tmp_path / "train_lmdb", 48, 0)
    make_db(tmp_path / "test_lmdb", 24, 1)
    model = tmp_path / "train_val.prototxt"
    model.write_text(train_val(tmp_path / "train_lmdb", tmp_path / "test_lmdb"))
    sp = text_format.Parse(SOLVER.format(net=model, iters=ITERATIONS, prefix=tmp_path / "snap"),
                           caffe_pb2.SolverParameter())
    losses = []
    solver = Solver(sp, log=lambda m: None)
    try:
        for _ in range(ITERATIONS):
            solver.step(1)
            losses.append(float(solver.net.blobs["loss"]))
        weights = tmp_path / "trained.caffemodel"
        write_caffemodel(weights, solver.net.to_proto(with_weights=True))
        bns = {l.name: [np.array(b) for b in l.blobs] for l in solver.net.layers if l.type == "BatchNorm"}
    finally:
        solver.close()
    assert np.mean(losses[-5:]) < np.mean(losses[:5])            # it learned something
    assert set(bns) == {"conv1_bn", "conv2_bn", "fc_bn"}
    for name, (mean, var, factor) in bns.items():                  # running sums of the training batches
        assert factor[0] > 1 and np.any(mean != 0) and np.all(var > 0), name

    folded = fold_files(str(model), str(weights), str(tmp_path / "f.prototxt"), str(tmp_path / "f.caffemodel"))
    assert [(f.batchnorm, f.scale, f.into) for f in folded.folds] == [
        ("conv1_bn", "conv1_scale", "conv1"), ("conv2_bn", "conv2_scale", "conv2"), ("fc_bn", None, "fc")]
    assert not folded.kept

    before, types = _test_outputs(str(model), str(weights), 3)
    after, ftypes = _test_outputs(str(tmp_path / "f.prototxt"), str(tmp_path / "f.caffemodel"), 3)
    assert "BatchNorm" in types and not {"BatchNorm", "Scale"} & set(ftypes)
    worst = 0.0
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a["data"], b["data"])        # the same TEST batches
        for name in set(a) & set(b):
            err = float(np.max(np.abs(a[name] - b[name])) / max(np.max(np.abs(b[name])), 1e-30))
            assert err < 1e-5, name
            worst = max(worst, err)
        assert float(a["accuracy"]) == float(b["accuracy"])
    assert before[0]["accuracy"] > 0.34                               # better than chance on TEST
    print(f"trained {ITERATIONS} iterations, loss {np.mean(losses[:5]):.3f} -> {np.mean(losses[-5:]):.3f}, "
          f"TEST accuracy {float(before[0]['accuracy']):.3f}; folded max relative error {worst:.2e}")
