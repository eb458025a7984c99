"""The local transformers judge: per-dimension scores read from the judge model's next-token distribution."""
from __future__ import annotations

import functools
import logging
import math
from collections import Counter, OrderedDict
from typing import Any

import torch
from tenacity import Retrying, retry_if_result, stop_after_attempt

from xrlhf.config import JudgeConfig
from xrlhf.judge import guards
from xrlhf.judge.base import Judgement, Verdict, judgement
from xrlhf.judge.likelihood import LikelihoodMode, LocalLogprobs, instruction_for, order_free, signal_for
from xrlhf.judge.rubric import Dimension, Rubric, expected_score, parse_score
from xrlhf.judge.scoring import PrefixCache, common_prefix_length, pad, shared_prefix_logprobs
from xrlhf.judge.template import (encode, resolve_template, render_demonstrations, render_dimension, render_pairwise,
                                  answer_token_ids, truncate_response)
from xrlhf.policy.generation import tuned_linears
from xrlhf.policy.models import load_causal_lm

log = logging.getLogger(__name__)

SCORE_TOKENS = 4  # generate mode: room for "3", " 3/4" or "3." before parsing
RETRY_TEMPERATURE = 0.7  # a retry must be able to say something other than the greedy answer
RATIONALE_TOKENS = 48
CACHE_SIZE = 200_000  # verdicts kept per process; a few hundred bytes each


# Shared by every HFJudge in the process, keyed by everything that determines a verdict.
_VERDICTS: OrderedDict[tuple, Verdict] = OrderedDict()


@functools.lru_cache(maxsize=2)
def _load(name: str, dtype: str, load_in_4bit: bool, cache_dir: str | None) -> tuple[Any, Any]:
    # Judges of one model in one process (one per dimension set, the CLI's) share its weights.
    return load_causal_lm(name, dtype, load_in_4bit, cache_dir)


class HFJudge:
    """Scores each dimension with a local causal LM: expected value of the score token, or generated text."""

    def __init__(self, cfg: JudgeConfig, model_name: str, cache_dir: str | None = None) -> None:
        self.cfg = cfg
        self.rubric = Rubric.from_config(cfg)
        self.model_name = model_name
        self.template = resolve_template(cfg.template)
        self.model, self.tokenizer = _load(model_name, cfg.dtype, cfg.load_in_4bit, cache_dir)
        self.labels = tuple(self.rubric.names)
        self.demonstrations = render_demonstrations(self.rubric.dimensions) if cfg.demonstrations else ""
        self.digit_ids = answer_token_ids(self.tokenizer, [str(v) for v in range(10)])  # token text -> id
        self.letter_ids = answer_token_ids(self.tokenizer, ["A", "B"])
        self.counts: Counter[str] = Counter()
        # The instructions (and rubric) every input opens with: their KV cache is computed once per judge.
        dim = self.rubric.dimensions[0]
        self._head = self._fixed_prefix(lambda p: self._render(p, "", dim), "0")
        self._pair_head = self._fixed_prefix(lambda p: render_pairwise(p, "", "", "", self.labels), "A")
        self.instruction = instruction_for(cfg.likelihood_instruction)
        self.signals = {d.name: signal_for(d.name, cfg.dimensions[d.name].signal) for d in self.rubric.dimensions}
        # the dimensions a failed model leaves without a score (judgement: none of them scored, no reward)
        self.model_read = frozenset(n for n, s in self.signals.items() if s.reads_model or cfg.mode != "likelihood")
        self.likelihood = LikelihoodMode(LocalLogprobs(self.model, self.tokenizer, cfg.batch_size), self.signals)

    def _fixed_prefix(self, render: Any, answer: str) -> PrefixCache:
        """The tokens a template's inputs share whatever the prompt: rendered with two unlike prompts, compared."""
        a, b = (encode(self.tokenizer, render(p), answer) for p in ("a", "7"))
        return PrefixCache(a[:common_prefix_length([a, b])])

    def _render(self, prompt: str, response: str, dim: Dimension) -> str:
        return render_dimension(self.template, prompt, response, dim, self.labels, self.rubric.dimensions,
                                self.demonstrations)

    def score(self, prompts: list[str], responses: list[str]) -> list[Judgement]:
        """One Judgement per (prompt, response); cached verdicts are reused, the rest computed in batches."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        keys = [[self._key(p, r, d) for d in self.rubric.dimensions] for p, r in zip(prompts, responses)]
        known = {k: _VERDICTS[k] for row in keys for k in row if self.cfg.cache and k in _VERDICTS}
        todo: dict[tuple, tuple[int, Dimension]] = {}  # first occurrence of each uncached key
        fired = [guards.check(p, r) if self.cfg.guards else None for p, r in zip(prompts, responses)]
        for i, row in enumerate(keys):
            # a guard that sets every dimension leaves the model nothing to decide: no forward pass for it
            spared = guards.spared(fired[i], self.rubric.dimensions)
            for d, k in zip(self.rubric.dimensions, row):
                if k not in known and d.name not in spared:
                    todo.setdefault(k, (i, d))
        self.counts["cache_hits"] += sum(len(row) for row in keys) - len(todo)
        self.counts["requests"] += len(todo)
        with tuned_linears(self.model, self.cfg.tune_linears):
            fresh = dict(zip(todo, self._verdicts(prompts, responses, list(todo.values()))))
        for k, verdict in fresh.items():
            self._remember(k, verdict)
        unscored = Verdict(None, None)  # only where a guard replaces it in judgement()
        return [judgement(self.rubric, [known.get(k) or fresh.get(k, unscored) for k in row], f,
                          self.model_read)
                for row, f in zip(keys, fired)]

    def _key(self, prompt: str, response: str, dim: Dimension) -> tuple:
        extra = (self.instruction, self.cfg.dimensions[dim.name].instruction, self.signals[dim.name]) \
            if self.cfg.mode == "likelihood" else ()
        return (prompt, response, dim, self.model_name, self.template, self.demonstrations, self.cfg.mode,
                self.cfg.max_response_tokens, self.cfg.rationale, *extra)

    def _remember(self, key: tuple, verdict: Verdict) -> None:
        if not self.cfg.cache or verdict.score is None:  # a failure is retried next time, not remembered
            return
        _VERDICTS[key] = verdict
        if len(_VERDICTS) > CACHE_SIZE:
            _VERDICTS.popitem(last=False)

    def _verdicts(self, prompts: list[str], responses: list[str], todo: list[tuple[int, Dimension]]) -> list[Verdict]:
        if not todo:
            return []
        if self.cfg.mode == "likelihood":
            return self._likelihood(prompts, responses, todo)
        clipped = {i: (self._clip(prompts[i]), self._clip(responses[i])) for i in {i for i, _ in todo}}
        inputs = [encode(self.tokenizer, self._render(*clipped[i], d), "0") for i, d in todo]
        dims = [d for _, d in todo]
        if self.cfg.mode == "expected":
            verdicts = self._expected(inputs, [i for i, _ in todo], dims)
        else:
            verdicts = self._generated(inputs, dims)
        if self.cfg.rationale:
            verdicts = self._with_rationales(inputs, verdicts)
        self.counts["failures"] += sum(v.score is None for v in verdicts)
        return verdicts

    def _likelihood(self, prompts: list[str], responses: list[str], todo: list[tuple[int, Dimension]]) -> list[Verdict]:
        """Each dimension's own signal (xrlhf/judge/likelihood.py)."""
        items = [(self._clip(prompts[i]), self._clip(responses[i]),
                  self.cfg.dimensions[d.name].instruction or self.instruction, d) for i, d in todo]
        return self.likelihood.verdicts(items, self.cfg.rationale)

    def _clip(self, text: str) -> str:
        return truncate_response(self.tokenizer, text, self.cfg.max_response_tokens)

    def _expected(self, inputs: list[list[int]], samples: list[int], dims: list[Dimension]) -> list[Verdict]:
        # Prefix sharing (scoring.shared_prefix_logprobs): the instructions and rubric come from the
        # judge's PrefixCache, each sample's prompt and response run once for all its dimensions,
        # and each dimension adds only its cue line. Measured in BENCHMARKS.md (Judge).
        groups: dict[int, list[int]] = {}
        for row, sample in enumerate(samples):
            groups.setdefault(sample, []).append(row)
        ids = torch.tensor(list(self.digit_ids.values()))
        tokens = list(self.digit_ids)
        out: list[Verdict | None] = [None] * len(inputs)
        rows_by_sample = list(groups.values())
        logprobs = shared_prefix_logprobs(self.model, [[inputs[r] for r in rows] for rows in rows_by_sample], ids,
                                          self.cfg.batch_size, self._head)
        for rows, lp in zip(rows_by_sample, logprobs):  # lp: [D_i, K]
            for r, row_lp in zip(rows, lp.tolist()):
                out[r] = Verdict(*expected_score(dict(zip(tokens, row_lp)), dims[r].lo, dims[r].hi))
        return out  # type: ignore[return-value]

    def _generated(self, inputs: list[list[int]], dims: list[Dimension]) -> list[Verdict]:
        scores: list[int | None] = self._generate_scores(inputs, dims, sample=False)

        def retry_pending() -> list[int]:
            pending = [i for i, s in enumerate(scores) if s is None]
            if pending:
                self.counts["retries"] += len(pending)
                again = self._generate_scores([inputs[i] for i in pending], [dims[i] for i in pending], sample=True)
                for i, s in zip(pending, again):
                    scores[i] = s
            return [i for i, s in enumerate(scores) if s is None]

        if self.cfg.generate_retries > 0 and None in scores:
            Retrying(stop=stop_after_attempt(self.cfg.generate_retries), retry=retry_if_result(bool),
                     retry_error_callback=lambda state: state.outcome.result())(retry_pending)
        return [Verdict(None if s is None else float(s), None) for s in scores]

    def _generate_scores(self, inputs: list[list[int]], dims: list[Dimension], sample: bool) -> list[int | None]:
        texts = self._generate(inputs, SCORE_TOKENS, sample)
        return [parse_score(t, d.lo, d.hi) for t, d in zip(texts, dims)]

    def _generate(self, inputs: list[list[int]], max_new_tokens: int, sample: bool) -> list[str]:
        """Continuations of each input (batched, left padded), decoded without special tokens."""
        texts: list[str] = []
        for start in range(0, len(inputs), self.cfg.batch_size):
            batch = inputs[start:start + self.cfg.batch_size]
            ids, mask = pad(batch, self.tokenizer.pad_token_id, "left")  # [N, T]
            extra = {"temperature": RETRY_TEMPERATURE, "top_p": 1.0, "top_k": 0} if sample else {}
            with torch.inference_mode():
                out = self.model.generate(input_ids=ids.to(self.model.device), attention_mask=mask.to(self.model.device),
                                          max_new_tokens=max_new_tokens, do_sample=sample,
                                          pad_token_id=self.tokenizer.pad_token_id, **extra)
            texts += self.tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
        return texts

    def _with_rationales(self, inputs: list[list[int]], verdicts: list[Verdict]) -> list[Verdict]:
        """Ask for a one-line reason after each scored answer; stored for people, never used in the reward."""
        scored = [i for i, v in enumerate(verdicts) if v.score is not None]
        follow = [inputs[i] + self.tokenizer(f"{round(verdicts[i].score)}\nReason:",  # type: ignore[arg-type]
                                             add_special_tokens=False)["input_ids"] for i in scored]
        reasons = self._generate(follow, RATIONALE_TOKENS, sample=False) if follow else []
        out = list(verdicts)
        for i, text in zip(scored, reasons):
            out[i] = Verdict(verdicts[i].score, verdicts[i].confidence, text.strip().split("\n")[0])
        return out

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
            p, a, b = self._clip(p), self._clip(a), self._clip(b)
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


def _share(probs: torch.Tensor, is_a: torch.Tensor) -> torch.Tensor:
    """P(A) / (P(A) + P(B)) per row of probs [N, K]; NaN where neither letter has any mass."""
    a = probs[:, is_a].sum(-1)
    return a / (a + probs[:, ~is_a].sum(-1))
