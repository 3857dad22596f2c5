"""Restartable readers for text corpora and labelled text.

Every corpus here is a *restartable* iterable: it re-opens its file(s) each time ``iter()`` is called, so a
trainer can loop over it once per epoch. Passing a one-shot generator where a corpus is expected is refused
with a :class:`~lmlab.errors.DataError` that says how to fix it (see :func:`require_restartable`).

Files ending in ``.gz``, ``.bz2`` or ``.xz`` are decompressed transparently. Decoding is strict: bytes that
are not valid in the chosen encoding raise a ``DataError`` naming ``file:line`` and the encoding to pass
instead (the original rt-polarity files, for instance, are Windows-1252: ``encoding="cp1252"``).

Labelled formats (:func:`read_labelled`):

* ``csv`` / ``tsv`` - a header row is required; text and label columns are chosen by name, several text
  columns are joined with a space. TSV is read without quote processing (as GLUE's files need).
* ``jsonl`` - one JSON object per line (``.jsonl``, ``.jsonl.gz``, ...), text and label fields by name. The
  labels of a file are all strings, all numbers (``1`` and ``1.0`` are one label, ``"1"``) or all booleans
  (``"true"``/``"false"``); a file that mixes them (``1``, ``"pos"``, ``false``) is refused, naming the lines.

In every format, two labels that spell the same number differently (``"1"`` and ``"1.0"``) are refused too:
they would silently become two classes.
* ``fasttext`` - fastText's supervised format, ``__label__pos the text``, one example per line.
* ``lines`` - one example per line, one file per label: ``rt-polarity.pos`` / ``rt-polarity.neg``. The path is
  the common prefix (``.../rt-polarity``), a directory holding such files, or a glob whose ``*`` is the label
  (``.../rt-polarity.*.utf8``).
* ``aclimdb`` - the aclImdb layout ``<split>/<label>/*.txt``; the path is the split directory. A ``unsup``
  folder (unlabelled reviews) is skipped.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import difflib
import gzip
import io
import itertools
import json
import lzma
import os
import re
import sys
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from lmlab.errors import DataError

__all__ = [
    "AclImdbCorpus",
    "CSVCorpus",
    "Example",
    "FastTextCorpus",
    "JSONLCorpus",
    "LabelledCorpus",
    "LinesPerLabelCorpus",
    "TextCorpus",
    "TokenizedCorpus",
    "check_labels",
    "detect_bom",
    "detect_format",
    "looks_like_gb18030",
    "load_examples",
    "open_text",
    "read_labelled",
    "require_restartable",
]

COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz")
FORMATS = ("auto", "csv", "tsv", "jsonl", "fasttext", "lines", "aclimdb")
FASTTEXT_LABEL_PREFIX = "__label__"
TEXT_NAME_GUESSES = ("text", "sentence", "review", "content", "document", "comment", "tweet")
LABEL_NAME_GUESSES = ("label", "labels", "sentiment", "class", "category", "target", "y")
_CSV_FIELD_LIMIT = 2**31 - 1
# Encodings in which a newline byte can occur inside a character: we cannot decode those line by line.
_WIDE_ENCODINGS = ("utf-16", "utf-32", "utf_16", "utf_32", "utf16", "utf32")


def _nearest(name: str, choices: Iterable[str]) -> str:
    """A ``"; did you mean 'x'?"`` suffix for the closest choice, or an empty string."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    if not match:
        lowered = {c.lower(): c for c in choices}
        if name.lower() in lowered:
            match = [lowered[name.lower()]]
    return f"; did you mean {match[0]!r}?" if match else ""


def _strip_compression(name: str) -> str:
    for suffix in COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _open_binary(path: Path) -> IO[bytes]:
    name = path.name
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".bz2"):
        return bz2.open(path, "rb")
    if name.endswith(".xz"):
        return lzma.open(path, "rb")
    return open(path, "rb")


#: byte-order marks and the encoding to pass for each (the UTF-32 ones first: FF FE 00 00 starts with FF FE)
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
#: what each compression suffix is called, and the command that tests such a file
_COMPRESSED_KIND = {".gz": ("gzip", "gzip -t"), ".bz2": ("bzip2", "bzip2 -t"), ".xz": ("xz", "xz -t")}
#: what a damaged compressed stream raises while it is read
_COMPRESSION_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError)


def detect_bom(data: bytes) -> str | None:
    """The encoding whose byte-order mark starts ``data`` (``"utf-8"``, ``"utf-16"``, ``"utf-32"``), or None."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name
    return None


def _compression_problem(path: Path) -> str | None:
    """Why the compressed file ``path`` cannot be read to its end (CRC, truncation, bad data), or None."""
    try:
        with _open_binary(path) as f:
            while f.read(1 << 20):
                pass
    except _COMPRESSION_ERRORS as exc:
        return str(exc) or type(exc).__name__
    return None


def _corrupt_error(path: Path, reason: str, lineno: int | None = None) -> DataError:
    kind, check = _COMPRESSED_KIND.get(path.suffix, ("compressed", "a decompressor"))
    at = f" (noticed at line {lineno})" if lineno else ""
    err = DataError(
        f"{path}: the {kind} file is corrupt or truncated ({reason}){at}; re-create or re-download it "
        f"(`{check} {path}` checks it)"
    )
    err.corrupt_file = True  # type: ignore[attr-defined]
    return err


_HAN_OR_CJK_PUNCT = re.compile("[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff01-\uff65]")


def looks_like_gb18030(raw: bytes) -> bool:
    """True if ``raw`` (bytes that are not UTF-8) reads as Chinese in GBK/GB18030: it decodes, and most of its
    non-ASCII characters are Han or CJK punctuation made of two high bytes (Windows-1252 accents, followed by an
    ASCII letter, are not)."""
    try:
        text = raw.decode("gb18030")
    except UnicodeDecodeError:
        return False
    wide = [c for c in text if ord(c) > 127]
    if not wide:
        return False
    han = sum(1 for c in wide if _HAN_OR_CJK_PUNCT.match(c) and all(b >= 0x80 for b in c.encode("gb18030")))
    return han >= 0.9 * len(wide)


def _suggest_encoding(raw: bytes) -> str:
    """The encoding to suggest for ``raw`` bytes that failed to decode."""
    if looks_like_gb18030(raw):
        return "gb18030"
    for candidate in ("utf-8", "cp1252"):
        try:
            raw.decode(candidate)
        except UnicodeDecodeError:
            continue
        return candidate
    return "latin-1"


class open_text:  # noqa: N801 - used like the builtin open()
    """Open a (possibly compressed) text file and iterate over its lines.

    Use it as a context manager or iterate over it directly; both close the file at the end::

        with open_text("reviews.txt.xz", encoding="cp1252") as f:
            for line in f:          # line without its trailing newline
                print(f.lineno, line)

    Args:
        path: The file (``"-"`` reads standard input). ``.gz``, ``.bz2`` and ``.xz`` are decompressed
            transparently.
        encoding: Text encoding (strict). A UTF-8 byte-order mark at the start is dropped.
        keep_newlines: Keep the line terminator on each line (the CSV reader needs it).

    Raises:
        DataError: the file is missing, is a directory, is not valid compressed data, or holds bytes
            that are not valid in ``encoding`` (the message names ``file:line`` and an encoding to try).
    """

    def __init__(self, path: str | os.PathLike, encoding: str = "utf-8", keep_newlines: bool = False):
        self.path = Path(path)
        self.encoding = encoding
        self.keep_newlines = keep_newlines
        #: 1-based number of the line most recently yielded (0 before the first).
        self.lineno = 0
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise DataError(
                f"unknown encoding {encoding!r} for {self.path}; use e.g. 'utf-8', 'cp1252' or 'latin-1'"
            ) from None
        self._stdin = str(path) == "-"
        self._file: IO[bytes] | None = None
        self._lines: Iterator[str] | None = None
        if self._stdin:
            self.path = Path("<stdin>")
        elif not self.path.exists():
            raise DataError(f"{self.path}: no such file; check the path")
        elif self.path.is_dir():
            raise DataError(f"{self.path} is a directory, expected a text file")

    # -- context manager / iterator protocol -------------------------------------------------------
    def __enter__(self) -> open_text:
        self._ensure_open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()
        if isinstance(exc, DataError):
            # garbage out of a damaged compressed file (bad JSON, bad UTF-8 ...): say the file is damaged
            corrupt = self._corruption(exc)
            if corrupt is not None:
                raise corrupt from None

    def _corruption(self, exc: BaseException) -> DataError | None:
        """For an error while reading a compressed file: a DataError saying the file is damaged, if it is."""
        if self._stdin or self.path.suffix not in _COMPRESSED_KIND or getattr(exc, "corrupt_file", False):
            return None
        reason = _compression_problem(self.path)
        return _corrupt_error(self.path, reason, self.lineno) if reason is not None else None

    def __iter__(self) -> Iterator[str]:
        self._ensure_open()
        return self

    def __next__(self) -> str:
        self._ensure_open()
        assert self._lines is not None
        try:
            return next(self._lines)
        except BaseException:  # end of file or an error: release the file at once
            self.close()
            raise

    def close(self) -> None:
        """Close the underlying file (idempotent)."""
        file = getattr(self, "_file", None)
        if file is not None:
            self._file = None
            if not self._stdin:
                file.close()

    def __del__(self) -> None:
        # A partly read file (e.g. ``itertools.islice(open_text(p), 10)``) is closed when dropped.
        self.close()

    def _ensure_open(self) -> None:
        if self._lines is None:
            if self._stdin:
                self._file = sys.stdin.buffer
                self._lines = self._generate()
                return
            try:
                self._file = _open_binary(self.path)
            except OSError as exc:
                raise DataError(f"{self.path}: cannot open ({exc.strerror or exc})") from None
            self._lines = self._generate()

    def _generate(self) -> Iterator[str]:
        assert self._file is not None
        where = str(self.path)
        enc = self.encoding.lower()
        if enc.startswith(_WIDE_ENCODINGS):
            yield from self._generate_wide()
            return
        codec = codecs.lookup(self.encoding).name
        strip_bom = codec == "utf-8"
        try:
            for raw in self._file:
                self.lineno += 1
                if self.lineno == 1:
                    bom = detect_bom(raw)
                    if bom is not None and not (bom == "utf-8" and codec in ("utf-8", "utf-8-sig")):
                        error = DataError(
                            f"{where}:1: this file starts with a {bom.upper()} byte-order mark; pass --encoding "
                            f"{bom} (encoding={bom!r})"
                        )
                        raise self._corruption(error) or error
                try:
                    line = raw.decode(self.encoding)
                except UnicodeDecodeError as exc:
                    bad = raw[exc.start : exc.start + 1]
                    suggestion = _suggest_encoding(raw)
                    looks = " (the line reads as Chinese in GBK/GB18030)" if suggestion == "gb18030" else ""
                    error = DataError(
                        f"{where}:{self.lineno}: byte 0x{bad.hex()} (byte {exc.start + 1} of the line) is not valid "
                        f"{self.encoding}{looks}; pass the file's encoding, e.g. --encoding {suggestion} "
                        f"(encoding={suggestion!r})"
                    )
                    raise self._corruption(error) or error from None
                if strip_bom and self.lineno == 1 and line.startswith("\ufeff"):
                    line = line[1:]
                if not self.keep_newlines:
                    if line.endswith("\n"):
                        line = line[:-1]
                        if line.endswith("\r"):
                            line = line[:-1]
                yield line
        except _COMPRESSION_ERRORS as exc:
            raise _corrupt_error(self.path, str(exc) or type(exc).__name__, self.lineno + 1) from None

    def _generate_wide(self) -> Iterator[str]:
        assert self._file is not None
        raw = io.BufferedReader(_NoClose(self._file)) if self._stdin else self._file
        stream = io.TextIOWrapper(raw, encoding=self.encoding, newline=None)  # type: ignore[arg-type]
        self._file = stream  # type: ignore[assignment]  # closing the wrapper closes the raw file
        try:
            for line in stream:
                self.lineno += 1
                if not self.keep_newlines and line.endswith("\n"):
                    line = line[:-1]
                yield line
        except UnicodeError as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            error = DataError(
                f"{self.path}:{self.lineno + 1}: bytes are not valid {self.encoding} ({reason}); "
                "pass the file's encoding, e.g. --encoding utf-8"
            )
            raise self._corruption(error) or error from None
        except _COMPRESSION_ERRORS as exc:
            raise _corrupt_error(self.path, str(exc) or type(exc).__name__, self.lineno + 1) from None


class _NoClose(io.RawIOBase):
    """A read-only view of a binary stream whose ``close`` leaves the stream open (for stdin)."""

    def __init__(self, raw: IO[bytes]):
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self._raw.read(len(b))
        b[: len(data)] = data
        return len(data)


def require_restartable(obj: object, what: str = "corpus") -> None:
    """Raise ``DataError`` if ``obj`` is a one-shot iterator (e.g. a generator) instead of a re-iterable.

    Training loops over a corpus once per epoch; a generator would be exhausted after the first.
    """
    if isinstance(obj, (str, bytes)):
        return
    try:
        it = iter(obj)  # type: ignore[call-overload]
    except TypeError:
        raise DataError(f"the {what} must be an iterable, got {type(obj).__name__}") from None
    if it is obj:
        raise DataError(
            f"the {what} is a one-shot iterator ({type(obj).__name__}), but it is read once per epoch; pass a "
            "restartable corpus instead (a list, lmlab.data.TextCorpus(path) or read_labelled(path))"
        )


# ---------------------------------------------------------------------------------------------------------
# Plain text corpora
# ---------------------------------------------------------------------------------------------------------


class TextCorpus:
    """A restartable iterable of text lines from one or more files (word2vec / language-model corpora).

    Reads ``.txt`` (or any plain text) files, compressed with ``.gz``/``.bz2``/``.xz`` or not, and JSON Lines
    files (``.jsonl``, ``.jsonl.gz``, ...) whose records hold the text in ``text_field``. For JSONL, ``unit``
    chooses what one item is: ``"line"`` yields every line of every record's text (so a book of many
    paragraphs becomes many lines), ``"record"`` yields each record's whole text.

    Args:
        path: A file, a directory (all its regular files, sorted, hidden files skipped) or a list of files.
        encoding: Text encoding of the files.
        text_field: The JSONL field holding the text.
        unit: ``"line"`` or ``"record"`` (JSONL only; for plain text every item is a line).
        skip_blank: Skip lines that are empty or whitespace only.
        max_items: Stop after this many items per pass (handy for quick runs and tests).

    Example:
        >>> corpus = TextCorpus("../shared/data/tinyshakespeare/input.txt.gz")
        >>> for line in corpus: ...   # can be iterated again and again
    """

    def __init__(
        self,
        path: str | os.PathLike | Sequence[str | os.PathLike],
        encoding: str = "utf-8",
        text_field: str = "text",
        unit: str = "line",
        skip_blank: bool = False,
        max_items: int | None = None,
    ):
        if unit not in ("line", "record"):
            raise DataError(f"unit must be 'line' or 'record', got {unit!r}")
        if isinstance(path, (str, os.PathLike)):
            p = Path(path)
            if p.is_dir():
                files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
                if not files:
                    raise DataError(f"{p}: the directory holds no files")
            else:
                files = [p]
        else:
            files = [Path(f) for f in path]
            if not files:
                raise DataError("TextCorpus got an empty list of files")
        for f in files:
            if not f.exists():
                raise DataError(f"{f}: no such file; check the path")
            if f.is_dir():
                raise DataError(f"{f} is a directory; pass files or a single directory")
        self.files = files
        self.encoding = encoding
        self.text_field = text_field
        self.unit = unit
        self.skip_blank = skip_blank
        self.max_items = max_items

    @staticmethod
    def _is_jsonl(path: Path) -> bool:
        return _strip_compression(path.name).endswith((".jsonl", ".ndjson", ".json"))

    def __iter__(self) -> Iterator[str]:
        count = 0
        for f in self.files:
            for item in self._iter_file(f):
                if self.skip_blank and not item.strip():
                    continue
                if self.max_items is not None and count >= self.max_items:
                    return
                count += 1
                yield item

    def _iter_file(self, path: Path) -> Iterator[str]:
        if not self._is_jsonl(path):
            with open_text(path, self.encoding) as f:
                yield from f
            return
        with open_text(path, self.encoding) as f:
            for line in f:
                if not line.strip():
                    continue
                record = _parse_json_line(line, f"{path}:{f.lineno}")
                if self.text_field not in record:
                    raise DataError(
                        f"{path}:{f.lineno}: record has no field {self.text_field!r}"
                        f"{_nearest(self.text_field, record)}; available: {', '.join(map(str, record))}"
                    )
                text = record[self.text_field]
                if not isinstance(text, str):
                    raise DataError(
                        f"{path}:{f.lineno}: field {self.text_field!r} is a {type(text).__name__}, expected a string"
                    )
                if self.unit == "record":
                    yield text
                else:
                    yield from text.splitlines()

    def __repr__(self) -> str:
        files = ", ".join(str(f) for f in self.files[:3]) + (", ..." if len(self.files) > 3 else "")
        return f"TextCorpus([{files}], encoding={self.encoding!r}, unit={self.unit!r})"


class TokenizedCorpus:
    """A restartable iterable of token lists: ``tokenize(item)`` for every item of a restartable corpus.

    Args:
        corpus: A restartable iterable of strings (a :class:`TextCorpus`, a list, ...). A one-shot generator
            is refused (see :func:`require_restartable`).
        tokenizer: An object with a ``tokenize(text) -> list[str]`` method, or such a function.
        skip_empty: Leave out items that tokenize to nothing (blank lines).

    Example:
        >>> sentences = TokenizedCorpus(TextCorpus("books.jsonl.gz"), WordTokenizer())
        >>> vocab = build_vocab(sentences, min_freq=5)   # pass 1
        >>> for tokens in sentences: ...                 # pass 2, 3, ...
    """

    def __init__(self, corpus: Iterable[str], tokenizer: Any, skip_empty: bool = True):
        require_restartable(corpus, "corpus given to TokenizedCorpus")
        self.corpus = corpus
        self.tokenize = tokenizer.tokenize if hasattr(tokenizer, "tokenize") else tokenizer
        if not callable(self.tokenize):
            raise DataError(f"tokenizer must have a tokenize() method or be a function, got {type(tokenizer).__name__}")
        self.skip_empty = skip_empty

    def __iter__(self) -> Iterator[list[str]]:
        tokenize = self.tokenize
        for item in self.corpus:
            tokens = tokenize(item)
            if tokens or not self.skip_empty:
                yield tokens

    def __repr__(self) -> str:
        return f"TokenizedCorpus({self.corpus!r})"


def _parse_json_line(line: str, where: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        hint = "expected one object per line"
        if where.endswith(":1") and line.lstrip().startswith("["):
            hint = "this looks like a JSON array; lmlab reads JSON Lines (one object per line)"
        raise DataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); {hint}") from None
    if isinstance(record, list) and where.endswith(":1"):
        raise DataError(f"{where}: the file is a JSON array; lmlab reads JSON Lines (one object per line)")
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object per line, got {type(record).__name__}")
    return record


# ---------------------------------------------------------------------------------------------------------
# Labelled corpora
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """One labelled example.

    Attributes:
        text: The raw text (not tokenized).
        label: The label as a string (integer labels in the data are converted with ``str``).
        where: ``"file:line"`` (or the file, for one-example-per-file layouts), for error messages.
    """

    text: str
    label: str
    where: str


def _json_kind(value: object) -> str | None:
    """``"string"``, ``"number"`` or ``"boolean"``: the JSON type of a label (None for others, refused later)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _number_key(label: str) -> float | None:
    """The number a label spells (``"1"``, ``"1.0"`` and ``"01"`` spell 1), or None when it is not a number."""
    try:
        number = float(label)
    except ValueError:
        return None
    return number if number == number and abs(number) != float("inf") else None


def _label_to_str(value: object, where: str, field: str) -> str:
    if value is None:
        raise DataError(f"{where}: the label ({field!r}) is missing/null; every example needs a label")
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, (dict, list)):
        raise DataError(f"{where}: the label ({field!r}) is a {type(value).__name__}, expected a string or number")
    label = str(value).strip()
    if not label:
        raise DataError(f"{where}: the label ({field!r}) is empty")
    return label


def _check_text(text: str, where: str) -> str:
    if not text.strip():
        raise DataError(f"{where}: the text is empty; remove the row or fill it in")
    return text


class LabelledCorpus:
    """Base class: a restartable iterable of :class:`Example` read from ``path``.

    Subclasses implement ``__iter__``; iterating again re-reads the file(s). Use :func:`read_labelled` to get
    the right subclass for a path, and :func:`load_examples` to read everything into a validated list.
    """

    format: str = ""

    def __init__(self, path: str | os.PathLike, encoding: str = "utf-8"):
        self.path = Path(path)
        self.encoding = encoding

    def __iter__(self) -> Iterator[Example]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, encoding={self.encoding!r})"


def _as_name_list(names: str | Sequence[str] | None) -> list[str] | None:
    if names is None:
        return None
    if isinstance(names, str):
        out = [n.strip() for n in names.split(",") if n.strip()]
    else:
        out = [str(n) for n in names]
    if not out:
        raise DataError("text_columns is empty; name at least one column")
    return out


def _resolve_names(
    requested: list[str] | None,
    default: str,
    guesses: Sequence[str],
    available: Sequence[str],
    where: str,
    kind: str,
    option: str,
) -> list[str]:
    """Pick column/field names: the requested ones (all must exist), else the default, else a common name.

    The common names (``guesses``) are tried only when ``default`` is the stock one (``guesses[0]``).
    """
    avail = list(available)
    if guesses and default != guesses[0]:
        guesses = ()  # guess only for the stock default ("text"/"label"), never instead of a name the user chose
    if requested is not None:
        for name in requested:
            if name not in avail:
                raise DataError(
                    f"{where}: no {kind} {name!r}{_nearest(name, avail)} (available: {', '.join(avail)}); "
                    f"choose with {option}"
                )
        return requested
    if default in avail:
        return [default]
    for guess in guesses:
        if guess in avail:
            return [guess]
    lowered = {a.lower(): a for a in avail}
    for guess in (default, *guesses):
        if guess in lowered:
            return [lowered[guess]]
    raise DataError(
        f"{where}: no {kind} {default!r}{_nearest(default, avail)} (available: {', '.join(avail)}); choose with {option}"
    )


class CSVCorpus(LabelledCorpus):
    """CSV or TSV with a header row; text from one or more named columns (joined with a space), label from one.

    TSV files are read without quote processing (a ``"`` is an ordinary character, as in GLUE's TSVs);
    CSV files use standard quoting (fields may contain the delimiter, quotes and newlines). For a
    tab-separated file *with* CSV quoting use ``format="csv", delimiter="\\t"``.
    """

    format = "csv"

    def __init__(
        self,
        path: str | os.PathLike,
        text_columns: str | Sequence[str] | None = None,
        label_column: str | None = None,
        encoding: str = "utf-8",
        delimiter: str | None = None,
        tsv: bool = False,
        text_field: str = "text",
        label_field: str = "label",
    ):
        super().__init__(path, encoding)
        self.tsv = tsv
        self.format = "tsv" if tsv else "csv"
        self.delimiter = delimiter if delimiter is not None else ("\t" if tsv else ",")
        if len(self.delimiter) != 1:
            raise DataError(f"delimiter must be one character, got {self.delimiter!r}")
        header = self._read_header()
        self.header = header
        where = f"{self.path}:1"
        self.text_columns = _resolve_names(
            _as_name_list(text_columns), text_field, TEXT_NAME_GUESSES, header, where, "text column", "--text-column"
        )
        self.label_column = _resolve_names(
            [label_column] if label_column is not None else None,
            label_field,
            LABEL_NAME_GUESSES,
            header,
            where,
            "label column",
            "--label-column",
        )[0]
        if self.label_column in self.text_columns:
            raise DataError(f"{where}: column {self.label_column!r} is used both as text and as label")

    def _reader(self, f: open_text):
        if csv.field_size_limit() < _CSV_FIELD_LIMIT:
            csv.field_size_limit(_CSV_FIELD_LIMIT)  # the default (128 KiB) is too small for whole documents
        kwargs = {"delimiter": self.delimiter}
        if self.tsv:
            kwargs["quoting"] = csv.QUOTE_NONE
        return csv.reader(f, **kwargs)

    def _read_header(self) -> list[str]:
        with open_text(self.path, self.encoding, keep_newlines=True) as f:
            reader = self._reader(f)
            try:
                for row in reader:
                    if any(cell.strip() for cell in row):
                        header = [cell.strip() for cell in row]
                        break
                else:
                    raise DataError(f"{self.path}: the file is empty; expected a header row and examples")
            except csv.Error as exc:
                raise DataError(f"{self.path}:{f.lineno}: malformed {self.format.upper()} ({exc})") from None
        if len(header) < 2:
            sep = "TAB" if self.delimiter == "\t" else repr(self.delimiter)
            raise DataError(
                f"{self.path}:1: the header has only one column ({header[0]!r}) when split on {sep}; "
                "a header naming text and label columns is required (wrong --delimiter or --format?)"
            )
        dupes = [name for name, n in Counter(header).items() if n > 1]
        if dupes:
            raise DataError(f"{self.path}:1: duplicate column name(s) in the header: {', '.join(dupes)}")
        return header

    def __iter__(self) -> Iterator[Example]:
        with open_text(self.path, self.encoding, keep_newlines=True) as f:
            reader = self._reader(f)
            index = {name: i for i, name in enumerate(self.header)}
            text_idx = [index[c] for c in self.text_columns]
            label_idx = index[self.label_column]
            seen_header = False
            start = 1
            try:
                for row in reader:
                    line = start
                    start = f.lineno + 1
                    if not any(cell.strip() for cell in row):
                        continue  # blank line
                    if not seen_header:
                        seen_header = True
                        continue
                    where = f"{self.path}:{line}"
                    if len(row) != len(self.header):
                        raise DataError(
                            f"{where}: {len(row)} fields, but the header has {len(self.header)}; "
                            "check quoting and the delimiter"
                        )
                    text = " ".join(row[i] for i in text_idx)
                    _check_text(text, where)
                    label = _label_to_str(row[label_idx], where, self.label_column)
                    yield Example(text, label, where)
            except csv.Error as exc:
                raise DataError(f"{self.path}:{f.lineno}: malformed {self.format.upper()} ({exc})") from None


class JSONLCorpus(LabelledCorpus):
    """JSON Lines (optionally compressed): one object per line with text and label fields.

    ``text_fields`` may name several fields; their values are joined with a space.
    """

    format = "jsonl"

    def __init__(
        self,
        path: str | os.PathLike,
        text_field: str | Sequence[str] = "text",
        label_field: str = "label",
        encoding: str = "utf-8",
        explicit_text: bool = False,
        explicit_label: bool = False,
    ):
        super().__init__(path, encoding)
        first, lineno = self._first_record()
        keys = list(first)
        where = f"{self.path}:{lineno}"
        requested_text = _as_name_list(text_field)
        assert requested_text is not None
        if explicit_text or len(requested_text) > 1:
            self.text_fields = _resolve_names(
                requested_text, "", (), keys, where, "text field", "--text-column"
            )
        else:
            self.text_fields = _resolve_names(
                None, requested_text[0], TEXT_NAME_GUESSES, keys, where, "text field", "--text-column"
            )
        self.label_field = _resolve_names(
            [label_field] if explicit_label else None,
            label_field,
            LABEL_NAME_GUESSES,
            keys,
            where,
            "label field",
            "--label-column",
        )[0]

    def _first_record(self) -> tuple[dict, int]:
        with open_text(self.path, self.encoding) as f:
            for line in f:
                if line.strip():
                    return _parse_json_line(line, f"{self.path}:{f.lineno}"), f.lineno
        raise DataError(f"{self.path}: the file is empty; expected one JSON object per line")

    def __iter__(self) -> Iterator[Example]:
        first: tuple[str | None, object, str] | None = None  # the first label's JSON kind, value and place
        with open_text(self.path, self.encoding) as f:
            for line in f:
                if not line.strip():
                    continue
                where = f"{self.path}:{f.lineno}"
                record = _parse_json_line(line, where)
                parts = []
                for name in (*self.text_fields, self.label_field):
                    if name not in record:
                        raise DataError(
                            f"{where}: record has no field {name!r}{_nearest(name, record)}; "
                            f"available: {', '.join(map(str, record))}"
                        )
                for name in self.text_fields:
                    value = record[name]
                    if not isinstance(value, str):
                        raise DataError(f"{where}: field {name!r} is a {type(value).__name__}, expected a string")
                    parts.append(value)
                text = _check_text(" ".join(parts), where)
                value = record[self.label_field]
                kind = _json_kind(value)
                if first is None:
                    first = (kind, value, where)
                elif kind != first[0] and kind is not None and first[0] is not None:
                    raise DataError(
                        f"{where}: the label {json.dumps(value, ensure_ascii=False)} is a {kind}, but at {first[2]} "
                        f"it is a {first[0]} ({json.dumps(first[1], ensure_ascii=False)}); write every "
                        f"{self.label_field!r} of the file the same way (e.g. all strings: \"1\", \"pos\")"
                    )
                yield Example(text, _label_to_str(value, where, self.label_field), where)


def _find_label_files(path: Path) -> tuple[list[tuple[str, Path]], str]:
    """Find ``(label, file)`` pairs for the one-example-per-line layout; also return a description."""
    if "*" in path.name:
        pattern = path.name
        if pattern.count("*") != 1:
            raise DataError(f"{path}: use exactly one '*' (it stands for the label), e.g. data/reviews.*.txt")
        head, tail = pattern.split("*")
        regex = re.compile(re.escape(head) + r"(.+?)" + re.escape(tail) + r"(\.gz|\.bz2|\.xz)?$")
        parent = path.parent
        pairs = []
        if parent.is_dir():
            for f in sorted(parent.iterdir()):
                m = regex.fullmatch(f.name)
                if m and f.is_file():
                    pairs.append((m.group(1), f))
        return pairs, str(path)
    if path.is_dir():
        groups: dict[str, list[tuple[str, Path]]] = {}
        for f in sorted(path.iterdir()):
            if not f.is_file() or f.name.startswith("."):
                continue
            name = _strip_compression(f.name)
            if name.count(".") != 1 or name.startswith("."):
                continue
            prefix, label = name.split(".")
            groups.setdefault(prefix, []).append((label, f))
        groups = {k: v for k, v in groups.items() if len(v) >= 2}
        if len(groups) > 1:
            choices = ", ".join(str(path / k) for k in sorted(groups))
            raise DataError(f"{path}: several sets of per-label files ({choices}); pass one of these prefixes")
        if not groups:
            return [], f"{path}/<prefix>.<label>"
        (prefix, pairs), = groups.items()
        return pairs, str(path / prefix)
    parent, prefix = path.parent, path.name
    pairs = []
    if parent.is_dir():
        for f in sorted(parent.iterdir()):
            if not f.is_file() or not f.name.startswith(prefix + "."):
                continue
            label = _strip_compression(f.name[len(prefix) + 1 :])
            if label and "." not in label:
                pairs.append((label, f))
    return pairs, str(path)


class LinesPerLabelCorpus(LabelledCorpus):
    """One example per line, one file per label, the label being the file's suffix.

    ``path`` is the common prefix (``data/rt-polarity`` for ``rt-polarity.pos`` and ``rt-polarity.neg``), a
    directory holding exactly one such set of files, or a glob whose single ``*`` is the label
    (``data/rt-polarity.*.utf8``). Files may be compressed (``rt-polarity.pos.gz``). Examples come file by
    file, labels in sorted order.
    """

    format = "lines"

    def __init__(self, path: str | os.PathLike, encoding: str = "utf-8"):
        super().__init__(path, encoding)
        pairs, described = _find_label_files(self.path)
        if not pairs:
            raise DataError(
                f"{self.path}: no per-label files found (expected files like {described}.pos and {described}.neg); "
                "pass the common prefix, the directory, or a glob such as 'data/name.*.txt'"
            )
        labels = [label for label, _ in pairs]
        dupes = sorted(label for label, n in Counter(labels).items() if n > 1)
        if dupes:
            raise DataError(f"{described}: several files for label(s) {', '.join(dupes)} (compressed and plain?)")
        self.files: list[tuple[str, Path]] = sorted(pairs)

    def __iter__(self) -> Iterator[Example]:
        for label, path in self.files:
            with open_text(path, self.encoding) as f:
                for line in f:
                    where = f"{path}:{f.lineno}"
                    yield Example(_check_text(line, where), label, where)


class AclImdbCorpus(LabelledCorpus):
    """The aclImdb layout: ``<split>/<label>/*.txt``, one review per file; ``path`` is the split directory.

    Every sub-directory holding ``.txt`` files is a label, except those in ``skip`` (default ``unsup``, the
    unlabelled reviews). Files are read in natural order of their names (``2_3.txt`` before ``10_1.txt``).
    """

    format = "aclimdb"

    def __init__(self, path: str | os.PathLike, encoding: str = "utf-8", skip: Sequence[str] = ("unsup",)):
        super().__init__(path, encoding)
        if not self.path.is_dir():
            raise DataError(f"{self.path}: expected the split directory of the aclImdb layout (<split>/<label>/*.txt)")
        self.labels: list[tuple[str, list[Path]]] = []
        for d in sorted(p for p in self.path.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if d.name in skip:
                continue
            files = sorted((f for f in d.iterdir() if f.suffix == ".txt" and f.is_file()), key=_natural_key)
            nested = [s.name for s in d.iterdir() if s.is_dir() and next(s.glob("*.txt"), None) is not None]
            if nested:
                raise DataError(
                    f"{self.path}: looks like the aclImdb root ({d.name}/ holds {', '.join(sorted(nested))}/); "
                    f"pass the split directory instead, e.g. {d}"
                )
            if files:
                self.labels.append((d.name, files))
        if not self.labels:
            raise DataError(
                f"{self.path}: no <label>/*.txt sub-directories found; pass the split directory, e.g. aclImdb/train"
            )

    def __iter__(self) -> Iterator[Example]:
        for label, files in self.labels:
            for path in files:
                with open_text(path, self.encoding) as f:
                    text = "\n".join(f)
                yield Example(_check_text(text, str(path)), label, str(path))


class FastTextCorpus(LabelledCorpus):
    """fastText's supervised format: ``__label__pos the text ...``, one example per line.

    The label is the leading ``__label__`` token (without the prefix); blank lines are skipped. Lines with
    no label or with several (multi-label) are errors.
    """

    format = "fasttext"
    _LINE_RE = re.compile(r"\s*((?:" + re.escape(FASTTEXT_LABEL_PREFIX) + r"\S*\s*)+)(.*)", re.DOTALL)

    def __init__(self, path: str | os.PathLike, encoding: str = "utf-8"):
        super().__init__(path, encoding)
        with open_text(self.path, encoding) as f:
            if not any(line.strip() for line in f):
                raise DataError(f"{self.path}: the file is empty; expected lines like '__label__pos some text'")

    def __iter__(self) -> Iterator[Example]:
        with open_text(self.path, self.encoding) as f:
            for line in f:
                if not line.strip():
                    continue
                where = f"{self.path}:{f.lineno}"
                m = self._LINE_RE.fullmatch(line)
                if m is None:
                    raise DataError(
                        f"{where}: the line does not start with a {FASTTEXT_LABEL_PREFIX}<label> token "
                        f"(got {line[:40]!r}); fix the line or choose another --format"
                    )
                labels = m.group(1).split()
                if len(labels) > 1:
                    raise DataError(f"{where}: several labels ({', '.join(labels)}); multi-label data is not supported")
                label = labels[0][len(FASTTEXT_LABEL_PREFIX) :]
                if not label:
                    raise DataError(f"{where}: the label after {FASTTEXT_LABEL_PREFIX} is empty")
                yield Example(_check_text(m.group(2).strip(), where), label, where)


def _natural_key(path: Path) -> list:
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", path.name)]


def _starts_with_fasttext_label(path: Path) -> bool:
    try:
        with _open_binary(path) as f:
            for raw in itertools.islice(f, 20):
                if raw.strip():
                    return raw.lstrip(b"\xef\xbb\xbf").startswith(FASTTEXT_LABEL_PREFIX.encode())
    except _COMPRESSION_ERRORS:
        return False
    return False


def detect_format(path: str | os.PathLike) -> str:
    """Guess the labelled-data format of ``path``: one of ``csv tsv jsonl fasttext lines aclimdb``.

    Raises:
        DataError: the path does not exist or its format cannot be told from its name.
    """
    p = Path(path)
    if "*" in p.name:
        return "lines"
    if p.is_dir():
        subdirs = [d for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")]
        if any(next(d.glob("*.txt"), None) is not None for d in subdirs):
            return "aclimdb"
        return "lines"
    if p.is_file():
        name = _strip_compression(p.name).lower()
        if name.endswith(".csv"):
            return "csv"
        if name.endswith((".tsv", ".tab")):
            return "tsv"
        if name.endswith((".jsonl", ".ndjson", ".json")):
            return "jsonl"
        if _starts_with_fasttext_label(p):
            return "fasttext"
        stem = _strip_compression(p.name)
        if "." in stem:
            prefix = stem.rsplit(".", 1)[0]
            siblings = sorted(
                f.name for f in p.parent.iterdir() if f.name.startswith(prefix + ".") and f.name != p.name
            )
            if siblings:
                raise DataError(
                    f"{p}: one file of a one-example-per-line set? Pass the common prefix "
                    f"{str(p.parent / prefix)!r} to read it with {', '.join(siblings[:3])} (label = file suffix)"
                )
        raise DataError(
            f"{p}: cannot tell the format from the file name; pass --format csv|tsv|jsonl|fasttext "
            "(or for one-example-per-line files per label pass their common prefix)"
        )
    if p.parent.is_dir() and any(f.name.startswith(p.name + ".") for f in p.parent.iterdir()):
        return "lines"
    raise DataError(f"{p}: no such file or directory; check the path")


def read_labelled(
    path: str | os.PathLike,
    format: str = "auto",
    text_columns: str | Sequence[str] | None = None,
    label_column: str | None = None,
    text_field: str = "text",
    label_field: str = "label",
    encoding: str = "utf-8",
    delimiter: str | None = None,
) -> LabelledCorpus:
    """Open labelled text in any supported format as a restartable corpus of :class:`Example`.

    Args:
        path: File, directory, common prefix or glob (see the module docs for each format).
        format: ``auto`` (from the path; a file whose first line starts with ``__label__`` is ``fasttext``),
            ``csv``, ``tsv``, ``jsonl``, ``fasttext``, ``lines`` or ``aclimdb``.
        text_columns: Column(s)/field(s) holding the text: a name, a list, or ``"a,b"``; several are joined
            with a space. Defaults to ``text_field``, else a common name (``sentence``, ``review``, ...).
        label_column: Column/field holding the label. Defaults to ``label_field``, else a common name.
        text_field: Default text column/field name.
        label_field: Default label column/field name.
        encoding: Text encoding (UTF-8 default; the original rt-polarity files need ``cp1252``).
        delimiter: Override the CSV/TSV delimiter.

    Returns:
        A :class:`LabelledCorpus`; iterate it (repeatedly) or pass it to :func:`load_examples`.

    Raises:
        DataError: unknown format, missing path, empty file, missing/misnamed column or field (the message
            lists the available ones and suggests the nearest).
    """
    if format not in FORMATS:
        raise DataError(f"unknown format {format!r}{_nearest(format, FORMATS)}; choose one of {', '.join(FORMATS)}")
    fmt = detect_format(path) if format == "auto" else format
    if fmt in ("csv", "tsv"):
        return CSVCorpus(
            path,
            text_columns=text_columns,
            label_column=label_column,
            encoding=encoding,
            delimiter=delimiter,
            tsv=fmt == "tsv",
            text_field=text_field,
            label_field=label_field,
        )
    if fmt == "jsonl":
        return JSONLCorpus(
            path,
            text_field=text_columns if text_columns is not None else text_field,
            label_field=label_column if label_column is not None else label_field,
            encoding=encoding,
            explicit_text=text_columns is not None,
            explicit_label=label_column is not None,
        )
    if text_columns is not None or label_column is not None:  # the label comes from the file (name)
        raise DataError(f"--text-column/--label-column do not apply to the {fmt!r} format (labels come from file names)")
    if fmt == "lines":
        return LinesPerLabelCorpus(path, encoding=encoding)
    if fmt == "fasttext":
        return FastTextCorpus(path, encoding=encoding)
    return AclImdbCorpus(path, encoding=encoding)


def check_labels(examples: Sequence[Example], min_classes: int = 2, source: str = "the data") -> Counter:
    """Check a list of examples is usable for training a classifier; return the label counts.

    Raises:
        DataError: there are no examples, fewer than ``min_classes`` distinct labels (the message says
            which class and how many rows), or one number written two ways (``1`` and ``1.0``), which would
            make two classes.
    """
    if not examples:
        raise DataError(f"{source}: no examples found; the file is empty")
    counts = Counter(ex.label for ex in examples)
    spelled: dict[float, Example] = {}  # the same number written two ways would be two classes
    for ex in examples:
        number = _number_key(ex.label)
        if number is None:
            continue
        other = spelled.setdefault(number, ex)
        if other.label != ex.label:
            raise DataError(
                f"{ex.where}: the label {ex.label!r} is the number {other.label!r} (at {other.where}) written "
                "another way, which would make two classes; write every label of that class the same way"
            )
    if len(counts) < min_classes:
        found = ", ".join(f"{label!r} ({n} rows)" for label, n in counts.most_common())
        raise DataError(
            f"{source}: the labels hold only {len(counts)} class(es): {found}; a classifier needs at least "
            f"{min_classes} (wrong --label-column, or only one label file?)"
        )
    return counts


def load_examples(
    data: str | os.PathLike | LabelledCorpus | Iterable[Example],
    min_classes: int = 2,
    limit: int | None = None,
    **read_kwargs: Any,
) -> list[Example]:
    """Read all examples into a list and validate them with :func:`check_labels`.

    Args:
        data: A path (opened with :func:`read_labelled` and ``read_kwargs``), a corpus, or examples.
        min_classes: Minimum number of distinct labels (use 1 for evaluation/prediction data).
        limit: Keep only the first ``limit`` examples.
        **read_kwargs: ``format``, ``text_columns``, ``label_column``, ... for :func:`read_labelled`.
    """
    if isinstance(data, (str, os.PathLike)):
        corpus: Iterable[Example] = read_labelled(data, **read_kwargs)
        source = str(data)
    else:
        if read_kwargs:
            raise DataError(f"reader options {sorted(read_kwargs)} only apply when a path is given")
        corpus = data
        source = str(getattr(data, "path", "the data"))
    examples: list[Example] = []
    for ex in corpus:
        if limit is not None and len(examples) >= limit:
            break
        examples.append(ex)
    check_labels(examples, min_classes=min_classes, source=source)
    return examples
