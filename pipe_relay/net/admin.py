# The admin listener: Hypercorn serves the admin app in the server's nursery; workers answer each other.
# Invariant: it stops at the drain; a sibling that does not answer in time is left out, never waited on.
"""Under `--workers` every worker serves the admin listener (the supervisor bound it once, as it
binds the public ones): the metrics come from the tally every worker keeps in the memory they share,
and the transfers from each worker, asked over its `admin-I.sock` (one JSON line each way)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from .._version import __version__
from ..admin import AdminApp
from ..admin.metrics import CONTENT_TYPE, Facts, exposition
from ..config import Config
from ..core import tally
from ..core.heads import MAX_HEADER_LINES
from ..core.registry import PipeState
from ..core.tally import MutableSlots
from ..core.transfers import TransferView
from .hub import Hub
from .party import Party
from .telemetry import TALLY, pipe_id
from .workers import Siblings

log = logging.getLogger("pipe_relay")
_HYPERCORN_LOG = logging.getLogger("pipe_relay.admin")
_HYPERCORN_LOG.setLevel(logging.WARNING)  # (its "Running on" line: the start-up line says so already)
PEER_TIMEOUT = 2.0
"""How long a worker waits for a sibling's transfers (or its terminate) before leaving it out."""
PEER_LIMIT = 64 * 1024 * 1024
LIMITS = (
    *tally.LIMITS.values(),
    "max_receivers",
    "pending_ttl",
    "idle_timeout",
    "header_timeout",
    "drain_timeout",
    "buffer_size",
)


class Backend:
    """The admin app's view of the server: this worker's hub, and its siblings over their sockets."""

    def __init__(self, hub: Hub, config: Config, siblings: Siblings | None = None) -> None:
        self.hub = hub
        self.config = config
        self.siblings = siblings
        self._samples: dict[str, tuple[float, int]] = {}  # id -> (time, bytes) when last listed

    def __repr__(self) -> str:
        return f"<admin Backend {self.hub!r}>"

    def local(self) -> list[TransferView]:
        """This worker's pipes now."""
        return [view for _, view in self._views()]

    def _views(self) -> list[tuple[str, TransferView]]:
        """Each of this worker's pipes now: its key, and its view (the rate samples move on)."""
        hub, now, wall = self.hub, trio.current_time(), time.time()
        worker = 0 if self.siblings is None else self.siblings.index
        views: list[tuple[str, TransferView]] = []
        samples: dict[str, tuple[float, int]] = {}
        for pipe in hub.registry.pipes():
            parties: list[Party] = [p for p in (pipe.sender, *pipe.receivers) if isinstance(p, Party)]
            board = hub.boards.get(pipe.key)
            moved = board.bytes if board is not None else 0
            ident = pipe_id(pipe.key)
            samples[ident] = (now, moved)
            rate = 0.0
            if pipe.state is PipeState.ACTIVE and board is not None and board.started is not None:
                before = self._samples.get(ident)
                if before is None or now - before[0] > 10 or now - before[0] < 0.2:
                    before = (board.started, 0)  # (the average since its start)
                rate = (moved - before[1]) / (now - before[0]) if now > before[0] else 0.0
            views.append(
                (
                    pipe.key,
                    TransferView(
                        id=ident,
                        state=pipe.state.value,
                        n=pipe.n,
                        sender=pipe.sender is not None,
                        receivers=len(pipe.receivers),
                        bytes=moved,
                        total=board.total if board is not None else None,
                        rate=max(0.0, rate),
                        started_at=wall - (now - (pipe.deadline - hub.registry.ttl)),
                        protocol=parties[0].link.exchange.protocol if parties else None,
                        clients=tuple(p.client for p in parties),
                        worker=worker,
                        user=next((p.link.exchange.user for p in parties if p.link.exchange.user), None),
                    ),
                )
            )
        self._samples = samples
        return views

    def terminate_local(self, transfer_id: str) -> TransferView | None:
        """End this worker's transfer `transfer_id`: its view as it was, or None (not here, or
        ending already)."""
        for key, view in self._views():
            if view.id == transfer_id:
                return view if self.hub.terminate(key) else None
        return None

    async def transfers(self) -> Sequence[TransferView]:
        views = self.local()
        for reply in await self._ask_siblings({"op": "list"}):
            views.extend(TransferView.from_json(v) for v in reply.get("transfers", ()))
        return views

    async def terminate(self, transfer_id: str) -> TransferView | None:
        view = self.terminate_local(transfer_id)
        if view is not None:
            return view
        for reply in await self._ask_siblings({"op": "terminate", "id": transfer_id}):
            ended = reply.get("terminated")
            if isinstance(ended, dict):
                return TransferView.from_json(ended)
        return None

    def metrics(self) -> tuple[bytes, str]:
        siblings, config = self.siblings, self.config
        rows: Sequence[MutableSlots] = [TALLY.slots] if siblings is None else siblings.tally_rows()
        facts = Facts(
            version=__version__,
            engine=str(getattr(self.hub.engine, "name", "custom")),
            limits=_limits(config),
            workers=1 if siblings is None else siblings.count,
            alive=1 if siblings is None else siblings.alive,
        )
        return exposition(rows, facts), CONTENT_TYPE

    async def _ask_siblings(self, request: dict[str, str]) -> list[dict[str, list[dict[str, object]]]]:
        siblings = self.siblings
        if siblings is None:
            return []
        replies: list[dict[str, list[dict[str, object]]]] = []

        async def ask(index: int) -> None:
            reply = await _ask(siblings.spec.socket_path("admin", index), request)
            if reply is not None:
                replies.append(reply)

        async with trio.open_nursery() as nursery:
            for index in range(siblings.count):
                if index != siblings.index:
                    nursery.start_soon(ask, index)
        return replies


def _limits(config: Config) -> dict[str, float]:
    """Every limit by its flag's name (`max_headers` is fixed: it has none)."""
    limits = {name: float(getattr(config, name)) for name in LIMITS if name != "max_headers"}
    limits["max_headers"] = float(MAX_HEADER_LINES)
    return limits


async def _ask(path: str, request: dict[str, str]) -> dict[str, list[dict[str, object]]] | None:
    """One question to a sibling; None if it does not answer within PEER_TIMEOUT."""
    with trio.move_on_after(PEER_TIMEOUT):
        try:
            stream = await trio.open_unix_socket(path)
        except OSError:
            return None
        async with stream:
            try:
                await stream.send_all(json.dumps(request).encode() + b"\n")
                data = await _read_line(stream)
                reply = None if data is None else json.loads(data)
            except (trio.BrokenResourceError, OSError, ValueError):  # (it died meanwhile, or garbled)
                return None
            return reply if isinstance(reply, dict) else None
    log.warning("admin: worker at %s did not answer in %g s", path, PEER_TIMEOUT)
    return None


async def _read_line(stream: trio.SocketStream) -> bytes | None:
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some(256 * 1024)
        if not chunk or len(data) + len(chunk) > PEER_LIMIT:
            return None
        data += chunk
    return bytes(data)


async def serve_peers(
    backend: Backend, siblings: Siblings, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Answer the siblings' questions (one a connection) on `admin-I.sock`."""
    path = siblings.spec.socket_path("admin", siblings.index)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # (a restarted worker's former self left it)
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await listener.bind(path)
    listener.listen(16)
    task_status.started()
    async with trio.open_nursery() as nursery:
        with listener:
            while True:
                try:
                    sock, _ = await listener.accept()
                except OSError:  # (out of descriptors: the public listeners' backoff)
                    await trio.sleep(0.1)
                    continue
                nursery.start_soon(_answer_peer, backend, trio.SocketStream(sock))


async def _answer_peer(backend: Backend, stream: trio.SocketStream) -> None:
    """One sibling's question; one that gave up waiting (or sent garbage) costs nothing but this."""
    try:
        await _answer(backend, stream)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ValueError, AttributeError):
        pass
    finally:
        await stream.aclose()


async def _answer(backend: Backend, stream: trio.SocketStream) -> None:
    with trio.move_on_after(PEER_TIMEOUT):
        data = await _read_line(stream)
        if data is None:
            return
        request = json.loads(data)
        reply: dict[str, object]
        if request.get("op") == "list":
            reply = {"transfers": [v.to_json() for v in backend.local()]}
        elif request.get("op") == "terminate":
            ended = backend.terminate_local(str(request.get("id")))
            reply = {"terminated": None if ended is None else ended.to_json()}
        else:
            reply = {}
        await stream.send_all(json.dumps(reply).encode() + b"\n")


async def serve_admin(
    config: Config,
    hub: Hub,
    sockets: Sequence[socket.socket],
    siblings: Siblings | None = None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the admin app on `sockets` (bound and listening: every address of `--admin-host`) until
    the hub drains: one backend, one Hypercorn, and (under `--workers`) one answerer of siblings."""
    backend = Backend(hub, config, siblings)
    app: Any = AdminApp(backend, config.admin_token)  # (an ASGI app; Hypercorn's types name its own)
    settings = HypercornConfig()
    # (Hypercorn's socket objects own the copies)
    settings.bind = [f"fd://{os.dup(sock.fileno())}" for sock in sockets]
    settings.accesslog = None
    settings.errorlog = _HYPERCORN_LOG
    settings.graceful_timeout = 1.0
    settings.keep_alive_timeout = 5.0
    settings.h11_max_incomplete_size = 16 * 1024
    settings.include_server_header = False
    async with trio.open_nursery() as nursery:
        if siblings is not None:
            await nursery.start(serve_peers, backend, siblings)
        await nursery.start(partial(hypercorn_serve, app, settings, shutdown_trigger=hub.drain_started.wait))
        task_status.started()
        await hub.drain_started.wait()
        nursery.cancel_scope.deadline = trio.current_time() + 2 * settings.graceful_timeout
