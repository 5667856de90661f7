#!/usr/bin/env bash
# Serving benchmark on a lent GPU: LMDeploy's api_server, then `halinfer serve`, on one saved
# Llama-3-8B-shaped bf16 checkpoint, one card (one server at a time, each with most of the
# memory), driven by benchmarks/serve.py with the same workload (DESIGN.md offline-1000 lengths,
# prompts as "t<id>" words of the WordLevel tokenizer, greedy, ignore_eos, max_tokens = drawn
# length) at concurrency 64, then 256 while time is left.  Prints RESULT lines; logs go to $OUT.
# Ends within 9 minutes (DEADLINE_S, default 530 s, bounds every phase).
#
# Before the call, on the development machine, from the repo root:
#   mkdir -p .peers && cp -r ../shared/peers/. .peers/ && bash .peers/make_payload.sh
#   grep -qx '/.peers/' .git/info/exclude || echo '/.peers/' >> .git/info/exclude
#   grep -qx '/.whl/' .git/info/exclude || echo '/.whl/' >> .git/info/exclude
#   O="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any"
#   python3 -m pip download $O -d .whl fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0 prometheus_client==0.26.0
#   python3 -m pip download $O -d .whl pydantic==2.13.4 pydantic_core==2.46.4 annotated-types==0.8.0 typing-inspection==0.4.2
#   python3 -m pip download $O -d .whl typing_extensions==4.16.0 anyio==4.16.0 sniffio==1.3.1 h11==0.16.0 click==8.5.1
#   python3 -m pip download $O -d .whl idna==3.20 annotated-doc==0.0.7 opentelemetry-api==1.45.2
# Then: run(command="bash benchmarks/gpu_serve.sh", carry=[".peers", ".whl"], timeout_s=600)
# Env: MODEL_DIR (/tmp/peer-llama), NUM_PROMPTS (1000), CONCURRENCIES ("64 256"), DEADLINE_S (530).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/serve_out}; mkdir -p "$OUT"
P=$PWD/.peers
export MODEL_DIR=${MODEL_DIR:-/tmp/peer-llama} MODEL_KIND=llama
NUM_PROMPTS=${NUM_PROMPTS:-1000}
CONCURRENCIES=${CONCURRENCIES:-"64 256"}
DEADLINE_S=${DEADLINE_S:-530}
RES="$OUT/serve_results.jsonl"; : >"$RES"
left() { echo $(( DEADLINE_S - SECONDS )); }

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  >"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/peersite \
  "$P"/payload/whl/*.whl >>"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
python3 -m pip install -q --no-deps --no-build-isolation -e . >>"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/card.txt"
CARD=$(head -1 "$OUT/card.txt" | cut -d, -f1)

BUILD_ONLY=1 PYTHONPATH=/tmp/peersite:$P/payload/py timeout $(left) python3 "$P/lmdeploy_peer.py" \
  >"$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }
echo "model built at ${SECONDS}s"

wait_ready() {  # port, seconds, pid: until GET /v1/models answers 200, or the server dies
  local t0=$SECONDS
  while (( SECONDS - t0 < $2 )); do
    kill -0 "$3" 2>/dev/null || return 1
    python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$1/v1/models', timeout=2)" \
      2>/dev/null && return 0
    sleep 2
  done
  return 1
}

stop_group() {  # pid of a setsid'd server: SIGTERM its group, SIGKILL after 20 s, wait for the card to empty
  kill -TERM -- -"$1" 2>/dev/null
  for _ in $(seq 20); do kill -0 "$1" 2>/dev/null || break; sleep 1; done
  kill -KILL -- -"$1" 2>/dev/null
  for _ in $(seq 30); do
    used=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
    (( used < 2000 )) && break; sleep 1
  done
}

bench() {  # engine, port, phase end (SECONDS)
  for c in $CONCURRENCIES; do
    local budget=$(( $3 - SECONDS - 5 ))
    if (( budget < 60 )); then echo "skip $1 concurrency $c: ${budget}s left in its phase"; continue; fi
    PYTHONPATH=/tmp/site timeout "$budget" python3 benchmarks/serve.py --base-url "http://127.0.0.1:$2" \
      --num-prompts "$NUM_PROMPTS" --max-concurrency "$c" --prompt-format words --warmup 8 \
      --label "$1-c$c" --out "$RES" 2>&1 | tee "$OUT/bench-$1-c$c.log" | grep -v '^RESULT'
    echo "rc=$? $1 concurrency $c at ${SECONDS}s"
  done
}

serve_phase() {  # name, port, phase end (SECONDS), env, server command...: start, wait, bench, stop
  local name=$1 port=$2 end=$3 env=$4; shift 4
  env $env setsid "$@" >"$OUT/$name.log" 2>&1 &
  local pid=$!
  if wait_ready "$port" $(( end - SECONDS - 70 )) $pid; then
    echo "$name ready at ${SECONDS}s"; bench "$name" "$port" "$end"
  else
    echo "$name did not come up"; tail -20 "$OUT/$name.log"
  fi
  stop_group $pid
}

# Each engine gets half of what is left after the build.
HALF=$(( ($(left) - 10) / 2 ))
# 1. LMDeploy's api_server (PyTorch engine, graph mode), port 23333
serve_phase lmdeploy 23333 $(( SECONDS + HALF )) "PORT=23333 PYTHONPATH=/tmp/peersite:$P/payload/py" \
  python3 "$P/lmdeploy_serve.py"
# 2. halinfer serve, port 8000
serve_phase halinfer 8000 $(( DEADLINE_S - 5 )) "PYTHONPATH=/tmp/site" \
  python3 -m halinfer.cli serve "$MODEL_DIR" --device cuda --dtype bfloat16 --port 8000 --max-num-seqs 256 \
  --gpu-memory-utilization 0.85 --log-level warning

python3 - "$RES" "$CARD" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {r["label"]: r for r in rows}
for r in rows:
    print("RESULT " + json.dumps({"test": "serve_" + r["label"], "card": sys.argv[2], "completed": r["completed"],
          "failed": r["failed"], "wrong_output_len": r["wrong_output_len"], "duration_s": round(r["duration_s"], 2),
          "req_s": round(r["request_throughput"], 2), "out_tok_s": round(r["output_throughput"], 1),
          "prompt_tokens": r["total_prompt_tokens_reported"],
          **{f"{m}_{p}": round(r[m + "_ms"][p], 1) for m in ("ttft", "tpot", "itl") for p in ("p50", "p90", "p99")
             if r[m + "_ms"][p] is not None}}))
for c in ("64", "256"):
    h, l = by.get(f"halinfer-c{c}"), by.get(f"lmdeploy-c{c}")
    if h and l:
        print("RESULT " + json.dumps({"test": f"serve_compare_c{c}", "card": sys.argv[2],
              "out_tok_s_ratio": round(h["output_throughput"] / l["output_throughput"], 3),
              "tpot_p99_ms": [round(h["tpot_ms"]["p99"], 1), round(l["tpot_ms"]["p99"], 1)],
              "throughput_at_least_lmdeploy": h["output_throughput"] >= l["output_throughput"],
              "tpot_p99_no_worse": h["tpot_ms"]["p99"] <= l["tpot_ms"]["p99"]}))
PY
echo "done at ${SECONDS}s"
