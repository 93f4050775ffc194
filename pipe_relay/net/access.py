# Who may send and receive (`--policy FILE`): the policy in force, its reloads, and password checks.
# Invariant: a bad reload keeps the policy in force; a wrong user costs what a wrong password does.
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
from collections import OrderedDict
from pathlib import Path

import trio
from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ..core.policy import Policy, PolicyError, parse_policy

log = logging.getLogger("pipe_relay")
WATCH_INTERVAL = 2.0
"""How often the policy file is looked at for a change (SIGHUP reloads at once)."""
CACHE_LIMIT = 1024
CACHE_SECONDS = 300.0
"""A right password is remembered (as a keyed hash) this long, so a user's next request does not
cost another argon2 verification (about 50 ms of a thread)."""
VERIFIERS = 2
"""Password verifications at once (each in a thread): a flood of wrong ones waits its turn."""
_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def load_policy(path: str) -> Policy:
    """The policy in the file at `path`; PolicyError("FILE: line N: ...") if it cannot be used."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        return parse_policy(text)
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from None


class Access:
    """The policy in force (reloaded on SIGHUP and when its file changes) and the password checks."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.policy = load_policy(path)
        self._stamp = _stamp(path)
        self._limiter = trio.CapacityLimiter(VERIFIERS)
        self._key = secrets.token_bytes(32)
        self._good: OrderedDict[bytes, tuple[str, float]] = OrderedDict()  # credential -> (user, until)
        self._dummies = _dummies(self.policy)
        self._reload_now = trio.Event()

    def __repr__(self) -> str:
        return f"<Access {self.path} users={len(self.policy.users)} rules={len(self.policy.rules)}>"

    async def reload(self) -> bool:
        """Read the file again: the new policy is in force for new parties (running transfers go
        on); a bad one is refused, logged, and the one in force stays. True if it changed. (Its
        dummy hashes are made in a thread: one argon2 hash for each set of parameters.)"""
        self._stamp = _stamp(self.path)
        try:
            policy = load_policy(self.path)
        except PolicyError as exc:
            log.error("policy not reloaded, the previous one stays: %s", exc)
            return False
        self._dummies = await trio.to_thread.run_sync(_dummies, policy, limiter=self._limiter)
        self.policy = policy
        self._good.clear()  # (a removed user or a changed password counts from now)
        log.info(
            "policy reloaded from %s: %d user(s), %d rule(s)", self.path, len(policy.users), len(policy.rules)
        )
        return True

    def reload_soon(self) -> None:
        """(SIGHUP.)"""
        self._reload_now.set()

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reload when the file changes (looked at every WATCH_INTERVAL) or when told to."""
        task_status.started()
        while True:
            with trio.move_on_after(WATCH_INTERVAL):
                await self._reload_now.wait()
            told = self._reload_now.is_set()
            self._reload_now = trio.Event()
            if told or _stamp(self.path) != self._stamp:
                await self.reload()

    async def user(self, authorization: str | None) -> tuple[bool, str | None]:
        """(credentials fine, the user): (True, None) for no credentials, (False, None) for a wrong
        user or password, or credentials that are not Basic ones. A wrong user is checked against a
        dummy hash, so it takes the time a wrong password takes."""
        if authorization is None:
            return True, None
        scheme, _, encoded = authorization.strip().partition(" ")
        if scheme.lower() != "basic":
            return False, None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False, None
        name, colon, password = decoded.partition(":")
        if not colon:
            return False, None
        credential = hmac.new(self._key, decoded.encode("utf-8"), hashlib.sha256).digest()
        now = trio.current_time()
        known = self._good.get(credential)
        if known is not None and known[1] > now:
            return True, known[0]
        users = self.policy.users
        stored = users.get(name) or self._dummy_for(name)
        right = await trio.to_thread.run_sync(_verify, stored, password, limiter=self._limiter)
        if not right or name not in users or self.policy.users is not users:
            return False, None
        self._good[credential] = (name, now + CACHE_SECONDS)
        if len(self._good) > CACHE_LIMIT:
            self._good.popitem(last=False)
        return True, name

    def _dummy_for(self, name: str) -> str:
        """An unknown user's stand-in: a dummy hash with the parameters of one of the file's users
        (the same one for a name each time), so that it costs what a known user's wrong password
        costs whichever tool made the file's hashes."""
        dummies = self._dummies
        pick = int.from_bytes(
            hmac.new(self._key, name.encode("utf-8", "surrogateescape"), "sha256").digest()[:4]
        )
        return dummies[pick % len(dummies)]


def _dummies(policy: Policy) -> list[str]:
    """A dummy hash for each set of argon2 parameters the policy's hashes use (one of ours if none)."""
    found: dict[str, str] = {}
    for stored in sorted(policy.users.values()):
        try:
            parameters = extract_parameters(stored)
        except InvalidHashError:
            continue  # (its check fails anyway)
        key = repr(parameters)  # (its dataclass is not hashable)
        if key not in found:
            found[key] = PasswordHasher.from_parameters(parameters).hash(secrets.token_urlsafe(16))
    return list(found.values()) or [_hasher.hash(secrets.token_urlsafe(16))]


def _verify(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino)
