"""One training step over the graph's roles: generate → (reference ∥ judge) → update → sync.

The controller runs it on Ray actors (xrlhf.graph.ActorRoles), the benchmarks in one process (bench/common.py):
the same function, so a benchmark measures what users run. Each role returns a small typed result with the
seconds it spent itself; the step adds the seconds the driver waited.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

from xrlhf.experience import Experience
from xrlhf.judge.base import Judgement


@dataclass
class Rollout:
    """Sampled experience and the sampler's own seconds."""

    experience: Experience
    seconds: float


@dataclass
class Judged:
    """One judgement per sample, in order; the judge's own seconds and its failure/retry counters."""

    judgements: list[Judgement]
    seconds: float
    stats: dict[str, float] = field(default_factory=dict)


@dataclass
class Reference:
    """Reference log-probs `[B, R]` of the sampled tokens and the reference pass's own seconds."""

    logprobs: torch.Tensor
    seconds: float


@dataclass
class UpdateResult:
    """What one learner update did: its metrics, a mean advantage per sample it saw (in its order), the policy
    version after it, whether any optimiser step was applied, and the learner's own seconds."""

    metrics: dict[str, Any]
    advantages: list[float]
    version: int
    applied: bool
    seconds: float


class Roles(Protocol):
    """The graph's roles as the step sees them; ActorRoles puts them on Ray actors, bench/ in one process."""

    def generate(self, prompts: list[str], seed: int) -> Rollout: ...

    def reference(self, exp: Experience) -> Callable[[], Reference]:
        """Start the reference pass; the returned call collects it (the judges score in between)."""

    def judge(self, prompts: list[str], responses: list[str]) -> Judged: ...

    def update(self, exp: Experience) -> UpdateResult: ...

    def sync(self) -> float:
        """Send the learner's weights to the samplers; the seconds it took."""


@dataclass
class StepOutcome:
    """Everything one step produced, for the metrics and sample rows."""

    exp: Experience  # the whole batch, with reference log-probs, KL, scores and rewards
    judgements: list[Judgement]
    judged: Judged
    update: UpdateResult | None  # None when the judge scored no sample: no update, no sync
    advantages: list[float | None]  # per sample of the batch; None for samples the judge dropped
    times: dict[str, float]

    @property
    def scored(self) -> list[int]:
        """The samples with a reward: the ones the learner saw."""
        return [i for i, j in enumerate(self.judgements) if j.reward is not None]


def run_step(roles: Roles, prompts: list[str], seed: int, kl_estimator: str) -> StepOutcome:
    """One step on `prompts`. Samples the judge could not score are left out of the update (and counted by the
    caller); a step where none was scored makes no update and no sync."""
    t_step = time.perf_counter()
    rollout = roles.generate(prompts, seed)
    exp = rollout.experience
    t_rollout = time.perf_counter() - t_step
    t0 = time.perf_counter()
    collect_reference = roles.reference(exp)  # runs while the judges score
    judged = roles.judge(exp.prompts, exp.responses)
    t_judge = time.perf_counter() - t0
    ref = collect_reference()
    t_reference = time.perf_counter() - t0
    exp.set_reference(ref.logprobs, kl_estimator)
    judgements = judged.judgements
    exp.scores = [j.normalised for j in judgements]
    exp.rewards = torch.tensor([j.reward if j.reward is not None else float("nan") for j in judgements])
    scored = [i for i, j in enumerate(judgements) if j.reward is not None]
    advantages: list[float | None] = [None] * len(judgements)
    update = None
    t0 = time.perf_counter()
    if scored:
        update = roles.update(exp.select(scored))
        for i, a in zip(scored, update.advantages):
            advantages[i] = a
    t_learner = time.perf_counter() - t0
    t_sync = roles.sync() if update is not None else 0.0
    # time/X is what the driver waited for a stage; time/X_own is the role's own seconds (the slowest actor's,
    # where several share the stage). time/reference is when its result was collected, after the judges.
    times = {"time/rollout": t_rollout, "time/rollout_own": rollout.seconds,
             "time/reference": t_reference, "time/reference_pass": ref.seconds,
             "time/judge": t_judge, "time/judge_own": judged.seconds,
             "time/learner": t_learner, "time/learner_own": update.seconds if update is not None else 0.0,
             "time/sync": t_sync, "time/step": time.perf_counter() - t_step}
    return StepOutcome(exp, judgements, judged, update, advantages, times)
