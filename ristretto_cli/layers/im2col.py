"""im2col / col2im on strided views, and the convolutions built on them.

Arrays are channel-first, ``(N, C, *spatial)``, with any number of spatial axes.
``im2col`` copies a strided window view of the (zero-padded) input into a
contiguous column array; ``col2im`` is its adjoint (one strided add per kernel
offset). The convolutions put the batch inside the columns, ``(C, K, nb, P)``, so
that for ``G`` groups the reshape ``(G, C/G * K, nb * P)`` is free and ONE BLAS
product per group and chunk computes ``nb`` samples at once.

The batch is processed in chunks whose column buffer stays around ``CPU_CHUNK_BYTES``
(1 MB measured best on a 2-core Xeon), which keeps the copy and the product in
cache; on a GPU the chunks are large. Every function takes the array module ``xp``
(NumPy or CuPy) explicitly; strided views come from ``xp.lib.stride_tricks``.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

from ..backend import is_numpy

#: bytes of column buffer per chunk on the CPU; large on the GPU
CPU_CHUNK_BYTES = 1 << 20
GPU_CHUNK_BYTES = 1 << 30


def stride_tricks(xp):
    """``xp.lib.stride_tricks`` (NumPy and CuPy both provide ``as_strided`` there)."""
    lib = getattr(xp, "lib", None)
    st = getattr(lib, "stride_tricks", None)
    if st is None:  # pragma: no cover - very old CuPy
        import importlib

        st = importlib.import_module(f"{xp.__name__}.lib.stride_tricks")
    return st


def as_strided(xp, a, shape, strides):
    return stride_tricks(xp).as_strided(a, shape=tuple(shape), strides=tuple(strides))


def chunk_budget(xp) -> int:
    return CPU_CHUNK_BYTES if is_numpy(xp) else GPU_CHUNK_BYTES


def batch_chunks(n: int, bytes_per_item: int, budget: int):
    """(start, stop) pairs covering range(n), each about ``budget`` bytes (>= 1 item)."""
    step = max(1, min(n, budget // max(1, bytes_per_item)))
    return [(i, min(n, i + step)) for i in range(0, n, step)]


@dataclass(frozen=True)
class ConvGeometry:
    """Kernel, stride, pad and dilation per spatial axis."""

    kernel: tuple
    stride: tuple
    pad: tuple
    dilation: tuple

    @property
    def ndim(self) -> int:
        return len(self.kernel)

    @functools.cached_property
    def extent(self) -> tuple:
        """Dilated kernel size per axis: d * (k - 1) + 1."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation))

    @functools.cached_property
    def kernel_count(self) -> int:
        return math.prod(self.kernel)

    @functools.cached_property
    def pointwise(self) -> bool:
        """1x1 kernel without padding: the column matrix is (a strided slice of) the input."""
        return all(k == 1 for k in self.kernel) and all(p == 0 for p in self.pad)

    def output_shape(self, in_spatial) -> tuple:
        """Convolution output: (in + 2p - extent) // stride + 1 per axis."""
        return _output_shape(self, tuple(int(i) for i in in_spatial))

    def _output_shape(self, in_spatial) -> tuple:
        out = []
        for i, p, e, s in zip(in_spatial, self.pad, self.extent, self.stride):
            if i + 2 * p < e:
                raise ValueError(f"input size {tuple(in_spatial)} with pad {self.pad} is smaller than the "
                                 f"(dilated) kernel {self.extent}")
            out.append((i + 2 * p - e) // s + 1)
        return tuple(out)

    def transposed_output_shape(self, in_spatial) -> tuple:
        """Deconvolution output: stride * (in - 1) + extent - 2p per axis."""
        out = tuple(s * (i - 1) + e - 2 * p for i, p, e, s in zip(in_spatial, self.pad, self.extent, self.stride))
        if any(o <= 0 for o in out):
            raise ValueError(f"deconvolution of input size {tuple(in_spatial)} gives non-positive output {out}")
        return out


@functools.lru_cache(maxsize=1024)
def _output_shape(geom: ConvGeometry, in_spatial: tuple) -> tuple:
    return geom._output_shape(in_spatial)


def pad_spatial(x, pad, xp, value=0.0, extra=None):
    """``x`` (N, C, *S) with ``pad`` before and ``pad (+ extra)`` after each spatial axis."""
    extra = extra or (0,) * len(pad)
    if not any(pad) and not any(extra):
        return x
    shape = x.shape[:2] + tuple(s + 2 * p + e for s, p, e in zip(x.shape[2:], pad, extra))
    out = xp.full(shape, value, dtype=x.dtype) if value != 0 else xp.zeros(shape, dtype=x.dtype)
    out[(slice(None), slice(None)) + tuple(slice(p, p + s) for p, s in zip(pad, x.shape[2:]))] = x
    return out


def window_view(xpad, kernel, stride, dilation, out_spatial, xp):
    """Read-only view (N, C, *kernel, *out) of windows of the padded input."""
    st = xpad.strides
    shape = xpad.shape[:2] + tuple(kernel) + tuple(out_spatial)
    strides = st[:2] + tuple(s * d for s, d in zip(st[2:], dilation)) + tuple(
        s * k for s, k in zip(st[2:], stride))
    return as_strided(xp, xpad, shape, strides)


def im2col(x, geom: ConvGeometry, out_spatial, xp, out=None, batch_inner=False):
    """Contiguous (N, C, *kernel, *out) columns of ``x`` (N, C, *S), zero padding;
    with ``batch_inner`` the layout is (C, *kernel, N, *out)."""
    xpad = pad_spatial(x, geom.pad, xp)
    if batch_inner and geom.ndim == 2:
        return _im2col_rows(xpad, geom, out_spatial, xp, out)
    view = window_view(xpad, geom.kernel, geom.stride, geom.dilation, out_spatial, xp)
    if batch_inner:
        nd = geom.ndim
        view = view.transpose((1,) + tuple(range(2, 2 + nd)) + (0,) + tuple(range(2 + nd, 2 + 2 * nd)))
    if out is None:
        return xp.ascontiguousarray(view)
    out = out.reshape(view.shape)
    out[...] = view
    return out


def _im2col_rows(xpad, geom: ConvGeometry, out_spatial, xp, out=None):
    """2-D batch-inner columns (C, kh, kw, N, oh, ow) in two copies with long runs.

    First the column shifts: ``t[c, j, n, h, :] = xpad[n, c, h, j*d : j*d + ow*s : s]``
    (every padded row, ``kw`` shifted windows of ``ow``); then the row windows: for a
    stride of 1, ``col[c, i, j, n]`` is the contiguous block of ``oh`` rows of
    ``t[c, j, n]`` starting at row ``i*d``, one run of ``oh*ow`` elements instead of
    ``oh`` runs of ``ow``. The same column matrix as the one-copy view, faster.
    """
    nb, c = xpad.shape[:2]
    hp = xpad.shape[2]
    (kh, kw), (sh, sw), (dh, dw) = geom.kernel, geom.stride, geom.dilation
    oh, ow = out_spatial
    s_n, s_c, s_h, s_w = xpad.strides
    t = xp.empty((c, kw, nb, hp, ow), dtype=xpad.dtype)
    _copy_strided(t, xpad, (c, kw, nb, hp), (s_c, s_w * dw, s_n, s_h), ow, s_w * sw, xp)
    t_c, t_j, t_n, t_h, t_w = t.strides
    shape = (c, kh, kw, nb, oh, ow)
    out = xp.empty(shape, dtype=xpad.dtype) if out is None else out.reshape(shape)
    if sh == 1:  # each (c, i, j, n) block is oh * ow consecutive elements of t
        _copy_strided(out, t, (c, kh, kw, nb), (t_c, t_h * dh, t_j, t_n), oh * ow, t_w, xp)
    else:
        out[...] = as_strided(xp, t, shape, (t_c, t_h * dh, t_j, t_n, t_h * sh, t_w))
    return out


def _copy_strided(dst, base, shape, strides, run: int, step: int, xp) -> None:
    """``dst`` (contiguous, ``shape + (run,)``) = the strided view of ``base`` with that
    shape, outer ``strides`` and ``step`` between the ``run`` elements of the last axis.

    With NumPy, a contiguous run (``step`` = itemsize) of a C-contiguous ``base`` is
    copied as ONE element of a ``run * itemsize``-byte void type: NumPy then moves whole
    runs instead of iterating over short rows (the bytes, so the values, are the same)."""
    item = base.dtype.itemsize
    if (is_numpy(xp) and step == item and base.flags.c_contiguous and dst.flags.c_contiguous
            and all(st >= 0 for st in strides)):
        unit = xp.dtype((xp.void, run * item))
        src = xp.ndarray(shape, dtype=unit, buffer=base, offset=0, strides=strides)
        dst.reshape(shape + (run,)).view(unit).reshape(shape)[...] = src
        return
    dst[...] = as_strided(xp, base, shape + (run,), tuple(strides) + (step,))


def _offset_slices(offsets, geom: ConvGeometry, out_spatial):
    return tuple(slice(o * d, o * d + s * (n - 1) + 1, s)
                 for o, d, s, n in zip(offsets, geom.dilation, geom.stride, out_spatial))


@functools.lru_cache(maxsize=256)
def _col2im_plan(geom: ConvGeometry, out_spatial: tuple):
    """(target slices, column index) per kernel offset, in Caffe's (row-major) offset order."""
    lead = (slice(None), slice(None))
    return tuple((lead + _offset_slices(offs, geom, out_spatial), lead + offs)
                 for offs in itertools.product(*(range(k) for k in geom.kernel)))


def col2im(col, geom: ConvGeometry, in_spatial, xp, out=None):
    """Adjoint of :func:`im2col`: sum columns (N, C, *kernel, *out) back into (N, C, *S).

    Every input element accumulates its columns from zero in kernel-offset order.
    ``out`` (N, C, *S): written there when there is no padding (else a new array).
    """
    n, c = col.shape[:2]
    out_spatial = tuple(col.shape[2 + geom.ndim:])
    padded_shape = (n, c) + tuple(s + 2 * p for s, p in zip(in_spatial, geom.pad))
    if out is not None and not any(geom.pad) and tuple(out.shape) == padded_shape and out.dtype == col.dtype:
        padded = out
        padded[...] = 0
    else:
        padded = xp.zeros(padded_shape, dtype=col.dtype)
    for target, source in _col2im_plan(geom, out_spatial):
        padded[target] += col[source]
    if not any(geom.pad):
        return padded
    return xp.ascontiguousarray(padded[(slice(None), slice(None)) +
                                       tuple(slice(p, p + s) for p, s in zip(geom.pad, in_spatial))])


# -- column plans ----------------------------------------------------------------
class ColumnPlan:
    """How a chunk of ``nb`` inputs (nb, C, *S) becomes columns (C, K, nb, P) and back.

    The batch sits inside the columns, so one product per group covers the whole
    chunk: ``W_g (Og, Cg*K) @ col_g (Cg*K, nb*P)``; for small images that is one
    large BLAS call instead of nb small ones. ``pointwise`` (1x1 kernel, no pad)
    uses the (strided) input itself; ``general`` uses :func:`im2col` / :func:`col2im`.
    (A phase-split "full-width" layout with long contiguous copies was tried and
    measured slower: once the batch is chunked, the copy is a few percent of the product.)
    """

    def __init__(self, geom: ConvGeometry, in_spatial, out_spatial):
        self.geom = geom
        self.in_spatial = tuple(int(v) for v in in_spatial)
        self.out_spatial = tuple(int(v) for v in out_spatial)
        self.pc = math.prod(self.out_spatial)
        self.mode = "pointwise" if geom.pointwise else "general"

    def _subsample(self):
        return (slice(None), slice(None)) + tuple(slice(0, s * (n - 1) + 1, s)
                                                  for s, n in zip(self.geom.stride, self.out_spatial))

    def columns(self, x, xp, buf=None):
        """(C, K, nb, P) columns of the chunk ``x`` (nb, C, *S)."""
        nb, c = x.shape[:2]
        g = self.geom
        shape = (c, g.kernel_count, nb, self.pc)
        if self.mode == "pointwise":
            if any(s != 1 for s in g.stride):
                x = x[self._subsample()]
            x = x.reshape(nb, c, self.pc) if nb == 1 else x
            if nb == 1:
                return xp.ascontiguousarray(x).reshape(shape)
            out = xp.empty(shape, dtype=x.dtype) if buf is None else buf[: math.prod(shape)].reshape(shape)
            out.reshape((c, nb) + self.out_spatial)[...] = x.swapaxes(0, 1)
            return out
        col = None if buf is None else buf[: math.prod(shape)]
        return im2col(x, g, self.out_spatial, xp, out=col, batch_inner=True).reshape(shape)

    def uncolumns(self, dcol, xp, out=None):
        """Adjoint of :meth:`columns`: (C, K, nb, P) -> (nb, C, *S) (into ``out`` when that
        saves a copy; use the returned array)."""
        c, _, nb = dcol.shape[:3]
        g = self.geom
        if self.mode == "pointwise":
            src = dcol.reshape((c, nb) + self.out_spatial).swapaxes(0, 1)
            if all(s == 1 for s in g.stride):
                return xp.ascontiguousarray(src)
            dx = xp.zeros((nb, c) + self.in_spatial, dtype=dcol.dtype)
            dx[self._subsample()] = src
            return dx
        nd = g.ndim
        view = dcol.reshape((c,) + tuple(g.kernel) + (nb,) + self.out_spatial)
        view = view.transpose((1 + nd, 0) + tuple(range(1, 1 + nd)) + tuple(range(2 + nd, 2 + 2 * nd)))
        return col2im(view, g, self.in_spatial, xp, out=out)


# -- convolution primitives ----------------------------------------------------------
def _as(a, dtype):
    return a if a.dtype == dtype else a.astype(dtype)


def _plan_chunks(n, c, geom, plan, dtype, xp):
    return _chunks(n, c * geom.kernel_count * plan.pc * dtype.itemsize, chunk_budget(xp))


@functools.lru_cache(maxsize=1024)
def _chunks(n: int, bytes_per_item: int, budget: int):
    chunks = batch_chunks(n, bytes_per_item, budget)
    return chunks, chunks[0][1] - chunks[0][0]


@functools.lru_cache(maxsize=1024)
def column_plan(geom: ConvGeometry, in_spatial: tuple, out_spatial: tuple) -> "ColumnPlan":
    """The (immutable) :class:`ColumnPlan` of a shape, made once per shape."""
    return ColumnPlan(geom, in_spatial, out_spatial)


def _grouped(w, groups, dtype, xp):
    """w (O, C/G, *k) as a contiguous (G, O/G, C/G*K) stack in ``dtype``."""
    return xp.ascontiguousarray(w.reshape(groups, w.shape[0] // groups, -1), dtype=dtype)


def _to_wide(a, groups, xp):
    """(nb, O, *sp) -> (G, O/G, nb*P): the batch moved inside (a view when nb == 1)."""
    nb, o = a.shape[:2]
    a = a.reshape(nb, o, -1)
    if nb > 1:
        a = xp.ascontiguousarray(a.transpose(1, 0, 2))
    return a.reshape(groups, o // groups, -1)


def _from_wide(yw, out, xp, bias=None):
    """(G, O/G, nb*P) product -> ``out`` (nb, O, *sp), written in place, plus ``bias`` (O,)."""
    nb, o = out.shape[:2]
    dst = out.reshape(nb, o, -1).transpose(1, 0, 2)  # written in the product's order
    if bias is None:
        dst[...] = yw.reshape(o, nb, -1)
    else:
        xp.add(yw.reshape(o, nb, -1), bias.reshape(o, 1, 1), out=dst)


# -- fast paths, chosen by shape -------------------------------------------------------
def conv_path(geom: ConvGeometry, x_shape, num_output: int, groups: int) -> str:
    """Which kernel :func:`convolution` uses for input shape ``x_shape`` (N, C, *S):

    * ``"pointwise"``: 1x1 kernel, no pad (any stride, groups): one (batched) matrix
      product per call, the input read in place (strided: one subsampling copy), no
      columns;
    * ``"depthwise"``: groups == channels (one input channel per group, any multiplier
      num_output / channels), a kernel of its own: the padded input split into its
      stride phases, each kernel offset's window is one contiguous run per channel;
      blocks of a few channels copy their K runs into cache-sized columns and take one
      small product per channel (no full im2col array, no per-group pass over memory).
      Chosen where it beat the general path in CPU time on 2 cores: 2-D, small batches
      (N <= DEPTHWISE_MAX_BATCH) and large maps (a channel's flattened run, OH * phase
      width, >= DEPTHWISE_MIN_RUN; see _depthwise_wide), where one sample's im2col
      columns outgrow the cache. For larger batches the general path's columns are
      chunked and its per-group products are long, and it was as fast or faster;
    * ``"general"``: im2col columns with the batch inside, one batched product over
      the groups (``matmul`` on a (G, O/G, C/G*K) stack).
    """
    return _conv_path(geom, tuple(int(d) for d in x_shape), int(num_output), int(groups))


@functools.lru_cache(maxsize=1024)
def _conv_path(geom: ConvGeometry, x_shape: tuple, num_output: int, groups: int) -> str:
    """The cached body of :func:`conv_path`."""
    if geom.pointwise:
        return "pointwise"
    n, c = int(x_shape[0]), int(x_shape[1])
    if groups > 1 and groups == c and geom.ndim == 2 and n <= DEPTHWISE_MAX_BATCH:
        out = geom.output_shape(x_shape[2:])
        # the flattened run of one channel's rows (see _depthwise_wide)
        wq = max(-(-(x_shape[3] + 2 * geom.pad[1]) // geom.stride[1]),
                 (geom.kernel[1] - 1) * geom.dilation[1] // geom.stride[1] + out[1])
        if out[0] * wq >= DEPTHWISE_MIN_RUN:
            return "depthwise"
    return "general"


def _pointwise(x, w, geom: ConvGeometry, groups: int, xp, bias, dtype):
    """1x1, no pad: y[n] = W_g @ x[n]_g for every sample and group, one matmul call."""
    if any(s != 1 for s in geom.stride):
        x = x[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in geom.stride)]
    n, c = x.shape[:2]
    out_spatial = tuple(x.shape[2:])
    p = math.prod(out_spatial)
    o = w.shape[0]
    xm = _as(xp.ascontiguousarray(x), dtype).reshape(n, groups, c // groups, p)
    wm = _grouped(w, groups, dtype, xp)  # (G, O/G, C/G)
    y = xp.empty((n, o) + out_spatial, dtype=dtype)
    xp.matmul(wm, xm, out=y.reshape(n, groups, o // groups, p))
    if bias is not None:
        y += _as(bias, dtype).reshape((1, o) + (1,) * len(out_spatial))
    return y


#: bytes of columns a depthwise block builds (they stay in L2)
DEPTHWISE_BLOCK_BYTES = 1 << 17
#: the depthwise kernel is chosen for batches up to this size ...
DEPTHWISE_MAX_BATCH = 4
#: ... and maps whose flattened channel run is at least this long
DEPTHWISE_MIN_RUN = 512


def _depthwise_blocks(n: int, c: int, per_channel: int, xp):
    """(sample slice, channel slice) blocks of about DEPTHWISE_BLOCK_BYTES of output each
    on the CPU; the whole array at once on a GPU."""
    if not is_numpy(xp):
        return [(slice(0, n), slice(0, c))]
    cb = max(1, min(c, DEPTHWISE_BLOCK_BYTES // max(1, per_channel)))
    nb = max(1, min(n, DEPTHWISE_BLOCK_BYTES // max(1, per_channel * c))) if cb == c else 1
    return [(slice(i, min(n, i + nb)), slice(j, min(c, j + cb)))
            for i in range(0, n, nb) for j in range(0, c, cb)]


def _depthwise(x, w, geom: ConvGeometry, xp, bias, dtype, out_spatial):
    """groups == channels: y[n, c*m + j] = sum_k w[c*m + j, 0, k] * window_k(x)[n, c] (+ bias).

    Offsets are accumulated in Caffe's (row-major) kernel order, each as one multiply
    into a scratch block and one add, block by block (a few channels of a sample) so
    that the accumulator stays in cache.
    """
    n, c = x.shape[:2]
    o = w.shape[0]
    m = o // c
    nd = geom.ndim
    if nd == 2:
        return _depthwise_wide(x, w, geom, xp, bias, dtype, out_spatial)
    xpad = _as(pad_spatial(x, geom.pad, xp), dtype)
    wk = _as(w, dtype).reshape(c, m, geom.kernel_count)
    y = xp.empty((n, o) + tuple(out_spatial), dtype=dtype)
    y5 = y.reshape((n, c, m) + tuple(out_spatial))
    per_channel = m * math.prod(out_spatial) * dtype.itemsize
    blocks = _depthwise_blocks(n, c, per_channel, xp)
    bn, bc = blocks[0][0].stop - blocks[0][0].start, blocks[0][1].stop - blocks[0][1].start
    tmp = xp.empty((bn, bc, m) + tuple(out_spatial), dtype=dtype)
    windows = [_offset_slices(offs, geom, out_spatial)
               for offs in itertools.product(*(range(k) for k in geom.kernel))]
    wviews = [wk[:, :, i].reshape((1, c, m) + (1,) * nd) for i in range(len(windows))]
    for ns, cs in blocks:
        yc = y5[ns, cs]
        t = tmp[: yc.shape[0], : yc.shape[1]]
        xc = xpad[ns, cs]
        for idx, win in enumerate(windows):
            src = xc[(slice(None), slice(None)) + win][:, :, None]
            wv = wviews[idx][:, cs]
            if idx == 0:
                xp.multiply(src, wv, out=yc)
            else:
                xp.multiply(src, wv, out=t)
                yc += t
    if bias is not None:
        y += _as(bias, dtype).reshape((1, o) + (1,) * nd)
    return y


def _depthwise_wide(x, w, geom: ConvGeometry, xp, bias, dtype, out_spatial):
    """:func:`_depthwise` for 2-D, on flattened rows of the input's stride phases.

    Phase (a, b) of the padded input is every sh-th row from a and every sw-th column
    from b; kernel offset (i, j) reads phase (i*dh mod sh, j*dw mod sw) shifted by
    (i*dh div sh, j*dw div sw) with stride 1. In a phase flattened row by row (width
    Wq), that window is one contiguous run of OH * Wq values; its first OW values of
    each row are outputs, the others fall off the edge and are dropped at the end. So
    every multiply-add runs over one long run per channel instead of OH short strided
    rows. (Stride 1: one phase, the padded input itself.)
    """
    n, c = x.shape[:2]
    o = w.shape[0]
    m = o // c
    (kh, kw), (sh, sw), (dh, dw) = geom.kernel, geom.stride, geom.dilation
    oh, ow = out_spatial
    hp, wp = (s_ + 2 * p_ for s_, p_ in zip(x.shape[2:], geom.pad))
    r0max, c0max = (kh - 1) * dh // sh, (kw - 1) * dw // sw
    wq = max(-(-wp // sw), c0max + ow)
    hq = max(-(-hp // sh), r0max + oh) + (1 if c0max else 0)
    if sh == 1 and sw == 1 and wq == wp:  # one phase: the padded input with extra zero rows
        phases = _as(pad_spatial(x, geom.pad, xp, extra=(hq - hp, 0)), dtype)[None, None]
    else:
        xpad = _as(pad_spatial(x, geom.pad, xp), dtype)
        phases = xp.zeros((sh, sw, n, c, hq, wq), dtype=dtype)
        for a in range(sh):
            for b in range(sw):
                sub = xpad[:, :, a::sh, b::sw]
                phases[a, b, :, :, :sub.shape[2], :sub.shape[3]] = sub
    flat = phases.reshape(sh, sw, n, c, 1, hq * wq)
    run = oh * wq
    wk = _as(w, dtype).reshape(c, m, geom.kernel_count)
    kk = geom.kernel_count
    wide = xp.empty((n, c, m, run), dtype=dtype)
    # blocks of columns (bn, bc, K, run) about DEPTHWISE_BLOCK_BYTES: K contiguous copies
    # of the runs, then one small product per channel, all in cache
    blocks = _depthwise_blocks(n, c, kk * run * dtype.itemsize, xp)
    bn, bc = blocks[0][0].stop - blocks[0][0].start, blocks[0][1].stop - blocks[0][1].start
    col = xp.empty((bn, bc, kk, run), dtype=dtype)
    taps = [((i * dh) % sh, (j * dw) % sw, (i * dh // sh) * wq + j * dw // sw) for i in range(kh) for j in range(kw)]
    for ns, cs in blocks:
        yc = wide[ns, cs]
        cb = col[: yc.shape[0], : yc.shape[1]]
        for k, (a, b, st) in enumerate(taps):
            cb[:, :, k] = flat[a, b, ns, cs, 0, st: st + run]
        xp.matmul(wk[cs], cb, out=yc)
    y = xp.empty((n, o, oh, ow), dtype=dtype)
    if bias is None:
        y[...] = wide.reshape(n, o, oh, wq)[..., :ow]
    else:
        xp.add(wide.reshape(n, o, oh, wq)[..., :ow], _as(bias, dtype).reshape(1, o, 1, 1), out=y)
    return y


def _depthwise_grad(x, dy, w, geom: ConvGeometry, xp, need_dx, need_dw, dtype):
    """Gradients of :func:`_depthwise`: per offset, dx's window += dy * w_k and
    dw_k = sum over batch and positions of dy * window_k(x)."""
    n, c = x.shape[:2]
    o = w.shape[0]
    m = o // c
    nd = geom.ndim
    out_spatial = tuple(dy.shape[2:])
    xpad = _as(pad_spatial(x, geom.pad, xp), dtype)
    dy5 = _as(dy, dtype).reshape((n, c, m) + out_spatial)
    wk = _as(w, dtype).reshape(c, m, geom.kernel_count)
    bshape = (1, c, m) + (1,) * nd
    dxpad = xp.zeros(xpad.shape, dtype=dtype) if need_dx else None
    dw = xp.zeros((c, m, geom.kernel_count), dtype=dtype) if need_dw else None
    red = (0,) + tuple(range(3, 3 + nd))
    lead = (slice(None), slice(None))
    for idx, offs in enumerate(itertools.product(*(range(k) for k in geom.kernel))):
        sl = lead + _offset_slices(offs, geom, out_spatial)
        if need_dw:
            dw[:, :, idx] = (dy5 * xpad[sl][:, :, None]).sum(axis=red)
        if need_dx:
            contrib = dy5 * wk[:, :, idx].reshape(bshape)
            dxpad[sl] += contrib.sum(axis=2) if m > 1 else contrib[:, :, 0]
    dx = None
    if need_dx:
        dx = dxpad[lead + tuple(slice(p_, p_ + s) for p_, s in zip(geom.pad, x.shape[2:]))]
        dx = xp.ascontiguousarray(dx) if any(geom.pad) else dx
    return dx, (dw.reshape(w.shape) if need_dw else None)


def convolution(x, w, geom: ConvGeometry, groups: int, xp, bias=None, path: str | None = None):
    """y[n, o] = sum over c, kernel of w[o, c] * x[n, group(o) c] (+ bias[o]) (Caffe's convolution).

    ``x`` (N, C, *S), ``w`` (O, C/groups, *kernel) -> (N, O, *out). ``bias`` (O,) or
    None is added as each chunk of samples is copied out of the product. ``path``
    forces a kernel (see :func:`conv_path`; "general" serves every shape).
    """
    out_spatial = geom.output_shape(x.shape[2:])
    path = path or conv_path(geom, x.shape, w.shape[0], groups)
    if path == "pointwise":
        return _pointwise(x, w, geom, groups, xp, bias, xp.result_type(x.dtype, w.dtype))
    if path == "depthwise":
        return _depthwise(x, w, geom, xp, bias, xp.result_type(x.dtype, w.dtype), out_spatial)
    plan = column_plan(geom, tuple(x.shape[2:]), tuple(out_spatial))
    n, c, o = x.shape[0], x.shape[1], w.shape[0]
    dtype = xp.result_type(x.dtype, w.dtype)
    chunks, nb = _plan_chunks(n, c, geom, plan, dtype, xp)
    buf = xp.empty(c * geom.kernel_count * nb * plan.pc, dtype=x.dtype)
    wm = _grouped(w, groups, dtype, xp)
    if bias is not None:
        bias = _as(bias, dtype)
    y = xp.empty((n, o) + out_spatial, dtype=dtype)
    for n0, n1 in chunks:
        col = _as(plan.columns(x[n0:n1], xp, buf), dtype).reshape(groups, wm.shape[2], -1)
        yc = y[n0:n1]
        if n1 - n0 == 1:
            xp.matmul(wm, col, out=y[n0].reshape(wm.shape[:2] + (-1,)))
            if bias is not None:
                yc += bias.reshape((1, o) + (1,) * len(out_spatial))
        else:
            _from_wide(xp.matmul(wm, col), yc, xp, bias)
    return y


def _weight_grad(dw, dyw, col, xp):
    """dw (G, Og, Cg*K) += dyw (G, Og, nb*P) @ col (G, Cg*K, nb*P)^T."""
    dw += xp.matmul(dyw, col.transpose(0, 2, 1))


def convolution_grad(x, dy, w, geom: ConvGeometry, groups: int, xp, need_dx=True, need_dw=True,
                     path: str | None = None):
    """Gradients of :func:`convolution`: (dx or None, dw or None) for output gradient ``dy``."""
    path = path or conv_path(geom, x.shape, w.shape[0], groups)
    if path == "depthwise":
        return _depthwise_grad(x, dy, w, geom, xp, need_dx, need_dw, xp.result_type(x.dtype, w.dtype, dy.dtype))
    plan = column_plan(geom, tuple(x.shape[2:]), tuple(dy.shape[2:]))
    n, c = x.shape[:2]
    dtype = xp.result_type(x.dtype, w.dtype, dy.dtype)
    chunks, nb = _plan_chunks(n, c, geom, plan, dtype, xp)
    buf = xp.empty(c * geom.kernel_count * nb * plan.pc, dtype=x.dtype) if need_dw else None
    wm = _grouped(w, groups, dtype, xp)
    w_t = wm.transpose(0, 2, 1)
    dx = xp.empty(x.shape, dtype=dtype) if need_dx else None
    dw = xp.zeros(wm.shape, dtype=dtype) if need_dw else None
    for n0, n1 in chunks:
        dyw = _to_wide(_as(dy[n0:n1], dtype), groups, xp)
        if need_dw:
            col = _as(plan.columns(x[n0:n1], xp, buf), dtype).reshape(groups, wm.shape[2], -1)
            _weight_grad(dw, dyw, col, xp)
        if need_dx:
            dcol = xp.matmul(w_t, dyw).reshape(c, geom.kernel_count, n1 - n0, plan.pc)
            _put(dx[n0:n1], lambda dst: plan.uncolumns(dcol, xp, out=dst))
    return dx, (dw.reshape(w.shape) if need_dw else None)


def _put(dst, make) -> None:
    """dst[...] = make(dst), where ``make`` may already have written into ``dst`` and returned it."""
    src = make(dst)
    if src is not dst:
        dst[...] = src


def convolution_transpose(y, w, geom: ConvGeometry, groups: int, out_spatial, xp):
    """The adjoint of :func:`convolution` in x (Caffe's deconvolution, no bias).

    ``y`` (N, O, *S_in) with ``w`` (O, C/groups, *kernel) -> (N, C, *out_spatial).
    """
    plan = column_plan(geom, tuple(out_spatial), tuple(y.shape[2:]))
    n = y.shape[0]
    c = w.shape[1] * groups
    dtype = xp.result_type(y.dtype, w.dtype)
    chunks, _ = _plan_chunks(n, c, geom, plan, dtype, xp)
    w_t = _grouped(w, groups, dtype, xp).transpose(0, 2, 1)
    x = xp.empty((n, c) + tuple(out_spatial), dtype=dtype)
    for n0, n1 in chunks:
        yw = _to_wide(_as(y[n0:n1], dtype), groups, xp)
        dcol = xp.matmul(w_t, yw).reshape(c, geom.kernel_count, n1 - n0, plan.pc)
        _put(x[n0:n1], lambda dst: plan.uncolumns(dcol, xp, out=dst))
    return x


def convolution_transpose_grad(y, dx, w, geom: ConvGeometry, groups: int, xp, need_dy=True, need_dw=True):
    """Gradients of :func:`convolution_transpose` for output gradient ``dx`` (N, C, *S_out).

    Returns (dy or None, dw or None): dy = convolution(dx, w); dw = the convolution
    weight gradient with input ``dx`` and output gradient ``y``. One im2col serves both.
    """
    plan = column_plan(geom, tuple(dx.shape[2:]), tuple(y.shape[2:]))
    n, c = dx.shape[:2]
    dtype = xp.result_type(y.dtype, w.dtype, dx.dtype)
    chunks, nb = _plan_chunks(n, c, geom, plan, dtype, xp)
    buf = xp.empty(c * geom.kernel_count * nb * plan.pc, dtype=dx.dtype)
    wm = _grouped(w, groups, dtype, xp)
    dy = xp.empty(y.shape, dtype=dtype) if need_dy else None
    dw = xp.zeros(wm.shape, dtype=dtype) if need_dw else None
    for n0, n1 in chunks:
        col = _as(plan.columns(dx[n0:n1], xp, buf), dtype).reshape(groups, wm.shape[2], -1)
        if need_dy:
            _from_wide(xp.matmul(wm, col), dy[n0:n1], xp)
        if need_dw:
            _weight_grad(dw, _to_wide(_as(y[n0:n1], dtype), groups, xp), col, xp)
    return dy, (dw.reshape(w.shape) if need_dw else None)
