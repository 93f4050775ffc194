# The web UI in a real Chromium: send text, a file and several files to curl, receive what curl
# sent, cancel mid-transfer, and the end-to-end encryption recipe both ways against openssl.
from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
import trio

from tests.browser.conftest import (
    NO_SAVE_PICKER,
    OPFS_SAVE_PICKER,
    chromium_page,
    in_browser,
    to_trio_async,
    wait_for_value,
)
from tests.browser.recipe import PASSPHRASE, WRONG_PASSPHRASE, decrypt, encrypt, rejected_cipher
from tests.clients import CurlResult, Payload, RawClient, Relay, curl, curl_into, parse_head


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_response(result: CurlResult) -> tuple[int, dict[str, str], bytes]:
    """A `curl -i` result: status, headers, body."""
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    status, headers, _ = parse_head(head + b"\r\n\r\n")
    return status, headers, body


async def test_ui_sends_text_to_a_curl_receiver(relay: Relay, screenshots: Path) -> None:
    text = "hello from the web UI ✓\nsecond line\n"
    got: dict[str, CurlResult] = {}

    def send() -> tuple[str | None, str | None, list[str]]:
        with chromium_page() as (page, log):
            page.goto(f"{relay.url}/")
            page.check("input[name=mode][value=text]")
            page.fill("#text", text)
            page.fill("#send-path", "ui-text")
            command = page.text_content("#send-curl")
            page.click("#send-start")
            page.wait_for_selector("#send-state.done")
            page.screenshot(path=str(screenshots / "ui-send-text-done.png"), full_page=True)
            return command, page.text_content("#send-log"), log.csp + log.errors

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(curl_into, got, "r", "-i", f"{relay.url}/ui-text")
            await relay.wait_for_pipe("/ui-text", receivers=1)
            command, sender_log, problems = await in_browser(send)
    status, headers, body = split_response(got["r"])
    assert status == 200
    assert body == text.encode()
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert command == f"curl {relay.url}/ui-text"
    assert sender_log is not None and "[INFO] Transfer complete." in sender_log
    assert problems == []


async def test_ui_sends_a_file_first_then_curl_receives(
    relay: Relay, screenshots: Path, tmp_path: Path
) -> None:
    """Sender first: the page waits for the receiver; the name travels as RFC 6266 UTF-8."""
    upload = tmp_path / "résumé 2026.bin"
    upload.write_bytes(os.urandom(3 << 20))
    got: dict[str, CurlResult] = {}
    seen: dict[str, str | None] = {}

    def send() -> list[str]:
        with chromium_page(width=390, height=844) as (page, log):  # a phone
            page.goto(f"{relay.url}/api/v1/pipe")
            page.set_input_files("#files", str(upload))
            page.fill("#send-path", "ui-file")
            page.fill("#send-n", "1")
            seen["command"] = page.text_content("#send-curl")
            seen["url"] = page.input_value("#send-url")
            seen["info"] = page.text_content("#files-info")
            page.click("#send-start")
            page.wait_for_selector("text=Waiting for 1 receiver(s)")
            page.screenshot(path=str(screenshots / "ui-send-file-waiting-phone.png"), full_page=True)
            to_trio_async(curl_into, got, "r", "-i", f"{relay.url}/api/v1/pipe/ui-file")
            page.wait_for_selector("#send-state.done")
            seen["bytes"] = page.text_content("#send-bytes")
            return log.csp + log.errors

    with trio.fail_after(90):
        problems = await in_browser(send)
    status, headers, body = split_response(got["r"])
    assert status == 200
    assert sha(body) == sha(upload.read_bytes())
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-length"] == str(3 << 20)
    assert headers["content-disposition"] == (
        "attachment; filename=\"r_sum_ 2026.bin\"; filename*=UTF-8''r%C3%A9sum%C3%A9%202026.bin"
    )
    assert seen["url"] == f"{relay.url}/api/v1/pipe/ui-file"
    assert seen["command"] == f"curl {relay.url}/api/v1/pipe/ui-file > 'résumé 2026.bin'"
    assert seen["info"] == "1 file(s), 3.0 MiB"
    assert seen["bytes"] == "3.0 MiB of 3.0 MiB (100%)"
    assert problems == []


async def test_ui_sends_several_files_as_one_tar(relay: Relay, tmp_path: Path) -> None:
    files = {
        "a.txt": b"first file\n",
        "ü-" + "long name " * 12 + ".bin": os.urandom(70_000),  # non-ASCII and > 100 bytes: pax
        "empty": b"",
    }
    paths = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    got: dict[str, CurlResult] = {}

    def send() -> tuple[str | None, list[str]]:
        with chromium_page() as (page, log):
            page.goto(f"{relay.url}/")
            page.set_input_files("#files", paths)
            page.fill("#send-path", "ui-tar")
            page.fill("#send-n", "2")
            command = page.text_content("#send-curl")
            page.click("#send-start")
            page.wait_for_selector("#send-state.done")
            return command, log.csp + log.errors

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            for name in ("r1", "r2"):
                nursery.start_soon(curl_into, got, name, "-i", f"{relay.url}/ui-tar?n=2")
            await relay.wait_for_pipe("/ui-tar", receivers=2)
            command, problems = await in_browser(send)
    assert command == f"curl '{relay.url}/ui-tar?n=2' | tar xvf -"
    assert problems == []
    for name in ("r1", "r2"):
        status, headers, body = split_response(got[name])
        assert status == 200
        assert headers["content-type"] == "application/x-tar"
        with tarfile.open(fileobj=io.BytesIO(body)) as archive:
            members = archive.getmembers()
            assert [m.name for m in members] == list(files)
            for member in members:
                extracted = archive.extractfile(member)
                assert extracted is not None
                assert sha(extracted.read()) == sha(files[member.name])


async def test_ui_cancel_mid_transfer_never_looks_complete(
    relay: Relay, tmp_path: Path, payloads: dict[int, Payload]
) -> None:
    # 64 MiB against a receiver taking 2 MiB/s: the loopback socket buffers and the relay's pipe
    # hold some 20 MiB at most, so the upload cannot have finished when Cancel is clicked (about 2 s
    # in). (A cancel after the browser handed over every byte would rightly be a complete transfer.)
    # What the sender handed over before its cancel still reaches the receiver, then the cut: at
    # 256 KiB/s that took 40 s.
    upload = payloads[64 << 20]
    got: dict[str, CurlResult] = {}

    def send_then_cancel() -> tuple[str | None, str | None, list[str]]:
        with chromium_page() as (page, log):
            page.goto(f"{relay.url}/")
            page.set_input_files("#files", str(upload.path))
            page.fill("#send-path", "ui-cancel")
            page.click("#send-start")
            page.wait_for_selector("#send-state.sending")
            wait_for_value(lambda: page.text_content("#send-bytes") or "", lambda v: "MiB of" in v)
            page.click("#send-cancel")
            page.wait_for_selector("#send-state.aborted")
            return page.text_content("#send-state"), page.text_content("#send-bytes"), log.csp + log.errors

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                curl_into,
                got,
                "r",
                "--limit-rate",
                "2M",
                "-o",
                str(tmp_path / "out"),
                f"{relay.url}/ui-cancel",
            )
            await relay.wait_for_pipe("/ui-cancel", receivers=1)
            state, sent, problems = await in_browser(send_then_cancel)
        await relay.wait_until_free("/ui-cancel")
    assert state == "cancelled"
    assert sent is not None and "(100%)" not in sent
    assert problems == []
    assert got["r"].returncode != 0  # cut short: curl must not see a complete body
    out = tmp_path / "out"
    assert not out.exists() or out.stat().st_size < upload.size  # curl makes the file at its first byte


async def test_ui_receives_a_file_curl_sent(relay: Relay, screenshots: Path, tmp_path: Path) -> None:
    """Without the File System Access API the page hands `?download` to the browser's downloads."""
    data = os.urandom((2 << 20) + 123)
    got: dict[str, CurlResult] = {}
    saved = tmp_path / "saved.bin"

    async def send() -> None:
        await relay.wait_for_pipe("/ui-recv", receivers=1)
        disposition = "Content-Disposition: attachment; filename=data.bin"
        got["s"] = await curl("-T", "-", "-H", disposition, f"{relay.url}/ui-recv", stdin=data)

    def receive() -> tuple[str, str, str | None, list[str]]:
        with chromium_page(init_script=NO_SAVE_PICKER) as (page, log):
            page.goto(f"{relay.url}/")
            page.click("#tab-receive")
            page.fill("#recv-path", "ui-recv")
            with page.expect_download() as download:
                page.click("#recv-start")
                to_trio_async(send)  # returns once the browser has taken every byte
            download.value.save_as(saved)
            page.screenshot(path=str(screenshots / "ui-receive-to-downloads.png"), full_page=True)
            return (
                download.value.suggested_filename,
                download.value.url,
                page.text_content("#recv-state"),
                log.csp + log.errors,
            )

    name, url, state, problems = await in_browser(receive, limit=90)
    assert got["s"].returncode == 0
    assert sha(saved.read_bytes()) == sha(data)
    assert name == "data.bin"
    assert url == f"{relay.url}/ui-recv?download"
    assert state == "in your downloads"
    assert problems == []


async def test_ui_receives_text_and_shows_it(relay: Relay, screenshots: Path) -> None:
    text = "a note for the browser ✓\nline two\n"

    async def send() -> CurlResult:
        return await curl(
            "-T",
            "-",
            "-H",
            "Content-Type: text/plain; charset=utf-8",
            f"{relay.url}/ui-note",
            stdin=text.encode(),
        )

    def receive() -> tuple[str, CurlResult, list[str]]:
        with chromium_page(init_script=OPFS_SAVE_PICKER) as (page, log):
            page.goto(f"{relay.url}/?path=ui-note")  # ?path= opens the receive tab, filled in
            page.click("#recv-start")
            page.wait_for_selector("#recv-state.waiting")
            sent = to_trio_async(send)
            page.wait_for_selector("#recv-state.done")
            page.screenshot(path=str(screenshots / "ui-receive-text.png"), full_page=True)
            return page.input_value("#recv-text"), sent, log.csp + log.errors + [d.url for d in log.downloads]

    shown, sent, problems = await in_browser(receive, limit=90)
    assert sent.returncode == 0
    assert shown == text
    assert problems == []  # shown (and written to the picked file), not downloaded


async def test_ui_receive_reports_a_cut_short_transfer(relay: Relay, raw_clients: list[RawClient]) -> None:
    """The sender dies mid-body: the page says so and offers no file."""
    sender = await RawClient.connect(relay)
    raw_clients.append(sender)

    async def start_and_die() -> None:
        await sender.send(b"PUT /ui-cut HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        await sender.send(b"x" * 30000)
        # (mid-body: once bytes reached the page; gone before that, the page would wait on)
        await relay.wait_for_bytes("/ui-cut", 1)
        await sender.aclose()

    def receive() -> tuple[str | None, str | None, bool, list[str]]:
        with chromium_page(init_script=OPFS_SAVE_PICKER) as (page, log):
            page.goto(f"{relay.url}/?path=ui-cut")
            page.click("#recv-start")
            page.wait_for_selector("#recv-state.waiting")
            to_trio_async(start_and_die)
            page.wait_for_selector("#recv-state.error")
            return (
                page.text_content("#recv-message"),
                page.text_content("#recv-state"),
                page.is_visible("#recv-result"),
                log.csp + log.errors + [d.url for d in log.downloads],
            )

    message, state, offered, problems = await in_browser(receive)
    assert message == "The transfer was cut short. The partial file was discarded: out.bin was removed."
    assert state == "failed"
    assert not offered
    assert problems == []


@pytest.mark.parametrize("size", [0, 1 << 20, (3 << 20) + 5], ids=["empty", "one-step", "three-steps"])
async def test_e2e_browser_encrypts_openssl_decrypts(
    relay: Relay, tmp_path: Path, size: int, screenshots: Path
) -> None:
    upload = tmp_path / "secret.bin"
    upload.write_bytes(os.urandom(size))
    got: dict[str, CurlResult] = {}

    def send() -> tuple[str | None, list[str]]:
        with chromium_page() as (page, log):
            page.goto(f"{relay.url}/")
            page.set_input_files("#files", str(upload))
            page.fill("#send-path", "ui-e2e")
            page.click("#send-e2e summary")
            page.fill("#send-pass", PASSPHRASE)
            command = page.text_content("#send-curl")
            if size == 0:
                page.screenshot(path=str(screenshots / "ui-send-encrypted.png"), full_page=True)
            page.click("#send-start")
            page.wait_for_selector("#send-state.done", timeout=60_000)
            return command, log.csp + log.errors

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(curl_into, got, "r", "-i", f"{relay.url}/ui-e2e")
            await relay.wait_for_pipe("/ui-e2e", receivers=1)
            command, problems = await in_browser(send, limit=80)
    status, headers, body = split_response(got["r"])
    assert status == 200
    assert body[:8] == b"Salted__"
    assert headers["content-type"] == "application/octet-stream"
    assert "content-disposition" not in headers  # the file name does not leave the browser
    plain = await decrypt(body)
    assert sha(plain) == sha(upload.read_bytes())
    assert command == (
        f"curl {relay.url}/ui-e2e | openssl aes-256-cbc -d -pbkdf2 -iter 100000 -md sha256 > secret.bin"
    )
    assert problems == []


@pytest.mark.parametrize("size", [0, (1 << 20) + 48, (3 << 20) + 7], ids=["empty", "one-step", "three-steps"])
async def test_e2e_openssl_encrypts_browser_decrypts(relay: Relay, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    cipher = await encrypt(data)
    saved = tmp_path / "plain.bin"

    async def send() -> CurlResult:
        return await curl("-T", "-", f"{relay.url}/ui-e2e-in", stdin=cipher)

    def receive() -> tuple[CurlResult, str | None, list[str]]:
        with chromium_page(init_script=NO_SAVE_PICKER) as (page, log):  # decrypted in memory
            page.goto(f"{relay.url}/?path=ui-e2e-in")
            page.click("#recv-e2e summary")
            page.fill("#recv-pass", PASSPHRASE)
            with page.expect_download() as download:
                page.click("#recv-start")
                page.wait_for_selector("#recv-state.waiting")
                sent = to_trio_async(send)
                page.wait_for_selector("#recv-state.done")
            download.value.save_as(saved)
            return sent, page.text_content("#recv-message"), log.csp + log.errors

    sent, message, problems = await in_browser(receive, limit=90)
    assert sent.returncode == 0
    assert sha(saved.read_bytes()) == sha(data)
    assert message is not None and message.startswith("Received ")
    assert problems == []


async def test_e2e_wrong_passphrase_is_reported(relay: Relay) -> None:
    cipher = await rejected_cipher(b"attack at dawn\n" * 1000)

    async def send() -> CurlResult:
        return await curl("-T", "-", f"{relay.url}/ui-e2e-bad", stdin=cipher)

    def receive() -> tuple[str | None, bool, list[str]]:
        with chromium_page(init_script=NO_SAVE_PICKER) as (page, log):
            page.goto(f"{relay.url}/?path=ui-e2e-bad")
            page.click("#recv-e2e summary")
            page.fill("#recv-pass", WRONG_PASSPHRASE)
            page.click("#recv-start")
            page.wait_for_selector("#recv-state.waiting")
            to_trio_async(send)
            page.wait_for_selector("#recv-state.error")
            return page.text_content("#recv-message"), page.is_visible("#recv-result"), log.csp + log.errors

    message, offered, problems = await in_browser(receive)
    assert message == "wrong passphrase, or the data is corrupted"
    assert not offered
    assert problems == []
