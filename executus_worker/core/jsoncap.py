"""Size and nesting caps on untrusted JSON, checked *before* it is parsed or re-encoded.

Python's ``json`` recurses once per level: a 256 KB request of ``[[[[...`` raises
``RecursionError`` (not a ``ValueError``), which escaped every handler that caught bad JSON.
pydantic's JSON parser stops at ~200 levels on its own, but ``json.loads``/``json.dumps`` and
pydantic's Python-mode validation of an already-decoded dict do not. So every path that takes a
request from outside (the worker's message, the client, the schedules) checks the size, then
the depth, and only then parses -- and raises ``PayloadError`` naming which limit was crossed.

``MAX_DEPTH`` counts containers from the request object itself (``{"input": {"a": [1]}}`` is 3
deep): far above any real agent input, far below the parsers' own limits.
"""

from __future__ import annotations

import json
import re
from typing import Any

from executus_worker.errors import PayloadError

MAX_DEPTH = 100

# A JSON string literal (the unrolled form: linear, no backtracking blow-up).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# Everything that is not a bracket, for bytes.translate(None, delete=...).
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPEN = frozenset(b"[{")


def deeper_than(raw: str | bytes, limit: int) -> bool:
    """``text_depth(raw, limit=limit) > limit``, without the scan when ``raw`` holds no more
    opening brackets than ``limit`` (no text nests deeper than that): the usual message, on
    every delivery's path, costs two byte counts."""
    data = raw.encode() if isinstance(raw, str) else raw
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    return text_depth(data, limit=limit) > limit


def text_depth(raw: str | bytes, *, limit: int = MAX_DEPTH) -> int:
    """How deeply ``raw`` nests, counted without parsing it; stops counting past ``limit``.

    Brackets inside string literals do not count. On text that is not JSON the count is
    meaningless but finite; the parser that runs next reports that text properly.
    """
    data = raw.encode() if isinstance(raw, str) else raw
    brackets = _STRING.sub(b"", data).translate(None, delete=_NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        if byte in _OPEN:
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


# A JSON string (escapes included; an unterminated one runs to the end, so every match
# attempt succeeds and the scan stays linear) or one bracket. Possessive quantifiers: a string
# is never re-scanned after a failed alternative.
_TOKENS = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\Z)|[\[\]{}]', re.DOTALL)


def json_too_deep(body: bytes, max_depth: int) -> int | None:
    """The byte offset where ``body``'s nesting first exceeds ``max_depth``, else None: for
    an error that says where (the HTTP API's 422). ``text_depth`` is the faster count.

    Brackets inside strings do not count. Stops at the first offending bracket, so a hostile
    body costs at most ``max_depth`` steps more than an honest one.
    """
    depth = 0
    for match in _TOKENS.finditer(body):
        first = body[match.start()]
        if first in _OPEN:
            depth += 1
            if depth > max_depth:
                return match.start()
        elif first != ord('"') and depth:
            depth -= 1  # a stray closer (malformed JSON, the parser's to report) counts nothing
    return None


def value_depth(value: object, *, limit: int = MAX_DEPTH) -> int:
    """How deeply an already-decoded value nests (dicts, lists, tuples), without recursing;
    stops counting past ``limit``."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def check_text(raw: str | bytes, *, what: str, max_bytes: int, max_depth: int = MAX_DEPTH) -> None:
    """Raise PayloadError unless ``raw`` is within ``max_bytes`` and ``max_depth``."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > max_bytes:
        raise PayloadError(f"{what} is {size} bytes, over the {max_bytes}-byte limit")
    if deeper_than(raw, max_depth):
        raise PayloadError(f"{what} nests deeper than {max_depth} levels")


def check_value(value: object, *, what: str, max_depth: int = MAX_DEPTH) -> None:
    if value_depth(value, limit=max_depth) > max_depth:
        raise PayloadError(f"{what} nests deeper than {max_depth} levels")


def dumps_capped(value: object, *, what: str, max_bytes: int, max_depth: int = MAX_DEPTH) -> str:
    """Compact JSON of a decoded value, after the depth check (so encoding cannot recurse
    without bound) and with the size cap applied to the encoded bytes."""
    check_value(value, what=what, max_depth=max_depth)
    try:
        encoded = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"{what} is not JSON-serialisable: {exc}") from exc
    size = len(encoded.encode())
    if size > max_bytes:
        raise PayloadError(f"{what} is {size} bytes, over the {max_bytes}-byte limit")
    return encoded


def loads_capped(raw: str | bytes, *, what: str, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` after the size and depth checks; PayloadError for anything bad."""
    check_text(raw, what=what, max_bytes=max_bytes, max_depth=max_depth)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise PayloadError(f"{what} is not valid JSON: {exc}") from exc
