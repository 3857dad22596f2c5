"""GPT: the math (causal mask, RoPE, parameter count, init), the KV cache, the data path, the CLI and bad input."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lmlab import distributed
from lmlab.cli import main
from lmlab.config import TrainConfig, list_presets
from lmlab.data.tokens import (
    RandomBlocks,
    SequentialBlocks,
    TokenCodec,
    TokenDataConfig,
    open_token_file,
    token_dtype,
    write_token_file,
)
from lmlab.errors import CheckpointError, ConfigError, DataError
from lmlab.generation import SamplingConfig
from lmlab.models.gpt import GPT, GPTConfig, apply_rope, num_parameters_formula
from lmlab.pipelines.gpt import GPTGenerator
from lmlab.recipes.gpt import GPTRecipe
from lmlab.trainer import Trainer

TINY = ["model.num_layers=2", "model.embed_dim=32", "model.num_heads=4", "model.block_size=16", "batch_size=8"]
QUIET = ["progress=false", "tensorboard=false", "num_threads=1", "log_every=1"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: these models are tiny, and on a shared 2-core machine two threads thrash."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shakespeare(tmp_path_factory, shared_data: Path) -> Path:
    """The first 40,000 characters of tiny Shakespeare, as a plain text file."""
    with gzip.open(shared_data / "tinyshakespeare" / "input.txt.gz", "rt", encoding="utf-8") as fh:
        text = fh.read(40_000)
    path = tmp_path_factory.mktemp("gpt-data") / "shakespeare.txt"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_run(shakespeare: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gpt-run") / "run"
    rc = main(["gpt", "train", "--data", str(shakespeare), "--preset", "nanogpt-cpu", "--out", str(out),
               *TINY, *QUIET, "max_steps=12", "eval_every=6", "save_every=6", "warmup_steps=2"])
    assert rc == 0
    return out


def _model(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = dict(vocab_size=50, block_size=24, embed_dim=32, num_layers=2, num_heads=4)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg)).eval()


# ------------------------------------------------------------------------------------------------------ math
@pytest.mark.parametrize("position", ["learned", "rope"])
def test_causal_mask_future_tokens_never_change_earlier_logits(position):
    model = _model(position=position)
    ids = torch.randint(0, 50, (2, 20))
    base = model(ids)  # (B, T, V)
    for t in (0, 7, 19):
        changed = ids.clone()
        changed[:, t:] = (changed[:, t:] + 1 + torch.randint(0, 48, changed[:, t:].shape)) % 50
        out = model(changed)
        assert torch.equal(out[:, :t], base[:, :t]) or torch.allclose(out[:, :t], base[:, :t], atol=1e-6, rtol=0)
        assert not torch.allclose(out[:, t], base[:, t])  # position t itself sees the change


def test_rope_scores_depend_only_on_relative_position():
    from lmlab.models.gpt import rope_tables

    cos, sin = rope_tables(8, 40, 10000.0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(pq, pk):
        return (apply_rope(q, cos[pq : pq + 1], sin[pq : pq + 1]) * apply_rope(k, cos[pk : pk + 1], sin[pk : pk + 1])).sum()

    assert torch.allclose(score(5, 2), score(30, 27), atol=1e-5)
    assert not torch.allclose(score(5, 2), score(5, 3), atol=1e-3)
    assert torch.allclose(apply_rope(q, cos[:1], sin[:1]), q)  # position 0 is not rotated


def test_parameter_count_formula():
    # nanoGPT's CPU model with the 65 characters of tiny Shakespeare, by hand:
    # V*C + T*C (embeddings, output tied) + L * 12*C^2 (attention 4C^2, MLP 8C^2) + C (final LayerNorm, no bias)
    # + L * 4C (two LayerNorm gains per block)
    cfg = GPTConfig(vocab_size=65, block_size=64, embed_dim=128, num_layers=4, num_heads=4, bias=False)
    by_hand = 65 * 128 + 64 * 128 + 4 * (12 * 128 * 128 + 2 * 128) + 128
    assert num_parameters_formula(cfg) == by_hand == GPT(cfg).num_parameters() == 804_096
    for kw in ({"bias": True}, {"tie_embeddings": False}, {"position": "rope"}, {"mlp_ratio": 2, "num_layers": 3}):
        cfg = GPTConfig(vocab_size=71, block_size=33, embed_dim=48, num_heads=6, **kw)
        assert num_parameters_formula(cfg) == GPT(cfg).num_parameters(), kw


def test_gpt2_initialisation_scales_residual_projections():
    model = GPT(GPTConfig(vocab_size=100, embed_dim=256, num_layers=8, num_heads=8))
    assert model.lm_head.weight is model.wte.weight  # tied
    assert model.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    scaled = 0.02 / math.sqrt(2 * 8)
    assert model.blocks[3].attn.proj.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert model.blocks[3].mlp.proj.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert model.blocks[0].attn.qkv.bias.abs().max().item() == 0


def test_weight_decay_only_on_matrices():
    model = _model(bias=True)
    (opt,) = model.configure_optimizers(TrainConfig(optimizer="adamw", weight_decay=0.1))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == model.num_parameters()


def test_other_optimizers_come_from_the_builder_passed_in():
    from lmlab.trainer import build_optimizer

    model = _model()
    with pytest.raises(ConfigError, match="build_optimizer"):
        model.configure_optimizers(TrainConfig(optimizer="sgd"))
    (opt,) = model.configure_optimizers(TrainConfig(optimizer="sgd", lr=0.1), build_optimizer)
    assert isinstance(opt, torch.optim.SGD)


def test_model_module_imports_no_training_machinery():
    """models/gpt.py is pure: torch, numpy, the standard library, lmlab.errors and other models (STYLE.md)."""
    import ast

    import lmlab.models.gpt as module

    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    lmlab = {n for n in names if n.split(".")[0] == "lmlab"}
    assert all(n in {"lmlab.errors", "lmlab.generation"} or n.startswith("lmlab.models") for n in lmlab), lmlab


# ---------------------------------------------------------------------------------------------- generation
@pytest.mark.parametrize("position", ["learned", "rope"])
def test_kv_cache_generation_equals_uncached_token_for_token(position):
    model = _model(position=position).double()
    prompt = torch.randint(0, 50, (2, 5))
    # 40 new tokens overflow the 24-token context: the cache must then fall back to the sliding window
    for cfg in (SamplingConfig(max_new_tokens=40, temperature=0), SamplingConfig(max_new_tokens=40, seed=7, top_k=20)):
        cached = model.generate(prompt, cfg, use_cache=True)
        uncached = model.generate(prompt, cfg, use_cache=False)
        assert cached == uncached and len(cached[0]) == 40
    # the cached logits themselves match a full forward pass
    ids = torch.randint(0, 50, (1, 12))
    logits, state = model.step_cached(ids[:, :4], None)
    for t in range(4, 12):
        logits, state = model.step_cached(ids[:, t : t + 1], state)
        assert torch.allclose(logits, model(ids[:, : t + 1])[:, -1], atol=1e-10)


def test_cached_step_with_several_new_tokens_uses_an_offset_causal_mask():
    model = _model()
    ids = torch.randint(0, 50, (1, 10))
    _, layers = model(ids[:, :6], past=[])
    logits, _ = model(ids[:, 6:], past=layers)
    assert torch.allclose(logits, model(ids)[:, 6:], atol=1e-5)


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_forward_cached_appends_in_place_and_matches_the_module_path(position):
    model = _model(position=position).double().eval()
    ids = torch.randint(0, 50, (2, 11))
    _, state = model.step_cached(ids[:, :4], None)
    buffers = [k.data_ptr() for k in state.keys]
    # three new tokens at once (the offset causal mask), then one: both as a full forward pass would give
    logits = model.forward_cached(ids[:, 4:7], state)
    assert state.length == 7 and torch.equal(state.filled_ids, ids[:, :7])
    assert torch.allclose(logits, model(ids[:, :7])[:, -1], atol=1e-10)
    logits, same = model.step_cached(ids[:, 7:8], state)
    assert same is state and [k.data_ptr() for k in state.keys] == buffers  # no re-allocation
    assert torch.allclose(logits, model(ids[:, :8])[:, -1], atol=1e-10)
    _, layers = model(ids[:, :8], past=[])
    for (k, v), kb, vb in zip(layers, state.keys, state.values, strict=True):
        assert torch.allclose(kb[:, :, :8], k, atol=1e-12) and torch.allclose(vb[:, :, :8], v, atol=1e-12)
    with pytest.raises(RuntimeError, match="eval"):
        model.train().forward_cached(ids[:, 8:9], state)


def test_generation_cache_is_faster():
    import time

    model = GPT(GPTConfig(vocab_size=65, block_size=160, embed_dim=64, num_layers=2, num_heads=4)).eval()
    cfg = SamplingConfig(max_new_tokens=150, temperature=0)
    timings = {}
    for use_cache in (True, False):
        start = time.process_time()
        model.generate([1], cfg, use_cache=use_cache)
        timings[use_cache] = time.process_time() - start
    assert timings[False] > 1.5 * timings[True], timings


# ---------------------------------------------------------------------------------------------------- training
def test_overfit_one_batch(shakespeare: Path):
    torch.manual_seed(0)
    codec = TokenCodec.fit(shakespeare.read_text(encoding="utf-8").splitlines(keepends=True), TokenDataConfig())
    ids = np.asarray(codec.encode(shakespeare.read_text(encoding="utf-8")[:2000]), dtype=np.uint16)
    batch = next(iter(SequentialBlocks(ids, 32, 4)))
    model = GPT(GPTConfig(vocab_size=codec.vocab_size, block_size=32, embed_dim=64, num_layers=2, num_heads=4))
    cfg = TrainConfig(optimizer="adamw", lr=3e-3, epochs=150, progress=False, tensorboard=False, num_threads=1,
                      log_every=50)
    first = model.loss(batch)["loss"].item()
    Trainer(cfg, model, [batch]).fit()
    last = model.loss(batch)["loss"].item()
    assert first > 3.5 and last < 0.1, (first, last)


def test_bf16_autocast_and_compile_flag_on_cpu_train():
    ids = np.arange(400, dtype=np.uint16) % 50
    model = _model()
    cfg = TrainConfig(optimizer="adamw", max_steps=3, precision="bf16", compile=True, progress=False, tensorboard=False,
                      num_threads=1, log_every=1)  # compile is a GPU option: on a CPU it must be ignored, not break
    logs = Trainer(cfg, model.train(), RandomBlocks(ids, 24, 4)).fit()
    assert math.isfinite(logs["loss"])


# ---------------------------------------------------------------------------------------------------- data
def test_token_file_is_memory_mapped_with_the_smallest_dtype(tmp_path: Path, shakespeare: Path):
    assert token_dtype(65_536) == np.uint16 and token_dtype(65_537) == np.uint32
    lines = list(shakespeare.read_text(encoding="utf-8").splitlines(keepends=True))
    codec = TokenCodec.fit(lines, TokenDataConfig())
    tokens = write_token_file(lines, codec, tmp_path / "t.bin")
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16
    assert (tmp_path / "t.bin").stat().st_size == 2 * len(tokens) == 2 * 40_000
    assert codec.decode(tokens[:200]) == "".join(lines)[:200]
    again = open_token_file(tmp_path / "t.bin")
    assert np.array_equal(again, tokens)
    (tmp_path / "t.bin").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="expected 80000"):
        open_token_file(tmp_path / "t.bin")


def test_random_blocks_are_reproducible_and_sharded_by_rank(monkeypatch):
    tokens = np.arange(5000, dtype=np.uint16)
    sampler = RandomBlocks(tokens, block_size=16, batch_size=6, seed=3)
    full = sampler.batch(0, 5)
    assert torch.equal(full["targets"][:, :-1], full["input_ids"][:, 1:])
    assert torch.equal(full["input_ids"], RandomBlocks(tokens, 16, 6, seed=3).batch(0, 5)["input_ids"])
    assert not torch.equal(full["input_ids"], sampler.batch(0, 6)["input_ids"])
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    parts = []
    for r in range(3):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        parts.append(sampler.batch(0, 5)["input_ids"])
    assert all(p.shape == (2, 16) for p in parts)
    assert torch.equal(torch.cat(parts), full["input_ids"])  # the ranks' shards make up the global batch
    assert list(sampler.iter_from(len(sampler) - 1))  # resume mid-epoch


def test_random_blocks_resume_mid_epoch_replays_exactly_the_remaining_batches():
    tokens = np.arange(3000, dtype=np.uint16)
    sampler = RandomBlocks(tokens, block_size=8, batch_size=4, seed=11)
    sampler.set_epoch(2)
    full = list(sampler)
    restarted = RandomBlocks(tokens, block_size=8, batch_size=4, seed=11)  # a new process after a kill
    restarted.set_epoch(2)
    tail = list(restarted.iter_from(7))
    assert len(tail) == len(full) - 7
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(tail, full[7:], strict=True))


def test_world_size_that_does_not_divide_the_batch_says_which_sizes_work(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 5)
    sampler = RandomBlocks(np.arange(1000, dtype=np.uint16), 8, 12)
    with pytest.raises(ConfigError, match=r"not divisible by the world size 5; world sizes that work: 1, 2, 3, 4, 6, 12"):
        next(iter(sampler))


# ------------------------------------------------------------------------------------------------- bad input
def test_embed_dim_not_divisible_by_num_heads_names_both():
    with pytest.raises(ConfigError, match=r"model.embed_dim=100 is not divisible by model.num_heads=8"):
        GPTConfig(vocab_size=10, embed_dim=100, num_heads=8).validate()
    with pytest.raises(ConfigError, match="embed_dim=100 is not divisible by model.num_heads=8"):
        GPTRecipe.resolve("nanogpt-cpu", ["model.embed_dim=100", "model.num_heads=8"])


def test_block_size_larger_than_the_corpus(tmp_path: Path, capsys):
    data = tmp_path / "short.txt"
    data.write_text("To be, or not to be: that is the question.\n" * 3, encoding="utf-8")
    rc = main(["gpt", "train", "--data", str(data), "--preset", "nanogpt-cpu", "--out", str(tmp_path / "r"), *QUIET])
    err = capsys.readouterr().err
    assert rc == 2 and "fewer than model.block_size + 1 = 65" in err and "at most" in err
    with pytest.raises(DataError, match="fewer than model.block_size"):
        RandomBlocks(np.arange(10, dtype=np.uint16), block_size=10, batch_size=2)


def test_prompt_longer_than_the_context_keeps_the_last_block(tiny_run: Path, capsys):
    pipe = GPTGenerator.from_run_dir(tiny_run)
    prompt = "First Citizen: we are accounted poor citizens, the patricians good."
    result = pipe.generate(prompt, max_new_tokens=5, seed=0)
    assert result["prompt_truncated"] == len(prompt) - 16 and result["prompt_tokens"] == 16
    assert result["completion_tokens"] == 5 and result["finish_reason"] == "length"
    rc = main(["gpt", "generate", str(tiny_run), "--prompt", prompt, "-n", "3", "--seed", "0"])
    captured = capsys.readouterr()
    assert rc == 0 and captured.out.startswith(prompt)
    assert f"its first {len(prompt) - 16} tokens were dropped" in captured.err


def test_run_without_its_tokenizer_is_refused(tiny_run: Path, tmp_path: Path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_run, broken)
    (broken / "tokenizer.json").unlink()
    rc = main(["gpt", "generate", str(broken), "--prompt", "ROMEO:"])
    err = capsys.readouterr().err
    assert rc == 2 and "tokenizer.json is missing" in err and "copy" in err
    (broken / "tokenizer.json").write_text((tiny_run / "tokenizer.json").read_text())
    (broken / "vocab.json").unlink()
    assert main(["gpt", "eval", str(broken), "--data", str(tiny_run / "tokenizer.json")]) == 2
    assert "vocab.json is missing" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------ CLI
def test_cli_train_resume_generate_eval(tiny_run: Path, shakespeare: Path, capsys):
    saved = json.loads((tiny_run / "config.json").read_text())
    assert saved["model_type"] == "gpt" and saved["model"]["vocab_size"] == saved["model"]["vocab_size"] > 60
    assert {"model.safetensors", "tokenizer.json", "vocab.json", "metrics.jsonl"} <= {p.name for p in tiny_run.iterdir()}
    rc = main(["gpt", "train", "--out", str(tiny_run), "--resume", "--preset", "nanogpt-cpu", *TINY, *QUIET,
               "max_steps=16", "eval_every=6", "save_every=6", "warmup_steps=2"])
    assert rc == 0 and "trained 16 steps" in capsys.readouterr().out
    steps = [r["step"] for r in map(json.loads, (tiny_run / "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"]
    assert steps == list(range(1, 17))
    rc = main(["gpt", "generate", str(tiny_run), "--prompt", "ROMEO:", "-n", "30", "--seed", "1", "--stop", "\n\n"])
    out = capsys.readouterr().out
    assert rc == 0 and out.startswith("ROMEO:") and "\n\n" not in out[6:]
    pipe = GPTGenerator.from_run_dir(tiny_run)
    events = list(pipe.stream("ROMEO:", max_new_tokens=20, seed=3))
    assert events[-1] == {"finish_reason": "length", "prompt_tokens": 6, "completion_tokens": 20}
    assert "".join(e["text"] for e in events[:-1]) == pipe.generate("ROMEO:", max_new_tokens=20, seed=3)["text"]
    pipe.use_cache = False
    assert pipe.generate("ROMEO:", max_new_tokens=20, seed=3)["text"] == "".join(e["text"] for e in events[:-1])
    info = pipe.info()
    assert info["model_type"] == "gpt" and info["parameters"] == pipe.model.num_parameters()
    rc = main(["gpt", "eval", str(tiny_run), "--data", str(shakespeare), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0 and 1.0 < result["loss"] < 4.5
    assert result["tokens"] == 40_000  # 40,000 characters + the final line break, cut into blocks of 16


def test_new_run_without_data_keeps_the_old_run(tiny_run: Path, tmp_path: Path, capsys):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(tiny_run, old)
    before = {p.relative_to(old): p.read_bytes() for p in old.rglob("*") if p.is_file()}
    rc = main(["gpt", "train", "--out", str(old), "--overwrite", "--preset", "nanogpt-cpu", *TINY, *QUIET])
    assert rc == 2 and "--data is required" in capsys.readouterr().err
    assert {p.relative_to(old): p.read_bytes() for p in old.rglob("*") if p.is_file()} == before


def test_adam_through_the_recipe_and_lmlab_load(shakespeare: Path, tmp_path: Path):
    import lmlab

    recipe = GPTRecipe.from_preset("nanogpt-cpu", [*TINY, *QUIET, "optimizer=adam", "max_steps=2", "eval_every=2"],
                                   data=str(shakespeare), log=lambda _: None)
    result = recipe.train(tmp_path / "run")
    assert result.step == 2 and result.best is not None
    pipe = lmlab.load(tmp_path / "run")
    assert isinstance(pipe, GPTGenerator) and pipe.run.train.optimizer == "adam"
    assert pipe.generate("ROMEO:", max_new_tokens=3, seed=0)["completion_tokens"] == 3


def test_every_preset_loads_and_builds():
    names = list_presets("gpt")
    assert {"nanogpt-cpu", "char", "bpe"} <= set(names)
    for name in names:
        run = GPTRecipe.resolve(name)
        run.model.vocab_size = 2048 if run.data.tokenizer == "bpe" else 65
        assert GPT(run.model).num_parameters() == num_parameters_formula(run.model)
        assert run.train.optimizer == "adamw" and run.train.max_steps > 0


def test_bpe_codec_round_trips(tmp_path: Path, shakespeare: Path):
    lines = shakespeare.read_text(encoding="utf-8").splitlines(keepends=True)
    codec = TokenCodec.fit(lines, TokenDataConfig(tokenizer="bpe", vocab_size=400))
    text = "".join(lines[:30])
    assert codec.decode(codec.encode(text)) == text and len(codec.encode(text)) < len(text)
    codec.save(tmp_path)
    again = TokenCodec.load(tmp_path)
    assert again.kind == "bpe" and again.encode(text) == codec.encode(text)


def test_separate_validation_file(shakespeare: Path, tmp_path: Path):
    val = tmp_path / "val.txt"
    val.write_text(shakespeare.read_text(encoding="utf-8")[-5000:], encoding="utf-8")
    out = tmp_path / "run"
    rc = main(["gpt", "train", "--data", str(shakespeare), "--val", str(val), "--preset", "nanogpt-cpu", "--out", str(out),
               *TINY, *QUIET, "max_steps=2", "eval_every=2"])
    assert rc == 0 and (out / "data" / "val.bin").is_file()
    corpus = json.loads((out / "config.json").read_text())["corpus"]
    assert corpus["val"] == str(val) and corpus["val_tokens"] == 5000 + 1 and corpus["train_tokens"] == 40_001
    assert [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["split"] == "val"]


# ------------------------------------------------------------------------------------------ exact resume
KILL_RUN = ["--preset", "char", "model.num_layers=1", "model.embed_dim=32", "model.num_heads=2", "model.block_size=32",
            "model.dropout=0.1", "train.batch_size=8", "train.max_steps=60", "train.save_every=5",
            "train.eval_every=20", "train.warmup_steps=5", "train.log_every=1", "train.seed=7", "train.device=cpu",
            "train.num_threads=1", "train.progress=false", "train.tensorboard=false", "data.max_eval_tokens=2000"]


def _train_process(data: Path, out: Path, resume: bool = False):
    import os
    import subprocess
    import sys

    args = [sys.executable, "-m", "lmlab", "gpt", "train", "--out", str(out), *KILL_RUN]
    args += ["--resume"] if resume else ["--data", str(data)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _checkpoint_step(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "checkpoints" / "last.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return -1


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


@pytest.mark.slow
def test_sigkill_three_times_and_resume_ends_bit_identical(shakespeare: Path, tmp_path: Path):
    """Issue 21: a run killed (SIGKILL) at three points and resumed each time ends with exactly the weights of an
    uninterrupted run: the random blocks continue at the saved position and the dropout RNG is restored."""
    import signal
    import time

    from lmlab.callbacks import find_last_checkpoint

    killed, straight = tmp_path / "killed", tmp_path / "straight"
    reference = _train_process(shakespeare, straight)  # uninterrupted, alongside
    proc = _train_process(shakespeare, killed)
    for i, at_least in enumerate((10, 25, 40)):
        if i:
            proc = _train_process(shakespeare, killed, resume=True)
        deadline = time.monotonic() + 120
        while _checkpoint_step(killed) < at_least and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.kill()
        out, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, (at_least, out, err)  # killed mid-run, not finished
        assert at_least <= _checkpoint_step(killed) < 60
    proc = _train_process(shakespeare, killed, resume=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "trained 60 steps" in out, err
    out, err = reference.communicate(timeout=120)
    assert reference.returncode == 0, err

    for name in ("model.safetensors", None):  # the best weights, then the last checkpoint's
        a = _tensors(killed / name if name else find_last_checkpoint(killed) / "model.safetensors")
        b = _tensors(straight / name if name else find_last_checkpoint(straight) / "model.safetensors")
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    rows = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["split"], r["step"]) for r in rows]
    assert len(keys) == len(set(keys))  # no step logged twice
    # every row logged is the uninterrupted run's row of that step, bit for bit
    reference_rows = {(r["split"], r["step"]): r for r in map(json.loads, (straight / "metrics.jsonl").read_text().splitlines())}
    for r in rows:
        assert r.get("loss", r.get("val_loss")) == reference_rows[r["split"], r["step"]].get(
            "loss", reference_rows[r["split"], r["step"]].get("val_loss")), r


def test_resume_without_preset_uses_the_runs_own_config(tiny_run: Path, tmp_path: Path, capsys):
    """The message after Ctrl-C says "resume with --resume": that alone (plus a new max_steps) must work for a run
    trained with a non-default preset and overrides; --preset RUN_DIR starts a new run with that run's settings."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    saved = json.loads((run / "config.json").read_text())
    done = max(r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()))
    capsys.readouterr()
    assert main(["gpt", "train", "--out", str(run), "--resume", f"max_steps={done + 2}", *QUIET]) == 0
    assert f"trained {done + 2} steps" in capsys.readouterr().out
    after = json.loads((run / "config.json").read_text())
    assert after["model"] == saved["model"] and after["data"] == saved["data"]
    # a new run from another run's settings (its model/data/train sections; its corpus facts are not config)
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    fresh = tmp_path / "fresh"
    assert main(["gpt", "train", "--data", str(text), "--preset", str(tiny_run), "--out", str(fresh), "max_steps=1",
                 *QUIET]) == 0
    got = json.loads((fresh / "config.json").read_text())
    assert got["model"]["embed_dim"] == saved["model"]["embed_dim"] == 32 and got["train"]["max_steps"] == 1
    # a folder that is not a run: one line, exit 2
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    assert main(["gpt", "train", "--data", str(text), "--preset", str(tmp_path / "empty"), "--out",
                 str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "folder without config.json" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
