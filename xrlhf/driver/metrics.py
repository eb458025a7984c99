"""What a step writes: its metrics row (metrics.jsonl), one row per sample (samples.jsonl), and the share of the
update each judge dimension carried (attribution). Pure functions of a StepOutcome; the controller writes them."""
from __future__ import annotations

from typing import Any

import numpy as np

from xrlhf.config import Config
from xrlhf.driver.step import StepOutcome
from xrlhf.judge.base import Judgement
from xrlhf.judge.rubric import Rubric


def metrics_row(cfg: Config, step: int, out: StepOutcome) -> dict[str, Any]:
    """Reward, KL, length, per-dimension scores, confidence, attribution, judge counters, learner metrics, times."""
    exp, judgements = out.exp, out.judgements
    kl = exp.token_kl().sum(-1)  # [B]
    lengths = exp.response_mask.float().sum(-1)
    rewards = [j.reward for j in judgements if j.reward is not None]
    dims = list(cfg.judge.dimensions)
    row: dict[str, Any] = {"step": step, "algorithm": cfg.algorithm.name, "seed": cfg.seed,
                           "policy_version": exp.policy_version,
                           "reward/mean": float(np.mean(rewards)) if rewards else None,
                           "reward/std": float(np.std(rewards)) if rewards else None,
                           "kl/mean": float(kl.mean()), "response_length/mean": float(lengths.mean()),
                           "tokens_per_s": float(lengths.sum()) / max(out.times["time/step"], 1e-9),
                           "judge/missing": int(sum(j.missing for j in judgements)),
                           "judge/dropped": int(sum(j.reward is None for j in judgements))}
    for d in dims:
        vals = [j.normalised.get(d) for j in judgements if j.normalised.get(d) is not None]
        row[f"score/{d}"] = float(np.mean(vals)) if vals else None
    confs = [c for j in judgements for c in j.confidence.values() if c is not None]
    row["confidence/mean"] = float(np.mean(confs)) if confs else None
    row.update(attribution(judgements, out.advantages, Rubric.from_config(cfg.judge)))
    scored = out.scored
    row["corr/length_reward"] = corr([float(lengths[i]) for i in scored], [judgements[i].reward for i in scored])
    row.update({f"judge/{k}": v for k, v in out.judged.stats.items()})
    row.update(out.update.metrics if out.update is not None else {"skipped_update": True})
    row.update(out.times)
    return row


def sample_rows(step: int, out: StepOutcome) -> list[dict[str, Any]]:
    """One row per sample: prompt, response, every dimension's score and reason, KL, reward, advantage."""
    exp = out.exp
    kl, lengths = exp.token_kl().sum(-1), exp.lengths()
    # updates between the weights that sampled it and the ones it trained (algorithm.async_steps); None: no update
    staleness = out.update.metrics.get("async/staleness") if out.update is not None else None
    return [{"step": step, "prompt": exp.prompts[i], "response": exp.responses[i], "scores": j.scores,
             "normalised": j.normalised, "confidence": j.confidence, "rationale": j.rationale,
             "kl": float(kl[i]), "reward": j.reward, "advantage": out.advantages[i],
             "policy_version": exp.policy_version, "staleness": staleness if out.advantages[i] is not None else None,
             "length": lengths[i]}
            for i, j in enumerate(out.judgements)]


def attribution(judgements: list[Judgement], advantages: list[float | None], rubric: Rubric) -> dict[str, float | None]:
    """Share of the update's advantage each dimension carried: cov(A, c_d·s_d) / Σ_d cov(A, c_d·s_d), with c_d the
    dimension's coefficient in the rubric's aggregation (Rubric.coefficients).

    Exact for mean/weighted aggregation (the reward is linear in the scores); for `min` it is the linear
    approximation. Missing scores take the batch mean, so they carry no share.
    """
    coefficients = rubric.coefficients()
    idx = [i for i, a in enumerate(advantages) if a is not None]
    out: dict[str, float | None] = {f"attribution/{d}": None for d in coefficients}
    if len(idx) < 2:
        return out
    adv = np.array([advantages[i] for i in idx])
    covs = {}
    for d, c in coefficients.items():
        s = np.array([judgements[i].normalised.get(d) if judgements[i].normalised.get(d) is not None else np.nan
                      for i in idx], dtype=float)
        s = np.where(np.isnan(s), np.nanmean(s) if np.isfinite(s).any() else 0.0, s)
        covs[d] = float(np.mean((adv - adv.mean()) * (c * s - c * s.mean())))
    denom = sum(covs.values())
    if abs(denom) < 1e-12:
        return out
    return {f"attribution/{d}": c / denom for d, c in covs.items()}


def corr(x: list[float], y: list[float]) -> float | None:
    """Pearson correlation; None for fewer than three points or a constant side."""
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def sum_stats(stats: list[dict[str, float]]) -> dict[str, float]:
    """Counters of several actors added up key by key."""
    out: dict[str, float] = {}
    for s in stats:
        for k, v in s.items():
            out[k] = out.get(k, 0.0) + v
    return out
