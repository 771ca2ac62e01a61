"""Reading executus.run messages without trusting them, and what the transport does with one it
cannot deliver as sent."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from kombu import Connection

from executus_worker.core.models import RunRequest
from executus_worker.publish import TASK_RUN, build_envelope
from executus_worker.worker.messages import (
    MAX_PAYLOAD_OPTION,
    REJECTED,
    body_problem,
    notice_run_id,
    read_delivery,
    read_run_id,
    run_id_of,
)
from executus_worker.worker.transport import Transport

MAX = 256 * 1024
GOOD = RunRequest(run_id="r1", agent="demo.counter").to_json()


def read(*args: Any, task_id: str | None = None, **kwargs: Any) -> Any:
    return read_delivery(args, kwargs, task_id=task_id, max_bytes=MAX)


def test_a_good_message_reads_as_its_run_and_request() -> None:
    delivery = read("r1", GOOD)
    assert (delivery.run_id, delivery.problem) == ("r1", None)
    assert delivery.request is not None and delivery.request.agent == "demo.counter"


@pytest.mark.parametrize(
    ("args", "kwargs", "task_id", "run_id", "problem"),
    [
        ((7, GOOD), {}, None, "7", "must be a string, got the number 7"),
        (("r1", "{"), {}, None, "r1", "invalid run request"),
        (("r1", "[" * 5000), {}, None, "r1", "nests deeper"),
        ((), {}, "t-1", "t-1", "carries no run request"),
        (('{"agent": 5, "run_id": "in-body"}',), {}, None, "in-body", "invalid run request"),
        (("r1", GOOD, "extra"), {}, None, "r1", "unexpected arguments"),
        (("r1",), {REJECTED: "no delivery_tag"}, None, "r1", "malformed message: no delivery_tag"),
        (("bad id!", '{"agent": "a"}'), {}, "t-2", "t-2", "invalid run id"),
        (("r2", GOOD), {}, None, "r2", "does not match"),
    ],
)
def test_a_bad_message_names_its_run_wherever_one_can_be_read(
    args: tuple[Any, ...], kwargs: dict[str, Any], task_id: str | None, run_id: str, problem: str
) -> None:
    delivery = read(*args, task_id=task_id, **kwargs)
    assert delivery.run_id == run_id and delivery.request is None
    assert delivery.problem is not None and problem in delivery.problem


def test_the_agent_of_a_bad_request_is_kept_for_the_record() -> None:
    delivery = read("r1", json.dumps({"agent": "demo.counter", "input": 5}))
    assert delivery.agent == "demo.counter"
    assert read("r1", "[" * 10_000).agent == "invalid"


def body(raw: bytes, **envelope: Any) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(build_envelope(TASK_RUN, ["x"], queue="q", task_id="t-9"))
    message["body"] = base64.b64encode(raw).decode()
    message.update(envelope)
    return message


def test_the_run_of_a_broken_message_is_read_from_the_start_of_its_body() -> None:
    assert notice_run_id(body(b'[["run-5", ' + b"[" * 100_000)) == "run-5"
    assert notice_run_id(body(b"[[123, {}], {}]")) == "123"
    assert notice_run_id(body(b"[[], {}]")) == "t-9"  # else the task id
    assert notice_run_id(body(b"!!", properties={"body_encoding": "base64"})) == "t-9"


def test_a_body_too_deep_or_too_big_for_the_request_cap_is_named() -> None:
    assert body_problem(b"[[1]]", max_bytes=MAX) is None
    deep = body_problem(b"[" * 200, max_bytes=MAX)
    assert deep is not None and "nests deeper than 103 levels" in deep
    big = body_problem(b"x" * (5 * MAX), max_bytes=MAX)
    assert big is not None and "byte limit" in big


# -- the transport ----------------------------------------------------------------------------


@pytest.fixture
def delivered() -> tuple[Transport, list[dict[str, Any]]]:
    connection = Connection(
        "redis://127.0.0.1:1/0", transport=Transport, transport_options={MAX_PAYLOAD_OPTION: 2048}
    )
    transport = connection.transport
    received: list[dict[str, Any]] = []
    transport._callbacks = {"q": received.append}
    return transport, received


def decoded(message: dict[str, Any]) -> Any:
    return json.loads(base64.b64decode(message["body"]))


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (body(b'[["run-5", ' + b"[" * 5000 + b"]" * 5000 + b"], {}, {}]"), "nests deeper"),
        (body(b'[["run-5", "' + b"x" * 100_000 + b'"], {}, {}]'), "byte limit"),
        (body(b'[["run-5", "{}"], {}]'), "[args, kwargs, embed]"),
        (
            body(b'[["run-5", "{}"], {}, {}]', properties={"body_encoding": "base64"}),
            "delivery_tag",
        ),
    ],
    ids=["deep", "oversized", "two-element-body", "no-delivery-tag"],
)
def test_a_broken_run_message_is_delivered_as_a_notice_for_its_run(
    delivered: tuple[Transport, list[dict[str, Any]]], message: dict[str, Any], problem: str
) -> None:
    transport, received = delivered
    transport._deliver(message, "q")
    [notice] = received
    args, kwargs, _embed = decoded(notice)
    assert args == ["run-5"] and problem in kwargs[REJECTED]
    assert notice["headers"]["id"] == "t-9" and notice["properties"]["delivery_tag"]


def test_a_broken_message_of_another_task_is_dropped(
    delivered: tuple[Transport, list[dict[str, Any]]],
) -> None:
    transport, received = delivered
    message = body(b'[["a"], {}]')
    message["headers"]["task"] = "someone.else"
    transport._deliver(message, "q")
    assert received == []


def test_a_good_run_message_passes_untouched(
    delivered: tuple[Transport, list[dict[str, Any]]],
) -> None:
    transport, received = delivered
    message = json.loads(build_envelope(TASK_RUN, ["r1", GOOD], queue="q"))
    transport._deliver(message, "q")
    assert received == [message]


@pytest.mark.parametrize(
    "first",
    ["run-1", "a" * 200, "a" * 201, "", "run 1", "run-1\n", "ü", "x:y+z.w_-", 7, None, ["a"]],
)
@pytest.mark.parametrize("shape", ["contract", "one-arg", "kwargs"])
def test_run_id_of_reads_what_read_delivery_reads(first: object, shape: str) -> None:
    """Its fast path for the contract's shape must agree with the validator everywhere."""
    if shape == "contract":
        args, kwargs = [first, "{}"], {}
    elif shape == "one-arg":
        args, kwargs = [first], {"request": "{}"}
    else:
        args, kwargs = [], {"run_id": first, "request": "{}"}
    expected = read_run_id(first)[0]
    assert run_id_of(args, kwargs) == expected
    delivery = read_delivery(args, kwargs, task_id=None, max_bytes=1 << 20)
    assert delivery.run_id == expected
