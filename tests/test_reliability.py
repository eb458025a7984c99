"""Faults injected for real: a failing HTTP judge in a full run, killed actors and processes, torn checkpoints,
NaN updates, bad input at the CLI, and what a local run exposes. RELIABILITY.md maps each fault to its test."""
import copy
import ipaddress
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psutil
import pytest
import ray
import torch

from faults import GOOD_SCORE, FaultServer, find_actor, listening, process_tree
from faults import rows as _rows, train_in_thread as _train_in_thread, wait_rows as _wait_rows
from xrlhf.config import Config, ResourcesConfig, load_config
from xrlhf.driver.controller import Controller, JudgeUnavailableError, shutdown_graph
from xrlhf.driver.graph import init_ray
from xrlhf.driver.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs/tiny.yaml"
KEY_ENV = "XRLHF_RELIABILITY_JUDGE_KEY"
KEY = f"sk-planted-{secrets.token_hex(12)}"
TWO_DIMS = "judge.dimensions={helpfulness: {definition: Does what was asked}, correctness: {definition: Facts are right}}"


def _policy(ckpt: Path) -> dict[str, torch.Tensor]:
    return RunDir(ckpt.parent.parent).load_checkpoint(ckpt)[0]["trainer"]["policy"]


def _finite(state: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(t).all() for t in state.values())


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    return addr.is_loopback or bool(getattr(addr, "ipv4_mapped", None) and addr.ipv4_mapped.is_loopback)


def _outside_ips() -> list[str]:
    """This machine's IPv4 addresses that are not loopback: what another host would connect to."""
    return [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family == socket.AF_INET and not _loopback(a.address)]


def _refused_from_outside(port: int, ours: set[int]) -> bool:
    """No connection to `port` through a non-loopback address of this machine succeeds. A port that another
    process (not in `ours`) also listens on is skipped: gRPC's SO_REUSEPORT lets it share the number."""
    if any(c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid not in ours
           for c in psutil.net_connections(kind="tcp")):
        return True
    for ip in _outside_ips():
        with socket.socket() as s:
            s.settimeout(2)
            if s.connect_ex((ip, port)) == 0:
                return False
    return True


def _title(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def _grpc_unauthenticated(ip: str, port: int) -> bool:
    """A call without Ray's token to a Serve replica's internal gRPC service is refused as UNAUTHENTICATED."""
    import grpc

    with grpc.insecure_channel(f"{ip}:{port}") as channel:
        call = channel.unary_unary("/ray.serve.ASGIService/HandleRequest", request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)
        try:
            call(b"", timeout=10)
        except grpc.RpcError as err:
            return err.code() == grpc.StatusCode.UNAUTHENTICATED
    return False


@pytest.fixture(scope="module")
def local_ray():
    """Ray started as xrlhf starts it from Python (init_ray), not as the CLI does, with token authentication set
    here, whatever the caller's RAY_AUTH_MODE (the unauthenticated modes are tested in test_exposure.py)."""
    from ray._private.authentication_test_utils import reset_auth_token_state

    os.environ[KEY_ENV] = KEY  # before Ray starts: local workers inherit the driver's environment
    mode_before = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "token"
    # This process read RAY_AUTH_MODE at `import ray`; without a refresh a caller's =disabled stays in force
    # here, and the driver cannot reach its own token-mode GCS ("Failed to start GCS").
    reset_auth_token_state()
    init_ray(ResourcesConfig(num_cpus=2))
    yield
    ray.shutdown()
    del os.environ[KEY_ENV]
    if mode_before is None:
        os.environ.pop("RAY_AUTH_MODE")
    else:
        os.environ["RAY_AUTH_MODE"] = mode_before
    reset_auth_token_state()


@contextmanager
def _training(cfg: Config, run: Path, caplog: pytest.LogCaptureFixture,
              rows: int) -> Iterator[tuple[Controller, threading.Thread, list[BaseException]]]:
    """A Controller training into `run` in a thread, entered once metrics.jsonl holds `rows` rows; on leaving,
    its wandb run is finished and its actor graph shut down. Yields the controller, the thread and its errors."""
    controller = Controller(cfg, run)
    caplog.set_level(logging.WARNING, logger="xrlhf")
    thread, errors = _train_in_thread(controller)
    try:
        _wait_rows(run / "metrics.jsonl", rows, 300, thread.is_alive)
        yield controller, thread, errors
    finally:
        if getattr(controller, "wandb", None) is not None:
            controller.wandb.finish()
        shutdown_graph(controller)


# --- judge faults in a full run, and a planted API key --------------------------------------------------

@pytest.mark.integration
def test_http_judge_failing_some_then_all_requests(local_ray, tmp_path, caplog, capfd):
    """Some judge requests fail (500 echoing the key, garbage, empty, stall): the run goes on, counts each
    failure per step, never scores a failure. Then all fail: it stops within the configured time with a
    checkpoint, and the finished steps stay. The planted key is nowhere in the run dir, wandb or logs."""
    server = FaultServer(KEY)
    server.set("rotate", fail_first=2, fraction=0.4)  # 40 % of prompts fail once, 16 % twice
    limit_s = 8.0
    cfg = load_config(TINY, [
        "steps=200", "checkpoint.every=2", "judge.backend=http", TWO_DIMS, "judge.cache=false",
        f"judge.http.base_url={server.url}", f"judge.http.api_key_env={KEY_ENV}", "judge.http.timeout_s=1.0",
        "judge.http.max_retries=1", "judge.http.backoff_s=0.01", "judge.http.max_backoff_s=0.05",
        "judge.max_consecutive_failed_steps=1000", f"judge.max_seconds_without_success={limit_s}",
        "logging.level=DEBUG", "logging.wandb=true", "logging.wandb_mode=offline"])
    run = tmp_path / "http-judge"
    try:
        with _training(cfg, run, caplog, rows=4) as (_, thread, errors):
            server.set("rotate")
            t_all = time.monotonic()
            thread.join(timeout=180)
            t_stop = time.monotonic()
            assert not thread.is_alive(), "the run did not stop after the judge failed every request"
    finally:
        server.close()

    # a clear error, in time, naming the limit
    assert len(errors) == 1 and isinstance(errors[0], JudgeUnavailableError), errors
    assert "judge.max_seconds_without_success=8" in str(errors[0])
    assert t_stop - t_all < limit_s + 45, f"stopped {t_stop - t_all:.0f} s after the judge went down"
    rows = _rows(run / "metrics.jsonl")
    steps = [r["step"] for r in rows]
    assert steps == list(range(len(rows)))
    stopped_at = len(rows)
    dead = [r for r in rows if r["reward/mean"] is None]
    alive = [r for r in rows if r["reward/mean"] is not None]
    assert len(alive) >= 4 and rows[:len(alive)] == alive  # the steps without any score come last

    # while some requests fail: counted per step (retried ones and lost ones), training continues
    assert sum(r["judge/retries"] for r in alive) > 0 and sum(r["judge/failures"] for r in alive) > 0
    assert sum(r["judge/missing"] for r in alive) > 0
    assert all(r["skipped_update"] is False for r in alive)
    # when all fail: no sample rewarded, no update, every dimension score counted as failed
    for r in dead:
        assert r["judge/dropped"] == 16 and r["judge/failures"] == 32 and r["skipped_update"] is True
    # every fault the server sent is in metrics.jsonl, the final step's (the one that stopped the run) included
    injected = sum(server.injected.values())
    assert set(server.injected) == {"500", "garbage", "empty", "stall"}
    assert sum(r["judge/retries"] + r["judge/failures"] for r in rows) == injected
    assert caplog.text.count("the judge scored no sample") == len(dead) >= 1

    # a failure is never a reward: a sample has the server's score or none (not 0)
    samples = _rows(run / "samples.jsonl")
    assert len(samples) == 16 * stopped_at
    rewards = [s["reward"] for s in samples]
    assert None in rewards and all(r is None or r == pytest.approx(GOOD_SCORE / 4) for r in rewards)
    assert all(v is None or v == pytest.approx(GOOD_SCORE) for s in samples for v in s["scores"].values())

    # the checkpoint after the failing step; finished steps are not lost
    latest = RunDir(run).latest_checkpoint()
    assert latest.name == f"step_{stopped_at:06d}"
    assert json.loads((latest / "trainer_state.json").read_text())["next_step"] == stopped_at
    assert _finite(_policy(latest))

    # the key was used (no request went without it), and it was echoed back by every 500
    assert server.unauthorised == 0 and server.ok > 0 and server.injected["500"] > 0
    out, err = capfd.readouterr()
    texts = {"captured stdout/stderr": out + err, "logs": caplog.text}
    files = [p for p in run.rglob("*") if p.is_file()]
    assert any("wandb" in p.parts for p in files), "no wandb files were written"
    session_logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    files += [p for p in session_logs.rglob("*") if p.is_file()]
    for path in files:
        assert KEY.encode() not in path.read_bytes(), f"the API key leaked into {path}"
    for name, text in texts.items():
        assert KEY not in text, f"the API key leaked into {name}"
    # the echoed header was logged redacted (DEBUG retry messages of the judge actor)
    assert any(b"request had Bearer ***" in p.read_bytes() for p in session_logs.glob("worker-*"))


# --- a reference actor killed mid-step, and one NaN update, in a run that finishes ----------------------

@pytest.mark.integration
def test_reference_actor_killed_mid_step_and_a_nan_update(local_ray, tmp_path, caplog):
    """SIGKILL the separate reference actor while it computes: Ray restarts it, the step is retried, the run
    finishes every planned step once. A NaN loss (fault-injection hook) at update 1 is skipped and logged,
    and the weights across it are bit-identical and finite in the checkpoints."""
    cfg = load_config(TINY, ["steps=6", "resources.colocate_reference=false", "rollout.max_new_tokens=48",
                             "checkpoint.every=1", "checkpoint.keep_last=10", "algorithm.debug_inject_nonfinite=[1]"])
    run = tmp_path / "reference"
    with _training(cfg, run, caplog, rows=2) as (controller, thread, errors):
        victim = find_actor(os.getpid(), "ReferenceActor", timeout_s=10)
        old_pid = victim.pid
        deadline = time.time() + 60
        while time.time() < deadline:  # kill it while it runs reference_logprobs, not between calls
            if "reference_logprobs" in " ".join(victim.cmdline()):
                victim.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        else:
            pytest.fail("never saw the reference actor working")
        thread.join(timeout=300)
        assert not thread.is_alive() and not errors, errors
        new_pid = ray.get(controller.graph.reference.pid.remote())

    assert new_pid != old_pid
    assert "an actor died (" in caplog.text and "retrying the step (1/2)" in caplog.text
    rows = _rows(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(6))
    assert sorted({s["step"] for s in _rows(run / "samples.jsonl")}) == list(range(6))
    assert len(_rows(run / "samples.jsonl")) == 6 * 16
    # the NaN update: skipped, logged in metrics; weights before == after it, all checkpoints finite
    assert [r["skipped_update"] for r in rows] == [False, True, False, False, False, False]
    ckpts = {n: _policy(run / "checkpoints" / f"step_{n:06d}") for n in range(1, 7)}
    assert all(_finite(s) for s in ckpts.values())
    assert _same(ckpts[1], ckpts[2]) and not _same(ckpts[2], ckpts[3])
    assert [r["policy_version"] for r in rows] == [0, 1, 1, 2, 3, 4]


@pytest.mark.integration
def test_an_actor_ray_does_not_restart_stops_the_run_at_once_with_its_finished_steps(local_ray, tmp_path, caplog):
    """resources.max_restarts=0: the reference actor SIGKILLed mid-run is not coming back, so the retried step
    stops the run at once with a line that says so and where to resume, instead of waiting for a restart; every
    step finished before stays, once."""
    from xrlhf.driver.controller import ActorLostError

    cfg = load_config(TINY, ["steps=40", "resources.colocate_reference=false", "resources.max_restarts=0",
                             "checkpoint.every=1"])
    run = tmp_path / "norestart"
    with _training(cfg, run, caplog, rows=2) as (controller, thread, errors):
        find_actor(os.getpid(), "ReferenceActor", timeout_s=10).send_signal(signal.SIGKILL)
        killed = time.monotonic()
        thread.join(timeout=300)
        stopped_after = time.monotonic() - killed
    assert not thread.is_alive() and len(errors) == 1 and isinstance(errors[0], ActorLostError), errors
    assert "the actor died (resources.max_restarts=0)" in str(errors[0]) and f"--resume {run}" in str(errors[0])
    assert stopped_after < 30, stopped_after
    steps = [r["step"] for r in _rows(run / "metrics.jsonl")]
    assert 2 <= len(steps) < 40 and steps == list(range(len(steps)))


# --- serve-judge binds to 127.0.0.1 -----------------------------------------------------------------------

@pytest.mark.integration
def test_serve_judge_and_library_ray_listen_on_loopback_only(local_ray):
    """serve-judge on the Ray that init_ray started from Python (no CLI): the Serve port and every socket
    of Ray's own processes are bound to 127.0.0.1 and refuse connections from outside."""
    import httpx

    from xrlhf.config import Config
    from xrlhf.judge.serve import start_judge_server, stop_judge_server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = Config.model_validate({"model": {"name": "tiny"}, "judge": {"model": "tiny", "serve": {"port": port}},
                                 "resources": {"judge": {"num_cpus": 0.5, "torch_threads": 1}}})
    assert cfg.judge.serve.host == "127.0.0.1"  # the default, not set here
    url = start_judge_server(cfg)
    try:
        assert httpx.get(url.removesuffix("/v1") + "/health", timeout=30).status_code == 200
        ours = {p.pid for p in process_tree(os.getpid())}
        sockets = listening(ours)
        assert any(p == port for _, _, p in sockets), f"nothing of ours listens on the Serve port {port}"
        # Ray Serve 2.60 binds each replica's inter-deployment gRPC server to [::]:0, hard-coded
        # (ray/serve/_private/replica.py); it must at least refuse callers without the cluster's token.
        internal = [s for s in sockets if not _loopback(s[1]) and _title(s[0]).startswith("ray::ServeReplica")]
        for _, _, p in internal:
            assert _grpc_unauthenticated((_outside_ips() or ["127.0.0.1"])[0], p)
        exposed = [s for s in sockets if not _loopback(s[1]) and s not in internal]
        assert not exposed, f"listening beyond loopback: {exposed}"
        assert all(_refused_from_outside(p, ours) for _, _, p in sockets if all(p != q for _, _, q in internal))
    finally:
        stop_judge_server()


# --- the CLI: too many NaN updates, over-long prompts, what a local run listens on ----------------------

@pytest.mark.integration
def test_cli_run_stops_on_repeated_nan_and_listens_on_loopback_only(tmp_path):
    """`xrlhf train` with the dashboard on and a prompt file with over-long rows: the over-long rows are a
    counted skip; every socket the run's processes listen on is 127.0.0.1; three NaN updates in a row stop
    it with a one-line error, no traceback, and finite checkpoints from before."""
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"prompt": f"Write a short note about topic {i}."} for i in range(12)] + \
           [{"prompt": "very long " * 200 + str(i)} for i in range(3)]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "cli-nan"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-m", "xrlhf.cli", "train", str(TINY), "steps=8", "data.source=file",
                             f"data.path={prompts}", "data.max_prompt_tokens=64", "resources.include_dashboard=true",
                             "algorithm.debug_inject_nonfinite=[2,3,4]", "--run-dir", str(run)],
                            cwd=ROOT, env=env, stdout=(tmp_path / "out").open("w"),
                            stderr=(tmp_path / "err").open("w"), start_new_session=True)
    try:
        _wait_rows(run / "metrics.jsonl", 1, 400, lambda: proc.poll() is None)
        ours = {p.pid for p in process_tree(proc.pid)}
        sockets = listening(ours)
        refused = all(_refused_from_outside(port, ours) for _, _, port in sockets)
        proc.wait(timeout=300)
        err = (tmp_path / "err").read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert sockets, "found no listening socket of the run (is psutil allowed to see them?)"
    exposed = [s for s in sockets if not _loopback(s[1])]
    assert not exposed, f"listening beyond loopback: {exposed}"
    assert refused, "a port of the run accepted a connection through a non-loopback address"

    assert proc.returncode == 1, err[-3000:]
    assert "Traceback" not in err
    ours = [line for line in err.splitlines() if line.startswith("xrlhf train:")]  # not Ray's forwarded worker logs
    assert ours == ["xrlhf train: 3 consecutive updates had a non-finite loss; stopping "
                    "(lower algorithm.lr or check the reward)"], ours
    assert err.count("non-finite loss: update skipped") >= 2  # logged (the last may be cut off at exit)
    assert "skipped {'too_long': 3}" in err
    metrics = _rows(run / "metrics.jsonl")
    assert [r["step"] for r in metrics] == [0, 1, 2, 3]
    assert [r["skipped_update"] for r in metrics] == [False, False, True, True]
    ck = run / "checkpoints"
    assert (ck / "latest").read_text().strip() == "step_000004"
    assert _same(_policy(ck / "step_000002"), _policy(ck / "step_000004"))  # the skipped steps changed nothing
    assert _finite(_policy(ck / "step_000004"))


# --- numerical faults inside the learner, no Ray --------------------------------------------------------

def test_nan_loss_and_inf_gradient_skip_the_update_and_keep_the_weights(tmp_path):
    from xrlhf.learners import make_learner
    from xrlhf.learners.common import NonFiniteError
    from xrlhf.policy.generation import sample
    from xrlhf.policy.models import trainable_state

    cfg = load_config(TINY, ["algorithm.max_nonfinite_in_a_row=3"])
    learner = make_learner(cfg)
    trainer = learner.trainer
    exp = sample(trainer.model, trainer.tokenizer, ["Say something.", "Name a fruit."], 4, 12, seed=0)
    exp.set_reference(exp.behaviour_logprobs.clone(), cfg.algorithm.kl_estimator)
    exp.rewards = torch.linspace(0.0, 1.0, 8)

    def weights():
        return {k: v.clone() for k, v in trainable_state(trainer.model).items()}

    def optimiser():
        return copy.deepcopy(trainer.optimizer.state_dict())

    before, opt_before = weights(), optimiser()
    nan_reward = copy.copy(exp)
    nan_reward.rewards = exp.rewards.clone()
    nan_reward.rewards[3] = float("nan")  # a judge that returned NaN: the loss is NaN
    metrics, _ = learner.update(nan_reward)
    assert metrics["skipped_update"] is True
    assert _same(weights(), before) and optimiser() == opt_before

    param = next(p for p in trainer.model.parameters() if p.requires_grad)
    hook = param.register_hook(lambda g: g * float("inf"))  # an overflow in backward: finite loss, Inf gradient
    metrics, _ = learner.update(exp)
    hook.remove()
    assert metrics["skipped_update"] is True and torch.isfinite(torch.tensor(metrics["loss/policy"]))
    assert _same(weights(), before) and optimiser() == opt_before
    assert trainer.nonfinite_in_a_row == 2 and trainer.skipped_updates == 2 and trainer.version == 0

    metrics, _ = learner.update(exp)  # a good batch: applied, and the count of NaNs in a row starts again
    assert metrics["skipped_update"] is False and trainer.nonfinite_in_a_row == 0 and trainer.version == 1
    good = weights()
    assert not _same(good, before) and _finite(good)

    with pytest.raises(NonFiniteError, match="3 consecutive updates had a non-finite loss"):
        for _ in range(3):
            learner.update(nan_reward)
    assert _same(weights(), good)

    run = RunDir(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    ckpt = run.save_checkpoint(1, learner.state(), {"next_step": 1}, trainer.save_adapter, keep_last=2)
    fresh = make_learner(cfg)
    fresh.load_state(run.load_checkpoint(ckpt)[0])
    assert _same(trainable_state(fresh.trainer.model), good)


# --- checkpoints: a kill during a save, a torn latest ---------------------------------------------------

SAVER = r"""
import sys, time
from pathlib import Path
import torch
from xrlhf.driver.rundir import RunDir

run = RunDir(sys.argv[1])
run.checkpoints.mkdir(parents=True, exist_ok=True)

def adapter(size, pause):
    def save(path):
        Path(path).mkdir()
        with open(Path(path) / "adapter_model.safetensors", "wb") as f:
            if pause:
                print("writing", flush=True)
            for _ in range(size):
                f.write(b"w" * 100_000)
                f.flush()
                time.sleep(pause)
    return save

run.save_checkpoint(2, {"trainer": {"policy": {"w": torch.full((4,), 2.0)}}}, {"next_step": 2}, adapter(1, 0), 2)
run.save_checkpoint(4, {"trainer": {"policy": {"w": torch.full((4,), 4.0)}}}, {"next_step": 4}, adapter(3000, 0.01), 2)
"""


def test_checkpoint_killed_while_written_is_never_loaded(tmp_path):
    run = RunDir(tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(run.path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)  # mid-way through the step 4 adapter
    proc.wait()
    assert [p.name for p in run.checkpoints.glob(".tmp-*")], "the kill did not land during the save"
    assert not (run.checkpoints / "step_000004").exists()
    latest = run.latest_checkpoint()
    assert latest.name == "step_000002"
    assert torch.equal(run.load_checkpoint(latest)[0]["trainer"]["policy"]["w"], torch.full((4,), 2.0))
    # the next save clears the half-written folder
    run.save_checkpoint(4, {"x": 1}, {"next_step": 4}, lambda p: Path(p).mkdir(), keep_last=2)
    assert not list(run.checkpoints.glob(".tmp-*")) and run.latest_checkpoint().name == "step_000004"


def test_torn_latest_checkpoint_falls_back_to_the_last_complete_one(tmp_path):
    run = RunDir(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    for n in (2, 4):
        run.save_checkpoint(n, {"n": n}, {"next_step": n}, lambda p: Path(p).mkdir(), keep_last=5)
    # what a kill while step_4 was being replaced or removed could leave: `latest` names a torn folder
    (run.checkpoints / "step_000004" / "trainer_state.json").unlink()
    assert run.latest_checkpoint().name == "step_000002"
    assert run.load_checkpoint(run.latest_checkpoint())[1] == {"next_step": 2}
    (run.checkpoints / "step_000004").rename(run.checkpoints / ".gone")
    assert run.latest_checkpoint().name == "step_000002"
    (run.checkpoints / "latest").unlink()  # killed after the first folder's rename, before `latest` was written
    assert run.latest_checkpoint().name == "step_000002"
    # saving a step that exists replaces it whole
    run.save_checkpoint(2, {"n": 22}, {"next_step": 2}, lambda p: Path(p).mkdir(), keep_last=5)
    assert run.load_checkpoint(run.latest_checkpoint())[0] == {"n": 22}
    assert not list(run.checkpoints.glob(".tmp-*"))


# --- bad input at the CLI: a clear message, no traceback, nothing started ------------------------------

def _bad_yaml(tmp: Path) -> list[str]:
    (tmp / "c.yaml").write_text("steps: [1\nmodel: {name: tiny}\n")
    return [str(tmp / "c.yaml")]


def _unknown_key(tmp: Path) -> list[str]:
    (tmp / "c.yaml").write_text(TINY.read_text() + "\nlearning_rate: 0.1\n")
    return [str(tmp / "c.yaml")]


def _wrong_type(tmp: Path) -> list[str]:
    (tmp / "c.yaml").write_text(TINY.read_text().replace("max_new_tokens: 12", "max_new_tokens: lots", 1))
    return [str(tmp / "c.yaml")]


def _prompt_file(content: bytes):
    def make(tmp: Path) -> list[str]:
        (tmp / "p.jsonl").write_bytes(content)
        return [str(TINY), "data.source=file", f"data.path={tmp / 'p.jsonl'}", "data.max_prompt_tokens=64"]
    return make


BAD_INPUT = {
    "malformed_yaml": (_bad_yaml, 2, ["is not valid YAML", "line 2"]),
    "unknown_key": (_unknown_key, 2, ["learning_rate", "Extra inputs are not permitted"]),
    "wrong_type": (_wrong_type, 2, ["rollout.max_new_tokens = 'lots'", "valid integer"]),
    "empty_prompt_file": (_prompt_file(b""), 1, ["p.jsonl: no usable prompts", "empty"]),
    "non_utf8_prompt_file": (_prompt_file(b'{"prompt": "fine"}\n{"prompt": "caf\xe9"}\n'), 1,
                             ["p.jsonl: line 2 is not valid UTF-8"]),
    "only_over_long_prompts": (_prompt_file(b'{"prompt": "%s"}\n' % (b"word " * 400)), 1,
                               ["no usable prompts", "'too_long': 1"]),
    "missing_model_path": (lambda tmp: [str(TINY), f"model.name={tmp / 'no-such-model'}"], 1,
                           ["no-such-model", "neither a directory nor a hub id"]),
    "template_without_placeholders": (lambda tmp: [str(TINY), "judge.template=Rate {response}"], 2,
                                      ["judge.template lacks the placeholders", "{prompt}"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_gives_one_clear_line_and_no_traceback(case, tmp_path):
    make, code, needles = BAD_INPUT[case]
    run = tmp_path / "run"
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "xrlhf.cli", "train", *make(tmp_path), "--run-dir", str(run)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - t0
    assert out.returncode == code, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "Error:" not in out.stderr.replace("ValidationError", "")
    lines = out.stderr.strip().splitlines()
    assert lines and lines[0].startswith("xrlhf train: ") and len(lines) <= 2, lines
    for needle in needles:
        assert needle in out.stderr, (needle, out.stderr)
    assert not run.exists(), "work started before the input was checked"
    assert "Started a local Ray instance" not in out.stderr
    print(f"{case}: {elapsed:.1f} s")
