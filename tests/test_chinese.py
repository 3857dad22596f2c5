"""Chinese text: jieba segmentation as a tokenizer option, the auto segmenter, user dictionaries, NFKC, and the
long-token warning, through classify and word vectors on real slices of ../shared/data/chinese."""

from __future__ import annotations

import csv
import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest

from lmlab.cli import main
from lmlab.data import tokenizers as tk
from lmlab.data.tokenizers import VectorWordTokenizer, WordTokenizer, resolve_segmenter, tokenizer_from_dict
from lmlab.errors import CheckpointError, ConfigError

pytest.importorskip("jieba")

TINY = ["model.embed_dim=16", "model.lstm_dims=[8, 8]", "model.dense_dim=8", "train.progress=false",
        "train.tensorboard=false", "train.num_threads=1", "epochs=1"]


@pytest.fixture(scope="module")
def reviews(shared_data, tmp_path_factory) -> Path:
    """300 real Chinese reviews with their labels (CSV: text,label)."""
    path = tmp_path_factory.mktemp("zh") / "reviews.csv"
    with gzip.open(shared_data / "chinese" / "reviews" / "train.csv.gz", "rt", encoding="utf-8") as src:
        rows = list(csv.reader(src))[:301]
    with open(path, "w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


@pytest.fixture(scope="module")
def daily(shared_data, tmp_path_factory) -> Path:
    """The first 1,500 paragraphs of People's Daily (January 1998), unsegmented."""
    path = tmp_path_factory.mktemp("zh") / "raw.txt"
    with gzip.open(shared_data / "chinese" / "peoples-daily-1998" / "raw.txt.gz", "rt", encoding="utf-8") as src:
        path.write_text("".join(line for _, line in zip(range(1500), src, strict=False)), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------ tokenizers
def test_jieba_segments_words_normalises_full_width_and_keeps_punctuation():
    tok = WordTokenizer(segmenter="jieba")
    assert tok.tokenize("我爱北京天安门，１９９８年ＡＢＣ公司！“好”《书》") == [
        "我", "爱", "北京", "天安门", ",", "1998", "年", "abc", "公司", "!", "“", "好", "”", "《", "书", "》"]
    assert VectorWordTokenizer(segmenter="jieba").tokenize("我爱北京天安门，《人民日报》。") == [
        "我", "爱", "北京", "天安门", "人民日报"]
    assert "".join(tok.tokenize("中華民國的經濟")) == "中華民國的經濟"  # traditional characters stay traditional
    assert tokenizer_from_dict(tok.to_dict()) == tok and tok.to_dict()["nfkc"] is True


def test_old_defaults_unchanged():
    """char / none tokenizers: no NFKC, no new keys in their JSON (runs saved before read and write the same)."""
    assert WordTokenizer().tokenize("北京，１９") == ["北", "京", "，", "１９"]
    assert WordTokenizer().to_dict() == {"type": "word", "lowercase": True, "strip_html": True, "split_cjk": True,
                                         "segmenter": "char"}
    assert VectorWordTokenizer().to_dict() == {"type": "vector_words", "lowercase": True, "mode": "words",
                                               "segmenter": "none"}
    assert WordTokenizer(segmenter="char", nfkc=True).tokenize("ＡＢ１") == ["ab1"]


def test_auto_detects_han_text_both_ways(monkeypatch):
    lines: list[str] = []
    assert resolve_segmenter("auto", ["我们今天去北京看电影。"], "char", "word", lines.append) == "jieba"
    assert lines == ["tokenizer: word, segmenter: jieba (auto: 100% Han characters)"]
    lines.clear()
    assert resolve_segmenter("auto", ["a gorgeous and moving film"], "none", "words", lines.append) == "none"
    assert resolve_segmenter("auto", ["an English text with one 字 in it, mostly"], "char", "word", lines.append) == "char"
    assert lines == ["tokenizer: word, segmenter: char (auto: 3% Han characters)"]
    monkeypatch.setattr(tk, "_jieba_available", lambda: False)
    monkeypatch.setitem(tk._LAZY_SEGMENTERS, "jieba", (lambda: False, tk._jieba_segmenter))
    assert resolve_segmenter("auto", ["我们今天去北京看电影。"], "none") == "char"  # no jieba: characters
    with pytest.raises(ConfigError, match=r"pip install 'lmlab\[zh\]'"):
        WordTokenizer(segmenter="jieba")


def test_user_dictionary_round_trip(tmp_path):
    text = "蓝鲸星球科技发布新产品"
    assert "蓝鲸星球科技" not in WordTokenizer(segmenter="jieba").tokenize(text)
    udict = tmp_path / "user.dict"
    udict.write_text("蓝鲸星球科技 10 nz\n", encoding="utf-8")
    tok = WordTokenizer(segmenter="jieba", user_dict=str(udict))
    assert tok.tokenize(text)[0] == "蓝鲸星球科技"
    assert "蓝鲸星球科技" not in WordTokenizer(segmenter="jieba").tokenize(text)  # jieba's global dict untouched
    saved = tok.to_dict()
    assert saved["user_dict"] == str(udict) and len(saved["user_dict_sha256"]) == 64
    again = tokenizer_from_dict(json.loads(json.dumps(saved)))
    assert again == tok and again.tokenize(text) == tok.tokenize(text)
    udict.write_text("蓝鲸星球 10 nz\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match="changed since this run was trained"):
        tokenizer_from_dict(saved)
    udict.unlink()
    with pytest.raises(CheckpointError, match="is missing"):
        tokenizer_from_dict(saved)
    with pytest.raises(ConfigError, match="not a file"):
        WordTokenizer(segmenter="jieba", user_dict=str(udict))
    with pytest.raises(ConfigError, match="works with segmenter='jieba'"):
        WordTokenizer(segmenter="char", user_dict="x.dict")


# ------------------------------------------------------------------------------------------------ families
@pytest.fixture(scope="module")
def zh_clf(reviews, tmp_path_factory) -> tuple[Path, str]:
    """A tiny classifier trained through the CLI on the reviews with data.tokenizer=word (segmenter auto), and
    what it printed; the classify test and the HTTP test share it."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("clf") / "zh-clf"  # the server names a model by its folder
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["classify", "train", "--data", str(reviews), "--preset", "seed-lstm", "--out", str(out), *TINY,
                     "data.tokenizer=word"]) == 0
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def zh_vec(daily, tmp_path_factory) -> tuple[Path, str]:
    """Word vectors trained through the CLI on the raw People's Daily slice (segmenter auto), and what the command
    printed; the embed test and the HTTP test share them."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("vec") / "zh-vec"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["embed", "train", "--corpus", str(daily), "--out", str(out), "--epochs", "1", "--threads", "1",
                     "--dim", "16"]) == 0
    return out, printed.getvalue()


def test_classify_segments_with_jieba_and_reuses_it_at_load(zh_clf, reviews, tmp_path, capsys):
    from lmlab.pipelines import Classifier
    from lmlab.recipes.classify import ClassifyRecipe

    out, printed = zh_clf
    assert "tokenizer: word, segmenter: jieba (auto: " in printed
    saved = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    assert saved["tokenizer"]["segmenter"] == "jieba" and saved["tokenizer"]["nfkc"] is True
    words = [w for w in saved["vocab"]["itos"] if len(w) > 1 and not w.isascii()]
    assert len(words) > 100  # real words, not characters
    text = "这本书的质量很好，物流也很快！"
    pipe = ClassifyRecipe.load(out)
    assert isinstance(pipe, Classifier)
    codec = pipe.encoder.codec
    assert codec.tokens(text) == WordTokenizer(segmenter="jieba").tokenize(text)
    assert codec.tokens(text) != WordTokenizer().tokenize(text)
    assert set(pipe.predict([text])[0]["probabilities"]) == {"neg", "pos"}
    # the explicit choice wins over auto
    out2 = tmp_path / "chars"
    assert main(["classify", "train", "--data", str(reviews), "--preset", "seed-lstm", "--out", str(out2), *TINY,
                 "data.tokenizer=word", "data.segmenter=char"]) == 0
    # the Keras tokenizer (exactly as Keras) does not segment: a warning names the fix
    out3 = tmp_path / "keras"
    capsys.readouterr()
    assert main(["classify", "train", "--data", str(reviews), "--preset", "seed-lstm", "--out", str(out3), *TINY]) == 0
    assert "use data.tokenizer=word" in capsys.readouterr().out
    assert json.loads((out2 / "tokenizer.json").read_text(encoding="utf-8"))["tokenizer"]["segmenter"] == "char"


def test_embed_auto_segments_people_daily(zh_vec):
    out, printed = zh_vec
    assert "tokenizer: words, segmenter: jieba (auto: " in printed
    cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert cfg["data"]["segmenter"] == "auto" and cfg["tokenizer"]["segmenter"] == "jieba"
    words = json.loads((out / "vocab.json").read_text(encoding="utf-8"))["words"]
    assert {"中国", "经济", "发展", "人民"} <= set(words[:200])


def test_long_token_warning_names_the_fix(daily, tmp_path, capsys):
    out = tmp_path / "w"
    assert main(["embed", "train", "--corpus", str(daily), "--out", str(out), "--epochs", "1", "--threads", "1",
                 "--dim", "16", "data.segmenter=none"]) == 0
    assert re.search(r"warning: the vocabulary is dominated by long tokens.*data\.segmenter=jieba", capsys.readouterr().out)
    assert json.loads((out / "config.json").read_text(encoding="utf-8"))["tokenizer"]["segmenter"] == "none"
    # the Python API (no log) warns; segmented text does not
    from lmlab.data.sentences import encode_corpus, long_token_warning
    from lmlab.models.word2vec import Word2VecConfig

    with pytest.warns(UserWarning, match="dominated by long tokens"):
        encode_corpus(daily.read_text(encoding="utf-8").splitlines(), Word2VecConfig(), tmp_path / "enc")
    assert long_token_warning(["中国", "发展", "的"], np.array([100, 80, 300])) is None
    assert long_token_warning(["english", "words"], np.array([500, 500])) is None


def test_lm_seq2seq_and_gan_word_tokenizers_segment_chinese(tmp_path):
    from lmlab.data.lm import LMCodec, LMDataConfig
    from lmlab.data.parallel import ParallelDataConfig, build_codecs
    from lmlab.data.sentence_rows import SentenceDataConfig, read_sentences, sentence_codec

    logged: list[str] = []
    lm = LMCodec.fit("我们今天去北京看电影。\n人民日报发表社论。\n", LMDataConfig(tokenizer="word"), logged.append)
    assert lm.tokenizer.segmenter == "jieba" and "北京" in lm.vocab
    assert logged == ["tokenizer: word, segmenter: jieba (auto: 100% Han characters)"]
    assert LMCodec.fit("to be or not to be\n", LMDataConfig(tokenizer="word")).tokenizer.segmenter == "char"
    # seq2seq: auto is decided per side (Chinese source, English target)
    src, tgt = build_codecs([("我们今天去北京。", "We go to Beijing today."), ("他喜欢看电影。", "He likes films.")],
                            ParallelDataConfig())
    assert src.tokenizer.segmenter == "jieba" and tgt.tokenizer.segmenter == "char" and "北京" in src.vocab
    # SeqGAN: the resolved choice goes into the run's config (its tokenizer is rebuilt from the config)
    path = tmp_path / "zh.txt"
    path.write_text("我们今天去北京看电影。\n人民日报发表社论。\n", encoding="utf-8")
    data = SentenceDataConfig(path=str(path), tokenizer="word")
    assert data.resolve_segmenter() == "jieba" and data.segmenter == "jieba"
    lines = read_sentences(path, "word", True, 0, data.segmenter)
    assert lines[0] == ["我们", "今天", "去", "北京", "看", "电影", "。"]
    assert sentence_codec(None, 5).tokenizer is not None  # oracle runs unaffected
    from lmlab.data.vocab import build_vocab

    vocab = build_vocab(lines)
    codec = sentence_codec(vocab, len(vocab), vocab.eos_id, vocab.pad_id, "word", True, "auto")  # a run from before
    assert codec.tokenizer.segmenter == "char"


def test_segmenter_key_is_validated_in_every_family_config():
    from lmlab.data.classification import ClassifyDataConfig
    from lmlab.data.lm import LMDataConfig
    from lmlab.data.parallel import ParallelDataConfig
    from lmlab.data.sentence_rows import SentenceDataConfig
    from lmlab.data.sentences import VectorDataConfig

    for cfg in (ClassifyDataConfig(), LMDataConfig(tokenizer="word"), ParallelDataConfig(),
                SentenceDataConfig(tokenizer="word"), VectorDataConfig()):
        assert cfg.segmenter == "auto"
        cfg.validate()
        cfg.segmenter = "jeiba"
        with pytest.raises(ConfigError, match=r"data.segmenter='jeiba' is unknown; choose one of auto, char, jieba"):
            cfg.validate()
        cfg.segmenter, cfg.user_dict = "char", "words.txt"
        with pytest.raises(ConfigError, match="user_dict works with data.segmenter=jieba"):
            cfg.validate()


# ------------------------------------------------------------------------------------------------ detokenization
def test_generated_chinese_is_joined_without_spaces_in_every_family():
    from lmlab.data.lm import LMCodec, LMDataConfig
    from lmlab.data.parallel import ParallelDataConfig, build_codecs
    from lmlab.data.sentence_rows import sentence_codec
    from lmlab.data.tokenizers import join_words
    from lmlab.data.tokens import TokenCodec, TokenDataConfig
    from lmlab.data.vocab import build_vocab
    from lmlab.generation import TextStream

    assert join_words(["我", "爱", "北京", "python", "编程", "。"]) == "我爱北京 python 编程。"
    assert join_words(["to", "be", ",", "or"]) == "to be , or"  # no CJK: exactly " ".join
    tok = WordTokenizer(segmenter="jieba")
    text = "我爱北京天安门，1998 年 abc 公司！“好”《书》我用 python 写代码。"
    assert tok.detokenize(tok.tokenize(text)) == text  # NFKC'd "," is written "，" again after Han
    assert tok.detokenize("he said , ( ok ) .".split()) == "he said, (ok)."  # English unchanged
    # rnn LM ("lines" join, streamed token by token as the server does)
    lm = LMCodec.fit("我们今天去北京看电影。\nto be or not .\n", LMDataConfig(tokenizer="word"))
    ids = lm.encode("我们今天去北京看电影。\nto be or not .\n")
    assert lm.decode(ids) == "我们今天去北京看电影。\nto be or not .\n"
    stream = TextStream(lm.decode)
    assert "".join(stream.push(i) for i in ids) + stream.flush() == lm.decode(ids)
    # seq2seq (each side's tokenizer)
    src, tgt = build_codecs([("We go to Beijing today.", "我们今天去北京。")], ParallelDataConfig())
    assert tgt.decode(tgt.encode("我们今天去北京。")) == "我们今天去北京。"
    assert src.decode(src.encode("We go to Beijing today.")) == "We go to Beijing today."
    # SeqGAN (space join; BLEU still counts words)
    lines = [tok.tokenize("我们今天去北京看电影。")]
    vocab = build_vocab(lines)
    gan = sentence_codec(vocab, len(vocab), vocab.eos_id, vocab.pad_id, "word", True, "jieba")
    ids = gan.encode("我们今天去北京看电影。")
    assert gan.decode(ids) == "我们今天去北京看电影。" and gan.decode_tokens(ids) == lines[0]
    # GPT data preparation (characters): no spaces either
    gpt = TokenCodec.fit(["人民日报发表社论。"], TokenDataConfig())
    assert gpt.decode(gpt.encode("日报发表")) == "日报发表"


# ------------------------------------------------------------------------------------------------ encodings
@pytest.fixture(scope="module")
def daily_gb(daily, tmp_path_factory) -> Path:
    """The People's Daily slice re-encoded to GB18030 (as many Chinese files on disk are)."""
    path = tmp_path_factory.mktemp("gb") / "raw-gb18030.txt"
    lines = daily.read_text(encoding="utf-8").splitlines(keepends=True)[:300]
    path.write_bytes("".join(lines).encode("gb18030"))
    return path


def test_gb18030_read_as_utf8_names_file_line_and_the_fix(daily_gb, tmp_path, capsys):
    from lmlab.data.readers import looks_like_gb18030, open_text

    with pytest.raises(Exception, match=rf"{re.escape(str(daily_gb))}:1: byte 0x.. .*is not valid utf-8 \(the line "
                       r"reads as Chinese in GBK/GB18030\); pass the file's encoding, e\.g\. --encoding gb18030"):
        list(open_text(daily_gb))
    assert list(open_text(daily_gb, "gb18030")) == daily_gb.read_bytes().decode("gb18030").splitlines()
    assert looks_like_gb18030("人民日报".encode("gbk")) and not looks_like_gb18030("café au lait".encode("cp1252"))
    # every family's train command: exit 2 with the one-line message, before any training
    for family in (["embed", "train", "--corpus", str(daily_gb)], ["lm", "train", "--data", str(daily_gb)],
                   ["gpt", "train", "--data", str(daily_gb)], ["gan", "train", "--data", str(daily_gb)]):
        assert main([*family, "--out", str(tmp_path / family[0])]) == 2
        err = capsys.readouterr().err
        assert f"{daily_gb}:1: byte" in err and "--encoding gb18030" in err and "Traceback" not in err, family
    # with the right --encoding it reads and segments
    out = tmp_path / "w"
    assert main(["embed", "train", "--corpus", str(daily_gb), "--encoding", "gb18030", "--out", str(out),
                 "--epochs", "1", "--threads", "1", "--dim", "8"]) == 0
    words = json.loads((out / "vocab.json").read_text(encoding="utf-8"))["words"]
    assert {"中国", "发展"} <= set(words[:300])


def test_gb18030_reviews_classify_with_encoding(reviews, tmp_path, capsys):
    gb = tmp_path / "reviews-gb.csv"
    gb.write_bytes(reviews.read_text(encoding="utf-8").encode("gb18030"))
    assert main(["classify", "train", "--data", str(gb), "--preset", "seed-lstm", "--out", str(tmp_path / "a"),
                 *TINY, "data.tokenizer=word"]) == 2
    assert "--encoding gb18030" in capsys.readouterr().err
    assert main(["classify", "train", "--data", str(gb), "--encoding", "gb18030", "--preset", "seed-lstm",
                 "--out", str(tmp_path / "b"), *TINY, "data.tokenizer=word"]) == 0
    assert "segmenter: jieba" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ the zh tour
def test_zh_tour_at_tiny_scale_writes_a_chinese_report(tmp_path, capsys):
    assert main(["tour", "--lang", "zh", "--scale", "0.02", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "segmenter: jieba (auto: " in out and "测试准确率" in out and "验证损失" in out
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert md.startswith("# lmlab 中文导览报告")
    for title in ("词向量：人民日报 + jieba 分词", "中文情感分类：商品评论", "字级 GPT：人民日报"):
        assert f"## {title}" in md
    assert "| 全部猜多数类" in md and "| 中国 | " in md
    sample = md.split("以“新华社北京”开头采样")[1].split("```")[1]
    assert sample.strip().startswith("新华社北京") and not re.search(r"[\u4e00-\u9fff] [\u4e00-\u9fff]", sample)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<html lang='zh-CN'>" in page and "<title>lmlab 中文导览报告</title>" in page
    assert main(["tour", "--lang", "zh", "--only", "lm"]) == 2  # the Chinese tour's stops: embed, classify, gpt


# ------------------------------------------------------------------------------------------------ HTTP
@pytest.fixture(scope="module")
def zh_runs(zh_clf, zh_vec, tmp_path_factory) -> dict[str, Path]:
    """Tiny Chinese runs: a byte-level BPE GPT (each Han character = 3 byte tokens) that has learnt one
    sentence by heart, and (shared with the tests above) a jieba classifier and jieba word vectors."""
    from lmlab.recipes.gpt import GPTRecipe

    root = tmp_path_factory.mktemp("zh-serve")
    text = root / "periodic.txt"
    text.write_text("中国人民爱和平。\n" * 400, encoding="utf-8")
    GPTRecipe.from_preset("bpe", [
        "data.vocab_size=260", "model.num_layers=1", "model.embed_dim=32", "model.num_heads=2", "model.block_size=32",
        "train.batch_size=8", "train.lr=0.01", "train.max_steps=60", "train.warmup_steps=0", "train.schedule=constant",
        "train.eval_every=0", "train.save_every=0", "train.progress=false", "train.tensorboard=false",
        "train.num_threads=1", "data.val_fraction=0.1"], data=str(text), log=lambda *_: None).train(root / "zh-gpt")
    return {"gpt": root / "zh-gpt", "clf": zh_clf[0], "vec": zh_vec[0]}


def test_http_chinese_in_and_out_and_streaming_never_splits_a_character(zh_runs):
    from fastapi.testclient import TestClient

    from lmlab.recipes.gpt import GPTRecipe
    from lmlab.serve import create_app

    codec = GPTRecipe.load(zh_runs["gpt"]).codec
    assert all(codec.decode([i]) == "\ufffd" for i in codec.encode("人民"))  # partial UTF-8 bytes, every one
    with TestClient(create_app(list(zh_runs.values()))) as client:
        body = {"model": "zh-gpt", "prompt": "中国", "max_tokens": 30, "temperature": 0}
        whole = client.post("/v1/completions", json=body)
        assert whole.status_code == 200 and whole.headers["content-type"] == "application/json"
        text = whole.json()["choices"][0]["text"]
        assert text.startswith("人民爱和平。\n中国人")
        with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            raw = b"".join(response.iter_bytes())
        events = [e for e in (block[len(b"data: "):] for block in raw.split(b"\n\n") if block) if e != b"[DONE]"]
        pieces = [json.loads(e.decode("utf-8"))["choices"][0]["text"] for e in events]  # strict UTF-8 on the wire
        assert "".join(pieces) == text and len([p for p in pieces if p]) > 3
        assert not any("\ufffd" in p for p in pieces[:-2])  # whole characters only (the end may cut one)
        assert "人" in raw.decode("utf-8")  # UTF-8 itself, not \u escapes
        # classifier: Chinese in, segmented as in training; labels out
        reply = client.post("/v1/classify", json={"model": "zh-clf", "texts": ["这本书的质量很好，物流也很快！"]})
        assert reply.status_code == 200 and reply.json()["results"][0]["label"] in ("neg", "pos")
        # word vectors: Chinese words in and out
        reply = client.post("/v1/embeddings/similar", json={"model": "zh-vec", "positive": ["中国"], "topn": 3})
        assert reply.status_code == 200, reply.text
        hits = reply.json()
        assert any(re.search(r"[\u4e00-\u9fff]", json.dumps(hits, ensure_ascii=False)) for _ in [0])
        page = client.get("/")
        assert page.headers["content-type"] == "text/html; charset=utf-8"


# ------------------------------------------------------------------------------------------------ benchmark (c)
def test_kneser_ney_baseline_of_the_chinese_benchmark_is_a_distribution():
    """benchmarks/chinese.py part (c) scores the char GPT beside Kneser-Ney character n-grams: for a held-out
    position the n-gram probabilities of every possible character sum to one, whatever the order, seen or unseen
    history; and a higher order helps on text that repeats."""
    import importlib.util
    import math

    spec = importlib.util.spec_from_file_location("bench_chinese", Path(__file__).parents[1] / "benchmarks" / "chinese.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rng = np.random.default_rng(0)
    vocab = 40
    ids = rng.integers(0, vocab, size=300)
    for order in (1, 2, 3, 5):
        for pos in (250, 251, 299):
            total = sum(math.exp(-bench.kneser_ney(np.r_[ids[:pos], [w], ids[pos + 1:]], 200, [pos], order, vocab))
                        for w in range(vocab))
            assert total == pytest.approx(1.0, abs=1e-9), (order, pos)
    periodic = np.tile(rng.integers(0, vocab, size=17), 20)
    losses = [bench.kneser_ney(periodic, 250, np.arange(250, 340), order, vocab) for order in (1, 2, 3)]
    assert losses[2] < losses[1] < 0.5 < 2.0 < losses[0]  # a unigram cannot use the period; a bigram, trigram can


def test_word_vectors_suggest_the_nfkc_form_of_a_full_width_query(zh_vec):
    """People's Daily writes years and Latin letters full-width (１９９７); the jieba word tokenizer NFKC-folds them, so
    the vocabulary holds 1997. Querying with the text's own spelling names the word to use, as a capitalised English
    query names its lower-case form."""
    from lmlab.errors import LmlabError
    from lmlab.vectors import KeyedVectors, load_vectors

    kv = load_vectors(zh_vec[0])
    assert "1997" in kv and "１９９７" not in kv
    with pytest.raises(LmlabError, match=r"'１９９７' is not in the vocabulary .*closest spellings: 1997"):
        kv.most_similar("１９９７")
    assert KeyedVectors(["the", "apec"], np.eye(2)).suggest("ＡＰＥＣ") == ["apec"]  # folded, then lower-cased


def test_eval_and_mlm_commands_take_the_encoding_their_error_suggests(zh_runs, daily_gb, tmp_path, capsys):
    """The GB18030 error says "pass --encoding gb18030": gpt eval, mlm train and mlm eval (lm eval too) have it."""
    capsys.readouterr()
    assert main(["gpt", "eval", str(zh_runs["gpt"]), "--data", str(daily_gb), "--max-tokens", "300"]) == 2
    assert "--encoding gb18030" in capsys.readouterr().err
    assert main(["gpt", "eval", str(zh_runs["gpt"]), "--data", str(daily_gb), "--encoding", "gb18030",
                 "--max-tokens", "300", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] > 0
    out = tmp_path / "mlm"
    assert main(["mlm", "train", "--data", str(daily_gb), "--encoding", "gb18030", "--preset", "tiny", "--out",
                 str(out), "train.max_steps=1", "train.num_threads=1", "train.progress=false",
                 "train.tensorboard=false"]) == 0
    utf8 = tmp_path / "utf8.txt"
    utf8.write_text(daily_gb.read_bytes().decode("gb18030"), encoding="utf-8")
    assert main(["mlm", "eval", str(out), "--data", str(utf8), "--encoding", "utf-8", "--max-tokens", "300"]) == 0
