"""Run ids are idempotency keys bound to their payload: what differs between two requests."""

from __future__ import annotations

from typing import Any

from executus_worker.core.models import RunRequest


def request_differences(stored: RunRequest, wanted: RunRequest) -> tuple[str, ...]:
    """The fields in which ``wanted`` differs from ``stored``, in schema order; () if none.

    Compared as validated models, so defaults spelled out or left implicit are the same
    payload. A differing mapping (``input``, ``metadata``, ``limits``) is named down to its
    differing keys (``input.steps``), which says what changed without echoing any value.
    ``run_id`` is the key itself, not payload: a run registered by a worker from a raw
    message may carry it only outside its request.
    """
    old = stored.model_dump(mode="json", exclude={"run_id"})
    new = wanted.model_dump(mode="json", exclude={"run_id"})
    differing: list[str] = []
    for field, old_value in old.items():
        new_value = new.get(field)
        if old_value == new_value:
            continue
        if isinstance(old_value, dict) and isinstance(new_value, dict):
            differing.extend(f"{field}.{key}" for key in _differing_keys(old_value, new_value))
        else:
            differing.append(field)
    return tuple(differing)


def _differing_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = list(old) + [key for key in new if key not in old]
    return [key for key in keys if key not in old or key not in new or old[key] != new[key]]
