"""The Celery adapter: ``create_app``, the tasks, shutdown, heartbeat and recovery.

``celery -A executus_worker.worker worker`` looks up ``app`` here. It is built on first access
(module ``__getattr__``) from ``Settings()`` -- the one place the environment is read at
import-like time -- so importing this package, or anything else, has no side effects.
"""

from __future__ import annotations

from typing import Any

from executus_worker.settings import Settings
from executus_worker.worker.factory import create_app

__all__ = ["app", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        built = create_app(Settings())
        # Cache it as a real module attribute: every later lookup returns the same app.
        globals()["app"] = built
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
