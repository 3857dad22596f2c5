"""Token streams on disk: a corpus tokenized once into a memory-mapped file, and batches of random blocks.

The GPT recipe (nanoGPT's ``train.bin``): read the corpus line by line, encode it in chunks and append the ids
to a flat binary file (``uint16`` when the vocabulary fits in 65,536 ids, else ``uint32``) beside a small JSON
description. Training then maps the file with ``numpy.memmap`` and copies out only the rows of each batch, so
memory does not grow with the size of the corpus.

* :class:`TokenCodec` - text <-> ids with a character vocabulary or a BPE tokenizer; saved in the run directory.
* :func:`write_token_file` / :func:`open_token_file` - the on-disk stream.
* :class:`RandomBlocks` - seeded, resumable, distributed-aware random blocks for training.
* :class:`SequentialBlocks` - every non-overlapping block once, in order, for evaluation.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from lmlab import distributed
from lmlab.checkpoint import atomic_write_json
from lmlab.data.codec import TOKENIZER_FILE, VOCAB_FILE, Codec  # noqa: F401  (file names kept here for old imports)
from lmlab.data.tokenizers import BPETokenizer, CharTokenizer, HFTokenizer
from lmlab.data.vocab import Vocab
from lmlab.errors import CheckpointError, ConfigError, DataError

#: characters of text handed to the tokenizer at once while writing a token file
CHUNK_CHARS = 1 << 20


@dataclass
class TokenDataConfig:
    """How a text corpus becomes token ids (the ``data`` section of a GPT config)."""

    #: "char": one token per character; "bpe": byte-level byte-pair encoding (Hugging Face tokenizers);
    #: "hf": a pretrained model's own tokenizer (``lmlab gpt import``; it is not trained)
    tokenizer: Literal["char", "bpe", "hf"] = "char"
    #: BPE vocabulary size, specials included (ignored for "char")
    vocab_size: int = 2000
    lowercase: bool = False
    #: when no separate validation file is given, the last fraction of the tokens is held out
    val_fraction: float = 0.1
    encoding: str = "utf-8"
    #: batch size (in blocks) of the validation pass
    eval_batch_size: int = 32
    #: evaluate on at most this many validation tokens (0: all of them)
    max_eval_tokens: int = 0

    def validate(self) -> None:
        problems = token_data_problems(self, min_bpe_vocab=260)
        if problems:
            raise ConfigError("; ".join(problems))


def token_data_problems(cfg, min_bpe_vocab: int) -> list[str]:
    """What is wrong with the fields every token-stream ``data`` section has (GPT's, the masked LM's):
    val_fraction, a BPE vocabulary of at least ``min_bpe_vocab`` (the 256 bytes + specials), eval_batch_size and
    max_eval_tokens."""
    problems = []
    if not 0.0 <= cfg.val_fraction < 1.0:
        problems.append(f"data.val_fraction must be in [0, 1), got {cfg.val_fraction}")
    if cfg.tokenizer == "bpe" and cfg.vocab_size < min_bpe_vocab:
        problems.append(f"data.vocab_size must be >= {min_bpe_vocab} for byte-level BPE (256 bytes + specials), "
                        f"got {cfg.vocab_size}")
    if cfg.eval_batch_size < 1:
        problems.append(f"data.eval_batch_size must be >= 1, got {cfg.eval_batch_size}")
    if cfg.max_eval_tokens < 0:
        problems.append(f"data.max_eval_tokens must be >= 0, got {cfg.max_eval_tokens}")
    return problems


def iter_text(path: str | os.PathLike, encoding: str = "utf-8") -> Iterator[str]:
    """The text of a file (or of every file in a folder, .gz/.bz2/.xz/.jsonl too) as lines ending in "\\n"."""
    from lmlab.data.readers import TextCorpus

    for line in TextCorpus(path, encoding=encoding):
        yield line + "\n"


def _chunks(lines: Iterable[str], size: int = CHUNK_CHARS) -> Iterator[str]:
    buf: list[str] = []
    n = 0
    for line in lines:
        buf.append(line)
        n += len(line)
        if n >= size:
            yield "".join(buf)
            buf, n = [], 0
    if buf:
        yield "".join(buf)


class TokenCodec(Codec):
    """The GPT's :class:`~lmlab.data.codec.Codec`: a character :class:`Vocab` or a :class:`BPETokenizer`, no
    framing (a GPT reads one running stream of text), specials dropped when decoding.

    Build it from a corpus with :meth:`fit`; it saves ``tokenizer.json`` (and ``vocab.json`` for characters)
    into a run directory and :meth:`load` reads them back, so the vocabulary always travels with the model.
    """

    def __init__(self, tokenizer: CharTokenizer | BPETokenizer | HFTokenizer, vocab: Vocab | None = None) -> None:
        if isinstance(tokenizer, CharTokenizer) and vocab is None:
            raise ConfigError("a character codec needs its Vocab")
        # a pretrained tokenizer carries the ids generation stops on (generation_config.json's eos_token_id)
        super().__init__(tokenizer, vocab, end_ids=getattr(tokenizer, "stop_ids", ()))

    def encode_prompt(self, text: str) -> list[int]:
        """Ids of a generation prompt: a pretrained tokenizer adds its own specials (e.g. ``<s>``)."""
        if isinstance(self.tokenizer, HFTokenizer):
            return self.tokenizer.encode_prompt(text)
        return super().encode_prompt(text)

    def start_ids(self) -> list[int]:
        """What an empty prompt starts from: a pretrained tokenizer's ``<bos>`` when it has one."""
        if isinstance(self.tokenizer, HFTokenizer):
            ids = self.tokenizer.encode_prompt("")
            bos = self.tokenizer.bos_id
            return ids or ([bos] if bos is not None else self.tokenizer.encode("\n") or [0])
        return super().start_ids()

    @classmethod
    def fit(cls, lines: Iterable[str], cfg: TokenDataConfig) -> TokenCodec:  # type: ignore[override]
        """Build the codec from an iterable of text lines (read once; a restartable corpus is fine)."""
        if cfg.tokenizer == "hf":
            raise ConfigError(
                "data.tokenizer=hf is a pretrained model's own tokenizer and cannot be trained; bring one in with "
                "lmlab gpt import HF_DIR --out RUN_DIR, or use data.tokenizer=char or bpe"
            )
        if cfg.tokenizer == "char":
            tok = CharTokenizer(lowercase=cfg.lowercase)
            counts: Counter[str] = Counter()
            for chunk in _chunks(lines):
                counts.update(tok.tokenize(chunk))
            if not counts:
                raise DataError("the training text is empty")
            ranked = sorted(counts, key=lambda ch: (-counts[ch], ch))
            return cls(tok, Vocab(ranked, counts=dict(counts)))
        tok = BPETokenizer.train(_chunks(lines, 1 << 16), vocab_size=cfg.vocab_size, lowercase=cfg.lowercase)
        return cls(tok)

    def save(self, run_dir: str | Path) -> None:
        """``run_dir/tokenizer.json`` (+ ``vocab.json``) (:meth:`Codec.save_split`)."""
        self.save_split(run_dir)

    @classmethod
    def load(cls, run_dir: str | Path) -> TokenCodec:  # type: ignore[override]
        tok, vocab = cls.load_split(run_dir)
        if not isinstance(tok, (CharTokenizer, BPETokenizer, HFTokenizer)):
            raise CheckpointError(
                f"{Path(run_dir) / TOKENIZER_FILE}: a {type(tok).__name__} cannot drive a GPT; expected 'char', 'bpe' or 'hf'"
            )
        return cls(tok, vocab)


# ------------------------------------------------------------------------------------------------ token files
def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits in 16 bits, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def write_token_file(lines: Iterable[str], codec: TokenCodec, path: str | Path) -> np.memmap:
    """Encode ``lines`` chunk by chunk into ``path`` (flat ids) plus ``path.json``; return the memmap.

    Memory stays at one chunk (~1 MB of text) whatever the corpus size. The file is written under a temporary
    name and renamed, and the JSON description last, so a half-written file is never mistaken for a whole one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(codec.vocab_size)
    tmp = path.with_name(f".{path.name}.tmp")
    count = 0
    with open(tmp, "wb") as fh:
        for chunk in _chunks(lines):
            ids = np.asarray(codec.encode(chunk), dtype=dtype)
            ids.tofile(fh)
            count += ids.size
    os.replace(tmp, path)
    atomic_write_json(_meta_path(path), {"num_tokens": count, "dtype": dtype.name, "vocab_size": codec.vocab_size})
    return open_token_file(path)


def open_token_file(path: str | Path) -> np.memmap:
    """Map a file written by :func:`write_token_file` (read-only)."""
    path = Path(path)
    meta_path = _meta_path(path)
    if not meta_path.is_file() or not path.is_file():
        raise CheckpointError(f"{path}: token file or its description {meta_path.name} is missing")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    dtype = np.dtype(meta["dtype"])
    expected = meta["num_tokens"] * dtype.itemsize
    if path.stat().st_size != expected:
        raise CheckpointError(f"{path}: holds {path.stat().st_size} bytes, expected {expected}; delete it to re-tokenize")
    if meta["num_tokens"] == 0:
        return np.zeros(0, dtype=dtype)  # np.memmap refuses empty files
    return np.memmap(path, dtype=dtype, mode="r")


# -------------------------------------------------------------------------------------------------- batching
def _to_batch(rows: list[np.ndarray]) -> dict[str, torch.Tensor]:
    data = torch.from_numpy(np.stack(rows).astype(np.int64))  # (B, T + 1)
    return {"input_ids": data[:, :-1], "targets": data[:, 1:]}


def check_block_size(tokens: np.ndarray, block_size: int, what: str) -> None:
    if len(tokens) < block_size + 1:
        raise DataError(
            f"the {what} holds {len(tokens)} tokens, fewer than model.block_size + 1 = {block_size + 1} "
            f"needed for one training block; lower model.block_size (at most {max(len(tokens) - 1, 0)}) "
            "or give more text"
        )


def world_size_error(batch_size: int, world: int) -> ConfigError:
    ok = [w for w in range(1, batch_size + 1) if batch_size % w == 0]
    return ConfigError(
        f"train.batch_size={batch_size} (the global batch, in blocks) is not divisible by the world size "
        f"{world}; world sizes that work: {', '.join(map(str, ok))}; or use a batch size that is a multiple "
        f"of {world} (e.g. {world * max(1, math.ceil(batch_size / world))})"
    )


class RandomBlocks:
    """Batches of ``batch_size`` random windows of ``block_size + 1`` tokens (inputs and shifted targets).

    Batch ``i`` of epoch ``e`` draws its start offsets from a NumPy generator seeded with ``(seed, e, i)``
    alone, so a resumed run replays the same batches and the *global* batch does not depend on the number of
    processes: under ``torchrun`` each rank draws the same offsets and reads only its own contiguous slice of
    ``batch_size / world_size`` rows from the memory map. An "epoch" is as many batches as it takes to see
    about as many tokens as the stream holds.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        block_size: int,
        batch_size: int,
        seed: int = 0,
        batches_per_epoch: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"train.batch_size must be >= 1, got {batch_size}")
        check_block_size(tokens, block_size, "training text")
        self.tokens = tokens
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.batches_per_epoch = batches_per_epoch or max(1, (len(tokens) - 1) // (batch_size * block_size))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def offsets(self, epoch: int, index: int) -> np.ndarray:
        """Start offsets of the whole global batch ``index`` of ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch, index])
        return rng.integers(0, len(self.tokens) - self.block_size, size=self.batch_size)

    def local_rows(self) -> slice:
        world = distributed.world_size()
        if self.batch_size % world:
            raise world_size_error(self.batch_size, world)
        per = self.batch_size // world
        r = distributed.rank()
        return slice(r * per, (r + 1) * per)

    def batch(self, epoch: int, index: int) -> dict[str, torch.Tensor]:
        span = self.block_size + 1
        starts = self.offsets(epoch, index)[self.local_rows()]
        return _to_batch([np.asarray(self.tokens[s : s + span]) for s in starts])

    def iter_from(self, start: int) -> Iterator[dict[str, torch.Tensor]]:
        """The batches of the current epoch from ``start`` on (exact resume)."""
        self.local_rows()  # fail before the first batch if the world size does not divide the batch
        for index in range(start, self.batches_per_epoch):
            yield self.batch(self.epoch, index)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self.iter_from(0)


class SequentialBlocks:
    """Every non-overlapping window of ``block_size`` inputs (+ the next token as target), in order, batched.

    The mean loss over these batches (weighted by tokens) is the validation loss. Not split across ranks: only
    rank 0 evaluates."""

    def __init__(self, tokens: np.ndarray, block_size: int, batch_size: int, max_tokens: int = 0) -> None:
        check_block_size(tokens, block_size, "validation text")
        self.tokens = tokens
        self.block_size = block_size
        self.batch_size = batch_size
        usable = len(tokens) - 1 if not max_tokens else min(len(tokens) - 1, max_tokens)
        self.num_blocks = max(1, usable // block_size)

    def __len__(self) -> int:
        return math.ceil(self.num_blocks / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        T = self.block_size
        for first in range(0, self.num_blocks, self.batch_size):
            rows = [
                np.asarray(self.tokens[b * T : b * T + T + 1])
                for b in range(first, min(first + self.batch_size, self.num_blocks))
            ]
            yield _to_batch(rows)


def describe(tokens: np.ndarray) -> dict[str, Any]:
    return {"num_tokens": int(len(tokens)), "dtype": str(tokens.dtype)}
