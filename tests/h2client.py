# The one raw HTTP/2 test client: the h2 library over a trio TCP stream, frames judged as they arrive.
# Invariant: it reports what the wire said (END_STREAM, RST_STREAM and its code); windows open when told.
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings
import trio


@dataclass
class H2Response:
    """One stream as this client saw it."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    ended: bool = False
    """END_STREAM came."""
    reset: int | None = None
    """The RST_STREAM error code, if the server reset the stream."""
    acked: int = 0
    """Bytes of `data` whose window this client opened again."""


class H2Client:
    """An HTTP/2 client on one connection (h2c by prior knowledge). `auto_ack=False`: received data
    is not acknowledged, so the server's window to us stays shut once used (a stalled receiver)."""

    def __init__(self, stream: trio.SocketStream, *, window: int | None, auto_ack: bool) -> None:
        self.stream = stream
        self.auto_ack = auto_ack
        settings = {} if window is None else {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.h2.local_settings = h2.settings.Settings(client=True, initial_values=settings)
        self.responses: dict[int, H2Response] = {}
        self.sent: dict[int, int] = {}
        """Body bytes sent per stream (what the server's flow control let through)."""
        self.closed = False
        self.goaway: h2.events.ConnectionTerminated | None = None
        """The server's GOAWAY, once one came."""
        self.pings = 0
        """PING ACKs received."""

    @classmethod
    async def connect(
        cls, host: str, port: int, *, window: int | None = None, auto_ack: bool = True
    ) -> H2Client:
        client = cls(await trio.open_tcp_stream(host, port), window=window, auto_ack=auto_ack)
        client.h2.initiate_connection()
        await client.flush()
        return client

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def request(self, method: str, path: str, *headers: tuple[str, str], end: bool = False) -> int:
        stream_id = self.h2.get_next_available_stream_id()
        fields = [
            (b":method", method.encode()),
            (b":scheme", b"http"),
            (b":authority", b"relay"),
            (b":path", path.encode()),
        ]
        fields += [(name.encode(), value.encode()) for name, value in headers]
        self.h2.send_headers(stream_id, fields, end_stream=end)
        self.responses[stream_id] = H2Response()
        await self.flush()
        return stream_id

    async def send_body(self, stream_id: int, data: bytes, *, end: bool = True) -> None:
        """All of `data` within the server's flow-control windows (waiting for them to open)."""
        view = memoryview(data)
        while view:
            room = min(
                self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size, len(view)
            )
            if room <= 0:
                await self.read_more()
                continue
            self.h2.send_data(stream_id, bytes(view[:room]))
            self.sent[stream_id] = self.sent.get(stream_id, 0) + room
            view = view[room:]
            await self.flush()
        if end:
            self.h2.end_stream(stream_id)
            await self.flush()

    async def reset(self, stream_id: int) -> None:
        self.h2.reset_stream(stream_id)
        await self.flush()

    def acknowledge(self, stream_id: int) -> None:
        """Open the window for everything received on `stream_id` so far (with auto_ack off)."""
        response = self.responses[stream_id]
        taken = len(response.data) - response.acked
        if taken:
            self.h2.acknowledge_received_data(taken, stream_id)
            response.acked = len(response.data)

    async def read_more(self) -> None:
        data = await self.stream.receive_some(1 << 20)
        if not data:
            self.closed = True
            raise EOFError("the server closed the connection")
        for event in self.h2.receive_data(data):
            self._event(event)
        await self.flush()

    async def until(self, done: Callable[[], bool]) -> None:
        while not done():
            await self.read_more()

    async def round_trip(self) -> None:
        """A PING and its ACK: whatever the server sent before it read the PING is in."""
        expected = self.pings + 1
        self.h2.ping(expected.to_bytes(8, "big"))
        await self.flush()
        await self.until(lambda: self.pings >= expected)

    async def until_over(self, stream_id: int) -> H2Response:
        """Until the stream ends (END_STREAM) or is reset."""
        response = self.responses[stream_id]
        await self.until(lambda: response.ended or response.reset is not None)
        return response

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
            return
        if isinstance(event, h2.events.PingAckReceived):
            self.pings += 1
            return
        stream_id = getattr(event, "stream_id", None)
        response = self.responses.get(stream_id) if stream_id else None
        if response is None:
            return
        if isinstance(event, h2.events.ResponseReceived):
            for name, value in event.headers or []:
                if name == b":status":
                    response.status = int(value)
                else:
                    response.headers[name.decode()] = value.decode()
        elif isinstance(event, h2.events.DataReceived):
            response.data += event.data or b""
            if self.auto_ack:
                self.h2.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
                response.acked = len(response.data)
        elif isinstance(event, h2.events.StreamEnded):
            response.ended = True
        elif isinstance(event, h2.events.StreamReset):
            response.reset = int(event.error_code or 0)
