"""Continued word2vec training on new text (issue 20): ``lmlab embed train --init-from RUN --corpus NEW``."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from lmlab.cli import main
from lmlab.data.sentences import encode_corpus
from lmlab.errors import TrainingInterrupted
from lmlab.models.word2vec import Word2Vec, Word2VecConfig
from lmlab.recipes import embed as embed_recipe
from lmlab.recipes.embed import Word2VecRecipe, load_training_state
from lmlab.vectors import KeyedVectors


@pytest.fixture(scope="module")
def two_corpora(shared_data, tmp_path_factory) -> tuple[Path, Path]:
    """Two consecutive ~60k-word slices of tiny Shakespeare: related text, each with words the other lacks."""
    folder = tmp_path_factory.mktemp("continue")
    with gzip.open(shared_data / "tinyshakespeare" / "input.txt.gz", "rt", encoding="utf-8") as src:
        text = src.read(660_000)
    (folder / "a.txt").write_text(text[:330_000], encoding="utf-8")
    (folder / "b.txt").write_text(text[330_000:], encoding="utf-8")
    return folder / "a.txt", folder / "b.txt"


def _args(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["embed", "train", "--corpus", str(corpus), "--out", str(out), "--threads", "1", *extra]


BASE = ("--min-count", "3", "--dim", "32", "--epochs", "5", "--seed", "1")


@pytest.fixture(scope="module")
def base_run(two_corpora, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("base") / "run"
    assert main(_args(two_corpora[0], out, *BASE)) == 0
    return out


def _vocab(run: Path) -> dict:
    return json.loads((run / "vocab.json").read_text(encoding="utf-8"))


def test_encode_with_base_vocab_keeps_old_ids_adds_counts_and_appends_new_words(tmp_path):
    cfg = Word2VecConfig(tokenizer="whitespace")
    old = (["the", "king", "rare"], np.array([10, 4, 1]))
    enc = encode_corpus(["the queen the queen king", "queen new"], cfg, tmp_path, 2, base_vocab=old)
    assert enc.words == ["the", "king", "rare", "queen"]  # "new" occurs once < min_count: not added
    assert enc.counts.tolist() == [12, 5, 1, 3]
    assert np.fromfile(enc.path, dtype=np.int32).tolist() == [0, 3, 0, 3, 1, -1, 3, -1]


def test_continue_from_starts_from_the_saved_rows_and_draws_new_rows_as_a_fresh_run():
    cfg = Word2VecConfig(embed_dim=6, seed=4)
    rng = np.random.default_rng(0)
    state = {"arrays": {"syn0": rng.random((5, 6), dtype=np.float32), "syn1neg": rng.random((5, 6), dtype=np.float32),
                        "syn1": np.zeros((1, 6), np.float32)}, "epoch": 5, "history": []}
    model = Word2Vec(cfg)
    model.continue_from(state, 8)
    fresh = Word2Vec(Word2VecConfig(embed_dim=6, seed=4))
    fresh._init_weights(8, False)
    assert np.array_equal(model.syn0[:5], state["arrays"]["syn0"])
    assert np.array_equal(model.syn0[5:], fresh.syn0[5:])
    assert np.array_equal(model.syn1neg[:5], state["arrays"]["syn1neg"])
    assert not model.syn1neg[5:].any()
    assert model.epochs_done == 0


def test_continued_run_adds_new_words_and_old_vectors_start_from_the_saved_ones(base_run, two_corpora, tmp_path):
    out = tmp_path / "cont"
    # a learning rate of ~0: what comes out is where training started
    assert main(_args(two_corpora[1], out, "--init-from", str(base_run), "--lr", "1e-12", "--min-lr", "0",
                      "--epochs", "1")) == 0
    old, new = _vocab(base_run), _vocab(out)
    n = len(old["words"])
    assert new["words"][:n] == old["words"] and len(new["words"]) > n + 100
    assert all(c >= o for c, o in zip(new["counts"], old["counts"], strict=False))
    assert sum(new["counts"][:n]) > sum(old["counts"])
    saved = load_training_state(base_run)["arrays"]
    state = load_file(str(out / "checkpoints" / "last.safetensors"))
    assert state["syn0"].shape == (len(new["words"]), 32)
    np.testing.assert_allclose(state["syn0"][:n], saved["syn0"], atol=1e-8)
    np.testing.assert_allclose(state["syn1neg"][:n], saved["syn1neg"], atol=1e-8)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["init_from"] == {"run_dir": str(base_run), "vocab_size": n, "new_words": len(new["words"]) - n}
    assert config["model"]["embed_dim"] == 32 and config["model"]["min_count"] == 3  # the run's settings


def _neighbours(kv: KeyedVectors, word: str) -> set[str]:
    return {w for w, _ in kv.most_similar([word], topn=10, restrict_vocab=2000)}


def test_continued_run_keeps_old_neighbourhoods(base_run, two_corpora, tmp_path, capsys):
    cont, scratch = tmp_path / "cont", tmp_path / "scratch"
    assert main(_args(two_corpora[1], cont, "--init-from", str(base_run), "--epochs", "2")) == 0
    assert "lr restarts at 0.025" in capsys.readouterr().out
    assert main(_args(two_corpora[1], scratch, *BASE)) == 0
    before, after, fresh = (KeyedVectors.load(p) for p in (base_run, cont, scratch))
    frequent = _vocab(base_run)["words"][:50]

    def overlap(kv: KeyedVectors) -> float:
        return float(np.mean([len(_neighbours(before, w) & _neighbours(kv, w)) / 10 for w in frequent if w in kv]))

    kept, independent = overlap(after), overlap(fresh)
    # measured: 0.31 continued vs 0.19 for a run trained from scratch on the new text
    assert kept >= independent + 0.07, (kept, independent)


def test_killed_continued_run_resumes_bit_identical(base_run, two_corpora, tmp_path, monkeypatch, capsys):
    args = ("--init-from", str(base_run), "--epochs", "3")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert main(_args(two_corpora[1], straight, *args)) == 0
    real = embed_recipe.save_training_state

    def die_after_epoch_two(run_dir, state):
        real(run_dir, state)
        if state["epoch"] == 2:
            raise KeyboardInterrupt  # the process dies right after the checkpoint of epoch 2

    monkeypatch.setattr(embed_recipe, "save_training_state", die_after_epoch_two)
    with pytest.raises(TrainingInterrupted, match="epochs 1-2 are saved; resume with --resume"):
        Word2VecRecipe.from_options(None, {"threads": 1, "epochs": 3}, corpus=str(two_corpora[1]),
                                    init_from=str(base_run), log=lambda _: None).train(killed)
    monkeypatch.undo()
    capsys.readouterr()
    assert main(_args(two_corpora[1], killed, "--resume")) == 2  # without --init-from: refused in one line
    assert "resume with --init-from" in capsys.readouterr().err
    assert main(_args(two_corpora[1], killed, *args, "--resume")) == 0
    assert f"resuming {killed} after epoch 2/3" in capsys.readouterr().out
    for name in ("vectors.safetensors", "checkpoints/last.safetensors"):
        a, b = load_file(str(killed / name)), load_file(str(straight / name))
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), name


def test_init_from_refuses_bad_runs_in_one_line(base_run, two_corpora, tmp_path, capsys):
    glove = tmp_path / "glove"
    assert main(_args(two_corpora[0], glove, "--algo", "glove", "--epochs", "1", "--dim", "8", "--memory-mb",
                      "16")) == 0
    vectors = KeyedVectors(["a", "b"], np.ones((2, 4), np.float32)).save(tmp_path / "kv")
    cases = {
        str(tmp_path / "missing"): "no such run directory",
        str(glove): "GloVe runs cannot be continued",
        str(vectors): "not a word2vec one",
    }
    for run, message in cases.items():
        capsys.readouterr()
        assert main(_args(two_corpora[1], tmp_path / "out", "--init-from", run)) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert main(_args(two_corpora[1], tmp_path / "out", "--init-from", str(base_run), "--algo", "cbow")) == 2
    assert "does not match" in capsys.readouterr().err
    assert main(_args(two_corpora[1], tmp_path / "out", "--init-from", str(base_run), "--dim", "16")) == 2
    assert "keeps arch, embed_dim" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_huffman_tree_of_an_updated_vocabulary_is_the_sorted_tree_mapped_back():
    """Old words first, then new ones: counts are no longer sorted, the kernel's tree build needs them sorted."""
    from lmlab.models._compiled import load_kernels
    from lmlab.models.word2vec import _huffman

    K = load_kernels("_w2v_kernels")
    counts = np.array([50, 40, 9, 3, 60, 20, 1], dtype=np.int64)
    codes, points, lengths = _huffman(K, counts)
    order = np.argsort(-counts, kind="stable")
    s_codes, s_points, s_lengths = K.build_huffman(counts[order])
    for rank, word in enumerate(order):
        n = s_lengths[rank]
        assert lengths[word] == n
        assert codes[word, :n].tolist() == s_codes[rank, :n].tolist()
        assert points[word, :n].tolist() == s_points[rank, :n].tolist()
    assert lengths[4] <= lengths[6]  # the most frequent word has the shortest code, the rarest the longest


def test_init_from_an_interrupted_run_says_so(base_run, two_corpora, tmp_path, capsys):
    """A run stopped before its last epoch (killed; --resume would finish it) can be continued, but the user is
    told it is unfinished rather than having it taken silently for the finished run --init-from expects."""
    import shutil

    unfinished = shutil.copytree(base_run, tmp_path / "unfinished")
    config = json.loads((unfinished / "config.json").read_text())
    config["model"]["epochs"] = 8  # its checkpoint is after epoch 5 of these 8
    (unfinished / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main(_args(two_corpora[1], tmp_path / "out", "--init-from", str(unfinished), "--epochs", "1")) == 0
    assert f"--init-from {unfinished} was stopped after epoch 5 of 8" in capsys.readouterr().out
    assert main(_args(two_corpora[1], tmp_path / "out2", "--init-from", str(base_run), "--epochs", "1")) == 0
    assert "was stopped after epoch" not in capsys.readouterr().out
