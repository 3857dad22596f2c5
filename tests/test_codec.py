"""The one text layer: ``Codec`` = tokenizer + vocabulary + plain options, and its JSON round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmlab.data.codec import Codec
from lmlab.data.tokenizers import BPETokenizer, CharTokenizer, IdTokenizer, WhitespaceTokenizer, WordTokenizer
from lmlab.errors import CheckpointError, ConfigError, DataError

TEXTS = ["the cat sat on the mat .", "the dog sat .", "a cat , a dog !"]


def test_word_codec_fits_encodes_and_decodes():
    codec = Codec(WordTokenizer(), add_bos=True, add_eos=True).fit(TEXTS)
    assert codec.vocab.itos[:5] == ["<pad>", "<unk>", "<bos>", "<eos>", "the"]
    ids = codec.encode("The cat, a zebra!")
    assert ids[0] == codec.bos_id == 2 and ids[-1] == 3 and codec.unk_id in ids
    assert codec.decode(ids) == "the cat, a!"  # specials (<unk> too) dropped, punctuation joined
    assert Codec(WordTokenizer(), codec.vocab, skip="framing").decode(ids) == "the cat, a <unk>!"
    assert codec.encode_batch(["the dog", "a cat"]) == [codec.encode("the dog"), codec.encode("a cat")]
    assert codec.vocab_size == len(codec.vocab) and codec.kind == "word"


def test_lines_rule_and_eos_per_line():
    codec = Codec(WhitespaceTokenizer(), split_lines="eos", join="lines", on_unknown="warn").fit(["a b\nb c"])
    ids = codec.encode("a b\nc")
    eos = codec.vocab.eos_id
    assert ids.count(eos) == 2 and ids[2] == eos
    assert codec.decode(ids) == " a b\nc\n"
    assert codec.start_ids() == [eos]
    with pytest.warns(UserWarning, match="not in the vocabulary"):
        codec.encode_prompt("a zebra")


def test_char_codec_errors_on_unknown_prompt_characters():
    codec = Codec(CharTokenizer(), on_unknown="error").fit(["abc\n"])
    assert codec.decode(codec.encode("cab")) == "cab"
    assert codec.start_ids() == codec.encode("\n")
    with pytest.raises(DataError, match="character"):
        codec.encode_prompt("abz")


def test_truncation_and_stop_at_end():
    codec = Codec(WhitespaceTokenizer(), max_len=3, truncating="pre").fit(["a b c d"])
    assert codec.encode("a b c d") == codec.vocab.encode(["b", "c", "d"])
    stop = Codec(WhitespaceTokenizer(), codec.vocab, skip="none", end_ids=[3, 0], stop_at_end=True, join="space")
    assert stop.decode([4, 5, 3, 6]) == "a b" and stop.eos_id == 3


def test_own_id_tokenizers():
    oracle = Codec(IdTokenizer(10), join="space")
    assert oracle.encode("1 9") == [1, 9] and oracle.decode([1, 9]) == "1 9" and oracle.vocab_size == 10
    with pytest.raises(DataError, match="outside"):
        oracle.encode("12")
    bpe = Codec(BPETokenizer.train(TEXTS * 20, vocab_size=270), skip="framing")
    ids = bpe.encode("the cat sat")
    assert bpe.vocab is None and bpe.decode([2, *ids, 3, 0]) == "the cat sat"
    assert bpe.encode_batch(["the cat sat"]) == [ids]


@pytest.mark.parametrize("kind", ["word", "bpe", "ids"])
def test_save_load_round_trip(tmp_path, kind):
    if kind == "word":
        codec = Codec(WordTokenizer(lowercase=False), add_eos=True, max_len=7).fit(TEXTS, max_size=8)
    elif kind == "bpe":
        codec = Codec(BPETokenizer.train(TEXTS * 20, vocab_size=270), split_lines="keepends")
    else:
        codec = Codec(IdTokenizer(50), end_ids=[3], stop_at_end=True)
    codec.save(tmp_path / "codec.json")
    again = Codec.load(tmp_path / "codec.json")
    assert again == codec and again.options() == codec.options()
    text = "the cat sat .\nthe dog" if kind != "ids" else "1 2 3 4"
    assert again.encode(text) == codec.encode(text)
    assert again.decode(codec.encode(text)) == codec.decode(codec.encode(text))


def test_bad_options_and_files(tmp_path):
    with pytest.raises(ConfigError, match="split_lines must be one of none, eos, keepends"):
        Codec(WordTokenizer(), split_lines="lines")
    (tmp_path / "x.json").write_text('{"format": "lmlab.codec", "format_version": 99}')
    with pytest.raises(CheckpointError, match="format_version 99"):
        Codec.load(tmp_path / "x.json")
    with pytest.raises(CheckpointError, match="not found|missing"):
        Codec.load(tmp_path / "none.json")


# --- the codec files of run directories written before the one text layer (tests/data/old_codecs, made by
# --- the old code from the same text) still load and give the same ids and text -----------------------------

OLD = Path(__file__).parent / "data" / "old_codecs"
PROBE = ["First Citizen:\nBefore we proceed any further, hear me speak.", "What say you, zebra?", "", "我喜欢 Rome!"]


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads((OLD / "expected.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_seq2seq_old_codec_files_load(kind, expected, tmp_path):
    from lmlab.data.parallel import load_text_codec

    exp = expected[f"seq2seq-{kind}"]
    codec = load_text_codec(OLD / f"seq2seq-{kind}" / "src_codec.json")
    ids = [codec.encode(p) for p in PROBE]
    assert ids == exp["ids"] and codec.vocab_size == exp["vocab_size"]
    assert [codec.decode([2, *i, 3, 0]) for i in ids] == exp["text"]
    assert [codec.pieces(i) for i in ids] == exp["pieces"]
    codec.save(tmp_path / "src_codec.json")  # new runs: the uniform format, read by the same loader
    assert load_text_codec(tmp_path / "src_codec.json").encode_batch(PROBE) == exp["ids"]


@pytest.mark.parametrize("kind", ["whitespace", "word"])
def test_seqgan_old_vocab_files_load(kind, expected):
    from lmlab.data.sentence_rows import sentence_codec
    from lmlab.data.vocab import Vocab

    exp = expected[f"gan-{kind}"]
    vocab = Vocab.load(OLD / f"gan-{kind}" / "vocab.json")  # a SeqGAN run keeps vocab.json; the tokenizer is in config
    codec = sentence_codec(vocab, len(vocab), vocab.eos_id, vocab.pad_id, kind, True)
    ids = [codec.encode(p) for p in PROBE]
    assert ids == exp["ids"] and codec.end_ids == exp["end_ids"]
    assert [codec.decode([*i, 3, 5, 0]) for i in ids] == exp["text"]
    oracle = sentence_codec(None, 20)
    assert oracle.encode("1 19 4") == expected["gan-oracle"]["ids"]
    assert oracle.decode([1, 19, 4, 3]) == expected["gan-oracle"]["text"]


@pytest.mark.parametrize("kind", ["word", "keras"])
def test_classify_old_tokenizer_files_load(kind, expected):
    from lmlab.data.classification import ClassifyDataConfig, TextEncoder

    exp = expected[f"classify-{kind}"]
    cfg = ClassifyDataConfig(**exp["cfg"])
    old = json.loads((OLD / f"classify-{kind}" / "tokenizer.json").read_text(encoding="utf-8"))
    enc = TextEncoder.from_dict(old, cfg)
    assert enc.encode(PROBE) == exp["ids"] and enc.vocab_size == exp["vocab_size"] and enc.itos() == exp["itos"]
    again = TextEncoder.from_dict(json.loads(json.dumps(enc.to_dict())), cfg)  # new runs: the uniform codec JSON
    assert enc.to_dict()["format"] == "lmlab.codec" and again.encode(PROBE) == exp["ids"]


@pytest.mark.parametrize("kind", ["whitespace", "word", "char", "bpe"])
def test_rnn_lm_old_run_files_load(kind, expected, tmp_path):
    import shutil
    import warnings

    from lmlab.data.lm import LMCodec

    exp = expected[f"lm-{kind}"]
    codec = LMCodec.load(OLD / f"lm-{kind}", kind)  # tokenizer.json (+ vocab.json) as the old code wrote them
    ids, unk = codec.encode_text(PROBE[0] + "\n<unk> zebra\n")
    assert ids.tolist() == exp["ids"] and unk == exp["unk"] and codec.vocab_size == exp["vocab_size"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert [codec.encode_prompt(p) for p in PROBE[:2]] == exp["prompts"]
    assert codec.decode(exp["ids"]) == exp["text"] and codec.start_ids() == exp["start"]
    codec.save(tmp_path)  # new runs keep the same two files
    assert LMCodec.load(tmp_path, kind).encode_text(PROBE[0])[0].tolist() == codec.encode_text(PROBE[0])[0].tolist()
    shutil.rmtree(tmp_path)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_gpt_old_run_files_load(kind, expected, tmp_path):
    from lmlab.data.tokens import TokenCodec

    exp = expected[f"gpt-{kind}"]
    codec = TokenCodec.load(OLD / f"gpt-{kind}")
    ids = [codec.encode(p) for p in PROBE]
    assert ids == exp["ids"] and [codec.decode(i) for i in ids] == exp["text"]
    assert codec.start_ids() == exp["start"] and codec.vocab_size == exp["vocab_size"] and codec.kind == kind
    codec.save(tmp_path)
    assert TokenCodec.load(tmp_path).encode_batch(PROBE) == exp["ids"]


def test_fit_keep_tokens_encodes_the_fitted_texts_once_with_identical_ids(monkeypatch):
    """The classifier fits its vocabulary on the training texts and encodes them next: with keep_tokens the second
    pass reuses the first pass's tokens (each text tokenized once) and gives exactly the ids of a fresh encode."""
    from lmlab.data.codec import Codec
    from lmlab.data.tokenizers import WordTokenizer

    texts = ["A gorgeous, witty film.", "<br />Dull and slow...", "witty but slow", "a film"]
    plain = Codec(WordTokenizer(lowercase=True, strip_html=True), max_len=3).fit(texts)
    kept = Codec(WordTokenizer(lowercase=True, strip_html=True), max_len=3).fit(texts, keep_tokens=True)
    calls = []
    real = kept.tokenizer.tokenize
    monkeypatch.setattr(kept.tokenizer, "tokenize", lambda t: (calls.append(t), real(t))[1])
    assert kept.encode_batch(texts) == plain.encode_batch(texts) and calls == []  # reused, same ids
    assert kept.encode_batch(texts) == plain.encode_batch(texts) and len(calls) == len(texts)  # used once only
    other = [t.upper() for t in texts]  # other string objects: tokenized as usual
    assert kept.encode_batch(other) == plain.encode_batch(other)
