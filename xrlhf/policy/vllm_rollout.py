"""Sampling with vLLM: the rollout backend that takes the learner's LoRA adapter as an adapter, never merged.

Runs where vllm is installed (on CPU: the separate `.venv-vllm`, built by scripts/setup_vllm_env.sh).
Returns the same Experience layout as `xrlhf.policy.generation.sample`, so the rest of the loop cannot tell
which backend sampled.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable

import torch

from xrlhf.config import Config
from xrlhf.policy.experience import Experience
from xrlhf.policy.generation import cut_at_stop_texts, encode_prompts, eos_ids, response_mask_from
from xrlhf.policy.models import resolve

GiB = 1 << 30


class VLLMSampler:
    """A vLLM engine over the base model; each learner update arrives as a new, versioned LoRA adapter."""

    def __init__(self, model_dir: str | Path, lora: bool = True, max_lora_rank: int = 16,
                 gpu_memory_utilization: float = 0.4, dtype: str = "float32", seed: int = 0,
                 adapter_config: Any = None, max_model_len: int | None = None, cpu_kv_cache_gib: float = 1.0):
        """`adapter_config` (a peft LoraConfig) is needed only when set_adapter gets a state dict, not a folder.

        `max_lora_rank` must be one vLLM accepts (1, 8, 16, 32, 64, ...) and at least the adapter's r.
        """
        from transformers import AutoTokenizer, GenerationConfig
        from vllm import LLM

        on_gpu = torch.cuda.is_available()
        kwargs: dict[str, Any] = {}
        if lora:
            kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank, max_loras=1)
        if not on_gpu and "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
            # Left alone, vLLM on CPU sizes its KV cache from all of RAM; a rollout needs a sliver of that.
            kwargs["kv_cache_memory_bytes"] = int(cpu_kv_cache_gib * GiB)
        # processed_logprobs = log softmax(logits / T) after top-k/top-p masking, the distribution the token was
        # drawn from. With top_p == 1 and top_k == 0 that is exactly what generation.sample records; the default
        # raw_logprobs ignores the temperature. One difference remains: min_tokens=1 masks the stop tokens at the
        # first step before the softmax, so step 0 is renormalised over non-stop tokens (log(1 - p_stop) away).
        self.llm = LLM(model=str(model_dir), tokenizer=str(model_dir), dtype=dtype, seed=seed,
                       gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                       logprobs_mode="processed_logprobs",
                       # CUDA graphs pay off on a GPU; on CPU the compile costs minutes and saves little.
                       enforce_eager=not on_gpu, **kwargs)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        try:
            generation_config = GenerationConfig.from_pretrained(str(model_dir))
        except OSError:
            generation_config = GenerationConfig()
        self.stop_ids = eos_ids(SimpleNamespace(generation_config=generation_config), self.tokenizer)
        self.lora = lora
        self.adapter_config = adapter_config
        self.version = 0
        self.lora_request: Any = None  # None: the base model, which is what a fresh adapter (B = 0) computes
        self._adapters = tempfile.TemporaryDirectory(prefix="xrlhf-vllm-adapters-")

    @classmethod
    def from_config(cls, cfg: Config) -> VLLMSampler:
        """The sampler a rollout actor uses: the policy's base model, its LoRA shape, the rollout's lengths."""
        from peft import LoraConfig

        if not cfg.model.lora.enabled:
            raise ValueError("rollout.backend=vllm receives weight updates as LoRA adapters; "
                             "set model.lora.enabled=true or use rollout.backend=hf")
        lora = cfg.model.lora
        adapter_config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                    target_modules=lora.target_modules, task_type="CAUSAL_LM")
        return cls(resolve(cfg.model.name, cfg.model.cache_dir), lora=True, max_lora_rank=_vllm_rank(lora.r),
                   gpu_memory_utilization=cfg.rollout.vllm_gpu_memory_utilization,
                   dtype=cfg.rollout.vllm_dtype or cfg.model.dtype, seed=cfg.seed,
                   adapter_config=adapter_config,
                   max_model_len=cfg.data.max_prompt_tokens + cfg.rollout.max_new_tokens,
                   cpu_kv_cache_gib=cfg.rollout.vllm_cpu_kv_cache_gib)

    def set_adapter(self, state_or_dir: dict[str, torch.Tensor] | str | Path, version: int) -> int:
        """Use the learner's adapter from now on; returns the version now in use.

        A state dict (peft's key names, as `models.trainable_state` gives) is written in peft's
        save_pretrained layout first; a folder must already hold that layout.
        """
        from vllm.lora.request import LoRARequest

        if not self.lora:
            raise RuntimeError("this VLLMSampler was built with lora=False; it samples the base model only")
        if isinstance(state_or_dir, dict):
            path = self._write_adapter(state_or_dir, version)
        else:
            path = Path(state_or_dir)
        # A fresh name and id per version: vLLM caches adapters by id, so reusing one would keep old weights.
        self.lora_request = LoRARequest(f"policy-v{version}", version + 1, str(path))
        self.version = version
        return version

    def _write_adapter(self, state: dict[str, torch.Tensor], version: int) -> Path:
        from safetensors.torch import save_file

        if self.adapter_config is None:
            raise ValueError("set_adapter got a state dict but the sampler has no adapter_config to describe it")
        path = Path(self._adapters.name) / f"v{version}"
        path.mkdir(parents=True, exist_ok=True)
        # The two files PeftModel.save_pretrained writes; vLLM's loader reads peft's key names as they are.
        self.adapter_config.save_pretrained(str(path))
        save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()},
                  str(path / "adapter_model.safetensors"))
        return path

    @torch.no_grad()
    def sample(self, prompts: list[str], samples_per_prompt: int, max_new_tokens: int, temperature: float = 1.0,
               top_p: float = 1.0, top_k: int = 0, seed: int | None = None, policy_version: int | None = None,
               max_prompt_tokens: int = 512, stop: Iterable[str] = ()) -> Experience:
        """Like `generation.sample`: n responses per prompt with the behaviour log-probs vLLM computed, ending
        where it ends them (EOS, a token holding one of the `stop` texts, max_new_tokens).

        `policy_version`, when given, must be the version set_adapter last loaded; every output is
        checked to have come from that adapter.
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if policy_version is not None and policy_version != self.version:
            raise ValueError(f"asked to sample with policy version {policy_version}, loaded is {self.version}")
        tok = self.tokenizer
        stop_ids, stop_texts = self.stop_ids, [t for t in stop if t]
        enc, group_ids = encode_prompts(tok, prompts, samples_per_prompt, max_prompt_tokens)
        # vLLM gets the very token ids the Experience records, unpadded.
        requests = [TokensPrompt(prompt_token_ids=ids[m.bool()].tolist())
                    for ids, m in zip(enc["input_ids"], enc["attention_mask"])]
        # One request per sample, each with its own seed: reproducible, and the samples of a prompt differ.
        params = [SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k,
                                 seed=None if seed is None else seed + i, max_tokens=max_new_tokens, min_tokens=1,
                                 stop_token_ids=stop_ids, logprobs=0,
                                 # vLLM halts a request at a stop text only while detokenizing; the mask below
                                 # ends it at the same token (cut_at_stop_texts), as generation.sample does
                                 stop=stop_texts or None, include_stop_str_in_output=True,
                                 detokenize=bool(stop_texts))
                  for i in range(len(requests))]
        outputs = self.llm.generate(requests, params, lora_request=self.lora_request, use_tqdm=False)
        self._check_served_by_adapter(outputs)
        completions = [o.outputs[0] for o in outputs]
        R = max(len(c.token_ids) for c in completions)
        response = torch.full((len(completions), R), tok.pad_token_id, dtype=torch.long)  # [B, R]
        logprobs = torch.zeros((len(completions), R), dtype=torch.float32)  # [B, R]
        for b, c in enumerate(completions):
            response[b, :len(c.token_ids)] = torch.tensor(c.token_ids)
            # logprobs=0 asks for the sampled token's entry only: one {token_id: Logprob} per position.
            logprobs[b, :len(c.token_ids)] = torch.tensor([lp[t].logprob for t, lp in zip(c.token_ids, c.logprobs)])
        mask, texts = cut_at_stop_texts(tok, response, response_mask_from(response, stop_ids, tok.pad_token_id),
                                        stop_texts)
        response = torch.where(mask.bool(), response, torch.full_like(response, tok.pad_token_id))
        return Experience(input_ids=torch.cat([enc["input_ids"], response], dim=1),
                          attention_mask=torch.cat([enc["attention_mask"], mask], dim=1), response_mask=mask,
                          behaviour_logprobs=logprobs * mask,
                          prompts=[p for p in prompts for _ in range(samples_per_prompt)],
                          responses=texts, group_ids=group_ids, policy_version=self.version)

    def _check_served_by_adapter(self, outputs: list[Any]) -> None:
        """Raise unless every output came from the adapter of the current version (or the base before any)."""
        want = None if self.lora_request is None else self.lora_request.lora_name
        got = {None if o.lora_request is None else o.lora_request.lora_name for o in outputs}
        if got != {want}:
            raise RuntimeError(f"vLLM served adapters {sorted(map(str, got))}, expected {want}")


def _vllm_rank(r: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds rank r."""
    allowed = (1, 8, 16, 32, 64, 128, 256, 320, 512)
    for a in allowed:
        if a >= r:
            return a
    raise ValueError(f"LoRA rank {r} exceeds vLLM's largest max_lora_rank {allowed[-1]}")
