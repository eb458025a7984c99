"""The driver loop: prompts per step, the step itself (xrlhf.driver.step: gather, then learn, on the graph's actors;
the next step gathered during the update when algorithm.async_steps is 1), retries when an actor dies, validation
points, checkpoints and the rows every step writes.

It never looks at the algorithm name: the learner actor hides PPO and REINFORCE behind one interface.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray

from xrlhf.config import Config
from xrlhf.data import load_prompts
from xrlhf.driver.graph import ActorRoles, build_graph, init_ray, kill, whereabouts
from xrlhf.driver.metrics import metrics_row, sample_rows
from xrlhf.driver.rundir import RunDir
from xrlhf.driver.step import Gathered, gather, start_learn
from xrlhf.driver.validation import Progress, validation_due, validation_metrics, validation_prompts
from xrlhf.judge import backend as judge_backend
from xrlhf.logs import eta, shown, step_line
from xrlhf.policy.models import check_model_source

log = logging.getLogger(__name__)
RETRYABLE = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


class JudgeUnavailableError(RuntimeError):
    """No judge answer succeeded for too many steps in a row."""


class ActorLostError(RuntimeError):
    """An actor Ray does not restart (the learner, or any actor with resources.max_restarts=0) died."""


def prompts_for_step(prompts: list[str], step: int, per_step: int, seed: int, shuffle: bool = True) -> list[str]:
    """Deterministic in (seed, step): a resumed run sees exactly the prompts it would have seen."""
    n = len(prompts)
    out = []
    for i in range(step * per_step, (step + 1) * per_step):
        epoch, pos = divmod(i, n)
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else range(n)
        out.append(prompts[order[pos]])
    return out


class Controller:
    """Runs cfg.steps steps of the graph into a run directory; resumable from its last checkpoint."""

    def __init__(self, cfg: Config, run_dir: str | Path, resume: bool = False):
        self.cfg = cfg
        self.run = RunDir(run_dir)
        self.resume = resume
        self.judge_failed_steps = 0
        self.judge_last_success = time.monotonic()

    def train(self) -> Path:
        cfg = self.cfg
        self.pset = pset = load_prompts(cfg.data.source, "train", cfg.data.path,
                                        max_prompt_tokens=cfg.data.max_prompt_tokens)
        if pset.total_skipped:
            log.info("prompts: %d usable, skipped %s", len(pset.prompts), pset.skipped)
        if not (cfg.resources.address or os.environ.get("RAY_ADDRESS")):  # on a cluster the path is the nodes' business
            check_model_source(cfg.model.name)
            judge_model = judge_backend(cfg.judge).local_model(cfg.judge, cfg.model.name)
            if judge_model:
                check_model_source(judge_model)
        init_ray(cfg.resources)  # after the data and model checks: a bad file or path fails before Ray starts
        start = 0
        if self.resume and self.run.latest_checkpoint() is None and self.run.metrics.is_file():
            log.warning("no checkpoint in %s: starting again from step 0", self.run.path)
        if not cfg.logging.library_logs:
            cfg.logging.library_logs = str((self.run.path / "logs").resolve())
        self.run.create(cfg)
        self.graph = build_graph(cfg)
        self._record_placement()
        self.roles = ActorRoles(self.graph)
        ckpt = self.run.latest_checkpoint() if self.resume else None
        if ckpt is not None:
            learner_state, trainer_state = self.run.load_checkpoint(ckpt)
            ray.get(self.graph.learner.load_state.remote(learner_state))
            start = trainer_state["next_step"]
            log.info("resumed from %s at step %d", ckpt.name, start)
        self.run.truncate_after(start)
        self.progress = Progress.resume(self.run.read_metrics())
        self.val_prompts = validation_prompts(cfg)
        self._sync_weights()
        self.val_start = self._validate("val_start") if start == 0 and self.val_prompts else {}
        self.wandb = _wandb_run(cfg, self.run.path)
        self.judge_last_success = time.monotonic()
        self.prefetched: dict[int, Gathered] = {}  # algorithm.async_steps: the next step's batch, gathered early
        for step in range(start, cfg.steps):
            row = self._step_with_retries(step)
            if (step + 1) % cfg.checkpoint.every == 0 or step + 1 == cfg.steps:
                self._checkpoint(step + 1)
            if self.wandb is not None:
                self.wandb.log(row, step=step)
        self._record_placement()  # where the actors ended: Ray may have restarted some elsewhere mid-run
        if self.wandb is not None:
            self.wandb.finish()
        return self.run.path

    def _step_with_retries(self, step: int) -> dict[str, Any]:
        for attempt in range(self.cfg.resources.max_step_retries + 1):
            try:
                return self._step(step)
            except RETRYABLE as exc:
                if attempt == self.cfg.resources.max_step_retries:
                    raise
                log.warning("step %d: an actor died (%s); retrying the step (%d/%d)", step, type(exc).__name__,
                            attempt + 1, self.cfg.resources.max_step_retries)
                self._wait_for_actors()
                self._sync_weights()
                self._record_placement()  # a restarted actor may live on another node now
        raise AssertionError("unreachable")

    def _record_placement(self) -> None:
        """placement.json: where each actor runs now (written when the graph starts, after a retried step and at
        the end). An actor lost meanwhile leaves the previous record, with a warning: it costs no step."""
        try:
            self.run.write_json("placement.json", whereabouts(self.graph, self.cfg.resources.placement_strategy))
        except RETRYABLE as exc:
            log.warning("placement.json not updated: an actor did not answer (%s)", type(exc).__name__)

    def _wait_for_actors(self, timeout_s: float = 120.0) -> None:
        """Until every actor answers again (Ray restarts the ones it may), at most timeout_s. A dead actor that Ray
        does not restart stops the run at once: waiting cannot bring it back."""
        deadline = time.time() + timeout_s
        for actor in self.graph.all():
            while True:
                try:
                    ray.get(actor.pid.remote(), timeout=max(1.0, deadline - time.time()))
                    break
                except RETRYABLE as exc:
                    # died (not merely unreachable for now: that one may answer again) and not coming back
                    if isinstance(exc, ray.exceptions.ActorDiedError) and not self.graph.restartable(actor):
                        raise ActorLostError(self._lost(actor)) from exc
                    if time.time() > deadline:
                        raise
                    time.sleep(1.0)

    def _lost(self, actor: Any) -> str:
        role = "learner" if actor is self.graph.learner else "actor"
        why = ("a learner is never restarted: its weights and optimiser state lived in it" if role == "learner"
               else "resources.max_restarts=0")
        ckpt = self.run.latest_checkpoint()
        where = (f"the last checkpoint is {ckpt}; `--resume {self.run.path}` goes on from it" if ckpt is not None
                 else f"no checkpoint was written yet in {self.run.path}")
        return f"the {role} died ({why}); {where}"

    def _sync_weights(self) -> float:
        return self.roles.sync()

    def _gather(self, step: int) -> Gathered:
        """Step `step`'s batch: its prompts (deterministic in seed and step, so a resumed run sees the same ones),
        sampled, judged, with the reference attached."""
        cfg = self.cfg
        prompts = prompts_for_step(self.pset.prompts, step, cfg.rollout.prompts_per_step, cfg.seed, cfg.data.shuffle)
        return gather(self.roles, prompts, cfg.seed * 1_000_003 + step, cfg.algorithm.kl_estimator)

    def _step(self, step: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        finish = start_learn(self.roles, self.prefetched.pop(step, None) or self._gather(step))
        if self.cfg.algorithm.async_steps and step + 1 < self.cfg.steps:
            try:  # while the learner updates on this step
                self.prefetched[step + 1] = self._gather(step + 1)
            except RETRYABLE as exc:
                log.warning("step %d: an actor died while gathering step %d ahead (%s); it gathers again then",
                            step, step + 1, type(exc).__name__)
        out = finish()
        # Pipelined, a step's time holds the next step's gather (which overlapped its update), not its own: the
        # times still add up to the run's training wall time.
        out.times["time/step"] = time.perf_counter() - t0
        give_up = self._judge_gave_up(step, out.scored)
        row = metrics_row(self.cfg, step, out)
        row.update(self.progress.advance(len(out.exp.responses), out.judged.stats.get("requests", len(out.exp.responses)),
                                         out.times["time/step"]))
        if step == 0:
            row.update(self.val_start)
        if validation_due(self.cfg, step) and self.val_prompts:
            row.update(self._validate("val"))
        self.run.append(self.run.metrics, [row])
        self.run.append(self.run.samples, sample_rows(step, out))
        log.info("%s", step_line(self.cfg.run_name, step, self.cfg.steps, row, out.times["time/step"],
                                 eta(step + 1, self.cfg.steps, self.progress.wall_s)))
        if give_up:
            # This step's row (its failures counted) is written; the checkpoint resumes after it.
            self._checkpoint(step + 1)
            j = self.cfg.judge
            raise JudgeUnavailableError(f"the judge failed every sample for {self.judge_failed_steps} steps in a row "
                                        f"({time.monotonic() - self.judge_last_success:.0f} s without a score; limits: "
                                        f"judge.max_consecutive_failed_steps={j.max_consecutive_failed_steps}, "
                                        f"judge.max_seconds_without_success={j.max_seconds_without_success:g}); "
                                        f"stopped after step {step} with a checkpoint in {self.run.checkpoints} "
                                        f"(a resumed run goes on at step {step + 1})")
        return row

    def _validate(self, prefix: str) -> dict[str, Any]:
        """The current policy's greedy answers to the validation prompts, scored by the training judges. An actor
        lost here costs this point of the curve only (logged), not a retry of the step's update."""
        g, t0 = self.graph, time.perf_counter()
        try:
            texts, lengths = ray.get(g.rollouts[0].validate.remote(self.val_prompts))
            judged = self.roles.judge(self.val_prompts, texts)
        except RETRYABLE as exc:
            log.warning("%s: validation lost an actor (%s); no %s point this step", self.cfg.run_name,
                        type(exc).__name__, prefix)
            return {}
        out: dict[str, Any] = validation_metrics(judged.judgements, lengths, list(self.cfg.judge.dimensions), prefix)
        out[f"{prefix}/judge_requests"] = judged.stats.get("requests", len(texts))
        out[f"time/{prefix}"] = time.perf_counter() - t0
        log.info("%s %s reward %s on %d held-out prompts (%.1fs)", self.cfg.run_name, prefix,
                 shown(out[f"{prefix}/reward"]), len(texts), out[f"time/{prefix}"])
        return out

    def _judge_gave_up(self, step: int, valid: list[int]) -> bool:
        """Whether to stop after this step: judge.max_consecutive_failed_steps steps or
        judge.max_seconds_without_success seconds in which the judge scored no sample."""
        if valid:
            self.judge_failed_steps = 0
            self.judge_last_success = time.monotonic()
            return False
        self.judge_failed_steps += 1
        silent_s = time.monotonic() - self.judge_last_success
        log.error("step %d: the judge scored no sample; no update (%d steps, %.0f s without a score)", step,
                  self.judge_failed_steps, silent_s)
        j = self.cfg.judge
        return self.judge_failed_steps >= j.max_consecutive_failed_steps or silent_s >= j.max_seconds_without_success

    def _checkpoint(self, next_step: int) -> None:
        state = ray.get(self.graph.learner.state.remote())
        version = ray.get(self.graph.learner.version.remote())
        learner = self.graph.learner
        self.run.save_checkpoint(next_step, state, {"next_step": next_step, "policy_version": version,
                                                    "data_position": next_step * self.cfg.rollout.prompts_per_step},
                                 lambda path: ray.get(learner.save_adapter.remote(path)), self.cfg.checkpoint.keep_last)


def _wandb_run(cfg: Config, run_dir: Path) -> Any:
    if not cfg.logging.wandb or cfg.logging.wandb_mode == "disabled":
        return None
    import wandb

    return wandb.init(project=cfg.logging.wandb_project, mode=cfg.logging.wandb_mode, dir=str(run_dir),
                      name=run_dir.name, config=cfg.model_dump(mode="json"), reinit="finish_previous")


def shutdown_graph(controller: Controller) -> None:
    """Kill a finished run's actors so the next run gets the memory back."""
    graph = getattr(controller, "graph", None)
    if graph is None:
        return
    kill(graph)
    controller.graph = None

