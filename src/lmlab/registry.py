"""An explicit map from ``model_type`` to where its classes live. No import magic: one line per family.

Each entry names, as ``"module:attribute"`` strings (imported on use, so ``lmlab --help`` stays fast):
the model class, its config dataclass, and the pipeline class that ``lmlab.load`` returns.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from lmlab.errors import CheckpointError


@dataclass(frozen=True)
class Entry:
    model: str
    config: str
    pipeline: str


REGISTRY: dict[str, Entry] = {
    "gpt": Entry(
        model="lmlab.models.gpt:GPT",
        config="lmlab.models.gpt:GPTRunConfig",
        pipeline="lmlab.models.gpt:GPTGenerator",
    ),
    "seq2seq": Entry(
        model="lmlab.models.seq2seq:Seq2Seq",
        config="lmlab.translation:Seq2SeqRunConfig",
        pipeline="lmlab.translation:Translator",
    ),
    "classifier": Entry(
        model="lmlab.models.classifier:TextClassifier",
        config="lmlab.models.classifier:ClassifierConfig",
        pipeline="lmlab.pipelines:Classifier",
    ),
    "word2vec": Entry(
        model="lmlab.models.word2vec:Word2Vec",
        config="lmlab.models.word2vec:Word2VecConfig",
        pipeline="lmlab.vectors:KeyedVectors",
    ),
    "glove": Entry(
        model="lmlab.models.glove:GloVe",
        config="lmlab.models.glove:GloVeConfig",
        pipeline="lmlab.vectors:KeyedVectors",
    ),
    "word_vectors": Entry(
        model="lmlab.vectors:KeyedVectors",
        config="lmlab.vectors:VectorsConfig",
        pipeline="lmlab.vectors:KeyedVectors",
    ),
    "rnn_lm": Entry(
        model="lmlab.models.rnn_lm:RNNLM",
        config="lmlab.models.rnn_lm:LMRunConfig",
        pipeline="lmlab.pipelines:Generator",
    ),
    "seqgan": Entry(
        model="lmlab.models.textgan:SeqGAN",
        config="lmlab.models.textgan:GANRunConfig",
        pipeline="lmlab.models.textgan:SeqGANGenerator",
    ),
}


def resolve(spec: str):
    """Import ``"module:attr"`` and return the attribute."""
    module, attr = spec.split(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def entry(model_type: str) -> Entry:
    if model_type not in REGISTRY:
        raise CheckpointError(
            f"unknown model_type {model_type!r} in config.json (known: {', '.join(sorted(REGISTRY))})"
        )
    return REGISTRY[model_type]
