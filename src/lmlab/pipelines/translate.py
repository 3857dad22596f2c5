"""The seq2seq pipeline: text in, text out for a trained run (``lmlab.load`` of a ``model_type: seq2seq`` run).

:class:`Translator` translates with batched beam search from :mod:`lmlab.generation`, scores with
sacreBLEU/chrF and returns attention weights; :func:`plot_attention` draws them as a heat map. The same
machinery serves any text-to-text pairs (dialogue turns, question/answer, headlines). The run directory is read
by :meth:`lmlab.recipes.seq2seq.Seq2SeqRecipe.load`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lmlab.data.codec import Codec
from lmlab.data.parallel import BOS_ID, EOS_ID, PAD_ID, collate_pairs, fit_source, pad_ids
from lmlab.data.tokenizers import han_share
from lmlab.errors import ConfigError, DataError
from lmlab.models.seq2seq import Seq2Seq


def check_beam(beam_size: Any, n_best: Any = 1) -> None:
    """beam_size >= 1 and 1 <= n_best <= beam_size, as ConfigErrors that say how to fix them."""
    if not isinstance(beam_size, int) or isinstance(beam_size, bool) or beam_size < 1:
        raise ConfigError(f"beam size must be an integer >= 1 (1 = greedy decoding), got {beam_size!r}")
    if not isinstance(n_best, int) or isinstance(n_best, bool) or not 1 <= n_best <= beam_size:
        raise ConfigError(f"n-best must be between 1 and the beam size {beam_size}, got {n_best!r}")


class Translator:
    """Text in, text out for a trained seq2seq run: ``translate``, ``attention``, ``evaluate``, ``info``.

    ``run`` is the run's config (a :class:`lmlab.recipes.seq2seq.Seq2SeqRunConfig`: its ``data``, ``model`` and
    ``decode`` sections give the length limits and the default decoding settings)."""

    model_type = "seq2seq"

    def __init__(
        self,
        model: Seq2Seq,
        src_codec: Codec,
        tgt_codec: Codec,
        run: Any,
        run_dir: Path | None = None,
        trained_on: str = "",
        device: str | torch.device = "cpu",
    ) -> None:
        self.model = model.to(device).eval()
        self.src_codec = src_codec
        self.tgt_codec = tgt_codec
        self.run = run
        self.run_dir = run_dir
        self.trained_on = trained_on
        self.device = torch.device(device)

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, device: str = "cpu") -> Translator:
        from lmlab import checkpoint, load  # the registry's recipe loads it (pipelines never import recipes)

        checkpoint.load_config(run_dir, "seq2seq")
        return load(run_dir, device)

    def info(self) -> dict:
        m = self.run.model
        return {
            "model_type": self.model_type,
            "arch": m.arch,
            "attention": m.attention if m.arch == "rnn" else "multi-head",
            "cell": m.cell if m.arch == "rnn" else None,
            "src_vocab_size": self.src_codec.vocab_size,
            "tgt_vocab_size": self.tgt_codec.vocab_size,
            "vocab_size": self.tgt_codec.vocab_size,
            "tokenizer": self.run.data.tokenizer,
            "num_parameters": self.model.num_parameters(),
            "trained_on": self.trained_on,
            "run_dir": str(self.run_dir) if self.run_dir else None,
        }

    # -- encoding / decoding ids -----------------------------------------------------------------------
    def encode_sources(self, texts: Sequence[str], on_long: str | None = None) -> list[list[int]]:
        on_long = on_long or self.run.data.on_long
        limit = min(self.run.data.max_src_len, self.run.model.max_len)
        return [fit_source(ids, limit, on_long, t) for ids, t in zip(self.src_codec.encode_batch(list(texts)), texts, strict=True)]

    def _max_len(self, src_len: int, max_len: int | None) -> int:
        if max_len is not None:
            if max_len < 1:
                raise ConfigError(f"max_len must be >= 1, got {max_len}")
            return min(max_len, self.run.model.max_len)
        d = self.run.decode
        return max(1, min(int(d.max_len_a * src_len + d.max_len_b), self.run.model.max_len))

    @torch.no_grad()
    def decode_ids(
        self,
        src_ids: Sequence[Sequence[int]],
        beam_size: int = 5,
        n_best: int = 1,
        max_len: int | None = None,
        length_penalty: float | None = None,
        greedy: bool = False,
    ) -> list[list[tuple[list[int], float]]]:
        """n-best ``(target ids, score)`` lists for encoded sources (one batch; every source non-empty).

        ``greedy`` uses :func:`lmlab.generation.generate` (arg-max sampling) instead of beam search; its score
        is the summed log-probability.
        """
        from lmlab.generation import SamplingConfig, beam_search, generate

        check_beam(beam_size, n_best)
        lp = self.run.decode.length_penalty if length_penalty is None else length_penalty
        src = pad_ids([list(s) for s in src_ids]).to(self.device)
        lengths = torch.tensor([len(s) for s in src_ids], dtype=torch.long, device=self.device)
        limit = self._max_len(int(lengths.max()), max_len)
        state = self.model.init_state(src, lengths)
        if greedy:
            cfg = SamplingConfig(max_new_tokens=limit, greedy=True)
            bos = torch.full((len(src_ids), 1), BOS_ID, dtype=torch.long, device=self.device)
            outs = generate(self.model.step, bos, cfg, state=state, eos_id=EOS_ID)
            scores = self.sequence_log_probs(src_ids, outs, ended=[len(o) < limit for o in outs])
            return [[(o, s)] for o, s in zip(outs, scores, strict=True)]
        hyps = beam_search(
            self.model.step,
            state,
            self.model.reorder_state,
            BOS_ID,
            EOS_ID,
            beam_size=beam_size,
            max_len=limit,
            length_penalty=lp,
            n_best=n_best,
            batch_size=len(src_ids),
            device=self.device,
        )
        return [[(h.tokens, float(h.score)) for h in row] for row in hyps]

    @torch.no_grad()
    def sequence_log_probs(
        self, src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]], ended: Sequence[bool] | None = None
    ) -> list[float]:
        """log P(y <eos> | x) of each target under the model (teacher forcing); where ``ended[i]`` is False
        (the output was cut at the length limit) the <eos> term is left out, as beam search does."""
        batch = collate_pairs([(list(s), list(t)) for s, t in zip(src_ids, tgt_ids, strict=True)]).to(self.device)
        logits = self.model(batch).float()  # (B, T, V)
        logp = torch.log_softmax(logits, -1).gather(-1, batch.tgt_out.unsqueeze(-1)).squeeze(-1)  # (B, T)
        logp = logp.masked_fill(batch.tgt_out == PAD_ID, 0.0)
        if ended is not None:
            for i, (done, t) in enumerate(zip(ended, tgt_ids, strict=True)):
                if not done:
                    logp[i, len(t)] = 0.0
        return logp.sum(1).tolist()

    # -- the pipeline interface ------------------------------------------------------------------------
    def translate(
        self,
        texts: Sequence[str],
        beam_size: int = 5,
        max_len: int | None = None,
        n_best: int = 1,
        length_penalty: float | None = None,
        on_long: str | None = None,
        batch_size: int | None = None,
    ) -> list[dict]:
        """``[{"translation", "score", "n_best": [{"translation", "score"}, ...]}]``, one per input text.

        Scores are log-probabilities divided by the GNMT length penalty. An empty input gives an empty
        translation with score 0.
        """
        if isinstance(texts, str):
            raise DataError("translate expects a list of texts, got one string; wrap it in a list")
        check_beam(beam_size, n_best)
        ids = self.encode_sources(texts, on_long)
        results: list[dict | None] = [None] * len(texts)
        order = sorted((i for i in range(len(texts)) if ids[i]), key=lambda i: len(ids[i]))
        bs = batch_size or self.run.decode.batch_size
        for start in range(0, len(order), bs):
            chunk = order[start : start + bs]
            nbest = self.decode_ids([ids[i] for i in chunk], beam_size, n_best, max_len, length_penalty)
            for i, hyps in zip(chunk, nbest, strict=True):
                items = [{"translation": self.tgt_codec.decode(t), "score": s} for t, s in hyps]
                results[i] = {"translation": items[0]["translation"], "score": items[0]["score"], "n_best": items}
        empty = {"translation": "", "score": 0.0, "n_best": [{"translation": "", "score": 0.0}]}
        return [r if r is not None else dict(empty) for r in results]

    @torch.no_grad()
    def attention(
        self, text: str, beam_size: int = 5, max_len: int | None = None
    ) -> tuple[list[str], list[str], list[list[float]]]:
        """Translate ``text`` and return ``(source tokens, target tokens + <eos>, weights)`` where
        ``weights[t][j]`` is the attention of target position t on source token j (rows sum to 1)."""
        (src_ids,) = self.encode_sources([text])
        if not src_ids:
            raise DataError("cannot show attention for an empty sentence")
        (hyps,) = self.decode_ids([src_ids], beam_size, 1, max_len)
        tgt_ids = hyps[0][0]
        src = torch.tensor([src_ids], device=self.device)
        lengths = torch.tensor([len(src_ids)], device=self.device)
        tgt_in = torch.tensor([[BOS_ID, *tgt_ids]], device=self.device)
        weights = self.model.attention_weights(src, lengths, tgt_in)[0]  # (T+1, S)
        tgt_tokens = [*self.tgt_codec.pieces(tgt_ids), "<eos>"]
        return self.src_codec.pieces(src_ids), tgt_tokens, weights.cpu().tolist()

    def evaluate(
        self,
        sources: Sequence[str],
        references: Sequence[str],
        beam_size: int = 5,
        length_penalty: float | None = None,
        batch_size: int | None = None,
    ) -> dict:
        """Translate ``sources`` and score them against ``references``: sacreBLEU (with its signature),
        lowercased BLEU, chrF, wall time and target tokens/s."""
        from lmlab.metrics import corpus_bleu, corpus_chrf

        if len(sources) != len(references):
            raise DataError(
                f"{len(sources)} source sentences but {len(references)} references; the reference file must "
                "have one line per source line"
            )
        started = time.perf_counter()
        outputs = self.translate(sources, beam_size=beam_size, length_penalty=length_penalty, batch_size=batch_size)
        seconds = time.perf_counter() - started
        hyps = [o["translation"] for o in outputs]
        # Chinese references are written without spaces: sacreBLEU's "zh" tokenizer (its standard for Chinese)
        bleu_tok = "zh" if han_share(references) > 0.3 else "13a"
        bleu = corpus_bleu(hyps, references, tokenize=bleu_tok)
        bleu_lc = corpus_bleu(hyps, references, lowercase=True, tokenize=bleu_tok)
        chrf = corpus_chrf(hyps, references)
        out_tokens = sum(len(t) for t in self.tgt_codec.encode_batch(hyps))
        return {
            "n": len(sources),
            "bleu": bleu["score"],
            "bleu_signature": bleu["signature"],
            "bleu_lc": bleu_lc["score"],
            "bleu_lc_signature": bleu_lc["signature"],
            "chrf": chrf["score"],
            "chrf_signature": chrf["signature"],
            "bp": bleu["bp"],
            "beam_size": beam_size,
            "seconds": seconds,
            "tokens_per_s": out_tokens / max(seconds, 1e-9),
            "hypotheses": hyps,
        }


def plot_attention(src_tokens: Sequence[str], tgt_tokens: Sequence[str], weights, out: str | Path, title: str = "") -> Path:
    """An attention heat map (rows: target tokens, columns: source tokens) written as PNG (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = torch.as_tensor(weights, dtype=torch.float32).numpy()
    fig, ax = plt.subplots(figsize=(0.55 * len(src_tokens) + 2.5, 0.45 * len(tgt_tokens) + 1.8))
    im = ax.imshow(w, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(src_tokens)), [t.replace("\u0120", "_") for t in src_tokens], rotation=60, ha="right")
    ax.set_yticks(range(len(tgt_tokens)), [t.replace("\u0120", "_") for t in tgt_tokens])
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04)
    from lmlab.plots import save_figure

    return save_figure(fig, out)


__all__ = ["Translator", "check_beam", "plot_attention"]
