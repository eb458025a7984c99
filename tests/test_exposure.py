"""xrlhf/exposure.py: nothing listens beyond 127.0.0.1 without credentials unless the user opted in by name.

Each test sets RAY_AUTH_MODE itself for the processes it starts, so the caller's environment cannot turn these
green or red. Token mode (Ray's default) with serve-judge is test_reliability.py's
test_serve_judge_and_library_ray_listen_on_loopback_only, whose fixture sets RAY_AUTH_MODE=token."""
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from faults import listening, process_tree

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


def test_serve_judge_with_the_opt_in_reports_every_outside_listener(tmp_path):
    """With resources.allow_unauthenticated_cluster=true it serves, warns by name, and lists each listener beyond
    loopback: every one its processes hold once it serves (Ray Serve's replica gRPC server on [::] among them)."""
    port = _port()
    err = tmp_path / "err"
    proc = subprocess.Popen([sys.executable, "-m", "xrlhf.cli", "serve-judge", *TINY_JUDGE, f"judge.serve.port={port}",
                             "resources.allow_unauthenticated_cluster=true"], cwd=ROOT,
                            env=_env(RAY_AUTH_MODE="disabled"), stdout=subprocess.PIPE, stderr=err.open("w"),
                            text=True, start_new_session=True)
    try:
        serving = ""
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not serving.startswith("judge serving"):
            serving = proc.stdout.readline()  # printed after start_judge_server returned, its report made
            if not serving and proc.poll() is not None:
                break
        outside = [s for s in listening({p.pid for p in process_tree(proc.pid)}) if not _loopback(s[1])]
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = err.read_text()
    assert serving.startswith("judge serving"), text[-3000:]
    assert "WITHOUT authentication" in text and "resources.allow_unauthenticated_cluster=true allows" in text, text
    reported = "\n".join(ln for ln in text.splitlines() if "listening beyond loopback without authentication" in ln)
    assert any(ip in ("::", "0.0.0.0") for _, ip, _ in outside), f"no replica gRPC server found: {outside}"
    unreported = [s for s in outside if f"{s[1]}:{s[2]} (pid {s[0]}," not in reported]
    assert not unreported, f"listening beyond loopback, not reported: {unreported}\n{reported}"


def test_local_training_without_ray_auth_binds_loopback_and_runs(tmp_path):
    """A local run binds 127.0.0.1 only, so RAY_AUTH_MODE=disabled is allowed there."""
    out = _xrlhf("train", "configs/tiny.yaml", "steps=1", "--run-dir", str(tmp_path / "run"),
                 env=_env(RAY_AUTH_MODE="disabled"))
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.parametrize("what, overrides, env", [
    ("a local Ray head", [], {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}),
    ("Ray's dashboard", ["resources.include_dashboard=true", "resources.dashboard_host=0.0.0.0"], {}),
], ids=["head-on-machine-address", "dashboard-on-all-interfaces"])
def test_a_local_head_beyond_loopback_without_auth_is_refused(tmp_path, what, overrides, env):
    """RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 (the head on the machine's address) or a dashboard on 0.0.0.0: with auth
    off, `xrlhf train` is refused before Ray starts."""
    out = _xrlhf("train", "configs/tiny.yaml", "steps=1", *overrides, "--run-dir", str(tmp_path / "run"),
                 env=_env(RAY_AUTH_MODE="disabled", **env), timeout=120)
    assert out.returncode == 1 and what in out.stderr and "RAY_AUTH_MODE=disabled" in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "Started a local Ray instance" not in out.stderr


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    return addr.is_loopback or bool(getattr(addr, "ipv4_mapped", None) and addr.ipv4_mapped.is_loopback)


_RAY_VS_XRLHF = """
import json, os, sys
from ray._private.authentication.authentication_token_setup import enable_token_auth_by_default
from ray._raylet import AuthenticationMode, Config, get_authentication_mode
from xrlhf.exposure import auth_disabled

out = {}
for mode in json.loads(sys.argv[1]):
    if mode is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = mode
    ours = auth_disabled()
    enable_token_auth_by_default()  # what ray.init does first for a new Ray: sets token when the variable is unset
    Config.initialize("")  # then Ray's processes parse the variable as they start
    out[repr(mode)] = {"ray": get_authentication_mode() != AuthenticationMode.TOKEN, "xrlhf": ours}
print(json.dumps(out))
"""


def test_auth_mode_is_read_as_ray_reads_it():
    """Before Ray starts, xrlhf's reading of RAY_AUTH_MODE agrees with what Ray's own processes then run with:
    unset is token (Ray turns it on), and every spelling other than token runs without authentication."""
    modes = [None, "token", "TOKEN", "disabled", "Disabled", "off", "0", ""]
    out = subprocess.run([sys.executable, "-c", _RAY_VS_XRLHF, json.dumps(modes)], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert {m: v["xrlhf"] for m, v in seen.items()} == {m: v["ray"] for m, v in seen.items()}
    assert seen["None"]["ray"] is False and seen["'off'"]["ray"] is True  # both readings are exercised


def test_serve_judge_beyond_loopback_without_a_token_is_refused(tmp_path):
    """Even with Ray's auth on, the judge's own HTTP port on 0.0.0.0 with no bearer token would answer anyone:
    refused before Ray starts, naming judge.serve.auth_token_env."""
    out = _xrlhf("serve-judge", *TINY_JUDGE, f"judge.serve.port={_port()}", "judge.serve.host=0.0.0.0",
                 env=_env(RAY_AUTH_MODE="token"), timeout=120)
    assert out.returncode == 1, out.stderr[-2000:]
    line = out.stderr.strip()
    assert "\n" not in line and "judge.serve.host = 0.0.0.0" in line and "judge.serve.auth_token_env" in line
    assert "Started a local Ray instance" not in out.stderr
