# Reply edges the mutation run showed unpinned: a refusal's exact bytes, header values past latin-1,
# and the health document while draining. Invariant: pure and sync; every assertion is an exact value.
from __future__ import annotations

import pytest

from pipe_relay.core.framing import field_value
from pipe_relay.core.replies import Reply, refusal
from pipe_relay.core.service import HealthFacts, health_document
from pipe_relay.errors import ErrorCode, pipe_error


def test_a_refusal_is_a_whole_response_that_closes_its_connection() -> None:
    error = pipe_error(ErrorCode.TOO_MANY_CONNECTIONS, ("Retry-After", "5"))
    assert refusal(error) == (
        b"HTTP/1.1 503 Service Unavailable\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 47\r\n"
        b"X-Pipe-Error: TOO_MANY_CONNECTIONS\r\n"
        b"Cache-Control: no-store\r\n"
        b"Retry-After: 5\r\n"
        b"X-Content-Type-Options: nosniff\r\n"
        b"Access-Control-Allow-Origin: *\r\n"
        b"Connection: close\r\n"
        b"\r\n"
        b"[ERROR] Too many connections. Try again later.\n"
    )


def test_a_refusal_of_a_bad_head_carries_its_detail() -> None:
    error = pipe_error(ErrorCode.BAD_REQUEST, detail="no Host")
    assert refusal(error).split(b"\r\n\r\n") == [
        b"HTTP/1.1 400 Bad Request\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 36\r\n"
        b"X-Pipe-Error: BAD_REQUEST\r\n"
        b"Cache-Control: no-store\r\n"
        b"X-Content-Type-Options: nosniff\r\n"
        b"Access-Control-Allow-Origin: *\r\n"
        b"Connection: close",
        b"[ERROR] Malformed request: no Host.\n",
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a\xffb", "a\xffb"),  # the last latin-1 character is kept
        ("a\u0100b", "a?b"),  # the first past latin-1 is `?`
        ("a\u0101\U0001f600b", "a??b"),
        ("a\x7f\x00b\u0100", "ab?"),  # controls dropped, not replaced
    ],
)
def test_a_header_value_keeps_latin_1_and_marks_what_is_past_it(value: str, expected: str) -> None:
    assert field_value(value) == expected
    assert Reply(200, (("X-Value", value),), b"").headers == (("X-Value", expected),)


def test_health_while_draining() -> None:
    facts = HealthFacts("b", "s", rss=1, heap=2, fds=3, pid=4, ip="127.0.0.1", user_agent="ua")
    assert health_document(facts, draining=True) == {
        "status": "draining",
        "service": "pipe-relay",
        "built": "b",
        "started": "s",
        "memory": {"rss": 1, "heap": 2},
        "fds": 3,
        "pid": 4,
        "ip": "127.0.0.1",
        "userAgent": "ua",
    }
    assert health_document(facts)["status"] == "ok"
