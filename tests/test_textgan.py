"""SeqGAN: rewards, policy-gradient sign, rollouts, the oracle, the schedule, BLEU/Self-BLEU, bad input, CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lmlab import metrics as M
from lmlab.cli import main
from lmlab.config import TrainConfig, list_presets
from lmlab.data.loader import EpochLoader
from lmlab.data.sentence_rows import encode_sentences, read_sentences, sentence_codec
from lmlab.errors import CheckpointError, ConfigError, DataError, TrainingError
from lmlab.models import textgan as tg
from lmlab.models.oracle import OracleConfig, OracleLSTM, make_oracle_data
from lmlab.recipes.gan import DataConfig, GANRecipe, GANRunConfig
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


# --- batched rollouts (gan.rollout_impl=batched) against the sequential ones and the definition --------------
def test_batched_rollouts_keep_the_prefix_and_come_from_the_delayed_generator():
    model = tiny_gan()
    seqs = torch.randint(0, 20, (3, 6))
    rolled = model.rollouts_batched(seqs, rollout_num=4, generator=torch.Generator().manual_seed(0))
    assert rolled.shape == (5, 4, 3, 6)
    for t in range(1, 6):  # identical prefixes, bit for bit
        assert torch.equal(rolled[t - 1, :, :, :t], seqs[:, :t].expand(4, 3, t))
    again = model.rollouts_batched(seqs, rollout_num=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(rolled, again)  # a fixed seed gives the same rollouts
    with torch.no_grad():  # the ROLLOUT net (not G) always emits token 7, and token 19 (the last id) never
        model.rollout_generator.head.bias.fill_(-50.0)
        model.rollout_generator.head.bias[7] = 50.0
    rolled = model.rollouts_batched(seqs, rollout_num=2)
    for t in range(1, 6):
        assert (rolled[t - 1, :, :, t:] == 7).all()


def test_draw_from_head_samples_the_softmax_and_never_a_zero_probability_token():
    head = torch.nn.Linear(4, 23)  # 23 tokens: blocks of 5, the last one padded
    with torch.no_grad():
        head.weight.mul_(4.0)
        head.bias[[0, 9, 22]] = float("-inf")  # probability 0, in the first, a middle and the padded block
    h = torch.randn(1, 4)
    p = torch.softmax(head(h), -1)[0].detach()
    n = 100_000
    draws = tg.draw_from_head(head, h.expand(n, 4), torch.Generator().manual_seed(3), chunk_rows=4096)
    freq = torch.bincount(draws, minlength=23).double() / n
    assert freq[[0, 9, 22]].sum() == 0
    sd = (p.double() * (1 - p.double()) / n).sqrt()
    assert ((freq - p.double()).abs() <= 5 * sd + 1e-9).all(), (freq, p)


def test_batched_discriminator_scoring_equals_scoring_every_rollout():
    cfg = tg.SeqGANConfig(**{**TINY, "d_filter_sizes": [1, 2, 3, 6], "d_num_filters": [4, 5, 4, 3]})
    torch.manual_seed(0)
    model = tg.SeqGAN(cfg, tg.GANConfig())
    model.discriminator.eval()
    seqs = torch.randint(0, 20, (5, 6))
    rolled = model.rollouts_batched(seqs, 3, torch.Generator().manual_seed(1))
    with torch.no_grad():
        shared = model.discriminator.prob_real_rollouts(seqs, rolled)  # (T-1, N, B)
        every = model.discriminator.prob_real(rolled.view(-1, 6)).view(5, 3, 5)
    torch.testing.assert_close(shared, every, rtol=1e-5, atol=1e-6)


# --- gan.step_impl=fused against the reference kernels -------------------------------------------------------
def test_linear_nll_equals_log_softmax_in_value_and_gradients_across_chunks():
    from lmlab.models.head_nll import linear_nll, weighted_linear_nll

    torch.manual_seed(0)
    h0, w0, b0 = torch.randn(37, 8), torch.randn(50, 8), torch.randn(50)
    y = torch.randint(0, 50, (37,))
    g = torch.rand(37)  # per-row weights (the policy gradient's rewards)
    grads = []
    for chunk_rows in (0, 5):  # several chunks, the last one short
        h, w, b = (t.clone().requires_grad_() for t in (h0, w0, b0))
        nll = linear_nll(h, w, b, y, chunk_rows)
        (nll * g).sum().backward()
        grads.append((nll.detach(), h.grad, w.grad, b.grad))
        h, w, b = (t.clone().requires_grad_() for t in (h0, w0, b0))
        loss = weighted_linear_nll(h, w, b, y, g, chunk_rows)  # the gradients from the forward pass's softmax
        (2.0 * loss).backward()
        grads.append(((loss / g.sum()).detach(), h.grad / 2, w.grad / 2, b.grad / 2))
    h, w, b = (t.clone().requires_grad_() for t in (h0, w0, b0))
    ref = -torch.log_softmax(torch.nn.functional.linear(h, w, b), -1).gather(-1, y[:, None]).squeeze(-1)
    (ref * g).sum().backward()
    for i, got in enumerate(grads):
        value = ref.detach() if i % 2 == 0 else (ref.detach() * g).sum() / g.sum()
        for a, e in zip(got, (value, h.grad, w.grad, b.grad), strict=True):
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)


def test_chunked_sampling_draws_the_same_tokens_as_the_full_logits():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 40)
    h = torch.randn(300, 8)
    with torch.no_grad():
        for temperature in (1.0, 0.7):
            full = tg.draw_categorical(head(h).float() / temperature, torch.Generator().manual_seed(4))
            chunked = tg.draw_categorical_from_head(head, h, temperature, torch.Generator().manual_seed(4), chunk_rows=64)
            assert torch.equal(full, chunked)


def test_unfolded_discriminator_equals_the_convolutions_in_output_and_gradients():
    torch.manual_seed(0)
    d = tg.Discriminator(tg.SeqGANConfig(**{**TINY, "d_filter_sizes": [1, 2, 3, 6], "d_num_filters": [4, 5, 4, 3]}))
    d.eval()
    seqs = torch.randint(0, 20, (7, 6))
    outs = []
    for unfold in (False, True):
        d.unfold_convs = unfold
        d.zero_grad()
        logits = d(seqs)
        logits.square().sum().backward()
        outs.append([logits.detach()] + [p.grad.clone() for p in d.parameters()])
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fused_steps_follow_the_reference_steps_through_every_phase():
    """MLE, D pre-training, PG and D steps with both step_impls from the same start: the same losses and weights
    up to float rounding (the fused Adam, the chunked head and the unfolded convolutions)."""
    cfg = dict(TINY, vocab_size=300)  # > 1 chunk of the head's rows on a CPU is not needed for this: same code
    runs = {}
    for impl in ("reference", "fused"):
        torch.manual_seed(0)
        model = tg.SeqGAN(tg.SeqGANConfig(**cfg), tg.GANConfig(pretrain_epochs=1, d_pretrain_steps=2, adversarial_rounds=1,
                                                              d_steps_per_round=1, rollout_num=2, step_impl=impl))
        assert model.discriminator.unfold_convs == (impl == "fused")
        opts = model.configure_optimizers(TrainConfig(lr=0.01))
        torch.manual_seed(1)
        batch = torch.randint(0, 300, (8, 6))
        losses = [model.phase_step(batch, opts, step, 2)["loss"].item() for step in range(6)]
        runs[impl] = (losses, {k: v.clone() for k, v in model.state_dict().items()})
    assert runs["reference"][0] == pytest.approx(runs["fused"][0], rel=1e-5, abs=1e-6)
    for k, v in runs["reference"][1].items():
        torch.testing.assert_close(runs["fused"][1][k], v, rtol=1e-4, atol=1e-5)


def test_chunked_nll_evaluations_equal_the_full_log_softmax():
    from lmlab.models.oracle import OracleConfig, OracleLSTM

    oracle = OracleLSTM(OracleConfig(vocab_size=60, embed_dim=8, hidden_dim=8, seq_len=5, num_samples=10))
    gen = tg.Generator(tg.SeqGANConfig(**{**TINY, "vocab_size": 60, "max_len": 5}))
    seqs = oracle.sample(40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for net, got in ((oracle, oracle.nll(seqs, batch_size=16)), (gen, tg.generator_nll(gen, seqs, batch_size=16))):
            inputs = torch.cat([torch.zeros_like(seqs[:, :1]), seqs[:, :-1]], dim=1)
            out, _ = net.lstm(net.embedding(inputs))
            ref = -torch.log_softmax(net.head(out), -1).gather(-1, seqs[..., None]).mean().item()
            assert got == pytest.approx(ref, rel=1e-6)


def _exact_rewards(model: tg.SeqGAN, seqs: torch.Tensor) -> torch.Tensor:
    """Q(Y_{1:t-1}, y_t) of the paper's eq. 4 by enumerating every completion of every prefix (tiny V and T)."""
    import itertools

    V, (B, T) = model.config.vocab_size, seqs.shape
    model.discriminator.eval()
    out = torch.zeros(B, T, dtype=torch.float64)
    with torch.no_grad():
        out[:, -1] = model.discriminator.prob_real(seqs).double()
        for t in range(1, T):  # the prefix y_1..y_t is kept; positions t..T-1 (0-based) are completed
            tails = torch.tensor(list(itertools.product(range(V), repeat=T - t)))  # (V^(T-t), T-t)
            for b in range(B):
                full = torch.cat([seqs[b, :t].expand(len(tails), t), tails], dim=1)
                logp = model.rollout_generator.token_log_probs(full)[:, t:].sum(1).double()
                out[b, t - 1] = (logp.exp() * model.discriminator.prob_real(full).double()).sum()
    return out


@pytest.mark.parametrize("impl", ["batched", "sequential"])
def test_rollout_rewards_match_the_definition_in_distribution(impl):
    """Both implementations' rollout rewards average to eq. 4's expectation for every prefix; a prefix off by
    one or a wrongly scored last position would be many standard errors away (checked below)."""
    cfg = tg.SeqGANConfig(vocab_size=3, embed_dim=4, hidden_dim=4, max_len=4, init_std=1.5, d_embed_dim=4,
                          d_filter_sizes=[1, 2, 4], d_num_filters=[3, 3, 3])
    torch.manual_seed(1)
    model = tg.SeqGAN(cfg, tg.GANConfig(rollout_impl=impl))
    with torch.no_grad():
        for p in model.discriminator.parameters():
            p.mul_(3.0)  # a discriminator with opinions: rewards far from 0.5 and far apart
        model.generator.head.weight.add_(1.0)  # G and the delayed rollout net differ: rollouts must use the latter
    seqs = torch.tensor([[0, 1, 2, 0], [2, 2, 1, 1], [1, 0, 0, 2]])
    exact = _exact_rewards(model, seqs)  # (B, T)
    n = 2000
    got = model.rewards(seqs, rollout_num=n, generator=torch.Generator().manual_seed(0)).double()
    # the largest standard error of a mean of n rewards in [0, 1] is 0.5 / sqrt(n); 5 of them: a false alarm
    # has probability ~1e-6 per entry
    tol = 5 * 0.5 / n**0.5
    assert torch.equal(got[:, -1], model.discriminator.prob_real(seqs).double())  # t = T: D itself, exactly
    assert (got - exact).abs().max() < tol, (got, exact)
    # the test's power: at EVERY position, the rewards of a prefix off by one (the neighbouring position's, e.g.
    # D of a rollout at t = T, or D itself at t = T-1) are more than 2 tolerances away for some sequence
    assert ((exact[:, 1:] - exact[:, :-1]).abs().amax(0) > 2.5 * tol).all()


def test_batched_and_sequential_rewards_agree_per_position_at_a_larger_size():
    """The two implementations against each other (no enumeration): per-position means over many rollouts."""
    cfg = tg.SeqGANConfig(**{**TINY, "vocab_size": 30, "init_std": 1.0})
    torch.manual_seed(2)
    model = tg.SeqGAN(cfg, tg.GANConfig())
    with torch.no_grad():
        for p in model.discriminator.parameters():
            p.mul_(4.0)
    seqs = model.generator.sample(3, generator=torch.Generator().manual_seed(5))
    n = 1500
    a = model.rewards(seqs, rollout_num=n, generator=torch.Generator().manual_seed(0), impl="batched")
    b = model.rewards(seqs, rollout_num=n, generator=torch.Generator().manual_seed(1), impl="sequential")
    tol = 5 * (2 * 0.25 / n) ** 0.5  # 5 standard errors of a difference of two means of [0, 1] rewards
    assert torch.equal(a[:, -1], b[:, -1])
    assert (a - b).abs().max() < tol
    assert (b[:, 1:] - b[:, :-1]).abs().max() > 3 * tol  # a shifted prefix would not pass


def test_rollout_impl_is_validated_and_old_runs_keep_the_sequential_rollouts(tmp_path):
    from lmlab.recipes.gan import saved_run_config

    with pytest.raises(ConfigError, match="rollout_impl must be one of batched, sequential"):
        GANRecipe.resolve("tour", ["gan.rollout_impl=fast"])
    with pytest.raises(ConfigError, match="rollout_impl"):
        tiny_gan().rewards(torch.randint(0, 20, (2, 6)), impl="fast")
    assert GANRecipe.resolve("tour").gan.rollout_impl == "batched"
    out = tmp_path / "run"
    assert main(["gan", "train", "--oracle", "--preset", "tour", "--out", str(out), *TINY_ORACLE, *FAST]) == 0
    assert saved_run_config(out).gan.rollout_impl == "batched"
    config = json.loads((out / "config.json").read_text())
    del config["gan"]["rollout_impl"]  # a run directory written before the key existed
    (out / "config.json").write_text(json.dumps(config))
    assert saved_run_config(out).gan.rollout_impl == "sequential"
    assert saved_run_config(out).gan.step_impl == "fused"  # written after step_impl existed: kept
    del config["gan"]["step_impl"]
    (out / "config.json").write_text(json.dumps(config))
    assert saved_run_config(out).gan.step_impl == "reference"
    assert not GANRecipe.load_parts(out)[0].discriminator.unfold_convs
    with pytest.raises(ConfigError, match="step_impl must be one of fused, reference"):
        GANRecipe.resolve("tour", ["gan.step_impl=fast"])
    recipe = GANRecipe.from_run(out)
    recipe.check_resume(config, out)  # resuming it is not refused as a config change
    with pytest.raises(CheckpointError, match="rollout_impl"):
        GANRecipe(GANRecipe.resolve("tour", [*TINY_ORACLE, *FAST])).check_resume(config, out)


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
        GANRecipe.resolve("tour", ["gan.rollout_num=0"])
    with pytest.raises(ConfigError, match="did you mean"):
        GANRecipe.resolve("tour", ["gan.rollout_nums=3"])


def test_discriminator_seeing_one_class_is_explained():
    model = tiny_gan()
    with pytest.raises(DataError, match="only one class"):
        model.discriminator_loss(torch.randint(0, 20, (4, 6)), torch.zeros(0, 6, dtype=torch.long))


def test_long_sentences_are_truncated_with_a_count(shared_data, tmp_path):
    from lmlab.data.vocab import build_vocab

    lines = read_sentences(shared_data / "multi30k" / "tok" / "val.lc.norm.tok.en", max_lines=300)
    vocab = build_vocab(lines)
    seqs, cut = encode_sentences(lines, vocab, 12)
    assert seqs.shape == (300, 12)
    assert cut == sum(len(x) + 1 > 12 for x in lines) > 0
    one_word = DataConfig(path=str(shared_data / "multi30k" / "tok" / "val.lc.norm.tok.en"), max_lines=1, max_vocab=5)
    with pytest.raises(ConfigError, match="max_vocab"):
        GANRecipe(GANRunConfig(source="data", data=one_word)).prepare(None, tmp_path)


def test_nan_rewards_stop_training_with_the_step_and_keep_the_checkpoint(tmp_path):
    cfg = tg.GANConfig(pretrain_epochs=1, d_pretrain_steps=0, adversarial_rounds=3, d_steps_per_round=1, rollout_num=2)
    model = tiny_gan(**vars(cfg))
    data = torch.randint(0, 20, (64, 6))
    loader = EpochLoader(data, 16, collate_fn=torch.stack, drop_last=True)
    model.rewards = lambda seqs, *a, **k: torch.full(seqs.shape, float("nan"))
    tcfg = TrainConfig(lr=0.01, batch_size=16, max_steps=tg.total_steps(4, cfg), progress=False, tensorboard=False)
    with pytest.raises(TrainingError, match="at step 5") as err:
        Trainer(tcfg, model, loader, run_dir=tmp_path).fit()
    assert "last good checkpoint" in str(err.value)
    assert json.loads((tmp_path / "checkpoints" / "last.json").read_text())["step"] == 4


# --- presets, CLI, pipeline ----------------------------------------------------------------------------------
def test_every_preset_loads_and_builds():
    names = list_presets("gan")
    assert {"seqgan-oracle", "seqgan-multi30k", "tour"} <= set(names)
    for name in names:
        cfg = GANRecipe.resolve(name)
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


# --- layering, the pipeline's streaming loop, exact resume ---------------------------------------------------
def test_the_model_module_imports_only_torch_stdlib_errors_and_models():
    import ast
    from pathlib import Path

    tree = ast.parse(Path(tg.__file__).read_text(encoding="utf-8"))
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    lmlab = {n for n in names if n.startswith("lmlab")}
    assert all(n == "lmlab.errors" or n.startswith("lmlab.models.") for n in lmlab), lmlab
    assert {n.split(".")[0] for n in names} <= {"__future__", "collections", "dataclasses", "typing", "torch", "lmlab"}


def _old_stream(model, vocab, ids, sc, max_new_tokens):
    """The SeqGAN pipeline's own streaming loop before it moved onto lmlab.generation.stream_generate (text and
    finish reason; kept here to prove the outputs did not change)."""
    from lmlab.generation import find_stop, sample_next

    g = model.generator
    gen = sc.make_generator("cpu")
    state = logits = None
    for i in [g.config.start_id, *ids]:
        logits, state = g.step(torch.tensor([i]), state)
    text, produced, finish = "", 0, "length"
    history = torch.tensor([ids or [g.config.start_id]])
    while produced < max_new_tokens:
        tok = sample_next(logits, sc, gen, history)
        produced += 1
        t = int(tok.item())
        if t in (g.config.eos_id, g.config.pad_id) and t >= 0:
            return text, "eos", produced - 1
        piece = vocab.itos[t] if not text else " " + vocab.itos[t]
        cut = find_stop(text + piece, sc.stop)
        if cut >= 0:
            return (text + piece)[:cut], "stop", produced
        text += piece
        history = torch.cat([history, tok.view(1, 1)], dim=1)
        logits, state = g.step(tok.view(1), state)
    return text, finish, produced


def test_stream_gives_the_same_outputs_as_the_old_loop_and_ends_at_eos_or_pad():
    from lmlab.data.vocab import Vocab
    from lmlab.generation import SamplingConfig
    from lmlab.pipelines.seqgan import SeqGANGenerator

    vocab = Vocab(["a", "b", "c", "d", "e", "f", "g", "h"])  # <pad> 0, <unk> 1, <bos> 2, <eos> 3, words 4..11
    torch.manual_seed(0)
    model = tg.SeqGAN(tg.SeqGANConfig(**{**TINY, "vocab_size": len(vocab), "start_id": 2, "eos_id": 3, "pad_id": 0}))
    with torch.no_grad():  # <pad> and <eos> likely enough that some rows end on each of them
        model.generator.head.bias[[0, 3]] = 0.3
    model.eval()
    pipe = SeqGANGenerator(model, sentence_codec(vocab, len(vocab), 3, 0))
    endings = set()
    settings = [{}, {"temperature": 0.7, "top_k": 5}, {"top_p": 0.8, "repetition_penalty": 1.3}, {"stop": ["c d"]},
                {"stop": ["b"], "temperature": 1.5}]
    for seed, n in zip(range(6), (2, 4, 2, 4, 2, 4), strict=True):
        for prompt in ("", "a b", "h"):
            for kw in settings:
                got = pipe.generate(prompt, max_new_tokens=n, seed=seed, **kw)
                sc = SamplingConfig(max_new_tokens=n, seed=seed, **kw)
                text, finish, tokens = _old_stream(model, vocab, vocab.encode(prompt.split()), sc, n)
                assert (got["text"], got["finish_reason"]) == (text, finish), (seed, prompt, kw)
                assert got["completion_tokens"] == tokens and got["prompt_tokens"] == len(prompt.split())
                endings.add(finish)
    assert endings == {"eos", "length", "stop"}
    # a row that draws <pad> ends like one that draws <eos>
    with torch.no_grad():
        model.generator.head.bias.fill_(-30.0)
        model.generator.head.bias[0] = 30.0
    assert pipe.generate("a", max_new_tokens=5, seed=0) == {
        "text": "", "finish_reason": "eos", "prompt_tokens": 1, "completion_tokens": 0}


def test_stream_on_an_oracle_run_continues_token_ids():
    from lmlab.pipelines.seqgan import SeqGANGenerator

    model = tiny_gan().eval()
    pipe = SeqGANGenerator(model, sentence_codec(None, 20))
    out = pipe.generate("3 4", max_new_tokens=4, seed=1)
    assert out["finish_reason"] == "length" and len(out["text"].split()) == 4
    assert all(0 <= int(w) < 20 for w in out["text"].split())
    with pytest.raises(DataError, match="token ids"):
        pipe.generate("a man")


KILL_OVERRIDES = [
    "oracle.vocab_size=60", "oracle.seq_len=8", "oracle.num_samples=256", "oracle.eval_samples=128",
    "model.embed_dim=8", "model.hidden_dim=8", "model.d_filter_sizes=[2,3]", "model.d_num_filters=[4,4]",
    "gan.pretrain_epochs=2", "gan.d_pretrain_steps=4", "gan.adversarial_rounds=3", "gan.d_steps_per_round=2",
    "gan.rollout_num=2", "gan.eval_every_epochs=1", "gan.eval_every_rounds=1", "train.batch_size=32",
    "train.save_every=2", "train.seed=3", "train.device=cpu", "train.log_every=1", *FAST,
]
# 8 batches per epoch: MLE steps 0-15, D pre-training 16-19, adversarial rounds (1 PG + 2 D steps) 20-28
_KILL_SCRIPT = """
import sys, time
from lmlab.models import textgan
step = textgan.SeqGAN.phase_step
def slow(self, *a, **k):
    time.sleep(0.08)  # time for the test to kill it between checkpoints; the numbers do not depend on it
    return step(self, *a, **k)
textgan.SeqGAN.phase_step = slow
from lmlab.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sigkill_at_three_points_across_the_phases_then_resume_is_bit_exact(tmp_path):
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    from lmlab.checkpoint import load_tensors

    src = str(Path(tg.__file__).resolve().parents[2])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def spawn(out, resume=False):
        # a resumed run takes its saved config (the CLI refuses anything but train.* overrides then)
        argv = ["gan", "train", "--out", str(out)] + (["--resume"] if resume else ["--oracle", "--preset", "tour", *KILL_OVERRIDES])
        return subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, *argv],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def last_step(out):
        pointer = out / "checkpoints" / "last.json"
        try:
            return json.loads(pointer.read_text())["step"]
        except (OSError, ValueError):
            return -1

    reference = spawn(tmp_path / "straight")
    run = tmp_path / "killed"
    proc = spawn(run)
    for stop_at in (6, 18, 24):  # MLE, D pre-training, adversarial
        deadline = time.monotonic() + 60
        while last_step(run) < stop_at and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before step {stop_at}: {proc.stderr.read()[-2000:]}"
        proc.kill()
        proc.communicate()
        assert stop_at <= last_step(run) < 29
        proc = spawn(run, resume=True)
    for p in (proc, reference):
        err = p.communicate(timeout=180)[1]
        assert p.returncode == 0, err[-2000:]
    for name in ("model.safetensors", f"checkpoints/{json.loads((run / 'checkpoints/last.json').read_text())['dir']}/model.safetensors"):
        a, b = load_tensors(run / name), load_tensors(tmp_path / "straight" / name)
        assert a.keys() == b.keys() and any(k.startswith("rollout_generator.") for k in a)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    for out in (run, tmp_path / "straight"):
        records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        keys = [(r.get("split"), r.get("phase"), r["step"]) for r in records]
        assert len(keys) == len(set(keys)), out
        assert max(r["step"] for r in records) == 29
    # (a kill between a checkpoint and the metrics line of that same step loses that one line: the trainer
    # writes the checkpoint first)
    assert {r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())} >= {0, 16, 29}
