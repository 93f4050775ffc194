# The admin listener of `--workers 2` as an operator uses it: scrapes summed over both workers, transfers
# of both listed and ended from either, a killed worker's counters kept and its gauges dropped.
# Invariant: each test runs its own supervisor process (port 0) and ends it; every wait is bounded; which
# worker answers is known (the /proc entry of a keep-alive connection), never left to chance.
from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path

import trio

from pipe_relay.net.admin import PEER_TIMEOUT
from pipe_relay.net.workers import ENV
from tests.admin_client import (
    AdminConnection,
    AdminServer,
    Metrics,
    admin_server,
    keys_owned_by,
    poll,
    sample,
)
from tests.clients import CurlResult, TlsFiles, curl_into

MARK = "zq7-s3cret-admin-path"
"""In every pipe path of these tests: no admin answer and no log line may ever hold it."""
PROTOCOLS = ("http1", "tls", "h2", "h2c", "unix")
TERMINATED_LINE = "[ERROR] Transfer terminated by the operator."


def _payload(index: int) -> bytes:
    return hashlib.shake_256(f"admin-{index}".encode()).digest(50_000 + 7_919 * index)


async def _connections(server: AdminServer) -> tuple[dict[int, int], dict[int, AdminConnection]]:
    """Each worker's pid, and an admin connection each worker holds."""
    pids = await server.worker_pids(2)
    return pids, {index: await server.connect_to(index, pids) for index in (0, 1)}


async def _transfer(url: str, key: str, payload: bytes, results: dict[str, CurlResult], *flags: str) -> None:
    """A curl receiver and a curl sender on `url + key` (with curl `flags`): the bytes arrive whole."""
    got: dict[str, CurlResult] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(curl_into, got, "r", *flags, url + key))
        nursery.start_soon(partial(curl_into, got, "s", *flags, "-T", "-", url + key, stdin=payload))
    assert got["r"].returncode == 0, (key, got["r"].stderr)
    assert hashlib.sha256(got["r"].stdout).hexdigest() == hashlib.sha256(payload).hexdigest(), key
    assert got["s"].stdout.decode().splitlines()[-1] == "[INFO] Transfer complete.", key
    results[key] = got["r"]


async def _scrape_until(connection: AdminConnection, name: str, value: float, **labels: str) -> Metrics:
    """Scrapes until `name{labels}` has reached `value` (a transfer is counted as it ends on the
    server, which may be a moment after its receiver has read the last byte), or POLL_SECONDS."""
    return await poll(connection.scrape, lambda metrics: sample(metrics, name, **labels) >= value)


def _settled(completed: int) -> Callable[[Metrics], bool]:
    """Has the scrape counted `completed` transfers, and do no pipes remain (the two are written at
    separate moments of a transfer's end)?"""

    def settled(metrics: Metrics) -> bool:
        pipes = sum(sample(metrics, "pipe_relay_pipes", state=state) for state in ("pending", "active"))
        return sample(metrics, "pipe_relay_transfers_completed_total") >= completed and pipes == 0

    return settled


def _connections_open(metrics: Metrics) -> float:
    return sum(sample(metrics, "pipe_relay_connections", protocol=p) for p in PROTOCOLS)


def _unix_time(iso: str) -> float:
    """`2026-12-07T12:00:00.123Z` as Unix time."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _assert_no_paths(server: AdminServer) -> None:
    """(d) Not one admin answer, not one line the server wrote to stderr, holds a pipe's path; the
    check is not empty: there were answers and access lines naming the pipes by their ids."""
    assert server.bodies
    for body in server.bodies:
        assert MARK.encode() not in body, body
    log = server.log_text()
    assert "pipe=" in log, log  # (the access lines were written: with ids, not paths)
    assert MARK not in log, log


async def test_transfers_on_both_workers_are_counted_once_in_every_workers_scrape(tmp_path: Path) -> None:
    """(a) Six transfers, three owned by each worker: whichever worker answers a scrape, it shows
    all six and their bytes, once (each worker's own row, summed), and their twelve requests once
    each (where they were answered, though about half reached the other worker first)."""
    with trio.fail_after(30):
        async with admin_server(tmp_path) as server:
            _, admin = await _connections(server)
            requests_before = sample(await admin[0].scrape(), "pipe_relay_requests_total")
            keys = keys_owned_by(0, 3, MARK + "-counted") + keys_owned_by(1, 3, MARK + "-counted")
            payloads = {key: _payload(index) for index, key in enumerate(keys)}
            done: dict[str, CurlResult] = {}
            async with trio.open_nursery() as nursery:
                for key in keys:
                    nursery.start_soon(_transfer, server.url, key, payloads[key], done)
            assert len(done) == 6
            for index in (0, 1):  # (no token, a wrong one: refused by either worker, and nothing shown)
                for token in (None, "admin-test-" + "0" * 24):
                    refused = await admin[index].request("GET", "/metrics", token=token)
                    assert refused.status == 401, (index, refused)
                    assert refused.json()["error"] == "UNAUTHORIZED", refused
                    assert refused.headers["www-authenticate"] == 'Bearer realm="pipe-relay admin"'
            size = sum(len(p) for p in payloads.values())
            for _ in range(3):  # (and again: nothing more is counted, nothing goes back)
                for index in (0, 1):
                    m = await poll(admin[index].scrape, _settled(6))
                    assert sample(m, "pipe_relay_transfers_started_total") == 6, index
                    assert sample(m, "pipe_relay_transfers_completed_total") == 6, index
                    assert sample(m, "pipe_relay_requests_total") - requests_before == 12, index
                    assert sample(m, "pipe_relay_received_bytes_total") == size, index
                    assert sample(m, "pipe_relay_sent_bytes_total") == size, index
                    assert sample(m, "pipe_relay_transfer_size_bytes_count") == 6, index
                    assert sample(m, "pipe_relay_transfer_size_bytes_sum") == size, index
                    assert sample(m, "pipe_relay_transfer_duration_seconds_count") == 6, index
                    assert sample(m, "pipe_relay_transfer_receivers_sum") == 6, index
                    assert sample(m, "pipe_relay_workers", state="configured") == 2, index
                    assert sample(m, "pipe_relay_workers", state="alive") == 2, index
                    assert sample(m, "pipe_relay_pipes", state="pending") == 0, index
                    assert sample(m, "pipe_relay_pipes", state="active") == 0, index
                    aborted = [
                        v for (name, _), v in m.items() if name == "pipe_relay_transfers_aborted_total"
                    ]
                    assert aborted and not any(aborted), index
    _assert_no_paths(server)


async def test_requests_carried_to_their_owner_are_counted_there_once(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    """Six transfers over HTTPS/1.1, HTTP/2 over TLS and h2c, on keys of both workers: a request that
    reached the other worker first is carried to its owner (a TLS connection or an HTTP/2 stream
    cannot move) and counted in `pipe_relay_requests_total` there only: twelve in all."""
    tls = ("--cacert", str(tls_files.ca_pem))
    with trio.fail_after(30):
        async with admin_server(tmp_path, *tls_files.cli_flags()) as server:
            _, admin = await _connections(server)
            before = sample(await admin[0].scrape(), "pipe_relay_requests_total")
            keys = keys_owned_by(0, 3, MARK + "-carried") + keys_owned_by(1, 3, MARK + "-carried")
            ways = [
                (server.tls_url, *tls, "--http1.1"),
                (server.tls_url, *tls),
                (server.url, "--http2-prior-knowledge"),
            ]
            done: dict[str, CurlResult] = {}
            async with trio.open_nursery() as nursery:
                for index, key in enumerate(keys):
                    url, *flags = ways[index % 3]
                    nursery.start_soon(_transfer, url, key, _payload(index), done, *flags)
            assert len(done) == 6
            for index in (0, 1):
                m = await poll(admin[index].scrape, _settled(6))
                assert sample(m, "pipe_relay_requests_total") - before == 12, index
    _assert_no_paths(server)


async def test_waiting_receivers_of_both_workers_are_listed_inspected_and_ended_from_the_other(
    tmp_path: Path,
) -> None:
    """(b) A receiver waits on a key of each worker: either worker lists both (with their owner)
    and shows each by id; each is ended by a DELETE that the *other* worker answers (it asks its
    sibling): the receiver gets 410 TERMINATED and the operator's line."""
    with trio.fail_after(30):
        async with admin_server(tmp_path) as server:
            _, admin = await _connections(server)
            keys = {owner: keys_owned_by(owner, 1, MARK + "-waiting")[0] for owner in (0, 1)}
            got: dict[str, CurlResult] = {}
            async with trio.open_nursery() as nursery:
                for owner, key in keys.items():
                    nursery.start_soon(curl_into, got, str(owner), "-i", server.url + key)
                ids: dict[int, str] = {}
                for index in (0, 1):  # (each worker's list: its own pipe and its sibling's)
                    listed = await poll(admin[index].transfers, lambda listed: len(listed) >= 2)
                    assert sorted(int(str(t["worker"])) for t in listed) == [0, 1], (index, listed)
                    for view in listed:
                        assert view["state"] == "pending" and view["receivers"] == 1, view
                        assert view["sender"] is False and view["n"] == 1 and view["bytes"] == 0, view
                        assert view["protocol"] == "http1", view
                        assert abs(_unix_time(str(view["started_at"])) - time.time()) < 60, view
                        assert ids.setdefault(int(str(view["worker"])), str(view["id"])) == view["id"]
                    assert await admin[index].transfers("?state=active") == []
                for index in (0, 1):  # each id, asked of each worker
                    for owner, ident in ids.items():
                        view = await admin[index].get_json(f"/api/v1/transfers/{ident}")
                        assert view["id"] == ident and view["worker"] == owner, (index, view)
                for owner, ident in ids.items():
                    other = admin[1 - owner]  # (the worker that does not own it answers the DELETE)
                    ended = await other.request("DELETE", f"/api/v1/transfers/{ident}")
                    assert ended.status == 200, (owner, ended)
                    assert ended.json()["id"] == ident and ended.json()["worker"] == owner
            for owner in (0, 1):
                again = await admin[owner].request("DELETE", f"/api/v1/transfers/{ids[1 - owner]}")
                assert again.status == 404 and again.json()["error"] == "TRANSFER_NOT_FOUND", again
                assert await admin[owner].transfers() == []
                m = await admin[owner].scrape()  # (each owner counted its 410)
                assert sample(m, "pipe_relay_errors_total", code="TERMINATED") == 2, owner
    for name in ("0", "1"):
        head, _, body = got[name].stdout.decode().partition("\r\n\r\n")
        assert head.startswith("HTTP/1.1 410"), (name, got[name])
        assert "X-Pipe-Error: TERMINATED" in head.split("\r\n"), head
        assert body.strip() == TERMINATED_LINE, body
    _assert_no_paths(server)


async def test_a_transfer_ended_through_the_other_worker_is_cut_and_its_sender_told(tmp_path: Path) -> None:
    """(b) A running transfer (its sender stalled after a first chunk) on a key of each worker, ended
    by a DELETE the other worker answers: its sender reads the operator's line (its reply's last),
    its receiver is cut (never a clean end), and the metrics count an operator's abort for each."""
    with trio.fail_after(30):
        async with admin_server(tmp_path) as server:
            _, admin = await _connections(server)
            keys = {owner: keys_owned_by(owner, 1, MARK + "-active")[0] for owner in (0, 1)}
            host, port = server.url.removeprefix("http://").rsplit(":", 1)
            got: dict[str, CurlResult] = {}
            told: dict[int, bytes] = {}
            async with trio.open_nursery() as nursery:
                senders: dict[int, trio.SocketStream] = {}
                for owner, key in keys.items():
                    nursery.start_soon(curl_into, got, str(owner), server.url + key)
                    senders[owner] = await trio.open_tcp_stream(host, int(port))
                    head = f"PUT {key} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n"
                    await senders[owner].send_all(
                        head.encode() + b"10000\r\n" + _payload(owner)[:0x10000] + b"\r\n"
                    )
                moving = await poll(  # (until both run and have moved bytes)
                    partial(admin[0].transfers, "?state=active"),
                    lambda listed: sum(int(str(v["bytes"])) > 0 for v in listed) == 2,
                )
                ids = {int(str(view["worker"])): str(view["id"]) for view in moving}
                assert sorted(ids) == [0, 1] and all(int(str(v["bytes"])) > 0 for v in moving), moving
                for owner, ident in ids.items():
                    ended = await admin[1 - owner].request("DELETE", f"/api/v1/transfers/{ident}")
                    assert ended.status == 200 and ended.json()["state"] == "active", ended
                for owner, sender in senders.items():  # (its reply, to the end the server gives it)
                    told[owner] = b""
                    async with sender:
                        while chunk := await sender.receive_some():
                            told[owner] += chunk
            m = await _scrape_until(admin[1], "pipe_relay_transfers_aborted_total", 2, reason="operator")
    for owner in (0, 1):
        assert told[owner].startswith(b"HTTP/1.1 200 "), told[owner]
        assert told[owner].endswith(TERMINATED_LINE.encode() + b"\n\r\n0\r\n\r\n"), told[owner]
        assert got[str(owner)].returncode != 0 and len(got[str(owner)].stdout) <= 0x10000, got[str(owner)]
    assert sample(m, "pipe_relay_transfers_aborted_total", reason="operator") == 2
    assert sample(m, "pipe_relay_transfers_completed_total") == 0
    _assert_no_paths(server)


def _children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (/proc/*/stat)."""
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry))
    return found


def _is_worker(pid: int) -> bool:
    """Has the supervisor's child `pid` become a worker (exec'd, with its spec in its environment)?"""
    return f"{ENV}=".encode() in Path(f"/proc/{pid}/environ").read_bytes()


def _mapped_tally(pid: int) -> bool:
    """Has process `pid` mapped the memory the tally is in (a worker does, first thing)?"""
    return "pipe-relay-shared" in Path(f"/proc/{pid}/maps").read_text()


async def test_a_killed_worker_keeps_its_counts_and_drops_what_it_held(tmp_path: Path) -> None:
    """(c) Worker 0 is SIGKILLed while a receiver waits on its key. Its new self is stopped (SIGSTOP)
    before it has touched the tally: the scrapes (by worker 1) still count worker 0's finished
    transfers, and no longer its pending pipe and connection (the supervisor zeroed them). Let go,
    its new self counts on from there."""
    with trio.fail_after(30):
        async with admin_server(tmp_path) as server:
            pids, admin = await _connections(server)
            survivor = admin[1]
            keys = [keys_owned_by(owner, 2, MARK + "-killed") for owner in (0, 1)]
            payloads = {
                key: _payload(index) for index, key in enumerate((keys[0][0], keys[1][0], keys[0][1]))
            }
            done: dict[str, CurlResult] = {}
            for key in (keys[0][0], keys[1][0]):
                await _transfer(server.url, key, payloads[key], done)
            size = len(payloads[keys[0][0]]) + len(payloads[keys[1][0]])
            await _scrape_until(survivor, "pipe_relay_transfers_completed_total", 2)
            got: dict[str, CurlResult] = {}
            reborn = 0
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(curl_into, got, "doomed", "-i", server.url + keys[0][1])
                    held = await _scrape_until(survivor, "pipe_relay_pipes", 1, state="pending")
                    assert sample(held, "pipe_relay_pipes", state="pending") == 1, held
                    assert _connections_open(held) >= 1, held
                    os.kill(pids[0], signal.SIGKILL)
                    while not (new := _children(server.process.pid) - set(pids.values())):  # noqa: ASYNC110
                        await trio.sleep(0.001)
                    (reborn,) = new
                    while not _is_worker(reborn):  # noqa: ASYNC110 (not while it is a fork of the supervisor)
                        await trio.sleep(0.001)
                    os.kill(reborn, signal.SIGSTOP)
                assert not _mapped_tally(reborn), "worker 0's new self was not stopped early enough"
                m = await survivor.scrape()  # (worker 0 is gone; its new self has done nothing yet)
                assert sample(m, "pipe_relay_transfers_completed_total") == 2, m
                assert sample(m, "pipe_relay_received_bytes_total") == size
                assert sample(m, "pipe_relay_pipes", state="pending") == 0, m
                assert _connections_open(m) == 0, m
                assert sample(m, "pipe_relay_workers", state="alive") == 1, m  # (started, not ready)
            finally:
                if reborn:
                    os.kill(reborn, signal.SIGCONT)
            while (await server.worker_pids(2))[0] != reborn:
                pass
            # (curl's health requests of just now may still be open a moment)
            after = await poll(survivor.scrape, lambda metrics: _connections_open(metrics) == 0)
            assert _connections_open(after) == 0, after
            assert sample(after, "pipe_relay_workers", state="alive") == 2, after
            assert sample(after, "pipe_relay_transfers_completed_total") == 2, after
            assert sample(after, "pipe_relay_pipes", state="pending") == 0, after
            await _transfer(server.url, keys[0][1], payloads[keys[0][1]], done)  # (its new self counts on)
            m = await _scrape_until(survivor, "pipe_relay_transfers_completed_total", 3)
            assert sample(m, "pipe_relay_transfers_completed_total") == 3
            assert sample(m, "pipe_relay_received_bytes_total") == size + len(payloads[keys[0][1]])
    assert got["doomed"].returncode != 0 and got["doomed"].stdout == b"", got["doomed"]  # (cut)
    _assert_no_paths(server)


async def test_a_worker_that_answers_its_sibling_too_late_goes_on(tmp_path: Path) -> None:
    """Worker 1 is stopped (SIGSTOP, as a long pause would) while worker 0 lists the transfers:
    worker 0 answers after PEER_TIMEOUT without worker 1's (left out, as documented). Let go, worker
    1 finds the question its asker gave up on: it must drop it and go on, its waiting receiver too
    (it died of the broken socket, cutting its pipes, before 3831f3f)."""
    with trio.fail_after(30):
        async with admin_server(tmp_path) as server:
            pids, admin = await _connections(server)
            key = keys_owned_by(1, 1, MARK + "-late")[0]
            receiver = await trio.lowlevel.open_process(
                ["curl", "-sS", "-i", server.url + key], stdout=-1, stderr=-1
            )
            try:
                listed = await poll(admin[0].transfers, lambda listed: len(listed) == 1)
                assert [view["worker"] for view in listed] == [1], listed
                os.kill(pids[1], signal.SIGSTOP)
                try:
                    started = trio.current_time()
                    assert await admin[0].transfers() == []  # (worker 1 left out)
                    assert trio.current_time() - started >= PEER_TIMEOUT * 0.9
                finally:
                    os.kill(pids[1], signal.SIGCONT)
                with trio.move_on_after(1):  # (it finds the stale question at once: were it to die of
                    await receiver.wait()  # it, its waiting receiver would be cut within this)
                assert receiver.returncode is None, "worker 1 ended: its waiting receiver was cut"
                listed = await poll(admin[0].transfers, lambda listed: len(listed) == 1)
                assert [view["worker"] for view in listed] == [1], listed
                assert await server.worker_pids(2) == pids
            finally:
                with trio.CancelScope(shield=True):
                    if receiver.returncode is None:
                        receiver.kill()
                    await receiver.wait()
    _assert_no_paths(server)
