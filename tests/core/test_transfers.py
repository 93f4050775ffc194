# The admin API's transfer views: list queries (what is refused), pages and their cursors, the JSON form.
# Invariant: pure and sync; a page walk is checked against a plain sort, times against calendar arithmetic.
from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipe_relay.core.transfers import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    STATES,
    ListQuery,
    QueryError,
    TransferView,
    find,
    page,
    parse_query,
)
from tests.fuzzing import fuzz_settings

ID = "0123456789abcdef"


def view(transfer_id: str = ID, **changes: object) -> TransferView:
    fields: dict[str, object] = {
        "id": transfer_id,
        "state": "active",
        "n": 2,
        "sender": True,
        "receivers": 2,
        "bytes": 12345,
        "total": 99999,
        "rate": 1048576.25,
        "started_at": 1_700_000_000.5,
        "protocol": "h2c",
        "clients": ("10.0.0.1", "2001:db8::1"),
        "worker": 1,
    }
    fields.update(changes)
    return TransferView(**fields)  # type: ignore[arg-type]


# parse_query --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ListQuery(None, DEFAULT_LIMIT, None)),
        ("state=pending", ListQuery("pending")),
        ("state=active", ListQuery("active")),
        ("limit=1", ListQuery(limit=1)),
        ("limit=1000", ListQuery(limit=MAX_LIMIT)),
        ("limit=007", ListQuery(limit=7)),
        (f"cursor={ID}", ListQuery(cursor=ID)),
        (f"state=active&limit=5&cursor={ID}", ListQuery("active", 5, ID)),
        (f"cursor={ID}&limit=5&state=pending", ListQuery("pending", 5, ID)),
        ("st%61te=pending", ListQuery("pending")),  # (names are percent-decoded too)
    ],
)
def test_accepted_queries(query: str, expected: ListQuery) -> None:
    assert parse_query(query) == expected


def test_defaults() -> None:
    assert ListQuery() == ListQuery(None, 100, None)
    assert (DEFAULT_LIMIT, MAX_LIMIT, STATES) == (100, 1000, ("pending", "active"))


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("foo=1", "unknown parameter 'foo'"),
        ("State=pending", "unknown parameter 'State'"),
        ("limit=5&page=2", "unknown parameter 'page'"),
        ("limit=1&limit=2", "parameter 'limit' given twice"),
        ("state=active&state=active", "parameter 'state' given twice"),
        (f"cursor={ID}&cursor={ID}", "parameter 'cursor' given twice"),
        ("limit=0", "limit must be an integer from 1 to 1000"),
        ("limit=1001", "limit must be an integer from 1 to 1000"),
        ("limit=x", "limit must be an integer from 1 to 1000"),
        ("limit=1e3", "limit must be an integer from 1 to 1000"),
        ("limit=١٢", "limit must be an integer from 1 to 1000"),  # Arabic-Indic digits
        ("limit=%D9%A1%D9%A2", "limit must be an integer from 1 to 1000"),  # (the same, encoded)
        ("limit=²", "limit must be an integer from 1 to 1000"),  # (isdigit, not a decimal)
        ("limit=-1", "limit must be an integer from 1 to 1000"),
        ("limit=+1", "limit must be an integer from 1 to 1000"),  # ('+' is a space)
        ("limit=%2B1", "limit must be an integer from 1 to 1000"),
        ("limit=1.0", "limit must be an integer from 1 to 1000"),
        ("limit=", "limit must be an integer from 1 to 1000"),
        ("limit=99999999999999999999999", "limit must be an integer from 1 to 1000"),
        ("state=", "state must be 'pending' or 'active'"),
        ("state=done", "state must be 'pending' or 'active'"),
        ("state=PENDING", "state must be 'pending' or 'active'"),
        ("state=pending%20", "state must be 'pending' or 'active'"),
        ("cursor=", "cursor must be a transfer id"),
        ("cursor=0123456789ABCDEF", "cursor must be a transfer id"),
        ("cursor=0123456789abcde", "cursor must be a transfer id"),
        ("cursor=0123456789abcdef0", "cursor must be a transfer id"),
        ("cursor=0123456789abcdeg", "cursor must be a transfer id"),
        ("cursor=%200123456789abcdef", "cursor must be a transfer id"),
        ("cursor=/secret/path", "cursor must be a transfer id"),
        ("state", "malformed query string"),
        ("&", "malformed query string"),
        ("limit=1&&state=active", "malformed query string"),
        ("a=1&" * 9, "malformed query string"),  # (more fields than may be parsed)
    ],
)
def test_refused_queries(query: str, says: str) -> None:
    with pytest.raises(QueryError, match=re.escape(says)):
        parse_query(query)


def test_query_error_is_a_value_error() -> None:
    assert issubclass(QueryError, ValueError)


@pytest.mark.parametrize("around", ["%0A", "%0D%0A", "%00"])
def test_a_cursor_with_a_trailing_newline_is_refused(around: str) -> None:
    """(A `$` also matches before a final newline: an id is matched whole.)"""
    with pytest.raises(QueryError):
        parse_query(f"cursor={ID}{around}")
    with pytest.raises(QueryError):
        parse_query(f"cursor={around}{ID}")


@fuzz_settings(200)
@given(st.text(max_size=12).filter(lambda t: not (t.isascii() and t.isdigit() and 1 <= int(t) <= MAX_LIMIT)))
def test_only_a_decimal_from_1_to_max_is_a_limit(text: str) -> None:
    with pytest.raises(QueryError):
        parse_query("limit=" + quote(text, safe=""))


@fuzz_settings(100)
@given(st.integers(min_value=1, max_value=MAX_LIMIT))
def test_every_limit_in_range_is_taken(limit: int) -> None:
    assert parse_query(f"limit={limit}").limit == limit


# page -----------------------------------------------------------------------------------------------

ids = st.text("0123456789abcdef", min_size=16, max_size=16)
views = st.lists(
    st.builds(lambda i, s: view(i, state=s), ids, st.sampled_from(STATES)),
    max_size=30,
    unique_by=lambda v: v.id,
)


def walk(views: list[TransferView], state: str | None, limit: int) -> Iterator[list[TransferView]]:
    cursor: str | None = None
    for _ in range(len(views) + 2):  # (a walk that never ends fails below)
        shown, cursor = page(views, ListQuery(state, limit, cursor))
        yield shown
        if cursor is None:
            return
        assert cursor == shown[-1].id
    raise AssertionError("the cursors never ended")


@fuzz_settings(300)
@given(views, st.sampled_from([None, *STATES]), st.integers(min_value=1, max_value=7), st.randoms())
def test_walking_the_pages_yields_each_match_once_in_id_order(
    all_views: list[TransferView], state: str | None, limit: int, shuffle: object
) -> None:
    shuffle.shuffle(all_views)  # type: ignore[attr-defined]
    pages = list(walk(all_views, state, limit))
    matching = sorted((v for v in all_views if state is None or v.state == state), key=lambda v: v.id)
    assert [v for shown in pages for v in shown] == matching
    assert all(len(shown) == limit for shown in pages[:-1])
    assert 0 < len(pages[-1]) <= limit or matching == []
    assert len(pages) == max(1, math.ceil(len(matching) / limit))


def test_a_page_after_the_last_id_is_empty() -> None:
    assert page([view("f" * 16)], ListQuery(cursor="f" * 16)) == ([], None)
    assert page([], ListQuery()) == ([], None)


def test_an_exactly_full_page_is_the_last() -> None:
    both = [view("1" * 16), view("0" * 16)]
    assert page(both, ListQuery(limit=2)) == (sorted(both, key=lambda v: v.id), None)
    first, cursor = page(both, ListQuery(limit=1))
    assert (first, cursor) == ([view("0" * 16)], "0" * 16)


def test_a_cursor_need_not_be_a_live_id() -> None:
    """The transfer a cursor names may end meanwhile: the next page still starts after its id."""
    live = [view(c * 16) for c in "13579"]
    shown, cursor = page(live, ListQuery(limit=2, cursor="4" * 16))
    assert [v.id for v in shown] == ["5" * 16, "7" * 16] and cursor == "7" * 16


def test_state_filter() -> None:
    mixed = [view("a" * 16, state="pending"), view("b" * 16), view("c" * 16, state="pending")]
    assert [v.id for v in page(mixed, ListQuery("pending"))[0]] == ["a" * 16, "c" * 16]
    assert [v.id for v in page(mixed, ListQuery("active"))[0]] == ["b" * 16]


def test_find() -> None:
    both = [view("a" * 16), view("b" * 16)]
    assert find(both, "b" * 16) is both[1]
    assert find(both, "c" * 16) is None


# JSON --------------------------------------------------------------------------------------------


def test_to_json_fields() -> None:
    assert view().to_json() == {
        "id": ID,
        "state": "active",
        "n": 2,
        "sender": True,
        "receivers": 2,
        "bytes": 12345,
        "total": 99999,
        "rate": 1048576.2,
        "started_at": "2023-11-14T22:13:20.500Z",
        "protocol": "h2c",
        "clients": ["10.0.0.1", "2001:db8::1"],
        "worker": 1,
        "user": None,
    }


@pytest.mark.parametrize(
    ("at", "text"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (0.0019, "1970-01-01T00:00:00.001Z"),  # (milliseconds, cut not rounded)
        (951_782_400.999, "2000-02-29T00:00:00.999Z"),
        (1_700_000_000.0, "2023-11-14T22:13:20.000Z"),
        (4_102_444_799.25, "2099-12-31T23:59:59.250Z"),
    ],
)
def test_started_at_is_utc_to_the_millisecond(at: float, text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for zone in ("UTC", "America/St_Johns", "Asia/Kathmandu"):  # (local time never enters)
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        try:
            json_form = view(started_at=at).to_json()
            assert json_form["started_at"] == text
            back = TransferView.from_json(json_form).started_at
            assert round(back * 1000) == math.floor(at * 1000)
        finally:
            monkeypatch.undo()
            time.tzset()


def _json_trip(v: TransferView) -> TransferView:
    return TransferView.from_json(json.loads(json.dumps(v.to_json())))


transfer_views = st.builds(
    TransferView,
    id=ids,
    state=st.sampled_from(STATES),
    n=st.integers(1, 256),
    sender=st.booleans(),
    receivers=st.integers(0, 256),
    bytes=st.integers(0, 1 << 50),
    total=st.none() | st.integers(0, 1 << 50),
    rate=st.floats(0, 1e12, allow_nan=False),
    started_at=st.floats(0, 4_102_444_800, allow_nan=False),
    protocol=st.none() | st.sampled_from(["http1", "tls", "h2", "h2c", "unix"]),
    clients=st.lists(st.text(max_size=40), max_size=4).map(tuple),
    worker=st.integers(0, 64),
)


@fuzz_settings(300)
@given(transfer_views)
def test_json_round_trip(v: TransferView) -> None:
    back = _json_trip(v)
    assert dataclasses.replace(back, started_at=v.started_at, rate=v.rate) == v
    assert back.rate == round(v.rate, 1)
    assert -1e-6 < v.started_at - back.started_at < 0.001 + 1e-6  # (cut to the millisecond)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(v.to_json()["started_at"]))
    assert back.to_json() == dataclasses.replace(v, rate=round(v.rate, 1)).to_json()  # (as it was sent)


@fuzz_settings(300)
@given(st.integers(0, 4_102_444_800_000))
def test_millisecond_times_come_back_exactly(ms: int) -> None:
    text = view(started_at=ms / 1000).to_json()["started_at"]
    back = TransferView.from_json(view(started_at=ms / 1000).to_json()).started_at
    assert round(back * 1000) == ms
    assert view(started_at=back).to_json()["started_at"] == text  # (a sibling's view reads the same)


@pytest.mark.parametrize("at", [2_147_483_648.437, 2_147_483_648.003, 266_312.431])
def test_json_form_is_a_fixed_point(at: float) -> None:
    sent = view(started_at=at).to_json()
    assert TransferView.from_json(sent).to_json() == sent
    assert sent["started_at"] == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + (
        f".{round(at * 1000) % 1000:03d}Z"
    )


@pytest.mark.parametrize(
    "change",
    [
        {"n": "2"},
        {"n": True},
        {"bytes": 1.5},
        {"receivers": None},
        {"total": "5"},
        {"worker": False},
        {"clients": "10.0.0.1"},
        {"started_at": "yesterday"},
        {"rate": "fast"},
    ],
)
def test_from_json_refuses_wrong_types(change: dict[str, object]) -> None:
    fields = {**view().to_json(), **change}
    with pytest.raises(ValueError):
        TransferView.from_json(fields)


def test_from_json_needs_every_field() -> None:
    for name in view().to_json():
        fields = view().to_json()
        del fields[name]
        with pytest.raises(KeyError):
            TransferView.from_json(fields)
