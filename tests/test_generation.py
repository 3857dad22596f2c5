"""Shared decoding: sampling filters, the incremental loop, stop handling and beam search."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from lmlab.errors import ConfigError
from lmlab.generation import (
    SamplingConfig,
    TextStream,
    apply_repetition_penalty,
    beam_search,
    collect_stream,
    draw_categorical,
    find_stop,
    generate,
    iter_generate,
    length_penalty_gnmt,
    sample_next,
    stream_generate,
    top_k_filter,
    top_p_filter,
    trim_at_stop,
)
from lmlab.models.rnn import select_state

VOCAB = 12
EOS = 0


class BigramModel:
    """A fixed random bigram table as a 'model': next-token logits depend on the last token only.

    Its state is a (1, B, 1) tensor holding the last token (batch in dim 1, like an RNN's hidden state), so
    ``select_state`` reorders it; ``calls`` counts step_fn calls."""

    def __init__(self, seed: int = 0, vocab: int = VOCAB, scale: float = 2.0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(vocab, vocab, generator=g) * scale  # (V, V)
        self.calls = 0

    def step(self, input_ids: torch.Tensor, state):
        self.calls += 1
        last = input_ids[:, -1]  # (B,)
        return self.table[last].clone(), last.view(1, -1, 1)

    def log_prob(self, prev: int, token: int) -> float:
        return torch.log_softmax(self.table[prev], dim=-1)[token].item()


def test_sampling_config_reports_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        SamplingConfig(max_new_tokens=-1, temperature=-0.5, top_k=-2, top_p=1.5, repetition_penalty=0)
    text = str(err.value)
    for key in ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty"):
        assert key in text
    with pytest.raises(ConfigError, match=r"top_p must be in \(0, 1\]"):
        SamplingConfig(top_p=0.0)
    with pytest.raises(ConfigError, match="stop"):
        SamplingConfig(stop=[""])
    with pytest.raises(ConfigError, match="seed"):
        SamplingConfig(seed=1.5)
    assert SamplingConfig(temperature=0).is_greedy
    assert SamplingConfig(stop="\n\n").stop == ["\n\n"]


def test_top_k_keeps_exactly_k_and_sampling_never_leaves_it() -> None:
    torch.manual_seed(0)
    logits = torch.randn(64, 50)
    filtered = top_k_filter(logits, 5)
    assert (torch.isfinite(filtered).sum(dim=1) == 5).all()
    allowed = torch.topk(logits, 5, dim=1).indices
    cfg = SamplingConfig(top_k=5, temperature=1.5)
    gen = torch.Generator().manual_seed(1)
    for _ in range(30):
        picked = sample_next(logits, cfg, gen)
        assert (allowed == picked.unsqueeze(1)).any(dim=1).all()
    assert torch.equal(top_k_filter(logits, 0), logits)


def test_inverse_cdf_draws_follow_the_softmax_and_skip_zero_probability_tokens() -> None:
    probs = torch.tensor([0.5, 0.0, 0.2, 0.25, 0.05, 0.0])
    logits = probs.log().expand(200_000, 6)  # -inf for the two impossible tokens
    gen = torch.Generator().manual_seed(0)
    draws = draw_categorical(logits, gen)
    assert draws.shape == (200_000,) and draws.dtype == torch.long
    freq = torch.bincount(draws, minlength=6).double() / draws.numel()
    assert freq[1] == 0 and freq[5] == 0
    # within 4 standard errors of each probability
    se = (probs.double() * (1 - probs.double()) / draws.numel()).sqrt()
    assert ((freq - probs.double()).abs() <= 4 * se + 1e-12).all(), freq
    # reproducible for a seed; rows are independent draws from their own distribution
    assert torch.equal(draw_categorical(logits[:50], torch.Generator().manual_seed(5)),
                       draw_categorical(logits[:50], torch.Generator().manual_seed(5)))
    onehot = torch.full((3, 4), -1e4)
    onehot[0, 2] = onehot[1, 0] = onehot[2, 3] = 10.0
    assert draw_categorical(onehot).tolist() == [2, 0, 3]


def test_top_p_keeps_the_smallest_nucleus() -> None:
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    logits = probs.log()
    kept = lambda p: set(torch.isfinite(top_p_filter(logits, p))[0].nonzero().flatten().tolist())  # noqa: E731
    assert kept(0.5) == {1}
    assert kept(0.7) == {1, 3}
    assert kept(0.8) == {1, 3}
    assert kept(0.81) == {1, 3, 2}
    assert kept(0.01) == {1}  # always at least the most probable token
    assert kept(1.0) == {0, 1, 2, 3}
    cfg = SamplingConfig(top_p=0.8, seed=3)
    gen = cfg.make_generator()
    draws = torch.cat([sample_next(logits.expand(200, 4), cfg, gen) for _ in range(10)])
    assert set(draws.tolist()) == {1, 3}  # both kept tokens occur, the others never


def test_repetition_penalty_by_hand() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    out = apply_repetition_penalty(logits, torch.tensor([[0, 1, 1]]), 2.0)
    torch.testing.assert_close(out, torch.tensor([[1.0, -2.0, 0.5, 3.0]]))
    assert torch.equal(logits, torch.tensor([[2.0, -1.0, 0.5, 3.0]]))  # input untouched
    # the penalty changes the greedy choice
    cfg = SamplingConfig(greedy=True, repetition_penalty=4.0)
    assert sample_next(torch.tensor([[3.0, 1.0]]), cfg, None, torch.tensor([[0]])).item() == 1


def test_greedy_picks_argmax_and_temperature_zero_is_greedy() -> None:
    model = BigramModel()
    out_greedy = generate(model.step, [3], SamplingConfig(greedy=True, max_new_tokens=8))
    out_t0 = generate(model.step, [3], SamplingConfig(temperature=0, max_new_tokens=8, seed=5))
    assert out_greedy == out_t0
    prev, expected = 3, []
    for _ in range(8):
        prev = int(model.table[prev].argmax())
        expected.append(prev)
    assert out_greedy == [expected]


def test_seeded_generation_is_reproducible() -> None:
    model = BigramModel(seed=1, scale=0.5)
    cfg = SamplingConfig(max_new_tokens=40, seed=123, top_k=8, top_p=0.95, temperature=1.2)
    a = generate(model.step, torch.tensor([[1, 2], [3, 4]]), cfg)
    b = generate(model.step, torch.tensor([[1, 2], [3, 4]]), cfg)
    c = generate(model.step, torch.tensor([[1, 2], [3, 4]]), SamplingConfig(max_new_tokens=40, seed=124))
    assert a == b
    assert a != c
    assert all(len(row) == 40 for row in a)


def test_streaming_eos_and_stop_checker() -> None:
    model = BigramModel(seed=2)
    seen: list[tuple[int, int]] = []
    cfg = SamplingConfig(max_new_tokens=30, seed=0)
    out = generate(model.step, torch.tensor([[5], [6], [7]]), cfg, on_token=lambda r, t: seen.append((r, t)))
    assert [t for r, t in seen if r == 1] == out[1]
    # eos ends a row and is not emitted
    model.table[:, EOS] = -100.0
    model.table[4, EOS] = 100.0  # after token 4 always eos
    model.table[4, 4] = -100.0
    rows = generate(model.step, torch.tensor([[4], [5]]), SamplingConfig(max_new_tokens=50, seed=1), eos_id=EOS)
    assert rows[0] == []
    assert EOS not in rows[1] and (len(rows[1]) == 50 or rows[1][-1] == 4)
    # stop_checker ends a row after the token that triggered it
    stopped = list(
        iter_generate(model.step, [5], SamplingConfig(max_new_tokens=50, seed=1), stop_checker=lambda r, ids: len(ids) >= 3)
    )
    assert len(stopped) == 3
    # max_new_tokens=0 never calls the model
    model.calls = 0
    assert generate(model.step, [5], SamplingConfig(max_new_tokens=0)) == [[]]
    assert model.calls == 0


def test_stop_strings_are_found_and_trimmed() -> None:
    assert find_stop("hello\n\nworld END", ["END", "\n\n"]) == 5
    assert trim_at_stop("hello\n\nworld END", ["END", "\n\n"]) == "hello"
    assert trim_at_stop("no stop here", ["END"]) == "no stop here"
    assert find_stop("abc", []) == -1


def _beam(model: BigramModel, batch_prev: list[int], **kwargs):
    # the "BOS" of each batch element is its own previous token, passed as state-independent input
    init = torch.tensor(batch_prev).view(1, -1, 1)

    def step(input_ids, state):
        # the first call gets BOS; map it to each element's start token through the state
        if input_ids[0, 0].item() == -1:
            input_ids = state.view(-1, 1)
        return model.step(input_ids, state)

    return beam_search(step, init, select_state, bos_id=-1, eos_id=EOS, batch_size=len(batch_prev), **kwargs)


def test_beam_one_equals_greedy() -> None:
    for seed in range(5):
        model = BigramModel(seed=seed)
        model.table[:, EOS] += 1.0  # make EOS likely enough to occur
        greedy = generate(model.step, [seed + 1], SamplingConfig(greedy=True, max_new_tokens=15), eos_id=EOS)[0]
        hyps = _beam(model, [seed + 1], beam_size=1, max_len=15)[0]
        assert len(hyps) == 1
        assert hyps[0].tokens == greedy


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_wide_beam_finds_the_exact_n_best(alpha: float) -> None:
    vocab, max_len, start = 4, 3, 2
    model = BigramModel(seed=7, vocab=vocab, scale=1.5)
    # enumerate every hypothesis: EOS after 0..2 tokens, or 3 tokens without EOS
    scored = []
    for length in range(max_len + 1):
        for seq in itertools.product(range(1, vocab), repeat=length):
            path = (start, *seq) + ((EOS,) if length < max_len else ())
            logp = sum(model.log_prob(a, b) for a, b in itertools.pairwise(path))
            n = len(path) - 1
            scored.append((logp / length_penalty_gnmt(n, alpha), list(seq)))
    scored.sort(key=lambda s: s[0], reverse=True)
    hyps = _beam(model, [start], beam_size=27, max_len=max_len, length_penalty=alpha, n_best=5)[0]
    assert [h.tokens for h in hyps] == [s[1] for s in scored[:5]]
    for h, (score, _) in zip(hyps, scored, strict=False):
        assert h.score == pytest.approx(score, abs=1e-5)
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)


def test_batched_beam_search_matches_one_at_a_time() -> None:
    model = BigramModel(seed=3)
    model.table[:, EOS] += 0.5
    batched = _beam(model, [1, 5, 9], beam_size=4, max_len=10, n_best=3, length_penalty=0.6)
    for i, prev in enumerate([1, 5, 9]):
        single = _beam(model, [prev], beam_size=4, max_len=10, n_best=3, length_penalty=0.6)[0]
        assert [h.tokens for h in batched[i]] == [h.tokens for h in single]
        assert all(math.isclose(a.score, b.score, abs_tol=1e-5) for a, b in zip(batched[i], single, strict=True))


def test_beam_search_rejects_bad_settings() -> None:
    model = BigramModel()
    with pytest.raises(ConfigError, match="n_best"):
        _beam(model, [1], beam_size=2, n_best=3)
    with pytest.raises(ConfigError, match="max_len"):
        _beam(model, [1], beam_size=2, max_len=0)


# --- TextStream: incremental decoding of a generation ----------------------------------------------------

STREAM_TEXT = "héllo wörld ünïcode 中文字符 emoji 🙂🚀 naïve café\nthe cat sat on the mat .\n"


@pytest.fixture(scope="module")
def codecs() -> dict:
    """The RNN LM's codecs (char; word level joining words with spaces, <eos> as a line break; byte-level BPE
    small enough that multi-byte characters are split across tokens), fitted on a text with such characters."""
    from lmlab.data.lm import LMCodec, LMDataConfig

    text = STREAM_TEXT * 20
    return {kind: LMCodec.fit(text, LMDataConfig(tokenizer=kind, vocab_size=300 if kind == "bpe" else 0))
            for kind in ("char", "word", "bpe")}


def _stream_pieces(decode, ids, stop=()) -> tuple[list[str], TextStream]:
    stream = TextStream(decode, stop)
    pieces = []
    for token in ids:
        pieces.append(stream.push(token))
        if stream.stopped:
            break
    pieces.append(stream.flush())
    return pieces, stream


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_text_stream_pieces_concatenate_to_the_full_decode(codecs, kind) -> None:
    import random

    codec = codecs[kind]
    ids = codec.encode_text(STREAM_TEXT * 3)[0].tolist()
    pieces, _ = _stream_pieces(codec.decode, ids)
    assert "".join(pieces) == codec.decode(ids)
    assert sum(1 for p in pieces if p) > len(ids) // 4  # streamed piece by piece, not all at the end
    if kind == "bpe":
        split = [i for i in ids if codec.decode([i]).count("\ufffd")]
        assert split, "the BPE must split some multi-byte character across tokens for this test to mean anything"
        assert not any("\ufffd" in p for p in pieces)  # a partial character is held back, never sent
    rng = random.Random(0)  # any ids a sampler may produce, specials (<pad> <bos> <eos>) included
    for _ in range(200):
        ids = [rng.randrange(codec.vocab_size) for _ in range(rng.randrange(1, 25))]
        pieces, _ = _stream_pieces(codec.decode, ids)
        assert "".join(pieces) == codec.decode(ids), ids


def test_text_stream_word_level_spaces_and_line_breaks(codecs) -> None:
    codec = codecs["word"]
    v = codec.vocab
    the, cat, eos, bos, pad = v.stoi["the"], v.stoi["cat"], v.eos_id, v.stoi["<bos>"], v.stoi["<pad>"]
    cases = {
        (the, cat, eos, the): " the cat\nthe",
        (eos, the, eos, eos, cat): "\nthe\n\ncat",
        (the, eos, bos, cat): " the\ncat",  # a token with no text between <eos> and a word: still no space
        (the, eos, *([pad] * 12), cat): " the\ncat",  # a long run of them (past TextStream.max_context)
    }
    for ids, want in cases.items():
        assert codec.decode(list(ids)) == want
        pieces, _ = _stream_pieces(codec.decode, ids)
        assert "".join(pieces) == want, ids


def test_text_stream_cuts_stop_strings_spanning_pieces_exactly(codecs) -> None:
    for kind in ("char", "bpe"):
        codec = codecs[kind]
        ids = codec.encode_text(STREAM_TEXT)[0].tolist()
        full = codec.decode(ids)
        for stop in ("o wö", "字符 em", "🙂🚀", "\nthe c", "mat ."):
            pieces, stream = _stream_pieces(codec.decode, ids, [stop])
            assert stream.stopped, (kind, stop)
            assert "".join(pieces) == full[: full.index(stop)], (kind, stop)
        # a prefix of a stop string is held back, then released when it turns out not to be one
        pieces, stream = _stream_pieces(codec.decode, ids, ["cat!", "ünïx"])
        assert not stream.stopped and "".join(pieces) == full
        # the earliest of several stop strings wins, wherever the others are
        pieces, _ = _stream_pieces(codec.decode, ids, ["the mat", "wörld"])
        assert "".join(pieces) == full[: full.index("wörld")]


class ScriptModel:
    """A 'model' whose greedy choice is the next token of ``script`` (state: how many tokens it has produced)."""

    def __init__(self, script: list[int], vocab: int) -> None:
        self.script, self.vocab = script, vocab

    def step(self, input_ids: torch.Tensor, state):
        produced = 0 if state is None else state
        logits = torch.zeros(input_ids.shape[0], self.vocab)  # (B, V)
        logits[:, self.script[min(produced, len(self.script) - 1)]] = 10.0
        return logits, produced + 1


def test_stream_generate_cuts_a_stop_string_exactly_and_reports_it(codecs) -> None:
    codec = codecs["bpe"]
    ids = codec.encode_text(STREAM_TEXT)[0].tolist()
    full = codec.decode(ids)
    model = ScriptModel(ids, codec.vocab_size)
    events = list(stream_generate(model.step, [0], SamplingConfig(max_new_tokens=len(ids), greedy=True,
                                                                   stop=["🙂🚀 n"]), codec.decode))
    result = collect_stream(events)
    assert result["text"] == full[: full.index("🙂🚀 n")]
    assert result["finish_reason"] == "stop" and result["completion_tokens"] < len(ids)
    whole = collect_stream(stream_generate(model.step, [0], SamplingConfig(max_new_tokens=len(ids), greedy=True),
                                           codec.decode))
    assert whole["text"] == full and whole["finish_reason"] == "length"


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_text_stream_decodes_each_token_a_constant_number_of_times(codecs, kind) -> None:
    """Issue 21 (6): the stream re-decoded the whole output for every new token (quadratic time)."""
    codec = codecs[kind]
    calls = {"n": 0, "ids": 0}

    def counting_decode(ids):
        calls["n"] += 1
        calls["ids"] += len(ids)
        return codec.decode(ids)

    ids = codec.encode_text(STREAM_TEXT * 60)[0].tolist()
    assert len(ids) > 1000
    pieces, _ = _stream_pieces(counting_decode, ids, ["no such stop string"])
    assert "".join(pieces) == codec.decode(ids)
    assert calls["n"] <= 2 * len(ids) + 2
    assert calls["ids"] <= 8 * len(ids)  # tokens decoded in all: linear in the output (quadratic was ~n^2/2)


def test_sampling_config_is_built_in_one_place() -> None:
    from lmlab.pipelines.base import GENERATION_OPTIONS, generation_options, sampling_config

    cfg = sampling_config({"max_new_tokens": 7, "temperature": None, "top_k": None, "stop": "\n\n", "seed": None})
    assert cfg == SamplingConfig(max_new_tokens=7, stop=["\n\n"])  # None = the default (a flag left out)
    assert sampling_config(temperature=1e-6).temperature == 0.0 and sampling_config(temperature=1e-6).is_greedy
    assert sampling_config(cfg, top_p=0.5) == SamplingConfig(max_new_tokens=7, stop=["\n\n"], top_p=0.5)
    assert cfg.top_p == 1.0  # the starting config is not changed
    with pytest.raises(ConfigError, match="unknown sampling option.*max_tokens"):
        sampling_config(max_tokens=3)
    with pytest.raises(ConfigError, match="top_p"):
        sampling_config(top_p=2.0)
    options = generation_options(sampling_config(greedy=True, temperature=0.7, stop=("a", "b"), seed=3))
    assert tuple(options) == GENERATION_OPTIONS and options["temperature"] == 0.0 and options["stop"] == ["a", "b"]
    assert sampling_config(options).is_greedy


def test_text_stream_a_stop_string_finished_by_an_unfinished_character_at_the_end_is_cut() -> None:
    """The last token ends in half a character: flush() still cuts a stop string that its text completes."""
    table = {0: b"x", 1: b"a", 2: b"b\xe4", 3: b"\xb8\xad"}  # 2 + 3 = "b中"

    def decode(ids):
        return b"".join(table[i] for i in ids).decode("utf-8", "replace")

    pieces, stream = _stream_pieces(decode, [0, 1, 2], ["ab"])
    assert "".join(pieces) == "x" and stream.stopped
    pieces, stream = _stream_pieces(decode, [0, 1, 2, 3, 0], ["b中x"])
    assert "".join(pieces) == "xa" and stream.stopped
    pieces, _ = _stream_pieces(decode, [0, 1, 2, 3, 0], ["zz"])
    assert pieces[2] == "" and "".join(pieces) == "xab中x"  # the half character is held back, then sent whole
