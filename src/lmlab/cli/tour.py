"""``lmlab tour``: the guided tour of every model family on bundled data."""

from __future__ import annotations

import click


@click.command("tour")
@click.option("--out", "-o", default="runs/tour", show_default=True, type=click.Path(file_okay=False), help="Where to write runs and the report.")
@click.option("--only", multiple=True, help="Run only these stops (embed, classify, lm, seq2seq, gan, gpt).")
@click.option("--scale", default=1.0, show_default=True, type=click.FloatRange(0.01, 10), help="Multiply every stop's time budget.")
@click.option("--lang", default="en", show_default=True, type=click.Choice(["en", "zh"]), help="zh: the Chinese stops (People's Daily, Chinese reviews) and a report in Chinese.")
def tour(out: str, only: tuple[str, ...], scale: float, lang: str) -> None:
    """Train every model family briefly on bundled data and write runs/tour/report.{md,html}."""
    from lmlab.tour import STOPS_BY_LANG, run_tour

    names = [name for name, _, _ in STOPS_BY_LANG[lang]]
    unknown = [o for o in only if o not in names]
    if unknown:
        raise click.BadParameter(f"unknown stop(s) {', '.join(unknown)}; choose from {', '.join(names)}", param_hint="--only")
    run_tour(out, only=list(only) or None, scale=scale, log=click.echo, lang=lang)
