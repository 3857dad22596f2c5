r"""Recurrent language models: embedding -> RNN/LSTM/GRU stack -> dropout -> linear decoder (optionally a
softmax over frequency clusters, ``softmax_cutoffs``, for large word vocabularies).

A language model assigns $P(w_1 \dots w_N) = \prod_t P(w_t \mid w_{<t})$; the network reads $w_{t-1}$, updates
its hidden state and outputs logits over the vocabulary for $w_t$. Training minimises the mean cross-entropy
(nats per token); perplexity is $\exp$ of it, and for character-level models bits per character is it divided
by $\ln 2$.

The model reads one long token stream in ``bptt``-step batches of contiguous rows (truncated backpropagation
through time, :class:`lmlab.data.lm.BPTTBatches`): the hidden state at the end of one batch starts the next
one, detached from the graph, and is reset at the start of every epoch. That carried state is part of every
training checkpoint (``training_state`` / ``load_training_state``), so a resumed run continues exactly.

Public API: :class:`RNNLMConfig` / :class:`RNNLM`. The run config, training, loading and evaluation live in
:mod:`lmlab.recipes.lm`; text <-> ids in :mod:`lmlab.data.lm`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmlab.errors import ConfigError
from lmlab.models.rnn import build_recurrent, detach_state


# ------------------------------------------------------------------------------------------------ configs
@dataclass
class RNNLMConfig:
    cell: Literal["lstm", "gru", "rnn_tanh", "rnn_relu"] = "lstm"
    #: filled in from the fitted tokenizer when 0
    vocab_size: int = 0
    embed_dim: int = 200
    hidden_dim: int = 200
    num_layers: int = 2
    #: dropout on the embeddings, between recurrent layers and before the decoder (Zaremba et al. 2014)
    dropout: float = 0.0
    #: share the embedding matrix with the decoder (Press & Wolf 2017; Inan et al. 2017); when hidden_dim
    #: differs from embed_dim a linear projection hidden_dim -> embed_dim is added before the decoder
    tie_weights: bool = False
    #: uniform(-init_range, init_range) for every weight (Zaremba et al.); 0 keeps PyTorch's defaults
    init_range: float = 0.1
    #: "fused" runs torch.nn's kernels, "reference" our cells written from the equations (same parameters)
    impl: Literal["fused", "reference"] = "fused"
    #: a frequency-clustered softmax (the adaptive softmax of Grave et al. 2017, every cluster at full width so
    #: that tied weights stay tied; the class-based factorisation of Goodman 2001): ids below ``cutoffs[0]`` (the
    #: most frequent words, as the vocabulary is ranked by count) and one entry per tail cluster form the head
    #: softmax; ``[cutoffs[i], cutoffs[i+1])`` (the last up to vocab_size) is cluster i, scored only for the
    #: tokens whose target is in it. P(w) = P_head(cluster) P(w | cluster): exact, normalised probabilities at a
    #: fraction of the cost of the full softmax. Cutoffs >= vocab_size are ignored; [] = the plain softmax
    softmax_cutoffs: list[int] = field(default_factory=list)

    def validate(self) -> None:
        for name in ("embed_dim", "hidden_dim", "num_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.init_range < 0:
            raise ConfigError(f"model.init_range must be >= 0, got {self.init_range}")
        cuts = self.softmax_cutoffs
        if any(c < 1 for c in cuts) or any(b <= a for a, b in zip(cuts, cuts[1:], strict=False)):
            raise ConfigError(f"model.softmax_cutoffs must be increasing ids >= 1, got {cuts}",
                              "e.g. model.softmax_cutoffs=[1000,4000] (or [] for the plain softmax)")


# ------------------------------------------------------------------------------------------------ model
class RNNLM(nn.Module):
    """Embedding -> recurrent stack -> dropout -> (projection) -> linear decoder over the vocabulary."""

    def __init__(self, config: RNNLMConfig) -> None:
        super().__init__()
        if config.vocab_size < 2:
            raise ConfigError(f"model.vocab_size must be >= 2, got {config.vocab_size}")
        config.validate()
        self.config = c = config
        self.embedding = nn.Embedding(c.vocab_size, c.embed_dim)
        self.drop = nn.Dropout(c.dropout)
        self.rnn = build_recurrent(c.cell, c.embed_dim, c.hidden_dim, num_layers=c.num_layers, dropout=c.dropout, impl=c.impl)
        self.proj = nn.Linear(c.hidden_dim, c.embed_dim, bias=False) if c.tie_weights and c.hidden_dim != c.embed_dim else None
        self.decoder = nn.Linear(c.embed_dim if c.tie_weights else c.hidden_dim, c.vocab_size)
        #: [cutoffs below vocab_size..., vocab_size] and the head's cluster scorer (None: the plain softmax)
        self._bounds = [x for x in c.softmax_cutoffs if x < c.vocab_size] + [c.vocab_size]
        n_tail = len(self._bounds) - 1
        self.cluster = nn.Linear(self.decoder.in_features, n_tail) if n_tail else None
        if c.init_range > 0:
            for p in self.parameters():
                nn.init.uniform_(p, -c.init_range, c.init_range)
            nn.init.zeros_(self.decoder.bias)
            if self.cluster is not None:
                nn.init.zeros_(self.cluster.bias)
        if c.tie_weights:
            self.decoder.weight = self.embedding.weight
        #: the hidden state carried from one training batch to the next (detached), reset each epoch
        self.carried_state = None
        #: the epoch the carried state belongs to, and the one a restored state belongs to until it is used
        self._state_epoch = -1
        self._restored_epoch: int | None = None

    def forward(self, ids: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """Logits (B, T, V) for the next token at every position, and the final hidden state. With
        ``softmax_cutoffs`` the "logits" are normalised log-probabilities (their log-softmax is themselves)."""
        out, state = self._decoder_inputs(ids, state)
        return self._decode(out), state  # (B, T, V)

    def _decoder_inputs(self, ids: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """What the decoder reads (B, T, E or H), and the final hidden state."""
        x = self.drop(self.embedding(ids))  # (B, T, E)
        out, state = self.rnn(x, state)  # (B, T, H)
        out = self.drop(out)
        if self.proj is not None:
            out = self.proj(out)  # (B, T, E)
        return out, state

    def _head_logits(self, out: Tensor) -> Tensor:
        """The clustered softmax's head: the frequent words, then one score per tail cluster."""
        w, b, top = self.decoder.weight, self.decoder.bias, self._bounds[0]
        return torch.cat([F.linear(out, w[:top], b[:top]), self.cluster(out)], -1).float()

    def _tail_logits(self, out: Tensor, i: int) -> Tensor:
        lo, hi = self._bounds[i], self._bounds[i + 1]
        return F.linear(out, self.decoder.weight[lo:hi], self.decoder.bias[lo:hi]).float()

    def _decode(self, out: Tensor) -> Tensor:
        """(..., E) -> logits (..., V): the linear decoder, or the clustered softmax's full log-probabilities."""
        if self.cluster is None:
            return self.decoder(out)
        head = F.log_softmax(self._head_logits(out), -1)
        top = self._bounds[0]
        parts = [head[..., :top]]
        for i in range(len(self._bounds) - 1):
            parts.append(head[..., top + i : top + i + 1] + F.log_softmax(self._tail_logits(out, i), -1))
        return torch.cat(parts, -1)

    def _nll(self, out: Tensor, targets: Tensor) -> Tensor:
        """Per-token negative log-likelihood (N,) of ``targets`` under the decoder read on ``out`` (..., E):
        with ``softmax_cutoffs``, the head for every token and each cluster only for the tokens that target it."""
        out, targets = out.reshape(-1, out.shape[-1]), targets.reshape(-1)
        if self.cluster is None:
            return F.cross_entropy(self.decoder(out).float(), targets, reduction="none")
        top = self._bounds[0]
        head_targets = targets.clone()
        members = []
        for i, (lo, hi) in enumerate(zip(self._bounds, self._bounds[1:], strict=False)):
            inside = (targets >= lo) & (targets < hi)
            head_targets[inside] = top + i
            members.append(inside.nonzero().squeeze(1))
        nll = F.cross_entropy(self._head_logits(out), head_targets, reduction="none")
        for i, idx in enumerate(members):
            if idx.numel():
                tail = self._tail_logits(out.index_select(0, idx), i)
                nll = nll.index_add(0, idx, F.cross_entropy(tail, targets[idx] - self._bounds[i], reduction="none"))
        return nll

    # --- body API (classifier fine-tuning, :class:`lmlab.recipes.base.PretrainedBody`) ---------------------
    #: a causal body: the state at position t has read positions <= t only
    causal = True

    @property
    def features_dim(self) -> int:
        return self.config.hidden_dim

    def features(self, ids: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """The top recurrent layer's outputs (B, T, H) from a zero state, dropout as in :meth:`forward`.

        ``pad_mask`` (B, T), True at real tokens, must describe *right* padding: a left-to-right RNN has read
        only real tokens at every real position, so the padding changes nothing there (pooling skips it)."""
        if pad_mask is not None and pad_mask.shape != ids.shape:
            raise ValueError(f"pad_mask has shape {tuple(pad_mask.shape)}, ids {tuple(ids.shape)}")
        out, _ = self.rnn(self.drop(self.embedding(ids)))  # (B, T, H)
        return self.drop(out)

    def lm_logits(self, hidden: Tensor) -> Tensor:
        """Next-token logits (B, T, V) of :meth:`features`' states (the pretraining decoder)."""
        return self._decode(self.proj(hidden) if self.proj is not None else hidden)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Bottom -> top: the embedding, then one group per recurrent layer; the decoder's bias (its weight is
        the embedding when tied) and the tying projection join the top layer. Every parameter once."""
        groups: list[list[nn.Parameter]] = [[self.embedding.weight]]
        groups += [list(layer.parameters()) for layer in self.rnn.layers]
        top = [*(self.proj.parameters() if self.proj is not None else ()), *self.decoder.parameters(),
               *(self.cluster.parameters() if self.cluster is not None else ())]
        seen = {id(p) for g in groups for p in g}
        groups[-1] += [p for p in top if id(p) not in seen]
        return groups

    def step(self, ids: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """The ``step_fn`` of :mod:`lmlab.generation`: logits of the last position (B, V) and the new state."""
        logits, state = self(ids, state)
        return logits[:, -1], state

    # --- training hooks (lmlab.trainer) ---------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        """Start the epoch from a zero state, unless a checkpoint taken inside this epoch restored one."""
        if self._restored_epoch != epoch:
            self.carried_state = None
        self._restored_epoch = None
        self._state_epoch = epoch

    def training_state(self) -> dict:
        """The carried hidden state (and its epoch), saved in every training checkpoint."""
        state = self.carried_state
        tensors = [] if state is None else list(state) if isinstance(state, tuple) else [state]
        return {
            "epoch": self._state_epoch,
            "is_tuple": isinstance(state, tuple),
            "hidden": [t.detach().to("cpu") for t in tensors],
        }

    def load_training_state(self, saved: dict) -> None:
        """Restore :meth:`training_state` on resume: the next batch of that epoch starts from this state."""
        device = self.embedding.weight.device
        hidden = [t.to(device) for t in saved.get("hidden", [])]
        if not hidden:
            self.carried_state = None
        else:
            self.carried_state = tuple(hidden) if saved.get("is_tuple") else hidden[0]
        self._state_epoch = int(saved.get("epoch", -1))
        self._restored_epoch = self._state_epoch

    def loss(self, batch: Any) -> dict:
        """Mean cross-entropy of a BPTT batch (``inputs``/``targets`` (B, T)), starting from the carried state."""
        state = self.carried_state
        if state is not None and _state_batch(state) != batch.inputs.shape[0]:
            state = None
        if self.cluster is not None:
            out, state = self._decoder_inputs(batch.inputs, state)
            loss = self._nll(out, batch.targets).mean()
        else:
            logits, state = self(batch.inputs, state)  # (B, T, V)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch.targets.reshape(-1))
        self.carried_state = detach_state(state)  # truncated BPTT: keep the values, drop the history
        n = batch.targets.numel()
        return {"loss": loss, "ppl": math.exp(min(loss.item(), 700.0)), "num_tokens": n, "n": n}

    @torch.no_grad()
    def evaluate(self, data: Iterable[Any] | None) -> dict:
        """Mean NLL per token (``loss``), perplexity, and per-character numbers when known, over ``data``
        read in order with the hidden state carried across its batches (no data: no metrics)."""
        if data is None:
            return {}
        was_training = self.training
        self.eval()
        device = self.embedding.weight.device
        total, count, state = 0.0, 0, None
        for batch in data:
            batch = batch.to(device)
            if self.cluster is not None:
                out, state = self._decoder_inputs(batch.inputs, state)
                total += self._nll(out, batch.targets).sum().item()
                count += batch.targets.numel()
                continue
            logits, state = self(batch.inputs, state)
            total += F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), batch.targets.reshape(-1), reduction="sum"
            ).item()
            count += batch.targets.numel()
        self.train(was_training)
        loss = total / max(count, 1)
        out = {"loss": loss, "ppl": math.exp(min(loss, 700.0)), "tokens": float(count)}
        cpt = getattr(data, "chars_per_token", None)
        if cpt:
            out["nats_per_char"] = loss / cpt
            out["bpc"] = loss / cpt / math.log(2)
        return out

    # --- generation ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        prompt_ids: Tensor | Sequence[int],
        cfg: Any,
        on_token: Callable[[int, int], None] | None = None,
        eos_id: int | None = None,
        stop_checker: Callable[[int, list[int]], bool] | None = None,
    ) -> list[list[int]]:
        """Sample continuations of ``prompt_ids`` (B, T) with :func:`lmlab.generation.generate` (``cfg``: a
        :class:`lmlab.generation.SamplingConfig`)."""
        from lmlab import generation

        was_training = self.training
        self.eval()
        try:
            device = self.embedding.weight.device
            ids = prompt_ids if isinstance(prompt_ids, Tensor) else torch.tensor(list(prompt_ids))
            return generation.generate(self.step, ids.to(device), cfg, None, on_token, eos_id, stop_checker)
        finally:
            self.train(was_training)


def _state_batch(state: Any) -> int:
    return (state[0] if isinstance(state, tuple) else state).shape[1]
