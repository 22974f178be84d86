#!/usr/bin/env bash
# Builds farsight with the CUDA backend, runs the GPU test suite (with benchmarks), runs a reduced
# suite under compute-sanitizer memcheck, and prints a summary at the very end.
#
#   tools/gpu_run.sh                 # from the repository root, on a machine with a GPU
#   BUILD_DIR=build SKIP_BUILD=1 tools/gpu_run.sh   # reuse an existing build
#   TEST_BIN=path/to/test_gpu SKIP_BUILD=1 ...      # run a prebuilt test binary
#
# Logs go to $OUT (if set) or $BUILD_DIR/gpu_logs. Env: FILTER (gtest filter for the full run),
# SANITIZER_FILTER (for memcheck), JOBS.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
LOG_DIR=${OUT:-$BUILD_DIR/gpu_logs}
mkdir -p "$LOG_DIR"
JOBS=${JOBS:-$(nproc)}
FILTER=${FILTER:-*}
SANITIZER_FILTER=${SANITIZER_FILTER:-Dtypes/CudaOps.*:CudaLinear.*:CudaBackendApi.*:Cases/CudaAttention.*:CudaGraphs.*}
TEST_BIN=${TEST_BIN:-$BUILD_DIR/tests/test_gpu}
summary=()
overall=0

phase() {  # phase NAME LOGFILE CMD...: runs CMD, logs, records time and status
    local name=$1 log=$2
    shift 2
    local t0=$SECONDS rc=0
    echo "=== $name: $*" >&2
    "$@" >"$log" 2>&1 || rc=$?
    local dt=$((SECONDS - t0))
    summary+=("$(printf '%-24s rc=%-3s %5ss  log: %s' "$name" "$rc" "$dt" "$log")")
    if [ "$rc" -ne 0 ]; then overall=1; fi
    return 0
}

if [ "${SKIP_BUILD:-0}" != "1" ]; then
    phase configure "$LOG_DIR/configure.log" \
        cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFARSIGHT_CUDA=ON \
        "-DCMAKE_CUDA_ARCHITECTURES=90a-real;90-real"
    if ! grep -q "CUDA backend ON" "$LOG_DIR/configure.log"; then
        echo "configure did not enable CUDA (nvcc missing? Debian -dev packages missing? run scripts/setup):" >&2
        tail -20 "$LOG_DIR/configure.log" >&2
        overall=1
    fi
    phase build "$LOG_DIR/build.log" cmake --build "$BUILD_DIR" --target test_gpu -j"$JOBS"
fi

if [ -x "$TEST_BIN" ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
        >"$LOG_DIR/device.txt" 2>&1 || true
    phase tests "$LOG_DIR/test_gpu.log" \
        env FARSIGHT_GPU_BENCH=1 "$TEST_BIN" --gtest_filter="$FILTER" --gtest_color=no
    if command -v compute-sanitizer >/dev/null; then
        phase memcheck "$LOG_DIR/memcheck.log" \
            env FARSIGHT_GPU_TEST_SMALL=1 compute-sanitizer --tool memcheck --error-exitcode 97 --leak-check no \
            "$TEST_BIN" --gtest_filter="$SANITIZER_FILTER" --gtest_color=no
    else
        summary+=("memcheck                 skipped: compute-sanitizer not on PATH")
    fi
else
    summary+=("tests                    not run: $TEST_BIN missing (build failed?)")
    overall=1
    [ -f "$LOG_DIR/build.log" ] && grep -m20 -E "error|FAILED" "$LOG_DIR/build.log" >&2 || true
fi

# ---------------------------------------------------------------- summary (kept short)
echo
echo "================ farsight GPU run summary ================"
[ -f "$LOG_DIR/device.txt" ] && echo "device: $(head -1 "$LOG_DIR/device.txt")"
for s in "${summary[@]}"; do echo "$s"; done
for f in test_gpu memcheck; do
    log="$LOG_DIR/$f.log"
    [ -f "$log" ] || continue
    echo "--- $f"
    grep -E "^\[  (PASSED|FAILED|SKIPPED) *\]|tests? ran" "$log" |
        grep -vE "^\[  (SKIPPED|FAILED) *\] [A-Z]" | head -5 || true
    grep -E "^\[  FAILED  \] [A-Za-z]" "$log" | sort -u | cut -c1-160 | head -25 || true
    grep -A3 ": Failure" "$log" | cut -c1-200 | head -48 || true
    grep -E "ERROR SUMMARY|Invalid|out of bounds" "$log" | head -10 || true
done
if [ -f "$LOG_DIR/test_gpu.log" ] && grep -q "^\[  PASSED  \] 0 tests" "$LOG_DIR/test_gpu.log"; then
    echo "no GPU test ran (no CUDA device visible?)"
    overall=1
fi
if [ -f "$LOG_DIR/test_gpu.log" ]; then
    echo "--- benchmarks"
    grep -E "^BENCH" "$LOG_DIR/test_gpu.log" || echo "(none)"
fi
echo "overall: $([ $overall -eq 0 ] && echo OK || echo FAILED)"
exit $overall
