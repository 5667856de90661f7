#!/usr/bin/env bash
# One call on a lent GPU: install, benchmark (with the HF peer), profile.  Logs to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
# Logs of the install and the card go to stdout: the device returns only a few files from $OUT.
python3 -m pip install -q --no-deps --no-build-isolation -e . >/tmp/install.log 2>&1 || { cat /tmp/install.log; exit 1; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv
phase() { local name=$1 limit=$2; shift 2; echo "=== $name"; timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; echo "rc=$? $name"; tail -n 25 "$OUT/$name.log"; }
for p in "$@"; do
  case $p in
    bench) phase bench 300 python benchmarks/throughput.py --model llama3-8b --device cuda --workload all \
             --peer hf --hf-requests 64 --hf-batch 32 --out "$OUT/bench.json" ;;
    benchnopeer) phase benchnopeer 200 python benchmarks/throughput.py --model llama3-8b --device cuda --workload all \
             --out "$OUT/benchnopeer.json" ;;
    beforeafter)  # the same benchmark on the code before a change (.bench_before, an ignored copy made with
                  # `git archive <commit> | tar -x -C .bench_before`, carried) and on this tree, one call
      phase before 300 env PYTHONPATH="$PWD/.bench_before" python .bench_before/benchmarks/throughput.py \
        --model llama3-8b --device cuda --workload all --out "$OUT/before.json"
      phase after 300 python benchmarks/throughput.py --model llama3-8b --device cuda --workload all \
        --out "$OUT/after.json" ;;
    bench512) phase bench512 150 python benchmarks/throughput.py --model llama3-8b --device cuda \
             --workload offline-1000 --max-num-seqs 512 --out "$OUT/bench512.json" ;;
    vlm) phase vlm 580 python benchmarks/vlm_throughput.py --shape qwen2.5-vl-3b --device cuda --requests 200 \
             --hf-requests 32 --hf-batch 16 --out "$OUT/vlm.json" ;;
    profile) phase profile 120 python benchmarks/profile_step.py --model llama3-8b --device cuda --batch 64 ;;
    cudatests)  # every declared-support cell on cuda, one process per cell (a CUDA fault in one cannot
                # take the others with it), six at a time, beside tests/cuda's GPU tests
      echo "=== cudatests"
      rec=/tmp/halinfer-rec; rm -rf "$rec" /tmp/cells; mkdir -p /tmp/cells
      python -m pytest tests/models/test_declared_support.py --collect-only -q -p no:cacheprovider 2>/dev/null \
        | grep "\[cuda-" > /tmp/cells.txt
      OMP_NUM_THREADS=4 timeout -s INT 400 python -m pytest tests/cuda -m gpu -q -p no:cacheprovider \
        >"$OUT/cudatests-gpu.log" 2>&1 &
      export rec
      tr '\n' '\0' </tmp/cells.txt | xargs -0 -P 6 -I{} sh -c \
        'OMP_NUM_THREADS=2 HALINFER_RECORD_SUPPORT=1 HALINFER_RECORD_DIR=$rec timeout -s INT 240 \
           python -m pytest "$1" -q -p no:cacheprovider >"/tmp/cells/$(echo "$1" | md5sum | cut -c1-12).log" 2>&1 \
           && echo "PASS $1" || echo "FAIL $1"' _ {} >"$OUT/cudatests-cells.txt"
      wait
      cat /tmp/cells/*.log >"$OUT/cudatests-cells.log"; cp "$rec/cuda.json" "$OUT/cuda.json" 2>/dev/null
      echo "--- cells: $(grep -c PASS "$OUT/cudatests-cells.txt") passed, $(grep -c FAIL "$OUT/cudatests-cells.txt") failed"
      grep FAIL "$OUT/cudatests-cells.txt"; echo "--- tests/cuda -m gpu"; tail -n 4 "$OUT/cudatests-gpu.log" ;;
    moe) phase moe 480 python benchmarks/moe_throughput.py --device cuda --hf-requests 32 --hf-batch 32 \
             --out "$OUT/moe.json" ;;
    tests) phase tests 420 python -m pytest tests/models/test_declared_support.py tests/cuda -m "gpu or not slow" \
             -q -x -p no:cacheprovider ;;
  esac
done
