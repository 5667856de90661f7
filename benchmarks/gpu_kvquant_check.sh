python3 -m pip install -q --no-deps --no-build-isolation -e . >/tmp/i.log 2>&1 || { cat /tmp/i.log; exit 1; }
# GPU check of issue 13 item 3 (kvkern branch): KV int4/fp8 kernels, FP8 GEMM, W4A16 GEMV and
# the W4A16 model-level diagnosis.  Run from the repo root on the GPU box; logs go to $OUT.
# Wall budget: 6 minutes.  Phase A runs the correctness jobs side by side (Triton compiles are
# CPU-bound and the box has 16 cores); phase B times the kernels alone on the GPU.
set -uo pipefail
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=3
OUT=${OUT:-/tmp/kvquant_out}; mkdir -p "$OUT"
START=$(date +%s); left() { echo $(( 350 - ($(date +%s) - START) )); }
# -v: one line per test, so a job cut by its timeout still shows what passed and failed
PY="python3 -m pytest -v -p no:cacheprovider -m gpu -rf"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"

echo "=== phase A (parallel, 200 s each)"
# one process per (mode, dtype): each compiles its own kernel variants, in parallel
for m in int4 fp8; do for d in bf16 f16; do
  timeout 200 $PY tests/cuda/test_cuda_kv_quant.py -k "$m and gpu-$d" >"$OUT/kv_${m}_$d.log" 2>&1 &
done; done
timeout 200 $PY tests/cuda/test_cuda_kv_quant.py -k "gpu-f32 and (decode_g7 or prefill_g4_odd or T7_)" \
    >"$OUT/kv_f32.log" 2>&1 &
timeout 200 $PY tests/cuda/test_cuda_w4a16.py -k "gpu-bf16 or graph" >"$OUT/w4a16_bf16.log" 2>&1 &
timeout 200 $PY tests/cuda/test_cuda_w4a16.py tests/cuda/test_quant_gemm_gpu.py -k "not gpu-bf16 and not graph" \
    >"$OUT/gemm.log" 2>&1 &
timeout 200 $PY tests/cuda/test_cuda_store_kv.py tests/cuda/test_cuda_attention.py -k "int8 or store" \
    >"$OUT/int8_regress.log" 2>&1 &
timeout 200 python3 benchmarks/gpu_w4a16_diag.py --cases llama >"$OUT/w4a16_diag_llama.log" 2>&1 &
timeout 200 python3 benchmarks/gpu_w4a16_diag.py --cases qwen2-tied --variants spy,triton-graph,torchref-graph \
    >"$OUT/w4a16_diag_qwen2.log" 2>&1 &
# cells not claimed yet (W4A16, FP8) run as candidates (tests/models/test_declared_support.py)
export HALINFER_CANDIDATE_CLAIMS="cuda:W4A16,cuda:FP8"
timeout 200 python3 -m pytest -v -p no:cacheprovider -rf tests/models/test_declared_support.py \
    -k "cuda and W4A16" >"$OUT/declared_w4a16.log" 2>&1 &
timeout 200 python3 -m pytest -v -p no:cacheprovider -rf tests/models/test_declared_support.py \
    -k "cuda and (FP8 or INT4)" >"$OUT/declared_fp8_kvint4.log" 2>&1 &
wait
for f in kv_int4_bf16 kv_int4_f16 kv_fp8_bf16 kv_fp8_f16 kv_f32 w4a16_bf16 gemm int8_regress declared_w4a16 \
         declared_fp8_kvint4; do
  echo "--- $f: $(grep -c ' PASSED' "$OUT/$f.log") passed, $(grep -c ' FAILED' "$OUT/$f.log") failed," \
       "$(grep -c ' SKIPPED' "$OUT/$f.log") skipped; $(tail -1 "$OUT/$f.log" | cut -c1-150)"
  grep -E "^FAILED|^ERROR|Error" "$OUT/$f.log" | head -8 | cut -c1-300
done
for c in llama qwen2; do
  echo "--- w4a16_diag $c"; grep -E "^\[|MISMATCH|^spy|^  [0-9]" "$OUT/w4a16_diag_$c.log" | head -30 | cut -c1-300
done

echo "=== phase B: kernel timings (alone on the GPU), $(left) s left"
timeout $(( $(left) > 100 ? 100 : $(left) )) python3 benchmarks/kernels/bench_quant_gemm.py --sweep \
    >"$OUT/bench_quant_gemm.log" 2>&1
cat "$OUT/bench_quant_gemm.log" | tail -60

echo "=== done in $(( $(date +%s) - START )) s"
