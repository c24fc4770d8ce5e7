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
CPU_CHUNK_BYTES = 4 << 20
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


# -- convolution primitives ----------------------------------------------------
def _dims(x, w, geom, groups, out_spatial):
    n, c = x.shape[:2]
    o = w.shape[0]
    return n, c, o, c // groups, o // groups, geom.kernel_count, math.prod(out_spatial)


def _columns(x, geom, out_spatial, xp, buf):
    """Columns of a chunk, as (nb, C, K, P); no copy for a stride-1 pointwise kernel."""
    nb, c = x.shape[:2]
    if geom.pointwise:
        if all(s == 1 for s in geom.stride):
            return xp.ascontiguousarray(x).reshape(nb, c, 1, -1)
        sub = x[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in geom.stride)]
        sub = sub[(slice(None), slice(None)) + tuple(slice(0, n) for n in out_spatial)]
        return xp.ascontiguousarray(sub).reshape(nb, c, 1, -1)
    col = im2col(x, geom, out_spatial, xp, out=None if buf is None else buf[:nb])
    return col.reshape(nb, c, geom.kernel_count, -1)


def _col_buffer(x, geom, out_spatial, chunk, xp):
    if geom.pointwise:
        return None
    per = x.shape[1] * geom.kernel_count * math.prod(out_spatial)
    return xp.empty((chunk, per), dtype=x.dtype)


def convolution(x, w, geom: ConvGeometry, groups: int, xp):
    """y[n, o] = sum_c w[o, c] * x[n, group(o) c] (cross-correlation, Caffe's convolution).

    ``x`` (N, C, *S), ``w`` (O, C/groups, *kernel) -> (N, O, *out), no bias.
    """
    out_spatial = geom.output_shape(x.shape[2:])
    n, c, o, cg, og, k, p = _dims(x, w, geom, groups, out_spatial)
    dtype = xp.result_type(x.dtype, w.dtype)
    y = xp.empty((n, o) + out_spatial, dtype=dtype)
    y4 = y.reshape(n, groups, og, p)
    wm = xp.ascontiguousarray(w.reshape(groups, og, cg * k), dtype=dtype)
    chunks = batch_chunks(n, c * k * p * x.dtype.itemsize, chunk_budget(xp))
    buf = _col_buffer(x, geom, out_spatial, chunks[0][1] - chunks[0][0], xp)
    for n0, n1 in chunks:
        col = _columns(x[n0:n1], geom, out_spatial, xp, buf).reshape(n1 - n0, groups, cg * k, p)
        if col.dtype != dtype:
            col = col.astype(dtype)
        xp.matmul(wm, col, out=y4[n0:n1])
    return y


def convolution_grad(x, dy, w, geom: ConvGeometry, groups: int, xp, need_dx=True, need_dw=True):
    """Gradients of :func:`convolution`: (dx or None, dw or None) for output gradient ``dy``."""
    out_spatial = tuple(dy.shape[2:])
    n, c, o, cg, og, k, p = _dims(x, w, geom, groups, out_spatial)
    dtype = xp.result_type(x.dtype, w.dtype, dy.dtype)
    dx = xp.empty(x.shape, dtype=dtype) if need_dx else None
    dw = xp.zeros((groups, og, cg * k), dtype=dtype) if need_dw else None
    w_t = xp.ascontiguousarray(w.reshape(groups, og, cg * k), dtype=dtype).transpose(0, 2, 1)
    chunks = batch_chunks(n, c * k * p * dtype.itemsize, chunk_budget(xp))
    buf = _col_buffer(x, geom, out_spatial, chunks[0][1] - chunks[0][0], xp) if need_dw else None
    for n0, n1 in chunks:
        nb = n1 - n0
        dyc = dy[n0:n1].reshape(nb, groups, og, p)
        if dyc.dtype != dtype:
            dyc = dyc.astype(dtype)
        if need_dw:
            col = _columns(x[n0:n1], geom, out_spatial, xp, buf).reshape(nb, groups, cg * k, p)
            _accumulate_weight_grad(dw, dyc, col, xp)
        if need_dx:
            dcol = xp.matmul(w_t, dyc)  # (nb, G, Cg*K, P)
            dx[n0:n1] = _uncolumns(dcol.reshape((nb, c) + tuple(geom.kernel) + out_spatial),
                                   geom, x.shape[2:], xp)
    if need_dw:
        dw = dw.reshape(w.shape)
    return dx, dw


def _accumulate_weight_grad(dw, dyc, col, xp):
    """dw[g] += sum_n dyc[n, g] @ col[n, g]^T."""
    if dyc.shape[0] == 1:
        dw += xp.matmul(dyc[0], col[0].transpose(0, 2, 1))
    else:
        dw += xp.matmul(dyc, col.transpose(0, 1, 3, 2)).sum(axis=0)


def _uncolumns(dcol, geom: ConvGeometry, in_spatial, xp):
    """col2im, with the pointwise shortcut (a strided scatter, or nothing at all)."""
    nb, c = dcol.shape[:2]
    if geom.pointwise:
        out_spatial = dcol.shape[2 + geom.ndim:]
        src = dcol.reshape((nb, c) + tuple(out_spatial))
        if all(s == 1 for s in geom.stride):
            return src
        dx = xp.zeros((nb, c) + tuple(in_spatial), dtype=dcol.dtype)
        dx[(slice(None), slice(None)) + tuple(slice(0, s * (n - 1) + 1, s)
                                              for s, n in zip(geom.stride, out_spatial))] = src
        return dx
    return col2im(dcol, geom, in_spatial, xp)


def convolution_transpose(y, w, geom: ConvGeometry, groups: int, out_spatial, xp):
    """The adjoint of :func:`convolution` in x (Caffe's deconvolution, no bias).

    ``y`` (N, O, *S_in) with ``w`` (O, C/groups, *kernel) -> (N, C, *out_spatial).
    """
    n, o = y.shape[:2]
    c = w.shape[1] * groups
    og, cg, k, p = o // groups, w.shape[1], geom.kernel_count, math.prod(y.shape[2:])
    dtype = xp.result_type(y.dtype, w.dtype)
    w_t = xp.ascontiguousarray(w.reshape(groups, og, cg * k), dtype=dtype).transpose(0, 2, 1)
    x = xp.empty((n, c) + tuple(out_spatial), dtype=dtype)
    for n0, n1 in batch_chunks(n, c * k * p * dtype.itemsize, chunk_budget(xp)):
        nb = n1 - n0
        yc = y[n0:n1].reshape(nb, groups, og, p)
        if yc.dtype != dtype:
            yc = yc.astype(dtype)
        dcol = xp.matmul(w_t, yc)
        x[n0:n1] = _uncolumns(dcol.reshape((nb, c) + tuple(geom.kernel) + tuple(y.shape[2:])),
                              geom, out_spatial, xp)
    return x


def convolution_transpose_grad(y, dx, w, geom: ConvGeometry, groups: int, xp, need_dy=True, need_dw=True):
    """Gradients of :func:`convolution_transpose` for output gradient ``dx`` (N, C, *S_out).

    Returns (dy or None, dw or None): dy = convolution(dx, w); dw = the convolution
    weight gradient with input ``dx`` and output gradient ``y``. One im2col serves both.
    """
    in_spatial = tuple(y.shape[2:])
    n, c, o, cg, og, k, p = _dims(dx, w, geom, groups, in_spatial)
    dtype = xp.result_type(y.dtype, w.dtype, dx.dtype)
    dy = xp.empty(y.shape, dtype=dtype) if need_dy else None
    dw = xp.zeros((groups, og, cg * k), dtype=dtype) if need_dw else None
    wm = xp.ascontiguousarray(w.reshape(groups, og, cg * k), dtype=dtype)
    dy4 = dy.reshape(n, groups, og, p) if need_dy else None
    chunks = batch_chunks(n, c * k * p * dtype.itemsize, chunk_budget(xp))
    buf = _col_buffer(dx, geom, in_spatial, chunks[0][1] - chunks[0][0], xp)
    for n0, n1 in chunks:
        nb = n1 - n0
        col = _columns(dx[n0:n1], geom, in_spatial, xp, buf).reshape(nb, groups, cg * k, p)
        if col.dtype != dtype:
            col = col.astype(dtype)
        if need_dy:
            xp.matmul(wm, col, out=dy4[n0:n1])
        if need_dw:
            yc = y[n0:n1].reshape(nb, groups, og, p)
            _accumulate_weight_grad(dw, yc.astype(dtype) if yc.dtype != dtype else yc, col, xp)
    if need_dw:
        dw = dw.reshape(w.shape)
    return dy, dw
