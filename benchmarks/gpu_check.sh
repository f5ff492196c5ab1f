#!/usr/bin/env bash
# The CUDA paths checked in one go, on a machine with a GPU (CPU-only machines skip these tests):
#   1. the CUDA tests (CUDA-event timing, bf16, CUDA peak memory, GPU roofline rates, grouped attention);
#   2. a bf16 sweep MHA / GQA-4 / GQA-2 / MQA on cnn_dm in fixed-work mode, with its summary table;
#   3. repeatability: the same run three times (timing.repeats=3), on the GPU and on 2 CPU threads;
#   4. the interleaved decode benchmark on the GPU (bf16 and float32).
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]   (default outputs/gpu_check; everything is logged to log.txt)
set -uo pipefail
out=${1:-outputs/gpu_check}
mkdir -p "$out"
log="$out/log.txt"
: >"$log"
# console scripts where installed, else the modules (a machine where the package is only on PYTHONPATH)
if command -v gqa-eval >/dev/null; then gqa=(gqa-eval); summary=(gqa-eval-summary)
else gqa=(python -m gqa_eval.cli); summary=(python -m gqa_eval.report.summary); fi
failed=0
step() {
    echo "+ $*" | tee -a "$log"
    "$@" 2>&1 | tee -a "$log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || { failed=1; echo "FAILED: $*" | tee -a "$log"; }
}
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$log"
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$log"

step python -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py tests/test_timing.py
step "${gqa[@]}" -m model=mha,gqa4,gqa2,mqa task=cnn_dm device=cuda dtype=bfloat16 timing.mode=fixed \
    progress=false output_root="$out/sweep"
step "${summary[@]}" "$out/sweep"
for device in cuda cpu; do
    for i in 1 2 3; do
        OMP_NUM_THREADS=2 step "${gqa[@]}" model=gqa4 task=cnn_dm device=$device timing.mode=fixed timing.repeats=3 \
            progress=false output_root="$out/repeat_$device$i"
    done
done
python - "$out" <<'PY' | tee -a "$log"
import json, pathlib, sys
for device in ("cuda", "cpu"):
    times = [json.loads(p.read_text())["time_per_sample_s"]
             for i in (1, 2, 3) for p in pathlib.Path(sys.argv[1], f"repeat_{device}{i}").rglob("result.json")]
    if times:
        spread = (max(times) - min(times)) / min(times)
        print(f"repeatability {device}: time per sample {', '.join(f'{t:.5f}' for t in times)} s; "
              f"range {100 * spread:.1f}% of the fastest")
PY
step python benchmarks/decode_speed.py --device cuda --dtype bfloat16 --repeats 5
step python benchmarks/decode_speed.py --device cuda --dtype float32 --repeats 5
echo "gpu_check: $([ $failed = 0 ] && echo all steps passed || echo SOME STEPS FAILED)" | tee -a "$log"
exit $failed
