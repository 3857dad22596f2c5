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
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from lmlab.data.tokenizers import WhitespaceTokenizer  # noqa: F401  (moved; re-exported for old imports)
from lmlab.errors import ConfigError, DataError

TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.json"


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

    def validate(self) -> None:
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


class LMCodec:
    """Turns text into the model's token-id stream and ids back into text; saved in the run directory.

    Word level (``whitespace``/``word``): every line becomes its tokens followed by ``<eos>``; unknown words map
    to ``<unk>``. Character level and BPE: the text is read as it is, newlines included.
    """

    def __init__(self, kind: str, tokenizer: Any, vocab: Any | None) -> None:
        self.kind = kind
        self.tokenizer = tokenizer
        self.vocab = vocab  # a lmlab Vocab (None for BPE, whose ids come from the BPE model)

    # --- building and persistence -------------------------------------------------------------------------
    @classmethod
    def fit(cls, text: str, cfg: LMDataConfig) -> LMCodec:
        from lmlab.data.tokenizers import BPETokenizer, CharTokenizer, WordTokenizer
        from lmlab.data.vocab import build_vocab

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
            token_lists = [tok.tokenize(text)]
        else:
            tok = WhitespaceTokenizer(cfg.lowercase) if cfg.tokenizer == "whitespace" else WordTokenizer(
                lowercase=cfg.lowercase, strip_html=False
            )
            token_lists = (tok.tokenize(line) for line in text.splitlines())
        vocab = build_vocab(token_lists, min_freq=cfg.min_freq, max_size=cfg.vocab_size or None)
        return cls(cfg.tokenizer, tok, vocab)

    def to_dict(self) -> dict:
        return self.tokenizer.to_dict()

    def save(self, run_dir: str | Path) -> None:
        from lmlab import checkpoint

        checkpoint.atomic_write_json(Path(run_dir) / TOKENIZER_FILE, self.to_dict())
        if self.vocab is not None:
            self.vocab.save(Path(run_dir) / VOCAB_FILE)

    @classmethod
    def load(cls, run_dir: str | Path, kind: str) -> LMCodec:
        from lmlab import checkpoint
        from lmlab.data.tokenizers import tokenizer_from_dict
        from lmlab.data.vocab import Vocab

        d = checkpoint.read_json(Path(run_dir) / TOKENIZER_FILE, "tokenizer.json")
        tok = tokenizer_from_dict(d)
        vocab = None if kind == "bpe" else Vocab.load(Path(run_dir) / VOCAB_FILE)
        return cls(kind, tok, vocab)

    # --- ids -----------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size if self.vocab is None else len(self.vocab)

    @property
    def word_level(self) -> bool:
        return self.kind in ("whitespace", "word")

    @property
    def eos_id(self) -> int | None:
        """Generation never stops on a token here (``<eos>`` is a line break); use stop strings."""
        return None

    def encode_text(self, text: str) -> tuple[Tensor, int]:
        """The id stream of ``text`` (int64, 1-D) and how many tokens were unknown (mapped to ``<unk>``)."""
        if self.kind == "bpe":
            lines = text.splitlines(keepends=True)
            ids: list[int] = []
            for chunk in self.tokenizer.encode_batch(lines):
                ids.extend(chunk)
            return torch.tensor(ids, dtype=torch.long), 0
        unk = self.vocab.unk_id
        if self.kind == "char":
            ids = self.vocab.encode(self.tokenizer.tokenize(text))
        else:
            eos = self.vocab.eos_id
            ids = []
            for line in text.splitlines():
                ids.extend(self.vocab.encode(self.tokenizer.tokenize(line)))
                ids.append(eos)
        tensor = torch.tensor(ids, dtype=torch.long)
        # a "<unk>" already in a PTB-style file is a word of the data, not an out-of-vocabulary event
        literal = text.count("<unk>") if self.kind == "whitespace" else 0
        return tensor, max(0, int((tensor == unk).sum()) - literal)

    def encode_prompt(self, text: str) -> list[int]:
        """Ids of a generation prompt. Characters outside the vocabulary are an error (naming them); unknown
        words become ``<unk>`` with a warning."""
        if self.kind == "bpe":
            return self.tokenizer.encode(text)
        tokens = self.tokenizer.tokenize(text)
        if self.kind == "char":
            unknown = sorted({t for t in tokens if t not in self.vocab})
            if unknown:
                shown = ", ".join(repr(c) for c in unknown[:10])
                raise DataError(
                    f"the prompt has {len(unknown)} character(s) this model never saw in training: {shown}; "
                    "remove or replace them"
                )
            return self.vocab.encode(tokens)
        unknown = [t for t in tokens if t not in self.vocab]
        if unknown:
            warnings.warn(
                f"{len(unknown)} prompt word(s) are not in the vocabulary and are read as <unk>: "
                + ", ".join(repr(w) for w in unknown[:10]),
                UserWarning,
                stacklevel=2,
            )
        return self.vocab.encode(tokens)

    def start_ids(self) -> list[int]:
        """What an empty prompt starts from: the end of a line (``<eos>`` or ``\\n``)."""
        if self.word_level:
            return [self.vocab.eos_id]
        ids = self.tokenizer.encode("\n") if self.kind == "bpe" else self.vocab.encode(["\n"])
        if not ids or (self.vocab is not None and ids[0] == self.vocab.unk_id):
            return [self.vocab.unk_id if self.vocab is not None else 0]
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of generated ids. Word level: tokens joined by spaces, ``<eos>`` as a line break, and a leading
        space (the text continues a prompt)."""
        if self.kind == "bpe":
            return self.tokenizer.decode(list(ids))
        if self.kind == "char":
            return "".join(self.vocab.decode(ids, skip_specials=True))
        eos = self.vocab.eos_id
        out: list[str] = []
        for i, token in zip(ids, self.vocab.decode(ids), strict=True):
            if i == eos:
                out.append("\n")
            elif token in ("<pad>", "<bos>"):
                continue
            else:
                out.append(token if (out and out[-1] == "\n") else " " + token)
        return "".join(out)

    decode_continuation = decode


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
