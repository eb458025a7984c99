"""The explainable judge: per-dimension scores from an LLM (or a rule), aggregated into one reward."""
from __future__ import annotations

from xrlhf.config import JudgeConfig
from xrlhf.judge.base import Judge, Judgement
from xrlhf.judge.rubric import Dimension, Rubric, expected_score, parse_score

__all__ = ["Dimension", "Judge", "Judgement", "Rubric", "build_judge", "expected_score", "parse_score"]


def build_judge(cfg: JudgeConfig, policy_model: str = "packaged", cache_dir: str | None = None) -> Judge:
    """The judge cfg.backend names; cfg.model None means the policy's base model."""
    if cfg.backend == "hf":
        from xrlhf.judge.hf import HFJudge

        return HFJudge(cfg, cfg.model or policy_model, cache_dir)
    if cfg.backend == "rule":
        from xrlhf.judge.rule import RuleJudge

        return RuleJudge(cfg)
    if cfg.backend == "http":
        from xrlhf.judge.http import HttpJudge

        return HttpJudge(cfg)
    if cfg.backend == "vllm":
        raise NotImplementedError("judge.backend=vllm is not implemented yet; use judge.backend=hf (local "
                                  "transformers) or judge.backend=http against `xrlhf serve-judge` or a vLLM "
                                  "OpenAI-compatible server")
    raise ValueError(f"unknown judge.backend {cfg.backend!r}")
