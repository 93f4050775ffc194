# The soak run's parties: raw-socket and curl senders and receivers that verify every byte and can be
# killed (FIN, RST, SIGKILL) at a planned moment. Invariant: each party reports what it saw, never guesses.
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trio

from loadtests.soak_wire import (
    HOST,
    RECV_SIZE,
    Checker,
    Conn,
    Dechunker,
    Pattern,
    collect,
    first_of,
    open_curl,
    parse_head,
)


@dataclass
class Kill:
    when: str  # "waiting": `at` seconds after the head, if not yet met; "streaming": at `at` of the body
    how: str  # "fin", "rst" (raw sockets) or "sigkill" (curl)
    at: float


@dataclass
class Party:
    role: str  # "sender" or "receiver"
    kind: str  # sender: raw-length, raw-chunked, curl-file, curl-chunked; receiver: raw, curl
    delay: float  # seconds after the transfer's start
    kill: Kill | None = None
    eager: bool = True  # raw sender: body at once (True) or after "[INFO] Streaming" (False)
    replacement: bool = False


@dataclass
class Outcome:
    party: Party
    killed: str | None = None  # "waiting" or "streaming" when the kill was carried out
    met: bool = False  # the pipe was established for this party (response head / Streaming line)
    clean: bool = False  # receiver: body looked complete; sender: "[INFO] Transfer complete." + clean end
    bytes: int = 0
    correct: bool = False  # receiver: exactly the sender's bytes
    finished: bool | None = None  # sender: every body byte (and terminator) handed over; None unknown
    status: int | None = None
    note: str = ""
    done: bool = False
    signal: trio.Event | None = None  # set when the party sees its pipe meet

    @property
    def meeting(self) -> bool:
        """Met, as far as the party can tell so far (read while it runs)."""
        return self.met or (self.signal is not None and self.signal.is_set())


@dataclass
class Target:
    """Where and what one transfer sends: the parties of a transfer share it."""

    port: int
    path: str
    n: int
    size: int
    shift: int
    pattern: Pattern
    workdir: Path
    max_time: float

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{self.path}?n={self.n}"

    def request(self, method: str, framing: str = "") -> bytes:
        head = f"{method} {self.path}?n={self.n} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n{framing}"
        return (head + "Connection: close\r\n\r\n").encode()


STREAMING = b"[INFO] Streaming to "
COMPLETE = b"[INFO] Transfer complete.\n"


async def run_party(target: Target, out: Outcome) -> None:
    """Run `out.party` against `target`, filling `out` as it goes (the watchdog reads `met`)."""
    kind = out.party.kind
    try:
        if kind == "raw":
            await raw_receiver(target, out)
        elif kind == "curl":
            await curl_receiver(target, out)
        elif kind.startswith("raw-"):
            await raw_sender(target, out)
        else:
            await curl_sender(target, out)
    except* (OSError, EOFError, ValueError) as group:
        exc = group.exceptions[0]
        out.note = out.note or f"{type(exc).__name__}: {exc}"
    finally:
        out.done = True


async def _wait_or_kill(kill: Kill | None, met: trio.Event, pending: object = None) -> bool:
    """For a waiting kill: wait `kill.at` for the pipe to meet; True if the party must be killed now."""
    if kill is None or kill.when != "waiting":
        return False
    with trio.move_on_after(kill.at):
        await met.wait()
    return not met.is_set() and not (callable(pending) and pending())


def _end(conn: Conn, out: Outcome, ended: bool) -> None:
    """Close a party's socket unless a kill did; a party cut short (a stuck one cancelled, an early
    return) is reset, so the server sees it go even when a FIN would wait behind a full window."""
    if out.killed is not None:
        return
    if ended:
        conn.close()
    else:
        conn.kill("rst")


async def raw_receiver(target: Target, out: Outcome) -> None:
    conn = await Conn.open(target.port)
    kill = out.party.kill
    ended = False
    try:
        await conn.send_all(target.request("GET"))
        head_seen = out.signal = trio.Event()
        head = b""
        async with trio.open_nursery() as nursery:

            async def read_head() -> None:
                nonlocal head
                head = await conn.read_head()
                head_seen.set()

            nursery.start_soon(read_head)
            if await _wait_or_kill(kill, head_seen, conn.pending):
                nursery.cancel_scope.cancel()
                assert kill is not None
                conn.kill(kill.how)
                out.killed = "waiting"
                return
            await head_seen.wait()
        out.met = True
        out.status, headers = parse_head(head)
        if out.status != 200:
            out.note = f"status {out.status}"
            return
        chunked = headers.get("transfer-encoding") == "chunked"
        length = None if chunked else int(headers["content-length"])
        checker = Checker(target.pattern, target.shift, target.size)
        dechunker = Dechunker()
        stop_at = int(kill.at * target.size) if kill and kill.when == "streaming" else None
        while True:
            if (chunked and dechunker.done) or (length is not None and checker.pos >= length):
                out.clean = True
                break
            if stop_at is not None and checker.pos >= stop_at:
                assert kill is not None
                conn.kill(kill.how)
                out.killed = "streaming"
                break
            try:
                data = await conn.recv()
            except ConnectionResetError:
                out.note = "reset"
                break
            if not data:
                out.note = "closed"
                break
            for piece in dechunker.feed(data) if chunked else [data]:
                checker.feed(piece)
        out.bytes, out.correct = checker.pos, checker.correct
        ended = True
    finally:
        _end(conn, out, ended)


async def curl_receiver(target: Target, out: Outcome) -> None:
    kill = out.party.kill
    command = ["curl", "-sSN", "--fail", "--max-time", f"{target.max_time:g}", "-D", "/dev/stderr"]
    process = await open_curl([*command, "-o", "-", target.url])
    checker = Checker(target.pattern, target.shift, target.size)
    head_seen = out.signal = trio.Event()
    stderr = bytearray()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, process.stderr, stderr, b"\r\n\r\n", head_seen)
            if await _wait_or_kill(kill, head_seen):
                process.kill()
                out.killed = "waiting"
            else:
                stop_at = int(kill.at * target.size) if kill and kill.when == "streaming" else None
                assert process.stdout is not None
                while True:
                    if stop_at is not None and checker.pos >= stop_at and checker.pos < target.size:
                        process.kill()
                        out.killed = "streaming" if head_seen.is_set() else "waiting"
                        break
                    data = await process.stdout.receive_some(RECV_SIZE)
                    if not data:
                        break
                    checker.feed(data)
            code = await process.wait()
        out.met = head_seen.is_set()
        if out.killed is None:
            out.clean = code == 0
            out.note = "" if out.clean else f"curl exit {code}: {bytes(stderr[-200:])!r}"
        out.bytes, out.correct = checker.pos, checker.correct
    finally:
        await _reap(process)


async def _status_stream(conn: Conn, text: bytearray, streaming: trio.Event, ended: list[bool]) -> None:
    """A sender's response: head, then its chunked status lines to the end (`ended[0]`: cleanly)."""
    head = await conn.read_head()
    status, _ = parse_head(head)
    if status != 200:
        text += head
        return
    dechunker = Dechunker()
    while not dechunker.done:
        try:
            data = await conn.recv()
        except OSError:
            return
        if not data:
            return
        for piece in dechunker.feed(data):
            text += piece
        if STREAMING in text:
            streaming.set()
    ended[0] = True


async def raw_sender(target: Target, out: Outcome) -> None:
    party, kill = out.party, out.party.kill
    chunked = party.kind == "raw-chunked"
    framing = "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {target.size}\r\n"
    conn = await Conn.open(target.port)
    text = bytearray()
    streaming, ended = trio.Event(), [False]
    out.signal = streaming
    stop_at = int(kill.at * target.size) if kill and kill.when == "streaming" else None
    sent = 0
    finished_ok = False

    async def send_body() -> None:
        try:
            await _send_body()
        except OSError as exc:
            out.note = f"{type(exc).__name__} while sending"

    async def _send_body() -> None:
        nonlocal sent
        if not party.eager:
            await streaming.wait()
        step = 1 + (target.shift % (256 * 1024))  # chunk sizes vary from transfer to transfer
        while sent < target.size:
            limit = min(step, target.size - sent)
            if stop_at is not None:
                limit = min(limit, max(stop_at - sent, 0))
                if limit == 0:
                    return
            piece = target.pattern.piece(target.shift, sent, limit)
            if chunked:
                await conn.send_all(b"%x\r\n" % len(piece) + bytes(piece) + b"\r\n")
            else:
                await conn.send_all(piece)
            sent += len(piece)
        if not chunked:
            out.finished = True  # every byte of a Content-Length body is out
        if stop_at is not None:  # killed at the whole body: a chunked sender before its terminator
            return
        if chunked:
            await conn.send_all(b"0\r\n\r\n")
        out.finished = True

    try:
        await conn.send_all(target.request("PUT", framing))
        out.finished = False
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_status_stream, conn, text, streaming, ended)
            body_done = trio.Event()

            async def body() -> None:
                await send_body()
                body_done.set()

            nursery.start_soon(body)
            if await _wait_or_kill(kill, streaming):
                nursery.cancel_scope.cancel()
                assert kill is not None
                conn.kill(kill.how)
                out.killed = "waiting"
                return
            await body_done.wait()
            if not out.finished:  # a planned kill in the body (or the body could not be sent)
                if kill is None or kill.when != "streaming":
                    nursery.cancel_scope.cancel()
                    return
                if kill.how == "fin":  # a FIN behind a full window would not reach a waiting server
                    await streaming.wait()
                nursery.cancel_scope.cancel()
                conn.kill(kill.how)
                out.killed = "streaming" if streaming.is_set() else "waiting"
                return
        out.met = streaming.is_set()
        out.clean = ended[0] and text.endswith(COMPLETE)
        out.note = "" if out.clean else f"status: {bytes(text[-120:])!r}"
        finished_ok = True
    finally:
        out.met = out.met or streaming.is_set()
        out.bytes = sent
        _end(conn, out, finished_ok)


async def curl_sender(target: Target, out: Outcome) -> None:
    party, kill = out.party, out.party.kill
    command = ["curl", "-sSN", "--max-time", f"{target.max_time:g}"]
    path = target.workdir / f"{target.path.strip('/')}.bin"
    if party.kind == "curl-file":
        await trio.to_thread.run_sync(target.pattern.write_file, path, target.shift, target.size)
        process = await open_curl([*command, "-T", str(path), target.url])
    else:
        process = await open_curl([*command, "-T", "-", target.url], stdin=True)
    stdout, stderr = bytearray(), bytearray()
    streaming, unused, exited = trio.Event(), trio.Event(), trio.Event()
    out.signal = streaming
    out.finished = None if party.kind == "curl-file" else False
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, process.stdout, stdout, STREAMING, streaming)
            nursery.start_soon(collect, process.stderr, stderr, b"\0", unused)
            fed = trio.Event()

            async def feed() -> None:
                stop_at = int(kill.at * target.size) if kill and kill.when == "streaming" else None
                if process.stdin is not None:
                    pos = 0
                    try:
                        while pos < target.size and (stop_at is None or pos < stop_at):
                            limit = target.size - pos if stop_at is None else stop_at - pos
                            piece = target.pattern.piece(target.shift, pos, min(limit, 1 << 20))
                            await process.stdin.send_all(piece)
                            pos += len(piece)
                        if stop_at is None:
                            await process.stdin.aclose()
                            out.finished = True
                    except trio.BrokenResourceError:
                        pass
                    out.bytes = pos
                elif kill and kill.when == "streaming":  # curl -T file: a moment into the stream
                    await first_of(streaming, exited)
                    await trio.sleep(kill.at * (0.01 + target.size / 400e6))
                fed.set()

            async def wait_exit() -> None:
                await process.wait()
                exited.set()

            nursery.start_soon(wait_exit)
            nursery.start_soon(feed)
            if await _wait_or_kill(kill, streaming):
                out.killed = "waiting"
            else:
                await first_of(fed, exited)
                if kill and kill.when == "streaming" and process.returncode is None:
                    out.killed = "streaming" if streaming.is_set() else "waiting"
            if out.killed:
                process.kill()
            code = await process.wait()
        out.met = streaming.is_set()
        if out.killed is None:
            out.clean = code == 0 and stdout.endswith(COMPLETE)
            out.note = "" if out.clean else f"curl exit {code}: {bytes(stderr[-200:] or stdout[-120:])!r}"
    finally:
        await _reap(process)
        path.unlink(missing_ok=True)


async def _reap(process: trio.Process) -> None:
    """Kill a curl that still runs and wait for it, even when the party is being cancelled (the
    watchdog ends a stuck transfer): an unshielded wait was cancelled at once and left the process
    running and its pipes open (a ResourceWarning, which fails the test run)."""
    if process.returncode is None:
        process.kill()
    with trio.CancelScope(shield=True), trio.move_on_after(10):
        await process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                await stream.aclose()
