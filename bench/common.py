"""What every benchmark shares: the machine's description, xrlhf configs, one in-process step, tables, results.

The scripts run as `python bench/NAME.py`, so this file is imported as `common` (bench/ is sys.path[0]).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
CONFIGS = {"tiny": REPO / "configs" / "tiny.yaml", "gemma": REPO / "configs" / "quickstart.yaml"}

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
sys.path.insert(0, str(REPO))


@dataclass(frozen=True)
class Shape:
    """The work of one step: prompts × samples per prompt, each response exactly `new_tokens` long."""

    model: str  # "tiny" or "gemma"
    prompts: int
    samples: int
    new_tokens: int

    @property
    def batch(self) -> int:
        return self.prompts * self.samples


def machine() -> dict[str, Any]:
    """nproc, CPU model, RAM, load and library versions: the context every figure needs."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    out = {"nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(mem_kb / 2**20, 1),
           "loadavg_1_5_15": list(os.getloadavg()), "torch_threads": torch.get_num_threads(),
           "python": platform.python_version(), "torch": torch.__version__}
    for lib in ("transformers", "peft", "ray", "trl"):
        try:
            out[lib] = __import__(lib).__version__
        except ImportError:
            out[lib] = None
    return out


def has_hf_judge() -> bool:
    """Whether the local LLM judge (xrlhf.judge.hf) exists in this checkout."""
    import importlib.util

    return importlib.util.find_spec("xrlhf.judge.hf") is not None


def xrlhf_config(shape: Shape, algorithm: str = "reinforce", judge: str = "rule", extra: list[str] = ()) -> Any:
    """The repo's config for `shape.model` (tiny.yaml / quickstart.yaml) with the benchmark's batch and algorithm.

    PPO runs one epoch over one minibatch of the whole batch: one gradient step per batch, like RLOO and GRPO.
    """
    from xrlhf.config import load_config

    overrides = [f"rollout.prompts_per_step={shape.prompts}", f"rollout.samples_per_prompt={shape.samples}",
                 f"rollout.max_new_tokens={shape.new_tokens}", f"judge.backend={judge}",
                 f"algorithm.name={algorithm}", "algorithm.ppo.epochs=1",
                 f"algorithm.ppo.minibatch_size={shape.batch}", "logging.wandb=false", *extra]
    return load_config(CONFIGS[shape.model], overrides)


def force_length(model: Any, new_tokens: int) -> None:
    """Make every sampled response exactly `new_tokens` long (min_new_tokens = max_new_tokens), so both sides of
    a comparison do the same work; xrlhf.policy.generation.sample itself asks for min_new_tokens=1."""
    generate = model.generate

    def fixed(*args: Any, **kwargs: Any) -> Any:
        kwargs["min_new_tokens"] = new_tokens
        return generate(*args, **kwargs)

    model.generate = fixed


class LocalRoles:
    """The step's roles (xrlhf.driver.step.Roles) in this process, without Ray: the learner's own model samples (in the
    graph a rollout actor holds a copy with the same weights) and its base weights give the reference."""

    def __init__(self, cfg: Any, learner: Any, judge: Any):
        self.cfg, self.learner, self.scorer = cfg, learner, judge

    def generate(self, prompts: list[str], seed: int) -> Any:
        from xrlhf.driver.step import Rollout
        from xrlhf.policy.generation import sample

        r, tr, t0 = self.cfg.rollout, self.learner.trainer, time.perf_counter()
        exp = sample(tr.model, tr.tokenizer, prompts, r.samples_per_prompt, r.max_new_tokens, r.temperature,
                     r.top_p, r.top_k, seed=seed, policy_version=self.learner.version,
                     max_prompt_tokens=self.cfg.data.max_prompt_tokens)
        return Rollout(exp, time.perf_counter() - t0)

    def reference(self, exp: Any) -> Callable[[], Any]:
        from xrlhf.driver.step import Reference

        def collect() -> Reference:  # runs when collected, after the judge: one process does one thing at a time
            t0 = time.perf_counter()
            return Reference(self.learner.reference_logprobs(exp), time.perf_counter() - t0)
        return collect

    def judge(self, prompts: list[str], responses: list[str]) -> Any:
        from xrlhf.driver.step import Judged

        t0 = time.perf_counter()
        return Judged(self.scorer.score(prompts, responses), time.perf_counter() - t0, self.scorer.stats())

    def update(self, exp: Any) -> Callable[[], Any]:
        from xrlhf.driver.step import UpdateResult

        def collect() -> UpdateResult:  # runs when collected: in one process the update cannot overlap anything
            t0 = time.perf_counter()
            metrics, advantages = self.learner.update(exp)
            return UpdateResult(metrics, advantages, time.perf_counter() - t0)
        return collect

    def sync(self) -> float:
        return 0.0  # the sampler is the learner's model


class XrlhfStep:
    """One in-process xrlhf step: xrlhf.driver.step.run_step, the controller's own step, on LocalRoles."""

    def __init__(self, cfg: Any, prompts: list[str]):
        from xrlhf.judge import build_judge
        from xrlhf.learners import make_learner

        self.cfg, self.prompts = cfg, prompts
        self.learner = make_learner(cfg)
        self.judge = build_judge(cfg.judge, cfg.model.name, cfg.model.cache_dir)
        force_length(self.learner.trainer.model, cfg.rollout.max_new_tokens)
        self.roles = LocalRoles(cfg, self.learner, self.judge)
        self.calls = 0

    def __call__(self) -> dict[str, float]:
        """Run one step on the next prompts; returns seconds per stage and in all."""
        from xrlhf.driver.step import run_step

        prompts = batch_prompts(self.prompts, self.calls, self.cfg.rollout.prompts_per_step)
        self.calls += 1
        c0 = time.thread_time()  # CPU seconds of this thread: torch runs single-threaded ops in the caller
        out = run_step(self.roles, prompts, self.calls, self.cfg.algorithm.kl_estimator)
        t = {"rollout": out.times["time/rollout_own"], "reference": out.times["time/reference_pass"],
             "judge": out.times["time/judge_own"], "learner": out.times["time/learner_own"],
             "step": out.times["time/step"], "step_cpu": time.thread_time() - c0}
        self.last_shape = tuple(out.exp.input_ids.shape)
        return t


def batch_prompts(prompts: list[str], index: int, per_step: int) -> list[str]:
    """The index-th block of prompts, in order and wrapping: both sides of a comparison see the same ones."""
    return [prompts[(index * per_step + i) % len(prompts)] for i in range(per_step)]


def train_prompts(n: int | None = None) -> list[str]:
    from xrlhf.data import load_prompts

    prompts = load_prompts("bundled", "train").prompts
    return prompts[:n] if n else prompts


def run_xrlhf_train(config: Path, overrides: list[str], run_dir: Path, timeout_s: float = 540) -> list[dict]:
    """`xrlhf train` in a subprocess (the full Ray graph); returns its metrics.jsonl rows."""
    cmd = [sys.executable, "-m", "xrlhf.cli", "--log-level", "WARNING", "train", str(config), *overrides,
           "--run-dir", str(run_dir)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def summary(values: list[float]) -> dict[str, float]:
    """Median, min, max and count of some timings (the median is what tables show)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def interleave(runners: dict[str, Callable[[], dict[str, float]]], rounds: int, warmup: int = 1,
               log: Callable[[str], None] = print) -> dict[str, list[dict[str, float]]]:
    """Run every runner once per round, in turn (A B C A B C ...), so load on the shared machine hits all alike.

    The first `warmup` rounds are run and dropped.
    """
    out: dict[str, list[dict[str, float]]] = {name: [] for name in runners}
    for r in range(warmup + rounds):
        for name, run in runners.items():
            t = run()
            cpu = f" (cpu {t['step_cpu']:.2f}s)" if "step_cpu" in t else ""
            log(f"  round {r}{' (warm-up)' if r < warmup else ''} {name}: {t['step']:.2f}s{cpu}")
            if r >= warmup:
                out[name].append(t)
    return out


def peak_rss_mib(pid: int | str = "self") -> dict[str, float]:
    """VmHWM (peak resident), VmRSS (now) and its anonymous / file-backed parts, in MiB, from /proc/<pid>/status.

    Weights loaded from safetensors stay memory-mapped: they are file-backed (RssFile), resident once read, and
    shared through the page cache with every other process mapping the same file.
    """
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def pss_mib(pid: int | str = "self") -> float | None:
    """Proportional set size (shared pages divided among the processes sharing them), MiB; None if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain-text table with numbers rounded for reading."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return "" if v is None else str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """bench/results/NAME.json with the machine description and the command that made it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"command": " ".join(["python", *sys.argv]), "machine": machine(),
               "finished": time.strftime("%Y-%m-%d %H:%M:%S"), **payload}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux ≥ 4.0: write 5 to clear_refs); False if refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_part(script: Path, args: list[str], timeout_s: float = 540, env: dict[str, str] | None = None) -> Any:
    """Run `python script ARGS` in a fresh process (its own peak memory) and parse the JSON of its last line."""
    proc = subprocess.run([sys.executable, str(script), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout_s, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{script.name} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def load_gemma(lora: bool = True) -> tuple[Any, Any, Any]:
    """(model, tokenizer, cfg) of the quickstart policy: packaged gemma-3-270m, fp32, LoRA r=8 on q/k/v/o."""
    from xrlhf.config import load_config
    from xrlhf.policy.models import load_policy

    cfg = load_config(CONFIGS["gemma"], [] if lora else ["model.lora.enabled=false"])
    model, tok = load_policy(cfg.model)
    return model, tok, cfg


ACTOR_ROLES = ("RolloutActor", "JudgeActor", "LearnerActor", "ReferenceActor")


def run_xrlhf_train_watched(config: Path, overrides: list[str], run_dir: Path, timeout_s: float = 540,
                            poll_s: float = 0.5) -> tuple[list[dict], dict[str, dict[str, float]]]:
    """`xrlhf train` in a subprocess, polling the memory of its Ray actors (descendants of that process only:
    other Ray clusters on the machine are not ours). Returns (metrics rows, per-actor memory):
    peak resident (VmHWM, the kernel's own high-water mark), the largest RSS / anonymous / file-backed / PSS seen."""
    import psutil

    cmd = [sys.executable, "-m", "xrlhf.cli", "--log-level", "WARNING", "train", str(config), *overrides,
           "--run-dir", str(run_dir)]
    err = open(run_dir.parent / f"{run_dir.name}.stderr", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, text=True)
    root = psutil.Process(proc.pid)
    actors: dict[int, dict[str, Any]] = {}
    driver: dict[str, float] = {}
    deadline = time.time() + timeout_s
    while proc.poll() is None:
        if time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"{' '.join(cmd)} ran past {timeout_s}s")
        try:
            kids = root.children(recursive=True)
        except psutil.Error:
            kids = []
        for p in [root, *kids]:
            try:
                title = " ".join(p.cmdline())
                role = next((r for r in ACTOR_ROLES if title.startswith(f"ray::{r}")), None)
                if p is not root and role is None:
                    continue
                mem = peak_rss_mib(p.pid)
                mem["Pss"] = pss_mib(p.pid) or 0.0
            except (psutil.Error, OSError, StopIteration):
                continue
            rec = driver if p is root else actors.setdefault(p.pid, {"role": role})
            for k, v in mem.items():
                rec[k] = max(rec.get(k, 0.0), v)
        time.sleep(poll_s)
    err.close()
    if proc.returncode != 0:
        tail = (run_dir.parent / f"{run_dir.name}.stderr").read_text()[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{tail}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    per_actor: dict[str, dict[str, float]] = {"driver (controller)": driver}
    counts: dict[str, int] = {}
    for pid, rec in sorted(actors.items()):
        role = rec.pop("role")
        counts[role] = counts.get(role, 0) + 1
        per_actor[f"{role} #{counts[role]} (pid {pid})"] = rec
    return rows, per_actor
