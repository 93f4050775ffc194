# Multipart uploads (browser forms, curl -F): the first file part is streamed with its own headers.
# Text-only forms stream their first field; broken forms never look complete to a receiver.
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import trio

from tests.clients import Payload, RawClient, Relay, curl, parse_head, sha256_file


async def _send_form(
    relay: Relay, key: str, *form: str, receivers: int = 1, tmp_path: Path
) -> tuple[bytes, list[bytes]]:
    """Receivers (curl -i) wait first, then the sender posts `curl -F ...`.

    Returns the sender's output and each receiver's whole response.
    """
    outs = [tmp_path / f"{key.strip('/')}-{i}.out" for i in range(receivers)]
    sent: dict[str, bytes] = {}
    async with trio.open_nursery() as nursery:
        for index in range(receivers):
            nursery.start_soon(
                trio.run_process,
                [
                    "curl",
                    "-sS",
                    "--max-time",
                    "60",
                    "-i",
                    "-o",
                    str(outs[index]),
                    f"{relay.url}{key}?n={receivers}",
                ],
            )
        await relay.wait_for_pipe(key, receivers=receivers)
        args = [x for field in form for x in ("-F", field)]
        result = await curl(*args, f"{relay.url}{key}?n={receivers}")
        sent["out"] = result.stdout
    return sent["out"], [out.read_bytes() for out in outs]


async def test_first_file_part_is_streamed_with_its_headers(relay: Relay, tmp_path: Path) -> None:
    picture = tmp_path / "cat.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40)
    with trio.fail_after(20):
        sender_out, (response,) = await _send_form(
            relay, "/form", "note=skip me", f"file=@{picture};type=image/png", tmp_path=tmp_path
        )
    head, _, body = response.partition(b"\r\n\r\n")
    status, headers, _ = parse_head(head + b"\r\n\r\n")
    assert status == 200
    assert body == picture.read_bytes()
    assert headers["content-type"] == "image/png"
    assert (
        headers["content-disposition"] == 'form-data; name="file"; filename="cat.png"'
    )  # as the part had it
    assert "content-length" not in headers
    assert headers["transfer-encoding"] == "chunked"
    assert sender_out.decode().splitlines()[-2:] == ["[INFO] Upload complete.", "[INFO] Transfer complete."]


async def test_script_capable_part_type_is_neutralized(relay: Relay, tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_bytes(b"<script>alert(1)</script>")
    with trio.fail_after(20):
        _, (response,) = await _send_form(
            relay, "/form-html", f"file=@{page};type=text/html", tmp_path=tmp_path
        )
    head, _, body = response.partition(b"\r\n\r\n")
    _, headers, _ = parse_head(head + b"\r\n\r\n")
    assert headers["content-type"] == "text/plain"
    assert body == b"<script>alert(1)</script>"


async def test_text_only_form_streams_its_first_field(relay: Relay, tmp_path: Path) -> None:
    with trio.fail_after(20):
        _, (response,) = await _send_form(
            relay, "/form-text", "text=hello from a form", "other=ignored", tmp_path=tmp_path
        )
    head, _, body = response.partition(b"\r\n\r\n")
    _, headers, _ = parse_head(head + b"\r\n\r\n")
    assert body == b"hello from a form"
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["content-disposition"] == 'form-data; name="text"'


async def test_large_file_part_fans_out_byte_exact(
    relay: Relay, payloads: dict[int, Payload], tmp_path: Path
) -> None:
    payload = payloads[64 << 20]
    with trio.fail_after(60):
        _, responses = await _send_form(
            relay, "/form-big", "a=1", f"upload=@{payload.path}", receivers=2, tmp_path=tmp_path
        )
    for index, response in enumerate(responses):
        body = response.partition(b"\r\n\r\n")[2]
        out = tmp_path / f"body-{index}"
        out.write_bytes(body)
        assert sha256_file(out) == payload.sha256


async def test_form_without_file_and_a_big_first_field_streams_that_field(
    relay: Relay, tmp_path: Path
) -> None:
    value = os.urandom(100 * 1024)
    field = tmp_path / "field.bin"
    field.write_bytes(value)
    with trio.fail_after(20):
        sender_out, (response,) = await _send_form(relay, "/form-huge", f"text=<{field}", tmp_path=tmp_path)
    head, _, body = response.partition(b"\r\n\r\n")
    status, headers, _ = parse_head(head + b"\r\n\r\n")
    assert status == 200
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(value).hexdigest()
    assert headers["content-disposition"] == 'form-data; name="text"'
    assert sender_out.decode().splitlines()[-1] == "[INFO] Transfer complete."


async def test_form_cut_before_its_closing_boundary_never_completes(
    relay: Relay, raw_clients: list[RawClient]
) -> None:
    form = (
        b'--B0undary\r\nContent-Disposition: form-data; name="f"; filename="a.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + b"q" * 1000
    )
    with trio.fail_after(10):
        receiver = await RawClient.connect(relay)
        raw_clients.append(receiver)
        await receiver.send(b"GET /form-cut HTTP/1.1\r\nHost: x\r\n\r\n")
        await relay.wait_for_pipe("/form-cut", receivers=1)
        sender = await RawClient.connect(relay)
        raw_clients.append(sender)
        await sender.send(
            b"POST /form-cut HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B0undary\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(form), form)
        )
        head = await receiver.read_until(b"\r\n\r\n")
        assert parse_head(head)[0] == 200
        # the body ends (chunked terminator) without the closing boundary
        await sender.send(b"0\r\n\r\n")
        rest, clean = await receiver.read_to_end()
        status_stream, _ = await sender.read_to_end()
    assert rest == b"3e8\r\n" + b"q" * 1000 + b"\r\n", "the part's bytes, then no terminating chunk"
    assert not clean
    assert b"[ERROR] Invalid upload: the multipart body ended before its closing boundary.\n" in status_stream


async def test_multipart_without_boundary_is_an_invalid_upload(
    relay: Relay, raw_clients: list[RawClient]
) -> None:
    with trio.fail_after(10):
        receiver = await RawClient.connect(relay)
        raw_clients.append(receiver)
        await receiver.send(b"GET /form-nob HTTP/1.1\r\nHost: x\r\n\r\n")
        await relay.wait_for_pipe("/form-nob", receivers=1)
        sent = await curl(
            "-H", "Content-Type: multipart/form-data", "--data-binary", "abc", f"{relay.url}/form-nob"
        )
        response, _ = await receiver.read_to_end()
    assert sent.stdout.decode().splitlines()[-1] == (
        "[ERROR] Invalid upload: multipart/form-data without a boundary."
    )
    status, headers, _ = parse_head(response)
    assert status == 502 and headers["x-pipe-error"] == "SENDER_FAILED"


# Which part is the content (docs/protocol.md, Multipart): piping-server clients post one unnamed part ----

BOUNDARY = b"pipeRelayB0undary"


def _part(disposition: bytes, content_type: bytes | None, value: bytes) -> bytes:
    head = b"--" + BOUNDARY + b"\r\n"
    if content_type is not None:
        head += b"Content-Type: " + content_type + b"\r\n"
    return head + b"Content-Disposition: " + disposition + b"\r\n\r\n" + value + b"\r\n"


def _form(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--" + BOUNDARY + b"--\r\n"


async def _post_form(
    relay: Relay, key: str, form: bytes, *, chunked: bool, tmp_path: Path
) -> tuple[bytes, bytes]:
    """A receiver (curl -i) waits, then curl posts `form` as a multipart body with a Content-Length
    (`--data-binary`) or chunked (`-T -`). Returns the sender's status stream and the receiver's
    whole response."""
    out = tmp_path / f"{key.strip('/')}.out"
    body = tmp_path / f"{key.strip('/')}.form"
    body.write_bytes(form)
    content_type = "Content-Type: multipart/form-data; boundary=" + BOUNDARY.decode()
    upload = ["-T", "-"] if chunked else ["--data-binary", f"@{body}"]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            trio.run_process, ["curl", "-sS", "--max-time", "60", "-i", "-o", str(out), relay.url + key]
        )
        await relay.wait_for_pipe(key, receivers=1)
        sent = await curl("-H", content_type, *upload, relay.url + key, stdin=form if chunked else None)
    assert sent.returncode == 0, sent.stderr
    return sent.stdout, out.read_bytes()


def _content(response: bytes) -> tuple[dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status, headers, _ = parse_head(head + b"\r\n\r\n")
    assert status == 200, response[:300]
    assert "content-length" not in headers
    assert headers["transfer-encoding"] == "chunked"  # curl -i -o keeps the body dechunked
    return headers, body


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_one_big_unnamed_part_is_the_content_with_its_own_headers(
    relay: Relay, tmp_path: Path, chunked: bool
) -> None:
    """piping-server's conformance check: one 8 MiB part, no filename, streamed with both headers."""
    data = os.urandom(8 << 20)
    form = _form(_part(b'form-data; name="input_data"', b"application/octet-stream", data))
    with trio.fail_after(30):
        sender_out, response = await _post_form(relay, "/mp-input", form, chunked=chunked, tmp_path=tmp_path)
    headers, body = _content(response)
    assert _sha(body) == _sha(data)
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-disposition"] == 'form-data; name="input_data"'
    assert sender_out.decode().splitlines()[-2:] == ["[INFO] Upload complete.", "[INFO] Transfer complete."]


async def test_a_big_unnamed_field_before_a_file_is_the_content(relay: Relay, tmp_path: Path) -> None:
    field = os.urandom(100 * 1024)  # past the 64 KiB hold limit before any file part came
    form = _form(
        _part(b'form-data; name="note"', None, field),
        _part(b'form-data; name="f"; filename="late.bin"', b"image/png", b"the file"),
    )
    with trio.fail_after(20):
        _, response = await _post_form(relay, "/mp-field-first", form, chunked=False, tmp_path=tmp_path)
    headers, body = _content(response)
    assert _sha(body) == _sha(field)
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["content-disposition"] == 'form-data; name="note"'


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_small_field_then_a_file_streams_the_file(
    relay: Relay, tmp_path: Path, chunked: bool
) -> None:
    data = os.urandom(3 << 20)
    form = _form(
        _part(b'form-data; name="note"', b"text/plain", b"n" * 10 * 1024),
        _part(b'form-data; name="empty"; filename=""', b"application/octet-stream", b""),
        _part(b'form-data; name="f"; filename="photo.png"', b"image/png", data),
    )
    with trio.fail_after(20):
        _, response = await _post_form(relay, "/mp-file", form, chunked=chunked, tmp_path=tmp_path)
    headers, body = _content(response)
    assert _sha(body) == _sha(data)
    assert headers["content-type"] == "image/png"
    assert headers["content-disposition"] == 'form-data; name="f"; filename="photo.png"'


async def test_a_part_disposition_cannot_break_the_receiver_head(
    relay: Relay, raw_clients: list[RawClient]
) -> None:
    """A bare LF inside a part's header values (python-multipart keeps it) never reaches the head."""
    form = _form(
        b"--" + BOUNDARY + b"\r\n"
        b'Content-Disposition: form-data; name="f"; filename="a\nX-Evil: 1.png"\r\n'
        b'Content-Type: text/plain; charset="utf-8\n"\r\n\r\nsafe\r\n'
    )
    with trio.fail_after(10):
        receiver = await RawClient.connect(relay)
        raw_clients.append(receiver)
        await receiver.send(b"GET /mp-lf?download HTTP/1.1\r\nHost: x\r\n\r\n")
        await relay.wait_for_pipe("/mp-lf", receivers=1)
        sender = await RawClient.connect(relay)
        raw_clients.append(sender)
        await sender.send(
            b"POST /mp-lf HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary="
            + BOUNDARY
            + b"\r\nContent-Length: %d\r\n\r\n" % len(form)
            + form
        )
        head = await receiver.read_until(b"\r\n\r\n")
        rest, clean = await receiver.read_to_end()
    assert head.count(b"\n") == head.count(b"\r\n")  # every line ends in CRLF: no bare LF got through
    status, headers, _ = parse_head(head)
    assert status == 200
    assert headers["content-type"] == "text/plain"
    assert headers["content-disposition"] == 'attachment; name="f"; filename="aX-Evil: 1.png"'
    assert "x-evil" not in headers
    assert headers["x-content-type-options"] == "nosniff"
    assert rest == b"4\r\nsafe\r\n0\r\n\r\n" and clean


async def test_a_form_of_thousands_of_tiny_fields_is_refused(relay: Relay, tmp_path: Path) -> None:
    """Parsing tiny parts is slow: past 1000 of them before the content, the upload is invalid."""
    form = _form(*(_part(b'form-data; name="f%d"' % i, None, b"x") for i in range(5000)))
    with trio.fail_after(20):
        sender_out, response = await _post_form(relay, "/mp-tiny", form, chunked=False, tmp_path=tmp_path)
    assert (
        sender_out.decode().splitlines()[-1]
        == "[ERROR] Invalid upload: more than 1000 parts before the content."
    )
    assert parse_head(response)[0] == 502
