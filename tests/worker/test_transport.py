"""The hardened transport's envelope check: what it drops and what it lets Celery handle."""

from __future__ import annotations

import base64
import json

import pytest

from executus_worker.publish import TASK_RUN, build_envelope
from executus_worker.worker.transport import envelope_problem


def envelope(**changes: object) -> dict[str, object]:
    message: dict[str, object] = json.loads(build_envelope(TASK_RUN, ["r1", "{}"], queue="q"))
    message.update(changes)
    return message


def with_body(raw: bytes) -> dict[str, object]:
    return envelope(body=base64.b64encode(raw).decode())


def test_a_message_we_publish_is_deliverable() -> None:
    assert envelope_problem(envelope()) is None


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ("text", "not an object"),
        ([1, 2], "not an object"),
        ({"unexpected": 1}, "no properties"),
        (envelope(properties={}), "no delivery_tag"),
        (envelope(headers=[1]), "headers"),
        (envelope(body="!!not base64!!"), "base64"),
        (envelope(headers={"task": TASK_RUN}), "task name and id"),
        (with_body(b'"a string"'), "[args, kwargs, embed]"),
        (with_body(b"[[], {}]"), "[args, kwargs, embed]"),
        (with_body(b"[{}, {}, {}]"), "[args, kwargs, embed]"),
    ],
)
def test_an_undeliverable_message_is_named(message: object, problem: str) -> None:
    found = envelope_problem(message)
    assert found is not None and problem in found


def test_problems_celery_survives_on_its_own_are_left_to_it() -> None:
    assert envelope_problem(with_body(b"{not json")) is None  # Celery: decode error, acked
    assert envelope_problem(envelope(**{"content-type": "application/x-python-serialize"})) is None
    assert envelope_problem(with_body(b"[[], {}, null]")) is None
