# Fuzz tests (hypothesis) of the pure head parsers: request targets, `?n`, strict head checks, header policy.
# Invariant: each property holds for every generated input; only PipeError may escape a parser.
from __future__ import annotations

import re
from urllib.parse import unquote

from hypothesis import given
from hypothesis import strategies as st

from pipe_relay.core.framing import render_head
from pipe_relay.core.headers import (
    METADATA_HEADERS,
    body_info,
    cors_headers,
    inline_safe,
    metadata_headers,
    receiver_disposition,
    receiver_headers,
    safe_content_type,
    sanitize_filename,
)
from pipe_relay.core.heads import check_head, has_obs_fold
from pipe_relay.core.paths import API_PREFIX, MAX_QUERY_FIELDS, Reserved, Target, parse_n, parse_target
from pipe_relay.core.routing import Request
from pipe_relay.errors import ErrorCode, PipeError
from tests.fuzzing import (
    CTL,
    HARMLESS_TYPES,
    SCRIPT_TYPES,
    SPECIAL,
    content_types,
    fuzz_settings,
    header_text,
    latin1_text,
    script_capable,
    targets,
)

MAX_PATH = 64
MAX_N = 256
RESERVED = {r.value for r in Reserved}
_SAFE_TYPE = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+/[!#$%&'*+.^_`|~0-9a-z-]+(; charset=[A-Za-z0-9._:+-]+)?")


def one_line(error: PipeError) -> None:
    assert "\r" not in error.message and "\n" not in error.message, error


# --- request targets and ?n ---------------------------------------------------------------------


def _escapes_ok(path: str) -> bool:
    """The oracle for percent-escapes: each `%` starts two hex digits that encode no control."""
    for index, char in enumerate(path):
        if char != "%":
            continue
        code = path[index + 1 : index + 3]
        if len(code) < 2 or any(c not in "0123456789abcdefABCDEF" for c in code):
            return False
        if int(code, 16) < 0x20 or int(code, 16) == 0x7F:
            return False
    return True


@fuzz_settings(250)
@given(targets)
def test_parse_target_gives_a_key_or_a_400_or_414(raw: str) -> None:
    path, _, query = raw.partition("?")
    if path.startswith(("http://", "https://")):
        after = path.split("://", 1)[1]
        path = after[after.find("/") :] if "/" in after else "/"
    if _escapes_ok(path):  # (RFC 3986 6.2.2: escapes in upper case; an unreserved one decoded)
        path = re.sub(r"%[0-9A-Fa-f]{2}", _rfc3986_escape, path)
    try:
        target = parse_target(raw, max_path_length=MAX_PATH)
    except PipeError as error:
        one_line(error)
        assert error.code in (ErrorCode.BAD_REQUEST, ErrorCode.PATH_TOO_LONG), error
        if error.code is ErrorCode.PATH_TOO_LONG:
            assert error.status == 414 and len(path) > MAX_PATH
        else:
            assert not (path.startswith("/") and _escapes_ok(path)) or query.count("&") >= MAX_QUERY_FIELDS
        return
    assert path.startswith("/") and _escapes_ok(path), raw
    prefixed = path == API_PREFIX or path.startswith(API_PREFIX + "/")
    assert target.prefixed is prefixed
    assert target.key == ((path[len(API_PREFIX) :] or "/") if prefixed else path)
    assert target.key.startswith("/") and "?" not in target.key and len(target.key) <= MAX_PATH
    assert (target.reserved is not None) is (target.key in RESERVED)
    assert len(target.query) <= MAX_QUERY_FIELDS


def _rfc3986_escape(match: re.Match[str]) -> str:
    char = unquote(match.group(0))
    return char if char.isascii() and (char.isalnum() or char in "-._~") else match.group(0).upper()


def _n_oracle(target: Target) -> int | None:
    values = target.values("n")
    if not values:
        return 1
    if len(values) == 1 and re.fullmatch("[0-9]{1,6}", values[0]) and 1 <= int(values[0]) <= MAX_N:
        return int(values[0])
    return None


@fuzz_settings(200)
@given(targets)
def test_parse_n_is_one_integer_in_range_or_invalid_n(raw: str) -> None:
    try:
        target = parse_target(raw, max_path_length=1024)
    except PipeError:
        return
    expected = _n_oracle(target)
    try:
        n = parse_n(target, max_receivers=MAX_N)
    except PipeError as error:
        one_line(error)
        assert expected is None and error.code is ErrorCode.INVALID_N and error.status == 400, raw
    else:
        assert n == expected, raw


# --- strict heads ----------------------------------------------------------------------------------

_LENGTHS = st.one_of(
    st.integers(0, 2**64).map(str),
    st.sampled_from(["", " 1", "1 ", "+1", "-1", "0x10", "1,1", "1e3", "٣", "0" * 20, "9" * 19]),
    latin1_text,
)
_HEAD_HEADERS = st.lists(
    st.one_of(
        st.tuples(st.just("content-length"), _LENGTHS),
        st.tuples(st.just("transfer-encoding"), st.sampled_from(["chunked", "gzip, chunked", ""])),
        st.tuples(st.sampled_from(["host", "x-a", "content-type"]), latin1_text),
    ),
    max_size=5,
)


def _valid_length(value: str) -> bool:
    return re.fullmatch("[0-9]{1,19}", value) is not None and int(value) < 2**63


@fuzz_settings(250)
@given(
    st.one_of(st.sampled_from(["1.0", "1.1", "0.9", "2.0", "1.2", "3.0"]), st.text(max_size=4)),
    _HEAD_HEADERS,
    st.one_of(st.integers(0, 200), st.sampled_from([99, 100, 101])),
    st.booleans(),
)
def test_check_head_refuses_exactly_what_rfc_9112_lets_a_server_refuse(
    version: str, headers: list[tuple[str, str]], lines: int, folded: bool
) -> None:
    request = Request("PUT", "/x", tuple(headers), http_version=version)
    first = dict(reversed(headers))
    length = first.get("content-length")
    if version not in ("1.0", "1.1"):
        expected: ErrorCode | None = ErrorCode.UNSUPPORTED_VERSION
    elif lines > 100:
        expected = ErrorCode.TOO_MANY_HEADERS
    elif (
        folded
        or (length is not None and "transfer-encoding" in first)
        or (length is not None and not (re.fullmatch("[0-9]{1,19}", length) and int(length) < 2**63))
    ):
        expected = ErrorCode.BAD_REQUEST
    else:
        expected = None
    try:
        check_head(request, header_lines=lines, folded=folded)
    except PipeError as error:
        one_line(error)
        assert error.code is expected, (error, expected)
    else:
        assert expected is None


@fuzz_settings(200)
@given(
    st.lists(st.one_of(st.binary(max_size=20), st.sampled_from([b"\r\n", b"\n", b" ", b"\t"])), max_size=12)
)
def test_has_obs_fold_finds_exactly_a_line_that_starts_with_whitespace(pieces: list[bytes]) -> None:
    head = b"".join(pieces)
    folded = any(line[:1] in (b" ", b"\t") for line in head.split(b"\n")[1:])
    assert has_obs_fold(head) is folded
    assert has_obs_fold(memoryview(head)) is folded


# --- header policy: what a receiver is told ------------------------------------------------------------


def assert_safe_value(name: str, value: str) -> None:
    assert CTL.search(value) is None, (name, value)
    value.encode("latin-1")  # what render_head writes without replacing anything


def assert_safe_type(value: str) -> None:
    assert_safe_value("Content-Type", value)
    assert _SAFE_TYPE.fullmatch(value), value
    assert not script_capable(value.split(";", 1)[0]), value


@fuzz_settings(250)
@given(st.one_of(st.none(), content_types))
def test_safe_content_type_is_never_script_capable(value: str | None) -> None:
    assert_safe_type(safe_content_type(value))


def _disposition_type(value: str) -> str:
    return value.split(";", 1)[0].strip(" \t").lower()


_INLINE_ASKED = st.builds(
    lambda kind, tail: kind + tail,
    st.sampled_from(["inline", " INLINE ", "Inline\t", "inline x", "inline", "attachment", "form-data"]),
    st.sampled_from(["", ";", '; filename="a.html"', "; x=\r\n"]),
)
_DISPOSITIONS = st.one_of(st.none(), header_text, _INLINE_ASKED)


@fuzz_settings(300)
@given(
    st.one_of(_INLINE_ASKED, _DISPOSITIONS),
    st.one_of(st.sampled_from(HARMLESS_TYPES), st.sampled_from(SCRIPT_TYPES), content_types),
    st.sampled_from([None, None, True, False]),
)
def test_a_senders_disposition_is_clean_and_inline_only_for_safe_types(
    sender: str | None, raw_type: str, download: bool | None
) -> None:
    content_type = safe_content_type(raw_type)
    value = receiver_disposition(sender, content_type, download=download, filename=None)
    if value is None:
        assert download is False or (download is None and not CTL.sub("", sender or "").strip()), value
        return
    assert download is not False
    assert_safe_value("Content-Disposition", value)
    if download is True:
        assert _disposition_type(value) == "attachment", value
    if _disposition_type(value) == "inline":
        assert inline_safe(content_type), (value, content_type)


@fuzz_settings(200)
@given(
    _DISPOSITIONS,
    st.sampled_from([None, True, False]),
    st.tuples(
        st.sampled_from(["", ".", "..", "../", "\\."]), st.one_of(st.text(max_size=40), header_text)
    ).map("".join),
)
def test_a_filename_gives_a_clean_attachment_that_names_it_exactly(
    sender: str | None, download: bool | None, filename: str
) -> None:
    value = receiver_disposition(sender, "text/plain", download=download, filename=filename)
    assert value is not None
    assert_safe_value("Content-Disposition", value)
    value.encode("ascii")
    assert _disposition_type(value) == "attachment"
    named = unquote(value.partition("filename*=UTF-8''")[2], errors="strict")
    assert named == sanitize_filename(filename)
    assert not CTL.search(named) and "/" not in named and "\\" not in named and not named.startswith(".")
    assert named.startswith(CTL.sub("", filename).replace("/", "").replace("\\", "").lstrip(".")[:8])


@fuzz_settings(200)
@given(
    st.one_of(
        st.none(),
        st.lists(
            st.one_of(SPECIAL, st.sampled_from(["null", "nu", "ll", "https://a.example"])), max_size=4
        ).map("".join),
        header_text,
    )
)
def test_cors_headers_are_clean_and_star_without_a_real_origin(origin: str | None) -> None:
    headers = cors_headers(origin)
    for name, value in headers:
        assert_safe_value(name, value)
    if origin is None or CTL.sub("", origin).strip() in ("", "null"):
        assert headers == [("Access-Control-Allow-Origin", "*")]
    elif headers != [("Access-Control-Allow-Origin", "*")]:  # reflected: only a serialized origin, as sent
        assert headers == [
            ("Access-Control-Allow-Origin", origin.strip()),
            ("Access-Control-Allow-Credentials", "true"),
            ("Vary", "Origin"),
        ]
        reflected = origin.strip()
        scheme, sep, authority = reflected.partition("://")
        assert sep and scheme and authority and reflected.isascii()
        assert not CTL.search(reflected) and not {"/", "?", "#", "@", " "} & set(authority)


_REQUEST_HEADERS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "x-piping",
                "x-hoody-pipe",
                "content-type",
                "content-disposition",
                "content-length",
                "transfer-encoding",
                "origin",
                "x-other",
            ]
        ),
        st.one_of(header_text, st.integers(0, 2**64).map(str)),
    ),
    max_size=8,
)


@fuzz_settings(200)
@given(_REQUEST_HEADERS, st.sampled_from([0, 1, 8 * 1024]))
def test_metadata_headers_are_clean_and_bounded(headers: list[tuple[str, str]], pad: int) -> None:
    headers = [(name, value + "a" * pad) for name, value in headers]
    out = metadata_headers(headers)
    cleaned = [
        (name, CTL.sub("", value))
        for name in METADATA_HEADERS
        for key, value in headers
        if key == name.lower()
    ]
    assert out == [(name, value) for name, value in cleaned if len(value.encode()) <= 8 * 1024]
    for name, value in out:
        assert_safe_value(name, value)


@fuzz_settings(250)
@given(
    _REQUEST_HEADERS,
    st.one_of(st.none(), st.tuples(st.one_of(st.none(), content_types), st.one_of(st.none(), header_text))),
    st.one_of(st.none(), header_text),
    st.sampled_from([None, True, False]),
    st.one_of(st.none(), st.text(max_size=40)),
    st.sampled_from(["1.1", "1.0"]),
)
def test_a_receivers_head_is_one_clean_line_per_header(
    headers: list[tuple[str, str]],
    part: tuple[str | None, str | None] | None,
    origin: str | None,
    download: bool | None,
    filename: str | None,
    version: str,
) -> None:
    info = body_info(headers, multipart_part=part)
    assert_safe_type(info.content_type)
    assert info.content_length is None or 0 <= info.content_length < 2**63
    framing = (
        [("Transfer-Encoding", "chunked")]
        if info.content_length is None
        else [("Content-Length", str(info.content_length))]
    )
    out = receiver_headers(info, origin=origin, download=download, filename=filename, framing_headers=framing)
    for name, value in out:
        assert re.fullmatch("[A-Za-z-]+", name), name
        assert_safe_value(name, value)
    assert [value for name, value in out if name == "Content-Type"] == [info.content_type]
    lines = render_head(version, 200, out).split(b"\r\n")
    assert lines[-2:] == [b"", b""] and len(lines) == len(out) + 3, lines  # no header split in two
    assert all(b"\n" not in line and b"\r" not in line for line in lines)
