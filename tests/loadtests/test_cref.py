# The benchmark's C reference relay (loadtests/cref.c), built with cc, relays real curl transfers intact.
# Invariant: both modes; a Content-Length body to one and two receivers, a chunked one to two; sha256-equal.
from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from loadtests.cref import build_cref, compiler
from tests.clients import CurlResult, Payload, curl, curl_into, sha256_file

SIZE = (5 << 20) + 123  # several 1 MiB buffers and pipe rounds, and a short last one


@pytest.fixture(scope="module")
def cref_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cref.c compiled afresh (not from the benchmark's cache), or the test skipped with the reason."""
    if compiler() is None:
        pytest.skip("no C compiler (cc) on PATH: the C reference relay cannot be built")
    if shutil.which("curl") is None:
        pytest.skip("no curl on PATH")
    return build_cref(tmp_path_factory.mktemp("cref-cache"))


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> Payload:
    path = tmp_path_factory.mktemp("cref-payload") / "payload.bin"
    path.write_bytes(os.urandom(SIZE))
    return Payload(path, sha256_file(path), SIZE)


@asynccontextmanager
async def running_cref(binary: Path, mode: str) -> AsyncIterator[str]:
    """The relay on a port it picks (port 0); its base URL once it says it listens; killed after."""
    process = await trio.lowlevel.open_process([str(binary), f"--{mode}", "0"], stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = b""
        while not line.endswith(b"\n"):
            chunk = await process.stdout.receive_some(1)
            assert chunk, f"cref exited with {await process.wait()} before listening"
            line += chunk
        assert line.startswith(f"cref {mode} listening on http://127.0.0.1:".encode()), line
        yield line.decode().split(" on ", 1)[1].strip()
    finally:
        process.kill()
        await process.wait()


async def relay_once(url: str, payload: Payload, n: int, chunked: bool, out: Path) -> list[str]:
    """One transfer to n receivers; asserts every exit and answer, returns the receivers' heads."""
    target = f"{url}/cref-{n}{'-chunked' if chunked else ''}" + (f"?n={n}" if n > 1 else "")
    results: dict[str, CurlResult] = {}
    async with trio.open_nursery() as nursery:
        for i in range(n):
            args = ("-D", str(out / f"head-{i}"), "-o", str(out / f"body-{i}"), target)
            nursery.start_soon(curl_into, results, f"receiver {i}", *args)
        if chunked:  # from a pipe: curl does not know the size and sends chunks
            sent = await curl("-T", "-", target, stdin=payload.path.read_bytes())
        else:
            sent = await curl("-T", str(payload.path), target)
    assert (sent.returncode, sent.stdout) == (0, b"[cref] Sent.\r\n"), sent.stderr
    heads = []
    for i in range(n):
        result = results[f"receiver {i}"]
        assert result.returncode == 0, result.stderr
        assert sha256_file(out / f"body-{i}") == payload.sha256, f"receiver {i} of {n}"
        heads.append((out / f"head-{i}").read_bytes().decode().lower())
    return heads


@pytest.mark.parametrize("mode", ["rw", "splice"])
async def test_cref_relays_a_length_body_and_a_chunked_fan_out_intact(
    mode: str, cref_binary: Path, payload: Payload, tmp_path: Path
) -> None:
    with trio.fail_after(15):
        async with running_cref(cref_binary, mode) as url:
            [head] = await relay_once(url, payload, 1, chunked=False, out=tmp_path)
            assert head.startswith("http/1.1 200") and f"content-length: {SIZE}\r\n" in head
            heads = await relay_once(url, payload, 2, chunked=True, out=tmp_path)
            assert all("transfer-encoding: chunked\r\n" in h for h in heads), heads
            heads = await relay_once(url, payload, 2, chunked=False, out=tmp_path)  # splice: tee(2)
            assert all(f"content-length: {SIZE}\r\n" in h for h in heads), heads
