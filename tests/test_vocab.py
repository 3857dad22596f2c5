"""Vocab: ordering rules, min_freq / max_size, encode/decode, JSON round trip and damaged files."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import pytest

from lmlab.data import DEFAULT_SPECIALS, Vocab, WordTokenizer, build_vocab, open_text
from lmlab.errors import CheckpointError, ConfigError, DataError


@pytest.fixture(scope="module")
def rt_tokens(shared_data: Path) -> list[list[str]]:
    tok = WordTokenizer()
    with open_text(shared_data / "rt-polarity" / "rt-polarity.neg", encoding="cp1252") as f:
        return [tok.tokenize(line) for line in itertools.islice(f, 500)]


def test_specials_first_then_count_then_first_seen():
    vocab = build_vocab([["b", "a", "c"], ["a", "d", "c", "b"], ["e", "a"]])
    # counts: a 3, b 2, c 2, d 1, e 1; ties (b/c, d/e) keep first-seen order
    assert vocab.itos == ["<pad>", "<unk>", "<bos>", "<eos>", "a", "b", "c", "d", "e"]
    assert vocab.stoi["a"] == 4 and len(vocab) == 9
    assert (vocab.pad_id, vocab.unk_id, vocab.bos_id, vocab.eos_id) == (0, 1, 2, 3)
    assert vocab.counts["a"] == 3 and vocab.counts["<pad>"] == 0
    assert "a" in vocab and "z" not in vocab


def test_min_freq_max_size_and_custom_specials(rt_tokens):
    counts = Counter(t for toks in rt_tokens for t in toks)
    full = build_vocab(rt_tokens)
    assert len(full) == len(counts) + 4
    frequent = build_vocab(rt_tokens, min_freq=3)
    assert set(frequent.itos[4:]) == {t for t, c in counts.items() if c >= 3}
    capped = build_vocab(rt_tokens, max_size=100)
    assert len(capped) == 100 and capped.itos == full.itos[:100]
    counts_in_order = [capped.counts[t] for t in capped.itos[4:]]
    assert counts_in_order == sorted(counts_in_order, reverse=True)
    plain = build_vocab(rt_tokens, specials=["<unk>"], max_size=50)
    assert plain.itos[0] == "<unk>" and plain.unk_id == 0 and plain.pad_id is None and len(plain) == 50
    # a special token that also occurs as text is not duplicated
    assert build_vocab([["<unk>", "x"]]).itos == [*DEFAULT_SPECIALS, "x"]


def test_encode_decode(rt_tokens):
    vocab = build_vocab(rt_tokens, min_freq=2)
    sentence = rt_tokens[0]
    ids = vocab.encode(sentence)
    decoded = vocab.decode(ids)
    assert decoded == [t if t in vocab else "<unk>" for t in sentence]
    assert vocab.encode(["qwertyuiop"]) == [1] and vocab["qwertyuiop"] == 1
    framed = vocab.encode(["the"], add_bos=True, add_eos=True)
    assert framed == [2, vocab.stoi["the"], 3]
    assert vocab.decode(framed, skip_specials=True) == ["the"]
    with pytest.raises(DataError, match="out of range"):
        vocab.decode([len(vocab)])
    with pytest.raises(DataError, match="tokenize it first"):
        vocab.encode("the film")
    strict = Vocab(["a"], specials=["<pad>"], unk_token=None)
    with pytest.raises(DataError, match="not in the vocabulary"):
        strict.encode(["b"])
    with pytest.raises(ConfigError, match="no <bos>"):
        strict.encode(["a"], add_bos=True)


def test_build_vocab_bad_input():
    with pytest.raises(DataError, match="item 0 is a string"):
        build_vocab(["a sentence", "another"])
    with pytest.raises(DataError, match="got a string"):
        build_vocab("abc")
    with pytest.raises(ConfigError, match="min_freq"):
        build_vocab([["a"]], min_freq=0)
    with pytest.raises(ConfigError, match="max_size"):
        build_vocab([["a"]], max_size=2)
    with pytest.raises(ConfigError, match="unk_token"):
        build_vocab([["a"]], specials=["<pad>"])
    # a generator is fine: build_vocab reads its input once
    assert len(build_vocab(t.split() for t in ["a b", "b c"])) == 7


def test_save_load_round_trip(tmp_path, rt_tokens):
    vocab = build_vocab(rt_tokens, min_freq=2)
    path = tmp_path / "sub" / "vocab.json"
    vocab.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["vocab.json"]  # atomic: no temp file left behind
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["format_version"] == 1 and data["itos"][:4] == list(DEFAULT_SPECIALS)
    again = Vocab.load(path)
    assert again == vocab and again.counts == vocab.counts
    assert again.encode(rt_tokens[3]) == vocab.encode(rt_tokens[3])
    # non-ASCII tokens survive (the rt-polarity negatives contain cp1252 punctuation)
    assert any(not t.isascii() for t in again.itos)


def test_damaged_files_raise_checkpoint_error(tmp_path, rt_tokens):
    path = tmp_path / "vocab.json"
    build_vocab(rt_tokens).save(path)
    text = path.read_text(encoding="utf-8")
    path.write_text(text[: len(text) // 3], encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"vocab.json: not valid JSON .*truncated or corrupt"):
        Vocab.load(path)
    with pytest.raises(CheckpointError, match=r"missing.json: vocabulary file not found"):
        Vocab.load(tmp_path / "missing.json")
    data = json.loads(text)
    for change, message in [
        ({"format_version": 99}, "format_version 99 is not supported"),
        ({"format": "other"}, "not an lmlab vocabulary"),
        ({"itos": ["a", "b"]}, "malformed vocabulary"),
        ({"counts": [1, 2]}, "malformed vocabulary"),
        ({"itos": None}, "malformed vocabulary"),
    ]:
        path.write_text(json.dumps({**data, **change}), encoding="utf-8")
        with pytest.raises(CheckpointError, match=message) as info:
            Vocab.load(path)
        assert str(path) in str(info.value)
    broken = dict(data)
    del broken["specials"]
    path.write_text(json.dumps(broken), encoding="utf-8")
    with pytest.raises(CheckpointError, match="malformed vocabulary"):
        Vocab.load(path)


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "vocab.json"
    old = build_vocab([["a", "b"]])
    old.save(path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("lmlab.data.vocab.os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        build_vocab([["c"]]).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.json"]
