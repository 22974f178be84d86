#!/usr/bin/env bash
# One lent-GPU session in one call: runs binaries built on the dev machine (tools/gpu_pack.sh
# puts them in .gpu/), the GPU test suite, compute-sanitizer on a reduced suite, and
# `farsight bench` runs, writing logs and JSON to $OUT.
#   STEPS="tests memcheck bench7b" tools/gpu_session.sh
# Other steps: bench7b_eager (FARSIGHT_CUDA_GRAPHS=0), bench8b (llama3-8b at 128K), bench8b_batch
# (llama3-8b batch 32 vs 1), profile / profile_prefill (ncu per-kernel durations), serve8b, fixtures,
# ablate (FARSIGHT_SKIP_OPS per op), ncu_attn / ncu_gqa (full ncu sections of one attention launch),
# ws / ws_memcheck / bench7b_ws (the warp-specialized prefill, FARSIGHT_PREFILL=ws).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu_out}
mkdir -p "$OUT"
STEPS=${STEPS:-"tests memcheck bench7b"}
# The test binaries carry the dev machine's paths (/work/main, /work/shared): recreate them.
mkdir -p /work
[ -e /work/main ] || ln -s "$ROOT" /work/main
[ -e /work/shared ] || ln -s "$ROOT/.gpu/shared" /work/shared
# FARSIGHT_SHARED_DIR is /work/main/../shared, and ".." after the /work/main link is the repo's parent
[ -e "$ROOT/../shared" ] || ln -s "$ROOT/.gpu/shared" "$ROOT/../shared"
export LD_LIBRARY_PATH="$ROOT/.gpu/lib:${LD_LIBRARY_PATH:-}"
BIN=$ROOT/.gpu/bin
for z in "$BIN"/*.xz; do [ -f "$z" ] && xz -d -f "$z"; done  # packed to fit the carry limit
[ -f "$ROOT/.gpu/shared_text.tar.xz" ] && [ ! -d "$ROOT/.gpu/shared/tokenizers/llama3" ] && tar -C "$ROOT/.gpu/shared" -xJf "$ROOT/.gpu/shared_text.tar.xz"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader
COMMIT=$(cat "$ROOT/.gpu/commit" 2>/dev/null || echo unknown)
summary=()
run() {  # run NAME TIMEOUT CMD...
    local name=$1 to=$2; shift 2
    local t0=$SECONDS rc=0
    timeout "$to" "$@" >"$OUT/$name.log" 2>&1 || rc=$?
    summary+=("$(printf '%-12s rc=%-4s %4ss' "$name" "$rc" "$((SECONDS - t0))")")
}
ab_runs() {  # ab_runs LOG GREP-PATTERN "SPECS" BENCH-ARGS...
    local log=$1 pat=$2 specs=$3; shift 3
    for rep in 1 2; do for spec in $specs; do
        echo "== $spec" >> "$OUT/$log.log"
        env $([ "$spec" = none ] || echo "$spec" | tr ',' ' ') timeout 150 "$BIN/farsight" bench --device cuda \
            --bw-mb 256 "$@" 2>&1 | grep -E "$pat" >> "$OUT/$log.log"
    done; done
    summary+=("$log done")
}
for s in $STEPS; do
  case $s in
    tests_nobench) run test_gpu 300 "$BIN/test_gpu" --gtest_color=no ;;  # correctness only (bench tests skip)
    tests) run test_gpu 420 env FARSIGHT_GPU_BENCH=1 "$BIN/test_gpu" --gtest_color=no ;;
    memcheck) run memcheck 200 env FARSIGHT_GPU_TEST_SMALL=1 compute-sanitizer --tool memcheck --error-exitcode 97 --leak-check no \
        "$BIN/test_gpu" --gtest_color=no --gtest_filter='Dtypes/CudaOps.*:CudaLinear.*:CudaBackendApi.*:Cases/CudaAttention.*:GpuModel.Stories*:CudaGraphs.*:*DecodeFused*:*RopeStore*:*LinearSilu*:CudaWgmma.WsTmaProbe:CudaAttentionTc.*:CudaSampling.*' ;;
    # the warp-specialized prefill (attention_ws.cu): its probe, its reference tests, the
    # attention bench (prints default / v2 / ws), memcheck of the same tests on short sequences,
    # and the 7B bench with FARSIGHT_PREFILL=ws (hangs show up as rc=124)
    ws) run test_ws 150 env FARSIGHT_GPU_BENCH=1 "$BIN/test_gpu" --gtest_color=no \
        --gtest_filter='CudaWgmma.*:CudaAttentionWs.*:CudaBench.Attention' ;;
    ws_memcheck) run memcheck_ws 200 env FARSIGHT_GPU_TEST_SMALL=1 FARSIGHT_PREFILL=ws compute-sanitizer --tool memcheck \
        --error-exitcode 97 --leak-check no "$BIN/test_gpu" --gtest_color=no \
        --gtest_filter='CudaWgmma.WsTmaProbe:CudaAttentionWs.*:Cases/CudaAttention.*' ;;
    bench7b_ws) run bench_llama2-7b_ws 330 env FARSIGHT_PREFILL=ws "$BIN/farsight" bench --device cuda --dummy llama2-7b \
        --decode 32 --kv-tokens 70000 --commit "$COMMIT" --json "$OUT/bench_llama2-7b_ws.json" ;;
    bench7b) run bench_llama2-7b 330 "$BIN/farsight" bench --device cuda --dummy llama2-7b --decode 32 --kv-tokens 70000 \
        --commit "$COMMIT" --json "$OUT/bench_llama2-7b.json" ;;
    # the same 7B bench without recorded decode steps (what CUDA graphs buy)
    bench7b_eager) run bench_llama2-7b_eager 330 env FARSIGHT_CUDA_GRAPHS=0 "$BIN/farsight" bench --device cuda --dummy llama2-7b \
        --decode 32 --kv-tokens 70000 --prefill-lens 512 --commit "$COMMIT" --json "$OUT/bench_llama2-7b_eager.json" ;;
    bench8b) run bench_llama3-8b_128k 400 "$BIN/farsight" bench --device cuda --dummy llama3-8b --decode 16 \
        --prefill-lens 131072 --decode-ctx 131072 --decode-batches 1 --max-model-len 131200 --kv-tokens 131328 \
        --commit "$COMMIT" --json "$OUT/bench_llama3-8b_128k.json" ;;
    profile)  # per-kernel durations (ncu, clocks left alone) of decode steps: b1 ctx 128 and 32K, b32 ctx 1K
      run profile 420 ncu --clock-control none --csv --metrics gpu__time_duration.sum,dram__bytes_read.sum \
        --log-file "$OUT/ncu_decode.csv" "$BIN/farsight" bench --device cuda --dummy llama2-7b --decode 2 \
        --prefill-lens 16 --decode-ctx 128 32768 --decode-batches 32 --batch-ctx 1024 --kv-tokens 70000 ;;
    profile_prefill)  # per-kernel durations of an 8K-token prefill
      run profile_prefill 300 ncu --clock-control none --csv --metrics gpu__time_duration.sum \
        --log-file "$OUT/ncu_prefill.csv" "$BIN/farsight" bench --device cuda --dummy llama2-7b --decode 1 \
        --prefill-lens 8192 --decode-ctx 128 --decode-batches 1 --kv-tokens 20000 ;;
    benchlinear) run benchlinear 200 env FARSIGHT_GPU_BENCH=1 "$BIN/test_gpu" --gtest_color=no --gtest_filter='CudaBench.DecodeLinear:CudaBench.Roofline*:CudaBench.Attention' ;;
    ablate)  # what each op costs inside the real (graph + PDL) batch-1 decode step: skip it, time the step
      # (ABLATE_MODEL / ABLATE_BATCH / ABLATE_CTX: e.g. llama3-8b, 32, 1024 for the batch-32 step)
      for sk in ${ABLATE:-none norm rope kv attn silu rope,kv,attn,norm,silu linear}; do
        echo "== FARSIGHT_SKIP_OPS=$sk" >> "$OUT/ablate.log"
        env FARSIGHT_SKIP_OPS=$([ $sk = none ] || echo $sk) "$BIN/farsight" bench --device cuda --dummy ${ABLATE_MODEL:-llama2-7b} \
          --decode 64 --prefill-lens 16 --decode-ctx 128 --decode-batches ${ABLATE_BATCH:-1} --batch-ctx ${ABLATE_CTX:-128} \
          --kv-tokens 60000 --bw-mb 256 2>&1 | grep -E "^device|decode batch|rror" >> "$OUT/ablate.log"
      done
      summary+=("ablate done") ;;
    # A/B of environment settings: each spec (comma-separated VAR=value, or none) runs the same
    # bench twice, interleaved with the others
    prefill_ab)  # llama2-7b prefill (8K, 32K); PREFILL_AB="none FARSIGHT_PREFILL=sm90"
      ab_runs prefill_ab "^device|prefill|rror" "${PREFILL_AB:-none}" --dummy llama2-7b --decode 4 \
        --prefill-lens ${PREFILL_LENS:-8192 32768} --decode-ctx 128 --decode-batches 1 --batch-ctx 128 --kv-tokens 34000 ;;
    ab8b)  # llama3-8b decode at ctx 1K, batch 1 and 32 (AB8B_BATCHES: other batch sizes)
      ab_runs ab8b "^device|decode batch|rror" "${AB8B:-none}" --dummy llama3-8b --decode 32 --prefill-lens 16 \
        --decode-ctx 1024 --decode-batches ${AB8B_BATCHES:-32} --batch-ctx 1024 --kv-tokens 40000 ;;
    ab)  # batch-1 decode (llama2-7b, ctx 128 and 32K); AB="none FARSIGHT_DECODE_MIN_PART=64"
      ab_runs ab "^device|decode batch" "${AB:-none}" --dummy llama2-7b --decode 64 --prefill-lens 16 \
        --decode-ctx ${AB_CTX:-128 32768} --decode-batches 1 --batch-ctx 128 --kv-tokens 34000 ;;
    ncu_attn)  # full ncu sections of one sm90 prefill attention launch (8K prompt, llama2-7b)
      run ncu_attn 300 ncu --set full --kernel-name regex:prefill_sm90 --launch-skip 3 --launch-count 1 \
        -o "$OUT/ncu_attn" "$BIN/farsight" bench --device cuda --dummy llama2-7b --decode 1 \
        --prefill-lens 8192 --decode-ctx 128 --decode-batches 1 --kv-tokens 20000 --bw-mb 256
      ncu --import "$OUT/ncu_attn.ncu-rep" --print-details all > "$OUT/ncu_attn.txt" 2>&1 ;;
    ncu_gqa)  # full ncu sections of one GQA decode attention launch (llama3-8b, batch 32, ctx 1K)
      # (the tensor-core kernel: FARSIGHT_DECODE=tc NCU_GQA_KERNEL=decode_tc_kernel)
      run ncu_gqa 300 env FARSIGHT_CUDA_GRAPHS=0 ncu --set full --kernel-name regex:${NCU_GQA_KERNEL:-decode_kernel} --launch-skip 200 --launch-count 1 \
        -o "$OUT/ncu_gqa" "$BIN/farsight" bench --device cuda --dummy llama3-8b --decode 2 \
        --prefill-lens 16 --decode-ctx 128 --decode-batches 32 --batch-ctx 1024 --kv-tokens 40000 --bw-mb 256
      ncu --import "$OUT/ncu_gqa.ncu-rep" --print-details all > "$OUT/ncu_gqa.txt" 2>&1 ;;
    bench8b_batch)  # GQA (llama3-8b shape): batch 32 vs batch 1 (the batch-32 >= 20x target)
      run bench_llama3-8b_batch 300 "$BIN/farsight" bench --device cuda --dummy llama3-8b --decode 32 \
        --prefill-lens 512 --decode-ctx 128 1024 --decode-batches 32 --batch-ctx 1024 --kv-tokens 40000 \
        --commit "$COMMIT" --json "$OUT/bench_llama3-8b_batch.json" ;;
    serve8b)  # issue 5: 1,000 ShareGPT-like requests against the Llama-3-8B shape in bf16
      "$BIN/farsight" serve --device cuda --dummy llama3-8b --tokenizer "$ROOT/.gpu/shared/tokenizers/llama3" \
          --port 8123 --max-num-seqs 128 --max-model-len 4096 --kv-tokens 400000 --served-model-name llama3-8b \
          >/tmp/serve8b_server.log 2>&1 &
      SPID=$!
      for i in $(seq 1 120); do curl -sf http://127.0.0.1:8123/health >/dev/null 2>&1 && break; sleep 1; done
      run serve8b 420 python3 tools/serve_bench.py --url http://127.0.0.1:8123 --model llama3-8b --n 1000 \
          --concurrency 64 --label "llama3-8b bf16 dummy, commit $COMMIT" --out "$OUT/serve_llama3-8b.json"
      curl -s http://127.0.0.1:8123/metrics > /tmp/serve8b_metrics.txt 2>&1
      grep -E "^farsight_(requests|prompt_tokens|generation_tokens|kv_blocks|prefix)" /tmp/serve8b_metrics.txt | head -20 >> "$OUT/serve8b.log"
      tail -5 /tmp/serve8b_server.log >> "$OUT/serve8b.log"
      kill -TERM $SPID; wait $SPID ;;
    fixtures)  # regenerate the tokenizer/template fixtures with this machine's transformers and compare
      cp tests/fixtures/tokenizer/hf_corpus.json "$OUT/hf_corpus.committed.json"
      cp tests/fixtures/template/hf_renders.json "$OUT/hf_renders.committed.json"
      run tok_fixtures 120 env HF_HUB_OFFLINE=1 python3 tools/make_tokenizer_fixtures.py
      run tpl_fixtures 120 env HF_HUB_OFFLINE=1 python3 tools/make_template_fixtures.py
      run fixture_diff 60 python3 tools/compare_fixtures.py "$OUT/hf_corpus.committed.json" tests/fixtures/tokenizer/hf_corpus.json \
          "$OUT/hf_renders.committed.json" tests/fixtures/template/hf_renders.json ;;
  esac
done
echo "==== summary"; printf '%s\n' "${summary[@]}"
for f in "$OUT"/fixture_diff.log "$OUT"/tok_fixtures.log "$OUT"/tpl_fixtures.log; do [ -f "$f" ] && { echo "== $(basename "$f")"; tail -5 "$f"; }; done
for f in "$OUT"/test_gpu.log "$OUT"/memcheck.log "$OUT"/benchlinear.log "$OUT"/test_ws.log "$OUT"/memcheck_ws.log; do [ -f "$f" ] && { echo "== $(basename "$f")"; grep -E "^\[figure\]|BENCH|^PROBE|^WS |FAILED|PASSED|ERROR SUMMARY|Failure" "$f" | head -60; }; done
[ -f "$OUT/serve8b.log" ] && { echo "== serve8b"; tail -25 "$OUT/serve8b.log"; }
for f in "$OUT"/ab.log "$OUT"/ab8b.log "$OUT"/ablate.log "$OUT"/prefill_ab.log; do [ -f "$f" ] && { echo "== $(basename "$f")"; cat "$f"; }; done
for f in "$OUT"/bench_*.log; do [ -f "$f" ] && { echo "== $(basename "$f")"; grep -v "loading weights" "$f" | tail -25; }; done
