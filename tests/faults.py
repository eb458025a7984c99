"""Fault-injection helpers shared by the reliability tests: a misbehaving judge server, process-tree lookups."""
from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil

FAULT_KINDS = ("500", "garbage", "empty", "stall")
# First-token logprobs of every good answer: P("3") = 0.75, P("2") = 0.25, so the expected score is 2.75 of 0..4.
GOOD_TOP = {"3": math.log(0.75), "2": math.log(0.25)}
GOOD_SCORE = 2.75


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


class JudgeFaultServer:
    """An OpenAI-style /v1/completions judge on 127.0.0.1 that fails on purpose.

    mode "none": every request gets a good answer. mode "some": the first attempt at a prompt fails
    when a hash of the prompt falls in `fraction`, the second attempt in fraction², later ones never,
    so whether a request fails does not depend on thread timing. mode "all": every request fails.
    Failures cycle through 500 (whose body echoes the Authorization header, as a careless server's
    might), a non-JSON body, an empty body, and a stall past the client's timeout. Requests without
    `Bearer <key>` get 401. `injected` counts failures sent, `ok` good answers.
    """

    def __init__(self, key: str, stall_s: float = 1.5) -> None:
        self.key, self.stall_s = key, stall_s
        self.mode, self.fraction = "none", 0.0
        self.attempts: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.ok = 0
        self.unauthorised = 0
        self._n = 0
        self.lock = threading.Lock()
        self.httpd = _Server(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def set(self, mode: str, fraction: float = 0.0) -> None:
        with self.lock:
            self.mode, self.fraction = mode, fraction

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _plan(self, prompt: str) -> str | None:
        """The fault to answer this request with, or None for a good answer."""
        with self.lock:
            attempt = self.attempts[prompt]
            self.attempts[prompt] += 1
            mode, fraction = self.mode, self.fraction
            if mode == "none":
                fail = False
            elif mode == "all":
                fail = True
            else:
                u = int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16) / 16**8
                fail = attempt < 2 and u < fraction ** (attempt + 1)
            if not fail:
                self.ok += 1
                return None
            kind = FAULT_KINDS[self._n % len(FAULT_KINDS)]
            self._n += 1
            self.injected[kind] += 1
            return kind

    def _handler(self) -> type:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                auth = self.headers.get("Authorization", "")
                if auth != f"Bearer {server.key}":
                    with server.lock:
                        server.unauthorised += 1
                    return self._send(401, b'{"error": "unauthorised"}')
                fault = server._plan(body["prompt"])
                if fault == "500":
                    return self._send(500, json.dumps({"error": f"overloaded; request had {auth}"}).encode())
                if fault == "garbage":
                    return self._send(200, b"<html>upstream proxy error</html>")
                if fault == "empty":
                    return self._send(200, b"")
                if fault == "stall":
                    time.sleep(server.stall_s)
                    return self._send(504, b"")
                logprobs = {"tokens": ["3"], "token_logprobs": [GOOD_TOP["3"]], "top_logprobs": [GOOD_TOP]}
                answer = {"choices": [{"index": 0, "text": "3", "finish_reason": "length", "logprobs": logprobs}]}
                self._send(200, json.dumps(answer).encode())

            def _send(self, code: int, payload: bytes) -> None:
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up first
                    pass

        return Handler


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants that are still alive."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def find_actor(pid: int, class_name: str, timeout_s: float = 120.0) -> psutil.Process:
    """The Ray worker process under `pid` that hosts an actor of `class_name` (its title is ray::Class...)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        for proc in process_tree(pid):
            try:
                title = " ".join(proc.cmdline())
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if title.startswith(f"ray::{class_name}"):
                return proc
        time.sleep(0.2)
    raise TimeoutError(f"no ray::{class_name} process under pid {pid}")


def listening(pids: set[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket in LISTEN state owned by one of `pids`."""
    return [(c.pid, c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.pid in pids]
