"""``lmlab lm train | eval | generate``: recurrent language models."""

from __future__ import annotations

import itertools
import sys

import click

from lmlab.cli.common import (
    PRESET_DEFAULT,
    echo_json,
    encoding_option,
    overrides_argument,
    resume_preset,
    run_dir_options,
    sampling_from_options,
    sampling_options,
    with_encoding,
)


@click.group("lm")
def lm() -> None:
    """Train, evaluate and sample from RNN/LSTM/GRU language models (word, character or BPE level)."""


@lm.command("train")
@click.option("--data", required=True, type=click.Path(), help="Training text (.txt/.gz/.jsonl; PTB/WikiText files work as they are).")
@click.option("--val", default=None, type=click.Path(), help="Validation text (default: hold out data.val_fraction of --data).")
@click.option("--preset", default=None, help="A preset in lmlab/configs/lm (ptb-small, ptb-recommended, char-shakespeare, ...), a YAML/JSON file or a run directory.  " + PRESET_DEFAULT.format("ptb-recommended"))
@click.option("--init-from", "init_from", default=None, type=click.Path(),
              help="Continue pretraining a trained RNN LM run on --data (its weights, architecture and tokenizer).")
@encoding_option
@run_dir_options
@overrides_argument
def train(data, val, preset, init_from, out, overwrite, resume, overrides, encoding) -> None:
    """Train a language model; overrides like epochs=2 or model.hidden_dim=256 follow the options."""
    from lmlab import distributed
    from lmlab.recipes.lm import LMRecipe

    preset = resume_preset(preset, out, resume)
    recipe = LMRecipe.from_preset(preset, with_encoding(overrides, encoding), init_from=init_from, data=data, val=val,
                                  log=click.echo)
    result = recipe.train(out, overwrite=overwrite, resume=resume)
    if distributed.is_main():
        click.echo(result.summary())


@lm.command("eval")
@click.argument("run_dir", type=click.Path())
@click.option("--data", required=True, type=click.Path(), help="Text to score (e.g. ptb.test.txt).")
@click.option("--batch-size", type=int, default=None, help="Rows read in parallel (default data.eval_batch_size).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@encoding_option
def evaluate(run_dir, data, batch_size, device, as_json, encoding) -> None:
    """Loss (nats/token), perplexity, and nats/bits per character of the text, of RUN_DIR on --data."""
    import warnings

    from lmlab.recipes.lm import LMRecipe

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = LMRecipe.evaluate(run_dir, data, batch_size=batch_size, device=device, encoding=encoding)
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    if as_json:
        echo_json(result)
        return
    click.echo(f"tokens scored   {int(result['tokens'])}")
    click.echo(f"loss (nats/tok) {result['loss']:.4f}")
    click.echo(f"perplexity      {result['ppl']:.2f}")
    if "bpc" in result:
        click.echo(f"nats/char       {result['nats_per_char']:.4f}")
        click.echo(f"bits/char       {result['bpc']:.4f}")


@lm.command("generate")
@click.argument("run_dir", type=click.Path())
@click.option("--prompt", default="", help="Text to continue ('-' reads standard input; empty starts a new line).")
@sampling_options(temperature=1.0)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--no-prompt-echo", is_flag=True, help="Print only the continuation, not the prompt before it.")
def generate(run_dir, prompt, device, no_prompt_echo, **sampling) -> None:
    """Continue --prompt with text sampled from RUN_DIR, streamed as it is produced."""
    import warnings

    from lmlab.recipes.lm import LMRecipe

    options = sampling_from_options(sampling)
    if prompt == "-":
        prompt = sys.stdin.read()
    pipe = LMRecipe.load(run_dir, device=device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        events = pipe.stream(prompt, **options)
        first = next(events, {})
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    if not no_prompt_echo:
        click.echo(prompt, nl=False)
    for event in itertools.chain([first], events):
        if "text" in event:
            click.echo(event["text"], nl=False)
    click.echo()


__all__ = ["lm"]
