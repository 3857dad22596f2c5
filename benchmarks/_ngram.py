"""Kneser-Ney n-gram language models: the one-minute baseline of the language-model benchmark tables.

Benchmark-only code (NumPy; not part of lmlab). One implementation for characters and words: a token stream is
a 1-D array of integer ids, whatever the tokens are. The model is counted on ``ids[:train_end]`` and scores
chosen positions ``targets`` of the same array, so a benchmark scores exactly the tokens its lmlab model is
scored on: put the training stream and the scored stream in one array (or use one stream with a held-out tail)
and pass the scored positions.

Interpolated Kneser-Ney of order N (Chen & Goodman 1998, "An empirical study of smoothing techniques for
language modeling", eq. 17-18 with the unigram interpolated with the uniform 1/V)::

    P(w | h) = max(c(h w) - D, 0) / c(h .)  +  D * N1+(h .) / c(h .) * P(w | h')

with h the N-1 tokens before w and h' h without its first token. At the top order c are raw counts; below it
c(h w) is the continuation count N1+(. h w), the number of distinct tokens seen before h w. One discount per
order, D = n1 / (n1 + 2 n2) (n1, n2: how many n-grams of that order have count 1, 2). A history never seen in
training (c(h .) = 0) leaves the lower-order probability unchanged. With ``modified=True``: modified
Kneser-Ney (Chen & Goodman's three discounts D1, D2, D3+ by count, eq. 19-20).

Each target is predicted from the ``order - 1`` tokens before it in the stream, but never from a token before
``first`` (a scalar or one value per target): the start of the scored stream, so a context does not reach
back into the training text.

N-grams are identified by integer ids built order by order (the id of the k-gram ending at position i is the
rank of the pair (id of the (k-1)-gram ending at i-1, token i)), so any vocabulary size and order fits in int64.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np


def gram_ids(ids: np.ndarray, order: int) -> list[np.ndarray]:
    """``out[k][i]``: the id of the k-gram ending at position ``i`` (-1 where fewer than k tokens lead up to
    it), for k = 1..order (``out[0]`` is unused); equal k-grams get equal ids anywhere in the stream."""
    ids = np.asarray(ids, dtype=np.int64)
    width = np.int64(int(ids.max()) + 1 if len(ids) else 1)
    out: list[np.ndarray] = [np.zeros(0, dtype=np.int64), ids.copy()]
    for k in range(2, order + 1):
        g = np.full(len(ids), -1, dtype=np.int64)
        at = np.arange(k - 1, len(ids))
        if len(at):
            _, g[at] = np.unique(out[k - 1][at - 1] * width + ids[at], return_inverse=True)
        out.append(g)
    return out


def _discounts(counts: np.ndarray, modified: bool) -> np.ndarray:
    """The discount for a count of 0, 1, 2, 3+ (Chen & Goodman eq. 26; one value unless ``modified``)."""
    seen = counts[counts > 0]
    n1, n2, n3, n4 = (int(np.sum(seen == c)) for c in (1, 2, 3, 4))
    y = n1 / (n1 + 2 * n2) if n1 + n2 else 0.5
    if not modified:
        return np.array([0.0, y, y, y])
    d1 = 1 - 2 * y * n2 / n1 if n1 else y
    d2 = 2 - 3 * y * n3 / n2 if n2 else y
    d3 = 3 - 4 * y * n4 / n3 if n3 else y
    return np.array([0.0, min(max(d1, 0.0), 1.0), min(max(d2, 0.0), 2.0), min(max(d3, 0.0), 3.0)])


@dataclass
class KneserNey:
    """The counted tables of one model (build it with :func:`fit_kneser_ney`)."""

    order: int
    vocab_size: int
    grams: list[np.ndarray]
    #: per order k (index k): count of every k-gram id, the id of its history, the discounts by count,
    #: per history: sum of counts, and the discount mass numerator sum_w D(c(h w))
    counts: list[np.ndarray]
    history: list[np.ndarray]
    discounts: list[np.ndarray]
    denom: list[np.ndarray]
    backoff: list[np.ndarray]

    def probs(self, targets: Iterable[int], first: int | np.ndarray = 0) -> np.ndarray:
        """P(ids[t] | the order-1 tokens before t, none before ``first``) for every ``t`` in ``targets``."""
        t = np.asarray(targets, dtype=np.int64)
        first = np.broadcast_to(np.asarray(first, dtype=np.int64), t.shape)
        prob = np.full(len(t), 1.0 / self.vocab_size)
        for k in range(1, self.order + 1):
            ok = t - (k - 1) >= first
            tk = np.where(ok, t, k - 1)  # a safe index where not ok (the result is discarded there)
            c = self.counts[k][self.grams[k][tk]]
            h = self.grams[k - 1][tk - 1] if k > 1 else np.zeros(len(t), dtype=np.int64)
            den, mass = self.denom[k][h], self.backoff[k][h]
            found = ok & (den > 0)
            den = np.where(found, den, 1.0)
            d = self.discounts[k][np.minimum(c, 3).astype(np.int64)]
            mixed = np.maximum(c - d, 0.0) / den + mass / den * prob
            prob = np.where(found, mixed, prob)  # an unseen history backs off to the lower order unchanged
        return prob

    def nll(self, targets: Iterable[int], first: int | np.ndarray = 0) -> float:
        """Mean negative log-likelihood (nats per token) of the targets."""
        return float(-np.mean(np.log(self.probs(targets, first))))


def fit_kneser_ney(ids, train_end: int, order: int, vocab_size: int, modified: bool = False) -> KneserNey:
    """Count an interpolated Kneser-Ney model of ``order`` on ``ids[:train_end]``; ``ids`` is the whole stream
    (training tokens first, then whatever will be scored), so scored n-grams share the training n-grams' ids."""
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size})")
    grams = gram_ids(ids, order)
    model = KneserNey(order, vocab_size, grams, [np.zeros(0)], [np.zeros(0)], [np.zeros(0)], [np.zeros(0)],
                      [np.zeros(0)])
    for k in range(1, order + 1):
        size = int(grams[k].max()) + 1 if len(ids) >= k else 1
        if k == order:  # raw counts
            counts = np.bincount(grams[k][k - 1 : train_end], minlength=size)
        else:  # continuation counts N1+(. g): the distinct (k+1)-grams in training that end in g
            _, where = np.unique(grams[k + 1][k:train_end], return_index=True)
            counts = np.bincount(grams[k][k + where], minlength=size)
        counts = counts.astype(np.float64)
        at = np.arange(k - 1, len(ids))
        history = np.zeros(size, dtype=np.int64)
        if k > 1:
            history[grams[k][at]] = grams[k - 1][at - 1]
        n_hist = int(grams[k - 1].max()) + 1 if k > 1 and len(ids) >= k - 1 else 1
        discounts = _discounts(counts, modified)
        model.counts.append(counts)
        model.history.append(history)
        model.discounts.append(discounts)
        model.denom.append(np.bincount(history, weights=counts, minlength=n_hist))
        model.backoff.append(np.bincount(history, weights=discounts[np.minimum(counts, 3).astype(np.int64)],
                                         minlength=n_hist))
    return model


def kneser_ney(ids, train_end: int, targets, order: int, vocab: int, first: int | np.ndarray = 0,
               modified: bool = False) -> float:
    """Mean negative log-likelihood (nats/token) of ``ids[targets]`` under an interpolated Kneser-Ney n-gram
    model of ``order`` counted on ``ids[:train_end]`` (see the module docstring)."""
    return fit_kneser_ney(ids, train_end, order, vocab, modified).nll(targets, first)


def score_orders(ids, train_end: int, targets, vocab: int, orders: Iterable[int] = (1, 2, 3, 4, 5),
                 first: int | np.ndarray = 0, modified: bool = False, unit: str = "token",
                 log: Callable[[str], None] = print) -> dict[str, dict]:
    """``{"kn<order>": {"nll", "ppl", "bits", "wall_s"}}`` for each order, each counted and scored from scratch
    (its time is what a user waits for that one model)."""
    out = {}
    for order in orders:
        t0 = time.perf_counter()
        nll = kneser_ney(ids, train_end, targets, order, vocab, first, modified)
        wall = time.perf_counter() - t0
        key = ("mkn" if modified else "kn") + str(order)
        out[key] = {"nll": nll, "ppl": math.exp(nll), "bits": nll / math.log(2), "wall_s": round(wall, 1)}
        log(f"  {'modified ' if modified else ''}Kneser-Ney {order}-gram: {nll:.4f} nats/{unit} "
            f"(ppl {math.exp(nll):.1f}), {wall:.1f} s")
    return out
