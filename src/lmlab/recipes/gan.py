"""The SeqGAN recipe (being moved onto :class:`lmlab.recipes.base.Recipe`)."""

from __future__ import annotations

from pathlib import Path

from lmlab.models.textgan import GANRunConfig
from lmlab.recipes.base import Recipe


class GANRecipe(Recipe):
    family = "gan"
    model_type = "seqgan"
    run_config = GANRunConfig
    default_preset = "seqgan-multi30k"

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu"):
        from lmlab.models.textgan import SeqGANGenerator

        return SeqGANGenerator.from_run_dir(run_dir, device)
