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

Training is ONE :class:`lmlab.trainer.Trainer` run. :class:`SeqGAN` implements ``manual_step`` and reads the
trainer's global step to decide, through the pure function :func:`phase_at`, which phase that step belongs to:
MLE pre-training of $G$ (``pretrain_epochs`` epochs of real batches), pre-training of $D$ (``d_pretrain_steps``
steps, each on a real batch and a freshly generated one), then ``adversarial_rounds`` rounds of
``g_steps_per_round`` policy-gradient steps followed by ``d_steps_per_round`` discriminator steps on fresh negatives.
Because the phase is a function of the step, a resumed run continues exactly in the phase where it stopped, and the
trainer's checkpoints, logging, Ctrl-C and NaN handling cover every phase.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmlab import checkpoint
from lmlab.callbacks import Callback
from lmlab.config import TrainConfig, config_from_dict, config_to_dict
from lmlab.errors import CheckpointError, ConfigError, DataError
from lmlab.generation import draw_categorical
from lmlab.models.oracle import OracleConfig, OracleLSTM, make_oracle_data

MODEL_TYPE = "seqgan"

PHASES = ("mle", "d_pretrain", "pg", "d", "done")


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
        if self.pg_lr <= 0 or self.d_lr <= 0:
            problems.append("gan.pg_lr and gan.d_lr must be > 0")
        if problems:
            raise ConfigError("; ".join(problems))


@dataclass
class DataConfig:
    """Real-data source (``source: data``): one sentence per line, whitespace-tokenised or WordTokenizer'd."""

    path: str = ""
    #: held-out sentences: BLEU references and held-out NLL ("" = none)
    test_path: str = ""
    tokenizer: Literal["whitespace", "word"] = "whitespace"
    lowercase: bool = True
    max_vocab: int = 5000
    min_freq: int = 1
    #: use only the first N lines (0: all)
    max_lines: int = 0


@dataclass
class GANRunConfig:
    """Everything ``lmlab gan train`` needs; one section per dataclass."""

    source: Literal["oracle", "data"] = "oracle"
    model: SeqGANConfig = field(default_factory=SeqGANConfig)
    gan: GANConfig = field(default_factory=GANConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=0.01, batch_size=64, grad_clip=5.0))
    data: DataConfig = field(default_factory=DataConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)


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
            logits, state = self.step(tok, state)
            tok = _draw(logits, temperature, generator)
            out[:, t] = tok
        return finish_sequences(out, self.config.eos_id, self.config.pad_id)


def _draw(logits: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
    if temperature == 0:
        return logits.argmax(-1)
    return draw_categorical(logits.float() / temperature, generator)  # (B,)


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


class Discriminator(nn.Module):
    """CNN text classifier (Kim 2014 / Zhang & LeCun 2015 as used by SeqGAN): real (1) vs generated (0)."""

    def __init__(self, config: SeqGANConfig) -> None:
        super().__init__()
        self.config = config
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
        x = self.embedding(seqs).transpose(1, 2)  # (B, E, T)
        pooled = [torch.relu(conv(x)).amax(dim=2) for conv in self.convs]  # each (B, n_k): max over time
        h = self.highway(torch.cat(pooled, dim=1))  # (B, sum n_k)
        return self.out(self.dropout(h))  # (B, 2)

    def prob_real(self, seqs: Tensor, batch_size: int = 4096) -> Tensor:
        """P(real | seqs) (B,), computed in chunks."""
        return torch.cat([torch.softmax(self(c).float(), -1)[:, 1] for c in seqs.split(batch_size)])


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
        #: batches per epoch, set by the driver (falls back to len(trainer.train_data))
        self.steps_per_epoch = 0

    # -- losses ----------------------------------------------------------------------------------------
    def mle_loss(self, seqs: Tensor) -> tuple[Tensor, int]:
        """Mean token cross-entropy of the real ``seqs`` (B, T) over all T positions.

        Sequences are fixed-length, as in Texygen: after ``<eos>`` the target is ``<pad>``, so the generator learns
        to pad and every sequence has the same number of actions in the policy gradient (masking the positions
        after EOS there would hand longer sequences more positive reward terms and teach it to avoid ending).
        """
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
    def rewards(self, seqs: Tensor, rollout_num: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Q(Y_{1:t-1}, y_t) for every position (B, T): rollout averages of D, and D itself at t = T."""
        N = rollout_num if rollout_num is not None else self.gan.rollout_num
        B, T = seqs.shape
        was_training = self.discriminator.training
        self.discriminator.eval()  # no dropout when scoring
        try:
            full = self.discriminator.prob_real(seqs)  # (B,)
            if T > 1:
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
    def configure_optimizers(self, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
        """[generator MLE Adam, generator policy-gradient Adam, discriminator Adam] (as in the paper's code).

        The trainer multiplies each group's ``lr_scale`` by its scheduled lr (= train.lr), so the PG and D
        optimizers get ``gan.pg_lr`` and ``gan.d_lr``.
        """
        betas = tuple(cfg.betas)

        def adam(params, lr):
            return torch.optim.Adam(
                [{"params": list(params), "lr_scale": lr / cfg.lr}], lr=lr, betas=betas, eps=cfg.eps
            )

        return [
            adam(self.generator.parameters(), cfg.lr),
            adam(self.generator.parameters(), self.gan.pg_lr),
            adam(self.discriminator.parameters(), self.gan.d_lr),
        ]

    def _steps_per_epoch(self, trainer: Any) -> int:
        if self.steps_per_epoch:
            return self.steps_per_epoch
        return len(trainer.train_data)

    def manual_step(self, batch: Tensor, optimizers: Sequence[torch.optim.Optimizer], trainer: Any) -> dict:
        """One optimizer step of the phase that the trainer's global step falls in."""
        g_mle, g_pg, d_opt = optimizers
        clip = trainer.config.grad_clip
        phase, index = phase_at(trainer.state.step, self._steps_per_epoch(trainer), self.gan)
        if phase == "mle":
            loss, n = self.mle_loss(batch)
            g_mle.zero_grad(set_to_none=True)
            loss.backward()
            if clip > 0:
                nn.utils.clip_grad_norm_(self.generator.parameters(), clip)
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
            if index == 0 and phase_at(trainer.state.step - 1, self._steps_per_epoch(trainer), self.gan)[0] != "pg":
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
            if clip > 0:
                nn.utils.clip_grad_norm_(self.generator.parameters(), clip)
            g_pg.step()
            self.update_rollout()
            return {"loss": loss.detach(), "pg_loss": loss.detach(), "reward_mean": rewards.mean(), "n": n}
        # "done": the schedule is over (train.max_steps normally stops before this)
        trainer.request_stop("the SeqGAN schedule is complete")
        return {"loss": torch.tensor(0.0)}


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
            logp = generator.token_log_probs(chunk)
            mask = token_mask(chunk, generator.config.eos_id, generator.config.pad_id)
            total -= (logp * mask).sum().item()
            count += mask.sum().item()
    finally:
        generator.train(was)
    return total / max(count, 1.0)


class OracleEvaluator:
    """NLL-oracle of ``eval_samples`` generator samples (fixed sampling seed), and the generator's NLL on the
    oracle's held-out samples (NLL-test)."""

    def __init__(self, oracle: OracleLSTM, eval_samples: int, heldout: Tensor | None = None, seed: int = 12345):
        self.oracle = oracle
        self.eval_samples = eval_samples
        self.heldout = heldout
        self.seed = seed

    def __call__(self, model: SeqGAN) -> dict[str, float]:
        device = model.generator.head.weight.device
        self.oracle.to(device)
        samples = _sample_many(model.generator, self.eval_samples, 1.0, self.seed)
        out = {"nll_oracle": self.oracle.nll(samples)}
        if self.heldout is not None:
            out["nll_test"] = generator_nll(model.generator, self.heldout)
        return out


class HeldOutEvaluator:
    """The generator's per-token NLL on held-out real sentences."""

    def __init__(self, heldout: Tensor):
        self.heldout = heldout

    def __call__(self, model: SeqGAN) -> dict[str, float]:
        return {"nll_test": generator_nll(model.generator, self.heldout)}


@torch.no_grad()
def _sample_many(generator: Generator, n: int, temperature: float, seed: int | None, chunk: int = 2000) -> Tensor:
    device = generator.head.weight.device
    g = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    was = generator.training
    generator.eval()
    try:
        return torch.cat([generator.sample(min(chunk, n - i), temperature, g) for i in range(0, n, chunk)]).cpu()
    finally:
        generator.train(was)


class SeqGANMonitor(Callback):
    """Evaluates at phase ends and every ``eval_every_epochs`` / ``eval_every_rounds``; logs to metrics.jsonl."""

    def __init__(self, evaluate: Callable[[SeqGAN], dict], log: Callable[[str], None] | None = None) -> None:
        self.evaluate = evaluate
        self.log = log
        self.history: list[dict] = []

    def _due(self, trainer: Any) -> str | None:
        model: SeqGAN = trainer.model
        spe = model._steps_per_epoch(trainer)
        gan = model.gan
        step = trainer.state.step  # steps done
        done, _ = phase_at(step - 1, spe, gan)
        nxt, idx = phase_at(step, spe, gan)
        if nxt == "done" and done != "done":
            return "pretrain_end" if done == "mle" else "end"
        if done == "mle":
            if nxt != "mle":
                return "pretrain_end"
            epochs = step // spe if spe else 0
            if gan.eval_every_epochs and step % spe == 0 and epochs % gan.eval_every_epochs == 0:
                return "pretrain"
            return None
        if done in ("pg", "d"):
            rnd = phase_at(step - 1, spe, gan)[1]
            if idx != rnd and gan.eval_every_rounds and (rnd + 1) % gan.eval_every_rounds == 0:
                return "adversarial"
        return None

    def _record(self, trainer: Any, tag: str) -> None:
        model: SeqGAN = trainer.model
        spe = model._steps_per_epoch(trainer)
        metrics = self.evaluate(model)
        gan = model.gan
        mle_steps = gan.pretrain_epochs * spe
        adv_start = mle_steps + gan.d_pretrain_steps
        per_round = gan.g_steps_per_round + gan.d_steps_per_round
        step = trainer.state.step
        rec = {
            "split": "val",
            "step": step,
            "epoch": trainer.state.epoch,
            "phase": tag,
            "pretrain_epochs_done": min(step, mle_steps) / spe if spe else 0.0,
            "rounds_done": max(0, step - adv_start) // per_round if per_round else 0,
            **{f"val_{k}": v for k, v in metrics.items()},
        }
        self.history.append(rec)
        if trainer.run_dir is not None:
            checkpoint.append_metrics(trainer.run_dir, rec)
        if self.log is not None:
            shown = " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            self.log(f"[{tag}] step {step} epochs {rec['pretrain_epochs_done']:.0f} rounds {rec['rounds_done']}: {shown}")

    def on_fit_start(self, trainer: Any) -> None:
        if trainer.state.step == 0 and not self.history:
            self._record(trainer, "init")

    def on_step_end(self, trainer: Any, logs: dict) -> None:
        tag = self._due(trainer)
        if tag is not None:
            self._record(trainer, tag)

    def on_fit_end(self, trainer: Any) -> None:
        # stopped early (train.max_time_s, Ctrl-C): record where it stopped
        if not self.history or self.history[-1]["step"] != trainer.state.step:
            self._record(trainer, "stopped")


# -------------------------------------------------------------------------------------------- data + driver
def encode_sentences(
    lines: Sequence[Sequence[str]], vocab: Any, max_len: int, where: str = "data"
) -> tuple[Tensor, int]:
    """Token lists -> (N, max_len) ids: tokens + <eos>, padded with <pad>; longer ones truncated (returns count)."""
    eos, pad = vocab.eos_id, vocab.pad_id
    rows, truncated = [], 0
    for tokens in lines:
        ids = vocab.encode(tokens) + [eos]
        if len(ids) > max_len:
            truncated += 1
            ids = ids[:max_len]
        rows.append(ids + [pad] * (max_len - len(ids)))
    if not rows:
        raise DataError(f"{where}: no sentences to train on; check the file (one sentence per line)")
    return torch.tensor(rows, dtype=torch.long), truncated


def _tokenizer(kind: str, lowercase: bool):
    from lmlab.data.tokenizers import WordTokenizer

    if kind == "word":
        return WordTokenizer(lowercase=lowercase)
    return None


def read_sentences(path: str | Path, kind: str = "whitespace", lowercase: bool = True, max_lines: int = 0) -> list[list[str]]:
    """Tokenised non-blank lines of a text file (.gz/.bz2/.xz ok)."""
    from lmlab.data.readers import open_text

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file; pass one sentence per line (e.g. ../shared/data/multi30k/...)")
    tok = _tokenizer(kind, lowercase)
    out = []
    with open_text(p) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            if tok is not None:
                out.append(tok.tokenize(line))
            else:
                out.append((line.lower() if lowercase else line).split())
            if max_lines and len(out) >= max_lines:
                break
    if not out:
        raise DataError(f"{p}: the file holds no non-blank lines")
    return out


@dataclass
class PreparedData:
    train: Tensor
    heldout: Tensor | None
    vocab: Any
    truncated: int
    oracle: OracleLSTM | None = None
    references: list[list[str]] | None = None


def prepare_data(cfg: GANRunConfig, log: Callable[[str], None] = print) -> PreparedData:
    """Build the training tensor (and vocab / oracle) and fill in model.vocab_size, max_len and the special ids."""
    if cfg.source == "oracle":
        oracle, train = make_oracle_data(cfg.oracle)
        heldout = oracle.sample(min(cfg.oracle.num_samples, 2000), generator=torch.Generator().manual_seed(cfg.oracle.seed + 2))
        m = cfg.model
        if m.vocab_size not in (0, cfg.oracle.vocab_size):
            raise ConfigError(f"model.vocab_size={m.vocab_size} differs from oracle.vocab_size={cfg.oracle.vocab_size}; set it to 0")
        m.vocab_size = cfg.oracle.vocab_size
        m.max_len = cfg.oracle.seq_len
        m.start_id, m.eos_id, m.pad_id = cfg.oracle.start_id, -1, -1
        return PreparedData(train, heldout, None, 0, oracle=oracle)
    from lmlab.data.vocab import build_vocab

    d = cfg.data
    if not d.path:
        raise ConfigError("source is 'data' but data.path is empty; pass --data PATH (one sentence per line)")
    lines = read_sentences(d.path, d.tokenizer, d.lowercase, d.max_lines)
    if d.max_vocab < 6:
        raise ConfigError(f"data.max_vocab must be >= 6 (4 specials + at least 2 words), got {d.max_vocab}")
    vocab = build_vocab(lines, min_freq=d.min_freq, max_size=d.max_vocab)
    if len(vocab) - len(vocab.specials) < 2:
        raise DataError(
            f"{d.path}: the vocabulary has {len(vocab) - len(vocab.specials)} word(s) besides the specials; a "
            "generator needs at least 2 tokens to choose from (use more text or a lower data.min_freq)"
        )
    m = cfg.model
    m.vocab_size = len(vocab)
    m.start_id, m.eos_id, m.pad_id = vocab.bos_id, vocab.eos_id, vocab.pad_id
    train, truncated = encode_sentences(lines, vocab, m.max_len, d.path)
    if truncated:
        log(
            f"warning: {truncated} of {len(lines)} training sentences are longer than model.max_len={m.max_len} "
            "tokens (with <eos>) and were truncated"
        )
    heldout = references = None
    if d.test_path:
        references = read_sentences(d.test_path, d.tokenizer, d.lowercase)
        heldout, cut = encode_sentences(references, vocab, m.max_len, d.test_path)
        if cut:
            log(f"warning: {cut} of {len(references)} held-out sentences were truncated to {m.max_len} tokens")
    return PreparedData(train, heldout, vocab, truncated, references=references)


def build_run_config(data: dict | None = None, where: str = "config") -> GANRunConfig:
    cfg = config_from_dict(GANRunConfig, data or {}, where)
    return cfg


def train(
    cfg: GANRunConfig,
    run_dir: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    log: Callable[[str], None] = print,
    init_generator: dict | None = None,
    prepared: PreparedData | None = None,
    callbacks: Sequence[Callback] = (),
) -> tuple[SeqGAN, SeqGANMonitor]:
    """Train a SeqGAN by ``cfg`` (one Trainer run over all phases); write the run directory if given."""
    from lmlab.data.loader import EpochLoader
    from lmlab.trainer import Trainer

    cfg.model.validate()
    cfg.gan.validate()
    prepared = prepared or prepare_data(cfg, log)
    cfg.model.validate()
    from lmlab.trainer import seed_everything

    seed_everything(cfg.train.seed)  # the initial weights depend on the seed only
    model = SeqGAN(cfg.model, cfg.gan)
    if init_generator is not None:
        model.generator.load_state_dict(init_generator)
        model.rollout_generator.load_state_dict(init_generator)
    loader = EpochLoader(
        prepared.train, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed, collate_fn=torch.stack, drop_last=True
    )
    spe = len(loader)
    if spe == 0:
        raise DataError(
            f"{len(prepared.train)} training sequences make no full batch of train.batch_size={cfg.train.batch_size}; "
            "lower the batch size or add data"
        )
    model.steps_per_epoch = spe
    steps = total_steps(spe, cfg.gan)
    if steps == 0:
        raise ConfigError("the schedule is empty: set gan.pretrain_epochs, gan.d_pretrain_steps or gan.adversarial_rounds")
    tcfg = cfg.train
    tcfg.max_steps = steps
    if prepared.oracle is not None:
        evaluate = OracleEvaluator(prepared.oracle, cfg.oracle.eval_samples, prepared.heldout, seed=tcfg.seed + 12345)
    elif prepared.heldout is not None:
        evaluate = HeldOutEvaluator(prepared.heldout)
    else:
        evaluate = HeldOutEvaluator(prepared.train[:2000])
    monitor = SeqGANMonitor(evaluate, log)
    if run_dir is not None:
        run_dir = checkpoint.prepare_run_dir(run_dir, overwrite=overwrite, resume=resume)
        save_run(run_dir, cfg, prepared, model=None)
    trainer = Trainer(tcfg, model, loader, val_data=None, callbacks=[monitor, *callbacks], run_dir=run_dir)
    t0 = time.monotonic()
    trainer.fit(resume=resume)
    model.train_time_s = time.monotonic() - t0  # type: ignore[attr-defined]
    if run_dir is not None:
        save_run(run_dir, cfg, prepared, model=model)
    return model, monitor


def save_run(run_dir: str | Path, cfg: GANRunConfig, prepared: PreparedData, model: SeqGAN | None) -> None:
    """config.json (+ vocab.json for real data) and, when ``model`` is given, model.safetensors."""
    run_dir = Path(run_dir)
    sections = config_to_dict(cfg)
    sections["truncated_sequences"] = prepared.truncated
    checkpoint.save_config(run_dir, MODEL_TYPE, sections)
    if prepared.vocab is not None:
        prepared.vocab.save(run_dir / "vocab.json")
    if model is not None:
        checkpoint.save_weights(run_dir / checkpoint.WEIGHTS_FILE, model)


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[SeqGAN, GANRunConfig, Any]:
    """(model, config, vocab or None) of a trained run directory."""
    cfg = saved_run_config(run_dir)
    model = SeqGAN(cfg.model, cfg.gan)
    checkpoint.load_weights(Path(run_dir) / checkpoint.WEIGHTS_FILE, model)
    model.to(device).eval()
    vocab = None
    if (Path(run_dir) / "vocab.json").is_file():
        from lmlab.data.vocab import Vocab

        vocab = Vocab.load(Path(run_dir) / "vocab.json")
    elif cfg.source == "data":
        raise CheckpointError(f"{run_dir}/vocab.json is missing; the vocabulary must travel with the model")
    return model, cfg, vocab


def decode(ids: Sequence[int], vocab: Any, eos_id: int, pad_id: int = -1) -> str:
    """Token ids -> text, up to the first EOS or pad (oracle runs without a vocabulary print the ids)."""
    words = []
    for i in ids:
        i = int(i)
        if (eos_id >= 0 and i == eos_id) or (pad_id >= 0 and i == pad_id):
            break
        words.append(vocab.itos[i] if vocab is not None else str(i))
    return " ".join(words)


def evaluate_run(
    run_dir: str | Path,
    temperatures: Sequence[float] = (1.0,),
    num_samples: int = 0,
    references: str | Path | None = None,
    seed: int = 0,
    max_n: int = 5,
) -> dict:
    """Metrics of a run: NLL-oracle (oracle runs) or BLEU-2..max_n / Self-BLEU-2..max_n / held-out NLL (real data)."""
    model, cfg, vocab = load_run(run_dir)
    out: dict[str, Any] = {"run_dir": str(run_dir), "source": cfg.source, "results": []}
    if cfg.source == "oracle":
        oracle = OracleLSTM(cfg.oracle)
        n = num_samples or cfg.oracle.eval_samples
        for t in temperatures:
            samples = _sample_many(model.generator, n, t, seed)
            out["results"].append({"temperature": t, "samples": n, "nll_oracle": oracle.nll(samples)})
        return out
    ref_path = references or cfg.data.test_path
    if not ref_path:
        raise ConfigError("no references: pass --references PATH (one sentence per line) or train with data.test_path")
    refs = read_sentences(ref_path, cfg.data.tokenizer, cfg.data.lowercase)
    heldout, _ = encode_sentences(refs, vocab, cfg.model.max_len, str(ref_path))
    out["nll_test"] = generator_nll(model.generator, heldout)
    out["results"] = quality_diversity(
        model.generator, vocab, refs, temperatures, num_samples or len(refs), seed=seed, max_n=max_n
    )
    return out


def quality_diversity(
    generator: Generator,
    vocab: Any,
    references: Sequence[Sequence[str]],
    temperatures: Sequence[float],
    num_samples: int,
    seed: int = 0,
    max_n: int = 5,
) -> list[dict]:
    """BLEU-2..max_n against ``references`` (quality) and Self-BLEU-2..max_n (diversity) at each temperature."""
    from lmlab import metrics as M

    ref_index = M.NgramReference(references, max_n)
    rows = []
    for t in temperatures:
        samples = _sample_many(generator, num_samples, t, seed)
        hyps = [decode(s, vocab, generator.config.eos_id, generator.config.pad_id).split() for s in samples.tolist()]
        row: dict[str, Any] = {"temperature": t, "samples": num_samples}
        row.update({f"bleu{k}": v for k, v in M.bleu_against(hyps, ref_index, range(2, max_n + 1)).items()})
        row.update({f"self_bleu{k}": v for k, v in M.self_bleu(hyps, range(2, max_n + 1)).items()})
        row["mean_length"] = sum(map(len, hyps)) / len(hyps)
        rows.append(row)
    return rows


def format_eval(result: dict) -> str:
    rows = result["results"]
    if result["source"] == "oracle":
        lines = ["temperature  samples  nll_oracle"]
        lines += [f"{r['temperature']:>11.2f}  {r['samples']:>7d}  {r['nll_oracle']:>10.4f}" for r in rows]
        return "\n".join(lines)
    keys = [k for k in rows[0] if k.startswith("bleu")] + [k for k in rows[0] if k.startswith("self_bleu")]
    keys.append("mean_length")
    lines = [f"nll_test {result['nll_test']:.4f}", "temp  " + " ".join(f"{k:>10}" for k in keys)]
    lines += [f"{r['temperature']:>4.2f}  " + " ".join(f"{r[k]:>10.4f}" for k in keys) for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- pipeline
class SeqGANGenerator:
    """Pipeline for a trained SeqGAN run: unconditional ``sample`` and the Generator ``stream``/``generate``."""

    model_type = MODEL_TYPE

    def __init__(self, model: SeqGAN, cfg: GANRunConfig, vocab: Any, run_dir: str | Path | None = None) -> None:
        self.model = model
        self.cfg = cfg
        self.vocab = vocab
        self.run_dir = run_dir

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, device: str = "cpu") -> SeqGANGenerator:
        model, cfg, vocab = load_run(run_dir, device)
        return cls(model, cfg, vocab, run_dir)

    def info(self) -> dict:
        m = self.cfg.model
        return {
            "model_type": MODEL_TYPE,
            "vocab_size": m.vocab_size,
            "max_len": m.max_len,
            "parameters": sum(p.numel() for p in self.model.generator.parameters()),
            "discriminator_parameters": sum(p.numel() for p in self.model.discriminator.parameters()),
            "trained_on": "synthetic oracle" if self.cfg.source == "oracle" else self.cfg.data.path,
        }

    def sample(self, n: int = 20, temperature: float = 1.0, seed: int | None = None) -> list[str]:
        if n < 1:
            raise ConfigError(f"-n must be >= 1, got {n}")
        if temperature < 0 or not math.isfinite(temperature):
            raise ConfigError(f"--temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
        seqs = _sample_many(self.model.generator, n, temperature, seed)
        return [decode(s, self.vocab, self.cfg.model.eos_id, self.cfg.model.pad_id) for s in seqs.tolist()]

    def _encode_prompt(self, prompt: str) -> list[int]:
        words = prompt.split() if self.cfg.data.tokenizer == "whitespace" else _tokenizer("word", self.cfg.data.lowercase).tokenize(prompt)
        if self.vocab is None:
            try:
                ids = [int(w) for w in words]
            except ValueError:
                raise DataError("an oracle run's prompt is a list of token ids, e.g. '12 4071 9'") from None
            bad = [i for i in ids if not 0 <= i < self.cfg.model.vocab_size]
            if bad:
                raise DataError(f"prompt ids {bad[:5]} are outside [0, {self.cfg.model.vocab_size})")
            return ids
        if self.cfg.data.lowercase:
            words = [w.lower() for w in words]
        return self.vocab.encode(words)

    @torch.no_grad()
    def stream(
        self,
        prompt: str = "",
        max_new_tokens: int = 0,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
    ):
        from lmlab.generation import SamplingConfig, find_stop, sample_next

        max_new_tokens = max_new_tokens or self.cfg.model.max_len
        sc = SamplingConfig(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            stop=list(stop),
            seed=seed,
        )
        g = self.model.generator
        ids = self._encode_prompt(prompt)
        gen = sc.make_generator(g.head.weight.device)
        state = None
        logits = None
        for i in [g.config.start_id, *ids]:
            logits, state = g.step(torch.tensor([i]), state)
        text, produced = "", 0
        history = torch.tensor([ids or [g.config.start_id]])
        finish = "length"
        while produced < max_new_tokens:
            tok = sample_next(logits, sc, gen, history)
            produced += 1
            t = int(tok.item())
            if t in (g.config.eos_id, g.config.pad_id) and t >= 0:
                finish = "eos"
                break
            word = self.vocab.itos[t] if self.vocab is not None else str(t)
            piece = word if not text else " " + word
            cut = find_stop(text + piece, sc.stop)
            if cut >= 0:
                rest = (text + piece)[:cut][len(text) :]
                if rest:
                    yield {"text": rest}
                finish = "stop"
                break
            text += piece
            yield {"text": piece}
            history = torch.cat([history, tok.view(1, 1)], dim=1)
            logits, state = g.step(tok.view(1), state)
        yield {"finish_reason": finish, "prompt_tokens": len(ids), "completion_tokens": produced}

    def generate(self, prompt: str = "", **kwargs) -> dict:
        text, last = "", {}
        for item in self.stream(prompt, **kwargs):
            if "text" in item:
                text += item["text"]
            else:
                last = item
        return {"text": text, **last}


def resolve_run_config(
    preset: str, overrides: Sequence[str] = (), source: str | None = None, data_path: str | None = None
) -> GANRunConfig:
    """Preset (name or file) + ``key=value`` overrides (+ --oracle / --data) -> a validated run config."""
    from lmlab.config import load_preset, merge, parse_overrides, resolve_short_overrides

    base = load_preset(preset, "gan")
    sections = {"model": SeqGANConfig, "gan": GANConfig, "train": TrainConfig, "data": DataConfig, "oracle": OracleConfig}
    merged = merge(base, resolve_short_overrides(parse_overrides(list(overrides)), sections))
    if source is not None:
        merged["source"] = source
    if data_path is not None:
        merged = merge(merged, {"data": {"path": data_path}})
    cfg = config_from_dict(GANRunConfig, merged, where="config")
    return cfg


def saved_run_config(run_dir: str | Path, overrides: Sequence[str] = ()) -> GANRunConfig:
    """The config a run was trained with; on resume only ``train.*`` overrides (e.g. max_time_s) may change it."""
    from lmlab.config import merge, parse_overrides

    data = checkpoint.load_config(run_dir, MODEL_TYPE)
    sections = {k: data[k] for k in ("source", "model", "gan", "train", "data", "oracle") if k in data}
    extra = parse_overrides(list(overrides))
    if set(extra) - {"train"}:
        raise ConfigError(
            f"--resume continues {run_dir} with its saved config; only train.* overrides (e.g. train.max_time_s=0) "
            f"may change, not {', '.join(sorted(set(extra) - {'train'}))}"
        )
    return config_from_dict(GANRunConfig, merge(sections, extra), f"{run_dir}/config.json")
