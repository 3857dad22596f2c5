"""Hugging Face checkpoints in and out: ``lmlab gpt import HF_DIR --out RUN_DIR`` and ``lmlab gpt export``.

**Import** reads a model folder in the Hugging Face layout (``config.json``; ``model.safetensors`` or shards
named by ``model.safetensors.index.json``; ``tokenizer.json`` with ``tokenizer_config.json``,
``generation_config.json``, ``chat_template.jinja``) and writes an lmlab GPT run directory:

* ``config.json`` - the architecture as :class:`~lmlab.models.gpt.GPTConfig` options (:func:`gpt_config_from_hf`;
  GPT-2: learned positions, LayerNorm, tanh-GELU; Llama / Qwen2 / Mistral: RMSNorm, rotary "half" convention,
  SwiGLU, grouped-query attention, q/k/v biases for Qwen2) and an ``imported`` section (source, dtype);
* ``model.safetensors`` - the weights, renamed and re-laid-out (:func:`hf_layout`: q/k/v and gate/up fused),
  read from the memory-mapped shards one tensor at a time and copied into the model (no second full copy);
  bf16/fp16 become float32 unless ``dtype`` keeps them. The wide projections (the output layer, the MLP's
  first one; :meth:`GPT.wide_linears`) are stored transposed, (in, out), as decoding on a CPU reads them
  (GPT-2's Conv1D matrices already are), and named in the file's metadata: ``lmlab.load`` maps the file and
  copies nothing (:func:`lmlab.checkpoint.map_weights`). A bf16 import is stored row-major (metadata with no
  transposed name), as :mod:`lmlab.models.bf16` reads it: bf16 weights, float32 arithmetic on a CPU;
* ``tokenizer.json`` - the tokenizer as :class:`~lmlab.data.tokenizers.HFTokenizer` (its tokenizer.json, special
  tokens and stop ids);
* ``chat.json`` - ``{"template", "bos_token", "eos_token", "stop_token_ids", "add_bos"}`` for chat.

Everything is written into a hidden sibling folder that is renamed to ``RUN_DIR`` at the end, so a failed
import leaves nothing behind. Every bad input is a :class:`~lmlab.errors.CheckpointError` or ``ConfigError``
naming the file and what to do.

**Export** writes an lmlab GPT run as a folder ``transformers`` loads with ``AutoModelForCausalLM`` and
``AutoTokenizer``: learned positions -> ``gpt2``; rotary + RMSNorm + SwiGLU -> ``llama`` (``qwen2`` with q/k/v
biases); lmlab's interleaved rotary pairs are converted by permuting the rows of q and k. The folder also holds
``lmlab_export.json`` (the run it came from): ``--overwrite`` replaces only a folder that has it and nothing an
export does not write, never a downloaded model folder.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lmlab import checkpoint
from lmlab.errors import CheckpointError, ConfigError

#: the Hugging Face ``model_type`` values import understands
SUPPORTED_MODEL_TYPES = ("gpt2", "llama", "qwen2", "mistral")
DTYPES = ("float32", "bfloat16", "float16")
CHAT_FILE = "chat.json"
#: the file that marks a folder ``lmlab gpt export`` wrote: ``--overwrite`` replaces only such a folder
EXPORT_MARKER = "lmlab_export.json"
_LLAMA_LIKE = ("llama", "qwen2", "mistral")
#: tensors of a checkpoint that hold no weights (buffers some versions saved)
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")


# ------------------------------------------------------------------------------------------------ config
def _get(cfg: dict, *names: str, default: Any = None) -> Any:
    for name in names:
        if cfg.get(name) is not None:
            return cfg[name]
    return default


def _rope_options(cfg: dict, where: str) -> dict[str, Any]:
    """rope_base and rope_scaling options from ``rope_theta``/``rope_scaling`` or ``rope_parameters``."""
    params = dict(cfg.get("rope_parameters") or {})
    scaling = dict(cfg.get("rope_scaling") or {})
    theta = _get(params, "rope_theta", default=_get(cfg, "rope_theta", default=10000.0))
    merged = {**scaling, **params}
    kind = merged.get("rope_type", merged.get("type", "default")) or "default"
    out: dict[str, Any] = {"rope_base": float(theta)}
    if kind == "default":
        return out
    if kind == "linear":
        return {**out, "rope_scaling": "linear", "rope_factor": float(merged["factor"])}
    if kind == "llama3":
        return {
            **out, "rope_scaling": "llama3", "rope_factor": float(merged["factor"]),
            "rope_low_freq_factor": float(merged["low_freq_factor"]),
            "rope_high_freq_factor": float(merged["high_freq_factor"]),
            "rope_original_context": int(merged["original_max_position_embeddings"]),
        }
    raise ConfigError(f"{where}: rope scaling {kind!r} is not supported; supported: default, linear, llama3")


def gpt_config_from_hf(cfg: dict, where: str = "config.json"):
    """The :class:`~lmlab.models.gpt.GPTConfig` of a Hugging Face ``config.json`` (ConfigError for a
    ``model_type`` or option lmlab cannot reproduce exactly, listing what is supported)."""
    from lmlab.models.gpt import GPTConfig

    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(
            f"{where}: model_type {model_type!r} is not supported; lmlab imports {', '.join(SUPPORTED_MODEL_TYPES)} "
            "(and models that use one of these layouts, e.g. SmolLM, TinyLlama: llama)"
            + ("; a BERT is a masked LM: lmlab mlm import" if model_type == "bert" else "")
        )
    problems = []
    tie = bool(cfg.get("tie_word_embeddings", True))
    if model_type == "gpt2":
        act = cfg.get("activation_function", "gelu_new")
        acts = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
        if act not in acts:
            problems.append(f"activation_function {act!r} (supported: {', '.join(acts)})")
        for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
            if cfg.get(flag):
                problems.append(f"{flag}=true")
        if cfg.get("scale_attn_weights", True) is False:
            problems.append("scale_attn_weights=false")
        C = int(cfg["n_embd"])
        kwargs = dict(
            vocab_size=int(cfg["vocab_size"]), block_size=int(_get(cfg, "n_positions", "n_ctx", default=1024)),
            embed_dim=C, num_layers=int(cfg["n_layer"]), num_heads=int(cfg["n_head"]),
            intermediate_size=int(cfg.get("n_inner") or 4 * C), bias=True, position="learned",
            tie_embeddings=tie, norm="layernorm", norm_eps=float(cfg.get("layer_norm_epsilon", 1e-5)),
            mlp=acts.get(act, "gelu"),
        )
    else:
        C, H = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        if cfg.get("hidden_act", "silu") != "silu":
            problems.append(f"hidden_act {cfg.get('hidden_act')!r} (supported: silu)")
        if cfg.get("head_dim") not in (None, C // H):
            problems.append(f"head_dim={cfg['head_dim']} != hidden_size / num_attention_heads = {C // H}")
        if cfg.get("attention_bias") or cfg.get("mlp_bias"):
            problems.append("attention_bias/mlp_bias=true")
        if model_type == "qwen2" and cfg.get("use_sliding_window"):
            problems.append("use_sliding_window=true")
        block = int(cfg.get("max_position_embeddings", 2048))
        window = cfg.get("sliding_window") if model_type == "mistral" else None
        if window:  # exact as long as the context does not exceed the window
            block = min(block, int(window))
        try:
            rope = _rope_options(cfg, where)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: incomplete rope scaling options ({exc!r})") from None
        kwargs = dict(
            vocab_size=int(cfg["vocab_size"]), block_size=block, embed_dim=C,
            num_layers=int(cfg["num_hidden_layers"]), num_heads=H,
            num_kv_heads=int(cfg.get("num_key_value_heads") or H), intermediate_size=int(cfg["intermediate_size"]),
            bias=False, qkv_bias=model_type == "qwen2", position="rope", rope_style="half",
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)), norm="rmsnorm",
            norm_eps=float(cfg.get("rms_norm_eps", 1e-6)), mlp="swiglu", **rope,
        )
    if problems:
        raise ConfigError(f"{where}: {model_type} options lmlab cannot reproduce: {'; '.join(problems)}")
    gcfg = GPTConfig(**kwargs)
    try:
        gcfg.validate()
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return gcfg


# --------------------------------------------------------------------------------------------- the layout
def hf_layout(cfg, model_type: str) -> dict[str, tuple[str, int, int, bool]]:
    """Hugging Face tensor name -> (lmlab parameter, first row, end row, transposed) for ``cfg``.

    Rows are those of the lmlab parameter the tensor fills (q/k/v fill slices of ``attn.qkv``, gate/up of
    ``mlp.fc``); ``transposed``: the tensor is stored (in, out) as GPT-2's Conv1D does."""
    C, D = cfg.embed_dim, cfg.head_dim
    kv, inner = cfg.kv_heads * D, cfg.hidden_dim
    out: dict[str, tuple[str, int, int, bool]] = {}
    if model_type == "gpt2":
        out["wte.weight"] = ("wte.weight", 0, cfg.vocab_size, False)
        out["wpe.weight"] = ("wpe.weight", 0, cfg.block_size, False)
        for i in range(cfg.num_layers):
            h, b = f"h.{i}.", f"blocks.{i}."
            for hf, ours, rows, t in (("ln_1", "ln1", C, False), ("ln_2", "ln2", C, False),
                                      ("attn.c_attn", "attn.qkv", 3 * C, True), ("attn.c_proj", "attn.proj", C, True),
                                      ("mlp.c_fc", "mlp.fc", inner, True), ("mlp.c_proj", "mlp.proj", C, True)):
                out[h + hf + ".weight"] = (b + ours + ".weight", 0, rows, t)
                out[h + hf + ".bias"] = (b + ours + ".bias", 0, rows, False)
        out["ln_f.weight"] = ("ln_f.weight", 0, C, False)
        out["ln_f.bias"] = ("ln_f.bias", 0, C, False)
    else:
        out["model.embed_tokens.weight"] = ("wte.weight", 0, cfg.vocab_size, False)
        for i in range(cfg.num_layers):
            h, b = f"model.layers.{i}.", f"blocks.{i}."
            out[h + "input_layernorm.weight"] = (b + "ln1.weight", 0, C, False)
            out[h + "post_attention_layernorm.weight"] = (b + "ln2.weight", 0, C, False)
            for name, lo, hi in (("q", 0, C), ("k", C, C + kv), ("v", C + kv, C + 2 * kv)):
                out[h + f"self_attn.{name}_proj.weight"] = (b + "attn.qkv.weight", lo, hi, False)
                if cfg.qkv_bias:
                    out[h + f"self_attn.{name}_proj.bias"] = (b + "attn.qkv.bias", lo, hi, False)
            out[h + "self_attn.o_proj.weight"] = (b + "attn.proj.weight", 0, C, False)
            out[h + "mlp.gate_proj.weight"] = (b + "mlp.fc.weight", 0, inner, False)
            out[h + "mlp.up_proj.weight"] = (b + "mlp.fc.weight", inner, 2 * inner, False)
            out[h + "mlp.down_proj.weight"] = (b + "mlp.proj.weight", 0, C, False)
        out["model.norm.weight"] = ("ln_f.weight", 0, C, False)
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = ("lm_head.weight", 0, cfg.vocab_size, False)
    return out


def _canonical(name: str, model_type: str) -> str:
    """Checkpoint names saved from the bare model (no ``transformer.`` / ``model.`` prefix) -> the full ones."""
    if model_type == "gpt2":
        return name.removeprefix("transformer.")
    if name.startswith(("model.", "lm_head.")):
        return name
    return "model." + name


def weight_files(hf_dir: Path) -> dict[Path, list[str] | None]:
    """The safetensors files of a checkpoint -> the names each holds (None: all of a single file)."""
    index = hf_dir / "model.safetensors.index.json"
    single = hf_dir / "model.safetensors"
    if index.is_file():
        data = checkpoint.read_json(index, "safetensors index")
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index}: no \"weight_map\"; the index is malformed")
        files: dict[Path, list[str]] = {}
        for name, file in weight_map.items():
            files.setdefault(hf_dir / file, []).append(name)
        missing = sorted(p.name for p in files if not p.is_file())
        if missing:
            raise CheckpointError(
                f"{hf_dir}: shard(s) {', '.join(missing[:3])} named in {index.name} are missing; copy every shard"
            )
        return dict(files)
    if single.is_file():
        return {single: None}
    if any(hf_dir.glob("*.bin")) or any(hf_dir.glob("*.pt*")):
        raise CheckpointError(
            f"{hf_dir}: only pickled weights (*.bin/*.pt) found; lmlab reads safetensors only (no pickle); "
            "convert them with transformers' save_pretrained(safe_serialization=True)"
        )
    raise CheckpointError(f"{hf_dir}: no model.safetensors or model.safetensors.index.json")


def load_hf_weights(
    model, hf_dir: Path, model_type: str, log: Callable[[str], None] | None = None,
    layout: dict[str, tuple[str, int, int, bool]] | None = None, canonical: Callable[[str], str] | None = None,
    ignored: Callable[[str], bool] | None = None,
) -> None:
    """Copy the checkpoint's tensors into ``model`` one at a time from the memory-mapped files. ``layout``,
    ``canonical`` (checkpoint name -> full name) and ``ignored`` (full names that hold no weights of the model)
    default to the GPT architectures'; another family passes its own (:mod:`lmlab.hf_bert`)."""
    import torch
    from safetensors import SafetensorError, safe_open

    layout = hf_layout(model.config, model_type) if layout is None else layout
    canonical = canonical or (lambda name: _canonical(name, model_type))
    params = model.state_dict(keep_vars=True)
    seen: set[str] = set()
    for path, names in weight_files(hf_dir).items():
        try:
            with safe_open(str(path), framework="pt") as f:
                for name in names if names is not None else list(f.keys()):
                    key = canonical(name)
                    if key not in layout:
                        if ignored is not None:
                            if ignored(key):
                                continue
                        elif key.endswith(_IGNORED_SUFFIXES) or (key == "lm_head.weight" and model.config.tie_embeddings):
                            continue
                        raise CheckpointError(
                            f"{path.name}: unexpected tensor {name!r} for a {model_type} model with this config.json; "
                            "the weights and config.json do not belong together"
                        )
                    target, lo, hi, transposed = layout[key]
                    dest = params[target][lo:hi]
                    expected = tuple(dest.shape[::-1]) if transposed else tuple(dest.shape)
                    try:
                        shape = tuple(f.get_slice(name).get_shape())
                    except SafetensorError:
                        raise CheckpointError(f"{path.name}: the index names {name!r} but the shard lacks it") from None
                    if shape != expected:
                        raise CheckpointError(
                            f"{path.name}: tensor {name!r} has shape {shape}, but config.json implies {expected}; "
                            "the weights and config.json do not belong together"
                        )
                    tensor = f.get_tensor(name)
                    with torch.no_grad():
                        _copy_rows(dest, tensor.t() if transposed else tensor)
                    del tensor
                    seen.add(key)
        except SafetensorError as exc:
            raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({exc}); download it again") from None
    missing = [k for k in layout if k not in seen]
    if missing:
        raise CheckpointError(
            f"{hf_dir}: the checkpoint lacks {len(missing)} tensor(s) config.json needs ({', '.join(missing[:3])})"
        )
    if log:
        log(f"import: {len(seen)} tensors from {len(weight_files(hf_dir))} file(s)")


#: rows per block of a copy between different memory layouts (:func:`_copy_rows`): ~256 KB of the source
_COPY_BLOCK_BYTES = 256 << 10


def _copy_rows(dest, src) -> None:
    """``dest.copy_(src)``; between different layouts (a row-major tensor into a column-major parameter) a
    block of rows at a time, through numpy where it can: one strided copy of the 0.5B model's output layer takes
    3.4 s, blocks that stay in the cache 0.3 s (as :func:`lmlab.checkpoint.stream_weights` reads)."""
    import torch

    if src.dim() != 2 or dest.stride() == src.stride():
        dest.copy_(src)
        return
    step = max(1, _COPY_BLOCK_BYTES // max(1, src.shape[1] * src.element_size()))
    plain = dest.dtype == src.dtype != torch.bfloat16 and dest.device.type == "cpu"
    dest_np, src_np = (dest.detach().numpy(), src.detach().numpy()) if plain else (None, None)
    for r in range(0, src.shape[0], step):
        if plain:
            dest_np[r : r + step] = src_np[r : r + step]
        else:
            dest[r : r + step].copy_(src[r : r + step])


# -------------------------------------------------------------------------------------------- tokenizer
def _token_str(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _ids(value: Any, where: str) -> list[int]:
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise CheckpointError(f"{where}: the bos/eos/pad_token_id of generation_config.json or config.json must be "
                              f"non-negative integers, got {value!r}; restore the model's own files")
    return list(values)


def _optional_json(path: Path) -> dict:
    """A checkpoint's optional JSON object (tokenizer_config.json, generation_config.json); {} when absent."""
    if not path.is_file():
        return {}
    data = checkpoint.read_json(path, path.name)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a JSON object; restore the model's own {path.name}")
    return data


def import_tokenizer(hf_dir: Path, hf_config: dict, vocab_size: int):
    """(:class:`HFTokenizer`, chat.json content) of a checkpoint folder."""
    from lmlab.data.tokenizers import HFTokenizer

    path = hf_dir / "tokenizer.json"
    if not path.is_file():
        raise CheckpointError(
            f"{hf_dir}: no tokenizer.json; lmlab needs the model's fast tokenizer (save it with "
            "AutoTokenizer.from_pretrained(...).save_pretrained(folder))"
        )
    tok_config = _optional_json(hf_dir / "tokenizer_config.json")
    gen_config = _optional_json(hf_dir / "generation_config.json")
    probe = HFTokenizer.from_file(path)
    if probe.max_id >= vocab_size:
        raise CheckpointError(
            f"{path}: the tokenizer has ids up to {probe.max_id} but the model's embedding has {vocab_size} rows "
            "(config.json vocab_size); the tokenizer does not belong to this model"
        )
    inner = probe.tokenizer

    def special(name: str, id_key: str) -> str | None:
        token = _token_str(tok_config.get(name))
        if token is None:
            i = _get(gen_config, id_key, default=hf_config.get(id_key))
            i = _ids(i, str(hf_dir))[0] if _ids(i, str(hf_dir)) else None
            token = inner.id_to_token(i) if i is not None else None
        return token

    bos, eos, pad = special("bos_token", "bos_token_id"), special("eos_token", "eos_token_id"), special("pad_token", "pad_token_id")
    stop = _ids(_get(gen_config, "eos_token_id", default=hf_config.get("eos_token_id")), str(hf_dir))
    if not stop and eos is not None and inner.token_to_id(eos) is not None:
        stop = [inner.token_to_id(eos)]
    tok = HFTokenizer(inner, vocab_size=vocab_size, bos_token=bos, eos_token=eos, pad_token=pad, stop_ids=stop)
    template = tok_config.get("chat_template")
    if (hf_dir / "chat_template.jinja").is_file():
        try:
            template = (hf_dir / "chat_template.jinja").read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise CheckpointError(f"{hf_dir / 'chat_template.jinja'}: not UTF-8 text ({exc.reason} at byte "
                                  f"{exc.start}); save the template as UTF-8") from None
    if isinstance(template, list):  # several named templates: the default one
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default", next(iter(named.values()), None))
    bos_id = tok.bos_id
    prompt = tok.encode_prompt("")
    chat = {
        "template": template if isinstance(template, str) else None,
        "bos_token": bos,
        "eos_token": eos,
        "stop_token_ids": stop,
        "add_bos": bool(prompt) and bos_id is not None and prompt[0] == bos_id,
    }
    return tok, chat


# -------------------------------------------------------------------------------------------------- import
#: the suffix of the hidden folder an import or export is written into before it is renamed to ``--out``
STAGING_SUFFIX = ".importing"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # somebody else's process (PermissionError): alive
        return True
    return True


def _remove_stale_staging(out: Path) -> None:
    """Remove the staging folders of imports/exports to ``out`` whose process was killed (SIGKILL, SIGTERM, a
    power cut): ``.{out.name}.{pid}.{random}.importing`` beside ``out``, ``pid`` no longer running. They hold
    only what that process wrote (a whole model's weights, perhaps), never anything of the user's."""
    prefix = f".{out.name}."
    for entry in out.parent.glob(f"{glob.escape(prefix)}*{STAGING_SUFFIX}"):
        pid = entry.name[len(prefix):-len(STAGING_SUFFIX)].split(".")[0]
        if entry.is_dir() and not entry.is_symlink() and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _staging_dir(out: Path) -> Path:
    """A new hidden folder beside ``out`` (named after this process, so that a killed one's is recognised and
    removed by the next start), with the permissions ``mkdir`` would give (mkdtemp makes it 0700)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(out)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=STAGING_SUFFIX, dir=out.parent))
    os.chmod(staging, 0o777 & ~_umask())
    return staging


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(staging: Path, out: Path) -> None:
    """Rename the finished ``staging`` folder to ``out`` (an existing run there, already allowed by
    check_new_run_dir, is set aside first and removed once the new one is in place)."""
    aside = None
    if out.is_dir():
        if any(out.iterdir()):
            aside = checkpoint.replaced_path(out)
            os.replace(out, aside)
        else:
            out.rmdir()
    os.replace(staging, out)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A new staging folder beside ``out`` (:func:`_staging_dir`) to write a run or an export into: renamed to
    ``out`` when the block ends (:func:`_publish`), removed when it raises (Ctrl-C included)."""
    staging = _staging_dir(out)
    try:
        yield staging
        _publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read_hf_config(hf_dir: Path) -> dict:
    """The ``config.json`` of a Hugging Face model folder (CheckpointError naming what is missing)."""
    if not hf_dir.is_dir():
        raise CheckpointError(f"{hf_dir} is not a folder; give the folder of a Hugging Face model")
    if not (hf_dir / "config.json").is_file():
        raise CheckpointError(
            f"{hf_dir}: no config.json; this is not a Hugging Face model folder (expected config.json, "
            "model.safetensors, tokenizer.json)"
        )
    hf_config = checkpoint.read_json(hf_dir / "config.json", "config.json")
    if not isinstance(hf_config, dict):
        raise CheckpointError(f"{hf_dir / 'config.json'}: not a JSON object")
    return hf_config


def import_hf(
    hf_dir: str | os.PathLike,
    out: str | os.PathLike,
    dtype: str = "float32",
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Import a Hugging Face checkpoint folder as an lmlab GPT run directory ``out`` (see the module)."""
    import torch

    from lmlab.config import config_to_dict
    from lmlab.data.tokens import TokenDataConfig
    from lmlab.models.gpt import GPT
    from lmlab.recipes.gpt import GPTRunConfig

    hf_dir, out = Path(hf_dir), Path(out)
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    hf_config = read_hf_config(hf_dir)
    try:
        cfg = gpt_config_from_hf(hf_config, str(hf_dir / "config.json"))
    except KeyError as exc:
        raise CheckpointError(f"{hf_dir / 'config.json'}: missing key {exc}") from None
    except (TypeError, ValueError) as exc:  # e.g. "n_embd": "abc" or null
        raise CheckpointError(f"{hf_dir / 'config.json'}: a value has the wrong type ({exc}); "
                              "restore the model's own config.json") from None
    model_type = hf_config["model_type"]
    weight_files(hf_dir)  # missing shards are named before anything heavy happens
    tokenizer, chat = import_tokenizer(hf_dir, hf_config, cfg.vocab_size)
    checkpoint.check_new_run_dir(out, overwrite=overwrite, inputs=[hf_dir])
    model = GPT.empty(cfg, dtype=getattr(torch, dtype))
    if dtype != "bfloat16":  # bf16 is decoded by lmlab.models.bf16, which reads row-major weights
        model.column_major_(copy=False)  # stored in the layout decoding uses: lmlab.load maps the file, no copy
    load_hf_weights(model, hf_dir, model_type)
    # evaluation one block at a time: a pretrained model's context and vocabulary make big logits
    run = GPTRunConfig(model=cfg, data=TokenDataConfig(tokenizer="hf", vocab_size=cfg.vocab_size, eval_batch_size=1))
    with staged_folder(out) as staging:
        sections = {
            **config_to_dict(run),
            "imported": {"from": str(hf_dir), "model_type": model_type, "dtype": dtype,
                         "architectures": hf_config.get("architectures")},
        }
        checkpoint.save_config(staging, "gpt", sections)
        tokenizer.save(staging / "tokenizer.json")
        checkpoint.atomic_write_json(staging / CHAT_FILE, chat)
        _save_weights(model, staging / checkpoint.WEIGHTS_FILE)
    n = sum(p.numel() for p in model.parameters())
    log(f"imported {model_type} from {hf_dir}: {cfg.num_layers} layers x {cfg.embed_dim} wide, {n:,} parameters "
        f"({dtype}), tokenizer of {tokenizer.vocab_size:,} ids; run directory: {out}")
    return out


def _save_weights(model, path: Path) -> None:
    """model.safetensors without copying the weights (a tied output layer is stored once, as wte.weight); the
    column-major wide weights (:meth:`GPT.column_major_`) are stored transposed, i.e. contiguous, and named in
    the file's metadata (:func:`checkpoint.save_tensors_as_laid_out`)."""
    state = model.state_dict()
    if model.config.tie_embeddings:
        state.pop("lm_head.weight", None)
    checkpoint.save_tensors_as_laid_out(path, state)


# -------------------------------------------------------------------------------------------------- export
def _permute_interleaved(w, heads: int, head_dim: int):
    """Rows of q or k (heads * D, ...) in lmlab's interleaved rotary order -> the Hugging Face half order."""
    shape = w.shape
    w = w.reshape(heads, head_dim // 2, 2, *shape[1:])
    return w.transpose(1, 2).reshape(shape)


def hf_config_for(cfg, tokenizer_ids: dict[str, int | None]) -> tuple[str, dict]:
    """(model_type, config.json) of the Hugging Face architecture that computes what ``cfg`` does
    (ConfigError naming what has no equivalent)."""
    common = {"vocab_size": cfg.vocab_size, "tie_word_embeddings": cfg.tie_embeddings,
              "bos_token_id": tokenizer_ids.get("bos"), "eos_token_id": tokenizer_ids.get("eos"),
              "pad_token_id": tokenizer_ids.get("pad"), "torch_dtype": "float32"}
    if cfg.position == "learned":
        if cfg.norm != "layernorm" or cfg.mlp == "swiglu" or cfg.num_kv_heads not in (0, cfg.num_heads):
            raise ConfigError(
                "cannot export: learned positions map to gpt2, which has LayerNorm, a GELU MLP and full "
                f"multi-head attention (this model: norm={cfg.norm}, mlp={cfg.mlp}, num_kv_heads={cfg.num_kv_heads})"
            )
        act = {"gelu": "gelu", "gelu_tanh": "gelu_new"}[cfg.mlp]
        return "gpt2", {
            **common, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": cfg.embed_dim,
            "n_layer": cfg.num_layers, "n_head": cfg.num_heads, "n_positions": cfg.block_size, "n_ctx": cfg.block_size,
            "n_inner": cfg.hidden_dim, "activation_function": act, "layer_norm_epsilon": cfg.norm_eps,
            "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        }
    if cfg.norm != "rmsnorm" or cfg.mlp != "swiglu" or cfg.bias:
        raise ConfigError(
            "cannot export: rotary models map to llama/qwen2, which need model.norm=rmsnorm, model.mlp=swiglu and "
            f"model.bias=false (this model: norm={cfg.norm}, mlp={cfg.mlp}, bias={cfg.bias}); no transformers "
            "architecture computes LayerNorm/GELU with rotary embeddings the same way"
        )
    model_type = "qwen2" if cfg.qkv_bias else "llama"
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": cfg.rope_base}
    if cfg.rope_scaling == "linear":
        rope = {**rope, "rope_type": "linear", "factor": cfg.rope_factor}
    elif cfg.rope_scaling == "llama3":
        rope = {**rope, "rope_type": "llama3", "factor": cfg.rope_factor,
                "low_freq_factor": cfg.rope_low_freq_factor, "high_freq_factor": cfg.rope_high_freq_factor,
                "original_max_position_embeddings": cfg.rope_original_context}
    arch = "Qwen2ForCausalLM" if cfg.qkv_bias else "LlamaForCausalLM"
    return model_type, {
        **common, "model_type": model_type, "architectures": [arch], "hidden_size": cfg.embed_dim,
        "intermediate_size": cfg.hidden_dim, "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.kv_heads,
        "max_position_embeddings": cfg.block_size, "rms_norm_eps": cfg.norm_eps, "hidden_act": "silu",
        "rope_theta": cfg.rope_base, "rope_parameters": rope,
        **({"rope_scaling": rope} if cfg.rope_scaling != "none" else {}),
        "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0, "head_dim": cfg.head_dim,
        **({"use_sliding_window": False, "sliding_window": None} if cfg.qkv_bias else {}),
    }


def hf_state_dict(model, model_type: str) -> dict[str, Any]:
    """The model's weights under Hugging Face names and layouts (the inverse of :func:`hf_layout`)."""
    import torch

    cfg = model.config
    state = model.state_dict()
    params = dict(state)
    if cfg.position == "rope" and cfg.rope_style == "interleaved":
        C, kv = cfg.embed_dim, cfg.kv_heads * cfg.head_dim
        for i in range(cfg.num_layers):
            for name in (f"blocks.{i}.attn.qkv.weight", f"blocks.{i}.attn.qkv.bias"):
                if name in params and params[name] is not None:
                    w = params[name].clone()
                    w[:C] = _permute_interleaved(w[:C], cfg.num_heads, cfg.head_dim)
                    w[C : C + kv] = _permute_interleaved(w[C : C + kv], cfg.kv_heads, cfg.head_dim)
                    params[name] = w
    out: dict[str, Any] = {}
    for hf_name, (target, lo, hi, transposed) in hf_layout(cfg, model_type).items():
        if target not in params:  # a bias lmlab's model lacks (bias=false): gpt2 always has one
            out[hf_name] = torch.zeros(hi - lo)
            continue
        t = params[target][lo:hi]
        out[hf_name] = (t.t() if transposed else t).contiguous().clone()
    if model_type == "gpt2":
        out = {("transformer." + k if k != "lm_head.weight" else k): v for k, v in out.items()}
    return out


def _export_tokenizer(codec, out: Path, chat: dict | None) -> dict[str, int | None]:
    """tokenizer.json + tokenizer_config.json (+ special_tokens_map.json) for AutoTokenizer; the special ids."""
    from lmlab.data.tokenizers import BPETokenizer, CharTokenizer, HFTokenizer

    tok = codec.tokenizer
    specials: dict[str, str | None] = {}
    if isinstance(tok, HFTokenizer):
        hf_tok = tok.tokenizer
        specials = {"bos": tok.bos_token, "eos": tok.eos_token, "pad": tok.pad_token}
    elif isinstance(tok, BPETokenizer):
        hf_tok = tok.tokenizer
        specials = {"bos": "<bos>", "eos": "<eos>", "pad": "<pad>", "unk": "<unk>"}
    elif isinstance(tok, CharTokenizer):
        from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

        vocab = codec.vocab
        words = {w: i for i, w in enumerate(vocab.decode(list(range(len(vocab)))))}
        unk = "<unk>" if "<unk>" in words else None
        hf_tok = Tokenizer(models.WordLevel(words, unk_token=unk))
        hf_tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        hf_tok.decoder = decoders.Fuse()
        if tok.lowercase:
            hf_tok.normalizer = normalizers.Lowercase()
        specials = {k: t for k, t in (("pad", "<pad>"), ("unk", "<unk>")) if t in words}
    else:
        raise ConfigError(f"cannot export a {type(tok).__name__} tokenizer")
    hf_tok.save(str(out / "tokenizer.json"))
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
                              "model_max_length": 1_000_000}
    for key, token in specials.items():
        if token is not None:
            config[f"{key}_token"] = token
    if chat and chat.get("template"):
        config["chat_template"] = chat["template"]
    checkpoint.atomic_write_json(out / "tokenizer_config.json", config)
    checkpoint.atomic_write_json(out / "special_tokens_map.json",
                                 {f"{k}_token": v for k, v in specials.items() if v is not None})
    return {k: (hf_tok.token_to_id(v) if v is not None else None) for k, v in specials.items()}


def export_hf(run_dir: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False,
              log: Callable[[str], None] = print) -> Path:
    """Write the GPT run ``run_dir`` as a Hugging Face model folder ``out`` (see the module)."""
    from safetensors.torch import save_file

    from lmlab.recipes.gpt import GPTRecipe

    run_dir, out = Path(run_dir), Path(out)
    model, codec, _ = GPTRecipe.load_model(run_dir)
    model.float()
    here, source = Path.cwd().resolve(), run_dir.resolve()
    target = out.resolve()
    if target == source or source.is_relative_to(target) or here.is_relative_to(target):
        raise CheckpointError(f"--out {out} is the run being exported, a folder above it or above the working "
                              "directory; choose a new folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise CheckpointError(f"{out} already exists and is not empty; pass --overwrite or choose another --out")
        if not (out / EXPORT_MARKER).is_file():  # a downloaded model holds config.json, model.safetensors ... too
            raise CheckpointError(f"--overwrite refuses to replace {out}: lmlab gpt export did not write it (no "
                                  f"{EXPORT_MARKER}); choose another --out")
    chat = None
    if (run_dir / CHAT_FILE).is_file():
        chat = checkpoint.read_json(run_dir / CHAT_FILE, CHAT_FILE)
    with staged_folder(out) as staging:
        ids = _export_tokenizer(codec, staging, chat)
        model_type, config = hf_config_for(model.config, ids)
        checkpoint.atomic_write_json(staging / "config.json", config)
        stop = codec.end_ids or ([ids["eos"]] if ids.get("eos") is not None else [])
        generation = {"bos_token_id": ids.get("bos"), "eos_token_id": stop[0] if len(stop) == 1 else (stop or None),
                      "pad_token_id": ids.get("pad")}
        checkpoint.atomic_write_json(staging / "generation_config.json", generation)
        checkpoint.atomic_write_json(staging / EXPORT_MARKER, {"exported_from": str(run_dir),
                                                               "lmlab_version": checkpoint._lmlab_version()})
        tensors = hf_state_dict(model, model_type)
        if model.config.tie_embeddings:
            tensors.pop("lm_head.weight", None)
        save_file(tensors, str(staging / "model.safetensors"), metadata={"format": "pt"})
        os.chmod(staging / "model.safetensors", 0o666 & ~_umask())  # safetensors writes 0600
        if out.is_dir() and any(out.iterdir()):
            # only an earlier export is replaced: a folder holding anything this export does not write (weights
            # shards, a README, a user's notes ...) is somebody's model folder and stays as it is
            ours = {p.name for p in staging.iterdir()}
            foreign = sorted(p.name for p in out.iterdir() if p.name not in ours or not p.is_file())
            if foreign:
                raise CheckpointError(
                    f"--overwrite refuses to replace {out}: it holds {', '.join(foreign[:3])}"
                    f"{' ...' if len(foreign) > 3 else ''}, which an export does not write; choose another --out"
                )
    log(f"exported {run_dir} as a {model_type} model: {out} (AutoModelForCausalLM.from_pretrained({str(out)!r}))")
    return out


def read_chat_config(run_dir: str | os.PathLike) -> dict | None:
    """The ``chat.json`` of an imported run (None when the run has none)."""
    path = Path(run_dir) / CHAT_FILE
    if not path.is_file():
        return None
    data = checkpoint.read_json(path, CHAT_FILE)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return data

