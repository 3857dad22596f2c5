"""``lmlab embed train | similar | analogy | eval | plot | convert``: word vectors (word2vec, GloVe)."""

from __future__ import annotations

import json
import sys

import click

from lmlab.cli.common import overrides_argument

ALGOS = ("sgns", "skipgram", "cbow", "glove")


@click.group("embed")
def embed() -> None:
    """Train word vectors (skip-gram, CBOW, GloVe), query them and evaluate them."""


def _config_for(algo: str, options: dict, overrides: tuple[str, ...]):
    """The ``model`` config ``embed train`` would run (preset of ``algo`` + flags + overrides), validated."""
    from lmlab.recipes.embed import recipe_from_cli

    return recipe_from_cli(algo, options, overrides).config.model


@embed.command("train")
@click.option("--algo", type=click.Choice(ALGOS), default=None,
              help="sgns/skipgram: skip-gram; cbow; glove.  [default: sgns; with --init-from, that run's]")
@click.option("--corpus", required=True, type=click.Path(), help="Text file(s) (.txt/.gz/.jsonl...) or a folder.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Run directory to write.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out from its last completed epoch.")
@click.option("--init-from", type=click.Path(), default=None,
              help="Continue this finished word2vec run on --corpus: its vectors and settings, new words added, "
                   "the learning rate restarted.")
@click.option("--embed-dim", "--dim", "embed_dim", type=int, default=None, help="Vector size [100].")
@click.option("--window", type=int, default=None, help="Context window [5 word2vec, 10 GloVe].")
@click.option("--epochs", type=int, default=None, help="Passes over the corpus [5 word2vec, 25 GloVe].")
@click.option("--min-count", type=int, default=None, help="Ignore rarer words [5].")
@click.option("--max-vocab", type=int, default=None, help="Keep only the N most frequent words [no limit].")
@click.option("--negative", type=int, default=None, help="Noise words per example [5; 0 with --hs].")
@click.option("--hs", is_flag=True, default=None, help="Hierarchical softmax (Huffman tree).")
@click.option("--sample", type=float, default=None, help="Subsampling threshold [1e-3; 0 = off].")
@click.option("--shared-negatives", is_flag=True, default=None,
              help="Skip-gram: share each centre word's noise words across its window (faster; Ji et al. 2016).")
@click.option("--lr", type=float, default=None, help="Initial learning rate [0.025 SG, 0.05 CBOW, 0.05 GloVe].")
@click.option("--min-lr", type=float, default=None, help="Final learning rate of the linear decay [1e-4].")
@click.option("--x-max", type=float, default=None, help="GloVe weighting cut-off [100].")
@click.option("--alpha", type=float, default=None, help="GloVe weighting exponent [0.75].")
@click.option("--keep", type=click.Choice(["w+wt", "w"]), default=None, help="GloVe output: W + W~ or W.")
@click.option("--memory-mb", type=int, default=None, help="GloVe counting memory [512].")
@click.option("--threads", type=int, default=None, help="Worker threads [every core].")
@click.option("--seed", type=int, default=None, help="Random seed [1]; one thread + a seed is reproducible.")
@click.option("--tokenizer", type=click.Choice(["words", "whitespace"]), default=None, help="How to split words.")
@click.option("--break-on", type=click.Choice(["line", "paragraph"]), default=None, help="What ends a sentence.")
@click.option("--text-field", default=None, help="JSONL: the field holding the text [text].")
@click.option("--encoding", default=None, help="Text encoding of the corpus [utf-8].")
@click.option("--save-format", type=click.Choice(["word2vec", "word2vec-binary", "glove"]), multiple=True,
              help="Also write vectors.txt / vectors.bin in these formats.")
@overrides_argument
def train(algo, corpus, out, overwrite, resume, init_from, save_format, overrides, **options) -> None:
    """Train word vectors on CORPUS; KEY=VALUE overrides (e.g. ns_exponent=0.5) follow the options."""
    from lmlab.recipes.embed import recipe_from_cli

    extra = {"init_from": init_from} if init_from is not None else {}
    recipe = recipe_from_cli(algo, options, overrides, resume_dir=out if resume else None, corpus=corpus,
                             save_formats=save_format, log=click.echo, **extra)
    result = recipe.train(out, overwrite=overwrite, resume=resume)
    click.echo(f"{result.notes[-1]}; run directory: {out}")


def _check_count(value: int | None, option: str, minimum: int) -> None:
    from lmlab.errors import ConfigError

    if value is not None and value < minimum:
        raise ConfigError(f"{option} must be >= {minimum}, got {value}")


def _words_from(words: tuple[str, ...]) -> list[str]:
    if words == ("-",):
        return [w for line in sys.stdin for w in line.split()]
    return list(words)


@embed.command("similar")
@click.argument("vectors", type=click.Path())
@click.argument("words", nargs=-1, required=True)
@click.option("--topn", "-n", type=int, default=10, show_default=True)
@click.option("--negative", multiple=True, help="Subtract this word (repeatable): most_similar(WORDS, negative).")
@click.option("--restrict-vocab", type=int, default=None, help="Search only the N most frequent words.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def similar(vectors, words, topn, negative, restrict_vocab, as_json) -> None:
    """Nearest neighbours (cosine) of each WORD; with --negative, of the sum of WORDS minus those."""
    from lmlab.vectors import load_vectors

    _check_count(topn, "--topn/-n", 1)
    _check_count(restrict_vocab, "--restrict-vocab", 0)
    kv = load_vectors(vectors)
    words = _words_from(words)
    queries = [[w] for w in words] if not negative else [words]
    results = {}
    for q in queries:
        results[" + ".join(q) + "".join(f" - {n}" for n in negative)] = kv.most_similar(
            q, list(negative), topn=topn, restrict_vocab=restrict_vocab)
    if as_json:
        click.echo(json.dumps({k: [[w, round(s, 4)] for w, s in v] for k, v in results.items()}, ensure_ascii=False))
        return
    for query, hits in results.items():
        click.echo(f"{query}:")
        for word, score in hits:
            click.echo(f"  {score:.3f}  {word}")


@embed.command("analogy")
@click.argument("vectors", type=click.Path())
@click.argument("a")
@click.argument("b")
@click.argument("c")
@click.option("--topn", "-n", type=int, default=5, show_default=True)
@click.option("--method", type=click.Choice(["add", "mul"]), default="add", show_default=True,
              help="3CosAdd or 3CosMul.")
@click.option("--restrict-vocab", type=int, default=30000, show_default=True,
              help="Candidates: the N most frequent words (0: all).")
def analogy(vectors, a, b, c, topn, method, restrict_vocab) -> None:
    """A is to B as C is to ?  (lmlab embed analogy DIR man king woman)."""
    from lmlab.vectors import load_vectors

    _check_count(topn, "--topn/-n", 1)
    _check_count(restrict_vocab, "--restrict-vocab", 0)
    kv = load_vectors(vectors)
    hits = kv.analogy(a, b, c, topn=topn, method=method, restrict_vocab=restrict_vocab or None)
    click.echo(f"{a} : {b} :: {c} : ?")
    for word, score in hits:
        click.echo(f"  {score:.3f}  {word}")


@embed.command("eval")
@click.argument("vectors", type=click.Path())
@click.option("--pairs", multiple=True, type=click.Path(), help="Word-similarity file(s): word1 word2 score.")
@click.option("--analogies", multiple=True, type=click.Path(), help="Analogy file(s), questions-words format.")
@click.option("--restrict-vocab", type=int, default=30000, show_default=True,
              help="Analogies: only questions and candidates among the N most frequent words.")
@click.option("--method", type=click.Choice(["add", "mul"]), default="add", show_default=True)
@click.option("--on-malformed", type=click.Choice(["skip", "error"]), default="skip", show_default=True,
              help="Analogy lines that are not four words: count and skip them, or stop with the line number.")
@click.option("--sections", is_flag=True, help="Print the accuracy of every analogy section.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def evaluate(vectors, pairs, analogies, restrict_vocab, method, on_malformed, sections, as_json) -> None:
    """Spearman correlation on word-similarity sets and accuracy on analogy questions."""
    from lmlab.errors import ConfigError
    from lmlab.recipes.embed import VectorsRecipe

    if not pairs and not analogies:
        raise ConfigError("nothing to evaluate: pass --pairs FILE and/or --analogies FILE")
    _check_count(restrict_vocab, "--restrict-vocab", 0)
    report = VectorsRecipe.evaluate(vectors, pairs=pairs, analogies=analogies, restrict_vocab=restrict_vocab or None,
                                    method=method, on_malformed=on_malformed)
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False))
        return
    for path, r in report["pairs"].items():
        click.echo(f"{path}: Spearman {r['spearman']:.3f}  Pearson {r['pearson']:.3f}  "
                   f"({r['evaluated']}/{r['pairs']} pairs, {r['oov']} out of vocabulary)")
    def pct(part: dict) -> str:
        return f"{100 * part['accuracy']:.1f}%" if part["total"] else "-"

    for path, r in report["analogies"].items():
        t = r["total"]
        click.echo(f"{path}: accuracy {pct(t)} ({t['correct']}/{t['total']}; semantic {pct(r['semantic'])}, "
                   f"syntactic {pct(r['syntactic'])}; {r['oov']} questions out of vocabulary, "
                   f"{r['malformed']} malformed lines skipped)")
        if sections:
            for s in r["sections"]:
                click.echo(f"  {s['section']:<28} {pct(s):>6}  ({s['correct']}/{s['total']})")


@embed.command("plot")
@click.argument("vectors", type=click.Path())
@click.option("--words", "-w", multiple=True, help="Words to plot (repeatable, or comma-separated).")
@click.option("--top", type=int, default=0, help="Plot the N most frequent words instead.")
@click.option("--method", type=click.Choice(["pca", "tsne", "both"]), default="both", show_default=True)
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="PNG to write.")
def plot(vectors, words, top, method, out) -> None:
    """2-D PCA and t-SNE projection of some words."""
    from lmlab.errors import ConfigError
    from lmlab.vectors import load_vectors, plot_words

    kv = load_vectors(vectors)
    chosen = [w for item in words for w in item.split(",") if w]
    if top:
        chosen += kv.words[:top]
    if not chosen:
        raise ConfigError("choose words with --words a,b,c or --top N")
    plot_words(kv, chosen, out, method=method)
    click.echo(f"wrote {out} ({len(set(chosen))} words, {method})")


@embed.command("convert")
@click.argument("vectors", type=click.Path())
@click.argument("out", type=click.Path())
@click.option("--to", "fmt", type=click.Choice(["native", "word2vec", "word2vec-binary", "glove"]), required=True)
def convert(vectors, out, fmt) -> None:
    """Rewrite vectors in another format (native run directory, word2vec text/binary, GloVe text)."""
    from lmlab.vectors import load_vectors

    kv = load_vectors(vectors)
    if fmt == "native":
        kv.save(out, sections={"vectors": {"vocab_size": len(kv), "embed_dim": kv.vector_size, "source": str(vectors)}})
    elif fmt == "glove":
        kv.save_glove_format(out)
    else:
        kv.save_word2vec_format(out, binary=fmt == "word2vec-binary")
    click.echo(f"wrote {out} ({len(kv):,} words, {fmt})")
