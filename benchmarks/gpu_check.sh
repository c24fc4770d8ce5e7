#!/usr/bin/env bash
# The GPU check of issue #13, for a session with a CUDA machine (about 10 of its 15 device
# minutes; one `run` call of at most 600 s). Run from the repository root:
#
#   bash benchmarks/gpu_check.sh WHEEL_DIR [TOTAL_SECONDS]
#
# The machine has CuPy, PyTorch, ONNX Runtime and OpenCV but not lmdb (nor, maybe,
# pytest-xdist / hypothesis / qonnx). Before the run, on the session's own machine:
#   pip download lmdb pytest pytest-xdist hypothesis -d wheels/ --only-binary=:all: \
#       --python-version <the GPU machine's python> --platform manylinux2014_x86_64
# and carry wheels/ with the run (carry: ["wheels"]). Everything goes under $OUT
# (stages.log, one log per stage, gpu.jsonl); each stage has its own timeout and the
# results of a stage are flushed as they come, so a late timeout loses only the rest.
set -u
WHEELS=${1:-wheels}
TOTAL=${2:-570}
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
START=$(date +%s)

left() { echo $(( TOTAL - ($(date +%s) - START) )); }

stage() {  # stage NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    local rest; rest=$(left)
    if [ "$rest" -lt 20 ]; then echo "$name: skipped (no time left)" | tee -a "$OUT/stages.log"; return; fi
    [ "$limit" -gt "$rest" ] && limit=$rest
    echo "== $name (limit ${limit}s)" | tee -a "$OUT/stages.log"
    local t0; t0=$(date +%s)
    timeout -k 5 "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name: rc=$rc in $(( $(date +%s) - t0 ))s" | tee -a "$OUT/stages.log"
    tail -n 15 "$OUT/$name.log"
}

stage install 90 bash -c "pip install -q --no-index --find-links '$WHEELS' lmdb pytest pytest-xdist hypothesis; \
    pip install -q --no-deps --no-build-isolation -e . && python -c 'import ristretto_cli, cupy, lmdb; print(cupy.__version__)'"
stage device 30 bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; ristretto device_query"
# the kernels first (fused trims against their twin, every rounding; goldens on the GPU), then the benchmark,
# then the whole suite with what time is left
stage tests_kernels 150 env RISTRETTO_TEST_GPU=1 python -m pytest -x -q -p no:cacheprovider \
    tests/test_kernels.py tests/test_golden.py tests/test_formats.py tests/test_ristretto_layers.py
stage bench 200 python -m benchmarks.gpu --out "$OUT/gpu.jsonl"
stage tests_all 600 env RISTRETTO_TEST_GPU=1 python -m pytest -x -q -p no:cacheprovider -n 8 tests
echo "done in $(( $(date +%s) - START ))s; results in $OUT" | tee -a "$OUT/stages.log"
