"""One training step over the graph's roles: gather (generate → reference ∥ judge), then learn (update → sync).

The controller runs it on Ray actors (xrlhf.driver.graph.ActorRoles), the benchmarks in one process (bench/common.py):
the same functions, so a benchmark measures what users run. Each role returns a small typed result with the
seconds it spent itself (and, for the rollout and the update, when it started and finished, by the wall clock);
the step adds the seconds the driver waited.

Pipelined (algorithm.async_steps: 1), the controller gathers step k+1 while the learner updates on step k
(start_learn returns before the update is done): step k+1's samples come from the weights before update k,
one version behind the learner, which the learners correct for (xrlhf/learners).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

from xrlhf.judge.base import Judgement
from xrlhf.policy.experience import Experience


@dataclass
class Rollout:
    """Sampled experience, the sampler's own seconds, and when it started and finished (time.time())."""

    experience: Experience
    seconds: float
    started: float = 0.0
    finished: float = 0.0


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
    """What one learner update did: its metrics (`skipped_update` says whether any optimiser step was applied), a
    mean advantage per sample it saw (in its order), and the learner's own seconds."""

    metrics: dict[str, Any]
    advantages: list[float]
    seconds: float
    started: float = 0.0
    finished: float = 0.0


class Roles(Protocol):
    """The graph's roles as the step sees them; ActorRoles puts them on Ray actors, bench/ in one process."""

    def generate(self, prompts: list[str], seed: int) -> Rollout: ...

    def reference(self, exp: Experience) -> Callable[[], Reference]:
        """Start the reference pass; the returned call collects it (the judges score in between)."""

    def judge(self, prompts: list[str], responses: list[str]) -> Judged: ...

    def update(self, exp: Experience) -> Callable[[], UpdateResult]:
        """Start the learner's update; the returned call waits for it (the pipelined loop gathers meanwhile)."""

    def sync(self) -> float:
        """Send the learner's weights to the samplers; the seconds it took."""


@dataclass
class Gathered:
    """A batch ready to learn from: sampled, judged, its reference log-probs and KL attached."""

    exp: Experience
    rollout: Rollout
    judged: Judged
    reference_s: float
    times: dict[str, float]  # the driver's seconds waiting for each stage of the gather

    @property
    def scored(self) -> list[int]:
        """The samples with a reward: the ones the learner sees."""
        return scored(self.judged.judgements)


@dataclass
class StepOutcome:
    """Everything one step produced, for the metrics and sample rows."""

    exp: Experience  # the whole batch, with reference log-probs, KL, scores and rewards
    judged: Judged
    update: UpdateResult | None  # None when the judge scored no sample: no update, no sync
    advantages: list[float | None]  # per sample of the batch; None for samples the judge dropped
    times: dict[str, float]

    @property
    def judgements(self) -> list[Judgement]:
        return self.judged.judgements

    @property
    def scored(self) -> list[int]:
        """The samples with a reward: the ones the learner saw."""
        return scored(self.judged.judgements)


def scored(judgements: list[Judgement]) -> list[int]:
    """Indices of the samples the judge gave a reward (the others are left out of the update and counted)."""
    return [i for i, j in enumerate(judgements) if j.reward is not None]


def gather(roles: Roles, prompts: list[str], seed: int, kl_estimator: str) -> Gathered:
    """Sample `prompts`, then score them while the reference pass runs; rewards, scores and KL attached."""
    t_start = time.perf_counter()
    rollout = roles.generate(prompts, seed)
    exp = rollout.experience
    t_rollout = time.perf_counter() - t_start
    t0 = time.perf_counter()
    collect_reference = roles.reference(exp)  # runs while the judges score
    judged = roles.judge(exp.prompts, exp.responses)
    t_judge = time.perf_counter() - t0
    ref = collect_reference()
    t_reference = time.perf_counter() - t0
    exp.set_reference(ref.logprobs, kl_estimator)
    exp.scores = [j.normalised for j in judged.judgements]
    exp.rewards = torch.tensor([j.reward if j.reward is not None else float("nan") for j in judged.judgements])
    times = {"time/rollout": t_rollout, "time/reference": t_reference, "time/judge": t_judge,
             "time/gather": time.perf_counter() - t_start}
    return Gathered(exp, rollout, judged, ref.seconds, times)


def start_learn(roles: Roles, g: Gathered) -> Callable[[], StepOutcome]:
    """Start the update on the scored samples of `g`; the returned call waits for it, syncs the weights to the
    samplers and gives the step's outcome. Samples the judge could not score are left out of the update (and
    counted by the caller); a batch where none was scored makes no update and no sync."""
    t0 = time.perf_counter()
    rows = g.scored
    wait = roles.update(g.exp.select(rows)) if rows else None

    def finish() -> StepOutcome:
        advantages: list[float | None] = [None] * len(g.judged.judgements)
        update = wait() if wait is not None else None
        if update is not None:
            for i, a in zip(rows, update.advantages):
                advantages[i] = a
        t_learner = time.perf_counter() - t0
        t_sync = roles.sync() if update is not None else 0.0
        # time/X is what the driver waited for a stage; time/X_own is the role's own seconds (the slowest actor's,
        # where several share the stage). time/reference is when its result was collected, after the judges.
        # clock/* are the rollout's and the update's own start and end (time.time()), to see what overlapped.
        times = {**g.times, "time/rollout_own": g.rollout.seconds, "time/reference_pass": g.reference_s,
                 "time/judge_own": g.judged.seconds, "time/learner": t_learner,
                 "time/learner_own": update.seconds if update is not None else 0.0, "time/sync": t_sync,
                 "clock/rollout_start": g.rollout.started, "clock/rollout_end": g.rollout.finished,
                 "clock/learner_start": update.started if update is not None else None,
                 "clock/learner_end": update.finished if update is not None else None}
        return StepOutcome(g.exp, g.judged, update, advantages, times)
    return finish


def run_step(roles: Roles, prompts: list[str], seed: int, kl_estimator: str) -> StepOutcome:
    """One sequential step: gather, then learn; time/step is its wall time."""
    t0 = time.perf_counter()
    out = start_learn(roles, gather(roles, prompts, seed, kl_estimator))()
    out.times["time/step"] = time.perf_counter() - t0
    return out
