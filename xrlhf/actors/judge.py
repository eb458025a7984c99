"""Judge actor: the explainable judge behind a Ray actor; several can score one batch in parallel."""
from __future__ import annotations

import time

import ray

from xrlhf.actors.base import ActorBase
from xrlhf.driver.step import Judged
from xrlhf.judge import build_judge


@ray.remote
class JudgeActor(ActorBase):
    """Scores (prompt, response) pairs on every rubric dimension."""

    role = "judge"

    def build(self) -> None:
        self.judge = build_judge(self.cfg.judge, self.cfg.model.name, self.cfg.model.cache_dir)

    def score(self, prompts: list[str], responses: list[str]) -> Judged:
        """Judgements in order, the seconds they took and the judge's failure/retry counters."""
        t0 = time.perf_counter()
        out = self.judge.score(prompts, responses)
        return Judged(out, time.perf_counter() - t0, self.judge.stats())

