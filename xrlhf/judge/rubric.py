"""The rubric (dimensions, ranges, weights, directions), how scores become one reward, and the score readers."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Literal

from xrlhf.config import JudgeConfig


@dataclass(frozen=True)
class Dimension:
    """One named thing the judge scores, on the integer scale lo..hi."""

    name: str
    definition: str
    weight: float = 1.0
    direction: Literal["higher", "lower"] = "higher"
    lo: int = 0
    hi: int = 4


@dataclass(frozen=True)
class Rubric:
    """The dimensions in config order plus how their normalised scores aggregate into a reward."""

    dimensions: tuple[Dimension, ...]
    aggregation: Literal["mean", "weighted", "min"] = "weighted"
    missing_policy: Literal["drop", "reweight"] = "reweight"

    @classmethod
    def from_config(cls, cfg: JudgeConfig) -> "Rubric":
        """The rubric a JudgeConfig describes."""
        dims = tuple(Dimension(name, d.definition, d.weight, d.direction, d.min_score, d.max_score)
                     for name, d in cfg.dimensions.items())
        return cls(dims, cfg.aggregation, cfg.missing_policy)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    def dimension(self, name: str) -> Dimension:
        for d in self.dimensions:
            if d.name == name:
                return d
        raise KeyError(f"no dimension {name!r} in the rubric (have {self.names})")

    def normalise(self, dim: str, score: float | None) -> float | None:
        """Map a raw score to [0, 1] with 1 = best, so direction=lower becomes 1 - x; None stays None."""
        if score is None:
            return None
        d = self.dimension(dim)
        x = (min(max(score, d.lo), d.hi) - d.lo) / (d.hi - d.lo)
        return 1.0 - x if d.direction == "lower" else x

    def normalise_all(self, scores: dict[str, float | None]) -> dict[str, float | None]:
        """normalise() for every dimension of the rubric (absent keys count as missing)."""
        return {d.name: self.normalise(d.name, scores.get(d.name)) for d in self.dimensions}

    def aggregate(self, normalised: dict[str, float | None]) -> float | None:
        """One reward from normalised scores; None when the missing policy drops the sample, never 0 for missing.

        A dimension counts toward the reward unless aggregation=weighted gives it weight 0, so a
        disabled dimension that failed cannot drop a sample under missing_policy=drop.
        """
        weights = {d.name: (d.weight if self.aggregation == "weighted" else 1.0) for d in self.dimensions}
        counted = [n for n, w in weights.items() if w > 0]
        present = [n for n in counted if normalised.get(n) is not None]
        if not present or (self.missing_policy == "drop" and len(present) < len(counted)):
            return None
        values = [float(normalised[n]) for n in present]  # type: ignore[arg-type]
        if self.aggregation == "min":
            return min(values)
        w = [weights[n] for n in present]
        # reweight: the present weights are renormalised to sum to 1, which this division does.
        return sum(wi * v for wi, v in zip(w, values)) / sum(w)

    def coefficients(self) -> dict[str, float]:
        """d reward / d score of each dimension, every score present, read off aggregate: exact for mean and
        weighted, whose reward is linear in the scores; min, which is not, gets the mean's as its linear stand-in."""
        linear = replace(self, aggregation="mean") if self.aggregation == "min" else self
        return {d: linear.aggregate({n: float(n == d) for n in self.names}) for d in self.names}


def _score_value(token: str, lo: int, hi: int) -> int | None:
    """The integer a score token stands for ("3", " 3", "▁3", "Ġ3"), or None when it is no allowed score."""
    text = token.strip().lstrip("▁Ġ").strip()
    if not text.isdigit() or not text.isascii():
        return None
    value = int(text)
    return value if lo <= value <= hi else None


def expected_score(logprobs_by_token: dict[str, float], lo: int, hi: int) -> tuple[float | None, float | None]:
    """(probability-weighted score, confidence) from the first answer token's logprobs; (None, None) if no score token.

    Only tokens spelling an integer in lo..hi count, renormalised among themselves; spelling
    variants of one value (" 3", "3") add up. Confidence = 1 - entropy / log(hi - lo + 1).
    """
    mass = {v: 0.0 for v in range(lo, hi + 1)}
    for token, logprob in logprobs_by_token.items():
        value = _score_value(token, lo, hi)
        if value is not None and logprob is not None and math.isfinite(logprob):
            mass[value] += math.exp(logprob)
    total = sum(mass.values())
    if total <= 0.0:
        return None, None
    probs = {v: m / total for v, m in mass.items()}
    score = sum(v * p for v, p in probs.items())
    entropy = -sum(p * math.log(p) for p in probs.values() if p > 0)
    confidence = 1.0 - entropy / math.log(hi - lo + 1)
    return score, min(1.0, max(0.0, confidence))


# "Score: 3", "score = 3", "Score (0-4): 3", "score is 3"; the range in parentheses is skipped.
_CUE_NUMBER = re.compile(r"score(?:\s*\(\s*\d+\s*-\s*\d+\s*\))?\s*(?::|=|is)\s*(-?\d+)", re.IGNORECASE)
_STANDALONE_NUMBER = re.compile(r"(?<![\w.])(-?\d+)(?![\w])")


def parse_score(text: str, lo: int, hi: int) -> int | None:
    """The judge's score in generated text: the first integer after "Score", else the first standalone one; clamped.

    None when the text holds no integer. "3.5" reads as 3 (the integer the text starts with).
    """
    match = _CUE_NUMBER.search(text) or _STANDALONE_NUMBER.search(text)
    if match is None:
        return None
    return min(max(int(match.group(1)), lo), hi)
