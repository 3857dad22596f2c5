"""GloVe: co-occurrence counting against brute force (with spills to disk), the loss and one AdaGrad step
by hand, neighbours on real text, the W / W + W~ choice and the CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmlab.cli import main
from lmlab.data.sentences import encode_corpus, iter_sentences
from lmlab.errors import ConfigError
from lmlab.models.glove import GloVe, GloVeConfig, count_cooccurrences, glove_loss
from lmlab.models.word2vec import Word2VecConfig
from lmlab.recipes.embed import fit_corpus, save_vectors


@pytest.fixture(scope="module")
def shakespeare(shared_data):
    return shared_data / "tinyshakespeare" / "input.txt.gz"


def _brute_force(sentences, index, window, v):
    x = np.zeros((v, v))
    for sent in sentences:
        ids = [index[w] for w in sent if w in index]
        for p, w in enumerate(ids):
            for q in range(max(0, p - window), p):
                x[w, ids[q]] += 1.0 / (p - q)
                x[ids[q], w] += 1.0 / (p - q)
    return x


def test_counting_matches_brute_force_with_spills_and_merges(shakespeare, tmp_path):
    lines = []
    for line in iter_sentences(shakespeare, Word2VecConfig()):
        lines.append(line)
        if sum(map(len, lines)) > 25000:
            break
    enc = encode_corpus(lines, Word2VecConfig(), tmp_path, min_count=2)
    index = {w: i for i, w in enumerate(enc.words)}
    want = _brute_force(lines, index, 5, len(enc.words))
    # 1 MB: a tiny dense block (10 words), the sparse buffer spills several sorted runs, several merge
    # ranges and shuffle buckets
    cooc = count_cooccurrences(enc, 5, tmp_path, memory_mb=1, dense_words=10)
    assert cooc.nnz == np.count_nonzero(want)
    np.testing.assert_allclose(cooc.to_dense(), want, rtol=1e-5)
    # the entries on disk are shuffled, not sorted by row
    rows = cooc.read(0, 2000)["i"]
    assert np.count_nonzero(np.diff(rows) < 0) > 500
    # all in the dense block gives the same matrix
    other = count_cooccurrences(enc, 5, tmp_path / "b", memory_mb=64)
    np.testing.assert_allclose(other.to_dense(), want, rtol=1e-5)


@pytest.mark.parametrize("adagrad", ["reference", "textbook"])
def _sorted_entries(cooc):
    rec = cooc.read(0, cooc.nnz)
    return rec[np.lexsort((rec["j"], rec["i"]))]


def test_counting_stays_within_its_memory_budget(shakespeare, tmp_path):
    import tracemalloc

    enc = encode_corpus(shakespeare, Word2VecConfig(), tmp_path, min_count=1)
    budget_mb = 16
    tracemalloc.start()
    try:
        small = count_cooccurrences(enc, 10, tmp_path / "small", memory_mb=budget_mb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the whole counting (chunks, dense block, buffer, spills, merge ranges, shuffle buckets) within the budget,
    # although the 550k non-zeros are skewed towards the frequent words' rows
    assert peak <= 1.1 * budget_mb * 2**20, f"peak {peak / 2**20:.1f} MB for a {budget_mb} MB budget"
    big = count_cooccurrences(enc, 10, tmp_path / "big", memory_mb=256)
    assert small.nnz == big.nnz > 500_000
    a, b = _sorted_entries(small), _sorted_entries(big)
    np.testing.assert_array_equal(a["i"], b["i"])
    np.testing.assert_array_equal(a["j"], b["j"])
    np.testing.assert_allclose(a["x"], b["x"], rtol=1e-5)


@pytest.mark.parametrize("adagrad", ["reference", "textbook"])
def test_loss_and_adagrad_step_by_hand(adagrad):
    cfg = GloVeConfig(embed_dim=2, lr=0.05, x_max=100.0, alpha=0.75, adagrad=adagrad, bias_lr=None)
    model = GloVe(cfg)
    model.init_params(2)
    model.w[:] = [[0.1, -0.2], [0.3, 0.4]]
    model.wt[:] = [[0.5, 0.1], [-0.3, 0.2]]
    model.b[:] = [0.01, -0.02]
    model.bt[:] = [0.03, 0.04]
    x = 50.0  # X[0, 1]
    # by hand: diff = w0.wt1 + b0 + bt1 - log 50 = (-0.03 - 0.04) + 0.01 + 0.04 - 3.912023 = -3.932023
    diff = (0.1 * -0.3 + -0.2 * 0.2) + 0.01 + 0.04 - math.log(50.0)
    assert diff == pytest.approx(-3.932023, abs=1e-6)
    fx = (50.0 / 100.0) ** 0.75  # 0.594604
    assert fx == pytest.approx(0.594604, abs=1e-6)
    loss = 0.5 * fx * diff**2  # 0.5 * 0.594604 * 3.932023^2 = 4.596525
    assert loss == pytest.approx(4.596525, abs=1e-5)
    dense = np.array([[0.0, x], [0.0, 0.0]])
    assert glove_loss(dense, model.w, model.wt, model.b, model.bt) == pytest.approx(loss, rel=1e-6)
    g = fx * diff
    # gradients of J wrt w0, wt1, b0, bt1 and the first AdaGrad step (G starts at 1)
    w0 = np.array([0.1, -0.2]) - 0.05 * g * np.array([-0.3, 0.2])
    wt1 = np.array([-0.3, 0.2]) - 0.05 * g * np.array([0.1, -0.2])
    got = model.step(np.array([0]), np.array([1]), np.array([x], dtype=np.float32))
    assert got == pytest.approx(loss, rel=1e-5)
    np.testing.assert_allclose(model.w[0], w0, rtol=1e-5)
    np.testing.assert_allclose(model.wt[1], wt1, rtol=1e-5)
    assert model.b[0] == pytest.approx(0.01 - 0.05 * g, rel=1e-5)
    assert model.bt[1] == pytest.approx(0.04 - 0.05 * g, rel=1e-5)
    # the accumulators: the reference code adds the squared lr-scaled gradient, textbook AdaGrad the squared gradient
    scale = 0.05 if adagrad == "reference" else 1.0
    np.testing.assert_allclose(model.gw[0], 1 + (scale * g * np.array([-0.3, 0.2])) ** 2, rtol=1e-5)
    np.testing.assert_allclose(model.gwt[1], 1 + (scale * g * np.array([0.1, -0.2])) ** 2, rtol=1e-5)
    assert model.gb[0] == pytest.approx(1 + (scale * g) ** 2, rel=1e-5)
    np.testing.assert_allclose(model.w[1], [0.3, 0.4])  # untouched rows stay
    # second step: the squared-gradient sums now divide the step
    diff2 = float(model.w[0] @ model.wt[1] + model.b[0] + model.bt[1] - math.log(x))
    g2 = fx * diff2
    gb_before = float(model.gb[0])
    b_before = float(model.b[0])
    model.step(np.array([0]), np.array([1]), np.array([x], dtype=np.float32))
    assert model.b[0] == pytest.approx(b_before - 0.05 * g2 / math.sqrt(gb_before), rel=1e-5)
    # above x_max the weight is 1
    big = np.array([[0.0, 500.0], [0.0, 0.0]])
    d = float(model.w[0] @ model.wt[1] + model.b[0] + model.bt[1] - math.log(500.0))
    assert glove_loss(big, model.w, model.wt, model.b, model.bt) == pytest.approx(0.5 * d * d, rel=1e-6)


def test_bias_lr_1_steps_the_biases_as_glove_c_master_does():
    """glove.c master: ``W[bias] -= fdiff / sqrt(gradsq)``, ``gradsq += fdiff^2`` (no eta); vectors unchanged."""
    x = np.array([50.0], dtype=np.float32)
    models = {}
    for bias_lr in (None, 1.0):
        model = GloVe(GloVeConfig(embed_dim=2, lr=0.05, bias_lr=bias_lr))
        model.init_params(2)
        model.w[:] = [[0.1, -0.2], [0.3, 0.4]]
        model.wt[:] = [[0.5, 0.1], [-0.3, 0.2]]
        model.b[:] = [0.01, -0.02]
        model.bt[:] = [0.03, 0.04]
        models[bias_lr] = model
    model = models[1.0]
    fx = (50.0 / 100.0) ** 0.75
    g = fx * ((0.1 * -0.3 + -0.2 * 0.2) + 0.01 + 0.04 - math.log(50.0))
    for m in models.values():
        m.step(np.array([0]), np.array([1]), x)
    assert model.b[0] == pytest.approx(0.01 - g, rel=1e-5)
    assert model.bt[1] == pytest.approx(0.04 - g, rel=1e-5)
    assert model.gb[0] == pytest.approx(1 + g * g, rel=1e-5) and model.gbt[1] == pytest.approx(1 + g * g, rel=1e-5)
    assert models[None].b[0] == pytest.approx(0.01 - 0.05 * g, rel=1e-5)  # None: lr, glove.c 1.2
    np.testing.assert_array_equal(model.w, models[None].w)  # the word vectors' step is the same
    np.testing.assert_array_equal(model.gw, models[None].gw)
    b_before, gb_before = float(model.b[0]), float(model.gb[0])
    g2 = fx * float(model.w[0] @ model.wt[1] + model.b[0] + model.bt[1] - math.log(50.0))
    model.step(np.array([0]), np.array([1]), x)
    assert model.b[0] == pytest.approx(b_before - g2 / math.sqrt(gb_before), rel=1e-5)
    with pytest.raises(ConfigError, match="bias_lr"):
        GloVeConfig(bias_lr=0.0).validate()


def test_reference_adagrad_is_textbook_adagrad_with_rate_1_and_accumulator_from_1_over_lr_squared():
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 6, 40), rng.integers(0, 6, 40)
    vals = rng.uniform(0.5, 150.0, 40).astype(np.float32)
    ref = GloVe(GloVeConfig(embed_dim=3, lr=0.05, adagrad="reference", bias_lr=None))
    txt = GloVe(GloVeConfig(embed_dim=3, lr=1.0, adagrad="textbook", bias_lr=None))
    ref.init_params(6)
    txt.init_params(6)
    for name in ("gw", "gwt", "gb", "gbt"):
        getattr(txt, name)[:] = 1.0 / 0.05**2
    for _ in range(3):
        ref.step(rows, cols, vals)
        txt.step(rows, cols, vals)
    for name in ("w", "wt", "b", "bt"):
        np.testing.assert_allclose(getattr(ref, name), getattr(txt, name), rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(ref.gw, txt.gw * 0.05**2, rtol=2e-4)


def test_glove_on_real_text_finds_neighbours_and_keeps_w_or_w_plus_wt(shakespeare, tmp_path):
    cfg = GloVeConfig(epochs=8, window=5, min_count=5, threads=2, x_max=10.0, seed=1)
    model = fit_corpus(GloVe(cfg), shakespeare)
    losses = [h.loss for h in model.history]
    assert losses[-1] < losses[0]
    near = {w for w, _ in model.wv.most_similar("thou", topn=10)}
    assert near & {"thee", "art", "dost", "hast", "wilt", "shalt", "thy"}, near
    np.testing.assert_allclose(model.wv.vectors, model.w + model.wt)
    save_vectors(model, tmp_path / "run")
    import lmlab

    assert lmlab.load(tmp_path / "run").words == model.wv.words
    only_w = fit_corpus(GloVe(GloVeConfig(epochs=1, window=5, min_count=5, threads=1, keep="w", seed=1)), shakespeare)
    np.testing.assert_array_equal(only_w.wv.vectors, only_w.w)


def test_glove_cli_and_config_errors(shakespeare, tmp_path, capsys):
    out = tmp_path / "glove"
    rc = main(["embed", "train", "--algo", "glove", "--corpus", str(shakespeare), "--out", str(out),
               "--epochs", "2", "--window", "4", "--threads", "2", "--x-max", "10", "--save-format", "glove"])
    assert rc == 0, capsys.readouterr().err
    assert (out / "vectors.glove.txt").is_file()
    assert main(["embed", "similar", str(out / "vectors.glove.txt"), "king", "-n", "2"]) == 0
    assert main(["embed", "train", "--algo", "cbow", "--x-max", "10", "--corpus", str(shakespeare),
                 "--out", str(tmp_path / "c")]) == 2
    assert "GloVe option" in capsys.readouterr().err
    with pytest.raises(Exception, match="x_max must be > 0"):
        GloVe(GloVeConfig(x_max=0))
    assert main(["embed", "train", "--algo", "glove", "--corpus", str(shakespeare), "--out", str(tmp_path / "d"),
                 "adagrad=fancy"]) == 2
    err = capsys.readouterr().err
    assert "adagrad" in err and "textbook" in err, err
    assert not (tmp_path / "d").exists()
