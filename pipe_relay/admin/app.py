# The admin listener's ASGI app: bearer-token auth, /metrics, the live-transfers API, its OpenAPI document.
# Invariant: no route answers without the token; no answer holds a pipe path; every error is JSON.
"""Handed what it serves (a `Backend`) and the token, never the server: Hypercorn runs it (its trio
worker, inside the server's own nursery), the data path never passes here."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Protocol

from ..core.transfers import ID_PATTERN, QueryError, TransferView, page, parse_query
from .openapi import document

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TRANSFERS = "/api/v1/transfers"
REALM = 'Bearer realm="pipe-relay admin"'


class Backend(Protocol):
    """What the admin API shows and steers: the whole server's (every worker's) transfers and tally."""

    async def transfers(self) -> Sequence[TransferView]: ...

    async def terminate(self, transfer_id: str) -> TransferView | None:
        """End the transfer (as it was just before), or None if there is none by that id."""
        ...

    def metrics(self) -> tuple[bytes, str]:
        """The scrape's body and its content type."""
        ...


class AdminError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, tuple(headers)


class AdminApp:
    def __init__(self, backend: Backend, token: str) -> None:
        if not token:
            raise ValueError("the admin app needs a token")
        self._backend = backend
        self._token = hashlib.sha256(token.encode("utf-8")).digest()

    def __repr__(self) -> str:
        return "<AdminApp>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # (websockets: not served; Hypercorn closes them)
        try:
            self._authorize(scope)
            status, headers, body = await self._route(scope)
        except AdminError as exc:
            status, body = exc.status, _json({"error": exc.code, "message": exc.message})
            headers = [("content-type", "application/json"), *exc.headers]
        await _respond(send, status, headers, body, head=scope["method"] == "HEAD")

    def _authorize(self, scope: Scope) -> None:
        given = b""
        for name, value in scope["headers"]:
            if name.lower() == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = credentials.strip()
        # (digests compared in constant time: neither the token's bytes nor its length show in the time)
        if not hmac.compare_digest(hashlib.sha256(given).digest(), self._token) or not given:
            raise AdminError(
                401,
                "UNAUTHORIZED",
                "Missing or wrong bearer token (Authorization: Bearer <token>).",
                [("www-authenticate", REALM)],
            )

    async def _route(self, scope: Scope) -> tuple[int, list[tuple[str, str]], bytes]:
        path, method = scope["path"], scope["method"]
        if path == "/metrics":
            _allow(method, ("GET", "HEAD"))
            body, content_type = self._backend.metrics()
            return 200, [("content-type", content_type)], body
        if path == "/api/v1/openapi.json":
            _allow(method, ("GET", "HEAD"))
            return 200, [("content-type", "application/json")], _json(document())
        if path == TRANSFERS:
            _allow(method, ("GET", "HEAD"))
            try:
                query = parse_query(scope.get("query_string", b"").decode("latin-1"))
            except QueryError as exc:
                raise AdminError(400, "BAD_REQUEST", str(exc)) from None
            shown, cursor = page(await self._backend.transfers(), query)
            listing = {"transfers": [v.to_json() for v in shown], "next_cursor": cursor}
            return 200, [("content-type", "application/json")], _json(listing)
        if path.startswith(TRANSFERS + "/"):
            _allow(method, ("GET", "HEAD", "DELETE"))
            transfer_id = path[len(TRANSFERS) + 1 :]
            if not ID_PATTERN.fullmatch(transfer_id):
                raise AdminError(400, "BAD_REQUEST", "A transfer id is 16 lower-case hex digits.")
            if method == "DELETE":
                found = await self._backend.terminate(transfer_id)
            else:
                found = next((v for v in await self._backend.transfers() if v.id == transfer_id), None)
            if found is None:
                raise AdminError(404, "TRANSFER_NOT_FOUND", f"No pending or active transfer {transfer_id}.")
            return 200, [("content-type", "application/json")], _json(found.to_json())
        raise AdminError(404, "NOT_FOUND", "No such admin route: see /api/v1/openapi.json.")


def _allow(method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise AdminError(
            405,
            "METHOD_NOT_ALLOWED",
            f"Method {method} is not allowed here: use {' or '.join(allowed)}.",
            [("allow", ", ".join(allowed))],
        )


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode() + b"\n"


async def _respond(
    send: Send, status: int, headers: list[tuple[str, str]], body: bytes, *, head: bool = False
) -> None:
    fields = [
        *headers,
        ("content-length", str(len(body))),
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
    ]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(n.encode("latin-1"), v.encode("latin-1")) for n, v in fields],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
