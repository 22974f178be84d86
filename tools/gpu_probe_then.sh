#!/usr/bin/env bash
# Runs the wgmma descriptor probe first, sets FARSIGHT_WGMMA_SWAP_K/V from what it found, then
# tools/gpu_session.sh with the given STEPS, plus short A/B benches (PDL off, fused ops off).
cd "$(dirname "$0")/.."
ROOT=$PWD
export LD_LIBRARY_PATH="$ROOT/.gpu/lib:${LD_LIBRARY_PATH:-}"
OUT=${OUT:-$ROOT/gpu_out}; mkdir -p "$OUT"
mkdir -p /work; [ -e /work/main ] || ln -s "$ROOT" /work/main
timeout 60 .gpu/bin/test_gpu --gtest_filter='CudaWgmma.*' > "$OUT/probe.log" 2>&1
grep -E "PROBE|OK|FAILED" "$OUT/probe.log" | head
grep -q "kmajor convention=B ok" "$OUT/probe.log" && export FARSIGHT_WGMMA_SWAP_K=1
grep -q "mnmajor convention=B ok" "$OUT/probe.log" && export FARSIGHT_WGMMA_SWAP_V=1
echo "swap K=${FARSIGHT_WGMMA_SWAP_K:-0} V=${FARSIGHT_WGMMA_SWAP_V:-0}"
tools/gpu_session.sh
for v in PDL FUSED; do
  env FARSIGHT_$v=0 timeout 120 .gpu/bin/farsight bench --device cuda --dummy llama2-7b --decode 32 \
    --prefill-lens 512 --decode-ctx 128 --decode-batches 8 --batch-ctx 1024 --kv-tokens 20000 2>&1 | grep -E "^decode|^prefill" | sed "s/^/[$v=0] /"
done
