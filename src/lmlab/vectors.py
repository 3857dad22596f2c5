"""KeyedVectors: trained word vectors, their queries, their evaluation and their file formats.

The trained artifact is kept apart from the training machinery: :class:`lmlab.models.word2vec.Word2Vec` and
:class:`lmlab.models.glove.GloVe` both produce a :class:`KeyedVectors`.

Queries: ``kv["word"]``, :meth:`KeyedVectors.most_similar` (cosine), :meth:`~KeyedVectors.similarity`,
:meth:`~KeyedVectors.analogy` (3CosAdd and 3CosMul, restricted to the most frequent words),
:meth:`~KeyedVectors.doesnt_match`.

Evaluation: :meth:`~KeyedVectors.evaluate_word_pairs` (Spearman and Pearson against human scores, with the
out-of-vocabulary count) and :meth:`~KeyedVectors.evaluate_analogies` (Google ``questions-words.txt``
format, accuracy per section, semantic / syntactic / total).

Formats: the native run directory (``config.json`` + ``vectors.safetensors`` + ``vocab.json``), the word2vec
text and binary formats (as written by word2vec.c and gensim), and the GloVe text format.
:func:`load_vectors` reads any of them, detecting which.
"""

from __future__ import annotations

import bz2
import difflib
import gzip
import json
import lzma
import math
import os
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from lmlab.errors import ConfigError, DataError

__all__ = ["KeyedVectors", "VectorsConfig", "WordNotInVocabError", "load_vectors", "read_analogies", "read_word_pairs"]

VECTORS_FILE = "vectors.safetensors"
VOCAB_FILE = "vocab.json"
NATIVE_MODEL_TYPES = ("word2vec", "glove", "word_vectors")


@dataclass
class VectorsConfig:
    """What config.json records about a standalone set of vectors (model_type ``word_vectors``)."""

    vocab_size: int = 0
    embed_dim: int = 0
    source: str = ""


class WordNotInVocabError(DataError, KeyError):
    """A query word is not in the vocabulary (a ``KeyError`` too, so ``dict``-style code keeps working)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _open_binary(path: Path) -> IO[bytes]:
    name = path.name
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".bz2"):
        return bz2.open(path, "rb")
    if name.endswith(".xz"):
        return lzma.open(path, "rb")
    return open(path, "rb")


def _open_write(path: Path) -> IO[bytes]:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        return gzip.open(path, "wb")
    return open(path, "wb")


#: the literature's names of the analogy methods, accepted next to "add"/"mul"
_ANALOGY_ALIASES = {"3cosadd": "add", "3cosmul": "mul"}


class KeyedVectors:
    """Words and their vectors, with queries, evaluation and file formats.

    Args:
        words: The vocabulary, most frequent first (``restrict_vocab`` relies on that order).
        vectors: (V, D) array.
        counts: Optional corpus counts of the words (kept in the native format).
    """

    def __init__(self, words: Sequence[str], vectors: np.ndarray, counts: np.ndarray | Sequence[int] | None = None):
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(words):
            raise DataError(f"vectors must be (len(words), dim); got {vectors.shape} for {len(words)} words")
        self.words: list[str] = list(words)
        self.vectors = vectors
        self.counts = None if counts is None else np.asarray(counts, dtype=np.int64)
        self.index: dict[str, int] = {}
        for i, w in enumerate(self.words):
            self.index.setdefault(w, i)
        self._normed: np.ndarray | None = None

    model_type = "word_vectors"

    def info(self) -> dict:
        """JSON-friendly facts for a server's model list."""
        return {"model_type": self.model_type, "vocab_size": len(self), "embed_dim": self.vector_size}

    # -- basics ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.index

    @property
    def vector_size(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def embed_dim(self) -> int:
        return self.vector_size

    def __repr__(self) -> str:
        return f"KeyedVectors({len(self)} words, dim {self.vector_size})"

    def suggest(self, word: str, n: int = 3) -> list[str]:
        """The vocabulary words spelled most like ``word`` (difflib), looking first at frequent words; first of all
        its NFKC-folded form (``１９９７`` -> ``1997``, ``ＡＰＥＣ`` -> ``apec``: a vocabulary segmented with
        NFKC holds Chinese text's full-width digits and letters in that form)."""
        pool = self.words[:50000]
        close = difflib.get_close_matches(word, pool, n=n, cutoff=0.6)
        folded = unicodedata.normalize("NFKC", word)
        if folded != word:  # full-width (or other compatibility) characters; plain ASCII is never folded
            form = next((f for f in (folded, folded.lower()) if f in self.index), None)
            if form is not None:
                close = [form, *(c for c in close if c != form)][:n]
        if not close and word.lower() != word and word.lower() in self.index:
            close = [word.lower()]
        return close

    def get_index(self, word: str) -> int:
        try:
            return self.index[word]
        except KeyError:
            close = self.suggest(word)
            hint = f"; closest spellings: {', '.join(close)}" if close else ""
            raise WordNotInVocabError(
                f"{word!r} is not in the vocabulary ({len(self):,} words){hint}"
            ) from None

    def __getitem__(self, word: str | Sequence[str]) -> np.ndarray:
        if isinstance(word, str):
            return self.vectors[self.get_index(word)]
        return np.stack([self.vectors[self.get_index(w)] for w in word])

    def get_vector(self, word: str, norm: bool = False) -> np.ndarray:
        i = self.get_index(word)
        return self.normed[i] if norm else self.vectors[i]

    @property
    def normed(self) -> np.ndarray:
        """Unit-length copies of the vectors (rows of zeros stay zero)."""
        if self._normed is None:
            norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
            self._normed = (self.vectors / np.maximum(norms, 1e-12)).astype(np.float32)
        return self._normed

    # -- queries ---------------------------------------------------------------------------------------
    def similarity(self, word1: str, word2: str) -> float:
        """Cosine similarity of two words."""
        return float(self.get_vector(word1, norm=True) @ self.get_vector(word2, norm=True))

    def most_similar(self, positive: str | Sequence[str] = (), negative: str | Sequence[str] = (),
                     topn: int = 10, restrict_vocab: int | None = None) -> list[tuple[str, float]]:
        """Words closest by cosine to the mean of the unit ``positive`` vectors minus the ``negative`` ones.

        The query words themselves are left out of the answer.
        """
        positive = [positive] if isinstance(positive, str) else list(positive)
        negative = [negative] if isinstance(negative, str) else list(negative)
        if not positive and not negative:
            raise ConfigError("most_similar needs at least one positive or negative word")
        ids = [self.get_index(w) for w in positive] + [self.get_index(w) for w in negative]
        weights = [1.0] * len(positive) + [-1.0] * len(negative)
        query = np.zeros(self.vector_size, dtype=np.float32)
        for i, wgt in zip(ids, weights, strict=True):
            query += wgt * self.normed[i]
        if float(np.linalg.norm(query)) <= 1e-6:
            shown = " + ".join(positive) + "".join(f" - {w}" for w in negative)
            raise ConfigError(
                f"the query {shown.lstrip(' +')} cancels out to a zero vector, so every word would score 0; "
                "use positive and negative words that differ"
            )
        return self._nearest(query, set(ids), topn, restrict_vocab)

    def _nearest(self, query: np.ndarray, exclude: set[int], topn: int,
                 restrict_vocab: int | None) -> list[tuple[str, float]]:
        limit = len(self) if not restrict_vocab else min(restrict_vocab, len(self))
        norm = float(np.linalg.norm(query))
        query = query / max(norm, 1e-12)
        scores = self.normed[:limit] @ query
        k = min(limit, topn + len(exclude))
        if k <= 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        out = [(self.words[i], float(scores[i])) for i in top if int(i) not in exclude]
        return out[:topn]

    def analogy(self, a: str, b: str, c: str, topn: int = 1, method: str = "add",
                restrict_vocab: int | None = 30000) -> list[tuple[str, float]]:
        """``a`` is to ``b`` as ``c`` is to ?  (e.g. man : king :: woman : queen).

        ``method="add"`` (3CosAdd, Mikolov et al. 2013): argmax cos(x, b - a + c) over unit vectors.
        ``method="mul"`` (3CosMul, Levy & Goldberg 2014): argmax cos'(x,b) cos'(x,c) / (cos'(x,a) + 1e-3) with
        cos' = (cos + 1) / 2. Candidates are the ``restrict_vocab`` most frequent words; a, b, c are excluded.
        """
        ia, ib, ic = self.get_index(a), self.get_index(b), self.get_index(c)
        method = _ANALOGY_ALIASES.get(method, method)
        scores = self._analogy_scores(np.array([ia]), np.array([ib]), np.array([ic]), method, restrict_vocab)[0]
        exclude = {ia, ib, ic}
        order = np.argsort(-scores, kind="stable")
        out = []
        for i in order:
            if int(i) in exclude:
                continue
            out.append((self.words[i], float(scores[i])))
            if len(out) >= topn:
                break
        return out

    def _analogy_scores(self, ia: np.ndarray, ib: np.ndarray, ic: np.ndarray, method: str,
                        restrict_vocab: int | None) -> np.ndarray:
        limit = len(self) if not restrict_vocab else min(restrict_vocab, len(self))
        cand = self.normed[:limit]
        if method == "add":
            query = self.normed[ib] - self.normed[ia] + self.normed[ic]
            query /= np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
            return query @ cand.T  # (Q, limit)
        if method == "mul":
            ca = (self.normed[ia] @ cand.T + 1.0) / 2.0
            cb = (self.normed[ib] @ cand.T + 1.0) / 2.0
            cc = (self.normed[ic] @ cand.T + 1.0) / 2.0
            return cb * cc / (ca + 1e-3)
        raise ConfigError(f"analogy method must be 'add' (3CosAdd) or 'mul' (3CosMul), got {method!r}")

    def doesnt_match(self, words: Sequence[str]) -> str:
        """The word furthest (by cosine) from the mean of the others' unit vectors."""
        words = list(words)
        if len(words) < 2:
            raise ConfigError("doesnt_match needs at least two words")
        vecs = np.stack([self.get_vector(w, norm=True) for w in words])
        mean = vecs.mean(axis=0)
        mean /= max(float(np.linalg.norm(mean)), 1e-12)
        return words[int(np.argmin(vecs @ mean))]

    # -- evaluation ------------------------------------------------------------------------------------
    def _lookup_table(self, restrict_vocab: int | None, case_insensitive: bool) -> dict[str, int]:
        limit = len(self) if not restrict_vocab else min(restrict_vocab, len(self))
        table: dict[str, int] = {}
        for i in range(limit):
            key = self.words[i].lower() if case_insensitive else self.words[i]
            table.setdefault(key, i)
        return table

    def evaluate_word_pairs(self, path: str | os.PathLike, restrict_vocab: int | None = 300000,
                            case_insensitive: bool = True) -> dict[str, Any]:
        """Spearman (and Pearson) correlation between cosine similarities and the human scores in ``path``.

        Pairs with a word outside the ``restrict_vocab`` most frequent words are left out and counted in
        ``oov``. See :func:`read_word_pairs` for the accepted file layouts.
        """
        from scipy import stats

        pairs = read_word_pairs(path)
        table = self._lookup_table(restrict_vocab, case_insensitive)
        model, human = [], []
        oov = 0
        for w1, w2, score in pairs:
            k1, k2 = (w1.lower(), w2.lower()) if case_insensitive else (w1, w2)
            if k1 not in table or k2 not in table:
                oov += 1
                continue
            model.append(float(self.normed[table[k1]] @ self.normed[table[k2]]))
            human.append(score)
        result: dict[str, Any] = {"pairs": len(pairs), "evaluated": len(model), "oov": oov,
                                  "oov_ratio": oov / max(len(pairs), 1)}
        if len(model) >= 2:
            result["spearman"] = float(stats.spearmanr(human, model).statistic)
            result["pearson"] = float(stats.pearsonr(human, model).statistic)
        else:
            result["spearman"] = result["pearson"] = float("nan")
        return result

    def evaluate_analogies(self, path: str | os.PathLike, restrict_vocab: int | None = 30000,
                           method: str = "add", case_insensitive: bool = True,
                           on_malformed: str = "skip", batch_size: int = 512) -> dict[str, Any]:
        """Accuracy on analogy questions in the Google ``questions-words.txt`` format.

        A question counts when its four words are among the ``restrict_vocab`` most frequent; the answer is
        the best candidate among those words other than the three given (as in word2vec's compute-accuracy and
        gensim). Questions with a rarer word are counted in ``oov``. Sections whose name starts with ``gram``
        are syntactic, the others semantic.

        Returns ``{"sections": [{"section", "correct", "total", "accuracy"}...], "semantic": {...},
        "syntactic": {...}, "total": {...}, "oov": n, "malformed": n}``.
        """
        sections, malformed = read_analogies(path, on_malformed=on_malformed)
        table = self._lookup_table(restrict_vocab, case_insensitive)
        results = []
        oov = 0
        agg = {"semantic": [0, 0], "syntactic": [0, 0], "total": [0, 0]}
        for name, questions in sections:
            ids = []
            for q in questions:
                keys = [w.lower() for w in q] if case_insensitive else list(q)
                if all(k in table for k in keys):
                    ids.append([table[k] for k in keys])
                else:
                    oov += 1
            correct = 0
            if ids:
                arr = np.array(ids, dtype=np.int64)
                for s in range(0, len(arr), batch_size):
                    part = arr[s : s + batch_size]
                    scores = self._analogy_scores(part[:, 0], part[:, 1], part[:, 2], method, restrict_vocab)
                    rows = np.arange(len(part))
                    for col in range(3):
                        scores[rows, part[:, col]] = -np.inf
                    correct += int(np.count_nonzero(scores.argmax(axis=1) == part[:, 3]))
            total = len(ids)
            results.append({"section": name, "correct": correct, "total": total,
                            "accuracy": correct / total if total else float("nan")})
            kind = "syntactic" if name.startswith("gram") else "semantic"
            for key in (kind, "total"):
                agg[key][0] += correct
                agg[key][1] += total
        out: dict[str, Any] = {"sections": results}
        for key, (c, t) in agg.items():
            out[key] = {"correct": c, "total": t, "accuracy": c / t if t else float("nan")}
        out["oov"] = oov
        out["malformed"] = malformed
        return out

    # -- native format ---------------------------------------------------------------------------------
    def save(self, run_dir: str | os.PathLike, model_type: str = "word_vectors",
             sections: dict | None = None, metrics: Iterable[dict] | None = None) -> Path:
        """Write ``run_dir`` with config.json, vectors.safetensors (tensor ``vectors``) and vocab.json."""
        from safetensors.numpy import save as st_save

        from lmlab.checkpoint import atomic_write_bytes, atomic_write_json, save_config

        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(run_dir / VECTORS_FILE, st_save({"vectors": self.vectors},
                                                             metadata={"format": "lmlab-word-vectors"}))
        vocab = {"words": self.words}
        if self.counts is not None:
            vocab["counts"] = [int(c) for c in self.counts]
        atomic_write_json(run_dir / VOCAB_FILE, vocab)
        data = {"vectors": {"vocab_size": len(self), "embed_dim": self.vector_size}}
        data.update(sections or {})
        save_config(run_dir, model_type, data)
        if metrics is not None:
            lines = "".join(json.dumps(m) + "\n" for m in metrics)
            from lmlab.checkpoint import atomic_write_text

            atomic_write_text(run_dir / "metrics.jsonl", lines)
        return run_dir

    @classmethod
    def load(cls, run_dir: str | os.PathLike, device: Any = None) -> KeyedVectors:
        """Read a native run directory written by :meth:`save` (``device`` is accepted and ignored)."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        from lmlab.checkpoint import load_config, read_json
        from lmlab.errors import CheckpointError

        run_dir = Path(run_dir)
        load_config(run_dir, NATIVE_MODEL_TYPES)
        path = run_dir / VECTORS_FILE
        if not path.is_file():
            raise CheckpointError(f"{path}: vectors file is missing; re-train or restore it")
        try:
            vectors = load_file(str(path))["vectors"]
        except (SafetensorError, OSError, KeyError, ValueError) as err:
            raise CheckpointError(f"{path}: vectors file is truncated or corrupt ({err})") from None
        vocab = read_json(run_dir / VOCAB_FILE, "vocab.json")
        words = vocab.get("words") if isinstance(vocab, dict) else None
        if not isinstance(words, list) or len(words) != len(vectors):
            raise CheckpointError(
                f"{run_dir / VOCAB_FILE}: holds {len(words) if isinstance(words, list) else 'no'} words but "
                f"{path.name} has {len(vectors)} vectors; the run directory is inconsistent"
            )
        return cls(words, vectors, counts=vocab.get("counts"))

    from_run_dir = load

    # -- word2vec formats ------------------------------------------------------------------------------
    def save_word2vec_format(self, path: str | os.PathLike, binary: bool = False) -> None:
        """Write the word2vec text (``binary=False``) or binary format: header ``V D``, then one word per row.

        Binary rows are ``word`` + space + D little-endian float32 + newline, as word2vec.c writes them.
        """
        path = Path(path)
        tmp = path.with_name(f".tmp-{path.name}")
        with _open_write(tmp) as fh:
            fh.write(f"{len(self)} {self.vector_size}\n".encode())
            vecs = self.vectors.astype("<f4")
            if binary:
                for word, vec in zip(self.words, vecs, strict=True):
                    fh.write(word.encode("utf-8") + b" " + vec.tobytes() + b"\n")
            else:
                self._write_text_rows(fh)
        os.replace(tmp, path)

    def _write_text_rows(self, fh: IO[bytes], block: int = 4096) -> None:
        for s in range(0, len(self), block):
            rows = []
            for word, vec in zip(self.words[s : s + block], self.vectors[s : s + block], strict=True):
                rows.append(word + " " + " ".join(f"{x:.6g}" for x in vec.tolist()))
            fh.write(("\n".join(rows) + "\n").encode("utf-8"))

    def save_glove_format(self, path: str | os.PathLike) -> None:
        """Write the GloVe text format: one ``word v1 ... vD`` row per word, no header."""
        path = Path(path)
        tmp = path.with_name(f".tmp-{path.name}")
        with _open_write(tmp) as fh:
            self._write_text_rows(fh)
        os.replace(tmp, path)

    @classmethod
    def load_word2vec_format(cls, path: str | os.PathLike, binary: bool | None = None,
                             limit: int | None = None) -> KeyedVectors:
        """Read the word2vec text or binary format (``binary=None``: detect). ``limit``: first N words only."""
        path = Path(path)
        _check_file(path)
        with _open_binary(path) as fh:
            data = fh.read()
        header, _, _ = data.partition(b"\n")
        try:
            count, dim = (int(x) for x in header.split())
        except ValueError:
            raise DataError(
                f"{path}:1: the word2vec header must be 'VOCAB_SIZE DIM', got {header[:60]!r}; "
                "for a file without a header use load_vectors(..., format='glove')"
            ) from None
        if count < 0 or dim <= 0:
            raise DataError(f"{path}:1: bad header {header.decode(errors='replace')!r}")
        if binary is None:
            binary = _looks_binary(data, len(header) + 1, dim)
        n = count if limit is None else min(count, limit)
        if binary:
            words, vectors = _parse_binary(data, len(header) + 1, n, dim, path)
        else:
            words, vectors = _parse_text(data[len(header) + 1 :], n, dim, path, first_line=2, expected=count,
                                         limit=limit)
        return cls(words, vectors)

    @classmethod
    def load_glove_format(cls, path: str | os.PathLike, limit: int | None = None) -> KeyedVectors:
        """Read the GloVe text format (no header; the dimension is taken from the first row)."""
        path = Path(path)
        _check_file(path)
        with _open_binary(path) as fh:
            data = fh.read()
        first = data.split(b"\n", 1)[0].split()
        if len(first) < 2:
            raise DataError(f"{path}:1: expected 'word v1 ... vD', got {data[:60]!r}")
        dim = len(first) - 1
        words, vectors = _parse_text(data, limit, dim, path, first_line=1, expected=None, limit=limit)
        return cls(words, vectors)


# ---------------------------------------------------------------------------------------------------------
# File parsing
# ---------------------------------------------------------------------------------------------------------


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise DataError(f"{path} is a directory; expected a vectors file (or pass the run directory to load_vectors)")


def _looks_binary(data: bytes, offset: int, dim: int) -> bool:
    line_end = data.find(b"\n", offset)
    line = data[offset : line_end if line_end >= 0 else len(data)]
    try:
        parts = line.decode("utf-8").split()
        [float(x) for x in parts[1:]]
    except (UnicodeDecodeError, ValueError):
        return True
    return len(parts) != dim + 1


def _decode_word(raw: bytes, path: Path, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}:{where}: the word {raw[:40]!r} is not valid UTF-8 (byte 0x{raw[exc.start:exc.start + 1].hex()}); "
            "the file is corrupt or in another encoding"
        ) from None


def _parse_binary(data: bytes, pos: int, count: int, dim: int, path: Path) -> tuple[list[str], np.ndarray]:
    nbytes = 4 * dim
    words: list[str] = []
    vectors = np.empty((count, dim), dtype=np.float32)
    for i in range(count):
        while pos < len(data) and data[pos : pos + 1] in (b"\n", b" "):
            pos += 1
        space = data.find(b" ", pos)
        if space < 0 or pos >= len(data):
            raise DataError(
                f"{path}: the header promises {count} vectors but the file ends after {i} "
                f"(entry {i + 1}); the file is truncated"
            )
        if space - pos > 1000:
            raise DataError(f"{path}: entry {i + 1} (byte {pos}): no word separator found; not a word2vec binary file")
        word = _decode_word(data[pos:space], path, f"entry {i + 1}")
        start = space + 1
        if start + nbytes > len(data):
            raise DataError(
                f"{path}: entry {i + 1} ({word!r}) has {len(data) - start} bytes of vector, expected {nbytes} "
                f"(dim {dim}); the file is truncated"
            )
        vectors[i] = np.frombuffer(data, dtype="<f4", count=dim, offset=start)
        words.append(word)
        pos = start + nbytes
    return words, vectors


def _parse_text(data: bytes, count: int | None, dim: int, path: Path, first_line: int,
                expected: int | None, limit: int | None) -> tuple[list[str], np.ndarray]:
    lines = data.split(b"\n")
    if lines and lines[-1].strip() == b"":
        lines.pop()
    if expected is not None and len(lines) < expected and (limit is None or limit > len(lines)):
        raise DataError(
            f"{path}: the header promises {expected} vectors but the file has {len(lines)} rows; "
            "the file is truncated or the header is wrong"
        )
    if expected is not None and len(lines) > expected:
        raise DataError(
            f"{path}:{first_line + expected}: more rows than the {expected} the header promises; fix the header"
        )
    n = len(lines) if count is None else min(count, len(lines))
    words: list[str] = []
    vectors = np.empty((n, dim), dtype=np.float32)
    for i in range(n):
        raw = lines[i].rstrip(b"\r")
        lineno = first_line + i
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path}:{lineno}: byte 0x{raw[exc.start:exc.start + 1].hex()} is not valid UTF-8; "
                "the file is corrupt or in another encoding"
            ) from None
        parts = text.rstrip().split(" ")
        if len(parts) != dim + 1:
            raise DataError(
                f"{path}:{lineno}: expected a word and {dim} numbers, got {len(parts) - 1} numbers; "
                "every row must have the dimension of the header (or of the first row)"
            )
        try:
            vectors[i] = np.array(parts[1:], dtype=np.float32)
        except ValueError:
            raise DataError(f"{path}:{lineno}: a value of {parts[0]!r} is not a number") from None
        words.append(parts[0])
    return words, vectors


def detect_format(path: str | os.PathLike) -> str:
    """``"native"`` (run directory), ``"word2vec-text"``, ``"word2vec-binary"`` or ``"glove"``."""
    path = Path(path)
    if path.is_dir():
        return "native"
    _check_file(path)
    with _open_binary(path) as fh:
        head = fh.read(1 << 16)
    first = head.split(b"\n", 1)[0].split()
    if len(first) == 2 and all(x.isdigit() for x in first):
        dim = int(first[1])
        return "word2vec-binary" if _looks_binary(head, head.find(b"\n") + 1, dim) else "word2vec-text"
    return "glove"


def load_vectors(path: str | os.PathLike, format: str = "auto", limit: int | None = None) -> KeyedVectors:
    """Load word vectors from a native run directory, a word2vec text/binary file or a GloVe text file.

    ``format``: ``"auto"`` (detect), ``"native"``, ``"word2vec"`` (text or binary, detected),
    ``"word2vec-text"``, ``"word2vec-binary"`` or ``"glove"``. ``.gz``/``.bz2``/``.xz`` files are read directly.
    """
    path = Path(path)
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "native":
        if not path.is_dir():
            raise DataError(f"{path} is not a run directory; pass the folder written by `lmlab embed train`")
        return KeyedVectors.load(path)
    if fmt == "word2vec":
        return KeyedVectors.load_word2vec_format(path, binary=None, limit=limit)
    if fmt == "word2vec-text":
        return KeyedVectors.load_word2vec_format(path, binary=False, limit=limit)
    if fmt == "word2vec-binary":
        return KeyedVectors.load_word2vec_format(path, binary=True, limit=limit)
    if fmt == "glove":
        return KeyedVectors.load_glove_format(path, limit=limit)
    raise ConfigError(
        f"unknown vectors format {format!r}; use auto, native, word2vec, word2vec-text, word2vec-binary or glove"
    )


# ---------------------------------------------------------------------------------------------------------
# Evaluation files
# ---------------------------------------------------------------------------------------------------------


def _is_number(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value)


def read_word_pairs(path: str | os.PathLike) -> list[tuple[str, str, float]]:
    """Read a word-similarity file: ``word1 word2 score`` rows, tab-, comma- or space-separated.

    Lines starting with ``#`` and a header row are skipped; the score is the first numeric column after the
    two words (so SimLex-999.txt's ``word1 word2 POS SimLex999 ...`` and WordSim-353's CSV both work).
    """
    from lmlab.data.readers import open_text

    pairs: list[tuple[str, str, float]] = []
    with open_text(path) as fh:
        for line in fh:
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            sep = "\t" if "\t" in text else ("," if "," in text else None)
            parts = [p.strip() for p in text.split(sep)]
            score = next((p for p in parts[2:] if _is_number(p)), None)
            if len(parts) < 3 or score is None:
                if not pairs and fh.lineno <= 3:
                    continue  # header row
                raise DataError(
                    f"{path}:{fh.lineno}: expected 'word1 word2 score', got {text[:60]!r}"
                )
            pairs.append((parts[0], parts[1], float(score)))
    if not pairs:
        raise DataError(f"{path}: no word pairs found; expected 'word1 word2 score' rows")
    return pairs


def read_analogies(path: str | os.PathLike, on_malformed: str = "skip"
                   ) -> tuple[list[tuple[str, list[tuple[str, str, str, str]]]], int]:
    """Read questions in the Google format: ``: section`` lines, then ``a b c d`` (a : b :: c : d).

    ``on_malformed``: ``"skip"`` counts lines that are not four words, ``"error"`` raises a ``DataError``
    naming the first one. Returns ``([(section, questions)...], malformed_count)``.
    """
    from lmlab.data.readers import open_text

    if on_malformed not in ("skip", "error"):
        raise ConfigError(f"on_malformed must be 'skip' or 'error', got {on_malformed!r}")
    sections: list[tuple[str, list[tuple[str, str, str, str]]]] = []
    malformed = 0
    with open_text(path) as fh:
        for line in fh:
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            if text.startswith(":"):
                sections.append((text[1:].strip() or f"section-{len(sections) + 1}", []))
                continue
            parts = text.split()
            if len(parts) != 4:
                if on_malformed == "error":
                    raise DataError(
                        f"{path}:{fh.lineno}: expected four words 'a b c d', got {len(parts)}: {text[:60]!r}; "
                        "fix the line or pass --on-malformed skip"
                    )
                malformed += 1
                continue
            if not sections:
                sections.append(("questions", []))
            sections[-1][1].append((parts[0], parts[1], parts[2], parts[3]))
    if not any(q for _, q in sections):
        raise DataError(f"{path}: no analogy questions found; expected ': section' lines and 'a b c d' rows")
    return sections, malformed


# ---------------------------------------------------------------------------------------------------------
# 2-D projections
# ---------------------------------------------------------------------------------------------------------


def pca_2d(x: np.ndarray) -> np.ndarray:
    """Project the rows of ``x`` onto their first two principal components."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T


def tsne_2d(x: np.ndarray, perplexity: float = 10.0, steps: int = 750, seed: int = 0) -> np.ndarray:
    """Exact t-SNE (van der Maaten & Hinton, 2008) of a few hundred points to 2-D, with cosine affinities.

    Gaussian affinities with a per-point bandwidth found by bisection to match ``perplexity``, symmetrised;
    Student-t similarities in 2-D; gradient descent with momentum and early exaggeration (x12 for 100 steps), learning rate n / 12.
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 3:
        return pca_2d(x) if n > 1 else np.zeros((n, 2))
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    d = np.maximum(0.0, 2.0 - 2.0 * xn @ xn.T)  # squared euclidean distance of unit vectors
    perplexity = min(perplexity, (n - 1) / 3.0)
    target = np.log(perplexity)
    p = np.zeros((n, n))
    for i in range(n):
        lo, hi, beta = 0.0, np.inf, 1.0
        di = np.delete(d[i], i)
        for _ in range(60):
            w = np.exp(-(di - di.min()) * beta)
            sw = w.sum()
            h = np.log(sw) + beta * ((di - di.min()) * w).sum() / sw
            if abs(h - target) < 1e-5:
                break
            if h > target:
                lo = beta
                beta = beta * 2 if hi == np.inf else (beta + hi) / 2
            else:
                hi = beta
                beta = (beta + lo) / 2
        p[i, np.arange(n) != i] = w / sw
    p = (p + p.T) / (2 * n)
    p = np.maximum(p, 1e-12)
    rng = np.random.default_rng(seed)
    y = rng.normal(0, 1e-4, size=(n, 2))
    vel = np.zeros_like(y)
    lr = n / 12.0  # Belkina et al. (2019): n / early exaggeration; larger steps diverge for small n
    for step in range(steps):
        exag = 12.0 if step < 100 else 1.0
        momentum = 0.5 if step < 250 else 0.8
        sq = (y * y).sum(1)
        num = 1.0 / (1.0 + sq[:, None] + sq[None, :] - 2 * y @ y.T)
        np.fill_diagonal(num, 0.0)
        q = np.maximum(num / num.sum(), 1e-12)
        pq = (exag * p - q) * num
        grad = 4 * ((np.diag(pq.sum(1)) - pq) @ y)
        vel = momentum * vel - lr * grad
        y = y + vel
        y -= y.mean(0)
    return y


def plot_words(kv: KeyedVectors, words: Sequence[str], path: str | os.PathLike, method: str = "both",
               title: str | None = None) -> Path:
    """Scatter ``words`` in 2-D (``method``: ``pca``, ``tsne`` or ``both`` side by side) and save a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if method not in ("pca", "tsne", "both"):
        raise ConfigError(f"plot method must be pca, tsne or both, got {method!r}")
    words = list(dict.fromkeys(words))
    if len(words) < 2:
        raise ConfigError("plot needs at least two words")
    vecs = kv[words]
    methods = ["pca", "tsne"] if method == "both" else [method]
    fig, axes = plt.subplots(1, len(methods), figsize=(6.5 * len(methods), 6), squeeze=False)
    for ax, m in zip(axes[0], methods, strict=True):
        y = pca_2d(vecs) if m == "pca" else tsne_2d(vecs, perplexity=min(10.0, max(2.0, len(words) / 4)))
        ax.scatter(y[:, 0], y[:, 1], s=12, color="tab:blue")
        for (a, b), w in zip(y, words, strict=True):
            ax.annotate(w, (a, b), fontsize=9, xytext=(3, 3), textcoords="offset points")
        ax.set_title("PCA" if m == "pca" else "t-SNE (cosine)")
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    from lmlab.plots import save_figure

    return save_figure(fig, path)
