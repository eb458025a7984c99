"""Evaluate the base model and trained adapters on held-out prompts: per-dimension scores and win rates."""
from __future__ import annotations

import gc
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from xrlhf.config import Config
from xrlhf.data import load_prompts
from xrlhf.policy.generation import sample
from xrlhf.policy.models import ModelError, load_causal_lm

log = logging.getLogger(__name__)


def _generate(model: Any, tok: Any, prompts: list[str], cfg: Config) -> tuple[list[str], list[int]]:
    exp = sample(model, tok, prompts, 1, cfg.eval.max_new_tokens, temperature=cfg.eval.temperature,
                 seed=cfg.seed, max_prompt_tokens=cfg.data.max_prompt_tokens, tune_linears=cfg.model.tune_linears,
                 stop=cfg.rollout.stop)  # held-out answers end where training samples end
    return exp.responses, exp.lengths()


def _name_meta(name: str) -> tuple[str, int | None]:
    """'ppo-seed1' -> ('ppo', 1); anything else is its own algorithm label."""
    m = re.fullmatch(r"(.+)-seed(\d+)", name)
    return (m.group(1), int(m.group(2))) if m else (name, None)


def generate_all(cfg: Config, checkpoints: dict[str, str], prompts: list[str]) -> dict[str, tuple[list[str], list[int]]]:
    """Greedy responses of the base model and of each adapter, loading the base weights once."""
    from peft import PeftModel

    base, tok = load_causal_lm(cfg.model.name, cfg.model.dtype, cfg.model.load_in_4bit, cfg.model.cache_dir)
    out = {"base": _generate(base, tok, prompts, cfg)}
    for name, path in checkpoints.items():
        t0 = time.perf_counter()
        adapter = Path(path)
        if not adapter.is_dir():
            raise ModelError(f"checkpoint {name}: {adapter} is not a directory")
        if (adapter / "adapter_config.json").is_file():
            model = PeftModel.from_pretrained(base, str(adapter)).eval()
            out[name] = _generate(model, tok, prompts, cfg)
            base = model.unload()  # take the LoRA layers out again: the next adapter starts from the base
        else:
            # full weights (LoRA off): the checkpoint holds the model only; the base's tokenizer is the run's
            full = type(base).from_pretrained(str(adapter), dtype=base.dtype).to(base.device).eval()
            out[name] = _generate(full, tok, prompts, cfg)
            del full
        log.info("eval: generated for %s in %.1fs", name, time.perf_counter() - t0)
    del base
    gc.collect()
    return out


def evaluate(cfg: Config, checkpoints: dict[str, str], out_dir: Path, judge: Any = None) -> Path:
    """Write eval.jsonl (every model × prompt, judged on every dimension by the evaluation judge, eval.judge or the
    training judge), pairwise.jsonl (each model vs base and, per seed, each arm vs each other arm, both orders) and
    judge.json (which judge scored them)."""
    from xrlhf.judge import build_judge, judge_label

    out_dir.mkdir(parents=True, exist_ok=True)
    pset = load_prompts(cfg.data.eval_source, "eval", cfg.data.eval_path, max_prompt_tokens=cfg.data.max_prompt_tokens,
                        limit=cfg.eval.num_prompts)
    prompts = pset.prompts
    responses = generate_all(cfg, checkpoints, prompts)
    judge = judge or build_judge(cfg.eval_judge(), cfg.model.name, cfg.model.cache_dir)
    (out_dir / "judge.json").write_text(json.dumps({"evaluation": judge_label(cfg.eval_judge(), cfg.model.name),
                                                    "evaluation_is_training": cfg.eval.judge is None}), "utf-8")
    rows = []
    for name, (texts, lengths) in responses.items():
        algorithm, seed = ("base", None) if name == "base" else _name_meta(name)
        for pid, (p, r, n, j) in enumerate(zip(prompts, texts, lengths, judge.score(prompts, texts))):
            rows.append({"model": name, "algorithm": algorithm, "seed": seed, "prompt_id": pid, "prompt": p,
                         "response": r, "scores": j.scores, "normalised": j.normalised, "confidence": j.confidence,
                         "reward": j.reward, "rationale": j.rationale, "length": n})
    _write_jsonl(out_dir / "eval.jsonl", rows)
    pair_rows = []
    if cfg.eval.pairwise:
        for name, opponent in pairings(list(responses)):
            pair_rows += _pairwise(judge, prompts, name, responses[name], opponent, responses[opponent])
    _write_jsonl(out_dir / "pairwise.jsonl", pair_rows)
    return out_dir


def pairings(models: list[str]) -> list[tuple[str, str]]:
    """(model, opponent): every trained model against base, then for each pair of arms, in the order they come,
    their runs of the same seed (ppo-seed0 vs reinforce-seed0): a direct comparison per seed pair."""
    trained = [m for m in models if m != "base"]
    out = [(m, "base") for m in trained] if "base" in models else []
    arms = list(dict.fromkeys(_name_meta(m)[0] for m in trained))
    for i, a in enumerate(arms):
        for b in arms[i + 1:]:
            by_seed = {_name_meta(m)[1]: m for m in trained if _name_meta(m)[0] == b}
            out += [(m, by_seed[_name_meta(m)[1]]) for m in trained
                    if _name_meta(m)[0] == a and _name_meta(m)[1] in by_seed]
    return out


def _pairwise(judge: Any, prompts: list[str], name: str, mine: tuple[list[str], list[int]], opponent: str,
              theirs: tuple[list[str], list[int]]) -> list[dict[str, Any]]:
    """Rows of one model vs one opponent, both presentation orders: p_first = P(model better | shown first),
    p_second = P(model better | shown second), each from one order alone (judge.compare_orders), so that their
    agreement measures the judge's position consistency (a judge whose verdict is order-free gives equal ones)."""
    algorithm, seed = _name_meta(name)
    orders = judge.compare_orders(prompts, mine[0], theirs[0])
    return [{"model": name, "algorithm": algorithm, "seed": seed, "opponent": opponent,
             "opponent_algorithm": "base" if opponent == "base" else _name_meta(opponent)[0], "prompt_id": pid,
             "p_first": a, "p_second": b, "length": mine[1][pid], "opponent_length": theirs[1][pid]}
            for pid, (a, b) in enumerate(orders)]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
