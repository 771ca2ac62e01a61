"""validate_request_json: a delivery's request and its stored copy are validated once."""

from __future__ import annotations

import threading

import pytest
from pydantic import ValidationError

from executus_worker.checkpoint import codec
from executus_worker.core.models import RunRequest, validate_request_json


def _raw(agent: str = "demo.counter", **input: int) -> str:
    return RunRequest(agent=agent, input=dict(input)).to_json()


def test_the_same_bytes_give_the_same_validated_request() -> None:
    raw = _raw(steps=3)
    first = validate_request_json(raw)
    assert validate_request_json(raw.encode()) is first  # str and bytes of the same text
    # The claim's decode of the stored record reuses it too.
    assert codec.decode_request("r1", "k", raw.encode()) is first


def test_other_bytes_are_validated_afresh() -> None:
    first = validate_request_json(_raw(steps=1))
    second = validate_request_json(_raw(steps=2))
    assert second is not first
    assert second.input == {"steps": 2}
    assert validate_request_json(_raw(steps=1)) == first


def test_an_invalid_request_raises_every_time_and_is_not_remembered() -> None:
    good = validate_request_json(_raw())
    bad = b'{"agent": "demo.counter", "surprise": 1}'
    for _ in range(2):
        with pytest.raises(ValidationError):
            validate_request_json(bad)
    assert validate_request_json(_raw()) is good


def test_each_thread_remembers_its_own() -> None:
    raw = _raw(steps=7)
    mine = validate_request_json(raw)
    theirs: list[RunRequest] = []
    worker = threading.Thread(target=lambda: theirs.append(validate_request_json(raw)))
    worker.start()
    worker.join()
    assert theirs[0] == mine and theirs[0] is not mine
