# deploy/haproxy.cfg and deploy/nginx.conf in front of three pipe-relay hosts in namespaces, for real.
# Invariant: every party of a pipe meets on one host whichever proxy and form of the path it used.
from __future__ import annotations

import os
import random
import signal
import socket
from collections import Counter
from functools import partial

import httpx
import pytest
import trio

from tests.deploy.conftest import LONG_WAIT, Cluster
from tests.deploy.hosts import HOST_PORT, Host
from tests.deploy.parties import Outcome, count_logged, served_by, sha256, transfer
from tests.deploy.proxies import Proxy

TRANSFERS = 40
AT_ONCE = 8  # (parties from one client address: within --client-max-pending and --client-max-active)
SETUPS = ["haproxy", "nginx", "two-haproxies"]


def _proxies(cluster: Cluster, setup: str) -> list[Proxy]:
    return {
        "haproxy": [cluster.haproxy_a],
        "nginx": [cluster.nginx],
        "two-haproxies": [cluster.haproxy_a, cluster.haproxy_b],
    }[setup]


def _log_sizes(proxies: list[Proxy]) -> dict[str, int]:
    return {proxy.name: proxy.log.stat().st_size for proxy in proxies}


def _said_since(proxies: list[Proxy], sizes: dict[str, int]) -> dict[str, bytes]:
    """What each proxy printed since `_log_sizes` (HAProxy prints each server that goes DOWN or UP)."""
    return {proxy.name: proxy.log.read_bytes()[sizes[proxy.name] :] for proxy in proxies}


def _spared_host(cluster: Cluster) -> Host:
    """A running host that no long-waiting receiver of the cluster is on (a test may stop or drain it)."""
    spared = {waiting.host.name for waiting in cluster.waiting}
    return next(h for h in cluster.hosts if h.name not in spared and h.process.poll() is None)


def _spellings(name: str) -> list[str]:
    """Paths that pipe-relay takes as one pipe key (`/NAME`, NAME with `-` and `~`): the API prefix,
    escapes in either case, escaped unreserved characters; a query is never part of the key."""
    return [
        f"/{name}",
        f"/api/v1/pipe/{name}",
        "/" + name.replace("-", "%2d").replace("~", "%7E"),
        f"/api/v1/pipe/%{ord(name[0]):02x}" + name[1:].replace("~", "%7e"),
    ]


@pytest.mark.parametrize("setup", SETUPS)
async def test_forty_transfers_each_pipe_meets_on_one_host(
    cluster: Cluster, setup: str, tmp_path: object
) -> None:
    """40 pipes, every fifth with ?n=3; each party on its own connection, through the proxies in turn
    and with another spelling of the key; every receiver gets the sender's bytes (sha256), every pipe
    completes on exactly one host, and the pipes spread over all three."""
    proxies = _proxies(cluster, setup)
    rng = random.Random(f"{setup}-{os.getpid()}")
    tag = f"{setup}-{os.getpid()}-"
    where: dict[str, Host] = {}
    limit = trio.CapacityLimiter(AT_ONCE)
    mark = _log_sizes(proxies)

    def proxies_said() -> str:  # (a failure shows it: a host marked DOWN moves a pipe's later parties)
        news = _said_since(proxies, mark)
        return "".join(f"\n{name} said: {text.decode(errors='replace')}" for name, text in news.items())

    async def one(i: int) -> None:
        async with limit:
            n = 3 if i % 5 == 0 else 1
            query = f"?n={n}" if n > 1 else ""
            name = f"{tag}t{i}-x~y"
            paths = _spellings(name)
            sender = proxies[0].url(paths[i % 4] + query)
            receivers = [
                proxies[(r + 1) % len(proxies)].url(paths[(i + r + 1) % 4] + query) for r in range(n)
            ]
            body = rng.randbytes(rng.choice([1, 1000, 65536, 300_000, 1 << 20]))
            try:
                outcome = await transfer(sender, receivers, body, cluster.workdir / f"{tag}{i}")
            except AssertionError as failed:  # (curl failed, or a receiver waited past --max-time)
                raise AssertionError(f"{failed}{proxies_said()}") from failed
            assert outcome.sender_code == "200", f"{outcome}{proxies_said()}"
            assert "[INFO] Transfer complete." in outcome.sender_said, f"{outcome}{proxies_said()}"
            assert outcome.receiver_codes == ["200"] * n, f"{outcome}{proxies_said()}"
            assert outcome.receiver_digests == [sha256(body)] * n, f"{outcome}{proxies_said()}"
            where[name] = await served_by(cluster.hosts, f"/{name}")

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            for i in range(TRANSFERS):
                nursery.start_soon(one, i)
    spread = Counter(host.name for host in where.values())
    assert len(where) == TRANSFERS
    assert set(spread) == {host.name for host in cluster.hosts}, spread


CLIENT_MAX_PENDING = 64  # (the hosts run with the default --client-max-pending)


async def _status(stream: trio.SocketStream) -> bytes:
    return (await _read_until(stream, b"\r\n")).split(b"\r\n")[0]


@pytest.mark.parametrize(("name", "client", "other_client"), [("haproxy_a", 11, 12), ("nginx", 21, 22)])
async def test_the_hosts_count_each_client_by_its_own_address_through_the_proxy(
    cluster: Cluster, name: str, client: int, other_client: int
) -> None:
    """X-Forwarded-For with --trusted-proxies: 64 receivers from one client address wait on one pipe
    (on one host) through the proxy; the 65th from there is refused (429 CLIENT_PENDING_LIMIT), also
    with an X-Forwarded-For of its own, while one from another address still joins: the host tells
    the clients apart behind one proxy address. (Addresses of their own: other tests' parties from
    127.0.0.1 wait on the same hosts.)"""
    proxy: Proxy = getattr(cluster, name)
    connect = partial(trio.open_tcp_stream, "127.0.0.1", proxy.port, local_address=f"127.0.0.{client}")
    key = f"/xff-{name}-{os.getpid()}?n={CLIENT_MAX_PENDING + 2}"
    request = f"GET {key} HTTP/1.1\r\nHost: relay\r\n"
    streams: list[trio.SocketStream] = []
    try:
        with trio.fail_after(30):
            for _ in range(CLIENT_MAX_PENDING):
                streams.append(await connect())
                await streams[-1].send_all(f"{request}\r\n".encode())
            await served_nowhere_yet(streams)
            spoofer = await connect()
            streams.append(spoofer)
            await spoofer.send_all(f"{request}X-Forwarded-For: 203.0.113.9\r\n\r\n".encode())
            refused = await _read_until(spoofer, b"\r\n\r\n")
            assert refused.startswith(b"HTTP/1.1 429 "), refused
            assert b"x-pipe-error: client_pending_limit" in refused.lower(), refused
            other = await trio.open_tcp_stream(
                "127.0.0.1", proxy.port, local_address=f"127.0.0.{other_client}"
            )
            streams.append(other)
            await other.send_all(f"{request}\r\n".encode())
            with trio.move_on_after(1.5):  # a refusal comes at once; a joined receiver hears nothing
                answer = await other.receive_some(65536)
                pytest.fail(f"127.0.0.2 was answered: {answer!r}")
    finally:
        for stream in streams:
            await stream.aclose()


async def served_nowhere_yet(streams: list[trio.SocketStream]) -> None:
    """The waiting receivers are not answered (a refusal would be): each is still silent."""
    with trio.move_on_after(0.5):
        for stream in streams:
            answer = await stream.receive_some(65536)
            pytest.fail(f"a waiting receiver was answered: {answer!r}")


async def _read_until(stream: trio.SocketStream, marker: bytes, seen: bytes = b"") -> bytes:
    while marker not in seen:
        chunk = await stream.receive_some(65536)
        assert chunk, seen[-500:]
        seen += chunk
    return seen


@pytest.mark.parametrize("name", ["haproxy_a", "nginx"])
async def test_bytes_stream_through_the_proxy_both_ways(cluster: Cluster, name: str) -> None:
    """No buffering either way: a waiting sender hears `Waiting for 1 receiver(s)` through the proxy
    while its body is unfinished, and its receiver gets the first 64 KiB before the rest is sent."""
    proxy: Proxy = getattr(cluster, name)
    key = f"/stream-{name}-{os.getpid()}"
    body = os.urandom(1 << 20)
    first = 64 * 1024  # (no one reads it before the receiver comes: it fits the sockets' buffers)
    with trio.fail_after(30):
        sender = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with sender, httpx.AsyncClient(timeout=20) as client:
            head = f"PUT {key} HTTP/1.1\r\nHost: relay\r\nContent-Length: {len(body)}\r\n\r\n"
            await sender.send_all(head.encode() + body[:first])
            told = await _read_until(sender, b"[INFO] Waiting for 1 receiver(s)")
            assert told.startswith(b"HTTP/1.1 200 ")
            received = b""
            async with client.stream("GET", proxy.url(key)) as response:
                assert response.status_code == 200
                chunks = response.aiter_bytes()
                with trio.fail_after(5):  # (a buffering proxy holds them until the body is whole)
                    while len(received) < first:
                        received += await chunks.__anext__()
                await sender.send_all(body[first:])
                async for chunk in chunks:
                    received += chunk
            await _read_until(sender, b"[INFO] Transfer complete.", told)
    assert sha256(received) == sha256(body)


async def _refused(host: Host) -> None:
    """Until the host's listener is closed (a drain closes it first)."""
    while True:
        try:
            socket.create_connection((host.address, HOST_PORT), timeout=1).close()
        except ConnectionRefusedError:
            return
        await trio.sleep(0.02)


async def _key_served_by(cluster: Cluster, proxy: Proxy, host: Host, prefix: str) -> str:
    """A key that `proxy` routes to `host`: found by one-byte transfers, at most 40."""
    for i in range(40):
        key = f"{prefix}-{i}"
        outcome = await transfer(proxy.url(key), [proxy.url(key)], b"x", cluster.workdir / key[1:])
        assert outcome.receiver_codes == ["200"], outcome
        if (await served_by(cluster.hosts, key)) is host:
            return key
    raise AssertionError(f"no key of {host.name} through {proxy.name} in 40 tries")


STALL = 4.0
"""Seconds a host is stopped: with a check timeout of `inter` (1 s) and `fall 2`, 3.5 s was enough for
HAProxy to mark a host DOWN, and so to move its keys (a pipe's later parties) to another host."""


async def test_a_host_that_stalls_for_seconds_stays_in_the_pool(cluster: Cluster) -> None:
    """A host stopped for 4 s (SIGSTOP: a starved CPU, a long pause) while a pipe of its keys begins
    through two HAProxies: their checks wait it out (`timeout check 5s`, `fall 3`), neither marks it
    DOWN, and the pipe meets on it once it runs again."""
    host = _spared_host(cluster)
    proxies = [cluster.haproxy_a, cluster.haproxy_b]
    body = os.urandom(100_000)
    outcomes: list[Outcome] = []
    with trio.fail_after(60):
        key = await _key_served_by(cluster, proxies[0], host, f"/stall-{os.getpid()}")
        mark = _log_sizes(proxies)
        before = {h.name: count_logged(h, key) for h in cluster.hosts}

        async def run() -> None:
            outcomes.append(
                await transfer(
                    proxies[0].url(key), [proxies[1].url(key)], body, cluster.workdir / f"{key[1:]}-x"
                )
            )

        host.process.send_signal(signal.SIGSTOP)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                await trio.sleep(STALL)  # (the stall is what is tested)
                host.process.send_signal(signal.SIGCONT)
        finally:
            host.process.send_signal(signal.SIGCONT)
        assert (await served_by(cluster.hosts, key, before)) is host
    (outcome,) = outcomes
    assert outcome.receiver_digests == [sha256(body)], outcome
    said = _said_since(proxies, mark)
    assert not any(b" is DOWN" in text for text in said.values()), said


async def test_a_host_drained_mid_run_finishes_its_transfer_and_new_pipes_go_elsewhere(
    cluster: Cluster,
) -> None:
    """SIGTERM to a host while a transfer runs through HAProxy on it: that transfer ends whole, the
    pipes that hashed to it now meet on another host, through each proxy (and through two HAProxies
    alike), and the host exits 0. (The waiting receivers' hosts are spared.)"""
    drained = _spared_host(cluster)
    tag = f"drain-{os.getpid()}-"
    with trio.fail_after(60):
        keys = {  # a key of the host to drain, through each engine
            setup: await _key_served_by(cluster, _proxies(cluster, setup)[0], drained, f"/{tag}{setup}")
            for setup in ("haproxy", "nginx")
        }

        body = os.urandom(2 << 20)
        # What is sent before the receiver comes: no one reads it yet, so it must fit in the sockets'
        # buffers on the way (a proxy's receive buffer alone starts at 128 KiB; 1 MiB once did not fit).
        first = 64 * 1024
        proxy = cluster.haproxy_a
        running = await _key_served_by(cluster, proxy, drained, f"/{tag}running")  # (the drained host's)
        assert count_logged(drained, running) == 1
        sender = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with sender, httpx.AsyncClient(timeout=30) as client:
            head = f"PUT {running} HTTP/1.1\r\nHost: relay\r\nContent-Length: {len(body)}\r\n\r\n"
            await sender.send_all(head.encode() + body[:first])
            told = await _read_until(sender, b"[INFO] Waiting for 1 receiver(s)")
            async with client.stream("GET", proxy.url(running)) as response:
                assert response.status_code == 200
                chunks = response.aiter_bytes()
                received = await chunks.__anext__()
                drained.drain()
                await _refused(drained)
                for setup, key in keys.items():  # a new pipe on a drained key: elsewhere, alike
                    before = {h.name: count_logged(h, key) for h in cluster.hosts}
                    proxies = _proxies(cluster, "two-haproxies" if setup == "haproxy" else setup)
                    new_body = os.urandom(100_000)
                    urls = [p.url(key + "?n=2") for p in proxies * 2][:2]
                    outcome = await transfer(
                        proxies[-1].url(key + "?n=2"), urls, new_body, cluster.workdir / f"{key[1:]}-again"
                    )
                    assert outcome.receiver_codes == ["200", "200"], outcome
                    assert outcome.receiver_digests == [sha256(new_body)] * 2
                    assert (await served_by(cluster.hosts, key, before)) is not drained
                async with trio.open_nursery() as sending:  # (the rest as the receiver reads it)
                    sending.start_soon(sender.send_all, body[first:])
                    async for chunk in chunks:
                        received += chunk
            said = await _read_until(sender, b"[INFO] Transfer complete.", told)
        assert b"[ERROR]" not in said
        assert sha256(received) == sha256(body)
        assert await trio.to_thread.run_sync(drained.process.wait) == 0


@pytest.mark.session_end
async def test_receivers_that_waited_90_s_behind_a_proxy_get_their_bytes(cluster: Cluster) -> None:
    """The receivers started with the cluster (one through HAProxy A, one through nginx) waited 90 s
    while the rest of the session ran; then their senders came, through HAProxy B and nginx (a
    background thread), and each receiver got the bytes. Run last, so the wait costs no time."""
    with trio.fail_after(LONG_WAIT + 120):
        for waiting in cluster.waiting:
            assert waiting.thread is not None
            await trio.to_thread.run_sync(waiting.thread.join)
            assert waiting.failure is None, waiting.failure
            assert waiting.waited_for_it, "the waiting receiver left before its sender came"
            sender = waiting.sender
            assert sender is not None and sender.returncode == 0, sender
            assert "[INFO] Transfer complete." in sender.stdout.decode()
            out, err = await trio.to_thread.run_sync(waiting.process.communicate)
            code, seconds = out.decode().split()
            assert (code, err) == ("200", b"")
            assert float(seconds) >= LONG_WAIT
            assert sha256(waiting.output.read_bytes()) == sha256(waiting.body.read_bytes())
            # (the probe, then this one; its line follows the last byte by a moment: served_by waits for it)
            assert await served_by([waiting.host], waiting.key, {waiting.host.name: 1}) is waiting.host
            assert count_logged(waiting.host, waiting.key) == 2
