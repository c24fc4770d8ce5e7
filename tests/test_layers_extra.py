"""Layers of Caffe's final schema (issue #8): Clip, Swish, Threshold, Tile, Reduction, MVN,
Embed, Parameter, Filter, BatchReindex, SPP, and Pooling's round_mode. Forward against
NumPy written from Caffe's *_layer.cpp, backward against finite differences (float64);
the refused types are named with a reason."""
from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from conftest import run_cli
from backends import on_backend
from gradient_check import check_layer_gradient, f64_backend
from ristretto_cli.errors import RistrettoError
from ristretto_cli.layers import LAYER_TYPES, TEST, TRAIN, create_layer
from ristretto_cli.layers.refused import REFUSED_TYPES
from ristretto_cli.proto import caffe_pb2


def make(text, phase=TEST, backend=None):
    """The layer on ``backend`` (typed tests; float64 NumPy when None), driven from host arrays."""
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    return on_backend(create_layer(param, phase, backend or f64_backend()))


def forward(layer, *xs):
    shapes = [x.shape for x in xs]
    layer.setup(shapes)
    declared = layer.reshape(shapes)
    tops = layer.forward([x.copy() for x in xs])
    return declared, tops


def away_from(values, shape, seed=0, margin=0.05):
    """Random values in [-2, 2] at least ``margin`` away from each of ``values`` (kinks)."""
    x = np.random.default_rng(seed).uniform(-2, 2, size=shape)
    for v in values:
        near = np.abs(x - v) < margin
        x[near] = v + np.where(x[near] >= v, margin, -margin) * 2
    return x


X = away_from([0.0], (2, 3, 4, 5))


# -- Clip --------------------------------------------------------------------------------

def test_clip_forward_and_float32(backend):
    x = X.astype(np.float32)
    (shape,), (y,) = forward(make('name: "c" type: "Clip" clip_param { min: -0.5 max: 1.25 }', backend=backend), x)
    assert shape == x.shape and y.dtype == np.float32
    np.testing.assert_array_equal(y, np.clip(x, np.float32(-0.5), np.float32(1.25)))


def test_clip_gradient(backend):
    x = away_from([-0.5, 1.25], X.shape)
    check_layer_gradient(make('name: "c" type: "Clip" clip_param { min: -0.5 max: 1.25 }', backend=backend), [x])


def test_clip_gradient_passes_at_the_bounds_like_caffe(backend):
    layer = make('name: "c" type: "Clip" clip_param { min: -1 max: 1 }', backend=backend)
    x = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    _, (y,) = forward(layer, x)
    (g,) = layer.backward([np.ones(5)], [x], [y], [True])
    np.testing.assert_array_equal(g, [0, 1, 1, 1, 0])


def test_clip_needs_min_and_max(backend):
    with pytest.raises(RistrettoError, match="min and max"):
        forward(make('name: "c" type: "Clip" clip_param { min: 0 }', backend=backend), X)


# -- Swish -------------------------------------------------------------------------------

@pytest.mark.parametrize("beta", [1.0, 0.5, 2.0])
def test_swish_forward(backend, beta):
    _, (y,) = forward(make(f'name: "s" type: "Swish" swish_param {{ beta: {beta} }}', backend=backend), X)
    np.testing.assert_allclose(y, X / (1 + np.exp(-beta * X)), rtol=1e-13)


@pytest.mark.parametrize("beta", [1.0, 0.7])
def test_swish_gradient(backend, beta):
    check_layer_gradient(make(f'name: "s" type: "Swish" swish_param {{ beta: {beta} }}', backend=backend), [X])


def test_swish_default_beta_is_one_and_large_inputs_stay_finite(backend):
    x = np.array([-200.0, -1.0, 0.0, 1.0, 200.0], np.float32)
    _, (y,) = forward(make('name: "s" type: "Swish"', backend=backend), x)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, x / (1 + np.exp(-x.astype(np.float64))), rtol=1e-6, atol=1e-30)


# -- Threshold ---------------------------------------------------------------------------

def test_threshold_forward_and_no_backward(backend):
    layer = make('name: "t" type: "Threshold" threshold_param { threshold: 0.3 }', backend=backend)
    x = np.array([[-1.0, 0.3, 0.30001, 2.0]])
    _, (y,) = forward(layer, x)
    np.testing.assert_array_equal(y, [[0, 0, 1, 1]])
    assert layer.backward([np.ones_like(x)], [x], [y], [False]) == [None]
    with pytest.raises(RistrettoError, match="no gradient"):
        layer.backward([np.ones_like(x)], [x], [y], [True])


# -- Tile --------------------------------------------------------------------------------

@pytest.mark.parametrize("axis, tiles", [(1, 3), (0, 2), (-1, 2), (2, 1)])
def test_tile_forward(backend, axis, tiles):
    (shape,), (y,) = forward(make(f'name: "t" type: "Tile" tile_param {{ axis: {axis} tiles: {tiles} }}', backend=backend), X)
    reps = [1] * X.ndim
    reps[axis] = tiles
    # Caffe repeats whole blocks from `axis` on: numpy.tile of the (outer, inner) view
    outer = int(np.prod(X.shape[:axis % X.ndim]))
    expected = np.tile(X.reshape(outer, -1), (1, tiles)).reshape(shape)
    assert shape == y.shape
    np.testing.assert_array_equal(y, expected)


def test_tile_gradient(backend):
    check_layer_gradient(make('name: "t" type: "Tile" tile_param { axis: 2 tiles: 3 }', backend=backend), [X])


def test_tile_needs_positive_tiles(backend):
    with pytest.raises(RistrettoError, match="tiles"):
        forward(make('name: "t" type: "Tile" tile_param { tiles: 0 }', backend=backend), X)


# -- Reduction ---------------------------------------------------------------------------

REDUCTIONS = {"SUM": lambda a: a.sum(-1), "ASUM": lambda a: np.abs(a).sum(-1),
              "SUMSQ": lambda a: (a * a).sum(-1), "MEAN": lambda a: a.mean(-1)}


@pytest.mark.parametrize("op", sorted(REDUCTIONS))
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_reduction_forward(backend, op, axis):
    layer = make(f'name: "r" type: "Reduction" reduction_param {{ operation: {op} axis: {axis} coeff: 0.5 }}', backend=backend)
    (shape,), (y,) = forward(layer, X)
    a = axis % X.ndim
    expected = 0.5 * REDUCTIONS[op](X.reshape(X.shape[:a] + (-1,)))
    assert shape == X.shape[:a] and y.shape == shape
    np.testing.assert_allclose(y, expected, rtol=1e-13)


@pytest.mark.parametrize("op", sorted(REDUCTIONS))
def test_reduction_gradient(backend, op):
    check_layer_gradient(make(f'name: "r" type: "Reduction" reduction_param {{ operation: {op} axis: 1 coeff: -2 }}', backend=backend),
                         [X])


def test_reduction_default_is_a_sum_over_everything(backend):
    (shape,), (y,) = forward(make('name: "r" type: "Reduction"', backend=backend), X)
    assert shape == () and float(y) == pytest.approx(X.sum())
    check_layer_gradient(make('name: "r" type: "Reduction"', backend=backend), [X])


# -- MVN ---------------------------------------------------------------------------------

@pytest.mark.parametrize("across, variance", [(False, True), (True, True), (False, False), (True, False)])
def test_mvn_forward(backend, across, variance):
    layer = make(f'name: "m" type: "MVN" mvn_param {{ across_channels: {str(across).lower()} '
                 f'normalize_variance: {str(variance).lower()} eps: 0.001 }}', backend=backend)
    _, (y,) = forward(layer, X)
    rows = X.reshape(X.shape[0] if across else X.shape[0] * X.shape[1], -1)
    c = rows - rows.mean(1, keepdims=True)
    if variance:  # mvn_layer.cpp: divide by sqrt(E[(x - Ex)^2]) + eps
        c = c / (np.sqrt((c ** 2).mean(1, keepdims=True)) + float(np.float32(0.001)))  # eps is a float field
    np.testing.assert_allclose(y, c.reshape(X.shape), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("across, variance", [(False, True), (True, True), (False, False)])
def test_mvn_gradient(backend, across, variance):
    check_layer_gradient(make(f'name: "m" type: "MVN" mvn_param {{ across_channels: {str(across).lower()} '
                              f'normalize_variance: {str(variance).lower()} }}', backend=backend), [X], rtol=1e-3)


# -- Embed -------------------------------------------------------------------------------

EMBED = 'name: "e" type: "Embed" embed_param { num_output: 4 input_dim: 6 bias_term: %s ' \
        'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }'


@pytest.mark.parametrize("bias", [True, False])
def test_embed_forward_and_weight_gradients(backend, bias):
    idx = np.array([[0, 5, 2], [2, 2, 1]], np.float64)
    layer = make(EMBED % str(bias).lower(), backend=backend)
    (shape,), (y,) = forward(layer, idx)
    w = layer.blobs[0]
    expected = w[idx.astype(int)] + (layer.blobs[1] if bias else 0)
    assert shape == (2, 3, 4) and len(layer.blobs) == (2 if bias else 1)
    np.testing.assert_array_equal(y, expected)
    check_layer_gradient(make(EMBED % str(bias).lower(), backend=backend), [idx], check_bottoms=[])


def test_embed_refuses_bad_indices_and_input_gradients(backend):
    layer = make(EMBED % "true", backend=backend)
    with pytest.raises(RistrettoError, match=r"integers in \[0, 6\)"):
        forward(layer, np.array([6.0]))
    with pytest.raises(RistrettoError, match=r"integers in \[0, 6\)"):
        forward(make(EMBED % "true", backend=backend), np.array([1.5]))
    layer = make(EMBED % "true", backend=backend)
    x = np.array([1.0])
    _, (y,) = forward(layer, x)
    with pytest.raises(RistrettoError, match="cannot propagate"):
        layer.backward([np.ones_like(y)], [x], [y], [True])


# -- Parameter ---------------------------------------------------------------------------

def test_parameter_is_its_blob_and_learns_from_the_top(backend):
    layer = make('name: "p" type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } }', backend=backend)
    layer.setup([])
    assert layer.reshape([]) == [(2, 3)] and layer.blobs[0].shape == (2, 3) and not layer.blobs[0].any()
    layer.blobs[0] = np.arange(6.0).reshape(2, 3)
    (y,) = layer.forward([])
    np.testing.assert_array_equal(y, np.arange(6.0).reshape(2, 3))
    layer.zero_diffs()
    d = np.full((2, 3), 0.5)
    assert layer.backward([d], [], [y], []) == []
    np.testing.assert_array_equal(layer.diffs[0], d)


# -- Filter ------------------------------------------------------------------------------

def test_filter_forward_backward(backend):
    a, b = X, X[:, :1] * 3
    sel = np.array([1.0, 0.0]).reshape(2, 1)
    layer = make('name: "f" type: "Filter" bottom: "a" bottom: "b" bottom: "s" top: "fa" top: "fb"', backend=backend)
    declared, (ya, yb) = forward(layer, a, b, sel)
    assert declared == [a.shape, b.shape]  # Caffe's first reshape: the bottoms' shapes
    np.testing.assert_array_equal(ya, a[:1])
    np.testing.assert_array_equal(yb, b[:1])
    da, db, ds = layer.backward([np.ones_like(ya), 2 * np.ones_like(yb)], [a, b, sel], [ya, yb], [True, True, False])
    assert ds is None
    np.testing.assert_array_equal(da, np.concatenate([np.ones_like(a[:1]), np.zeros_like(a[1:])]))
    np.testing.assert_array_equal(db, np.concatenate([2 * np.ones_like(b[:1]), np.zeros_like(b[1:])]))
    with pytest.raises(RistrettoError, match="selector"):
        layer.backward([None, None], [a, b, sel], [ya, yb], [False, False, True])


def test_filter_checks_shapes(backend):
    layer = make('name: "f" type: "Filter" bottom: "a" bottom: "s" top: "fa"', backend=backend)
    with pytest.raises(RistrettoError, match="first dimension"):
        forward(layer, X, np.ones((3, 1)))
    with pytest.raises(RistrettoError, match="must be 1"):
        forward(make('name: "f" type: "Filter" bottom: "a" bottom: "s" top: "fa"', backend=backend), X, np.ones((2, 2)))


# -- BatchReindex ------------------------------------------------------------------------

def test_batch_reindex_forward_and_gradient(backend):
    permut = np.array([1.0, 1.0, 0.0])
    layer = make('name: "b" type: "BatchReindex"', backend=backend)
    (shape,), (y,) = forward(layer, X, permut)
    assert shape == (3,) + X.shape[1:]
    np.testing.assert_array_equal(y, X[[1, 1, 0]])
    check_layer_gradient(make('name: "b" type: "BatchReindex"', backend=backend), [X, permut], check_bottoms=[0])
    with pytest.raises(RistrettoError, match=r"\[0, 2\)"):
        forward(make('name: "b" type: "BatchReindex"', backend=backend), X, np.array([2.0]))


# -- SPP ---------------------------------------------------------------------------------

def _spp_reference(x, height, method):
    """Caffe's SPP: level l pools into 2^l x 2^l bins with kernel ceil(H / bins), stride = kernel,
    pad (kernel * bins - H + 1) // 2; MAX ignores the padding, AVE divides by the window clipped
    to H + pad."""
    n, c, h, w = x.shape
    parts = []
    for level in range(height):
        bins = 2 ** level
        kh, kw = -(-h // bins), -(-w // bins)
        ph, pw = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
        oh = -(-(h + 2 * ph - kh) // kh) + 1
        ow = -(-(w + 2 * pw - kw) // kw) + 1
        if ph and (oh - 1) * kh >= h + ph:
            oh -= 1
        if pw and (ow - 1) * kw >= w + pw:
            ow -= 1
        out = np.zeros((n, c, oh, ow))
        for i in range(oh):
            for j in range(ow):
                h0, w0 = i * kh - ph, j * kw - pw
                h1, w1 = min(h0 + kh, h + ph), min(w0 + kw, w + pw)
                size = (h1 - h0) * (w1 - w0)
                win = x[:, :, max(h0, 0):min(h1, h), max(w0, 0):min(w1, w)]
                out[:, :, i, j] = win.max(axis=(2, 3)) if method == "MAX" else win.sum(axis=(2, 3)) / size
        parts.append(out)
    if height == 1:
        return parts[0]
    return np.concatenate([p.reshape(n, -1) for p in parts], axis=1)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("height, hw", [(1, (5, 7)), (2, (5, 7)), (3, (8, 8)), (3, (9, 6)), (4, (16, 15))])
def test_spp_forward(backend, method, height, hw):
    x = np.random.default_rng(1).standard_normal((2, 3) + hw)
    layer = make(f'name: "s" type: "SPP" spp_param {{ pyramid_height: {height} pool: {method} }}', backend=backend)
    (shape,), (y,) = forward(layer, x)
    expected = _spp_reference(x, height, method)
    assert shape == expected.shape == y.shape
    np.testing.assert_allclose(y, expected, rtol=1e-13)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_spp_gradient(backend, method):
    x = np.random.default_rng(2).permutation(2 * 3 * 9 * 6).reshape(2, 3, 9, 6) / 10.0  # distinct: no max ties
    check_layer_gradient(make(f'name: "s" type: "SPP" spp_param {{ pyramid_height: 3 pool: {method} }}', backend=backend), [x])


def test_spp_errors_name_the_layer(backend):
    with pytest.raises(RistrettoError, match="layer 's' \\(SPP\\).*pyramid_height"):
        forward(make('name: "s" type: "SPP"', backend=backend), X)
    # 5 rows in 4 bins: kernel 2, pad 2; Caffe's Pooling CHECK_LT(pad, kernel) fails too
    with pytest.raises(RistrettoError, match="layer 's' \\(SPP\\).*pad"):
        forward(make('name: "s" type: "SPP" spp_param { pyramid_height: 3 }', backend=backend), np.zeros((1, 1, 5, 8)))


# -- Pooling round_mode ------------------------------------------------------------------

@pytest.mark.parametrize("mode, hw, expected", [("CEIL", (6, 6), (3, 3)), ("FLOOR", (6, 6), (2, 2)),
                                                ("CEIL", (7, 7), (3, 3)), ("FLOOR", (7, 7), (3, 3))])
def test_pooling_round_mode_sets_the_output_size(backend, mode, hw, expected):
    # (6 - 3) / 2 = 1.5 windows after the first: ceil keeps a partial window, floor drops it
    x = np.random.default_rng(3).standard_normal((1, 2) + hw)
    for method in ("MAX", "AVE"):
        layer = make(f'name: "p" type: "Pooling" pooling_param {{ pool: {method} kernel_size: 3 stride: 2 '
                     f'round_mode: {mode} }}', backend=backend)
        (shape,), (y,) = forward(layer, x)
        assert shape == y.shape == (1, 2) + expected
        full = (hw[0] - 3) // 2 + 1  # windows inside the input; ceil's extra one is partial
        ref = np.array([[[[(x[0, c, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max() if method == "MAX"
                             else x[0, c, 2 * i:2 * i + 3, 2 * j:2 * j + 3].sum() / 9.0)
                            for j in range(full)] for i in range(full)] for c in range(2)]])
        np.testing.assert_allclose(y[:, :, :full, :full], ref, rtol=1e-13)


def test_pooling_floor_with_pad_still_drops_a_window_starting_in_the_pad(backend):
    # in 4, pad 1, kernel 2, stride 2: floor((4 + 2 - 2) / 2) + 1 = 3 windows, the last starts at 3 < 4 + 1
    x = np.random.default_rng(4).standard_normal((1, 1, 4, 4))
    layer = make('name: "p" type: "Pooling" pooling_param { pool: MAX kernel_size: 2 stride: 2 pad: 1 round_mode: FLOOR }', backend=backend)
    (shape,), _ = forward(layer, x)
    assert shape == (1, 1, 3, 3)
    layer = make('name: "p" type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR }', backend=backend)
    (shape,), _ = forward(layer, np.zeros((1, 1, 5, 5)))
    assert shape == (1, 1, 3, 3)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_pooling_floor_gradient(backend, method):
    x = np.random.default_rng(5).permutation(2 * 7 * 6).reshape(1, 2, 7, 6) / 10.0
    check_layer_gradient(make(f'name: "p" type: "Pooling" pooling_param {{ pool: {method} kernel_size: 3 stride: 2 '
                              f'round_mode: FLOOR }}', backend=backend), [x])


# -- refused types -----------------------------------------------------------------------

def test_refused_types_are_named_with_a_reason():
    assert not set(REFUSED_TYPES) & set(LAYER_TYPES)
    with pytest.raises(RistrettoError, match="type 'Python' is refused: Python layers run arbitrary code"):
        make('name: "py" type: "Python" python_param { module: "os" layer: "system" }')
    for t in ("HDF5Data", "LSTM", "MemoryData", "WindowData"):
        with pytest.raises(RistrettoError, match=f"layer 'x': type '{t}' is refused: "):
            make(f'name: "x" type: "{t}"')


def test_every_caffe_type_is_computed_or_refused():
    caffe_types = {"AbsVal", "Accuracy", "ArgMax", "BNLL", "BatchNorm", "BatchReindex", "Bias", "Clip", "Concat",
                   "ContrastiveLoss", "Convolution", "Crop", "Data", "Deconvolution", "Dropout", "DummyData", "ELU",
                   "Eltwise", "Embed", "EuclideanLoss", "Exp", "Filter", "Flatten", "HDF5Data", "HDF5Output",
                   "HingeLoss", "Im2col", "ImageData", "InfogainLoss", "InnerProduct", "Input", "LRN", "LSTM",
                   "LSTMUnit", "Log", "MVN", "MemoryData", "MultinomialLogisticLoss", "PReLU", "Parameter",
                   "Pooling", "Power", "Python", "RNN", "ReLU", "Reduction", "Reshape", "SPP", "Scale", "Sigmoid",
                   "SigmoidCrossEntropyLoss", "Silence", "Slice", "Softmax", "SoftmaxWithLoss", "Split", "Swish",
                   "TanH", "Threshold", "Tile", "WindowData"}  # REGISTER_LAYER_* in BVLC master
    assert caffe_types <= set(LAYER_TYPES) | set(REFUSED_TYPES)


def test_unknown_type_lists_supported_and_refused_types(tmp_path, capsys):
    net = tmp_path / "n.prototxt"
    net.write_text('layer { name: "d" type: "Input" top: "d" input_param { shape { dim: 1 dim: 2 } } }\n'
                   'layer { name: "x" type: "Frobnicate" bottom: "d" top: "y" }\n')
    code, _, err = run_cli(["info", "-m", net], capsys)
    assert code == 2 and "\n" not in err.strip()
    assert "unknown type 'Frobnicate'" in err and "supported types: " in err and "refused types: " in err
    supported = err.split("supported types: ")[1].split(";")[0]
    refused = err.split("refused types: ")[1]
    assert "Swish" in supported and "Python" not in supported
    assert "Python" in refused and "HDF5Data" in refused
    net.write_text(net.read_text().replace("Frobnicate", "HDF5Output"))
    code, _, err = run_cli(["info", "-m", net], capsys)
    assert code == 2 and "layer 'x': type 'HDF5Output' is refused: HDF5" in err and str(net) in err


def test_a_net_of_new_layers_runs_on_the_command_line(tmp_path, capsys):
    net = tmp_path / "n.prototxt"
    net.write_text('''name: "n"
layer { name: "d" type: "Input" top: "d" input_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } } }
layer { name: "spp" type: "SPP" bottom: "d" top: "spp" spp_param { pyramid_height: 2 } }
layer { name: "sw" type: "Swish" bottom: "spp" top: "sw" }
layer { name: "clip" type: "Clip" bottom: "sw" top: "sw" clip_param { min: -1 max: 1 } }
layer { name: "tile" type: "Tile" bottom: "sw" top: "t" tile_param { tiles: 2 } }
layer { name: "mvn" type: "MVN" bottom: "t" top: "m" mvn_param { across_channels: true } }
layer { name: "r" type: "Reduction" bottom: "m" top: "r" reduction_param { axis: 1 operation: SUMSQ } }
''')
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32))
    code, out, err = run_cli(["forward", "-m", net, "--input", f"d={x}", "-o", tmp_path / "o.npz"], capsys)
    assert code == 0, err
    blobs = np.load(tmp_path / "o.npz")
    assert blobs["spp"].shape == (2, 15) and blobs["t"].shape == (2, 30) and blobs["r"].shape == (2,)
    assert np.abs(blobs["sw"]).max() <= 1
    np.testing.assert_allclose(blobs["r"], 30.0, rtol=1e-3)  # unit variance over 30 values
