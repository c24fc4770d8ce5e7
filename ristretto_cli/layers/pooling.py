"""Pooling with Caffe 1.0 semantics (pooling_layer.cpp / .cu).

* Output size rounds up: ``ceil((in + 2p - k) / s) + 1`` (``round_mode: FLOOR``, from
  BVLC master: ``floor(...)``); when any pad is set and the last window would start at
  or after ``in + p`` it is dropped (in both modes).
* MAX ignores padding (windows are clipped to the input); ties go to the first
  maximum in row-major window order; a second top holds Caffe's argmax mask
  (``h * W + w`` of the input plane, as float).
* AVE sums the clipped window (padded zeros count as zeros) and divides by the
  window size clipped to the padded bounds ``min(start + k, in + p) - start``.
* STOCHASTIC ignores pad in its windows (as Caffe's GPU kernels do): TEST phase
  gives ``sum(x^2) / (FLT_MIN + sum(x))``, TRAIN samples one element with
  probability proportional to its value and routes the gradient back to it.
* ``global_pooling`` pools the whole plane (pad 0, stride 1 required).
"""
from __future__ import annotations

import itertools

from ..backend import scatter_add
from ..proto import caffe_pb2
from .base import TRAIN, Layer, register
from .im2col import pad_spatial

MAX, AVE, STOCHASTIC = (caffe_pb2.PoolingParameter.MAX, caffe_pb2.PoolingParameter.AVE,
                        caffe_pb2.PoolingParameter.STOCHASTIC)
FLT_MAX = 3.4028234663852886e38  # Caffe initialises MAX pooling with -FLT_MAX in every dtype
FLT_MIN = 1.1754943508222875e-38


def pooled_size(size: int, kernel: int, stride: int, pad: int, clip: bool, floor: bool = False) -> int:
    """Caffe's pooled size along one axis (``clip``: some pad is nonzero; ``floor``:
    ``round_mode: FLOOR`` rounds the window count down instead of up)."""
    span = size + 2 * pad - kernel
    out = (span // stride if floor else -(-span // stride)) + 1
    if clip and (out - 1) * stride >= size + pad:
        out -= 1
    return out


@register("Pooling")
class Pooling(Layer):
    num_bottoms = 1
    num_tops = (1, 2)

    def _parse(self):
        pp = self.param.pooling_param
        self.method = int(pp.pool)
        if self.method not in (MAX, AVE, STOCHASTIC):
            raise self.error(f"unknown pooling method {self.method}")
        self.global_pooling = bool(pp.global_pooling)
        self.round_floor = pp.round_mode == pp.FLOOR
        has_k, has_kh, has_kw = pp.HasField("kernel_size"), pp.HasField("kernel_h"), pp.HasField("kernel_w")
        if self.global_pooling:
            if has_k or has_kh or has_kw:
                raise self.error("with global_pooling: true the kernel size cannot be specified")
            self.kernel = None
        else:
            if has_k == (has_kh and has_kw):
                raise self.error("kernel size is kernel_size OR kernel_h and kernel_w; not both")
            if not has_k and not (has_kh and has_kw):
                raise self.error("for non-square kernels both kernel_h and kernel_w are required")
            self.kernel = (int(pp.kernel_size),) * 2 if has_k else (int(pp.kernel_h), int(pp.kernel_w))
            if min(self.kernel) <= 0:
                raise self.error(f"kernel dimensions cannot be zero, got {self.kernel}")
        has_p, has_ph, has_pw = pp.HasField("pad"), pp.HasField("pad_h"), pp.HasField("pad_w")
        if not ((not has_p and has_ph and has_pw) or (not has_ph and not has_pw)):
            raise self.error("pad is pad OR pad_h and pad_w are required")
        self.pad = (int(pp.pad_h), int(pp.pad_w)) if has_ph else (int(pp.pad),) * 2
        has_s, has_sh, has_sw = pp.HasField("stride"), pp.HasField("stride_h"), pp.HasField("stride_w")
        if not ((not has_s and has_sh and has_sw) or (not has_sh and not has_sw)):
            raise self.error("stride is stride OR stride_h and stride_w are required")
        self.stride = (int(pp.stride_h), int(pp.stride_w)) if has_sh else (int(pp.stride),) * 2
        if min(self.stride) <= 0:
            raise self.error(f"stride must be positive, got {self.stride}")
        if self.global_pooling and (any(self.pad) or any(s != 1 for s in self.stride)):
            raise self.error("with global_pooling: true only pad = 0 and stride = 1 are allowed")
        if any(self.pad):
            if self.method not in (MAX, AVE):
                raise self.error("padding is implemented only for average and max pooling")
            if not self.global_pooling and (self.pad[0] >= self.kernel[0] or self.pad[1] >= self.kernel[1]):
                raise self.error(f"pad {self.pad} must be smaller than the kernel {self.kernel}")

    def setup(self, bottom_shapes):
        self._parse()

    def geometry(self, in_hw):
        """(kernel, stride, pad, out) for input plane size ``in_hw``."""
        kernel = tuple(in_hw) if self.global_pooling else self.kernel
        clip = any(self.pad)
        out = tuple(pooled_size(i, k, s, p, clip, self.round_floor)
                    for i, k, s, p in zip(in_hw, kernel, self.stride, self.pad))
        if min(out) <= 0:
            raise self.error(f"input plane {tuple(in_hw)} is too small for kernel {kernel} with pad {self.pad}")
        return kernel, self.stride, self.pad, out

    def reshape(self, bottom_shapes):
        if not hasattr(self, "method"):
            self._parse()
        shape = tuple(bottom_shapes[0])
        if len(shape) != 4:
            raise self.error(f"input must have 4 axes (num, channels, height, width), got shape {shape}")
        if self.method != MAX and len(self.param.top) > 1:
            raise self.error("only MAX pooling has a second (mask) top")
        _, _, _, out = self.geometry(shape[2:])
        top = shape[:2] + out
        return [top] * max(1, len(self.param.top))

    # -- windows ---------------------------------------------------------------
    def _windows(self, x, fill_value, use_pad=True):
        """Padded input and a function giving the (N, C, Ho, Wo) strided slice of window offset (i, j)."""
        kernel, stride, pad, out = self.geometry(x.shape[2:])
        pad = pad if use_pad else (0, 0)
        # cover every window, including ceil-mode ones that run past the padded input
        extra = tuple(max(0, (o - 1) * s + k - (i + 2 * p))
                      for o, s, k, i, p in zip(out, stride, kernel, x.shape[2:], pad))
        xpad = pad_spatial(x, pad, self.xp, value=fill_value, extra=extra)

        def window(arr, i, j):
            return arr[:, :, i:i + stride[0] * (out[0] - 1) + 1:stride[0],
                       j:j + stride[1] * (out[1] - 1) + 1:stride[1]]

        offsets = list(itertools.product(range(kernel[0]), range(kernel[1])))
        return xpad, window, offsets, (kernel, stride, pad, out)

    def _crop(self, dpad, x, pad):
        if not any(pad) and dpad.shape == x.shape:
            return dpad
        h, w = x.shape[2:]
        return self.xp.ascontiguousarray(dpad[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + w])

    def _is_global(self, x):
        kernel, _, _, out = self.geometry(x.shape[2:])
        return out == (1, 1) and tuple(kernel) == tuple(x.shape[2:]) and not any(self.pad)

    def _pool_size(self, x):
        """AVE divisor per output position: window clipped to in + pad, shape (Ho, Wo)."""
        xp = self.xp
        kernel, stride, pad, out = self.geometry(x.shape[2:])
        counts = []
        for i, k, s, p, o in zip(x.shape[2:], kernel, stride, pad, out):
            start = xp.arange(o) * s - p
            counts.append(xp.minimum(start + k, i + p) - start)
        return (counts[0][:, None] * counts[1][None, :]).astype(x.dtype)

    # -- forward ----------------------------------------------------------------
    def forward(self, bottoms):
        x = bottoms[0]
        if self.method == MAX:
            if len(self.param.top) > 1:
                top, idx, _, _ = self._max_argmax(x)
                return [top, self.max_mask(x, idx).astype(x.dtype)]
            return [self._max_forward(x)]
        if self.method == AVE:
            return [self._ave_forward(x)]
        if self.phase == TRAIN:
            return [self._stochastic_train_forward(x)]
        return [self._stochastic_test_forward(x)]

    def _max_forward(self, x):
        xp = self.xp
        if self._is_global(x):
            flat = x.reshape(x.shape[0], x.shape[1], -1)
            top = flat.max(axis=2)
            if bool(xp.isnan(top).any()):  # Caffe's '>' never picks NaN
                top = xp.where(xp.isnan(flat), -xp.inf, flat).max(axis=2)
            return xp.maximum(top, x.dtype.type(-FLT_MAX)).reshape(top.shape + (1, 1))
        return self._max_separable(x)

    def _max_separable(self, x):
        """MAX top as two 1-D passes: the max over each window's rows (whole padded rows,
        contiguous), then over its columns. fmax skips NaN and the result is clamped
        below at -FLT_MAX, so every value is Caffe's: the largest non-NaN element of
        the window, or -FLT_MAX when none beats it."""
        xp = self.xp
        xpad, _, _, (kernel, stride, _, out) = self._windows(x, -float("inf"))
        (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out

        def row(i):
            return xpad[:, :, i:i + sh * (ho - 1) + 1:sh, :]

        def col(a, j):
            return a[:, :, :, j:j + sw * (wo - 1) + 1:sw]

        rows = row(0) if kh == 1 else xp.fmax(row(0), row(1))
        for i in range(2, kh):
            xp.fmax(rows, row(i), out=rows)
        top = xp.fmax(col(rows, 0), x.dtype.type(-FLT_MAX))
        for j in range(1, kw):
            xp.fmax(top, col(rows, j), out=top)
        return top

    def _index_dtype(self, count):
        xp = self.xp
        return xp.int8 if count < 127 else (xp.int16 if count < 32767 else xp.int32)

    def _max_argmax(self, x):
        """(top, idx, padded shape, geometry): idx is, per output, the window offset (row-major)
        of Caffe's choice: the first element that beats the running maximum started at
        -FLT_MAX (-1 when none does)."""
        xp = self.xp
        xpad, window, offsets, geo = self._windows(x, -float("inf"))
        top = xp.full(x.shape[:2] + tuple(geo[3]), -FLT_MAX, dtype=x.dtype)
        idx = xp.full(top.shape, -1, dtype=self._index_dtype(len(offsets)))
        for n, (i, j) in enumerate(offsets):
            v = window(xpad, i, j)
            better = v > top
            xp.fmax(top, v, out=top)
            idx -= better * (idx - n)  # branch-free idx[better] = n
        return top, idx, xpad.shape, geo

    def max_mask(self, x, idx=None):
        """Caffe's MAX mask: flat index h * W + w of each output's maximum in its input plane."""
        xp = self.xp
        if idx is None:
            idx = self._max_argmax(x)[1]
        kernel, stride, pad, out = self.geometry(x.shape[2:])
        kw = kernel[1]
        idx = idx.astype(xp.int64)
        h = xp.arange(out[0]).reshape(-1, 1) * stride[0] - pad[0] + idx // kw
        w = xp.arange(out[1]).reshape(1, -1) * stride[1] - pad[1] + idx % kw
        return xp.where(idx < 0, -1, h * x.shape[3] + w)

    def _ave_forward(self, x):
        if self._is_global(x):
            flat = x.reshape(x.shape[0], x.shape[1], -1)
            return (flat.sum(axis=2) / x.dtype.type(flat.shape[2])).reshape(x.shape[:2] + (1, 1))
        xpad, window, offsets, (_, _, _, out) = self._windows(x, 0.0)
        top = self.xp.zeros(x.shape[:2] + tuple(out), dtype=x.dtype)
        for i, j in offsets:
            top += window(xpad, i, j)
        top /= self._pool_size(x)
        return top

    def _stochastic_test_forward(self, x):
        xpad, window, offsets, (_, _, _, out) = self._windows(x, 0.0, use_pad=False)
        csum = self.xp.full(x.shape[:2] + tuple(out), FLT_MIN, dtype=x.dtype)
        cval = self.xp.zeros_like(csum)
        for i, j in offsets:
            v = window(xpad, i, j)
            csum += v
            cval += v * v
        return cval / csum

    def _stochastic_train_forward(self, x):
        xp = self.xp
        xpad, window, offsets, (_, _, _, out) = self._windows(x, 0.0, use_pad=False)
        shape = x.shape[:2] + tuple(out)
        total = xp.zeros(shape, dtype=x.dtype)
        for i, j in offsets:
            total += window(xpad, i, j)
        thres = self.backend.rng.random(shape).astype(x.dtype) * total
        csum = xp.zeros_like(total)
        idx = xp.full(shape, -1, dtype=xp.int32)
        top = xp.zeros_like(total)
        for n, (i, j) in enumerate(offsets):
            v = window(xpad, i, j)
            csum += v
            pick = (idx < 0) & (csum >= thres)
            xp.copyto(idx, n, where=pick)
            xp.copyto(top, v, where=pick)
        self._stochastic_idx = (x.shape, idx)
        return top

    # -- backward ------------------------------------------------------------------
    def backward(self, top_diffs, bottoms, tops, propagate_down):
        x = bottoms[0]
        if not propagate_down[0]:
            return [None]
        dy = top_diffs[0]
        if dy is None:
            return [self.xp.zeros_like(x)]
        if self.method == MAX:
            return [self._max_backward(x, dy)]
        if self.method == AVE:
            return [self._ave_backward(x, dy)]
        if self.phase == TRAIN:
            idx = self._stochastic_state(x)
            xpad, _, _, _ = self._windows(x, 0.0, use_pad=False)
            return [self._routed_backward(x, dy, idx, xpad.shape, (0, 0))]
        raise self.error("STOCHASTIC pooling has no backward in the TEST phase")

    def _stochastic_state(self, x):
        state = getattr(self, "_stochastic_idx", None)
        if state is None or state[0] != x.shape:
            raise self.error("STOCHASTIC pooling backward needs its TRAIN forward pass first")
        return state[1]

    def _max_backward(self, x, dy):
        xp = self.xp
        if self._is_global(x):
            flat = x.reshape(x.shape[0], x.shape[1], -1)
            flat = xp.where(xp.isnan(flat), -xp.inf, flat)
            first = xp.argmax(flat, axis=2)[..., None]  # first maximum, as Caffe's strict '>'
            valid = (flat.max(axis=2) > -FLT_MAX)[..., None]
            hit = (xp.arange(flat.shape[2]) == first) & valid
            g = xp.where(hit, dy.reshape(dy.shape[0], dy.shape[1], 1), dy.dtype.type(0))
            return g.reshape(x.shape)
        kernel, stride, _, _ = self.geometry(x.shape[2:])
        if tuple(stride) == tuple(kernel):
            return self._max_backward_tiled(x, dy)
        _, idx, padded_shape, (_, _, pad, _) = self._max_argmax(x)
        return self._routed_backward(x, dy, idx, padded_shape, pad)

    def _max_backward_tiled(self, x, dy):
        """MAX gradient when the windows tile the (padded) input (stride == kernel): each
        input element is in at most one window, so routing is one masked write per window
        offset, no scatter. The chosen element is Caffe's: the first (row-major) equal to
        the window's maximum, none when the maximum is -FLT_MAX (nothing beat it).

        The write works on the bits: ``bits(0 + dy) * hit`` is dy's bits where chosen and
        +0 elsewhere, exactly what adding dy into zeros gives (NaN and inf included)."""
        xp = self.xp
        xpad, _, _, (kernel, _, pad, out) = self._windows(x, -float("inf"))
        (kh, kw), (ho, wo) = kernel, out
        n, c = x.shape[:2]
        tiles = xpad[:, :, :ho * kh, :wo * kw].reshape(n, c, ho, kh, wo, kw)
        top = self._max_separable(x)
        free = top > x.dtype.type(-FLT_MAX)   # windows whose element is not chosen yet
        bits = xp.dtype(f"u{dy.dtype.itemsize}")
        g = (dy + dy.dtype.type(0)).view(bits)  # 0 + dy: -0 becomes +0, as in a sum from zero
        dt = xp.empty((n, c, ho, kh, wo, kw), dtype=dy.dtype)
        dbits = dt.view(bits)
        hit = xp.empty(top.shape, dtype=bool)
        for i in range(kh):
            for j in range(kw):
                xp.equal(tiles[:, :, :, i, :, j], top, out=hit)
                xp.logical_and(hit, free, out=hit)
                xp.multiply(g, hit, out=dbits[:, :, :, i, :, j])
                xp.logical_xor(free, hit, out=free)
        dt = dt.reshape(n, c, ho * kh, wo * kw)
        if dt.shape == xpad.shape:
            return self._crop(dt, x, pad)
        dpad = xp.zeros(xpad.shape, dtype=dy.dtype)
        dpad[:, :, :ho * kh, :wo * kw] = dt
        return self._crop(dpad, x, pad)

    def _routed_backward(self, x, dy, idx, padded_shape, pad):
        """Add each ``dy`` to the input element its window chose (offset ``idx``, -1: none)."""
        xp = self.xp
        kernel, stride, _, out = self.geometry(x.shape[2:])
        n, c, hp, wp = padded_shape
        offset = xp.asarray([i * wp + j for i in range(kernel[0]) for j in range(kernel[1])] + [0],
                            dtype=xp.int64)
        base = (xp.arange(n * c, dtype=xp.int64).reshape(n, c, 1, 1) * (hp * wp)
                + (xp.arange(out[0], dtype=xp.int64) * (stride[0] * wp)).reshape(-1, 1)
                + xp.arange(out[1], dtype=xp.int64) * stride[1])
        target = base + offset[idx]  # idx -1 picks the trailing 0, masked below
        dpad = xp.zeros(n * c * hp * wp, dtype=dy.dtype)
        if bool((idx < 0).any()):
            keep = idx >= 0
            scatter_add(dpad, target[keep], dy[keep])
        else:
            scatter_add(dpad, target.reshape(-1), dy.reshape(-1))
        return self._crop(dpad.reshape(padded_shape), x, pad)

    def _ave_backward(self, x, dy):
        xp = self.xp
        if self._is_global(x):
            g = dy.reshape(dy.shape[:2] + (1, 1)) / x.dtype.type(x.shape[2] * x.shape[3])
            return xp.ascontiguousarray(xp.broadcast_to(g, x.shape)).astype(dy.dtype, copy=False)
        dpad_src, window, offsets, (_, _, pad, _) = self._windows(x, 0.0)
        dpad = xp.zeros(dpad_src.shape, dtype=dy.dtype)
        g = dy / self._pool_size(x)
        for i, j in offsets:
            window(dpad, i, j)[...] += g
        return self._crop(dpad, x, pad)
