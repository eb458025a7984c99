"""What every judge backend returns and the protocol it implements."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from xrlhf.judge.rubric import Rubric, expected_score, parse_score

__all__ = ["Judge", "Judgement", "expected_score", "parse_score"]


@dataclass
class Judgement:
    """The judge's verdict on one (prompt, response): per-dimension scores and the one reward made from them."""

    scores: dict[str, float | None]  # raw, in [min_score, max_score]; the expected value in expected mode
    normalised: dict[str, float | None]  # in [0, 1], direction applied (lower is better -> 1 - x)
    confidence: dict[str, float | None]  # 1 - entropy / log(#score values); None where unknown (generate mode)
    rationale: dict[str, str] = field(default_factory=dict)  # only with judge.rationale; never in the reward
    reward: float | None = None  # None: dropped by the missing policy
    missing: int = 0  # dimensions that failed after retries


class Judge(Protocol):
    """A judge scores responses on the rubric's dimensions and compares two responses."""

    rubric: Rubric

    def score(self, prompts: list[str], responses: list[str]) -> list[Judgement]:
        """One Judgement per (prompt, response), in order."""
        ...

    def compare(self, prompts: list[str], first: list[str], second: list[str]) -> list[float | None]:
        """P(first response is better) per pair, over both presentation orders; None where there is no answer."""
        ...

    def compare_orders(self, prompts: list[str], first: list[str],
                       second: list[str]) -> list[tuple[float | None, float | None]]:
        """Per pair, P(first is better) when it is shown first and when it is shown second: the two verdicts whose
        mean compare() returns, and whose agreement is the judge's position consistency."""
        ...

    def stats(self) -> dict[str, float]:
        """Counters since the last call (requests, failures, retries, cache_hits), then reset them."""
        ...
