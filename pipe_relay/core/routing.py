# Routing: decides what a request head asks for (a page, a preflight, a send, a receive) or why not.
# Invariant: every request gets exactly one decision or one PipeError; routing never touches a body.
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ErrorCode, pipe_error
from .headers import PIPE_ALLOW, SERVICE_ALLOW, Headers
from .paths import Reserved, Target, parse_n, parse_target


@dataclass(frozen=True, slots=True)
class Request:
    """A request head as the core sees it: text, lower-case header names."""

    method: str
    target: str
    headers: Headers
    http_version: str = "1.1"
    secure: bool = False
    """It came over TLS (so our own URLs, as the pages show them, are https://)."""
    _first: dict[str, str] = field(init=False, repr=False, compare=False)
    """The first value of each header name (a request's heads are looked up a dozen times)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_first", dict(reversed(self.headers)))

    def header(self, name: str) -> str | None:
        """The first value of header `name` (lower-case), or None."""
        return self._first.get(name)

    def joined(self, name: str) -> str | None:
        """Every value of header `name`, in order, joined with commas as RFC 9110 (5.3) combines a
        list field sent on several lines (a proxy may add an `X-Forwarded-For` line of its own
        rather than append to the client's); None if there is none."""
        values = [value for field, value in self.headers if field == name]
        return ", ".join(values) if values else None


@dataclass(frozen=True, slots=True)
class ServePage:
    page: Reserved
    target: Target
    head_only: bool


@dataclass(frozen=True, slots=True)
class Preflight:
    pass


@dataclass(frozen=True, slots=True)
class Send:
    key: str
    n: int
    target: Target


@dataclass(frozen=True, slots=True)
class Receive:
    key: str
    n: int
    target: Target

    @property
    def download(self) -> bool | None:
        return self.target.flag("download")

    @property
    def filename(self) -> str | None:
        values = self.target.values("filename")
        return values[0] if values else None


@dataclass(frozen=True, slots=True)
class Watch:
    """`?progress`: watch a pipe's state; takes no receiver slot."""

    key: str
    target: Target
    html: bool
    """The dashboard page (the client asked for HTML) rather than the event stream."""


@dataclass(frozen=True, slots=True)
class Play:
    """`?video` asked for by a browser (Accept: text/html): the player page; takes no receiver slot."""

    target: Target


Decision = ServePage | Preflight | Send | Receive | Watch | Play


def wants_html(accept: str | None) -> bool:
    """True when an Accept header names text/html (a browser navigating to the URL)."""
    return any(part.split(";", 1)[0].strip().lower() == "text/html" for part in (accept or "").split(","))


def route(request: Request, *, max_path_length: int, max_receivers: int) -> Decision:
    """Decide what to do with a request head. Raises PipeError for every rejection."""
    target = parse_target(request.target, max_path_length=max_path_length)
    method = request.method
    if method == "OPTIONS":
        return Preflight()
    if target.reserved is not None:
        return _route_reserved(method, target)
    if method not in ("GET", "POST", "PUT"):
        raise pipe_error(
            ErrorCode.METHOD_NOT_ALLOWED,
            ("Allow", PIPE_ALLOW),
            method=method,
            hint=" Use GET, POST, or PUT.",
        )
    if (request.header("service-worker") or "").strip().lower() == "script":
        raise pipe_error(ErrorCode.SERVICE_WORKER)
    if method == "GET" and target.flag("progress"):
        return Watch(target.key, target, html=wants_html(request.header("accept")))
    if method == "GET" and target.flag("video") and wants_html(request.header("accept")):
        return Play(target)
    n = parse_n(target, max_receivers=max_receivers)
    if method == "GET":
        return Receive(target.key, n, target)
    if request.header("content-range") is not None:
        raise pipe_error(ErrorCode.CONTENT_RANGE)
    return Send(target.key, n, target)


def _route_reserved(method: str, target: Target) -> ServePage:
    page = target.reserved
    assert page is not None
    if method in ("POST", "PUT") and not (page is Reserved.HEALTH and target.prefixed):
        raise pipe_error(ErrorCode.RESERVED_PATH, path=target.shown_path)
    if method not in ("GET", "HEAD"):
        raise pipe_error(ErrorCode.METHOD_NOT_ALLOWED, ("Allow", SERVICE_ALLOW), method=method, hint="")
    if page is Reserved.HEALTH and not target.prefixed:
        raise pipe_error(ErrorCode.NOT_FOUND, path="/health", instead="/api/v1/pipe/health")
    return ServePage(page, target, head_only=method == "HEAD")
