"""Judge throughput: the study's generate-and-parse method vs expected mode, with and without prefix sharing.

    python bench/judge.py                      # 64 pairs x 5 dimensions, every method on every pair
    python bench/judge.py --pairs 8            # a quick run
    python bench/judge.py --generate-pairs 16  # generate mode on the first 16 pairs only (it is the slow one)
    # the figure in BENCHMARKS.md:
    python bench/judge.py --pairs 32 --plain-pairs 12 --generate-pairs 12

All methods judge the same (prompt, response) pairs on the same five dimensions with the same packaged
gemma-3-270m on CPU. The first three use the same judge input ids (the per_dimension template, the study's
format, with sanitising and truncation):

* generate  - the study's method: one `model.generate` call per pair per dimension (greedy, SCORE_TOKENS new
              tokens), the score parsed with a regex; an unparseable answer is retried with sampling via
              tenacity, up to `judge.generate_retries` more times.
* plain     - expected mode, all pairs x dimensions in left-padded batches of `batch_size` sequences: one
              forward pass per batch, the score is the expectation of the next-token distribution over 0..4.
* shared    - expected mode as HFJudge runs it (the default): the instructions from the judge's cache, then
              one packed call per chunk of `batch_size` sequences: a row per pair holding its prompt +
              response block once and every dimension line after it, each line masked from the others.
* rubric_first - the same with the default template (`rubric_first`): all definitions in the cached
              instructions, so each dimension adds only its name and the cue.

Then each judge template scores the adversarial set (xrlhf/judge/adversarial.py, as
tests/judge/test_adversarial.py does) and the held-out set beside it, and the worst score uplift is
reported beside its speed.

Throughput is pairs·dimensions per second of wall time, the process's CPU seconds (all torch threads) beside
it (model already loaded, one warm-up pass not counted); the methods alternate `--round` pairs at a time. The
pairs: `--pairs` bundled prompts (seeded shuffle) with responses the same gemma wrote once
(greedy, cached in bench/results/judge_pairs.jsonl so every run judges the same text); every fourth pair
gets the response written for another prompt, so the set holds plainly bad answers too.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from tenacity import Retrying, retry_if_result, stop_after_attempt  # noqa: E402

from xrlhf.config import DEFAULT_DIMENSIONS, JudgeConfig  # noqa: E402
from xrlhf.data import load_prompts  # noqa: E402
from xrlhf.judge.adversarial import CASES, HOLDOUT, TOLERANCE, load_cases, uplifts  # noqa: E402
from xrlhf.judge.hf import HFJudge  # noqa: E402
from xrlhf.judge.modes import RETRY_TEMPERATURE, SCORE_TOKENS  # noqa: E402
from xrlhf.judge.rubric import expected_score, parse_score  # noqa: E402
from xrlhf.judge.scoring import last_logprobs  # noqa: E402
from xrlhf.judge.template import encode, render_dimension  # noqa: E402

RESULTS = REPO / "bench" / "results"
PAIRS_FILE = RESULTS / "judge_pairs.jsonl"
RESPONSE_TOKENS = 48
MISMATCH_EVERY = 4  # every 4th pair gets another prompt's response
TARGET_RATIO = 10.0


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    import transformers

    return {"nproc": os.cpu_count(), "cpu": cpu, "torch_threads": torch.get_num_threads(),
            "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__}


def make_pairs(judge: HFJudge, n: int) -> list[dict[str, str]]:
    """n (prompt, response) pairs, read from PAIRS_FILE when it holds enough, else written by the judge model."""
    if PAIRS_FILE.exists():
        rows = [json.loads(line) for line in PAIRS_FILE.read_text().splitlines() if line.strip()]
        if len(rows) >= n:
            return rows[:n]
    prompts = load_prompts("bundled", split="train", shuffle=True, seed=0, limit=n).prompts
    model, tok = judge.model, judge.tokenizer
    written: list[str] = []
    for start in range(0, len(prompts), 16):
        batch = [tok(f"Question: {p}\nAnswer:")["input_ids"] for p in prompts[start:start + 16]]
        width = max(map(len, batch))
        ids = torch.tensor([[tok.pad_token_id] * (width - len(b)) + b for b in batch])
        mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(b) for b in batch])[:, None]).long()
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=RESPONSE_TOKENS,
                                 do_sample=False, pad_token_id=tok.pad_token_id)
        written += [t.strip() for t in tok.batch_decode(out[:, width:], skip_special_tokens=True)]
    rows = []
    for i, p in enumerate(prompts):
        mismatched = i % MISMATCH_EVERY == MISMATCH_EVERY - 1
        response = written[(i + len(prompts) // 2) % len(prompts)] if mismatched else written[i]
        rows.append({"prompt": p, "response": response or "(empty)", "mismatched": mismatched})
    RESULTS.mkdir(parents=True, exist_ok=True)
    PAIRS_FILE.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows[:n]


def judge_inputs(judge: HFJudge, pairs: list[dict[str, str]]) -> list[list[list[int]]]:
    """[pair][dimension] -> the judge's input ids, exactly as HFJudge builds them."""
    out = []
    for row in pairs:
        p, r = judge.inputs.clip(row["prompt"]), judge.inputs.clip(row["response"])
        out.append([encode(judge.tokenizer, render_dimension(judge.template, p, r, d, judge.labels), "0")
                    for d in judge.rubric.dimensions])
    return out


def run_generate(judge: HFJudge, inputs: list[list[list[int]]], retries: int) -> tuple[list[list[float | None]], dict]:
    """The study's method: one generate call per pair per dimension, regex parse, tenacity retries."""
    model, tok = judge.model, judge.tokenizer
    counts = {"calls": 0, "retries": 0, "unparsed": 0, "raw": []}

    def one(ids: list[int], lo: int, hi: int) -> int | None:
        attempt = {"n": 0}

        def ask() -> int | None:
            sample = attempt["n"] > 0
            attempt["n"] += 1
            counts["calls"] += 1
            extra = {"temperature": RETRY_TEMPERATURE, "top_p": 1.0, "top_k": 0} if sample else {}
            with torch.inference_mode():
                out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                     max_new_tokens=SCORE_TOKENS, do_sample=sample, pad_token_id=tok.pad_token_id, **extra)
            text = tok.decode(out[0, len(ids):], skip_special_tokens=True)
            if len(counts["raw"]) < 12:
                counts["raw"].append(text)
            return parse_score(text, lo, hi)

        score = Retrying(stop=stop_after_attempt(1 + retries), retry=retry_if_result(lambda s: s is None),
                         retry_error_callback=lambda state: state.outcome.result())(ask)
        counts["retries"] += attempt["n"] - 1
        counts["unparsed"] += score is None
        return score

    dims = judge.rubric.dimensions
    scores = [[None if (s := one(ids, d.lo, d.hi)) is None else float(s) for ids, d in zip(row, dims)] for row in inputs]
    return scores, counts


def run_plain(judge: HFJudge, inputs: list[list[list[int]]]) -> list[list[float | None]]:
    """Expected mode without prefix sharing: every pair x dimension a row of a left-padded batch."""
    flat = [ids for row in inputs for ids in row]
    digits = torch.tensor(list(judge.digit_ids.values()))
    logprobs: list[list[float]] = []
    for start in range(0, len(flat), judge.cfg.batch_size):
        logprobs += last_logprobs(judge.model, flat[start:start + judge.cfg.batch_size], judge.tokenizer.pad_token_id,
                                  digits).tolist()
    dims = judge.rubric.dimensions
    out, k = [], 0
    for _ in inputs:
        row = []
        for d in dims:
            row.append(expected_score(dict(zip(judge.digit_ids, logprobs[k])), d.lo, d.hi)[0])
            k += 1
        out.append(row)
    return out


def adversarial(judge: HFJudge, path: Path = CASES) -> dict[str, Any]:
    """Worst uplift of the targeted dimension's normalised score over an adversarial set, and the time taken."""
    rows, (wall, _) = timed(uplifts, judge, load_cases(path))
    rows.sort(key=lambda r: r["uplift"], reverse=True)
    return {"cases": len(rows), "seconds": wall, "tolerance": TOLERANCE, "worst_uplift": rows[0]["uplift"],
            "over_tolerance": sum(r["uplift"] > TOLERANCE for r in rows),
            "worst_cases": [{k: r[k] for k in ("uplift", "dimension", "injection")} for r in rows[:3]]}


def run_shared(judge: HFJudge, pairs: list[dict[str, str]]) -> list[list[float | None]]:
    """Expected mode as the trainer runs it (HFJudge.score, cache off so everything is computed)."""
    names = judge.rubric.names
    return [[j.scores[n] for n in names] for j in judge.score([p["prompt"] for p in pairs], [p["response"] for p in pairs])]


def ranks(xs: list[float]) -> list[float]:
    """Ranks 1..n, ties sharing their average rank."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    out = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def pearson(xs: list[float], ys: list[float]) -> float | None:
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return None if sxx == 0 or syy == 0 else sxy / math.sqrt(sxx * syy)


def timed(fn: Any, *args: Any) -> tuple[Any, tuple[float, float]]:
    """fn's result and (wall seconds, CPU seconds of this process: all torch threads)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, (time.perf_counter() - start, time.process_time() - cpu)


def _add(result: dict[str, Any], pairs: int, seconds: tuple[float, float]) -> None:
    result["pairs"] += pairs
    result["seconds"] += seconds[0]
    result["cpu_seconds"] += seconds[1]
    result["loadavg_1min"].append(round(os.getloadavg()[0], 2))


def chunk_sizes(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """The default judge (HFJudge.score, cache off) on all pairs in one call, once per judge.batch_size."""
    rows = []
    for size in [int(x) for x in args.chunk_sizes.split(",")]:
        judge = HFJudge(JudgeConfig(model="packaged", mode="expected", cache=False, batch_size=size), "packaged")
        pairs = make_pairs(judge, args.pairs)
        run_shared(judge, pairs[:1])  # warm-up
        _, (wall, cpu) = timed(run_shared, judge, pairs)
        rows.append({"batch_size": size, "pairs": len(pairs), "seconds": wall, "cpu_seconds": cpu,
                     "loadavg_1min": round(os.getloadavg()[0], 2)})
        print(f"judge.batch_size {size:3d}: {len(pairs)} pairs in {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    report = {"command": command, "machine": machine(), "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
              "template": "default", "rows": rows}
    Path(args.out or RESULTS / "judge_chunks.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=64, help="pairs judged in expected mode (default 64)")
    ap.add_argument("--generate-pairs", type=int, default=None,
                    help="the first this many pairs are judged in generate mode too (default: all)")
    ap.add_argument("--plain-pairs", type=int, default=None,
                    help="the first this many pairs are judged by plain batches too (default: all)")
    ap.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass (judge.batch_size)")
    ap.add_argument("--round", type=int, default=2, help="pairs per turn of each method (they alternate)")
    ap.add_argument("--retries", type=int, default=2, help="generate mode: sampled retries of an unparseable answer")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument("--chunk-sizes", default=None,
                    help="only time the default judge on all pairs at each of these judge.batch_size values, "
                         "e.g. 8,16,32,80 (writes bench/results/judge_chunks.json unless --out)")
    ap.add_argument("--out", default=None, help="default bench/results/judge.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    command = "python bench/judge.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.chunk_sizes:
        return chunk_sizes(args, command)

    # The study's format (per_dimension) for generate mode, the plain batches and expected_shared; the
    # default template (rubric_first) for expected_rubric_first.
    cfg = JudgeConfig(model="packaged", mode="expected", cache=False, batch_size=args.batch_size,
                      generate_retries=args.retries, dimensions=DEFAULT_DIMENSIONS, template="per_dimension")
    load_start = time.perf_counter()
    judge = HFJudge(cfg, "packaged")
    load_s = time.perf_counter() - load_start
    rubric_first = HFJudge(cfg.model_copy(update={"template": None}), "packaged")
    pairs = make_pairs(judge, args.pairs)
    n_gen = min(args.generate_pairs or len(pairs), len(pairs))
    n_plain = min(args.plain_pairs or len(pairs), len(pairs))
    inputs = judge_inputs(judge, pairs)
    dims = len(judge.rubric.dimensions)
    lengths = [len(ids) for row in inputs for ids in row]
    print(f"{len(pairs)} pairs x {dims} dimensions, judge inputs {min(lengths)}-{max(lengths)} tokens "
          f"(mean {sum(lengths) / len(lengths):.0f}); plain batches on {n_plain}, generate mode on {n_gen} pairs", flush=True)

    run_shared(judge, pairs[:1])  # warm-up: first-call allocations are not part of any method's figure
    run_shared(rubric_first, pairs[:1])
    # The methods take turns, `--round` pairs at a time, so a change in machine load (this machine is
    # shared) hits all of them alike instead of whichever happened to run last.
    names = ("expected_shared", "expected_rubric_first", "expected_plain", "generate")
    results: dict[str, Any] = {k: {"pairs": 0, "seconds": 0.0, "cpu_seconds": 0.0, "loadavg_1min": []} for k in names}
    shared: list[list[float | None]] = []
    plain: list[list[float | None]] = []
    first: list[list[float | None]] = []
    generated: list[list[float | None]] = []
    counts = {"calls": 0, "retries": 0, "unparsed": 0, "raw": []}
    for lo in range(0, len(pairs), args.round):
        hi = lo + args.round
        out, t = timed(run_shared, judge, pairs[lo:hi])
        shared += out
        _add(results["expected_shared"], len(out), t)
        out, t = timed(run_shared, rubric_first, pairs[lo:hi])
        first += out
        _add(results["expected_rubric_first"], len(out), t)
        if lo < n_plain:
            out, t = timed(run_plain, judge, inputs[lo:min(hi, n_plain)])
            plain += out
            _add(results["expected_plain"], len(out), t)
        if lo < n_gen:
            (out, c), t = timed(run_generate, judge, inputs[lo:min(hi, n_gen)], args.retries)
            generated += out
            _add(results["generate"], len(out), t)
            for k in ("calls", "retries", "unparsed"):
                counts[k] += c[k]
            counts["raw"] = (counts["raw"] + c["raw"])[:12]
        print(f"pairs {lo}-{min(hi, len(pairs)) - 1}: " + ", ".join(f"{k} {r['seconds']:.0f} s" for k, r in results.items()),
              flush=True)
    results["generate"].update({"generate_calls": counts["calls"], "retries": counts["retries"],
                                "unparsed": counts["unparsed"], "sample_answers": counts["raw"]})
    for r in results.values():
        r["pairs_x_dims_per_s"] = r["pairs"] * dims / r["seconds"]
        r["pairs_x_dims_per_cpu_s"] = r["pairs"] * dims / r["cpu_seconds"]

    diff = max(abs(a - b) for ra, rb in zip(shared[:n_plain], plain) for a, b in zip(ra, rb) if a is not None and b is not None)

    def agreement(expected: list[list[float | None]]) -> dict[str, Any]:
        both = [(e, g) for re_, rg in zip(expected[:n_gen], generated) for e, g in zip(re_, rg)
                if g is not None and e is not None]
        xs, ys = [e for e, _ in both], [g for _, g in both]
        return {"n": len(both), "of": n_gen * dims, "pearson": pearson(xs, ys), "spearman": pearson(ranks(xs), ranks(ys))}

    print("adversarial set, per template ...", flush=True)
    robustness = {name: {"set": adversarial(j), "holdout": adversarial(j, HOLDOUT)}
                  for name, j in (("per_dimension", judge), ("rubric_first", rubric_first))}
    rate = {k: r["pairs_x_dims_per_s"] for k, r in results.items()}
    cpu_rate = {k: r["pairs_x_dims_per_cpu_s"] for k, r in results.items()}
    report = {
        "command": command,
        "machine": machine(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "model": "packaged gemma-3-270m, float32, CPU",
        "load_s": load_s,
        "dimensions": judge.rubric.names,
        "pairs": len(pairs),
        "mismatched_pairs": sum(bool(p.get("mismatched")) for p in pairs),
        "pairs_file": str(PAIRS_FILE.relative_to(REPO)),
        "batch_size": args.batch_size,
        "score_tokens": SCORE_TOKENS,
        "judge_input_tokens": {"min": min(lengths), "max": max(lengths), "mean": sum(lengths) / len(lengths)},
        "methods": results,
        "ratio_expected_shared_vs_generate": rate["expected_shared"] / rate["generate"],
        "ratio_expected_rubric_first_vs_generate": rate["expected_rubric_first"] / rate["generate"],
        "ratio_expected_plain_vs_generate": rate["expected_plain"] / rate["generate"],
        "ratio_prefix_sharing": rate["expected_shared"] / rate["expected_plain"],
        "cpu_ratio_expected_shared_vs_generate": cpu_rate["expected_shared"] / cpu_rate["generate"],
        "cpu_ratio_expected_rubric_first_vs_generate": cpu_rate["expected_rubric_first"] / cpu_rate["generate"],
        "cpu_ratio_expected_plain_vs_generate": cpu_rate["expected_plain"] / cpu_rate["generate"],
        "cpu_ratio_prefix_sharing": cpu_rate["expected_shared"] / cpu_rate["expected_plain"],
        "target_ratio": TARGET_RATIO,
        "max_abs_diff_shared_vs_plain": diff,
        "correlation_expected_vs_generate": agreement(shared),
        "correlation_rubric_first_vs_generate": agreement(first),
        "correlation_rubric_first_vs_expected": {"pearson": pearson([x for r in first for x in r], [x for r in shared for x in r])},
        "adversarial": robustness,
        "mean_expected_score": {"matched": _mean([sum(r) / dims for r, p in zip(shared, pairs) if not p.get("mismatched")]),
                                "mismatched": _mean([sum(r) / dims for r, p in zip(shared, pairs) if p.get("mismatched")])},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out or RESULTS / "judge.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("ratio_expected_shared_vs_generate", "ratio_expected_rubric_first_vs_generate",
                                             "ratio_expected_plain_vs_generate", "adversarial",
                                             "ratio_prefix_sharing", "cpu_ratio_expected_shared_vs_generate",
                                             "cpu_ratio_prefix_sharing", "max_abs_diff_shared_vs_plain",
                                             "correlation_expected_vs_generate", "correlation_rubric_first_vs_generate")},
                     indent=2))
    for name, r in results.items():
        print(f"{name:22s} {r['pairs']:3d} pairs  {r['seconds']:7.1f} s wall {r['cpu_seconds']:7.1f} s CPU  "
              f"{r['pairs_x_dims_per_s']:6.2f} pairs·dims/s")
    return report


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


if __name__ == "__main__":
    main()
