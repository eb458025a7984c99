"""The judge's modes, each one class over small sources that the local model (hf.py) and a server (http.py) both
implement, and the one path from (prompt, response) pairs to Judgements that every backend's score() takes.

- expected (ExpectedMode): the expected value of the score's first token, over a NextTokenSource;
- generate (GenerateMode): the score parsed from a short greedy continuation, sampled again where it does not parse,
  over a GenerationSource;
- likelihood (likelihood.LikelihoodMode): token log-probabilities of the response itself, over a LogprobSource.

With judge.rationale, expected and generate ask one follow-up line after the score (with_rationales). A mode gets
its texts already clipped to judge.max_response_tokens (JudgeInputs.clip); the Scorer keeps the verdict cache and
the counters, so a backend is its sources and nothing else.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from xrlhf.config import JudgeConfig
from xrlhf.judge import guards
from xrlhf.judge.base import Judgement, Verdict, judgement
from xrlhf.judge.likelihood import LikelihoodMode, LogprobSource, instruction_for, signal_for
from xrlhf.judge.rubric import Dimension, Rubric, expected_score, parse_score
from xrlhf.judge.template import render_dimension, truncate_response

SCORE_TOKENS = 4  # generate mode: room for "3", " 3/4" or "3." before parsing
RETRY_TEMPERATURE = 0.7  # a retry must be able to say something other than the greedy answer
RATIONALE_TOKENS = 48
CACHE_SIZE = 200_000  # verdicts kept per cache; a few hundred bytes each

Count = Callable[[str, int], None]  # adds n to the judge's counter `name` (stats())


class NextTokenSource(Protocol):
    """Log-probabilities of the first answer token after rendered judge inputs."""

    def next_token_logprobs(self, groups: list[list[str]]) -> list[list[dict[str, float] | None]]:
        """Per group of rendered judge inputs (one sample's dimensions: they share its prompt and response), token
        text -> log-probability of the answer's first token after each input, up to a constant per input (the local
        model normalises over the digits, a server over its vocabulary; expected_score renormalises); None where
        the request failed."""
        ...


class GenerationSource(Protocol):
    """Continuations of rendered judge inputs."""

    def continuations(self, requests: list[tuple[str, str]], max_new_tokens: int,
                      temperature: float) -> list[str | None]:
        """Per (rendered judge input, text that follows its answer cue), the text generated after both, greedy at
        temperature 0, without special tokens; None where the request failed."""
        ...


@dataclass(frozen=True)
class JudgeInputs:
    """How a (prompt, response, dimension) becomes the text the judge reads: each text clipped to
    judge.max_response_tokens by the judge model's tokenizer (None: not clipped), then the template rendered."""

    template: str
    labels: tuple[str, ...]
    dimensions: tuple[Dimension, ...]
    demonstrations: str
    tokenizer: Any
    max_tokens: int

    def clip(self, text: str) -> str:
        if self.tokenizer is None:
            return text
        return truncate_response(self.tokenizer, text, self.max_tokens)

    def render(self, prompt: str, response: str, dim: Dimension) -> str:
        """The judge input for one dimension of an already clipped (prompt, response)."""
        return render_dimension(self.template, prompt, response, dim, self.labels, self.dimensions,
                                self.demonstrations)


def with_rationales(source: GenerationSource, texts: list[str], verdicts: list[Verdict]) -> list[Verdict]:
    """Ask for a one-line reason after each scored answer; stored for people, never used in the reward. A failed
    request leaves the reason empty."""
    scored = [i for i, v in enumerate(verdicts) if v.score is not None]
    asked = [(texts[i], f"{round(verdicts[i].score)}\nReason:") for i in scored]  # type: ignore[arg-type]
    reasons = source.continuations(asked, RATIONALE_TOKENS, 0.0) if asked else []
    out = list(verdicts)
    for i, text in zip(scored, reasons):
        out[i] = Verdict(verdicts[i].score, verdicts[i].confidence, (text or "").strip().split("\n")[0])
    return out


class ExpectedMode:
    """The probability-weighted score of the first answer token (rubric.expected_score), with its confidence."""

    def __init__(self, inputs: JudgeInputs, scores: NextTokenSource, generation: GenerationSource) -> None:
        self.inputs, self.scores, self.generation = inputs, scores, generation
        self.model_read = frozenset(d.name for d in inputs.dimensions)

    def key(self, dim: Dimension) -> tuple:
        return ()

    def verdicts(self, items: list[tuple[str, str, Dimension]], rationale: bool) -> list[Verdict]:
        """One Verdict per (clipped prompt, clipped response, dimension); score None where the request failed."""
        texts = [self.inputs.render(p, r, d) for p, r, d in items]
        samples: dict[tuple[str, str], list[int]] = {}  # the rows of one sample share its prompt and response
        for row, (p, r, _) in enumerate(items):
            samples.setdefault((p, r), []).append(row)
        groups = list(samples.values())
        out = [Verdict(None, None)] * len(items)
        for rows, logprobs in zip(groups, self.scores.next_token_logprobs([[texts[r] for r in g] for g in groups])):
            for row, lp in zip(rows, logprobs):
                d = items[row][2]
                if lp is not None:
                    out[row] = Verdict(*expected_score(lp, d.lo, d.hi))
        return with_rationales(self.generation, texts, out) if rationale else out


class GenerateMode:
    """The score parsed from a short greedy answer; one that does not parse is sampled again (RETRY_TEMPERATURE) up
    to judge.generate_retries times. No confidence."""

    def __init__(self, inputs: JudgeInputs, generation: GenerationSource, retries: int, count: Count) -> None:
        self.inputs, self.generation, self.retries, self.count = inputs, generation, retries, count
        self.model_read = frozenset(d.name for d in inputs.dimensions)

    def key(self, dim: Dimension) -> tuple:
        return ()

    def verdicts(self, items: list[tuple[str, str, Dimension]], rationale: bool) -> list[Verdict]:
        texts = [self.inputs.render(p, r, d) for p, r, d in items]
        scores: list[int | None] = [None] * len(items)
        failed: set[int] = set()  # requests that failed for good are not sampled again

        def ask(rows: list[int], temperature: float) -> None:
            got = self.generation.continuations([(texts[i], "") for i in rows], SCORE_TOKENS, temperature)
            for i, text in zip(rows, got):
                if text is None:
                    failed.add(i)
                else:
                    scores[i] = parse_score(text, items[i][2].lo, items[i][2].hi)

        ask(list(range(len(items))), 0.0)
        for _ in range(self.retries):
            pending = [i for i, s in enumerate(scores) if s is None and i not in failed]
            if not pending:
                break
            self.count("retries", len(pending))
            ask(pending, RETRY_TEMPERATURE)
        out = [Verdict(None if s is None else float(s), None) for s in scores]
        return with_rationales(self.generation, texts, out) if rationale else out


class Mode(Protocol):
    """What the Scorer asks of a mode."""

    model_read: frozenset[str]  # the dimensions the judge model scores (judgement(): none scored, no reward)

    def key(self, dim: Dimension) -> tuple:
        """What besides the shared key decides this dimension's verdict in this mode."""
        ...

    def verdicts(self, items: list[tuple[str, str, Dimension]], rationale: bool) -> list[Verdict]:
        """One Verdict per (clipped prompt, clipped response, dimension), in order; score None where it failed."""
        ...


class ModelSource(NextTokenSource, GenerationSource, LogprobSource, Protocol):
    """Everything a mode may ask of the judge model: the local model and the HTTP client both implement it."""


def build_mode(cfg: JudgeConfig, inputs: JudgeInputs, source: ModelSource, count: Count) -> Mode:
    """judge.mode as an object over the backend's source."""
    if cfg.mode == "likelihood":
        default = instruction_for(cfg.likelihood_instruction)
        return LikelihoodMode(source, {d.name: signal_for(d.name, cfg.dimensions[d.name].signal)
                                       for d in inputs.dimensions},
                              {d.name: cfg.dimensions[d.name].instruction or default for d in inputs.dimensions})
    if cfg.mode == "expected":
        return ExpectedMode(inputs, source, source)
    return GenerateMode(inputs, source, cfg.generate_retries, count)


class VerdictCache:
    """Verdicts by everything that decides them (Scorer.key), the oldest dropped past CACHE_SIZE; a failure is not
    kept, so it is asked again next time. Off (judge.cache=false) it keeps nothing."""

    def __init__(self, enabled: bool, store: OrderedDict[tuple, Verdict] | None = None) -> None:
        self.enabled = enabled
        self.store: OrderedDict[tuple, Verdict] = OrderedDict() if store is None else store
        self._lock = threading.Lock()

    def get(self, key: tuple) -> Verdict | None:
        if not self.enabled:
            return None
        with self._lock:
            return self.store.get(key)

    def put(self, key: tuple, verdict: Verdict) -> None:
        if not self.enabled or verdict.score is None:
            return
        with self._lock:
            self.store[key] = verdict
            if len(self.store) > CACHE_SIZE:
                self.store.popitem(last=False)


class Scorer:
    """score() of every backend: the guards, the verdict cache, one call of the mode for what is left, the
    Judgements.

    `model` names the judge model in the cache key (a local model's name, a server's judge.http.model). With a
    `cache`, each distinct (prompt, response, dimension) a guard does not decide is one request or one cache hit
    (a repeat inside the call is a hit), and a None score one failure. Without one (None) the mode's source keeps
    its own cache and counts its own requests (likelihood over HTTP counts each tail it asks the server for)."""

    def __init__(self, cfg: JudgeConfig, rubric: Rubric, inputs: JudgeInputs, mode: Mode, model: str,
                 cache: VerdictCache | None, count: Count) -> None:
        self.cfg, self.rubric, self.inputs, self.mode, self.model = cfg, rubric, inputs, mode, model
        self.cache, self.count = cache, count

    def key(self, prompt: str, response: str, dim: Dimension) -> tuple:
        return (prompt, response, dim, self.model, self.inputs.template, self.inputs.demonstrations, self.cfg.mode,
                self.cfg.max_response_tokens, self.cfg.rationale, *self.mode.key(dim))

    def score(self, prompts: list[str], responses: list[str]) -> list[Judgement]:
        """One Judgement per (prompt, response); cached verdicts are reused, the rest asked of the mode at once."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        dims = self.rubric.dimensions
        fired = [guards.check(p, r) if self.cfg.guards else None for p, r in zip(prompts, responses)]
        keys = [[self.key(p, r, d) for d in dims] for p, r in zip(prompts, responses)]
        known: dict[tuple, Verdict] = {}
        todo: dict[tuple, tuple[int, Dimension]] = {}  # first occurrence of each key to ask
        asked = 0
        for i, row in enumerate(keys):
            # a guard that sets every dimension leaves the model nothing to decide: nothing is asked for it
            spared = guards.spared(fired[i], dims)
            for d, k in zip(dims, row):
                if d.name in spared:
                    continue
                asked += 1
                if k in known or k in todo:
                    continue
                hit = self.cache.get(k) if self.cache is not None else None
                if hit is not None:
                    known[k] = hit
                else:
                    todo[k] = (i, d)
        clipped = {i: (self.inputs.clip(prompts[i]), self.inputs.clip(responses[i])) for i, _ in todo.values()}
        items = [(*clipped[i], d) for i, d in todo.values()]
        fresh = dict(zip(todo, self.mode.verdicts(items, self.cfg.rationale) if items else []))
        if self.cache is not None:
            self.count("cache_hits", asked - len(todo))
            self.count("requests", len(todo))
            self.count("failures", sum(v.score is None for v in fresh.values()))
            for k, verdict in fresh.items():
                self.cache.put(k, verdict)
        unscored = Verdict(None, None)  # only where a guard replaces it in judgement()
        return [judgement(self.rubric, [known.get(k) or fresh.get(k, unscored) for k in row], f, self.mode.model_read)
                for row, f in zip(keys, fired)]
