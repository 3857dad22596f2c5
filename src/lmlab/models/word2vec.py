"""word2vec: skip-gram and CBOW with negative sampling or hierarchical softmax (Mikolov et al., 2013).

This module is the thin Python driver; the compiled Hogwild kernels live in :mod:`lmlab.models._w2v_kernels`.
It trains from an encoded corpus (:class:`lmlab.data.sentences.EncodedCorpus`: a frequency-sorted vocabulary
and an on-disk ``int32`` token array, ``-1`` ending each sentence), streamed from disk in chunks, so memory holds
the vocabulary, the two weight matrices and one chunk, whatever the corpus length. Reading and tokenizing the
text is the data layer's job; run directories and resume are the recipe's (:mod:`lmlab.recipes.embed`).

Example:
    >>> from lmlab.recipes.embed import Word2VecRecipe
    >>> Word2VecRecipe.from_preset("sgns", ["epochs=1"], corpus="corpus.txt.gz").train("runs/w2v")
    >>> Word2VecRecipe.load("runs/w2v").most_similar("king")
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from lmlab.errors import ConfigError
from lmlab.models._compiled import load_kernels

__all__ = ["EpochStats", "Word2Vec", "Word2VecConfig", "keep_probabilities", "noise_distribution"]

MODEL_TYPE = "word2vec"


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
        for name in ("sample", "ns_exponent", "min_lr", "init_scale"):
            value = getattr(self, name)
            if not math.isfinite(value):
                problems.append(f"{name} must be a finite number, got {value}")
            elif name != "ns_exponent" and value < 0:
                problems.append(f"{name} must be >= 0, got {value}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            problems.append(f"lr must be > 0, got {self.lr}")
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
# Sampling tables
# ---------------------------------------------------------------------------------------------------------


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
    """Skip-gram / CBOW trainer. ``Word2Vec(config)`` constructs; ``fit(encoded_corpus)`` trains.

    Attributes after ``fit``:
        words, counts: the vocabulary (most frequent first) and its counts; ``vectors`` the input vectors.
        history: one :class:`EpochStats` per epoch; ``loss`` is the mean loss per training example (per
            (centre, context) pair for skip-gram, per centre word for CBOW), summed over the positive and the
            noise words (or the Huffman-path nodes), measured before each example's update.
        syn1neg / syn1: the output vectors (negative sampling) and the Huffman inner-node vectors.

    Training state between epochs (:meth:`training_state` / :meth:`load_training_state`): the three weight
    matrices and the number of epochs done. Nothing else is carried: the learning rate is a function of the
    words done, and each chunk's kernel RNG is seeded from ``(seed, epoch, chunk, thread)``, so a run resumed
    at an epoch boundary continues exactly as an uninterrupted one (on one thread).
    """

    config_cls = Word2VecConfig

    def __init__(self, config: Word2VecConfig | None = None):
        self.config = config or Word2VecConfig()
        self.config.validate()
        self.words: list[str] = []
        self.counts: np.ndarray | None = None
        self.vectors: np.ndarray | None = None
        #: the :class:`~lmlab.vectors.KeyedVectors` of ``words`` / ``vectors``, filled in by
        #: :func:`lmlab.recipes.embed.fit_corpus` (models do not import lmlab.vectors)
        self.wv: Any = None
        self.history: list[EpochStats] = []
        self.syn0: np.ndarray | None = None
        self.syn1neg: np.ndarray | None = None
        self.syn1: np.ndarray | None = None
        self.epochs_done = 0
        self.corpus_info: dict = {}

    # -- state carried between epochs ------------------------------------------------------------------
    def training_state(self) -> dict:
        """``{"arrays": {name: ndarray}, "epoch": n, "history": [...]}`` after ``epoch`` completed epochs."""
        return {
            "arrays": {"syn0": self.syn0, "syn1neg": self.syn1neg, "syn1": self.syn1},
            "epoch": self.epochs_done,
            "history": [h.as_dict() for h in self.history],
        }

    def load_training_state(self, state: dict) -> None:
        """Continue from :meth:`training_state` output at the next ``fit``."""
        arrays = state["arrays"]
        self.syn0, self.syn1neg, self.syn1 = (np.ascontiguousarray(arrays[k], dtype=np.float32)
                                              for k in ("syn0", "syn1neg", "syn1"))
        self.epochs_done = int(state["epoch"])
        self.history = [EpochStats(**{k: v for k, v in h.items()}) for h in state.get("history", [])]

    def continue_from(self, state: dict, vocab_size: int) -> None:
        """Start the next :meth:`fit` from a finished run's weights, on a vocabulary of ``vocab_size`` words whose
        first rows are that run's words (continued training on new text, gensim's ``build_vocab(update=True)``
        then ``train``): those rows of the input and output weights are the saved ones, exactly; the new words'
        input rows are drawn as a fresh run with this seed draws them and their output rows are zero. The epochs
        and the learning-rate schedule start again (from ``lr`` to ``min_lr`` over the new corpus), the history empty.

        Raises:
            ConfigError: the saved weights do not fit this config (another embed_dim or output layer) or hold
                more words than ``vocab_size``.
        """
        cfg = self.config
        arrays = state["arrays"]
        syn0 = np.asarray(arrays["syn0"], dtype=np.float32)
        old_vocab, dim = syn0.shape
        if dim != cfg.embed_dim or old_vocab > vocab_size:
            raise ConfigError(
                f"the run to continue holds {old_vocab} x {dim} vectors; this config has embed_dim {cfg.embed_dim} "
                f"and a vocabulary of {vocab_size} words; keep the run's embed_dim"
            )
        use_hs = bool(cfg.hs and vocab_size > 1)
        self._init_weights(vocab_size, use_hs)
        self.syn0[:old_vocab] = syn0
        for name in ("syn1neg", "syn1"):
            old, new = np.asarray(arrays[name], dtype=np.float32), getattr(self, name)
            rows = min(len(old), len(new))
            if old.shape[1] != dim or (name == "syn1neg" and (len(old) > 1) != (len(new) > 1)):
                raise ConfigError(f"the run to continue has another output layer ({name} {old.shape}); keep its "
                                  "negative / hs settings")
            new[:rows] = old[:rows]

    def _init_weights(self, vocab_size: int, use_hs: bool) -> None:
        cfg = self.config
        dim = cfg.embed_dim
        rng = np.random.default_rng(cfg.seed)
        spread = dim / (2 * cfg.init_scale) if cfg.init_scale > 0 else np.inf  # (u - 0.5) / spread
        self.syn0 = ((rng.random((vocab_size, dim), dtype=np.float32) - 0.5) / spread).astype(np.float32)
        self.syn1neg = np.zeros((vocab_size if cfg.negative else 1, dim), dtype=np.float32)
        self.syn1 = np.zeros((max(vocab_size - 1, 1) if use_hs else 1, dim), dtype=np.float32)
        self.epochs_done = 0
        self.history = []

    def fit(self, enc: Any, log: Callable[[str], None] | None = None,
            on_epoch: Callable[[EpochStats], None] | None = None) -> Word2Vec:
        """Train on an encoded corpus (:func:`lmlab.data.sentences.encode_corpus`): from fresh weights, or from
        the state given to :meth:`load_training_state` (its epochs are skipped). ``on_epoch`` runs after each
        epoch, when :meth:`training_state` holds that epoch's end."""
        if not hasattr(enc, "iter_chunks"):
            raise ConfigError(
                f"Word2Vec.fit takes an encoded corpus, got {type(enc).__name__}; encode text with "
                "lmlab.data.sentences.encode_corpus, or train from a file with lmlab.recipes.embed.Word2VecRecipe"
            )
        K = load_kernels("_w2v_kernels")

        cfg = self.config
        vocab_size, dim = len(enc.words), cfg.embed_dim
        use_hs = bool(cfg.hs and vocab_size > 1)
        if self.syn0 is None:
            self._init_weights(vocab_size, use_hs)
        elif self.syn0.shape != (vocab_size, dim):
            raise ConfigError(
                f"the saved training state holds {self.syn0.shape[0]} x {self.syn0.shape[1]} vectors but the corpus "
                f"gives a vocabulary of {vocab_size} words x embed_dim {dim}"
            )
        syn0, syn1neg, syn1 = self.syn0, self.syn1neg, self.syn1
        if use_hs:
            codes, points, lengths = _huffman(K, np.asarray(enc.counts))
        else:
            codes = np.zeros((1, 1), dtype=np.uint8)
            points = np.zeros((1, 1), dtype=np.int32)
            lengths = np.zeros(vocab_size, dtype=np.int32)
        prob, alias = K.build_alias_table(noise_distribution(enc.counts, cfg.ns_exponent))
        keep = keep_probabilities(enc.counts, cfg.sample)
        threads = cfg.num_threads
        total_words = float(cfg.epochs * enc.num_tokens)
        lr_start, lr_end = cfg.start_lr, cfg.min_lr
        out_words = np.zeros(threads, dtype=np.int64)
        out_loss = np.zeros(threads, dtype=np.float64)
        out_examples = np.zeros(threads, dtype=np.int64)
        chunk_tokens = max(cfg.chunk_tokens, 4 * threads * cfg.max_sentence_length // 4)
        self.words, self.counts = list(enc.words), np.asarray(enc.counts)
        self.corpus_info = {
            "num_tokens": enc.num_tokens, "num_raw_tokens": enc.num_raw_tokens,
            "num_sentences": enc.num_sentences, "vocab_size": vocab_size,
        }
        for epoch in range(self.epochs_done, cfg.epochs):
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
            self.epochs_done = epoch + 1
            if log:
                log(f"epoch {stats.epoch}/{cfg.epochs}  loss {stats.loss:.4f}  lr {stats.lr:.5f}  "
                    f"{stats.words_per_s / 1e3:,.0f}k words/s")
            if on_epoch:
                on_epoch(stats)
        self.vectors = syn0
        return self

    #: the name the equation tables of docs/word2vec.md cite
    train_encoded = fit


def _huffman(K: Any, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Huffman tree of ``counts`` (codes, points, lengths per word); the kernel needs them sorted, so an
    updated vocabulary (old words first) is built in frequency order and mapped back to its ids."""
    if np.all(counts[:-1] >= counts[1:]):
        return K.build_huffman(counts)
    order = np.argsort(-counts, kind="stable")
    codes, points, lengths = K.build_huffman(counts[order])
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return codes[rank], points[rank], lengths[rank]


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
