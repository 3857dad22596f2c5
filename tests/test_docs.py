"""The documentation cannot rot: its code references resolve, its commands run, and the site builds strictly.

Three checks over ``docs/**/*.md``:

1. Every row of a table whose header is exactly ``| Equation | Code | Test |`` names, in its Code cell, one or more
   `` `module.path:Qualified.name` `` objects that import and resolve, and, in its Test cell, one or more
   `` `tests/test_x.py::test_name` `` (or ``::TestClass::test_name``) test functions that exist in that file.
2. Every ``$ lmlab ...`` line inside a fenced ``console`` block runs with exit status 0 from the repository root,
   the commands of one page in document order (later commands may use the run directories earlier ones created).
   A trailing ``\\`` continues a command on the next line. ``lmlab`` means this interpreter's ``python -m lmlab``.
   Only ``lmlab`` commands are run; a block preceded by ``<!-- docs-test: skip REASON -->`` (for a command that
   cannot finish, such as ``lmlab serve``) is reported as skipped with its reason, never dropped silently.
   ``docs/_tools/doccommands.py PAGE`` reruns a page's examples and pastes their real output under them. A command
   repeated verbatim by a later page (the Chinese quickstart repeats the English one) runs once.
3. ``mkdocs build --strict`` succeeds (missing pages, broken links or anchors, pages left out of the nav and
   mkdocstrings problems are all errors). Each `` `module:Name` `` becomes a link to the line of src/ defining it
   (the hook docs/_tools/code_links.py), which the equation-table check and the build check both verify.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs"
sys.path.insert(0, str(DOCS / "_tools"))
try:
    import code_links
    import doccommands
    import gen_api
    import import_tour_report
finally:
    sys.path.pop(0)
from doccommands import Command, PageCommands, command_env, page_commands, run_command  # noqa: E402

COMMAND_TIMEOUT_S = doccommands.DEFAULT_TIMEOUT_S
TABLE_HEADER = ["Equation", "Code", "Test"]
# Family pages that must carry an equation table (when they exist).
EQUATION_PAGES = ("word2vec", "glove", "rnn", "language-models", "classification", "seq2seq", "seqgan", "gpt")

CODE_REF = re.compile(r"`([A-Za-z_][\w.]*):([A-Za-z_][\w.]*)`")
TEST_REF = re.compile(r"`(tests/[\w./-]+\.py)::([\w:]+)(?:\[[^\]`]*\])?`")
FENCE_OPEN = doccommands.FENCE_OPEN


def doc_pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "_tools" not in p.relative_to(DOCS).parts)


def rel(path: Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix()


# --------------------------------------------------------------------------------------------------------------
# Markdown scanning
# --------------------------------------------------------------------------------------------------------------


@dataclass
class TableRow:
    page: Path
    line: int
    cells: list[str]


def _outside_fences(text: str) -> list[tuple[int, str]]:
    """(line number, line) pairs of the lines that are not inside fenced code blocks."""
    out = []
    fence: str | None = None
    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE_OPEN.match(line)
        if fence is None and m:
            fence = m.group("fence")
            continue
        if fence is not None:
            if re.match(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", line):
                fence = None
            continue
        out.append((n, line))
    return out


def split_row(line: str) -> list[str]:
    """Cells of a Markdown table row (``\\|`` is an escaped pipe, not a separator)."""
    body = line.strip()
    if body.startswith("|"):
        body = body[1:]
    if body.endswith("|") and not body.endswith("\\|"):
        body = body[:-1]
    return [c.strip() for c in re.split(r"(?<!\\)\|", body)]


def equation_rows(page: Path) -> tuple[int, list[TableRow]]:
    """(number of equation tables, their rows) in one page."""
    lines = _outside_fences(page.read_text(encoding="utf-8"))
    tables, rows = 0, []
    k = 0
    while k < len(lines):
        n, line = lines[k]
        if line.strip().startswith("|") and split_row(line) == TABLE_HEADER:
            tables += 1
            k += 2  # header + delimiter row
            while k < len(lines) and lines[k][1].strip().startswith("|"):
                rows.append(TableRow(page, lines[k][0], split_row(lines[k][1])))
                k += 1
            continue
        k += 1
    return tables, rows


# --------------------------------------------------------------------------------------------------------------
# 1. Equation -> code -> test tables
# --------------------------------------------------------------------------------------------------------------

ALL_ROWS = [row for page in doc_pages() for row in equation_rows(page)[1]]


def resolve(module: str, qualname: str):
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def defined_tests(path: Path) -> set[str]:
    """``name`` and ``Class::name`` of every test function defined in a test file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(f"{node.name}::{sub.name}")
    return names


@pytest.mark.parametrize("row", ALL_ROWS, ids=[f"{rel(r.page)}:{r.line}" for r in ALL_ROWS])
def test_equation_table_row_points_to_code_and_test(row: TableRow) -> None:
    where = f"{rel(row.page)}:{row.line}"
    assert len(row.cells) == 3, f"{where}: expected 3 cells (Equation | Code | Test), found {len(row.cells)}"
    equation, code, test = row.cells
    assert equation, f"{where}: empty Equation cell"
    code_refs = CODE_REF.findall(code)
    assert code_refs, f"{where}: the Code cell {code!r} names no `module.path:Qualified.name`"
    for module, qualname in code_refs:
        try:
            obj = resolve(module, qualname)
        except (ImportError, AttributeError) as exc:
            pytest.fail(f"{where}: `{module}:{qualname}` does not resolve: {type(exc).__name__}: {exc}")
        assert callable(obj) or isinstance(obj, property), f"{where}: `{module}:{qualname}` is not a function or class"
        # the docs link it to its line of source (docs/_tools/code_links.py): that line must be found
        line = code_links.definition_line(module, qualname)
        assert line, f"{where}: `{module}:{qualname}`: no def/class line found in src/ for the source link"
    test_refs = TEST_REF.findall(test)
    assert test_refs, f"{where}: the Test cell {test!r} names no `tests/test_x.py::test_name`"
    for file, name in test_refs:
        path = REPO_ROOT / file
        assert path.is_file(), f"{where}: test file {file} does not exist"
        assert name.split("::")[-1].startswith("test"), f"{where}: {file}::{name} is not collected by pytest"
        assert name in defined_tests(path), f"{where}: {file} defines no test {name!r}"


def test_family_pages_have_equation_tables() -> None:
    pages = {p.stem: p for p in doc_pages() if p.parent == DOCS}
    missing = [
        rel(pages[name]) for name in EQUATION_PAGES if name in pages and equation_rows(pages[name])[0] == 0
    ]
    assert not missing, f"these family pages have no `| Equation | Code | Test |` table: {missing}"
    assert ALL_ROWS or not any(name in pages for name in EQUATION_PAGES), "no equation table rows found in docs/"


PLACEHOLDER = re.compile(r"^\s*[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\s*$")


def test_no_unfilled_placeholders() -> None:
    """A line that is only an ALL_CAPS_NAME (in text or as a command's output) is a placeholder left unfilled."""
    found = [
        f"{rel(page)}:{n}: {line.strip()}"
        for page in doc_pages()
        for n, line in _outside_fences(page.read_text(encoding="utf-8"))
        if PLACEHOLDER.match(line)
    ]
    for page in doc_pages():  # fake "output" under a command is a placeholder too
        for block in doccommands.fenced_blocks(page.read_text(encoding="utf-8")):
            if block.is_console:
                found += [f"{rel(page)}:{block.first_line + k}: {line.strip()}"
                          for k, line in enumerate(block.lines) if PLACEHOLDER.match(line)]
    assert not found, "unfilled placeholders in the docs:\n" + "\n".join(found)


def test_table_parser_on_a_sample(tmp_path: Path) -> None:
    page = tmp_path / "x.md"
    page.write_text(
        "# x\n\n| Equation | Code | Test |\n|---|---|---|\n"
        "| $h_t = \\tanh(W x_t)$ | `lmlab.errors:LmlabError` | `tests/test_docs.py::test_table_parser_on_a_sample` |\n"
        "\n```text\n| Equation | Code | Test |\n|---|---|---|\n| inside a fence | no | no |\n```\n",
        encoding="utf-8",
    )
    tables, rows = equation_rows(page)
    assert tables == 1 and len(rows) == 1 and rows[0].line == 5
    equation, code, test = rows[0].cells
    assert CODE_REF.findall(code) == [("lmlab.errors", "LmlabError")]
    assert TEST_REF.findall(test) == [("tests/test_docs.py", "test_table_parser_on_a_sample")]
    assert "test_table_parser_on_a_sample" in defined_tests(Path(__file__))


# --------------------------------------------------------------------------------------------------------------
# 2. Every `$ lmlab ...` line of every console block runs
# --------------------------------------------------------------------------------------------------------------

ALL_COMMANDS = [page_commands(page) for page in doc_pages()]
PAGES_WITH_COMMANDS = [pc for pc in ALL_COMMANDS if any(c.is_lmlab and not c.skip_reason for c in pc.commands)]
SKIPPED = [c for pc in ALL_COMMANDS for c in pc.commands if c.skip_reason and c.is_lmlab]


def test_console_parser_on_a_sample(tmp_path: Path) -> None:
    page = tmp_path / "x.md"
    page.write_text(
        "Text\n\n```console\n$ lmlab --version\nlmlab, version 0.1.0\n$ lmlab embed train \\\n"
        "    --algo sgns\n```\n\n1. In a list:\n\n    ```console\n    $ echo hi\n    hi\n    ```\n\n"
        "<!-- docs-test: skip starts a server that does not exit -->\n```console\n$ lmlab serve runs/x\n```\n",
        encoding="utf-8",
    )
    cmds = page_commands(page).commands
    assert [(c.line, c.text, c.skip_reason) for c in cmds] == [
        (4, "lmlab --version", None),
        (6, "lmlab embed train --algo sgns", None),
        (13, "echo hi", None),
        (19, "lmlab serve runs/x", "starts a server that does not exit"),
    ]
    assert [c.is_lmlab for c in cmds] == [True, True, False, True]


def test_run_command_reports_exit_status(tmp_path: Path) -> None:
    ok = run_command(Command(tmp_path / "x.md", 1, "lmlab --version | tr a-z A-Z"))
    assert ok.returncode == 0 and "LMLAB" in ok.stdout
    bad = run_command(Command(tmp_path / "x.md", 2, "lmlab no-such-command"))
    assert bad.returncode != 0


def test_refresh_pastes_real_output(tmp_path: Path) -> None:
    page = tmp_path / "x.md"
    page.write_text(
        "- item\n\n    ```console\n    $ lmlab --version\n    stale output\n    more stale\n    $ echo not run\n"
        "    kept\n    ```\n",
        encoding="utf-8",
    )
    assert doccommands.refresh(page, log=lambda msg: None) == 0
    version = run_command(Command(page, 1, "lmlab --version")).stdout.strip()
    assert page.read_text(encoding="utf-8") == (
        f"- item\n\n    ```console\n    $ lmlab --version\n    {version}\n    $ echo not run\n    kept\n    ```\n"
    )


# Commands that already succeeded in this session: a page that repeats another's commands verbatim (the Chinese
# quickstart repeats the English one, same run directories) does not train the same models twice.
_SUCCEEDED: set[str] = set()


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES_WITH_COMMANDS, ids=[rel(pc.page) for pc in PAGES_WITH_COMMANDS])
def test_console_commands_run(page: PageCommands) -> None:
    ran = 0
    for command in page.commands:
        if not command.is_lmlab or command.skip_reason:
            continue
        if command.text in _SUCCEEDED:
            ran += 1
            continue
        where = f"{rel(command.page)}:{command.line}"
        try:
            proc = run_command(command)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{where}: `$ {command.text}` did not finish within {COMMAND_TIMEOUT_S:.0f} s")
        output = proc.stdout[-3000:]
        assert proc.returncode == 0, f"{where}: `$ {command.text}` exited with {proc.returncode}:\n{output}"
        assert "Traceback (most recent call last)" not in proc.stdout, f"{where}: `$ {command.text}` printed a traceback:\n{output}"
        _SUCCEEDED.add(command.text)
        ran += 1
    assert ran


@pytest.mark.parametrize("command", SKIPPED, ids=[f"{rel(c.page)}:{c.line}" for c in SKIPPED])
def test_console_commands_marked_skip(command: Command) -> None:
    pytest.skip(f"`$ {command.text}` not run: {command.skip_reason}")


# --------------------------------------------------------------------------------------------------------------
# 3. The site builds with --strict
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (it is in the `dev` extra)")
    site = tmp_path / "site"
    proc = subprocess.run(
        # no --quiet: it hides warnings from --strict's count, and the build would pass with broken links
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=REPO_ROOT,
        env=command_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{(proc.stdout + proc.stderr)[-5000:]}"
    errata = (site / "errata" / "index.html").read_text(encoding="utf-8")
    assert 'class="arithmatex"' in errata, "math was not marked up for MathJax (pymdownx.arithmatex)"
    rnn = (site / "rnn" / "index.html").read_text(encoding="utf-8")
    line = code_links.definition_line("lmlab.models.rnn", "LSTMCell.forward")
    link = f'href="../source/lmlab/models/rnn.py/#__codelineno-0-{line}"'
    assert link in rnn, "the equation table does not link LSTMCell.forward to its source line"
    source = (site / "source" / "lmlab" / "models" / "rnn.py" / "index.html").read_text(encoding="utf-8")
    assert f'id="__codelineno-0-{line}"' in source and "LSTMCell" in source
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    assert 'id="lmlab.load"' in api, "the API reference does not document lmlab.load"


def test_api_page_is_up_to_date() -> None:
    """docs/api.md is what docs/_tools/gen_api.py writes from its list of public names (rerun it after a change)."""
    missing: list[str] = []
    assert gen_api.render(report=missing.append) == gen_api.PAGE.read_text(encoding="utf-8"), (
        "docs/api.md is out of date: run .venv/bin/python docs/_tools/gen_api.py"
    )
    assert not missing, f"public names listed in docs/_tools/gen_api.py that do not exist: {missing}"


def test_tour_report_import(tmp_path: Path) -> None:
    """docs/_tools/import_tour_report.py copies a report and its images and keeps the page header."""
    tool = import_tour_report
    report_dir = tmp_path / "tour"
    (report_dir / "img").mkdir(parents=True)
    (report_dir / "img" / "curve.png").write_bytes(b"\x89PNG fake")
    (report_dir / "report.md").write_text(
        "# lmlab tour\n\n## Classifier\n\n![loss](img/curve.png)\n\nRun: [run dir](classify/run)\n\n"
        "```text\n# not a heading\n```\n",
        encoding="utf-8",
    )
    page = tmp_path / "docs" / "tour-report.md"
    page.parent.mkdir()
    page.write_text("# Guided tour report\n\nIntro.\n\n<!-- tour-report:begin -->\nold content\n", encoding="utf-8")
    assert tool.main([str(report_dir), "--page", str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# Guided tour report\n\nIntro.\n\n<!-- tour-report:begin -->\n")
    assert "old content" not in text
    assert "## lmlab tour" in text and "### Classifier" in text and "# not a heading" in text
    assert "![loss](tour-report/curve.png)" in text and (tmp_path / "docs" / "tour-report" / "curve.png").is_file()
    assert "run dir (`classify/run`)" in text
