"""lmlab: language modeling from theory to practice.

``lmlab.load(run_dir)`` returns a ready pipeline (text in, text out) for any trained run directory.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def load(run_dir, device: str = "cpu"):
    """Load a trained run directory and return its pipeline (Classifier, Generator, Translator, KeyedVectors...)."""
    from lmlab.pipelines import load as _load

    return _load(run_dir, device=device)
