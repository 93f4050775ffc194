# TLS on our own sockets: the certificate (re-read when its files change), the handshake, TLS body and writer.
# Invariant: a TLS socket's would-block is a BlockingIOError, as a plain socket's; TLS is never spliced.
"""The stdlib `ssl` module on non-blocking sockets (no kTLS here: TLS bodies go through the buffer
engine). `TlsSocket` wraps an `ssl.SSLSocket` with the small socket surface `HttpConnection` uses,
so the HTTP/1.1 front end serves both listeners; `TlsBody` and `TlsWriter` are the TLS versions of
the sender's `SocketBody` and a receiver's `SocketWriter`."""

from __future__ import annotations

import logging
import os
import socket
import ssl
from collections.abc import Sequence
from typing import Any

import trio

from ..core.framing import BodyDecoder
from .body import SocketBody
from .engine import Segment

log = logging.getLogger("pipe_relay")

ALPN = ("h2", "http/1.1")
WRITE_JOIN = 256 * 1024
"""Pieces of one write up to this much in all are joined into one TLS write; past it, the first
piece goes alone (an `ssl` write takes one buffer, and must be retried with the same one)."""
_WOULD_BLOCK = (ssl.SSLWantReadError, ssl.SSLWantWriteError)


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
    tls = certificates.context().wrap_socket(
        sock, server_side=True, do_handshake_on_connect=False, suppress_ragged_eofs=True
    )
    done = False
    try:
        with trio.move_on_at(deadline):
            while True:
                try:
                    tls.do_handshake()
                    done = True
                    return TlsSocket(tls)
                except ssl.SSLWantReadError:
                    await trio.lowlevel.wait_readable(tls)
                except ssl.SSLWantWriteError:
                    await trio.lowlevel.wait_writable(tls)
    except OSError as exc:  # (ssl.SSLError is one): a client that is not speaking TLS, or left
        log.debug("TLS handshake failed: %s", exc)
    finally:
        if not done:
            tls.close()
    return None


class TlsSocket:
    """An `ssl.SSLSocket` seen as a plain non-blocking socket: would-block is BlockingIOError."""

    __slots__ = ("_fd", "ssl")

    def __init__(self, ssl_sock: ssl.SSLSocket) -> None:
        self.ssl = ssl_sock
        self._fd = ssl_sock.fileno()

    def __repr__(self) -> str:
        return f"<TlsSocket fd={self._fd} {self.ssl.version()}>"

    def fileno(self) -> int:
        return self._fd

    @property
    def alpn(self) -> str | None:
        return self.ssl.selected_alpn_protocol()

    def recv(self, size: int) -> bytes:
        try:
            return self.ssl.recv(size)
        except _WOULD_BLOCK:
            raise BlockingIOError from None

    def recv_into(self, view: memoryview) -> int:
        try:
            return self.ssl.recv_into(view)
        except _WOULD_BLOCK:
            raise BlockingIOError from None

    def send(self, data: bytes | bytearray | memoryview) -> int:
        try:
            return self.ssl.send(data)
        except _WOULD_BLOCK:
            raise BlockingIOError from None

    def pending(self) -> int:
        """Decrypted bytes held inside `ssl` (epoll cannot see them)."""
        return self.ssl.pending()

    def getpeername(self) -> Any:
        return self.ssl.getpeername()

    def setsockopt(self, level: int, option: int, value: int | bytes, /) -> None:
        self.ssl.setsockopt(level, option, value)

    def shutdown(self, how: int) -> None:
        self.ssl.shutdown(how)

    def close(self) -> None:
        self.ssl.close()


class TlsBody(SocketBody):
    """A framed request body read through TLS: each step decrypts records until the buffer is full
    or none is left (one `ssl` read returns one record, at most 16 KiB)."""

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
        view = self._view
        size = len(view)
        got = 0
        recv_into = self.tls.ssl.recv_into
        while got < size:
            try:
                count = recv_into(view[got:])
            except _WOULD_BLOCK:
                break
            if not count:  # the end (close_notify or FIN): now, or at the next read after this data
                if not got:
                    return 0
                break
            got += count
        if not got:
            raise BlockingIOError
        return got


class TlsWriter:
    """A receiver over TLS: one `ssl` write per call, of the joined pieces or of the first one."""

    __slots__ = ("tls",)

    def __init__(self, tls: TlsSocket) -> None:
        self.tls = tls

    def __repr__(self) -> str:
        return f"<TlsWriter {self.tls!r}>"

    def write_now(self, pieces: list[Segment]) -> int:
        first = pieces[0]
        if len(pieces) > 1 and sum(len(piece) for piece in pieces) <= WRITE_JOIN:
            first = b"".join(pieces)
        if not first:
            return 0
        return self.tls.send(first)

    async def wait_writable(self) -> None:
        await trio.lowlevel.wait_writable(self.tls)

    @property
    def splice_fd(self) -> None:
        return None
