"""THE training loop, shared by every neural model in lmlab. It knows nothing about any model family.

Contract with the model (see STYLE.md):

- ``model.loss(batch) -> dict`` with a scalar tensor ``"loss"``; other scalar entries are logged; an int
  ``"num_tokens"`` gives tokens/s, an int ``"n"`` weights the validation average (default 1 per batch).
- optional ``model.configure_optimizers(train_config) -> list[Optimizer]`` (default: one optimizer from the
  config over all parameters, weight decay on matrices only when ``decay_matrices_only``).
- optional ``model.manual_step(batch, optimizers, trainer) -> dict`` for models with several optimizers (GANs):
  the model does its own backward/step calls; the trainer still handles seeding, logging, evaluation,
  checkpoints, resume and Ctrl-C.
- optional ``model.on_epoch_start(epoch)`` (e.g. reset a carried hidden state) and
  ``model.evaluate(val_data) -> dict`` (custom validation metrics; default: the weighted mean of ``loss``).

The trainer owns device placement, autocast, gradient accumulation, clipping, the LR schedule, evaluation
cadence, DDP wrapping (under torchrun), seeding, resume, SIGINT and NaN handling, and callback dispatch.
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lmlab import callbacks as cb
from lmlab import checkpoint, distributed
from lmlab.config import TrainConfig
from lmlab.errors import ConfigError, TrainingError, TrainingInterrupted
from lmlab.schedules import lr_at


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) for reproducible runs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", distributed.local_rank())
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no GPU is available; use train.device=auto or cpu")
    return device


def move_to(batch: Any, device: torch.device) -> Any:
    """Move tensors inside (nested) dicts, lists, tuples and objects with ``.to`` onto ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, list):
        return [move_to(v, device) for v in batch]
    if isinstance(batch, tuple):
        moved = [move_to(v, device) for v in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else tuple(moved)
    if hasattr(batch, "to") and callable(batch.to):
        return batch.to(device)
    return batch


def build_optimizer(params: Iterable[tuple[str, nn.Parameter]], cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD over named parameters; weight decay only on matrices when configured."""
    decay, no_decay = [], []
    for _, p in params:
        if not p.requires_grad:
            continue
        (decay if (p.dim() >= 2 or not cfg.decay_matrices_only) else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


class _LossModule(nn.Module):
    """Routes ``forward`` to ``model.loss`` so DistributedDataParallel's gradient hooks fire."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> dict:
        return self.model.loss(batch)


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_metric: float = math.nan
    bad_evals: int = 0
    improved: bool = False
    train_time_s: float = 0.0


class Trainer:
    """Fit any lmlab model: ``Trainer(cfg, model, train_data, val_data, callbacks, run_dir).fit()``."""

    def __init__(
        self,
        config: TrainConfig,
        model: nn.Module,
        train_data: Iterable,
        val_data: Iterable | None = None,
        callbacks: Sequence[cb.Callback] = (),
        run_dir: str | Path | None = None,
    ) -> None:
        self.config = config
        self.model = model
        self.train_data = train_data
        self.val_data = val_data
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.state = TrainState()
        self.user_callbacks = list(callbacks)
        self.callbacks: list[cb.Callback] = []
        self.optimizers: list[torch.optim.Optimizer] = []
        self.total_steps = 0
        self.device = torch.device("cpu")
        self._stop_reason: str | None = None
        self._interrupted = False
        self.checkpointer: cb.Checkpoint | None = None

    # ----------------------------------------------------------------------------------------------- set-up
    @property
    def has_validation(self) -> bool:
        return self.val_data is not None

    def request_stop(self, reason: str) -> None:
        self._stop_reason = reason

    def _install_callbacks(self) -> None:
        cfg = self.config
        own: list[cb.Callback] = []
        if distributed.is_main():
            if self.run_dir is not None:
                self.checkpointer = cb.Checkpoint(self.run_dir, cfg.save_every)
                # metrics first: a checkpoint then never covers a step whose record is not yet written
                own += [cb.MetricsLog(self.run_dir), self.checkpointer]
                if cfg.tensorboard:
                    own.append(cb.TensorBoard(self.run_dir))
            if cfg.progress:
                own.append(cb.Progress())
        if cfg.patience:
            own.append(cb.EarlyStopping(cfg.patience))
        self.callbacks = own + self.user_callbacks

    def _emit(self, event: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(self, *args)

    def evaluation_follows(self) -> bool:
        """Whether the loop evaluates right after the current step's ``on_step_end`` (callbacks that save state
        wait for it, so that a checkpoint always includes that evaluation)."""
        if self._interrupted or self.val_data is None:
            return False
        cfg = self.config
        return bool(cfg.eval_every and self.state.step % cfg.eval_every == 0) or self._stop_reason is not None

    def _steps_per_epoch(self) -> int | None:
        try:
            n = len(self.train_data)  # type: ignore[arg-type]
        except TypeError:
            return None
        return math.ceil(n / self.config.grad_accum_steps)

    def _validate_config(self) -> None:
        cfg = self.config
        problems = []
        try:
            cfg.validate()
        except ConfigError as err:
            problems.append(str(err))
        if cfg.epochs < 1 and cfg.max_steps < 1:
            problems.append("set train.epochs >= 1 or train.max_steps >= 1")
        if cfg.grad_accum_steps < 1:
            problems.append(f"train.grad_accum_steps must be >= 1, got {cfg.grad_accum_steps}")
        if cfg.grad_clip < 0:
            problems.append(f"train.grad_clip must be >= 0 (0 disables clipping), got {cfg.grad_clip}")
        if cfg.patience and self.val_data is None:
            problems.append("train.patience needs validation data (--val PATH or --val-split)")
        if problems:
            raise ConfigError("; ".join(problems))

    # ------------------------------------------------------------------------------------------ resume state
    def resume_state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(tensors, json) describing everything needed to continue exactly where training is now."""
        rng = {
            "torch": torch.get_rng_state(),
            "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        }
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        np_state = np.random.get_state()
        tensors = {
            "model": self.model.state_dict(),
            "optimizer": {"optimizers": [o.state_dict() for o in self.optimizers], "rng": rng,
                          "carried": self._carried_state()},
        }
        extra = {
            "format_version": checkpoint.FORMAT_VERSION,
            "step": self.state.step,
            "epoch": self.state.epoch,
            "batch_in_epoch": self.state.batch_in_epoch,
            "best_metric": None if math.isnan(self.state.best_metric) else self.state.best_metric,
            "bad_evals": self.state.bad_evals,
            "train_time_s": self.state.train_time_s,
            "python_random": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
            "numpy_pos": [int(np_state[2]), int(np_state[3]), float(np_state[4])],
        }
        return tensors, extra

    def _carriers(self) -> list[tuple[str, Any]]:
        """The objects whose state between batches is part of a checkpoint: the model and the training data may
        implement ``training_state() -> dict`` (tensors and plain containers only) and
        ``load_training_state(state)`` (e.g. the RNN LM's hidden state carried from batch to batch)."""
        owners = [("model", self.model), ("train_data", self.train_data)]
        return [(n, o) for n, o in owners if callable(getattr(o, "training_state", None))]

    def _carried_state(self) -> dict[str, Any]:
        return {name: owner.training_state() for name, owner in self._carriers()}

    def _load_resume_state(self) -> None:
        if self.run_dir is None:
            raise ConfigError("resume needs a run directory")
        if not (self.run_dir / "checkpoints" / "last.json").is_file():
            raise checkpoint.CheckpointError(
                f"cannot resume {self.run_dir}: it was stopped before its first checkpoint; "
                "start it again with --overwrite"
            )
        folder = cb.find_last_checkpoint(self.run_dir)
        extra = checkpoint.read_json(folder / "trainer_state.json", "trainer state")
        checkpoint.load_weights(folder / checkpoint.WEIGHTS_FILE, self.model)
        saved = checkpoint.torch_load_state(folder / "optimizer.pt")
        if len(saved["optimizers"]) != len(self.optimizers):
            raise checkpoint.CheckpointError(f"{folder}/optimizer.pt holds a different number of optimizers")
        for opt, state in zip(self.optimizers, saved["optimizers"], strict=True):
            opt.load_state_dict(state)
        for name, owner in self._carriers():
            if name in saved.get("carried", {}):
                owner.load_training_state(saved["carried"][name])
        rng = saved["rng"]
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
        try:
            pos, has_gauss, cached = extra["numpy_pos"]
            np.random.set_state(("MT19937", rng["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
            py = extra["python_random"]
            random.setstate((py[0], tuple(py[1]), py[2]))
            best = extra.get("best_metric")
            self.state = TrainState(
                step=int(extra["step"]),
                epoch=int(extra["epoch"]),
                batch_in_epoch=int(extra["batch_in_epoch"]),
                best_metric=math.nan if best is None else float(best),
                bad_evals=int(extra["bad_evals"]),
                train_time_s=float(extra.get("train_time_s", 0.0)),
            )
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise checkpoint.CheckpointError(
                f"{folder / 'trainer_state.json'}: trainer state is damaged ({type(err).__name__}: {err}); "
                "restore it, or start the run again with --overwrite"
            ) from None
        if distributed.is_main():  # the steps after this checkpoint will be logged again
            checkpoint.truncate_metrics(self.run_dir, self.state.step)

    # -------------------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation metrics (prefixed ``val_``), on rank 0; the tracked metric decides ``improved``."""
        self.model.eval()
        try:
            if hasattr(self.model, "evaluate"):
                raw = self.model.evaluate(self.val_data)
            else:
                totals: dict[str, float] = {}
                weight = 0.0
                for batch in self.val_data or ():
                    batch = move_to(batch, self.device)
                    with self._autocast():
                        out = self.model.loss(batch)
                    n = float(out.get("n", 1))
                    weight += n
                    for k, v in out.items():
                        if k in {"n", "num_tokens"}:
                            continue
                        value = v.item() if isinstance(v, torch.Tensor) else v
                        if isinstance(value, int | float):
                            totals[k] = totals.get(k, 0.0) + float(value) * n
                raw = {k: v / max(weight, 1.0) for k, v in totals.items()}
        finally:
            self.model.train()
        metrics = {(k if k.startswith("val_") else f"val_{k}"): float(v) for k, v in raw.items()}
        key = self.config.early_stopping_metric
        value = metrics.get(key)
        self.state.improved = False
        if value is not None and math.isfinite(value):
            better = (
                math.isnan(self.state.best_metric)
                or (self.config.early_stopping_mode == "min" and value < self.state.best_metric)
                or (self.config.early_stopping_mode == "max" and value > self.state.best_metric)
            )
            if better:
                self.state.best_metric = value
                self.state.bad_evals = 0
                self.state.improved = True
            else:
                self.state.bad_evals += 1
        elif value is None and metrics:
            raise ConfigError(
                f"train.early_stopping_metric={key!r} is not among the validation metrics "
                f"({', '.join(sorted(metrics))})"
            )
        return metrics

    def _run_eval(self) -> None:
        if distributed.is_main() and self.val_data is not None:
            metrics = self.evaluate()
            self._emit("on_eval_end", metrics)
        distributed.barrier()
        stop = distributed.broadcast_flag(self._stop_reason is not None)
        if stop and self._stop_reason is None:
            self._stop_reason = "stopped by rank 0"

    # ---------------------------------------------------------------------------------------------- training
    def _autocast(self):
        cfg = self.config
        if self.device.type == "cuda" and cfg.precision in {"auto", "bf16"}:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        if self.device.type == "cpu" and cfg.precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return nullcontext()

    def _set_lr(self) -> float:
        lr = lr_at(self.state.step, self.config, self.total_steps or 1, self.state.epoch)
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def _on_sigint(self, signum, frame) -> None:  # pragma: no cover - exercised through a subprocess test
        if self._interrupted:
            raise KeyboardInterrupt
        self._interrupted = True

    def _check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss).all():
            where = f" in {self.run_dir}/checkpoints" if self.run_dir else ""
            raise TrainingError(
                f"loss became {loss.item()} at step {self.state.step + 1} (epoch {self.state.epoch + 1}); "
                f"the last good checkpoint{where} is kept. Lower train.lr or set train.grad_clip (e.g. 1.0)"
            )

    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train until epochs/max_steps/max_time_s/early stopping; return the last metrics."""
        cfg = self.config
        self._validate_config()
        distributed.init()
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        seed_everything(cfg.seed)
        self.device = resolve_device(cfg.device)
        self.model.to(self.device)
        self.model.train()
        if hasattr(self.model, "configure_optimizers"):
            self.optimizers = list(self.model.configure_optimizers(cfg))
        else:
            self.optimizers = [build_optimizer(self.model.named_parameters(), cfg)]
        manual = hasattr(self.model, "manual_step")
        if manual and distributed.is_distributed():
            raise ConfigError("models with manual_step (GANs) cannot be trained under torchrun yet; run one process")
        per_epoch = self._steps_per_epoch()
        self.total_steps = cfg.max_steps or ((per_epoch or 0) * cfg.epochs)
        if resume:
            self._load_resume_state()
        forward = _LossModule(self.model)
        if distributed.is_distributed() and not manual:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            forward = DDP(forward, device_ids=ids)
        if cfg.compile and self.device.type == "cuda":
            forward = torch.compile(forward)
        if self.run_dir is not None and distributed.is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self._install_callbacks()
        old_handler = None
        if distributed.is_main() and hasattr(signal, "SIGINT"):
            try:
                old_handler = signal.signal(signal.SIGINT, self._on_sigint)
            except ValueError:  # not the main thread
                old_handler = None
        self._emit("on_fit_start")
        last_logs: dict[str, Any] = {}
        started = time.monotonic() - self.state.train_time_s
        try:
            last_logs = self._loop(forward, manual, per_epoch, started)
        finally:
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
        self.state.train_time_s = time.monotonic() - started
        self._emit("on_fit_end")
        if self._interrupted:
            where = f"; resume with --resume ({self.run_dir})" if self.run_dir else ""
            raise TrainingInterrupted(f"interrupted at step {self.state.step}: checkpoint saved{where}")
        if self._stop_reason and distributed.is_main() and cfg.progress:
            print(self._stop_reason, flush=True)
        return last_logs

    def _loop(self, forward: nn.Module, manual: bool, per_epoch: int | None, started: float) -> dict[str, Any]:
        cfg = self.config
        accum = cfg.grad_accum_steps
        last_logs: dict[str, Any] = {}
        window_tokens = window_examples = 0
        window_start = time.monotonic()
        last_epoch = 10**9 if cfg.max_steps else cfg.epochs
        if cfg.max_steps and self.state.step >= cfg.max_steps:  # a resumed run that is already done: no step more
            self.request_stop(f"reached train.max_steps={cfg.max_steps} (the run is at step {self.state.step})")
            return last_logs
        for epoch in range(self.state.epoch, last_epoch):
            self.state.epoch = epoch
            if hasattr(self.train_data, "set_epoch"):
                self.train_data.set_epoch(epoch)
            if hasattr(self.model, "on_epoch_start"):
                self.model.on_epoch_start(epoch)
            skip = self.state.batch_in_epoch
            if skip and hasattr(self.train_data, "iter_from"):
                batches = self.train_data.iter_from(skip)
            else:
                batches = iter(self.train_data)
                for _ in range(skip):
                    next(batches, None)
            micro = 0
            stepped_this_epoch = False
            for batch in batches:
                batch = move_to(batch, self.device)
                lr = self._set_lr()
                if manual:
                    out = self.model.manual_step(batch, self.optimizers, self)
                    loss = out["loss"]
                    self._check_finite(loss.detach() if isinstance(loss, torch.Tensor) else torch.tensor(loss))
                    micro = accum
                else:
                    sync = (micro + 1) % accum == 0 or not isinstance(forward, nn.parallel.DistributedDataParallel)
                    ctx = nullcontext() if sync else forward.no_sync()
                    with ctx, self._autocast():
                        out = forward(batch)
                        loss = out["loss"]
                    self._check_finite(loss.detach())
                    with ctx:
                        (loss / accum).backward()
                    micro += 1
                window_tokens += int(out.get("num_tokens", 0))
                window_examples += int(out.get("n", 0))
                self.state.batch_in_epoch += 1
                if micro < accum:
                    continue
                micro = 0
                if not manual:
                    self._optimizer_step()
                self.state.step += 1
                stepped_this_epoch = True
                last_logs = self._step_logs(out, lr, epoch, window_tokens, window_examples, window_start)
                if "loss" in last_logs:
                    window_tokens = window_examples = 0
                    window_start = time.monotonic()
                self.state.train_time_s = time.monotonic() - started
                if self._interrupted:
                    self.request_stop("interrupted")
                elif cfg.max_time_s and self.state.train_time_s >= cfg.max_time_s:
                    self.request_stop(f"stopped after train.max_time_s={cfg.max_time_s:g} s")
                elif cfg.max_steps and self.state.step >= cfg.max_steps:
                    self.request_stop(f"reached train.max_steps={cfg.max_steps}")
                self._emit("on_step_end", last_logs)
                evaluated = False
                if cfg.eval_every and self.state.step % cfg.eval_every == 0 and not self._interrupted:
                    self._run_eval()
                    evaluated = True
                if self._stop_reason is not None:
                    if not evaluated and not self._interrupted:
                        self._run_eval()
                    return last_logs
            if micro:  # an epoch that ends inside an accumulation window: apply what was accumulated
                self._optimizer_step()
            if not stepped_this_epoch and self.state.batch_in_epoch == 0:
                raise ConfigError("the training data produced no batches; check the data and train.batch_size")
            self.state.batch_in_epoch = 0
            self.state.epoch = epoch + 1
            if not (cfg.eval_every and self.state.step % cfg.eval_every == 0):
                self._run_eval()
            self._emit("on_epoch_end")
            if self._stop_reason is not None or (not cfg.max_steps and self.state.epoch >= cfg.epochs):
                return last_logs
        return last_logs

    def _optimizer_step(self) -> None:
        # the total gradient norm (clipped when grad_clip > 0); a non-finite one would poison the weights, so the
        # step is refused before any parameter changes and the last checkpoint stays good
        max_norm = self.config.grad_clip if self.config.grad_clip > 0 else float("inf")
        norm = nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        if not torch.isfinite(norm):
            where = f" in {self.run_dir}/checkpoints" if self.run_dir else ""
            raise TrainingError(
                f"the gradient norm became {norm.item()} at step {self.state.step + 1} "
                f"(epoch {self.state.epoch + 1}); the last good checkpoint{where} is kept. "
                "Lower train.lr or set train.grad_clip (e.g. 1.0)"
            )
        for opt in self.optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)

    def _step_logs(self, out: dict, lr: float, epoch: int, tokens: int, examples: int, since: float) -> dict:
        cfg = self.config
        if cfg.log_every and self.state.step % cfg.log_every and self.state.step != 1:
            return {}
        elapsed = max(time.monotonic() - since, 1e-9)
        logs: dict[str, Any] = {"step": self.state.step, "epoch": epoch, "lr": lr}
        for k, v in out.items():
            if k in {"n", "num_tokens"}:
                continue
            value = v.detach().float().item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v
            if isinstance(value, int | float):
                logs[k] = float(value)
        # under torchrun, log the mean over ranks: the loss of the global batch, as one process would see it
        reduced = distributed.all_reduce_mean_dict({k: v for k, v in logs.items() if k not in {"step", "epoch", "lr"}})
        logs.update(reduced)
        if tokens:
            logs["tokens_per_s"] = tokens * distributed.world_size() / elapsed
        elif examples:
            logs["examples_per_s"] = examples * distributed.world_size() / elapsed
        logs["time"] = round(self.state.train_time_s, 3)
        return logs


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
