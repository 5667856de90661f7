set -uo pipefail; export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >/tmp/i.log 2>&1 || { cat /tmp/i.log; exit 1; }
echo "=== quant kernel tests"; timeout 150 python -m pytest tests/cuda/test_quant_gemm_gpu.py -m gpu -q -p no:cacheprovider 2>&1 | tail -5
echo "=== quant declared cells"; HALINFER_RECORD_SUPPORT=1 HALINFER_RECORD_DIR=/tmp/rec timeout 150 python -m pytest tests/models/test_declared_support.py -q -p no:cacheprovider -k "cuda and (W4A16 or W8A8 or FP8)" 2>&1 | tail -4; cp /tmp/rec/cuda.json $OUT/cuda_quant.json 2>/dev/null
for q in none awq gptq; do a=""; [ $q != none ] && a="--quantization $q"; echo "=== decode-b1 $q"; timeout 75 python benchmarks/throughput.py --model llama3-8b --device cuda --workload decode-b1 $a --out $OUT/b1_$q.json 2>&1 | grep -o '"tok_per_s": [0-9.]*\|"roofline_fraction": [0-9.]*\|Error.*' | head -3; done
for q in w8a8 fp8; do echo "=== offline $q"; timeout 80 python benchmarks/throughput.py --model llama3-8b --device cuda --workload offline-1000 --quantization $q --out $OUT/off_$q.json 2>&1 | grep -o '"wall_s": [0-9.]*\|Error.*' | head -3; done
