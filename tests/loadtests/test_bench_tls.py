# bench.py --tls end to end: pipe-relay over HTTPS with an openssl certificate, real curl, bytes checked.
# Invariant: the run exits 0 only if every receiver's sha256 and byte count matched; rows are https/1.1 ones.
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import trio

ROOT = Path(__file__).resolve().parents[2]


async def test_bench_tls_runs_the_large_cases_over_verified_https() -> None:
    if shutil.which("curl") is None or shutil.which("openssl") is None:
        pytest.skip("bench.py --tls needs curl and openssl on PATH")
    command = [sys.executable, "loadtests/bench.py", "--tls", "--no-node", "--size", "2M", "--rounds", "1"]
    command += ["--cases", "file-n1,chunked-n3", "--max-time", "30"]
    with trio.fail_after(90):  # on expiry trio SIGTERMs bench.py, which stops its server
        done = await trio.run_process(
            command, cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False
        )
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode() + out
    assert "--enable-https --https-port" in out
    assert "negotiated: pipe-relay TLSv1." in out
    assert "The C reference relay has no TLS" in out
    for case in ("file-n1", "chunked-n3"):
        assert f"| {case} (https/1.1) | pipe-relay |" in out, out
        assert f"- {case} (https/1.1) pipe-relay: MB/s" in out and "sha256 ok" in out, out
    assert "C rw" not in out and "Small transfers" not in out
