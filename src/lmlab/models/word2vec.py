"""word2vec: skip-gram and CBOW with negative sampling or hierarchical softmax (Mikolov et al., 2013).

This module is the thin Python driver; the compiled Hogwild kernels live in :mod:`lmlab.models._w2v_kernels`.

The corpus is read once (:func:`encode_corpus`): words are counted and written as provisional ids to a file,
then the vocabulary is chosen (``min_count``, ``max_vocab``, sorted by frequency) and the file is rewritten as
the final ``int32`` token array (``-1`` ends a sentence). Training streams that array from disk in chunks, so
memory holds the vocabulary, the two weight matrices and one chunk, whatever the corpus length.

Example:
    >>> from lmlab.models.word2vec import Word2Vec, Word2VecConfig
    >>> model = Word2Vec(Word2VecConfig(arch="skipgram", epochs=1)).fit("corpus.txt.gz")
    >>> model.wv.most_similar("king")
    >>> model.save("runs/w2v")
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lmlab.errors import ConfigError, DataError
from lmlab.models._compiled import load_kernels

__all__ = [
    "EncodedCorpus",
    "Word2Vec",
    "Word2VecConfig",
    "encode_corpus",
    "iter_sentences",
    "keep_probabilities",
    "noise_distribution",
    "tokenize",
]

MODEL_TYPE = "word2vec"
VECTORS_FILE = "vectors.safetensors"
VOCAB_FILE = "vocab.json"

_WORD_RE = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")


# ---------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Word2VecConfig:
    """Every knob of word2vec. Defaults follow word2vec.c / gensim."""

    #: "skipgram" predicts each context word from the centre word; "cbow" predicts the centre from the mean
    #: of its context.
    arch: Literal["skipgram", "cbow"] = "skipgram"
    embed_dim: int = 100
    #: the largest window; each centre word draws its own window uniformly from 1..window (dynamic window)
    window: int = 5
    #: noise words per example for negative sampling (0 turns it off)
    negative: int = 5
    #: hierarchical softmax over a Huffman tree (can be combined with negative sampling)
    hs: bool = False
    #: exponent of the unigram noise distribution
    ns_exponent: float = 0.75
    #: subsampling threshold t: a word of frequency f is kept with probability (sqrt(f/t)+1) t/f (0: off)
    sample: float = 1e-3
    min_count: int = 5
    #: keep only the N most frequent words (0: no limit)
    max_vocab: int = 0
    epochs: int = 5
    #: initial learning rate (alpha); None: 0.025 for skip-gram, 0.05 for CBOW
    lr: float | None = None
    #: learning rate reached, linearly, at the end of the last epoch (min_alpha)
    min_lr: float = 1e-4
    #: CBOW: average the context vectors (True) or sum them
    cbow_mean: bool = True
    #: input vectors start uniform in [-init_scale/D, init_scale/D): 0.5 is word2vec.c's range, 1.0 gensim 4's
    init_scale: float = 0.5
    #: worker threads (0: every core); one thread with a fixed seed is exactly reproducible
    threads: int = 0
    seed: int = 1
    #: longer sentences are cut into pieces of this many words
    max_sentence_length: int = 10000
    lowercase: bool = True
    #: "words": runs of letters/digits (apostrophes inside words kept); "whitespace": split on spaces only
    tokenizer: Literal["words", "whitespace"] = "words"
    #: what ends a sentence: every line, or blank lines only (for hard-wrapped prose such as books)
    break_on: Literal["line", "paragraph"] = "line"
    #: JSONL corpora: the field that holds the text
    text_field: str = "text"
    encoding: str = "utf-8"
    #: accumulate the exact training loss (one log per output unit; costs a few percent)
    compute_loss: bool = True
    #: skip-gram with negative sampling: draw each centre word's noise words once and share them across its
    #: window (Ji et al., 2016) - fewer cache misses, faster; off reproduces word2vec.c's sampling
    shared_negatives: bool = False
    #: tokens per chunk streamed from the encoded corpus to the kernel
    chunk_tokens: int = 1 << 20

    def validate(self) -> None:
        problems = []
        for name in ("embed_dim", "window", "epochs", "min_count", "max_sentence_length", "chunk_tokens"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("negative", "max_vocab", "threads"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.negative == 0 and not self.hs:
            problems.append("negative=0 and hs=false leave no output layer; set negative>0 or hs=true")
        if self.sample < 0:
            problems.append(f"sample must be >= 0, got {self.sample}")
        if self.lr is not None and self.lr <= 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.min_lr < 0:
            problems.append(f"min_lr must be >= 0, got {self.min_lr}")
        if self.init_scale < 0:
            problems.append(f"init_scale must be >= 0, got {self.init_scale}")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def start_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 0.025 if self.arch == "skipgram" else 0.05

    @property
    def num_threads(self) -> int:
        return self.threads or (os.cpu_count() or 1)


# ---------------------------------------------------------------------------------------------------------
# Corpus: tokenize, count, encode to an on-disk int32 array
# ---------------------------------------------------------------------------------------------------------


def tokenize(text: str, lowercase: bool = True, tokenizer: str = "words") -> list[str]:
    """Split ``text`` into words the way the word-vector trainers do."""
    if lowercase:
        text = text.lower()
    if tokenizer == "whitespace":
        return text.split()
    return _WORD_RE.findall(text)


def _as_corpus(corpus: Any, encoding: str, text_field: str) -> Iterable:
    from lmlab.data.readers import TextCorpus, require_restartable

    if isinstance(corpus, (str, os.PathLike)):
        return TextCorpus(corpus, encoding=encoding, text_field=text_field, unit="line")
    require_restartable(corpus, "corpus")
    return corpus


def iter_sentences(corpus: Any, cfg: Any) -> Iterator[list[str]]:
    """Yield the token lists (sentences) of ``corpus``: a path, a restartable iterable of lines (str) or of
    token lists. ``cfg`` supplies lowercase, tokenizer, break_on, text_field, encoding, max_sentence_length."""
    lines = _as_corpus(corpus, cfg.encoding, cfg.text_field)
    limit = cfg.max_sentence_length
    lower, tok = cfg.lowercase, cfg.tokenizer
    paragraph: list[str] = []
    for item in lines:
        if isinstance(item, str):
            words = tokenize(item, lower, tok)
            if cfg.break_on == "paragraph":
                if words:
                    paragraph.extend(words)
                    if len(paragraph) < limit:
                        continue
                elif not paragraph:
                    continue
                words, paragraph = paragraph, []
        elif isinstance(item, (list, tuple)):
            words = [w.lower() for w in item] if lower else list(item)
        else:
            raise DataError(
                f"corpus items must be strings (lines) or lists of words, got {type(item).__name__}; "
                "pass a path, a list of lines or a list of token lists"
            )
        for start in range(0, len(words), limit):
            piece = words[start : start + limit]
            if piece:
                yield piece
    if paragraph:
        for start in range(0, len(paragraph), limit):
            yield paragraph[start : start + limit]


@dataclass
class EncodedCorpus:
    """The corpus as an int32 token file (``-1`` ends a sentence) plus its vocabulary."""

    path: Path
    words: list[str]
    counts: np.ndarray  # (V,) int64, non-increasing
    num_tokens: int  # in-vocabulary tokens (what training sees per epoch)
    num_raw_tokens: int  # every token read, out-of-vocabulary ones included
    num_sentences: int

    def iter_chunks(self, chunk_tokens: int) -> Iterator[np.ndarray]:
        """Yield int32 arrays that each end right after a sentence end, reading ``chunk_tokens`` at a time."""
        leftover = np.empty(0, dtype=np.int32)
        with open(self.path, "rb") as fh:
            while True:
                block = np.fromfile(fh, dtype=np.int32, count=chunk_tokens)
                if len(block) == 0:
                    break
                if len(leftover):
                    block = np.concatenate([leftover, block])
                seps = np.flatnonzero(block == -1)
                if len(seps) == 0:
                    leftover = block
                    continue
                cut = int(seps[-1]) + 1
                leftover = block[cut:].copy()
                yield block[:cut]
        if len(leftover):
            yield np.concatenate([leftover, np.array([-1], dtype=np.int32)])


def _most_common_preview(words: list[str], counts: np.ndarray, k: int = 3) -> str:
    order = np.argsort(-counts, kind="stable")[:k]
    return ", ".join(f"{words[i]!r} x{int(counts[i])}" for i in order)


def encode_corpus(corpus: Any, cfg: Any, workdir: str | Path, min_count: int = 1, max_vocab: int = 0,
                  log: Callable[[str], None] | None = None) -> EncodedCorpus:
    """Read ``corpus`` once and write it to ``workdir/tokens.int32`` with a frequency-sorted vocabulary.

    Raises:
        DataError: the corpus holds no words, or no word occurs ``min_count`` times.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    raw_path = workdir / "tokens.raw.int32"
    out_path = workdir / "tokens.int32"
    index: dict[str, int] = {}
    counts = np.zeros(1024, dtype=np.int64)
    buf = array("i")  # 4 bytes per token, not a list of int objects
    num_raw = 0
    num_sentences = 0
    t0 = time.perf_counter()

    def flush(fh) -> None:
        nonlocal counts
        arr = np.frombuffer(buf, dtype=np.int32)
        arr.tofile(fh)
        ids = arr[arr >= 0]
        if len(index) > len(counts):
            counts = np.concatenate([counts, np.zeros(max(len(index), 2 * len(counts)) - len(counts), np.int64)])
        counts[: len(index)] += np.bincount(ids, minlength=len(index))[: len(index)]
        del arr, ids
        del buf[:]

    with open(raw_path, "wb") as fh:
        setdefault = index.setdefault
        for words in iter_sentences(corpus, cfg):
            buf.extend([setdefault(w, len(index)) for w in words])
            buf.append(-1)
            num_raw += len(words)
            num_sentences += 1
            if len(buf) >= 1 << 20:
                flush(fh)
        flush(fh)
    counts = counts[: len(index)]
    if num_raw == 0:
        raw_path.unlink(missing_ok=True)
        raise DataError(f"the corpus {_describe(corpus)} is empty: it holds no words; check the path and the text field")
    words_by_id = list(index)
    index.clear()
    kept = np.flatnonzero(counts >= min_count)
    if len(kept) == 0:
        raw_path.unlink(missing_ok=True)
        raise DataError(
            f"no word occurs min_count={min_count} times in {_describe(corpus)}: {len(counts)} distinct words, "
            f"the most frequent occurs {int(counts.max())} times ({_most_common_preview(words_by_id, counts)}); "
            "lower min_count or use a larger corpus"
        )
    order = kept[np.argsort(-counts[kept], kind="stable")]
    if max_vocab and len(order) > max_vocab:
        order = order[:max_vocab]
    lut = np.full(len(counts) + 1, -2, dtype=np.int32)  # index id+1; lut[0] is the sentence end
    lut[0] = -1
    lut[order + 1] = np.arange(len(order), dtype=np.int32)
    vocab_words = [words_by_id[i] for i in order]
    vocab_counts = counts[order].copy()
    del words_by_id
    # pass 2: map provisional ids to final ids, drop out-of-vocabulary words and empty sentences
    num_tokens = 0
    kept_sentences = 0
    prev_end = True
    with open(raw_path, "rb") as src, open(out_path, "wb") as dst:
        while True:
            block = np.fromfile(src, dtype=np.int32, count=1 << 20)
            if len(block) == 0:
                break
            mapped = lut[block + 1]
            mapped = mapped[mapped != -2]
            is_end = mapped == -1
            prev = np.empty_like(is_end)
            if len(is_end):
                prev[0] = prev_end
                prev[1:] = is_end[:-1]
                keep = ~(is_end & prev)
                mapped = mapped[keep]
                prev_end = bool(mapped[-1] == -1) if len(mapped) else prev_end
            num_tokens += int(np.count_nonzero(mapped >= 0))
            kept_sentences += int(np.count_nonzero(mapped == -1))
            mapped.tofile(dst)
        if not prev_end:
            np.array([-1], dtype=np.int32).tofile(dst)
            kept_sentences += 1
    raw_path.unlink(missing_ok=True)
    if log:
        log(
            f"read {num_raw:,} words in {num_sentences:,} sentences ({time.perf_counter() - t0:.1f}s); "
            f"vocabulary {len(vocab_words):,} words (min_count={min_count}), {num_tokens:,} tokens kept"
        )
    return EncodedCorpus(out_path, vocab_words, vocab_counts, num_tokens, num_raw, kept_sentences)


def _describe(corpus: Any) -> str:
    if isinstance(corpus, (str, os.PathLike)):
        return str(corpus)
    files = getattr(corpus, "files", None)
    if files:
        return ", ".join(str(f) for f in files[:2])
    return f"({type(corpus).__name__})"


def keep_probabilities(counts: np.ndarray, sample: float) -> np.ndarray:
    """Probability of keeping each word under subsampling (word2vec.c / gensim formula).

    With ``t = sample * total``, a word seen ``c`` times is kept with probability
    ``min(1, (sqrt(c / t) + 1) * t / c)``.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if sample <= 0:
        return np.ones(len(counts), dtype=np.float32)
    threshold = sample * counts.sum()
    keep = (np.sqrt(counts / threshold) + 1.0) * threshold / counts
    return np.minimum(keep, 1.0).astype(np.float32)


def noise_distribution(counts: np.ndarray, exponent: float = 0.75) -> np.ndarray:
    """The negative-sampling distribution ``count^exponent / sum`` (float64)."""
    w = np.asarray(counts, dtype=np.float64) ** exponent
    return w / w.sum()


# ---------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------


@dataclass
class EpochStats:
    epoch: int
    loss: float
    lr: float
    words: int
    seconds: float
    words_per_s: float
    examples: int = 0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "epoch": self.epoch, "loss": self.loss, "lr": self.lr, "words": self.words,
            "seconds": round(self.seconds, 3), "words_per_s": round(self.words_per_s, 1), "examples": self.examples,
        }


class Word2Vec:
    """Skip-gram / CBOW trainer. ``Word2Vec(config)`` constructs; ``fit(corpus)`` trains; ``wv`` is the result.

    Attributes after ``fit``:
        wv: :class:`lmlab.vectors.KeyedVectors` of the input vectors.
        history: one :class:`EpochStats` per epoch; ``loss`` is the mean loss per training example (per
            (centre, context) pair for skip-gram, per centre word for CBOW), summed over the positive and the
            noise words (or the Huffman-path nodes), measured before each example's update.
        syn1neg / syn1: the output vectors (negative sampling) and the Huffman inner-node vectors.
    """

    def __init__(self, config: Word2VecConfig | None = None):
        self.config = config or Word2VecConfig()
        self.config.validate()
        self.wv = None
        self.history: list[EpochStats] = []
        self.syn1neg: np.ndarray | None = None
        self.syn1: np.ndarray | None = None
        self.corpus_info: dict = {}

    def fit(self, corpus: Any, workdir: str | Path | None = None,
            log: Callable[[str], None] | None = None,
            on_epoch: Callable[[EpochStats], None] | None = None) -> Word2Vec:
        """Encode ``corpus`` (path, or restartable iterable of lines / token lists) and train on it."""
        cfg = self.config
        tmp = None
        if workdir is None:
            tmp = tempfile.mkdtemp(prefix="lmlab-w2v-")
            workdir = tmp
        try:
            enc = encode_corpus(corpus, cfg, workdir, cfg.min_count, cfg.max_vocab, log=log)
            self.train_encoded(enc, log=log, on_epoch=on_epoch)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                (Path(workdir) / "tokens.int32").unlink(missing_ok=True)
        return self

    def train_encoded(self, enc: EncodedCorpus, log: Callable[[str], None] | None = None,
                      on_epoch: Callable[[EpochStats], None] | None = None) -> Word2Vec:
        """Train on an already encoded corpus (see :func:`encode_corpus`)."""
        from lmlab.vectors import KeyedVectors

        K = load_kernels("_w2v_kernels")

        cfg = self.config
        vocab_size, dim = len(enc.words), cfg.embed_dim
        rng = np.random.default_rng(cfg.seed)
        spread = dim / (2 * cfg.init_scale) if cfg.init_scale > 0 else np.inf  # (u - 0.5) / spread
        syn0 = ((rng.random((vocab_size, dim), dtype=np.float32) - 0.5) / spread).astype(np.float32)
        syn1neg = np.zeros((vocab_size if cfg.negative else 1, dim), dtype=np.float32)
        if cfg.hs and vocab_size > 1:
            codes, points, lengths = K.build_huffman(enc.counts)
            syn1 = np.zeros((max(vocab_size - 1, 1), dim), dtype=np.float32)
        else:
            codes = np.zeros((1, 1), dtype=np.uint8)
            points = np.zeros((1, 1), dtype=np.int32)
            lengths = np.zeros(vocab_size, dtype=np.int32)
            syn1 = np.zeros((1, dim), dtype=np.float32)
        use_hs = bool(cfg.hs and vocab_size > 1)
        prob, alias = K.build_alias_table(noise_distribution(enc.counts, cfg.ns_exponent))
        keep = keep_probabilities(enc.counts, cfg.sample)
        threads = cfg.num_threads
        total_words = float(cfg.epochs * enc.num_tokens)
        lr_start, lr_end = cfg.start_lr, cfg.min_lr
        out_words = np.zeros(threads, dtype=np.int64)
        out_loss = np.zeros(threads, dtype=np.float64)
        out_examples = np.zeros(threads, dtype=np.int64)
        chunk_tokens = max(cfg.chunk_tokens, 4 * threads * cfg.max_sentence_length // 4)
        self.history = []
        for epoch in range(cfg.epochs):
            t0 = time.perf_counter()
            words_done = epoch * enc.num_tokens
            epoch_words = 0
            epoch_loss = 0.0
            epoch_examples = 0
            for chunk_idx, chunk in enumerate(enc.iter_chunks(chunk_tokens)):
                bounds = _split_bounds(chunk, threads)
                nslices = len(bounds) - 1
                seeds = np.array([K.seed_state(cfg.seed, epoch, chunk_idx, t) for t in range(nslices)],
                                 dtype=np.uint64)
                K.train_chunk(chunk, bounds, syn0, syn1neg, syn1, keep, prob, alias, codes, points, lengths,
                              cfg.arch == "skipgram", cfg.negative, use_hs, cfg.window, cfg.cbow_mean,
                              lr_start, lr_end, float(words_done + epoch_words), total_words,
                              cfg.max_sentence_length, seeds, out_words[:nslices], out_loss[:nslices],
                              out_examples[:nslices], cfg.compute_loss, cfg.shared_negatives)
                epoch_words += int(out_words[:nslices].sum())
                epoch_loss += float(out_loss[:nslices].sum())
                epoch_examples += int(out_examples[:nslices].sum())
            seconds = time.perf_counter() - t0
            progress = min(1.0, (words_done + epoch_words) / total_words)
            stats = EpochStats(
                epoch=epoch + 1,
                loss=epoch_loss / max(epoch_examples, 1),
                lr=lr_start - (lr_start - lr_end) * progress,
                words=epoch_words,
                seconds=seconds,
                words_per_s=epoch_words / max(seconds, 1e-9),
                examples=epoch_examples,
            )
            if not np.isfinite(stats.loss):
                from lmlab.errors import TrainingError

                raise TrainingError(f"epoch {epoch + 1}: the loss is {stats.loss}; lower lr (now {lr_start})")
            self.history.append(stats)
            if log:
                log(f"epoch {stats.epoch}/{cfg.epochs}  loss {stats.loss:.4f}  lr {stats.lr:.5f}  "
                    f"{stats.words_per_s / 1e3:,.0f}k words/s")
            if on_epoch:
                on_epoch(stats)
        self.syn1neg = syn1neg if cfg.negative else None
        self.syn1 = syn1 if use_hs else None
        self.wv = KeyedVectors(enc.words, syn0, counts=enc.counts)
        self.corpus_info = {
            "num_tokens": enc.num_tokens, "num_raw_tokens": enc.num_raw_tokens,
            "num_sentences": enc.num_sentences, "vocab_size": vocab_size,
        }
        return self

    # -- persistence -----------------------------------------------------------------------------------
    def save(self, run_dir: str | Path) -> Path:
        """Write the run directory: config.json, vectors.safetensors, vocab.json, metrics.jsonl."""
        if self.wv is None:
            raise ConfigError("nothing to save: call fit() first")
        from lmlab.config import config_to_dict

        extra = {"corpus": self.corpus_info, "history": [h.as_dict() for h in self.history]}
        return self.wv.save(run_dir, model_type=MODEL_TYPE,
                            sections={"model": config_to_dict(self.config), **extra},
                            metrics=[h.as_dict() for h in self.history])


def _split_bounds(chunk: np.ndarray, parts: int) -> np.ndarray:
    """Cut ``chunk`` (ending with -1) into at most ``parts`` slices that end at sentence ends."""
    n = len(chunk)
    if parts <= 1:
        return np.array([0, n], dtype=np.int64)
    seps = np.flatnonzero(chunk == -1)
    targets = (np.arange(1, parts) * n) // parts
    idx = np.searchsorted(seps, targets)
    cuts = seps[np.minimum(idx, len(seps) - 1)] + 1
    bounds = np.unique(np.concatenate([[0], cuts, [n]])).astype(np.int64)
    return bounds


def read_run_config(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "config.json"
    return json.loads(path.read_text(encoding="utf-8"))
