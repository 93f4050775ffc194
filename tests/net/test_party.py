# Parties as types: a receiver's end is said once and decides its close; states show in the repr.
from __future__ import annotations

import socket

import pytest

from pipe_relay import Config
from pipe_relay.core.routing import Receive, Request, route
from pipe_relay.errors import ErrorCode, pipe_error
from pipe_relay.net.connection import HttpConnection
from pipe_relay.net.link import CloseMode
from pipe_relay.net.party import ABORTED, COMPLETED, Ending, Naps, Receiver, ReceiverEnd


@pytest.mark.parametrize(
    ("end", "mode"),
    [
        (COMPLETED, CloseMode.NORMAL),
        (ABORTED, CloseMode.ABORT),
        (ReceiverEnd(Ending.FAILED), CloseMode.NORMAL),
    ],
)
def test_a_receivers_close_follows_from_its_end(end: ReceiverEnd, mode: CloseMode) -> None:
    assert end.close_mode is mode


async def test_a_receiver_is_released_once_and_shows_it() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        request = Request("GET", "/r?n=2", (("host", "h"),))
        decision = route(request, max_path_length=1024, max_receivers=8)
        assert isinstance(decision, Receive)
        receiver = Receiver(HttpConnection(ours, Config()), request, decision, Naps(0.5), "127.0.0.2")
        assert repr(receiver) == "<Receiver '/r' waiting>"
        failed = ReceiverEnd(Ending.FAILED, pipe_error(ErrorCode.SENDER_FAILED, detail="gone"))
        receiver.release(failed)
        receiver.release(ABORTED)  # too late: the first word stands
        assert receiver.end is failed and receiver.released.is_set()
        assert repr(receiver) == "<Receiver '/r' waiting failed>"
