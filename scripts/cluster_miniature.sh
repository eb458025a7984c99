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

# A temp dir of its own (short: Ray's socket paths must fit 107 bytes) marks this head's processes, so the
# cleanup stops them alone; `ray stop` would stop every Ray on the machine.
work=$(mktemp -d /tmp/xcm.XXXXXX)
server=""
cleanup() {
    [[ -n $server ]] && kill -- "-$server" 2>/dev/null || true
    pkill -9 -f -- "$work" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

JUDGE_PORT=$(free_port)
JUDGE_URL="http://127.0.0.1:$JUDGE_PORT/v1"
step "vllm serve $MODEL as 'gemma' at $JUDGE_URL (log: $OUT/vllm-serve.log)"
# Its own session, so the cleanup can stop the server and its engine process together. The judges wait for it
# to load (judge.http.ready_timeout_s) while the rest of the graph starts.
VLLM_CPU_KVCACHE_SPACE=2 setsid .venv-vllm/bin/vllm serve "$MODEL" --served-model-name gemma --host 127.0.0.1 \
    --port "$JUDGE_PORT" --dtype float32 --enforce-eager --max-model-len 2048 > "$OUT/vllm-serve.log" 2>&1 &
server=$!

# Ray 2.60 heads require a token: the head and the submitting client share one. Every port is a free one.
export RAY_ADDRESS="" RAY_AUTH_MODE=token
RAY_AUTH_TOKEN=$(python -c 'import secrets; print(secrets.token_hex(32))')
export RAY_AUTH_TOKEN
port=$(free_port); dash=$(free_port); agent=$(free_port); agent_grpc=$(free_port); renv=$(free_port)
metrics=$(free_port)
step "ray start --head (8 logical CPUs, 4 logical GPUs)"
ray start --head --port="$port" --num-cpus=8 --num-gpus=4 --dashboard-host=127.0.0.1 --dashboard-port="$dash" \
    --include-dashboard=true --dashboard-agent-listen-port="$agent" --dashboard-agent-grpc-port="$agent_grpc" \
    --runtime-env-agent-port="$renv" --metrics-export-port="$metrics" --temp-dir="$work" \
    --disable-usage-stats > "$OUT/ray-start.log" 2>&1

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
