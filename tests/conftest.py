# Test fixtures only: a real pipe-relay server on an ephemeral port per engine, clients to close, payloads.
# Invariant: no fixed ports, no sleeps for readiness; every server lives in the test's nursery.
from __future__ import annotations

import hashlib
import os
import resource
import socket
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from pipe_relay import Config, serve
from pipe_relay.net.hub import Hub
from tests.clients import ENGINES, Payload, RawClient, Relay, StartRelay, TlsFiles


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Every server-backed test runs once per byte engine, so no engine rots."""
    return str(request.param)


@pytest.fixture
def start_relay(nursery: trio.Nursery, engine: str) -> StartRelay:
    """Start a server with Config overrides: `relay = await start_relay(pending_ttl=1)`."""

    async def start(**overrides: Any) -> Relay:
        overrides.setdefault("engine", engine)
        overrides.setdefault("hosts", ("127.0.0.1",))
        config = Config(port=0, **overrides)
        hub = Hub(config)
        listeners = await nursery.start(partial(serve, config, hub=hub))
        ports: dict[bool, int] = {}
        for listener in listeners:  # (the first TCP one of each kind)
            if listener.socket.family != socket.AF_UNIX:
                ports.setdefault(listener.tls, listener.socket.getsockname()[1])
        return Relay(
            config=config, port=ports.get(False, 0), hub=hub, tls_port=ports.get(True), listeners=listeners
        )

    return start


@pytest.fixture
def many_descriptors() -> None:
    """At least 4,096 open files for this process (a test with 1,000 clients and their server side),
    or the test is skipped with the reason."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 4096:
        pytest.skip(f"needs 4096 descriptors for 1,000 clients and their server side (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))


@pytest.fixture
async def relay(start_relay: StartRelay) -> Relay:
    return await start_relay()


def _make_payload(directory: Path, size: int) -> Payload:
    path = directory / f"payload-{size}.bin"
    digest = hashlib.sha256()
    with path.open("wb") as out:
        remaining = size
        while remaining:
            block = os.urandom(min(remaining, 1 << 20))
            out.write(block)
            digest.update(block)
            remaining -= len(block)
    return Payload(path, digest.hexdigest(), size)


@pytest.fixture(scope="session")
def payloads(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Payload]:
    """Random files by size (1 MiB and 64 MiB), made once per session."""
    directory = tmp_path_factory.mktemp("payloads")
    return {size: _make_payload(directory, size) for size in (1 << 20, 64 << 20)}


@pytest.fixture
def small_file(tmp_path: Path) -> Path:
    """A small text file (`hello, pipe`) for a sender to upload."""
    path = tmp_path / "small.txt"
    path.write_bytes(b"hello, pipe\n")
    return path


@pytest.fixture
async def raw_clients() -> AsyncIterator[list[RawClient]]:
    """Collects RawClients to close at the end of a test."""
    clients: list[RawClient] = []
    yield clients
    for client in clients:
        await client.aclose()


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    """A fresh CA and a certificate for 127.0.0.1 / localhost from it, on disk."""
    ca = trustme.CA()
    files = TlsFiles(ca, tmp_path / "server.crt", tmp_path / "server.key", tmp_path / "ca.pem")
    ca.cert_pem.write_to_path(str(files.ca_pem))
    files.issue(ca)
    return files


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `session_end` run last (the deploy receivers that wait 90 s do it while the rest
    of the session runs)."""
    last = [item for item in items if item.get_closest_marker("session_end")]
    if last:
        items[:] = [item for item in items if not item.get_closest_marker("session_end")] + last
