#!/usr/bin/env bash
# GPU check: correctness of the Triton kernels on the device, then every benchmark, in one go.
#
#   bash bench/gpu_check.sh OUT_DIR
#
# For a borrowed GPU machine: installs nothing, uses $PYTHON (default python3) as found there with
# PYTHONPATH set to this repository. Writes env.txt, one log per step, JSON of every benchmark, a
# copy of bench/results/results.csv with the new figures appended, and the report (README.md and
# PNGs) into OUT_DIR. Every step has a timeout; together they stay within
# GIFTNET_GPU_CHECK_BUDGET_S seconds (default 450). Exits non-zero only when a correctness check
# fails. GIFTNET_GPU_CHECK_DRY=1: only check for CUDA and list what would run.
set -u -o pipefail

OUT=${1:?usage: bash bench/gpu_check.sh OUT_DIR}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
BUDGET=${GIFTNET_GPU_CHECK_BUDGET_S:-450}
DRY=${GIFTNET_GPU_CHECK_DRY:-0}
RESERVE=20 # seconds kept for the report at the end
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET # the kernels must compile for the device, not run in the interpreter
cd "$REPO" || exit 2
START=$(date +%s)
FAILED=()
INCOMPLETE=()

log() { echo "[gpu_check $(date -u +%H:%M:%S)] $*" | tee -a "$OUT/gpu_check.log"; }
left() { echo $((BUDGET - ($(date +%s) - START))); }

# step NAME LIMIT_S CMD...: run CMD under timeout min(LIMIT_S, budget left - RESERVE), log to OUT/NAME.log.
step() {
  local name=$1 limit=$2 rc
  shift 2
  local avail=$(($(left) - RESERVE))
  ((limit > avail)) && limit=$avail
  if [[ $DRY == 1 ]]; then
    log "would run $name (timeout ${limit}s): $*"
    return 0
  fi
  if ((limit < 10)); then
    log "SKIP $name: the ${BUDGET}s budget is spent"
    return 124
  fi
  log "RUN $name (timeout ${limit}s): $*"
  if command -v timeout >/dev/null; then
    timeout -k 10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  else
    "$@" >"$OUT/$name.log" 2>&1 # no coreutils timeout here: the step runs unbounded
  fi
  rc=$?
  tail -n 30 "$OUT/$name.log"
  if ((rc == 124 || rc == 137)); then log "TIMEOUT $name after ${limit}s (partial output in $name.log)"; else log "END $name: exit $rc"; fi
  return $rc
}

# correctness NAME LIMIT_S CMD...: a step whose failure fails the script (a timeout leaves it unproven).
correctness() {
  local name=$1 rc
  step "$@"
  rc=$?
  if ((rc == 124 || rc == 137)); then
    INCOMPLETE+=("$name")
  elif ((rc != 0)); then
    FAILED+=("$name")
  fi
}

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')  git: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "python: $PY ($(command -v "$PY" || echo 'not found'))"
  if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "nvidia-smi: not found"; fi
  "$PY" - <<'EOF'
import importlib, platform
print("python", platform.python_version())
for name in ("torch", "triton", "numpy", "PIL", "skimage", "matplotlib", "rich", "safetensors", "pytest", "nvidia.dali"):
    try:
        mod = importlib.import_module(name)
        print(f"{name} {getattr(mod, '__version__', '?')}")
    except Exception as err:
        print(f"{name} MISSING ({type(err).__name__}: {err})")
try:
    import torch
except ImportError:
    raise SystemExit("torch MISSING: nothing here can run")
print("cuda available:", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device:", torch.cuda.get_device_name(), "capability", torch.cuda.get_device_capability(),
          "bf16", torch.cuda.is_bf16_supported(), "memory GiB", torch.cuda.get_device_properties(0).total_memory / 2**30)
EOF
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

have() { grep -q "^$1 " "$OUT/env.txt" && ! grep -q "^$1 MISSING" "$OUT/env.txt"; }
if ! grep -q '^cuda available: True' "$OUT/env.txt"; then
  log "no CUDA device (or no torch) for $PY: skipping the GPU correctness checks and GPU benchmarks"
  log "(on a CPU machine run the suite and the --tiny benchmarks instead: pytest -q; python -m bench.train --tiny)"
  [[ $DRY == 1 ]] || exit 0
  log "dry run: the plan on a GPU machine would be:"
fi

[[ -f bench/results/results.csv ]] && cp bench/results/results.csv "$OUT/results.csv"
CSV="$OUT/results.csv"

if have pytest; then
  correctness pytest 120 "$PY" -m pytest -q -p no:cacheprovider -k cuda \
    tests/test_masked_modconv_cuda.py tests/test_relation_cuda.py tests/test_loaders.py
  correctness gpu_smoke 45 "$PY" -m bench.gpu_smoke --quick
else
  log "pytest is not installed for $PY: the GPU test modules cannot run; running bench.gpu_smoke (the same checks in plain Python)"
  correctness gpu_smoke 80 "$PY" -m bench.gpu_smoke
fi
step train 150 "$PY" -m bench.train --json "$OUT/train.json" --csv "$CSV"
TRAIN_RC=$?
step kernels_relation 50 "$PY" -m bench.kernels --only relation --json "$OUT/kernels_relation.json" --csv "$CSV"
step kernels_modconv 100 "$PY" -m bench.kernels --only modconv --json "$OUT/kernels_modconv.json" --csv "$CSV"
if ! have nvidia.dali; then
  log "DALI is not installed for $PY: bench.data measures the PyTorch DataLoader only (its DALI row says skipped)"
fi
step data 40 "$PY" -m bench.data --json "$OUT/data.json"
# bench.train rewrites its JSON after every segment, so a timed-out run still adds what it measured.
ADD=()
[[ -s "$OUT/data.json" ]] && ADD+=(--add "data=$OUT/data.json")
if [[ $DRY != 1 && $TRAIN_RC != 0 && -s "$OUT/train.json" ]]; then
  ADD+=(--add "train=$OUT/train.json") # partial rows of a timed-out run (a finished run appended itself)
fi
RESERVE=0 step report 60 "$PY" -m bench.report --results "$CSV" --out "$OUT/report" \
  --aot-json bench/results/aot.json ${ADD[@]+"${ADD[@]}"}

log "finished in $(($(date +%s) - START))s; outputs in $OUT"
((${#INCOMPLETE[@]})) && log "INCOMPLETE (timed out, correctness unproven): ${INCOMPLETE[*]}"
if ((${#FAILED[@]})); then
  log "FAILED correctness checks: ${FAILED[*]}"
  exit 1
fi
log "correctness checks passed (or skipped as logged)"
exit 0
