"""The sequence-to-sequence recipe (being moved onto :class:`lmlab.recipes.base.Recipe`)."""

from __future__ import annotations

from pathlib import Path

from lmlab.recipes.base import Recipe
from lmlab.translation import Seq2SeqRunConfig


class Seq2SeqRecipe(Recipe):
    family = "seq2seq"
    model_type = "seq2seq"
    run_config = Seq2SeqRunConfig
    default_preset = "gru-bahdanau"

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu"):
        from lmlab.translation import Translator

        return Translator.from_run_dir(run_dir, device)
