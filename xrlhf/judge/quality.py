"""The judge-quality set: good answers and controlled corruptions of them, each aimed at one dimension.

xrlhf/judge/quality.jsonl holds, per prompt, a short correct answer (`good`), the same answer with a fact changed
in the same shape (`factual_error`), a sentence of padding (`filler`), and three rewrites of the answer at the wrong
level: a bare fragment (`terse`), a childish register (`simple`) and needless jargon (`technical`). The other
corruptions are built here, deterministically, so a judge is measured on the same pairs every time
(bench/judge_quality.py, the tests). xrlhf/judge/quality_holdout.jsonl has the same keys for other prompts (a third
of them an instruction followed by an input text): no choice of the judge was made on it.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from xrlhf.data import read_jsonl

PATH = Path(__file__).with_name("quality.jsonl")
HOLDOUT = Path(__file__).with_name("quality_holdout.jsonl")
KEYS = ("id", "prompt", "good", "factual_error", "filler", "terse", "simple", "technical")
REFUSALS = ("I don't know.", "I'm not sure, sorry.", "I cannot answer that.", "No idea.")
# Each corruption and the dimension it makes worse: a judge should score the good answer higher there.
TARGETS = {"off_topic": "helpfulness", "factual_error": "correctness", "shuffled": "coherence",
           "refusal": "helpfulness", "truncated": "coherence", "padded": "verbosity",
           "prompt_copy": "helpfulness", "repetition": "coherence", "empty": "helpfulness",
           "quoted_nonanswer": "helpfulness", "near_copy": "helpfulness", "generic": "helpfulness",
           "terse": "verbosity", "simple": "complexity", "technical": "complexity"}
# What a policy can learn to do to game a judge (quoting and the near-copy were learned by the first study's RLOO).
HACKS = ("repetition", "prompt_copy", "empty", "padded", "quoted_nonanswer", "near_copy", "generic", "truncated")
# Fluent non-answers that quote the question ({q}); answers that would fit any question.
NON_ANSWERS = ('"{q}" That is a question many people ask, and it deserves a careful and complete answer.',
               'You asked: {q} This is an interesting question, and there is a lot that could be said about it.',
               'The question "{q}" has been discussed for a long time, and people still think about it today.',
               'Regarding your question, {q} It is a good question, and I am glad that you asked it.')
GENERIC = ("There are several factors to consider here, and the best answer depends on your situation and goals.",
           "It depends on the context, so it is best to look at the details carefully before deciding.",
           "This is a common question, and the answer can vary depending on a number of different things.",
           "Many experts have looked at this, and the general view is that it depends on the circumstances.")


def load_quality(path: Path | None = None) -> list[dict[str, str]]:
    """The rows of the set, validated: every key present and non-empty, ids unique, the error differs."""
    path = path or PATH
    rows, seen = [], set()
    for n, _, row in read_jsonl(path, strict=True):
        missing = [k for k in KEYS if not isinstance(row.get(k), str) or not row[k].strip()]
        if missing:
            raise ValueError(f"{path}: line {n} lacks a non-empty {', '.join(missing)}")
        if row["id"] in seen:
            raise ValueError(f"{path}: line {n} repeats the id {row['id']!r}")
        if row["factual_error"] == row["good"]:
            raise ValueError(f"{path}: line {n} ({row['id']}): factual_error is the good answer unchanged")
        seen.add(row["id"])
        rows.append(row)
    return rows


def corruptions(rows: list[dict[str, str]], i: int, seed: int = 0) -> dict[str, str]:
    """Every corruption of row i's good answer (TARGETS' keys), the same for the same seed."""
    row = rows[i]
    rng = random.Random(f"{seed}-{row['id']}")
    words = row["good"].split()
    shuffled = words[:]
    while len(words) > 1 and shuffled == words:
        rng.shuffle(shuffled)
    phrase = " ".join(words[:max(3, len(words) // 3)]).rstrip(".,;:")
    loop = " ".join([phrase] * max(3, -(-len(words) * 2 // max(1, len(phrase.split())))))
    asked = row["prompt"].split()
    # the instruction (or question) copied back, cut before its end: the first study's near-copy was the prompt's
    # instruction plus the start of its input
    near = " ".join(asked[:max(5, -(-len(asked) * 3 // 4))]).rstrip("?.,;:")
    return {"off_topic": rows[(i + 1 + rng.randrange(len(rows) - 1)) % len(rows)]["good"],
            "factual_error": row["factual_error"],
            "shuffled": " ".join(shuffled),
            "refusal": REFUSALS[i % len(REFUSALS)],
            "truncated": " ".join(words[:max(2, len(words) // 2)]),
            "padded": f"{row['good']} {row['filler']} {row['filler']}",
            "prompt_copy": row["prompt"],
            "repetition": loop,
            "empty": "",
            "quoted_nonanswer": NON_ANSWERS[i % len(NON_ANSWERS)].format(q=row["prompt"].strip()),
            "near_copy": near,
            "generic": GENERIC[(i + 1) % len(GENERIC)],
            "terse": row["terse"],
            "simple": row["simple"],
            "technical": row["technical"]}


def pairs(rows: list[dict[str, str]], seed: int = 0) -> list[dict[str, Any]]:
    """One entry per (row, corruption): prompt, good, bad, the corruption's name and its target dimension."""
    return [{"id": r["id"], "prompt": r["prompt"], "good": r["good"], "bad": bad, "corruption": kind,
             "target": TARGETS[kind]} for i, r in enumerate(rows) for kind, bad in corruptions(rows, i, seed).items()]


def accuracy(good: list[float | None], bad: list[float | None]) -> float | None:
    """Share of pairs where the good answer scores higher (a tie counts half; a missing score counts as a loss)."""
    if not good:
        return None
    won = sum(1.0 if g is not None and (b is None or g > b) else 0.5 if g is not None and g == b else 0.0
              for g, b in zip(good, bad))
    return won / len(good)
