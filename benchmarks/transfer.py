"""Transfer-learning benchmark: classifiers from scratch vs fine-tuned pretrained language models, side by side.

Rows (each: accuracy, wall minutes, cores):
  tfidf_lr     TF-IDF word 1-2 grams + logistic regression (scikit-learn; benchmark dependency only)
  linear       lmlab's fastText-style ``linear`` preset
  nblr         lmlab's ``nblr`` preset: NB-weighted logistic regression on word 1-3 grams, L-BFGS to the optimum
  tfidf        lmlab's ``tfidf`` preset: TF-IDF word 1-2 grams + logistic regression (lmlab's own, no scikit-learn)
  bilstm       lmlab's ``bilstm`` preset from scratch
  bilstm_w2v   the same, its embedding started from word2vec (CBOW, lmlab's own) trained here on the unlabelled text
  ft_gpt       ``classify train --init-from`` a GPT pretrained here (BPE)
  ft_lm        the same from an RNN LM (ULMFiT-style: concat pooling, discriminative LR, slanted triangular LR)
  ft_mlm       the same from a masked LM, when ``lmlab.recipes.mlm`` exists (skipped with a message otherwise)
Tasks: IMDb with 25k labels, IMDb with 1k labels (3 seeded subsets, median), IMDb with 100 labels (tested on the
IMDb test set), rt-polarity 10-fold cross-validation. Pretraining reads unlabelled text only (IMDb ``unsup`` + the
training reviews' text, never the test reviews or any label); its compute is reported separately, once per body.

    python benchmarks/transfer.py [--rows tfidf_lr,linear,nblr,tfidf,bilstm,ft_gpt,ft_lm,ft_mlm] [--tasks imdb25k,...]
    python benchmarks/transfer.py --quick    # tiny and step-bounded, one thread: checks the whole pipeline

Writes benchmarks/results/transfer.json (``--quick``: transfer.quick.json).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LMLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results" / "transfer.json"
ROWS = ("tfidf_lr", "linear", "nblr", "tfidf", "bilstm", "bilstm_w2v", "ft_gpt", "ft_lm", "ft_mlm")
#: lmlab presets trained from scratch; the sparse-lr ones (no early stopping) fit on every label (data.val_split=0)
SCRATCH = {"linear": [], "bilstm": [], "bilstm_w2v": [], "nblr": ["data.val_split=0"], "tfidf": ["data.val_split=0"]}
TASKS = ("imdb25k", "imdb1k", "imdb100", "rt10")
QUIET = ["train.progress=false", "train.tensorboard=false"]

FULL = {
    "train_limit": None, "test_limit": None, "pretrain_texts": None, "folds": 10, "subsets": 3,
    "pretrain_gpt": ["data.vocab_size=8000", "model.block_size=256", "model.embed_dim=256", "model.num_layers=4",
                     "model.num_heads=4", "train.batch_size=32", "train.lr=0.001", "train.max_time_s=3600"],
    "pretrain_lm": ["data.tokenizer=word", "data.vocab_size=20000", "model.embed_dim=256", "model.hidden_dim=512",
                    "model.num_layers=2", "train.batch_size=32", "data.bptt=70", "train.max_steps=1500",
                    "train.max_time_s=3600"],
    "finetune": ["train.max_time_s=1200"],
    "scratch": [],
    "pretrain_w2v": {"epochs": 5, "min_count": 5},
}
QUICK = {
    "quick": True,
    "train_limit": 400, "test_limit": 400, "pretrain_texts": 1500, "folds": 2, "subsets": 3, "subset_size": 200,
    "pretrain_gpt": ["data.vocab_size=1000", "model.block_size=64", "model.embed_dim=32", "model.num_layers=2",
                     "model.num_heads=2", "train.batch_size=16", "train.max_steps=30"],
    "pretrain_lm": ["data.tokenizer=word", "data.vocab_size=5000", "model.embed_dim=32", "model.hidden_dim=32",
                    "model.num_layers=2", "train.batch_size=16", "data.bptt=35", "train.max_steps=30"],
    "finetune": ["train.max_steps=20", "finetune.max_tokens=64"],
    "scratch": ["train.max_steps=20"],
    "pretrain_w2v": {"epochs": 1, "min_count": 2},
}


@functools.lru_cache(maxsize=8)
def _read(path: Path):
    from lmlab.data.readers import load_examples

    return load_examples(path, min_classes=1)


def _examples(path: Path, limit: int | None = None, seed: int = 0):
    examples = list(_read(path))
    if limit and limit < len(examples):
        examples = random.Random(seed).sample(examples, limit)
    return examples


def _rt_examples(limit: int | None):
    from lmlab.data.readers import Example

    rows = []
    for label in ("pos", "neg"):
        lines = (DATA / "rt-polarity" / f"rt-polarity.{label}.utf8").read_text(encoding="utf-8").splitlines()
        rows += [Example(text, label, f"rt-polarity.{label}:{i + 1}") for i, text in enumerate(lines)]
    random.Random(0).shuffle(rows)
    return rows[:limit] if limit else rows


# ------------------------------------------------------------------------------------------------- pretraining
def pretrain(kind: str, text: Path, cfg: dict, workdir: Path, threads: int) -> dict:
    """Pretrain one body on the unlabelled text; returns its run directory and compute."""
    out = workdir / f"pretrain-{kind}"
    t0 = time.perf_counter()
    if kind == "w2v":
        from lmlab.recipes.classify import ClassifyRecipe
        from lmlab.recipes.embed import recipe_from_cli

        dim = ClassifyRecipe.resolve("bilstm").model.embed_dim  # the bilstm row's embedding width
        recipe = recipe_from_cli("cbow", {"embed_dim": dim, "threads": threads, "seed": 1, **cfg["pretrain_w2v"]},
                                 corpus=str(text), log=lambda _: None)
    elif kind == "gpt":
        from lmlab.recipes.gpt import GPTRecipe

        recipe = GPTRecipe.from_preset("bpe", [*cfg["pretrain_gpt"], f"train.num_threads={threads}", *QUIET],
                                       data=str(text), log=lambda _: None)
    elif kind == "lm":
        from lmlab.recipes.lm import LMRecipe

        recipe = LMRecipe.from_preset("ptb-recommended" if not cfg.get("quick") else "ptb-small",
                                      [*cfg["pretrain_lm"], f"train.num_threads={threads}", *QUIET],
                                      data=str(text), log=lambda _: None)
    else:
        from lmlab.recipes.mlm import MLMRecipe  # type: ignore[import-not-found]

        recipe = MLMRecipe.from_preset(None, [f"train.num_threads={threads}", *QUIET,
                                              *(["train.max_steps=30"] if cfg.get("quick") else [])],
                                       data=str(text), log=lambda _: None)
    result = recipe.train(out, overwrite=True)
    return {"run_dir": str(out), "steps": result.step, "minutes": (time.perf_counter() - t0) / 60, "cores": threads,
            "best": result.best}


def reused_body(run_dir: Path) -> dict:
    """A body pretrained earlier (``--body KIND=RUN_DIR``): its steps and training minutes from metrics.jsonl."""
    last = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()][-1]
    threads = json.loads((run_dir / "config.json").read_text()).get("train", {}).get("num_threads", 0)
    return {"run_dir": str(run_dir), "steps": last.get("step"), "minutes": last.get("time", 0.0) / 60,
            "cores": threads or None, "reused": True}


# ------------------------------------------------------------------------------------------------ one row
def run_row(row: str, train, test, cfg: dict, workdir: Path, bodies: dict, threads: int) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    if row == "tfidf_lr":
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2 if len(train) > 1000 else 1, sublinear_tf=True)
        clf = LogisticRegression(C=4.0, max_iter=1000).fit(vec.fit_transform([e.text for e in train]),
                                                           [e.label for e in train])
        preds = clf.predict(vec.transform([e.text for e in test]))
        acc = sum(p == e.label for p, e in zip(preds, test, strict=True)) / len(test)
        return {"accuracy": acc, "minutes": (time.perf_counter() - t0) / 60, "cores": 1}
    from lmlab.recipes.classify import ClassifyRecipe

    out = workdir / f"row-{row}"
    common = [f"train.num_threads={threads}", *QUIET]
    if row in SCRATCH:
        vectors = bodies["w2v"]["run_dir"] if row == "bilstm_w2v" else None
        recipe = ClassifyRecipe(ClassifyRecipe.resolve(row.split("_")[0], [*cfg["scratch"], *SCRATCH[row], *common]),
                                data=train, pretrained_vectors=vectors, log=lambda _: None)
    else:
        recipe = ClassifyRecipe.from_preset(None, [*cfg["finetune"], *common], init_from=bodies[row[3:]]["run_dir"],
                                            data=train, log=lambda _: None)
    result = recipe.train(out, overwrite=True)
    train_cpu_s = time.process_time() - c0  # CPU seconds of the training alone (a loaded machine stretches wall time)
    pipeline = ClassifyRecipe.load(out)
    acc = pipeline.evaluate(test)["accuracy"]
    extra = {"test_accuracy": pipeline.evaluate(cfg["also_test"])["accuracy"]} if cfg.get("also_test") else {}
    return {"accuracy": acc, **extra, "minutes": (time.perf_counter() - t0) / 60, "cores": threads,
            "train_cpu_s": round(train_cpu_s, 1), "steps": result.step}


def dev_examples(imdb_train: list, subsets: list[list], size: int) -> list:
    """``--dev``: a seeded ``size`` of the IMDb *training* reviews outside every labelled subset, to choose
    settings on without looking at the test set."""
    used = {id(e) for subset in subsets for e in subset}
    pool = [e for e in imdb_train if id(e) not in used]
    return random.Random(2).sample(pool, min(size, len(pool)))


def run_task(task: str, row: str, cfg: dict, workdir: Path, bodies: dict, threads: int) -> dict:
    imdb_train = _examples(DATA / "imdb" / "train.jsonl.gz", cfg["train_limit"])
    imdb_test = _examples(DATA / "imdb" / "test.jsonl.gz", cfg["test_limit"], seed=1)
    if task == "imdb25k":
        return run_row(row, imdb_train, imdb_test, cfg, workdir, bodies, threads)
    if task in ("imdb1k", "imdb100"):
        size = 100 if task == "imdb100" else cfg.get("subset_size", 1000)
        seeds = range(cfg["subsets"]) if task == "imdb1k" else range(1)
        subsets = [random.Random(s).sample(imdb_train, size) for s in seeds]
        if cfg.get("dev"):
            cfg = {**cfg, "also_test": imdb_test if cfg.get("report_test") else None}
            imdb_test = dev_examples(imdb_train, subsets, cfg["dev"])
        runs = [run_row(row, subset, imdb_test, cfg, workdir, bodies, threads) for subset in subsets]
        extra = {"test_runs": [r["test_accuracy"] for r in runs]} if cfg.get("also_test") else {}
        return {"accuracy": statistics.median(r["accuracy"] for r in runs), "runs": [r["accuracy"] for r in runs],
                **extra,
                "minutes": sum(r["minutes"] for r in runs), "cores": runs[0]["cores"],
                "train_cpu_s": [r.get("train_cpu_s") for r in runs], "steps": [r.get("steps") for r in runs]}
    rows = _rt_examples(cfg["train_limit"] and cfg["train_limit"] * 2)
    folds = cfg["folds"]
    accs, minutes = [], 0.0
    for k in range(folds):
        test = rows[k::folds]
        train = [r for i, r in enumerate(rows) if i % folds != k]
        r = run_row(row, train, test, cfg, workdir, bodies, threads)
        accs.append(r["accuracy"])
        minutes += r["minutes"]
    return {"accuracy": statistics.mean(accs), "folds": accs, "minutes": minutes, "cores": r["cores"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--threads", type=int, default=0, help="torch threads per row (0: all cores)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=None, help="results file (default: benchmarks/results/transfer[.quick].json)")
    ap.add_argument("--body", action="append", default=[], metavar="KIND=RUN_DIR",
                    help="reuse a body pretrained earlier (gpt/lm/mlm) instead of pretraining it here; its compute is "
                         "read from its metrics.jsonl")
    ap.add_argument("--finetune-minutes", type=float, default=None,
                    help="wall-clock cap of each fine-tuning (default: 20 min, --quick: step-bounded)")
    ap.add_argument("--finetune-overrides", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra overrides of every fine-tuning run (e.g. finetune.head_pooling=mean train.epochs=4); "
                         "train.max_time_s=0 makes runs step-bounded, comparable across loads")
    ap.add_argument("--subsets", type=int, default=None, help="IMDb 1k: how many seeded subsets (default 3)")
    ap.add_argument("--test-limit", type=int, default=None,
                    help="evaluate on a seeded sample of this many IMDb test reviews (default: all 25,000)")
    ap.add_argument("--dev", type=int, default=None, metavar="N",
                    help="IMDb 1k / 100: evaluate on a seeded N of the training reviews outside the labelled subsets "
                         "(a dev set to choose settings on) instead of the test set")
    ap.add_argument("--report-test", action="store_true",
                    help="with --dev: also evaluate on the test reviews (once the settings are chosen)")
    args = ap.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    if args.finetune_minutes:
        cfg["finetune"] = [*cfg["finetune"], f"train.max_time_s={int(args.finetune_minutes * 60)}"]
    if args.finetune_overrides:
        cfg["finetune"] = [*cfg["finetune"], *args.finetune_overrides]
    if args.subsets:
        cfg["subsets"] = args.subsets
    given = dict(b.split("=", 1) for b in args.body)
    if args.dev:
        cfg["dev"] = args.dev
        cfg["report_test"] = args.report_test
    if args.test_limit:
        cfg["test_limit"] = args.test_limit
    threads = args.threads or (1 if args.quick else os.cpu_count() or 1)
    workdir = Path(args.workdir or ROOT / "runs" / ("bench-transfer-quick" if args.quick else "bench-transfer"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = [r for r in args.rows.split(",") if r]
    tasks = [t for t in args.tasks.split(",") if t]
    skipped = {}
    if "ft_mlm" in rows and importlib.util.find_spec("lmlab.recipes.mlm") is None:
        skipped["ft_mlm"] = "lmlab.recipes.mlm does not exist yet (the masked-LM family is not merged)"
        print(f"skipping ft_mlm: {skipped['ft_mlm']}")
        rows.remove("ft_mlm")
    if "tfidf_lr" in rows and importlib.util.find_spec("sklearn") is None:
        skipped["tfidf_lr"] = "scikit-learn is not installed"
        rows.remove("tfidf_lr")

    # unlabelled text only: IMDb unsup + the training reviews' text (only when a body is pretrained here)
    text = workdir / "unlabelled.txt"
    texts = []
    if any((row.startswith("ft_") and row[3:] not in given) or (row == "bilstm_w2v" and "w2v" not in given)
           for row in rows):
        texts = [e.text for e in _examples(DATA / "imdb" / "unsup.jsonl.gz", cfg["pretrain_texts"])]
        texts += [e.text for e in _examples(DATA / "imdb" / "train.jsonl.gz", cfg["pretrain_texts"])]
        text.write_text("\n".join(t.replace("<br />", " ").replace("\n", " ") for t in texts) + "\n", encoding="utf-8")
    bodies = {}
    for row in rows:
        if row.startswith("ft_") or row == "bilstm_w2v":
            kind = row[3:] if row.startswith("ft_") else "w2v"
            if kind in given:
                bodies[kind] = reused_body(Path(given[kind]))
                print(f"reusing {kind} body {given[kind]}: {bodies[kind]['steps']} steps, "
                      f"{bodies[kind]['minutes']:.1f} min")
                continue
            print(f"pretraining {kind} on {len(texts):,} unlabelled reviews ...", flush=True)
            bodies[kind] = pretrain(kind, text, cfg, workdir, threads)
            print(f"  {bodies[kind]['steps']} steps, {bodies[kind]['minutes']:.1f} min on {threads} core(s)")

    results: dict = {}
    out = Path(args.out) if args.out else RESULTS.with_suffix(".quick.json") if args.quick else RESULTS
    record = {
        "benchmark": "transfer", "command": " ".join(sys.argv), "quick": args.quick,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "cpus": os.cpu_count(),
                    "load_average": os.getloadavg()},
        "pretraining": bodies, "results": results, "skipped": skipped,
        "evaluated_on": f"dev: {args.dev} IMDb training reviews outside the subsets" if args.dev else "test",
    }
    for task in tasks:
        for row in rows:
            r = run_task(task, row, cfg, workdir, bodies, threads)
            results.setdefault(task, {})[row] = r
            print(f"{task:8s} {row:9s} accuracy {r['accuracy']:.4f}  {r['minutes']:.2f} min on {r['cores']} core(s)"
                  f"  train CPU s {r.get('train_cpu_s')}  steps {r.get('steps')}", flush=True)
            out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")  # after every row
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
