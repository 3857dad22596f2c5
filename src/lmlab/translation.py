"""Where the seq2seq names lived before the recipe contract; kept so that ``from lmlab.translation import
Translator`` (docs/api.md) keeps working.

The pipeline is :mod:`lmlab.pipelines.translate`; the run config and training are :mod:`lmlab.recipes.seq2seq`
(``Seq2SeqRecipe.from_preset(preset, overrides, src=pairs).train(out)``).
"""

from __future__ import annotations

from lmlab.pipelines.translate import Translator, check_beam, plot_attention
from lmlab.recipes.seq2seq import DecodeConfig, Seq2SeqRunConfig

__all__ = ["DecodeConfig", "Seq2SeqRunConfig", "Translator", "check_beam", "plot_attention"]
