# Command line: flags -> Config -> trio.run(serve). Nothing else lives here.
# Invariant: a bad flag or a busy address ends the program with one `pipe-relay: error: ...` line, exit 2/1.
from __future__ import annotations

import argparse
import errno
import logging
import resource
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

import trio

from ._version import __version__
from .config import ENGINES, HTTPS_PORT, Config
from .net import serve
from .net.hub import Hub
from .net.listen import Listener, ListenError
from .net.splice import splice_available
from .net.tls import CertificateError

log = logging.getLogger("pipe_relay")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"pipe-relay: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    defaults = Config()
    parser = _Parser(prog="pipe-relay", description="Streaming pipe relay server.")
    add = parser.add_argument
    add("--version", action="version", version=f"pipe-relay {__version__}")
    add(
        "--host",
        action="append",
        help="address to listen on; may be given several times (default ::, IPv4 and IPv6 both)",
    )
    add("--unix", default="", metavar="PATH", help="also listen on this Unix domain socket")
    add(
        "--unix-mode",
        type=_mode,
        default=None,
        help=f"permission bits of the --unix socket file (default {defaults.unix_mode:04o})",
    )
    add("--http-port", type=int, default=defaults.port, help="port (default %(default)s; 0 = any)")
    add("--no-http", action="store_true", help="no plain HTTP listener (HTTPS only: with --enable-https)")
    add("--enable-https", action="store_true", help="also serve HTTPS (HTTP/1.1 over TLS 1.2+)")
    add("--https-port", type=int, default=None, help="HTTPS port (default 8443; 0 = any)")
    add(
        "--crt-path",
        default="",
        metavar="PATH",
        help="certificate chain (PEM) for HTTPS, re-read when it changes",
    )
    add("--key-path", default="", metavar="PATH", help="private key (PEM) of the certificate")
    add("--max-pending", type=int, default=defaults.max_pending, help="pipes waiting for parties")
    add("--max-active", type=int, default=defaults.max_active, help="transfers streaming at once")
    add(
        "--max-connections",
        type=int,
        default=defaults.max_connections,
        help="open client connections at most (default %(default)s)",
    )
    add("--pending-ttl", type=float, default=defaults.pending_ttl, help="seconds a pipe may wait")
    add("--max-receivers", type=int, default=defaults.max_receivers, help="largest ?n")
    add("--max-path-length", type=int, default=defaults.max_path_length, help="longest path")
    add(
        "--heartbeat",
        type=float,
        default=defaults.heartbeat,
        help="seconds between waiting lines; 0 = off",
    )
    add(
        "--log-level",
        choices=("debug", "info", "warning"),
        default="info",
        help="debug logs every transfer; info logs failures (default %(default)s)",
    )
    add(
        "--log-paths",
        action="store_true",
        help="write pipe paths into the log (by default a transfer is logged as pipe#<keyed hash>)",
    )
    add("--engine", choices=ENGINES, default=defaults.engine, help="byte engine (default %(default)s)")
    add(
        "--header-timeout",
        type=float,
        default=defaults.header_timeout,
        help="seconds a client has for its whole request head (default %(default)s)",
    )
    add("--max-watchers", type=int, default=defaults.max_watchers, help="?progress watchers at once")
    for what, help_text in (
        ("pending", "waiting parties"),
        ("active", "active transfers"),
        ("watchers", "?progress watchers"),
        ("connections", "open connections"),
        ("pages", "page and error replies on their way"),
    ):
        name = f"client_max_{what}"
        add(
            f"--client-max-{what}",
            type=int,
            default=getattr(defaults, name),
            help=f"{help_text} per client address (default %(default)s; 0 = no limit)",
        )
    add(
        "--trusted-proxies",
        default="",
        help="comma-separated CIDRs of our own proxies: from them, the client is X-Forwarded-For's last hop",
    )
    add(
        "--drain-timeout",
        type=float,
        default=defaults.drain_timeout,
        help="on SIGTERM/SIGINT, seconds active transfers get to finish; 0 = cut at once",
    )
    add(
        "--idle-timeout",
        type=float,
        default=defaults.idle_timeout,
        help="abort a transfer idle this long; 0 = off",
    )
    return parser


def _mode(text: str) -> int:
    """`--unix-mode 0660`: octal permission bits."""
    try:
        return int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal mode: {text!r}") from None


def parse_args(argv: Sequence[str] | None = None) -> tuple[Config, int]:
    """The server's Config and the logging level, from the command line."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.unix_mode is not None and not args.unix:
        parser.error("--unix-mode needs --unix")
    if not args.enable_https and args.https_port is not None:
        parser.error("--https-port needs --enable-https")
    if args.no_http and not args.enable_https:
        parser.error("--no-http needs --enable-https (else there is nothing to listen on)")
    https_port = (HTTPS_PORT if args.https_port is None else args.https_port) if args.enable_https else None
    defaults = Config()
    try:
        config = Config(
            hosts=tuple(args.host) if args.host else defaults.hosts,
            port=args.http_port,
            http=not args.no_http,
            https_port=https_port,
            crt_path=args.crt_path,
            key_path=args.key_path,
            unix_path=args.unix,
            unix_mode=defaults.unix_mode if args.unix_mode is None else args.unix_mode,
            max_pending=args.max_pending,
            max_active=args.max_active,
            max_connections=args.max_connections,
            pending_ttl=args.pending_ttl,
            max_receivers=args.max_receivers,
            max_path_length=args.max_path_length,
            heartbeat=args.heartbeat,
            idle_timeout=args.idle_timeout,
            header_timeout=args.header_timeout,
            drain_timeout=args.drain_timeout,
            log_paths=args.log_paths,
            max_watchers=args.max_watchers,
            client_max_pending=args.client_max_pending,
            client_max_active=args.client_max_active,
            client_max_watchers=args.client_max_watchers,
            client_max_connections=args.client_max_connections,
            client_max_pages=args.client_max_pages,
            trusted_proxies=tuple(part for part in args.trusted_proxies.split(",") if part.strip()),
            engine=args.engine,
        )
    except ValueError as exc:
        parser.error(str(exc))
    if config.engine == "splice" and not splice_available():
        parser.error("--engine splice needs Linux splice(2) and tee(2)")
    level: int = getattr(logging, args.log_level.upper())
    return config, level


async def _run(config: Config) -> str | None:
    """Serve until a drain ends; the one-line reason if the server could not start.

    The first SIGTERM or SIGINT drains (no new connections or pipes, active transfers get
    `--drain-timeout`); a second one cuts what is left at once."""
    hub = Hub(config)
    # The signal handlers come first: a SIGTERM right after the start-up line must drain, not kill
    # (in a container the server is PID 1, where a signal without a handler is ignored).
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            try:
                listeners = await nursery.start(_serve_until_drained, config, hub, nursery.cancel_scope)
            except ListenError as exc:
                busy = exc.errno == errno.EADDRINUSE
                reason = "address already in use" if busy else exc.strerror or str(exc)
                return f"pipe-relay: error: cannot listen on {exc.address}: {reason}"
            except CertificateError as exc:
                return f"pipe-relay: error: cannot load the TLS certificate: {exc.strerror}"
            for listener in listeners:
                url = listener.url
                fell_back = "://0.0.0.0:" in url and "0.0.0.0" not in config.hosts
                note = " (this host has no IPv6: IPv4 only)" if fell_back else ""
                print(f"pipe-relay {__version__} listening on {url}{note}", flush=True)
            async for signum in signals:
                if hub.draining:
                    log.warning("%s again: cutting every connection now", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    break
                log.info("%s: draining", signal.Signals(signum).name)
                hub.drain()
    return None


async def _serve_until_drained(
    config: Config,
    hub: Hub,
    done: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[list[Listener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    await serve(config, hub=hub, task_status=task_status)
    done.cancel()  # drained: the signal watcher ends too


def raise_fd_limit() -> None:
    """Every connection is a descriptor: lift the soft limit to the hard one, and say so."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open file limit from %d to %d: %s", soft, hard, exc)
        return
    log.info("open file limit raised from %d to %d", soft, hard)


def main(argv: Sequence[str] | None = None) -> None:
    config, level = parse_args(argv)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s")
    raise_fd_limit()
    try:
        failure = trio.run(_run, config)
    except KeyboardInterrupt:
        return
    if failure:
        sys.exit(failure)


if __name__ == "__main__":
    main()
