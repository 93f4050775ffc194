# The Receive tab with big files: written to disk as the bytes arrive (the File System Access API; here
# an OPFS file), decrypted on the fly, while the renderer's memory stays flat; a cut or cancelled
# receive leaves no complete-looking file. Invariant: the page never holds the file in memory.
from __future__ import annotations

import hashlib
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from playwright.sync_api import Page

from tests.browser.bigfiles import (
    DIGEST_STEP,
    OPFS_DIGESTS,
    RSS_LIMIT,
    MiB,
    random_file,
    renderer_rss,
    shown_size,
    step_digests,
)
from tests.browser.conftest import (
    NO_SAVE_PICKER,
    OPFS_SAVE_PICKER,
    chromium_page,
    in_browser,
    to_trio,
    to_trio_async,
    wait_for_value,
)
from tests.browser.recipe import (
    OPENSSL_DECRYPT,
    OPENSSL_ENCRYPT,
    PASSPHRASE,
    WRONG_PASSPHRASE,
    rejected_cipher,
)
from tests.clients import CurlResult, Relay, curl, curl_into

BIG = "PIPE_RELAY_BROWSER_2G"  # set to 1 to add the 2 GiB case (some minutes)
BIG_ENCRYPTED = (
    "PIPE_RELAY_BROWSER_1G"  # set to 1 to add the 1 GiB encrypted cases (here and in test_send_stream)
)

SIZES = [
    pytest.param(256 * MiB, id="256MiB"),
    pytest.param(
        2048 * MiB,
        id="2GiB",
        marks=pytest.mark.skipif(not os.environ.get(BIG), reason=f"opt-in: set {BIG}=1"),
    ),
]

ENCRYPTED_SIZES = [
    pytest.param(40 * MiB + 7, id="40MiB"),
    pytest.param(
        1024 * MiB + 7,
        id="1GiB",
        marks=pytest.mark.skipif(not os.environ.get(BIG_ENCRYPTED), reason=f"opt-in: set {BIG_ENCRYPTED}=1"),
    ),
]


def state(page: Page) -> str:
    return page.get_attribute("#recv-state", "class") or ""


@pytest.mark.parametrize("size", SIZES)
async def test_a_large_receive_is_written_to_disk_with_flat_memory(
    relay: Relay, tmp_path: Path, screenshots: Path, size: int
) -> None:
    source = random_file(tmp_path / "big.bin", size)
    sent: dict[str, CurlResult] = {}
    seen: dict[str, Any] = {}

    def receive() -> list[str]:
        with chromium_page(init_script=OPFS_SAVE_PICKER, profile=tmp_path / "profile") as (page, log):
            page.goto(f"{relay.url}/?path=big")
            seen["how"] = page.text_content("#recv-how")
            before = renderer_rss()
            page.click("#recv-start")
            page.wait_for_selector("#recv-state.waiting >> text=waiting for the sender")
            started = time.monotonic()
            to_trio(nursery.start_soon, curl_into, sent, "s", "-T", str(source), f"{relay.url}/big")
            peak, shot = before, False
            while "done" not in (current := state(page)) and "error" not in current:
                peak = max(peak, renderer_rss())
                if not shot and "receiving" in current:
                    wait_for_value(
                        lambda: page.text_content("#recv-bytes") or "", lambda v: "%" in v and "(0%)" not in v
                    )
                    page.screenshot(path=str(screenshots / "disk-receiving.png"), full_page=True)
                    shot = True
                time.sleep(0.1)
            seen["seconds"] = time.monotonic() - started
            peak = max(peak, renderer_rss())
            page.screenshot(path=str(screenshots / "disk-done.png"), full_page=True)
            seen.update(before=before, peak=peak, name=page.text_content("#recv-name"), state=current)
            seen["message"] = page.text_content("#recv-message")
            seen["file"] = page.evaluate(OPFS_DIGESTS, DIGEST_STEP)
            return log.csp + log.errors

    async with trio.open_nursery() as nursery:
        problems = await in_browser(receive, limit=60 + size / (10 * MiB))
    print(
        f"\n{size // MiB} MiB to disk in {seen['seconds']:.1f} s: renderer RSS "
        f"{seen['before'] // MiB} -> peak {seen['peak'] // MiB} MiB"
    )
    assert sent["s"].returncode == 0
    assert "done" in seen["state"], seen["message"]
    assert seen["file"] == {"size": size, "digests": step_digests(source)}
    assert seen["name"] == f"Saved out.bin, {shown_size(size)}."
    assert seen["peak"] - seen["before"] < RSS_LIMIT
    assert problems == []


@pytest.mark.parametrize("size", ENCRYPTED_SIZES)
async def test_an_encrypted_receive_is_decrypted_on_the_way_to_disk(
    relay: Relay, tmp_path: Path, screenshots: Path, size: int
) -> None:
    source = random_file(tmp_path / "plain.bin", size)
    cipher, decrypted = tmp_path / "cipher.bin", tmp_path / "decrypted.bin"
    with trio.fail_after(30 + size / (20 * MiB)):
        for command, into in ((OPENSSL_ENCRYPT, cipher), (OPENSSL_DECRYPT, decrypted)):
            given = source if into == cipher else cipher
            await trio.run_process(
                [*command, "-pass", f"pass:{PASSPHRASE}", "-in", str(given), "-out", str(into)]
            )
    sent: dict[str, CurlResult] = {}
    seen: dict[str, Any] = {}

    async def send() -> None:
        sent["s"] = await curl("-T", str(cipher), f"{relay.url}/secret", max_time=60 + size / (5 * MiB))

    def receive() -> list[str]:
        with chromium_page(init_script=OPFS_SAVE_PICKER, profile=tmp_path / "profile") as (page, log):
            page.goto(f"{relay.url}/?path=secret")
            page.click("#recv-e2e summary")
            page.fill("#recv-pass", PASSPHRASE)
            before = renderer_rss()
            page.click("#recv-start")
            page.wait_for_selector("#recv-state.waiting >> text=waiting for the sender")
            started = time.monotonic()
            to_trio(nursery.start_soon, send)
            peak = before
            while "done" not in (current := state(page)) and "error" not in current:
                peak = max(peak, renderer_rss())
                time.sleep(0.1)
            seen["seconds"] = time.monotonic() - started
            shot = f"disk-encrypted-{size // MiB}MiB-done.png"
            page.screenshot(path=str(screenshots / shot), full_page=True)
            seen.update(before=before, peak=max(peak, renderer_rss()), state=current)
            seen["message"] = page.text_content("#recv-message")
            seen["file"] = page.evaluate(OPFS_DIGESTS, DIGEST_STEP)
            return log.csp + log.errors

    async with trio.open_nursery() as nursery:
        problems = await in_browser(receive, limit=90 + size / (5 * MiB))
    print(
        f"\n{size // MiB} MiB encrypted to disk in {seen['seconds']:.1f} s: renderer RSS "
        f"{seen['before'] // MiB} -> peak {seen['peak'] // MiB} MiB"
    )
    assert sent["s"].returncode == 0
    assert "done" in seen["state"], seen["message"]
    assert seen["file"] == {"size": size, "digests": step_digests(decrypted)}  # what openssl decrypts
    assert (
        seen["message"] == f"Received {shown_size(cipher.stat().st_size)}, decrypted to {shown_size(size)}."
    )
    assert seen["peak"] - seen["before"] < RSS_LIMIT
    assert problems == []


async def test_a_cancelled_receive_leaves_no_file(relay: Relay, tmp_path: Path, screenshots: Path) -> None:
    # 64 MiB sent at 4 MiB/s: Cancel comes long before the end.
    source = random_file(tmp_path / "slow.bin", 64 * MiB)
    sent: dict[str, CurlResult] = {}

    def receive_then_cancel() -> tuple[str | None, str | None, str | None, Any, list[str]]:
        with chromium_page(init_script=OPFS_SAVE_PICKER) as (page, log):
            page.goto(f"{relay.url}/?path=slow")
            page.click("#recv-start")
            page.wait_for_selector("#recv-state.waiting >> text=waiting for the sender")
            to_trio(
                nursery.start_soon,
                curl_into,
                sent,
                "s",
                "--limit-rate",
                "4M",
                "-T",
                str(source),
                f"{relay.url}/slow",
            )
            wait_for_value(lambda: page.text_content("#recv-bytes") or "", lambda v: "MiB of" in v)
            page.click("#recv-cancel")
            page.wait_for_selector("#recv-state.aborted")
            page.screenshot(path=str(screenshots / "disk-cancelled.png"), full_page=True)
            return (
                page.text_content("#recv-state"),
                page.text_content("#recv-message"),
                page.text_content("#recv-bytes"),
                page.evaluate(OPFS_DIGESTS, DIGEST_STEP),
                log.csp + log.errors,
            )

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            state_text, message, shown, saved, problems = await in_browser(receive_then_cancel)
    assert state_text == "cancelled"
    assert message == "The partial file was discarded: out.bin was removed."
    assert shown is not None and "(100%)" not in shown
    assert saved is None  # no out.bin at all
    assert b"Transfer complete" not in sent["s"].stdout
    assert problems == []


async def test_a_wrong_passphrase_leaves_no_file(relay: Relay) -> None:
    # Three decryption steps of fixed data, so that the wrong passphrase is always told (bad padding).
    cipher = await rejected_cipher(hashlib.sha256(b"seed").digest() * (3 * MiB // 32))

    def receive() -> tuple[str | None, bool, Any, list[str]]:
        with chromium_page(init_script=OPFS_SAVE_PICKER) as (page, log):
            page.goto(f"{relay.url}/?path=bad-pass")
            page.click("#recv-e2e summary")
            page.fill("#recv-pass", WRONG_PASSPHRASE)
            page.click("#recv-start")
            page.wait_for_selector("#recv-state.waiting >> text=waiting for the sender")
            to_trio_async(partial(curl, "-T", "-", f"{relay.url}/bad-pass", stdin=cipher))
            page.wait_for_selector("#recv-state.error, #recv-state.done")
            return (
                page.text_content("#recv-message"),
                page.is_visible("#recv-result"),
                page.evaluate(OPFS_DIGESTS, DIGEST_STEP),
                log.csp + log.errors,
            )

    message, offered, saved, problems = await in_browser(receive)
    assert message == (
        "wrong passphrase, or the data is corrupted The partial file was discarded: out.bin was removed."
    )
    assert not offered
    assert saved is None
    assert problems == []


async def test_a_dismissed_picker_receives_nothing(relay: Relay, screenshots: Path) -> None:
    dismiss = 'window.showSaveFilePicker = async () => { throw new DOMException("closed", "AbortError"); };'

    def receive() -> tuple[str | None, bool, list[str]]:
        with chromium_page(init_script=dismiss) as (page, log):
            page.goto(f"{relay.url}/?path=nobody")
            page.click("#recv-start")
            page.wait_for_selector("#recv-state >> text=no file chosen")
            page.screenshot(path=str(screenshots / "disk-no-file-chosen.png"), full_page=True)
            return page.text_content("#recv-how"), page.is_enabled("#recv-start"), log.csp + log.errors

    how, ready, problems = await in_browser(receive)
    assert how is not None and how.startswith("Receive asks where to save first")
    assert ready
    assert relay.hub.registry.snapshot("/nobody") is None  # no receiver ever registered
    assert problems == []


async def test_without_the_api_an_encrypted_receive_warns_it_is_held_in_memory(
    relay: Relay, screenshots: Path
) -> None:
    def receive() -> tuple[str | None, str | None, list[str]]:
        with chromium_page(init_script=NO_SAVE_PICKER) as (page, log):
            page.goto(f"{relay.url}/?path=in-memory")
            page.click("#recv-e2e summary")
            page.fill("#recv-pass", PASSPHRASE)
            page.click("#recv-start")
            page.wait_for_selector("#recv-state.waiting >> text=waiting for the sender")
            page.screenshot(path=str(screenshots / "memory-warning.png"), full_page=True)
            shown = page.text_content("#recv-how"), page.text_content("#recv-message")
            page.click("#recv-cancel")
            page.wait_for_selector("#recv-state.aborted")
            return *shown, log.csp + log.errors

    how, message, problems = await in_browser(receive)
    assert how is not None and how.startswith("Receive hands the file to your browser's downloads")
    assert message is not None and message.startswith("This browser cannot write to disk as the bytes arrive")
    assert problems == []
