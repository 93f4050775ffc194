# Locust load test for pipe-relay: each user is one sender plus n receivers on a fresh random path.
# A transfer counts when the sender got 200 and every receiver the exact body (size, sha256): any server.
"""Run headless, for example:

    locust -f loadtests/locustfile.py --headless -u 20 -r 5 -t 30s --host http://127.0.0.1:8080

Settings (environment variables): PIPE_N receivers per transfer (default 3), PIPE_SIZE body bytes
(default 1048576), PIPE_TIMEOUT seconds per transfer (default 60).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

import gevent
from locust import User, between, events, task
from locust.env import Environment

N = int(os.environ.get("PIPE_N", "3"))
SIZE = int(os.environ.get("PIPE_SIZE", str(1 << 20)))
TIMEOUT = float(os.environ.get("PIPE_TIMEOUT", "60"))
READ_SIZE = 1 << 16
REQUEST_NAME = f"sender + {N} receiver(s), {SIZE} bytes"


class TransferFailed(Exception):
    pass


def _receive(host: str, port: int, path: str) -> tuple[int, str]:
    """GET the pipe; (bytes received, sha256) of the body."""
    connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        if response.status != 200:
            raise TransferFailed(f"receiver got {response.status}: {response.read(200)!r}")
        digest = hashlib.sha256()
        size = 0
        while chunk := response.read(READ_SIZE):
            digest.update(chunk)
            size += len(chunk)
        return size, digest.hexdigest()
    finally:
        connection.close()


def _send(host: str, port: int, path: str, body: bytes) -> str:
    """PUT the body; the sender's response text (whatever the server writes there)."""
    connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        connection.request("PUT", path, body=body, headers={"Content-Type": "application/octet-stream"})
        response = connection.getresponse()
        text = response.read().decode("utf-8", "replace")
        if response.status != 200:
            raise TransferFailed(f"sender got {response.status}: {text.strip()}")
        return text
    finally:
        connection.close()


class PipeUser(User):
    """One sender and N receivers meeting on a fresh path, over and over."""

    wait_time = between(0, 0.1)

    def on_start(self) -> None:
        target = urlsplit(self.host or "http://127.0.0.1:8080")
        self.target_host = target.hostname or "127.0.0.1"
        self.target_port = target.port or 80
        self.body = secrets.token_bytes(SIZE)
        self.digest = hashlib.sha256(self.body).hexdigest()

    @task
    def transfer(self) -> None:
        path = f"/load-{secrets.token_hex(8)}?n={N}"
        started = time.perf_counter()
        failure: Exception | None = None
        try:
            receivers = [gevent.spawn(_receive, self.target_host, self.target_port, path) for _ in range(N)]
            _send(self.target_host, self.target_port, path, self.body)  # (any server: its 200 only)
            gevent.joinall(receivers, timeout=TIMEOUT, raise_error=True)
            for receiver in receivers:  # judged by what the receivers got, not by a server's wording
                if not receiver.successful():
                    raise TransferFailed("a receiver did not finish in time")
                size, digest = receiver.value
                if size != SIZE or digest != self.digest:
                    raise TransferFailed(f"receiver got {size} bytes (sha256 {digest[:12]}), expected {SIZE}")
        except (OSError, http.client.HTTPException, TransferFailed, gevent.Timeout) as exc:
            failure = exc
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.environment.events.request.fire(
            request_type="PIPE",
            name=REQUEST_NAME,
            response_time=elapsed_ms,
            response_length=SIZE * N,
            exception=failure,
            context={},
        )


@events.quitting.add_listener
def _report(environment: Environment, **_kwargs: Any) -> None:
    """Print the fan-out figures an operator wants: transfers/s and delivered bytes/s."""
    stats = environment.stats.get(REQUEST_NAME, "PIPE")
    total = environment.stats.total
    seconds = (
        max(total.last_request_timestamp - total.start_time, 1e-9) if total.last_request_timestamp else 0
    )
    done = stats.num_requests - stats.num_failures
    if seconds:
        print(
            f"pipe-relay load: {done} transfers ok, {stats.num_failures} failed, "
            f"{done / seconds:.1f} transfers/s, {done * SIZE * N / seconds / 1e6:.1f} MB/s delivered "
            f"to receivers (n={N}, {SIZE} bytes each)"
        )
