"""The HTML sections of the comparison report (all but the summary) and the helpers they share.

Everything that came from a run (prompts, responses, rationales, names) is HTML-escaped: it is untrusted text.
"""
from __future__ import annotations

import math
from html import escape
from typing import Any

from xrlhf.report.data import (CompareData, Pairing, Run, early_late_delta, eval_by_model, eval_mean, final_value,
                               model_algorithm, pairings)
from xrlhf.report.figures import STAGES, smooth_window, stage_seconds
from xrlhf.stats import (MIN_POSITION_CONSISTENCY, finite, kl_spikes, mean_ci, rose_and_fell, steps_to_fraction,
                         win_rate_ci)

ROSE_FELL_TOL = 0.05
N_EXAMPLES = 4

# ---- small HTML helpers -------------------------------------------------------------------------------------


def fmt(x: float | None, digits: int = 3) -> str:
    """A number for people; missing is an em dash."""
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def ci_text(ci: tuple[float, float, float], over: str = "seeds") -> str:
    """'0.620 [0.550, 0.690]' with a 95% t interval, or a plain statement that one value has none."""
    mean, lo, hi = ci
    if not math.isfinite(mean):
        return "no data"
    if not math.isfinite(lo):
        return f"{fmt(mean)} <span class=\"ci\">(single {over[:-1]}: no interval)</span>"
    return f"{fmt(mean)} <span class=\"ci\">[{fmt(lo)}, {fmt(hi)}]</span>"


def ci_cell(ci: tuple[float, float, float], metric: str, algorithm: str, over: str = "seeds") -> str:
    """A table cell that carries its number in data-* attributes so tools and tests can read it back."""
    value = repr(ci[0]) if math.isfinite(ci[0]) else "nan"
    return (f'<td class="num" data-metric="{escape(metric)}" data-algorithm="{escape(algorithm)}" '
            f'data-value="{value}">{ci_text(ci, over)}</td>')


def table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    """Rows are HTML already (escaped by the caller); a cell starting with <td is used as is."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def image(uri: str | None, alt: str, missing: str) -> str:
    return f'<img src="{uri}" alt="{escape(alt)}">' if uri else f'<p class="note">{escape(missing)}</p>'


def section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{escape(title)}</h2>{body}</section>'


def note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


# ---- numbers per algorithm ----------------------------------------------------------------------------------


def finals(data: CompareData, algorithm: str, key: str) -> list[float]:
    """Per seed, the mean of `key` over the run's last tenth of steps."""
    return [final_value(r, key) for r in data.runs.get(algorithm, [])]


def eval_rewards(data: CompareData, algorithm: str) -> list[float]:
    """Per trained model (seed) of `algorithm`, its mean eval reward."""
    return [eval_mean(rows) for rows in eval_by_model(data).values() if model_algorithm(rows) == algorithm]


def seed_win_rates(data: CompareData, algorithm: str, opponent: str = "base", length_controlled: bool = False
                   ) -> list[float]:
    """Per trained model of `algorithm`, its win rate over `opponent` (base, or another arm's run of the same seed);
    nan where no prompt had both verdicts or the judge was position-biased there (cannot tell)."""
    return [math.nan if p.position_biased else (p.length_controlled if length_controlled else p.rate)
            for p in pairings(data) if p.algorithm == algorithm and p.opponent_algorithm == opponent]


def n_steps(data: CompareData) -> int:
    """Steps of the longest run (runs still training can be shorter)."""
    return max((len(r.metrics) for r in data.all_runs()), default=0)


def rose_fell(data: CompareData, algorithm: str) -> tuple[list[str], list[str]]:
    """Dimensions whose training score rose / fell from early to late, consistently over the algorithm's seeds."""
    deltas = {d: [early_late_delta(r, f"score/{d}") for r in data.runs.get(algorithm, [])] for d in data.dimensions}
    return rose_and_fell(deltas, ROSE_FELL_TOL)


# ---- figure sections ----------------------------------------------------------------------------------------


def curves_section(data: CompareData, images: dict[str, str | None]) -> str:
    caption = (f"<p>Line: mean over seeds, trailing average over {smooth_window(n_steps(data))} step(s); "
               "band: range (min to max) over seeds.</p>")
    return section("curves", "Training curves", caption + image(images.get("curves"), "training curves",
                                                                "No training metrics to plot."))


def dimensions_section(data: CompareData, images: dict[str, str | None]) -> str:
    dims = data.meta.get("dimensions") or {}
    body = ""
    if any(isinstance(v, dict) and v.get("measures") for v in dims.values()):
        body += "<h3>What each dimension measures (training judge)</h3>" + table(
            ["dimension", "measures"], [[escape(d), escape(v.get("measures", ""))] for d, v in dims.items()])
    body += "<h3>Judge scores during training (normalised, 0 to 1)</h3>"
    body += image(images.get("dimension_curves"), "per-dimension score curves", "No per-dimension scores logged.")
    body += "<h3>Final evaluation on held-out prompts</h3>"
    if images.get("eval_dimensions") is None:
        return section("dimensions", "Dimensions", body + note("No evaluation yet: eval/eval.jsonl not found or empty."))
    body += image(images["eval_dimensions"], "eval scores per dimension", "")
    body += "<p>Error bars: 95% t interval over seeds (none for base or a single seed).</p>"
    groups = ["base"] + data.algorithms
    by_model = eval_by_model(data)
    rows = []
    for g in groups:
        models = [m for m in by_model.values() if model_algorithm(m) == g]
        if models:
            rows.append([escape(g)] + [ci_cell(mean_ci([eval_mean(m, d) for m in models]), f"eval/{d}", g,
                                               over="models" if g == "base" else "seeds") for d in data.dimensions])
    return section("dimensions", "Dimensions", body + table(["model"] + [escape(d) for d in data.dimensions], rows))


def attribution_section(data: CompareData, images: dict[str, str | None]) -> str:
    body = ("<p>Share of each update's advantage carried by each dimension: cov(A, w·s<sub>d</sub>) / Σ cov; "
            "shares sum to about 1 and can be negative.</p>")
    body += image(images.get("attribution"), "attribution over steps", "No attribution logged.")
    rows = [[escape(a)] + [ci_cell(mean_ci(finals(data, a, f"attribution/{d}")), f"attribution/{d}", a)
                           for d in data.dimensions] for a in data.algorithms]
    body += "<p>Final share (last tenth of steps), mean over seeds:</p>"
    return section("attribution", "Reward attribution", body + table(["algorithm"] + list(map(escape, data.dimensions)),
                                                                     rows))


def hacking_section(data: CompareData, images: dict[str, str | None]) -> str:
    body = image(images.get("hacking"), "length vs reward and judge confidence", "No training samples to plot.")
    rows, lines = [], []
    for a in data.algorithms:
        runs = data.runs.get(a, [])
        keys = [f"score/{d}" for d in data.dimensions] + ["response_length/mean", "confidence/mean"]
        deltas = [ci_cell(mean_ci([early_late_delta(r, k) for r in runs]), f"delta/{k}", a) for k in keys]
        corr = ci_cell(mean_ci(finals(data, a, "corr/length_reward")), "corr/length_reward", a)
        rows.append([escape(a)] + deltas + [corr])
        rose, fell = rose_fell(data, a)
        if rose and fell:
            lines.append(f"{escape(a)}: rose {', '.join(map(escape, rose))}; fell {', '.join(map(escape, fell))}.")
        else:
            lines.append(f"{escape(a)}: no dimension rose while another fell.")
    q = max(1, n_steps(data) // 4)
    body += (f"<p>Change from early to late training (mean of the last {q} step(s) minus the first {q}), "
             "mean over seeds, and the final length–reward correlation:</p>")
    body += table(["algorithm"] + [f"Δ {escape(d)}" for d in data.dimensions]
                  + ["Δ length (tokens)", "Δ judge confidence", "corr(length, reward)"], rows)
    body += (f"<p>A dimension counts as rising (falling) when its change exceeds {ROSE_FELL_TOL} in the mean and has "
             "the same sign in every seed. Dimensions that rose while others fell:</p>")
    body += "<ul>" + "".join(f"<li>{line}</li>" for line in lines) + "</ul>"
    return section("hacking", "Reward hacking checks", body)


def timing_section(data: CompareData, images: dict[str, str | None]) -> str:
    body = image(images.get("timing"), "seconds per stage per step", "No timing logged.")
    rows = []
    for a in data.algorithms:
        t = stage_seconds(data, a)
        tps = [v for r in data.runs.get(a, []) for v in r.series("tokens_per_s") if math.isfinite(v)]
        rows.append([escape(a)] + [f'<td class="num">{fmt(t[s], 2)}</td>' for s in (*STAGES, "other")]
                    + [f'<td class="num">{fmt(sum(tps) / len(tps) if tps else math.nan, 1)}</td>'])
    body += table(["algorithm", *STAGES, "other", "tokens/s"], rows)
    return section("timing", "Timing (mean seconds per step)", body)


# ---- tables -------------------------------------------------------------------------------------------------


def stability_section(data: CompareData) -> str:
    if not data.all_runs():
        return section("stability", "Stability", note("No training metrics yet."))
    rows = []
    for a in data.algorithms:
        reach = []
        for run in data.runs.get(a, []):
            idx = steps_to_fraction(run.series("reward/mean"), 0.9, smooth_window(len(run.metrics)))
            reach.append(math.nan if idx is None else run.steps[idx])
            rows.append(_stability_row(run, reach[-1]))
        rows.append([f"<b>{escape(a)}</b>", "all seeds", ci_cell(mean_ci(reach), "steps_to_90", a),
                     ci_cell(mean_ci(finals(data, a, "reward/std")), "reward_std", a), "", ""])
    body = ("<p>Steps to 90%: first step at which the smoothed reward covers 90% of its change from the first to the "
            "last step. KL spikes: steps where KL &gt; median + 3·MAD of the run.</p>")
    return section("stability", "Stability", body + table(
        ["algorithm", "run", "steps to 90% of final reward", "final reward std", "KL spikes (steps)", "skipped updates"],
        rows))


def _stability_row(run: Run, reach: float) -> list[str]:
    spikes = [run.steps[i] for i in kl_spikes(run.series("kl/mean"))]
    skipped = sum(1 for r in run.metrics if r.get("skipped_update") is True)
    return [escape(run.algorithm), escape(run.name), f'<td class="num">{fmt(reach, 0)}</td>',
            f'<td class="num">{fmt(final_value(run, "reward/std"))}</td>',
            escape(", ".join(map(str, spikes)) or "none"), f'<td class="num">{skipped}</td>']


def winrates_section(data: CompareData) -> str:
    pairs = pairings(data)
    if not pairs:
        return section("winrates", "Win rates", note("No pairwise judgements yet: eval/pairwise.jsonl not found or "
                                                     "empty."))
    rows = [[escape(p.model), escape(p.opponent), f'<td class="num">{len(p.wins)}</td>',
             f'<td class="num">{p.skipped}</td>', f'<td class="num">{fmt(p.consistency)}</td>',
             _pair_rate_cell(p), _lc_cell(p)] for p in sorted(pairs, key=lambda p: (p.opponent != "base", p.model))]
    body = ("<p>Per prompt, win = (P(better | shown first) + P(better | shown second)) / 2, so a tie counts half and "
            "position bias cancels; a prompt missing either verdict is skipped. Position consistency: the share of "
            "prompts whose two orders name the same winner (or a tie both times); below "
            f"{MIN_POSITION_CONSISTENCY} the judge follows position more than a coin would, and its win rate (which "
            "then sits near 0.5 by construction) is marked cannot tell. Length-controlled: the least-squares fit of "
            "the per-prompt win on the length difference (tokens, model − opponent), read at equal length. Per "
            "model: 95% Wilson interval over prompts.</p>")
    body += table(["model", "opponent", "prompts", "skipped", "position consistency", "win rate [95% Wilson]",
                   "length-controlled"], rows)
    opponents = [("base", a) for a in data.algorithms] + [
        (b, a) for i, a in enumerate(data.algorithms) for b in data.algorithms[i + 1:]]
    summary = []
    for opponent, a in opponents:
        if not any(p.algorithm == a and p.opponent_algorithm == opponent for p in pairs):
            continue
        rates = seed_win_rates(data, a, opponent)
        lc = seed_win_rates(data, a, opponent, length_controlled=True)
        summary.append([escape(a), escape(opponent), f'<td class="num">{sum(map(math.isfinite, rates))} of '
                        f'{len(rates)}</td>', ci_cell(mean_ci(rates), f"win_rate_vs_{opponent}", a),
                        ci_cell(mean_ci(lc), f"lc_win_rate_vs_{opponent}", a), escape(_win_verdict(rates))])
    body += ("<p>Per arm: mean of its seeds' win rates (against another arm: seed by seed, ppo-seed0 against "
             "reinforce-seed0), 95% t interval over seeds; seeds whose judge was position-biased are left out.</p>")
    return section("winrates", "Win rates", body + table(
        ["arm", "opponent", "seeds that count", "win rate", "length-controlled", "verdict"], summary))


def _pair_rate_cell(p: Pairing) -> str:
    if p.position_biased:
        return f'<td data-metric="win_rate_model" data-algorithm="{escape(p.model)}" data-value="nan">cannot tell</td>'
    return ci_cell(win_rate_ci(p.wins), "win_rate_model", p.model, over="prompts")


def _lc_cell(p: Pairing) -> str:
    return '<td>cannot tell</td>' if p.position_biased else f'<td class="num">{fmt(p.length_controlled)}</td>'


def _win_verdict(rates: list[float]) -> str:
    """Whether the win rates over seeds put the arm above or below its opponent (0.5 is a tie)."""
    mean, lo, hi = mean_ci(rates)
    if not math.isfinite(mean):
        return "cannot tell (no seed with an order-consistent judge)"
    if not math.isfinite(lo):
        return "cannot tell (one seed: no interval)"
    return "preferred" if lo > 0.5 else "opponent preferred" if hi < 0.5 else "within noise of a tie"


def examples_section(data: CompareData) -> str:
    by_model = eval_by_model(data)
    models = _example_models(data, by_model)
    if "base" not in models or len(models) < 2:
        return section("examples", "Examples", note("No evaluation yet: need base and trained eval rows."))
    by_prompt = {m: {r.get("prompt_id"): r for r in by_model[m]} for m in models}
    chosen = _pick_prompts(by_prompt, models)
    rows = [[f"<pre class=\"resp\">{escape(str(by_prompt['base'][pid].get('prompt', '')))}</pre>"]
            + [_response_cell(by_prompt[m][pid]) for m in models] for pid in chosen]
    body = (f"<p>The {len(chosen)} eval prompt(s) where a trained model's reward moved most from base; "
            "scores are raw judge scores, reward the aggregated one.</p>")
    return section("examples", "Examples", body + table(["prompt"] + [escape(m) for m in models], rows, "examples"))


def _example_models(data: CompareData, by_model: dict[str, list[dict[str, Any]]]) -> list[str]:
    """base, then the first evaluated model (lowest seed order in compare.json) of each algorithm."""
    models = ["base"] if "base" in by_model else []
    for a in data.algorithms:
        names = data.meta.get("runs", {}).get(a) or [m for m, rows in by_model.items() if model_algorithm(rows) == a]
        models += [n for n in names if n in by_model][:1]
    return models


def _pick_prompts(by_prompt: dict[str, dict[Any, dict[str, Any]]], models: list[str]) -> list[Any]:
    common = set.intersection(*(set(rows) for rows in by_prompt.values()))

    def moved(pid: Any) -> float:
        base = finite([by_prompt["base"][pid].get("reward")])
        trained = finite([by_prompt[m][pid].get("reward") for m in models[1:]])
        return max((abs(r - base[0]) for r in trained), default=0.0) if base else 0.0

    return sorted(common, key=lambda pid: (-moved(pid), str(pid)))[:N_EXAMPLES]


def _response_cell(row: dict[str, Any]) -> str:
    scores = row.get("scores") or {}
    score_text = ", ".join(f"{escape(str(d))} {escape(str(v)) if v is not None else '—'}" for d, v in scores.items())
    reward = row.get("reward")
    out = (f"<pre class=\"resp\">{escape(str(row.get('response', '')))}</pre>"
           f"<div>{score_text}; reward {fmt(reward) if isinstance(reward, (int, float)) else '—'}</div>")
    rationale = {d: t for d, t in (row.get("rationale") or {}).items() if t}
    if rationale:
        items = "".join(f"<li><b>{escape(str(d))}</b>: {escape(str(t))}</li>" for d, t in rationale.items())
        out += f"<details><summary>judge rationale</summary><ul>{items}</ul></details>"
    return out
