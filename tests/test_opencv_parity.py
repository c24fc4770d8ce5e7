"""Our float forward equals OpenCV's Caffe importer (cv2.dnn.readNetFromCaffe).

For every deploy net (ours under models/ and the deploy files in ../shared/zoo) the test
writes random weights with ``ristretto init --filler xavier`` (biases drawn from a Gaussian
so bias addition is exercised too), lets OpenCV read the very same .caffemodel, feeds both
the same random batch and compares

* the logits, i.e. the blob the final Softmax reads (a Softmax of random-weight logits
  saturates and hides differences, DESIGN §7), to 1e-4 relative to their largest magnitude;
* every other blob as it stands at the end of the pass (after in-place layers), to the same
  tolerance, so a mismatch names the first layer that disagrees.

OpenCV 4 runs LRN with k = 1 whatever the prototxt says (DESIGN §7); every LRN here has
k = 1 and the test refuses a net where that is not so. A net OpenCV cannot read fails:
that would mean our caffemodel writer produced something Caffe readers reject.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import REPO, SHARED

cv2 = pytest.importorskip("cv2")

RTOL = 1e-4
MODELS = REPO / "models"

# (id, prototxt, logits blob, batch). Big ImageNet nets run one image (2 slow CPU cores).
CASES = [
    ("models/lenet", MODELS / "lenet/lenet.prototxt", "ip2", 2),
    ("models/cifar10_full", MODELS / "cifar10_full/cifar10_full.prototxt", "ip1", 2),
    ("models/cifar10_quick", MODELS / "cifar10_quick/cifar10_quick.prototxt", "ip2", 2),
    ("models/squeezenet_v1.0", MODELS / "squeezenet_v1.0/deploy.prototxt", "pool10", 1),
    ("models/squeezenet_v1.1", MODELS / "squeezenet_v1.1/deploy.prototxt", "pool10", 1),
    ("models/caffenet", MODELS / "caffenet/deploy.prototxt", "fc8", 1),
    ("models/googlenet", MODELS / "googlenet/deploy.prototxt", "loss3/classifier", 1),
    ("models/resnet50", MODELS / "resnet50/deploy.prototxt", "fc1000", 1),
    ("models/mobilenet_v1", MODELS / "mobilenet_v1/deploy.prototxt", "fc7", 2),
    ("models/mobilenet_v2", MODELS / "mobilenet_v2/deploy.prototxt", "fc7", 1),
    # the zoo's own files: net-level `input:` fields (SqueezeNet) and 2014 V1 syntax
    ("zoo/squeezenet_v1.0", SHARED / "zoo/squeezenet_v1.0/deploy.prototxt", "pool10", 1),
    ("zoo/cifar10_quick", SHARED / "zoo/cifar10/cifar10_quick.prototxt", "ip2", 2),
    ("zoo/v1/lenet", SHARED / "zoo/bvlc_caffe_2014_v1_format/mnist/lenet.prototxt", "ip2", 2),
    ("zoo/v1/cifar10_full", SHARED / "zoo/bvlc_caffe_2014_v1_format/cifar10/cifar10_full.prototxt", "ip1", 2),
]
# The zoo's CaffeNet, LeNet and CIFAR-10 full deploy files equal ours layer by layer
# (tests/test_models.py), so running them again would only cost time.


def prepare(src, workdir, batch, seed=7):
    """Write ``net.prototxt`` (input batch set, Gaussian bias fillers) and a random
    ``net.caffemodel`` through ``ristretto init``; return their paths and the input shape."""
    from ristretto_cli.caffe.prototxt import read_net, write_text
    from ristretto_cli.cli import main

    param = read_net(src)
    shape = None
    for lp in param.layer:
        if lp.type == "Input":
            assert len(lp.input_param.shape) == 1, "one input blob expected"
            lp.input_param.shape[0].dim[0] = batch
            shape = tuple(lp.input_param.shape[0].dim)
        if lp.type == "LRN":
            k = lp.lrn_param.k
            assert k == 1.0, f"{src}: LRN '{lp.name}' has k = {k}; OpenCV 4 always uses k = 1"
        for field in ("convolution_param", "inner_product_param"):
            if lp.HasField(field) and getattr(lp, field).bias_term:
                bias = getattr(lp, field).bias_filler
                bias.Clear()
                bias.type, bias.std = "gaussian", 0.5
    proto, model = workdir / "net.prototxt", workdir / "net.caffemodel"
    write_text(proto, param)
    main(["init", "--model", str(proto), "--output", str(model), "--seed", str(seed), "--filler", "xavier"])
    randomize_normalization(model, seed)
    return proto, model, shape


def randomize_normalization(model, seed):
    """Random BatchNorm statistics (means, positive variances, a scale factor) and Scale
    weights/biases: ``init`` fills only blobs of >= 2 axes, and zero statistics would
    leave the normalization untested."""
    from ristretto_cli.caffe.blobproto import array_to_blob, blob_to_array
    from ristretto_cli.caffe.caffemodel import read_caffemodel, write_caffemodel

    rng = np.random.default_rng(seed)
    param = read_caffemodel(model)
    touched = False
    for lp in param.layer:
        if lp.type not in ("BatchNorm", "Scale"):
            continue
        arrays = [blob_to_array(b) for b in lp.blobs]
        if lp.type == "BatchNorm":
            factor = np.float32(rng.uniform(0.5, 2.0))
            c = arrays[0].shape
            arrays = [rng.normal(0.0, 0.5, c).astype(np.float32) * factor,
                      rng.uniform(0.5, 2.0, c).astype(np.float32) * factor,
                      np.array([factor], dtype=np.float32)]
        else:
            arrays = [rng.uniform(0.5, 1.5, a.shape).astype(np.float32) if i == 0 else
                      rng.normal(0.0, 0.2, a.shape).astype(np.float32) for i, a in enumerate(arrays)]
        del lp.blobs[:]
        for a in arrays:
            lp.blobs.add().CopyFrom(array_to_blob(a))
        touched = True
    if touched:
        write_caffemodel(model, param)


def relative_error(ours, ref) -> float:
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64).reshape(ours.shape)
    scale = np.abs(ref).max()
    return float(np.abs(ours - ref).max() / scale) if scale > 0 else float(np.abs(ours).max())


@pytest.mark.parametrize("case_id,src,logits,batch", CASES, ids=[c[0] for c in CASES])
def test_float_forward_matches_opencv(case_id, src, logits, batch, tmp_path, record_property):
    from ristretto_cli.net.loading import load_net

    if not src.exists():
        pytest.skip(f"{src} not present")
    proto, model, shape = prepare(src, tmp_path, batch)

    net = load_net(str(proto), str(model), "TEST")
    x = np.random.default_rng(0).normal(0.0, 50.0, size=shape).astype(np.float32)
    (data,) = net.inputs
    net.forward({data: x})

    # OpenCV reads the original file (its own V1 / net-input upgrade) with our weights.
    cv_net = cv2.dnn.readNetFromCaffe(str(src), str(model))
    cv_net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    cv_net.enableFusion(False)
    cv_net.setInput(x)
    # The value of each blob at the end of the pass is the output of the last layer writing it.
    last_writer = {}
    for i, layer in enumerate(net.layers):
        if layer.type in ("Input", "Split"):
            continue
        for t in net.top_names[i]:
            last_writer[t] = layer.name
    blobs = [b for b in last_writer if b != "prob"]
    outs = cv_net.forward([last_writer[b] for b in blobs])
    errors = {b: relative_error(net.blobs[b], o) for b, o in zip(blobs, outs)}

    err = errors[logits]
    record_property("logits_relative_error", err)
    print(f"{case_id}: logits '{logits}' {tuple(net.blobs[logits].shape)} max relative error {err:.3g}; "
          f"worst blob {max(errors, key=errors.get)} {max(errors.values()):.3g}")
    assert np.abs(net.blobs[logits]).max() > 0, "logits are all zero: the comparison would be empty"
    assert err <= RTOL, f"{case_id}: logits differ from OpenCV by {err:.3g} (relative)"
    bad = {b: e for b, e in errors.items() if e > RTOL}
    assert not bad, f"{case_id}: blobs differing from OpenCV (relative): {bad}"
