import os
import subprocess
import sys
import time

import pytest
import torch

from xrlhf.config import LoraConfig, ModelConfig
from xrlhf.models import (ModelError, build_tiny_model, load_causal_lm, load_policy, load_trainable_state,
                          packaged_model_dir, reference_mode, trainable_state)


def test_tiny_model_is_deterministic_and_offline():
    (m1, tok), (m2, _) = build_tiny_model(), build_tiny_model()
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    ids = tok("hello world", return_tensors="pt").input_ids
    assert tok.decode(ids[0]) == "hello world"
    out = m1.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] == ids.shape[1] + 5


def test_lora_reference_is_the_base_with_adapter_off():
    cfg = ModelConfig(name="tiny", lora=LoraConfig(enabled=True, r=4, alpha=8, target_modules=["q_proj", "v_proj"]))
    policy, tok = load_policy(cfg)
    base, _ = load_causal_lm("tiny")
    ids = tok(["abc def"], return_tensors="pt").input_ids
    for p in policy.parameters():  # move the adapter away from its zero init
        if p.requires_grad:
            p.data.normal_(0, 0.5)
    with torch.no_grad():
        trained = policy(ids).logits
        with reference_mode(policy):
            ref = policy(ids).logits
        plain = base(ids).logits
    assert torch.allclose(ref, plain, atol=1e-6)
    assert not torch.allclose(trained, plain, atol=1e-3)
    # one copy of the base weights: every non-LoRA parameter of the policy is frozen and shared by both passes
    assert all(not p.requires_grad for n, p in policy.named_parameters() if "lora" not in n)


def test_trainable_state_round_trip_is_adapter_only():
    cfg = ModelConfig(name="tiny", lora=LoraConfig(enabled=True, r=4, alpha=8, target_modules=["q_proj"]))
    a, _ = load_policy(cfg)
    b, _ = load_policy(cfg)
    for p in a.parameters():
        if p.requires_grad:
            p.data.normal_()
    state = trainable_state(a)
    assert state and all("lora" in k for k in state)
    load_trainable_state(b, state)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(a(ids).logits, b(ids).logits)


def test_missing_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="neither a directory nor a hub id"):
        load_causal_lm(str(tmp_path / "no-such-model"))


def test_4bit_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the error is for machines without it")
    with pytest.raises(ModelError, match="CUDA"):
        load_causal_lm("tiny-does-not-matter/x", load_in_4bit=True)


@pytest.mark.slow
def test_packaged_gemma_loads_from_cache_and_writes_text():
    packaged_model_dir()  # converts once (about a minute) when the cache is cold
    t0 = time.perf_counter()
    model, tok = load_causal_lm("packaged")
    load_s = time.perf_counter() - t0
    assert load_s < 30, f"cached load took {load_s:.1f}s"
    ids = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    text = tok.decode(out[0, ids.input_ids.shape[1]:], skip_special_tokens=True)
    assert len(text.strip()) > 0


@pytest.mark.slow
def test_killed_conversion_leaves_no_half_cache(tmp_path):
    """SIGKILL the conversion midway: the cache folder is absent or complete, and the next call converts."""
    code = "from xrlhf.models import packaged_model_dir; packaged_model_dir()"
    env = {**os.environ, "XRLHF_CACHE": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".gemma-convert-*/*")):
        time.sleep(0.2)
    time.sleep(3)
    proc.kill()
    proc.wait()
    target = tmp_path / "gemma-3-270m"
    assert not target.exists() or (target / ".complete").exists()
