"""kernels/*.cu: they compile (nvcc), their arithmetic equals the NumPy twin (trim.py) on the
CPU through a host compile of the same functions, and, on a CUDA device, the CuPy path
(fused kernels) equals the NumPy path bit for bit. The counter-based generator's twin
(formats/counter_rng.py) is tested here for its known answers, reproducibility and
statistics."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ristretto_cli import kernels
from ristretto_cli.formats import Rounding, minifloat_max, trim_fixed_point, trim_minifloat, trim_pow2
from ristretto_cli.formats.counter_rng import CounterRNG, philox4x32_10, uniform
from ristretto_cli.formats.trim import trim_fixed_point_unsigned

from conftest import CUPY, GPU_REQUESTED, NO_CUPY_REASON, make_backend

NVCC = shutil.which("nvcc") or (Path("/usr/local/cuda/bin/nvcc").exists() and "/usr/local/cuda/bin/nvcc") or None
needs_nvcc = pytest.mark.skipif(not NVCC, reason="nvcc is not installed")
needs_gpu = pytest.mark.skipif(CUPY is None and not GPU_REQUESTED, reason=f"CuPy backend: {NO_CUPY_REASON}")
KERNEL_DIR = Path(kernels.__file__).parent
ROUNDINGS = list(Rounding)
# fl far outside float32 makes trim.py's bounds overflow to inf on purpose
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")

FIXED = [(8, 4), (8, 0), (4, -2), (16, 12), (1, 0), (2, 1), (32, 16), (32, -10), (24, 3), (8, 130),
         (8, -130), (24, 200), (2, 256), (32, -256), (8, -126), (8, -127), (8, 126), (8, 127), (16, 150)]
MINIFLOAT = [(4, 3), (10, 5), (2, 4), (0, 1), (23, 8), (7, 8), (3, 2), (1, 8), (5, 6)]
POW2 = [(-8, -1), (-149, 127), (0, 0), (-3, 5), (-126, -120)]


def awkward_values(seed: int = 0) -> np.ndarray:
    """float32 values where trimming goes wrong first: signed zeros, denormals, the normal
    limits, inf, NaN, ties at many scales, neighbours of powers of two, 2^(k+1/2) (log2
    ties), float32 values whose log2 lies next to a float32 rounding boundary, random values
    over the whole exponent range."""
    f = np.float32
    tiny, big = np.finfo(f).tiny, np.finfo(f).max
    special = [0.0, -0.0, 1e-45, -1e-45, 1.1754942e-38, -1.1754942e-38, tiny, -tiny, big, -big,
               np.inf, -np.inf, np.nan, 1.0, -1.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 3.5, 496.0, 512.0,
               480.0, 131008.0, 131072.0, 65504.0, -496.0, 0.3, -0.3, 3.3357237e-39, 6.6714475e-39,
               2.668579e-38, 1.0674316e-37, 4.2697264e-37, 1.7078906e-36, 1.09305e-34, 4.3722e-34]
    ks = np.arange(-150, 128)
    pows = np.ldexp(np.ones(ks.size), ks).astype(f)
    near = np.concatenate([pows, np.nextafter(pows, f(0)), np.nextafter(pows, f(np.inf)),
                           (pows * np.sqrt(2.0)).astype(f), (pows * 1.5).astype(f), (pows * 1.25).astype(f)])
    rng = np.random.default_rng(seed)
    ties = (rng.integers(-300, 300, 400) + 0.5) * np.ldexp(1.0, rng.integers(-20, 20, 400))
    rand = rng.standard_normal(600) * np.ldexp(1.0, rng.integers(-140, 120, 600))
    values = np.concatenate([np.array(special, dtype=f), near, -near, ties.astype(f), rand.astype(f)])
    return values.astype(f)


def assert_same(got, want, what, zero_sign=True):
    """Equal bit for bit (any NaN equals any NaN; the sign of zero unless ``zero_sign`` is off)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape, what
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    if zero_sign:
        same &= (np.signbit(got) == np.signbit(want)) | np.isnan(want)
    if not same.all():
        bad = np.flatnonzero(~same.reshape(-1))[:6]
        raise AssertionError(f"{what}: {int((~same).sum())} of {got.size} differ; at {bad.tolist()}: got "
                             f"{got.reshape(-1)[bad].tolist()} want {want.reshape(-1)[bad].tolist()}")


def assert_same_pow2(got, want, x, lo, hi, rounding, what):
    """As :func:`assert_same`, except where float32 log2 lies within an ulp of a boundary of R:
    log2f (CUDA's, the C library's) and NumPy's float32 log2 are not correctly rounded and may
    pick either side there (float32(sqrt 2): NumPy 0.5, glibc 0.49999997)."""
    from ristretto_cli.formats import round_to_integer

    with np.errstate(all="ignore"):
        l = np.log2(np.abs(x))
        below = round_to_integer(np.nextafter(l, np.float32(-np.inf)), rounding, np, CounterRNG(SEED, CALL))
        above = round_to_integer(np.nextafter(l, np.float32(np.inf)), rounding, np, CounterRNG(SEED, CALL))
    ambiguous = (np.clip(below, lo, hi) != np.clip(above, lo, hi)) & np.isfinite(l)
    keep = ~ambiguous
    assert_same(got[keep], want[keep], what)
    odd = ambiguous & (got != want)
    assert (np.abs(got[odd] / want[odd]) <= 2).all() and (np.abs(got[odd] / want[odd]) >= 0.5).all(), what


def fixed_zero_sign_defined(bw, fl) -> bool:
    """NumPy's fmin/fmax give either zero's sign when a bound is zero (differently for SIMD and
    scalar loops), so the sign of a zero result is defined only when both bounds are not."""
    with np.errstate(all="ignore"):
        hi = np.float32((2.0 ** (bw - 1) - 1) * 2.0 ** -fl)
        lo = np.float32(-(2.0 ** (bw - 1)) * 2.0 ** -fl)
    return hi != 0 and lo != 0


# -- every source compiles -----------------------------------------------------------------

def test_kernels_package_lists_its_sources():
    assert "trim.cu" in kernels.names()
    assert "Philox4x32" in kernels.source("trim.cu")


@needs_nvcc
@pytest.mark.parametrize("name", [n for n in kernels.names() if n.endswith(".cu")])
def test_cuda_source_compiles_to_ptx(name, tmp_path):
    """nvcc --ptx -arch=sm_80 (A100 and later), no warnings treated lightly: a syntax or type
    error in a kernel shows here, not first on a GPU machine."""
    proc = subprocess.run([NVCC, "--ptx", "-arch=sm_80", "-Werror", "all-warnings", "-o",
                           str(tmp_path / "k.ptx"), str(KERNEL_DIR / name)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ptx = (tmp_path / "k.ptx").read_text()
    if name == "trim.cu":
        for k in ("rt_trim_fixed_point_f32", "rt_trim_minifloat_f32", "rt_trim_pow2_f32", "rt_uniform_f64"):
            assert f".entry {k}(" in ptx, k
        assert ".ftz.f32" not in ptx, "float32 denormals must not be flushed (no fast-math)"


# -- the generator's twin ------------------------------------------------------------------

KAT = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
       ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
       ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]


@pytest.mark.parametrize("counter,key,want", KAT)
def test_philox_known_answers(counter, key, want):
    """Random123's kat_vectors for philox4x32 with 10 rounds."""
    assert tuple(int(w) for w in philox4x32_10(counter, key)[:, 0]) == want


def test_counter_rng_repeats_and_moves_on():
    a, b = CounterRNG(seed=7), CounterRNG(seed=7)
    first, again = a.random(1000), b.random(1000)
    assert np.array_equal(first, again)
    assert a.counter == 1
    second = a.random(1000)
    assert not np.array_equal(first, second)
    assert np.array_equal(CounterRNG(seed=7, counter=1).random(1000), second)
    assert not np.array_equal(CounterRNG(seed=8).random(1000), first)
    # draw i does not depend on how many are drawn
    assert np.array_equal(uniform(7, 0, 10), first[:10])
    assert np.array_equal(uniform(7, 0, 5, start=995), first[995:])
    assert ((first >= 0) & (first < 1)).all() and first.dtype == np.float64
    assert CounterRNG(1).random((2, 3)).shape == (2, 3)
    with pytest.raises(ValueError):
        CounterRNG(-1)


def test_counter_rng_is_uniform():
    u = uniform(123, 4, 200_000)
    assert abs(u.mean() - 0.5) < 0.004 and abs(u.var() - 1 / 12) < 0.002
    hist = np.histogram(u, bins=20, range=(0, 1))[0]
    assert (np.abs(hist - 10_000) < 600).all()


@pytest.mark.parametrize("v", [0.3, -0.3, 2.75, -1.125, 100.01])
def test_stochastic_rounding_with_counter_rng_is_unbiased(v):
    """R(v) is floor(v) or ceil(v), and its mean is v (E[floor(v + u)] = v)."""
    x = np.full(50_000, v, dtype=np.float32)
    y = trim_fixed_point(x, 16, 0, Rounding.STOCHASTIC, rng=CounterRNG(5))
    v32 = float(np.float32(v))
    assert set(np.unique(y).tolist()) <= {np.floor(v32), np.ceil(v32)}
    p = v32 - np.floor(v32)
    assert abs(float(y.mean()) - v32) < 4 * np.sqrt(p * (1 - p) / x.size) + 1e-9


def test_trims_take_a_counter_rng_reproducibly():
    x = np.random.default_rng(0).standard_normal(3000).astype(np.float32)
    for trim in (lambda r: trim_fixed_point(x, 4, 2, Rounding.STOCHASTIC, r),
                 lambda r: trim_minifloat(x, 2, 4, Rounding.STOCHASTIC, r),
                 lambda r: trim_pow2(x, -8, -1, Rounding.STOCHASTIC, r)):
        a, b = trim(CounterRNG(3, 9)), trim(CounterRNG(3, 9))
        assert np.array_equal(a, b)
        assert not np.array_equal(a, trim(CounterRNG(3, 10)))


# -- the kernels' arithmetic on the CPU (host compile of trim.cu) ------------------------------

@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    if not NVCC:
        pytest.skip("nvcc is not installed")
    out = tmp_path_factory.mktemp("harness") / "harness"
    here = Path(__file__).parent
    proc = subprocess.run([NVCC, "-x", "cu", "-O2", "-I", str(KERNEL_DIR), "-o", str(out),
                           str(here / "cuda_host_harness.cu")], capture_output=True, text=True)
    if proc.returncode != 0 and "host compiler" in proc.stderr.lower():
        pytest.skip(f"nvcc has no usable host compiler: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr
    folder = out.parent

    def run(kind, x, *args):
        src, dst = folder / "in.bin", folder / "out.bin"
        np.ascontiguousarray(x, dtype=np.float32).tofile(src)
        subprocess.run([str(out), kind, str(src), str(dst), *map(str, args)], check=True)
        return np.fromfile(dst, dtype=np.float64 if kind == "uniform" else np.float32)

    return run


def _bits(v) -> str:
    return hex(int(np.float32(v).view(np.uint32)))


SEED, CALL = 0x1234_5678_9ABC, 0xDEAD_0000_0001


def host_fixed(run, x, bw, fl, rounding):
    with np.errstate(all="ignore"):
        hi = np.float32((2.0 ** (bw - 1) - 1) * 2.0 ** -fl)
        lo = np.float32(-(2.0 ** (bw - 1)) * 2.0 ** -fl)
    fix = int(rounding == Rounding.TRUNCATE and -126 <= fl < 0)
    return run("fixed", x, _bits(hi), _bits(lo), float.hex(2.0 ** fl), float.hex(2.0 ** -fl), int(rounding), fix,
               SEED, CALL)


@pytest.mark.parametrize("rounding", ROUNDINGS, ids=lambda r: r.name)
def test_host_compiled_fixed_point_equals_trim_py(harness, rounding):
    x = awkward_values()
    for bw, fl in FIXED:
        want = trim_fixed_point(x, bw, fl, rounding, rng=CounterRNG(SEED, CALL))
        assert_same(host_fixed(harness, x, bw, fl, rounding), want, f"fixed ({bw}, {fl}) {rounding.name}",
                    zero_sign=fixed_zero_sign_defined(bw, fl))


@pytest.mark.parametrize("rounding", ROUNDINGS, ids=lambda r: r.name)
def test_host_compiled_minifloat_equals_trim_py(harness, rounding):
    x = awkward_values(1)
    for m, e in MINIFLOAT:
        for sat in (False, True):
            want = trim_minifloat(x, m, e, rounding, rng=CounterRNG(SEED, CALL), saturate_after_rounding=sat)
            with np.errstate(all="ignore"):
                top = float.hex(minifloat_max(m, e))
            got = harness("minifloat", x, m, e, int(rounding), int(sat), top, SEED, CALL)
            assert_same(got, want, f"minifloat ({m}, {e}) sat={sat} {rounding.name}")


@pytest.mark.parametrize("rounding", ROUNDINGS, ids=lambda r: r.name)
def test_host_compiled_pow2_equals_trim_py(harness, rounding):
    x = awkward_values(2)
    for lo, hi in POW2:
        want = trim_pow2(x, lo, hi, rounding, rng=CounterRNG(SEED, CALL))
        assert_same_pow2(harness("pow2", x, lo, hi, int(rounding), SEED, CALL), want, x, lo, hi, rounding,
                         f"pow2 ({lo}, {hi}) {rounding.name}")


def test_host_compiled_uniform_equals_counter_rng(harness):
    got = harness("uniform", np.zeros(1, np.float32), 5000, SEED, CALL)
    assert np.array_equal(got, uniform(SEED, CALL, 5000))


# -- on a CUDA device: the CuPy path (kernels) against the NumPy path (twin) --------------------

@pytest.fixture
def gpu():
    if CUPY is None and not GPU_REQUESTED:
        pytest.skip(f"CuPy backend: {NO_CUPY_REASON}")
    return make_backend("cupy")


def on_gpu(gpu, fn, x, *args, **kwargs):
    return gpu.to_numpy(fn(gpu.asarray(x), *args, **kwargs))


@pytest.mark.gpu
@pytest.mark.parametrize("rounding", ROUNDINGS, ids=lambda r: r.name)
def test_gpu_fixed_point_equals_twin(gpu, rounding):
    x = awkward_values()
    for bw, fl in FIXED:
        want = trim_fixed_point(x, bw, fl, rounding, rng=CounterRNG(SEED, CALL))
        got = on_gpu(gpu, trim_fixed_point, x, bw, fl, rounding, rng=CounterRNG(SEED, CALL))
        assert_same(got, want, f"fixed ({bw}, {fl}) {rounding.name}", zero_sign=fixed_zero_sign_defined(bw, fl))
        want = trim_fixed_point_unsigned(x, bw, fl, rounding, rng=CounterRNG(SEED, CALL))
        got = on_gpu(gpu, trim_fixed_point_unsigned, x, bw, fl, rounding, rng=CounterRNG(SEED, CALL))
        assert_same(got, want, f"unsigned ({bw}, {fl}) {rounding.name}", zero_sign=False)


@pytest.mark.gpu
@pytest.mark.parametrize("rounding", ROUNDINGS, ids=lambda r: r.name)
def test_gpu_minifloat_equals_twin(gpu, rounding):
    x = awkward_values(1)
    for m, e in MINIFLOAT:
        for sat in (False, True):
            want = trim_minifloat(x, m, e, rounding, rng=CounterRNG(SEED, CALL), saturate_after_rounding=sat)
            got = on_gpu(gpu, trim_minifloat, x, m, e, rounding, rng=CounterRNG(SEED, CALL),
                         saturate_after_rounding=sat)
            assert_same(got, want, f"minifloat ({m}, {e}) sat={sat} {rounding.name}")


@pytest.mark.gpu
@pytest.mark.parametrize("rounding", ROUNDINGS, ids=lambda r: r.name)
def test_gpu_pow2_equals_twin(gpu, rounding):
    x = awkward_values(2)
    for lo, hi in POW2:
        want = trim_pow2(x, lo, hi, rounding, rng=CounterRNG(SEED, CALL))
        got = on_gpu(gpu, trim_pow2, x, lo, hi, rounding, rng=CounterRNG(SEED, CALL))
        assert_same_pow2(got, want, x, lo, hi, rounding, f"pow2 ({lo}, {hi}) {rounding.name}")


@pytest.mark.gpu
def test_gpu_pow2_on_every_float32(gpu):
    """CUDA's log2f against NumPy's float32 log2 on every positive finite float32, NEAREST and
    TRUNCATE: the exponents differ only where log2 lies within an ulp of a boundary of R."""
    xp = gpu.xp
    for rounding in (Rounding.NEAREST, Rounding.TRUNCATE):
        for start in range(0, 0x7F800000, 1 << 26):
            bits = np.arange(start, min(start + (1 << 26), 0x7F800000), dtype=np.uint32)
            x = bits.view(np.float32)
            want = trim_pow2(x, -149, 127, rounding)
            got = gpu.to_numpy(trim_pow2(xp.asarray(x), -149, 127, rounding))
            assert_same_pow2(got, want, x, -149, 127, rounding, f"pow2 {rounding.name} from {start:#x}")


@pytest.mark.gpu
def test_gpu_uniform_equals_counter_rng(gpu):
    from ristretto_cli.formats import gpu as kernels_gpu

    got = gpu.to_numpy(kernels_gpu.uniform(SEED, CALL, 100_003, gpu.xp))
    assert np.array_equal(got, uniform(SEED, CALL, 100_003))


@pytest.mark.gpu
def test_gpu_stochastic_with_the_backend_generator_matches_the_xp_draws(gpu):
    """A CuPy Generator as rng: the kernel takes its float64 draws, the ones the xp code takes."""
    xp = gpu.xp
    x = xp.asarray(np.random.default_rng(0).standard_normal(10_000).astype(np.float32))
    got = trim_fixed_point(x, 8, 5, Rounding.STOCHASTIC, rng=xp.random.default_rng(4))
    u = xp.random.default_rng(4).random(size=x.shape, dtype=xp.float64)
    v = xp.clip(x, -4.0, 127 / 32) * 32
    want = xp.floor(v.astype(xp.float64) + u).astype(xp.float32) / 32
    assert_same(gpu.to_numpy(got), gpu.to_numpy(want), "stochastic with a CuPy Generator")


@pytest.mark.gpu
def test_gpu_out_in_place_views_and_float64(gpu):
    xp = gpu.xp
    host = awkward_values(3)[:1200].reshape(30, 40)
    want = trim_fixed_point(host, 8, 3)
    x = xp.asarray(host)
    same = trim_fixed_point(x, 8, 3, out=x)
    assert same is x
    assert_same(gpu.to_numpy(x), want, "in place")
    x = xp.asarray(host)
    assert_same(gpu.to_numpy(trim_fixed_point(x[:, ::2], 8, 3)), want[:, ::2], "strided view")
    out = xp.zeros((40, 30), dtype=xp.float32).T
    trim_fixed_point(x, 8, 3, out=out)
    assert_same(gpu.to_numpy(out), want, "non-contiguous out")
    empty = trim_minifloat(xp.zeros((0, 3), xp.float32), 4, 3)
    assert empty.shape == (0, 3)
    d = xp.asarray(host.astype(np.float64))
    got64 = trim_fixed_point(d, 8, 3, Rounding.STOCHASTIC, rng=CounterRNG(1))
    assert got64.dtype == xp.float64
    assert_same(gpu.to_numpy(got64), trim_fixed_point(host.astype(np.float64), 8, 3, Rounding.STOCHASTIC,
                                                      rng=CounterRNG(1)), "float64 on the xp path")
    with pytest.raises(Exception, match="needs a random generator"):
        trim_pow2(xp.asarray(host), -8, -1, Rounding.STOCHASTIC)
