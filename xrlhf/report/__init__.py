"""`xrlhf report`: one self-contained HTML page (inline CSS, PNGs as data URIs) comparing the algorithms of a compare dir.

Reads only the compare directory's files, so it can be rebuilt at any time, also while runs are still writing.
"""
from __future__ import annotations

import base64
import html
import logging
from pathlib import Path
from typing import Callable

from xrlhf.report import figures as figs
from xrlhf.report.data import CompareData, load_compare
from xrlhf.report.sections import (attribution_section, curves_section, dimensions_section, examples_section,
                                   hacking_section, stability_section, timing_section, winrates_section)
from xrlhf.report.study import study_section
from xrlhf.report.summary import summary_section

__all__ = ["build_report", "load_compare"]

log = logging.getLogger(__name__)

FIGURES: dict[str, Callable[[CompareData], bytes | None]] = {
    "curves": figs.curves_figure,
    "validation": figs.validation_figure,
    "dimension_curves": figs.dimension_curves_figure,
    "eval_dimensions": figs.eval_bars_figure,
    "attribution": figs.attribution_figure,
    "hacking": figs.hacking_figure,
    "timing": figs.timing_figure,
}

CSS = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1200px; margin: 0 auto; padding: 1em 1.5em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
nav a { margin-right: 1em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .8em 0; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: .3em .6em; vertical-align: top; text-align: left; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ci { color: #666; font-size: 90%; white-space: nowrap; } .note { color: #8a5a00; } .meta { color: #555; font-size: 90%; }
img { max-width: 100%; height: auto; display: block; margin: .6em 0; }
pre.resp { white-space: pre-wrap; word-break: break-word; max-height: 18em; overflow: auto; margin: 0;
           font: 13px/1.35 ui-monospace, monospace; background: #fafafa; padding: .3em; }
table.examples td { width: 22%; } table.examples td:first-child { width: 12%; }
details { font-size: 90%; margin-top: .3em; } code { background: #f4f4f4; padding: 0 .2em; }
"""


def build_report(compare_dir: Path, out_dir: Path | None = None) -> Path:
    """Write the figures (PNG) and report.html into out_dir (default COMPARE_DIR/report/); returns the HTML path."""
    compare_dir = Path(compare_dir)
    data = load_compare(compare_dir)
    out_dir = Path(out_dir) if out_dir is not None else compare_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    images = render_figures(data, out_dir)
    sections = [summary_section(data), study_section(data, images), curves_section(data, images),
                dimensions_section(data, images),
                attribution_section(data, images), hacking_section(data, images), examples_section(data),
                stability_section(data), timing_section(data, images), winrates_section(data)]
    path = out_dir / "report.html"
    path.write_text(_page(data, sections), encoding="utf-8")
    log.info("report: %s", path)
    return path


def render_figures(data: CompareData, out_dir: Path) -> dict[str, str | None]:
    """{figure name: data URI or None}; each drawn figure is also saved as out_dir/NAME.png."""
    images: dict[str, str | None] = {}
    for name, draw in FIGURES.items():
        png = draw(data)
        if png is None:
            images[name] = None
            (out_dir / f"{name}.png").unlink(missing_ok=True)  # a stale PNG from an earlier build would mislead
            continue
        (out_dir / f"{name}.png").write_bytes(png)
        images[name] = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return images


def _page(data: CompareData, sections: list[str]) -> str:
    title = "xrlhf comparison: " + " vs ".join(data.algorithms)
    meta = data.meta
    judges = meta.get("judges") or {"training": meta.get("judge_model", "?")}
    lines = [f"model <code>{html.escape(str(meta.get('model', '?')))}</code>",
             f"training judge (training rewards, validation curve) <code>{html.escape(str(judges['training']))}</code>",
             "evaluation judge (held-out scores, win rates) "
             + (f"<code>{html.escape(str(judges['evaluation']))}</code>"
                + (" (the training judge)" if judges.get("evaluation_is_training") else "")
                if "evaluation" in judges else "the training judge"),
             f"directory <code>{html.escape(str(data.path))}</code>"]
    if meta.get("command"):
        lines.append(f"command <code>{html.escape(str(meta['command']))}</code>")
    nav = " ".join(f'<a href="#{sid}">{sid}</a>' for sid in
                   ("summary", "study", "curves", "dimensions", "attribution", "hacking", "examples", "stability",
                    "timing", "winrates"))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p class=\"meta\">{' · '.join(lines)}</p><nav>{nav}</nav>"
            + "\n".join(sections) + "</body></html>\n")

