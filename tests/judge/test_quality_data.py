"""The judge-quality data (xrlhf/judge/quality.jsonl) and its loader's validation: fast, no model."""
from __future__ import annotations

import difflib
import json
from pathlib import Path

import pytest

from xrlhf.judge import quality
from xrlhf.judge.quality import KEYS, load_quality

# The packaged set holds a few one-line arithmetic answers ("Half of 250 is 125.", 5 words); the floor is theirs.
MIN_GOOD_WORDS, MAX_GOOD_WORDS = 4, 80


@pytest.fixture(scope="module")
def rows():
    return load_quality()


def test_the_default_is_the_packaged_file_and_it_is_large_enough(rows):
    assert quality.PATH == Path(quality.__file__).with_name("quality.jsonl") and quality.PATH.is_file()
    assert rows == load_quality(quality.PATH)
    assert len(rows) >= 64
    assert all(set(r) >= set(KEYS) for r in rows)


def test_ids_and_prompts_are_unique(rows):
    assert len({r["id"] for r in rows}) == len(rows)
    prompts = [r["prompt"].strip().lower() for r in rows]
    assert len(set(prompts)) == len(prompts), [p for p in prompts if prompts.count(p) > 1]


def test_a_factual_error_is_a_small_edit_of_its_good_answer(rows):
    far = [(r["id"], round(ratio, 2)) for r in rows
           if not 0.6 <= (ratio := difflib.SequenceMatcher(None, r["good"], r["factual_error"]).ratio()) < 1.0]
    assert not far, far


def test_good_answers_are_short_answers(rows):
    odd = [(r["id"], n) for r in rows if not MIN_GOOD_WORDS <= (n := len(r["good"].split())) <= MAX_GOOD_WORDS]
    assert not odd, odd


def test_padding_adds_words_without_repeating_the_answer(rows):
    for r in rows:
        assert len(r["filler"].split()) >= 10, r["id"]
        assert r["filler"] not in r["good"], r["id"]


def _write(path: Path, *rows: dict | str) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_the_loader_names_the_line_and_the_problem(tmp_path, rows):
    first, second = rows[0], rows[1]
    f = tmp_path / "q.jsonl"
    no_filler = {k: v for k, v in second.items() if k != "filler"}
    with pytest.raises(ValueError, match=r"line 2 lacks a non-empty filler"):
        load_quality(_write(f, first, no_filler))
    with pytest.raises(ValueError, match=r"line 2 lacks a non-empty prompt"):
        load_quality(_write(f, first, {**second, "prompt": "  "}))
    with pytest.raises(ValueError, match=r"line 3 repeats the id"):
        load_quality(_write(f, first, second, {**second, "prompt": "Another question?"}))
    with pytest.raises(ValueError, match=r"line 2 .*factual_error is the good answer unchanged"):
        load_quality(_write(f, first, {**second, "factual_error": second["good"]}))
    with pytest.raises(ValueError, match=r"line 1 is not JSON"):
        load_quality(_write(f, "{not json", first))
    assert load_quality(_write(f, first, "", second)) == [first, second]  # blank lines are skipped


@pytest.fixture(scope="module", params=["quality", "holdout"])
def either(request):
    return load_quality(quality.PATH if request.param == "quality" else quality.HOLDOUT)


def test_the_holdout_is_other_prompts_with_the_same_keys():
    main, held = load_quality(), load_quality(quality.HOLDOUT)
    assert len(held) >= 30 and not {r["id"] for r in main} & {r["id"] for r in held}
    assert not {r["prompt"].lower() for r in main} & {r["prompt"].lower() for r in held}
    assert sum(":" in r["prompt"] for r in held) >= 10  # instructions followed by an input text


def test_level_rewrites_are_rewrites_not_copies(either):
    """terse: a fragment of 1-4 words that is not the good answer's start (that is the cut-off corruption);
    simple and technical: the same content in their own words, never five words in a row of the answer or prompt."""
    from xrlhf.judge.guards import quoted

    for r in either:
        assert 1 <= len(r["terse"].split()) <= 4 and not r["good"].lower().startswith(r["terse"].rstrip(".").lower())
        for kind in ("simple", "technical"):
            assert not quoted(r["good"], r[kind]) and not quoted(r["prompt"], r[kind]), (r["id"], kind)


def test_every_dimension_has_corruptions_aimed_at_it_and_the_study_hacks_are_in_the_set(either):
    items = quality.pairs(either)
    assert {it["target"] for it in items} == {"helpfulness", "correctness", "coherence", "complexity", "verbosity"}
    assert {"quoted_nonanswer", "near_copy", "truncated", "generic", "terse", "padded", "simple", "technical"} \
        <= {it["corruption"] for it in items}
    for it in items:
        if it["corruption"] == "quoted_nonanswer":
            assert it["prompt"].strip() in it["bad"]
        if it["corruption"] == "near_copy":  # the prompt's opening, cut before its end
            assert it["prompt"].lower().startswith(it["bad"].lower()) and it["bad"] != it["prompt"]
