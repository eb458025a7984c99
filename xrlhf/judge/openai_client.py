"""A thread-safe, retrying client for the completion endpoints of any OpenAI-compatible server."""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from xrlhf.config import HttpJudgeConfig

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 429}  # plus every 5xx: the server may answer if asked again


class CompletionError(RuntimeError):
    """A completion failed for good: retries ran out, or the server refused (e.g. 401) in a way retrying cannot fix."""


class ServerMismatch(CompletionError):
    """The server cannot answer this judge as configured (a model it does not serve, a logprobs limit below
    judge.http.top_logprobs, no prompt log-probs): every request would fail alike, so the judge stops with this
    instead of scoring None."""


class PromptLogprobsUnavailable(ServerMismatch):
    """The server does not return the prompt's token log-probabilities (echo=true with logprobs), which
    judge.mode=likelihood needs."""


class ServerNotReady(CompletionError):
    """No server answered at judge.http.base_url within judge.http.ready_timeout_s."""


class RetryableError(RuntimeError):
    """The server answered with something worth asking for again: a 5xx/408/429 or a body that is no completion."""


@dataclass
class PromptLogprobs:
    """The prompt's own tokens as the server echoed them: text, each token's logprob (None for the first) and its
    start in the text."""

    text: str
    token_logprobs: list[float | None]
    text_offset: list[int]

    def tail_after(self, start: int, end: int) -> Any:
        """The likelihood Tail of the tokens that start in text[start:end] (a token across `start` belongs to the
        context; the completion's own token after `end` is not the prompt's): their logprobs and character spans,
        relative to `start`."""
        from xrlhf.judge.likelihood import Tail

        picked = [(lp, at - start) for lp, at in zip(self.token_logprobs, self.text_offset) if start <= at < end]
        if not picked or any(lp is None for lp, _ in picked):
            raise PromptLogprobsUnavailable(f"no log-probability for the tokens in characters {start}-{end} of the "
                                            f"echoed prompt")
        ends = [at for _, at in picked[1:]] + [end - start]
        return Tail(tuple(lp for lp, _ in picked), tuple((at, end) for (_, at), end in zip(picked, ends)))


@dataclass
class Completion:
    """The first choice of a completion: its text and its first token's top logprobs (token text -> logprob)."""

    text: str
    top_logprobs: dict[str, float] | None = None


class CompletionClient:
    """POSTs one prompt per request to {base_url}/completions, falling back to /chat/completions on a 404.

    Timeouts, connection errors, 5xx/408/429 and unparseable bodies are retried with jittered
    exponential backoff, max_retries times; the API key is sent as a bearer header and redacted
    from every message this client writes or raises.
    """

    def __init__(self, http: HttpJudgeConfig, api_key: str | None = None) -> None:
        self.http = http
        self._key = api_key
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=http.concurrency, max_keepalive_connections=http.concurrency)
        self._client = httpx.Client(base_url=http.base_url, headers=headers, timeout=http.timeout_s, limits=limits)
        self._chat = False
        self._lock = threading.Lock()
        self._retries = 0

    def __repr__(self) -> str:
        return f"CompletionClient(base_url={self.http.base_url!r}, model={self.http.model!r}, api_key=***)"

    def complete(self, prompt: str, max_tokens: int, top_logprobs: int | None = None,
                 temperature: float = 0.0) -> Completion:
        """One completion; raises CompletionError (key redacted) once retries are spent."""
        return self._retrying(self._complete_once, prompt, max_tokens, top_logprobs, temperature)

    def wait_ready(self) -> None:
        """Block until the server answers GET /models (a vLLM server refuses connections while it loads), at most
        judge.http.ready_timeout_s; then check that it serves judge.http.model. A server without a model list
        (404, 501) or one that refuses the key is left to the requests to find out."""
        deadline = time.monotonic() + self.http.ready_timeout_s
        while True:
            try:
                response = self._client.get("/models", timeout=min(self.http.timeout_s, 10.0))
                if response.status_code not in (502, 503, 504):
                    break
                why = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                why = type(exc).__name__
            if time.monotonic() >= deadline:
                raise ServerNotReady(f"no judge server answered at {self.http.base_url} within "
                                     f"judge.http.ready_timeout_s={self.http.ready_timeout_s:g} s (last: {why}); "
                                     f"start it, or raise the limit for a server that takes longer to load")
            time.sleep(1.0)
        if response.status_code != 200:
            log.debug("GET %s/models answered %d; the model name is not checked", self.http.base_url,
                      response.status_code)
            return
        try:
            served = [m["id"] for m in response.json()["data"]]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            log.debug("GET %s/models gave no model list (%s); the model name is not checked", self.http.base_url, exc)
            return
        if self.http.model not in served:
            raise self._unknown_model(served)

    def prompt_logprobs(self, prompt: str) -> PromptLogprobs:
        """The prompt's token logprobs from /completions with echo=true, logprobs=1, max_tokens=1 (vLLM serves
        them); raises PromptLogprobsUnavailable, naming the server, where it does not return them."""
        return self._retrying(self._echo_once, prompt)

    def _retrying(self, fn: Any, *args: Any) -> Any:
        retrying = Retrying(stop=stop_after_attempt(self.http.max_retries + 1),
                            wait=wait_random_exponential(multiplier=self.http.backoff_s, max=self.http.max_backoff_s),
                            retry=retry_if_exception_type((httpx.TransportError, RetryableError)),
                            before_sleep=self._before_retry, reraise=True)
        try:
            return retrying(fn, *args)
        except ServerMismatch as exc:
            raise type(exc)(self.redact(str(exc))) from None
        except (httpx.HTTPError, RetryableError, CompletionError) as exc:
            raise CompletionError(self.redact(f"{type(exc).__name__}: {exc}")) from None

    def _echo_once(self, prompt: str) -> PromptLogprobs:
        body = {"model": self.http.model, "prompt": prompt, "echo": True, "logprobs": 1, "max_tokens": 1,
                "temperature": 0.0}
        response = self._client.post("/completions", json=body)
        where = f"{self.http.base_url}/completions"
        self._check_model(response)
        if response.status_code in (400, 404, 422):
            raise PromptLogprobsUnavailable(
                f"judge.mode=likelihood needs the prompt's token log-probabilities, and {where} refused the request "
                f"for them (echo=true, logprobs=1) with HTTP {response.status_code}: {self._snippet(response)!r}; "
                f"use a server whose completions API echoes prompt log-probabilities (vLLM's does) or "
                f"judge.mode=expected")
        self._check_status(response)
        try:
            choice = response.json()["choices"][0]
            text, logprobs = choice["text"], choice.get("logprobs")
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError) as exc:
            raise RetryableError(f"unusable response body ({type(exc).__name__}: {exc}): "
                                 f"{self._snippet(response)!r}") from None
        offsets = (logprobs or {}).get("text_offset") or []
        lps = (logprobs or {}).get("token_logprobs") or []
        # vLLM counts each offset over the tokens' own spellings, which open with a "<bos>" that the echoed text
        # does not: its offsets run ahead of the text by the length of what the tokens spell before the prompt.
        lead = "".join(t for t in (logprobs or {}).get("tokens") or [] if isinstance(t, str)).find(prompt)
        if lead > 0:
            offsets = [at - lead for at in offsets]
        echoed = isinstance(text, str) and text.startswith(prompt)
        if not echoed or len(offsets) != len(lps) or not any(0 < at < len(prompt) for at in offsets):
            got = "no logprobs" if not logprobs else "the prompt not echoed" if not echoed else \
                "logprobs for the generated tokens only"
            raise PromptLogprobsUnavailable(
                f"judge.mode=likelihood needs the prompt's token log-probabilities, but {where} returned {got} for "
                f"echo=true, logprobs=1 (an OpenAI-style server that ignores echo); use a server whose completions "
                f"API echoes prompt log-probabilities (vLLM's does) or judge.mode=expected")
        return PromptLogprobs(text, lps, offsets)

    def take_retries(self) -> int:
        """Retried attempts since the last call, then reset."""
        with self._lock:
            out, self._retries = self._retries, 0
        return out

    def redact(self, text: str) -> str:
        """text with the API key replaced by ***."""
        return text.replace(self._key, "***") if self._key else text

    def close(self) -> None:
        self._client.close()

    def _before_retry(self, state: RetryCallState) -> None:
        with self._lock:
            self._retries += 1
        exc = state.outcome.exception() if state.outcome else None
        log.debug("judge request attempt %d failed (%s); retrying", state.attempt_number,
                  self.redact(f"{type(exc).__name__}: {exc}"))

    def _complete_once(self, prompt: str, max_tokens: int, top_logprobs: int | None,
                       temperature: float) -> Completion:
        chat = self._chat
        path, body = _chat_request(prompt, top_logprobs) if chat else _completions_request(prompt, top_logprobs)
        body.update(model=self.http.model, max_tokens=max_tokens, temperature=temperature)
        response = self._client.post(path, json=body)
        self._check_model(response)
        if response.status_code == 400 and top_logprobs and "logprobs" in response.text:
            raise ServerMismatch(f"{self.http.base_url}{path} refused judge.http.top_logprobs={top_logprobs}: "
                                 f"{self._snippet(response)!r}; lower judge.http.top_logprobs to the server's limit "
                                 f"(vLLM: vllm serve --max-logprobs, 20 by default)")
        if response.status_code == 404 and not chat:
            log.warning("%s/completions answered 404; using /chat/completions from now on", self.http.base_url)
            self._chat = True
            return self._complete_once(prompt, max_tokens, top_logprobs, temperature)
        self._check_status(response)
        try:
            data = response.json()
            return _parse_chat(data, top_logprobs) if chat else _parse_completion(data, top_logprobs)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise RetryableError(f"unusable response body ({type(exc).__name__}: {exc}): "
                                 f"{self._snippet(response)!r}") from None

    def _check_model(self, response: httpx.Response) -> None:
        """A 404 that names judge.http.model is a model the server does not serve (vLLM: "The model `x` does not
        exist"), not a missing endpoint: say so, with the served models, rather than try /chat/completions."""
        if response.status_code == 404 and self.http.model in response.text and "model" in response.text.lower():
            raise self._unknown_model(None)

    def _unknown_model(self, served: list[str] | None) -> ServerMismatch:
        if served is None:
            try:
                served = [m["id"] for m in self._client.get("/models").json()["data"]]
            except (httpx.HTTPError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
                served = []
        return ServerMismatch(f"judge.http.model={self.http.model!r} is not served at {self.http.base_url}: it "
                              f"serves {served or 'no model it lists'}; set judge.http.model to the served name "
                              f"(vllm serve --served-model-name)")

    def _check_status(self, response: httpx.Response) -> None:
        code = response.status_code
        if code < 400:
            return
        message = f"HTTP {code} from {response.request.url}: {self._snippet(response)!r}"
        if code >= 500 or code in RETRY_STATUS:
            raise RetryableError(message)
        raise CompletionError(message)

    def _snippet(self, response: httpx.Response) -> str:
        # Redact before cutting: a cut through the key would leave a prefix that redact() cannot find.
        return self.redact(response.text)[:200]


def _completions_request(prompt: str, top_logprobs: int | None) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any] = {"prompt": prompt}
    if top_logprobs:
        body["logprobs"] = top_logprobs
    return "/completions", body


def _chat_request(prompt: str, top_logprobs: int | None) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}]}
    if top_logprobs:
        body.update(logprobs=True, top_logprobs=top_logprobs)
    return "/chat/completions", body


def _parse_completion(data: Any, top_logprobs: int | None) -> Completion:
    # Legacy completions: choices[0].logprobs.top_logprobs is a list (one per token) of {token: logprob}.
    choice = data["choices"][0]
    text = choice["text"]
    if not isinstance(text, str):
        raise TypeError(f"choices[0].text is {type(text).__name__}, not str")
    if not top_logprobs:
        return Completion(text)
    first = choice["logprobs"]["top_logprobs"][0]
    return Completion(text, merge_whitespace_variants(first.items()))


def _parse_chat(data: Any, top_logprobs: int | None) -> Completion:
    # Chat: choices[0].logprobs.content is a list (one per token) of {token, logprob, top_logprobs: [...]}.
    choice = data["choices"][0]
    text = choice["message"]["content"]
    if not isinstance(text, str):
        raise TypeError(f"choices[0].message.content is {type(text).__name__}, not str")
    if not top_logprobs:
        return Completion(text)
    first = choice["logprobs"]["content"][0]["top_logprobs"]
    return Completion(text, merge_whitespace_variants((t["token"], t["logprob"]) for t in first))


def merge_whitespace_variants(pairs: Any) -> dict[str, float]:
    """{token.strip(): logprob}, with variants that strip alike (" 3", "3") summed in probability.

    Raises ValueError on an empty list or a logprob that is not a number, so garbage gets retried.
    """
    merged: dict[str, float] = {}
    for token, logprob in pairs:
        if not isinstance(token, str) or isinstance(logprob, bool) or not isinstance(logprob, (int, float)):
            raise ValueError(f"top_logprobs entry {token!r}: {logprob!r} is not token: number")
        key = token.strip()
        merged[key] = float(np.logaddexp(merged[key], logprob)) if key in merged else float(logprob)
    if not merged:
        raise ValueError("empty top_logprobs")
    return merged
