"""benchmarks/_ngram.py: the Kneser-Ney n-gram baseline every language-model benchmark table carries."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def ngram():
    spec = importlib.util.spec_from_file_location("bench_ngram", Path(__file__).parents[1] / "benchmarks" / "_ngram.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up while being built
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_probabilities_sum_to_one_over_the_vocabulary(ngram):
    """After a seen, a partly seen and an unseen context, at every order, plain and modified Kneser-Ney: the
    probabilities of the V possible next tokens sum to one."""
    rng = np.random.default_rng(0)
    vocab = 30
    # tokens 18 and 19 seen once (so every order has singletons, hence a discount), 20-29 never seen
    train = np.r_[np.tile(rng.integers(0, 18, size=23), 8) ^ (rng.random(184) < 0.2), 18, 19, rng.integers(0, 18, 20)]
    contexts = [train[50:54], np.array([train[50], train[51], 25, train[53]]), np.array([27, 28, 29, 26])]
    for modified in (False, True):
        for order in (1, 2, 3, 5):
            for ctx in contexts:
                # one scored stream per candidate: context then candidate, the context never reaching into training
                ids = np.concatenate([train, *[np.r_[ctx, w] for w in range(vocab)]])
                targets = len(train) + np.arange(vocab) * (len(ctx) + 1) + len(ctx)
                first = targets - len(ctx)
                probs = ngram.fit_kneser_ney(ids, len(train), order, vocab, modified).probs(targets, first)
                assert probs.min() > 0
                assert probs.sum() == pytest.approx(1.0, abs=1e-12), (modified, order, ctx)


def test_a_hand_computed_bigram_model(ngram):
    """Chen & Goodman (1998) interpolated Kneser-Ney by hand. Training text a b a b a c b c, V = 4 (d unseen).
    Bigram counts ab 2, ba 2, ac 1, cb 1, bc 1: n1 = 3, n2 = 2, D2 = 3 / (3 + 4) = 3/7. Unigram continuation
    counts N1+(. w): a 1 (ba), b 2 (ab, cb), c 2 (ac, bc): n1 = 1, n2 = 2, D1 = 1/5, total 5, 3 types.
    P1(w) = max(N1+(. w) - 1/5, 0) / 5 + (1/5 * 3 / 5) / 4: a 0.19, b 0.39, c 0.39, d 0.03.
    P(b | a) = (2 - 3/7) / 3 + (3/7 * 2 / 3) * 0.39;  P(d | c) = 0 + (3/7 * 1 / 1) * 0.03;
    P(a | d) = P1(a) (d was never a history)."""
    a, b, c, d = range(4)
    train = [a, b, a, b, a, c, b, c]
    cases = {(a, b): (2 - 3 / 7) / 3 + (3 / 7 * 2 / 3) * 0.39, (c, d): 3 / 7 * 0.03, (d, a): 0.19, (None, b): 0.39}
    for (h, w), expected in cases.items():
        scored = [w] if h is None else [h, w]
        ids = np.array(train + scored)
        model = ngram.fit_kneser_ney(ids, len(train), 2, 4)
        got = model.probs([len(ids) - 1], first=len(train))[0]
        assert got == pytest.approx(expected, rel=1e-12), (h, w)
    # a unigram model alone counts raw frequencies at its top order: a 3, b 3, c 2 (n1 = 0, so D = 0: d gets
    # nothing, as the formula says; real text always has singletons)
    ids = np.array(train + [a, b, c, d])
    probs = ngram.fit_kneser_ney(ids, len(train), 1, 4).probs(np.arange(8, 12), first=8)
    assert probs == pytest.approx([3 / 8, 3 / 8, 2 / 8, 0.0], rel=1e-12)


def test_context_starts_at_first_and_orders_help_on_repeating_text(ngram):
    """``first`` cuts the context: a target with no usable history gets the lowest order's probability. On text that
    repeats with a period, higher orders score far better; the mean NLL is -log of the probabilities."""
    rng = np.random.default_rng(1)
    vocab = 40
    periodic = np.tile(rng.integers(0, vocab, size=17), 20)
    model = ngram.fit_kneser_ney(periodic, 250, 3, vocab)
    bigram = ngram.fit_kneser_ney(periodic, 250, 2, vocab)  # the same continuation-count unigram level
    assert model.probs([300], first=300)[0] == pytest.approx(bigram.probs([300], first=300)[0], rel=1e-12)
    assert model.probs([300], first=300)[0] != pytest.approx(bigram.probs([300], first=0)[0])
    assert model.probs([300], first=0)[0] > 0.5
    losses = [ngram.kneser_ney(periodic, 250, np.arange(250, 340), order, vocab) for order in (1, 2, 3)]
    assert losses[2] < losses[1] < 0.5 < 2.0 < losses[0]
    targets = np.arange(250, 340)
    assert losses[2] == pytest.approx(-np.mean(np.log(model.probs(targets))), rel=1e-12)
    rows = ngram.score_orders(periodic, 250, targets, vocab, orders=(1, 3), log=lambda _: None)
    assert rows["kn3"]["nll"] == pytest.approx(losses[2]) and rows["kn3"]["ppl"] == pytest.approx(math.exp(losses[2]))


# ------------------------------------------------------------------ benchmarks/_ibm1.py (the seq2seq baseline)
@pytest.fixture(scope="module")
def ibm1():
    spec = importlib.util.spec_from_file_location("bench_ibm1", Path(__file__).parents[1] / "benchmarks" / "_ibm1.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_ibm_model1_learns_the_textbook_dictionary(ibm1):
    """Koehn's example (Statistical Machine Translation, 4.2.1): das Haus / the house, das Buch / the book, ein
    Buch / a book. After one EM step from uniform the shared word already wins (t(the | das) is the largest entry
    of das); EM converges towards the one-to-one dictionary; t(. | f) is a distribution for every f; decoding is
    monotone word for word, unseen words copied, the first letter capitalised."""
    pairs = [("das Haus", "the house"), ("das Buch", "the book"), ("ein Buch", "a book")]
    src, tgt = [p[0] for p in pairs], [p[1] for p in pairs]
    one = ibm1.Model1().fit(src, tgt, iterations=1)
    assert one.prob("the", "das") > one.prob("house", "das") == pytest.approx(one.prob("book", "das"))
    model = ibm1.Model1().fit(src, tgt, iterations=30)
    for f in ("das", "haus", "buch", "ein", ibm1.NULL):
        assert sum(model.prob(e, f) for e in model.tgt_vocab) == pytest.approx(1.0)
    assert model.prob("house", "haus") > 0.9 and model.prob("the", "das") > 0.9 and model.prob("a", "ein") > 0.9
    assert model.translate("ein Haus .") == "A house."  # "." was never seen: copied
    assert model.translate("Das Buch, das Haus") == "The book, the house"
