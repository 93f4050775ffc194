# Access control under `--workers 2`: each worker holds the policy, a party is judged by the worker that
# owns its pipe (handed off over plain HTTP/1.1, carried over TLS and h2c), and SIGHUP reloads them all.
# Invariant: each test runs its own supervisor process on port 0 and ends it; every wait is bounded.
from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import trio

from pipe_relay.core.owners import owner_of
from pipe_relay.net.access import hash_password
from tests.cli_process import ROOT, listening_urls, startup_lines
from tests.clients import CurlResult, TlsFiles, curl, curl_into, sender_status
from tests.net.test_rate_limit import SHARED_RATE, shared_cap_elapsed, shared_cap_policy
from tests.responses import split_response

PASSWORDS = {"alice": "alice-pw-51d0", "bob": "bob-pw-0c2e"}
PAYLOAD = hashlib.shake_256(b"access workers").digest(150_000)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(scope="module")
def hashes() -> dict[str, str]:
    return {name: hash_password(password) for name, password in PASSWORDS.items()}


def policy_text(hashes: dict[str, str], users: tuple[str, ...] = ("alice", "bob")) -> str:
    """Under /shared/ the first user sends and any user receives; elsewhere anyone does anything."""
    text = 'default = { send = "anyone", receive = "anyone" }\n\n'
    text += "".join(f'[users.{name}]\npassword = "{hashes[name]}"\n\n' for name in users)
    return text + f'[[rules]]\nprefix = "/shared/"\nsend = ["{users[0]}"]\nreceive = "users"\n'


@dataclass
class Server:
    process: trio.Process
    url: str
    tls_url: str

    async def workers_seen(self) -> dict[int, dict[str, int]]:
        """Each worker's counters (health answers come from whichever worker accepts)."""
        seen: dict[int, dict[str, int]] = {}
        while len(seen) < 2:
            document = json.loads((await curl(f"{self.url}/api/v1/pipe/health")).stdout)
            worker = document["worker"]
            seen[int(worker["index"])] = {name: int(worker[name]) for name in ("handedOff", "carried")}
        return seen


@asynccontextmanager
async def workers_server(tmp_path: Path, *flags: str) -> AsyncIterator[Server]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable,
        "-m",
        "pipe_relay",
        "--host",
        "127.0.0.1",
        "--http-port",
        "0",
        "--workers",
        "2",
    ]
    with (tmp_path / "server.log").open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [*command, *flags], stdout=-1, stderr=stderr, cwd=ROOT, env=env
        )
    try:
        lines = await startup_lines(process, 3 + ("--enable-https" in flags) * 2)
        assert lines[-1] == "2 worker processes, each pipe served by one", lines
        yield Server(process, *listening_urls(lines))
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


def keys_of(owner: int, prefix: str) -> Iterator[str]:
    """Keys (`prefix-N`) whose pipes worker `owner` owns, without end."""
    return (key for index in itertools.count() if owner_of(key := f"{prefix}-{index}", 2) == owner)


def credentials(user: str, password: str | None = None) -> tuple[str, ...]:
    return ("-u", f"{user}:{PASSWORDS[user] if password is None else password}")


async def owner_status(url: str, key: str, user: str) -> int:
    """A sender's head status (tests.clients.sender_status) on this server's plain HTTP/1.1 port."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    return await sender_status(host, int(port), key, user, PASSWORDS[user])


WRONG_OVER = ("http/1.1", "https/1.1")


async def test_each_worker_lets_in_and_refuses_by_the_policy_over_every_protocol(
    tmp_path: Path, tls_files: TlsFiles, hashes: dict[str, str]
) -> None:
    """On keys of both workers, from plain HTTP/1.1 (handed off), HTTPS/1.1, HTTP/2 over TLS and h2c
    (carried): alice's transfer to bob arrives (sha256); bob as a sender is refused (403), a sender
    without credentials asked for them (401), a wrong password refused (401; over one handed-off and
    one carried protocol: each costs a real argon2 check)."""
    policy = tmp_path / "policy.toml"
    policy.write_text(policy_text(hashes))
    ca = ("--cacert", str(tls_files.ca_pem))
    with trio.fail_after(40):
        async with workers_server(tmp_path, "--policy", str(policy), *tls_files.cli_flags()) as server:
            protocols = {
                "http/1.1": (server.url, ("--http1.1",)),
                "https/1.1": (server.tls_url, ("--http1.1", *ca)),
                "https/2": (server.tls_url, ("--http2", *ca)),
                "h2c": (server.url, ("--http2-prior-knowledge",)),
            }
            got: dict[str, CurlResult] = {}
            for owner in (0, 1):
                keys = keys_of(owner, "/shared/k")
                async with trio.open_nursery() as nursery:
                    for protocol, (base, flags) in protocols.items():

                        def run(
                            name: str, *args: str, stdin: bytes = b"x", at: str = f"{owner} {protocol}"
                        ) -> None:
                            nursery.start_soon(partial(curl_into, got, f"{at} {name}", *args, stdin=stdin))

                        transfer = base + next(keys)
                        run("receiver", *flags, *credentials("bob"), transfer)
                        run("sender", *flags, *credentials("alice"), "-T", "-", transfer, stdin=PAYLOAD)
                        refused = (*flags, "-i", "-T", "-")
                        run("bob", *refused, *credentials("bob"), base + next(keys))
                        run("anonymous", *refused, base + next(keys))
                        if protocol in WRONG_OVER:
                            run("wrong", *refused, *credentials("alice", "guess"), base + next(keys))
            counters = await server.workers_seen()
    for owner in (0, 1):
        for protocol in protocols:
            at = f"{owner} {protocol}"
            receiver, sender = got[f"{at} receiver"], got[f"{at} sender"]
            assert receiver.returncode == 0, (at, receiver.stderr)
            assert hashlib.sha256(receiver.stdout).hexdigest() == DIGEST, at
            assert sender.stdout.decode().splitlines()[-1] == "[INFO] Transfer complete.", (at, sender)
            names = ("bob", "anonymous", "wrong") if protocol in WRONG_OVER else ("bob", "anonymous")
            for name in names:
                assert got[f"{at} {name}"].returncode == 0, (at, name, got[f"{at} {name}"])
            refusals = {name: split_response(got[f"{at} {name}"].stdout) for name in names}
            statuses = {name: (r.status, r.headers.get("x-pipe-error")) for name, r in refusals.items()}
            expected = {"bob": (403, "FORBIDDEN"), "anonymous": (401, "AUTH_REQUIRED")}
            if protocol in WRONG_OVER:
                expected["wrong"] = (401, "AUTH_FAILED")
            assert statuses == expected, at
            assert refusals["bob"].body == b"[ERROR] User 'bob' may not send on this path.\n", at
    assert sum(c["handedOff"] for c in counters.values()) > 0, counters  # (plain HTTP/1.1 moved)
    assert sum(c["carried"] for c in counters.values()) > 0, counters  # (TLS and h2c carried)


def rewrite_unseen(path: Path, text: str) -> None:
    """`text` into `path` in place, padded to the old size, with the old mtime put back: the file's
    watch (mtime, size, inode) cannot see the change, only a SIGHUP makes it read."""
    info = path.stat()
    data = text.encode()
    assert len(data) <= info.st_size, "the new text must not be longer"
    with path.open("r+b") as stream:
        stream.write(data + b"#" * (info.st_size - len(data)))  # (a trailing comment, to the old size)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    after = path.stat()
    assert (after.st_mtime_ns, after.st_size, after.st_ino) == (info.st_mtime_ns, info.st_size, info.st_ino)


async def test_sighup_to_the_supervisor_reloads_every_worker(tmp_path: Path, hashes: dict[str, str]) -> None:
    """alice, removed from the file (a change only a SIGHUP makes them read), is refused by both
    workers afterwards; bob, now the one who may send, is let in by both."""
    policy = tmp_path / "policy.toml"
    policy.write_text(policy_text(hashes))
    keys = {owner: keys_of(owner, "/shared/h") for owner in (0, 1)}
    with trio.fail_after(30):
        async with workers_server(tmp_path, "--policy", str(policy)) as server:
            before = {owner: await owner_status(server.url, next(keys[owner]), "alice") for owner in (0, 1)}
            rewrite_unseen(policy, policy_text(hashes, users=("bob",)))
            server.process.send_signal(signal.SIGHUP)
            after: dict[int, int] = {}
            with trio.fail_after(8):  # (a bounded poll: longer than the file's watch would take)
                for owner in (0, 1):
                    while True:
                        after[owner] = await owner_status(server.url, next(keys[owner]), "alice")
                        if after[owner] != 200:
                            break
                        await trio.sleep(0.02)
            bob = {owner: await owner_status(server.url, next(keys[owner]), "bob") for owner in (0, 1)}
            assert server.process.returncode is None
    assert before == {0: 200, 1: 200}
    assert after == {0: 401, 1: 401}  # (AUTH_FAILED: no such user now)
    assert bob == {0: 200, 1: 200}


async def test_a_users_transfers_on_both_workers_share_the_users_rate(tmp_path: Path) -> None:
    """One transfer of the user on each worker's pipe, at once: together they take as long as one
    of both sizes would at the user's rate (each worker takes its share of it, from the user's
    transfers counted in the workers' shared table), not half that."""
    body = tmp_path / "body"
    body.write_bytes(os.urandom(SHARED_RATE))
    keys = (next(keys_of(0, "/rated")), next(keys_of(1, "/rated")))
    with trio.fail_after(30):
        async with workers_server(tmp_path, "--policy", str(shared_cap_policy(tmp_path))) as server:
            elapsed = await shared_cap_elapsed(server.url, keys, body, ("-u", "slow:pw-slow"))
    assert elapsed >= (2 * SHARED_RATE - 2 * SHARED_RATE // 10) / SHARED_RATE * 0.9, elapsed
