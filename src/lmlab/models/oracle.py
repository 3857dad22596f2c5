"""The synthetic oracle of SeqGAN (Yu et al. 2017, section 5): a randomly initialised LSTM that plays "real data".

Every weight of the oracle (embedding, gates, output layer, biases) is drawn from N(0, 1), which makes its
next-token distributions peaked and its samples far from uniform. It generates the training set, and because its
probabilities are known exactly it can *score* what a generator produces:

$$\\mathrm{NLL}_{oracle} = -\\mathbb{E}_{Y \\sim G_\\theta}\\Big[\\frac{1}{T}\\sum_{t=1}^{T} \\log G_{oracle}(y_t \\mid Y_{1:t-1})\\Big]$$

(per-token average over ``num_samples`` sequences sampled from the generator). Lower is better; the oracle's own
samples give the floor (its entropy rate).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lmlab.errors import ConfigError
from lmlab.models.head_nll import linear_nll


@dataclass
class OracleConfig:
    """The oracle of the synthetic benchmark; the defaults are the paper's (vocab 5000, 32/32, length 20)."""

    vocab_size: int = 5000
    embed_dim: int = 32
    hidden_dim: int = 32
    seq_len: int = 20
    #: how many training sequences the oracle generates (the paper: 10,000)
    num_samples: int = 10_000
    #: how many generator samples NLL-oracle is measured on (the paper: 10,000)
    eval_samples: int = 10_000
    #: token fed before the first position (the paper: 0)
    start_id: int = 0
    seed: int = 88

    def validate(self) -> None:
        problems = []
        if self.vocab_size < 2:
            problems.append(f"oracle.vocab_size must be >= 2 tokens, got {self.vocab_size}")
        for key in ("embed_dim", "hidden_dim", "seq_len", "num_samples", "eval_samples"):
            if getattr(self, key) < 1:
                problems.append(f"oracle.{key} must be >= 1, got {getattr(self, key)}")
        if not 0 <= self.start_id < max(self.vocab_size, 1):
            problems.append(f"oracle.start_id must be in [0, {self.vocab_size}), got {self.start_id}")
        if problems:
            raise ConfigError("; ".join(problems))


class OracleLSTM(nn.Module):
    """An LSTM language model with N(0, 1) weights, fixed for a seed (it is never trained)."""

    def __init__(self, config: OracleConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim)
        self.lstm = nn.LSTM(config.embed_dim, config.hidden_dim, batch_first=True)
        self.head = nn.Linear(config.hidden_dim, config.vocab_size)
        g = torch.Generator().manual_seed(config.seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name == "lstm.bias_hh_l0":  # one bias per gate, as in the paper's cell
                    p.zero_()
                else:
                    p.copy_(torch.randn(p.shape, generator=g))
        self.requires_grad_(False)
        self.eval()

    def forward(self, inputs: Tensor) -> Tensor:
        """Teacher-forced logits (B, T, V) for ``inputs`` (B, T) that start with the start token."""
        out, _ = self.lstm(self.embedding(inputs))  # (B, T, H)
        return self.head(out)  # (B, T, V)

    def _inputs(self, seqs: Tensor) -> Tensor:
        start = torch.full_like(seqs[:, :1], self.config.start_id)
        return torch.cat([start, seqs[:, :-1]], dim=1)  # (B, T)

    @torch.no_grad()
    def nll(self, seqs: Tensor, batch_size: int = 1000) -> float:
        """Average per-token negative log-likelihood (nats) of ``seqs`` (N, T) under the oracle."""
        if seqs.dim() != 2 or seqs.shape[0] == 0:
            raise ValueError(f"seqs must be a non-empty (N, T) tensor, got shape {tuple(seqs.shape)}")
        device = self.head.weight.device
        total, count = 0.0, 0
        for start in range(0, seqs.shape[0], batch_size):
            chunk = seqs[start : start + batch_size].to(device).long()
            out, _ = self.lstm(self.embedding(self._inputs(chunk)))  # (b, T, H)
            # -log_softmax(head(out)).gather(chunk), with the (b*T, V) logits in cache-sized chunks
            total += linear_nll(out.reshape(-1, out.shape[-1]), self.head.weight, self.head.bias, chunk).sum().item()
            count += chunk.numel()
        return total / count

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, batch_size: int = 1000) -> Tensor:
        """``n`` sequences (n, seq_len) drawn from the oracle (temperature 1, no filtering)."""
        cfg = self.config
        device = self.head.weight.device
        if generator is None:
            generator = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        chunks = []
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            tok = torch.full((b,), cfg.start_id, dtype=torch.long, device=device)
            state = None
            out = torch.empty(b, cfg.seq_len, dtype=torch.long, device=device)
            for t in range(cfg.seq_len):
                h, state = self.lstm(self.embedding(tok).unsqueeze(1), state)  # (b, 1, H)
                probs = torch.softmax(self.head(h[:, 0]).float(), dim=-1)  # (b, V)
                tok = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
                out[:, t] = tok
            chunks.append(out)
        return torch.cat(chunks).cpu()


def make_oracle_data(config: OracleConfig) -> tuple[OracleLSTM, Tensor]:
    """The oracle for ``config.seed`` and its ``num_samples`` training sequences; deterministic for a seed."""
    oracle = OracleLSTM(config)
    g = torch.Generator().manual_seed(config.seed + 1)
    return oracle, oracle.sample(config.num_samples, generator=g)
