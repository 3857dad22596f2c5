"""The RNN language-model recipe: text -> codec + :class:`RNNLM` trained with truncated BPTT -> a run directory.

Inputs (keyword arguments of the recipe, as ``lmlab lm train`` passes them): ``data`` (the training text) and
``val`` (optional validation text; otherwise the last ``data.val_fraction`` of the training text is held out).

A run directory holds config.json (``model_type: rnn_lm``), tokenizer.json, vocab.json (not for BPE),
model.safetensors, metrics.jsonl and checkpoints/ (whose resume state includes the hidden state carried
between batches, so a resumed run continues exactly).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from lmlab import checkpoint
from lmlab.config import TrainConfig, config_from_dict, config_to_dict
from lmlab.data.lm import BPTTBatches, LMCodec, LMDataConfig, chars_per_token, read_text, split_tail
from lmlab.models.rnn_lm import RNNLM, RNNLMConfig
from lmlab.recipes.base import (
    PretrainedBody,
    Recipe,
    TrainResult,
    init_from_config,
    read_tokenizer_files,
    tokenizer_files_dir,
)


@dataclass
class LMRunConfig:
    """The whole config of a language-model run: ``model``, ``data`` and ``train`` sections."""

    model: RNNLMConfig = field(default_factory=RNNLMConfig)
    data: LMDataConfig = field(default_factory=LMDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def saved_run_config(run_dir: Path, saved: dict) -> LMRunConfig:
    sections = checkpoint.saved_sections(run_dir, saved)
    return config_from_dict(LMRunConfig, sections, where=f"{run_dir / checkpoint.CONFIG_FILE}")


def _kind_of(tokenizer: Any) -> str:
    """The LM tokenizer name (``data.tokenizer``) of a tokenizer object."""
    from lmlab.data.tokenizers import _TOKENIZER_TYPES

    return next((k for k, t in _TOKENIZER_TYPES.items() if type(tokenizer) is t), "whitespace")


class LMRecipe(Recipe):
    family = "lm"
    model_type = "rnn_lm"
    run_config = LMRunConfig
    default_preset = "ptb-recommended"
    resume_ignore: ClassVar[dict[str, Any]] = {"model": {"vocab_size", "impl"}, "data": {"segmenter", "user_dict"}}

    #: the data keys that decide the tokenizer (continued pretraining keeps the pretrained run's)
    TOKENIZER_KEYS = ("tokenizer", "lowercase", "vocab_size", "min_freq", "bpe_pre_tokenizer", "segmenter", "user_dict")

    @classmethod
    def from_preset(cls, preset: str | None = None, overrides=(), init_from: str | None = None, **inputs: Any):
        """With ``init_from`` (an RNN LM run): continued pretraining from its weights, with its architecture and
        its tokenizer (explicit model/tokenizer options that contradict them are a ConfigError)."""
        if init_from is None:
            return super().from_preset(preset, overrides, **inputs)
        config = init_from_config(cls, preset or cls.default_preset, overrides, init_from, cls.TOKENIZER_KEYS)
        return cls(config, init_from=str(init_from), **inputs)

    def prepare(self, saved: dict | None, run_dir: Path) -> None:
        run = self.config
        self.resumed = saved is not None
        source = self.inputs.get("init_from")
        data, val = self.inputs["data"], self.inputs.get("val")
        text = read_text(data, run.data)
        if val is not None:
            val_text = read_text(val, run.data)
        elif run.data.val_fraction > 0:
            text, val_text = split_tail(text, run.data.val_fraction, run.data.tokenizer in ("whitespace", "word"))
        else:
            val_text = None
        if saved is not None:
            self.codec = LMCodec.load(run_dir, run.data.tokenizer)
        elif source:
            self.codec = LMCodec.load(source, run.data.tokenizer)
        else:
            self.codec = LMCodec.fit(text, run.data, self.log)
        run.model.vocab_size = self.codec.vocab_size
        train_ids, self.train_unk = self.codec.encode_text(text)
        self.train_tokens = train_ids.numel()
        self.train_data = BPTTBatches(
            train_ids, run.train.batch_size, run.data.bptt, "train", chars_per_token(text, train_ids.numel())
        )
        self.val_data = None
        if val_text is not None:
            val_ids, val_unk = self.codec.encode_text(val_text)
            if val_unk:
                self.log(f"lm: {val_unk} validation tokens are not in the vocabulary and count as <unk>")
            self.val_data = BPTTBatches(
                val_ids, run.data.eval_batch_size, run.data.bptt, "validation",
                chars_per_token(val_text, val_ids.numel()),
            )

    def build_model(self) -> RNNLM:
        model = RNNLM(self.config.model)
        source = self.inputs.get("init_from")
        if source and not self.resumed:  # continued pretraining starts from the pretrained weights exactly
            checkpoint.load_weights(Path(source) / checkpoint.WEIGHTS_FILE, model)
            self.log(f"lm: starting from the weights of {source}")
        return model

    def config_extras(self) -> dict[str, Any]:
        return {"init_from": str(self.inputs["init_from"])} if self.inputs.get("init_from") else {}

    def save_artifacts(self, run_dir: Path) -> None:
        super().save_artifacts(run_dir)
        self.codec.save(run_dir)

    def fit(self, run_dir: Path, resume: bool, callbacks) -> TrainResult:
        from lmlab.trainer import Trainer

        run, train_data, val_data = self.config, self.train_data, self.val_data
        params = sum(p.numel() for p in self.model.parameters())
        self.log(
            f"lm: {self.train_tokens:,} train tokens ({self.train_unk:,} <unk>) / "
            f"{val_data.num_tokens if val_data else 0:,} val tokens, {run.data.tokenizer} vocab "
            f"{self.codec.vocab_size:,}, {run.model.num_layers}x{run.model.hidden_dim} {run.model.cell}, "
            f"{params:,} parameters, {len(train_data)} batches of {run.train.batch_size}x{run.data.bptt} per epoch"
        )
        trainer = Trainer(run.train, self.model, train_data, val_data, callbacks=callbacks, run_dir=run_dir)
        last = trainer.fit(resume=resume)
        return TrainResult.from_trainer(trainer, last)

    # ------------------------------------------------------------------------------------ trained runs
    @classmethod
    def load_model(cls, run_dir: str | os.PathLike, device: str = "cpu") -> tuple[RNNLM, LMCodec, LMRunConfig]:
        """The trained model (best weights, eval mode), its codec and its run config."""
        from lmlab.trainer import resolve_device

        run_dir = Path(run_dir)
        run = saved_run_config(run_dir, checkpoint.load_config(run_dir, cls.model_type))
        codec = LMCodec.load(run_dir, run.data.tokenizer)
        model = RNNLM(run.model)
        checkpoint.load_weights(run_dir / checkpoint.WEIGHTS_FILE, model)
        model.to(resolve_device(device)).eval()
        return model, codec, run

    @classmethod
    def load_for_generation(cls, run_dir: str | os.PathLike, device: str = "cpu") -> tuple[RNNLM, LMCodec]:
        """The hook :class:`lmlab.pipelines.Generator` calls: the trained model (eval mode) and its codec."""
        model, codec, _ = cls.load_model(run_dir, device)
        return model, codec

    @classmethod
    def load(cls, run_dir: str | os.PathLike, device: str = "cpu"):
        from lmlab.pipelines import Generator

        model, codec = cls.load_for_generation(run_dir, device)
        return Generator(model, codec, cls.model_type, Path(run_dir))

    # ------------------------------------------------------------------------------------- transfer learning
    @classmethod
    def pretrained_body(cls, run_dir: str | os.PathLike, device: str = "cpu") -> PretrainedBody:
        """The trained RNN LM (best weights) as a classifier body (ULMFiT): the top layer's states, concat
        pooling, no length limit of its own, the run's own codec (word level: each line ends in ``<eos>``)."""
        model, codec, run = cls.load_model(run_dir, device)
        files = read_tokenizer_files(run_dir)
        return cls._body(model, codec, config_to_dict(run.model), files)

    @classmethod
    def body_from_config(cls, model_config: dict[str, Any], tokenizer_files: dict[str, Any]) -> PretrainedBody:
        model_cfg = config_from_dict(RNNLMConfig, model_config, where="config.json: body model_config")
        with tokenizer_files_dir(tokenizer_files) as folder:
            tok, _ = LMCodec.load_split(folder)
            codec = LMCodec.load(folder, _kind_of(tok))
        return cls._body(RNNLM(model_cfg), codec, model_config, tokenizer_files)

    @classmethod
    def _body(cls, model: RNNLM, codec: LMCodec, model_config: dict, files: dict) -> PretrainedBody:
        # no special ids around a text: the codec already ends every line with <eos>, as in pretraining
        return PretrainedBody(
            family=cls.family, model=model, model_config=dict(model_config), tokenizer_files=files,
            encode=codec.encode, pad_id=codec.pad_id or 0, max_len=None, pooling="concat",
        )

    @classmethod
    def evaluate(
        cls, run_dir: str | os.PathLike, data: str | os.PathLike, batch_size: int | None = None, device: str = "cpu",
        encoding: str | None = None,
    ) -> dict[str, Any]:
        """Loss (nats/token), perplexity and per-character numbers of a trained run on a text file (``encoding``:
        the file's; default: the run's data.encoding)."""
        import dataclasses

        model, codec, run = cls.load_model(run_dir, device)
        text = read_text(data, dataclasses.replace(run.data, encoding=encoding) if encoding else run.data)
        ids, unk = codec.encode_text(text)
        if unk:
            warnings.warn(f"{data}: {unk} tokens are not in the vocabulary and count as <unk>", UserWarning, stacklevel=2)
        batches = BPTTBatches(
            ids, batch_size or run.data.eval_batch_size, run.data.bptt, str(data), chars_per_token(text, ids.numel())
        )
        result = model.evaluate(batches)
        result["oov_tokens"] = float(unk)
        result["characters"] = float(len(text))
        return result
