"""SeqGAN: rewards, policy-gradient sign, rollouts, the oracle, the schedule, BLEU/Self-BLEU, bad input, CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lmlab import metrics as M
from lmlab.cli import main
from lmlab.config import list_presets
from lmlab.data.loader import EpochLoader
from lmlab.errors import ConfigError, DataError, TrainingError
from lmlab.models import textgan as tg
from lmlab.models.oracle import OracleConfig, OracleLSTM, make_oracle_data
from lmlab.trainer import Trainer

TINY = dict(vocab_size=20, embed_dim=8, hidden_dim=8, max_len=6, d_embed_dim=8, d_filter_sizes=[1, 2, 3], d_num_filters=[4, 4, 4])
FAST = ["train.progress=false", "train.tensorboard=false", "train.num_threads=1"]


def tiny_gan(**gan) -> tg.SeqGAN:
    torch.manual_seed(0)
    return tg.SeqGAN(tg.SeqGANConfig(**TINY), tg.GANConfig(**gan))


def test_rewards_for_complete_sequences_equal_discriminator_output():
    model = tiny_gan()
    seqs = torch.randint(0, 20, (5, 6))
    rewards = model.rewards(seqs, rollout_num=3)
    assert rewards.shape == (5, 6)
    model.discriminator.eval()
    with torch.no_grad():
        expected = torch.softmax(model.discriminator(seqs), -1)[:, 1]
    torch.testing.assert_close(rewards[:, -1], expected)
    assert ((rewards >= 0) & (rewards <= 1)).all()


def test_policy_gradient_step_raises_log_prob_of_rewarded_sequence_and_lowers_punished_one():
    for sign in (1.0, -1.0):
        model = tiny_gan()
        seqs = model.generator.sample(4, generator=torch.Generator().manual_seed(1))
        before = model.generator.token_log_probs(seqs).sum(1).detach()
        opt = torch.optim.SGD(model.generator.parameters(), lr=0.5)
        loss = model.policy_gradient_loss(seqs, torch.full((4, 6), sign))
        opt.zero_grad()
        loss.backward()
        opt.step()
        after = model.generator.token_log_probs(seqs).sum(1).detach()
        assert ((after - before) * sign > 0).all(), (sign, before, after)


def test_higher_reward_raises_log_prob_more():
    model = tiny_gan()
    seq = model.generator.sample(1, generator=torch.Generator().manual_seed(2))
    gains = []
    for reward in (0.2, 0.9):
        m = tiny_gan()
        opt = torch.optim.SGD(m.generator.parameters(), lr=0.1)
        before = m.generator.token_log_probs(seq).sum().item()
        opt.zero_grad()
        m.policy_gradient_loss(seq, torch.full((1, 6), reward)).backward()
        opt.step()
        gains.append(m.generator.token_log_probs(seq).sum().item() - before)
    assert 0 < gains[0] < gains[1]


def test_rollouts_start_from_the_given_prefix_and_come_from_the_delayed_generator():
    model = tiny_gan()
    seqs = torch.randint(0, 20, (3, 6))
    rolled = model.rollouts(seqs, rollout_num=4, generator=torch.Generator().manual_seed(0))
    assert rolled.shape == (5, 4, 3, 6)
    for t in range(1, 6):
        assert torch.equal(rolled[t - 1, :, :, :t], seqs[:, :t].expand(4, 3, t))
    # make the ROLLOUT net (not G) always emit token 7: every completed position must be 7
    with torch.no_grad():
        model.rollout_generator.head.bias.fill_(-50.0)
        model.rollout_generator.head.bias[7] = 50.0
    rolled = model.rollouts(seqs, rollout_num=2)
    for t in range(1, 6):
        assert (rolled[t - 1, :, :, t:] == 7).all()


def test_rollout_net_is_an_exponential_moving_average_of_the_generator():
    model = tiny_gan(rollout_update_rate=0.8)
    beta = model.rollout_generator.head.weight.detach().clone()
    with torch.no_grad():
        model.generator.head.weight.add_(1.0)
    theta = model.generator.head.weight.detach().clone()
    model.update_rollout()
    torch.testing.assert_close(model.rollout_generator.head.weight, 0.8 * beta + 0.2 * theta)


def test_eos_masks_later_tokens():
    seqs = torch.tensor([[5, 3, 7, 8], [5, 6, 7, 3]])
    assert tg.finish_sequences(seqs, 3, 0).tolist() == [[5, 3, 0, 0], [5, 6, 7, 3]]
    assert tg.token_mask(seqs, 3, 0).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


def test_oracle_is_deterministic_for_a_seed():
    cfg = OracleConfig(vocab_size=50, embed_dim=8, hidden_dim=8, seq_len=7, num_samples=30, seed=5)
    o1, d1 = make_oracle_data(cfg)
    o2, d2 = make_oracle_data(cfg)
    assert d1.shape == (30, 7) and torch.equal(d1, d2)
    for a, b in zip(o1.parameters(), o2.parameters(), strict=True):
        assert torch.equal(a, b)
    o3, d3 = make_oracle_data(OracleConfig(vocab_size=50, embed_dim=8, hidden_dim=8, seq_len=7, num_samples=30, seed=6))
    assert not torch.equal(d1, d3)
    # N(0, 1) weights: the std of the 50 x 8 embedding is near 1; and the oracle likes its own samples
    assert 0.7 < o1.embedding.weight.std().item() < 1.3
    assert o1.nll(d1) < math.log(50) < o1.nll(torch.randint(0, 50, (200, 7)))


def test_phase_schedule():
    gan = tg.GANConfig(pretrain_epochs=2, d_pretrain_steps=3, adversarial_rounds=2, g_steps_per_round=1, d_steps_per_round=2)
    phases = [tg.phase_at(s, 5, gan) for s in range(tg.total_steps(5, gan) + 1)]
    assert phases[:10] == [("mle", i) for i in range(10)]
    assert phases[10:13] == [("d_pretrain", i) for i in range(3)]
    assert phases[13:19] == [("pg", 0), ("d", 0), ("d", 0), ("pg", 1), ("d", 1), ("d", 1)]
    assert phases[19] == ("done", 0)


# --- BLEU / Self-BLEU by hand ----------------------------------------------------------------------------
def test_bleu_matches_hand_computation():
    hyp = "the cat sat on the mat".split()
    refs = ["the cat is on the mat".split(), "a cat sat on a mat".split()]
    # unigrams: the x2 (max in one ref 2), cat, sat, on, mat -> 6/6; bigrams: the cat, cat sat, sat on, on the,
    # the mat -> all but none... 'the cat' (r1), 'cat sat' (r2), 'sat on' (r2), 'on the' (r1), 'the mat' (r1) -> 5/5
    # trigrams: the cat sat (no), cat sat on (r2), sat on the (no), on the mat (r1) -> 2/4
    # 4-grams: the cat sat on, cat sat on the, sat on the mat -> 0/3 -> smoothed 0.1/3; lengths equal -> BP 1
    assert M.sentence_bleu(hyp, refs, 2) == pytest.approx(1.0)
    assert M.sentence_bleu(hyp, refs, 3) == pytest.approx((1 * 1 * 0.5) ** (1 / 3))
    assert M.sentence_bleu(hyp, refs, 4) == pytest.approx((1 * 1 * 0.5 * (0.1 / 3)) ** (1 / 4))
    # brevity penalty: hypothesis of 2 tokens, closest reference length 6 -> exp(1 - 6/2)
    assert M.sentence_bleu(["the", "cat"], refs, 2) == pytest.approx(math.exp(1 - 3) * (1 * 1) ** 0.5)
    # no unigram match -> 0; the corpus version averages sentence scores
    assert M.sentence_bleu(["dog"], refs, 2) == 0.0
    assert M.bleu_against([hyp, ["dog"]], refs, [2])[2] == pytest.approx(0.5)


def test_self_bleu_matches_hand_computation():
    a, b, c = "a b c".split(), "a b d".split(), "x y z".split()
    # a vs {b, c}: unigrams a,b match (2/3), bigrams 'a b' (1/2) -> sqrt(2/3 * 1/2); b vs {a, c}: same; c: 0
    one = math.sqrt(2 / 3 * 1 / 2)
    assert M.self_bleu([a, b, c], [2])[2] == pytest.approx(2 * one / 3)
    # identical sentences are each other's references: Self-BLEU 1; the sentence itself never counts
    assert M.self_bleu([a, a], [2, 3])[3] == pytest.approx(1.0)
    assert M.self_bleu([a, b], [2])[2] == pytest.approx(one)
    with pytest.raises(ValueError):
        M.self_bleu([a], [2])


# --- bad input --------------------------------------------------------------------------------------------
def test_bad_configs_are_refused():
    with pytest.raises(ConfigError, match="rollout_num must be >= 1"):
        tg.GANConfig(rollout_num=0).validate()
    with pytest.raises(ConfigError, match=">= 2 tokens"):
        tg.SeqGAN(tg.SeqGANConfig(**{**TINY, "vocab_size": 1}))
    with pytest.raises(ConfigError, match=">= 2 tokens"):
        OracleLSTM(OracleConfig(vocab_size=1))
    with pytest.raises(ConfigError, match="rollout_num"):
        tg.resolve_run_config("tour", ["gan.rollout_num=0"])
    with pytest.raises(ConfigError, match="did you mean"):
        tg.resolve_run_config("tour", ["gan.rollout_nums=3"])


def test_discriminator_seeing_one_class_is_explained():
    model = tiny_gan()
    with pytest.raises(DataError, match="only one class"):
        model.discriminator_loss(torch.randint(0, 20, (4, 6)), torch.zeros(0, 6, dtype=torch.long))


def test_long_sentences_are_truncated_with_a_count(shared_data, capsys):
    from lmlab.data.vocab import build_vocab

    lines = tg.read_sentences(shared_data / "multi30k" / "tok" / "val.lc.norm.tok.en", max_lines=300)
    vocab = build_vocab(lines)
    seqs, cut = tg.encode_sentences(lines, vocab, 12)
    assert seqs.shape == (300, 12)
    assert cut == sum(len(x) + 1 > 12 for x in lines) > 0
    one_word = tg.DataConfig(path=str(shared_data / "multi30k" / "tok" / "val.lc.norm.tok.en"), max_lines=1, max_vocab=5)
    with pytest.raises(ConfigError, match="max_vocab"):
        tg.prepare_data(tg.GANRunConfig(source="data", data=one_word))


def test_nan_rewards_stop_training_with_the_step_and_keep_the_checkpoint(tmp_path):
    cfg = tg.GANConfig(pretrain_epochs=1, d_pretrain_steps=0, adversarial_rounds=3, d_steps_per_round=1, rollout_num=2)
    model = tiny_gan(**vars(cfg))
    data = torch.randint(0, 20, (64, 6))
    loader = EpochLoader(data, 16, collate_fn=torch.stack, drop_last=True)
    model.rewards = lambda seqs, *a, **k: torch.full(seqs.shape, float("nan"))
    tcfg = tg.TrainConfig(lr=0.01, batch_size=16, max_steps=tg.total_steps(4, cfg), progress=False, tensorboard=False)
    with pytest.raises(TrainingError, match="at step 5") as err:
        Trainer(tcfg, model, loader, run_dir=tmp_path).fit()
    assert "last good checkpoint" in str(err.value)
    assert json.loads((tmp_path / "checkpoints" / "last.json").read_text())["step"] == 4


# --- presets, CLI, pipeline ----------------------------------------------------------------------------------
def test_every_preset_loads_and_builds():
    names = list_presets("gan")
    assert {"seqgan-oracle", "seqgan-multi30k", "tour"} <= set(names)
    for name in names:
        cfg = tg.resolve_run_config(name)
        cfg.model.vocab_size = 50
        tg.SeqGAN(cfg.model, cfg.gan)


TINY_ORACLE = [
    "oracle.vocab_size=60", "oracle.seq_len=8", "oracle.num_samples=256", "oracle.eval_samples=128",
    "model.embed_dim=8", "model.hidden_dim=8", "model.d_filter_sizes=[2,3]", "model.d_num_filters=[4,4]",
    "gan.pretrain_epochs=2", "gan.d_pretrain_steps=4", "gan.adversarial_rounds=2", "gan.d_steps_per_round=1",
    "gan.rollout_num=2", "gan.eval_every_rounds=1", "train.batch_size=32",
]


def test_cli_oracle_train_eval_sample(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["gan", "train", "--oracle", "--preset", "tour", "--out", str(out), *TINY_ORACLE, *FAST]) == 0
    text = capsys.readouterr().out
    assert "[pretrain_end]" in text and "[end]" in text and "nll_oracle" in text
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("phase") == "end" for r in records)
    assert main(["gan", "eval", str(out), "-t", "1.0", "-t", "0.5", "--samples", "64", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["temperature"] for r in result["results"]] == [1.0, 0.5]
    assert all(r["nll_oracle"] > 0 for r in result["results"])
    assert main(["gan", "sample", str(out), "-n", "3", "--seed", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(len(x.split()) == 8 for x in lines)
    # resume of a finished run is refused or continues cleanly; an existing dir without --overwrite is refused
    assert main(["gan", "train", "--oracle", "--preset", "tour", "--out", str(out), *TINY_ORACLE, *FAST]) == 2
    assert "already exists" in capsys.readouterr().err


def test_cli_real_data_train_eval_and_generator_pipeline(tmp_path, shared_data, capsys):
    tok = shared_data / "multi30k" / "tok"
    out = tmp_path / "real"
    args = [
        "gan", "train", "--data", str(tok / "val.lc.norm.tok.en"), "--preset", "seqgan-multi30k", "--out", str(out),
        "data.max_lines=256", f"data.test_path={tok / 'test_2016_flickr.lc.norm.tok.en'}", "model.max_len=12",
        "model.embed_dim=8", "model.hidden_dim=16", "model.d_filter_sizes=[2,3]", "model.d_num_filters=[4,4]",
        "gan.pretrain_epochs=1", "gan.d_pretrain_steps=2", "gan.adversarial_rounds=1", "gan.d_steps_per_round=1",
        "gan.rollout_num=2", "train.batch_size=32", *FAST,
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "were truncated" in text and "nll_test" in text
    assert (out / "vocab.json").is_file()
    assert main(["gan", "eval", str(out), "-t", "1.0", "--samples", "50", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["results"][0]
    assert {"bleu2", "bleu5", "self_bleu2", "self_bleu5"} <= set(row)
    assert 0 <= row["bleu5"] <= row["bleu2"] <= 1
    import lmlab

    pipe = lmlab.load(out)
    assert pipe.info()["model_type"] == "seqgan"
    result = pipe.generate("a man", max_new_tokens=5, seed=0)
    assert result["finish_reason"] in {"length", "eos"} and result["prompt_tokens"] == 2
    assert len(pipe.sample(4, temperature=0.0)) == 4


def test_cli_needs_exactly_one_source(tmp_path, capsys):
    assert main(["gan", "train", "--out", str(tmp_path / "x")]) == 2
    assert main(["gan", "train", "--oracle", "--preset", "tour", "--out", str(tmp_path / "y"), "gan.rollout_num=0"]) == 2
    assert "rollout_num must be >= 1" in capsys.readouterr().err
