# Answers for the reserved paths: pages, help, version, robots, favicon and the health document.
# Invariant: these answers are complete small replies; they never touch the registry's state.
from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from .. import pages
from ..config import Config
from ..core.headers import SAFETY_HEADERS, cors_headers
from ..core.paths import Reserved
from ..core.replies import TEXT_PLAIN, Reply, reply
from ..core.routing import Play, Request, ServePage, Watch
from ..core.service import (
    ROBOTS_TXT,
    HealthFacts,
    base_url,
    health_document,
    help_text,
    version_line,
)
from .libc import heap_bytes

_STARTED = datetime.now(UTC)
_BUILT = datetime.fromtimestamp(Path(__file__).stat().st_mtime, UTC)
_HTML = "text/html; charset=utf-8"
_DEFAULT_MAX_RECEIVERS = Config().max_receivers
"""The largest ?n, for a caller that does not pass its server's own (the page must offer no more)."""


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _fd_count() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def page_reply(
    decision: ServePage,
    request: Request,
    peer: str,
    *,
    draining: bool = False,
    max_receivers: int = _DEFAULT_MAX_RECEIVERS,
    worker: dict[str, int] | None = None,
    policy: bool = False,
) -> Reply:
    """A reserved path's reply. `worker`: under --workers, the answering worker's facts for the
    health document."""
    origin = request.header("origin")
    url = base_url(request.header("host"), request.header("x-forwarded-proto"), secure=request.secure)
    page = decision.page
    prefixed = decision.target.prefixed
    if page is Reserved.INDEX:
        body, headers = pages.index_page(
            url=url, prefixed=prefixed, max_receivers=max_receivers, policy=policy
        )
        return reply(200, body.encode(), content_type=_HTML, origin=origin, extra=tuple(headers))
    if page is Reserved.NOSCRIPT:
        paths = decision.target.values("path")
        mode = "text" if decision.target.values("mode")[:1] == ["text"] else "file"
        body, headers = pages.noscript_page(
            url=url, path=paths[0] if paths else "", mode=mode, prefixed=prefixed
        )
        return reply(200, body.encode(), content_type=_HTML, origin=origin, extra=tuple(headers))
    if page is Reserved.HELP:  # built from Host and X-Forwarded-Proto: no shared cache may keep it
        return reply(
            200,
            help_text(url).encode(),
            content_type=TEXT_PLAIN,
            origin=origin,
            extra=(("Cache-Control", "no-store"), ("Vary", "Host, X-Forwarded-Proto")),
        )
    if page is Reserved.VERSION:
        return reply(200, version_line().encode(), content_type=TEXT_PLAIN, origin=origin)
    if page is Reserved.ROBOTS:
        return reply(200, ROBOTS_TXT.encode(), content_type=TEXT_PLAIN, origin=origin)
    if page is Reserved.FAVICON:
        return Reply(204, (*SAFETY_HEADERS, *cors_headers(origin)), b"")
    facts = HealthFacts(
        built=_iso(_BUILT),
        started=_iso(_STARTED),
        rss=_rss_bytes(),
        heap=heap_bytes(),
        fds=_fd_count(),
        pid=os.getpid(),
        ip=peer,
        user_agent=request.header("user-agent") or "",
    )
    document = (json.dumps(health_document(facts, draining=draining, worker=worker)) + "\n").encode()
    return reply(
        503 if draining else 200,  # a load balancer stops sending here
        document,
        content_type="application/json",
        origin=origin,
        extra=(("Cache-Control", "no-store"),),
        cors=False,  # pid, descriptors and memory are no other website's business
    )


def progress_page_reply(decision: Watch, request: Request) -> Reply:
    target = decision.target
    body, headers = pages.progress_page(path=target.shown_path, prefixed=target.prefixed)
    origin = request.header("origin")
    return reply(200, body.encode(), content_type=_HTML, origin=origin, extra=tuple(headers))


def video_page_reply(decision: Play, request: Request) -> Reply:
    target = decision.target
    url = base_url(request.header("host"), request.header("x-forwarded-proto"), secure=request.secure)
    body, headers = pages.video_page(url=url, path=target.shown_path, prefixed=target.prefixed)
    origin = request.header("origin")
    return reply(200, body.encode(), content_type=_HTML, origin=origin, extra=tuple(headers))
