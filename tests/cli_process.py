# The server as a process: `python -m pipe_relay` of this checkout, its start-up lines, its stop.
# Invariant: each read waits on the process's own output (no sleeps); a server that exits early fails it.
from __future__ import annotations

import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[1]
"""The checkout: `python -m pipe_relay` run from here serves this checkout's code."""


async def open_cli(*args: str, prefix: tuple[str, ...] = ()) -> trio.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [*prefix, sys.executable, "-m", "pipe_relay", *args]
    return await trio.lowlevel.open_process(command, stdout=-1, stderr=-1, cwd=ROOT, env=env)


async def startup_lines(process: trio.Process, count: int) -> list[str]:
    """The first `count` lines the server prints (its start-up lines), read one byte at a time: what
    follows them stays in the pipe for `rest_of_output`."""
    assert process.stdout is not None
    data = b""
    while data.count(b"\n") < count:
        chunk = await process.stdout.receive_some(1)
        assert chunk, f"the server exited after printing {data!r}"
        data += chunk
    return data.decode().splitlines()


def listening_urls(lines: list[str]) -> tuple[str, str]:
    """The plain listener's URL and the HTTPS one's ("" without one), as the start-up lines name them."""
    urls = [m.group(1) for line in lines if (m := re.search(r"listening on (\S+)", line))]
    return next(u for u in urls if u.startswith("http:")), next(
        (u for u in urls if u.startswith("https:")), ""
    )


async def rest_of_output(process: trio.Process) -> str:
    """What the server prints on stdout from here to its exit."""
    assert process.stdout is not None
    data = b""
    while chunk := await process.stdout.receive_some(4096):
        data += chunk
    return data.decode()


async def stop_cli(process: trio.Process) -> int:
    process.terminate()
    return await process.wait()


@asynccontextmanager
async def cli_server(*flags: str) -> AsyncIterator[tuple[trio.Process, str]]:
    """`python -m pipe_relay FLAGS` as a user starts it: the process and its first start-up line
    (`pipe-relay X listening on URL`), once it listens. Killed after, if still running."""
    process = await open_cli(*flags)
    try:
        line = (await startup_lines(process, 1))[0]
        yield process, line
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
