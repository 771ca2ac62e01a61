"""Request bodies are checked before anything parses them: size, media type, JSON nesting.

``BodyLimits`` is a pure ASGI middleware in front of the app. It refuses a declared
``Content-Length`` over the cap without reading a byte (413), reads a chunked body only up to
the cap (413 past it), refuses a body not declared as JSON (415), and measures the nesting of
the JSON before ``json.loads`` sees it: the parser recurses once per level, so a few kilobytes
of ``[[[[...`` would otherwise cost a RecursionError deep inside the framework instead of a
clear 422. The checked body is then handed to the app unchanged.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from executus_worker.api.problems import error_bytes
from executus_worker.core.jsoncap import json_too_deep

Refusal = tuple[int, str, str]  # status, code, message


class BodyLimits:
    def __init__(self, app: ASGIApp, *, max_bytes: int, max_depth: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        refusal = self._check_length(headers.get(b"content-length"))
        body = b""
        if refusal is None:
            read = await self._read(receive)
            if read is None:
                return  # the client left: nothing to answer
            refusal, body = read
        if refusal is None and body:
            refusal = self._check_json(headers.get(b"content-type"), body)
        if refusal is not None:
            await _refuse(send, *refusal)
            return
        await self.app(scope, _replay(body, receive), send)

    def _check_length(self, declared: bytes | None) -> Refusal | None:
        if declared is None:
            return None
        if not declared.isdigit():
            return 400, "invalid_request", "Content-Length is not a number"
        if int(declared) > self.max_bytes:
            return 413, "body_too_large", self._too_large(str(int(declared)))
        return None

    async def _read(self, receive: Receive) -> tuple[Refusal | None, bytes] | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return (413, "body_too_large", self._too_large(f"at least {size}")), b""
            chunks.append(chunk)
            if not message.get("more_body", False):
                return None, b"".join(chunks)

    def _check_json(self, content_type: bytes | None, body: bytes) -> Refusal | None:
        if not _is_json(content_type):
            # curl -d sends a form type by default: say so instead of a schema error.
            got = (content_type or b"").decode("latin-1")[:100]
            detail = f"request bodies are JSON: send Content-Type: application/json (got {got!r})"
            return 415, "unsupported_media_type", detail
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return 422, "invalid_request", f"request body is not UTF-8 (at byte {exc.start})"
        offset = json_too_deep(body, self.max_depth)
        if offset is None:
            return None
        detail = (
            f"JSON body nests deeper than {self.max_depth} levels (at byte {offset}); "
            "the limit is EXECUTUS_API_MAX_JSON_DEPTH"
        )
        return 422, "invalid_request", detail

    def _too_large(self, amount: str) -> str:
        return (
            f"request body is {amount} bytes, over the {self.max_bytes}-byte limit "
            "(EXECUTUS_API_MAX_BODY_BYTES)"
        )


def _is_json(content_type: bytes | None) -> bool:
    # No content type: FastAPI still tries JSON for a JSON body parameter, so check it too.
    if content_type is None:
        return True
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the disconnect, when it comes

    return replayed


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = error_bytes(code, message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # The unread rest of the body would be parsed as the next request otherwise.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
