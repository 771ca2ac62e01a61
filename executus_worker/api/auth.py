"""Bearer-token auth, checked before a request's body is read.

``BearerAuth`` is a pure ASGI middleware: a request to anything but the public paths (health
probes, the OpenAPI document) must carry ``Authorization: Bearer <EXECUTUS_API_TOKEN>``, or it
gets 401 before the body-size guard reads a byte of it. Without a token configured every
request passes; ``server.check_bind`` allows that on loopback addresses only.

The comparison is constant-time on SHA-256 digests of both sides, so neither the token's
content nor its length leaks through response timing. The token is never logged, echoed or
put in an error message.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi.security import HTTPBearer
from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from executus_worker.api.problems import error_bytes

# Documents the scheme in the OpenAPI document (so generated clients send the header); the
# check itself is BearerAuth's, which runs first.
bearer_scheme = HTTPBearer(auto_error=False, description="EXECUTUS_API_TOKEN")


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class BearerAuth:
    def __init__(
        self, app: ASGIApp, *, token: SecretStr | None, public_paths: frozenset[str]
    ) -> None:
        self.app = app
        self._expected = None if token is None else _digest(token.get_secret_value().encode())
        self.public_paths = public_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or self._expected is None
            or scope["path"] in self.public_paths
            or self._authorised(scope)
        ):
            await self.app(scope, receive, send)
            return
        body = error_bytes(
            "unauthorized", "missing or wrong bearer token (Authorization: Bearer <token>)"
        )
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="executus"'),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _authorised(self, scope: Scope) -> bool:
        assert self._expected is not None
        values = [v for k, v in scope["headers"] if k == b"authorization"]
        if len(values) != 1:
            return False
        scheme, _, credentials = values[0].partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(_digest(credentials.strip()), self._expected)
