"""mkdocs hook: every `` `lmlab.module:Qualified.name` `` in the docs becomes a link to the line that defines it.

The equation tables name their code as `` `lmlab.models.rnn:LSTMCell.forward` `` (tests/test_docs.py checks that
each resolves). At build time this hook

1. adds one page per source module those names point into, ``source/lmlab/models/rnn.py.md``: the file as it is
   now, highlighted, with an anchor on every line (pymdownx.highlight's ``anchor_linenums``), left out of the nav and
   of the search index;
2. turns each such code span, in every page's HTML, into a link to ``source/...#__codelineno-0-LINE``, where LINE is
   found by parsing the source (``ast`` for ``.py``; the ``def``/``cdef``/``cpdef`` line for a Cython ``.pyx``).

Line numbers are computed at each build, so they never go stale. A name that cannot be located is a warning, so
``mkdocs build --strict`` fails on it. Wired in mkdocs.yml as ``hooks: [docs/_tools/code_links.py]``.
"""

from __future__ import annotations

import ast
import html
import logging
import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

SRC = Path(__file__).resolve().parents[2] / "src"
SOURCE_DIR = "source"
REF = re.compile(r"<code>(lmlab(?:\.\w+)*):([A-Za-z_][\w.]*)</code>")
REF_MD = re.compile(r"`(lmlab(?:\.\w+)*):([A-Za-z_][\w.]*)`")
log = logging.getLogger("mkdocs.hooks.code_links")

_lines: dict[tuple[str, str], int | None] = {}


def module_file(module: str) -> Path | None:
    """The source file of a module under src/ (package ``__init__.py``, ``.py`` or Cython ``.pyx``)."""
    base = SRC.joinpath(*module.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py"), base.with_suffix(".pyx")):
        if path.is_file():
            return path
    return None


def definition_line(module: str, qualname: str) -> int | None:
    """The line of ``def``/``class`` ``qualname`` in ``module``'s source, or None."""
    key = (module, qualname)
    if key not in _lines:
        _lines[key] = _find_line(module, qualname)
    return _lines[key]


def _find_line(module: str, qualname: str) -> int | None:
    path = module_file(module)
    if path is None:
        return None
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".pyx":
        name = re.escape(qualname.split(".")[-1])
        m = re.search(rf"^[ \t]*(?:c?p?def|cdef class|class)\b[^(\n]*\b{name}\s*[(:]", text, re.M)
        return text.count("\n", 0, m.start()) + 1 if m else None
    body = ast.parse(text).body
    node = None
    for part in qualname.split("."):
        node = next(
            (n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == part),
            None,
        )
        if node is None:
            return None
        body = node.body
    return node.lineno


def source_uri(module: str) -> str:
    path = module_file(module)
    return f"{SOURCE_DIR}/{path.relative_to(SRC).as_posix()}.md"


def _source_page(path: Path) -> str:
    rel = path.relative_to(SRC).as_posix()
    lang = "cython" if path.suffix == ".pyx" else "python"
    code = path.read_text(encoding="utf-8").rstrip("\n")
    return (
        "---\nsearch:\n  exclude: true\n---\n\n"
        f"# `src/{rel}`\n\nThe source as of this build of the docs; the equation tables link to its lines.\n\n"
        f'```{lang} linenums="1"\n{code}\n```\n'
    )


def on_files(files, config):
    """Add a source page for every module that a `` `lmlab.x:Name` `` in the docs points into."""
    modules: set[str] = set()
    for f in files.documentation_pages():
        if f.abs_src_path and Path(f.abs_src_path).is_file():
            modules.update(m for m, _ in REF_MD.findall(Path(f.abs_src_path).read_text(encoding="utf-8")))
    for module in sorted(modules):
        path = module_file(module)
        if path is not None:
            files.append(File.generated(config, source_uri(module), content=_source_page(path)))
    return files


def on_page_content(content, page, config, files):
    """Link each `` `lmlab.x:Name` `` code span of the page to its line in the generated source page."""
    if page.file.src_uri.startswith(SOURCE_DIR + "/"):
        return content

    def link(m: re.Match) -> str:
        module, qualname = html.unescape(m.group(1)), html.unescape(m.group(2))
        line = definition_line(module, qualname)
        if line is None:
            log.warning(f"{page.file.src_uri}: `{module}:{qualname}` not found in src/ (no source link)")
            return m.group(0)
        source = files.get_file_from_path(source_uri(module))
        here = page.file.url if page.file.url.endswith("/") or not page.file.url else posixpath.dirname(page.file.url)
        target = posixpath.relpath("/" + source.url, "/" + here)
        if source.url.endswith("/"):
            target += "/"
        return f'<a href="{html.escape(target)}#__codelineno-0-{line}" title="source, line {line}">{m.group(0)}</a>'

    return REF.sub(link, content)


__all__ = ["definition_line", "module_file", "on_files", "on_page_content"]
