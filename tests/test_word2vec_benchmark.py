"""benchmarks/word2vec.py's bookkeeping (no training): a --protocol run keeps the record's earlier runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_word2vec", ROOT / "benchmarks" / "word2vec.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(impl, algo, seed, ws=0.3):
    return {"impl": impl, "algo": algo, "seed": seed, "train_s": 10.0, "vocab_s": 1.0, "peak_rss_mb": 100.0,
            "words_per_s": 1e5, "words_per_cpu_s": 1e5,
            "quality": {"ws353": ws, "simlex": 0.1, "analogy": 0.1}}


def _record(command, runs, epochs=3, bias_lr=1.0, note=None):
    rec = {"command": command, "date": command, "machine": {"git_commit": "c-" + command}, "corpus": {"words": 5_060_000, "lines": 86_508},
           "hparams": {"embed_dim": 100, "window": 5, "epochs": epochs, "threads": 1, "lmlab_compute_loss": False,
                       "glove": {"epochs": 15, "window": 10, "bias_lr": bias_lr}},
           "runs": runs}
    if note:
        rec["note"] = note
    return rec


def test_protocol_run_keeps_earlier_runs_it_does_not_redo(bench):
    earlier = _record("--algos cbow", [_run("lmlab", "cbow", 1), _run("gensim-iter", "cbow", 1),
                                       _run("lmlab", "sg", 1, ws=0.1)], note="kept")
    new = _record("--algos sg", [_run("lmlab", "sg", 1, ws=0.2), _run("gensim-iter", "sg", 1)])
    merged = bench.merge_protocol_record(earlier, new)
    keys = [(r["impl"], r["algo"], r["seed"]) for r in merged["runs"]]
    assert keys == [("lmlab", "cbow", 1), ("gensim-iter", "cbow", 1), ("lmlab", "sg", 1), ("gensim-iter", "sg", 1)]
    assert merged["summary"]["sg/lmlab"]["ws353"] == 0.2  # the redone run replaces the earlier one
    assert set(merged["summary"]["ratios"]) == {"sg-vs-gensim-iter", "cbow-vs-gensim-iter"}
    assert merged["commands"] == ["--algos cbow", "--algos sg"] and merged["note"] == "kept"
    # every run says when and at which commit it was made
    assert [(r["date"], r["git_commit"]) for r in merged["runs"]][1:3] == [("--algos cbow", "c---algos cbow"),
                                                                         ("--algos sg", "c---algos sg")]


def test_protocol_run_drops_earlier_runs_made_with_other_settings(bench):
    earlier = _record("old", [_run("lmlab", "cbow", 1), _run("lmlab", "glove", 1)], epochs=5, bias_lr=None)
    merged = bench.merge_protocol_record(earlier, _record("new", [_run("lmlab", "sg", 1)]))
    assert [(r["algo"]) for r in merged["runs"]] == ["sg"] and merged["commands"] == ["new"]
    # GloVe runs follow GloVe's settings only
    earlier = _record("old", [_run("lmlab", "glove", 1), _run("lmlab", "cbow", 1)], bias_lr=None)
    merged = bench.merge_protocol_record(earlier, _record("new", [_run("lmlab", "sg", 1)]))
    assert [(r["algo"]) for r in merged["runs"]] == ["cbow", "sg"]
    assert bench.merge_protocol_record(None, _record("new", []))["runs"] == []
