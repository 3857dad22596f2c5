"""Things the training loop calls at events: checkpointing, early stopping, metrics files, TensorBoard, progress.

A callback implements any of ``on_fit_start(trainer)``, ``on_step_end(trainer, logs)``,
``on_eval_end(trainer, metrics)``, ``on_epoch_end(trainer)``, ``on_fit_end(trainer)``. Only rank 0 runs the
callbacks that write (the trainer installs them there only).
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lmlab import checkpoint

if TYPE_CHECKING:  # pragma: no cover
    from lmlab.trainer import Trainer


class Callback:
    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_step_end(self, trainer: Trainer, logs: dict[str, Any]) -> None: ...

    def on_eval_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None: ...

    def on_epoch_end(self, trainer: Trainer) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None: ...


class StepTimes(Callback):
    """The wall-clock time (``time.perf_counter``) at the end of every optimizer step, in ``times``: for timing
    a run, e.g. to size a schedule to a time budget."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        self.times.append(time.perf_counter())


class Checkpoint(Callback):
    """Resume state every ``save_every`` steps and at each epoch end; best weights to ``model.safetensors``.

    Each resume checkpoint is written into a fresh ``checkpoints/step-N/`` folder, then the pointer file
    ``checkpoints/last.json`` is replaced atomically, then older step folders are removed. A process killed at
    any moment therefore leaves a complete checkpoint behind.
    """

    def __init__(self, run_dir: str | Path, save_every: int = 0) -> None:
        self.run_dir = Path(run_dir)
        self.save_every = save_every
        self.saved_step = -1
        self.pending = False

    def save(self, trainer: Trainer) -> Path:
        root = self.run_dir / "checkpoints"
        folder = root / f"step-{trainer.state.step:08d}-e{trainer.state.epoch}"
        self.saved_step = trainer.state.step
        tensors, extra = trainer.resume_state()
        bad = [k for k, v in tensors["model"].items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            from lmlab.errors import TrainingError

            raise TrainingError(
                f"the weights became non-finite at step {trainer.state.step} ({', '.join(bad[:3])}); not saving them: "
                f"the last good checkpoint in {root} is kept. Lower train.lr or set train.grad_clip (e.g. 1.0)"
            )
        checkpoint.save_tensors(folder / checkpoint.WEIGHTS_FILE, tensors["model"])
        checkpoint.torch_save_state(folder / "optimizer.pt", tensors["optimizer"])
        checkpoint.atomic_write_json(folder / "trainer_state.json", extra)
        checkpoint.atomic_write_json(root / "last.json", {"dir": folder.name, "step": trainer.state.step})
        for old in root.glob("step-*"):
            if old.is_dir() and old.name != folder.name:
                shutil.rmtree(old, ignore_errors=True)
        if not trainer.has_validation:
            self.save_weights(trainer)
        return folder

    def save_weights(self, trainer: Trainer) -> None:
        checkpoint.save_tensors(self.run_dir / checkpoint.WEIGHTS_FILE, trainer.model.state_dict())

    def on_step_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if self.save_every and trainer.state.step % self.save_every == 0:
            if trainer.evaluation_follows():
                # save after this step's evaluation: a run killed in between then evaluates it again on resume
                self.pending = True
            else:
                self.save(trainer)

    def on_eval_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        if trainer.state.improved:
            self.save_weights(trainer)
        if self.pending:
            self.pending = False
            self.save(trainer)

    def on_epoch_end(self, trainer: Trainer) -> None:
        self.save(trainer)

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.saved_step != trainer.state.step:
            self.save(trainer)
        if not (self.run_dir / checkpoint.WEIGHTS_FILE).exists():
            self.save_weights(trainer)


def find_last_checkpoint(run_dir: str | Path) -> Path:
    """The folder of the newest complete resume checkpoint of a run."""
    root = Path(run_dir) / "checkpoints"
    pointer = checkpoint.read_json(root / "last.json", "checkpoint pointer (checkpoints/last.json)")
    folder = root / str(pointer.get("dir", ""))
    if not folder.is_dir():
        raise checkpoint.CheckpointError(f"{root / 'last.json'} points to {folder.name}, which is missing")
    return folder


class EarlyStopping(Callback):
    """Stop after ``patience`` evaluations without improvement of the trainer's tracked metric."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def on_eval_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        if self.patience and trainer.state.bad_evals >= self.patience:
            trainer.request_stop(
                f"early stopping: {trainer.config.early_stopping_metric} did not improve "
                f"for {self.patience} evaluations (best {trainer.state.best_metric:.4f})"
            )


class MetricsLog(Callback):
    """Append every logged event to ``metrics.jsonl``."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)

    def on_step_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if "loss" in logs:
            checkpoint.append_metrics(self.run_dir, {"split": "train", **logs})

    def on_eval_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        checkpoint.append_metrics(
            self.run_dir, {"split": "val", "step": trainer.state.step, "epoch": trainer.state.epoch, **metrics}
        )


class TensorBoard(Callback):
    """Scalars to TensorBoard event files in ``RUN_DIR/tensorboard``."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.writer = None

    def on_fit_start(self, trainer: Trainer) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    def _write(self, prefix: str, values: dict[str, Any], step: int) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if isinstance(value, int | float) and key not in {"step", "epoch", "time"}:
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def on_step_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if "loss" in logs:
            self._write("train", logs, trainer.state.step)

    def on_eval_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        self._write("val", metrics, trainer.state.step)

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class Progress(Callback):
    """A tqdm bar with loss, throughput and ETA on an interactive terminal; plain log lines otherwise."""

    def __init__(self, interactive: bool | None = None) -> None:
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.bar = None
        self.last_print = 0.0

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.interactive:
            from tqdm import tqdm

            self.bar = tqdm(total=trainer.total_steps or None, initial=trainer.state.step, unit="step", dynamic_ncols=True)

    def on_step_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if "loss" not in logs:
            return
        rate = logs.get("tokens_per_s") or logs.get("examples_per_s")
        unit = "tok/s" if "tokens_per_s" in logs else "ex/s"
        if self.bar is not None:
            self.bar.n = trainer.state.step
            self.bar.set_postfix_str(f"loss {logs['loss']:.4f} lr {logs['lr']:.2e} {rate or 0:,.0f} {unit}", refresh=False)
            self.bar.refresh()
        elif time.monotonic() - self.last_print > 10:
            self.last_print = time.monotonic()
            total = f"/{trainer.total_steps}" if trainer.total_steps else ""
            print(
                f"step {trainer.state.step}{total} epoch {trainer.state.epoch + 1} loss {logs['loss']:.4f} "
                f"lr {logs['lr']:.2e} {rate or 0:,.0f} {unit}",
                file=sys.stderr,
                flush=True,
            )

    def on_eval_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        shown = " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        msg = f"eval @ step {trainer.state.step}: {shown}"
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, file=sys.stderr, flush=True)

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
