"""Size and nesting caps, checked without parsing: no RecursionError reaches anyone."""

from __future__ import annotations

import json
from typing import Any

import pytest

from executus_worker.core.jsoncap import (
    MAX_DEPTH,
    check_text,
    deeper_than,
    dumps_capped,
    loads_capped,
    text_depth,
    value_depth,
)
from executus_worker.core.models import RunRequest
from executus_worker.errors import PayloadError


def nested(levels: int) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [{}, [], 1, "s", {"a": {"b": [1, {"c": []}]}}, nested(7), {"x": nested(MAX_DEPTH - 1)}],
)
def test_both_depths_agree_with_the_structure(value: Any) -> None:
    assert text_depth(json.dumps(value), limit=10_000) == value_depth(value, limit=10_000)


def test_brackets_inside_strings_do_not_count() -> None:
    assert text_depth('{"a": "[[[{{{", "b": ["\\"]]]", "x\\\\"]}') == 2


def test_counting_stops_past_the_limit() -> None:
    assert text_depth(b"[" * 1_000_000, limit=5) == 6
    assert value_depth(nested(1_000_000), limit=5) == 6


def test_the_size_cap_comes_before_the_depth_check() -> None:
    with pytest.raises(PayloadError, match="over the 1024-byte limit"):
        check_text("[" * 5000, what="thing", max_bytes=1024)
    with pytest.raises(PayloadError, match="thing nests deeper than 100 levels"):
        check_text("[" * 500, what="thing", max_bytes=1024)


def test_loads_and_dumps_never_recurse() -> None:
    with pytest.raises(PayloadError, match="nests deeper"):
        loads_capped("[" * 200_000 + "]" * 200_000, what="x", max_bytes=10**6)
    with pytest.raises(PayloadError, match="nests deeper"):
        dumps_capped(nested(200_000), what="x", max_bytes=10**6)
    with pytest.raises(PayloadError, match="not valid JSON"):
        loads_capped("{nope", what="x", max_bytes=100)
    assert loads_capped('{"a": [1]}', what="x", max_bytes=100) == {"a": [1]}


@pytest.mark.parametrize(
    "raw",
    [
        '{"agent": "a", "input": {"x": ' + "[" * 300 + "]" * 300 + "}}",
        {"agent": "a", "input": {"x": nested(300)}},
        {"agent": "a", "input": {"x": nested(300_000)}},
    ],
    ids=["text", "dict", "dict-beyond-the-recursion-limit"],
)
def test_a_deep_request_is_a_payload_error_naming_the_limit(raw: Any) -> None:
    with pytest.raises(PayloadError, match="run request nests deeper than 100 levels"):
        RunRequest.parse(raw, max_bytes=10**7)


def test_a_request_at_the_depth_limit_is_accepted() -> None:
    # The request object is level 1 and input level 2: 98 more levels of lists fit.
    request = {"agent": "a", "input": {"x": nested(MAX_DEPTH - 2)}}
    assert RunRequest.parse(request, max_bytes=10**6).agent == "a"
    assert RunRequest.parse(json.dumps(request), max_bytes=10**6).agent == "a"


@pytest.mark.parametrize(
    "raw",
    [
        "{}",
        "[" * 5 + "]" * 5,
        "[" * 6 + "]" * 6,
        '{"a": "[[[[[[[[[[", "b": 1}',
        '"[[[[[[[[[["',
        "[{}, {}, {}, {}, {}, {}, {}]",
        b"[" * 7,
        json.dumps(nested(6)),
        json.dumps({"x": nested(4), "y": [[[[]]]]}),
    ],
)
@pytest.mark.parametrize("limit", [0, 1, 5, 6, 100])
def test_deeper_than_is_text_depth_past_the_limit(raw: str | bytes, limit: int) -> None:
    assert deeper_than(raw, limit) is (text_depth(raw, limit=limit) > limit)
