"""The SeqGAN recipe: the synthetic oracle or sentences -> :class:`SeqGAN` trained in phases -> a run directory.

One :class:`lmlab.trainer.Trainer` run covers every phase (MLE pre-training, D pre-training, adversarial rounds):
the phase is a pure function of the global step (:func:`lmlab.models.textgan.phase_at`), and everything else the
schedule carries (both generators, the rollout network, the three optimizers, the RNG) is in each checkpoint, so
``--resume`` continues bit-exactly. :class:`SeqGANMonitor` evaluates at phase ends and every
``gan.eval_every_epochs`` / ``gan.eval_every_rounds`` (NLL-oracle, held-out NLL).

Inputs (keyword arguments of the recipe): ``prepared`` (a :class:`PreparedData` to reuse, e.g. by the benchmark)
and ``init_generator`` (generator weights to start from). The data source is the config (``source``,
``data.path``), which the CLI fills from ``--oracle`` / ``--data``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from lmlab import checkpoint
from lmlab.callbacks import Callback
from lmlab.config import TrainConfig, config_from_dict, config_to_dict
from lmlab.data.codec import Codec
from lmlab.data.sentence_rows import SentenceDataConfig, encode_sentences, read_sentences, sentence_codec
from lmlab.data.vocab import Vocab
from lmlab.errors import CheckpointError, ConfigError, DataError
from lmlab.models.oracle import OracleConfig, OracleLSTM, make_oracle_data
from lmlab.models.textgan import (
    GANConfig,
    Generator,
    SeqGAN,
    SeqGANConfig,
    generator_nll,
    phase_at,
    sample_many,
    total_steps,
)
from lmlab.recipes.base import Recipe, TrainResult

#: the ``data`` section's old name
DataConfig = SentenceDataConfig


@dataclass
class GANRunConfig:
    """Everything ``lmlab gan train`` needs; one section per dataclass."""

    source: Literal["oracle", "data"] = "oracle"
    model: SeqGANConfig = field(default_factory=SeqGANConfig)
    gan: GANConfig = field(default_factory=GANConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=0.01, batch_size=64, grad_clip=5.0))
    data: SentenceDataConfig = field(default_factory=SentenceDataConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)


SECTIONS = ("source", "model", "gan", "train", "data", "oracle")


def with_saved_defaults(saved: dict) -> dict:
    """A saved config.json with the values that runs written before a key existed trained with: runs without
    ``gan.rollout_impl`` computed their rewards with the "sequential" rollouts, runs without ``gan.step_impl`` their
    steps with the "reference" kernels (and keep them, resuming bit-exactly)."""
    gan = saved.get("gan")
    if isinstance(gan, dict):
        old = {"rollout_impl": "sequential", "step_impl": "reference"}
        missing = {k: v for k, v in old.items() if k not in gan}
        if missing:
            saved = {**saved, "gan": {**gan, **missing}}
    return saved


def saved_run_config(run_dir: str | Path, overrides: Sequence[str] = ()) -> GANRunConfig:
    """The config a run was trained with; on resume only ``train.*`` overrides (e.g. max_time_s) may change it."""
    from lmlab.config import merge, parse_overrides

    data = with_saved_defaults(checkpoint.load_config(run_dir, GANRecipe.model_type))
    sections = {k: data[k] for k in SECTIONS if k in data}
    extra = parse_overrides(list(overrides))
    if set(extra) - {"train"}:
        raise ConfigError(
            f"--resume continues {run_dir} with its saved config; only train.* overrides (e.g. train.max_time_s=0) "
            f"may change, not {', '.join(sorted(set(extra) - {'train'}))}"
        )
    return config_from_dict(GANRunConfig, merge(sections, extra), f"{run_dir}/config.json")


# ------------------------------------------------------------------------------------------------------ data
@dataclass
class PreparedData:
    train: Tensor  # (N, T) token ids
    heldout: Tensor | None
    vocab: Vocab | None
    truncated: int
    oracle: OracleLSTM | None = None
    references: list[list[str]] | None = None


def prepare_data(cfg: GANRunConfig, log: Callable[[str], None] = print) -> PreparedData:
    """Build the training tensor (and vocab / oracle) and fill in model.vocab_size, max_len and the special ids."""
    if cfg.source == "oracle":
        oracle, train = make_oracle_data(cfg.oracle)
        heldout = oracle.sample(
            min(cfg.oracle.num_samples, 2000), generator=torch.Generator().manual_seed(cfg.oracle.seed + 2)
        )
        m = cfg.model
        if m.vocab_size not in (0, cfg.oracle.vocab_size):
            raise ConfigError(
                f"model.vocab_size={m.vocab_size} differs from oracle.vocab_size={cfg.oracle.vocab_size}; set it to 0"
            )
        m.vocab_size = cfg.oracle.vocab_size
        m.max_len = cfg.oracle.seq_len
        m.start_id, m.eos_id, m.pad_id = cfg.oracle.start_id, -1, -1
        return PreparedData(train, heldout, None, 0, oracle=oracle)
    from lmlab.data.vocab import build_vocab

    d = cfg.data
    if not d.path:
        raise ConfigError("source is 'data' but data.path is empty; pass --data PATH (one sentence per line)")
    seg = d.resolve_segmenter(log)
    lines = read_sentences(d.path, d.tokenizer, d.lowercase, d.max_lines, seg, d.user_dict, d.encoding)
    if d.max_vocab < 6:
        raise ConfigError(f"data.max_vocab must be >= 6 (4 specials + at least 2 words), got {d.max_vocab}")
    vocab = build_vocab(lines, min_freq=d.min_freq, max_size=d.max_vocab)
    if len(vocab) - len(vocab.specials) < 2:
        raise DataError(
            f"{d.path}: the vocabulary has {len(vocab) - len(vocab.specials)} word(s) besides the specials; a "
            "generator needs at least 2 tokens to choose from (use more text or a lower data.min_freq)"
        )
    m = cfg.model
    m.vocab_size = len(vocab)
    m.start_id, m.eos_id, m.pad_id = vocab.bos_id, vocab.eos_id, vocab.pad_id
    train, truncated = encode_sentences(lines, vocab, m.max_len, d.path)
    if truncated:
        log(
            f"warning: {truncated} of {len(lines)} training sentences are longer than model.max_len={m.max_len} "
            "tokens (with <eos>) and were truncated"
        )
    heldout = references = None
    if d.test_path:
        references = read_sentences(d.test_path, d.tokenizer, d.lowercase, 0, seg, d.user_dict, d.encoding)
        heldout, cut = encode_sentences(references, vocab, m.max_len, d.test_path)
        if cut:
            log(f"warning: {cut} of {len(references)} held-out sentences were truncated to {m.max_len} tokens")
    return PreparedData(train, heldout, vocab, truncated, references=references)


# ------------------------------------------------------------------------------------------------ evaluation
class OracleEvaluator:
    """NLL-oracle of ``eval_samples`` generator samples (fixed sampling seed), and the generator's NLL on the
    oracle's held-out samples (NLL-test)."""

    def __init__(self, oracle: OracleLSTM, eval_samples: int, heldout: Tensor | None = None, seed: int = 12345):
        self.oracle = oracle
        self.eval_samples = eval_samples
        self.heldout = heldout
        self.seed = seed

    def __call__(self, model: SeqGAN) -> dict[str, float]:
        device = model.generator.head.weight.device
        self.oracle.to(device)
        samples = sample_many(model.generator, self.eval_samples, 1.0, self.seed)
        out = {"nll_oracle": self.oracle.nll(samples)}
        if self.heldout is not None:
            out["nll_test"] = generator_nll(model.generator, self.heldout)
        return out


class HeldOutEvaluator:
    """The generator's per-token NLL on held-out real sentences."""

    def __init__(self, heldout: Tensor):
        self.heldout = heldout

    def __call__(self, model: SeqGAN) -> dict[str, float]:
        return {"nll_test": generator_nll(model.generator, self.heldout)}


class SeqGANMonitor(Callback):
    """Evaluates at phase ends and every ``eval_every_epochs`` / ``eval_every_rounds``; logs to metrics.jsonl."""

    def __init__(self, evaluate: Callable[[SeqGAN], dict], log: Callable[[str], None] | None = None) -> None:
        self.evaluate = evaluate
        self.log = log
        self.history: list[dict] = []

    @staticmethod
    def _steps_per_epoch(trainer: Any) -> int:
        return trainer.model.steps_per_epoch or len(trainer.train_data)

    def _due(self, trainer: Any) -> str | None:
        spe = self._steps_per_epoch(trainer)
        gan = trainer.model.gan
        step = trainer.state.step  # steps done
        done, _ = phase_at(step - 1, spe, gan)
        nxt, idx = phase_at(step, spe, gan)
        if nxt == "done" and done != "done":
            return "pretrain_end" if done == "mle" else "end"
        if done == "mle":
            if nxt != "mle":
                return "pretrain_end"
            epochs = step // spe if spe else 0
            if gan.eval_every_epochs and step % spe == 0 and epochs % gan.eval_every_epochs == 0:
                return "pretrain"
            return None
        if done in ("pg", "d"):
            rnd = phase_at(step - 1, spe, gan)[1]
            if idx != rnd and gan.eval_every_rounds and (rnd + 1) % gan.eval_every_rounds == 0:
                return "adversarial"
        return None

    def _record(self, trainer: Any, tag: str) -> None:
        model: SeqGAN = trainer.model
        spe = self._steps_per_epoch(trainer)
        metrics = self.evaluate(model)
        gan = model.gan
        mle_steps = gan.pretrain_epochs * spe
        adv_start = mle_steps + gan.d_pretrain_steps
        per_round = gan.g_steps_per_round + gan.d_steps_per_round
        step = trainer.state.step
        rec = {
            "split": "val",
            "step": step,
            "epoch": trainer.state.epoch,
            "phase": tag,
            "pretrain_epochs_done": min(step, mle_steps) / spe if spe else 0.0,
            "rounds_done": max(0, step - adv_start) // per_round if per_round else 0,
            **{f"val_{k}": v for k, v in metrics.items()},
        }
        self.history.append(rec)
        if trainer.run_dir is not None:
            checkpoint.append_metrics(trainer.run_dir, rec)
        if self.log is not None:
            shown = " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            self.log(f"[{tag}] step {step} epochs {rec['pretrain_epochs_done']:.0f} rounds {rec['rounds_done']}: {shown}")

    def on_fit_start(self, trainer: Any) -> None:
        if trainer.state.step == 0 and not self.history:
            self._record(trainer, "init")

    def on_step_end(self, trainer: Any, logs: dict) -> None:
        tag = self._due(trainer)
        if tag is not None:
            self._record(trainer, tag)

    def on_fit_end(self, trainer: Any) -> None:
        # stopped early (train.max_time_s, Ctrl-C): record where it stopped
        if not self.history or self.history[-1]["step"] != trainer.state.step:
            self._record(trainer, "stopped")


def quality_diversity(
    generator: Generator,
    codec: Codec,
    references: Sequence[Sequence[str]],
    temperatures: Sequence[float],
    num_samples: int,
    seed: int = 0,
    max_n: int = 5,
) -> list[dict]:
    """BLEU-2..max_n against ``references`` (quality) and Self-BLEU-2..max_n (diversity) at each temperature."""
    from lmlab import metrics as M

    ref_index = M.NgramReference(references, max_n)
    rows = []
    for t in temperatures:
        samples = sample_many(generator, num_samples, t, seed)
        hyps = [codec.decode_tokens(s) for s in samples.tolist()]
        row: dict[str, Any] = {"temperature": t, "samples": num_samples}
        row.update({f"bleu{k}": v for k, v in M.bleu_against(hyps, ref_index, range(2, max_n + 1)).items()})
        row.update({f"self_bleu{k}": v for k, v in M.self_bleu(hyps, range(2, max_n + 1)).items()})
        row["mean_length"] = sum(map(len, hyps)) / len(hyps)
        rows.append(row)
    return rows


def format_eval(result: dict) -> str:
    rows = result["results"]
    if result["source"] == "oracle":
        lines = ["temperature  samples  nll_oracle"]
        lines += [f"{r['temperature']:>11.2f}  {r['samples']:>7d}  {r['nll_oracle']:>10.4f}" for r in rows]
        return "\n".join(lines)
    keys = [k for k in rows[0] if k.startswith("bleu")] + [k for k in rows[0] if k.startswith("self_bleu")]
    keys.append("mean_length")
    lines = [f"nll_test {result['nll_test']:.4f}", "temp  " + " ".join(f"{k:>10}" for k in keys)]
    lines += [f"{r['temperature']:>4.2f}  " + " ".join(f"{r[k]:>10.4f}" for k in keys) for r in rows]
    return "\n".join(lines)


def codec_for(run: GANRunConfig, vocab: Vocab | None) -> Codec:
    m = run.model
    d = run.data
    return sentence_codec(vocab, m.vocab_size, m.eos_id, m.pad_id, d.tokenizer, d.lowercase, d.segmenter, d.user_dict)


# ---------------------------------------------------------------------------------------------------- recipe
class GANRecipe(Recipe):
    family = "gan"
    model_type = "seqgan"
    run_config = GANRunConfig
    default_preset = "seqgan-multi30k"
    #: filled in from the data (or the oracle) and the schedule
    resume_ignore: ClassVar[dict[str, Any]] = {
        "model": {"vocab_size", "max_len", "start_id", "eos_id", "pad_id"},
        "train": {"max_steps"},
        "data": {"segmenter", "user_dict"},  # resolved from the data (auto)
    }

    @classmethod
    def from_preset(
        cls,
        preset: str | None = None,
        overrides: Sequence[str] = (),
        source: str | None = None,
        data: str | None = None,
        **inputs: Any,
    ) -> GANRecipe:
        """Preset + overrides; ``source`` ("oracle" / "data") and ``data`` (data.path) as ``--oracle`` / ``--data``
        set them."""
        run = cls.resolve(preset, overrides)
        if source is not None:
            run.source = source
        if data is not None:
            run.data.path = str(data)
        return cls(run, **inputs)

    @classmethod
    def from_run(cls, run_dir: str | Path, overrides: Sequence[str] = (), **inputs: Any) -> GANRecipe:
        """The recipe of an existing run, to ``train(run_dir, resume=True)``: its saved config + train.* overrides."""
        return cls(saved_run_config(run_dir, overrides), **inputs)

    def check_resume(self, saved: dict, run_dir: Path) -> None:
        super().check_resume(with_saved_defaults(saved), run_dir)

    def input_paths(self) -> list[str]:
        d = self.config.data
        return [p for p in (d.path, d.test_path) if p] if self.config.source == "data" else []

    def prepare(self, saved: dict | None, run_dir: Path) -> None:
        from lmlab.data.loader import EpochLoader

        run = self.config
        run.model.validate()
        run.gan.validate()
        self.prepared = self.inputs.get("prepared") or prepare_data(run, self.log)
        if saved is not None and self.prepared.vocab is not None:
            # the saved vocabulary is the one the checkpoint's ids mean (the data may have changed since)
            vocab = Vocab.load(run_dir / "vocab.json")
            if vocab.itos != self.prepared.vocab.itos:
                raise CheckpointError(
                    f"cannot resume {run_dir}: {run.data.path} gives a different vocabulary than the saved "
                    "vocab.json; resume with the data the run was started on"
                )
        run.model.validate()
        self.train_data = EpochLoader(
            self.prepared.train, run.train.batch_size, shuffle=True, seed=run.train.seed, collate_fn=torch.stack,
            drop_last=True,
        )
        self.steps_per_epoch = len(self.train_data)
        if self.steps_per_epoch == 0:
            raise DataError(
                f"{len(self.prepared.train)} training sequences make no full batch of "
                f"train.batch_size={run.train.batch_size}; lower the batch size or add data"
            )
        steps = total_steps(self.steps_per_epoch, run.gan)
        if steps == 0:
            raise ConfigError(
                "the schedule is empty: set gan.pretrain_epochs, gan.d_pretrain_steps or gan.adversarial_rounds"
            )
        run.train.max_steps = steps

    def build_model(self) -> SeqGAN:
        model = SeqGAN(self.config.model, self.config.gan)
        init = self.inputs.get("init_generator")
        if init is not None:
            model.generator.load_state_dict(init)
            model.rollout_generator.load_state_dict(init)
        model.steps_per_epoch = self.steps_per_epoch
        return model

    def config_extras(self) -> dict[str, Any]:
        return {"truncated_sequences": self.prepared.truncated}

    def save_artifacts(self, run_dir: Path) -> None:
        super().save_artifacts(run_dir)
        if self.prepared.vocab is not None:
            self.prepared.vocab.save(run_dir / "vocab.json")

    def evaluator(self) -> Callable[[SeqGAN], dict]:
        p, run = self.prepared, self.config
        if p.oracle is not None:
            return OracleEvaluator(p.oracle, run.oracle.eval_samples, p.heldout, seed=run.train.seed + 12345)
        return HeldOutEvaluator(p.heldout if p.heldout is not None else p.train[:2000])

    def fit(self, run_dir: Path, resume: bool, callbacks: Sequence[Any]) -> TrainResult:
        from lmlab.trainer import Trainer

        self.monitor = SeqGANMonitor(self.evaluator(), self.log)
        trainer = Trainer(self.config.train, self.model, self.train_data, val_data=None,
                          callbacks=[self.monitor, *callbacks], run_dir=run_dir)
        last = trainer.fit(resume=resume)
        notes = []
        if self.monitor.history:
            shown = " ".join(f"{k} {v:.4f}" for k, v in self.monitor.history[-1].items() if k.startswith("val_"))
            notes.append(f"done: {shown}")
        return TrainResult.from_trainer(trainer, last, notes)

    # ------------------------------------------------------------------------------------------ trained runs
    @classmethod
    def load_parts(cls, run_dir: str | Path, device: str = "cpu") -> tuple[SeqGAN, GANRunConfig, Codec]:
        """(model in eval mode, config, codec) of a trained run directory."""
        run_dir = Path(run_dir)
        run = saved_run_config(run_dir)
        model = SeqGAN(run.model, run.gan)
        checkpoint.load_weights(run_dir / checkpoint.WEIGHTS_FILE, model)
        model.to(device).eval()
        vocab = None
        if (run_dir / "vocab.json").is_file():
            vocab = Vocab.load(run_dir / "vocab.json")
        elif run.source == "data":
            raise CheckpointError(f"{run_dir}/vocab.json is missing; the vocabulary must travel with the model")
        return model, run, codec_for(run, vocab)

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu"):
        from lmlab.pipelines.seqgan import SeqGANGenerator

        model, run, codec = cls.load_parts(run_dir, device)
        trained_on = "synthetic oracle" if run.source == "oracle" else run.data.path
        return SeqGANGenerator(model, codec, trained_on, run_dir)

    @classmethod
    def evaluate(
        cls,
        run_dir: str | Path,
        data: str | Path | None = None,
        temperatures: Sequence[float] = (1.0,),
        num_samples: int = 0,
        seed: int = 0,
        max_n: int = 5,
    ) -> dict[str, Any]:
        """NLL-oracle (oracle runs) or BLEU-2..max_n / Self-BLEU-2..max_n / held-out NLL against the reference
        sentences ``data`` (default: the run's data.test_path)."""
        model, run, codec = cls.load_parts(run_dir)
        out: dict[str, Any] = {"run_dir": str(run_dir), "source": run.source, "results": []}
        if run.source == "oracle":
            oracle = OracleLSTM(run.oracle)
            n = num_samples or run.oracle.eval_samples
            for t in temperatures:
                samples = sample_many(model.generator, n, t, seed)
                out["results"].append({"temperature": t, "samples": n, "nll_oracle": oracle.nll(samples)})
            return out
        ref_path = data or run.data.test_path
        if not ref_path:
            raise ConfigError("no references: pass --references PATH (one sentence per line) or train with data.test_path")
        d = run.data
        refs = read_sentences(ref_path, d.tokenizer, d.lowercase, 0, "char" if d.segmenter == "auto" else d.segmenter,
                              d.user_dict, d.encoding)
        heldout, _ = encode_sentences(refs, codec.vocab, run.model.max_len, str(ref_path))
        out["nll_test"] = generator_nll(model.generator, heldout)
        out["results"] = quality_diversity(
            model.generator, codec, refs, temperatures, num_samples or len(refs), seed=seed, max_n=max_n
        )
        return out


__all__ = [
    "DataConfig", "GANRecipe", "GANRunConfig", "HeldOutEvaluator", "OracleEvaluator", "PreparedData",
    "SeqGANMonitor", "config_to_dict", "format_eval", "prepare_data", "quality_diversity", "saved_run_config",
    "with_saved_defaults",
]
