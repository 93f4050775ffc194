# Whole transfers: sizes x arrival orders x framing x n, keys, empty bodies, back to back, both engines.
# Invariant: every body is checked by sha256 or exactly; sender status lines and receiver framing are exact.
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import trio

from pipe_relay.net.splice import SpliceEngine, splice_available
from tests.clients import (
    CurlResult,
    Payload,
    RawClient,
    Relay,
    StartRelay,
    curl,
    curl_into,
    parse_head,
    sha256_file,
)

MiB = 1 << 20


async def _run_sender(relay: Relay, key: str, payload: Payload, *, n: int, chunked: bool) -> tuple[int, str]:
    url = f"{relay.url}{key}?n={n}"
    if chunked:
        with payload.path.open("rb") as stdin:
            result = await trio.run_process(
                ["curl", "-sS", "--max-time", "120", "-T", "-", url],
                stdin=stdin,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    else:
        result = await trio.run_process(
            ["curl", "-sS", "--max-time", "120", "-T", str(payload.path), url],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return result.returncode, result.stdout.decode()


async def _run_receiver(relay: Relay, key: str, n: int, out: Path) -> int:
    result = await trio.run_process(
        [
            "curl",
            "-sS",
            "--max-time",
            "120",
            "-o",
            str(out),
            "-D",
            str(out) + ".head",
            f"{relay.url}{key}?n={n}",
        ],
        capture_stderr=True,
        check=False,
    )
    return result.returncode


def _check_sender_lines(text: str, *, n: int, sender_first: bool) -> None:
    lines = text.splitlines()
    assert lines[-3:] == [
        f"[INFO] Streaming to {n} receiver(s)...",
        "[INFO] Upload complete.",
        "[INFO] Transfer complete.",
    ], text
    head = lines[:-3]
    if sender_first:
        assert head[0] == f"[INFO] Waiting for {n} receiver(s) to connect...", text
        head = head[1:]
    counts = [
        int(m.group(1))
        for m in (re.fullmatch(rf"\[INFO\] (\d+) of {n} receiver\(s\) connected\.", x) for x in head)
        if m
    ]
    assert len(counts) == len(head), f"unexpected lines: {head}"
    if n == 1:
        assert counts == []
    else:
        assert counts == sorted(set(counts)) and counts[-1] == n, text


@pytest.mark.parametrize("size", [MiB, 64 * MiB], ids=["1MiB", "64MiB"])
@pytest.mark.parametrize("sender_first", [True, False], ids=["sender-first", "receivers-first"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("n", [1, 3])
async def test_transfer_is_byte_exact(
    relay: Relay,
    payloads: dict[int, Payload],
    tmp_path: Path,
    size: int,
    sender_first: bool,
    chunked: bool,
    n: int,
) -> None:
    payload = payloads[size]
    key = f"/t-{size}-{int(sender_first)}-{int(chunked)}-{n}"
    outs = [tmp_path / f"r{i}.bin" for i in range(n)]
    results: dict[str, object] = {}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:

            async def sender() -> None:
                results["sender"] = await _run_sender(relay, key, payload, n=n, chunked=chunked)

            async def receiver(i: int) -> None:
                results[f"r{i}"] = await _run_receiver(relay, key, n, outs[i])

            if sender_first:
                nursery.start_soon(sender)
                await relay.wait_for_pipe(key, sender=True)
                for i in range(n):
                    nursery.start_soon(receiver, i)
            else:
                for i in range(n):
                    nursery.start_soon(receiver, i)
                await relay.wait_for_pipe(key, receivers=n)
                nursery.start_soon(sender)
    code, text = results["sender"]  # type: ignore[misc]
    assert code == 0
    _check_sender_lines(text, n=n, sender_first=sender_first)
    for i, out in enumerate(outs):
        assert results[f"r{i}"] == 0
        assert sha256_file(out) == payload.sha256
        status, headers, _ = parse_head(Path(str(out) + ".head").read_bytes())
        assert status == 200
        if chunked:
            assert headers.get("transfer-encoding") == "chunked"
            assert "content-length" not in headers
        else:
            assert headers.get("content-length") == str(size)
            assert "transfer-encoding" not in headers
        assert headers["content-type"] == "application/octet-stream"
        assert headers["x-robots-tag"] == "none"
        assert headers["x-content-type-options"] == "nosniff"
    await relay.wait_until_free(key)


async def test_prefixed_and_plain_paths_are_one_pipe(relay: Relay) -> None:
    with trio.fail_after(10):
        got: dict[str, CurlResult] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(curl_into, got, "r", f"{relay.url}/api/v1/pipe/same")
            await relay.wait_for_pipe("/same", receivers=1)
            sent = await curl("-T", "-", f"{relay.url}/same", stdin=b"one pipe\n")
            assert sent.returncode == 0
    assert got["r"].stdout == b"one pipe\n"


async def test_query_is_not_part_of_the_key(relay: Relay) -> None:
    with trio.fail_after(10):
        got: dict[str, CurlResult] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(curl_into, got, "r", f"{relay.url}/q?download=false")
            await relay.wait_for_pipe("/q", receivers=1)
            assert (await curl("-T", "-", f"{relay.url}/q?n=1", stdin=b"q")).returncode == 0
    assert got["r"].stdout == b"q"


async def test_empty_body(relay: Relay) -> None:
    with trio.fail_after(10):
        got: dict[str, CurlResult] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(curl_into, got, "r", "-i", f"{relay.url}/empty")
            await relay.wait_for_pipe("/empty", receivers=1)
            sent = await curl("-X", "POST", "--data-binary", "", f"{relay.url}/empty")
    assert sent.returncode == 0
    assert sent.stdout.decode().splitlines()[-1] == "[INFO] Transfer complete."
    status, headers, _ = parse_head(got["r"].stdout)
    assert status == 200
    assert headers["content-length"] == "0"
    assert got["r"].stdout.endswith(b"\r\n\r\n")


def test_curl_is_available() -> None:
    version = subprocess.run(["curl", "--version"], capture_output=True, check=True).stdout
    assert version.startswith(b"curl ")


async def test_back_to_back_transfers_reuse_the_path(relay: Relay) -> None:
    with trio.fail_after(20):
        for round_ in range(3):
            got: dict[str, CurlResult] = {}
            async with trio.open_nursery() as nursery:
                nursery.start_soon(curl_into, got, "r", f"{relay.url}/again")
                await relay.wait_for_pipe("/again", receivers=1)
                assert (
                    await curl("-T", "-", f"{relay.url}/again", stdin=b"round %d" % round_)
                ).returncode == 0
            assert got["r"].stdout == b"round %d" % round_
            await relay.wait_until_free("/again")


async def test_start_relay_fixture_uses_an_ephemeral_port(start_relay: StartRelay) -> None:
    with trio.fail_after(5):
        first = await start_relay()
        second = await start_relay()
    assert first.port != second.port
    assert first.port != 8080 and second.port != 8080


async def _one_transfer(relay: Relay, key: str, *sender_args: str, stdin: bytes | None = None) -> bytes:
    got: dict[str, CurlResult] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(curl_into, got, "r", f"{relay.url}{key}")
        await relay.wait_for_pipe(key, receivers=1)
        assert (await curl(*sender_args, f"{relay.url}{key}", stdin=stdin)).returncode == 0
    return got["r"].stdout


async def test_splice_engine_carries_content_length_bodies(start_relay: StartRelay, tmp_path: Path) -> None:
    if not splice_available():
        pytest.skip("splice(2)/tee(2) are Linux only")
    relay = await start_relay(engine="splice")
    engine = relay.hub.engine
    assert isinstance(engine, SpliceEngine)
    source = tmp_path / "cl.bin"
    source.write_bytes(bytes(range(256)) * 5000)
    with trio.fail_after(20):
        assert await _one_transfer(relay, "/sp-cl", "-T", str(source)) == source.read_bytes()
        assert (engine.carried, engine.fallbacks) == (1, 0)
        # a chunked body cannot be spliced as is: the buffer engine takes it
        assert await _one_transfer(relay, "/sp-chunked", "-T", "-", stdin=b"chunked") == b"chunked"
        assert (engine.carried, engine.fallbacks) == (1, 1)


async def test_splice_engine_falls_back_when_pipes_are_refused(
    start_relay: StartRelay, tmp_path: Path
) -> None:
    if not splice_available():
        pytest.skip("splice(2)/tee(2) are Linux only")
    relay = await start_relay(engine="splice")
    engine = relay.hub.engine
    assert isinstance(engine, SpliceEngine)
    engine.pipe_size = 1 << 30  # more than the kernel grants a pipe: F_SETPIPE_SZ is refused
    source = tmp_path / "fallback.bin"
    source.write_bytes(b"f" * 300_000)
    with trio.fail_after(20):
        assert await _one_transfer(relay, "/sp-fallback", "-T", str(source)) == source.read_bytes()
    assert (engine.carried, engine.fallbacks) == (0, 1)


def _dechunk(body: bytes) -> tuple[bytes, bool]:
    """A chunked body decoded, and whether it ended with the last chunk (nothing after it)."""
    out = bytearray()
    pos = 0
    while True:
        eol = body.index(b"\r\n", pos)
        size = int(body[pos:eol], 16)
        if size == 0:
            return bytes(out), body[eol:] == b"\r\n\r\n"
        out += body[eol + 2 : eol + 2 + size]
        assert body[eol + 2 + size : eol + 4 + size] == b"\r\n"
        pos = eol + 4 + size


@pytest.mark.parametrize("sender_first", [True, False], ids=["sender-first", "receivers-first"])
@pytest.mark.parametrize("n", [1, 3])
async def test_small_body_sent_with_its_head(
    relay: Relay, raw_clients: list[RawClient], sender_first: bool, n: int
) -> None:
    """A body that arrives in the same packet as its head (the common small upload): every receiver
    gets head, exact body and a clean end; the sender gets every status line, in order."""
    body = bytes(range(256)) * 4
    key = f"/small-{n}-{int(sender_first)}"
    put = b"PUT %s?n=%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (key.encode(), n, len(body))
    with trio.fail_after(10):
        sender = await RawClient.connect(relay)
        receivers = [await RawClient.connect(relay) for _ in range(n)]
        raw_clients += [sender, *receivers]
        if sender_first:
            await sender.send(put + body)
            await relay.wait_for_pipe(key, sender=True)
        for receiver in receivers:
            await receiver.send(b"GET %s?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (key.encode(), n))
        if not sender_first:
            await relay.wait_for_pipe(key, receivers=n)
            await sender.send(put + body)
        for receiver in receivers:
            raw, clean = await receiver.read_to_end()
            assert clean
            status, headers, _ = parse_head(raw)
            assert status == 200
            assert headers["content-length"] == str(len(body))
            assert raw.partition(b"\r\n\r\n")[2] == body
        raw, clean = await sender.read_to_end()
    assert clean
    head, _, stream = raw.partition(b"\r\n\r\n")
    assert parse_head(head + b"\r\n\r\n")[1]["transfer-encoding"] == "chunked"
    text, ended = _dechunk(stream)
    assert ended
    _check_sender_lines(text.decode(), n=n, sender_first=sender_first)
    await relay.wait_until_free(key)
