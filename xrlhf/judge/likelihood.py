"""Likelihood mode (the GPTScore family, Fu et al. 2023): five dimensions, five signals, one per dimension.

A small base model cannot be asked for a digit and answer sensibly, but it does know which text is likely to
follow a question. Each response is scored as a tail: the response, then the blank line that ends an answer in the
instruction's format. Two passes of the judge model give every token's log-probability after the instruction,
with the question ("Question: ...\\nAnswer:") and without it ("Answer:"). What the judge reads of them (`Reading`):

- fit: mean log-probability of the response's tokens given the question. A wrong fact is unlikely text.
- fluency: the same without the question: is it well-formed English whatever was asked.
- relevance: the mean over the response's tokens of log p(token | question) - log p(token | no question), a
  pointwise mutual information: what the question explains. Tokens inside a run of five or more words copied from
  the prompt (guards.quoted) count zero, so quoting the question earns nothing; a rewrite keeps the credit of
  what it changes.
- ending: log p(blank line | question, response): does the answer end where it ends. A sentence cut off midway is
  unlikely to end there.

Each default dimension reads its own signal (DEFAULT_SIGNAL; bench/judge_quality.py prints the specificity matrix
that chose them):

- helpfulness: relevance + ending (an answer cut off midway is not a whole answer),
- correctness: fit,
- coherence: fluency + ending (unconditioned: well-formed and finished),
- complexity: "level", a text measure: the reading grade (Flesch-Kincaid) against the band a general question
  calls for. The 270M model's contrast of a child's cue and an expert's puts a childish rewrite above the good
  answer in 0.97 of prompts but a technical one below it in only 0.62; read two-sided around the good answers it
  ranks them 0.82 / 0.38, below the grade's 0.83 / 0.86, for two more passes (bench/judge_signals.py),
- verbosity: "length", a text measure: words against the band a short answer takes; no model signal separated a
  curt fragment from a full answer without also being the relevance signal (measured, BENCHMARKS.md).

A model signal maps onto the dimension's range by a logistic, score = lo + (hi - lo) * sigmoid((raw - centre) /
scale), centre and scale per signal in CALIBRATION (bench/judge_quality.py --calibrate); confidence is
|2 * sigmoid(...) - 1|. A text measure gives its quality in [0, 1] directly (measures.py) and confidence 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from xrlhf.judge import guards, measures
from xrlhf.judge.base import Verdict
from xrlhf.judge.rubric import Dimension
from xrlhf.judge.scoring import PrefixCache, grouped_tail_logprobs

# Which signal a dimension of the default rubric reads; any other dimension reads "fit" unless its config says.
DEFAULT_SIGNAL = {"helpfulness": "relevance", "correctness": "fit", "coherence": "fluency", "complexity": "level",
                  "verbosity": "length"}
ENDING_WEIGHT = 0.3  # nats of mean relevance / fluency per nat of the ending's log-probability
# (centre, scale) of the logistic per model signal, in nats per token: the centre halfway between the median raw
# signal of the good answers and of the corruptions aimed at the signal's dimension, the scale half that gap, so
# the two medians score 1.1 and 2.9 of 4 (bench/judge_quality.py --calibrate prints the medians). Per-dimension
# accuracy does not depend on it; the aggregate, which adds the dimensions, and the reward's spread do.
CALIBRATION = {"fit": (-1.682, 0.246), "relevance": (0.228, 0.735), "fluency": (-4.796, 2.095)}

DEFAULT_INSTRUCTION = (
    "Below are questions, each followed by an excellent answer: correct, relevant, clear, complete, and exactly "
    "as detailed as the question needs.\n\n"
    "Question: What is the capital of France?\nAnswer: The capital of France is Paris, on the river Seine.\n\n"
    "Question: How many days are in a week?\nAnswer: A week has seven days.\n\n")
# A second judge for the held-out evaluation (eval.judge.likelihood_instruction: evaluation): other wording and
# other demonstrations (a how-to, a rewrite of an input, an explanation), so a policy that learned what the
# training instruction's two short facts look like is not also scored by them. The same passes and signals.
EVALUATION_INSTRUCTION = (
    "A careful editor collected these requests together with the reply she judged best: it does what was asked, "
    "states only what is true, reads clearly, and stops when the request is met.\n\n"
    "Question: How do I stop a pan of rice from boiling over?\nAnswer: Use a bigger pan, add a teaspoon of oil, and "
    "turn the heat down to a simmer once the water boils.\n\n"
    "Question: Make this sentence more formal: \"We can't make it to the meeting, sorry.\"\nAnswer: Unfortunately, "
    "we will be unable to attend the meeting.\n\n"
    "Question: Why do leaves change colour in autumn?\nAnswer: As days shorten, trees stop making green "
    "chlorophyll, and the yellow and orange pigments that were hidden underneath show through.\n\n")
INSTRUCTIONS = {"default": DEFAULT_INSTRUCTION, "evaluation": EVALUATION_INSTRUCTION}
END = "\n\n"  # what follows a complete answer in the instruction's format
PAIR_SCALE = 0.05  # reward gap at which a pairwise preference reaches 0.88
WITHOUT_QUESTION = "Answer:"


def instruction_for(name_or_text: str | None) -> str:
    """judge.likelihood_instruction: None is the default instruction, a name of INSTRUCTIONS that one, any other
    text is the instruction itself."""
    if name_or_text is None:
        return DEFAULT_INSTRUCTION
    return INSTRUCTIONS.get(name_or_text, name_or_text)


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


def tail(response: str) -> str:
    """The scored text: the response, then the blank line that ends a complete answer."""
    return " " + response.strip() + END


@dataclass(frozen=True)
class Tail:
    """One scored tail: each token's log-probability and its character span in the tail's text."""

    logprobs: tuple[float, ...]
    spans: tuple[tuple[int, int], ...]


class LogprobSource(Protocol):
    """Token log-probabilities of texts after contexts: the local model (LocalLogprobs) or a server (http.py)."""

    def tails(self, requests: list[tuple[str, str, str]]) -> list[Tail | None]:
        """Per (instruction, context, tail text): the tail's tokens after instruction + context; None if failed."""
        ...


@dataclass(frozen=True)
class Reading:
    """What the likelihood judge reads of one response under one instruction (the module docstring); a field whose
    pass no dimension needed is None."""

    fit: float | None
    fluency: float | None
    relevance: float | None
    ending: float | None
    plain_ending: float | None
    quoted: float  # share of the response's words quoted from the prompt (no relevance credit)


def read(prompt: str, response: str, asked: Tail | None, unasked: Tail | None) -> Reading:
    """The Reading of a response from its tail after the question (asked) and without it (unasked)."""
    text = tail(response)
    body_end = len(" " + response.strip())  # tokens starting here or later are the ending's blank line
    spans = [(s + 1, e + 1) for s, e in guards.quoted(prompt, response.strip())]  # in the tail's characters

    def copied_token(s: int, e: int) -> bool:
        """Its letters and digits (its punctuation, if it has none) inside one quoted span."""
        chars = [k for k in range(s, min(e, len(text))) if text[k].isalnum()] or \
            [k for k in range(s, min(e, len(text))) if not text[k].isspace()]
        return bool(chars) and any(a <= chars[0] and chars[-1] < b for a, b in spans)

    def split(t: Tail) -> tuple[list[float], list[bool], float]:
        body, copied, ending = [], [], 0.0
        for lp, (s, e) in zip(t.logprobs, t.spans):
            if s >= body_end:
                ending += lp
            else:
                body.append(lp)
                copied.append(copied_token(s, e))
        return body, copied, ending

    fit = fluency = relevance = ending = plain_ending = None
    if asked is not None:
        q, copied, ending = split(asked)
        fit = sum(q) / max(1, len(q))
    if unasked is not None:
        a, copied_a, plain_ending = split(unasked)
        fluency = sum(a) / max(1, len(a))
    if asked is not None and unasked is not None:
        n = max(1, len(q))
        # Tokenised alone (the local judge) both tails have the same tokens; a server tokenises context + tail
        # together and may split the first token differently: relevance then pairs the two means, without the
        # copied tokens.
        if len(q) == len(a):
            relevance = sum(x - y for x, y, c in zip(q, a, copied) if not c) / n
        else:
            relevance = (sum(x for x, c in zip(q, copied) if not c) / n
                         - sum(y for y, c in zip(a, copied_a) if not c) / max(1, len(a)))
    return Reading(fit=fit, fluency=fluency, relevance=relevance, ending=ending, plain_ending=plain_ending,
                   quoted=guards.quoted_share(prompt, response))


@dataclass(frozen=True)
class Signal:
    """One dimension's signal: a model signal (a raw value from the Reading, mapped by a logistic) or a text
    measure (measures.py, its quality in [0, 1] from the prompt and response alone)."""

    kind: str
    centre: float = 0.0
    scale: float = 1.0

    @property
    def reads_model(self) -> bool:
        return self.kind in MODEL_SIGNALS

    @property
    def passes(self) -> tuple[str, ...]:
        """Which tails the signal reads: "asked" (after the question), "unasked" (without it)."""
        return MODEL_SIGNALS[self.kind][0] if self.reads_model else ()

    def raw(self, reading: Reading) -> float:
        return MODEL_SIGNALS[self.kind][1](reading)

    def score(self, raw: float, dim: Dimension) -> tuple[float, float]:
        """(score in [lo, hi], confidence) of a model signal's raw value; the score is quality: higher is better
        whatever dim.direction says, so a direction=lower dimension gets the mirrored score and normalises back to
        the same quality."""
        n = 1.0 / (1.0 + math.exp(-(raw - self.centre) / self.scale))
        return _ranged(n, dim), abs(2.0 * n - 1.0)


def _ranged(quality: float, dim: Dimension) -> float:
    x = quality if dim.direction == "higher" else 1.0 - quality
    return dim.lo + x * (dim.hi - dim.lo)


# Each model signal: the tails it reads and its raw value from the Reading.
MODEL_SIGNALS: dict[str, tuple[tuple[str, ...], Callable[[Reading], float]]] = {
    "fit": (("asked",), lambda r: r.fit),
    "relevance": (("asked", "unasked"), lambda r: r.relevance + ENDING_WEIGHT * r.ending),
    "fluency": (("unasked",), lambda r: r.fluency + ENDING_WEIGHT * r.plain_ending),
}
SIGNALS = (*MODEL_SIGNALS, *measures.MEASURES)


# What a dimension reading each signal measures, in one line, and its specificity measured on the judge-quality set
# with the default rubric (python bench/judge_quality.py: the unguarded corruption kinds whose column it tops, with
# the share of prompts where the good answer scores higher on it; tests/judge/test_likelihood.py checks them
# against bench/results/judge_quality.json).
DESCRIPTIONS = {
    "relevance": "what the question explains of the response (quoted words earn nothing), and whether it ends where "
                 "an answer ends",
    "fit": "how probable the response is after the question: a wrong fact is improbable text, and so is an odd "
           "register",
    "fluency": "how probable the response is without the question (well-formed English), and whether it ends",
    "level": "its reading grade (Flesch-Kincaid) against 4-13, what a general reader follows",
    "length": "its words against 6-40 (2-30 when the question asks for one line or a word)",
}
SPECIFICITY: dict[str, dict[str, float]] = {  # signal -> {corruption kind whose column it tops: share}
    "relevance": {"off_topic": 1.00, "refusal": 1.00, "quoted_nonanswer": 1.00, "generic": 1.00},
    "fit": {"factual_error": 0.91, "shuffled": 1.00, "simple": 1.00, "technical": 1.00},
    "fluency": {"truncated": 1.00},
    "level": {},
    "length": {"padded": 1.00, "terse": 1.00},
}
# bench/results/judge_quality.json (the mean drops) and judge_signals.json (thirteen other statistics of the two
# passes, none of which catches a changed fact without falling as often for a correct rewrite)
SPECIFICITY_NOTE = {"fit": "it falls further for a correct answer in an odd register (mean drop 0.59) than for a "
                           "changed fact (0.23)",
                    "level": "it ranks simple 0.83 and technical 0.86 of prompts right, but fit moves for them at 1.00"}


def specificity(kind: str) -> str:
    tops = ", ".join(f"{k} {v:.2f}" for k, v in SPECIFICITY[kind].items()) or "no kind"
    return f"tops {tops}" + (f" ({SPECIFICITY_NOTE[kind]})" if kind in SPECIFICITY_NOTE else "")


def describe(cfg: Any) -> dict[str, str]:
    """One line per dimension of a likelihood-mode JudgeConfig: its signal and measured specificity (xrlhf.judge.
    describe picks this or the definitions)."""
    out = {}
    for name, d in cfg.dimensions.items():
        kind = signal_for(name, d.signal).kind
        custom = " (its own instruction)" if d.instruction else ""
        out[name] = f"{kind}{custom}: {DESCRIPTIONS[kind]}; specificity: {specificity(kind)}"
    return out


def signal_for(name: str, kind: str | None) -> Signal:
    kind = kind or DEFAULT_SIGNAL.get(name, "fit")
    if kind not in SIGNALS:
        raise ValueError(f"judge.dimensions.{name}.signal = {kind!r}: expected one of {SIGNALS}")
    return Signal(kind, *CALIBRATION[kind]) if kind in CALIBRATION else Signal(kind)


def note(signal: Signal, raw: float, reading: Reading | None) -> str:
    """The rationale of one likelihood verdict: the signal, its raw value, and what quoting was discounted."""
    text = f"{signal.kind} {raw:.3f}"
    if reading is not None and signal.kind == "relevance" and reading.quoted > 0:
        text += f" ({reading.quoted:.0%} of its words quoted from the prompt: no relevance credit)"
    return text


class LikelihoodMode:
    """The likelihood judge over any log-prob source: each (prompt, response, instruction) read once, whatever number
    of dimensions read it; text measures need no pass at all."""

    def __init__(self, source: LogprobSource, signals: dict[str, Signal], instructions: dict[str, str]) -> None:
        """signals and instructions by dimension name: what each dimension reads, after which instruction."""
        self.source, self.signals, self.instructions = source, signals, instructions
        # the dimensions a failed model leaves without a score (judgement: none of them scored, no reward)
        self.model_read = frozenset(n for n, s in signals.items() if s.reads_model)

    def key(self, dim: Dimension) -> tuple:
        return (self.instructions[dim.name], self.signals[dim.name])

    def readings(self, keys: dict[tuple[str, str, str], set[str]]) -> dict[tuple[str, str, str], Reading | None]:
        """The Reading of each (prompt, response, instruction) from the tails its signals need, asked at once."""
        contexts = {"asked": with_question, "unasked": lambda p: WITHOUT_QUESTION}
        plan = [(key, sorted(need)) for key, need in keys.items()]
        requests = [(ins, contexts[c](p), tail(r)) for (p, r, ins), need in plan for c in need]
        got = iter(self.source.tails(requests) if requests else [])
        out: dict[tuple[str, str, str], Reading | None] = {}
        for (p, r, ins), need in plan:
            tails = {c: next(got) for c in need}
            failed = any(t is None for t in tails.values())
            out[(p, r, ins)] = None if failed else read(p, r, tails.get("asked"), tails.get("unasked"))
        return out

    def verdicts(self, items: list[tuple[str, str, Dimension]], rationale: bool) -> list[Verdict]:
        """One Verdict per (prompt, response, dimension); None as score where a request failed."""
        rows = [(p, r, self.instructions[d.name], d) for p, r, d in items]
        needs: dict[tuple[str, str, str], set[str]] = {}
        for p, r, ins, d in rows:
            if r.strip() and self.signals[d.name].reads_model:
                needs.setdefault((p, r, ins), set()).update(self.signals[d.name].passes)
        readings = self.readings(needs)
        out = []
        for p, r, ins, d in rows:
            sig = self.signals[d.name]
            if not r.strip():  # nothing to score; the empty guard, when on, says so too
                out.append(Verdict(_ranged(0.0, d), 1.0, "empty response: no token to score"))
            elif not sig.reads_model:
                quality, why = measures.MEASURES[sig.kind](p, r)
                out.append(Verdict(_ranged(quality, d), 1.0, f"{sig.kind}: {why}" if rationale else ""))
            elif (reading := readings[(p, r, ins)]) is None:
                out.append(Verdict(None, None))  # a request that failed for good: missing, never 0
            else:
                raw = sig.raw(reading)
                out.append(Verdict(*sig.score(raw, d), note(sig, raw, reading) if rationale else ""))
        return out


class LocalLogprobs:
    """LogprobSource of a local causal LM: the tails of one (instruction, context) share that prefix's pass, and the
    instruction's KV cache is computed once per judge (grouped_tail_logprobs)."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int) -> None:
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self._heads: dict[str, PrefixCache] = {}

    def _ids(self, text: str, special: bool = False) -> list[int]:
        return self.tokenizer(text, add_special_tokens=special)["input_ids"]

    def _head(self, instruction: str) -> PrefixCache:
        if instruction not in self._heads:
            self._heads[instruction] = PrefixCache(self._ids(instruction, special=True))
        return self._heads[instruction]

    def tails(self, requests: list[tuple[str, str, str]]) -> list[Tail | None]:
        rows: dict[tuple[str, str, str], int] = {}
        groups: dict[tuple[str, str], list[str]] = {}
        for ins, ctx, text in requests:
            if (ins, ctx, text) not in rows:
                rows[(ins, ctx, text)] = len(rows)
                groups.setdefault((ins, ctx), []).append(text)
        encoded = {text: self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
                   for text in dict.fromkeys(t for _, _, t in requests)}
        done: dict[tuple[str, str, str], Tail] = {}
        for instruction in dict.fromkeys(i for i, _ in groups):  # one call per instruction, on its cache
            keys = [k for k in groups if k[0] == instruction]
            head = self._head(instruction)
            scored = grouped_tail_logprobs(
                self.model, [(head.ids + self._ids(ctx), [encoded[t]["input_ids"] for t in groups[(ins, ctx)]])
                             for ins, ctx in keys], self.batch_size, head)
            for (ins, ctx), lps in zip(keys, scored):
                for text, lp in zip(groups[(ins, ctx)], lps):
                    spans = tuple(tuple(s) for s in encoded[text]["offset_mapping"])
                    done[(ins, ctx, text)] = Tail(tuple(lp.tolist()), spans)  # type: ignore[arg-type]
        return [done[r] for r in requests]
