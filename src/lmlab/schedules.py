"""Learning-rate schedules as pure functions of the step (nanoGPT's ``get_lr`` shape)."""

from __future__ import annotations

import math

from lmlab.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig, total_steps: int, epoch: int = 0) -> float:
    """The learning rate for optimizer step ``step`` (0-based) of ``total_steps``.

    - warmup: linear from lr/warmup_steps up to lr over the first ``warmup_steps`` steps (all schedules);
    - constant: lr;
    - cosine: lr -> min_lr following half a cosine over the steps after warmup;
    - linear: lr -> min_lr linearly over the steps after warmup;
    - step: lr * lr_decay ** max(0, epoch + 1 - decay_start_epoch) (the classic PTB recipe decays per epoch).
    """
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "step":
        return cfg.lr * cfg.lr_decay ** max(0, epoch + 1 - cfg.decay_start_epoch)
    span = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, max(0.0, (step - cfg.warmup_steps) / span))
    if cfg.schedule == "cosine":
        return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)
    return cfg.lr + progress * (cfg.min_lr - cfg.lr)
