# Complete replies (errors, preflight, plain) and the error catalogue: every code's status and message.
# Invariant: pure and sync; replies are compared whole (status, headers in order, body), messages exactly.
from __future__ import annotations

import pytest

from pipe_relay.core.replies import TEXT_PLAIN, Reply, error_reply, preflight_reply, reply
from pipe_relay.errors import ErrorCode, PipeError, TransferError, TransferFailure, pipe_error, status_of

# ---- replies


def test_error_reply_without_origin() -> None:
    error = pipe_error(ErrorCode.PATH_TOO_LONG, max=1024)
    body = b"[ERROR] Path too long (max 1024 characters).\n"
    assert error_reply(error, origin=None) == Reply(
        414,
        (
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("X-Pipe-Error", "PATH_TOO_LONG"),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("Access-Control-Allow-Origin", "*"),
        ),
        body,
    )


def test_error_reply_with_origin_and_extra_headers() -> None:
    error = pipe_error(ErrorCode.TOO_MANY_PENDING, ("Retry-After", "5"))
    result = error_reply(error, origin="https://app.example.com")
    assert result.status == 503
    assert result.body == b"[ERROR] Too many pending transfers. Try again later.\n"
    assert result.headers == (
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", "53"),
        ("X-Pipe-Error", "TOO_MANY_PENDING"),
        ("Cache-Control", "no-store"),
        ("Retry-After", "5"),
        ("X-Content-Type-Options", "nosniff"),
        ("Access-Control-Allow-Origin", "https://app.example.com"),
        ("Access-Control-Allow-Credentials", "true"),
        ("Vary", "Origin"),
    )


def test_error_reply_method_not_allowed_carries_allow() -> None:
    error = pipe_error(
        ErrorCode.METHOD_NOT_ALLOWED,
        ("Allow", "GET, POST, PUT, OPTIONS"),
        method="DELETE",
        hint=" Use GET, POST, or PUT.",
    )
    result = error_reply(error, origin="null")
    headers = dict(result.headers)
    assert result.status == 405
    assert result.body == b"[ERROR] Method DELETE is not allowed. Use GET, POST, or PUT.\n"
    assert headers["Allow"] == "GET, POST, PUT, OPTIONS"
    assert headers["X-Pipe-Error"] == "METHOD_NOT_ALLOWED"
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in headers


def test_error_reply_content_length_counts_utf8_bytes() -> None:
    error = pipe_error(ErrorCode.DUPLICATE_SENDER, path="/caf\u00e9")
    result = error_reply(error, origin=None)
    assert result.body == "[ERROR] Path '/caf\u00e9' already has a sender connected.\n".encode()
    assert len(result.body) == len(result.body.decode()) + 1
    assert dict(result.headers)["Content-Length"] == str(len(result.body))


@pytest.mark.parametrize("code", list(ErrorCode))
def test_error_reply_for_every_code(code: ErrorCode) -> None:
    error = PipeError(code, params_for(code))
    result = error_reply(error, origin=None)
    headers = dict(result.headers)
    assert result.status == status_of(code)
    assert headers["Content-Type"] == TEXT_PLAIN == "text/plain; charset=utf-8"
    assert headers["Content-Length"] == str(len(result.body))
    assert headers["X-Pipe-Error"] == code.value
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert result.body.startswith(b"[ERROR] ")
    assert result.body.endswith(b"\n")
    assert result.body.count(b"\n") == 1


def test_preflight_reply_with_origin_and_private_network() -> None:
    assert preflight_reply(origin="https://app.example.com", private_network=True) == Reply(
        200,
        (
            ("Access-Control-Allow-Origin", "https://app.example.com"),
            ("Access-Control-Allow-Credentials", "true"),
            ("Vary", "Origin"),
            ("Access-Control-Allow-Methods", "GET, POST, PUT, OPTIONS"),
            (
                "Access-Control-Allow-Headers",
                "Content-Type, Content-Disposition, Authorization, X-Piping, X-Hoody-Pipe",
            ),
            ("Access-Control-Max-Age", "86400"),
            ("Access-Control-Allow-Private-Network", "true"),
            ("X-Content-Type-Options", "nosniff"),
            ("Content-Length", "0"),
        ),
        b"",
    )


def test_preflight_reply_without_origin() -> None:
    result = preflight_reply(origin=None, private_network=False)
    assert result.status == 200
    assert result.body == b""
    assert result.headers == (
        ("Access-Control-Allow-Origin", "*"),
        ("Access-Control-Allow-Methods", "GET, POST, PUT, OPTIONS"),
        (
            "Access-Control-Allow-Headers",
            "Content-Type, Content-Disposition, Authorization, X-Piping, X-Hoody-Pipe",
        ),
        ("Access-Control-Max-Age", "86400"),
        ("X-Content-Type-Options", "nosniff"),
        ("Content-Length", "0"),
    )


def test_plain_reply() -> None:
    result = reply(200, b"User-agent: *\n", content_type="text/plain", origin=None, extra=(("X-A", "1"),))
    assert result == Reply(
        200,
        (
            ("Content-Type", "text/plain"),
            ("Content-Length", "14"),
            ("X-A", "1"),
            ("X-Content-Type-Options", "nosniff"),
            ("Access-Control-Allow-Origin", "*"),
        ),
        b"User-agent: *\n",
    )


def test_reply_without_content_type() -> None:
    result = reply(204, b"", content_type=None, origin=None)
    assert result.headers == (
        ("Content-Length", "0"),
        ("X-Content-Type-Options", "nosniff"),
        ("Access-Control-Allow-Origin", "*"),
    )


# ---- error catalogue

# code -> (status, template parameters, exact message)
CATALOGUE: dict[ErrorCode, tuple[int, dict[str, object], str]] = {
    ErrorCode.INVALID_N: (
        400,
        {"value": "0", "max": 256},
        "[ERROR] Invalid 'n' parameter '0': must be an integer between 1 and 256.",
    ),
    ErrorCode.N_MISMATCH: (
        400,
        {"path": "/x", "expected": 2, "got": 3},
        "[ERROR] Receiver count mismatch on '/x': this path expects n=2, got n=3.",
    ),
    ErrorCode.RESERVED_PATH: (
        400,
        {"path": "/help"},
        "[ERROR] '/help' is a reserved path. Use a custom path like '/myfile' or '/transfer123'.",
    ),
    ErrorCode.DUPLICATE_SENDER: (
        400,
        {"path": "/mypath"},
        "[ERROR] Path '/mypath' already has a sender connected.",
    ),
    ErrorCode.ACTIVE_TRANSFER: (
        400,
        {"path": "/mypath"},
        "[ERROR] Path '/mypath' is already in use by an active transfer.",
    ),
    ErrorCode.RECEIVER_SLOTS_FULL: (
        400,
        {"path": "/x", "n": 2},
        "[ERROR] All 2 receiver slot(s) on '/x' are taken.",
    ),
    ErrorCode.SERVICE_WORKER: (
        400,
        {},
        "[ERROR] Service Worker registration via pipe paths is not allowed.",
    ),
    ErrorCode.CONTENT_RANGE: (
        400,
        {},
        "[ERROR] Content-Range is not supported for streaming transfers; send the whole body.",
    ),
    ErrorCode.METHOD_NOT_ALLOWED: (
        405,
        {"method": "DELETE", "hint": " Use GET, POST, or PUT."},
        "[ERROR] Method DELETE is not allowed. Use GET, POST, or PUT.",
    ),
    ErrorCode.PATH_TOO_LONG: (414, {"max": 1024}, "[ERROR] Path too long (max 1024 characters)."),
    ErrorCode.TOO_MANY_PENDING: (503, {}, "[ERROR] Too many pending transfers. Try again later."),
    ErrorCode.TOO_MANY_ACTIVE: (503, {}, "[ERROR] Too many active transfers. Try again later."),
    ErrorCode.TOO_MANY_CONNECTIONS: (503, {}, "[ERROR] Too many connections. Try again later."),
    ErrorCode.SHUTTING_DOWN: (503, {}, "[ERROR] Server is shutting down."),
    ErrorCode.TOO_MANY_WATCHERS: (503, {}, "[ERROR] Too many progress watchers. Try again later."),
    ErrorCode.CLIENT_PENDING_LIMIT: (
        429,
        {"max": 64},
        "[ERROR] Too many waiting transfers from your address (max 64). Try again later.",
    ),
    ErrorCode.CLIENT_ACTIVE_LIMIT: (
        429,
        {"max": 32},
        "[ERROR] Too many active transfers from your address (max 32). Try again later.",
    ),
    ErrorCode.CLIENT_WATCHER_LIMIT: (
        429,
        {"max": 32},
        "[ERROR] Too many progress watchers from your address (max 32). Try again later.",
    ),
    ErrorCode.CLIENT_CONNECTION_LIMIT: (
        429,
        {"max": 256},
        "[ERROR] Too many connections from your address (max 256). Try again later.",
    ),
    ErrorCode.CLIENT_PAGE_LIMIT: (
        429,
        {"max": 64},
        "[ERROR] Too many replies on their way to your address (max 64). Try again later.",
    ),
    ErrorCode.TTL_EXPIRED: (408, {}, "[ERROR] Timed out waiting for sender."),
    ErrorCode.NOT_FOUND: (
        404,
        {"path": "/health", "instead": "/api/v1/pipe/health"},
        "[ERROR] '/health' is not a valid path. Use '/api/v1/pipe/health'.",
    ),
    ErrorCode.BAD_REQUEST: (400, {"detail": "bad"}, "[ERROR] Malformed request: bad."),
    ErrorCode.HEAD_TOO_LARGE: (431, {"max": 65536}, "[ERROR] Request head too large (max 65536 bytes)."),
    ErrorCode.HEAD_TIMEOUT: (
        408,
        {"seconds": "10"},
        "[ERROR] Timed out waiting for the request head (10 s).",
    ),
    ErrorCode.TOO_MANY_HEADERS: (431, {"max": 100}, "[ERROR] Too many header lines (max 100)."),
    ErrorCode.UNSUPPORTED_VERSION: (
        505,
        {"version": "2.0"},
        "[ERROR] HTTP version 2.0 is not supported: use HTTP/1.1.",
    ),
    ErrorCode.INVALID_UPLOAD: (400, {"detail": "cut"}, "[ERROR] Invalid upload: cut."),
    ErrorCode.SENDER_FAILED: (
        502,
        {"detail": "gone"},
        "[ERROR] The transfer failed before it started: gone.",
    ),
    ErrorCode.WORKER_UNAVAILABLE: (
        503,
        {},
        "[ERROR] The worker that serves this path is restarting. Try again later.",
    ),
    ErrorCode.TERMINATED: (410, {}, "[ERROR] Transfer terminated by the operator."),
    ErrorCode.AUTH_REQUIRED: (
        401,
        {"action": "send"},
        "[ERROR] This path needs a user and password to send (curl -u USER).",
    ),
    ErrorCode.AUTH_FAILED: (401, {}, "[ERROR] Wrong user or password."),
    ErrorCode.FORBIDDEN: (
        403,
        {"user": "bob", "action": "receive"},
        "[ERROR] User 'bob' may not receive on this path.",
    ),
}


def params_for(code: ErrorCode) -> dict[str, object]:
    return CATALOGUE[code][1]


def test_every_code_is_in_the_table() -> None:
    assert set(CATALOGUE) == set(ErrorCode)


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_code_has_its_status_and_a_one_line_message(code: ErrorCode) -> None:
    status, params, message = CATALOGUE[code]
    error = PipeError(code, params)
    assert error.status == status == status_of(code)
    assert error.message == message
    assert error.message.startswith("[ERROR] ")
    assert len(error.message) > len("[ERROR] ")
    assert "\n" not in error.message
    assert "\r" not in error.message
    assert error.code.value == code.name
    assert str(error) == error.message


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (pipe_error(ErrorCode.TTL_EXPIRED), "[ERROR] Timed out waiting for sender."),
        (pipe_error(ErrorCode.PATH_TOO_LONG, max=1024), "[ERROR] Path too long (max 1024 characters)."),
        (pipe_error(ErrorCode.TOO_MANY_PENDING), "[ERROR] Too many pending transfers. Try again later."),
        (
            pipe_error(ErrorCode.ACTIVE_TRANSFER, path="/mypath"),
            "[ERROR] Path '/mypath' is already in use by an active transfer.",
        ),
        (
            pipe_error(ErrorCode.DUPLICATE_SENDER, path="/mypath"),
            "[ERROR] Path '/mypath' already has a sender connected.",
        ),
        (
            pipe_error(ErrorCode.RESERVED_PATH, path="/help"),
            "[ERROR] '/help' is a reserved path. Use a custom path like '/myfile' or '/transfer123'.",
        ),
        (
            pipe_error(ErrorCode.METHOD_NOT_ALLOWED, method="DELETE", hint=" Use GET, POST, or PUT."),
            "[ERROR] Method DELETE is not allowed. Use GET, POST, or PUT.",
        ),
        (
            pipe_error(ErrorCode.NOT_FOUND, path="/health", instead="/api/v1/pipe/health"),
            "[ERROR] '/health' is not a valid path. Use '/api/v1/pipe/health'.",
        ),
        (
            pipe_error(ErrorCode.HEAD_TOO_LARGE, max=65536),
            "[ERROR] Request head too large (max 65536 bytes).",
        ),
    ],
)
def test_spec_messages(error: PipeError, message: str) -> None:
    assert error.message == message


def test_messages_never_span_lines() -> None:
    error = pipe_error(ErrorCode.DUPLICATE_SENDER, path="/a\r\nX-Injected: 1\nb")
    assert error.message == "[ERROR] Path '/a  X-Injected: 1 b' already has a sender connected."


def test_pipe_error_keeps_extra_headers_and_params() -> None:
    error = pipe_error(ErrorCode.TOO_MANY_ACTIVE, ("Retry-After", "5"))
    assert error.extra_headers == (("Retry-After", "5"),)
    assert error.params == {}
    assert (
        repr(error)
        == "PipeError(TOO_MANY_ACTIVE, 503, '[ERROR] Too many active transfers. Try again later.')"
    )


def test_transfer_error_text() -> None:
    error = TransferError(TransferFailure.SENDER_GONE, "12 of 100 bytes")
    assert str(error) == "the sender disconnected before the end of its body: 12 of 100 bytes"
    assert str(TransferError(TransferFailure.RECEIVERS_GONE)) == "all receivers disconnected"
