# Tests for routing: what each request head asks for, or the exact rejection it gets.
from __future__ import annotations

import pytest

from pipe_relay.core.headers import Headers
from pipe_relay.core.paths import Reserved
from pipe_relay.core.routing import (
    Decision,
    Play,
    Preflight,
    Receive,
    Request,
    Send,
    ServePage,
    Watch,
    route,
    wants_html,
)
from pipe_relay.errors import ErrorCode, PipeError

MAX_PATH = 1024
MAX_N = 256

RESERVED_TARGETS = [
    ("/", Reserved.INDEX),
    ("/api/v1/pipe", Reserved.INDEX),
    ("/api/v1/pipe/", Reserved.INDEX),
    ("/help", Reserved.HELP),
    ("/api/v1/pipe/help", Reserved.HELP),
    ("/noscript", Reserved.NOSCRIPT),
    ("/api/v1/pipe/noscript", Reserved.NOSCRIPT),
    ("/favicon.ico", Reserved.FAVICON),
    ("/api/v1/pipe/favicon.ico", Reserved.FAVICON),
    ("/robots.txt", Reserved.ROBOTS),
    ("/api/v1/pipe/robots.txt", Reserved.ROBOTS),
    ("/version", Reserved.VERSION),
    ("/api/v1/pipe/version", Reserved.VERSION),
    ("/api/v1/pipe/health", Reserved.HEALTH),
]


def decide(method: str, target: str, headers: Headers = ()) -> Decision:
    return route(Request(method, target, headers), max_path_length=MAX_PATH, max_receivers=MAX_N)


def rejection(method: str, target: str, headers: Headers = ()) -> PipeError:
    with pytest.raises(PipeError) as info:
        decide(method, target, headers)
    return info.value


@pytest.mark.parametrize(
    "target",
    ["/x", "/api/v1/pipe/x", "/", "/help", "/health", "/api/v1/pipe/health", "/x?n=abc", "/x?n=0"],
)
def test_options_anywhere_is_a_preflight(target: str) -> None:
    assert decide("OPTIONS", target) == Preflight()


@pytest.mark.parametrize(("target", "page"), RESERVED_TARGETS)
def test_get_on_reserved_serves_the_page(target: str, page: Reserved) -> None:
    decision = decide("GET", target)
    assert isinstance(decision, ServePage)
    assert decision.page is page
    assert decision.head_only is False


@pytest.mark.parametrize(("target", "page"), RESERVED_TARGETS)
def test_head_on_reserved_serves_headers_only(target: str, page: Reserved) -> None:
    decision = decide("HEAD", target)
    assert isinstance(decision, ServePage)
    assert decision.page is page
    assert decision.head_only is True


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_any_other_method_on_the_health_endpoint_is_405(method: str) -> None:
    """The spec: methods other than GET/HEAD/OPTIONS on /api/v1/pipe/health get 405."""
    error = rejection(method, "/api/v1/pipe/health")
    assert error.code is ErrorCode.METHOD_NOT_ALLOWED
    assert error.status == 405
    assert error.message == f"[ERROR] Method {method} is not allowed."
    assert error.extra_headers == (("Allow", "GET, HEAD, OPTIONS"),)


@pytest.mark.parametrize("method", ["POST", "PUT"])
@pytest.mark.parametrize(
    ("target", "shown"),
    [
        ("/", "/"),
        ("/help", "/help"),
        ("/noscript", "/noscript"),
        ("/favicon.ico", "/favicon.ico"),
        ("/robots.txt", "/robots.txt"),
        ("/version", "/version"),
        ("/health", "/health"),
        ("/api/v1/pipe/help", "/api/v1/pipe/help"),
        ("/api/v1/pipe/noscript", "/api/v1/pipe/noscript"),
    ],
)
def test_send_to_reserved_path_is_rejected(method: str, target: str, shown: str) -> None:
    error = rejection(method, target)
    assert error.code is ErrorCode.RESERVED_PATH
    assert error.status == 400
    assert error.message == (
        f"[ERROR] '{shown}' is a reserved path. Use a custom path like '/myfile' or '/transfer123'."
    )
    assert error.extra_headers == ()


def test_reserved_path_message_matches_the_spec() -> None:
    assert rejection("POST", "/help").message == (
        "[ERROR] '/help' is a reserved path. Use a custom path like '/myfile' or '/transfer123'."
    )


@pytest.mark.parametrize("method", ["DELETE", "PATCH", "TRACE"])
@pytest.mark.parametrize("target", ["/help", "/api/v1/pipe/health", "/version", "/"])
def test_other_methods_on_reserved_paths_are_405(method: str, target: str) -> None:
    error = rejection(method, target)
    assert error.code is ErrorCode.METHOD_NOT_ALLOWED
    assert error.status == 405
    assert error.message == f"[ERROR] Method {method} is not allowed."
    assert error.extra_headers == (("Allow", "GET, HEAD, OPTIONS"),)


@pytest.mark.parametrize("method", ["DELETE", "HEAD", "PATCH", "CONNECT", "TRACE"])
@pytest.mark.parametrize("target", ["/x", "/api/v1/pipe/x", "/a/b?n=2"])
def test_other_methods_on_pipe_paths_are_405(method: str, target: str) -> None:
    error = rejection(method, target)
    assert error.code is ErrorCode.METHOD_NOT_ALLOWED
    assert error.status == 405
    assert error.message == f"[ERROR] Method {method} is not allowed. Use GET, POST, or PUT."
    assert error.extra_headers == (("Allow", "GET, POST, PUT, OPTIONS"),)


def test_delete_message_matches_the_spec() -> None:
    assert rejection("DELETE", "/mypath").message == (
        "[ERROR] Method DELETE is not allowed. Use GET, POST, or PUT."
    )


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("target", ["/health", "/health?x=1"])
def test_bare_health_is_not_found(method: str, target: str) -> None:
    error = rejection(method, target)
    assert error.code is ErrorCode.NOT_FOUND
    assert error.status == 404
    assert error.message == "[ERROR] '/health' is not a valid path. Use '/api/v1/pipe/health'."


@pytest.mark.parametrize("method", ["GET", "POST", "PUT"])
@pytest.mark.parametrize("value", ["script", "Script", " script "])
def test_service_worker_script_is_rejected(method: str, value: str) -> None:
    error = rejection(method, "/x", [("service-worker", value)])
    assert error.code is ErrorCode.SERVICE_WORKER
    assert error.status == 400
    assert error.message == "[ERROR] Service Worker registration via pipe paths is not allowed."


@pytest.mark.parametrize("value", ["other", "", "scripts"])
def test_other_service_worker_values_are_allowed(value: str) -> None:
    decision = decide("GET", "/x", [("service-worker", value)])
    assert isinstance(decision, Receive)
    assert (decision.key, decision.n) == ("/x", 1)


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_content_range_on_send_is_rejected(method: str) -> None:
    error = rejection(method, "/x", [("content-range", "bytes 0-9/100")])
    assert error.code is ErrorCode.CONTENT_RANGE
    assert error.status == 400
    assert error.message == (
        "[ERROR] Content-Range is not supported for streaming transfers; send the whole body."
    )


def test_content_range_on_receive_is_ignored() -> None:
    decision = decide("GET", "/x", [("content-range", "bytes 0-9/100")])
    assert isinstance(decision, Receive)
    assert decision.key == "/x"


@pytest.mark.parametrize("method", ["POST", "PUT"])
@pytest.mark.parametrize(
    ("target", "key", "n"),
    [
        ("/x", "/x", 1),
        ("/api/v1/pipe/x", "/x", 1),
        ("/x?n=3", "/x", 3),
        ("/api/v1/pipe/a/b?n=256", "/a/b", 256),
    ],
)
def test_send(method: str, target: str, key: str, n: int) -> None:
    decision = decide(method, target)
    assert isinstance(decision, Send)
    assert (decision.key, decision.n) == (key, n)


@pytest.mark.parametrize(
    ("target", "key", "n"),
    [("/x", "/x", 1), ("/api/v1/pipe/x", "/x", 1), ("/x?n=3", "/x", 3), ("/api/v1/pipe/a/b?n=2", "/a/b", 2)],
)
def test_receive(target: str, key: str, n: int) -> None:
    decision = decide("GET", target)
    assert isinstance(decision, Receive)
    assert (decision.key, decision.n) == (key, n)


@pytest.mark.parametrize("method", ["GET", "POST", "PUT"])
def test_invalid_n_is_rejected_on_pipe_paths(method: str) -> None:
    error = rejection(method, "/x?n=0")
    assert error.code is ErrorCode.INVALID_N
    assert error.status == 400
    assert error.message == "[ERROR] Invalid 'n' parameter '0': must be an integer between 1 and 256."


@pytest.mark.parametrize("method", ["GET", "POST", "OPTIONS"])
def test_path_too_long_is_414(method: str) -> None:
    error = rejection(method, "/" + "a" * MAX_PATH)
    assert error.code is ErrorCode.PATH_TOO_LONG
    assert error.status == 414
    assert error.message == "[ERROR] Path too long (max 1024 characters)."


@pytest.mark.parametrize(
    ("query", "download", "filename"),
    [
        ("", None, None),
        ("?download", True, None),
        ("?download=yes", True, None),
        ("?download=false", False, None),
        ("?download=0", False, None),
        ("?download=perhaps", None, None),
        ("?filename=report.pdf", None, "report.pdf"),
        ("?filename=a%2Fb&filename=c", None, "a/b"),
        ("?filename=", None, ""),
        ("?download=no&filename=x.txt", False, "x.txt"),
    ],
)
def test_receive_download_and_filename(query: str, download: bool | None, filename: str | None) -> None:
    decision = decide("GET", "/x" + query)
    assert isinstance(decision, Receive)
    assert decision.download is download
    assert decision.filename == filename


def test_request_header_lookup_is_first_value() -> None:
    request = Request("GET", "/x", [("origin", "a"), ("origin", "b")])
    assert request.header("origin") == "a"
    assert request.header("host") is None
    assert request.http_version == "1.1"


# ?video -------------------------------------------------------------------------------------

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.mark.parametrize("query", ["video", "video=true", "video=yes", "video=1", "n=2&video"])
@pytest.mark.parametrize("target", ["/clip.webm", "/api/v1/pipe/clip.webm"])
def test_video_from_a_browser_is_the_player_page(target: str, query: str) -> None:
    decision = decide("GET", f"{target}?{query}", (("accept", BROWSER_ACCEPT),))
    assert isinstance(decision, Play)
    assert decision.target.key == "/clip.webm"


@pytest.mark.parametrize(
    ("query", "accept"),
    [
        ("video=false", BROWSER_ACCEPT),  # the player's own fetch
        ("video=no", BROWSER_ACCEPT),
        ("video=0", BROWSER_ACCEPT),
        ("video", "*/*"),  # curl: a normal receiver
        ("video", "video/webm"),
        ("video", None),
        ("", BROWSER_ACCEPT),  # a browser without ?video: a receiver (the download)
    ],
)
def test_video_otherwise_is_a_receiver(query: str, accept: str | None) -> None:
    headers = (("accept", accept),) if accept is not None else ()
    decision = decide("GET", f"/clip.webm?{query}", headers)
    assert isinstance(decision, Receive)
    assert (decision.key, decision.n) == ("/clip.webm", 1)


def test_video_and_progress_together_is_the_progress_view() -> None:
    decision = decide("GET", "/clip.webm?video&progress", (("accept", BROWSER_ACCEPT),))
    assert isinstance(decision, Watch) and decision.html


def test_video_on_a_send_is_a_send() -> None:
    assert isinstance(decide("PUT", "/clip.webm?video", (("accept", BROWSER_ACCEPT),)), Send)


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        ("text/html", True),
        (BROWSER_ACCEPT, True),
        ("TEXT/HTML; q=0.5", True),
        ("application/xhtml+xml", False),
        ("text/html-sandboxed", False),
        ("*/*", False),
        ("", False),
        (None, False),
    ],
)
def test_wants_html(accept: str | None, html: bool) -> None:
    assert wants_html(accept) is html
