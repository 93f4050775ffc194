# The admin listener with real clients: metrics that move with real transfers, the live-transfers API.
# Invariant: every test also checks that no pipe path reaches an admin answer or the log.
from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from pipe_relay import Config, serve
from pipe_relay.__main__ import parse_args
from pipe_relay.net.hub import Hub
from tests.clients import Payload, RawClient, Relay, TlsFiles, curl, parse_head, sha256_file
from tests.h2client import H2Client

TOKEN = "admin-token-for-the-tests-0123"
TERMINATED = b"[ERROR] Transfer terminated by the operator."


@dataclass
class Admin:
    """A server with its admin listener, and every admin answer and path seen (for the leak check)."""

    relay: Relay
    url: str
    client: httpx.AsyncClient
    bodies: list[bytes] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def path(self, name: str) -> str:
        """A pipe path this test uses (searched for in every admin answer and the log at the end)."""
        path = f"/{name}-sekrit-7f3a"
        self.paths.append(path)
        return path

    async def call(self, method: str, route: str, *, token: str | None = TOKEN) -> httpx.Response:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        response = await self.client.request(method, self.url + route, headers=headers)
        self.bodies.append(response.content)
        return response

    async def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        response = await self.call("GET", "/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        found = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return found

    async def transfers(self, query: str = "") -> list[dict[str, object]]:
        response = await self.call("GET", "/api/v1/transfers" + query)
        assert response.status_code == 200, response.text
        listing = response.json()
        return list(listing["transfers"])

    async def wait_for_transfer(self, **expected: object) -> dict[str, object]:
        """The one transfer listed once it reads as `expected` (polled: the caller's fail_after bounds it)."""
        while True:
            found = await self.transfers()
            if len(found) == 1 and all(found[0][k] == v for k, v in expected.items()):
                return found[0]
            await trio.sleep(0.02)


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], metric: str, **labels: str) -> float:
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)


def grew(before: dict, after: dict, metric: str, **labels: str) -> float:  # type: ignore[type-arg]
    return value(after, metric, **labels) - value(before, metric, **labels)


@pytest.fixture
async def admin(
    nursery: trio.Nursery, tls_files: TlsFiles, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Admin]:
    caplog.set_level("INFO", logger="pipe_relay")
    config = Config(hosts=("127.0.0.1",), port=0, admin_port=0, admin_token=TOKEN, **tls_files.overrides())  # type: ignore[arg-type]
    hub = Hub(config)
    listeners = await nursery.start(partial(serve, config, hub=hub))
    plain, secure = (next(x for x in listeners if x.tls is tls and not x.admin) for tls in (False, True))
    admin_port = next(x for x in listeners if x.admin).socket.getsockname()[1]
    relay = Relay(config, plain.socket.getsockname()[1], hub, tls_port=secure.socket.getsockname()[1])
    async with httpx.AsyncClient(timeout=10) as client:
        admin = Admin(relay, f"http://127.0.0.1:{admin_port}", client)
        yield admin
    logged = caplog.text + "".join(
        json.dumps(r.access.fields()) for r in caplog.records if hasattr(r, "access")
    )
    for path in admin.paths:
        for body in admin.bodies:
            assert path.encode() not in body, f"{path} in an admin answer"
        assert path.strip("/") not in logged, f"{path} in the log"


def curl_flags(protocol: str, admin: Admin, tls_files: TlsFiles) -> tuple[str, str]:
    """(extra curl flags, base URL) for a front end."""
    relay = admin.relay
    if protocol == "h2":
        return f"--http2 --cacert {tls_files.ca_pem}", relay.tls_url
    if protocol == "tls":
        return f"--http1.1 --cacert {tls_files.ca_pem}", relay.tls_url
    if protocol == "h2c":
        return "--http2-prior-knowledge", relay.url
    return "--http1.1", relay.url


@pytest.mark.parametrize("protocol", ["http1", "tls", "h2", "h2c"])
async def test_metrics_move_with_real_transfers(
    admin: Admin, protocol: str, payloads: dict[int, Payload], tmp_path: Path, tls_files: TlsFiles
) -> None:
    payload = payloads[1 << 20]
    flags, base = curl_flags(protocol, admin, tls_files)
    path = admin.path(f"metrics-{protocol}")
    with trio.fail_after(20):
        before = await admin.scrape()
        out = tmp_path / "out.bin"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(curl, *flags.split(), "-o", str(out), base + path))
            await admin.relay.wait_for_pipe(path, receivers=1)
            sent = await curl(*flags.split(), "-T", str(payload.path), base + path)
        assert sent.returncode == 0 and b"[INFO] Transfer complete." in sent.stdout
        assert sha256_file(out) == payload.sha256
        refused = await curl(*flags.split(), "-o", "/dev/null", "-w", "%{http_code}", base + path + "?n=0")
        assert refused.stdout == b"400"
        after = await admin.scrape()
        while value(after, "pipe_relay_connections", protocol=protocol) != 0:  # (their closes, just seen)
            await trio.sleep(0.01)
            after = await admin.scrape()
    assert grew(before, after, "pipe_relay_transfers_started_total") == 1
    assert grew(before, after, "pipe_relay_transfers_completed_total") == 1
    assert grew(before, after, "pipe_relay_received_bytes_total") == payload.size
    assert grew(before, after, "pipe_relay_sent_bytes_total") == payload.size
    assert grew(before, after, "pipe_relay_errors_total", code="INVALID_N") == 1
    assert grew(before, after, "pipe_relay_transfer_size_bytes_count") == 1
    assert grew(before, after, "pipe_relay_transfer_size_bytes_sum") == payload.size
    assert grew(before, after, "pipe_relay_transfer_size_bytes_bucket", le="1.048576e+06") == 1
    assert grew(before, after, "pipe_relay_transfer_receivers_bucket", le="1.0") == 1
    assert grew(before, after, "pipe_relay_requests_total") == 3
    assert (
        value(after, "pipe_relay_pipes", state="pending")
        == value(after, "pipe_relay_pipes", state="active")
        == 0
    )


async def test_an_open_connection_is_counted_by_its_protocol(admin: Admin) -> None:
    with trio.fail_after(10):
        before = await admin.scrape()
        client = await RawClient.connect(admin.relay)
        try:
            await client.send(b"GET / HT")  # (a head begun: the connection is in, its protocol known)
            while grew(before, await admin.scrape(), "pipe_relay_connections", protocol="http1") != 1:  # noqa: ASYNC110
                await trio.sleep(0.01)
        finally:
            await client.aclose()
        while grew(before, await admin.scrape(), "pipe_relay_connections", protocol="http1") != 0:  # noqa: ASYNC110
            await trio.sleep(0.01)


async def _raw_transfer(
    admin: Admin, raw_clients: list[RawClient], path: str, size: int, first: int
) -> tuple[RawClient, RawClient]:
    """A raw receiver, then a raw sender of a `size` body whose `first` bytes reached the receiver."""
    receiver = await RawClient.connect(admin.relay)
    raw_clients.append(receiver)
    await receiver.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await admin.relay.wait_for_pipe(path, receivers=1)
    sender = await RawClient.connect(admin.relay)
    raw_clients.append(sender)
    await sender.send(f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
    await sender.send(b"y" * first)
    await admin.relay.wait_for_bytes(path, first)
    return receiver, sender


async def test_aborted_transfers_and_rejections_are_counted(
    admin: Admin, raw_clients: list[RawClient]
) -> None:
    path = admin.path("cut")
    size = 4 << 20
    with trio.fail_after(10):
        before = await admin.scrape()
        receiver, sender = await _raw_transfer(admin, raw_clients, path, size, 256 << 10)
        await sender.reset()
        _, clean = await receiver.read_to_end()
        assert not clean or len(receiver.buffer) < size
        await admin.relay.wait_until_free(path)
        after = await admin.scrape()
    assert grew(before, after, "pipe_relay_transfers_started_total") == 1
    assert grew(before, after, "pipe_relay_transfers_completed_total") == 0
    assert grew(before, after, "pipe_relay_transfers_aborted_total", reason="sender_gone") == 1
    assert grew(before, after, "pipe_relay_transfer_duration_seconds_count") == 1


async def test_a_limit_rejection_is_counted_by_its_limit(nursery: trio.Nursery) -> None:
    config = Config(hosts=("127.0.0.1",), port=0, admin_port=0, admin_token=TOKEN, client_max_pending=1)
    listeners = await nursery.start(partial(serve, config))
    port = listeners[0].socket.getsockname()[1]
    admin_port = next(x for x in listeners if x.admin).socket.getsockname()[1]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(timeout=10) as client:

        async def scrape() -> dict:  # type: ignore[type-arg]
            text = (await client.get(f"http://127.0.0.1:{admin_port}/metrics", headers=headers)).text
            return {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text)
                for s in f.samples
            }

        with trio.fail_after(10):
            before = await scrape()
            waiting = await trio.open_tcp_stream("127.0.0.1", port)
            try:
                await waiting.send_all(b"GET /first-limit HTTP/1.1\r\nHost: x\r\n\r\n")
                limit = config.client_max_pending
                second = await curl(
                    "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/second"
                )
                assert second.stdout == b"429", limit
            finally:
                await waiting.aclose()
            after = await scrape()
    assert grew(before, after, "pipe_relay_rejections_total", limit="client_max_pending") == 1
    assert grew(before, after, "pipe_relay_errors_total", code="CLIENT_PENDING_LIMIT") == 1
    assert value(after, "pipe_relay_limit", name="client_max_pending") == 1


@pytest.mark.parametrize("protocol", ["http1", "h2c"])
async def test_list_inspect_and_terminate_a_waiting_receiver(
    admin: Admin, protocol: str, tls_files: TlsFiles
) -> None:
    flags, base = curl_flags(protocol, admin, tls_files)
    path = admin.path(f"waiting-{protocol}")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            results = {}

            async def receive() -> None:
                results["r"] = await curl(*flags.split(), "-i", base + path)

            nursery.start_soon(receive)
            await admin.relay.wait_for_pipe(path, receivers=1)
            listed = await admin.wait_for_transfer(state="pending")
            assert re.fullmatch(r"[0-9a-f]{16}", str(listed["id"]))
            assert listed["n"] == 1 and listed["receivers"] == 1 and listed["sender"] is False
            assert listed["protocol"] == protocol and listed["clients"] == ["127.0.0.1"]
            assert listed["bytes"] == 0 and listed["worker"] == 0
            assert await admin.transfers("?state=active") == []
            one = await admin.call("GET", f"/api/v1/transfers/{listed['id']}")
            assert one.status_code == 200 and one.json()["id"] == listed["id"]
            ended = await admin.call("DELETE", f"/api/v1/transfers/{listed['id']}")
            assert ended.status_code == 200 and ended.json()["state"] == "pending"
        head, _, body = results["r"].stdout.partition(b"\r\n\r\n")
        status, headers, _ = parse_head(head + b"\r\n\r\n")
        assert status == 410 and headers["x-pipe-error"] == "TERMINATED"
        assert body == TERMINATED + b"\n"
        gone = await admin.call("GET", f"/api/v1/transfers/{listed['id']}")
        assert gone.status_code == 404 and gone.json()["error"] == "TRANSFER_NOT_FOUND"
        again = await admin.call("DELETE", f"/api/v1/transfers/{listed['id']}")
        assert again.status_code == 404
        await admin.relay.wait_until_free(path)


async def test_terminate_a_waiting_sender(admin: Admin, raw_clients: list[RawClient]) -> None:
    path = admin.path("waiting-sender")
    with trio.fail_after(10):
        sender = await RawClient.connect(admin.relay)
        raw_clients.append(sender)
        await sender.send(f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".encode())
        await sender.read_until(b"[INFO] Waiting")
        listed = await admin.wait_for_transfer(state="pending", sender=True)
        assert (await admin.call("DELETE", f"/api/v1/transfers/{listed['id']}")).status_code == 200
        await sender.read_until(TERMINATED)
        data, clean = await sender.read_to_end()
        assert clean and data.endswith(b"0\r\n\r\n")  # (its status stream ends; nothing was sent on)
        await admin.relay.wait_until_free(path)


async def test_terminate_an_active_transfer_over_http1(admin: Admin, raw_clients: list[RawClient]) -> None:
    path = admin.path("active")
    size = 8 << 20
    with trio.fail_after(15):
        before = await admin.scrape()
        receiver, sender = await _raw_transfer(admin, raw_clients, path, size, 1 << 20)
        listed = await admin.wait_for_transfer(state="active")
        assert listed["total"] == size and int(str(listed["bytes"])) >= 1 << 20
        assert listed["sender"] is True and listed["receivers"] == 1
        assert listed["clients"] == ["127.0.0.1", "127.0.0.1"]
        assert (await admin.call("DELETE", f"/api/v1/transfers/{listed['id']}")).status_code == 200
        await sender.read_until(TERMINATED)
        await receiver.read_to_end()
        head, _, body = bytes(receiver.buffer).partition(b"\r\n\r\n")
        assert b"content-length: 8388608" in head.lower()
        assert len(body) < size  # cut: never a complete body
        await admin.relay.wait_until_free(path)
        after = await admin.scrape()
    assert grew(before, after, "pipe_relay_transfers_aborted_total", reason="operator") == 1
    assert grew(before, after, "pipe_relay_transfers_completed_total") == 0


async def test_terminate_an_active_transfer_over_h2c(admin: Admin) -> None:
    path = admin.path("active-h2")
    with trio.fail_after(15):
        receiving = await H2Client.connect("127.0.0.1", admin.relay.port)
        sending = await H2Client.connect("127.0.0.1", admin.relay.port)
        try:
            receiver = await receiving.request("GET", path, end=True)
            await admin.relay.wait_for_pipe(path, receivers=1)
            sender = await sending.request("PUT", path, ("content-length", str(4 << 20)))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(sending.send_body, sender, b"z" * (256 << 10), end=False))
                await admin.relay.wait_for_bytes(path, 32 << 10)
                listed = await admin.wait_for_transfer(state="active", protocol="h2c")
                assert (await admin.call("DELETE", f"/api/v1/transfers/{listed['id']}")).status_code == 200
                got = await receiving.until_over(receiver)
                nursery.cancel_scope.cancel()
            assert got.status == 200 and got.reset is not None and not got.ended  # cut, never complete
            said = sending.responses[sender]
            await sending.until(lambda: TERMINATED in said.data or said.reset is not None)
            assert TERMINATED in said.data
        finally:
            await receiving.aclose()
            await sending.aclose()
        await admin.relay.wait_until_free(path)


ROUTES = [
    ("GET", "/metrics"),
    ("HEAD", "/metrics"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/transfers"),
    ("GET", "/api/v1/transfers?state=pending"),
    ("GET", "/api/v1/transfers/0123456789abcdef"),
    ("DELETE", "/api/v1/transfers/0123456789abcdef"),
    ("POST", "/api/v1/transfers"),
    ("GET", "/nothing-here"),
]


async def test_every_admin_route_needs_the_token(admin: Admin) -> None:
    with trio.fail_after(10):
        for method, route in ROUTES:
            for token in (None, TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "x" * len(TOKEN)):
                response = await admin.call(method, route, token=token)
                assert response.status_code == 401, (method, route, token)
                assert response.headers["www-authenticate"].startswith("Bearer")
                if method != "HEAD":
                    assert response.json()["error"] == "UNAUTHORIZED"
            allowed = await admin.call(method, route)
            assert allowed.status_code != 401, (method, route)
        basic = await admin.client.get(admin.url + "/metrics", auth=("admin", TOKEN))
        assert basic.status_code == 401


def test_the_admin_listener_will_not_start_without_a_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("PIPE_RELAY_ADMIN_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exited:
        parse_args(["--admin-port", "0"])
    assert exited.value.code == 2
    assert "the admin listener needs a token" in capsys.readouterr().err
    short = tmp_path / "token"
    short.write_text("short\n")
    with pytest.raises(SystemExit):
        parse_args(["--admin-port", "0", "--admin-token-file", str(short)])
    assert "at least 16" in capsys.readouterr().err
    short.write_text(TOKEN + "\n")
    config, _ = parse_args(["--admin-port", "0", "--admin-token-file", str(short)])
    assert config.admin_token == TOKEN and TOKEN not in repr(config)
    monkeypatch.setenv("PIPE_RELAY_ADMIN_TOKEN", TOKEN)
    assert parse_args(["--admin-port", "0"])[0].admin_token == TOKEN


async def test_a_transfer_shows_the_user_its_sender_named(nursery: trio.Nursery, tmp_path: Path) -> None:
    from pipe_relay.net.access import hash_password

    policy = tmp_path / "policy.toml"
    alice = hash_password("pw-alice")
    policy.write_text(
        f'default = {{ send = "users", receive = "anyone" }}\n[users.alice]\npassword = "{alice}"\n'
    )
    config = Config(hosts=("127.0.0.1",), port=0, admin_port=0, admin_token=TOKEN, policy_path=str(policy))
    listeners = await nursery.start(partial(serve, config))
    port = listeners[0].socket.getsockname()[1]
    admin_url = f"http://127.0.0.1:{next(x for x in listeners if x.admin).socket.getsockname()[1]}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with trio.fail_after(15):
        async with httpx.AsyncClient(timeout=10) as client, trio.open_nursery() as inner:
            url = f"http://127.0.0.1:{port}/users-pipe"
            inner.start_soon(partial(curl, "-u", "alice:pw-alice", "-T", "-", url))
            listed: list[dict[str, object]] = []
            while not listed:  # (the sender's password is checked in a thread first)
                await trio.sleep(0.02)
                listed = (await client.get(admin_url + "/api/v1/transfers", headers=headers)).json()[
                    "transfers"
                ]
            assert listed[0]["user"] == "alice" and listed[0]["sender"] is True
            inner.cancel_scope.cancel()
