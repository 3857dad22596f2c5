"""The errors lmlab raises for bad input.

The CLI prints an ``LmlabError`` in one or two lines (what is wrong, where, how to fix it) and exits with
status 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class LmlabError(Exception):
    """Base class for user-facing errors (bad input, bad config, bad files)."""

    exit_code = 2


class ConfigError(LmlabError):
    """A config file, preset, override or option is wrong."""


class ChatTemplateError(ConfigError):
    """A chat template does not parse, raises, fails, or tries to reach outside its sandbox; or there is none."""


class DataError(LmlabError):
    """Input data is empty, malformed, undecodable or inconsistent."""


class CheckpointError(LmlabError):
    """A run directory or checkpoint file is missing, truncated or mismatched."""


class TrainingError(LmlabError):
    """Training cannot continue (for example a NaN loss); the last good checkpoint is kept."""


class TrainingInterrupted(LmlabError):
    """Training was stopped by Ctrl-C (SIGINT) after saving a checkpoint; exits with 130 as shells expect."""

    exit_code = 130
