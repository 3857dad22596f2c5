"""``lmlab gpt train | eval | generate``: the GPT-style Transformer language model.

Data-parallel training is the same command under torchrun::

    torchrun --nproc_per_node=2 -m lmlab gpt train --data input.txt --preset char --out runs/gpt
"""

from __future__ import annotations

import sys

import click

from lmlab.cli.common import (
    echo_json,
    encoding_option,
    overrides_argument,
    run_dir_options,
    sampling_from_options,
    sampling_options,
    with_encoding,
)


@click.group("gpt")
def gpt() -> None:
    """Train, evaluate and sample from a GPT-style Transformer language model."""


@gpt.command("train")
@click.option("--data", default=None, type=click.Path(), help="Training text: a file (.txt/.gz/.bz2/.xz/.jsonl) or a folder.")
@click.option("--val", default=None, type=click.Path(), help="Validation text (default: the last data.val_fraction of --data).")
@click.option("--preset", default="char", show_default=True, help="nanogpt-cpu, char, bpe, or a YAML/JSON file.")
@encoding_option
@run_dir_options
@overrides_argument
def train(data, val, preset, out, overwrite, resume, overrides, encoding) -> None:
    """Tokenize --data once into a memory-mapped file and train a GPT on random blocks of it.

    Overrides such as max_steps=500 or model.embed_dim=256 follow the options."""
    from lmlab import distributed
    from lmlab.recipes.gpt import GPTRecipe

    recipe = GPTRecipe.from_preset(preset, with_encoding(overrides, encoding), data=data, val=val, log=_main_echo)
    result = recipe.train(out, overwrite=overwrite, resume=resume)
    if distributed.is_main():
        shown = ""
        if result.best is not None:
            shown = f", best {result.metric} {result.best:.4f} (perplexity {_exp(result.best):.2f})"
        click.echo(f"trained {result.step} steps{shown}; run directory: {out}")


def _main_echo(message: str) -> None:
    from lmlab import distributed

    if distributed.is_main():
        click.echo(message)


def _exp(x: float) -> float:
    import math

    return math.exp(min(x, 700.0))


@gpt.command("eval")
@click.argument("run_dir", type=click.Path())
@click.option("--data", required=True, type=click.Path(), help="Text to evaluate on (file or folder).")
@click.option("--max-tokens", default=0, show_default=True, type=int, help="Evaluate on the first N tokens only (0: all).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def evaluate(run_dir, data, max_tokens, device, as_json) -> None:
    """Loss (nats/token), perplexity and bits per token of RUN_DIR's model on --data."""
    from lmlab.recipes.gpt import GPTRecipe

    result = GPTRecipe.evaluate(run_dir, data, device=device, max_tokens=max_tokens)
    if as_json:
        echo_json(result)
        return
    click.echo(f"tokens          {result['tokens']:,}")
    click.echo(f"loss            {result['loss']:.4f}")
    click.echo(f"perplexity      {result['perplexity']:.3f}")
    click.echo(f"bits per token  {result['bits_per_token']:.4f}")


@gpt.command("generate")
@click.argument("run_dir", type=click.Path())
@click.option("--prompt", "-p", default="", help="Text to continue ('-' reads it from stdin; empty: a new line).")
@sampling_options(temperature=0.8, short=True)
@click.option("--no-cache", is_flag=True, help="Recompute the whole context for every token (slow; for comparison).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
def generate(run_dir, prompt, no_cache, device, **sampling) -> None:
    """Continue --prompt with RUN_DIR's model, printing the text as it is sampled."""
    from lmlab.recipes.gpt import GPTRecipe

    options = sampling_from_options(sampling)
    if prompt == "-":
        prompt = sys.stdin.read()
    pipe = GPTRecipe.load(run_dir, device=device)
    pipe.use_cache = not no_cache
    click.echo(prompt, nl=False)
    final: dict = {}
    for event in pipe.stream(prompt, **options):
        if "text" in event:
            click.echo(event["text"], nl=False)
            sys.stdout.flush()
        else:
            final = event
    click.echo()
    if final.get("prompt_truncated"):
        click.echo(
            f"note: the prompt was longer than the context of {pipe.model.config.block_size} tokens; "
            f"its first {final['prompt_truncated']} tokens were dropped",
            err=True,
        )
