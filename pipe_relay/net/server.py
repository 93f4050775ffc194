# The server: listeners, one task per connection, the TTL reaper; `serve` runs until cancelled.
# Invariant: every connection task closes its socket in `finally`; all tasks live in serve's nursery.
from __future__ import annotations

import logging
from functools import partial

import trio

from ..config import Config
from ..core.replies import preflight_reply
from ..core.routing import Play, Preflight, Receive, Send, ServePage, Watch, route
from ..errors import PipeError
from .connection import CloseMode, HttpConnection
from .engine import tune_malloc
from .hub import Hub
from .progress import serve_watcher
from .service import page_reply, progress_page_reply, video_page_reply

log = logging.getLogger("pipe_relay")


async def serve(
    config: Config,
    *,
    hub: Hub | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a pipe-relay server; `task_status.started(listeners)` once it accepts connections.

    `hub` lets an embedding program (or a test) observe the rendezvous state.
    """
    tune_malloc()
    listeners = await trio.open_tcp_listeners(config.port, host=config.host)
    hub = hub or Hub(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run_reaper)
        await nursery.start(trio.serve_listeners, partial(handle_connection, hub=hub), listeners)
        task_status.started(listeners)


async def handle_connection(stream: trio.SocketStream, hub: Hub) -> None:
    conn = HttpConnection(stream, hub.config)
    try:
        await _serve_requests(conn, hub)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the peer went away mid-reply: nothing left to tell it
    except Exception:
        # A bug in one connection must not end every other transfer: log it, drop this one.
        log.exception("internal error on connection from %s", conn.peer)
        conn.close_mode = CloseMode.ABORT
    finally:
        await conn.close()


async def _serve_requests(conn: HttpConnection, hub: Hub) -> None:
    config = hub.config
    while True:
        try:
            request = await conn.read_request()
        except PipeError as exc:
            await conn.send_raw_error(exc)
            return
        if request is None:
            return
        origin = request.header("origin")
        try:
            decision = route(
                request,
                max_path_length=config.max_path_length,
                max_receivers=config.max_receivers,
            )
        except PipeError as exc:
            await conn.send_error(exc, origin)
        else:
            if isinstance(decision, Send):
                await hub.serve_sender(conn, request, decision)
                return
            if isinstance(decision, Receive):
                await hub.serve_receiver(conn, request, decision)
                return
            if isinstance(decision, Watch) and not decision.html:
                await serve_watcher(hub, conn, request, decision.key)
                return
            if isinstance(decision, Preflight):
                private = request.header("access-control-request-private-network") == "true"
                await conn.send_reply(preflight_reply(origin=origin, private_network=private))
            elif isinstance(decision, Watch):
                await conn.send_reply(progress_page_reply(decision, request))
            elif isinstance(decision, Play):
                await conn.send_reply(video_page_reply(decision, request))
            elif isinstance(decision, ServePage):
                await conn.send_reply(page_reply(decision, request, conn.peer))
        if not conn.next_cycle():
            return
