"""Load test of ``lmlab serve``: a live server on 127.0.0.1, many concurrent clients, bounded in time.

    .venv/bin/python benchmarks/serve.py                 # ~6 min on 2 cores (plus ~3 min to build 2 models once)
    .venv/bin/python benchmarks/serve.py --duration 20   # shorter phases
    .venv/bin/python benchmarks/serve.py --quick         # 8 clients, 5 s phases (QUICK); writes serve.quick.json

Phases, against a server in a subprocess (``python -m lmlab serve``), first with one worker process, then
with two (``--workers``):

1. ``sequential``: one client, one request at a time (the latency floor on this machine; first config only).
2. ``64 clients``: 64 concurrent clients for ``--duration`` s, each looping over a random mix of
   ``/v1/classify`` (one sentence) and short ``/v1/completions`` (``max_tokens`` 16).
3. ``64 clients + slow stream``: the same, while one more client streams long completions
   (``max_tokens`` 200) and reads them slowly (``--slow-read-delay`` s per event). If the server let a slow
   reader block its event loop or hold on to the workers, the others' latency would climb; it should not.

Reports requests/s, p50/p99 latency (per endpoint too) and errors (any non-200 or transport error), prints
a table and writes benchmarks/results/serve.json. Models: a BiLSTM sentiment classifier (SST-2 slice) and a
character LSTM language model (Tiny Shakespeare slice), trained briefly here (cached in runs/bench-serve/).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gzip
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results" / "serve.json"


# --- models ------------------------------------------------------------------------------------------------


def build_models(root: Path, rebuild: bool) -> tuple[Path, Path, list[str]]:
    """A classifier and a character LM, trained briefly through lmlab's public training APIs."""
    from lmlab.config import TrainConfig
    from lmlab.data.lm import LMDataConfig
    from lmlab.models.rnn_lm import RNNLMConfig
    from lmlab.recipes.classify import ClassifyRecipe
    from lmlab.recipes.lm import LMRecipe, LMRunConfig

    root.mkdir(parents=True, exist_ok=True)
    with gzip.open(DATA / "sst2" / "train.tsv.gz", "rt", encoding="utf-8") as src:
        rows = src.read().splitlines()
    header, rows = rows[0], rows[1:]
    sentences = [r.split("\t")[0].strip() for r in rows[20_000:20_500]]  # held out from training
    clf = root / "sst-bilstm"
    if rebuild or not (clf / "model.safetensors").is_file():
        data = root / "sst2-train-8k.tsv"
        data.write_text("\n".join([header, *rows[:8000]]) + "\n", encoding="utf-8")
        run = ClassifyRecipe.resolve("bilstm", ["model.embed_dim=64", "model.hidden_dim=64", "train.epochs=1",
                                            "train.progress=false", "train.tensorboard=false", "data.min_freq=1"])
        ClassifyRecipe(run, data=str(data), log=lambda *_: None).train(clf, overwrite=True)
    lm = root / "shakespeare-char-lstm"
    if rebuild or not (lm / "model.safetensors").is_file():
        text = root / "tinyshakespeare-200k.txt"
        with gzip.open(DATA / "tinyshakespeare" / "input.txt.gz", "rt", encoding="utf-8") as src:
            text.write_text(src.read(200_000), encoding="utf-8")
        run = LMRunConfig(
            model=RNNLMConfig(cell="lstm", embed_dim=64, hidden_dim=256, num_layers=1),
            data=LMDataConfig(tokenizer="char", bptt=64, val_fraction=0.05),
            train=TrainConfig(max_steps=150, lr=3e-3, batch_size=32, progress=False, tensorboard=False,
                              device="cpu", grad_clip=1.0),
        )
        LMRecipe(run, data=text, log=lambda *_: None).train(lm, overwrite=True)
    return clf, lm, sentences


# --- the server ----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run_dirs: list[Path], port: int, extra: list[str]) -> tuple[subprocess.Popen, list[str]]:
    cmd = [sys.executable, "-m", "lmlab", "serve", *map(str, run_dirs), "--host", "127.0.0.1", "--port", str(port),
           "--log-level", "warning", *extra]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {proc.stdout.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc, cmd
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not come up within 120 s")


# --- load ----------------------------------------------------------------------------------------------------

PROMPTS = ["ROMEO:", "JULIET:\nO ", "First Citizen:\n", "KING RICHARD III:\nNow is the ", "To be, or not to be",
           "MENENIUS:\nWhat ", "Good morrow, ", "CORIOLANUS:\n"]


class Recorder:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = {"classify": [], "completion": []}
        self.errors: list[str] = []

    def summary(self, seconds: float) -> dict:
        every = sorted(self.latency["classify"] + self.latency["completion"])
        out = {"requests": len(every), "seconds": round(seconds, 2), "requests_per_s": round(len(every) / seconds, 2),
               "p50_ms": _ms(_pct(every, 50)), "p99_ms": _ms(_pct(every, 99)), "max_ms": _ms(every[-1] if every else None),
               "errors": len(self.errors), "error_samples": self.errors[:5]}
        for kind, values in self.latency.items():
            values = sorted(values)
            out[kind] = {"requests": len(values), "p50_ms": _ms(_pct(values, 50)), "p99_ms": _ms(_pct(values, 99))}
        return out


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    k = max(0, min(len(values) - 1, int(round(q / 100 * (len(values) - 1)))))
    return values[k]


def _ms(x: float | None) -> float | None:
    return None if x is None else round(1000 * x, 1)


async def one_request(http: httpx.AsyncClient, rng: random.Random, names: dict, sentences: list[str],
                      rec: Recorder, classify_share: float) -> None:
    if rng.random() < classify_share:
        kind, path = "classify", "/v1/classify"
        body = {"model": names["classifier"], "texts": [rng.choice(sentences)]}
    else:
        kind, path = "completion", "/v1/completions"
        body = {"model": names["generator"], "prompt": rng.choice(PROMPTS), "max_tokens": 16, "temperature": 0.8}
    t0 = time.perf_counter()
    try:
        reply = await http.post(path, json=body)
        ok = reply.status_code == 200 and (("results" in reply.json()) if kind == "classify"
                                            else bool(reply.json()["choices"]))
        if not ok:
            rec.errors.append(f"{kind}: HTTP {reply.status_code} {reply.text[:120]}")
            return
    except (httpx.HTTPError, ValueError, KeyError) as err:
        rec.errors.append(f"{kind}: {type(err).__name__}: {err}")
        return
    rec.latency[kind].append(time.perf_counter() - t0)


async def run_clients(url: str, clients: int, seconds: float, names: dict, sentences: list[str], seed: int,
                      classify_share: float) -> tuple[Recorder, float]:
    rec = Recorder()
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        start = time.perf_counter()
        deadline = start + seconds

        async def client(i: int) -> None:
            rng = random.Random(seed * 1000 + i)
            while time.perf_counter() < deadline:
                await one_request(http, rng, names, sentences, rec, classify_share)

        await asyncio.gather(*(client(i) for i in range(clients)))
        return rec, time.perf_counter() - start


async def slow_streamer(url: str, name: str, stop: asyncio.Event, read_delay: float, max_tokens: int) -> dict:
    """Stream long completions and read them slowly, over and over, until ``stop``."""
    stats = {"streams": 0, "events": 0, "done_markers": 0, "errors": [], "max_gap_ms": 0.0}
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        while not stop.is_set():
            body = {"model": name, "prompt": "ROMEO:", "max_tokens": max_tokens, "temperature": 0.8, "stream": True}
            try:
                async with http.stream("POST", "/v1/completions", json=body) as response:
                    if response.status_code != 200:
                        stats["errors"].append(f"HTTP {response.status_code}")
                        continue
                    stats["streams"] += 1
                    last = time.perf_counter()
                    async for line in response.aiter_lines():
                        if not line.startswith("data: "):
                            continue
                        now = time.perf_counter()
                        stats["max_gap_ms"] = max(stats["max_gap_ms"], round(1000 * (now - last), 1))
                        last = now
                        if line == "data: [DONE]":
                            stats["done_markers"] += 1
                        else:
                            stats["events"] += 1
                        await asyncio.sleep(read_delay)  # the slow reader
                        if stop.is_set():
                            break
            except httpx.HTTPError as err:
                stats["errors"].append(f"{type(err).__name__}: {err}")
    return stats


async def phase_with_slow_stream(url, clients, seconds, names, sentences, seed, classify_share, read_delay,
                                 max_tokens):
    stop = asyncio.Event()
    slow = asyncio.create_task(slow_streamer(url, names["generator"], stop, read_delay, max_tokens))
    await asyncio.sleep(1.0)  # let the slow stream get going first
    rec, seconds_run = await run_clients(url, clients, seconds, names, sentences, seed, classify_share)
    stop.set()
    return rec, seconds_run, await slow


async def sequential(url: str, seconds: float, names: dict, sentences: list[str], seed: int,
                     classify_share: float) -> tuple[Recorder, float]:
    return await run_clients(url, 1, seconds, names, sentences, seed, classify_share)


# --- main ------------------------------------------------------------------------------------------------------


def machine() -> dict:
    import torch

    from lmlab import __version__

    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "lmlab": __version__, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        info["load_avg_at_start"] = [round(x, 2) for x in os.getloadavg()]
        info["cpu_model"] = next((line.split(":", 1)[1].strip() for line in
                                  Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "")
    except OSError:
        pass
    return info


def table(rows: list[tuple[str, dict]]) -> str:
    lines = ["| phase | clients | requests | req/s | p50 ms | p99 ms | classify p50/p99 ms | completion p50/p99 ms | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['clients']} | {r['requests']} | {r['requests_per_s']:.1f} | {r['p50_ms']} | {r['p99_ms']} | "
            f"{r['classify']['p50_ms']} / {r['classify']['p99_ms']} | "
            f"{r['completion']['p50_ms']} / {r['completion']['p99_ms']} | {r['errors']} |")
    return "\n".join(lines)


def run_config(args, workers: int, clf: Path, lm: Path, names: dict, sentences: list[str],
               with_sequential: bool) -> dict:
    """Start a server with ``workers`` processes and run the phases against it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server, server_cmd = start_server([clf, lm], port, [*args.server_args.split(), "--workers", str(workers)])
    out: dict = {"workers": workers, "server_command": " ".join(["python", "-m", "lmlab", "serve", *server_cmd[4:]])}
    try:
        print(f"[{workers} worker(s)] server up at {url}; warming up", flush=True)
        asyncio.run(run_clients(url, 8, 4.0, names, sentences, args.seed + 99, args.classify_share))
        if with_sequential:
            print(f"[{workers} worker(s)] sequential, {args.sequential_duration:g} s", flush=True)
            rec, secs = asyncio.run(sequential(url, args.sequential_duration, names, sentences, args.seed,
                                               args.classify_share))
            out["sequential"] = {"clients": 1, **rec.summary(secs)}
        print(f"[{workers} worker(s)] {args.clients} clients, {args.duration:g} s", flush=True)
        rec, secs = asyncio.run(run_clients(url, args.clients, args.duration, names, sentences, args.seed + 1,
                                            args.classify_share))
        out["concurrent"] = {"clients": args.clients, **rec.summary(secs)}
        print(f"[{workers} worker(s)] {args.clients} clients + a slow streaming client, {args.duration:g} s", flush=True)
        rec, secs, slow = asyncio.run(phase_with_slow_stream(url, args.clients, args.duration, names, sentences,
                                                             args.seed + 2, args.classify_share,
                                                             args.slow_read_delay, args.slow_max_tokens))
        out["concurrent_with_slow_stream"] = {"clients": args.clients, **rec.summary(secs)}
        out["slow_stream"] = slow
        health = httpx.get(url + "/health", timeout=10).json()
        out["server_counters_at_end"] = {"note": "of the worker that answered /health" if workers > 1 else "",
                                         "generations": health["generations"], "batching": health.get("batching")}
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    conc, slowed = out["concurrent"], out["concurrent_with_slow_stream"]
    out["slow_stream_effect"] = {
        "p50_ratio": round(slowed["p50_ms"] / conc["p50_ms"], 3) if conc["p50_ms"] else None,
        "p99_ratio": round(slowed["p99_ms"] / conc["p99_ms"], 3) if conc["p99_ms"] else None,
        "requests_per_s_ratio": round(slowed["requests_per_s"] / conc["requests_per_s"], 3)
        if conc["requests_per_s"] else None}
    return out


QUICK = {"clients": 8, "duration": 5.0, "sequential_duration": 3.0, "slow_max_tokens": 50,
         "out": RESULTS.with_suffix(".quick.json")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per concurrent phase")
    parser.add_argument("--sequential-duration", type=float, default=10.0)
    parser.add_argument("--classify-share", type=float, default=0.5, help="fraction of requests that classify")
    parser.add_argument("--slow-read-delay", type=float, default=0.1, help="seconds the slow client waits per event")
    parser.add_argument("--slow-max-tokens", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="server process counts to compare")
    parser.add_argument("--server-args",
                        default="--max-concurrent-generations 4 --max-concurrent-inference 4 --torch-threads 1",
                        help="extra lmlab serve flags")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "bench-serve")
    parser.add_argument("--rebuild", action="store_true", help="retrain the two models")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="few clients, short phases (QUICK); writes serve.quick.json")
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        parser.set_defaults(**QUICK)
    args = parser.parse_args(argv)

    t_build = time.perf_counter()
    clf, lm, sentences = build_models(args.runs, args.rebuild)
    build_s = time.perf_counter() - t_build
    names = {"classifier": clf.name, "generator": lm.name}
    info = machine()
    t_run = time.perf_counter()
    configs = [run_config(args, w, clf, lm, names, sentences, with_sequential=(i == 0))
               for i, w in enumerate(args.workers)]

    rows = []
    for cfg in configs:
        tag = f"{cfg['workers']} worker{'s' if cfg['workers'] > 1 else ''}"
        if "sequential" in cfg:
            rows.append((f"{tag}: sequential (1 client)", cfg["sequential"]))
        rows.append((f"{tag}: {args.clients} clients", cfg["concurrent"]))
        rows.append((f"{tag}: {args.clients} clients + slow stream", cfg["concurrent_with_slow_stream"]))
    errors = sum(cfg[k]["errors"] for cfg in configs for k in ("sequential", "concurrent",
                                                                "concurrent_with_slow_stream") if k in cfg)
    errors += sum(len(cfg["slow_stream"]["errors"]) for cfg in configs)
    result = {
        "benchmark": "serve",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "benchmarks/serve.py", *(argv or sys.argv[1:])]),
        "machine": info,
        "models": {"classifier": {"run_dir": _rel(clf), "what": "BiLSTM 64/64, SST-2 first 8k sentences, 1 epoch"},
                   "generator": {"run_dir": _rel(lm),
                                 "what": "char LSTM 1x256, Tiny Shakespeare first 200k chars, 150 steps"}},
        "requests": {"classify": "1 held-out SST-2 sentence", "completion": "max_tokens 16, temperature 0.8",
                     "classify_share": args.classify_share,
                     "slow_stream": f"max_tokens {args.slow_max_tokens}, read {args.slow_read_delay:g} s per event"},
        "model_build_s": round(build_s, 1),
        "run_s": round(time.perf_counter() - t_run, 1),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "configs": configs,
        "total_errors": errors,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print()
    print(table(rows))
    print()
    for cfg in configs:
        slow, eff = cfg["slow_stream"], cfg["slow_stream_effect"]
        print(f"{cfg['workers']} worker(s): slow streaming client read {slow['streams']} stream(s), {slow['events']} "
              f"events, errors {len(slow['errors'])}, longest gap {slow['max_gap_ms']} ms; with it connected the "
              f"others' p50 x{eff['p50_ratio']}, p99 x{eff['p99_ratio']}, req/s x{eff['requests_per_s_ratio']}")
    print(f"machine: {info.get('cpu_model', '')} x{info['cpu_count']}, load avg at start {info.get('load_avg_at_start')}"
          f", {errors} errors in total")
    print(f"wrote {_rel(args.out)}")
    return 0 if errors == 0 else 1


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.resolve().is_relative_to(REPO) else str(path)


if __name__ == "__main__":
    sys.exit(main())
