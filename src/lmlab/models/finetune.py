r"""A classifier on a pretrained language model's body: body -> pooling -> head (``classify train --init-from``).

The *body* is any model with the body API (:class:`lmlab.recipes.base.PretrainedBody`: ``features``,
``features_dim``, ``layer_groups``, ``lm_logits``), e.g. :class:`lmlab.models.gpt.GPT` or
:class:`lmlab.models.rnn_lm.RNNLM` with their pretrained weights. On top of its states $h_1 \dots h_n$ (the real
tokens of a right-padded text):

- pooling: ``last`` $h_n$ (what a causal body has read the whole text into), ``first`` $h_1$ (a masked LM's
  ``[CLS]``), ``mean``, ``max`` (per feature over time), or ``concat`` $[h_n, \max_t h_t, \mathrm{mean}_t h_t]$ (ULMFiT's concat pooling);
- head: dropout -> linear (GPT-1), or with ``head_dim > 0`` ULMFiT's block
  BatchNorm -> dropout -> linear -> ReLU -> BatchNorm -> dropout -> linear;
- loss: softmax cross-entropy, plus ``aux_lm_weight`` $\lambda$ times the body's own next-token loss on the same
  texts (GPT-1: $L = L_{\mathrm{cls}} + \lambda L_{\mathrm{LM}}$, $\lambda = 0.5$; causal bodies only).

Fine-tuning tricks the model carries out itself (the trainer stays generic):

- discriminative learning rates (:meth:`BodyClassifier.configure_optimizers`): the head is the top group; the
  group $k$ steps below it trains at $\eta / \mathit{layer\_lr\_decay}^k$ (ULMFiT: 2.6), through the trainer's
  ``lr_scale`` per parameter group, so every schedule applies to all groups alike;
- gradual unfreezing (:meth:`BodyClassifier.on_epoch_start`): in epoch $e$ (from 0) only the top $e + 1$ groups
  train; the others have ``requires_grad`` False, get no gradient and therefore no optimizer step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmlab.errors import ConfigError

POOLINGS = ("last", "first", "mean", "max", "concat")


@dataclass
class FinetuneConfig:
    """The ``finetune`` section of a classification run started with ``--init-from`` (ignored otherwise)."""

    #: "auto": the body's family default (mean for GPT, concat for the RNN LM); or last / mean / max / concat
    head_pooling: Literal["auto", "last", "first", "mean", "max", "concat"] = "auto"
    #: most tokens of a text the body reads (0: the body's context, e.g. the GPT's block_size; 512 for an RNN)
    max_tokens: int = 0
    #: which part of a longer text to keep: "tail" (its end: a causal body's last state has then read the
    #: conclusion of a review; Sun et al. 2019 found tail better than head on IMDb) or "head" (its beginning)
    truncate: Literal["tail", "head"] = "tail"
    #: width of ULMFiT's BatchNorm-dropout-linear-ReLU block before the output (0: dropout + linear only)
    head_dim: int = 0
    #: dropout before the head's linear layer(s)
    head_dropout: float = 0.1
    #: weight of the auxiliary next-token loss on the training texts (GPT-1: 0.5); 0 disables; causal bodies only
    aux_lm_weight: float = 0.0
    #: discriminative learning rates: group k below the head trains at lr / layer_lr_decay**k (ULMFiT: 2.6; 1: same lr)
    layer_lr_decay: float = 2.6
    #: gradual unfreezing: epoch e trains the top e + 1 groups only (the head first); off: everything trains
    gradual_unfreezing: bool = False
    #: the fewest optimizer steps a fine-tuning takes: when train.epochs x (steps per epoch) is smaller (few
    #: labels: 90 texts in batches of 32 are 3 steps per epoch), the run trains ceil(min_steps / steps per epoch)
    #: epochs instead, so the schedule (its warmup and decay included) spans at least min_steps; 0: train.epochs
    #: as given. An explicit train.max_steps wins.
    min_steps: int = 100
    #: the fewest texts a validation split (data.val_split) may hold: a smaller one chooses the epoch by noise
    #: (10 texts: one text is 10 points) and costs labels, so none is held out (every label trains, the last
    #: weights are kept); 0: always split. A --val file is always used.
    min_val_examples: int = 50

    #: the value of each key added after fine-tuning runs were first written that reproduces those runs (a run
    #: saved without the key resumes with it)
    LEGACY: ClassVar[dict[str, Any]] = {"min_steps": 0, "min_val_examples": 0}

    def epochs_for(self, epochs: int, steps_per_epoch: int) -> int:
        """The epochs to train: ``epochs``, or more when they take fewer than ``min_steps`` optimizer steps."""
        if self.min_steps <= 0 or steps_per_epoch <= 0:
            return epochs
        return max(epochs, math.ceil(self.min_steps / steps_per_epoch))

    def val_fraction(self, fraction: float, num_examples: int) -> float:
        """data.val_split, or 0 when it would hold out fewer than ``min_val_examples`` of ``num_examples`` texts."""
        held_out = max(1, round(num_examples * fraction)) if fraction > 0 else 0
        return 0.0 if held_out < self.min_val_examples else fraction

    def validate(self) -> None:
        problems = []
        if self.max_tokens < 0:
            problems.append(f"finetune.max_tokens must be >= 0 (0: the body's context), got {self.max_tokens}")
        if self.head_dim < 0:
            problems.append(f"finetune.head_dim must be >= 0, got {self.head_dim}")
        if not 0 <= self.head_dropout < 1:
            problems.append(f"finetune.head_dropout must be in [0, 1), got {self.head_dropout}")
        if self.aux_lm_weight < 0:
            problems.append(f"finetune.aux_lm_weight must be >= 0 (0 disables), got {self.aux_lm_weight}")
        if self.min_steps < 0:
            problems.append(f"finetune.min_steps must be >= 0 (0: train.epochs as given), got {self.min_steps}")
        if self.min_val_examples < 0:
            problems.append(f"finetune.min_val_examples must be >= 0 (0: always split), got {self.min_val_examples}")
        if self.layer_lr_decay < 1:
            problems.append(f"finetune.layer_lr_decay must be >= 1 (1: one learning rate for all), got {self.layer_lr_decay}")
        if problems:
            raise ConfigError("; ".join(problems))


class BodyClassifier(nn.Module):
    """``BodyClassifier(body, config, num_classes, pooling)``: a pretrained body, a pooling and a head.

    Batches are :class:`lmlab.data.classification.ClassifyBatch`-like: ``ids`` (B, T) right-padded, ``lengths``
    (B,) >= 1, ``labels`` (B,)."""

    def __init__(self, body: nn.Module, config: FinetuneConfig, num_classes: int, pooling: str) -> None:
        super().__init__()
        config.validate()
        if pooling not in POOLINGS:
            raise ConfigError(f"finetune.head_pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        if num_classes < 2:
            raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
        if config.aux_lm_weight > 0 and not getattr(body, "causal", False):
            raise ConfigError(
                f"finetune.aux_lm_weight={config.aux_lm_weight:g} needs a causal (left-to-right) body; "
                f"a {type(body).__name__} is not one: set finetune.aux_lm_weight=0"
            )
        self.config = config
        self.body = body
        self.pooling = pooling
        self.num_classes = num_classes
        width = body.features_dim * (3 if pooling == "concat" else 1)
        if config.head_dim:
            self.head = nn.Sequential(
                nn.BatchNorm1d(width), nn.Dropout(config.head_dropout), nn.Linear(width, config.head_dim), nn.ReLU(),
                nn.BatchNorm1d(config.head_dim), nn.Dropout(config.head_dropout), nn.Linear(config.head_dim, num_classes),
            )
        else:
            self.head = nn.Sequential(nn.Dropout(config.head_dropout), nn.Linear(width, num_classes))
        for module in self.head:
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------------------------------- forward
    def pool(self, hidden: Tensor, lengths: Tensor) -> Tensor:
        """(B, T, H) states of right-padded texts -> (B, H) or (B, 3H) for concat; padding never counts."""
        lengths = lengths.to(hidden.device)
        mask = (torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]).unsqueeze(-1)
        last = hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1]  # (B, H)
        if self.pooling == "last":
            return last
        if self.pooling == "first":  # a bidirectional body's [CLS] position
            return hidden[:, 0]
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, H)
        if self.pooling == "mean":
            return mean
        mx = hidden.masked_fill(~mask, float("-inf")).max(1).values  # (B, H)
        return mx if self.pooling == "max" else torch.cat([last, mx, mean], dim=-1)  # (B, 3H)

    def _run(self, ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        pad_mask = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths.to(ids.device)[:, None]  # (B, T)
        hidden = self.body.features(ids, pad_mask)  # (B, T, H)
        pooled = self.pool(hidden, lengths)
        if self.training and pooled.shape[0] == 1 and self.config.head_dim:
            logits = _head_eval_norm(self.head, pooled)  # BatchNorm cannot normalise one example
        else:
            logits = self.head(pooled)  # (B, C)
        return logits, hidden, pad_mask

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """Logits (B, C)."""
        return self._run(ids, lengths)[0]

    def probabilities(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """(B, C) class probabilities."""
        return torch.softmax(self.forward(ids, lengths), dim=-1)

    def loss(self, batch: Any) -> dict:
        """Cross-entropy of the labels (+ ``aux_lm_weight`` x the next-token loss of the texts)."""
        logits, hidden, pad_mask = self._run(batch.ids, batch.lengths)
        cls_loss = F.cross_entropy(logits.float(), batch.labels)
        out = {"loss": cls_loss, "accuracy": (logits.argmax(-1) == batch.labels).float().mean(),
               "n": int(batch.labels.numel())}
        if self.config.aux_lm_weight > 0:
            lm = self.aux_lm_loss(hidden, batch.ids, pad_mask)
            out.update(loss=cls_loss + self.config.aux_lm_weight * lm, cls_loss=cls_loss.detach(), lm_loss=lm.detach())
        return out

    def aux_lm_loss(self, hidden: Tensor, ids: Tensor, pad_mask: Tensor) -> Tensor:
        """Mean next-token cross-entropy over the real positions whose next token is real too."""
        keep = pad_mask[:, 1:] & pad_mask[:, :-1]  # (B, T-1)
        if not keep.any():
            return hidden.sum() * 0.0
        logits = self.body.lm_logits(hidden[:, :-1][keep])  # (N, V)
        return F.cross_entropy(logits.float(), ids[:, 1:][keep])

    # -------------------------------------------------------------------------------------- optimisation
    def layer_groups(self) -> list[list[nn.Parameter]]:
        """The body's groups (bottom -> top), then the head: every parameter once."""
        return [*self.body.layer_groups(), list(self.head.parameters())]

    def group_lr_scales(self) -> list[float]:
        """Each group's learning rate as a fraction of train.lr: the head 1, then / layer_lr_decay per group down."""
        n = len(self.layer_groups())
        return [self.config.layer_lr_decay ** -(n - 1 - k) for k in range(n)]

    def configure_optimizers(self, cfg: Any) -> list[torch.optim.Optimizer]:
        """One optimizer (``cfg``: a TrainConfig-like object) with two parameter groups per layer group (weight
        decay on matrices only when ``cfg.decay_matrices_only``), each carrying its ``lr_scale``."""
        groups = []
        for params, scale in zip(self.layer_groups(), self.group_lr_scales(), strict=True):
            decay = [p for p in params if p.dim() >= 2 or not cfg.decay_matrices_only]
            rest = [p for p in params if not (p.dim() >= 2 or not cfg.decay_matrices_only)]
            for chosen, wd in ((decay, cfg.weight_decay), (rest, 0.0)):
                if chosen:
                    groups.append({"params": chosen, "weight_decay": wd, "lr_scale": scale, "lr": cfg.lr * scale})
        if cfg.optimizer == "sgd":
            return [torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)]
        cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        return [cls(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)]

    def trainable_groups(self, epoch: int) -> int:
        """How many groups (from the top) train in ``epoch`` (0-based)."""
        n = len(self.layer_groups())
        return min(n, epoch + 1) if self.config.gradual_unfreezing else n

    def on_epoch_start(self, epoch: int) -> None:
        """Gradual unfreezing: freeze every group below the top :meth:`trainable_groups`."""
        groups = self.layer_groups()
        first = len(groups) - self.trainable_groups(epoch)
        for k, params in enumerate(groups):
            for p in params:
                p.requires_grad_(k >= first)


def _head_eval_norm(head: nn.Sequential, x: Tensor) -> Tensor:
    """Run ``head`` on a batch of one with its BatchNorm layers normalising by their running statistics."""
    for module in head:
        if isinstance(module, nn.BatchNorm1d):
            x = F.batch_norm(x, module.running_mean, module.running_var, module.weight, module.bias, False, 0.0,
                             module.eps)
        else:
            x = module(x)
    return x
