"""A counter-based random generator: Philox4x32-10 keyed by (seed, call counter, element index).

The NumPy twin of ``rt_uniform`` in ``kernels/trim.cu``: draw ``i`` of call ``c`` of a
generator seeded with ``s`` is a pure function of (s, c, i), so a GPU kernel that draws
its own u per element (no array of draws in memory) gives the same stochastic rounding
as this module on the CPU, bit for bit, on any device and for any launch geometry.

Philox4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy as 1, 2,
3", SC'11; Random123's ``philox4x32`` with 10 rounds) maps a 128-bit counter and a
64-bit key to 128 random bits. Here the counter is (i mod 2^32, i div 2^32, c mod 2^32,
c div 2^32), the key (s mod 2^32, s div 2^32), and u in [0, 1) is made of the first two
output words as NumPy's ``Generator.random`` makes a double: ((w0 >> 5) * 2^26 + (w1 >>
6)) * 2^-53 (53 random bits).

Pass a :class:`CounterRNG` as ``rng`` to any ``trim_*`` function: each call of
:meth:`CounterRNG.random` (one per trim) uses the next call counter.
"""
from __future__ import annotations

import numpy as np

__all__ = ["CounterRNG", "philox4x32_10", "uniform"]

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_MASK = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
#: elements per vectorised block (keeps the uint64 temporaries in cache-sized pieces)
BLOCK = 1 << 18


def philox4x32_10(counter, key):
    """Philox4x32-10 on arrays: ``counter`` a (4, n) array of uint32 words (or a 4-tuple of
    arrays / ints), ``key`` a pair of uint32 ints; returns the (4, n) uint32 output words."""
    c = [np.asarray(w, dtype=np.uint64).reshape(-1) & _MASK for w in counter]
    n = max(w.size for w in c)
    c = [np.broadcast_to(w, (n,)).copy() for w in c]
    k0, k1 = int(key[0]) & 0xFFFFFFFF, int(key[1]) & 0xFFFFFFFF
    for r in range(10):
        if r:
            k0, k1 = (k0 + _W0) & 0xFFFFFFFF, (k1 + _W1) & 0xFFFFFFFF
        p0 = _M0 * c[0]
        p1 = _M1 * c[2]
        c = [(p1 >> _S32) ^ c[1] ^ np.uint64(k0), p1 & _MASK,
             (p0 >> _S32) ^ c[3] ^ np.uint64(k1), p0 & _MASK]
    return np.stack(c).astype(np.uint32)


def uniform(seed: int, call: int, n: int, start: int = 0) -> np.ndarray:
    """Draws ``start .. start + n - 1`` of call ``call`` of the generator seeded ``seed``:
    float64 in [0, 1), exactly ``rt_uniform(seed, call, i)`` of kernels/trim.cu."""
    seed, call = int(seed) & (2**64 - 1), int(call) & (2**64 - 1)
    key = (seed & 0xFFFFFFFF, seed >> 32)
    out = np.empty(int(n), dtype=np.float64)
    for a in range(0, int(n), BLOCK):
        i = np.arange(start + a, start + min(a + BLOCK, int(n)), dtype=np.uint64)
        w = philox4x32_10((i & _MASK, i >> _S32, call & 0xFFFFFFFF, call >> 32), key)
        out[a:a + i.size] = ((w[0] >> 5).astype(np.float64) * 67108864.0
                             + (w[1] >> 6).astype(np.float64)) * (1.0 / 9007199254740992.0)
    return out


class CounterRNG:
    """A generator whose draws are a function of (seed, call counter, element index).

    ``random(size, dtype)`` has the signature that ``round_to_integer`` uses of a NumPy
    ``Generator``: it returns the draws of the current call counter, in C order, and moves
    the counter on. The CuPy kernels take ``(seed, take_call())`` instead and draw the
    same numbers on the device. ``counter``: the next call's number.
    """

    def __init__(self, seed: int = 0, counter: int = 0):
        if not 0 <= int(seed) < 2**64 or not 0 <= int(counter) < 2**64:
            raise ValueError("CounterRNG seed and counter must be integers in 0 .. 2^64 - 1")
        self.seed = int(seed)
        self.counter = int(counter)

    def take_call(self) -> int:
        """The call counter for the next batch of draws, moving the counter on."""
        c = self.counter
        self.counter = (c + 1) % 2**64
        return c

    def random(self, size=None, dtype=np.float64):
        """Uniform [0, 1) draws of the next call, shaped ``size`` (NumPy arrays, float64;
        ``dtype`` float32 rounds them down to float32 below 1)."""
        shape = () if size is None else ((size,) if isinstance(size, int) else tuple(size))
        n = int(np.prod(shape, dtype=np.int64))
        u = uniform(self.seed, self.take_call(), n).reshape(shape)
        if np.dtype(dtype) == np.float32:
            u = np.minimum(u.astype(np.float32), np.float32(1.0 - 2.0**-24))
        return u if shape else float(u)

    def __repr__(self) -> str:
        return f"CounterRNG(seed={self.seed}, counter={self.counter})"
