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

**BERT itself** (Devlin et al. 2019; what ``lmlab mlm import`` builds from a Hugging Face ``bert`` checkpoint) is
the same encoder with four options of :class:`MLMConfig`, whose defaults are the pre-LN model above:

* ``norm_position="post"``: $h \leftarrow \mathrm{LN}_1(h + \mathrm{Attn}(h))$, $h \leftarrow \mathrm{LN}_2(h +
  \mathrm{MLP}(h))$, and no final LayerNorm (the last block's $\mathrm{LN}_2$ already normalised the top);
* ``embed_norm=True`` and ``type_vocab_size`` $> 0$: the input is
  $h_0 = \mathrm{LN}_e(E_{x_t} + P_t + S_0)$, BERT's token + position + segment embedding (every token is in
  segment 0: lmlab encodes one text per sequence) normalised before the first block;
* ``norm_eps``: the $\epsilon$ of every LayerNorm (BERT's checkpoints: $10^{-12}$; the default $10^{-5}$ is
  PyTorch's).

Both use the exact GELU, $\mathrm{GELU}(x) = x\,\Phi(x) = \tfrac{x}{2}\,(1 + \mathrm{erf}(x/\sqrt2))$ (BERT's
``hidden_act="gelu"``; not the tanh approximation), in the MLP and in the head.

The MLM head is BERT's: dense -> GELU -> LayerNorm -> a decoder tied to the token embedding plus an output bias,
applied only at the chosen positions. The loss is the mean cross-entropy over those positions (``labels`` holds
the original id there and ``IGNORE_INDEX`` elsewhere; the masking itself is data-side, :mod:`lmlab.data.mlm`).
A checkpoint saved without its head (Hugging Face ``BertModel``) is an encoder with ``head=False``: a classifier
body, and :meth:`MLM.lm_logits` says it has no head.

Initialisation follows BERT/GPT-2: $\mathcal N(0, 0.02)$ for matrices and embeddings, zero biases, unit gains,
and the residual output projections scaled by $1/\sqrt{2L}$.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

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
    #: width of the MLP's hidden layer (0: mlp_ratio * embed_dim)
    intermediate_size: int = 0
    #: "pre": h + f(LN(h)) and a final LayerNorm (lmlab's default); "post": LN(h + f(h)), no final norm (BERT)
    norm_position: Literal["pre", "post"] = "pre"
    #: a LayerNorm on the summed input embeddings (BERT)
    embed_norm: bool = False
    #: rows of the segment (token-type) embedding; 0: none. Every token is in segment 0 (BERT: 2)
    type_vocab_size: int = 0
    #: epsilon of every LayerNorm (PyTorch's default; BERT's checkpoints use 1e-12)
    norm_eps: float = 1e-5
    #: False: the encoder only (a checkpoint saved without its MLM head): a classifier body, no fill-mask
    head: bool = True

    @property
    def hidden_dim(self) -> int:
        """Width of the MLP's hidden layer."""
        return self.intermediate_size or self.mlp_ratio * self.embed_dim

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
        if self.intermediate_size < 0:
            problems.append(f"model.intermediate_size must be >= 0 (0: mlp_ratio * embed_dim), got {self.intermediate_size}")
        if self.norm_position not in ("pre", "post"):
            problems.append(f"model.norm_position must be pre or post, got {self.norm_position!r}")
        if self.type_vocab_size < 0:
            problems.append(f"model.type_vocab_size must be >= 0, got {self.type_vocab_size}")
        if not self.norm_eps > 0:
            problems.append(f"model.norm_eps must be > 0, got {self.norm_eps}")
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
    """Encoder block with a GELU MLP: pre-LN ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``, or post-LN (BERT)
    ``ln1(x + attn(x))`` then ``ln2(x + mlp(x))``."""

    def __init__(self, cfg: MLMConfig) -> None:
        super().__init__()
        self.post_ln = cfg.norm_position == "post"
        self.ln1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.attn = EncoderSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.fc = nn.Linear(cfg.embed_dim, cfg.hidden_dim)
        self.proj = nn.Linear(cfg.hidden_dim, cfg.embed_dim)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        if self.post_ln:
            x = self.ln1(x + self.attn(x, attn_mask))
            return self.ln2(x + self.drop(self.proj(F.gelu(self.fc(x)))))  # (B, T, C)
        x = x + self.attn(self.ln1(x), attn_mask)
        return x + self.drop(self.proj(F.gelu(self.fc(self.ln2(x)))))  # (B, T, C)


class MLMHead(nn.Module):
    """BERT's prediction head: dense -> GELU -> LayerNorm -> decoder (the token embedding, tied) + output bias."""

    def __init__(self, cfg: MLMConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        self.ln = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
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
        # BERT's options (None when off, so the parameters of a default model are exactly the pre-LN ones)
        self.wtt = nn.Embedding(config.type_vocab_size, config.embed_dim) if config.type_vocab_size else None
        self.ln_emb = nn.LayerNorm(config.embed_dim, eps=config.norm_eps) if config.embed_norm else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(EncoderBlock(config) for _ in range(config.num_layers))
        post = config.norm_position == "post"
        self.ln_f = None if post else nn.LayerNorm(config.embed_dim, eps=config.norm_eps)
        self.head = MLMHead(config) if config.head else None
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
        if self.head is not None:
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
        """Top hidden states (B, T, C) of ``ids`` (B, T), after the final LayerNorm (post-LN: after the last block's
        second one); ``pad_mask`` (B, T) is True
        at real tokens (None: no padding). Padding keys are masked out of every attention."""
        B, T = ids.shape
        if T > self.config.block_size:
            raise ConfigError(
                f"a sequence of {T} tokens does not fit model.block_size={self.config.block_size} "
                "(the encoder's learned positions); truncate it"
            )
        attn_mask = None if pad_mask is None else pad_mask[:, None, None, :].to(torch.bool)  # (B, 1, 1, T)
        x = self.wte(ids) + self.wpe(torch.arange(T, device=ids.device))  # (B, T, C)
        if self.wtt is not None:
            x = x + self.wtt.weight[0]  # segment 0 everywhere
        if self.ln_emb is not None:
            x = self.ln_emb(x)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, attn_mask)
        return x if self.ln_f is None else self.ln_f(x)  # (B, T, C)

    def lm_logits(self, hidden: Tensor) -> Tensor:
        """The MLM head on hidden states (..., C) -> logits over the vocabulary (..., V)."""
        if self.head is None:
            raise ConfigError(
                "this model has no MLM head (a checkpoint saved without cls.predictions, e.g. transformers' "
                "BertModel): it can be fine-tuned as a classifier body but cannot predict tokens"
            )
        return self.head(hidden, self.wte.weight)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Every parameter once, bottom to top: embeddings (token, position; BERT: segment, their norm), each
        block, then the final norm with the MLM head (its dense layer, norm and output bias; the decoder is the
        tied token embedding) when the model has either."""
        groups = [[self.wte.weight, self.wpe.weight]]
        for extra in (self.wtt, self.ln_emb):
            if extra is not None:
                groups[0] += list(extra.parameters())
        groups += [list(block.parameters()) for block in self.blocks]
        top = [p for m in (self.ln_f, self.head) if m is not None for p in m.parameters()]
        if top:
            groups.append(top)
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
