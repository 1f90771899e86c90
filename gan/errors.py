"""Helpers for the package's errors: how to quote one to a person.

The errors themselves live beside the code that raises them (``gan.checkpoint.CheckpointError``,
``gan.train.TrainingError``, ``gan.config.ConfigError``, …); this module imports nothing from
``gan``, so any of them can use it.
"""

from __future__ import annotations


def first_line(error: BaseException) -> str:
    """The first line of an error's message, or its type's name when it has none (torch's
    unpickling and state-dict errors run to a page)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
