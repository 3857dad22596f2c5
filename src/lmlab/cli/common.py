"""Pieces shared by every family's commands: input texts, run-dir flags, and ``lmlab plot``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from lmlab.errors import DataError


def read_inputs(text: str | None, file: str | None) -> list[str]:
    """Texts from a positional argument, ``--file F``, or standard input (``-`` as the text or the file)."""
    if text is not None and file is not None:
        raise click.UsageError("give either TEXT or --file, not both")
    if text == "-" or file == "-":
        lines = sys.stdin.read().splitlines()
    elif file is not None:
        path = Path(file)
        if not path.is_file():
            raise DataError(f"--file {file}: no such file")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise DataError(f"--file {file}: not UTF-8 (byte {err.start}); convert it to UTF-8 first") from None
    elif text is not None:
        lines = [text]
    else:
        raise click.UsageError("give a TEXT, --file F, or - to read standard input")
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise DataError("no input text (empty input)")
    return lines


def run_dir_options(func):
    """--out, --overwrite, --resume."""
    func = click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")(func)
    func = click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")(func)
    func = click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Run directory to write.")(func)
    return func


def overrides_argument(func):
    return click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")(func)


def echo_json(obj) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False))


@click.command("plot")
@click.argument("run_dir", type=click.Path())
@click.option("--out", "-o", type=click.Path(dir_okay=False), default=None, help="PNG path (default RUN_DIR/curves.png).")
def plot(run_dir: str, out: str | None) -> None:
    """Plot a run's training and validation curves (from metrics.jsonl) to a PNG."""
    from lmlab.plots import plot_curves

    path = plot_curves(run_dir, out)
    click.echo(f"wrote {path}")
