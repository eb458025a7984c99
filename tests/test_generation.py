"""generation.sample: behaviour log-probs exact against a second forward pass; the inverse-CDF draw follows the
distribution and its truncations."""
import pytest
import torch

from xrlhf.ops import gather_logprobs
from xrlhf.policy import generation
from xrlhf.policy.generation import draw, draw_from, sample
from xrlhf.policy.models import build_tiny_model

PROMPTS = ["Say something.", "Name a fruit.", "Count: 1 2 3"]


def test_draw_follows_the_distribution():
    torch.manual_seed(0)
    probs = torch.tensor([[0.1, 0.2, 0.0, 0.7]]).repeat(40000, 1)
    tokens = draw(probs.log()).squeeze(-1)
    freq = torch.bincount(tokens, minlength=4).float() / len(tokens)
    assert torch.allclose(freq, probs[0], atol=0.01), freq
    assert freq[2] == 0  # a zero-probability token is never drawn


def test_draw_truncates_to_top_k_and_top_p():
    torch.manual_seed(0)
    probs = torch.tensor([[0.05, 0.15, 0.3, 0.5]]).repeat(20000, 1)
    k2 = torch.bincount(draw(probs.log(), top_k=2).squeeze(-1), minlength=4).float() / 20000
    assert k2[:2].sum() == 0 and abs(k2[3] - 0.5 / 0.8) < 0.015
    # nucleus 0.6: 0.5 alone is below it, so 0.5 and 0.3 are kept, renormalised
    p6 = torch.bincount(draw(probs.log(), top_p=0.6).squeeze(-1), minlength=4).float() / 20000
    assert p6[:2].sum() == 0 and abs(p6[3] - 0.5 / 0.8) < 0.015


@pytest.mark.parametrize("temperature, min_new_tokens", [(1.0, 1), (0.7, 1), (1.0, 10)])
def test_behaviour_logprobs_equal_a_forward_pass(temperature, min_new_tokens):
    """pi's log-probs at the temperature, also while stops are held back for min_new_tokens (they are masked
    for the draw, not for the recorded log-prob)."""
    model, tok = build_tiny_model()
    exp = sample(model, tok, PROMPTS, 2, 10, temperature=temperature, seed=3, min_new_tokens=min_new_tokens)
    with torch.no_grad():
        logits = model(input_ids=exp.input_ids, attention_mask=exp.attention_mask).logits.float()
    R = exp.response_mask.shape[1]
    P = exp.input_ids.shape[1] - R
    ref = gather_logprobs(logits[:, P - 1:-1] / temperature, exp.input_ids[:, P:])  # [B, R]
    m = exp.response_mask.bool()
    assert m[:, :min_new_tokens].all()  # every response has at least min_new_tokens tokens
    assert torch.allclose(exp.behaviour_logprobs[m], ref[m], atol=2e-4), (exp.behaviour_logprobs[m] - ref[m]).abs().max()


def test_same_seed_same_samples_and_greedy_is_argmax():
    model, tok = build_tiny_model()
    a = sample(model, tok, PROMPTS, 2, 8, seed=5)
    b = sample(model, tok, PROMPTS, 2, 8, seed=5)
    assert torch.equal(a.input_ids, b.input_ids) and a.responses == b.responses
    g = sample(model, tok, PROMPTS, 1, 8, temperature=0.0)
    with torch.no_grad():
        logits = model(input_ids=g.input_ids, attention_mask=g.attention_mask).logits
    R = g.response_mask.shape[1]
    P = g.input_ids.shape[1] - R
    chosen = logits[:, P - 1:-1].argmax(-1)
    m = g.response_mask.bool()
    assert torch.equal(chosen[m], g.input_ids[:, P:][m])


@pytest.mark.parametrize("lora", [False, True])
def test_shared_prompt_cache_samples_what_the_full_prompt_pass_samples(lora):
    """Each prompt encoded once and its cache copied to its samples: the same tokens and log-probs as running the
    prompt for every sample, and generate's first pass feeds one token per row instead of the whole prompt."""
    model, tok = build_tiny_model()
    if lora:
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    widths = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, i, o: widths.append(tuple(i[0].shape)))
    prompts = PROMPTS + ["A much longer prompt, so that the others are left-padded: one two three four five."]
    shared = sample(model, tok, prompts, 3, 9, seed=7, min_new_tokens=2)
    shared_widths, widths[:] = list(widths), []
    full = sample(model, tok, prompts, 3, 9, seed=7, min_new_tokens=2, share_prompts=False)
    hook.remove()
    P = full.input_ids.shape[1] - full.response_mask.shape[1]
    assert widths[0] == (12, P)  # the unshared first pass: every row's whole prompt
    assert shared_widths[0] == (4, P - 1) and shared_widths[1] == (12, 1)  # once per prompt, then one token per row
    assert torch.equal(shared.input_ids, full.input_ids) and shared.responses == full.responses
    assert torch.equal(shared.response_mask, full.response_mask)
    assert torch.allclose(shared.behaviour_logprobs, full.behaviour_logprobs, atol=1e-5)


def test_inverse_cdf_over_a_large_vocabulary_follows_the_distribution_and_skips_zeros():
    """The two-level search (blocks of the vocabulary): frequencies match, truncated entries never come out, also
    when the mass sits in the first or the last block, and for a vocabulary that is not a whole number of blocks."""
    torch.manual_seed(0)
    V = 262144 + 77
    probs = torch.zeros(4, V)
    probs[0, [5, 70000, V - 1]] = torch.tensor([0.2, 0.3, 0.5])  # first block, a middle one, the padded last one
    probs[1, :3] = torch.tensor([0.6, 0.4, 0.0])
    probs[2] = 1.0 / V
    probs[3, V - 3:] = torch.tensor([0.0, 1.0, 0.0])
    counts = torch.zeros(4, V)
    for _ in range(500):
        tokens = draw_from(probs)
        counts.scatter_add_(-1, tokens, torch.ones_like(tokens, dtype=torch.float))
    freq = counts / 500
    assert (counts[probs == 0] == 0).all()  # a zero-probability entry is never drawn
    assert torch.allclose(freq[0, [5, 70000, V - 1]], torch.tensor([0.2, 0.3, 0.5]), atol=0.07)
    assert abs(freq[1, 0] - 0.6) < 0.07 and freq[3, V - 2] == 1.0
    assert (counts[2] > 0).sum() > 490  # the uniform row spreads over the whole vocabulary


@pytest.mark.parametrize("kernel", sorted(generation.LINEAR_KERNELS))
def test_every_linear_kernel_samples_what_the_plain_model_samples(monkeypatch, kernel):
    """Whichever product tuned_linears picks, sampling draws the same tokens with the same log-probs as the model's
    own layers (the products agree to float rounding), every linear layer's decode steps go through it, and the
    layers' own forwards are back afterwards."""
    model, tok = build_tiny_model()
    monkeypatch.setattr(generation, "_kernel_choice", {})
    monkeypatch.setattr(generation, "linear_kernel", lambda rows, w: kernel)
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear]
    with torch.no_grad():  # the kernels run only where no gradient is taken (sampling)
        for m in (linears[0], model.get_output_embeddings()):
            x = torch.randn(3, m.weight.shape[1])
            assert torch.allclose(generation.LINEAR_KERNELS[kernel](x, m.weight), m(x), atol=1e-5)
    prompts = ["Name a colour.", "Count to three:"]
    plain = sample(model, tok, prompts, 3, 6, seed=4, tune_linears=False)
    calls = []
    chosen = generation.LINEAR_KERNELS[kernel]
    monkeypatch.setitem(generation.LINEAR_KERNELS, kernel,
                        lambda x, w: calls.append((x.shape[0], id(w))) or chosen(x, w))
    tuned = sample(model, tok, prompts, 3, 6, seed=4)
    decode_calls = {id(m.weight): sum(c == (6, id(m.weight)) for c in calls) for m in linears}
    assert set(decode_calls.values()) == {6}, decode_calls  # each layer, once per decode step of the 6 rows
    head = id(model.get_output_embeddings().weight)
    assert (6, head) in calls and not [c for c in calls if c[1] == head and c[0] != 6]  # the prompt pass: NO_LOGITS
    assert torch.equal(plain.input_ids, tuned.input_ids)
    assert torch.allclose(plain.behaviour_logprobs, tuned.behaviour_logprobs, atol=1e-5)
    assert not [m for m in linears if "forward" in m.__dict__]


def test_linear_kernel_is_measured_once_per_shape_and_leaves_the_rng_alone(monkeypatch):
    monkeypatch.setattr(generation, "_kernel_choice", {})
    monkeypatch.setattr(generation, "_packed_weights", {})  # other tests' live models keep theirs in the real one
    w = torch.randn(3000, 16, requires_grad=True)  # as a model's weights are
    small = torch.randn(8, 16, requires_grad=True)  # fewer output rows than the call has input rows (a LoRA factor)
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    first = generation.linear_kernel(4, w)
    assert generation.linear_kernel(12, small) in generation.LINEAR_KERNELS
    assert torch.equal(torch.rand(1), expected)  # no draw from the global RNG
    assert first in generation.LINEAR_KERNELS
    assert list(generation._kernel_choice) == [(4, 3000, 16, torch.float32), (12, 8, 16, torch.float32)]
    assert not generation._packed_weights  # copies packed to measure are not kept
    monkeypatch.setattr(generation, "LINEAR_KERNELS", {})  # a second call must not measure again
    assert generation.linear_kernel(4, w) == first


@pytest.mark.skipif("onednn_packed" not in generation.LINEAR_KERNELS, reason="torch built without oneDNN packing")
def test_packed_weight_is_kept_until_the_weight_changes_or_goes():
    """The packed copy is made once and reused; an in-place write (a weight sync's copy_) packs again, so the
    product follows the new values; when the weight is freed its copy goes too."""
    w = torch.nn.Parameter(torch.randn(300, 32))
    x = torch.randn(5, 32)
    with torch.no_grad():
        first = generation.packed_weight(w)
        assert generation.packed_weight(w) is first
        assert torch.allclose(generation._onednn_packed(x, w), x @ w.t(), atol=1e-5)
        w.copy_(torch.randn(300, 32))
        assert generation.packed_weight(w) is not first
        assert torch.allclose(generation._onednn_packed(x, w), x @ w.t(), atol=1e-5)
    key = id(w)
    assert key in generation._packed_weights
    del w
    assert key not in generation._packed_weights


@pytest.mark.skipif("onednn_packed" not in generation.LINEAR_KERNELS, reason="torch built without oneDNN packing")
def test_packed_lora_follows_a_weight_sync(monkeypatch):
    """A rollout model whose every layer runs packed samples what the plain model samples after the learner's
    adapter weights are loaded into it (load_trainable_state writes in place: the packed factors are packed again)."""
    from xrlhf.config import LoraConfig, ModelConfig
    from xrlhf.policy.models import load_policy, load_trainable_state, trainable_state

    cfg = ModelConfig(name="tiny", lora=LoraConfig(enabled=True, r=4, alpha=8, dropout=0.0))
    model, tok = load_policy(cfg, trainable=False)
    learner, _ = load_policy(cfg)
    with torch.no_grad():
        for p in learner.parameters():
            if p.requires_grad:
                p.add_(0.5 * torch.randn_like(p))
    monkeypatch.setattr(generation, "linear_kernel", lambda rows, w: "onednn_packed")
    prompts = ["Name a colour.", "Count to three:"]
    sample(model, tok, prompts, 2, 5, seed=1)  # packs every layer, the adapter's factors as they are now
    load_trainable_state(model, trainable_state(learner))
    tuned = sample(model, tok, prompts, 2, 5, seed=1)
    plain = sample(model, tok, prompts, 2, 5, seed=1, tune_linears=False)
    assert torch.equal(plain.input_ids, tuned.input_ids)
    assert torch.allclose(plain.behaviour_logprobs, tuned.behaviour_logprobs, atol=1e-5)


def test_tuned_linears_in_passes_without_gradient_and_never_with_one(monkeypatch):
    """A scoring pass of many rows (the reference's, the judge's) under tuned_linears gives the plain pass's
    log-probs through the measured kernels; a pass that takes a gradient never goes through them and its gradients
    are the plain ones exactly; enabled=False installs nothing, and an inner context leaves the outer one's."""
    from xrlhf.config import LoraConfig, ModelConfig
    from xrlhf.ops import response_logprobs
    from xrlhf.policy.models import load_policy

    model, _ = load_policy(ModelConfig(name="tiny", lora=LoraConfig(enabled=True, r=4, alpha=8, dropout=0.0)))
    ids = torch.randint(5, 100, (8, 24), generator=torch.Generator().manual_seed(0))
    att = torch.ones_like(ids)
    calls = []
    for name, kernel in list(generation.LINEAR_KERNELS.items()):
        monkeypatch.setitem(generation.LINEAR_KERNELS, name,
                            lambda x, w, kernel=kernel: calls.append(x.shape[0]) or kernel(x, w))
    with torch.no_grad():
        plain = response_logprobs(model, ids, att, 8, share_prompts=False).logprobs
        with generation.tuned_linears(model):
            tuned = response_logprobs(model, ids, att, 8, share_prompts=False).logprobs
    assert calls and max(calls) > generation.TUNED_ROWS  # the many-row path was taken
    assert torch.allclose(plain, tuned, atol=1e-5)

    def grads() -> list[torch.Tensor]:
        model.zero_grad()
        response_logprobs(model, ids, att, 8, share_prompts=False).logprobs.sum().backward()
        return [p.grad.clone() for p in model.parameters() if p.requires_grad]

    expected = grads()
    calls.clear()
    with generation.tuned_linears(model):
        got = grads()
    assert not calls and all(torch.equal(a, b) for a, b in zip(expected, got))

    linears = [m for m in model.modules() if type(m) is torch.nn.Linear]
    with generation.tuned_linears(model, enabled=False):
        assert not [m for m in linears if "forward" in m.__dict__]
    with generation.tuned_linears(model):
        with generation.tuned_linears(model):
            pass
        assert all("forward" in m.__dict__ for m in linears)
    assert not [m for m in linears if "forward" in m.__dict__]


def test_stop_texts_end_each_response_at_the_token_that_completes_one():
    """rollout.stop: a response ends at the first token that completes a stop text, that token kept as its last,
    the text before the stop returned; the recorded log-probs stay pi's. Without the stop texts the same prompts
    write on past such tokens."""
    model, tok = build_tiny_model()
    stops = list("aeiou0123456789")
    free = sample(model, tok, PROMPTS, 4, 12, seed=3)
    assert any(any(s in r[:-1] for s in stops) for r in free.responses)  # the stop would change something
    exp = sample(model, tok, PROMPTS, 4, 12, seed=3, stop=stops)
    R = exp.response_mask.shape[1]
    P = exp.input_ids.shape[1] - R

    def text(ids: list[int]) -> str:
        return tok.decode(ids, skip_special_tokens=True)  # the random model samples "<pad>", which holds an "a"

    ended = 0
    for ids, m, answer in zip(exp.input_ids[:, P:], exp.response_mask, exp.responses):
        kept = ids[m.bool()].tolist()
        assert not any(s in text(kept[:-1]) for s in stops)  # nothing before the last token completes a stop
        ended += any(s in text(kept) for s in stops)
        assert not any(s in answer for s in stops) and text(kept).strip().startswith(answer)
    assert ended >= len(exp.responses) // 2  # most responses stopped before 12 tokens with these stops
    with torch.no_grad():
        logits = model(input_ids=exp.input_ids, attention_mask=exp.attention_mask).logits.float()
    ref = gather_logprobs(logits[:, P - 1:-1], exp.input_ids[:, P:])
    m = exp.response_mask.bool()
    assert torch.allclose(exp.behaviour_logprobs[m], ref[m], atol=2e-4)


@pytest.mark.slow
def test_a_stop_text_spelled_over_several_gemma_tokens_ends_the_response_at_its_last_token():
    """The study's stops on gemma: "User:" is three tokens; the blank line one. The mask ends at the token that
    completes the first stop, the answer is the text before it, and gemma's samples stop in either place."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from xrlhf.policy.models import packaged_model_dir

    tok = AutoTokenizer.from_pretrained(packaged_model_dir())
    stops = ["\n\n", "User:"]
    ids = tok.encode("Paris is the capital.\nUser: and Rome?\n\nNo.", add_special_tokens=False)
    row = torch.tensor([ids])
    mask, texts = generation.cut_at_stop_texts(tok, row, torch.ones_like(row), stops)
    end = int(mask.sum())
    assert tok.decode(ids[:end]).endswith("User:") and texts == ["Paris is the capital."]
    model = AutoModelForCausalLM.from_pretrained(packaged_model_dir(), dtype=torch.float32)
    prompts = ["Why is the sky blue?", "Name three fruits.", "Write a haiku about rain.", "What is 2 + 2?"]
    exp = sample(model, tok, prompts, 2, 48, seed=0, stop=stops)
    R = exp.response_mask.shape[1]
    stopped = 0
    for row_ids, m, text in zip(exp.input_ids[:, -R:], exp.response_mask, exp.responses):
        kept = row_ids[m.bool()].tolist()
        assert not any(s in tok.decode(kept[:-1]) for s in stops) and not any(s in text for s in stops)
        stopped += any(s in tok.decode(kept) for s in stops)
    assert stopped >= 1 and exp.lengths() != [48] * len(exp.responses)


def test_held_out_evaluation_answers_stop_where_training_samples_stop():
    """xrlhf eval / compare's greedy answers read rollout.stop as the rollout actor does: the same texts, cut at
    the same token (a study whose training samples stop at a blank line must be evaluated on answers that do)."""
    from xrlhf.config import load_config
    from xrlhf.evaluate import _generate

    stops = [":"]  # the random tiny model's greedy answers are runs of ':'
    cfg = load_config("configs/tiny.yaml", ["rollout.stop=[':']", "eval.max_new_tokens=12"])
    model, tok = build_tiny_model()
    texts, lengths = _generate(model, tok, PROMPTS, cfg)
    want = sample(model, tok, PROMPTS, 1, 12, temperature=cfg.eval.temperature, seed=cfg.seed, stop=stops)
    assert texts == want.responses and lengths == want.lengths()
    free = sample(model, tok, PROMPTS, 1, 12, temperature=cfg.eval.temperature, seed=cfg.seed)
    assert free.lengths() == [12] * 3 and lengths == [1] * 3 and texts == [""] * 3
