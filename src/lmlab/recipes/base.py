"""The one interface every model family runs through, and the plumbing they share.

A *recipe* takes a family from a preset to a trained run directory and back to a pipeline::

    recipe = ClassifyRecipe.from_preset("bilstm", ["epochs=2"], data="train.csv")   # typed config, validated first
    result = recipe.train("runs/imdb", overwrite=False, resume=False)                # -> TrainResult
    pipe = ClassifyRecipe.load("runs/imdb")                                          # -> the family's pipeline
    metrics = ClassifyRecipe.evaluate("runs/imdb", "test.csv")                       # -> one metrics dict

:meth:`Recipe.train` is written once, here: it checks ``--out`` before anything is read (nothing a user owns
is ever deleted), compares the config with the saved one on ``--resume``, stages the run directory so that a
failed start leaves an old run untouched, seeds, and calls the family's four steps in order::

    prepare(saved, run_dir)  ->  build_model()  ->  save_artifacts(run_dir)  ->  fit(run_dir, resume, callbacks)

A family implements those steps plus :meth:`Recipe.load` and :meth:`Recipe.evaluate`; it never creates,
empties or compares run directories itself. Families that train through :class:`lmlab.trainer.Trainer` return
:meth:`TrainResult.from_trainer`; the word-vector families return what their compiled-kernel driver reports.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from lmlab import checkpoint, distributed
from lmlab.config import check_resume_compatible, config_to_dict, resolve_run_config

T = TypeVar("T")
R = TypeVar("R", bound="Recipe")


@dataclass
class TrainResult:
    """What every family's training returns."""

    run_dir: Path
    #: optimizer steps taken (epochs for the word-vector kernels)
    step: int
    #: the tracked metric (``train.early_stopping_metric``) and its best value (None when never evaluated)
    metric: str = "val_loss"
    best: float | None = None
    #: the last logged metrics (training and validation)
    metrics: dict[str, Any] = field(default_factory=dict)
    train_time_s: float = 0.0
    #: family-specific facts worth printing (e.g. how many pretrained vectors were found)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_trainer(cls, trainer: Any, last: dict | None = None, notes: Sequence[str] = ()) -> TrainResult:
        best = trainer.state.best_metric
        return cls(
            run_dir=Path(trainer.run_dir) if trainer.run_dir is not None else Path("."),
            step=int(trainer.state.step),
            metric=trainer.config.early_stopping_metric,
            best=None if best is None or best != best else float(best),
            metrics=dict(last or {}),
            train_time_s=float(trainer.state.train_time_s),
            notes=list(notes),
        )

    def summary(self) -> str:
        """The one line every ``train`` command ends with."""
        shown = f", best {self.metric} {self.best:.4f}" if self.best is not None else ""
        return f"trained {self.step} steps{shown}; run directory: {self.run_dir}"


@dataclass
class PretrainedBody:
    """What a pretrained run lends a classifier (``lmlab classify train --init-from RUN``).

    ``model`` implements the *body API* (every model that can be a classifier body has it)::

        features(ids (B, T) long, pad_mask (B, T) bool | None = None) -> (B, T, features_dim) float
            # the top hidden states: after the final norm for Transformers, the top RNN layer for RNN LMs;
            # pad_mask is True at real tokens (None: no padding)
        features_dim: int
        layer_groups() -> list[list[nn.Parameter]]
            # every trainable parameter of the body once, bottom (embeddings) to top, one group per layer:
            # discriminative learning rates and gradual unfreezing work on these groups
        lm_logits(hidden (B, T, features_dim)) -> (B, T, vocab)   # the pretraining head (auxiliary LM loss)

    The classifier run copies ``tokenizer_files`` (the source run's text -> ids files) and records ``family`` and
    ``model_config``, so :meth:`Recipe.body_from_config` rebuilds the same body (without weights) at load time.
    """

    #: the source recipe's ``family`` ("gpt", "lm", "mlm" ...)
    family: str
    #: the body, with the pretrained weights loaded (from :meth:`Recipe.pretrained_body`) or freshly built
    model: Any
    #: the source run's ``model`` config section, as saved in its config.json
    model_config: dict[str, Any]
    #: file name -> JSON-able content: what turns text into ids, exactly as the source run does
    tokenizer_files: dict[str, Any]
    #: text -> ids, exactly as the source run tokenizes (no special tokens added)
    encode: Callable[[str], list[int]]
    #: the id that pads a batch (masked out by pad_mask)
    pad_id: int
    #: the most positions the body takes in one pass (None: no limit, e.g. an RNN)
    max_len: int | None = None
    #: how this family's states are best pooled into one vector: "last" (causal bodies), "mean", "first"
    pooling: str = "last"
    #: special ids the classifier may put around a text (e.g. {"bos": 1, "eos": 2, "cls": 3}); empty when none
    special_ids: dict[str, int] = field(default_factory=dict)


def read_tokenizer_files(run_dir: str | Path, names: Sequence[str] = ("tokenizer.json", "vocab.json")) -> dict[str, Any]:
    """The JSON content of a run's tokenizer files (those of ``names`` that exist), for
    :attr:`PretrainedBody.tokenizer_files`."""
    return {
        name: checkpoint.read_json(Path(run_dir) / name, name) for name in names if (Path(run_dir) / name).is_file()
    }


class tokenizer_files_dir:  # noqa: N801 - used as a context manager, like tempfile's
    """``with tokenizer_files_dir(files) as folder``: ``files`` (name -> JSON content) written into a temporary
    folder, so a family's own codec loader reads them back exactly as from its run directory."""

    def __init__(self, files: dict[str, Any]) -> None:
        self.files = files

    def __enter__(self) -> Path:
        import tempfile

        self._tmp = tempfile.TemporaryDirectory()
        folder = Path(self._tmp.name)
        for name, content in self.files.items():
            checkpoint.atomic_write_json(folder / Path(name).name, content)
        return folder

    def __exit__(self, *exc: Any) -> None:
        self._tmp.cleanup()


def init_from_config(
    recipe: type[Recipe], preset: str | None, overrides: Sequence[str], init_from: str | Path,
    tokenizer_keys: Sequence[str], free_model_keys: Sequence[str] = ("dropout",),
) -> Any:
    """The run config for continued pretraining (``gpt train --init-from RUN``, ``lm train --init-from RUN``):
    ``preset`` + ``overrides``, with the ``model`` section and the data keys ``tokenizer_keys`` taken from the
    pretrained run ``init_from`` (same architecture, same tokenizer). An explicit option that contradicts the
    pretrained run is a ConfigError; of the model keys only ``free_model_keys`` (e.g. dropout) may change."""
    from lmlab.config import config_from_dict
    from lmlab.errors import ConfigError, LmlabError

    src = Path(init_from)
    try:
        saved = checkpoint.load_config(src, recipe.model_type)
        if not (src / checkpoint.WEIGHTS_FILE).is_file():
            raise checkpoint.CheckpointError(f"{src / checkpoint.WEIGHTS_FILE} is missing: the run has no trained weights")
        sections = {k: saved[k] for k in ("model", "data", "train") if k in saved}
        source = config_from_dict(recipe.run_config, sections, where=f"{src / checkpoint.CONFIG_FILE}")
    except LmlabError as err:
        raise type(err)(f"--init-from {src}: {err}") from None
    config = recipe.resolve(preset, overrides)
    base = recipe.resolve(preset, ())
    problems = []
    for section, keys in (("model", None), ("data", tokenizer_keys)):
        given, default = config_to_dict(getattr(config, section)), config_to_dict(getattr(base, section))
        pretrained = config_to_dict(getattr(source, section))
        for key in keys or list(given):
            explicit = given[key] != default[key]
            if explicit and section == "model" and key in free_model_keys:
                continue
            if explicit and given[key] != pretrained[key]:
                problems.append(f"{section}.{key}={given[key]!r} (the pretrained run has {pretrained[key]!r})")
            setattr(getattr(config, section), key, getattr(getattr(source, section), key))
    if problems:
        raise ConfigError(
            f"--init-from {src}: {'; '.join(problems)}: continued pretraining keeps the pretrained architecture and "
            "tokenizer; drop these options"
        )
    return config


def split_validation(items: Sequence[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """(train, validation): a seeded random ``fraction`` of ``items`` held out (at least one when fraction > 0).

    The same seed gives the same split on every machine and in every family."""
    if fraction <= 0:
        return list(items), []
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_val = max(1, int(round(len(order) * fraction)))
    return [items[i] for i in order[n_val:]], [items[i] for i in order[:n_val]]


class Recipe:
    """Base class of every family's recipe (see the module docstring for the contract)."""

    #: the CLI group and the preset folder (``lmlab/configs/<family>/``)
    family: ClassVar[str]
    #: written to config.json; :func:`lmlab.load` and the server dispatch on it
    model_type: ClassVar[str]
    #: the run dataclass whose fields are the config sections (``model``, ``data``, ``train``, ...)
    run_config: ClassVar[type]
    default_preset: ClassVar[str]
    #: keys that may differ on ``--resume`` besides ``config.RESUMABLE_TRAIN_KEYS``: section -> keys or "*"
    resume_ignore: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: Any, *, log: Callable[[str], None] = print, **inputs: Any) -> None:
        if not isinstance(config, self.run_config):
            raise TypeError(f"{type(self).__name__} takes a {self.run_config.__name__}, got {type(config).__name__}")
        self.config = config
        self.log = log
        #: the family's inputs (data paths, reader options, pretrained vectors ...), as the CLI passes them
        self.inputs = inputs
        self.model: Any = None

    # ------------------------------------------------------------------------------------ configuration
    @classmethod
    def resolve(cls, preset: str | None = None, overrides: Sequence[str] = ()) -> Any:
        """Preset name or file + ``key=value`` overrides -> the validated run config (before any heavy work)."""
        return resolve_run_config(cls.run_config, cls.family, preset or cls.default_preset, overrides)

    @classmethod
    def from_preset(cls: type[R], preset: str | None = None, overrides: Sequence[str] = (), **inputs: Any) -> R:
        return cls(cls.resolve(preset, overrides), **inputs)

    # ------------------------------------------------------------------------------------ family steps
    def input_paths(self) -> list[str]:
        """Every file or folder the run reads: ``--overwrite`` never replaces a folder holding one of them."""
        import os

        return [str(v) for v in self.inputs.values() if isinstance(v, str | os.PathLike)]

    def prepare(self, saved: dict | None, run_dir: Path) -> None:
        """Read and tokenize the data; fit the tokenizer/vocabulary (or load it from ``saved``'s run on resume)
        and fill the config fields that come from the data. Bad data raises here, before any old run is lost."""
        raise NotImplementedError

    def build_model(self) -> Any:
        """The model, built from ``self.config`` right after seeding (the initial weights depend on the seed only)."""
        raise NotImplementedError

    def config_extras(self) -> dict[str, Any]:
        """Records besides the config sections written to config.json (labels, corpus facts ...)."""
        return {}

    def save_artifacts(self, run_dir: Path) -> None:
        """Write config.json and what turns text into ids (a new run only; resume keeps the saved ones)."""
        checkpoint.save_config(run_dir, self.model_type, {**config_to_dict(self.config), **self.config_extras()})

    def fit(self, run_dir: Path, resume: bool, callbacks: Sequence[Any]) -> TrainResult:
        """Train ``self.model`` (through the Trainer, or the compiled-kernel driver) and say how it went."""
        raise NotImplementedError

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu") -> Any:
        """The family's pipeline for a trained run directory."""
        raise NotImplementedError

    @classmethod
    def evaluate(cls, run_dir: str | Path, data: Any, **options: Any) -> dict[str, Any]:
        """One metrics dict for ``run_dir`` on ``data``."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------ transfer learning
    @classmethod
    def pretrained_body(cls, run_dir: str | Path, device: str = "cpu") -> PretrainedBody:
        """The trained run ``run_dir`` as a classifier body, its weights loaded (families that can be one
        override this; see :class:`PretrainedBody`)."""
        from lmlab.errors import ConfigError

        raise ConfigError(
            f"--init-from {run_dir}: {cls.family} runs cannot be a classifier body; "
            "use a gpt, lm (RNN language model) or mlm (masked language model) run"
        )

    @classmethod
    def body_from_config(cls, model_config: dict[str, Any], tokenizer_files: dict[str, Any]) -> PretrainedBody:
        """The same body as :meth:`pretrained_body`, rebuilt from what a classifier run saved (no weights)."""
        raise NotImplementedError(f"{cls.__name__} cannot be a classifier body")

    # ------------------------------------------------------------------------------------ written once
    def seed(self) -> None:
        from lmlab.trainer import seed_everything

        seed_everything(self.config.train.seed)

    def check_resume(self, saved: dict, run_dir: Path) -> None:
        check_resume_compatible(saved, config_to_dict(self.config), run_dir, ignore=dict(self.resume_ignore),
                                defaults=_defaults(self.run_config))

    def train(
        self, out: str | Path, *, overwrite: bool = False, resume: bool = False, callbacks: Sequence[Any] = ()
    ) -> TrainResult:
        """Prepare, build and train into the run directory ``out``; see the module docstring."""
        distributed.init()
        run_dir = Path(out)
        main = distributed.is_main()
        saved = None
        if resume:
            saved = load_resumable(run_dir, self.model_type)
            self.check_resume(saved, run_dir)
        elif main:
            checkpoint.check_new_run_dir(run_dir, overwrite=overwrite, inputs=self.input_paths())
        distributed.barrier()
        staged = checkpoint.StagedRunDir(run_dir, replace=not resume) if main else _NoStage(run_dir)
        with staged:
            distributed.barrier()
            self.prepare(saved, run_dir)
            self.seed()
            self.model = self.build_model()
            if saved is None and main:
                self.save_artifacts(run_dir)
            distributed.barrier()
            return self.fit(run_dir, resume, callbacks)


def _defaults(run_config: type) -> dict | None:
    """The run config's defaults as a dict (None when it cannot be built without arguments)."""
    try:
        return config_to_dict(run_config())
    except TypeError:
        return None


class _NoStage:
    """Ranks other than 0 under torchrun: rank 0 stages the run directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: Any) -> None:
        return None


def check_codec_fits(run_dir: str | Path, codec_size: int, model_size: int) -> None:
    """A run's tokenizer must have as many tokens as its model's embedding (a mixed-up run directory otherwise)."""
    if codec_size != model_size:
        raise checkpoint.CheckpointError(
            f"{run_dir}: the tokenizer has {codec_size} tokens but the model was built for {model_size}; "
            "the tokenizer files do not belong to this model"
        )


def load_resumable(run_dir: Path, model_type: str) -> dict:
    """config.json of a run to resume, with a message that says what to do when the run never got started."""
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        raise checkpoint.CheckpointError(
            f"cannot resume: {run_dir} does not exist or is empty; drop --resume to start a new run"
        )
    if not (run_dir / checkpoint.CONFIG_FILE).is_file():
        raise checkpoint.CheckpointError(
            f"cannot resume {run_dir}: it was stopped before its config was saved (nothing was trained); "
            "start it again with --overwrite"
        )
    return checkpoint.load_config(run_dir, model_type)

