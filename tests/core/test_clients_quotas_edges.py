# Client and quota edges the mutation run showed unpinned: CIDRs with host bits, hop cuts, absent limits.
# Invariant: pure and sync; every assertion is an exact value.
from __future__ import annotations

import ipaddress

from pipe_relay.core.clients import client_address, is_trusted, parse_networks
from pipe_relay.core.quotas import Quota, Quotas

NETWORKS = parse_networks(["10.0.0.0/8", "fe80::/10"])


def test_a_cidr_with_host_bits_is_its_network() -> None:
    """`--trusted-proxies 10.1.2.3/8` means 10.0.0.0/8 (not a ValueError)."""
    assert parse_networks(["10.1.2.3/8", " ", "fd00::1/8"]) == (
        ipaddress.IPv4Network("10.0.0.0/8"),
        ipaddress.IPv6Network("fd00::/8"),
    )


def test_only_brackets_and_spaces_are_stripped_from_an_address() -> None:
    assert is_trusted(" [fe80::1] ", NETWORKS) is True
    assert is_trusted("X10.0.0.1", NETWORKS) is False
    assert is_trusted("10.0.0.1X", NETWORKS) is False


def test_an_untrusted_hop_is_cut_to_64_characters() -> None:
    hop = "h" * 80
    assert client_address("10.0.0.1", f"{hop}, 10.0.0.2", NETWORKS) == "h" * 64


def test_the_left_most_hop_when_all_are_trusted_is_cut_to_64_characters() -> None:
    hop = "fe80::1%" + "z" * 80  # an address with a zone: trusted, and longer than 64
    assert client_address("10.0.0.1", f"{hop}, 10.0.0.2", NETWORKS) == hop[:64]


def test_a_header_of_empty_hops_is_the_proxy_itself() -> None:
    assert client_address("10.0.0.1", " , ,", NETWORKS) == "10.0.0.1"


def test_a_quota_absent_from_the_limits_has_no_limit() -> None:
    quotas = Quotas({Quota.PENDING: 1})
    for _ in range(3):
        quotas.take(Quota.ACTIVE, "a")
    assert quotas.held(Quota.ACTIVE, "a") == 3
    assert repr(quotas) == "<Quotas clients=1 held=3>"
