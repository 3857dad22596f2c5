"""``lmlab classify train | eval | predict``."""

from __future__ import annotations

import json

import click

from lmlab.cli.common import echo_json, overrides_argument, read_inputs, resume_preset, run_dir_options


def reader_options(func):
    """Options naming how labelled data is read (shared by train and eval)."""
    func = click.option("--encoding", default="utf-8", show_default=True, help="Text encoding (e.g. cp1252).")(func)
    func = click.option("--label-column", default=None, help="Column/field holding the label.")(func)
    func = click.option("--text-column", default=None, help="Column(s)/field(s) holding the text: a or a,b.")(func)
    func = click.option(
        "--format",
        "fmt",
        default="auto",
        show_default=True,
        type=click.Choice(["auto", "csv", "tsv", "jsonl", "lines", "aclimdb", "fasttext"]),
        help="Input format (auto: from the path).",
    )(func)
    return func


def _reader_kwargs(fmt: str, text_column: str | None, label_column: str | None, encoding: str) -> dict:
    return {"format": fmt, "text_columns": text_column, "label_column": label_column, "encoding": encoding}


@click.group("classify")
def classify() -> None:
    """Train, evaluate and use text classifiers (sentiment, topics, ...)."""


@classify.command("train")
@click.option("--data", required=True, type=click.Path(), help="Labelled training data (CSV/TSV/JSONL/lines/aclImdb).")
@reader_options
@click.option("--val", default=None, type=click.Path(), help="Validation data (default: hold out data.val_split).")
@click.option("--val-split", type=float, default=None, help="Fraction of --data held out for validation.")
@click.option("--preset", default=None,
              help="seed-lstm, bilstm (the default), linear, finetune (the default with --init-from; finetune-pretrained "
                   "for a run made by gpt/mlm import), a YAML/JSON file or a run directory (--resume without --preset: the run's own config).")
@click.option("--pretrained-vectors", default=None, help="Word vectors (lmlab dir, word2vec or GloVe file) for the embedding.")
@click.option("--init-from", "init_from", default=None, type=click.Path(),
              help="Fine-tune the body of a pretrained run (gpt, lm or mlm) instead of training from scratch.")
@click.option("--freeze-embeddings/--fine-tune-embeddings", default=None, help="Keep pretrained embeddings fixed.")
@run_dir_options
@overrides_argument
def train(data, fmt, text_column, label_column, encoding, val, val_split, preset, pretrained_vectors, init_from,
          freeze_embeddings, out, overwrite, resume, overrides) -> None:
    """Train a classifier; overrides like epochs=2 or model.hidden_dim=256 follow the options."""
    from lmlab import distributed
    from lmlab.recipes.classify import ClassifyRecipe

    extra = list(overrides)
    if val_split is not None:
        extra.append(f"data.val_split={val_split}")
    if freeze_embeddings is not None:
        extra.append(f"model.freeze_embeddings={str(freeze_embeddings).lower()}")
    preset = resume_preset(preset, out, resume)
    if init_from is None:
        preset = preset or ClassifyRecipe.default_preset
    recipe = ClassifyRecipe.from_preset(
        preset, extra, init_from=init_from, data=data, val=val, pretrained_vectors=pretrained_vectors,
        reader_options=_reader_kwargs(fmt, text_column, label_column, encoding), log=click.echo,
    )
    result = recipe.train(out, overwrite=overwrite, resume=resume)
    if distributed.is_main():
        click.echo(result.summary())


@classify.command("eval")
@click.argument("run_dir", type=click.Path())
@click.option("--data", required=True, type=click.Path(), help="Labelled evaluation data.")
@reader_options
@click.option("--confusion-png", default=None, type=click.Path(dir_okay=False), help="Also write the confusion matrix as PNG.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def evaluate(run_dir, data, fmt, text_column, label_column, encoding, confusion_png, as_json) -> None:
    """Accuracy, macro precision/recall/F1 and the confusion matrix of RUN_DIR on --data."""
    from lmlab.metrics import format_confusion_matrix
    from lmlab.recipes.classify import ClassifyRecipe

    report = ClassifyRecipe.evaluate(run_dir, data, **_reader_kwargs(fmt, text_column, label_column, encoding))
    if confusion_png:
        from lmlab.plots import plot_confusion

        plot_confusion(report["confusion_matrix"], report["labels"], confusion_png)
    if as_json:
        echo_json(report)
        return
    click.echo(f"examples        {report['n']}")
    click.echo(f"accuracy        {report['accuracy']:.4f}")
    click.echo(f"macro precision {report['macro_precision']:.4f}")
    click.echo(f"macro recall    {report['macro_recall']:.4f}")
    click.echo(f"macro F1        {report['macro_f1']:.4f}")
    click.echo(format_confusion_matrix(report["confusion_matrix"], report["labels"]))
    if confusion_png:
        click.echo(f"wrote {confusion_png}")


@classify.command("predict")
@click.argument("run_dir", type=click.Path())
@click.argument("text", required=False)
@click.option("--file", "file", default=None, type=click.Path(), help="One text per line ('-' for stdin).")
@click.option("--jsonl", is_flag=True, help="One JSON object per input.")
def predict(run_dir, text, file, jsonl) -> None:
    """Label TEXT (or every line of --file, or of stdin with -) with its probability."""
    from lmlab.recipes.classify import ClassifyRecipe

    pipe = ClassifyRecipe.load(run_dir)
    texts = read_inputs(text, file)
    for t, result in zip(texts, pipe.predict(texts), strict=True):
        if jsonl:
            click.echo(json.dumps({"text": t, **result}, ensure_ascii=False))
        else:
            click.echo(f"{result['label']}\t{result['probability']:.4f}\t{t}")


__all__ = ["classify"]
