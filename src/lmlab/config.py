"""Typed configs: dataclasses of JSON-friendly fields, strict loading, dotted overrides and presets.

Every config in lmlab is a dataclass. ``config_from_dict`` builds one from a plain dict and rejects unknown keys
(suggesting the nearest valid one) and wrong value types, reporting every problem at once before any heavy work
starts. ``parse_overrides`` turns ``train.lr=1e-3`` style command-line arguments into a nested dict, and
``load_preset`` reads a shipped preset (``lmlab/configs/<family>/<name>.yaml``) or a user's YAML/JSON file.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from lmlab.errors import ConfigError

T = TypeVar("T")


class _Loader(yaml.SafeLoader):
    """YAML 1.1 safe loader that also reads ``1e-3`` (no dot) as a float, as YAML 1.2 and JSON do."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def yaml_load(text: str):
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass

#: Where the shipped presets live: package data ``lmlab/configs/<family>/<name>.yaml``, read through
#: importlib.resources so that a wheel install finds them as an editable one does.
def _preset_folder(family: str):
    from importlib.resources import files

    return files("lmlab") / "configs" / family


@dataclass
class TrainConfig:
    """Every knob of :class:`lmlab.trainer.Trainer`; nothing here knows about a model family."""

    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    #: apply weight decay only to parameters with >= 2 dimensions (matrices), never to biases/norms/gains
    decay_matrices_only: bool = True
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    momentum: float = 0.0
    schedule: Literal["constant", "cosine", "linear", "step", "slanted"] = "constant"
    warmup_steps: int = 0
    min_lr: float = 0.0
    #: for schedule="step": full lr for the first decay_start_epoch epochs, then times lr_decay every epoch:
    #: lr = lr * lr_decay ** max(0, epoch + 1 - decay_start_epoch)  (epoch counted from 0)
    lr_decay: float = 1.0
    decay_start_epoch: int = 0
    #: for schedule="slanted" (ULMFiT's slanted triangular LR): the fraction of the steps spent rising
    cut_frac: float = 0.1
    #: for schedule="slanted": how much smaller the lowest learning rate is than train.lr
    stlr_ratio: float = 32.0
    epochs: int = 1
    #: stop after this many optimizer steps (0: no limit); for cosine/linear schedules it is the horizon
    max_steps: int = 0
    #: stop after this many seconds of training (0: no limit); the state is checkpointed when it stops
    max_time_s: float = 0.0
    batch_size: int = 32
    grad_clip: float = 0.0
    grad_accum_steps: int = 1
    #: evaluate every N optimizer steps (0: only at the end of each epoch)
    eval_every: int = 0
    #: save a resumable checkpoint every N optimizer steps (0: only at the end of each epoch)
    save_every: int = 0
    log_every: int = 10
    early_stopping_metric: str = "val_loss"
    early_stopping_mode: Literal["min", "max"] = "min"
    #: stop after this many evaluations without improvement (0: never stop early)
    patience: int = 0
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False
    num_threads: int = 0
    progress: bool = True
    tensorboard: bool = True

    def validate(self) -> None:
        """Checks that need no data, run when the config is built (before anything is read or written)."""
        import math

        problems = []
        for name in ("lr", "weight_decay", "grad_clip", "max_time_s", "min_lr", "eps", "momentum", "lr_decay"):
            value = getattr(self, name)
            if not math.isfinite(value):
                problems.append(f"train.{name} must be a finite number, got {value}")
        if math.isfinite(self.lr) and self.lr <= 0:
            problems.append(f"train.lr must be > 0, got {self.lr}")
        for name in ("epochs", "max_steps", "eval_every", "save_every", "warmup_steps", "patience", "num_threads",
                     "decay_start_epoch"):
            if getattr(self, name) < 0:
                problems.append(f"train.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "grad_accum_steps", "log_every"):
            if getattr(self, name) < 1:
                problems.append(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("weight_decay", "grad_clip", "max_time_s"):
            if getattr(self, name) < 0:
                problems.append(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.cut_frac < 1:
            problems.append(f"train.cut_frac must be in (0, 1), got {self.cut_frac}")
        if not self.stlr_ratio >= 1:
            problems.append(f"train.stlr_ratio must be >= 1, got {self.stlr_ratio}")
        if self.schedule == "slanted" and self.warmup_steps:
            problems.append(
                "train.warmup_steps does not apply to schedule=slanted (it rises over the first train.cut_frac of "
                "the steps); set train.warmup_steps=0"
            )
        if problems:
            raise ConfigError("; ".join(problems))


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        args = get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


#: names other libraries (and papers) use for lmlab's keys; each maps to lmlab's candidates, the first one the
#: config has is suggested. Checked before the spelling similarity, which cannot know that learning_rate is lr.
KEY_ALIASES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("learning_rate", "lr_rate", "learningrate", "learning_rate_init", "base_lr", "eta"), ("lr",)),
    **dict.fromkeys(("n_epochs", "num_epochs", "nepochs", "max_epochs", "num_train_epochs", "epoch"), ("epochs",)),
    **dict.fromkeys(
        ("batch", "bs", "batchsize", "train_batch_size", "per_device_train_batch_size", "mini_batch_size"),
        ("batch_size",),
    ),
    **dict.fromkeys(
        ("max_iters", "max_iterations", "num_steps", "total_steps", "train_steps", "n_steps", "steps", "iterations"),
        ("max_steps",),
    ),
    **dict.fromkeys(("warmup", "warmup_iters", "num_warmup_steps", "warmup_step"), ("warmup_steps",)),
    **dict.fromkeys(
        ("clip", "clip_grad", "clip_grad_norm", "max_grad_norm", "gradient_clip_val", "gradient_clipping"),
        ("grad_clip",),
    ),
    **dict.fromkeys(("gradient_accumulation_steps", "accumulate_grad_batches", "grad_accum"), ("grad_accum_steps",)),
    **dict.fromkeys(("wd", "l2", "weight_decay_rate"), ("weight_decay",)),
    **dict.fromkeys(("eval_interval", "eval_steps", "eval_freq", "evaluate_every", "val_every"), ("eval_every",)),
    **dict.fromkeys(("save_interval", "save_steps", "checkpoint_every", "ckpt_every"), ("save_every",)),
    **dict.fromkeys(("log_interval", "logging_steps", "log_freq", "print_every"), ("log_every",)),
    **dict.fromkeys(("early_stopping_patience", "early_stop_patience"), ("patience",)),
    **dict.fromkeys(("random_seed", "rng_seed", "random_state"), ("seed",)),
    **dict.fromkeys(("lr_scheduler", "scheduler", "lr_schedule"), ("schedule",)),
    **dict.fromkeys(("threads", "n_threads", "nthreads", "workers"), ("num_threads",)),
    **dict.fromkeys(
        ("n_embd", "emb_dim", "embedding_dim", "emsize", "ninp", "embed_size", "embedding_size", "d_model"),
        ("embed_dim", "hidden_dim"),
    ),
    **dict.fromkeys(("hidden_size", "nhid", "hidden", "n_hidden", "hidden_units", "units", "d_hidden"), ("hidden_dim",)),
    **dict.fromkeys(("n_layer", "n_layers", "nlayers", "num_layer", "layers", "num_hidden_layers"), ("num_layers",)),
    **dict.fromkeys(("n_head", "nhead", "n_heads", "num_attention_heads", "heads"), ("num_heads",)),
    **dict.fromkeys(("dropout_rate", "dropout_prob", "pdrop", "p_dropout", "drop"), ("dropout",)),
    **dict.fromkeys(
        ("context_length", "context_size", "ctx_len", "seq_len", "max_seq_len", "n_ctx", "max_position_embeddings"),
        ("block_size", "max_len"),
    ),
    **dict.fromkeys(("max_length", "maxlen", "max_seq_length"), ("max_len", "block_size")),
    **dict.fromkeys(("vocab", "n_vocab", "ntokens", "ntoken", "vocabulary_size"), ("vocab_size", "num_words")),
    **dict.fromkeys(("num_labels", "n_classes", "nclasses", "n_labels"), ("num_classes",)),
    **dict.fromkeys(("min_count", "min_frequency", "min_df"), ("min_freq", "min_count")),
    **dict.fromkeys(("min_freq",), ("min_count",)),
    **dict.fromkeys(("val_fraction", "valid_split", "validation_split", "val_ratio"), ("val_split", "val_fraction")),
    **dict.fromkeys(("val_split",), ("val_fraction",)),
}


def _similarity(key: str, choice: str) -> float:
    """How alike two key names are: the whole strings and their ``_``-separated words, half each.

    Comparing words keeps ``learning_rate`` away from ``early_stopping_mode`` (which share many letters but no
    word), while ``grad_clipping`` stays close to ``grad_clip`` and ``hiden_dim`` to ``hidden_dim``."""
    ratio = lambda a, b: difflib.SequenceMatcher(None, a, b).ratio()  # noqa: E731
    whole = ratio(key, choice)
    key_words = [w for w in key.split("_") if w]
    choice_words = [w for w in choice.split("_") if w]
    if not key_words or not choice_words:
        return whole

    def side(a: list[str], b: list[str]) -> float:
        return sum(max(ratio(x, y) for y in b) for x in a) / len(a)

    return (whole + (side(key_words, choice_words) + side(choice_words, key_words)) / 2) / 2


def suggest_key(key: str, choices: Any, cutoff: float = 0.5) -> str | None:
    """The valid key a user most likely meant by the unknown ``key``, or None.

    Same name in another case or with dashes first, then :data:`KEY_ALIASES` (``learning_rate`` -> ``lr``), then
    the closest spelling by :func:`_similarity`."""
    choices = [str(c) for c in choices]
    norm = str(key).strip().lower().replace("-", "_")
    for choice in choices:
        if choice.lower() == norm:
            return choice
    for candidate in KEY_ALIASES.get(norm, ()):
        if candidate in choices:
            return candidate
    scored = sorted(((_similarity(norm, c.lower()), c) for c in choices), key=lambda sc: -sc[0])
    return scored[0][1] if scored and scored[0][0] >= cutoff else None


def _check_value(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    """Coerce ``value`` to ``tp`` (int -> float allowed) or record a problem."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            sub: list[str] = []
            out = _check_value(value, arg, where, sub)
            if not sub:
                return out
        problems.append(f"{where}: expected {_type_name(tp)}, got {value!r}")
        return value
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            near = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            problems.append(f"{where}: {value!r} is not one of {', '.join(repr(c) for c in choices)}{hint}")
        return value
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            problems.append(f"{where}: expected {_type_name(tp)}, got {value!r}")
            return value
        (item_tp,) = get_args(tp) or (Any,)
        return [_check_value(v, item_tp, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
            return value
        return _build(tp, value, where, problems)
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            problems.append(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{where}: expected a number, got {value!r}")
            return value
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            problems.append(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _build(cls: type[T], data: dict, where: str, problems: list[str]) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            near = suggest_key(str(key), fields)
            hint = f"; did you mean '{near}'?" if near else f"; valid keys: {', '.join(fields)}"
            problems.append(f"{where}.{key}: unknown key{hint}")
            continue
        kwargs[key] = _check_value(value, hints[key], f"{where}.{key}", problems)
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    for name in missing:
        problems.append(f"{where}.{name}: required key is missing")
    if problems:
        return None  # type: ignore[return-value]
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as err:
            problems.append(f"{where}: {err}")
    return obj


def config_from_dict(cls: type[T], data: dict | None, where: str = "config") -> T:
    """Build the dataclass ``cls`` from ``data``; raise one ConfigError listing every problem."""
    problems: list[str] = []
    obj = _build(cls, dict(data or {}), where, problems)
    if problems:
        head = problems[:8]
        more = f"\n  ... and {len(problems) - 8} more" if len(problems) > 8 else ""
        raise ConfigError("invalid config:\n  " + "\n  ".join(head) + more)
    return obj


def config_to_dict(obj: Any) -> Any:
    """A JSON-friendly copy of a (nested) config dataclass."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: config_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [config_to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: config_to_dict(v) for k, v in obj.items()}
    return obj


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict:
    """``["train.lr=1e-3", "model.hidden_dim=256"]`` -> nested dict; values are parsed as YAML scalars."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not KEY=VALUE; write e.g. train.lr=1e-3 or epochs=2")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} has an empty key; write e.g. train.lr=1e-3")
        try:
            value = yaml_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {part!r}")
        node[parts[-1]] = value
    return out


def merge(base: dict, overrides: dict) -> dict:
    """Recursively merge ``overrides`` into a copy of ``base``."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def resolve_short_overrides(overrides: dict, sections: dict[str, type]) -> dict:
    """Let ``epochs=2`` mean ``train.epochs=2`` when exactly one section has that field.

    ``sections`` maps a top-level section name to its dataclass. Keys that are already sections pass through.
    """
    out: dict = {}
    for key, value in overrides.items():
        if key in sections:
            out = merge(out, {key: value})
            continue
        owners = [name for name, cls in sections.items() if key in {f.name for f in dataclasses.fields(cls)}]
        if len(owners) == 1:
            out = merge(out, {owners[0]: {key: value}})
        elif len(owners) > 1:
            raise ConfigError(
                f"override {key!r} is ambiguous: it is a key of {', '.join(owners)}; "
                f"write e.g. {owners[0]}.{key}=..."
            )
        else:
            every = sorted({f"{s}.{f.name}" for s, c in sections.items() for f in dataclasses.fields(c)})
            near = suggest_key(key, sorted({e.split(".", 1)[1] for e in every}) + list(sections))
            homes = [e for e in every if e.split(".", 1)[1] == near]
            if near is None:
                hint = f"; name its section too ({', '.join(f'{name}.KEY' for name in sections)})"
            elif len(homes) == 1:
                hint = f"; did you mean {near!r} ({homes[0]}={value})?"
            else:
                hint = f"; did you mean {near!r}?"
            raise ConfigError(f"override {key!r}: unknown key{hint}")
    return out


def list_presets(family: str) -> list[str]:
    folder = _preset_folder(family)
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_text(family: str, name: str) -> str | None:
    """The text of the shipped preset ``name`` of ``family``, or None when there is none."""
    item = _preset_folder(family) / f"{name}.yaml"
    return item.read_text(encoding="utf-8") if item.is_file() else None


def read_config_file(path: Path, text: str | None = None) -> dict:
    """Read a YAML or JSON config file into a dict, naming the file and line on a syntax error."""
    if text is None:
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not UTF-8 (byte {err.start}); save it as UTF-8") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml_load(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: invalid YAML ({getattr(err, 'problem', err)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of sections, got {type(data).__name__}")
    return data


#: the records of a run's config.json that are not config sections
RUN_METADATA_KEYS = frozenset({"format_version", "model_type", "lmlab_version"})


def load_preset(name_or_path: str, family: str, sections: Iterable[str] | None = None) -> dict:
    """Read a shipped preset by name (``lmlab/configs/<family>/<name>.yaml``), a YAML/JSON file by path, or the
    config of a run directory (its ``config.json``: the run's own settings, e.g. for ``--resume``; only the
    ``sections`` named are kept, the run's other records such as labels or corpus facts are not config)."""
    path = Path(name_or_path)
    if path.is_dir():
        return _run_dir_preset(path, sections)
    if path.suffix in {".yaml", ".yml", ".json"} or path.exists():
        return read_config_file(path)
    text = preset_text(family, name_or_path)
    if text is not None:
        return read_config_file(Path(f"{family}/{name_or_path}.yaml"), text)
    names = list_presets(family)
    near = difflib.get_close_matches(name_or_path, names, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    raise ConfigError(
        f"unknown {family} preset {name_or_path!r}{hint} (presets: {', '.join(names) or 'none'}; "
        "or pass a path to a .yaml/.json file)"
    )


def _run_dir_preset(path: Path, sections: Iterable[str] | None) -> dict:
    """The config sections of the run directory ``path`` (``--preset RUN_DIR``, and ``--resume`` without --preset)."""
    file = path / "config.json"
    if not file.is_file():
        raise ConfigError(
            f"{path} is a folder without config.json, not a run directory; give --preset a preset name, "
            "a .yaml/.json file or a run directory"
        )
    data = read_config_file(file)
    keep = set(sections) if sections is not None else None
    return {k: v for k, v in data.items()
            if k not in RUN_METADATA_KEYS and isinstance(v, dict) and (keep is None or k in keep)}


# ------------------------------------------------------------------------------------------ run-level helpers
#: train keys that may change when a run is resumed: they decide when to stop, what to print, where to run
RESUMABLE_TRAIN_KEYS = frozenset(
    {"epochs", "max_steps", "max_time_s", "progress", "patience", "log_every", "device", "num_threads", "tensorboard"}
)


def resolve_run_config(run_cls: type[T], family: str, preset: str, overrides=()) -> T:
    """Preset (a name in ``configs/<family>`` or a YAML/JSON file) + ``key=value`` overrides -> ``run_cls``.

    ``run_cls`` is a family's run dataclass whose fields are its sections (``model``, ``data``, ``train``...);
    a bare key such as ``epochs=2`` goes to the one section that has it. Everything is validated before any
    heavy work starts.
    """
    hints = typing.get_type_hints(run_cls)
    sections = {f.name: hints[f.name] for f in dataclasses.fields(run_cls) if dataclasses.is_dataclass(hints[f.name])}
    base = load_preset(preset, family, sections=[f.name for f in dataclasses.fields(run_cls)])
    merged = merge(base, resolve_short_overrides(parse_overrides(list(overrides)), sections))
    return config_from_dict(run_cls, merged, where="config")


def check_resume_compatible(
    old: dict, new: dict, run_dir, ignore: dict[str, set[str] | str] | None = None, defaults: dict | None = None
) -> None:
    """Refuse to resume ``run_dir`` when its saved config differs from the new one in anything but stopping knobs.

    ``ignore`` maps a section to keys filled in from the data (e.g. ``{"model": {"vocab_size"}}``) or to ``"*"``
    for a section that never affects training (e.g. decoding settings). ``defaults`` (the run config's defaults
    as a dict) lets a run saved before a key existed resume: a key missing from the saved config matches when
    the new value is that key's default.
    """
    from lmlab.errors import CheckpointError

    ignore = dict(ignore or {})
    if ignore.get("train") != "*":
        ignore["train"] = set(ignore.get("train", set())) | RESUMABLE_TRAIN_KEYS
    diffs = []
    for section in sorted(new):  # the sections of the run config; other records in config.json are facts
        a, b = old.get(section), new.get(section)
        if not isinstance(b, dict):
            continue
        skip = ignore.get(section, set())
        if skip == "*":
            continue
        a, b = a or {}, b or {}
        known = (defaults or {}).get(section) or {}
        for key in sorted(set(a) | set(b)):
            if key not in a and key in known and b.get(key) == known[key]:
                continue  # a key added after the run was saved, left at its default
            if key not in skip and a.get(key) != b.get(key):
                diffs.append(f"{section}.{key}: {a.get(key)!r} -> {b.get(key)!r}")
    if diffs:
        raise CheckpointError(
            f"cannot resume {run_dir}: the config differs from the saved one ({'; '.join(diffs[:4])}); "
            "resume with the same preset and overrides, or start a new run with --out"
        )
