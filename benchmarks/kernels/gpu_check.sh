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
T_TESTS="${T_TESTS:-330}"
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

echo "== decode micro-benchmark"
timeout "$T_BENCH" python3 benchmarks/kernels/bench_decode.py --json "$OUT/bench_decode.json" 2>&1 \
  | tee "$OUT/bench_decode.txt"

echo "== pytest tests/cuda tests/conformance -m 'gpu or not slow'"
XDIST=()
python3 -c "import xdist" 2>/dev/null && XDIST=(-n "$NPROC")
timeout "$T_TESTS" python3 -m pytest tests/cuda tests/conformance -m "gpu or not slow" -q -p no:cacheprovider \
  "${XDIST[@]}" --durations=10 -r fEs >"$OUT/pytest_gpu.log" 2>&1
echo "pytest rc=$? (124: hit the ${T_TESTS}s limit)" | tee -a "$OUT/pytest_gpu.log"
grep -E "^(FAILED|ERROR)" "$OUT/pytest_gpu.log" | head -40
tail -4 "$OUT/pytest_gpu.log"
