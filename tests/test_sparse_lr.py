"""The sparse logistic-regression classifier (model.arch=sparse-lr, presets tfidf and nblr): its features against
scikit-learn's TfidfVectorizer, its fit against scikit-learn's LogisticRegression, the NB ratio against numpy,
save -> load, Chinese characters, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lmlab.cli import main
from lmlab.data.classification import ClassifyDataConfig, TextEncoder, collate
from lmlab.errors import ConfigError
from lmlab.models.classifier import ClassifierConfig, TextClassifier, char_ngram_table
from lmlab.recipes.classify import ClassifyRecipe

QUIET = ["train.progress=false", "train.tensorboard=false"]


@pytest.fixture(scope="module")
def rt_texts(shared_data) -> tuple[list[str], list[int]]:
    """600 real rt-polarity snippets (300 per class, interleaved) and their labels (1 = positive)."""
    pos = (shared_data / "rt-polarity" / "rt-polarity.pos.utf8").read_text(encoding="utf-8").splitlines()[:300]
    neg = (shared_data / "rt-polarity" / "rt-polarity.neg.utf8").read_text(encoding="utf-8").splitlines()[:300]
    texts = [t for pair in zip(pos, neg, strict=True) for t in pair]
    return texts, [1, 0] * 300


def _features(model: TextClassifier, encoder: TextEncoder, texts: list[str]):
    batch = collate([(ids, 0) for ids in encoder.encode(texts)])
    return model.count_features(batch.ids, batch.lengths), batch


def _setup(texts, labels, **model_options):
    encoder = TextEncoder(ClassifyDataConfig(tokenizer="word", num_words=0, max_len=1000)).fit(texts)
    cfg = ClassifierConfig(arch="sparse-lr", vocab_size=encoder.vocab_size, num_classes=len(set(labels)),
                           **model_options)
    cfg.validate()
    model = TextClassifier(cfg)
    (doc, row, count), batch = _features(model, encoder, texts)
    y = torch.tensor(labels)
    model.fit_weighting(doc, row, y)
    return model, encoder, doc, row, count, batch, y


@pytest.mark.parametrize("min_df", [1, 2])
def test_tfidf_features_equal_scikit_learn(rt_texts, min_df):
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts, labels = rt_texts
    model, encoder, doc, row, count, _, _ = _setup(texts, labels, ngrams=1, tf="sublinear", idf=True, min_df=min_df)
    values = model.feature_values(doc, row, count)
    vec = TfidfVectorizer(analyzer=encoder.tokens, sublinear_tf=True, lowercase=False, min_df=min_df)
    ref = vec.fit_transform(texts).toarray()
    itos = encoder.itos()
    ours = np.zeros_like(ref)
    for d, r, v in zip(doc.tolist(), row.tolist(), values.tolist(), strict=True):
        if itos[r] in vec.vocabulary_:
            ours[d, vec.vocabulary_[itos[r]]] = v
        else:  # a word in fewer than min_df texts: dropped by both
            assert min_df > 1 and v == 0
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("classes", [2, 3])
def test_fit_equals_scikit_learn_logistic_regression(rt_texts, classes):
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    texts, labels = rt_texts
    if classes == 3:
        labels = [i % 3 for i in range(len(texts))]
    model, _, doc, row, count, batch, y = _setup(texts, labels, ngrams=2, bigram_buckets=4096, tf="sublinear",
                                                 idf=True, C=3.0, tol=1e-7, max_iter=2000)
    values = model.feature_values(doc, row, count)
    info = model.fit_lbfgs(doc, row, values, y)
    assert info["converged"]
    x = sp.csr_matrix((values.numpy(), (doc.numpy(), row.numpy())), shape=(len(texts), model.num_features))
    ref = LogisticRegression(C=3.0, tol=1e-10, max_iter=5000).fit(x, labels)
    with torch.no_grad():
        ours = model(batch.ids, batch.lengths).double().numpy()
        probs = model.probabilities(batch.ids, batch.lengths).double().numpy()
    np.testing.assert_allclose(ours, ref.decision_function(x), atol=2e-3)
    np.testing.assert_allclose(probs, ref.predict_proba(x), atol=5e-4)


def test_nb_ratio_equals_numpy(rt_texts):
    texts, labels = rt_texts
    model, _, doc, row, count, _, _ = _setup(texts, labels, ngrams=2, bigram_buckets=512, nb=True, nb_alpha=0.5)
    f = model.num_features
    binary = np.zeros((len(texts), f))
    binary[doc.numpy(), row.numpy()] = 1.0  # the binarized feature vector of every text
    y = np.array(labels)
    p = 0.5 + binary[y == 1].sum(0)
    q = 0.5 + binary[y == 0].sum(0)
    r = np.log((p / p.sum()) / (q / q.sum()))
    r[binary.sum(0) == 0] = 0.0  # a feature no training text has is dropped (min_df=1): it cannot get a weight
    np.testing.assert_allclose(model.feature_weight.numpy(), r, rtol=1e-5, atol=1e-5)
    # binary tf x r, L2-normalised per text
    values = model.feature_values(doc, row, count).numpy()
    expect = r[row.numpy()] / np.linalg.norm(binary * r, axis=1)[doc.numpy()]
    np.testing.assert_allclose(values, expect, rtol=1e-5)


def test_ngram_and_char_rows():
    buckets = 100_003
    cfg = ClassifierConfig(arch="sparse-lr", vocab_size=4, num_classes=2, ngrams=3, bigram_buckets=buckets,
                           char_ngrams=[1, 2])
    offsets, rows = char_ngram_table(["<pad>", "<unk>", "ab", "b"], 1, 2, 4, buckets, skip={"<pad>", "<unk>"})
    # "<ab>": a, b, <a, ab, b>   "<b>": b, <b, b>;  "b" of both words is the same row
    assert offsets.tolist() == [0, 0, 0, 5, 8] and rows[1] == rows[5]
    cfg.char_table_size = rows.numel()
    model = TextClassifier(cfg)
    model.set_char_table(offsets, rows)
    doc, row, count = model.count_features(torch.tensor([[2, 3, 2, 0], [3, 0, 0, 0]]), torch.tensor([3, 1]))
    first = row[doc == 0].tolist()
    words = [2, 3]
    assert [r for r in first if r < 4] == words  # the unigram rows; then hashed bigrams/trigrams and char n-grams
    # text 0: words ab b ab -> 2 distinct words, 2 distinct bigrams, 1 trigram, char n-grams {a, b, <a, ab, b>, <b}
    assert len(first) == 2 + 2 + 1 + 6
    # the bigram (2, 3) and the trigram (2, 3, 2): the multiplicative hash of the ids, modulo 2^31 - 1, then buckets
    bigram = (2 * 1_000_003 + 3) % (2**31 - 1)
    trigram = (bigram * 1_000_003 + 2) % (2**31 - 1)
    assert {4 + bigram % buckets, 4 + trigram % buckets} <= set(first)
    assert count[(doc == 0) & (row == 2)].item() == 2
    assert sorted(row[doc == 1].tolist()) == sorted({3, *rows[5:8].tolist()})


def _write(path: Path, texts, labels) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for t, y in zip(texts, labels, strict=True):
            fh.write(json.dumps({"text": t, "label": "pos" if y else "neg"}, ensure_ascii=False) + "\n")
    return path


def test_nblr_preset_trains_saves_and_loads_identically(rt_texts, tmp_path, capsys):
    texts, labels = rt_texts
    data = _write(tmp_path / "train.jsonl", texts, labels)
    recipe = ClassifyRecipe.from_preset("nblr", [*QUIET, "model.char_ngrams=[2,4]", "model.bigram_buckets=65536"],
                                        data=str(data))
    result = recipe.train(tmp_path / "run")
    assert result.metrics["val_accuracy"] > 0.6 and result.step >= 1
    held_out = (texts[-20:] + ["an utterly unseen zxqv word"])
    batch = collate([(ids, 0) for ids in recipe.encoder.encode(held_out)])
    with torch.no_grad():
        before = recipe.model.probabilities(batch.ids, batch.lengths)
    loaded = ClassifyRecipe.load(tmp_path / "run")
    assert torch.equal(loaded.probabilities(held_out), before)
    assert torch.equal(loaded.model.feature_weight, recipe.model.feature_weight)
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["split"] for r in records] == ["train", "val"]
    # the CLI: predict through the saved run
    assert main(["classify", "predict", str(tmp_path / "run"), "a wonderful , moving film"]) == 0
    # --resume fits again (deterministic): the same weights
    weights = (tmp_path / "run" / "model.safetensors").read_bytes()
    assert main(["classify", "train", "--data", str(data), "--preset", "nblr", "--out", str(tmp_path / "run"),
                 "--resume", *QUIET, "model.char_ngrams=[2,4]", "model.bigram_buckets=65536"]) == 0
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == weights


def test_chinese_characters(shared_data, tmp_path):
    import csv
    import gzip

    with gzip.open(shared_data / "chinese" / "reviews" / "train.csv.gz", "rt", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))[1:]
    rows = [r for r in rows if r[1] == "pos"][:200] + [r for r in rows if r[1] == "neg"][:200]
    data = tmp_path / "zh.csv"
    with open(data, "w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([["text", "label"], *rows])
    recipe = ClassifyRecipe.from_preset("nblr", [*QUIET, "data.segmenter=char", "model.ngrams=3", "model.bigram_buckets=65536"],
                                        data=str(data))
    recipe.train(tmp_path / "run")
    # character tokens: the word 1..3-grams are the character 1..3-grams of a Han text
    text = "很好很好"
    (doc, row, count), _ = _features(recipe.model, recipe.encoder, [text])
    assert recipe.encoder.tokens(text) == list(text)
    assert len(row) == len({"很", "好", "很好", "好很", "很好很", "好很好"})
    assert ClassifyRecipe.load(tmp_path / "run").predict(["质量很好，很满意"])[0]["label"] in {"pos", "neg"}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.C=0", "model.C must be > 0"),
        ("model.char_ngrams=[3,1]", "model.char_ngrams must be [min, max]"),
        ("model.bigram_buckets=0", "need model.bigram_buckets > 0"),
        ("model.dropout=0.5", "not sparse-lr options"),
    ],
)
def test_bad_options_exit_2_in_one_line(rt_texts, tmp_path, capsys, override, message):
    data = _write(tmp_path / "train.jsonl", *rt_texts)
    capsys.readouterr()
    rc = main(["classify", "train", "--data", str(data), "--preset", "nblr", "--out", str(tmp_path / "run"),
               *QUIET, override])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert len([x for x in err.splitlines() if x.strip()]) <= 2
    assert not (tmp_path / "run").exists()


def test_sparse_lr_options_are_refused_elsewhere_and_nb_needs_two_classes(rt_texts):
    with pytest.raises(ConfigError, match="sparse-lr option"):
        ClassifierConfig(arch="linear", nb=True).validate()
    texts, _ = rt_texts
    with pytest.raises(ConfigError, match="model.nb needs two classes"):
        _setup(texts[:30], [i % 3 for i in range(30)], nb=True, ngrams=1)
