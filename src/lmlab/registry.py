"""An explicit map from ``model_type`` (config.json) to the recipe that trains and loads it. No import magic.

Each entry is a ``"module:Class"`` string, imported on use so that ``lmlab --help`` stays fast. A family's
recipe (:class:`lmlab.recipes.base.Recipe`) knows its model, its config and its pipeline; nothing else needs to.
"""

from __future__ import annotations

import importlib

from lmlab.errors import CheckpointError

REGISTRY: dict[str, str] = {
    "classifier": "lmlab.recipes.classify:ClassifyRecipe",
    "rnn_lm": "lmlab.recipes.lm:LMRecipe",
    "gpt": "lmlab.recipes.gpt:GPTRecipe",
    "mlm": "lmlab.recipes.mlm:MLMRecipe",
    "seq2seq": "lmlab.recipes.seq2seq:Seq2SeqRecipe",
    "seqgan": "lmlab.recipes.gan:GANRecipe",
    "word2vec": "lmlab.recipes.embed:Word2VecRecipe",
    "glove": "lmlab.recipes.embed:GloVeRecipe",
    "word_vectors": "lmlab.recipes.embed:VectorsRecipe",
}


def resolve(spec: str):
    """Import ``"module:attr"`` and return the attribute."""
    module, attr = spec.split(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def recipe(model_type: str):
    """The recipe class of ``model_type``; a CheckpointError naming the known types for anything else."""
    if model_type not in REGISTRY:
        raise CheckpointError(
            f"unknown model_type {model_type!r} in config.json (known: {', '.join(sorted(REGISTRY))})"
        )
    return resolve(REGISTRY[model_type])
