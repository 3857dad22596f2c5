"""The text-classification recipe: labelled text -> tokenizer + :class:`TextClassifier` -> a run directory.

Inputs (keyword arguments of the recipe, as ``lmlab classify train`` passes them): ``data`` (labelled file),
``val`` (optional labelled file; otherwise ``data.val_split`` is held out, seeded), ``reader_options`` (format,
columns, encoding) and ``pretrained_vectors`` (word vectors for the embedding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from lmlab import checkpoint
from lmlab.config import TrainConfig
from lmlab.data.classification import ClassifyDataConfig, TextEncoder
from lmlab.errors import ConfigError
from lmlab.models.classifier import ClassifierConfig, TextClassifier
from lmlab.recipes.base import Recipe, TrainResult, split_validation


@dataclass
class ClassifyRunConfig:
    """The whole config of a classification run: ``model``, ``data`` and ``train`` sections."""

    model: ClassifierConfig = field(default_factory=ClassifierConfig)
    data: ClassifyDataConfig = field(default_factory=ClassifyDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


class ClassifyRecipe(Recipe):
    family = "classify"
    model_type = "classifier"
    run_config = ClassifyRunConfig
    default_preset = "bilstm"
    resume_ignore: ClassVar[dict[str, Any]] = {"model": {"vocab_size", "num_classes"}, "data": {"segmenter", "user_dict"}}

    def prepare(self, saved: dict | None, run_dir: Path) -> None:
        from lmlab.data.classification import ClassifyDataset, collate
        from lmlab.data.loader import EpochLoader
        from lmlab.data.readers import load_examples

        run = self.config
        data, val = self.inputs["data"], self.inputs.get("val")
        options = dict(self.inputs.get("reader_options") or {})
        train_examples = load_examples(data, **options)
        if val:
            val_examples = load_examples(val, min_classes=1, **options)
        else:
            train_examples, val_examples = split_validation(train_examples, run.data.val_split, run.train.seed)
        if saved is not None:
            self.labels = saved["labels"]
            tokenizer = checkpoint.read_json(run_dir / "tokenizer.json", "tokenizer.json")
            self.encoder = TextEncoder.from_dict(tokenizer, run.data)
        else:
            self.labels = sorted({ex.label for ex in train_examples})
            self.encoder = TextEncoder(run.data).fit([ex.text for ex in train_examples], self.log)
        run.model.vocab_size = self.encoder.vocab_size
        run.model.num_classes = len(self.labels)
        train_ds = ClassifyDataset.build(train_examples, self.encoder, self.labels, source=str(data))
        val_ds = (
            ClassifyDataset.build(val_examples, self.encoder, self.labels, source=str(val or data))
            if val_examples
            else None
        )
        by_len = (lambda item: len(item[0])) if run.model.arch == "bilstm" else None
        self.train_data = EpochLoader(
            train_ds, run.train.batch_size, shuffle=True, seed=run.train.seed, collate_fn=collate, sort_key=by_len
        )
        self.val_data = (
            EpochLoader(val_ds, max(run.train.batch_size, 64), shuffle=False, collate_fn=collate, sort_key=by_len)
            if val_ds
            else None
        )
        self.resumed = saved is not None

    def build_model(self) -> TextClassifier:
        model = TextClassifier(self.config.model)
        self.notes: list[str] = []
        vectors = self.inputs.get("pretrained_vectors")
        if vectors and not self.resumed:
            self.notes.append(self._load_pretrained(model, vectors))
            self.log(self.notes[-1])
        return model

    def _load_pretrained(self, model: TextClassifier, path: str) -> str:
        from lmlab.data.vocab import DEFAULT_SPECIALS
        from lmlab.vectors import load_vectors

        run = self.config
        kv = load_vectors(path)
        if kv.vector_size != run.model.embed_dim:
            raise ConfigError(
                f"{path}: vectors have dimension {kv.vector_size} but model.embed_dim is "
                f"{run.model.embed_dim}; add the override model.embed_dim={kv.vector_size}"
            )
        itos = self.encoder.itos()
        table = torch.zeros(run.model.vocab_size, run.model.embed_dim)
        found = torch.zeros(run.model.vocab_size, dtype=torch.bool)
        for i, word in enumerate(itos):
            if word in kv:
                table[i] = torch.as_tensor(kv[word])
                found[i] = True
        model.load_pretrained(table, found)
        specials = {*DEFAULT_SPECIALS, run.data.oov_token}
        words = [i for i, w in enumerate(itos) if w not in specials]
        return f"pretrained vectors: {int(found[words].sum())} of {len(words)} vocabulary words found in {path}"

    def config_extras(self) -> dict[str, Any]:
        return {"labels": self.labels, "pretrained_vectors": self.inputs.get("pretrained_vectors")}

    def save_artifacts(self, run_dir: Path) -> None:
        super().save_artifacts(run_dir)
        checkpoint.atomic_write_json(run_dir / "tokenizer.json", self.encoder.to_dict())

    def fit(self, run_dir: Path, resume: bool, callbacks) -> TrainResult:
        from lmlab.trainer import Trainer

        n_val = len(self.val_data.dataset) if self.val_data else 0
        self.log(
            f"classify: {len(self.train_data.dataset)} train / {n_val} val examples, "
            f"{len(self.labels)} classes, vocab {self.encoder.vocab_size}, "
            f"{sum(p.numel() for p in self.model.parameters() if p.requires_grad):,} trainable parameters"
        )
        trainer = Trainer(self.config.train, self.model, self.train_data, self.val_data, run_dir=run_dir,
                          callbacks=callbacks)
        last = trainer.fit(resume=resume)
        return TrainResult.from_trainer(trainer, last, self.notes)

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu"):
        from lmlab.pipelines import Classifier

        return Classifier.from_run_dir(run_dir, device)

    @classmethod
    def evaluate(cls, run_dir: str | Path, data: Any, **reader_options: Any) -> dict[str, Any]:
        """Accuracy, macro P/R/F1 and the confusion matrix of ``run_dir`` on the labelled file ``data``."""
        from lmlab.data.readers import load_examples

        examples = load_examples(data, min_classes=1, **reader_options)
        return cls.load(run_dir).evaluate(examples)
