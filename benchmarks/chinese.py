"""Chinese end to end (issue 19): word vectors on People's Daily, sentiment on Chinese reviews, a char-level GPT.

  (a) Word vectors on People's Daily, January 1998, RAW text (19,484 paragraphs, 1.86M characters, no spaces):
      lmlab (``lmlab embed train --algo sgns``: its jieba segmentation chosen by ``data.segmenter=auto``) vs the
      classic pipeline ``jieba.lcut`` + gensim 4.4 ``Word2Vec``, same hyper-parameters (skip-gram, 100 dims,
      window 5, 5 noise words, sample 1e-3, min_count 5, 5 epochs, lr 0.025 -> 1e-4, one thread). Wall time
      INCLUDES segmentation. The nearest neighbours of 20 frequent words side by side, and jieba's segmentation
      precision / recall / F1 against the gold (PKU) segmentation ``segmented.txt.gz``.
  (b) Sentiment on ``chinese/reviews/train.csv.gz`` (13,965 rows), a seeded 80/20 split (``random.Random(0)``):
      TF-IDF character 1-3-grams + logistic regression (scikit-learn, benchmark only) vs lmlab's ``linear``
      preset (jieba words; characters), ``bilstm`` with characters and with jieba words, and the sparse
      logistic regressions ``nblr`` (character 1-3 grams; jieba words + their character 1-3 grams) and ``tfidf``
      (character 1-3 grams); ``bilstm_*_w2v``: the same bilstm rows with the embedding started from CBOW vectors
      pretrained here on unlabelled text (People's Daily raw + the training reviews' text, no label, no test
      review; its seconds reported apart). Accuracy on the 20%. ``--models`` runs some; the others' rows are kept.
  (c) A character-level GPT on People's Daily (the last 10% of the characters held out; 4 layers x 128, 1,200
      steps of 16 x 128 characters, ~10 minutes of one core): validation loss per character (nats and bits) on the
      whole held-out 10%, beside the uniform guess and interpolated Kneser-Ney character 1-5-grams counted on the
      same 90% and scored on the same characters (seconds each); samples.

    OMP_NUM_THREADS=1 nice python benchmarks/chinese.py [--quick] [--parts vectors,sentiment,gpt]

``--quick`` runs every part on a slice (2,000 paragraphs, 2,000 reviews, 100 GPT steps) and writes
benchmarks/results/chinese.quick.json; the full run writes benchmarks/results/chinese.json (a part run alone
replaces only its own key there). jieba, gensim and
scikit-learn are benchmark dependencies (``pip install -e '.[zh,bench]'``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import platform
import random
import re
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _ngram import kneser_ney  # noqa: E402  (the shared Kneser-Ney baseline; benchmarks/_ngram.py)

DATA = Path(os.environ.get("LMLAB_SHARED_DATA", ROOT.parent / "shared" / "data")) / "chinese"
RESULTS = ROOT / "benchmarks" / "results"
HPARAMS = {"embed_dim": 100, "window": 5, "negative": 5, "sample": 1e-3, "min_count": 5, "epochs": 5}
QUIET = ["train.progress=false", "train.tensorboard=false"]


def _lines(path: Path, limit: int = 0) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    return lines[:limit] if limit else lines


# ----------------------------------------------------------------------------------------------- (a) vectors
def segmentation_f1(pred: list[list[str]], gold: list[list[str]]) -> dict:
    """Word precision / recall / F1 of a segmentation against the gold one (SIGHAN scoring: a word is right
    when its character span is a gold word's span)."""

    def spans(words: list[str]) -> set[tuple[int, int]]:
        out, at = set(), 0
        for w in words:
            out.add((at, at + len(w)))
            at += len(w)
        return out

    right = n_pred = n_gold = 0
    for p, g in zip(pred, gold, strict=True):
        sp, sg = spans(p), spans(g)
        right += len(sp & sg)
        n_pred += len(sp)
        n_gold += len(sg)
    precision, recall = right / n_pred, right / n_gold
    return {"precision": precision, "recall": recall, "f1": 2 * precision * recall / (precision + recall),
            "gold_words": n_gold, "predicted_words": n_pred}


def _jieba():
    import logging
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import jieba
    jieba.setLogLevel(logging.WARNING)
    return jieba


def bench_vectors(limit: int, workdir: Path) -> dict:
    import numpy as np

    raw = _lines(DATA / "peoples-daily-1998" / "raw.txt.gz", limit)
    gold = [line.split() for line in _lines(DATA / "peoples-daily-1998" / "segmented.txt.gz", limit)]
    corpus = workdir / "raw.txt"
    corpus.write_text("\n".join(raw) + "\n", encoding="utf-8")
    out: dict = {"paragraphs": len(raw), "characters": sum(map(len, raw)), "hparams": HPARAMS}
    jieba = _jieba()
    jieba.Tokenizer().initialize()  # dictionary loaded (and cached) before either clock starts

    # segmentation quality: jieba as lmlab ships it (precise mode, HMM on), on the raw paragraphs
    t0 = time.perf_counter()
    seg = jieba.Tokenizer()
    pred = [[w for w in seg.lcut(line) if w.strip()] for line in raw]
    out["jieba_segmentation"] = {**segmentation_f1([[w.replace(" ", "") for w in p] for p in pred],
                                                   [[w for w in g] for g in gold]),
                                 "seconds": round(time.perf_counter() - t0, 2), "version": jieba.__version__}
    print(f"  jieba vs gold segmentation: F1 {out['jieba_segmentation']['f1']:.4f}", flush=True)

    # lmlab: raw text in, segmentation (auto -> jieba) included
    from lmlab.recipes.embed import Word2VecRecipe

    h = HPARAMS
    t0 = time.perf_counter()
    rec = Word2VecRecipe.from_preset("sgns", [f"epochs={h['epochs']}", f"min_count={h['min_count']}", "threads=1",
                                              "seed=1"], corpus=str(corpus), log=lambda *_: None)
    rec.train(workdir / "lmlab-sgns", overwrite=True)
    lm_s = time.perf_counter() - t0
    kv = rec.model.wv
    out["lmlab"] = {"wall_s": round(lm_s, 2), "vocab_size": rec.model.corpus_info["vocab_size"],
                    "words": rec.model.corpus_info["num_raw_tokens"]}
    print(f"  lmlab: {out['lmlab']}", flush=True)

    # jieba + gensim, the classic pipeline (segmentation timed with it)
    import gensim
    from gensim.models import Word2Vec

    t0 = time.perf_counter()
    tok = jieba.Tokenizer()
    word = re.compile(r"[^\W_]")  # punctuation dropped, as lmlab's word-vector tokenizer does
    sentences = [[w for w in tok.lcut(line) if word.search(w)] for line in raw]
    seg_s = time.perf_counter() - t0
    g = Word2Vec(sentences, vector_size=h["embed_dim"], window=h["window"], negative=h["negative"],
                 sample=h["sample"], min_count=h["min_count"], epochs=h["epochs"], sg=1, hs=0, workers=1, seed=1,
                 alpha=0.025, min_alpha=1e-4)
    g_s = time.perf_counter() - t0
    out["jieba_gensim"] = {"wall_s": round(g_s, 2), "segmentation_s": round(seg_s, 2), "vocab_size": len(g.wv),
                           "words": sum(map(len, sentences)), "gensim": gensim.__version__}
    print(f"  jieba + gensim: {out['jieba_gensim']}", flush=True)

    # 20 frequent content words (two characters or more in the gold segmentation) known to both models
    counts = Counter(w for line in gold for w in line if len(w) >= 2 and not w.isascii())
    queries = [w for w, _ in counts.most_common(200) if w in kv and w in g.wv][:20]
    rows = []
    for w in queries:
        rows.append({"word": w, "lmlab": [[n, round(float(s), 3)] for n, s in kv.most_similar(w, topn=5)],
                     "gensim": [[n, round(float(s), 3)] for n, s in g.wv.most_similar(w, topn=5)]})
    out["neighbours"] = rows
    # agreement: mean overlap of the two top-10 lists
    overlap = [len({n for n, _ in kv.most_similar(w, topn=10)} & {n for n, _ in g.wv.most_similar(w, topn=10)})
               for w in queries]
    out["top10_overlap_mean"] = float(np.mean(overlap)) if overlap else 0.0
    return out


# --------------------------------------------------------------------------------------------- (b) sentiment
#: the lmlab rows of (b)
MODELS = ("linear_words", "linear_chars", "bilstm_chars", "bilstm_words", "bilstm_chars_w2v", "bilstm_words_w2v",
          "nblr_chars", "nblr_words", "tfidf_chars")
#: ``bilstm_*_w2v``: CBOW vectors pretrained on unlabelled Chinese text (People's Daily raw + the training split's
#: review texts, no label, no test review), one run per segmentation, the bilstm's embedding started from them
W2V_PRETRAIN = {"epochs": 10, "min_count": 3, "seed": 1}


def pretrain_vectors(train: list, segmenter: str, workdir: Path, limit: int) -> dict:
    """CBOW vectors of the bilstm's width on People's Daily raw text + the training reviews' text."""
    from lmlab.recipes.classify import ClassifyRecipe
    from lmlab.recipes.embed import recipe_from_cli

    news = _lines(DATA / "peoples-daily-1998" / "raw.txt.gz", limit)
    text = "\n".join([*news, *(e.text.replace("\n", " ") for e in train)]) + "\n"
    corpus = workdir / "unlabelled-zh.txt"
    corpus.write_text(text, encoding="utf-8")
    t0 = time.perf_counter()
    dim = ClassifyRecipe.resolve("bilstm").model.embed_dim
    out = workdir / f"w2v-{segmenter}"
    recipe = recipe_from_cli("cbow", {"embed_dim": dim, "threads": 1, **W2V_PRETRAIN}, [f"data.segmenter={segmenter}"],
                             corpus=str(corpus), log=lambda _: None)
    recipe.train(out, overwrite=True)
    return {"run_dir": str(out), "pretrain_s": round(time.perf_counter() - t0, 2),
            "corpus_characters": len(text), **W2V_PRETRAIN}


def bench_sentiment(limit: int, workdir: Path, bilstm_epochs: int, only: set[str] | None = None,
                    progress=lambda out: None, previous: dict | None = None, run_info: dict | None = None) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from lmlab.data.readers import load_examples
    from lmlab.recipes.classify import ClassifyRecipe

    examples = load_examples(DATA / "reviews" / "train.csv.gz")
    if limit:
        examples = examples[:limit]
    order = list(range(len(examples)))
    random.Random(0).shuffle(order)
    n_test = len(examples) // 5
    test = [examples[i] for i in order[:n_test]]
    train = [examples[i] for i in order[n_test:]]
    out: dict = {"train": len(train), "test": len(test),
                 "majority_baseline": max(Counter(e.label for e in test).values()) / len(test)}
    if previous and previous.get("train") == out["train"] and only:
        # rows of the models not run now, from the earlier run (each row's "run" says which)
        out.update({k: v for k, v in previous.items() if isinstance(v, dict) and k not in only})

    t0 = time.perf_counter()
    vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2)
    x = vec.fit_transform([e.text for e in train])
    clf = LogisticRegression(max_iter=1000).fit(x, [e.label for e in train])
    pred = clf.predict(vec.transform([e.text for e in test]))
    acc = sum(p == e.label for p, e in zip(pred, test, strict=True)) / len(test)
    out["tfidf_char13_lr"] = {"accuracy": float(acc), "wall_s": round(time.perf_counter() - t0, 2),
                              "features": x.shape[1], **({"run": run_info} if run_info else {})}
    print(f"  TF-IDF char 1-3 + LR: {out['tfidf_char13_lr']}", flush=True)

    models = {
        "linear_words": ("linear", ["data.tokenizer=word", "data.segmenter=jieba", "data.val_split=0"]),
        "linear_chars": ("linear", ["data.tokenizer=word", "data.segmenter=char", "data.val_split=0"]),
        "bilstm_chars": ("bilstm", ["data.tokenizer=word", "data.segmenter=char", f"train.epochs={bilstm_epochs}",
                                    "data.max_len=200"]),
        "bilstm_words": ("bilstm", ["data.tokenizer=word", "data.segmenter=jieba", f"train.epochs={bilstm_epochs}",
                                    "data.max_len=200"]),
        # sparse logistic regression (fitted exactly, no validation needed: every training label is used)
        "nblr_chars": ("nblr", ["data.tokenizer=word", "data.segmenter=char", "model.ngrams=3", "data.val_split=0"]),
        "nblr_words": ("nblr", ["data.tokenizer=word", "data.segmenter=jieba", "model.char_ngrams=[1,3]",
                                "data.val_split=0"]),
        "tfidf_chars": ("tfidf", ["data.tokenizer=word", "data.segmenter=char", "model.ngrams=3", "data.val_split=0"]),
    }
    models.update({f"{k}_w2v": models[k] for k in ("bilstm_chars", "bilstm_words")})  # + pretrained vectors
    models = {k: v for k, v in models.items() if not only or k in only}
    for name, (preset, overrides) in models.items():
        body = pretrain_vectors(train, "char" if "chars" in name else "jieba", workdir, limit) \
            if name.endswith("_w2v") else None
        t0 = time.perf_counter()
        run = workdir / name
        result = ClassifyRecipe.from_preset(preset, [*QUIET, "train.num_threads=1", "train.seed=0", *overrides],
                                            data=train, log=lambda *_: None,
                                            pretrained_vectors=body and body["run_dir"]).train(run, overwrite=True)
        wall = time.perf_counter() - t0
        report = ClassifyRecipe.load(run).evaluate(test)
        out[name] = {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "wall_s": round(wall, 2),
                     "steps": result.step, "preset": preset, "overrides": overrides,
                     **({"pretraining": {k: v for k, v in body.items() if k != "run_dir"},
                         "found": [n for n in result.notes if n.startswith("pretrained vectors")]} if body else {}),
                     **({"run": run_info} if run_info else {})}
        print(f"  {name}: {out[name]['accuracy']:.4f} ({wall:.0f} s)", flush=True)
        progress(out)
    best = max((k for k in out if k in MODELS), key=lambda k: out[k]["accuracy"])
    out["best_lmlab"] = best
    out["best_minus_tfidf_points"] = round(100 * (out[best]["accuracy"] - out["tfidf_char13_lr"]["accuracy"]), 2)
    return out


# --------------------------------------------------------------------------------------------------- (c) GPT
GPT_OVERRIDES = ["model.num_layers=4", "model.embed_dim=128", "model.num_heads=4", "model.block_size=128",
                 "model.dropout=0.0", "train.batch_size=16", "train.lr=0.002", "train.min_lr=0.0002",
                 "train.schedule=cosine", "train.warmup_steps=100", "train.save_every=0", "train.num_threads=1",
                 "data.val_fraction=0.1", "data.max_eval_tokens=50000", *QUIET]


def bench_gpt(limit: int, workdir: Path, steps: int) -> dict:
    """A character GPT on People's Daily (the last 10% of the characters held out) beside what a user gets in a
    minute: the uniform guess, and Kneser-Ney character n-grams (orders 1-5) counted on the same 90%, every model
    scored on the same held-out characters."""
    import numpy as np
    import torch

    from lmlab.recipes.gpt import GPTRecipe, evaluate_tokens, open_tokens, split_tokens

    raw = _lines(DATA / "peoples-daily-1998" / "raw.txt.gz", limit)
    corpus = workdir / "raw-gpt.txt"
    corpus.write_text("\n".join(raw) + "\n", encoding="utf-8")
    overrides = [*GPT_OVERRIDES, f"train.max_steps={steps}", f"train.eval_every={max(50, steps // 6)}"]
    run_dir = workdir / "char-gpt"
    t0, c0 = time.perf_counter(), time.process_time()
    recipe = GPTRecipe.from_preset("char", overrides, data=str(corpus), log=lambda *_: None)
    result = recipe.train(run_dir, overwrite=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    pipe = GPTRecipe.load(run_dir)
    run = recipe.config
    vocab = recipe.codec.vocab_size
    tokens, _ = open_tokens(run_dir)
    train, val = split_tokens(tokens, None, run.data.val_fraction)
    # the whole held-out 10% (training's evaluations read its first max_eval_tokens), blocks of the model's context
    full = evaluate_tokens(pipe.model, val, batch_size=32)
    block = run.model.block_size
    n_targets = (len(val) - 1) // block * block
    targets = len(train) + 1 + np.arange(n_targets)  # the characters evaluate_tokens scored, as stream positions
    if full["tokens"] != n_targets:
        raise RuntimeError(f"the GPT scored {full['tokens']} characters, expected {n_targets}")
    out: dict = {
        "corpus": {"paragraphs": len(raw), "characters_incl_newlines": int(len(tokens)), "train_chars": int(len(train)),
                   "val_chars": int(len(val)), "scored_chars": int(n_targets), "vocab_chars": vocab},
        "gpt": {"val_loss_per_char": full["loss"], "bits_per_char": full["loss"] / math.log(2),
                "perplexity": math.exp(full["loss"]), "best_val_loss_first_50k": result.best, "steps": result.step,
                "chars_seen": result.step * run.train.batch_size * block, "wall_s": round(wall, 1),
                "cpu_s": round(cpu, 1), "parameters": pipe.model.num_parameters(), "overrides": overrides,
                "curve": [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
                          if '"val_loss"' in line]},
        "baselines": {"uniform": {"val_loss_per_char": math.log(vocab), "bits_per_char": math.log2(vocab)}},
    }
    print(f"  GPT: {full['loss']:.4f} nats/char ({full['loss'] / math.log(2):.3f} bits) after {result.step} steps, "
          f"{wall:.0f} s wall / {cpu:.0f} s CPU", flush=True)
    for order in range(1, 6):
        t0 = time.perf_counter()
        loss = kneser_ney(tokens, len(train), targets, order, vocab)
        out["baselines"][f"kn{order}"] = {"val_loss_per_char": loss, "bits_per_char": loss / math.log(2),
                                          "wall_s": round(time.perf_counter() - t0, 1)}
        print(f"  Kneser-Ney {order}-gram: {loss:.4f} nats/char ({time.perf_counter() - t0:.1f} s)", flush=True)
    samples = []
    torch.manual_seed(0)
    for prompt, seed in (("新华社北京", 0), ("中国", 1), ("今年", 2)):
        text = pipe.generate(prompt, max_new_tokens=100, temperature=0.8, top_p=0.95, seed=seed)["text"]
        samples.append({"prompt": prompt, "seed": seed, "text": prompt + text})
        print(f"  sample: {prompt + text}", flush=True)
    out["samples"], out["sampling"] = samples, {"temperature": 0.8, "top_p": 0.95, "max_new_tokens": 100}
    return out


# -------------------------------------------------------------------------------------------------- tables
def print_tables(r: dict) -> None:
    if "vectors" in r:
        v = r["vectors"]
        s = v["jieba_segmentation"]
        print(f"\n(a) word vectors, People's Daily raw ({v['paragraphs']:,} paragraphs, {v['characters']:,} characters)")
        print("| pipeline | wall s (incl. segmentation) | words | vocabulary |\n|---|---:|---:|---:|")
        print(f"| lmlab embed train (jieba via data.segmenter=auto) | {v['lmlab']['wall_s']:.1f} | "
              f"{v['lmlab']['words']:,} | {v['lmlab']['vocab_size']:,} |")
        print(f"| jieba.lcut + gensim {v['jieba_gensim']['gensim']} Word2Vec | {v['jieba_gensim']['wall_s']:.1f} "
              f"(segmentation {v['jieba_gensim']['segmentation_s']:.1f}) | {v['jieba_gensim']['words']:,} | "
              f"{v['jieba_gensim']['vocab_size']:,} |")
        print(f"\njieba {s['version']} vs gold: P {s['precision']:.4f} R {s['recall']:.4f} F1 {s['f1']:.4f}")
        print("\n| word | lmlab top 5 | jieba + gensim top 5 |\n|---|---|---|")
        for row in v["neighbours"]:
            print(f"| {row['word']} | " + "、".join(n for n, _ in row["lmlab"]) + " | "
                  + "、".join(n for n, _ in row["gensim"]) + " |")
        print(f"\nmean overlap of the two top-10 lists: {v['top10_overlap_mean']:.1f} / 10")
    if "sentiment" in r:
        s = r["sentiment"]
        print(f"\n(b) sentiment, reviews {s['train']:,} train / {s['test']:,} test (seeded 80/20)")
        print("| model | accuracy | wall s |\n|---|---:|---:|")
        print(f"| majority class | {s['majority_baseline']:.4f} | |")
        print(f"| TF-IDF char 1-3-grams + LR | {s['tfidf_char13_lr']['accuracy']:.4f} | "
              f"{s['tfidf_char13_lr']['wall_s']:.1f} |")
        for k in MODELS:
            if k in s:
                print(f"| lmlab {k} | {s[k]['accuracy']:.4f} | {s[k]['wall_s']:.1f} |")
        print(f"best lmlab ({s['best_lmlab']}) - TF-IDF: {s['best_minus_tfidf_points']:+.2f} points")
    if "gpt" in r and "baselines" in r["gpt"]:
        g = r["gpt"]
        c, m = g["corpus"], g["gpt"]
        print(f"\n(c) People's Daily, {c['train_chars']:,} characters to train on, the last {c['val_chars']:,} held "
              f"out ({c['scored_chars']:,} scored; {c['vocab_chars']:,} distinct characters)")
        print("| model | nats/char | bits/char | wall s |\n|---|---:|---:|---:|")
        print(f"| uniform over the characters | {g['baselines']['uniform']['val_loss_per_char']:.3f} | "
              f"{g['baselines']['uniform']['bits_per_char']:.2f} | |")
        for order in range(1, 6):
            b = g["baselines"].get(f"kn{order}")
            if b:
                print(f"| Kneser-Ney character {order}-gram | {b['val_loss_per_char']:.3f} | {b['bits_per_char']:.2f} | "
                      f"{b['wall_s']:.1f} |")
        print(f"| lmlab char GPT ({m['parameters']:,} parameters, {m['steps']} steps) | {m['val_loss_per_char']:.3f} | "
              f"{m['bits_per_char']:.2f} | {m['wall_s']:.0f} ({m['cpu_s']:.0f} CPU) |")
        for smp in g["samples"]:
            print(f"  {smp['text']}")

def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="Every part on a slice (a smoke run).")
    ap.add_argument("--parts", default="vectors,sentiment,gpt")
    ap.add_argument("--gpt-steps", type=int, default=0, help="GPT steps (default 1200; --quick 100).")
    ap.add_argument("--models", default="", help="(b): only these lmlab models (" + ",".join(MODELS) + "); the "
                    "other models' rows are kept from the results file.")
    ap.add_argument("--bilstm-epochs", type=int, default=0, help="(b): bilstm epochs (default 6; --quick 2).")
    ap.add_argument("--workdir", default=str(ROOT / "runs" / "bench-chinese"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    parts = set(args.parts.split(","))
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out_path = Path(args.out or RESULTS / ("chinese.quick.json" if args.quick else "chinese.json"))
    result: dict = {
        "benchmark": "chinese",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"platform": platform.platform(), "torch_threads": 1, "cpu_count": os.cpu_count(),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "python": platform.python_version()},
        "quick": args.quick,
    }
    previous: dict = {}
    if os.path.exists(out_path):  # parts run separately accumulate in one file
        previous = json.loads(out_path.read_text(encoding="utf-8"))
        result.update({k: previous[k] for k in ("vectors", "sentiment", "gpt") if k in previous and k not in parts})
        earlier = {k: previous.get(k) for k in ("date", "command")}
        for row in previous.get("sentiment", {}).values():  # rows written before rows carried their own run record
            if isinstance(row, dict) and "run" not in row:
                row["run"] = earlier
        for part in ("vectors", "gpt"):  # parts kept from an earlier run say which run measured them
            if part in result and part not in parts and "run" not in result[part]:
                result[part]["run"] = earlier
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every part: a later part that fails keeps the earlier ones
        out_path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        if "vectors" in parts:
            print("(a) word vectors: lmlab vs jieba + gensim ...", flush=True)
            result["vectors"] = bench_vectors(2000 if args.quick else 0, tmp)
            save()
        if "sentiment" in parts:
            print("(b) sentiment: TF-IDF + LR vs lmlab linear / bilstm ...", flush=True)
            result["sentiment"] = bench_sentiment(2000 if args.quick else 0, tmp,
                                                  args.bilstm_epochs or (2 if args.quick else 6),
                                                  set(filter(None, args.models.split(","))) or None,
                                                  lambda part: (result.__setitem__("sentiment", part), save()),
                                                  previous.get("sentiment"),
                                                  {"date": result["date"], "command": result["command"]})
            save()
        if "gpt" in parts:
            steps = args.gpt_steps or (100 if args.quick else 1200)
            print(f"(c) char GPT, {steps} steps ...", flush=True)
            result["gpt"] = bench_gpt(2000 if args.quick else 0, tmp, steps)
            save()
    print_tables(result)
    print(f"\nwrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
