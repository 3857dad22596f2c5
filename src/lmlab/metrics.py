"""Evaluation metrics as pure functions (no model, no I/O).

Classification: accuracy, per-class and macro precision/recall/F1, confusion matrix. Language modeling:
perplexity and bits per character from a mean cross-entropy in nats. Other families add their metrics here
(BLEU, Self-BLEU, word-similarity and analogy scores).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> list[list[int]]:
    """``m[i][j]`` = number of examples of true class ``i`` predicted as class ``j``."""
    m = [[0] * num_classes for _ in range(num_classes)]
    for t, p in zip(y_true, y_pred, strict=True):
        m[t][p] += 1
    return m


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict:
    """Accuracy, macro precision/recall/F1, per-class scores and the confusion matrix.

    Precision of class c = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2PR / (P + R); a class with no
    predicted (or no true) examples gets precision (recall) 0, as scikit-learn's ``zero_division=0``.
    Macro averages weigh every class equally.
    """
    k = len(labels)
    m = confusion_matrix(y_true, y_pred, k)
    n = sum(map(sum, m))
    per_class = {}
    for c, name in enumerate(labels):
        tp = m[c][c]
        fp = sum(m[r][c] for r in range(k)) - tp
        fn = sum(m[c]) - tp
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        per_class[name] = {"precision": p, "recall": r, "f1": f, "support": sum(m[c])}
    return {
        "n": n,
        "accuracy": sum(m[c][c] for c in range(k)) / n if n else 0.0,
        "macro_precision": sum(v["precision"] for v in per_class.values()) / k,
        "macro_recall": sum(v["recall"] for v in per_class.values()) / k,
        "macro_f1": sum(v["f1"] for v in per_class.values()) / k,
        "per_class": per_class,
        "confusion_matrix": m,
        "labels": list(labels),
    }


def format_confusion_matrix(m: Sequence[Sequence[int]], labels: Sequence[str]) -> str:
    """A plain-text confusion matrix: rows are true labels, columns predictions."""
    width = max([len(str(x)) for row in m for x in row] + [len(lab) for lab in labels] + [4])
    head = " " * (width + 2) + " ".join(f"{lab:>{width}}" for lab in labels)
    rows = [f"{lab:>{width}}  " + " ".join(f"{x:>{width}}" for x in row) for lab, row in zip(labels, m, strict=True)]
    return "true \\ pred\n" + head + "\n" + "\n".join(rows)


def perplexity(mean_nll_nats: float) -> float:
    """exp of the mean negative log-likelihood per token (in nats)."""
    return math.exp(min(mean_nll_nats, 700.0))


def bits_per_char(mean_nll_nats: float) -> float:
    """Mean negative log-likelihood per character converted from nats to bits (divide by ln 2)."""
    return mean_nll_nats / math.log(2)


# --- translation (sacreBLEU) ----------------------------------------------------------------------------


def _check_refs(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    from lmlab.errors import DataError

    if len(hypotheses) != len(references):
        raise DataError(
            f"{len(hypotheses)} hypotheses but {len(references)} references; they must be line-aligned "
            "(one reference per source sentence)"
        )
    if not hypotheses:
        raise DataError("no sentences to score")


def corpus_bleu(
    hypotheses: Sequence[str], references: Sequence[str], lowercase: bool = False, tokenize: str = "13a"
) -> dict:
    r"""Corpus BLEU (Papineni et al. 2002) with sacreBLEU: $\mathrm{BP} \cdot \exp(\frac14 \sum_{n=1}^4 \log p_n)$,
    $\mathrm{BP} = \min(1, e^{1 - r/c})$, on a 0-100 scale. Returns ``{"score", "signature", "precisions",
    "bp", "sys_len", "ref_len"}``; report the signature with the score. One reference per hypothesis."""
    from sacrebleu.metrics import BLEU

    _check_refs(hypotheses, references)
    metric = BLEU(lowercase=lowercase, tokenize=tokenize)
    res = metric.corpus_score(list(hypotheses), [list(references)])
    return {
        "score": float(res.score),
        "signature": str(metric.get_signature()),
        "precisions": [float(p) for p in res.precisions],
        "bp": float(res.bp),
        "sys_len": int(res.sys_len),
        "ref_len": int(res.ref_len),
    }


def corpus_chrf(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """chrF (Popović 2015, character n-gram F-score, beta=2) with sacreBLEU: ``{"score", "signature"}``."""
    from sacrebleu.metrics import CHRF

    _check_refs(hypotheses, references)
    metric = CHRF()
    res = metric.corpus_score(list(hypotheses), [list(references)])
    return {"score": float(res.score), "signature": str(metric.get_signature())}


# --- BLEU against a reference set and Self-BLEU (Texygen-style, for unconditional generators) -------------------
#
# Texygen (Zhu et al. 2018) scores every generated sentence with sentence-level BLEU-n against the WHOLE reference
# set (all test sentences are references of every hypothesis) and averages; Self-BLEU uses the other generated
# sentences as references (higher = less diverse). Both use uniform weights 1/n over orders 1..n and the smoothing
# "method1" of Chen & Cherry (2014) as in NLTK: a precision with zero matches becomes epsilon / (number of
# hypothesis n-grams), epsilon = 0.1 (a hypothesis shorter than n counts 1 n-gram there). No unigram match (or an
# empty hypothesis) gives 0. The brevity penalty uses the reference length closest to the hypothesis length (the
# shorter one on ties). Clipping uses, for each n-gram, its largest count in any single reference, so the
# reference set is indexed once and each hypothesis costs O(its length).

BLEU_EPSILON = 0.1


def _ngram_counts(tokens: Sequence[str], n: int) -> dict[tuple, int]:
    out: dict[tuple, int] = {}
    for i in range(len(tokens) - n + 1):
        gram = tuple(tokens[i : i + n])
        out[gram] = out.get(gram, 0) + 1
    return out


class NgramReference:
    """An index of a reference set for fast BLEU: per n-gram its largest and second-largest count in any one
    reference (with how many references reach the largest), and the multiset of reference lengths."""

    def __init__(self, references: Sequence[Sequence[str]], max_n: int = 5) -> None:
        if max_n < 1:
            raise ValueError(f"max_n must be >= 1, got {max_n}")
        self.max_n = max_n
        self.tables: list[dict[tuple, list[int]]] = [{} for _ in range(max_n + 1)]
        self.lengths: dict[int, int] = {}
        self.size = 0
        for ref in references:
            self.size += 1
            self.lengths[len(ref)] = self.lengths.get(len(ref), 0) + 1
            for n in range(1, max_n + 1):
                table = self.tables[n]
                for gram, c in _ngram_counts(ref, n).items():
                    entry = table.get(gram)
                    if entry is None:
                        table[gram] = [c, 1, 0]
                    elif c > entry[0]:
                        entry[2], entry[0], entry[1] = entry[0], c, 1
                    elif c == entry[0]:
                        entry[1] += 1
                    elif c > entry[2]:
                        entry[2] = c

    def max_count(self, gram: tuple, own_count: int = 0) -> int:
        """Largest count of ``gram`` in one reference; ``own_count`` > 0 leaves out the hypothesis itself (Self-BLEU)."""
        entry = self.tables[len(gram)].get(gram)
        if entry is None:
            return 0
        if own_count and own_count == entry[0] and entry[1] == 1:
            return entry[2]
        return entry[0]

    def closest_length(self, hyp_len: int, exclude: int | None = None) -> int:
        best = None
        for length, count in self.lengths.items():
            if exclude is not None and length == exclude and count == 1:
                continue
            key = (abs(length - hyp_len), length)
            if best is None or key < best:
                best = key
        return best[1] if best is not None else 0


def _sentence_bleus(hyp: Sequence[str], ref: NgramReference, orders: Sequence[int], self_ref: bool) -> dict[int, float]:
    top = max(orders)
    if top > ref.max_n:
        raise ValueError(f"BLEU-{top} needs a reference index built with max_n >= {top}")
    log_p = []
    for n in range(1, top + 1):
        counts = _ngram_counts(hyp, n)
        matched = sum(min(c, ref.max_count(g, c if self_ref else 0)) for g, c in counts.items())
        total = max(1, sum(counts.values()))
        log_p.append(None if matched == 0 else math.log(matched / total))
        if n == 1 and matched == 0:
            return {k: 0.0 for k in orders}
        if log_p[-1] is None:
            log_p[-1] = math.log(BLEU_EPSILON / total)
    c = len(hyp)
    r = ref.closest_length(c, exclude=c if self_ref else None)
    bp = 1.0 if c > r else math.exp(1.0 - r / c)
    return {k: bp * math.exp(sum(log_p[:k]) / k) for k in orders}


def sentence_bleu(hypothesis: Sequence[str], references: Sequence[Sequence[str]], n: int = 4) -> float:
    """Smoothed (method1) sentence BLEU-n of one tokenised hypothesis against tokenised references."""
    return _sentence_bleus(hypothesis, NgramReference(references, n), [n], False)[n]


def bleu_against(
    hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[str]] | NgramReference, orders=(2, 3, 4, 5)
) -> dict[int, float]:
    """Texygen BLEU-n: the mean over hypotheses of sentence BLEU-n against the whole reference set."""
    orders = list(orders)
    ref = references if isinstance(references, NgramReference) else NgramReference(references, max(orders))
    if not hypotheses:
        raise ValueError("no hypotheses to score")
    if ref.size == 0:
        raise ValueError("the reference set is empty")
    sums = {k: 0.0 for k in orders}
    for hyp in hypotheses:
        for k, v in _sentence_bleus(hyp, ref, orders, False).items():
            sums[k] += v
    return {k: v / len(hypotheses) for k, v in sums.items()}


def self_bleu(hypotheses: Sequence[Sequence[str]], orders=(2, 3, 4, 5)) -> dict[int, float]:
    """Texygen Self-BLEU-n: the mean over generated sentences of BLEU-n against all the OTHER generated sentences
    (1.0 = every sentence repeats the others; lower = more diverse)."""
    orders = list(orders)
    if len(hypotheses) < 2:
        raise ValueError("Self-BLEU needs at least 2 generated sentences")
    ref = NgramReference(hypotheses, max(orders))
    sums = {k: 0.0 for k in orders}
    for hyp in hypotheses:
        for k, v in _sentence_bleus(hyp, ref, orders, True).items():
            sums[k] += v
    return {k: v / len(hypotheses) for k, v in sums.items()}
