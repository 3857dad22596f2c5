"""The masked LM: BERT's masking statistics, dynamic and whole-word masking, the encoder's padding mask, overfit,
save/load, exact resume, continued pretraining, the body API, fill/eval/serve and their bad input, Chinese."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lmlab import checkpoint
from lmlab.callbacks import Callback, find_last_checkpoint
from lmlab.cli import main
from lmlab.config import list_presets
from lmlab.data.mlm import (
    IGNORE_INDEX,
    MaskedBlocks,
    Masking,
    MLMCodec,
    MLMDataConfig,
    SequentialMaskedBlocks,
    mask_tokens,
    segmenter_fn,
)
from lmlab.errors import ConfigError, DataError
from lmlab.models.mlm import MLM, MLMConfig
from lmlab.pipelines.base import MaskFiller, capability_of
from lmlab.recipes.mlm import MLMRecipe

TINY = ["model.num_layers=2", "model.embed_dim=32", "model.num_heads=4", "model.block_size=24", "batch_size=8"]
QUIET = ["progress=false", "tensorboard=false", "num_threads=1", "log_every=1", "device=cpu"]
SPECIALS = 5


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shakespeare(tmp_path_factory, shared_data: Path) -> Path:
    with gzip.open(shared_data / "tinyshakespeare" / "input.txt.gz", "rt", encoding="utf-8") as fh:
        text = fh.read(40_000)
    path = tmp_path_factory.mktemp("mlm-data") / "shakespeare.txt"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_run(shakespeare: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mlm-run") / "run"
    rc = main(["mlm", "train", "--data", str(shakespeare), "--preset", "tiny", "--out", str(out), *TINY, *QUIET,
               "max_steps=12", "eval_every=6", "save_every=6", "warmup_steps=2"])
    assert rc == 0
    return out


def _masking(**kw) -> Masking:
    m = dict(mask_prob=0.15, mask_token_prob=0.8, random_token_prob=0.1, whole_word=False, mask_id=4,
             num_specials=SPECIALS, vocab_size=100)
    m.update(kw)
    return Masking(**m)


# ---------------------------------------------------------------------------------------------------- masking
def test_masking_statistics_on_100k_tokens_follow_15_percent_and_80_10_10():
    g = torch.Generator().manual_seed(0)
    B, T = 200, 512  # 102,400 positions
    ids = torch.randint(SPECIALS, 100, (B, T), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    ids[::4, 400:] = 0  # padding in a quarter of the rows
    ids[:, 7] = 1  # an [UNK] column
    inputs, labels = mask_tokens(ids, _masking(), torch.Generator().manual_seed(1))
    special = ids < SPECIALS
    assert special.sum() > 5000 and (labels[special] == IGNORE_INDEX).all() and torch.equal(inputs[special], ids[special])
    chosen = labels != IGNORE_INDEX
    assert torch.equal(labels[chosen], ids[chosen])
    maskable = int((~special).sum())
    assert maskable > 90_000
    assert abs(chosen.sum().item() / maskable - 0.15) < 0.005
    n = chosen.sum().item()
    to_mask = (inputs == 4) & chosen
    changed = (inputs != ids) & (inputs != 4) & chosen  # a random token that differs from the original
    kept = (inputs == ids) & chosen  # kept (10%), plus random draws that hit the original id (10% x 1/95)
    assert abs(to_mask.sum().item() / n - 0.8) < 0.015
    assert abs(changed.sum().item() / n - 0.1 * 94 / 95) < 0.01
    assert abs(kept.sum().item() / n - (0.1 + 0.1 / 95)) < 0.01
    assert (inputs[changed] >= SPECIALS).all()  # random replacements are never specials
    assert (inputs[~chosen] == ids[~chosen]).all()  # nothing but the chosen positions changes


def _blocks(seed=3, starts=None, whole_word=False):
    tokens = (np.arange(20_000) % 90 + SPECIALS).astype(np.uint16)
    return MaskedBlocks(tokens, starts, block_size=34, batch_size=8, masking=_masking(whole_word=whole_word),
                        cls_id=2, sep_id=3, seed=seed)


def test_dynamic_masking_is_fresh_every_epoch_seeded_and_resumable():
    a, b = _blocks(), _blocks()
    a.set_epoch(0)
    first = a.batch(0, 5)
    again = a.batch(0, 5)  # the same windows drawn again (a later epoch revisiting them): new masks
    assert not torch.equal(first["labels"], again["labels"])
    assert torch.equal(first["labels"] != IGNORE_INDEX, first["labels"] != IGNORE_INDEX)
    assert (first["input_ids"][:, 0] == 2).all() and (first["input_ids"][:, -1] == 3).all()
    epoch0 = [x["labels"] for x in a]
    a.set_epoch(1)
    epoch1 = [x["labels"] for x in a]
    assert not all(torch.equal(x, y) for x, y in zip(epoch0, epoch1, strict=True))
    # same seed, same sequence of masks; another seed, other masks
    assert torch.equal(b.batch(0, 5)["labels"], first["labels"])
    assert not torch.equal(_blocks(seed=4).batch(0, 5)["labels"], first["labels"])
    # the generator state is the resume state: restoring it replays the next batch exactly
    state = a.training_state()
    nxt = a.batch(1, 0)
    c = _blocks()
    c.load_training_state(state)
    assert torch.equal(c.batch(1, 0)["input_ids"], nxt["input_ids"])


def test_eval_masking_is_the_same_every_pass():
    tokens = (np.arange(5000) % 90 + SPECIALS).astype(np.uint16)
    blocks = SequentialMaskedBlocks(tokens, None, 34, 16, _masking(), 2, 3, 0, seed=9)
    one, two = list(blocks), list(blocks)
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(one, two, strict=True))
    last = one[-1]
    assert not last["pad_mask"].all() and (last["labels"][~last["pad_mask"]] == IGNORE_INDEX).all()


def test_whole_word_masking_chooses_all_pieces_of_a_word_together():
    lines = ["the unbelievably understated performances weren't memorable at all.\n"] * 40
    codec = MLMCodec.fit(lines, MLMDataConfig(tokenizer="bpe", vocab_size=300))
    (ids, starts), = codec.encode_lines(lines[:1], segmenter_fn("char"))
    pieces = [codec.piece(i) for i in ids]
    # a word is its pieces: every piece that does not start with a space (or open the line) continues a word
    assert starts == [1 if (k == 0 or p.startswith(" ") or not p.strip() or p in ".") else 0
                      for k, p in enumerate(pieces)]
    assert 0 in starts  # "unbelievably" is several pieces at this vocabulary size
    row = torch.tensor(ids).repeat(2000, 1)  # 2000 independent draws of the same sentence
    st = torch.tensor(starts).repeat(2000, 1)
    _, labels = mask_tokens(row, _masking(whole_word=True, vocab_size=codec.vocab_size), torch.Generator().manual_seed(0), st)
    chosen = labels != IGNORE_INDEX
    word = torch.cumsum(st, 1) - 1
    for w in range(int(word.max()) + 1):
        cols = chosen[:, word[0] == w]
        assert (cols.all(1) | (~cols).all(1)).all()  # a word's pieces: all chosen or none
    assert abs(chosen.float().mean().item() - 0.15) < 0.02


def test_whole_words_of_segmented_chinese():
    codec = MLMCodec.fit(["这部电影很好看。\n"], MLMDataConfig(tokenizer="char"))
    (_, by_char), = codec.encode_lines(["这部电影很好看。"], segmenter_fn("char"))
    assert by_char == [1] * 8  # segmenter char: each character is a word
    (_, by_jieba), = codec.encode_lines(["这部电影很好看。"], segmenter_fn("jieba"))
    assert by_jieba == [1, 0, 1, 0, 1, 1, 0, 1]  # 这部 / 电影 / 很 / 好看 / 。


# ------------------------------------------------------------------------------------------------- the model
def _model(**kw) -> MLM:
    torch.manual_seed(0)
    cfg = dict(vocab_size=60, block_size=24, embed_dim=32, num_layers=2, num_heads=4, dropout=0.0)
    cfg.update(kw)
    return MLM(MLMConfig(**cfg)).eval()


def test_padding_mask_padded_batch_equals_each_example_alone():
    model = _model()
    lengths = [24, 9, 15]
    ids = torch.zeros(3, 24, dtype=torch.long)
    pad_mask = torch.zeros(3, 24, dtype=torch.bool)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(5, 60, (n,))
        pad_mask[b, :n] = True
    with torch.no_grad():
        batch = model.features(ids, pad_mask)
        for b, n in enumerate(lengths):
            alone = model.features(ids[b : b + 1, :n])
            torch.testing.assert_close(batch[b, :n], alone[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(model.features(ids[1:2])[0, :9], batch[1, :9], atol=1e-4)  # the mask matters


def test_overfit_one_batch():
    model = _model(dropout=0.0).train()
    ids = torch.randint(5, 60, (4, 24), generator=torch.Generator().manual_seed(0))
    inputs, labels = mask_tokens(ids, _masking(mask_prob=0.3, vocab_size=60), torch.Generator().manual_seed(0))
    batch = {"input_ids": inputs, "labels": labels}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model.loss(batch)["loss"].item()
    for _ in range(60):
        opt.zero_grad()
        out = model.loss(batch)
        out["loss"].backward()
        opt.step()
    assert first > 3.5 and out["loss"].item() < 0.05 and out["accuracy"] == 1.0


def test_body_api_shapes_and_layer_groups_cover_every_parameter_once(tiny_run: Path):
    body = MLMRecipe.pretrained_body(tiny_run)
    model = body.model
    assert body.family == "mlm" and body.pooling == "mean" and body.pad_id == 0 and body.max_len == 24
    assert body.special_ids == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
    ids = torch.tensor([body.encode("ROMEO: hi")])
    assert ids.min() >= SPECIALS
    h = model.features(ids, torch.ones_like(ids, dtype=torch.bool))
    assert h.shape == (1, ids.shape[1], model.features_dim) and model.features_dim == 32
    assert model.lm_logits(h).shape == (1, ids.shape[1], model.config.vocab_size)
    groups = model.layer_groups()
    flat = [id(p) for g in groups for p in g]
    assert len(groups) == 2 + 2 and len(flat) == len(set(flat)) and set(flat) == {id(p) for p in model.parameters()}
    rebuilt = MLMRecipe.body_from_config(body.model_config, body.tokenizer_files)
    assert {k: v.shape for k, v in rebuilt.model.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert rebuilt.encode("ROMEO: hi") == body.encode("ROMEO: hi")


def test_every_shipped_preset_loads_and_builds():
    names = list_presets("mlm")
    assert {"tiny", "small"} <= set(names)
    for name in names:
        run = MLMRecipe.resolve(name)
        run.model.vocab_size = 100
        assert MLM(run.model).num_parameters() > 0


# ---------------------------------------------------------------------------------------- runs and the CLI
def test_save_load_gives_identical_fill_output(tiny_run: Path, capsys):
    one = MLMRecipe.load(tiny_run).fill_mask(["ROMEO: I [MASK]ove [MASK]hee"], top_k=4)
    two = MLMRecipe.load(tiny_run).fill_mask(["ROMEO: I [MASK]ove [MASK]hee"], top_k=4)
    assert one == two and len(one[0]["masks"]) == 2 and len(one[0]["masks"][0]) == 4
    probs = [c["probability"] for c in one[0]["masks"][0]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
    assert main(["mlm", "fill", str(tiny_run), "ROMEO: I [MASK]ove thee", "-k", "3", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli["masks"][0] == MLMRecipe.load(tiny_run).fill_mask(["ROMEO: I [MASK]ove thee"], top_k=3)[0]["masks"][0]
    # a batch of texts of different lengths (padding) answers each as if alone
    batch = MLMRecipe.load(tiny_run).fill_mask(["ROMEO: I [MASK]ove thee", "a [MASK]"], top_k=3)
    alone = MLMRecipe.load(tiny_run).fill_mask(["a [MASK]"], top_k=3)
    assert [c["token"] for c in batch[1]["masks"][0]] == [c["token"] for c in alone[0]["masks"][0]]
    assert capability_of(MLMRecipe.load(tiny_run)) == "fill_mask" and isinstance(MLMRecipe.load(tiny_run), MaskFiller)


def test_filled_text_is_the_users_text_with_each_best_guess_spliced_in(tiny_run: Path):
    """Characters the (Shakespeare, character) vocabulary lacks, such as 中文 and an emoji, and the user's own
    spacing survive in "filled"; only each [MASK] changes, to its first candidate."""
    text = "中文🙂 I [MASK]ove  [MASK]hee!"
    pipeline = MLMRecipe.load(tiny_run)
    result = pipeline.fill_mask([text], top_k=2)[0]
    first, second = (pipeline.codec.piece(m[0]["id"]) for m in result["masks"])
    assert result["filled"] == f"中文🙂 I {first}ove  {second}hee!"


def test_eval_is_reproducible_and_reports_accuracy_and_perplexity(tiny_run: Path, shakespeare: Path, capsys):
    a = MLMRecipe.evaluate(tiny_run, shakespeare, max_tokens=5000)
    b = MLMRecipe.evaluate(tiny_run, shakespeare, max_tokens=5000)
    assert a == b and 0 <= a["accuracy"] <= 1 and a["masked_tokens"] > 500
    assert abs(a["perplexity"] - np.exp(a["loss"])) < 1e-6 * a["perplexity"]
    assert MLMRecipe.evaluate(tiny_run, shakespeare, max_tokens=5000, seed=5) != a
    assert main(["mlm", "eval", str(tiny_run), "--data", str(shakespeare), "--max-tokens", "5000"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "perplexity" in out and f"{a['loss']:.4f}" in out


def test_resume_n_plus_n_equals_2n(shakespeare: Path, tmp_path: Path):
    common = ["--data", str(shakespeare), "--preset", "tiny", *TINY, *QUIET, "schedule=constant", "warmup_steps=0",
              "save_every=4", "eval_every=4", "model.dropout=0.1", "data.whole_word=true"]
    assert main(["mlm", "train", "--out", str(tmp_path / "full"), *common, "max_steps=8"]) == 0
    assert main(["mlm", "train", "--out", str(tmp_path / "half"), *common, "max_steps=4"]) == 0
    assert main(["mlm", "train", "--out", str(tmp_path / "half"), "--resume", *common[2:], "max_steps=8"]) == 0
    full = checkpoint.load_tensors(find_last_checkpoint(tmp_path / "full") / "model.safetensors")
    resumed = checkpoint.load_tensors(find_last_checkpoint(tmp_path / "half") / "model.safetensors")
    assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full)
    assert (tmp_path / "full" / "data" / "train.words.bin").is_file()


class _FirstWeights(Callback):
    def on_fit_start(self, trainer) -> None:
        self.weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_continued_pretraining_starts_from_exactly_the_source_weights(tiny_run: Path, tmp_path: Path, capsys):
    new_text = tmp_path / "new.txt"
    new_text.write_text("the movie was good. the film was great, the acting was fine.\n" * 300, encoding="utf-8")
    seen = _FirstWeights()
    recipe = MLMRecipe.from_preset("tiny", [*QUIET, "max_steps=3", "eval_every=0", "save_every=0"], data=str(new_text),
                                   init_from=str(tiny_run), log=lambda _m: None)
    recipe.train(tmp_path / "adapted", callbacks=[seen])
    source = checkpoint.load_tensors(tiny_run / "model.safetensors")
    assert source.keys() == seen.weights.keys() and all(torch.equal(source[k], seen.weights[k]) for k in source)
    assert (tmp_path / "adapted" / "tokenizer.json").read_bytes() == (tiny_run / "tokenizer.json").read_bytes()
    saved = json.loads((tmp_path / "adapted" / "config.json").read_text())
    assert saved["model"]["embed_dim"] == 32 and saved["init_from"] == str(tiny_run)
    # a data option that contradicts the source tokenizer: one line, exit 2, nothing written
    rc = main(["mlm", "train", "--data", str(new_text), "--init-from", str(tiny_run), "--preset", "tiny",
               "--out", str(tmp_path / "bad"), "data.tokenizer=bpe"])
    err = capsys.readouterr().err
    assert rc == 2 and "data.tokenizer=bpe" in err and "source tokenizer" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()
    rc = main(["mlm", "train", "--data", str(new_text), "--init-from", str(tiny_run), "--preset", "tiny",
               "--out", str(tmp_path / "bad"), "model.embed_dim=64"])
    assert rc == 2 and "model.embed_dim=64" in capsys.readouterr().err
    rc = main(["mlm", "train", "--data", str(new_text), "--init-from", str(tmp_path / "nope"), "--out", str(tmp_path / "bad")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    other = tmp_path / "gpt-run"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"format_version": checkpoint.FORMAT_VERSION, "model_type": "gpt"}))
    rc = main(["mlm", "train", "--data", str(new_text), "--init-from", str(other), "--out", str(tmp_path / "bad")])
    assert rc == 2 and "holds a 'gpt' model, not 'mlm'" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    before = sorted(p.name for p in tiny_run.iterdir())  # --overwrite never replaces the run it starts from
    rc = main(["mlm", "train", "--data", str(new_text), "--init-from", str(tiny_run), "--out", str(tiny_run), "--overwrite"])
    assert rc == 2 and sorted(p.name for p in tiny_run.iterdir()) == before


def test_fill_and_eval_bad_input(tiny_run: Path, tmp_path: Path, capsys):
    pipe = MLMRecipe.load(tiny_run)
    with pytest.raises(DataError, match=r"no \[MASK\]"):
        pipe.fill_mask(["no mask here"])
    with pytest.raises(DataError, match="at most 32 are allowed"):
        pipe.fill_mask(["[MASK]" * 33])
    with pytest.raises(DataError, match="at most 22"):
        pipe.fill_mask(["a long text that does not fit [MASK]"])
    with pytest.raises(DataError, match="top_k"):
        pipe.fill_mask(["a [MASK]"], top_k=0)
    assert main(["mlm", "fill", str(tiny_run), "nothing to fill"]) == 2
    assert "no [MASK]" in capsys.readouterr().err
    assert main(["mlm", "fill", str(tmp_path / "missing"), "a [MASK]"]) == 2
    assert main(["mlm", "eval", str(tiny_run), "--data", str(tmp_path / "missing.txt")]) == 2
    with pytest.raises(ConfigError, match="mask_token_prob"):
        MLMRecipe.resolve("tiny", ["data.mask_token_prob=0.95", "data.random_token_prob=0.1"])


def test_serve_fill_mask_endpoint(tiny_run: Path):
    from fastapi.testclient import TestClient

    from lmlab.serve import ServeLimits, create_app

    app = create_app([tiny_run], limits=ServeLimits(max_input_chars=200, max_topn=10))
    with TestClient(app) as client:
        card = client.get("/v1/models").json()["data"][0]
        assert card["kind"] == "fill_mask" and card["endpoints"] == ["/v1/fill-mask"]
        ok = client.post("/v1/fill-mask", json={"model": "run", "texts": ["ROMEO: I [MASK]ove"], "top_k": 3})
        assert ok.status_code == 200
        body = ok.json()
        assert body["object"] == "fill_mask" and len(body["results"][0]["masks"][0]) == 3
        assert body["results"] == MLMRecipe.load(tiny_run).fill_mask(["ROMEO: I [MASK]ove"], top_k=3)
        for texts, message in ((["no mask"], "no [MASK]"), (["[MASK]" * 33], "at most 32"),
                               (["this text is far too long for the model [MASK]"], "shorten it")):
            r = client.post("/v1/fill-mask", json={"model": "run", "texts": texts})
            assert r.status_code == 422 and message in r.json()["error"]["message"]
        assert client.post("/v1/fill-mask", json={"model": "run", "texts": ["a [MASK]"], "top_k": 11}).status_code == 422
        assert client.post("/v1/fill-mask", json={"model": "run", "texts": ["x" * 201]}).status_code == 422
        assert client.post("/v1/classify", json={"model": "run", "texts": ["a"]}).status_code == 400


def test_chinese_text_trains_and_fills(shared_data: Path, tmp_path: Path):
    with gzip.open(shared_data / "chinese" / "peoples-daily-1998" / "raw.txt.gz", "rt", encoding="utf-8") as fh:
        text = fh.read(12_000)
    data = tmp_path / "zh.txt"
    data.write_text(text, encoding="utf-8")
    out = tmp_path / "zh"
    assert main(["mlm", "train", "--data", str(data), "--preset", "tiny", "--out", str(out), *TINY, *QUIET,
                 "max_steps=4", "eval_every=0", "data.whole_word=true", "data.segmenter=jieba"]) == 0
    result = MLMRecipe.load(out).fill_mask(["中国人民[MASK]放军"], top_k=3)[0]
    assert len(result["masks"]) == 1 and len(result["filled"]) == 7 and result["filled"].startswith("中国人民") and result["filled"].endswith("放军")
    assert MLMRecipe.evaluate(out, data, max_tokens=3000)["masked_tokens"] > 100


def test_the_playground_has_a_panel_for_every_kind_of_model():
    from importlib import resources

    from lmlab.serve import KIND_ENDPOINTS

    html = resources.files("lmlab").joinpath("serve_static/index.html").read_text(encoding="utf-8")
    js = resources.files("lmlab").joinpath("serve_static/playground.js").read_text(encoding="utf-8")
    assert all(f'id="panel-{kind}"' in html for kind in KIND_ENDPOINTS) and '"/v1/fill-mask"' in js


def test_under_torchrun_each_rank_takes_its_slice_of_the_same_global_batch(monkeypatch):
    from lmlab import distributed

    whole = _blocks().batch(0, 2)
    halves = []
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "world_size", lambda: 2)
        monkeypatch.setattr(distributed, "rank", lambda r=rank: r)
        halves.append(_blocks().batch(0, 2))
    assert torch.equal(torch.cat([h["labels"] for h in halves]), whole["labels"])
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    with pytest.raises(ConfigError, match="not divisible by the world size 3"):
        next(iter(_blocks()))


def test_classify_fine_tunes_from_an_mlm_run(tiny_run: Path, tmp_path: Path, capsys):
    """``lmlab classify train --init-from MLM_RUN`` (the finetune branch): trains, saves, loads and predicts."""
    main(["classify", "train", "--help"])
    if "--init-from" not in capsys.readouterr().out:
        pytest.skip("classify train --init-from is not on this branch yet (it comes with the finetune branch)")
    data = tmp_path / "train.jsonl"
    rows = [{"text": f"ROMEO: {'good' if k % 2 else 'bad'} {k}", "label": "pos" if k % 2 else "neg"} for k in range(80)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "clf"
    rc = main(["classify", "train", "--data", str(data), "--init-from", str(tiny_run), "--out", str(out),
               "train.progress=false", "train.tensorboard=false", "train.num_threads=1", "train.max_steps=3"])
    assert rc == 0, capsys.readouterr().err
    from lmlab import load

    result = load(out).predict(["ROMEO: good 3", "ROMEO: bad 4"])
    assert len(result) == 2 and {r["label"] for r in result} <= {"pos", "neg"}


def test_strip_html_is_part_of_the_saved_bpe_tokenizer(tmp_path: Path):
    lines = [f"A great film, number {k}.<br /><br />The acting was <i>superb</i>, the story great; "
             f"the cast excellent, the music {k * 7} times better than expected!\n" for k in range(300)]
    cfg = MLMDataConfig(tokenizer="bpe", vocab_size=300, lowercase=True, strip_html=True)
    codec = MLMCodec.fit(lines, cfg)
    pieces = [codec.piece(i) for i in codec.encode("a great film.<br /><br />the acting")]
    assert not any("<" in p or "br" in p for p in pieces)
    assert codec.encode("A GREAT film.<br />the") == codec.encode("a great film. the")
    codec.save(tmp_path)
    again = MLMCodec.load(tmp_path)
    assert again.encode("film<br />the") == codec.encode("film<br />the")
    assert again.kind_options() == {"tokenizer": "bpe", "vocab_size": 300, "lowercase": True, "strip_html": True}
    plain = MLMCodec.fit(lines, MLMDataConfig(tokenizer="bpe", vocab_size=300))
    assert plain.kind_options()["strip_html"] is False and plain.kind_options()["lowercase"] is False
    with pytest.raises(ConfigError, match="strip_html works with data.tokenizer=bpe"):
        MLMRecipe.resolve("tiny", ["data.strip_html=true"])
