"""The word-vector recipes: word2vec and GloVe (being moved onto :class:`lmlab.recipes.base.Recipe`)."""

from __future__ import annotations

from pathlib import Path

from lmlab.recipes.base import Recipe
from lmlab.vectors import VectorsConfig


class VectorsRecipe(Recipe):
    """Word vectors imported from a file: nothing to train, a :class:`KeyedVectors` to load."""

    family = "embed"
    model_type = "word_vectors"
    run_config = VectorsConfig
    default_preset = ""

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu"):
        from lmlab.vectors import KeyedVectors

        return KeyedVectors.load(run_dir)


class Word2VecRecipe(VectorsRecipe):
    model_type = "word2vec"


class GloVeRecipe(VectorsRecipe):
    model_type = "glove"
