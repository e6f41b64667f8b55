#!/usr/bin/env bash
# One command for a CUDA machine (`make gpu-check`): the test suite on the GPU (without tests/test_notebooks.py and
# tests/test_docs.py; first the files that train on the device, then the rest), bench/overhead.py, bench/time_to_acc.py,
# bench/amp.py and bench/fast_path.py, each under a time limit, the whole run under 6 minutes, then one summary table
# (printed even when a step times out or the run is interrupted). Needs no network once torch, miniai's dependencies
# and pytest are installed (the data: Debian's dataset-fashion-mnist, or MINIAI_DATA pointing at the four IDX files).
#
# Exit status: 0 every step passed; 1 a step failed, ran out of time or was skipped for lack of time;
#              3 no CUDA GPU here (nothing was run).
# Python: $PYTHON (default python3). miniai need not be pip-installed: this checkout is put first on PYTHONPATH
# (as an absolute path, so subprocesses started from other folders find it too), from wherever the script is run.
# Tests: in 8 processes with pytest-xdist when it is installed (GPU_CHECK_WORKERS=n to change, 0 for serial), else serial.
# Logs: $GPU_CHECK_OUT (default runs/gpu-check under the checkout)/<step>.log.
# Steps and limits can be narrowed: GPU_CHECK_STEPS="tests overhead" and LIMIT_<step>=seconds (e.g. LIMIT_tests=300);
# GPU_CHECK_TOTAL (default 360 s) is the whole run's limit: a step gets at most what is left of it.
# GPU_CHECK_ALLOW_CPU=1 runs the steps without a GPU (only to test this script itself: tests/test_gpu_check.py).
set -u
PY=${PYTHON:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd -P)
OUT=${GPU_CHECK_OUT:-$ROOT/runs/gpu-check}
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT";; esac
# absolute PYTHONPATH entries, this checkout first (relative entries would break once we change folder)
pp="$ROOT"
IFS=':' read -r -a _entries <<< "${PYTHONPATH:-}"
for e in "${_entries[@]}"; do [ -n "$e" ] && pp="$pp:$(cd "$e" 2>/dev/null && pwd -P || echo "$e")"; done
export PYTHONPATH="$pp"
cd "$ROOT"

if ! command -v "$PY" >/dev/null 2>&1; then echo "gpu-check: no Python '$PY' (set PYTHON=/path/to/python)"; exit 1; fi
if ! "$PY" -c "import torch" 2>/dev/null; then echo "gpu-check: $PY cannot import torch: install it (or set PYTHON)"; exit 1; fi
if [ "${GPU_CHECK_ALLOW_CPU:-0}" != 1 ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu-check: no CUDA GPU on this machine ($("$PY" -c "import torch; print('torch', torch.__version__, '| CUDA available: False')" 2>&1 | tail -1))."
  echo "gpu-check: nothing was run; on a CPU use \`make test\` and \`make bench\`. (exit status 3)"
  exit 3
fi
mkdir -p "$OUT"
"$PY" -c "import torch, miniai; print('gpu-check:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU (GPU_CHECK_ALLOW_CPU)', '| torch', torch.__version__, '| CUDA', torch.version.cuda, '|', torch.cuda.device_count(), 'GPU(s) | miniai from', miniai.__file__)" \
  || { echo "gpu-check: cannot import miniai from $ROOT with $PY (are its dependencies installed?)"; exit 1; }

rows=(); failed=0; T_START=$SECONDS
TOTAL=${GPU_CHECK_TOTAL:-360}
STEPS=${GPU_CHECK_STEPS:-gpu_tests tests overhead time_to_acc amp fast_path}
summary() {
  echo
  echo "| step         | status       |  time  | key figures |"
  echo "|--------------|--------------|--------|-------------|"
  [ ${#rows[@]} -gt 0 ] && printf '%s\n' "${rows[@]}"
  echo "total $((SECONDS - T_START))s; logs in $OUT/"
}
trap 'rows+=("$(printf "| %-12s | %-12s | %5ss | %s |" "${CURRENT:-?}" INTERRUPTED "$((SECONDS - T_START))" "the run was stopped")"); summary; exit 1' INT TERM

step() {   # step NAME LIMIT_S SUMMARY_REGEX COMMAND...
  local name=$1 pattern=$3 var="LIMIT_$1"; local limit=${!var:-$2}; shift 3
  case " $STEPS " in *" $name "*) ;; *) return;; esac
  local left=$((TOTAL - (SECONDS - T_START)))
  if [ "$left" -lt 15 ]; then
    rows+=("$(printf '| %-12s | %-12s | %5ss | %s |' "$name" SKIPPED 0 "no time left of the ${TOTAL}s run")"); failed=1; return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0=$SECONDS; CURRENT=$name
  echo "== $name (limit ${limit}s): $*"
  # SIGINT first (pytest then prints what it has done; a bench prints its traceback), the whole process group
  # (xdist workers, torchrun children) killed 15 s later if still alive
  timeout -s INT --kill-after=15 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]} dt=$((SECONDS - t0)) status=ok
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status="TIMEOUT(${limit}s)"; failed=1
  elif [ "$rc" != 0 ]; then status="FAILED($rc)"; failed=1; fi
  local key; key=$(grep -aE "$pattern" "$OUT/$name.log" | tail -n 4 | tr -s ' =' | tr '\n' ';' | cut -c1-400)
  [ -z "$key" ] && key="(no result line: see $name.log)"
  rows+=("$(printf '| %-12s | %-12s | %5ss | %s |' "$name" "$status" "$dt" "$key")")
}

# the tests: in parallel with pytest-xdist where it is installed (the GPU is shared by the workers)
WORKERS=${GPU_CHECK_WORKERS:-8}
if [ "$WORKERS" != 0 ] && "$PY" -c "import xdist" 2>/dev/null; then PAR=(-n "$WORKERS"); else PAR=(); WORKERS=0; fi
"$PY" -c "import pytest" 2>/dev/null || echo "gpu-check: pytest is not installed for $PY: the tests step will fail"
# the files whose tests train on the device come first, so that a step cut short by its limit still has their verdict
ON_DEVICE="tests/test_train.py tests/test_fastpath.py tests/test_checkpoint.py tests/test_compose.py tests/test_host_sync.py tests/test_learner.py tests/test_distributed.py tests/test_accel.py"
# not here: the notebook and docs tests, and the CPU checks of this script and of the benchmarks (run as steps below)
REST=$(ls tests/test_*.py | grep -v -e test_notebooks.py -e test_docs.py -e test_gpu_check.py -e test_bench_smoke.py \
       $(printf -- ' -e %s' $ON_DEVICE))
echo "gpu-check: tests $([ "$WORKERS" = 0 ] && echo "serial (pytest-xdist not installed)" || echo "in $WORKERS processes (pytest-xdist)")"
# two threads per test process: 8 processes of 16 threads each oversubscribed the 16-core H200 machine 8 times, and the
# suite's CPU-bound tests took a minute each
PYTEST=(env OMP_NUM_THREADS=${GPU_CHECK_THREADS:-2} "$PY" -m pytest "${PAR[@]}" -p no:cacheprovider --maxfail=10 -rfEs --tb=short --durations=8)
step gpu_tests 120 '(passed|failed|error|Interrupted)' "${PYTEST[@]}" $ON_DEVICE
step tests 100 '(passed|failed|error|Interrupted)' "${PYTEST[@]}" $REST
step overhead 35 'overhead ratio' "$PY" bench/overhead.py --reps 3
step time_to_acc 65 '^(Learner|plain)' "$PY" bench/time_to_acc.py
step amp 30 '^\| flagship|fp16 \+ channels-last' "$PY" bench/amp.py --reps 2
step fast_path 60 '^(minimal loop, graph, bs 1024, lr 0.02|Learner\+fast_cbs, graph|deterministic|compile)' "$PY" bench/fast_path.py --budget 45
CURRENT=
trap - INT TERM
summary
exit $failed
