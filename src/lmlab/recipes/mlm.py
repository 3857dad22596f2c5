"""The masked-LM recipe: text -> MLM codec + memory-mapped token files -> :class:`MLM` -> a run directory.

Inputs (keyword arguments, as ``lmlab mlm train`` passes them): ``data`` (training text: a file or a folder; may
be None on ``--resume``), ``val`` (a separate validation text; otherwise the last ``data.val_fraction`` of the
tokens is held out) and ``init_from`` (an earlier MLM run: continued pretraining on new text, starting from
exactly its weights, with its tokenizer and its ``model`` section).

The text is tokenized once into ``run_dir/data/train.bin`` (+ ``val.bin``; + ``*.words.bin`` word starts for
whole-word masking); training reads random windows of it framed ``[CLS] ... [SEP]`` and masked afresh each time
(:class:`lmlab.data.mlm.MaskedBlocks`, whose mask generator is part of every checkpoint).
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from lmlab import checkpoint, distributed
from lmlab.config import TrainConfig, config_from_dict, config_to_dict
from lmlab.data.mlm import (
    MaskedBlocks,
    Masking,
    MLMCodec,
    MLMDataConfig,
    SequentialMaskedBlocks,
    check_stream,
    open_mlm_tokens,
    segmenter_fn,
    write_mlm_tokens,
)
from lmlab.data.tokens import iter_text
from lmlab.errors import ConfigError
from lmlab.models.mlm import MLM, MLMConfig
from lmlab.recipes.base import PretrainedBody, Recipe, TrainResult, check_codec_fits

#: the data options the tokenizer fixes: with --init-from they come from the source run
TOKENIZER_KEYS = ("tokenizer", "vocab_size", "lowercase", "strip_html")
#: the seed of the masks drawn for validation and ``lmlab mlm eval`` (fixed: the numbers are comparable)
EVAL_MASK_SEED = 1234


def _default_train_config() -> TrainConfig:
    return TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.01, betas=[0.9, 0.98], eps=1e-6,
                       schedule="linear", warmup_steps=100, grad_clip=1.0, batch_size=32, max_steps=1000)


@dataclass
class MLMRunConfig:
    """The whole config of a masked-LM run: ``model``, ``data`` and ``train`` (``lmlab/configs/mlm/*.yaml``)."""

    model: MLMConfig = field(default_factory=MLMConfig)
    data: MLMDataConfig = field(default_factory=MLMDataConfig)
    train: TrainConfig = field(default_factory=_default_train_config)


def saved_run_config(run_dir: str | os.PathLike, saved: dict) -> MLMRunConfig:
    sections = checkpoint.saved_sections(run_dir, saved)
    return config_from_dict(MLMRunConfig, sections, where=f"{run_dir}/config.json")


def _explicit_keys(overrides: Any) -> set[tuple[str | None, str]]:
    """(section or None for a bare key, key) of every ``key=value`` override."""
    keys: set[tuple[str | None, str]] = set()
    for item in overrides or ():
        key = str(item).split("=", 1)[0].strip()
        section, _, name = key.rpartition(".")
        keys.add((section or None, name))
    return keys


def apply_init_from(run: MLMRunConfig, source_dir: str | os.PathLike, overrides: Any = ()) -> MLMCodec:
    """Make ``run`` continue the pretraining of the MLM run ``source_dir``: its ``model`` section (dropout may
    be changed) and its tokenizer options. An override that contradicts them is a ConfigError; returns the
    source codec."""
    saved = checkpoint.load_config(source_dir, MLMRecipe.model_type)
    source = saved_run_config(source_dir, saved)
    if not source.model.head:
        raise ConfigError(
            f"--init-from {source_dir}: the model has no MLM head (imported without cls.predictions), so it cannot "
            "continue masked-LM pretraining; fine-tune it with lmlab classify train --init-from instead"
        )
    codec = MLMCodec.load(source_dir)
    given = _explicit_keys(overrides)
    problems = []
    for key, value in codec.kind_options().items():
        if ("data", key) in given and getattr(run.data, key) != value:
            problems.append(f"data.{key}={getattr(run.data, key)} (the source tokenizer has {key}={value})")
        setattr(run.data, key, value)
    for key, value in config_to_dict(source.model).items():
        if key in ("dropout", "vocab_size"):
            continue
        if (("model", key) in given or (None, key) in given) and getattr(run.model, key) != value:
            problems.append(f"model.{key}={getattr(run.model, key)} (the source model has {key}={value})")
    if problems:
        raise ConfigError(
            f"--init-from {source_dir}: {'; '.join(problems)}; continued pretraining keeps the source's "
            "tokenizer and architecture: drop these overrides"
        )
    dropout = run.model.dropout if (("model", "dropout") in given or (None, "dropout") in given) else source.model.dropout
    run.model = copy.deepcopy(source.model)
    run.model.dropout = dropout
    return codec


class MLMRecipe(Recipe):
    family = "mlm"
    model_type = "mlm"
    run_config = MLMRunConfig
    default_preset = "small"
    resume_ignore: ClassVar[dict[str, Any]] = {
        "train": {"eval_every", "save_every", "compile", "precision"},
        "model": {"vocab_size"},
        "data": {"eval_batch_size", "max_eval_tokens"},
    }

    @classmethod
    def from_preset(cls, preset: str | None = None, overrides: Any = (), **inputs: Any) -> MLMRecipe:
        """Preset + overrides; with ``init_from`` the source run's architecture and tokenizer (see
        :func:`apply_init_from`), checked before any data is read."""
        run = cls.resolve(preset, overrides)
        recipe = cls(run, **inputs)
        if inputs.get("init_from"):
            recipe.source_codec = apply_init_from(run, inputs["init_from"], overrides)
        return recipe

    def prepare(self, saved: dict | None, run_dir: Path) -> None:
        run = self.config
        data, val, init_from = self.inputs.get("data"), self.inputs.get("val"), self.inputs.get("init_from")
        self.resuming = saved is not None
        segment = segmenter_fn(run.data.segmenter) if run.data.whole_word else None
        if saved is None:
            if data is None:
                raise ConfigError("--data is required to start a new run (it may be left out only with --resume)")
            if distributed.is_main():
                self._tokenize(data, val, init_from, run_dir, segment)
            distributed.barrier()
        self.codec = MLMCodec.load(run_dir)
        tokens, starts = open_mlm_tokens(run_dir / "data" / "train.bin")
        val_path = run_dir / "data" / "val.bin"
        if val_path.is_file():
            val_tokens, val_starts = open_mlm_tokens(val_path)
        elif run.data.val_fraction > 0:
            cut = int(len(tokens) * (1 - run.data.val_fraction))
            tokens, val_tokens = tokens[:cut], tokens[cut:]
            starts, val_starts = (starts[:cut], starts[cut:]) if starts is not None else (None, None)
        else:
            val_tokens, val_starts = None, None
        self.train_tokens, self.val_tokens = tokens, val_tokens
        run.model.vocab_size = self.codec.vocab_size
        masking = Masking.from_config(run.data, self.codec)
        c = self.codec
        self.train_data = MaskedBlocks(tokens, starts, run.model.block_size, run.train.batch_size, masking,
                                       c.cls_id, c.sep_id, seed=run.train.seed)
        self.val_data = None
        if val_tokens is not None and len(val_tokens):
            self.val_data = SequentialMaskedBlocks(
                val_tokens, val_starts, run.model.block_size, run.data.eval_batch_size, masking, c.cls_id,
                c.sep_id, c.pad_id, seed=EVAL_MASK_SEED, max_tokens=run.data.max_eval_tokens)

    def _tokenize(self, data, val, init_from, run_dir: Path, segment) -> None:
        """Fit (or, with --init-from, copy) the codec and write the token files (rank 0 only)."""
        run = self.config
        started = time.monotonic()
        if init_from:
            codec = getattr(self, "source_codec", None) or MLMCodec.load(init_from)
        else:
            codec = MLMCodec.fit(iter_text(data, run.data.encoding), run.data)
        codec.save(run_dir)
        tokens, _ = write_mlm_tokens(iter_text(data, run.data.encoding), codec, run_dir / "data" / "train.bin", segment)
        if val is not None:
            write_mlm_tokens(iter_text(val, run.data.encoding), codec, run_dir / "data" / "val.bin", segment)
        self.log(
            f"mlm: tokenized {data} once into {run_dir / 'data'} ({len(tokens):,} {codec.kind} tokens, vocab "
            f"{codec.vocab_size:,}{', word starts' if segment else ''}) in {time.monotonic() - started:.1f} s"
        )

    def build_model(self) -> MLM:
        model = MLM(self.config.model)
        init_from = self.inputs.get("init_from")
        if init_from and not self.resuming:
            checkpoint.load_weights(Path(init_from) / checkpoint.WEIGHTS_FILE, model)
        return model

    def config_extras(self) -> dict[str, Any]:
        run, val, init_from = self.config, self.inputs.get("val"), self.inputs.get("init_from")
        extras: dict[str, Any] = {
            "corpus": {
                "train": str(self.inputs.get("data")),
                "val": str(val) if val is not None else f"last {run.data.val_fraction:g} of train",
                "train_tokens": int(len(self.train_tokens)),
                "val_tokens": int(len(self.val_tokens)) if self.val_tokens is not None else 0,
            }
        }
        if init_from:
            extras["init_from"] = str(init_from)
        return extras

    def fit(self, run_dir: Path, resume: bool, callbacks) -> TrainResult:
        from lmlab.trainer import Trainer

        run, model = self.config, self.model
        n_val = len(self.val_tokens) if self.val_tokens is not None else 0
        log = self.log if distributed.is_main() else (lambda _message: None)
        log(
            f"mlm: {len(self.train_tokens):,} train / {n_val:,} val tokens, {run.model.num_layers} layers x "
            f"{run.model.embed_dim} wide, {run.model.num_heads} heads, block {run.model.block_size}, "
            f"{model.num_parameters():,} parameters; mask {run.data.mask_prob:g} of tokens"
            f"{' (whole words)' if run.data.whole_word else ''}"
            + (f"; initialised from {self.inputs['init_from']}" if self.inputs.get("init_from") else "")
        )
        trainer = Trainer(run.train, model, self.train_data, self.val_data, callbacks=callbacks, run_dir=run_dir)
        last = trainer.fit(resume=resume)
        return TrainResult.from_trainer(trainer, last)

    # ------------------------------------------------------------------------------------------ trained runs
    @classmethod
    def load_model(cls, run_dir: str | os.PathLike, device: str = "cpu") -> tuple[MLM, MLMCodec, MLMRunConfig]:
        """The trained model (best weights, eval mode), its codec and its run config."""
        from lmlab.trainer import resolve_device

        saved = checkpoint.load_config(run_dir, cls.model_type)
        run = saved_run_config(run_dir, saved)
        codec = MLMCodec.load(run_dir)
        check_codec_fits(run_dir, codec.vocab_size, run.model.vocab_size)
        model = MLM(run.model)
        checkpoint.load_weights(Path(run_dir) / checkpoint.WEIGHTS_FILE, model)
        model.to(resolve_device(device)).eval()
        return model, codec, run

    @classmethod
    def load(cls, run_dir: str | os.PathLike, device: str = "cpu"):
        from lmlab.pipelines.mlm import FillMask

        model, codec, _ = cls.load_model(run_dir, device)
        return FillMask(model, codec, Path(run_dir))

    @classmethod
    def evaluate(
        cls, run_dir: str | os.PathLike, data: str | os.PathLike, device: str = "cpu", max_tokens: int = 0,
        seed: int = EVAL_MASK_SEED, batch_size: int | None = None, encoding: str | None = None,
    ) -> dict[str, float]:
        """Masked-token loss (nats), perplexity and accuracy over the chosen positions of ``data``, masked with a
        generator seeded with ``seed`` (the same masks every time), over its first ``max_tokens`` tokens;
        ``encoding``: the file's (default: the run's data.encoding)."""
        import tempfile

        model, codec, run = cls.load_model(run_dir, device)
        segment = segmenter_fn(run.data.segmenter) if run.data.whole_word else None
        dev = next(model.parameters()).device
        total = correct = 0.0
        count = 0
        with tempfile.TemporaryDirectory() as tmp:
            tokens, starts = write_mlm_tokens(iter_text(data, encoding or run.data.encoding), codec, Path(tmp) / "eval.bin", segment,
                                             max_tokens=max_tokens)
            check_stream(tokens, 3, f"evaluation text {data}")
            blocks = SequentialMaskedBlocks(
                tokens, starts, run.model.block_size, batch_size or run.data.eval_batch_size,
                Masking.from_config(run.data, codec), codec.cls_id, codec.sep_id, codec.pad_id, seed=seed,
                max_tokens=max_tokens)
            with torch.no_grad():
                for batch in blocks:
                    out = model.loss({k: v.to(dev) for k, v in batch.items()})
                    total += float(out["loss"]) * out["n"]
                    correct += float(out["accuracy"]) * out["n"]
                    count += out["n"]
            n_tokens = int(len(tokens) if not max_tokens else min(len(tokens), max_tokens))
            del tokens, starts
        loss = total / max(count, 1)
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "accuracy": correct / max(count, 1),
                "masked_tokens": count, "tokens": n_tokens, "seed": seed}

    # ------------------------------------------------------------------------------------ transfer learning
    @classmethod
    def pretrained_body(cls, run_dir: str | os.PathLike, device: str = "cpu") -> PretrainedBody:
        """The encoder with its trained weights; pooling "mean" (see :meth:`body_from_config`), or "first" (the
        ``[CLS]`` state) for a BERT (imported, or continued from an import: the model has segment embeddings),
        whose ``[CLS]`` was trained by next-sentence prediction and is what BERT's classifiers read."""
        model, codec, run = cls.load_model(run_dir, device)
        model.train()
        body = cls._body(model, codec, config_to_dict(run.model))
        if run.model.type_vocab_size > 0:
            body.pooling = "first"
        return body

    @classmethod
    def body_from_config(cls, model_config: dict[str, Any], tokenizer_files: dict[str, Any]) -> PretrainedBody:
        """The same encoder, no weights. Default pooling is the *mean* of the real positions, not ``[CLS]``:
        BERT's ``[CLS]`` state is trained by next-sentence prediction, which this model does not have, so its
        ``[CLS]`` carries no sentence-level training signal; mean pooling of an MLM's states is the better
        sentence vector without it (Reimers & Gurevych 2019)."""
        model = MLM(config_from_dict(MLMConfig, dict(model_config), where="model config"))
        return cls._body(model, MLMCodec.from_files(tokenizer_files), dict(model_config))

    @staticmethod
    def _body(model: MLM, codec: MLMCodec, model_config: dict[str, Any]) -> PretrainedBody:
        return PretrainedBody(
            family="mlm", model=model, model_config=model_config, tokenizer_files=codec.files(),
            encode=codec.encode, pad_id=codec.pad_id, max_len=model.config.block_size, pooling="mean",
            special_ids=codec.special_ids(),
        )
