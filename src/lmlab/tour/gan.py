"""Tour stop: SeqGAN on a REDUCED synthetic oracle (vocab 500, length 12, 1,000 sequences; preset ``tour``).

The paper's oracle (vocab 5000, length 20, 120 + 200 epochs) takes hours on a CPU; this stop keeps the recipe and
shrinks the sizes so that MLE pre-training plus a few adversarial rounds fit in about a minute. It prints NLL-oracle
(lower is better) of the random generator, after pre-training, and during the adversarial rounds.
"""

from __future__ import annotations


def run_stop(ctx) -> None:
    from lmlab.recipes.gan import GANRecipe

    scale = getattr(ctx, "scale", 1.0)
    overrides = ["train.progress=false", "train.tensorboard=false", f"train.max_time_s={max(5.0, ctx.budget_s * 0.9):.0f}"]
    if scale < 1.0:  # tests shrink the stop further
        overrides += ["gan.pretrain_epochs=2", "gan.adversarial_rounds=2", "gan.d_pretrain_steps=10", "oracle.num_samples=512"]
    recipe = GANRecipe.from_preset("tour", overrides, source="oracle", log=lambda m: ctx.log("  " + m))
    o = recipe.config.oracle
    ctx.log(
        f"reduced oracle: vocab {o.vocab_size}, embedding/hidden {o.embed_dim}, length {o.seq_len}, "
        f"{o.num_samples} training sequences (the paper's: 5000 / 32 / 20 / 10,000)"
    )
    run_dir = ctx.workdir / "seqgan"
    recipe.train(run_dir, overwrite=True)
    hist = recipe.monitor.history
    rows = [
        f"| {h['phase']} | {h['pretrain_epochs_done']:.0f} | {h['rounds_done']} | {h['val_nll_oracle']:.3f} | "
        f"{h['val_nll_test']:.3f} |"
        for h in hist
    ]
    pre = next((h for h in hist if h["phase"] == "pretrain_end"), None)
    last = hist[-1]
    verdict = ""
    if pre is not None and last is not pre:
        delta = last["val_nll_oracle"] - pre["val_nll_oracle"]
        verdict = (
            f"After {last['rounds_done']} adversarial rounds NLL-oracle moved by {delta:+.3f} from the pre-trained "
            f"generator ({pre['val_nll_oracle']:.3f} -> {last['val_nll_oracle']:.3f}). A handful of rounds on a "
            "reduced oracle says little either way; see docs/seqgan.md and benchmarks/textgan.py for the full "
            "comparison with MLE."
        )
        ctx.log(verdict)
    samples = GANRecipe.load(run_dir).sample(3, seed=0)
    ctx.section(
        "SeqGAN on a reduced synthetic oracle",
        "A random LSTM (the *oracle*, N(0,1) weights) generates the training sequences and scores what the "
        "generator samples: NLL-oracle, lower is better. Reduced sizes for the tour: vocab "
        f"{o.vocab_size}, length {o.seq_len}, {o.num_samples} sequences.\n\n"
        "| phase | pre-training epochs | adversarial rounds | NLL-oracle | NLL on held-out oracle samples |\n"
        "|---|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n\n" + verdict + "\n\nSamples (token ids):\n\n```\n"
        + "\n".join(samples) + "\n```",
    )
