# The soak run's end check: every path idle and usable again, health ok, descriptors back, a clean log.
# Invariant: it only reads the server (raw HTTP on loopback, /proc); every wait in it is bounded.
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import trio

from loadtests.soak_wire import Conn, parse_head


async def http(port: int, request: bytes) -> tuple[int, bytes]:
    conn = await Conn.open(port)
    try:
        await conn.send_all(request)
        head = await conn.read_head()
        body = bytearray()
        while data := await conn.recv():
            body += data
    finally:
        conn.close()
    return parse_head(head)[0], bytes(body)


async def progress_state(port: int, path: str) -> str:
    """The first `?progress` event of `path` says `idle`: the registry holds nothing there."""
    conn = await Conn.open(port)
    try:
        await conn.send_all(
            f"GET {path}?progress HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        await conn.read_head()
        start = await conn.read_until(b"data: ")
        end = await conn.read_until(b"\n", start)
        event = json.loads(bytes(conn.buf[start:end]))
        return str(event["state"])
    finally:
        conn.close()


async def fresh_transfer(port: int, path: str) -> bool:
    body = f"fresh {path}\n".encode()
    async with trio.open_nursery() as nursery:
        got: list[tuple[int, bytes]] = []

        async def receive() -> None:
            got.append(
                await http(port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            )

        nursery.start_soon(receive)
        await trio.sleep(0.01)
        put = f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        status, _ = await http(port, put.encode() + body)
    return status == 200 and got == [(200, body)]


def fd_links(pid: int) -> list[str]:
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # (closed meanwhile)
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return sorted(links)


def fd_count(pid: int) -> int:
    """The process's open sockets and pipes (files it opens once, like /dev/null, do not count)."""
    return sum(link.startswith(("socket:", "pipe:")) for link in fd_links(pid))


async def end_check(port: int, pid: int, paths: list[str], fds_before: int, log: Path) -> list[str]:
    """What is wrong with a server after the run ([] if nothing)."""
    problems: list[str] = []
    with trio.move_on_after(10):  # (before the ?progress probes below: each holds a descriptor a while)
        while fd_count(pid) > fds_before:  # noqa: ASYNC110 (another process: nothing to wait on)
            await trio.sleep(0.1)
    if fd_count(pid) > fds_before:
        problems.append(f"open descriptors: {fd_count(pid)}, {fds_before} before the run: {fd_links(pid)}")
    limiter = trio.CapacityLimiter(16)

    async def check(path: str) -> None:
        async with limiter:
            state = ""
            with trio.move_on_after(10):
                while (state := await progress_state(port, path)) != "idle":  # noqa: ASYNC110 (polls a server)
                    await trio.sleep(0.2)  # an aborted transfer may still be closing
                if not await fresh_transfer(port, path):
                    problems.append(f"{path}: a fresh transfer failed")
                return
            problems.append(f"{path}: still {state} 10 s after the run")

    async with trio.open_nursery() as nursery:
        for path in paths:
            nursery.start_soon(check, path)
    status, body = await http(
        port, b"GET /api/v1/pipe/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    if status != 200 or json.loads(body)["status"] != "ok":
        problems.append(f"health: {status} {body[:200]!r}")
    text = await trio.Path(log).read_text(errors="replace")
    if "Traceback" in text or "internal error" in text:
        problems.append(f"server log has an internal error: {text[-500:]}")
    return problems
