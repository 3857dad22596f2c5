"""The word-vector recipes: word2vec and GloVe, trained by their compiled-kernel drivers, not the Trainer.

Inputs (keyword arguments of the recipe, as ``lmlab embed train`` passes them): ``corpus`` (text file(s) or a
folder, or a restartable iterable of lines / token lists) and ``save_formats`` (extra vector files to write).

A run directory holds config.json, vocab.json (words and counts), vectors.safetensors and metrics.jsonl, plus
``checkpoints/last.safetensors``: at the end of every epoch the whole training state (input and output weights,
GloVe's AdaGrad accumulators and block-order RNG state, the epochs done, the history) is written there
atomically, and ``checkpoints/last.json`` names the epoch. ``--resume`` re-encodes the corpus (refusing one
whose vocabulary changed), reloads that state and continues at the next epoch, bit-identical on one thread to
an uninterrupted run: word2vec's learning rate is a function of the words done and its kernel RNG is seeded
from (seed, epoch, chunk, thread), so the epoch is the whole schedule position.

``init_from`` (``lmlab embed train --init-from RUN --corpus NEW``) continues a finished word2vec run on new text,
as gensim's ``build_vocab(update=True)`` + ``train`` do: the run's config is the base (flags and overrides may
change the training knobs, not arch / embed_dim / hs / negative sampling), its words keep their ids and their
saved input and output vectors, their counts add the new corpus's, the new corpus's words that occur
``min_count`` times are added after them (input rows drawn as a fresh run draws them, output rows zero), and the
learning rate restarts at ``lr`` (0.025 skip-gram, 0.05 CBOW by default) decaying linearly to ``min_lr`` over
``epochs`` passes of the new corpus. GloVe refuses it: its model fits the co-occurrence counts of one corpus,
which the run does not keep.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lmlab import checkpoint
from lmlab.config import (
    config_from_dict,
    config_to_dict,
    load_preset,
    merge,
    parse_overrides,
    resolve_short_overrides,
)
from lmlab.data.sentences import VectorDataConfig, vector_tokenizer
from lmlab.errors import CheckpointError, ConfigError, TrainingInterrupted
from lmlab.models.glove import GloVe, GloVeConfig
from lmlab.models.word2vec import Word2Vec, Word2VecConfig
from lmlab.recipes.base import Recipe, TrainResult
from lmlab.vectors import VectorsConfig

WORK_DIR = ".work"  # the encoded corpus (and GloVe's counts) while training
STATE_FILE = "last.safetensors"
STATE_FORMAT = "lmlab-word-vectors-state"
#: ``--algo`` -> the recipe's preset
ALGO_PRESETS = {"sgns": "sgns", "skipgram": "sgns", "cbow": "cbow", "glove": "glove"}
_W2V_ONLY = ("negative", "hs", "sample", "min_lr", "shared_negatives")
_GLOVE_ONLY = ("x_max", "alpha", "keep", "memory_mb")


@dataclass
class Word2VecRunConfig:
    """The config of a word2vec run: a ``model`` section with every knob (:class:`Word2VecConfig`) and a ``data``
    section with the Chinese word segmenter (:class:`VectorDataConfig`)."""

    model: Word2VecConfig = field(default_factory=Word2VecConfig)
    data: VectorDataConfig = field(default_factory=VectorDataConfig)


@dataclass
class GloVeRunConfig:
    """The config of a GloVe run: a ``model`` section with every knob (:class:`GloVeConfig`) and a ``data``
    section (:class:`VectorDataConfig`)."""

    model: GloVeConfig = field(default_factory=GloVeConfig)
    data: VectorDataConfig = field(default_factory=VectorDataConfig)


# ------------------------------------------------------------------------------------------ without a run dir
def encode(model: Word2Vec | GloVe, corpus: Any, workdir: str | Path, log: Callable[[str], None] | None = None,
           tokenizer: Any = None):
    """Read and tokenize ``corpus`` into ``workdir`` as the model's config asks (:func:`encode_corpus`), with
    ``tokenizer`` (default: :func:`~lmlab.data.sentences.tokenizer_for` the model's config)."""
    from lmlab.data.sentences import encode_corpus

    cfg = model.config
    return encode_corpus(corpus, cfg, workdir, cfg.min_count, cfg.max_vocab, log=log, tokenizer=tokenizer)


def attach_vectors(model: Word2Vec | GloVe) -> Word2Vec | GloVe:
    """Fill ``model.wv`` with the :class:`KeyedVectors` of a fitted model."""
    from lmlab.vectors import KeyedVectors

    model.wv = KeyedVectors(model.words, model.vectors, counts=model.counts)
    return model


def fit_corpus(model: Word2Vec | GloVe, corpus: Any, workdir: str | Path | None = None,
               log: Callable[[str], None] | None = None, on_epoch: Callable | None = None) -> Word2Vec | GloVe:
    """Encode ``corpus`` (path, or restartable iterable of lines / token lists), train ``model`` on it and fill
    ``model.wv``. ``workdir`` holds the temporary files (a temporary folder by default)."""
    tmp = None
    if workdir is None:
        tmp = workdir = tempfile.mkdtemp(prefix="lmlab-vectors-")
    try:
        t0 = time.perf_counter()
        enc = encode(model, corpus, workdir, log)
        if isinstance(model, GloVe):
            model.timings["encode_s"] = time.perf_counter() - t0
            model.fit(enc, workdir, log=log, on_epoch=on_epoch)
        else:
            model.fit(enc, log=log, on_epoch=on_epoch)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            for name in ("tokens.int32", "cooc.bin"):
                (Path(workdir) / name).unlink(missing_ok=True)
    return attach_vectors(model)


def save_vectors(model: Word2Vec | GloVe, run_dir: str | Path, extra: dict | None = None) -> Path:
    """Write a fitted model's run directory: config.json (with the ``extra`` sections), vectors.safetensors,
    vocab.json, metrics.jsonl."""
    if model.vectors is None:
        raise ConfigError("nothing to save: train the model first")
    if model.wv is None:
        attach_vectors(model)
    history = [h.as_dict() for h in model.history]
    sections: dict[str, Any] = {"model": config_to_dict(model.config), "corpus": model.corpus_info}
    if isinstance(model, GloVe):
        sections["timings"] = model.timings
    sections["history"] = history
    sections.update(extra or {})
    metrics = [{"step": h["epoch"], **h} for h in history]
    model_type = "glove" if isinstance(model, GloVe) else "word2vec"
    return model.wv.save(run_dir, model_type=model_type, sections=sections, metrics=metrics)


# ------------------------------------------------------------------------------------------ recipes
class VectorsRecipe(Recipe):
    """Word vectors imported from a file: nothing to train, a :class:`KeyedVectors` to load."""

    family = "embed"
    model_type = "word_vectors"
    run_config = VectorsConfig
    default_preset = ""

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu"):
        from lmlab.vectors import KeyedVectors

        return KeyedVectors.load(run_dir)

    @classmethod
    def evaluate(cls, run_dir: str | Path, data: Any = None, *, pairs: Sequence[str] = (),
                 analogies: Sequence[str] = (), **options: Any) -> dict[str, Any]:
        """``{"pairs": {file: Spearman...}, "analogies": {file: accuracy...}}`` of the vectors in ``run_dir``
        (a run directory or any vector file); ``options`` go to :meth:`KeyedVectors.evaluate_analogies`."""
        from lmlab.vectors import load_vectors

        kv = load_vectors(run_dir)
        return {"pairs": {p: kv.evaluate_word_pairs(p) for p in pairs},
                "analogies": {p: kv.evaluate_analogies(p, **options) for p in analogies}}


class _TrainedVectorsRecipe(VectorsRecipe):
    """What word2vec and GloVe share: encode the corpus, run the kernel driver epoch by epoch, checkpoint."""

    model_cls: ClassVar[type]
    #: knobs that may change on --resume (they do not change what one thread computes)
    resume_ignore: ClassVar[dict[str, Any]] = {"model": {"threads"}, "data": {"segmenter", "user_dict"}}

    # -- configuration -------------------------------------------------------------------------------
    @classmethod
    def resolve(cls, preset: str | None = None, overrides: Sequence[str] = (), options: dict | None = None,
                init_from: str | Path | None = None):
        """Preset (or, with ``init_from``, the config of the run to continue) + ``model`` options (the CLI's
        flags, already typed) + ``key=value`` overrides (they win)."""
        if init_from is not None:
            saved = continued_run_config(init_from, cls.model_type)
            base = {"model": saved["model"], "data": saved.get("data", {})}
        else:
            base = load_preset(preset or cls.default_preset, cls.family,
                               sections=[f.name for f in dataclasses.fields(cls.run_config)])
        if options:
            base = merge(base, {"model": dict(options)})
        extra = resolve_short_overrides(parse_overrides(list(overrides)),
                                        {"model": cls.model_cls.config_cls, "data": VectorDataConfig})
        config = config_from_dict(cls.run_config, merge(base, extra), where="config")
        if init_from is not None:
            _check_continuable(init_from, saved["model"], config_to_dict(config.model))
        return config

    @classmethod
    def from_options(cls, preset: str | None, options: dict, overrides: Sequence[str] = (), **inputs: Any):
        return cls(cls.resolve(preset, overrides, options, inputs.get("init_from")), **inputs)

    # -- family steps --------------------------------------------------------------------------------
    def seed(self) -> None:
        """Nothing global to seed: the kernels draw from ``model.seed`` themselves."""

    def check_resume(self, saved: dict, run_dir: Path) -> None:
        """A continued run resumes with the same ``--init-from`` (first, so the message says so), then the config."""
        if bool(saved.get("init_from")) != (self.inputs.get("init_from") is not None):
            raise CheckpointError(
                f"cannot resume {run_dir}: it " + (f"continued {saved['init_from']['run_dir']}; resume with "
                                                   "--init-from that run" if saved.get("init_from") else
                                                   "was not started with --init-from; resume without it")
            )
        super().check_resume(saved, run_dir)

    def prepare(self, saved: dict | None, run_dir: Path) -> None:
        self.workdir = run_dir / WORK_DIR
        self.model = self.model_cls(self.config.model)
        t0 = time.perf_counter()
        self.tokenizer = vector_tokenizer(self.config.model, self.config.data, self.inputs["corpus"], self.log)
        init_from = self.inputs.get("init_from")
        self.init_state = None
        base_vocab = None
        if init_from is not None:
            self.init_state, base_vocab = load_continued_state(init_from)
            planned = (checkpoint.load_config(init_from).get("model") or {}).get("epochs")
            done = self.init_state.get("epoch")
            if isinstance(planned, int) and isinstance(done, int) and done < planned:
                self.log(f"note: --init-from {init_from} was stopped after epoch {done} of {planned}; continuing from "
                         f"its vectors as they were then (to finish it first: lmlab embed train --out {init_from} "
                         "--corpus ITS_CORPUS --resume)")
        cfg = self.model.config
        from lmlab.data.sentences import encode_corpus

        self.enc = encode_corpus(self.inputs["corpus"], cfg, self.workdir, cfg.min_count, cfg.max_vocab, log=self.log,
                                 tokenizer=self.tokenizer, base_vocab=base_vocab)
        self.encode_s = time.perf_counter() - t0
        if base_vocab is not None:
            self.init_info = {"run_dir": str(Path(init_from)), "vocab_size": len(base_vocab[0]),
                              "new_words": len(self.enc.words) - len(base_vocab[0])}
            self.log(f"continuing {init_from}: {self.init_info['vocab_size']:,} words kept, "
                     f"{self.init_info['new_words']:,} new; lr restarts at {cfg.start_lr:g} -> {cfg.min_lr:g} over "
                     f"{cfg.epochs} epochs of the new corpus")
        if saved is not None:
            vocab = checkpoint.read_json(run_dir / "vocab.json", "vocab.json")
            same = (isinstance(vocab, dict) and vocab.get("words") == list(self.enc.words)
                    and vocab.get("counts") == [int(c) for c in self.enc.counts])
            if not same:
                raise CheckpointError(
                    f"cannot resume {run_dir}: the corpus {self.inputs['corpus']} gives another vocabulary than the "
                    "one the run was trained on (vocab.json); resume with the same corpus, or start with --overwrite"
                )

    def build_model(self):
        return self.model

    def config_extras(self) -> dict[str, Any]:
        """The tokenizer the corpus was read with (the ``auto`` segmenter resolved), so lookups can split text alike."""
        extras: dict[str, Any] = {"tokenizer": self.tokenizer.to_dict()}
        if getattr(self, "init_state", None) is not None:
            extras["init_from"] = self.init_info
        return extras

    def save_artifacts(self, run_dir: Path) -> None:
        super().save_artifacts(run_dir)
        checkpoint.atomic_write_json(
            run_dir / "vocab.json", {"words": list(self.enc.words), "counts": [int(c) for c in self.enc.counts]}
        )

    def _run_kernel(self, on_epoch: Callable) -> None:
        raise NotImplementedError

    def fit(self, run_dir: Path, resume: bool, callbacks) -> TrainResult:
        model = self.model
        t0 = time.perf_counter()
        try:
            state = load_training_state(run_dir) if resume else None
            if state is not None:
                model.load_training_state(state)
                self.log(f"resuming {run_dir} after epoch {model.epochs_done}/{model.config.epochs}")
            elif getattr(self, "init_state", None) is not None:
                model.continue_from(self.init_state, len(self.enc.words))
            checkpoint.truncate_metrics(run_dir, model.epochs_done)

            def on_epoch(stats) -> None:  # metrics first: a resume truncates them back to the checkpoint
                checkpoint.append_metrics(run_dir, {"step": stats.epoch, **stats.as_dict()})
                save_training_state(run_dir, model.training_state())

            try:
                self._run_kernel(on_epoch)
            except KeyboardInterrupt:  # the last completed epoch is on disk (written atomically by on_epoch)
                last = run_dir / "checkpoints" / "last.json"
                done = int(checkpoint.read_json(last, "checkpoints/last.json")["epoch"]) if last.exists() else 0
                saved = f"epochs 1-{done} are saved" if done else "no epoch had ended, nothing is saved"
                raise TrainingInterrupted(f"interrupted in epoch {done + 1} of {model.config.epochs}: {saved}; "
                                          f"resume with --resume ({run_dir})") from None
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)
        save_vectors(model, run_dir, {"data": config_to_dict(self.config.data), **self.config_extras()})
        kv = model.wv
        for fmt in self.inputs.get("save_formats") or ():
            if fmt == "word2vec":
                kv.save_word2vec_format(run_dir / "vectors.txt")
            elif fmt == "word2vec-binary":
                kv.save_word2vec_format(run_dir / "vectors.bin", binary=True)
            else:
                kv.save_glove_format(run_dir / "vectors.glove.txt")
        last = model.history[-1].as_dict() if model.history else {}
        return TrainResult(run_dir=run_dir, step=model.epochs_done, metric="loss", best=None, metrics=last,
                           train_time_s=time.perf_counter() - t0,
                           notes=[f"{len(kv):,} words x {kv.vector_size} dims"])

    @classmethod
    def evaluate(cls, run_dir: str | Path, data: Any = None, **options: Any) -> dict[str, Any]:
        return VectorsRecipe.evaluate(run_dir, data, **options)


class Word2VecRecipe(_TrainedVectorsRecipe):
    model_type = "word2vec"
    model_cls = Word2Vec
    run_config = Word2VecRunConfig
    default_preset = "sgns"

    def _run_kernel(self, on_epoch: Callable) -> None:
        self.model.fit(self.enc, log=self.log, on_epoch=on_epoch)


class GloVeRecipe(_TrainedVectorsRecipe):
    model_type = "glove"
    model_cls = GloVe
    run_config = GloVeRunConfig
    default_preset = "glove"

    def _run_kernel(self, on_epoch: Callable) -> None:
        self.model.timings["encode_s"] = self.encode_s
        self.model.fit(self.enc, self.workdir, log=self.log, on_epoch=on_epoch)


def recipe_for_algo(algo: str) -> type[_TrainedVectorsRecipe]:
    if algo not in ALGO_PRESETS:
        raise ConfigError(f"unknown word-vector algorithm {algo!r}; choose one of {', '.join(ALGO_PRESETS)}")
    return GloVeRecipe if algo == "glove" else Word2VecRecipe


def cli_options(algo: str, options: dict) -> dict:
    """``lmlab embed train`` flags (None: not given) -> ``model`` options, refusing the other algorithm's."""
    data = {k: v for k, v in options.items() if v is not None}
    if algo == "glove":
        for key in _W2V_ONLY:
            if key in data and data[key] not in (False,):
                raise ConfigError(f"--{key.replace('_', '-')} is a word2vec option; GloVe does not use it")
            data.pop(key, None)
    else:
        if data.get("hs") and "negative" not in data:
            data["negative"] = 0
        for key in _GLOVE_ONLY:
            if key in data:
                raise ConfigError(f"--{key.replace('_', '-')} is a GloVe option; use it with --algo glove")
        if not data.get("hs"):
            data.pop("hs", None)
    return data


def recipe_from_cli(algo: str | None, options: dict, overrides: Sequence[str] = (), resume_dir: str | None = None,
                    **inputs: Any) -> _TrainedVectorsRecipe:
    """The recipe ``lmlab embed train --algo ALGO [flags] [key=value ...]`` runs (validated, nothing read yet).
    ``algo`` None: sgns, or with ``init_from`` the algorithm of that run, or with ``resume_dir`` (``--resume``)
    the algorithm and the saved config of the run being resumed (flags and overrides still apply on top)."""
    init_from = inputs.get("init_from")
    if resume_dir is not None and init_from is None and algo is None and (Path(resume_dir) / "config.json").is_file():
        saved = checkpoint.load_config(resume_dir, ("word2vec", "glove"))
        algo = "glove" if saved["model_type"] == "glove" else (
            "cbow" if saved["model"].get("arch") == "cbow" else "sgns")
        cls = recipe_for_algo(algo)
        return cls.from_options(resume_dir, cli_options(algo, options), overrides, **inputs)
    if init_from is not None:
        saved = continued_run_config(init_from, None)
        run_algo = "cbow" if saved["model"].get("arch") == "cbow" else "sgns"
        if algo is not None and ALGO_PRESETS[algo] != run_algo:
            raise ConfigError(f"--algo {algo} does not match --init-from {init_from}, a {run_algo} run; "
                              "drop --algo (a continued run keeps its algorithm)")
        algo = run_algo
    algo = algo or "sgns"
    cls = recipe_for_algo(algo)
    return cls.from_options(ALGO_PRESETS[algo], cli_options(algo, options), overrides, **inputs)


# ------------------------------------------------------------------------------------------ continued training
#: what a continued run cannot change: the weights it starts from have this shape and meaning
_KEPT_ON_CONTINUE = ("arch", "embed_dim", "hs")


def continued_run_config(run_dir: str | Path, model_type: str | None) -> dict:
    """config.json of the word2vec run ``run_dir`` to continue (``--init-from``), refusing other runs in one line."""
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"--init-from {run_dir}: no such run directory; give the --out folder of a finished "
                              "word2vec run")
    data = checkpoint.load_config(run_dir)
    kind = data["model_type"]
    if kind == "glove" or model_type == "glove":
        raise ConfigError(
            f"--init-from {run_dir}: GloVe runs cannot be continued on new text (GloVe fits the co-occurrence counts "
            "of one corpus, which the run does not keep); train a new run on both corpora, or --resume an interrupted one"
        )
    if kind != "word2vec" or (model_type is not None and model_type != "word2vec"):
        raise ConfigError(f"--init-from {run_dir}: a {kind!r} run, not a word2vec one; give a run of "
                          "`lmlab embed train --algo sgns|cbow`")
    if not isinstance(data.get("model"), dict):
        raise CheckpointError(f"{run_dir}/config.json has no model section; this run cannot be continued")
    return data


def _check_continuable(run_dir: str | Path, saved: dict, new: dict) -> None:
    problems = [f"{key} {new.get(key)!r} (the run has {saved.get(key)!r})"
                for key in _KEPT_ON_CONTINUE if saved.get(key) != new.get(key)]
    if bool(saved.get("negative")) != bool(new.get("negative")):
        problems.append(f"negative {new.get('negative')} (the run has {saved.get('negative')})")
    if problems:
        raise ConfigError(f"--init-from {run_dir}: a continued run keeps arch, embed_dim, hs and negative sampling "
                          f"on or off; drop the options that change {', '.join(problems)}")


def load_continued_state(run_dir: str | Path) -> tuple[dict, tuple[list[str], np.ndarray]]:
    """(training state, (words, counts)) of the finished run ``run_dir``, checked against each other."""
    run_dir = Path(run_dir)
    state = load_training_state(run_dir)
    if state is None:
        raise CheckpointError(
            f"--init-from {run_dir}: no training state (checkpoints/{STATE_FILE}), so no output weights to continue "
            "from; it was written by an older lmlab or stopped before its first epoch: train it again"
        )
    vocab = checkpoint.read_json(run_dir / "vocab.json", "vocab.json")
    words, counts = (vocab.get("words"), vocab.get("counts")) if isinstance(vocab, dict) else (None, None)
    if not isinstance(words, list) or not isinstance(counts, list) or len(words) != len(counts) \
            or len(words) != len(state["arrays"]["syn0"]):
        raise CheckpointError(f"--init-from {run_dir}: vocab.json does not match checkpoints/{STATE_FILE}; "
                              "the run directory is damaged: train it again")
    return state, (words, np.asarray(counts, dtype=np.int64))


# ------------------------------------------------------------------------------------------ training state
def save_training_state(run_dir: Path, state: dict) -> None:
    """``checkpoints/last.safetensors`` (arrays + the rest as JSON metadata, one atomic write), then
    ``checkpoints/last.json`` naming the epoch."""
    from safetensors.numpy import save as st_save

    folder = Path(run_dir) / "checkpoints"
    folder.mkdir(exist_ok=True)
    meta = {k: v for k, v in state.items() if k != "arrays"}
    arrays = {k: np.ascontiguousarray(v) for k, v in state["arrays"].items()}
    blob = st_save(arrays, metadata={"format": STATE_FORMAT, "state": json.dumps(meta)})
    checkpoint.atomic_write_bytes(folder / STATE_FILE, blob)
    checkpoint.atomic_write_json(folder / "last.json", {"step": int(state["epoch"]), "epoch": int(state["epoch"])})


def load_training_state(run_dir: Path) -> dict | None:
    """The state :func:`save_training_state` wrote, or None when the run stopped before its first epoch ended."""
    from safetensors import SafetensorError, safe_open

    path = Path(run_dir) / "checkpoints" / STATE_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
            arrays = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__
        if meta.get("format") != STATE_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        state = json.loads(meta["state"])
    except (SafetensorError, OSError, KeyError, ValueError) as err:
        raise CheckpointError(
            f"{path}: training state is truncated or corrupt ({err}); start again with --overwrite"
        ) from None
    state["arrays"] = arrays
    return state
