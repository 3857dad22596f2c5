"""Pure metric functions against hand-computed values."""

from __future__ import annotations

import math

import pytest

from lmlab.metrics import bits_per_char, classification_report, confusion_matrix, perplexity


def test_classification_report_by_hand():
    # true:  a a a b b c ; pred: a b a b c c
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 1, 0, 1, 2, 2]
    r = classification_report(y_true, y_pred, ["a", "b", "c"])
    assert r["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert r["accuracy"] == pytest.approx(4 / 6)
    # a: P=2/2 R=2/3 ; b: P=1/2 R=1/2 ; c: P=1/2 R=1/1
    assert r["per_class"]["a"]["precision"] == 1.0 and r["per_class"]["a"]["recall"] == pytest.approx(2 / 3)
    f1 = [2 * 1 * (2 / 3) / (1 + 2 / 3), 0.5, 2 * 0.5 * 1 / 1.5]
    assert r["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert r["macro_precision"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert r["macro_recall"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)


def test_class_never_predicted_scores_zero():
    r = classification_report([0, 1], [0, 0], ["x", "y"])
    assert r["per_class"]["y"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert confusion_matrix([0, 1], [0, 0], 2) == [[1, 0], [1, 0]]


def test_perplexity_and_bits_per_char():
    assert perplexity(math.log(100)) == pytest.approx(100)
    assert bits_per_char(math.log(2)) == pytest.approx(1.0)
