"""Tokenizers: words, characters, the Keras ``Tokenizer`` (exactly), and byte-pair encoding.

Every tokenizer serialises to a JSON-friendly dict with a ``"type"`` key (``to_dict`` / ``from_dict``) and to
one JSON file (``save`` / ``load``), so it travels with the model in the run directory.
:func:`tokenizer_from_dict` and :func:`load_tokenizer` rebuild whichever kind was saved.

Every tokenizer has ``tokenize(text) -> list[str]`` and ``detokenize(tokens) -> str``; the word tokenizers
also take a *segmenter* (:data:`SEGMENTERS`, :func:`register_segmenter`) that splits runs of Chinese/Japanese
characters into words. :class:`lmlab.data.codec.Codec` puts a tokenizer and a vocabulary together.

* :class:`WhitespaceTokenizer` - split on whitespace (pre-tokenised PTB/WikiText files).
* :class:`WordTokenizer` - Unicode-aware regex: runs of word characters (keeping contractions such as
  ``don't`` whole), each punctuation mark a token, CJK characters one per token; optional lowercasing and HTML
  tag (``<br />``) stripping.
* :class:`CharTokenizer` - one token per character.
* :class:`KerasTokenizer` - reproduces ``keras.preprocessing.text.Tokenizer`` (word index by descending count,
  ties in first-seen order; OOV token at index 1; ``num_words`` cut-off) plus :func:`pad_sequences`.
* :class:`BPETokenizer` - a thin wrapper over Hugging Face ``tokenizers`` (byte-level or whitespace BPE).
* :class:`HFTokenizer` - a pretrained model's own ``tokenizer.json`` (byte-level BPE, SentencePiece-style
  Metaspace BPE/Unigram, ...) with its special tokens, as ``lmlab gpt import`` brings it in.
"""

from __future__ import annotations

import html
import json
import os
import re
import unicodedata
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmlab.data.vocab import DEFAULT_SPECIALS, atomic_write_text
from lmlab.errors import CheckpointError, ConfigError, DataError

__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "HFTokenizer",
    "IdTokenizer",
    "KERAS_FILTERS",
    "KerasTokenizer",
    "SEGMENTERS",
    "VectorWordTokenizer",
    "WhitespaceTokenizer",
    "WordTokenizer",
    "detokenize_words",
    "is_cjk_text",
    "join_words",
    "word_joint",
    "load_tokenizer",
    "pad_sequences",
    "han_share",
    "register_segmenter",
    "resolve_segmenter",
    "segmenter_available",
    "tokenizer_from_dict",
]

# Han ideographs (with extensions and compatibility forms), hiragana and katakana: scripts written without
# spaces between words, so each character is a token. Hangul is written with spaces and stays in words.
_CJK_CLASS = (
    "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
    "\U00020000-\U0003134f"  # supplementary ideographic planes (CJK extensions B-H, compatibility supplement)
)
_CJK_RE = re.compile(f"([{_CJK_CLASS}])")
_CJK_RUN_RE = re.compile(f"[{_CJK_CLASS}]+")
# A word: word characters, optionally joined by apostrophes (don't, o'clock, rock'n'roll); else one
# non-space, non-word character (punctuation, symbols, emoji).
_WORD_RE = re.compile(r"\w++(?:['\u2019]\w++)*+|[^\w\s]")  # possessive: no backtracking, faster
# Word-vector words: runs of letters/digits, apostrophes inside words kept, punctuation and "_" dropped.
_VECTOR_WORD_RE = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")
# HTML tags such as <br />, <br>, <i>, </p>, <a href="...">.
_HTML_TAG_RE = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")


# ---------------------------------------------------------------------------------------------------------
# Segmenters: how a run of Chinese/Japanese characters (written without spaces) becomes words
# ---------------------------------------------------------------------------------------------------------

#: name -> ``fn(run) -> list[str]``, applied to every maximal run of Han/kana characters. Built in: ``"char"``
#: (one token per character, WordTokenizer's default) and ``"none"`` (the run is one token, the word-vector
#: default). A tokenizer saves the segmenter's *name*; register the same name before loading it.
SEGMENTERS: dict[str, Callable[[str], list[str]]] = {"char": list, "none": lambda run: [run]}


def register_segmenter(name: str, fn: Callable[[str], list[str]]) -> None:
    """Make ``fn`` available as ``WordTokenizer(segmenter=name)`` (e.g. a Chinese word segmenter).

    ``fn`` receives a run of Chinese/Japanese characters and returns its words (their concatenation should be
    the run). Registering a name again replaces it.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a segmenter name must be a non-empty string, got {name!r}")
    if not callable(fn):
        raise ConfigError(f"segmenter {name!r} must be a function str -> list[str], got {type(fn).__name__}")
    SEGMENTERS[name] = fn


def _check_segmenter(name: str) -> str:
    if name not in SEGMENTERS and name not in _LAZY_SEGMENTERS:
        raise ConfigError(
            f"unknown segmenter {name!r}; registered: {', '.join(sorted(SEGMENTERS))} "
            f"(optional: {', '.join(sorted(_LAZY_SEGMENTERS))}, {_ZH_EXTRA}; "
            "or register one with lmlab.data.tokenizers.register_segmenter(name, fn))"
        )
    return name


# Han ideographs only (no kana): what the auto segmenter counts to decide whether a text is Chinese.
_HAN_RE = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
#: the share of letters that must be Han characters for ``segmenter="auto"`` to segment Chinese words
AUTO_HAN_THRESHOLD = 0.3
_ZH_EXTRA = "pip install 'lmlab[zh]' (or: pip install 'jieba>=0.42,<0.43')"


def _jieba_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("jieba") is not None


def _import_jieba():
    """``jieba``, imported quietly (its import warns about pkg_resources and invalid escapes; it logs to stderr)."""
    import logging
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import jieba
    except ImportError:
        raise ConfigError(f"segmenter 'jieba' needs the jieba package, which is not installed: {_ZH_EXTRA}") from None
    jieba.setLogLevel(logging.WARNING)
    return jieba


_JIEBA_CACHE: dict[tuple[str | None, str | None], Callable[[str], list[str]]] = {}


def _jieba_segmenter(user_dict: str | None = None, digest: str | None = None) -> Callable[[str], list[str]]:
    """A jieba word segmenter (precise mode, HMM for unknown words) on a ``jieba.Tokenizer`` of our own, with
    ``user_dict`` loaded into it (never jieba's global tokenizer)."""
    key = (user_dict, digest)
    if key not in _JIEBA_CACHE:
        jieba = _import_jieba()
        tk = jieba.Tokenizer()
        if user_dict is not None:
            with open(user_dict, "rb") as fh:  # jieba would leave a file it opens itself unclosed
                tk.load_userdict(fh)
        _JIEBA_CACHE[key] = tk.lcut
    return _JIEBA_CACHE[key]


#: segmenters built on an optional package: name -> (is it installed?, factory(user_dict, digest) -> fn)
_LAZY_SEGMENTERS: dict[str, tuple[Callable[[], bool], Callable[..., Callable[[str], list[str]]]]] = {
    "jieba": (_jieba_available, _jieba_segmenter),
}


def segmenter_available(name: str) -> bool:
    """True when ``name`` is registered, or is an optional segmenter whose package is installed."""
    if name in SEGMENTERS:
        return True
    return name in _LAZY_SEGMENTERS and _LAZY_SEGMENTERS[name][0]()


def han_share(texts: Iterable[str], max_chars: int = 200_000) -> float:
    """The share of letters (``str.isalpha``) that are Han characters in the first ``max_chars`` characters of
    ``texts``."""
    letters = han = seen = 0
    for text in texts:
        chunk = text[: max_chars - seen]
        seen += len(chunk)
        letters += sum(1 for c in chunk if c.isalpha())
        han += len(_HAN_RE.findall(chunk))
        if seen >= max_chars:
            break
    return han / letters if letters else 0.0


def resolve_segmenter(requested: str, texts: Iterable[str], default: str, kind: str = "word",
                      log: Callable[[str], None] | None = None) -> str:
    """The segmenter a tokenizer uses: ``requested``, or for ``"auto"`` the one the text calls for.

    ``"auto"``: when more than :data:`AUTO_HAN_THRESHOLD` of the letters in a sample of ``texts`` are Han
    characters, ``"jieba"`` if it is installed, else ``"char"``; otherwise ``default`` (the tokenizer's old
    default, so non-Chinese text tokenizes as before). Logs the choice when the text holds Han characters
    (``tokenizer: word, segmenter: jieba (auto: 87% Han characters)``).
    """
    if requested != "auto":
        _check_segmenter(requested)
        return requested
    share = han_share(texts)
    if share > AUTO_HAN_THRESHOLD:
        choice = "jieba" if segmenter_available("jieba") else "char"
        why = f"auto: {share:.0%} Han characters" + ("" if choice == "jieba" else f"; for words: {_ZH_EXTRA}")
    else:
        choice, why = default, f"auto: {share:.0%} Han characters"
    if log is not None and share > 0:
        log(f"tokenizer: {kind}, segmenter: {choice} ({why})")
    return choice


def check_segmenter_option(name: str, user_dict: str | None, where: str = "data") -> None:
    """Config validation of ``segmenter`` / ``user_dict`` (ConfigError naming the keys)."""
    if name != "auto" and not (name in SEGMENTERS or name in _LAZY_SEGMENTERS):
        known = sorted({*SEGMENTERS, *_LAZY_SEGMENTERS, "auto"})
        raise ConfigError(f"{where}.segmenter={name!r} is unknown; choose one of {', '.join(known)}")
    if name in _LAZY_SEGMENTERS and not segmenter_available(name):
        raise ConfigError(f"{where}.segmenter={name}: the {name} package is not installed: {_ZH_EXTRA}")
    if user_dict and name not in ("auto", "jieba"):
        raise ConfigError(f"{where}.user_dict works with {where}.segmenter=jieba (or auto), not {name!r}")


def _user_dict_digest(path: str, expected: str | None = None) -> str:
    """sha256 of a user dictionary; ConfigError/CheckpointError when it is missing or (at load) changed."""
    import hashlib

    p = Path(path)
    if not p.is_file():
        if expected is not None:
            raise CheckpointError(
                f"the user dictionary {path} this run was trained with is missing; copy it back to that path, "
                "or re-train"
            )
        raise ConfigError(f"user dictionary {path} is not a file (one word per line: word [freq] [tag])")
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    if expected is not None and digest != expected:
        raise CheckpointError(
            f"the user dictionary {path} changed since this run was trained (sha256 {digest[:12]}, expected "
            f"{expected[:12]}); restore the original so text is segmented as in training, or re-train"
        )
    return digest


def _segment(text: str, fn: Callable[[str], list[str]]) -> str:
    """``text`` with every run of CJK characters replaced by its segments (``fn(run)``), spaced apart."""
    return _CJK_RUN_RE.sub(lambda m: " " + " ".join(fn(m.group())) + " ", text)


_NO_SPACE_BEFORE = re.compile(r" ([.,!?;:%)\]}]|'s\b|n't\b)")
_NO_SPACE_AFTER = re.compile(r"([(\[{]) ")
_HYPHEN = re.compile(r"(\w) - (?=\w)")
_APOSTROPHE_ELISION = re.compile(r"\b([cdjlmnstCDJLMNST]|qu|Qu|jusqu|lorsqu|puisqu) ' ")


# Chinese/Japanese text: Han/kana (_CJK_CLASS), CJK symbols and punctuation (、。《》「」【】...), full-width forms.
_CJK_TEXT_RE = re.compile(f"[{_CJK_CLASS}\u3000-\u303f\ufe30-\ufe4f\uff01-\uff65]")
# CJK punctuation (full-width, no space on either side in Chinese typography).
_CJK_PUNCT_RE = re.compile("[\u3000-\u303f\ufe30-\ufe4f\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65]")
# Punctuation that belongs to whichever script it stands in: no space on its CJK side.
_NEUTRAL_PUNCT = frozenset(".,!?;:()[]{}\"'\u2018\u2019\u201c\u201d\u2026\u2014\u00b7")
# ASCII marks that NFKC made of full-width ones (，！？；：): written full-width again after a Han character.
_FULL_WIDTH = {",": "\uff0c", "!": "\uff01", "?": "\uff1f", ";": "\uff1b", ":": "\uff1a"}


def _no_space_between(prev: str, tok: str) -> bool:
    """True where Chinese typography puts no space between ``prev`` and ``tok``."""
    if not prev or not tok:
        return False
    a, b = prev[-1], tok[0]
    if _CJK_PUNCT_RE.match(a) or _CJK_PUNCT_RE.match(b):
        return True
    a_cjk, b_cjk = bool(_CJK_TEXT_RE.match(a)), bool(_CJK_TEXT_RE.match(b))
    return (a_cjk and (b_cjk or (len(tok) == 1 and b in _NEUTRAL_PUNCT))) or (
        b_cjk and len(prev) == 1 and a in _NEUTRAL_PUNCT
    )


def is_cjk_text(text: str) -> bool:
    """True if ``text`` holds a Chinese/Japanese character or CJK punctuation."""
    return bool(_CJK_TEXT_RE.search(text))


def word_joint(prev: str, token: str) -> tuple[str, str]:
    """How ``token`` follows ``prev`` in text: ``(separator, token as written)``; the rule of :func:`join_words`
    for one pair (``prev`` is ``""`` at the start of a text)."""
    if prev and token in _FULL_WIDTH and _CJK_TEXT_RE.match(prev[-1]):
        token = _FULL_WIDTH[token]
    if not prev:
        return "", token
    return ("" if _no_space_between(prev, token) else " "), token


def join_words(tokens: Sequence[str]) -> str:
    """Join word tokens with single spaces, except between Chinese/Japanese tokens (THE join of segmented text
    in every family): ``["我", "爱", "北京", "python", "编程", "。"]`` -> ``"我爱北京 python 编程。"``.

    No space is put where both neighbours are CJK text (Han, kana), either one is CJK punctuation (``，。《》``),
    or one is CJK text and the other a punctuation mark; Latin words and digits keep their spaces.
    ``, ! ? ; :`` right after a Han character is written full-width (``，``), undoing the NFKC of the
    segmenting tokenizers. Text without CJK characters is joined exactly as ``" ".join(tokens)``.
    """
    out: list[str] = []
    prev = ""
    for k, tok in enumerate(tokens):
        sep, tok = word_joint(prev, tok)
        out.append((" " if k and not prev else sep) + tok)
        prev = tok
    return "".join(out)


def detokenize_words(tokens: Sequence[str]) -> str:
    """Join word tokens into text: no space before ``. , ! ? ; : )`` or after ``(``, ``a - b`` -> ``a-b``, no
    space between Chinese/Japanese tokens (:func:`join_words`).

    (French typography puts a space before ``! ? ;``; this simple rule does not, which sacreBLEU's
    tokenizer makes irrelevant for BLEU.)
    """
    text = join_words(tokens)
    text = _NO_SPACE_BEFORE.sub(r"\1", text)
    text = _NO_SPACE_AFTER.sub(r"\1", text)
    text = _HYPHEN.sub(r"\1-", text)
    return _APOSTROPHE_ELISION.sub(r"\1'", text)


def _check_type(d: dict, expected: str) -> None:
    if not isinstance(d, dict) or d.get("type") != expected:
        got = d.get("type") if isinstance(d, dict) else type(d).__name__
        raise CheckpointError(f"expected a {expected!r} tokenizer description, got {got!r}")


class _JSONFileMixin:
    """``save(path)`` / ``load(path)`` through ``to_dict`` / ``from_dict``."""

    def to_dict(self) -> dict:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer to one JSON file (atomically)."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str | os.PathLike):
        """Read a tokenizer written by :meth:`save`.

        Raises:
            CheckpointError: the file is missing, truncated, not JSON or of another tokenizer type.
        """
        tok = load_tokenizer(path)
        if not isinstance(tok, cls):
            raise CheckpointError(f"{path}: holds a {type(tok).__name__}, expected a {cls.__name__}")
        return tok


class _SegmentingMixin:
    """The segmentation options the word tokenizers share: ``segmenter``, ``user_dict`` (+ its sha256, checked
    when a saved tokenizer is loaded) and ``nfkc`` (full-width letters/digits/punctuation -> ASCII; default: on
    for the optional segmenters such as jieba, off for ``"char"``/``"none"`` so earlier runs are unchanged)."""

    def _init_segmenter(self, segmenter: str, user_dict: str | None, user_dict_sha256: str | None,
                        nfkc: bool | None) -> None:
        self.segmenter = _check_segmenter(segmenter)
        optional = segmenter in _LAZY_SEGMENTERS and segmenter not in SEGMENTERS
        if optional and not segmenter_available(segmenter):
            raise ConfigError(f"segmenter {segmenter!r} needs the {segmenter} package, which is not installed: {_ZH_EXTRA}")
        if user_dict and not optional:
            raise ConfigError(f"a user dictionary works with segmenter='jieba', not {segmenter!r}")
        self.user_dict = str(user_dict) if user_dict else None
        self.user_dict_sha256 = _user_dict_digest(self.user_dict, user_dict_sha256) if self.user_dict else None
        self.nfkc = optional if nfkc is None else bool(nfkc)
        self._split_fn: Callable[[str], list[str]] | None = None

    def _segment_fn(self) -> Callable[[str], list[str]]:
        if self._split_fn is None:
            if self.segmenter in SEGMENTERS:
                self._split_fn = SEGMENTERS[self.segmenter]
            else:
                self._split_fn = _LAZY_SEGMENTERS[self.segmenter][1](self.user_dict, self.user_dict_sha256)
        return self._split_fn

    def _normalize(self, text: str) -> str:
        return unicodedata.normalize("NFKC", text) if self.nfkc and not text.isascii() else text

    def _segmenter_dict(self) -> dict:
        """The options beyond ``segmenter`` (only when set, so files of earlier runs read back unchanged)."""
        d: dict[str, Any] = {}
        if self.nfkc:
            d["nfkc"] = True
        if self.user_dict:
            d["user_dict"], d["user_dict_sha256"] = self.user_dict, self.user_dict_sha256
        return d

    @staticmethod
    def _segmenter_kwargs(d: dict) -> dict:
        return {"user_dict": d.get("user_dict"), "user_dict_sha256": d.get("user_dict_sha256"),
                "nfkc": d.get("nfkc", False)}


class WhitespaceTokenizer(_JSONFileMixin):
    """Split on whitespace: the convention of the PTB and WikiText files (already tokenised, ``<unk>`` inside).

    Args:
        lowercase: Lowercase the text first.
    """

    def __init__(self, lowercase: bool = False) -> None:
        self.lowercase = lowercase

    def tokenize(self, text: str) -> list[str]:
        """Return the whitespace-separated tokens of ``text``."""
        return (text.lower() if self.lowercase else text).split()

    __call__ = tokenize

    def detokenize(self, tokens: Sequence[str]) -> str:
        """Tokens joined by single spaces (none between Chinese tokens: :func:`join_words`)."""
        return join_words(tokens)

    def to_dict(self) -> dict:
        """JSON-friendly description (``{"type": "whitespace", ...}``)."""
        return {"type": "whitespace", "lowercase": self.lowercase}

    @classmethod
    def from_dict(cls, d: dict) -> WhitespaceTokenizer:
        """Rebuild from :meth:`to_dict` output."""
        _check_type(d, "whitespace")
        return cls(lowercase=d.get("lowercase", False))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WhitespaceTokenizer) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"WhitespaceTokenizer(lowercase={self.lowercase})"


class WordTokenizer(_SegmentingMixin, _JSONFileMixin):
    """Split text into words and punctuation with a Unicode-aware regex.

    Args:
        lowercase: Lowercase the text first (Unicode-aware ``str.lower``).
        strip_html: Replace HTML tags such as ``<br />`` (common in IMDb reviews) with a space and decode
            entities (``&amp;`` -> ``&``).
        split_cjk: Separate runs of Chinese/Japanese characters from the words around them and split them
            with ``segmenter``.
        segmenter: Name in :data:`SEGMENTERS` splitting each such run: ``"char"`` (default) makes every
            character its own token; ``"jieba"`` segments Chinese words (``pip install 'lmlab[zh]'``).
        user_dict: A jieba user dictionary (one word per line: ``word [freq] [tag]``); its path and sha256 are
            saved with the tokenizer, and loading checks the file is still the same.
        nfkc: NFKC-normalise non-ASCII text (full-width ``ＡＢＣ１２３，`` -> ``ABC123,``); None: on for the
            optional segmenters (jieba), off for ``"char"``.

    Example:
        >>> WordTokenizer().tokenize("I didn't like it.<br /><br />Not at all!")
        ['i', "didn't", 'like', 'it', '.', 'not', 'at', 'all', '!']
    """

    def __init__(self, lowercase: bool = True, strip_html: bool = True, split_cjk: bool = True, segmenter: str = "char",
                 user_dict: str | None = None, user_dict_sha256: str | None = None, nfkc: bool | None = None):
        self.lowercase = lowercase
        self.strip_html = strip_html
        self.split_cjk = split_cjk
        self._init_segmenter(segmenter, user_dict, user_dict_sha256, nfkc)

    def tokenize(self, text: str) -> list[str]:
        """Return the tokens of ``text``."""
        if self.nfkc:
            text = self._normalize(text)
        if self.strip_html:
            if "&" in text:
                text = html.unescape(text)  # &amp; -> &, &#39; -> '
            if "<" in text:
                text = _HTML_TAG_RE.sub(" ", text)
        if self.lowercase:
            text = text.lower()
        if self.split_cjk and not text.isascii() and _CJK_RE.search(text):
            if self.segmenter == "char":
                text = _CJK_RE.sub(r" \1 ", text)
            else:
                text = _segment(text, self._segment_fn())
        return _WORD_RE.findall(text)

    __call__ = tokenize

    def detokenize(self, tokens: Sequence[str]) -> str:
        """Words joined into text with the punctuation rule of :func:`detokenize_words`."""
        return detokenize_words(tokens)

    def to_dict(self) -> dict:
        """JSON-friendly description (``{"type": "word", ...}``; files without ``segmenter`` read as ``"char"``)."""
        return {
            "type": "word", "lowercase": self.lowercase, "strip_html": self.strip_html, "split_cjk": self.split_cjk,
            "segmenter": self.segmenter, **self._segmenter_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> WordTokenizer:
        """Rebuild from :meth:`to_dict` output."""
        _check_type(d, "word")
        return cls(
            lowercase=d["lowercase"], strip_html=d["strip_html"], split_cjk=d["split_cjk"],
            segmenter=d.get("segmenter", "char"), **cls._segmenter_kwargs(d),
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WordTokenizer) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return (
            f"WordTokenizer(lowercase={self.lowercase}, strip_html={self.strip_html}, split_cjk={self.split_cjk}, "
            f"segmenter={self.segmenter!r})"
        )


class VectorWordTokenizer(_SegmentingMixin, _JSONFileMixin):
    """The words word2vec and GloVe learn vectors for: no punctuation tokens, nothing stripped.

    Args:
        lowercase: Lowercase the text first.
        mode: ``"words"`` - runs of letters and digits, apostrophes inside words kept (``don't``), every other
            character a separator; ``"whitespace"`` - split on whitespace only (pre-tokenized corpora).
        segmenter: Name in :data:`SEGMENTERS` splitting runs of Chinese/Japanese characters (``"words"`` mode
            only); the default ``"none"`` keeps a run as one word, ``"jieba"`` segments Chinese words.
        user_dict: A user dictionary for the segmenter, as for :class:`WordTokenizer`.
        user_dict_sha256: The dictionary's hash saved with a run, checked when it is loaded again.
        nfkc: NFKC-normalise the text first (full-width letters and digits), as for :class:`WordTokenizer`.

    Example:
        >>> VectorWordTokenizer().tokenize("Don't stop, O'Brien_2!")
        ["don't", 'stop', "o'brien", '2']
    """

    MODES = ("words", "whitespace")

    def __init__(self, lowercase: bool = True, mode: str = "words", segmenter: str = "none",
                 user_dict: str | None = None, user_dict_sha256: str | None = None, nfkc: bool | None = None):
        if mode not in self.MODES:
            raise ConfigError(f"word-vector tokenizer mode must be one of {', '.join(self.MODES)}, got {mode!r}")
        self.lowercase = lowercase
        self.mode = mode
        self._init_segmenter(segmenter, user_dict, user_dict_sha256, nfkc)

    def tokenize(self, text: str) -> list[str]:
        """Return the words of ``text``."""
        if self.nfkc:
            text = self._normalize(text)
        if self.lowercase:
            text = text.lower()
        if self.mode == "whitespace":
            return text.split()
        if self.segmenter != "none" and not text.isascii() and _CJK_RE.search(text):
            text = _segment(text, self._segment_fn())
        return _VECTOR_WORD_RE.findall(text)

    __call__ = tokenize

    def detokenize(self, tokens: Sequence[str]) -> str:
        """Words joined by single spaces (none between Chinese words: :func:`join_words`)."""
        return join_words(tokens)

    def to_dict(self) -> dict:
        """JSON-friendly description (``{"type": "vector_words", ...}``; files without ``segmenter``: ``"none"``)."""
        return {"type": "vector_words", "lowercase": self.lowercase, "mode": self.mode, "segmenter": self.segmenter,
                **self._segmenter_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> VectorWordTokenizer:
        """Rebuild from :meth:`to_dict` output."""
        _check_type(d, "vector_words")
        return cls(lowercase=d["lowercase"], mode=d["mode"], segmenter=d.get("segmenter", "none"),
                   **cls._segmenter_kwargs(d))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VectorWordTokenizer) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"VectorWordTokenizer(lowercase={self.lowercase}, mode={self.mode!r}, segmenter={self.segmenter!r})"


class CharTokenizer(_JSONFileMixin):
    """One token per character (Unicode code point).

    Args:
        lowercase: Lowercase the text first.
    """

    def __init__(self, lowercase: bool = False):
        self.lowercase = lowercase

    def tokenize(self, text: str) -> list[str]:
        """Return the characters of ``text`` as a list."""
        return list(text.lower() if self.lowercase else text)

    __call__ = tokenize

    def detokenize(self, tokens: Sequence[str]) -> str:
        """The characters joined back into text."""
        return "".join(tokens)

    def to_dict(self) -> dict:
        """JSON-friendly description (``{"type": "char", ...}``)."""
        return {"type": "char", "lowercase": self.lowercase}

    @classmethod
    def from_dict(cls, d: dict) -> CharTokenizer:
        """Rebuild from :meth:`to_dict` output."""
        _check_type(d, "char")
        return cls(lowercase=d["lowercase"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"CharTokenizer(lowercase={self.lowercase})"


# ---------------------------------------------------------------------------------------------------------
# Keras
# ---------------------------------------------------------------------------------------------------------

#: Keras' default ``filters``: every ASCII punctuation mark except the apostrophe, plus tab and newline.
KERAS_FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'


def _translation_table(filters: str, split: str) -> str | dict[int, str]:
    """A ``str.translate`` table replacing every character of ``filters`` by ``split``.

    For a one-character ``split`` it is a string indexed by code point (about 3x faster than a dict; code
    points past its end raise IndexError inside ``translate`` and are kept unchanged).
    """
    if len(split) == 1 and max(map(ord, filters)) < 0x10000:
        chars = set(filters)
        return "".join(split if chr(i) in chars else chr(i) for i in range(max(map(ord, filters)) + 1))
    return str.maketrans({c: split for c in filters})


class KerasTokenizer(_JSONFileMixin):
    """A faithful re-implementation of ``keras.preprocessing.text.Tokenizer`` (word level).

    * Text -> words: lowercase (``lower``), replace every character of ``filters`` by ``split``, split on
      ``split``, drop empty strings. The apostrophe is not a filter, so ``don't`` stays one word.
    * :meth:`fit_on_texts` counts words; ``word_index`` ranks them by count, descending, ties in first-seen
      order. Index 0 is reserved (padding); with an ``oov_token`` it gets index 1 and the words start at 2.
    * :meth:`texts_to_sequences` keeps words whose index is ``< num_words`` and maps every other word (rare or
      unseen) to the OOV index (or drops it when ``oov_token`` is None). ``word_index`` itself holds *all*
      words, as in Keras.

    Args:
        num_words: Keep the ``num_words - 1`` most frequent indices (None keeps all).
        oov_token: Token for out-of-vocabulary words, or None to drop them.
        lower: Lowercase texts.
        filters: Characters replaced by ``split`` before splitting.
        split: The word separator.
        char_level: Treat every character as a token (Keras' ``char_level``).
    """

    def __init__(
        self,
        num_words: int | None = 10000,
        oov_token: str | None = "<OOV>",
        lower: bool = True,
        filters: str = KERAS_FILTERS,
        split: str = " ",
        char_level: bool = False,
    ):
        if num_words is not None and (not isinstance(num_words, int) or num_words < 1):
            raise ConfigError(f"num_words must be a positive integer or None, got {num_words!r}")
        self.num_words = num_words
        self.oov_token = oov_token
        self.lower = lower
        self.filters = filters
        self.split = split
        self.char_level = char_level
        self._table: str | dict[int, str] = {}
        self._table_key: tuple[str, str] | None = None
        self.document_count = 0
        self.word_counts: OrderedDict[str, int] = OrderedDict()
        self.word_docs: defaultdict[str, int] = defaultdict(int)
        self.word_index: dict[str, int] = {}
        self.index_word: dict[int, str] = {}
        self.index_docs: defaultdict[int, int] = defaultdict(int)

    def text_to_word_sequence(self, text: str) -> list[str]:
        """Keras' ``text_to_word_sequence`` with this tokenizer's ``filters``, ``lower`` and ``split``."""
        if self.lower:
            text = text.lower()
        if self.filters:
            key = (self.filters, self.split)
            if self._table_key != key:  # the table is cached; rebuilt if filters/split were reassigned
                self._table = _translation_table(self.filters, self.split)
                self._table_key = key
            text = text.translate(self._table)
        return [w for w in text.split(self.split) if w]

    def _sequence(self, text: str | Sequence[str]) -> list[str]:
        if isinstance(text, str):
            if self.char_level:
                return list(text.lower() if self.lower else text)
            return self.text_to_word_sequence(text)
        return list(text)

    tokenize = _sequence

    def detokenize(self, tokens: Sequence[str]) -> str:
        """Words joined by ``split`` (a space by default)."""
        return self.split.join(tokens)

    def encode(self, text: str | Sequence[str]) -> list[int]:
        """Ids of one text (``texts_to_sequences`` of one text: the tokenizer's own ids)."""
        return self.texts_to_sequences([text])[0]

    def encode_batch(self, texts: Sequence[str | Sequence[str]]) -> list[list[int]]:
        """Ids of several texts (``texts_to_sequences``)."""
        return self.texts_to_sequences(list(texts))

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ids (``sequences_to_texts`` of one sequence)."""
        return self.sequences_to_texts([ids])[0]

    def fit_on_texts(self, texts: Iterable[str | Sequence[str]]) -> KerasTokenizer:
        """Count words in ``texts`` (strings, or already split lists) and rebuild ``word_index``."""
        if isinstance(texts, str):
            raise DataError("fit_on_texts expects a list of texts, got one string; wrap it in a list")
        word_counts, word_docs = Counter(self.word_counts), Counter(self.word_docs)  # C-speed counting
        for text in texts:
            self.document_count += 1
            seq = self._sequence(text)
            word_counts.update(seq)  # keeps first-seen order for new words, like Keras' OrderedDict
            word_docs.update(set(seq))
        self.word_counts = OrderedDict(word_counts)
        self.word_docs = defaultdict(int, word_docs)
        wcounts = sorted(self.word_counts.items(), key=lambda x: x[1], reverse=True)  # stable: ties keep order
        sorted_voc = [] if self.oov_token is None else [self.oov_token]
        sorted_voc.extend(w for w, _ in wcounts)
        # Keras builds the dict from (word, rank) pairs: if the OOV token also occurs as a word, its later
        # rank wins. Index 0 is never assigned.
        self.word_index = dict(zip(sorted_voc, range(1, len(sorted_voc) + 1), strict=True))
        self.index_word = {i: w for w, i in self.word_index.items()}
        self.index_docs = defaultdict(int)
        for w, c in self.word_docs.items():
            self.index_docs[self.word_index[w]] = c
        return self

    def texts_to_sequences(self, texts: Iterable[str | Sequence[str]]) -> list[list[int]]:
        """Map texts to lists of indices (see the class docs for the ``num_words`` / OOV rule)."""
        if isinstance(texts, str):
            raise DataError("texts_to_sequences expects a list of texts, got one string; wrap it in a list")
        num_words = self.num_words
        oov_index = self.word_index.get(self.oov_token) if self.oov_token is not None else None
        # One lookup per word: index if < num_words, else the OOV index (None = drop the word).
        lookup = {w: (i if not num_words or i < num_words else oov_index) for w, i in self.word_index.items()}
        out = []
        for text in texts:
            ids = [lookup.get(w, oov_index) for w in self._sequence(text)]
            out.append(ids if oov_index is not None else [i for i in ids if i is not None])
        return out

    def sequences_to_texts(self, sequences: Iterable[Sequence[int]]) -> list[str]:
        """Inverse mapping as in Keras: indices >= ``num_words``, 0 and unknown ids become the OOV token (or are dropped without one)."""
        num_words = self.num_words
        oov_word = self.index_word.get(self.word_index.get(self.oov_token, -1)) if self.oov_token else None
        out = []
        for seq in sequences:
            words = []
            for i in seq:
                i = int(i)
                word = self.index_word.get(i)
                if word is not None:
                    if num_words and i >= num_words:
                        if oov_word is not None:
                            words.append(oov_word)
                    else:
                        words.append(word)
                elif oov_word is not None:
                    words.append(oov_word)
            out.append(" ".join(words))
        return out

    @property
    def vocab_size(self) -> int:
        """Rows an embedding layer needs: ``num_words``, or ``len(word_index) + 1`` when that is smaller/None."""
        full = len(self.word_index) + 1
        return full if self.num_words is None else min(self.num_words, full)

    def to_dict(self) -> dict:
        """JSON-friendly description including the fitted counts (mirrors Keras' ``to_json`` config)."""
        return {
            "type": "keras",
            "num_words": self.num_words,
            "oov_token": self.oov_token,
            "lower": self.lower,
            "filters": self.filters,
            "split": self.split,
            "char_level": self.char_level,
            "document_count": self.document_count,
            "word_counts": list(self.word_counts.items()),
            "word_docs": list(self.word_docs.items()),
            "word_index": list(self.word_index.items()),
        }

    @classmethod
    def from_dict(cls, d: dict) -> KerasTokenizer:
        """Rebuild (including the fitted state) from :meth:`to_dict` output."""
        _check_type(d, "keras")
        tok = cls(
            num_words=d["num_words"],
            oov_token=d["oov_token"],
            lower=d["lower"],
            filters=d["filters"],
            split=d["split"],
            char_level=d.get("char_level", False),
        )
        tok.document_count = int(d["document_count"])
        tok.word_counts = OrderedDict((str(w), int(c)) for w, c in d["word_counts"])
        tok.word_docs = defaultdict(int, ((str(w), int(c)) for w, c in d["word_docs"]))
        tok.word_index = {str(w): int(i) for w, i in d["word_index"]}
        tok.index_word = {i: w for w, i in tok.word_index.items()}
        tok.index_docs = defaultdict(int)
        for w, c in tok.word_docs.items():
            if w in tok.word_index:
                tok.index_docs[tok.word_index[w]] = c
        return tok

    def __repr__(self) -> str:
        return f"KerasTokenizer(num_words={self.num_words}, oov_token={self.oov_token!r}, words={len(self.word_counts)})"


def pad_sequences(
    sequences: Iterable[Sequence[int]],
    maxlen: int | None = None,
    padding: str = "post",
    truncating: str = "post",
    value: int = 0,
    dtype: Any = np.int64,
) -> np.ndarray:
    """Pad/truncate sequences to one length, as ``keras.utils.pad_sequences`` does.

    Note the defaults: ``"post"`` for both, as lmlab's classic model uses (Keras' own defaults are ``"pre"``).

    Args:
        sequences: Lists of integers.
        maxlen: Output length; None uses the longest sequence.
        padding: ``"pre"`` or ``"post"``: where to add ``value``.
        truncating: ``"pre"`` (drop the start) or ``"post"`` (drop the end) for longer sequences.
        value: Padding value.
        dtype: NumPy dtype of the result.

    Returns:
        Array of shape ``(len(sequences), maxlen)``; an empty sequence becomes a row of ``value``.
    """
    for name, choice in (("padding", padding), ("truncating", truncating)):
        if choice not in ("pre", "post"):
            raise ConfigError(f"{name} must be 'pre' or 'post', got {choice!r}")
    seqs = [list(s) for s in sequences]
    if maxlen is None:
        maxlen = max((len(s) for s in seqs), default=0)
    elif maxlen < 1:
        raise ConfigError(f"maxlen must be >= 1, got {maxlen}")
    out = np.full((len(seqs), maxlen), value, dtype=dtype)  # (N, maxlen)
    for row, s in enumerate(seqs):
        if not s or maxlen == 0:
            continue
        trunc = s[-maxlen:] if truncating == "pre" else s[:maxlen]
        if padding == "post":
            out[row, : len(trunc)] = trunc
        else:
            out[row, maxlen - len(trunc) :] = trunc
    return out


# ---------------------------------------------------------------------------------------------------------
# BPE (Hugging Face tokenizers)
# ---------------------------------------------------------------------------------------------------------


class BPETokenizer(_JSONFileMixin):
    """Byte-pair encoding via Hugging Face ``tokenizers``; specials ``<pad> <unk> <bos> <eos>`` get ids 0..3.

    Build with :meth:`train`; ``pre_tokenizer="byte_level"`` (GPT-2 style: every byte representable, no
    unknowns, spaces round-trip exactly) or ``"whitespace"`` (words and punctuation; words end with ``</w>``
    and decoding joins tokens with single spaces).

    Example:
        >>> tok = BPETokenizer.train(TextCorpus("input.txt.gz"), vocab_size=2000)
        >>> tok.decode(tok.encode("to be or not to be"))
        'to be or not to be'
    """

    PRE_TOKENIZERS = ("byte_level", "whitespace")

    def __init__(self, tokenizer: Any):
        """Wrap a trained ``tokenizers.Tokenizer`` (use :meth:`train` or :meth:`load` to make one)."""
        self.tokenizer = tokenizer

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        pre_tokenizer: str = "byte_level",
        min_frequency: int = 2,
        specials: Sequence[str] = DEFAULT_SPECIALS,
        lowercase: bool = False,
    ) -> BPETokenizer:
        """Train a BPE tokenizer on ``texts`` (any iterable of strings, read once).

        Raises:
            ConfigError: bad ``pre_tokenizer`` or ``vocab_size``.
            DataError: ``texts`` is empty, or ``vocab_size`` is larger than this corpus allows (the message
                gives the largest reachable size).
        """
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

        if pre_tokenizer not in cls.PRE_TOKENIZERS:
            raise ConfigError(f"pre_tokenizer must be one of {', '.join(cls.PRE_TOKENIZERS)}, got {pre_tokenizer!r}")
        specials = list(specials)
        if not isinstance(vocab_size, int) or vocab_size <= len(specials):
            raise ConfigError(f"vocab_size must be an integer > {len(specials)} (the special tokens), got {vocab_size!r}")
        if isinstance(texts, str):
            raise DataError("BPETokenizer.train expects an iterable of texts, got one string; wrap it in a list")
        unk = "<unk>" if "<unk>" in specials else None
        if pre_tokenizer == "byte_level":
            tok = Tokenizer(models.BPE(unk_token=None))
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tok.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(
                vocab_size=vocab_size,
                min_frequency=min_frequency,
                special_tokens=specials,
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                show_progress=False,
            )
        else:
            tok = Tokenizer(models.BPE(unk_token=unk, end_of_word_suffix="</w>"))
            tok.pre_tokenizer = pre_tokenizers.Whitespace()
            tok.decoder = decoders.BPEDecoder(suffix="</w>")
            trainer = trainers.BpeTrainer(
                vocab_size=vocab_size,
                min_frequency=min_frequency,
                special_tokens=specials,
                end_of_word_suffix="</w>",
                show_progress=False,
            )
        if lowercase:
            tok.normalizer = normalizers.Lowercase()
        seen = 0

        def counting(items: Iterable[str]):
            nonlocal seen
            for item in items:
                if item:
                    seen += 1
                yield item

        tok.train_from_iterator(counting(texts), trainer=trainer)
        if seen == 0:
            raise DataError("BPETokenizer.train got no text (the corpus is empty)")
        for i, special in enumerate(specials):
            if tok.token_to_id(special) != i:
                raise DataError(f"special token {special!r} did not get id {i}; is it also a normal word?")
        reached = tok.get_vocab_size()
        if reached < vocab_size:
            raise DataError(
                f"vocab_size={vocab_size} is larger than this corpus allows with min_frequency={min_frequency}: "
                f"training ran out of merges at {reached} tokens; use vocab_size <= {reached} "
                "(or more text / a lower min_frequency)"
            )
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        """Number of token ids, specials included."""
        return self.tokenizer.get_vocab_size()

    def token_to_id(self, token: str) -> int | None:
        """The id of ``token`` (e.g. ``"<eos>"``), or None."""
        return self.tokenizer.token_to_id(token)

    def tokenize(self, text: str) -> list[str]:
        """The BPE pieces of ``text`` as strings."""
        return self.tokenizer.encode(text, add_special_tokens=False).tokens

    def detokenize(self, tokens: Sequence[str]) -> str:
        """Text of BPE pieces (as :meth:`tokenize` returns them)."""
        return self.tokenizer.decoder.decode(list(tokens))

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Token ids of ``text``, optionally framed with ``<bos>`` / ``<eos>``."""
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        if add_bos:
            ids = [self._special_id("<bos>"), *ids]
        if add_eos:
            ids = [*ids, self._special_id("<eos>")]
        return ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of several texts (parallel in Rust)."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        """Text of ``ids``; special tokens are dropped unless ``skip_special=False``."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    def _special_id(self, token: str) -> int:
        i = self.tokenizer.token_to_id(token)
        if i is None:
            raise ConfigError(f"this tokenizer has no {token} token")
        return i

    def to_dict(self) -> dict:
        """``{"type": "bpe", "tokenizer": <the Hugging Face tokenizer JSON>}``."""
        return {"type": "bpe", "tokenizer": json.loads(self.tokenizer.to_str())}

    @classmethod
    def from_dict(cls, d: dict) -> BPETokenizer:
        """Rebuild from :meth:`to_dict` output (or a bare Hugging Face tokenizer JSON object)."""
        from tokenizers import Tokenizer

        if isinstance(d, dict) and "model" in d and "type" not in d:
            d = {"type": "bpe", "tokenizer": d}
        _check_type(d, "bpe")
        try:
            return cls(Tokenizer.from_str(json.dumps(d["tokenizer"])))
        except Exception as exc:  # the Rust side raises plain Exceptions
            raise CheckpointError(f"invalid BPE tokenizer description ({exc})") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BPETokenizer) and self.tokenizer.to_str() == other.tokenizer.to_str()

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"


class HFTokenizer(_JSONFileMixin):
    """A pretrained model's Hugging Face tokenizer (its ``tokenizer.json``, any model: byte-level BPE,
    SentencePiece-style Metaspace BPE or Unigram, WordPiece) plus the special tokens the model was trained with.

    :meth:`encode` gives the ids of running text (no special tokens, as ``tokenizer(text,
    add_special_tokens=False)``); :meth:`encode_prompt` applies the tokenizer's post-processor (e.g. Llama's
    ``<s>``), as ``AutoTokenizer``'s default call does. ``vocab_size`` is the model's embedding size, which may
    exceed the tokenizer's (rows padded for speed).
    """

    def __init__(
        self,
        tokenizer: Any,
        vocab_size: int | None = None,
        bos_token: str | None = None,
        eos_token: str | None = None,
        pad_token: str | None = None,
        stop_ids: Sequence[int] = (),
        special_tokens: dict[str, str] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self._vocab_size = int(vocab_size) if vocab_size else None
        self.bos_token, self.eos_token, self.pad_token = bos_token, eos_token, pad_token
        self.stop_ids = [int(i) for i in stop_ids]
        #: other roles a model gives tokens, e.g. a BERT's {"cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]", ...}
        self.special_tokens = dict(special_tokens or {})

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs: Any) -> HFTokenizer:
        """Read a Hugging Face ``tokenizer.json`` (CheckpointError naming it when it cannot be parsed)."""
        from tokenizers import Tokenizer

        try:
            return cls(Tokenizer.from_file(str(path)), **kwargs)
        except Exception as exc:  # the Rust side raises plain Exceptions
            raise CheckpointError(f"{path}: not a Hugging Face tokenizer.json ({str(exc).splitlines()[0]})") from None

    @property
    def vocab_size(self) -> int:
        """Number of ids (the model's embedding rows; at least the tokenizer's own size)."""
        return self._vocab_size or self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def max_id(self) -> int:
        """The largest id the tokenizer can produce."""
        return max(self.tokenizer.get_vocab(with_added_tokens=True).values(), default=-1)

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token) if token else None

    @property
    def bos_id(self) -> int | None:
        return self.token_to_id(self.bos_token) if self.bos_token else None

    @property
    def eos_id(self) -> int | None:
        return self.token_to_id(self.eos_token) if self.eos_token else None

    @property
    def pad_id(self) -> int | None:
        return self.token_to_id(self.pad_token) if self.pad_token else None

    def tokenize(self, text: str) -> list[str]:
        return self.tokenizer.encode(text, add_special_tokens=False).tokens

    def detokenize(self, tokens: Sequence[str]) -> str:
        ids = [self.tokenizer.token_to_id(t) for t in tokens]
        return self.decode([i for i in ids if i is not None])

    def encode(self, text: str) -> list[int]:
        """Ids of running text, no special tokens added."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_prompt(self, text: str) -> list[int]:
        """Ids with the tokenizer's own special tokens (its post-processor), as ``AutoTokenizer(text)``."""
        return self.tokenizer.encode(text, add_special_tokens=True).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    def to_dict(self) -> dict:
        """``{"type": "hf", "tokenizer": <tokenizer.json>, "vocab_size", "bos_token", "eos_token", "pad_token",
        "stop_ids"}`` (+ ``"special_tokens"`` when it has other roles)."""
        out = {
            "type": "hf", "tokenizer": json.loads(self.tokenizer.to_str()), "vocab_size": self._vocab_size,
            "bos_token": self.bos_token, "eos_token": self.eos_token, "pad_token": self.pad_token,
            "stop_ids": list(self.stop_ids),
        }
        if self.special_tokens:
            out["special_tokens"] = dict(self.special_tokens)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> HFTokenizer:
        from tokenizers import Tokenizer

        _check_type(d, "hf")
        try:
            tok = Tokenizer.from_str(json.dumps(d["tokenizer"]))
        except Exception as exc:  # the Rust side raises plain Exceptions
            raise CheckpointError(f"invalid Hugging Face tokenizer description ({exc})") from None
        return cls(tok, d.get("vocab_size"), d.get("bos_token"), d.get("eos_token"), d.get("pad_token"),
                   d.get("stop_ids", ()), d.get("special_tokens"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HFTokenizer) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"HFTokenizer(vocab_size={self.vocab_size})"


class IdTokenizer(_JSONFileMixin):
    """Text that *is* token ids (``"12 4071 9"``): the SeqGAN oracle's "language", which has no words.

    Args:
        vocab_size: Ids must lie in ``[0, vocab_size)``.
    """

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = int(vocab_size)

    def tokenize(self, text: str) -> list[str]:
        """The whitespace-separated ids, as strings."""
        return text.split()

    def detokenize(self, tokens: Sequence[str]) -> str:
        return " ".join(tokens)

    def encode(self, text: str) -> list[int]:
        """The ids written in ``text`` (DataError for a non-number or an id out of range)."""
        try:
            ids = [int(w) for w in text.split()]
        except ValueError:
            raise DataError("an oracle run's prompt is a list of token ids, e.g. '12 4071 9'") from None
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise DataError(f"prompt ids {bad[:5]} are outside [0, {self.vocab_size})")
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(str(int(i)) for i in ids)

    def to_dict(self) -> dict:
        return {"type": "ids", "vocab_size": self.vocab_size}

    @classmethod
    def from_dict(cls, d: dict) -> IdTokenizer:
        _check_type(d, "ids")
        return cls(d["vocab_size"])

    def __repr__(self) -> str:
        return f"IdTokenizer(vocab_size={self.vocab_size})"


_TOKENIZER_TYPES: dict[str, type] = {
    "whitespace": WhitespaceTokenizer,
    "word": WordTokenizer,
    "char": CharTokenizer,
    "keras": KerasTokenizer,
    "bpe": BPETokenizer,
    "vector_words": VectorWordTokenizer,
    "ids": IdTokenizer,
    "hf": HFTokenizer,
}


def tokenizer_from_dict(d: dict):
    """Rebuild any lmlab tokenizer from its ``to_dict`` output (dispatching on ``d["type"]``).

    Raises:
        CheckpointError: unknown or missing ``type``, or missing keys.
    """
    kind = d.get("type") if isinstance(d, dict) else None
    if kind not in _TOKENIZER_TYPES:
        raise CheckpointError(
            f"unknown tokenizer type {kind!r}; expected one of {', '.join(_TOKENIZER_TYPES)}"
        )
    try:
        return _TOKENIZER_TYPES[kind].from_dict(d)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"the {kind!r} tokenizer description is incomplete or malformed ({exc!r})") from None


def load_tokenizer(path: str | os.PathLike):
    """Load any tokenizer saved with ``save(path)``.

    Raises:
        CheckpointError: the file is missing, truncated/not JSON, or not a tokenizer description.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"{p}: tokenizer file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{p}: cannot read the tokenizer file ({exc})") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno}); the file is truncated or corrupt") from None
    try:
        return tokenizer_from_dict(d)
    except CheckpointError as exc:
        raise CheckpointError(f"{p}: {exc}") from None
