"""The HTTP judge against a real vLLM OpenAI server: does it score as the local judge does? (issue 25)

Starts `vllm serve` from .venv-vllm (scripts/setup_vllm_env.sh) on 127.0.0.1 with the packaged gemma in float32,
then scores good and corrupted answers of xrlhf/judge/quality.jsonl twice per mode, through judge.backend=http and
with the local HFJudge (the same model, float32): likelihood (the response's token log-probs, from the server's
echoed prompt) and expected (the score token's top-20 log-probs). Per mode it reports the mean and max |Δscore| of
each dimension and of the reward, and whether the two rank each good answer above its corruption alike.
tests/judge/test_http_vllm.py asserts the same figures on fewer pairs.

    nice -n 19 python bench/judge_vllm.py                 # ~4 min on 2 cores, 1 of it the server's start
    nice -n 19 python bench/judge_vllm.py --base-url http://127.0.0.1:8000/v1 --model gemma   # a running server
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import torch

from common import REPO, table, write_result

from xrlhf.config import HttpJudgeConfig, JudgeConfig
from xrlhf.judge.base import Judgement
from xrlhf.judge.quality import corruptions, load_quality

VENV_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
SERVED_NAME = "gemma"
# Corruptions the model reads (the guards decide an empty answer, a loop and a copied prompt without a request).
KINDS = ("factual_error", "off_topic", "truncated", "shuffled", "generic", "refusal", "simple", "technical")
MODES = ("likelihood", "expected")


@dataclass
class VllmServer:
    """A `vllm serve` process on 127.0.0.1: its OpenAI base url, its log file and the model folder it serves."""

    process: subprocess.Popen
    url: str
    log: Path
    model: str

    def wait(self, timeout_s: float = 600.0) -> float:
        """Seconds until GET /v1/models answers 200; raises with the log's tail if the process dies first."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {self.process.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/models", timeout=5).status_code == 200:
                    return time.monotonic() - t0
            except httpx.TransportError:
                pass
            time.sleep(1.0)
        raise TimeoutError(f"vllm serve not ready after {timeout_s:.0f} s:\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the server's process group (its engine core runs in a child process) and wait for it."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: str, log: Path, dtype: str = "float32", extra: tuple[str, ...] = ()) -> VllmServer:
    """`vllm serve model_dir` as SERVED_NAME on a free loopback port, at the lowest CPU priority; returns at once."""
    port = free_port()
    cmd = ["nice", "-n", "19", str(VENV_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
           "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port), "--dtype", dtype,
           "--enforce-eager", "--max-model-len", "2048", *extra]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2"}
    with log.open("w") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                   start_new_session=True)
    return VllmServer(process, f"http://127.0.0.1:{port}/v1", log, model_dir)


def quality_pairs(n: int) -> list[tuple[str, str, str, str]]:
    """(prompt, good, corrupted, kind) for the first n prompts of the quality set, the corruption cycling KINDS."""
    rows = load_quality()
    return [(rows[i]["prompt"], rows[i]["good"], corruptions(rows, i)[KINDS[i % len(KINDS)]], KINDS[i % len(KINDS)])
            for i in range(n)]


def http_config(url: str, tokenizer: str, **http: Any) -> HttpJudgeConfig:
    """The HTTP judge's settings for SERVED_NAME at url, with the served model's tokenizer (as the local judge cuts)."""
    return HttpJudgeConfig(**{"base_url": url, "model": SERVED_NAME, "tokenizer": tokenizer, "timeout_s": 300,
                              "max_retries": 1, "ready_timeout_s": 600, **http})


def score_both(url: str, model_dir: str, mode: str, pairs: list[tuple[str, str, str, str]],
               served: str = SERVED_NAME) -> tuple[list[Judgement], list[Judgement], dict[str, float]]:
    """(over HTTP, local) Judgements of every good then every corrupted answer, and each side's seconds."""
    from xrlhf.judge.hf import HFJudge
    from xrlhf.judge.http import HttpJudge

    prompts = [p for p, *_ in pairs] * 2
    responses = [g for _, g, _, _ in pairs] + [b for _, _, b, _ in pairs]
    cfg = JudgeConfig(mode=mode, cache=False)
    remote = HttpJudge(cfg.model_copy(update={"backend": "http", "http": http_config(url, model_dir, model=served)}))
    t0 = time.perf_counter()
    try:
        over_http = remote.score(prompts, responses)
        failures = remote.stats()["failures"]
    finally:
        remote.close()
    t1 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on two cores shared with the server only spin against each other
    try:
        local = HFJudge(cfg, model_dir).score(prompts, responses)
    finally:
        torch.set_num_threads(threads)
    return over_http, local, {"http_s": t1 - t0, "local_s": time.perf_counter() - t1, "http_failures": failures}


def agreement(over_http: list[Judgement], local: list[Judgement]) -> dict[str, Any]:
    """Per dimension and for the reward: mean and max |HTTP - local|; and the share of (good, corrupted) pairs,
    good first then corrupted in each list, that the two rank the same way."""
    dims = list(local[0].scores)
    out: dict[str, Any] = {}
    for name in dims + ["reward"]:
        diffs = [abs((h.reward if name == "reward" else h.scores[name]) -
                     (lo.reward if name == "reward" else lo.scores[name])) for h, lo in zip(over_http, local)]
        out[name] = {"mean_abs": statistics.fmean(diffs), "max_abs": max(diffs)}
    n = len(local) // 2

    def ranks(js: list[Judgement]) -> list[int]:
        return [(g.reward > b.reward) - (g.reward < b.reward) for g, b in zip(js[:n], js[n:])]

    same = [a == b for a, b in zip(ranks(over_http), ranks(local))]
    out["ranking"] = {"pairs": n, "agree": sum(same) / n, "good_above_http": ranks(over_http).count(1) / n,
                      "good_above_local": ranks(local).count(1) / n}
    return out


def main() -> None:
    from xrlhf.policy.models import packaged_model_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=16, help="quality prompts, one corruption each")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--base-url", help="a running server's /v1 url (serving the packaged gemma as --model)")
    ap.add_argument("--model", default=SERVED_NAME, help="its served model name")
    args = ap.parse_args()
    model_dir = str(packaged_model_dir())
    server = None
    url = args.base_url
    if url is None:
        server = start_server(model_dir, Path("/tmp/xrlhf-bench-vllm.log"))
        print(f"vllm serve ready in {server.wait():.0f} s at {server.url}", flush=True)
        url = server.url
    pairs = quality_pairs(args.pairs)
    results = {}
    try:
        for mode in args.modes:
            over_http, local, seconds = score_both(url, model_dir, mode, pairs, args.model)
            results[mode] = {**agreement(over_http, local), **seconds}
            print(f"{mode}: {seconds}", flush=True)
    finally:
        if server is not None:
            server.stop()
    rows = [{"mode": m, "dimension": d, "mean |Δ|": v[d]["mean_abs"], "max |Δ|": v[d]["max_abs"]}
            for m, v in results.items() for d in v if isinstance(v[d], dict) and "mean_abs" in v[d]]
    print(table(rows, ["mode", "dimension", "mean |Δ|", "max |Δ|"]))
    for m, v in results.items():
        print(f"{m}: ranking agrees on {v['ranking']['agree']:.0%} of {v['ranking']['pairs']} pairs; "
              f"good above corrupted: http {v['ranking']['good_above_http']:.0%}, "
              f"local {v['ranking']['good_above_local']:.0%}")
    path = write_result("judge_vllm", {"server": "vllm-cpu 0.32.0, float32, --enforce-eager", "model": model_dir,
                                       "pairs": args.pairs, "kinds": KINDS, "modes": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
