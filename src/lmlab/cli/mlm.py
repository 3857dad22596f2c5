"""``lmlab mlm train | eval | fill | import``: the BERT-style masked language model."""

from __future__ import annotations

import sys

import click

from lmlab.cli.common import (
    PRESET_DEFAULT,
    echo_json,
    encoding_option,
    overrides_argument,
    resume_preset,
    run_dir_options,
    with_encoding,
)


@click.group("mlm")
def mlm() -> None:
    """Train, evaluate and query a BERT-style masked language model."""


@mlm.command("train")
@click.option("--data", default=None, type=click.Path(), help="Training text: a file (.txt/.gz/.bz2/.xz/.jsonl) or a folder.")
@click.option("--val", default=None, type=click.Path(), help="Validation text (default: the last data.val_fraction of --data).")
@click.option("--preset", default=None, help="small, tiny, a YAML/JSON file or a run directory.  " + PRESET_DEFAULT.format("small"))
@click.option("--init-from", "init_from", default=None, type=click.Path(),
              help="An MLM run to continue pretraining from (its weights, tokenizer and architecture) on --data.")
@encoding_option
@run_dir_options
@overrides_argument
def train(data, val, preset, init_from, out, overwrite, resume, overrides, encoding) -> None:
    """Tokenize --data once and train a masked LM on randomly masked windows of it.

    Overrides such as max_steps=500 or data.whole_word=true follow the options."""
    import math

    from lmlab.recipes.mlm import MLMRecipe

    preset = resume_preset(preset, out, resume)
    recipe = MLMRecipe.from_preset(preset, with_encoding(overrides, encoding), data=data, val=val, init_from=init_from,
                                   log=click.echo)
    result = recipe.train(out, overwrite=overwrite, resume=resume)
    shown = ""
    if result.best is not None:
        shown = f", best {result.metric} {result.best:.4f}"
        if result.metric == "val_loss":
            shown += f" (masked-token perplexity {math.exp(min(result.best, 700.0)):.2f})"
    click.echo(f"trained {result.step} steps{shown}; run directory: {out}")


@mlm.command("eval")
@click.argument("run_dir", type=click.Path())
@click.option("--data", required=True, type=click.Path(), help="Text to evaluate on (file or folder).")
@click.option("--max-tokens", default=0, show_default=True, type=int, help="Evaluate on the first N tokens only (0: all).")
@click.option("--seed", default=1234, show_default=True, type=int, help="Seed of the masks (same seed, same numbers).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@encoding_option
def evaluate(run_dir, data, max_tokens, seed, device, as_json, encoding) -> None:
    """Masked-token accuracy and perplexity of RUN_DIR's model on --data (its own masking rule, seeded)."""
    from lmlab.recipes.mlm import MLMRecipe

    result = MLMRecipe.evaluate(run_dir, data, device=device, max_tokens=max_tokens, seed=seed, encoding=encoding)
    if as_json:
        echo_json(result)
        return
    click.echo(f"tokens          {result['tokens']:,}")
    click.echo(f"masked tokens   {result['masked_tokens']:,}")
    click.echo(f"loss            {result['loss']:.4f}")
    click.echo(f"perplexity      {result['perplexity']:.3f}")
    click.echo(f"accuracy        {result['accuracy']:.4f}")


@mlm.command("fill")
@click.argument("run_dir", type=click.Path())
@click.argument("text")
@click.option("-k", "--top-k", default=5, show_default=True, type=int, help="Candidates per [MASK].")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def fill(run_dir, text, top_k, device, as_json) -> None:
    """Guess each [MASK] of TEXT ('-' reads it from stdin): the top-k tokens with their probabilities."""
    from lmlab.recipes.mlm import MLMRecipe

    if text == "-":
        text = sys.stdin.read().rstrip("\n")
    result = MLMRecipe.load(run_dir, device=device).fill_mask([text], top_k=top_k)[0]
    if as_json:
        echo_json(result)
        return
    click.echo(result["filled"])
    for n, candidates in enumerate(result["masks"], 1):
        shown = "  ".join(f"{c['token']!r} {c['probability']:.3f}" for c in candidates)
        click.echo(f"[MASK] {n}: {shown}")


@mlm.command("import")
@click.argument("hf_dir", type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="The run directory to write.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory at --out.")
def import_(hf_dir, out, overwrite) -> None:
    """Import a Hugging Face BERT folder (model_type bert: config.json, model.safetensors, tokenizer.json or
    vocab.txt) as a masked-LM run: fill [MASK], evaluate, or fine-tune it (lmlab classify train --init-from)."""
    from lmlab.hf_bert import import_bert

    import_bert(hf_dir, out, overwrite=overwrite, log=click.echo)
