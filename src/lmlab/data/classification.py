"""Labelled text -> tensors for classification: text encoders, datasets and the collate function.

Two kinds of :class:`~lmlab.data.codec.Codec` (:func:`classify_codec`), both saved as JSON in the run directory (``tokenizer.json``) so the vocabulary travels with the model:

- ``keras``: the classic Keras pipeline, exactly: ``Tokenizer(num_words, oov_token)`` then
  ``pad_sequences(maxlen, padding, truncating)`` (fixed-length rows, 0 = padding).
- ``word``: lmlab's Unicode word tokenizer + a :class:`~lmlab.data.vocab.Vocab` (min_freq, max_size), rows of
  their true length (up to ``max_len``) so recurrent layers can pack them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from lmlab.data.codec import Codec
from lmlab.data.readers import Example
from lmlab.data.tokenizers import (
    AUTO_HAN_THRESHOLD,
    KerasTokenizer,
    WordTokenizer,
    check_segmenter_option,
    han_share,
    pad_sequences,
    resolve_segmenter,
)
from lmlab.data.vocab import Vocab
from lmlab.errors import CheckpointError, ConfigError, DataError


@dataclass
class ClassifyDataConfig:
    """How texts become ids. ``tokenizer="keras"`` reproduces Keras' Tokenizer + pad_sequences."""

    tokenizer: Literal["keras", "word"] = "word"
    #: keras: keep ids < num_words (index 0 padding, 1 OOV); word: maximum vocabulary size incl. specials (0: no cap)
    num_words: int = 10000
    oov_token: str = "<OOV>"
    lowercase: bool = True
    strip_html: bool = True
    min_freq: int = 1
    max_len: int = 100
    padding: Literal["pre", "post"] = "post"
    truncating: Literal["pre", "post"] = "post"
    #: fraction of the training data held out for validation when no --val file is given (0: none)
    val_split: float = 0.1
    #: word tokenizer: how runs of Chinese/Japanese characters split into words: ``auto`` (Chinese text -> jieba
    #: when installed, else one token per character; other text as before), ``jieba``, ``char``, ``none``
    segmenter: str = "auto"
    #: a jieba user dictionary (one word per line: word [freq] [tag]); its path and sha256 are saved with the run
    user_dict: str = ""

    def validate(self) -> None:
        if self.tokenizer == "word":
            check_segmenter_option(self.segmenter, self.user_dict)
        if self.max_len < 1:
            raise ConfigError(f"data.max_len must be >= 1, got {self.max_len}")
        if not 0 <= self.val_split < 1:
            raise ConfigError(f"data.val_split must be in [0, 1), got {self.val_split}")
        if self.num_words < 0 or (self.tokenizer == "keras" and self.num_words < 3):
            raise ConfigError(f"data.num_words must be >= 3 for the keras tokenizer, got {self.num_words}")


def classify_codec(cfg: ClassifyDataConfig, tokenizer=None, vocab: Vocab | None = None, segmenter: str = "char") -> Codec:
    """The classification family's :class:`~lmlab.data.codec.Codec`: ``keras`` (the Keras Tokenizer's own ids)
    or ``word`` (WordTokenizer with ``segmenter`` + Vocab); ids cut to ``max_len`` by the ``truncating`` rule."""
    if tokenizer is None:
        if cfg.tokenizer == "keras":
            tokenizer = KerasTokenizer(num_words=cfg.num_words, oov_token=cfg.oov_token, lower=cfg.lowercase)
        else:
            tokenizer = WordTokenizer(lowercase=cfg.lowercase, strip_html=cfg.strip_html, segmenter=segmenter,
                                      user_dict=cfg.user_dict or None)
    return Codec(tokenizer, vocab, max_len=cfg.max_len, truncating=cfg.truncating)


class TextEncoder:
    """The classifier's texts -> id rows: a :class:`~lmlab.data.codec.Codec` (:func:`classify_codec`) plus the
    family's row rules (keras: padded to ``max_len`` as Keras does; word: unpadded, never empty).

    ``fit`` on training texts; saved in the run directory as ``tokenizer.json`` (the codec's JSON; runs written
    before the one text layer hold a ``classify-encoder`` description, still read by :meth:`from_dict`).
    """

    def __init__(self, cfg: ClassifyDataConfig, codec: Codec | None = None) -> None:
        self.cfg = cfg
        self.codec = codec

    @property
    def keras(self) -> KerasTokenizer | None:
        return self.codec.tokenizer if self.codec is not None and self.codec.vocab is None else None

    @property
    def vocab(self) -> Vocab | None:
        return self.codec.vocab if self.codec is not None else None

    def fit(self, texts: Sequence[str], log: Callable[[str], None] | None = None) -> TextEncoder:
        """Build the codec from the training texts (``data.segmenter=auto`` is resolved on them and logged)."""
        cfg = self.cfg
        segmenter = "char"
        if cfg.tokenizer == "word":
            segmenter = resolve_segmenter(cfg.segmenter, texts, "char", "word", log)
        elif log is not None and han_share(texts) > AUTO_HAN_THRESHOLD:
            log("warning: the keras tokenizer splits only at spaces and punctuation, so Chinese text becomes whole "
                "phrases; use data.tokenizer=word (Chinese words segmented by data.segmenter)")
        self.codec = classify_codec(cfg, segmenter=segmenter)
        if cfg.tokenizer == "keras":
            self.codec.tokenizer.fit_on_texts(texts)
        else:
            self.codec.fit(texts, min_freq=cfg.min_freq, max_size=cfg.num_words or None, keep_tokens=True)
        return self

    @property
    def vocab_size(self) -> int:
        if self.codec is None:
            raise DataError("the text encoder has not been fitted")
        return self.cfg.num_words if self.keras is not None else self.codec.vocab_size

    def tokens(self, text: str) -> list[str]:
        return self.codec.tokens(text)

    def itos(self) -> list[str]:
        """id -> token for every id below vocab_size (for pretrained-vector initialisation)."""
        if self.keras is not None:
            out = ["<pad>"] * self.cfg.num_words
            for word, idx in self.keras.word_index.items():
                if idx < self.cfg.num_words:
                    out[idx] = word
            return out
        return list(self.vocab.itos)  # type: ignore[union-attr]

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Id lists; keras: padded/truncated to max_len exactly as Keras; word: truncated, unpadded."""
        cfg = self.cfg
        rows = self.codec.encode_batch(list(texts))
        if self.keras is not None:
            return [list(map(int, row)) for row in pad_sequences(rows, maxlen=cfg.max_len, padding=cfg.padding, truncating=cfg.truncating)]
        unk = self.vocab.stoi["<unk>"]  # type: ignore[union-attr]
        return [ids or [unk] for ids in rows]

    def to_dict(self) -> dict:
        return self.codec.to_dict()

    @classmethod
    def from_dict(cls, d: dict, cfg: ClassifyDataConfig) -> TextEncoder:
        try:
            if isinstance(d, dict) and d.get("format") == "lmlab.codec":
                saved = Codec.from_dict(d, "tokenizer.json")
                return cls(cfg, classify_codec(cfg, saved.tokenizer, saved.vocab))
            if d.get("type") != "classify-encoder":  # written before the one text layer
                raise KeyError("type")
            if d["mode"] == "keras":
                return cls(cfg, classify_codec(cfg, KerasTokenizer.from_dict(d["tokenizer"])))
            return cls(cfg, classify_codec(cfg, WordTokenizer.from_dict(d["tokenizer"]), Vocab.from_dict(d["vocab"])))
        except (KeyError, TypeError, AttributeError) as err:
            raise CheckpointError(f"tokenizer.json is not a classifier text encoder (missing {err})") from None


@dataclass
class ClassifyBatch:
    """ids (B, T) padded with 0, lengths (B,), labels (B,)."""

    ids: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device) -> ClassifyBatch:
        return ClassifyBatch(self.ids.to(device), self.lengths, self.labels.to(device))


class ClassifyDataset:
    """Encoded examples: ``(ids, label_index)`` pairs."""

    def __init__(self, ids: list[list[int]], labels: list[int]) -> None:
        self.ids = ids
        self.labels = labels

    @classmethod
    def build(cls, examples: Sequence[Example], encoder: TextEncoder, labels: Sequence[str], source: str = "data") -> ClassifyDataset:
        index = {lab: i for i, lab in enumerate(labels)}
        unseen = sorted({ex.label for ex in examples} - set(index))
        if unseen:
            first = next(ex for ex in examples if ex.label not in index)
            raise DataError(
                f"{first.where}: label {first.label!r} was never seen in training (unseen: "
                f"{', '.join(map(repr, unseen[:5]))}; the model knows {', '.join(map(repr, labels))})"
            )
        return cls(encoder.encode([ex.text for ex in examples]), [index[ex.label] for ex in examples])

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[list[int], int]:
        return self.ids[i], self.labels[i]


def collate(items: list[tuple[list[int], int]]) -> ClassifyBatch:
    """Pad to the longest row of the batch (rows of the keras encoder are already equal length)."""
    lengths = [len(ids) for ids, _ in items]
    width = max(len(ids) for ids, _ in items)
    ids = torch.zeros(len(items), width, dtype=torch.long)
    for r, (row, _) in enumerate(items):
        ids[r, : len(row)] = torch.tensor(row, dtype=torch.long)
    return ClassifyBatch(ids, torch.tensor(lengths), torch.tensor([lab for _, lab in items]))
