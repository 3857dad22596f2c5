"""Pieces shared by every family's commands: input texts, run-dir flags, and ``lmlab plot``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from lmlab.errors import DataError


def read_inputs(text: str | None, file: str | None) -> list[str]:
    """Texts from a positional argument, ``--file F``, or standard input (``-`` as the text or the file).

    A file and standard input are decoded as strict UTF-8 alike: bytes that are not UTF-8 are an error naming
    where they are, never silently replaced."""
    if text is not None and file is not None:
        raise click.UsageError("give either TEXT or --file, not both")
    if text == "-" or file == "-":
        stdin = sys.stdin
        raw = getattr(stdin, "buffer", None)
        content = _decode_utf8(raw.read(), "standard input") if raw is not None else stdin.read()
        lines = content.splitlines()
    elif file is not None:
        path = Path(file)
        if not path.is_file():
            raise DataError(f"--file {file}: no such file")
        lines = _decode_utf8(path.read_bytes(), f"--file {file}").splitlines()
    elif text is not None:
        lines = [text]
    else:
        raise click.UsageError("give a TEXT, --file F, or - to read standard input")
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise DataError("no input text (empty input)")
    return lines


def _decode_utf8(data: bytes, what: str) -> str:
    """``data`` as UTF-8 (a leading byte-order mark dropped); a DataError naming line and byte otherwise."""
    from lmlab.data.readers import detect_bom

    bom = detect_bom(data)
    if bom is not None and bom != "utf-8":
        raise DataError(
            f"{what}: starts with a {bom.upper()} byte-order mark, but input text must be UTF-8; convert it first "
            f"(e.g. iconv -f {bom} -t utf-8)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(
            f"{what}:{line}: byte 0x{data[err.start]:02x} (byte {column} of the line) is not valid UTF-8; "
            "convert the text to UTF-8 first (e.g. iconv -f cp1252 -t utf-8)"
        ) from None
    return text[1:] if text.startswith("\ufeff") else text


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
