"""The held-out validation curve and the progress counters a run's curves are drawn against.

Every `eval.every_steps` steps the current policy answers a fixed set of held-out prompts greedily and the training
judge scores the answers: `val/reward` and `val/<dimension>` in that step's metrics row (the policy after the step's
update). Step 0's row also carries `val_start/...`, the policy before any update. Every row carries cumulative
`progress/samples`, `progress/judge_calls` and `progress/wall_s`, so curves can be drawn against samples, judge calls
and wall seconds as well as steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from xrlhf.config import Config
from xrlhf.data import load_prompts

PROGRESS_KEYS = ("progress/samples", "progress/judge_calls", "progress/wall_s")


def validation_prompts(cfg: Config) -> list[str]:
    """The first eval.validation_prompts prompts of the eval split ([] when eval.every_steps is 0): the same for
    every step, arm and seed, and among the prompts the final evaluation uses."""
    if not cfg.eval.every_steps:
        return []
    return load_prompts(cfg.data.eval_source, "eval", cfg.data.eval_path, max_prompt_tokens=cfg.data.max_prompt_tokens,
                        limit=cfg.eval.validation_prompts).prompts


def validation_due(cfg: Config, step: int) -> bool:
    """Whether the policy after step `step` (0-based) is validated: every eval.every_steps steps, and the last step."""
    every = cfg.eval.every_steps
    return bool(every) and ((step + 1) % every == 0 or step + 1 == cfg.steps)


def validation_metrics(judgements: list[Any], lengths: list[int], dimensions: list[str],
                       prefix: str = "val") -> dict[str, float | None]:
    """{prefix/reward, prefix/<dim>, prefix/length, prefix/scored}: means over the prompts the judge scored."""
    rewards = [j.reward for j in judgements if j.reward is not None]
    out: dict[str, float | None] = {f"{prefix}/reward": float(np.mean(rewards)) if rewards else None,
                                    f"{prefix}/length": float(np.mean(lengths)) if lengths else None,
                                    f"{prefix}/scored": float(len(rewards))}
    for d in dimensions:
        vals = [j.normalised.get(d) for j in judgements if j.normalised.get(d) is not None]
        out[f"{prefix}/{d}"] = float(np.mean(vals)) if vals else None
    return out


@dataclass
class Progress:
    """Cumulative samples generated, judge requests spent on training samples and seconds of training steps.

    Validation is measurement, not training: its seconds (time/validation) and judge requests (val/judge_requests)
    are kept out of these totals, so every arm is placed on the same axes by what its training cost.
    """

    samples: int = 0
    judge_calls: float = 0.0
    wall_s: float = 0.0

    @classmethod
    def resume(cls, rows: list[dict[str, Any]]) -> "Progress":
        """Totals from the last metrics row written (a resumed run goes on counting from there)."""
        last = rows[-1] if rows else {}
        return cls(int(last.get("progress/samples") or 0), float(last.get("progress/judge_calls") or 0.0),
                   float(last.get("progress/wall_s") or 0.0))

    def advance(self, samples: int, judge_calls: float, seconds: float) -> dict[str, float]:
        """Add one step and return the row's progress columns."""
        self.samples += samples
        self.judge_calls += judge_calls
        self.wall_s += seconds
        return dict(zip(PROGRESS_KEYS, (self.samples, self.judge_calls, round(self.wall_s, 3))))
