# A transfer: from an established pipe to receiver heads, the byte engine, and the sender's status lines.
# Invariant: a receiver sees a complete body only if the sender's body completed; else an error or a reset.
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from ..config import Config
from ..core import status
from ..core.forms import FormExtractor
from ..core.headers import BodyInfo, body_info, is_multipart_form, receiver_headers
from ..core.pace import Pace
from ..core.progress import TransferState
from ..core.registry import Established
from ..core.routing import Receive
from ..errors import ErrorCode, PipeError, TransferError, TransferFailure, pipe_error
from .body import FormBody, Paced, Prepend, SeekBudget, paced_step
from .engine import ByteEngine, Sink, Source
from .link import CloseMode, Headers
from .party import ABORTED, COMPLETED, REQUEUED, Ending, Receiver, ReceiverEnd, Sender
from .telemetry import TALLY, pipe_tag

if TYPE_CHECKING:
    from .party import Party
    from .progress import Board

log = logging.getLogger("pipe_relay")
DRAIN_LIMIT = 64 * 1024 * 1024
DRAIN_TIMEOUT = 30.0


class _Events:
    """A transfer's steps as they happen: progress for its watchers, the tally, its sender's lines."""

    def __init__(self, sender: Sender, board: Board | None, receivers: int) -> None:
        self.sender = sender
        self.board = board
        self.moved = 0
        self.alive = receivers
        self.dropped: dict[int, int] = {}  # id(sink) -> bytes it had when its receiver left
        self.started = trio.current_time()

    def progress(self, moved: int) -> None:
        self.moved += moved
        TALLY.moved(moved, moved * self.alive)
        if self.board is not None:
            self.board.add_bytes(moved)

    def log(self, level: int, key: str, n: int, outcome: str, *, show_path: bool) -> None:
        if log.isEnabledFor(level):
            seconds = trio.current_time() - self.started
            shown = key if show_path else pipe_tag(key)
            log.log(level, "transfer %s n=%d %s: %d bytes in %.3f s", shown, n, outcome, self.moved, seconds)

    async def receiver_dropped(self, sink: Sink, alive: int) -> None:
        self.alive = alive
        self.dropped[id(sink)] = self.moved
        if alive:
            await self.sender.say(status.receiver_dropped(alive))

    def ended(self, reason: str | None, receivers: tuple[Receiver, ...], sinks: list[Sink]) -> None:
        """Tally the transfer's end, and what each party's request moved (for the access log)."""
        TALLY.ended(reason, trio.current_time() - self.started, self.moved)
        self.sender.link.exchange.bytes_in = self.moved
        for index, receiver in enumerate(receivers):
            sink = sinks[index] if index < len(sinks) else None
            moved = 0 if sink is None else self.dropped.get(id(sink), self.moved)
            receiver.link.exchange.bytes_out = moved


def _sink_for(receiver: Receiver, info: BodyInfo) -> Sink:
    request = receiver.request
    decision = receiver.decision
    assert isinstance(decision, Receive)

    def headers(framing_headers: Headers) -> Headers:
        return receiver_headers(
            info,
            origin=request.header("origin"),
            download=decision.download,
            filename=decision.filename,
            framing_headers=framing_headers,
        )

    return receiver.link.open_response(request, info.content_length, headers)


async def run_transfer(
    established: Established[Party],
    *,
    config: Config,
    engine: ByteEngine,
    board: Board | None,
    seek_budget: SeekBudget,
    stop: trio.CancelScope | None = None,
    pace: Pace | None = None,
) -> TransferState:
    """Stream the sender's body to every receiver, in the sender's connection task; how it ended
    (`done` or `aborted`), for the hub to record. `stop`: the scope the operator cancels to end it
    (then the hub tells the sender; here it is only tallied)."""
    sender = established.sender
    receivers = tuple(r for r in established.receivers if isinstance(r, Receiver))
    assert isinstance(sender, Sender) and len(receivers) == established.n
    TALLY.started(established.n)
    events = _Events(sender, board, established.n)
    sinks: list[Sink] = []
    reason: str | None = "internal"
    try:
        ended, reason = await _run(
            established, sender, receivers, sinks, events, config, engine, seek_budget, pace
        )
        return ended
    except trio.Cancelled:
        reason = "operator" if stop is not None and stop.cancel_called else "shutdown"
        raise
    finally:
        events.ended(reason, receivers, sinks)


async def _run(
    established: Established[Party],
    sender: Sender,
    receivers: tuple[Receiver, ...],
    sinks: list[Sink],
    events: _Events,
    config: Config,
    engine: ByteEngine,
    seek_budget: SeekBudget,
    pace: Pace | None,
) -> tuple[TransferState, str | None]:
    """The transfer, and why it did not complete (None: it did); `pace`: its cap (None: none)."""
    request = sender.request
    step = paced_step(pace.rate, config.buffer_size) if pace else config.buffer_size
    raw = sender.link.open_body(request, buffer_size=step, idle_timeout=config.idle_timeout)
    lines = (sender.count_line(), status.streaming(established.n))
    log_paths = config.log_paths
    if raw.complete_in_prefix:
        sender.defer(*lines)  # the body is all here: these go out with the final lines, in one write
    elif not (await sender.say(*lines) and await sender.link.still_there()):
        # Gone before a byte moved (killed while it waited, its close hidden behind its body):
        # its receivers wait for another sender rather than take part of a dead one's body.
        raw.release()
        for receiver in receivers:
            receiver.release(REQUEUED)
        sender.link.close_mode = CloseMode.ABORT
        gone = "sender gone before the start"
        events.log(logging.INFO, established.key, established.n, gone, show_path=log_paths)
        return TransferState.ABORTED, "sender_gone_before_start"
    content_type = request.header("content-type")
    multipart = is_multipart_form(content_type)
    try:
        source: Source = raw
        part = None
        if multipart:
            try:
                extractor = FormExtractor(content_type or "")
            except PipeError as exc:
                raise TransferError(TransferFailure.BAD_UPLOAD, exc.message) from None
            form = FormBody(raw, extractor, seek_budget)
            start, pieces = await form.start()
            part = (start.content_type, start.disposition)
            source = Prepend(pieces, form)
        if pace is not None:
            source = Paced(source, pace)
        info = body_info(request.headers, multipart_part=part)
        if events.board is not None:
            events.board.total = info.content_length
            events.board.limit = pace.rate if pace is not None else None
        sinks.extend(_sink_for(r, info) for r in receivers)
        await engine.relay(source, sinks, events)
    except TransferError as exc:
        events.log(logging.INFO, established.key, established.n, f"failed ({exc})", show_path=log_paths)
        await _fail(sender, receivers, sinks, exc)
        return TransferState.ABORTED, exc.failure.name.lower()
    finally:
        raw.release()
    events.log(logging.DEBUG, established.key, established.n, "complete", show_path=log_paths)
    for receiver, sink in zip(receivers, sinks, strict=True):
        receiver.release(COMPLETED if sink.alive else ABORTED)
    if multipart:
        await raw.drain(limit=DRAIN_LIMIT, seconds=DRAIN_TIMEOUT)
    sender.link.close_mode = CloseMode.NORMAL if raw.done else CloseMode.LINGER
    await sender.say(status.UPLOAD_COMPLETE, status.TRANSFER_COMPLETE, end=True)
    return TransferState.DONE, None


async def _fail(
    sender: Sender, receivers: tuple[Receiver, ...], sinks: list[Sink], exc: TransferError
) -> None:
    """Stop a transfer: receivers never see a clean end; the sender hears why, if it is there."""
    for index, receiver in enumerate(receivers):
        sink = sinks[index] if index < len(sinks) else None
        if sink is None or (sink.alive and not sink.head_sent):
            # nothing reached this receiver yet: it can get a proper error response
            error = pipe_error(ErrorCode.SENDER_FAILED, detail=exc.failure.value)
            receiver.release(ReceiverEnd(Ending.FAILED, error))
        else:
            receiver.release(ABORTED)
    if exc.failure is TransferFailure.SENDER_GONE:
        sender.link.close_mode = CloseMode.ABORT
        return
    sender.link.close_mode = CloseMode.LINGER
    await sender.say(status.transfer_failed(exc.failure, exc.detail), end=True)
