# The one set of test clients and helpers: the server handle, curl, the raw HTTP/1.1 client, the
# response head parser and the chunked-body reader. Invariant: no fixtures here (they are in conftest.py).
from __future__ import annotations

import hashlib
import json
import ssl
import struct
from base64 import b64encode
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trustme

from pipe_relay import Config, serve
from pipe_relay.net.hub import Hub
from pipe_relay.net.listen import Listener
from pipe_relay.net.splice import splice_available

ENGINES = [
    "buffer",
    pytest.param("splice", marks=pytest.mark.skipif(not splice_available(), reason="Linux only")),
]
"""The byte engines a server-backed test runs on (the `engine` fixture's parameters)."""


@dataclass
class Relay:
    """A running server: where it listens."""

    config: Config
    port: int
    hub: Hub
    host: str = "127.0.0.1"
    tls_port: int | None = None
    """The HTTPS listener's port, when the server has one."""
    listeners: list[Listener] = field(default_factory=list)
    """Its listening sockets (a test may set an option that accepted sockets inherit)."""

    async def wait_for_pipe(
        self, key: str, *, sender: bool | None = None, receivers: int | None = None
    ) -> None:
        """Wait until pipe `key` has a sender (if asked) and `receivers` receivers registered."""

        def ready() -> bool:
            snap = self.hub.registry.snapshot(key)
            if snap is None:
                return False
            return (sender is None or snap.sender == sender) and (
                receivers is None or snap.receivers == receivers
            )

        await self.hub.wait_for(ready)

    async def wait_for_bytes(self, key: str, count: int) -> None:
        """Wait until pipe `key`'s transfer has moved at least `count` bytes to its receivers (its
        progress board is woken at every step; the caller's fail_after bounds the wait)."""
        await self.wait_for_pipe(key)
        while (board := self.hub.boards.get(key)) is None or board.bytes < count:
            if board is None:
                await self.wait_for_pipe(key)
            else:
                await board.changed(trio.current_time() + 1.0)

    async def wait_until_free(self, key: str) -> None:
        await self.hub.wait_for(lambda: self.hub.registry.snapshot(key) is None)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def tls_url(self) -> str:
        assert self.tls_port is not None, "this server has no HTTPS listener"
        return f"https://{self.host}:{self.tls_port}"


StartRelay = Callable[..., Awaitable[Relay]]


async def serving(nursery: trio.Nursery, **overrides: object) -> tuple[Relay, trio.Event]:
    """A server (Config `overrides` on 127.0.0.1, port 0) whose end is observable: the event is set
    when `serve` returns (after a drain, say)."""
    config = Config(hosts=("127.0.0.1",), port=0, **overrides)  # type: ignore[arg-type]
    hub = Hub(config)
    ended = trio.Event()

    async def run(*, task_status: trio.TaskStatus[list[Listener]]) -> None:
        await serve(config, hub=hub, task_status=task_status)
        ended.set()

    listeners = await nursery.start(run)
    relay = Relay(config=config, port=listeners[0].socket.getsockname()[1], hub=hub, listeners=listeners)
    return relay, ended


@dataclass
class Payload:
    path: Path
    sha256: str
    size: int


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class CurlResult:
    returncode: int
    stdout: bytes
    stderr: bytes
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 0


async def curl(*args: str, stdin: bytes | None = None, max_time: float = 60) -> CurlResult:
    """Run curl (silent, errors shown) and collect its output."""
    command = ["curl", "-sS", "--max-time", str(max_time), *args]
    result = await trio.run_process(
        command, stdin=stdin, capture_stdout=True, capture_stderr=True, check=False
    )
    return CurlResult(result.returncode, result.stdout, result.stderr)


async def curl_into(
    results: dict[str, CurlResult], name: str, *args: str, stdin: bytes | None = None
) -> None:
    """`curl(*args)` for a background task: the result lands in `results[name]`."""
    results[name] = await curl(*args, stdin=stdin)


def parse_head(raw: bytes) -> tuple[int, dict[str, str], list[tuple[str, str]]]:
    """Status, last-wins header dict (lower-case) and the ordered header list of a response head."""
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    pairs: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            break
        name, _, value = line.partition(":")
        pairs.append((name.strip().lower(), value.strip()))
    return status, dict(pairs), pairs


async def raw_exchange(relay: Relay, data: bytes, *, limit: int = 1 << 24) -> bytes:
    """Send raw bytes, half-close, and read everything until the server closes."""
    stream = await trio.open_tcp_stream(relay.host, relay.port)
    async with stream:
        await stream.send_all(data)
        chunks = []
        received = 0
        while received < limit:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
        return b"".join(chunks)


class RawClient:
    """A raw TCP client for timing-sensitive protocol tests (no HTTP library in between)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    @classmethod
    async def connect(
        cls,
        relay: Relay,
        *,
        rcvbuf: int | None = None,
        sndbuf: int | None = None,
        local: str | None = None,
    ) -> RawClient:
        """Connect to `relay`; SO_RCVBUF / SO_SNDBUF (if given) are set before connecting, so the
        kernel sizes the TCP window from them (and stops autotuning that buffer). `local` is the
        address to connect from (a loopback alias such as 127.0.0.2: another client)."""
        if rcvbuf is None and sndbuf is None:
            return cls(await trio.open_tcp_stream(relay.host, relay.port, local_address=local))
        sock = trio.socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, rcvbuf)
        if sndbuf is not None:
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_SNDBUF, sndbuf)
        try:
            if local is not None:
                await sock.bind((local, 0))
            await sock.connect((relay.host, relay.port))
        except BaseException:
            sock.close()
            raise
        return cls(trio.SocketStream(sock))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def reset(self) -> None:
        """Leave with a reset (SO_LINGER 0), not a FIN."""
        self.stream.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.stream.aclose()

    async def leave(self, how: str) -> None:
        """Leave with a FIN (`close`) or a reset (`reset`)."""
        await (self.reset() if how == "reset" else self.aclose())

    async def read_until(self, marker: bytes) -> bytes:
        """Read until `marker` appears; return everything up to and including it."""
        while marker not in self.buffer:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise EOFError(f"closed before {marker!r}; got {bytes(self.buffer)!r}")
            self.buffer += chunk
        end = self.buffer.index(marker) + len(marker)
        out = bytes(self.buffer[:end])
        del self.buffer[:end]
        return out

    async def read_some(self, limit: int) -> bytes:
        """At most `limit` bytes, as soon as there are any (EOFError if the server closed)."""
        if not self.buffer:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise EOFError("closed")
            self.buffer += chunk
        out = bytes(self.buffer[:limit])
        del self.buffer[:limit]
        return out

    async def read_exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise EOFError(f"closed after {len(self.buffer)} of {count} bytes")
            self.buffer += chunk
        out = bytes(self.buffer[:count])
        del self.buffer[:count]
        return out

    async def read_to_end(self) -> tuple[bytes, bool]:
        """Everything until the server closes; True if it closed cleanly, False on a reset."""
        while True:
            try:
                chunk = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return bytes(self.buffer), False
            if not chunk:
                return bytes(self.buffer), True
            self.buffer += chunk

    async def aclose(self) -> None:
        await self.stream.aclose()


async def sender_status(host: str, port: int, key: str, user: str, password: str) -> int:
    """The status of a sender's head over plain HTTP/1.1, with Basic credentials (200: let in,
    waiting for its receivers; or a refusal); then it hangs up."""
    token = b64encode(f"{user}:{password}".encode())
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        request = b"PUT %s HTTP/1.1\r\nHost: x\r\nAuthorization: Basic %s\r\nContent-Length: 1\r\n\r\n"
        await stream.send_all(request % (key.encode(), token))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(4096)
            assert chunk, head
            head += chunk
    return parse_head(head)[0]


async def read_payload(client: RawClient, count: int, *, chunked: bool) -> bytes:
    """`count` payload bytes of a response body, unframed if the body is chunked."""
    if not chunked:
        return await client.read_exactly(count)
    out = bytearray()
    while len(out) < count:
        size = int(await client.read_until(b"\r\n"), 16)
        assert size, "the body ended early"
        out += await client.read_exactly(size)
        assert await client.read_exactly(2) == b"\r\n"
    assert len(out) == count
    return bytes(out)


async def read_status_until(sender: RawClient, line: bytes) -> bytes:
    """Read the sender's chunked status stream until `line` has arrived; return all of it."""
    seen = bytearray()
    while line not in seen:
        size_line = await sender.read_until(b"\r\n")
        size = int(size_line.strip(), 16)
        if size == 0:
            raise AssertionError(f"status stream ended without {line!r}: {bytes(seen)!r}")
        seen += (await sender.read_exactly(size + 2))[:-2]
    return bytes(seen)


async def raw_pipe(
    relay: Relay,
    raw_clients: list[RawClient],
    key: str,
    n: int = 1,
    *,
    length: int | None = None,
    rcvbufs: Sequence[int | None] = (),
    sndbuf: int | None = None,
) -> tuple[RawClient, list[RawClient]]:
    """n raw receivers waiting on `key` (registered in list order, their response heads read), and a
    raw sender whose body is chunked, or `length` bytes long if given (each receiver's head says the
    same). `rcvbufs[i]` is receiver i's SO_RCVBUF, `sndbuf` the sender's SO_SNDBUF (None: default)."""
    receivers = [
        await RawClient.connect(relay, rcvbuf=rcvbufs[i] if i < len(rcvbufs) else None) for i in range(n)
    ]
    sender = await RawClient.connect(relay, sndbuf=sndbuf)
    raw_clients += [*receivers, sender]
    for index, receiver in enumerate(receivers):
        await receiver.send(b"GET %s?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (key.encode(), n))
        await relay.wait_for_pipe(key, receivers=index + 1)
    framing = b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
    await sender.send(b"PUT %s?n=%d HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n" % (key.encode(), n, framing))
    for receiver in receivers:
        status, headers, _ = parse_head(await receiver.read_until(b"\r\n\r\n"))
        assert status == 200
        if length is None:
            assert headers["transfer-encoding"] == "chunked"
        else:
            assert headers["content-length"] == str(length)
    return sender, receivers


@dataclass
class TlsFiles:
    ca: trustme.CA
    crt: Path
    key: Path
    ca_pem: Path

    def issue(self, ca: trustme.CA) -> None:
        """Replace the certificate and key on disk by ones from `ca` (as a renewal would)."""
        cert = ca.issue_cert("127.0.0.1", "localhost")
        for path, text in ((self.key, cert.private_key_pem.bytes()), (self.crt, _chain(cert))):
            new = path.with_suffix(".new")
            new.write_bytes(text)
            new.replace(path)

    def cli_flags(self) -> tuple[str, ...]:
        """The command line's HTTPS flags for these files, on a port the kernel picks."""
        return (
            "--enable-https",
            "--https-port",
            "0",
            "--crt-path",
            str(self.crt),
            "--key-path",
            str(self.key),
        )

    def overrides(self) -> dict[str, object]:
        return {"https_port": 0, "crt_path": str(self.crt), "key_path": str(self.key)}

    def client_context(self, ca: trustme.CA | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context()
        (ca or self.ca).configure_trust(context)
        return context


def _chain(cert: trustme.LeafCert) -> bytes:
    return b"".join(blob.bytes() for blob in cert.cert_chain_pems)


async def health(url: str) -> dict[str, object]:
    """A server's health document (under `--workers`, from whichever worker accepted)."""
    got = await curl(f"{url}/api/v1/pipe/health", max_time=10)
    document: dict[str, object] = json.loads(got.stdout)
    return document


async def worker_pids(url: str, count: int) -> dict[int, int]:
    """Each worker's pid by its index (asked until every worker has answered; the caller's deadline
    bounds it)."""
    pids: dict[int, int] = {}
    while len(pids) < count:
        document = await health(url)
        worker = document["worker"]
        assert isinstance(worker, dict)
        pids[int(worker["index"])] = int(str(document["pid"]))
    return pids
