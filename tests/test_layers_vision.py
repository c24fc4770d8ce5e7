"""Convolution, Deconvolution, Pooling, LRN and InnerProduct against independent
references: naive loop implementations of Caffe's documented formulas, hand-computed
values, the adjoint identity of (de)convolution, and finite differences."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from google.protobuf import text_format

from backends import on_backend, reseeded
from ristretto_cli.backend import Backend
from ristretto_cli.errors import RistrettoError
from ristretto_cli.layers import TEST, TRAIN, create_layer
from ristretto_cli.layers import im2col as im2col_mod
from ristretto_cli.layers import lrn as lrn_mod
from ristretto_cli.proto import caffe_pb2
from tests.gradient_check import check_layer_gradient

FLT_MAX = float(np.finfo(np.float32).max)


def make(text: str, phase: int = TEST, seed: int = 0, bottom_shapes=None, backend=None):
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    layer = on_backend(create_layer(param, phase, reseeded(backend, seed) if backend else Backend(np, seed=seed)))
    if bottom_shapes is not None:
        layer.setup(bottom_shapes)
    return layer


def conv_text(body: str, kind: str = "Convolution", tops: int = 1) -> str:
    top_lines = " ".join(f'top: "t{i}"' for i in range(tops))
    return (f'name: "c" type: "{kind}" {top_lines} convolution_param {{ {body} '
            'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } }')


# -- naive references ----------------------------------------------------------
def naive_conv(x, w, b, stride, pad, dil, group):
    """Direct N-D cross-correlation loop (Caffe's convolution), x (N, C, *S)."""
    n, c = x.shape[:2]
    o = w.shape[0]
    kernel = w.shape[2:]
    cg, og = c // group, o // group
    spatial = x.shape[2:]
    out = tuple((s + 2 * p - (d * (k - 1) + 1)) // st + 1
                for s, p, d, k, st in zip(spatial, pad, dil, kernel, stride))
    y = np.zeros((n, o) + out)
    for ni, oi in itertools.product(range(n), range(o)):
        g = oi // og
        for pos in itertools.product(*(range(v) for v in out)):
            acc = 0.0
            for ci in range(cg):
                for koff in itertools.product(*(range(k) for k in kernel)):
                    src = tuple(q * st - p + ko * d for q, st, p, ko, d in zip(pos, stride, pad, koff, dil))
                    if all(0 <= s_ < lim for s_, lim in zip(src, spatial)):
                        acc += x[(ni, g * cg + ci) + src] * w[(oi, ci) + koff]
            y[(ni, oi) + pos] = acc + (0.0 if b is None else b[oi])
    return y


def naive_deconv(x, w, b, stride, pad, dil, group):
    """Direct scatter loop: every input pixel adds w * x into the (cropped) output."""
    n, c, h, wd = x.shape
    og_ = w.shape[1]
    o = og_ * group
    cg = c // group
    kh, kw = w.shape[2:]
    ho = stride[0] * (h - 1) + dil[0] * (kh - 1) + 1 - 2 * pad[0]
    wo = stride[1] * (wd - 1) + dil[1] * (kw - 1) + 1 - 2 * pad[1]
    y = np.zeros((n, o, ho, wo))
    for ni, ci, i, j in itertools.product(range(n), range(c), range(h), range(wd)):
        g = ci // cg
        for oj, a, bb in itertools.product(range(og_), range(kh), range(kw)):
            r = i * stride[0] - pad[0] + a * dil[0]
            s = j * stride[1] - pad[1] + bb * dil[1]
            if 0 <= r < ho and 0 <= s < wo:
                y[ni, g * og_ + oj, r, s] += x[ni, ci, i, j] * w[ci, oj, a, bb]
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def caffe_pooled(size, k, s, p, any_pad):
    out = int(math.ceil((size + 2 * p - k) / s)) + 1
    if any_pad and (out - 1) * s >= size + p:
        out -= 1
    return out


def naive_pool(x, method, k, s, p):
    """Caffe's CPU pooling loops (MAX with mask, AVE) written out directly."""
    n, c, h, w = x.shape
    any_pad = p[0] > 0 or p[1] > 0
    ho, wo = caffe_pooled(h, k[0], s[0], p[0], any_pad), caffe_pooled(w, k[1], s[1], p[1], any_pad)
    y = np.zeros((n, c, ho, wo))
    mask = np.full((n, c, ho, wo), -1)
    for ni, ci, i, j in itertools.product(range(n), range(c), range(ho), range(wo)):
        hs, ws = i * s[0] - p[0], j * s[1] - p[1]
        if method == "MAX":
            he, we = min(hs + k[0], h), min(ws + k[1], w)
            hs, ws = max(hs, 0), max(ws, 0)
            best = -FLT_MAX
            for r in range(hs, he):
                for q in range(ws, we):
                    if x[ni, ci, r, q] > best:
                        best, mask[ni, ci, i, j] = x[ni, ci, r, q], r * w + q
            y[ni, ci, i, j] = best
        else:
            he, we = min(hs + k[0], h + p[0]), min(ws + k[1], w + p[1])
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            y[ni, ci, i, j] = x[ni, ci, hs:he, ws:we].sum() / size
    return y, mask


def naive_lrn(x, size, alpha, beta, k, region):
    n, c, h, w = x.shape
    pre = (size - 1) // 2
    y = np.zeros_like(x)
    for ni, ci, i, j in itertools.product(range(n), range(c), range(h), range(w)):
        if region == "ACROSS_CHANNELS":
            lo, hi = max(0, ci - pre), min(c, ci + pre + 1)
            scale = k + alpha / size * np.sum(x[ni, lo:hi, i, j] ** 2)
        else:  # pooling AVE with pad pre: padded zeros count, divisor size^2; shift 1
            win = x[ni, ci, max(0, i - pre):i + pre + 1, max(0, j - pre):j + pre + 1]
            scale = 1.0 + alpha * np.sum(win ** 2) / (size * size)
        y[ni, ci, i, j] = x[ni, ci, i, j] * scale ** -beta
    return y


# -- Convolution -----------------------------------------------------------------
CONV_CASES = [
    # (bottom shape, conv_param body, stride, pad, dilation, group)
    ((2, 3, 7, 6), "num_output: 4 kernel_size: 3", (1, 1), (0, 0), (1, 1), 1),
    ((2, 4, 7, 7), "num_output: 6 kernel_size: 3 pad: 1 stride: 2 group: 2", (2, 2), (1, 1), (1, 1), 2),
    ((1, 2, 9, 8), "num_output: 3 kernel_h: 3 kernel_w: 2 pad_h: 2 pad_w: 1 stride_h: 2 stride_w: 3",
     (2, 3), (2, 1), (1, 1), 1),
    ((2, 2, 9, 9), "num_output: 2 kernel_size: 3 dilation: 2 pad: 1 bias_term: false", (1, 1), (1, 1), (2, 2), 1),
    ((1, 6, 6, 5), "num_output: 3 kernel_size: 2 kernel_size: 3 stride: 1 stride: 2 dilation: 2 dilation: 1 "
     "group: 3", (1, 2), (0, 0), (2, 1), 3),
    ((2, 4, 5, 5), "num_output: 4 kernel_size: 1", (1, 1), (0, 0), (1, 1), 1),
    ((2, 4, 5, 6), "num_output: 4 kernel_size: 1 stride: 2 group: 2", (2, 2), (0, 0), (1, 1), 2),
]


@pytest.mark.parametrize("shape,body,stride,pad,dil,group", CONV_CASES)
def test_convolution_matches_naive_loops(backend, shape, body, stride, pad, dil, group):
    layer = make(conv_text(body), bottom_shapes=[shape], backend=backend)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    (top_shape,) = layer.reshape([shape])
    (y,) = layer.forward([x])
    bias = layer.blobs[1] if len(layer.blobs) > 1 else None
    ref = naive_conv(x.astype(np.float64), layer.blobs[0].astype(np.float64),
                     None if bias is None else bias.astype(np.float64), stride, pad, dil, group)
    assert y.shape == top_shape == ref.shape
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_convolution_weight_shapes_and_bias_term(backend):
    layer = make(conv_text("num_output: 6 kernel_h: 3 kernel_w: 2 group: 2"), bottom_shapes=[(1, 4, 8, 8)], backend=backend)
    assert [b.shape for b in layer.blobs] == [(6, 2, 3, 2), (6,)]
    assert all(b.dtype == np.float32 for b in layer.blobs)
    layer = make(conv_text("num_output: 5 kernel_size: 3 bias_term: false"), bottom_shapes=[(1, 4, 8, 8)], backend=backend)
    assert [b.shape for b in layer.blobs] == [(5, 4, 3, 3)]


def test_convolution_3d_and_channel_axis(backend):
    x = np.random.default_rng(2).standard_normal((1, 2, 4, 5, 4))
    layer = make(conv_text("num_output: 2 kernel_size: 2 kernel_size: 3 kernel_size: 2 pad: 1 stride: 2"),
                 bottom_shapes=[x.shape], backend=backend)
    (y,) = layer.forward([x])
    ref = naive_conv(x, layer.blobs[0], layer.blobs[1], (2, 2, 2), (1, 1, 1), (1, 1, 1), 1)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    # axis 2: the leading (2, 3) axes are a batch of 6
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 5, 5))
    layer = make(conv_text("num_output: 3 kernel_size: 3 pad: 1 axis: 2"), bottom_shapes=[x.shape], backend=backend)
    assert layer.reshape([x.shape]) == [(2, 3, 3, 5, 5)]
    (y,) = layer.forward([x])
    ref = naive_conv(x.reshape(6, 4, 5, 5), layer.blobs[0], layer.blobs[1], (1, 1), (1, 1), (1, 1), 1)
    np.testing.assert_allclose(y.reshape(ref.shape), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,kernel,stride,pad,dil", [
    ((3, 2, 9, 8), (3, 3), (1, 1), (0, 0), (1, 1)),
    ((2, 3, 11, 10), (3, 2), (2, 1), (1, 0), (1, 1)),
    ((2, 2, 12, 13), (3, 3), (2, 3), (2, 1), (2, 1)),
    ((1, 4, 7, 7), (1, 1), (1, 1), (0, 0), (1, 1)),
    ((2, 1, 28, 28), (5, 5), (1, 1), (0, 0), (1, 1)),
])
def test_im2col_two_copies_equal_the_window_view(backend, shape, kernel, stride, pad, dil):
    """The 2-D batch-inner columns (column shifts first, then row windows, whole runs moved
    as void elements) are exactly the strided window view of the padded input,
    transposed to (C, kh, kw, N, oh, ow)."""
    xp, host = backend.xp, backend.to_numpy
    x = backend.asarray(np.random.default_rng(6).standard_normal(shape).astype(np.float32))
    geom = im2col_mod.ConvGeometry(kernel, stride, pad, dil)
    out_spatial = geom.output_shape(shape[2:])
    xpad = im2col_mod.pad_spatial(x, pad, xp)
    view = host(im2col_mod.window_view(xpad, kernel, stride, dil, out_spatial, xp).transpose(1, 2, 3, 0, 4, 5))
    got = im2col_mod.im2col(x, geom, out_spatial, xp, batch_inner=True)
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(host(got), view)
    buf = xp.full(got.size + 3, np.nan, np.float32)
    np.testing.assert_array_equal(host(im2col_mod.im2col(x, geom, out_spatial, xp, out=buf[:got.size],
                                                         batch_inner=True)), view)
    # a non-contiguous input takes the plain strided copies
    strided = xp.asfortranarray(x)
    np.testing.assert_array_equal(host(im2col_mod.im2col(strided, geom, out_spatial, xp, batch_inner=True)), view)


def test_convolution_chunked_batch_matches_whole(backend, monkeypatch):
    shape = (5, 3, 9, 9)
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    layer = make(conv_text("num_output: 4 kernel_size: 3 pad: 1 stride: 2 group: 1"), bottom_shapes=[shape], backend=backend)
    (whole,) = layer.forward([x])
    dy = np.random.default_rng(5).standard_normal(whole.shape).astype(np.float32)
    layer.zero_diffs()
    (dx_whole,) = layer.backward([dy], [x], [whole], [True])
    dw_whole = layer.diffs[0].copy()
    monkeypatch.setattr(im2col_mod, "CPU_CHUNK_BYTES", 1)  # one sample per chunk
    monkeypatch.setattr(im2col_mod, "GPU_CHUNK_BYTES", 1)
    (chunked,) = layer.forward([x])
    layer.zero_diffs()
    (dx_chunked,) = layer.backward([dy], [x], [whole], [True])
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx_chunked, dx_whole, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.diffs[0], dw_whole, rtol=1e-4, atol=1e-4)


def test_caffenet_and_lenet_shapes(backend):
    conv1 = make(conv_text("num_output: 96 kernel_size: 11 stride: 4"), bottom_shapes=[(10, 3, 227, 227)], backend=backend)
    assert conv1.reshape([(10, 3, 227, 227)]) == [(10, 96, 55, 55)]
    pool = make('name: "p" type: "Pooling" top: "p" pooling_param { pool: MAX kernel_size: 3 stride: 2 }',
                bottom_shapes=[(10, 96, 55, 55)], backend=backend)
    assert pool.reshape([(10, 96, 55, 55)]) == [(10, 96, 27, 27)]
    assert pool.reshape([(10, 256, 13, 13)]) == [(10, 256, 6, 6)]
    conv2 = make(conv_text("num_output: 256 pad: 2 kernel_size: 5 group: 2"), bottom_shapes=[(10, 96, 27, 27)], backend=backend)
    assert conv2.reshape([(10, 96, 27, 27)]) == [(10, 256, 27, 27)]
    assert conv2.blobs[0].shape == (256, 48, 5, 5)
    lenet = make(conv_text("num_output: 20 kernel_size: 5"), bottom_shapes=[(64, 1, 28, 28)], backend=backend)
    assert lenet.reshape([(64, 1, 28, 28)]) == [(64, 20, 24, 24)]
    # GoogLeNet's pool1: 112 -> 56 only because the size rounds up
    pool_g = make('name: "p" type: "Pooling" top: "p" pooling_param { pool: MAX kernel_size: 3 stride: 2 }',
                  bottom_shapes=[(1, 64, 112, 112)], backend=backend)
    assert pool_g.reshape([(1, 64, 112, 112)]) == [(1, 64, 56, 56)]


@pytest.mark.parametrize("body,msg", [
    ("num_output: 4", "kernel_size"),
    ("num_output: 4 kernel_size: 3 kernel_h: 3 kernel_w: 3", "not both"),
    ("num_output: 4 kernel_size: 3 group: 2", "divisible"),
    ("num_output: 4 kernel_size: 3 group: 3", "divisible"),
    ("kernel_size: 3", "num_output"),
    ("num_output: 4 kernel_size: 3 kernel_size: 3 kernel_size: 3", "spatial axis"),
    ("num_output: 4 kernel_size: 9", "smaller than"),
])
def test_convolution_rejects_bad_parameters(backend, body, msg):
    with pytest.raises(RistrettoError, match=msg) as err:
        layer = make(conv_text(body), bottom_shapes=[(1, 3, 5, 5)], backend=backend)
        layer.reshape([(1, 3, 5, 5)])
    assert "'c'" in str(err.value)


# -- Deconvolution ----------------------------------------------------------------
DECONV_CASES = [
    ((2, 4, 4, 5), "num_output: 3 kernel_size: 3 stride: 2 pad: 1", (2, 2), (1, 1), (1, 1), 1),
    ((1, 4, 3, 3), "num_output: 6 kernel_size: 4 stride: 2 group: 2", (2, 2), (0, 0), (1, 1), 2),
    ((1, 2, 4, 3), "num_output: 2 kernel_h: 3 kernel_w: 2 stride_h: 1 stride_w: 3 pad_h: 1 pad_w: 0 "
     "dilation: 2", (1, 3), (1, 0), (2, 2), 1),
    ((2, 4, 3, 2), "num_output: 2 kernel_size: 1 stride: 2 group: 2", (2, 2), (0, 0), (1, 1), 2),
]


@pytest.mark.parametrize("shape,body,stride,pad,dil,group", DECONV_CASES)
def test_deconvolution_matches_naive_scatter(backend, shape, body, stride, pad, dil, group):
    layer = make(conv_text(body, "Deconvolution"), bottom_shapes=[shape], backend=backend)
    x = np.random.default_rng(6).standard_normal(shape)
    (y,) = layer.forward([x])
    ref = naive_deconv(x, layer.blobs[0].astype(np.float64), layer.blobs[1].astype(np.float64),
                       stride, pad, dil, group)
    assert layer.reshape([shape]) == [ref.shape]
    assert layer.blobs[0].shape == (shape[1], ref.shape[1] // group) + layer.blobs[0].shape[2:]
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,body,stride,pad,dil,group", DECONV_CASES)
def test_deconvolution_is_the_adjoint_of_convolution(backend, shape, body, stride, pad, dil, group):
    """<conv(x), y> == <x, deconv(y)> with the same weights and no bias."""
    deconv = make(conv_text(body + " bias_term: false", "Deconvolution"), bottom_shapes=[shape], backend=backend)
    (out_shape,) = deconv.reshape([shape])
    conv_body = body.replace(f"num_output: {out_shape[1]}", f"num_output: {shape[1]}")
    conv = make(conv_text(conv_body + " bias_term: false"), bottom_shapes=[out_shape], backend=backend)
    assert conv.reshape([out_shape]) == [shape]
    conv.blobs = [deconv.blobs[0].astype(np.float64)]
    deconv.blobs = [deconv.blobs[0].astype(np.float64)]
    rng = np.random.default_rng(7)
    x = rng.standard_normal(out_shape)
    y = rng.standard_normal(shape)
    lhs = np.sum(conv.forward([x])[0] * y)
    rhs = np.sum(x * deconv.forward([y])[0])
    assert lhs == pytest.approx(rhs, rel=1e-10)


# -- gradient checks ------------------------------------------------------------------
def f64(text, phase=TEST, backend=None):
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    return on_backend(create_layer(param, phase, backend or Backend(np, seed=0)))


@pytest.mark.parametrize("shape,body", [
    ((2, 4, 6, 6), "num_output: 4 kernel_size: 3 pad: 1 stride: 2 group: 2"),
    ((1, 2, 7, 6), "num_output: 3 kernel_h: 3 kernel_w: 2 dilation: 2 pad: 1 stride_h: 1 stride_w: 2"),
    ((2, 3, 4, 4), "num_output: 2 kernel_size: 1 stride: 2"),
])
def test_convolution_gradients(backend, shape, body):
    x = np.random.default_rng(8).standard_normal(shape)
    check_layer_gradient(f64(conv_text(body), backend=backend), [x], max_checks=60)


def test_convolution_gradients_two_bottoms_share_weights(backend):
    rng = np.random.default_rng(9)
    xs = [rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((1, 2, 5, 5))]
    check_layer_gradient(f64(conv_text("num_output: 2 kernel_size: 3 pad: 1", tops=2), backend=backend), xs, max_checks=50)


@pytest.mark.parametrize("shape,body", [
    ((2, 4, 3, 3), "num_output: 4 kernel_size: 3 stride: 2 pad: 1 group: 2"),
    ((1, 2, 3, 4), "num_output: 3 kernel_h: 2 kernel_w: 3 dilation: 2 stride: 1"),
])
def test_deconvolution_gradients(backend, shape, body):
    x = np.random.default_rng(10).standard_normal(shape)
    check_layer_gradient(f64(conv_text(body, "Deconvolution"), backend=backend), [x], max_checks=60)


def test_backward_honours_propagate_down_and_lr_mult_zero(backend):
    layer = f64(conv_text("num_output: 2 kernel_size: 3") + " param { lr_mult: 0 } param { lr_mult: 1 }", backend=backend)
    x = np.random.default_rng(11).standard_normal((1, 2, 5, 5))
    layer.setup([x.shape])
    (y,) = layer.forward([x])
    layer.zero_diffs()
    (dx,) = layer.backward([np.ones_like(y)], [x], [y], [False])
    assert dx is None
    assert not layer.diffs[0].any()  # lr_mult 0: no weight gradient computed
    np.testing.assert_allclose(layer.diffs[1], np.full(2, y[0, 0].size))
    # gradients accumulate across calls
    layer.backward([np.ones_like(y)], [x], [y], [False])
    np.testing.assert_allclose(layer.diffs[1], np.full(2, 2 * y[0, 0].size))


def test_forward_reads_blobs_at_call_time(backend):
    layer = make(conv_text("num_output: 2 kernel_size: 1 bias_term: false"), bottom_shapes=[(1, 1, 2, 2)], backend=backend)
    x = np.ones((1, 1, 2, 2), np.float32)
    layer.blobs = [np.array([[[[2.0]]], [[[3.0]]]], np.float32)]
    np.testing.assert_array_equal(layer.forward([x])[0][0, :, 0, 0], [2.0, 3.0])
    w = np.array([[[[5.0]]], [[[7.0]]]], np.float32)
    np.testing.assert_array_equal(layer._forward_with(x, w, None)[0, :, 0, 0], [5.0, 7.0])


# -- Pooling ------------------------------------------------------------------------
def pool_text(body: str, tops: int = 1) -> str:
    top_lines = " ".join(f'top: "t{i}"' for i in range(tops))
    return f'name: "p" type: "Pooling" {top_lines} pooling_param {{ {body} }}'


POOL_CASES = [
    ((2, 3, 7, 7), "kernel_size: 3 stride: 2", (3, 3), (2, 2), (0, 0)),
    ((1, 2, 6, 6), "kernel_size: 3 stride: 2", (3, 3), (2, 2), (0, 0)),  # ceil: last window clipped
    ((1, 2, 5, 5), "kernel_size: 2 stride: 2 pad: 1", (2, 2), (2, 2), (1, 1)),  # pad clip drops a window
    ((1, 2, 4, 4), "kernel_size: 3 stride: 2 pad: 1", (3, 3), (2, 2), (1, 1)),
    ((2, 1, 7, 6), "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0", (3, 2), (2, 1), (1, 0)),
    ((1, 3, 8, 5), "kernel_size: 3 stride: 3 pad: 2", (3, 3), (3, 3), (2, 2)),
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("shape,body,k,s,p", POOL_CASES)
def test_pooling_matches_naive_loops(backend, method, shape, body, k, s, p):
    x = np.random.default_rng(12).standard_normal(shape).astype(np.float32) - 0.5
    tops = 2 if method == "MAX" else 1
    layer = make(pool_text(f"pool: {method} {body}", tops), bottom_shapes=[shape], backend=backend)
    out = layer.forward([x])
    ref, mask = naive_pool(x.astype(np.float64), method, k, s, p)
    assert layer.reshape([shape]) == [ref.shape] * tops
    np.testing.assert_allclose(out[0], ref, rtol=1e-6, atol=1e-6)
    if method == "MAX":
        np.testing.assert_array_equal(out[1], mask)


def test_pooling_output_sizes_by_hand(backend):
    cases = [((5, 2, 2, 1), 3), ((4, 3, 2, 1), 3), ((6, 3, 2, 0), 3), ((55, 3, 2, 0), 27), ((13, 3, 2, 0), 6),
             ((7, 2, 3, 0), 3), ((3, 2, 2, 1), 2)]
    for (size, k, s, p), want in cases:
        layer = make(pool_text(f"pool: MAX kernel_size: {k} stride: {s} pad: {p}"), bottom_shapes=[(1, 1, size, size)], backend=backend)
        assert layer.reshape([(1, 1, size, size)]) == [(1, 1, want, want)], (size, k, s, p)


def test_ave_pooling_counts_pad_but_not_beyond_it(backend):
    x = np.ones((1, 1, 4, 4))
    layer = make(pool_text("pool: AVE kernel_size: 3 stride: 2 pad: 1"), bottom_shapes=[x.shape], backend=backend)
    want = np.array([[4 / 9, 6 / 9, 2 / 6], [6 / 9, 1.0, 3 / 6], [2 / 6, 3 / 6, 1 / 4]])
    np.testing.assert_allclose(layer.forward([x])[0][0, 0], want)
    x = np.ones((1, 1, 3, 3))
    layer = make(pool_text("pool: AVE kernel_size: 2 stride: 2 pad: 1"), bottom_shapes=[x.shape], backend=backend)
    np.testing.assert_allclose(layer.forward([x])[0][0, 0], [[0.25, 0.5], [0.5, 1.0]])


def test_max_pooling_ignores_padding_and_routes_ties_to_the_first(backend):
    x = -np.ones((1, 1, 3, 3))
    layer = make(pool_text("pool: MAX kernel_size: 2 stride: 2 pad: 1"), bottom_shapes=[x.shape], backend=backend)
    np.testing.assert_array_equal(layer.forward([x])[0], -np.ones((1, 1, 2, 2)))
    x = np.ones((1, 1, 2, 2))
    layer = make(pool_text("pool: MAX kernel_size: 2", tops=2), bottom_shapes=[x.shape], backend=backend)
    top, mask = layer.forward([x])
    assert mask[0, 0, 0, 0] == 0
    (dx,) = layer.backward([np.full(top.shape, 3.0), None], [x], [top, mask], [True])
    np.testing.assert_array_equal(dx[0, 0], [[3.0, 0.0], [0.0, 0.0]])
    # NaN never wins (Caffe compares with '>')
    x = np.array([[[[np.nan, 1.0], [2.0, np.nan]]]])
    np.testing.assert_array_equal(layer.forward([x])[0].ravel(), [2.0])
    assert layer.forward([x])[1].ravel()[0] == 2


def awkward_pool_input(shape, seed, dtype):
    """Few distinct values (many ties, signed zeros), NaN, -inf, +inf and -FLT_MAX."""
    rng = np.random.default_rng(seed)
    x = (rng.integers(-2, 3, size=shape) * 0.5).astype(dtype)
    r = rng.random(shape)
    x[r < 0.05] = np.nan
    x[(r >= 0.05) & (r < 0.1)] = -np.inf
    x[(r >= 0.1) & (r < 0.12)] = np.inf
    x[(r >= 0.12) & (r < 0.14)] = -FLT_MAX
    x[(r >= 0.14) & (r < 0.2)] = -0.0
    x[0, 0, :2, :2] = np.nan  # windows without any candidate
    x[0, 1, :3, :3] = -np.inf
    return x


MAX_FAST_CASES = [  # (shape, body, kernel, stride, pad): tiled (stride == kernel) and overlapping windows
    ((3, 4, 8, 6), "kernel_size: 2 stride: 2", (2, 2), (2, 2), (0, 0)),
    ((2, 3, 7, 9), "kernel_size: 2 stride: 2", (2, 2), (2, 2), (0, 0)),  # ceil: partial last windows
    ((2, 3, 9, 9), "kernel_size: 3 stride: 3", (3, 3), (3, 3), (0, 0)),
    ((2, 3, 7, 8), "kernel_size: 3 stride: 3 pad: 1", (3, 3), (3, 3), (1, 1)),
    ((2, 3, 5, 5), "kernel_size: 2 stride: 2 pad: 1", (2, 2), (2, 2), (1, 1)),
    ((2, 3, 6, 7), "kernel_h: 3 kernel_w: 2 stride_h: 3 stride_w: 2", (3, 2), (3, 2), (0, 0)),
    ((2, 3, 6, 5), "kernel_h: 1 kernel_w: 2 stride_h: 1 stride_w: 2", (1, 2), (1, 2), (0, 0)),
    ((2, 3, 11, 11), "kernel_size: 3 stride: 2", (3, 3), (2, 2), (0, 0)),
    ((2, 3, 7, 6), "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0", (3, 2), (2, 1), (1, 0)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,body,k,s,p", MAX_FAST_CASES)
def test_max_pooling_fast_paths_match_caffe_loops_with_ties_and_specials(backend, dtype, shape, body, k, s, p):
    """The separable forward and the tiled backward (stride == kernel) give Caffe's loop
    values: NaN never wins, -inf / -FLT_MAX windows give -FLT_MAX, ties route the gradient
    to the first maximum; the backward equals the general argmax + scatter path."""
    x = awkward_pool_input(shape, 21, dtype)
    layer = make(pool_text(f"pool: MAX {body}"), phase=TRAIN, bottom_shapes=[shape], backend=backend)
    (top,) = layer.forward([x])
    ref, mask = naive_pool(x.astype(np.float64), "MAX", k, s, p)
    np.testing.assert_array_equal(top, ref.astype(dtype))
    dy = np.random.default_rng(3).standard_normal(top.shape).astype(dtype)
    dy.reshape(-1)[:7] = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-300, -2.5]
    (dx,) = layer.backward([dy], [x], [top], [True])
    want = np.zeros(x.shape, dtype)
    for (ni, ci, i, j), m in np.ndenumerate(mask):
        if m >= 0:
            want[ni, ci].reshape(-1)[m] += dy[ni, ci, i, j]
    np.testing.assert_array_equal(dx, want)
    assert dx.dtype == dtype
    _, idx, padded, (_, _, pad, _) = layer._max_argmax(x)
    general = layer._routed_backward(x, dy, idx, padded, pad)
    assert dx.tobytes() == general.tobytes()  # bit for bit, zero signs included


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_global_pooling(backend, method):
    x = np.random.default_rng(13).standard_normal((2, 3, 5, 4))
    layer = make(pool_text(f"pool: {method} global_pooling: true"), bottom_shapes=[x.shape], backend=backend)
    assert layer.reshape([x.shape]) == [(2, 3, 1, 1)]
    (y,) = layer.forward([x])
    want = x.max(axis=(2, 3)) if method == "MAX" else x.mean(axis=(2, 3))
    np.testing.assert_allclose(y[:, :, 0, 0], want, rtol=1e-12)
    check_layer_gradient(f64(pool_text(f"pool: {method} global_pooling: true"), backend=backend), [x], max_checks=60)
    with pytest.raises(RistrettoError, match="global_pooling"):
        make(pool_text(f"pool: {method} global_pooling: true kernel_size: 2"), bottom_shapes=[x.shape], backend=backend)


def distinct(shape, seed):
    """Values at least 0.05 apart, so finite differences never cross a MAX tie."""
    rng = np.random.default_rng(seed)
    return (rng.permutation(math.prod(shape)).reshape(shape) * 0.05 - 1.0)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("shape,body", [
    ((2, 2, 5, 5), "kernel_size: 2 stride: 2 pad: 1"),
    ((1, 2, 6, 6), "kernel_size: 3 stride: 2"),
    ((1, 2, 7, 6), "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0"),
])
def test_pooling_gradients(backend, method, shape, body):
    check_layer_gradient(f64(pool_text(f"pool: {method} {body}"), backend=backend), [distinct(shape, 14)], max_checks=80)


def test_stochastic_pooling(backend):
    x = np.abs(np.random.default_rng(15).standard_normal((2, 3, 5, 5)))
    layer = make(pool_text("pool: STOCHASTIC kernel_size: 3 stride: 2"), TEST, bottom_shapes=[x.shape], backend=backend)
    (y,) = layer.forward([x])
    want = np.zeros(y.shape)
    for i, j in itertools.product(range(2), range(2)):
        win = x[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
        want[:, :, i, j] = (win ** 2).sum(axis=(2, 3)) / (np.finfo(np.float32).tiny + win.sum(axis=(2, 3)))
    np.testing.assert_allclose(y, want, rtol=1e-12)
    # TRAIN samples an element of the window with probability proportional to it
    x = np.zeros((1, 4000, 2, 2))
    x[:, :, 0, 0], x[:, :, 1, 1] = 1.0, 3.0
    layer = make(pool_text("pool: STOCHASTIC kernel_size: 2"), TRAIN, seed=1, bottom_shapes=[x.shape], backend=backend)
    (y,) = layer.forward([x])
    assert set(np.unique(y)) <= {1.0, 3.0}
    assert abs(np.mean(y == 1.0) - 0.25) < 0.03
    (dx,) = layer.backward([np.ones_like(y)], [x], [y], [True])
    np.testing.assert_array_equal(dx[:, :, 0, 0], (y[:, :, 0, 0] == 1.0).astype(float))
    np.testing.assert_array_equal(dx[:, :, 1, 1], (y[:, :, 0, 0] == 3.0).astype(float))
    assert not dx[:, :, 0, 1].any() and not dx[:, :, 1, 0].any()


@pytest.mark.parametrize("body,msg", [
    ("pool: MAX", "kernel"),
    ("pool: MAX kernel_size: 2 pad: 2", "smaller than the kernel"),
    ("pool: STOCHASTIC kernel_size: 3 pad: 1", "padding"),
    ("pool: MAX global_pooling: true stride: 2", "global_pooling"),
    ("pool: MAX kernel_size: 2 pad: 1 pad_h: 1 pad_w: 1", "pad"),
])
def test_pooling_rejects_bad_parameters(backend, body, msg):
    with pytest.raises(RistrettoError, match=msg):
        make(pool_text(body), bottom_shapes=[(1, 1, 6, 6)], backend=backend)


# -- LRN ------------------------------------------------------------------------------
LRN_CASES = [
    ("ACROSS_CHANNELS", "local_size: 5 alpha: 0.3 beta: 0.75 k: 2"),
    ("ACROSS_CHANNELS", "local_size: 3 alpha: 1.5 beta: 0.6 k: 1"),
    ("WITHIN_CHANNEL", "local_size: 3 alpha: 0.8 beta: 0.75 k: 5"),  # k is ignored within a channel
    ("WITHIN_CHANNEL", "local_size: 5 alpha: 2.0 beta: 1.3"),
]


def lrn_text(region, body):
    return f'name: "n" type: "LRN" top: "n" lrn_param {{ norm_region: {region} {body} }}'


@pytest.mark.parametrize("region,body", LRN_CASES)
def test_lrn_matches_naive_formula(backend, region, body):
    x = np.random.default_rng(16).standard_normal((2, 7, 4, 5)).astype(np.float32)
    layer = make(lrn_text(region, body), bottom_shapes=[x.shape], backend=backend)
    lp = layer.param.lrn_param
    (y,) = layer.forward([x])
    ref = naive_lrn(x.astype(np.float64), lp.local_size, lp.alpha, lp.beta, lp.k, region)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref, rtol=2e-6, atol=1e-6)


def test_lrn_within_channel_divides_by_n_squared_by_hand(backend):
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 0, 0] = 2.0
    layer = make(lrn_text("WITHIN_CHANNEL", "local_size: 3 alpha: 9 beta: 1 k: 7"), bottom_shapes=[x.shape], backend=backend)
    (y,) = layer.forward([x])
    # corner window holds 4 real pixels and 5 padded zeros; still divided by 9: scale = 1 + 9 * 4 / 9
    assert y[0, 0, 0, 0] == pytest.approx(2.0 / 5.0)


@pytest.mark.parametrize("region,body", LRN_CASES)
def test_lrn_gradients(backend, region, body):
    x = np.random.default_rng(17).standard_normal((2, 6, 4, 4))
    check_layer_gradient(f64(lrn_text(region, body), backend=backend), [x], max_checks=80)


@pytest.mark.parametrize("region,body", LRN_CASES[::2])
@pytest.mark.parametrize("block_bytes", [1, 200, 2000])
def test_lrn_blocked_matches_whole(backend, monkeypatch, region, body, block_bytes):
    """Cutting the work into cache-sized blocks (row bands, planes, samples) changes nothing."""
    x = np.random.default_rng(19).standard_normal((3, 5, 6, 4))
    dy = np.random.default_rng(20).standard_normal(x.shape)
    layer = make(lrn_text(region, body), bottom_shapes=[x.shape], backend=backend)
    monkeypatch.setattr(lrn_mod, "LRN_BLOCK_BYTES", 1 << 30)
    (want,) = layer.forward([x])
    (want_dx,) = layer.backward([dy], [x], [want], [True])
    monkeypatch.setattr(lrn_mod, "LRN_BLOCK_BYTES", block_bytes)
    assert len(layer.blocks(x.shape, 8)) > 1
    (got,) = layer.forward([x])
    (got_dx,) = layer.backward([dy], [x], [got], [True])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got_dx, want_dx, rtol=1e-12, atol=1e-14)


def test_lrn_rejects_even_size(backend):
    with pytest.raises(RistrettoError, match="odd"):
        make(lrn_text("ACROSS_CHANNELS", "local_size: 4"), bottom_shapes=[(1, 4, 3, 3)], backend=backend)


# -- InnerProduct ------------------------------------------------------------------------
def ip_text(body):
    return ('name: "fc" type: "InnerProduct" top: "fc" inner_product_param { ' + body +
            ' weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } }')


@pytest.mark.parametrize("body,shape,top", [
    ("num_output: 5", (3, 2, 2, 3), (3, 5)),
    ("num_output: 4 axis: 2", (2, 3, 2, 3), (2, 3, 4)),
    ("num_output: 4 transpose: true", (3, 6), (3, 4)),
    ("num_output: 3 axis: -1 transpose: true bias_term: false", (2, 2, 5), (2, 2, 3)),
])
def test_inner_product(backend, body, shape, top):
    x = np.random.default_rng(18).standard_normal(shape)
    layer = make(ip_text(body), bottom_shapes=[shape], backend=backend)
    assert layer.reshape([shape]) == [top]
    axis = len(top) - 1
    k = math.prod(shape[axis:])
    w = layer.blobs[0].astype(np.float64)
    assert w.shape == ((k, top[-1]) if "transpose: true" in body else (top[-1], k))
    w_nk = w.T if "transpose: true" in body else w
    x2 = x.reshape(-1, k)
    want = np.array([[sum(x2[m, j] * w_nk[n, j] for j in range(k)) for n in range(top[-1])]
                     for m in range(x2.shape[0])])
    if len(layer.blobs) > 1:
        want += layer.blobs[1]
    np.testing.assert_allclose(layer.forward([x])[0], want.reshape(top), rtol=1e-6, atol=1e-6)
    check_layer_gradient(f64(ip_text(body), backend=backend), [x], max_checks=60)


def test_inner_product_rejects_wrong_input_size(backend):
    layer = make(ip_text("num_output: 2"), bottom_shapes=[(2, 6)], backend=backend)
    with pytest.raises(RistrettoError, match="incompatible"):
        layer.reshape([(2, 7)])


# -- fast paths against the general (im2col) path ---------------------------------------
# (shape, num_output, kernel, stride, pad, dilation, group)
FAST_CASES = [
    # depthwise, multiplier 1: pads, strides, dilations, batch 1, odd sizes, long runs
    ((2, 6, 9, 7), 6, (3, 3), (1, 1), (1, 1), (1, 1), 6),
    ((1, 4, 8, 9), 4, (3, 3), (2, 2), (1, 1), (1, 1), 4),
    ((3, 5, 7, 7), 5, (3, 3), (1, 1), (2, 2), (2, 2), 5),
    ((1, 3, 30, 31), 3, (3, 3), (1, 1), (1, 1), (1, 1), 3),
    ((2, 3, 11, 10), 3, (2, 3), (1, 1), (0, 1), (1, 2), 3),
    ((1, 2, 5, 6), 2, (5, 3), (1, 2), (2, 0), (1, 1), 2),
    ((1, 4, 9, 9), 4, (3, 3), (1, 1), (1, 1), (4, 4), 4),  # dilation wider than one padded row
    # depthwise with a channel multiplier (num_output = 2 or 3 x channels)
    ((2, 3, 8, 8), 6, (3, 3), (1, 1), (1, 1), (1, 1), 3),
    ((1, 2, 24, 23), 6, (3, 3), (1, 1), (1, 1), (1, 1), 2),
    ((2, 4, 9, 9), 8, (3, 3), (2, 2), (0, 0), (1, 1), 4),
    # 3-D depthwise (the generic strided kernel)
    ((2, 3, 5, 6, 7), 6, (2, 3, 2), (1, 2, 1), (1, 0, 1), (2, 1, 1), 3),
    # pointwise: 1x1 without pad, strides, groups, batch 1
    ((3, 8, 5, 6), 6, (1, 1), (1, 1), (0, 0), (1, 1), 1),
    ((1, 8, 7, 7), 4, (1, 1), (2, 2), (0, 0), (1, 1), 2),
    ((2, 6, 7, 9), 9, (1, 1), (3, 2), (0, 0), (1, 1), 3),
]


@pytest.mark.parametrize("shape,o,kernel,stride,pad,dil,group", FAST_CASES)
def test_convolution_fast_paths_match_general(backend, monkeypatch, shape, o, kernel, stride, pad, dil, group):
    """Each fast kernel, forced on the shape, gives the general path's output and gradients;
    with tiny cache blocks too (many blocks, partial last ones)."""
    xp, host = backend.xp, backend.to_numpy
    rng = np.random.default_rng(11)
    geom = im2col_mod.ConvGeometry(kernel, stride, pad, dil)
    x = backend.asarray(rng.standard_normal(shape))
    w = backend.asarray(rng.standard_normal((o, shape[1] // group) + kernel))
    b = backend.asarray(rng.standard_normal(o))
    path = "pointwise" if geom.pointwise else "depthwise"
    ref = im2col_mod.convolution(x, w, geom, group, xp, bias=b, path="general")
    dy = backend.asarray(rng.standard_normal(ref.shape))
    ref_dx, ref_dw = im2col_mod.convolution_grad(x, dy, w, geom, group, xp, path="general")
    for block in (im2col_mod.DEPTHWISE_BLOCK_BYTES, 1):
        monkeypatch.setattr(im2col_mod, "DEPTHWISE_BLOCK_BYTES", block)
        got = im2col_mod.convolution(x, w, geom, group, xp, bias=b, path=path)
        assert got.shape == ref.shape
        np.testing.assert_allclose(host(got), host(ref), rtol=1e-12, atol=1e-12)
        dx, dw = im2col_mod.convolution_grad(x, dy, w, geom, group, xp, path=path)
        np.testing.assert_allclose(host(dx), host(ref_dx), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(host(dw), host(ref_dw), rtol=1e-12, atol=1e-12)
    # float32 in, float32 out
    y32 = im2col_mod.convolution(x.astype(np.float32), w.astype(np.float32), geom, group, xp, path=path)
    assert y32.dtype == np.float32


def test_convolution_path_chosen_by_shape():
    g = lambda k, s=1, p=0: im2col_mod.ConvGeometry((k, k), (s, s), (p, p), (1, 1))  # noqa: E731
    path = im2col_mod.conv_path
    assert path(g(1), (4, 16, 56, 56), 32, 1) == "pointwise"
    assert path(g(1, 2), (4, 16, 56, 56), 32, 2) == "pointwise"
    assert path(g(1, 1, 1), (4, 16, 56, 56), 32, 1) == "general"  # padded 1x1
    assert path(g(3, 1, 1), (1, 32, 112, 112), 32, 32) == "depthwise"  # large maps, small batch
    assert path(g(3, 2, 1), (2, 96, 112, 112), 96, 96) == "depthwise"
    assert path(g(3, 1, 1), (1, 960, 7, 7), 960, 960) == "general"  # short runs
    assert path(g(3, 1, 1), (16, 32, 112, 112), 32, 32) == "general"  # batched products win
    assert path(g(3, 1, 1), (2, 32, 8, 8), 32, 2) == "general"  # grouped, not depthwise
    assert path(g(3, 1, 1), (2, 32, 8, 8), 32, 1) == "general"


@pytest.mark.parametrize("body,shape", [
    ("num_output: 3 kernel_size: 3 pad: 1 group: 3", (2, 3, 5, 6)),
    ("num_output: 4 kernel_size: 3 stride: 2 group: 2", (1, 2, 7, 7)),
    ("num_output: 3 kernel_size: 1 stride: 2", (2, 4, 5, 5)),
])
def test_convolution_fast_path_layer_gradients(backend, body, shape):
    x = np.random.default_rng(12).standard_normal(shape)
    check_layer_gradient(f64(conv_text(body), backend=backend), [x], max_checks=60)
