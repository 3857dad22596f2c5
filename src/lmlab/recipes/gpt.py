"""The GPT recipe (being moved onto :class:`lmlab.recipes.base.Recipe`)."""

from __future__ import annotations

from pathlib import Path

from lmlab.models.gpt import GPTRunConfig
from lmlab.recipes.base import Recipe


class GPTRecipe(Recipe):
    family = "gpt"
    model_type = "gpt"
    run_config = GPTRunConfig
    default_preset = "char"

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu"):
        from lmlab.models.gpt import GPTGenerator

        return GPTGenerator.from_run_dir(run_dir, device)
