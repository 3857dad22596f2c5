"""GloVe: global vectors from a weighted least-squares fit of log co-occurrence counts (Pennington et al., 2014).

The driver for the kernels in :mod:`lmlab.models._glove_kernels`:

1. the corpus is encoded once to an on-disk token array by the data layer (shared with word2vec,
   :func:`lmlab.data.sentences.encode_corpus`);
2. :func:`count_cooccurrences` scans it with a symmetric window and 1/distance weights. Pairs among the
   ``dense_words`` most frequent words go to a dense block; all other pairs go to a bounded buffer that is
   aggregated and spilled to sorted run files on disk. The runs are merged by key range, so memory is bounded
   by ``memory_mb`` whatever the corpus size - a dense V x V matrix is never built;
3. the merged non-zero entries are shuffled on disk (random scatter into buckets, then an in-memory shuffle of
   each bucket) into ``cooc.bin``;
4. :class:`GloVe` ``.fit`` runs AdaGrad over the shuffled entries, block by block, Hogwild over threads.

The vectors returned are ``W + W~`` (or ``W`` alone with ``keep="w"``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lmlab.errors import ConfigError, TrainingError
from lmlab.models._compiled import load_kernels
from lmlab.models.word2vec import EpochStats

__all__ = ["CooccurrenceMatrix", "GloVe", "GloVeConfig", "count_cooccurrences", "glove_loss"]

MODEL_TYPE = "glove"
COOC_DTYPE = np.dtype([("i", "<i4"), ("j", "<i4"), ("x", "<f4")])


@dataclass
class GloVeConfig:
    """Every knob of GloVe. Defaults follow the paper and the reference code (x_max 100, alpha 0.75, lr 0.05)."""

    embed_dim: int = 100
    #: symmetric context window; a pair at distance d adds 1/d
    window: int = 10
    min_count: int = 5
    max_vocab: int = 0
    epochs: int = 25
    lr: float = 0.05
    #: "reference": AdaGrad as the reference GloVe code does it, accumulating the squares of the lr-scaled
    #: gradients (equivalent to textbook AdaGrad with rate 1 and the accumulator starting at 1/lr^2);
    #: "textbook": accumulate the squared gradients themselves (steps shrink ~1/lr times faster)
    adagrad: Literal["reference", "textbook"] = "reference"
    #: the biases' AdaGrad rate; None: ``lr``, as glove.c 1.2 (the paper's release) does. glove.c's master steps
    #: the biases with rate 1 (``b -= g / sqrt(G)``, ``G += g^2``; its gradient-clipping change dropped the lr
    #: there): ``bias_lr=1.0`` (the default) reproduces it and scores within 1 point of glove.c on every
    #: similarity/analogy figure, where ``None`` scored 4 points below on WS-353 (docs/glove.md)
    bias_lr: float | None = 1.0
    x_max: float = 100.0
    alpha: float = 0.75
    #: "w+wt": the sum of word and context vectors (the paper's choice); "w": word vectors only
    keep: Literal["w+wt", "w"] = "w+wt"
    threads: int = 0
    seed: int = 1
    #: memory for counting, merging and shuffling (the weight matrices come on top)
    memory_mb: int = 512
    #: pairs among this many most frequent words are counted in a dense block (0: choose from memory_mb)
    dense_words: int = 0
    #: non-zero entries per training block (each block is shuffled again every epoch)
    block_entries: int = 1 << 21
    max_sentence_length: int = 10000
    lowercase: bool = True
    tokenizer: Literal["words", "whitespace"] = "words"
    break_on: Literal["line", "paragraph"] = "line"
    text_field: str = "text"
    encoding: str = "utf-8"

    def validate(self) -> None:
        problems = []
        for name in ("embed_dim", "window", "epochs", "min_count", "memory_mb", "block_entries",
                     "max_sentence_length"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_vocab", "threads", "dense_words"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "x_max", "alpha"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                problems.append(f"{name} must be > 0, got {value}")
        if self.bias_lr is not None and not (math.isfinite(self.bias_lr) and self.bias_lr > 0):
            problems.append(f"bias_lr must be > 0 (or null: lr), got {self.bias_lr}")
        if self.adagrad not in ("reference", "textbook"):
            problems.append(f"adagrad must be 'reference' or 'textbook', got {self.adagrad!r}")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def num_threads(self) -> int:
        return self.threads or (os.cpu_count() or 1)


def glove_loss(x: np.ndarray, w: np.ndarray, wt: np.ndarray, b: np.ndarray, bt: np.ndarray,
               x_max: float = 100.0, alpha: float = 0.75) -> float:
    """The GloVe objective on a dense co-occurrence matrix ``x`` (zeros are skipped), in float64:
    ``J = 1/2 sum_{ij: x_ij > 0} f(x_ij) (w_i . wt_j + b_i + bt_j - log x_ij)^2``."""
    i, j = np.nonzero(x)
    xij = x[i, j].astype(np.float64)
    diff = (w[i].astype(np.float64) * wt[j]).sum(1) + b[i] + bt[j] - np.log(xij)
    fx = np.minimum(1.0, (xij / x_max) ** alpha)
    return float(0.5 * (fx * diff * diff).sum())


# ---------------------------------------------------------------------------------------------------------
# Counting
# ---------------------------------------------------------------------------------------------------------


@dataclass
class CooccurrenceMatrix:
    """Shuffled non-zero co-occurrence entries on disk (``cooc.bin``, records of i:int32, j:int32, x:float32)."""

    path: Path
    vocab_size: int
    nnz: int
    seconds: float = 0.0

    def read(self, start: int, count: int) -> np.ndarray:
        with open(self.path, "rb") as fh:
            fh.seek(start * COOC_DTYPE.itemsize)
            return np.fromfile(fh, dtype=COOC_DTYPE, count=count)

    def to_dense(self) -> np.ndarray:
        """The full V x V matrix (small vocabularies only: tests and inspection)."""
        if self.vocab_size > 20000:
            raise ConfigError(f"to_dense() on a {self.vocab_size}-word vocabulary would need too much memory")
        out = np.zeros((self.vocab_size, self.vocab_size), dtype=np.float64)
        data = self.read(0, self.nnz)
        np.add.at(out, (data["i"], data["j"]), data["x"].astype(np.float64))
        return out


def aggregate_sorted(keys: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum ``vals`` over equal ``keys``; returns the sorted unique keys and their float64 sums (summed in the
    order the values come, within each key)."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    v = vals[order].astype(np.float64)
    del order
    if len(k) == 0:
        return k, v
    starts = np.flatnonzero(np.concatenate(([True], k[1:] != k[:-1])))
    return k[starts], np.add.reduceat(v, starts)


def _read_at(path: Path, dtype: Any, start: int, count: int) -> np.ndarray:
    with open(path, "rb") as fh:
        fh.seek(int(start) * np.dtype(dtype).itemsize)
        return np.fromfile(fh, dtype=dtype, count=int(count))


def count_cooccurrences(enc: Any, window: int, workdir: str | Path, memory_mb: int = 512,
                        dense_words: int = 0, seed: int = 1,
                        log: Callable[[str], None] | None = None) -> CooccurrenceMatrix:
    """Count co-occurrences of ``enc`` within ``memory_mb`` and write them, shuffled, to ``workdir/cooc.bin``."""
    K = load_kernels("_glove_kernels")
    t0 = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    vocab_size = len(enc.words)
    budget = memory_mb * (1 << 20)
    if dense_words <= 0:
        dense_words = int(np.sqrt(budget / 4 / 8))  # a quarter of the budget for the float64 dense block
    dense_k = min(dense_words, vocab_size)
    dense = np.zeros((dense_k, dense_k), dtype=np.float64)
    # int64 key + float32 weight; a spill sorts and aggregates the buffer with ~3x its size in temporaries
    buf_cap = max(1 << 16, (budget // 8) // 12)
    buf_keys = np.empty(buf_cap, dtype=np.int64)
    buf_vals = np.empty(buf_cap, dtype=np.float32)
    runs: list[tuple[Path, Path, int]] = []

    def spill(n: int) -> None:
        keys, vals = aggregate_sorted(buf_keys[:n], buf_vals[:n])
        kp = workdir / f"run{len(runs):04d}.keys"
        vp = workdir / f"run{len(runs):04d}.vals"
        keys.tofile(kp)
        vals.astype(np.float32).tofile(vp)
        runs.append((kp, vp, len(keys)))

    buf_len = 0
    for chunk in enc.iter_chunks(max(1 << 16, min(1 << 22, budget // 32))):  # int32 tokens, 1/8 of the budget
        pos = 0
        while pos < len(chunk):
            pos, buf_len = K.count_cooccurrences(chunk, pos, window, vocab_size, dense, dense_k,
                                                 buf_keys, buf_vals, buf_len)
            if pos < len(chunk):
                spill(buf_len)
                buf_len = 0
    if buf_len:
        spill(buf_len)
    buf_keys = buf_vals = np.empty(0)  # free the buffer before merging
    # merge the sorted runs by key range and scatter the result at random into shuffle buckets. Each bucket is
    # later loaded and shuffled whole (12 bytes a record plus an 8-byte index, plus the shuffled copy), and each
    # key range passes through ~100 bytes of temporaries per entry: both are sized to stay within ``budget``
    total_upper = sum(n for _, _, n in runs) + int(np.count_nonzero(dense))
    num_buckets = max(1, int(np.ceil(total_upper * 32 / budget)))
    rng = np.random.default_rng(seed)
    bucket_paths = [workdir / f"bucket{b:04d}.bin" for b in range(num_buckets)]
    bucket_files = [open(p, "wb") for p in bucket_paths]
    nnz = 0

    def scatter(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> None:
        nonlocal nnz
        rec = np.empty(len(rows), dtype=COOC_DTYPE)
        rec["i"], rec["j"], rec["x"] = rows, cols, vals
        which = rng.integers(0, num_buckets, size=len(rec))
        order = np.argsort(which, kind="stable")
        rec, which = rec[order], which[order]
        edges = np.searchsorted(which, np.arange(num_buckets + 1))
        for b in range(num_buckets):
            if edges[b + 1] > edges[b]:
                rec[edges[b] : edges[b + 1]].tofile(bucket_files[b])
        nnz += len(rec)

    try:
        di, dj = np.nonzero(dense)
        if len(di):
            scatter(di.astype(np.int32), dj.astype(np.int32), dense[di, dj].astype(np.float32))
        del dense, di, dj
        if runs:
            # key ranges sized by the data, not by key space (the frequent words' rows hold most entries): a
            # range ends at the smallest of the keys that lie ``quota`` entries past each run's position, so no
            # run gives more than ``quota`` entries and a range holds at most ``per_range``
            max_key = int(vocab_size) * int(vocab_size)
            per_range = max(1, int(budget // 128))
            quota = max(1, per_range // len(runs))
            starts = [0] * len(runs)  # where each run's next key range begins
            while any(starts[t] < n for t, (_, _, n) in enumerate(runs)):
                hi_key = max_key
                for t, (kp, _, n) in enumerate(runs):
                    if starts[t] + quota < n:
                        hi_key = min(hi_key, int(_read_at(kp, np.int64, starts[t] + quota, 1)[0]))
                parts_k, parts_v = [], []
                for t, (kp, vp, n) in enumerate(runs):
                    if starts[t] >= n:
                        continue
                    # a short-lived map for the binary search only: a map kept open would hold every page it
                    # ever touched in this process's resident memory
                    km = np.memmap(kp, dtype=np.int64, mode="r")
                    a, b = starts[t], int(np.searchsorted(km, hi_key))
                    del km
                    if b > a:
                        parts_k.append(_read_at(kp, np.int64, a, b - a))
                        parts_v.append(_read_at(vp, np.float32, a, b - a))
                    starts[t] = b
                if not parts_k:
                    continue
                keys, vals = aggregate_sorted(np.concatenate(parts_k), np.concatenate(parts_v))
                del parts_k, parts_v
                scatter((keys // vocab_size).astype(np.int32), (keys % vocab_size).astype(np.int32),
                        vals.astype(np.float32))
                del keys, vals
    finally:
        for fh in bucket_files:
            fh.close()
        for kp, vp, _ in runs:
            kp.unlink(missing_ok=True)
            vp.unlink(missing_ok=True)
    out = workdir / "cooc.bin"
    with open(out, "wb") as dst:
        for b, path in enumerate(bucket_paths):
            rec = np.fromfile(path, dtype=COOC_DTYPE)
            order = np.arange(len(rec), dtype=np.int64)
            K.shuffle_in_place(order, np.uint64(seed * 1_000_003 + b))
            rec[order].tofile(dst)
            path.unlink()
    seconds = time.perf_counter() - t0
    if log:
        log(f"counted {nnz:,} non-zero co-occurrences (window {window}, {len(runs)} spills) in {seconds:.1f}s")
    return CooccurrenceMatrix(out, vocab_size, nnz, seconds)


# ---------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------


class GloVe:
    """GloVe trainer. ``GloVe(config)`` constructs; ``fit(encoded_corpus, workdir)`` counts and trains;
    ``words`` / ``vectors`` are the result (``wv``, their :class:`~lmlab.vectors.KeyedVectors`, is filled in by
    :func:`lmlab.recipes.embed.fit_corpus`).

    ``history`` holds one :class:`~lmlab.models.word2vec.EpochStats` per epoch whose ``loss`` is the mean of
    ``f(x) (w.wt + b + bt - log x)^2 / 2`` over the non-zero entries (measured before each entry's step).
    """

    config_cls = GloVeConfig

    def __init__(self, config: GloVeConfig | None = None):
        self.config = config or GloVeConfig()
        self.config.validate()
        self.wv = None
        self.history: list[EpochStats] = []
        self.timings: dict[str, float] = {}
        self.corpus_info: dict = {}
        self.w = self.wt = self.b = self.bt = None
        self.words: list[str] = []
        self.counts: np.ndarray | None = None
        self.vectors: np.ndarray | None = None
        self.epochs_done = 0
        self._rng: np.random.Generator | None = None

    def fit(self, enc: Any, workdir: str | Path, log: Callable[[str], None] | None = None,
            on_epoch: Callable[[EpochStats], None] | None = None) -> GloVe:
        """Count the co-occurrences of an encoded corpus (:func:`lmlab.data.sentences.encode_corpus`) in
        ``workdir`` and train on them: from fresh weights, or from :meth:`load_training_state`'s epoch on."""
        if not hasattr(enc, "iter_chunks"):
            raise ConfigError(
                f"GloVe.fit takes an encoded corpus, got {type(enc).__name__}; encode text with "
                "lmlab.data.sentences.encode_corpus, or train from a file with lmlab.recipes.embed.GloVeRecipe"
            )
        cfg = self.config
        try:
            cooc = count_cooccurrences(enc, cfg.window, workdir, cfg.memory_mb, cfg.dense_words, cfg.seed, log=log)
            self.timings["count_s"] = cooc.seconds
            self.corpus_info = {"num_tokens": enc.num_tokens, "num_raw_tokens": enc.num_raw_tokens,
                                "vocab_size": len(enc.words), "nnz": cooc.nnz}
            t1 = time.perf_counter()
            self.train_cooccurrences(cooc, enc.words, enc.counts, log=log, on_epoch=on_epoch)
            self.timings["train_s"] = time.perf_counter() - t1
        finally:
            (Path(workdir) / "cooc.bin").unlink(missing_ok=True)
        return self

    # -- state carried between epochs ------------------------------------------------------------------
    _STATE_ARRAYS = ("w", "wt", "b", "bt", "gw", "gwt", "gb", "gbt")

    def training_state(self) -> dict:
        """The parameters, the AdaGrad accumulators, the block-order RNG and the epochs done."""
        return {
            "arrays": {k: getattr(self, k) for k in self._STATE_ARRAYS},
            "epoch": self.epochs_done,
            "rng": self._rng.bit_generator.state if self._rng is not None else None,
            "history": [h.as_dict() for h in self.history],
        }

    def load_training_state(self, state: dict) -> None:
        for k in self._STATE_ARRAYS:
            setattr(self, k, np.ascontiguousarray(state["arrays"][k], dtype=np.float32))
        self.epochs_done = int(state["epoch"])
        self._rng = np.random.default_rng(self.config.seed)
        self._rng.bit_generator.state = state["rng"]
        self.history = [EpochStats(**h) for h in state.get("history", [])]

    def init_params(self, vocab_size: int) -> None:
        dim = self.config.embed_dim
        rng = np.random.default_rng(self.config.seed)
        self.w = ((rng.random((vocab_size, dim), dtype=np.float32) - 0.5) / dim).astype(np.float32)
        self.wt = ((rng.random((vocab_size, dim), dtype=np.float32) - 0.5) / dim).astype(np.float32)
        self.b = ((rng.random(vocab_size, dtype=np.float32) - 0.5) / dim).astype(np.float32)
        self.bt = ((rng.random(vocab_size, dtype=np.float32) - 0.5) / dim).astype(np.float32)
        self.gw = np.ones((vocab_size, dim), dtype=np.float32)
        self.gwt = np.ones((vocab_size, dim), dtype=np.float32)
        self.gb = np.ones(vocab_size, dtype=np.float32)
        self.gbt = np.ones(vocab_size, dtype=np.float32)

    def step(self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, threads: int = 1) -> float:
        """One AdaGrad step per entry, in order (Hogwild when threads > 1); returns the summed loss."""
        K = load_kernels("_glove_kernels")
        cfg = self.config
        n = len(rows)
        parts = max(1, min(threads, n))
        bounds = np.linspace(0, n, parts + 1).astype(np.int64)
        out = np.zeros(parts, dtype=np.float64)
        K.glove_block(np.ascontiguousarray(rows, np.int32), np.ascontiguousarray(cols, np.int32),
                      np.ascontiguousarray(vals, np.float32), bounds, self.w, self.wt, self.b, self.bt,
                      self.gw, self.gwt, self.gb, self.gbt, np.float32(cfg.x_max), np.float32(cfg.alpha),
                      np.float32(cfg.lr), out, cfg.adagrad == "reference",
                      np.float32(cfg.lr if cfg.bias_lr is None else cfg.bias_lr))
        return float(out.sum())

    def train_cooccurrences(self, cooc: CooccurrenceMatrix, words: list[str], counts: np.ndarray | None = None,
                            log: Callable[[str], None] | None = None,
                            on_epoch: Callable[[EpochStats], None] | None = None) -> GloVe:
        K = load_kernels("_glove_kernels")
        cfg = self.config
        if self._rng is None:
            self.init_params(cooc.vocab_size)
            self._rng = np.random.default_rng(cfg.seed)
            self.history = []
            self.epochs_done = 0
        elif self.w.shape != (cooc.vocab_size, cfg.embed_dim):
            raise ConfigError(
                f"the saved training state holds {self.w.shape[0]} x {self.w.shape[1]} vectors but the corpus "
                f"gives a vocabulary of {cooc.vocab_size} words x embed_dim {cfg.embed_dim}"
            )
        threads = cfg.num_threads
        block = cfg.block_entries
        num_blocks = max(1, -(-cooc.nnz // block))
        rng = self._rng
        for epoch in range(self.epochs_done, cfg.epochs):
            t0 = time.perf_counter()
            total = 0.0
            for bi in rng.permutation(num_blocks):
                rec = cooc.read(int(bi) * block, block)
                order = np.arange(len(rec), dtype=np.int64)
                K.shuffle_in_place(order, np.uint64(cfg.seed * 7919 + epoch * 104729 + int(bi)))
                rec = rec[order]
                total += self.step(rec["i"], rec["j"], rec["x"], threads)
            seconds = time.perf_counter() - t0
            stats = EpochStats(epoch=epoch + 1, loss=total / max(cooc.nnz, 1), lr=cfg.lr, words=cooc.nnz,
                               seconds=seconds, words_per_s=cooc.nnz / max(seconds, 1e-9), examples=cooc.nnz)
            if not np.isfinite(stats.loss):
                raise TrainingError(f"epoch {epoch + 1}: the GloVe loss is {stats.loss}; lower lr (now {cfg.lr})")
            self.history.append(stats)
            self.epochs_done = epoch + 1
            if log:
                log(f"epoch {stats.epoch}/{cfg.epochs}  loss {stats.loss:.4f}  "
                    f"{stats.words_per_s / 1e6:.2f}M entries/s")
            if on_epoch:
                on_epoch(stats)
        self.vectors = self.w + self.wt if cfg.keep == "w+wt" else self.w.copy()
        self.words = list(words)
        self.counts = None if counts is None else np.asarray(counts)
        return self
