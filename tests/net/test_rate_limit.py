# Rate caps (--rate-limit, a policy user's rate): a capped transfer paces its sender; ?progress shows the cap.
# Invariant: only a lower bound on time is asserted (a cap can only slow a transfer down), never a speed.
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import trio

from pipe_relay.net.access import hash_password
from tests.clients import Relay, StartRelay, curl

pytestmark = pytest.mark.parametrize(
    "engine", ["buffer"], indirect=True
)  # (a capped body is paced by the buffer engine)


async def _events(url: str) -> list[dict[str, object]]:
    """The `?progress` events of `url` until the transfer ends."""
    result = await curl("-N", "-H", "Accept: text/event-stream", url + "?progress", max_time=20)
    return [json.loads(line[6:]) for line in result.stdout.decode().splitlines() if line.startswith("data: ")]


async def _timed_transfer(
    relay: Relay, path: str, body: Path, *user: str
) -> tuple[float, bytes, list[dict[str, object]]]:
    base = relay.url
    got: dict[str, object] = {}

    async def watch() -> None:
        got["events"] = await _events(base + path)

    async def receive() -> None:
        got["body"] = (await curl(base + path, max_time=20)).stdout

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        nursery.start_soon(receive)
        await relay.wait_for_pipe(path, receivers=1)  # (both waiting: the clock starts with the sender)
        while relay.hub.watchers != 1:  # noqa: ASYNC110 (no event tells of a watcher: a bounded poll)
            await trio.sleep(0.01)
        started = trio.current_time()
        sent = await curl(*user, "-T", str(body), base + path, max_time=20)
        elapsed = trio.current_time() - started
    assert sent.returncode == 0 and b"[INFO] Transfer complete." in sent.stdout
    return elapsed, bytes(got["body"]), list(got["events"])  # type: ignore[arg-type]


async def test_a_capped_transfer_takes_at_least_its_size_over_the_cap(
    start_relay: StartRelay, tmp_path: Path
) -> None:
    rate = 1 << 20
    body = tmp_path / "body"
    data = os.urandom(2 << 20)
    body.write_bytes(data)
    relay = await start_relay(rate_limit=rate)
    with trio.fail_after(20):
        elapsed, got, events = await _timed_transfer(relay, "/capped", body)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    step = rate // 10  # (the first step goes at once; each after it waits its turn)
    assert elapsed >= (len(data) - step) / rate * 0.95, elapsed
    streaming = [e for e in events if e["state"] in ("streaming", "done")]
    assert streaming and all(e.get("limit") == rate for e in streaming), events
    assert all(float(str(e["rate"])) <= rate * 1.5 for e in streaming if e["state"] == "streaming"), events


async def test_an_uncapped_transfer_shows_no_limit(start_relay: StartRelay, tmp_path: Path) -> None:
    body = tmp_path / "body"
    body.write_bytes(os.urandom(64 << 10))
    relay = await start_relay()
    with trio.fail_after(20):
        _, got, events = await _timed_transfer(relay, "/free", body)
    assert len(got) == 64 << 10 and events and all("limit" not in e for e in events)


async def test_a_users_rate_caps_what_that_user_sends(start_relay: StartRelay, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    slow, fast = hash_password("pw-slow"), hash_password("pw-fast")
    policy.write_text(
        f'[users.slow]\npassword = "{slow}"\nrate = "512K"\n[users.fast]\npassword = "{fast}"\n'
    )
    body = tmp_path / "body"
    data = os.urandom(512 << 10)
    body.write_bytes(data)
    relay = await start_relay(policy_path=str(policy), rate_limit=8 << 20)
    with trio.fail_after(20):
        elapsed, got, events = await _timed_transfer(relay, "/slow", body, "-u", "slow:pw-slow")
        assert got == data and elapsed >= (len(data) - (512 << 10) // 10) / (512 << 10) * 0.95, elapsed
        assert any(e.get("limit") == 512 << 10 for e in events), events
        _, got, events = await _timed_transfer(relay, "/fast", body, "-u", "fast:pw-fast")
        assert got == data and any(e.get("limit") == 8 << 20 for e in events), events  # (--rate-limit)


async def shared_cap_elapsed(base: str, keys: tuple[str, str], body: Path, user: tuple[str, ...]) -> float:
    """Two receivers, and two senders of `user` at once: the time from the senders' start until both
    are done (a lower bound on how long the transfers took, whoever came first)."""
    got: dict[str, object] = {}

    async def receive(key: str) -> None:
        got[key] = (await curl(base + key, max_time=20)).stdout

    async def send(key: str) -> None:
        got["sent " + key] = (await curl(*user, "-T", str(body), base + key, max_time=20)).stdout

    async with trio.open_nursery() as nursery:
        for key in keys:
            nursery.start_soon(receive, key)
        started = trio.current_time()
        async with trio.open_nursery() as senders:
            for key in keys:
                senders.start_soon(send, key)
        elapsed = trio.current_time() - started
    data = body.read_bytes()
    for key in keys:
        assert got[key] == data, key
        assert b"[INFO] Transfer complete." in got["sent " + key]  # type: ignore[operator]
    return elapsed


SHARED_RATE = 512 << 10


def shared_cap_policy(tmp_path: Path) -> Path:
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[users.slow]\npassword = "{hash_password("pw-slow")}"\nrate = "512K"\n')
    return policy


async def test_a_users_transfers_at_once_share_the_users_rate(
    start_relay: StartRelay, tmp_path: Path
) -> None:
    """Two transfers of one user at once take as long as one of both sizes would: the cap is the
    user's, shared, not each transfer's (each alone would be done in half the time)."""
    body = tmp_path / "body"
    body.write_bytes(os.urandom(SHARED_RATE))
    relay = await start_relay(policy_path=str(shared_cap_policy(tmp_path)))
    with trio.fail_after(20):
        elapsed = await shared_cap_elapsed(relay.url, ("/one", "/two"), body, ("-u", "slow:pw-slow"))
    assert elapsed >= (2 * SHARED_RATE - 2 * SHARED_RATE // 10) / SHARED_RATE * 0.95, elapsed
    assert len(relay.hub.paces) == 0  # (the user's pace is forgotten with their last transfer)
