"""The guided tour: stops run within their budgets and the report is written."""

from __future__ import annotations

import re
from pathlib import Path

from lmlab.cli import main
from lmlab.tour import STOPS, Section, _markdown_to_html, write_report


def test_report_markdown_and_html(tmp_path):
    png = tmp_path / "a.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    write_report(tmp_path, [Section("Stop", "| a | b |\n|---|---|\n| 1 | 2 |\n\n```\ncode <x>\n```\n\n- item", [png])], [("Stop", 1.0, 2.0)], 1.0)
    md = (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    assert "## Stop" in md and "![a](a.png)" in md
    assert re.search(r"<td>1</td>\s*<td>2</td>", page) and "code &lt;x&gt;" in page
    assert re.search(r'<img [^>]*src="a.png"', page)


def test_markdown_subset():
    html = _markdown_to_html("para one\nstill one\n\n- x\n")
    assert html == "<p>para one\nstill one</p>\n<ul>\n<li>x</li>\n</ul>"


def test_report_html_renders_markdown(tmp_path):
    """report.html is real Markdown rendering: bold, code spans, tables, lists; no raw ** or backticks left."""
    body = (
        "The **bilstm** preset (`lmlab classify train --preset bilstm`) wins:\n\n"
        "| model | test accuracy |\n|---|---:|\n| `seed-lstm` | 0.71 |\n| **bilstm** | **0.78** |\n\n"
        "- a sample: the <unk> cat & *the* dog\n"
    )
    write_report(tmp_path, [Section("Classification", body)], [("Classification", 3.0, 5.0)], 3.0)
    page = (tmp_path / "report.html").read_text()
    assert "<strong>bilstm</strong>" in page and "<code>lmlab classify train --preset bilstm</code>" in page
    assert "<strong>total</strong>" in page  # the timings table of write_report itself
    assert page.count("<table>") == 2 and "<th>model</th>" in page and "<li>a sample" in page
    assert "<em>the</em>" in page and "the &lt;unk&gt; cat &amp;" in page  # raw HTML is escaped, not swallowed
    assert "**" not in page and "`" not in page


def test_tour_budgets_fit_ten_minutes():
    assert sum(budget for _, _, budget in STOPS) <= 600


def test_classify_stop_writes_report(tmp_path, capsys):
    assert main(["tour", "--only", "classify", "--scale", "0.05", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "seed-lstm test accuracy" in out and "bilstm test accuracy" in out
    md = (tmp_path / "report.md").read_text()
    assert "seed-lstm (Keras tutorial)" in md and "classify-curves.png" in md
    assert Path(tmp_path / "classify" / "classify-curves.png").stat().st_size > 1000


def test_unknown_stop_is_a_usage_error(capsys):
    assert main(["tour", "--only", "nope"]) == 2
    assert "unknown stop" in capsys.readouterr().err
