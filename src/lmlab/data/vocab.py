"""``Vocab``: the token <-> id mapping that travels with every model.

Special tokens come first: by default ``<pad>`` = 0, ``<unk>`` = 1, ``<bos>`` = 2, ``<eos>`` = 3. Normal tokens
follow by descending count, ties broken by first occurrence, so the same corpus always yields the same ids.
Saved as one JSON file (``format_version`` included) with an atomic write.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from lmlab.errors import CheckpointError, ConfigError, DataError

__all__ = ["DEFAULT_SPECIALS", "VOCAB_FORMAT_VERSION", "Vocab", "atomic_write_text", "build_vocab"]

DEFAULT_SPECIALS: tuple[str, ...] = ("<pad>", "<unk>", "<bos>", "<eos>")
VOCAB_FORMAT_VERSION = 1


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) atomically, with the mode the umask gives (:func:`lmlab.checkpoint.atomic_write_text`)."""
    from lmlab.checkpoint import atomic_write_text as write

    write(path, text)


class Vocab:
    """A fixed mapping between tokens and integer ids.

    Build one with :func:`build_vocab` (or ``Vocab(tokens)`` from an explicit list). Unknown tokens encode to
    the ``unk_token`` id.

    Args:
        itos: All tokens in id order, specials first (they must be the first ``len(specials)`` entries; they
            are prepended if missing).
        specials: The special tokens.
        unk_token: Token used for unknown words (must be one of ``specials``; None disables it and unknown
            tokens raise ``DataError`` when encoded).
        counts: Optional token counts from the training corpus.

    Attributes:
        itos: ``list[str]``, id -> token.
        stoi: ``dict[str, int]``, token -> id.
        counts: ``dict[str, int]``, training counts of the tokens in the vocab (specials: how often they
            occurred as tokens, usually 0).
    """

    def __init__(
        self,
        itos: Sequence[str],
        specials: Sequence[str] = DEFAULT_SPECIALS,
        unk_token: str | None = "<unk>",
        counts: dict[str, int] | None = None,
    ):
        specials = list(specials)
        if len(set(specials)) != len(specials):
            raise ConfigError(f"duplicate special tokens in {specials}")
        if unk_token is not None and unk_token not in specials:
            raise ConfigError(f"unk_token {unk_token!r} must be one of the specials {specials}")
        itos = list(itos)
        if itos[: len(specials)] != specials:
            itos = specials + [t for t in itos if t not in set(specials)]
        if len(set(itos)) != len(itos):
            dupes = sorted({t for t in itos if itos.count(t) > 1})[:5]
            raise DataError(f"duplicate tokens in the vocabulary: {dupes}")
        for t in itos:
            if not isinstance(t, str):
                raise DataError(f"vocabulary tokens must be strings, got {t!r}")
        self.itos: list[str] = itos
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(itos)}
        self.specials: list[str] = specials
        self.unk_token = unk_token
        self.unk_id: int | None = self.stoi[unk_token] if unk_token is not None else None
        counts = dict(counts or {})
        self.counts: dict[str, int] = {t: int(counts.get(t, 0)) for t in itos}

    # -- special ids ---------------------------------------------------------------------------------
    def _special(self, token: str) -> int | None:
        return self.stoi.get(token) if token in self.specials else None

    @property
    def pad_id(self) -> int | None:
        """Id of ``<pad>`` (None if not a special)."""
        return self._special("<pad>")

    @property
    def bos_id(self) -> int | None:
        """Id of ``<bos>`` (None if not a special)."""
        return self._special("<bos>")

    @property
    def eos_id(self) -> int | None:
        """Id of ``<eos>`` (None if not a special)."""
        return self._special("<eos>")

    # -- mapping -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return token in self.stoi

    def __getitem__(self, token: str) -> int:
        """Id of ``token`` (the unknown id for unseen tokens)."""
        i = self.stoi.get(token)
        if i is None:
            if self.unk_id is None:
                raise DataError(f"token {token!r} is not in the vocabulary and it has no unk_token")
            return self.unk_id
        return i

    def encode(self, tokens: Iterable[str], add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Ids of ``tokens``; unknown tokens map to ``<unk>``. Optionally frame with ``<bos>``/``<eos>``."""
        if isinstance(tokens, str):
            raise DataError("Vocab.encode expects a list of tokens, got a string; tokenize it first")
        stoi, unk = self.stoi, self.unk_id
        if unk is None:
            ids = [self[t] for t in tokens]
        else:
            ids = [stoi.get(t, unk) for t in tokens]
        if add_bos:
            if self.bos_id is None:
                raise ConfigError("this vocabulary has no <bos> token")
            ids.insert(0, self.bos_id)
        if add_eos:
            if self.eos_id is None:
                raise ConfigError("this vocabulary has no <eos> token")
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Iterable[int], skip_specials: bool = False) -> list[str]:
        """Tokens of ``ids`` (accepts ints, NumPy or 0-d tensor items); optionally drop the specials.

        Raises:
            DataError: an id is outside ``0 .. len(vocab) - 1``.
        """
        specials = set(self.specials) if skip_specials else ()
        out = []
        n = len(self.itos)
        for i in ids:
            i = int(i)
            if not 0 <= i < n:
                raise DataError(f"token id {i} is out of range for a vocabulary of {n} tokens")
            tok = self.itos[i]
            if tok not in specials:
                out.append(tok)
        return out

    # -- persistence ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-friendly description (tokens in id order, their counts, the specials, the version)."""
        return {
            "format": "lmlab.vocab",
            "format_version": VOCAB_FORMAT_VERSION,
            "specials": self.specials,
            "unk_token": self.unk_token,
            "itos": self.itos,
            "counts": [self.counts.get(t, 0) for t in self.itos],
        }

    @classmethod
    def from_dict(cls, d: dict, where: str = "vocab") -> Vocab:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            CheckpointError: wrong format, unsupported version or missing/malformed keys (naming ``where``).
        """
        if not isinstance(d, dict) or d.get("format") != "lmlab.vocab":
            raise CheckpointError(f"{where}: not an lmlab vocabulary file (no \"format\": \"lmlab.vocab\")")
        version = d.get("format_version")
        if version != VOCAB_FORMAT_VERSION:
            raise CheckpointError(
                f"{where}: vocabulary format_version {version!r} is not supported (this lmlab reads "
                f"{VOCAB_FORMAT_VERSION}); upgrade lmlab or rebuild the vocabulary"
            )
        try:
            itos = d["itos"]
            counts_list = d.get("counts") or [0] * len(itos)
            if len(counts_list) != len(itos):
                raise ValueError(f"{len(counts_list)} counts for {len(itos)} tokens")
            specials = d["specials"]
            if not isinstance(itos, list) or not isinstance(specials, list) or itos[: len(specials)] != specials:
                raise ValueError("'itos' must be a list starting with the specials")
            return cls(itos, specials=specials, unk_token=d.get("unk_token"), counts=dict(zip(itos, counts_list, strict=True)))
        except (KeyError, TypeError, ValueError, DataError, ConfigError) as exc:
            raise CheckpointError(f"{where}: malformed vocabulary ({exc}); rebuild it or restore the file") from None

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary to a JSON file atomically (temporary file + ``os.replace``)."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocab:
        """Read a vocabulary written by :meth:`save`.

        Raises:
            CheckpointError: the file is missing, truncated, not JSON, of another version or malformed; the
                message names the file.
        """
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CheckpointError(f"{p}: vocabulary file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{p}: cannot read the vocabulary file ({exc})") from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(
                f"{p}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                "the file is truncated or corrupt"
            ) from None
        return cls.from_dict(d, where=str(p))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Vocab)
            and self.itos == other.itos
            and self.specials == other.specials
            and self.unk_token == other.unk_token
        )

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens, specials={self.specials})"


def build_vocab(
    token_lists: Iterable[Sequence[str]],
    min_freq: int = 1,
    max_size: int | None = None,
    specials: Sequence[str] = DEFAULT_SPECIALS,
    unk_token: str | None = "<unk>",
) -> Vocab:
    """Count tokens and build a :class:`Vocab` (one pass over ``token_lists``; a generator is fine).

    Args:
        token_lists: An iterable of token lists (one per text), e.g. ``(tok.tokenize(t) for t in texts)``.
        min_freq: Drop tokens seen fewer times.
        max_size: Maximum size of the vocabulary *including* the specials (so ``len(vocab) <= max_size``,
            which is the embedding's row count). None: no limit.
        specials: Special tokens, placed first (ids 0, 1, ...).
        unk_token: The special used for unknown tokens.

    Order: specials, then tokens by count (descending), ties in order of first occurrence.
    """
    if not isinstance(min_freq, int) or min_freq < 1:
        raise ConfigError(f"min_freq must be an integer >= 1, got {min_freq!r}")
    specials = list(specials)
    if max_size is not None and (not isinstance(max_size, int) or max_size < len(specials)):
        raise ConfigError(f"max_size must be an integer >= {len(specials)} (the number of specials), got {max_size!r}")
    if isinstance(token_lists, str):
        raise DataError("build_vocab expects an iterable of token lists, got a string; tokenize the texts first")
    counts: Counter[str] = Counter()  # insertion order = first occurrence
    for i, tokens in enumerate(token_lists):
        if isinstance(tokens, str):
            raise DataError(
                f"build_vocab expects an iterable of token lists, but item {i} is a string; "
                "tokenize first, e.g. build_vocab(tok.tokenize(t) for t in texts)"
            )
        counts.update(tokens)
    special_set = set(specials)
    ranked = sorted(
        (item for item in counts.items() if item[1] >= min_freq and item[0] not in special_set),
        key=lambda item: -item[1],  # stable sort keeps first-seen order among ties
    )
    if max_size is not None:
        ranked = ranked[: max_size - len(specials)]
    itos = specials + [t for t, _ in ranked]
    return Vocab(itos, specials=specials, unk_token=unk_token, counts={t: counts.get(t, 0) for t in itos})
