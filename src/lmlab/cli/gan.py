"""``lmlab gan train | eval | sample``: SeqGAN on the synthetic oracle or on real sentences."""

from __future__ import annotations

import click

from lmlab.cli.common import (
    echo_json,
    encoding_option,
    overrides_argument,
    resume_preset,
    run_dir_options,
    with_encoding,
)


@click.group("gan")
def gan() -> None:
    """Text GANs: SeqGAN (policy gradient + Monte-Carlo rollouts) on the synthetic oracle or real sentences."""


@gan.command("train")
@click.option("--data", "data_path", default=None, type=click.Path(), help="Sentences, one per line (.gz ok).")
@click.option("--oracle", is_flag=True, help="Train on the synthetic oracle's sequences (SeqGAN's benchmark).")
@click.option("--preset", default=None, help="seqgan-oracle, seqgan-multi30k, tour, a YAML/JSON file or a run directory (--resume without --preset: the run's own config).")
@encoding_option
@run_dir_options
@overrides_argument
def train(data_path, oracle, preset, out, overwrite, resume, overrides, encoding) -> None:
    """Pre-train by MLE, pre-train D, then adversarial rounds; overrides like gan.rollout_num=8 follow."""
    from lmlab.recipes.gan import GANRecipe

    overrides = with_encoding(overrides, encoding)
    if resume:
        recipe = GANRecipe.from_run(out, overrides, log=click.echo)
    else:
        if bool(data_path) == bool(oracle):
            raise click.UsageError("give exactly one of --data PATH or --oracle")
        preset = resume_preset(preset, out, resume) or ("seqgan-oracle" if oracle else "seqgan-multi30k")
        recipe = GANRecipe.from_preset(
            preset, overrides, source="oracle" if oracle else "data", data=data_path, log=click.echo
        )
    result = recipe.train(out, overwrite=overwrite, resume=resume)
    for note in result.notes:
        click.echo(note)
    click.echo(result.summary())


@gan.command("eval")
@click.argument("run_dir", type=click.Path())
@click.option("--temperature", "-t", "temperatures", type=float, multiple=True, help="Sampling temperature (repeatable).")
@click.option("--samples", "-n", type=int, default=0, help="Generated sequences per temperature (0: oracle.eval_samples / number of references).")
@click.option("--references", default=None, type=click.Path(), help="Reference sentences for BLEU (default: data.test_path).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def evaluate(run_dir, temperatures, samples, references, seed, as_json) -> None:
    """NLL-oracle (oracle runs) or BLEU-2..5, Self-BLEU-2..5 and held-out NLL (real data) of RUN_DIR."""
    from lmlab.errors import ConfigError
    from lmlab.recipes.gan import GANRecipe, format_eval

    if samples < 0:
        raise ConfigError(f"--samples must be >= 0, got {samples}")
    result = GANRecipe.evaluate(run_dir, references, temperatures=temperatures or (1.0,), num_samples=samples, seed=seed)
    if as_json:
        echo_json(result)
    else:
        click.echo(format_eval(result))


@gan.command("sample")
@click.argument("run_dir", type=click.Path())
@click.option("-n", "n", type=int, default=20, show_default=True, help="How many sequences.")
@click.option("--temperature", "-t", type=float, default=1.0, show_default=True, help="0 = greedy.")
@click.option("--seed", type=int, default=None, help="Make the samples reproducible.")
def sample(run_dir, n, temperature, seed) -> None:
    """Print N generated sequences (one per line)."""
    from lmlab.recipes.gan import GANRecipe

    for line in GANRecipe.load(run_dir).sample(n, temperature, seed):
        click.echo(line)
