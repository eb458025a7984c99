"""HttpJudge: the explainable judge asked over HTTP, from any OpenAI-compatible server (vLLM, `xrlhf serve-judge`)."""
from __future__ import annotations

import logging
import math
import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from xrlhf.config import ConfigError, JudgeConfig
from xrlhf.judge.base import Judgement, Verdict, judgement
from xrlhf.judge import guards
from xrlhf.judge.likelihood import LikelihoodMode, Tail, instruction_for, order_free, signal_for
from xrlhf.judge.openai_client import CompletionClient, CompletionError, ServerMismatch
from xrlhf.judge.rubric import Dimension, Rubric, expected_score, parse_score
from xrlhf.judge.template import (answer_prefix, resolve_template, render_demonstrations, render_dimension,
                                  render_pairwise, truncate_response)

log = logging.getLogger(__name__)

# The same budgets as HFJudge, so the two backends ask the same questions.
SCORE_TOKENS = 4
RETRY_TEMPERATURE = 0.7
RATIONALE_TOKENS = 48


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
        self.client = CompletionClient(cfg.http, _api_key(cfg.http.api_key_env))
        self._pool = ThreadPoolExecutor(cfg.http.concurrency, thread_name_prefix="http-judge")
        self._cache: dict[tuple, Verdict] = {}
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._ready = False
        self.instruction = instruction_for(cfg.likelihood_instruction)
        self.signals = {d.name: signal_for(d.name, cfg.dimensions[d.name].signal) for d in self.rubric.dimensions}
        # the dimensions a failed model leaves without a score (judgement: none of them scored, no reward)
        self.model_read = frozenset(n for n, s in self.signals.items() if s.reads_model or cfg.mode != "likelihood")
        self.likelihood = LikelihoodMode(self, self.signals)

    def __repr__(self) -> str:
        return (f"HttpJudge(base_url={self.cfg.http.base_url!r}, model={self.cfg.http.model!r}, "
                f"mode={self.cfg.mode!r}, dimensions={list(self.labels)})")

    def score(self, prompts: list[str], responses: list[str]) -> list[Judgement]:
        """One Judgement per (prompt, response); failed dimensions are None and counted in `missing`."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        self._wait_ready()
        fired = [guards.check(p, r) if self.cfg.guards else None for p, r in zip(prompts, responses)]
        if self.cfg.mode == "likelihood":
            return self._likelihood(prompts, responses, fired)
        # one request per dimension a guard does not decide; the guard's verdicts come from judgement()
        jobs = [(i, d) for i, f in enumerate(fired) for d in self.rubric.dimensions
                if d.name not in guards.spared(f, self.rubric.dimensions)]
        done = dict(zip(jobs, self._pool.map(lambda job: self._verdict(prompts[job[0]], responses[job[0]], job[1]),
                                             jobs)))
        unscored = Verdict(None, None)  # only where the guard replaces it
        out = [judgement(self.rubric, [done.get((i, d), unscored) for d in self.rubric.dimensions], f,
                         self.model_read)
               for i, f in enumerate(fired)]
        self._note_failures(sum(j.missing for j in out), len(jobs), "dimension scores")
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

    def _likelihood(self, prompts: list[str], responses: list[str],
                    fired: list[tuple[str, str] | None]) -> list[Judgement]:
        """Likelihood mode as HFJudge scores it (xrlhf/judge/likelihood.py), each tail's token log-probs from the
        server's echoed prompt. Raises PromptLogprobsUnavailable where the server does not echo them."""
        jobs = [(i, d) for i, f in enumerate(fired) for d in self.rubric.dimensions
                if d.name not in guards.spared(f, self.rubric.dimensions)]
        items = [(self._clip(prompts[i]), self._clip(responses[i]),
                  self.cfg.dimensions[d.name].instruction or self.instruction, d) for i, d in jobs]
        done = dict(zip(jobs, self.likelihood.verdicts(items, self.cfg.rationale)))
        unscored = Verdict(None, None)  # only where the guard replaces it
        out = [judgement(self.rubric, [done.get((i, d), unscored) for d in self.rubric.dimensions], f,
                         self.model_read)
               for i, f in enumerate(fired)]
        self._note_failures(sum(j.missing for j in out), len(out) * len(self.labels), "dimension scores")
        return out

    def tails(self, requests: list[tuple[str, str, str]]) -> list[Tail | None]:
        """LogprobSource: each distinct tail asked once, concurrently (judge.http.concurrency)."""
        distinct = list(dict.fromkeys(requests))
        got = dict(zip(distinct, self._pool.map(lambda r: self._tail(*r), distinct)))
        return [got[r] for r in requests]

    def _tail(self, instruction: str, context: str, text: str) -> Tail | None:
        """The tokens of `text` after instruction + context, from the server's echo; None once retries are spent."""
        key = ("likelihood", self.cfg.http.model, instruction, context, text)
        with self._lock:
            cached = self._cache.get(key) if self.cfg.cache else None
        if cached is not None:
            self._count("cache_hits")
            return cached  # type: ignore[return-value]
        self._count("requests")
        start = len(instruction + context)
        try:
            echoed = self.client.prompt_logprobs(instruction + context + text)
            value = echoed.tail_after(start, start + len(text))
        except ServerMismatch:
            raise
        except CompletionError as exc:
            log.debug("likelihood request failed for good: %s", exc)
            self._count("failures")
            return None
        if self.cfg.cache:
            with self._lock:
                self._cache[key] = value  # type: ignore[assignment]
        return value

    def _verdict(self, prompt: str, response: str, dim: Dimension) -> Verdict:
        # Everything that decides a verdict, as in HFJudge's key; the served model stands for the model.
        key = (prompt, response, dim, self.cfg.http.model, self.template, self.demonstrations, self.cfg.mode,
               self.cfg.max_response_tokens, self.cfg.rationale)
        with self._lock:
            cached = self._cache.get(key) if self.cfg.cache else None
        if cached is not None:
            self._count("cache_hits")
            return cached
        self._count("requests")
        text = self._sent_text(render_dimension(self.template, self._clip(prompt), self._clip(response), dim,
                                                self.labels, self.rubric.dimensions, self.demonstrations), "0")
        verdict = self._ask(text, dim)
        if self.cfg.rationale and verdict.score is not None:
            verdict = Verdict(verdict.score, verdict.confidence, self._rationale(text, verdict.score))
        if verdict.score is None:
            self._count("failures")
        elif self.cfg.cache:  # a failure is asked again next time, not remembered
            with self._lock:
                self._cache[key] = verdict
        return verdict

    def _ask(self, text: str, dim: Dimension) -> Verdict:
        try:
            if self.cfg.mode == "expected":
                done = self.client.complete(text, 1, self.cfg.http.top_logprobs)
                return Verdict(*expected_score(done.top_logprobs or {}, dim.lo, dim.hi))
            return Verdict(self._generated_score(text, dim), None)
        except ServerMismatch:
            raise
        except CompletionError as exc:
            log.debug("judge request for %s failed for good: %s", dim.name, exc)
            return Verdict(None, None)

    def _generated_score(self, text: str, dim: Dimension) -> float | None:
        """Greedy first; an unparseable answer is sampled again up to judge.generate_retries times."""
        for attempt in range(1 + self.cfg.generate_retries):
            if attempt:
                self._count("retries")
            done = self.client.complete(text, SCORE_TOKENS, temperature=RETRY_TEMPERATURE if attempt else 0.0)
            value = parse_score(done.text, dim.lo, dim.hi)
            if value is not None:
                return float(value)
        return None

    def _rationale(self, text: str, score: float) -> str:
        """A one-line reason asked after the score, as HFJudge asks it; empty if that request fails."""
        try:
            done = self.client.complete(f"{text}{round(score)}\nReason:", RATIONALE_TOKENS)
        except ServerMismatch:
            raise
        except CompletionError as exc:
            log.debug("rationale request failed: %s", exc)
            return ""
        return done.text.strip().split("\n")[0]

    def _p_first_label(self, prompt: str, a: str, b: str) -> float | None:
        criteria = "; ".join(f"{d.name} ({d.definition})" for d in self.rubric.dimensions)
        text = self._sent_text(render_pairwise(self._clip(prompt), self._clip(a), self._clip(b), criteria,
                                               self.labels), "A")
        try:
            done = self.client.complete(text, 1, self.cfg.http.top_logprobs)
        except ServerMismatch:
            raise
        except CompletionError as exc:
            log.debug("pairwise judge request failed for good: %s", exc)
            return None
        return pairwise_probability(done.top_logprobs or {})

    def _clip(self, text: str) -> str:
        if self.tokenizer is None:
            return text
        return truncate_response(self.tokenizer, text, self.cfg.max_response_tokens)

    def _sent_text(self, text: str, answer: str) -> str:
        return encode_text(self.tokenizer, text, answer) if self.tokenizer is not None else text

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _note_failures(self, failed: int, total: int, what: str) -> None:
        if failed:
            log.warning("http judge %s: %d of %d %s failed (left as None, not 0)", self.cfg.http.base_url,
                        failed, total, what)


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
