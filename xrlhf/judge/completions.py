"""OpenAI legacy-completion choices from a local HF model: the compute behind `xrlhf serve-judge`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from xrlhf.judge.scoring import last_logprobs, pad, tail_logprobs

MAX_TOP_LOGPROBS = 20  # the OpenAI API's own limit
LOGPROB_FLOOR = -1e4


@dataclass(frozen=True)
class CompletionJob:
    """One prompt of a completion request; jobs with equal settings share a forward pass."""

    prompt: str
    max_tokens: int = 1
    temperature: float = 0.0
    top_logprobs: int | None = None
    # echo=true with logprobs (the legacy API, as vLLM serves it): the choice's text and logprobs start with the
    # prompt's own tokens, the first with a None logprob. judge.mode=likelihood over HTTP reads them.
    echo: bool = False

    @property
    def settings(self) -> tuple[int, float]:
        return self.max_tokens, self.temperature


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a prompt as the local judge makes them: BOS added unless the text already starts with it.

    A client that rendered a chat template as text sends its BOS already; a second one would
    change every logit.
    """
    bos = tokenizer.bos_token
    return tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]


def complete_batch(model: Any, tokenizer: Any, jobs: list[CompletionJob]) -> list[dict[str, Any]]:
    """One OpenAI completion choice (text, finish_reason, logprobs) per job, in order; one pass per settings group."""
    out: list[dict[str, Any] | None] = [None] * len(jobs)
    groups: dict[tuple[int, float], list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(job.settings, []).append(i)
    for (max_tokens, temperature), idx in groups.items():
        seqs = [encode_prompt(tokenizer, jobs[i].prompt) for i in idx]
        steps = _decode(model, tokenizer, seqs, max_tokens, temperature)  # [N] lists of (token_id, logprobs [V])
        for i, seq_steps in zip(idx, steps):
            out[i] = _choice(tokenizer, seq_steps, max_tokens, jobs[i].top_logprobs)
    echoed = [i for i, job in enumerate(jobs) if job.echo]
    for i, prompt_lp in zip(echoed, prompt_logprobs(model, tokenizer, [jobs[i].prompt for i in echoed])):
        out[i] = _with_prompt(jobs[i].prompt, prompt_lp, out[i])  # type: ignore[arg-type]
    return out  # type: ignore[return-value]


def prompt_logprobs(model: Any, tokenizer: Any, prompts: list[str]) -> list[dict[str, Any]]:
    """The legacy logprobs object of each prompt's own tokens: the first token's logprob is None (nothing precedes
    it), text_offset is each token's start in the prompt (a BOS the text does not spell starts at 0)."""
    out = []
    for prompt in prompts:
        bos = tokenizer.bos_token
        enc = tokenizer(prompt, add_special_tokens=not (bos and prompt.startswith(bos)), return_offsets_mapping=True)
        ids, spans = enc["input_ids"], enc["offset_mapping"]
        lps = tail_logprobs(model, [ids], [len(ids) - 1])[0].tolist() if len(ids) > 1 else []
        out.append({"tokens": [prompt[a:b] for a, b in spans], "token_logprobs": [None] + [_finite(x) for x in lps],
                    "top_logprobs": [None] * len(ids), "text_offset": [a for a, _ in spans]})
    return out


def _with_prompt(prompt: str, prompt_lp: dict[str, Any], choice: dict[str, Any]) -> dict[str, Any]:
    """An echoed choice: the prompt's text and logprobs, then the completion's (offsets continue past the prompt)."""
    gen = choice["logprobs"] or {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    logprobs = {k: prompt_lp[k] + gen[k] for k in ("tokens", "token_logprobs", "top_logprobs")}
    logprobs["text_offset"] = prompt_lp["text_offset"] + [len(prompt) + o for o in gen["text_offset"]]
    return {**choice, "text": prompt + choice["text"], "logprobs": logprobs}


def _decode(model: Any, tokenizer: Any, seqs: list[list[int]], max_tokens: int,
            temperature: float) -> list[list[tuple[int, torch.Tensor]]]:
    """(chosen token, full-vocab logprobs) per generated step and sequence, stopping each at EOS."""
    if max_tokens > 1:
        return _generate(model, tokenizer, seqs, max_tokens, temperature)
    # Full-vocabulary logprobs (top_logprobs needs them all), from one left-padded forward.
    first = last_logprobs(model, seqs, tokenizer.pad_token_id, None).cpu()  # [N, V]
    return [[(_pick(row, temperature), row)] for row in first]


@torch.inference_mode()
def _generate(model: Any, tokenizer: Any, seqs: list[list[int]], max_tokens: int,
              temperature: float) -> list[list[tuple[int, torch.Tensor]]]:
    ids, mask = pad(seqs, tokenizer.pad_token_id, "left")  # [N, T]
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 \
        else {"do_sample": False}
    gen = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                         max_new_tokens=max_tokens, pad_token_id=tokenizer.pad_token_id, output_logits=True,
                         return_dict_in_generate=True, **sampling)
    new = gen.sequences[:, ids.shape[1]:].cpu()  # [N, S]
    logprobs = torch.stack([torch.log_softmax(step.float(), -1) for step in gen.logits], 1).cpu()  # [N, S, V]
    eos = _eos_ids(model, tokenizer)
    out = []
    for row_ids, row_lp in zip(new, logprobs):
        steps = []
        for token, lp in zip(row_ids.tolist(), row_lp):
            steps.append((token, lp))
            if token in eos:
                break
        out.append(steps)
    return out


def _pick(logprobs: torch.Tensor, temperature: float) -> int:
    if temperature <= 0:
        return int(logprobs.argmax())
    return int(torch.multinomial(torch.softmax(logprobs / temperature, -1), 1))


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = getattr(model.generation_config, "eos_token_id", None) or tokenizer.eos_token_id
    return set(ids) if isinstance(ids, (list, tuple)) else {ids}


def _choice(tokenizer: Any, steps: list[tuple[int, torch.Tensor]], max_tokens: int,
            top_logprobs: int | None) -> dict[str, Any]:
    eos = tokenizer.eos_token_id
    finished = bool(steps) and steps[-1][0] == eos
    text_ids = [t for t, _ in steps if t != eos]
    choice: dict[str, Any] = {"text": tokenizer.decode(text_ids, skip_special_tokens=True), "logprobs": None,
                              "finish_reason": "stop" if finished or len(steps) < max_tokens else "length"}
    if top_logprobs is not None:
        choice["logprobs"] = _logprobs(tokenizer, steps, min(top_logprobs, MAX_TOP_LOGPROBS))
    return choice


def _logprobs(tokenizer: Any, steps: list[tuple[int, torch.Tensor]], k: int) -> dict[str, Any]:
    """The legacy `logprobs` object: tokens, token_logprobs, top_logprobs (token text -> logprob), text_offset."""
    tokens, token_lps, tops, offsets, offset = [], [], [], [], 0
    for token, lp in steps:
        text = tokenizer.decode([token])
        tokens.append(text)
        token_lps.append(_finite(float(lp[token])))
        offsets.append(offset)
        offset += len(text)
        top: dict[str, float] = {}
        if k > 0:
            values, ids = lp.topk(k)
            for value, tid in zip(values.tolist(), ids.tolist()):
                key = tokenizer.decode([tid])
                # Distinct ids can decode alike (a byte-fallback "3" and "3"): keep their summed probability.
                top[key] = float(np.logaddexp(top[key], value)) if key in top else _finite(value)
        tops.append(top)
    return {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets}


def _finite(logprob: float) -> float:
    # JSON has no -inf; a token the model rules out gets a logprob no probability can tell from 0.
    return max(logprob, LOGPROB_FLOOR)
