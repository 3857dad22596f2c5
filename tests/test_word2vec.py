"""word2vec: Huffman tree, noise table, subsampling, one kernel update against autograd, the epoch loss,
reproducibility, corpus encoding, neighbours on real text, the CLI, and every bad input."""

from __future__ import annotations

import gzip
import heapq
import math

import numpy as np
import pytest
import torch

from lmlab.cli import main
from lmlab.data.sentences import encode_corpus
from lmlab.errors import ConfigError, DataError
from lmlab.models import _w2v_kernels as K
from lmlab.models.word2vec import (
    Word2Vec,
    Word2VecConfig,
    keep_probabilities,
    noise_distribution,
)
from lmlab.recipes.embed import fit_corpus, save_vectors


@pytest.fixture(scope="module")
def shakespeare(shared_data):
    return shared_data / "tinyshakespeare" / "input.txt.gz"


# ---------------------------------------------------------------------------------------------------------
# Huffman tree and noise table
# ---------------------------------------------------------------------------------------------------------


def _huffman_cost(counts):
    heap = [int(c) for c in counts]
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        cost += a + b
        heapq.heappush(heap, a + b)
    return cost


def test_huffman_codes_are_optimal_prefix_free_and_consistent():
    rng = np.random.default_rng(0)
    counts = np.sort(rng.zipf(1.3, size=300).clip(max=10**6))[::-1].astype(np.int64)
    codes, points, lengths = K.build_huffman(counts)
    v = len(counts)
    words = ["".join(str(b) for b in codes[w, : lengths[w]]) for w in range(v)]
    # prefix-free and complete (Kraft sum exactly 1 for a full binary tree)
    assert len(set(words)) == v
    for a in words:
        assert not any(b != a and b.startswith(a) for b in words)
    assert sum(2.0 ** -len(c) for c in words) == pytest.approx(1.0)
    # optimal: the expected code length equals that of a heap-built Huffman code
    assert int((counts * lengths).sum()) == _huffman_cost(counts)
    # frequent words never get longer codes than rarer ones
    assert np.all(np.diff(lengths) >= 0)
    # inner nodes: the root (V-2) first, ids in 0..V-2, and a shared code prefix means shared nodes
    assert np.all(points[:, 0] == v - 2)
    node_of_prefix = {}
    for w in range(v):
        for d in range(lengths[w]):
            prefix = words[w][:d]
            node = int(points[w, d])
            assert 0 <= node <= v - 2
            assert node_of_prefix.setdefault(prefix, node) == node
    assert len(node_of_prefix) == v - 1  # one inner node per internal prefix


def test_huffman_of_two_words():
    codes, points, lengths = K.build_huffman(np.array([5, 3]))
    assert lengths.tolist() == [1, 1]
    assert sorted([codes[0, 0], codes[1, 0]]) == [0, 1]
    assert points[0, 0] == points[1, 0] == 0


def test_noise_table_holds_the_unigram_075_distribution():
    counts = np.array([1000, 500, 120, 40, 7, 3, 1, 1], dtype=np.int64)
    want = counts ** 0.75 / (counts ** 0.75).sum()
    assert np.allclose(noise_distribution(counts), want)
    prob, alias = K.build_alias_table(noise_distribution(counts))
    v = len(counts)
    # the alias table's exact distribution: P(i) = (prob_i + sum_{j: alias_j = i} (1 - prob_j)) / V
    exact = prob.astype(np.float64).copy()
    for j in range(v):
        if alias[j] != j:
            exact[alias[j]] += 1.0 - prob[j]
    assert np.allclose(exact / v, want, atol=1e-6)
    # and the kernel's draws follow it
    draws = K.sample_noise(prob, alias, 400_000, 7)
    freq = np.bincount(draws, minlength=v) / len(draws)
    assert np.abs(freq - want).max() < 4e-3


def test_subsampling_keep_probability_is_mikolovs_formula():
    counts = np.array([10_000, 1_000, 100, 10], dtype=np.int64)
    sample = 1e-3
    t = sample * counts.sum()
    want = np.minimum(1.0, (np.sqrt(counts / t) + 1) * t / counts)
    assert np.allclose(keep_probabilities(counts, sample), want, rtol=1e-6)
    assert keep_probabilities(counts, 0).tolist() == [1, 1, 1, 1]
    assert keep_probabilities(counts, sample)[-1] == 1.0  # rare words are always kept


# ---------------------------------------------------------------------------------------------------------
# one kernel update against float64 autograd
# ---------------------------------------------------------------------------------------------------------

V, D, LR = 6, 4, 0.2


def _run_kernel(tokens, syn0, syn1neg, syn1, sg, negative, use_hs, window, forced_noise=3, counts=None):
    """Run train_chunk on ``tokens`` with one thread, constant lr, no subsampling, every noise draw = forced_noise."""
    keep = np.ones(V, dtype=np.float32)
    prob = np.zeros(V, dtype=np.float32)  # u >= 0 always: every draw takes alias[k] = forced_noise
    alias = np.full(V, forced_noise, dtype=np.int32)
    if use_hs:
        codes, points, lengths = K.build_huffman(counts)
    else:
        codes, points, lengths = np.zeros((1, 1), np.uint8), np.zeros((1, 1), np.int32), np.zeros(V, np.int32)
    toks = np.array(tokens + [-1], dtype=np.int32)
    words, loss, ex = np.zeros(1, np.int64), np.zeros(1), np.zeros(1, np.int64)
    K.train_chunk(toks, np.array([0, len(toks)], dtype=np.int64), syn0, syn1neg, syn1, keep, prob, alias, codes,
                  points, lengths, sg, negative, use_hs, window, True, LR, LR, 0.0, 1e9, 100,
                  np.array([K.seed_state(1, 0, 0, 0)], dtype=np.uint64), words, loss, ex, True)
    return float(loss[0]), int(ex[0]), (codes, points, lengths)


def _init(seed):
    g = np.random.default_rng(seed)
    syn0 = g.normal(0, 0.5, (V, D)).astype(np.float32)
    syn1neg = g.normal(0, 0.5, (V, D)).astype(np.float32)
    syn1 = g.normal(0, 0.5, (V - 1, D)).astype(np.float32)
    return syn0, syn1neg, syn1


def _output_loss(h, out_rows, labels, out_matrix):
    """-sum log s(+-u.h) over the output units."""
    total = 0.0
    for row, label in zip(out_rows, labels, strict=True):
        f = out_matrix[row] @ h
        total = total - torch.nn.functional.logsigmoid(f if label else -f)
    return total


def test_skipgram_negative_sampling_update_matches_autograd():
    syn0, syn1neg, syn1 = _init(1)
    w_in = torch.tensor(syn0, dtype=torch.float64)
    w_out = torch.tensor(syn1neg, dtype=torch.float64)
    sentence = [0, 1]  # two examples: context 1 -> centre 0, then context 0 -> centre 1
    ref_loss = 0.0
    for centre, ctx in ((0, 1), (1, 0)):
        a = w_in.clone().requires_grad_(True)
        b = w_out.clone().requires_grad_(True)
        loss = _output_loss(a[ctx], [centre, 3], [1, 0], b)
        loss.backward()
        ref_loss += loss.item()
        w_in, w_out = (a - LR * a.grad).detach(), (b - LR * b.grad).detach()
    loss, examples, _ = _run_kernel(sentence, syn0, syn1neg, syn1, True, 1, False, window=1)
    assert examples == 2
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    np.testing.assert_allclose(syn0, w_in.numpy(), atol=2e-6)
    np.testing.assert_allclose(syn1neg, w_out.numpy(), atol=2e-6)


@pytest.mark.parametrize("shared", [False, True])
def test_shared_negatives_are_drawn_once_per_centre_word(shared):
    # sentence 0 1 2, window 1 (the dynamic window of 1 is always 1): centres 0 and 2 have one context each,
    # centre 1 has two. Noise uniform over 10,000 words, 5 per example: sharing draws 3 x 5 noise words in
    # all, not sharing 4 x 5, and with 10,000 words they are distinct (seeded, so this is deterministic)
    v, dim, negative = 10_000, 4, 5
    g = np.random.default_rng(0)
    syn0 = g.normal(0, 0.5, (v, dim)).astype(np.float32)
    syn1neg = g.normal(0, 0.5, (v, dim)).astype(np.float32)
    before = syn1neg.copy()
    prob, alias = K.build_alias_table(np.ones(v))
    keep = np.ones(v, dtype=np.float32)
    codes, points, lengths = np.zeros((1, 1), np.uint8), np.zeros((1, 1), np.int32), np.zeros(v, np.int32)
    toks = np.array([0, 1, 2, -1], dtype=np.int32)
    words, loss, ex = np.zeros(1, np.int64), np.zeros(1), np.zeros(1, np.int64)
    K.train_chunk(toks, np.array([0, len(toks)], dtype=np.int64), syn0, syn1neg, np.zeros((1, dim), np.float32),
                  keep, prob, alias, codes, points, lengths, True, negative, False, 1, True, LR, LR, 0.0, 1e9,
                  100, np.array([K.seed_state(3, 0, 0, 0)], dtype=np.uint64), words, loss, ex, True, shared)
    assert ex[0] == 4
    changed = set(np.flatnonzero((syn1neg != before).any(axis=1)).tolist()) - {0, 1, 2}
    assert len(changed) == (3 if shared else 4) * negative


def test_cbow_negative_sampling_update_matches_autograd():
    syn0, syn1neg, syn1 = _init(2)
    w_in = torch.tensor(syn0, dtype=torch.float64)
    w_out = torch.tensor(syn1neg, dtype=torch.float64)
    sentence = [0, 1, 2]  # window 1: centre 0 <- {1}; centre 1 <- {0, 2}; centre 2 <- {1}
    ref_loss = 0.0
    for centre, ctx in ((0, [1]), (1, [0, 2]), (2, [1])):
        h = w_in[ctx].mean(0).clone().requires_grad_(True)  # the hidden layer: mean of the context vectors
        b = w_out.clone().requires_grad_(True)
        loss = _output_loss(h, [centre, 3], [1, 0], b)
        loss.backward()
        ref_loss += loss.item()
        w_out = (b - LR * b.grad).detach()
        w_in = w_in.clone()
        for c in ctx:  # word2vec.c / gensim: each context vector takes the full step of dL/dh
            w_in[c] -= LR * h.grad
    loss, examples, _ = _run_kernel(sentence, syn0, syn1neg, syn1, False, 1, False, window=1)
    assert examples == 3
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    np.testing.assert_allclose(syn0, w_in.numpy(), atol=2e-6)
    np.testing.assert_allclose(syn1neg, w_out.numpy(), atol=2e-6)


def test_hierarchical_softmax_update_matches_autograd():
    counts = np.array([50, 30, 10, 6, 3, 1])
    syn0, syn1neg, syn1 = _init(3)
    codes, points, lengths = K.build_huffman(counts)
    w_in = torch.tensor(syn0, dtype=torch.float64)
    w_node = torch.tensor(syn1, dtype=torch.float64)
    ref_loss = 0.0
    for centre, ctx in ((4, 2), (2, 4)):
        a = w_in.clone().requires_grad_(True)
        n = w_node.clone().requires_grad_(True)
        path = points[centre, : lengths[centre]].tolist()
        labels = [1 - int(c) for c in codes[centre, : lengths[centre]]]  # code 0 -> label 1 (word2vec.c)
        loss = _output_loss(a[ctx], path, labels, n)
        loss.backward()
        ref_loss += loss.item()
        w_in, w_node = (a - LR * a.grad).detach(), (n - LR * n.grad).detach()
    loss, examples, _ = _run_kernel([4, 2], syn0, syn1neg, syn1, True, 0, True, window=1, counts=counts)
    assert examples == 2
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    np.testing.assert_allclose(syn0, w_in.numpy(), atol=2e-6)
    np.testing.assert_allclose(syn1, w_node.numpy(), atol=2e-6)


# ---------------------------------------------------------------------------------------------------------
# training end to end
# ---------------------------------------------------------------------------------------------------------


def test_epoch_loss_is_the_mean_example_loss(shakespeare):
    # with zero output vectors and lr ~ 0 every unit has s(0) = 1/2: each negative-sampling example costs
    # (1 + negative) log 2 (minus the rare noise draws equal to the target, which are skipped), each
    # hierarchical-softmax example (code length) log 2.
    common = dict(epochs=1, threads=2, lr=1e-9, min_lr=0.0, min_count=3)
    ns = fit_corpus(Word2Vec(Word2VecConfig(negative=5, **common)), shakespeare)
    assert ns.history[0].loss == pytest.approx(6 * math.log(2), rel=2e-3)
    assert ns.history[0].loss <= 6 * math.log(2)
    hs = fit_corpus(Word2Vec(Word2VecConfig(arch="cbow", negative=0, hs=True, sample=0, **common)), shakespeare)
    _, _, lengths = K.build_huffman(hs.wv.counts)
    freq = hs.wv.counts / hs.wv.counts.sum()
    expected = float((freq * lengths).sum() * math.log(2))  # every token is a centre once (sample=0)
    assert hs.history[0].loss == pytest.approx(expected, rel=2e-2)


@pytest.mark.parametrize("scale", [0.5, 1.0])
def test_init_scale_sets_the_range_of_the_starting_vectors(shakespeare, scale):
    # lr ~ 0: the vectors stay where they started, uniform in [-scale/D, scale/D)
    m = fit_corpus(Word2Vec(Word2VecConfig(epochs=1, threads=1, lr=1e-12, min_lr=0.0, min_count=5, embed_dim=50,
                                init_scale=scale)), shakespeare)
    v = m.wv.vectors
    assert np.abs(v).max() <= scale / 50
    assert np.abs(v).max() > 0.99 * scale / 50
    assert abs(float(v.mean())) < 0.01 * scale / 50


def test_single_thread_runs_are_reproducible(shakespeare):
    cfg = dict(arch="cbow", epochs=1, threads=1, min_count=5, max_vocab=800)
    a = fit_corpus(Word2Vec(Word2VecConfig(seed=3, **cfg)), shakespeare)
    b = fit_corpus(Word2Vec(Word2VecConfig(seed=3, **cfg)), shakespeare)
    c = fit_corpus(Word2Vec(Word2VecConfig(seed=4, **cfg)), shakespeare)
    assert np.array_equal(a.wv.vectors, b.wv.vectors)
    assert a.history[0].loss == b.history[0].loss
    assert not np.array_equal(a.wv.vectors, c.wv.vectors)
    assert len(a.wv) == 800


@pytest.fixture(scope="module")
def trained(shakespeare):
    sg = fit_corpus(Word2Vec(Word2VecConfig(arch="skipgram", epochs=3, threads=2, min_count=5, seed=1)), shakespeare)
    cbow = fit_corpus(Word2Vec(Word2VecConfig(arch="cbow", epochs=5, threads=2, min_count=5, seed=1)), shakespeare)
    return {"skipgram": sg, "cbow": cbow}


@pytest.mark.parametrize("arch", ["skipgram", "cbow"])
def test_vectors_on_real_text_put_known_neighbours_together(trained, arch):
    model = trained[arch]
    losses = [h.loss for h in model.history]
    assert losses[-1] < losses[0]
    kv = model.wv
    near = {w for w, _ in kv.most_similar("thou", topn=10)}
    assert near & {"thee", "art", "dost", "hast", "wilt", "shalt", "thy"}, near
    near = {w for w, _ in kv.most_similar("king", topn=10)}
    assert near & {"queen", "prince", "richard", "henry", "edward", "duke", "bolingbroke"}, near
    # a related pair is closer than an unrelated one
    assert kv.similarity("thou", "thee") > kv.similarity("thou", "horse")


def test_encode_corpus_writes_a_frequency_sorted_int32_stream(tmp_path):
    corpus = ["b a a", "", "c a b d", "a"]
    cfg = Word2VecConfig()
    enc = encode_corpus(corpus, cfg, tmp_path, min_count=2)
    assert enc.words == ["a", "b"]
    assert enc.counts.tolist() == [4, 2]
    stream = np.fromfile(enc.path, dtype=np.int32)
    # 'c' and 'd' are dropped, empty sentences vanish, -1 ends each sentence
    assert stream.tolist() == [1, 0, 0, -1, 0, 1, -1, 0, -1]
    assert enc.num_tokens == 6 and enc.num_raw_tokens == 8 and enc.num_sentences == 3
    chunks = list(enc.iter_chunks(4))
    assert np.concatenate(chunks).tolist() == stream.tolist()
    assert all(c[-1] == -1 for c in chunks)
    capped = encode_corpus(corpus, cfg, tmp_path / "cap", min_count=1, max_vocab=1)
    assert capped.words == ["a"]


def test_paragraph_mode_and_long_sentences(tmp_path):
    cfg = Word2VecConfig(break_on="paragraph", max_sentence_length=3)
    enc = encode_corpus(["a b", "c d", "", "e"], cfg, tmp_path, min_count=1)
    stream = np.fromfile(enc.path, dtype=np.int32)
    sentences = " ".join("x" if t == -1 else enc.words[t] for t in stream).split("x")
    assert [s.split() for s in sentences if s.strip()] == [["a", "b", "c"], ["d"], ["e"]]


def test_save_and_load_run_dir(trained, tmp_path):
    import lmlab

    save_vectors(trained["cbow"], tmp_path / "run")
    kv = lmlab.load(tmp_path / "run")
    assert np.array_equal(kv.vectors, trained["cbow"].wv.vectors)
    assert kv.words == trained["cbow"].wv.words
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 5


# ---------------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------------


def test_empty_corpus_is_refused(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n  \n\n")
    with pytest.raises(DataError, match="empty"):
        fit_corpus(Word2Vec(Word2VecConfig()), str(path))


def test_every_word_below_min_count_says_how_many_and_the_largest_count(tmp_path):
    path = tmp_path / "rare.txt"
    path.write_text("the cat sat\nthe dog ran\n")
    with pytest.raises(DataError, match=r"5 distinct words, the most frequent occurs 2 times.*'the'"):
        fit_corpus(Word2Vec(Word2VecConfig(min_count=3)), str(path))


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = tmp_path / "bad.txt.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b"good line\nna\xefve caf\xe9\n")
    with pytest.raises(DataError, match=r"bad\.txt\.gz:2: byte 0xef.*cp1252"):
        fit_corpus(Word2Vec(Word2VecConfig(min_count=1)), str(path))


def test_one_shot_generator_and_bad_config_are_refused():
    with pytest.raises(DataError, match="one-shot"):
        fit_corpus(Word2Vec(Word2VecConfig(min_count=1)), (line for line in ["a b", "c d"]))
    with pytest.raises(ConfigError, match="no output layer"):
        Word2Vec(Word2VecConfig(negative=0, hs=False))
    with pytest.raises(ConfigError, match="window must be >= 1"):
        Word2VecConfig(window=0).validate()
    with pytest.raises(ConfigError, match="init_scale must be >= 0"):
        Word2VecConfig(init_scale=-1.0).validate()


# ---------------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------------


def test_cli_train_similar_analogy_plot(shakespeare, tmp_path, capsys):
    out = tmp_path / "w2v"
    rc = main(["embed", "train", "--algo", "cbow", "--corpus", str(shakespeare), "--out", str(out),
               "--epochs", "2", "--threads", "2", "--save-format", "word2vec-binary", "sample=0.0001"])
    assert rc == 0, capsys.readouterr().err
    assert "run directory" in capsys.readouterr().out
    assert (out / "vectors.bin").is_file()
    assert main(["embed", "similar", str(out), "thou", "-n", "3"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("thou:") and len(text.strip().splitlines()) == 4
    assert main(["embed", "analogy", str(out / "vectors.bin"), "he", "his", "she", "-n", "2"]) == 0
    assert "he : his :: she : ?" in capsys.readouterr().out
    assert main(["embed", "plot", str(out), "--top", "25", "-o", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    # refusing to overwrite, unknown words, options of the other algorithm: exit 2 with a message
    capsys.readouterr()
    assert main(["embed", "train", "--corpus", str(shakespeare), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["embed", "similar", str(out), "thoo"]) == 2
    err = capsys.readouterr().err
    assert "'thoo' is not in the vocabulary" in err and "closest spellings:" in err and "thou" in err
    assert main(["embed", "train", "--algo", "glove", "--negative", "5", "--corpus", str(shakespeare),
                 "--out", str(tmp_path / "g")]) == 2
    assert "word2vec option" in capsys.readouterr().err
    assert main(["embed", "train", "--algo", "glove", "--shared-negatives", "--corpus", str(shakespeare),
                 "--out", str(tmp_path / "g")]) == 2
    assert "--shared-negatives is a word2vec option" in capsys.readouterr().err
    from lmlab.cli.embed import _config_for

    assert _config_for("sgns", {"shared_negatives": True}, ()).shared_negatives is True
    assert main(["embed", "train", "--corpus", str(shakespeare), "--out", str(tmp_path / "x"), "windw=3"]) == 2
    assert "did you mean 'window'" in capsys.readouterr().err


def test_training_runs_without_numba_or_torch_in_the_process(tmp_path):
    # the word2vec kernel is a C extension; its process must not pay for numba/LLVM (~130 MB resident) or torch
    import subprocess
    import sys

    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat and the dog sat on the log\n" * 50, encoding="utf-8")
    code = (
        "import sys\n"
        "from lmlab.data.sentences import encode_corpus\n"
        "from lmlab.models.word2vec import Word2Vec, Word2VecConfig\n"
        "m = Word2Vec(Word2VecConfig(epochs=1, min_count=1, threads=2, seed=1))\n"
        f"m.fit(encode_corpus({str(corpus)!r}, m.config, {str(tmp_path / 'work')!r}))\n"
        "assert m.history[0].examples > 0\n"
        "print(sorted(k for k in ('numba', 'llvmlite', 'torch') if k in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_error_in_a_worker_thread_reaches_the_caller():
    syn0 = np.zeros((V, D), np.float32)
    prob, alias = K.build_alias_table(np.ones(V))
    toks = np.array([0, 1, -1, 2, 3, -1], dtype=np.int32)
    z = np.zeros(2)
    with pytest.raises(ValueError, match="same number of columns"):
        K.train_chunk(toks, np.array([0, 3, 6], dtype=np.int64), syn0, np.zeros((V, D + 1), np.float32),
                      np.zeros((1, D), np.float32), np.ones(V, np.float32), prob, alias,
                      np.zeros((1, 1), np.uint8), np.zeros((1, 1), np.int32), np.zeros(V, np.int32), True, 1, False,
                      1, True, LR, LR, 0.0, 1e9, 100, np.array([1, 2], dtype=np.uint64), np.zeros(2, np.int64), z,
                      np.zeros(2, np.int64), True)
