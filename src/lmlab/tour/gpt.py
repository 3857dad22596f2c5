"""Tour stop: a tiny character-level GPT trained for about a minute on the bundled tiny Shakespeare, then sampled
with the KV cache (and once without it, to show what the cache buys)."""

from __future__ import annotations

import math
import time


def run_stop(ctx) -> None:
    from lmlab.plots import plot_curves
    from lmlab.recipes.gpt import GPTRecipe

    data = ctx.data_dir / "tinyshakespeare.txt.gz"
    budget = max(5.0, ctx.budget_s * 0.7)
    recipe = GPTRecipe.from_preset(
        "nanogpt-cpu",
        [
            "model.num_layers=2",
            "model.embed_dim=96",
            "model.num_heads=4",
            "model.block_size=64",
            "train.batch_size=16",
            "train.lr=0.003",
            "train.schedule=constant",
            "train.warmup_steps=50",
            "train.max_steps=100000",
            f"train.max_time_s={budget:.0f}",
            "train.eval_every=0",
            "train.save_every=0",
            "train.progress=false",
            "train.tensorboard=false",
            "data.max_eval_tokens=20000",  # the first 20k held-out characters keep evaluation quick
        ],
        data=str(data),
        log=ctx.log,
    )
    run = recipe.config
    run_dir = ctx.workdir / "tiny-gpt"
    ctx.log(
        f"training a {run.model.num_layers}-layer, {run.model.embed_dim}-wide character GPT (context "
        f"{run.model.block_size}) on the first 90% of tiny Shakespeare for {budget:.0f} s"
    )
    result = recipe.train(run_dir, overwrite=True)
    val_loss = result.best
    tokens_seen = result.step * run.train.batch_size * run.model.block_size
    vocab = recipe.codec.vocab_size
    ctx.log(
        f"{result.step} steps ({tokens_seen:,} characters) in {result.train_time_s:.0f} s: validation loss "
        f"{val_loss:.3f} nats/char = {val_loss / math.log(2):.3f} bits/char (uniform guessing: {math.log(vocab):.2f})"
    )
    pipe = GPTRecipe.load(run_dir)
    settings = {"max_new_tokens": 300, "temperature": 0.8, "top_p": 0.95, "seed": 0}
    sample = "ROMEO:" + pipe.generate("ROMEO:", **settings)["text"]
    ctx.log("sample (temperature 0.8, top-p 0.95, seed 0):\n" + sample)
    # the cache pays while the text fits the context; past it every token re-reads the last block_size tokens
    short = {"max_new_tokens": run.model.block_size - 7, "temperature": 0.8, "seed": 0}
    speed, texts = {}, {}
    for use_cache in (True, False):
        pipe.use_cache = use_cache
        start = time.perf_counter()
        texts[use_cache] = pipe.generate("ROMEO:", **short)["text"]
        speed[use_cache] = short["max_new_tokens"] / (time.perf_counter() - start)
    same = "the same" if texts[True] == texts[False] else "DIFFERENT"
    ctx.log(
        f"{short['max_new_tokens']} tokens within the context: {speed[True]:.0f} tokens/s with the KV cache, "
        f"{speed[False]:.0f} without ({same} tokens)"
    )
    curves = plot_curves(run_dir, ctx.workdir / "gpt-curves.png")
    ctx.section(
        "A tiny character GPT",
        f"A {run.model.num_layers}-layer, {run.model.num_heads}-head, {run.model.embed_dim}-wide decoder-only "
        f"Transformer ({pipe.model.num_parameters():,} parameters, pre-LayerNorm, tied embeddings, context "
        f"{run.model.block_size}) read {tokens_seen:,} characters of tiny Shakespeare in "
        f"{result.train_time_s:.0f} s ({result.step} steps of {run.train.batch_size} random blocks). The "
        "corpus was tokenized once into a memory-mapped uint16 file.\n\n"
        "| metric (20k held-out characters) | value |\n|---|---:|\n"
        f"| validation loss, nats per character | {val_loss:.3f} |\n"
        f"| bits per character | {val_loss / math.log(2):.3f} |\n"
        f"| generating {short['max_new_tokens']} tokens with the KV cache, tokens/s | {speed[True]:.0f} |\n"
        f"| the same without the cache ({same} tokens), tokens/s | {speed[False]:.0f} |\n\n"
        "Sampled with temperature 0.8 and top-p 0.95 (seed 0):\n\n```\n" + sample + "\n```\n\n"
        "nanoGPT's CPU configuration (`lmlab gpt train --preset nanogpt-cpu`, 2000 steps) reaches about 1.88; "
        "see docs/gpt.md and benchmarks/gpt.py.",
        images=[curves],
    )
