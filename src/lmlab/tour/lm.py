"""Tour stop: a character-level LSTM trained for about a minute on the bundled tiny Shakespeare, then sampled."""

from __future__ import annotations

import gzip
import math


def run_stop(ctx) -> None:
    from lmlab.generation import SamplingConfig
    from lmlab.plots import plot_curves
    from lmlab.recipes.lm import LMRecipe

    with gzip.open(ctx.data_dir / "tinyshakespeare.txt.gz", "rt", encoding="utf-8") as f:
        text = f.read()
    cut = int(len(text) * 0.9)  # nanoGPT's split: first 90% to train, last 10% to validate
    train_path, val_path = ctx.workdir / "train.txt", ctx.workdir / "val.txt"
    train_path.write_text(text[:cut], encoding="utf-8")
    val_path.write_text(text[cut : cut + 20_000], encoding="utf-8")  # a 20k-character slice keeps evaluation quick
    budget = max(5.0, ctx.budget_s * 0.75)
    recipe = LMRecipe.from_preset(
        "char-shakespeare",
        [
            "model.hidden_dim=256",
            "model.num_layers=1",
            "data.bptt=64",
            "train.batch_size=32",
            "train.lr=0.004",
            "train.schedule=constant",
            f"train.max_time_s={budget:.0f}",
            "train.eval_every=0",
            "train.epochs=1",
            "train.progress=false",
            "train.tensorboard=false",
        ],
        data=train_path,
        val=val_path,
        log=ctx.log,
    )
    run = recipe.config
    run_dir = ctx.workdir / "char-lstm"
    ctx.log(f"training a 1x{run.model.hidden_dim} character LSTM on {cut:,} characters of Shakespeare for {budget:.0f} s")
    result = recipe.train(run_dir, overwrite=True)
    metrics = LMRecipe.evaluate(run_dir, val_path)
    chars_seen = result.step * run.train.batch_size * run.data.bptt
    ctx.log(
        f"{result.step} steps ({chars_seen:,} characters) in {result.train_time_s:.0f} s: validation "
        f"{metrics['nats_per_char']:.3f} nats/char = {metrics['bpc']:.3f} bits/char (uniform guessing: "
        f"{math.log(recipe.codec.vocab_size):.2f} nats)"
    )
    pipe = LMRecipe.load(run_dir)
    cfg = SamplingConfig(max_new_tokens=300, temperature=0.8, top_k=0, top_p=0.95, seed=0)
    sample = "ROMEO:" + pipe.generate("ROMEO:", cfg)["text"]
    ctx.log("sample (temperature 0.8, top-p 0.95, seed 0):\n" + sample)
    curves = plot_curves(run_dir, ctx.workdir / "lm-curves.png")
    ctx.section(
        "A character LSTM language model",
        f"A 1x{run.model.hidden_dim} LSTM read {chars_seen:,} characters of tiny Shakespeare "
        f"({result.step} steps of {run.train.batch_size}x{run.data.bptt}, truncated BPTT with the hidden state "
        f"carried between batches) in {result.train_time_s:.0f} s.\n\n"
        "| metric (20k held-out characters) | value |\n|---|---:|\n"
        f"| nats per character | {metrics['nats_per_char']:.3f} |\n"
        f"| bits per character | {metrics['bpc']:.3f} |\n"
        f"| perplexity per character | {metrics['ppl']:.2f} |\n\n"
        "Sampled with temperature 0.8 and top-p 0.95 (seed 0):\n\n```\n" + sample + "\n```\n\n"
        "The full preset (`lmlab/configs/lm/char-shakespeare.yaml`, 1x512) trains longer; see docs/language-models.md "
        "and benchmarks/lm.py.",
        images=[curves],
    )
