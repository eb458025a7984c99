"""The rule for what xrlhf exposes: no listener beyond 127.0.0.1 answers without credentials unless the user opted in.

Ray 2.60 authenticates its cluster with a token by default; RAY_AUTH_MODE=disabled (which Ray's own start-up
line suggests) turns that off. A local training run binds 127.0.0.1 only, so it is safe either way. Ray Serve,
which `xrlhf serve-judge` starts, binds each replica's gRPC server to [::] (hard-coded in Ray Serve 2.60), and
a local Ray with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 binds the machine's address: with authentication off, either
would accept code from anyone who can reach the machine. Then xrlhf refuses to start, unless
resources.allow_unauthenticated_cluster=true says the network is trusted, in which case it logs a warning that
lists every listener beyond loopback. start_local_ray starts the loopback-only Ray that training and
serve-judge run on.
"""
from __future__ import annotations

import ipaddress
import logging
import os
from typing import Any

log = logging.getLogger(__name__)

AUTH_ENV = "RAY_AUTH_MODE"
OPT_IN = "resources.allow_unauthenticated_cluster"


class ExposureError(RuntimeError):
    """Something would listen beyond loopback without authentication, and the user did not opt in."""


def auth_disabled() -> bool:
    """Whether Ray runs without cluster authentication: before Ray starts, as ray.init will read RAY_AUTH_MODE;
    once it has, the running Ray's own mode.

    Ray 2.60 turns token auth on for a new local Ray when the variable is unset, and keeps any value it is set
    to: only `token` (any case) authenticates; `disabled`, `off`, `0` or an empty value all run without."""
    import ray

    if ray.is_initialized():
        from ray._private.authentication.authentication_utils import is_token_auth_enabled

        return not is_token_auth_enabled()
    mode = os.environ.get(AUTH_ENV)
    return mode is not None and mode.lower() != "token"


def require_auth_or_opt_in(what: str, allowed: bool) -> None:
    """Refuse (ExposureError, one line) when Ray's authentication is off while `what` binds beyond loopback."""
    if not auth_disabled():
        return
    mode = f"{AUTH_ENV}={os.environ.get(AUTH_ENV, 'disabled')}"
    if allowed:
        log.warning("%s listens beyond 127.0.0.1 WITHOUT authentication (%s), as %s=true allows: anyone "
                    "who can reach this machine can submit code to its Ray", what, mode, OPT_IN)
        return
    raise ExposureError(f"Ray's cluster authentication is off ({mode}) and {what} listens beyond "
                        f"127.0.0.1, so anyone who can reach this machine could run code on it: unset {AUTH_ENV} "
                        f"(or set {AUTH_ENV}=token) to keep Ray's token authentication, or, on a trusted private "
                        f"network only, set {OPT_IN}=true")


def start_local_ray(**init_kwargs: Any) -> None:
    """ray.init of a single-machine Ray whose servers (GCS, raylet, workers, agents) bind 127.0.0.1 only.

    Ray binds loopback when RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: its child processes read the variable
    when they start, this process read it at `import ray`, so both are set around the call and put back
    after (a later `ray start` in this process would otherwise refuse). A user's explicit =1 is kept.
    """
    import ray
    from ray._private import ray_constants

    name = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    env_before, flag_before = os.environ.get(name), ray_constants.ENABLE_RAY_CLUSTER
    if (env_before or "").lower() not in ("1", "true"):
        os.environ[name], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        # address="local": a new Ray of this process's own, even when `ray start` left a cluster on this machine
        # (plain ray.init() would join that one, with its own resources and environment).
        ray.init(address="local", **init_kwargs)
    finally:
        if env_before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = env_before
        ray_constants.ENABLE_RAY_CLUSTER = flag_before


def outside_listeners(pids: set[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every socket these processes listen on beyond loopback."""
    import psutil

    out = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.status != psutil.CONN_LISTEN or conn.pid not in pids:
            continue
        if beyond_loopback(conn.laddr.ip):
            out.append((conn.pid, conn.laddr.ip, conn.laddr.port))
    return sorted(out)


def beyond_loopback(host: str) -> bool:
    """Whether a server bound to `host` is reachable beyond this machine's loopback (any name but localhost is)."""
    if host == "localhost":
        return False
    try:
        addr = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return True
    mapped = getattr(addr, "ipv4_mapped", None)
    return not (addr.is_loopback or (mapped is not None and mapped.is_loopback))


def report_outside_listeners() -> list[tuple[int, str, int]]:
    """Log every listener of this process and its children beyond loopback (the opted-in case); returns them."""
    import psutil

    me = psutil.Process()
    pids = {me.pid, *(p.pid for p in me.children(recursive=True))}
    found = outside_listeners(pids)
    for pid, ip, port in found:
        log.warning("listening beyond loopback without authentication: %s:%d (pid %d, %s)", ip, port, pid,
                    _title(pid))
    return found


def _title(pid: int) -> str:
    import psutil

    try:
        return " ".join(psutil.Process(pid).cmdline())[:60]
    except psutil.Error:
        return "?"
