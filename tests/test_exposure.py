"""xrlhf/exposure.py: nothing listens beyond 127.0.0.1 without credentials unless the user opted in by name.

Each test sets RAY_AUTH_MODE itself for the processes it starts, so the caller's environment cannot turn these
green or red. Token mode (Ray's default) with serve-judge is test_reliability.py's
test_serve_judge_and_library_ray_listen_on_loopback_only, whose fixture sets RAY_AUTH_MODE=token."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration
TINY_JUDGE = ["configs/tiny.yaml", "judge.backend=hf", "judge.model=tiny", "resources.judge.torch_threads=1"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE",
                                                             "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    return {**env, **extra}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _xrlhf(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xrlhf.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_serve_judge_refuses_without_ray_auth():
    """RAY_AUTH_MODE=disabled: serve-judge stops before starting Ray, with one line naming the variable and both
    ways out."""
    t0 = time.monotonic()
    out = _xrlhf("serve-judge", *TINY_JUDGE, f"judge.serve.port={_port()}", env=_env(RAY_AUTH_MODE="disabled"))
    assert out.returncode == 1, out.stderr[-2000:]
    line = out.stderr.strip()
    assert "\n" not in line and line.startswith("xrlhf serve-judge: Ray's cluster authentication is off")
    assert "RAY_AUTH_MODE=disabled" in line and "RAY_AUTH_MODE=token" in line
    assert "resources.allow_unauthenticated_cluster=true" in line
    assert "Started a local Ray instance" not in out.stderr and time.monotonic() - t0 < 60


def test_serve_judge_with_the_opt_in_reports_every_outside_listener():
    """With resources.allow_unauthenticated_cluster=true it serves, warns by name, and lists each listener beyond
    loopback (Ray Serve's replica gRPC server on [::] among them)."""
    port = _port()
    proc = subprocess.Popen([sys.executable, "-m", "xrlhf.cli", "serve-judge", *TINY_JUDGE, f"judge.serve.port={port}",
                             "resources.allow_unauthenticated_cluster=true"], cwd=ROOT,
                            env=_env(RAY_AUTH_MODE="disabled"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        lines: list[str] = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line)
            if "served at" in line:
                break
        for _ in range(50):  # the listener report follows the "served at" line
            line = proc.stderr.readline()
            lines.append(line)
            if "listening beyond loopback" in line and ":" in line:
                break
        text = "".join(lines)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "WITHOUT authentication" in text and "resources.allow_unauthenticated_cluster=true allows" in text, text
    reported = [ln for ln in text.splitlines() if "listening beyond loopback without authentication" in ln]
    assert reported and any("::" in ln or "0.0.0.0" in ln for ln in reported), text


def test_local_training_without_ray_auth_binds_loopback_and_runs():
    """A local run binds 127.0.0.1 only, so RAY_AUTH_MODE=disabled is allowed there."""
    out = _xrlhf("train", "configs/tiny.yaml", "steps=1", "--run-dir", "/tmp/xrlhf-exposure-run",
                 env=_env(RAY_AUTH_MODE="disabled"))
    assert out.returncode == 0, out.stderr[-2000:]


def test_a_local_head_on_the_machine_address_without_auth_is_refused():
    """RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 makes the local head bind the machine's address: with auth off, refused."""
    out = _xrlhf("train", "configs/tiny.yaml", "steps=1", "--run-dir", "/tmp/xrlhf-exposure-refused",
                 env=_env(RAY_AUTH_MODE="disabled", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1"), timeout=120)
    assert out.returncode == 1 and "a local Ray head" in out.stderr and "RAY_AUTH_MODE=disabled" in out.stderr
    assert "Traceback" not in out.stderr
