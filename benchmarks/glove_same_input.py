"""GloVe: lmlab vs glove.c trained on the *same* co-occurrence records (issue 20's GloVe comparison).

glove.c's own tools count the corpus (``vocab_count`` -> ``cooccur`` -> ``shuffle -seed S``); both trainers then
read those shuffled records -- glove.c's ``glove`` directly, lmlab's :class:`lmlab.models.glove.GloVe` after a
lossless conversion to its record format (0-based ids, float32 counts) -- with the same settings (100 dimensions,
15 iterations, lr 0.05, x_max 100, alpha 0.75, one thread, seed S). Counting, record order and initial scale are
thus the same for both, and the quality difference is the trainer's alone. Both are scored by
``benchmarks/word2vec.py``'s evaluation (WS-353, SimLex-999, Google analogies); times are the CPU seconds of the
training alone (glove.c: its child process).

    python benchmarks/glove_same_input.py --glove-c-src /path/to/stanfordnlp-GloVe --seeds 1,2,3

The corpus is ``benchmarks/word2vec.py``'s tokenized Gutenberg text cut to ``--max-words`` (5,060,000 by default:
``--protocol 5m``'s corpus, built by that script first). Writes ``--out`` (default
``benchmarks/results/glove_same_input.json``) and prints the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import word2vec as W  # noqa: E402  (the corpus, the glove.c build and the evaluation of benchmarks/word2vec.py)

SETTINGS = {"dim": 100, "iter": 15, "eta": 0.05, "x_max": 100.0, "alpha": 0.75, "window": 10, "min_count": 5}


def _cpu(who: int) -> float:
    ru = resource.getrusage(who)
    return ru.ru_utime + ru.ru_stime


def _tool(bin_dir: Path, name: str, *opts: str, stdin: Path, stdout: Path) -> None:
    with open(stdin, "rb") as fin, open(stdout, "wb") as fout:
        subprocess.run([str(bin_dir / name), *opts], stdin=fin, stdout=fout, stderr=subprocess.DEVNULL, check=True)


def count(bin_dir: Path, corpus: Path, work: Path, seed: int) -> tuple[list[str], np.ndarray, Path]:
    """glove.c's counting pipeline on ``corpus``; returns (words, counts, shuffled record file)."""
    s = SETTINGS
    vocab = work / "vocab.txt"
    if not vocab.exists():
        _tool(bin_dir, "vocab_count", "-min-count", str(s["min_count"]), "-verbose", "0", stdin=corpus, stdout=vocab)
    cooc = work / "cooc.bin"
    if not cooc.exists():
        _tool(bin_dir, "cooccur", "-memory", "1.0", "-vocab-file", str(vocab), "-verbose", "0", "-window-size",
              str(s["window"]), stdin=corpus, stdout=cooc)
    shuffled = work / f"cooc.shuf.{seed}.bin"
    _tool(bin_dir, "shuffle", "-memory", "1.0", "-verbose", "0", "-seed", str(seed), stdin=cooc, stdout=shuffled)
    words, counts = [], []
    for line in vocab.read_text(encoding="utf-8").splitlines():
        w, c = line.split(" ")
        words.append(w)
        counts.append(int(c))
    return words, np.asarray(counts), shuffled


def train_glove_c(bin_dir: Path, words: list[str], vocab: Path, shuffled: Path, seed: int, work: Path) -> dict:
    s = SETTINGS
    out = work / f"vectors.glovec.{seed}"
    c0 = _cpu(resource.RUSAGE_CHILDREN)
    subprocess.run([str(bin_dir / "glove"), "-save-file", str(out), "-threads", "1", "-input-file", str(shuffled),
                    "-x-max", str(int(s["x_max"])), "-iter", str(s["iter"]), "-vector-size", str(s["dim"]),
                    "-binary", "0", "-vocab-file", str(vocab), "-verbose", "0", "-eta", str(s["eta"]),
                    "-alpha", str(s["alpha"]), "-seed", str(seed), "-model", "2", "-write-header", "0"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    cpu = _cpu(resource.RUSAGE_CHILDREN) - c0
    table = {}
    for line in Path(str(out) + ".txt").read_text(encoding="utf-8").splitlines():
        parts = line.split(" ")
        table[parts[0]] = np.asarray(parts[1:], dtype=np.float32)
    return {"vectors": np.stack([table[w] for w in words]), "train_cpu_s": cpu}


def train_lmlab(words: list[str], counts: np.ndarray, shuffled: Path, seed: int, work: Path, bias_lr) -> dict:
    from lmlab.models._compiled import load_kernels
    from lmlab.models.glove import COOC_DTYPE, CooccurrenceMatrix, GloVe, GloVeConfig

    s = SETTINGS
    path = work / f"cooc.lmlab.{seed}.bin"
    rec = np.fromfile(shuffled, dtype=np.dtype([("i", "<i4"), ("j", "<i4"), ("x", "<f8")]))
    out = np.empty(len(rec), dtype=COOC_DTYPE)
    out["i"], out["j"], out["x"] = rec["i"] - 1, rec["j"] - 1, rec["x"].astype(np.float32)
    out.tofile(path)
    nnz = len(out)
    del rec, out
    cfg = GloVeConfig(embed_dim=s["dim"], window=s["window"], epochs=s["iter"], lr=s["eta"], x_max=s["x_max"],
                      alpha=s["alpha"], threads=1, seed=seed, bias_lr=bias_lr)
    model = GloVe(cfg)
    load_kernels("_glove_kernels")  # compiled before the clock starts
    c0 = _cpu(resource.RUSAGE_SELF)
    model.train_cooccurrences(CooccurrenceMatrix(path, len(words), nnz), words, counts, log=lambda _: None)
    cpu = _cpu(resource.RUSAGE_SELF) - c0
    return {"vectors": model.vectors, "train_cpu_s": cpu, "bias_lr": cfg.bias_lr}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--glove-c-src", default=os.environ.get("LMLAB_GLOVE_C_SRC"),
                    help="a stanfordnlp/GloVe source tree (built here with make) [$LMLAB_GLOVE_C_SRC]")
    ap.add_argument("--tokens", default=str(ROOT / "runs" / "bench" / "gutenberg.tok.txt"),
                    help="benchmarks/word2vec.py's tokenized corpus (run it once to build it)")
    ap.add_argument("--max-words", type=int, default=5_060_000)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--bias-lr", type=float, default=1.0, help="lmlab's GloVe bias_lr (1.0: glove.c master)")
    ap.add_argument("--eval-dir", default=str(W.DEFAULT_EVAL))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "glove_same_input.json"))
    args = ap.parse_args(argv)
    if not args.glove_c_src or not (Path(args.glove_c_src) / "src" / "glove.c").is_file():
        print(f"error: no stanfordnlp/GloVe source tree at {args.glove_c_src!r}; give --glove-c-src DIR",
              file=sys.stderr)
        return 2
    tokens = Path(args.tokens)
    if args.max_words:
        tokens = tokens.with_name(f"{tokens.stem}.{args.max_words}{tokens.suffix}")
    if not tokens.exists():
        print(f"error: {tokens} does not exist; build it with: python benchmarks/word2vec.py --protocol 5m "
              "--algos cbow --impls lmlab --seeds 1 (or give --tokens/--max-words)", file=sys.stderr)
        return 2
    runs = []
    with tempfile.TemporaryDirectory(prefix="glove-same-") as tmp:
        work = Path(tmp)
        bin_dir = W.build_glove_c(Path(args.glove_c_src), work)
        for seed in [int(s) for s in args.seeds.split(",") if s]:
            words, counts, shuffled = count(bin_dir, tokens, work, seed)
            for impl in ("glove-c", "lmlab"):
                if impl == "glove-c":
                    r = train_glove_c(bin_dir, words, work / "vocab.txt", shuffled, seed, work)
                else:
                    r = train_lmlab(words, counts, shuffled, seed, work, args.bias_lr)
                quality = W._eval_lmlab(words, r.pop("vectors"), Path(args.eval_dir))
                runs.append({"impl": impl, "seed": seed, **r, **quality})
                print(json.dumps(runs[-1]), flush=True)
            shuffled.unlink()
    summary = {}
    for impl in ("glove-c", "lmlab"):
        mine = [r for r in runs if r["impl"] == impl]
        summary[impl] = {k: statistics.median(r[k] for r in mine) for k in ("ws353", "simlex", "analogy", "train_cpu_s")}
    summary["cpu_ratio_glove_c_over_lmlab"] = summary["glove-c"]["train_cpu_s"] / summary["lmlab"]["train_cpu_s"]
    record = {"benchmark": "glove_same_input", "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "corpus": str(tokens), "settings": SETTINGS, "bias_lr": args.bias_lr, "runs": runs, "median": summary}
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    for impl in ("glove-c", "lmlab"):
        m = summary[impl]
        print(f"{impl:8s} WS-353 {m['ws353']:.3f}  SimLex {m['simlex']:.3f}  analogy {m['analogy']:.3f}  "
              f"train {m['train_cpu_s']:.0f} CPU-s")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
