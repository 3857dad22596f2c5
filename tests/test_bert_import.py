"""``lmlab mlm import``: a Hugging Face BERT as a masked-LM run (lmlab.hf_bert), proven against ``transformers``
itself on tiny random BertForMaskedLM / BertModel checkpoints and a WordPiece vocabulary trained here with
``tokenizers`` on an English + Chinese sample (its specials are not ids 0..4, as in bert-base: [CLS] is 101)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from lmlab.cli import main  # noqa: E402
from lmlab.recipes.mlm import MLMRecipe  # noqa: E402

TEXT = [
    "The quick brown fox jumps over the lazy dog. It's a sunny day, isn't it?",
    "The movie was good . The movie was bad . I loved the film and the acting was great.",
    "我们今天学习大语言模型，从理论到实践。模型读取文本并预测下一个词。",
    "机器学习很有趣！深度学习需要大量数据。这部电影很好看。",
    "Café naïve résumé, numbers 12345 and UPPER case words.",
]
SAMPLES = ["The MOVIE was great, wasn't it?", "这部电影很好看！我们学习模型。", "Café 12345 naïve 中文 mixed", "", "  x  "]
QUIET = ["train.progress=false", "train.tensorboard=false", "train.num_threads=1"]


def _vocab(root: Path) -> list[str]:
    """A WordPiece vocabulary trained on TEXT, laid out as BERT's: [PAD] first, unused rows, then the specials."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(TEXT * 3, trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[PAD]"],
                                                                show_progress=False))
    words = [w for w, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]
    words = words[:1] + ["[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words[1:]
    (root / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    (root / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}))
    return words


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> dict:
    """Folders: ``full`` (BertForMaskedLM + tokenizer.json), ``vocab_only`` (the same weights, vocab.txt +
    tokenizer_config.json only), ``body`` (a BertModel, no MLM head); the transformers model and tokenizer."""
    from transformers import BertConfig, BertForMaskedLM, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("bert")
    vocab_only = root / "vocab_only"
    vocab_only.mkdir()
    words = _vocab(vocab_only)
    hf_tok = BertTokenizerFast.from_pretrained(str(vocab_only))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=48, max_position_embeddings=64, initializer_range=0.2)
    model = BertForMaskedLM(cfg).eval()
    with torch.no_grad():  # norms and biases off their 1/0 init, so a swapped tensor cannot go unnoticed
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    full = root / "full"
    model.save_pretrained(full)
    hf_tok.save_pretrained(full)
    model.save_pretrained(vocab_only)
    (vocab_only / "tokenizer.json").unlink(missing_ok=True)
    body = root / "body"
    BertModel(cfg).save_pretrained(body)
    hf_tok.save_pretrained(body)
    run = root / "run"
    assert main(["mlm", "import", str(full), "--out", str(run)]) == 0
    return {"root": root, "full": full, "vocab_only": vocab_only, "body": body, "run": run, "model": model,
            "tok": hf_tok}


def test_logits_equal_transformers_on_a_padded_batch(bert):
    model, codec, run = MLMRecipe.load_model(bert["run"])
    assert (run.model.norm_position, run.model.embed_norm, run.model.type_vocab_size) == ("post", True, 2)
    assert run.model.norm_eps == 1e-12 and run.data.tokenizer == "hf"
    texts = ["The movie was good .", "我们今天学习大语言模型，从理论到实践。模型读取文本", "a"]
    enc = bert["tok"](texts, padding=True, return_tensors="pt")
    assert [[codec.cls_id, *codec.encode(t), codec.sep_id] for t in texts] == [
        [i for i, m in zip(row, mask, strict=True) if m] for row, mask in zip(enc.input_ids.tolist(),
                                                                          enc.attention_mask.tolist(), strict=True)]
    with torch.no_grad():
        expected = bert["model"](**enc).logits
        got = model(enc.input_ids, enc.attention_mask.bool())
    real = enc.attention_mask.bool()
    assert torch.allclose(got[real], expected[real], atol=1e-5, rtol=0)


def test_fill_ranks_as_transformers(bert, capsys):
    text = "the movie was [MASK] ."
    assert main(["mlm", "fill", str(bert["run"]), text, "-k", "5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    tok = bert["tok"]
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
        probs = bert["model"](**enc).logits[0].softmax(-1)
    where = enc.input_ids[0].tolist().index(tok.mask_token_id)
    p = probs[where].clone()
    p[tok.all_special_ids] = 0.0  # lmlab never offers [PAD] [UNK] [CLS] [SEP] [MASK]
    top = p.topk(5)
    (candidates,) = result["masks"]
    assert [c["id"] for c in candidates] == top.indices.tolist()
    assert [c["probability"] for c in candidates] == pytest.approx(top.values.tolist(), abs=1e-5)
    # the user's text with the best WordPiece spliced in where [MASK] was (its spacing kept, not re-decoded)
    assert result["filled"] == text.replace("[MASK]", tok.convert_ids_to_tokens(int(top.indices[0])).removeprefix("##"))


@pytest.mark.parametrize("folder", ["full", "vocab_only"])
def test_token_ids_equal_bert_tokenizer_fast(bert, folder, tmp_path):
    from transformers import BertTokenizerFast

    from lmlab.data.mlm import MLMCodec

    run = bert["run"] if folder == "full" else tmp_path / "run"
    if folder != "full":
        assert main(["mlm", "import", str(bert[folder]), "--out", str(run)]) == 0
        assert json.loads((run / "config.json").read_text())["imported"]["mlm_head"] is True
    codec = MLMCodec.load(run)
    ref = BertTokenizerFast.from_pretrained(str(bert[folder]))
    for text in SAMPLES:
        assert codec.encode(text) == ref(text, add_special_tokens=False).input_ids, text
    assert codec.special_ids() == {"pad": ref.pad_token_id, "unk": ref.unk_token_id, "cls": ref.cls_token_id,
                                   "sep": ref.sep_token_id, "mask": ref.mask_token_id} == {
        "pad": 0, "unk": 3, "cls": 4, "sep": 5, "mask": 6}
    assert codec.encode("这部电影") == ref.convert_tokens_to_ids(list("这部电影"))  # one id per character


@pytest.mark.parametrize("saved_lowercase, config", [(False, {"do_lower_case": False}), (False, {}),
                                                     (True, {"do_lower_case": False})])
def test_tokenizer_config_options_win_over_tokenizer_json_as_in_transformers(bert, saved_lowercase, config, tmp_path):
    """BertTokenizerFast applies tokenizer_config.json's do_lower_case (default true) to the BertNormalizer of
    tokenizer.json; a cased model (bert-base-cased) says do_lower_case: false."""
    from transformers import BertTokenizerFast

    from lmlab.hf_bert import import_bert_tokenizer

    folder = _copy(bert["full"], tmp_path / "cased")
    saved = json.loads((folder / "tokenizer.json").read_text())
    saved["normalizer"]["lowercase"] = saved_lowercase
    (folder / "tokenizer.json").write_text(json.dumps(saved))
    tok_config = {k: v for k, v in json.loads((folder / "tokenizer_config.json").read_text()).items()
                  if k not in ("do_lower_case", "strip_accents")}
    (folder / "tokenizer_config.json").write_text(json.dumps({**tok_config, **config}))
    codec = import_bert_tokenizer(folder, len(bert["tok"]))
    ref = BertTokenizerFast.from_pretrained(str(folder))
    for text in ["The MOVIE was Great", *SAMPLES]:
        assert codec.encode(text) == ref(text, add_special_tokens=False).input_ids, text
    assert codec.kind_options()["lowercase"] == config.get("do_lower_case", True)


def test_classify_fine_tunes_from_exactly_the_imported_weights(bert, tmp_path):
    import lmlab
    from lmlab.callbacks import Callback
    from lmlab.checkpoint import load_tensors
    from lmlab.recipes.classify import ClassifyRecipe

    data = tmp_path / "train.jsonl"
    rows = [{"text": ("the movie was good" if k % 2 else "这部电影很好看 bad"), "label": "pos" if k % 2 else "neg"}
            for k in range(24)]
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    start: dict[str, torch.Tensor] = {}

    class Grab(Callback):
        def on_fit_start(self, trainer) -> None:
            start.update({n: p.detach().clone() for n, p in trainer.model.body.named_parameters()})

    recipe = ClassifyRecipe.from_preset(None, ["max_steps=2", "batch_size=8", "data.val_split=0", *QUIET],
                                        init_from=str(bert["run"]), data=str(data), log=lambda _: None)
    recipe.train(tmp_path / "clf", callbacks=[Grab()])
    imported = load_tensors(bert["run"] / "model.safetensors")
    assert start and start.keys() == imported.keys()
    for name, tensor in start.items():
        assert torch.equal(tensor, imported[name]), name
    saved = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert saved["body"]["pooling"] == "first"
    pipe = lmlab.load(tmp_path / "clf")
    texts = ["the movie was good", "这部电影很好看"]
    codec = MLMRecipe.load_model(bert["run"])[1]
    assert pipe.encoder.encode(texts) == [[codec.cls_id, *codec.encode(t), codec.sep_id] for t in texts]
    assert torch.equal(pipe.probabilities(texts), lmlab.load(tmp_path / "clf").probabilities(texts))
    assert {r["label"] for r in pipe.predict(texts)} <= {"pos", "neg"}


def test_a_bert_model_without_head_imports_as_a_body_that_cannot_fill(bert, tmp_path, capsys):
    run = tmp_path / "body"
    assert main(["mlm", "import", str(bert["body"]), "--out", str(run)]) == 0
    assert "without an MLM head" in capsys.readouterr().out
    model, _, saved = MLMRecipe.load_model(run)
    assert saved.model.head is False and model.head is None
    from transformers import BertModel

    ref = BertModel.from_pretrained(str(bert["body"])).eval()
    ids = bert["tok"](["the movie was good"], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(model.features(ids), ref(ids).last_hidden_state, atol=1e-5, rtol=0)
    capsys.readouterr()  # transformers' loading messages
    assert main(["mlm", "fill", str(run), "the movie was [MASK] ."]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no MLM head" in err and len(err.splitlines()) == 1
    text = tmp_path / "text.txt"
    text.write_text("\n".join(TEXT * 10) + "\n", encoding="utf-8")
    assert main(["mlm", "train", "--data", str(text), "--init-from", str(run), "--out", str(tmp_path / "c"), *QUIET]) == 2
    assert "has no MLM head" in capsys.readouterr().err and not (tmp_path / "c").exists()


def _copy(src: Path, dst: Path, drop=()) -> Path:
    shutil.copytree(src, dst)
    for name in drop:
        (dst / name).unlink()
    return dst


def test_bad_inputs_are_one_line_errors_and_write_nothing(bert, tmp_path, capsys):
    from safetensors.torch import load_file

    gpt = _copy(bert["full"], tmp_path / "gpt")
    config = json.loads((gpt / "config.json").read_text())
    (gpt / "config.json").write_text(json.dumps({**config, "model_type": "roberta"}))
    no_vocab = _copy(bert["vocab_only"], tmp_path / "novocab", drop=["vocab.txt"])
    pickled = _copy(bert["full"], tmp_path / "pickled", drop=["model.safetensors"])
    torch.save(load_file(str(bert["full"] / "model.safetensors")), pickled / "pytorch_model.bin")
    cases = {gpt: "model_type 'roberta' is not supported", no_vocab: "no tokenizer.json or vocab.txt",
             pickled: "safetensors only"}
    for src, message in cases.items():
        out = tmp_path / f"out-{src.name}"
        assert main(["mlm", "import", str(src), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
        assert not out.exists()
    assert main(["gpt", "import", str(bert["full"]), "--out", str(tmp_path / "as-gpt")]) == 2
    assert "a BERT is a masked LM: lmlab mlm import" in capsys.readouterr().err
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    for extra in ([], ["--overwrite"]):
        assert main(["mlm", "import", str(bert["full"]), "--out", str(user), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"] and (user / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left behind


def test_continued_pretraining_of_an_imported_bert_masks_around_its_specials(bert, tmp_path):
    from lmlab.data.mlm import IGNORE_INDEX, Masking, MLMCodec, MLMDataConfig, mask_tokens

    codec = MLMCodec.load(bert["run"])
    masking = Masking.from_config(MLMDataConfig(mask_prob=0.5), codec)
    assert masking.special_ids == (0, 3, 4, 5, 6) and not codec.specials_first
    ids = torch.randint(0, codec.vocab_size, (64, 64), generator=torch.Generator().manual_seed(0))
    inputs, labels = mask_tokens(ids, masking, torch.Generator().manual_seed(1))
    specials = torch.tensor(codec.specials)
    assert (labels[torch.isin(ids, specials)] == IGNORE_INDEX).all()  # a special is never chosen ...
    swapped = (inputs != ids) & (inputs != codec.mask_id)
    assert swapped.sum() > 50 and not torch.isin(inputs[swapped], specials).any()  # ... nor drawn as a random token
    text = tmp_path / "text.txt"
    text.write_text("\n".join(TEXT * 10) + "\n", encoding="utf-8")
    out = tmp_path / "continued"
    assert main(["mlm", "train", "--data", str(text), "--init-from", str(bert["run"]), "--out", str(out),
                 "max_steps=2", "batch_size=4", "eval_every=0", "data.whole_word=true", *QUIET]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["data"]["tokenizer"] == "hf" and saved["model"]["norm_position"] == "post"
    assert MLMRecipe.pretrained_body(out).pooling == "first"  # still a BERT: [CLS] pooling
    assert main(["mlm", "train", "--data", str(text), "--out", str(tmp_path / "scratch"), "data.tokenizer=hf",
                 *QUIET]) == 2  # an imported tokenizer is continued, never trained
    assert not (tmp_path / "scratch").exists()


def test_tensorflow_converted_names_in_shards_import_the_same_weights(bert, tmp_path):
    """Old checkpoints name LayerNorm parameters gamma/beta; big ones come in shards named by an index."""
    from safetensors.torch import load_file, save_file

    from lmlab.checkpoint import load_tensors

    folder = _copy(bert["full"], tmp_path / "tf", drop=["model.safetensors"])
    tensors = {(k.replace(".weight", ".gamma").replace(".bias", ".beta") if ".LayerNorm." in k else k): v
               for k, v in load_file(str(bert["full"] / "model.safetensors")).items()}
    assert any(k.endswith(".gamma") for k in tensors)
    names = sorted(tensors)
    shards = {k: f"model-0000{1 + (i % 2)}-of-00002.safetensors" for i, k in enumerate(names)}
    for shard in set(shards.values()):
        save_file({k: tensors[k] for k in names if shards[k] == shard}, str(folder / shard), metadata={"format": "pt"})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": shards}))
    assert main(["mlm", "import", str(folder), "--out", str(tmp_path / "run")]) == 0
    ours, again = load_tensors(bert["run"] / "model.safetensors"), load_tensors(tmp_path / "run" / "model.safetensors")
    assert ours.keys() == again.keys() and all(torch.equal(ours[k], again[k]) for k in ours)


def test_an_imported_bert_serves_fill_mask_and_evaluates(bert, tmp_path):
    from fastapi.testclient import TestClient

    from lmlab.serve import create_app

    with TestClient(create_app([bert["run"]])) as client:
        r = client.post("/v1/fill-mask", json={"model": "run", "texts": ["这部电影很[MASK]。"], "top_k": 3})
        assert r.status_code == 200
        assert r.json()["results"] == MLMRecipe.load(bert["run"]).fill_mask(["这部电影很[MASK]。"], top_k=3)
    text = tmp_path / "eval.txt"
    text.write_text("\n".join(TEXT * 4) + "\n", encoding="utf-8")
    result = MLMRecipe.evaluate(bert["run"], text)
    assert result["masked_tokens"] > 0 and 0.0 <= result["accuracy"] <= 1.0 and result["loss"] > 0
