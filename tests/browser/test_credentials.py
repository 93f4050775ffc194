# The web UI under an access policy: a 401 makes the page ask for a user, then it sends or receives again.
# Invariant: the other side is curl -u; bytes compared by sha256; the page reports no CSP violation or error.
from __future__ import annotations

import base64
import dataclasses
import hashlib
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from pipe_relay.net.access import hash_password
from tests.browser.conftest import OPFS_SAVE_PICKER, chromium_page, in_browser
from tests.browser.recipe import PASSPHRASE, decrypt
from tests.clients import CurlResult, StartRelay, TlsFiles, curl_into

PASSWORDS = {"alice": "alice-pw-9e1f", "bob": "bob-pw-c2d4 ✓"}  # (bob's: non-ASCII, sent as UTF-8)
NEEDS_USER_TO_SEND = "[ERROR] This path needs a user and password to send (curl -u USER)."
NEEDS_USER_TO_RECEIVE = "[ERROR] This path needs a user and password to receive (curl -u USER)."
WRONG = "[ERROR] Wrong user or password."
BOB_MAY_NOT_SEND = "[ERROR] User 'bob' may not send on this path."
TEXT = "for the team only ✓\nsecond line\n"


@pytest.fixture(scope="module")
def policy_text() -> str:
    """Under /team/ only alice sends and alice or bob receive; elsewhere anyone does anything."""
    text = 'default = { send = "anyone", receive = "anyone" }\n\n'
    for name, password in PASSWORDS.items():
        text += f'[users.{name}]\npassword = "{hash_password(password)}"\n\n'
    return text + '[[rules]]\nprefix = "/team/"\nsend = ["alice"]\nreceive = ["alice", "bob"]\n'


@pytest.fixture
def policy(tmp_path: Path, policy_text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(policy_text)
    return path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sign_in(page: Any, user: str, password: str) -> None:
    page.wait_for_selector("#auth", state="visible")
    page.fill("#auth-user", user)
    page.fill("#auth-password", password)
    page.click("#auth-go")


@pytest.mark.parametrize("protocol", ["http/1.1", "h2"])
async def test_a_send_asks_for_a_user_and_goes_through_once_the_right_one_is_given(
    start_relay: StartRelay, tls_files: TlsFiles, policy: Path, screenshots: Path, protocol: str
) -> None:
    """Anonymous: asked for a user, with the server's line. A wrong password: asked again. bob (who
    may receive here, not send): told so, not asked. Signed out, alice: the send goes through. Over
    HTTP/1.1 the page uploads with XMLHttpRequest; over HTTPS (HTTP/2) an encrypted send streams
    through fetch(): both carry the credentials."""
    relay = await start_relay(policy_path=str(policy), **tls_files.overrides())
    secure = protocol == "h2"
    got: dict[str, CurlResult] = {}
    seen: dict[str, Any] = {}

    def send() -> list[str]:
        with chromium_page(trust_any_certificate=secure) as (page, log):
            page.goto(f"{relay.tls_url if secure else relay.url}/")
            page.check("input[name=mode][value=text]")
            page.fill("#text", TEXT)
            page.fill("#send-path", "team/ui")
            if secure:
                page.click("#send-e2e summary")
                page.fill("#send-pass", PASSPHRASE)
            page.click("#send-start")
            page.wait_for_selector("#auth", state="visible")
            seen["asked"] = page.text_content("#auth-why"), page.text_content("#send-state")
            _sign_in(page, "alice", "not-alices-password")
            page.wait_for_selector(f"#auth-why >> text={WRONG}")
            seen["wrong"] = page.is_visible("#auth"), page.text_content("#send-state")
            _sign_in(page, "bob", PASSWORDS["bob"])
            page.wait_for_selector("#send-state.error >> text=may not send")
            seen["forbidden"] = page.text_content("#send-state"), page.is_visible("#auth")
            seen["who"] = page.text_content("#auth-who")
            page.click("#auth-out")
            page.click("#send-start")
            _sign_in(page, "alice", PASSWORDS["alice"])
            page.wait_for_selector("#send-state.done, #send-state.error")
            seen["done"] = page.text_content("#send-state"), page.text_content("#send-log")
            seen["who after"] = page.text_content("#auth-who")
            page.screenshot(path=str(screenshots / f"credentials-send-{protocol[:2]}.png"), full_page=True)
            return log.csp + log.errors

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            receiver = ("-sS", "-u", f"bob:{PASSWORDS['bob']}", f"{relay.url}/team/ui")
            nursery.start_soon(curl_into, got, "r", *receiver)
            await relay.wait_for_pipe("/team/ui", receivers=1)
            problems = await in_browser(send, limit=80)
        body = await decrypt(got["r"].stdout) if secure else got["r"].stdout
    assert seen["asked"] == (NEEDS_USER_TO_SEND, NEEDS_USER_TO_SEND)
    assert seen["wrong"] == (True, WRONG)
    assert seen["forbidden"] == (BOB_MAY_NOT_SEND, False)
    assert seen["who"] == "Signed in as bob Sign out"
    assert seen["done"][0] == "done", seen["done"]
    assert "[INFO] Transfer complete." in seen["done"][1]
    assert seen["who after"] == "Signed in as alice Sign out"
    assert got["r"].returncode == 0, got["r"].stderr
    assert _sha(body) == _sha(TEXT.encode())
    assert problems == []


async def test_a_receive_asks_for_a_user_then_saves_what_was_sent(
    start_relay: StartRelay, policy: Path, screenshots: Path
) -> None:
    """curl -u alice sends; the page, without a user, is asked for one; bob given, it receives the
    text into the file it was handed (the save picker answers at once here) and shows it."""
    relay = await start_relay(policy_path=str(policy))
    sent: dict[str, CurlResult] = {}
    seen: dict[str, Any] = {}

    def receive() -> list[str]:
        with chromium_page(init_script=OPFS_SAVE_PICKER) as (page, log):
            page.goto(f"{relay.url}/?path=team/in")
            page.click("#recv-start")
            page.wait_for_selector("#auth", state="visible")
            seen["asked"] = page.text_content("#auth-why"), page.text_content("#recv-message")
            _sign_in(page, "bob", PASSWORDS["bob"])
            page.wait_for_selector("#recv-state.done, #recv-state.error")
            seen["state"] = page.text_content("#recv-state"), page.text_content("#recv-message")
            seen["text"] = page.input_value("#recv-text")
            seen["name"] = page.text_content("#recv-name")
            page.screenshot(path=str(screenshots / "credentials-receive.png"), full_page=True)
            return log.csp + log.errors

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            sender = ("-sS", "-u", f"alice:{PASSWORDS['alice']}", "-H", "Content-Type: text/plain")
            upload = partial(curl_into, sent, "s", *sender, "-T", "-", stdin=TEXT.encode())
            nursery.start_soon(upload, f"{relay.url}/team/in")
            await relay.wait_for_pipe("/team/in")
            problems = await in_browser(receive, limit=80)
    assert sent["s"].returncode == 0, sent["s"].stderr
    assert sent["s"].stdout.decode().splitlines()[-1] == "[INFO] Transfer complete."
    removed = " The partial file was discarded: out.bin was removed."  # (the empty file the picker made)
    assert seen["asked"] == (NEEDS_USER_TO_RECEIVE, NEEDS_USER_TO_RECEIVE + removed)
    assert seen["state"][0] == "done", seen["state"]
    assert _sha(seen["text"].encode()) == _sha(TEXT.encode())
    assert seen["name"] == f"Saved out.bin, {len(TEXT.encode())} B."
    assert problems == []


FETCH_AS_ALICE = """async ([url, token]) => {
  try {
    const response = await fetch(url, {
      method: "PUT", body: "from another site", credentials: "include",
      headers: { Authorization: token, "Content-Type": "text/plain" },
    });
    return { status: response.status, text: await response.text() };
  } catch (error) {
    return { error: error.name };
  }
}"""
"""A page's fetch that sends to the relay with alice's credentials (a preflight first: PUT, Authorization)."""


async def test_pages_of_two_origins_only_the_listed_one_sends_with_credentials(
    start_relay: StartRelay, policy: Path
) -> None:
    """Two pages on other origins than the relay's, each fetching a PUT to it with alice's
    credentials (credentials: include): the one of --cors-origins is answered (its preflight names
    it and allows credentials) and its send reaches bob; the other's preflight says `*`, so Chromium
    refuses to send at all, and no sender ever joins its pipe."""
    relay = await start_relay(policy_path=str(policy), hosts=("127.0.0.1", "::1"))
    listed, other = f"http://localhost:{relay.port}", f"http://[::1]:{relay.port}"
    hub = relay.hub  # (the origin names the port, known once the server listens: listed then)
    hub.config = dataclasses.replace(hub.config, cors_origins=(listed,))
    token = "Basic " + base64.b64encode(f"alice:{PASSWORDS['alice']}".encode()).decode()
    got: dict[str, CurlResult] = {}
    seen: dict[str, Any] = {}

    def fetch_from(origin: str, path: str) -> list[str]:
        with chromium_page() as (page, log):
            page.goto(f"{origin}/version")  # (a page of that origin, without a CSP)
            seen[origin] = page.evaluate(FETCH_AS_ALICE, [f"http://127.0.0.1:{relay.port}{path}", token])
            return log.csp + log.errors

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                curl_into, got, "r", "-sS", "-u", f"bob:{PASSWORDS['bob']}", f"{relay.url}/team/cors"
            )
            await relay.wait_for_pipe("/team/cors", receivers=1)
            problems = await in_browser(partial(fetch_from, listed, "/team/cors"), limit=50)
        problems += await in_browser(partial(fetch_from, other, "/team/refused"), limit=50)
    assert seen[listed]["status"] == 200, seen
    assert seen[listed]["text"].splitlines()[-1] == "[INFO] Transfer complete.", seen
    assert got["r"].stdout == b"from another site", got["r"]
    assert seen[other] == {"error": "TypeError"}, seen  # (blocked by CORS: nothing was sent)
    assert relay.hub.registry.snapshot("/team/refused") is None
    assert problems == []
