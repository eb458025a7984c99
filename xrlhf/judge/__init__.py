"""The explainable judge: per-dimension scores from an LLM (or a rule), aggregated into one reward.

BACKENDS is the one place that knows what each judge.backend is: how it is built, which models a run must find or
convert on this machine for it, and how it is named in a report. The rest of the code asks it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from xrlhf.config import JUDGE_BACKENDS, JudgeConfig
from xrlhf.judge.base import Judge, Judgement
from xrlhf.judge.rubric import Dimension, Rubric, expected_score, parse_score

__all__ = ["BACKENDS", "Backend", "Dimension", "Judge", "Judgement", "Rubric", "backend", "build_judge",
           "describe", "expected_score", "judge_label", "parse_score"]


@dataclass(frozen=True)
class Backend:
    """One judge.backend: build(cfg, model, cache_dir); the local model it loads (None: none); its one-line label;
    the tokenizer it reads from this machine (None: none); whether a model scores (False: judge.mode changes
    nothing, and a dimension is described by its definition)."""

    build: Callable[[JudgeConfig, str, str | None], Judge]
    local_model: Callable[[JudgeConfig, str], str | None]
    label: Callable[[JudgeConfig, str], str]
    local_tokenizer: Callable[[JudgeConfig], str | None] = lambda cfg: None
    reads_model: bool = True

    def prepared(self, cfg: JudgeConfig, policy_model: str) -> list[str]:
        """Models (or tokenizers) this judge reads from this machine's cache."""
        return [m for m in (self.local_model(cfg, policy_model), self.local_tokenizer(cfg)) if m]


def _hf(cfg: JudgeConfig, model: str, cache_dir: str | None) -> Judge:
    from xrlhf.judge.hf import HFJudge

    return HFJudge(cfg, model, cache_dir)


def _http(cfg: JudgeConfig, model: str, cache_dir: str | None) -> Judge:
    from xrlhf.judge.http import HttpJudge

    return HttpJudge(cfg)


def _rule(cfg: JudgeConfig, model: str, cache_dir: str | None) -> Judge:
    from xrlhf.judge.rule import RuleJudge

    return RuleJudge(cfg)


BACKENDS: dict[str, Backend] = {
    "hf": Backend(_hf, lambda cfg, policy: cfg.model or policy,
                  lambda cfg, policy: f"hf {cfg.model or policy}, mode {cfg.mode}"),
    "http": Backend(_http, lambda cfg, policy: None, lambda cfg, policy: f"http {cfg.http.model}, mode {cfg.mode}",
                    local_tokenizer=lambda cfg: cfg.http.tokenizer),
    "rule": Backend(_rule, lambda cfg, policy: None, lambda cfg, policy: f"rule (target {cfg.rule.target!r})",
                    reads_model=False),
}
assert set(BACKENDS) == set(JUDGE_BACKENDS), "config.JUDGE_BACKENDS and BACKENDS name the same backends"


def backend(cfg: JudgeConfig) -> Backend:
    return BACKENDS[cfg.backend]


def judge_label(cfg: JudgeConfig, policy_model: str) -> str:
    """One line naming a judge: backend, model and mode (the rule judge: its target)."""
    return backend(cfg).label(cfg, policy_model)


def describe(cfg: JudgeConfig) -> dict[str, str]:
    """One line per dimension: what its score measures. A model in likelihood mode: its signal and measured
    specificity (likelihood.describe); otherwise the definition the judge is shown."""
    if cfg.mode == "likelihood" and backend(cfg).reads_model:
        from xrlhf.judge.likelihood import describe as signals

        return signals(cfg)
    return {name: d.definition for name, d in cfg.dimensions.items()}


def build_judge(cfg: JudgeConfig, policy_model: str = "packaged", cache_dir: str | None = None) -> Judge:
    """The judge cfg.backend names; cfg.model None means the policy's base model."""
    return backend(cfg).build(cfg, cfg.model or policy_model, cache_dir)
