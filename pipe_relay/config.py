# The one frozen configuration of a server: listen addresses, limits and timeouts.
# Invariant: a Config is immutable and validated on construction; every limit is finite and positive.
from __future__ import annotations

import os
from dataclasses import dataclass, field

from .core.abuse import FloodLimits
from .core.clients import parse_networks

ENGINES = ("auto", "splice", "buffer")
LOG_FORMATS = ("text", "json")
ADMIN_TOKEN_MIN = 16
"""Characters an admin token has at least (a guessable token is no lock)."""
UNIX_PATH_MAX = 107
"""Longest Unix socket path in bytes (Linux's sun_path holds 108, with its terminating NUL)."""


HTTPS_PORT = 8443
"""The HTTPS port when --enable-https is given without --https-port (as piping-server's default)."""


@dataclass(frozen=True, slots=True)
class Config:
    """Everything a running server needs to know, fixed at start-up."""

    hosts: tuple[str, ...] = ("::",)
    """Addresses (or names) to listen on, each on `port`. `::` is dual-stack (IPv4 clients too) unless
    an IPv4 host is listed as well; on a host without IPv6 it falls back to `0.0.0.0`."""
    port: int = 8080
    http: bool = True
    """Plain HTTP on `port` (off: HTTPS only)."""
    https_port: int | None = None
    """HTTPS on this port (None: no HTTPS), with the certificate chain `crt_path` and its key `key_path`."""
    crt_path: str = ""
    key_path: str = ""
    unix_path: str = ""
    """Also listen on this Unix domain socket ("" = none): for a reverse proxy on the same host."""
    unix_mode: int = 0o660
    """Permission bits of the Unix socket file."""
    max_pending: int = 1000
    max_active: int = 1000
    max_connections: int = 10_000
    """Open client connections at most; the next one gets a fast 503 and is closed."""
    max_watchers: int = 4096
    """`?progress` watchers at once, server-wide."""
    client_max_pending: int = 64
    """Waiting parties one client address may have at once (0 = no limit); likewise below."""
    client_max_active: int = 32
    client_max_watchers: int = 32
    client_max_connections: int = 256
    client_max_pages: int = 64
    """Page and error replies on their way to one client address at once (an HTTP/2 client can ask
    for 128 on each connection and never open its window: each is held until the write timeout)."""
    trusted_proxies: tuple[str, ...] = ()
    """CIDRs of our own proxies: from them, the client is the right-most untrusted X-Forwarded-For."""
    pending_ttl: float = 300.0
    max_receivers: int = 256
    max_path_length: int = 1024
    heartbeat: float = 30.0
    """Seconds between `[INFO] Still waiting ...` lines to a waiting sender; 0 turns them off."""
    idle_timeout: float = 300.0
    """A transfer in which no byte moves for this long is aborted; 0 turns the limit off."""
    header_timeout: float = 10.0
    """Seconds a client has to send a whole request head, from its accept (and from the end of the
    previous reply, on a keep-alive connection): bounds what a slow or silent client can hold."""
    drain_timeout: float = 30.0
    """On SIGTERM/SIGINT: seconds active transfers get to finish before they are cut; 0 = at once."""
    log_paths: bool = False
    """Write pipe paths (secrets: whoever knows one can take the transfer) into the log."""
    log_format: str = "text"
    """`text` lines, or `json`: one object a line (an access line's fields by name)."""
    rate_limit: int = 0
    """Bytes a second each transfer may move at most (0: no cap); a policy's user may have its own."""
    policy_path: str = ""
    """Access control: users and path rules (TOML), reloaded on SIGHUP and when the file changes."""
    cors_origins: tuple[str, ...] = ()
    """With a policy: the origins whose pages may send credentials (others get `*`, none)."""
    admin_port: int | None = None
    """The admin listener (metrics, live transfers) on this port (None: none), on `admin_host`."""
    admin_host: str = "127.0.0.1"
    admin_token: str = field(default="", repr=False)
    """The bearer token every admin request must carry (read from a file or the environment)."""
    max_head_size: int = 64 * 1024
    engine: str = "auto"
    """Byte engine: `buffer` (portable), `splice` (Linux zero-copy where it can carry a body: less
    CPU, less speed here), `auto` (what measured fastest: the buffer engine)."""
    buffer_size: int = 1024 * 1024
    """Bytes read from a sender per step of a transfer: the chunk every receiver gets in lockstep."""
    workers: int = 1
    """Worker processes serving the listeners; a pipe is owned by one, chosen by its key."""
    flood_limits: FloodLimits = field(default_factory=FloodLimits)
    """What one HTTP/2 connection may spend (resets, streams, control frames, header bytes) before
    it is ended with GOAWAY ENHANCE_YOUR_CALM (no flag: an embedding program or a test sets it)."""

    def __post_init__(self) -> None:
        self._check_listeners()
        for name in ("port", "https_port", "admin_port"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 65535:
                raise ValueError(f"{name.replace('_', '-')} must be 0..65535, not {value}")
        if self.https_port is not None and not (self.crt_path and self.key_path):
            raise ValueError("HTTPS needs a certificate and its key (--crt-path, --key-path)")
        if self.https_port is None and (self.crt_path or self.key_path):
            raise ValueError("a certificate or key is given, but HTTPS is not enabled (--enable-https)")
        for name in (
            "max_pending",
            "max_active",
            "max_connections",
            "max_receivers",
            "max_path_length",
            "workers",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1")
        if self.max_watchers < 0:
            raise ValueError("max-watchers must be 0 (none) or positive")
        for name in (
            "client_max_pending",
            "client_max_active",
            "client_max_watchers",
            "client_max_connections",
            "client_max_pages",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.replace('_', '-')} must be 0 (off) or positive")
        try:
            parse_networks(self.trusted_proxies)
        except ValueError as exc:
            raise ValueError(f"trusted-proxies: {exc}") from None
        if self.pending_ttl <= 0:
            raise ValueError("pending-ttl must be positive")
        for name in ("heartbeat", "idle_timeout", "drain_timeout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.replace('_', '-')} must be 0 (off) or positive")
        if self.header_timeout <= 0:
            raise ValueError("header-timeout must be positive")
        if self.rate_limit and not 1024 <= self.rate_limit <= 1 << 40:
            raise ValueError("rate-limit must be from 1K to 1T bytes a second (or 0: none)")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log-format must be one of {', '.join(LOG_FORMATS)}")
        if self.admin_port is not None and not self.admin_token:
            raise ValueError(
                "the admin listener needs a token: --admin-token-file FILE or PIPE_RELAY_ADMIN_TOKEN"
            )
        token = self.admin_token
        if token and (
            len(token) < ADMIN_TOKEN_MIN or not token.isascii() or not token.isprintable() or " " in token
        ):
            raise ValueError(
                f"the admin token must be at least {ADMIN_TOKEN_MIN} printable ASCII characters, no spaces"
            )
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        if self.buffer_size < 4096:
            raise ValueError("buffer-size must be at least 4096")
        if self.max_head_size < 1024:
            raise ValueError("max-head-size must be at least 1024")

    def _check_listeners(self) -> None:
        if not isinstance(self.hosts, tuple) or not all(isinstance(h, str) for h in self.hosts):
            raise ValueError(f"hosts must be a tuple of addresses, not {self.hosts!r}")
        if not self.hosts and not self.unix_path:
            raise ValueError("nothing to listen on: give a host or a unix socket")
        if not self.http and self.https_port is None and not self.unix_path:
            raise ValueError("nothing to listen on: plain HTTP is off and HTTPS is not enabled")
        for index, host in enumerate(self.hosts):
            if not host or host != host.strip() or "[" in host or "]" in host:
                raise ValueError(f"host must be an address or a name without brackets, not {host!r}")
            if host in self.hosts[:index]:
                raise ValueError(f"host {host} is given twice")
        if len(os.fsencode(self.unix_path)) > UNIX_PATH_MAX:
            raise ValueError(f"unix socket path is longer than {UNIX_PATH_MAX} bytes")
        if not 0 <= self.unix_mode <= 0o777:
            raise ValueError(f"unix-mode must be 0..0777, not {oct(self.unix_mode)}")
