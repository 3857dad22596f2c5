"""Word vectors side by side: lmlab word2vec (skip-gram, CBOW) and GloVe against gensim (issue 3).

Corpus: ../shared/data/gutenberg-lahiri (272 public-domain books, ~17M words), tokenized once with lmlab's
tokenizer (lower-case, runs of letters/digits) into one paragraph per line; both libraries then read that
same file (gensim through its fastest path, ``corpus_file``; lmlab with the whitespace tokenizer).

Same hyper-parameters for both: dim 100, window 5, negative 5, min_count 5, sample 1e-3, 5 epochs, 2 threads,
linear lr decay 0.025 (SG) / 0.05 (CBOW) -> 1e-4, and no loss bookkeeping (gensim's default
compute_loss=False; ours is switched off too, its cost is reported separately by the ``loss-cost`` row).

Every trainer runs in its own subprocess (optionally pinned to its own cores, ``--parallel``), which reports:

* ``train_s`` - wall time of the training epochs alone; ``words_per_s`` = epochs x corpus words / train_s
  (the same numerator for both libraries, so the ratio is the inverse ratio of times). lmlab's word2vec
  and GloVe kernels are compiled at install time (Cython); a tiny warm-up run before the clock starts loads them;
* ``vocab_s`` - reading the corpus and building the vocabulary (gensim ``build_vocab``, lmlab encoding);
* ``peak_rss_mb`` - the process's peak resident memory (VmHWM) at the end of training;
* quality, each model scored by lmlab's evaluator and by gensim's: WordSim-353 and SimLex-999 Spearman
  (gensim's 3-column copies of the files, both words among the 300k most frequent), Google analogies with
  3CosAdd restricted to the 30k most frequent words (questions with a rarer word are skipped, as in gensim).

Seeds: ``--seeds 1,2,3``; the summary holds medians and the lmlab / gensim ratios.

Examples::

    python benchmarks/word2vec.py                                   # full run (long)
    python benchmarks/word2vec.py --max-words 2000000 --seeds 1 --algos sg,cbow
    python benchmarks/word2vec.py --parallel 4 --glove-threads 4    # 4 jobs at once, each on its own cores
    python benchmarks/word2vec.py --quick     # first 1M words, one seed, one thread, GloVe 5 epochs (QUICK), ~2 min

``--quick`` sets the defaults in ``QUICK`` (options given on the command line still win) and writes
benchmarks/results/word2vec.quick.json; one thread makes lmlab's numbers deterministic. Without gensim its
column is skipped with a note.

``--protocol 5m`` is issue 20's point (``PROTOCOLS["5m"]``): the first 5,060,000 words of the tokenized corpus,
3 epochs, one thread, seeds 1-3, lmlab against gensim fed by ``LineSentence`` (``gensim-iter``, its linear
schedule), and GloVe (dim 100, window 10, x_max 100, alpha 0.75, 15 iterations, lr 0.05) against the reference
``glove.c`` (``glove-c``). The ``glove-c`` row needs the stanfordnlp/GloVe source tree: ``--glove-c-src DIR`` or
``LMLAB_GLOVE_C_SRC=DIR`` (built with ``make`` in a temporary copy); without it the row is skipped with a message.
glove.c counts, shuffles and trains with its own tools on the same tokens and vocabulary (min_count 5). The
result goes under the key ``protocol_5m`` of benchmarks/results/word2vec.json, the other records kept, and so
do the record's earlier runs that this one does not redo (same corpus and settings; ``merge_protocol_record``), so
the protocol can be run a few rows at a time (``--algos sg``, then ``--algos glove --glove-seeds 3``)::

    LMLAB_GLOVE_C_SRC=/tmp/glove-src python benchmarks/word2vec.py --protocol 5m

Results: benchmarks/results/word2vec.json (machine info, command, date, every run, medians, ratios).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DEFAULT_CORPUS = DATA / "gutenberg-lahiri" / "books.jsonl.gz"
DEFAULT_EVAL = DATA / "word-similarity"
EVAL_FILES = {
    "ws353": "wordsim353/wordsim353.gensim.tsv",
    "simlex": "simlex999/simlex999.gensim.txt",
    "analogy": "google-analogy/questions-words.txt",
}
QUICK = {"max_words": 1_000_000, "seeds": "1", "threads": 1, "glove_threads": 1, "glove_seeds": "1", "glove_epochs": 5,
         "out": str(ROOT / "benchmarks" / "results" / "word2vec.quick.json")}
HPARAMS = {"embed_dim": 100, "window": 5, "negative": 5, "min_count": 5, "sample": 1e-3, "epochs": 5}
PROTOCOLS = {
    "5m": {"max_words": 5_060_000, "epochs": 3, "threads": 1, "glove_threads": 1, "seeds": "1,2,3",
           "glove_seeds": "1,2,3", "algos": "sg,cbow,glove", "impls": "lmlab,gensim-iter,glove-c",
           "glove_epochs": 15, "glove_window": 10, "glove_bias_lr": 1.0},
}
#: speed targets (lmlab / reference words per second) of the ratios in the summary
TARGETS = {"sg": 2.0, "cbow": 1.5, "sg-vs-gensim-iter": 1.8, "cbow-vs-gensim-iter": 2.0, "glove-vs-glove-c": 2.0}


# ---------------------------------------------------------------------------------------------------------
# corpus preparation
# ---------------------------------------------------------------------------------------------------------


def _fit_small(model) -> None:
    """Load (or compile) a model's kernels on a tiny corpus, without importing torch (the peak RSS is measured)."""
    from lmlab.data.sentences import encode_corpus

    with tempfile.TemporaryDirectory(prefix="warm-") as tmp:
        enc = encode_corpus([["a", "b", "c", "d"] * 5] * 4, model.config, tmp, 1)
        if hasattr(model, "timings"):
            model.fit(enc, tmp)
        else:
            model.fit(enc)


def prepare_corpus(src: Path, out: Path, max_words: int | None) -> dict:
    """Tokenize ``src`` into one paragraph per line (at most 10,000 words) in ``out``."""
    sys.path.insert(0, str(ROOT / "src"))
    from lmlab.data.sentences import iter_sentences
    from lmlab.models.word2vec import Word2VecConfig

    cfg = Word2VecConfig(break_on="paragraph")
    words = sentences = 0
    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for sent in iter_sentences(str(src), cfg):
            if max_words and words + len(sent) > max_words:
                sent = sent[: max_words - words]
            if sent:
                fh.write(" ".join(sent) + "\n")
                words += len(sent)
                sentences += 1
            if max_words and words >= max_words:
                break
    os.replace(tmp, out)
    return {"words": words, "sentences": sentences, "seconds": round(time.perf_counter() - t0, 1)}


def count_words(path: Path) -> tuple[int, int]:
    words = lines = 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            words += len(line.split())
            lines += 1
    return words, lines


# ---------------------------------------------------------------------------------------------------------
# workers (run in subprocesses)
# ---------------------------------------------------------------------------------------------------------


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _cpu_s() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _eval_lmlab(words, vectors, eval_dir: Path) -> dict:
    from lmlab.vectors import KeyedVectors

    kv = KeyedVectors(words, vectors)
    ws = kv.evaluate_word_pairs(eval_dir / EVAL_FILES["ws353"])
    sl = kv.evaluate_word_pairs(eval_dir / EVAL_FILES["simlex"])
    an = kv.evaluate_analogies(eval_dir / EVAL_FILES["analogy"], restrict_vocab=30000)
    return {"ws353": ws["spearman"], "ws353_oov": ws["oov"], "simlex": sl["spearman"], "simlex_oov": sl["oov"],
            "analogy": an["total"]["accuracy"], "analogy_semantic": an["semantic"]["accuracy"],
            "analogy_syntactic": an["syntactic"]["accuracy"], "analogy_questions": an["total"]["total"]}


def _eval_gensim(words, vectors, eval_dir: Path) -> dict:
    import logging

    from gensim.models import KeyedVectors as GKV

    logging.disable(logging.CRITICAL)
    kv = GKV(vector_size=vectors.shape[1])
    kv.add_vectors(list(words), vectors)
    ws = kv.evaluate_word_pairs(str(eval_dir / EVAL_FILES["ws353"]))
    sl = kv.evaluate_word_pairs(str(eval_dir / EVAL_FILES["simlex"]))
    score, _sections = kv.evaluate_word_analogies(str(eval_dir / EVAL_FILES["analogy"]), restrict_vocab=30000)
    return {"ws353": float(ws[1].statistic), "simlex": float(sl[1].statistic), "analogy": float(score)}


def worker(args: argparse.Namespace) -> dict:
    impl, algo, seed = args.worker
    seed = int(seed)
    corpus = Path(args.tokens)
    eval_dir = Path(args.eval_dir)
    raw_words = int(args.raw_words)
    rec: dict = {"impl": impl, "algo": algo, "seed": seed, "threads": args.threads}
    t_start = time.perf_counter()
    if impl in ("gensim", "gensim-iter"):
        import logging

        import gensim
        from gensim.models import Word2Vec as GW2V
        from gensim.models.word2vec import LineSentence

        logging.disable(logging.CRITICAL)
        rec["version"] = gensim.__version__
        m = GW2V(vector_size=HPARAMS["embed_dim"], window=HPARAMS["window"], negative=HPARAMS["negative"],
                 min_count=HPARAMS["min_count"], sample=HPARAMS["sample"], epochs=args.epochs,
                 workers=args.threads, sg=1 if algo == "sg" else 0, seed=seed, hs=0,
                 # word2vec.c's (and lmlab's) starting rates; gensim's default alpha is 0.025 for both
                 alpha=0.025 if algo == "sg" else 0.05, min_alpha=1e-4)
        # "gensim": corpus_file mode, gensim's fastest. Each of its workers measures its epoch progress as its own
        # sentences over the whole corpus's, so with W workers alpha decays only 1/W of the way within an epoch and
        # restarts at the next one (word2vec_corpusfile.pyx, get_next_alpha): with 2 workers it ends near
        # alpha(0.9), not min_alpha. "gensim-iter": the same model fed by LineSentence, whose schedule is linear.
        source = {"corpus_file": str(corpus)} if impl == "gensim" else {"corpus_iterable": LineSentence(str(corpus))}
        t0 = time.perf_counter()
        m.build_vocab(**source)
        rec["vocab_s"] = time.perf_counter() - t0
        t0, c0 = time.perf_counter(), _cpu_s()
        m.train(**source, total_examples=m.corpus_count, total_words=m.corpus_total_words, epochs=args.epochs)
        rec["min_alpha_yet_reached"] = float(m.min_alpha_yet_reached)
        rec["train_s"] = time.perf_counter() - t0
        rec["train_cpu_s"] = _cpu_s() - c0
        rec["peak_rss_mb"] = _peak_rss_mb()
        words = list(m.wv.index_to_key)
        vectors = m.wv.vectors
        rec["vocab_size"] = len(words)
    elif impl in ("lmlab", "lmlab-shared") and algo in ("sg", "cbow"):
        from lmlab.data.sentences import encode_corpus
        from lmlab.models.word2vec import Word2Vec, Word2VecConfig

        cfg = Word2VecConfig(arch="skipgram" if algo == "sg" else "cbow", embed_dim=HPARAMS["embed_dim"],
                             window=HPARAMS["window"], negative=HPARAMS["negative"],
                             min_count=HPARAMS["min_count"], sample=HPARAMS["sample"], epochs=args.epochs,
                             threads=args.threads, seed=seed, tokenizer="whitespace", lowercase=False,
                             compute_loss=args.loss, shared_negatives=impl == "lmlab-shared")
        # warm-up: load (or compile) the kernels before the clock starts
        warm = Word2VecConfig(arch=cfg.arch, epochs=1, min_count=1, threads=args.threads, compute_loss=args.loss)
        _fit_small(Word2Vec(warm))
        with tempfile.TemporaryDirectory(prefix="w2vbench-") as tmp:
            t0 = time.perf_counter()
            enc = encode_corpus(str(corpus), cfg, tmp, cfg.min_count)
            rec["vocab_s"] = time.perf_counter() - t0
            model = Word2Vec(cfg)
            t0, c0 = time.perf_counter(), _cpu_s()
            model.fit(enc)
            rec["train_s"] = time.perf_counter() - t0
            rec["train_cpu_s"] = _cpu_s() - c0
        rec["peak_rss_mb"] = _peak_rss_mb()
        rec["epoch_loss"] = [h.loss for h in model.history]
        words, vectors = model.words, model.vectors
        rec["vocab_size"] = len(words)
    elif impl == "lmlab" and algo == "glove":
        from lmlab.data.sentences import encode_corpus
        from lmlab.models.glove import GloVe, GloVeConfig

        cfg = GloVeConfig(embed_dim=HPARAMS["embed_dim"], window=args.glove_window, min_count=HPARAMS["min_count"],
                          epochs=args.glove_epochs, threads=args.threads, seed=seed, tokenizer="whitespace",
                          lowercase=False, memory_mb=args.glove_memory_mb, adagrad=args.glove_adagrad,
                          bias_lr=args.glove_bias_lr)
        warm = GloVeConfig(epochs=1, min_count=1, threads=args.threads, memory_mb=1)
        _fit_small(GloVe(warm))
        with tempfile.TemporaryDirectory(prefix="glovebench-") as tmp:
            t0 = time.perf_counter()
            enc = encode_corpus(str(corpus), cfg, tmp, cfg.min_count)
            model = GloVe(cfg)
            model.timings["encode_s"] = time.perf_counter() - t0
            model.fit(enc, tmp)
        rec["vocab_s"] = model.timings["encode_s"]
        rec["count_s"] = model.timings["count_s"]
        rec["train_s"] = model.timings["train_s"]
        rec["nnz"] = model.corpus_info["nnz"]
        rec["epochs"] = args.glove_epochs
        rec["window"] = args.glove_window
        rec["adagrad"] = args.glove_adagrad
        rec["bias_lr"] = args.glove_bias_lr
        rec["peak_rss_mb"] = _peak_rss_mb()
        rec["epoch_loss"] = [h.loss for h in model.history]
        words, vectors = model.words, model.vectors
        rec["vocab_size"] = len(words)
    elif impl == "glove-c" and algo == "glove":
        rec.update(_run_glove_c(Path(args.glove_c_bin), corpus, seed, args))
        words, vectors = rec.pop("words"), rec.pop("vectors")
        rec["vocab_size"] = len(words)
    else:
        raise SystemExit(f"unknown worker {impl} {algo}")
    if algo != "glove":
        rec["words_per_s"] = args.epochs * raw_words / rec["train_s"]
        rec["words_per_cpu_s"] = args.epochs * raw_words / rec["train_cpu_s"]
    rec["total_s"] = time.perf_counter() - t_start
    sys.path.insert(0, str(ROOT / "src"))
    rec["quality"] = _eval_lmlab(words, vectors, eval_dir)
    try:
        rec["quality_gensim_eval"] = _eval_gensim(words, vectors, eval_dir)
    except ImportError:
        rec["quality_gensim_eval"] = None
    return rec


def build_glove_c(src: Path, into: Path) -> Path:
    """``make`` a copy of the stanfordnlp/GloVe source tree ``src`` in ``into``; returns its build/ folder."""
    import shutil

    dst = into / "glove-c"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("build", ".git"))
    subprocess.run(["make"], cwd=dst, check=True, capture_output=True, text=True)
    return dst / "build"


def _run_glove_c(bin_dir: Path, corpus: Path, seed: int, args: argparse.Namespace) -> dict:
    """vocab_count -> cooccur -> shuffle -> glove on ``corpus`` with the benchmark's GloVe settings."""
    import resource

    import numpy as np

    def run(tool: str, *opts: str, stdin: Path, stdout: Path) -> None:
        with open(stdin, "rb") as fin, open(stdout, "wb") as fout:
            subprocess.run([str(bin_dir / tool), *opts], stdin=fin, stdout=fout, stderr=subprocess.DEVNULL,
                           check=True)

    rec: dict = {"epochs": args.glove_epochs, "window": args.glove_window}
    with tempfile.TemporaryDirectory(prefix="glovec-") as tmp:
        t = Path(tmp)
        t0 = time.perf_counter()
        run("vocab_count", "-min-count", str(HPARAMS["min_count"]), "-verbose", "0", stdin=corpus,
            stdout=t / "vocab.txt")
        rec["vocab_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        run("cooccur", "-memory", "1.0", "-vocab-file", str(t / "vocab.txt"), "-verbose", "0", "-window-size",
            str(args.glove_window), stdin=corpus, stdout=t / "cooc.bin")
        run("shuffle", "-memory", "1.0", "-verbose", "0", "-seed", str(seed), stdin=t / "cooc.bin",
            stdout=t / "cooc.shuf.bin")
        rec["count_s"] = time.perf_counter() - t0
        rec["nnz"] = (t / "cooc.shuf.bin").stat().st_size // 16  # int, int, double
        t0 = time.perf_counter()
        subprocess.run([str(bin_dir / "glove"), "-save-file", str(t / "vectors"), "-threads",
                        str(args.threads), "-input-file", str(t / "cooc.shuf.bin"), "-x-max", "100", "-iter",
                        str(args.glove_epochs), "-vector-size", str(HPARAMS["embed_dim"]), "-binary", "0",
                        "-vocab-file", str(t / "vocab.txt"), "-verbose", "0", "-eta", "0.05", "-alpha", "0.75",
                        "-seed", str(seed), "-model", "2", "-write-header", "0"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        rec["train_s"] = time.perf_counter() - t0
        rec["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
        words, rows = [], []
        with open(t / "vectors.txt", encoding="utf-8") as fh:
            for line in fh:
                parts = line.rstrip("\n").split(" ")
                words.append(parts[0])
                rows.append(np.asarray(parts[1:], dtype=np.float32))
    rec["words"], rec["vectors"] = words, np.stack(rows)
    return rec


# ---------------------------------------------------------------------------------------------------------
# orchestration
# ---------------------------------------------------------------------------------------------------------


def machine_info() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    for mod in ("numpy", "Cython", "gensim", "scipy"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _record import git_commit

    info["git_commit"] = git_commit()
    try:
        info["loadavg_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict]) -> dict:
    out: dict = {}
    groups: dict = {}
    for r in runs:
        if "error" in r:
            continue
        groups.setdefault((r["algo"], r["impl"]), []).append(r)
    for (algo, impl), rs in sorted(groups.items()):
        key = f"{algo}/{impl}"
        out[key] = {
            "runs": len(rs),
            "seeds": [r["seed"] for r in rs],
            "words_per_s": _median([r.get("words_per_s") for r in rs]),
            "words_per_cpu_s": _median([r.get("words_per_cpu_s") for r in rs]),
            "train_s": _median([r["train_s"] for r in rs]),
            "vocab_s": _median([r["vocab_s"] for r in rs]),
            "count_s": _median([r.get("count_s") for r in rs]),
            "peak_rss_mb": _median([r["peak_rss_mb"] for r in rs]),
            "ws353": _median([r["quality"]["ws353"] for r in rs]),
            "simlex": _median([r["quality"]["simlex"] for r in rs]),
            "analogy": _median([r["quality"]["analogy"] for r in rs]),
            # every seed's figures, to see the spread behind each median
            "per_seed": {m: [r["quality"][m] for r in rs] for m in ("ws353", "simlex", "analogy")}
            | {"words_per_s": [r.get("words_per_s") for r in rs]},
        }
    ratios = {}
    # "-vs-gensim-iter": against gensim on the linear schedule (see the worker); "sg"/"cbow" against "gensim";
    # GloVe against glove.c: the ratio of training times (the same epochs over the same co-occurrences)
    for name, algo in (("sg", "sg"), ("cbow", "cbow"), ("sg-shared", "sg"), ("sg-vs-gensim-iter", "sg"),
                       ("cbow-vs-gensim-iter", "cbow"), ("glove-vs-glove-c", "glove")):
        target = TARGETS.get(name, TARGETS.get(algo))
        ref = "gensim-iter" if name.endswith("gensim-iter") else "glove-c" if algo == "glove" else "gensim"
        a, g = out.get(f"{algo}/{'lmlab-shared' if name == 'sg-shared' else 'lmlab'}"), out.get(f"{algo}/{ref}")
        if not a or not g:
            continue
        if algo == "glove":
            speed = cpu_speed = g["train_s"] / a["train_s"]
        else:
            speed = a["words_per_s"] / g["words_per_s"]
            cpu_speed = a["words_per_cpu_s"] / g["words_per_cpu_s"]
        quality = {k: (a[k] - g[k]) * 100 for k in ("ws353", "simlex", "analogy")}
        ratios[name] = {
            "throughput_ratio": speed,
            "throughput_ratio_cpu_time": cpu_speed,
            "throughput_target": target,
            "throughput_met": speed >= target,
            "quality_diff_points": quality,
            "quality_met": all(d >= -1.0 for d in quality.values()),
            "peak_rss_ratio": a["peak_rss_mb"] / g["peak_rss_mb"],
            "memory_met": a["peak_rss_mb"] <= g["peak_rss_mb"],
        }
    out["ratios"] = ratios
    return out


def _same_settings(a: dict, b: dict, glove: bool) -> bool:
    """Whether two records' runs can share a summary: the same corpus and hyper-parameters (GloVe's only for
    ``glove``)."""
    ha, hb = dict(a.get("hparams", {})), dict(b.get("hparams", {}))
    ga, gb = ha.pop("glove", {}), hb.pop("glove", {})
    ha.pop("lmlab_compute_loss", None), hb.pop("lmlab_compute_loss", None)
    same_corpus = all(a.get("corpus", {}).get(k) == b.get("corpus", {}).get(k) for k in ("words", "lines"))
    if glove:
        return same_corpus and all(ga.get(k) == gb.get(k) for k in ("epochs", "window", "x_max", "alpha", "lr",
                                                                     "adagrad", "bias_lr", "threads"))
    return same_corpus and ha == hb


def _stamped(runs: list[dict], record: dict | None) -> list[dict]:
    """``runs`` each with the date and git commit of the record they were made in (a run's own stamp wins)."""
    stamp = {"date": (record or {}).get("date"), "git_commit": (record or {}).get("machine", {}).get("git_commit")}
    return [{**stamp, **r} for r in runs]


def merge_protocol_record(earlier: dict | None, new: dict) -> dict:
    """The record a ``--protocol`` run leaves: ``new`` plus the runs of ``earlier`` (the record already in the
    file) that ``new`` did not redo (same impl, algo and seed) and that were made with the same corpus and
    hyper-parameters; each run keeps the date and git commit it was made at, the summary covers them all and
    ``commands`` lists every command behind them. Keys of
    ``earlier`` that a run does not write (notes, side measurements) are kept."""
    merged = {k: v for k, v in (earlier or {}).items() if k not in new}
    merged.update(new)
    done = {(r["impl"], r["algo"], r["seed"]) for r in new["runs"]}
    kept = []
    if earlier:
        kept = [r for r in earlier.get("runs", []) if (r["impl"], r["algo"], r["seed"]) not in done
                and "error" not in r and _same_settings(earlier, new, r["algo"] == "glove")]
    merged["runs"] = _stamped(kept, earlier) + _stamped(new["runs"], new)
    commands = []
    if kept:
        commands = list(earlier.get("commands") or [c for c in [earlier.get("command")] if c])
    for command in [*new.get("commands", []), new.get("command")]:  # a merged record's own list first
        if command and command not in commands:
            commands.append(command)
    merged["commands"] = commands
    merged["summary"] = summarize(merged["runs"])
    return merged


def print_table(summary: dict) -> str:
    head = ("| algo | impl | words/s | words/CPU-s | train s | vocab s | peak RSS MB | WS-353 | SimLex | "
            "analogy (30k) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = [head]
    for key, s in summary.items():
        if key == "ratios":
            continue
        algo, impl = key.split("/")
        wps = f"{s['words_per_s'] / 1e3:,.0f}k" if s["words_per_s"] else "-"
        wpc = f"{s['words_per_cpu_s'] / 1e3:,.0f}k" if s.get("words_per_cpu_s") else "-"
        extra = f" (+count {s['count_s']:.0f}s)" if s.get("count_s") else ""
        rows.append(f"| {algo} | {impl} | {wps} | {wpc} | {s['train_s']:.1f}{extra} | {s['vocab_s']:.1f} | "
                    f"{s['peak_rss_mb']:.0f} | {s['ws353']:.3f} | {s['simlex']:.3f} | {s['analogy'] * 100:.1f}% |")
    for algo, r in summary.get("ratios", {}).items():
        q = ", ".join(f"{k} {v:+.1f}" for k, v in r["quality_diff_points"].items())
        rows.append(f"\n{algo}: throughput x{r['throughput_ratio']:.2f} (per CPU-second "
                    f"x{r['throughput_ratio_cpu_time']:.2f}; target x{r['throughput_target']}, "
                    f"{'met' if r['throughput_met'] else 'NOT met'}); quality diff points {q} "
                    f"({'met' if r['quality_met'] else 'NOT met'}); peak RSS x{r['peak_rss_ratio']:.2f} "
                    f"({'met' if r['memory_met'] else 'NOT met'})")
    text = "\n".join(rows)
    print(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(DEFAULT_CORPUS), help="raw corpus (tokenized into --tokens first)")
    ap.add_argument("--tokens", default=str(ROOT / "runs" / "bench" / "gutenberg.tok.txt"),
                    help="tokenized corpus: one sentence per line (built from --corpus when missing)")
    ap.add_argument("--max-words", type=int, default=0, help="use only the first N words (0: all)")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--algos", default="sg,cbow,glove", help="any of sg, cbow, glove")
    ap.add_argument("--impls", default="lmlab,gensim")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=HPARAMS["epochs"])
    ap.add_argument("--loss", action="store_true", help="let lmlab accumulate its training loss")
    ap.add_argument("--glove-threads", type=int, default=0, help="threads for GloVe (0: --threads)")
    ap.add_argument("--glove-epochs", type=int, default=15)
    ap.add_argument("--glove-window", type=int, default=10)
    ap.add_argument("--glove-memory-mb", type=int, default=512)
    ap.add_argument("--glove-adagrad", choices=["reference", "textbook"], default="reference",
                    help="what GloVe's AdaGrad accumulates (see docs/glove.md)")
    ap.add_argument("--glove-bias-lr", type=float, default=None,
                    help="GloVe biases' AdaGrad rate (None: lr, glove.c 1.2; 1.0: glove.c master, as --protocol 5m)")
    ap.add_argument("--glove-seeds", default="1")
    ap.add_argument("--parallel", type=int, default=1, help="jobs at once, each pinned to its own cores")
    ap.add_argument("--eval-dir", default=str(DEFAULT_EVAL))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "word2vec.json"))
    ap.add_argument("--worker", nargs=3, metavar=("IMPL", "ALGO", "SEED"), help=argparse.SUPPRESS)
    ap.add_argument("--raw-words", default="0", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="1M words, one seed, one thread (QUICK); writes word2vec.quick.json")
    ap.add_argument("--protocol", choices=sorted(PROTOCOLS), default=None,
                    help="5m: issue 20's 5.06M-word / 3-epoch / one-thread protocol (PROTOCOLS); its results go "
                         "under the key protocol_5m of --out, the other records kept")
    ap.add_argument("--glove-c-src", default=os.environ.get("LMLAB_GLOVE_C_SRC"),
                    help="stanfordnlp/GloVe source tree for the glove-c row [$LMLAB_GLOVE_C_SRC]; none: skipped")
    ap.add_argument("--glove-c-bin", default=None, help=argparse.SUPPRESS)
    if "--quick" in sys.argv[1:]:
        ap.set_defaults(**QUICK)
    for name, defaults in PROTOCOLS.items():
        if f"--protocol={name}" in sys.argv[1:] or any(a == "--protocol" and b == name
                                                        for a, b in zip(sys.argv[1:], sys.argv[2:], strict=False)):
            ap.set_defaults(**defaults)
    args = ap.parse_args()

    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return

    tokens = Path(args.tokens)
    prep = None
    if args.max_words:
        tokens = tokens.with_name(f"{tokens.stem}.{args.max_words}{tokens.suffix}")
    if not tokens.exists():
        print(f"tokenizing {args.corpus} -> {tokens}", flush=True)
        prep = prepare_corpus(Path(args.corpus), tokens, args.max_words or None)
    raw_words, lines = count_words(tokens)
    print(f"corpus: {tokens} ({raw_words:,} words, {lines:,} lines)", flush=True)

    seeds = [int(s) for s in args.seeds.split(",") if s]
    glove_seeds = [int(s) for s in args.glove_seeds.split(",") if s]
    algos = [a for a in args.algos.split(",") if a]
    impls = [i for i in args.impls.split(",") if i]
    if args.quick and any(i.startswith("gensim") for i in impls):
        import importlib.util

        if importlib.util.find_spec("gensim") is None:
            print("note: gensim is not installed (pip install -e '.[bench]'); --quick skips its column", flush=True)
            impls = [i for i in impls if not i.startswith("gensim")]
    glove_c_tmp = None
    if "glove" in algos and "glove-c" in impls:
        if not args.glove_c_src or not (Path(args.glove_c_src) / "src" / "glove.c").is_file():
            print(f"note: skipping the glove-c row: no stanfordnlp/GloVe source tree at {args.glove_c_src!r}; "
                  "give --glove-c-src DIR or LMLAB_GLOVE_C_SRC=DIR (e.g. a clone of github.com/stanfordnlp/GloVe)",
                  flush=True)
            impls = [i for i in impls if i != "glove-c"]
        else:
            glove_c_tmp = tempfile.TemporaryDirectory(prefix="glove-c-build-")
            try:
                args.glove_c_bin = str(build_glove_c(Path(args.glove_c_src), Path(glove_c_tmp.name)))
            except (OSError, subprocess.CalledProcessError) as err:
                print(f"note: skipping the glove-c row: building {args.glove_c_src} failed ({err})", flush=True)
                impls = [i for i in impls if i != "glove-c"]
    jobs = []
    for seed in seeds:
        for algo in algos:
            if algo == "glove":
                continue
            for impl in impls:
                if impl != "glove-c":
                    jobs.append((impl, algo, seed))
    if "glove" in algos:
        jobs = jobs + [(impl, "glove", s) for s in glove_seeds for impl in ("lmlab", "glove-c") if impl in impls]

    ncpu = os.cpu_count() or 1
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    result = {
        "benchmark": "word2vec",
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/word2vec.py " + " ".join(sys.argv[1:]),
        "protocol": args.protocol,
        "machine": machine_info(),
        "corpus": {"path": str(tokens), "source": str(args.corpus), "words": raw_words, "lines": lines,
                   "prepared": prep},
        "hparams": {**HPARAMS, "epochs": args.epochs, "threads": args.threads, "lmlab_compute_loss": args.loss,
                    "glove": {"epochs": args.glove_epochs, "window": args.glove_window,
                              "threads": args.glove_threads or args.threads, "x_max": 100, "alpha": 0.75,
                              "lr": 0.05, "adagrad": args.glove_adagrad, "bias_lr": args.glove_bias_lr,
                              "memory_mb": args.glove_memory_mb}},
        "runs": [],
    }
    out_path = Path(args.out)

    # a protocol's record lives inside the file, the other records kept; its earlier runs are kept too
    # (merge_protocol_record), so the protocol's rows can be run a few at a time (SG now, GloVe seed 3 later)
    earlier = None
    if args.protocol and out_path.exists():
        earlier = json.loads(out_path.read_text()).get(f"protocol_{args.protocol}")

    def save() -> None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        if args.protocol:
            whole = json.loads(out_path.read_text()) if out_path.exists() else {}
            whole[f"protocol_{args.protocol}"] = record = merge_protocol_record(earlier, result)
            result["summary"] = record["summary"]
            out_path.write_text(json.dumps(whole, indent=2) + "\n")
        else:
            result["summary"] = summarize(result["runs"])
            out_path.write_text(json.dumps(result, indent=2) + "\n")

    running: list[tuple[subprocess.Popen, tuple, list[int], float]] = []
    free_cores = list(range(ncpu))
    queue = list(jobs)
    while queue or running:
        while queue and len(running) < max(1, args.parallel):
            impl, algo, seed = queue[0]
            threads = (args.glove_threads or args.threads) if algo == "glove" else args.threads
            cores = None
            if args.parallel > 1:
                if len(free_cores) < threads:
                    break
                cores = free_cores[:threads]
                del free_cores[:threads]
            queue.pop(0)
            slot = cores or []
            cmd = ([sys.executable, str(Path(__file__).resolve()), "--worker", impl, algo, str(seed),
                   "--tokens", str(tokens), "--eval-dir", args.eval_dir, "--threads", str(threads),
                   "--epochs", str(args.epochs), "--raw-words", str(raw_words),
                   "--glove-epochs", str(args.glove_epochs), "--glove-window", str(args.glove_window),
                   "--glove-memory-mb", str(args.glove_memory_mb), "--glove-adagrad", args.glove_adagrad]
                   + (["--glove-bias-lr", str(args.glove_bias_lr)] if args.glove_bias_lr is not None else [])
                   + (["--loss"] if args.loss else [])
                   + (["--glove-c-bin", args.glove_c_bin] if args.glove_c_bin else []))
            wenv = dict(env, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                        MKL_NUM_THREADS="1")
            pre = (lambda c=cores: os.sched_setaffinity(0, c)) if cores else None
            proc = subprocess.Popen(cmd, env=wenv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    preexec_fn=pre)
            print(f"start {impl} {algo} seed {seed} (threads {threads}{', cores ' + str(cores) if cores else ''})",
                  flush=True)
            running.append((proc, (impl, algo, seed), slot, time.perf_counter()))
        time.sleep(0.5)
        for item in list(running):
            proc, job, slots, t0 = item
            if proc.poll() is None:
                continue
            running.remove(item)
            free_cores.extend(slots)
            free_cores.sort()
            output = proc.stdout.read() if proc.stdout else ""
            line = next((ln for ln in output.splitlines() if ln.startswith("RESULT ")), None)
            if line is None or proc.returncode != 0:
                rec = {"impl": job[0], "algo": job[1], "seed": job[2], "error": output[-2000:]}
                print(f"FAILED {job}: {output[-1500:]}", flush=True)
            else:
                rec = json.loads(line[len("RESULT "):])
                q = rec["quality"]
                wps = f"{rec['words_per_s'] / 1e3:,.0f}k words/s" if "words_per_s" in rec else ""
                print(f"done {job} in {time.perf_counter() - t0:.0f}s: train {rec['train_s']:.1f}s {wps} "
                      f"rss {rec['peak_rss_mb']:.0f}MB ws353 {q['ws353']:.3f} simlex {q['simlex']:.3f} "
                      f"analogy {q['analogy'] * 100:.1f}%", flush=True)
            result["runs"].append(rec)
            save()
    save()
    result["table"] = print_table(result["summary"])
    save()
    if glove_c_tmp is not None:
        glove_c_tmp.cleanup()


if __name__ == "__main__":
    main()
