"""Seq2seq on Multi30k (test_2016_flickr): GRU + Bahdanau attention and the Transformer preset, side by side.

For each (preset, direction) it trains with ``lmlab.recipes.seq2seq.Seq2SeqRecipe`` for at most ``--budget-min``
minutes (``train.max_time_s``; the weights with the best validation loss are kept), translates the 1,000
test sentences with beam search and reports sacreBLEU (with its signature), lowercased BLEU, chrF, wall times
and tokens/s. Results go to ``benchmarks/results/seq2seq.json``.

Examples::

    python benchmarks/seq2seq.py --runs gru-bahdanau:de-en --budget-min 40 --threads 1
    python benchmarks/seq2seq.py --runs gru-bahdanau:de-en,transformer:de-en,transformer:en-fr --budget-min 60

``--quick`` runs the same three (preset, direction) pairs small (the defaults in ``QUICK``; options given on the
command line still win): 2,000 training pairs, 1 epoch, no time budget, one thread, the first 100 test sentences,
a BPE vocabulary of 4,000 (the word-level GRU's is smaller anyway), so losses and BLEU are deterministic. It writes benchmarks/results/seq2seq.quick.json::

    python benchmarks/seq2seq.py --quick

``--baseline`` runs only the one-minute baseline, IBM Model 1 word for word (benchmarks/_ibm1.py; seconds per
direction), and merges it into the results file under ``baseline``::

    python benchmarks/seq2seq.py --baseline --runs gru-bahdanau:de-en

Targets on 2 CPU cores (issue 5): GRU + Bahdanau >= 30 BLEU within 60 min; Transformer >= 35 within 90 min.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def machine_info(device: str) -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus_visible": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    try:
        info["load_average_at_start"] = list(os.getloadavg())
    except OSError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_one(preset: str, direction: str, args, epochs: int | None = None) -> dict:
    from lmlab.data.parallel import load_pairs, read_lines
    from lmlab.recipes.seq2seq import Seq2SeqRecipe

    src_lang, tgt_lang = direction.split("-")
    data = Path(args.data)
    overrides = [
        f"train.max_time_s={args.budget_min * 60:g}",
        f"train.epochs={epochs or args.epochs}",
        f"train.device={args.device}",
        f"train.num_threads={args.threads}",
        "train.progress=false",
        "train.tensorboard=false",
        *args.override,
    ]
    run = Seq2SeqRecipe.resolve(preset, overrides)
    train_pairs = load_pairs(data / f"train.{src_lang}.gz", data / f"train.{tgt_lang}.gz")
    if args.train_limit:
        train_pairs = train_pairs[: args.train_limit]
    val_pairs = load_pairs(data / f"val.{src_lang}.gz", data / f"val.{tgt_lang}.gz")
    out = Path(args.runs_dir) / f"{preset}-{direction}"
    print(f"== {preset} {direction}: {len(train_pairs)} training pairs, budget {args.budget_min:g} min", flush=True)
    started = time.perf_counter()
    recipe = Seq2SeqRecipe(run, src=train_pairs, val_src=val_pairs, log=lambda s: print(s, flush=True),
                           trained_on=f"Multi30k train {src_lang}->{tgt_lang}")
    result = recipe.train(out, overwrite=True)
    stats = recipe.stats
    train_wall = time.perf_counter() - started
    sources = read_lines(data / f"test_2016_flickr.{src_lang}.gz")
    refs = read_lines(data / f"test_2016_flickr.{tgt_lang}.gz")
    if args.eval_limit:
        sources, refs = sources[: args.eval_limit], refs[: args.eval_limit]
    pipe = Seq2SeqRecipe.load(out, device=args.device if args.device != "auto" else "cpu")
    report = pipe.evaluate(sources, refs, beam_size=args.beam, batch_size=args.decode_batch)
    hyps = report.pop("hypotheses")
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    val_losses = [m["val_loss"] for m in metrics if "val_loss" in m]
    row = {
        "preset": preset,
        "direction": direction,
        "train_pairs": stats["train_pairs"],
        "parameters": stats["num_parameters"],
        "steps": result.step,
        "epochs_completed": stats["epoch"],
        "train_time_s": round(result.train_time_s, 1),
        "train_wall_s": round(train_wall, 1),
        "train_tokens_per_s": round(stats["tokens_per_s"] or 0.0, 1),
        "best_val_loss": result.best,
        "val_losses": val_losses,
        "test_sentences": report["n"],
        "bleu": round(report["bleu"], 2),
        "bleu_signature": report["bleu_signature"],
        "bleu_lc": round(report["bleu_lc"], 2),
        "bleu_lc_signature": report["bleu_lc_signature"],
        "chrf": round(report["chrf"], 2),
        "chrf_signature": report["chrf_signature"],
        "beam_size": args.beam,
        "decode_s": round(report["seconds"], 1),
        "decode_tokens_per_s": round(report["tokens_per_s"], 1),
        "budget_min": args.budget_min,
        "overrides": overrides,
        "samples": [{"src": s, "hyp": h, "ref": r} for s, h, r in list(zip(sources, hyps, refs, strict=True))[:5]],
    }
    print(json.dumps({k: v for k, v in row.items() if k != "samples"}, ensure_ascii=False), flush=True)
    return row


def run_baseline(args, iterations: Sequence[int] = (5, 10, 20)) -> dict:
    """The one-minute baseline: IBM Model 1 word for word (benchmarks/_ibm1.py), the EM iteration count chosen
    by BLEU on the validation pairs, the test sentences scored with the same sacreBLEU / chrF calls as the rows
    (lmlab.metrics, which ``Translator.evaluate`` uses)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _ibm1 import Model1

    from lmlab.data.parallel import read_lines
    from lmlab.metrics import corpus_bleu, corpus_chrf

    data = Path(args.data)
    out: dict = {"method": ("IBM Model 1 (Brown et al. 1993), t(e | f) by EM from uniform on the training pairs "
                            "(lower-cased words and punctuation, a NULL source word); monotone word-for-word "
                            "decoding, each source word -> argmax_e t(e | f), unseen words copied, the first "
                            "letter capitalised; the iteration count chosen by validation BLEU"), "direction": {}}
    for direction in sorted({spec.split(":")[1] for spec in args.runs.split(",")}):
        src_lang, tgt_lang = direction.split("-")
        sources, targets = read_lines(data / f"train.{src_lang}.gz"), read_lines(data / f"train.{tgt_lang}.gz")
        if args.train_limit:
            sources, targets = sources[: args.train_limit], targets[: args.train_limit]
        val_src, val_ref = read_lines(data / f"val.{src_lang}.gz"), read_lines(data / f"val.{tgt_lang}.gz")
        test_src = read_lines(data / f"test_2016_flickr.{src_lang}.gz")
        test_ref = read_lines(data / f"test_2016_flickr.{tgt_lang}.gz")
        if args.eval_limit:
            test_src, test_ref = test_src[: args.eval_limit], test_ref[: args.eval_limit]
        tries = []
        for n in iterations:
            t0 = time.perf_counter()
            model = Model1().fit(sources, targets, iterations=n)
            fit_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            hyps = [model.translate(s) for s in test_src]
            decode_s = time.perf_counter() - t0
            val_bleu = corpus_bleu([model.translate(s) for s in val_src], val_ref)["score"]
            bleu, bleu_lc = corpus_bleu(hyps, test_ref), corpus_bleu(hyps, test_ref, lowercase=True)
            tries.append({"iterations": n, "val_bleu": round(val_bleu, 2), "bleu": round(bleu["score"], 2),
                          "bleu_signature": bleu["signature"], "bleu_lc": round(bleu_lc["score"], 2),
                          "chrf": round(corpus_chrf(hyps, test_ref)["score"], 2), "fit_s": round(fit_s, 1),
                          "decode_s": round(decode_s, 2), "train_pairs": len(sources), "test_sentences": len(hyps),
                          "samples": [{"src": s, "hyp": h, "ref": r}
                                      for s, h, r in list(zip(test_src, hyps, test_ref, strict=True))[:5]]})
            print(f"== IBM Model 1 {direction}, {n} EM iterations: val BLEU {val_bleu:.2f}, test BLEU "
                  f"{bleu['score']:.2f} (lowercased {bleu_lc['score']:.2f}), fit {fit_s:.1f} s", flush=True)
        best = max(tries, key=lambda r: r["val_bleu"])
        out["direction"][direction] = {"chosen": best, "tries": [{k: v for k, v in r.items() if k != "samples"}
                                                                 for r in tries]}
    return out


QUICK = {
    "budget_min": 0.0, "epochs": 1, "threads": 1, "train_limit": 2000, "eval_limit": 100,
    "override": ["data.vocab_size=4000"],  # 2,000 pairs hold too few BPE merges for the transformer's 8,000
    "runs_dir": str(REPO / "runs" / "bench-seq2seq-quick"), "out": str(REPO / "benchmarks" / "results" / "seq2seq.quick.json"),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="gru-bahdanau:de-en,transformer:de-en,transformer:en-fr",
                   help="comma-separated PRESET:SRC-TGT[:EPOCHS] (languages of Multi30k: en de fr cs); EPOCHS sets "
                        "the cosine schedule's horizon (choose what fits the budget)")
    p.add_argument("--budget-min", type=float, default=60.0, help="training time budget per run, in minutes")
    p.add_argument("--epochs", type=int, default=12, help="epochs for runs that do not give their own (the time budget may stop first)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default; 1 is faster on a busy machine)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, or auto")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--decode-batch", type=int, default=100)
    p.add_argument("--train-limit", type=int, default=0, help="use only the first N training pairs (smoke tests)")
    p.add_argument("--eval-limit", type=int, default=0, help="score only the first N test sentences (smoke tests)")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "multi30k" / "raw"))
    p.add_argument("--runs-dir", default=str(REPO / "runs" / "bench-seq2seq"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "seq2seq.json"))
    p.add_argument("--override", action="append", default=[], help="extra KEY=VALUE config override (repeatable)")
    p.add_argument("--quick", action="store_true", help="small sizes, no time budget (QUICK); writes seq2seq.quick.json")
    p.add_argument("--baseline", action="store_true", help="only the one-minute baseline (IBM Model 1 word for "
                   "word) for the directions of --runs, merged into --out under 'baseline' (the runs kept)")
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        p.set_defaults(**QUICK)
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    info = machine_info(args.device)
    rows = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.baseline:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _record import git_commit

        commit = git_commit()
        result = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {"benchmark": "seq2seq"}
        result["baseline"] = {"date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                              "command": " ".join([Path(sys.executable).name, *sys.argv]), "commit": commit,
                              "machine": info, **run_baseline(args)}
        result["baseline"]["wall_s"] = round(time.perf_counter() - started, 1)
        out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {out} (key 'baseline'; the runs kept as they are)")
        return 0

    def write(final: bool) -> None:
        result = {
            "benchmark": "seq2seq",
            "dataset": "Multi30k task 1, test_2016_flickr (1,000 sentences); train 29,000 pairs; val 1,014",
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "complete": final,
            "machine": info,
            "total_wall_s": round(time.perf_counter() - started, 1),
            "targets": {"gru-bahdanau:de-en": ">= 30 BLEU in <= 60 min on 2 CPU cores",
                        "transformer:de-en": ">= 35 BLEU in <= 90 min on 2 CPU cores"},
            "runs": rows,
        }
        out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    for spec in args.runs.split(","):
        parts = spec.strip().split(":")
        rows.append(run_one(parts[0], parts[1], args, int(parts[2]) if len(parts) > 2 else None))
        write(final=False)
    print()
    header = f"{'preset':<14} {'dir':<6} {'min':>5} {'steps':>6} {'tok/s':>7} {'BLEU':>6} {'BLEU-lc':>7} {'chrF':>6} {'decode s':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['preset']:<14} {r['direction']:<6} {r['train_time_s'] / 60:>5.1f} {r['steps']:>6} "
              f"{r['train_tokens_per_s']:>7.0f} {r['bleu']:>6.2f} {r['bleu_lc']:>7.2f} {r['chrf']:>6.2f} {r['decode_s']:>8.1f}")
    if rows:
        print(f"sacreBLEU signature: {rows[0]['bleu_signature']}")
    write(final=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
