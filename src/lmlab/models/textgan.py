r"""SeqGAN (Yu et al., AAAI 2017): a text GAN trained with policy gradient and Monte-Carlo rollouts.

The generator $G_\theta$ is an LSTM language model; the discriminator $D_\phi$ is a CNN over token embeddings
(several filter widths, max-over-time pooling, a highway layer, dropout) that outputs the probability that a whole
sequence is real. Because sampling tokens is not differentiable, $G_\theta$ is trained with REINFORCE: the reward
of token $y_t$ given the prefix $Y_{1:t-1}$ is

$$Q(Y_{1:t-1}, y_t) = \begin{cases}\frac{1}{N}\sum_{n=1}^{N} D_\phi(Y^n_{1:T}),\;
Y^n_{1:T} \in \mathrm{MC}^{G_\beta}(Y_{1:t}; N) & t < T\\ D_\phi(Y_{1:T}) & t = T\end{cases}$$

where the $N$ rollouts complete the prefix with $G_\beta$, a delayed copy of the generator
($\beta \leftarrow r\,\beta + (1 - r)\,\theta$ after every generator update, $r$ = ``rollout_update_rate``), and the
generator follows $\nabla_\theta J = \mathbb{E}\big[\sum_t Q(Y_{1:t-1}, y_t)\,\nabla_\theta \log G_\theta(y_t \mid
Y_{1:t-1})\big]$.

Training is ONE :class:`lmlab.trainer.Trainer` run (driven by :mod:`lmlab.recipes.gan`). :class:`SeqGAN`
implements ``manual_step``; the global step decides, through the pure function :func:`phase_at`, which phase it is:
MLE pre-training of $G$ (``pretrain_epochs`` epochs of real batches), pre-training of $D$ (``d_pretrain_steps``
steps, each on a real batch and a freshly generated one), then ``adversarial_rounds`` rounds of
``g_steps_per_round`` policy-gradient steps followed by ``d_steps_per_round`` discriminator steps on fresh negatives.
Because the phase is a function of the step, a resumed run continues exactly in the phase where it stopped, and the
trainer's checkpoints, logging, Ctrl-C and NaN handling cover every phase.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmlab.errors import ConfigError, DataError
from lmlab.models.head_nll import linear_nll, weighted_linear_nll

PHASES = ("mle", "d_pretrain", "pg", "d", "done")
ROLLOUT_IMPLS = ("batched", "sequential")
STEP_IMPLS = ("fused", "reference")


# ---------------------------------------------------------------------------------------------------- configs
@dataclass
class SeqGANConfig:
    """Architecture of the generator and the discriminator (the defaults are the paper's oracle setting)."""

    #: number of token ids (0: take it from the data's vocabulary or the oracle)
    vocab_size: int = 0
    embed_dim: int = 32
    hidden_dim: int = 32
    #: generated sequence length T (0: the oracle's seq_len; real data: longer sentences are truncated)
    max_len: int = 20
    #: the token fed before position 1 (oracle: 0; real data: <bos>)
    start_id: int = 0
    #: end-of-sequence id (-1: fixed-length sequences, as in the oracle); tokens after it become pad_id
    eos_id: int = -1
    pad_id: int = -1
    #: std of the normal initialisation of the generator (the paper's code: 0.1)
    init_std: float = 0.1
    d_embed_dim: int = 64
    d_filter_sizes: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 20])
    d_num_filters: list[int] = field(default_factory=lambda: [100, 200, 200, 200, 200, 100, 100, 100, 100, 100, 160, 160])
    d_dropout: float = 0.25
    #: L2 penalty on the discriminator's output layer (the paper's code: 0.2 * ||W||^2 / 2)
    d_l2: float = 0.2

    def validate(self) -> None:
        problems = []
        if self.vocab_size != 0 and self.vocab_size < 2:
            problems.append(f"model.vocab_size must be >= 2 tokens (a GAN over one token has nothing to learn), got {self.vocab_size}")
        for key in ("embed_dim", "hidden_dim", "max_len", "d_embed_dim"):
            if getattr(self, key) < 1:
                problems.append(f"model.{key} must be >= 1, got {getattr(self, key)}")
        if len(self.d_filter_sizes) != len(self.d_num_filters) or not self.d_filter_sizes:
            problems.append(
                f"model.d_filter_sizes ({len(self.d_filter_sizes)}) and model.d_num_filters "
                f"({len(self.d_num_filters)}) must be non-empty lists of the same length"
            )
        if any(k < 1 for k in self.d_filter_sizes) or any(n < 1 for n in self.d_num_filters):
            problems.append("model.d_filter_sizes and model.d_num_filters must hold positive integers")
        if self.d_filter_sizes and max(self.d_filter_sizes) > self.max_len:
            problems.append(
                f"model.d_filter_sizes has width {max(self.d_filter_sizes)} > model.max_len={self.max_len}; "
                "drop the wider filters or raise max_len"
            )
        if not 0.0 <= self.d_dropout < 1.0:
            problems.append(f"model.d_dropout must be in [0, 1), got {self.d_dropout}")
        if problems:
            raise ConfigError("; ".join(problems))


@dataclass
class GANConfig:
    """The training schedule: MLE pre-training, D pre-training, adversarial rounds (the paper's defaults)."""

    pretrain_epochs: int = 120
    #: discriminator steps before the adversarial phase (each: one real batch + one generated batch)
    d_pretrain_steps: int = 2000
    #: the paper's "200 adversarial batches"
    adversarial_rounds: int = 200
    g_steps_per_round: int = 1
    #: discriminator steps per round, each on a freshly generated batch of negatives
    d_steps_per_round: int = 15
    #: Monte-Carlo rollouts N per prefix (the paper: 16)
    rollout_num: int = 16
    #: r in beta <- r * beta + (1 - r) * theta (the paper: 0.8; 0 = rollouts by the current generator)
    rollout_update_rate: float = 0.8
    #: how a policy-gradient step computes its rewards (same distribution, not the same draws): "batched" = the
    #: prefixes x rollouts in one generator pass sampled in cache-sized blocks, scored by one discriminator pass
    #: that computes the prefix's convolution windows once; "sequential" = the first implementation (run
    #: directories written before this key existed keep it, so they resume bit-exactly)
    rollout_impl: str = "batched"
    #: how a training step computes (the same math; float rounding differs by ~1e-7 relative): "fused" = the
    #: generator's softmax cross-entropy in cache-sized row chunks with its gradient from the same pass
    #: (:func:`lmlab.models.head_nll.weighted_linear_nll`), the discriminator's convolutions as one matrix product
    #: per width over unfolded windows with a backward pass over the max-pool's winning windows, and fused Adam;
    #: "reference" = the first implementation (run directories written before this key existed keep it, so they
    #: resume bit-exactly)
    step_impl: str = "fused"
    #: learning rates; train.lr is the MLE one, these become per-optimizer multipliers of the schedule
    pg_lr: float = 0.01
    d_lr: float = 1e-4
    #: generator batches in a policy-gradient step (0: train.batch_size)
    pg_batch_size: int = 0
    #: evaluate (NLL-oracle / held-out NLL) every N pre-training epochs and every N adversarial rounds (0: at
    #: phase ends only)
    eval_every_epochs: int = 10
    eval_every_rounds: int = 20

    def validate(self) -> None:
        problems = []
        if self.rollout_num < 1:
            problems.append(
                f"gan.rollout_num must be >= 1, got {self.rollout_num}: the rewards of unfinished sequences are "
                "averages over that many Monte-Carlo completions"
            )
        for key in (
            "pretrain_epochs",
            "d_pretrain_steps",
            "adversarial_rounds",
            "g_steps_per_round",
            "d_steps_per_round",
            "pg_batch_size",
            "eval_every_epochs",
            "eval_every_rounds",
        ):
            if getattr(self, key) < 0:
                problems.append(f"gan.{key} must be >= 0, got {getattr(self, key)}")
        if self.adversarial_rounds and self.g_steps_per_round + self.d_steps_per_round < 1:
            problems.append("gan.g_steps_per_round + gan.d_steps_per_round must be >= 1 when adversarial_rounds > 0")
        if not 0.0 <= self.rollout_update_rate < 1.0:
            problems.append(f"gan.rollout_update_rate must be in [0, 1), got {self.rollout_update_rate}")
        if self.rollout_impl not in ROLLOUT_IMPLS:
            problems.append(f"gan.rollout_impl must be one of {', '.join(ROLLOUT_IMPLS)}, got {self.rollout_impl!r}")
        if self.step_impl not in STEP_IMPLS:
            problems.append(f"gan.step_impl must be one of {', '.join(STEP_IMPLS)}, got {self.step_impl!r}")
        if self.pg_lr <= 0 or self.d_lr <= 0:
            problems.append("gan.pg_lr and gan.d_lr must be > 0")
        if problems:
            raise ConfigError("; ".join(problems))


def phase_at(step: int, steps_per_epoch: int, gan: GANConfig) -> tuple[str, int]:
    """The phase of the 0-based global ``step`` and its index within that phase.

    Returns ``("mle", i)``, ``("d_pretrain", i)``, ``("pg", round)``, ``("d", round)`` or ``("done", 0)``.
    """
    mle = gan.pretrain_epochs * steps_per_epoch
    if step < mle:
        return "mle", step
    step -= mle
    if step < gan.d_pretrain_steps:
        return "d_pretrain", step
    step -= gan.d_pretrain_steps
    per_round = gan.g_steps_per_round + gan.d_steps_per_round
    if step < gan.adversarial_rounds * per_round:
        rnd, k = divmod(step, per_round)
        return ("pg" if k < gan.g_steps_per_round else "d"), rnd
    return "done", 0


def total_steps(steps_per_epoch: int, gan: GANConfig) -> int:
    return (
        gan.pretrain_epochs * steps_per_epoch
        + gan.d_pretrain_steps
        + gan.adversarial_rounds * (gan.g_steps_per_round + gan.d_steps_per_round)
    )


# ------------------------------------------------------------------------------------------------- networks
class Generator(nn.Module):
    """LSTM language model over fixed-length sequences: embedding -> LSTM -> linear head."""

    def __init__(self, config: SeqGANConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim)
        self.lstm = nn.LSTM(config.embed_dim, config.hidden_dim, batch_first=True)
        self.head = nn.Linear(config.hidden_dim, config.vocab_size)
        with torch.no_grad():
            for p in self.parameters():
                p.normal_(0.0, config.init_std)

    def inputs_for(self, seqs: Tensor) -> Tensor:
        """Teacher-forcing inputs: the start token, then ``seqs`` shifted right (B, T)."""
        start = torch.full_like(seqs[:, :1], self.config.start_id)
        return torch.cat([start, seqs[:, :-1]], dim=1)  # (B, T)

    def forward(self, inputs: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Any]:
        out, state = self.lstm(self.embedding(inputs), state)  # (B, T, H)
        return self.head(out), state  # (B, T, V)

    def token_log_probs(self, seqs: Tensor) -> Tensor:
        """log G(y_t | y_<t) for every position of ``seqs`` (B, T) -> (B, T)."""
        logits, _ = self(self.inputs_for(seqs))
        return torch.log_softmax(logits.float(), dim=-1).gather(-1, seqs.unsqueeze(-1)).squeeze(-1)  # (B, T)

    def token_nll(self, seqs: Tensor) -> Tensor:
        """-log G(y_t | y_<t) for every position of ``seqs`` (B, T) -> (B, T): ``-token_log_probs(seqs)`` up to float
        rounding, with the head and its softmax in cache-sized chunks (:func:`~lmlab.models.head_nll.linear_nll`)."""
        out, _ = self.lstm(self.embedding(self.inputs_for(seqs)))  # (B, T, H)
        nll = linear_nll(out.reshape(-1, out.shape[-1]), self.head.weight, self.head.bias, seqs.reshape(-1))
        return nll.view(seqs.shape)  # (B, T)

    def weighted_nll(self, seqs: Tensor, weights: Tensor) -> Tensor:
        """``(token_nll(seqs) * weights).sum()`` for constant ``weights`` (B, T), its gradient computed in the same
        pass (:func:`~lmlab.models.head_nll.weighted_linear_nll`)."""
        out, _ = self.lstm(self.embedding(self.inputs_for(seqs)))  # (B, T, H)
        return weighted_linear_nll(out.reshape(-1, out.shape[-1]), self.head.weight, self.head.bias, seqs.reshape(-1),
                                   weights.expand(seqs.shape))

    def step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]:
        """One step: ``tokens`` (B,) -> logits (B, V) and the new state."""
        out, state = self.lstm(self.embedding(tokens).unsqueeze(1), state)  # (B, 1, H)
        return self.head(out[:, 0]), state  # (B, V)

    @torch.no_grad()
    def sample(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None, length: int | None = None
    ) -> Tensor:
        """``n`` sequences (n, T) sampled token by token (tokens after an EOS become pad)."""
        length = length or self.config.max_len
        device = self.head.weight.device
        tok = torch.full((n,), self.config.start_id, dtype=torch.long, device=device)
        out = torch.empty(n, length, dtype=torch.long, device=device)
        state = None
        for t in range(length):
            h, state = self.lstm(self.embedding(tok).unsqueeze(1), state)  # (n, 1, H)
            if temperature == 0:
                tok = self.head(h[:, 0]).argmax(-1)
            else:  # = _draw(self.head(h[:, 0]), temperature, generator), the same draws, the logits in chunks
                tok = draw_categorical_from_head(self.head, h[:, 0], temperature, generator)
            out[:, t] = tok
        return finish_sequences(out, self.config.eos_id, self.config.pad_id)



def _draw(logits: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
    if temperature == 0:
        return logits.argmax(-1)
    return draw_categorical(logits.float() / temperature, generator)  # (B,)


def draw_categorical(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    r"""One token per row of ``logits`` (B, V) from $\mathrm{softmax}(\text{logits})$, by inverse-CDF sampling.

    With $c_i = \sum_{j \le i} e^{z_j - \max z}$ and $u \sim U[0, 1)$, the draw is the first $i$ with
    $c_i > u\, c_V$: token $i$ is picked with probability $(c_i - c_{i-1}) / c_V = \mathrm{softmax}(z)_i$, and a
    token of probability 0 never is. The distribution is the one ``torch.multinomial(softmax(z), 1)`` draws from
    (not the same draws for a seed); on a CPU it is ~3.7x faster for many rows (19,456 x 5,000: 0.81 s vs 3.06 s
    with the softmax, one core), which is what makes SeqGAN's Monte-Carlo rollouts affordable.
    """
    z = logits.float()
    cdf = torch.cumsum((z - z.amax(dim=-1, keepdim=True)).exp_(), dim=-1)  # (B, V), unnormalised
    u = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=cdf.shape[-1] - 1)  # (B,)



def draw_categorical_from_head(head: nn.Linear, hidden: Tensor, temperature: float = 1.0,
                               generator: torch.Generator | None = None, chunk_rows: int = 0) -> Tensor:
    """:func:`draw_categorical` of ``head(hidden) / temperature`` (R, H) -> (R,), the same draws for a seed, with
    the (R, V) logits projected and turned into a cumulative sum ``chunk_rows`` rows at a time (about 1 MiB of
    logits on a CPU, so every pass over them stays in the cache); the uniforms are drawn for all rows at once, as
    :func:`draw_categorical` draws them."""
    V = head.weight.shape[0]
    if not chunk_rows:
        chunk_rows = max(1, (1 << (18 if hidden.device.type == "cpu" else 26)) // V)
    u = torch.rand(hidden.shape[0], 1, generator=generator, device=hidden.device, dtype=torch.float32)  # (R, 1)
    out = torch.empty(hidden.shape[0], dtype=torch.long, device=hidden.device)
    for s in range(0, hidden.shape[0], chunk_rows):
        z = head(hidden[s : s + chunk_rows]).float()  # (r, V), a fresh tensor
        if temperature != 1.0:  # (x / 1.0 == x: the same numbers either way)
            z = z / temperature
        cdf = torch.cumsum(z.sub_(z.amax(dim=-1, keepdim=True)).exp_(), dim=-1)  # (r, V), unnormalised
        tok = torch.searchsorted(cdf, u[s : s + chunk_rows] * cdf[:, -1:], right=True)
        out[s : s + chunk_rows] = tok.squeeze(-1).clamp_(max=V - 1)
    return out  # (R,)


def draw_from_head(head: nn.Linear, hidden: Tensor, generator: torch.Generator | None = None,
                   chunk_rows: int = 0) -> Tensor:
    r"""One token per row of ``hidden`` (R, H) from $\mathrm{softmax}(\text{head}(h))$, in cache-sized chunks.

    The same distribution as :func:`draw_categorical` on the full (R, V) logits (not the same draws), without
    ever holding them: ``chunk_rows`` rows at a time are projected, exponentiated and sampled while they are in
    the cache, and the full cumulative sum is replaced by two short ones. With the vocabulary cut into blocks
    of $\approx\sqrt V$ tokens ($e_i = e^{z_i - \max z}$, block sums $s_k$): draw block $k$ with probability
    $s_k / \sum s$ (inverse CDF over the block sums), then token $i$ of block $k$ with probability $e_i / s_k$
    (inverse CDF inside the block, a second uniform); the product is $e_i / \sum e = \mathrm{softmax}(z)_i$, and a
    token (or block) of probability 0 is never drawn. The vocabulary is padded to whole blocks with logits
    $-\infty$. ``chunk_rows`` = 0: about 256K logits (1 MiB) per chunk on a CPU, 64M on an accelerator.
    """
    V = head.weight.shape[0]
    blk = max(1, round(V**0.5))
    nb = -(-V // blk)
    weight, bias = head.weight, head.bias
    if bias is None:
        bias = weight.new_zeros(V)
    if nb * blk != V:
        weight = torch.cat([weight, weight.new_zeros(nb * blk - V, weight.shape[1])])
        bias = torch.cat([bias, bias.new_full((nb * blk - V,), float("-inf"))])
    if not chunk_rows:  # ~1 MiB of logits per chunk on a CPU (its cache); ~256 MiB on an accelerator (few launches)
        chunk_rows = max(1, (1 << (18 if hidden.device.type == "cpu" else 26)) // (nb * blk))
    out = torch.empty(hidden.shape[0], dtype=torch.long, device=hidden.device)
    for start in range(0, hidden.shape[0], chunk_rows):
        h = hidden[start : start + chunk_rows]
        r = h.shape[0]
        z = torch.addmm(bias, h, weight.t()).float()  # (r, nb * blk)
        e = z.sub_(z.amax(dim=-1, keepdim=True)).exp_().view(r, nb, blk)  # (r, nb, blk), unnormalised
        cum = torch.cumsum(e.sum(-1), dim=-1)  # (r, nb)
        u = torch.rand(r, 2, generator=generator, device=z.device, dtype=z.dtype)
        k = torch.searchsorted(cum, u[:, :1] * cum[:, -1:], right=True).clamp_(max=nb - 1)  # (r, 1)
        inner = torch.cumsum(e.gather(1, k.unsqueeze(-1).expand(r, 1, blk)).squeeze(1), dim=-1)  # (r, blk)
        j = torch.searchsorted(inner, u[:, 1:] * inner[:, -1:], right=True).clamp_(max=blk - 1)  # (r, 1)
        out[start : start + r] = (k * blk + j).squeeze(-1).clamp_(max=V - 1)
    return out  # (R,)


def finish_sequences(seqs: Tensor, eos_id: int, pad_id: int) -> Tensor:
    """Replace every token after the first ``eos_id`` by ``pad_id`` (no-op when ``eos_id < 0``)."""
    if eos_id < 0:
        return seqs
    is_eos = (seqs == eos_id).long()
    after = (torch.cumsum(is_eos, dim=1) - is_eos) > 0  # strictly after the first EOS
    return seqs.masked_fill(after, pad_id)


def token_mask(seqs: Tensor, eos_id: int, pad_id: int) -> Tensor:
    """1.0 for tokens up to and including the first EOS, 0.0 after it (all ones when ``eos_id < 0``)."""
    if eos_id < 0:
        return torch.ones_like(seqs, dtype=torch.float)
    is_eos = (seqs == eos_id).long()
    return ((torch.cumsum(is_eos, dim=1) - is_eos) == 0).float()


class Highway(nn.Module):
    r"""$y = t \odot \mathrm{relu}(W_H x + b_H) + (1 - t) \odot x$, $t = \sigma(W_T x + b_T)$ (Srivastava et al. 2015)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.transform = nn.Linear(dim, dim)
        self.gate = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        t = torch.sigmoid(self.gate(x))
        return t * torch.relu(self.transform(x)) + (1.0 - t) * x


class _ConvMaxPool(torch.autograd.Function):
    r"""$\mathrm{relu}(\max_s (W \cdot x_{s:s+k} + b))$ per filter for ``x`` (B, T, E), ``weight`` (n, E, k), ``bias``
    (n,) -> (B, n): the forward pass is one matrix product of the unfolded windows; the backward pass uses only
    the window that won the max of each (sequence, filter) pair (1/L of the dense gradient's products): the
    filter gradient gathers those windows (``embedding_bag`` with the output gradients as weights) and the input
    gradient adds the filters into their winning windows (``embedding_bag`` with one bag per window)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        B, T, E = x.shape
        n, _, k = weight.shape
        L = T - k + 1
        win = x.unfold(1, k, 1).reshape(B * L, E * k)  # (B*L, E*k): the windows in the filters' (E, k) layout
        flat = weight.reshape(n, E * k)
        z = (win @ flat.t()).view(B, L, n)  # (B, L, n)
        zmax, idx = z.max(dim=1)  # (B, n)
        out = torch.relu(zmax + bias)
        ctx.save_for_backward(win, flat, idx, out)
        ctx.dims = (B, T, E, n, k, L)
        return out  # (B, n)

    @staticmethod
    def backward(ctx, grad: Tensor):
        win, flat, idx, out = ctx.saved_tensors
        B, T, E, n, k, L = ctx.dims
        g = grad * (out > 0)  # (B, n): through the ReLU
        rows = idx + torch.arange(B, device=idx.device)[:, None] * L  # (B, n): the winning window's row of win
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[1]:  # grad_W[n] = sum_b g[b, n] win[rows[b, n]]
            grad_w = F.embedding_bag(rows.t().contiguous(), win, per_sample_weights=g.t().contiguous(), mode="sum")
            grad_w = grad_w.view(n, E, k)
        if ctx.needs_input_grad[2]:
            grad_b = g.sum(0)
        if ctx.needs_input_grad[0]:  # grad_win[r] = sum over the (b, n) whose winner is r of g[b, n] W[n]
            r = rows.reshape(-1)
            order = torch.argsort(r, stable=True)
            counts = torch.bincount(r, minlength=B * L)
            offsets = torch.cumsum(counts, 0) - counts
            filters = torch.arange(n, device=r.device).repeat(B)[order]
            grad_win = F.embedding_bag(filters, flat, offsets=offsets, per_sample_weights=g.reshape(-1)[order],
                                       mode="sum").view(B, L, E, k)
            grad_x = torch.zeros(B, T, E, dtype=grad_win.dtype, device=grad_win.device)
            for j in range(k):  # fold: window s covers positions s..s+k-1
                grad_x[:, j : j + L] += grad_win[..., j]
        return grad_x, grad_w, grad_b


class Discriminator(nn.Module):
    r"""CNN text classifier (Kim 2014 / Zhang & LeCun 2015 as used by SeqGAN): real (1) vs generated (0).

    ``unfold_convs`` (set by :class:`SeqGAN` from ``gan.step_impl``): each convolution of width $k$ is one matrix
    product of the unfolded windows (B, L, E k) by the filters (E k, n) instead of ``nn.Conv1d`` (whose backward
    pass on a CPU costs ~4x its forward), and its backward pass computes only the max-pool's winning windows
    (:class:`_ConvMaxPool`); the bias is added after the max over time and before the ReLU, which gives the same
    value ($\max_s (z_s + b) = \max_s z_s + b$, and ReLU commutes with max).
    """

    def __init__(self, config: SeqGANConfig) -> None:
        super().__init__()
        self.config = config
        self.unfold_convs = False
        self.embedding = nn.Embedding(config.vocab_size, config.d_embed_dim)
        self.convs = nn.ModuleList(
            nn.Conv1d(config.d_embed_dim, n, k) for k, n in zip(config.d_filter_sizes, config.d_num_filters, strict=True)
        )
        total = sum(config.d_num_filters)
        self.highway = Highway(total)
        self.dropout = nn.Dropout(config.d_dropout)
        self.out = nn.Linear(total, 2)

    def forward(self, seqs: Tensor) -> Tensor:
        """Class logits (B, 2) for token ids ``seqs`` (B, T)."""
        if self.unfold_convs:
            pooled = self.pooled_unfolded(seqs)
        else:
            x = self.embedding(seqs).transpose(1, 2)  # (B, E, T)
            pooled = [torch.relu(conv(x)).amax(dim=2) for conv in self.convs]  # each (B, n_k): max over time
        h = self.highway(torch.cat(pooled, dim=1))  # (B, sum n_k)
        return self.out(self.dropout(h))  # (B, 2)

    def pooled_unfolded(self, seqs: Tensor) -> list[Tensor]:
        """The max-pooled, rectified features of every convolution (each (B, n_k)), as matrix products."""
        x = self.embedding(seqs)  # (B, T, E)
        return [_ConvMaxPool.apply(x, conv.weight, conv.bias) for conv in self.convs]  # each (B, n_k)

    def prob_real(self, seqs: Tensor, batch_size: int = 4096) -> Tensor:
        """P(real | seqs) (B,), computed in chunks."""
        return torch.cat([torch.softmax(self(c).float(), -1)[:, 1] for c in seqs.split(batch_size)])

    def classify_pooled(self, pooled: Tensor) -> Tensor:
        """P(real) (B,) from the max-pooled, rectified convolution features (B, sum n_k)."""
        return torch.softmax(self.out(self.dropout(self.highway(pooled))).float(), -1)[:, 1]

    def prob_real_rollouts(self, seqs: Tensor, rolled: Tensor) -> Tensor:
        r"""P(real) of every rollout (T-1, N, B) of :meth:`SeqGAN.rollouts` (``rolled`` (T-1, N, B, T)), which
        completes the prefixes ``seqs[:, :t]`` of ``seqs`` (B, T); equal to :meth:`prob_real` on
        ``rolled.view(-1, T)`` up to float rounding (inference only: no gradient, dropout as the module's mode).

        Two savings, both exact in real arithmetic. (1) A window of width $k$ starting at $s$ lies inside the
        prefix of length $t$ when $s + k \le t$: its convolution is the one of ``seqs`` and the same for all $N$
        rollouts, so it is computed once (on the $B$ sampled sequences, with a running max over windows), and
        each rollout convolves only the windows that reach its sampled part (2/3 of the work at the paper's
        filters and $T = 20$); max-pooling takes the larger of the two, and ReLU commutes with max. (2) The
        convolution of a window is $\sum_{j<k} W_{:,:,j}\, e(y_{s+j})$, a sum of $k$ rows of the table
        $P_k[j, v] = W_{:,:,j}\, e(v)$ ($k V \times n_k$, built once per call), so rollouts gather and add table
        rows (``embedding_bag``) instead of multiplying by the embedding: $d_{emb}$ = 64 times fewer operations.
        """
        Tm1, N, B, T = rolled.shape
        widths = [conv.kernel_size[0] for conv in self.convs]
        V = self.embedding.weight.shape[0]
        full = self.embedding(seqs).transpose(1, 2)  # (B, E, T)
        # prefix_max[i][:, :, s]: max over the windows 0..s of conv_i(seqs), before the ReLU
        prefix_max = [torch.cummax(conv(full), dim=2).values for conv in self.convs]  # each (B, n_k, T-k+1)
        # tables[i][j * V + v] = W_i[:, :, j] @ e(v)
        tables = [torch.einsum("ve,nej->jvn", self.embedding.weight, conv.weight).reshape(k * V, -1)
                  for conv, k in zip(self.convs, widths, strict=True)]  # each (k*V, n_k)
        probs = []
        for t in range(1, Tm1 + 1):
            rows = rolled[t - 1].reshape(N * B, T)  # (N*B, T): row n*B + b
            pooled = []
            for i, (conv, k) in enumerate(zip(self.convs, widths, strict=True)):
                start = max(0, t - k + 1)  # the first window that reaches position t (0-based), i.e. the rollout
                win = rows[:, start:].unfold(1, k, 1)  # (N*B, L, k): the windows start..T-k
                L = win.shape[1]
                idx = win + torch.arange(k, device=win.device) * V  # row j*V + token of the table
                z = F.embedding_bag(idx.reshape(-1, k), tables[i], mode="sum").view(N * B, L, -1)  # (N*B, L, n_k)
                z = z.amax(dim=1) + conv.bias  # (N*B, n_k)
                if t - k >= 0:  # windows 0..t-k lie inside the prefix
                    z = torch.maximum(z, prefix_max[i][:, :, t - k].repeat(N, 1))
                pooled.append(torch.relu(z))
            probs.append(self.classify_pooled(torch.cat(pooled, dim=1)).view(N, B))
        return torch.stack(probs) if probs else full.new_zeros(0, N, B)  # (T-1, N, B)


# ---------------------------------------------------------------------------------------------------- SeqGAN
class SeqGAN(nn.Module):
    """Generator, its delayed rollout copy and the discriminator, trained in phases by ``manual_step``."""

    def __init__(self, config: SeqGANConfig, gan: GANConfig | None = None) -> None:
        super().__init__()
        config.validate()
        if config.vocab_size < 2:
            raise ConfigError(
                f"model.vocab_size must be >= 2 tokens, got {config.vocab_size}; the data gave too small a vocabulary"
            )
        self.config = config
        self.gan = gan or GANConfig()
        self.gan.validate()
        self.generator = Generator(config)
        self.rollout_generator = Generator(config)
        self.rollout_generator.load_state_dict(self.generator.state_dict())
        self.rollout_generator.requires_grad_(False)
        self.discriminator = Discriminator(config)
        self.discriminator.unfold_convs = self.gan.step_impl == "fused"
        #: batches per epoch, set by the recipe (0: ``manual_step`` takes len(trainer.train_data))
        self.steps_per_epoch = 0

    # -- losses ----------------------------------------------------------------------------------------
    def mle_loss(self, seqs: Tensor) -> tuple[Tensor, int]:
        """Mean token cross-entropy of the real ``seqs`` (B, T) over all T positions.

        Sequences are fixed-length, as in Texygen: after ``<eos>`` the target is ``<pad>``, so the generator learns
        to pad and every sequence has the same number of actions in the policy gradient (masking the positions
        after EOS there would hand longer sequences more positive reward terms and teach it to avoid ending).
        """
        if self.gan.step_impl == "fused":
            weights = torch.full((1, 1), 1.0 / seqs.numel(), device=seqs.device)  # the mean's 1/(B*T)
            return self.generator.weighted_nll(seqs, weights), seqs.numel()
        logp = self.generator.token_log_probs(seqs)  # (B, T)
        return -logp.mean(), seqs.numel()

    def loss(self, batch: Tensor) -> dict:
        """The generator's MLE loss (also what plain validation reports)."""
        loss, n = self.mle_loss(batch)
        return {"loss": loss, "num_tokens": n, "n": n}

    def discriminator_loss(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-entropy of D on real (label 1) and generated (label 0) sequences, plus the L2 term; and accuracy."""
        if real.shape[0] == 0 or fake.shape[0] == 0:
            which = "real" if real.shape[0] == 0 else "generated"
            raise DataError(
                f"the discriminator got no {which} sequences, so it would see only one class: it then learns to "
                "output a constant, its rewards carry no signal and the generator learns nothing. Feed it both "
                "real and generated batches (check that the training data is not empty)"
            )
        seqs = torch.cat([real, fake])  # (Br + Bf, T)
        labels = torch.cat([torch.ones(real.shape[0]), torch.zeros(fake.shape[0])]).long().to(seqs.device)
        logits = self.discriminator(seqs)  # (B, 2)
        loss = F.cross_entropy(logits.float(), labels)
        if self.config.d_l2:
            w = self.discriminator.out
            loss = loss + self.config.d_l2 * 0.5 * (w.weight.pow(2).sum() + w.bias.pow(2).sum())
        acc = (logits.argmax(-1) == labels).float().mean()
        return loss, acc

    def policy_gradient_loss(self, seqs: Tensor, rewards: Tensor) -> Tensor:
        r"""$-\frac{1}{B}\sum_b \sum_t Q_{b,t} \log G_\theta(y_{b,t} \mid Y_{b,1:t-1})$ over all T positions (the
        ``<pad>`` actions after ``<eos>`` included, see :meth:`mle_loss`)."""
        if self.gan.step_impl == "fused":
            return self.generator.weighted_nll(seqs, rewards.detach().float() / seqs.shape[0])
        logp = self.generator.token_log_probs(seqs)  # (B, T)
        return -(logp * rewards.detach()).sum() / seqs.shape[0]

    # -- rollouts and rewards ------------------------------------------------------------------------------
    @torch.no_grad()
    def rollouts(self, seqs: Tensor, rollout_num: int, generator: torch.Generator | None = None) -> Tensor:
        """Monte-Carlo completions of every proper prefix of ``seqs`` (B, T) by the rollout generator.

        Returns (T-1, N, B, T): entry ``[t-1, n, b]`` keeps ``seqs[b, :t]`` and completes positions t..T-1 by
        sampling. All prefixes and rollouts run as one batch: at position p the groups of prefixes of length
        1..p advance together (N*B*p rows), so the whole thing costs T-1 batched LSTM steps.
        """
        if rollout_num < 1:
            raise ConfigError(f"gan.rollout_num must be >= 1, got {rollout_num}")
        g = self.rollout_generator
        B, T = seqs.shape
        N = rollout_num
        out = seqs.unsqueeze(0).unsqueeze(0).repeat(T - 1, N, 1, 1)  # (T-1, N, B, T)
        if T < 2:
            return out
        # prefix_states[p]: the rollout net's state after consuming the start token and y_1..y_p, i.e. the state
        # that predicts position p (0-based) for the prefix of length p
        inputs = g.inputs_for(seqs)  # (B, T)
        prefix_states = []
        state = None
        for p in range(T):
            _, state = g.lstm(g.embedding(inputs[:, p : p + 1]), state)
            prefix_states.append(state)
        h = c = None
        for p in range(1, T):  # position to sample (0-based); the prefix of length p joins here
            state_p = prefix_states[p]
            new_h = state_p[0].repeat(1, N, 1)  # (1, N*B, H)
            new_c = state_p[1].repeat(1, N, 1)
            h = new_h if h is None else torch.cat([h, new_h], dim=1)  # (1, p*N*B, H)
            c = new_c if c is None else torch.cat([c, new_c], dim=1)
            tok = _draw(g.head(h[0]), 1.0, generator)  # (p*N*B,)
            out[:p, :, :, p] = tok.view(p, N, B)
            if p < T - 1:
                _, (h, c) = g.lstm(g.embedding(tok).unsqueeze(1), (h, c))
        return finish_sequences(out.view(-1, T), self.config.eos_id, self.config.pad_id).view(T - 1, N, B, T)

    @torch.no_grad()
    def rollouts_batched(self, seqs: Tensor, rollout_num: int, generator: torch.Generator | None = None) -> Tensor:
        """:meth:`rollouts` (same layout, same distribution, not the same draws) in one pass over preallocated rows.

        The (T-1)*N*B rows (prefix length t = 1..T-1 in blocks of N*B, rollout-major inside a block) live in one
        state tensor; at position p the blocks t <= p are the first p*N*B rows, so one LSTM step and one
        :func:`draw_from_head` advance every prefix and rollout that has reached p, with no copies of the state.
        """
        if rollout_num < 1:
            raise ConfigError(f"gan.rollout_num must be >= 1, got {rollout_num}")
        g = self.rollout_generator
        B, T = seqs.shape
        N = rollout_num
        NB = N * B
        out = seqs.unsqueeze(0).unsqueeze(0).repeat(T - 1, N, 1, 1)  # (T-1, N, B, T)
        if T < 2:
            return out
        H = g.config.hidden_dim
        h = seqs.new_empty(1, (T - 1) * NB, H, dtype=g.head.weight.dtype)  # (1, (T-1)*N*B, H)
        c = torch.empty_like(h)
        inputs = g.inputs_for(seqs)  # (B, T)
        _, state = g.lstm(g.embedding(inputs[:, :1]), None)  # the state that predicts position 0
        for p in range(1, T):  # position to sample (0-based); the prefix of length p joins here
            _, state = g.lstm(g.embedding(inputs[:, p : p + 1]), state)  # consumed y_1..y_p
            h[:, (p - 1) * NB : p * NB] = state[0].repeat(1, N, 1)
            c[:, (p - 1) * NB : p * NB] = state[1].repeat(1, N, 1)
            rows = p * NB
            tok = draw_from_head(g.head, h[0, :rows], generator)  # (p*N*B,)
            out[:p, :, :, p] = tok.view(p, N, B)
            if p < T - 1:
                _, (h_new, c_new) = g.lstm(g.embedding(tok).unsqueeze(1), (h[:, :rows], c[:, :rows]))
                h[:, :rows] = h_new
                c[:, :rows] = c_new
        return finish_sequences(out.view(-1, T), self.config.eos_id, self.config.pad_id).view(T - 1, N, B, T)

    @torch.no_grad()
    def rewards(
        self,
        seqs: Tensor,
        rollout_num: int | None = None,
        generator: torch.Generator | None = None,
        impl: str | None = None,
    ) -> Tensor:
        """Q(Y_{1:t-1}, y_t) for every position (B, T): rollout averages of D, and D itself at t = T.

        ``impl`` ("batched" / "sequential", default ``gan.rollout_impl``) picks :meth:`rollouts_batched` +
        :meth:`Discriminator.prob_real_rollouts` or :meth:`rollouts` + :meth:`Discriminator.prob_real`.
        """
        N = rollout_num if rollout_num is not None else self.gan.rollout_num
        impl = impl or self.gan.rollout_impl
        if impl not in ROLLOUT_IMPLS:
            raise ConfigError(f"gan.rollout_impl must be one of {', '.join(ROLLOUT_IMPLS)}, got {impl!r}")
        B, T = seqs.shape
        was_training = self.discriminator.training
        self.discriminator.eval()  # no dropout when scoring
        try:
            full = self.discriminator.prob_real(seqs)  # (B,)
            if T > 1:
                if impl == "batched":
                    rolled = self.rollouts_batched(seqs, N, generator)  # (T-1, N, B, T)
                    partial = self.discriminator.prob_real_rollouts(seqs, rolled).mean(1)  # (T-1, B)
                else:
                    rolled = self.rollouts(seqs, N, generator)  # (T-1, N, B, T)
                    partial = self.discriminator.prob_real(rolled.view(-1, T)).view(T - 1, N, B).mean(1)  # (T-1, B)
                return torch.cat([partial.t(), full.unsqueeze(1)], dim=1)  # (B, T)
            return full.unsqueeze(1)
        finally:
            self.discriminator.train(was_training)

    @torch.no_grad()
    def update_rollout(self) -> None:
        """beta <- r * beta + (1 - r) * theta."""
        r = self.gan.rollout_update_rate
        for pb, pt in zip(self.rollout_generator.parameters(), self.generator.parameters(), strict=True):
            pb.mul_(r).add_(pt.detach(), alpha=1.0 - r)

    # -- trainer hooks ---------------------------------------------------------------------------------------
    def configure_optimizers(self, train: Any) -> list[torch.optim.Optimizer]:
        """[generator MLE Adam, generator policy-gradient Adam, discriminator Adam] (as in the paper's code).

        ``train`` is anything with ``lr``, ``betas`` and ``eps`` (the trainer passes its train config). The
        trainer multiplies each group's ``lr_scale`` by its scheduled lr (= train.lr), so the PG and D optimizers
        get ``gan.pg_lr`` and ``gan.d_lr``.
        """
        betas = tuple(train.betas)
        fused = {"fused": True} if self.gan.step_impl == "fused" else {}

        def adam(params, lr):
            return torch.optim.Adam(
                [{"params": list(params), "lr_scale": lr / train.lr}], lr=lr, betas=betas, eps=train.eps, **fused
            )

        return [
            adam(self.generator.parameters(), train.lr),
            adam(self.generator.parameters(), self.gan.pg_lr),
            adam(self.discriminator.parameters(), self.gan.d_lr),
        ]

    def manual_step(self, batch: Tensor, optimizers: Sequence[torch.optim.Optimizer], trainer: Any) -> dict:
        """The trainer's hook: :meth:`phase_step` at the trainer's global step; stops it when the schedule is over."""
        steps_per_epoch = self.steps_per_epoch or len(trainer.train_data)
        out = self.phase_step(batch, optimizers, trainer.state.step, steps_per_epoch, trainer.config.grad_clip)
        if out.pop("schedule_done", False):
            trainer.request_stop("the SeqGAN schedule is complete")
        return out

    def phase_step(
        self,
        batch: Tensor,
        optimizers: Sequence[torch.optim.Optimizer],
        step: int,
        steps_per_epoch: int,
        grad_clip: float = 0.0,
    ) -> dict:
        """One optimizer step of the phase that the 0-based global ``step`` falls in (see :func:`phase_at`).

        ``optimizers`` are :meth:`configure_optimizers`'s three; ``grad_clip`` > 0 clips the generator's gradient
        norm. Returns the step's scalars (``"loss"`` always; ``"schedule_done": True`` once the schedule is over).
        """
        g_mle, g_pg, d_opt = optimizers
        phase, index = phase_at(step, steps_per_epoch, self.gan)
        if phase == "mle":
            loss, n = self.mle_loss(batch)
            g_mle.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip > 0:
                nn.utils.clip_grad_norm_(self.generator.parameters(), grad_clip)
            g_mle.step()
            return {"loss": loss.detach(), "mle_loss": loss.detach(), "num_tokens": n}
        if phase in ("d_pretrain", "d"):
            fake = self.generator.sample(batch.shape[0])
            loss, acc = self.discriminator_loss(batch, fake)
            d_opt.zero_grad(set_to_none=True)
            loss.backward()
            d_opt.step()
            return {"loss": loss.detach(), "d_loss": loss.detach(), "d_acc": acc, "n": 2 * batch.shape[0]}
        if phase == "pg":
            if index == 0 and phase_at(step - 1, steps_per_epoch, self.gan)[0] != "pg":
                # first generator step of the adversarial phase: the rollout net starts as a copy of G
                self.rollout_generator.load_state_dict(self.generator.state_dict())
            n = self.gan.pg_batch_size or batch.shape[0]
            seqs = self.generator.sample(n)
            rewards = self.rewards(seqs)
            if not torch.isfinite(rewards).all():
                # the trainer stops on a non-finite loss, names the step and keeps the last good checkpoint
                return {"loss": torch.tensor(float("nan")), "reward_mean": float("nan")}
            loss = self.policy_gradient_loss(seqs, rewards)
            g_pg.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip > 0:
                nn.utils.clip_grad_norm_(self.generator.parameters(), grad_clip)
            g_pg.step()
            self.update_rollout()
            return {"loss": loss.detach(), "pg_loss": loss.detach(), "reward_mean": rewards.mean(), "n": n}
        # "done": the schedule is over (train.max_steps normally stops before this)
        return {"loss": torch.tensor(0.0), "schedule_done": True}


# ------------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def generator_nll(generator: Generator, seqs: Tensor, batch_size: int = 1000) -> float:
    """Per-token NLL (nats) of ``seqs`` (N, T) under ``generator`` (positions after EOS ignored)."""
    was = generator.training
    generator.eval()
    total = count = 0.0
    try:
        for chunk in seqs.split(batch_size):
            chunk = chunk.to(generator.head.weight.device)
            nll = generator.token_nll(chunk)  # (b, T)
            mask = token_mask(chunk, generator.config.eos_id, generator.config.pad_id)
            total += (nll * mask).sum().item()
            count += mask.sum().item()
    finally:
        generator.train(was)
    return total / max(count, 1.0)


@torch.no_grad()
def sample_many(generator: Generator, n: int, temperature: float, seed: int | None, chunk: int = 2000) -> Tensor:
    """``n`` sequences of ``generator`` in chunks, on the CPU (a fixed ``seed`` gives the same samples)."""
    device = generator.head.weight.device
    g = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    was = generator.training
    generator.eval()
    try:
        return torch.cat([generator.sample(min(chunk, n - i), temperature, g) for i in range(0, n, chunk)]).cpu()
    finally:
        generator.train(was)


