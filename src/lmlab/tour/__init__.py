"""``lmlab tour``: every family's stop on the bundled data, with a report (runs/tour/report.md and .html).

Each family contributes ``lmlab.tour.<family>.run_stop(ctx)``; a stop trains a small model within its time
budget (``ctx.budget_s``), prints what it found with ``ctx.log`` and adds a report section with ``ctx.section``.
The stops run in the order of the theory: word vectors, classification, recurrent LMs, seq2seq, GANs, GPT.
"""

from __future__ import annotations

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
    ("finetune", "Pretrain, then fine-tune: a tiny GPT on rt-polarity", 75),
]

#: ``lmlab tour --lang zh``: the Chinese stops (modules under lmlab.tour.zh), titles and report in Chinese
STOPS_ZH: list[tuple[str, str, float]] = [
    ("embed", "词向量：人民日报 + jieba 分词", 30),
    ("classify", "中文情感分类：商品评论", 40),
    ("gpt", "字级 GPT：人民日报", 100),
]
STOPS_BY_LANG = {"en": STOPS, "zh": STOPS_ZH}


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


def _stop_module(name: str, lang: str = "en"):
    module = f"lmlab.tour.{name}" if lang == "en" else f"lmlab.tour.{lang}.{name}"
    return importlib.import_module(module) if importlib.util.find_spec(module) else None


def run_tour(out: str | Path = "runs/tour", only: list[str] | None = None, scale: float = 1.0, log=print,
             lang: str = "en") -> Path:
    """Run the stops of ``lang`` (``"en"``, or ``"zh"``: the Chinese stops and a Chinese report; all, or those
    named in ``only``) and write ``report.md`` and ``report.html`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    all_sections: list[Section] = []
    timings = []
    t_start = time.monotonic()
    for name, title, budget in STOPS_BY_LANG[lang]:
        if only and name not in only:
            continue
        module = _stop_module(name, lang)
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
    write_report(out, all_sections, timings, total, lang=lang)
    if lang == "zh":
        log(f"\n导览结束，用时 {total:.0f} 秒；报告：{out / 'report.md'} 和 {out / 'report.html'}")
    else:
        log(f"\ntour finished in {total:.0f} s; report: {out / 'report.md'} and {out / 'report.html'}")
    return out


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


#: the report's own words, per language
_REPORT_TEXT = {
    "en": {
        "title": "lmlab tour report",
        "intro": ["Every model below was trained just now, on 2 CPU cores or whatever this machine has, on the data "
                  "that ", "ships inside lmlab. Numbers are from this run."],
        "header": "| stop | time (s) | budget (s) |",
        "total": "total",
    },
    "zh": {
        "title": "lmlab 中文导览报告",
        "intro": ["下面每个模型都是刚刚在这台机器上（两个 CPU 核心或更多）用 lmlab 自带的中文数据训练的，"
                  "所有数字都来自这次运行。"],
        "header": "| 站 | 用时（秒） | 预算（秒） |",
        "total": "合计",
    },
}


def write_report(out: Path, sections: list[Section], timings: list[tuple[str, float, float]], total: float,
                 lang: str = "en") -> None:
    words = _REPORT_TEXT[lang]
    md = [f"# {words['title']}", ""]
    md += words["intro"]
    md.append("")
    md.append(words["header"])
    md.append("|---|---:|---:|")
    for title, took, budget in timings:
        md.append(f"| {title} | {took:.0f} | {budget:.0f} |")
    md.append(f"| **{words['total']}** | **{total:.0f}** | |")
    md.append("")
    for s in sections:
        md += [f"## {s.title}", "", s.markdown.strip(), ""]
        for img in s.images:
            md += [f"![{img.stem}]({_rel(img, out)})", ""]
    text = "\n".join(md) + "\n"
    checkpoint.atomic_write_text(out / "report.md", text)
    page = (
        "<!doctype html>\n" + ("<html lang='zh-CN'>" if lang == "zh" else "<html>")
        + f"<head><meta charset='utf-8'><title>{words['title']}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;line-height:1.45}"
        "pre{background:#f4f4f4;padding:.8em;overflow-x:auto}code{background:#f4f4f4;padding:0 .2em}"
        "pre code{padding:0}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:.3em .6em}th{background:#f8f8f8}img{max-width:100%}</style>"
        "</head><body>\n" + _markdown_to_html(text) + "\n</body></html>\n"
    )
    checkpoint.atomic_write_text(out / "report.html", page)


def _markdown_to_html(text: str) -> str:
    """Markdown -> HTML with Python-Markdown: tables, fenced code, code spans, emphasis, lists and images.

    Raw HTML in the text is escaped, not passed through: a sample such as ``the <unk> cat`` must show as written.
    """
    import markdown

    renderer = markdown.Markdown(extensions=["tables", "fenced_code", "sane_lists"], output_format="html")
    renderer.preprocessors.deregister("html_block")
    renderer.inlinePatterns.deregister("html")
    return renderer.convert(text)
