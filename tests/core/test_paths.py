# Tests for request-target parsing: pipe keys, reserved routes, query flags and the receiver count.
from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipe_relay.core.paths import (
    MAX_QUERY_FIELDS,
    UNRESERVED,
    Reserved,
    Target,
    normalize_escapes,
    parse_n,
    parse_target,
)
from pipe_relay.errors import ErrorCode, PipeError

MAX_PATH = 1024
MAX_N = 256


def target(raw: str) -> Target:
    return parse_target(raw, max_path_length=MAX_PATH)


@pytest.mark.parametrize(
    ("raw", "key", "prefixed"),
    [
        ("/x", "/x", False),
        ("/api/v1/pipe/x", "/x", True),
        ("/a/b/c", "/a/b/c", False),
        ("/api/v1/pipe/a/b/c", "/a/b/c", True),
        ("/api/v1/pipe", "/", True),
        ("/api/v1/pipe/", "/", True),
        ("/", "/", False),
        ("/api/v1/pipex", "/api/v1/pipex", False),
        ("/api/v1/pipe/api/v1/pipe/x", "/api/v1/pipe/x", True),
    ],
)
def test_key_strips_the_api_prefix(raw: str, key: str, prefixed: bool) -> None:
    parsed = target(raw)
    assert parsed.key == key
    assert parsed.prefixed is prefixed


def test_prefixed_and_bare_paths_share_one_key() -> None:
    assert target("/api/v1/pipe/x").key == target("/x").key == "/x"


@pytest.mark.parametrize(
    ("raw", "key", "query"),
    [
        ("/x?n=3", "/x", (("n", "3"),)),
        ("/api/v1/pipe/x?n=3&download", "/x", (("n", "3"), ("download", ""))),
        ("/x?", "/x", ()),
        ("/x?a=1&a=2", "/x", (("a", "1"), ("a", "2"))),
        ("/x?filename=a%20b.txt", "/x", (("filename", "a b.txt"),)),
    ],
)
def test_query_is_never_part_of_the_key(raw: str, key: str, query: tuple[tuple[str, str], ...]) -> None:
    parsed = target(raw)
    assert parsed.key == key
    assert parsed.query == query


@pytest.mark.parametrize(
    ("raw", "reserved"),
    [
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
        ("/health", Reserved.HEALTH),
        ("/api/v1/pipe/health", Reserved.HEALTH),
        ("/help?x=1", Reserved.HELP),
        ("/helpme", None),
        ("/help/x", None),
        ("/mypath", None),
        ("/api/v1/pipe/mypath", None),
    ],
)
def test_reserved_paths(raw: str, reserved: Reserved | None) -> None:
    assert target(raw).reserved is reserved


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("/x", "/x"),
        ("/api/v1/pipe/x", "/api/v1/pipe/x"),
        ("/help", "/help"),
        ("/api/v1/pipe/help", "/api/v1/pipe/help"),
        ("/", "/"),
    ],
)
def test_shown_path(raw: str, shown: str) -> None:
    assert target(raw).shown_path == shown


def test_path_at_max_length_is_accepted() -> None:
    raw = "/" + "a" * (MAX_PATH - 1)
    assert len(raw) == MAX_PATH
    assert target(raw).key == raw


def test_path_one_over_max_length_is_rejected() -> None:
    raw = "/" + "a" * MAX_PATH
    with pytest.raises(PipeError) as info:
        target(raw)
    assert info.value.code is ErrorCode.PATH_TOO_LONG
    assert info.value.status == 414
    assert info.value.message == "[ERROR] Path too long (max 1024 characters)."


def test_path_length_limit_is_a_parameter() -> None:
    assert parse_target("/abcd", max_path_length=5).key == "/abcd"
    with pytest.raises(PipeError) as info:
        parse_target("/abcde", max_path_length=5)
    assert info.value.message == "[ERROR] Path too long (max 5 characters)."


def test_query_does_not_count_towards_path_length() -> None:
    raw = "/" + "a" * (MAX_PATH - 1) + "?" + "q" * 5000
    assert target(raw).key == "/" + "a" * (MAX_PATH - 1)


def test_prefixed_path_length_is_measured_on_the_key() -> None:
    key = "/" + "a" * (MAX_PATH - 1)
    assert target("/api/v1/pipe" + key).key == key
    with pytest.raises(PipeError) as info:
        target("/api/v1/pipe" + key + "a")
    assert info.value.code is ErrorCode.PATH_TOO_LONG


@pytest.mark.parametrize(
    ("raw", "key", "prefixed", "query"),
    [
        ("http://example.com/x", "/x", False, ()),
        ("http://example.com/api/v1/pipe/x?n=2", "/x", True, (("n", "2"),)),
        ("https://example.com:8443/a/b", "/a/b", False, ()),
        ("http://example.com", "/", False, ()),
        ("http://example.com?n=2", "/", False, (("n", "2"),)),
    ],
)
def test_absolute_form_targets_keep_only_the_path(
    raw: str, key: str, prefixed: bool, query: tuple[tuple[str, str], ...]
) -> None:
    parsed = target(raw)
    assert (parsed.key, parsed.prefixed, parsed.query) == (key, prefixed, query)


@pytest.mark.parametrize("raw", ["x", "*", "", "example.com/x", "ftp://example.com/x"])
def test_target_not_starting_with_slash_is_bad_request(raw: str) -> None:
    with pytest.raises(PipeError) as info:
        target(raw)
    assert info.value.code is ErrorCode.BAD_REQUEST
    assert info.value.status == 400
    assert info.value.message == "[ERROR] Malformed request: the request target must start with '/'."


def test_query_fields_up_to_the_limit_are_accepted() -> None:
    raw = "/x?" + "&".join(f"k{i}=v" for i in range(MAX_QUERY_FIELDS))
    assert len(target(raw).query) == MAX_QUERY_FIELDS == 64


def test_too_many_query_fields_is_bad_request() -> None:
    raw = "/x?" + "&".join(f"k{i}=v" for i in range(MAX_QUERY_FIELDS + 1))
    with pytest.raises(PipeError) as info:
        target(raw)
    assert info.value.code is ErrorCode.BAD_REQUEST
    assert info.value.status == 400
    assert info.value.message == "[ERROR] Malformed request: more than 64 query parameters."


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("download", True),
        ("download=", True),
        ("download=true", True),
        ("download=TRUE", True),
        ("download=yes", True),
        ("download=Yes", True),
        ("download=1", True),
        ("download=false", False),
        ("download=False", False),
        ("download=no", False),
        ("download=NO", False),
        ("download=0", False),
        ("download=maybe", None),
        ("download=2", None),
        ("download=on", None),
        ("", None),
        ("other=1", None),
        ("download=0&download=1", False),
    ],
)
def test_flag_values(query: str, expected: bool | None) -> None:
    assert target("/x?" + query).flag("download") is expected


def test_values_returns_every_value_in_order() -> None:
    parsed = target("/x?filename=a&n=2&filename=b")
    assert parsed.values("filename") == ["a", "b"]
    assert parsed.values("missing") == []


@pytest.mark.parametrize(
    ("query", "n"),
    [
        ("", 1),
        ("other=5", 1),
        ("n=1", 1),
        ("n=3", 3),
        ("n=256", 256),
        ("n=003", 3),
    ],
)
def test_parse_n_valid(query: str, n: int) -> None:
    assert parse_n(target("/x?" + query), max_receivers=MAX_N) == n


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        ("n=0", "0"),
        ("n=-1", "-1"),
        ("n=abc", "abc"),
        ("n=3abc", "3abc"),
        ("n=257", "257"),
        ("n=%203", " 3"),
        ("n=%2B3", "+3"),
        ("n=+3", " 3"),
        ("n=", ""),
        ("n=3.0", "3.0"),
        ("n=0x10", "0x10"),
        ("n=%D9%A3", "\u0663"),
        ("n=2&n=2", "2, 2"),
        ("n=2&n=3", "2, 3"),
        ("n=" + "9" * 40, "9" * 32),
    ],
)
def test_parse_n_invalid(query: str, shown: str) -> None:
    with pytest.raises(PipeError) as info:
        parse_n(target("/x?" + query), max_receivers=MAX_N)
    assert info.value.code is ErrorCode.INVALID_N
    assert info.value.status == 400
    assert info.value.message == (
        f"[ERROR] Invalid 'n' parameter {shown!r}: must be an integer between 1 and 256."
    )


def test_parse_n_max_is_a_parameter() -> None:
    assert parse_n(target("/x?n=4"), max_receivers=4) == 4
    with pytest.raises(PipeError) as info:
        parse_n(target("/x?n=5"), max_receivers=4)
    assert info.value.message == "[ERROR] Invalid 'n' parameter '5': must be an integer between 1 and 4."


@pytest.mark.parametrize("path", ["/%", "/%4", "/a%zz", "/%G1", "/x%", "/%%41"])
def test_a_malformed_percent_escape_is_bad_request(path: str) -> None:
    with pytest.raises(PipeError) as info:
        parse_target(path, max_path_length=1024)
    assert info.value.code is ErrorCode.BAD_REQUEST
    assert info.value.message == "[ERROR] Malformed request: a malformed percent-escape in the path."


@pytest.mark.parametrize("path", ["/%00", "/a%0d%0aSet-Cookie", "/%1F", "/%7f", "/%7F"])
def test_an_encoded_control_character_is_bad_request(path: str) -> None:
    with pytest.raises(PipeError) as info:
        parse_target(path, max_path_length=1024)
    assert info.value.code is ErrorCode.BAD_REQUEST
    assert info.value.message == "[ERROR] Malformed request: an encoded control character in the path."


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("/%20", "/%20"),
        ("/%2F%2e%2E", "/%2F.."),  # an escaped slash stays; escaped dots are dots
        ("/%e2%82%ac", "/%E2%82%AC"),  # (curl's lower-case escapes meet a browser's upper-case ones)
        ("/%E2%82%AC", "/%E2%82%AC"),
        ("/%41?x=%zz", "/A"),
        ("/%7E%7e%5F%2D", "/~~_-"),
        ("/%e6%97%a5/f%C3%bc", "/%E6%97%A5/f%C3%BC"),
        ("/A+b/", "/A+b/"),  # letters' case, `+` and a trailing slash are the key's own
        ("/%2B%2b", "/%2B%2B"),
    ],
)
def test_escapes_are_normalized_in_the_key(path: str, key: str) -> None:
    assert parse_target(path, max_path_length=1024).key == key


def test_an_escaped_prefix_or_reserved_path_is_the_prefix_or_reserved_path() -> None:
    assert parse_target("/%61pi/v1/pipe/%78", max_path_length=1024).key == "/x"
    assert parse_target("/%68elp", max_path_length=1024).reserved is Reserved.HELP


@given(st.text(alphabet=st.sampled_from("aZ09-._~/%+!$"), max_size=20))
def test_a_key_is_normal_already(text: str) -> None:
    """Normalizing a key changes nothing, and its escapes are upper-case and never unreserved."""
    try:
        key = parse_target("/" + text, max_path_length=1024).key
    except PipeError:
        return  # (a malformed escape: refused, never normalized)
    assert normalize_escapes(key) == key
    for escape in re.findall(r"%[0-9A-Fa-f]{2}", key):
        assert escape == escape.upper() and chr(int(escape[1:], 16)) not in UNRESERVED
