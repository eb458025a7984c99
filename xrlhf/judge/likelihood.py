"""Likelihood scores (the GPTScore family, Fu et al. 2023): how probable the judge model finds a response.

A small base model cannot be asked for a digit and answer sensibly, but it does know which text is likely to
follow a question. Each dimension reads one of two signals from the response's token log-probabilities
(the response followed by the blank line that ends an answer, so an answer cut off mid-sentence pays for its
unlikely ending), under an instruction that describes excellent answers and shows two:

- "fit": the mean log-probability given the instruction and the question. Wrong facts, scrambled words and
  broken sentences are unlikely text.
- "relevance": the same minus the mean log-probability given the instruction alone, without the question (a
  pointwise mutual information). It rewards what the question explains: an answer to another question, a
  refusal, generic filler and padding explain little of it.

The raw signal maps onto the dimension's range by a logistic, score = lo + (hi - lo) * sigmoid((raw - centre) /
scale), with the centre and scale per signal in CALIBRATION (chosen on bench/judge_quality.py as described
there). Confidence is |2 * sigmoid(...) - 1|: how far the answer is from the calibration's midpoint.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from xrlhf.judge.rubric import Dimension
from xrlhf.judge.scoring import PrefixCache, grouped_tail_logprobs

SIGNALS = ("fit", "relevance")
# Which signal a dimension of the default rubric reads; any other dimension reads "fit" unless its config says.
DEFAULT_SIGNAL = {"helpfulness": "relevance", "correctness": "fit", "coherence": "fit", "complexity": "relevance",
                  "verbosity": "relevance"}
# (centre, scale) of the logistic per signal, in nats per token. Fitted on the judge-quality set with the packaged
# gemma-3-270m and DEFAULT_INSTRUCTION: the centre halfway between the median raw signal of the good answers and of
# the corruptions aimed at the signal's dimensions, the scale half that gap, so the two medians score 1.1 and 2.9
# of 4 (bench/judge_quality.py --calibrate prints the medians). Per-dimension accuracy does not depend on it;
# the aggregate, which adds the dimensions, and the reward's spread do.
CALIBRATION = {"fit": (-1.68, 0.32), "relevance": (0.56, 0.46)}

DEFAULT_INSTRUCTION = (
    "Below are questions, each followed by an excellent answer: correct, relevant, clear, complete, and exactly "
    "as detailed as the question needs.\n\n"
    "Question: What is the capital of France?\nAnswer: The capital of France is Paris, on the river Seine.\n\n"
    "Question: How many days are in a week?\nAnswer: A week has seven days.\n\n")
END = "\n\n"  # what follows a complete answer in the instruction's format
PAIR_SCALE = 0.05  # reward gap at which a pairwise preference reaches 0.88


def preference(first: float | None, second: float | None) -> float | None:
    """P(first response better) from the two rewards, 0.5 + 0.5 * tanh((first - second) / PAIR_SCALE): the
    likelihood judge's pairwise verdict. It never sees the two side by side, so the order they are given in plays
    no part: preference(a, b) = 1 - preference(b, a) exactly, and a tie is 0.5 because the rewards are equal."""
    if first is None or second is None:
        return None
    return 0.5 + 0.5 * math.tanh((first - second) / PAIR_SCALE)


def order_free(judge: Any, prompts: list[str], first: list[str],
               second: list[str]) -> list[tuple[float | None, float | None]]:
    """compare_orders of a likelihood judge: both "orders" are the preference of the two rewards (judge.score),
    which the judge computes without ever seeing the two side by side."""
    both = judge.score(prompts + prompts, first + second)
    prefs = [preference(a.reward, b.reward) for a, b in zip(both[:len(prompts)], both[len(prompts):])]
    return [(p, p) for p in prefs]


def with_question(prompt: str) -> str:
    return f"Question: {prompt}\nAnswer:"


WITHOUT_QUESTION = "Answer:"


def tail(response: str) -> str:
    """The scored text: the response, then the blank line that ends a complete answer."""
    return " " + response.strip() + END


def contexts(prompt: str, kind: str) -> tuple[str, ...]:
    """What precedes the tail after the instruction: with the question, and for "relevance" also without it."""
    return (with_question(prompt), WITHOUT_QUESTION) if kind == "relevance" else (with_question(prompt),)


@dataclass(frozen=True)
class Signal:
    """One dimension's raw likelihood signal and the logistic that maps it onto the dimension's range."""

    kind: str
    centre: float
    scale: float

    def score(self, raw: float, dim: Dimension) -> tuple[float, float]:
        """(score in [lo, hi], confidence); the score is quality: higher is better whatever dim.direction says,
        so a direction=lower dimension gets the mirrored score and normalises back to the same quality."""
        n = 1.0 / (1.0 + math.exp(-(raw - self.centre) / self.scale))
        x = n if dim.direction == "higher" else 1.0 - n
        return dim.lo + x * (dim.hi - dim.lo), abs(2.0 * n - 1.0)


def signal_for(name: str, kind: str | None) -> Signal:
    kind = kind or DEFAULT_SIGNAL.get(name, "fit")
    if kind not in SIGNALS:
        raise ValueError(f"judge.dimensions.{name}.signal = {kind!r}: expected one of {SIGNALS}")
    return Signal(kind, *CALIBRATION[kind])


class LikelihoodScorer:
    """Raw signals for (sample, dimension) pairs, each distinct text computed once: dimensions that share an
    instruction share their forward passes, and the instruction's KV cache is computed once per judge."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int) -> None:
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self._heads: dict[str, PrefixCache] = {}

    def _ids(self, text: str, special: bool = False) -> list[int]:
        return self.tokenizer(text, add_special_tokens=special)["input_ids"]

    def _head(self, instruction: str) -> PrefixCache:
        if instruction not in self._heads:
            self._heads[instruction] = PrefixCache(self._ids(instruction, special=True))
        return self._heads[instruction]

    def raw(self, items: list[tuple[str, str, str, str]]) -> list[float | None]:
        """Raw signal per (prompt, response, instruction, kind); None for an empty response (no token to score).

        The samples of one prompt share its question: each (instruction, context) is a prefix computed once, with
        every response scored after it (grouped_tail_logprobs)."""
        texts: dict[tuple[str, str, str], int] = {}  # (instruction, context, response) -> row
        groups: dict[tuple[str, str], list[int]] = {}  # (instruction, context) -> its rows
        tails: list[list[int]] = []

        def row(instruction: str, context: str, response: str) -> int:
            key = (instruction, context, response)
            if key not in texts:
                texts[key] = len(tails)
                groups.setdefault((instruction, context), []).append(len(tails))
                tails.append(self._ids(tail(response)))
            return texts[key]

        plan = []
        for prompt, response, instruction, kind in items:
            if not response.strip():
                plan.append(None)
                continue
            rows = [row(instruction, context, response) for context in contexts(prompt, kind)]
            plan.append((rows[0], rows[1] if len(rows) > 1 else None))
        logprobs: list[Any] = [None] * len(tails)
        for instruction in dict.fromkeys(i for i, _ in groups):  # one call per instruction, on its cache
            keys = [k for k in groups if k[0] == instruction]
            head = self._head(instruction)
            scored = grouped_tail_logprobs(
                self.model, [(head.ids + self._ids(context), [tails[r] for r in groups[(instruction, context)]])
                             for _, context in keys], self.batch_size, head)
            for key, lps in zip(keys, scored):
                for r, lp in zip(groups[key], lps):
                    logprobs[r] = lp
        out: list[float | None] = []
        for p in plan:
            if p is None:
                out.append(None)
                continue
            cond, plain = p
            value = logprobs[cond].mean().item()
            out.append(value if plain is None else value - logprobs[plain].mean().item())
        return out
