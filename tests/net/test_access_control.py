# Access control (`--policy FILE`) with real clients: curl -u over HTTP/1.1, HTTPS, HTTP/2 and h2c,
# the refusals, reloads while a transfer runs, the CLI's checks, CORS with a policy, and timing.
# Invariant: every test is bounded by trio.fail_after; bytes are compared by sha256; no readiness sleeps.
from __future__ import annotations

import hashlib
import itertools
import logging
import os
import signal
import statistics
import subprocess
import sys
from base64 import b64encode
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import trio
from argon2 import PasswordHasher

from pipe_relay.__main__ import parse_args
from pipe_relay.net import access as access_module
from pipe_relay.net.access import hash_password
from pipe_relay.net.splice import splice_available
from tests.cli_process import ROOT, cli_server
from tests.clients import (
    CurlResult,
    RawClient,
    Relay,
    StartRelay,
    TlsFiles,
    curl,
    curl_into,
    parse_head,
    sender_status,
)
from tests.responses import Response, split_response

PASSWORDS = {"alice": "alice-pw-3f9c", "bob": "bob-pw-77e1"}
PAYLOAD = hashlib.shake_256(b"access control").digest(200_000)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
CHALLENGE = 'Basic realm="pipe-relay", charset="UTF-8"'
COMPLETE = "[INFO] Transfer complete."


@pytest.fixture(scope="module")
def hashes() -> dict[str, str]:
    """Each user's argon2id hash, made once (each costs a real argon2 hashing)."""
    return {name: hash_password(password) for name, password in PASSWORDS.items()}


def policy_text(
    hashes: dict[str, str],
    *,
    senders: str = '["alice"]',
    receivers: str = '["alice", "bob"]',
    users: tuple[str, ...] = ("alice", "bob"),
) -> str:
    """Anyone may send and receive, but under /shared/ only alice sends and alice or bob receive,
    and under /inbox/ anyone sends and only alice receives."""
    text = 'default = { send = "anyone", receive = "anyone" }\n\n'
    text += "".join(f'[users.{name}]\npassword = "{hashes[name]}"\n\n' for name in users)
    text += f'[[rules]]\nprefix = "/shared/"\nsend = {senders}\nreceive = {receivers}\n\n'
    text += '[[rules]]\npattern = "/inbox/*"\nsend = "anyone"\nreceive = ["alice"]\n'
    return text


def write_atomically(path: Path, text: str) -> None:
    """As an operator's editor (or a config tool) should: a temporary file renamed over the old one."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)


@pytest.fixture
def policy_file(tmp_path: Path, hashes: dict[str, str]) -> Path:
    path = tmp_path / "policy.toml"
    write_atomically(path, policy_text(hashes))
    return path


def credentials(user: str, password: str | None = None) -> tuple[str, ...]:
    return ("-u", f"{user}:{PASSWORDS.get(user, 'whatever') if password is None else password}")


async def ask(*args: str, stdin: bytes = b"x") -> Response:
    """One curl request (`-i`): its final response, head parsed (stdin: a body for `-T -`)."""
    result = await curl("-i", *args, stdin=stdin, max_time=20)
    assert result.returncode == 0, result.stderr
    return split_response(result.stdout)


def assert_refused(response: Response, status: int, code: str, line: str) -> None:
    assert (response.status, response.headers.get("x-pipe-error")) == (status, code), response
    assert response.body == f"[ERROR] {line}\n".encode(), response.body
    if status == 401:
        assert response.values("www-authenticate") == [CHALLENGE]
    else:
        assert "www-authenticate" not in response.headers


NEEDS_USER_TO_SEND = "This path needs a user and password to send (curl -u USER)."
NEEDS_USER_TO_RECEIVE = "This path needs a user and password to receive (curl -u USER)."
WRONG = "Wrong user or password."


@pytest.fixture
def engine() -> str:
    """The access checks come before any byte engine: these tests run on one (the transfer over
    plain HTTP/1.1 runs on each, in the protocol test)."""
    return "buffer"


# -- curl -u over every protocol ---------------------------------------------------------------------

PROTOCOLS = ["http/1.1", "https/1.1", "https/2", "h2c"]
SPLICE_ONLY_ON_LINUX = pytest.mark.skipif(not splice_available(), reason="Linux only")  # (as ENGINES)


def base_and_flags(relay: Relay, tls_files: TlsFiles, protocol: str) -> tuple[str, tuple[str, ...]]:
    ca = ("--cacert", str(tls_files.ca_pem))
    return {
        "http/1.1": (relay.url, ("--http1.1",)),
        "https/1.1": (relay.tls_url, ("--http1.1", *ca)),
        "https/2": (relay.tls_url, ("--http2", *ca)),
        "h2c": (relay.url, ("--http2-prior-knowledge",)),
    }[protocol]


async def until(predicate: Callable[[], object]) -> None:
    """A bounded poll (the caller's fail_after bounds it) for a state no event tells of."""
    while True:
        if predicate():
            return
        await trio.sleep(0.01)


def within(a: float, b: float, share: float) -> bool:
    return abs(a - b) <= share * max(a, b)


@pytest.mark.parametrize(
    ("engine", "protocol"),
    [
        *(("buffer", protocol) for protocol in PROTOCOLS),
        pytest.param("splice", "http/1.1", marks=SPLICE_ONLY_ON_LINUX),
    ],
)
async def test_curl_u_allowed_and_refused_per_rule(
    start_relay: StartRelay, tls_files: TlsFiles, policy_file: Path, engine: str, protocol: str
) -> None:
    relay = await start_relay(policy_path=str(policy_file), **tls_files.overrides())
    assert relay.config.engine == engine
    base, flags = base_and_flags(relay, tls_files, protocol)
    version = protocol.rpartition("/")[2] if "/" in protocol else "2"
    got: dict[str, CurlResult] = {}
    refusals: dict[str, Response] = {}

    async def refused(name: str, *args: str) -> None:
        refusals[name] = await ask(*flags, "-w", "%{http_version}", *args)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            # bob watches (receiving rights), then alice sends and bob receives
            watch = (*flags, "-N", *credentials("bob"), base + "/shared/a?progress")
            nursery.start_soon(partial(curl_into, got, "watcher", *watch))
            await until(lambda: relay.hub.watchers == 1)
            nursery.start_soon(
                partial(curl_into, got, "receiver", *flags, *credentials("bob"), base + "/shared/a")
            )
            sender = (*flags, *credentials("alice"), "-T", "-", base + "/shared/a")
            nursery.start_soon(partial(curl_into, got, "sender", *sender, stdin=PAYLOAD))
            url = base + "/shared/b"
            nursery.start_soon(partial(refused, "send-anonymous", "-T", "-", url))
            nursery.start_soon(partial(refused, "receive-anonymous", url))
            nursery.start_soon(partial(refused, "progress-anonymous", url + "?progress"))
            nursery.start_soon(
                partial(refused, "wrong-password", *credentials("alice", "alice-pw-3f9d"), "-T", "-", url)
            )
            nursery.start_soon(
                partial(refused, "unknown-user", *credentials("mallory", PASSWORDS["alice"]), url)
            )
            nursery.start_soon(partial(refused, "bob-sends", *credentials("bob"), "-T", "-", url))
            inbox = base + "/inbox/alice"
            nursery.start_soon(
                partial(refused, "bob-watches-inbox", *credentials("bob"), inbox + "?progress")
            )
            nursery.start_soon(partial(refused, "bob-receives-inbox", *credentials("bob"), inbox))
    assert got["receiver"].returncode == 0, got["receiver"].stderr
    assert hashlib.sha256(got["receiver"].stdout).hexdigest() == DIGEST
    assert got["sender"].stdout.decode().splitlines()[-1] == COMPLETE, got["sender"]
    events = got["watcher"].stdout.decode()
    assert got["watcher"].returncode == 0 and '"state":"done"' in events.replace(" ", ""), events
    for response in refusals.values():  # (the body ends with what -w printed: the protocol)
        assert response.body.endswith(version.encode()), (protocol, response.body)
        response.body = response.body[: -len(version)]
    assert_refused(refusals["send-anonymous"], 401, "AUTH_REQUIRED", NEEDS_USER_TO_SEND)
    assert_refused(refusals["receive-anonymous"], 401, "AUTH_REQUIRED", NEEDS_USER_TO_RECEIVE)
    assert_refused(refusals["progress-anonymous"], 401, "AUTH_REQUIRED", NEEDS_USER_TO_RECEIVE)
    assert_refused(refusals["wrong-password"], 401, "AUTH_FAILED", WRONG)
    assert_refused(refusals["unknown-user"], 401, "AUTH_FAILED", WRONG)
    assert_refused(refusals["bob-sends"], 403, "FORBIDDEN", "User 'bob' may not send on this path.")
    for name in ("bob-watches-inbox", "bob-receives-inbox"):  # (?progress needs receiving rights)
        assert_refused(refusals[name], 403, "FORBIDDEN", "User 'bob' may not receive on this path.")
    assert relay.hub.registry.snapshot("/shared/b") is None  # (no refused party ever joined)


async def test_outside_the_rules_the_default_lets_anyone_and_a_user_in_without_credentials(
    start_relay: StartRelay, policy_file: Path
) -> None:
    """The default (anyone) needs no credentials; right ones are fine too; wrong ones are refused."""
    relay = await start_relay(policy_path=str(policy_file))
    got: dict[str, CurlResult] = {}
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(curl_into, got, "receiver", relay.url + "/open")
            send = ("-T", "-", *credentials("bob"), relay.url + "/open")
            nursery.start_soon(partial(curl_into, got, "sender", *send, stdin=PAYLOAD))
        wrong = await ask(*credentials("bob", "nope"), relay.url + "/open")
    assert hashlib.sha256(got["receiver"].stdout).hexdigest() == DIGEST
    assert got["sender"].stdout.decode().splitlines()[-1] == COMPLETE
    assert_refused(wrong, 401, "AUTH_FAILED", WRONG)


async def test_credentials_that_are_not_basic_or_not_user_colon_password_fail(
    start_relay: StartRelay, policy_file: Path
) -> None:
    relay = await start_relay(policy_path=str(policy_file))
    bad = [
        "Bearer abc",
        "Basic !!!not-base64",
        "Basic " + b64encode(b"alice").decode(),  # (no colon)
        "Basic " + b64encode(b"\xff\xfe:x").decode(),  # (not UTF-8)
    ]
    with trio.fail_after(20):
        for value in bad:
            response = await ask("-H", f"Authorization: {value}", relay.url + "/open")
            assert_refused(response, 401, "AUTH_FAILED", WRONG)
        spelled = "bASIC  " + b64encode(f"bob:{PASSWORDS['bob']}".encode()).decode()
        lower = await ask("-H", f"Authorization: {spelled}", "-T", "-", relay.url + "/shared/x")
    # the scheme is case-insensitive (RFC 9110 11.1): bob is known, then refused as bob
    assert_refused(lower, 403, "FORBIDDEN", "User 'bob' may not send on this path.")


# -- reloads -------------------------------------------------------------------------------------------


async def test_a_reload_while_a_transfer_runs_changes_new_parties_only(
    start_relay: StartRelay, policy_file: Path, hashes: dict[str, str], raw_clients: list[RawClient]
) -> None:
    relay = await start_relay(policy_path=str(policy_file))
    key = "/shared/slow"
    half = len(PAYLOAD) // 2
    got: dict[str, CurlResult] = {}
    token = b64encode(f"alice:{PASSWORDS['alice']}".encode())
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(curl_into, got, "receiver", *credentials("bob"), relay.url + key))
            await relay.wait_for_pipe(key, receivers=1)
            sender = await RawClient.connect(relay)
            raw_clients.append(sender)
            await sender.send(
                b"PUT %s HTTP/1.1\r\nHost: x\r\nAuthorization: Basic %s\r\nContent-Length: %d\r\n\r\n"
                % (key.encode(), token, len(PAYLOAD))
            )
            await sender.send(PAYLOAD[:half])
            await relay.wait_for_bytes(key, half)
            before = relay.hub.access
            assert before is not None
            old = before.policy
            write_atomically(policy_file, policy_text(hashes, senders='["bob"]'))
            before.reload_soon()
            await until(lambda: before.policy is not old)
            refused = await ask(*credentials("alice"), "-T", "-", relay.url + "/shared/other", stdin=b"x")
            await sender.send(PAYLOAD[half:])
            status, _, _ = parse_head(await sender.read_until(b"\r\n\r\n"))
            assert status == 200
            report = await sender.read_until(COMPLETE.encode())
    assert report.endswith(COMPLETE.encode())
    assert got["receiver"].returncode == 0, got["receiver"].stderr
    assert hashlib.sha256(got["receiver"].stdout).hexdigest() == DIGEST  # (the running transfer)
    assert_refused(refused, 403, "FORBIDDEN", "User 'alice' may not send on this path.")


@pytest.fixture
def fast_watch(monkeypatch: pytest.MonkeyPatch) -> float:
    """The policy file looked at every 0.1 s rather than 2 s (the loop reads the constant each turn)."""
    assert access_module.WATCH_INTERVAL == 2.0  # (as docs/access.md says)
    monkeypatch.setattr(access_module, "WATCH_INTERVAL", 0.1)
    return 0.1


def policy_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "pipe_relay" and r.levelno >= logging.ERROR]


async def test_a_malformed_file_seen_by_the_watch_keeps_the_policy_in_force(
    start_relay: StartRelay,
    policy_file: Path,
    hashes: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    fast_watch: float,
) -> None:
    caplog.set_level(logging.INFO, logger="pipe_relay")
    relay = await start_relay(policy_path=str(policy_file))
    access = relay.hub.access
    assert access is not None
    in_force = access.policy
    broken = policy_text(hashes, receivers='["alice", "carol"]')
    line = broken.splitlines().index("[[rules]]") + 1
    with trio.fail_after(20):
        write_atomically(policy_file, broken)
        await until(lambda: policy_errors(caplog))
        got: dict[str, CurlResult] = {}
        async with trio.open_nursery() as nursery:  # a new party the policy in force allows
            nursery.start_soon(
                partial(curl_into, got, "receiver", *credentials("bob"), relay.url + "/shared/after")
            )
            send = (*credentials("alice"), "-T", "-", relay.url + "/shared/after")
            nursery.start_soon(partial(curl_into, got, "sender", *send, stdin=PAYLOAD))
        anonymous = await ask("-T", "-", relay.url + "/shared/after", stdin=b"x")
        await trio.sleep(fast_watch * 5)  # (five more looks at the unchanged file: no more lines)
    assert access.policy is in_force
    assert hashlib.sha256(got["receiver"].stdout).hexdigest() == DIGEST
    assert_refused(anonymous, 401, "AUTH_REQUIRED", NEEDS_USER_TO_SEND)
    [error] = policy_errors(caplog)
    assert error.getMessage() == (
        f"policy not reloaded, the previous one stays: {policy_file}: line {line}: no user 'carol' in [users]"
    )
    # and the file mended is taken at the next look
    with trio.fail_after(10):
        write_atomically(policy_file, policy_text(hashes, receivers='["alice"]', users=("alice",)))
        await until(lambda: access.policy is not in_force)
    assert set(access.policy.users) == {"alice"}
    reloaded = [r.getMessage() for r in caplog.records if r.getMessage().startswith("policy reloaded")]
    assert reloaded == [f"policy reloaded from {policy_file}: 1 user(s), 2 rule(s)"]


# -- the command line ------------------------------------------------------------------------------------


async def run_cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return await trio.run_process(
        [sys.executable, "-m", "pipe_relay", *args],
        stdin=stdin,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=ROOT,
        env=env,
    )


async def test_a_malformed_policy_at_start_is_one_line_and_exit_2(
    tmp_path: Path, hashes: dict[str, str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        policy_text(hashes) + '\n[[rules]]\npattern = "/x/*"\nsend = "someone"\nreceive = "anyone"\n'
    )
    line = len(policy_text(hashes).splitlines()) + 2
    missing = tmp_path / "missing.toml"
    with trio.fail_after(20):
        broken = await run_cli("--policy", str(bad), "--host", "127.0.0.1", "--http-port", "0")
        absent = await run_cli("--policy", str(missing), "--host", "127.0.0.1", "--http-port", "0")
    assert (broken.returncode, broken.stdout) == (2, b"")
    assert broken.stderr.decode() == (
        f"pipe-relay: error: policy {bad}: line {line}: 'someone': use anyone, users, nobody or a list "
        "of users (see --help)\n"
    )
    assert (absent.returncode, absent.stdout) == (2, b"")
    assert absent.stderr.decode() == (
        f"pipe-relay: error: policy {missing}: No such file or directory (see --help)\n"
    )


def test_cors_origins_are_split_on_commas(policy_file: Path) -> None:
    config, _ = parse_args(
        ["--policy", str(policy_file), "--cors-origins", " https://a.example, https://b.example:8443 ,,"]
    )
    assert config.policy_path == str(policy_file)
    assert config.cors_origins == ("https://a.example", "https://b.example:8443")
    assert parse_args([])[0].cors_origins == ()


async def test_hash_password_reads_stdin_and_prints_only_a_hash_that_verifies() -> None:
    password = "correct horse battery staple, 7 times"
    with trio.fail_after(20):
        made = await run_cli("hash-password", stdin=password.encode() + b"\r\nsecond line\n")
    assert made.returncode == 0, made.stderr
    assert made.stderr == b""
    out = made.stdout.decode()
    assert out.endswith("\n") and out.count("\n") == 1
    stored = out.strip()
    assert stored.startswith("$argon2id$")
    assert PasswordHasher().verify(stored, password)
    assert password not in out and "horse" not in out


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("hash-password",), b"\n", "pipe-relay: error: an empty password\n"),
        (("hash-password",), b"", "pipe-relay: error: an empty password\n"),
        (
            ("hash-password", "hunter2-on-the-command-line"),
            b"",
            "usage: pipe-relay hash-password  (the password from the prompt or stdin)\n",
        ),
    ],
    ids=["empty-line", "no-input", "argument"],
)
async def test_hash_password_refuses_an_empty_password_or_one_on_the_command_line(
    args: tuple[str, ...], stdin: bytes, message: str
) -> None:
    with trio.fail_after(20):
        refused = await run_cli(*args, stdin=stdin)
    assert (refused.returncode, refused.stdout, refused.stderr.decode()) == (1, b"", message)


async def test_sighup_reloads_a_single_process_server(tmp_path: Path, hashes: dict[str, str]) -> None:
    """The file is rewritten in place with the same size, inode and mtime: the watch cannot see the
    change, so only the SIGHUP can have reloaded it."""
    path = tmp_path / "policy.toml"
    path.write_text(policy_text(hashes))
    with trio.fail_after(20):
        flags = ("--policy", str(path), "--host", "127.0.0.1", "--http-port", "0")
        async with cli_server(*flags) as (process, line):
            port = int(line.split("listening on ")[1].split()[0].rstrip("/").rpartition(":")[2])
            before = await sender_status("127.0.0.1", port, "/shared/before", "alice", PASSWORDS["alice"])
            rewrite_unseen(path, policy_text(hashes, senders='["bob"]'))
            process.send_signal(signal.SIGHUP)
            with trio.fail_after(8):  # (a bounded poll: longer than the file's watch would take)
                for tries in itertools.count():
                    after = await sender_status(
                        "127.0.0.1", port, f"/shared/after-{tries}", "alice", PASSWORDS["alice"]
                    )
                    if after != 200:
                        break
                    await trio.sleep(0.02)
            assert process.returncode is None  # (SIGHUP does not end the server)
    assert (before, after) == (200, 403)


def rewrite_unseen(path: Path, text: str) -> None:
    """`text` into `path` in place, padded to the old size, with the old mtime put back."""
    info = path.stat()
    data = text.encode()
    assert len(data) <= info.st_size, "the new text must not be longer"
    data += b"#" * (info.st_size - len(data))  # (a trailing comment, to the old size)
    with path.open("r+b") as stream:
        stream.write(data)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    after = path.stat()
    assert (after.st_mtime_ns, after.st_size, after.st_ino) == (info.st_mtime_ns, info.st_size, info.st_ino)


# -- CORS with a policy --------------------------------------------------------------------------------


def cors_of(response: Response) -> tuple[str | None, str | None]:
    return (
        response.headers.get("access-control-allow-origin"),
        response.headers.get("access-control-allow-credentials"),
    )


GOOD, OTHER, LOCAL = "https://good.example", "https://evil.example", "http://localhost:8080"
REFLECTED = {origin: (origin, "true") for origin in (GOOD, OTHER, LOCAL)}
STAR = ("*", None)


@pytest.mark.parametrize(
    ("policy", "cors_origins", "expected"),
    [
        (True, (), {GOOD: STAR, OTHER: STAR, LOCAL: STAR}),
        (True, (GOOD, LOCAL), {GOOD: REFLECTED[GOOD], OTHER: STAR, LOCAL: REFLECTED[LOCAL]}),
        (False, (), REFLECTED),
        (False, (GOOD,), REFLECTED),  # (--cors-origins matters only with a policy)
    ],
    ids=["policy", "policy-and-origins", "no-policy", "origins-without-policy"],
)
async def test_cors_with_a_policy_gives_credentials_to_the_listed_origins_only(
    start_relay: StartRelay,
    policy_file: Path,
    policy: bool,
    cors_origins: tuple[str, ...],
    expected: dict[str, tuple[str, str | None]],
) -> None:
    """Every answer (a transfer to bob's credentials, a preflight, a page, an error, a refusal) to
    each origin: credentials allowed only for an origin of --cors-origins (any, without a policy).
    With a policy, the credentials a request from any other origin carries are not used (a page on
    another site could ride a visitor's stored ones): its sender and receiver are asked for a user.
    The server's own origin (the web UI's: its host is the Host header) keeps its credentials."""
    relay = await start_relay(policy_path=str(policy_file) if policy else "", cors_origins=cors_origins)
    own = relay.url  # (curl's Host header is the URL's host and port)
    expected = {**expected, own: STAR if policy else (own, "true")}
    foreign = {o for o in expected if policy and o not in cors_origins and o != own}
    got: dict[tuple[str, str], Response] = {}
    with trio.fail_after(20):
        for origin in expected:
            header = ("-H", f"Origin: {origin}")

            async def fetch(
                name: str, *args: str, stdin: bytes = b"x", header: tuple[str, ...] = header
            ) -> None:
                got[header[1].removeprefix("Origin: "), name] = await ask(*header, *args, stdin=stdin)

            key = "/shared/cors-" + origin.rpartition("/")[2]
            receiver = ("receiver", *credentials("bob"), relay.url + key)
            sender = ("sender", *credentials("alice"), "-T", "-", relay.url + key)
            if origin in foreign:  # (each refused at once: no transfer)
                await fetch(*receiver)
                await fetch(*sender, stdin=PAYLOAD)
            else:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(partial(fetch, *receiver))
                    await relay.wait_for_pipe(key, receivers=1)
                    nursery.start_soon(partial(fetch, *sender, stdin=PAYLOAD))
            await fetch(
                "preflight", "-X", "OPTIONS", "-H", "Access-Control-Request-Method: PUT", relay.url + key
            )
            await fetch("page", relay.url + "/help")
            await fetch("error", relay.url + "/shared/x?n=0")
            if policy:
                await fetch("refusal", relay.url + "/shared/refused")
    statuses = {"receiver": 200, "sender": 200, "preflight": 200, "page": 200, "error": 400}
    statuses |= {"refusal": 401} if policy else {}
    assert {key: response.status for key, response in got.items()} == {
        (origin, name): 401 if origin in foreign and name in ("receiver", "sender") else status
        for origin in expected
        for name, status in statuses.items()
    }
    for (origin, name), response in got.items():
        assert cors_of(response) == expected[origin], (origin, name, response.headers)
        if expected[origin][1] is None:
            assert "origin" not in response.headers.get("vary", "").lower(), (origin, name, response.headers)
        if name in ("receiver", "sender") and origin in foreign:
            assert response.headers.get("x-pipe-error") == "AUTH_REQUIRED", (origin, name, response)
        elif name == "receiver":
            assert hashlib.sha256(response.body).hexdigest() == DIGEST
    assert bool(foreign) == policy


# -- timing ---------------------------------------------------------------------------------------------


async def timed(relay: Relay, user: str, password: str, status: int) -> float:
    """How long a sender's refusal takes, from its head sent to the reply's head read."""
    token = b64encode(f"{user}:{password}".encode())
    client = await RawClient.connect(relay)
    try:
        began = trio.current_time()
        await client.send(b"PUT /shared/t HTTP/1.1\r\nHost: x\r\nAuthorization: Basic %s\r\n\r\n" % token)
        head = await client.read_until(b"\r\n\r\n")
        took = trio.current_time() - began
    finally:
        await client.aclose()
    assert parse_head(head)[0] == status, (user, head)
    return took


async def test_a_wrong_user_takes_the_time_a_wrong_password_takes(
    start_relay: StartRelay, policy_file: Path
) -> None:
    """Real requests, interleaved, medians compared. The same comparison of a wrong password with a
    right one (remembered after its first check: no argon2 then) shows that the check can fail."""
    relay = await start_relay(policy_path=str(policy_file))
    times: dict[str, list[float]] = {"wrong user": [], "wrong password": [], "right password": []}
    with trio.fail_after(30):
        await timed(relay, "bob", PASSWORDS["bob"], 403)  # (checked once with argon2, then remembered)
        for index in range(8):
            times["wrong user"].append(await timed(relay, f"carol{index}", PASSWORDS["alice"], 401))
            times["wrong password"].append(await timed(relay, "alice", f"guess-{index}", 401))
            times["right password"].append(await timed(relay, "bob", PASSWORDS["bob"], 403))
    medians = {name: statistics.median(values) for name, values in times.items()}
    assert within(medians["wrong user"], medians["wrong password"], 0.25), medians
    assert not within(medians["right password"], medians["wrong password"], 0.25), medians  # (it can fail)


async def test_a_wrong_user_takes_a_wrong_password_s_time_whatever_tool_made_the_hashes(
    start_relay: StartRelay, tmp_path: Path
) -> None:
    """Hashes with other parameters than this argon2-cffi's defaults (another tool, an older
    version): an unknown user's stand-in has theirs (with our defaults it took 0.30 s against a
    wrong password's 0.006 s, and a name in the file could be told by time)."""
    other = PasswordHasher(time_cost=2, memory_cost=32768, parallelism=2)
    path = tmp_path / "policy.toml"
    write_atomically(path, policy_text({name: other.hash(password) for name, password in PASSWORDS.items()}))
    relay = await start_relay(policy_path=str(path))
    times: dict[str, list[float]] = {"wrong user": [], "wrong password": []}
    with trio.fail_after(30):
        for index in range(8):
            times["wrong user"].append(await timed(relay, f"carol{index}", PASSWORDS["alice"], 401))
            times["wrong password"].append(await timed(relay, "alice", f"guess-{index}", 401))
    medians = {name: statistics.median(values) for name, values in times.items()}
    assert within(medians["wrong user"], medians["wrong password"], 0.25), medians
