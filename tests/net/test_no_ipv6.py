# Without IPv6 on the host: a kernel with no AF_INET6 (seccomp on the server process) and disable_ipv6.
# Invariant: the default host still serves IPv4 and says it fell back; an unbindable host fails in a line.
from __future__ import annotations

import errno
import os
import platform
import shutil
import socket
import sys

import pytest
import trio

from tests.cli_process import ROOT, open_cli, startup_lines, stop_cli
from tests.clients import curl

# Makes socket(AF_INET6, ...) fail with EAFNOSUPPORT, as on a kernel without IPv6, by a seccomp
# filter on the server process only (x86_64: the syscall number and audit arch are that ABI's).
_NO_IPV6_FILTER = [
    (0x20, 0, 0, 4),  # ld [4]: seccomp_data.arch
    (0x15, 0, 5, 0xC000003E),  # AUDIT_ARCH_X86_64, else allow
    (0x20, 0, 0, 0),  # ld [0]: seccomp_data.nr
    (0x15, 0, 3, 41),  # __NR_socket, else allow
    (0x20, 0, 0, 16),  # ld [16]: args[0], the family
    (0x15, 0, 1, int(socket.AF_INET6)),
    (0x06, 0, 0, 0x00050000 | errno.EAFNOSUPPORT),  # SECCOMP_RET_ERRNO
    (0x06, 0, 0, 0x7FFF0000),  # SECCOMP_RET_ALLOW
]
_WITHOUT_IPV6 = f"""
import ctypes, sys
class Insn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]
class Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Insn))]
insns = (Insn * {len(_NO_IPV6_FILTER)})(*[Insn(*i) for i in {_NO_IPV6_FILTER!r}])
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
assert libc.prctl(22, 2, ctypes.byref(Prog(len(insns), insns))) == 0, ctypes.get_errno()  # seccomp
from pipe_relay.__main__ import main
main(sys.argv[1:])
"""


@pytest.mark.skipif(
    platform.machine() != "x86_64" or not sys.platform.startswith("linux"), reason="x86_64 seccomp"
)
async def test_without_ipv6_the_default_falls_back_to_ipv4_and_says_so() -> None:
    with trio.fail_after(20):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-c", _WITHOUT_IPV6, "--http-port", "0"]
        process = await trio.lowlevel.open_process(command, stdout=-1, stderr=-1, cwd=ROOT, env=env)
        try:
            (line,) = await startup_lines(process, 1)
            port = int(line.split(" (")[0].rsplit(":", 1)[1])
            assert (
                line
                == f"pipe-relay 0.1.0 listening on http://0.0.0.0:{port} (this host has no IPv6: IPv4 only)"
            )
            version = await curl(f"http://127.0.0.1:{port}/version")
            assert version.stdout == b"pipe-relay 0.1.0\n", version.stderr
        finally:
            assert await stop_cli(process) == 0


_NETNS = shutil.which("unshare") is not None and os.geteuid() == 0


@pytest.mark.skipif(not _NETNS, reason="needs root and unshare(1) for a network namespace")
async def test_with_ipv6_disabled_by_sysctl_the_dual_stack_socket_still_serves_ipv4() -> None:
    """`disable_ipv6=1` (in a fresh network namespace) leaves AF_INET6 sockets working: `::` binds
    and IPv4 clients reach it, so there is nothing to fall back from; `::1` has no address."""
    setup = 'ip link set lo up && sysctl -qw net.ipv6.conf.all.disable_ipv6=1 && exec "$@"'
    prefix = ("unshare", "-n", "sh", "-c", setup, "sh")
    with trio.fail_after(20):
        process = await open_cli("--http-port", "0", prefix=prefix)
        try:
            (line,) = await startup_lines(process, 1)
            port = int(line.rsplit(":", 1)[1])
            assert line == f"pipe-relay 0.1.0 listening on http://[::]:{port}"
            inside = ("nsenter", f"--net=/proc/{process.pid}/ns/net")
            result = await trio.run_process(
                [*inside, "curl", "-sS", "--max-time", "5", f"http://127.0.0.1:{port}/version"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            assert result.stdout == b"pipe-relay 0.1.0\n", result.stderr
        finally:
            assert await stop_cli(process) == 0
        failed = await open_cli("--host", "::1", "--http-port", "0", prefix=prefix)
        assert await failed.wait() == 1
        assert failed.stderr is not None
        stderr = await failed.stderr.receive_some(4096)
    assert stderr == b"pipe-relay: error: cannot listen on [::1]:0: Cannot assign requested address\n"
