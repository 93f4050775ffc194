# TLS on our own sockets: the certificate (re-read when its files change), the handshake, TLS body and writer.
# Invariant: a TLS socket's would-block is a BlockingIOError, as a plain socket's; TLS is never spliced.
"""The stdlib `ssl` module's `SSLObject` over two memory BIOs, driven by our own non-blocking socket
(no kTLS here: TLS bodies go through the buffer engine). The stdlib cannot turn on OpenSSL's
read-ahead, so an `ssl.SSLSocket` costs two read(2)s and one write(2) per 16 KiB record; here the
socket is read RECV_SIZE at a time into the incoming BIO and written a WRITE_CHUNK of records at a
time from the outgoing one. `TlsSocket` has the small socket surface `HttpConnection` and
`Http2Connection` use, so the front ends serve both listeners; `TlsBody` and `TlsWriter` are the TLS
versions of the sender's `SocketBody` and a receiver's `SocketWriter`."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Any

import trio

from ..core.framing import BodyDecoder
from .body import SocketBody
from .engine import Segment

log = logging.getLogger("pipe_relay")

ALPN = ("h2", "http/1.1")
RECV_SIZE = 256 * 1024
"""Ciphertext taken from the socket per read(2) (into one scratch buffer shared by all sockets:
it is copied into the connection's incoming BIO at once)."""
WRITE_CHUNK = 256 * 1024
"""Plaintext encrypted per step of a write (joined from small pieces): its records leave in one
send(2); it bounds the ciphertext a slow receiver's socket holds for us (nothing more is taken
while any is unsent)."""
_SCRATCH = memoryview(bytearray(RECV_SIZE))
_PLAIN = memoryview(bytearray(RECV_SIZE))
_ENDS = (ssl.SSLZeroReturnError, ssl.SSLEOFError)  # close_notify, a FIN without it: the end, both


class CertificateError(OSError):
    """The certificate or key cannot be loaded (at start-up: the server does not start)."""


def _stamp(paths: Sequence[str]) -> tuple[tuple[int, int, int], ...]:
    stamps = []
    for path in paths:
        info = os.stat(path)
        stamps.append((info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(stamps)


class Certificates:
    """The server's TLS context, made anew when the certificate or key file changes on disk (looked
    at before each handshake: two stat calls), so a renewed certificate serves the next connection
    without a restart. A file caught half-written keeps the last good context (logged)."""

    def __init__(self, cert_path: str, key_path: str, alpn: Sequence[str] = ALPN) -> None:
        self.paths = (cert_path, key_path)
        self.alpn = tuple(alpn)
        try:
            self._stamps = _stamp(self.paths)
            self._context = self._load()
        except (OSError, ssl.SSLError) as exc:
            raise CertificateError(
                exc.errno or 0, f"{cert_path}, {key_path}: {exc.strerror or exc}"
            ) from None
        self.loads = 1

    def __repr__(self) -> str:
        return f"<Certificates {self.paths[0]!r} loads={self.loads}>"

    def _load(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
        context.set_alpn_protocols(list(self.alpn))
        context.load_cert_chain(*self.paths)
        return context

    def context(self) -> ssl.SSLContext:
        """The context for the next handshake: reloaded first if a file changed since."""
        try:
            stamps = _stamp(self.paths)
        except OSError as exc:
            log.warning("TLS: cannot stat %s (%s); serving the certificate loaded before", exc.filename, exc)
            return self._context
        if stamps != self._stamps:
            self._stamps = stamps
            try:
                self._context = self._load()
                self.loads += 1
                log.info("TLS: certificate reloaded from %s", self.paths[0])
            except (OSError, ssl.SSLError) as exc:
                log.warning("TLS: cannot load the changed certificate (%s); serving the one before", exc)
        return self._context


async def handshake(sock: socket.socket, certificates: Certificates, deadline: float) -> TlsSocket | None:
    """The server side of a TLS handshake on `sock` (non-blocking), in the connection's own task, by
    `deadline`. None if the client fails it, leaves or stalls (its socket is closed then)."""
    done = False
    try:
        tls = TlsSocket(sock, certificates.context())
        with trio.move_on_at(deadline):
            await tls.handshake()
            done = True
            return tls
    except OSError as exc:  # (ssl.SSLError is one): a client that is not speaking TLS, or left
        log.debug("TLS handshake failed: %s", exc)
    finally:
        if not done:
            sock.close()
    return None


class TlsSocket:
    """A TLS connection seen as a plain non-blocking socket: would-block is BlockingIOError.

    A write reports bytes as sent only once their ciphertext is in the kernel: while some is held
    here, it raises BlockingIOError (and `wait_writable` on the fd is the right wait), and the
    caller retries with the same bytes in front, as with any TLS socket. So a socket closed after
    its last write, or left waiting for the client's next request, holds nothing back."""

    __slots__ = ("_eof", "_fd", "_fresh", "_incoming", "_out", "_outgoing", "_owed", "_sock", "ssl")

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._fresh = False  # the incoming BIO got bytes since `ssl` last asked for more
        self._eof = False  # the end was read: every read from now on returns it
        self._out = memoryview(b"")  # ciphertext taken from the outgoing BIO, not sent yet
        self._owed = 0  # plaintext bytes encrypted into `_out` whose write reported BlockingIOError

    def __repr__(self) -> str:
        return f"<TlsSocket fd={self._fd} {self.ssl.version()}>"

    def fileno(self) -> int:
        return self._fd

    @property
    def alpn(self) -> str | None:
        return self.ssl.selected_alpn_protocol()

    async def handshake(self) -> None:
        """Run the server's handshake to its end; its last flight (and tickets) sent."""
        while True:
            try:
                self.ssl.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._send_all()
                if self._feed() < 0:
                    await trio.lowlevel.wait_readable(self._sock)
        await self._send_all()

    def _feed(self) -> int:
        """One socket read into the incoming BIO: its byte count, 0 at the end, -1 if none came."""
        try:
            count = self._sock.recv_into(_SCRATCH)
        except BlockingIOError:
            return -1
        if count:
            self._incoming.write(_SCRATCH[:count])
            self._fresh = True
        else:
            self._incoming.write_eof()
        return count

    def recv_into(self, view: memoryview) -> int:
        """Decrypt into `view` what has come (reading the socket only when the BIO runs dry): the
        byte count; 0 at the end (close_notify or a bare FIN); BlockingIOError if nothing came."""
        if self._eof:
            return 0
        size = len(view)
        got = 0
        short = False  # a socket read came back short: the socket is empty, do not ask it again
        read: Callable[[int, memoryview], int] = self.ssl.read  # type: ignore[assignment]  # (into a buffer: a count)
        while got < size:
            try:
                count = read(size - got, view[got:])
            except ssl.SSLWantReadError:
                self._fresh = False
                if got and short:
                    break
                fed = self._feed()
                if fed < 0:
                    break
                short = fed < RECV_SIZE
            except _ENDS:
                self._eof = True
                break
            else:
                if not count:  # (`ssl` reads a close_notify as 0, a FIN without it as SSLEOFError)
                    self._eof = True
                    break
                got += count
        if self._outgoing.pending:  # (a record read made one to send: a key update, an alert)
            self._take_outgoing()
            self._flush()
        if got or self._eof:
            return got
        raise BlockingIOError

    def recv(self, size: int) -> bytes:
        """Up to `size` bytes (at most RECV_SIZE), as `recv_into`."""
        view = _PLAIN[: min(size, RECV_SIZE)]
        return bytes(view[: self.recv_into(view)])

    def send(self, data: bytes | bytearray | memoryview) -> int:
        return self.write([data])

    def write(self, pieces: Sequence[bytes | bytearray | memoryview]) -> int:
        """Encrypt and send the pieces, a WRITE_CHUNK at a time, while the socket takes all of each
        step's ciphertext: the plaintext count (> 0) that is in the kernel now. BlockingIOError if
        none is (unsent ciphertext is kept; the next call, with the same bytes in front, sends it)."""
        if self._out and not self._flush():
            raise BlockingIOError
        done, self._owed = self._owed, 0
        while True:
            chunk = _take(pieces, done, WRITE_CHUNK)
            if chunk is None:
                break
            count = self.ssl.write(chunk)
            del chunk  # (no view on the caller's buffer outlives this call: it may resize it)
            self._take_outgoing()
            if not self._flush():
                self._owed = count
                break
            done += count
        if done:
            return done
        raise BlockingIOError

    def _take_outgoing(self) -> None:
        data = self._outgoing.read()
        self._out = memoryview(bytes(self._out) + data if self._out else data)

    def _flush(self) -> bool:
        """One send(2) of the held ciphertext: is none left?"""
        try:
            sent = self._sock.send(self._out)
        except BlockingIOError:
            return False
        self._out = self._out[sent:]
        return not self._out

    async def _send_all(self) -> None:
        if self._outgoing.pending:
            self._take_outgoing()
        while self._out and not self._flush():
            await trio.lowlevel.wait_writable(self._sock)

    def pending(self) -> int:
        """Bytes held above the socket that a read may return without the fd becoming readable
        (epoll cannot see them): decrypted ones inside `ssl`, and ciphertext fed since `ssl` last
        ran dry. 0 right after a read raised BlockingIOError, so waiting on the fd is then right."""
        return self.ssl.pending() + (self._incoming.pending if self._fresh else 0)

    def getpeername(self) -> Any:
        return self._sock.getpeername()

    def setsockopt(self, level: int, option: int, value: int | bytes, /) -> None:
        self._sock.setsockopt(level, option, value)

    def getsockopt(self, level: int, option: int, size: int, /) -> bytes:
        return self._sock.getsockopt(level, option, size)

    def close_notify(self) -> None:
        """Say the stream ends here (TLS close_notify), so the client can tell this end from a cut
        (a close-delimited HTTP/1.0 body, a last reply): one try to send it, with what is held."""
        with contextlib.suppress(ssl.SSLError, ValueError):  # (want-read: ours is out, theirs not read)
            self.ssl.unwrap()
        with contextlib.suppress(OSError):
            self._take_outgoing()
            self._flush()

    def shutdown(self, how: int) -> None:
        """Our close_notify, then the TCP socket's shutdown (after one try to send what is held)."""
        if how != socket.SHUT_RD:
            self.close_notify()
        self._sock.shutdown(how)

    def close(self) -> None:
        self._sock.close()


def _take(pieces: Sequence[bytes | bytearray | memoryview], skip: int, limit: int) -> Segment | None:
    """Up to `limit` bytes of the pieces after the first `skip`, as one buffer (None: nothing left).
    A piece is not copied when it is the only one taken."""
    taken: list[Segment] = []
    size = 0
    for piece in pieces:
        length = len(piece)
        if skip >= length:
            skip -= length
            continue
        part: Segment = piece if isinstance(piece, bytes | memoryview) else memoryview(piece)
        if skip or length - skip > limit - size:
            part = memoryview(piece)[skip : skip + limit - size]
        skip = 0
        taken.append(part)
        size += len(part)
        if size >= limit:
            break
    if not taken:
        return None
    return taken[0] if len(taken) == 1 else b"".join(taken)


class TlsBody(SocketBody):
    """A framed request body read through TLS: each step decrypts what has come into the buffer
    (RECV_SIZE of ciphertext per socket read, every record of it)."""

    def __init__(
        self, tls: TlsSocket, decoder: BodyDecoder, prefix: bytes, *, buffer_size: int, idle_timeout: float
    ) -> None:
        super().__init__(tls, decoder, prefix, buffer_size=buffer_size, idle_timeout=idle_timeout)
        self.tls = tls

    @property
    def splice_fd(self) -> None:
        return None  # ciphertext: never spliced

    def buffered_inside(self) -> bool:
        return self.tls.pending() > 0

    async def _recv(self) -> int:
        return await self.pull(self._fill, len(self._buffer))

    def _fill(self) -> int:
        return self.tls.recv_into(self._view)


class TlsWriter:
    """A receiver over TLS: each call encrypts and sends what the socket takes (`TlsSocket.write`)."""

    __slots__ = ("tls",)

    def __init__(self, tls: TlsSocket) -> None:
        self.tls = tls

    def __repr__(self) -> str:
        return f"<TlsWriter {self.tls!r}>"

    def write_now(self, pieces: list[Segment]) -> int:
        return self.tls.write(pieces)

    async def wait_writable(self) -> None:
        await trio.lowlevel.wait_writable(self.tls)

    @property
    def splice_fd(self) -> None:
        return None
