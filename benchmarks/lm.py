"""Recurrent language models, side by side (issue 4).

Parts (choose with ``--parts``; each job can run pinned to its own CPU cores, in parallel, with ``--parallel``):

* ``a`` - throughput (tokens/s) of lmlab's Trainer + RNNLM against a bare hand-written ``nn.LSTM`` loop of the
  same configuration (the classic small PTB model on the word corpus below; target: overhead <= 5%), and our
  reference cells (written from the equations) against the fused kernels (the ratio).
* ``b`` - word level on a PTB-style corpus built from ../shared/data/gutenberg-lahiri (lowercase, numbers -> N,
  no punctuation, one sentence per line, 10k vocabulary with <unk>, ~0.9M / 80k / 80k words split by book; the
  book ids of each split are recorded in benchmarks/data/gutenberg-ptb-split.json and the text is rebuilt
  from them). Trains each of ``--b-presets`` for the same wall time (``--b-minutes``) and reports validation
  and test perplexity (target: ptb-recommended >= 15% below ptb-small). ``--b-cpu-minutes`` sets an equal
  budget of CPU time instead (a probe measures CPU seconds per step; ``train.max_steps`` alone bounds the run),
  which stays comparable on a shared core: ``--parts b --b-presets ptb-recommended --b-cpu-minutes 12 --threads 1``.
* ``b-gpu`` - the same presets trained to their full epoch count on a GPU (when one is there).
* ``baseline`` - the one-minute baseline of parts b and c: interpolated Kneser-Ney word 1-5-grams and character
  1-10-grams (benchmarks/_ngram.py, NumPy, seconds each), counted on each part's training text with the codec
  the presets fit, scored on exactly the tokens the LMs are scored on. Run alone, it is merged into the results
  file under ``baseline`` (with its own date, command and commit) and leaves the other parts' numbers as they are:
  ``nice python benchmarks/lm.py --parts baseline``.
* ``c`` - character level on tiny Shakespeare (first 90% train / last 10% validation, as nanoGPT): the
  validation loss (nats/char) against wall time for ``--c-presets`` (target: <= 1.60 within 20 min on 2 cores).

Examples::

    python benchmarks/lm.py --parts a,b,c --b-minutes 10 --c-minutes 20 --threads 2
    python benchmarks/lm.py --parts b,c --parallel --cores-per-job 2     # every job on its own 2 cores
    python benchmarks/lm.py --build-corpus                                # just (re)build the word corpus
    python benchmarks/lm.py --quick      # parts a, b, c small and step-bounded (QUICK below), a few minutes

``--quick`` sets the defaults in ``QUICK`` (options given on the command line still win): (a) 20 steps, one
repetition; (b) both presets for 30 steps each, (c) the char preset for 60 steps, no time budgets, one thread,
so the losses are deterministic. It writes benchmarks/results/lm.quick.json.

Results: benchmarks/results/lm.json (machine info, command, date, every number).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gzip
import hashlib
import json
import math
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

SHARED = Path(os.environ.get("LMLAB_SHARED_DATA", REPO.parent / "shared" / "data"))
SPLIT_FILE = REPO / "benchmarks" / "data" / "gutenberg-ptb-split.json"
RESULTS = REPO / "benchmarks" / "results" / "lm.json"
WORK = REPO / "runs" / "bench" / "lm"
TARGET_WORDS = {"train": 900_000, "valid": 80_000, "test": 80_000}


# ============================================================================ the PTB-style Gutenberg corpus
_ABBREVIATIONS = {"mr", "mrs", "dr", "st", "jr", "sr", "messrs", "mme", "mlle", "prof", "rev", "capt", "col", "gen", "lt", "vs", "etc", "no"}
_BOUNDARY = re.compile(r"[.!?]+[\"'’”)\]]*\s+")
_TOKEN = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*|\d[\d,.:/]*[^\W_]*")
_CLITIC = re.compile(r"^(.+?)('s|'re|'ve|'ll|'d|'m)$")


def ptb_tokens(sentence: str) -> list[str]:
    """Lower-cased words of one sentence the way the Mikolov PTB files look: no punctuation, numbers -> N,
    clitics split off ("don't" -> "do n't", "john's" -> "john 's")."""
    out: list[str] = []
    for tok in _TOKEN.findall(sentence.replace("--", " ").replace("_", " ")):
        tok = tok.replace("’", "'")
        if tok[0].isdigit():
            out.append("N")
            continue
        if tok.endswith("n't") and len(tok) > 3:
            out += [tok[:-3], "n't"]
            continue
        m = _CLITIC.match(tok)
        if m:
            out += [m.group(1), m.group(2)]
            continue
        out.append(tok)
    return out


def ptb_sentences(text: str) -> list[list[str]]:
    """Paragraphs (blank-line separated) -> sentences (split after . ! ? unless after an abbreviation)."""
    sentences = []
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(para.split()).lower()
        if not para:
            continue
        start = 0
        for m in _BOUNDARY.finditer(para + " "):
            before = para[start : m.start()].rsplit(" ", 1)[-1]
            if before in _ABBREVIATIONS or (len(before) == 1 and before.isalpha()):
                continue
            tokens = ptb_tokens(para[start : m.end()])
            if tokens:
                sentences.append(tokens)
            start = m.end()
        tokens = ptb_tokens(para[start:])
        if tokens:
            sentences.append(tokens)
    return sentences


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _select_books(manifest: list[dict], seed: int = 2014) -> dict[str, list[str]]:
    """Shuffle the books (seeded) and fill test, valid, then train greedily up to their word targets."""
    order = list(manifest)
    random.Random(seed).shuffle(order)
    splits: dict[str, list[str]] = {"test": [], "valid": [], "train": []}
    used: set[str] = set()
    for name in ("test", "valid", "train"):
        target, have = TARGET_WORDS[name], 0
        for book in order:
            if book["id"] in used:
                continue
            words = int(book["whitespace_words"])
            if have + words <= target * 1.02:
                splits[name].append(book["id"])
                used.add(book["id"])
                have += words
            if have >= target * 0.98:
                break
    return splits


def build_corpus(out_dir: Path = WORK / "gutenberg-ptb", log=print) -> Path:
    """(Re)build train/valid/test.txt from the recorded split (creating the split record on first use)."""
    source = SHARED / "gutenberg-lahiri" / "books.jsonl.gz"
    manifest_path = SHARED / "gutenberg-lahiri" / "manifest.tsv"
    if SPLIT_FILE.is_file():
        record = json.loads(SPLIT_FILE.read_text())
        splits = record["splits"]
    else:
        lines = manifest_path.read_text(encoding="utf-8").splitlines()
        header = lines[0].split("\t")
        manifest = [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]
        splits = _select_books(manifest)
        record = None
    if (out_dir / "train.txt").is_file() and record and all(
        (out_dir / f"{s}.txt").is_file() and _sha256(out_dir / f"{s}.txt") == record["files"][s]["sha256"]
        for s in splits
    ):
        return out_dir
    wanted = {book: name for name, ids in splits.items() for book in ids}
    sentences: dict[str, list[list[str]]] = {name: [] for name in splits}
    by_id: dict[str, list[list[str]]] = {}
    with gzip.open(source, "rt", encoding="utf-8") as f:
        for line in f:
            book = json.loads(line)
            if book["id"] in wanted:
                by_id[book["id"]] = ptb_sentences(book["text"])
    for name, ids in splits.items():
        for book in ids:  # in the recorded order
            sentences[name] += by_id[book]
    counts = Counter(tok for sent in sentences["train"] for tok in sent)
    vocab = {tok for tok, _ in counts.most_common(9_999)}  # + <unk> = 10,000 words, as PTB
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, sents in sentences.items():
        text = "".join(" " + " ".join(t if t in vocab else "<unk>" for t in s) + " \n" for s in sents)
        (out_dir / f"{name}.txt").write_text(text, encoding="utf-8")
        words = sum(len(s) for s in sents)
        unk = sum(1 for s in sents for t in s if t not in vocab)
        files[name] = {
            "books": len(splits[name]),
            "sentences": len(sents),
            "words": words,
            "tokens_with_eos": words + len(sents),
            "unk_rate": round(unk / max(words, 1), 4),
            "sha256": _sha256(out_dir / f"{name}.txt"),
        }
        log(f"corpus {name}: {len(splits[name])} books, {len(sents):,} sentences, {words:,} words, <unk> {unk / max(words, 1):.1%}")
    if record is None:
        record = {
            "what": "PTB-style word corpus built from ../shared/data/gutenberg-lahiri, split by book",
            "source": {"file": "gutenberg-lahiri/books.jsonl.gz", "sha256": _sha256(source)},
            "recipe": (
                "books chosen by a seeded shuffle (random.Random(2014)) of manifest.tsv, filling test, valid, then "
                "train up to 80k/80k/900k whitespace words; each book: paragraphs (blank-line separated) -> "
                "sentences split after . ! ? (not after common abbreviations or initials) -> lowercase, "
                "punctuation dropped, numbers -> N, clitics split (n't 's 're 've 'll 'd 'm); vocabulary = the "
                "9,999 most frequent training words + <unk>; one sentence per line, PTB's spacing; see "
                "benchmarks/lm.py:build_corpus"
            ),
            "vocabulary_words": len(vocab) + 1,
            "splits": splits,
            "files": files,
        }
        SPLIT_FILE.parent.mkdir(parents=True, exist_ok=True)
        SPLIT_FILE.write_text(json.dumps(record, indent=1) + "\n")
    else:
        for name in splits:
            if files[name]["sha256"] != record["files"][name]["sha256"]:
                log(f"warning: rebuilt {name}.txt differs from the recorded sha256 (different Python/regex version?)")
    return out_dir


# ==================================================================================================== utilities
def machine_info(device: str = "cpu") -> dict:
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
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


class EvalTimes:
    """A trainer callback recording (wall seconds, metrics) at every evaluation."""

    def __init__(self) -> None:
        self.points: list[dict] = []
        self.epochs_done = 0

    def on_fit_start(self, trainer) -> None: ...

    def on_step_end(self, trainer, logs) -> None: ...

    def on_epoch_end(self, trainer) -> None: ...

    def on_fit_end(self, trainer) -> None:
        self.epochs_done = trainer.state.epoch

    def on_eval_end(self, trainer, metrics) -> None:
        self.points.append({"time_s": round(trainer.state.train_time_s, 1), "step": trainer.state.step,
                            **{k: round(v, 4) for k, v in metrics.items()}})


# ======================================================================================== part a: throughput
def part_a(args) -> dict:
    import torch
    from torch import nn

    from lmlab.config import TrainConfig
    from lmlab.data.lm import BPTTBatches, LMCodec, read_text
    from lmlab.models.rnn_lm import RNNLM, RNNLMConfig
    from lmlab.recipes.lm import LMRecipe
    from lmlab.trainer import Trainer

    corpus = build_corpus()
    run = LMRecipe.resolve("ptb-small")
    text = read_text(corpus / "train.txt", run.data)
    codec = LMCodec.fit(text, run.data)
    ids, _ = codec.encode_text(text)
    B, T, V = run.train.batch_size, run.data.bptt, codec.vocab_size
    steps = args.a_steps
    data = BPTTBatches(ids[: (steps + 5) * B * T + B], B, T, "train")

    from lmlab.callbacks import StepTimes

    def lmlab_run() -> tuple[float, float]:
        """(tokens/s over the whole ``fit()`` call, median seconds per step)."""
        torch.manual_seed(0)
        cfg = RNNLMConfig(vocab_size=V, embed_dim=200, hidden_dim=200, num_layers=2, init_range=0.1)
        model = RNNLM(cfg)
        tc = TrainConfig(optimizer="sgd", lr=1.0, grad_clip=5.0, epochs=1, max_steps=steps, batch_size=B,
                         progress=False, tensorboard=False, log_every=steps, device="cpu")
        stamps = StepTimes()
        trainer = Trainer(tc, model, data, None, callbacks=[stamps])
        start = time.perf_counter()
        trainer.fit()
        step_s = statistics.median(b - a for a, b in zip(stamps.times, stamps.times[1:], strict=False))
        return steps * B * T / (time.perf_counter() - start), step_s

    class BareLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(V, 200)
            self.lstm = nn.LSTM(200, 200, num_layers=2, batch_first=True)
            self.out = nn.Linear(200, V)
            for p in self.parameters():
                nn.init.uniform_(p, -0.1, 0.1)

        def forward(self, x, h):
            y, h = self.lstm(self.emb(x), h)
            return self.out(y), h

    def bare_run() -> tuple[float, float]:
        torch.manual_seed(0)
        model = BareLM()
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        h = None
        times = []
        start = time.perf_counter()
        for i, batch in enumerate(data):
            if i == steps:
                break
            logits, h = model(batch.inputs, h)
            h = tuple(s.detach() for s in h)
            loss = nn.functional.cross_entropy(logits.reshape(-1, V), batch.targets.reshape(-1))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            times.append(time.perf_counter())
        step_s = statistics.median(b - a for a, b in zip(times, times[1:], strict=False))
        return steps * B * T / (time.perf_counter() - start), step_s

    lmlab_runs, bare_runs, lmlab_steps, bare_steps = [], [], [], []
    for rep in range(args.a_reps):  # interleaved, so drifting machine load hits both alike
        tps, step_s = bare_run()
        bare_runs.append(tps)
        bare_steps.append(step_s)
        tps, step_s = lmlab_run()
        lmlab_runs.append(tps)
        lmlab_steps.append(step_s)
        print(f"[a] rep {rep}: bare {bare_runs[-1]:,.0f} tok/s ({bare_steps[-1] * 1e3:.1f} ms/step), "
              f"lmlab {lmlab_runs[-1]:,.0f} tok/s ({lmlab_steps[-1] * 1e3:.1f} ms/step)", flush=True)

    # reference cells vs fused kernels, forward + backward: the recurrent stack alone (2x200, batch 20 x 35
    # steps) and the whole language model (where the 10k-way softmax dilutes the difference)
    from lmlab.models.rnn import build_recurrent

    ratios = {}
    x = next(iter(data))
    for cell in ("lstm", "gru", "rnn_tanh"):
        for scope in ("stack", "language model"):
            torch.manual_seed(0)
            model = RNNLM(RNNLMConfig(cell=cell, vocab_size=V, embed_dim=200, hidden_dim=200, num_layers=2))
            stack = build_recurrent(cell, 200, 200, num_layers=2)
            xs = torch.randn(B, T, 200)
            speed: dict[str, list[float]] = {}
            for impl in ("fused", "reference", "fused", "reference"):
                model.rnn.impl = stack.impl = impl
                n = 3 if scope == "language model" else 10
                start = time.perf_counter()
                for _ in range(n):
                    if scope == "stack":
                        out, _ = stack(xs)
                        out.sum().backward()
                    else:
                        model.carried_state = None
                        model.loss(x)["loss"].backward()
                speed.setdefault(impl, []).append(n * B * T / (time.perf_counter() - start))
            fused, ref = max(speed["fused"]), max(speed["reference"])
            ratios[f"{cell} ({scope})"] = {"fused_tokens_per_s": round(fused), "reference_tokens_per_s": round(ref),
                                           "fused_over_reference": round(fused / ref, 2)}
            print(f"[a] {cell} {scope}: fused {fused:,.0f} tok/s, reference {ref:,.0f} tok/s, ratio {fused / ref:.2f}", flush=True)
    med_l, med_b = statistics.median(lmlab_runs), statistics.median(bare_runs)
    return {
        "config": f"2x200 LSTM, vocab {V}, batch {B}, bptt {T}, SGD lr 1, clip 5, {steps} steps per run, "
                  f"{args.a_reps} interleaved runs each",
        "lmlab_tokens_per_s": [round(v) for v in lmlab_runs],
        "bare_tokens_per_s": [round(v) for v in bare_runs],
        "median_lmlab": round(med_l),
        "median_bare": round(med_b),
        "overhead": round(1 - med_l / med_b, 4),
        "median_step_ms_lmlab": round(statistics.median(lmlab_steps) * 1e3, 2),
        "median_step_ms_bare": round(statistics.median(bare_steps) * 1e3, 2),
        # per-step cost in the steady state: each run's median step time, then the median over runs; the
        # end-to-end "overhead" above also counts fit()'s one-time set-up (optimizer, callbacks, final hooks)
        "overhead_per_step": round(statistics.median(lmlab_steps) / statistics.median(bare_steps) - 1, 4),
        "target_overhead_max": 0.05,
        "reference_vs_fused": ratios,
    }


# ============================================================================================ GPU check
def gpu_check() -> dict:
    """On CUDA: cuDNN (fused) vs our cells in float32 (TF32 off), and a short bf16-autocast training run."""
    import torch

    from lmlab.config import TrainConfig
    from lmlab.data.lm import BPTTBatches
    from lmlab.generation import SamplingConfig
    from lmlab.models.rnn import build_recurrent
    from lmlab.models.rnn_lm import RNNLM, RNNLMConfig
    from lmlab.trainer import Trainer

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    out: dict = {"device": "cuda", "gpu": torch.cuda.get_device_name(0), "max_abs_diff": {}}
    for cell in ("lstm", "gru", "rnn_tanh", "rnn_relu"):
        torch.manual_seed(0)
        stack = build_recurrent(cell, 32, 64, num_layers=2, bidirectional=True).cuda()
        x = torch.randn(4, 20, 32, device="cuda")
        res = {}
        for impl in ("fused", "reference"):
            stack.impl = impl
            stack.zero_grad()
            y, _ = stack(x)
            (y * torch.linspace(-1, 1, y.numel(), device="cuda").view_as(y)).sum().backward()
            res[impl] = (y.detach(), [p.grad.clone() for p in stack.parameters()])
        diff_out = (res["fused"][0] - res["reference"][0]).abs().max().item()
        diff_grad = max((a - b).abs().max().item() for a, b in zip(res["fused"][1], res["reference"][1], strict=True))
        out["max_abs_diff"][cell] = {"output": diff_out, "grad": diff_grad}
        print(f"[gpu-check] {cell}: max |fused - reference| output {diff_out:.2e}, grad {diff_grad:.2e}", flush=True)
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    model = RNNLM(RNNLMConfig(vocab_size=50, embed_dim=32, hidden_dim=64, num_layers=2, dropout=0.1, tie_weights=True))
    data = BPTTBatches(torch.randint(0, 50, (20_000,)), 16, 32, "train")
    tc = TrainConfig(optimizer="adamw", lr=3e-3, max_steps=30, batch_size=16, progress=False, tensorboard=False,
                     device="cuda", precision="auto")
    logs = Trainer(tc, model, data, None).fit()
    out["bf16_autocast_train_loss_after_30_steps"] = logs.get("loss")
    ids = model.generate([[1, 2, 3]], SamplingConfig(max_new_tokens=10, seed=0))
    out["generated_on_cuda"] = ids[0]
    print(f"[gpu-check] bf16 training loss {logs.get('loss')}, generated {ids[0]}", flush=True)
    return out


# ================================================================================ part baseline: n-grams
def _commit() -> str | None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _record import git_commit

    return git_commit()


def _bptt_targets(ids, batch_size: int, bptt: int, name: str):
    """The stream positions the RNN LM's evaluation scores: :class:`BPTTBatches` cuts the stream into
    ``batch_size`` rows of L tokens (the remainder dropped); every token of a row but its first is a target."""
    import numpy as np

    from lmlab.data.lm import BPTTBatches

    batches = BPTTBatches(ids, batch_size, bptt, name)
    rows, length = batches.data.shape
    targets = (np.arange(rows)[:, None] * length + np.arange(1, length)[None, :]).ravel()
    if len(targets) != batches.num_tokens or not np.array_equal(ids.numpy()[targets], batches.data[:, 1:].numpy().ravel()):
        raise RuntimeError(f"{name}: the n-gram targets are not the tokens the LM evaluation scores")
    return targets


def part_baseline(args) -> dict:
    """The one-minute baseline of parts b and c: interpolated Kneser-Ney n-grams (benchmarks/_ngram.py) counted
    on each part's training text with the lmlab codec the presets fit on it, and scored on exactly the tokens
    the LM is scored on (same tokenizer, vocabulary, <unk> and <eos> handling, same BPTT rows)."""
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _ngram import score_orders

    from lmlab.data.lm import LMCodec, read_text
    from lmlab.recipes.lm import LMRecipe

    out: dict = {"method": (
        "interpolated Kneser-Ney (Chen & Goodman 1998; one discount per order, D = n1 / (n1 + 2 n2); unigram "
        "interpolated with the uniform 1/V over the LM's vocabulary), counted on the training text, every target "
        "predicted from the N-1 tokens before it in the scored text (never from the training text); mkn = "
        "modified Kneser-Ney (three discounts)")}
    # (b) word level: the codec `lmlab lm train --preset ptb-*` fits on train.txt; test.txt / valid.txt read as
    # `lmlab lm eval` reads them (each line's words then <eos>; words outside the vocabulary -> <unk>)
    corpus = build_corpus()
    run = LMRecipe.resolve("ptb-recommended")
    if LMRecipe.resolve("ptb-small").data != run.data:
        raise RuntimeError("ptb-small and ptb-recommended read the corpus differently; score each separately")
    t0 = time.perf_counter()
    train_text = read_text(corpus / "train.txt", run.data)
    codec = LMCodec.fit(train_text, run.data)
    train_ids, _ = codec.encode_text(train_text)
    word: dict = {"vocab_size": codec.vocab_size, "train_tokens": int(train_ids.numel()),
                  "tokenize_s": round(time.perf_counter() - t0, 1),
                  "matches": (f"data.tokenizer={run.data.tokenizer}, vocabulary of train.txt ({codec.vocab_size:,} "
                              "ids incl. specials), <unk> and <eos> tokens as the LM; the targets of "
                              f"`lmlab lm eval` (eval_batch_size {run.data.eval_batch_size} rows, bptt "
                              f"{run.data.bptt}: every token but each row's first)")}
    for split in ("test", "valid"):
        text = read_text(corpus / f"{split}.txt", run.data)
        ids, unk = codec.encode_text(text)
        targets = _bptt_targets(ids, run.data.eval_batch_size, run.data.bptt, split)
        stream = np.concatenate([train_ids.numpy(), ids.numpy()])
        n = len(train_ids)
        print(f"[baseline] word level, {split}: {len(targets):,} scored tokens", flush=True)
        rows = score_orders(stream, n, n + targets, codec.vocab_size, range(1, 6), first=n, unit="word",
                            log=lambda s: print(f"[baseline]{s}", flush=True))
        rows.update(score_orders(stream, n, n + targets, codec.vocab_size, (3, 4, 5), first=n, modified=True,
                                 unit="word", log=lambda s: print(f"[baseline]{s}", flush=True)))
        word[split] = {"scored_tokens": int(len(targets)), "oov_tokens": int(unk), **rows}
    out["word"] = word
    # (c) characters: tiny Shakespeare as part c splits it, the codec char-shakespeare fits on the first 90%
    train_path, val_path = shakespeare_split()
    crun = LMRecipe.resolve("char-shakespeare")
    text = read_text(train_path, crun.data)
    ccodec = LMCodec.fit(text, crun.data)
    ctrain, _ = ccodec.encode_text(text)
    vtext = read_text(val_path, crun.data)
    vids, _ = ccodec.encode_text(vtext)
    targets = _bptt_targets(vids, crun.data.eval_batch_size, crun.data.bptt, "validation")
    stream = np.concatenate([ctrain.numpy(), vids.numpy()])
    n = len(ctrain)
    print(f"[baseline] characters: {len(targets):,} scored", flush=True)
    rows = score_orders(stream, n, n + targets, ccodec.vocab_size, range(1, 11), first=n, unit="char",
                        log=lambda s: print(f"[baseline]{s}", flush=True))
    out["char"] = {"vocab_size": ccodec.vocab_size, "train_tokens": n, "scored_tokens": int(len(targets)),
                   "matches": (f"data.tokenizer=char, the codec of train.txt, the validation targets of part c "
                               f"(eval_batch_size {crun.data.eval_batch_size} rows, bptt {crun.data.bptt})"),
                   **rows}
    return out


# ====================================================================================== parts b / c: training
class CPUStepTimes:
    """A trainer callback recording this process's CPU time (``time.process_time``) at the end of every step: on a
    shared core the wall clock also counts the other processes' time, the CPU clock counts only ours."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_fit_start(self, trainer) -> None: ...

    def on_step_end(self, trainer, logs) -> None:
        self.times.append(time.process_time())

    def on_epoch_end(self, trainer) -> None: ...

    def on_fit_end(self, trainer) -> None: ...

    def on_eval_end(self, trainer, metrics) -> None: ...


def train_one(preset: str, train: Path, val: Path, test: Path | None, minutes: float | None, device: str,
              overrides: list[str], eval_points: int = 0, cpu_minutes: float | None = None) -> dict:
    """Train ``preset`` for a budget: ``minutes`` of wall time (``train.max_time_s``, the schedule fitted to the
    steps a probe says fit in it), or ``cpu_minutes`` of this process's CPU time (comparable on a shared core:
    the probe measures CPU seconds per step and ``train.max_steps`` alone bounds the run, ``max_time_s=0``)."""
    import torch

    from lmlab.callbacks import StepTimes
    from lmlab.recipes.lm import LMRecipe

    resolve_run_config = LMRecipe.resolve
    extra = ["train.progress=false", "train.tensorboard=false", f"train.device={device}", *overrides]
    if cpu_minutes:
        minutes = cpu_minutes
        extra.append("train.max_time_s=0")
    elif minutes:
        extra.append(f"train.max_time_s={minutes * 60:.0f}")
    run = resolve_run_config(preset, extra)
    tag = preset + ("" if not overrides else "+" + ",".join(overrides))
    budget = f"-{cpu_minutes:g}cpumin" if cpu_minutes else ""  # its own folder: never a wall-time run's
    out = WORK / "runs" / re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{tag}-{device}{budget}")
    probe_info = None
    fit = minutes and run.train.schedule in ("cosine", "linear")
    if (eval_points or fit) and minutes:
        # time a few steps of the same configuration first: to evaluate about eval_points times within the
        # budget, and (for a cosine/linear schedule) to end the schedule when the budget ends, so the preset is
        # annealed rather than cut off mid-schedule. The classic "small" preset keeps its epoch-based step decay.
        stamps = CPUStepTimes() if cpu_minutes else StepTimes()
        probe = resolve_run_config(preset, extra + ["train.max_steps=14", "train.max_time_s=0", "train.eval_every=0"])
        with tempfile.TemporaryDirectory() as probe_dir:
            LMRecipe(probe, data=train, log=lambda s: None).train(Path(probe_dir) / "probe", callbacks=[stamps])
        per_step = statistics.median(b - a for a, b in zip(stamps.times[4:], stamps.times[5:], strict=False))
        probe_info = {("median_step_cpu_s" if cpu_minutes else "median_step_s"): round(per_step, 4)}
        if eval_points:
            run.train.eval_every = max(20, int(minutes * 60 / per_step / eval_points))
        if fit:
            # 7% of the budget is left for the evaluations; train.max_time_s still stops a wall-time run at the
            # budget (a CPU-time run is bounded by these steps alone)
            run.train.max_steps = max(50, int(minutes * 60 * 0.93 / per_step))
            probe_info["planned_steps"] = run.train.max_steps
        print(f"[{preset}] probe: {probe_info}", flush=True)
    timer = EvalTimes()
    start, cpu_start = time.perf_counter(), time.process_time()
    recipe = LMRecipe(run, data=train, val=val, log=lambda s: print(f"[{tag}] {s}", flush=True))
    result = recipe.train(out, overwrite=True, callbacks=[timer])
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    row = {
        "preset": preset,
        "overrides": overrides,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "steps": result.step,
        "epochs_done": timer.epochs_done,
        "train_time_s": round(result.train_time_s, 1),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),  # this process's CPU time for the whole training call (evaluations included)
        **({"budget_cpu_minutes": cpu_minutes} if cpu_minutes else {}),
        "tokens_seen": result.step * run.train.batch_size * run.data.bptt,
        "best_val_loss": round(result.best, 4) if result.best is not None else float("nan"),
        "schedule_probe": probe_info,
        "val_curve": timer.points,
    }
    best = min((p for p in timer.points if "val_loss" in p), key=lambda p: p["val_loss"], default=None)
    if best:
        row["best_val_ppl"] = round(math.exp(best["val_loss"]), 2)
        if "val_nats_per_char" in best:
            row["best_val_nats_per_char"] = best["val_nats_per_char"]
            row["best_val_bpc"] = best["val_bpc"]
    if test is not None:
        t = LMRecipe.evaluate(out, test, device=device if device != "auto" else "cpu")
        row["test_loss"] = round(t["loss"], 4)
        row["test_ppl"] = round(t["ppl"], 2)
        row["test_tokens"] = int(t["tokens"])
    print(f"[{tag}] done: {json.dumps({k: v for k, v in row.items() if k != 'val_curve'})}", flush=True)
    return row


def shakespeare_split() -> tuple[Path, Path]:
    src = SHARED / "tinyshakespeare" / "input.txt.gz"
    if not src.is_file():
        src = REPO / "src" / "lmlab" / "assets" / "tinyshakespeare.txt.gz"
    with gzip.open(src, "rt", encoding="utf-8") as f:
        text = f.read()
    cut = int(len(text) * 0.9)
    folder = WORK / "tinyshakespeare"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text(text[:cut], encoding="utf-8")
    (folder / "val.txt").write_text(text[cut:], encoding="utf-8")
    return folder / "train.txt", folder / "val.txt"


def _split_spec(spec: str) -> tuple[str, list[str]]:
    """"preset" or "preset+key=value,key=value" (a comma inside [...] belongs to a list value)."""
    preset, _, rest = spec.partition("+")
    return preset, [o for o in re.split(r",(?![^\[]*\])", rest) if o]


def run_job(job: str, args) -> dict:
    """One unit of work: "a", "b:<preset spec>", "b-gpu:<preset spec>" or "c:<preset spec>"."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    kind, _, spec = job.partition(":")
    if kind == "gpu-check":
        return {"part": "gpu-check", **gpu_check()}
    if kind == "a":
        return {"part": "a", **part_a(args)}
    if job == "b-gpu:gpu-check":
        return {"part": "gpu-check", **gpu_check()}
    if kind in ("b", "b-gpu"):
        corpus = build_corpus()
        preset, overrides = _split_spec(spec)
        device = "cuda" if kind == "b-gpu" else "cpu"
        minutes = args.b_gpu_minutes if kind == "b-gpu" else args.b_minutes
        if kind == "b-gpu":
            overrides = [*overrides, "train.precision=fp32"]  # bf16 autocast is exercised by gpu-check
        cpu_minutes = args.b_cpu_minutes if kind == "b" else None
        row = train_one(preset, corpus / "train.txt", corpus / "valid.txt", corpus / "test.txt", minutes, device, overrides,
                        cpu_minutes=cpu_minutes)
        return {"part": kind, **row}
    if kind == "c":
        train, val = shakespeare_split()
        preset, overrides = _split_spec(spec)
        row = train_one(preset, train, val, None, args.c_minutes, "cpu", overrides, eval_points=args.c_eval_points)
        within = [p for p in row["val_curve"] if p["time_s"] <= 20 * 60 and "val_loss" in p]
        row["best_val_loss_within_20_min"] = min((p["val_loss"] for p in within), default=None)
        first = next((p for p in row["val_curve"] if p.get("val_loss", 9) <= 1.60), None)
        row["time_to_1.60_s"] = first["time_s"] if first else None
        return {"part": "c", **row}
    raise SystemExit(f"unknown job {job!r}")


def jobs_for(args) -> list[str]:
    jobs = []
    parts = args.parts.split(",")
    if "a" in parts:
        jobs.append("a")
    if "b" in parts:
        jobs += [f"b:{p}" for p in args.b_presets.split(";")]
    if "b-gpu" in parts:
        jobs += ["b-gpu:gpu-check"] + [f"b-gpu:{p}" for p in args.b_presets.split(";")]
    if "c" in parts:
        jobs += [f"c:{p}" for p in args.c_presets.split(";")]
    return jobs


def summarize(rows: list[dict]) -> dict:
    summary: dict = {}
    for kind in ("b", "b-gpu"):
        by = {
            r["preset"] + ("+" + ",".join(o for o in r["overrides"] if not o.startswith("train.precision")) if len(r["overrides"]) > (kind == "b-gpu") else ""): r
            for r in rows
            if r.get("part") == kind and "test_ppl" in r
        }
        small = by.get("ptb-small")
        if small:
            for name, r in by.items():
                if name != "ptb-small":
                    summary[f"{kind}: {name} test ppl vs ptb-small"] = {
                        "test_ppl": r["test_ppl"], "ptb_small_test_ppl": small["test_ppl"],
                        "reduction": round(1 - r["test_ppl"] / small["test_ppl"], 4), "target_reduction_min": 0.15,
                    }
    return summary


def print_table(rows: list[dict]) -> None:
    print("\n| part | run | device | steps | tokens seen | train s | best val | test ppl |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if r.get("part") == "gpu-check":
            print(f"| gpu-check | cuDNN vs reference cells (fp32), bf16 training | cuda | | | | "
                  f"{json.dumps(r['max_abs_diff'])} | |")
            continue
        if r.get("part") == "a":
            print(f"| a | lmlab Trainer vs bare nn.LSTM loop | cpu | | | | median {r['median_lmlab']:,} vs {r['median_bare']:,} tok/s | overhead {r['overhead']:.1%} end to end, {r['overhead_per_step']:.1%} per step |")
            for cell, v in r["reference_vs_fused"].items():
                print(f"| a | {cell}: reference vs fused | cpu | | | | {v['reference_tokens_per_s']:,} vs {v['fused_tokens_per_s']:,} tok/s | fused {v['fused_over_reference']}x |")
            continue
        name = r["preset"] + ("+" + ",".join(r["overrides"]) if r.get("overrides") else "")
        val = f"{r['best_val_nats_per_char']:.3f} nats/char" if r["part"] == "c" else f"ppl {r.get('best_val_ppl', float('nan')):.1f}"
        test = f"{r['test_ppl']:.1f}" if "test_ppl" in r else ""
        print(f"| {r['part']} | {name} | {r['device']} | {r['steps']} | {r['tokens_seen']:,} | {r['train_time_s']:.0f} | {val} | {test} |")


def print_baseline(result: dict) -> None:
    """The Kneser-Ney rows beside the LM rows of the results file (parts b and c, wherever they are kept)."""
    base = result["baseline"]
    b = result.get("b", result) if isinstance(result.get("b"), dict) else result
    neural_b = [r for r in b.get("rows", []) if r.get("part") == "b" and "test_ppl" in r]
    c = result.get("c", result) if isinstance(result.get("c"), dict) else result
    neural_c = [r for r in c.get("rows", []) if r.get("part") == "c"]
    w = base["word"]
    print(f"\nword level, test ({w['test']['scored_tokens']:,} tokens; vocabulary {w['vocab_size']:,})")
    print("| model | test ppl | valid ppl | time |\n|---|---:|---:|---:|")
    for key in [k for k in w["test"] if k.startswith(("kn", "mkn"))]:
        name = ("modified " if key.startswith("mkn") else "") + f"Kneser-Ney {key.lstrip('mkn')}-gram"
        print(f"| {name} | {w['test'][key]['ppl']:.1f} | {w['valid'][key]['ppl']:.1f} | {w['test'][key]['wall_s']:.1f} s |")
    for r in neural_b:
        print(f"| {r['preset']} ({r['steps']} steps) | {r['test_ppl']:.1f} | {r.get('best_val_ppl', float('nan')):.1f} | "
              f"{r['train_time_s']:.0f} s |")
    ch = base["char"]
    print(f"\ncharacters, validation ({ch['scored_tokens']:,} characters)")
    print("| model | nats/char | bits/char | time |\n|---|---:|---:|---:|")
    for key in [k for k in ch if k.startswith("kn")]:
        print(f"| Kneser-Ney {key[2:]}-gram | {ch[key]['nll']:.3f} | {ch[key]['bits']:.2f} | {ch[key]['wall_s']:.1f} s |")
    for r in neural_c:
        print(f"| {r['preset']} ({r['steps']} steps) | {r['best_val_nats_per_char']:.3f} | {r['best_val_bpc']:.2f} | "
              f"{r['train_time_s']:.0f} s |")


QUICK = {
    "parts": "a,b,c", "a_steps": 20, "a_reps": 1, "threads": 1, "b_minutes": 0.0, "c_minutes": 0.0, "c_eval_points": 0,
    "b_presets": "ptb-small+train.max_steps=30,train.eval_every=30;ptb-recommended+train.max_steps=30,train.eval_every=30",
    "c_presets": "char-shakespeare+train.max_steps=60,train.eval_every=30", "out": str(RESULTS.with_suffix(".quick.json")),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="a,b,c", help="comma list of a, b, b-gpu, c, baseline (alone: merged "
                        "into --out, the other parts' numbers kept)")
    parser.add_argument("--b-presets", default="ptb-small;ptb-recommended", help="';'-separated preset specs (preset+key=value,...)")
    parser.add_argument("--b-minutes", type=float, default=10.0, help="equal wall-time budget per word-level run")
    parser.add_argument("--b-cpu-minutes", type=float, default=None, help="instead of --b-minutes: an equal budget "
                        "of CPU time per word-level run (one thread; comparable on a shared core), bounded by steps")
    parser.add_argument("--b-gpu-minutes", type=float, default=None, help="cap on each GPU run (default: full epochs)")
    parser.add_argument("--c-presets", default="char-shakespeare")
    parser.add_argument("--c-minutes", type=float, default=20.0)
    parser.add_argument("--c-eval-points", type=int, default=8, help="validations within the char budget")
    parser.add_argument("--a-steps", type=int, default=60)
    parser.add_argument("--a-reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads per job (0: torch's default)")
    parser.add_argument("--parallel", action="store_true", help="run every job at once, each pinned to its own cores")
    parser.add_argument("--cores-per-job", type=int, default=2, help="cores pinned per job (0: no pinning)")
    parser.add_argument("--job", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--job-out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cpus", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--build-corpus", action="store_true", help="only build the word corpus and exit")
    parser.add_argument("--quick", action="store_true", help="small, step-bounded sizes (QUICK); writes lm.quick.json")
    if "--quick" in sys.argv[1:]:
        parser.set_defaults(**QUICK)
    args = parser.parse_args()

    if args.build_corpus:
        build_corpus()
        print(json.dumps(json.loads(SPLIT_FILE.read_text())["files"], indent=1))
        return
    if args.job:
        row = run_job(args.job, args)
        Path(args.job_out).write_text(json.dumps(row) + "\n")
        return

    started = time.time()
    parts = args.parts.split(",")
    baseline = None
    if "baseline" in parts:
        baseline = {"date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                    "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
                    "commit": _commit(), "machine": machine_info("cpu"), **part_baseline(args)}
        baseline["wall_s"] = round(time.time() - started, 1)
        args.parts = ",".join(p for p in parts if p != "baseline")
        if not args.parts:  # merged into the results file: the neural parts' numbers are kept as they are
            out = Path(args.out)
            result = json.loads(out.read_text()) if out.is_file() else {"benchmark": "lm"}
            result["baseline"] = baseline
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=2) + "\n")  # as the hand-merged file is kept
            print_baseline(result)
            print(f"wrote {out} (key 'baseline'; the other parts' numbers unchanged)")
            return
    build_corpus()  # once, before any job reads it
    jobs = jobs_for(args)
    rows: list[dict] = []
    if args.parallel:
        cores = sorted(os.sched_getaffinity(0))
        procs = []
        out_dir = WORK / "jobs"
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in out_dir.glob("job*"):
            stale.unlink()
        cpu_jobs = [j for j in jobs if not j.startswith("b-gpu")]
        needed = args.cores_per_job * (len(cpu_jobs) + (1 if len(cpu_jobs) < len(jobs) else 0))
        if args.cores_per_job and needed > len(cores):
            raise SystemExit(f"{len(jobs)} jobs x {args.cores_per_job} cores need {needed} cores, {len(cores)} visible")
        gpu_jobs = [j for j in jobs if j.startswith("b-gpu")]
        groups = [[j] for j in cpu_jobs] + ([gpu_jobs] if gpu_jobs else [])
        for i, group in enumerate(groups):
            # --cores-per-job 0: no pinning, every job shares all visible cores
            mine = cores[i * args.cores_per_job : (i + 1) * args.cores_per_job] if args.cores_per_job else []
            files = [out_dir / f"job{i}-{k}.json" for k in range(len(group))]
            script = " ; ".join(
                f"{sys.executable} {Path(__file__).resolve()} --job '{j}' --job-out {f} " + " ".join(_passthrough(args))
                for j, f in zip(group, files, strict=True)
            )
            if mine:
                script = script.replace("--job-out", f"--cpus {','.join(map(str, mine))} --job-out")
            log = open(out_dir / f"job{i}.log", "w")
            cmd = ["bash", "-c", script]
            procs.append((group, files, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
            print(f"started {group} on cores {mine or 'shared'}", flush=True)
        for group, files, proc, log in procs:
            proc.wait()
            log.close()
            for j, f in zip(group, files, strict=True):
                if f.is_file():
                    rows.append(json.loads(f.read_text()))
                else:
                    print(f"job {j} failed (exit {proc.returncode}); see {log.name}", flush=True)
                    rows.append({"part": j.split(":")[0], "job": j, "failed": True})
    else:
        for job in jobs:
            rows.append(run_job(job, args))
    ok = [r for r in rows if not r.get("failed")]
    print_table(ok)
    result = {
        "benchmark": "lm",
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": machine_info("cuda" if any(r.get("device") == "cuda" for r in ok) else "cpu"),
        "wall_s": round(time.time() - started, 1),
        "corpus": json.loads(SPLIT_FILE.read_text())["files"],
        "summary": summarize(ok),
        "rows": rows,
    }
    if baseline:
        result["baseline"] = baseline
        print_baseline({"baseline": baseline})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))
    print(f"wrote {args.out}")


def _passthrough(args) -> list[str]:
    return [
        f"--b-minutes {args.b_minutes}", f"--c-minutes {args.c_minutes}",
        *([f"--b-cpu-minutes {args.b_cpu_minutes}"] if args.b_cpu_minutes else []),
        *([f"--b-gpu-minutes {args.b_gpu_minutes}"] if args.b_gpu_minutes else []), f"--c-eval-points {args.c_eval_points}",
        f"--a-steps {args.a_steps}", f"--a-reps {args.a_reps}", f"--threads {args.threads}",
    ]


if __name__ == "__main__":
    main()
