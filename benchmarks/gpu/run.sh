#!/usr/bin/env bash
# The GPU check of rtseg in one command (at most ~10 minutes on one H200); see benchmarks/gpu/README.md.
#
#   benchmarks/gpu/run.sh              # on the GPU machine: results in $OUT (default ./gpu-results)
#   benchmarks/gpu/run.sh --dry-run    # anywhere: CPU, two models, tiny size, CUDA steps skipped (CI runs this)
#
# Steps, each under its own time limit inside the total budget (RTSEG_GPU_BUDGET_S, default 570 s):
#   1. environment: GPU, driver, torch, CUDA, cuDNN, NCCL -> $OUT/env.txt
#   2. the tests marked gpu (AMP + GradScaler training, fp16/bf16 inference, CUDA graphs, torch.compile,
#      one-process NCCL DDP with SyncBatchNorm) -> $OUT/gpu_tests.log, $OUT/gpu_tests.xml
#   3. hook: benchmarks/gpu/train_zoo.sh OUT BUDGET_S, if that file exists (RTSEG_TRAIN_BUDGET_S, default 0 = skip)
#   4. rtseg bench per model at 512x1024 and 1024x2048, batch 1: fp32, fp16, compiled + CUDA graphs (fp16)
#      -> $OUT/gpu_bench.json, $OUT/gpu_bench.md (written after every run; what is left when time runs out is kept)
set -uo pipefail

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${OUT:-${1:-$REPO/gpu-results}}"
PY="${PYTHON:-python3}"
BUDGET="${RTSEG_GPU_BUDGET_S:-570}"
TEST_BUDGET="${RTSEG_GPU_TEST_BUDGET_S:-200}"
TRAIN_BUDGET="${RTSEG_TRAIN_BUDGET_S:-0}"
START=$(date +%s)
mkdir -p "$OUT"
cd "$REPO"
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
log() { echo "[run.sh $(( $(date +%s) - START ))s] $*"; }
status=0

# 1. environment ----------------------------------------------------------------------------------
{
  echo "date: $(date -u +%FT%TZ)"; echo "dry run: $DRY"; echo "repo: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  "$PY" - <<'PY'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0), "cudnn", torch.backends.cudnn.version(),
          "nccl", torch.cuda.nccl.version(), "tf32 conv", torch.backends.cudnn.allow_tf32, "tf32 matmul", torch.backends.cuda.matmul.allow_tf32)
PY
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
if [[ $DRY == 0 ]] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "CUDA is not available here; run with --dry-run for the CPU check" >&2
  exit 2
fi
# rtseg from this tree (no network there: no dependencies, no build isolation); PYTHONPATH covers a failed install
if [[ $DRY == 0 ]]; then
  "$PY" -m pip install -q --no-deps --no-build-isolation -e "$REPO" >"$OUT/pip.log" 2>&1 || log "pip install -e failed (see pip.log); using PYTHONPATH"
fi

# 2. GPU tests -----------------------------------------------------------------------------------
if [[ $DRY == 0 ]]; then
  log "GPU tests (limit ${TEST_BUDGET}s)"
  timeout "$TEST_BUDGET" "$PY" -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -rs --junitxml="$OUT/gpu_tests.xml" \
    2>&1 | tee "$OUT/gpu_tests.log" | tail -30
  rc=${PIPESTATUS[0]}; [[ $rc != 0 ]] && { log "GPU tests: exit $rc"; status=1; }
else
  log "dry run: GPU tests skipped"
fi

# 3. training hook -------------------------------------------------------------------------------
if [[ -f benchmarks/gpu/train_zoo.sh && $TRAIN_BUDGET -gt 0 && $DRY == 0 ]]; then
  budget=$(( TRAIN_BUDGET < $(left) - 60 ? TRAIN_BUDGET : $(left) - 60 ))
  if (( budget > 0 )); then
    log "training hook: benchmarks/gpu/train_zoo.sh (limit ${budget}s)"
    RTSEG_TRAIN_BUDGET_S=$budget timeout "$budget" bash benchmarks/gpu/train_zoo.sh "$OUT" "$budget" 2>&1 | tee "$OUT/train_zoo.log" | tail -20
    rc=${PIPESTATUS[0]}; [[ $rc != 0 ]] && { log "training hook: exit $rc"; status=1; }
  fi
else
  log "training hook: skipped (benchmarks/gpu/train_zoo.sh absent, RTSEG_TRAIN_BUDGET_S=0 or dry run)"
fi

# 4. benchmark -----------------------------------------------------------------------------------
remaining=$(left)
log "benchmark (${remaining}s left)"
if [[ $DRY == 1 ]]; then
  "$PY" benchmarks/gpu/bench_gpu.py --out "$OUT" --dry-run || status=1
else
  # stop starting runs 20 s before the budget ends; the hard limit leaves the JSON of the finished runs
  timeout $(( remaining > 10 ? remaining : 10 )) "$PY" benchmarks/gpu/bench_gpu.py --out "$OUT" --deadline $(( $(date +%s) + remaining - 20 )) \
    2>&1 | tee "$OUT/gpu_bench.log" | tail -60
  rc=${PIPESTATUS[0]}; [[ $rc != 0 ]] && { log "benchmark: exit $rc"; status=1; }
fi
log "done, status $status; results in $OUT"
ls -la "$OUT"
exit $status
