"""The local transformers judge: per-dimension scores read from the judge model's next-token distribution."""
from __future__ import annotations

import functools
import logging
import math
from collections import Counter, OrderedDict
from typing import Any

import torch

from xrlhf.config import JudgeConfig
from xrlhf.judge.base import Judgement, Verdict
from xrlhf.judge.likelihood import LocalLogprobs, order_free
from xrlhf.judge.modes import JudgeInputs, Scorer, VerdictCache, build_mode
from xrlhf.judge.rubric import Rubric
from xrlhf.judge.scoring import PrefixCache, common_prefix_length, pad, shared_prefix_logprobs
from xrlhf.judge.template import answer_token_ids, encode, render_demonstrations, render_pairwise, resolve_template
from xrlhf.policy.generation import tuned_linears
from xrlhf.policy.models import load_causal_lm

log = logging.getLogger(__name__)

# Shared by every HFJudge in the process, keyed by everything that determines a verdict (modes.Scorer.key).
_VERDICTS: OrderedDict[tuple, Verdict] = OrderedDict()


@functools.lru_cache(maxsize=2)
def _load(name: str, dtype: str, load_in_4bit: bool, cache_dir: str | None) -> tuple[Any, Any]:
    # Judges of one model in one process (one per dimension set, the CLI's) share its weights.
    return load_causal_lm(name, dtype, load_in_4bit, cache_dir)


class HFJudge:
    """Scores each dimension with a local causal LM in the configured mode (modes.py) over LocalJudgeModel."""

    def __init__(self, cfg: JudgeConfig, model_name: str, cache_dir: str | None = None) -> None:
        self.cfg = cfg
        self.rubric = Rubric.from_config(cfg)
        self.model_name = model_name
        self.template = resolve_template(cfg.template)
        self.model, self.tokenizer = _load(model_name, cfg.dtype, cfg.load_in_4bit, cache_dir)
        self.labels = tuple(self.rubric.names)
        self.demonstrations = render_demonstrations(self.rubric.dimensions) if cfg.demonstrations else ""
        self.inputs = JudgeInputs(self.template, self.labels, self.rubric.dimensions, self.demonstrations,
                                  self.tokenizer, cfg.max_response_tokens)
        self.digit_ids = answer_token_ids(self.tokenizer, [str(v) for v in range(10)])  # token text -> id
        self.letter_ids = answer_token_ids(self.tokenizer, ["A", "B"])
        self.counts: Counter[str] = Counter()
        # The instructions (and rubric) every input opens with: their KV cache is computed once per judge.
        dim = self.rubric.dimensions[0]
        self._head = self._fixed_prefix(lambda p: self.inputs.render(p, "", dim), "0")
        self._pair_head = self._fixed_prefix(lambda p: render_pairwise(p, "", "", "", self.labels), "A")
        source = LocalJudgeModel(self.model, self.tokenizer, cfg.batch_size, self.digit_ids, self._head)
        self.mode = build_mode(cfg, self.inputs, source, self._count)
        self.scorer = Scorer(cfg, self.rubric, self.inputs, self.mode, model_name, VerdictCache(cfg.cache, _VERDICTS),
                             self._count)

    def _fixed_prefix(self, render: Any, answer: str) -> PrefixCache:
        """The tokens a template's inputs share whatever the prompt: rendered with two unlike prompts, compared."""
        a, b = (encode(self.tokenizer, render(p), answer) for p in ("a", "7"))
        return PrefixCache(a[:common_prefix_length([a, b])])

    def _count(self, name: str, n: int) -> None:
        self.counts[name] += n

    def score(self, prompts: list[str], responses: list[str]) -> list[Judgement]:
        """One Judgement per (prompt, response); cached verdicts are reused, the rest computed in batches."""
        with tuned_linears(self.model, self.cfg.tune_linears):
            return self.scorer.score(prompts, responses)

    def compare(self, prompts: list[str], first: list[str], second: list[str]) -> list[float | None]:
        """P(first is better), averaged over both orders (first as A, then as B) to cancel position bias.

        In likelihood mode it comes from the two responses' rewards instead (likelihood.preference): order plays
        no part, so compare(a, b) = 1 - compare(b, a) exactly."""
        return [None if a is None or b is None else 0.5 * (a + b)
                for a, b in self.compare_orders(prompts, first, second)]

    def compare_orders(self, prompts: list[str], first: list[str],
                       second: list[str]) -> list[tuple[float | None, float | None]]:
        """(P(first better | shown as A), P(first better | shown as B)) per pair; in likelihood mode both are the
        order-free preference of the two rewards."""
        if self.cfg.mode == "likelihood":
            return order_free(self, prompts, first, second)
        criteria = "; ".join(f"{d.name} ({d.definition})" for d in self.rubric.dimensions)
        groups = []
        for p, a, b in zip(prompts, first, second):
            p, a, b = self.inputs.clip(p), self.inputs.clip(a), self.inputs.clip(b)
            groups.append([encode(self.tokenizer, render_pairwise(p, x, y, criteria, self.labels), "A")
                           for x, y in ((a, b), (b, a))])
        self.counts["requests"] += len(groups)
        is_a = torch.tensor([t.lstrip("▁Ġ ").startswith("A") for t in self.letter_ids])
        ids = torch.tensor(list(self.letter_ids.values()))
        out: list[tuple[float | None, float | None]] = []
        with tuned_linears(self.model, self.cfg.tune_linears):
            scored = list(shared_prefix_logprobs(self.model, groups, ids, self.cfg.batch_size, self._pair_head))
        for lp in scored:
            p_a = _share(lp.exp(), is_a).tolist()  # [2]: P("A") among A/B; rows (first, second), (second, first)
            out.append((None if math.isnan(p_a[0]) else p_a[0], None if math.isnan(p_a[1]) else 1.0 - p_a[1]))
        self.counts["failures"] += sum(a is None or b is None for a, b in out)
        return out

    def stats(self) -> dict[str, float]:
        """Counters since the last call (requests, failures, retries, cache_hits), then reset."""
        out = {k: float(self.counts[k]) for k in ("requests", "failures", "retries", "cache_hits")}
        self.counts.clear()
        return out


class LocalJudgeModel(LocalLogprobs):
    """Every source a mode asks of the local judge model (modes.ModelSource): the tails of likelihood mode
    (LocalLogprobs), the score digits' log-probabilities after judge inputs, continuations of judge inputs."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int, digit_ids: dict[str, int],
                 head: PrefixCache) -> None:
        super().__init__(model, tokenizer, batch_size)
        self.digit_ids, self.head = digit_ids, head

    def next_token_logprobs(self, groups: list[list[str]]) -> list[list[dict[str, float] | None]]:
        # Prefix sharing (scoring.shared_prefix_logprobs): the instructions and rubric come from the judge's
        # PrefixCache, each sample's prompt and response run once for all its dimensions, and each dimension adds
        # only its cue line. Measured in BENCHMARKS.md (Judge).
        ids = torch.tensor(list(self.digit_ids.values()))
        tokens = list(self.digit_ids)
        encoded = [[encode(self.tokenizer, text, "0") for text in group] for group in groups]
        logprobs = shared_prefix_logprobs(self.model, encoded, ids, self.batch_size, self.head)
        return [[dict(zip(tokens, row)) for row in lp.tolist()] for lp in logprobs]  # lp: [D_i, K]

    def continuations(self, requests: list[tuple[str, str]], max_new_tokens: int,
                      temperature: float) -> list[str | None]:
        """Batched, left padded; sampled (top_p 1, top_k 0) at a temperature above 0."""
        inputs = [encode(self.tokenizer, text, "0") + (self._ids(after) if after else []) for text, after in requests]
        sample = temperature > 0
        extra = {"temperature": temperature, "top_p": 1.0, "top_k": 0} if sample else {}
        texts: list[str | None] = []
        for start in range(0, len(inputs), self.batch_size):
            ids, mask = pad(inputs[start:start + self.batch_size], self.tokenizer.pad_token_id, "left")  # [N, T]
            with torch.inference_mode():
                out = self.model.generate(input_ids=ids.to(self.model.device), attention_mask=mask.to(self.model.device),
                                          max_new_tokens=max_new_tokens, do_sample=sample,
                                          pad_token_id=self.tokenizer.pad_token_id, **extra)
            texts += self.tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
        return texts


def _share(probs: torch.Tensor, is_a: torch.Tensor) -> torch.Tensor:
    """P(A) / (P(A) + P(B)) per row of probs [N, K]; NaN where neither letter has any mass."""
    a = probs[:, is_a].sum(-1)
    return a / (a + probs[:, ~is_a].sum(-1))
