# Tests for per-client quotas and for who a client is behind trusted proxies.
from __future__ import annotations

import pytest

from pipe_relay.core.clients import client_address, is_trusted, parse_networks
from pipe_relay.core.quotas import Quota, Quotas
from pipe_relay.errors import ErrorCode, PipeError


def test_take_counts_up_to_the_limit_then_429_and_give_frees() -> None:
    quotas = Quotas({Quota.PENDING: 2})
    quotas.take(Quota.PENDING, "a")
    quotas.take(Quota.PENDING, "a")
    with pytest.raises(PipeError) as info:
        quotas.take(Quota.PENDING, "a")
    assert (info.value.code, info.value.status) == (ErrorCode.CLIENT_PENDING_LIMIT, 429)
    assert info.value.extra_headers == (("Retry-After", "5"),)
    assert (
        info.value.message == "[ERROR] Too many waiting transfers from your address (max 2). Try again later."
    )
    assert quotas.held(Quota.PENDING, "a") == 2  # the refused one was not counted
    quotas.take(Quota.PENDING, "b")  # another client is not affected
    quotas.give(Quota.PENDING, "a")
    quotas.take(Quota.PENDING, "a")
    assert quotas.held(Quota.PENDING, "a") == 2


def test_a_client_at_zero_is_forgotten_and_zero_means_no_limit() -> None:
    quotas = Quotas({Quota.ACTIVE: 0})
    for _ in range(1000):
        quotas.take(Quota.ACTIVE, "a")
    for _ in range(1000):
        quotas.give(Quota.ACTIVE, "a")
    assert quotas.held(Quota.ACTIVE, "a") == 0
    assert repr(quotas) == "<Quotas clients=0 held=0>"
    quotas.give(Quota.ACTIVE, "a")  # never below zero
    assert quotas.held(Quota.ACTIVE, "a") == 0


def test_add_counts_past_the_limit_and_check_then_refuses() -> None:
    quotas = Quotas({Quota.ACTIVE: 1})
    quotas.add(Quota.ACTIVE, "a")
    quotas.add(Quota.ACTIVE, "a")
    assert quotas.held(Quota.ACTIVE, "a") == 2
    with pytest.raises(PipeError) as info:
        quotas.check(Quota.ACTIVE, "a")
    assert info.value.code is ErrorCode.CLIENT_ACTIVE_LIMIT


@pytest.mark.parametrize(
    ("quota", "code"),
    [
        (Quota.PENDING, ErrorCode.CLIENT_PENDING_LIMIT),
        (Quota.ACTIVE, ErrorCode.CLIENT_ACTIVE_LIMIT),
        (Quota.WATCHERS, ErrorCode.CLIENT_WATCHER_LIMIT),
        (Quota.CONNECTIONS, ErrorCode.CLIENT_CONNECTION_LIMIT),
        (Quota.PAGES, ErrorCode.CLIENT_PAGE_LIMIT),
    ],
)
def test_each_quota_has_its_own_429(quota: Quota, code: ErrorCode) -> None:
    quotas = Quotas({quota: 1})
    quotas.take(quota, "a")
    with pytest.raises(PipeError) as info:
        quotas.take(quota, "a")
    assert (info.value.code, info.value.status) == (code, 429)


TRUSTED = parse_networks(["10.0.0.0/8", "127.0.0.1", "::1", "fd00::/8"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("203.0.113.9", "1.2.3.4", "203.0.113.9"),  # not from a proxy: the header is never believed
        ("10.1.2.3", None, "10.1.2.3"),
        ("10.1.2.3", "", "10.1.2.3"),
        ("10.1.2.3", "198.51.100.7", "198.51.100.7"),
        ("10.1.2.3", "6.6.6.6, 198.51.100.7", "198.51.100.7"),  # a forged left part is ignored
        ("10.1.2.3", "6.6.6.6, 198.51.100.7, 10.9.9.9", "198.51.100.7"),  # our proxies' hops skipped
        ("10.1.2.3", "10.5.5.5, 10.9.9.9", "10.5.5.5"),  # all trusted: the left-most
        ("127.0.0.1", " 2001:db8::5 ", "2001:db8::5"),
        ("::1", "198.51.100.7", "198.51.100.7"),
        ("::ffff:10.0.0.1", "198.51.100.7", "198.51.100.7"),  # IPv4-mapped proxy address
        ("10.1.2.3", "garbage, 198.51.100.7", "198.51.100.7"),
        ("10.1.2.3", "198.51.100.7, garbage", "garbage"),  # an untrusted hop, even if not an address
    ],
)
def test_client_address_behind_trusted_proxies(peer: str, forwarded: str | None, client: str) -> None:
    assert client_address(peer, forwarded, TRUSTED) == client


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert client_address("10.1.2.3", "198.51.100.7", ()) == "10.1.2.3"
    assert not is_trusted("10.1.2.3", ())
    assert is_trusted("[::1]", TRUSTED)
    assert not is_trusted("not an address", TRUSTED)


def test_bad_networks_are_refused() -> None:
    with pytest.raises(ValueError):
        parse_networks(["10.0.0.0/33"])
    assert parse_networks([" 10.0.0.1 ", ""]) == parse_networks(["10.0.0.1/32"])
