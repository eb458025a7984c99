"""Likelihood mode (xrlhf/judge/likelihood.py), the guards (guards.py) and the judge-quality set (quality.py).

Mechanics on the tiny offline model; what the packaged gemma judge measures on the quality set is in the slow
tests at the end (and bench/judge_quality.py)."""
import json
import math

import pytest
import torch

from xrlhf.config import ConfigError, JudgeConfig, load_config
from xrlhf.judge import guards
from xrlhf.judge.hf import HFJudge
from xrlhf.judge import measures
from xrlhf.judge.likelihood import (CALIBRATION, DEFAULT_INSTRUCTION, ENDING_WEIGHT, END, Signal, Tail,
                                     read, signal_for, with_question)
from xrlhf.judge.quality import HACKS, TARGETS, accuracy, corruptions, load_quality, pairs
from xrlhf.judge.rubric import Dimension
from xrlhf.judge.scoring import PrefixCache, grouped_tail_logprobs, tail_logprobs
from xrlhf.policy.models import build_tiny_model

DIMS = {"helpfulness": {"definition": "Does what was asked."}, "correctness": {"definition": "Right facts."}}


def _plain_tail(model, seq, k):
    with torch.no_grad():
        logits = model(torch.tensor([seq])).logits[0].float()
    return torch.log_softmax(logits[-k - 1:-1], -1).gather(-1, torch.tensor(seq[-k:])[:, None]).squeeze(-1)


@pytest.mark.parametrize("with_head", [False, True])
def test_tail_logprobs_equal_a_plain_forward(with_head):
    model, _ = build_tiny_model()
    head = PrefixCache([5, 6, 7, 8, 9, 10])
    seqs = [head.ids + [11, 12, 13, 14], head.ids + [20, 21, 22, 23, 24, 25, 26], head.ids + [30, 31]]
    tails = [3, 4, 1]
    got = tail_logprobs(model, seqs, tails, max_rows=2, head=head if with_head else None)
    for s, k, lp in zip(seqs, tails, got):
        assert lp.shape == (k,) and torch.allclose(lp, _plain_tail(model, s, k), atol=1e-5)


@pytest.mark.parametrize("with_head", [False, True])
def test_grouped_tail_logprobs_equal_a_plain_forward_and_run_each_prefix_once(with_head):
    """Tails scored after a shared prefix get the log-probs of their own unpacked sequence (a tail never sees
    another), in order, across chunks; each prefix's tokens go through the model once, not once per tail."""
    model, _ = build_tiny_model()
    head = PrefixCache([5, 6, 7, 8, 9, 10])
    groups = [(head.ids + [11, 12, 13, 14, 15, 16], [[20, 21, 22], [23], [24, 25, 26, 27, 28]]),
              (head.ids + [30], [[31, 32]]),
              (head.ids + [40, 41, 42, 43, 44, 45, 46, 47], [[50, 51], [52, 53, 54, 55]])]
    widths = []
    hook = model.model.register_forward_pre_hook(lambda m, a, kw: widths.append(kw["input_ids"].numel()),
                                                 with_kwargs=True)
    got = grouped_tail_logprobs(model, groups, max_rows=3, head=head if with_head else None)
    hook.remove()
    assert [len(g) for g in got] == [3, 1, 2]
    for (prefix, tails), lps in zip(groups, got):
        for t, lp in zip(tails, lps):
            assert lp.shape == (len(t),) and torch.allclose(lp, _plain_tail(model, prefix + t, len(t)), atol=1e-5)
    root = len(head.ids) if with_head else 0
    real = sum(len(p) - root + sum(len(t) for t in tails) for p, tails in groups)  # each prefix once
    unshared = sum(len(p) - root + len(t) for p, tails in groups for t in tails)
    calls = widths[1:] if with_head else widths  # with a head, the first call computes its cache
    assert sum(calls) < unshared and len(calls) == 2  # max_rows=3 tails: [1 + 2] and [3] after sorting
    assert sum(calls) >= real


@pytest.mark.parametrize("cap", [None, 3.0])
def test_target_logprobs_in_blocks_equal_a_full_log_softmax(monkeypatch, cap):
    """Rows and vocabulary in blocks smaller than both (tiny's vocabulary is ~100), with and without soft-capping."""
    from xrlhf.judge import scoring

    model, _ = build_tiny_model()
    monkeypatch.setattr(scoring, "VOCAB_BLOCK", 7)
    monkeypatch.setattr(scoring, "ROW_BLOCK", 3)
    monkeypatch.setattr(model.config, "final_logit_softcapping", cap, raising=False)
    hidden = torch.randn(10, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    targets = torch.randint(0, model.config.vocab_size, (10,), generator=torch.Generator().manual_seed(1))
    logits = model.get_output_embeddings()(hidden).float()
    if cap:
        logits = torch.tanh(logits / cap) * cap
    want = torch.log_softmax(logits, -1).gather(-1, targets[:, None]).squeeze(-1)
    with torch.no_grad():
        assert torch.allclose(scoring.target_logprobs(model, hidden, targets), want, atol=1e-5)


def test_signal_maps_onto_the_range_and_mirrors_direction_lower():
    sig = Signal("fit", -2.0, 0.5)
    hi, lo = Dimension("a", "x", lo=0, hi=4), Dimension("b", "x", direction="lower", lo=1, hi=5)
    assert sig.score(-2.0, hi) == pytest.approx((2.0, 0.0))
    s1, c1 = sig.score(-1.0, hi)
    s2, _ = sig.score(-3.0, hi)
    assert s2 < 2.0 < s1 < 4.0 and 0 < c1 < 1
    mirrored, _ = sig.score(-1.0, lo)  # a direction=lower dimension normalises back to the same quality
    assert (mirrored - 1) / 4 == pytest.approx(1 - (s1 - 0) / 4)
    assert signal_for("helpfulness", None).kind == "relevance" and signal_for("other", None).kind == "fit"
    assert signal_for("helpfulness", "fit").centre == CALIBRATION["fit"][0]


def test_likelihood_judge_reads_each_dimension_s_own_signal_from_the_model():
    """Scores on tiny: 'fit' is the mean log-prob of the response's tokens given the question; 'relevance' the mean
    of that minus the one without the question, plus ENDING_WEIGHT times the log-prob of the blank line that ends it;
    'fluency' the mean without the question plus the same weight on its ending there; each through its calibration.
    The text measures need no model. An empty response gets the worst score with its reason; compare is
    order-free."""
    cfg = JudgeConfig(model="tiny", cache=False, rationale=True, guards=False,
                      dimensions={**DIMS, "coherence": {"definition": "Clear.", "signal": "fluency"},
                                  "verbosity": {"definition": "Detail.", "signal": "length"}})
    assert cfg.mode == "likelihood"
    judge = HFJudge(cfg, "tiny")
    tok, model = judge.tokenizer, judge.model
    prompt, response = "Name a colour.", "Red is a colour."
    j = judge.score([prompt], [response])[0]
    head = tok(DEFAULT_INSTRUCTION)["input_ids"]
    tail = tok(" " + response + END, add_special_tokens=False)["input_ids"]
    n_end = len(tail) - len(tok(" " + response, add_special_tokens=False)["input_ids"])
    assert n_end >= 1
    cond = _plain_tail(model, head + tok(with_question(prompt), add_special_tokens=False)["input_ids"] + tail, len(tail))
    plain = _plain_tail(model, head + tok("Answer:", add_special_tokens=False)["input_ids"] + tail, len(tail))
    body, end = slice(0, len(tail) - n_end), slice(len(tail) - n_end, None)
    scored = {"correctness": ("fit", cond[body].mean().item()),
              "helpfulness": ("relevance", (cond - plain)[body].mean().item() + ENDING_WEIGHT * cond[end].sum().item()),
              "coherence": ("fluency", plain[body].mean().item() + ENDING_WEIGHT * plain[end].sum().item())}
    for dim, (kind, raw) in scored.items():
        d = judge.rubric.dimension(dim)
        assert j.scores[dim] == pytest.approx(Signal(kind, *CALIBRATION[kind]).score(raw, d)[0], abs=1e-4), dim
        assert j.rationale[dim].startswith(f"{kind} ")
    quality, why = measures.length(prompt, response)
    assert j.scores["verbosity"] == pytest.approx(4 * quality) and j.confidence["verbosity"] == 1.0
    assert j.rationale["verbosity"] == f"length: {why}"
    empty = judge.score([prompt], ["  "])[0]
    assert set(empty.scores.values()) == {0.0} and empty.reward == 0.0
    assert "no token to score" in empty.rationale["helpfulness"]
    ab = judge.compare([prompt, prompt], ["Red is a colour.", "Blue."], ["Blue.", "Red is a colour."])
    ba = judge.compare([prompt, prompt], ["Blue.", "Red is a colour."], ["Red is a colour.", "Blue."])
    assert all(x is not None and abs(x + y - 1.0) < 1e-6 for x, y in zip(ab, ba))  # rows packed in another order


def test_a_dimension_asks_only_the_passes_its_signal_reads():
    """fit reads the tail after the question, fluency the one without it: a rubric of both asks each once per sample;
    a rubric of text measures asks nothing."""
    judge = HFJudge(JudgeConfig(model="tiny", cache=False, guards=False, dimensions={
        "correctness": {"definition": "x", "signal": "fit"}}), "tiny")
    asked = []
    real = judge.mode.source.tails
    judge.mode.source.tails = lambda requests: asked.extend(requests) or real(requests)
    judge.score(["Q one?", "Q two?"], ["An answer.", "Another answer."])
    assert [c for _, c, _ in asked] == [with_question("Q one?"), with_question("Q two?")]
    text_only = HFJudge(JudgeConfig(model="tiny", cache=False, dimensions={
        "verbosity": {"definition": "x", "signal": "length"}, "complexity": {"definition": "y", "signal": "level"}}),
        "tiny")
    text_only.mode.source.tails = lambda requests: pytest.fail("a text measure asked the model")
    plain = "The capital of Australia is Canberra, a city built as a compromise between two others."
    assert text_only.score(["Q?"], [plain])[0].reward == 1.0


def _tail(text: str, lps: list[float]) -> Tail:
    """A Tail of whitespace-split pieces of text (each piece one token, its leading space included)."""
    spans, at = [], 0
    for piece in text.replace("\n\n", " \n\n").split(" ")[1:]:
        start = text.index(piece, at) - (1 if piece != "\n\n" else 0)
        spans.append((start, start + len(piece) + (1 if piece != "\n\n" else 0)))
        at = spans[-1][1]
    assert len(spans) == len(lps)
    return Tail(tuple(lps), tuple(spans))


def test_quoted_words_earn_no_relevance_and_the_rationale_says_so():
    """Relevance sums each token's log p(with question) - log p(without) over the response, the tokens of a run of
    five or more words copied from the prompt counting zero, divided by all of the response's tokens."""
    prompt = "Please give me the key point of this email in one line: the office will close early on Friday."
    response = "Key point: the office will close early on Friday."
    text = " " + response + END
    words = response.split()
    asked = _tail(text, [-1.0] * len(words) + [-0.5])
    unasked = _tail(text, [-3.0] * len(words) + [-2.0])
    r = read(prompt, response, asked, unasked)
    copied = len("the office will close early on Friday.".split())
    assert r.relevance == pytest.approx(2.0 * (len(words) - copied) / len(words))
    assert r.fit == pytest.approx(-1.0) and r.fluency == pytest.approx(-3.0)
    assert r.ending == pytest.approx(-0.5) and r.plain_ending == pytest.approx(-2.0)
    assert r.quoted == pytest.approx(copied / len(words))
    unquoted = read("Summarise the memo.", response, asked, unasked)
    assert unquoted.relevance == pytest.approx(2.0) and unquoted.quoted == 0.0
    judge = HFJudge(JudgeConfig(model="tiny", cache=False, rationale=True, guards=False), "tiny")
    j = judge.score([prompt], [response])[0]
    assert f"{copied / len(words):.0%} of its words quoted from the prompt: no relevance credit" \
        in j.rationale["helpfulness"]


def test_text_measures_by_hand():
    assert measures.syllables("banana") == 3 and measures.syllables("make") == 1 and measures.syllables("table") == 2
    # 0.39 * 4 words / 1 sentence + 11.8 * 5 syllables / 4 words - 15.59
    assert measures.grade("The cat sat quietly.") == pytest.approx(0.39 * 4 + 11.8 * 5 / 4 - 15.59)
    lo, hi = measures.LENGTH_BAND
    assert measures.length("Q?", " ".join(["word"] * lo))[0] == 1.0
    assert measures.length("Q?", " ".join(["word"] * hi * 2))[0] == pytest.approx(1 - 1 / measures.FALLOFF_ABOVE)
    assert measures.length("Q?", " ".join(["word"] * (lo // 2)))[0] \
        == pytest.approx(1 - math.log2(lo / (lo // 2)) / measures.FALLOFF_BELOW)
    assert measures.length("Answer in one line: Q?", " ".join(["word"] * 35))[0] < 1.0  # the question's own cue
    assert measures.level("Q?", "Paris.") == (1.0, "1 words: too short to grade")
    plain = "The capital of Australia is Canberra, a city built as a compromise between two others."
    jargon = ("Canberra constitutes the de jure seat of Commonwealth governance, a purpose-built administrative "
              "enclave sited as a geopolitical compromise between metropolitan conurbations.")
    childish = "Guess what? It is Canberra! Yay! Two big towns could not pick. So they made a new one!"
    assert measures.level("Q?", plain)[0] == 1.0 > measures.level("Q?", jargon)[0]
    assert measures.level("Q?", childish)[0] < 1.0


def test_mode_defaults_by_backend_and_likelihood_needs_log_probabilities():
    assert JudgeConfig().mode == "likelihood"
    assert JudgeConfig(backend="http").mode == "expected"
    assert load_config("configs/quickstart.yaml", ["judge.backend=http", "judge.mode=likelihood"]).judge.mode \
        == "likelihood"  # from a server that echoes prompt log-probs (tests/judge/test_http.py)
    with pytest.raises(ConfigError, match="judge.backend"):  # no backend the registry cannot build
        load_config("configs/quickstart.yaml", ["judge.backend=vllm"])
    with pytest.raises(ConfigError, match="judge.demonstrations=true applies to judge.mode=expected"):
        load_config("configs/quickstart.yaml", ["judge.demonstrations=true"])


def test_guards_fire_on_degenerate_answers_only():
    assert guards.check("Q?", "")[0] == "empty"
    assert guards.check("What is 2+2?", "four four four four four four four four four")[0] == "repetition"
    assert guards.check("What is the capital of Japan?", "What is the capital of Japan?")[0] == "prompt_copy"
    assert guards.check("What is the square root of 81?", "The square root of 81 is 9.") is None  # restates, answers
    rows = load_quality()
    fired = [(r["id"], guards.check(r["prompt"], a)) for r in rows for a in (r["good"], r["factual_error"])]
    assert not [f for f in fired if f[1]], [f for f in fired if f[1]]  # no good (or merely wrong) answer is guarded
    built = [corruptions(rows, i) for i in range(len(rows))]
    for kind in ("empty", "repetition", "prompt_copy"):
        caught = sum(guards.check(r["prompt"], c[kind]) is not None for r, c in zip(rows, built))
        assert caught == len(rows), kind


def test_a_guard_gives_the_worst_score_with_its_reason():
    judge = HFJudge(JudgeConfig(model="tiny", cache=False, dimensions={**DIMS, "brevity": {
        "definition": "Short.", "direction": "lower", "min_score": 1, "max_score": 5}}), "tiny")
    j = judge.score(["What is 2+2?"], ["four four four four four four four four four"])[0]
    assert j.scores == {"helpfulness": 0.0, "correctness": 0.0, "brevity": 5.0} and j.reward == 0.0
    assert all(r.startswith("guard repetition: repetition loop") for r in j.rationale.values())
    assert judge.stats()["requests"] == 0  # every dimension set by the guard: the model is not asked


def test_quality_set_is_well_formed_and_its_loader_names_bad_lines(tmp_path):
    rows = load_quality()
    assert len(rows) >= 60 and len({r["prompt"] for r in rows}) == len(rows)
    for r in rows:
        assert 4 <= len(r["good"].split()) <= 80 and r["factual_error"] != r["good"]
    items = pairs(rows)
    assert len(items) == len(rows) * len(TARGETS) and set(HACKS) <= set(TARGETS)
    assert pairs(rows) == items  # deterministic
    bad = tmp_path / "q.jsonl"
    good_line = json.dumps(rows[0])
    bad.write_text(good_line + "\n" + json.dumps({**rows[1], "filler": ""}) + "\n")
    with pytest.raises(ValueError, match="line 2 lacks a non-empty filler"):
        load_quality(bad)
    bad.write_text(good_line + "\n" + good_line + "\n")
    with pytest.raises(ValueError, match="line 2 repeats the id"):
        load_quality(bad)
    assert accuracy([1.0, 0.5, None, 0.2], [0.5, 0.5, 0.1, None]) == pytest.approx((1 + 0.5 + 0 + 1) / 4)


@pytest.fixture(scope="module")
def packaged_on_the_quality_set():
    """The default judge (packaged gemma, likelihood mode, guards) on every good answer and the corruptions the
    tests below read: the hacks on all prompts (the guarded ones need no forward pass), an answer to another prompt
    and a refusal on the first 24 (the whole set's figures are bench/judge_quality.py's)."""
    judge = HFJudge(JudgeConfig(model="packaged", cache=False), "packaged")
    kinds = (*HACKS, "off_topic", "refusal")
    ids = [r["id"] for r in load_quality()]
    items = [it for it in pairs(load_quality()) if it["corruption"] in HACKS
             or it["corruption"] in kinds and it["id"] in ids[:24]]
    texts = sorted({(it["prompt"], a) for it in items for a in (it["good"], it["bad"])})
    judged = dict(zip(texts, judge.score([p for p, _ in texts], [a for _, a in texts])))
    return {k: [(judged[(it["prompt"], it["good"])], judged[(it["prompt"], it["bad"])], it["target"])
                for it in items if it["corruption"] == k] for k in kinds}


@pytest.mark.slow
@pytest.mark.parametrize("hack", HACKS)
def test_hacks_score_below_the_good_answer(packaged_on_the_quality_set, hack):
    """A loop, the prompt copied back or its opening cut short, an empty answer, padding, the question quoted in a
    non-answer, a generic answer, a cut-off sentence: below the good answer's reward and on the dimension each
    targets on at least 85% of the quality set's prompts in the default mode (issue 23 asks 80%; measured
    0.88-1.00, the cut-off sentence lowest, bench/results/judge_quality.json)."""
    rows = packaged_on_the_quality_set[hack]
    acc = accuracy([g.reward for g, _, _ in rows], [b.reward for _, b, _ in rows])
    target = rows[0][2]
    on_target = accuracy([g.normalised[target] for g, _, _ in rows], [b.normalised[target] for _, b, _ in rows])
    assert acc >= 0.85 and on_target >= 0.85, (hack, acc, on_target)


@pytest.mark.parametrize("path", ["quality", "holdout"])
def test_text_measures_rank_the_good_answer_above_their_corruptions(path):
    """Complexity and verbosity need no model: the reading level ranks the childish and the technical rewrite below
    the good answer, the length the padded answer and the curt fragment, on both sets (no model, all prompts)."""
    from xrlhf.judge.quality import HOLDOUT

    items = pairs(load_quality(HOLDOUT if path == "holdout" else None))
    floors = {"simple": ("level", 0.8), "technical": ("level", 0.8), "padded": ("length", 0.95),
              "terse": ("length", 0.95)}
    for kind, (measure, floor) in floors.items():
        sel = [it for it in items if it["corruption"] == kind]
        f = measures.MEASURES[measure]
        acc = accuracy([f(it["prompt"], it["good"])[0] for it in sel], [f(it["prompt"], it["bad"])[0] for it in sel])
        assert acc >= floor, (path, kind, acc)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["off_topic", "refusal"])
def test_gemma_scores_a_good_answer_above_a_bad_one(packaged_on_the_quality_set, kind):
    """The good answer above an answer to another question and above a refusal, on the reward and on helpfulness,
    for at least 85% of the (first 24) prompts (it was at chance, 0.5, with the expected-mode judge)."""
    rows = packaged_on_the_quality_set[kind]
    assert accuracy([g.reward for g, _, _ in rows], [b.reward for _, b, _ in rows]) >= 0.85
    assert accuracy([g.normalised["helpfulness"] for g, _, _ in rows],
                    [b.normalised["helpfulness"] for _, b, _ in rows]) >= 0.85


def test_each_default_dimension_is_described_by_its_own_signal():
    """describe(): five dimensions, five signals, five different lines; other modes show the definition."""
    from xrlhf.judge import describe

    lines = describe(JudgeConfig())
    kinds = [line.split(":")[0] for line in lines.values()]
    assert list(lines) == ["helpfulness", "correctness", "coherence", "complexity", "verbosity"]
    assert kinds == ["relevance", "fit", "fluency", "level", "length"] and len(set(lines.values())) == 5
    assert all("specificity: " in line for line in lines.values())
    expected = JudgeConfig(mode="expected")
    assert describe(expected) == {n: d.definition for n, d in expected.dimensions.items()}
    rule = JudgeConfig(backend="rule", mode="likelihood")  # no model reads anything: the definitions again
    assert describe(rule) == {n: d.definition for n, d in rule.dimensions.items()}


def test_the_stated_specificity_is_the_committed_measurement():
    """likelihood.SPECIFICITY (shown in every report) against bench/results/judge_quality.json's default row: each
    unguarded corruption kind is listed under the signal of the dimension it moves most, with its share."""
    from pathlib import Path

    from xrlhf.judge.likelihood import DEFAULT_SIGNAL, SPECIFICITY, SPECIFICITY_NOTE

    path = Path(__file__).resolve().parents[2] / "bench" / "results" / "judge_quality.json"
    row = next(r for r in json.loads(path.read_text())["results"] if r["config"] == "likelihood")
    measured: dict[str, dict[str, float]] = {kind: {} for kind in SPECIFICITY}
    for c in row["corruptions"]:
        if c["guarded"] < c["n"]:  # a guarded row moves every dimension to 0 alike
            measured[DEFAULT_SIGNAL[c["most_moved"]]][c["corruption"]] = round(c["dims"][c["most_moved"]], 2)
    assert measured == SPECIFICITY
    # the note on fit: its mean drop for a correct rewrite and for a changed fact, as stated
    drop = {c["corruption"]: round(c["drop"]["correctness"], 2) for c in row["corruptions"]}
    assert drop["simple"] == drop["technical"] == 0.59 and drop["factual_error"] == 0.23
    assert "(mean drop 0.59)" in SPECIFICITY_NOTE["fit"] and "(0.23)" in SPECIFICITY_NOTE["fit"]


def test_no_statistic_of_the_two_passes_reads_correctness_apart_from_register():
    """bench/results/judge_signals.json, as BENCHMARKS.md states it: of the thirteen statistics measured on both sets,
    none ranks the good answer above a changed fact in >= 0.80 of prompts while ranking it above both correct
    rewrites in < 0.80 (the condition for complexity to top their rows), and the default fit is among them."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "results" / "judge_signals.json"
    got = json.loads(path.read_text())
    for name in ("quality", "holdout"):
        rows = {r["candidate"]: r for r in got[name]["rows"]}
        assert len(rows) == 13 and "fit" in rows and rows["fit"]["simple"] == rows["fit"]["technical"] == 1.0
        freeing = [c for c, r in rows.items() if r["factual_error"] >= 0.8 and max(r["simple"], r["technical"]) < 0.8]
        assert freeing == got[name]["freeing"] == [], (name, freeing)
    # the register contrasts the judge's docstring cites: none ranks both rewrites two-sided above the reading grade
    ce = {r["contrast"]: r for r in got["quality"]["register"]}["child - expert"]
    assert [round(ce[k], 2) for k in ("simple above good", "technical below good", "two-sided simple",
                                       "two-sided technical")] == [0.97, 0.62, 0.82, 0.38]
    assert all(r["two-sided simple"] < 0.83 or r["two-sided technical"] < 0.86 for r in got["quality"]["register"])
