"""Run directories: the only format lmlab persists.

A run directory holds::

    config.json          format_version, model_type, lmlab_version and the config sections
    model.safetensors    the weights to use (the best by the early-stopping metric, or the last)
    vocab.json / tokenizer.json / ...   whatever the family needs to turn text into ids and back
    metrics.jsonl        one JSON object per logged event
    checkpoints/last/    resume state: model.safetensors, optimizer.pt (tensors only, loaded with
                         weights_only=True) and trainer_state.json, written last as the commit marker

Nothing is pickled. Every file is written to a temporary name in the same folder and renamed into place, so a
process killed mid-write leaves the previous file intact.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError

from lmlab.errors import CheckpointError

if TYPE_CHECKING:  # torch is imported lazily: word vectors and configs don't need it
    import torch

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"


def _lmlab_version() -> str:
    from lmlab import __version__

    return __version__


def _file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give: 0o666 less the process umask (mkstemp uses 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | Path, what: str = "file") -> Any:
    """Read a JSON file, turning a missing or truncated file into a CheckpointError that names it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: {what} is truncated or not valid JSON ({err}); re-create the run") from None


#: what a run directory may hold besides the files above (every family's artefacts; a folder name stands for
#: everything in it). ``--overwrite`` replaces a folder only when everything in it is one of these.
RUN_ENTRIES = frozenset({
    CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE, "checkpoints", "tensorboard", "data", "tokens",
    "tokenizer.json", "vocab.json", "src_codec.json", "tgt_codec.json", "labels.json",
    "vectors.safetensors", "vectors.txt", "vectors.bin", "vectors.glove.txt", "vectors.npy",
    "train.bin", "val.bin", "eval.bin", "cooc.bin", "curves.png", "samples.txt", "report.md", "report.html",
    ".work",  # word vectors: the encoded corpus while training
    "chat.json",  # an imported GPT run (lmlab gpt import): its chat template and stop tokens
})
#: the hidden sibling that holds a run replaced by ``--overwrite`` until the new run has its first checkpoint
REPLACED_SUFFIX = ".lmlab-replaced"


#: what the folders among RUN_ENTRIES may hold (checkpoints, token files, TensorBoard events, work files)
RUN_FOLDER_FILES = (".safetensors", ".json", ".pt", ".bin", ".int32", ".keys", ".vals", ".tmp")


def _is_run_file_in_folder(path: Path) -> bool:
    name = path.name
    return name.endswith(RUN_FOLDER_FILES) or name.startswith("events.out.tfevents.")


def _is_run_entry(entry: Path) -> bool:
    """Whether ``entry`` (a child of a folder) is something an lmlab run writes. A folder counts only when every
    file in it is a run's file, so a user's ``data/survey.csv`` is never taken for a run's token folder."""
    name = entry.name
    if entry.is_dir() and not entry.is_symlink():
        return name in RUN_ENTRIES and all(
            p.is_dir() or _is_run_file_in_folder(p) for p in entry.rglob("*")
        )
    return (
        name in RUN_ENTRIES
        or name.endswith((".png", ".meta.json"))
        or (name.startswith(".") and name.endswith(".tmp"))  # a temporary file of an atomic write
    )


def replaced_path(path: str | Path) -> Path:
    """Where ``--overwrite`` keeps the old run of ``path`` while the new one starts."""
    path = Path(path)
    return path.parent / f".{path.name}{REPLACED_SUFFIX}"


def _describe(entries: list[str], limit: int = 4) -> str:
    shown = ", ".join(entries[:limit])
    return shown + (f" and {len(entries) - limit} more" if len(entries) > limit else "")


def check_new_run_dir(path: str | Path, overwrite: bool = False, inputs=()) -> None:
    """Refuse, before anything is read or written, a ``--out`` that a new run may not use. Deletes nothing.

    A new run needs an empty or missing folder. With ``--overwrite`` it may also replace an lmlab run (a folder
    holding only run files), never the working directory or one of its ancestors, never a folder that holds
    (or is) one of the run's ``inputs``, never a folder with other files.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{path} exists and is not a folder; choose another --out")
    aside = replaced_path(path)
    if aside.exists():
        raise CheckpointError(
            f"{aside} holds a run that an interrupted --overwrite had set aside; move it back "
            f"(mv {aside} {path}) or delete it, then run again"
        )
    if not path.is_dir() or not any(path.iterdir()):
        return
    if not overwrite:
        raise CheckpointError(
            f"{path} already exists and is not empty; pass --overwrite to replace it, "
            "--resume to continue it, or choose another --out"
        )
    target = path.resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise CheckpointError(
            f"--overwrite refuses to replace {path}: it is the working directory or one of its parents; "
            "choose a new folder for --out (e.g. --out runs/NAME)"
        )
    for item in inputs:
        if item is None or str(item) == "-":
            continue
        source = Path(item).resolve()
        if source == target or target in source.parents:
            raise CheckpointError(
                f"--overwrite refuses to replace {path}: it holds the input {item}; choose another --out"
            )
    foreign = []
    if _foreign_config(path / CONFIG_FILE):  # e.g. a Hugging Face model folder: config.json, model.safetensors
        foreign.append(f"{CONFIG_FILE}, which no lmlab run wrote")
    for p in sorted(path.iterdir()):
        if _is_run_entry(p):
            continue
        if p.is_dir() and p.name in RUN_ENTRIES:  # a run's folder name holding other files: name them
            foreign += [str(f.relative_to(path)) for f in sorted(p.rglob("*"))
                        if not f.is_dir() and not _is_run_file_in_folder(f)]
        else:
            foreign.append(p.name + ("/" if p.is_dir() else ""))
    if foreign:
        raise CheckpointError(
            f"--overwrite refuses to replace {path}: it holds files that are not an lmlab run's "
            f"({_describe(foreign)}); move them away or choose another --out"
        )


def _foreign_config(path: Path) -> bool:
    """Whether ``path`` is a config.json that no lmlab run wrote: a JSON object without ``format_version`` (a
    Hugging Face model's, a user's). A missing or unreadable one is not named here (a run killed mid-start)."""
    if not path.is_file():
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return not isinstance(data, dict) or "format_version" not in data


def has_checkpoint(path: str | Path) -> bool:
    """Whether a run directory holds something a user would miss: resume state or trained weights."""
    path = Path(path)
    return (path / "checkpoints" / "last.json").is_file() or (path / WEIGHTS_FILE).is_file() or any(
        (path / name).is_file() for name in ("vectors.safetensors", "vectors.txt", "vectors.bin")
    )


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


class StagedRunDir:
    """A new run in ``path`` that replaces an old one only once it has something to keep.

    ``with StagedRunDir(path, replace=True):`` moves an existing run (already allowed by
    :func:`check_new_run_dir`) to a hidden sibling and creates ``path`` afresh. If the body fails before the
    new run has a checkpoint, the new folder is removed and the old run moved back, untouched; once the new run
    has a checkpoint (or the body finishes), the old run is deleted. A process killed in between leaves the old
    run in the sibling, which the next start names. With ``replace=False`` (resume) it only makes sure ``path``
    exists.
    """

    def __init__(self, path: str | Path, replace: bool = True) -> None:
        self.path = Path(path)
        self.replace = replace
        self.aside: Path | None = None
        self.created = False

    def __enter__(self) -> Path:
        if self.replace:
            if self.path.is_dir() and any(self.path.iterdir()):
                self.aside = replaced_path(self.path)
                os.replace(self.path, self.aside)
            self.created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self.replace and not has_checkpoint(self.path):
            if self.created:
                _remove_tree(self.path)
            if self.aside is not None:
                _remove_tree(self.path)
                os.replace(self.aside, self.path)
                self.aside = None
            return
        if self.aside is not None:
            _remove_tree(self.aside)
            self.aside = None


def prepare_run_dir(path: str | Path, overwrite: bool = False, resume: bool = False, inputs=()) -> Path:
    """Create ``path`` for a new run (replacing an old run only under the rules of :func:`check_new_run_dir`).

    Prefer :class:`StagedRunDir`, which keeps the old run until the new one has a checkpoint; this deletes the
    old run's files at once (the checks still protect everything that is not a run's).
    """
    path = Path(path)
    if resume:
        if not path.is_dir() or not any(path.iterdir()):
            raise CheckpointError(
                f"cannot resume: {path} does not exist or is empty; drop --resume to start a new run"
            )
        return path
    check_new_run_dir(path, overwrite=overwrite, inputs=inputs)
    if path.is_dir():
        for child in list(path.iterdir()):
            if child.is_dir() and not child.is_symlink():
                _remove_tree(child)
            else:
                child.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_config(run_dir: str | Path, model_type: str, sections: Mapping[str, Any]) -> dict:
    """Write ``config.json`` with the format version, the model type and the given config sections."""
    data = {"format_version": FORMAT_VERSION, "model_type": model_type, "lmlab_version": _lmlab_version()}
    data.update(sections)
    atomic_write_json(Path(run_dir) / CONFIG_FILE, data)
    return data


def load_config(run_dir: str | Path, expected_type: str | tuple[str, ...] | None = None) -> dict:
    """Read ``config.json`` of a run directory, checking its format version and model type."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a run directory (it does not exist); check the path")
    data = read_json(run_dir / CONFIG_FILE, "config.json")
    if isinstance(data, dict) and "format_version" not in data and (
            "architectures" in data or "transformers_version" in data):
        raise CheckpointError(
            f"{run_dir} is a Hugging Face model folder, not an lmlab run directory; bring it in with "
            f"lmlab gpt import {run_dir} --out RUN_DIR and use RUN_DIR"
        )
    if not isinstance(data, dict) or "model_type" not in data or "format_version" not in data:
        missing = "model_type" if not isinstance(data, dict) or "model_type" not in data else "format_version"
        raise CheckpointError(f"{run_dir / CONFIG_FILE}: no {missing!r} key; this is not an lmlab run directory")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{run_dir / CONFIG_FILE}: format_version {version!r} is not supported by this lmlab "
            f"(expects {FORMAT_VERSION}); use the lmlab version that wrote it"
        )
    if expected_type is not None:
        expected = (expected_type,) if isinstance(expected_type, str) else expected_type
        if data["model_type"] not in expected:
            raise CheckpointError(
                f"{run_dir} holds a {data['model_type']!r} model, not {' or '.join(map(repr, expected))}; "
                "use the matching lmlab command"
            )
    return data


def saved_sections(run_dir: str | Path, saved: Mapping[str, Any], names=("model", "data", "train")) -> dict:
    """The config sections ``names`` of a loaded ``config.json`` (those it has); CheckpointError when the
    ``model`` section, which every trained run writes, is missing or not an object."""
    if not isinstance(saved.get("model"), dict):
        raise CheckpointError(
            f"{Path(run_dir) / CONFIG_FILE}: the 'model' section is missing or not an object; the file was edited "
            "or damaged: restore it"
        )
    return {k: saved[k] for k in names if k in saved}


def save_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors, atomically. Shared storage (tied weights) is stored once per name."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    _save_atomic(path, flat, metadata)


#: safetensors metadata key (a JSON list of names) of the tensors a file stores transposed: a column-major
#: weight W (strides (1, rows)) is written as W^T, which is contiguous, so that :func:`map_weights` gets W back
#: as the zero-copy view ``stored.t()`` in the layout decoding uses (:meth:`lmlab.models.gpt.GPT.column_major_`)
TRANSPOSED_KEY = "lmlab.transposed"


def save_tensors_as_laid_out(path: str | Path, tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Save CPU tensors as safetensors, atomically, keeping their memory layout and copying nothing: a column-major
    2-D tensor is written as its (contiguous) transpose and named under :data:`TRANSPOSED_KEY` in the file's
    metadata; every loader here (:func:`load_tensors`, :func:`load_weights`, :func:`stream_weights`,
    :func:`map_weights`) reads it back in the tensor's own shape. Returns the transposed names."""
    flat, transposed = {}, []
    for name, value in tensors.items():
        value = value.detach()
        if value.dim() == 2 and min(value.shape) > 1 and value.stride() == (1, value.shape[0]):
            flat[name] = value.t()  # (cols, rows), contiguous
            transposed.append(name)
        else:
            flat[name] = value.contiguous()
    _save_atomic(path, flat, {"format": "pt", TRANSPOSED_KEY: json.dumps(transposed)})
    return transposed


def _save_atomic(path: str | Path, flat: Mapping[str, torch.Tensor], metadata: dict[str, str] | None) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(flat, tmp, metadata=metadata)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _last_checkpoint_weights(run_dir: Path) -> Path | None:
    """The weights of a run's newest resume checkpoint, if it has one."""
    pointer = run_dir / "checkpoints" / "last.json"
    try:
        folder = json.loads(pointer.read_text(encoding="utf-8")).get("dir", "")
    except (OSError, ValueError, AttributeError):
        return None
    weights = run_dir / "checkpoints" / str(folder) / WEIGHTS_FILE
    return weights if folder and weights.is_file() else None


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file, naming it when it is missing or truncated."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file() and path.name == WEIGHTS_FILE:
        last = _last_checkpoint_weights(path.parent)
        if last is not None:
            import sys

            print(f"warning: {path} is missing (training stopped before the first evaluation); "
                  f"using the last checkpoint's weights ({last})", file=sys.stderr)
            path = last
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file is missing; was training interrupted before the first save?")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: weights file is truncated or corrupt ({err}); re-train or restore it") from None
    for name in transposed_names(path):  # stored transposed: back to the tensor's own shape (a view)
        if name in tensors:
            tensors[name] = tensors[name].t()
    return tensors


def save_weights(path: str | Path, model: torch.nn.Module) -> None:
    save_tensors(path, model.state_dict())


def load_weights(path: str | Path, model: torch.nn.Module) -> None:
    """Load safetensors weights into ``model``, checking names and shapes and naming every mismatch."""
    tensors = load_tensors(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    wrong = [
        f"{k} {tuple(tensors[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    _check_names(path, missing, unexpected, wrong)
    model.load_state_dict(tensors)


_ST_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64", "I64": "int64",
              "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def read_safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """The tensor descriptions of a safetensors file (name -> {"dtype", "shape", "data_offsets"}) and where its
    data starts; CheckpointError when the header is malformed or the file is shorter than the header says."""
    header, start, _ = _read_header(path)
    return header, start


def transposed_names(path: str | Path) -> set[str]:
    """The names of the tensors a safetensors file stores transposed (:data:`TRANSPOSED_KEY`; empty for files
    written without it, e.g. by lmlab before 2026-12 or by the trainer)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file is missing; was training interrupted before the first save?")
    return _transposed(path, _read_header(path)[2])


def laid_out(path: str | Path) -> bool:
    """Whether a safetensors file was written by :func:`save_tensors_as_laid_out` (its layout recorded, even when
    no tensor is transposed), i.e. whether :func:`map_weights` can use it in place."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file is missing; was training interrupted before the first save?")
    return TRANSPOSED_KEY in _read_header(path)[2]


def _transposed(path: Path, metadata: Mapping[str, Any]) -> set[str]:
    raw = metadata.get(TRANSPOSED_KEY)
    if raw is None:
        return set()
    try:
        names = json.loads(raw)
    except (TypeError, ValueError):
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{path}: metadata {TRANSPOSED_KEY} is not a JSON list of names; restore the file")
    return set(names)


def _read_header(path: Path) -> tuple[dict[str, Any], int, dict[str, Any]]:
    """(tensor descriptions, where the data starts, the ``__metadata__`` strings) of a safetensors file."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        n = int.from_bytes(raw, "little") if len(raw) == 8 else -1
        if n <= 0 or 8 + n > size:
            raise CheckpointError(f"{path}: weights file is truncated or corrupt (bad header); re-train or restore it")
        try:
            header = json.loads(fh.read(n))
        except ValueError:
            raise CheckpointError(f"{path}: weights file is truncated or corrupt (header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: weights file is truncated or corrupt (header is not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    if 8 + n + end > size:
        raise CheckpointError(f"{path}: weights file is truncated ({size} bytes, the header needs {8 + n + end})")
    return header, 8 + n, metadata if isinstance(metadata, dict) else {}


#: the largest block of a tensor :func:`stream_weights` reads through a buffer (small: a column-major copy
#: from it stays in the L2 cache, ~10x faster than from a 16 MB one)
_STREAM_CHUNK_BYTES = 256 << 10


def _check_names(path: Path, missing: list[str], unexpected: list[str], wrong: list[str]) -> None:
    """One CheckpointError naming (up to 4 of each) the missing, unexpected and wrongly shaped tensors, if any."""
    parts = [f"{what} {', '.join(names[:4])}"
             for what, names in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)) if names]
    if parts:
        raise CheckpointError(f"{path}: weights do not match the model in config.json ({'; '.join(parts)})")


def _check_file_against(path: Path, header: Mapping[str, Any], expected: Mapping[str, torch.Tensor],
                        tied: Mapping[str, str], transposed: set[str]) -> None:
    """:func:`_check_names` for a file's header (a transposed tensor's stored shape is the reverse of its own)."""
    names = set(header)
    missing = [k for k in expected if k not in names and not (k in tied and tied[k] in names)]
    unexpected = sorted(k for k in names if k not in expected)

    def shape(k: str) -> tuple[int, ...]:
        stored = tuple(header[k]["shape"])
        return stored[::-1] if k in transposed else stored

    wrong = [f"{k} {shape(k)} != {tuple(expected[k].shape)}"
             for k in sorted(names & set(expected)) if shape(k) != tuple(expected[k].shape)]
    _check_names(path, missing, unexpected, wrong)


def _file_dtype(path: Path, name: str, info: Mapping[str, Any]) -> torch.dtype:
    import torch

    dtype = getattr(torch, _ST_DTYPES.get(info["dtype"], ""), None)
    if dtype is None:
        raise CheckpointError(f"{path}: tensor {name} has dtype {info['dtype']}, which lmlab does not read")
    return dtype


def _checked_header(path: Path, model: torch.nn.Module, tied: Mapping[str, str] | None):
    """The header of the safetensors file ``path`` checked against ``model`` (:func:`load_weights`' checks):
    (header, data start, names stored transposed, the model's state dict)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file is missing; was training interrupted before the first save?")
    header, data_start, metadata = _read_header(path)
    transposed = _transposed(path, metadata)
    expected = model.state_dict(keep_vars=True)
    _check_file_against(path, header, expected, dict(tied or {}), transposed)
    return header, data_start, transposed, expected


def stream_weights(path: str | Path, model: torch.nn.Module, tied: Mapping[str, str] | None = None) -> None:
    """Read the tensors of a safetensors file straight into ``model``'s parameters, one at a time, with plain
    file reads (no memory map whose pages would count as a second copy of the weights), converting dtypes;
    :func:`load_weights`' checks. ``tied`` maps a name that may be absent from the file to the one it shares
    storage with (a tied output layer)."""
    import torch

    path = Path(path)
    header, data_start, transposed, expected = _checked_header(path, model, tied)
    with open(path, "rb", buffering=0) as fh, torch.no_grad():
        for name in sorted(header, key=lambda k: header[k]["data_offsets"][0]):
            _stream_one(path, fh, name, header[name], data_start, expected[name], name in transposed)


def _stream_one(path: Path, fh: Any, name: str, info: Mapping[str, Any], data_start: int, dest: torch.Tensor,
                transposed: bool) -> None:
    dtype = _file_dtype(path, name, info)
    lo, hi = (int(x) for x in info["data_offsets"])
    fh.seek(data_start + lo)
    if _read_tensor(fh, dest.t() if transposed else dest, tuple(info["shape"]), dtype) != hi - lo:
        raise CheckpointError(f"{path}: weights file is truncated or corrupt at {name}; re-train or restore it")


def map_weights(path: str | Path, model: torch.nn.Module, tied: Mapping[str, str] | None = None) -> None:
    """Point ``model``'s parameters at the tensors of a safetensors file mapped into memory, reading and copying
    nothing: the pages are read from the file (or the page cache) when a forward pass first touches them, as
    ``transformers``' ``from_pretrained`` does. The map is private (``torch.from_file(shared=False)``): writing to
    a parameter (training) copies that page and never changes the file. A tensor stored transposed
    (:data:`TRANSPOSED_KEY`) becomes the view ``stored.t()``: the parameter's shape, column-major. A tensor whose
    dtype differs from its parameter's, that is not aligned for its dtype, or whose parameter is not on the CPU is
    read into the parameter instead (:func:`stream_weights`). Checks as :func:`load_weights`; ``tied`` as
    :func:`stream_weights`."""
    import torch

    path = Path(path)
    header, data_start, transposed, expected = _checked_header(path, model, tied)
    mapped = torch.from_file(str(path), shared=False, size=path.stat().st_size, dtype=torch.uint8)
    copied = []
    with torch.no_grad():
        for name, info in header.items():
            dtype, dest = _file_dtype(path, name, info), expected[name]
            lo, hi = (data_start + int(x) for x in info["data_offsets"])
            if dest.dtype != dtype or dest.device.type != "cpu" or lo % dtype.itemsize:
                copied.append(name)
                continue
            stored = mapped[lo:hi].view(dtype).view(tuple(info["shape"]))
            dest.data = stored.t() if name in transposed else stored
    if copied:
        with open(path, "rb", buffering=0) as fh, torch.no_grad():
            for name in copied:
                _stream_one(path, fh, name, header[name], data_start, expected[name], name in transposed)


def _read_tensor(fh: Any, dest: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """Read a tensor of ``shape`` and ``dtype`` from ``fh`` into ``dest``: straight into it when it is a
    contiguous CPU tensor of that dtype, else through a buffer of at most ``_STREAM_CHUNK_BYTES`` (256 KB), a block of
    rows at a time (another dtype, a device, a column-major layout: no full second copy). The bytes read (a
    short count: the file ended)."""
    import torch

    def fill(buf: torch.Tensor) -> int:  # read until full (one read() returns at most ~2 GB) or the end
        if not buf.numel():
            return 0
        view = memoryview(buf.view(torch.uint8).numpy()).cast("B")
        done = 0
        while done < len(view):
            n = fh.readinto(view[done:])
            if not n:
                return -1
            done += n
        return done

    direct = dest.dtype == dtype and dest.device.type == "cpu" and dest.is_contiguous()
    if direct or not shape:
        buf = dest if direct else torch.empty(shape, dtype=dtype)
        n = fill(buf)
        if buf is not dest and n >= 0:
            dest.copy_(buf)
        return max(n, 0)
    row_bytes = max(1, math.prod(shape[1:]) * torch.empty((), dtype=dtype).element_size())
    step = max(1, _STREAM_CHUNK_BYTES // row_bytes)
    # a strided copy on the CPU through numpy: torch's copy_ opens an OpenMP region per block, which on a busy
    # machine with 2+ threads costs more than the copy (loading GPT-2 small took 12 s instead of 2)
    numpy_dest = dest.detach().numpy() if dest.device.type == "cpu" and dest.dtype == dtype != torch.bfloat16 else None
    buf, total = None, 0
    for r in range(0, shape[0], step):
        rows = min(step, shape[0] - r)
        if buf is None or buf.shape[0] != rows:
            buf = torch.empty((rows, *shape[1:]), dtype=dtype)
        n = fill(buf)
        if n < 0:
            return total
        if numpy_dest is not None:
            numpy_dest[r : r + rows] = buf.numpy()
        else:
            dest[r : r + rows].copy_(buf)
        total += n
    return total


def torch_load_state(path: str | Path) -> Any:
    """Load optimizer/RNG state saved with ``torch.save`` of tensors and plain containers only."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: resume state is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt files
        raise CheckpointError(f"{path}: resume state is truncated or corrupt ({type(err).__name__})") from None


def torch_save_state(path: str | Path, obj: Any) -> None:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def append_metrics(run_dir: str | Path, record: Mapping[str, Any]) -> None:
    with open(Path(run_dir) / METRICS_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(dict(record)) + "\n")


def truncate_metrics(run_dir: str | Path, step: int) -> None:
    """Drop the records logged after ``step`` (and a line cut off by a crash): a resumed run logs them again."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or int(record.get("step", 0) or 0) <= step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Read metrics.jsonl; a line cut off by a crash at the end is ignored."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: no metrics recorded in this run directory")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
