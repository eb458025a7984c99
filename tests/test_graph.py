"""The actor graph end to end with real Ray: learning, weight sync, checkpoints, resume, job submission."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray

import torch

from faults import rows as _rows, train_in_thread, wait_rows
from xrlhf.config import load_config
from xrlhf.driver.controller import Controller, shutdown_graph
from xrlhf.driver.graph import ActorRoles, build_graph, kill
from xrlhf.driver.step import gather, start_learn
from xrlhf.ops import response_logprobs
from xrlhf.policy.models import load_causal_lm

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def _train(tmp_path: Path, name: str, *overrides: str) -> Path:
    cfg = load_config(ROOT / "configs/tiny.yaml", list(overrides))
    controller = Controller(cfg, tmp_path / name)
    try:
        return controller.train()
    finally:
        shutdown_graph(controller)


@pytest.mark.parametrize("algorithm,async_steps", [("reinforce", 0), ("ppo", 0), ("reinforce", 1), ("ppo", 1)])
def test_both_learners_raise_a_verifiable_reward(local_ray, tmp_path, algorithm, async_steps):
    """Rule judge (rewards the letter 'e'); the same seed and graph; the reward clearly rises for both, sequential
    and pipelined (samples one update behind, corrected by PPO's ratio and REINFORCE's importance weights)."""
    run = _train(tmp_path, algorithm, f"algorithm.name={algorithm}", "steps=30", "checkpoint.every=100",
                 f"algorithm.async_steps={async_steps}")
    rows = _rows(run / "metrics.jsonl")
    rewards = [r["reward/mean"] for r in rows]
    assert len(rewards) == 30
    start, end = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert end > start + 0.15, f"{algorithm}: reward {start:.3f} -> {end:.3f}"
    assert [r["async/staleness"] for r in rows] == [0] + [async_steps] * 29


def test_pipelined_steps_overlap_the_update_with_the_next_rollout(local_ray, tmp_path):
    """algorithm.async_steps=1: by the actors' own clocks, the learner's update of step k and the rollout of step
    k+1 run at the same time; the samples of k+1 carry the version before update k."""
    run = _train(tmp_path, "pipelined", "steps=5", "algorithm.async_steps=1", "algorithm.name=ppo")
    rows = _rows(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    for k in range(4):
        update, rollout = rows[k], rows[k + 1]
        assert rollout["clock/rollout_start"] < update["clock/learner_end"], k
        assert update["clock/learner_start"] < rollout["clock/rollout_end"], k
    samples = _rows(run / "samples.jsonl")
    assert {(s["step"], s["policy_version"]) for s in samples} == {(0, 0), (1, 0), (2, 1), (3, 2), (4, 3)}
    assert {(s["step"], s["staleness"]) for s in samples} == {(0, 0), (1, 1), (2, 1), (3, 1), (4, 1)}
    sequential = _rows(_train(tmp_path, "sequential", "steps=3", "algorithm.name=ppo") / "metrics.jsonl")
    for k in range(2):  # sequential: the next rollout starts after the update (and the weight sync) ended
        assert sequential[k + 1]["clock/rollout_start"] > sequential[k]["clock/learner_end"]


def test_rollouts_after_an_update_use_the_new_weights(local_ray, tmp_path):
    run = _train(tmp_path, "sync", "steps=3")
    samples = _rows(run / "samples.jsonl")
    # every step samples with the weights of the previous step's update: version == step
    assert {(s["step"], s["policy_version"]) for s in samples} == {(0, 0), (1, 1), (2, 2)}
    metrics = _rows(run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [0, 1, 2]
    for key in ("reward/mean", "kl/mean", "time/rollout", "time/judge", "time/learner", "grad_norm", "judge/missing"):
        assert all(key in m for m in metrics), key
    # the reference pass's own seconds: positive, and within the collection time that follows the judges
    assert all(0 < m["time/reference_pass"] <= m["time/reference"] for m in metrics)
    ckpt = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    assert json.loads((ckpt / "trainer_state.json").read_text())["next_step"] == 3


def test_a_missing_rollout_python_is_a_clear_error_before_any_actor(local_ray, tmp_path):
    missing = tmp_path / "no-venv" / "bin" / "python"
    with pytest.raises(ValueError, match=rf"rollout.python={re.escape(str(missing))} is not an executable on this "
                                         r"machine: build the environment first \(scripts/setup_vllm_env.sh"):
        _train(tmp_path, "missing", "steps=1", f"rollout.python={missing}")


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_the_reference_actor_stays_the_base_after_updates(local_ray, lora):
    """resources.colocate_reference=false: after two updates and their weight syncs, the reference actor gives the
    base model's log-probs, not those of the policy that sampled the batch (the colocated reference:
    tests/learners/test_reference.py)."""
    cfg = load_config(ROOT / "configs/tiny.yaml", [f"model.lora.enabled={str(lora).lower()}", "model.lora.r=4",
                                                   "resources.colocate_reference=false", "algorithm.name=reinforce",
                                                   "algorithm.lr=0.05"])
    graph = build_graph(cfg)
    try:
        roles = ActorRoles(graph)
        prompts = ["Say something.", "Name a fruit.", "Tell me a story.", "Write a poem."]
        for step in range(2):
            start_learn(roles, gather(roles, prompts, step, cfg.algorithm.kl_estimator))()
        exp = gather(roles, prompts, 2, cfg.algorithm.kl_estimator).exp
    finally:
        kill(graph)
    assert exp.policy_version == 2
    base, _ = load_causal_lm("tiny")
    with torch.no_grad():
        base_lp = response_logprobs(base, exp.input_ids, exp.attention_mask, exp.response_len).logprobs  # [B, R]
    mask = exp.response_mask.bool()
    assert (exp.ref_logprobs - exp.behaviour_logprobs)[mask].abs().max() > 1e-2  # the sampler's policy moved
    torch.testing.assert_close(exp.ref_logprobs[mask], base_lp[mask], atol=1e-4, rtol=0)
    assert float(exp.kl.abs().sum()) > 0


def test_no_algorithm_branch_outside_the_learners():
    """The driver, the step, the graph, the rows and every actor but the learner never name an algorithm."""
    paths = [ROOT / f"xrlhf/driver/{m}.py" for m in ("controller", "step", "graph", "metrics", "validation", "rundir")]
    paths += [p for p in (ROOT / "xrlhf/actors").glob("*.py") if p.name != "learner.py"]
    paths += list((ROOT / "actors").glob("*.py"))
    assert len(paths) >= 10 and all(p.is_file() for p in paths)
    for path in paths:
        text = path.read_text()
        assert not re.search(r"['\"](ppo|reinforce)['\"]", text), path
        assert "algorithm.name" not in text.replace('"algorithm": cfg.algorithm.name', ""), path


def _run_cli(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "xrlhf.cli", *args], cwd=ROOT, start_new_session=True, **kw)


def test_sigkill_mid_run_then_resume_has_each_step_once(tmp_path):
    run = tmp_path / "killed"
    args = ["train", "configs/tiny.yaml", "steps=8", "checkpoint.every=2", "algorithm.name=ppo"]
    proc = _run_cli([*args, "--run-dir", str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        if (run / "metrics.jsonl").exists() and len(_rows(run / "metrics.jsonl")) >= 5:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
    proc.wait()
    assert len(_rows(run / "metrics.jsonl")) < 8, "the run finished before it could be killed"
    done = subprocess.run([sys.executable, "-m", "xrlhf.cli", "train", *args[1:], "--resume", str(run)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    steps = [r["step"] for r in _rows(run / "metrics.jsonl")]
    assert steps == list(range(8))
    sample_steps = [r["step"] for r in _rows(run / "samples.jsonl")]
    assert sorted(set(sample_steps)) == list(range(8)) and len(sample_steps) == 8 * 16
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_000008"


def _kill_processes_mentioning(text: str) -> None:
    """SIGKILL every process whose command line holds text: one head's processes, not every Ray on the machine."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if text.encode() in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass


def test_ray_job_submit_to_a_local_head(tmp_path):
    import secrets
    import socket
    import tempfile

    ports = []
    for _ in range(6):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(str(s.getsockname()[1]))
    # Every port of its own: the agents' default ports are fixed numbers, and while another Ray runs on the
    # machine (this module's local_ray) a second head's job agent could not bind them and never registered.
    port, dash, agent, agent_grpc, runtime_env, metrics = ports
    # A temp dir of its own (short: Ray's socket paths must fit 107 bytes) marks this head's processes, so
    # the test stops them alone; `ray stop` would stop every Ray instance on the machine.
    temp_dir = tempfile.mkdtemp(prefix="xrj", dir="/tmp")
    # Ray 2.60 clusters require a token: the head and the submitting client share one.
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    subprocess.run(["ray", "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=4",
                    "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true",
                    f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
                    f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
                    f"--temp-dir={temp_dir}", "--disable-usage-stats"], check=True, capture_output=True, env=env,
                   timeout=120)
    try:
        run = tmp_path / "job-run"
        # The head's job agent registers a few seconds after `ray start` returns (longer on a loaded machine);
        # until then the server answers "No available agent to submit job", and the submission is retried.
        deadline = time.monotonic() + 180
        while True:
            out = subprocess.run(["ray", "job", "submit", f"--address=http://127.0.0.1:{dash}", "--working-dir",
                                  ".", "--", "xrlhf", "train", "configs/tiny.yaml", "steps=2", "--run-dir", str(run)],
                                 cwd=ROOT, capture_output=True, text=True, timeout=400, env=env)
            if "No available agent" not in out.stdout + out.stderr or time.monotonic() > deadline:
                break
            time.sleep(5)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
        assert "succeeded" in out.stdout.lower()
        assert [r["step"] for r in _rows(run / "metrics.jsonl")] == [0, 1]
    finally:
        _kill_processes_mentioning(temp_dir)


@pytest.mark.parametrize("role", ["rollouts", "judges"])
def test_killed_actor_is_restarted_and_its_step_retried(local_ray, tmp_path, role):
    """SIGKILL a rollout or judge actor process mid-run: Ray restarts it, the step is retried, no step repeats."""
    cfg = load_config(ROOT / "configs/tiny.yaml", ["steps=6", "rollout.max_new_tokens=24"])
    controller = Controller(cfg, tmp_path / role)
    thread, errors = train_in_thread(controller)
    metrics = tmp_path / role / "metrics.jsonl"
    wait_rows(metrics, 2, 180, thread.is_alive)
    victim = getattr(controller.graph, role)[0]
    os.kill(ray.get(victim.pid.remote()), signal.SIGKILL)
    thread.join(timeout=300)
    try:
        assert not errors, errors
        assert [r["step"] for r in _rows(metrics)] == list(range(6))
        new_pid = ray.get(victim.pid.remote())
        assert new_pid > 0
    finally:
        shutdown_graph(controller)
