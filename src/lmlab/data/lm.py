"""Text for recurrent language models: the text file, the codec (text <-> one token-id stream, saved with the
run) and truncated-BPTT batches.

Text is one long token stream: word level (``whitespace`` for pre-tokenised PTB/WikiText files, ``word`` for
raw text; ``<eos>`` ends every line) or character level / BPE (the newline is a token like any other). The
stream is cut into ``batch_size`` contiguous rows and read ``bptt`` steps at a time (:class:`BPTTBatches`), so
the model can carry its hidden state from one batch to the next.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from lmlab.data.codec import TOKENIZER_FILE, VOCAB_FILE, Codec  # noqa: F401  (file names kept here for old imports)
from lmlab.data.tokenizers import WhitespaceTokenizer, check_segmenter_option
from lmlab.errors import ConfigError, DataError


# ------------------------------------------------------------------------------------------------ config
@dataclass
class LMDataConfig:
    #: whitespace: split on spaces (PTB/WikiText files); word: lmlab's regex word tokenizer (raw text);
    #: char: one token per character; bpe: byte-pair encoding trained with Hugging Face tokenizers
    tokenizer: Literal["whitespace", "word", "char", "bpe"] = "whitespace"
    lowercase: bool = False
    #: largest vocabulary including the specials <pad> <unk> <bos> <eos> (0: every token seen); for bpe the
    #: exact BPE vocabulary size to train
    vocab_size: int = 0
    min_freq: int = 1
    bpe_pre_tokenizer: Literal["byte_level", "whitespace"] = "byte_level"
    bptt: int = 35
    eval_batch_size: int = 10
    #: without --val, hold out the last fraction of the training text (split by characters, as nanoGPT)
    val_fraction: float = 0.0
    encoding: str = "utf-8"
    #: for .jsonl inputs: the field holding the text
    text_field: str = "text"
    #: word tokenizer: how runs of Chinese/Japanese characters split into words: ``auto`` (Chinese text -> jieba
    #: when installed, else one token per character; other text as before), ``jieba``, ``char``, ``none``
    segmenter: str = "auto"
    #: a jieba user dictionary (one word per line: word [freq] [tag]); its path and sha256 are saved with the run
    user_dict: str = ""

    def validate(self) -> None:
        if self.tokenizer == "word":
            check_segmenter_option(self.segmenter, self.user_dict)
        if self.bptt < 1:
            raise ConfigError(f"data.bptt must be >= 1, got {self.bptt}")
        if self.eval_batch_size < 1:
            raise ConfigError(f"data.eval_batch_size must be >= 1, got {self.eval_batch_size}")
        if self.vocab_size < 0 or self.min_freq < 1:
            raise ConfigError("data.vocab_size must be >= 0 and data.min_freq >= 1")
        if self.tokenizer == "bpe" and self.vocab_size == 0:
            raise ConfigError("data.tokenizer=bpe needs data.vocab_size (e.g. data.vocab_size=4000)")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")



# ------------------------------------------------------------------------------------------- text <-> ids
def read_text(path: str | os.PathLike, cfg: LMDataConfig) -> str:
    """The whole text of a file (``.gz``/``.bz2``/``.xz``, ``.jsonl`` records) with ``\\n`` line ends."""
    from lmlab.data.readers import TextCorpus

    corpus = TextCorpus(path, encoding=cfg.encoding, text_field=cfg.text_field)
    text = "".join(line + "\n" for line in corpus)
    if not text.strip():
        raise DataError(f"{path}: the file holds no text")
    return text


def lm_options(kind: str) -> dict:
    """The RNN LM's codec options for ``data.tokenizer``: word level, each line's tokens then ``<eos>``, decoded
    with ``<eos>`` as a line break (unknown prompt words warn); characters decoded as they are (unknown prompt
    characters are an error); BPE encoded line by line, newlines kept."""
    if kind in ("whitespace", "word"):
        return {"split_lines": "eos", "join": "lines", "on_unknown": "warn"}
    if kind == "char":
        return {"on_unknown": "error"}
    return {"split_lines": "keepends"}


class LMCodec(Codec):
    """The RNN LM's :class:`~lmlab.data.codec.Codec` (options from :func:`lm_options`), saved in the run
    directory as ``tokenizer.json`` + ``vocab.json`` (none for BPE).

    Word level (``whitespace``/``word``): every line becomes its tokens followed by ``<eos>``; unknown words map
    to ``<unk>``. Character level and BPE: the text is read as it is, newlines included.
    """

    def __init__(self, kind: str, tokenizer: Any, vocab: Any | None) -> None:
        super().__init__(tokenizer, vocab, **lm_options(kind))

    # --- building and persistence -------------------------------------------------------------------------
    @classmethod
    def fit(cls, text: str, cfg: LMDataConfig, log: Callable[[str], None] | None = None) -> LMCodec:  # type: ignore[override]
        """Build the LM codec of ``cfg.tokenizer`` from the training text (``word``: ``cfg.segmenter=auto`` is
        resolved on it and logged)."""
        from lmlab.data.tokenizers import BPETokenizer, CharTokenizer, WordTokenizer, resolve_segmenter

        if cfg.tokenizer == "bpe":
            tok = BPETokenizer.train(
                text.splitlines(keepends=True),
                vocab_size=cfg.vocab_size,
                pre_tokenizer=cfg.bpe_pre_tokenizer,
                min_frequency=cfg.min_freq if cfg.min_freq > 1 else 2,
                lowercase=cfg.lowercase,
            )
            return cls("bpe", tok, None)
        if cfg.tokenizer == "char":
            tok = CharTokenizer(lowercase=cfg.lowercase)
        elif cfg.tokenizer == "whitespace":
            tok = WhitespaceTokenizer(cfg.lowercase)
        else:
            segmenter = resolve_segmenter(cfg.segmenter, [text], "char", "word", log)
            tok = WordTokenizer(lowercase=cfg.lowercase, strip_html=False, segmenter=segmenter,
                                user_dict=cfg.user_dict or None)
        codec = cls(cfg.tokenizer, tok, None)
        Codec.fit(codec, [text], min_freq=cfg.min_freq, max_size=cfg.vocab_size or None)
        return codec

    def save(self, run_dir: str | Path) -> None:
        """``run_dir/tokenizer.json`` and ``run_dir/vocab.json`` (:meth:`Codec.save_split`)."""
        self.save_split(run_dir)

    @classmethod
    def load(cls, run_dir: str | Path, kind: str) -> LMCodec:  # type: ignore[override]
        tok, vocab = cls.load_split(run_dir)
        return cls(kind, tok, vocab)

    # --- ids -----------------------------------------------------------------------------------------------
    @property
    def word_level(self) -> bool:
        return self.kind in ("whitespace", "word")

    def encode_text(self, text: str) -> tuple[Tensor, int]:
        """The id stream of ``text`` (int64, 1-D) and how many tokens were unknown (mapped to ``<unk>``)."""
        tensor = torch.tensor(self.encode(text), dtype=torch.long)
        if self.vocab is None:
            return tensor, 0
        # a "<unk>" already in a PTB-style file is a word of the data, not an out-of-vocabulary event
        literal = text.count("<unk>") if self.kind == "whitespace" else 0
        return tensor, max(0, int((tensor == self.vocab.unk_id).sum()) - literal)

    decode_continuation = Codec.decode


# --------------------------------------------------------------------------------------------- batching
@dataclass
class LMBatch:
    inputs: Tensor  # (B, T)
    targets: Tensor  # (B, T): inputs shifted by one

    def to(self, device: torch.device | str) -> LMBatch:
        return LMBatch(self.inputs.to(device, non_blocking=True), self.targets.to(device, non_blocking=True))


class BPTTBatches:
    """Truncated-BPTT batches of a token stream: ``batch_size`` contiguous rows read ``bptt`` steps at a time.

    Row ``b`` holds tokens ``[b*L, (b+1)*L)`` of the stream (L = len // batch_size; the remainder is dropped),
    so batch ``k+1`` continues every row exactly where batch ``k`` stopped and the hidden state can be carried.
    Under torchrun each rank takes its own slice of the rows. ``chars_per_token`` lets evaluation report
    per-character numbers for any tokenization.
    """

    def __init__(
        self, ids: Tensor, batch_size: int, bptt: int, name: str = "data", chars_per_token: float | None = None
    ) -> None:
        from lmlab import distributed

        if batch_size < 1 or bptt < 1:
            raise ConfigError(f"batch_size and bptt must be >= 1, got {batch_size} and {bptt}")
        need = batch_size * (bptt + 1)
        if ids.numel() < need:
            raise DataError(
                f"the {name} text has {ids.numel()} tokens, fewer than one BPTT batch needs "
                f"(batch_size {batch_size} x (bptt {bptt} + 1) = {need}); use more text or a smaller "
                "train.batch_size / data.bptt (data.eval_batch_size for validation)"
            )
        self.batch_size, self.bptt, self.name = batch_size, bptt, name
        self.chars_per_token = chars_per_token
        per_row = ids.numel() // batch_size
        data = ids[: per_row * batch_size].view(batch_size, per_row)  # (B, L)
        world = distributed.world_size()
        if world > 1 and name == "train":
            if batch_size % world:
                raise ConfigError(
                    f"train.batch_size={batch_size} must be divisible by the number of processes ({world})"
                )
            per = batch_size // world
            data = data[distributed.rank() * per : (distributed.rank() + 1) * per]
        self.data = data

    @property
    def num_tokens(self) -> int:
        """Tokens predicted per pass (the first token of each row is only ever an input)."""
        return self.data.shape[0] * (self.data.shape[1] - 1)

    def __len__(self) -> int:
        return math.ceil((self.data.shape[1] - 1) / self.bptt)

    def iter_from(self, start: int) -> Iterator[LMBatch]:
        length = self.data.shape[1]
        for i in range(start * self.bptt, length - 1, self.bptt):
            t = min(self.bptt, length - 1 - i)
            yield LMBatch(self.data[:, i : i + t], self.data[:, i + 1 : i + 1 + t])

    def __iter__(self) -> Iterator[LMBatch]:
        return self.iter_from(0)


def chars_per_token(text: str, num_tokens: int) -> float:
    """Characters of ``text`` per token of its id stream (for per-character numbers at any tokenization)."""
    return len(text) / max(num_tokens, 1)


def split_tail(text: str, fraction: float, word_level: bool) -> tuple[str, str]:
    """First (1 - fraction) of the characters and the rest; word-level splits at the next line break."""
    cut = int(len(text) * (1 - fraction))
    if word_level:
        nl = text.find("\n", cut)
        cut = len(text) if nl < 0 else nl + 1
    return text[:cut], text[cut:]
