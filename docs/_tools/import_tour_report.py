"""Copy a guided-tour report (``runs/tour/report.md`` and its images) into ``docs/tour-report.md``.

Usage (from the repository root)::

    .venv/bin/python docs/_tools/import_tour_report.py runs/tour

The page keeps everything above its ``<!-- tour-report:begin ... -->`` marker (the header written by hand) and replaces
everything below it with the report. Images the report references are copied to ``docs/tour-report/`` (next to the page) and the links
rewritten; links to other local files (run directories, report.html) become plain code spans, since they do not exist
on the documentation site. Headings are demoted one level so the page keeps a single title. The result must build
with ``mkdocs build --strict``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

MARKER = "<!-- tour-report:begin"
DOCS = Path(__file__).resolve().parents[1]
PAGE = DOCS / "tour-report.md"

MD_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)(\s+\"[^\"]*\")?\)")
HTML_IMG = re.compile(r"""(<img\b[^>]*?\bsrc=)(["'])([^"']+)\2""", re.IGNORECASE)
HEADING = re.compile(r"^(#{1,5})(\s)", re.MULTILINE)


def _is_remote(target: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE)) or target.startswith("#")


class Importer:
    def __init__(self, report_dir: Path, assets: Path) -> None:
        self.report_dir = report_dir
        self.assets = assets  # images go here, linked as "<assets dir name>/<file>" from the page next to it
        self.copied: dict[Path, str] = {}

    def asset(self, target: str) -> str | None:
        """Copy a local image next to the page; return its new relative link, or None if it does not exist."""
        path = Path(target.split("#")[0])
        if not path.is_absolute():
            path = self.report_dir / path
        path = path.resolve()
        if not path.is_file():
            return None
        if path not in self.copied:
            prefix = self.assets.name
            name = path.name
            taken = set(self.copied.values())
            stem, suffix, n = path.stem, path.suffix, 1
            while f"{prefix}/{name}" in taken:
                n += 1
                name = f"{stem}-{n}{suffix}"
            self.assets.mkdir(exist_ok=True)
            shutil.copy2(path, self.assets / name)
            self.copied[path] = f"{prefix}/{name}"
        return self.copied[path]

    def md_link(self, m: re.Match) -> str:
        bang, text, target, title = m.group(1), m.group(2), m.group(3), m.group(4) or ""
        if _is_remote(target):
            return m.group(0)
        if bang:
            new = self.asset(target)
            if new is None:
                raise SystemExit(f"error: the report links to a missing image {target!r} (looked in {self.report_dir})")
            return f"![{text}]({new}{title})"
        return f"{text} (`{target}`)" if text and text != target else f"`{target}`"

    def html_img(self, m: re.Match) -> str:
        target = m.group(3)
        if _is_remote(target):
            return m.group(0)
        new = self.asset(target)
        if new is None:
            raise SystemExit(f"error: the report links to a missing image {target!r} (looked in {self.report_dir})")
        return f"{m.group(1)}{m.group(2)}{new}{m.group(2)}"

    def convert(self, text: str) -> str:
        # Rewrite outside fenced code blocks only.
        parts = re.split(r"(^```.*?^```[^\n]*$|^~~~.*?^~~~[^\n]*$)", text, flags=re.MULTILINE | re.DOTALL)
        out = []
        for i, part in enumerate(parts):
            if i % 2 == 1:
                out.append(part)
                continue
            part = MD_LINK.sub(self.md_link, part)
            part = HTML_IMG.sub(self.html_img, part)
            part = HEADING.sub(lambda m: "#" + m.group(1) + m.group(2), part)
            out.append(part)
        return "".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report_dir", type=Path, help="the tour's output directory (holds report.md)")
    parser.add_argument("--page", type=Path, default=PAGE, help="the page to fill (default: docs/tour-report.md)")
    args = parser.parse_args(argv)
    report = args.report_dir / "report.md"
    if not report.is_file():
        print(f"error: {report} not found; run `lmlab tour` (or `make demo`) first", file=sys.stderr)
        return 2
    page_path: Path = args.page
    page = page_path.read_text(encoding="utf-8")
    at = page.find(MARKER)
    if at < 0:
        print(f"error: {page_path} has no {MARKER!r} marker line; restore the page header first", file=sys.stderr)
        return 2
    header = page[: page.index("\n", at) + 1]
    assets = page_path.with_suffix("")
    if assets.exists():
        shutil.rmtree(assets)
    importer = Importer(args.report_dir.resolve(), assets)
    body = importer.convert(report.read_text(encoding="utf-8"))
    page_path.write_text(header + "\n" + body.strip() + "\n", encoding="utf-8")
    print(f"wrote {page_path} and {len(importer.copied)} image(s) under {assets}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
