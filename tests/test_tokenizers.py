"""Tokenizers: word/char rules, the Keras Tokenizer against hand-computed expectations, BPE, JSON round trips."""

from __future__ import annotations

import gzip
import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from lmlab.data import (
    BPETokenizer,
    CharTokenizer,
    KerasTokenizer,
    TextCorpus,
    WordTokenizer,
    load_tokenizer,
    open_text,
    pad_sequences,
    tokenizer_from_dict,
)
from lmlab.data.tokenizers import VectorWordTokenizer
from lmlab.errors import CheckpointError, ConfigError, DataError


@pytest.fixture(scope="module")
def shakespeare(shared_data: Path) -> TextCorpus:
    return TextCorpus(shared_data / "tinyshakespeare" / "input.txt.gz", max_items=3000)


@pytest.fixture(scope="module")
def rt_lines(shared_data: Path) -> list[str]:
    return list(itertools.islice(open_text(shared_data / "rt-polarity" / "rt-polarity.pos.utf8"), 400))


@pytest.fixture(scope="module")
def imdb_review(shared_data: Path) -> str:
    with gzip.open(shared_data / "imdb" / "train.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["text"]
            if "<br /><br />" in text:
                return text
    raise AssertionError("no review with <br /> found")


# ----------------------------------------------------------------------------------------------- WordTokenizer
def test_word_tokenizer_rules():
    tok = WordTokenizer()
    assert tok.tokenize("I didn't like it.<br /><br />Not at ALL!") == [
        "i", "didn't", "like", "it", ".", "not", "at", "all", "!",
    ]
    # curly apostrophes, accents, punctuation runs, numbers, underscores
    assert tok.tokenize("Rock\u2019n\u2019roll isn't naïve... $3.50 x_y") == [
        "rock\u2019n\u2019roll", "isn't", "naïve", ".", ".", ".", "$", "3", ".", "50", "x_y",
    ]
    # a quote apostrophe at a word edge is punctuation
    assert tok.tokenize("'quoted' dogs'") == ["'", "quoted", "'", "dogs", "'"]
    # CJK: one token per character; Latin words inside stay whole; Hangul words stay whole
    assert tok.tokenize("我爱NLP模型。東京タワー 한국어 문장") == [
        "我", "爱", "nlp", "模", "型", "。", "東", "京", "タ", "ワ", "ー", "한국어", "문장",
    ]
    assert tok.tokenize("") == []
    assert tok("Hi!") == ["hi", "!"]


def test_word_tokenizer_options():
    text = "Great<br />FILM 好电影"
    assert WordTokenizer().tokenize(text) == ["great", "film", "好", "电", "影"]
    assert WordTokenizer(lowercase=False).tokenize(text) == ["Great", "FILM", "好", "电", "影"]
    assert WordTokenizer(strip_html=False).tokenize(text) == ["great", "<", "br", "/", ">", "film", "好", "电", "影"]
    assert WordTokenizer(split_cjk=False).tokenize(text) == ["great", "film", "好电影"]
    assert WordTokenizer().tokenize('<a href="x">link</a> <i>it</i>') == ["link", "it"]
    assert WordTokenizer().tokenize("Tom &amp; Jerry&#39;s <3 &lt;br&gt;") == ["tom", "&", "jerry's", "<", "3"]
    assert WordTokenizer(strip_html=False).tokenize("A&amp;B") == ["a", "&", "amp", ";", "b"]


def test_word_tokenizer_on_real_review(imdb_review):
    tokens = WordTokenizer().tokenize(imdb_review)
    assert "br" not in tokens and "<" not in tokens
    assert tokens == [t.lower() for t in tokens]
    # nothing but whitespace and tags is lost: the tokens re-join to the text's non-space characters
    stripped = imdb_review.replace("<br />", "").lower()
    assert "".join(tokens) == "".join(stripped.split())


def test_char_tokenizer():
    assert CharTokenizer().tokenize("Ab c!") == ["A", "b", " ", "c", "!"]
    assert CharTokenizer(lowercase=True).tokenize("ÄB") == ["ä", "b"]
    assert CharTokenizer().tokenize("日本") == ["日", "本"]


@pytest.mark.parametrize(
    "tok", [WordTokenizer(), WordTokenizer(lowercase=False, strip_html=False, split_cjk=False), CharTokenizer(True)]
)
def test_simple_tokenizers_round_trip(tmp_path, tok):
    path = tmp_path / "tok.json"
    tok.save(path)
    again = load_tokenizer(path)
    assert again == tok and type(again).load(path) == tok
    assert tokenizer_from_dict(json.loads(json.dumps(tok.to_dict()))) == tok
    text = "It's <br />FINE 好的"
    assert again.tokenize(text) == tok.tokenize(text)


# ----------------------------------------------------------------------------------------------- Keras
KERAS_TEXTS = ["The cat sat on the mat.", "The dog ate the cat's food!", "Dog? Dog... CAT\tand\nmat"]
# Hand-computed from Keras' documented rules: lowercase; filters -> " "; split on " ".
# counts (first-seen order): the 4, cat 2, sat 1, on 1, mat 2, dog 3, ate 1, cat's 1, food 1, and 1
# by count, ties first-seen: the, dog, cat, mat, sat, on, ate, cat's, food, and; <OOV> = 1, words from 2.
KERAS_INDEX = {
    "<OOV>": 1, "the": 2, "dog": 3, "cat": 4, "mat": 5, "sat": 6, "on": 7, "ate": 8, "cat's": 9, "food": 10, "and": 11,
}


def test_keras_word_index_by_hand():
    tok = KerasTokenizer(num_words=6).fit_on_texts(KERAS_TEXTS)
    assert tok.word_index == KERAS_INDEX
    assert list(tok.word_index) == list(KERAS_INDEX)  # same insertion order too
    assert tok.index_word[4] == "cat"
    assert tok.document_count == 3
    assert dict(tok.word_counts) == {
        "the": 4, "cat": 2, "sat": 1, "on": 1, "mat": 2, "dog": 3, "ate": 1, "cat's": 1, "food": 1, "and": 1,
    }
    assert tok.word_docs["the"] == 2 and tok.word_docs["dog"] == 2 and tok.word_docs["and"] == 1
    assert tok.index_docs[2] == 2
    assert tok.text_to_word_sequence("Dog? Dog... CAT\tand\nmat") == ["dog", "dog", "cat", "and", "mat"]


def test_keras_texts_to_sequences_num_words_and_oov():
    probe = ["the cat ate a fish", "Dog, mat & sat!"]
    tok = KerasTokenizer(num_words=6).fit_on_texts(KERAS_TEXTS)
    # indices >= num_words (ate=8, sat=6) and unseen words (a, fish) -> OOV index 1
    assert tok.texts_to_sequences(probe) == [[2, 4, 1, 1, 1], [3, 5, 1]]
    assert tok.vocab_size == 6
    full = KerasTokenizer(num_words=None).fit_on_texts(KERAS_TEXTS)
    assert full.texts_to_sequences(probe) == [[2, 4, 8, 1, 1], [3, 5, 6]]
    assert full.vocab_size == 12
    # without an OOV token words start at 1 and out-of-range / unseen words are dropped
    no_oov = KerasTokenizer(num_words=6, oov_token=None).fit_on_texts(KERAS_TEXTS)
    assert no_oov.word_index["the"] == 1 and no_oov.word_index["sat"] == 5
    assert no_oov.texts_to_sequences(probe) == [[1, 3], [2, 4, 5]]
    # pre-split input is taken as is
    assert tok.texts_to_sequences([["the", "Cat", "dog"]]) == [[2, 1, 3]]


def test_keras_fit_twice_accumulates_counts():
    tok = KerasTokenizer(num_words=None).fit_on_texts(["a b"]).fit_on_texts(["b c", "c c"])
    assert tok.word_index == {"<OOV>": 1, "c": 2, "b": 3, "a": 4}
    assert tok.document_count == 3 and tok.word_docs["c"] == 2 and tok.word_docs["a"] == 1
    # a changed filter list takes effect (the translation table is cached per filters/split)
    tok.filters = "b"
    assert tok.text_to_word_sequence("abc") == ["a", "c"]


def test_keras_sequences_to_texts():
    tok = KerasTokenizer(num_words=6).fit_on_texts(KERAS_TEXTS)
    assert tok.sequences_to_texts([[2, 4, 8, 0, 3]]) == ["the cat <OOV> <OOV> dog"]
    no_oov = KerasTokenizer(num_words=6, oov_token=None).fit_on_texts(KERAS_TEXTS)
    assert no_oov.sequences_to_texts([[1, 3, 7, 0]]) == ["the cat"]


def test_keras_oov_token_also_a_word_quirk():
    # Keras builds word_index with dict(zip(...)): if the OOV token is also a counted word, its later rank wins.
    tok = KerasTokenizer(num_words=None, oov_token="x", filters="").fit_on_texts(["x y y"])
    assert tok.word_index == {"x": 3, "y": 2}
    assert tok.texts_to_sequences(["z y"]) == [[3, 2]]


def test_keras_ranking_on_real_text(rt_lines):
    tok = KerasTokenizer(num_words=500).fit_on_texts(rt_lines)
    counts: Counter[str] = Counter()
    first_seen: dict[str, int] = {}
    for line in rt_lines:
        for w in tok.text_to_word_sequence(line):
            counts[w] += 1
            first_seen.setdefault(w, len(first_seen))
    expected = sorted(counts, key=lambda w: (-counts[w], first_seen[w]))
    assert list(tok.word_index)[1:] == expected
    assert [tok.word_index[w] for w in expected[:3]] == [2, 3, 4]
    seqs = tok.texts_to_sequences(rt_lines)
    assert max(max(s) for s in seqs if s) == 499
    assert all(len(s) == len(tok.text_to_word_sequence(t)) for s, t in zip(seqs, rt_lines, strict=True))


def test_keras_json_round_trip(tmp_path, rt_lines):
    tok = KerasTokenizer(num_words=300).fit_on_texts(rt_lines)
    path = tmp_path / "keras.json"
    tok.save(path)
    again = KerasTokenizer.load(path)
    assert again.word_index == tok.word_index and list(again.word_counts.items()) == list(tok.word_counts.items())
    assert again.texts_to_sequences(rt_lines[:50]) == tok.texts_to_sequences(rt_lines[:50])
    assert again.document_count == 400 and dict(again.index_docs) == dict(tok.index_docs)
    with pytest.raises(CheckpointError, match="holds a KerasTokenizer, expected a WordTokenizer"):
        WordTokenizer.load(path)


def test_keras_bad_arguments():
    with pytest.raises(ConfigError, match="num_words"):
        KerasTokenizer(num_words=0)
    with pytest.raises(DataError, match="wrap it in a list"):
        KerasTokenizer().fit_on_texts("one string")


def test_pad_sequences_keras_semantics():
    seqs = [[1], [2, 3], [4, 5, 6]]
    # Keras' documented example (its defaults are "pre")
    assert pad_sequences(seqs, padding="pre", truncating="pre").tolist() == [[0, 0, 1], [0, 2, 3], [4, 5, 6]]
    assert pad_sequences(seqs).tolist() == [[1, 0, 0], [2, 3, 0], [4, 5, 6]]  # our defaults: post
    assert pad_sequences(seqs, maxlen=2).tolist() == [[1, 0], [2, 3], [4, 5]]
    assert pad_sequences(seqs, maxlen=2, truncating="pre").tolist() == [[1, 0], [2, 3], [5, 6]]
    assert pad_sequences(seqs, maxlen=2, padding="pre", truncating="post").tolist() == [[0, 1], [2, 3], [4, 5]]
    assert pad_sequences([[], [7]], maxlen=3, value=-1).tolist() == [[-1, -1, -1], [7, -1, -1]]
    out = pad_sequences(seqs, maxlen=4)
    assert out.shape == (3, 4) and out.dtype == np.int64
    assert pad_sequences([], maxlen=5).shape == (0, 5)
    with pytest.raises(ConfigError, match="padding must be 'pre' or 'post'"):
        pad_sequences(seqs, padding="end")
    with pytest.raises(ConfigError, match="maxlen"):
        pad_sequences(seqs, maxlen=0)


# ----------------------------------------------------------------------------------------------- BPE
def test_bpe_byte_level_round_trip(tmp_path, shakespeare):
    tok = BPETokenizer.train(shakespeare, vocab_size=600)
    assert tok.vocab_size == 600
    assert [tok.token_to_id(t) for t in ("<pad>", "<unk>", "<bos>", "<eos>")] == [0, 1, 2, 3]
    lines = list(itertools.islice(shakespeare, 200))
    for text in [*lines, "  Ünïcödé and 東京 — never seen before!\n", ""]:
        assert tok.decode(tok.encode(text)) == text  # byte level: exact round trip, no unknowns
    ids = tok.encode("To be, or not to be", add_bos=True, add_eos=True)
    assert ids[0] == 2 and ids[-1] == 3
    assert tok.decode(ids) == "To be, or not to be"
    assert "<bos>" in tok.decode(ids, skip_special=False)
    # merges compress: far fewer tokens than bytes on training text
    text = "\n".join(lines)
    assert len(tok.encode(text)) < 0.5 * len(text.encode("utf-8"))
    path = tmp_path / "bpe.json"
    tok.save(path)
    again = BPETokenizer.load(path)
    assert again == tok and again.encode(text) == tok.encode(text)
    assert load_tokenizer(path).encode_batch(lines[:5]) == [tok.encode(t) for t in lines[:5]]


def test_bpe_whitespace(shakespeare):
    tok = BPETokenizer.train(shakespeare, vocab_size=800, pre_tokenizer="whitespace")
    assert tok.token_to_id("<unk>") == 1
    assert tok.tokenize("To be, or not")[:2] == ["To</w>", "be</w>"]
    assert tok.decode(tok.encode("To be, or not to be")) == "To be , or not to be"
    assert tok.encode("Zebra€")[-1] == 1  # unseen characters map to <unk>
    assert tokenizer_from_dict(tok.to_dict()) == tok


def test_bpe_vocab_size_too_large_names_reachable_size(shakespeare):
    small = list(itertools.islice(shakespeare, 20))
    with pytest.raises(DataError, match=r"vocab_size=5000 is larger than this corpus allows.*use vocab_size <= (\d+)") as info:
        BPETokenizer.train(small, vocab_size=5000, min_frequency=1)
    reachable = int(str(info.value).rsplit("<= ", 1)[1].split(" ")[0])
    assert 300 < reachable < 5000
    assert BPETokenizer.train(small, vocab_size=reachable, min_frequency=1).vocab_size == reachable


def test_bpe_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="pre_tokenizer"):
        BPETokenizer.train(["a b"], vocab_size=300, pre_tokenizer="sentencepiece")
    with pytest.raises(ConfigError, match="vocab_size"):
        BPETokenizer.train(["a b"], vocab_size=3)
    with pytest.raises(DataError, match="no text"):
        BPETokenizer.train([], vocab_size=300)


def test_load_tokenizer_errors(tmp_path, shakespeare):
    path = tmp_path / "tok.json"
    BPETokenizer.train(itertools.islice(shakespeare, 300), vocab_size=400).save(path)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match=r"tok.json: not valid JSON.*truncated"):
        load_tokenizer(path)
    with pytest.raises(CheckpointError, match="tokenizer file not found"):
        load_tokenizer(tmp_path / "missing.json")
    path.write_text('{"type": "sentencepiece"}')
    with pytest.raises(CheckpointError, match="unknown tokenizer type 'sentencepiece'"):
        load_tokenizer(path)
    path.write_text('{"type": "word", "lowercase": true}')
    with pytest.raises(CheckpointError, match="incomplete or malformed"):
        load_tokenizer(path)
    path.write_text('{"type": "bpe", "tokenizer": {"model": 1}}')
    with pytest.raises(CheckpointError, match="invalid BPE tokenizer"):
        load_tokenizer(path)


def test_keras_filters_beyond_ascii_and_multichar_split():
    tok = KerasTokenizer(filters="—!", split=" ")
    assert tok.text_to_word_sequence("Wait—what! Ünïcode…") == ["wait", "what", "ünïcode…"]
    tok = KerasTokenizer(filters=",", split="||")
    assert tok.text_to_word_sequence("a,b||c d") == ["a", "b", "c d"]


# --- one tokenizer interface: whitespace, detokenize, the segmenter hook ----------------------------------


def test_whitespace_tokenizer_lives_with_the_others_and_round_trips():
    from lmlab.data.lm import WhitespaceTokenizer as OldName
    from lmlab.data.tokenizers import WhitespaceTokenizer

    tok = WhitespaceTokenizer(lowercase=True)
    assert OldName is WhitespaceTokenizer
    assert tok.tokenize("The <unk> cat\tSAT") == ["the", "<unk>", "cat", "sat"]
    assert tok.detokenize(["a", "b"]) == "a b"
    assert tokenizer_from_dict({"type": "whitespace", "lowercase": True}) == tok  # the LM's old tokenizer.json


def test_every_tokenizer_detokenizes():
    assert WordTokenizer().detokenize(["hello", ",", "world", "!"]) == "hello, world!"
    assert CharTokenizer().detokenize(list("ab c")) == "ab c"
    assert VectorWordTokenizer().detokenize(["a", "b"]) == "a b"


@pytest.fixture
def toy_segmenter():
    from lmlab.data.tokenizers import SEGMENTERS, register_segmenter

    def pairs(run: str) -> list[str]:  # a toy "word segmenter": two characters per word
        return [run[i : i + 2] for i in range(0, len(run), 2)]

    register_segmenter("pairs", pairs)
    yield "pairs"
    SEGMENTERS.pop("pairs")


def test_segmenter_default_keeps_the_old_split(toy_segmenter):
    text = "我喜欢这部电影 great film"
    assert WordTokenizer().tokenize(text) == ["我", "喜", "欢", "这", "部", "电", "影", "great", "film"]
    assert VectorWordTokenizer().tokenize(text) == ["我喜欢这部电影", "great", "film"]  # word2vec: a run is a word
    # a file written before the hook existed reads with the old behaviour
    old = {"type": "word", "lowercase": True, "strip_html": True, "split_cjk": True}
    assert tokenizer_from_dict(old).segmenter == "char"
    assert tokenizer_from_dict({"type": "vector_words", "lowercase": True, "mode": "words"}).segmenter == "none"


def test_registered_segmenter_splits_han_runs_and_is_saved(toy_segmenter, tmp_path):
    text = "我喜欢这部电影, great film"
    tok = WordTokenizer(segmenter=toy_segmenter)
    assert tok.tokenize(text) == ["我喜", "欢这", "部电", "影", ",", "great", "film"]
    assert VectorWordTokenizer(segmenter=toy_segmenter).tokenize(text) == ["我喜", "欢这", "部电", "影", "great", "film"]
    assert tok.to_dict()["segmenter"] == "pairs"
    tok.save(tmp_path / "tok.json")
    again = load_tokenizer(tmp_path / "tok.json")
    assert again == tok and again.tokenize(text) == tok.tokenize(text)


def test_unknown_segmenter_is_a_config_error_listing_the_registered_ones(toy_segmenter):
    with pytest.raises(ConfigError, match=r"unknown segmenter 'thulac'; registered: char, none, pairs \(optional: jieba"):
        WordTokenizer(segmenter="thulac")
    with pytest.raises(ConfigError, match="unknown segmenter"):
        tokenizer_from_dict({"type": "word", "lowercase": True, "strip_html": True, "split_cjk": True, "segmenter": "x"})


def test_word_vector_configs_reach_the_segmenter_hook(toy_segmenter):
    from types import SimpleNamespace

    from lmlab.data.sentences import tokenizer_for

    old = SimpleNamespace(lowercase=True, tokenizer="words")  # today's configs: no segmenter field
    assert tokenizer_for(old).tokenize("我喜欢这部 film") == ["我喜欢这部", "film"]
    new = SimpleNamespace(lowercase=True, tokenizer="words", segmenter=toy_segmenter)
    assert tokenizer_for(new).tokenize("我喜欢这部 film") == ["我喜", "欢这", "部", "film"]
