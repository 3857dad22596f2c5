r"""Recurrent language models: embedding -> RNN/LSTM/GRU stack -> dropout -> linear decoder.

A language model assigns $P(w_1 \dots w_N) = \prod_t P(w_t \mid w_{<t})$; the network reads $w_{t-1}$, updates
its hidden state and outputs logits over the vocabulary for $w_t$. Training minimises the mean cross-entropy
(nats per token); perplexity is $\exp$ of it, and for character-level models bits per character is it divided
by $\ln 2$.

Text is one long token stream: word level (``whitespace`` for pre-tokenised PTB/WikiText files, ``word`` for
raw text; ``<eos>`` ends every line) or character level / BPE (the newline is a token like any other). The
stream is cut into ``batch_size`` contiguous rows and read ``bptt`` steps at a time (truncated
backpropagation through time): the hidden state at the end of one batch starts the next one, detached from
the graph, and is reset at the start of every epoch.

Public API: :class:`RNNLMConfig` / :class:`RNNLM` (the model), :class:`LMDataConfig`, :class:`LMCodec`
(text <-> ids, saved with the run), :class:`BPTTBatches`, :func:`resolve_run_config`, :func:`train_lm`,
:func:`evaluate_lm`, :func:`load_lm`.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmlab import generation
from lmlab.config import TrainConfig
from lmlab.errors import ConfigError, DataError
from lmlab.models.rnn import build_recurrent, detach_state

MODEL_TYPE = "rnn_lm"
TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.json"


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

    def validate(self) -> None:
        for name in ("embed_dim", "hidden_dim", "num_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.init_range < 0:
            raise ConfigError(f"model.init_range must be >= 0, got {self.init_range}")


@dataclass
class LMDataConfig:
    #: whitespace: split on spaces (PTB/WikiText files); word: lmlab's regex word tokenizer (raw text);
    #: char: one token per character; bpe: byte-pair encoding trained with Hugging Face tokenizers
    tokenizer: Literal["whitespace", "word", "char", "bpe"] = "whitespace"
    lowercase: bool = False
    #: largest vocabulary including the specials <pad> <unk> <bos> <eos> (0: every token seen); for bpe the
    #: exact BPE vocabulary size to train
    vocab_size: int = 0
    min_freq: int = 1
    bpe_pre_tokenizer: Literal["byte_level", "whitespace"] = "byte_level"
    bptt: int = 35
    eval_batch_size: int = 10
    #: without --val, hold out the last fraction of the training text (split by characters, as nanoGPT)
    val_fraction: float = 0.0
    encoding: str = "utf-8"
    #: for .jsonl inputs: the field holding the text
    text_field: str = "text"

    def validate(self) -> None:
        if self.bptt < 1:
            raise ConfigError(f"data.bptt must be >= 1, got {self.bptt}")
        if self.eval_batch_size < 1:
            raise ConfigError(f"data.eval_batch_size must be >= 1, got {self.eval_batch_size}")
        if self.vocab_size < 0 or self.min_freq < 1:
            raise ConfigError("data.vocab_size must be >= 0 and data.min_freq >= 1")
        if self.tokenizer == "bpe" and self.vocab_size == 0:
            raise ConfigError("data.tokenizer=bpe needs data.vocab_size (e.g. data.vocab_size=4000)")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class LMRunConfig:
    """The whole config of a language-model run: ``model``, ``data`` and ``train`` sections."""

    model: RNNLMConfig = field(default_factory=RNNLMConfig)
    data: LMDataConfig = field(default_factory=LMDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)




def resolve_run_config(preset: str, overrides=()) -> LMRunConfig:
    """Preset (a name in ``lmlab/configs/lm`` or a YAML/JSON file) + ``key=value`` overrides -> a validated config."""
    from lmlab.config import resolve_run_config as resolve

    return resolve(LMRunConfig, "lm", preset, overrides)

# ------------------------------------------------------------------------------------------- text <-> ids
class WhitespaceTokenizer:
    """Split on whitespace: the convention of the PTB and WikiText files (already tokenised, ``<unk>`` inside)."""

    def __init__(self, lowercase: bool = False) -> None:
        self.lowercase = lowercase

    def tokenize(self, text: str) -> list[str]:
        return (text.lower() if self.lowercase else text).split()

    def to_dict(self) -> dict:
        return {"type": "whitespace", "lowercase": self.lowercase}


def read_text(path: str | os.PathLike, cfg: LMDataConfig) -> str:
    """The whole text of a file (``.gz``/``.bz2``/``.xz``, ``.jsonl`` records) with ``\\n`` line ends."""
    from lmlab.data.readers import TextCorpus

    corpus = TextCorpus(path, encoding=cfg.encoding, text_field=cfg.text_field)
    text = "".join(line + "\n" for line in corpus)
    if not text.strip():
        raise DataError(f"{path}: the file holds no text")
    return text


class LMCodec:
    """Turns text into the model's token-id stream and ids back into text; saved in the run directory.

    Word level (``whitespace``/``word``): every line becomes its tokens followed by ``<eos>``; unknown words map
    to ``<unk>``. Character level and BPE: the text is read as it is, newlines included.
    """

    def __init__(self, kind: str, tokenizer: Any, vocab: Any | None) -> None:
        self.kind = kind
        self.tokenizer = tokenizer
        self.vocab = vocab  # a lmlab Vocab (None for BPE, whose ids come from the BPE model)

    # --- building and persistence -------------------------------------------------------------------------
    @classmethod
    def fit(cls, text: str, cfg: LMDataConfig) -> LMCodec:
        from lmlab.data.tokenizers import BPETokenizer, CharTokenizer, WordTokenizer
        from lmlab.data.vocab import build_vocab

        if cfg.tokenizer == "bpe":
            tok = BPETokenizer.train(
                text.splitlines(keepends=True),
                vocab_size=cfg.vocab_size,
                pre_tokenizer=cfg.bpe_pre_tokenizer,
                min_frequency=cfg.min_freq if cfg.min_freq > 1 else 2,
                lowercase=cfg.lowercase,
            )
            return cls("bpe", tok, None)
        if cfg.tokenizer == "char":
            tok = CharTokenizer(lowercase=cfg.lowercase)
            token_lists = [tok.tokenize(text)]
        else:
            tok = WhitespaceTokenizer(cfg.lowercase) if cfg.tokenizer == "whitespace" else WordTokenizer(
                lowercase=cfg.lowercase, strip_html=False
            )
            token_lists = (tok.tokenize(line) for line in text.splitlines())
        vocab = build_vocab(token_lists, min_freq=cfg.min_freq, max_size=cfg.vocab_size or None)
        return cls(cfg.tokenizer, tok, vocab)

    def to_dict(self) -> dict:
        return self.tokenizer.to_dict()

    def save(self, run_dir: str | Path) -> None:
        from lmlab import checkpoint

        checkpoint.atomic_write_json(Path(run_dir) / TOKENIZER_FILE, self.to_dict())
        if self.vocab is not None:
            self.vocab.save(Path(run_dir) / VOCAB_FILE)

    @classmethod
    def load(cls, run_dir: str | Path, kind: str) -> LMCodec:
        from lmlab import checkpoint
        from lmlab.data.tokenizers import tokenizer_from_dict
        from lmlab.data.vocab import Vocab

        d = checkpoint.read_json(Path(run_dir) / TOKENIZER_FILE, "tokenizer.json")
        tok = WhitespaceTokenizer(d.get("lowercase", False)) if d.get("type") == "whitespace" else tokenizer_from_dict(d)
        vocab = None if kind == "bpe" else Vocab.load(Path(run_dir) / VOCAB_FILE)
        return cls(kind, tok, vocab)

    # --- ids -----------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size if self.vocab is None else len(self.vocab)

    @property
    def word_level(self) -> bool:
        return self.kind in ("whitespace", "word")

    @property
    def eos_id(self) -> int | None:
        """Generation never stops on a token here (``<eos>`` is a line break); use stop strings."""
        return None

    def encode_text(self, text: str) -> tuple[Tensor, int]:
        """The id stream of ``text`` (int64, 1-D) and how many tokens were unknown (mapped to ``<unk>``)."""
        if self.kind == "bpe":
            lines = text.splitlines(keepends=True)
            ids: list[int] = []
            for chunk in self.tokenizer.encode_batch(lines):
                ids.extend(chunk)
            return torch.tensor(ids, dtype=torch.long), 0
        unk = self.vocab.unk_id
        if self.kind == "char":
            ids = self.vocab.encode(self.tokenizer.tokenize(text))
        else:
            eos = self.vocab.eos_id
            ids = []
            for line in text.splitlines():
                ids.extend(self.vocab.encode(self.tokenizer.tokenize(line)))
                ids.append(eos)
        tensor = torch.tensor(ids, dtype=torch.long)
        # a "<unk>" already in a PTB-style file is a word of the data, not an out-of-vocabulary event
        literal = text.count("<unk>") if self.kind == "whitespace" else 0
        return tensor, max(0, int((tensor == unk).sum()) - literal)

    def encode_prompt(self, text: str) -> list[int]:
        """Ids of a generation prompt. Characters outside the vocabulary are an error (naming them); unknown
        words become ``<unk>`` with a warning."""
        if self.kind == "bpe":
            return self.tokenizer.encode(text)
        tokens = self.tokenizer.tokenize(text)
        if self.kind == "char":
            unknown = sorted({t for t in tokens if t not in self.vocab})
            if unknown:
                shown = ", ".join(repr(c) for c in unknown[:10])
                raise DataError(
                    f"the prompt has {len(unknown)} character(s) this model never saw in training: {shown}; "
                    "remove or replace them"
                )
            return self.vocab.encode(tokens)
        unknown = [t for t in tokens if t not in self.vocab]
        if unknown:
            warnings.warn(
                f"{len(unknown)} prompt word(s) are not in the vocabulary and are read as <unk>: "
                + ", ".join(repr(w) for w in unknown[:10]),
                UserWarning,
                stacklevel=2,
            )
        return self.vocab.encode(tokens)

    def start_ids(self) -> list[int]:
        """What an empty prompt starts from: the end of a line (``<eos>`` or ``\\n``)."""
        if self.word_level:
            return [self.vocab.eos_id]
        ids = self.tokenizer.encode("\n") if self.kind == "bpe" else self.vocab.encode(["\n"])
        if not ids or (self.vocab is not None and ids[0] == self.vocab.unk_id):
            return [self.vocab.unk_id if self.vocab is not None else 0]
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of generated ids. Word level: tokens joined by spaces, ``<eos>`` as a line break, and a leading
        space (the text continues a prompt)."""
        if self.kind == "bpe":
            return self.tokenizer.decode(list(ids))
        if self.kind == "char":
            return "".join(self.vocab.decode(ids, skip_specials=True))
        eos = self.vocab.eos_id
        out: list[str] = []
        for i, token in zip(ids, self.vocab.decode(ids), strict=True):
            if i == eos:
                out.append("\n")
            elif token in ("<pad>", "<bos>"):
                continue
            else:
                out.append(token if (out and out[-1] == "\n") else " " + token)
        return "".join(out)

    decode_continuation = decode


# --------------------------------------------------------------------------------------------- batching
@dataclass
class LMBatch:
    inputs: Tensor  # (B, T)
    targets: Tensor  # (B, T): inputs shifted by one

    def to(self, device: torch.device | str) -> LMBatch:
        return LMBatch(self.inputs.to(device, non_blocking=True), self.targets.to(device, non_blocking=True))


class BPTTBatches:
    """Truncated-BPTT batches of a token stream: ``batch_size`` contiguous rows read ``bptt`` steps at a time.

    Row ``b`` holds tokens ``[b*L, (b+1)*L)`` of the stream (L = len // batch_size; the remainder is dropped),
    so batch ``k+1`` continues every row exactly where batch ``k`` stopped and the hidden state can be carried.
    Under torchrun each rank takes its own slice of the rows. ``chars_per_token`` lets evaluation report
    per-character numbers for any tokenization.
    """

    def __init__(
        self, ids: Tensor, batch_size: int, bptt: int, name: str = "data", chars_per_token: float | None = None
    ) -> None:
        from lmlab import distributed

        if batch_size < 1 or bptt < 1:
            raise ConfigError(f"batch_size and bptt must be >= 1, got {batch_size} and {bptt}")
        need = batch_size * (bptt + 1)
        if ids.numel() < need:
            raise DataError(
                f"the {name} text has {ids.numel()} tokens, fewer than one BPTT batch needs "
                f"(batch_size {batch_size} x (bptt {bptt} + 1) = {need}); use more text or a smaller "
                "train.batch_size / data.bptt (data.eval_batch_size for validation)"
            )
        self.batch_size, self.bptt, self.name = batch_size, bptt, name
        self.chars_per_token = chars_per_token
        per_row = ids.numel() // batch_size
        data = ids[: per_row * batch_size].view(batch_size, per_row)  # (B, L)
        world = distributed.world_size()
        if world > 1 and name == "train":
            if batch_size % world:
                raise ConfigError(
                    f"train.batch_size={batch_size} must be divisible by the number of processes ({world})"
                )
            per = batch_size // world
            data = data[distributed.rank() * per : (distributed.rank() + 1) * per]
        self.data = data

    @property
    def num_tokens(self) -> int:
        """Tokens predicted per pass (the first token of each row is only ever an input)."""
        return self.data.shape[0] * (self.data.shape[1] - 1)

    def __len__(self) -> int:
        return math.ceil((self.data.shape[1] - 1) / self.bptt)

    def iter_from(self, start: int) -> Iterator[LMBatch]:
        length = self.data.shape[1]
        for i in range(start * self.bptt, length - 1, self.bptt):
            t = min(self.bptt, length - 1 - i)
            yield LMBatch(self.data[:, i : i + t], self.data[:, i + 1 : i + 1 + t])

    def __iter__(self) -> Iterator[LMBatch]:
        return self.iter_from(0)


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
        if c.init_range > 0:
            for p in self.parameters():
                nn.init.uniform_(p, -c.init_range, c.init_range)
            nn.init.zeros_(self.decoder.bias)
        if c.tie_weights:
            self.decoder.weight = self.embedding.weight
        #: the hidden state carried from one training batch to the next (detached), reset each epoch
        self.carried_state = None

    def forward(self, ids: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """Logits (B, T, V) for the next token at every position, and the final hidden state."""
        x = self.drop(self.embedding(ids))  # (B, T, E)
        out, state = self.rnn(x, state)  # (B, T, H)
        out = self.drop(out)
        if self.proj is not None:
            out = self.proj(out)  # (B, T, E)
        return self.decoder(out), state  # (B, T, V)

    def step(self, ids: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """The ``step_fn`` of :mod:`lmlab.generation`: logits of the last position (B, V) and the new state."""
        logits, state = self(ids, state)
        return logits[:, -1], state

    # --- training hooks (lmlab.trainer) ---------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        self.carried_state = None

    def loss(self, batch: LMBatch) -> dict:
        state = self.carried_state
        if state is not None and _state_batch(state) != batch.inputs.shape[0]:
            state = None
        logits, state = self(batch.inputs, state)  # (B, T, V)
        self.carried_state = detach_state(state)  # truncated BPTT: keep the values, drop the history
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch.targets.reshape(-1))
        n = batch.targets.numel()
        return {"loss": loss, "ppl": math.exp(min(loss.item(), 700.0)), "num_tokens": n, "n": n}

    @torch.no_grad()
    def evaluate(self, data: BPTTBatches | None) -> dict:
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

    # --- loading and generation -------------------------------------------------------------------------
    @classmethod
    def load_for_generation(cls, run_dir: str | os.PathLike, device: str = "cpu") -> tuple[RNNLM, LMCodec]:
        """The hook :class:`lmlab.pipelines.Generator` calls: the trained model (eval mode) and its codec."""
        model, codec, _ = load_lm(run_dir, device)
        return model, codec

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: Tensor | Sequence[int],
        cfg: generation.SamplingConfig,
        on_token: Callable[[int, int], None] | None = None,
        eos_id: int | None = None,
        stop_checker: Callable[[int, list[int]], bool] | None = None,
    ) -> list[list[int]]:
        """Sample continuations of ``prompt_ids`` (B, T) with :func:`lmlab.generation.generate`."""
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


# ----------------------------------------------------------------------------------------- the workflow
def _chars_per_token(text: str, num_tokens: int) -> float:
    return len(text) / max(num_tokens, 1)


def _split_tail(text: str, fraction: float, word_level: bool) -> tuple[str, str]:
    """First (1 - fraction) of the characters and the rest; word-level splits at the next line break."""
    cut = int(len(text) * (1 - fraction))
    if word_level:
        nl = text.find("\n", cut)
        cut = len(text) if nl < 0 else nl + 1
    return text[:cut], text[cut:]


def _compare_for_resume(old: dict, new: dict, run_dir) -> None:
    from lmlab.config import check_resume_compatible

    check_resume_compatible(old, new, run_dir, ignore={"model": {"vocab_size", "impl"}})

def train_lm(
    run: LMRunConfig,
    data: str | os.PathLike,
    out: str | os.PathLike | None,
    *,
    val: str | os.PathLike | None = None,
    overwrite: bool = False,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
    log: Callable[[str], None] = print,
) -> dict:
    """Read the text, fit the tokenizer, build the model and train it with :class:`lmlab.trainer.Trainer`.

    Writes the run directory ``out`` (config.json, tokenizer.json, vocab.json, model.safetensors,
    metrics.jsonl, checkpoints/) and returns ``{"step", "best", "val": last validation metrics, "model"}``.
    """
    from lmlab import checkpoint, distributed
    from lmlab.config import config_to_dict
    from lmlab.trainer import Trainer

    distributed.init()
    run_dir = Path(out) if out is not None else None
    saved = None
    if run_dir is not None:
        if resume:
            saved = checkpoint.load_config(run_dir, MODEL_TYPE)
            _compare_for_resume(saved, config_to_dict(run), run_dir)
        elif distributed.is_main():
            checkpoint.prepare_run_dir(run_dir, overwrite=overwrite)
        distributed.barrier()

    text = read_text(data, run.data)
    if val is not None:
        val_text = read_text(val, run.data)
    elif run.data.val_fraction > 0:
        text, val_text = _split_tail(text, run.data.val_fraction, run.data.tokenizer in ("whitespace", "word"))
    else:
        val_text = None

    codec = LMCodec.load(run_dir, run.data.tokenizer) if saved is not None else LMCodec.fit(text, run.data)
    run.model.vocab_size = codec.vocab_size
    train_ids, train_unk = codec.encode_text(text)
    train_data = BPTTBatches(
        train_ids, run.train.batch_size, run.data.bptt, "train", _chars_per_token(text, train_ids.numel())
    )
    val_data = None
    if val_text is not None:
        val_ids, val_unk = codec.encode_text(val_text)
        if val_unk:
            log(f"lm: {val_unk} validation tokens are not in the vocabulary and count as <unk>")
        val_data = BPTTBatches(
            val_ids, run.data.eval_batch_size, run.data.bptt, "validation", _chars_per_token(val_text, val_ids.numel())
        )
    from lmlab.trainer import seed_everything

    seed_everything(run.train.seed)  # the initial weights depend on the seed only (same on every rank)
    model = RNNLM(run.model)
    if run_dir is not None and distributed.is_main() and saved is None:
        checkpoint.save_config(run_dir, MODEL_TYPE, config_to_dict(run))
        codec.save(run_dir)
    params = sum(p.numel() for p in model.parameters())
    log(
        f"lm: {train_ids.numel():,} train tokens ({train_unk:,} <unk>) / "
        f"{val_data.num_tokens if val_data else 0:,} val tokens, {run.data.tokenizer} vocab {codec.vocab_size:,}, "
        f"{run.model.num_layers}x{run.model.hidden_dim} {run.model.cell}, {params:,} parameters, "
        f"{len(train_data)} batches of {run.train.batch_size}x{run.data.bptt} per epoch"
    )
    trainer = Trainer(run.train, model, train_data, val_data, callbacks=callbacks, run_dir=run_dir)
    last = trainer.fit(resume=resume)
    return {
        "step": trainer.state.step,
        "epoch": trainer.state.epoch,
        "best": trainer.state.best_metric,
        "train_time_s": trainer.state.train_time_s,
        "last": last,
        "model": model,
        "codec": codec,
    }


def load_lm(run_dir: str | os.PathLike, device: str = "cpu") -> tuple[RNNLM, LMCodec, LMRunConfig]:
    """The trained model (best weights, eval mode), its codec and its run config."""
    from lmlab import checkpoint
    from lmlab.config import config_from_dict
    from lmlab.trainer import resolve_device

    saved = checkpoint.load_config(run_dir, MODEL_TYPE)
    run = config_from_dict(LMRunConfig, {k: saved[k] for k in ("model", "data", "train") if k in saved}, where=f"{run_dir}/config.json")
    codec = LMCodec.load(run_dir, run.data.tokenizer)
    model = RNNLM(run.model)
    checkpoint.load_weights(Path(run_dir) / checkpoint.WEIGHTS_FILE, model)
    model.to(resolve_device(device)).eval()
    return model, codec, run


def evaluate_lm(
    run_dir: str | os.PathLike, data: str | os.PathLike, batch_size: int | None = None, device: str = "cpu"
) -> dict:
    """Loss (nats/token), perplexity and per-character numbers of a trained run on a text file."""
    model, codec, run = load_lm(run_dir, device)
    text = read_text(data, run.data)
    ids, unk = codec.encode_text(text)
    if unk:
        warnings.warn(f"{data}: {unk} tokens are not in the vocabulary and count as <unk>", UserWarning, stacklevel=2)
    batches = BPTTBatches(ids, batch_size or run.data.eval_batch_size, run.data.bptt, str(data), _chars_per_token(text, ids.numel()))
    result = model.evaluate(batches)
    result["oov_tokens"] = float(unk)
    result["characters"] = float(len(text))
    return result
