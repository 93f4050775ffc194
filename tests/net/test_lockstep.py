# Lockstep end to end: a stalled or a rate-limited receiver paces the sender and the other receivers.
# Invariant: the server holds about one step per transfer: it never races ahead of its slowest live receiver.
from __future__ import annotations

import hashlib
import socket
import tracemalloc
from functools import partial
from pathlib import Path

import pytest
import trio

from pipe_relay import Config
from tests.clients import CurlResult, RawClient, Relay, curl, raw_pipe, read_status_until
from tests.lockstep_parties import (
    BODY_SIZE,
    COMPLETE,
    SENDER_SNDBUF,
    STALLED_RCVBUF,
    Body,
    MiB,
    Reader,
    Sender,
    random_body,
    streaming_lines,
)

RESUMED_RCVBUF = 4 * MiB
"""A stalled receiver's SO_RCVBUF once it reads again (STALLED_RCVBUF before): the window opens,
so the rest of the body comes fast."""
QUIET = 0.5
"""A receiver that got no byte for this long is stuck (behind the stalled one)."""
STEP = Config().buffer_size


def _sysctl_max(name: str) -> int:
    """The ceiling of a TCP buffer the kernel autotunes (`tcp_wmem` / `tcp_rmem`, third field)."""
    return int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2])


# How far the fastest receiver may get ahead of a stalled one, which has read nothing past the
# head: the step the server is writing (which fast receivers have whole), plus what the kernel
# holds for the stalled one: the server's send buffer to it (the server leaves SO_SNDBUF alone,
# so the kernel grows it to its tcp_wmem ceiling: 4 MiB here, ss shows tb4194304 and ~2.8 MiB of
# payload in it) and its own 8 KiB receive buffer; 1 MiB more for heads, chunk lines and
# segments in flight. 6 MiB on this kernel; seen: 3.0-3.6 MiB. A server that kept a backlog for a
# slow receiver instead would hand the fast ones the whole 64 MiB body.
LEAD_BOUND = STEP + _sysctl_max("tcp_wmem") + 2 * STALLED_RCVBUF + MiB
# What the sender's socket may have taken: what the server read (at most LEAD_BOUND + one step),
# plus the server's receive buffer for it, which the kernel autotunes up to its tcp_rmem ceiling
# (32 MiB here; ss showed rb33554432 with up to 19 MiB queued in it), plus the sender's own send
# buffer (SO_SNDBUF 64 KiB, doubled). ~39 MiB here, below the 64 MiB body; seen: 3.9-22 MiB.
TAKEN_BOUND = LEAD_BOUND + STEP + _sysctl_max("tcp_rmem") + 2 * SENDER_SNDBUF
MEMORY_BOUND = 16 * MiB
"""Growth of the process (RSS) and of its Python heap while the transfer is stuck."""


@pytest.fixture(scope="module")
def body() -> Body:
    return random_body()


def rss() -> int:
    """This process's resident set in bytes (the server runs in it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class HeapWatch:
    """Python memory allocated inside the block and still held (tracemalloc): unlike RSS, it does
    not hide a backlog in heap pages that glibc kept from an earlier test."""

    def __enter__(self) -> HeapWatch:
        self.own = not tracemalloc.is_tracing()
        if self.own:
            tracemalloc.start()
        self.baseline = tracemalloc.get_traced_memory()[0]
        return self

    def held(self) -> int:
        return tracemalloc.get_traced_memory()[0] - self.baseline

    def __exit__(self, *exc: object) -> None:
        if self.own:
            tracemalloc.stop()


async def wait_until_quiet(readers: list[Reader], quiet: float) -> None:
    """Until every reader has bytes and none got more for `quiet` seconds."""
    while True:
        await trio.sleep(0.05)  # polling the readers' progress; bounded by the test's fail_after
        now = trio.current_time()
        if all(r.got for r in readers) and now - max(r.moved_at for r in readers) >= quiet:
            return


# Under the splice engine a chunked body goes through the buffer engine; a Content-Length one is
# spliced, the stalled receiver reading a tee'd pipe (first of two) or the source pipe (last).
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(("n", "stalled"), [(2, 0), (3, 2)], ids=["n2-first-stalls", "n3-last-stalls"])
async def test_stalled_receiver_paces_the_sender(
    relay: Relay, raw_clients: list[RawClient], body: Body, chunked: bool, n: int, stalled: int
) -> None:
    """One receiver reads its head and stops: the others get no further than one step plus its
    socket buffers, the server reads no further from the sender, its memory stays flat; once it
    reads again, everyone gets every byte."""
    key = f"/lockstep-{n}-{int(chunked)}"
    rcvbufs = [STALLED_RCVBUF if i == stalled else None for i in range(n)]
    with trio.fail_after(30):
        client, clients = await raw_pipe(
            relay,
            raw_clients,
            key,
            n,
            length=None if chunked else BODY_SIZE,
            rcvbufs=rcvbufs,
            sndbuf=SENDER_SNDBUF,
        )
        await client.read_until(b"\r\n\r\n")
        sender = Sender(client)
        readers = [Reader(c) for c in clients]
        fast = [r for i, r in enumerate(readers) if i != stalled]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(sender.send_body, body.data, chunked=chunked))
            for reader in fast:
                nursery.start_soon(partial(reader.read_body, BODY_SIZE, chunked=chunked))
            baseline = rss()
            with HeapWatch() as heap:  # the tasks start at the next checkpoint: in here
                await wait_until_quiet(fast, QUIET)
                grown, held = rss() - baseline, heap.held()
            lead = max(r.got for r in fast)  # the stalled receiver has read nothing past its head
            behind = min(r.got for r in fast)
            read = sender.server_read(relay)
            taken = sender.sent
            print(
                f"lead {lead / MiB:.2f} MiB (bound {LEAD_BOUND / MiB:.2f}), server read {read / MiB:.2f}, "
                f"taken {taken / MiB:.2f} (bound {TAKEN_BOUND / MiB:.2f}), rss +{grown / MiB:.2f} MiB, "
                f"heap +{held / MiB:.2f} MiB"
            )
            assert lead <= LEAD_BOUND
            # it holds at most the one step it is writing (chunk lines count in `read`, not in `got`),
            # plus slack for what /proc and TCP_INFO report a moment apart (seen: 128 KiB once, on a
            # loaded machine; an unbounded backlog is 60 MiB here)
            assert behind <= read <= behind + STEP + STEP // 4
            assert taken <= TAKEN_BOUND
            assert grown <= MEMORY_BOUND
            assert held <= MEMORY_BOUND
            clients[stalled].stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RESUMED_RCVBUF)
            nursery.start_soon(partial(readers[stalled].read_body, BODY_SIZE, chunked=chunked))
        status = await read_status_until(client, COMPLETE)
        assert await client.read_to_end() == (b"0\r\n\r\n", True)
    assert [r.digest.hexdigest() for r in readers] == [body.sha256] * n
    assert status == streaming_lines(n) + COMPLETE


# curl --limit-rate is an average over seconds, read in bursts: a probe (a raw server writing as
# fast as curl 7.88 takes it) saw `--limit-rate 16M` take 6 MiB in its first 50 ms, then about
# 19 MiB/s; at 1M-4M it took 7-10 MiB at once and then slept for seconds. A high rate and a body
# well above those bursts keep its pacing visible in 2 s: here the fast curl ends at 1.3-1.8 s
# and the slow one at 1.85-1.9 s; a server with a backlog per receiver ends the fast one at 0.15 s.
SLOW_SIZE = 32 * MiB
SLOW_RATE = 16 * MiB
"""Bytes per second for the slow curl: the 32 MiB take it 2 s."""


@pytest.fixture(scope="module")
def slow_file(body: Body, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Body]:
    part = body.prefix(SLOW_SIZE)
    path = tmp_path_factory.mktemp("lockstep") / "slow.bin"
    path.write_bytes(part.data)
    return path, part


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_rate_limited_curl_receiver_paces_the_other(
    relay: Relay, slow_file: tuple[Path, Body], chunked: bool
) -> None:
    """Two curl receivers, one of them `--limit-rate`: both get every byte, and the fast one cannot
    finish before the slow one has all but LEAD_BOUND of the body (it waits for it, lockstep)."""
    path, part = slow_file
    key = f"/paced-{int(chunked)}"
    url = f"{relay.url}{key}?n=2"
    got: dict[str, CurlResult] = {}
    done: dict[str, float] = {}
    sent: list[CurlResult] = []

    async def receive(name: str, *args: str) -> None:
        got[name] = await curl(*args, url)
        done[name] = trio.current_time()

    async def send() -> None:
        args = ("-T", "-") if chunked else ("-T", str(path))
        sent.append(await curl(*args, url, stdin=part.data if chunked else None))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            # The slow receiver comes last, so the transfer starts as it connects: curl averages
            # its rate from its own start, and time spent waiting would be credit for a burst.
            nursery.start_soon(send)
            await relay.wait_for_pipe(key, sender=True)
            nursery.start_soon(receive, "fast")
            await relay.wait_for_pipe(key, sender=True, receivers=1)
            start = trio.current_time()
            nursery.start_soon(receive, "slow", "--limit-rate", str(SLOW_RATE))
    fast, slow = done["fast"] - start, done["slow"] - start
    for name in ("fast", "slow"):
        assert got[name].returncode == 0, got[name].stderr
        assert hashlib.sha256(got[name].stdout).hexdigest() == part.sha256
    assert sent[0].returncode == 0
    assert sent[0].stdout == b"[INFO] Waiting for 2 receiver(s) to connect...\n" + (
        b"[INFO] 1 of 2 receiver(s) connected.\n" + streaming_lines(2) + COMPLETE
    )
    nominal = SLOW_SIZE / SLOW_RATE
    # half of nominal: curl's limiter runs ahead of its rate in bursts (above)
    assert 0.5 * nominal <= slow <= 3 * nominal + 2, f"curl --limit-rate took {slow:.2f} s"
    assert 0.5 * (SLOW_SIZE - LEAD_BOUND) / SLOW_RATE <= fast <= slow + 1, (
        f"fast {fast:.2f} s, slow {slow:.2f} s"
    )
