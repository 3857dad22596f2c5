"""The RNN language-model recipe (being moved onto :class:`lmlab.recipes.base.Recipe`)."""

from __future__ import annotations

from pathlib import Path

from lmlab.models.rnn_lm import LMRunConfig
from lmlab.recipes.base import Recipe


class LMRecipe(Recipe):
    family = "lm"
    model_type = "rnn_lm"
    run_config = LMRunConfig
    default_preset = "ptb-recommended"

    @classmethod
    def load_for_generation(cls, run_dir: str | Path, device: str = "cpu"):
        from lmlab.models.rnn_lm import RNNLM

        return RNNLM.load_for_generation(run_dir, device)

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu"):
        from lmlab.pipelines import Generator

        return Generator.from_run_dir(run_dir, device)
