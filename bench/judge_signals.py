"""Can the packaged model read correctness apart from register? (issue 23, the one "Done when" left unmet)

The default judge's correctness reads fit, and fit ranks the good answer above its childish and its over-technical
rewrite in every prompt of the judge-quality set, with a larger mean drop (0.59 of the normalised score) than it
gives a changed fact (0.23). So complexity, a text measure ranking those rewrites in 0.83-0.86 of prompts, is never
the most-moved column. This script asks whether some other statistic of the same two passes (each response token's
log-probability after the question, F, and without it, U) catches a changed fact while staying near chance on a
correct rewrite. It scores every distinct answer of both sets once and prints, per candidate and corruption kind,
the share of prompts where the good answer has the higher value (a tie counts half; guarded kinds left out: the
guards settle those). A candidate that would free complexity needs factual_error high and simple / technical low.

It also measures the register contrast the judge's docstring rejects for complexity: each good answer and its two
rewrites read after the question followed by a cue for a child ("Answer in simple words a young child understands:")
and for an expert ("Answer in an expert's technical terms:"), against the plain "Answer:" of the fit pass. Per
contrast (child - expert, child - plain, expert - plain): how often the childish rewrite reads higher than the good
answer, how often the technical one reads lower, and, around the good answers' median, how often each rewrite lies
further from it than the good answer does (what a two-sided complexity measure would rank).

    python bench/judge_signals.py     # ~9 min on 2 cores: both sets, two passes per answer and three for the register
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

from common import table, write_result

KINDS = ("factual_error", "simple", "technical", "off_topic", "shuffled", "refusal", "truncated", "padded",
         "quoted_nonanswer", "generic", "terse")


def _low(xs: list[float], k: int = 3) -> float:
    return statistics.fmean(sorted(xs)[:k])


def _quantile(xs: list[float], f: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(f * len(s)))]


# name -> (what it is, statistic of the response tokens' log-probs with (F) and without (U) the question)
CANDIDATES: dict[str, tuple[str, Callable[[list[float], list[float]], float]]] = {
    "fit": ("mean F (the default correctness)", lambda F, U: statistics.fmean(F)),
    "fluency": ("mean U", lambda F, U: statistics.fmean(U)),
    "pmi": ("mean F - U (relevance without its quote discount)", lambda F, U: statistics.fmean(F) - statistics.fmean(U)),
    "fit - fluency/2": ("mean F - 0.5 mean U", lambda F, U: statistics.fmean(F) - 0.5 * statistics.fmean(U)),
    "pmi sum": ("sum F - U: what the question tells of the whole response", lambda F, U: sum(F) - sum(U)),
    "median fit": ("median F: one changed word moves it little", lambda F, U: statistics.median(F)),
    "fit q25": ("25th percentile of F", lambda F, U: _quantile(F, 0.25)),
    "min fit": ("the least likely token after the question", lambda F, U: min(F)),
    "low-3 fit": ("mean of the three least likely tokens, F", lambda F, U: _low(F)),
    "low-3 fit - low-3 fluency": ("the same, less the three least likely without the question",
                                  lambda F, U: _low(F) - _low(U)),
    "min pmi": ("the token the question makes least likely", lambda F, U: min(f - u for f, u in zip(F, U))),
    "pmi deficit": ("mean of max(0, U - F): what the question argues against",
                    lambda F, U: -sum(max(0.0, u - f) for f, u in zip(F, U)) / len(F)),
    "median pmi": ("median F - median U", lambda F, U: statistics.median(F) - statistics.median(U)),
}


CUES = {"child": "Answer in simple words a young child understands:", "expert": "Answer in an expert's technical terms:",
        "plain": "Answer:"}
CONTRASTS = (("child", "expert"), ("child", "plain"), ("expert", "plain"))


def register(source, instruction: str, rows: list[dict[str, str]]) -> list[dict[str, object]]:
    """The register contrasts of the module docstring, per contrast: the one-sided and the two-sided shares."""
    from xrlhf.judge import likelihood as lk

    texts = [(r["prompt"], r[k]) for r in rows for k in ("good", "simple", "technical")]
    tails = source.tails([(instruction, f"Question: {p}\n{cue}", lk.tail(a)) for cue in CUES.values() for p, a in texts])
    mean = {}
    for c, cue in enumerate(CUES):
        for k, (p, a) in enumerate(texts):
            t, end = tails[c * len(texts) + k], len(" " + a.strip())
            mean[(cue, p, a)] = statistics.fmean(lp for lp, (s, _) in zip(t.logprobs, t.spans) if s < end)
    out = []
    for hi, lo in CONTRASTS:
        v = {k: [mean[(hi, r["prompt"], r[k])] - mean[(lo, r["prompt"], r[k])] for r in rows]
             for k in ("good", "simple", "technical")}
        centre = statistics.median(v["good"])
        far = {k: statistics.fmean(abs(b - centre) > abs(g - centre) for g, b in zip(v["good"], v[k]))
               for k in ("simple", "technical")}
        out.append({"contrast": f"{hi} - {lo}", "simple above good": statistics.fmean(
                        b > g for g, b in zip(v["good"], v["simple"])),
                    "technical below good": statistics.fmean(b < g for g, b in zip(v["good"], v["technical"])),
                    "two-sided simple": far["simple"], "two-sided technical": far["technical"],
                    "good median": centre})
    return out


def main() -> None:
    from judge_quality import judge_for
    from xrlhf.judge import likelihood as lk
    from xrlhf.judge.quality import HOLDOUT, accuracy, load_quality, pairs

    judge = judge_for({"mode": "likelihood"})
    source, instruction = judge.mode.source, lk.DEFAULT_INSTRUCTION
    out = {}
    for name, path in (("quality", None), ("holdout", HOLDOUT)):
        items = [it for it in pairs(load_quality(path)) if it["corruption"] in KINDS]
        texts = sorted({(it["prompt"], a) for it in items for a in (it["good"], it["bad"])})
        t0 = time.perf_counter()
        tails = source.tails([(instruction, lk.with_question(p), lk.tail(r)) for p, r in texts]
                             + [(instruction, lk.WITHOUT_QUESTION, lk.tail(r)) for p, r in texts])
        values = {}
        for k, (p, r) in enumerate(texts):
            end = len(" " + r.strip())  # the ending's blank line is not the response's own text
            F = [lp for lp, (s, _) in zip(tails[k].logprobs, tails[k].spans) if s < end]
            U = [lp for lp, (s, _) in zip(tails[len(texts) + k].logprobs, tails[len(texts) + k].spans) if s < end]
            assert len(F) == len(U), (p, r)  # tokenised alone, both tails have the same tokens
            values[(p, r)] = {c: f(F, U) for c, (_, f) in CANDIDATES.items()}
        rows = []
        for c, (what, _) in CANDIDATES.items():
            row = {"candidate": c, "what": what}
            for kind in KINDS:
                sel = [it for it in items if it["corruption"] == kind]
                row[kind] = accuracy([values[(it["prompt"], it["good"])][c] for it in sel],
                                     [values[(it["prompt"], it["bad"])][c] for it in sel])
            rows.append(row)
        print(f"\n{name}: {len(texts)} answers, {time.perf_counter() - t0:.0f} s")
        print(table([{k: v for k, v in r.items() if k != "what"} for r in rows], ["candidate", *KINDS]))
        freeing = [r["candidate"] for r in rows if r["factual_error"] >= 0.8 and max(r["simple"], r["technical"]) < 0.8]
        print(f"candidates catching >= 0.80 of changed facts and < 0.80 of both rewrites: {freeing or 'none'}")
        contrasts = register(source, instruction, load_quality(path))
        print(table(contrasts, list(contrasts[0])))
        out[name] = {"prompts": len(load_quality(path)), "answers": len(texts), "rows": rows, "freeing": freeing,
                     "register": contrasts}
    print(f"wrote {write_result('judge_signals', out)}")


if __name__ == "__main__":
    main()
