r"""A GPT-style decoder-only Transformer language model.

Token embeddings plus learned absolute position embeddings (or rotary position embeddings, RoPE), a stack of
pre-LayerNorm blocks

$$h \leftarrow h + \mathrm{Attn}(\mathrm{LN}_1(h)), \qquad h \leftarrow h + \mathrm{MLP}(\mathrm{LN}_2(h))$$

with causal multi-head self-attention through ``torch.nn.functional.scaled_dot_product_attention`` and a GELU
MLP, a final LayerNorm and an output projection tied to the token embedding. Initialisation follows GPT-2:
$\mathcal N(0, 0.02)$ for every matrix and embedding, zero biases, and the two projections that write into the
residual stream scaled by $1/\sqrt{2L}$.

Generation goes through :mod:`lmlab.generation` with a key/value cache (:class:`KVCache`) as the step state:
the prompt is run once, then each new token attends to the cached keys and values of every earlier position.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmlab.errors import ConfigError


@dataclass
class GPTConfig:
    """Architecture of a :class:`GPT`. ``vocab_size`` 0 means "take it from the tokenizer" (the CLI fills it)."""

    vocab_size: int = 0
    #: the context length: the most positions a forward pass (and the KV cache) can hold
    block_size: int = 64
    embed_dim: int = 128
    num_layers: int = 4
    num_heads: int = 4
    #: width of the MLP's hidden layer as a multiple of embed_dim
    mlp_ratio: int = 4
    dropout: float = 0.0
    #: biases in the linear layers and LayerNorms (GPT-2 has them)
    bias: bool = True
    #: "learned" absolute position embeddings (GPT-2) or "rope" (rotary embeddings on queries and keys)
    position: Literal["learned", "rope"] = "learned"
    rope_base: float = 10000.0
    tie_embeddings: bool = True

    def validate(self) -> None:
        problems = []
        if self.vocab_size < 0:
            problems.append(f"model.vocab_size must be >= 1 (or 0: from the tokenizer), got {self.vocab_size}")
        for key in ("block_size", "embed_dim", "num_layers", "num_heads", "mlp_ratio"):
            if getattr(self, key) < 1:
                problems.append(f"model.{key} must be >= 1, got {getattr(self, key)}")
        if self.embed_dim >= 1 and self.num_heads >= 1 and self.embed_dim % self.num_heads:
            ok = [h for h in range(1, min(self.embed_dim, 64) + 1) if self.embed_dim % h == 0]
            problems.append(
                f"model.embed_dim={self.embed_dim} is not divisible by model.num_heads={self.num_heads}; "
                f"use num_heads in {ok} or an embed_dim that is a multiple of {self.num_heads}"
            )
        elif self.position == "rope" and self.num_heads >= 1 and (self.embed_dim // self.num_heads) % 2:
            problems.append(
                f"model.position=rope needs an even head size, but embed_dim/num_heads = "
                f"{self.embed_dim}/{self.num_heads} = {self.embed_dim // self.num_heads}"
            )
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.rope_base <= 1.0:
            problems.append(f"model.rope_base must be > 1, got {self.rope_base}")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads


def num_parameters_formula(cfg: GPTConfig) -> int:
    r"""Closed-form parameter count: with $V$ vocab, $T$ block size, $C$ width, $L$ layers, $r$ MLP ratio and
    biases, $VC + TC + L\,(4C^2 + 2rC^2 + (9 + r)C) + 2C$ (+ $VC$ when the output layer is not tied; no $TC$
    with RoPE). Each block: two LayerNorms ($4C$), qkv ($3C^2 + 3C$), output projection ($C^2 + C$), MLP
    ($2rC^2 + rC + C$)."""
    V, T, C, L, r = cfg.vocab_size, cfg.block_size, cfg.embed_dim, cfg.num_layers, cfg.mlp_ratio
    b = 1 if cfg.bias else 0
    per_block = 4 * C * C + 2 * r * C * C + (2 + 2 * b) * C + b * (3 * C + C + r * C + C)
    total = V * C + L * per_block + (1 + b) * C
    if cfg.position == "learned":
        total += T * C
    if not cfg.tie_embeddings:
        total += V * C
    return total


# --------------------------------------------------------------------------------------------- building blocks
def rope_tables(head_dim: int, length: int, base: float) -> tuple[Tensor, Tensor]:
    r"""cos/sin tables (length, head_dim/2) of rotary embeddings: angle $p\,\theta_i$, $\theta_i = b^{-2i/d}$."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))  # (D/2,)
    angles = torch.outer(torch.arange(length, dtype=torch.float64), inv_freq)  # (T, D/2)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    r"""Rotate each pair $(x_{2i}, x_{2i+1})$ of ``x`` (B, H, T, D) by the angles in cos/sin (T, D/2)."""
    x1, x2 = x[..., 0::2], x[..., 1::2]  # (B, H, T, D/2)
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (B, H, T, D/2, 2)
    return out.flatten(-2).type_as(x)  # (B, H, T, D)


class CausalSelfAttention(nn.Module):
    r"""Multi-head causal self-attention, $\mathrm{softmax}(QK^\top/\sqrt{d} + M)V$ with $M_{ij} = -\infty$ for
    $j > i$, through ``F.scaled_dot_product_attention``; optional key/value cache for incremental decoding."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim, bias=cfg.bias)
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim, bias=cfg.bias)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor] | None = None,
        past: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``x`` (B, T, C) -> (output (B, T, C), (keys, values) (B, H, T_past + T, D) for the cache)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        past_len = 0
        if past is not None:
            past_len = past[0].shape[2]
            k = torch.cat([past[0], k], dim=2)  # (B, H, T_past + T, D)
            v = torch.cat([past[1], v], dim=2)
        drop = self.dropout if self.training else 0.0
        if past_len == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)  # (B, H, T, D)
        elif T == 1:  # one new query may attend to every cached position
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        else:  # several new queries after a cache: causal mask aligned to the bottom-right
            mask = torch.ones(T, past_len + T, dtype=torch.bool, device=x.device).tril(diagonal=past_len)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.resid_drop(self.proj(y)), (k, v)


class MLP(nn.Module):
    """Position-wise feed-forward network: Linear(C, rC) -> GELU -> Linear(rC, C) -> dropout."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.embed_dim, cfg.mlp_ratio * cfg.embed_dim, bias=cfg.bias)
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.embed_dim, cfg.embed_dim, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm Transformer block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.embed_dim, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.embed_dim, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x, rope=None, past=None):
        a, kv = self.attn(self.ln1(x), rope, past)
        x = x + a
        x = x + self.mlp(self.ln2(x))
        return x, kv


@dataclass
class KVCache:
    """The step state of cached generation: per-layer key and value buffers (B, H, block_size, D), allocated
    once, of which the first ``length`` positions are filled, and the ids (B, block_size) they cover.

    Decoding writes each new position in place (no re-allocation or concatenation per token; the state object
    returned by :meth:`GPT.step_cached` is the one passed in). ``ids`` are kept so that, once the context is
    full, the window of the last ``block_size`` tokens can be recomputed (absolute position embeddings cannot
    slide)."""

    keys: list[Tensor]
    values: list[Tensor]
    ids: Tensor
    length: int

    @classmethod
    def from_layers(cls, layers: list[tuple[Tensor, Tensor]], ids: Tensor, capacity: int) -> KVCache:
        """Buffers of ``capacity`` positions holding the keys/values ``layers`` (B, H, T, D) of ``ids`` (B, T)."""
        B, T = ids.shape
        keys, values = [], []
        for k, v in layers:
            kb = k.new_empty(B, k.shape[1], capacity, k.shape[3])
            vb = v.new_empty(B, v.shape[1], capacity, v.shape[3])
            kb[:, :, :T] = k
            vb[:, :, :T] = v
            keys.append(kb)
            values.append(vb)
        id_buf = ids.new_zeros(B, capacity)
        id_buf[:, :T] = ids
        return cls(keys, values, id_buf, T)

    @property
    def filled_ids(self) -> Tensor:
        """The ids (B, length) whose keys and values are cached."""
        return self.ids[:, : self.length]


# -------------------------------------------------------------------------------------------------- the model
class GPT(nn.Module):
    """Decoder-only Transformer LM; ``GPT(config)``; ``loss(batch)`` for the trainer; cached generation."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        config.validate()
        if config.vocab_size < 1:
            raise ConfigError("model.vocab_size is 0: build the tokenizer first and set it from the vocabulary")
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.embed_dim)
        self.wpe = nn.Embedding(config.block_size, config.embed_dim) if config.position == "learned" else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.ln_f = nn.LayerNorm(config.embed_dim, bias=config.bias)
        self.lm_head = nn.Linear(config.embed_dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        if config.position == "rope":
            cos, sin = rope_tables(config.head_dim, config.block_size, config.rope_base)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 initialisation; residual output projections get std 0.02 / sqrt(2 * num_layers)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        scaled = 0.02 / math.sqrt(2 * self.config.num_layers)
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, mean=0.0, std=scaled)
            nn.init.normal_(block.mlp.proj.weight, mean=0.0, std=scaled)

    def num_parameters(self) -> int:
        """Trainable parameters, counting a tied embedding once."""
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------------------------------- forward
    def _check_length(self, total: int) -> None:
        if total > self.config.block_size:
            raise ConfigError(
                f"a sequence of {total} tokens does not fit the context of model.block_size="
                f"{self.config.block_size}; crop it to the last {self.config.block_size} tokens"
            )

    def forward(self, ids: Tensor, past: list[tuple[Tensor, Tensor]] | None = None):
        """Logits (B, T, V) for ``ids`` (B, T); with ``past`` (a cache of earlier positions) also the new cache.

        Without ``past`` the return value is just the logits; with ``past`` (possibly an empty list) it is
        ``(logits, layers)``."""
        x, layers = self._trunk(ids, past)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        return logits if past is None else (logits, layers)

    def _trunk(self, ids: Tensor, past: list[tuple[Tensor, Tensor]] | None = None) -> tuple[Tensor, list]:
        """The residual stream after the last block (B, T, C), before the final LayerNorm, and the new cache."""
        B, T = ids.shape
        offset = past[0][0].shape[2] if past else 0
        self._check_length(offset + T)
        x = self.wte(ids)  # (B, T, C)
        rope = None
        if self.wpe is not None:
            pos = torch.arange(offset, offset + T, device=ids.device)
            x = x + self.wpe(pos)  # (B, T, C)
        else:
            rope = (self.rope_cos[offset : offset + T], self.rope_sin[offset : offset + T])
        x = self.drop(x)
        layers = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, rope, past[i] if past else None)
            layers.append(kv)
        return x, layers

    # ------------------------------------------------------------------------ body API (classifier fine-tuning)
    #: a causal body: position t sees positions <= t only (an auxiliary next-token loss makes sense)
    causal = True

    @property
    def features_dim(self) -> int:
        return self.config.embed_dim

    def features(self, ids: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """Top hidden states (B, T, C) after the final LayerNorm (the body API of
        :class:`lmlab.recipes.base.PretrainedBody`).

        ``pad_mask`` (B, T), True at real tokens, must describe *right* padding: with causal attention a real
        position never attends to a later (padding) one, so the real positions' states do not depend on the
        padding and no attention mask is needed; a pooling that reads the states must skip the padded ones."""
        if pad_mask is not None and pad_mask.shape != ids.shape:
            raise ValueError(f"pad_mask has shape {tuple(pad_mask.shape)}, ids {tuple(ids.shape)}")
        x, _ = self._trunk(ids)
        return self.ln_f(x)  # (B, T, C)

    def lm_logits(self, hidden: Tensor) -> Tensor:
        """Next-token logits (B, T, V) of :meth:`features`' states (the pretraining head)."""
        return self.lm_head(hidden)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Bottom -> top: the embeddings (token + position), then one group per block; the final LayerNorm (and
        an untied output layer) joins the top block. Every parameter once."""
        groups = [[p for p in (self.wte.weight, *(self.wpe.parameters() if self.wpe is not None else ()))]]
        groups += [list(block.parameters()) for block in self.blocks]
        groups[-1] += list(self.ln_f.parameters())
        if not self.config.tie_embeddings:
            groups[-1].append(self.lm_head.weight)
        return groups

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Any]:
        """Mean next-token cross-entropy of ``batch = {"input_ids": (B, T), "targets": (B, T)}``."""
        ids, targets = batch["input_ids"], batch["targets"]
        logits = self(ids)  # (B, T, V)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        n = targets.numel()
        return {"loss": loss, "num_tokens": n, "n": n}

    # --------------------------------------------------------------------------------------- optimisation
    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Two parameter groups: matrices (linear weights, embeddings) with ``weight_decay``, the rest
        (biases, LayerNorm gains) with none."""
        decay = [p for p in self.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.dim() < 2]
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    def configure_optimizers(
        self, cfg: Any, build_optimizer: Callable[[Any, Any], torch.optim.Optimizer] | None = None
    ) -> list[torch.optim.Optimizer]:
        """AdamW over :meth:`optimizer_groups` (``cfg`` is a TrainConfig-like object: optimizer, lr, betas, eps,
        weight_decay). Any other ``cfg.optimizer`` is built by ``build_optimizer(named_parameters, cfg)`` (the
        trainer's generic builder, which the GPT recipe passes in)."""
        if cfg.optimizer != "adamw":
            if build_optimizer is None:
                raise ConfigError(
                    f"train.optimizer={cfg.optimizer!r}: GPT.configure_optimizers builds AdamW itself and needs "
                    "build_optimizer for anything else; train through lmlab.recipes.gpt.GPTRecipe"
                )
            return [build_optimizer(self.named_parameters(), cfg)]
        groups = self.optimizer_groups(cfg.weight_decay)
        fused = next(self.parameters()).device.type == "cuda"
        return [torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=fused)]

    # ----------------------------------------------------------------------------------------- generation
    def crop_prompt(self, ids: Sequence[int]) -> tuple[list[int], int]:
        """The last ``block_size`` ids of a prompt and how many were dropped from its start."""
        ids = list(ids)
        drop = max(0, len(ids) - self.config.block_size)
        return ids[drop:], drop

    @torch.inference_mode()
    def step_cached(self, input_ids: Tensor, state: KVCache | None) -> tuple[Tensor, KVCache]:
        """``lmlab.generation`` step function with a KV cache: logits (B, V) of the last position.

        While the context has room, only the new tokens are run (:meth:`forward_cached`, which appends to the
        cache in place); once it is full, the window of the last ``block_size`` tokens is recomputed, exactly
        as the uncached path does."""
        block = self.config.block_size
        if state is None or state.length + input_ids.shape[1] > block:
            ids = input_ids if state is None else torch.cat([state.filled_ids, input_ids], dim=1)  # (B, T)
            window = ids[:, -block:]
            logits, layers = self(window, past=[])
            return logits[:, -1], KVCache.from_layers(layers, window, block)
        return self.forward_cached(input_ids, state), state

    @torch.inference_mode()
    def forward_cached(self, ids: Tensor, cache: KVCache) -> Tensor:
        """Logits (B, V) of the last of the new tokens ``ids`` (B, T) after the cached positions; appends their
        keys and values to ``cache`` in place.

        The same computation as :meth:`forward` with ``past`` in evaluation mode (no dropout), written with
        functional calls on the modules' own weights: decoding one token of a small model on a CPU is
        dominated by per-call overhead (``nn.Module.__call__``, a concatenation per layer), not arithmetic."""
        if self.training:
            raise RuntimeError("forward_cached is for generation: call model.eval() first")
        cfg = self.config
        B, T = ids.shape
        C, H, D = cfg.embed_dim, cfg.num_heads, cfg.head_dim
        start, end = cache.length, cache.length + T
        self._check_length(end)
        x = F.embedding(ids, self.wte.weight)  # (B, T, C)
        rope = None
        if self.wpe is not None:
            x = x + self.wpe.weight[start:end]  # (B, T, C)
        else:
            rope = (self.rope_cos[start:end], self.rope_sin[start:end])
        # one new query sees every cached position; several see them plus a causal mask among themselves
        mask = None if T == 1 else torch.ones(T, end, dtype=torch.bool, device=ids.device).tril(diagonal=start)
        for block, keys, values in zip(self.blocks, cache.keys, cache.values, strict=True):
            attn, mlp, ln1, ln2 = block.attn, block.mlp, block.ln1, block.ln2
            h = F.layer_norm(x, (C,), ln1.weight, ln1.bias, ln1.eps)
            qkv = F.linear(h, attn.qkv.weight, attn.qkv.bias).view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)  # 3 x (B, H, T, D)
            if rope is not None:
                q, k = apply_rope(q, *rope), apply_rope(k, *rope)
            keys[:, :, start:end] = k
            values[:, :, start:end] = v
            y = F.scaled_dot_product_attention(q, keys[:, :, :end], values[:, :, :end], attn_mask=mask)
            x = x + F.linear(y.transpose(1, 2).reshape(B, T, C), attn.proj.weight, attn.proj.bias)
            h = F.layer_norm(x, (C,), ln2.weight, ln2.bias, ln2.eps)
            x = x + F.linear(F.gelu(F.linear(h, mlp.fc.weight, mlp.fc.bias)), mlp.proj.weight, mlp.proj.bias)
        cache.ids[:, start:end] = ids
        cache.length = end
        last = F.layer_norm(x[:, -1], (C,), self.ln_f.weight, self.ln_f.bias, self.ln_f.eps)  # (B, C)
        return F.linear(last, self.lm_head.weight)  # (B, V)

    def step(self, input_ids: Tensor, state: KVCache | None = None) -> tuple[Tensor, KVCache]:
        """The step function the generation pipeline calls (the cached one)."""
        return self.step_cached(input_ids, state)

    @torch.inference_mode()
    def step_uncached(self, input_ids: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor]:
        """``lmlab.generation`` step function without a cache: re-run the last ``block_size`` tokens each time."""
        ids = input_ids if state is None else torch.cat([state, input_ids], dim=1)  # (B, T)
        ids = ids[:, -self.config.block_size :]
        return self(ids)[:, -1], ids  # (B, V)

    @torch.inference_mode()
    def generate(self, prompt_ids, sampling, use_cache: bool = True, eos_id: int | None = None, on_token=None):
        """Sample continuations of ``prompt_ids`` ((T,) or (B, T)) with a :class:`~lmlab.generation.SamplingConfig`;
        returns the new ids of each row. The prompt must fit the context (see :meth:`crop_prompt`)."""
        from lmlab.generation import generate

        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            ids = prompt_ids if isinstance(prompt_ids, Tensor) else torch.tensor(list(prompt_ids))
            ids = ids.to(device).long()
            self._check_length(ids.shape[-1])
            step = self.step_cached if use_cache else self.step_uncached
            return generate(step, ids, sampling, on_token=on_token, eos_id=eos_id)
        finally:
            self.train(was_training)
