"""The ``$ lmlab ...`` examples of the documentation: find them, run them, and refresh their printed output.

Used by ``tests/test_docs.py`` (which runs every example) and as a tool::

    .venv/bin/python docs/_tools/doccommands.py docs/quickstart.md [more pages]   # rerun, paste the real output

Conventions (the test enforces them):

- Examples live in fenced ``console`` blocks. A line starting ``$ `` is a command; the lines after it, up to the
  next ``$ `` line or the end of the block, are its output. A trailing ``\\`` continues a command on the next line.
- Only commands whose first word is ``lmlab`` are run, in document order, from the repository root, with ``lmlab``
  meaning this interpreter's ``python -m lmlab``. Pipes and quotes work as in bash (``set -o pipefail``).
- ``<!-- docs-test: skip REASON -->`` on the line(s) just above a block marks its commands as not run (e.g. a
  server that does not exit); the test reports them as skipped, with the reason.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TIMEOUT_S = float(os.environ.get("LMLAB_DOCS_COMMAND_TIMEOUT", "120"))

FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)$")
SKIP_MARK = re.compile(r"<!--\s*docs-test:\s*skip\b\s*(?P<reason>.*?)\s*-->")


@dataclass
class Block:
    """A fenced code block: info string, 0-based index of its opening fence line, indentation, content lines."""

    info: str
    start: int
    indent: str
    lines: list[str]
    skip_reason: str | None = None

    @property
    def first_line(self) -> int:
        """1-based line number of the block's first content line."""
        return self.start + 2

    @property
    def is_console(self) -> bool:
        return self.info.split()[:1] == ["console"] or self.info.startswith("console")


@dataclass
class Command:
    page: Path
    line: int  # 1-based line of the `$ ` line
    text: str  # continuation lines joined
    skip_reason: str | None = None
    block: int = 0  # index of its block among the page's blocks
    first: int = 0  # index in block.lines of the `$ ` line
    last: int = 0  # index in block.lines of its last continuation line
    output_end: int = 0  # index in block.lines one past its last output line

    @property
    def is_lmlab(self) -> bool:
        try:
            words = shlex.split(self.text)
        except ValueError:
            words = self.text.split()
        return words[:1] == ["lmlab"]


@dataclass
class PageCommands:
    page: Path
    blocks: list[Block] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)


def fenced_blocks(text: str) -> list[Block]:
    """Fenced blocks with indentation (lists, admonitions) removed; a skip marker just above a fence applies to it."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    pending_skip: str | None = None
    while i < len(lines):
        m = FENCE_OPEN.match(lines[i])
        if not m:
            mark = SKIP_MARK.search(lines[i])
            if mark:
                pending_skip = mark.group("reason") or "no reason given"
            elif lines[i].strip():
                pending_skip = None
            i += 1
            continue
        indent, fence, info = m.group("indent"), m.group("fence"), m.group("info").strip()
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            line = lines[j]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            j += 1
        blocks.append(Block(info=info, start=i, indent=indent, lines=body, skip_reason=pending_skip))
        pending_skip = None
        i = j + 1
    return blocks


def page_commands(page: Path) -> PageCommands:
    """The ``$ ...`` commands of a page's console blocks, in document order."""
    result = PageCommands(page, fenced_blocks(page.read_text(encoding="utf-8")))
    for b, block in enumerate(result.blocks):
        if not block.is_console:
            continue
        k = 0
        current: Command | None = None
        while k < len(block.lines):
            line = block.lines[k]
            if not line.startswith("$ "):
                k += 1
                continue
            if current is not None:
                current.output_end = k
            first = k
            text = line[2:].rstrip()
            while text.endswith("\\") and k + 1 < len(block.lines):
                k += 1
                nxt = block.lines[k]
                nxt = nxt[2:] if nxt.startswith("> ") else nxt
                text = text[:-1].rstrip() + " " + nxt.strip()
            current = Command(page, block.first_line + first, text, block.skip_reason, b, first, k, len(block.lines))
            result.commands.append(current)
            k += 1
        if current is not None:
            current.output_end = len(block.lines)
    return result


def command_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(MPLBACKEND="Agg", TQDM_DISABLE="1", NO_COLOR="1", PYTHONUNBUFFERED="1", NO_MKDOCS_2_WARNING="1")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def run_command(command: Command, timeout: float = DEFAULT_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run one command from the repository root; ``lmlab`` is this interpreter's ``python -m lmlab``."""
    script = f'set -o pipefail\nlmlab() {{ {shlex.quote(sys.executable)} -m lmlab "$@"; }}\n{command.text}\n'
    return subprocess.run(
        ["bash", "-c", script],
        cwd=REPO_ROOT,
        env=command_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def refresh(page: Path, log=print, timeout: float = 900.0) -> int:
    """Rerun every runnable command of ``page`` and write its real output under it; returns the failures."""
    pc = page_commands(page)
    lines = page.read_text(encoding="utf-8").splitlines()
    failures = 0
    # Replace from the end so earlier indices stay valid; run in document order first.
    results: list[tuple[Command, list[str]]] = []
    for command in pc.commands:
        if not command.is_lmlab or command.skip_reason:
            continue
        log(f"{page}:{command.line}: $ {command.text}")
        proc = run_command(command, timeout=timeout)
        out = proc.stdout.rstrip("\n").splitlines() if proc.stdout.strip() else []
        if proc.returncode != 0:
            failures += 1
            log(f"  exit status {proc.returncode}:\n  " + "\n  ".join(out[-20:]))
        results.append((command, out))
    for command, out in reversed(results):
        block = pc.blocks[command.block]
        start = block.start + 1 + command.last + 1  # first output line in the file (0-based)
        end = block.start + 1 + command.output_end
        lines[start:end] = [block.indent + line if line else line for line in out]
    page.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return failures


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Rerun the `$ lmlab` examples of pages and paste their output.")
    parser.add_argument("pages", nargs="+", type=Path)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per command [900]")
    args = parser.parse_args(argv)
    failures = sum(refresh(page.resolve(), timeout=args.timeout) for page in args.pages)
    if failures:
        print(f"{failures} command(s) failed; their output was pasted anyway, fix and rerun", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
