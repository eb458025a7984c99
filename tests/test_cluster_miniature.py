"""configs/study_gpu.yaml's graph in miniature, end to end (issue 25): scripts/cluster_miniature.sh serves the
packaged model with a real `vllm serve`, starts a Ray head with logical GPUs and submits `xrlhf compare
configs/study_gpu_mini.yaml` with `ray job submit`; the run directory must show every role on its placement,
the rollout actors sampling with vLLM in .venv-vllm, the adapter version behind every batch, judge requests
answered by the vLLM server, and the report. Only CUDA is missing from a GPU cluster's run."""
import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.integration]
STEPS = 3  # configs/study_gpu_mini.yaml


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def miniature(tmp_path_factory):
    out = tmp_path_factory.mktemp("cluster-mini")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "cluster_miniature.sh"), str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=2400)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return out


def test_every_role_runs_on_its_placement_and_the_rollouts_in_the_vllm_env(miniature):
    placement = json.loads((miniature / "rloo-seed0" / "placement.json").read_text())
    assert placement["strategy"] == "SPREAD"
    actors = placement["actors"]
    assert sorted(a["role"] for a in actors) == ["judge", "judge", "learner", "reference", "rollout", "rollout"]
    assert len({a["pid"] for a in actors}) == 6
    by_role = {role: [a for a in actors if a["role"] == role] for role in ("rollout", "judge", "learner", "reference")}
    # logical GPUs as the config asks: one per rollout actor and the learner, half of one for the reference
    assert all(len(a["gpu_ids"]) == 1 for a in by_role["rollout"] + by_role["learner"] + by_role["reference"])
    assert all(a["gpu_ids"] == [] for a in by_role["judge"])
    assert {a["python"] for a in by_role["rollout"]} == {str(ROOT / ".venv-vllm" / "bin" / "python")}
    assert all(".venv-vllm" not in a["python"] for a in by_role["judge"] + by_role["learner"] + by_role["reference"])


def test_every_batch_records_the_adapter_version_it_was_sampled_with(miniature):
    """Pipelined (async_steps 1): step k's batch is sampled while the learner makes update k-1, so it comes from
    the adapter of update k-1 (version max(k-1, 0)), and the learner's last checkpoint holds version STEPS."""
    run = miniature / "rloo-seed0"
    metrics = _rows(run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(STEPS))
    assert [m["policy_version"] for m in metrics] == [max(k - 1, 0) for k in range(STEPS)]
    samples = _rows(run / "samples.jsonl")
    assert {(s["step"], s["policy_version"]) for s in samples} == {(k, max(k - 1, 0)) for k in range(STEPS)}
    ckpt = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["next_step"] == STEPS and state["policy_version"] == STEPS
    assert all(m["judge/missing"] == 0 for m in metrics)


def test_the_judges_were_answered_by_the_vllm_server(miniature):
    log = (miniature / "vllm-serve.log").read_text()
    answered = len(re.findall(r'"POST /v1/completions HTTP/1\.1" 200', log))
    samples = _rows(miniature / "rloo-seed0" / "samples.jsonl")
    # likelihood mode: two echo passes per sample, batched into requests; evaluation and validation add more
    assert answered >= 2, log[-3000:]
    assert all(s["reward"] is not None for s in samples)
    judge = json.loads((miniature / "eval" / "judge.json").read_text())
    assert judge == {"evaluation": "http gemma, mode likelihood", "evaluation_is_training": False}


def test_the_evaluation_and_report_are_written(miniature):
    evals = _rows(miniature / "eval" / "eval.jsonl")
    assert sorted({e["model"] for e in evals}) == ["base", "rloo-seed0"]
    assert len(evals) == 2 * 4 and all(e["reward"] is not None for e in evals)  # eval.num_prompts: 4
    report = (miniature / "report" / "report.html").read_text()
    assert "rloo" in report and "http gemma, mode likelihood" in report
