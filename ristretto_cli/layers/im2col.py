"""im2col / col2im on strided views, and the convolutions built on them.

Arrays are channel-first, ``(N, C, *spatial)``, with any number of spatial axes.
``im2col`` copies a strided window view of the (zero-padded) input into a
contiguous ``(N, C, *kernel, *out)`` array, so that for ``G`` groups the reshape
``(N, G, C/G * prod(kernel), prod(out))`` is free and one batched BLAS product
per chunk of samples computes the convolution. ``col2im`` is its adjoint: one
strided add per kernel offset.

The batch is processed in chunks whose column buffer stays around a few MB, which
keeps the copy and the product in cache on a CPU (on a GPU the chunks are large).
Every function takes the array module ``xp`` (NumPy or CuPy) explicitly.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

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


def _is_numpy(xp) -> bool:
    return getattr(xp, "__name__", "") == "numpy"


def chunk_budget(xp) -> int:
    return CPU_CHUNK_BYTES if _is_numpy(xp) else GPU_CHUNK_BYTES


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

    @property
    def extent(self) -> tuple:
        """Dilated kernel size per axis: d * (k - 1) + 1."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation))

    @property
    def kernel_count(self) -> int:
        return math.prod(self.kernel)

    @property
    def pointwise(self) -> bool:
        """1x1 kernel without padding: the column matrix is (a strided slice of) the input."""
        return all(k == 1 for k in self.kernel) and all(p == 0 for p in self.pad)

    def output_shape(self, in_spatial) -> tuple:
        """Convolution output: (in + 2p - extent) // stride + 1 per axis."""
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


def im2col(x, geom: ConvGeometry, out_spatial, xp, out=None):
    """Contiguous (N, C, *kernel, *out) columns of ``x`` (N, C, *S), zero padding."""
    xpad = pad_spatial(x, geom.pad, xp)
    view = window_view(xpad, geom.kernel, geom.stride, geom.dilation, out_spatial, xp)
    if out is None:
        return xp.ascontiguousarray(view)
    out = out.reshape(view.shape)
    out[...] = view
    return out


def _offset_slices(offsets, geom: ConvGeometry, out_spatial):
    return tuple(slice(o * d, o * d + s * (n - 1) + 1, s)
                 for o, d, s, n in zip(offsets, geom.dilation, geom.stride, out_spatial))


def col2im(col, geom: ConvGeometry, in_spatial, xp):
    """Adjoint of :func:`im2col`: sum columns (N, C, *kernel, *out) back into (N, C, *S)."""
    n, c = col.shape[:2]
    out_spatial = col.shape[2 + geom.ndim:]
    padded = xp.zeros((n, c) + tuple(s + 2 * p for s, p in zip(in_spatial, geom.pad)), dtype=col.dtype)
    lead = (slice(None), slice(None))
    for offs in itertools.product(*(range(k) for k in geom.kernel)):
        padded[lead + _offset_slices(offs, geom, out_spatial)] += col[lead + offs]
    if not any(geom.pad):
        return padded
    return xp.ascontiguousarray(padded[lead + tuple(slice(p, p + s) for p, s in zip(geom.pad, in_spatial))])


# -- column plans ----------------------------------------------------------------
class ColumnPlan:
    """How a chunk of inputs (nb, C, *S) becomes columns (nb, C, K, P) and back.

    ``pointwise`` (1x1 kernel, no pad): the (strided) input itself; ``general``:
    :func:`im2col` / :func:`col2im` on strided window views. (A phase-split
    "full-width" layout with long contiguous copies was tried and measured slower:
    once the batch is chunked, the copy is a few percent of the product.)
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
        """(nb, C, K, P) columns of the chunk ``x`` (nb, C, *S)."""
        nb, c = x.shape[:2]
        g = self.geom
        if self.mode == "pointwise":
            if any(s != 1 for s in g.stride):
                x = x[self._subsample()]
            return xp.ascontiguousarray(x).reshape(nb, c, 1, self.pc)
        shape = (nb, c, g.kernel_count, self.pc)
        col = None if buf is None else buf[:nb]
        return im2col(x, g, self.out_spatial, xp, out=col).reshape(shape)

    def uncolumns(self, dcol, xp):
        """Adjoint of :meth:`columns`: (nb, C, K, P) -> (nb, C, *S)."""
        nb, c = dcol.shape[:2]
        g = self.geom
        if self.mode == "pointwise":
            src = dcol.reshape((nb, c) + self.out_spatial)
            if all(s == 1 for s in g.stride):
                return src
            dx = xp.zeros((nb, c) + self.in_spatial, dtype=dcol.dtype)
            dx[self._subsample()] = src
            return dx
        return col2im(dcol.reshape((nb, c) + tuple(g.kernel) + self.out_spatial), g, self.in_spatial, xp)


# -- convolution primitives ----------------------------------------------------------
def _as(a, dtype):
    return a if a.dtype == dtype else a.astype(dtype)


def _setup(x_like, w, geom, groups, plan, xp, dtype):
    n, c = x_like.shape[:2]
    cgk = (c // groups) * geom.kernel_count
    chunks = batch_chunks(n, c * geom.kernel_count * plan.pc * dtype.itemsize, chunk_budget(xp))
    nb = chunks[0][1] - chunks[0][0]
    buf = None if plan.mode == "pointwise" else xp.empty((nb, c * geom.kernel_count * plan.pc), dtype=x_like.dtype)
    wm = xp.ascontiguousarray(w.reshape(groups, w.shape[0] // groups, cgk), dtype=dtype)
    return chunks, buf, wm, cgk


def _accumulate_weight_grad(dw, dyc, col, xp):
    """dw[g] += sum_n dyc[n, g] @ col[n, g]^T."""
    if dyc.shape[0] == 1:
        dw += xp.matmul(dyc[0], col[0].transpose(0, 2, 1))
    else:
        dw += xp.matmul(dyc, col.transpose(0, 1, 3, 2)).sum(axis=0)


def convolution(x, w, geom: ConvGeometry, groups: int, xp):
    """y[n, o] = sum over c, kernel of w[o, c] * x[n, group(o) c] (Caffe's convolution).

    ``x`` (N, C, *S), ``w`` (O, C/groups, *kernel) -> (N, O, *out), no bias.
    """
    out_spatial = geom.output_shape(x.shape[2:])
    plan = ColumnPlan(geom, x.shape[2:], out_spatial)
    n, o = x.shape[0], w.shape[0]
    dtype = xp.result_type(x.dtype, w.dtype)
    chunks, buf, wm, cgk = _setup(x, w, geom, groups, plan, xp, dtype)
    y = xp.empty((n, o) + out_spatial, dtype=dtype)
    y4 = y.reshape(n, groups, o // groups, -1)
    for n0, n1 in chunks:
        nb = n1 - n0
        col = _as(plan.columns(x[n0:n1], xp, buf), dtype).reshape(nb, groups, cgk, plan.pc)
        xp.matmul(wm, col, out=y4[n0:n1])
    return y


def convolution_grad(x, dy, w, geom: ConvGeometry, groups: int, xp, need_dx=True, need_dw=True):
    """Gradients of :func:`convolution`: (dx or None, dw or None) for output gradient ``dy``."""
    plan = ColumnPlan(geom, x.shape[2:], dy.shape[2:])
    n, o = x.shape[0], w.shape[0]
    dtype = xp.result_type(x.dtype, w.dtype, dy.dtype)
    chunks, buf, wm, cgk = _setup(x, w, geom, groups, plan, xp, dtype)
    w_t = wm.transpose(0, 2, 1)
    dx = xp.empty(x.shape, dtype=dtype) if need_dx else None
    dw = xp.zeros(wm.shape, dtype=dtype) if need_dw else None
    for n0, n1 in chunks:
        nb = n1 - n0
        dyc = _as(dy[n0:n1], dtype).reshape(nb, groups, o // groups, plan.pc)
        if need_dw:
            col = _as(plan.columns(x[n0:n1], xp, buf), dtype).reshape(nb, groups, cgk, plan.pc)
            _accumulate_weight_grad(dw, dyc, col, xp)
        if need_dx:
            dcol = xp.matmul(w_t, dyc).reshape(nb, x.shape[1], geom.kernel_count, plan.pc)
            dx[n0:n1] = plan.uncolumns(dcol, xp)
    return dx, (dw.reshape(w.shape) if need_dw else None)


def convolution_transpose(y, w, geom: ConvGeometry, groups: int, out_spatial, xp):
    """The adjoint of :func:`convolution` in x (Caffe's deconvolution, no bias).

    ``y`` (N, O, *S_in) with ``w`` (O, C/groups, *kernel) -> (N, C, *out_spatial).
    """
    plan = ColumnPlan(geom, out_spatial, y.shape[2:])
    n, o = y.shape[:2]
    c = w.shape[1] * groups
    dtype = xp.result_type(y.dtype, w.dtype)
    w_t = xp.ascontiguousarray(w.reshape(groups, o // groups, -1), dtype=dtype).transpose(0, 2, 1)
    x = xp.empty((n, c) + tuple(out_spatial), dtype=dtype)
    for n0, n1 in batch_chunks(n, c * geom.kernel_count * plan.pc * dtype.itemsize, chunk_budget(xp)):
        nb = n1 - n0
        yc = _as(y[n0:n1], dtype).reshape(nb, groups, o // groups, plan.pc)
        x[n0:n1] = plan.uncolumns(xp.matmul(w_t, yc).reshape(nb, c, geom.kernel_count, plan.pc), xp)
    return x


def convolution_transpose_grad(y, dx, w, geom: ConvGeometry, groups: int, xp, need_dy=True, need_dw=True):
    """Gradients of :func:`convolution_transpose` for output gradient ``dx`` (N, C, *S_out).

    Returns (dy or None, dw or None): dy = convolution(dx, w); dw = the convolution
    weight gradient with input ``dx`` and output gradient ``y``. One im2col serves both.
    """
    plan = ColumnPlan(geom, dx.shape[2:], y.shape[2:])
    n, o = y.shape[:2]
    dtype = xp.result_type(y.dtype, w.dtype, dx.dtype)
    chunks, buf, wm, cgk = _setup(dx, w, geom, groups, plan, xp, dtype)
    dy = xp.empty(y.shape, dtype=dtype) if need_dy else None
    dw = xp.zeros(wm.shape, dtype=dtype) if need_dw else None
    for n0, n1 in chunks:
        nb = n1 - n0
        col = _as(plan.columns(dx[n0:n1], xp, buf), dtype).reshape(nb, groups, cgk, plan.pc)
        if need_dy:
            xp.matmul(wm, col, out=dy.reshape(n, groups, o // groups, plan.pc)[n0:n1])
        if need_dw:
            yc = _as(y[n0:n1], dtype).reshape(nb, groups, o // groups, plan.pc)
            _accumulate_weight_grad(dw, yc, col, xp)
    return dy, (dw.reshape(w.shape) if need_dw else None)
