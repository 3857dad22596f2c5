"""``lmlab seq2seq train | eval | attention`` and ``lmlab translate``."""

from __future__ import annotations

import json

import click

from lmlab.cli.common import (
    PRESET_DEFAULT,
    echo_json,
    overrides_argument,
    read_inputs,
    resume_preset,
    run_dir_options,
)


def pair_options(func):
    """How parallel data is read (shared by train and eval)."""
    func = click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the files.")(func)
    func = click.option("--tgt-field", default=None, help="JSONL field holding the target (default: tgt/target/output/...).")(func)
    func = click.option("--src-field", default=None, help="JSONL field holding the source (default: src/source/input/...).")(func)
    func = click.option("--reverse", is_flag=True, help="Swap source and target (e.g. French -> English from fra.txt).")(func)
    return func


@click.group("seq2seq")
def seq2seq() -> None:
    """Train and evaluate sequence-to-sequence models (translation and other text-to-text pairs)."""


@seq2seq.command("train")
@click.option("--src", required=True, type=click.Path(), help="Source file (line-aligned with --tgt), or a TSV/JSONL of pairs.")
@click.option("--tgt", default=None, type=click.Path(), help="Target file, line-aligned with --src.")
@click.option("--val-src", default=None, type=click.Path(), help="Validation source file (or TSV/JSONL of pairs).")
@click.option("--val-tgt", default=None, type=click.Path(), help="Validation target file.")
@click.option("--val-size", default=0, type=int, help="Hold out this many training pairs (seeded) for validation.")
@click.option("--limit", default=0, type=int, help="Use only the first N training pairs.")
@pair_options
@click.option("--skip-empty", is_flag=True, help="Drop pairs with an empty side instead of stopping with an error.")
@click.option("--preset", default=None, help="gru-bahdanau, lstm-luong, transformer, tour-small, a YAML/JSON file or a run directory.  " + PRESET_DEFAULT.format("gru-bahdanau"))
@run_dir_options
@overrides_argument
def train(src, tgt, val_src, val_tgt, val_size, limit, reverse, src_field, tgt_field, encoding, skip_empty, preset,
          out, overwrite, resume, overrides) -> None:
    """Train a seq2seq model; overrides like epochs=2 or model.hidden_dim=256 follow the options."""
    from lmlab import distributed
    from lmlab.recipes.seq2seq import Seq2SeqRecipe

    extra = list(overrides)
    if skip_empty:
        extra.append("data.on_empty=skip")
    preset = resume_preset(preset, out, resume)
    recipe = Seq2SeqRecipe.from_preset(
        preset, extra, src=src, tgt=tgt, val_src=val_src, val_tgt=val_tgt, val_size=val_size, limit=limit,
        reader_options={"reverse": reverse, "src_field": src_field, "tgt_field": tgt_field, "encoding": encoding},
        log=click.echo,
    )
    result = recipe.train(out, overwrite=overwrite, resume=resume)
    if distributed.is_main():
        click.echo(result.summary())


@seq2seq.command("eval")
@click.argument("run_dir", type=click.Path())
@click.option("--src", required=True, type=click.Path(), help="Source sentences, one per line (or a TSV/JSONL of pairs without --ref).")
@click.option("--ref", default=None, type=click.Path(), help="Reference translations, line-aligned with --src.")
@pair_options
@click.option("--beam", "beam_size", default=5, show_default=True, type=int, help="Beam size (1 = greedy).")
@click.option("--length-penalty", default=None, type=float, help="GNMT length penalty alpha (default: the run's).")
@click.option("--limit", default=0, type=int, help="Score only the first N sentences.")
@click.option("--hyp-out", default=None, type=click.Path(dir_okay=False), help="Also write the translations here.")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
def evaluate(run_dir, src, ref, reverse, src_field, tgt_field, encoding, beam_size, length_penalty, limit, hyp_out,
             as_json) -> None:
    """sacreBLEU (with its signature), lowercased BLEU and chrF of RUN_DIR's translations of --src against --ref."""
    from lmlab.checkpoint import atomic_write_text
    from lmlab.pipelines.translate import check_beam
    from lmlab.recipes.seq2seq import Seq2SeqRecipe, read_eval_data

    check_beam(beam_size)
    sources, refs = read_eval_data(src, ref, limit, reverse=reverse, src_field=src_field, tgt_field=tgt_field,
                                   encoding=encoding)
    report = Seq2SeqRecipe.evaluate(run_dir, list(zip(sources, refs, strict=True)), beam_size=beam_size,
                                    length_penalty=length_penalty)
    if hyp_out:
        atomic_write_text(hyp_out, "\n".join(report["hypotheses"]) + "\n")
    hyps = report.pop("hypotheses")
    if as_json:
        echo_json(report)
        return
    click.echo(f"sentences     {report['n']}")
    click.echo(f"BLEU          {report['bleu']:.2f}  ({report['bleu_signature']})")
    click.echo(f"BLEU (lower)  {report['bleu_lc']:.2f}  ({report['bleu_lc_signature']})")
    click.echo(f"chrF          {report['chrf']:.2f}  ({report['chrf_signature']})")
    click.echo(f"beam          {report['beam_size']}; {report['seconds']:.1f} s, {report['tokens_per_s']:.0f} output tokens/s")
    for s, h, r in list(zip(sources, hyps, refs, strict=True))[:3]:
        click.echo(f"  src: {s}\n  hyp: {h}\n  ref: {r}")


@seq2seq.command("attention")
@click.argument("run_dir", type=click.Path())
@click.argument("sentence")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="PNG file to write.")
@click.option("--beam", "beam_size", default=5, show_default=True, type=int, help="Beam size (1 = greedy).")
def attention(run_dir, sentence, out, beam_size) -> None:
    """Translate SENTENCE and draw the attention of each output token over the source as a heat map."""
    from lmlab.pipelines.translate import check_beam, plot_attention
    from lmlab.recipes.seq2seq import Seq2SeqRecipe

    check_beam(beam_size)
    pipe = Seq2SeqRecipe.load(run_dir)
    src_tokens, tgt_tokens, weights = pipe.attention(sentence, beam_size=beam_size)
    text = pipe.translate([sentence], beam_size=beam_size)[0]["translation"]
    plot_attention(src_tokens, tgt_tokens, weights, out, title=f"{sentence} -> {text}")
    click.echo(text)
    click.echo(f"wrote {out}")


@click.command("translate")
@click.argument("run_dir", type=click.Path())
@click.argument("text", required=False)
@click.option("--file", "file", default=None, type=click.Path(), help="One sentence per line ('-' for stdin).")
@click.option("--beam", "beam_size", default=5, show_default=True, type=int, help="Beam size (1 = greedy).")
@click.option("--n-best", default=1, show_default=True, type=int, help="Print the N best translations of each sentence.")
@click.option("--max-len", default=None, type=int, help="Longest output in tokens (default: 1.5 x source + 10).")
@click.option("--length-penalty", default=None, type=float, help="GNMT length penalty alpha (default: the run's).")
@click.option("--on-long", type=click.Choice(["truncate", "error"]), default=None,
              help="A sentence longer than the model's maximum: cut it with a warning, or stop (default: the run's).")
@click.option("--jsonl", is_flag=True, help="One JSON object per input (with the n-best list and scores).")
def translate(run_dir, text, file, beam_size, n_best, max_len, length_penalty, on_long, jsonl) -> None:
    """Translate TEXT (or every line of --file, or of stdin with -) with RUN_DIR's seq2seq model."""
    import warnings

    from lmlab.data.parallel import TruncationWarning
    from lmlab.pipelines.translate import check_beam
    from lmlab.recipes.seq2seq import Seq2SeqRecipe

    check_beam(beam_size, n_best)
    pipe = Seq2SeqRecipe.load(run_dir)
    texts = read_inputs(text, file)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TruncationWarning)
        results = pipe.translate(texts, beam_size=beam_size, max_len=max_len, n_best=n_best,
                                 length_penalty=length_penalty, on_long=on_long)
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    for t, result in zip(texts, results, strict=True):
        if jsonl:
            click.echo(json.dumps({"text": t, **result}, ensure_ascii=False))
        elif n_best > 1:
            for rank, item in enumerate(result["n_best"], 1):
                click.echo(f"{rank}\t{item['score']:.4f}\t{item['translation']}")
        else:
            click.echo(result["translation"])
