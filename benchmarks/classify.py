"""Classification benchmark: lmlab's seed-lstm vs the same model in Keras 3, and lmlab's bilstm.

Side by side in one run:
  (a) IMDb (25k train / 25k test): ``seed-lstm`` in lmlab and the identical Keras 3 model (torch backend) fed the
      SAME integer sequences (lmlab's Keras-compatible tokenizer, padded/truncated "post" to 100): test accuracy and
      training wall time, 10 epochs, batch 32, Adam 1e-3, as in the tutorial (no validation during training).
  (b) IMDb: ``bilstm`` (the recommended preset) within a time budget: test accuracy and wall time.
  (c) rt-polarity: 10-fold cross-validation of ``bilstm`` (as in the literature on this dataset).

    python benchmarks/classify.py [--parts seed,bilstm,cv] [--limit N] [--bilstm-budget-s 1200] [--folds 10]
    python benchmarks/classify.py --quick     # all three parts, small and step-bounded (QUICK below), ~2 min

``--quick`` sets the defaults in ``QUICK`` (options given on the command line still win): 1,000 train / 1,000
test reviews, seed-lstm for 1 epoch, bilstm for 40 steps, 2 CV folds of 40 steps, one thread, so the numbers are
deterministic; it writes benchmarks/results/classify.quick.json. Without Keras its column is skipped with a note.

Keras is installed only for this benchmark (``pip install -e '.[bench]'``). Writes benchmarks/results/classify.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LMLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results" / "classify.json"
QUICK = {
    "limit": 1000, "epochs": 1, "threads": 1, "no_fit": True, "bilstm_budget_s": 0,
    "bilstm_overrides": ["train.max_steps=40"], "folds": 2, "cv_budget_s": 0, "cv_overrides": ["train.max_steps=40"],
    "workdir": str(ROOT / "runs" / "bench-classify-quick"), "out": str(RESULTS.with_suffix(".quick.json")),
}


def _examples(path: Path, limit: int | None):
    from lmlab.data.readers import load_examples

    return load_examples(path, limit=limit)


def _unlabeled(path: Path) -> list[str]:
    from lmlab.data.readers import load_examples

    return [e.text for e in load_examples(path, min_classes=1)]


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _sample(examples, limit: int | None, seed: int = 0):
    if not limit or limit >= len(examples):
        return examples
    rng = random.Random(seed)
    return rng.sample(examples, limit)


def bench_seed(train, test, epochs: int, threads: int, impls: set[str]) -> dict:
    """lmlab seed-lstm vs Keras on identical integer sequences."""
    import torch

    from lmlab.data.classification import ClassifyDataset, TextEncoder
    from lmlab.recipes.classify import ClassifyRecipe

    torch.set_num_threads(threads)
    run = ClassifyRecipe.resolve("seed-lstm", [f"epochs={epochs}", "train.progress=false", "train.tensorboard=false"])
    labels = sorted({e.label for e in train})
    encoder = TextEncoder(run.data).fit([e.text for e in train])
    tr = ClassifyDataset.build(train, encoder, labels)
    te = ClassifyDataset.build(test, encoder, labels)
    run.model.vocab_size, run.model.num_classes = encoder.vocab_size, len(labels)

    out: dict = {"epochs": epochs}
    if "lmlab" in impls:
        out["lmlab"] = _seed_lmlab(run, tr, te, labels)
    if "keras" in impls:
        out["keras"] = _seed_keras(tr, te, labels, epochs)
    if "lmlab" in out and "keras" in out:
        out["time_ratio_lmlab_over_keras"] = out["lmlab"]["train_s"] / out["keras"]["train_s"]
        out["cpu_time_ratio_lmlab_over_keras"] = out["lmlab"]["train_cpu_s"] / out["keras"]["train_cpu_s"]
    return out


def _seed_lmlab(run, tr, te, labels) -> dict:
    import torch

    from lmlab.data.classification import collate
    from lmlab.data.loader import EpochLoader
    from lmlab.metrics import classification_report
    from lmlab.models.classifier import TextClassifier
    from lmlab.trainer import Trainer, seed_everything

    seed_everything(0)
    model = TextClassifier(run.model)
    t0, c0 = time.perf_counter(), time.process_time()
    Trainer(run.train, model, EpochLoader(tr, 32, seed=0, collate_fn=collate)).fit()
    lm_time, lm_cpu = time.perf_counter() - t0, time.process_time() - c0
    model.eval()
    with torch.no_grad():
        preds = []
        for start in range(0, len(te), 256):
            b = collate([te[i] for i in range(start, min(len(te), start + 256))])
            preds += model.probabilities(b.ids, b.lengths).argmax(-1).tolist()
    return {"accuracy": classification_report(te.labels, preds, labels)["accuracy"], "train_s": lm_time, "train_cpu_s": lm_cpu, "torch_threads": torch.get_num_threads()}


def _seed_keras(tr, te, labels, epochs: int) -> dict:
    import keras
    import numpy as np

    from lmlab.metrics import classification_report

    keras.utils.set_random_seed(0)
    x_tr = np.array(tr.ids, dtype="int32")
    y_tr = np.array(tr.labels, dtype="float32")
    x_te = np.array(te.ids, dtype="int32")
    km = keras.Sequential(
        [
            keras.Input(shape=(100,), dtype="int32"),
            keras.layers.Embedding(10000, 256),
            keras.layers.LSTM(64, return_sequences=True),
            keras.layers.LSTM(32),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    km.compile(loss="binary_crossentropy", optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    params = km.count_params()
    t0, c0 = time.perf_counter(), time.process_time()
    km.fit(x_tr, y_tr, epochs=epochs, batch_size=32, verbose=0)
    k_time, k_cpu = time.perf_counter() - t0, time.process_time() - c0
    k_pred = (km.predict(x_te, batch_size=256, verbose=0)[:, 0] > 0.5).astype(int).tolist()
    return {
        "accuracy": classification_report(te.labels, k_pred, labels)["accuracy"],
        "train_s": k_time,
        "train_cpu_s": k_cpu,
        "parameters": params,
        "version": keras.__version__,
        "backend": keras.backend.backend(),
    }


def pretrain_vectors(train, extra_texts, workdir: Path, threads: int, run) -> tuple[str, dict]:
    """word2vec (CBOW, lmlab's own) on the training reviews plus unlabeled ones, tokenized exactly as the
    classifier tokenizes, with the classifier's embedding width; returns (run directory, facts)."""
    from lmlab.data.tokenizers import WordTokenizer
    from lmlab.models.word2vec import Word2Vec, Word2VecConfig
    from lmlab.recipes.embed import fit_corpus, save_vectors

    t0 = time.perf_counter()
    tok = WordTokenizer(lowercase=run.data.lowercase, strip_html=run.data.strip_html)
    sentences = [tok.tokenize(e.text) for e in train] + [tok.tokenize(t) for t in extra_texts]
    cfg = Word2VecConfig(arch="cbow", embed_dim=run.model.embed_dim, window=5, negative=5, min_count=run.data.min_freq,
                         epochs=5, threads=threads, seed=1, compute_loss=False)
    model = Word2Vec(cfg)
    fit_corpus(model, sentences, workdir=workdir / "w2v-work")
    out = workdir / "imdb-w2v"
    save_vectors(model, out)
    took = time.perf_counter() - t0
    facts = {"arch": "cbow", "dim": cfg.embed_dim, "epochs": cfg.epochs, "texts": len(sentences),
             "tokens": sum(map(len, sentences)), "seconds": round(took, 1)}
    print(f"  word2vec pretraining: {facts}", flush=True)
    return str(out), facts


def bench_bilstm(train, test, budget_s: float, threads: int, workdir: Path, overrides=(), fit: bool = True,
                 w2v_extra=None) -> dict:
    """Train the recommended preset within ``budget_s`` seconds and evaluate on the test set.

    With ``w2v_extra`` (texts), the embedding starts from word2vec vectors trained first on the training reviews
    plus those texts (IMDb's 50,000 unlabeled reviews); that time is inside ``total_s`` and outside the budget.

    With ``fit`` a probe of 30 steps first times this machine, and ``train.max_steps`` is set so that the
    cosine schedule ends when the budget does (leaving 8% for the per-epoch validation); the budget also stops
    training by time (``train.max_time_s``). The probe's time is reported and counted in ``total_s``."""
    import torch

    from lmlab.callbacks import StepTimes
    from lmlab.pipelines import Classifier
    from lmlab.recipes.classify import ClassifyRecipe

    torch.set_num_threads(threads)
    base = [f"train.max_time_s={budget_s}", "train.progress=false", "train.tensorboard=false", *overrides]
    probe = None
    t_all = time.perf_counter()
    vectors, w2v = None, None
    if w2v_extra is not None:
        vectors, w2v = pretrain_vectors(train, w2v_extra, workdir, threads, ClassifyRecipe.resolve("bilstm", base))
    if fit:
        t_probe = time.perf_counter()
        stamps = StepTimes()
        pr = ClassifyRecipe.resolve("bilstm", [*base, "train.max_steps=30", "train.max_time_s=0", "data.val_split=0.01"])
        ClassifyRecipe(pr, data=train, log=lambda *_: None).train(workdir / "imdb-bilstm-probe", overwrite=True, callbacks=[stamps])
        gaps = [b - a for a, b in zip(stamps.times[5:], stamps.times[6:], strict=False)]
        step_s = statistics.mean(gaps)
        probe = {"mean_step_s": round(step_s, 4), "probe_s": round(time.perf_counter() - t_probe, 1)}
        probe["max_steps"] = max(50, int(budget_s * 0.92 / step_s))
        base.append(f"train.max_steps={probe['max_steps']}")
        print(f"  bilstm probe: {probe}", flush=True)
    run = ClassifyRecipe.resolve("bilstm", base)
    t0 = time.perf_counter()
    recipe = ClassifyRecipe(run, data=train, pretrained_vectors=vectors,
                            log=lambda *_: print("  " + str(_[0]), flush=True))
    result = recipe.train(workdir / "imdb-bilstm", overwrite=True)
    took = time.perf_counter() - t0
    total = time.perf_counter() - t_all
    report = Classifier.from_run_dir(workdir / "imdb-bilstm").evaluate(test)
    return {
        "accuracy": report["accuracy"],
        "macro_f1": report["macro_f1"],
        "train_wall_s": round(took, 1),
        "total_s": round(total, 1),
        "steps": result.step,
        "best_val_accuracy": result.best,
        "budget_s": budget_s,
        "overrides": list(overrides),
        "probe": probe,
        "word2vec": w2v,
        "pretrained": (result.notes[0] if result.notes else None),
        "torch_threads": threads,
    }


def bench_cv(examples, folds: int, threads: int, workdir: Path, budget_s: float, overrides=()) -> dict:
    import torch

    from lmlab.pipelines import Classifier
    from lmlab.recipes.classify import ClassifyRecipe

    torch.set_num_threads(threads)
    order = list(range(len(examples)))
    random.Random(0).shuffle(order)
    accs, times = [], []
    for k in range(folds):
        test_idx = set(order[k::folds])
        tr = [examples[i] for i in order if i not in test_idx]
        te = [examples[i] for i in sorted(test_idx)]
        run = ClassifyRecipe.resolve(
            "bilstm",
            ["data.max_len=80", f"train.max_time_s={budget_s}", "train.progress=false", "train.tensorboard=false", f"train.seed={k}",
             *overrides],
        )
        t0 = time.perf_counter()
        ClassifyRecipe(run, data=tr, log=lambda *_: None).train(workdir / f"cv{k}", overwrite=True)
        times.append(time.perf_counter() - t0)
        accs.append(Classifier.from_run_dir(workdir / f"cv{k}").evaluate(te)["accuracy"])
        print(f"  fold {k + 1}/{folds}: accuracy {accs[-1]:.4f} ({times[-1]:.0f} s)", flush=True)
    return {
        "folds": folds,
        "accuracy_mean": statistics.mean(accs),
        "accuracy_stdev": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "fold_accuracies": accs,
        "median_fold_s": statistics.median(times),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="seed,bilstm,cv")
    ap.add_argument("--limit", type=int, default=0, help="Use only N train and N test reviews (0: all 25k/25k).")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed-impls", default="lmlab,keras", help="Which implementations part (a) trains.")
    ap.add_argument("--merge", nargs="+", default=None, help="Merge partial result files into --out and print.")
    ap.add_argument("--bilstm-budget-s", type=float, default=1200)
    ap.add_argument("--bilstm-overrides", nargs="*", default=[], help="key=value overrides of the bilstm preset")
    ap.add_argument("--bilstm-w2v", action="store_true",
                    help="bilstm: start the embedding from word2vec trained on the training + 50k unlabeled IMDb reviews")
    ap.add_argument("--no-fit", action="store_true", help="bilstm: keep the preset's epochs instead of sizing the schedule to the budget")
    ap.add_argument("--cv-budget-s", type=float, default=120, help="Training budget per fold.")
    ap.add_argument("--cv-overrides", nargs="*", default=[], help="key=value overrides of the CV runs")
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=str(ROOT / "runs" / "bench-classify"))
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--quick", action="store_true", help="small, step-bounded sizes (QUICK); writes classify.quick.json")
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        ap.set_defaults(**QUICK)
    args = ap.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out)
    parts = set(args.parts.split(","))
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    limit = args.limit or None
    result: dict = {
        "benchmark": "classify",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"platform": platform.platform(), "cpus_used": args.threads, "python": platform.python_version()},
        "data": {"imdb": str(DATA / "imdb"), "limit": limit},
    }
    if parts & {"seed", "bilstm"}:
        train = _sample(_examples(DATA / "imdb" / "train.jsonl.gz", None), limit)
        test = _sample(_examples(DATA / "imdb" / "test.jsonl.gz", None), limit, seed=1)
        result["data"]["imdb_train"], result["data"]["imdb_test"] = len(train), len(test)
    if "seed" in parts:
        print("(a) seed-lstm: lmlab vs Keras on IMDb ...", flush=True)
        impls = set(args.seed_impls.split(","))
        if "keras" in impls and args.quick and not _has("keras"):
            print("  note: Keras is not installed (pip install -e '.[bench]'); --quick skips its column", flush=True)
            impls.discard("keras")
            result["skipped"] = ["keras (not installed)"]
        result["seed_lstm_imdb"] = bench_seed(train, test, args.epochs, args.threads, impls)
    if "bilstm" in parts:
        print("(b) bilstm on IMDb ...", flush=True)
        result["bilstm_imdb"] = bench_bilstm(
            train, test, args.bilstm_budget_s, args.threads, workdir, args.bilstm_overrides, fit=not args.no_fit,
            w2v_extra=_unlabeled(DATA / "imdb" / "unsup.jsonl.gz") if args.bilstm_w2v else None,
        )
    if "cv" in parts:
        print(f"(c) bilstm {args.folds}-fold CV on rt-polarity ...", flush=True)
        from lmlab.data.readers import load_examples

        rt = load_examples(DATA / "rt-polarity" / "rt-polarity.*.utf8", format="lines")
        result["bilstm_rt_polarity_cv"] = bench_cv(rt, args.folds, args.threads, workdir, args.cv_budget_s, args.cv_overrides)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    return 0


def merge(paths: list[str], out: str) -> int:
    """Combine partial runs (e.g. lmlab and Keras trained at the same time on separate cores) into one file."""
    merged: dict = {}
    for path in paths:
        part = json.loads(Path(path).read_text())
        for key, value in part.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key].update(value)
            else:
                merged.setdefault(key, value)
    seed = merged.get("seed_lstm_imdb", {})
    if "lmlab" in seed and "keras" in seed:
        seed["time_ratio_lmlab_over_keras"] = seed["lmlab"]["train_s"] / seed["keras"]["train_s"]
        seed["cpu_time_ratio_lmlab_over_keras"] = seed["lmlab"]["train_cpu_s"] / seed["keras"]["train_cpu_s"]
    merged["merged_from"] = paths
    Path(out).write_text(json.dumps(merged, indent=2) + "\n")
    print_table(merged)
    return 0


def print_table(r: dict) -> None:
    print("\n| model | data | accuracy | train time (s) | train CPU time (s) |")
    print("|---|---|---:|---:|---:|")
    s = r.get("seed_lstm_imdb")
    if s and "lmlab" in s:
        print(f"| lmlab seed-lstm | IMDb | {s['lmlab']['accuracy']:.4f} | {s['lmlab']['train_s']:.0f} | {s['lmlab'].get('train_cpu_s', 0):.0f} |")
    if s and "keras" in s:
        print(f"| Keras {s['keras']['version']} ({s['keras']['backend']}) same model | IMDb | {s['keras']['accuracy']:.4f} | {s['keras']['train_s']:.0f} | {s['keras'].get('train_cpu_s', 0):.0f} |")
    if s and "time_ratio_lmlab_over_keras" in s:
        print(f"| time ratio lmlab / Keras | | | {s['time_ratio_lmlab_over_keras']:.2f} | {s.get('cpu_time_ratio_lmlab_over_keras', 0):.2f} |")
    b = r.get("bilstm_imdb")
    if b:
        print(f"| lmlab bilstm | IMDb | {b['accuracy']:.4f} | {b.get('train_wall_s', b.get('wall_s', 0)):.0f} | |")
    c = r.get("bilstm_rt_polarity_cv")
    if c:
        print(f"| lmlab bilstm, {c['folds']}-fold CV | rt-polarity | {c['accuracy_mean']:.4f} ± {c['accuracy_stdev']:.4f} | {c['median_fold_s']:.0f} / fold | |")


if __name__ == "__main__":
    sys.exit(main())
