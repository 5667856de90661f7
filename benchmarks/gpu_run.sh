#!/usr/bin/env bash
# One call on a lent GPU: install, benchmark (with the HF peer), profile.  Logs to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$OUT/card.txt"
phase() { local name=$1 limit=$2; shift 2; echo "=== $name"; timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; echo "rc=$? $name"; tail -n 25 "$OUT/$name.log"; }
for p in "$@"; do
  case $p in
    bench) phase bench 300 python benchmarks/throughput.py --model llama3-8b --device cuda --workload all \
             --peer hf --hf-requests 64 --hf-batch 32 --out "$OUT/bench.json" ;;
    benchnopeer) phase benchnopeer 200 python benchmarks/throughput.py --model llama3-8b --device cuda --workload all \
             --out "$OUT/benchnopeer.json" ;;
    bench512) phase bench512 150 python benchmarks/throughput.py --model llama3-8b --device cuda \
             --workload offline-1000 --max-num-seqs 512 --out "$OUT/bench512.json" ;;
    profile) phase profile 120 python benchmarks/profile_step.py --model llama3-8b --device cuda --batch 64 ;;
    cudatests)  # the declared-support cells on cuda, two processes in parallel (one per column)
      echo "=== cudatests"
      for col in "FP16/BF16" "KV INT8"; do
        tag=$(echo "$col" | tr -dc 'A-Za-z0-9')
        OMP_NUM_THREADS=8 HALINFER_RECORD_SUPPORT=1 HALINFER_RECORD_DIR="$OUT/rec$tag" timeout -s INT 230 \
          python -m pytest tests/models/test_declared_support.py -k "cuda-${col%% *}" -q -p no:cacheprovider \
          >"$OUT/cudatests-$tag.log" 2>&1 &
      done
      wait; for f in "$OUT"/cudatests-*.log; do echo "--- $f"; tail -n 6 "$f"; done ;;
    moe) phase moe 200 python benchmarks/moe_throughput.py --device cuda --hf-requests 32 --hf-batch 32 \
             --out "$OUT/moe.json" ;;
    tests) phase tests 420 python -m pytest tests/models/test_declared_support.py tests/cuda -m "gpu or not slow" \
             -q -x -p no:cacheprovider ;;
  esac
done
