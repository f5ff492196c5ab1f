#!/usr/bin/env bash
# Every GPU check in one go, in at most ~10 minutes on one GPU, with its logs and a results table in one
# folder. A failed or timed-out step is recorded and the script goes on to the next.
#   1. the CUDA tests (CUDA-event timing, bf16 runs, CUDA peak memory, GPU roofline rates, grouped
#      attention, compiled decoding with CUDA graphs equal to eager);
#   2. the decode benchmark at T5-XXL's shape in bf16, weights initialised on the GPU: MHA, GQA-8 and MQA,
#      source 2048, batch 64 (32 if 64 does not fit), compiled step with CUDA graphs, then eager;
#   3. the grouped-attention kernel candidates at XXL's decode shape (benchmarks/decode_kernels.py);
#   4. a short bf16 sweep MHA / GQA-4 / MQA on cnn_dm with hydra/launcher=joblib (one job per GPU);
#   5. results.md: each step's status and time, the benchmark tables and the sweep's table.
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]      (default outputs/gpu_check)
# Budget: 590 s in all (GPU_CHECK_BUDGET_S): tests 120 s, XXL compiled 220 s (compile and CUDA-graph
# capture included: the benchmark's warm-up column), XXL eager 80 s, attention kernels 60 s, sweep 90 s,
# summary 20 s; a step never runs past what is left.
set -uo pipefail
out=${1:-outputs/gpu_check}
mkdir -p "$out"
log="$out/log.txt"
results="$out/results.md"
: >"$log"
if command -v gqa-eval >/dev/null; then gqa=(gqa-eval); summary=(gqa-eval-summary)
else gqa=(python -m gqa_eval.cli); summary=(python -m gqa_eval.report.summary); fi
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1
status=()
failed=0

budget=${GPU_CHECK_BUDGET_S:-590}  # the whole script, every step's limit included
# step NAME LIMIT_S COMMAND...: run it with a time limit (never past the script's budget), log it to
# NAME.log and log.txt, record its status.
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((budget - SECONDS))
    [ "$limit" -gt "$left" ] && limit=$left
    if [ "$limit" -lt 10 ]; then status+=("| $name | skipped: budget spent | 0 s |"); failed=1; return 1; fi
    local start=$SECONDS
    echo "+ [$name] $*" | tee -a "$log"
    timeout --signal=INT --kill-after=15 "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    cat "$out/$name.log" >>"$log"
    local verdict=ok
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then verdict="timed out after ${limit}s"; failed=1
    elif [ $rc -ne 0 ]; then verdict="FAILED (exit $rc)"; failed=1; fi
    status+=("| $name | $verdict | $((SECONDS - start)) s |")
    echo "  [$name] $verdict in $((SECONDS - start)) s" | tee -a "$log"
    return $rc
}
# out of memory in NAME.log: the batch did not fit
oom() { grep -qiE "out of memory|OutOfMemoryError" "$out/$1.log"; }

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
} 2>&1 | tee -a "$log"

step cuda_tests 120 python -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py

xxl=(python benchmarks/decode_speed.py --shape t5-xxl --device cuda --dtype bfloat16 --source 2048 --new 64
     --kv-heads 8,1 --repeats 3 --encoder-batch 4)
step xxl_compiled 220 "${xxl[@]}" --batch 64 --compile true \
    || { oom xxl_compiled && step xxl_compiled_b32 200 "${xxl[@]}" --batch 32 --compile true; }
step xxl_eager 80 "${xxl[@]}" --batch 64 --compile false \
    || { oom xxl_eager && step xxl_eager_b32 80 "${xxl[@]}" --batch 32 --compile false; }
# the grouped-attention candidates at XXL's decode shape (folded SDPA, SDPA enable_gqa, matmul, FlexAttention)
step kernels 60 python benchmarks/decode_kernels.py --shape t5-xxl --device cuda --dtype bfloat16 --batch 64 \
    --repeats 10

gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
step sweep 90 "${gqa[@]}" -m model=mha,gqa4,mqa task=cnn_dm limit=32 device=cuda dtype=bfloat16 \
    timing.mode=fixed progress=false hydra/launcher=joblib "hydra.launcher.n_jobs=$(( gpus > 0 ? gpus : 1 ))" \
    output_root="$out/sweep"
step summary 20 "${summary[@]}" "$out/sweep"

{
    echo "# gpu_check results"
    echo
    grep -m1 -A1 "^name" "$log" | tail -1 | sed 's/^/GPU: /'
    grep -m1 "^torch " "$log"
    echo
    echo "| step | status | time |"
    echo "| --- | --- | --- |"
    printf '%s\n' "${status[@]}"
    for name in xxl_compiled xxl_compiled_b32 xxl_eager xxl_eager_b32 kernels; do
        [ -f "$out/$name.log" ] || continue
        echo
        echo "## $name"
        echo
        echo '```'
        grep -v -E "^repeat |Warning|warn\(" "$out/$name.log" | tail -n 12
        echo '```'
    done
    table=$(find "$out/sweep" -name table.md 2>/dev/null | head -1)
    if [ -n "$table" ]; then echo; echo "## sweep"; echo; cat "$table"; fi
} >"$results"
echo "gpu_check: $([ $failed = 0 ] && echo all steps passed || echo SOME STEPS FAILED); see $results" | tee -a "$log"
exit $failed
