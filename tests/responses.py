# HTTP responses as the e2e tests see them: curl -i output parsed, background requests, exact checks.
# Invariant: every helper here asserts exact values; none of them hides a failure.
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from tests.clients import Relay, curl, parse_head

TEXT_PLAIN = "text/plain; charset=utf-8"


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    pairs: list[tuple[str, str]]
    body: bytes

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.pairs if key == name]


def split_response(raw: bytes) -> Response:
    """The final response in `raw` (interim 1xx heads skipped): head parsed, the rest as body."""
    rest = raw
    while True:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        assert sep, f"no complete response head in {raw[:300]!r}"
        status, headers, pairs = parse_head(head + b"\r\n\r\n")
        if not 100 <= status < 200:
            return Response(status, headers, pairs, rest)


async def http(relay: Relay, path: str, *args: str, stdin: bytes | None = None) -> Response:
    """One curl request; the whole response with its head (`-i`)."""
    result = await curl("-i", *args, relay.url + path, stdin=stdin, max_time=8)
    assert result.returncode == 0, result.stderr
    return split_response(result.stdout)


@dataclass
class Pending:
    """A request running in the background (a waiting receiver or sender)."""

    response: Response | None = None
    done: trio.Event = field(default_factory=trio.Event)

    async def result(self) -> Response:
        await self.done.wait()
        assert self.response is not None
        return self.response


def spawn(nursery: trio.Nursery, relay: Relay, path: str, *args: str) -> Pending:
    pending = Pending()

    async def run() -> None:
        pending.response = await http(relay, path, *args)
        pending.done.set()

    nursery.start_soon(run)
    return pending


def assert_exact_length(response: Response) -> None:
    assert response.values("content-length") == [str(len(response.body))]


def assert_error(response: Response, status: int, code: str, message: str) -> None:
    """An exact rejection: status, code header, one line of text, exact length, CORS and nosniff."""
    assert response.status == status, response
    assert response.headers["content-type"] == TEXT_PLAIN
    assert response.body == (message + "\n").encode(), response.body
    assert response.body.count(b"\n") == 1
    assert_exact_length(response)
    assert response.headers["x-pipe-error"] == code
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "transfer-encoding" not in response.headers


def assert_raw_error(raw: bytes, status: int, code: str, check: Callable[[str], bool]) -> None:
    response = split_response(raw)
    assert response.status == status
    assert response.headers["x-pipe-error"] == code
    assert response.headers["content-type"] == TEXT_PLAIN
    assert response.headers["content-length"] == str(len(response.body))
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["connection"] == "close"
    text = response.body.decode()
    assert text.startswith("[ERROR] ") and text.endswith("\n") and text.count("\n") == 1, text
    assert check(text), text


def assert_free(relay: Relay, key: str) -> None:
    """A rejected request left nothing behind in the registry."""
    assert relay.hub.registry.snapshot(key) is None


@dataclass
class Transfer:
    sender: Response
    receivers: list[Response]

    @property
    def receiver(self) -> Response:
        assert len(self.receivers) == 1
        return self.receivers[0]


async def transfer(
    relay: Relay,
    key: str,
    payload: Path,
    *sender_args: str,
    receiver_queries: tuple[str, ...] = ("",),
    receiver_args: tuple[str, ...] = (),
    chunked: bool = False,
) -> Transfer:
    """Receivers connect first, then `curl -T` sends `payload`; every body is checked."""
    data = payload.read_bytes()
    async with trio.open_nursery() as nursery:
        waiting = [spawn(nursery, relay, key + query, *receiver_args) for query in receiver_queries]
        await relay.wait_for_pipe(key, sender=False, receivers=len(receiver_queries))
        n = len(receiver_queries)
        url = key + (f"?n={n}" if n > 1 else "")
        if chunked:
            sender = await http(relay, url, "-T", "-", *sender_args, stdin=data)
        else:
            sender = await http(relay, url, "-T", str(payload), *sender_args)
        receivers = [await pending.result() for pending in waiting]
    assert sender.status == 200
    assert sender.body.endswith(b"[INFO] Upload complete.\n[INFO] Transfer complete.\n"), sender.body
    for receiver in receivers:
        assert receiver.status == 200
        assert receiver.body == data
    await relay.wait_until_free(key)
    return Transfer(sender, receivers)
