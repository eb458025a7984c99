"""What every judge backend returns and the protocol it implements."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from xrlhf.judge import guards
from xrlhf.judge.rubric import Rubric, expected_score, parse_score

__all__ = ["Judge", "Judgement", "Verdict", "expected_score", "judgement", "parse_score"]


@dataclass
class Judgement:
    """The judge's verdict on one (prompt, response): per-dimension scores and the one reward made from them."""

    scores: dict[str, float | None]  # raw, in [min_score, max_score]; the expected value in expected mode
    normalised: dict[str, float | None]  # in [0, 1], direction applied (lower is better -> 1 - x)
    confidence: dict[str, float | None]  # 1 - entropy / log(#score values); None where unknown (generate mode)
    rationale: dict[str, str] = field(default_factory=dict)  # only with judge.rationale; never in the reward
    reward: float | None = None  # None: dropped by the missing policy
    missing: int = 0  # dimensions that failed after retries


@dataclass(frozen=True)
class Verdict:
    """One dimension's outcome for one (prompt, response), as a backend produced it."""

    score: float | None
    confidence: float | None
    rationale: str = ""


def judgement(rubric: Rubric, verdicts: list[Verdict], fired: tuple[str, str] | None = None,
              model_read: frozenset[str] = frozenset()) -> Judgement:
    """The Judgement of one sample from its verdicts in rubric order; a fired guard (guards.check) replaces the
    verdicts of the dimensions it concerns with their worst score and says why, whatever backend scored them.

    `model_read` names the dimensions the judge model scores (likelihood mode's text measures do not): when every
    one of them is missing, the sample has no reward (None, a failed judgement the controller counts), however
    missing_policy would reweight, so a dead judge server cannot leave a reward made of word counts alone."""
    if fired is not None:
        kind, reason = fired
        hit = {d.name for d in guards.concerned(kind, rubric.dimensions)}
        verdicts = [Verdict(guards.worst(d), 1.0, f"guard {kind}: {reason}") if d.name in hit else v
                    for d, v in zip(rubric.dimensions, verdicts)]
    names = rubric.names
    scores = {n: v.score for n, v in zip(names, verdicts)}
    normalised = rubric.normalise_all(scores)
    blind = bool(model_read) and all(scores.get(n) is None for n in model_read)
    return Judgement(scores=scores, normalised=normalised, confidence={n: v.confidence for n, v in zip(names, verdicts)},
                     rationale={n: v.rationale for n, v in zip(names, verdicts) if v.rationale},
                     reward=None if blind else rubric.aggregate(normalised),
                     missing=sum(v.score is None for v in verdicts))


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
