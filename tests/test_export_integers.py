"""`ristretto export integers`: LeNet's quantized forward recomputed from the exported
integers alone (int64 MACs, shifts, round half to even, saturation) equals `ristretto
forward` bit for bit."""
from __future__ import annotations

import json

import numpy as np
import pytest

from test_export_onnx import mnist_test_images, quantized_lenet


def shift_round(acc, shift: int):
    """acc * 2^-shift rounded half to even (shift > 0), or acc << -shift."""
    acc = np.asarray(acc, dtype=np.int64)
    if shift <= 0:
        return acc << -shift
    q = acc >> shift  # floor
    r = acc - (q << shift)
    half = np.int64(1) << (shift - 1)
    return q + ((r > half) | ((r == half) & (q & 1 == 1)))


def saturate(k, bw: int):
    return np.clip(k, -(1 << (bw - 1)), (1 << (bw - 1)) - 1)


def conv_int(x, w, stride=1):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("nchwij,ocij->nohw", win, w.astype(np.int64), optimize=True)


def maxpool_int(x, k=2, s=2):
    n, c, h, w = x.shape
    ho, wo = -(-(h - k) // s) + 1, -(-(w - k) // s) + 1
    return x[:, :, : ho * s, : wo * s].reshape(n, c, ho, k, wo, k).max(axis=(3, 5))


def integer_lenet(npz, data):
    """LeNet (conv1, pool1, conv2, pool2, ip1, relu1, ip2) from the integer export alone;
    returns {blob: value} of the trimmed blobs as our forward leaves them."""
    def fmt(layer):
        names = list(npz[f"{layer}/format_names"])
        return dict(zip(names, (int(v) for v in npz[f"{layer}/formats"])))

    def layer(name, x_code, fl_prev, kind):
        f = fmt(name)
        if fl_prev is None:  # float input: R(x * 2^fl_in) (exact in float64), saturated
            x_code = saturate(np.rint(np.ldexp(x_code.astype(np.float64), f["fl_in"])).astype(np.int64), f["bw_in"])
        else:
            x_code = saturate(shift_round(x_code, fl_prev - f["fl_in"]), f["bw_in"])
        w = npz[f"{name}/weights"].astype(np.int64)
        b = npz[f"{name}/bias"].astype(np.int64)
        if kind == "conv":
            acc = conv_int(x_code, w) << f["product_shift"]
            acc += (b << f["bias_shift"])[None, :, None, None]
        else:
            acc = (x_code.reshape(len(x_code), -1) @ w.T) << f["product_shift"]
            acc += (b << f["bias_shift"])[None, :]
        y = saturate(shift_round(acc, f["out_shift"]), f["bw_out"])
        return x_code, f["fl_in"], y, f["fl_out"]

    blobs = {}
    _, fl, c1, fl1 = layer("conv1", data, None, "conv")
    p1 = maxpool_int(c1)
    blobs["conv1"] = np.ldexp(c1, -fl1)
    p1_in, fl_in, c2, fl2 = layer("conv2", p1, fl1, "conv")
    blobs["pool1"] = np.ldexp(p1_in, -fl_in)  # trimmed in place by conv2
    p2 = maxpool_int(c2)
    blobs["conv2"] = np.ldexp(c2, -fl2)
    p2_in, fl_in, i1, fl3 = layer("ip1", p2, fl2, "fc")
    blobs["pool2"] = np.ldexp(p2_in, -fl_in)
    i1 = np.maximum(i1, 0)  # relu1 in place on the codes
    i1_in, fl_in, i2, fl4 = layer("ip2", i1, fl3, "fc")
    blobs["ip1"] = np.ldexp(i1_in, -fl_in)
    blobs["ip2"] = np.ldexp(i2, -fl4)
    return blobs


def test_lenet_recomputed_from_the_exported_integers_equals_our_forward_bit_for_bit(tmp_path, capsys):
    from ristretto_cli.cli import run
    from ristretto_cli.net.loading import load_net

    images, labels = mnist_test_images(100)
    proto, weights = quantized_lenet(tmp_path, images)
    out = tmp_path / "ints"
    assert run(["export", "integers", "-m", str(proto), "-w", str(weights), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.txt", "layers.json", "weights.h", "weights.npz"]
    header = (out / "weights.h").read_text()
    assert "static const int8_t conv1_weights[500]" in header and "#define IP2_OUT_SHIFT" in header
    meta = json.loads((out / "layers.json").read_text())
    assert [l["name"] for l in meta["layers"]] == ["conv1", "conv2", "ip1", "ip2"]
    with np.load(out / "weights.npz", allow_pickle=False) as npz:
        assert npz["conv1/weights"].dtype == np.int8
        ours_int = integer_lenet(npz, images)
    net = load_net(str(proto), str(weights))
    net.forward({"data": images})
    for blob, value in ours_int.items():
        np.testing.assert_array_equal(value.astype(np.float32), np.asarray(net.blobs[blob]), err_msg=blob)
    assert (ours_int["ip2"].argmax(1) == labels).mean() > 0.97


def test_integer_export_refuses_a_float_net_and_writes_nothing(tmp_path, capsys):
    from conftest import REPO
    from ristretto_cli.cli import run

    out = tmp_path / "ints"
    assert run(["export", "integers", "-m", str(REPO / "models/lenet/lenet.prototxt"), "-o", str(out)]) == 2
    assert "no dynamic fixed point or power-of-two Ristretto layer" in capsys.readouterr().err
    assert not out.exists()


def test_golden_nets_export_integers(tmp_path, shared):
    """Mixed widths (16/8/4/2, negative fl) and power-of-two weights: the codes decode to the
    trimmed weights our forward uses."""
    from ristretto_cli.export.integers import export_integers
    from ristretto_cli.export.onnx_export import load_for_export

    for case in ("lenet_dfp", "pow2"):
        folder = shared("golden", case)
        net = load_for_export(str(folder / "net.prototxt"), str(folder / "weights.caffemodel"))
        files, _ = export_integers(net)
        (tmp_path / f"{case}.npz").write_bytes(files["weights.npz"])
        with np.load(tmp_path / f"{case}.npz") as npz:
            for layer in net.layers:
                if layer.type not in ("ConvolutionRistretto", "FcRistretto"):
                    continue
                trimmed = np.asarray(layer.quantized_blobs()[0])
                if case == "pow2":
                    decoded = npz[f"{layer.name}/weights_sign"] * np.ldexp(1.0, npz[f"{layer.name}/weights_exp"])
                else:
                    fl = layer.quant_config.fl_params
                    decoded = np.ldexp(npz[f"{layer.name}/weights"].astype(np.float64), -fl)
                np.testing.assert_array_equal(decoded, trimmed)
