"""Tour stop: word vectors. Skip-gram (negative sampling) and GloVe on the bundled tiny Shakespeare, then
neighbours, analogies and a 2-D projection."""

from __future__ import annotations

import time

QUERIES = ["king", "thou", "love", "night", "sword", "father"]
ANALOGIES = [("he", "his", "she"), ("king", "queen", "man"), ("brother", "sister", "father")]
PLOT_WORDS = [
    "king", "queen", "prince", "duke", "lord", "lady", "father", "mother", "brother", "sister", "son", "daughter",
    "thou", "thee", "thy", "you", "your", "he", "she", "his", "her",
    "love", "hate", "fear", "joy", "grief", "sorrow",
    "night", "day", "morning", "sun", "moon",
    "sword", "blood", "death", "war", "peace",
    "one", "two", "three", "ten",
]


def _table(rows: list[tuple[str, list[tuple[str, float]]]]) -> str:
    lines = ["| word | nearest neighbours (cosine) |", "|---|---|"]
    for word, hits in rows:
        lines.append(f"| {word} | " + ", ".join(f"{w} {s:.2f}" for w, s in hits) + " |")
    return "\n".join(lines)


def run_stop(ctx) -> None:
    from lmlab.recipes.embed import GloVeRecipe, Word2VecRecipe
    from lmlab.vectors import plot_words

    corpus = ctx.data_dir / "tinyshakespeare.txt.gz"
    epochs = max(1, round(5 * min(1.0, ctx.scale)))
    ctx.log(f"skip-gram with negative sampling on {corpus.name}: dim 100, window 5, 5 noise words, {epochs} epochs")
    t0 = time.monotonic()
    sg = Word2VecRecipe.from_preset("sgns", [f"epochs={epochs}", "min_count=3", "threads=0", "seed=1"],
                                    corpus=str(corpus), log=ctx.log)
    sg.train(ctx.workdir / "skipgram", overwrite=True)
    sg_s = time.monotonic() - t0
    kv = sg.model.wv
    neighbours = [(w, kv.most_similar(w, topn=5)) for w in QUERIES if w in kv]
    for word, hits in neighbours:
        ctx.log(f"  {word:>7}: " + ", ".join(f"{w} ({s:.2f})" for w, s in hits))
    analogy_rows = []
    for a, b, c in ANALOGIES:
        if all(w in kv for w in (a, b, c)):
            hits = kv.analogy(a, b, c, topn=3, restrict_vocab=5000)
            analogy_rows.append(f"| {a} : {b} :: {c} : ? | " + ", ".join(f"**{w}**" if i == 0 else w
                                                                        for i, (w, _) in enumerate(hits)) + " |")
            ctx.log(f"  {a} : {b} :: {c} : {hits[0][0]}   (then {', '.join(w for w, _ in hits[1:])})")

    glove_epochs = max(2, round(10 * min(1.0, ctx.scale)))
    ctx.log(f"GloVe on the same text: window 10, x_max 10 (a small corpus), {glove_epochs} epochs")
    t0 = time.monotonic()
    glove = GloVeRecipe.from_preset("glove", [f"epochs={glove_epochs}", "window=10", "min_count=3", "x_max=10.0",
                                              "threads=0", "seed=1"], corpus=str(corpus), log=ctx.log)
    glove.train(ctx.workdir / "glove", overwrite=True)
    glove_s = time.monotonic() - t0
    glove_neighbours = [(w, glove.model.wv.most_similar(w, topn=5)) for w in QUERIES if w in glove.model.wv]
    for word, hits in glove_neighbours[:3]:
        ctx.log(f"  {word:>7}: " + ", ".join(f"{w} ({s:.2f})" for w, s in hits))

    words = [w for w in PLOT_WORDS if w in kv]
    png = plot_words(kv, words, ctx.workdir / "embed-projection.png", method="both",
                     title="skip-gram vectors of tiny Shakespeare")
    ctx.log(f"2-D projection of {len(words)} words: {png}")
    info = sg.model.corpus_info
    ctx.section(
        "Word vectors: word2vec and GloVe",
        f"Skip-gram with negative sampling read tiny Shakespeare ({info['num_raw_tokens']:,} words, a vocabulary of "
        f"{info['vocab_size']:,} words seen at least 3 times) {epochs} times in {sg_s:.0f} s "
        f"(training loss per example {sg.model.history[0].loss:.3f} -> {sg.model.history[-1].loss:.3f}). "
        f"GloVe counted {glove.model.corpus_info['nnz']:,} non-zero co-occurrences and fitted them in {glove_s:.0f} s.\n\n"
        "Skip-gram neighbours:\n\n" + _table(neighbours) + "\n\nGloVe neighbours:\n\n" + _table(glove_neighbours)
        + "\n\nAnalogies with 3CosAdd among the 5,000 most frequent words (a : b :: c : ?, best three):\n\n"
        "| question | answers |\n|---|---|\n" + "\n".join(analogy_rows)
        + "\n\nOn a corpus this small (about 200k words) the neighbours already group forms of address, kings and "
        "dukes, or feelings; analogies need far more text (the benchmark uses 17M words). "
        "Try `lmlab embed similar runs/tour/embed/skipgram WORD`.",
        images=[png],
    )
