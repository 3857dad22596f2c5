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
    from lmlab.data.readers import detect_bom, looks_like_gb18030

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
        start = data.rfind(b"\n", 0, err.start) + 1
        end = data.find(b"\n", err.start)
        source = "gb18030" if looks_like_gb18030(data[start : end if end >= 0 else len(data)]) else "cp1252"
        raise DataError(
            f"{what}:{line}: byte 0x{data[err.start]:02x} (byte {column} of the line) is not valid UTF-8; "
            f"convert the text to UTF-8 first (e.g. iconv -f {source} -t utf-8)"
        ) from None
    return text[1:] if text.startswith("\ufeff") else text


#: the --preset help's last words; ``--resume`` without --preset continues with the run's own saved config
PRESET_DEFAULT = "[default: {}; with --resume, the run's own config]"


def resume_preset(preset: str | None, out: str, resume: bool) -> str | None:
    """The preset a ``train`` command uses: ``--preset`` when given; on ``--resume`` without it, the run in
    ``--out`` itself (its saved config; ``key=value`` overrides such as max_steps=3000 still apply); else None
    (the family's default preset)."""
    return preset if preset is not None or not resume else out


def run_dir_options(func):
    """--out, --overwrite, --resume."""
    func = click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")(func)
    func = click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")(func)
    func = click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Run directory to write.")(func)
    return func


def sampling_options(temperature: float = 1.0, short: bool = False):
    """The sampling flags of every ``generate`` command (one definition; each family picks its default
    temperature). The command receives them as keyword arguments; :func:`sampling_from_options` turns them into
    the pipeline's generation options."""

    def names(long: str, letter: str) -> tuple[str, ...]:
        return (long, letter) if short else (long,)

    def decorate(func):
        for option in reversed([
            click.option(*names("--max-new-tokens", "-n"), type=int, default=200, show_default=True,
                         help="How many tokens to generate at most."),
            click.option(*names("--temperature", "-t"), type=float, default=temperature, show_default=True,
                         help="0 = greedy."),
            click.option("--top-k", type=int, default=0, show_default=True,
                         help="Sample among the k most likely tokens (0: off)."),
            click.option("--top-p", type=float, default=1.0, show_default=True,
                         help="Nucleus sampling mass in (0, 1] (1: off)."),
            click.option("--repetition-penalty", type=float, default=1.0, show_default=True,
                         help="> 1 discourages repeats."),
            click.option("--stop", multiple=True, help="Stop before this string (repeatable); it is not printed."),
            click.option("--seed", type=int, default=None, help="Make sampling reproducible."),
            click.option("--greedy", is_flag=True, help="Always take the most likely token (as --temperature 0)."),
        ]):
            func = option(func)
        return func

    return decorate


def sampling_from_options(options: dict) -> dict:
    """Pop the :func:`sampling_options` flags out of a command's keyword arguments and return them, validated
    by :func:`lmlab.pipelines.base.sampling_config`, as the keyword options every text generator's ``stream``
    accepts."""
    from lmlab.pipelines.base import generation_options, sampling_config

    keys = ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "stop", "seed", "greedy")
    given = {k: options.pop(k) for k in keys if k in options}
    given["stop"] = list(given.get("stop") or ())
    return generation_options(sampling_config(given))


def overrides_argument(func):
    return click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")(func)


def encoding_option(func):
    """--encoding: the text encoding of the data files, passed on as the override data.encoding=..."""
    return click.option("--encoding", default=None, help="Text encoding of the data files (e.g. gb18030) [utf-8].")(func)


def with_encoding(overrides, encoding: str | None) -> tuple:
    """``overrides`` plus ``data.encoding=ENCODING`` when --encoding was given."""
    return (*overrides, f"data.encoding={encoding}") if encoding else tuple(overrides)


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
