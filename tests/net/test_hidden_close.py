# A curl sender killed with Ctrl-C while it waits, on every front end: the path is free for its rerun.
# Invariant: each case first shows the killed sender's close hidden from the server (HTTP/1.1 and TLS).
"""curl killed while it waits has read every status line, so its kernel closes with a FIN, queued
behind the megabytes of body our full receive window holds back: no hang-up reaches us. Its kernel
resets at the next byte we send it, so a sender or a receiver arriving for the path has the waiting
sender checked (a status line, then its answer) and a gone one replaced. Over HTTP/2 the connection's
frames are read while a party waits, so the close is seen at once; the cases hold there too."""

from __future__ import annotations

import hashlib
import signal
from pathlib import Path

import pytest
import trio

from pipe_relay.net.connection import HttpConnection
from pipe_relay.net.liveness import unread
from tests.clients import CurlResult, Relay, StartRelay, TlsFiles, curl, curl_into

SIZE = 5_000_000
HELD_BACK = 64 * 1024
"""Body bytes waiting unread in the server's socket: the killed curl's FIN is queued behind more."""
FRONT_ENDS = ["http/1.1", "https/1.1", "h2", "h2c"]


@pytest.fixture
def engine() -> str:
    """(The check is the hub's and the links', not an engine's: one engine is enough.)"""
    return "buffer"


@pytest.fixture
def upload(tmp_path: Path) -> Path:
    path = tmp_path / "upload.bin"
    path.write_bytes(hashlib.shake_256(b"hidden close").digest(SIZE))
    return path


class Front:
    """One front end: its base URL and curl's flags for it."""

    def __init__(self, name: str, relay: Relay, tls: TlsFiles) -> None:
        self.name = name
        secure = name in ("https/1.1", "h2")
        self.base = relay.tls_url if secure else relay.url
        self.flags: list[str] = ["--cacert", str(tls.ca_pem)] if secure else []
        self.flags += {"http/1.1": ["--http1.1"], "https/1.1": ["--http1.1"], "h2": [], "h2c": []}[name]
        if name == "h2c":
            self.flags.append("--http2-prior-knowledge")

    def curl_args(self, *args: str) -> list[str]:
        return [*self.flags, *args]


@pytest.fixture(params=FRONT_ENDS)
async def front(request: pytest.FixtureRequest, start_relay: StartRelay, tls_files: TlsFiles) -> Front:
    relay = await start_relay(**tls_files.overrides())
    front = Front(str(request.param), relay, tls_files)
    front.relay = relay  # type: ignore[attr-defined]
    return front


def _relay(front: Front) -> Relay:
    relay: Relay = front.relay  # type: ignore[attr-defined]
    return relay


async def _kill_waiting_sender(front: Front, upload: Path, target: str, waits_for: bytes) -> object:
    """Start `curl -T upload`, wait until it waits (its line read, its window full), Ctrl-C it."""
    relay = _relay(front)
    key = target.split("?")[0]
    command = [
        "env",
        "--default-signal=INT",
        "curl",
        "-sS",
        "--no-buffer",
        *front.curl_args("-T", str(upload)),
    ]
    process = await trio.lowlevel.open_process([*command, front.base + target], stdout=-1, stderr=-1)
    assert process.stdout is not None
    seen = b""
    while waits_for not in seen:
        chunk = await process.stdout.receive_some()
        assert chunk, f"curl ended before {waits_for!r}: {seen!r}"
        seen += chunk
    sender = relay.hub.registry.pending_sender(key)
    assert sender is not None
    link = sender.link
    if isinstance(link, HttpConnection):  # the hidden-close case: body bytes wait here unread
        await _window_full(link)
    process.send_signal(signal.SIGINT)
    assert await process.wait() != 0
    if isinstance(link, HttpConnection):
        assert not link.peer_closed(), "the killed curl's close reached the server: nothing hidden"
    return sender


def _client_send_queue(link: HttpConnection) -> int:
    """The bytes curl's kernel holds unsent or unacknowledged (/proc/net/tcp's tx_queue of the
    client's socket: the server's peer address is its local one); -1 when not found."""
    port = link.sock.getpeername()[1]
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rpartition(":")[2], 16) == port and fields[3] == "01":  # (ESTABLISHED)
                return int(fields[4].partition(":")[0], 16)
    return -1


async def _window_full(link: HttpConnection) -> None:
    """Wait until our receive window is closed: HELD_BACK unread here, no byte more arriving for
    20 ms while curl's kernel still holds bytes to send. Only then is a FIN queued behind them (with
    room left in the window, the kernel sends the rest and its FIN at once)."""
    before = -1
    while True:
        now = unread(link.fd)
        if now >= HELD_BACK and now == before and _client_send_queue(link) > 0:
            return
        before = now
        await trio.sleep(0.02)


async def _replaced(relay: Relay, key: str, killed: object) -> None:
    """Wait until another sender than the killed one waits on `key`."""
    await relay.hub.wait_for(lambda: relay.hub.registry.pending_sender(key) not in (None, killed))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _completed(result: CurlResult) -> None:
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines()[-1] == "[INFO] Transfer complete.", result.stdout


async def test_a_rerun_takes_the_path_of_a_sender_killed_while_waiting(front: Front, upload: Path) -> None:
    """The user's case: Ctrl-C on a waiting `curl -T`, the same command again at once."""
    relay = _relay(front)
    with trio.fail_after(20):
        killed = await _kill_waiting_sender(front, upload, "/rerun", b"Waiting")
        got: dict[str, CurlResult] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                curl_into, got, "s", *front.curl_args("-T", str(upload), front.base + "/rerun")
            )
            await _replaced(relay, "/rerun", killed)
            got["r"] = await curl(*front.curl_args(front.base + "/rerun"))
    _completed(got["s"])
    assert got["r"].returncode == 0, got["r"].stderr
    assert _sha256(got["r"].stdout) == _sha256(upload.read_bytes())


async def test_a_receiver_waits_on_past_a_sender_killed_while_waiting(front: Front, upload: Path) -> None:
    """A receiver that comes to the killed sender's path gets none of its bytes and no error: it
    waits, and the rerun's body reaches it whole."""
    relay = _relay(front)
    with trio.fail_after(20):
        await _kill_waiting_sender(front, upload, "/stays", b"Waiting")
        got: dict[str, CurlResult] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(curl_into, got, "r", *front.curl_args(front.base + "/stays"))
            await relay.wait_for_pipe("/stays", sender=False, receivers=1)
            got["s"] = await curl(*front.curl_args("-T", str(upload), front.base + "/stays"))
    _completed(got["s"])
    assert got["r"].returncode == 0, got["r"].stderr
    assert _sha256(got["r"].stdout) == _sha256(upload.read_bytes())


async def test_a_sender_killed_while_its_receivers_are_matched_is_replaced(
    front: Front, upload: Path
) -> None:
    """n=3: one receiver came (the sender read `1 of 3`), the sender is killed, the rerun takes the
    path and all three receivers get every byte."""
    relay = _relay(front)
    url = front.base + "/three?n=3"
    with trio.fail_after(30):
        got: dict[str, CurlResult] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(curl_into, got, "r0", *front.curl_args(url))
            await relay.wait_for_pipe("/three", receivers=1)
            killed = await _kill_waiting_sender(front, upload, "/three?n=3", b"1 of 3")
            nursery.start_soon(curl_into, got, "s", *front.curl_args("-T", str(upload), url))
            await _replaced(relay, "/three", killed)
            nursery.start_soon(curl_into, got, "r1", *front.curl_args(url))
            nursery.start_soon(curl_into, got, "r2", *front.curl_args(url))
    _completed(got["s"])
    digest = _sha256(upload.read_bytes())
    for name in ("r0", "r1", "r2"):
        assert got[name].returncode == 0, got[name].stderr
        assert _sha256(got[name].stdout) == digest, name
