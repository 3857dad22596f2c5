"""One recipe per model family behind one interface (:class:`lmlab.recipes.base.Recipe`).

``lmlab.registry`` maps each ``model_type`` to its recipe; the CLI, the tour and the server call recipes and
pipelines only. Adding a family is one model file plus one recipe here (and a preset and a docs page).
"""

from lmlab.recipes.base import Recipe, TrainResult, split_validation

__all__ = ["Recipe", "TrainResult", "split_validation"]
