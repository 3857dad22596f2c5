"""Text classification end to end: the Keras seed model, the BiLSTM, the CLI and every bad input."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lmlab.checkpoint import load_tensors
from lmlab.cli import main
from lmlab.errors import ConfigError
from lmlab.models.classifier import (
    ClassifierConfig,
    TextClassifier,
    keras_parameter_count,
)
from lmlab.pipelines import Classifier
from lmlab.recipes.classify import ClassifyRecipe

TINY = ["model.embed_dim=16", "model.lstm_dims=[8, 8]", "model.dense_dim=8", "train.progress=false", "train.tensorboard=false"]
TINY_BI = ["model.embed_dim=16", "model.hidden_dim=8", "model.bag_dim=8", "model.bigram_buckets=4096", "train.progress=false", "train.tensorboard=false", "data.max_len=40"]


@pytest.fixture(scope="module")
def rt_slice(shared_data, tmp_path_factory) -> Path:
    """400 real rt-polarity snippets (200 per class) as JSONL, and 100 more as a held-out file."""
    pos = (shared_data / "rt-polarity" / "rt-polarity.pos.utf8").read_text(encoding="utf-8").splitlines()
    neg = (shared_data / "rt-polarity" / "rt-polarity.neg.utf8").read_text(encoding="utf-8").splitlines()
    root = tmp_path_factory.mktemp("rt")
    for name, lo, hi in (("train.jsonl", 0, 200), ("test.jsonl", 200, 250)):
        with open(root / name, "w", encoding="utf-8") as fh:
            for p, n in zip(pos[lo:hi], neg[lo:hi], strict=True):
                fh.write(json.dumps({"text": p, "label": "pos"}) + "\n")
                fh.write(json.dumps({"text": n, "label": "neg"}) + "\n")
    return root


def _train(rt_slice, out, *extra, preset="seed-lstm", tiny=TINY):
    return main(["classify", "train", "--data", str(rt_slice / "train.jsonl"), "--preset", preset, "--out", str(out), *tiny, *extra])


# ------------------------------------------------------------------------------------------------ the model
def test_seed_lstm_matches_keras_parameter_count_and_shapes():
    run = ClassifyRecipe.resolve("seed-lstm")
    run.model.vocab_size, run.model.num_classes = 10000, 2
    model = TextClassifier(run.model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    assert trainable == keras_parameter_count(run.model) == 2_656_769  # Keras' model.summary()
    # PyTorch stores a second bias per gate (b_hh); it is fixed at zero and not trained: 4*64 + 4*32 more
    assert total - trainable == 4 * 64 + 4 * 32
    ids = torch.randint(0, 10000, (5, 100))
    assert model(ids, torch.full((5,), 100)).shape == (5,)
    assert model.probabilities(ids, torch.full((5,), 100)).shape == (5, 2)
    # Keras' unit_forget_bias: PyTorch's gate order is i, f, g, o
    bias = model.lstms[0].bias_ih_l0
    assert torch.all(bias[64:128] == 1) and torch.all(bias[:64] == 0) and torch.all(model.lstms[0].bias_hh_l0 == 0)


def test_multiclass_softmax_head():
    cfg = ClassifierConfig(arch="bilstm", vocab_size=50, num_classes=4, embed_dim=8, hidden_dim=4)
    model = TextClassifier(cfg)
    ids = torch.randint(1, 50, (3, 7))
    assert model(ids, torch.tensor([7, 3, 1])).shape == (3, 4)


def test_bilstm_ignores_padding():
    torch.manual_seed(0)
    cfg = ClassifierConfig(arch="bilstm", vocab_size=30, num_classes=2, embed_dim=8, hidden_dim=4)
    model = TextClassifier(cfg).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0, 0]])
    longer = torch.tensor([[5, 6, 7, 9, 9, 9]])
    a = model(ids, torch.tensor([3]))
    b = model(longer, torch.tensor([3]))  # the tail beyond the length must not matter
    torch.testing.assert_close(a, b)


def test_ngram_bag_rows_and_padding():
    torch.manual_seed(0)
    cfg = ClassifierConfig(arch="bilstm", vocab_size=30, num_classes=2, embed_dim=8, hidden_dim=4, bag_dim=6, bigram_buckets=11)
    model = TextClassifier(cfg).eval()
    ids = torch.tensor([[5, 6, 7, 0], [9, 3, 0, 0]])
    rows = model.ngram_ids(ids, torch.tensor([3, 2]))
    # words, then the bigrams (5,6), (6,7) and (9,3) hashed into rows 30..40; 0 (left out of the mean) elsewhere
    assert rows[:, :4].tolist() == [[5, 6, 7, 0], [9, 3, 0, 0]]
    assert rows[0, 4].item() == 30 + (5 * 1_000_003 + 6) % 11 and rows[0, 5].item() == 30 + (6 * 1_000_003 + 7) % 11
    assert rows[1, 4].item() == 30 + (9 * 1_000_003 + 3) % 11 and rows[0, 6].item() == rows[1, 5].item() == 0
    # the bag is the mean of exactly those rows' embeddings
    want = model.bag.weight[rows[0, [0, 1, 2, 4, 5]]].mean(0)
    torch.testing.assert_close(model.bag(rows[:1])[0], want)
    # what lies beyond a text's length changes neither the bag nor the logits
    longer = torch.tensor([[5, 6, 7, 9, 9, 9], [9, 3, 4, 4, 4, 4]])
    torch.testing.assert_close(model(ids, torch.tensor([3, 2])), model(longer, torch.tensor([3, 2])))
    with pytest.raises(ConfigError, match="bag_dim"):
        ClassifierConfig(arch="bilstm", bigram_buckets=10).validate()
    with pytest.raises(ConfigError, match="bilstm option"):
        ClassifierConfig(arch="stacked-lstm", bag_dim=4).validate()


@pytest.mark.parametrize("arch", ["stacked-lstm", "bilstm"])
def test_overfit_one_batch(arch):
    from lmlab.data.classification import ClassifyBatch

    torch.manual_seed(0)
    cfg = ClassifierConfig(arch=arch, vocab_size=40, num_classes=3, embed_dim=16, hidden_dim=16, lstm_dims=[16, 16])
    model = TextClassifier(cfg)
    g = torch.Generator().manual_seed(1)
    batch = ClassifyBatch(torch.randint(1, 40, (12, 9), generator=g), torch.full((12,), 9), torch.arange(12) % 3)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        opt.zero_grad()
        out = model.loss(batch)
        out["loss"].backward()
        opt.step()
    assert out["accuracy"].item() == 1.0 and out["loss"].item() < 0.05


# ---------------------------------------------------------------------------------------------------- the CLI
def test_train_predict_eval_and_reload_identical(rt_slice, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(rt_slice, out, "epochs=2") == 0
    for name in ("config.json", "model.safetensors", "tokenizer.json", "metrics.jsonl"):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["format_version"] == 1 and cfg["model_type"] == "classifier" and cfg["labels"] == ["neg", "pos"]
    texts = ["a gorgeous and moving film", "dull , lifeless and far too long"]
    first = Classifier.from_run_dir(out).predict(texts)
    second = Classifier.from_run_dir(out).predict(texts)
    assert first == second
    assert set(first[0]["probabilities"]) == {"neg", "pos"}
    assert abs(sum(first[0]["probabilities"].values()) - 1) < 1e-6
    capsys.readouterr()
    assert main(["classify", "predict", str(out), texts[0], "--jsonl"]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["label"] == first[0]["label"] and line["probability"] == pytest.approx(first[0]["probability"])
    png = tmp_path / "cm.png"
    assert main(["classify", "eval", str(out), "--data", str(rt_slice / "test.jsonl"), "--confusion-png", str(png)]) == 0
    report = capsys.readouterr().out
    assert "accuracy" in report and "macro F1" in report and "true \\ pred" in report
    assert png.stat().st_size > 1000
    assert main(["plot", str(out), "-o", str(tmp_path / "curves.png")]) == 0


def test_cli_resume_equals_straight_run(rt_slice, tmp_path):
    assert _train(rt_slice, tmp_path / "a", "epochs=2", "data.val_split=0.2") == 0
    assert _train(rt_slice, tmp_path / "b", "epochs=1", "data.val_split=0.2") == 0
    assert _train(rt_slice, tmp_path / "b", "epochs=2", "data.val_split=0.2", "--resume") == 0
    # --resume with neither --preset nor the old overrides continues with the run's own saved config
    assert _train(rt_slice, tmp_path / "c", "epochs=1", "data.val_split=0.2") == 0
    assert main(["classify", "train", "--data", str(rt_slice / "train.jsonl"), "--out", str(tmp_path / "c"),
                 "--resume", "epochs=2"]) == 0
    c = json.loads((tmp_path / "c" / "config.json").read_text())
    assert c["model"]["lstm_dims"] == [8, 8] and c["data"]["val_split"] == 0.2
    assert (tmp_path / "b" / "metrics.jsonl").read_text().count('"split"') == (tmp_path / "c" / "metrics.jsonl").read_text().count('"split"')
    a = load_tensors(tmp_path / "a" / "checkpoints" / json.loads((tmp_path / "a/checkpoints/last.json").read_text())["dir"] / "model.safetensors")
    b = load_tensors(tmp_path / "b" / "checkpoints" / json.loads((tmp_path / "b/checkpoints/last.json").read_text())["dir"] / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = load_tensors(tmp_path / "c" / "checkpoints" / json.loads((tmp_path / "c/checkpoints/last.json").read_text())["dir"] / "model.safetensors")
    assert a.keys() == c.keys() and all(torch.equal(a[k], c[k]) for k in a)


def test_bilstm_learns_real_sentiment(rt_slice, tmp_path, capsys):
    out = tmp_path / "bi"
    assert _train(rt_slice, out, "epochs=8", "train.patience=0", "train.warmup_steps=0", "train.batch_size=16", "lr=0.01",
                  "model.dropout=0", "model.embed_dropout=0", "data.min_freq=1", "data.val_split=0",
                  preset="bilstm", tiny=TINY_BI) == 0
    capsys.readouterr()
    assert main(["classify", "eval", str(out), "--data", str(rt_slice / "train.jsonl"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["accuracy"] > 0.9  # fits its (real) training data


def test_multiclass_string_and_int_labels_from_csv(tmp_path, rt_slice):
    rows = [json.loads(x) for x in (rt_slice / "train.jsonl").read_text().splitlines()][:90]
    csv = tmp_path / "three.csv"
    with open(csv, "w", encoding="utf-8") as fh:
        fh.write("id,title,body,stars\n")
        for i, r in enumerate(rows):
            words = r["text"].replace('"', "'").split()
            fh.write(f'{i},"{" ".join(words[:3])}","{" ".join(words[3:])}",{i % 3}\n')
    out = tmp_path / "m"
    rc = main(["classify", "train", "--data", str(csv), "--text-column", "title,body", "--label-column", "stars",
               "--preset", "bilstm", "--out", str(out), *TINY_BI, "epochs=1"])
    assert rc == 0
    assert json.loads((out / "config.json").read_text())["labels"] == ["0", "1", "2"]
    assert len(Classifier.from_run_dir(out).predict(["a film"])[0]["probabilities"]) == 3


# --------------------------------------------------------------------------------------------- bad input paths
def _err(capsys, argv) -> str:
    capsys.readouterr()
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 2, captured
    assert "Traceback" not in captured.err
    lines = [x for x in captured.err.strip().splitlines() if x.strip()]
    assert 1 <= len(lines) <= 3, captured.err
    return captured.err


def test_bad_inputs(rt_slice, tmp_path, capsys, shared_data):
    train = ["classify", "train", "--preset", "seed-lstm", *TINY]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert "empty" in _err(capsys, [*train, "--data", str(empty), "--out", str(tmp_path / "e")])

    csv = tmp_path / "d.csv"
    csv.write_text("review,sentiment\ngood film,pos\nbad film,neg\n")
    msg = _err(capsys, [*train, "--data", str(csv), "--text-column", "reviw", "--label-column", "sentiment", "--out", str(tmp_path / "c")])
    assert "reviw" in msg and "review" in msg

    one = tmp_path / "one.jsonl"
    one.write_text('{"text": "fine", "label": "pos"}\n{"text": "great", "label": "pos"}\n')
    assert "only 1 class" in _err(capsys, [*train, "--data", str(one), "--out", str(tmp_path / "o")])

    blank = tmp_path / "blank.jsonl"
    blank.write_text('{"text": "fine", "label": "pos"}\n{"text": "  ", "label": "neg"}\n')
    assert "blank.jsonl:2" in _err(capsys, [*train, "--data", str(blank), "--out", str(tmp_path / "b")])

    cp = shared_data / "rt-polarity" / "rt-polarity"
    msg = _err(capsys, [*train, "--data", str(cp), "--format", "lines", "--out", str(tmp_path / "cp")])
    assert "cp1252" in msg

    assert "did you mean 'seed-lstm'" in _err(capsys, ["classify", "train", "--data", str(csv), "--preset", "seed-lstn", "--out", str(tmp_path / "x")])
    assert "did you mean 'epochs'" in _err(capsys, [*train, "--data", str(csv), "--out", str(tmp_path / "x"), "epoch=2"])
    assert "expected an integer" in _err(capsys, [*train, "--data", str(csv), "--out", str(tmp_path / "x"), "epochs=two"])

    run = tmp_path / "run"
    assert _train(rt_slice, run, "epochs=1", "train.max_steps=2") == 0
    before = (run / "model.safetensors").read_bytes()
    assert "--overwrite" in _err(capsys, [*train, "--data", str(rt_slice / "train.jsonl"), "--out", str(run)])
    assert (run / "model.safetensors").read_bytes() == before  # nothing lost
    msg = _err(capsys, [*train, "--data", str(rt_slice / "train.jsonl"), "--out", str(run), "--resume", "lr=0.5"])
    assert "config differs" in msg and "train.lr" in msg

    unseen = tmp_path / "unseen.jsonl"
    unseen.write_text('{"text": "fine", "label": "pos"}\n{"text": "meh", "label": "mixed"}\n')
    assert "never seen" in _err(capsys, ["classify", "eval", str(run), "--data", str(unseen)])

    broken = tmp_path / "broken"
    broken.mkdir()
    for f in run.iterdir():
        if f.is_file():
            (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(before[: len(before) // 3])
    assert "truncated" in _err(capsys, ["classify", "predict", str(broken), "text"])
    (broken / "model.safetensors").unlink()
    assert "missing" in _err(capsys, ["classify", "predict", str(broken), "text"])
    assert "does not exist" in _err(capsys, ["classify", "predict", str(tmp_path / "nope"), "text"])


def test_gz_input_and_stdin_predict(rt_slice, tmp_path, capsys, monkeypatch):
    gz = tmp_path / "train.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as fh:
        fh.write((rt_slice / "train.jsonl").read_text(encoding="utf-8"))
    out = tmp_path / "g"
    assert main(["classify", "train", "--data", str(gz), "--preset", "seed-lstm", "--out", str(out), *TINY, "train.max_steps=3"]) == 0
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("great fun\nawful\n"))
    capsys.readouterr()
    assert main(["classify", "predict", str(out), "-"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_pretrained_vectors_initialise_and_freeze_the_embedding(rt_slice, tmp_path, capsys):
    # a word2vec text file with 3 words of the training vocabulary and one word it never saw
    vecs = {"film": [0.5] * 16, "movie": [-0.25] * 16, "the": [1.0] * 16, "zzzunseen": [2.0] * 16}
    path = tmp_path / "vectors.txt"
    path.write_text(f"{len(vecs)} 16\n" + "".join(f"{w} {' '.join(map(str, v))}\n" for w, v in vecs.items()))
    out = tmp_path / "pv"
    capsys.readouterr()
    rc = main(["classify", "train", "--data", str(rt_slice / "train.jsonl"), "--preset", "bilstm", "--out", str(out),
               "--pretrained-vectors", str(path), "--freeze-embeddings", *TINY_BI, "train.max_steps=3"])
    assert rc == 0
    msg = capsys.readouterr().out
    assert "pretrained vectors: 3 of" in msg
    pipe = Classifier.from_run_dir(out)
    stoi = pipe.encoder.vocab.stoi
    emb = pipe.model.embedding.weight
    assert torch.allclose(emb[stoi["film"]], torch.full((16,), 0.5))
    assert torch.allclose(emb[stoi["the"]], torch.full((16,), 1.0))
    capsys.readouterr()
    bad = main(["classify", "train", "--data", str(rt_slice / "train.jsonl"), "--preset", "bilstm", "--out", str(tmp_path / "pv2"),
                "--pretrained-vectors", str(path), "train.max_steps=1", "model.embed_dim=8"])
    assert bad == 2 and "model.embed_dim=16" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- kill and resume
_KILL_ARGS = ["model.embed_dim=16", "model.hidden_dim=8", "train.batch_size=16", "train.epochs=3", "train.save_every=4",
              "train.num_threads=1", "train.device=cpu", "train.progress=false", "train.tensorboard=false",
              "train.log_every=1", "data.val_split=0.1", "train.seed=3"]


def _classify_cmd(rt_slice, out, *flags):
    code = "import sys; from lmlab.cli import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, "classify", "train", "--data", str(rt_slice / "train.jsonl"),
            "--preset", "bilstm", "--out", str(out), *flags, *_KILL_ARGS]


def _wait_step(run_dir: Path, step: int, proc, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    pointer = run_dir / "checkpoints" / "last.json"
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads(pointer.read_text())["step"] >= step:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)


@pytest.mark.slow
def test_sigkill_at_three_points_then_resume_is_bit_identical(rt_slice, tmp_path):
    """Kill -9 three times mid-training, resume each time: the final weights equal an uninterrupted run's."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = tmp_path / "straight"
    subprocess.run(_classify_cmd(rt_slice, straight), env=env, check=True, capture_output=True)
    run = tmp_path / "killed"
    flags: list[str] = []
    for step in (4, 16, 28):
        proc = subprocess.Popen(_classify_cmd(rt_slice, run, *flags), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        _wait_step(run, step, proc)
        proc.kill()
        proc.wait()
        flags = ["--resume"]
    subprocess.run(_classify_cmd(rt_slice, run, "--resume"), env=env, check=True, capture_output=True)
    for name in ("model.safetensors",):
        a, b = load_tensors(straight / name), load_tensors(run / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    last_a = json.loads((straight / "checkpoints" / "last.json").read_text())
    last_b = json.loads((run / "checkpoints" / "last.json").read_text())
    assert last_a["step"] == last_b["step"]
    wa = load_tensors(straight / "checkpoints" / last_a["dir"] / "model.safetensors")
    wb = load_tensors(run / "checkpoints" / last_b["dir"] / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    steps = [(r["split"], r["step"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
    assert len(steps) == len(set(steps)), "a step was logged twice after resume"
    assert steps == [(r["split"], r["step"]) for r in map(json.loads, (straight / "metrics.jsonl").read_text().splitlines())]


# ------------------------------------------------------------------------------ the linear (fastText) model
TINY_LIN = ["model.embed_dim=8", "model.bigram_buckets=4096", "train.progress=false", "train.tensorboard=false",
            "train.num_threads=1"]


def test_linear_shapes_rows_and_padding():
    torch.manual_seed(0)
    cfg = ClassifierConfig(arch="linear", vocab_size=30, num_classes=2, embed_dim=6, bigram_buckets=11)
    cfg.validate()
    model = TextClassifier(cfg).eval()
    # only the bag (vocabulary + bigram buckets) and the output layer; the output starts at zero as in fastText
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {
        "bag.weight": (41, 6), "out.weight": (1, 6), "out.bias": (1,)}
    assert not model.out.weight.any() and not model.bag.weight[0].any()
    ids, lengths = torch.tensor([[5, 6, 7, 0], [9, 3, 0, 0]]), torch.tensor([3, 2])
    assert model(ids, lengths).shape == (2,) and model.probabilities(ids, lengths).shape == (2, 2)
    with torch.no_grad():
        model.out.weight.normal_()
    # the text's vector is the mean of its word rows and its hashed bigram rows, nothing else
    w = model.bag.weight
    h0 = w[[5, 6, 7, 30 + (5 * 1_000_003 + 6) % 11, 30 + (6 * 1_000_003 + 7) % 11]].mean(0)
    h1 = w[[9, 3, 30 + (9 * 1_000_003 + 3) % 11]].mean(0)
    want = torch.stack([h0, h1]) @ model.out.weight[0] + model.out.bias
    torch.testing.assert_close(model(ids, lengths), want)
    # what lies beyond a text's length changes nothing
    longer = torch.tensor([[5, 6, 7, 9, 9, 9], [9, 3, 4, 4, 4, 4]])
    torch.testing.assert_close(model(longer, lengths), want)
    # pretrained word vectors (--pretrained-vectors) fill the word rows of the bag, never the bigram rows
    vectors, found = torch.randn(30, 6), torch.arange(30) % 2 == 1
    bigrams = model.bag.weight[30:].clone()
    model.load_pretrained(vectors, found)
    assert torch.equal(model.bag.weight[:30][found], vectors[found]) and torch.equal(model.bag.weight[30:], bigrams)
    multi = TextClassifier(ClassifierConfig(arch="linear", vocab_size=30, num_classes=4, embed_dim=6))
    assert multi(ids, lengths).shape == (2, 4) and multi.bag.weight.shape == (30, 6)  # unigrams only
    with pytest.raises(ConfigError, match="bilstm option.*embed_dim"):
        ClassifierConfig(arch="linear", bag_dim=4).validate()
    with pytest.raises(ConfigError, match="linear option"):
        ClassifierConfig(arch="bilstm", sparse=True).validate()


@pytest.mark.parametrize("sparse", [False, True])
def test_linear_overfits_one_batch(sparse):
    from lmlab.data.classification import ClassifyBatch

    torch.manual_seed(0)
    cfg = ClassifierConfig(arch="linear", vocab_size=40, num_classes=3, embed_dim=16, bigram_buckets=64, sparse=sparse)
    model = TextClassifier(cfg)
    assert hasattr(model, "manual_step") == sparse  # only the sparse linear model steps itself
    g = torch.Generator().manual_seed(1)
    batch = ClassifyBatch(torch.randint(1, 40, (12, 9), generator=g), torch.full((12,), 9), torch.arange(12) % 3)
    opt = torch.optim.SGD(model.parameters(), lr=2.0)  # SGD takes the sparse gradient as it is
    for _ in range(300):
        opt.zero_grad()
        out = model.loss(batch)
        out["loss"].backward()
        opt.step()
    assert model.bag.weight.grad.is_sparse == sparse
    assert out["accuracy"].item() == 1.0 and out["loss"].item() < 0.05


@pytest.fixture(scope="module")
def rt_bigger(shared_data, tmp_path_factory) -> Path:
    """2,000 rt-polarity snippets to train on and 600 held out (disjoint, balanced)."""
    pos = (shared_data / "rt-polarity" / "rt-polarity.pos.utf8").read_text(encoding="utf-8").splitlines()
    neg = (shared_data / "rt-polarity" / "rt-polarity.neg.utf8").read_text(encoding="utf-8").splitlines()
    root = tmp_path_factory.mktemp("rt-big")
    for name, lo, hi in (("train.jsonl", 1000, 2000), ("test.jsonl", 4000, 4300)):
        with open(root / name, "w", encoding="utf-8") as fh:
            for p, n in zip(pos[lo:hi], neg[lo:hi], strict=True):
                fh.write(json.dumps({"text": p, "label": "pos"}) + "\n")
                fh.write(json.dumps({"text": n, "label": "neg"}) + "\n")
    return root


def test_linear_preset_learns_held_out_sentiment_and_round_trips(rt_bigger, tmp_path, capsys):
    out = tmp_path / "lin"
    args = ["classify", "train", "--data", str(rt_bigger / "train.jsonl"), "--preset", "linear", "--out", str(out),
            *TINY_LIN, "data.val_split=0.1"]
    assert main(args) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["arch"] == "linear" and cfg["model"]["sparse"] and cfg["train"]["optimizer"] == "sgd"
    capsys.readouterr()
    assert main(["classify", "eval", str(out), "--data", str(rt_bigger / "test.jsonl"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["accuracy"] > 0.62, report  # 600 held-out snippets: chance is 0.5 (+-0.04 at 2 sigma)
    # save -> load -> identical predictions, through the pipeline every command and the server use
    texts = ["a gorgeous , witty and moving film", "dull , lifeless and far too long"]
    first = Classifier.from_run_dir(out).predict(texts)
    assert first == ClassifyRecipe.load(out).predict(texts)
    assert [p["label"] for p in first] == ["pos", "neg"]
    weights = load_tensors(out / "model.safetensors")
    assert set(weights) == {"bag.weight", "out.weight", "out.bias"}
    assert weights["bag.weight"].shape == (cfg["model"]["vocab_size"] + 4096, 8)


def test_linear_sparse_needs_plain_sgd(rt_slice, tmp_path, capsys):
    msg = _err(capsys, ["classify", "train", "--data", str(rt_slice / "train.jsonl"), "--preset", "linear",
                        "--out", str(tmp_path / "a"), *TINY_LIN, "train.optimizer=adam", "lr=0.01"])
    assert "train.optimizer=sgd" in msg and not (tmp_path / "a" / "model.safetensors").exists()
    # dense gradients go through the trainer's own step, any optimizer
    assert main(["classify", "train", "--data", str(rt_slice / "train.jsonl"), "--preset", "linear", "--out",
                 str(tmp_path / "b"), *TINY_LIN, "model.sparse=false", "train.optimizer=adam", "lr=0.01", "epochs=1"]) == 0


def test_linear_sparse_step_equals_dense_sgd_and_clips():
    from types import SimpleNamespace

    from lmlab.data.classification import ClassifyBatch

    g = torch.Generator().manual_seed(2)
    batch = ClassifyBatch(torch.randint(1, 20, (6, 8), generator=g), torch.tensor([8, 8, 5, 3, 8, 1]), torch.arange(6) % 2)
    models = []
    for sparse in (False, True):
        torch.manual_seed(0)
        models.append(TextClassifier(ClassifierConfig(arch="linear", vocab_size=20, num_classes=2, embed_dim=4,
                                                      bigram_buckets=8, sparse=sparse)))
    dense, sparse = models
    for clip in (0.0, 1e-3):
        trainer = SimpleNamespace(config=SimpleNamespace(grad_clip=clip), state=SimpleNamespace(step=0))
        before = {k: v.clone() for k, v in sparse.state_dict().items()}
        opt_d, opt_s = torch.optim.SGD(dense.parameters(), lr=3.0), torch.optim.SGD(sparse.parameters(), lr=3.0)
        for _ in range(3):
            opt_d.zero_grad()
            dense.loss(batch)["loss"].backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(dense.parameters(), clip)
            opt_d.step()
            sparse.manual_step(batch, [opt_s], trainer)  # repeated rows of the uncoalesced gradient are summed
        for k, v in dense.state_dict().items():
            torch.testing.assert_close(sparse.state_dict()[k], v)
        if clip:  # three clipped steps move the weights by at most 3 * lr * clip
            moved = torch.cat([(sparse.state_dict()[k] - before[k]).flatten() for k in before]).norm()
            assert 0 < moved <= 3 * 3.0 * clip + 1e-6
