# Target parsing and routing edges the mutation run showed unpinned: "://" inside an absolute-form
# path, undecodable query bytes, six-digit n, Accept parameters, and whole decisions compared exactly.
# Invariant: pure and sync; every assertion is an exact value or an exact rejection.
from __future__ import annotations

import pytest

from pipe_relay.core.paths import Reserved, Target, parse_n, parse_target
from pipe_relay.core.routing import Receive, Request, Send, ServePage, Watch, route, wants_html
from pipe_relay.errors import ErrorCode, PipeError


def target(raw: str) -> Target:
    return parse_target(raw, max_path_length=1024)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("http://example.com/a://b", "/a://b"),
        ("http://example.com/a://b://c", "/a://b://c"),
        ("http:///x", "/x"),  # empty authority: the path starts right after the scheme
    ],
)
def test_absolute_form_keeps_the_whole_path(raw: str, key: str) -> None:
    assert target(raw) == Target(key=key, prefixed=False, reserved=None, query=())


def test_undecodable_query_bytes_become_replacement_characters() -> None:
    assert target("/x?name=%ff%fe&ok=1").query == (("name", "\ufffd\ufffd"), ("ok", "1"))


@pytest.mark.parametrize(("raw", "n"), [("000007", 7), ("100000", 100000)])
def test_n_of_six_digits_is_read(raw: str, n: int) -> None:
    assert parse_n(target(f"/x?n={raw}"), max_receivers=100000) == n


def test_n_of_seven_digits_is_invalid() -> None:
    with pytest.raises(PipeError) as info:
        parse_n(target("/x?n=0000007"), max_receivers=100000)
    assert info.value.code is ErrorCode.INVALID_N
    assert info.value.message == (
        "[ERROR] Invalid 'n' parameter '0000007': must be an integer between 1 and 100000."
    )


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        ("text/html;q=0.9;level=1", True),
        ("application/json;q=1, text/html;level=1;q=0.5", True),
        ("text/plain;a=text/html", False),
    ],
)
def test_wants_html_reads_the_media_type_before_its_parameters(accept: str, html: bool) -> None:
    assert wants_html(accept) is html


def decide(method: str, raw: str, headers: tuple[tuple[str, str], ...] = ()) -> object:
    return route(Request(method, raw, headers), max_path_length=1024, max_receivers=8)


def test_progress_decision_is_exact() -> None:
    assert decide("GET", "/x?progress", (("accept", "text/event-stream"),)) == Watch(
        "/x", Target("/x", False, None, (("progress", ""),)), html=False
    )


def test_send_decision_is_exact() -> None:
    assert decide("PUT", "/api/v1/pipe/x?n=2") == Send("/x", 2, Target("/x", True, None, (("n", "2"),)))


def test_receive_decision_is_exact() -> None:
    assert decide("GET", "/x?n=2") == Receive("/x", 2, Target("/x", False, None, (("n", "2"),)))


def test_page_decision_is_exact() -> None:
    assert decide("HEAD", "/help?a=1") == ServePage(
        Reserved.HELP, Target("/help", False, Reserved.HELP, (("a", "1"),)), head_only=True
    )
