"""A verifiable rule judge for tests and learning checks: no LLM, the reward is a known function of the text."""
from __future__ import annotations

from xrlhf.config import JudgeConfig
from xrlhf.judge.base import Judgement
from xrlhf.judge.rubric import Rubric

HALF_COUNT = 2  # occurrences of the target that give half the range


def target_fraction(response: str, target: str) -> float:
    """count / (count + 2) for non-overlapping occurrences of target: 0, 1/3, 1/2, 2/3, ... never saturating."""
    count = response.count(target) if target else 0
    return count / (count + HALF_COUNT)


class RuleJudge:
    """NOT an LLM judge: a verifiable stand-in whose score a policy can provably learn to raise.

    Every dimension scores lo + (hi - lo) * c / (c + 2), c = occurrences of judge.rule.target in
    the response. It never saturates, so even a tiny random character-level policy gets a signal
    (use a one-character target such as "e" there). Confidence is 1.0: the rule is certain.
    """

    def __init__(self, cfg: JudgeConfig) -> None:
        self.rubric = Rubric.from_config(cfg)
        self.target = cfg.rule.target
        self._requests = 0

    def score(self, prompts: list[str], responses: list[str]) -> list[Judgement]:
        """One Judgement per response; the prompt is ignored."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        self._requests += len(responses)
        return [self._judge(r) for r in responses]

    def _judge(self, response: str) -> Judgement:
        frac = target_fraction(response, self.target)
        scores: dict[str, float | None] = {d.name: d.lo + (d.hi - d.lo) * frac for d in self.rubric.dimensions}
        normalised = self.rubric.normalise_all(scores)
        return Judgement(scores=scores, normalised=normalised, confidence={n: 1.0 for n in scores},
                         reward=self.rubric.aggregate(normalised), missing=0)

    def compare(self, prompts: list[str], first: list[str], second: list[str]) -> list[float | None]:
        """1.0 when the first response's rule reward is higher, 0.0 when lower, 0.5 on ties."""
        out: list[float | None] = []
        for a, b in zip(self.score(prompts, first), self.score(prompts, second)):
            if a.reward is None or b.reward is None:
                out.append(None)
            else:
                out.append(0.5 if a.reward == b.reward else float(a.reward > b.reward))
        return out

    def compare_orders(self, prompts: list[str], first: list[str],
                       second: list[str]) -> list[tuple[float | None, float | None]]:
        """The rule never sees the two side by side: the same verdict in both orders."""
        return [(p, p) for p in self.compare(prompts, first, second)]

    def stats(self) -> dict[str, float]:
        """Counters since the last call; the rule never fails, retries or caches."""
        out = {"requests": float(self._requests), "failures": 0.0, "retries": 0.0, "cache_hits": 0.0}
        self._requests = 0
        return out
