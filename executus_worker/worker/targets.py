"""Objects named by import path in settings and files (``"module:attr.path"``)."""

from __future__ import annotations

import importlib

from executus_worker.errors import ConfigError


def load_target(target: str, where: str) -> object:
    """``module:attr.path`` -> the object; ConfigError naming ``where`` otherwise."""
    module_name, sep, attr_path = target.partition(":")
    if not sep or not module_name or not attr_path:
        raise ConfigError(f"{where}: {target!r} is not of the form 'module:attribute'")
    try:
        obj: object = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(f"{where}: cannot import {module_name}: {exc!r}") from exc
    for attr in attr_path.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError as exc:
            raise ConfigError(f"{where}: {module_name} has no attribute {attr_path}") from exc
    return obj
