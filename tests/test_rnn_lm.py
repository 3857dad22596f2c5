"""RNN language models: data layout for truncated BPTT, the model, training through the trainer, the CLI."""

from __future__ import annotations

import gzip
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from lmlab.cli import main
from lmlab.config import config_from_dict, list_presets, load_preset
from lmlab.data.lm import BPTTBatches, LMCodec, LMDataConfig, read_text
from lmlab.errors import ConfigError, DataError, TrainingError
from lmlab.generation import SamplingConfig, beam_search
from lmlab.models.rnn import select_state
from lmlab.models.rnn_lm import RNNLM, RNNLMConfig
from lmlab.pipelines import Generator, load
from lmlab.recipes.lm import LMRecipe, LMRunConfig

resolve_run_config = LMRecipe.resolve

TINY = ["model.embed_dim=16", "model.hidden_dim=32", "model.num_layers=1", "train.progress=false",
        "train.tensorboard=false", "train.eval_every=0"]


@pytest.fixture(scope="module")
def shakespeare_slice(tmp_path_factory, shared_data: Path) -> Path:
    """The first 30,000 characters of tiny Shakespeare, as a plain text file."""
    with gzip.open(shared_data / "tinyshakespeare" / "input.txt.gz", "rt", encoding="utf-8") as f:
        text = f.read(30_000)
    path = tmp_path_factory.mktemp("lm") / "shakespeare-30k.txt"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def char_run(tmp_path_factory, shakespeare_slice: Path) -> Path:
    """A tiny character LSTM trained for 40 steps through the CLI."""
    out = tmp_path_factory.mktemp("runs") / "char"
    rc = main(["lm", "train", "--data", str(shakespeare_slice), "--preset", "char-shakespeare", "--out", str(out),
               *TINY, "train.max_steps=40", "train.batch_size=8", "data.bptt=32", "data.eval_batch_size=4",
               "train.lr=0.01", "train.warmup_steps=0"])
    assert rc == 0
    return out


def test_every_preset_loads_and_builds() -> None:
    names = list_presets("lm")
    assert {"ptb-small", "ptb-recommended", "char-shakespeare"} <= set(names)
    for name in names:
        run = config_from_dict(LMRunConfig, load_preset(name, "lm"), where=name)
        run.model.vocab_size = 100
        model = RNNLM(run.model)
        logits, _ = model(torch.randint(0, 100, (2, 5)))
        assert logits.shape == (2, 5, 100)
    small = resolve_run_config("ptb-small")
    assert (small.model.num_layers, small.model.hidden_dim, small.data.bptt, small.train.batch_size) == (2, 200, 35, 20)
    assert (small.train.optimizer, small.train.lr, small.train.grad_clip, small.train.epochs) == ("sgd", 1.0, 5.0, 13)


def test_bad_config_values_are_reported() -> None:
    with pytest.raises(ConfigError, match="did you mean 'hidden_dim'"):
        resolve_run_config("ptb-small", ["model.hiden_dim=3"])
    with pytest.raises(ConfigError, match="bptt"):
        resolve_run_config("ptb-small", ["data.bptt=0"])
    with pytest.raises(ConfigError, match="vocab_size"):
        resolve_run_config("ptb-small", ["data.tokenizer=bpe"])


def test_reads_ptb_and_wikitext_with_published_token_counts(shared_data: Path) -> None:
    cfg = LMDataConfig(tokenizer="whitespace")
    for path, expected in [
        (shared_data / "ptb" / "ptb.valid.txt", 73_760),
        (shared_data / "ptb" / "ptb.test.txt", 82_430),
        (shared_data / "wikitext-2" / "wiki.test.tokens.gz", 245_569),
    ]:
        text = read_text(path, cfg)
        codec = LMCodec.fit(text, cfg)
        ids, unk = codec.encode_text(text)
        assert ids.numel() == expected  # words + one <eos> per line, as the published counts
        assert unk == 0  # the literal <unk> of these files is a word, not an OOV event
        assert codec.vocab.itos[int(ids[0])] != "<unk>"
    ptb = LMCodec.fit(read_text(shared_data / "ptb" / "ptb.valid.txt", cfg), cfg)
    assert len(ptb.vocab) <= 10_000 + 4  # PTB's 10k-word vocabulary (+ our <pad> <bos>)
    assert ptb.vocab["<unk>"] == ptb.vocab.unk_id


def test_bptt_batches_are_contiguous_rows_and_reject_short_corpora() -> None:
    ids = torch.arange(103)
    batches = BPTTBatches(ids, batch_size=4, bptt=5)
    # 103 // 4 = 25 tokens per row; 24 targets per row -> 5 batches (the last one 4 steps long)
    assert len(batches) == 5 and batches.num_tokens == 96
    seen = list(batches)
    assert [b.inputs.shape[1] for b in seen] == [5, 5, 5, 5, 4]
    for b in seen:
        assert torch.equal(b.targets, b.inputs + 1)
    rows = torch.cat([b.inputs for b in seen], dim=1)  # (4, 24): every row continues across batches
    assert torch.equal(rows, torch.arange(100).view(4, 25)[:, :24])
    assert [b.inputs[0, 0].item() for b in batches.iter_from(3)] == [15, 20]
    with pytest.raises(DataError, match="fewer than one BPTT batch"):
        BPTTBatches(torch.arange(20), batch_size=4, bptt=5, name="train")


def test_hidden_state_is_carried_across_batches_and_detached() -> None:
    torch.manual_seed(0)
    model = RNNLM(RNNLMConfig(vocab_size=20, embed_dim=8, hidden_dim=8, num_layers=2))
    data = BPTTBatches(torch.randint(0, 20, (400,)), batch_size=4, bptt=10)
    first, second = list(data)[:2]
    model.loss(first)
    h, c = model.carried_state
    assert not h.requires_grad and h.grad_fn is None and h.shape == (2, 4, 8)
    _, (h_ref, c_ref) = model(first.inputs)
    torch.testing.assert_close(h, h_ref.detach())
    # the second batch starts from the carried state, not from zeros
    out = model.loss(second)
    logits, _ = model(second.inputs, (h, c))
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 20), second.targets.reshape(-1))
    torch.testing.assert_close(out["loss"], expected)
    from_zero = torch.nn.functional.cross_entropy(model(second.inputs)[0].reshape(-1, 20), second.targets.reshape(-1))
    assert not torch.allclose(out["loss"], from_zero)
    out["loss"].backward()  # only through the second batch: the first graph is gone
    model.on_epoch_start(1)
    assert model.carried_state is None


def test_overfits_one_batch(shakespeare_slice: Path) -> None:
    torch.manual_seed(0)
    cfg = LMDataConfig(tokenizer="char")
    text = read_text(shakespeare_slice, cfg)[:2000]
    codec = LMCodec.fit(text, cfg)
    batch = next(iter(BPTTBatches(codec.encode_text(text)[0], batch_size=8, bptt=32)))
    model = RNNLM(RNNLMConfig(vocab_size=codec.vocab_size, embed_dim=16, hidden_dim=64, num_layers=1, init_range=0))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        model.carried_state = None
        loss = model.loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.15


def test_reference_cells_give_the_same_language_model() -> None:
    torch.manual_seed(1)
    model = RNNLM(RNNLMConfig(cell="gru", vocab_size=30, embed_dim=8, hidden_dim=12, num_layers=2, tie_weights=True))
    assert model.decoder.weight is model.embedding.weight and model.proj is not None
    ids = torch.randint(0, 30, (3, 9))
    fused, _ = model(ids)
    model.rnn.impl = "reference"
    torch.testing.assert_close(model(ids)[0], fused, atol=1e-5, rtol=1e-5)


def test_cli_train_eval_generate_char(char_run: Path, shakespeare_slice: Path, capsys) -> None:
    config = json.loads((char_run / "config.json").read_text())
    assert config["model_type"] == "rnn_lm" and config["data"]["tokenizer"] == "char"
    assert (char_run / "model.safetensors").is_file() and (char_run / "vocab.json").is_file()
    capsys.readouterr()
    assert main(["lm", "eval", str(char_run), "--data", str(shakespeare_slice), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bpc"] == pytest.approx(result["loss"] / 0.6931471805599453)
    assert 1.0 < result["loss"] < 3.5  # better than uniform over ~60 characters (4.1 nats) after 40 steps

    args = ["lm", "generate", str(char_run), "--prompt", "ROMEO:", "--max-new-tokens", "60", "--seed", "7",
            "--top-k", "10"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first  # seeded sampling is reproducible
    assert first.startswith("ROMEO:") and len(first) > 40

    assert main(["lm", "generate", str(char_run), "--prompt", "Zoë ☃", "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "'ë'" in err and "'☃'" in err and "never saw" in err
    assert main(["lm", "generate", str(char_run), "--top-p", "1.5"]) == 2
    assert "top_p" in capsys.readouterr().err


def test_generator_pipeline_streams_stops_and_matches_greedy_beam(char_run: Path) -> None:
    pipe = load(char_run)
    assert isinstance(pipe, Generator)
    cfg = SamplingConfig(max_new_tokens=80, seed=3, temperature=0.8)
    events = list(pipe.stream("First", cfg))
    full = pipe.generate("First", cfg)
    assert "".join(e["text"] for e in events[:-1]) == full["text"]
    assert events[-1] == {"finish_reason": "length", "prompt_tokens": 5, "completion_tokens": 80}
    stopped = pipe.generate("First", cfg, stop=["\n"])
    assert "\n" not in stopped["text"] and full["text"].startswith(stopped["text"])
    assert stopped["finish_reason"] == "stop"
    # top-k 1 is greedy
    assert pipe.generate("First", max_new_tokens=30, top_k=1, seed=1) == pipe.generate("First", max_new_tokens=30, greedy=True)

    model, codec, _ = LMRecipe.load_model(char_run)
    prompt = codec.encode_prompt("First Citizen:")
    greedy = model.generate([prompt], SamplingConfig(greedy=True, max_new_tokens=25))[0]

    def step(ids, state):  # start from the prompt's state on the first call (the "BOS" step)
        if state is None or isinstance(state, dict):
            logits, state = model.step(torch.tensor([prompt] * ids.shape[0]), None)
            return logits, state
        return model.step(ids, state)

    hyps = beam_search(step, None, lambda s, i: None if s is None else select_state(s, i), bos_id=0, eos_id=-1,
                       beam_size=1, max_len=25)
    assert hyps[0][0].tokens == greedy


def test_word_level_prompt_with_unknown_words_warns(tmp_path: Path, shared_data: Path) -> None:
    lines = (shared_data / "ptb" / "ptb.valid.txt").read_text().splitlines()[:300]
    data = tmp_path / "ptb-300.txt"
    data.write_text("\n".join(lines) + "\n")
    run = resolve_run_config("ptb-small", TINY + ["train.max_steps=3", "train.batch_size=4", "data.eval_batch_size=2"])
    result = LMRecipe(run, data=data, val=data, log=lambda s: None).train(tmp_path / "word")
    assert result.step == 3
    pipe = Generator.from_run_dir(tmp_path / "word")
    with pytest.warns(UserWarning, match="'zyzzyva'"):
        text = pipe.generate("the zyzzyva said", max_new_tokens=12, seed=0)["text"]
    assert text.startswith(" ") and "<eos>" not in text
    assert pipe.codec.decode([pipe.codec.vocab["the"], pipe.codec.vocab.eos_id, pipe.codec.vocab["a"]]) == " the\na"


def test_bpe_language_model_and_too_large_bpe_vocab(tmp_path: Path, shakespeare_slice: Path, capsys) -> None:
    out = tmp_path / "bpe"
    rc = main(["lm", "train", "--data", str(shakespeare_slice), "--preset", "char-shakespeare", "--out", str(out),
               *TINY, "data.tokenizer=bpe", "data.vocab_size=300", "train.max_steps=3", "train.batch_size=4",
               "data.bptt=16", "data.eval_batch_size=2"])
    assert rc == 0
    capsys.readouterr()
    assert main(["lm", "eval", str(out), "--data", str(shakespeare_slice)]) == 0
    report = capsys.readouterr().out
    assert "bits/char" in report and "perplexity" in report
    rc = main(["lm", "train", "--data", str(shakespeare_slice), "--preset", "char-shakespeare", "--out",
               str(tmp_path / "bpe-big"), *TINY, "data.tokenizer=bpe", "data.vocab_size=200000"])
    assert rc == 2
    assert "larger than this corpus allows" in capsys.readouterr().err


def test_corpus_shorter_than_one_batch_is_refused(tmp_path: Path, capsys) -> None:
    data = tmp_path / "short.txt"
    data.write_text("to be or not to be\n")
    rc = main(["lm", "train", "--data", str(data), "--preset", "char-shakespeare", "--out", str(tmp_path / "r"), *TINY])
    assert rc == 2
    err = capsys.readouterr().err
    assert "fewer than one BPTT batch" in err and "train.batch_size" in err


def _blow_up(tmp_path: Path, data: Path) -> tuple[str, dict]:
    run = resolve_run_config(
        "char-shakespeare",
        TINY + ["train.optimizer=sgd", "train.lr=1e5", "train.grad_clip=0", "train.warmup_steps=0",
                "train.save_every=1", "train.max_steps=60", "train.batch_size=4", "data.bptt=16", "model.init_range=0.5",
                "data.val_fraction=0"],
    )
    with pytest.raises(TrainingError) as err:
        LMRecipe(run, data=data, log=lambda s: None).train(tmp_path / "nan")
    pointer = json.loads((tmp_path / "nan" / "checkpoints" / "last.json").read_text())
    return str(err.value), pointer


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path: Path, shakespeare_slice: Path) -> None:
    message, pointer = _blow_up(tmp_path, shakespeare_slice)
    assert "at step" in message and "train.lr" in message and "grad_clip" in message
    step = int(message.split("at step ")[1].split()[0])
    assert pointer["step"] == step - 1 >= 1  # training stopped at once; the checkpoint before it is kept


def test_the_checkpoint_kept_after_a_nan_loss_has_finite_weights(tmp_path: Path, shakespeare_slice: Path) -> None:
    from lmlab.checkpoint import load_tensors

    _, pointer = _blow_up(tmp_path, shakespeare_slice)
    tensors = load_tensors(tmp_path / "nan" / "checkpoints" / pointer["dir"] / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in tensors.values())


def test_resume_continues_and_refuses_a_changed_model(tmp_path: Path, shakespeare_slice: Path) -> None:
    from lmlab.errors import CheckpointError

    base = TINY + ["train.batch_size=4", "data.bptt=16", "data.val_fraction=0"]
    out = tmp_path / "run"

    def recipe(*extra: str) -> LMRecipe:
        return LMRecipe.from_preset("char-shakespeare", base + list(extra), data=shakespeare_slice, log=lambda s: None)

    first = recipe("train.max_steps=3").train(out)
    assert first.step == 3
    again = recipe("train.max_steps=6").train(out, resume=True)
    assert again.step == 6
    with pytest.raises(CheckpointError, match="model.hidden_dim"):
        recipe("train.max_steps=9", "model.hidden_dim=48").train(out, resume=True)


# ------------------------------------------------------------------------------------------- exact resume
def test_carried_state_round_trips_and_resets_only_in_a_new_epoch() -> None:
    torch.manual_seed(0)
    model = RNNLM(RNNLMConfig(vocab_size=20, embed_dim=8, hidden_dim=8, num_layers=2))
    batch = next(iter(BPTTBatches(torch.randint(0, 20, (400,)), batch_size=4, bptt=10)))
    model.on_epoch_start(3)
    model.loss(batch)
    saved = model.training_state()
    h, c = model.carried_state
    assert saved["epoch"] == 3 and saved["is_tuple"] and torch.equal(saved["hidden"][0], h)

    inside = RNNLM(RNNLMConfig(vocab_size=20, embed_dim=8, hidden_dim=8, num_layers=2))
    inside.load_training_state(saved)
    inside.on_epoch_start(3)  # resumed inside epoch 3: the next batch continues from the saved state
    assert torch.equal(inside.carried_state[0], h) and torch.equal(inside.carried_state[1], c)
    inside.on_epoch_start(4)
    assert inside.carried_state is None

    after = RNNLM(RNNLMConfig(vocab_size=20, embed_dim=8, hidden_dim=8, num_layers=2))
    after.load_training_state(saved)
    after.on_epoch_start(4)  # saved at the end of epoch 3: epoch 4 starts from zeros, as without a restart
    assert after.carried_state is None

    gru = RNNLM(RNNLMConfig(cell="gru", vocab_size=20, embed_dim=8, hidden_dim=8, num_layers=1))
    gru.on_epoch_start(0)
    gru.loss(batch)
    restored = RNNLM(RNNLMConfig(cell="gru", vocab_size=20, embed_dim=8, hidden_dim=8, num_layers=1))
    restored.load_training_state(gru.training_state())
    restored.on_epoch_start(0)
    assert torch.equal(restored.carried_state, gru.carried_state)
    empty = RNNLM(RNNLMConfig(vocab_size=20, embed_dim=8, hidden_dim=8, num_layers=1))
    empty.load_training_state(RNNLM(RNNLMConfig(vocab_size=20, embed_dim=8, hidden_dim=8, num_layers=1)).training_state())
    assert empty.carried_state is None


def test_resume_in_process_matches_an_uninterrupted_run(tmp_path: Path, shakespeare_slice: Path) -> None:
    """Stopped (max_steps) inside an epoch and at an epoch's last batch, then resumed: the same weights."""
    from lmlab.callbacks import find_last_checkpoint
    from lmlab.checkpoint import load_tensors

    data = tmp_path / "short.txt"
    data.write_text(shakespeare_slice.read_text(encoding="utf-8")[:3000], encoding="utf-8")
    base = TINY + ["train.batch_size=8", "data.bptt=32", "data.val_fraction=0", "train.schedule=constant",
                   "train.warmup_steps=0", "model.dropout=0.2", "train.num_threads=1", "train.device=cpu"]

    def train(out: Path, steps: int, resume: bool = False) -> int:
        recipe = LMRecipe.from_preset("char-shakespeare", base + [f"train.max_steps={steps}"], data=data,
                                      log=lambda s: None)
        return recipe.train(out, resume=resume).step

    assert train(tmp_path / "straight", 30) == 30
    per_epoch = len(BPTTBatches(torch.zeros(len(read_text(data, LMDataConfig())), dtype=torch.long), 8, 32))
    assert 8 <= per_epoch < 26
    for stop in (5, per_epoch, per_epoch + 4):
        out = tmp_path / f"stopped-{stop}"
        train(out, stop)
        assert train(out, 30, resume=True) == 30
        a = load_tensors(tmp_path / "straight" / "model.safetensors")
        b = load_tensors(out / "model.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), f"resumed after step {stop}: weights differ"
        last_a = load_tensors(find_last_checkpoint(tmp_path / "straight") / "model.safetensors")
        last_b = load_tensors(find_last_checkpoint(out) / "model.safetensors")
        assert all(torch.equal(last_a[k], last_b[k]) for k in last_a)


_KILLABLE = textwrap.dedent(
    """
    import sys, time
    from lmlab.models import rnn_lm

    loss = rnn_lm.RNNLM.loss
    def slow_loss(self, batch):  # time to kill it between checkpoints; the numbers are untouched
        time.sleep({pause})
        return loss(self, batch)
    rnn_lm.RNNLM.loss = slow_loss
    from lmlab.cli import main
    sys.exit(main({args!r}))
    """
)


def _lm_process(args: list[str], pause: float) -> subprocess.Popen:
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    code = _KILLABLE.format(pause=pause, args=args)
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _checkpoint_step(run_dir: Path) -> int:
    pointer = run_dir / "checkpoints" / "last.json"
    try:
        return json.loads(pointer.read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return -1


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sigkill_three_times_and_resume_gives_the_uninterrupted_weights(tmp_path: Path, shakespeare_slice: Path) -> None:
    """Issue 21: kill -9 at three points, --resume each time; the hidden state carried between BPTT batches is in
    every checkpoint, so the final weights are bit-identical to an uninterrupted run (CPU, one thread)."""
    from lmlab.callbacks import find_last_checkpoint
    from lmlab.checkpoint import load_tensors

    data = tmp_path / "short.txt"
    data.write_text(shakespeare_slice.read_text(encoding="utf-8")[:3000], encoding="utf-8")  # ~10 batches/epoch

    def args(out: Path, *extra: str) -> list[str]:
        return ["lm", "train", "--data", str(data), "--preset", "char-shakespeare", "--out", str(out), *extra,
                "model.embed_dim=16", "model.hidden_dim=32", "model.dropout=0.2", "train.batch_size=8",
                "data.bptt=32", "data.eval_batch_size=4", "train.warmup_steps=5", "train.max_steps=36",
                "train.eval_every=0", "train.save_every=3", "train.log_every=1", "train.seed=5",
                "train.num_threads=1", "train.device=cpu", "train.progress=false", "train.tensorboard=false"]

    straight = _lm_process(args(tmp_path / "straight"), pause=0.0)
    killed = tmp_path / "killed"
    proc = _lm_process(args(killed), pause=0.04)
    for i, at in enumerate((6, 15, 24)):
        deadline = time.monotonic() + 180
        while _checkpoint_step(killed) < at:
            assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()[1][-800:]}"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        proc.kill()
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        assert _checkpoint_step(killed) < 36
        proc = _lm_process(args(killed, "--resume"), pause=0.04 if i < 2 else 0.0)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "trained 36 steps" in out
    out, err = straight.communicate(timeout=120)
    assert straight.returncode == 0, err[-2000:]

    for a, b in [
        (tmp_path / "straight" / "model.safetensors", killed / "model.safetensors"),  # best weights
        (find_last_checkpoint(tmp_path / "straight") / "model.safetensors", find_last_checkpoint(killed) / "model.safetensors"),
    ]:
        ta, tb = load_tensors(a), load_tensors(b)
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), f"{b} differs from {a}"
    rows = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["split"], r["step"]) for r in rows]
    assert len(keys) == len(set(keys)), "metrics.jsonl logs a step twice"
    lines = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    straight = {(r["split"], r["step"]): r for r in map(json.loads, lines)}
    assert ("train", 36) in keys and set(keys) <= set(straight)
    for r in rows:  # every logged loss is the uninterrupted run's (a row can be lost if the kill falls between the
        # step's checkpoint and its log line: the trainer writes the checkpoint first)
        key = "loss" if r["split"] == "train" else "val_loss"
        assert r[key] == straight[(r["split"], r["step"])][key]


# ---------------------------------------------------------------------------------- the wrong family's run
@pytest.mark.slow
def test_lm_commands_on_another_familys_run_say_so_in_one_line(tmp_path: Path, shared_data: Path,
                                                                shakespeare_slice: Path, capsys) -> None:
    """Issue 21 item 4: ``lm generate`` on a classifier run was a traceback (AttributeError)."""
    quick = ["train.max_steps=2", "train.progress=false", "train.tensorboard=false", "train.eval_every=0",
             "train.num_threads=1", "train.device=cpu"]
    reviews = tmp_path / "reviews.jsonl"
    pos = (shared_data / "rt-polarity" / "rt-polarity.pos.utf8").read_text(encoding="utf-8").splitlines()[:40]
    neg = (shared_data / "rt-polarity" / "rt-polarity.neg.utf8").read_text(encoding="utf-8").splitlines()[:40]
    reviews.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for p, n in zip(pos, neg, strict=True)
                               for t, lab in ((p, "pos"), (n, "neg"))), encoding="utf-8")
    runs = {"classifier": tmp_path / "classifier", "gpt": tmp_path / "gpt", "word2vec": tmp_path / "vectors"}
    assert main(["classify", "train", "--data", str(reviews), "--preset", "seed-lstm", "--out", str(runs["classifier"]),
                 "model.embed_dim=8", "model.hidden_dim=8", "train.batch_size=16", *quick]) == 0
    assert main(["gpt", "train", "--data", str(shakespeare_slice), "--preset", "char", "--out", str(runs["gpt"]),
                 "model.block_size=16", "model.embed_dim=16", "model.num_layers=1", "model.num_heads=2",
                 "train.batch_size=4", *quick]) == 0
    assert main(["embed", "train", "--corpus", str(shakespeare_slice), "--out", str(runs["word2vec"]),
                 "--dim", "8", "--epochs", "1", "--min-count", "5", "--threads", "1"]) == 0
    capsys.readouterr()
    for family, run in runs.items():
        for command in (["generate", str(run), "--max-new-tokens", "3"], ["eval", str(run), "--data", str(reviews)]):
            assert main(["lm", *command]) == 2, (family, command)
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "Traceback" not in err, err
            assert err.startswith("error: ") and f"holds a '{family}' model, not 'rnn_lm'" in err, err


def test_clustered_softmax_gives_exact_probabilities_and_a_cheaper_loss() -> None:
    torch.manual_seed(0)
    with pytest.raises(ConfigError, match="softmax_cutoffs"):
        RNNLM(RNNLMConfig(vocab_size=60, softmax_cutoffs=[30, 10]))
    plain = RNNLM(RNNLMConfig(vocab_size=60, embed_dim=8, hidden_dim=12, tie_weights=True, softmax_cutoffs=[60, 99]))
    assert plain.cluster is None  # cutoffs >= vocab_size are ignored: the plain softmax, the same parameters
    assert set(plain.state_dict()) == set(RNNLM(RNNLMConfig(vocab_size=60, embed_dim=8, hidden_dim=12, tie_weights=True)).state_dict())
    model = RNNLM(RNNLMConfig(vocab_size=60, embed_dim=8, hidden_dim=12, tie_weights=True, dropout=0.3,
                              softmax_cutoffs=[10, 30, 100]))
    assert model._bounds == [10, 30, 60] and model.decoder.weight is model.embedding.weight
    model.eval()
    ids, targets = torch.randint(0, 60, (3, 9)), torch.randint(0, 60, (3, 9))
    targets[0, :3] = torch.tensor([0, 15, 59])  # one target in the head and in each tail cluster
    log_probs, _ = model(ids)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(3, 9))  # normalised over the vocabulary
    full = torch.nn.functional.cross_entropy(log_probs.reshape(-1, 60), targets.reshape(-1))
    batch = BPTTBatches(torch.cat([ids, targets[:, -1:]], 1).reshape(-1), batch_size=3, bptt=9)
    batch = next(iter(batch))
    batch.targets[:] = targets
    model.carried_state = None
    loss = model.loss(batch)["loss"]  # the head for every token, each cluster only for its own targets
    torch.testing.assert_close(loss, full)
    loss.backward()
    assert model.cluster.weight.grad.abs().sum() > 0 and model.embedding.weight.grad[59].abs().sum() > 0
    assert model.embedding.weight.grad[40].abs().sum() > 0  # a word of the last cluster scored as a non-target
    assert math.isclose(model.evaluate([batch])["loss"], full.item(), rel_tol=1e-6)
    generator = torch.Generator().manual_seed(0)
    assert model.lm_logits(torch.randn(2, 4, 12, generator=generator)).exp().sum(-1).allclose(torch.ones(2, 4))


def test_word_model_with_clustered_softmax_trains_saves_loads_and_evaluates(tmp_path: Path, shared_data: Path) -> None:
    lines = (shared_data / "ptb" / "ptb.valid.txt").read_text().splitlines()[:300]
    data = tmp_path / "ptb-300.txt"
    data.write_text("\n".join(lines) + "\n")
    run = resolve_run_config("ptb-recommended", TINY + ["train.max_steps=4", "train.batch_size=4", "data.eval_batch_size=2",
                                                        "model.softmax_cutoffs=[50,300]"])
    result = LMRecipe(run, data=data, val=data, log=lambda s: None).train(tmp_path / "word")
    assert result.step == 4
    saved = json.loads((tmp_path / "word" / "config.json").read_text())
    assert saved["model"]["softmax_cutoffs"] == [50, 300]
    metrics = LMRecipe.evaluate(tmp_path / "word", data)
    pipe = Generator.from_run_dir(tmp_path / "word")
    assert pipe.model.cluster is not None and pipe.model._bounds[:2] == [50, 300]
    assert math.isclose(metrics["loss"], result.best, rel_tol=1e-5)  # the same text: the same validation loss
    assert pipe.generate("the company said", max_new_tokens=5, seed=0)["text"]
