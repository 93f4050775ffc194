# The parties of a pipe as users run them: curl processes, each on its own connection, through a proxy.
# Invariant: every curl has --max-time and every wait a deadline; received bytes are judged by sha256.
from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from tests.deploy.hosts import Host

CURL_MAX_TIME = 60
LOG_DEADLINE = 10.0


@dataclass
class Outcome:
    sender_code: str
    sender_said: str
    receiver_codes: list[str]
    receiver_digests: list[str]


async def _curl(*args: str) -> str:
    """curl's -w output; a non-zero exit fails the test with curl's own message."""
    done = await trio.run_process(
        ["curl", "-sS", "--max-time", str(CURL_MAX_TIME), *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 0, f"curl {' '.join(args)}: {done.stderr.decode(errors='replace')}"
    return str(done.stdout.decode())


async def transfer(sender_url: str, receiver_urls: Sequence[str], body: bytes, workdir: Path) -> Outcome:
    """`curl -T FILE sender_url` and `curl receiver_url` for each receiver, all started at once."""
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "body"
    source.write_bytes(body)
    said = workdir / "sender-said"
    codes: list[str] = ["" for _ in receiver_urls]
    sender_code = ""

    async def receive(i: int, url: str) -> None:
        codes[i] = await _curl("-o", str(workdir / f"received-{i}"), "-w", "%{http_code}", url)

    async def send() -> None:
        nonlocal sender_code
        sender_code = await _curl("-T", str(source), "-o", str(said), "-w", "%{http_code}", sender_url)

    async with trio.open_nursery() as nursery:
        for i, url in enumerate(receiver_urls):
            nursery.start_soon(receive, i, url)
        nursery.start_soon(send)
    digests = [
        hashlib.sha256((workdir / f"received-{i}").read_bytes()).hexdigest() for i in range(len(codes))
    ]
    return Outcome(sender_code, said.read_text(errors="replace"), codes, digests)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def served_by(hosts: Sequence[Host], key: str, seen_before: dict[str, int] | None = None) -> Host:
    """The one host whose log has one more completed transfer of `key` than `seen_before` says (the
    line follows the last byte by a moment: read until it is there, within LOG_DEADLINE)."""
    before = seen_before or {}
    with trio.fail_after(LOG_DEADLINE):
        while True:
            logged = [h for h in hosts if count_logged(h, key) > before.get(h.name, 0)]
            if logged:
                assert len(logged) == 1, f"{key} completed on {[h.name for h in logged]}"
                return logged[0]
            await trio.sleep(0.02)


def count_logged(host: Host, key: str) -> int:
    return sum(1 for logged_key, _, _ in host.transfers() if logged_key == key)


def curl_waiting(url: str, out: Path) -> subprocess.Popen[bytes]:
    """A receiver started outside any test's event loop (it outlives tests): curl with -w timing."""
    return subprocess.Popen(
        ["curl", "-sS", "--max-time", "200", "-o", str(out), "-w", "%{http_code} %{time_total}", url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
