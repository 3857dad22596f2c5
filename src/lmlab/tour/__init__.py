"""``lmlab tour``: every family's stop on the bundled data, with a report (runs/tour/report.md and .html).

Each family contributes ``lmlab.tour.<family>.run_stop(ctx)``; a stop trains a small model within its time
budget (``ctx.budget_s``), prints what it found with ``ctx.log`` and adds a report section with ``ctx.section``.
The stops run in the order of the theory: word vectors, classification, recurrent LMs, seq2seq, GANs, GPT.
"""

from __future__ import annotations

import html
import importlib
import importlib.util
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lmlab import checkpoint

ASSETS = Path(__file__).resolve().parents[1] / "assets"

#: (module, title, budget in seconds on 2 CPU cores)
STOPS: list[tuple[str, str, float]] = [
    ("embed", "Word vectors: word2vec and GloVe", 60),
    ("classify", "Sentiment classification: the Keras Embedding + LSTM project", 150),
    ("lm", "A character LSTM language model", 75),
    ("seq2seq", "Translation with attention: English -> French", 100),
    ("gan", "SeqGAN on the synthetic oracle", 60),
    ("gpt", "A tiny character GPT", 80),
]


@dataclass
class Section:
    title: str
    markdown: str
    images: list[Path] = field(default_factory=list)


@dataclass
class TourContext:
    workdir: Path
    data_dir: Path
    budget_s: float
    log: Callable[[str], None]
    sections: list[Section] = field(default_factory=list)
    #: a scale factor < 1 shrinks every stop (tests use it)
    scale: float = 1.0

    def section(self, title: str, markdown: str, images: list[str | Path] | None = None) -> None:
        self.sections.append(Section(title, markdown, [Path(p) for p in images or []]))


def _stop_module(name: str):
    module = f"lmlab.tour.{name}"
    return importlib.import_module(module) if importlib.util.find_spec(module) else None


def run_tour(out: str | Path = "runs/tour", only: list[str] | None = None, scale: float = 1.0, log=print) -> Path:
    """Run the stops (all, or those named in ``only``) and write ``report.md`` and ``report.html`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    all_sections: list[Section] = []
    timings = []
    t_start = time.monotonic()
    for name, title, budget in STOPS:
        if only and name not in only:
            continue
        module = _stop_module(name)
        if module is None:
            continue
        workdir = out / name
        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        log(f"\n== {title} ==")
        ctx = TourContext(workdir=workdir, data_dir=ASSETS, budget_s=budget * scale, log=log, scale=scale)
        t0 = time.monotonic()
        module.run_stop(ctx)
        took = time.monotonic() - t0
        timings.append((title, took, budget * scale))
        for s in ctx.sections:
            all_sections.append(Section(s.title, s.markdown, s.images))
    total = time.monotonic() - t_start
    write_report(out, all_sections, timings, total)
    log(f"\ntour finished in {total:.0f} s; report: {out / 'report.md'} and {out / 'report.html'}")
    return out


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def write_report(out: Path, sections: list[Section], timings: list[tuple[str, float, float]], total: float) -> None:
    md = ["# lmlab tour report", ""]
    md.append("Every model below was trained just now, on 2 CPU cores or whatever this machine has, on the data that ")
    md.append("ships inside lmlab. Numbers are from this run.")
    md.append("")
    md.append("| stop | time (s) | budget (s) |")
    md.append("|---|---:|---:|")
    for title, took, budget in timings:
        md.append(f"| {title} | {took:.0f} | {budget:.0f} |")
    md.append(f"| **total** | **{total:.0f}** | |")
    md.append("")
    body_html = []
    for s in sections:
        md += [f"## {s.title}", "", s.markdown.strip(), ""]
        body_html.append(f"<h2>{html.escape(s.title)}</h2>")
        body_html.append(_markdown_to_html(s.markdown))
        for img in s.images:
            rel = _rel(img, out)
            md += [f"![{img.stem}]({rel})", ""]
            body_html.append(f'<p><img src="{html.escape(rel)}" alt="{html.escape(img.stem)}" style="max-width:100%"></p>')
    checkpoint.atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    rows = "".join(
        f"<tr><td>{html.escape(t)}</td><td>{took:.0f}</td><td>{b:.0f}</td></tr>" for t, took, b in timings
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>lmlab tour report</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em}"
        "pre{background:#f4f4f4;padding:.8em;overflow-x:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.3em .6em}</style></head><body>"
        "<h1>lmlab tour report</h1><table><tr><th>stop</th><th>time (s)</th><th>budget (s)</th></tr>"
        f"{rows}<tr><td><b>total</b></td><td><b>{total:.0f}</b></td><td></td></tr></table>"
        + "".join(body_html)
        + "</body></html>"
    )
    checkpoint.atomic_write_text(out / "report.html", page)


def _markdown_to_html(text: str) -> str:
    """Just enough Markdown for the report: fenced code, tables, lists and paragraphs."""
    out, para, in_code, table = [], [], False, []

    def flush_para() -> None:
        if para:
            out.append("<p>" + html.escape(" ".join(para)) + "</p>")
            para.clear()

    def flush_table() -> None:
        if table:
            rows = [r for r in table if not set(r.replace("|", "").strip()) <= set("-: ")]
            cells = ["".join(f"<td>{html.escape(c.strip())}</td>" for c in r.strip().strip("|").split("|")) for r in rows]
            out.append("<table>" + "".join(f"<tr>{c}</tr>" for c in cells) + "</table>")
            table.clear()

    for line in text.strip().splitlines():
        if line.startswith("```"):
            flush_para()
            flush_table()
            out.append("</pre>" if in_code else "<pre>")
            in_code = not in_code
        elif in_code:
            out.append(html.escape(line))
        elif line.strip().startswith("|"):
            flush_para()
            table.append(line)
        elif not line.strip():
            flush_para()
            flush_table()
        elif line.lstrip().startswith(("- ", "* ")):
            flush_para()
            flush_table()
            out.append("<li>" + html.escape(line.lstrip()[2:]) + "</li>")
        else:
            flush_table()
            para.append(line.strip())
    flush_para()
    flush_table()
    if in_code:
        out.append("</pre>")
    return "\n".join(out).replace("<pre>\n", "<pre>")
