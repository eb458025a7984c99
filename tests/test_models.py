import os
import subprocess
import sys
import time

import pytest
import torch

from xrlhf.config import LoraConfig, ModelConfig
from xrlhf.policy.models import (CONVERTED_BYTES, ModelError, build_tiny_model, frozen_copy, load_causal_lm,
                                 load_policy, load_trainable_state, packaged_model_dir, reference_mode,
                                 trainable_state)


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


def test_reference_mode_refuses_a_model_without_an_adapter():
    policy, _ = load_policy(ModelConfig(name="tiny", lora=LoraConfig(enabled=False)))
    with pytest.raises(ModelError, match="needs a LoRA adapter"):
        with reference_mode(policy):
            pass


def test_frozen_copy_keeps_the_weights_it_was_taken_with():
    policy, _ = load_policy(ModelConfig(name="tiny", lora=LoraConfig(enabled=False)))
    ref = frozen_copy(policy)
    assert not ref.training and not any(p.requires_grad for p in ref.parameters())
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.1)
    assert all(torch.equal(a, b) for a, b in zip(ref.parameters(), build_tiny_model()[0].parameters()))


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


LOAD = ("import logging, sys; logging.basicConfig(level='INFO', format='%(message)s'); "
        "from xrlhf.policy.models import load_causal_lm; m, t = load_causal_lm('packaged'); "
        "print('LOADED', sum(p.numel() for p in m.parameters()), flush=True)")


def _loaders(n: int, cache, tmp_path, tag: str) -> list[tuple[subprocess.Popen, object]]:
    """n processes that load the packaged model from `cache` at once; each one's output in its own file."""
    env = {**os.environ, "XRLHF_CACHE": str(cache)}
    out = []
    for i in range(n):
        log = tmp_path / f"{tag}-{i}.log"
        proc = subprocess.Popen([sys.executable, "-u", "-c", LOAD], env=env, stdout=log.open("w"),
                                stderr=subprocess.STDOUT)
        out.append((proc, log))
    return out


def _finish(procs, timeout_s: float = 900) -> list[str]:
    deadline = time.time() + timeout_s
    for proc, _ in procs:
        proc.wait(timeout=max(1, deadline - time.time()))
    return [log.read_text() for _, log in procs]


def test_conversion_on_a_full_disk_is_a_clear_error_before_it_starts(tmp_path):
    """A cache on a file system too small for the converted model (a real 64 MiB tmpfs): a ModelError naming the
    folder, what it needs and what is free, before any GGUF is read or written, and nothing left behind."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(small)], check=True)
    try:
        with pytest.raises(ModelError, match=r"needs about 1\.3 GiB free .* has 6\d MiB free.*XRLHF_CACHE"):
            packaged_model_dir(str(small / "cache"))
        assert [p.name for p in (small / "cache").iterdir()] == ["gemma-3-270m.lock"]
    finally:
        subprocess.run(["umount", str(small)], check=True)


@pytest.mark.slow
def test_concurrent_cold_loads_convert_once_even_when_the_converter_is_killed(tmp_path):
    """Three processes load the packaged model at once from an empty cache: one converts while the others wait
    for it. SIGKILL the converter: the waiting ones take over (exactly one converts again, after removing the dead
    one's temp folder), both load the same model, the conversion writes the room it asked for and leaves no temp
    folder, and a later load uses the cache without converting. (One test for both properties: each cold
    conversion costs a GGUF load of about a minute.)"""
    cache = tmp_path / "cache"
    procs = _loaders(3, cache, tmp_path, "load")
    try:
        deadline = time.time() + 300
        converter = None
        while converter is None and time.time() < deadline:
            converting = [pl for pl in procs if "preparing the packaged" in pl[1].read_text()]
            if converting and list(cache.glob(".gemma-convert-*/*")):
                converter = converting[0]
            time.sleep(0.2)
        assert converter is not None, [log.read_text() for _, log in procs]
        time.sleep(3)  # well into the conversion
        converter[0].kill()
        rest = [pl for pl in procs if pl is not converter]
        outs = _finish(rest)
    finally:
        for proc, _ in procs:
            proc.kill()
    assert [p.returncode for p, _ in rest] == [0, 0], outs
    loaded = {line for out in outs for line in out.splitlines() if line.startswith("LOADED")}
    assert len(loaded) == 1, loaded  # both load, the same parameter count
    assert sum("converted in" in out for out in outs) == 1
    assert sum("left by a conversion that was stopped" in out for out in outs) == 1
    assert sum("waiting for another process" in out for out in outs) >= 1  # a real wait, not a race won by luck
    assert not list(cache.glob(".gemma-convert-*"))
    assert (cache / "gemma-3-270m" / ".complete").is_file()
    # the room the conversion asks for before it starts is what it really writes
    written = sum(f.stat().st_size for f in (cache / "gemma-3-270m").iterdir())
    assert abs(written - CONVERTED_BYTES) < 0.02 * CONVERTED_BYTES, written
    later = _loaders(1, cache, tmp_path, "later")
    [out] = _finish(later, timeout_s=300)
    assert later[0][0].returncode == 0 and "LOADED" in out and "preparing" not in out, out


def test_context_length_of_tiny_and_local_models(tmp_path):
    from xrlhf.policy.models import TINY_CONTEXT, context_length

    model, tok = build_tiny_model()
    assert context_length("tiny") == TINY_CONTEXT == model.config.max_position_embeddings
    model.save_pretrained(tmp_path / "m")
    assert context_length(str(tmp_path / "m")) == TINY_CONTEXT
    assert context_length("nobody-has/this-model-anywhere") is None  # not looked up on a hub


def test_generation_within_the_context_passes_the_check():
    from xrlhf.config import ConfigError, load_config
    from xrlhf.policy.models import check_context

    tiny = ["model.name=tiny", "data.max_prompt_tokens=256"]
    check_context(load_config("configs/quickstart.yaml", [*tiny, "rollout.max_new_tokens=256"]))
    with pytest.raises(ConfigError, match="at most 256"):
        check_context(load_config("configs/quickstart.yaml", [*tiny, "rollout.max_new_tokens=257"]))


@pytest.mark.slow
def test_packaged_context_matches_the_converted_model():
    from transformers import AutoConfig

    from xrlhf.policy.models import PACKAGED_CONTEXT, context_length

    config = AutoConfig.from_pretrained(packaged_model_dir())
    assert context_length("packaged") == PACKAGED_CONTEXT == config.max_position_embeddings
