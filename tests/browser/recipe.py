# The web UI's end-to-end recipe as openssl runs it: the commands, the passphrase, and ciphertext
# that a wrong passphrase is known to reject (CBC without a MAC passes a wrong key 1 time in ~256).
from __future__ import annotations

import subprocess

import trio

PASSPHRASE = "correct horse battery staple ✓"
WRONG_PASSPHRASE = "not the passphrase"
OPENSSL_ENCRYPT = ["openssl", "aes-256-cbc", "-pbkdf2", "-iter", "100000", "-md", "sha256"]
OPENSSL_DECRYPT = [*OPENSSL_ENCRYPT[:2], "-d", *OPENSSL_ENCRYPT[2:]]
# Checked once with openssl (`rejected_cipher` asserts it again): the wrong passphrase gives bad padding.
FIXED_SALT = "0102030405060708"


async def openssl(*command: str, data: bytes, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(60):
        return await trio.run_process(
            list(command), stdin=data, capture_stdout=True, capture_stderr=True, check=check
        )


async def encrypt(data: bytes) -> bytes:
    return (await openssl(*OPENSSL_ENCRYPT, "-pass", f"pass:{PASSPHRASE}", data=data)).stdout


async def decrypt(cipher: bytes) -> bytes:
    return (await openssl(*OPENSSL_DECRYPT, "-pass", f"pass:{PASSPHRASE}", data=cipher)).stdout


async def rejected_cipher(data: bytes) -> bytes:
    """`data` encrypted with a fixed salt, so that the wrong passphrase's outcome is always bad padding.

    With -S, OpenSSL 3 leaves out the "Salted__" + salt header, so it is put in front here.
    """
    body = (
        await openssl(*OPENSSL_ENCRYPT, "-S", FIXED_SALT, "-pass", f"pass:{PASSPHRASE}", data=data)
    ).stdout
    cipher = b"Salted__" + bytes.fromhex(FIXED_SALT) + body
    assert await decrypt(cipher) == data
    wrong = await openssl(*OPENSSL_DECRYPT, "-pass", f"pass:{WRONG_PASSPHRASE}", data=cipher, check=False)
    assert wrong.returncode != 0 and b"bad decrypt" in wrong.stderr, "pick other data: this key passes"
    return cipher
