"""Word vectors on the recipe contract: presets, the embed CLI's refusals (issue 21), exact resume after a kill."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from lmlab.cli import main
from lmlab.config import config_to_dict, load_preset
from lmlab.data.sentences import tokenize
from lmlab.data.tokenizers import VectorWordTokenizer, tokenizer_from_dict
from lmlab.models.glove import GloVeConfig
from lmlab.models.word2vec import Word2VecConfig
from lmlab.recipes.embed import GloVeRecipe, Word2VecRecipe, recipe_from_cli
from lmlab.vectors import KeyedVectors

REPO_SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def corpus_slice(shared_data, tmp_path_factory) -> Path:
    """The first ~60k words of tiny Shakespeare."""
    path = tmp_path_factory.mktemp("embed") / "slice.txt"
    with gzip.open(shared_data / "tinyshakespeare" / "input.txt.gz", "rt", encoding="utf-8") as src:
        path.write_text(src.read(330_000), encoding="utf-8")
    return path


@pytest.fixture
def tiny_vectors(tmp_path) -> Path:
    words = ["love", "hate", "war", "peace", "king"]
    vecs = np.random.default_rng(0).standard_normal((len(words), 4)).astype(np.float32)
    return KeyedVectors(words, vecs, counts=[5, 4, 3, 2, 1]).save(tmp_path / "kv")


# ---------------------------------------------------------------------------------------------------------
# presets and the tokenizer layer
# ---------------------------------------------------------------------------------------------------------


def _defaults(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls)}


def test_presets_hold_todays_defaults():
    assert load_preset("sgns", "embed")["model"] == _defaults(Word2VecConfig)
    assert load_preset("cbow", "embed")["model"] == {**_defaults(Word2VecConfig), "arch": "cbow"}
    assert load_preset("glove", "embed")["model"] == _defaults(GloVeConfig)
    assert Word2VecRecipe.resolve().model == Word2VecConfig()
    assert GloVeRecipe.resolve().model == GloVeConfig()
    # --algo, flags and overrides map onto preset + overrides (overrides win over flags)
    rec = recipe_from_cli("cbow", {"window": 3, "lr": None, "hs": True}, ["model.window=4", "sample=0"])
    assert isinstance(rec, Word2VecRecipe)
    assert (rec.config.model.arch, rec.config.model.window, rec.config.model.negative) == ("cbow", 4, 0)
    assert rec.config.model.hs is True and rec.config.model.sample == 0
    assert isinstance(recipe_from_cli("glove", {"x_max": 10.0}), GloVeRecipe)


def test_vector_word_tokenizer_is_the_old_word_vector_split_and_travels_as_json():
    text = "Don't stop, O'Brien_2! l'amour\u2019s CAFÉ -- x_y"
    tok = VectorWordTokenizer()
    assert tok.tokenize(text) == ["don't", "stop", "o'brien", "2", "l'amour\u2019s", "café", "x", "y"]
    assert tokenize(text) == tok.tokenize(text)
    assert VectorWordTokenizer(lowercase=False, mode="whitespace").tokenize(text) == text.split()
    assert tokenizer_from_dict(json.loads(json.dumps(tok.to_dict()))) == tok


# ---------------------------------------------------------------------------------------------------------
# issue 21: invalid numbers caught before any work; bad counts and a cancelling query refused
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["--lr", "nan"], ["--lr", "inf"], ["--min-lr", "nan"], ["--sample", "nan"],
    ["--algo", "glove", "--lr", "nan"], ["--algo", "glove", "--x-max", "inf"], ["--algo", "glove", "alpha=.nan"],
])
def test_train_refuses_invalid_numbers_before_any_work(args, tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("a b c\n" * 10)
    out = tmp_path / "run"
    assert main(["embed", "train", "--corpus", str(corpus), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert "must be" in err and "read" not in err, err
    assert not out.exists()


@pytest.mark.parametrize("args", [
    ["similar", "{kv}", "love", "-n", "-5"],
    ["similar", "{kv}", "love", "-n", "0"],
    ["similar", "{kv}", "love", "--restrict-vocab", "-1"],
    ["analogy", "{kv}", "love", "hate", "war", "-n", "-1"],
    ["analogy", "{kv}", "love", "hate", "war", "--restrict-vocab", "-1"],
    ["eval", "{kv}", "--pairs", "x.txt", "--restrict-vocab", "-1"],
])
def test_query_commands_refuse_negative_counts(args, tiny_vectors, capsys):
    rc = main(["embed", *(a.format(kv=tiny_vectors) for a in args)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "must be >=" in err


def test_similar_refuses_a_query_that_cancels_to_zero(tiny_vectors, capsys):
    assert main(["embed", "similar", str(tiny_vectors), "love", "--negative", "love"]) == 2
    err = capsys.readouterr().err
    assert "cancels out to a zero vector" in err and len(err.strip().splitlines()) == 1, err
    assert main(["embed", "similar", str(tiny_vectors), "love", "--negative", "hate", "-n", "2"]) == 0


# ---------------------------------------------------------------------------------------------------------
# resume
# ---------------------------------------------------------------------------------------------------------


def _train_args(algo: str, corpus: Path, out: Path) -> list[str]:
    small = ["--memory-mb", "16"] if algo == "glove" else []  # counting: a 16 MB dense block, not 128 MB
    return ["embed", "train", "--algo", algo, "--corpus", str(corpus), "--out", str(out), "--epochs", "5",
            "--threads", "1", "--seed", "3", "--min-count", "2", *small, "--dim", "48"]


def test_resume_refuses_another_corpus(corpus_slice, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_train_args("sgns", corpus_slice, out)[:-4] + ["--dim", "8", "--epochs", "1"]) == 0
    other = tmp_path / "other.txt"
    other.write_text(corpus_slice.read_text(encoding="utf-8")[:50_000], encoding="utf-8")
    capsys.readouterr()
    args = _train_args("sgns", other, out)[:-4] + ["--dim", "8", "--epochs", "1", "--resume"]
    assert main(args) == 2
    assert "another vocabulary" in capsys.readouterr().err
    assert (out / "vectors.safetensors").is_file()


def _epoch(run: Path) -> int:
    try:
        return int(json.loads((run / "checkpoints" / "last.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["sgns", "glove"])
def test_killed_training_resumes_bit_identical(algo, corpus_slice, tmp_path, capsys):
    """SIGKILL after epochs 1, 2 and 4 of 5, resume each time; the end equals an uninterrupted run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO_SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-c", "import sys; from lmlab.cli import main; sys.exit(main(sys.argv[1:]))"]
    killed = tmp_path / "killed"
    resumed_from = []
    for i, stop in enumerate((1, 2, 4)):
        extra = ["--resume"] if i else []
        proc = subprocess.Popen(cmd + _train_args(algo, corpus_slice, killed) + extra, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while _epoch(killed) < stop and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.kill()
        out, _ = proc.communicate()
        assert proc.returncode != 0, f"the run ended before the kill after epoch {stop}:\n{out}"
        resumed_from.append(_epoch(killed))
    # the last resume and the uninterrupted run in this process (one interpreter start less each)
    capsys.readouterr()
    assert main(_train_args(algo, corpus_slice, killed) + ["--resume"]) == 0
    assert f"resuming {killed} after epoch {resumed_from[-1]}/5" in capsys.readouterr().out
    straight = tmp_path / "straight"
    assert main(_train_args(algo, corpus_slice, straight)) == 0
    for name in ("vectors.safetensors", "checkpoints/last.safetensors"):
        a, b = load_file(str(killed / name)), load_file(str(straight / name))
        assert a.keys() == b.keys()
        for key in a:
            assert np.array_equal(a[key], b[key]), (name, key)
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
    losses = [json.loads(line)["loss"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert losses == [json.loads(line)["loss"] for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert not (killed / ".work").exists()


def test_ctrl_c_says_what_is_saved_and_how_to_resume(corpus_slice, tmp_path):
    """SIGINT (Ctrl-C) during an epoch: exit 130 and one line naming the epochs on disk and ``--resume``; the
    resumed run then finishes all its epochs."""
    import re
    import signal

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO_SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-c", "import sys; from lmlab.cli import main; sys.exit(main(sys.argv[1:]))"]
    out = tmp_path / "run"
    args = _train_args("sgns", corpus_slice, out)
    args[args.index("--epochs") + 1] = "40"
    proc = subprocess.Popen(cmd + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240  # a loaded machine is slow to import torch
    while _epoch(out) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None and _epoch(out) >= 2, "the run ended, or had not finished 2 epochs in 240 s"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    line = err.strip().splitlines()[-1]
    found = re.fullmatch(r"error: interrupted in epoch (\d+) of 40: epochs 1-(\d+) are saved; resume with --resume "
                         r"\((.+)\)", line)
    assert found and int(found[1]) == int(found[2]) + 1 >= 3 and found[3] == str(out), line
    assert "Traceback" not in err
    assert main(args + ["--resume"]) == 0
    assert _epoch(out) == 40


def test_word_vector_models_import_only_numpy_stdlib_errors_and_models():
    import ast

    for name in ("word2vec", "glove"):
        tree = ast.parse((REPO_SRC / "lmlab" / "models" / f"{name}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                mod = node.module
            elif isinstance(node, ast.Import):
                mod = node.names[0].name
            else:
                continue
            top = mod.split(".")[0]
            ok = top != "lmlab" or mod == "lmlab.errors" or mod.startswith("lmlab.models")
            assert ok and top not in ("torch",), f"models/{name}.py imports {mod}"


def test_resume_without_flags_uses_the_runs_own_algorithm_and_config(corpus_slice, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_train_args("cbow", corpus_slice, out)[:-4] + ["--dim", "8", "--epochs", "1", "--window", "3"]) == 0
    saved = json.loads((out / "config.json").read_text())
    recipe = recipe_from_cli(None, {}, (), resume_dir=str(out), corpus=str(corpus_slice))
    assert recipe.model_type == "word2vec" and config_to_dict(recipe.config.model) == saved["model"]
    assert config_to_dict(recipe.config.data) == saved["data"]
    # flags and overrides still apply on top of the saved config (stopping knobs such as threads may change)
    assert recipe_from_cli(None, {"threads": 2}, (), resume_dir=str(out)).config.model.threads == 2
    capsys.readouterr()
    assert main(["embed", "train", "--corpus", str(corpus_slice), "--out", str(out), "--resume"]) == 0
