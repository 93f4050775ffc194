# Command line: flags -> Config -> trio.run(serve). Nothing else lives here.
# Invariant: a bad flag or a busy address ends the program with one `pipe-relay: error: ...` line, exit 2/1.
from __future__ import annotations

import dataclasses
import errno
import getpass
import hashlib
import logging
import math
import os
import resource
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import trio

from ._version import __version__
from .cli_help import ADMIN_TOKEN_ENV, Parser, build_parser
from .config import HTTPS_PORT, Config
from .core.policy import PolicyError
from .net import serve
from .net.access import hash_password, load_policy
from .net.hub import Hub
from .net.listen import Listener, ListenError
from .net.splice import splice_available
from .net.supervisor import Workers, supervise
from .net.telemetry import (
    TALLY,
    BatchedStreamHandler,
    DirectAccessLog,
    JsonFormatter,
    flush_logs,
    use_id_key,
    write_access_lines,
)
from .net.tls import CertificateError
from .net.workers import ENV, Siblings, WorkerSpec, read_to_end

log = logging.getLogger("pipe_relay")
T = TypeVar("T")


def parse_args(argv: Sequence[str] | None = None) -> tuple[Config, int]:
    """The server's Config and the logging level, from the command line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.unix_mode is not None and not args.unix:
        parser.error("--unix-mode needs --unix")
    if not args.enable_https and args.https_port is not None:
        parser.error("--https-port needs --enable-https")
    if args.no_http and not args.enable_https:
        parser.error("--no-http needs --enable-https (else there is nothing to listen on)")
    https_port = (HTTPS_PORT if args.https_port is None else args.https_port) if args.enable_https else None
    defaults = Config()
    fields = {name: getattr(args, dest) for dest, name in parser.fields.items()}
    fields["admin_token"] = _admin_token(parser, args.admin_token_file)
    fields["cors_origins"] = tuple(part.strip() for part in args.cors_origins.split(",") if part.strip())
    if args.policy:
        try:
            load_policy(args.policy)
        except PolicyError as exc:
            parser.error(f"policy {exc}")
    try:
        config = Config(
            hosts=tuple(args.host) if args.host else defaults.hosts,
            http=not args.no_http,
            https_port=https_port,
            unix_mode=defaults.unix_mode if args.unix_mode is None else args.unix_mode,
            trusted_proxies=tuple(part for part in args.trusted_proxies.split(",") if part.strip()),
            **fields,
        )
    except ValueError as exc:
        parser.error(str(exc))
    if config.engine == "splice" and not splice_available():
        parser.error("--engine splice needs Linux splice(2) and tee(2)")
    level: int = getattr(logging, args.log_level.upper())
    return config, level


def _admin_token(parser: Parser, path: str | None) -> str:
    """The admin token: the first line of --admin-token-file, else PIPE_RELAY_ADMIN_TOKEN, else ""."""
    if path is None:
        return os.environ.get(ADMIN_TOKEN_ENV, "").strip()
    try:
        with open(path, encoding="utf-8") as file:
            return file.readline(4096).strip()
    except (OSError, UnicodeDecodeError) as exc:
        parser.error(f"cannot read --admin-token-file {path}: {getattr(exc, 'strerror', None) or exc}")


async def _run(config: Config, argv: Sequence[str] = ()) -> str | None:
    """Serve until a drain ends; the one-line reason if the server could not start. With
    `--workers N` (N > 1) this process is the supervisor of N workers, each running `argv`.

    The first SIGTERM or SIGINT drains (no new connections or pipes, active transfers get
    `--drain-timeout`); a second one cuts what is left at once."""
    hub = Hub(config)
    workers: Workers | None = None
    # The signal handlers come first: a SIGTERM right after the start-up line must drain, not kill
    # (in a container the server is PID 1, where a signal without a handler is ignored).
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            try:
                if config.workers > 1:
                    listeners, workers = await nursery.start(
                        _supervise_until_drained, config, argv, nursery.cancel_scope
                    )
                else:
                    listeners = await nursery.start(_serve_until_drained, config, hub, nursery.cancel_scope)
            except ListenError as exc:
                return f"pipe-relay: error: cannot listen on {exc.address}: {_listen_failure(exc)}"
            except CertificateError as exc:
                return f"pipe-relay: error: cannot load the TLS certificate: {exc.strerror}"
            for listener in listeners:
                if listener.admin:
                    print(f"admin listener (metrics, live transfers) on {listener.url}", flush=True)
                    continue
                url = listener.url
                fell_back = "://0.0.0.0:" in url and "0.0.0.0" not in config.hosts
                note = " (this host has no IPv6: IPv4 only)" if fell_back else ""
                print(f"pipe-relay {__version__} listening on {url}{note}", flush=True)
            for url in _openable(listeners):
                print(f"open {url} in a browser, or see: curl {url}help", flush=True)
            if workers is not None:
                print(f"{config.workers} worker processes, each pipe served by one", flush=True)
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGHUP:  # (reload the policy; the workers each reload theirs)
                    if workers is not None:
                        workers.signal_all(signal.SIGHUP)
                    elif hub.access is not None:
                        hub.access.reload_soon()
                    continue
                if workers is not None:
                    log.info("%s: %s", name, "telling the workers again" if workers.draining else "draining")
                    workers.drain()  # (a worker told twice cuts what it has left)
                    continue
                if hub.draining:
                    log.warning("%s again: cutting every connection now", name)
                    nursery.cancel_scope.cancel()
                    break
                log.info("%s: draining", name)
                hub.drain()
    return None


async def _run_worker(config: Config, spec: WorkerSpec) -> None:
    """One of the supervisor's workers: serve the listeners it was given until drained (its
    supervisor sends SIGTERM; a second one cuts what is left). It says nothing on stdout."""
    siblings = Siblings(spec)
    TALLY.slots = siblings.tally_row()  # (the row its siblings read for a scrape; what it held is gone)
    TALLY.clear_gauges()
    use_id_key(hashlib.blake2b(b"pipe ids", key=bytes.fromhex(spec.shared_key)).digest())
    hub = Hub(config, shared=siblings.counts)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(_serve_until_drained, config, hub, nursery.cancel_scope, siblings)
            TALLY.ready()  # (counted in `workers{alive}`)
            os.write(spec.ready_fd, b"r")
            nursery.start_soon(_drain_when_orphaned, hub, spec.lifeline_fd)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    if hub.access is not None:
                        hub.access.reload_soon()
                    continue
                if hub.draining:
                    nursery.cancel_scope.cancel()
                    break
                hub.drain()
    siblings.close()


async def _drain_when_orphaned(hub: Hub, lifeline: int) -> None:
    """The supervisor is gone (killed): nobody will tell this worker to stop, so it drains now."""
    await read_to_end(lifeline)
    log.warning("the supervisor is gone: draining")
    hub.drain()


def worker_config(config: Config) -> Config:
    """A worker's share of the server-wide limits (pipes are spread over the workers by their key's
    hash); the per-client limits stay whole, counted across the workers."""
    count = config.workers

    def share(limit: int) -> int:
        return max(1, math.ceil(limit / count))

    return dataclasses.replace(
        config,
        max_pending=share(config.max_pending),
        max_active=share(config.max_active),
        max_connections=share(config.max_connections),
        max_watchers=0 if config.max_watchers == 0 else share(config.max_watchers),
    )


def _listen_failure(exc: ListenError) -> str:
    """Why an address cannot be listened on; if it is taken, the flag that picks another."""
    if exc.errno != errno.EADDRINUSE:
        return exc.strerror or str(exc)
    if exc.address.startswith("unix:"):
        return "address already in use; choose another path with --unix"
    return f"address already in use; choose another port with {exc.flag}"


def _openable(listeners: list[Listener]) -> list[str]:
    """A URL a person can open for each scheme served over TCP (its first listener's): `localhost` for a
    wildcard address (`::`, `0.0.0.0`), else the address itself; the port is the one bound."""
    urls: dict[str, str] = {}
    for listener in listeners:
        if listener.socket.family == socket.AF_UNIX or listener.admin:
            continue
        host, port = listener.socket.getsockname()[:2]
        if host in ("::", "0.0.0.0"):
            host = "localhost"
        elif ":" in host:
            host = "[" + host.replace("%", "%25") + "]"  # (a scope, fe80::1%eth0, is escaped in a URL)
        scheme = "https" if listener.tls else "http"
        urls.setdefault(scheme, f"{scheme}://{host}:{port}/")
    return list(urls.values())


async def _serve_until_drained(
    config: Config,
    hub: Hub,
    done: trio.CancelScope,
    siblings: Siblings | None = None,
    *,
    task_status: trio.TaskStatus[list[Listener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    await serve(config, hub=hub, siblings=siblings, task_status=task_status)
    done.cancel()  # drained: the signal watcher ends too


async def _supervise_until_drained(
    config: Config,
    argv: Sequence[str],
    done: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[tuple[list[Listener], Workers]] = trio.TASK_STATUS_IGNORED,
) -> None:
    await supervise(config, argv, task_status=task_status)
    done.cancel()  # every worker drained: the signal watcher ends too


async def _flushing_logs(run: Callable[..., Awaitable[T]], *args: Any) -> T:
    """`run(*args)`, the batched log lines written every 0.1 s meanwhile (and once more at its end)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(flush_logs)
        try:
            return await run(*args)
        finally:
            nursery.cancel_scope.cancel()


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


def hash_password_command(argv: Sequence[str]) -> None:
    """`pipe-relay hash-password`: an argon2id hash for the policy file, of a password read from
    the terminal (asked twice) or from stdin's first line; never from the command line."""
    if argv:
        sys.exit("usage: pipe-relay hash-password  (the password from the prompt or stdin)")
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            sys.exit("pipe-relay: error: the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        sys.exit("pipe-relay: error: an empty password")
    print(hash_password(password))


def main(argv: Sequence[str] | None = None) -> None:
    # A SIGHUP (reload the policy) that comes while the server starts must not end it (its default
    # action): ignored until the signal loop listens. A worker inherits it across exec, so one being
    # (re)started is as safe.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["hash-password"]:
        hash_password_command(args[1:])
        return
    config, level = parse_args(args)
    spec_text = os.environ.pop(ENV, None)
    spec = WorkerSpec.from_env(spec_text) if spec_text else None
    where = f"worker {spec.index}: " if spec is not None else ""
    # (a line per request: no caller, thread or process lookups, which the lines do not show; the
    # logging docs' "Optimization" section)
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = BatchedStreamHandler()
    logging.basicConfig(
        level=level, format=f"%(asctime)s %(levelname)s {where}%(message)s", handlers=[handler]
    )
    if config.log_format == "json":
        handler.setFormatter(JsonFormatter())
    write_access_lines(DirectAccessLog(handler, where, json_lines=config.log_format == "json"))
    raise_fd_limit()
    try:
        if spec is not None:
            trio.run(_flushing_logs, _run_worker, worker_config(config), spec)
            return
        failure = trio.run(_flushing_logs, _run, config, args)
    except KeyboardInterrupt:
        return
    if failure:
        sys.exit(failure)


if __name__ == "__main__":
    main()
