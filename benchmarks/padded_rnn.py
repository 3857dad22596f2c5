"""Packed sequences vs lmlab's PaddedBiRNN: the same bidirectional recurrence, two ways of skipping the padding.

PyTorch's ``pack_padded_sequence`` is the textbook way to keep an RNN from reading padding; on a CPU it runs a
per-time-step loop, while a padded batch goes through the fused (oneDNN) kernel. ``lmlab.models.rnn.PaddedBiRNN``
gets the packed result exactly (tests/test_rnn.py) from padded batches. This benchmark times forward + backward
of both, side by side in one process, for the shapes lmlab's classifier and seq2seq encoder use.

    python benchmarks/padded_rnn.py [--threads 1] [--reps 3]
    python benchmarks/padded_rnn.py --quick     # one timed repetition; writes padded_rnn.quick.json

Writes benchmarks/results/padded_rnn.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lmlab.models.rnn import PaddedBiRNN  # noqa: E402

#: (what it stands for, cell, batch, max length, input size, hidden size per direction)
SHAPES = [
    ("bilstm classifier on IMDb (preset)", "lstm", 64, 400, 128, 128),
    ("bilstm classifier, shorter texts", "lstm", 64, 100, 128, 128),
    ("GRU seq2seq encoder (gru-bahdanau)", "gru", 64, 20, 256, 256),
]


def timed(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def one(cell: str, B: int, T: int, I: int, H: int, reps: int) -> dict:
    torch.manual_seed(0)
    cls = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
    ref = cls(I, H, batch_first=True, bidirectional=True)
    ours = PaddedBiRNN(cell, I, H, bidirectional=True)
    x = torch.randn(B, T, I, requires_grad=True)
    # lengths spread like a length-bucketed batch: within 10% of the longest
    lengths = torch.randint(max(1, int(T * 0.9)), T + 1, (B,))
    lengths[0] = T

    def packed():
        p = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = ref(p)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
        out.sum().backward()

    def padded():
        out, _ = ours(x, lengths)
        out.sum().backward()

    t_packed = timed(packed, reps)
    t_padded = timed(padded, reps)
    return {"packed_s": round(t_packed, 4), "padded_s": round(t_padded, 4), "speedup": round(t_packed / t_padded, 2)}


QUICK = {"reps": 1, "out": str(ROOT / "benchmarks" / "results" / "padded_rnn.quick.json")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "padded_rnn.json"))
    ap.add_argument("--quick", action="store_true", help="one repetition (QUICK); writes padded_rnn.quick.json")
    if "--quick" in sys.argv[1:]:
        ap.set_defaults(**QUICK)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name, cell, B, T, I, H in SHAPES:
        r = {"shape": name, "cell": cell, "batch": B, "length": T, "input": I, "hidden": H, **one(cell, B, T, I, H, args.reps)}
        print(r, flush=True)
        rows.append(r)
    result = {
        "benchmark": "padded_rnn",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
        "machine": {
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": args.threads, "cpus_visible": len(os.sched_getaffinity(0)),
        },
        "measure": "median wall time of forward + backward (sum of outputs), bidirectional, one layer",
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("| shape | cell | B x T | packed (s) | PaddedBiRNN (s) | speed-up |")
    print("|---|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['shape']} | {r['cell']} | {r['batch']} x {r['length']} | {r['packed_s']} | {r['padded_s']} | {r['speedup']}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
