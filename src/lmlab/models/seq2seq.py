r"""Sequence to sequence models: an RNN encoder-decoder with attention, and a Transformer encoder-decoder.

Both map a padded source batch ``src`` (B, S) to next-token logits for a target prefix and plug into
:mod:`lmlab.generation` through :meth:`Seq2Seq.step` / :meth:`Seq2Seq.reorder_state`.

**RNN** (``arch: rnn``). The encoder is a (bidirectional) GRU or LSTM run over *packed* sequences, so padding
never enters a recurrence; its outputs $h_1..h_S$ are the memory. The decoder is an RNN with attention over the
memory, masked so that padded source positions get exactly zero weight:

* Bahdanau (additive, Bahdanau et al. 2015), attending from the previous decoder state:
  $e_{tj} = v^\top \tanh(W_q s_{t-1} + W_k h_j)$, $\alpha_t = \mathrm{softmax}(e_t)$, $c_t = \sum_j \alpha_{tj} h_j$,
  $s_t = \mathrm{RNN}([y_{t-1}; c_t], s_{t-1})$, $\tilde h_t = \tanh(W_c [s_t; c_t; y_{t-1}])$.
* Luong (multiplicative, Luong et al. 2015), attending from the current state: $e_{tj} = s_t^\top h_j$ (dot) or
  $s_t^\top W_a h_j$ (general); $s_t = \mathrm{RNN}([y_{t-1}; \tilde h_{t-1}], s_{t-1})$ with *input feeding*
  (the previous attentional vector is part of the input), $\tilde h_t = \tanh(W_c [s_t; c_t])$.

In both, $p(y_t \mid y_{<t}, x) = \mathrm{softmax}(W_o \tilde h_t)$; with ``tie_embeddings`` $W_o$ is the target
embedding matrix (Press & Wolf 2017). ``teacher_forcing`` < 1 feeds the model's own arg-max instead of the gold
previous token with probability ``1 - teacher_forcing`` during training.

**Transformer** (``arch: transformer``, Vaswani et al. 2017) with pre-layer-norm blocks whose attention is
:func:`torch.nn.functional.scaled_dot_product_attention`, sinusoidal positions and a key-padding mask on the
source.

The loss is token-level cross-entropy with label smoothing $\epsilon$ (targets $(1-\epsilon)$ on the gold token
and $\epsilon / V$ spread over the vocabulary), ignoring padding.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lmlab.errors import ConfigError
from lmlab.models.rnn import PaddedBiRNN

#: the special ids of the vocabularies (lmlab.data.parallel.TextCodec reserves the same four)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


@dataclass
class Seq2SeqConfig:
    """Every architecture knob. ``src_vocab_size`` / ``tgt_vocab_size`` are filled in from the data."""

    arch: Literal["rnn", "transformer"] = "rnn"
    src_vocab_size: int = 0
    tgt_vocab_size: int = 0
    embed_dim: int = 256
    #: RNN: decoder state size (a bidirectional encoder uses hidden_dim // 2 per direction);
    #: Transformer: the feed-forward inner size.
    hidden_dim: int = 512
    num_layers: int = 1
    #: Transformer only: decoder layers (0: same as num_layers)
    decoder_layers: int = 0
    num_heads: int = 4
    cell: Literal["gru", "lstm"] = "gru"
    bidirectional: bool = True
    attention: Literal["bahdanau", "dot", "general"] = "bahdanau"
    #: feed the previous attentional vector into the decoder RNN (Luong attention; Bahdanau already feeds c_t)
    input_feeding: bool = True
    dropout: float = 0.2
    #: probability of feeding the gold previous token during training (1.0: always)
    teacher_forcing: float = 1.0
    label_smoothing: float = 0.1
    #: share the decoder's input embedding and output projection
    tie_embeddings: bool = True
    #: share source and target embeddings (needs one shared vocabulary)
    share_embeddings: bool = False
    #: the longest source/target (in tokens) the model accepts (positions of the Transformer)
    max_len: int = 256

    def validate(self) -> None:
        problems = []
        for key in ("embed_dim", "hidden_dim", "num_layers", "num_heads", "max_len"):
            if getattr(self, key) < 1:
                problems.append(f"model.{key} must be >= 1, got {getattr(self, key)}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"model.dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.teacher_forcing <= 1.0:
            problems.append(f"model.teacher_forcing must be in [0, 1], got {self.teacher_forcing}")
        if not 0.0 <= self.label_smoothing < 1.0:
            problems.append(f"model.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.arch == "rnn" and self.bidirectional and self.hidden_dim % 2:
            problems.append(f"model.hidden_dim must be even with a bidirectional encoder, got {self.hidden_dim}")
        if self.arch == "transformer" and self.embed_dim % self.num_heads:
            problems.append(
                f"model.embed_dim={self.embed_dim} must be divisible by model.num_heads={self.num_heads}"
            )
        if self.decoder_layers < 0:
            problems.append(f"model.decoder_layers must be >= 0, got {self.decoder_layers}")
        if problems:
            raise ConfigError("; ".join(problems))


def lengths_to_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B,) lengths -> (B, max_len) bool, True on real (non-padded) positions."""
    return torch.arange(max_len, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


# ------------------------------------------------------------------------------------------------ attention


class Attention(nn.Module):
    """Bahdanau (additive) or Luong (dot / general) attention with a source padding mask.

    ``prepare(memory)`` precomputes the key side once per sentence; ``forward(query, memory, keys, mask)``
    returns the context (B, D_mem) and the weights (B, S), which are exactly 0 on padded positions.
    """

    def __init__(self, kind: str, query_dim: int, memory_dim: int, attn_dim: int | None = None) -> None:
        super().__init__()
        self.kind = kind
        if kind == "bahdanau":
            attn_dim = attn_dim or query_dim
            self.w_q = nn.Linear(query_dim, attn_dim, bias=False)
            self.w_k = nn.Linear(memory_dim, attn_dim, bias=True)
            self.v = nn.Linear(attn_dim, 1, bias=False)
        elif kind == "general":
            self.w_a = nn.Linear(memory_dim, query_dim, bias=False)
        elif kind == "dot":
            if query_dim != memory_dim:
                raise ConfigError(
                    f"dot attention needs the decoder state ({query_dim}) and encoder output ({memory_dim}) "
                    "to have the same size; use attention: general"
                )
        else:
            raise ConfigError(f"unknown attention {kind!r}; use bahdanau, dot or general")

    def prepare(self, memory: Tensor) -> Tensor:
        if self.kind == "bahdanau":
            return self.w_k(memory)  # (B, S, A)
        if self.kind == "general":
            return self.w_a(memory)  # (B, S, Dq)
        return memory

    def scores(self, query: Tensor, keys: Tensor) -> Tensor:
        """Unnormalised scores e (B, S) for a query (B, Dq)."""
        if self.kind == "bahdanau":
            return self.v(torch.tanh(keys + self.w_q(query).unsqueeze(1))).squeeze(-1)  # (B, S)
        return torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1)  # (B, S)

    def forward(self, query: Tensor, memory: Tensor, keys: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        e = self.scores(query, keys).masked_fill(~mask, float("-inf"))  # (B, S)
        alpha = torch.softmax(e, dim=-1)  # (B, S)
        context = torch.bmm(alpha.unsqueeze(1), memory).squeeze(1)  # (B, D_mem)
        return context, alpha


# --------------------------------------------------------------------------------------------------- RNN


def _rnn(cell: str, input_dim: int, hidden_dim: int, num_layers: int, dropout: float, bidirectional: bool):
    cls = nn.GRU if cell == "gru" else nn.LSTM
    return cls(
        input_dim,
        hidden_dim,
        num_layers=num_layers,
        batch_first=True,
        dropout=dropout if num_layers > 1 else 0.0,
        bidirectional=bidirectional,
    )


def _map_hidden(hidden: Any, fn) -> Any:
    """Apply ``fn`` to a GRU hidden tensor or to both tensors of an LSTM (h, c) pair."""
    return tuple(fn(h) for h in hidden) if isinstance(hidden, tuple) else fn(hidden)


class RNNEncoderDecoder(nn.Module):
    """The RNN encoder (optionally bidirectional, never reading the padding) and the attentional decoder."""

    def __init__(self, cfg: Seq2SeqConfig) -> None:
        super().__init__()
        self.cfg = cfg
        E, H = cfg.embed_dim, cfg.hidden_dim
        self.src_embed = nn.Embedding(cfg.src_vocab_size, E, padding_idx=PAD_ID)
        self.tgt_embed = (
            self.src_embed if cfg.share_embeddings else nn.Embedding(cfg.tgt_vocab_size, E, padding_idx=PAD_ID)
        )
        enc_hidden = H // 2 if cfg.bidirectional else H
        if cfg.cell == "gru":
            # never reads the padding, like a packed sequence, but through the fused kernel (see PaddedBiRNN;
            # packing runs a per-step loop on a CPU). An LSTM encoder stays packed: its decoder needs the final
            # cell states, which the fused kernel does not give at each sequence's own length.
            self.encoder = PaddedBiRNN("gru", E, enc_hidden, cfg.num_layers, cfg.bidirectional,
                                       cfg.dropout if cfg.num_layers > 1 else 0.0)
        else:
            self.encoder = _rnn(cfg.cell, E, enc_hidden, cfg.num_layers, cfg.dropout, cfg.bidirectional)
        #: size of the attentional vector h~ (the embedding size when the output layer is tied)
        self.out_dim = E if cfg.tie_embeddings else H
        self.bahdanau = cfg.attention == "bahdanau"
        self.feed = (not self.bahdanau) and cfg.input_feeding
        dec_in = E + (H if self.bahdanau else (self.out_dim if self.feed else 0))
        self.decoder = _rnn(cfg.cell, dec_in, H, cfg.num_layers, cfg.dropout, False)
        self.attention = Attention(cfg.attention, H, H)
        combine_in = H + H + (E if self.bahdanau else 0)
        self.combine = nn.Linear(combine_in, self.out_dim, bias=False)
        self.out = nn.Linear(self.out_dim, cfg.tgt_vocab_size, bias=True)
        if cfg.tie_embeddings:
            self.out.weight = self.tgt_embed.weight
        self.drop = nn.Dropout(cfg.dropout)
        # N(0, 1/E) embeddings keep the initial logits of a tied output layer near 0 (N(0, 1) would give
        # logits with a standard deviation of about sqrt(E) / 2 and a loss far above log V)
        for table in {id(t): t for t in (self.src_embed, self.tgt_embed)}.values():
            nn.init.normal_(table.weight, std=E**-0.5)
            with torch.no_grad():
                table.weight[PAD_ID].zero_()

    # -- encoder ---------------------------------------------------------------------------------------
    def encode(self, src: Tensor, src_lengths: Tensor) -> dict[str, Any]:
        """Run the encoder; returns the decoder's initial state (memory, keys, mask, hidden, feed)."""
        B, S = src.shape
        emb = self.drop(self.src_embed(src))  # (B, S, E)
        if isinstance(self.encoder, PaddedBiRNN):
            memory, hidden = self.encoder(emb, src_lengths)  # (B, S, H), (L * D, B, H / D)
        else:
            packed = pack_padded_sequence(emb, src_lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, hidden = self.encoder(packed)
            memory, _ = pad_packed_sequence(out, batch_first=True, total_length=S)  # (B, S, H)
        if self.cfg.bidirectional:  # (2L, B, H/2) -> (L, B, H): concatenate the two directions per layer
            hidden = _map_hidden(
                hidden,
                lambda h: h.view(self.cfg.num_layers, 2, B, -1).permute(0, 2, 1, 3).reshape(self.cfg.num_layers, B, -1),
            )
        mask = lengths_to_mask(src_lengths, S)  # (B, S)
        feed = memory.new_zeros(B, self.out_dim)
        return {"memory": memory, "keys": self.attention.prepare(memory), "mask": mask, "hidden": hidden, "feed": feed}

    # -- one decoder step ------------------------------------------------------------------------------
    def recur(self, emb: Tensor, state: dict[str, Any]) -> tuple[Tensor, dict[str, Any], Tensor]:
        """One step from the embedded previous token (B, E): the attentional vector h~ (B, D_out), the new
        state and the attention weights (B, S)."""
        hidden = state["hidden"]
        memory, keys, mask = state["memory"], state["keys"], state["mask"]
        if self.bahdanau:
            top = hidden[0][-1] if isinstance(hidden, tuple) else hidden[-1]  # s_{t-1}: (B, H)
            context, alpha = self.attention(top, memory, keys, mask)
            out, hidden = self.decoder(torch.cat([emb, context], -1).unsqueeze(1), hidden)
            out = out.squeeze(1)  # s_t: (B, H)
            h_tilde = torch.tanh(self.combine(torch.cat([out, context, emb], -1)))  # (B, D_out)
        else:
            rnn_in = torch.cat([emb, state["feed"]], -1) if self.feed else emb
            out, hidden = self.decoder(rnn_in.unsqueeze(1), hidden)
            out = out.squeeze(1)  # s_t: (B, H)
            context, alpha = self.attention(out, memory, keys, mask)
            h_tilde = torch.tanh(self.combine(torch.cat([out, context], -1)))  # (B, D_out)
        return h_tilde, dict(state, hidden=hidden, feed=h_tilde), alpha

    def decode_step(self, prev: Tensor, state: dict[str, Any]) -> tuple[Tensor, dict[str, Any], Tensor]:
        """One step for previous tokens ``prev`` (B,): returns logits (B, V), the new state and weights (B, S)."""
        h_tilde, state, alpha = self.recur(self.drop(self.tgt_embed(prev)), state)
        return self.out(self.drop(h_tilde)), state, alpha  # (B, V)

    def forward(
        self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, teacher_forcing: float = 1.0
    ) -> tuple[Tensor, Tensor]:
        """Logits (B, T, V) and attention weights (B, T, S) for the target inputs ``tgt_in`` (B, T)."""
        state = self.encode(src, src_lengths)
        T = tgt_in.shape[1]
        if teacher_forcing >= 1.0:
            # gold inputs are known in advance: embed them at once and project all steps with one matmul
            emb = self.drop(self.tgt_embed(tgt_in))  # (B, T, E)
            h_tildes, weights = [], []
            for t in range(T):
                h_tilde, state, alpha = self.recur(emb[:, t], state)
                h_tildes.append(h_tilde)
                weights.append(alpha)
            logits = self.out(self.drop(torch.stack(h_tildes, 1)))  # (B, T, V)
            return logits, torch.stack(weights, 1)  # (B, T, S)
        logits, weights = [], []
        prev = tgt_in[:, 0]
        for t in range(T):
            step_logits, state, alpha = self.decode_step(prev, state)
            logits.append(step_logits)
            weights.append(alpha)
            if t + 1 < T:
                prev = tgt_in[:, t + 1]
                if random.random() >= teacher_forcing:  # feed the model's own previous prediction
                    prev = step_logits.argmax(-1).masked_fill(prev == PAD_ID, PAD_ID)
        return torch.stack(logits, 1), torch.stack(weights, 1)  # (B, T, V), (B, T, S)

    @staticmethod
    def reorder_state(state: dict[str, Any], index: Tensor) -> dict[str, Any]:
        out = {k: v.index_select(0, index) for k, v in state.items() if k != "hidden"}
        out["hidden"] = _map_hidden(state["hidden"], lambda h: h.index_select(1, index))
        return out


# ------------------------------------------------------------------------------------------- Transformer


class MultiHeadAttention(nn.Module):
    """Multi-head attention through ``F.scaled_dot_product_attention``; ``need_weights`` also returns the
    head-averaged weights (computed explicitly, for plots)."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def heads_kv(self, source: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of ``source`` (B, S, D), split into heads: 2 x (B, h, S, d)."""
        B, S, D = source.shape
        k, v = self.kv(source).view(B, S, 2, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        return k, v

    def heads_q(self, x: Tensor) -> Tensor:
        """Queries of ``x`` (B, T, D), split into heads: (B, h, T, d)."""
        B, T, D = x.shape
        return self.q(x).view(B, T, self.num_heads, D // self.num_heads).transpose(1, 2)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None, causal: bool = False) -> Tensor:
        """``proj(softmax(q k^T / sqrt(d) + mask) v)`` with the heads merged back: (B, T, D)."""
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0, is_causal=causal
        )  # (B, h, T, d)
        B, h, T, d = out.shape
        return self.proj(out.transpose(1, 2).reshape(B, T, h * d))

    def forward(
        self, x: Tensor, source: Tensor, mask: Tensor | None, causal: bool = False, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        B, T, D = x.shape
        q = self.heads_q(x)  # (B, h, T, d)
        k, v = self.heads_kv(source)  # (B, h, S, d) each
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, S) True = attend
        if not need_weights:
            return self.attend(q, k, v, attn_mask, causal), None
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(D // self.num_heads)  # (B, h, T, S)
        if causal:
            scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        probs = torch.softmax(scores, -1)
        out = (probs @ v).transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.proj(out), probs.mean(1)  # weights averaged over heads: (B, T, S)


class TransformerLayer(nn.Module):
    """A pre-norm block: self-attention, (cross-attention,) feed-forward, each with a residual."""

    def __init__(self, dim: int, num_heads: int, ff_dim: int, dropout: float, cross: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout)
        self.cross = cross
        if cross:
            self.norm2 = nn.LayerNorm(dim)
            self.cross_attn = MultiHeadAttention(dim, num_heads, dropout)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        self_mask: Tensor | None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        y = self.norm1(x)
        a, _ = self.self_attn(y, y, self_mask, causal=self.cross)
        x = x + self.drop(a)
        weights = None
        if self.cross:
            a, weights = self.cross_attn(self.norm2(x), memory, memory_mask, need_weights=need_weights)
            x = x + self.drop(a)
        return x + self.drop(self.ff(self.norm3(x))), weights

    def step(
        self, x: Tensor, past: tuple[Tensor, Tensor], cross: tuple[Tensor, Tensor], memory_mask: Tensor
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """A decoder layer for one new position ``x`` (B, 1, D) given the self-attention keys/values of the
        earlier positions ``past`` (2 x (B, h, t, d)) and the memory's ``cross`` keys/values; returns the output
        and ``past`` extended by this position. The same as :meth:`forward` on the whole prefix, last row."""
        y = self.norm1(x)
        k, v = self.self_attn.heads_kv(y)
        past = (torch.cat([past[0], k], 2), torch.cat([past[1], v], 2))  # (B, h, t + 1, d)
        x = x + self.drop(self.self_attn.attend(self.self_attn.heads_q(y), *past))  # sees every earlier position
        x = x + self.drop(self.cross_attn.attend(self.cross_attn.heads_q(self.norm2(x)), *cross, memory_mask))
        return x + self.drop(self.ff(self.norm3(x))), past


def sinusoidal_positions(max_len: int, dim: int) -> Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...): (max_len, dim)."""
    pos = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(max_len, dim)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return pe


class TransformerEncoderDecoder(nn.Module):
    """Encoder-decoder Transformer (pre-norm); decoding caches each layer's keys and values."""

    def __init__(self, cfg: Seq2SeqConfig) -> None:
        super().__init__()
        self.cfg = cfg
        D = cfg.embed_dim
        self.src_embed = nn.Embedding(cfg.src_vocab_size, D, padding_idx=PAD_ID)
        self.tgt_embed = self.src_embed if cfg.share_embeddings else nn.Embedding(cfg.tgt_vocab_size, D, padding_idx=PAD_ID)
        self.register_buffer("positions", sinusoidal_positions(cfg.max_len + 2, D), persistent=False)
        n_dec = cfg.decoder_layers or cfg.num_layers
        self.enc_layers = nn.ModuleList(
            TransformerLayer(D, cfg.num_heads, cfg.hidden_dim, cfg.dropout, cross=False) for _ in range(cfg.num_layers)
        )
        self.dec_layers = nn.ModuleList(
            TransformerLayer(D, cfg.num_heads, cfg.hidden_dim, cfg.dropout, cross=True) for _ in range(n_dec)
        )
        self.enc_norm = nn.LayerNorm(D)
        self.dec_norm = nn.LayerNorm(D)
        self.out = nn.Linear(D, cfg.tgt_vocab_size)
        if cfg.tie_embeddings:
            self.out.weight = self.tgt_embed.weight
        self.drop = nn.Dropout(cfg.dropout)
        self.scale = math.sqrt(D)
        for name, p in self.named_parameters():
            if p.dim() > 1 and "embed" not in name:
                nn.init.xavier_uniform_(p)
        nn.init.normal_(self.src_embed.weight, std=D**-0.5)
        if self.tgt_embed is not self.src_embed:
            nn.init.normal_(self.tgt_embed.weight, std=D**-0.5)

    def _embed(self, table: nn.Embedding, ids: Tensor, offset: int = 0) -> Tensor:
        """Scaled embeddings plus the positions ``offset .. offset + T - 1``: (B, T, D)."""
        return self.drop(table(ids) * self.scale + self.positions[offset : offset + ids.shape[1]])

    def encode(self, src: Tensor, src_lengths: Tensor) -> dict[str, Any]:
        mask = lengths_to_mask(src_lengths, src.shape[1])  # (B, S)
        x = self._embed(self.src_embed, src)
        for layer in self.enc_layers:
            x, _ = layer(x, mask)
        memory = self.enc_norm(x)  # (B, S, D)
        return {"memory": memory, "mask": mask, "prefix": src.new_zeros(src.shape[0], 0)}

    def decode(self, tgt_in: Tensor, memory: Tensor, mask: Tensor, need_weights: bool = False):
        x = self._embed(self.tgt_embed, tgt_in)
        weights = None
        for i, layer in enumerate(self.dec_layers):
            last = i == len(self.dec_layers) - 1
            x, w = layer(x, None, memory, mask, need_weights=need_weights and last)
            weights = w if w is not None else weights
        return self.out(self.dec_norm(x)), weights  # (B, T, V), (B, T, S)

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, teacher_forcing: float = 1.0, need_weights: bool = False):
        state = self.encode(src, src_lengths)
        return self.decode(tgt_in, state["memory"], state["mask"], need_weights=need_weights)

    def decode_step(self, prev: Tensor, state: dict[str, Any]) -> tuple[Tensor, dict[str, Any], None]:
        """One incremental step: the new token attends to cached keys/values of the earlier positions.

        The state gains, on the first step, each decoder layer's cross-attention keys/values of the memory
        (``cross_k``/``cross_v``: (B, L, h, S, d), computed once) and the self-attention cache
        (``self_k``/``self_v``: (B, L, h, t, d), one position longer after every step). Every entry is indexed by
        the batch on dim 0, so beam search reorders it with ``index_select``. Equal to re-running the decoder
        over the whole prefix (``tests/test_seq2seq.py::test_step_by_step_decoding_equals_the_teacher_forced_forward``)."""
        if "cross_k" not in state:
            memory = state["memory"]
            B, S, D = memory.shape
            cross = [layer.cross_attn.heads_kv(memory) for layer in self.dec_layers]  # (B, h, S, d) each
            empty = memory.new_zeros(B, len(self.dec_layers), self.cfg.num_heads, 0, D // self.cfg.num_heads)
            state = dict(state, cross_k=torch.stack([k for k, _ in cross], 1),
                         cross_v=torch.stack([v for _, v in cross], 1), self_k=empty, self_v=empty)
        t = state["prefix"].shape[1]  # position of the new token
        x = self._embed(self.tgt_embed, prev.unsqueeze(1), offset=t)  # (B, 1, D)
        memory_mask = state["mask"][:, None, None, :]  # (B, 1, 1, S)
        new_k, new_v = [], []
        for i, layer in enumerate(self.dec_layers):
            past = (state["self_k"][:, i], state["self_v"][:, i])
            x, (k, v) = layer.step(x, past, (state["cross_k"][:, i], state["cross_v"][:, i]), memory_mask)
            new_k.append(k)
            new_v.append(v)
        prefix = torch.cat([state["prefix"], prev.unsqueeze(1)], 1)  # (B, t + 1)
        state = dict(state, prefix=prefix, self_k=torch.stack(new_k, 1), self_v=torch.stack(new_v, 1))
        return self.out(self.dec_norm(x[:, -1])), state, None  # (B, V)

    @staticmethod
    def reorder_state(state: dict[str, Any], index: Tensor) -> dict[str, Any]:
        return {k: v.index_select(0, index) for k, v in state.items()}


# ---------------------------------------------------------------------------------------------- the model


class Seq2Seq(nn.Module):
    """``Seq2Seq(config)``: the family's model. ``loss(batch)`` for the trainer; ``step`` / ``reorder_state``
    / ``init_state`` for :mod:`lmlab.generation`; ``attention_weights`` for heat maps. A ``batch`` is anything
    with ``src`` (B, S), ``src_lengths`` (B,), ``tgt_in`` = <bos> y and ``tgt_out`` = y <eos> (B, T), such as
    :class:`lmlab.data.parallel.Seq2SeqBatch`."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        config.validate()
        if config.src_vocab_size < 5 or config.tgt_vocab_size < 5:
            raise ConfigError("model.src_vocab_size and model.tgt_vocab_size must be set (> 4) from the vocabularies")
        if config.share_embeddings and config.src_vocab_size != config.tgt_vocab_size:
            raise ConfigError("model.share_embeddings needs one shared vocabulary (data.shared_vocab: true)")
        self.config = config
        self.net = RNNEncoderDecoder(config) if config.arch == "rnn" else TransformerEncoderDecoder(config)

    def forward(self, batch: Any) -> Tensor:
        tf = self.config.teacher_forcing if self.training else 1.0
        logits, _ = self.net(batch.src, batch.src_lengths, batch.tgt_in, teacher_forcing=tf)
        return logits  # (B, T, V)

    def loss(self, batch: Any) -> dict[str, Any]:
        logits = self(batch)  # (B, T, V)
        flat = logits.reshape(-1, logits.shape[-1]).float()
        gold = batch.tgt_out.reshape(-1)
        eps = self.config.label_smoothing if self.training else 0.0
        loss = F.cross_entropy(flat, gold, ignore_index=PAD_ID, label_smoothing=eps)
        n_tokens = int((gold != PAD_ID).sum())
        out: dict[str, Any] = {"loss": loss, "num_tokens": n_tokens, "n": n_tokens}
        if eps:
            with torch.no_grad():
                out["nll"] = F.cross_entropy(flat, gold, ignore_index=PAD_ID)
        return out

    # -- decoding hooks (lmlab.generation) -------------------------------------------------------------
    @torch.no_grad()
    def init_state(self, src: Tensor, src_lengths: Tensor) -> dict[str, Any]:
        return self.net.encode(src, src_lengths)

    def step(self, input_ids: Tensor, state: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        """``generation`` step function: ``input_ids`` (N, 1) -> logits (N, V) of the next token."""
        logits, state, _ = self.net.decode_step(input_ids[:, -1], state)
        return logits, state

    def reorder_state(self, state: dict[str, Any], index: Tensor) -> dict[str, Any]:
        return self.net.reorder_state(state, index)

    @torch.no_grad()
    def attention_weights(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Attention (B, T, S) of every target position over the source (the last decoder layer's
        cross-attention averaged over heads for the Transformer)."""
        if self.config.arch == "rnn":
            _, weights = self.net(src, src_lengths, tgt_in)
        else:
            _, weights = self.net(src, src_lengths, tgt_in, need_weights=True)
        return weights

    def num_parameters(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())
