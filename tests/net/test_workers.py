# `--workers 2` as a user runs it: pipes owned by key, parties on any worker and protocol, limits kept.
# Invariant: each test runs its own supervisor process on port 0 and ends it; every wait is bounded.
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio
import trustme

from pipe_relay.core.owners import owner_of
from tests.cli_process import ROOT, listening_urls, startup_lines
from tests.clients import CurlResult, TlsFiles, curl, curl_into, health, worker_pids

PAYLOAD = hashlib.shake_256(b"workers").digest(300_000)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@dataclass
class Server:
    process: trio.Process
    url: str
    tls_url: str = ""
    log: Path | None = None

    async def health(self) -> dict[str, object]:
        return await health(self.url)

    async def worker_pids(self, count: int) -> dict[int, int]:
        return await worker_pids(self.url, count)


@asynccontextmanager
async def workers_server(tmp_path: Path, *flags: str, workers: int = 2) -> AsyncIterator[Server]:
    log = tmp_path / "server.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "pipe_relay", "--host", "127.0.0.1", "--http-port", "0"]
    with log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [*command, "--workers", str(workers), *flags], stdout=-1, stderr=stderr, cwd=ROOT, env=env
        )
    try:
        lines = await startup_lines(process, 3 + ("--enable-https" in flags) * 2)
        assert lines[-1] == f"{workers} worker processes, each pipe served by one", lines
        plain, secure = listening_urls(lines)
        yield Server(process, plain, secure, log)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


def keys_owned_by(owner: int, count: int, prefix: str, workers: int = 2) -> list[str]:
    keys: list[str] = []
    index = 0
    while len(keys) < count:
        key = f"/{prefix}-{index}"
        if owner_of(key, workers) == owner:
            keys.append(key)
        index += 1
    return keys


async def _transfer(
    url: str, key: str, results: dict[str, tuple[CurlResult, CurlResult]], *flags: str
) -> None:
    got: dict[str, CurlResult] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(curl_into, got, "r", *flags, url + key)
        nursery.start_soon(partial(curl_into, got, "s", *flags, "-T", "-", url + key, stdin=PAYLOAD))
    results[key] = (got["s"], got["r"])


async def test_forty_transfers_on_distinct_paths_all_arrive_and_both_workers_own_some(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with workers_server(tmp_path) as server:
            keys = keys_owned_by(0, 20, "forty") + keys_owned_by(1, 20, "forty")
            results: dict[str, tuple[CurlResult, CurlResult]] = {}
            for batch in range(0, 40, 10):
                async with trio.open_nursery() as nursery:
                    for key in keys[batch : batch + 10]:
                        nursery.start_soon(_transfer, server.url, key, results)
            handed: dict[int, int] = {}
            while len(handed) < 2:
                worker = (await server.health())["worker"]
                assert isinstance(worker, dict)
                handed[int(worker["index"])] = int(worker["handedOff"]) + int(worker["taken"])
    for key, (sent, received) in results.items():
        assert received.returncode == 0, (key, received.stderr)
        assert hashlib.sha256(received.stdout).hexdigest() == DIGEST, key
        assert sent.stdout.decode().splitlines()[-1] == "[INFO] Transfer complete.", key
    assert all(count > 0 for count in handed.values()), handed  # (connections moved between them)


async def test_a_fan_out_whose_parties_come_over_every_protocol(tmp_path: Path, tls_files: TlsFiles) -> None:
    """n=3 with the sender over h2c and its receivers over HTTP/1.1, HTTP/1.1 over TLS and HTTP/2
    over TLS, on one key: whichever worker accepts each, they meet at the owner."""
    tls = ("--cacert", str(tls_files.ca_pem))
    flags = tls_files.cli_flags()
    with trio.fail_after(60):
        async with workers_server(tmp_path, *flags) as server:
            for owner in (0, 1):
                key = keys_owned_by(owner, 1, "fan")[0] + "?n=3"
                got: dict[str, CurlResult] = {}
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(curl_into, got, "h1", "--http1.1", server.url + key)
                    nursery.start_soon(curl_into, got, "tls", *tls, "--http1.1", server.tls_url + key)
                    nursery.start_soon(curl_into, got, "h2", *tls, "--http2", server.tls_url + key)
                    sender = ("--http2-prior-knowledge", "-T", "-", server.url + key)
                    nursery.start_soon(partial(curl_into, got, "s", *sender, stdin=PAYLOAD))
                for name in ("h1", "tls", "h2"):
                    assert got[name].returncode == 0, (owner, name, got[name].stderr)
                    assert hashlib.sha256(got[name].stdout).hexdigest() == DIGEST, (owner, name)
                assert got["s"].stdout.decode().splitlines()[-1] == "[INFO] Transfer complete."


async def test_progress_of_a_pipe_owned_by_the_other_worker(tmp_path: Path) -> None:
    """`?progress` events come from the owner, whichever worker the watcher reached."""
    with trio.fail_after(60):
        async with workers_server(tmp_path) as server:
            for owner in (0, 1):
                key = keys_owned_by(owner, 1, "watched")[0]
                watcher = await trio.lowlevel.open_process(
                    ["curl", "-sS", "-N", "-H", "Accept: text/event-stream", server.url + key + "?progress"],
                    stdout=-1,
                )
                assert watcher.stdout is not None
                events = b""
                while b"data:" not in events:  # (its first event: nobody is there yet)
                    chunk = await watcher.stdout.receive_some()
                    assert chunk, events
                    events += chunk
                await _transfer(server.url, key, {})
                while chunk := await watcher.stdout.receive_some():
                    events += chunk
                assert await watcher.wait() == 0
                last = json.loads(events.decode().strip().splitlines()[-1].removeprefix("data: "))
                assert last["state"] == "done" and last["bytes"] == len(PAYLOAD), events


async def _until_progress(server: Server, key: str, reached: Callable[[dict[str, Any]], bool]) -> None:
    """Follow `key`'s ?progress events (from its owner, whichever worker answers) until one has
    `reached` what is awaited."""
    watcher = await trio.lowlevel.open_process(
        ["curl", "-sS", "-N", "-H", "Accept: text/event-stream", server.url + key + "?progress"], stdout=-1
    )
    assert watcher.stdout is not None
    events = b""
    try:
        while True:
            chunk = await watcher.stdout.receive_some()
            assert chunk, events
            events += chunk
            for line in events.decode().splitlines():
                if line.startswith("data: ") and reached(json.loads(line[6:])):
                    return
    finally:
        watcher.kill()
        await watcher.wait()


async def _until_receivers(server: Server, key: str, count: int, *, at_most: bool = False) -> None:
    """Until `count` receivers wait on `key` (or, with `at_most`, no more than `count`)."""

    def reached(event: dict[str, Any]) -> bool:
        connected = int(event["receivers"]["connected"])
        return connected <= count if at_most else connected >= count

    await _until_progress(server, key, reached)


async def test_connections_moved_while_their_owner_is_busy_each_reach_it(tmp_path: Path) -> None:
    """Worker 1 stopped for a moment (SIGSTOP: busy, descheduled) while 100 receivers connect, each
    on a key it owns, with a 40 KB head: worker 0 accepts them all and moves each, with its head, but
    the queue between two workers holds 512 KiB, so the rest wait for room, one after another, until
    worker 1 runs again. Then a sender for each: every receiver gets its own sender's bytes, and no
    worker ended (two hand-offs waiting at once on that queue used to be a crash)."""
    keys = keys_owned_by(1, 100, "burst")
    pad = "p" * 40_000
    flags = ("--client-max-pending", "0", "--client-max-connections", "0")
    with trio.fail_after(30):
        async with workers_server(tmp_path, *flags) as server:
            pids = await server.worker_pids(2)
            host, port = server.url.removeprefix("http://").rsplit(":", 1)
            got: dict[str, bytes] = {}

            async def receive(key: str, ready: trio.MemorySendChannel[None]) -> None:
                async with await trio.open_tcp_stream(host, int(port)) as stream:
                    await stream.send_all(f"GET {key} HTTP/1.1\r\nHost: x\r\nX-Pad: {pad}\r\n\r\n".encode())
                    await ready.send(None)
                    data = b""
                    while not data.endswith(key.encode()) and (chunk := await stream.receive_some(65536)):
                        data += chunk
                    got[key] = data

            async def send(key: str) -> None:
                async with await trio.open_tcp_stream(host, int(port)) as stream:
                    body = key.encode()
                    head = b"PUT %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (body, len(body))
                    await stream.send_all(head + body)
                    said = b""
                    while b"[INFO] Transfer complete." not in said and (
                        chunk := await stream.receive_some(65536)
                    ):
                        said += chunk

            async def handed_off_by_0() -> int:
                worker = (await server.health())["worker"]  # (worker 0 answers: worker 1 is stopped)
                assert isinstance(worker, dict) and worker["index"] == 0, worker
                return int(worker["handedOff"])

            ready_in, ready_out = trio.open_memory_channel[None](len(keys))
            before = 0
            os.kill(pids[1], signal.SIGSTOP)
            try:
                async with trio.open_nursery() as nursery:
                    before = await handed_off_by_0()
                    for key in keys:
                        nursery.start_soon(receive, key, ready_in)
                    for _ in keys:  # (every receiver's head is out)
                        await ready_out.receive()
                    while await handed_off_by_0() < before + 12:  # (the queue is full: the rest wait)
                        pass
                    os.kill(pids[1], signal.SIGCONT)
                    for key in keys:
                        nursery.start_soon(send, key)
            finally:
                os.kill(pids[1], signal.SIGCONT)
            assert await server.worker_pids(2) == pids
    broken = [key for key in keys if not got[key].endswith(b"\r\n\r\n" + key.encode())]
    assert broken == [], (len(broken), got[broken[0]][-300:] if broken else b"")
    log = server.log.read_text() if server.log else ""
    assert "Traceback" not in log and "ended with" not in log, log[-3000:]


async def test_one_client_gets_its_quota_once_not_once_per_worker(tmp_path: Path) -> None:
    """--client-max-pending 2 with two workers: waiting on a key of each worker uses it up."""
    with trio.fail_after(30):
        async with workers_server(tmp_path, "--client-max-pending", "2") as server:
            first, second = keys_owned_by(0, 1, "quota")[0], keys_owned_by(1, 1, "quota")[0]
            third = keys_owned_by(0, 2, "quota")[1]
            got: dict[str, CurlResult] = {}
            async with trio.open_nursery() as nursery:
                nursery.start_soon(curl_into, got, "a", server.url + first)
                nursery.start_soon(curl_into, got, "b", server.url + second)
                await _until_receivers(server, first, 1)
                await _until_receivers(server, second, 1)
                refused = await curl("-i", server.url + third)
                nursery.cancel_scope.cancel()
    head = refused.stdout.decode()
    assert head.startswith("HTTP/1.1 429"), head
    assert "X-Pipe-Error: CLIENT_PENDING_LIMIT" in head


async def test_a_killed_worker_cuts_its_transfers_only_and_comes_back(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with workers_server(tmp_path) as server:
            pids = await server.worker_pids(2)
            doomed, kept = keys_owned_by(0, 1, "killed")[0], keys_owned_by(1, 1, "killed")[0]
            big = b"x" * (8 << 20)
            got: dict[str, CurlResult] = {}
            async with trio.open_nursery() as nursery:
                # each sender's body stalls half-way (its stdin is a pipe we feed), so both run
                senders: dict[str, trio.Process] = {}
                for key in (doomed, kept):
                    nursery.start_soon(curl_into, got, key, "--limit-rate", "2M", server.url + key)
                    senders[key] = await trio.lowlevel.open_process(
                        ["curl", "-sS", "-T", "-", server.url + key], stdin=-1, stdout=-1, stderr=-1
                    )
                    assert senders[key].stdin is not None
                    await senders[key].stdin.send_all(big[: 4 << 20])
                os.kill(pids[0], signal.SIGKILL)
                for key in (doomed, kept):
                    stdin = senders[key].stdin
                    assert stdin is not None
                    with contextlib.suppress(trio.BrokenResourceError):  # (the doomed one's is gone)
                        await stdin.send_all(big[4 << 20 :])
                    await stdin.aclose()
                for process in senders.values():
                    await process.wait()
            while True:  # the supervisor starts worker 0 again
                now = await server.worker_pids(2)
                if now[0] != pids[0]:
                    break
            after = await server.health()
    assert got[doomed].returncode != 0 and len(got[doomed].stdout) < len(big)  # cut, never complete
    assert got[kept].returncode == 0 and got[kept].stdout == big
    worker = after["worker"]
    assert isinstance(worker, dict) and worker["alive"] == 2


async def test_sigterm_drains_every_worker_and_the_supervisor_exits_when_they_have(tmp_path: Path) -> None:
    """A transfer running on each worker at the SIGTERM finishes whole; a new pipe is refused; the
    supervisor exits 0 once both workers have drained."""
    with trio.fail_after(60):
        async with workers_server(tmp_path) as server:
            keys = [keys_owned_by(owner, 1, "drain")[0] for owner in (0, 1)]
            got: dict[str, CurlResult] = {}
            senders: dict[str, trio.Process] = {}
            async with trio.open_nursery() as nursery:
                for key in keys:
                    nursery.start_soon(curl_into, got, key, server.url + key)
                    senders[key] = await trio.lowlevel.open_process(
                        ["curl", "-sS", "-T", "-", server.url + key], stdin=-1, stdout=-1
                    )
                    stdin = senders[key].stdin
                    assert stdin is not None
                    await stdin.send_all(PAYLOAD[:100_000])
                for key in keys:  # both transfers run: the receivers' first bytes are out
                    await _until_bytes(server, key)
                server.process.send_signal(signal.SIGTERM)
                refused = await curl("-i", "-T", "-", server.url + "/drain-new", stdin=b"x")
                for key in keys:
                    stdin = senders[key].stdin
                    assert stdin is not None
                    await stdin.send_all(PAYLOAD[100_000:])
                    await stdin.aclose()
                for process in senders.values():
                    await process.wait()
            assert await server.process.wait() == 0
    for key in keys:
        assert got[key].returncode == 0 and hashlib.sha256(got[key].stdout).hexdigest() == DIGEST, key
    assert refused.returncode != 0 or b"503" in refused.stdout.split(b"\r\n", 1)[0], refused.stdout


async def _until_bytes(server: Server, key: str) -> None:
    """Until `key`'s transfer has moved a byte."""
    await _until_progress(server, key, lambda event: int(event["bytes"]) > 0)


async def test_a_renewed_certificate_is_served_by_every_worker(tmp_path: Path, tls_files: TlsFiles) -> None:
    flags = tls_files.cli_flags()
    with trio.fail_after(60):
        async with workers_server(tmp_path, *flags) as server:
            renewed = trustme.CA()
            tls_files.issue(renewed)
            renewed_pem = tmp_path / "renewed-ca.pem"
            renewed.cert_pem.write_to_path(str(renewed_pem))
            seen: set[int] = set()
            while len(seen) < 2:  # (each answer comes from whichever worker accepted it)
                got = await curl("--cacert", str(renewed_pem), server.tls_url + "/api/v1/pipe/health")
                assert got.returncode == 0, got.stderr  # (the old certificate would fail: not this CA)
                worker = json.loads(got.stdout)["worker"]
                seen.add(int(worker["index"]))
            old = await curl("--cacert", str(tls_files.ca_pem), server.tls_url + "/api/v1/pipe/health")
    assert old.returncode == 60, old.stderr  # (the old CA no longer verifies what is served)


async def test_a_receiver_that_leaves_through_a_carrying_worker_is_forgotten_at_once(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    """A waiting receiver over HTTPS/1.1 or HTTP/2, its request carried to the other worker, is
    Ctrl-C'd: the owner forgets it within a second, and the path serves the next receiver."""
    tls = ("--cacert", str(tls_files.ca_pem))
    with trio.fail_after(60):
        async with workers_server(tmp_path, *tls_files.cli_flags()) as server:
            for index, flag in enumerate(("--http1.1", "--http2")):
                for owner in (0, 1):
                    key = keys_owned_by(owner, 3, "left")[index]
                    killed = await trio.lowlevel.open_process(
                        ["env", "--default-signal=INT", "curl", "-sS", *tls, flag, server.tls_url + key],
                        stdout=-1,
                        stderr=-1,
                    )
                    await _until_receivers(server, key, 1)
                    killed.send_signal(signal.SIGINT)
                    await killed.wait()
                    started = trio.current_time()
                    await _until_receivers(server, key, 0, at_most=True)
                    assert trio.current_time() - started < 1.0, (flag, owner)
                    results: dict[str, tuple[CurlResult, CurlResult]] = {}
                    await _transfer(server.tls_url, key, results, *tls, flag)
                    _, received = results[key]
                    assert hashlib.sha256(received.stdout).hexdigest() == DIGEST, (flag, owner)
