import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from xrlhf.ops import (
    entropy_from_logits,
    gather_logprobs,
    masked_mean,
    masked_var,
    masked_whiten,
    response_logprobs,
)


def test_masked_mean_ignores_padding():
    x = torch.tensor([[1.0, 2.0, 100.0], [4.0, 100.0, 100.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # (1 + 2 + 4) / 3
    assert masked_mean(x, mask).item() == pytest.approx(7 / 3)
    # row means: (1 + 2) / 2, 4 / 1
    assert torch.allclose(masked_mean(x, mask, dim=1), torch.tensor([1.5, 4.0]))
    assert masked_mean(x, torch.zeros_like(mask)).item() == 0.0


def test_masked_var_biased_and_unbiased():
    x = torch.tensor([[1.0, 2.0, 100.0], [4.0, 100.0, 100.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # mean 7/3; squared deviations (4/3)², (1/3)², (5/3)² sum to 42/9
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(42 / 9 / 3)
    assert masked_var(x, mask).item() == pytest.approx(42 / 9 / 2)
    assert masked_var(x, torch.tensor([[1, 0, 0], [0, 0, 0]])).item() == 0.0


def test_masked_whiten_uses_only_real_entries():
    x = torch.tensor([[1.0, 3.0, 50.0], [5.0, -7.0, 9.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # real entries 1, 3, 5: mean 3, unbiased var ((-2)² + 0² + 2²) / 2 = 4, std 2
    expected = torch.tensor([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    assert torch.allclose(masked_whiten(x, mask), expected, atol=1e-6)
    # without the shift the mean 3 is added back: (x - 3) / 2 + 3
    expected_unshifted = torch.tensor([[2.0, 3.0, 0.0], [4.0, 0.0, 0.0]])
    assert torch.allclose(masked_whiten(x, mask, shift_mean=False), expected_unshifted, atol=1e-6)


def test_gather_logprobs_hand_computed():
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])  # [1, 2, 3]
    tokens = torch.tensor([[2, 0]])
    # 3 - log(e + e² + e³); uniform over 3 → log(1/3)
    expected = torch.tensor([[3 - math.log(math.e + math.e**2 + math.e**3), math.log(1 / 3)]])
    assert torch.allclose(gather_logprobs(logits, tokens), expected, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 4, 10])
def test_gather_logprobs_matches_log_softmax_with_grad(chunk_size):
    torch.manual_seed(0)
    logits = torch.randn(5, 7, 11, requires_grad=True)
    tokens = torch.randint(0, 11, (5, 7))
    ours = gather_logprobs(logits, tokens, chunk_size=chunk_size)
    ref = torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    assert ours.shape == (5, 7)
    assert torch.allclose(ours, ref, atol=1e-6)
    (grad_ours,) = torch.autograd.grad(ours.sum(), logits)
    (grad_ref,) = torch.autograd.grad(ref.sum(), logits)
    assert torch.allclose(grad_ours, grad_ref, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 3, 4])
def test_entropy_from_logits(chunk_size):
    # uniform over 4 → log 4; one-hot-ish (huge gap) → ~0; [0, log 3] → p = (1/4, 3/4)
    logits = torch.tensor(
        [[[0.0, 0.0, 0.0, 0.0]], [[100.0, 0.0, 0.0, 0.0]], [[0.0, math.log(3), -1e9, -1e9]]]
    )
    expected = torch.tensor([[math.log(4)], [0.0], [-(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]])
    assert torch.allclose(entropy_from_logits(logits, chunk_size=chunk_size), expected, atol=1e-5)
    torch.manual_seed(0)
    logits = torch.randn(5, 3, 9)
    logp = torch.log_softmax(logits, -1)
    assert torch.allclose(entropy_from_logits(logits, chunk_size), -(logp.exp() * logp).sum(-1), atol=1e-6)


@pytest.fixture(scope="module")
def tiny_llama():
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=64,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def _unpadded_logprobs(model, prompt, response):
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits  # [1, T, V]
    P, T = len(prompt), len(prompt) + len(response)
    logp = torch.log_softmax(logits[0, P - 1 : T - 1], -1)  # positions that predict the response
    return logp.gather(-1, torch.tensor(response).unsqueeze(-1)).squeeze(-1)  # [R]


def test_response_logprobs_left_padding_invariant(tiny_llama):
    prompts, responses = [[5, 6, 7], [9, 10, 11, 12, 13]], [[8, 9, 10], [14, 15]]
    P, R, pad = 5, 4, 0
    input_ids = torch.tensor(
        [
            [pad, pad, 5, 6, 7, 8, 9, 10, pad],  # prompt left-padded by 2, response right-padded by 1
            [9, 10, 11, 12, 13, 14, 15, pad, pad],  # full prompt, response right-padded by 2
        ]
    )
    attention_mask = torch.zeros(2, P + R, dtype=torch.long)
    attention_mask[0, 2:8] = 1
    attention_mask[1, 0:7] = 1
    with torch.no_grad():
        out = response_logprobs(tiny_llama, input_ids, attention_mask, response_len=R)
    assert out.logprobs.shape == (2, R) and out.entropy is None and out.hidden is None
    for b in range(2):
        expected = _unpadded_logprobs(tiny_llama, prompts[b], responses[b])
        assert torch.allclose(out.logprobs[b, : len(responses[b])], expected, atol=1e-5)


def test_response_logprobs_temperature_entropy_hidden(tiny_llama):
    input_ids = torch.tensor([[1, 2, 3, 4, 5]])
    attention_mask = torch.ones_like(input_ids)
    with torch.no_grad():
        out = response_logprobs(
            tiny_llama,
            input_ids,
            attention_mask,
            response_len=2,
            temperature=2.0,
            return_entropy=True,
            return_hidden=True,
        )
        logits = tiny_llama(input_ids=input_ids).logits[:, 2:4] / 2.0  # positions 2, 3 predict tokens 4, 5
    logp = torch.log_softmax(logits, -1)
    expected = logp.gather(-1, input_ids[:, 3:].unsqueeze(-1)).squeeze(-1)  # [1, 2]
    assert torch.allclose(out.logprobs, expected, atol=1e-5)
    assert torch.allclose(out.entropy, -(logp.exp() * logp).sum(-1), atol=1e-5)
    assert out.hidden.shape == (1, 2, 32)


@pytest.mark.parametrize("return_hidden", [False, True])
def test_shared_prompt_pass_gives_the_same_logprobs_entropy_hidden_and_gradients(return_hidden):
    """Rows that share a prompt run it once (its KV cache indexed out to them): log-probs, entropy, last hidden
    states and the LoRA gradients equal those of one full pass per row, with left padding and a prompt that only
    one row has."""
    from peft import LoraConfig, get_peft_model

    from xrlhf.ops import response_logprobs, shared_prompt_rows
    from xrlhf.policy.generation import sample
    from xrlhf.policy.models import build_tiny_model

    model, tok = build_tiny_model()
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    exp = sample(model, tok, ["Say something.", "A much longer prompt than the other one, to pad it."], 3, 6, seed=1)
    exp = exp.select([0, 1, 2, 3, 4, 5])
    solo = sample(model, tok, ["Name a fruit please"], 1, exp.response_len, seed=2, min_new_tokens=exp.response_len)
    from xrlhf.policy.generation import merge_experiences
    exp = merge_experiences([exp, solo], tok.pad_token_id)
    P = exp.input_ids.shape[1] - exp.response_len
    first, owner = shared_prompt_rows(exp.input_ids, exp.attention_mask, P)
    assert sorted(first.tolist()) == [0, 3, 6] and owner.tolist().count(owner[0].item()) == 3  # 2 prompts x 3, 1 solo
    weights = torch.randn(exp.response_mask.shape)
    widths, head_rows = [], []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, i, o: widths.append(tuple(i[0].shape)))
    head_hook = model.get_output_embeddings().register_forward_hook(lambda m, i, o: head_rows.append(i[0].shape[:-1]))
    response_logprobs(model, exp.input_ids, exp.attention_mask, exp.response_len)
    hook.remove()
    head_hook.remove()
    assert widths == [(3, P - 1), (7, exp.response_len)]  # the prompts once, then one position per response token
    assert [tuple(r) for r in head_rows] == [(3, 0), (7, exp.response_len)]  # the prompt pass asks for no logits
    model.train()
    results = {}
    for shared in (True, False):
        model.zero_grad()
        ids, att = exp.input_ids, exp.attention_mask
        if not shared:  # the same rows, each one's prompt made unique by the pass per row
            outs = [response_logprobs(model, ids[i:i + 1], att[i:i + 1], exp.response_len, return_entropy=True,
                                      return_hidden=return_hidden) for i in range(ids.shape[0])]
            lp = torch.cat([o.logprobs for o in outs])
            ent = torch.cat([o.entropy for o in outs])
            hid = torch.cat([o.hidden for o in outs]) if return_hidden else None
        else:
            o = response_logprobs(model, ids, att, exp.response_len, return_entropy=True, return_hidden=return_hidden)
            lp, ent, hid = o.logprobs, o.entropy, o.hidden
        loss = (lp * weights * exp.response_mask).sum() + (ent * exp.response_mask).sum() * 0.1
        if return_hidden:
            loss = loss + hid.pow(2).mean()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results[shared] = (lp.detach(), ent.detach(), None if hid is None else hid.detach(), grads)
    m = exp.response_mask.bool()
    (lp1, e1, h1, g1), (lp0, e0, h0, g0) = results[True], results[False]
    assert torch.allclose(lp1[m], lp0[m], atol=1e-5) and torch.allclose(e1[m], e0[m], atol=1e-5)
    if return_hidden:
        assert torch.allclose(h1, h0, atol=1e-5)
    for n in g0:
        assert torch.allclose(g1[n], g0[n], atol=1e-5, rtol=1e-4), n


def test_gradient_checkpointing_keeps_one_pass_per_row():
    """transformers turns the KV cache off under gradient checkpointing while training, so the prompt is not
    shared there: the pass per row runs, with the same numbers."""
    from xrlhf.ops import _can_share, response_logprobs
    from xrlhf.policy.generation import sample
    from xrlhf.policy.models import build_tiny_model

    model, tok = build_tiny_model()
    exp = sample(model, tok, ["Say something.", "Name a fruit."], 2, 5, seed=4)
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    model.train()
    assert not _can_share(model)
    a = response_logprobs(model, exp.input_ids, exp.attention_mask, exp.response_len).logprobs
    a.sum().backward()
    model.eval()
    assert _can_share(model)  # evaluation passes (the reference) still share
    b = response_logprobs(model, exp.input_ids, exp.attention_mask, exp.response_len, share_prompts=False).logprobs
    m = exp.response_mask.bool()
    assert torch.allclose(a.detach()[m], b.detach()[m], atol=1e-5)
