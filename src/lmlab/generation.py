r"""Decoding shared by every generator in lmlab (RNN language models, seq2seq, GPT).

A model plugs in through one function, ``step_fn(input_ids, state) -> (logits, new_state)``: ``input_ids`` is
(B, T) (the whole prompt on the first call, then one new token per row), ``logits`` are the next-token scores
for the *last* position, (B, V), and ``state`` is whatever the model carries between calls (an RNN's hidden
state, a transformer's KV cache, an encoder's memory; ``None`` on the first call unless given).

* :class:`SamplingConfig` - every knob, validated up front.
* :func:`apply_repetition_penalty`, :func:`top_k_filter`, :func:`top_p_filter`, :func:`sample_next` - pure
  functions on a (B, V) logits tensor; :func:`draw_categorical` - one draw per row of many-row logits (SeqGAN's
  rollouts), by inverse-CDF sampling; it lives with SeqGAN in :mod:`lmlab.models.textgan` (models stay pure).
* :func:`iter_generate` / :func:`generate` - the incremental sampling loop; :func:`iter_generate` yields each
  token as it is produced (streaming), :func:`generate` collects them and calls ``on_token``.
* :func:`beam_search` - batched beam search with a GNMT length penalty, returning n-best lists.

Stop *strings* are a text-level concern: the caller decodes the tokens and passes a ``stop_checker``;
:func:`find_stop` and :func:`trim_at_stop` do the string side (the pipelines use them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lmlab.errors import ConfigError
from lmlab.models.textgan import draw_categorical  # noqa: F401 - SeqGAN's rollout sampler, documented here

StepFn = Callable[[Tensor, Any], tuple[Tensor, Any]]


@dataclass
class SamplingConfig:
    """How to pick each next token.

    ``temperature`` 0 or ``greedy=True`` takes the arg-max (no randomness). ``top_k`` 0 and ``top_p`` 1.0 switch
    those filters off. ``repetition_penalty`` > 1 discourages tokens already in the prompt or output (CTRL,
    Keskar et al. 2019: a positive logit is divided by it, a negative one multiplied). ``stop``: strings that end
    the output (not included in it). ``seed``: makes sampling reproducible.
    """

    max_new_tokens: int = 200
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    greedy: bool = False

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0:
            problems.append(f"max_new_tokens must be an integer >= 0, got {self.max_new_tokens!r}")
        if not _is_number(self.temperature) or self.temperature < 0 or not math.isfinite(self.temperature):
            problems.append(
                f"temperature must be a finite number >= 0 (0 means greedy), got {self.temperature!r}"
            )
        if not isinstance(self.top_k, int) or self.top_k < 0:
            problems.append(f"top_k must be an integer >= 0 (0 switches it off), got {self.top_k!r}")
        if not _is_number(self.top_p) or not 0.0 < self.top_p <= 1.0:
            problems.append(f"top_p must be in (0, 1] (1 switches it off), got {self.top_p!r}")
        if (
            not _is_number(self.repetition_penalty)
            or self.repetition_penalty <= 0
            or not math.isfinite(self.repetition_penalty)
        ):
            problems.append(
                f"repetition_penalty must be a finite number > 0 (1 switches it off), got {self.repetition_penalty!r}"
            )
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if not isinstance(self.stop, list | tuple) or not all(isinstance(s, str) and s for s in self.stop):
            problems.append(f"stop must be a list of non-empty strings, got {self.stop!r}")
        else:
            self.stop = list(self.stop)
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            problems.append(f"seed must be an integer or None, got {self.seed!r}")
        if problems:
            raise ConfigError("bad sampling settings: " + "; ".join(problems))

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature == 0

    def make_generator(self, device: torch.device | str = "cpu") -> torch.Generator | None:
        """A seeded ``torch.Generator`` on ``device``, or None when no seed is set."""
        if self.seed is None:
            return None
        return torch.Generator(device=device).manual_seed(self.seed)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- pure functions on logits (B, V) ----------------------------------------------------------------------


def apply_repetition_penalty(logits: Tensor, previous_ids: Tensor, penalty: float) -> Tensor:
    """Penalise every token that occurs in ``previous_ids`` (B, T): divide its logit by ``penalty`` if positive,
    multiply if negative. Returns a new tensor; ``penalty == 1`` returns ``logits`` unchanged."""
    if penalty == 1.0 or previous_ids.numel() == 0:
        return logits
    previous_ids = previous_ids.to(logits.device).long()
    seen = torch.gather(logits, 1, previous_ids)  # (B, T)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, previous_ids, seen)


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep exactly the ``k`` highest logits per row (ties broken by index), set the rest to -inf. k=0: no-op."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    _, keep = torch.topk(logits, k, dim=-1)  # (B, k)
    mask = torch.ones_like(logits, dtype=torch.bool).scatter(-1, keep, False)
    return logits.masked_fill(mask, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filtering (Holtzman et al. 2020): keep the smallest set of most probable tokens whose total
    probability is >= ``p`` (always at least one), set the rest to -inf. p=1: no-op."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs  # probability of the tokens ranked above each one
    drop_sorted = mass_before >= p
    drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(
    logits: Tensor,
    cfg: SamplingConfig,
    generator: torch.Generator | None = None,
    previous_ids: Tensor | None = None,
) -> Tensor:
    """Pick the next token for every row of ``logits`` (B, V) -> (B,) int64.

    Order: repetition penalty (over ``previous_ids``) -> greedy arg-max if ``cfg.is_greedy`` -> temperature ->
    top-k -> top-p -> a draw from the softmax with ``generator``.
    """
    logits = logits.float()
    # extreme (tiny) temperatures or penalties overflow float32; clamp so the softmax stays defined
    if previous_ids is not None:
        logits = torch.nan_to_num(apply_repetition_penalty(logits, previous_ids, cfg.repetition_penalty), nan=0.0, posinf=1e30, neginf=-1e30)
    if cfg.is_greedy:
        return logits.argmax(dim=-1)
    logits = torch.nan_to_num(logits / cfg.temperature, nan=0.0, posinf=1e30, neginf=-1e30)
    logits = top_k_filter(logits, cfg.top_k)
    logits = top_p_filter(logits, cfg.top_p)
    probs = torch.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)


# --- incremental decoding ---------------------------------------------------------------------------------


def _as_batch(prompt_ids: Tensor | Sequence[int]) -> Tensor:
    ids = prompt_ids if isinstance(prompt_ids, Tensor) else torch.tensor(list(prompt_ids), dtype=torch.long)
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)  # (1, T)
    if ids.dim() != 2 or ids.shape[1] == 0:
        raise ValueError(f"prompt_ids must be a non-empty (B, T) or (T,) sequence, got shape {tuple(ids.shape)}")
    return ids.long()


def _end_ids(eos_id: int | Sequence[int] | None) -> list[int]:
    if eos_id is None:
        return []
    return [int(i) for i in eos_id] if isinstance(eos_id, list | tuple | set | frozenset) else [int(eos_id)]


def iter_generate(
    step_fn: StepFn,
    prompt_ids: Tensor | Sequence[int],
    cfg: SamplingConfig,
    state: Any = None,
    eos_id: int | Sequence[int] | None = None,
    stop_checker: Callable[[int, list[int]], bool] | None = None,
) -> Iterator[tuple[int, int]]:
    """Sample up to ``cfg.max_new_tokens`` tokens after each prompt row, yielding ``(row, token_id)`` as soon
    as each is produced. A row ends at ``eos_id`` (not yielded; several ids: any of them, e.g. SeqGAN's
    ``<eos>`` and ``<pad>``) or when ``stop_checker(row, ids_so_far)`` returns True (the token that triggered it
    *is* yielded; trim text-level stop strings afterwards)."""
    ends = _end_ids(eos_id)
    ids = _as_batch(prompt_ids)
    batch_size = ids.shape[0]
    if cfg.max_new_tokens == 0:
        return
    logits, state = step_fn(ids, state)  # (B, V)
    generator = cfg.make_generator(logits.device)
    history = ids.to(logits.device)  # (B, T) prompt + output, for the repetition penalty
    outputs: list[list[int]] = [[] for _ in range(batch_size)]
    active = [True] * batch_size
    for step in range(cfg.max_new_tokens):
        next_ids = sample_next(logits, cfg, generator, history if cfg.repetition_penalty != 1.0 else None)
        next_list = next_ids.tolist()
        for row, token in enumerate(next_list):
            if not active[row]:
                continue
            if token in ends:
                active[row] = False
                continue
            outputs[row].append(token)
            yield row, token
            if stop_checker is not None and stop_checker(row, outputs[row]):
                active[row] = False
        if not any(active) or step == cfg.max_new_tokens - 1:
            return
        if ends:  # finished rows keep being fed an end id; their outputs are ignored
            done = torch.tensor([not a for a in active], device=next_ids.device)
            next_ids = next_ids.masked_fill(done, ends[0])
        if cfg.repetition_penalty != 1.0:
            history = torch.cat([history, next_ids.unsqueeze(1)], dim=1)  # (B, T+1)
        logits, state = step_fn(next_ids.unsqueeze(1), state)  # (B, V)


def generate(
    step_fn: StepFn,
    prompt_ids: Tensor | Sequence[int],
    cfg: SamplingConfig,
    state: Any = None,
    on_token: Callable[[int, int], None] | None = None,
    eos_id: int | Sequence[int] | None = None,
    stop_checker: Callable[[int, list[int]], bool] | None = None,
) -> list[list[int]]:
    """Run :func:`iter_generate` to the end; ``on_token(row, token_id)`` sees every token as it is produced.
    Returns the new token ids of each row (without the prompt and without ``eos_id``)."""
    batch_size = _as_batch(prompt_ids).shape[0]
    outputs: list[list[int]] = [[] for _ in range(batch_size)]
    for row, token in iter_generate(step_fn, prompt_ids, cfg, state, eos_id, stop_checker):
        outputs[row].append(token)
        if on_token is not None:
            on_token(row, token)
    return outputs


# --- stop strings (text level) -----------------------------------------------------------------------------


def find_stop(text: str, stop: Sequence[str]) -> int:
    """Index of the earliest occurrence of any stop string in ``text``, or -1."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return min(hits) if hits else -1


def trim_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` cut just before the first stop string (the stop string itself is removed)."""
    i = find_stop(text, stop)
    return text if i < 0 else text[:i]


class TextStream:
    """Generated token ids -> text pieces, in time linear in the output length.

    Each new token is decoded together with the token before it only (``decode(ids[k-1:])`` minus
    ``decode(ids[k-1:k])``, as Hugging Face's streamers do), so a codec whose text for a token depends on its
    neighbour (a word joined by a space, a line break after ``<eos>``) gives the same text as decoding the whole
    output at once. A token with no text of its own (``<pad>``, ``<bos>``) does not become that context: the
    token before it stays. Text is held back while it ends in an unfinished multi-byte character (U+FFFD from
    byte-level BPE) or could still be the start of a stop string; ``push`` returns what is certain.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str], stop: Sequence[str] = ()) -> None:
        self.decode = decode
        self.stop = [s for s in stop if s]
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.ids: list[int] = []
        self.context: list[int] = []  # the last tokens that gave text, decoded with each new token
        self.read = 0  # ids[:read] are turned into text
        self.pending = ""  # decoded text not yet emitted
        self.tail = ""  # the last ``hold`` characters emitted: a stop string may start there
        self.stopped = False

    def _new_text(self) -> tuple[str, list[int]] | None:
        """The text of ``ids[read:]`` (decoded after the context) and those ids; None while it ends in an
        unfinished multi-byte character."""
        unread = self.ids[self.read :]
        text = self.decode(self.context + unread)
        if text.endswith("\ufffd"):
            return None
        before = self.decode(self.context) if self.context else ""
        return (text[len(before) :] if text.startswith(before) else text), unread

    def push(self, token: int) -> str:
        """Add one generated token; return the text that is now certain ("" if none). After a stop string was
        found, ``stopped`` is True and the text up to it has been returned."""
        self.ids.append(token)
        decoded = self._new_text()
        if decoded is None:  # an unfinished multi-byte character: wait for its other bytes
            return ""
        new, unread = decoded
        if new:
            self.context = unread
        self.read = len(self.ids)
        self.pending += new
        return self._emit(final=False)

    def _emit(self, final: bool) -> str:
        window = self.tail + self.pending
        cut = find_stop(window, self.stop)
        if cut >= 0:
            self.stopped = True
            out = window[len(self.tail) : cut] if cut > len(self.tail) else ""
            self.pending = ""
            return out
        keep = 0 if final else min(self.hold, len(self.pending))
        out = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(self.pending) - keep :]
        if out:
            self.tail = (self.tail + out)[-self.hold :] if self.hold else ""
        return out

    def flush(self) -> str:
        """The held-back text once generation has ended, up to a stop string in it (nothing after one)."""
        if self.stopped:
            return ""
        if self.read < len(self.ids):  # the output ends in an unfinished character: its text as it is
            unread = self.ids[self.read :]
            text = self.decode(self.context + unread)
            before = self.decode(self.context) if self.context else ""
            self.pending += text[len(before) :] if text.startswith(before) else text
            self.read = len(self.ids)
        return self._emit(final=True)


def stream_generate(
    step_fn: StepFn,
    prompt_ids: Sequence[int],
    cfg: SamplingConfig,
    decode: Callable[[Sequence[int]], str],
    eos_id: int | Sequence[int] | None = None,
    state: Any = None,
    extra_final: dict | None = None,
    device: Any = None,
) -> Iterator[dict]:
    """THE streaming loop of every text generator (RNN LM, GPT, SeqGAN): sample after ``prompt_ids`` (one
    row) and yield ``{"text": piece}`` as soon as each piece is certain, then one final
    ``{"finish_reason": "length" | "stop" | "eos", "prompt_tokens": n, "completion_tokens": m, **extra_final}``.
    Stop strings are cut from the output; closing the iterator early stops the generation."""
    stream = TextStream(decode, cfg.stop)
    produced = 0
    finish = "length"
    prompt = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)  # (1, T)
    for _, token in iter_generate(step_fn, prompt, cfg, state=state, eos_id=eos_id):
        produced += 1
        piece = stream.push(token)
        if piece:
            yield {"text": piece}
        if stream.stopped:
            finish = "stop"
            break
    if finish == "length" and produced < cfg.max_new_tokens:
        finish = "eos"
    rest = stream.flush()
    if rest:
        yield {"text": rest}
    yield {"finish_reason": finish, "prompt_tokens": len(prompt_ids), "completion_tokens": produced,
           **(extra_final or {})}


def collect_stream(events: Iterable[dict]) -> dict:
    """``{"text", "finish_reason", ...}`` from a stream of events: what ``generate`` returns."""
    pieces: list[str] = []
    final: dict = {}
    for event in events:
        if "text" in event:
            pieces.append(event["text"])
        else:
            final = event
    return {"text": "".join(pieces), **final}


# --- beam search --------------------------------------------------------------------------------------------


@dataclass
class Hypothesis:
    """One finished beam: ``tokens`` (without BOS/EOS), ``log_prob`` (sum, including EOS if it was produced)
    and ``score`` = log_prob / length_penalty."""

    tokens: list[int]
    log_prob: float
    score: float


def length_penalty_gnmt(length: int, alpha: float) -> float:
    r"""GNMT length penalty (Wu et al. 2016): $lp(Y) = ((5 + |Y|) / 6)^\alpha$; $\alpha = 0$ gives 1."""
    return ((5.0 + length) / 6.0) ** alpha


def beam_search(
    step_fn: StepFn,
    init_state: Any,
    reorder_state: Callable[[Any, Tensor], Any],
    bos_id: int,
    eos_id: int,
    beam_size: int = 4,
    max_len: int = 100,
    length_penalty: float = 0.0,
    n_best: int = 1,
    batch_size: int = 1,
    device: torch.device | str | None = None,
) -> list[list[Hypothesis]]:
    r"""Batched beam search; returns, for each of ``batch_size`` inputs, the ``n_best`` hypotheses sorted by
    score (best first).

    * ``step_fn(input_ids (N, 1), state) -> (logits (N, V), state)`` with N = batch_size * beam_size after the
      first call.
    * ``reorder_state(state, index)`` returns the state with its batch rows picked by ``index`` (N,) -
      it expands ``init_state`` (batch_size rows) to N rows and reorders beams; for a tensor state with the batch
      in dim 1, :func:`lmlab.models.rnn.select_state` does it.
    * Scores are $\log P(Y) / lp(Y)$ with the GNMT penalty $lp(Y) = ((5 + |Y|)/6)^\alpha$, $\alpha$ =
      ``length_penalty`` (0 = raw log-probability), $|Y|$ counting generated tokens including EOS.
    * ``max_len`` bounds the generated tokens (including EOS); beams still open then are finished as they are.
    * A batch element stops early once it has ``beam_size`` finished hypotheses and no open beam can still beat
      the worst of them (an exact bound for $\alpha \ge 0$). With beam_size 1 and $\alpha = 0$ this is greedy
      decoding.
    """
    if beam_size < 1 or n_best < 1 or n_best > beam_size:
        raise ConfigError(f"need 1 <= n_best <= beam_size, got n_best={n_best}, beam_size={beam_size}")
    if max_len < 1:
        raise ConfigError(f"max_len must be >= 1, got {max_len}")
    if length_penalty < 0:
        raise ConfigError(f"length_penalty (GNMT alpha) must be >= 0, got {length_penalty}")
    B, K = batch_size, beam_size
    device = torch.device(device) if device is not None else torch.device("cpu")
    state = reorder_state(init_state, torch.arange(B, device=device).repeat_interleave(K))
    inputs = torch.full((B * K, 1), bos_id, dtype=torch.long, device=device)  # (N, 1)
    # only beam 0 is live at the start, so the first expansion does not pick the same token K times
    beam_scores = torch.full((B, K), float("-inf"), device=device)
    beam_scores[:, 0] = 0.0
    tokens = torch.empty((B * K, 0), dtype=torch.long, device=device)  # (N, t)
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    done = [False] * B

    for t in range(1, max_len + 1):
        logits, state = step_fn(inputs, state)  # (N, V)
        log_probs = F.log_softmax(logits.float(), dim=-1)
        vocab = log_probs.shape[-1]
        candidates = (beam_scores.view(-1, 1) + log_probs).view(B, K * vocab)  # (B, K*V)
        top_scores, top_ids = candidates.topk(min(2 * K, K * vocab), dim=-1)  # (B, 2K)
        top_scores, top_ids = top_scores.tolist(), top_ids.tolist()
        next_beam, next_token, next_score = [], [], []
        for b in range(B):
            chosen: list[tuple[int, int, float]] = []
            if not done[b]:
                for rank, (score, flat) in enumerate(zip(top_scores[b], top_ids[b], strict=True)):
                    beam, token = divmod(flat, vocab)
                    if score == float("-inf"):
                        break
                    if token == eos_id:
                        if rank < K:  # an EOS ranked among the K best ends a hypothesis
                            prefix = tokens[b * K + beam].tolist()
                            lp = length_penalty_gnmt(len(prefix) + 1, length_penalty)
                            finished[b].append(Hypothesis(prefix, score, score / lp))
                    else:
                        chosen.append((beam, token, score))
                    if len(chosen) == K:
                        break
            while len(chosen) < K:  # a finished (or starved) element: pad with dead beams
                chosen.append((0, eos_id, float("-inf")))
            for beam, token, score in chosen:
                next_beam.append(b * K + beam)
                next_token.append(token)
                next_score.append(score)
        index = torch.tensor(next_beam, device=device)
        new_tokens = torch.tensor(next_token, device=device)
        beam_scores = torch.tensor(next_score, device=device).view(B, K)
        tokens = torch.cat([tokens.index_select(0, index), new_tokens.unsqueeze(1)], dim=1)  # (N, t)
        for b in range(B):
            if done[b]:
                continue
            finished[b].sort(key=lambda h: h.score, reverse=True)
            del finished[b][K:]
            best_open = beam_scores[b].max().item()
            if len(finished[b]) >= K:
                bound = best_open / length_penalty_gnmt(max_len, length_penalty)
                if best_open == float("-inf") or bound <= finished[b][-1].score:
                    done[b] = True
        if all(done):
            break
        if t == max_len:
            break
        state = reorder_state(state, index)
        inputs = new_tokens.unsqueeze(1)  # (N, 1)

    for b in range(B):
        if not done[b]:  # open beams at max_len are finished as they are (no EOS)
            for k in range(K):
                score = beam_scores[b, k].item()
                if score > float("-inf"):
                    prefix = tokens[b * K + k].tolist()
                    lp = length_penalty_gnmt(len(prefix), length_penalty)
                    finished[b].append(Hypothesis(prefix, score, score / lp))
        finished[b].sort(key=lambda h: h.score, reverse=True)
    return [hyps[:n_best] for hyps in finished]
