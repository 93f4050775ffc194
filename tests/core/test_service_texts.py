# The service texts: the base URL from Host and X-Forwarded-Proto, the help text, version, robots, health.
# Invariant: pure and sync; texts are compared exactly; a Host that is not plain host[:port] gives localhost.
from __future__ import annotations

import json

import pytest

from pipe_relay._version import __version__
from pipe_relay.core.service import (
    ROBOTS_TXT,
    SERVICE_NAME,
    HealthFacts,
    base_url,
    health_document,
    help_text,
    version_line,
)


@pytest.mark.parametrize(
    ("host", "proto", "expected"),
    [
        ("example.com", None, "http://example.com"),
        ("example.com:8080", None, "http://example.com:8080"),
        ("pipe.example.com", "https", "https://pipe.example.com"),
        ("pipe.example.com", "HTTPS", "https://pipe.example.com"),
        ("pipe.example.com", " https ", "https://pipe.example.com"),
        ("pipe.example.com", "http", "http://pipe.example.com"),
        ("pipe.example.com", "ftp", "http://pipe.example.com"),
        ("127.0.0.1:9000", None, "http://127.0.0.1:9000"),
        ("[::1]:8080", None, "http://[::1]:8080"),
        ("[::1]", None, "http://[::1]"),
        ("  example.com  ", None, "http://example.com"),
        (None, None, "http://localhost"),
        (None, "https", "https://localhost"),
        ("", None, "http://localhost"),
        ("evil.com/<script>", None, "http://localhost"),
        ("evil.com\r\nX-Injected: 1", None, "http://localhost"),
        ("a b", None, "http://localhost"),
        ("user@host.com", None, "http://localhost"),
        ("host.com:123456", None, "http://localhost"),
        ("host.com:", None, "http://localhost"),
        ("host.com'; rm -rf /", None, "http://localhost"),
        ("[::1", None, "http://localhost"),
    ],
)
def test_base_url(host: str | None, proto: str | None, expected: str) -> None:
    assert base_url(host, proto) == expected


def help_lines() -> list[str]:
    return help_text("https://pipe.example.com").splitlines()


def test_help_text_starts_with_the_version() -> None:
    assert help_lines()[0] == f"pipe-relay {__version__}"


@pytest.mark.parametrize(
    "line",
    [
        # receive
        "curl https://pipe.example.com/mypath",
        # send a file
        "curl -T myfile https://pipe.example.com/mypath",
        # send text
        "echo 'hello, world' | curl -T - https://pipe.example.com/mypath",
        # send a directory, tar.gz and zip
        "tar czf - ./mydir | curl -T - https://pipe.example.com/mydir.tar.gz",
        "curl https://pipe.example.com/mydir.tar.gz | tar xzf -",
        "zip -q -r - ./mydir | curl -T - https://pipe.example.com/mydir.zip",
        # several receivers
        "curl -T myfile 'https://pipe.example.com/mypath?n=3'",
        # download control
        "curl -OJ 'https://pipe.example.com/mypath?download'              # Content-Disposition: attachment",
        "curl -OJ 'https://pipe.example.com/mypath?filename=report.pdf'   # attachment with this file name",
        "# ?download=false removes the sender's Content-Disposition",
        # video and progress
        "# open https://pipe.example.com/movie.webm?video in a browser, then:",
        "curl -H 'Accept: text/event-stream' 'https://pipe.example.com/mypath?progress'",
        # end-to-end encryption
        "openssl aes-256-cbc -pbkdf2 -iter 100000 -md sha256 -salt < myfile | curl -T - https://pipe.example.com/mypath",
        "curl -s https://pipe.example.com/mypath | openssl aes-256-cbc -d -pbkdf2 -iter 100000 -md sha256",
    ],
)
def test_help_text_has_the_recipe(line: str) -> None:
    assert line in help_lines()


@pytest.mark.parametrize(
    "heading",
    [
        "======= Receive =======",
        "======= Send a file =======",
        "======= Send text =======",
        "======= Send a directory =======",
        "======= Several receivers (?n) =======",
        "======= Download control (?download, ?filename) =======",
        "======= Watch video in a browser (?video) =======",
        "======= Watch a transfer (?progress) =======",
        "======= End-to-end encryption =======",
    ],
)
def test_help_text_sections(heading: str) -> None:
    assert help_lines().count(heading) == 1


def test_help_text_uses_only_the_given_url() -> None:
    text = help_text("http://localhost:8080")
    assert "https://" not in text
    assert "curl http://localhost:8080/mypath\n" in text
    assert text.endswith("\n")


def test_version_line() -> None:
    assert version_line() == f"pipe-relay {__version__}\n"
    assert SERVICE_NAME == "pipe-relay"


def test_robots_txt() -> None:
    assert ROBOTS_TXT == "User-agent: *\nDisallow: /\n"


def test_health_document() -> None:
    facts = HealthFacts(
        built="2024-01-15T10:30:00.000Z",
        started="2024-01-20T08:00:00.000Z",
        rss=52428800,
        heap=15728640,
        fds=128,
        pid=12345,
        ip="10.0.0.5",
        user_agent="curl/8.4.0",
    )
    document = health_document(facts)
    assert document == {
        "status": "ok",
        "service": "pipe-relay",
        "built": "2024-01-15T10:30:00.000Z",
        "started": "2024-01-20T08:00:00.000Z",
        "memory": {"rss": 52428800, "heap": 15728640},
        "fds": 128,
        "pid": 12345,
        "ip": "10.0.0.5",
        "userAgent": "curl/8.4.0",
    }
    assert list(document) == [
        "status",
        "service",
        "built",
        "started",
        "memory",
        "fds",
        "pid",
        "ip",
        "userAgent",
    ]
    assert len(document) == 9
    assert json.loads(json.dumps(document)) == document


def test_base_url_over_our_own_tls_is_https() -> None:
    assert base_url("relay.example:8443", None, secure=True) == "https://relay.example:8443"
    assert base_url("relay.example:8443", "http", secure=True) == "https://relay.example:8443"
    assert base_url("relay.example:8080", None, secure=False) == "http://relay.example:8080"
