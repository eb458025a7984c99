"""HttpJudge: the explainable judge asked over HTTP, from any OpenAI-compatible server (vLLM, `xrlhf serve-judge`)."""
from __future__ import annotations

import logging
import math
import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from xrlhf.config import ConfigError, HttpJudgeConfig, JudgeConfig
from xrlhf.judge.base import Judgement
from xrlhf.judge.likelihood import Tail, order_free
from xrlhf.judge.modes import Count, JudgeInputs, Scorer, VerdictCache, build_mode
from xrlhf.judge.openai_client import CompletionClient, CompletionError, ServerMismatch
from xrlhf.judge.rubric import Rubric
from xrlhf.judge.template import answer_prefix, render_demonstrations, render_pairwise, resolve_template

log = logging.getLogger(__name__)


class HttpJudge:
    """Scores every (prompt, response, dimension) with one request to an OpenAI-compatible server.

    Prompts are rendered as the local HFJudge renders them; set judge.http.tokenizer to the served
    model's tokenizer for identical truncation and prompt ending. The first call waits for the server
    (judge.http.ready_timeout_s) and checks that it serves judge.http.model. A dimension whose request still
    fails after judge.http.max_retries scores None, never 0, and score() does not raise for it; a server
    that cannot answer as configured (ServerMismatch: the model, the logprobs limit, no echo) raises.
    """

    def __init__(self, cfg: JudgeConfig) -> None:
        self.cfg = cfg
        self.rubric = Rubric.from_config(cfg)
        self.labels = tuple(self.rubric.names)
        self.template = resolve_template(cfg.template)
        self.demonstrations = render_demonstrations(self.rubric.dimensions) if cfg.demonstrations else ""
        self.tokenizer = _load_tokenizer(cfg.http.tokenizer) if cfg.http.tokenizer else None
        self.inputs = JudgeInputs(self.template, self.labels, self.rubric.dimensions, self.demonstrations,
                                  self.tokenizer, cfg.max_response_tokens)
        self.client = CompletionClient(cfg.http, _api_key(cfg.http.api_key_env))
        self._pool = ThreadPoolExecutor(cfg.http.concurrency, thread_name_prefix="http-judge")
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._ready = False
        self.source = ServerSource(cfg.http, self.client, self._pool, self.tokenizer, cfg.cache, self._count)
        self.mode = build_mode(cfg, self.inputs, self.source, self._count)
        # likelihood mode caches and counts the tails it asks the server for (ServerSource.tails), not verdicts
        cache = None if cfg.mode == "likelihood" else VerdictCache(cfg.cache)
        self.scorer = Scorer(cfg, self.rubric, self.inputs, self.mode, cfg.http.model, cache, self._count)

    def __repr__(self) -> str:
        return (f"HttpJudge(base_url={self.cfg.http.base_url!r}, model={self.cfg.http.model!r}, "
                f"mode={self.cfg.mode!r}, dimensions={list(self.labels)})")

    def score(self, prompts: list[str], responses: list[str]) -> list[Judgement]:
        """One Judgement per (prompt, response); failed dimensions are None and counted in `missing`. Likelihood
        mode raises PromptLogprobsUnavailable where the server does not echo prompt log-probs."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        self._wait_ready()
        out = self.scorer.score(prompts, responses)
        self._note_failures(sum(j.missing for j in out), len(out) * len(self.labels), "dimension scores")
        return out

    def compare(self, prompts: list[str], first: list[str], second: list[str]) -> list[float | None]:
        """P(first is better) from P("A") vs P("B"), averaged over both orders as HFJudge does; None on failure."""
        if not len(prompts) == len(first) == len(second):
            raise ValueError(f"{len(prompts)} prompts, {len(first)} first and {len(second)} second responses")
        return [None if a is None or b is None else 0.5 * (a + b)
                for a, b in self.compare_orders(prompts, first, second)]

    def compare_orders(self, prompts: list[str], first: list[str],
                       second: list[str]) -> list[tuple[float | None, float | None]]:
        """(P(first better | shown as A), P(first better | shown as B)) per pair, as HFJudge.compare_orders."""
        if not len(prompts) == len(first) == len(second):
            raise ValueError(f"{len(prompts)} prompts, {len(first)} first and {len(second)} second responses")
        if self.cfg.mode == "likelihood":  # from the two rewards, as HFJudge: order-free by construction
            return order_free(self, prompts, first, second)
        self._wait_ready()
        jobs = [(p, x, y) for p, a, b in zip(prompts, first, second) for x, y in ((a, b), (b, a))]
        p_a = list(self._pool.map(lambda job: self._p_first_label(*job), jobs))
        out = [(ab, None if ba is None else 1.0 - ba) for ab, ba in zip(p_a[::2], p_a[1::2])]
        failed = sum(a is None or b is None for a, b in out)
        self._count("requests", len(out))
        self._count("failures", failed)
        self._note_failures(failed, len(out), "comparisons")
        return out

    def stats(self) -> dict[str, float]:
        """Counters since the last call (requests, failures, retries, cache_hits), then reset."""
        retries = self.client.take_retries()
        with self._lock:
            counts, self._counts = self._counts, Counter()
        counts["retries"] += retries
        return {k: float(counts[k]) for k in ("requests", "failures", "retries", "cache_hits")}

    def close(self) -> None:
        """Stop the worker threads and close the connection pool."""
        self._pool.shutdown(wait=True)
        self.client.close()

    def _wait_ready(self) -> None:
        with self._lock:
            if not self._ready:
                self.client.wait_ready()
                self._ready = True

    def _p_first_label(self, prompt: str, a: str, b: str) -> float | None:
        criteria = "; ".join(f"{d.name} ({d.definition})" for d in self.rubric.dimensions)
        clip = self.inputs.clip
        text = self.source.sent_text(render_pairwise(clip(prompt), clip(a), clip(b), criteria, self.labels), "A")
        try:
            done = self.client.complete(text, 1, self.cfg.http.top_logprobs)
        except ServerMismatch:
            raise
        except CompletionError as exc:
            log.debug("pairwise judge request failed for good: %s", exc)
            return None
        return pairwise_probability(done.top_logprobs or {})

    def _count(self, name: str, n: int) -> None:
        with self._lock:
            self._counts[name] += n

    def _note_failures(self, failed: int, total: int, what: str) -> None:
        if failed:
            log.warning("http judge %s: %d of %d %s failed (left as None, not 0)", self.cfg.http.base_url,
                        failed, total, what)


class ServerSource:
    """Every source a mode asks of the served judge model (modes.ModelSource), each request sent concurrently
    (judge.http.concurrency): tails from the server's echoed prompt log-probs, the first answer token's top
    log-probs, completions. A request that still fails after judge.http.max_retries gives None; a server that
    cannot answer as configured (ServerMismatch) raises."""

    def __init__(self, http: HttpJudgeConfig, client: CompletionClient, pool: ThreadPoolExecutor, tokenizer: Any,
                 cache: bool, count: Count) -> None:
        self.http, self.client, self.pool, self.tokenizer, self.count = http, client, pool, tokenizer, count
        self._tails: dict[tuple[str, str, str], Tail] | None = {} if cache else None
        self._lock = threading.Lock()

    def sent_text(self, text: str, answer: str) -> str:
        """The text sent for a rendered judge input: as the local judge encodes it, given the served tokenizer."""
        return encode_text(self.tokenizer, text, answer) if self.tokenizer is not None else text

    def tails(self, requests: list[tuple[str, str, str]]) -> list[Tail | None]:
        """Each distinct tail asked once; the tails already asked come from the cache (judge.cache)."""
        distinct = list(dict.fromkeys(requests))
        got = dict(zip(distinct, self.pool.map(lambda r: self._tail(*r), distinct)))
        return [got[r] for r in requests]

    def next_token_logprobs(self, groups: list[list[str]]) -> list[list[dict[str, float] | None]]:
        texts = [text for group in groups for text in group]
        got = iter(self.pool.map(self._top_logprobs, texts))
        return [[next(got) for _ in group] for group in groups]

    def continuations(self, requests: list[tuple[str, str]], max_new_tokens: int,
                      temperature: float) -> list[str | None]:
        return list(self.pool.map(lambda r: self._complete(self.sent_text(r[0], "0") + r[1], max_new_tokens,
                                                           temperature), requests))

    def _top_logprobs(self, text: str) -> dict[str, float] | None:
        try:
            done = self.client.complete(self.sent_text(text, "0"), 1, self.http.top_logprobs)
        except ServerMismatch:
            raise
        except CompletionError as exc:
            log.debug("judge request failed for good: %s", exc)
            return None
        return done.top_logprobs or {}

    def _complete(self, text: str, max_new_tokens: int, temperature: float) -> str | None:
        try:
            return self.client.complete(text, max_new_tokens, temperature=temperature).text
        except ServerMismatch:
            raise
        except CompletionError as exc:
            log.debug("completion request failed for good: %s", exc)
            return None

    def _tail(self, instruction: str, context: str, text: str) -> Tail | None:
        """The tokens of `text` after instruction + context, from the server's echo; None once retries are spent."""
        key = (instruction, context, text)
        if self._tails is not None:
            with self._lock:
                cached = self._tails.get(key)
            if cached is not None:
                self.count("cache_hits", 1)
                return cached
        self.count("requests", 1)
        start = len(instruction + context)
        try:
            echoed = self.client.prompt_logprobs(instruction + context + text)
            value = echoed.tail_after(start, start + len(text))
        except ServerMismatch:
            raise
        except CompletionError as exc:
            log.debug("likelihood request failed for good: %s", exc)
            self.count("failures", 1)
            return None
        if self._tails is not None:
            with self._lock:
                self._tails[key] = value  # type: ignore[assignment]
        return value


def pairwise_probability(top_logprobs: dict[str, float]) -> float | None:
    """P("A") / (P("A") + P("B")) from first-token logprobs; None when neither letter is among them."""
    pa = math.exp(top_logprobs["A"]) if "A" in top_logprobs else 0.0
    pb = math.exp(top_logprobs["B"]) if "B" in top_logprobs else 0.0
    return pa / (pa + pb) if pa + pb > 0 else None


def encode_text(tokenizer: Any, text: str, answer: str) -> str:
    """The text whose plain tokenisation gives template.encode's ids: the chat template as a string, or text + prefix.

    A completions server adds BOS to plain text; `xrlhf serve-judge` adds none to text that
    already starts with it, as a rendered chat template does.
    """
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    return text + answer_prefix(tokenizer, answer)


def _api_key(env_name: str | None) -> str | None:
    if env_name is None:
        return None
    key = os.environ.get(env_name)
    if not key:
        raise ConfigError(f"judge.http.api_key_env names {env_name!r}, but that environment variable is not set")
    return key


def _load_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    from xrlhf.policy.models import TINY, resolve, tiny_tokenizer

    return tiny_tokenizer() if name == TINY else AutoTokenizer.from_pretrained(resolve(name))
