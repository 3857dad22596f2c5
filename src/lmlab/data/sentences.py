"""Word-vector corpora: text -> sentences of words -> an on-disk ``int32`` token array with its vocabulary.

The corpus is read once (:func:`encode_corpus`): words are counted and written as provisional ids to a file,
then the vocabulary is chosen (``min_count``, ``max_vocab``, sorted by frequency) and the file is rewritten as
the final ``int32`` token array (``-1`` ends a sentence). word2vec and GloVe train from that array
(:class:`EncodedCorpus`), so memory holds the vocabulary and one chunk, whatever the corpus length. Words come
from :class:`lmlab.data.tokenizers.VectorWordTokenizer`, the one text layer every family uses.
"""

from __future__ import annotations

import os
import time
import warnings
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmlab.data.readers import TextCorpus, require_restartable
from lmlab.data.tokenizers import _HAN_RE, VectorWordTokenizer, check_segmenter_option, resolve_segmenter
from lmlab.errors import DataError

__all__ = ["EncodedCorpus", "VectorDataConfig", "encode_corpus", "iter_sentences", "tokenize", "tokenizer_for",
           "vector_tokenizer"]

#: the long-token check: Chinese tokens whose median length (by occurrence) is above this many characters mean the
#: text was not segmented into words
LONG_TOKEN_CHARS = 4


@dataclass
class VectorDataConfig:
    """The ``data`` section of a word-vector run: how runs of Chinese/Japanese characters split into words."""

    #: ``auto`` (Chinese text -> jieba when installed, else one word per character; other text as before:
    #: ``none``), ``jieba``, ``char``, ``none`` (a run between punctuation is one word)
    segmenter: str = "auto"
    #: a jieba user dictionary (one word per line: word [freq] [tag]); its path and sha256 are saved with the run
    user_dict: str = ""

    def validate(self) -> None:
        check_segmenter_option(self.segmenter, self.user_dict)


def tokenize(text: str, lowercase: bool = True, tokenizer: str = "words") -> list[str]:
    """Split ``text`` into words the way the word-vector trainers do."""
    return VectorWordTokenizer(lowercase=lowercase, mode=tokenizer).tokenize(text)


def _as_corpus(corpus: Any, encoding: str, text_field: str) -> Iterable:
    if isinstance(corpus, (str, os.PathLike)):
        return TextCorpus(corpus, encoding=encoding, text_field=text_field, unit="line")
    require_restartable(corpus, "corpus")
    return corpus


def tokenizer_for(cfg: Any) -> VectorWordTokenizer:
    """The tokenizer a word-vector config asks for (``cfg.lowercase``, ``cfg.tokenizer``, and ``cfg.segmenter``
    when the config has one: a name in :data:`lmlab.data.tokenizers.SEGMENTERS`; default ``"none"``)."""
    return VectorWordTokenizer(lowercase=cfg.lowercase, mode=cfg.tokenizer, segmenter=getattr(cfg, "segmenter", "none"))


def vector_tokenizer(cfg: Any, data: VectorDataConfig, corpus: Any,
                     log: Callable[[str], None] | None = None) -> VectorWordTokenizer:
    """:func:`tokenizer_for` ``(cfg)`` with ``data.segmenter`` (``auto`` resolved on the first lines of
    ``corpus`` and logged) and ``data.user_dict``."""
    segmenter = data.segmenter
    if segmenter == "auto" and cfg.tokenizer == "words":
        sample = _sample_lines(corpus, cfg)
        segmenter = resolve_segmenter("auto", sample, "none", "words", log)
    elif segmenter == "auto":
        segmenter = "none"
    return VectorWordTokenizer(lowercase=cfg.lowercase, mode=cfg.tokenizer, segmenter=segmenter,
                               user_dict=data.user_dict or None)


def _sample_lines(corpus: Any, cfg: Any, max_chars: int = 200_000) -> list[str]:
    out, seen = [], 0
    for item in _as_corpus(corpus, cfg.encoding, cfg.text_field):
        if not isinstance(item, str):
            break  # token lists: already split
        out.append(item)
        seen += len(item)
        if seen >= max_chars:
            break
    return out


def long_token_warning(words: list[str], counts: np.ndarray) -> str | None:
    """A warning when the Chinese "words" of a corpus are mostly long: the median length of the tokens that start
    with a Han character, counted by occurrence, above :data:`LONG_TOKEN_CHARS` (real Chinese words: 1-2
    characters) means the text was split only at punctuation, so the "words" are whole phrases."""
    han = [(len(w), int(n)) for w, n in zip(words, counts, strict=True) if _HAN_RE.match(w)]
    total = sum(n for _, n in han)
    if total < 100:
        return None
    seen = 0
    for length, n in sorted(han):
        seen += n
        if 2 * seen >= total:
            median = length
            break
    if median <= LONG_TOKEN_CHARS:
        return None
    return (
        f"the vocabulary is dominated by long tokens: half of the {total:,} Chinese tokens read are longer than "
        f"{median - 1} characters (whole phrases, not words); segment the text into words with "
        "data.segmenter=jieba (pip install 'lmlab[zh]') or data.segmenter=char"
    )


def iter_sentences(corpus: Any, cfg: Any, tokenizer: Any = None) -> Iterator[list[str]]:
    """Yield the token lists (sentences) of ``corpus``: a path, a restartable iterable of lines (str) or of
    token lists. ``cfg`` supplies lowercase, tokenizer, break_on, text_field, encoding, max_sentence_length;
    lines are split by ``tokenizer`` (default: :func:`tokenizer_for` ``(cfg)``)."""
    lines = _as_corpus(corpus, cfg.encoding, cfg.text_field)
    limit = cfg.max_sentence_length
    lower = cfg.lowercase
    split = (tokenizer or tokenizer_for(cfg)).tokenize
    paragraph: list[str] = []
    for item in lines:
        if isinstance(item, str):
            words = split(item)
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
    counts: np.ndarray  # (V,) int64, non-increasing (except after a vocabulary update: old words first)
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
                  log: Callable[[str], None] | None = None, tokenizer: Any = None,
                  base_vocab: tuple[Sequence[str], Any] | None = None) -> EncodedCorpus:
    """Read ``corpus`` once (split by ``tokenizer``, default :func:`tokenizer_for` ``(cfg)``) and write it to
    ``workdir/tokens.int32`` with a frequency-sorted vocabulary. Warns (through ``log``, else a ``UserWarning``)
    when Chinese text was not segmented (:func:`long_token_warning`).

    ``base_vocab`` ``(words, counts)`` updates an existing vocabulary instead (continued training, gensim's
    ``build_vocab(update=True)``): its words keep their ids whatever their count here, their counts add this
    corpus's, and the words of this corpus that occur ``min_count`` times and are new follow them, most frequent
    first (``max_vocab`` caps the total). The counts are then no longer sorted.

    Raises:
        DataError: the corpus holds no words, or no word occurs ``min_count`` times (with ``base_vocab``: no word
            of the corpus is kept).
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
        for words in iter_sentences(corpus, cfg, tokenizer):
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
    warning = long_token_warning(words_by_id, counts)
    if warning and log:
        log(f"warning: {warning}")
    elif warning:
        warnings.warn(warning, UserWarning, stacklevel=2)
    kept = np.flatnonzero(counts >= min_count)
    if base_vocab is not None:
        return _encode_update(raw_path, out_path, words_by_id, counts, base_vocab, min_count, max_vocab, corpus,
                              num_raw, num_sentences, t0, log)
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
    num_tokens, kept_sentences = _remap(raw_path, out_path, lut)
    if log:
        log(
            f"read {num_raw:,} words in {num_sentences:,} sentences ({time.perf_counter() - t0:.1f}s); "
            f"vocabulary {len(vocab_words):,} words (min_count={min_count}), {num_tokens:,} tokens kept"
        )
    return EncodedCorpus(out_path, vocab_words, vocab_counts, num_tokens, num_raw, kept_sentences)


def _encode_update(raw_path: Path, out_path: Path, words_by_id: list[str], counts: np.ndarray,
                   base_vocab: tuple[Sequence[str], Any], min_count: int, max_vocab: int, corpus: Any,
                   num_raw: int, num_sentences: int, t0: float, log: Callable[[str], None] | None) -> EncodedCorpus:
    """:func:`encode_corpus` with ``base_vocab``: the old words first (same ids), then the new frequent ones."""
    old_words = list(base_vocab[0])
    old_counts = np.asarray(base_vocab[1], dtype=np.int64)
    lut = np.full(len(counts) + 1, -2, dtype=np.int32)  # index id+1; lut[0] is the sentence end
    lut[0] = -1
    old_index = {w: i for i, w in enumerate(old_words)}
    here = np.array([old_index.get(w, -1) for w in words_by_id], dtype=np.int64)  # provisional id -> old id
    seen = np.flatnonzero(here >= 0)
    lut[seen + 1] = here[seen]
    vocab_counts = old_counts.copy()
    vocab_counts[here[seen]] += counts[seen]
    fresh = np.flatnonzero((here < 0) & (counts >= min_count))
    fresh = fresh[np.argsort(-counts[fresh], kind="stable")]
    if max_vocab:
        fresh = fresh[: max(0, max_vocab - len(old_words))]
    lut[fresh + 1] = len(old_words) + np.arange(len(fresh), dtype=np.int32)
    vocab_words = old_words + [words_by_id[i] for i in fresh]
    vocab_counts = np.concatenate([vocab_counts, counts[fresh]])
    del words_by_id
    num_tokens, kept_sentences = _remap(raw_path, out_path, lut)
    if num_tokens == 0:
        out_path.unlink(missing_ok=True)
        raise DataError(
            f"{_describe(corpus)} shares no word with the vocabulary it continues ({len(old_words):,} words) and no "
            f"new word occurs min_count={min_count} times; continue on text of the same language, or lower min_count"
        )
    if log:
        log(
            f"read {num_raw:,} words in {num_sentences:,} sentences ({time.perf_counter() - t0:.1f}s); "
            f"vocabulary {len(old_words):,} + {len(fresh):,} new words (min_count={min_count}), "
            f"{num_tokens:,} tokens kept"
        )
    return EncodedCorpus(out_path, vocab_words, vocab_counts, num_tokens, num_raw, kept_sentences)


def _remap(raw_path: Path, out_path: Path, lut: np.ndarray) -> tuple[int, int]:
    """Pass 2: provisional ids -> final ids through ``lut`` (``-2``: out of vocabulary, dropped), empty sentences
    dropped; deletes ``raw_path``. Returns (tokens kept, sentences kept)."""
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
    return num_tokens, kept_sentences


def _describe(corpus: Any) -> str:
    if isinstance(corpus, (str, os.PathLike)):
        return str(corpus)
    files = getattr(corpus, "files", None)
    if files:
        return ", ".join(str(f) for f in files[:2])
    return f"({type(corpus).__name__})"
