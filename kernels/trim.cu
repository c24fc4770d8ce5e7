// Ristretto's three trimmers, each fused with its rounding, as CUDA C elementwise kernels.
//
// The arithmetic is that of ristretto_cli/formats/trim.py (the NumPy twin), step for step
// (DESIGN.md section 3), so that a kernel's output equals the twin's bit for bit:
//
//   fixed point  v = clamp(x, lo, hi) (NaN -> hi); k = R(v * 2^fl); k * 2^-fl
//                every scaling is one multiplication in double rounded once to float,
//                which is the correctly rounded x * 2^e of ldexpf / of a float32
//                multiplication by a normal 2^e, for any fl in -256..256
//   minifloat    the bit-level formula: sign, biased exponent, 23-bit mantissa; no
//                denormals; carry kept; optional saturate_after_rounding
//   power of 2   e = R(log2f|x|); clamp; sign(0) = +1 (log2f: see rt_log2_f)
//
// Rounding modes are the proto enum values of Rounding (rounding.py):
//   0 NEAREST (half to even)  1 STOCHASTIC floor(v + u)  2 NEAREST_TIES_AWAY
//   3 NEAREST_TIES_UP         4 TRUNCATE (floor)         5 TOWARD_ZERO (trunc)
//
// STOCHASTIC takes u either from an array (has_u != 0: u[i], float64 draws made by
// the caller's generator) or from Philox4x32-10 keyed by (seed, call counter, element
// index i) -- ristretto_cli/formats/counter_rng.py is the NumPy twin of rt_uniform.
//
// Every helper is __host__ __device__ so that a host compile (nvcc, tests) can run the
// same arithmetic on the CPU. No fast-math: denormals must not be flushed.
// Inputs and outputs are contiguous float32 arrays of n elements (C order); y may be x
// (an in-place trim: each element is read before it is written, by the same thread).

#ifndef __CUDACC_RTC__
#include <math.h>
#include <string.h>
#endif

typedef unsigned int rt_u32;
typedef unsigned long long rt_u64;

#define RT_HD __host__ __device__ __forceinline__

// -- bits ------------------------------------------------------------------------------
RT_HD rt_u32 rt_float_bits(float x) {
#ifdef __CUDA_ARCH__
    return __float_as_uint(x);
#else
    rt_u32 b;
    memcpy(&b, &x, sizeof b);
    return b;
#endif
}

// -- Philox4x32-10 (Salmon et al., SC'11; Random123's philox4x32 with 10 rounds) ----------
#define RT_PHILOX_M0 0xD2511F53u
#define RT_PHILOX_M1 0xCD9E8D57u
#define RT_PHILOX_W0 0x9E3779B9u
#define RT_PHILOX_W1 0xBB67AE85u

RT_HD void rt_philox4x32_10(rt_u32 c[4], rt_u32 k0, rt_u32 k1) {
    for (int r = 0; r < 10; ++r) {
        if (r > 0) { k0 += RT_PHILOX_W0; k1 += RT_PHILOX_W1; }
        rt_u64 p0 = (rt_u64)RT_PHILOX_M0 * c[0];
        rt_u64 p1 = (rt_u64)RT_PHILOX_M1 * c[2];
        rt_u32 hi0 = (rt_u32)(p0 >> 32), lo0 = (rt_u32)p0;
        rt_u32 hi1 = (rt_u32)(p1 >> 32), lo1 = (rt_u32)p1;
        rt_u32 n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0; c[1] = lo1; c[2] = n2; c[3] = lo0;
    }
}

// u in [0, 1) with 53 random bits: counter (i lo, i hi, call lo, call hi), key (seed lo,
// seed hi); the first two output words make the double as NumPy's random() does.
RT_HD double rt_uniform(rt_u64 seed, rt_u64 call, rt_u64 i) {
    rt_u32 c[4] = {(rt_u32)i, (rt_u32)(i >> 32), (rt_u32)call, (rt_u32)(call >> 32)};
    rt_philox4x32_10(c, (rt_u32)seed, (rt_u32)(seed >> 32));
    return ((double)(c[0] >> 5) * 67108864.0 + (double)(c[1] >> 6)) * (1.0 / 9007199254740992.0);
}

// -- rounding (round_to_integer of rounding.py, in float32 and in float64) ---------------
RT_HD float rt_round_f(float v, int mode, double u) {
    switch (mode) {
    case 0: return rintf(v);
    case 1: return (float)floor((double)v + u);
    case 2: { float a = fabsf(v); float f = floorf(a); f = f + ((a - f >= 0.5f) ? 1.0f : 0.0f);
              return copysignf(f, v); }
    case 3: { float f = floorf(v); return f + ((v - f >= 0.5f) ? 1.0f : 0.0f); }
    case 4: return floorf(v);
    default: return truncf(v);
    }
}

RT_HD double rt_round_d(double v, int mode, double u) {
    switch (mode) {
    case 0: return rint(v);
    case 1: return floor(v + u);
    case 2: { double a = fabs(v); double f = floor(a); f = f + ((a - f >= 0.5) ? 1.0 : 0.0);
              return copysign(f, v); }
    case 3: { double f = floor(v); return f + ((v - f >= 0.5) ? 1.0 : 0.0); }
    case 4: return floor(v);
    default: return trunc(v);
    }
}

// -- the trimmers, one element each ----------------------------------------------------
// hi, lo: the float32 bounds trim.py computes; up = 2^fl, down = 2^-fl (exact doubles);
// truncate_fix: trim.py's fix for TRUNCATE with fl < 0 (a negative x whose scaled value
// underflowed to -0 still floors to -1, giving -2^-fl), set by the host exactly when
// trim.py applies it.
RT_HD float rt_fixed_point(float x, float hi, float lo, double up, double down, int mode,
                           int truncate_fix, double u) {
    float v = (x != x) ? hi : (x > hi ? hi : (x < lo ? lo : x));
    float s = (float)((double)v * up);
    float k = rt_round_f(s, mode, u);
    float r = (float)((double)k * down);
    if (truncate_fix && x < 0.0f && r == 0.0f) r = (float)(-down);
    return r;
}

// m mantissa bits (0..23), e exponent bits (1..8); maxval = minifloat_max(m, e) as a double.
RT_HD float rt_minifloat(float x, int m, int e, int mode, int saturate_after_rounding,
                         double maxval, double u) {
    rt_u32 bits = rt_float_bits(x);
    int negative = (int)(bits >> 31);
    int big_e = (int)((bits >> 23) & 0xFFu);
    double mant_in = (double)(bits & 0x7FFFFFu);
    int bias = (1 << (e - 1)) - 1;
    int max_exp = (1 << e) - 1;
    int ex = big_e - 127 + bias;
    double scaled = ldexp(mant_in, m - 23);                      // exact
    double mant = fabs(rt_round_d(negative ? -scaled : scaled, mode, u));
    if (ex > max_exp) { mant = (double)((1 << m) - 1); ex = max_exp; }
    double mag = ldexp(1.0 + ldexp(mant, -m), ex - bias);        // exact
    if (saturate_after_rounding) mag = fmin(mag, maxval);
    if (big_e == 0 || ex < 0) mag = 0.0;
    double out = (negative && mag != 0.0) ? -mag : mag;
    return (float)out;                                            // e = 8 may overflow to inf
}

// log2|x| in float32 with log2f, as the original's GPU kernel computes it (CUDA's log2f:
// <= 1 ulp; a host compile uses the C library's). Neither is correctly rounded, nor is
// NumPy's float32 log2 (the twin's): where log2 lies within an ulp of a rounding
// boundary of R (e.g. 0.49999997 vs 0.5 for float32(sqrt 2)) the exponents may differ.
RT_HD float rt_log2_f(float a) { return log2f(a); }

RT_HD float rt_pow2(float x, float exp_min, float exp_max, int mode, double u) {
    float l = rt_log2_f(fabsf(x));
    float r = rt_round_f(l, mode, u);
    r = fmaxf(fminf(r, exp_max), exp_min);                       // NaN -> exp_max
    double sign = (x >= 0.0f) ? 1.0 : -1.0;                      // sign(0) = +1, NaN -> -1
    return (float)(sign * ldexp(1.0, (int)r));
}

// -- kernels (grid-stride loops over n elements) ------------------------------------------
#define RT_U(i) (mode == 1 ? (has_u ? u[i] : rt_uniform(seed, call, (i))) : 0.0)
#define RT_LOOP for (rt_u64 i = (rt_u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; \
                     i += (rt_u64)blockDim.x * gridDim.x)

extern "C" __global__ void rt_trim_fixed_point_f32(
        const float* x, float* y, rt_u64 n,
        float hi, float lo, double up, double down, int mode, int truncate_fix,
        const double* __restrict__ u, int has_u, rt_u64 seed, rt_u64 call) {
    RT_LOOP { y[i] = rt_fixed_point(x[i], hi, lo, up, down, mode, truncate_fix, RT_U(i)); }
}

extern "C" __global__ void rt_trim_minifloat_f32(
        const float* x, float* y, rt_u64 n,
        int m, int e, int mode, int saturate_after_rounding, double maxval,
        const double* __restrict__ u, int has_u, rt_u64 seed, rt_u64 call) {
    RT_LOOP { y[i] = rt_minifloat(x[i], m, e, mode, saturate_after_rounding, maxval, RT_U(i)); }
}

extern "C" __global__ void rt_trim_pow2_f32(
        const float* x, float* y, rt_u64 n,
        float exp_min, float exp_max, int mode,
        const double* __restrict__ u, int has_u, rt_u64 seed, rt_u64 call) {
    RT_LOOP { y[i] = rt_pow2(x[i], exp_min, exp_max, mode, RT_U(i)); }
}

// The draws themselves (tests compare them with counter_rng.py's).
extern "C" __global__ void rt_uniform_f64(double* __restrict__ y, rt_u64 n, rt_u64 seed, rt_u64 call) {
    RT_LOOP { y[i] = rt_uniform(seed, call, i); }
}
