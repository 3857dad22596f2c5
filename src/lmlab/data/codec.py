"""``Codec``: THE text <-> ids layer of every family: a tokenizer plus a vocabulary, and a few plain options.

A codec is a tokenizer from :mod:`lmlab.data.tokenizers` (whitespace, word, char, Keras, BPE, ...) and a
:class:`~lmlab.data.vocab.Vocab`, or no vocabulary when the tokenizer has its own ids (BPE, Keras, the SeqGAN
oracle's :class:`~lmlab.data.tokenizers.IdTokenizer`). What differs between the families is plain data:

=================  =============================================================================================
``add_bos/eos``    frame every encoded text with ``<bos>`` / ``<eos>``
``split_lines``    ``"eos"``: each line's tokens then ``<eos>`` (word-level LMs); ``"keepends"``: own-id
                   tokenizers encode line by line, newlines kept (the RNN LM's BPE); ``"none"``: the whole text
``max_len``        keep at most this many ids (``truncating``: ``"post"`` drops the end, ``"pre"`` the start)
``skip``           which tokens :meth:`decode` drops: ``"specials"`` (all of them), ``"framing"``
                   (``<pad> <bos> <eos>``), ``"none"``
``end_ids``        ids that end a text: generation stops on them and, with ``stop_at_end``, decode stops there
``join``           words -> text: ``"tokenizer"`` (its ``detokenize``), ``"space"``, or ``"lines"`` (the LM's
                   rule: ``<eos>`` as a line break, each word after a space); no space between two Chinese
                   tokens in either (:func:`~lmlab.data.tokenizers.join_words`)
``on_unknown``     prompts with out-of-vocabulary tokens: ``"unk"``, ``"warn"``, ``"error"``
=================  =============================================================================================

The family modules build codecs with their options (:func:`lmlab.data.parallel.text_codec`,
:func:`lmlab.data.lm.lm_codec`, ...) and read the files their earlier run directories hold; :meth:`Codec.save`
writes one JSON file (``{"format": "lmlab.codec", ...}``) that :meth:`Codec.load` reads back.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lmlab.data.tokenizers import CharTokenizer, is_cjk_text, join_words, tokenizer_from_dict, word_joint
from lmlab.data.vocab import Vocab, atomic_write_text, build_vocab
from lmlab.errors import CheckpointError, ConfigError, DataError

__all__ = ["CODEC_FORMAT_VERSION", "Codec"]

CODEC_FORMAT_VERSION = 1
TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.json"

_CHOICES = {
    "split_lines": ("none", "eos", "keepends"),
    "truncating": ("post", "pre"),
    "skip": ("specials", "framing", "none"),
    "join": ("tokenizer", "space", "lines"),
    "on_unknown": ("unk", "warn", "error"),
}
_FRAMING = ("<pad>", "<bos>", "<eos>")


class Codec:
    """Text <-> ids: ``tokenizer`` + ``vocab`` (None when the tokenizer has its own ids) + options (see module).

    Example:
        >>> codec = Codec(WordTokenizer(), add_eos=True).fit(["a b", "b c"])
        >>> codec.decode(codec.encode("b a"))
        'b a'
    """

    def __init__(
        self,
        tokenizer: Any,
        vocab: Vocab | None = None,
        *,
        add_bos: bool = False,
        add_eos: bool = False,
        split_lines: str = "none",
        max_len: int | None = None,
        truncating: str = "post",
        skip: str = "specials",
        end_ids: Sequence[int] = (),
        stop_at_end: bool = False,
        join: str = "tokenizer",
        on_unknown: str = "unk",
    ) -> None:
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.add_bos, self.add_eos = add_bos, add_eos
        self.split_lines = split_lines
        self.max_len = max_len
        self.truncating = truncating
        self.skip = skip
        self.end_ids = [int(i) for i in end_ids]
        self.stop_at_end = stop_at_end
        self.join = join
        self.on_unknown = on_unknown
        #: (texts, their tokens) of the last ``fit(..., keep_tokens=True)``, until ``encode_batch`` uses them
        self._fitted_tokens: tuple[list[str], list[list[str]]] | None = None
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ConfigError(f"codec option {name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if max_len is not None and max_len < 1:
            raise ConfigError(f"codec option max_len must be >= 1 or None, got {max_len}")

    # --- building ------------------------------------------------------------------------------------------
    def fit(
        self, texts: Iterable[str], min_freq: int = 1, max_size: int | None = None, specials: Sequence[str] | None = None,
        keep_tokens: bool = False,
    ) -> Codec:
        """Build the vocabulary from ``texts`` (tokens by count, ties in first-seen order); returns ``self``.

        With ``split_lines="eos"`` every line of every text counts as one sequence. A tokenizer with its own ids
        is trained by its own ``train``/``fit_on_texts`` and passed in ready. ``keep_tokens``: remember the tokens
        of ``texts`` so that the next :meth:`encode_batch` of exactly these texts (the same string objects, e.g.
        the training set right after fitting) reuses them instead of tokenizing every text a second time.
        """
        tok = self.tokenizer
        self._fitted_tokens = None
        if self.split_lines == "eos":
            token_lists: Iterable[list[str]] = (tok.tokenize(line) for text in texts for line in text.splitlines())
        elif keep_tokens:
            texts = list(texts)
            token_lists = [tok.tokenize(t) for t in texts]
            self._fitted_tokens = (texts, token_lists)
        else:
            token_lists = (tok.tokenize(t) for t in texts)
        kwargs = {} if specials is None else {"specials": specials}
        self.vocab = build_vocab(token_lists, min_freq=min_freq, max_size=max_size, **kwargs)
        return self

    # --- properties -----------------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """The tokenizer's ``type`` (``"word"``, ``"char"``, ``"bpe"``, ...)."""
        from lmlab.data.tokenizers import _TOKENIZER_TYPES

        return next((k for k, cls in _TOKENIZER_TYPES.items() if type(self.tokenizer) is cls), type(self.tokenizer).__name__)

    @property
    def vocab_size(self) -> int:
        """Number of ids (the embedding's rows)."""
        return len(self.vocab) if self.vocab is not None else self.tokenizer.vocab_size

    def _special_id(self, token: str) -> int | None:
        if self.vocab is not None:
            return self.vocab._special(token)
        to_id = getattr(self.tokenizer, "token_to_id", None)
        return to_id(token) if to_id is not None else None

    @property
    def pad_id(self) -> int | None:
        return self._special_id("<pad>")

    @property
    def unk_id(self) -> int | None:
        return self._special_id("<unk>")

    @property
    def bos_id(self) -> int | None:
        return self._special_id("<bos>")

    @property
    def eos_id(self) -> int | None:
        """The id generation stops on (the first of ``end_ids``), or None: a running text has no end token."""
        return self.end_ids[0] if self.end_ids else None

    # --- encoding -------------------------------------------------------------------------------------------
    def tokens(self, text: str) -> list[str]:
        """The tokenizer's tokens of ``text``."""
        return self.tokenizer.tokenize(text)

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` with this codec's framing, line rule and length limit."""
        tok, vocab = self.tokenizer, self.vocab
        if vocab is None:
            if self.split_lines == "keepends":
                ids = [i for chunk in self._own_batch(text.splitlines(keepends=True)) for i in chunk]
            else:
                ids = list(tok.encode(text))
        elif self.split_lines == "eos":
            eos = vocab.eos_id
            ids = []
            for line in text.splitlines():
                ids.extend(vocab.encode(tok.tokenize(line)))
                ids.append(eos)
        else:
            ids = vocab.encode(tok.tokenize(text))
        return self._frame(ids)

    def _own_batch(self, texts: list[str]) -> list[list[int]]:
        batch = getattr(self.tokenizer, "encode_batch", None)
        return batch(texts) if batch is not None else [list(self.tokenizer.encode(t)) for t in texts]

    def _frame(self, ids: list[int]) -> list[int]:
        if self.add_bos:
            ids.insert(0, self._required("<bos>"))
        if self.add_eos:
            ids.append(self._required("<eos>"))
        if self.max_len is not None and len(ids) > self.max_len:
            ids = ids[: self.max_len] if self.truncating == "post" else ids[-self.max_len :]
        return ids

    def _required(self, token: str) -> int:
        i = self._special_id(token)
        if i is None:
            raise ConfigError(f"this codec's vocabulary has no {token} token")
        return i

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of several texts (a BPE tokenizer encodes them in parallel)."""
        if self.vocab is None and self.split_lines == "none":
            return [self._frame(list(ids)) for ids in self._own_batch(list(texts))]
        fitted = self._fitted_tokens
        if fitted is not None and len(fitted[0]) == len(texts) and all(a is b for a, b in zip(fitted[0], texts, strict=True)):
            self._fitted_tokens = None  # used once: the tokens of the texts just fitted on
            vocab = self.vocab
            return [self._frame(vocab.encode(tokens)) for tokens in fitted[1]]
        return [self.encode(t) for t in texts]

    def encode_prompt(self, text: str) -> list[int]:
        """Ids of a generation prompt; out-of-vocabulary tokens follow ``on_unknown``."""
        if self.vocab is None:
            return self._frame(list(self.tokenizer.encode(text)))  # a prompt is one piece, whatever split_lines says
        if self.on_unknown == "unk":
            return self.encode(text)
        tokens = self.tokenizer.tokenize(text)
        if self.on_unknown == "error":
            unknown = sorted({t for t in tokens if t not in self.vocab})
            if unknown:
                what = "character(s)" if isinstance(self.tokenizer, CharTokenizer) else "token(s)"
                shown = ", ".join(repr(c) for c in unknown[:10])
                raise DataError(
                    f"the prompt has {len(unknown)} {what} this model never saw in training: {shown}; "
                    "remove or replace them"
                )
        else:
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
        """What an empty prompt starts from: the end of a line (``<eos>`` for word-level lines, else ``\\n``)."""
        if self.split_lines == "eos":
            return [self.vocab.eos_id]
        ids = self.tokenizer.encode("\n") if self.vocab is None else self.vocab.encode(self.tokenizer.tokenize("\n"))
        if not ids or (self.vocab is not None and ids[0] == self.vocab.unk_id):
            return [self.vocab.unk_id if self.vocab is not None else 0]
        return ids

    # --- decoding -------------------------------------------------------------------------------------------
    def _skipped_ids(self) -> set[int]:
        if self.skip == "none":
            return set()
        names = _FRAMING if self.skip == "framing" else (self.vocab.specials if self.vocab is not None else ())
        return {i for i in (self._special_id(t) for t in names) if i is not None}

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` (see ``skip``, ``stop_at_end``, ``join``)."""
        ids = [int(i) for i in ids]
        if self.stop_at_end and self.end_ids:
            ends = set(self.end_ids)
            ids = next((ids[:k] for k, i in enumerate(ids) if i in ends), ids)
        if self.vocab is None:
            if self.skip == "framing":
                drop = self._skipped_ids()
                ids = [i for i in ids if i not in drop]
            return self.tokenizer.decode(ids)
        if self.join == "lines":
            return self._decode_lines(ids)
        drop = self._skipped_ids()
        tokens = self.vocab.decode([i for i in ids if i not in drop])
        return join_words(tokens) if self.join == "space" else self.tokenizer.detokenize(tokens)

    def decode_tokens(self, ids: Iterable[int]) -> list[str]:
        """The tokens :meth:`decode` joins into text (after ``stop_at_end`` and ``skip``): what n-gram metrics
        such as BLEU count, whatever the script (Chinese text is joined without spaces)."""
        ids = [int(i) for i in ids]
        if self.stop_at_end and self.end_ids:
            ends = set(self.end_ids)
            ids = next((ids[:k] for k, i in enumerate(ids) if i in ends), ids)
        if self.vocab is None:
            return self.decode(ids).split()
        drop = self._skipped_ids() if self.join != "lines" else {self.vocab.pad_id, self.vocab.bos_id}
        return self.vocab.decode([i for i in ids if i not in drop])

    def _decode_lines(self, ids: list[int]) -> str:
        """Word-level LM text: ``<eos>`` is a line break, other words follow a space (the text continues a
        prompt), ``<pad>``/``<bos>`` are dropped."""
        eos = self.vocab.eos_id
        out: list[str] = []
        prev = ""
        for i, token in zip(ids, self.vocab.decode(ids), strict=True):
            if i == eos:
                out.append("\n")
            elif token in ("<pad>", "<bos>"):
                continue
            elif out and out[-1] == "\n":
                out.append(token)
                prev = token
            else:  # after a space, or none between Chinese words (the first one continues the prompt)
                sep, token = word_joint(prev, token) if prev else ("" if is_cjk_text(token[:1]) else " ", token)
                out.append(sep + token)
                prev = token
        return "".join(out)

    def pieces(self, ids: Iterable[int]) -> list[str]:
        """Readable token strings, one per id (own-id tokenizers: each id decoded on its own)."""
        ids = [int(i) for i in ids]
        if self.vocab is not None:
            return self.vocab.decode(ids)
        return [self.tokenizer.decode([i], skip_special=False) for i in ids]

    # --- persistence ----------------------------------------------------------------------------------------
    def options(self) -> dict:
        """The options as plain data."""
        return {
            "add_bos": self.add_bos, "add_eos": self.add_eos, "split_lines": self.split_lines, "max_len": self.max_len,
            "truncating": self.truncating, "skip": self.skip, "end_ids": list(self.end_ids),
            "stop_at_end": self.stop_at_end, "join": self.join, "on_unknown": self.on_unknown,
        }

    def to_dict(self) -> dict:
        """``{"format": "lmlab.codec", "format_version", "tokenizer", "vocab" (or null), "options"}``."""
        return {
            "format": "lmlab.codec",
            "format_version": CODEC_FORMAT_VERSION,
            "tokenizer": self.tokenizer.to_dict(),
            "vocab": self.vocab.to_dict() if self.vocab is not None else None,
            "options": self.options(),
        }

    @classmethod
    def from_dict(cls, d: dict, where: str = "codec") -> Codec:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            CheckpointError: not a codec description, another version, or malformed (naming ``where``).
        """
        if not isinstance(d, dict) or d.get("format") != "lmlab.codec":
            raise CheckpointError(f"{where}: not an lmlab codec file (no \"format\": \"lmlab.codec\")")
        if d.get("format_version") != CODEC_FORMAT_VERSION:
            raise CheckpointError(
                f"{where}: codec format_version {d.get('format_version')!r} is not supported (this lmlab reads "
                f"{CODEC_FORMAT_VERSION}); upgrade lmlab"
            )
        try:
            tok = tokenizer_from_dict(d["tokenizer"])
            vocab = Vocab.from_dict(d["vocab"], where) if d.get("vocab") is not None else None
            return cls(tok, vocab, **d.get("options", {}))
        except (KeyError, TypeError, ConfigError) as exc:
            raise CheckpointError(f"{where}: malformed codec ({exc})") from None

    def save(self, path: str | os.PathLike) -> None:
        """Write the codec to one JSON file (atomically)."""
        import json

        atomic_write_text(Path(path), json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Codec:
        """Read a codec written by :meth:`save` (CheckpointError naming the file if it is missing or bad)."""
        from lmlab.checkpoint import read_json

        return cls.from_dict(read_json(path, "codec"), str(path))

    # --- the split layout of RNN LM and GPT run directories: tokenizer.json + vocab.json ----------------------
    def save_split(self, run_dir: str | os.PathLike) -> None:
        """Write ``run_dir/tokenizer.json`` (the tokenizer) and ``run_dir/vocab.json`` (when there is a vocabulary).

        The options are not saved: the family derives them from its run config."""
        run_dir = Path(run_dir)
        self.tokenizer.save(run_dir / TOKENIZER_FILE)
        if self.vocab is not None:
            self.vocab.save(run_dir / VOCAB_FILE)

    @staticmethod
    def load_split(run_dir: str | os.PathLike) -> tuple[Any, Vocab | None]:
        """The tokenizer and vocabulary of a split-layout run directory (``vocab.json`` is read unless the
        tokenizer has its own ids). CheckpointError naming a missing file and how to fix it."""
        from lmlab.data.tokenizers import load_tokenizer

        run_dir = Path(run_dir)
        path = run_dir / TOKENIZER_FILE
        if not path.is_file():
            raise CheckpointError(
                f"{path} is missing: the run directory lacks the tokenizer its model was trained with; "
                "copy tokenizer.json (and vocab.json) back from the training run, or re-train"
            )
        tok = load_tokenizer(path)
        if hasattr(tok, "decode"):  # own ids (BPE)
            return tok, None
        vpath = run_dir / VOCAB_FILE
        if not vpath.is_file():
            raise CheckpointError(
                f"{vpath} is missing: a {type(tok).__name__} model needs its vocabulary; copy vocab.json back "
                "from the training run, or re-train"
            )
        return tok, Vocab.load(vpath)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Codec) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Codec({self.kind}, vocab_size={self.vocab_size})"
