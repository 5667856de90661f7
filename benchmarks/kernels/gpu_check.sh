#!/usr/bin/env bash
# The CUDA plugin's GPU check, in one call of the lent machine: environment facts,
# editable install (nothing can be downloaded there), the decode micro-benchmark,
# then the kernel and conformance tests.  Logs go to $OUT (default ./gpu_out).
#   bash benchmarks/kernels/gpu_check.sh
set -uo pipefail
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
T_BENCH="${T_BENCH:-150}"      # seconds
T_TESTS="${T_TESTS:-200}"
T_CONF="${T_CONF:-240}"
NPROC="${NPROC:-8}"            # pytest-xdist workers: Triton compiles each kernel variant once per process

{
  date -u +"date: %Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, triton; print('python', sys.version.split()[0], '| torch', torch.__version__,
'| cuda', torch.version.cuda, '| triton', triton.__version__)"
} 2>&1 | tee "$OUT/env.txt"

python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 \
  || { echo "editable install failed:"; tail -20 "$OUT/install.log"; }
python3 -c "from halinfer.core.device import resolve_device; b = resolve_device('auto').backend; \
print('device auto ->', b.name, b.available())" 2>&1 | tee -a "$OUT/env.txt"

if [ "${SKIP_BENCH:-0}" != 1 ]; then
  echo "== decode micro-benchmark"
  timeout "$T_BENCH" python3 benchmarks/kernels/bench_decode.py --json "$OUT/bench_decode.json" 2>&1 \
    | tee "$OUT/bench_decode.txt"
fi

# Only the GPU cases: the CPU providers' conformance runs in CPU CI, and every
# Triton variant compiles once per worker, so the whole suite does not fit a call.
XDIST=()
python3 -c "import xdist" 2>/dev/null && XDIST=(-n "$NPROC")
run_tests() {  # name, seconds, pytest args...
  local name=$1 secs=$2; shift 2
  echo "== pytest $*"
  timeout "$secs" python3 -m pytest "$@" -v -p no:cacheprovider "${XDIST[@]}" --tb=short --durations=10 \
    >"$OUT/$name.log" 2>&1
  echo "rc=$? (124: hit the ${secs}s limit)" | tee -a "$OUT/$name.log"
  grep -E "^(FAILED|ERROR)" "$OUT/$name.log" | head -30
  tail -2 "$OUT/$name.log"
}
run_tests pytest_cuda_gpu "$T_TESTS" tests/cuda -m gpu
run_tests pytest_conformance_cuda "$T_CONF" tests/conformance -m "gpu or not slow" -k "cuda"
