// Runs the element functions of kernels/trim.cu on the CPU (nvcc host compile), so the
// tests can compare the kernels' arithmetic with trim.py without a GPU.
// usage: harness KIND IN OUT ARGS...   (IN/OUT: raw float32 files; uniform: OUT float64)
//   fixed    hi_bits lo_bits up down mode truncate_fix seed call
//   minifloat m e mode saturate_after_rounding maxval seed call
//   pow2     exp_min exp_max mode seed call
//   uniform  n seed call
// Doubles are given as C hex floats (%a), float bounds as their bit patterns, STOCHASTIC
// draws come from rt_uniform(seed, call, i) as in the kernels.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>
#include "trim.cu"

static float bits_float(const char* s) { unsigned b = (unsigned)strtoul(s, 0, 0); float f; memcpy(&f, &b, 4); return f; }
static unsigned long long u64(const char* s) { return strtoull(s, 0, 0); }

int main(int argc, char** argv) {
    if (argc < 4) return 2;
    const char* kind = argv[1];
    if (!strcmp(kind, "uniform")) {
        unsigned long long n = u64(argv[4]), seed = u64(argv[5]), call = u64(argv[6]);
        std::vector<double> y(n);
        for (unsigned long long i = 0; i < n; ++i) y[i] = rt_uniform(seed, call, i);
        FILE* f = fopen(argv[3], "wb"); fwrite(y.data(), 8, n, f); fclose(f);
        return 0;
    }
    FILE* f = fopen(argv[2], "rb");
    std::vector<float> x;
    float v;
    while (fread(&v, 4, 1, f) == 1) x.push_back(v);
    fclose(f);
    std::vector<float> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
        if (!strcmp(kind, "fixed")) {
            int mode = atoi(argv[8]);
            double u = mode == 1 ? rt_uniform(u64(argv[10]), u64(argv[11]), i) : 0.0;
            y[i] = rt_fixed_point(x[i], bits_float(argv[4]), bits_float(argv[5]), strtod(argv[6], 0),
                                  strtod(argv[7], 0), mode, atoi(argv[9]), u);
        } else if (!strcmp(kind, "minifloat")) {
            int mode = atoi(argv[6]);
            double u = mode == 1 ? rt_uniform(u64(argv[9]), u64(argv[10]), i) : 0.0;
            y[i] = rt_minifloat(x[i], atoi(argv[4]), atoi(argv[5]), mode, atoi(argv[7]), strtod(argv[8], 0), u);
        } else if (!strcmp(kind, "pow2")) {
            int mode = atoi(argv[6]);
            double u = mode == 1 ? rt_uniform(u64(argv[7]), u64(argv[8]), i) : 0.0;
            y[i] = rt_pow2(x[i], (float)atof(argv[4]), (float)atof(argv[5]), mode, u);
        } else {
            return 2;
        }
    }
    f = fopen(argv[3], "wb"); fwrite(y.data(), 4, y.size(), f); fclose(f);
    return 0;
}
