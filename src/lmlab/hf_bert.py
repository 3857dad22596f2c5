"""A Hugging Face BERT in: ``lmlab mlm import HF_DIR --out RUN_DIR`` (``model_type: bert``).

The GPT importer's machinery (:mod:`lmlab.hf`: the checkpoint's ``config.json``, safetensors files or shards
read one tensor at a time, never pickle, a staged run directory renamed into place at the end) with BERT's
pieces:

* ``config.json`` -> :class:`~lmlab.models.mlm.MLMConfig` with BERT's options (:func:`bert_config_from_hf`:
  post-LN blocks, LayerNorm on the embeddings, segment embeddings, the checkpoint's LayerNorm eps, exact GELU);
* the weights of a ``BertForMaskedLM`` (``bert.*`` + ``cls.predictions.*``) or of a ``BertModel`` saved without
  the prefix and without a head (then ``model.head`` is false: a classifier body that ``mlm fill`` refuses);
  q/k/v are fused into lmlab's ``attn.qkv``; the pooler and the next-sentence head are not used (a classifier
  fine-tuned with ``lmlab classify train --init-from`` pools the ``[CLS]`` state with a head of its own); old
  TensorFlow-converted names (``LayerNorm.gamma``/``beta``) are read as ``weight``/``bias``;
* the tokenizer: the checkpoint's ``tokenizer.json`` when it ships one, else ``vocab.txt`` (+
  ``tokenizer_config.json``) made into the same WordPiece tokenizer transformers' ``BertTokenizerFast`` builds,
  from the ``tokenizers`` library's own BERT pieces (BertNormalizer, BertPreTokenizer, WordPiece); either way
  saved in the run as an :class:`~lmlab.data.tokenizers.HFTokenizer` whose ``special_tokens`` name ``[CLS]
  [SEP] [MASK] [UNK]`` (and ``pad_token`` ``[PAD]``) by role, as :class:`~lmlab.data.mlm.MLMCodec` reads them.

The run directory is an ordinary masked-LM run (``model_type: mlm``, ``data.tokenizer: hf``, an ``imported``
section): ``lmlab mlm fill / eval``, ``lmlab mlm train --init-from`` (continued pretraining) and ``lmlab classify
train --init-from`` (fine-tuning, ``[CLS]`` pooling) read it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmlab import checkpoint
from lmlab.errors import CheckpointError, ConfigError
from lmlab.hf import _token_str, load_hf_weights, read_hf_config, staged_folder, weight_files

#: the names a BERT checkpoint holds that are no weights of lmlab's model: buffers, the pooler, the
#: next-sentence head, and the decoder tied to the word embedding (checked equal when present)
_IGNORED_PREFIXES = ("bert.pooler.", "cls.seq_relationship.")
_IGNORED = ("bert.embeddings.position_ids", "bert.embeddings.token_type_ids", "cls.predictions.decoder.weight",
            "cls.predictions.decoder.bias")
_DEFAULT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}


def bert_config_from_hf(cfg: dict, where: str = "config.json", head: bool = True):
    """The :class:`~lmlab.models.mlm.MLMConfig` of a Hugging Face BERT ``config.json`` (ConfigError naming every
    option lmlab cannot reproduce exactly)."""
    from lmlab.models.mlm import MLMConfig

    model_type = cfg.get("model_type")
    if model_type != "bert":
        hint = "; GPT-2 / Llama / Qwen2 / Mistral: lmlab gpt import" if model_type in (
            "gpt2", "llama", "qwen2", "mistral") else ""
        raise ConfigError(f"{where}: model_type {model_type!r} is not supported; lmlab mlm import reads bert{hint}")
    problems = []
    if cfg.get("hidden_act", "gelu") != "gelu":
        problems.append(f"hidden_act {cfg.get('hidden_act')!r} (supported: gelu)")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        problems.append(f"position_embedding_type {cfg.get('position_embedding_type')!r} (supported: absolute)")
    for flag in ("is_decoder", "add_cross_attention"):
        if cfg.get(flag):
            problems.append(f"{flag}=true")
    if cfg.get("tie_word_embeddings", True) is False:
        problems.append("tie_word_embeddings=false (lmlab's MLM head decodes with the word embedding)")
    if problems:
        raise ConfigError(f"{where}: BERT options lmlab cannot reproduce: {'; '.join(problems)}")
    try:
        C = int(cfg["hidden_size"])
        mcfg = MLMConfig(
            vocab_size=int(cfg["vocab_size"]), block_size=int(cfg.get("max_position_embeddings", 512)),
            embed_dim=C, num_layers=int(cfg["num_hidden_layers"]), num_heads=int(cfg["num_attention_heads"]),
            intermediate_size=int(cfg.get("intermediate_size") or 4 * C),
            dropout=float(cfg.get("hidden_dropout_prob", 0.1)), norm_position="post", embed_norm=True,
            type_vocab_size=int(cfg.get("type_vocab_size", 2)), norm_eps=float(cfg.get("layer_norm_eps", 1e-12)),
            head=head,
        )
    except KeyError as exc:
        raise CheckpointError(f"{where}: missing key {exc}") from None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: malformed option ({exc})") from None
    mcfg.validate()
    return mcfg


def bert_layout(cfg) -> dict[str, tuple[str, int, int, bool]]:
    """Hugging Face BERT tensor name -> (lmlab parameter, first row, end row, transposed) for ``cfg``
    (:func:`lmlab.hf.hf_layout`'s form; q, k, v fill thirds of ``attn.qkv``)."""
    C, V = cfg.embed_dim, cfg.vocab_size
    out: dict[str, tuple[str, int, int, bool]] = {
        "bert.embeddings.word_embeddings.weight": ("wte.weight", 0, V, False),
        "bert.embeddings.position_embeddings.weight": ("wpe.weight", 0, cfg.block_size, False),
        "bert.embeddings.token_type_embeddings.weight": ("wtt.weight", 0, cfg.type_vocab_size, False),
        "bert.embeddings.LayerNorm.weight": ("ln_emb.weight", 0, C, False),
        "bert.embeddings.LayerNorm.bias": ("ln_emb.bias", 0, C, False),
    }
    for i in range(cfg.num_layers):
        h, b = f"bert.encoder.layer.{i}.", f"blocks.{i}."
        for kind in ("weight", "bias"):
            for name, lo in (("query", 0), ("key", C), ("value", 2 * C)):
                out[f"{h}attention.self.{name}.{kind}"] = (f"{b}attn.qkv.{kind}", lo, lo + C, False)
            for hf, ours, rows in (("attention.output.dense", "attn.proj", C), ("attention.output.LayerNorm", "ln1", C),
                                   ("intermediate.dense", "fc", cfg.hidden_dim), ("output.dense", "proj", C),
                                   ("output.LayerNorm", "ln2", C)):
                out[f"{h}{hf}.{kind}"] = (f"{b}{ours}.{kind}", 0, rows, False)
    if cfg.head:
        for kind in ("weight", "bias"):
            out[f"cls.predictions.transform.dense.{kind}"] = (f"head.dense.{kind}", 0, C, False)
            out[f"cls.predictions.transform.LayerNorm.{kind}"] = (f"head.ln.{kind}", 0, C, False)
        out["cls.predictions.bias"] = ("head.bias", 0, V, False)
    return out


def _canonical(name: str) -> str:
    """A checkpoint's tensor name -> BertForMaskedLM's (``bert.`` prefix; LayerNorm ``gamma``/``beta`` of
    TensorFlow-converted checkpoints as ``weight``/``bias``)."""
    if not name.startswith(("bert.", "cls.")):
        name = "bert." + name
    if ".LayerNorm." in name:
        name = name.removesuffix(".gamma") + ".weight" if name.endswith(".gamma") else name
        name = name.removesuffix(".beta") + ".bias" if name.endswith(".beta") else name
    return name


def _ignored(name: str) -> bool:
    return name in _IGNORED or name.startswith(_IGNORED_PREFIXES)


def _tensor_names(hf_dir: Path) -> list[str]:
    from safetensors import SafetensorError, safe_open

    names: list[str] = []
    for path, held in weight_files(hf_dir).items():
        if held is not None:
            names += held
            continue
        try:
            with safe_open(str(path), framework="pt") as f:
                names += list(f.keys())
        except SafetensorError as exc:
            raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({exc}); download it again") from None
    return names


def _check_tied_decoder(model, hf_dir: Path) -> None:
    """A checkpoint that stores the MLM decoder must store the word embedding there (tie_word_embeddings)."""
    import torch
    from safetensors import safe_open

    for path, held in weight_files(hf_dir).items():
        with safe_open(str(path), framework="pt") as f:
            for name in held if held is not None else list(f.keys()):
                if _canonical(name) == "cls.predictions.decoder.weight":
                    if not torch.equal(f.get_tensor(name).to(model.wte.weight.dtype), model.wte.weight.detach()):
                        raise CheckpointError(
                            f"{path.name}: cls.predictions.decoder.weight differs from the word embedding; lmlab's "
                            "MLM head decodes with the (tied) word embedding and cannot import an untied decoder"
                        )


# -------------------------------------------------------------------------------------------- tokenizer
def wordpiece_from_vocab(vocab_file: Path, tok_config: dict[str, Any], specials: dict[str, str]):
    """The ``tokenizers.Tokenizer`` transformers' ``BertTokenizerFast`` builds from ``vocab.txt``: WordPiece
    (``##`` continuations) after BertNormalizer (``do_lower_case``, ``tokenize_chinese_chars``,
    ``strip_accents`` from tokenizer_config.json, with BERT's defaults) and BertPreTokenizer; ``[CLS] $A [SEP]``
    as its post-processor; the specials added as special tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    vocab: dict[str, int] = {}
    with open(vocab_file, encoding="utf-8") as fh:
        for index, line in enumerate(fh):
            vocab[line.rstrip("\n")] = index
    if not vocab:
        raise CheckpointError(f"{vocab_file}: the vocabulary is empty")
    tok = Tokenizer(WordPiece(vocab, unk_token=specials["unk"]))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=bool(tok_config.get("tokenize_chinese_chars", True)),
        strip_accents=tok_config.get("strip_accents"), lowercase=bool(tok_config.get("do_lower_case", True)),
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens([AddedToken(specials[r], special=True) for r in ("pad", "unk", "cls", "sep", "mask")])
    cls, sep = specials["cls"], specials["sep"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))],
    )
    return tok


def _sync_bert_normalizer(tok, tok_config: dict[str, Any]) -> None:
    """What ``BertTokenizerFast`` does to a loaded tokenizer.json: tokenizer_config.json's ``do_lower_case``,
    ``strip_accents`` and ``tokenize_chinese_chars`` (with BERT's defaults True, None, True when absent) win over
    the BertNormalizer saved in tokenizer.json (a cased model must say ``do_lower_case: false``). Tokenizers of
    another class (``tokenizer_class`` not BERT's) are used as saved."""
    import json

    from tokenizers import normalizers

    if tok_config.get("tokenizer_class") not in (None, "BertTokenizer", "BertTokenizerFast") or tok.normalizer is None:
        return
    state = json.loads(tok.normalizer.__getstate__())
    if state.get("type") != "BertNormalizer":
        return
    wanted = {"lowercase": bool(tok_config.get("do_lower_case", True)), "strip_accents": tok_config.get("strip_accents"),
              "handle_chinese_chars": bool(tok_config.get("tokenize_chinese_chars", True))}
    if any(state.get(k) != v for k, v in wanted.items()):
        tok.normalizer = normalizers.BertNormalizer(clean_text=bool(state.get("clean_text", True)), **wanted)


def import_bert_tokenizer(hf_dir: Path, vocab_size: int):
    """The :class:`~lmlab.data.mlm.MLMCodec` of a BERT checkpoint folder (``tokenizer.json``, else
    ``vocab.txt``; see the module)."""
    from tokenizers import Tokenizer

    from lmlab.data.mlm import MLMCodec
    from lmlab.data.tokenizers import HFTokenizer

    tok_config: dict = {}
    if (hf_dir / "tokenizer_config.json").is_file():
        tok_config = checkpoint.read_json(hf_dir / "tokenizer_config.json", "tokenizer_config.json") or {}
        if not isinstance(tok_config, dict):
            raise CheckpointError(f"{hf_dir / 'tokenizer_config.json'}: not a JSON object")
    specials = {role: _token_str(tok_config.get(f"{role}_token")) or token for role, token in _DEFAULT_SPECIALS.items()}
    if (hf_dir / "tokenizer.json").is_file():
        path = hf_dir / "tokenizer.json"
        try:
            inner = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises plain Exceptions
            raise CheckpointError(f"{path}: not a Hugging Face tokenizer.json ({str(exc).splitlines()[0]})") from None
        _sync_bert_normalizer(inner, tok_config)
    elif (hf_dir / "vocab.txt").is_file():
        path = hf_dir / "vocab.txt"
        inner = wordpiece_from_vocab(path, tok_config, specials)
    else:
        raise CheckpointError(
            f"{hf_dir}: no tokenizer.json or vocab.txt; a BERT checkpoint needs its vocabulary (save it with "
            "AutoTokenizer.from_pretrained(...).save_pretrained(folder))"
        )
    tok = HFTokenizer(inner, vocab_size=vocab_size, pad_token=specials["pad"],
                      special_tokens={r: specials[r] for r in ("unk", "cls", "sep", "mask")})
    if tok.max_id >= vocab_size:
        raise CheckpointError(
            f"{path}: the tokenizer has ids up to {tok.max_id} but the model's embedding has {vocab_size} rows "
            "(config.json vocab_size); the tokenizer does not belong to this model"
        )
    try:
        return MLMCodec(tok)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


# -------------------------------------------------------------------------------------------------- import
def import_bert(
    hf_dir: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False, log: Callable[[str], None] = print,
) -> Path:
    """Import a Hugging Face BERT folder as an lmlab masked-LM run directory ``out`` (see the module)."""
    import torch

    from lmlab.config import config_to_dict
    from lmlab.data.mlm import MLMDataConfig
    from lmlab.models.mlm import MLM
    from lmlab.recipes.mlm import MLMRunConfig

    hf_dir, out = Path(hf_dir), Path(out)
    hf_config = read_hf_config(hf_dir)
    where = str(hf_dir / "config.json")
    bert_config_from_hf(hf_config, where)  # the architecture is checked before the weights are looked at
    names = [_canonical(n) for n in _tensor_names(hf_dir)]
    cfg = bert_config_from_hf(hf_config, where, head=any(n.startswith("cls.predictions.") for n in names))
    codec = import_bert_tokenizer(hf_dir, cfg.vocab_size)
    checkpoint.check_new_run_dir(out, overwrite=overwrite, inputs=[hf_dir])
    torch.manual_seed(0)  # every tensor is overwritten below; the seed only makes the unused draws repeatable
    model = MLM(cfg)
    load_hf_weights(model, hf_dir, "bert", layout=bert_layout(cfg), canonical=_canonical, ignored=_ignored)
    _check_tied_decoder(model, hf_dir)
    lower = codec.kind_options()["lowercase"]
    run = MLMRunConfig(model=cfg, data=MLMDataConfig(tokenizer="hf", vocab_size=cfg.vocab_size, lowercase=lower))
    with staged_folder(out) as staging:
        sections = {
            **config_to_dict(run),
            "imported": {"from": str(hf_dir), "model_type": "bert", "dtype": "float32",
                         "architectures": hf_config.get("architectures"), "mlm_head": cfg.head},
        }
        checkpoint.save_config(staging, "mlm", sections)
        codec.save(staging)
        checkpoint.save_weights(staging / checkpoint.WEIGHTS_FILE, model)
    n = model.num_parameters()
    log(f"imported bert from {hf_dir}: {cfg.num_layers} layers x {cfg.embed_dim} wide, {n:,} parameters, "
        f"{'with' if cfg.head else 'without'} an MLM head, WordPiece tokenizer of {codec.vocab_size:,} ids; "
        f"run directory: {out}")
    return out
