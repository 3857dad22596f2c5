"""Parallel corpora for sequence-to-sequence models: reading pairs, source/target codecs, bucketed batches.

Three layouts are read, each giving a list of ``(source, target)`` strings:

* two line-aligned files (:func:`read_aligned`), e.g. ``train.de.gz`` + ``train.en.gz``;
* a TSV of pairs (:func:`read_tsv`), the Tatoeba/ManyThings ``fra.txt`` format ``English<TAB>French<TAB>...``
  (extra columns ignored; ``reverse=True`` swaps the two sides);
* JSON Lines (:func:`read_jsonl`) with one object per pair (``{"src": ..., "tgt": ...}``, or other field names).

Misaligned input is an error that names the files, both line counts and the first line that is empty on one
side only. A :class:`~lmlab.data.codec.Codec` (:func:`text_codec`) turns text into ids and back (words via :class:`~lmlab.data.WordTokenizer` +
:class:`~lmlab.data.Vocab`, or byte-level BPE via :class:`~lmlab.data.BPETokenizer`); source and target have
their own codec or share one. :func:`make_loader` filters by length and buckets batches by length with
:class:`~lmlab.data.loader.EpochLoader` into :class:`Seq2SeqBatch` (what :class:`lmlab.models.seq2seq.Seq2Seq` reads).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from lmlab.data.codec import Codec
from lmlab.data.readers import open_text
from lmlab.data.tokenizers import (
    BPETokenizer,
    WordTokenizer,
    check_segmenter_option,
    detokenize_words,
    resolve_segmenter,
    tokenizer_from_dict,
)
from lmlab.data.vocab import Vocab
from lmlab.errors import CheckpointError, ConfigError, DataError

Pair = tuple[str, str]

#: the special ids every seq2seq codec reserves (and :mod:`lmlab.models.seq2seq` decodes with)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3

SRC_FIELD_GUESSES = ("src", "source", "input", "question", "prompt", "context")
TGT_FIELD_GUESSES = ("tgt", "target", "output", "answer", "response", "summary", "reference")


class TruncationWarning(UserWarning):
    """A sentence was longer than the model's maximum and was cut."""


@dataclass
class ParallelDataConfig:
    """How text becomes ids for a seq2seq model (saved with the run)."""

    #: ``word``: WordTokenizer + Vocab; ``bpe``: byte-level BPE (round-trips the text exactly)
    tokenizer: Literal["word", "bpe"] = "word"
    lowercase: bool = False
    #: one vocabulary for both sides (needed by model.share_embeddings)
    shared_vocab: bool = False
    #: bpe: the vocabulary size to learn; word: the largest vocabulary (specials included; 0 = no limit)
    vocab_size: int = 8000
    #: word vocabularies keep words seen at least this often in the training data
    min_freq: int = 1
    #: training pairs longer than these (in tokens) are dropped; longer inputs to translate are handled by on_long
    max_src_len: int = 100
    max_tgt_len: int = 100
    #: a sentence to translate that is longer than max_src_len: cut it (with a warning) or raise an error
    on_long: Literal["truncate", "error"] = "truncate"
    #: a pair with one empty side: raise an error naming the line, or drop it
    on_empty: Literal["error", "skip"] = "error"
    #: word tokenizer: how runs of Chinese/Japanese characters split into words, for each side: ``auto`` (decided
    #: per side: Chinese text -> jieba when installed, else one token per character; other text as before),
    #: ``jieba``, ``char``, ``none``
    segmenter: str = "auto"
    #: a jieba user dictionary (one word per line: word [freq] [tag]); its path and sha256 are saved with the run
    user_dict: str = ""

    def validate(self) -> None:
        problems = []
        if self.tokenizer == "word":
            check_segmenter_option(self.segmenter, self.user_dict)
        if self.vocab_size < 0 or (self.tokenizer == "bpe" and self.vocab_size < 260):
            problems.append(f"data.vocab_size={self.vocab_size}: BPE needs >= 260 (256 bytes + 4 specials); word: >= 0")
        if self.min_freq < 1:
            problems.append(f"data.min_freq must be >= 1, got {self.min_freq}")
        for key in ("max_src_len", "max_tgt_len"):
            if getattr(self, key) < 1:
                problems.append(f"data.{key} must be >= 1, got {getattr(self, key)}")
        if problems:
            raise ConfigError("; ".join(problems))


# ------------------------------------------------------------------------------------------------ reading


def _read_lines(path: str | Path, encoding: str) -> list[str]:
    with open_text(path, encoding=encoding) as f:
        return [line.strip() for line in f]


def _check_empty(
    pairs: list[tuple[int, str, str]], where_src: str, where_tgt: str, on_empty: str
) -> list[Pair]:
    """Drop lines empty on both sides; pairs empty on one side raise (naming the first) or are skipped."""
    out: list[Pair] = []
    one_sided = [(n, s, t) for n, s, t in pairs if bool(s) != bool(t)]
    if one_sided and on_empty == "error":
        n, s, _ = one_sided[0]
        side = where_tgt if s else where_src
        raise DataError(
            f"{side}:{n}: empty line where the other side has text ({len(one_sided)} such pair(s)); "
            "fix the alignment, or drop them with data.on_empty=skip (--skip-empty)"
        )
    for _, s, t in pairs:
        if s and t:
            out.append((s, t))
    return out


def read_aligned(src_path: str | Path, tgt_path: str | Path, encoding: str = "utf-8", on_empty: str = "error") -> list[Pair]:
    """Pairs from two line-aligned files (``.gz``/``.bz2``/``.xz`` allowed)."""
    src = _read_lines(src_path, encoding)
    tgt = _read_lines(tgt_path, encoding)
    if len(src) != len(tgt):
        odd = next((i for i, (s, t) in enumerate(zip(src, tgt, strict=False)) if bool(s) != bool(t)), None)
        if odd is not None:
            side = src_path if not src[odd] else tgt_path
            hint = f"the first line empty on one side only is {side}:{odd + 1}"
        else:
            shorter = src_path if len(src) < len(tgt) else tgt_path
            hint = f"no line is empty on one side only; {shorter} ends first, at line {min(len(src), len(tgt))}"
        raise DataError(
            f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}; the files must be line-aligned "
            f"({hint})"
        )
    if not src:
        raise DataError(f"{src_path} and {tgt_path} are empty")
    return _check_empty(
        [(i + 1, s, t) for i, (s, t) in enumerate(zip(src, tgt, strict=True))], str(src_path), str(tgt_path), on_empty
    )


def read_tsv(path: str | Path, reverse: bool = False, encoding: str = "utf-8", on_empty: str = "error") -> list[Pair]:
    """Pairs from ``source<TAB>target[<TAB>more...]`` lines (the Tatoeba ``fra.txt`` format).

    Extra columns (e.g. attribution) are ignored; blank lines are skipped; ``reverse`` swaps the two columns.
    """
    rows: list[tuple[int, str, str]] = []
    with open_text(path, encoding=encoding) as f:
        for line in f:
            if not line.strip():
                continue
            if "\t" not in line:
                shown = line if len(line) <= 60 else line[:57] + "..."
                raise DataError(
                    f"{path}:{f.lineno}: no tab in this row ({shown!r}); a TSV pair file needs "
                    "'source<TAB>target' on every line (extra columns are ignored)"
                )
            cols = line.split("\t")
            s, t = cols[0].strip(), cols[1].strip()
            rows.append((f.lineno, t, s) if reverse else (f.lineno, s, t))
    if not rows:
        raise DataError(f"{path}: no pairs (the file is empty)")
    where = str(path)
    return _check_empty(rows, f"{where} (source column)", f"{where} (target column)", on_empty)


def read_jsonl(
    path: str | Path,
    src_field: str | None = None,
    tgt_field: str | None = None,
    encoding: str = "utf-8",
    on_empty: str = "error",
) -> list[Pair]:
    """Pairs from JSON Lines; the fields default to the first of ``src/source/input/question/prompt`` and
    ``tgt/target/output/answer/response`` present in the first record."""
    rows: list[tuple[int, str, str]] = []
    with open_text(path, encoding=encoding) as f:
        for line in f:
            if not line.strip():
                continue
            where = f"{path}:{f.lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: not valid JSON ({err.msg}); each line must be one JSON object") from None
            if not isinstance(rec, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
            if src_field is None or tgt_field is None:
                src_field = src_field or next((k for k in SRC_FIELD_GUESSES if k in rec), None)
                tgt_field = tgt_field or next((k for k in TGT_FIELD_GUESSES if k in rec), None)
                if src_field is None or tgt_field is None:
                    raise DataError(
                        f"{where}: cannot tell the source and target fields among {sorted(rec)}; "
                        "pass --src-field and --tgt-field"
                    )
            values = []
            for name in (src_field, tgt_field):
                if name not in rec:
                    raise DataError(f"{where}: no field {name!r} (fields: {', '.join(sorted(rec))})")
                value = rec[name]
                if not isinstance(value, str):
                    raise DataError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
                values.append(value.strip())
            rows.append((f.lineno, values[0], values[1]))
    if not rows:
        raise DataError(f"{path}: no pairs (the file is empty)")
    return _check_empty(rows, f"{path} (field {src_field!r})", f"{path} (field {tgt_field!r})", on_empty)


def load_pairs(
    path: str | Path,
    tgt_path: str | Path | None = None,
    reverse: bool = False,
    src_field: str | None = None,
    tgt_field: str | None = None,
    encoding: str = "utf-8",
    on_empty: str = "error",
) -> list[Pair]:
    """Pairs from two aligned files (``tgt_path`` given), a JSONL file (``.jsonl[.gz]``) or a TSV file."""
    if tgt_path is not None:
        pairs = read_aligned(path, tgt_path, encoding, on_empty)
        return [(t, s) for s, t in pairs] if reverse else pairs
    name = Path(path).name
    for suffix in (".gz", ".bz2", ".xz"):
        name = name.removesuffix(suffix)
    if name.endswith((".jsonl", ".json")):
        pairs = read_jsonl(path, src_field, tgt_field, encoding, on_empty)
        return [(t, s) for s, t in pairs] if reverse else pairs
    return read_tsv(path, reverse, encoding, on_empty)


def read_lines(path: str | Path, encoding: str = "utf-8") -> list[str]:
    """Sentences to translate / references: one per line, ``-`` is stdin. Lines keep their position."""
    if str(path) == "-":
        import sys

        return [line.rstrip("\n").strip() for line in sys.stdin]
    return _read_lines(path, encoding)


# ----------------------------------------------------------------------------------------------- codecs

#: the punctuation-aware join of word tokens (kept here under its old name)
detokenize = detokenize_words


def text_codec(tokenizer, vocab: Vocab | None = None) -> Codec:
    """The seq2seq codec of one side: ids without specials; decoding drops ``<pad> <bos> <eos>`` (``<unk>``
    shows) and joins words with the punctuation rule of :meth:`WordTokenizer.detokenize`."""
    return Codec(tokenizer, vocab, skip="framing")


def train_text_codec(texts: Sequence[str], cfg: ParallelDataConfig, log: Callable[[str], None] | None = None) -> Codec:
    """A word (WordTokenizer + Vocab; ``cfg.segmenter=auto`` resolved on ``texts``) or byte-level BPE codec built
    from ``texts``."""
    if not texts:
        raise DataError("cannot build a vocabulary from no text")
    if cfg.tokenizer == "bpe":
        try:
            bpe = BPETokenizer.train(
                texts, vocab_size=cfg.vocab_size, pre_tokenizer="byte_level", min_frequency=2, lowercase=cfg.lowercase
            )
        except DataError as err:
            raise DataError(f"{err} (data.vocab_size)") from None
        return text_codec(bpe)
    segmenter = resolve_segmenter(cfg.segmenter, texts, "char", "word", log)
    tok = WordTokenizer(lowercase=cfg.lowercase, strip_html=False, segmenter=segmenter, user_dict=cfg.user_dict or None)
    codec = text_codec(tok)
    return codec.fit(texts, min_freq=cfg.min_freq, max_size=cfg.vocab_size or None)


def load_text_codec(path: str | Path) -> Codec:
    """A side's codec file: the uniform ``lmlab.codec`` format, or the ``lmlab.text_codec`` of earlier runs."""
    from lmlab.checkpoint import read_json

    d = read_json(path, "text codec")
    if isinstance(d, dict) and d.get("format") == "lmlab.text_codec":  # written before the one text layer
        if d.get("kind") not in ("word", "bpe"):
            raise CheckpointError(f"{path}: not an lmlab text codec file")
        tok = tokenizer_from_dict(d["tokenizer"])
        if d["kind"] == "word" and d.get("vocab") is None:
            raise CheckpointError(f"{path}: word codec without a vocabulary")
        return text_codec(tok, Vocab.from_dict(d["vocab"], str(path)) if d["kind"] == "word" else None)
    return Codec.from_dict(d, str(path))


def unk_rate(ids_lists: Iterable[Sequence[int]]) -> float:
    """Share of ``<unk>`` ids in encoded sentences."""
    total = unk = 0
    for ids in ids_lists:
        total += len(ids)
        unk += sum(1 for i in ids if i == UNK_ID)
    return unk / max(total, 1)


def build_codecs(pairs: Sequence[Pair], cfg: ParallelDataConfig, log: Callable[[str], None] | None = None) -> tuple[Codec, Codec]:
    """Source and target codecs trained on ``pairs`` (the same object twice when ``cfg.shared_vocab``)."""
    cfg.validate()
    if cfg.shared_vocab:
        codec = train_text_codec([s for s, _ in pairs] + [t for _, t in pairs], cfg, log)
        return codec, codec
    return train_text_codec([s for s, _ in pairs], cfg, log), train_text_codec([t for _, t in pairs], cfg, log)


# ----------------------------------------------------------------------------------------------- batches


@dataclass
class Seq2SeqBatch:
    """A padded batch: ``src`` (B, S), ``src_lengths`` (B,), ``tgt_in`` = <bos> y (B, T), ``tgt_out`` = y <eos>."""

    src: torch.Tensor
    src_lengths: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor

    def to(self, device: torch.device | str) -> Seq2SeqBatch:
        return Seq2SeqBatch(
            self.src.to(device), self.src_lengths.to(device), self.tgt_in.to(device), self.tgt_out.to(device)
        )

    def __len__(self) -> int:
        return self.src.shape[0]


def pad_ids(seqs: list[list[int]], pad: int = PAD_ID) -> torch.Tensor:
    """Right-pad lists of ids into a (B, max_len) long tensor."""
    longest = max((len(s) for s in seqs), default=0)
    out = torch.full((len(seqs), max(1, longest)), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def collate_pairs(items: list[tuple[list[int], list[int]]]) -> Seq2SeqBatch:
    """Pad ``(src_ids, tgt_ids)`` pairs (without specials) into a :class:`Seq2SeqBatch`."""
    srcs = [s for s, _ in items]
    tgts = [t for _, t in items]
    return Seq2SeqBatch(
        src=pad_ids(srcs),
        src_lengths=torch.tensor([len(s) for s in srcs], dtype=torch.long),
        tgt_in=pad_ids([[BOS_ID, *t] for t in tgts]),
        tgt_out=pad_ids([[*t, EOS_ID] for t in tgts]),
    )


class ParallelDataset:
    """Encoded pairs ``(src_ids, tgt_ids)`` (no specials), map-style for :class:`EpochLoader`."""

    def __init__(self, items: list[tuple[list[int], list[int]]], dropped: int = 0) -> None:
        self.items = items
        #: pairs removed by the length filter
        self.dropped = dropped

    @classmethod
    def encode(
        cls, pairs: Sequence[Pair], src: Codec, tgt: Codec, max_src_len: int, max_tgt_len: int
    ) -> ParallelDataset:
        """Encode and keep pairs with 1..max tokens on each side (the length filter)."""
        src_ids = src.encode_batch([s for s, _ in pairs])
        tgt_ids = tgt.encode_batch([t for _, t in pairs])
        items, dropped = [], 0
        for s, t in zip(src_ids, tgt_ids, strict=True):
            if 0 < len(s) <= max_src_len and 0 < len(t) <= max_tgt_len:
                items.append((s, t))
            else:
                dropped += 1
        return cls(items, dropped)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[list[int], list[int]]:
        return self.items[i]

    def num_tokens(self) -> tuple[int, int]:
        return sum(len(s) for s, _ in self.items), sum(len(t) for _, t in self.items)


def length_key(item: tuple[list[int], list[int]]) -> int:
    """Bucketing key: source length, then target length."""
    return len(item[0]) * 4096 + len(item[1])


def make_loader(dataset: ParallelDataset, batch_size: int, shuffle: bool = True, seed: int = 0):
    """Length-bucketed, seeded batches of :class:`Seq2SeqBatch`."""
    from lmlab.data.loader import EpochLoader

    if len(dataset) == 0:
        raise DataError("no training pairs left after the length filter; raise data.max_src_len / max_tgt_len")
    return EpochLoader(dataset, batch_size, shuffle=shuffle, seed=seed, collate_fn=collate_pairs, sort_key=length_key)


def fit_source(ids: list[int], max_len: int, on_long: str, text: str) -> list[int]:
    """Apply the model's maximum source length: cut with a :class:`TruncationWarning`, or raise DataError."""
    if len(ids) <= max_len:
        return ids
    shown = text if len(text) <= 50 else text[:47] + "..."
    if on_long == "error":
        raise DataError(
            f"the sentence {shown!r} has {len(ids)} tokens, more than the model's maximum {max_len}; "
            "shorten it or pass --on-long truncate"
        )
    warnings.warn(
        f"the sentence {shown!r} has {len(ids)} tokens; only the first {max_len} are translated",
        TruncationWarning,
        stacklevel=3,
    )
    return ids[:max_len]
