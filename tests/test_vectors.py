"""KeyedVectors: queries on hand-made vectors, evaluation on the real evaluation files, file formats (and
round trips with gensim in both directions), auto-detection, bad vectors / evaluation files."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from scipy import stats

from lmlab.cli import main
from lmlab.errors import ConfigError, DataError
from lmlab.vectors import (
    KeyedVectors,
    WordNotInVocabError,
    detect_format,
    load_vectors,
    pca_2d,
    read_analogies,
    read_word_pairs,
    tsne_2d,
)

WORDS = ["man", "woman", "king", "queen", "apple", "pear", "boy", "girl"]
VECS = np.array(
    [
        [1.0, 0.0, 0.2, 0.0],   # man
        [1.0, 1.0, 0.2, 0.0],   # woman
        [1.0, 0.0, 1.0, 0.1],   # king
        [1.0, 1.0, 1.0, 0.1],   # queen
        [0.0, 0.1, 0.0, 1.0],   # apple
        [0.1, 0.1, 0.0, 1.0],   # pear
        [0.9, 0.0, 0.1, 0.0],   # boy
        [0.9, 0.9, 0.1, 0.0],   # girl
    ],
    dtype=np.float32,
)


@pytest.fixture
def kv():
    return KeyedVectors(WORDS, VECS, counts=np.arange(len(WORDS), 0, -1))


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_lookup_similarity_and_neighbours(kv):
    assert kv["king"].tolist() == VECS[2].tolist()
    assert kv[["man", "pear"]].shape == (2, 4)
    assert "queen" in kv and "prince" not in kv and len(kv) == 8
    assert kv.similarity("apple", "pear") == pytest.approx(_cos(VECS[4], VECS[5]), rel=1e-6)
    hits = kv.most_similar("apple", topn=3)
    assert hits[0][0] == "pear" and "apple" not in [w for w, _ in hits]
    scores = [s for _, s in kv.most_similar("man", topn=7)]
    assert scores == sorted(scores, reverse=True)
    # positive/negative: the normalised sum, as in gensim
    unit = VECS / np.linalg.norm(VECS, axis=1, keepdims=True)
    query = unit[3] + unit[0] - unit[1]
    best = max((w for w in WORDS if w not in ("queen", "man", "woman")), key=lambda w: _cos(query, VECS[WORDS.index(w)]))
    assert kv.most_similar(["queen", "man"], ["woman"], topn=1)[0][0] == best == "king"
    assert kv.doesnt_match(["man", "woman", "boy", "apple"]) == "apple"
    assert kv.most_similar("apple", topn=10, restrict_vocab=3)[0][0] in WORDS[:3]


def test_analogy_3cosadd_and_3cosmul(kv):
    assert kv.analogy("man", "king", "woman")[0][0] == "queen"
    assert kv.analogy("man", "king", "woman", method="mul")[0][0] == "queen"
    assert kv.analogy("man", "woman", "boy", topn=2)[0][0] == "girl"
    # 3CosMul by the formula: cos'(x,b) cos'(x,c) / (cos'(x,a) + 1e-3), cos' = (cos + 1) / 2
    unit = VECS / np.linalg.norm(VECS, axis=1, keepdims=True)
    a, b, c = unit[0], unit[2], unit[1]
    cp = (unit @ np.stack([a, b, c]).T + 1) / 2
    want = cp[:, 1] * cp[:, 2] / (cp[:, 0] + 1e-3)
    got = dict(kv.analogy("man", "king", "woman", topn=5, method="mul"))
    for word, score in got.items():
        assert score == pytest.approx(want[WORDS.index(word)], rel=1e-5)
    # candidates only among the most frequent words
    assert kv.analogy("man", "king", "woman", restrict_vocab=3) == []
    with pytest.raises(ConfigError, match="3CosMul"):
        kv.analogy("man", "king", "woman", method="div")


def test_unknown_word_offers_closest_spellings(kv):
    with pytest.raises(WordNotInVocabError, match="'quen' is not in the vocabulary.*closest spellings: queen"):
        kv.most_similar("quen")
    with pytest.raises(KeyError):  # dict-style code keeps working
        kv["prince"]


def test_evaluate_word_pairs_spearman_and_oov(kv, tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("# comment\nWord 1\tWord 2\tHuman (mean)\nking\tqueen\t8\nman\twoman\t7\n"
                    "apple\tpear\t9\nking\tapple\t1\nman\tprince\t5\n")
    r = kv.evaluate_word_pairs(path)
    assert (r["pairs"], r["evaluated"], r["oov"]) == (5, 4, 1)
    model = [kv.similarity(a, b) for a, b in (("king", "queen"), ("man", "woman"), ("apple", "pear"), ("king", "apple"))]
    assert r["spearman"] == pytest.approx(stats.spearmanr([8, 7, 9, 1], model).statistic)
    # case-insensitive matching, as in gensim
    (tmp_path / "upper.csv").write_text("KING,Queen,8\nMan,woman,7\napple,PEAR,9\n")
    assert kv.evaluate_word_pairs(tmp_path / "upper.csv")["evaluated"] == 3


def test_evaluate_analogies_sections_totals_and_malformed(kv, tmp_path):
    path = tmp_path / "q.txt"
    path.write_text(": family\nman king woman queen\nman woman boy girl\nman woman king apple\n"
                    ": gram-things\napple pear boy girl\nthis line is malformed really\nman king prince queen\n")
    r = kv.evaluate_analogies(path, restrict_vocab=None)
    sec = {s["section"]: s for s in r["sections"]}
    assert (sec["family"]["correct"], sec["family"]["total"]) == (2, 3)
    assert sec["gram-things"]["total"] == 1
    assert r["semantic"]["total"] == 3 and r["syntactic"]["total"] == 1
    assert r["total"]["total"] == 4 and r["oov"] == 1 and r["malformed"] == 1
    assert r["total"]["accuracy"] == pytest.approx(r["total"]["correct"] / 4)
    with pytest.raises(DataError, match=r"q\.txt:7: expected four words"):
        kv.evaluate_analogies(path, on_malformed="error")
    # restricting the vocabulary drops questions with rarer words
    assert kv.evaluate_analogies(path, restrict_vocab=4)["total"]["total"] == 1


def test_real_evaluation_files_parse(shared_data):
    ws = shared_data / "word-similarity"
    assert len(read_word_pairs(ws / "wordsim353" / "combined.csv")) == 353
    assert len(read_word_pairs(ws / "wordsim353" / "wordsim353.gensim.tsv")) == 353
    simlex = read_word_pairs(ws / "simlex999" / "SimLex-999.txt")
    assert len(simlex) == 999 and simlex[0] == ("old", "new", 1.58)
    assert len(read_word_pairs(ws / "simlex999" / "simlex999.gensim.txt")) == 999
    sections, malformed = read_analogies(ws / "google-analogy" / "questions-words.txt")
    assert len(sections) == 14 and malformed == 0
    assert sum(len(q) for _, q in sections) == 19544
    assert sum(len(q) for name, q in sections if not name.startswith("gram")) == 8869


# ---------------------------------------------------------------------------------------------------------
# formats
# ---------------------------------------------------------------------------------------------------------


def test_word2vec_formats_round_trip_with_gensim_both_ways(kv, tmp_path):
    from gensim.models import KeyedVectors as GKV

    for binary in (False, True):
        ours = tmp_path / f"ours.{'bin' if binary else 'txt'}"
        kv.save_word2vec_format(ours, binary=binary)
        g = GKV.load_word2vec_format(str(ours), binary=binary)
        assert list(g.index_to_key) == WORDS
        np.testing.assert_allclose(g.vectors, VECS, rtol=1e-6)
        theirs = tmp_path / f"theirs.{'bin' if binary else 'txt'}"
        g.save_word2vec_format(str(theirs), binary=binary)
        back = load_vectors(theirs)
        assert back.words == WORDS
        np.testing.assert_allclose(back.vectors, VECS, rtol=1e-6)
        assert detect_format(theirs) == ("word2vec-binary" if binary else "word2vec-text")
    # a non-ASCII word survives both ways
    uni = KeyedVectors(["café", "naïve"], np.eye(2, dtype=np.float32))
    uni.save_word2vec_format(tmp_path / "uni.bin", binary=True)
    assert list(GKV.load_word2vec_format(str(tmp_path / "uni.bin"), binary=True).index_to_key) == ["café", "naïve"]


def test_glove_native_and_compressed_formats(kv, tmp_path):
    kv.save_glove_format(tmp_path / "g.txt")
    assert (tmp_path / "g.txt").read_text().splitlines()[0].startswith("man 1 0 0.2 0")
    assert detect_format(tmp_path / "g.txt") == "glove"
    back = load_vectors(tmp_path / "g.txt")
    assert back.words == WORDS and np.allclose(back.vectors, VECS)
    kv.save(tmp_path / "native")
    native = load_vectors(tmp_path / "native")
    assert native.words == WORDS and np.array_equal(native.vectors, VECS)
    assert native.counts.tolist() == kv.counts.tolist()
    kv.save_word2vec_format(tmp_path / "v.txt.gz")
    assert load_vectors(tmp_path / "v.txt.gz").words == WORDS
    assert load_vectors(tmp_path / "v.txt.gz", limit=3).words == WORDS[:3]


def test_cli_eval_and_convert(kv, tmp_path, capsys, shared_data):
    kv.save_word2vec_format(tmp_path / "v.bin", binary=True)
    q = tmp_path / "q.txt"
    q.write_text(": family\nman king woman queen\nbad line\n")
    rc = main(["embed", "eval", str(tmp_path / "v.bin"), "--analogies", str(q), "--pairs",
               str(shared_data / "word-similarity" / "wordsim353" / "combined.csv"), "--sections"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "accuracy 100.0% (1/1" in out and "1 malformed lines skipped" in out
    assert "(2/353 pairs, 351 out of vocabulary)" in out
    assert main(["embed", "eval", str(tmp_path / "v.bin"), "--analogies", str(q), "--on-malformed", "error"]) == 2
    assert "q.txt:3: expected four words" in capsys.readouterr().err
    assert main(["embed", "convert", str(tmp_path / "v.bin"), str(tmp_path / "v.glove"), "--to", "glove"]) == 0
    assert load_vectors(tmp_path / "v.glove").words == WORDS
    assert main(["embed", "convert", str(tmp_path / "v.bin"), str(tmp_path / "nat"), "--to", "native"]) == 0
    import lmlab

    assert lmlab.load(tmp_path / "nat").words == WORDS


def test_projections(kv):
    y = pca_2d(VECS)
    assert y.shape == (8, 2)
    t = tsne_2d(VECS, perplexity=2, steps=300)
    assert t.shape == (8, 2) and np.isfinite(t).all()
    # t-SNE keeps the fruit apart from the people
    d = np.linalg.norm(t[:, None] - t[None], axis=-1)
    assert d[4, 5] < d[4, [0, 1, 2, 3, 6, 7]].min()


# ---------------------------------------------------------------------------------------------------------
# bad vectors files
# ---------------------------------------------------------------------------------------------------------


def test_inconsistent_text_file_names_the_line(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("3 2\na 0.1 0.2\nb 0.3\nc 0.5 0.6\n")
    with pytest.raises(DataError, match=r"v\.txt:3: expected a word and 2 numbers, got 1"):
        load_vectors(path)
    path.write_text("3 2\na 0.1 0.2\nb 0.3 0.4\n")
    with pytest.raises(DataError, match="promises 3 vectors but the file has 2 rows"):
        load_vectors(path)
    path.write_text("1 2\na 0.1 0.2\nb 0.3 0.4\n")
    with pytest.raises(DataError, match=r"v\.txt:3: more rows than the 1"):
        load_vectors(path)
    path.write_text("2 2\na 0.1 0.2\nb 0.3 x\n")
    with pytest.raises(DataError, match=r"v\.txt:3: a value of 'b' is not a number"):
        load_vectors(path)
    path.write_bytes(b"2 2\na 0.1 0.2\n\xff\xfe 0.3 0.4\n")
    with pytest.raises(DataError, match=r"v\.txt:3: byte 0xff is not valid UTF-8"):
        load_vectors(path, format="word2vec-text")
    glove = tmp_path / "g.txt"
    glove.write_text("a 0.1 0.2 0.3\nb 0.1 0.2\n")
    with pytest.raises(DataError, match=r"g\.txt:2: expected a word and 3 numbers, got 2"):
        load_vectors(glove)


def test_truncated_or_bad_binary_file(tmp_path):
    path = tmp_path / "v.bin"
    body = b"a " + struct.pack("<2f", 0.1, 0.2) + b"\nb " + struct.pack("<2f", 0.3, 0.4) + b"\n"
    path.write_bytes(b"3 2\n" + body)
    with pytest.raises(DataError, match="promises 3 vectors but the file ends after 2"):
        load_vectors(path, format="word2vec-binary")
    path.write_bytes(b"2 2\n" + body[:-5])
    with pytest.raises(DataError, match=r"entry 2 \('b'\) has 4 bytes of vector, expected 8"):
        load_vectors(path, format="word2vec-binary")
    path.write_bytes(b"2 two\n" + body)
    with pytest.raises(DataError, match=r"v\.bin:1: the word2vec header must be"):
        load_vectors(path, format="word2vec")
    with pytest.raises(DataError, match="no such file"):
        load_vectors(tmp_path / "missing.bin")
    with pytest.raises(ConfigError, match="unknown vectors format"):
        load_vectors(path, format="fasttext")
