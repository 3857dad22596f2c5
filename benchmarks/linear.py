"""The linear classifiers (fastText ``linear``, sparse logistic regression ``nblr`` / ``tfidf``) vs TF-IDF +
logistic regression, with the bilstm numbers beside them.

Side by side in one run, each model on one core (one torch thread, OMP_NUM_THREADS=1 for scikit-learn):
  (a) IMDb, all 25k training reviews -> all 25k test reviews: lmlab's ``linear``, ``nblr`` and ``tfidf`` presets
      (trained on the same 25k as the baseline: ``data.val_split=0``) vs TF-IDF word 1-2 grams + LogisticRegression
      (scikit-learn defaults apart from ``min_df=2, sublinear_tf=True``; nothing tuned on the test set).
  (b) rt-polarity, 10-fold cross-validation with the SAME folds as benchmarks/classify.py's bilstm CV.
  The ``bilstm`` rows are read from benchmarks/results/classify.json (not retrained).

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/linear.py [--parts imdb,cv] [--models linear,nblr,tfidf,tfidf_lr]
                                                          [--limit N] [--folds 10]

Models left out of ``--models`` keep their rows from the existing results file (merged, not dropped).
scikit-learn is a benchmark dependency (``pip install -e '.[bench]'``). Writes benchmarks/results/linear.json.
Wall times include tokenizing/vectorizing the training text; accuracy is on the held-out text.
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

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LMLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results" / "linear.json"
BILSTM = ROOT / "benchmarks" / "results" / "classify.json"
QUIET = ["train.progress=false", "train.tensorboard=false", "data.val_split=0"]


MODELS = ("linear", "nblr", "tfidf", "tfidf_lr")


def run_model(name: str, train, test, workdir: Path, overrides=()) -> dict:
    return run_tfidf(train, test) if name == "tfidf_lr" else run_linear(train, test, workdir, overrides, preset=name)


def run_linear(train, test, workdir: Path, overrides=(), preset: str = "linear") -> dict:
    from lmlab.recipes.classify import ClassifyRecipe

    t0, c0 = time.perf_counter(), time.process_time()
    result = ClassifyRecipe.from_preset(preset, [*QUIET, *overrides], data=train, log=lambda *_: None).train(
        workdir, overwrite=True)
    train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    t1 = time.perf_counter()
    acc = ClassifyRecipe.load(workdir).evaluate(test)["accuracy"]
    return {"accuracy": acc, "train_s": round(train_s, 2), "train_cpu_s": round(train_cpu_s, 2),
            "eval_s": round(time.perf_counter() - t1, 2), "steps": result.step}


def run_tfidf(train, test) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    t0, c0 = time.perf_counter(), time.process_time()
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x = vec.fit_transform([e.text for e in train])
    clf = LogisticRegression(max_iter=1000).fit(x, [e.label for e in train])
    train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    t1 = time.perf_counter()
    pred = clf.predict(vec.transform([e.text for e in test]))
    acc = sum(p == e.label for p, e in zip(pred, test, strict=True)) / len(test)
    return {"accuracy": float(acc), "train_s": round(train_s, 2), "train_cpu_s": round(train_cpu_s, 2),
            "eval_s": round(time.perf_counter() - t1, 2), "features": x.shape[1]}


def bench_imdb(workdir: Path, limit: int | None, models=MODELS) -> dict:
    from lmlab.data.readers import load_examples

    train = load_examples(DATA / "imdb" / "train.jsonl.gz")
    test = load_examples(DATA / "imdb" / "test.jsonl.gz")
    if limit:  # the files are sorted by label: a seeded sample, as benchmarks/classify.py's --limit
        train, test = random.Random(0).sample(train, limit), random.Random(1).sample(test, limit)
    out = {"train": len(train), "test": len(test)}
    print(f"(a) IMDb {len(train)} -> {len(test)}", flush=True)
    for name in models:
        out[name] = run_model(name, train, test, workdir / f"imdb-{name}")
        print(f"    {name} {out[name]}", flush=True)
    return out


def bench_cv(workdir: Path, folds: int, models=MODELS) -> dict:
    from lmlab.data.readers import load_examples

    examples = load_examples(DATA / "rt-polarity" / "rt-polarity.*.utf8", format="lines")
    order = list(range(len(examples)))
    random.Random(0).shuffle(order)  # the folds of benchmarks/classify.py's bench_cv
    rows: dict[str, list[dict]] = {name: [] for name in models}
    for k in range(folds):
        test_idx = set(order[k::folds])
        tr = [examples[i] for i in order if i not in test_idx]
        te = [examples[i] for i in sorted(test_idx)]
        for name in models:
            rows[name].append(run_model(name, tr, te, workdir / f"cv{k}-{name}", [f"train.seed={k}"]))
        print(f"  fold {k + 1}/{folds}: " + "  ".join(
            f"{name} {r[-1]['accuracy']:.4f} ({r[-1]['train_s']:.1f} s)" for name, r in rows.items()), flush=True)
    out: dict = {"folds": folds, "examples": len(examples)}
    for name, r in rows.items():
        accs = [x["accuracy"] for x in r]
        out[name] = {"accuracy_mean": statistics.mean(accs), "accuracy_stdev": statistics.stdev(accs) if folds > 1 else 0.0,
                     "fold_accuracies": accs, "median_fold_train_s": statistics.median(x["train_s"] for x in r)}
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="imdb,cv")
    ap.add_argument("--limit", type=int, default=0, help="IMDb: a seeded sample of N train and N test reviews (0: all).")
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--models", default=",".join(MODELS), help="rows to run: " + ",".join(MODELS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", default=str(ROOT / "runs" / "bench-linear"))
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    parts = set(args.parts.split(","))
    models = [m for m in args.models.split(",") if m]
    unknown = set(models) - set(MODELS)
    if unknown:
        ap.error(f"unknown --models {sorted(unknown)}; choose from {', '.join(MODELS)}")
    workdir = Path(args.workdir)
    run = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"platform": platform.platform(), "torch_threads": args.threads,
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "python": platform.python_version(),
                    "load_average": os.getloadavg()},
    }
    # rows of models not run this time are kept from the existing file; every row says which run measured it
    result: dict = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    earlier = {k: result[k] for k in ("date", "command", "machine") if k in result}
    for part in ("imdb", "rt_polarity_cv"):  # rows written before rows carried their own run record
        for v in result.get(part, {}).values():
            if isinstance(v, dict) and "run" not in v and earlier:
                v["run"] = earlier
    result.update({"benchmark": "linear", **run})
    if "imdb" in parts:
        new = bench_imdb(workdir, args.limit or None, models)
        result["imdb"] = {**result.get("imdb", {}), **{k: ({**v, "run": run} if isinstance(v, dict) else v)
                                                       for k, v in new.items()}}
    if "cv" in parts:
        print(f"(b) rt-polarity {args.folds}-fold CV: {', '.join(models)} ...", flush=True)
        new = bench_cv(workdir, args.folds, models)
        result["rt_polarity_cv"] = {**result.get("rt_polarity_cv", {}),
                                    **{k: ({**v, "run": run} if isinstance(v, dict) else v) for k, v in new.items()}}
    if BILSTM.is_file():
        old = json.loads(BILSTM.read_text())
        result["bilstm_from_classify_json"] = {
            k: {f: old[k].get(f) for f in ("accuracy", "train_wall_s", "accuracy_mean", "median_fold_s", "command")
                if f in old[k]}
            for k in ("bilstm_imdb", "bilstm_imdb_random_init", "bilstm_rt_polarity_cv") if k in old
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    return 0


def print_table(r: dict) -> None:
    print("\n| data | model | accuracy | train wall s (1 core) | train CPU s |\n|---|---|---:|---:|---:|")
    if "imdb" in r:
        for name in [m for m in MODELS if m in r["imdb"]]:
            x = r["imdb"][name]
            cpu = f"{x['train_cpu_s']:.1f}" if "train_cpu_s" in x else ""
            print(f"| IMDb {r['imdb']['train']}/{r['imdb']['test']} | {name} | {x['accuracy']:.4f} | {x['train_s']:.1f} | {cpu} |")
    b = r.get("bilstm_from_classify_json", {})
    for k in ("bilstm_imdb_random_init", "bilstm_imdb"):
        if k in b:
            print(f"| IMDb 25000/25000 | {k} (classify.json) | {b[k]['accuracy']:.4f} | {b[k]['train_wall_s']:.0f} |")
    if "rt_polarity_cv" in r:
        cv = r["rt_polarity_cv"]
        for name in [m for m in MODELS if m in cv]:
            x = cv[name]
            print(f"| rt-polarity {cv['folds']}-fold CV | {name} | {x['accuracy_mean']:.4f} +- {x['accuracy_stdev']:.4f} "
                  f"| {x['median_fold_train_s']:.1f} per fold |")
    if "bilstm_rt_polarity_cv" in b:
        x = b["bilstm_rt_polarity_cv"]
        print(f"| rt-polarity 10-fold CV | bilstm (classify.json) | {x['accuracy_mean']:.4f} | {x['median_fold_s']:.0f} per fold |")


if __name__ == "__main__":
    raise SystemExit(main())
