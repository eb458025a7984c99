"""bench/work_counter.py counts what a step runs through a causal LM, plain or under a PEFT adapter."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from work_counter import WorkCounter  # noqa: E402

sys.path.pop(0)


def _tiny(lora: bool):
    from xrlhf.policy.models import build_tiny_model

    torch.manual_seed(0)
    model, _ = build_tiny_model()
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    return model


def test_counts_passes_tokens_rows_and_flops_with_and_without_lora():
    for lora in (False, True):
        model = _tiny(lora)
        counter = WorkCounter([model])
        info = counter.models[0]
        ids = torch.randint(3, 50, (4, 10))  # [B, T]
        with torch.no_grad():
            model(input_ids=ids, logits_to_keep=torch.arange(5, 9))
        c = counter.snapshot()
        assert (c["forward_passes"], c["tokens"], c["logit_rows"], c["backward_passes"]) == (1, 40, 16, 0)
        assert c["flops_forward"] == 2 * info["body_params"] * 40 + 2 * info["head_params"] * 16
        before = counter.snapshot()
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, min_new_tokens=6,
                       do_sample=False, pad_token_id=0)
        g = counter.since(before)
        assert g["generate_passes"] == g["forward_passes"] == 6 and g["generate_tokens"] == 40 + 5 * 4
        before = counter.snapshot()
        model(input_ids=ids).logits.sum().backward()
        b = counter.since(before)
        assert (b["forward_passes_grad"], b["backward_passes"], b["logit_rows_grad"]) == (1, 1, 40)
        body = 2 * (info["body_params"] + info["body_trainable"]) * 40
        head = 2 * info["head_params"] * 40 * (1 + info["head_trainable"])
        assert b["flops_backward"] == body + head
        assert info["body_trainable"] < info["body_params"] if lora else info["body_trainable"] == info["body_params"]
        counter.close()
        assert "generate" not in (model.get_base_model() if lora else model).__dict__
