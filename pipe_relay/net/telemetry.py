# What the operator sees of each request and transfer: the process's tally (metrics) and the access log.
# Invariant: recording never waits, and costs a few slot additions per request or step, never per byte.
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
import time
from dataclasses import dataclass

import trio

from ..core.tally import Tally
from ..core.transfers import iso_time

TALLY = Tally()
"""This process's row of the tally (a worker's row is in the memory its siblings share)."""
access = logging.getLogger("pipe_relay.access")
_id_key = secrets.token_bytes(16)


def use_id_key(key: bytes) -> None:
    """Workers share the key of pipe ids, so a pipe has one id whichever worker names it."""
    global _id_key
    _id_key = key[:32]


def pipe_id(key: str) -> str:
    """A pipe's stand-in in the log and the admin API: the same for one path while the server runs,
    and no way back to the secret path (a keyed hash whose key never leaves memory)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8, key=_id_key)
    return digest.hexdigest()


def pipe_tag(key: str) -> str:
    return "pipe#" + pipe_id(key)


@dataclass(slots=True)
class Exchange:
    """One request as the access log tells it; its front end and the transfer fill it in."""

    protocol: str = "http1"
    client: str = ""
    method: str = "-"
    role: str = "page"
    pipe: str = ""
    """The pipe's id (or its path, with `--log-paths`)."""
    status: int = 0
    error: str = ""
    bytes_in: int = 0
    bytes_out: int = 0
    agent: str = ""
    user: str = ""
    """The user its credentials named (`--policy`), if any."""
    worker: int | None = None
    logged: bool = False
    """Told already (or not to be: a request moved to the worker that owns its pipe, which tells it)."""
    duration: float = 0.0
    """Seconds from its head to its end (set when it is told)."""
    began: float = 0.0
    """When its head was read (trio's clock)."""
    at: float = 0.0
    """When it was told (Unix time): its line's time."""

    def fields(self) -> dict[str, object]:
        return {
            "time": iso_time(self.at),
            "client": self.client,
            "method": self.method,
            "role": self.role,
            "pipe": self.pipe or None,
            "status": self.status,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "duration": round(self.duration, 6),
            "error": self.error or None,
            "user_agent": self.agent or None,
            "user": self.user or None,
            "protocol": self.protocol,
            "worker": self.worker,
        }


def _now() -> float:
    try:
        return trio.current_time()
    except RuntimeError:  # (made outside a run: an in-memory test's link)
        return 0.0


def log_exchange(exchange: Exchange) -> None:
    """The access log's line for a request that is over (at INFO: `--log-level warning` hushes it)."""
    if exchange.logged:
        return
    exchange.logged = True
    if access.isEnabledFor(logging.INFO):
        exchange.duration = _now() - exchange.began
        exchange.at = time.time()
        if _direct is not None:
            _direct.write(exchange)
        else:
            access.info("%s", _TextLine(exchange), extra={"access": exchange})


class _TextLine:
    """The text form, made only if a handler formats the record as text."""

    __slots__ = ("exchange",)

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    def __str__(self) -> str:
        e = self.exchange
        worker = "" if e.worker is None else f" worker={e.worker}"
        user = f" user={e.user}" if e.user else ""
        return (
            f"{e.client} {e.method} {e.role} pipe={e.pipe or '-'} status={e.status} in={e.bytes_in} "
            f"out={e.bytes_out} {e.duration:.3f}s error={e.error or '-'} {e.protocol}{worker}{user} "
            f"{_quoted(e.agent or '-')}"
        )


BATCH_LIMIT = 64 * 1024
"""Characters of log lines held before they are written (the server writes them every 0.1 s too)."""
FLUSH_INTERVAL = 0.1


class BatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr, one write for many lines: each record is formatted at once, and the lines go out at
    64 KiB, at every `flush()` (the server's every 0.1 s, and the one at exit), and at once from a
    warning up. A write per line was half of what an access line cost (measured: 41 µs a line to a
    file, 19 µs to /dev/null)."""

    def __init__(self) -> None:
        super().__init__()
        self._batch: list[str] = []
        self._size = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.write_line(text, now=record.levelno >= logging.WARNING)

    def write_line(self, text: str, *, now: bool = False) -> None:
        with self.lock or _NO_LOCK:
            self._batch.append(text + self.terminator)
            self._size += len(text) + 1
            if now or self._size >= BATCH_LIMIT:
                self.flush()

    def flush(self) -> None:
        with self.lock or _NO_LOCK:
            if self._batch:
                text, self._batch, self._size = "".join(self._batch), [], 0
                with contextlib.suppress(OSError):  # (stderr gone: nothing to tell it with)
                    self.stream.write(text)
            super().flush()


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


_NO_LOCK = _NoLock()


async def flush_logs() -> None:
    """Write the batched log lines every FLUSH_INTERVAL, until cancelled (then once more)."""

    def flush() -> None:
        for handler in logging.getLogger().handlers:
            handler.flush()

    try:
        while True:
            await trio.sleep(FLUSH_INTERVAL)
            flush()
    finally:
        flush()


class DirectAccessLog:
    """The server's own access lines, formatted as its log format would (`%(asctime)s INFO ...`, or
    JSON) and put straight into the batch: a logging record cost twice the line (measured in the
    server: an access line through `logging` took about 40 µs, a tenth of a small transfer). Only
    `__main__` turns it on, for its own stderr handler; an embedding program and the tests get
    records through `logging` as before."""

    def __init__(self, handler: BatchedStreamHandler, prefix: str, json_lines: bool) -> None:
        self.handler = handler
        self.prefix = prefix  # ("worker 1: " under --workers, as the format says)
        self.json_lines = json_lines
        self._second = -1
        self._stamp = ""

    def write(self, exchange: Exchange) -> None:
        if self.json_lines:
            line = json.dumps({"level": "info", "log": "access", **exchange.fields()})
        else:
            now = exchange.at
            second = int(now)
            if second != self._second:
                self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
            line = f"{self._stamp},{int((now - second) * 1000):03d} INFO {self.prefix}{_TextLine(exchange)}"
        self.handler.write_line(line)


_direct: DirectAccessLog | None = None


def write_access_lines(direct: DirectAccessLog | None) -> None:
    global _direct
    _direct = direct


def _quoted(text: str) -> str:
    """A JSON string (quotes, backslashes and control characters escaped), the plain ones cheaply."""
    if text.isprintable() and text.isascii() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return json.dumps(text)


class JsonFormatter(logging.Formatter):
    """`--log-format json`: every stderr line one JSON object (an access line: its fields)."""

    def format(self, record: logging.LogRecord) -> str:
        exchange = getattr(record, "access", None)
        if isinstance(exchange, Exchange):
            return json.dumps({"level": record.levelname.lower(), "log": "access", **exchange.fields()})
        line = {
            "time": iso_time(record.created),
            "level": record.levelname.lower(),
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)
