#!/usr/bin/env bash
# GPU check: correctness of the Triton kernels on the device and every benchmark, in one call.
#
#   bash bench/gpu_check.sh [--dry-run] [--tiny] [--steps a,b,...] OUT_DIR
#
# Made for a borrowed GPU machine that returns at most 8 files: everything is written to a
# scratch folder and OUT_DIR receives exactly two files, gpu_check.log (this script's log, the
# tail of every step) and gpu_check.tar.gz (env.txt, one log per step, the JSON of every
# benchmark, results.csv with the new rows, the pytest junit XML, the report). The archive is
# rebuilt after every step, so a run killed from outside still returns what it measured.
#
# Steps, in this order (fastest evidence first): smoke (giftnet.bench.gpu_smoke --quick), modconv and
# relation (kernel benchmarks, each row appended to results.csv as it is measured), train
# (configs a-c), train_e (a and e: torch.compile, on its own so its compile time cannot starve
# the others), pytest (the CUDA tests with xdist, SIGINT at the limit so pytest still prints its
# summary, a junit report), data (giftnet.bench.data with GPU JPEG decoding: only where DALI is
# installed, from what the budget has left), report. Each step has a limit and all of them but
# data fit GIFTNET_GPU_CHECK_BUDGET_S (default 400 s), so a rerun fits a 15-minute window.
#
#   --dry-run      print the plan (every command with its limit) and exit; nothing runs
#   --tiny         tiny benchmark sizes (CI on a CPU runs the harness end to end this way)
#   --steps LIST   only these steps (comma-separated), e.g. --steps pytest,report for a rerun
#   -h, --help     this text
#
# Installs nothing; uses $PYTHON (default python3) with PYTHONPATH set to this repository. Exits
# 1 when a correctness step (smoke, pytest) fails, 2 on a usage error, else 0.
set -u -o pipefail

usage() { sed -n '2,/^set -u/{/^set -u/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

DRY=${GIFTNET_GPU_CHECK_DRY:-0}
TINY=0
ONLY=""
OUT=""
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --dry-run) DRY=1 ;;
    --tiny) TINY=1 ;;
    --steps) ONLY=${2:?--steps needs a comma-separated list}; shift ;;
    --steps=*) ONLY=${1#--steps=} ;;
    -*) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
    *)
      [[ -z $OUT ]] || { echo "gpu_check: one OUT_DIR only, got $OUT and $1" >&2; exit 2; }
      OUT=$1 ;;
  esac
  shift
done
[[ -n $OUT ]] || { echo "usage: bash bench/gpu_check.sh [--dry-run] [--tiny] [--steps LIST] OUT_DIR (see --help)" >&2; exit 2; }
STEPS=(smoke modconv relation train train_e pytest data report)
for s in ${ONLY//,/ }; do
  [[ " ${STEPS[*]} " == *" $s "* ]] || { echo "gpu_check: unknown step $s; steps are ${STEPS[*]}" >&2; exit 2; }
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
BUDGET=${GIFTNET_GPU_CHECK_BUDGET_S:-400}
RESERVE=15 # seconds kept for the report and the archive
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
LOG=$OUT/gpu_check.log
: >"$LOG"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export TRITON_CACHE_DIR="$WORK/triton_cache" TRITON_CACHE_AUTOTUNING=1 # xdist workers share compiles and tunings
unset TRITON_INTERPRET                                                   # compile for the device
cd "$REPO" || exit 2
START=$(date +%s)
FAILED=()
INCOMPLETE=()

log() { echo "[gpu_check $(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }
left() { echo $((BUDGET - ($(date +%s) - START))); }
pack() { # the scratch folder (without the Triton cache) -> OUT/gpu_check.tar.gz, atomically
  tar -czf "$WORK.tar.gz" -C "$WORK" --exclude=./triton_cache . 2>>"$LOG" && mv -f "$WORK.tar.gz" "$OUT/gpu_check.tar.gz"
}
finish() { pack; rm -rf "$WORK"; }
trap finish EXIT
trap 'log "interrupted"; exit 130' INT TERM

wanted() { [[ -z $ONLY || ",$ONLY," == *",$1,"* ]]; }

# step NAME LIMIT_S CMD...: run CMD under `timeout -s INT` min(LIMIT_S, budget left - RESERVE),
# output to WORK/NAME.log; its tail goes to the log. SIGINT first: pytest and Python print what
# they have (a summary, a traceback), then SIGKILL 10 s later.
step() {
  local name=$1 limit=$2 rc
  shift 2
  wanted "$name" || return 0
  local avail=$(($(left) - RESERVE))
  ((limit > avail)) && limit=$avail
  if [[ $DRY == 1 ]]; then
    log "PLAN $name (limit ${limit}s): $*"
    return 0
  fi
  if ((limit < 10)); then
    log "SKIP $name: the ${BUDGET}s budget is spent"
    return 124
  fi
  log "RUN $name (limit ${limit}s): $*"
  timeout -s INT -k 10 "$limit" "$@" >"$WORK/$name.log" 2>&1
  rc=$?
  tail -n 25 "$WORK/$name.log" | tee -a "$LOG" >/dev/null
  if ((rc == 124 || rc == 137)); then log "TIMEOUT $name after ${limit}s (partial output kept)"; else log "END $name: exit $rc ($(($(date +%s) - START))s elapsed)"; fi
  pack
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
  echo "python: $PY ($(command -v "$PY" || echo 'not found'))  plan: dry=$DRY tiny=$TINY steps=${ONLY:-all} budget=${BUDGET}s"
  if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "nvidia-smi: not found"; fi
  "$PY" - <<'EOF'
import importlib, platform
print("python", platform.python_version())
for name in ("torch", "triton", "numpy", "PIL", "skimage", "matplotlib", "rich", "safetensors", "pytest", "xdist", "nvidia.dali"):
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
} >"$WORK/env.txt" 2>&1
tee -a "$LOG" <"$WORK/env.txt" >/dev/null

have() { grep -q "^$1 " "$WORK/env.txt" && ! grep -q "^$1 MISSING" "$WORK/env.txt"; }
CUDA=0
grep -q '^cuda available: True' "$WORK/env.txt" && CUDA=1
if ((CUDA == 0 && TINY == 0 && DRY == 0)); then
  log "no CUDA device (or no torch) for $PY: nothing to measure at full size (use --tiny on a CPU)"
  exit 0
fi

[[ -f bench/results/results.csv ]] && cp bench/results/results.csv "$WORK/results.csv"
CSV="$WORK/results.csv"
SIZE=()
((TINY)) && SIZE=(--tiny)
XDIST=()
have xdist && XDIST=(-n 4) # four workers on one GPU overlap compiles and autotuning
((TINY)) && XDIST=()

correctness smoke 40 "$PY" -m giftnet.bench.gpu_smoke --quick
step modconv 90 "$PY" -m giftnet.bench.kernels --only modconv ${SIZE[@]+"${SIZE[@]}"} --json "$WORK/kernels_modconv.json" --csv "$CSV"
step relation 35 "$PY" -m giftnet.bench.kernels --only relation ${SIZE[@]+"${SIZE[@]}"} --json "$WORK/kernels_relation.json" --csv "$CSV"
step train 75 "$PY" -m giftnet.bench.train --configs abc ${SIZE[@]+"${SIZE[@]}"} --json "$WORK/train.json" --csv "$CSV"
TRAIN_RC=$?
step train_e 45 "$PY" -m giftnet.bench.train --configs ae --rounds 1 ${SIZE[@]+"${SIZE[@]}"} --json "$WORK/train_e.json" --csv "$CSV"
TRAIN_E_RC=$?
correctness pytest 85 "$PY" -m pytest -p no:cacheprovider -q -rfEs ${XDIST[@]+"${XDIST[@]}"} -m gpu \
  --junitxml="$WORK/pytest.xml" tests/test_masked_modconv_cuda.py tests/test_relation_cuda.py tests/test_loaders.py
# The data pipeline with GPU (mixed) JPEG decoding: only with DALI, and from what the budget has left.
DATA=(--backends torch dali --json "$WORK/data.json" --markdown "$WORK/data.md")
if ((TINY)); then DATA+=(--tiny); else DATA+=(--cores 1 4 --pairs 160); fi
if have nvidia.dali || [[ $DRY == 1 ]]; then
  step data 60 "$PY" -m giftnet.bench.data "${DATA[@]}"
elif wanted data; then
  log "SKIP data: nvidia.dali is not importable for $PY (the mixed-decode figure needs nvidia-dali-cuda120)"
fi
# giftnet.bench.train rewrites its JSON after every segment: a timed-out run still adds what it measured.
ADD=()
[[ $DRY != 1 && $TRAIN_RC != 0 && -s "$WORK/train.json" ]] && ADD+=(--add "train=$WORK/train.json")
[[ $DRY != 1 && $TRAIN_E_RC != 0 && -s "$WORK/train_e.json" ]] && ADD+=(--add "train=$WORK/train_e.json")
RESERVE=0 step report 20 "$PY" -m giftnet.bench.report --results "$CSV" --out "$WORK/report" \
  --aot-json bench/results/aot.json ${ADD[@]+"${ADD[@]}"}

log "finished in $(($(date +%s) - START))s; outputs: $OUT/gpu_check.tar.gz and $LOG"
((${#INCOMPLETE[@]})) && log "INCOMPLETE (timed out, correctness unproven): ${INCOMPLETE[*]}"
if ((${#FAILED[@]})); then
  log "FAILED correctness checks: ${FAILED[*]}"
  exit 1
fi
log "correctness checks passed (or skipped as logged)"
exit 0
