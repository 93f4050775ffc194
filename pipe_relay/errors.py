# The error catalogue: every rejection the server can make, with its status and one-line message.
# Invariant: each ErrorCode has exactly one status and one message template; messages are one line.
from __future__ import annotations

import enum


class ErrorCode(enum.Enum):
    """Machine-readable error codes, sent as the `X-Pipe-Error` header."""

    INVALID_N = "INVALID_N"
    N_MISMATCH = "N_MISMATCH"
    RESERVED_PATH = "RESERVED_PATH"
    DUPLICATE_SENDER = "DUPLICATE_SENDER"
    ACTIVE_TRANSFER = "ACTIVE_TRANSFER"
    RECEIVER_SLOTS_FULL = "RECEIVER_SLOTS_FULL"
    SERVICE_WORKER = "SERVICE_WORKER"
    CONTENT_RANGE = "CONTENT_RANGE"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    PATH_TOO_LONG = "PATH_TOO_LONG"
    TOO_MANY_PENDING = "TOO_MANY_PENDING"
    TOO_MANY_ACTIVE = "TOO_MANY_ACTIVE"
    TOO_MANY_CONNECTIONS = "TOO_MANY_CONNECTIONS"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    TOO_MANY_WATCHERS = "TOO_MANY_WATCHERS"
    CLIENT_PENDING_LIMIT = "CLIENT_PENDING_LIMIT"
    CLIENT_ACTIVE_LIMIT = "CLIENT_ACTIVE_LIMIT"
    CLIENT_WATCHER_LIMIT = "CLIENT_WATCHER_LIMIT"
    CLIENT_CONNECTION_LIMIT = "CLIENT_CONNECTION_LIMIT"
    CLIENT_PAGE_LIMIT = "CLIENT_PAGE_LIMIT"
    TTL_EXPIRED = "TTL_EXPIRED"
    HEAD_TIMEOUT = "HEAD_TIMEOUT"
    NOT_FOUND = "NOT_FOUND"
    BAD_REQUEST = "BAD_REQUEST"
    HEAD_TOO_LARGE = "HEAD_TOO_LARGE"
    TOO_MANY_HEADERS = "TOO_MANY_HEADERS"
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"
    INVALID_UPLOAD = "INVALID_UPLOAD"
    SENDER_FAILED = "SENDER_FAILED"
    WORKER_UNAVAILABLE = "WORKER_UNAVAILABLE"
    TERMINATED = "TERMINATED"
    AUTH_REQUIRED = "AUTH_REQUIRED"
    AUTH_FAILED = "AUTH_FAILED"
    FORBIDDEN = "FORBIDDEN"


# code -> (HTTP status, message template). Templates use str.format with named fields.
_CATALOGUE: dict[ErrorCode, tuple[int, str]] = {
    ErrorCode.INVALID_N: (
        400,
        "Invalid 'n' parameter {value!r}: must be an integer between 1 and {max}.",
    ),
    ErrorCode.N_MISMATCH: (
        400,
        "Receiver count mismatch on '{path}': this path expects n={expected}, got n={got}.",
    ),
    ErrorCode.RESERVED_PATH: (
        400,
        "'{path}' is a reserved path. Use a custom path like '/myfile' or '/transfer123'.",
    ),
    ErrorCode.DUPLICATE_SENDER: (400, "Path '{path}' already has a sender connected."),
    ErrorCode.ACTIVE_TRANSFER: (400, "Path '{path}' is already in use by an active transfer."),
    ErrorCode.RECEIVER_SLOTS_FULL: (
        400,
        "All {n} receiver slot(s) on '{path}' are taken.",
    ),
    ErrorCode.SERVICE_WORKER: (
        400,
        "Service Worker registration via pipe paths is not allowed.",
    ),
    ErrorCode.CONTENT_RANGE: (
        400,
        "Content-Range is not supported for streaming transfers; send the whole body.",
    ),
    ErrorCode.METHOD_NOT_ALLOWED: (405, "Method {method} is not allowed.{hint}"),
    ErrorCode.PATH_TOO_LONG: (414, "Path too long (max {max} characters)."),
    ErrorCode.TOO_MANY_PENDING: (503, "Too many pending transfers. Try again later."),
    ErrorCode.TOO_MANY_ACTIVE: (503, "Too many active transfers. Try again later."),
    ErrorCode.TOO_MANY_CONNECTIONS: (503, "Too many connections. Try again later."),
    ErrorCode.SHUTTING_DOWN: (503, "Server is shutting down."),
    ErrorCode.TOO_MANY_WATCHERS: (503, "Too many progress watchers. Try again later."),
    ErrorCode.CLIENT_PENDING_LIMIT: (
        429,
        "Too many waiting transfers from your address (max {max}). Try again later.",
    ),
    ErrorCode.CLIENT_ACTIVE_LIMIT: (
        429,
        "Too many active transfers from your address (max {max}). Try again later.",
    ),
    ErrorCode.CLIENT_WATCHER_LIMIT: (
        429,
        "Too many progress watchers from your address (max {max}). Try again later.",
    ),
    ErrorCode.CLIENT_CONNECTION_LIMIT: (
        429,
        "Too many connections from your address (max {max}). Try again later.",
    ),
    ErrorCode.CLIENT_PAGE_LIMIT: (
        429,
        "Too many replies on their way to your address (max {max}). Try again later.",
    ),
    ErrorCode.TTL_EXPIRED: (408, "Timed out waiting for sender."),
    ErrorCode.HEAD_TIMEOUT: (408, "Timed out waiting for the request head ({seconds} s)."),
    ErrorCode.NOT_FOUND: (404, "'{path}' is not a valid path. Use '{instead}'."),
    ErrorCode.BAD_REQUEST: (400, "Malformed request: {detail}."),
    ErrorCode.HEAD_TOO_LARGE: (431, "Request head too large (max {max} bytes)."),
    ErrorCode.TOO_MANY_HEADERS: (431, "Too many header lines (max {max})."),
    ErrorCode.UNSUPPORTED_VERSION: (505, "HTTP version {version} is not supported: use HTTP/1.1."),
    ErrorCode.INVALID_UPLOAD: (400, "Invalid upload: {detail}."),
    ErrorCode.SENDER_FAILED: (502, "The transfer failed before it started: {detail}."),
    ErrorCode.WORKER_UNAVAILABLE: (503, "The worker that serves this path is restarting. Try again later."),
    ErrorCode.TERMINATED: (410, "Transfer terminated by the operator."),
    ErrorCode.AUTH_REQUIRED: (401, "This path needs a user and password to {action} (curl -u USER)."),
    ErrorCode.AUTH_FAILED: (401, "Wrong user or password."),
    ErrorCode.FORBIDDEN: (403, "User '{user}' may not {action} on this path."),
}


class PipeError(Exception):
    """A rejection: what went wrong, the status to answer with, and any extra headers.

    A plain exception (not a frozen dataclass) so that trio and pytest can attach notes to it.
    """

    def __init__(
        self,
        code: ErrorCode,
        params: dict[str, object] | None = None,
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.code = code
        self.params = dict(params or {})
        self.extra_headers = extra_headers
        super().__init__(self.message)

    @property
    def status(self) -> int:
        return _CATALOGUE[self.code][0]

    @property
    def message(self) -> str:
        """The one-line `[ERROR] ...` text, without the trailing newline."""
        text = _CATALOGUE[self.code][1].format(**self.params)
        return "[ERROR] " + text.replace("\r", " ").replace("\n", " ")

    def __repr__(self) -> str:
        return f"PipeError({self.code.value}, {self.status}, {self.message!r})"


def status_of(code: ErrorCode) -> int:
    return _CATALOGUE[code][0]


def pipe_error(code: ErrorCode, *headers: tuple[str, str], **params: object) -> PipeError:
    """Build a PipeError: `pipe_error(ErrorCode.PATH_TOO_LONG, max=1024)`."""
    return PipeError(code, dict(params), tuple(headers))


class TransferFailure(enum.Enum):
    """Why a running transfer stopped before its end."""

    SENDER_GONE = "the sender disconnected before the end of its body"
    SENDER_IDLE = "the sender sent nothing for too long"
    BAD_FRAMING = "the sender's chunked body is malformed"
    BAD_UPLOAD = "the sender's upload is invalid"
    RECEIVERS_GONE = "all receivers disconnected"


class TransferError(Exception):
    """A transfer cannot complete. Receivers must not see a complete body."""

    def __init__(self, failure: TransferFailure, detail: str = "") -> None:
        self.failure = failure
        self.detail = detail
        super().__init__(f"{failure.value}{': ' + detail if detail else ''}")

    def __repr__(self) -> str:
        return f"TransferError({self.failure.name}, {self.detail!r})"
