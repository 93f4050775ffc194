# The supervisor of `--workers N`: binds the listeners once, runs N worker processes on them, restarts one
# that dies. Invariant: no worker is started once the drain began; it returns when every worker has ended.
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Sequence

import trio

from ..config import Config
from ..core.tally import Tally
from .listen import Listener, defer_accept, listen_admin, listen_tcp, listen_unix, remove_unix
from .workers import ENV, WorkerSpec, map_shared, read_to_end, shared_size, tally_row

log = logging.getLogger("pipe_relay")
READY_TIMEOUT = 30.0
"""How long the workers have to start listening (they import, load certificates, map memory)."""
RESTART_BACKOFF = (0.1, 5.0)
"""A worker that dies within a second of its start waits before the next, doubling up to the second."""


class Workers:
    """The running workers: started, kept alive, told to drain."""

    def __init__(
        self, count: int, argv: Sequence[str], spec: WorkerSpec, sockets: Sequence[socket.socket] = ()
    ) -> None:
        self.count = count
        self._sockets = list(
            sockets
        )  # (ours, for restarts: closed at the drain, as the workers close theirs)
        self.argv = list(argv)
        self.spec = spec
        self.draining = False
        self.ended = trio.Event()
        """Set once the drain began and every worker has ended."""
        self.processes: dict[int, trio.Process] = {}
        self.started = 0
        self._memory = map_shared(spec.shared_fd, count)

    def __repr__(self) -> str:
        return f"<Workers {len(self.processes)}/{self.count}{' draining' if self.draining else ''}>"

    def _spec(self, index: int) -> WorkerSpec:
        spec = self.spec
        return dataclasses.replace(spec, index=index)

    async def keep(self, index: int) -> None:
        """Run worker `index`; restart it whenever it ends, until the drain."""
        backoff = RESTART_BACKOFF[0]
        while not self.draining:
            started = trio.current_time()
            env = {**os.environ, ENV: self._spec(index).to_env()}
            spec = self.spec
            fds = (*spec.plain, *spec.secure, *spec.unix, *spec.admin)
            fds += (spec.shared_fd, spec.ready_fd, spec.lifeline_fd)
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "pipe_relay", *self.argv],
                env=env,
                pass_fds=fds,
                start_new_session=True,  # (Ctrl-C reaches the supervisor, which tells each worker once)
            )
            self.processes[index] = process
            self.started += 1
            try:
                code = await process.wait()
            finally:
                self.processes.pop(index, None)
                # (what it held is gone, and it is no longer ready)
                Tally(tally_row(self._memory, index, self.count)).clear_gauges()
                if self.draining and not self.processes:
                    self.ended.set()
            if self.draining:
                return
            log.error("worker %d (pid %d) ended with %s; starting it again", index, process.pid, _how(code))
            if trio.current_time() - started < 1.0:
                await trio.sleep(backoff)
                backoff = min(backoff * 2, RESTART_BACKOFF[1])
            else:
                backoff = RESTART_BACKOFF[0]

    def drain(self) -> None:
        """No worker is restarted from now on; each is told to drain (SIGTERM; again: cut now)."""
        if not self.draining:
            for sock in self._sockets:  # (with every copy closed, new clients are refused at once)
                sock.close()
        self.draining = True
        if not self.processes:
            self.ended.set()
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)

    def signal_all(self, signum: int) -> None:
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)


def _how(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


async def supervise(
    config: Config,
    argv: Sequence[str],
    *,
    task_status: trio.TaskStatus[tuple[list[Listener], Workers]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Bind, start `config.workers` workers (each runs this program with `argv`), report the
    listeners once every worker accepts, keep them running until the drain has ended them all."""
    plain = await listen_tcp(config, config.port) if config.http else []
    secure: list[socket.socket] = []
    unix: list[socket.socket] = []
    admin: list[socket.socket] = []
    unix_file: tuple[int, int] | None = None
    directory = tempfile.mkdtemp(prefix="pipe-relay-")  # (0700: only this user's processes connect)
    shared = os.memfd_create("pipe-relay-shared")
    ready_read, ready_write = os.pipe()
    lifeline_read, lifeline_write = os.pipe()  # (the workers get the read end: EOF when we are gone)
    try:
        if config.https_port is not None:
            secure = await listen_tcp(config, config.https_port, tls=True)
        if config.unix_path:
            unix_sock, unix_file = listen_unix(config.unix_path, config.unix_mode)
            unix.append(unix_sock)
        sockets = [*plain, *secure, *unix]
        for sock in sockets:
            defer_accept(sock, config.header_timeout)
        if config.admin_port is not None:
            admin = await listen_admin(config)
        for sock in (*sockets, *admin):
            sock.set_inheritable(True)
        os.ftruncate(shared, shared_size(config.workers))
        os.set_inheritable(shared, True)
        os.set_inheritable(ready_write, True)
        os.set_inheritable(lifeline_read, True)
        spec = WorkerSpec(
            0,
            config.workers,
            directory,
            tuple(s.fileno() for s in plain),
            tuple(s.fileno() for s in secure),
            tuple(s.fileno() for s in unix),
            shared,
            secrets.token_hex(32),
            ready_write,
            lifeline_read,
            tuple(s.fileno() for s in admin),
        )
        workers = Workers(config.workers, argv, spec, [*sockets, *admin])
        listeners = [Listener(trio.socket.from_stdlib_socket(s), tls=s in secure) for s in sockets]
        listeners += [Listener(trio.socket.from_stdlib_socket(s), admin=True) for s in admin]
        async with trio.open_nursery() as nursery:
            for index in range(config.workers):
                nursery.start_soon(workers.keep, index)
            await _wait_ready(ready_read, config.workers)
            nursery.start_soon(read_to_end, ready_read)
            task_status.started((listeners, workers))
            await workers.ended.wait()
            nursery.cancel_scope.cancel()
    finally:
        for sock in (*plain, *secure, *unix, *admin):
            sock.close()
        for fd in (shared, ready_read, ready_write, lifeline_read, lifeline_write):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(directory, ignore_errors=True)
        if unix_file is not None:
            remove_unix(config.unix_path, unix_file)


async def _wait_ready(fd: int, count: int) -> None:
    """One byte from each worker once it accepts connections (within READY_TIMEOUT)."""
    os.set_blocking(fd, False)
    seen = 0
    with trio.fail_after(READY_TIMEOUT):
        while seen < count:
            try:
                seen += len(os.read(fd, count - seen))
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)
