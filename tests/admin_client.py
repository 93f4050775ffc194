# The admin listener as the tests reach it: `python -m pipe_relay --admin-port 0` (with or without
# `--workers N`) as a process, keep-alive admin connections that know which worker holds them, the
# scrape parsed. Invariant: every admin body a test reads is kept, so a test can search them all.
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import h11
import trio
from prometheus_client.parser import text_string_to_metric_families

from pipe_relay.core.owners import owner_of
from tests.cli_process import ROOT, listening_urls, startup_lines
from tests.clients import health, worker_pids

TOKEN = "admin-test-" + secrets.token_hex(12)
"""The bearer token of every server started here (PIPE_RELAY_ADMIN_TOKEN)."""
AUTH = ("Authorization", f"Bearer {TOKEN}")

Metrics = dict[tuple[str, frozenset[tuple[str, str]]], float]
"""A scrape: each sample's value by its name and labels."""
POLL_SECONDS = 5.0
"""How long `poll` asks again for what the server will soon show (then the caller's asserts tell)."""
T = TypeVar("T")


async def poll(
    fetch: Callable[[], Awaitable[T]], done: Callable[[T], bool], within: float = POLL_SECONDS
) -> T:
    """`fetch()` again (every 20 ms) until `done` holds of what it gave, or `within` seconds have
    passed: its last value, which the caller asserts on (so a failure shows what was seen instead)."""
    value = await fetch()
    with trio.move_on_after(within):
        while not done(value):
            await trio.sleep(0.02)
            value = await fetch()
    return value


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        document: dict[str, object] = json.loads(self.body)
        return document


@dataclass
class AdminServer:
    process: trio.Process
    url: str
    """The public (pipes) listener, `http://127.0.0.1:PORT`."""
    admin_port: int
    log: Path
    """The server's stderr (every worker's)."""
    tls_url: str = ""
    """The HTTPS listener, `https://127.0.0.1:PORT`, when it has one (`--enable-https`)."""
    bodies: list[bytes] = field(default_factory=list)
    """Every admin body read through `connect` (a test searches them for what must never show)."""
    connections: list[AdminConnection] = field(default_factory=list)
    """Every admin connection opened (closed when the server is stopped)."""

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    async def connect(self) -> AdminConnection:
        stream = await trio.open_tcp_stream("127.0.0.1", self.admin_port)
        self.connections.append(AdminConnection(stream, self.bodies))
        return self.connections[-1]

    async def health(self) -> dict[str, object]:
        return await health(self.url)

    async def worker_pids(self, count: int) -> dict[int, int]:
        return await worker_pids(self.url, count)

    async def connect_to(self, index: int, pids: dict[int, int]) -> AdminConnection:
        """A keep-alive admin connection held by worker `index` (whichever worker is free accepts a
        connection: connect until that one has; the caller's deadline bounds it)."""
        while True:
            connection = await self.connect()
            await connection.request("GET", "/api/v1/transfers?limit=1")  # (accepted and answered)
            holder = connection.holder(pids)
            if holder == index:
                return connection
            await connection.aclose()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


class AdminConnection:
    """One HTTP/1.1 keep-alive connection to the admin listener (h11), so every request on it is
    answered by one worker."""

    def __init__(self, stream: trio.SocketStream, bodies: list[bytes]) -> None:
        self.stream = stream
        self.bodies = bodies
        self._h11 = h11.Connection(h11.CLIENT)

    async def request(self, method: str, target: str, *, token: str | None = TOKEN) -> Reply:
        headers = [("Host", "127.0.0.1")]
        if token is not None:
            headers.append(("Authorization", f"Bearer {token}"))
        connection = self._h11
        if connection.our_state is h11.DONE:
            connection.start_next_cycle()
        data = connection.send(h11.Request(method=method, target=target, headers=headers))
        data += connection.send(h11.EndOfMessage())
        await self.stream.send_all(data)
        status, fields, body = 0, {}, bytearray()
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                chunk = await self.stream.receive_some(65536)
                connection.receive_data(chunk)
            elif isinstance(event, h11.Response):
                status = event.status_code
                fields = {n.decode("latin-1"): v.decode("latin-1") for n, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise AssertionError(f"unexpected {event!r}")
        self.bodies.append(bytes(body))
        return Reply(status, fields, bytes(body))

    async def get_json(self, target: str) -> dict[str, object]:
        reply = await self.request("GET", target)
        assert reply.status == 200, (target, reply)
        return reply.json()

    async def transfers(self, query: str = "") -> list[dict[str, object]]:
        document = await self.get_json("/api/v1/transfers" + query)
        listed = document["transfers"]
        assert isinstance(listed, list)
        return listed

    async def scrape(self) -> Metrics:
        reply = await self.request("GET", "/metrics")
        assert reply.status == 200, reply
        return parse_metrics(reply.body.decode())

    def holder(self, pids: dict[int, int]) -> int | None:
        """The index of the worker (of `pids`) whose process holds this connection's server side:
        the socket whose local port is the admin port and remote port ours, found in /proc."""
        local = self.stream.socket.getsockname()
        inodes = _tcp_inodes(local_port=self.stream.socket.getpeername()[1], remote_port=local[1])
        for index, pid in pids.items():
            try:
                names = os.listdir(f"/proc/{pid}/fd")
            except FileNotFoundError:
                continue
            for name in names:
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{name}")
                except FileNotFoundError:
                    continue
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return index
        return None

    async def aclose(self) -> None:
        await self.stream.aclose()


def _tcp_inodes(local_port: int, remote_port: int) -> set[str]:
    """Inodes of the IPv4 TCP sockets from `local_port` to `remote_port` (/proc/net/tcp)."""
    inodes: set[str] = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if int(local.split(":")[1], 16) == local_port and int(remote.split(":")[1], 16) == remote_port:
            inodes.add(inode)
    return inodes


def parse_metrics(text: str) -> Metrics:
    samples: Metrics = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics[(name, frozenset(labels.items()))]


def keys_owned_by(owner: int, count: int, prefix: str, workers: int = 2) -> list[str]:
    """`count` pipe paths `/PREFIX-I` that worker `owner` owns (a path of unreserved characters
    only is its own registry key, as test_workers.py's are)."""
    keys: list[str] = []
    index = 0
    while len(keys) < count:
        key = f"/{prefix}-{index}"
        if owner_of(key, workers) == owner:
            keys.append(key)
        index += 1
    return keys


@asynccontextmanager
async def admin_server(tmp_path: Path, *flags: str, workers: int = 2) -> AsyncIterator[AdminServer]:
    """`python -m pipe_relay --http-port 0 --admin-port 0 [--workers N] FLAGS` with the token in its
    environment, once it listens; SIGTERM after (then SIGKILL if it has not ended in 10 s), reaped."""
    log = tmp_path / "server.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PIPE_RELAY_ADMIN_TOKEN": TOKEN}
    command = [sys.executable, "-m", "pipe_relay", "--host", "127.0.0.1", "--http-port", "0"]
    command += ["--admin-port", "0", "--drain-timeout", "1", *flags]
    if workers > 1:
        command += ["--workers", str(workers)]
    server: AdminServer | None = None
    with log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(command, stdout=-1, stderr=stderr, cwd=ROOT, env=env)
    try:
        lines = await startup_lines(process, 3 + (workers > 1) + ("--enable-https" in flags) * 2)
        plain, secure = listening_urls(lines)
        admin = next(
            m
            for line in lines
            if (
                m := re.fullmatch(
                    r"admin listener \(metrics, live transfers\) on http://127\.0\.0\.1:(\d+)", line
                )
            )
        )
        if workers > 1:
            assert lines[-1] == f"{workers} worker processes, each pipe served by one", lines
        server = AdminServer(process, plain, int(admin.group(1)), log, secure)
        yield server
    finally:
        with trio.CancelScope(shield=True):
            for connection in server.connections if server is not None else ():
                await connection.aclose()
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with trio.move_on_after(10):
                    await process.wait()
            if process.returncode is None:
                process.kill()
            await process.wait()
