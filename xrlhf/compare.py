"""`xrlhf compare`: PPO and REINFORCE from the same base, prompts, judge and seeds; then eval and report."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from xrlhf.config import Config, with_overrides
from xrlhf.logs import eta
from xrlhf.rundir import RunDir, atomic_write_text

log = logging.getLogger(__name__)


def run_names(cfg: Config) -> dict[str, list[str]]:
    """{algorithm: [run dir names]} in the order they train."""
    return {a: [f"{a}-seed{s}" for s in cfg.compare.seeds] for a in cfg.compare.algorithms}


def run_compare(cfg: Config, out: Path, command: str = "") -> Path:
    """Train every (algorithm, seed), evaluate all of them against the base, build the report.

    Re-running on the same directory resumes: finished runs are kept, a stopped one continues from its checkpoint.
    """
    from xrlhf.controller import Controller, shutdown_graph
    from xrlhf.evaluate import evaluate
    from xrlhf.report import build_report

    out.mkdir(parents=True, exist_ok=True)
    names = run_names(cfg)
    meta = {"algorithms": cfg.compare.algorithms, "seeds": cfg.compare.seeds, "runs": names,
            "dimensions": {d: {"weight": v.weight, "direction": v.direction} for d, v in cfg.judge.dimensions.items()},
            "command": command, "model": cfg.model.name, "judge_model": cfg.judge.model or cfg.model.name,
            "judge_backend": cfg.judge.backend, "steps": cfg.steps}
    atomic_write_text(out / "compare.json", json.dumps(meta, indent=2))
    timings = {}
    order = [(seed, algorithm) for seed in cfg.compare.seeds for algorithm in cfg.compare.algorithms]
    for n, (seed, algorithm) in enumerate(order, 1):
        name = f"{algorithm}-seed{seed}"
        run = RunDir(out / name)
        ckpt = run.latest_checkpoint()
        if ckpt is not None and json.loads((ckpt / "trainer_state.json").read_text())["next_step"] >= cfg.steps:
            log.info("compare: run %d/%d %s already finished, kept", n, len(order), name)
            continue
        log.info("compare: run %d/%d %s (%d steps; library warnings in %s)", n, len(order), name, cfg.steps,
                 run.path / "logs")
        run_cfg = with_overrides(cfg, seed=seed, run_name=name,
                                 algorithm={**cfg.algorithm.model_dump(), "name": algorithm})
        t0 = time.perf_counter()
        controller = Controller(run_cfg, run.path, resume=True)
        try:
            controller.train()
        finally:
            shutdown_graph(controller)
        timings[name] = time.perf_counter() - t0
        done = list(timings.values())
        log.info("compare: %s trained in %.0fs; %d run(s) to go, ETA %s before evaluation", name, timings[name],
                 len(order) - n, eta(len(done), len(done) + len(order) - n, sum(done)))
    log.info("compare: evaluating the base model and %d trained run(s) on held-out prompts", len(order))
    t0 = time.perf_counter()
    checkpoints = {name: str(RunDir(out / name).latest_checkpoint() / "adapter")
                   for runs in names.values() for name in runs}
    evaluate(cfg, checkpoints, out / "eval")
    log.info("compare: evaluation in %.0fs", time.perf_counter() - t0)
    return build_report(out)
