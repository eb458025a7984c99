"""Degenerate responses that a small judge rewards, caught by explicit checks whose verdict is recorded.

A likelihood judge finds a repetition loop and the prompt copied back very probable text, and any judge can be
handed an empty answer. These checks run on the text itself, before any model: when one fires, the dimensions
it concerns get their worst score and the Judgement's rationale says which check fired and why, so the reward
stays explainable (judge.guards=false turns them off).
"""
from __future__ import annotations

import difflib
import re

from xrlhf.judge.rubric import Dimension

QUOTE_MIN_WORDS = 5  # a run of this many words in the prompt's order is quoted, not written
REPEAT_MIN_WORDS = 8  # shorter answers are too short to call a loop
REPEAT_MAX_DISTINCT = 0.5  # a loop: at most half of its word 3-grams are distinct
# A copy: the response's words are the prompt's, nearly in order (difflib's ratio, 2 * matched / total words).
# "The square root of 81 is 9." restates "What is the square root of 81?" and answers it: 0.71, not a copy; an
# overlap share of word 3-grams (the first version) called it one, zeroing a correct short answer.
COPY_MIN_SIMILARITY = 0.8
# A near-copy: the prompt's opening (its instruction or question, at least QUOTE_MIN_WORDS words) makes up this share
# of the response's words. The first study's RLOO learned "Please give me the key point of this email in one line:
# Hi all, just a reminder that the office will": the instruction plus the start of the input, 0.6 similar to the
# whole prompt. A passage of the input alone is not a near-copy (an extraction task's answer may be one); the
# likelihood judge gives its words no relevance credit instead.
NEAR_COPY_SHARE = 0.8
# The dimensions each check concerns (None: all); a rubric with none of them gets the check on every dimension.
# An empty answer, a loop and the question handed back are not answers at all, so every dimension gets its worst:
# on the judge-quality set a check that zeroed only the dimensions it names left the fluent loop and the copied
# question above the good answer's aggregate on 15-25% of prompts (the other dimensions score fluent text high).
CONCERNS: dict[str, tuple[str, ...] | None] = {"empty": None, "repetition": None, "prompt_copy": None}


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _grams(words: list[str], n: int = 3) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]




def quoted(prompt: str, response: str, min_words: int = QUOTE_MIN_WORDS) -> list[tuple[int, int]]:
    """Character spans of the response that copy a run of min_words or more words of the prompt, in order (case and
    punctuation aside), merged where they touch. The likelihood judge gives these characters no relevance credit."""
    asked = set(_grams(_words(prompt), min_words))
    found = [(m.start(), m.end(), m.group().lower()) for m in re.finditer(r"\w+", response)]
    spans: list[tuple[int, int]] = []
    for i in range(len(found) - min_words + 1):
        if tuple(w for _, _, w in found[i:i + min_words]) in asked:
            start, end = found[i][0], found[i + min_words - 1][1]
            if spans and start <= spans[-1][1] + 1:
                spans[-1] = (spans[-1][0], max(spans[-1][1], end))
            else:
                spans.append((start, end))
    return spans


def quoted_share(prompt: str, response: str) -> float:
    """Share of the response's words inside quoted() spans."""
    words = [m.span() for m in re.finditer(r"\w+", response)]
    if not words:
        return 0.0
    spans = quoted(prompt, response)
    return sum(any(a <= s and e <= b for a, b in spans) for s, e in words) / len(words)


def check(prompt: str, response: str) -> tuple[str, str] | None:
    """(check, reason) for a degenerate response, or None."""
    words = _words(response)
    if not words:
        return "empty", "empty response"
    grams = _grams(words)
    if len(words) >= REPEAT_MIN_WORDS and grams:
        distinct = len(set(grams)) / len(grams)
        if distinct <= REPEAT_MAX_DISTINCT:
            return "repetition", f"repetition loop: {distinct:.0%} of its word 3-grams are distinct"
    asked = _words(prompt)
    matcher = difflib.SequenceMatcher(None, asked, words, autojunk=False)
    similarity = matcher.ratio()
    if similarity >= COPY_MIN_SIMILARITY:
        return "prompt_copy", f"copies the prompt: word similarity {similarity:.2f}"
    opening = matcher.find_longest_match(0, len(asked), 0, len(words))
    if opening.a == 0 and opening.size >= QUOTE_MIN_WORDS and opening.size >= NEAR_COPY_SHARE * len(words):
        return "prompt_copy", f"copies the prompt's opening: {opening.size} of its {len(words)} words"
    return None


def concerned(kind: str, dimensions: tuple[Dimension, ...]) -> list[Dimension]:
    """The dimensions a fired check sets to their worst score."""
    names = CONCERNS[kind]
    hit = [d for d in dimensions if names is None or d.name in names]
    return hit or list(dimensions)


def worst(dim: Dimension) -> float:
    """The raw score that normalises to 0 (the range's end the direction calls worst)."""
    return float(dim.lo if dim.direction == "higher" else dim.hi)


def spared(fired: tuple[str, str] | None, dimensions: tuple[Dimension, ...]) -> set[str]:
    """Names of the dimensions a fired check decides (none when nothing fired): no judge model is asked about them."""
    return {d.name for d in concerned(fired[0], dimensions)} if fired else set()
