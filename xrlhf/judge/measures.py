"""Transparent text measures for the dimensions a 270M base model measurably cannot carry (likelihood.py).

Each measure maps (prompt, response) to a quality in [0, 1] and a one-line reason. A value inside the measure's
band is 1; above it the quality falls by 1/FALLOFF_ABOVE per doubling past the band's top, below it by
1/FALLOFF_BELOW per halving past its bottom. Text appended to a response can only lengthen it and raise its grade,
so the side below the band falls gently: an injection appended to a curt answer buys little of these dimensions
and loses more relevance than that (bench/judge.py, the adversarial sets). Only the order of two answers' qualities
matters for the judge-quality accuracy, so the gentle side keeps its ranking. The bands were set on
xrlhf/judge/quality.jsonl and checked on its hold-out (bench/judge_quality.py).
"""
from __future__ import annotations

import math
import re
from typing import Callable

FALLOFF_ABOVE = 2.0  # doublings past a band's top at which the quality reaches 0
FALLOFF_BELOW = 12.0  # halvings past its bottom
# verbosity: words a short answer to a general question takes; the question's own cue ("in one line", "in a
# word", "briefly", "one sentence") lowers the top.
LENGTH_BAND = (6, 40)
SHORT_BAND = (2, 30)
SHORT_CUES = re.compile(r"\b(?:one|single)\s+(?:line|sentence|word)\b|\bin a word\b|\bbriefly\b|\bshort(?:ly)?\b", re.I)
# complexity: the Flesch-Kincaid grade of an answer a general reader follows.
LEVEL_BAND = (4.0, 13.0)
LEVEL_MIN_WORDS = 6  # a shorter answer has no reading grade to speak of: its level is not judged (1.0)


def _band(value: float, lo: float, hi: float) -> float:
    """1 inside [lo, hi]; outside, 1 - (doublings past the nearer edge) / its FALLOFF, floored at 0."""
    value = max(value, 1e-9)
    if value < lo:
        return max(0.0, 1.0 - math.log2(lo / value) / FALLOFF_BELOW)
    return max(0.0, 1.0 - math.log2(value / hi) / FALLOFF_ABOVE) if value > hi else 1.0


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?", text)


def syllables(word: str) -> int:
    """Vowel groups, a silent final e dropped: the usual estimate behind readability grades."""
    w = word.lower()
    n = len(re.findall(r"[aeiouy]+", w))
    if n > 1 and w.endswith("e") and not w.endswith(("le", "ee")):
        n -= 1
    return max(1, n)


def grade(text: str) -> float:
    """Flesch-Kincaid grade level: 0.39 * words per sentence + 11.8 * syllables per word - 15.59."""
    ws = [w for w in words(text) if not w.isdigit()]
    if not ws:
        return 0.0
    sentences = max(1, len(re.findall(r"[.!?]+(?:\s|$)", text.strip())))
    return 0.39 * len(ws) / sentences + 11.8 * sum(syllables(w) for w in ws) / len(ws) - 15.59


def length(prompt: str, response: str) -> tuple[float, str]:
    """Verbosity: the response's words against the band the question calls for."""
    lo, hi = SHORT_BAND if SHORT_CUES.search(prompt) else LENGTH_BAND
    n = len(words(response))
    return _band(n, lo, hi), f"{n} words (band {lo}-{hi})"


def level(prompt: str, response: str) -> tuple[float, str]:
    """Complexity: the response's reading grade against the band a general reader follows."""
    lo, hi = LEVEL_BAND
    if len(words(response)) < LEVEL_MIN_WORDS:
        return 1.0, f"{len(words(response))} words: too short to grade"
    g = grade(response)
    # grades below 1 and above 30 say little more: the band's ratio arithmetic runs on a grade shifted by 1
    quality = _band(min(max(g, 0.0), 30.0) + 1.0, lo + 1.0, hi + 1.0)
    return quality, f"grade {g:.1f} (band {lo:.0f}-{hi:.0f})"


MEASURES: dict[str, Callable[[str, str], tuple[float, str]]] = {"length": length, "level": level}
