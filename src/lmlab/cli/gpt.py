"""``lmlab gpt train | eval | generate | chat | import | export``: the GPT-style Transformer language model
(and pretrained GPT-2 / Llama-family checkpoints in the Hugging Face format).

Data-parallel training is the same command under torchrun::

    torchrun --nproc_per_node=2 -m lmlab gpt train --data input.txt --preset char --out runs/gpt
"""

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
@click.option("--preset", default=None, help="nanogpt-cpu, char, bpe, a YAML/JSON file or a run directory.  " + PRESET_DEFAULT.format("char"))
@click.option("--init-from", "init_from", default=None, type=click.Path(),
              help="Continue pretraining a trained GPT run on --data (its weights, architecture and tokenizer).")
@encoding_option
@run_dir_options
@overrides_argument
def train(data, val, preset, init_from, out, overwrite, resume, overrides, encoding) -> None:
    """Tokenize --data once into a memory-mapped file and train a GPT on random blocks of it.

    Overrides such as max_steps=500 or model.embed_dim=256 follow the options."""
    from lmlab import distributed
    from lmlab.recipes.gpt import GPTRecipe

    preset = resume_preset(preset, out, resume)
    recipe = GPTRecipe.from_preset(preset, with_encoding(overrides, encoding), init_from=init_from, data=data, val=val, log=_main_echo)
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
@click.option("--context", default=0, show_default=True, type=int,
              help="Tokens per evaluated block (0: the model's context; imported models: at most 1024).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@encoding_option
def evaluate(run_dir, data, max_tokens, device, context, as_json, encoding) -> None:
    """Loss (nats/token), perplexity and bits per token of RUN_DIR's model on --data."""
    from lmlab.recipes.gpt import GPTRecipe

    result = GPTRecipe.evaluate(run_dir, data, device=device, max_tokens=max_tokens, context=context,
                                encoding=encoding)
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


@gpt.command("chat")
@click.argument("run_dir", type=click.Path())
@click.option("--system", default=None, help="A system message that starts the conversation (kept by /reset).")
@click.option("--template", default=None,
              help="Chat template: a Jinja file, a tokenizer_config.json or chat.json, or a built-in name (chatml, "
              "plain). Default: the run's chat.json, else chatml when the tokenizer has <|im_start|>/<|im_end|>.")
@sampling_options(temperature=0.7, short=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
def chat(run_dir, system, template, device, **sampling) -> None:
    """Chat with RUN_DIR's model: each line you type is a user message, the reply streams back, the history is
    kept. /reset starts over, /quit (or Ctrl-D) ends. When standard input is not a terminal, every non-empty line
    of it is one user message and only the replies are printed, one per line."""
    from lmlab.errors import LmlabError
    from lmlab.recipes.gpt import GPTRecipe

    options = sampling_from_options(sampling)
    pipe = GPTRecipe.load(run_dir, device=device)
    if template is not None:
        pipe.set_chat_template(template)
    if not pipe.can_chat:
        pipe.chat_prompt([{"role": "user", "content": ""}])  # raises the ChatTemplateError that says how to fix it
    interactive = sys.stdin.isatty()
    start = [{"role": "system", "content": system}] if system else []
    messages = list(start)
    if interactive:
        click.echo(f"chatting with {run_dir} ({pipe.chat_template_source}); /reset starts over, /quit ends", err=True)
    warned = False
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            break
        if not interactive and line == "":
            break  # end of input
        text = line.rstrip("\r\n")
        if text.strip() in ("/quit", "/exit"):
            break
        if text.strip() == "/reset":
            messages = list(start)
            if interactive:
                click.echo("(history cleared)", err=True)
            continue
        if not text.strip():
            continue
        turn = [*messages, {"role": "user", "content": text}]
        pieces: list[str] = []
        final: dict = {}
        try:
            stream = pipe.stream_chat(turn, **options)
            try:
                for event in stream:
                    if "text" in event:
                        pieces.append(event["text"])
                        click.echo(event["text"], nl=False)
                        sys.stdout.flush()
                    else:
                        final = event
            except KeyboardInterrupt:  # Ctrl-C stops this reply, keeps what was said
                stream.close()
        except LmlabError as err:
            if not interactive:
                raise
            click.echo(f"error: {err}", err=True)
            continue
        click.echo()
        messages = [*turn, {"role": "assistant", "content": "".join(pieces)}]
        if final.get("prompt_truncated") and not warned:
            warned = True
            click.echo(f"note: the conversation is longer than the context of {pipe.model.config.block_size} "
                       "tokens; its oldest tokens are dropped (/reset starts over)", err=True)
@gpt.command("import")
@click.argument("hf_dir", type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="The run directory to create.")
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "bfloat16", "float16"]),
              help="Weights dtype in the run (bf16/fp16 checkpoints are converted to float32 by default); "
              "bfloat16 keeps bf16 weights and computes in float32 on a CPU (half the memory, faster decoding).")
@click.option("--overwrite", is_flag=True, help="Replace an existing lmlab run in --out.")
def import_(hf_dir, out, dtype, overwrite) -> None:
    """Import a Hugging Face model folder (GPT-2, Llama, Qwen2, Mistral: config.json, safetensors, tokenizer.json)
    as a GPT run directory that generate, eval and serve use."""
    from lmlab.hf import import_hf

    import_hf(hf_dir, out, dtype=dtype, overwrite=overwrite, log=click.echo)


@gpt.command("export")
@click.argument("run_dir", type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="The Hugging Face model folder to write.")
@click.option("--overwrite", is_flag=True, help="Replace an existing model folder in --out.")
def export(run_dir, out, overwrite) -> None:
    """Write RUN_DIR as a Hugging Face model folder (AutoModelForCausalLM / AutoTokenizer load it)."""
    from lmlab.hf import export_hf

    export_hf(run_dir, out, overwrite=overwrite, log=click.echo)
