# Helpers for the browser tests with big files: random files on disk, sha256 per step, and the RSS
# of this process's Chromium renderers from /proc. Invariant: no fixtures and no tests here.
from __future__ import annotations

import hashlib
import os
from pathlib import Path

MiB = 1 << 20
DIGEST_STEP = 16 * MiB
RSS_LIMIT = 200 * MiB
"""How much the renderers' RSS may grow over a big transfer (the page must not hold the file)."""


def step_digests(path: Path) -> list[str]:
    digests = []
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(DIGEST_STEP), b""):
            digests.append(hashlib.sha256(block).hexdigest())
    return digests


def random_file(path: Path, size: int) -> Path:
    with path.open("wb") as out:
        for _ in range(size // MiB):
            out.write(os.urandom(MiB))
        out.write(os.urandom(size % MiB))
    return path


def renderer_rss() -> int:
    """Bytes resident in this process's Chromium renderers (descendants with --type=renderer)."""
    return sum(renderers().values())


def renderers() -> dict[int, int]:
    """Each of this process's Chromium renderers (descendants with --type=renderer): its VmRSS."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: dict[int, int] = {}
    stack = [os.getpid()]
    while stack:
        for pid in children.get(stack.pop(), []):
            stack.append(pid)
            try:
                if b"--type=renderer" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                    continue
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    found[pid] = int(line.split()[1]) * 1024
    return found


def shown_size(size: int) -> str:
    """Fmt.size for a whole number of MiB."""
    return f"{size / 1024 / MiB:.1f} GiB" if size >= 1024 * MiB else f"{size / MiB:.1f} MiB"
