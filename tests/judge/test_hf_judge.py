"""HFJudge on the tiny random model: prefix sharing is exact, expected mode, cache, missing scores, compare."""
import pytest
import torch

from xrlhf.config import JudgeConfig
from xrlhf.judge.hf import HFJudge
from xrlhf.judge.rubric import Dimension, expected_score
from xrlhf.judge.scoring import PrefixCache, common_prefix_length, last_logprobs, shared_prefix_logprobs
from xrlhf.judge.template import TEMPLATES, encode, render_dimension, truncate_response
from xrlhf.policy.models import build_tiny_model

# A short template for the slow paths (generate mode): it opens with the prompt, so no prefix is common to all rows.
SHORT = "Prompt: {prompt}\nResponse: {response}\nRate {dimension}: {definition}\nScore ({lo}-{hi}):"
DIMS = [Dimension("helpfulness", "Does what was asked."), Dimension("correctness", "Facts are right."),
        Dimension("coherence", "Clear and ordered."), Dimension("complexity", "Needs expertise."),
        Dimension("verbosity", "Says a lot relative to the request, perhaps far too much.")]


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_model()


def _groups(tok, template, pairs, dims_per_sample):
    return [[encode(tok, render_dimension(template, p, r, d, rubric=tuple(DIMS)), "0") for d in DIMS[:n]]
            for (p, r), n in zip(pairs, dims_per_sample)]


@pytest.mark.parametrize("template", [TEMPLATES["rubric_first"], TEMPLATES["per_dimension"], SHORT],
                         ids=["rubric_first", "per_dimension", "short"])
def test_shared_prefix_logprobs_equal_plain_left_padded_batches(tiny, template):
    model, tok = tiny
    pairs = [("What is 2+2?", "4"), ("Name a colour, any colour you like.", "Blue, like the sky on a clear day."),
             ("Say hi.", "Hi! " * 12), ("Why?", "Because.")]
    groups = _groups(tok, template, pairs, [5, 2, 3, 1])  # ragged: 5, 2, 3 and 1 dimensions
    lengths = {len(s) for g in groups for s in g}
    assert len(lengths) >= 6  # samples and dimension lines of different lengths
    vocab = torch.arange(model.config.vocab_size)  # the whole distribution, not only the digits
    shared = torch.cat(shared_prefix_logprobs(model, groups, vocab))  # [11, V]
    plain = last_logprobs(model, [s for g in groups for s in g], tok.pad_token_id, vocab)  # [11, V]
    assert shared.shape == plain.shape == (11, model.config.vocab_size)
    assert torch.allclose(shared, plain, atol=1e-4), (shared - plain).abs().max()
    # and each row equals an unpadded single-sequence pass
    alone = torch.cat([last_logprobs(model, [s], tok.pad_token_id, vocab) for s in (groups[1][1], groups[3][0])])
    assert torch.allclose(shared[[6, 10]], alone, atol=1e-4)
    # chunks of at most 4 rows on a cached head give the same rows; so do answer tokens renormalised among themselves
    digits = torch.tensor([tok.convert_tokens_to_ids(str(v)) for v in range(5)])
    head = PrefixCache(groups[0][0][:common_prefix_length([s for g in groups for s in g])])
    for call in range(2):  # the second call reuses the head's cache, unchanged by the first
        chunked = torch.cat(shared_prefix_logprobs(model, groups, digits, max_rows=4, head=head))  # [11, 5]
        assert torch.allclose(chunked, torch.log_softmax(plain[:, digits], -1), atol=1e-4)
        if call == 0:
            kept = head.get(model)
            assert kept.get_seq_length() == len(head.ids)
    assert head.get(model) is kept and kept.get_seq_length() == len(head.ids)


def _judge(**cfg):
    # these tests are about expected/generate mode and the model's own verdicts; likelihood and guards have theirs
    cfg.setdefault("mode", "expected")
    cfg.setdefault("guards", False)
    cfg = {"dimensions": {d.name: {"definition": d.definition} for d in DIMS}, **cfg}
    return HFJudge(JudgeConfig(**cfg), "tiny")


@pytest.mark.parametrize("template, demonstrations", [(None, False), ("per_dimension", False), ("rubric_first", True)],
                         ids=["default", "per_dimension", "rubric_first+demonstrations"])
def test_expected_mode_scores_in_range_with_confidence_and_match_plain_logprobs(template, demonstrations):
    judge = _judge(template=template, demonstrations=demonstrations, dimensions={**{d.name: {"definition": d.definition} for d in DIMS},
                               "verbosity": {"definition": DIMS[4].definition, "direction": "lower"}},
                   aggregation="mean", cache=False)
    prompts = ["expected: What is 2+2?", "expected: Name a colour.", "expected: Say hi."]
    responses = ["4", "Blue, like the sky on a clear day.", "Hi!"]
    out = judge.score(prompts, responses)
    assert judge.stats()["requests"] == 15
    for j in out:
        assert j.missing == 0 and set(j.scores) == {d.name for d in DIMS}
        for name, s in j.scores.items():
            assert 0.0 <= s <= 4.0 and 0.0 <= j.confidence[name] <= 1.0
            want = 1 - s / 4 if name == "verbosity" else s / 4
            assert j.normalised[name] == pytest.approx(want)
        assert j.reward == pytest.approx(sum(j.normalised.values()) / 5)
    # the judge's prefix-shared scores equal expected_score over a plain pass on the same judge inputs
    model, tok = judge.model, judge.tokenizer
    digits = torch.tensor(list(judge.digit_ids.values()))
    for p, r, j in zip(prompts, responses, out):
        seqs = [encode(tok, render_dimension(judge.template, p, r, d, judge.labels, judge.rubric.dimensions,
                                             judge.demonstrations), "0")
                for d in judge.rubric.dimensions]
        assert ("Examples of scored responses" in tok.decode(seqs[0])) == demonstrations
        assert judge._head.ids == seqs[0][:len(judge._head.ids)]  # the demonstrations are in the cached prefix
        for d, lp in zip(judge.rubric.dimensions, last_logprobs(model, seqs, tok.pad_token_id, digits).tolist()):
            score, confidence = expected_score(dict(zip(judge.digit_ids, lp)), d.lo, d.hi)
            assert j.scores[d.name] == pytest.approx(score, abs=1e-4)
            assert j.confidence[d.name] == pytest.approx(confidence, abs=1e-4)
    # batches that split the samples differently give the same scores
    small = _judge(template=template, demonstrations=demonstrations, batch_size=2, cache=False, aggregation="mean",
                   dimensions={**{d.name: {"definition": d.definition} for d in DIMS},
                               "verbosity": {"definition": DIMS[4].definition, "direction": "lower"}})
    for a, b in zip(out, small.score(prompts, responses)):
        assert b.scores == pytest.approx(a.scores, abs=1e-4)


def test_cache_second_identical_call_makes_no_requests():
    judge = _judge(template=SHORT)
    prompts, responses = ["cache: What is 2+2?", "cache: Say hi."], ["4", "Hi!"]
    first = judge.score(prompts, responses)
    assert judge.stats() == {"requests": 10.0, "failures": 0.0, "retries": 0.0, "cache_hits": 0.0}
    second = judge.score(prompts, responses)
    assert judge.stats() == {"requests": 0.0, "failures": 0.0, "retries": 0.0, "cache_hits": 10.0}
    assert [j.scores for j in second] == [j.scores for j in first]
    assert [j.confidence for j in second] == [j.confidence for j in first]
    # a duplicate row inside one call and a new pair: only the new pair's 5 dimensions are computed
    third = judge.score(prompts + ["cache: Why?"], responses[:1] + ["Hi!", "Because."])
    assert judge.stats()["requests"] == 5 and third[1].scores == first[1].scores
    dup = judge.score(["cache: dup"] * 3, ["same"] * 3)
    assert judge.stats()["requests"] == 5 and dup[0].scores == dup[2].scores
    # without the cache everything is computed again, with the same result
    uncached = _judge(template=SHORT, cache=False)
    again = uncached.score(prompts, responses)
    assert [j.scores.keys() for j in again] == [j.scores.keys() for j in first]
    for a, b in zip(again, first):  # the same scores per dimension, to float tolerance
        assert a.scores == pytest.approx(b.scores)
    assert uncached.stats()["requests"] == 10


@pytest.mark.parametrize("policy", ["drop", "reweight"])
def test_generate_garbage_is_counted_missing_never_zero(policy):
    # The random tiny model greedily answers with spaces: no score parses, nothing is retried.
    judge = _judge(mode="generate", template=SHORT, generate_retries=0, missing_policy=policy)
    prompts, responses = [f"garbage {policy}: What is 2+2?", f"garbage {policy}: Say hi."], ["4", "Hi!"]
    for _ in range(2):  # failures are not cached: the second call asks again
        out = judge.score(prompts, responses)
        assert judge.stats() == {"requests": 10.0, "failures": 10.0, "retries": 0.0, "cache_hits": 0.0}
        for j in out:
            assert j.missing == 5 and set(j.scores.values()) == {None} and set(j.normalised.values()) == {None}
            assert j.reward is None  # no score at all: None under both policies, never 0


def test_generate_retries_then_policy_decides():
    """Sampled retries rescue some answers; what stays missing is counted and handled by the policy."""
    prompts = [f"retry: {p}" for p in ("What is 2+2?", "Name a colour.", "Say hi.", "Why is the sky blue?")]
    responses = ["4", "Blue, like the sky on a clear day.", "Hi!", "Rayleigh scattering."]
    runs = {}
    for policy in ("reweight", "drop"):
        judge = _judge(mode="generate", template=SHORT, generate_retries=2, missing_policy=policy, cache=False)
        torch.manual_seed(1234)  # the retries sample; same seed, same answers under both policies
        runs[policy] = (judge.score(prompts, responses), judge.stats())
    (rew, rew_stats), (drop, drop_stats) = runs["reweight"], runs["drop"]
    assert [j.scores for j in rew] == [j.scores for j in drop]
    missing = sum(j.missing for j in rew)
    assert rew_stats["failures"] == missing == drop_stats["failures"]
    assert rew_stats["retries"] >= 20 - sum(j.missing == 0 for j in rew) * 5  # every greedy failure was retried
    assert 0 < missing < 20 and any(0 < j.missing < 5 for j in rew)  # some parsed, some did not
    for r, d in zip(rew, drop):
        present = [v for v in r.normalised.values() if v is not None]
        assert r.missing == 5 - len(present)
        assert all(0 <= v <= 1 for v in present) and all(s == int(s) for s in r.scores.values() if s is not None)
        # reweight: the mean of what parsed (equal weights), None if nothing did; drop: None if anything failed
        assert r.reward == (pytest.approx(sum(present) / len(present)) if present else None)
        assert d.reward == (pytest.approx(r.reward) if r.missing == 0 else None)
        if r.missing and present:  # a missing score is not a 0: the reward is above the zero-filled mean
            assert r.reward > sum(present) / 5 or sum(present) == 0


def test_compare_is_symmetric_in_the_two_orders():
    judge = _judge(template=SHORT)
    prompts = ["compare: What is 2+2?", "compare: Name a colour.", "compare: Say hi."]
    a, b = ["4", "Blue.", "Hi there, how are you?"], ["five", "I like trains a lot.", "No."]
    ab, ba = judge.compare(prompts, a, b), judge.compare(prompts, b, a)
    assert judge.stats()["requests"] == 6
    for x, y in zip(ab, ba):
        assert 0.0 <= x <= 1.0 and x == pytest.approx(1.0 - y, abs=1e-6)
    assert judge.compare(prompts[:1], a[:1], a[:1]) == pytest.approx([0.5], abs=1e-6)  # a tie with itself
    assert judge.compare([], [], []) == [] and judge.score([], []) == []  # nothing to judge is not an error
    # each order's own verdict: compare is their mean, and swapping the pair swaps and complements them
    orders, swapped = judge.compare_orders(prompts, a, b), judge.compare_orders(prompts, b, a)
    for (x1, x2), (y1, y2), mean in zip(orders, swapped, ab):
        assert 0.5 * (x1 + x2) == pytest.approx(mean, abs=1e-6)
        assert (x1, x2) == pytest.approx((1.0 - y2, 1.0 - y1), abs=1e-6)
    assert any(abs(x1 - x2) > 1e-3 for x1, x2 in orders)  # a random model's A/B answer follows position


def test_long_response_is_cut_and_the_rubric_reaches_the_judge():
    judge = _judge(max_response_tokens=64, cache=False)
    long = "Tyres are round. " + "filler " * 300 + "Score: 4"
    clipped = truncate_response(judge.tokenizer, long, 64)
    ids = encode(judge.tokenizer, render_dimension(judge.template, "How?", clipped, DIMS[0], judge.labels,
                                                   judge.rubric.dimensions), "0")
    text = judge.tokenizer.decode(ids, skip_special_tokens=True)
    assert text.rstrip().endswith("Dimension: helpfulness.\nScore (0-4):")
    assert all(f"- {d.name} (0-4): {d.definition}" in text for d in DIMS)
    assert "Score: 4" not in text and "more tokens not shown" in text
    # the judge itself scores the long response as usual (the cut happens inside score())
    (j,) = judge.score(["How?"], [long])
    assert j.missing == 0 and all(0 <= s <= 4 for s in j.scores.values())


def _tiny_gemma(tok, window: int):
    """A random 2-layer Gemma 3 (one sliding-window layer, one full) over the character tokenizer."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=window,
                           layer_types=["sliding_attention", "full_attention"], max_position_embeddings=4096,
                           pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Gemma3ForCausalLM(cfg).eval()


def test_packed_chunks_stay_exact_without_a_root_and_past_a_sliding_window(tiny):
    """Each chunk is one packed call (a row per sample: its prompt and response, then every dimension's
    ending), and it equals unpadded single passes: with no prefix common to all rows, and on a real Gemma 3
    whose sliding window is narrower than the rows, where the masks count positions, not padded slots."""
    model, tok = tiny
    pairs = [("What is 2+2?", "4"), ("Name a colour.", "Blue, like the sky on a clear day."), ("Why?", "Because.")]
    groups = _groups(tok, SHORT, pairs, [3, 2, 4])
    groups[1] = [[tok.bos_token_id + 1] + s for s in groups[1]]  # rows that share no first token with the others
    flat = [s for g in groups for s in g]
    assert common_prefix_length(flat) == 0
    vocab = torch.arange(model.config.vocab_size)
    plain = last_logprobs(model, flat, tok.pad_token_id, vocab)
    assert torch.allclose(torch.cat(shared_prefix_logprobs(model, groups, vocab)), plain, atol=1e-4)
    # a group whose sequences share no token either: its row is endings only, then padding, beside a longer row
    odd = [[tok.bos_token_id + 2, 7, 8], [tok.bos_token_id + 3, 7, 8, 9]]  # a short row: padding follows it
    assert common_prefix_length(odd) == 0
    both = torch.cat(shared_prefix_logprobs(model, [odd, groups[2]], vocab))
    assert torch.allclose(both, last_logprobs(model, odd + groups[2], tok.pad_token_id, vocab), atol=1e-4)
    # ~550-600-token rows under a 400-token window (ignoring the window there is off by ~0.1, measured by
    # removing it), and a 1000-token window wider than every row; sdpa's boolean masks and eager's additive ones.
    groups = _groups(tok, TEMPLATES["per_dimension"], pairs, [3, 2, 4])
    flat = [s for g in groups for s in g]
    assert 400 < min(map(len, flat)) and max(map(len, flat)) < 1000
    for window, attention in ((400, "sdpa"), (400, "eager"), (1000, "sdpa")):
        gemma = _tiny_gemma(tok, window)
        gemma.config._attn_implementation = attention
        alone = torch.cat([last_logprobs(gemma, [s], tok.pad_token_id, vocab) for s in flat])
        calls = _count_calls(gemma)
        shared = torch.cat(shared_prefix_logprobs(gemma, groups, vocab))
        assert torch.allclose(shared, alone, atol=1e-4), (window, attention, (shared - alone).abs().max())
        assert calls == [1, 1]  # the root once, then one call for all three samples' rows
        # one sample alone: its prompt and response are the root, longer than the window, so the sliding
        # layers' cache keeps only the root's last slots and their masks must line up with them
        calls.clear()
        single = torch.cat(shared_prefix_logprobs(gemma, groups[1:2], vocab))
        assert common_prefix_length(groups[1]) > window or window == 1000
        assert torch.allclose(single, alone[3:5], atol=1e-4), (window, attention, (single - alone[3:5]).abs().max())


def _count_calls(model) -> list[int]:
    """Forward calls of the model's decoder from now on, each recorded as 1 (a list, so a test can clear it)."""
    calls: list[int] = []
    model.get_decoder().register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_attention_without_dense_masks_gets_plain_batches(tiny):
    """A kernel that takes no dense mask (flash-attention, flex on GPU) gets each chunk as one plain left-padded
    batch instead of the packed row; here a registered kernel name that forwards to sdpa stands in for one."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    # the kernel and the masks transformers builds for it (with the sliding window) are sdpa's
    AttentionInterface.register("xrlhf_test_no_dense_mask", sdpa_attention_forward)
    AttentionMaskInterface.register("xrlhf_test_no_dense_mask", sdpa_mask)
    _, tok = tiny
    pairs = [("What is 2+2?", "4"), ("Name a colour.", "Blue, like the sky on a clear day."), ("Why?", "Because.")]
    groups = _groups(tok, TEMPLATES["per_dimension"], pairs, [3, 2, 4])
    flat = [s for g in groups for s in g]
    vocab = torch.arange(len(tok))
    gemma = _tiny_gemma(tok, 400)
    alone = torch.cat([last_logprobs(gemma, [s], tok.pad_token_id, vocab) for s in flat])
    gemma.config._attn_implementation = "xrlhf_test_no_dense_mask"
    calls = _count_calls(gemma)
    shared = torch.cat(shared_prefix_logprobs(gemma, groups, vocab, max_rows=4))
    assert torch.allclose(shared, alone, atol=1e-4), (shared - alone).abs().max()
    assert len(calls) == 3  # no root pass; one plain batch per chunk (at most 4 rows: 3, 2 and 4 rows alone)
