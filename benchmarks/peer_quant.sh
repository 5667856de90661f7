#!/bin/bash
# Quantized halinfer beside LMDeploy 0.18.0's PyTorch engine on the same checkpoints, on one GPU:
# AWQ W4A16 decode-b1 and LMDeploy smooth_quant W8A8 offline-1000, Llama-3-8B shape, random weights.
#
# Run on the GPU machine from the project root, carrying .peers (see .peers/README.md):
#     FORMATS=awq bash benchmarks/peer_quant.sh    # builds the bf16 checkpoint if absent, converts, runs both
#     FORMATS=w8a8 bash benchmarks/peer_quant.sh   # reuses whatever is already on the machine
#     bash benchmarks/peer_quant.sh                # both formats in one call
# Estimated, not yet measured: about 4-5 min per format on an H200, most of it LMDeploy's engine start
# (60-90 s) and halinfer's. Both formats in one call may reach BUDGET_S; the last steps are then skipped.
#
# What it runs, in order (each step under timeout; full logs in $OUT/<step>.log):
#   build         the peer harness's bf16 checkpoint, exactly as .peers/side_by_side.sh builds it
#                 (BUILD_ONLY=1 .peers/lmdeploy_peer.py); reused if MODEL_DIR already holds one
#   convert_awq   benchmarks/make_quant_peer_ckpt.py on the GPU: $MODEL_DIR-awq, AutoAWQ gemm 4-bit g128
#   convert_w8a8  ... $MODEL_DIR-w8a8, LMDeploy smooth_quant (int8 weight + float32 scale [out, 1]); both reused
#   lmd_awq       LMDeploy b1 on the AWQ dir (benchmarks/lmdeploy_quant_peer.py with LMD_B1_ONLY=1: the
#                 harness would run offline after b1). LMDeploy's AWQ GEMM here is its Triton kernel: on
#                 SM90 it would pick TurboMind's, whose binaries the payload leaves out (the log says which).
#   hali_awq      benchmarks/throughput.py --workload decode-b1 on the AWQ dir
#   lmd_w8a8      LMDeploy b1 + offline (THRU_REPS passes) on the W8A8 dir (offline only runs after b1)
#   hali_w8a8     benchmarks/throughput.py --workload offline-1000 on the W8A8 dir (first pass + steady)
# Both engines read the same files. halinfer uses --load-format auto, so it runs the quantized
# tensors themselves rather than random ones.
# Env: FORMATS (awq,w8a8), ENGINES (lmdeploy,halinfer), OUT (/tmp/peerq_out: <step>.log, peer_quant.log,
#      lmd_*/lmdeploy_peer.json, hali_*.json), MODEL_DIR (bf16 source, /tmp/peer-llama, the side_by_side.sh
#      default), AWQ_DIR, W8A8_DIR, THRU_REPS (2, as side_by_side.sh), HALI_MAX_LEN (8192 = lmdeploy_peer.py's
#      session_len), HALI_AWQ_DTYPE (bfloat16; LMDeploy runs AWQ in float16 whatever it is asked),
#      HALI_LOAD (auto | dummy), LMD_AWQ_B1_ONLY (1; 0 adds LMDeploy's AWQ offline run), BUDGET_S (570: step
#      timeouts are cut so the script ends within it; a step with under 20 s left is skipped).
# A CPU dry run of the plumbing (tiny model; the LMDeploy steps then only check configs and tokenizer):
#     SMALL=1 SKIP_INSTALL=1 HALI_DEVICE=cpu HALI_AWQ_DTYPE=float32 HALI_EXTRA="--dtype float32 --num-requests 4" \
#       HALI_MAX_LEN=1024 MODEL_DIR=/tmp/peer-small LMD_PP=<site with the payload's wheels>:.peers/payload/py \
#       bash benchmarks/peer_quant.sh
# At the end: LMDeploy's RESULT lines, then a summary of both engines' figures and their ratios.
export PYTHONUNBUFFERED=1
set -o pipefail
cd "$(dirname "$0")/.." || exit 1
P=${PEERS_DIR:-$PWD/.peers}
[ -f "$P/lmdeploy_peer.py" ] || { echo "no $P/lmdeploy_peer.py: copy ../shared/peers to .peers and carry it"; exit 2; }
OUT=${OUT:-/tmp/peerq_out}; mkdir -p "$OUT"; LOG=$OUT/peer_quant.log; : > "$LOG"
export MODEL_KIND=llama   # the converter knows Llama-style projections only
SRC=${MODEL_DIR:-/tmp/peer-llama}
AWQ_DIR=${AWQ_DIR:-$SRC-awq}; W8A8_DIR=${W8A8_DIR:-$SRC-w8a8}
FORMATS=,${FORMATS:-awq,w8a8},; ENGINES=,${ENGINES:-lmdeploy,halinfer},
BUDGET_S=${BUDGET_S:-570}; THRU_REPS=${THRU_REPS:-2}; HALI_MAX_LEN=${HALI_MAX_LEN:-8192}
HALI_AWQ_DTYPE=${HALI_AWQ_DTYPE:-bfloat16}; HALI_LOAD=${HALI_LOAD:-auto}
LMD_PP=${LMD_PP:-/tmp/peersite:$P/payload/py}   # side_by_side.sh's PYTHONPATH for LMDeploy
HALI_DEVICE=${HALI_DEVICE:-cuda}
T0=$(date +%s)

say() { echo "$*" | tee -a "$LOG"; }
want() { [[ $FORMATS$ENGINES == *,$1,* ]]; }
# run NAME LIMIT_S CMD...: CMD under timeout (capped by what is left of BUDGET_S); full output to
# $OUT/NAME.log and peer_quant.log, the console gets it without LMDeploy's INFO lines and progress bars.
run() {
  local name=$1 lim=$2 left t rc; shift 2
  left=$(( BUDGET_S - ($(date +%s) - T0) - 10 ))
  (( left < lim )) && lim=$left
  if (( lim < 20 )); then say "=== $name: skipped, ${left}s of BUDGET_S=${BUDGET_S} left"; return 124; fi
  say "=== $name: timeout ${lim}s, $(date +%T), $(( $(date +%s) - T0 ))s in"
  rm -rf "${OUT:?}/$name" "$OUT/$name.json"   # this step's figures from an earlier call in the same OUT
  t=$(date +%s)
  timeout -k 15 "$lim" "$@" < /dev/null 2>&1 | tee "$OUT/$name.log" >> "$LOG"
  rc=${PIPESTATUS[0]}
  # console: no INFO lines, progress bars or pretty-printed JSON (halinfer prints each figure on one line too)
  tr '\r' '\n' < "$OUT/$name.log" | grep -v " INFO \|INFO -\|Warming\|%|\|^[[:space:]]\|^$\|^[{}],\?$" | cut -c1-600 | tail -40
  say "=== $name: rc=$rc after $(( $(date +%s) - t ))s"
  return $rc
}

say "peer_quant: FORMATS=${FORMATS:1:-1} ENGINES=${ENGINES:1:-1} SRC=$SRC AWQ_DIR=$AWQ_DIR" \
  "W8A8_DIR=$W8A8_DIR OUT=$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$LOG"
# the environment side_by_side.sh sets up: the payload's wheels in /tmp/peersite, halinfer installed
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/peersite \
    "$P"/payload/whl/*.whl 2>&1 | grep -v "WARNING: Running pip as\|WARNING: Target directory" | tail -3
  python3 -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/pip_halinfer.log" 2>&1 \
    || { cat "$OUT/pip_halinfer.log"; exit 1; }
fi

run build 240 env BUILD_ONLY=1 MODEL_DIR="$SRC" OUT="$OUT/lmd_build" PYTHONPATH="$LMD_PP" \
  python3 "$P/lmdeploy_peer.py" || { say "build failed"; exit 1; }
df -h "$(dirname "$SRC")" 2>&1 | tail -1 | tee -a "$LOG"
for f in awq w8a8; do
  d=$AWQ_DIR; [ $f = w8a8 ] && d=$W8A8_DIR
  want $f && run convert_$f 150 python3 benchmarks/make_quant_peer_ckpt.py --src "$SRC" --dst "$d" --format $f
done

if want awq && want lmdeploy; then
  run lmd_awq 240 env MODEL_DIR="$AWQ_DIR" OUT="$OUT/lmd_awq" WORKLOADS=b1 LMD_B1_ONLY="${LMD_AWQ_B1_ONLY:-1}" \
    THRU_REPS="$THRU_REPS" LMD_BENCH_LOG=WARNING PYTHONPATH="$LMD_PP" python3 benchmarks/lmdeploy_quant_peer.py
fi
if want awq && want halinfer; then
  run hali_awq 180 python3 benchmarks/throughput.py --model "$AWQ_DIR" --device "$HALI_DEVICE" \
    --workload decode-b1 $HALI_EXTRA --dtype "$HALI_AWQ_DTYPE" --max-model-len "$HALI_MAX_LEN" --load-format "$HALI_LOAD" --out "$OUT/hali_awq.json"
fi
if want w8a8 && want lmdeploy; then
  run lmd_w8a8 300 env MODEL_DIR="$W8A8_DIR" OUT="$OUT/lmd_w8a8" WORKLOADS=b1,offline THRU_REPS="$THRU_REPS" \
    LMD_BENCH_LOG=WARNING PYTHONPATH="$LMD_PP" python3 benchmarks/lmdeploy_quant_peer.py
fi
if want w8a8 && want halinfer; then
  run hali_w8a8 240 python3 benchmarks/throughput.py --model "$W8A8_DIR" --device "$HALI_DEVICE" \
    --workload offline-1000 $HALI_EXTRA --max-model-len "$HALI_MAX_LEN" --load-format "$HALI_LOAD" --out "$OUT/hali_w8a8.json"
fi

say "=== RESULT lines"
grep -h "^RESULT" "$OUT"/lmd_awq.log "$OUT"/lmd_w8a8.log 2>/dev/null | grep -v '"test": "env"' | tee -a "$LOG"
say "=== summary (halinfer / LMDeploy: > 1 means halinfer is faster)"
python3 - "$OUT" <<'EOF' 2>&1 | tee -a "$LOG"
import json, os, sys
out = sys.argv[1]

import time
stamps = {}

def read(p, parse):
    if not os.path.isfile(p):
        return None
    stamps[os.path.relpath(p, out)] = time.strftime("%H:%M:%S", time.localtime(os.path.getmtime(p)))
    return parse(open(p))

def results(name):
    return read(os.path.join(out, name, "lmdeploy_peer.json"), lambda f: [json.loads(l) for l in f]) or []

def hali(name):
    return (read(os.path.join(out, name), json.load) or {}).get("halinfer", {})

for fmt, lmd, h in (("AWQ", results("lmd_awq"), hali("hali_awq.json")),
                    ("W8A8", results("lmd_w8a8"), hali("hali_w8a8.json"))):
    b1 = next((r for r in lmd if r.get("test") == "batch1_decode"), None)
    offs = [r for r in lmd if r.get("test") == "offline_throughput_1000"]
    hb = h.get("decode-b1")
    if b1 or hb:
        line = f"{fmt} decode-b1: LMDeploy {b1['decode_tok_s'] if b1 else '-'} tok/s"
        if hb:
            line += (f" | halinfer {hb['tok_per_s']} tok/s ({hb['ms_per_token']} ms/token, "
                     f"{hb['roofline_fraction']:.1%} of its roofline)")
        if b1 and hb:
            line += f" | ratio {hb['tok_per_s'] / b1['decode_tok_s']:.2f}x"
        print(line)
    for i, name in enumerate(("first_pass", "steady")):
        ho = next((v for k, v in h.items() if k.startswith("offline-") and k.endswith("/" + name)), None)
        lo = offs[i] if i < len(offs) else None
        if ho or lo:
            line = f"{fmt} offline {name}: LMDeploy {lo['seconds'] if lo else '-'} s"
            if ho:
                line += f" | halinfer {ho['wall_s']} s ({ho['output_tok_per_s']} out tok/s)"
            if ho and lo:
                line += f" | ratio {lo['seconds'] / ho['wall_s']:.2f}x"
            print(line)
print("files:", ", ".join(f"{k} ({v})" for k, v in stamps.items()) or "none",
      "- a format not run in this call keeps an earlier call's figures in the same OUT")
EOF
say "peer_quant: done in $(( $(date +%s) - T0 ))s; logs in $OUT"
