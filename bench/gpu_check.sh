#!/usr/bin/env bash
# One command for a CUDA machine (`make gpu-check`): the test suite on the GPU (without tests/test_notebooks.py and
# tests/test_docs.py), bench/overhead.py, bench/time_to_acc.py, bench/amp.py and bench/fast_path.py, each under a time
# limit (about 6 minutes in all), then one summary table. Needs no network once miniai and its dependencies are installed
# (the data: Debian's dataset-fashion-mnist, or MINIAI_DATA pointing at the four IDX files).
#
# Exit status: 0 every step passed; 1 a step failed or ran out of time; 3 no CUDA GPU here (nothing was run).
# Logs: $GPU_CHECK_OUT (default runs/gpu-check)/<step>.log.   Python: $PYTHON (default: python3).
# Steps and limits can be narrowed: GPU_CHECK_STEPS="tests overhead" and LIMIT_<step>=seconds (e.g. LIMIT_tests=300).
set -u
PY=${PYTHON:-python3}
OUT=${GPU_CHECK_OUT:-runs/gpu-check}
cd "$(dirname "$0")/.."
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu-check: no CUDA GPU on this machine ($("$PY" -c "import torch; print('torch', torch.__version__, '| CUDA available: False')" 2>&1 | tail -1))."
  echo "gpu-check: nothing was run; on a CPU use \`make test\` and \`make bench\`. (exit status 3)"
  exit 3
fi
mkdir -p "$OUT"
"$PY" -c "import torch; print('gpu-check:', torch.cuda.get_device_name(), '| torch', torch.__version__, '| CUDA', torch.version.cuda, '|', torch.cuda.device_count(), 'GPU(s)')"

rows=(); failed=0
STEPS=${GPU_CHECK_STEPS:-tests overhead time_to_acc amp fast_path}
step() {   # step NAME LIMIT_S SUMMARY_REGEX COMMAND...
  local name=$1 pattern=$3 var="LIMIT_$1"; local limit=${!var:-$2}; shift 3
  case " $STEPS " in *" $name "*) ;; *) return;; esac
  local t0=$SECONDS
  echo "== $name (limit ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]} dt=$((SECONDS - t0)) status=ok
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status="TIMEOUT"; failed=1
  elif [ "$rc" != 0 ]; then status="FAILED($rc)"; failed=1; fi
  local key; key=$(grep -E "$pattern" "$OUT/$name.log" | tail -n 3 | tr -s ' ' | tr '\n' ';' | cut -c1-150)
  rows+=("$(printf '| %-12s | %-11s | %5ss | %s |' "$name" "$status" "$dt" "$key")")
}

# the tests that touch devices first, so a time-out still leaves their results in the log
FIRST="tests/test_accel.py tests/test_distributed.py tests/test_checkpoint.py tests/test_learner.py tests/test_train.py"
REST=$(ls tests/test_*.py | grep -v -e test_notebooks.py -e test_docs.py $(printf -- '-e %s ' $FIRST))
step tests 170 '(passed|failed|error)' "$PY" -m pytest $FIRST $REST -p no:cacheprovider --maxfail=10 -rfEs --tb=short
step overhead 40 'overhead ratio' "$PY" bench/overhead.py --reps 3
step time_to_acc 80 '^(Learner|plain)' "$PY" bench/time_to_acc.py
step amp 30 '^\| flagship|fp16 \+ channels-last' "$PY" bench/amp.py --reps 2
step fast_path 40 '^(minimal loop, graph, bs 1024, lr 0.02|Learner\+fast_cbs, graph|deterministic)' "$PY" bench/fast_path.py --budget 25

echo
echo "| step         | status      |  time  | key figures |"
echo "|--------------|-------------|--------|-------------|"
printf '%s\n' "${rows[@]}"
echo "logs in $OUT/"
exit $failed
