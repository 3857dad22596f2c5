"""Fine-tuning pretrained language models: the body API, classify --init-from, continued pretraining, the
fine-tuning tricks (discriminative LR, gradual unfreezing, slanted triangular LR, auxiliary LM loss), and every
bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lmlab import checkpoint
from lmlab.callbacks import Callback
from lmlab.checkpoint import load_tensors
from lmlab.cli import main
from lmlab.config import TrainConfig
from lmlab.data.classification import collate
from lmlab.data.tokens import TokenCodec
from lmlab.errors import ConfigError
from lmlab.models.finetune import BodyClassifier, FinetuneConfig
from lmlab.models.gpt import GPT, GPTConfig
from lmlab.models.rnn_lm import RNNLM, RNNLMConfig
from lmlab.recipes.classify import ClassifyRecipe
from lmlab.schedules import lr_at, slanted_triangular

QUIET = ["train.progress=false", "train.tensorboard=false", "train.num_threads=1"]
TINY_GPT = ["model.block_size=64", "model.embed_dim=32", "model.num_layers=2", "model.num_heads=2", "batch_size=16"]


@pytest.fixture(scope="module")
def rt(shared_data, tmp_path_factory) -> Path:
    """Real rt-polarity snippets: 600 labelled (train.jsonl), 200 held out (test.jsonl) and 4,000 others as
    unlabelled text (text.txt) for pretraining."""
    pos = (shared_data / "rt-polarity" / "rt-polarity.pos.utf8").read_text(encoding="utf-8").splitlines()
    neg = (shared_data / "rt-polarity" / "rt-polarity.neg.utf8").read_text(encoding="utf-8").splitlines()
    root = tmp_path_factory.mktemp("ft")
    for name, lo, hi in (("train.jsonl", 0, 300), ("test.jsonl", 300, 400)):
        with open(root / name, "w", encoding="utf-8") as fh:
            for p, n in zip(pos[lo:hi], neg[lo:hi], strict=True):
                fh.write(json.dumps({"text": p, "label": "pos"}) + "\n")
                fh.write(json.dumps({"text": n, "label": "neg"}) + "\n")
    (root / "text.txt").write_text("\n".join(pos[400:2400] + neg[400:2400]) + "\n", encoding="utf-8")
    return root


def _gpt_train(rt, out, *extra) -> int:
    return main(["gpt", "train", "--data", str(rt / "text.txt"), "--out", str(out), *TINY_GPT, *QUIET, *extra])


def _classify(rt, out, *extra, init_from) -> int:
    return main(["classify", "train", "--data", str(rt / "train.jsonl"), "--init-from", str(init_from),
                 "--out", str(out), *QUIET, *extra])


@pytest.fixture(scope="module")
def gpt_run(rt) -> Path:
    out = rt / "gpt"
    assert _gpt_train(rt, out, "max_steps=30", "eval_every=0") == 0
    return out


@pytest.fixture(scope="module")
def lm_run(rt) -> Path:
    out = rt / "lm"
    assert main(["lm", "train", "--data", str(rt / "text.txt"), "--out", str(out), "--preset", "ptb-small",
                 "data.tokenizer=word", "model.embed_dim=16", "model.hidden_dim=16", "model.num_layers=2",
                 "batch_size=8", "data.bptt=20", "max_steps=10", *QUIET]) == 0
    return out


@pytest.fixture(scope="module")
def cls_run(rt, gpt_run) -> Path:
    out = rt / "cls"
    assert _classify(rt, out, "epochs=1", "finetune.min_steps=0", init_from=gpt_run) == 0  # one epoch: cheap
    return out


# ------------------------------------------------------------------------------------------ the body API
@pytest.mark.parametrize("tie", [False, True])
def test_body_api_matches_forward_and_groups_cover_every_parameter(tie):
    torch.manual_seed(0)
    ids = torch.randint(0, 20, (3, 10))
    gpt = GPT(GPTConfig(vocab_size=20, block_size=16, embed_dim=16, num_layers=3, num_heads=2, tie_embeddings=tie))
    rnn = RNNLM(RNNLMConfig(vocab_size=20, embed_dim=8, hidden_dim=8 if tie else 12, num_layers=2, tie_weights=tie))
    rnn.eval()
    assert torch.allclose(gpt.lm_logits(gpt.features(ids)), gpt(ids), atol=1e-6)
    assert torch.allclose(rnn.lm_logits(rnn.features(ids)), rnn(ids)[0], atol=1e-6)
    for model, n_groups in ((gpt, 1 + 3), (rnn, 1 + 2)):
        groups = model.layer_groups()
        flat = [id(p) for g in groups for p in g]
        assert len(groups) == n_groups
        assert len(flat) == len(set(flat)) == len({id(p) for p in model.parameters()})
    assert gpt.features_dim == 16 and rnn.features_dim == (8 if tie else 12)


def test_right_padding_changes_no_real_position_and_last_pooling_picks_the_last_real_token():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=20, block_size=16, embed_dim=16, num_layers=2, num_heads=2)).eval()
    short = torch.tensor([[3, 4, 5]])
    padded = torch.tensor([[3, 4, 5, 0, 0, 0], [1, 2, 3, 4, 5, 6]])
    mask = torch.tensor([[True] * 3 + [False] * 3, [True] * 6])
    assert torch.allclose(gpt.features(padded, mask)[0, :3], gpt.features(short)[0], atol=1e-6)
    clf = BodyClassifier(gpt, FinetuneConfig(head_dropout=0.0), 2, "last").eval()
    pooled = clf.pool(gpt.features(padded, mask), torch.tensor([3, 6]))
    assert torch.allclose(pooled[0], gpt.features(short)[0, -1], atol=1e-6)
    concat = BodyClassifier(gpt, FinetuneConfig(), 2, "concat").pool(gpt.features(padded, mask), torch.tensor([3, 6]))
    real = gpt.features(short)[0]
    assert torch.allclose(concat[0], torch.cat([real[-1], real.max(0).values, real.mean(0)]), atol=1e-6)


# --------------------------------------------------------------------------------------- the fine-tuning tricks
def test_slanted_triangular_follows_the_paper():
    # Howard & Ruder (2018), eq. 3: T = 1000, cut_frac = 0.1, ratio = 32 -> cut = 100
    lr = 0.01
    assert slanted_triangular(0, 1000, lr) == pytest.approx(lr / 32)
    assert slanted_triangular(50, 1000, lr) == pytest.approx(lr * (1 + 0.5 * 31) / 32)
    assert slanted_triangular(100, 1000, lr) == pytest.approx(lr)
    assert slanted_triangular(550, 1000, lr) == pytest.approx(lr * (1 + (1 - 450 / 900) * 31) / 32)
    assert slanted_triangular(1000, 1000, lr) == pytest.approx(lr / 32)
    cfg = TrainConfig(lr=lr, schedule="slanted", cut_frac=0.2, stlr_ratio=10)
    assert lr_at(20, cfg, 100) == pytest.approx(lr) and lr_at(0, cfg, 100) == pytest.approx(lr / 10)
    with pytest.raises(ConfigError, match="warmup_steps"):
        TrainConfig(schedule="slanted", warmup_steps=10).validate()


def test_discriminative_learning_rates_per_layer_group():
    gpt = GPT(GPTConfig(vocab_size=20, block_size=16, embed_dim=16, num_layers=2, num_heads=2))
    clf = BodyClassifier(gpt, FinetuneConfig(layer_lr_decay=2.6), 2, "last")
    cfg = TrainConfig(optimizer="adamw", lr=0.01, weight_decay=0.1)
    (opt,) = clf.configure_optimizers(cfg)
    groups = clf.layer_groups()  # embeddings, block 0, block 1 (+ ln_f), head
    assert len(groups) == 4
    scale_of = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    for k, params in enumerate(groups):
        assert [scale_of[id(p)] for p in params] == pytest.approx([2.6 ** -(3 - k)] * len(params))
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(clf.parameters()))
    decays = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decays[id(gpt.blocks[0].attn.qkv.weight)] == 0.1 and decays[id(gpt.blocks[0].attn.qkv.bias)] == 0.0


def test_aux_lm_loss_is_the_bodys_next_token_loss():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=20, block_size=16, embed_dim=16, num_layers=2, num_heads=2))
    clf = BodyClassifier(gpt, FinetuneConfig(aux_lm_weight=0.5, head_dropout=0.0), 2, "last").eval()
    batch = collate([([3, 4, 5, 6], 1), ([7, 8], 0)])
    out = clf.loss(batch)
    assert out["loss"].item() == pytest.approx(out["cls_loss"].item() + 0.5 * out["lm_loss"].item(), rel=1e-6)
    logits = gpt(torch.tensor([[3, 4, 5, 6]]))[0, :-1]  # the real next-token pairs only: 3 + 1 of them
    short = gpt(torch.tensor([[7, 8]]))[0, :-1]
    expected = F.cross_entropy(torch.cat([logits, short]), torch.tensor([4, 5, 6, 8]))
    assert out["lm_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert "lm_loss" not in BodyClassifier(gpt, FinetuneConfig(), 2, "last").loss(batch)

    class NotCausal(torch.nn.Module):
        features_dim = 4

    with pytest.raises(ConfigError, match="causal"):
        BodyClassifier(NotCausal(), FinetuneConfig(aux_lm_weight=0.5), 2, "mean")


class _Snapshots(Callback):
    """The classifier's parameters at the start and at the end of every epoch, and requires_grad per step."""

    def __init__(self) -> None:
        self.states: list[list[torch.Tensor]] = []
        self.flags: dict[int, set[tuple[bool, ...]]] = {}

    def _grab(self, trainer) -> list[list[torch.Tensor]]:
        return [[p.detach().clone() for p in g] for g in trainer.model.layer_groups()]

    def on_fit_start(self, trainer) -> None:
        self.states.append(self._grab(trainer))

    def on_step_end(self, trainer, logs) -> None:
        groups = trainer.model.layer_groups()
        flags = tuple(all(p.requires_grad for p in g) for g in groups)
        frozen_grads = all(p.grad is None for g, f in zip(groups, flags, strict=True) if not f for p in g)
        assert frozen_grads
        self.flags.setdefault(trainer.state.epoch, set()).add(flags)

    def on_epoch_end(self, trainer) -> None:
        self.states.append(self._grab(trainer))


def test_body_starts_from_the_pretrained_weights_and_gradual_unfreezing_freezes_per_epoch(rt, gpt_run, tmp_path):
    snaps = _Snapshots()
    recipe = ClassifyRecipe.from_preset(
        None, ["epochs=3", "finetune.gradual_unfreezing=true", "data.val_split=0", *QUIET], init_from=str(gpt_run),
        data=str(rt / "train.jsonl"), log=lambda _: None,
    )
    recipe.train(tmp_path / "run", callbacks=[snaps])
    # before the first step: every body tensor equals the pretrained run's
    pretrained = load_tensors(gpt_run / "model.safetensors")
    body = recipe.model.body
    names = {id(p): n for n, p in body.named_parameters()}
    for params, start in zip(body.layer_groups(), snaps.states[0], strict=False):
        for p, t in zip(params, start, strict=True):
            assert torch.equal(t, pretrained[names[id(p)]]), names[id(p)]
    # 4 groups (embeddings, block 0, block 1 + ln_f, head): epoch e trains the top e + 1
    assert snaps.flags == {0: {(False, False, False, True)}, 1: {(False, False, True, True)},
                           2: {(False, True, True, True)}}
    for epoch in range(3):
        before, after = snaps.states[epoch], snaps.states[epoch + 1]
        for k in range(4):
            same = all(torch.equal(a, b) for a, b in zip(before[k], after[k], strict=True))
            assert same == (k < 3 - epoch), (epoch, k)


def test_fine_tuned_run_saves_loads_and_predicts_with_the_pretrained_tokenization(rt, gpt_run, cls_run):
    import lmlab

    saved = json.loads((cls_run / "config.json").read_text())
    assert saved["model_type"] == "classifier" and saved["body"]["family"] == "gpt"
    assert saved["body"]["model_config"] == json.loads((gpt_run / "config.json").read_text())["model"]
    for name in ("tokenizer.json", "vocab.json"):
        assert json.loads((cls_run / name).read_text()) == json.loads((gpt_run / name).read_text())
    pipe = lmlab.load(cls_run)
    texts = ["a gorgeous, witty film", "dull and lifeless", "x" * 500]
    codec = TokenCodec.load(gpt_run)
    assert pipe.encoder.encode(texts) == [codec.encode(t)[-64:] for t in texts]  # the end of a long text is kept
    model = BodyClassifier(GPT(GPTConfig(**saved["body"]["model_config"])), FinetuneConfig(**saved["finetune"]), 2,
                           saved["body"]["pooling"]).eval()
    checkpoint.load_weights(cls_run / "model.safetensors", model)
    batch = collate([(ids, 0) for ids in pipe.encoder.encode(texts)])
    expected = model.probabilities(batch.ids, batch.lengths)
    assert torch.equal(pipe.probabilities(texts), expected)
    assert [r["label"] for r in pipe.predict(texts)] == [saved["labels"][i] for i in expected.argmax(-1).tolist()]
    assert pipe.info()["arch"] == "finetuned"
    assert 0 <= ClassifyRecipe.evaluate(cls_run, str(rt / "test.jsonl"))["accuracy"] <= 1


def test_server_classifies_with_a_fine_tuned_run(cls_run):
    from fastapi.testclient import TestClient

    from lmlab.serve import create_app

    app = create_app([str(cls_run)])
    with TestClient(app) as client:
        resp = client.post("/v1/classify", json={"model": next(iter(app.state.models)), "texts": ["a witty film"]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["results"][0]["label"] in {"pos", "neg"}


class _StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, logs) -> None:
        if trainer.state.step == self.step:
            trainer.request_stop("stopped by the test")


def test_resume_of_a_fine_tuning_run_equals_a_straight_run(rt, gpt_run, tmp_path):
    """Stopped mid-epoch (step 10 of 15 per epoch, i.e. N), then resumed with --resume to 2 epochs: the weights
    equal a straight run's bit for bit. (Stopped, not run with epochs=1: the slanted schedule's horizon is
    epochs x steps per epoch, so a shorter first run would follow another schedule.)"""
    extra = ["epochs=2", "finetune.gradual_unfreezing=true", "finetune.aux_lm_weight=0.5", "data.val_split=0.2",
             "finetune.min_steps=0", "batch_size=32"]
    assert _classify(rt, tmp_path / "a", *extra, init_from=gpt_run) == 0
    recipe = ClassifyRecipe.from_preset(None, [*extra, *QUIET], init_from=str(gpt_run), data=str(rt / "train.jsonl"),
                                        log=lambda _: None)
    assert recipe.train(tmp_path / "b", callbacks=[_StopAt(10)]).step == 10
    assert _classify(rt, tmp_path / "b", "--resume", *extra, init_from=gpt_run) == 0

    def last(run):
        folder = json.loads((run / "checkpoints" / "last.json").read_text())["dir"]
        return load_tensors(run / "checkpoints" / folder / "model.safetensors")

    a, b = last(tmp_path / "a"), last(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_rnn_lm_body_fine_tunes_with_concat_pooling(rt, lm_run, tmp_path):
    import lmlab

    out = tmp_path / "ulmfit"
    assert _classify(rt, out, "epochs=1", "finetune.head_dim=8", init_from=lm_run) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["body"]["pooling"] == "concat" and saved["body"]["max_tokens"] == 512
    assert len(lmlab.load(out).predict(["what a film"])) == 1


# --------------------------------------------------------------------------------------- continued pretraining
def test_continued_pretraining_starts_from_the_exact_weights_and_tokenizer(rt, gpt_run, lm_run, tmp_path):
    from lmlab.recipes.gpt import GPTRecipe
    from lmlab.recipes.lm import LMRecipe

    for recipe_cls, src, extra in ((GPTRecipe, gpt_run, TINY_GPT), (LMRecipe, lm_run, ["data.bptt=20", "batch_size=8"])):
        preset = "ptb-small" if recipe_cls is LMRecipe else None
        recipe = recipe_cls.from_preset(preset, ["max_steps=1", *extra, *QUIET], init_from=str(src),
                                        data=str(rt / "test.jsonl"), log=lambda _: None)
        run = tmp_path / recipe_cls.family
        recipe.prepare(None, run)
        recipe.resumed = False
        model = recipe.build_model()
        pretrained = load_tensors(src / "model.safetensors")
        state = model.state_dict()
        assert all(torch.equal(state[k], pretrained[k]) for k in pretrained)
        assert recipe.config.model.num_layers == json.loads((src / "config.json").read_text())["model"]["num_layers"]
    assert _gpt_train(rt, tmp_path / "cont", "--init-from", str(gpt_run), "max_steps=2") == 0
    assert (tmp_path / "cont" / "tokenizer.json").read_text() == (gpt_run / "tokenizer.json").read_text()
    assert json.loads((tmp_path / "cont" / "config.json").read_text())["init_from"] == str(gpt_run)


# ------------------------------------------------------------------------------------------------ bad input
def _fake_run(path: Path, model_type: str) -> Path:
    path.mkdir(parents=True)
    checkpoint.save_config(path, model_type, {})
    return path


def test_bad_init_from_is_one_line_exit_2_and_writes_nothing(rt, gpt_run, lm_run, cls_run, tmp_path, capsys):
    victim = tmp_path / "old"
    shutil.copytree(cls_run, victim)
    before = {p.name: p.read_bytes() for p in victim.iterdir() if p.is_file()}
    corrupt = tmp_path / "corrupt"
    shutil.copytree(gpt_run, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"not a tensor file")
    truncated = tmp_path / "truncated"
    shutil.copytree(gpt_run, truncated)
    (truncated / "config.json").write_text('{"model_type": "gp')
    cases = [
        (["--init-from", str(_fake_run(tmp_path / "s2s", "seq2seq"))], "cannot be a classifier body"),
        (["--init-from", str(_fake_run(tmp_path / "w2v", "word2vec"))], "cannot be a classifier body"),
        (["--init-from", str(cls_run)], "cannot be a classifier body"),
        (["--init-from", str(tmp_path / "missing")], "does not exist"),
        (["--init-from", str(corrupt)], "--init-from"),
        (["--init-from", str(truncated)], "config.json"),
        (["--init-from", str(gpt_run), "data.tokenizer=keras"], "contradicts --init-from"),
        (["--init-from", str(gpt_run), "data.max_len=50"], "contradicts --init-from"),
        (["--init-from", str(gpt_run), "finetune.max_tokens=65"], "larger than the context"),
        (["--init-from", str(gpt_run), "--pretrained-vectors", str(gpt_run)], "use one of them"),
        (["--init-from", str(lm_run), "finetune.head_pooling=bogus"], "head_pooling"),
    ]
    for args, message in cases:
        capsys.readouterr()
        code = main(["classify", "train", "--data", str(rt / "train.jsonl"), "--out", str(victim), "--overwrite",
                     *QUIET, *args])
        err = capsys.readouterr().err.strip()
        assert code == 2, (args, err)
        assert message in err and len(err.splitlines()) <= 2, (args, err)
        assert {p.name: p.read_bytes() for p in victim.iterdir() if p.is_file()} == before
    for cmd, args, message in [
        ("gpt", ["--init-from", str(lm_run)], "not 'gpt'"),
        ("gpt", ["--init-from", str(gpt_run), "model.num_layers=3"], "model.num_layers=3"),
        ("gpt", ["--init-from", str(gpt_run), "data.tokenizer=bpe"], "data.tokenizer='bpe'"),
        ("gpt", ["--init-from", str(tmp_path / "missing")], "does not exist"),
        ("lm", ["--init-from", str(lm_run), "data.tokenizer=char"], "data.tokenizer='char'"),
        ("lm", ["--init-from", str(gpt_run)], "not 'rnn_lm'"),
    ]:
        capsys.readouterr()
        out = tmp_path / f"new-{cmd}"
        code = main([cmd, "train", "--data", str(rt / "text.txt"), "--out", str(out), *QUIET, *args])
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) <= 2, (cmd, args, err)
        assert not out.exists()


# ------------------------------------------------------------------------------------------- a real check
def test_pretrained_gpt_fine_tunes_on_real_reviews(rt, tmp_path, capsys):
    """A tiny char GPT pretrained on 4,000 unlabelled rt-polarity snippets, fine-tuned on 600 labelled ones, beside
    the same architecture from its random initialisation (a copy of the run with fresh weights).

    Honest scope: at this size (30k parameters, 150 steps, characters) neither beats chance reliably on held-out
    snippets, so the test checks that both fine-tunings train (the training loss falls) and prints the held-out
    accuracies; the numbers of a larger run are in benchmarks/transfer.py and the notes."""
    pre = tmp_path / "pre"
    assert _gpt_train(rt, pre, "max_steps=150", "lr=0.003", "eval_every=0", "warmup_steps=20") == 0
    scratch = tmp_path / "scratch"
    shutil.copytree(pre, scratch)
    torch.manual_seed(0)
    fresh = GPT(GPTConfig(**json.loads((pre / "config.json").read_text())["model"]))
    checkpoint.save_weights(scratch / "model.safetensors", fresh)
    acc = {}
    for name, src in (("pretrained", pre), ("scratch", scratch)):
        out = tmp_path / f"cls-{name}"
        assert _classify(rt, out, "epochs=4", "lr=0.003", "data.val_split=0", "log_every=1", "finetune.head_pooling=mean",
                         "batch_size=32", "finetune.min_steps=0", init_from=src) == 0  # the preset's batch and steps before
        losses = [r["loss"] for r in checkpoint.read_metrics(out) if r.get("split") == "train"]
        first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
        assert last < first, (name, first, last)
        acc[name] = ClassifyRecipe.evaluate(out, str(rt / "test.jsonl"))["accuracy"]
    with capsys.disabled():
        print(f"\nheld-out accuracy after fine-tuning: {acc}")


def test_tour_stop_pretrains_and_fine_tunes_side_by_side(tmp_path, capsys):
    assert main(["tour", "--only", "finetune", "--scale", "0.02", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "pretrained: test accuracy" in out and "random init: test accuracy" in out
    md = (tmp_path / "report.md").read_text()
    assert "| pretrained |" in md and "| random init |" in md


def test_body_encoder_frames_with_cls_and_sep_and_first_pooling():
    from lmlab.recipes.classify import BodyEncoder

    enc = BodyEncoder(lambda t: [ord(c) for c in t], 5, "tail", 0, {"cls": 1, "sep": 2})
    assert enc.encode(["abcdef", ""]) == [[1, 100, 101, 102, 2], [1, 2]]
    assert BodyEncoder(lambda t: [ord(c) for c in t], 3, "head").encode(["abcdef", ""]) == [[97, 98, 99], [0]]
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=20, block_size=16, embed_dim=16, num_layers=1, num_heads=2)).eval()
    hidden = gpt.features(torch.tensor([[3, 4, 5]]))
    first = BodyClassifier(gpt, FinetuneConfig(), 2, "first").pool(hidden, torch.tensor([3]))
    assert torch.equal(first[0], hidden[0, 0])


def test_runs_saved_before_a_config_key_existed_still_resume():
    """The new train.cut_frac / train.stlr_ratio keys and the finetune section must not block --resume of a run
    whose config.json predates them, unless they are set to something else than their defaults."""
    from lmlab.config import check_resume_compatible, config_to_dict
    from lmlab.errors import CheckpointError
    from lmlab.recipes.classify import ClassifyRunConfig

    new = config_to_dict(ClassifyRunConfig())
    old = {k: dict(v) for k, v in new.items() if k != "finetune"}
    del old["train"]["cut_frac"], old["train"]["stlr_ratio"]
    defaults = config_to_dict(ClassifyRunConfig())
    check_resume_compatible(old, new, "run", defaults=defaults)
    with pytest.raises(CheckpointError, match="train.cut_frac"):
        check_resume_compatible(old, {**new, "train": {**new["train"], "cut_frac": 0.3}}, "run", defaults=defaults)
    with pytest.raises(CheckpointError):
        check_resume_compatible(old, new, "run")  # without the defaults: the old behaviour


def test_resume_names_the_missing_init_from(rt, cls_run, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(cls_run, run)
    code = main(["classify", "train", "--data", str(rt / "train.jsonl"), "--out", str(run), "--resume", *QUIET])
    err = capsys.readouterr().err
    assert code == 2 and "resume it with --init-from" in err


def test_resume_refuses_another_init_from_run_but_not_a_moved_copy(rt, cls_run, gpt_run, lm_run, tmp_path, capsys):
    """On --resume the body is rebuilt from the run's own record, so a different --init-from would be ignored
    while the log names it: it is refused; a moved copy of the same run (same model) is fine."""
    run = shutil.copytree(cls_run, tmp_path / "copy")
    weights = (run / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert _classify(rt, run, "--resume", "epochs=1", "finetune.min_steps=0", init_from=lm_run) == 2
    err = capsys.readouterr().err
    assert f"--init-from {lm_run} is another model; resume it with --init-from {gpt_run}" in err, err
    assert (run / "model.safetensors").read_bytes() == weights
    moved = shutil.copytree(gpt_run, tmp_path / "moved-gpt")
    assert _classify(rt, run, "--resume", "epochs=1", "finetune.min_steps=0", init_from=moved) == 0


# ------------------------------------------------------------------------------------------- few labels
def _first_rows(src: Path, dst: Path, n: int) -> Path:
    dst.write_text("".join(src.read_text(encoding="utf-8").splitlines(keepends=True)[:n]), encoding="utf-8")
    return dst


def test_min_steps_gives_a_few_labels_enough_optimizer_steps(rt, gpt_run, tmp_path):
    """100 labels, val_split 0.1, batch 32: 90 texts are 3 steps per epoch, so 3 epochs would be 9 steps in all;
    finetune.min_steps=20 trains ceil(20 / 3) = 7 epochs (21 steps) with the slanted schedule spanning all of
    them, keeps train.epochs=3 in config.json, and a resumed run goes to the same 21 steps."""
    data = _first_rows(rt / "train.jsonl", tmp_path / "100.jsonl", 100)
    common = ["epochs=3", "batch_size=32", "data.val_split=0.1", "finetune.min_val_examples=0", *QUIET]

    def recipe(*extra):
        return ClassifyRecipe.from_preset(None, [*common, *extra], init_from=str(gpt_run), data=str(data),
                                          log=lambda _: None)

    assert recipe("finetune.min_steps=0").train(tmp_path / "off").step == 9
    result = recipe("finetune.min_steps=20").train(tmp_path / "on")
    assert result.step == 21 and any("7 epochs of 3 steps" in note for note in result.notes)
    saved = json.loads((tmp_path / "on" / "config.json").read_text())
    assert saved["train"]["epochs"] == 3 and saved["finetune"]["min_steps"] == 20
    logged = [r for r in map(json.loads, (tmp_path / "on" / "metrics.jsonl").read_text().splitlines()) if "lr" in r]
    cfg = TrainConfig(lr=1e-3, schedule="slanted")
    assert len(logged) > 1  # one horizon, 21 steps:
    assert [r["lr"] for r in logged] == pytest.approx([lr_at(r["step"] - 1, cfg, 21) for r in logged])
    # stopped at step 10, then resumed: the same epochs, the same 21 steps
    assert recipe("finetune.min_steps=20").train(tmp_path / "cut", callbacks=[_StopAt(10)]).step == 10
    assert recipe("finetune.min_steps=20").train(tmp_path / "cut", resume=True).step == 21
    with pytest.raises(ConfigError, match="finetune.min_steps must be >= 0"):
        FinetuneConfig(min_steps=-1).validate()
    assert FinetuneConfig(min_steps=100).epochs_for(3, 57) == 3 and FinetuneConfig(min_steps=100).epochs_for(3, 6) == 17


def test_a_fine_tuning_run_saved_before_min_steps_resumes_as_it_was_trained(rt, cls_run, gpt_run, tmp_path):
    """A run whose config.json has no finetune.min_steps / min_val_examples (written before the keys existed)
    and "last" pooling (the GPT default then) resumes with the behaviour it was trained with: min_steps 0
    (train.epochs as given), its own validation split and its own pooling, whatever the defaults now are."""
    run = tmp_path / "old"
    shutil.copytree(cls_run, run)
    saved = json.loads((run / "config.json").read_text())
    del saved["finetune"]["min_steps"], saved["finetune"]["min_val_examples"]
    saved["body"]["pooling"] = "last"
    (run / "config.json").write_text(json.dumps(saved))
    step = json.loads((run / "checkpoints" / "last.json").read_text())["step"]
    recipe = ClassifyRecipe.from_preset(None, ["epochs=1", "finetune.min_steps=1000", "finetune.min_val_examples=1000",
                                               *QUIET], init_from=str(gpt_run), data=str(rt / "train.jsonl"),
                                        log=lambda _: None)
    result = recipe.train(run, resume=True)
    assert result.step == step  # its one epoch was done: nothing more to train
    assert recipe.model.pooling == "last" and recipe.val_data is not None


def test_min_val_examples_holds_out_nothing_from_a_few_labels(rt, gpt_run, tmp_path):
    """100 labels, val_split 0.1: 10 texts would be held out, fewer than finetune.min_val_examples=50, so all 100
    train and there is no validation; with min_val_examples=0 the split is kept (90 / 10)."""
    data = _first_rows(rt / "train.jsonl", tmp_path / "100.jsonl", 100)
    sizes = {}
    for value in (50, 0):
        recipe = ClassifyRecipe.from_preset(None, ["epochs=1", "finetune.min_steps=0", f"finetune.min_val_examples={value}",
                                                   *QUIET], init_from=str(gpt_run), data=str(data), log=lambda _: None)
        recipe.train(tmp_path / f"v{value}")
        sizes[value] = (len(recipe.train_data.dataset), len(recipe.val_data.dataset) if recipe.val_data else 0)
    assert sizes == {50: (100, 0), 0: (90, 10)}
    assert FinetuneConfig(min_val_examples=50).val_fraction(0.1, 1000) == 0.1  # 100 held out: kept
    with pytest.raises(ConfigError, match="finetune.min_val_examples must be >= 0"):
        FinetuneConfig(min_val_examples=-1).validate()
