"""Judge actor: the explainable judge behind a Ray actor; several can score one batch in parallel."""
from __future__ import annotations

import time
from typing import Any

import ray

from actors.common import keep_user_error, pid, setup_process
from xrlhf.config import Config
from xrlhf.judge import build_judge


@ray.remote
class JudgeActor:
    """Scores (prompt, response) pairs on every rubric dimension."""

    def __init__(self, cfg: dict[str, Any]):
        self.cfg = Config.model_validate(cfg)
        setup_process(self.cfg, self.cfg.resources.judge, "judge")
        with keep_user_error(self):
            self.judge = build_judge(self.cfg.judge, self.cfg.model.name, self.cfg.model.cache_dir)

    def score(self, prompts: list[str], responses: list[str]) -> tuple[list, float, dict[str, float]]:
        """(judgements, seconds, failure/retry counters)."""
        t0 = time.perf_counter()
        out = self.judge.score(prompts, responses)
        return out, time.perf_counter() - t0, self.judge.stats()

    def compare(self, prompts: list[str], first: list[str], second: list[str]) -> list:
        return self.judge.compare(prompts, first, second)

    def pid(self) -> int:
        return pid(self)
