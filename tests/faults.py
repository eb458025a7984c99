"""Fault-injection helpers shared by the reliability and HTTP judge tests: a misbehaving judge server, process-tree
lookups."""
from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from pathlib import Path
from typing import Any
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil

FAULT_KINDS = ("500", "garbage", "empty", "stall")  # what fault "rotate" cycles through
# First-token logprobs of every good answer: P("3") = 0.75, P("2") = 0.25, so the expected score is 2.75 of 0..4.
GOOD_TOP = {"3": math.log(0.75), "2": math.log(0.25)}
GOOD_SCORE = 2.75


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 refuses some of a burst of concurrent connects


class StubCompletionsServer:
    """An OpenAI-style /v1 completions server on 127.0.0.1, in a thread; subclasses answer each request.

    respond(path, body, auth) -> (status, payload); it may sleep to stall. A client that gives up first
    (a timeout) is not an error of the server.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.httpd = _Server(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def respond(self, path: str, body: dict, auth: str) -> tuple[int, bytes]:
        raise NotImplementedError

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                code, payload = server.respond(self.path, body, self.headers.get("Authorization", ""))
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up first
                    pass

        return Handler


def good_answer(prompt: str, chat: bool) -> dict:
    """A completion whose first-token logprobs are GOOD_TOP (a /completions answer; FaultServer's default)."""
    logprobs = {"tokens": ["3"], "token_logprobs": [GOOD_TOP["3"]], "top_logprobs": [GOOD_TOP]}
    return {"choices": [{"index": 0, "text": "3", "finish_reason": "length", "logprobs": logprobs}]}


class FaultServer(StubCompletionsServer):
    """An OpenAI-style /v1 judge on 127.0.0.1 that fails on purpose (`set`) and otherwise answers
    `answer(prompt, chat)`.

    A request fails when its prompt contains `only` (any prompt when None), it is one of the first `fail_first`
    attempts at that prompt, and a hash of the prompt falls below fraction ** (attempt + 1): with fraction < 1 fewer
    prompts fail at each retry, and whether a request fails never depends on thread timing. It fails with `fault`, or
    with "rotate" the next of FAULT_KINDS: 500 whose body echoes the Authorization header (as a careless server's
    might), a non-JSON body, an empty body, a stall of `stall_s` past the client's timeout; or "no_logprobs", a
    completion without them. Requests without `Bearer <key>` get 401, echoing the header too; with chat_only,
    /completions answers 404 as a chat-only server does. `injected` counts faults sent by kind, `ok` good answers,
    `unauthorised` refused requests.
    """

    def __init__(self, key: str, stall_s: float = 1.5, answer: Callable[[str, bool], dict] = good_answer) -> None:
        self.key, self.stall_s, self.answer = key, stall_s, answer
        self.attempts: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.ok = 0
        self.unauthorised = 0
        self._n = 0
        self.set("none")
        super().__init__()

    def set(self, fault: str, fail_first: int = 10**9, only: str | None = None, fraction: float = 1.0,
            chat_only: bool = False) -> None:
        """The plan from now on ("none": no faults); each prompt's attempts count afresh."""
        self.fault, self.fail_first, self.only, self.fraction, self.chat_only = \
            fault, fail_first, only, fraction, chat_only
        self.attempts.clear()

    def _plan(self, prompt: str) -> str | None:
        """The fault to answer this request with, or None for a good answer."""
        with self.lock:
            attempt = self.attempts[prompt]
            self.attempts[prompt] += 1
            u = int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16) / 16**8  # [0, 1)
            fail = self.fault != "none" and (self.only is None or self.only in prompt) \
                and attempt < self.fail_first and u < self.fraction ** (attempt + 1)
            if not fail:
                self.ok += 1
                return None
            kind = self.fault
            if kind == "rotate":
                kind = FAULT_KINDS[self._n % len(FAULT_KINDS)]
                self._n += 1
            self.injected[kind] += 1
            return kind

    def respond(self, path: str, body: dict, auth: str) -> tuple[int, bytes]:
        if auth != f"Bearer {self.key}":
            with self.lock:
                self.unauthorised += 1
            return 401, json.dumps({"error": f"bad credentials {auth!r}"}).encode()
        chat = path.endswith("/chat/completions")
        if self.chat_only and not chat:
            return 404, b'{"error": "not found"}'
        prompt = body["messages"][0]["content"] if chat else body["prompt"]
        fault = self._plan(prompt)
        if fault == "500":
            return 500, json.dumps({"error": f"overloaded; request had {auth}"}).encode()
        if fault == "garbage":
            return 200, b"<html>upstream proxy error</html>"
        if fault == "empty":
            return 200, b""
        if fault == "no_logprobs":
            return 200, json.dumps({"choices": [{"text": "3", "logprobs": None}]}).encode()
        if fault == "stall":
            time.sleep(self.stall_s)
            return 504, b""
        return 200, json.dumps(self.answer(prompt, chat)).encode()


def rows(path: Path) -> list[dict]:
    """The JSON lines of a run file (metrics.jsonl, samples.jsonl); none if it does not exist yet."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def wait_rows(path: Path, n: int, timeout_s: float, alive: Callable[[], bool] = lambda: True) -> None:
    """Block until path holds n rows; fail if timeout_s passes or alive() turns false first."""
    deadline = time.time() + timeout_s
    while len(rows(path)) < n:
        assert time.time() < deadline and alive(), f"{path} has {len(rows(path))} rows, waited for {n}"
        time.sleep(0.05)


def train_in_thread(controller: Any) -> tuple[threading.Thread, list[BaseException]]:
    """controller.train() in a daemon thread; whatever it raises lands in the returned list."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            controller.train()
        except BaseException as exc:  # the test asserts on it
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


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
