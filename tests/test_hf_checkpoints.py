"""Hugging Face checkpoints in and out (lmlab.hf), proven against ``transformers`` itself on models made here:
random tiny GPT-2 / Llama (grouped-query attention) / Qwen2 (q/k/v biases) models and tokenizers trained on a
multilingual sample with ``tokenizers`` (byte-level BPE and a SentencePiece-style Metaspace one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from lmlab.cli import main  # noqa: E402
from lmlab.generation import SamplingConfig  # noqa: E402

TEXT = [
    "The quick brown fox jumps over the lazy dog. It's a sunny day, isn't it?",
    "Language models predict the next token; transformers attend to every earlier position.",
    "我们今天学习大语言模型，从理论到实践。模型读取文本并预测下一个词。",
    "机器学习很有趣！深度学习需要大量数据。",
    "Emoji 🙂🚀🎉 and mixed 中文 English text, numbers 12345.",
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer.",
]
SAMPLE = ["Hello world! 你好，世界。🚀 The model 预测 the next token 🎉.", "  spaces  and\nnew lines\t中文🙂", ""]
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIALS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]


def _train_tokenizer(kind: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "byte_level":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:  # SentencePiece-style: Metaspace with byte fallback, <s> prepended by the post-processor (Llama)
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
        bytes_ = [f"<0x{i:02X}>" for i in range(256)]
        trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=SPECIALS + bytes_, show_progress=False)
    tok.train_from_iterator(TEXT * 3, trainer=trainer)
    if kind != "byte_level":
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   chat_template=TEMPLATE)


def _hf_model(arch: str, vocab_size: int, seed: int = 0):
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.manual_seed(seed)
    common = dict(vocab_size=vocab_size, initializer_range=0.1 if arch == "gpt2" else 0.2, bos_token_id=1,
                  eos_token_id=2)
    if arch == "gpt2":
        cfg = GPT2Config(n_positions=96, n_embd=32, n_layer=2, n_head=4, **common)
        model = GPT2LMHeadModel(cfg)
    elif arch == "llama":
        cfg = LlamaConfig(hidden_size=32, intermediate_size=56, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=96, tie_word_embeddings=False,
                          rope_theta=500.0, **common)
        model = LlamaForCausalLM(cfg)
    else:
        cfg = Qwen2Config(hidden_size=32, intermediate_size=56, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=1, max_position_embeddings=96, tie_word_embeddings=True, **common)
        model = Qwen2ForCausalLM(cfg)
    scale = 0.05 if arch == "gpt2" else 0.3  # (GPT-2's final LayerNorm bias feeds the tied head directly)
    with torch.no_grad():  # visible norm gains and biases, so that a wrong mapping shows
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.randn_like(p) * scale + (1.0 if "norm" in name or "ln" in name else 0.0))
    return model.eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread: these models are tiny, and extra threads only contend on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def hf_tokenizers():
    return {kind: _train_tokenizer(kind) for kind in ("byte_level", "metaspace")}


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory, hf_tokenizers):
    """arch -> (folder saved with save_pretrained, the transformers model); llama is sharded."""
    out = {}
    for arch, kind in (("gpt2", "byte_level"), ("llama", "metaspace"), ("qwen2", "byte_level")):
        tok = hf_tokenizers[kind]
        extra = 7 if arch == "qwen2" else 0  # embedding rows beyond the tokenizer (padded vocabularies)
        model = _hf_model(arch, len(tok) + extra)
        folder = tmp_path_factory.mktemp(f"hf-{arch}")
        model.save_pretrained(folder, max_shard_size="20KB" if arch == "llama" else "5GB")
        tok.save_pretrained(folder)
        out[arch] = (folder, model)
    return out


@pytest.fixture(scope="module")
def imported(hf_dirs, tmp_path_factory):
    runs = {}
    for arch, (folder, _) in hf_dirs.items():
        out = tmp_path_factory.mktemp(f"run-{arch}") / "run"
        assert main(["gpt", "import", str(folder), "--out", str(out)]) == 0
        runs[arch] = out
    return runs


def _old_layout_copy(run: Path, dest: Path) -> Path:
    """A copy of an imported run as lmlab wrote it before its weights were stored in the decoding layout:
    every tensor row-major, no metadata naming transposed ones (a tied output layer stored once)."""
    import shutil

    from lmlab import checkpoint
    from lmlab.recipes.gpt import GPTRecipe

    shutil.copytree(run, dest)
    model, _, cfg = GPTRecipe.load_model(run)
    state = model.state_dict()
    if cfg.model.tie_embeddings:
        state.pop("lm_head.weight")
    checkpoint.save_tensors(dest / checkpoint.WEIGHTS_FILE, state, metadata={"format": "pt"})
    assert not checkpoint.transposed_names(dest / checkpoint.WEIGHTS_FILE)
    return dest


def _padded_batch(vocab: int, left: bool):
    torch.manual_seed(1)
    ids = torch.randint(3, vocab, (3, 20))
    mask = torch.ones(3, 20, dtype=torch.long)
    if left:
        mask[1, :4], mask[2, :11] = 0, 0
    else:
        mask[1, 15:], mask[2, 8:] = 0, 0
    return ids, mask


def test_the_llama_checkpoint_is_sharded(hf_dirs):
    folder = hf_dirs["llama"][0]
    assert (folder / "model.safetensors.index.json").is_file()
    assert len(list(folder.glob("model-*.safetensors"))) > 2


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
@pytest.mark.parametrize("left", [False, True], ids=["right-padded", "left-padded"])
def test_logits_equal_transformers_on_a_padded_batch(arch, left, hf_dirs, imported):
    import lmlab

    hf_model = hf_dirs[arch][1]
    ours = lmlab.load(imported[arch]).model
    ids, mask = _padded_batch(hf_model.config.vocab_size, left)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # what transformers' generate passes for left padding
    with torch.no_grad():
        expected = hf_model(ids, attention_mask=mask, position_ids=positions).logits
        got = ours(ids, attention_mask=mask)
    real = mask.bool()
    assert expected[real].abs().max() > 1.0  # the logits are far from uniform: a wrong mapping would show
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_greedy_32_tokens_equal_transformers_with_and_without_the_cache(arch, hf_dirs, imported):
    import lmlab

    hf_model = hf_dirs[arch][1]
    ours = lmlab.load(imported[arch]).model
    ids, mask = _padded_batch(hf_model.config.vocab_size, left=True)
    prompt, pmask = ids[:, 8:], mask[:, 8:]
    with torch.no_grad():
        expected = hf_model.generate(prompt, attention_mask=pmask, max_new_tokens=32, min_new_tokens=32,
                                     do_sample=False, eos_token_id=None, pad_token_id=0)[:, prompt.shape[1]:]
    assert bool(pmask[0].all()) and len(set(expected.flatten().tolist())) > 3  # row 0 is unpadded; outputs vary
    greedy = SamplingConfig(max_new_tokens=32, temperature=0)
    for use_cache in (True, False):
        assert ours.generate(prompt, greedy, use_cache=use_cache, attention_mask=pmask) == expected.tolist()
        assert ours.generate(prompt[0], greedy, use_cache=use_cache)[0] == expected[0].tolist()  # no padding


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_decoding_loads_the_wide_weights_column_major_with_the_same_numbers(arch, imported, monkeypatch):
    import lmlab
    from lmlab import checkpoint
    from lmlab.recipes.gpt import GPTRecipe

    monkeypatch.setattr(checkpoint, "_STREAM_CHUNK_BYTES", 1000)  # every strided tensor read in several blocks
    fast = lmlab.load(imported[arch]).model
    plain, _, _ = GPTRecipe.load_model(imported[arch])
    wide = fast.wide_linears()
    assert fast.lm_head in wide and fast.blocks[0].mlp.fc in wide and fast.blocks[0].attn.proj not in wide
    assert all(lin.weight.stride() == (1, lin.out_features) for lin in wide)
    assert plain.lm_head.weight.is_contiguous() and fast.blocks[0].attn.proj.weight.is_contiguous()
    assert fast.lm_head.weight is fast.wte.weight  # still tied
    for name, value in plain.state_dict().items():
        assert torch.equal(fast.state_dict()[name], value), name
    torch.manual_seed(0)
    ids = torch.randint(0, plain.config.vocab_size, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(fast(ids), plain(ids), atol=1e-5, rtol=1e-5)
    greedy = SamplingConfig(max_new_tokens=12, temperature=0)
    assert fast.generate(ids, greedy) == plain.generate(ids, greedy)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_import_stores_the_decoding_layout_and_load_maps_it_without_a_copy(arch, imported, hf_dirs, tmp_path,
                                                                            monkeypatch):
    """The wide weights are stored transposed (GPT-2's Conv1D ones as they come), lmlab.load points the model at
    the mapped file (every parameter a view of it) in the column-major layout, and the logits equal
    transformers'; every other use (evaluation, export, fine-tuning) gets contiguous weights, the same values.
    Import copies into the column-major layout in blocks of rows: tiny blocks give the same file."""
    import lmlab
    from lmlab import checkpoint, hf
    from lmlab.recipes.gpt import GPTRecipe

    monkeypatch.setattr(hf, "_COPY_BLOCK_BYTES", 1000)  # every re-laid-out tensor copied in several blocks
    again = hf.import_hf(hf_dirs[arch][0], tmp_path / "again", log=lambda m: None)
    reference = checkpoint.load_tensors(imported[arch] / checkpoint.WEIGHTS_FILE)
    assert checkpoint.load_tensors(again / checkpoint.WEIGHTS_FILE).keys() == reference.keys()
    for name, value in checkpoint.load_tensors(again / checkpoint.WEIGHTS_FILE).items():
        assert torch.equal(value, reference[name]), name

    weights = imported[arch] / checkpoint.WEIGHTS_FILE
    stored = checkpoint.transposed_names(weights)
    header = checkpoint.read_safetensors_header(weights)[0]
    cfg = hf_dirs[arch][1].config
    head = "wte.weight" if arch == "gpt2" else "lm_head.weight"  # tied in gpt2, not in this llama
    assert {head, "blocks.0.mlp.fc.weight", "blocks.1.mlp.fc.weight"} <= stored
    assert "blocks.0.attn.proj.weight" not in stored
    assert header[head]["shape"] == [cfg.hidden_size if arch != "gpt2" else cfg.n_embd, cfg.vocab_size]
    fast = lmlab.load(imported[arch]).model
    size = weights.stat().st_size
    assert all(p.untyped_storage().nbytes() == size for p in fast.parameters())  # views of the file: no copy
    assert all(lin.weight.stride() == (1, lin.out_features) for lin in fast.wide_linears())
    plain, _, _ = GPTRecipe.load_model(imported[arch])
    assert all(p.is_contiguous() for p in plain.parameters())
    ids, mask = _padded_batch(cfg.vocab_size, left=False)
    with torch.no_grad():
        expected = hf_dirs[arch][1](ids).logits
        torch.testing.assert_close(fast(ids), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(plain(ids), expected, atol=1e-5, rtol=1e-5)


def test_a_run_imported_in_the_old_row_major_layout_still_loads_and_exports(imported, hf_dirs, tmp_path):
    import lmlab

    old = _old_layout_copy(imported["qwen2"], tmp_path / "old")
    model = lmlab.load(old).model
    assert all(lin.weight.stride() == (1, lin.out_features) for lin in model.wide_linears())
    ids, _ = _padded_batch(hf_dirs["qwen2"][1].config.vocab_size, left=False)
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf_dirs["qwen2"][1](ids).logits, atol=1e-5, rtol=1e-5)
    _exported_logits_match(old, tmp_path / "hf")


def test_continued_pretraining_starts_from_the_imported_weights(imported, tmp_path):
    """gpt train --init-from an imported run (weights stored transposed) starts from exactly its weights: with
    lr=1e-30 the trained run's weights are the imported ones (a transposed or misread tensor would be far off)."""
    from lmlab import checkpoint
    from lmlab.recipes.gpt import GPTRecipe

    data = tmp_path / "train.txt"
    data.write_text("\n".join(TEXT * 20), encoding="utf-8")
    out = tmp_path / "cont"
    rc = main(["gpt", "train", "--data", str(data), "--init-from", str(imported["gpt2"]), "--out", str(out),
               "batch_size=2", "max_steps=2", "eval_every=2", "lr=1e-30", "min_lr=0", "warmup_steps=0",
               "progress=false", "tensorboard=false", "num_threads=1"])
    assert rc == 0
    trained = checkpoint.load_tensors(out / checkpoint.WEIGHTS_FILE)
    source, _, _ = GPTRecipe.load_model(imported["gpt2"])
    for name, value in source.state_dict().items():
        torch.testing.assert_close(trained[name], value, atol=1e-12, rtol=1e-6, msg=name)


@pytest.mark.parametrize("kind", ["byte_level", "metaspace"])
def test_tokenizer_ids_equal_autotokenizer(kind, hf_tokenizers, tmp_path):
    from transformers import AutoTokenizer

    from lmlab.data.tokenizers import HFTokenizer
    from lmlab.data.tokens import TokenCodec

    hf_tokenizers[kind].save_pretrained(tmp_path)
    auto = AutoTokenizer.from_pretrained(tmp_path)
    codec = TokenCodec(HFTokenizer.from_file(tmp_path / "tokenizer.json"))
    for text in SAMPLE:
        assert codec.encode_prompt(text) == auto(text)["input_ids"], text
        assert codec.encode(text) == auto(text, add_special_tokens=False)["input_ids"], text
        ids = auto(text)["input_ids"]
        assert codec.decode(ids) == auto.decode(ids, skip_special_tokens=True)


def test_import_writes_chat_json_and_the_tokenizer(imported, hf_dirs):
    chat = json.loads((imported["llama"] / "chat.json").read_text())
    assert chat == {"template": TEMPLATE, "bos_token": "<s>", "eos_token": "</s>", "stop_token_ids": [2],
                    "add_bos": True}
    assert json.loads((imported["gpt2"] / "chat.json").read_text())["add_bos"] is False
    saved = json.loads((imported["qwen2"] / "config.json").read_text())
    assert saved["model"]["qkv_bias"] and saved["model"]["num_kv_heads"] == 1 and saved["data"]["tokenizer"] == "hf"
    assert saved["imported"]["model_type"] == "qwen2"
    assert not [p for p in imported["qwen2"].parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_generate_eval_and_serve_an_imported_run(imported, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from lmlab.serve import create_app

    run = imported["llama"]
    assert main(["gpt", "generate", str(run), "-p", "The model 预测", "-n", "12", "-t", "0"]) == 0
    text = tmp_path / "eval.txt"
    text.write_text("\n".join(TEXT * 4), encoding="utf-8")
    assert main(["gpt", "eval", str(run), "--data", str(text), "--json"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{"):])
    assert result["tokens"] > 0 and result["perplexity"] > 1
    short = tmp_path / "short.txt"
    short.write_text("To be, or not to be.", encoding="utf-8")  # fewer tokens than the context of 96
    assert main(["gpt", "eval", str(run), "--data", str(short), "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):])["tokens"] > 3
    client = TestClient(create_app([run]))
    name = client.get("/v1/models").json()["data"][0]["id"]
    reply = client.post("/v1/completions", json={"model": name, "prompt": "Hello", "max_tokens": 5, "temperature": 0})
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] <= 5


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_an_imported_model_chats_through_openai_as_transformers_generates(arch, imported, hf_dirs):
    """The whole chat path on an imported checkpoint: the template from its tokenizer_config (via chat.json), the
    prompt ids of ``apply_chat_template``, greedy decoding that stops at the end of the turn, and the official
    ``openai`` client against ``lmlab serve``'s app -- the reply is what ``transformers`` generates."""
    import openai
    from fastapi.testclient import TestClient

    import lmlab
    from lmlab.serve import create_app

    folder, hf_model = hf_dirs[arch]
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "你好, who are you? 🙂"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tok(text)["input_ids"]  # the tokenizer's own special tokens (Llama: <s>) as transformers adds them
    assert lmlab.load(imported[arch]).chat_prompt(messages) == ids
    stops = [tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id]
    with torch.no_grad():
        out = hf_model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=stops,
                                pad_token_id=0)[0, len(ids):].tolist()
    cut = next((i for i, t in enumerate(out) if t in stops), len(out))
    expected = tok.decode(out[:cut], skip_special_tokens=True)
    assert cut >= 3 and expected.strip()  # a real reply of several tokens, not an immediate end of turn
    with TestClient(create_app([imported[arch]])) as http:
        client = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=http, max_retries=0)
        name = client.models.list().data[0].id
        reply = client.chat.completions.create(model=name, messages=messages, max_tokens=12, temperature=0)
        assert reply.choices[0].message.content == expected
        assert reply.usage.prompt_tokens == len(ids) and reply.usage.completion_tokens == min(cut + 1, 12)
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
            model=name, messages=messages, max_tokens=12, temperature=0, stream=True) if chunk.choices)
        assert streamed == expected


def test_bfloat16_is_kept_on_request(hf_dirs, tmp_path):
    import lmlab

    out = tmp_path / "bf16"
    assert main(["gpt", "import", str(hf_dirs["qwen2"][0]), "--out", str(out), "--dtype", "bfloat16"]) == 0
    pipe = lmlab.load(out)
    assert pipe.model.wte.weight.dtype == torch.bfloat16
    assert pipe.generate("Hello", max_new_tokens=4, temperature=0)["completion_tokens"] <= 4


def _exported_logits_match(run: Path, out: Path, text: str = "To be 中文 🙂"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import lmlab

    assert main(["gpt", "export", str(run), "--out", str(out)]) == 0
    pipe = lmlab.load(run)
    hf_model = AutoModelForCausalLM.from_pretrained(out).eval()
    auto = AutoTokenizer.from_pretrained(out)
    ids = pipe.codec.encode(text)
    assert auto(text, add_special_tokens=False)["input_ids"] == ids
    x = torch.tensor([ids])
    with torch.no_grad():
        torch.testing.assert_close(hf_model(x).logits, pipe.model(x), atol=1e-5, rtol=1e-5)


def test_export_an_imported_run_round_trips(imported, tmp_path):
    for arch in ("gpt2", "llama", "qwen2"):
        _exported_logits_match(imported[arch], tmp_path / arch)


def test_export_overwrite_replaces_only_an_earlier_export(imported, tmp_path, capsys):
    """--overwrite replaces a folder an export wrote; a downloaded model folder (extra shards, a README), the run
    itself or a folder above it are refused in one line, byte for byte untouched."""
    import hashlib

    def tree(folder: Path) -> dict:
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file()}

    run = imported["gpt2"]
    out = tmp_path / "hf"
    assert main(["gpt", "export", str(run), "--out", str(out)]) == 0
    assert main(["gpt", "export", str(run), "--out", str(out), "--overwrite"]) == 0  # an earlier export: replaced
    (out / "README.md").write_text("my model card", encoding="utf-8")
    (out / "model-00002-of-00002.safetensors").write_bytes(b"user weights")
    before = tree(out)
    capsys.readouterr()
    assert main(["gpt", "export", str(run), "--out", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert "README.md" in err and len(err.splitlines()) == 1 and tree(out) == before
    for target in (run, run.parent):
        saved = tree(target)
        assert main(["gpt", "export", str(run), "--out", str(target), "--overwrite"]) == 2
        assert "run being exported" in capsys.readouterr().err and tree(target) == saved
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


@pytest.mark.parametrize("options", [
    ["model.position=learned", "data.tokenizer=char"],
    ["model.position=rope", "model.norm=rmsnorm", "model.mlp=swiglu", "model.bias=false", "model.num_kv_heads=2",
     "model.intermediate_size=40", "model.tie_embeddings=false", "data.tokenizer=bpe", "data.vocab_size=300"],
], ids=["gpt2-char", "llama-bpe-interleaved-rope"])
def test_export_a_trained_run(options, tmp_path):
    data = tmp_path / "train.txt"
    data.write_text("\n".join(TEXT * 30), encoding="utf-8")
    run = tmp_path / "run"
    rc = main(["gpt", "train", "--data", str(data), "--preset", "char", "--out", str(run), "model.num_layers=1",
               "model.embed_dim=32", "model.num_heads=4", "model.block_size=32", "max_steps=3", "eval_every=3",
               "progress=false", "tensorboard=false", "num_threads=1", *options])
    assert rc == 0
    _exported_logits_match(run, tmp_path / "hf")


def test_a_run_that_has_no_transformers_equivalent_is_refused(tmp_path, capsys):
    from lmlab.errors import ConfigError
    from lmlab.hf import hf_config_for
    from lmlab.models.gpt import GPTConfig

    with pytest.raises(ConfigError, match="rmsnorm"):
        hf_config_for(GPTConfig(vocab_size=10, position="rope"), {})


# ------------------------------------------------------------------------------------------------- bad input
def _copy(folder: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(folder, dest)
    return dest


def _corrupt(kind: str, src: Path, dest: Path) -> Path:
    if kind == "no config.json":
        (_copy(src, dest) / "config.json").unlink()
    elif kind == "unknown model_type":
        cfg = json.loads((_copy(src, dest) / "config.json").read_text())
        cfg["model_type"] = "bert"
        (dest / "config.json").write_text(json.dumps(cfg))
    elif kind == "missing shard":
        next(iter(sorted(_copy(src, dest).glob("model-*.safetensors")))).unlink()
    elif kind == "wrong tensor shape":
        cfg = json.loads((_copy(src, dest) / "config.json").read_text())
        cfg["intermediate_size"] += 8
        (dest / "config.json").write_text(json.dumps(cfg))
    elif kind == "truncated safetensors":
        shard = sorted(_copy(src, dest).glob("model-*.safetensors"))[-1]
        shard.write_bytes(shard.read_bytes()[:-100])
    elif kind == "tokenizer bigger than the embedding":
        cfg = json.loads((_copy(src, dest) / "config.json").read_text())
        cfg["vocab_size"] -= 50
        (dest / "config.json").write_text(json.dumps(cfg))
    elif kind in ("a size that is not a number", "a size that is null"):
        cfg = json.loads((_copy(src, dest) / "config.json").read_text())
        cfg["hidden_size"] = "big" if kind == "a size that is not a number" else None
        (dest / "config.json").write_text(json.dumps(cfg))
    elif kind == "heads that do not divide the width":
        cfg = json.loads((_copy(src, dest) / "config.json").read_text())
        cfg["num_attention_heads"], cfg["num_key_value_heads"] = 5, 5
        cfg.pop("head_dim", None)
        (dest / "config.json").write_text(json.dumps(cfg))
    elif kind == "tokenizer_config.json not an object":
        (_copy(src, dest) / "tokenizer_config.json").write_text('["<s>"]')
    elif kind == "eos id not an integer":
        (_copy(src, dest) / "generation_config.json").write_text('{"eos_token_id": "</s>"}')
    elif kind == "chat template not UTF-8":
        (_copy(src, dest) / "chat_template.jinja").write_bytes("{{ '中文' }}".encode("gb18030"))
    return dest


@pytest.mark.parametrize("kind,message", [
    ("no config.json", "no config.json"),
    ("unknown model_type", "model_type 'bert' is not supported; lmlab imports gpt2, llama, qwen2, mistral"),
    ("missing shard", "are missing"),
    ("wrong tensor shape", "has shape"),
    ("truncated safetensors", "truncated or corrupt"),
    ("tokenizer bigger than the embedding", "does not belong to this model"),
    ("a size that is not a number", "config.json: a value has the wrong type"),
    ("a size that is null", "config.json: a value has the wrong type"),
    ("heads that do not divide the width", "config.json: model.embed_dim=32 is not divisible"),
    ("tokenizer_config.json not an object", "tokenizer_config.json: not a JSON object"),
    ("eos id not an integer", "must be non-negative integers, got '</s>'"),
    ("chat template not UTF-8", "chat_template.jinja: not UTF-8 text"),
])
def test_bad_checkpoints_are_one_line_errors_and_write_nothing(kind, message, hf_dirs, tmp_path, capsys):
    bad = _corrupt(kind, hf_dirs["llama"][0], tmp_path / "bad")
    out = tmp_path / "runs" / "out"
    assert main(["gpt", "import", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))


def test_overwrite_replaces_an_imported_run_but_never_a_model_folder(hf_dirs, imported, tmp_path, capsys):
    """An imported run (its chat.json included) is an lmlab run --overwrite may replace; a Hugging Face model
    folder holding only config.json, model.safetensors and tokenizer.json (names a run also has) is not."""
    import shutil

    run = shutil.copytree(imported["gpt2"], tmp_path / "run")
    assert main(["gpt", "import", str(hf_dirs["qwen2"][0]), "--out", str(run), "--overwrite"]) == 0
    assert json.loads((run / "config.json").read_text())["imported"]["model_type"] == "qwen2"
    downloaded = tmp_path / "downloaded"
    downloaded.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        shutil.copy(hf_dirs["gpt2"][0] / name, downloaded / name)
    before = {p.name: p.read_bytes() for p in downloaded.iterdir()}
    capsys.readouterr()
    for argv in (["gpt", "import", str(hf_dirs["qwen2"][0])], ["gpt", "export", str(run)]):
        assert main([*argv, "--out", str(downloaded), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "config.json, which no lmlab run wrote" in err[0], err
    assert {p.name: p.read_bytes() for p in downloaded.iterdir()} == before
    # the model folder given where a run is expected says what it is and how to bring it in
    assert main(["gpt", "generate", str(downloaded), "-p", "hi"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a Hugging Face model folder, not an lmlab run directory" in err and "lmlab gpt import" in err


def test_imports_and_exports_follow_the_umask_and_clear_a_killed_ones_staging(hf_dirs, imported, tmp_path):
    """The folders import/export publish are 0777 & ~umask like any mkdir (not mkdtemp's 0700), and the hidden
    staging folder a killed import (SIGKILL: no cleanup) left beside --out is removed by the next one."""
    import os
    import stat
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".run.{int(dead.stdout)}.abc123.importing"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half a model")
    alive = tmp_path / f".run.{os.getpid()}.def456.importing"  # a running import's: kept
    alive.mkdir()
    mask = os.umask(0o022)
    try:
        assert main(["gpt", "import", str(hf_dirs["gpt2"][0]), "--out", str(tmp_path / "run")]) == 0
        assert main(["gpt", "export", str(imported["gpt2"]), "--out", str(tmp_path / "hf")]) == 0
    finally:
        os.umask(mask)
    assert not stale.exists() and alive.is_dir()
    for path in (tmp_path / "run", tmp_path / "hf"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o755, path
    assert stat.S_IMODE((tmp_path / "hf" / "model.safetensors").stat().st_mode) == 0o644


def test_a_config_json_without_its_model_section_is_named(imported, tmp_path, capsys):
    """A run whose config.json lost its model section was loaded with default sizes and then blamed its
    tokenizer ("the tokenizer has 400 tokens but the model was built for 0"); the message names the file."""
    import shutil

    run = shutil.copytree(imported["gpt2"], tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    del config["model"]
    (run / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main(["gpt", "generate", str(run), "-p", "the"]) == 2
    err = capsys.readouterr().err.strip()
    assert "config.json: the 'model' section is missing" in err and len(err.splitlines()) == 1, err


def test_streamed_text_keeps_the_space_a_sentencepiece_token_starts_with(imported):
    import lmlab
    from lmlab.pipelines.gpt import _after

    pipe = lmlab.load(imported["llama"])  # the Metaspace tokenizer
    vocab = pipe.codec.tokenizer.tokenizer.get_vocab()
    word = next(i for t, i in sorted(vocab.items()) if t.startswith("▁") and len(t) > 2)
    prompt = pipe.codec.encode_prompt("The model")
    assert not pipe.codec.decode([word]).startswith(" ")  # decoded alone, a text's first space is dropped
    assert _after(pipe.codec.decode, prompt[-1])([word]) == " " + vocab_piece(pipe, word)
    out = pipe.generate("The model", max_new_tokens=12, temperature=0)
    new = [i for i in pipe.model.generate(prompt, SamplingConfig(max_new_tokens=12, temperature=0))[0]
           if i not in pipe.codec.end_ids]
    assert "The model" + out["text"] == pipe.codec.decode(prompt + new)


def vocab_piece(pipe, i: int) -> str:
    return pipe.codec.tokenizer.tokenizer.id_to_token(i).replace("▁", " ").lstrip(" ")


@pytest.fixture(scope="module")
def bf16_checkpoints(hf_dirs, hf_tokenizers, tmp_path_factory):
    """arch -> (run imported with --dtype bfloat16, transformers' float32 model of the same bf16 folder):
    checkpoints saved in bf16 by transformers, as Llama-family models ship."""
    import copy

    out = {}
    for arch, kind in (("gpt2", "byte_level"), ("qwen2", "byte_level")):
        folder = tmp_path_factory.mktemp(f"hf-bf16-{arch}")
        copy.deepcopy(hf_dirs[arch][1]).to(torch.bfloat16).save_pretrained(folder)
        hf_tokenizers[kind].save_pretrained(folder)
        reference = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        run = tmp_path_factory.mktemp(f"run-bf16-{arch}") / "run"
        assert main(["gpt", "import", str(folder), "--out", str(run), "--dtype", "bfloat16"]) == 0
        out[arch] = (run, reference)
    return out


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_a_bf16_import_decodes_in_float32_from_bf16_weights_as_transformers_float32(arch, bf16_checkpoints):
    import lmlab
    from lmlab import checkpoint
    from lmlab.models.gpt import Bf16Linear

    run, reference = bf16_checkpoints[arch]
    ours = lmlab.load(run).model
    # the matrices stay bf16 (half the memory), mapped from the file; everything else is float32
    weights = {n: p for n, p in ours.named_parameters()}
    assert all(p.dtype == (torch.bfloat16 if p.dim() == 2 else torch.float32) for p in weights.values())
    assert all(p.is_contiguous() for p in weights.values())
    assert not checkpoint.transposed_names(run / checkpoint.WEIGHTS_FILE)  # bf16 runs are stored row-major
    assert isinstance(ours.lm_head, Bf16Linear) and ours.lm_head.weight is ours.wte.weight  # still tied
    assert ours.rope_cos.dtype == torch.float32 if arch == "qwen2" else ours.wpe.weight.dtype == torch.bfloat16
    ids, mask = _padded_batch(reference.config.vocab_size, left=True)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        expected = reference(ids, attention_mask=mask, position_ids=positions).logits
        got = ours(ids, attention_mask=mask)
    real = mask.bool()
    assert got.dtype == torch.float32 and expected[real].abs().max() > 1.0
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-5)
    prompt, pmask = ids[:, 8:], mask[:, 8:]
    with torch.no_grad():
        tokens = reference.generate(prompt, attention_mask=pmask, max_new_tokens=32, min_new_tokens=32,
                                    do_sample=False, eos_token_id=None, pad_token_id=0)[:, prompt.shape[1]:]
    assert len(set(tokens.flatten().tolist())) > 3
    greedy = SamplingConfig(max_new_tokens=32, temperature=0)
    for use_cache in (True, False):
        assert ours.generate(prompt, greedy, use_cache=use_cache, attention_mask=pmask) == tokens.tolist()
        assert ours.generate(prompt[0], greedy, use_cache=use_cache)[0] == tokens[0].tolist()


def test_a_bf16_import_is_float32_for_everything_but_cpu_decoding(bf16_checkpoints, tmp_path):
    from lmlab.recipes.gpt import GPTRecipe

    run, reference = bf16_checkpoints["qwen2"]
    model, _, _ = GPTRecipe.load_model(run)  # evaluation, fine-tuning bodies, export
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    ids = torch.randint(3, reference.config.vocab_size, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), reference(ids).logits, atol=1e-5, rtol=1e-5)
    _exported_logits_match(run, tmp_path / "export")


def test_a_bf16_run_imported_with_the_transposed_layout_still_decodes(bf16_checkpoints, tmp_path):
    """bf16 runs imported before bf16 decoding stored their wide weights transposed; they load row-major."""
    import shutil

    import lmlab
    from lmlab import checkpoint

    run = bf16_checkpoints["qwen2"][0]
    old = tmp_path / "old"
    shutil.copytree(run, old)
    state = checkpoint.load_tensors(run / checkpoint.WEIGHTS_FILE)
    state = {n: (t.t().contiguous().t() if n in ("wte.weight", "blocks.0.mlp.fc.weight") else t) for n, t in state.items()}
    assert checkpoint.save_tensors_as_laid_out(old / checkpoint.WEIGHTS_FILE, state)
    ids = torch.randint(3, 300, (1, 12))
    with torch.no_grad():
        expected, got = lmlab.load(run).model(ids), lmlab.load(old).model(ids)
    assert torch.equal(got, expected)


def test_fine_tuning_an_imported_checkpoint_starts_from_the_pretrained_preset(imported, tmp_path):
    """--init-from an imported run (no --preset) takes finetune-pretrained (BERT / Sun et al.'s rates), says so,
    and trains every layer group at lr / (1/0.95)^k; an explicit --preset wins; a run trained here keeps finetune."""
    from lmlab.recipes.classify import ClassifyRecipe, imported_from

    logs: list[str] = []
    recipe = ClassifyRecipe.from_preset(None, [], init_from=str(imported["gpt2"]), data="unused.csv", log=logs.append)
    assert recipe.config.train.lr == 2e-5 and recipe.config.train.epochs == 3
    assert recipe.config.finetune.layer_lr_decay == pytest.approx(1 / 0.95, rel=1e-3)
    assert any("imported gpt2 checkpoint: preset finetune-pretrained" in line for line in logs)
    explicit = ClassifyRecipe.from_preset("finetune", [], init_from=str(imported["gpt2"]), data="unused.csv",
                                          log=logs.append)
    assert explicit.config.train.lr == 1e-3 and explicit.config.finetune.layer_lr_decay == 2.6
    assert imported_from(imported["qwen2"]) == "qwen2"
    here = tmp_path / "here"
    here.mkdir()
    (here / "config.json").write_text('{"model_type": "gpt", "model": {}}')
    assert imported_from(here) is None and imported_from(tmp_path / "missing") is None
