# Multipart uploads (browser forms, curl -F): the first file part is streamed with its own headers.
# Text-only forms stream their first field; broken forms never look complete to a receiver.
from __future__ import annotations

from pathlib import Path

import trio

from tests.conftest import Payload, RawClient, Relay, curl, parse_head, sha256_file


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
    assert headers["content-disposition"] == "attachment; filename=\"cat.png\"; filename*=UTF-8''cat.png"
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
    assert "content-disposition" not in headers


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


async def test_form_without_file_and_huge_first_field_is_rejected(relay: Relay, tmp_path: Path) -> None:
    field = tmp_path / "field.txt"
    field.write_bytes(b"z" * (64 * 1024 + 1))
    with trio.fail_after(20):
        sender_out, (response,) = await _send_form(relay, "/form-huge", f"text=<{field}", tmp_path=tmp_path)
    assert sender_out.decode().splitlines()[-1] == (
        "[ERROR] Invalid upload: the form has no file and its first field is over 65536 bytes."
    )
    status, headers, _ = parse_head(response)
    assert status == 502
    assert headers["x-pipe-error"] == "SENDER_FAILED"
    assert response.endswith(
        b"[ERROR] The transfer failed before it started: the sender's upload is invalid.\n"
    )


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
