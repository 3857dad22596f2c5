r"""A BERT-style masked language model: a bidirectional Transformer encoder and BERT's MLM head.

Token embeddings plus learned absolute position embeddings, then $L$ encoder blocks

$$h \leftarrow h + \mathrm{Attn}(\mathrm{LN}_1(h), \text{pad mask}), \qquad h \leftarrow h + \mathrm{MLP}(\mathrm{LN}_2(h))$$

and a final LayerNorm. Attention is bidirectional (no causal mask): every real token attends to every real token
of its sequence; padding positions are masked out as *keys* through ``F.scaled_dot_product_attention``'s boolean
``attn_mask``, so a padded sequence gives its real positions exactly the states of the same sequence unpadded.

**Pre-LN, not BERT's post-LN.** BERT normalises after each residual addition ($h \leftarrow \mathrm{LN}(h +
f(h))$). Pre-LN keeps an identity path from the embeddings to the top, so the gradient at initialisation does not
depend on depth and training is stable without a long learning-rate warmup (Xiong et al. 2020, "On Layer
Normalization in the Transformer Architecture") — what matters for short CPU runs with a high learning rate. The
final LayerNorm (as in GPT-2) puts the top states on BERT's scale for the head and for a classifier body.

The MLM head is BERT's: dense -> GELU -> LayerNorm -> a decoder tied to the token embedding plus an output bias,
applied only at the chosen positions. The loss is the mean cross-entropy over those positions (``labels`` holds
the original id there and ``IGNORE_INDEX`` elsewhere; the masking itself is data-side, :mod:`lmlab.data.mlm`).

Initialisation follows BERT/GPT-2: $\mathcal N(0, 0.02)$ for matrices and embeddings, zero biases, unit gains,
and the residual output projections scaled by $1/\sqrt{2L}$.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmlab.errors import ConfigError

#: the label of positions that are not predicted (cross-entropy's ``ignore_index``)
IGNORE_INDEX = -100


@dataclass
class MLMConfig:
    """Architecture of an :class:`MLM`. ``vocab_size`` 0 means "take it from the tokenizer" (the recipe fills it)."""

    vocab_size: int = 0
    #: the most positions one sequence may hold, ``[CLS]`` and ``[SEP]`` included
    block_size: int = 128
    embed_dim: int = 128
    num_layers: int = 4
    num_heads: int = 4
    #: width of the MLP's hidden layer as a multiple of embed_dim
    mlp_ratio: int = 4
    dropout: float = 0.1

    def validate(self) -> None:
        problems = []
        if self.vocab_size < 0:
            problems.append(f"model.vocab_size must be >= 1 (or 0: from the tokenizer), got {self.vocab_size}")
        if self.block_size < 3:
            problems.append(f"model.block_size must be >= 3 ([CLS], one token, [SEP]), got {self.block_size}")
        for key in ("embed_dim", "num_layers", "num_heads", "mlp_ratio"):
            if getattr(self, key) < 1:
                problems.append(f"model.{key} must be >= 1, got {getattr(self, key)}")
        if self.embed_dim >= 1 and self.num_heads >= 1 and self.embed_dim % self.num_heads:
            ok = [h for h in range(1, min(self.embed_dim, 64) + 1) if self.embed_dim % h == 0]
            problems.append(
                f"model.embed_dim={self.embed_dim} is not divisible by model.num_heads={self.num_heads}; "
                f"use num_heads in {ok}"
            )
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"model.dropout must be in [0, 1), got {self.dropout}")
        if problems:
            raise ConfigError("; ".join(problems))


class EncoderSelfAttention(nn.Module):
    r"""Multi-head bidirectional self-attention $\mathrm{softmax}(QK^\top/\sqrt d + M)V$, where $M_{ij} = -\infty$
    when key $j$ is padding (``pad_mask`` False) and 0 otherwise."""

    def __init__(self, cfg: MLMConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.embed_dim // cfg.num_heads
        self.dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim)
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, D)
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.resid_drop(self.proj(y))


class EncoderBlock(nn.Module):
    """Pre-LayerNorm encoder block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))`` (GELU MLP)."""

    def __init__(self, cfg: MLMConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.embed_dim)
        self.attn = EncoderSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.embed_dim)
        self.fc = nn.Linear(cfg.embed_dim, cfg.mlp_ratio * cfg.embed_dim)
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.embed_dim, cfg.embed_dim)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        x = x + self.attn(self.ln1(x), attn_mask)
        return x + self.drop(self.proj(F.gelu(self.fc(self.ln2(x)))))  # (B, T, C)


class MLMHead(nn.Module):
    """BERT's prediction head: dense -> GELU -> LayerNorm -> decoder (the token embedding, tied) + output bias."""

    def __init__(self, cfg: MLMConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        self.ln = nn.LayerNorm(cfg.embed_dim)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, hidden: Tensor, decoder: Tensor) -> Tensor:
        """``hidden`` (..., C) and the tied decoder matrix (V, C) -> logits (..., V)."""
        h = self.ln(F.gelu(self.dense(hidden)))  # (..., C)
        return F.linear(h, decoder, self.bias)  # (..., V)


class MLM(nn.Module):
    """Transformer encoder + MLM head; ``MLM(config)``; ``loss(batch)`` for the trainer; the body API for
    ``lmlab classify train --init-from`` (:meth:`features`, :attr:`features_dim`, :meth:`layer_groups`,
    :meth:`lm_logits`)."""

    def __init__(self, config: MLMConfig) -> None:
        super().__init__()
        config.validate()
        if config.vocab_size < 1:
            raise ConfigError("model.vocab_size is 0: build the tokenizer first and set it from the vocabulary")
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.embed_dim)
        self.wpe = nn.Embedding(config.block_size, config.embed_dim)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(EncoderBlock(config) for _ in range(config.num_layers))
        self.ln_f = nn.LayerNorm(config.embed_dim)
        self.head = MLMHead(config)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.zeros_(self.head.bias)
        scaled = 0.02 / math.sqrt(2 * self.config.num_layers)
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, mean=0.0, std=scaled)
            nn.init.normal_(block.proj.weight, mean=0.0, std=scaled)

    def num_parameters(self) -> int:
        """Trainable parameters (the tied decoder counted once)."""
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------------------------------- body API
    @property
    def features_dim(self) -> int:
        return self.config.embed_dim

    def features(self, ids: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """Top hidden states (B, T, C) of ``ids`` (B, T), after the final LayerNorm; ``pad_mask`` (B, T) is True
        at real tokens (None: no padding). Padding keys are masked out of every attention."""
        B, T = ids.shape
        if T > self.config.block_size:
            raise ConfigError(
                f"a sequence of {T} tokens does not fit model.block_size={self.config.block_size} "
                "(the encoder's learned positions); truncate it"
            )
        attn_mask = None if pad_mask is None else pad_mask[:, None, None, :].to(torch.bool)  # (B, 1, 1, T)
        x = self.wte(ids) + self.wpe(torch.arange(T, device=ids.device))  # (B, T, C)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, attn_mask)
        return self.ln_f(x)  # (B, T, C)

    def lm_logits(self, hidden: Tensor) -> Tensor:
        """The MLM head on hidden states (..., C) -> logits over the vocabulary (..., V)."""
        return self.head(hidden, self.wte.weight)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Every parameter once, bottom to top: embeddings (token, position), each block, then the final norm
        with the MLM head (its dense layer, norm and output bias; the decoder is the tied token embedding)."""
        groups = [[self.wte.weight, self.wpe.weight]]
        groups += [list(block.parameters()) for block in self.blocks]
        groups.append([*self.ln_f.parameters(), *self.head.parameters()])
        return groups

    # ------------------------------------------------------------------------------------------- training
    def forward(self, ids: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """Logits (B, T, V) at every position (use :meth:`loss` for training: it runs the head on the chosen
        positions only)."""
        return self.lm_logits(self.features(ids, pad_mask))

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Any]:
        r"""Mean cross-entropy over the chosen positions of ``batch = {"input_ids" (B, T), "labels" (B, T),
        "pad_mask" (B, T), optional}``: $-\frac{1}{|M|}\sum_{i \in M} \log p(x_i \mid \tilde x)$ where $M$ is
        where ``labels`` is not ``IGNORE_INDEX``. Also the masked-token accuracy."""
        ids, labels = batch["input_ids"], batch["labels"]
        hidden = self.features(ids, batch.get("pad_mask"))  # (B, T, C)
        chosen = labels != IGNORE_INDEX  # (B, T)
        targets = labels[chosen]  # (N,)
        n = int(targets.numel())
        if n == 0:  # nothing chosen in this batch (possible for tiny batches): a zero loss that keeps the graph
            zero = hidden.sum() * 0.0
            return {"loss": zero, "accuracy": 0.0, "num_tokens": int(ids.numel()), "n": 0}
        logits = self.lm_logits(hidden[chosen]).float()  # (N, V)
        loss = F.cross_entropy(logits, targets)
        accuracy = (logits.argmax(-1) == targets).float().mean()
        return {"loss": loss, "accuracy": accuracy.detach(), "num_tokens": int(ids.numel()), "n": n}
