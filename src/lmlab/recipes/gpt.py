"""The GPT recipe: text -> token codec + memory-mapped token files -> :class:`GPT` -> a run directory.

Inputs (keyword arguments of the recipe, as ``lmlab gpt train`` passes them): ``data`` (training text: a file
or a folder; may be None on ``--resume``, which reuses the saved tokenizer and token files) and ``val`` (a
separate validation text; otherwise the last ``data.val_fraction`` of the tokens is held out).

The text is tokenized once into ``run_dir/data/train.bin`` (+ ``val.bin``) and training reads random blocks of
it (:class:`lmlab.data.tokens.RandomBlocks`, whose batch ``i`` of epoch ``e`` depends on ``(seed, e, i)`` only,
so a resumed run replays exactly the batches an uninterrupted one would see). Under ``torchrun`` rank 0 writes
the token files while the other ranks wait, then every rank maps the same files.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from lmlab import checkpoint, distributed
from lmlab.config import TrainConfig, config_from_dict, config_to_dict
from lmlab.data.tokens import (
    RandomBlocks,
    SequentialBlocks,
    TokenCodec,
    TokenDataConfig,
    check_block_size,
    iter_text,
    open_token_file,
    write_token_file,
)
from lmlab.errors import CheckpointError, ConfigError
from lmlab.models.gpt import GPT, GPTConfig
from lmlab.recipes.base import (
    PretrainedBody,
    Recipe,
    TrainResult,
    check_codec_fits,
    init_from_config,
    read_tokenizer_files,
    tokenizer_files_dir,
)


def _default_train_config() -> TrainConfig:
    return TrainConfig(optimizer="adamw", weight_decay=0.1, betas=[0.9, 0.99], schedule="cosine", grad_clip=1.0)


@dataclass
class GPTRunConfig:
    """The whole config of a GPT run: ``model``, ``data`` and ``train`` sections (``lmlab/configs/gpt/*.yaml``)."""

    model: GPTConfig = field(default_factory=GPTConfig)
    data: TokenDataConfig = field(default_factory=TokenDataConfig)
    train: TrainConfig = field(default_factory=_default_train_config)


def saved_run_config(run_dir: str | os.PathLike, saved: dict) -> GPTRunConfig:
    sections = checkpoint.saved_sections(run_dir, saved)
    return config_from_dict(GPTRunConfig, sections, where=f"{run_dir}/config.json")


# ------------------------------------------------------------------------------------------------ token files
def prepare_tokens(
    run: GPTRunConfig,
    data: str | os.PathLike,
    folder: Path,
    val: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
    codec: TokenCodec | None = None,
) -> tuple[TokenCodec, np.ndarray, np.ndarray | None]:
    """Fit the codec on ``data`` (or use ``codec``, a pretrained run's), save it in ``folder`` and write
    ``folder/data/train.bin`` (+ ``val.bin`` for a separate ``val`` file). Returns (codec, train tokens,
    validation tokens or None)."""
    started = time.monotonic()
    if codec is None:
        codec = TokenCodec.fit(iter_text(data, run.data.encoding), run.data)
    codec.save(folder)
    tokens = write_token_file(iter_text(data, run.data.encoding), codec, folder / "data" / "train.bin")
    val_tokens = None
    if val is not None:
        val_tokens = write_token_file(iter_text(val, run.data.encoding), codec, folder / "data" / "val.bin")
    log(
        f"gpt: tokenized {data} once into {folder / 'data'} ({len(tokens):,} {codec.kind} tokens, "
        f"vocab {codec.vocab_size:,}, {tokens.dtype}) in {time.monotonic() - started:.1f} s"
    )
    return codec, tokens, val_tokens


def open_tokens(folder: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The memory-mapped train tokens of a run and its separate validation tokens (None without ``--val``)."""
    tokens = open_token_file(folder / "data" / "train.bin")
    val_path = folder / "data" / "val.bin"
    return tokens, (open_token_file(val_path) if val_path.is_file() else None)


def split_tokens(tokens: np.ndarray, val_tokens: np.ndarray | None, fraction: float):
    """(train, validation): the separate validation stream, or the last ``fraction`` of ``tokens``."""
    if val_tokens is not None or fraction <= 0:
        return tokens, val_tokens
    cut = int(len(tokens) * (1 - fraction))
    return tokens[:cut], tokens[cut:]


@torch.no_grad()
def evaluate_tokens(model: GPT, tokens: np.ndarray, batch_size: int = 32, max_tokens: int = 0,
                    block_size: int | None = None) -> dict[str, float]:
    """Mean next-token loss over every non-overlapping block of ``tokens`` (``block_size`` tokens each, default
    the model's context), its perplexity and bits/token."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for batch in SequentialBlocks(tokens, block_size or model.config.block_size, batch_size, max_tokens):
            logits = model(batch["input_ids"].to(device))  # (B, T, V)
            targets = batch["targets"].to(device)
            total += F.cross_entropy(logits.float().flatten(0, 1), targets.reshape(-1), reduction="sum").item()
            count += targets.numel()
    finally:
        model.train(was_training)
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "bits_per_token": loss / math.log(2), "tokens": count}


# ---------------------------------------------------------------------------------------------------- recipe
class GPTRecipe(Recipe):
    family = "gpt"
    model_type = "gpt"
    run_config = GPTRunConfig
    default_preset = "char"
    resume_ignore: ClassVar[dict[str, Any]] = {
        "train": {"eval_every", "save_every", "compile", "precision"},
        "model": {"vocab_size"},
        "data": {"eval_batch_size", "max_eval_tokens"},
    }

    @classmethod
    def from_preset(cls, preset: str | None = None, overrides=(), init_from: str | None = None, **inputs: Any):
        """With ``init_from`` (a GPT run): continued pretraining from its weights, with its architecture and its
        tokenizer (explicit model/tokenizer options that contradict them are a ConfigError)."""
        if init_from is None:
            return super().from_preset(preset, overrides, **inputs)
        config = init_from_config(cls, preset or cls.default_preset, overrides, init_from, ("tokenizer", "vocab_size", "lowercase"))
        return cls(config, init_from=str(init_from), **inputs)

    def prepare(self, saved: dict | None, run_dir: Path) -> None:
        """Tokenize ``data`` once into ``run_dir/data`` (rank 0; a new run only), then map the token files."""
        run = self.config
        data, val = self.inputs.get("data"), self.inputs.get("val")
        self.resumed = saved is not None
        if saved is None:
            if data is None:
                raise ConfigError("--data is required to start a new run (it may be left out only with --resume)")
            source = self.inputs.get("init_from")
            if distributed.is_main():
                codec = TokenCodec.load(source) if source else None
                prepare_tokens(run, data, run_dir, val, self._main_log, codec=codec)
            distributed.barrier()
        self.codec = TokenCodec.load(run_dir)
        tokens, val_tokens = open_tokens(run_dir)
        self.train_tokens, self.val_tokens = split_tokens(tokens, val_tokens, run.data.val_fraction)
        run.model.vocab_size = self.codec.vocab_size
        self.train_data = RandomBlocks(self.train_tokens, run.model.block_size, run.train.batch_size,
                                       seed=run.train.seed)
        self.val_data = None
        if self.val_tokens is not None and len(self.val_tokens):
            self.val_data = SequentialBlocks(
                self.val_tokens, run.model.block_size, run.data.eval_batch_size, run.data.max_eval_tokens
            )

    def _main_log(self, message: str) -> None:
        if distributed.is_main():
            self.log(message)

    def build_model(self) -> GPT:
        model = GPT(self.config.model)
        source = self.inputs.get("init_from")
        if source and not self.resumed:  # continued pretraining starts from the pretrained weights exactly
            # (an imported run stores a tied output layer once, as wte.weight, and its wide weights transposed)
            tied = {"lm_head.weight": "wte.weight"} if self.config.model.tie_embeddings else None
            checkpoint.stream_weights(Path(source) / checkpoint.WEIGHTS_FILE, model, tied=tied)
            self._main_log(f"gpt: starting from the weights of {source}")
        return model

    def config_extras(self) -> dict[str, Any]:
        run, val = self.config, self.inputs.get("val")
        return {
            **({"init_from": str(self.inputs["init_from"])} if self.inputs.get("init_from") else {}),
            "corpus": {
                "train": str(self.inputs.get("data")),
                "val": str(val) if val is not None else f"last {run.data.val_fraction:g} of train",
                "train_tokens": int(len(self.train_tokens)),
                "val_tokens": int(len(self.val_tokens)) if self.val_tokens is not None else 0,
            }
        }

    def fit(self, run_dir: Path, resume: bool, callbacks) -> TrainResult:
        from functools import partial

        from lmlab.trainer import Trainer, build_optimizer

        run, model = self.config, self.model
        n_val = len(self.val_tokens) if self.val_tokens is not None else 0
        self._main_log(
            f"gpt: {len(self.train_tokens):,} train / {n_val:,} val tokens, "
            f"{run.model.num_layers} layers x {run.model.embed_dim} wide, {run.model.num_heads} heads, context "
            f"{run.model.block_size}, {model.num_parameters():,} parameters; global batch {run.train.batch_size} "
            f"x {run.model.block_size} tokens on {distributed.world_size()} process(es)"
        )
        # the model builds its AdamW groups itself; any other optimizer comes from the trainer's builder
        model.configure_optimizers = partial(GPT.configure_optimizers, model, build_optimizer=build_optimizer)
        trainer = Trainer(run.train, model, self.train_data, self.val_data, callbacks=callbacks, run_dir=run_dir)
        last = trainer.fit(resume=resume)
        return TrainResult.from_trainer(trainer, last)

    # ------------------------------------------------------------------------------------------ trained runs
    @classmethod
    def load_model(cls, run_dir: str | os.PathLike, device: str = "cpu",
                   for_decoding: bool = False) -> tuple[GPT, TokenCodec, GPTRunConfig]:
        """The trained model (best weights, eval mode), its codec and its run config. ``for_decoding`` (the
        generation pipeline) on a CPU: the wide projections' weights are laid out column-major
        (:meth:`GPT.column_major_`, the same values; faster token-by-token decoding).

        A run imported with ``--dtype bfloat16`` computes in float32 on a CPU: for decoding its matrices stay in
        bf16 (:meth:`GPT.bf16_weights_`), for anything else the model is upcast; on a GPU it stays all bf16."""
        from lmlab.trainer import resolve_device

        target = resolve_device(device)
        column_major = for_decoding and torch.device(target).type == "cpu"
        saved = checkpoint.load_config(run_dir, cls.model_type)
        run = saved_run_config(run_dir, saved)
        codec = TokenCodec.load(run_dir)
        check_codec_fits(run_dir, codec.vocab_size, run.model.vocab_size)
        imported = saved.get("imported")
        weights = Path(run_dir) / checkpoint.WEIGHTS_FILE
        if isinstance(imported, dict):  # a Hugging Face checkpoint (lmlab gpt import): keep its dtype
            dtype = getattr(torch, str(imported.get("dtype", "float32")), None)
            if not isinstance(dtype, torch.dtype):
                raise CheckpointError(f"{run_dir}/config.json: imported.dtype {imported.get('dtype')!r} is not a dtype")
            model = GPT.empty(run.model, dtype=dtype)
            tied = {"lm_head.weight": "wte.weight"} if run.model.tie_embeddings else None
            if checkpoint.laid_out(weights):
                # written in the layout decoding uses (its wide weights stored transposed): map the file, no copy;
                # any other use gets the usual row-major layout (a transposing copy of those weights)
                checkpoint.map_weights(weights, model, tied=tied)
                if not column_major:
                    model.row_major_()
            else:  # imported before the layout was stored (row-major): stream it in, transposing where decoding wants
                if column_major:
                    model.column_major_(copy=False)
                checkpoint.stream_weights(weights, model, tied=tied)
            if dtype == torch.bfloat16 and torch.device(target).type == "cpu":
                # a CPU has no fast bf16 arithmetic: compute in float32, as transformers does with dtype=float32 on
                # the same file; decoding keeps the matrices in bf16 (half the bytes read per token, exact upcast)
                if for_decoding:
                    model.bf16_weights_()
                else:
                    model.float().init_buffers()  # (the rotary tables computed in float32, not upcast from bf16)
        else:  # every weight is in the file (load_weights checks): no random initialisation needed
            model = GPT.empty(run.model)
            if column_major:
                model.column_major_(copy=False)
            checkpoint.load_weights(weights, model)
        model.to(target).eval()
        return model, codec, run

    @classmethod
    def load_for_generation(cls, run_dir: str | os.PathLike, device: str = "cpu") -> tuple[GPT, TokenCodec]:
        """(model in eval mode with its best weights, codec) of a trained run directory."""
        model, codec, _ = cls.load_model(run_dir, device, for_decoding=True)
        return model, codec

    @classmethod
    def load(cls, run_dir: str | os.PathLike, device: str = "cpu"):
        from lmlab.pipelines.gpt import GPTGenerator

        model, codec, run = cls.load_model(run_dir, device, for_decoding=True)
        return GPTGenerator(model, codec, run, Path(run_dir))

    # ------------------------------------------------------------------------------------- transfer learning
    @classmethod
    def pretrained_body(cls, run_dir: str | os.PathLike, device: str = "cpu") -> PretrainedBody:
        """The trained GPT (best weights) as a classifier body: states after the final LayerNorm, "mean"
        pooling (on IMDb with 100 labels 6 points above "last" on a dev set; runs saved with "last" keep it), at most ``block_size`` tokens, the run's own codec (no special tokens: a GPT reads running text)."""
        model, codec, run = cls.load_model(run_dir, device)
        return cls._body(model, codec, config_to_dict(run.model), read_tokenizer_files(run_dir))

    @classmethod
    def body_from_config(cls, model_config: dict[str, Any], tokenizer_files: dict[str, Any]) -> PretrainedBody:
        model_cfg = config_from_dict(GPTConfig, model_config, where="config.json: body model_config")
        with tokenizer_files_dir(tokenizer_files) as folder:
            codec = TokenCodec.load(folder)
        return cls._body(GPT(model_cfg), codec, model_config, tokenizer_files)

    @classmethod
    def _body(cls, model: GPT, codec: TokenCodec, model_config: dict, files: dict) -> PretrainedBody:
        return PretrainedBody(
            family=cls.family, model=model, model_config=dict(model_config), tokenizer_files=files,
            encode=codec.encode, pad_id=codec.pad_id or 0, max_len=model.config.block_size, pooling="mean",
        )

    @classmethod
    def evaluate(
        cls, run_dir: str | os.PathLike, data: str | os.PathLike, device: str = "cpu", max_tokens: int = 0,
        context: int = 0, encoding: str | None = None,
    ) -> dict[str, float]:
        """Loss (nats/token), perplexity and bits/token of a trained run on a text file (tokenized to a temp file),
        over its first ``max_tokens`` tokens (0: all), in blocks of ``context`` tokens (0: the model's context;
        for an imported pretrained model at most 1,024, and at most the text's length); ``encoding``: the file's
        (default: the run's data.encoding)."""
        import tempfile

        model, codec, run = cls.load_model(run_dir, device)
        imported = "imported" in checkpoint.load_config(run_dir)
        if context < 0 or context > run.model.block_size:
            raise ConfigError(f"--context must be in [1, {run.model.block_size}] (the model's context), got {context}")
        with tempfile.TemporaryDirectory() as tmp:
            tokens = write_token_file(iter_text(data, encoding or run.data.encoding), codec, Path(tmp) / "eval.bin")
            block = context or run.model.block_size
            if imported and not context:
                block = max(1, min(block, 1024, len(tokens) - 1))
            check_block_size(tokens, block, f"evaluation text {data}")
            result = evaluate_tokens(model, tokens, run.data.eval_batch_size, max_tokens, block_size=block)
            del tokens
        return result
