"""Sentence data: one sentence per line -> fixed-length id rows (SeqGAN's real-data input), and back to text.

Tokens come from the shared tokenizers (``whitespace``: ``line.split()``, lowercased if asked; ``word``:
:class:`lmlab.data.tokenizers.WordTokenizer`) and ids from :class:`lmlab.data.vocab.Vocab` (``<pad>``, ``<unk>``,
``<bos>``, ``<eos>`` first), saved in a run directory as ``vocab.json``. :func:`sentence_codec` builds the text <-> ids
:class:`~lmlab.data.codec.Codec` of a trained run; a run on the synthetic oracle has no vocabulary and its text is the token ids themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from lmlab.data.codec import Codec
from lmlab.data.tokenizers import IdTokenizer, check_segmenter_option, resolve_segmenter
from lmlab.data.vocab import Vocab
from lmlab.errors import DataError


@dataclass
class SentenceDataConfig:
    """Real-data source (``source: data``): one sentence per line, whitespace-tokenised or WordTokenizer'd."""

    path: str = ""
    #: held-out sentences: BLEU references and held-out NLL ("" = none)
    test_path: str = ""
    tokenizer: Literal["whitespace", "word"] = "whitespace"
    lowercase: bool = True
    max_vocab: int = 5000
    min_freq: int = 1
    #: use only the first N lines (0: all)
    max_lines: int = 0
    #: text encoding of path and test_path (e.g. gb18030)
    encoding: str = "utf-8"
    #: word tokenizer: how runs of Chinese/Japanese characters split into words: ``auto`` (Chinese text -> jieba
    #: when installed, else one token per character), ``jieba``, ``char``, ``none``; a run's config.json holds the
    #: resolved choice
    segmenter: str = "auto"
    #: a jieba user dictionary (one word per line: word [freq] [tag]); its path and sha256 are checked at load
    user_dict: str = ""

    def validate(self) -> None:
        if self.tokenizer == "word":
            check_segmenter_option(self.segmenter, self.user_dict)

    def resolve_segmenter(self, log: Callable[[str], None] | None = None) -> str:
        """Fix ``segmenter`` for this data (``auto``: decided on the first lines of ``path``) and return it."""
        if self.tokenizer == "word" and self.segmenter == "auto" and self.path and Path(self.path).is_file():
            from lmlab.data.readers import open_text

            sample, seen = [], 0
            with open_text(Path(self.path), self.encoding) as fh:
                for line in fh:
                    sample.append(line)
                    seen += len(line)
                    if seen >= 200_000:
                        break
            self.segmenter = resolve_segmenter("auto", sample, "char", "word", log)
        return self.segmenter


def sentence_tokenizer(kind: str = "whitespace", lowercase: bool = True, segmenter: str = "char",
                       user_dict: str = "") -> Callable[[str], list[str]]:
    """``text -> tokens`` for ``data.tokenizer`` (``whitespace`` or ``word``)."""
    return _tokenizer(kind, lowercase, segmenter, user_dict).tokenize


def _tokenizer(kind: str, lowercase: bool, segmenter: str = "char", user_dict: str = ""):
    from lmlab.data.tokenizers import WhitespaceTokenizer, WordTokenizer

    if kind != "word":
        return WhitespaceTokenizer(lowercase=lowercase)
    segmenter = "char" if segmenter == "auto" else segmenter  # runs saved before the segmenter option
    return WordTokenizer(lowercase=lowercase, segmenter=segmenter, user_dict=user_dict or None)


def read_sentences(
    path: str | Path, kind: str = "whitespace", lowercase: bool = True, max_lines: int = 0,
    segmenter: str = "char", user_dict: str = "", encoding: str = "utf-8",
) -> list[list[str]]:
    """Tokenised non-blank lines of a text file (.gz/.bz2/.xz ok)."""
    from lmlab.data.readers import open_text

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file; pass one sentence per line (e.g. ../shared/data/multi30k/...)")
    tokenize = sentence_tokenizer(kind, lowercase, segmenter, user_dict)
    out = []
    with open_text(p, encoding) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            out.append(tokenize(line))
            if max_lines and len(out) >= max_lines:
                break
    if not out:
        raise DataError(f"{p}: the file holds no non-blank lines")
    return out


def encode_sentences(
    lines: Sequence[Sequence[str]], vocab: Vocab, max_len: int, where: str = "data"
) -> tuple[Tensor, int]:
    """Token lists -> (N, max_len) ids: tokens + <eos>, padded with <pad>; longer ones truncated (returns count)."""
    eos, pad = vocab.eos_id, vocab.pad_id
    rows, truncated = [], 0
    for tokens in lines:
        ids = vocab.encode(tokens) + [eos]
        if len(ids) > max_len:
            truncated += 1
            ids = ids[:max_len]
        rows.append(ids + [pad] * (max_len - len(ids)))
    if not rows:
        raise DataError(f"{where}: no sentences to train on; check the file (one sentence per line)")
    return torch.tensor(rows, dtype=torch.long), truncated  # (N, max_len)


def sentence_codec(
    vocab: Vocab | None,
    vocab_size: int,
    eos_id: int = -1,
    pad_id: int = -1,
    tokenizer: str = "whitespace",
    lowercase: bool = True,
    segmenter: str = "char",
    user_dict: str = "",
) -> Codec:
    """The text <-> ids codec of a sentence model: the vocabulary and tokenizer of a real-data run, or none
    (oracle runs, whose "text" is space-separated token ids below ``vocab_size``). Decoding stops at the first
    ``<eos>``/``<pad>`` and joins the tokens with spaces."""
    end_ids = [i for i in dict.fromkeys((eos_id, pad_id)) if i >= 0]
    tok = _tokenizer(tokenizer, lowercase, segmenter, user_dict) if vocab is not None else IdTokenizer(vocab_size)
    return Codec(tok, vocab, skip="none", end_ids=end_ids, stop_at_end=True, join="space")
