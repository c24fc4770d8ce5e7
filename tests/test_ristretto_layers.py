"""Ristretto layers on tiny inputs (DESIGN.md section 4).

References are computed here with NumPy loops / matmul in float64 on values chosen
so that every sum is exact, or, for the structural properties (straight-through
gradients), with the float layer itself fed the trimmed weights.
"""
from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from ristretto_cli.backend import Backend
from ristretto_cli.errors import RistrettoError
from ristretto_cli.layers import LAYER_TYPES, TEST, TRAIN, create_layer
from ristretto_cli.proto import caffe_pb2
from ristretto_cli.formats import Rounding, trim_fixed_point, trim_minifloat, trim_pow2
from backends import reseeded

f32 = np.float32


def need(*types):
    """The float layer types a test builds on are registered (importing the package registers all)."""
    missing = [t for t in types if t not in LAYER_TYPES]
    assert not missing, f"layer type(s) {', '.join(missing)} not registered"


def make(type_, text, bottom_shapes, phase=TEST, seed=0, backend=None):
    """The layer on ``backend`` (the typed tests' fixture; NumPy when None), seeded with ``seed``."""
    lp = text_format.Parse(f'name: "q" type: "{type_}" {text}', caffe_pb2.LayerParameter())
    layer = create_layer(lp, phase, reseeded(backend, seed) if backend is not None else Backend(np, seed))
    layer.setup([tuple(s) for s in bottom_shapes])
    layer.reshape([tuple(s) for s in bottom_shapes])
    return layer


def signed_grid_values(rng, shape, lo=0.125, hi=2.0):
    """Magnitudes in [lo, hi) with random signs: minifloat-trimmed products then sum exactly."""
    return (rng.uniform(lo, hi, shape) * rng.choice([-1, 1], shape)).astype(f32)


def conv2d_ref(x, w, b, pad=0):
    """Direct convolution in float64 (stride 1, group 1)."""
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    out = np.zeros((n, o, h - kh + 1, wd - kw + 1))
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            patch = x[:, :, i:i + kh, j:j + kw]
            out[:, :, i, j] = np.einsum("nckl,ockl->no", patch, w.astype(np.float64))
    if b is not None:
        out += b.astype(np.float64)[None, :, None, None]
    return out


FC_DFP = """inner_product_param { num_output: 3 weight_filler { type: "uniform" min: -2 max: 2 }
                                  bias_filler { type: "uniform" min: -1 max: 1 } }
            quantization_param { precision: DYNAMIC_FIXED_POINT bw_layer_in: 8 fl_layer_in: 4
                                 bw_params: 6 fl_params: 3 bw_layer_out: 10 fl_layer_out: 2 }"""


# -- TEST phase --------------------------------------------------------------

def test_fc_test_phase_trims_bottom_in_place_weights_copy_and_top(backend):
    need("InnerProduct")
    host = backend.to_numpy
    layer = make("FcRistretto", FC_DFP, [(2, 5)], backend=backend)
    rng = np.random.default_rng(1)
    x0 = rng.uniform(-3, 3, (2, 5)).astype(f32)
    x = backend.asarray(x0.copy())
    shadow = [host(b).copy() for b in layer.blobs]
    shadow_ids = [id(b) for b in layer.blobs]
    top = host(layer.forward([x])[0])

    xq = trim_fixed_point(x0, 8, 4)
    np.testing.assert_array_equal(host(x), xq)  # the caller's array itself was trimmed
    assert not np.array_equal(host(x), x0)
    assert [id(b) for b in layer.blobs] == shadow_ids
    for b, s in zip(layer.blobs, shadow):
        np.testing.assert_array_equal(host(b), s)
    wq, bq = trim_fixed_point(shadow[0], 6, 3), trim_fixed_point(shadow[1], 6, 3)
    want = trim_fixed_point((xq.astype(np.float64) @ wq.T.astype(np.float64) + bq).astype(f32), 10, 2)
    assert top.dtype == f32
    np.testing.assert_array_equal(top, want)


def test_conv_test_phase_minifloat(backend):
    need("Convolution")
    host = backend.to_numpy
    text = """convolution_param { num_output: 2 kernel_size: 3 pad: 1 }
              quantization_param { precision: MINIFLOAT mant_bits: 3 exp_bits: 4 }"""
    layer = make("ConvolutionRistretto", text, [(2, 2, 4, 4)], backend=backend)
    rng = np.random.default_rng(2)
    blobs = [signed_grid_values(rng, (2, 2, 3, 3)), signed_grid_values(rng, (2,))]
    layer.blobs = [backend.asarray(b) for b in blobs]
    x0 = signed_grid_values(rng, (2, 2, 4, 4))
    x0[0, 0, 0, 0] = 1000.0  # saturates to 480 in the in-place input trim
    x = backend.asarray(x0.copy())
    top = host(layer.forward([x])[0])
    xq = trim_minifloat(x0, 3, 4)
    np.testing.assert_array_equal(host(x), xq)
    assert host(x)[0, 0, 0, 0] == 480
    wq, bq = (trim_minifloat(b, 3, 4) for b in blobs)
    want = trim_minifloat(conv2d_ref(xq, wq, bq, pad=1).astype(f32), 3, 4)
    np.testing.assert_array_equal(top, want)


def test_pow2_layer_weights_pow2_bias_untouched_activations_fixed_point(backend):
    need("InnerProduct")
    host = backend.to_numpy
    text = """inner_product_param { num_output: 4 }
              quantization_param { precision: INTEGER_POWER_OF_2_WEIGHTS exp_min: -4 exp_max: 0
                                   bw_layer_in: 8 fl_layer_in: 5 bw_layer_out: 8 fl_layer_out: 3 }"""
    layer = make("FcRistretto", text, [(3, 6)], backend=backend)
    rng = np.random.default_rng(3)
    w = rng.normal(0, 0.5, (4, 6)).astype(f32)
    w[0, 0], w[0, 1] = 0.0, -0.0
    bias = (rng.integers(-64, 64, 4) / 64).astype(f32) + f32(2.0 ** -9)  # off every grid the layer has
    layer.blobs = [backend.asarray(w), backend.asarray(bias)]
    x0 = rng.uniform(-2, 2, (3, 6)).astype(f32)
    x = backend.asarray(x0.copy())
    top = host(layer.forward([x])[0])
    xq = trim_fixed_point(x0, 8, 5)
    np.testing.assert_array_equal(host(x), xq)
    wq = trim_pow2(w, -4, 0)
    assert wq[0, 0] == wq[0, 1] == 2.0 ** -4
    want = trim_fixed_point((xq.astype(np.float64) @ wq.T.astype(np.float64) + bias).astype(f32), 8, 3)
    np.testing.assert_array_equal(top, want)


def test_default_quantization_param_still_trims(backend):
    """bw 32 / fl 16 defaults: activations rounded to 2^-16 and saturated at +-32768 (DESIGN 5)."""
    need("InnerProduct")
    dev, host = backend.asarray, backend.to_numpy
    layer = make("FcRistretto", "inner_product_param { num_output: 1 }", [(1, 4)], backend=backend)
    layer.blobs = [dev(np.ones((1, 4), f32)), dev(np.array([1e-6], f32))]
    x = dev(np.array([[1e-6, 40000.0, -5.0, 2.0 ** -17 * 3]], f32))
    top = host(layer.forward([x])[0])
    np.testing.assert_array_equal(host(x), [[0.0, 32768.0, -5.0, 2.0 ** -16 * 2]])
    # bias 1e-6 -> 0 in (32, 16); the float32 sum 32768 - 5 + 2^-15 rounds to 32763
    assert top[0, 0] == 32763.0
    big = make("FcRistretto", "inner_product_param { num_output: 1 }", [(1, 4)], backend=backend)
    big.blobs = [dev(np.full((1, 4), 3.0, f32)), dev(np.array([1e9], f32))]  # bias saturates at 32768 too
    assert host(big.forward([dev(np.zeros((1, 4), f32))])[0])[0, 0] == 32768.0


def test_deconvolution_ristretto_equals_float_layer_on_trimmed_values(backend):
    need("Deconvolution")
    host = backend.to_numpy
    text = """convolution_param { num_output: 3 kernel_size: 3 stride: 2 weight_filler { type: "gaussian" }
                                  bias_filler { type: "gaussian" } }
              quantization_param { bw_layer_in: 6 fl_layer_in: 3 bw_params: 5 fl_params: 4
                                   bw_layer_out: 12 fl_layer_out: 5 rounding_scheme: NEAREST_TIES_AWAY }"""
    layer = make("DeconvolutionRistretto", text, [(2, 2, 3, 3)], backend=backend)
    plain = make("Deconvolution", text.split("quantization_param")[0], [(2, 2, 3, 3)])
    plain.blobs = [trim_fixed_point(host(b), 5, 4, Rounding.NEAREST_TIES_AWAY) for b in layer.blobs]
    x0 = np.random.default_rng(4).uniform(-3, 3, (2, 2, 3, 3)).astype(f32)
    x = backend.asarray(x0.copy())
    top = host(layer.forward([x])[0])
    xq = trim_fixed_point(x0, 6, 3, Rounding.NEAREST_TIES_AWAY)
    np.testing.assert_array_equal(host(x), xq)
    want = trim_fixed_point(plain.forward([xq.copy()])[0], 12, 5, Rounding.NEAREST_TIES_AWAY)
    np.testing.assert_array_equal(top, want)


# -- TRAIN phase -----------------------------------------------------------------

def test_ristretto_layers_are_the_float_classes_with_the_mixin():
    from ristretto_cli.layers.conv import Convolution, Deconvolution
    from ristretto_cli.layers.inner_product import InnerProduct
    from ristretto_cli.layers.ristretto import (ConvolutionRistretto, DeconvolutionRistretto, FcRistretto,
                                                RistrettoMixin)

    for cls, base, name in ((ConvolutionRistretto, Convolution, "ConvolutionRistretto"),
                            (FcRistretto, InnerProduct, "FcRistretto"),
                            (DeconvolutionRistretto, Deconvolution, "DeconvolutionRistretto")):
        assert issubclass(cls, RistrettoMixin) and issubclass(cls, base)
        assert LAYER_TYPES[name] is cls and cls.__name__ == name


def test_float_layer_computes_with_compute_params_and_its_gradient_goes_to_diffs():
    plain = make("InnerProduct", FC_DFP.split("quantization_param")[0], [(2, 5)])
    other = [b * 2 for b in plain.blobs]
    shadow = [b.copy() for b in plain.blobs]
    ref = make("InnerProduct", FC_DFP.split("quantization_param")[0], [(2, 5)])
    ref.blobs = [o.copy() for o in other]
    plain.compute_params = lambda: other
    x = np.random.default_rng(2).uniform(-1, 1, (2, 5)).astype(f32)
    np.testing.assert_array_equal(plain.forward([x])[0], ref.forward([x])[0])
    dy = np.ones((2, 3), f32)
    plain.zero_diffs()
    ref.zero_diffs()
    np.testing.assert_array_equal(plain.backward([dy], [x], [None], [True])[0],
                                  ref.backward([dy], [x], [None], [True])[0])
    for d, r in zip(plain.diffs, ref.diffs):
        np.testing.assert_array_equal(d, r)
    for b, s in zip(plain.blobs, shadow):
        np.testing.assert_array_equal(b, s)


def test_freeze_params_fixes_the_trimmed_weights_until_unfreeze(backend):
    dev, host = backend.asarray, backend.to_numpy
    layer = make("FcRistretto", FC_DFP, [(2, 5)], backend=backend)
    x0 = np.random.default_rng(3).uniform(-3, 3, (2, 5)).astype(f32)
    before = host(layer.forward([dev(x0.copy())])[0])
    frozen = layer.freeze_params()
    assert layer.compute_params() is frozen
    for b in layer.blobs:
        b *= 0.5  # the search never does this; here it shows the frozen copy is used
    np.testing.assert_array_equal(host(layer.forward([dev(x0.copy())])[0]), before)
    layer.unfreeze_params()
    assert not np.array_equal(host(layer.forward([dev(x0.copy())])[0]), before)
    shared = make("FcRistretto", FC_DFP, [(2, 5)], backend=backend)
    assert shared.freeze_params(frozen) == frozen  # another net's layer may share the trimmed copy


def test_freeze_params_refuses_stochastic_draws():
    train = make("FcRistretto", FC_DFP, [(2, 5)], phase=TRAIN)
    assert not train.freezable
    with pytest.raises(RistrettoError, match="deterministic"):
        train.freeze_params()
    stochastic = make("FcRistretto", FC_DFP.replace("quantization_param {", "quantization_param { rounding_scheme: STOCHASTIC"),
                      [(2, 5)])
    assert not stochastic.freezable


def test_train_phase_straight_through(backend):
    need("InnerProduct")
    dev, host = backend.asarray, backend.to_numpy
    layer = make("FcRistretto", FC_DFP, [(4, 5)], phase=TRAIN, seed=7, backend=backend)
    shadow = [host(b).copy() for b in layer.blobs]
    rng = np.random.default_rng(5)
    x0 = rng.uniform(-3, 3, (4, 5)).astype(f32)
    x = dev(x0.copy())
    top_dev = layer.forward([x])[0]
    top = host(top_dev)
    np.testing.assert_array_equal(host(x), x0)  # activations are not trimmed in TRAIN
    assert layer.trimmed_blobs is not None and all(u is not b for u, b in zip(layer.trimmed_blobs, layer.blobs))
    used = [host(u) for u in layer.trimmed_blobs]
    for u, s in zip(used, shadow):  # stochastic rounding to the 2^-3 grid, one step at most
        assert np.array_equal(trim_fixed_point(u, 6, 3), u)
        assert np.all(np.abs(u - trim_fixed_point(s, 6, 3, Rounding.TRUNCATE)) <= 2.0 ** -3)

    plain = make("InnerProduct", FC_DFP.split("quantization_param")[0], [(4, 5)], phase=TRAIN)
    plain.blobs = [u.copy() for u in used]
    np.testing.assert_array_equal(top, plain.forward([x0.copy()])[0])

    dy = rng.standard_normal(top.shape).astype(f32)
    layer.zero_diffs()
    plain.zero_diffs()
    dx = host(layer.backward([dev(dy)], [x], [top_dev], [True])[0])
    dx_ref = plain.backward([dy], [x0.copy()], [top], [True])[0]
    np.testing.assert_array_equal(dx, dx_ref)  # bottom gradient through the trimmed weights
    for d, r, s in zip(layer.diffs, plain.diffs, shadow):
        assert d.shape == s.shape
        np.testing.assert_array_equal(host(d), r)  # weight gradient for the shadow weights
    for b, s in zip(layer.blobs, shadow):
        np.testing.assert_array_equal(host(b), s)  # the shadow weights are never modified


def test_train_stochastic_weights_vary_and_average_to_float(backend):
    need("InnerProduct")
    dev, host = backend.asarray, backend.to_numpy
    text = """inner_product_param { num_output: 3 weight_filler { type: "uniform" min: -1 max: 1 }
                                    bias_filler { type: "uniform" min: -1 max: 1 } }
              quantization_param { bw_params: 4 fl_params: 2 }"""
    layer = make("FcRistretto", text, [(5, 5)], phase=TRAIN, seed=11, backend=backend)
    w, b = (host(a).astype(np.float64) for a in layer.blobs)
    eye = np.eye(5, dtype=f32)
    n = 2000
    total = np.zeros((5, 3))
    first = host(layer.forward([dev(eye)])[0])
    changed = False
    for _ in range(n):
        top = host(layer.forward([dev(eye)])[0])  # top[i, j] = Wq[j, i] + bq[j]
        changed |= not np.array_equal(top, first)
        total += top
    assert changed
    mean = total / n
    want = w.T + b[None, :]
    step = 0.25
    pw, pb = (w / step) % 1, (b / step) % 1
    var = step ** 2 * (pw.T * (1 - pw.T) + (pb * (1 - pb))[None, :])
    assert np.all(np.abs(mean - want) <= 5 * np.sqrt(var / n) + 1e-9)


def test_trim_activations_in_train_option(backend):
    need("InnerProduct")
    host = backend.to_numpy
    layer = make("FcRistretto", FC_DFP, [(2, 5)], phase=TRAIN, backend=backend)
    layer.trim_activations_in_train = True
    x0 = np.random.default_rng(6).uniform(-3, 3, (2, 5)).astype(f32)
    x = backend.asarray(x0.copy())
    top = host(layer.forward([x])[0])
    np.testing.assert_array_equal(host(x), trim_fixed_point(x0, 8, 4))
    np.testing.assert_array_equal(top, trim_fixed_point(top, 10, 2))


def test_float64_inputs_keep_their_dtype(backend):
    need("InnerProduct")
    layer = make("FcRistretto", FC_DFP, [(2, 5)], backend=backend)
    layer.blobs = [b.astype(np.float64) for b in layer.blobs]
    x = backend.asarray(np.random.default_rng(8).uniform(-3, 3, (2, 5)))
    top = layer.forward([x])[0]
    assert top.dtype == np.float64 and x.dtype == np.float64


# -- parameter errors --------------------------------------------------------------

@pytest.mark.parametrize("qp", [
    "bw_layer_in: 0", "bw_params: 33", "bw_layer_out: 40",
    "precision: MINIFLOAT mant_bits: 24", "precision: MINIFLOAT exp_bits: 0", "precision: MINIFLOAT exp_bits: 9",
    "precision: INTEGER_POWER_OF_2_WEIGHTS exp_min: 0 exp_max: -1",
    "precision: INTEGER_POWER_OF_2_WEIGHTS bw_layer_in: 0",
])
def test_invalid_quantization_param_names_the_layer(qp):
    need("InnerProduct")
    with pytest.raises(RistrettoError, match="layer 'q'"):
        make("FcRistretto", f"inner_product_param {{ num_output: 2 }} quantization_param {{ {qp} }}", [(1, 3)])


def test_lrn_ristretto_rejects_non_minifloat():
    need("LRN")
    with pytest.raises(RistrettoError, match="layer 'q'.*MINIFLOAT"):
        make("LRNRistretto", "lrn_param { local_size: 3 } quantization_param { precision: DYNAMIC_FIXED_POINT }",
             [(1, 4, 2, 2)])


# -- LRNRistretto ------------------------------------------------------------------

def lrn_ref(x, size, alpha, beta, k, m, e):
    """The original CUDA kernels' loops, one pixel column at a time, scalar trims."""
    def q(v):
        return float(trim_minifloat(np.float32(v), m, e))

    n_, c_, h_, w_ = x.shape
    pre = (size - 1) // 2
    post = size - pre - 1
    a_over = np.float32(np.float32(alpha) / np.float32(size))
    scale = np.zeros_like(x)
    for n in range(n_):
        for h in range(h_):
            for w in range(w_):
                col = x[n, :, h, w]
                acc = np.float32(0)
                head = 0
                while head < post and head < c_:
                    xi = np.float32(q(col[head]))
                    acc = np.float32(q(acc + np.float32(q(xi * xi))))
                    head += 1
                while head < c_ + post:
                    if head < c_:
                        xi = np.float32(q(col[head]))
                        acc = np.float32(q(acc + np.float32(q(xi * xi))))
                    if head - size >= 0:
                        xo = np.float32(q(col[head - size]))
                        acc = np.float32(q(acc - np.float32(q(xo * xo))))
                    t = np.float32(q(acc * a_over))
                    scale[n, head - post, h, w] = q(np.float32(k) + t)
                    head += 1
    out = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        pw = np.float32(q(np.power(scale[idx], np.float32(-beta))))
        out[idx] = q(np.float32(q(x[idx])) * pw)
    return out


@pytest.mark.parametrize("phase", [TEST, TRAIN], ids=["TEST", "TRAIN"])
def test_lrn_ristretto_matches_reference_loops_in_every_phase(backend, phase):
    """The original's forward has no phase test: TRAIN trims like TEST."""
    need("LRN")
    text = """lrn_param { local_size: 5 alpha: 0.5 beta: 0.75 k: 2 }
              quantization_param { precision: MINIFLOAT mant_bits: 5 exp_bits: 4 }"""
    x = np.random.default_rng(9).uniform(-4, 4, (2, 7, 2, 3)).astype(f32)
    layer = make("LRNRistretto", text, [x.shape], phase=phase, backend=backend)
    x_in = backend.asarray(x.copy())
    top = backend.to_numpy(layer.forward([x_in])[0])
    np.testing.assert_array_equal(backend.to_numpy(x_in), x)  # LRN does not trim its bottom in place
    np.testing.assert_array_equal(top, lrn_ref(x, 5, 0.5, 0.75, 2.0, 5, 4))


def test_lrn_ristretto_wide_format_is_close_to_float(backend):
    need("LRN")
    text = "lrn_param { local_size: 3 alpha: 0.1 beta: 0.75 k: 1 }"
    x = np.random.default_rng(10).uniform(-3, 3, (2, 6, 3, 3)).astype(f32)
    plain = make("LRN", text, [x.shape]).forward([x.copy()])[0]
    wide = make("LRNRistretto", text + " quantization_param { precision: MINIFLOAT mant_bits: 20 exp_bits: 8 }",
                [x.shape], backend=backend).forward([backend.asarray(x)])[0]
    np.testing.assert_allclose(backend.to_numpy(wide), plain, rtol=1e-4)


def caffe_lrn_backward_ref(x, top, scale, dy, size, alpha, beta):
    """Caffe's CrossChannelBackward loops (lrn_layer.cu LRNComputeDiff) in float64, with
    the stored top and scale it is given."""
    x, top, scale, dy = (a.astype(np.float64) for a in (x, top, scale, dy))
    pre = (size - 1) // 2
    ratio = dy * top / scale
    dx = np.empty_like(x)
    for c in range(x.shape[1]):
        lo, hi = max(0, c - pre), min(x.shape[1], c - pre + size)
        dx[:, c] = dy[:, c] * scale[:, c] ** -beta - 2 * alpha * beta / size * x[:, c] * ratio[:, lo:hi].sum(1)
    return dx


@pytest.mark.parametrize("phase", [TEST, TRAIN], ids=["TEST", "TRAIN"])
def test_lrn_ristretto_backward_is_the_float_gradient_at_the_trimmed_values(backend, phase):
    """As the original: LRNLayer's backward on the bottom, the trimmed top and the trimmed
    scale (straight-through for the trims)."""
    need("LRN")
    text = """lrn_param { local_size: 3 alpha: 0.3 beta: 0.75 k: 1.5 }
              quantization_param { precision: MINIFLOAT mant_bits: 4 exp_bits: 4 }"""
    rng = np.random.default_rng(12)
    x = rng.uniform(-3, 3, (2, 5, 2, 2)).astype(f32)
    dy = rng.standard_normal(x.shape).astype(f32)
    layer = make("LRNRistretto", text, [x.shape], phase=phase, backend=backend)
    xd = backend.asarray(x)
    top = layer.forward([xd])[0]
    scale = backend.to_numpy(layer.scale_q)
    assert np.array_equal(trim_minifloat(scale, 4, 4), scale)  # the stored scale is the trimmed one
    dx = backend.to_numpy(layer.backward([backend.asarray(dy)], [xd], [top], [True])[0])
    want = caffe_lrn_backward_ref(x, backend.to_numpy(top), scale, dy, 3, 0.3, 0.75)
    np.testing.assert_allclose(dx, want, rtol=1e-5, atol=1e-6)
    float_dx = make("LRN", text.split("quantization_param")[0], [x.shape], phase=phase).backward(
        [dy], [x], [None], [True])[0]
    assert not np.allclose(dx, float_dx, rtol=1e-6)  # a 4-bit mantissa moves the gradient


def test_lrn_ristretto_refuses_within_channel_in_every_phase():
    need("LRN")
    for phase in (TEST, TRAIN):
        with pytest.raises(RistrettoError, match="layer 'q'.*ACROSS_CHANNELS"):
            make("LRNRistretto", "lrn_param { local_size: 3 norm_region: WITHIN_CHANNEL } "
                 "quantization_param { precision: MINIFLOAT }", [(1, 4, 3, 3)], phase=phase)


# -- in a net ----------------------------------------------------------------------

def test_in_place_bottom_trim_is_seen_by_every_reader_of_the_blob():
    """Two Ristretto layers read one blob (Caffe inserts a Split whose tops share its
    memory): the second layer sees the first one's trim, as in the original."""
    need("Convolution", "Input", "Split")
    from ristretto_cli.net import Net

    text = """
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 2 dim: 2 } } }
    layer { name: "a" type: "ConvolutionRistretto" bottom: "data" top: "a"
            convolution_param { num_output: 1 kernel_size: 1 bias_term: false }
            quantization_param { bw_layer_in: 8 fl_layer_in: 1 bw_params: 8 fl_params: 0 } }
    layer { name: "b" type: "ConvolutionRistretto" bottom: "data" top: "b"
            convolution_param { num_output: 1 kernel_size: 1 bias_term: false }
            quantization_param { bw_layer_in: 8 fl_layer_in: 3 bw_params: 8 fl_params: 0 } }
    """
    net = Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase=TEST, backend=Backend(np))
    for name in ("a", "b"):
        net.layer(name).blobs[0][...] = 1.0
    x = np.array([[[[0.3, 0.7], [1.2, -0.6]]]], f32)
    net.forward({"data": x.copy()})
    first_trim = trim_fixed_point(x, 8, 1)  # 0.3 -> 0.5, 0.7 -> 0.5, 1.2 -> 1.0, -0.6 -> -0.5
    np.testing.assert_array_equal(net.blobs["data"], first_trim)
    np.testing.assert_array_equal(net.blobs["a"], first_trim)
    np.testing.assert_array_equal(net.blobs["b"], first_trim)  # not trim(x, 8, 3)
    assert not np.array_equal(trim_fixed_point(x, 8, 3), first_trim)
