"""HttpJudge against a fault-injecting OpenAI-style server, and serve-judge (Ray Serve) against the local judge."""
import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from faults import FaultServer, StubCompletionsServer
from xrlhf.config import Config, ConfigError, HttpJudgeConfig, JudgeConfig, dump_config
from xrlhf.judge.http import HttpJudge

KEY_ENV = "XRLHF_TEST_JUDGE_KEY"
KEY = "sk-test-0123456789-secret"
DIMS = {"helpfulness": {"definition": "Does what was asked."}, "correctness": {"definition": "Facts are right."}}
# The good answer's first-token distribution: "3" and " 3" add up to 0.75, so the expected score is 2.75.
SCORE_TOP = {"3": math.log(0.5), " 3": math.log(0.25), "2": math.log(0.25), "x": -6.0}
# Pairwise: P("A") is 0.8 when response A is "good", else 0.3 (whitespace variants add up).
GOOD_AS_A = {"A": math.log(0.6), " A": math.log(0.2), "B": math.log(0.2)}
BAD_AS_A = {"A": math.log(0.3), "B": math.log(0.7)}
PAIRS = [("What is 2+2?", "4"), ("Name a colour.", "Blue."), ("Say hi.", "Hi!"), ("Capital of France?", "Paris.")]


def _answer(prompt: str, chat: bool) -> dict:
    top = SCORE_TOP if "Better response" not in prompt \
        else GOOD_AS_A if "<<<RESPONSE_A>>>\ngood\n" in prompt else BAD_AS_A
    if chat:
        content = [{"token": "3", "logprob": -0.3,
                    "top_logprobs": [{"token": t, "logprob": v} for t, v in top.items()]}]
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": "3"}, "finish_reason": "length",
                             "logprobs": {"content": content}}]}
    logprobs = {"tokens": ["3"], "token_logprobs": [-0.3], "top_logprobs": [top]}
    return {"choices": [{"index": 0, "text": "Score: 3", "finish_reason": "length", "logprobs": logprobs}]}


@pytest.fixture(scope="module")
def server():
    srv = FaultServer(KEY, stall_s=2.0, answer=_answer)
    yield srv
    srv.close()


@pytest.fixture
def judge_cfg(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    http = HttpJudgeConfig(base_url=server.url, api_key_env=KEY_ENV, timeout_s=1.5, max_retries=2, backoff_s=0.01,
                           max_backoff_s=0.05, concurrency=8)
    return JudgeConfig(backend="http", dimensions=DIMS, http=http, cache=False)


def _score(cfg):
    judge = HttpJudge(cfg)
    try:
        return judge.score([p for p, _ in PAIRS], [r for _, r in PAIRS]), judge.stats()
    finally:
        judge.close()


def test_good_answers_give_the_expected_score(server, judge_cfg):
    server.set("none")
    verdicts, stats = _score(judge_cfg)
    for v in verdicts:
        assert v.scores == pytest.approx({"helpfulness": 2.75, "correctness": 2.75})
        assert v.missing == 0 and v.reward == pytest.approx(2.75 / 4)
        assert 0 < v.confidence["helpfulness"] < 1
    assert stats == {"requests": 8.0, "failures": 0.0, "retries": 0.0, "cache_hits": 0.0}


@pytest.mark.parametrize("fault", ["500", "garbage", "empty", "no_logprobs", "stall"])
def test_some_failures_are_retried_and_scores_come_back(server, judge_cfg, fault):
    server.set(fault, fail_first=1, only="Dimension: helpfulness")  # half the requests fail once
    verdicts, stats = _score(judge_cfg)
    assert all(v.missing == 0 and v.scores["helpfulness"] == pytest.approx(2.75) for v in verdicts)
    assert stats["retries"] == 4 and stats["failures"] == 0 and stats["requests"] == 8


@pytest.mark.parametrize("fault", ["500", "garbage", "empty", "stall"])
def test_all_failing_gives_none_never_zero(server, judge_cfg, fault, caplog):
    server.set(fault)
    cfg = judge_cfg.model_copy(update={"http": judge_cfg.http.model_copy(update={"max_retries": 1})})
    with caplog.at_level(logging.WARNING, logger="xrlhf"):
        verdicts, stats = _score(cfg)
    for v in verdicts:
        assert v.scores == {"helpfulness": None, "correctness": None}
        assert v.normalised == {"helpfulness": None, "correctness": None}
        assert v.reward is None and v.missing == 2
    assert stats["failures"] == 8 and stats["retries"] == 8
    assert "8 of 8 dimension scores failed" in caplog.text


def test_one_dimension_failing_is_reweighted_not_zeroed(server, judge_cfg):
    server.set("500", only="Dimension: correctness")
    verdicts, _ = _score(judge_cfg)
    for v in verdicts:
        assert v.scores["correctness"] is None and v.missing == 1
        assert v.reward == pytest.approx(2.75 / 4)  # helpfulness alone, reweighted


def test_compare_averages_p_a_over_both_orders(server, judge_cfg):
    server.set("none")
    judge = HttpJudge(judge_cfg)
    # good as A: P(A) = 0.8; bad as A: P(A) = 0.3, so P(good first is better) = (0.8 + 1 - 0.3) / 2
    assert judge.compare(["q", "q"], ["good", "bad"], ["bad", "good"]) == [pytest.approx(0.75), pytest.approx(0.25)]
    # per order: good shown as A wins 0.8, shown as B 1 - 0.3: the verdicts behind the mean, for position consistency
    assert judge.compare_orders(["q"], ["good"], ["bad"]) == [(pytest.approx(0.8), pytest.approx(0.7))]
    server.set("500")
    assert judge.compare(["q"], ["good"], ["bad"]) == [None]
    assert judge.stats()["failures"] == 1
    judge.close()


def test_generate_mode_parses_the_text(server, judge_cfg):
    server.set("500", fail_first=1)
    verdicts, stats = _score(judge_cfg.model_copy(update={"mode": "generate"}))
    assert all(v.scores == {"helpfulness": 3.0, "correctness": 3.0} and v.missing == 0 for v in verdicts)
    assert verdicts[0].confidence == {"helpfulness": None, "correctness": None}
    assert stats["retries"] == 8


def test_chat_only_server_is_used_through_chat_completions(server, judge_cfg):
    server.set("none", chat_only=True)
    verdicts, _ = _score(judge_cfg)
    assert all(v.scores["helpfulness"] == pytest.approx(2.75) for v in verdicts)


def test_guards_decide_degenerate_answers_over_http_too(server, judge_cfg):
    """judge.guards holds for the HTTP judge in expected mode as for the local one: an empty answer and a loop get
    every dimension's worst score with the reason, and no request is sent for them."""
    server.set("none")
    judge = HttpJudge(judge_cfg)
    try:
        out = judge.score(["What is 2+2?"] * 3, ["", "four four four four four four four four four", "4"])
        stats = judge.stats()
    finally:
        judge.close()
    assert stats["requests"] == len(DIMS)  # only the real answer was asked about
    for j, kind in zip(out, ("empty", "repetition")):
        assert j.reward == 0.0 and j.missing == 0
        assert all(r.startswith(f"guard {kind}") for r in j.rationale.values())
    assert out[2].reward > 0 and not out[2].rationale


def test_cache_answers_repeats_without_requests(server, judge_cfg):
    server.set("none")
    judge = HttpJudge(judge_cfg.model_copy(update={"cache": True}))
    first = judge.score(["q"], ["r"])
    judge.stats()
    again = judge.score(["q"], ["r"])
    assert again[0].scores == first[0].scores
    assert judge.stats() == {"requests": 0.0, "failures": 0.0, "retries": 0.0, "cache_hits": 2.0}
    judge.close()


def test_key_is_sent_as_bearer_and_never_shown(server, judge_cfg, monkeypatch, caplog):
    server.set("none")
    with caplog.at_level(logging.DEBUG):
        verdicts, _ = _score(judge_cfg)  # the server refuses requests without the key
        assert verdicts[0].missing == 0
        judge = HttpJudge(judge_cfg)
        shown = [repr(judge), repr(judge.client), repr(judge_cfg), str(judge_cfg.model_dump()),
                 dump_config(Config(judge=judge_cfg))]
        judge.close()
        wrong = "sk-wrong-key-that-the-server-echoes"
        monkeypatch.setenv(KEY_ENV, wrong)
        verdicts, stats = _score(judge_cfg)  # 401 bodies echo the header: the judge must redact what it logs
    assert verdicts[0].missing == 2 and stats["retries"] == 0  # a 401 is not worth retrying
    assert "401" in caplog.text and "***" in caplog.text
    for text in shown + [caplog.text]:
        assert KEY not in text and wrong not in text


def test_named_but_unset_key_env_is_a_config_error(judge_cfg, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ConfigError, match=KEY_ENV):
        HttpJudge(judge_cfg)


# --- serve-judge on Ray Serve with the real packaged gemma judge --------------------------------------

TOKEN_ENV = "XRLHF_TEST_SERVE_TOKEN"
TOKEN = "serve-token-9876"
REAL_PAIRS = [("What is the capital of France?", "The capital of France is Paris."),
              ("What is the capital of France?", "I like turtles."),
              ("Write a haiku about rain.", "Soft rain on the roof / the garden drinks in silence / puddles hold sky"),
              ("Explain what a CPU does.", "cpu")]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served():
    """(config, base url) of serve-judge running the packaged gemma judge on 127.0.0.1 with a bearer token."""
    import os

    from xrlhf.judge.serve import start_judge_server, stop_judge_server

    os.environ[TOKEN_ENV] = TOKEN
    cfg = Config.model_validate({
        "judge": {"model": "packaged", "dimensions": DIMS,
                  "serve": {"host": "127.0.0.1", "port": _free_port(), "auth_token_env": TOKEN_ENV}},
        "resources": {"num_cpus": 2, "judge": {"num_cpus": 0.5, "torch_threads": 1}}})
    t0 = time.perf_counter()
    url = start_judge_server(cfg, blocking=False)
    print(f"serve-judge up in {time.perf_counter() - t0:.1f} s at {url}")
    yield cfg, url
    stop_judge_server()
    del os.environ[TOKEN_ENV]


@pytest.mark.slow
def test_serve_judge_requires_the_bearer_token(served):
    _, url = served
    root = url.removesuffix("/v1")
    body = {"prompt": "Score (0-4): ", "max_tokens": 1, "temperature": 0, "logprobs": 5}
    assert httpx.get(f"{root}/health").status_code == 200
    assert httpx.get(f"{url}/models").status_code == 401
    assert httpx.post(f"{url}/completions", json=body).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert httpx.post(f"{url}/completions", json=body, headers=wrong).status_code == 401
    ok = httpx.post(f"{url}/completions", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert ok.status_code == 200
    top = ok.json()["choices"][0]["logprobs"]["top_logprobs"][0]
    assert len(top) == 5 and all(isinstance(v, float) for v in top.values())


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["likelihood", "expected"])
def test_http_scores_agree_with_the_local_judge(served, mode):
    """serve-judge (the packaged gemma) over HTTP against the local judge: likelihood mode from the echoed prompt
    log-probs (the server tokenises each text whole, the local judge in parts), expected mode from the score cue."""
    import torch

    from xrlhf.judge.hf import HFJudge

    cfg, url = served
    http = HttpJudgeConfig(base_url=url, api_key_env=TOKEN_ENV, tokenizer="packaged", timeout_s=120, max_retries=1)
    local_cfg = cfg.judge.model_copy(update={"mode": mode})
    remote = HttpJudge(local_cfg.model_copy(update={"backend": "http", "http": http}))
    prompts, responses = [p for p, _ in REAL_PAIRS], [r for _, r in REAL_PAIRS]
    t0 = time.perf_counter()
    over_http = remote.score(prompts, responses)
    t1 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on two shared cores only spin against each other
    try:
        local = HFJudge(local_cfg, "packaged", None).score(prompts, responses)
    finally:
        torch.set_num_threads(threads)
    print(f"http {t1 - t0:.1f} s, local {time.perf_counter() - t1:.1f} s for {len(REAL_PAIRS)} pairs")
    assert remote.stats()["failures"] == 0
    remote.close()
    for h, lo in zip(over_http, local):
        assert h.missing == lo.missing == 0
        for dim in DIMS:
            assert h.scores[dim] == pytest.approx(lo.scores[dim], abs=0.05)
            assert h.confidence[dim] == pytest.approx(lo.confidence[dim], abs=0.05)


@pytest.mark.slow
def test_one_expected_mode_over_the_local_model_and_over_serve_judge(served):
    """The two backends share one mode implementation: each builds modes.ExpectedMode over its own source (the local
    model's, serve-judge's), and the one class, asked the same items over either source, gives the same scores and
    confidences and a rationale from each source's continuations."""
    from xrlhf.judge.hf import HFJudge
    from xrlhf.judge.modes import ExpectedMode

    cfg, url = served
    http = HttpJudgeConfig(base_url=url, api_key_env=TOKEN_ENV, tokenizer="packaged", timeout_s=120, max_retries=1)
    local_cfg = cfg.judge.model_copy(update={"mode": "expected"})
    local, remote = HFJudge(local_cfg, "packaged", None), HttpJudge(local_cfg.model_copy(update={"backend": "http",
                                                                                                 "http": http}))
    try:
        assert type(local.mode) is type(remote.mode) is ExpectedMode
        remote.client.wait_ready()
        items = [(local.inputs.clip(p), local.inputs.clip(r), d) for p, r in REAL_PAIRS[:2]
                 for d in local.rubric.dimensions]
        over_http = ExpectedMode(local.inputs, remote.source, remote.source).verdicts(items, rationale=True)
        over_local = ExpectedMode(local.inputs, local.mode.scores, local.mode.generation).verdicts(items, rationale=True)
    finally:
        remote.close()
    for h, lo in zip(over_http, over_local):
        assert h.score == pytest.approx(lo.score, abs=0.05) and h.confidence == pytest.approx(lo.confidence, abs=0.05)
        assert h.rationale and lo.rationale


@pytest.mark.slow
def test_serve_judge_under_bounded_load(served):
    _, url = served
    headers = {"Authorization": f"Bearer {TOKEN}"}
    threads, per_thread = 4, 10

    def client(t: int) -> list[int]:
        with httpx.Client(headers=headers, timeout=120) as c:
            return [c.post(f"{url}/completions", json={"prompt": f"Request {t}-{i}. Score (0-4): ", "max_tokens": 1,
                                                       "temperature": 0, "logprobs": 5}).status_code
                    for i in range(per_thread)]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        codes = [code for batch in pool.map(client, range(threads)) for code in batch]
    elapsed = time.perf_counter() - t0
    print(f"serve-judge load: {len(codes)} requests from {threads} threads in {elapsed:.1f} s "
          f"= {len(codes) / elapsed:.1f} requests/s")
    assert codes == [200] * threads * per_thread


class ModelServer(StubCompletionsServer):
    """/v1/completions on 127.0.0.1 computed by the tiny model (xrlhf/judge/completions.py), echo as vLLM serves it.

    echo=False plays a server that ignores the echo field (an OpenAI-style API without prompt log-probs);
    chat_only answers /completions with 404; spelled_offsets counts text_offset over the tokens' spellings, BOS
    spelled "<bos>", as vLLM does (its offsets then run ahead of the echoed text)."""

    def __init__(self, echo: bool = True, chat_only: bool = False, spelled_offsets: bool = False) -> None:
        from xrlhf.policy.models import build_tiny_model

        self.model, self.tokenizer = build_tiny_model()
        self.echo, self.chat_only, self.spelled_offsets, self.bodies = echo, chat_only, spelled_offsets, []
        super().__init__()

    def respond(self, path: str, body: dict, auth: str) -> tuple[int, bytes]:
        from xrlhf.judge.completions import CompletionJob, complete_batch

        with self.lock:
            self.bodies.append(body)
            if self.chat_only and not path.endswith("/chat/completions"):
                return 404, b'{"error": "not found"}'
            job = CompletionJob(body["prompt"], body.get("max_tokens", 16), body.get("temperature", 1.0),
                                body.get("logprobs"), echo=self.echo and bool(body.get("echo")))
            choice = complete_batch(self.model, self.tokenizer, [job])[0]
        if self.spelled_offsets and job.echo:
            # a BOS first (the tiny tokenizer adds none); the generated token spelled as decoded ("<unk>"), which
            # the echoed text leaves out as vLLM's leaves out a special token
            lp, starts = choice["logprobs"], choice["logprobs"]["text_offset"]
            spelled = [choice["text"][a:b] for a, b in zip(starts, starts[1:])] + lp["tokens"][-1:]
            lp.update(tokens=["<bos>", *spelled], token_logprobs=[None, *lp["token_logprobs"]],
                      top_logprobs=[None, *lp["top_logprobs"]])
            lp["text_offset"] = [sum(len(t) for t in lp["tokens"][:k]) for k in range(len(lp["tokens"]))]
        return 200, json.dumps({"choices": [{"index": 0, **choice}]}).encode()


LIKELY = [("What is 2+2?", "2+2 is 4."), ("Name a colour.", "Blue is a colour."), ("Say hi.", ""),
          ("Name a colour.", "red red red red red red red red red")]
LIKELY_DIMS = {**DIMS, "coherence": {"definition": "Clear.", "signal": "fit"}}


def _likelihood_cfg(url: str, **extra) -> JudgeConfig:
    http = HttpJudgeConfig(base_url=url, timeout_s=30, max_retries=1, backoff_s=0.01, max_backoff_s=0.05,
                           concurrency=4)
    return JudgeConfig(backend="http", mode="likelihood", dimensions=LIKELY_DIMS, http=http, cache=False,
                       rationale=True, **extra)


@pytest.mark.parametrize("offsets", ["in the text", "spelled as vLLM"])
def test_likelihood_over_http_reads_echoed_prompt_logprobs_as_the_local_judge_does(offsets):
    """A real server on 127.0.0.1 returning prompt log-probs (echo=true, logprobs=1): the HTTP judge's likelihood
    scores are the local judge's on the same (tiny) model, whether text_offset indexes the echoed text or counts
    the tokens' spellings from "<bos>" as vLLM's does; guards and the empty answer as there; compare is
    order-free."""
    from xrlhf.judge.hf import HFJudge

    srv = ModelServer(spelled_offsets=offsets == "spelled as vLLM")
    judge = HttpJudge(_likelihood_cfg(srv.url))
    try:
        remote = judge.score([p for p, _ in LIKELY], [r for _, r in LIKELY])
        local = HFJudge(JudgeConfig(model="tiny", cache=False, rationale=True, dimensions=LIKELY_DIMS), "tiny") \
            .score([p for p, _ in LIKELY], [r for _, r in LIKELY])
        for r, lo in zip(remote, local):
            assert r.scores.keys() == lo.scores.keys() and r.missing == 0
            for name in r.scores:
                assert r.scores[name] == pytest.approx(lo.scores[name], abs=1e-4), name
                assert r.rationale[name].split()[0] == lo.rationale[name].split()[0]
        assert remote[0].rationale["helpfulness"].startswith("relevance ")
        assert remote[2].reward == 0.0 and "empty" in remote[2].rationale["helpfulness"]
        assert remote[3].rationale["coherence"].startswith("guard repetition")
        sent = srv.bodies[0]
        assert sent["echo"] is True and sent["logprobs"] == 1 and sent["max_tokens"] == 1
        # 2 samples with text x (helpfulness, correctness share nothing: relevance adds the text without question)
        assert judge.stats()["requests"] == len(srv.bodies) == 4
        ab = judge.compare(["Name a colour."] * 2, ["Blue is a colour.", "Blue."], ["Blue.", "Blue is a colour."])
        ba = judge.compare(["Name a colour."] * 2, ["Blue.", "Blue is a colour."], ["Blue is a colour.", "Blue."])
        assert all(x is not None and x + y == pytest.approx(1.0) for x, y in zip(ab, ba)) and ab[0] != 0.5
    finally:
        judge.close()
        srv.close()


def test_the_local_model_and_a_server_of_it_are_one_source_to_the_modes():
    """Expected and generate mode are one class each over a source: the local tiny model's (hf.LocalJudgeModel) and
    a real server's of the same model (http.ServerSource) give the same score-digit log-probs up to each input's
    constant (the local one normalises over the digits; expected_score renormalises) where the server's top 20 has
    them, and the same greedy continuations, and both judges build the same mode classes."""
    from xrlhf.judge.hf import HFJudge
    from xrlhf.judge.modes import ExpectedMode, GenerateMode

    srv = ModelServer()
    local_cfg = JudgeConfig(model="tiny", mode="expected", cache=False, guards=False, dimensions=DIMS)
    http = HttpJudgeConfig(base_url=srv.url, model="tiny", tokenizer="tiny", timeout_s=30, max_retries=0)
    local = HFJudge(local_cfg, "tiny")
    remote = HttpJudge(local_cfg.model_copy(update={"backend": "http", "http": http}))
    try:
        for mode, cls in (("expected", ExpectedMode), ("generate", GenerateMode)):
            both = [HFJudge(local_cfg.model_copy(update={"mode": mode}), "tiny"),
                    HttpJudge(local_cfg.model_copy(update={"backend": "http", "http": http, "mode": mode}))]
            assert [type(j.mode) for j in both] == [cls, cls]
            both[1].close()
        texts = [local.inputs.render(p, r, d) for p, r in PAIRS[:2] for d in local.rubric.dimensions]
        near = [lp for group in local.mode.scores.next_token_logprobs([texts]) for lp in group]
        far = [lp for group in remote.source.next_token_logprobs([texts]) for lp in group]
        for lo, h in zip(near, far):
            shared = sorted(set(lo) & set(h))
            assert len(shared) > 1
            assert [h[t] - h[shared[0]] for t in shared] == pytest.approx([lo[t] - lo[shared[0]] for t in shared],
                                                                          abs=1e-3)
        requests = [(t, "") for t in texts] + [(texts[0], "3\nReason:")]
        assert remote.source.continuations(requests, 6, 0.0) == local.mode.generation.continuations(requests, 6, 0.0)
    finally:
        remote.close()
        srv.close()


@pytest.mark.parametrize("kind", ["ignores echo", "chat only"])
def test_likelihood_over_http_without_prompt_logprobs_is_a_clear_error(kind):
    from xrlhf.judge.openai_client import PromptLogprobsUnavailable

    srv = ModelServer(echo=kind != "ignores echo", chat_only=kind == "chat only")
    judge = HttpJudge(_likelihood_cfg(srv.url))
    try:
        with pytest.raises(PromptLogprobsUnavailable, match="needs the prompt's token log-probabilities") as err:
            judge.score(["What is 2+2?"], ["2+2 is 4."])
        assert srv.url in str(err.value) and "judge.mode=expected" in str(err.value)
        prompts = [b["prompt"] for b in srv.bodies]
        assert len(prompts) == len(set(prompts)) <= 2  # no text asked twice: retrying cannot help
    finally:
        judge.close()
        srv.close()


class VllmRefusals(StubCompletionsServer):
    """Answers every completion as vLLM refuses a request it cannot serve: an unknown model (404 naming it), or
    more top log-probs than its --max-logprobs (400)."""

    def respond(self, path: str, body: dict, auth: str) -> tuple[int, bytes]:
        if body["model"] != "gemma":
            message, kind, param, code = f"The model `{body['model']}` does not exist.", "NotFoundError", "model", 404
        else:
            message = f"Requested sample logprobs of {body.get('logprobs')}, which is greater than max allowed: 5"
            kind, param, code = "BadRequestError", "logprobs", 400
        return code, json.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}}).encode()


@pytest.mark.parametrize("mode", ["expected", "likelihood"])
def test_a_model_the_server_does_not_serve_and_a_logprobs_limit_are_clear_errors(mode):
    """What every request would hit alike stops the judge with ServerMismatch, naming the setting, never None
    scores; a 404 naming the model is not taken for a chat-only server."""
    from xrlhf.judge.openai_client import ServerMismatch

    srv = VllmRefusals()
    http = HttpJudgeConfig(base_url=srv.url, model="judge", max_retries=1, backoff_s=0.01, max_backoff_s=0.05)
    cfg = JudgeConfig(backend="http", mode=mode, dimensions=DIMS, http=http, cache=False)
    wrong_model, limited = HttpJudge(cfg), HttpJudge(cfg.model_copy(update={"http": http.model_copy(
        update={"model": "gemma"})}))
    try:
        with pytest.raises(ServerMismatch, match="judge.http.model='judge' is not served"):
            wrong_model.score(["What is 2+2?"], ["4"])
        assert not wrong_model.client._chat
        if mode == "expected":  # likelihood's echo asks logprobs=1, under any limit
            with pytest.raises(ServerMismatch, match="judge.http.top_logprobs=20.*max allowed: 5"):
                limited.score(["What is 2+2?"], ["4"])
    finally:
        wrong_model.close()
        limited.close()
        srv.close()


def test_a_server_that_never_comes_up_is_a_clear_error_after_ready_timeout():
    from xrlhf.judge.openai_client import ServerNotReady

    url = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    http = HttpJudgeConfig(base_url=url, ready_timeout_s=1.0)
    judge = HttpJudge(JudgeConfig(backend="http", dimensions=DIMS, http=http))
    t0 = time.perf_counter()
    try:
        with pytest.raises(ServerNotReady, match=rf"no judge server answered at {url} within "
                                                 r"judge.http.ready_timeout_s=1 s \(last: ConnectError\)"):
            judge.score(["q"], ["r"])
    finally:
        judge.close()
    assert 1.0 <= time.perf_counter() - t0 < 10
