"""HttpJudge: the explainable judge asked over HTTP, from any OpenAI-compatible server (vLLM, `xrlhf serve-judge`)."""
from __future__ import annotations

import logging
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from xrlhf.config import ConfigError, JudgeConfig
from xrlhf.judge.base import Judgement
from xrlhf.judge.openai_client import CompletionClient, CompletionError
from xrlhf.judge.rubric import Dimension, Rubric, expected_score, parse_score
from xrlhf.judge.template import DEFAULT_TEMPLATE, render_dimension, render_pairwise, truncate_response

log = logging.getLogger(__name__)

T = TypeVar("T")
GENERATE_TOKENS = 8  # "Score (0-4): 3" needs one; a few more let a chatty judge still be parsed
RATIONALE_TOKENS = 96
Verdict = tuple[float | None, float | None, str]  # (score, confidence, rationale) for one dimension


class HttpJudge:
    """Scores every (prompt, response, dimension) with one request to an OpenAI-compatible server.

    Prompts are rendered exactly as the local HFJudge renders them (set judge.http.tokenizer to the
    served model's tokenizer for identical truncation and prompt ending). A request that still fails
    after judge.http.max_retries gives that dimension a None score, never 0; score() never raises for it.
    """

    def __init__(self, cfg: JudgeConfig) -> None:
        self.cfg = cfg
        self.rubric = Rubric.from_config(cfg)
        self.template = cfg.template or DEFAULT_TEMPLATE
        self.tokenizer = _load_tokenizer(cfg.http.tokenizer) if cfg.http.tokenizer else None
        self.client = CompletionClient(cfg.http, _api_key(cfg.http.api_key_env))
        self._pool = ThreadPoolExecutor(cfg.http.concurrency, thread_name_prefix="http-judge")
        self._cache: dict[tuple[str, ...], Verdict] = {}
        self._lock = threading.Lock()
        self._cache_hits = 0

    def __repr__(self) -> str:
        return (f"HttpJudge(base_url={self.cfg.http.base_url!r}, model={self.cfg.http.model!r}, "
                f"mode={self.cfg.mode!r}, dimensions={self.rubric.names})")

    def score(self, prompts: list[str], responses: list[str]) -> list[Judgement]:
        """One Judgement per (prompt, response); failed dimensions are None and counted in `missing`."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        jobs = [(p, r, d) for p, r in zip(prompts, responses) for d in self.rubric.dimensions]
        verdicts = self._map(lambda job: self._score_one(*job), jobs)
        n = len(self.rubric.dimensions)
        out = [self._judgement(verdicts[i * n:(i + 1) * n]) for i in range(len(prompts))]
        self._log_failures(sum(j.missing for j in out), len(jobs), "dimension scores")
        return out

    def compare(self, prompts: list[str], first: list[str], second: list[str]) -> list[float | None]:
        """P(first is better) from the pairwise prompt's P("A") vs P("B"); None where the request failed."""
        if not len(prompts) == len(first) == len(second):
            raise ValueError(f"{len(prompts)} prompts, {len(first)} first and {len(second)} second responses")
        out = self._map(lambda job: self._compare_one(*job), list(zip(prompts, first, second)))
        self._log_failures(sum(p is None for p in out), len(out), "comparisons")
        return out

    def stats(self) -> dict[str, float]:
        """Counters since the last call (requests, failures, retries, cache_hits), then reset."""
        counts = self.client.take_counts()
        with self._lock:
            counts["cache_hits"], self._cache_hits = self._cache_hits, 0
        return {k: float(v) for k, v in counts.items()}

    def close(self) -> None:
        """Stop the worker threads and close the connection pool."""
        self._pool.shutdown(wait=True)
        self.client.close()

    def _map(self, fn: Callable[[Any], T], items: list[Any]) -> list[T]:
        return list(self._pool.map(fn, items))

    def _score_one(self, prompt: str, response: str, dim: Dimension) -> Verdict:
        key = (prompt, response, dim.name, self.cfg.http.model, self.template, self.cfg.mode)
        if self.cfg.cache:
            with self._lock:
                if key in self._cache:
                    self._cache_hits += 1
                    return self._cache[key]
        verdict = self._ask_score(self._render(prompt, response, dim), dim)
        if self.cfg.cache and verdict[0] is not None:  # a failure is asked again next time
            with self._lock:
                self._cache[key] = verdict
        return verdict

    def _ask_score(self, text: str, dim: Dimension) -> Verdict:
        try:
            if self.cfg.mode == "expected":
                done = self.client.complete(text, max_tokens=1, top_logprobs=self.cfg.http.top_logprobs)
                score, confidence = expected_score(done.top_logprobs or {}, dim.lo, dim.hi)
                return score, confidence, ""
            tokens = RATIONALE_TOKENS if self.cfg.rationale else GENERATE_TOKENS
            done = self.client.complete(text, max_tokens=tokens)
            value = parse_score(done.text, dim.lo, dim.hi)
            return (None if value is None else float(value)), None, done.text.strip() if self.cfg.rationale else ""
        except CompletionError as exc:
            log.debug("judge request for %s failed for good: %s", dim.name, exc)
            return None, None, ""

    def _compare_one(self, prompt: str, first: str, second: str) -> float | None:
        text = self._render_pairwise(prompt, first, second)
        try:
            done = self.client.complete(text, max_tokens=1, top_logprobs=self.cfg.http.top_logprobs)
        except CompletionError as exc:
            log.debug("pairwise judge request failed for good: %s", exc)
            return None
        return pairwise_probability(done.top_logprobs or {})

    def _judgement(self, verdicts: list[Verdict]) -> Judgement:
        names = self.rubric.names
        scores = {n: v[0] for n, v in zip(names, verdicts)}
        normalised = self.rubric.normalise_all(scores)
        rationale = {n: v[2] for n, v in zip(names, verdicts) if v[2]}
        return Judgement(scores=scores, normalised=normalised, confidence={n: v[1] for n, v in zip(names, verdicts)},
                         rationale=rationale, reward=self.rubric.aggregate(normalised),
                         missing=sum(s is None for s in scores.values()))

    def _render(self, prompt: str, response: str, dim: Dimension) -> str:
        if self.tokenizer is not None:
            response = truncate_response(self.tokenizer, response, self.cfg.max_response_tokens)
        text = render_dimension(self.template, prompt, response, dim, tuple(self.rubric.names))
        return self._as_sent(text, str(dim.lo))

    def _render_pairwise(self, prompt: str, first: str, second: str) -> str:
        if self.tokenizer is not None:
            first = truncate_response(self.tokenizer, first, self.cfg.max_response_tokens)
            second = truncate_response(self.tokenizer, second, self.cfg.max_response_tokens)
        text = render_pairwise(prompt, first, second, _criteria(self.rubric), tuple(self.rubric.names))
        return self._as_sent(text, "A")

    def _as_sent(self, text: str, answer: str) -> str:
        """The text a completions server must tokenise to get the ids template.encode gives the local judge."""
        return encode_text(self.tokenizer, text, answer) if self.tokenizer is not None else text

    def _log_failures(self, failed: int, total: int, what: str) -> None:
        if failed:
            log.warning("http judge %s: %d of %d %s failed after %d retries (left as None, not 0)",
                        self.cfg.http.base_url, failed, total, what, self.cfg.http.max_retries)


def pairwise_probability(top_logprobs: dict[str, float]) -> float | None:
    """P(A) / (P(A) + P(B)) from first-token logprobs; None when neither letter is among them."""
    pa = math.exp(top_logprobs["A"]) if "A" in top_logprobs else 0.0
    pb = math.exp(top_logprobs["B"]) if "B" in top_logprobs else 0.0
    return pa / (pa + pb) if pa + pb > 0 else None


def encode_text(tokenizer: Any, text: str, answer: str) -> str:
    """template.encode as text: the chat template as a string when the tokenizer has one, else text + answer prefix."""
    from xrlhf.judge.template import answer_prefix

    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    return text + answer_prefix(tokenizer, answer)


def _criteria(rubric: Rubric) -> str:
    return "; ".join(f"{d.name} ({d.definition})" for d in rubric.dimensions)


def _api_key(env_name: str | None) -> str | None:
    if env_name is None:
        return None
    key = os.environ.get(env_name)
    if not key:
        raise ConfigError(f"judge.http.api_key_env names {env_name!r}, but that environment variable is not set")
    return key


def _load_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    from xrlhf.models import TINY, resolve, tiny_tokenizer

    return tiny_tokenizer() if name == TINY else AutoTokenizer.from_pretrained(resolve(name))
