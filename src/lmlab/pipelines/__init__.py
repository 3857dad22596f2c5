"""Text in, text out: the pipelines that the CLI and the server both call.

``load(run_dir)`` reads ``config.json``'s ``model_type`` and returns the pipeline registered for it in
:mod:`lmlab.registry` (its recipe's ``load``). Each pipeline splits inference into preprocess -> forward -> postprocess with JSON-friendly
inputs and outputs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lmlab import checkpoint, registry


def load(run_dir: str | Path, device: str = "cpu"):
    """Return the ready pipeline for a trained run directory."""
    config = checkpoint.load_config(run_dir)
    return registry.recipe(config["model_type"]).load(run_dir, device=device)


class Classifier:
    """A trained text classifier: ``predict(texts)`` -> label, probability and every class's probability."""

    model_type = "classifier"

    def __init__(self, model, encoder, labels: list[str], config: dict, run_dir: Path, device: str = "cpu") -> None:
        self.model = model.to(device).eval()
        self.encoder = encoder
        self.labels = list(labels)
        self.config = config
        self.run_dir = Path(run_dir)
        self.device = device

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, device: str = "cpu") -> Classifier:
        from lmlab.config import config_from_dict
        from lmlab.data.classification import ClassifyDataConfig, TextEncoder
        from lmlab.models.classifier import ClassifierConfig, TextClassifier

        run_dir = Path(run_dir)
        saved = checkpoint.load_config(run_dir, cls.model_type)
        where = f"{run_dir / checkpoint.CONFIG_FILE}"
        model_cfg = config_from_dict(ClassifierConfig, saved.get("model"), where=f"{where}: model")
        data_cfg = config_from_dict(ClassifyDataConfig, saved.get("data"), where=f"{where}: data")
        encoder = TextEncoder.from_dict(checkpoint.read_json(run_dir / "tokenizer.json", "tokenizer.json"), data_cfg)
        model = TextClassifier(model_cfg)
        checkpoint.load_weights(run_dir / checkpoint.WEIGHTS_FILE, model)
        return cls(model, encoder, saved["labels"], saved, run_dir, device)

    def info(self) -> dict:
        return {
            "model_type": self.model_type,
            "arch": getattr(self.model.config, "arch", "finetuned"),
            "labels": self.labels,
            "vocab_size": getattr(self.model.config, "vocab_size", None) or self.config.get("body", {}).get(
                "model_config", {}).get("vocab_size"),
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }

    def probabilities(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """(N, C) class probabilities, in ``self.labels`` order."""
        from lmlab.data.classification import collate

        out = []
        encoded = self.encoder.encode(list(texts))
        with torch.no_grad():
            for start in range(0, len(encoded), batch_size):
                batch = collate([(ids, 0) for ids in encoded[start : start + batch_size]])
                out.append(self.model.probabilities(batch.ids.to(self.device), batch.lengths).cpu())
        return torch.cat(out) if out else torch.zeros(0, len(self.labels))

    def predict(self, texts: list[str]) -> list[dict]:
        """For each text: ``{"label", "probability", "probabilities": {label: p}}``."""
        probs = self.probabilities(texts)
        results = []
        for row in probs.tolist():
            best = max(range(len(row)), key=row.__getitem__)
            results.append(
                {
                    "label": self.labels[best],
                    "probability": row[best],
                    "probabilities": dict(zip(self.labels, row, strict=True)),
                }
            )
        return results

    def evaluate(self, examples) -> dict:
        """Accuracy, macro P/R/F1 and the confusion matrix on labelled examples."""
        from lmlab.data.classification import ClassifyDataset
        from lmlab.metrics import classification_report

        ds = ClassifyDataset.build(examples, self.encoder, self.labels)  # checks for unseen labels
        probs = self.probabilities([ex.text for ex in examples])
        return classification_report(ds.labels, probs.argmax(-1).tolist(), self.labels)


class Generator:
    """Text in, text out for language models: ``generate(prompt)`` returns the continuation and how it ended,
    ``stream(prompt)`` yields it piece by piece as tokens are sampled.

    Works with any ``model`` that has ``step(input_ids (B, T), state) -> (logits (B, V), state)`` (the
    :mod:`lmlab.generation` step function) and a ``codec`` with ``encode_prompt(text) -> list[int]``,
    ``start_ids() -> list[int]`` (what an empty prompt starts from), ``decode(ids) -> str`` (text of generated
    ids, continuing a prompt) and ``eos_id`` (a token that ends generation, or None). A model class registered
    with this pipeline provides ``load_for_generation(run_dir, device) -> (model, codec)``.

    Stop strings (``SamplingConfig.stop``) are checked on the decoded text and cut from the output; while
    streaming, text that could still turn out to be the start of a stop string is held back until it cannot.
    """

    def __init__(self, model, codec, model_type: str = "", run_dir: Path | None = None) -> None:
        self.model = model.eval()
        self.codec = codec
        self.model_type = model_type
        self.run_dir = Path(run_dir) if run_dir is not None else None

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, device: str = "cpu") -> Generator:
        config = checkpoint.load_config(run_dir, "rnn_lm")
        model, codec = registry.recipe(config["model_type"]).load_for_generation(run_dir, device)
        return cls(model, codec, config["model_type"], Path(run_dir))

    def info(self) -> dict:
        return {
            "model_type": self.model_type,
            "vocab_size": getattr(self.codec, "vocab_size", None),
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }

    @staticmethod
    def sampling_config(config=None, **overrides):
        """A :class:`lmlab.generation.SamplingConfig` from ``config`` and/or keyword overrides (validated)."""
        import dataclasses

        from lmlab.generation import SamplingConfig

        base = config if config is not None else SamplingConfig()
        return dataclasses.replace(base, **overrides) if overrides else base

    def stream(self, prompt: str, config=None, **overrides):
        """Yield ``{"text": piece}`` as soon as each piece is certain, then one final
        ``{"finish_reason": "length" | "stop" | "eos", "prompt_tokens": n, "completion_tokens": m}``.
        Closing the iterator early stops the generation."""
        from lmlab.generation import stream_generate

        cfg = self.sampling_config(config, **overrides)
        ids = self.codec.encode_prompt(prompt) if prompt else []
        ids = ids or self.codec.start_ids()
        model = self.model

        def step(input_ids, state):
            with torch.no_grad():
                return model.step(input_ids, state)

        device = next(self.model.parameters()).device
        yield from stream_generate(step, ids, cfg, self.codec.decode, eos_id=self.codec.eos_id, device=device)

    def generate(self, prompt: str, config=None, **overrides) -> dict:
        """``{"text", "finish_reason", "prompt_tokens", "completion_tokens"}``: the continuation of ``prompt``
        (without the prompt and without any stop string)."""
        from lmlab.generation import collect_stream

        return collect_stream(self.stream(prompt, config, **overrides))


#: the other families' pipelines live in their own modules, imported when first asked for
_LAZY = {
    "GPTGenerator": "lmlab.pipelines.gpt",
    "Translator": "lmlab.pipelines.translate",
    "SeqGANGenerator": "lmlab.pipelines.seqgan",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lmlab.pipelines' has no attribute {name!r}")


__all__ = ["load", "Classifier", "Generator", *_LAZY]
