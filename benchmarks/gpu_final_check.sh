set -uo pipefail
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
L=/tmp/fl; mkdir -p $L; trap 'tar czf "$OUT/logs.tgz" -C $L .' EXIT
python3 -m pip install -q --no-deps --no-build-isolation -e . >/tmp/i.log 2>&1 || { cat /tmp/i.log; exit 1; }
PY="python3 -m pytest -v -p no:cacheprovider -m gpu -rf"
T=105
timeout $T $PY tests/cuda/test_cuda_kv_quant.py -k "int4 and gpu-bf16" >$L/kv_int4_bf16.log 2>&1 &
timeout $T $PY tests/cuda/test_cuda_kv_quant.py -k "fp8 and gpu-bf16" >$L/kv_fp8_bf16.log 2>&1 &
timeout $T $PY tests/cuda/test_cuda_kv_quant.py -k "gpu-f16" >$L/kv_f16.log 2>&1 &
timeout $T $PY tests/cuda/test_cuda_w4a16.py -k "gpu-bf16 or graph" >$L/w4a16_bf16.log 2>&1 &
timeout $T $PY tests/cuda/test_cuda_w4a16.py tests/cuda/test_quant_gemm_gpu.py -k "not gpu-bf16 and not graph" >$L/gemm.log 2>&1 &
timeout $T $PY tests/cuda/test_cuda_store_kv.py tests/cuda/test_cuda_attention.py -k "int8 or store" >$L/int8_regress.log 2>&1 &
timeout $T $PY tests/cuda/test_moe_models_gpu.py >$L/moe_models.log 2>&1 &
timeout $T python3 benchmarks/gpu_w4a16_diag.py --cases llama >$L/w4a16_diag_llama.log 2>&1 &
export HALINFER_CANDIDATE_CLAIMS="cuda:W4A16,cuda:FP8"
timeout $T python3 -m pytest -v -p no:cacheprovider -rf tests/models/test_declared_support.py -k "cuda and W4A16" >$L/declared_w4a16.log 2>&1 &
timeout $T python3 -m pytest -v -p no:cacheprovider -rf tests/models/test_declared_support.py -k "cuda and (FP8 or INT4)" >$L/declared_fp8_kvint4.log 2>&1 &
wait
for f in $L/*.log; do echo "--- $(basename $f): $(grep -c ' PASSED' $f) passed, $(grep -c ' FAILED' $f) failed, $(grep -c ' SKIPPED' $f) skipped; $(tail -1 $f | cut -c1-120)"; grep -E "^FAILED" $f | head -4 | cut -c1-200; done
grep -E "^\[|MISMATCH|^spy" $L/w4a16_diag_llama.log | head -12 | cut -c1-200
