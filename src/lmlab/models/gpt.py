r"""A GPT-style decoder-only Transformer language model.

Token embeddings plus learned absolute position embeddings (or rotary position embeddings, RoPE), a stack of
pre-LayerNorm blocks

$$h \leftarrow h + \mathrm{Attn}(\mathrm{LN}_1(h)), \qquad h \leftarrow h + \mathrm{MLP}(\mathrm{LN}_2(h))$$

with causal multi-head self-attention through ``torch.nn.functional.scaled_dot_product_attention`` and a GELU
MLP, a final LayerNorm and an output projection tied to the token embedding. Initialisation follows GPT-2:
$\mathcal N(0, 0.02)$ for every matrix and embedding, zero biases, and the two projections that write into the
residual stream scaled by $1/\sqrt{2L}$.

The Llama family (Llama, Qwen2, Mistral, SmolLM, TinyLlama) is the same model with other options: RMSNorm
(``norm="rmsnorm"``), rotary embeddings in the Hugging Face convention (``rope_style="half"``: the two halves of
each head are rotated against each other, :func:`apply_rope_half`), ``rope_scaling`` ("linear", "llama3"), a
SwiGLU MLP with its own ``intermediate_size``, grouped-query attention (``num_kv_heads`` < ``num_heads``: each
key/value head serves ``num_heads / num_kv_heads`` query heads), q/k/v biases only (``qkv_bias``, Qwen2) and an
untied output head. :mod:`lmlab.hf` maps Hugging Face checkpoints onto these options.

A batch may be padded: ``attention_mask`` (B, T) marks the real tokens; padded keys are masked out and each
row's positions count its real tokens only, so a left-padded prompt (batched generation) and a right-padded
text (scoring) give the logits an unpadded one would.

Generation goes through :mod:`lmlab.generation` with a key/value cache (:class:`KVCache`) as the step state:
the prompt is run once, then each new token attends to the cached keys and values of every earlier position.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmlab.errors import ConfigError
from lmlab.models import bf16


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
    #: "layernorm" (GPT-2) or "rmsnorm" (Llama); ``norm_eps`` is the epsilon of either
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_eps: float = 1e-5
    #: "gelu" (exact), "gelu_tanh" (GPT-2's tanh approximation) or "swiglu" (Llama: down(silu(gate(x)) * up(x)))
    mlp: Literal["gelu", "gelu_tanh", "swiglu"] = "gelu"
    #: width of the MLP's hidden layer; 0: mlp_ratio * embed_dim
    intermediate_size: int = 0
    #: key/value heads (grouped-query attention); 0: as many as num_heads
    num_kv_heads: int = 0
    #: biases on the q/k/v projections even when ``bias`` is false (Qwen2)
    qkv_bias: bool = False
    #: rotary convention: "interleaved" rotates pairs (x[2i], x[2i+1]); "half" (Hugging Face) rotates (x[i], x[i+D/2])
    rope_style: Literal["interleaved", "half"] = "interleaved"
    #: rotary frequency scaling: "none", "linear" (all frequencies / rope_factor) or "llama3" (Llama 3.1)
    rope_scaling: Literal["none", "linear", "llama3"] = "none"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    #: the context the rotary frequencies were trained for ("llama3" scaling)
    rope_original_context: int = 8192

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
        if self.norm_eps <= 0:
            problems.append(f"model.norm_eps must be > 0, got {self.norm_eps}")
        if self.intermediate_size < 0:
            problems.append(f"model.intermediate_size must be >= 0 (0: mlp_ratio * embed_dim), got {self.intermediate_size}")
        if self.num_kv_heads < 0 or (self.num_kv_heads and self.num_heads % self.num_kv_heads):
            ok = [h for h in range(1, self.num_heads + 1) if self.num_heads % h == 0]
            problems.append(f"model.num_kv_heads={self.num_kv_heads} must divide model.num_heads={self.num_heads}; use one of {ok} (or 0)")
        if self.rope_factor < 1.0:
            problems.append(f"model.rope_factor must be >= 1, got {self.rope_factor}")
        if self.rope_scaling == "llama3" and not 0 < self.rope_low_freq_factor < self.rope_high_freq_factor:
            problems.append("model.rope_low_freq_factor must be > 0 and < model.rope_high_freq_factor")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def kv_heads(self) -> int:
        """Key/value heads (``num_kv_heads`` or, when 0, ``num_heads``)."""
        return self.num_kv_heads or self.num_heads

    @property
    def hidden_dim(self) -> int:
        """Width of the MLP's hidden layer."""
        return self.intermediate_size or self.mlp_ratio * self.embed_dim


def num_parameters_formula(cfg: GPTConfig) -> int:
    r"""Closed-form parameter count: with $V$ vocab, $T$ block size, $C$ width, $L$ layers, $r$ MLP ratio and
    biases, $VC + TC + L\,(4C^2 + 2rC^2 + (9 + r)C) + 2C$ (+ $VC$ when the output layer is not tied; no $TC$
    with RoPE). Each block: two LayerNorms ($4C$), qkv ($3C^2 + 3C$), output projection ($C^2 + C$), MLP
    ($2rC^2 + rC + C$). Grouped-query attention, SwiGLU (three matrices) and RMSNorm (no bias) are counted too."""
    V, T, C, L = cfg.vocab_size, cfg.block_size, cfg.embed_dim, cfg.num_layers
    b = 1 if cfg.bias else 0
    I = cfg.hidden_dim
    kv = cfg.kv_heads * cfg.head_dim
    norm = C * (1 + (b if cfg.norm == "layernorm" else 0))
    attn = C * (C + 2 * kv) + (C + 2 * kv) * (1 if (cfg.bias or cfg.qkv_bias) else 0) + C * C + b * C
    mlp = (3 if cfg.mlp == "swiglu" else 2) * C * I + b * ((2 if cfg.mlp == "swiglu" else 1) * I + C)
    total = V * C + L * (2 * norm + attn + mlp) + norm
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


def rope_inv_freq(cfg: GPTConfig) -> Tensor:
    r"""The rotary frequencies $\theta_i = b^{-2i/d}$ (D/2,) computed as Hugging Face does (float32), with the
    config's ``rope_scaling``: "linear" divides them all by ``rope_factor``; "llama3" divides the low
    frequencies (wavelength > original context / low_freq_factor) by it, keeps the high ones and blends between."""
    D = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_base ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))  # (D/2,)
    if cfg.rope_scaling == "linear":
        inv_freq = inv_freq / cfg.rope_factor
    elif cfg.rope_scaling == "llama3":
        factor, old = cfg.rope_factor, cfg.rope_original_context
        low, high = cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old / low, inv_freq / factor, inv_freq)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / high) * ~(wavelen > old / low)
        inv_freq = torch.where(medium, smoothed, scaled)
    return inv_freq


def rope_tables_half(cfg: GPTConfig, length: int) -> tuple[Tensor, Tensor]:
    """cos/sin tables (length, head_dim/2) of the Hugging Face rotary convention, in float32 as it computes them."""
    angles = torch.outer(torch.arange(length, dtype=torch.int64).float(), rope_inv_freq(cfg))  # (T, D/2)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    r"""Rotate each pair $(x_{2i}, x_{2i+1})$ of ``x`` (B, H, T, D) by the angles in cos/sin (T, D/2)."""
    x1, x2 = x[..., 0::2], x[..., 1::2]  # (B, H, T, D/2)
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (B, H, T, D/2, 2)
    return out.flatten(-2).type_as(x)  # (B, H, T, D)


def apply_rope_half(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    r"""Rotate each pair $(x_i, x_{i+D/2})$ of ``x`` (B, H, T, D) by the angles in cos/sin (T, D/2) or
    (B, 1, T, D/2): the Hugging Face convention (``x * cos + rotate_half(x) * sin``)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]  # (B, H, T, D/2)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)  # (B, H, T, D)


def _make_norm(cfg: GPTConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.embed_dim, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps, bias=cfg.bias)


def _norm(x: Tensor, norm: nn.Module) -> Tensor:
    """The functional form of a block's LayerNorm / RMSNorm (the cached decoding path)."""
    if isinstance(norm, nn.RMSNorm):
        return F.rms_norm(x, norm.normalized_shape, norm.weight, norm.eps)
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear``, or for a bf16-stored weight and a float32 ``x`` (:meth:`GPT.bf16_weights_`) the float32
    product without an upcast copy (:func:`lmlab.models.bf16.linear`)."""
    if weight.dtype == torch.bfloat16 and x.dtype == torch.float32:
        return bf16.linear(x, weight, bias)
    return F.linear(x, weight, bias)


class Bf16Linear(nn.Linear):
    """An ``nn.Linear`` whose weight is stored in bfloat16 while inputs, bias and outputs are float32
    (:meth:`GPT.bf16_weights_`; :func:`lmlab.models.bf16.linear`). The same parameters, the same state dict."""

    def forward(self, x: Tensor) -> Tensor:
        return _linear(x, self.weight, self.bias)


class Bf16Embedding(nn.Embedding):
    """An ``nn.Embedding`` stored in bfloat16 that returns float32 rows (exact; :meth:`GPT.bf16_weights_`)."""

    def forward(self, ids: Tensor) -> Tensor:
        return bf16.embedding(ids, self.weight)


def padding_positions(mask: Tensor) -> Tensor:
    """Positions (B, T) of a padded batch: each row counts its real tokens (``mask`` True) from 0; pads get 0."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def padded_attention_mask(key_mask: Tensor, T: int, start: int) -> Tensor:
    """Boolean attention mask (B, 1, T, start + T) for T new queries after ``start`` earlier keys: causal, padded
    keys (``key_mask`` (B, start + T) False) hidden; each query always sees itself, so that a pad's row is
    never empty (its output is ignored)."""
    S = key_mask.shape[1]
    causal = torch.ones(T, S, dtype=torch.bool, device=key_mask.device).tril(diagonal=start)  # (T, S)
    mask = causal & key_mask[:, None, None, :]  # (B, 1, T, S)
    idx = torch.arange(T, device=key_mask.device)
    mask[:, :, idx, start + idx] = True
    return mask


class CausalSelfAttention(nn.Module):
    r"""Multi-head causal self-attention, $\mathrm{softmax}(QK^\top/\sqrt{d} + M)V$ with $M_{ij} = -\infty$ for
    $j > i$, through ``F.scaled_dot_product_attention``; optional key/value cache for incremental decoding.
    With ``num_kv_heads`` < ``num_heads`` (grouped-query attention) each key/value head serves a group of
    query heads. The fused ``qkv`` projection holds the rows of q, then k, then v."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.kv_heads = cfg.kv_heads
        self.head_dim = cfg.head_dim
        self.dropout = cfg.dropout
        self.rope_style = cfg.rope_style
        kv = self.kv_heads * self.head_dim
        self.qkv = nn.Linear(cfg.embed_dim, cfg.embed_dim + 2 * kv, bias=cfg.bias or cfg.qkv_bias)
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim, bias=cfg.bias)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor] | None = None,
        past: tuple[Tensor, Tensor] | None = None,
        mask: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``x`` (B, T, C) -> (output (B, T, C), (keys, values) (B, H_kv, T_past + T, D) for the cache).
        ``mask``: a boolean attention mask (B, 1, T, T_past + T) of a padded batch (None: causal only)."""
        B, T, C = x.shape
        kv = self.kv_heads * self.head_dim
        q, k, v = self.qkv(x).split([C, kv, kv], dim=2)  # (B, T, C), 2 x (B, T, kv)
        q = q.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, H_kv, T, D)
        v = v.view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, H_kv, T, D)
        if rope is not None:
            rotate = apply_rope_half if self.rope_style == "half" else apply_rope
            q, k = rotate(q, *rope), rotate(k, *rope)
        past_len = 0
        if past is not None:
            past_len = past[0].shape[2]
            k = torch.cat([past[0], k], dim=2)  # (B, H_kv, T_past + T, D)
            v = torch.cat([past[1], v], dim=2)
        drop = self.dropout if self.training else 0.0
        gqa = {"enable_gqa": True} if self.kv_heads != self.num_heads else {}
        if mask is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop, **gqa)
        elif past_len == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True, **gqa)  # (B, H, T, D)
        elif T == 1:  # one new query may attend to every cached position
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, **gqa)
        else:  # several new queries after a cache: causal mask aligned to the bottom-right
            causal = torch.ones(T, past_len + T, dtype=torch.bool, device=x.device).tril(diagonal=past_len)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=causal, dropout_p=drop, **gqa)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.resid_drop(self.proj(y)), (k, v)


class MLP(nn.Module):
    """Position-wise feed-forward network: Linear(C, I) -> GELU -> Linear(I, C) -> dropout, or SwiGLU: ``fc``
    holds the gate rows then the up rows (Linear(C, 2I)), ``proj(silu(gate) * up)``."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.kind = cfg.mlp
        width = cfg.hidden_dim
        self.fc = nn.Linear(cfg.embed_dim, 2 * width if cfg.mlp == "swiglu" else width, bias=cfg.bias)
        self.proj = nn.Linear(width, cfg.embed_dim, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(mlp_activation(self.kind, self.fc(x))))  # (B, T, C)


def mlp_activation(kind: str, h: Tensor) -> Tensor:
    """The MLP's nonlinearity on the output of its first projection (B, T, I or 2I) -> (B, T, I)."""
    if kind == "swiglu":
        gate, up = h.chunk(2, dim=-1)
        return F.silu(gate) * up
    return F.gelu(h, approximate="tanh" if kind == "gelu_tanh" else "none")


class Block(nn.Module):
    """Pre-norm Transformer block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1 = _make_norm(cfg)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = _make_norm(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x, rope=None, past=None, mask=None):
        a, kv = self.attn(self.ln1(x), rope, past, mask)
        x = x + a
        x = x + self.mlp(self.ln2(x))
        return x, kv


@dataclass
class KVCache:
    """The step state of cached generation: per-layer key and value buffers (B, H_kv, capacity, D), of which
    the first ``length`` positions are filled, and the ids (B, capacity) they cover.

    Decoding writes each new position in place (no re-allocation or concatenation per token; the state object
    returned by :meth:`GPT.step_cached` is the one passed in); a full buffer grows (doubling, up to the
    context). ``ids`` are kept so that, once the context is full, the window of the last ``block_size`` tokens
    can be recomputed (absolute position embeddings cannot slide).

    A padded batch (left-padded prompts) also keeps ``mask`` (B, capacity), False at pads, and ``positions``
    (B,), each row's count of real tokens so far (the position of its next token)."""

    keys: list[Tensor]
    values: list[Tensor]
    ids: Tensor
    length: int
    mask: Tensor | None = None
    positions: Tensor | None = None

    @classmethod
    def from_layers(cls, layers: list[tuple[Tensor, Tensor]], ids: Tensor, capacity: int,
                    mask: Tensor | None = None) -> KVCache:
        """Buffers of ``capacity`` positions holding the keys/values ``layers`` (B, H_kv, T, D) of ``ids`` (B, T)."""
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
        cache = cls(keys, values, id_buf, T)
        if mask is not None:
            cache.mask = torch.ones(B, capacity, dtype=torch.bool, device=ids.device)
            cache.mask[:, :T] = mask
            cache.positions = mask.long().sum(-1)
        return cache

    @property
    def capacity(self) -> int:
        return self.ids.shape[1]

    def grow(self, capacity: int) -> None:
        """Re-allocate the buffers to hold ``capacity`` positions (the filled ones copied)."""
        n = self.length

        def bigger(buf: Tensor, fill: Any = None) -> Tensor:
            shape = list(buf.shape)
            shape[-2 if buf.dim() == 4 else 1] = capacity
            out = buf.new_empty(shape) if fill is None else buf.new_full(shape, fill)
            if buf.dim() == 4:
                out[:, :, :n] = buf[:, :, :n]
            else:
                out[:, :n] = buf[:, :n]
            return out

        self.keys = [bigger(k) for k in self.keys]
        self.values = [bigger(v) for v in self.values]
        self.ids = bigger(self.ids, 0)
        if self.mask is not None:
            self.mask = bigger(self.mask, True)

    @property
    def filled_ids(self) -> Tensor:
        """The ids (B, length) whose keys and values are cached."""
        return self.ids[:, : self.length]


@contextmanager
def _no_init():
    """Skip torch's parameter initialisers while a model is built for loading weights into (as transformers'
    ``no_init_weights`` does; the meta device would instead import torch's reference-op machinery, seconds)."""
    names = ("normal_", "uniform_", "kaiming_uniform_", "zeros_", "ones_", "trunc_normal_")
    saved = {name: getattr(nn.init, name) for name in names}
    try:
        for name in names:
            setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


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
        self.ln_f = _make_norm(config)
        self.lm_head = nn.Linear(config.embed_dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        if config.position == "rope":
            self.register_buffer("rope_cos", torch.empty(0), persistent=False)
            self.register_buffer("rope_sin", torch.empty(0), persistent=False)
        self.init_buffers()
        self.reset_parameters()

    def init_buffers(self) -> GPT:
        """(Re)compute the rotary tables (non-persistent buffers, so that they follow the config, not a file).
        Returns the model."""
        cfg = self.config
        if cfg.position != "rope":
            return self
        device = self.wte.weight.device
        if cfg.rope_style == "half":
            cos, sin = rope_tables_half(cfg, cfg.block_size)
        else:
            cos, sin = rope_tables(cfg.head_dim, cfg.block_size, cfg.rope_base)
        self.rope_cos, self.rope_sin = cos.to(device), sin.to(device)
        return self

    def reset_parameters(self) -> None:
        """GPT-2 initialisation; residual output projections get std 0.02 / sqrt(2 * num_layers)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, nn.LayerNorm | nn.RMSNorm):
                nn.init.ones_(module.weight)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        scaled = 0.02 / math.sqrt(2 * self.config.num_layers)
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, mean=0.0, std=scaled)
            nn.init.normal_(block.mlp.proj.weight, mean=0.0, std=scaled)

    @classmethod
    def empty(cls, config: GPTConfig, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> GPT:
        """A model with uninitialised weights, for loading weights into without spending time on a random
        initialisation that is overwritten (the rotary tables are computed as usual)."""
        with torch.device(device), _no_init():
            model = cls(config)
        if dtype is not None:
            model.to(dtype)
        return model

    def wide_linears(self) -> list[nn.Linear]:
        """The projections whose output is at least twice as wide as their input: the output layer and the
        MLP's first projection (GPT-2's fused qkv too). Decoding one token at a time reads each of them as a
        matrix-vector product, which is where the layout of their weights matters (:meth:`column_major_`)."""
        return [m for m in self.modules() if isinstance(m, nn.Linear) and m.out_features >= 2 * m.in_features]

    def column_major_(self, copy: bool = True) -> GPT:
        """Store the weights of :meth:`wide_linears` column-major (strides (1, out_features)): the same values,
        the same memory, a different order. On a CPU a matrix-vector product with an (out, in) matrix stored
        row-major goes through MKL's transposed GEMV, which on AMD CPUs (AVX2) runs at about half the memory
        bandwidth of the untransposed one; decoding at batch 1 is nothing but such products, so this makes it
        ~1.3x faster there (benchmarks/checkpoints.py). A tied output layer shares the token embedding, which
        then looks up strided rows (one token: ``embed_dim`` reads). ``copy=False`` on an :meth:`empty` model
        skips copying the uninitialised values (weights are loaded afterwards), so the old buffers, never
        touched, never become resident. Returns the model."""
        with torch.no_grad():
            for lin in self.wide_linears():
                w = lin.weight
                if w.dim() != 2 or w.stride() == (1, w.shape[0]):
                    continue
                new = torch.empty_strided(w.shape, (1, w.shape[0]), dtype=w.dtype, device=w.device)
                if copy:
                    new.copy_(w)
                w.data = new
        return self

    #: the dtype activations are computed in when it is not the weights' (float32 after :meth:`bf16_weights_`)
    compute_dtype: torch.dtype | None = None

    def bf16_weights_(self) -> GPT:
        """Keep the matrices (every linear weight, the embeddings) in bfloat16 and compute in float32: norms,
        biases and the rotary tables become float32 (small), every ``nn.Linear`` a :class:`Bf16Linear` and every
        ``nn.Embedding`` a :class:`Bf16Embedding` (the same parameter objects: a tied output layer stays tied),
        and activations and the KV cache are float32. bf16 -> float32 is exact, so the logits are those of the
        model upcast to float32 (up to the order of the sums) while decoding reads half the bytes per token.
        For CPU inference (the products run in :mod:`lmlab.models.bf16`); the weights are made row-major.
        Returns the model."""
        self.row_major_()
        with torch.no_grad():
            for p in self.parameters():
                p.data = p.data.to(torch.bfloat16 if p.dim() >= 2 else torch.float32)
        swaps = {nn.Linear: Bf16Linear, nn.Embedding: Bf16Embedding}
        for parent in list(self.modules()):
            for name, child in list(parent.named_children()):
                kind = swaps.get(type(child))
                if kind is not None:
                    new = kind.__new__(kind)
                    new.__dict__.update(child.__dict__)  # the same parameters (and hooks), another forward
                    setattr(parent, name, new)
        self.compute_dtype = torch.float32
        self.init_buffers()
        return self

    def row_major_(self) -> GPT:
        """Make every parameter contiguous (row-major) again, copying only those that are not (the inverse of
        :meth:`column_major_`: training, evaluation and export want the usual layout). Returns the model."""
        with torch.no_grad():
            for p in self.parameters():
                if not p.is_contiguous():
                    p.data = p.data.contiguous()
        return self

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

    def _rope_at(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """cos/sin (B, 1, T, D/2) at per-row ``positions`` (B, T)."""
        return self.rope_cos[positions].unsqueeze(1), self.rope_sin[positions].unsqueeze(1)

    def forward(self, ids: Tensor, past: list[tuple[Tensor, Tensor]] | None = None,
                attention_mask: Tensor | None = None, last_only: bool = False):
        """Logits (B, T, V) for ``ids`` (B, T); with ``past`` (a cache of earlier positions) also the new cache.

        ``attention_mask`` (B, T), 1/True at real tokens, 0/False at pads (left or right padding; not with a
        non-empty ``past``): pads are hidden from every query and positions count real tokens only; the
        logits at pad positions are meaningless. Without ``past`` the return value is just the logits; with
        ``past`` (possibly an empty list) it is ``(logits, layers)``. ``last_only``: the logits (B, 1, V) of the
        last position only (generation: the output layer of a large vocabulary is the costliest part of a
        prompt pass)."""
        x, layers = self._trunk(ids, past, attention_mask)
        if last_only:
            x = x[:, -1:]  # (B, 1, C)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        return logits if past is None else (logits, layers)

    def _trunk(self, ids: Tensor, past: list[tuple[Tensor, Tensor]] | None = None,
               attention_mask: Tensor | None = None) -> tuple[Tensor, list]:
        """The residual stream after the last block (B, T, C), before the final norm, and the new cache."""
        B, T = ids.shape
        offset = past[0][0].shape[2] if past else 0
        self._check_length(offset + T)
        x = self.wte(ids)  # (B, T, C)
        rope, mask = None, None
        if attention_mask is not None:
            if offset:
                raise ValueError("attention_mask with a non-empty past is not supported; use step_cached")
            key_mask = attention_mask.bool()
            positions = padding_positions(key_mask)  # (B, T)
            mask = padded_attention_mask(key_mask, T, 0)  # (B, 1, T, T)
            if self.wpe is not None:
                x = x + self.wpe(positions)  # (B, T, C)
            else:
                rope = self._rope_at(positions)
        elif self.wpe is not None:
            pos = torch.arange(offset, offset + T, device=ids.device)
            x = x + self.wpe(pos)  # (B, T, C)
        else:
            rope = (self.rope_cos[offset : offset + T], self.rope_sin[offset : offset + T])
        x = self.drop(x)
        layers = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, rope, past[i] if past else None, mask)
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

    #: the first KV-cache allocation holds the prompt plus this many positions (then it doubles as needed)
    cache_headroom: int = 256

    @torch.inference_mode()
    def step_cached(self, input_ids: Tensor, state: KVCache | None) -> tuple[Tensor, KVCache]:
        """``lmlab.generation`` step function with a KV cache: logits (B, V) of the last position.

        While the context has room, only the new tokens are run (:meth:`forward_cached`, which appends to the
        cache in place); once it is full, the window of the last ``block_size`` tokens is recomputed, exactly
        as the uncached path does. ``state`` may be a :meth:`prefill_state` of a padded batch."""
        block = self.config.block_size
        if state is None or state.length + input_ids.shape[1] > block:
            ids, mask = input_ids, None
            if state is not None:
                ids = torch.cat([state.filled_ids, input_ids], dim=1)  # (B, T)
                if state.mask is not None:
                    mask = torch.cat([state.mask[:, : state.length], state.mask.new_ones(input_ids.shape)], dim=1)
                    mask = mask[:, -block:]
            window = ids[:, -block:]
            logits, layers = self(window, past=[], attention_mask=mask, last_only=True)
            capacity = block if state is not None else min(block, window.shape[1] + self.cache_headroom)
            return logits[:, -1], KVCache.from_layers(layers, window, capacity, mask)
        needed = state.length + input_ids.shape[1]
        if needed > state.capacity:
            state.grow(min(block, max(needed, 2 * state.capacity)))
        return self.forward_cached(input_ids, state), state

    def prefill_state(self, attention_mask: Tensor, max_new_tokens: int = 0) -> KVCache:
        """An empty :class:`KVCache` for a left-padded prompt batch: its mask (B, T) is recorded, so the first
        :meth:`step_cached` (on the padded prompt ids) hides the pads and counts positions from each row's
        first real token."""
        B, T = attention_mask.shape
        cfg = self.config
        p = next(self.parameters())
        capacity = min(cfg.block_size, T + (max_new_tokens or self.cache_headroom))
        shape = (B, cfg.kv_heads, capacity, cfg.head_dim)
        keys = [p.new_empty(shape, dtype=self.compute_dtype or p.dtype) for _ in self.blocks]
        values = [p.new_empty(shape, dtype=self.compute_dtype or p.dtype) for _ in self.blocks]
        ids = torch.zeros(B, capacity, dtype=torch.long, device=p.device)
        mask = torch.ones(B, capacity, dtype=torch.bool, device=p.device)
        mask[:, :T] = attention_mask.bool()
        return KVCache(keys, values, ids, 0, mask, torch.zeros(B, dtype=torch.long, device=p.device))

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
        C, H, Hkv, D = cfg.embed_dim, cfg.num_heads, cfg.kv_heads, cfg.head_dim
        kv = Hkv * D
        start, end = cache.length, cache.length + T
        self._check_length(end)
        x = F.embedding(ids, self.wte.weight)  # (B, T, C)
        if self.compute_dtype is not None:
            x = x.to(self.compute_dtype)
        rope = None
        if cache.mask is not None:  # a padded batch: per-row positions, pads hidden
            new = cache.mask[:, start:end]
            positions = cache.positions[:, None] + padding_positions(new)  # (B, T)
            cache.positions = cache.positions + new.long().sum(-1)
            mask = padded_attention_mask(cache.mask[:, :end], T, start)  # (B, 1, T, end)
            if self.wpe is not None:
                x = x + F.embedding(positions, self.wpe.weight)  # (B, T, C)
            else:
                rope = self._rope_at(positions)
        else:
            if self.wpe is not None:
                x = x + self.wpe.weight[start:end]  # (B, T, C)
            else:
                rope = (self.rope_cos[start:end], self.rope_sin[start:end])
            # one new query sees every cached position; several see them plus a causal mask among themselves
            mask = None if T == 1 else torch.ones(T, end, dtype=torch.bool, device=ids.device).tril(diagonal=start)
        rotate = apply_rope_half if cfg.rope_style == "half" else apply_rope
        gqa = {"enable_gqa": True} if Hkv != H else {}
        swiglu = cfg.mlp == "swiglu"
        approximate = "tanh" if cfg.mlp == "gelu_tanh" else "none"
        for block, keys, values in zip(self.blocks, cache.keys, cache.values, strict=True):
            attn, mlp = block.attn, block.mlp
            h = _norm(x, block.ln1)
            qkv = _linear(h, attn.qkv.weight, attn.qkv.bias)  # (B, T, C + 2 kv)
            if Hkv == H:
                q, k, v = qkv.view(B, T, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, T, D)
            else:
                q, k, v = qkv.split([C, kv, kv], dim=-1)
                q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
                k = k.view(B, T, Hkv, D).transpose(1, 2)  # (B, H_kv, T, D)
                v = v.view(B, T, Hkv, D).transpose(1, 2)
            if rope is not None:
                q, k = rotate(q, *rope), rotate(k, *rope)
            keys[:, :, start:end] = k
            values[:, :, start:end] = v
            y = F.scaled_dot_product_attention(q, keys[:, :, :end], values[:, :, :end], attn_mask=mask, **gqa)
            x = x + _linear(y.transpose(1, 2).reshape(B, T, C), attn.proj.weight, attn.proj.bias)
            h = _linear(_norm(x, block.ln2), mlp.fc.weight, mlp.fc.bias)
            if swiglu:
                gate, up = h.chunk(2, dim=-1)
                h = F.silu(gate) * up
            else:
                h = F.gelu(h, approximate=approximate)
            x = x + _linear(h, mlp.proj.weight, mlp.proj.bias)
        cache.ids[:, start:end] = ids
        cache.length = end
        last = _norm(x[:, -1], self.ln_f)  # (B, C)
        return _linear(last, self.lm_head.weight)  # (B, V)

    def step(self, input_ids: Tensor, state: KVCache | None = None) -> tuple[Tensor, KVCache]:
        """The step function the generation pipeline calls (the cached one)."""
        return self.step_cached(input_ids, state)

    @torch.inference_mode()
    def step_uncached(self, input_ids: Tensor, state: Tensor | tuple[Tensor, Tensor] | None) -> tuple[Tensor, Any]:
        """``lmlab.generation`` step function without a cache: re-run the last ``block_size`` tokens each time.
        ``state`` is the ids so far, or (ids, attention mask) for a padded batch."""
        mask = None
        if isinstance(state, tuple):
            state, mask = state
            if state.shape[1] == 0:
                state = None
            mask = torch.cat([mask, mask.new_ones(input_ids.shape)], dim=1) if state is not None else mask
        ids = input_ids if state is None else torch.cat([state, input_ids], dim=1)  # (B, T)
        ids = ids[:, -self.config.block_size :]
        if mask is None:
            return self(ids, last_only=True)[:, -1], ids  # (B, V)
        mask = mask[:, -self.config.block_size :]
        return self(ids, attention_mask=mask, last_only=True)[:, -1], (ids, mask)

    @torch.inference_mode()
    def generate(self, prompt_ids, sampling, use_cache: bool = True, eos_id: int | Sequence[int] | None = None,
                 on_token=None, attention_mask: Tensor | None = None):
        """Sample continuations of ``prompt_ids`` ((T,) or (B, T)) with a :class:`~lmlab.generation.SamplingConfig`;
        returns the new ids of each row. The prompt must fit the context (see :meth:`crop_prompt`).
        ``attention_mask`` (B, T): a left-padded prompt batch (0 at the pads)."""
        from lmlab.generation import generate

        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            ids = prompt_ids if isinstance(prompt_ids, Tensor) else torch.tensor(list(prompt_ids))
            ids = ids.to(device).long()
            self._check_length(ids.shape[-1])
            step = self.step_cached if use_cache else self.step_uncached
            state = None
            if attention_mask is not None:
                attention_mask = attention_mask.to(device).bool()
                if use_cache:
                    state = self.prefill_state(attention_mask, sampling.max_new_tokens)
                else:
                    state = (ids[:, :0], attention_mask)
            elif use_cache:
                self.cache_headroom = max(type(self).cache_headroom, sampling.max_new_tokens)
            return generate(step, ids, sampling, state=state, on_token=on_token, eos_id=eos_id)
        finally:
            self.__dict__.pop("cache_headroom", None)
            self.train(was_training)
