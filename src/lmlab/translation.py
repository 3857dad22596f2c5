"""Sequence-to-sequence runs end to end: the run config, ``train_seq2seq`` and the ``Translator`` pipeline.

``train_seq2seq`` reads pairs, fits the source/target codecs, builds :class:`lmlab.models.seq2seq.Seq2Seq` and
trains it with :class:`lmlab.trainer.Trainer` into a run directory::

    config.json  model.safetensors  src_codec.json  tgt_codec.json  metrics.jsonl  checkpoints/last/

``Translator.from_run_dir(run_dir)`` (what ``lmlab.load`` returns for ``model_type: seq2seq``) translates with
batched beam search from :mod:`lmlab.generation`, scores with sacreBLEU/chrF and draws attention heat maps.
The same machinery serves any text-to-text pairs (dialogue turns, question/answer, headlines).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmlab import checkpoint
from lmlab.config import TrainConfig, config_from_dict, config_to_dict
from lmlab.data.parallel import (
    Pair,
    ParallelDataConfig,
    ParallelDataset,
    TextCodec,
    build_codecs,
    fit_source,
    make_loader,
)
from lmlab.errors import CheckpointError, ConfigError, DataError
from lmlab.models.seq2seq import BOS_ID, EOS_ID, PAD_ID, Seq2Seq, Seq2SeqConfig, pad_ids

MODEL_TYPE = "seq2seq"
SRC_CODEC_FILE = "src_codec.json"
TGT_CODEC_FILE = "tgt_codec.json"


@dataclass
class DecodeConfig:
    """Default decoding settings saved with the run (each can be overridden per call)."""

    beam_size: int = 5
    #: GNMT length penalty alpha (0: raw log-probability; ~0.6 favours slightly longer outputs)
    length_penalty: float = 0.6
    #: the output may have at most max_len_a * source_tokens + max_len_b tokens (capped by model.max_len)
    max_len_a: float = 1.5
    max_len_b: int = 10
    batch_size: int = 64

    def validate(self) -> None:
        check_beam(self.beam_size, 1)
        if self.length_penalty < 0:
            raise ConfigError(f"decode.length_penalty must be >= 0, got {self.length_penalty}")
        if self.max_len_a < 0 or self.max_len_b < 1:
            raise ConfigError("decode.max_len_a must be >= 0 and decode.max_len_b >= 1")
        if self.batch_size < 1:
            raise ConfigError(f"decode.batch_size must be >= 1, got {self.batch_size}")


@dataclass
class Seq2SeqRunConfig:
    """A whole seq2seq run: ``data``, ``model``, ``train`` and ``decode`` sections (see lmlab/configs/seq2seq/)."""

    data: ParallelDataConfig = field(default_factory=ParallelDataConfig)
    model: Seq2SeqConfig = field(default_factory=Seq2SeqConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


SECTIONS = {"data": ParallelDataConfig, "model": Seq2SeqConfig, "train": TrainConfig, "decode": DecodeConfig}


def check_beam(beam_size: Any, n_best: Any = 1) -> None:
    """beam_size >= 1 and 1 <= n_best <= beam_size, as ConfigErrors that say how to fix them."""
    if not isinstance(beam_size, int) or isinstance(beam_size, bool) or beam_size < 1:
        raise ConfigError(f"beam size must be an integer >= 1 (1 = greedy decoding), got {beam_size!r}")
    if not isinstance(n_best, int) or isinstance(n_best, bool) or not 1 <= n_best <= beam_size:
        raise ConfigError(f"n-best must be between 1 and the beam size {beam_size}, got {n_best!r}")


def resolve_run_config(preset: str, overrides=()) -> Seq2SeqRunConfig:
    """Preset (a name in ``lmlab/configs/seq2seq`` or a YAML/JSON file) + ``key=value`` overrides -> a validated config."""
    from lmlab.config import resolve_run_config as resolve

    return resolve(Seq2SeqRunConfig, "seq2seq", preset, overrides)

def _compare_for_resume(old: dict, new: dict, run_dir) -> None:
    from lmlab.config import check_resume_compatible

    check_resume_compatible(old, new, run_dir, ignore={"decode": "*", "model": {"src_vocab_size", "tgt_vocab_size"}})

def train_seq2seq(
    run: Seq2SeqRunConfig,
    train_pairs: Sequence[Pair],
    out: str | Path,
    *,
    val_pairs: Sequence[Pair] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    callbacks: Sequence = (),
    log: Callable[[str], None] = print,
    data_description: str = "",
) -> dict:
    """Fit codecs on ``train_pairs``, build the model and train it into the run directory ``out``.

    Returns ``{"step", "best", "train_pairs", "dropped", "num_parameters", "train_time_s", "tokens_per_s"}``.
    """
    from lmlab import distributed
    from lmlab.trainer import Trainer

    distributed.init()
    run.data.validate()
    run.decode.validate()
    run_dir = Path(out)
    if resume:
        saved = checkpoint.load_config(run_dir, MODEL_TYPE)
    if distributed.is_main():
        checkpoint.prepare_run_dir(run_dir, overwrite=overwrite and not resume, resume=resume)
    distributed.barrier()
    if not train_pairs:
        raise DataError("no training pairs")
    if resume:
        src_codec = TextCodec.load(run_dir / SRC_CODEC_FILE)
        tgt_codec = TextCodec.load(run_dir / TGT_CODEC_FILE)
    else:
        src_codec, tgt_codec = build_codecs(train_pairs, run.data)
    train_set = ParallelDataset.encode(train_pairs, src_codec, tgt_codec, run.data.max_src_len, run.data.max_tgt_len)
    log(
        f"{len(train_set)} training pairs ({train_set.dropped} dropped by the length filter "
        f"max_src_len={run.data.max_src_len}, max_tgt_len={run.data.max_tgt_len}); "
        f"vocabularies: source {src_codec.vocab_size}, target {tgt_codec.vocab_size} ({run.data.tokenizer})"
    )
    train_loader = make_loader(train_set, run.train.batch_size, shuffle=True, seed=run.train.seed)
    val_loader = None
    if val_pairs:
        val_set = ParallelDataset.encode(val_pairs, src_codec, tgt_codec, run.model.max_len, run.model.max_len)
        if len(val_set):
            val_loader = make_loader(val_set, run.train.batch_size, shuffle=False)
    run.model.src_vocab_size = src_codec.vocab_size
    run.model.tgt_vocab_size = tgt_codec.vocab_size
    if run.model.max_len < max(run.data.max_src_len, run.data.max_tgt_len) + 1:
        run.model.max_len = max(run.data.max_src_len, run.data.max_tgt_len) + 1
    from lmlab.trainer import seed_everything

    seed_everything(run.train.seed)  # the initial weights depend on the seed only
    model = Seq2Seq(run.model)
    sections = config_to_dict(run)
    sections["trained_on"] = data_description
    if resume:
        _compare_for_resume(saved, sections, run_dir)
    elif distributed.is_main():
        checkpoint.save_config(run_dir, MODEL_TYPE, sections)
        src_codec.save(run_dir / SRC_CODEC_FILE)
        tgt_codec.save(run_dir / TGT_CODEC_FILE)
    log(f"model: {run.model.arch} ({model.num_parameters():,} parameters)")
    trainer = Trainer(run.train, model, train_loader, val_loader, callbacks=callbacks, run_dir=run_dir)
    logs = trainer.fit(resume=resume)
    best = trainer.state.best_metric
    speeds = []
    if (run_dir / checkpoint.METRICS_FILE).is_file():
        speeds = [r["tokens_per_s"] for r in checkpoint.read_metrics(run_dir) if "tokens_per_s" in r]
    return {
        "step": trainer.state.step,
        "epoch": trainer.state.epoch,
        "best": None if math.isnan(best) else best,
        "train_pairs": len(train_set),
        "dropped": train_set.dropped,
        "num_parameters": model.num_parameters(),
        "train_time_s": trainer.state.train_time_s,
        #: mean of the logged training throughputs (target tokens per second)
        "tokens_per_s": sum(speeds) / len(speeds) if speeds else logs.get("tokens_per_s"),
    }


# ------------------------------------------------------------------------------------------------ pipeline


class Translator:
    """Text in, text out for a trained seq2seq run: ``translate``, ``attention``, ``evaluate``, ``info``."""

    model_type = MODEL_TYPE

    def __init__(
        self,
        model: Seq2Seq,
        src_codec: TextCodec,
        tgt_codec: TextCodec,
        run: Seq2SeqRunConfig,
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
        run_dir = Path(run_dir)
        data = checkpoint.load_config(run_dir, MODEL_TYPE)
        try:
            run = config_from_dict(
                Seq2SeqRunConfig, {k: data[k] for k in SECTIONS if k in data}, where=f"{run_dir}/config.json"
            )
        except ConfigError as err:
            raise CheckpointError(str(err)) from None
        src_codec = TextCodec.load(run_dir / SRC_CODEC_FILE)
        tgt_codec = TextCodec.load(run_dir / TGT_CODEC_FILE)
        model = Seq2Seq(run.model)
        checkpoint.load_weights(run_dir / checkpoint.WEIGHTS_FILE, model)
        return cls(model, src_codec, tgt_codec, run, run_dir, data.get("trained_on", ""), device)

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
        from lmlab.models.seq2seq import collate_pairs

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
        bleu = corpus_bleu(hyps, references)
        bleu_lc = corpus_bleu(hyps, references, lowercase=True)
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
    fig.tight_layout()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = [
    "DecodeConfig",
    "Seq2SeqRunConfig",
    "Translator",
    "check_beam",
    "plot_attention",
    "resolve_run_config",
    "train_seq2seq",
]
