"""The one training loop: exact resume, SIGKILL/SIGINT recovery, NaN handling, accumulation, early stopping."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from lmlab.callbacks import find_last_checkpoint
from lmlab.checkpoint import load_tensors
from lmlab.config import TrainConfig
from lmlab.data.loader import EpochLoader
from lmlab.errors import ConfigError, TrainingError
from lmlab.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]


class TinyNet(nn.Module):
    """A small MLP with dropout, so resume must restore the RNG to be exact."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 3))

    def loss(self, batch):
        x, y = batch
        return {"loss": nn.functional.cross_entropy(self.net(x), y), "n": len(y)}


def _data(n=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    return list(zip(x, y, strict=True))


def _collate(items):
    return torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])


def _fit(run_dir, resume=False, model_seed=0, **cfg):
    torch.manual_seed(model_seed)
    model = TinyNet()
    base = dict(epochs=2, batch_size=16, lr=0.05, optimizer="adam", progress=False, tensorboard=False, seed=3)
    base.update(cfg)
    config = TrainConfig(**base)
    data = _data()
    trainer = Trainer(
        config,
        model,
        EpochLoader(data, 16, seed=3, collate_fn=_collate),
        EpochLoader(data[:40], 40, shuffle=False, collate_fn=_collate),
        run_dir=run_dir,
    )
    trainer.fit(resume=resume)
    return model, trainer


def test_two_epochs_equal_one_plus_resume_plus_one(tmp_path):
    straight, _ = _fit(tmp_path / "a", epochs=2)
    _fit(tmp_path / "b", epochs=1)
    resumed, trainer = _fit(tmp_path / "b", resume=True, epochs=2)
    assert trainer.state.epoch == 2
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_resume_mid_epoch_from_step_checkpoint_is_exact(tmp_path):
    straight, _ = _fit(tmp_path / "a", epochs=2)
    _fit(tmp_path / "b", epochs=2, max_steps=11, save_every=11)  # stops mid-epoch 2 (8 batches per epoch)
    resumed, _ = _fit(tmp_path / "b", resume=True, epochs=2)
    assert all(torch.equal(p, q) for p, q in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True))


def test_overfit_and_metrics_files(tmp_path):
    _, trainer = _fit(tmp_path / "r", epochs=30, lr=0.05)
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    val = [r["val_loss"] for r in lines if r["split"] == "val"]
    assert val[-1] < 0.5 * val[0]
    assert (tmp_path / "r" / "model.safetensors").is_file()
    assert any((tmp_path / "r" / "tensorboard").iterdir()) if (tmp_path / "r" / "tensorboard").exists() else True


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    class Exploding(TinyNet):
        calls = 0

        def loss(self, batch):
            Exploding.calls += 1
            out = super().loss(batch)
            if Exploding.calls > 12:
                out["loss"] = out["loss"] * float("nan")
            return out

    torch.manual_seed(0)
    model = Exploding()
    cfg = TrainConfig(epochs=3, batch_size=16, save_every=4, progress=False, tensorboard=False)
    trainer = Trainer(cfg, model, EpochLoader(_data(), 16, collate_fn=_collate), run_dir=tmp_path / "r")
    with pytest.raises(TrainingError, match=r"loss became nan at step 13 .* last good checkpoint .* Lower train\.lr"):
        trainer.fit()
    last = find_last_checkpoint(tmp_path / "r")
    assert json.loads((last / "trainer_state.json").read_text())["step"] == 12
    assert all(torch.isfinite(t).all() for t in load_tensors(last / "model.safetensors").values())


def test_gradient_accumulation_matches_big_batch(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    model.net[2].p = 0.0
    data = _data(96)
    # 2 micro-batches of 8 accumulate to the gradient of one batch of 16 (dropout off in both)
    big = TinyNet()
    big.load_state_dict(model.state_dict())
    big.net[2].p = 0.0
    cfg_small = TrainConfig(epochs=1, batch_size=8, grad_accum_steps=2, optimizer="sgd", lr=0.1, progress=False, tensorboard=False)
    cfg_big = TrainConfig(epochs=1, batch_size=16, optimizer="sgd", lr=0.1, progress=False, tensorboard=False)
    Trainer(cfg_small, model, EpochLoader(data, 8, shuffle=False, collate_fn=_collate)).fit()
    Trainer(cfg_big, big, EpochLoader(data, 16, shuffle=False, collate_fn=_collate)).fit()
    for p, q in zip(model.parameters(), big.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


def test_early_stopping_stops_and_keeps_best(tmp_path):
    _, trainer = _fit(tmp_path / "r", epochs=50, lr=3.0, optimizer="sgd", patience=2)
    assert trainer.state.epoch < 50
    assert trainer.state.bad_evals >= 2


def test_bad_train_config_is_reported():
    with pytest.raises(ConfigError, match="train.lr must be > 0"):
        _fit(None, lr=0.0)
    with pytest.raises(ConfigError, match="not among the validation metrics"):
        _fit(None, early_stopping_metric="val_f1")


_SCRIPT = textwrap.dedent(
    """
    import sys, time, torch
    sys.path.insert(0, {tests!r})
    from test_trainer import TinyNet, _data, _collate
    from lmlab.config import TrainConfig
    from lmlab.data.loader import EpochLoader
    from lmlab.errors import TrainingInterrupted
    from lmlab.trainer import Trainer

    class Slow(TinyNet):
        def loss(self, batch):
            time.sleep(0.05)
            return super().loss(batch)

    torch.manual_seed(0)
    cfg = TrainConfig(epochs=1000, batch_size=16, save_every=3, progress=False, tensorboard=False)
    try:
        Trainer(cfg, Slow(), EpochLoader(_data(), 16, collate_fn=_collate), run_dir={run!r}).fit(resume={resume})
    except TrainingInterrupted as err:
        print(err, flush=True)
        sys.exit(err.exit_code)
    print("finished", flush=True)
    """
)


def _spawn(run_dir: Path, resume: bool = False) -> subprocess.Popen:
    code = _SCRIPT.format(tests=str(REPO / "tests"), run=str(run_dir), resume=resume)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(run_dir: Path, min_step: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pointer = run_dir / "checkpoints" / "last.json"
        if pointer.exists() and json.loads(pointer.read_text())["step"] >= min_step:
            return
        time.sleep(0.1)
    raise AssertionError("no checkpoint appeared")


def test_sigkill_mid_epoch_resumes_from_last_checkpoint(tmp_path):
    run_dir = tmp_path / "r"
    proc = _spawn(run_dir)
    _wait_for_checkpoint(run_dir, 6)
    proc.kill()
    proc.communicate()
    last = find_last_checkpoint(run_dir)
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["step"] >= 6 and state["step"] % 3 == 0
    # resume in-process for a few more steps
    torch.manual_seed(0)
    model = TinyNet()
    cfg = TrainConfig(epochs=1000, max_steps=state["step"] + 2, batch_size=16, progress=False, tensorboard=False)
    trainer = Trainer(cfg, model, EpochLoader(_data(), 16, collate_fn=_collate), run_dir=run_dir)
    trainer.fit(resume=True)
    assert trainer.state.step == state["step"] + 2


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="needs POSIX signals")
def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path):
    run_dir = tmp_path / "r"
    proc = _spawn(run_dir)
    _wait_for_checkpoint(run_dir, 3)
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err  # TrainingInterrupted.exit_code: what a shell expects after Ctrl-C
    assert "interrupted at step" in out and "finished" not in out
    step = json.loads((run_dir / "checkpoints" / "last.json").read_text())["step"]
    assert f"interrupted at step {step}" in out
