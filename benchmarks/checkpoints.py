"""Pretrained checkpoints: lmlab's imported GPT-2 / Llama-family models vs ``transformers``, side by side.

Two models with random weights, built here with ``transformers`` and saved with ``save_pretrained`` (nothing is
downloaded): GPT-2 small's shapes (124M: 12 layers x 768, vocab 50,257) and a 0.5B Llama-family shape (Qwen2-0.5B:
24 layers x 896, 14 heads / 2 key-value heads, SwiGLU 4,864, vocab 151,936, tied). For each, ``lmlab gpt import``
turns the folder into a run, then each side runs in its own fresh process (so that peak memory is its own):

* load time (``lmlab.load(run)`` vs ``AutoModelForCausalLM.from_pretrained``; import time reported apart),
* peak resident memory of the process (ru_maxrss),
* prompt processing tokens/s (one forward pass over a 128-token prompt, the KV cache filled),
* decoding tokens/s of greedy generation of 256 new tokens (time after the prompt pass),

at batch 1 and 8, on 1 and 2 threads; the generated ids of both sides are compared (identical greedy tokens).
Targets (the issue's): decoding >= 1.5x transformers' tokens/s at batch 1, peak memory <= transformers'.

Load time alone flatters whoever defers work: ``from_pretrained`` maps the safetensors file and its reads land
in the first forward pass (so does ``lmlab.load`` of a run imported since the weights are stored in the layout
decoding uses). ``--load`` therefore measures, per shape, **load** and **load + first token** (load, then one
forward pass over an 8-token prompt and the argmax of its last logits), lmlab and transformers alternating (the
order swapped every round), each in a fresh one-thread process, best of ``--load-rounds``, with the page cache
**warm** (the files read just before) and **cold** (the files evicted with posix_fadvise(DONTNEED) just before;
the disk below may still cache them). lmlab's load is ``lmlab.load`` (the generation pipeline: model *and*
tokenizer); transformers' is ``AutoModelForCausalLM.from_pretrained`` (the model only). It writes the ``load``
section of the results file, keeping its grid rows.

Cells: every one-thread cell first, the two-thread ones last; each row records the load average before and after it.

``--bf16`` measures **bf16 checkpoints** (the same random shapes saved in bfloat16, as Llama-family models ship):
lmlab imports them with ``--dtype bfloat16`` (weights kept in bf16, float32 arithmetic: ``lmlab.models.bf16``) and
transformers loads the same folder with ``dtype=torch.float32`` (the upcast file: the same float32 products), one
thread, the two sides alternating (order swapped every round), ``--bf16-rounds`` fresh processes each, identical
greedy tokens checked in every round; transformers with ``dtype=torch.bfloat16`` (bf16 arithmetic, other
numbers) is a side row of ``--tf-bf16-rounds`` processes. It writes the ``bf16`` section of the results file.

Usage:
    python benchmarks/checkpoints.py            # full shapes; writes benchmarks/results/checkpoints.json
    python benchmarks/checkpoints.py --load     # load / load + first token only (``load`` section of that file)
    python benchmarks/checkpoints.py --bf16     # bf16 checkpoints, 1 thread (``bf16`` section of that file)
    python benchmarks/checkpoints.py --quick    # tiny shapes, 32 new tokens (~1 min); checkpoints.quick.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

SHAPES = {
    "gpt2-124M": dict(arch="gpt2", vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12),
    "llama-0.5B": dict(arch="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                       num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                       tie_word_embeddings=True),
}
QUICK_SHAPES = {
    "gpt2-tiny": dict(arch="gpt2", vocab_size=2000, n_positions=512, n_embd=64, n_layer=2, n_head=4),
    "llama-tiny": dict(arch="qwen2", vocab_size=3000, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                       tie_word_embeddings=True),
}


def build_checkpoint(shape: dict, folder: Path) -> None:
    """A random model of ``shape`` saved with save_pretrained, with a byte-level tokenizer covering its ids
    (in bfloat16 when ``shape`` has ``"dtype": "bfloat16"``)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

    shape = dict(shape)
    arch = shape.pop("arch")
    dtype = shape.pop("dtype", "float32")
    torch.manual_seed(0)
    if arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(**shape, bos_token_id=0, eos_token_id=0))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**shape, bos_token_id=0, eos_token_id=0))
    model.to(getattr(torch, dtype)).save_pretrained(folder)
    _write_tokenizer(folder, shape["vocab_size"])


def _write_tokenizer(folder: Path, vocab_size: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<|endoftext|>": 0}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    assert len(vocab) <= vocab_size
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"}))


# ------------------------------------------------------------------------------------------- one side, one process
def worker(args: argparse.Namespace) -> None:
    """Load one side, measure, print one JSON line (run in a fresh process)."""
    import torch

    torch.set_num_threads(args.threads)
    # imports are not load time: bring in each side's modules first
    if args.side == "lmlab":  # the modules lmlab.load brings in (the recipe, the pipeline, the tokenizer library)
        import tokenizers  # noqa: F401

        import lmlab
        import lmlab.pipelines.gpt  # noqa: F401
        import lmlab.recipes.gpt  # noqa: F401
        import lmlab.trainer  # noqa: F401
    else:
        import importlib

        from transformers import AutoConfig, AutoModelForCausalLM

        kind = AutoConfig.from_pretrained(args.path).model_type
        importlib.import_module(f"transformers.models.{kind}.modeling_{kind}")
    started = time.perf_counter()
    if args.side == "lmlab":
        model = lmlab.load(args.path).model
    else:
        model = AutoModelForCausalLM.from_pretrained(args.path, dtype=getattr(torch, args.dtype)).eval()
    load_s = time.perf_counter() - started
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(1, vocab, (args.batch, args.prompt_tokens), generator=g)
    out: dict = {"load_s": load_s}
    with torch.inference_mode():
        if args.new_tokens == 0:  # --load: load + the first token of a short prompt, nothing else
            g = torch.Generator().manual_seed(0)
            prompt = torch.randint(1, vocab, (1, args.prompt_tokens), generator=g)
            t = time.perf_counter()
            if args.side == "lmlab":
                logits = model.step_cached(prompt, None)[0]  # (B, V): the last position's
            else:
                logits = model(prompt, use_cache=True, logits_to_keep=1).logits[:, -1]  # (B, V)
            first = int(logits[0].argmax())
            out.update(first_token_s=time.perf_counter() - t, load_first_token_s=time.perf_counter() - started,
                       first_token=first, peak_rss_mb=peak_rss_mb())
            print(json.dumps(out))
            return
        # prompt processing: one pass over the prompt, filling the cache (best of 2; the first one, right after
        # loading, also pays for the weights' pages a lazy load has not read yet: first_token_s)
        times = []
        for _ in range(2):
            t = time.perf_counter()
            if args.side == "lmlab":
                model.step_cached(prompt, None)  # the last position's logits only, as generate does
            else:
                model(prompt, use_cache=True, logits_to_keep=1)
            times.append(time.perf_counter() - t)
        prefill_s = min(times)
        t = time.perf_counter()
        if args.side == "lmlab":
            from lmlab.generation import SamplingConfig

            ids = model.generate(prompt, SamplingConfig(max_new_tokens=args.new_tokens, temperature=0))
        else:
            gen = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=args.new_tokens,
                                 min_new_tokens=args.new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
            ids = gen[:, args.prompt_tokens:].tolist()
        total_s = time.perf_counter() - t
    decode_s = max(total_s - prefill_s, 1e-9)
    out.update(
        first_token_s=times[0], load_first_token_s=load_s + times[0],
        prompt_tokens_per_s=args.batch * args.prompt_tokens / prefill_s,
        decode_tokens_per_s=args.batch * (args.new_tokens - 1) / decode_s,
        generate_s=total_s,
        peak_rss_mb=peak_rss_mb(),
        ids=ids,
    )
    print(json.dumps(out))


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it does not inherit the parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_side(side: str, path: Path, threads: int, batch: int, prompt_tokens: int, new_tokens: int,
             dtype: str = "float32") -> dict:
    cmd = [sys.executable, __file__, "--worker", side, "--path", str(path), "--threads", str(threads),
           "--batch", str(batch), "--prompt-tokens", str(prompt_tokens), "--new-tokens", str(new_tokens),
           "--dtype", dtype]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def set_page_cache(folder: Path, warm: bool) -> None:
    """Read every file of ``folder`` (warm) or evict them from the page cache (cold: posix_fadvise DONTNEED,
    which needs no privileges; pages another process maps stay)."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if warm:
            with open(path, "rb") as fh:
                while fh.read(1 << 24):
                    pass
        else:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def load_rows(folders: dict, rounds: int, prompt_tokens: int) -> list[dict]:
    """Load and load + first token, lmlab vs transformers alternating, warm and cold page cache (see the module)."""
    rows = []
    for name, (hf_dir, run_dir) in folders.items():
        for cache in ("warm", "cold"):
            samples: dict[str, list[dict]] = {"lmlab": [], "transformers": []}
            for r in range(rounds):
                for side in (("lmlab", "transformers") if r % 2 == 0 else ("transformers", "lmlab")):
                    folder = run_dir if side == "lmlab" else hf_dir
                    set_page_cache(folder, warm=cache == "warm")
                    samples[side].append(run_side(side, folder, 1, 1, prompt_tokens, 0))
            same = len({s["first_token"] for side in samples.values() for s in side}) == 1
            row = {"model": name, "page_cache": cache, "rounds": rounds, "prompt_tokens": prompt_tokens,
                   "threads": 1, "same_first_token": same, "load_average": [round(x, 2) for x in os.getloadavg()]}
            for side, got in samples.items():
                row[side] = {key: min(s[key] for s in got) for key in ("load_s", "load_first_token_s")}
                row[side]["peak_rss_mb"] = max(s["peak_rss_mb"] for s in got)
                row[side]["all_load_s"] = [round(s["load_s"], 4) for s in got]
                row[side]["all_load_first_token_s"] = [round(s["load_first_token_s"], 4) for s in got]
            rows.append(row)
            ours, ref = row["lmlab"], row["transformers"]
            print(f"{name:11s} {cache} cache, best of {rounds}: load {ours['load_s']:.3f} vs {ref['load_s']:.3f} s, "
                  f"load + first token {ours['load_first_token_s']:.3f} vs {ref['load_first_token_s']:.3f} s, "
                  f"same first token {same}", flush=True)
    return rows


def bf16_rows(folders: dict, batches: list[int], prompt_tokens: int, new_tokens: int, cell_tokens: dict,
              rounds: int, tf_bf16_rounds: int, on_row=None, threads: int = 1) -> list[dict]:
    """bf16 checkpoints, ``threads`` threads: lmlab (bf16 weights, float32 arithmetic) vs transformers float32 on
    the same folder, alternating; transformers bf16 as a side row (see the module). ``on_row(row)`` after every
    row."""
    import statistics

    rows = []
    for name, (hf_dir, run_dir) in folders.items():
        for batch in batches:
            n_new = cell_tokens.get((name, batch, threads), new_tokens)
            load_before = os.getloadavg()
            samples: dict[str, list[dict]] = {"lmlab": [], "transformers": [], "transformers_bf16": []}
            identical = []
            for r in range(rounds):
                got = {}
                for side in (("lmlab", "transformers") if r % 2 == 0 else ("transformers", "lmlab")):
                    got[side] = run_side(side, run_dir if side == "lmlab" else hf_dir, threads, batch, prompt_tokens, n_new)
                identical.append(got["lmlab"].pop("ids") == got["transformers"].pop("ids"))
                for side, value in got.items():
                    samples[side].append(value)
            for _ in range(tf_bf16_rounds):
                value = run_side("transformers", hf_dir, threads, batch, prompt_tokens, n_new, dtype="bfloat16")
                value.pop("ids")
                samples["transformers_bf16"].append(value)
            row = {"model": name, "checkpoint": "bf16", "threads": threads, "batch": batch, "prompt_tokens": prompt_tokens,
                   "new_tokens": n_new, "rounds": rounds, "identical_tokens": all(identical)}
            for side, got in samples.items():
                if not got:
                    continue
                decode = [s["decode_tokens_per_s"] for s in got]
                row[side] = {
                    "dtype": {"lmlab": "bf16 weights, float32 compute", "transformers": "float32",
                              "transformers_bf16": "bfloat16"}[side],
                    "decode_tokens_per_s": max(decode), "decode_tokens_per_s_median": statistics.median(decode),
                    "all_decode_tokens_per_s": [round(x, 3) for x in decode],
                    "prompt_tokens_per_s": max(s["prompt_tokens_per_s"] for s in got),
                    "load_s": min(s["load_s"] for s in got),
                    "peak_rss_mb": max(s["peak_rss_mb"] for s in got),
                }
            ours, ref = row["lmlab"], row["transformers"]
            row["decode_speedup"] = ours["decode_tokens_per_s"] / ref["decode_tokens_per_s"]
            row["decode_speedup_median"] = ours["decode_tokens_per_s_median"] / ref["decode_tokens_per_s_median"]
            row["memory_ratio"] = ours["peak_rss_mb"] / ref["peak_rss_mb"]
            row["load_average"] = [round(x, 2) for x in (*load_before, *os.getloadavg())]
            rows.append(row)
            if on_row is not None:
                on_row(row)
            side_row = row.get("transformers_bf16")
            print(f"{name:11s} bf16 checkpoint batch {batch}, {threads} thread(s): decode {ours['decode_tokens_per_s']:7.2f} vs "
                  f"{ref['decode_tokens_per_s']:7.2f} tok/s ({row['decode_speedup']:.2f}x best, "
                  f"{row['decode_speedup_median']:.2f}x median of {rounds})"
                  + (f", transformers bf16 {side_row['decode_tokens_per_s']:.2f}" if side_row else "")
                  + f", prompt {ours['prompt_tokens_per_s']:.0f} vs {ref['prompt_tokens_per_s']:.0f} tok/s, peak "
                  f"{ours['peak_rss_mb']:.0f} vs {ref['peak_rss_mb']:.0f} MB, identical {row['identical_tokens']}, "
                  f"load average {row['load_average'][0]:.1f}", flush=True)
    return rows


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch
    import transformers

    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "load_average": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny shapes and 32 new tokens")
    parser.add_argument("--models", default=None, help="comma-separated subset of the shapes")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=None, help="default 256 (quick: 32)")
    parser.add_argument("--cell-new-tokens", default="",
                        help="fewer new tokens for some cells, e.g. 'llama-0.5B:8=64,gpt2-124M:1:2=64' "
                        "(MODEL:BATCH[:THREADS]=N, comma-separated)")
    parser.add_argument("--load", action="store_true",
                        help="only load / load + first token (warm and cold page cache), into the 'load' section")
    parser.add_argument("--load-rounds", type=int, default=5, help="--load: best of this many processes per side")
    parser.add_argument("--bf16", action="store_true",
                        help="bf16 checkpoints (--bf16-threads): lmlab --dtype bfloat16 vs transformers float32 ('bf16' section)")
    parser.add_argument("--bf16-threads", default="1", help="--bf16: thread counts, e.g. 1,2")
    parser.add_argument("--bf16-rounds", type=int, default=3, help="--bf16: processes per side, alternating")
    parser.add_argument("--tf-bf16-rounds", type=int, default=1, help="--bf16: transformers dtype=bfloat16 processes")
    parser.add_argument("--runs", default=None, help=argparse.SUPPRESS)  # --load: 'name=HF_DIR:RUN_DIR,...'
    parser.add_argument("--out", default=None)
    parser.add_argument("--worker", choices=["lmlab", "transformers"], help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--build", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:  # in its own process, so that the parent stays small
        build_checkpoint(json.loads(args.build), Path(args.path))
        return
    if args.worker:
        args.side, args.threads = args.worker, int(args.threads)
        worker(args)
        return
    shapes = QUICK_SHAPES if args.quick else SHAPES
    if args.models:
        shapes = {k: shapes[k] for k in args.models.split(",")}
    new_tokens = args.new_tokens or (32 if args.quick else 256)
    prompt_tokens = 16 if args.quick else args.prompt_tokens
    threads = [int(t) for t in args.threads.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    from lmlab.hf import import_hf

    cell_tokens = {}
    for item in filter(None, args.cell_new_tokens.split(",")):  # MODEL:BATCH[:THREADS]=N
        cell, n = item.split("=")
        model, batch, *n_threads = cell.split(":")
        for t in n_threads or threads:
            cell_tokens[(model, int(batch), int(t))] = int(n)
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / (
        "checkpoints.quick.json" if args.quick else "checkpoints.json")
    if args.load and args.runs:  # folders imported already (name=HF_DIR:RUN_DIR,...)
        folders = {}
        for item in args.runs.split(","):
            name, dirs = item.split("=", 1)
            hf, run = dirs.split(":")
            folders[name] = (Path(hf), Path(run))
        write_load_section(out, args, load_rows(folders, args.load_rounds, 8))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="lmlab-bench-ckpt-") as tmp:
        folders, import_times = {}, {}
        dtype = "bfloat16" if args.bf16 else "float32"
        for name, shape in shapes.items():
            hf_dir, run_dir = Path(tmp) / f"{name}-hf", Path(tmp) / f"{name}-run"
            t = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--build", json.dumps({**shape, "dtype": dtype}), "--path",
                            str(hf_dir)], check=True, capture_output=True)
            print(f"{name}: built and saved ({dtype}) in {time.perf_counter() - t:.1f} s", flush=True)
            t = time.perf_counter()
            import_hf(hf_dir, run_dir, dtype=dtype, log=lambda m: None)
            import_times[name] = time.perf_counter() - t
            folders[name] = (hf_dir, run_dir)
        import gc

        gc.collect()
        if args.load:
            write_load_section(out, args, load_rows(folders, args.load_rounds, 8), import_times)
            return
        if args.bf16:  # rows replace those of the same model, batch and threads in the file's bf16 section, one at a time
            def save(row: dict) -> None:
                previous = json.loads(out.read_text()).get("bf16", {}) if out.is_file() else {}
                cell = (row["model"], row["batch"], row["threads"])
                kept = [r for r in previous.get("rows", []) if (r["model"], r["batch"], r.get("threads", 1)) != cell]
                write_section(out, args, "bf16", {
                    **{k: v for k, v in previous.items() if k not in ("date", "machine")},
                    "what": "bf16 checkpoints (the random shapes saved in bfloat16): lmlab imported with "
                            "--dtype bfloat16 (bf16 weights, float32 compute) vs transformers from_pretrained("
                            "dtype=float32) on the same folder, alternating fresh processes; best and median of "
                            "rounds; transformers dtype=bfloat16 a side row where measured",
                    "import_s": {**previous.get("import_s", {}), **import_times}, "rows": [*kept, row]})

            for n_threads in [int(t) for t in args.bf16_threads.split(",")]:
                bf16_rows(folders, batches, prompt_tokens, new_tokens, cell_tokens, args.bf16_rounds,
                          args.tf_bf16_rounds, on_row=save, threads=n_threads)
            return
        # every one-thread cell first, the two-thread ones last (on a shared machine they suffer most)
        for n_threads in threads:
            for name in shapes:
                hf_dir, run_dir = folders[name]
                for batch in batches:
                    n_new = cell_tokens.get((name, batch, n_threads), new_tokens)
                    load_before = os.getloadavg()
                    ours = run_side("lmlab", run_dir, n_threads, batch, prompt_tokens, n_new)
                    ref = run_side("transformers", hf_dir, n_threads, batch, prompt_tokens, n_new)
                    row = {
                        "model": name, "threads": n_threads, "batch": batch, "prompt_tokens": prompt_tokens,
                        "new_tokens": n_new, "import_s": import_times[name],
                        "identical_tokens": ours.pop("ids") == ref.pop("ids"),
                        "lmlab": ours, "transformers": ref,
                        "decode_speedup": ours["decode_tokens_per_s"] / ref["decode_tokens_per_s"],
                        "memory_ratio": ours["peak_rss_mb"] / ref["peak_rss_mb"],
                        "load_average": [round(x, 2) for x in (*load_before, *os.getloadavg())],
                    }
                    rows.append(row)
                    print(f"{name:11s} threads {n_threads} batch {batch}: decode {ours['decode_tokens_per_s']:8.1f} vs "
                          f"{ref['decode_tokens_per_s']:8.1f} tok/s ({row['decode_speedup']:.2f}x), prompt "
                          f"{ours['prompt_tokens_per_s']:8.0f} vs {ref['prompt_tokens_per_s']:8.0f} tok/s, load "
                          f"{ours['load_s']:.2f} vs {ref['load_s']:.2f} s, peak {ours['peak_rss_mb']:.0f} vs "
                          f"{ref['peak_rss_mb']:.0f} MB, identical {row['identical_tokens']}, "
                          f"load average {row['load_average'][0]:.1f}", flush=True)
                    if args.out:  # a partial file after every cell (a long grid on a shared machine)
                        Path(args.out + ".partial").write_text(json.dumps(rows, indent=2) + "\n")
    result = {
        "benchmark": "checkpoints", "quick": args.quick, "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(), "targets": {"decode_speedup_batch1": 1.5, "memory_ratio": 1.0}, "rows": rows,
    }
    if out.is_file():  # keep the sections of the last --load and --bf16 runs
        previous = json.loads(out.read_text())
        for section in ("load", "bf16"):
            if section in previous:
                result[section] = previous[section]
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


def write_section(out: Path, args: argparse.Namespace, name: str, section: dict) -> None:
    """Replace the section ``name`` of the results file ``out`` (everything else in it is kept)."""
    result = json.loads(out.read_text()) if out.is_file() else {"benchmark": "checkpoints", "quick": args.quick}
    result[name] = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine_info(), **section}
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote the {name} section of {out}")


def write_load_section(out: Path, args: argparse.Namespace, rows: list[dict], import_times: dict | None = None) -> None:
    """Replace the ``load`` section of the results file ``out`` (its grid rows are kept)."""
    result = json.loads(out.read_text()) if out.is_file() else {"benchmark": "checkpoints", "quick": args.quick}
    result["load"] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine_info(),
        "what": "best of N fresh one-thread processes per side, lmlab and transformers alternating; load = "
                "lmlab.load (model + tokenizer) vs from_pretrained (model); first token = one forward pass over an "
                "8-token prompt + argmax; warm: files read just before, cold: evicted with posix_fadvise(DONTNEED)",
        **({"import_s": import_times} if import_times else {}),
        "rows": rows,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote the load section of {out}")


if __name__ == "__main__":
    main()
