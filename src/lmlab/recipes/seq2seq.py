"""The sequence-to-sequence recipe: parallel text -> source/target codecs + :class:`Seq2Seq` -> a run directory::

    config.json  model.safetensors  src_codec.json  tgt_codec.json  metrics.jsonl  checkpoints/last/

Inputs (keyword arguments of the recipe, as ``lmlab seq2seq train`` passes them): ``src`` (two line-aligned files
with ``tgt``, a TSV/JSONL file of pairs, or a list of ``(source, target)`` pairs), ``tgt``, ``val_src`` /
``val_tgt`` (validation pairs, the same ways), ``val_size`` (hold out this many training pairs, seeded),
``limit`` (use the first N training pairs), ``reader_options`` (``reverse``, ``src_field``, ``tgt_field``,
``encoding``) and ``trained_on`` (a description saved in config.json; by default the file names).

:meth:`Seq2SeqRecipe.load` returns a :class:`lmlab.pipelines.translate.Translator`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from lmlab import checkpoint
from lmlab.config import TrainConfig, config_from_dict
from lmlab.data.parallel import (
    Pair,
    ParallelDataConfig,
    ParallelDataset,
    build_codecs,
    load_pairs,
    load_text_codec,
    make_loader,
    read_lines,
)
from lmlab.errors import CheckpointError, ConfigError, DataError
from lmlab.models.seq2seq import Seq2Seq, Seq2SeqConfig
from lmlab.pipelines.translate import Translator, check_beam
from lmlab.recipes.base import Recipe, TrainResult, split_validation

SRC_CODEC_FILE = "src_codec.json"
TGT_CODEC_FILE = "tgt_codec.json"


@dataclass
class DecodeConfig:
    """Default decoding settings saved with the run (each can be overridden per call)."""

    beam_size: int = 5
    #: GNMT length penalty alpha (0: raw log-probability; ~0.6 favours slightly longer outputs)
    length_penalty: float = 0.6
    #: the output may have at most max_len_a * source_tokens + max_len_b tokens (capped by model.max_len)
    max_len_a: float = 1.5
    max_len_b: int = 10
    batch_size: int = 64

    def validate(self) -> None:
        check_beam(self.beam_size, 1)
        if self.length_penalty < 0:
            raise ConfigError(f"decode.length_penalty must be >= 0, got {self.length_penalty}")
        if self.max_len_a < 0 or self.max_len_b < 1:
            raise ConfigError("decode.max_len_a must be >= 0 and decode.max_len_b >= 1")
        if self.batch_size < 1:
            raise ConfigError(f"decode.batch_size must be >= 1, got {self.batch_size}")


@dataclass
class Seq2SeqRunConfig:
    """A whole seq2seq run: ``data``, ``model``, ``train`` and ``decode`` sections (see lmlab/configs/seq2seq/)."""

    data: ParallelDataConfig = field(default_factory=ParallelDataConfig)
    model: Seq2SeqConfig = field(default_factory=Seq2SeqConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


SECTIONS = ("data", "model", "train", "decode")


def saved_run_config(run_dir: Path, saved: dict) -> Seq2SeqRunConfig:
    try:
        return config_from_dict(
            Seq2SeqRunConfig, checkpoint.saved_sections(run_dir, saved, SECTIONS), where=f"{run_dir}/config.json"
        )
    except ConfigError as err:
        raise CheckpointError(str(err)) from None


def hold_out(pairs: Sequence[Pair], n: int, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(kept, held out): ``n`` pairs drawn by :func:`split_validation`, both parts in their original order."""
    if not 0 < n < len(pairs):
        raise ConfigError(f"--val-size must be between 1 and {len(pairs) - 1} (the pairs read), got {n}")
    kept, held = split_validation(range(len(pairs)), n / len(pairs), seed)
    return [pairs[i] for i in sorted(kept)], [pairs[i] for i in sorted(held)]


def read_eval_data(
    src: str | Path, ref: str | Path | None = None, limit: int = 0, **reader_options: Any
) -> tuple[list[str], list[str]]:
    """(sources, references): one sentence per line of ``src`` and ``ref``, or the pairs of ``src`` without ``ref``."""
    encoding = reader_options.get("encoding", "utf-8")
    if ref is None:
        pairs = load_pairs(src, None, **reader_options)
        sources, refs = [s for s, _ in pairs], [t for _, t in pairs]
    else:
        sources, refs = read_lines(src, encoding), read_lines(ref, encoding)
        if len(sources) != len(refs):
            raise DataError(
                f"{src} has {len(sources)} lines but the reference file {ref} has {len(refs)}; "
                "give one reference per source line"
            )
    if limit:
        sources, refs = sources[:limit], refs[:limit]
    return sources, refs


def _is_path(value: Any) -> bool:
    return isinstance(value, str | os.PathLike)


class Seq2SeqRecipe(Recipe):
    family = "seq2seq"
    model_type = "seq2seq"
    run_config = Seq2SeqRunConfig
    default_preset = "gru-bahdanau"
    resume_ignore: ClassVar[dict[str, Any]] = {"decode": "*", "model": {"src_vocab_size", "tgt_vocab_size"}, "data": {"segmenter", "user_dict"}}

    def __init__(self, config: Seq2SeqRunConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        if self.inputs.get("val_tgt") and not self.inputs.get("val_src"):
            raise ConfigError("--val-tgt needs --val-src")
        if self.inputs.get("val_size") and self.inputs.get("val_src") is not None:
            raise ConfigError("give either --val-src or --val-size, not both")
        # the model accepts the longest training pair (+ <bos>/<eos>); done here so that a resumed run compares
        # the same value as the one saved
        longest = max(config.data.max_src_len, config.data.max_tgt_len) + 1
        config.model.max_len = max(config.model.max_len, longest)

    def input_paths(self) -> list[str]:
        names = ("src", "tgt", "val_src", "val_tgt")
        return [str(self.inputs[k]) for k in names if _is_path(self.inputs.get(k))]

    # ------------------------------------------------------------------------------------------ steps
    def _pairs(self, src: Any, tgt: Any) -> list[Pair]:
        if not _is_path(src):
            return list(src)
        options = {"reverse": False, "src_field": None, "tgt_field": None, "encoding": "utf-8"}
        options.update(self.inputs.get("reader_options") or {})
        return load_pairs(src, tgt, on_empty=self.config.data.on_empty, **options)

    def _described(self, n_pairs: int) -> str:
        if "trained_on" in self.inputs:
            return str(self.inputs["trained_on"] or "")
        src, tgt = self.inputs["src"], self.inputs.get("tgt")
        if not _is_path(src):
            return ""
        reverse = (self.inputs.get("reader_options") or {}).get("reverse")
        return f"{src}" + (f" -> {tgt}" if tgt else "") + (" (reversed)" if reverse else "") + f", {n_pairs} pairs"

    def prepare(self, saved: dict | None, run_dir: Path) -> None:
        run = self.config
        pairs = self._pairs(self.inputs["src"], self.inputs.get("tgt"))
        limit = self.inputs.get("limit") or 0
        pairs = pairs[:limit] if limit else pairs
        val_src = self.inputs.get("val_src")
        val_pairs = self._pairs(val_src, self.inputs.get("val_tgt")) if val_src is not None else None
        if self.inputs.get("val_size"):
            pairs, val_pairs = hold_out(pairs, self.inputs["val_size"], run.train.seed)
        if not pairs:
            raise DataError("no training pairs")
        self.trained_on = self._described(len(pairs))
        if saved is not None:
            self.src_codec = load_text_codec(run_dir / SRC_CODEC_FILE)
            self.tgt_codec = load_text_codec(run_dir / TGT_CODEC_FILE)
        else:
            self.src_codec, self.tgt_codec = build_codecs(pairs, run.data, self.log)
        self.train_set = ParallelDataset.encode(
            pairs, self.src_codec, self.tgt_codec, run.data.max_src_len, run.data.max_tgt_len
        )
        self.log(
            f"{len(self.train_set)} training pairs ({self.train_set.dropped} dropped by the length filter "
            f"max_src_len={run.data.max_src_len}, max_tgt_len={run.data.max_tgt_len}); "
            f"vocabularies: source {self.src_codec.vocab_size}, target {self.tgt_codec.vocab_size} ({run.data.tokenizer})"
        )
        self.train_data = make_loader(self.train_set, run.train.batch_size, shuffle=True, seed=run.train.seed)
        self.val_data = None
        if val_pairs:
            val_set = ParallelDataset.encode(
                val_pairs, self.src_codec, self.tgt_codec, run.model.max_len, run.model.max_len
            )
            if len(val_set):
                self.val_data = make_loader(val_set, run.train.batch_size, shuffle=False)
        run.model.src_vocab_size = self.src_codec.vocab_size
        run.model.tgt_vocab_size = self.tgt_codec.vocab_size

    def build_model(self) -> Seq2Seq:
        return Seq2Seq(self.config.model)

    def config_extras(self) -> dict[str, Any]:
        return {"trained_on": self.trained_on}

    def save_artifacts(self, run_dir: Path) -> None:
        super().save_artifacts(run_dir)
        self.src_codec.save(run_dir / SRC_CODEC_FILE)
        self.tgt_codec.save(run_dir / TGT_CODEC_FILE)

    def fit(self, run_dir: Path, resume: bool, callbacks) -> TrainResult:
        from lmlab.trainer import Trainer

        self.log(f"model: {self.config.model.arch} ({self.model.num_parameters():,} parameters)")
        trainer = Trainer(self.config.train, self.model, self.train_data, self.val_data, callbacks=callbacks,
                          run_dir=run_dir)
        last = trainer.fit(resume=resume)
        speeds = []
        if (run_dir / checkpoint.METRICS_FILE).is_file():
            speeds = [r["tokens_per_s"] for r in checkpoint.read_metrics(run_dir) if "tokens_per_s" in r]
        #: facts about the run the benchmark and the tour report
        self.stats = {
            "train_pairs": len(self.train_set),
            "dropped": self.train_set.dropped,
            "num_parameters": self.model.num_parameters(),
            "epoch": trainer.state.epoch,
            #: mean of the logged training throughputs (target tokens per second)
            "tokens_per_s": sum(speeds) / len(speeds) if speeds else last.get("tokens_per_s"),
        }
        return TrainResult.from_trainer(trainer, last)

    # ------------------------------------------------------------------------------------------ use
    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu") -> Translator:
        run_dir = Path(run_dir)
        saved = checkpoint.load_config(run_dir, cls.model_type)
        run = saved_run_config(run_dir, saved)
        src_codec = load_text_codec(run_dir / SRC_CODEC_FILE)
        tgt_codec = load_text_codec(run_dir / TGT_CODEC_FILE)
        model = Seq2Seq(run.model)
        checkpoint.load_weights(run_dir / checkpoint.WEIGHTS_FILE, model)
        return Translator(model, src_codec, tgt_codec, run, run_dir, saved.get("trained_on", ""), device)

    @classmethod
    def evaluate(
        cls,
        run_dir: str | Path,
        data: Any,
        ref: str | Path | None = None,
        *,
        limit: int = 0,
        beam_size: int = 5,
        length_penalty: float | None = None,
        batch_size: int | None = None,
        device: str = "cpu",
        **reader_options: Any,
    ) -> dict[str, Any]:
        """sacreBLEU, lowercased BLEU, chrF (with signatures), speed and the hypotheses of ``run_dir`` on ``data``:
        a source file with the line-aligned references ``ref``, a TSV/JSONL file of pairs, or a list of
        ``(source, reference)`` pairs."""
        check_beam(beam_size)
        if _is_path(data):
            sources, refs = read_eval_data(data, ref, limit, **reader_options)
        else:
            pairs = list(data)[:limit] if limit else list(data)
            sources, refs = [s for s, _ in pairs], [r for _, r in pairs]
        pipe = cls.load(run_dir, device)
        return pipe.evaluate(sources, refs, beam_size=beam_size, length_penalty=length_penalty, batch_size=batch_size)
