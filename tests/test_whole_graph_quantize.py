"""`quantize --fold --whole-graph` and our other search additions, end to end on small
nets of today's shapes with random weights and a synthetic LMDB."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ristretto_cli.backend import Backend
from ristretto_cli.caffe.caffemodel import read_caffemodel, write_caffemodel
from ristretto_cli.caffe.original_schema import parse_with_original_schema
from ristretto_cli.caffe.prototxt import parse_net_text, read_net
from ristretto_cli.errors import RistrettoError
from ristretto_cli.formats import INPUT, OUTPUT
from ristretto_cli.net import Net
from ristretto_cli.quantize.fold import load_folded
from tests import small_nets

BATCH, BATCHES = 4, 4
ALIASES = ("Split", "Flatten", "Reshape", "Dropout")   # tops that are (views of) the bottom
UNTRIMMED = ("Accuracy", "SoftmaxWithLoss", "Softmax")


def _write_db(path, images, labels):
    from ristretto_cli.data.lmdb_io import LMDBWriter, make_datum

    with LMDBWriter(path) as w:
        for i, (img, lab) in enumerate(zip(images, labels)):
            w.put(f"{i:08d}", make_datum(img, int(lab)).SerializeToString())


def make_model(d, kind, seed=0):
    """(model, weights): a random-weight net whose LMDB is labelled with its own predictions."""
    rng = np.random.default_rng(seed)
    n = BATCH * BATCHES
    images = rng.integers(0, 256, size=(n, small_nets.CHANNELS, small_nets.SIZE, small_nets.SIZE)).astype(np.uint8)
    _write_db(d / "db0", images, np.zeros(n))
    text0 = small_nets.net_text(kind, small_nets.data_head(str(d / "db0"), BATCH), with_tail=True)
    net = Net(parse_net_text(text0), "TEST", backend=Backend(np, seed=seed))
    net.close()
    small_nets.random_weights(net, seed)
    x = (images.astype(np.float32) - np.float32(128)) * np.float32(0.0078125)
    preds = []
    last = small_nets.last_blob(kind)
    for b in range(BATCHES):
        net.forward({"data": x[BATCH * b:BATCH * (b + 1)], "label": np.zeros(BATCH, np.float32)})
        preds += list(np.argmax(net.blobs[last].reshape(BATCH, -1), axis=1))
    _write_db(d / "db", images, preds)
    model = d / f"{kind}.prototxt"
    model.write_text(small_nets.net_text(kind, small_nets.data_head(str(d / "db"), BATCH), with_tail=True))
    weights = d / f"{kind}.caffemodel"
    write_caffemodel(weights, net.to_proto(with_weights=True))
    return str(model), str(weights)


def _on_grid(x, cfg, site) -> bool:
    """x * 2^fl is an integer inside the format's range."""
    bw, fl = (cfg.bw_layer_in, cfg.fl_layer_in) if site == INPUT else (cfg.bw_layer_out, cfg.fl_layer_out)
    unsigned = cfg.is_unsigned_layer_in if site == INPUT else cfg.is_unsigned_layer_out
    k = np.asarray(x, np.float64) * 2.0 ** fl
    lo, hi = (0, 2 ** bw - 1) if unsigned else (-(2 ** (bw - 1)), 2 ** (bw - 1) - 1)
    return bool(np.all(k == np.round(k)) and k.min() >= lo and k.max() <= hi)


def check_every_blob_on_its_grid(net):
    """Forward one batch; every layer's tops (and bottoms) on its grid right after it ran, and
    every blob at the end on the grid of the last layer that trimmed it (Split and view tops
    share the array of their bottom)."""
    base: dict[str, str] = {}
    last_fmt: dict[str, tuple] = {}
    untrimmed = {"label"}

    def group(name):
        return base.get(name, name)

    def on_layer(i, layer, names, tops):
        bottoms = net.bottom_names[i]
        if layer.type in ALIASES:
            for t in names:
                base[t] = group(bottoms[0])
        if layer.type in UNTRIMMED:
            untrimmed.update(names)
        if not getattr(layer, "takes_quantization_param", False):
            return
        cfg = layer.quant_config
        for b in bottoms:
            if b not in names:
                assert _on_grid(net.blobs[b], cfg, INPUT), (layer.name, b)
                last_fmt[group(b)] = (cfg, INPUT, layer.name)
        for t, arr in zip(names, tops):
            assert _on_grid(arr, cfg, OUTPUT), (layer.name, t)
            last_fmt[group(t)] = (cfg, OUTPUT, layer.name)

    net.forward(on_layer=on_layer)
    checked = 0
    for name, arr in net.blobs.items():
        if name in untrimmed or group(name) in untrimmed:
            continue
        assert group(name) in last_fmt, f"blob '{name}' was never trimmed"
        cfg, site, who = last_fmt[group(name)]
        assert _on_grid(arr, cfg, site), (name, who)
        checked += 1
    return checked


@pytest.fixture(scope="module", params=["resnet", "mobilenet", "googlenet", "squeezenet"])
def model(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    return (request.param,) + make_model(d, request.param) + (d,)


@pytest.mark.parametrize("extra", [[], ["--activation-range", "unsigned", "--bias-bits", "12",
                                        "--calibration", "percentile", "--stats", "pre-activation"]],
                         ids=["plain", "unsigned-bias-percentile-preact"])
def test_fold_whole_graph_quantize_end_to_end(model, extra):
    from ristretto_cli.cli import run

    kind, m, w, d = model
    tag = "x" if extra else "p"
    q, rep = d / f"q_{tag}.prototxt", d / f"r_{tag}.json"
    status = run(["quantize", "--model", m, "--weights", w, "--model-quantized", str(q),
                  "--trimming-mode", "dynamic_fixed_point", "--iterations", str(BATCHES), "--error-margin", "50",
                  "--fold", "--whole-graph", "--stats-batches", "3", "--report", str(rep), "--widths", "16,8"]
                 + extra)
    assert status == 0
    report = json.loads(rep.read_text())
    assert report["whole_graph"] and report["fold"] and report["statistics_batches"] == 3
    text = q.read_text()
    assert "BatchNorm" not in text and 'type: "Scale"' not in text          # folded away
    param = read_net(str(q))
    types = {lp.type for lp in param.layer}
    assert not types & {"Pooling", "Eltwise", "Concat", "ReLU", "Convolution", "InnerProduct"}
    net = Net(param, "TEST", backend=Backend(np))
    try:
        load_folded(net, read_caffemodel(str(q.with_suffix(".caffemodel"))))
        assert check_every_blob_on_its_grid(net) > 5
    finally:
        net.close()
    if extra:
        qps = [lp.quantization_param for lp in param.layer if lp.HasField("quantization_param")]
        assert any(qp.is_unsigned_layer_out for qp in qps)                   # after the ReLUs
        assert any(qp.HasField("bw_bias") and qp.bw_bias == 12 for qp in qps)
        assert report["calibration"] == "percentile" and report["stats"] == "pre-activation"


def test_the_original_flow_writes_only_the_originals_types_and_fields(model):
    """Without our flags nothing of ours appears: the original's types and fields only."""
    from ristretto_cli.caffe.prototxt import message_to_text
    from ristretto_cli.quantize.procedure import quantize

    kind, m, w, d = model
    if kind in ("resnet", "mobilenet"):
        pytest.skip("BatchNorm nets: the original flow is the same; the fold is what differs")
    out = quantize(m, w, str(d / "orig.prototxt"), "dynamic_fixed_point", iterations=2, widths=[8])
    parse_with_original_schema((d / "orig.prototxt").read_text())
    assert "whole_graph" not in out.report
    assert {lp.type for lp in read_net(str(d / "orig.prototxt")).layer} & {"ConvolutionRistretto"}
    assert "PoolingRistretto" not in message_to_text(read_net(str(d / "orig.prototxt")))


def test_whole_graph_statistics_and_lengths():
    """Eltwise / Concat measure every bottom; unsigned sites need a never-negative minimum."""
    from ristretto_cli.quantize import observe
    from ristretto_cli.quantize.observe import LayerRange

    r = LayerRange("relu", "ReLU", max_in=3.0, max_out=3.0, min_in=-2.0, min_out=0.0)
    assert observe.integer_lengths(r) == observe.IntegerLengths(2, 2, 1)
    signed = observe.integer_lengths(r, "signed")
    assert (signed.il_in, signed.il_out, signed.unsigned_out) == (3, 3, False)
    uns = observe.integer_lengths(r, "unsigned")
    assert (uns.il_in, uns.unsigned_in, uns.il_out, uns.unsigned_out) == (3, False, 2, True)
    text = """
layer { name: "data" type: "Input" top: "a" top: "b" input_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 3 } } }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "s" }
layer { name: "relu" type: "ReLU" bottom: "s" top: "s" }
"""
    net = Net(parse_net_text(text), "TRAIN")
    a = np.array([[1, -2, 0.5], [0, 0, 0]], np.float32)
    b = np.array([[9, 1, 0], [0, 0, -3]], np.float32)
    net.forward({"a": a, "b": b})
    orig_forward = net.forward
    net.forward = lambda **kw: orig_forward({"a": a, "b": b}, **kw)
    after = observe.observe_ranges(net, 1, types=observe.WHOLE_GRAPH_STAT_TYPES)
    pre = observe.observe_ranges(net, 1, types=observe.WHOLE_GRAPH_STAT_TYPES, when="pre-activation")
    s = a + b
    assert after[0].max_in == 9.0 and after[0].max_out == np.abs(np.maximum(s, 0)).max()   # in place: after the ReLU
    assert pre[0].max_out == np.abs(s).max() and pre[0].min_out == s.min()                  # before it
    assert after[1].min_out == 0.0 and pre[1].min_in < 0


def test_calibrations_shrink_the_range_of_an_outlier():
    from ristretto_cli.quantize.observe import calibrated_range

    rng = np.random.default_rng(0)
    values = np.abs(rng.normal(0, 1, 100000)).astype(np.float32)
    values[0] = 1000.0
    assert calibrated_range([values], 1000.0, "max") == 1000.0
    p = calibrated_range([values], 1000.0, "percentile", 99.9)
    assert 3.0 < p < 4.0
    assert calibrated_range([values], 1000.0, "mse") == 1000.0     # one far outlier costs more than it saves
    # uniform values and one outlier: clipping it at 1 saves half of every step
    u = rng.uniform(0, 1, 1_000_000).astype(np.float32)
    u[0] = 1.9
    assert calibrated_range([u], 1.9, "mse") == 1.0


@pytest.mark.parametrize("args, message", [
    (["--activation-range", "both"], "Invalid value for '--activation-range'"),
    (["--percentile", "0", "--calibration", "percentile"], "--percentile must be in"),
    (["--stats-batches", "0"], "--stats-batches must be at least 1"),
    (["--bias-bits", "40"], "--bias-bits must be an integer in 1..32"),
    (["--fold-layer", "bn1"], "--fold-layer needs --fold"),
])
def test_bad_settings_are_one_line_errors(tmp_path, capsys, args, message):
    from ristretto_cli.cli import run

    m = tmp_path / "m.prototxt"
    m.write_text(small_nets.net_text("squeezenet", small_nets.input_head()))
    w = tmp_path / "w.caffemodel"
    w.write_bytes(b"")
    status = run(["quantize", "--model", str(m), "--weights", str(w), "--model-quantized", str(tmp_path / "q.pt"),
                  "--trimming-mode", "dynamic_fixed_point"] + args)
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_fold_layer_that_cannot_fold_names_it(tmp_path):
    from ristretto_cli.quantize.procedure import quantize

    d = tmp_path
    m, w = make_model(d, "resnet")
    with pytest.raises(RistrettoError, match=r"layer 'relu1' is a ReLU layer, not a BatchNorm"):
        quantize(m, w, str(d / "q.prototxt"), "dynamic_fixed_point", iterations=1, fold=True,
                 fold_layers=["relu1"])


def test_statistics_pass_leaves_the_stored_batchnorm_statistics_alone(tmp_path):
    """The TRAIN-phase forward updates BatchNorm's running sums; the candidates must keep the stored ones."""
    from ristretto_cli.progress import Steps
    from ristretto_cli.quantize import procedure

    m, w = make_model(tmp_path, "resnet")
    settings = procedure.QuantizeSettings(iterations=2, stats_batches=2)
    p = procedure.plan(m, w, str(tmp_path / "q.prototxt"), "dynamic_fixed_point", settings)
    try:
        before = {l.name: [np.array(b) for b in l.blobs] for l in p.float_net.layers if l.type == "BatchNorm"}
        with Steps(None, p.total_steps) as steps:
            procedure.observe(p, steps)
        for l in p.float_net.layers:
            if l.type == "BatchNorm":
                for a, b in zip(l.blobs, before[l.name]):
                    np.testing.assert_array_equal(a, b)
    finally:
        p.float_net.close()
