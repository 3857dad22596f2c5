"""The text-classification recipe: labelled text -> tokenizer + :class:`TextClassifier` -> a run directory.

Inputs (keyword arguments of the recipe, as ``lmlab classify train`` passes them): ``data`` (labelled file),
``val`` (optional labelled file; otherwise ``data.val_split`` is held out, seeded), ``reader_options`` (format,
columns, encoding), ``pretrained_vectors`` (word vectors for the embedding) and ``init_from`` (a pretrained run
whose body the classifier fine-tunes, see below).

Fine-tuning (``init_from``): the source run's recipe (found through :mod:`lmlab.registry`) lends its body
(:meth:`lmlab.recipes.base.Recipe.pretrained_body`): the weights, the tokenizer files and the encode function.
The classifier is a :class:`lmlab.models.finetune.BodyClassifier` configured by the ``finetune`` section; the
run directory holds the body's tokenizer files (instead of a fitted text encoder) and a ``body`` record (family,
model_type, model_config, pooling, max_tokens), from which :meth:`ClassifyRecipe.load` rebuilds the same model
and the same tokenization.

``model.arch=sparse-lr`` (presets ``tfidf``, ``nblr``) is not trained by the Trainer: :meth:`ClassifyRecipe.fit`
counts the n-gram features of every training text once, sets the feature weights (IDF / NB ratio) from them and
fits the logistic regression to its optimum with full-batch L-BFGS (:meth:`TextClassifier.fit_lbfgs`): there are
no epochs, batches or learning rates. It writes model.safetensors and one ``train`` and one ``val`` record to
metrics.jsonl; it is deterministic and takes seconds, so ``--resume`` simply fits again.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from lmlab import checkpoint
from lmlab.config import TrainConfig, config_from_dict, config_to_dict
from lmlab.data.classification import ClassifyDataConfig, TextEncoder
from lmlab.errors import CheckpointError, ConfigError
from lmlab.models.classifier import ClassifierConfig, TextClassifier, char_ngram_table
from lmlab.models.finetune import BodyClassifier, FinetuneConfig
from lmlab.recipes.base import PretrainedBody, Recipe, TrainResult, read_tokenizer_files, split_validation

#: the preset ``--init-from`` starts from when no --preset is given
FINETUNE_PRESET = "finetune"
#: ... and when the run is a real pretrained checkpoint (``lmlab gpt import`` / ``lmlab mlm import``)
FINETUNE_PRETRAINED_PRESET = "finetune-pretrained"
#: the most tokens per text an RNN body reads when finetune.max_tokens is 0 (an RNN has no context limit)
RNN_MAX_TOKENS = 512


@dataclass
class ClassifyRunConfig:
    """The whole config of a classification run: ``model``, ``data``, ``train`` and ``finetune`` sections
    (``finetune`` applies only to runs started with ``--init-from``)."""

    model: ClassifierConfig = field(default_factory=ClassifierConfig)
    data: ClassifyDataConfig = field(default_factory=ClassifyDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


def imported_from(run_dir: str | Path) -> str | None:
    """The Hugging Face ``model_type`` a run was imported from (its config.json's ``imported`` section), or None
    for a run trained here; an unreadable run is None too (:func:`load_body` reports it)."""
    try:
        saved = checkpoint.read_json(Path(run_dir) / checkpoint.CONFIG_FILE, "config.json")
    except CheckpointError:
        return None
    imported = saved.get("imported") if isinstance(saved, dict) else None
    return str(imported.get("model_type") or "Hugging Face") if isinstance(imported, dict) else None


class BodyEncoder:
    """Text -> ids for a fine-tuned classifier: the pretrained run's own ``encode``, then at most ``max_tokens``
    ids (``truncate``: keep the text's "tail" or "head"), framed by the body's ``cls`` / ``sep`` special ids when
    it has them (a masked LM's ``[CLS] text [SEP]``; GPT and RNN LM bodies have none); never empty (an empty
    text becomes ``[pad_id]``)."""

    def __init__(self, encode, max_tokens: int, truncate: str = "tail", pad_id: int = 0,
                 special_ids: dict[str, int] | None = None) -> None:
        self._encode = encode
        self.truncate = truncate
        self.pad_id = pad_id
        specials = special_ids or {}
        self.head = [specials["cls"]] if "cls" in specials else []
        self.tail = [specials["sep"]] if "sep" in specials else []
        self.max_tokens = max_tokens
        self._room = max(1, max_tokens - len(self.head) - len(self.tail))

    def encode(self, texts) -> list[list[int]]:
        rows = []
        for text in texts:
            ids = list(self._encode(text))
            if len(ids) > self._room:
                ids = ids[-self._room :] if self.truncate == "tail" else ids[: self._room]
            ids = self.head + ids + self.tail
            rows.append(ids or [self.pad_id])
        return rows


def _check_same_body(run_dir: Path, source: str, given: str | Path, record: dict) -> None:
    """On --resume, ``--init-from given`` must be the run the classifier was started from (its body is rebuilt
    from the saved record, so another run would be silently ignored): a moved or deleted copy passes, a run with
    another model (type or architecture) is refused."""
    given = Path(given)
    if given.resolve() == Path(source).resolve() or not (given / checkpoint.CONFIG_FILE).is_file():
        return
    try:
        other = checkpoint.load_config(given)
    except CheckpointError:
        other = {}
    mine, theirs = record.get("model_config") or {}, other.get("model") if isinstance(other.get("model"), dict) else {}
    # keys both have (a run saved by an older lmlab may lack newer keys that the record holds with their defaults)
    if other.get("model_type") != record.get("model_type") or any(mine[k] != theirs[k] for k in set(mine) & set(theirs)):
        raise ConfigError(
            f"{run_dir} fine-tunes {source}, but --init-from {given} is another model; resume it with "
            f"--init-from {source}"
        )


def load_body(init_from: str | Path, device: str = "cpu") -> tuple[PretrainedBody, str]:
    """(the pretrained body of the run ``init_from``, its model_type): missing or corrupt runs and families that
    cannot be a body raise a one-line LmlabError naming ``--init-from``."""
    from lmlab import registry
    from lmlab.errors import CheckpointError, LmlabError

    src = Path(init_from)
    try:
        saved = checkpoint.load_config(src)
        model_type = saved["model_type"]
        return registry.recipe(model_type).pretrained_body(src, device), model_type
    except LmlabError as err:
        text = str(err)
        raise type(err)(text if text.startswith("--init-from") else f"--init-from {src}: {text}") from None
    except (OSError, ValueError, KeyError, RuntimeError) as err:  # e.g. a truncated model.safetensors
        raise CheckpointError(f"--init-from {src}: cannot read the pretrained run ({err}); re-train it") from None


class ClassifyRecipe(Recipe):
    family = "classify"
    model_type = "classifier"
    run_config = ClassifyRunConfig
    default_preset = "bilstm"
    resume_ignore: ClassVar[dict[str, Any]] = {"model": {"vocab_size", "num_classes", "char_table_size"},
                                               "data": {"segmenter", "user_dict"}}

    @classmethod
    def from_preset(cls, preset: str | None = None, overrides=(), init_from: str | None = None, **inputs: Any):
        """The recipe from a preset + overrides; with ``init_from`` (a pretrained gpt / lm / mlm run) the
        classifier fine-tunes that run's body, starting from the ``finetune`` preset when ``preset`` is None."""
        if init_from is None:
            return super().from_preset(preset, overrides, **inputs)
        imported = imported_from(init_from) if preset is None else None
        preset = preset or (FINETUNE_PRETRAINED_PRESET if imported else FINETUNE_PRESET)
        config = cls.resolve(preset, overrides)
        base = config_to_dict(cls.resolve(preset, ()).data)
        given = {k: v for k, v in config_to_dict(config.data).items() if base.get(k) != v and k != "val_split"}
        if given:
            key, value = next(iter(given.items()))
            raise ConfigError(
                f"data.{key}={value!r} contradicts --init-from {init_from}: the text is tokenized exactly as the "
                "pretrained run does; drop the data option(s) " + ", ".join(f"data.{k}" for k in given)
            )
        if inputs.get("pretrained_vectors"):
            raise ConfigError(
                f"--pretrained-vectors and --init-from {init_from} both initialise the classifier; use one of them"
            )
        recipe = cls(config, init_from=str(init_from), **inputs)
        if imported:
            recipe.log(f"classify: --init-from {init_from} is an imported {imported} checkpoint: preset {preset} "
                       f"(lr {config.train.lr:g}, layer_lr_decay {config.finetune.layer_lr_decay:g}; --preset "
                       f"{FINETUNE_PRESET} for ULMFiT's rates)")
        return recipe

    def check_resume(self, saved: dict, run_dir: Path) -> None:
        source = saved.get("init_from")
        if source and not self.inputs.get("init_from"):
            raise ConfigError(f"{run_dir} fine-tunes {source}: resume it with --init-from {source}")
        if self.inputs.get("init_from") and "body" not in saved:
            raise ConfigError(f"{run_dir} was not started with --init-from; resume it without --init-from")
        if source and "body" in saved:
            _check_same_body(run_dir, source, self.inputs["init_from"], saved["body"])
        if "body" in saved:  # a run saved before a finetune key existed goes on as it was trained
            written = saved.setdefault("finetune", {})
            for key, value in FinetuneConfig.LEGACY.items():
                if key not in written:
                    written[key] = value
                    setattr(self.config.finetune, key, value)
        super().check_resume(saved, run_dir)

    def prepare(self, saved: dict | None, run_dir: Path) -> None:
        from lmlab.data.classification import ClassifyDataset, collate
        from lmlab.data.loader import EpochLoader
        from lmlab.data.readers import load_examples

        run = self.config
        self.body: PretrainedBody | None = None
        if self.inputs.get("init_from"):
            # the body first: a bad --init-from is reported before any data is read
            self._prepare_body(saved, run_dir)
        data, val = self.inputs["data"], self.inputs.get("val")
        options = dict(self.inputs.get("reader_options") or {})
        train_examples = load_examples(data, **options)
        if val:
            val_examples = load_examples(val, min_classes=1, **options)
        else:
            fraction = run.data.val_split
            if self.body is not None:
                fraction = run.finetune.val_fraction(fraction, len(train_examples))
                if fraction != run.data.val_split:
                    self.log(f"finetune.min_val_examples={run.finetune.min_val_examples}: data.val_split="
                             f"{run.data.val_split:g} of {len(train_examples)} texts is too few to choose on; "
                             "training on all of them, keeping the last weights")
            train_examples, val_examples = split_validation(train_examples, fraction, run.train.seed)
        if self.body is not None:
            self.labels = saved["labels"] if saved is not None else sorted({ex.label for ex in train_examples})
            run.model.num_classes = len(self.labels)
        elif saved is not None:
            self.labels = saved["labels"]
            tokenizer = checkpoint.read_json(run_dir / "tokenizer.json", "tokenizer.json")
            self.encoder = TextEncoder.from_dict(tokenizer, run.data)
        else:
            self.labels = sorted({ex.label for ex in train_examples})
            self.encoder = TextEncoder(run.data).fit([ex.text for ex in train_examples], self.log)
        if self.body is None:
            run.model.vocab_size = self.encoder.vocab_size
            run.model.num_classes = len(self.labels)
        self.char_table = None
        if run.model.arch == "sparse-lr" and run.model.char_ngrams:
            from lmlab.data.vocab import DEFAULT_SPECIALS

            lo, hi = run.model.char_ngrams
            self.char_table = char_ngram_table(self.encoder.itos(), lo, hi, run.model.vocab_size,
                                               run.model.bigram_buckets, skip={*DEFAULT_SPECIALS, run.data.oov_token})
            run.model.char_table_size = int(self.char_table[1].numel())
        train_ds = ClassifyDataset.build(train_examples, self.encoder, self.labels, source=str(data))
        val_ds = (
            ClassifyDataset.build(val_examples, self.encoder, self.labels, source=str(val or data))
            if val_examples
            else None
        )
        by_len = (lambda item: len(item[0])) if run.model.arch == "bilstm" or self.body is not None else None
        self.train_data = EpochLoader(
            train_ds, run.train.batch_size, shuffle=True, seed=run.train.seed, collate_fn=collate, sort_key=by_len
        )
        self.val_data = (
            EpochLoader(val_ds, max(run.train.batch_size, 64), shuffle=False, collate_fn=collate, sort_key=by_len)
            if val_ds
            else None
        )
        self.resumed = saved is not None

    def _prepare_body(self, saved: dict | None, run_dir: Path) -> None:
        """The pretrained body (new run: from ``init_from`` with its weights; resume: rebuilt from the saved
        ``body`` record, the weights come from the checkpoint) and the encoder that feeds it."""
        from lmlab import registry

        ft = self.config.finetune
        if saved is None:
            self.body, self.body_type = load_body(self.inputs["init_from"])
        else:
            record = saved["body"]
            self.body_type = record["model_type"]
            files = read_tokenizer_files(run_dir, record["tokenizer_files"])
            self.body = registry.recipe(self.body_type).body_from_config(record["model_config"], files)
        body = self.body
        if body.max_len is not None and ft.max_tokens > body.max_len:
            raise ConfigError(
                f"finetune.max_tokens={ft.max_tokens} is larger than the context of the pretrained {body.family} "
                f"run {self.inputs['init_from']} ({body.max_len} tokens); set finetune.max_tokens <= {body.max_len}"
            )
        self.max_tokens = ft.max_tokens or body.max_len or RNN_MAX_TOKENS
        if saved is not None:  # the pooling the run was started with (a family default may have changed since)
            self.pooling = saved["body"]["pooling"]
        else:
            self.pooling = body.pooling if ft.head_pooling == "auto" else ft.head_pooling
        self.encoder = BodyEncoder(body.encode, self.max_tokens, ft.truncate, body.pad_id, body.special_ids)

    def build_model(self) -> TextClassifier | BodyClassifier:
        self.notes: list[str] = []
        if self.body is not None:
            model = BodyClassifier(self.body.model, self.config.finetune, len(self.labels), self.pooling)
            self.notes.append(
                f"fine-tuning the {self.body.family} run {self.inputs['init_from']}: {self.pooling} pooling, "
                f"at most {self.max_tokens} tokens per text ({self.config.finetune.truncate} kept), "
                f"{len(model.layer_groups())} layer groups"
            )
            self.log(self.notes[-1])
            return model
        model = TextClassifier(self.config.model)
        if self.char_table is not None:
            model.set_char_table(*self.char_table)
        vectors = self.inputs.get("pretrained_vectors")
        if vectors and self.config.model.arch == "sparse-lr":
            raise ConfigError("--pretrained-vectors needs an embedding; model.arch=sparse-lr has none")
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
        extras = {"labels": self.labels, "pretrained_vectors": self.inputs.get("pretrained_vectors")}
        if self.body is not None:
            extras["init_from"] = str(self.inputs["init_from"])
            extras["body"] = {
                "family": self.body.family,
                "model_type": self.body_type,
                "model_config": self.body.model_config,
                "tokenizer_files": sorted(self.body.tokenizer_files),
                "pooling": self.pooling,
                "max_tokens": self.max_tokens,
                "pad_id": self.body.pad_id,
            }
        return extras

    def save_artifacts(self, run_dir: Path) -> None:
        super().save_artifacts(run_dir)
        if self.body is not None:  # the pretrained run's own tokenizer files, as they are
            for name, content in self.body.tokenizer_files.items():
                checkpoint.atomic_write_json(run_dir / name, content)
            return
        checkpoint.atomic_write_json(run_dir / "tokenizer.json", self.encoder.to_dict())

    def fit(self, run_dir: Path, resume: bool, callbacks) -> TrainResult:
        from lmlab.trainer import Trainer

        if self.body is None and self.config.model.arch == "sparse-lr":
            return self._fit_sparse_lr(run_dir)
        n_val = len(self.val_data.dataset) if self.val_data else 0
        vocab = self.body.model_config.get("vocab_size") if self.body is not None else self.encoder.vocab_size
        self.log(
            f"classify: {len(self.train_data.dataset)} train / {n_val} val examples, "
            f"{len(self.labels)} classes, vocab {vocab}, "
            f"{sum(p.numel() for p in self.model.parameters() if p.requires_grad):,} trainable parameters"
        )
        train = self.config.train
        if self.body is not None and not train.max_steps:
            train = self._step_aware(train)
        trainer = Trainer(train, self.model, self.train_data, self.val_data, run_dir=run_dir, callbacks=callbacks)
        last = trainer.fit(resume=resume)
        return TrainResult.from_trainer(trainer, last, self.notes)

    def _step_aware(self, train: TrainConfig) -> TrainConfig:
        """``finetune.min_steps``: the train config with enough epochs for at least that many optimizer steps
        (the saved config keeps train.epochs as given; the same data gives the same epochs on resume)."""
        per_epoch = math.ceil(len(self.train_data) / train.grad_accum_steps)
        epochs = self.config.finetune.epochs_for(train.epochs, per_epoch)
        if epochs == train.epochs:
            return train
        self.notes.append(
            f"finetune.min_steps={self.config.finetune.min_steps}: {epochs} epochs of {per_epoch} steps "
            f"(train.epochs={train.epochs} would take {train.epochs * per_epoch})"
        )
        self.log(self.notes[-1])
        return dataclasses.replace(train, epochs=epochs)

    def _fit_sparse_lr(self, run_dir: Path) -> TrainResult:
        """sparse-lr: features of every training text -> feature weights -> L-BFGS to the optimum (see the module
        docstring); the validation texts are scored once at the end."""
        from lmlab.data.classification import collate

        start = time.perf_counter()
        model, dataset, cfg = self.model, self.train_data.dataset, self.config.model
        chunk = 1024
        docs, rows, counts = [], [], []
        with torch.no_grad():
            for first in range(0, len(dataset), chunk):
                batch = collate([dataset[i] for i in range(first, min(first + chunk, len(dataset)))])
                doc, row, count = model.count_features(batch.ids, batch.lengths)
                docs.append(doc + first)
                rows.append(row)
                counts.append(count)
        doc, row, count = torch.cat(docs), torch.cat(rows), torch.cat(counts)
        labels = torch.tensor(dataset.labels, dtype=torch.long)
        model.fit_weighting(doc, row, labels)
        info = model.fit_lbfgs(doc, row, model.feature_values(doc, row, count), labels)
        n_val = len(self.val_data.dataset) if self.val_data else 0
        self.log(
            f"classify: sparse-lr on {len(dataset)} train / {n_val} val examples, {len(self.labels)} classes, "
            f"{info['features']:,} features; L-BFGS "
            f"{info['iterations']} iterations, objective {info['objective']:.6f}"
        )
        if not info["converged"]:
            self.notes.append(
                f"L-BFGS stopped after {info['iterations']} iterations with a gradient of {info['grad_max']:.2e} > "
                f"model.tol={cfg.tol}; raise model.max_iter for the exact optimum"
            )
            self.log(f"warning: {self.notes[-1]}")
        elapsed = time.perf_counter() - start
        record = {"split": "train", "step": info["iterations"], "epoch": 1, "loss": info["objective"],
                  "evaluations": info["evaluations"], "grad_max": info["grad_max"], "time_s": round(elapsed, 3)}
        checkpoint.append_metrics(run_dir, record)
        last = {k: v for k, v in record.items() if k != "split"}
        best = None
        metric = self.config.train.early_stopping_metric
        if self.val_data is not None:
            totals, n = {"val_loss": 0.0, "val_accuracy": 0.0}, 0
            model.eval()
            with torch.no_grad():
                for batch in self.val_data:
                    out = model.loss(batch)
                    totals["val_loss"] += float(out["loss"]) * out["n"]
                    totals["val_accuracy"] += float(out["accuracy"]) * out["n"]
                    n += out["n"]
            val = {k: v / max(n, 1) for k, v in totals.items()}
            checkpoint.append_metrics(run_dir, {"split": "val", "step": info["iterations"], "epoch": 1, **val})
            last.update(val)
            best = val.get(metric)
        checkpoint.save_tensors(run_dir / checkpoint.WEIGHTS_FILE, model.state_dict())
        return TrainResult(run_dir=run_dir, step=info["iterations"], metric=metric, best=best, metrics=last,
                           train_time_s=elapsed, notes=self.notes)

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu"):
        from lmlab.pipelines import Classifier

        saved = checkpoint.load_config(run_dir, cls.model_type)
        if "body" not in saved:
            return Classifier.from_run_dir(run_dir, device)
        model, encoder = cls.load_finetuned(run_dir, saved)
        return Classifier(model, encoder, saved["labels"], saved, Path(run_dir), device)

    @classmethod
    def load_finetuned(cls, run_dir: str | Path, saved: dict) -> tuple[BodyClassifier, BodyEncoder]:
        """The fine-tuned classifier of a run started with ``--init-from`` (best weights) and its encoder."""
        from lmlab import registry

        run_dir = Path(run_dir)
        where = f"{run_dir / checkpoint.CONFIG_FILE}"
        try:
            record = saved["body"]
            recipe = registry.recipe(record["model_type"])
            files = read_tokenizer_files(run_dir, record["tokenizer_files"])
            body = recipe.body_from_config(record["model_config"], files)
            ft = config_from_dict(FinetuneConfig, saved.get("finetune"), where=f"{where}: finetune")
            model = BodyClassifier(body.model, ft, len(saved["labels"]), record["pooling"])
            encoder = BodyEncoder(body.encode, int(record["max_tokens"]), ft.truncate, body.pad_id, body.special_ids)
        except (KeyError, TypeError) as err:
            raise checkpoint.CheckpointError(f"{where}: malformed 'body' record (missing {err}); re-train") from None
        checkpoint.load_weights(run_dir / checkpoint.WEIGHTS_FILE, model)
        return model.eval(), encoder

    @classmethod
    def evaluate(cls, run_dir: str | Path, data: Any, **reader_options: Any) -> dict[str, Any]:
        """Accuracy, macro P/R/F1 and the confusion matrix of ``run_dir`` on the labelled file ``data``."""
        from lmlab.data.readers import load_examples

        examples = load_examples(data, min_classes=1, **reader_options)
        return cls.load(run_dir).evaluate(examples)
