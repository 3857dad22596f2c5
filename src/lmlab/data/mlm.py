r"""The data side of the masked language model: its codec, its token files and BERT's dynamic masking.

* :class:`MLMCodec` - a character vocabulary or a byte-level BPE tokenizer (the GPT's two, :mod:`lmlab.data.tokens`)
  with BERT's specials ``[PAD] [UNK] [CLS] [SEP] [MASK]`` as ids 0..4; saved in the run directory. An imported
  BERT (``lmlab mlm import``) brings its own WordPiece tokenizer (:class:`~lmlab.data.tokenizers.HFTokenizer`,
  ``data.tokenizer: hf``) whose specials are wherever its vocabulary has them (``[CLS]`` = 101 in bert-base),
  named by role in the tokenizer file.
* :func:`write_mlm_tokens` - the corpus tokenized once into a memory-mapped stream (``train.bin``) and, for
  whole-word masking, a parallel byte per token saying whether it starts a word (``train.words.bin``).
* :func:`mask_tokens` - BERT's corruption: choose each maskable token with probability ``mask_prob`` (or each
  word, with whole-word masking); of the chosen, 80% become ``[MASK]``, 10% a random non-special token, 10% stay.
* :class:`MaskedBlocks` - training batches: random windows of the stream framed ``[CLS] ... [SEP]`` (packed:
  no padding), masked afresh every time a batch is drawn by one seeded generator whose state the trainer
  checkpoints (``training_state``), so a resumed run sees exactly the masks an uninterrupted one would.
* :class:`SequentialMaskedBlocks` - every window once, masked by a generator seeded the same way at the start
  of every pass, so validation and ``lmlab mlm eval`` are reproducible.

**Sequences are packed**, like RoBERTa's FULL-SENTENCES: the text is one running stream (lines keep their
newline) and each training sequence is ``[CLS]`` + ``block_size - 2`` consecutive tokens + ``[SEP]``, starting at
a random offset. No position is wasted on padding; padding (and the attention mask) appears only for texts
shorter than a block: fill-mask queries and classifier fine-tuning.

**A word**, for whole-word masking, is a maximal run of word characters (apostrophes inside kept, as in
"don't") or one punctuation character, as :mod:`lmlab.data.tokenizers` defines words; a run of Chinese or
Japanese characters is split further by ``data.segmenter`` (``char``: each character is a word, as in Google's
Chinese BERT; ``jieba``: jieba's words, as in Chinese whole-word-masking BERT). A token (a BPE piece or a
character) belongs to the word holding its first non-space character; a token of whitespace only (a newline)
is a word of its own. All tokens of a word are chosen together.
"""

from __future__ import annotations

import bisect
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from lmlab import distributed
from lmlab.checkpoint import atomic_write_json
from lmlab.data.codec import Codec
from lmlab.data.tokenizers import (
    _CJK_RUN_RE,
    _HTML_TAG_RE,
    _LAZY_SEGMENTERS,
    _WORD_RE,
    SEGMENTERS,
    BPETokenizer,
    CharTokenizer,
    HFTokenizer,
    check_segmenter_option,
)
from lmlab.data.tokens import _chunks, open_token_file, token_data_problems, token_dtype, world_size_error
from lmlab.data.vocab import Vocab
from lmlab.errors import CheckpointError, ConfigError, DataError

#: BERT's special tokens, ids 0..4 in this order in every MLM codec lmlab trains
MLM_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: the role of each of them (the keys of :meth:`MLMCodec.special_ids`)
MLM_ROLES = ("pad", "unk", "cls", "sep", "mask")
MASK_TOKEN = "[MASK]"
#: the label of positions that are not predicted (as in :mod:`lmlab.models.mlm`)
IGNORE_INDEX = -100


@dataclass
class MLMDataConfig:
    """How text becomes masked training sequences (the ``data`` section of an MLM config)."""

    #: "char": one token per character; "bpe": byte-level byte-pair encoding (Hugging Face tokenizers); "hf": the
    #: tokenizer of an imported checkpoint (``lmlab mlm import``; it cannot be trained, only continued from)
    tokenizer: Literal["char", "bpe", "hf"] = "bpe"
    #: BPE vocabulary size, the 5 specials included (ignored for "char")
    vocab_size: int = 2000
    lowercase: bool = False
    #: replace HTML tags such as ``<br />`` (IMDb reviews) by a space; a normalizer saved in the BPE tokenizer,
    #: so training, fill-mask and fine-tuning all read the same text (bpe only)
    strip_html: bool = False
    #: when no separate validation file is given, the last fraction of the tokens is held out
    val_fraction: float = 0.1
    encoding: str = "utf-8"
    eval_batch_size: int = 32
    #: evaluate on at most this many validation tokens (0: all of them)
    max_eval_tokens: int = 0
    #: the share of (non-special) tokens chosen for prediction
    mask_prob: float = 0.15
    #: of the chosen tokens, the share replaced by [MASK] ...
    mask_token_prob: float = 0.8
    #: ... and the share replaced by a random non-special token (the rest are kept as they are)
    random_token_prob: float = 0.1
    #: choose whole words (all their pieces together) instead of single tokens
    whole_word: bool = False
    #: how runs of Chinese/Japanese characters split into words for whole_word: "char" or "jieba"
    segmenter: str = "char"

    def validate(self) -> None:
        problems = token_data_problems(self, min_bpe_vocab=300)
        if not 0.0 < self.mask_prob < 1.0:
            problems.append(f"data.mask_prob must be in (0, 1), got {self.mask_prob}")
        for key in ("mask_token_prob", "random_token_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                problems.append(f"data.{key} must be in [0, 1], got {getattr(self, key)}")
        if self.mask_token_prob + self.random_token_prob > 1.0 + 1e-9:
            problems.append(
                f"data.mask_token_prob + data.random_token_prob must be <= 1 (the rest is kept), got "
                f"{self.mask_token_prob} + {self.random_token_prob}"
            )
        if self.strip_html and self.tokenizer == "char":
            problems.append("data.strip_html works with data.tokenizer=bpe (its normalizer strips the tags)")
        if self.segmenter not in ("char", "jieba"):
            problems.append(f"data.segmenter must be char or jieba, got {self.segmenter!r}")
        elif self.segmenter == "jieba":
            try:
                check_segmenter_option("jieba", None)
            except ConfigError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError("; ".join(problems))


# ---------------------------------------------------------------------------------------------------- codec
class MLMCodec(Codec):
    """Text <-> ids for the masked LM: a :class:`CharTokenizer` + :class:`Vocab`, or a byte-level
    :class:`BPETokenizer`, with :data:`MLM_SPECIALS` as ids 0..4 (so every id >= 5 is an ordinary token); or an
    imported checkpoint's :class:`HFTokenizer`, whose ``special_tokens`` name the tokens of the roles
    :data:`MLM_ROLES` (its specials may be anywhere: :attr:`specials` lists them)."""

    def __init__(self, tokenizer: CharTokenizer | BPETokenizer | HFTokenizer, vocab: Vocab | None = None) -> None:
        if isinstance(tokenizer, CharTokenizer) and vocab is None:
            raise ConfigError("a character codec needs its Vocab")
        super().__init__(tokenizer, vocab)
        if isinstance(tokenizer, HFTokenizer):
            self._roles, self.specials = _hf_roles(tokenizer)
            return
        for i, token in enumerate(MLM_SPECIALS):
            if self.token_id(token) != i:
                raise CheckpointError(
                    f"this tokenizer does not have {token} as id {i}: it was not made for a masked LM "
                    "(train one with lmlab mlm train)"
                )
        self._roles = {role: i for i, role in enumerate(MLM_ROLES)}
        #: every special id (never chosen for masking, never drawn as a random token, never offered by fill-mask)
        self.specials = list(range(len(MLM_SPECIALS)))

    @classmethod
    def fit(cls, lines: Iterable[str], cfg: MLMDataConfig) -> MLMCodec:  # type: ignore[override]
        """Build the codec from an iterable of text lines (read once)."""
        if cfg.tokenizer == "hf":
            raise ConfigError(
                "data.tokenizer=hf is the tokenizer of an imported checkpoint and cannot be trained; continue the "
                "imported run's pretraining with lmlab mlm train --init-from RUN, or use data.tokenizer=bpe"
            )
        if cfg.tokenizer == "char":
            tok = CharTokenizer(lowercase=cfg.lowercase)
            counts: Counter[str] = Counter()
            for chunk in _chunks(lines):
                counts.update(tok.tokenize(chunk))
            if not counts:
                raise DataError("the training text is empty")
            ranked = sorted(counts, key=lambda ch: (-counts[ch], ch))
            return cls(tok, Vocab(ranked, specials=MLM_SPECIALS, unk_token="[UNK]", counts=dict(counts)))
        if cfg.strip_html:
            lines = (_HTML_TAG_RE.sub(" ", line) for line in lines)
        tok = BPETokenizer.train(
            _chunks(lines, 1 << 16), vocab_size=cfg.vocab_size, lowercase=cfg.lowercase, specials=MLM_SPECIALS
        )
        if cfg.strip_html:
            from tokenizers import Regex, normalizers

            steps = [normalizers.Replace(Regex(_HTML_TAG_RE.pattern), " ")]
            if tok.tokenizer.normalizer is not None:
                steps.append(tok.tokenizer.normalizer)
            tok.tokenizer.normalizer = normalizers.Sequence(steps)
        return cls(tok)

    def token_id(self, token: str) -> int | None:
        if self.vocab is not None:
            return self.vocab.stoi.get(token)
        return self.tokenizer.token_to_id(token)

    @property
    def num_specials(self) -> int:
        return len(self.specials)

    @property
    def specials_first(self) -> bool:
        """Whether the specials are ids 0..num_specials-1 (every codec lmlab trains)."""
        return self.specials == list(range(len(self.specials)))

    @property
    def pad_id(self) -> int:  # type: ignore[override]
        return self._roles["pad"]

    @property
    def unk_id(self) -> int:  # type: ignore[override]
        return self._roles["unk"]

    @property
    def cls_id(self) -> int:
        return self._roles["cls"]

    @property
    def sep_id(self) -> int:
        return self._roles["sep"]

    @property
    def mask_id(self) -> int:
        return self._roles["mask"]

    def special_ids(self) -> dict[str, int]:
        return dict(self._roles)

    def save(self, run_dir: str | Path) -> None:
        """``run_dir/tokenizer.json`` (+ ``vocab.json`` for characters)."""
        self.save_split(run_dir)

    @classmethod
    def load(cls, run_dir: str | Path) -> MLMCodec:  # type: ignore[override]
        tok, vocab = cls.load_split(run_dir)
        if not isinstance(tok, (CharTokenizer, BPETokenizer, HFTokenizer)):
            raise CheckpointError(f"{run_dir}/tokenizer.json: a {type(tok).__name__} cannot drive a masked LM")
        return cls(tok, vocab)

    @classmethod
    def from_files(cls, files: dict[str, Any]) -> MLMCodec:
        """Rebuild from ``{"tokenizer.json": {...}, "vocab.json": {...}}`` (what a classifier run copies)."""
        from lmlab.data.tokenizers import tokenizer_from_dict

        tok = tokenizer_from_dict(files["tokenizer.json"])
        vocab = Vocab.from_dict(files["vocab.json"], "vocab.json") if "vocab.json" in files else None
        return cls(tok, vocab)

    def files(self) -> dict[str, Any]:
        """The codec as ``{file name: JSON content}``."""
        out = {"tokenizer.json": self.tokenizer.to_dict()}
        if self.vocab is not None:
            out["vocab.json"] = self.vocab.to_dict()
        return out

    def kind_options(self) -> dict[str, Any]:
        """The data options this codec fixes (``tokenizer``, ``lowercase``; for BPE ``vocab_size``, ``strip_html``)."""
        if self.vocab is not None:
            return {"tokenizer": "char", "lowercase": bool(self.tokenizer.lowercase), "strip_html": False}
        norm = self.tokenizer.to_dict()["tokenizer"].get("normalizer") or {}
        steps = norm.get("normalizers", [norm])
        kinds = {n.get("type") for n in steps}
        if isinstance(self.tokenizer, HFTokenizer):
            lower = "Lowercase" in kinds or any(n.get("type") == "BertNormalizer" and n.get("lowercase") for n in steps)
            return {"tokenizer": "hf", "vocab_size": self.vocab_size, "lowercase": bool(lower), "strip_html": False}
        return {"tokenizer": "bpe", "vocab_size": self.vocab_size, "lowercase": "Lowercase" in kinds,
                "strip_html": "Replace" in kinds}

    # --- text with word boundaries -------------------------------------------------------------------------
    def encode_lines(
        self, lines: Sequence[str], segment: Callable[[str], list[str]] | None = None
    ) -> list[tuple[list[int], list[int] | None]]:
        """(ids, word starts or None) of each line; word starts (1 at a token that begins a word) only when
        ``segment`` (how CJK runs split into words) is given."""
        out = []
        if self.vocab is None:
            for enc in self.tokenizer.tokenizer.encode_batch(list(lines), add_special_tokens=False):
                ids = list(enc.ids)
                starts = None
                if segment is not None:
                    text = lines[len(out)]
                    starts = word_starts(text, list(enc.offsets), segment)
                out.append((ids, starts))
            return out
        for line in lines:
            tokens = self.tokenizer.tokenize(line)
            ids = self.vocab.encode(tokens)
            starts = None
            if segment is not None:
                text = "".join(tokens)
                spans, pos = [], 0
                for t in tokens:
                    spans.append((pos, pos + len(t)))
                    pos += len(t)
                starts = word_starts(text, spans, segment)
            out.append((ids, starts))
        return out

    def encode_masked(self, text: str) -> list[int]:
        """Ids of a fill-mask query: each literal ``[MASK]`` becomes the mask id, the text between is encoded
        as in training. For BPE the space before a ``[MASK]`` is left to the predicted piece (byte-level pieces
        carry their leading space: "was [MASK]" is "was" + a piece such as " good")."""
        parts = text.split(MASK_TOKEN)
        ids: list[int] = []
        for k, part in enumerate(parts):
            if k < len(parts) - 1 and self.vocab is None:
                part = part.rstrip(" ")
            if part:
                ids.extend(self.encode(part))
            if k < len(parts) - 1:
                ids.append(self.mask_id)
        return ids

    def piece(self, i: int) -> str:
        """The text of one token id (a BPE piece with its leading space, a character)."""
        if self.vocab is not None:
            return self.vocab.itos[int(i)]
        return self.tokenizer.decode([int(i)], skip_special=False)


def _hf_roles(tok: HFTokenizer) -> tuple[dict[str, int], list[int]]:
    """(role -> id, every special id) of an imported tokenizer: its ``special_tokens`` roles, ``pad_token``, and
    the tokens its tokenizer.json marks special."""
    names = {**tok.special_tokens, **({"pad": tok.pad_token} if tok.pad_token else {})}
    roles: dict[str, int] = {}
    for role in MLM_ROLES:
        i = tok.token_to_id(names.get(role) or "")
        if i is None:
            raise CheckpointError(
                f"this tokenizer names no {role} token in its vocabulary ({role}: {names.get(role)!r}); a masked "
                "LM needs [PAD] [UNK] [CLS] [SEP] [MASK] (re-import the checkpoint with lmlab mlm import)"
            )
        roles[role] = i
    try:
        added = [i for i, t in tok.tokenizer.get_added_tokens_decoder().items() if t.special]
    except AttributeError:  # an older tokenizers
        added = []
    return roles, sorted(set(roles.values()) | set(added))


def segmenter_fn(name: str) -> Callable[[str], list[str]]:
    """``data.segmenter`` -> fn(run of CJK characters) -> its words."""
    if name in SEGMENTERS:
        return SEGMENTERS[name]
    if name in _LAZY_SEGMENTERS:
        return _LAZY_SEGMENTERS[name][1]()
    raise ConfigError(f"data.segmenter must be char or jieba, got {name!r}")


def word_spans(text: str, segment: Callable[[str], list[str]]) -> list[tuple[int, int]]:
    """The (start, end) character spans of the words of ``text`` (see the module docstring), in order."""
    spans: list[tuple[int, int]] = []
    for m in _WORD_RE.finditer(text):
        start, word = m.start(), m.group()
        pos = 0
        for run in _CJK_RUN_RE.finditer(word):
            if run.start() > pos:
                spans.append((start + pos, start + run.start()))
            p = start + run.start()
            for piece in segment(run.group()):
                if piece:
                    spans.append((p, p + len(piece)))
                    p += len(piece)
            pos = run.end()
        if pos < len(word):
            spans.append((start + pos, start + len(word)))
    return spans


_SPACE = re.compile(r"\S")


def word_starts(text: str, token_spans: Sequence[tuple[int, int]], segment: Callable[[str], list[str]]) -> list[int]:
    """1 for each token that begins a word, 0 for a token continuing the word before it.

    A token belongs to the word holding its first non-space character; a token without one (whitespace) is a
    word of its own."""
    spans = word_spans(text, segment)
    begins = [s for s, _ in spans]
    out, previous = [], None
    for start, end in token_spans:
        m = _SPACE.search(text, start, max(end, start))
        if m is None:
            word = None
        else:
            k = bisect.bisect_right(begins, m.start()) - 1
            word = k if k >= 0 and m.start() < spans[k][1] else ("char", m.start())
        out.append(1 if word is None or word != previous else 0)
        previous = word
    return out


# ------------------------------------------------------------------------------------------------ token files
def write_mlm_tokens(
    lines: Iterable[str], codec: MLMCodec, path: str | Path, segment: Callable[[str], list[str]] | None = None,
    max_tokens: int = 0,
) -> tuple[np.memmap, np.memmap | None]:
    """Encode ``lines`` into ``path`` (flat ids, as :func:`lmlab.data.tokens.write_token_file`) and, when
    ``segment`` is given, the word-start flags into ``path`` with ``.words.bin`` (one uint8 per token).
    With ``max_tokens`` > 0 reading stops once that many tokens are written (evaluation on a prefix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(codec.vocab_size)
    words_path = words_file(path)
    tmp, wtmp = path.with_name(f".{path.name}.tmp"), words_path.with_name(f".{words_path.name}.tmp")
    count = 0
    with open(tmp, "wb") as fh, open(wtmp, "wb") as wh:
        batch: list[str] = []

        def flush() -> None:
            nonlocal count
            for ids, starts in codec.encode_lines(batch, segment):
                np.asarray(ids, dtype=dtype).tofile(fh)
                if starts is not None:
                    np.asarray(starts, dtype=np.uint8).tofile(wh)
                count += len(ids)
            batch.clear()

        for line in lines:
            batch.append(line)
            if len(batch) >= 1024:
                flush()
                if max_tokens and count >= max_tokens:
                    break
        flush()
    os.replace(tmp, path)
    atomic_write_json(path.with_name(path.name + ".json"),
                      {"num_tokens": count, "dtype": dtype.name, "vocab_size": codec.vocab_size})
    if segment is None:
        os.remove(wtmp)
        return open_token_file(path), None
    os.replace(wtmp, words_path)
    atomic_write_json(words_path.with_name(words_path.name + ".json"), {"num_tokens": count, "dtype": "uint8"})
    return open_token_file(path), open_token_file(words_path)


def words_file(path: Path) -> Path:
    return path.with_name(path.name.replace(".bin", "") + ".words.bin")


def open_mlm_tokens(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The token stream at ``path`` and its word-start flags (None when it was written without them)."""
    w = words_file(path)
    return open_token_file(path), (open_token_file(w) if w.is_file() else None)


# ---------------------------------------------------------------------------------------------------- masking
@dataclass
class Masking:
    """What :func:`mask_tokens` needs: the probabilities (from :class:`MLMDataConfig`) and the ids."""

    mask_prob: float
    mask_token_prob: float
    random_token_prob: float
    whole_word: bool
    mask_id: int
    #: ids below this are specials: never chosen, never drawn as the random replacement
    num_specials: int
    vocab_size: int
    #: the special ids when they are not 0..num_specials-1 (an imported BERT's); empty: ids below num_specials
    special_ids: tuple[int, ...] = ()

    @classmethod
    def from_config(cls, cfg: MLMDataConfig, codec: MLMCodec) -> Masking:
        scattered = () if codec.specials_first else tuple(codec.specials)
        return cls(cfg.mask_prob, cfg.mask_token_prob, cfg.random_token_prob, cfg.whole_word, codec.mask_id,
                   codec.num_specials, codec.vocab_size, scattered)


def mask_tokens(
    ids: torch.Tensor, masking: Masking, generator: torch.Generator, starts: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""BERT's corruption of ``ids`` (B, T) -> (inputs (B, T), labels (B, T)).

    A token is *maskable* when it is not a special (``[PAD] [UNK] [CLS] [SEP] [MASK]``). Each maskable token is
    chosen with probability ``mask_prob``; with ``whole_word`` and ``starts`` (B, T; 1 where a word begins) the
    draw is made once per word and shared by all its tokens. A chosen token becomes ``[MASK]`` with probability
    ``mask_token_prob``, a uniformly drawn non-special token with probability ``random_token_prob``, and stays
    otherwise. ``labels`` holds the original id at the chosen positions and ``IGNORE_INDEX`` elsewhere. Every
    random number comes from ``generator`` (always the same number of draws for a given shape)."""
    B, T = ids.shape
    if masking.special_ids:
        specials = torch.tensor(masking.special_ids, dtype=ids.dtype)
        maskable = ~torch.isin(ids, specials)  # (B, T)
    else:
        maskable = ids >= masking.num_specials  # (B, T)
    u = torch.rand(B, T, generator=generator)  # (B, T)
    if masking.whole_word and starts is not None:
        word = torch.cumsum(starts.long(), dim=1).clamp(min=1) - 1  # (B, T): word index of each token
        u = torch.gather(u, 1, word)  # every token of a word gets its word's draw
    chosen = (u < masking.mask_prob) & maskable  # (B, T)
    r = torch.rand(B, T, generator=generator)  # (B, T)
    if masking.special_ids:  # uniform over the ordinary ids, wherever the specials are
        ordinary = torch.ones(masking.vocab_size, dtype=torch.bool)
        ordinary[list(masking.special_ids)] = False
        ordinary_ids = ordinary.nonzero().flatten()  # (V - S,)
        random_ids = ordinary_ids[torch.randint(0, len(ordinary_ids), (B, T), generator=generator)]  # (B, T)
    else:
        random_ids = torch.randint(masking.num_specials, masking.vocab_size, (B, T), generator=generator)
    to_mask = chosen & (r < masking.mask_token_prob)
    to_random = chosen & (r >= masking.mask_token_prob) & (r < masking.mask_token_prob + masking.random_token_prob)
    inputs = torch.where(to_mask, torch.full_like(ids, masking.mask_id), ids)
    inputs = torch.where(to_random, random_ids, inputs)
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    return inputs, labels


def check_stream(tokens: np.ndarray, block_size: int, what: str) -> None:
    if len(tokens) < block_size - 2:
        raise DataError(
            f"the {what} holds {len(tokens)} tokens, fewer than model.block_size - 2 = {block_size - 2} needed for "
            f"one sequence; lower model.block_size (at most {len(tokens) + 2}) or give more text"
        )


def _frame(rows: list[np.ndarray], cls_id: int, sep_id: int) -> torch.Tensor:
    data = torch.from_numpy(np.stack(rows).astype(np.int64))  # (B, L)
    B = data.shape[0]
    return torch.cat([torch.full((B, 1), cls_id), data, torch.full((B, 1), sep_id)], dim=1)  # (B, L + 2)


def _frame_starts(rows: list[np.ndarray]) -> torch.Tensor:
    data = torch.from_numpy(np.stack(rows).astype(np.int64))  # (B, L)
    data[:, 0] = 1  # a window may begin inside a word: its first token starts one
    ones = torch.ones(data.shape[0], 1, dtype=torch.long)
    return torch.cat([ones, data, ones], dim=1)  # (B, L + 2)


class MaskedBlocks:
    """Training batches: ``batch_size`` random windows of ``block_size - 2`` tokens, framed ``[CLS] .. [SEP]``
    and masked by :func:`mask_tokens`.

    Window offsets of batch ``i`` of epoch ``e`` come from a NumPy generator seeded with ``(seed, e, i)``; the
    masks from one ``torch.Generator`` seeded with ``seed`` that advances with every batch drawn, so each epoch
    (and each revisit of a window) gets fresh masks — dynamic masking. :meth:`training_state` hands the
    generator's state to the trainer's checkpoints, so a resumed run continues the same mask sequence.

    Under ``torchrun`` every rank draws the same global batch (offsets and masks) and keeps its own contiguous
    slice of ``batch_size / world_size`` rows, so the generators stay in step and the batches do not depend on
    the number of processes."""

    def __init__(
        self,
        tokens: np.ndarray,
        starts: np.ndarray | None,
        block_size: int,
        batch_size: int,
        masking: Masking,
        cls_id: int,
        sep_id: int,
        seed: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"train.batch_size must be >= 1, got {batch_size}")
        check_stream(tokens, block_size, "training text")
        self.tokens, self.starts = tokens, starts
        self.window = block_size - 2
        self.batch_size = batch_size
        self.masking = masking
        self.cls_id, self.sep_id = cls_id, sep_id
        self.seed = seed
        self.epoch = 0
        self.generator = torch.Generator().manual_seed(seed)
        self.batches_per_epoch = max(1, len(tokens) // (batch_size * self.window))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def training_state(self) -> dict[str, Any]:
        return {"mask_generator": self.generator.get_state()}

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["mask_generator"])

    def batch(self, epoch: int, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, epoch, index])
        offsets = rng.integers(0, len(self.tokens) - self.window + 1, size=self.batch_size)
        ids = _frame([np.asarray(self.tokens[s : s + self.window]) for s in offsets], self.cls_id, self.sep_id)
        starts = None
        if self.starts is not None and self.masking.whole_word:
            starts = _frame_starts([np.asarray(self.starts[s : s + self.window]) for s in offsets])
        inputs, labels = mask_tokens(ids, self.masking, self.generator, starts)
        rows = self.local_rows()
        return {"input_ids": inputs[rows], "labels": labels[rows]}

    def local_rows(self) -> slice:
        world = distributed.world_size()
        if self.batch_size % world:
            raise world_size_error(self.batch_size, world)
        per = self.batch_size // world
        return slice(distributed.rank() * per, (distributed.rank() + 1) * per)

    def iter_from(self, start: int) -> Iterator[dict[str, torch.Tensor]]:
        self.local_rows()  # fail before the first batch if the world size does not divide the batch
        for index in range(start, self.batches_per_epoch):
            yield self.batch(self.epoch, index)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self.iter_from(0)


class SequentialMaskedBlocks:
    """Every non-overlapping window of ``block_size - 2`` tokens once, in order, framed and masked with a
    generator seeded with ``seed`` at the start of each pass: the same masks every time (reproducible
    validation and ``lmlab mlm eval``). The last, shorter window is padded (``pad_mask`` marks real tokens)."""

    def __init__(
        self,
        tokens: np.ndarray,
        starts: np.ndarray | None,
        block_size: int,
        batch_size: int,
        masking: Masking,
        cls_id: int,
        sep_id: int,
        pad_id: int,
        seed: int = 0,
        max_tokens: int = 0,
    ) -> None:
        if len(tokens) == 0:
            raise DataError("the evaluation text holds no tokens")
        self.tokens, self.starts = tokens, starts
        self.window = block_size - 2
        self.batch_size = batch_size
        self.masking = masking
        self.cls_id, self.sep_id, self.pad_id = cls_id, sep_id, pad_id
        self.seed = seed
        usable = len(tokens) if not max_tokens else min(len(tokens), max_tokens)
        self.bounds = [(s, min(s + self.window, usable)) for s in range(0, usable, self.window)]

    def __len__(self) -> int:
        return -(-len(self.bounds) // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        generator = torch.Generator().manual_seed(self.seed)
        for first in range(0, len(self.bounds), self.batch_size):
            bounds = self.bounds[first : first + self.batch_size]
            B, T = len(bounds), self.window + 2
            ids = torch.full((B, T), self.pad_id, dtype=torch.long)
            starts = torch.ones(B, T, dtype=torch.long)
            pad_mask = torch.zeros(B, T, dtype=torch.bool)
            for b, (s, e) in enumerate(bounds):
                n = e - s
                ids[b, 0], ids[b, n + 1] = self.cls_id, self.sep_id
                ids[b, 1 : n + 1] = torch.from_numpy(np.asarray(self.tokens[s:e]).astype(np.int64))
                if self.starts is not None:
                    starts[b, 1 : n + 1] = torch.from_numpy(np.asarray(self.starts[s:e]).astype(np.int64))
                    starts[b, 1] = 1
                pad_mask[b, : n + 2] = True
            use_starts = starts if (self.starts is not None and self.masking.whole_word) else None
            inputs, labels = mask_tokens(ids, self.masking, generator, use_starts)
            yield {"input_ids": inputs, "labels": labels, "pad_mask": pad_mask}
