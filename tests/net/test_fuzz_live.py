# Fuzzing a live server: hypothesis-made request heads and broken bodies sent raw, while curl transfers.
# Invariant: every case ends within a bound with an error (X-Pipe-Error), a 200 or a close; nothing crashes.
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import quote_from_bytes

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from tests.clients import CurlResult, Payload, RawClient, Relay, StartRelay, curl, curl_into, sha256_file
from tests.fuzzing import Chunked, Form, chunked_bodies, forms, fuzz_settings, targets
from tests.responses import split_response

HEADS = 100
UPLOADS = 40
CASE_LIMIT = 6.0
"""Seconds one case may take: the head timeout (1 s) and a loaded machine's margin."""

_NAMES = st.sampled_from(
    [
        *[
            b"Content-Type",
            b"Origin",
            b"X-Piping",
            b"Accept",
            b"Content-Disposition",
            b"Expect",
            b"Connection",
        ],
        *[b"Service-Worker", b"Content-Range", b"Content-Length", b"Transfer-Encoding", b"X-Other"],
    ]
)
_VALUES = st.one_of(
    st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=30
    ).map(lambda text: text.strip().encode("latin-1")),
    st.sampled_from([b"chunked", b"100-continue", b"close", b"0", b"5", b"text/html", b"script", b"null"]),
)
_MUTATIONS = st.sampled_from(
    [
        *["method", "version", "bare-lf", "fold", "control", "name", "huge", "repeat", "cut", "no-host"],
        *["te-cl", "bad-length", "te-gzip", "body", "pipelined", "garbage", "raw-target"],
    ]
)


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """A request head (and perhaps some bytes after it): a plausible one with up to three mutations:
    odd methods and versions, bare LFs, obs-folds, invalid bytes, repeated and huge headers, a cut."""
    mutations = set(draw(st.lists(_MUTATIONS, max_size=3)))
    method = draw(st.sampled_from([b"GET", b"GET", b"PUT", b"POST", b"HEAD", b"OPTIONS", b"DELETE"]))
    if "method" in mutations:
        method = draw(
            st.one_of(st.sampled_from([b"get", b"G T", b"", b"CONNECT", b"\x00"]), st.binary(max_size=8))
        )
    target = draw(targets).encode("utf-8")
    if "raw-target" not in mutations:  # what a client sends: the bytes beyond visible ASCII escaped
        target = quote_from_bytes(target, safe=bytes(range(0x21, 0x7F))).encode()
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]))
    if "version" in mutations:
        version = draw(
            st.one_of(
                st.sampled_from([b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.2", b"http/1.1"]), st.binary(max_size=9)
            )
        )
    headers = [] if "no-host" in mutations else [(b"Host", b"x")]
    headers += draw(st.lists(st.tuples(_NAMES, _VALUES), max_size=5))
    if "te-cl" in mutations:
        headers += [(b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"5")]
    if "bad-length" in mutations:
        headers.append(
            (b"Content-Length", draw(st.sampled_from([b"-1", b"1e3", b"0x5", b"1, 2", b"9" * 20])))
        )
    if "te-gzip" in mutations:
        headers.append((b"Transfer-Encoding", b"gzip, chunked"))
    if "control" in mutations:
        headers.append((b"X-Control", b"a" + bytes([draw(st.sampled_from([0, 1, 13, 10, 27, 127]))]) + b"b"))
    if "name" in mutations:
        headers.append((draw(st.sampled_from([b"", b"X Y", b"X\x00", b"(x)", b"\xff"])), b"v"))
    eol = b"\n" if "bare-lf" in mutations else b"\r\n"
    head = method + b" " + target + b" " + version + eol
    head += b"".join(name + b": " + value + eol for name, value in headers)
    if "fold" in mutations:
        head += b"X-Folded: a" + eol + draw(st.sampled_from([b" ", b"\t"])) + b"b" + eol
    if "repeat" in mutations:
        head += b"X-Repeated: 1\r\n" * draw(st.sampled_from([99, 101, 500]))
    if "huge" in mutations:
        head += b"X-Huge: " + b"h" * draw(st.sampled_from([60_000, 70_000])) + b"\r\n"
    if "cut" in mutations:
        return head[: draw(st.integers(0, len(head)))]
    head += eol
    if "body" in mutations:
        head += draw(st.sampled_from([b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n", b"hello"]))
    if "pipelined" in mutations:
        head += b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n"
    if "garbage" in mutations:
        head += draw(st.binary(max_size=40))
    return head


@dataclass(frozen=True)
class Upload:
    head: bytes
    body: bytes
    payload: bytes | None
    """What the receiver must get; None when the body is broken (it must never look complete)."""


@st.composite
def broken_chunked(draw: st.DrawFn, chunked: Chunked) -> bytes:
    """The body after a chunk with an invalid size line, after a chunk longer than its size, or cut."""
    edit = draw(st.sampled_from([b"3\r\nabc\r\nzz\r\n", b"3\r\nabcabc\r\n", b"cut"]))
    if edit == b"cut":
        return chunked.body[: draw(st.integers(0, len(chunked.body) - 1))]
    return edit + chunked.body


@st.composite
def uploads(draw: st.DrawFn) -> Upload:
    """A sender's PUT to a waiting receiver: a chunked body, or a multipart form; valid or broken."""
    kind = draw(st.sampled_from(["chunked", "form"]))
    valid = draw(st.booleans())
    if kind == "chunked":
        chunked = draw(chunked_bodies(max_chunks=4))
        body = chunked.body if valid else draw(broken_chunked(chunked))
        head = b"Transfer-Encoding: chunked\r\n"
        return Upload(head, body, chunked.payload if valid else None)
    form: Form = draw(forms(max_parts=3))
    content = form.content
    assert content is not None
    declared = form.content_type
    body = form.body
    if not valid:
        if draw(st.booleans()):
            body = body[: draw(st.integers(0, form.closed_at - 1))]
        else:
            declared = f'multipart/form-data; boundary="{form.boundary}x"'
    head = f"Content-Type: {declared}\r\nContent-Length: {len(body)}\r\n".encode()
    return Upload(head, body, content.value if valid else None)


async def exchange(relay: Relay, data: bytes) -> bytes:
    """Send `data`, half-close, read until the server closes (or resets)."""
    client = await RawClient.connect(relay)
    try:
        try:
            await client.send(data)
            await client.stream.send_eof()
        except trio.BrokenResourceError:
            pass  # the server answered (and closed) before it read everything
        answer, _ = await client.read_to_end()
        return answer
    finally:
        await client.aclose()


def check_answer(raw: bytes) -> int | None:
    """A close, a 200, or an error with its code; the status (None for a close)."""
    if not raw:
        return None
    response = split_response(raw)
    head = raw[: len(raw) - len(response.body)]
    assert head.count(b"\n") == head.count(b"\r\n"), head
    assert response.status == 200 or (
        400 <= response.status < 600 and response.headers.get("x-pipe-error")
    ), raw[:300]
    return response.status


async def check_head(relay: Relay, head: bytes) -> None:
    with trio.fail_after(CASE_LIMIT):
        check_answer(await exchange(relay, head))


async def check_upload(relay: Relay, folder: Path, key: str, upload: Upload) -> None:
    with trio.fail_after(CASE_LIMIT):
        out = folder / "upload.out"
        results: dict[str, CurlResult] = {}
        async with trio.open_nursery() as nursery:
            args = ("-o", str(out), "-w", "%{http_code}", relay.url + key)
            nursery.start_soon(partial(curl_into, results, "receiver", *args))
            await relay.wait_for_pipe(key, receivers=1)
            head = b"PUT %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (key.encode(), upload.head)
            sender = check_answer(await exchange(relay, head + upload.body))
        received = results["receiver"]
        complete = received.returncode == 0 and received.stdout == b"200"
        if upload.payload is None:
            assert not complete, (upload, received)
        else:
            assert sender == 200
            assert complete, (upload, received)
            assert sha256_file(out) == hashlib.sha256(upload.payload).hexdigest()


async def transfer(relay: Relay, key: str, payload: Payload, out: Path, *sender_options: str) -> None:
    """A normal curl transfer; its receiver's file must be the payload (sha256)."""
    results: dict[str, CurlResult] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(curl_into, results, "receiver", "-o", str(out), relay.url + key))
        await relay.wait_for_pipe(key, receivers=1)
        sender = ("-T", str(payload.path), *sender_options, relay.url + key)
        nursery.start_soon(partial(curl_into, results, "sender", *sender))
    assert results["sender"].returncode == 0 and results["receiver"].returncode == 0, results
    assert sha256_file(out) == payload.sha256


def fuzz(relay: Relay, folder: Path) -> None:
    """Runs in a worker thread: hypothesis drives the cases, each one runs on the test's trio loop."""
    counter = iter(range(10**6))

    @fuzz_settings(HEADS)
    @given(heads())
    def fuzz_heads(head: bytes) -> None:
        trio.from_thread.run(check_head, relay, head)

    @fuzz_settings(UPLOADS)
    @given(uploads())
    def fuzz_uploads(upload: Upload) -> None:
        trio.from_thread.run(check_upload, relay, folder, f"/fuzz-upload-{next(counter)}", upload)

    fuzz_heads()
    fuzz_uploads()


async def test_fuzzed_requests_get_an_answer_or_a_close_and_transfers_go_on(
    start_relay: StartRelay,
    payloads: dict[int, Payload],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pipe_relay")
    relay = await start_relay(header_timeout=1, pending_ttl=5)
    payload = payloads[1 << 20]
    with trio.fail_after(50):
        async with trio.open_nursery() as nursery:
            during = partial(transfer, relay, "/steady-f3a9", payload, tmp_path / "during.out")
            nursery.start_soon(during, "--limit-rate", "256k")  # ~4 s: it runs through the fuzzing
            await relay.wait_for_pipe("/steady-f3a9", sender=True)
            await trio.to_thread.run_sync(fuzz, relay, tmp_path)
        await transfer(relay, "/steady-after", payload, tmp_path / "after.out")
        health = await curl("-o", "/dev/null", "-w", "%{http_code}", relay.url + "/api/v1/pipe/health")
        assert health.stdout == b"200"
    tracebacks = [record for record in caplog.records if record.exc_info]
    assert not tracebacks, [record.getMessage() for record in tracebacks]
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
