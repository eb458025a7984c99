"""The driver loop over the actor graph: rollout → (reference ∥ judge) → learner → weight sync.

It never looks at the algorithm name: the learner actor hides PPO and REINFORCE behind one interface.
"""
from __future__ import annotations

import ipaddress
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from xrlhf.algorithms.kl import kl_penalty
from xrlhf.config import Config, ResourcesConfig, check_context
from xrlhf.data import load_prompts
from xrlhf.experience import Experience
from xrlhf.exposure import beyond_loopback, require_auth_or_opt_in
from xrlhf.generation import merge_experiences
from xrlhf.logs import eta
from xrlhf.models import check_model_source, prepare_packaged
from xrlhf.rundir import RunDir
from xrlhf.validation import Progress, validation_due, validation_metrics, validation_prompts

log = logging.getLogger(__name__)
RETRYABLE = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


class JudgeUnavailableError(RuntimeError):
    """No judge answer succeeded for too many steps in a row."""


def init_ray(res: ResourcesConfig) -> None:
    """Join the cluster at resources.address / RAY_ADDRESS, or start Ray on this machine, on 127.0.0.1."""
    if ray.is_initialized():
        return
    address = res.address or os.environ.get("RAY_ADDRESS")
    if address:
        # Remote nodes do not share this environment. Ray's runtime-env agent logs these values in clear.
        env = {"env_vars": {k: v for k, v in os.environ.items() if k.startswith(("XRLHF_", "HF_"))}}
        ray.init(address=address, runtime_env=env, log_to_driver=True)
        return
    if (os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") or "").lower() in ("1", "true"):
        require_auth_or_opt_in("a local Ray head (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 binds the machine's address)",
                               res.allow_unauthenticated_cluster)
    if res.include_dashboard and beyond_loopback(res.dashboard_host):  # the dashboard accepts jobs: code to run
        require_auth_or_opt_in(f"Ray's dashboard (resources.dashboard_host={res.dashboard_host})",
                               res.allow_unauthenticated_cluster)
    # No runtime_env: local workers inherit this environment, and no secret reaches Ray's logs.
    start_local_ray(num_cpus=res.num_cpus, num_gpus=res.num_gpus, include_dashboard=res.include_dashboard,
                    dashboard_host=res.dashboard_host, log_to_driver=True)
    node_ip = ray.util.get_node_ip_address()
    if not ipaddress.ip_address(node_ip).is_loopback:
        log.warning("local Ray listens on %s as well as 127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 is set)",
                    node_ip)


def start_local_ray(**init_kwargs: Any) -> None:
    """ray.init of a single-machine Ray whose servers (GCS, raylet, workers, agents) bind 127.0.0.1 only.

    Ray binds loopback when RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: its child processes read the variable
    when they start, this process read it at `import ray`, so both are set around the call and put back
    after (a later `ray start` in this process would otherwise refuse). A user's explicit =1 is kept.
    """
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


@dataclass
class Graph:
    """Handles of one run's actors."""

    rollouts: list[Any]
    reference: Any  # a ReferenceActor, or the learner itself when the reference is colocated
    judges: list[Any]
    learner: Any
    placement_group: Any = None

    def all(self) -> list[Any]:
        extra = [] if self.reference is self.learner else [self.reference]
        return self.rollouts + extra + self.judges + [self.learner]


def build_graph(cfg: Config) -> Graph:
    """Create the actors with the resources, restarts and placement that config asks for."""
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from actors.judge import JudgeActor
    from actors.learner import LearnerActor
    from actors.reference import ReferenceActor
    from actors.rollout import RolloutActor

    # One conversion of the packaged model, here, instead of one per actor racing on the cache.
    prepare_packaged([cfg.model.name, cfg.judge.model if cfg.judge.backend == "hf" else None,
                      cfg.judge.http.tokenizer if cfg.judge.backend == "http" else None], cfg.model.cache_dir)
    res, raw = cfg.resources, cfg.model_dump(mode="json")
    roles = ([("rollout", RolloutActor)] * cfg.rollout.num_actors + [("judge", JudgeActor)] * cfg.judge.num_actors
             + [("learner", LearnerActor)] + ([] if res.colocate_reference else [("reference", ReferenceActor)]))
    bundles = [_bundle(getattr(res, role)) for role, _ in roles]
    pg = placement_group(bundles, strategy=res.placement_strategy)
    ray.get(pg.ready(), timeout=res.placement_timeout_s)
    handles: dict[str, list[Any]] = {}
    for i, (role, cls) in enumerate(roles):
        r = getattr(res, role)
        restarts = 0 if role == "learner" else res.max_restarts  # a restarted learner would lose its weights
        actor = cls.options(num_cpus=r.num_cpus, num_gpus=r.num_gpus, max_restarts=restarts,
                            scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i)
                            ).remote(raw)
        handles.setdefault(role, []).append(actor)
    learner = handles["learner"][0]
    graph = Graph(handles["rollout"], handles.get("reference", [learner])[0], handles["judge"], learner, pg)
    try:
        ray.get([a.pid.remote() for a in graph.all()])  # surface construction errors now
    except Exception:
        _kill(graph)
        raise
    return graph


def _bundle(r: Any) -> dict[str, float]:
    b = {"CPU": r.num_cpus}
    if r.num_gpus:
        b["GPU"] = r.num_gpus
    return b


def prompts_for_step(prompts: list[str], step: int, per_step: int, seed: int, shuffle: bool = True) -> list[str]:
    """Deterministic in (seed, step): a resumed run sees exactly the prompts it would have seen."""
    n = len(prompts)
    out = []
    for i in range(step * per_step, (step + 1) * per_step):
        epoch, pos = divmod(i, n)
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else range(n)
        out.append(prompts[order[pos]])
    return out


def _split(items: list[Any], parts: int) -> list[list[Any]]:
    k = math.ceil(len(items) / parts)
    return [items[i:i + k] for i in range(0, len(items), k)]


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
        pset = load_prompts(cfg.data.source, "train", cfg.data.path, max_prompt_tokens=cfg.data.max_prompt_tokens)
        if pset.total_skipped:
            log.info("prompts: %d usable, skipped %s", len(pset.prompts), pset.skipped)
        check_context(cfg)
        if not (cfg.resources.address or os.environ.get("RAY_ADDRESS")):  # on a cluster the path is the nodes' business
            check_model_source(cfg.model.name)
            if cfg.judge.backend == "hf":
                check_model_source(cfg.judge.model or cfg.model.name)
        init_ray(cfg.resources)  # after the data and model checks: a bad file or path fails before Ray starts
        start = 0
        if self.resume and self.run.latest_checkpoint() is None and self.run.read_metrics():
            log.warning("no checkpoint in %s: starting again from step 0", self.run.path)
        if not cfg.logging.library_logs:
            cfg.logging.library_logs = str((self.run.path / "logs").resolve())
        self.run.create(cfg)
        self.graph = build_graph(cfg)
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
        for step in range(start, cfg.steps):
            row = self._step_with_retries(step, prompts_for_step(pset.prompts, step, cfg.rollout.prompts_per_step,
                                                                   cfg.seed, cfg.data.shuffle))
            if (step + 1) % cfg.checkpoint.every == 0 or step + 1 == cfg.steps:
                self._checkpoint(step + 1)
            if self.wandb is not None:
                self.wandb.log(row, step=step)
        if self.wandb is not None:
            self.wandb.finish()
        return self.run.path

    def _step_with_retries(self, step: int, prompts: list[str]) -> dict[str, Any]:
        for attempt in range(self.cfg.resources.max_step_retries + 1):
            try:
                return self._step(step, prompts)
            except RETRYABLE as exc:
                if attempt == self.cfg.resources.max_step_retries:
                    raise
                log.warning("step %d: an actor died (%s); retrying the step (%d/%d)", step, type(exc).__name__,
                            attempt + 1, self.cfg.resources.max_step_retries)
                self._wait_for_actors()
                self._sync_weights()
        raise AssertionError("unreachable")

    def _wait_for_actors(self, timeout_s: float = 120.0) -> None:
        deadline = time.time() + timeout_s
        for actor in self.graph.all():
            while True:
                try:
                    ray.get(actor.pid.remote(), timeout=max(1.0, deadline - time.time()))
                    break
                except RETRYABLE:
                    if time.time() > deadline:
                        raise
                    time.sleep(1.0)

    def _sync_weights(self) -> float:
        t0 = time.perf_counter()
        state, version = ray.get(self.graph.learner.weights.remote())
        ref = ray.put(state)
        ray.get([r.set_weights.remote(ref, version) for r in self.graph.rollouts])
        return time.perf_counter() - t0

    def _step(self, step: int, prompts: list[str]) -> dict[str, Any]:
        cfg, g = self.cfg, self.graph
        t_step = time.perf_counter()
        seed = cfg.seed * 1_000_003 + step
        parts = ray.get([r.generate.remote(chunk, seed + i) for i, (r, chunk)
                         in enumerate(zip(g.rollouts, _split(prompts, len(g.rollouts))))])
        exp = merge_experiences([p[0] for p in parts], pad_id=0)
        t_rollout = time.perf_counter() - t_step
        exp_ref = ray.put(exp)
        t0 = time.perf_counter()
        ref_future = g.reference.reference_logprobs.remote(exp_ref)  # runs while the judges score
        judgements, judge_stats = self._judge(exp.prompts, exp.responses)
        t_judge = time.perf_counter() - t0
        ref_logprobs, ref_own_s = ray.get(ref_future)
        t_reference = time.perf_counter() - t0
        exp.ref_logprobs = ref_logprobs
        exp.scores = [j.normalised for j in judgements]
        exp.rewards = torch.tensor([j.reward if j.reward is not None else float("nan") for j in judgements])
        valid = [i for i, j in enumerate(judgements) if j.reward is not None]
        give_up = self._judge_gave_up(step, valid)
        t0 = time.perf_counter()
        advantages: list[float | None] = [None] * len(judgements)
        if valid:
            metrics, adv, _ = ray.get(g.learner.update.remote(exp.select(valid)))
            for i, a in zip(valid, adv):
                advantages[i] = a
        else:
            metrics = {"skipped_update": True}
        t_learner = time.perf_counter() - t0
        t_sync = self._sync_weights() if valid else 0.0
        # time/reference is when its result was collected (after the judges); time/reference_pass is the
        # reference actor's own seconds, so max(judge, reference) can be read apart.
        times = {"time/rollout": t_rollout, "time/reference": t_reference, "time/reference_pass": ref_own_s,
                 "time/judge": t_judge,
                 "time/learner": t_learner, "time/sync": t_sync, "time/step": time.perf_counter() - t_step}
        row = self._metrics_row(step, exp, judgements, advantages, metrics, times, judge_stats)
        row.update(self.progress.advance(len(exp.responses), judge_stats.get("requests", len(exp.responses)),
                                         times["time/step"]))
        if step == 0:
            row.update(self.val_start)
        if validation_due(self.cfg, step) and self.val_prompts:
            row.update(self._validate("val"))
        self.run.append(self.run.metrics, [row])
        self.run.append(self.run.samples, self._sample_rows(step, exp, judgements, advantages))
        log.info("%s step %d/%d reward %.3f±%.3f kl %.4f len %.1f %s%.1fs, ETA %s", self.cfg.run_name, step + 1,
                 self.cfg.steps, row["reward/mean"] or float("nan"), row["reward/std"] or float("nan"), row["kl/mean"],
                 row["response_length/mean"], f"missing {row['judge/missing']} " if row["judge/missing"] else "",
                 times["time/step"], eta(step + 1, self.cfg.steps, self.progress.wall_s))
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

    def _judge(self, prompts: list[str], responses: list[str]) -> tuple[list[Any], dict[str, float]]:
        """The samples split across the judge actors, scored in parallel: (judgements in order, summed stats)."""
        g = self.graph
        chunks = _split(list(range(len(prompts))), len(g.judges))
        judged = ray.get([j.score.remote([prompts[i] for i in idx], [responses[i] for i in idx])
                          for j, idx in zip(g.judges, chunks)])
        return [j for part in judged for j in part[0]], _sum_stats([part[2] for part in judged])

    def _validate(self, prefix: str) -> dict[str, Any]:
        """The current policy's greedy answers to the validation prompts, scored by the training judges. An actor
        lost here costs this point of the curve only (logged), not a retry of the step's update."""
        g, t0 = self.graph, time.perf_counter()
        try:
            texts, lengths = ray.get(g.rollouts[0].validate.remote(self.val_prompts))
            judgements, stats = self._judge(self.val_prompts, texts)
        except RETRYABLE as exc:
            log.warning("%s: validation lost an actor (%s); no %s point this step", self.cfg.run_name,
                        type(exc).__name__, prefix)
            return {}
        out: dict[str, Any] = validation_metrics(judgements, lengths, list(self.cfg.judge.dimensions), prefix)
        out[f"{prefix}/judge_requests"] = stats.get("requests", len(texts))
        out[f"time/{prefix}"] = time.perf_counter() - t0
        log.info("%s %s reward %.3f on %d held-out prompts (%.1fs)", self.cfg.run_name, prefix,
                 out[f"{prefix}/reward"] if out[f"{prefix}/reward"] is not None else float("nan"), len(texts),
                 out[f"time/{prefix}"])
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

    def _metrics_row(self, step: int, exp: Experience, judgements: list[Any], advantages: list[float | None],
                     learner_metrics: dict[str, Any], times: dict[str, float], judge_stats: dict[str, float]) -> dict[str, Any]:
        cfg = self.cfg
        mask = exp.response_mask.float()
        kl = (kl_penalty(exp.behaviour_logprobs, exp.ref_logprobs, cfg.algorithm.kl_estimator) * mask).sum(-1)  # [B]
        lengths = mask.sum(-1)
        rewards = [j.reward for j in judgements if j.reward is not None]
        dims = list(cfg.judge.dimensions)
        row: dict[str, Any] = {"step": step, "algorithm": cfg.algorithm.name, "seed": cfg.seed,
                               "policy_version": exp.policy_version,
                               "reward/mean": float(np.mean(rewards)) if rewards else None,
                               "reward/std": float(np.std(rewards)) if rewards else None,
                               "kl/mean": float(kl.mean()), "response_length/mean": float(lengths.mean()),
                               "tokens_per_s": float(lengths.sum()) / max(times["time/step"], 1e-9),
                               "judge/missing": int(sum(j.missing for j in judgements)),
                               "judge/dropped": int(sum(j.reward is None for j in judgements))}
        for d in dims:
            vals = [j.normalised.get(d) for j in judgements if j.normalised.get(d) is not None]
            row[f"score/{d}"] = float(np.mean(vals)) if vals else None
        confs = [c for j in judgements for c in j.confidence.values() if c is not None]
        row["confidence/mean"] = float(np.mean(confs)) if confs else None
        row.update(attribution(judgements, advantages, {d: cfg.judge.dimensions[d].weight for d in dims},
                               cfg.judge.aggregation))
        valid = [i for i, j in enumerate(judgements) if j.reward is not None]
        row["corr/length_reward"] = _corr([float(lengths[i]) for i in valid], [judgements[i].reward for i in valid])
        row.update({f"judge/{k}": v for k, v in judge_stats.items()})
        row.update(learner_metrics)
        row.update(times)
        return row

    def _sample_rows(self, step: int, exp: Experience, judgements: list[Any], advantages: list[float | None]) -> list[dict]:
        mask = exp.response_mask.float()
        kl = (kl_penalty(exp.behaviour_logprobs, exp.ref_logprobs, self.cfg.algorithm.kl_estimator) * mask).sum(-1)
        return [{"step": step, "prompt": exp.prompts[i], "response": exp.responses[i], "scores": j.scores,
                 "normalised": j.normalised, "confidence": j.confidence, "rationale": j.rationale,
                 "kl": float(kl[i]), "reward": j.reward, "advantage": advantages[i],
                 "policy_version": exp.policy_version, "length": int(mask[i].sum())}
                for i, j in enumerate(judgements)]


def attribution(judgements: list[Any], advantages: list[float | None], weights: dict[str, float],
                aggregation: str) -> dict[str, float | None]:
    """Share of the update's advantage each dimension carried: cov(A, w_d·s_d) / Σ_d cov(A, w_d·s_d).

    Exact for mean/weighted aggregation (the reward is linear in the scores); for `min` it is the linear
    approximation. Missing scores take the batch mean, so they carry no share.
    """
    idx = [i for i, a in enumerate(advantages) if a is not None]
    out: dict[str, float | None] = {f"attribution/{d}": None for d in weights}
    if len(idx) < 2:
        return out
    adv = np.array([advantages[i] for i in idx])
    total_w = sum(weights.values()) if aggregation == "weighted" else len(weights)
    covs = {}
    for d, w in weights.items():
        s = np.array([judgements[i].normalised.get(d) if judgements[i].normalised.get(d) is not None else np.nan
                      for i in idx], dtype=float)
        s = np.where(np.isnan(s), np.nanmean(s) if np.isfinite(s).any() else 0.0, s)
        scale = (w if aggregation == "weighted" else 1.0) / total_w
        covs[d] = float(np.mean((adv - adv.mean()) * (scale * s - scale * s.mean())))
    denom = sum(covs.values())
    if abs(denom) < 1e-12:
        return out
    return {f"attribution/{d}": c / denom for d, c in covs.items()}


def _corr(x: list[float], y: list[float]) -> float | None:
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _sum_stats(stats: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in stats:
        for k, v in s.items():
            out[k] = out.get(k, 0.0) + v
    return out


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
    _kill(graph)
    controller.graph = None


def _kill(graph: Graph) -> None:
    from ray.util.placement_group import remove_placement_group

    for actor in graph.all():
        ray.kill(actor)
    remove_placement_group(graph.placement_group)
