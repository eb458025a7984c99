"""`xrlhf compare`: named arms (PPO, REINFORCE with a baseline, ...) from the same base, prompts, judge and seeds;
then eval and report."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from typing import Any

from xrlhf.config import Config, apply_overrides, with_overrides
from xrlhf.driver.rundir import RunDir, atomic_write_text
from xrlhf.logs import eta

log = logging.getLogger(__name__)


def arms(cfg: Config) -> dict[str, dict[str, Any]]:
    """{arm: dotted-key overrides}: compare.arms, or one arm per compare.algorithms entry named after it."""
    if cfg.compare.arms is not None:
        return cfg.compare.arms
    return {a: {"algorithm.name": a} for a in cfg.compare.algorithms}


def arm_config(cfg: Config, arm: str, seed: int) -> Config:
    """The config of one run: the arm's overrides on cfg, then its seed and run name ARM-seedN."""
    run_cfg = apply_overrides(cfg, arms(cfg)[arm], f"compare.arms.{arm}.")
    return with_overrides(run_cfg, seed=seed, run_name=f"{arm}-seed{seed}")


def run_names(cfg: Config) -> dict[str, list[str]]:
    """{arm: [run dir names]} in the order they train."""
    return {a: [f"{a}-seed{s}" for s in cfg.compare.seeds] for a in arms(cfg)}


def run_compare(cfg: Config, out: Path, command: str = "") -> Path:
    """Train every (arm, seed), evaluate all of them against the base and each other, build the report.

    Re-running on the same directory resumes: finished runs are kept, a stopped one continues from its checkpoint.
    """
    from xrlhf.driver.controller import Controller, shutdown_graph
    from xrlhf.evaluate import evaluate
    from xrlhf.judge import judge_label
    from xrlhf.policy.models import check_context
    from xrlhf.report import build_report

    out.mkdir(parents=True, exist_ok=True)
    names = run_names(cfg)
    arm_cfgs = {(a, seed): arm_config(cfg, a, seed) for a in names for seed in cfg.compare.seeds}
    for run_cfg in arm_cfgs.values():  # an arm may change the model or the lengths: each fails before any trains
        check_context(run_cfg)
    from xrlhf.judge import describe

    measures = describe(cfg.judge)
    meta = {"algorithms": list(names), "seeds": cfg.compare.seeds, "runs": names,
            "arms": {a: {"overrides": arms(cfg)[a], "algorithm": arm_cfgs[(a, cfg.compare.seeds[0])].algorithm.name}
                     for a in names},
            "dimensions": {d: {"weight": v.weight, "direction": v.direction, "measures": measures[d]}
                           for d, v in cfg.judge.dimensions.items()},
            "command": command, "model": cfg.model.name, "judge_model": cfg.judge.model or cfg.model.name,
            "judge_backend": cfg.judge.backend, "steps": cfg.steps,
            "samples_per_step": cfg.rollout.prompts_per_step * cfg.rollout.samples_per_prompt,
            "judges": {"training": judge_label(cfg.judge, cfg.model.name),
                       "evaluation": judge_label(cfg.eval_judge(), cfg.model.name),
                       "evaluation_is_training": cfg.eval.judge is None},
            "validation": {"every_steps": cfg.eval.every_steps, "prompts": cfg.eval.validation_prompts}}
    atomic_write_text(out / "compare.json", json.dumps(meta, indent=2))
    timings = {}
    order = [(seed, a) for seed in cfg.compare.seeds for a in names]
    for n, (seed, arm) in enumerate(order, 1):
        name = f"{arm}-seed{seed}"
        run_cfg = arm_cfgs[(arm, seed)]
        run = RunDir(out / name)
        ckpt = run.latest_checkpoint()
        if ckpt is not None and json.loads((ckpt / "trainer_state.json").read_text())["next_step"] >= run_cfg.steps:
            log.info("compare: run %d/%d %s already finished, kept", n, len(order), name)
            continue
        log.info("compare: run %d/%d %s (%d steps; library warnings in %s)", n, len(order), name, run_cfg.steps,
                 run.path / "logs")
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
