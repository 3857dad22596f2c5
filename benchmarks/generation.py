"""Generation streaming: time per token at 1k, 8k and 32k tokens of output, before and after linear streaming.

    .venv/bin/python benchmarks/generation.py              # ~2 min on 2 cores (one thread)
    .venv/bin/python benchmarks/generation.py --tokens 8000 --windows 1000 8000   # quicker

Issue 21 (6): the streaming loop re-decoded the whole output for every new token, so the cost per token grew
with the output (16k tokens took 41 s). Now :class:`lmlab.generation.TextStream` decodes each token with one
token of context. For a tiny character LSTM LM and a tiny character GPT (trained a few steps here, in a temp
dir, through ``lmlab lm train`` / ``lmlab gpt train``), this measures:

* ``stream ms/token``: the real thing, ``lmlab.load(run).stream(prompt, max_new_tokens=N, stop=[...])``
  (model step + sampling + text layer), as the median time between model steps over the ``--window`` tokens
  that end at each mark (1k, 8k, 32k; the JSON has the mean too). It must be flat: the same at 32k as at 1k,
  within noise.
* ``text layer us/token``, new and old, on the very token ids that generation produced: ``TextStream.push``
  against the old loop (``decode(all ids)`` + a stop-string search over the whole text, per token; reproduced
  below from the old ``pipelines.py``), timed token by token over the same windows (medians). The old one grows linearly per token
  (quadratic in total); ``old stream ms/token`` = measured stream time - new text layer + old text layer.

Writes benchmarks/results/generation.json and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gzip
import io
import json
import platform
import statistics
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "generation.json"
STOP = "THE END."  # a stop string is always checked (the server passes one); this one never occurs here
PROMPT = "ROMEO:"

TRAIN = ["train.max_steps=5", "train.epochs=1", "train.progress=false", "train.tensorboard=false",
         "train.log_every=100", "train.eval_every=0", "train.device=cpu", "train.warmup_steps=0",
         "train.num_threads=1", "train.save_every=0"]
MODELS = {  # name -> (CLI family, preset, overrides): tiny on purpose; the text layer is what is measured
    "char-lstm": ("lm", "char-shakespeare", ["model.embed_dim=16", "model.hidden_dim=64", "data.bptt=32",
                                             "train.batch_size=16"]),
    "char-gpt": ("gpt", "char", ["model.block_size=64", "model.embed_dim=32", "model.num_layers=1",
                                 "model.num_heads=2", "train.batch_size=8"]),
}


def build_run(name: str, data: Path, root: Path) -> Path:
    from lmlab.cli import main

    family, preset, overrides = MODELS[name]
    out = root / name
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main([family, "train", "--data", str(data), "--preset", preset, "--out", str(out), *TRAIN, *overrides])
    if rc != 0:
        raise SystemExit(f"training {name} failed (exit {rc})")
    return out


def old_stream_text(decode, ids: list[int], stop: list[str], marks: list[int], window: int) -> dict[int, float]:
    """The old loop of pipelines.Generator.stream (before linear streaming), text side only: per token, decode
    every id so far, search the whole text for a stop string, emit what is safe. Timed over the ``window``
    tokens ending at each mark (running it from token 0 would take minutes at 32k: that is the point)."""
    from lmlab.generation import find_stop

    hold = max((len(s) for s in stop), default=1) - 1
    per_token = {}
    for mark in marks:
        emitted = len(decode(ids[: mark - window]))
        times = []
        for k in range(mark - window + 1, mark + 1):
            start = time.perf_counter()
            text = decode(ids[:k])
            if find_stop(text, stop) >= 0:
                raise RuntimeError("the stop string occurred")
            safe = len(text) - hold
            if text.endswith("\ufffd"):
                safe = min(safe, len(text) - 1)
            if safe > emitted:
                _piece = text[emitted:safe]
                emitted = safe
            times.append(time.perf_counter() - start)
        per_token[mark] = times
    return per_token


def new_stream_text(decode, ids: list[int], stop: list[str], marks: list[int], window: int) -> dict[int, float]:
    """TextStream.push over every token (cheap), timed over the same windows."""
    from lmlab.generation import TextStream

    stream = TextStream(decode, stop)
    times = []
    for token in ids:
        start = time.perf_counter()
        stream.push(token)
        times.append(time.perf_counter() - start)
    return {m: times[m - window : m] for m in marks}


def measure(name: str, run: Path, tokens: int, marks: list[int], window: int, seed: int) -> dict:
    """Stream ``tokens`` tokens from the run's pipeline, timing every model step; then the text layers."""
    from lmlab import load

    pipe = load(run)
    model = pipe.model
    stamps: list[float] = []
    ids: list[int] = []
    for attr in ("step", "step_cached"):  # the step function the pipeline calls, timed and recorded
        inner = getattr(model, attr, None)
        if inner is None:
            continue

        def timed(input_ids, state, _inner=inner):
            if stamps:  # every call after the prompt's feeds the token generated last
                ids.append(int(input_ids[0, -1]))
            stamps.append(time.perf_counter())
            return _inner(input_ids, state)

        object.__setattr__(model, attr, timed)
    start = time.perf_counter()
    final = {}
    # one token more, so that the step after token N (which feeds it to the model) is timed too
    for event in pipe.stream(PROMPT, max_new_tokens=tokens + 1, temperature=1.0, stop=[STOP], seed=seed):
        if "finish_reason" in event:
            final = event
    total = time.perf_counter() - start
    if final.get("completion_tokens") != tokens + 1 or len(ids) != tokens:
        raise RuntimeError(f"{name}: generated {final.get('completion_tokens')} tokens, not {tokens + 1}: {final}")
    # stamps[k] is the model step fed the k-th generated token (stamps[0]: the prompt's), so stamps[m] -
    # stamps[m - window] covers sampling, streaming and stepping tokens m - window + 1 .. m
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]  # gaps[k - 1]: token k
    stream_times = {m: gaps[m - window : m] for m in marks}
    decode = pipe.codec.decode
    new_text = new_stream_text(decode, ids, [STOP], marks, window)
    old_text = old_stream_text(decode, ids, [STOP], marks, window)
    rows = []
    for m in marks:  # medians over the window (robust to other processes on a shared machine); means too
        stream, new, old = (statistics.median(t[m]) for t in (stream_times, new_text, old_text))
        rows.append({
            "tokens": m,
            "stream_ms_per_token": 1e3 * stream,
            "stream_ms_per_token_mean": 1e3 * statistics.fmean(stream_times[m]),
            "text_new_us_per_token": 1e6 * new,
            "text_old_us_per_token": 1e6 * old,
            "old_stream_ms_per_token": 1e3 * (stream - new + old),
        })
    first, last = rows[0]["stream_ms_per_token"], rows[-1]["stream_ms_per_token"]
    return {"model": name, "model_type": pipe.info().get("model_type"), "parameters": pipe.info().get("parameters"),
            "total_tokens": tokens, "total_s": total, "window": window, "rows": rows,
            "stream_last_over_first": last / first}


def print_table(results: list[dict]) -> None:
    head = (f"{'model':10s} {'tokens':>7s} {'stream ms/tok':>14s} {'text new us/tok':>16s} "
            f"{'text old us/tok':>16s} {'old stream ms/tok':>18s}")
    print(head)
    print("-" * len(head))
    for res in results:
        for row in res["rows"]:
            print(f"{res['model']:10s} {row['tokens']:>7,d} {row['stream_ms_per_token']:>14.3f} "
                  f"{row['text_new_us_per_token']:>16.1f} {row['text_old_us_per_token']:>16.1f} "
                  f"{row['old_stream_ms_per_token']:>18.3f}")
        print(f"{res['model']:10s} {res['total_tokens']:,d} tokens streamed in {res['total_s']:.1f} s; "
              f"ms/token at the last mark / at the first: {res['stream_last_over_first']:.2f}")


QUICK = {"tokens": 2_000, "windows": [500, 1_000, 2_000], "window": 200, "out": RESULTS.with_suffix(".quick.json")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=32_000, help="tokens to generate per model")
    parser.add_argument("--windows", type=int, nargs="+", default=[1_000, 8_000, 32_000],
                        help="output lengths at which time per token is measured")
    parser.add_argument("--window", type=int, default=500, help="tokens ending at each mark that are timed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="2,000 tokens, marks 500/1k/2k (QUICK); writes generation.quick.json")
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        parser.set_defaults(**QUICK)
    args = parser.parse_args(argv)
    marks = sorted(args.windows)
    if marks[-1] > args.tokens or marks[0] < args.window:
        parser.error("every --windows mark must lie between --window and --tokens")

    import torch

    torch.set_num_threads(1)
    text = resources.files("lmlab").joinpath("assets", "tinyshakespeare.txt.gz").read_bytes()
    results = []
    with tempfile.TemporaryDirectory(prefix="lmlab-bench-generation-") as tmp:
        data = Path(tmp) / "shakespeare.txt"
        data.write_text(gzip.decompress(text).decode("utf-8")[:100_000], encoding="utf-8")
        for name in args.models:
            run = build_run(name, data, Path(tmp))
            print(f"{name}: streaming {args.tokens:,} tokens ...", file=sys.stderr)
            results.append(measure(name, run, args.tokens, marks, args.window, args.seed))
    print_table(results)
    from lmlab import __version__

    payload = {"benchmark": "generation", "date": dt.date.today().isoformat(), "lmlab": __version__,
               "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
               "processor": platform.processor(), "threads": 1, "stop": [STOP], "prompt": PROMPT, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
