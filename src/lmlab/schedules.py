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
    - step: lr * lr_decay ** max(0, epoch + 1 - decay_start_epoch) (the classic PTB recipe decays per epoch);
    - slanted: ULMFiT's slanted triangular learning rate (:func:`slanted_triangular`; no separate warmup).
    """
    if cfg.schedule == "slanted":
        return slanted_triangular(step, total_steps, cfg.lr, cfg.cut_frac, cfg.stlr_ratio)
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


def slanted_triangular(step: int, total_steps: int, lr: float, cut_frac: float = 0.1, ratio: float = 32.0) -> float:
    r"""Slanted triangular learning rate (Howard & Ruder, 2018, eq. 3) at optimizer step ``step`` (0-based) of
    ``total_steps``: a short linear rise over the first ``cut_frac`` of the steps, then a long linear decay,

    $$\mathit{cut} = \lfloor T\,\mathit{cut\_frac} \rfloor,\quad
    p = \begin{cases} t/\mathit{cut} & t < \mathit{cut} \\
    1 - \frac{t - \mathit{cut}}{\mathit{cut}\,(1/\mathit{cut\_frac} - 1)} & \text{otherwise}\end{cases},\quad
    \eta_t = \eta_{\max}\,\frac{1 + p\,(\mathit{ratio} - 1)}{\mathit{ratio}}$$

    so the rate goes from ``lr / ratio`` up to ``lr`` at step ``cut`` and back down to ``lr / ratio`` at ``T``
    (``cut`` is at least 1; steps past ``T`` stay at ``lr / ratio``)."""
    cut = max(1, math.floor(total_steps * cut_frac))
    if step < cut:
        p = step / cut
    else:
        p = max(0.0, 1.0 - (step - cut) / (cut * (1.0 / cut_frac - 1.0)))
    return lr * (1.0 + p * (ratio - 1.0)) / ratio
