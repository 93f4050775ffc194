# The access log (logger `pipe_relay.access`) of a real server in-process, with real clients (curl, raw).
# Invariant: one line per request, its fields by name; no pipe path in any record unless `log_paths`.
from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from pipe_relay.net.telemetry import (
    BATCH_LIMIT,
    BatchedStreamHandler,
    DirectAccessLog,
    Exchange,
    JsonFormatter,
    _TextLine,
    pipe_id,
)
from tests.clients import CurlResult, RawClient, Relay, StartRelay, curl, curl_into

H2C = "--http2-prior-knowledge"
SECRET = "s3cret-pipe-Qx7"
"""A path segment no log record may hold (without `log_paths`)."""
FIELDS = {
    "time",
    "client",
    "method",
    "role",
    "pipe",
    "status",
    "bytes_in",
    "bytes_out",
    "duration",
    "error",
    "user_agent",
    "user",
    "protocol",
    "worker",
}
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record of the server, down to DEBUG (the path must not show at any level)."""
    caplog.set_level(logging.DEBUG, logger="pipe_relay")
    return caplog


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "pipe_relay.access"]


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The line's fields by name (`record.access`: the request's exchange, or its fields)."""
    access = getattr(record, "access")  # noqa: B009
    fields = access.fields() if hasattr(access, "fields") else access
    assert isinstance(fields, dict)
    return dict(fields)


class _Wake(logging.Handler):
    def __init__(self, event: trio.Event) -> None:
        super().__init__(logging.DEBUG)
        self.event = event

    def emit(self, record: logging.LogRecord) -> None:
        self.event.set()  # (logging calls it in the server's task: the same trio run)


async def lines(caplog: pytest.LogCaptureFixture, count: int) -> list[dict[str, Any]]:
    """The access lines once `count` are there (a line is told just after its reply went out, so
    a client may be done first); then a moment more, to see that no extra line comes."""
    logger = logging.getLogger("pipe_relay.access")
    while len(access_records(caplog)) < count:
        wake = _Wake(trio.Event())
        logger.addHandler(wake)
        try:
            if len(access_records(caplog)) < count:
                await wake.event.wait()
        finally:
            logger.removeHandler(wake)
    await trio.sleep(0.05)
    records = access_records(caplog)
    assert len(records) == count, [r.getMessage() for r in records]
    for record in records:
        assert record.levelno == logging.INFO
    return [fields_of(r) for r in records]


def by_role(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    roles = [e["role"] for e in entries]
    assert len(set(roles)) == len(roles), roles
    return {e["role"]: e for e in entries}


def record_text(record: logging.LogRecord) -> str:
    """All a record holds, as text: its message, its arguments, every attribute, the JSON form."""
    parts = [record.getMessage(), repr(record.args), JsonFormatter().format(record)]
    parts += [f"{name}={value!r}" for name, value in vars(record).items()]
    if hasattr(record, "access"):
        parts.append(json.dumps(fields_of(record)))
        parts.append(repr(getattr(record, "access")))  # noqa: B009
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(parts)


def assert_no_path(caplog: pytest.LogCaptureFixture, secret: str = SECRET) -> None:
    assert caplog.records, "no records: nothing was checked"
    for record in caplog.records:
        assert secret not in record_text(record), record.getMessage()
    assert secret not in caplog.text


def assert_line(entry: dict[str, Any]) -> None:
    assert set(entry) == FIELDS
    assert ISO.fullmatch(entry["time"])
    assert isinstance(entry["duration"], float) and 0 <= entry["duration"] < 30
    assert entry["client"] == "127.0.0.1"
    assert entry["worker"] is None  # (a single process)


async def transfer(
    relay: Relay, path: str, body: bytes, tmp_path: Path, *flags: str
) -> tuple[CurlResult, CurlResult]:
    """A receiver first, then a sender with Content-Length (`curl -T file`), both with `flags`."""
    source = tmp_path / "body.bin"
    source.write_bytes(body)
    got: dict[str, CurlResult] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(curl_into, got, "receiver", *flags, relay.url + path)
        await relay.wait_for_pipe(path, receivers=1)
        got["sender"] = await curl(*flags, "-T", str(source), relay.url + path)
    assert got["receiver"].returncode == 0 and got["sender"].returncode == 0, got
    assert got["receiver"].stdout == body
    assert got["sender"].stdout.endswith(b"[INFO] Transfer complete.\n")
    return got["sender"], got["receiver"]


# transfers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("flags", "protocol"), [((), "http1"), ((H2C,), "h2c")], ids=["http1", "h2c"])
async def test_a_transfer_logs_its_sender_and_its_receiver(
    relay: Relay, log: pytest.LogCaptureFixture, tmp_path: Path, flags: tuple[str, ...], protocol: str
) -> None:
    body = os.urandom(300_000)
    path = f"/{SECRET}/file.bin"
    with trio.fail_after(15):
        await transfer(relay, path, body, tmp_path, *flags)
        entries = await lines(log, 2)
    roles = by_role(entries)
    sender, receiver = roles["sender"], roles["receiver"]
    for entry in entries:
        assert_line(entry)
        assert entry["pipe"] == pipe_id(path) and re.fullmatch(r"[0-9a-f]{16}", entry["pipe"])
        assert entry["protocol"] == protocol
        assert entry["status"] == 200 and entry["error"] is None
        assert str(entry["user_agent"]).startswith("curl/")
    assert (sender["method"], sender["bytes_in"], sender["bytes_out"]) == ("PUT", len(body), 0)
    assert (receiver["method"], receiver["bytes_in"], receiver["bytes_out"]) == ("GET", 0, len(body))
    assert_no_path(log)


async def test_log_paths_puts_the_path_in_the_pipe_field(
    start_relay: StartRelay, log: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    relay = await start_relay(log_paths=True)
    path = f"/{SECRET}/shown"
    with trio.fail_after(15):
        await transfer(relay, path, b"logged path\n", tmp_path)
        entries = await lines(log, 2)
    assert [e["pipe"] for e in entries] == [path, path]
    assert {e["role"] for e in entries} == {"sender", "receiver"}
    texts = [r.getMessage() for r in access_records(log)]
    assert all(f"pipe={path} " in text for text in texts), texts
    with pytest.raises(AssertionError):
        assert_no_path(log)  # (the check finds a path where there is one)


async def test_each_party_of_a_multi_receiver_pipe_has_its_line(
    relay: Relay, log: pytest.LogCaptureFixture
) -> None:
    path = f"/{SECRET}/many"
    body = b"to three\n" * 1000
    got: dict[str, CurlResult] = {}
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            for name in ("r0", "r1", "r2"):
                nursery.start_soon(curl_into, got, name, f"{relay.url}{path}?n=3")
            await relay.wait_for_pipe(path, receivers=3)
            got["sender"] = await curl("-T", "-", f"{relay.url}{path}?n=3", stdin=body)
        entries = await lines(log, 4)
    assert [got[f"r{i}"].stdout for i in range(3)] == [body] * 3
    receivers = [e for e in entries if e["role"] == "receiver"]
    senders = [e for e in entries if e["role"] == "sender"]
    assert len(receivers) == 3 and len(senders) == 1
    assert [e["bytes_out"] for e in receivers] == [len(body)] * 3
    assert senders[0]["bytes_in"] == len(body)  # (chunked: the body's bytes, not the wire's)
    assert {e["pipe"] for e in entries} == {pipe_id(path)}
    assert_no_path(log)


# rejections and pages -----------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [(), (H2C,)], ids=["http1", "h2c"])
@pytest.mark.parametrize("method", ["GET", "PUT"])
async def test_a_rejection_logs_its_status_and_error(
    relay: Relay, log: pytest.LogCaptureFixture, flags: tuple[str, ...], method: str
) -> None:
    with trio.fail_after(10):
        result = await curl(
            *flags, "-X", method, "-o", "/dev/null", "-w", "%{http_code}", f"{relay.url}/{SECRET}?n=0"
        )
        (entry,) = await lines(log, 1)
    assert result.stdout == b"400"
    assert_line(entry)
    assert (entry["status"], entry["error"], entry["method"]) == (400, "INVALID_N", method)
    assert entry["protocol"] == ("h2c" if flags else "http1")
    assert entry["bytes_in"] == entry["bytes_out"] == 0
    assert_no_path(log)


async def test_a_page_logs_role_page(relay: Relay, log: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(10):
        result = await curl("-A", "tester/1.0", "-o", "/dev/null", "-w", "%{http_code}", relay.url + "/")
        (entry,) = await lines(log, 1)
    assert result.stdout == b"200"
    assert_line(entry)
    assert (entry["role"], entry["status"], entry["method"]) == ("page", 200, "GET")
    assert (entry["pipe"], entry["error"], entry["user_agent"]) == (None, None, "tester/1.0")


async def test_one_line_per_request_on_a_kept_alive_connection(
    relay: Relay, log: pytest.LogCaptureFixture, raw_clients: list[RawClient]
) -> None:
    client = await RawClient.connect(relay)
    raw_clients.append(client)
    requests = b"".join(
        f"GET {target} HTTP/1.1\r\nHost: relay\r\nUser-Agent: raw\r\n\r\n".encode()
        for target in ("/", "/help", f"/{SECRET}?n=0", "/")
    )
    with trio.fail_after(10):
        await client.send(requests)
        entries = await lines(log, 4)
    assert [e["status"] for e in entries] == [200, 200, 400, 200]
    assert [e["error"] for e in entries] == [None, None, "INVALID_N", None]
    assert all(e["role"] == "page" and e["protocol"] == "http1" for e in entries)
    assert_no_path(log)


async def test_a_request_that_cannot_be_parsed_has_its_line(
    relay: Relay, log: pytest.LogCaptureFixture, raw_clients: list[RawClient]
) -> None:
    client = await RawClient.connect(relay)
    raw_clients.append(client)
    with trio.fail_after(10):
        await client.send(b"GET /" + SECRET.encode() + b" HTTP/1.1\r\nHost relay\r\n\r\n")
        (entry,) = await lines(log, 1)
    assert 400 <= entry["status"] < 500 and entry["error"]
    assert entry["protocol"] == "http1" and entry["pipe"] is None
    assert_no_path(log)


# the text and JSON forms -----------------------------------------------------------------------


async def test_the_text_form(relay: Relay, log: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    body = b"text form\n" * 50
    path = f"/{SECRET}/text"
    with trio.fail_after(15):
        await transfer(relay, path, body, tmp_path)
        await lines(log, 2)
    texts = {fields_of(r)["role"]: r.getMessage() for r in access_records(log)}
    line = re.compile(
        r"127\.0\.0\.1 (GET|PUT) (sender|receiver) pipe=[0-9a-f]{16} status=200 in=\d+ out=\d+ "
        r'\d+\.\d{3}s error=- http1 "curl/[^"]+"'
    )
    for role, text in texts.items():
        assert line.fullmatch(text), text
        assert f" {role} pipe={pipe_id(path)} " in text
    assert f" in={len(body)} out=0 " in texts["sender"]
    assert f" in=0 out={len(body)} " in texts["receiver"]
    for record in access_records(log):
        assert str(record.msg % record.args) == record.getMessage()
    assert_no_path(log)


async def test_the_json_form(relay: Relay, log: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    path = f"/{SECRET}/json"
    with trio.fail_after(15):
        await transfer(relay, path, b"json form\n", tmp_path)
        await lines(log, 2)
    formatter = JsonFormatter()
    for record in access_records(log):
        line = formatter.format(record)
        assert "\n" not in line
        parsed = json.loads(line)
        assert parsed.pop("log") == "access" and parsed.pop("level") == "info"
        assert parsed == json.loads(json.dumps(fields_of(record)))
        assert set(parsed) == FIELDS
        assert parsed["pipe"] == pipe_id(path) and parsed["protocol"] == "http1"
    assert_no_path(log)


def test_a_plain_record_in_json() -> None:
    record = logging.LogRecord("pipe_relay", logging.WARNING, __file__, 1, "two\nlines %s", ("here",), None)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert set(parsed) == {"time", "level", "message"}
    assert parsed["level"] == "warning" and parsed["message"] == "two\nlines here"
    assert ISO.fullmatch(parsed["time"])


def test_a_record_with_an_exception_in_json() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        info = sys.exc_info()
    record = logging.LogRecord("pipe_relay", logging.ERROR, __file__, 1, "failed", (), info)
    parsed = json.loads(JsonFormatter().format(record))
    assert set(parsed) == {"time", "level", "message", "exception"}
    assert parsed["level"] == "error" and "RuntimeError: boom" in parsed["exception"]


# The server's own stderr: lines straight into a batch (pipe_relay/__main__ turns it on) ---------------


class _Stream:
    """A stream that records each write (one write: one batch)."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass


def _batched(json_lines: bool) -> tuple[BatchedStreamHandler, _Stream, DirectAccessLog]:
    handler = BatchedStreamHandler()
    stream = _Stream()
    handler.setStream(stream)  # type: ignore[arg-type]
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else logging.Formatter("%(asctime)s %(levelname)s worker 1: %(message)s")
    )
    return handler, stream, DirectAccessLog(handler, "worker 1: ", json_lines)


def _exchange() -> Exchange:
    exchange = Exchange("h2", "192.0.2.7", "PUT", role="sender", pipe="0123456789abcdef", agent='curl "8"')
    exchange.status, exchange.bytes_in, exchange.duration, exchange.worker = 200, 1234, 0.25, 1
    exchange.at = 1_765_000_000.123
    return exchange


@pytest.mark.parametrize("json_lines", [False, True])
def test_a_direct_line_reads_as_the_logged_one(json_lines: bool) -> None:
    """The server's fast path writes what `logging` would have written for the same request."""
    handler, stream, direct = _batched(json_lines)
    exchange = _exchange()
    direct.write(exchange)
    record = logging.LogRecord(
        "pipe_relay.access", logging.INFO, "x", 1, "%s", (str(_TextLine(exchange)),), None
    )
    record.created, record.msecs = (
        exchange.at,
        int((exchange.at - int(exchange.at)) * 1000) + 0.0,
    )  # (as logging)
    record.access = exchange
    handler.emit(record)
    handler.flush()
    assert len(stream.writes) == 1  # (both lines in one write)
    fast, slow = stream.writes[0].splitlines()
    if json_lines:
        assert json.loads(fast) == json.loads(slow) == {"level": "info", "log": "access", **exchange.fields()}
    else:
        assert fast == slow, (fast, slow)
        assert fast.endswith(
            "INFO worker 1: 192.0.2.7 PUT sender pipe=0123456789abcdef status=200 in=1234 "
            'out=0 0.250s error=- h2 worker=1 "curl \\"8\\""'
        )


def test_lines_wait_for_the_flush_but_a_warning_or_a_full_batch_goes_at_once() -> None:
    handler, stream, direct = _batched(False)
    direct.write(_exchange())
    direct.write(_exchange())
    assert stream.writes == []
    handler.emit(logging.LogRecord("pipe_relay", logging.WARNING, "x", 1, "careful", (), None))
    assert len(stream.writes) == 1 and stream.writes[0].count("\n") == 3
    assert stream.writes[0].splitlines()[-1].endswith("WARNING worker 1: careful")
    line = len(stream.writes[0].splitlines()[0]) + 1
    for _ in range(BATCH_LIMIT // line + 1):
        direct.write(_exchange())
    assert len(stream.writes) == 2  # (the batch went out at its limit, not later)
    direct.write(_exchange())
    assert len(stream.writes) == 2
    handler.flush()
    assert len(stream.writes) == 3 and all(w.endswith("\n") for w in stream.writes)
