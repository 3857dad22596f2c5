"""Tour stop: English -> French with a GRU encoder-decoder and Bahdanau attention on the bundled Tatoeba pairs."""

from __future__ import annotations

EXAMPLES = ["I am a student.", "She is very happy.", "We are not afraid.", "He is taller than me.", "You are late."]


def run_stop(ctx) -> None:
    from lmlab.data.parallel import load_pairs
    from lmlab.pipelines.translate import plot_attention
    from lmlab.recipes.seq2seq import Seq2SeqRecipe, hold_out

    pairs = load_pairs(ctx.data_dir / "eng-fra-short.tsv.gz")
    train, test = hold_out(pairs, 300, seed=0)
    budget = max(5.0, ctx.budget_s * 0.7)
    n_eval = max(20, int(len(test) * min(1.0, ctx.scale)))  # a scaled-down tour scores fewer pairs
    run = Seq2SeqRecipe.resolve(
        "tour-small",
        [
            f"train.max_time_s={budget:.0f}",
            "train.schedule=constant",  # the time budget, not an epoch count, ends this run
            "train.epochs=50",
            "train.progress=false",
            "train.tensorboard=false",
        ],
    )
    run_dir = ctx.workdir / "eng-fra"
    ctx.log(
        f"training a GRU encoder-decoder with Bahdanau attention on {len(train):,} English-French Tatoeba pairs "
        f"for {budget:.0f} s"
    )
    recipe = Seq2SeqRecipe(run, src=train, val_src=test, log=ctx.log,
                           trained_on=f"bundled eng-fra-short.tsv.gz ({len(train)} pairs)")
    result = recipe.train(run_dir, overwrite=True)
    pipe = Seq2SeqRecipe.load(run_dir)
    outputs = pipe.translate(EXAMPLES, beam_size=5, n_best=3)
    for text, out in zip(EXAMPLES, outputs, strict=True):
        ctx.log(f"  {text:<24} -> {out['translation']}")
    report = pipe.evaluate([s for s, _ in test[:n_eval]], [t for _, t in test[:n_eval]], beam_size=5)
    ctx.log(
        f"{result.step} steps in {result.train_time_s:.0f} s; {n_eval} held-out pairs: BLEU {report['bleu']:.1f} "
        f"(lowercased {report['bleu_lc']:.1f}), chrF {report['chrf']:.1f}  [{report['bleu_signature']}]"
    )
    src_tokens, tgt_tokens, weights = pipe.attention("I am a student.")
    png = plot_attention(
        src_tokens, tgt_tokens, weights, ctx.workdir / "attention-i-am-a-student.png",
        title=f"I am a student. -> {outputs[0]['translation']}",
    )
    rows = "\n".join(
        f"| {t} | {o['translation']} | {' / '.join(h['translation'] for h in o['n_best'][1:])} |"
        for t, o in zip(EXAMPLES, outputs, strict=True)
    )
    samples = "\n".join(
        f"| {s} | {h} | {r} |" for (s, r), h in list(zip(test[:n_eval], report["hypotheses"], strict=True))[:5]
    )
    ctx.section(
        "Translation with attention: English -> French",
        f"A bidirectional GRU encoder and a GRU decoder with Bahdanau (additive) attention "
        f"({recipe.stats['num_parameters']:,} parameters, lowercased word vocabularies) trained for "
        f"{result.train_time_s:.0f} s ({result.step} steps) on {recipe.stats['train_pairs']:,} short Tatoeba pairs "
        "shipped with lmlab (CC BY 2.0, tatoeba.org). Beam search (beam 5, GNMT length penalty 0.6).\n\n"
        "| English | French (best) | next in the 3-best list |\n|---|---|---|\n" + rows + "\n\n"
        f"On {n_eval} held-out pairs: **BLEU {report['bleu']:.1f}** (lowercased {report['bleu_lc']:.1f}), "
        f"chrF {report['chrf']:.1f}; sacreBLEU signature `{report['bleu_signature']}`. The model outputs "
        "lowercase text while the references are cased, which costs cased BLEU.\n\n"
        "| held-out English | model | reference |\n|---|---|---|\n" + samples + "\n\n"
        "The heat map shows, for each French output token (rows), the attention weights over the English "
        "tokens (columns); each row sums to 1. Larger runs: `lmlab/configs/seq2seq/gru-bahdanau.yaml` and "
        "`transformer.yaml` on Multi30k (docs/seq2seq.md).",
        images=[png],
    )
