"""The ``openai`` SDK, imported on first use.

Importing it costs about a second (its generated types): the first model call pays that, not
every worker boot, CLI command or producer that imports this package.
"""

from __future__ import annotations

from types import ModuleType


def sdk() -> ModuleType:
    import openai  # noqa: PLC0415 -- deliberately lazy, see the module docstring

    return openai
