"""The hardened transport's envelope check: what it drops and what it lets Celery handle."""

from __future__ import annotations

import base64
import json

import pytest

from executus_worker.publish import TASK_RUN, build_envelope
from executus_worker.worker.transport import describe, envelope_problem, fill_delivery_info


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


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        (None, {"exchange": "", "routing_key": "q"}),
        ({}, {"exchange": "", "routing_key": "q"}),
        ({"exchange": None, "routing_key": ""}, {"exchange": "", "routing_key": "q"}),
        ({"exchange": "x", "routing_key": "rk", "priority": 3}, None),  # kept as sent
    ],
    ids=["absent", "empty", "null-fields", "complete"],
)
def test_a_hand_built_message_gets_the_delivery_info_a_publish_would_write(
    info: dict[str, object] | None, expected: dict[str, object] | None
) -> None:
    message = envelope()
    properties = message["properties"]
    assert isinstance(properties, dict)
    properties.pop("delivery_info")
    if info is not None:
        properties["delivery_info"] = dict(info)
    assert envelope_problem(message) is None  # deliverable as it stands
    fill_delivery_info(message, "q")
    assert properties["delivery_info"] == (expected or info)


def test_a_message_is_described_by_its_task_never_by_its_payload() -> None:
    secret = "s3cret-" * 100
    message = envelope()
    message["body"] = base64.b64encode(secret.encode()).decode()
    assert secret[:20] not in describe(message)
    assert "executus.run" in describe(message)
    assert len(describe("x" * 10_000)) < 130
