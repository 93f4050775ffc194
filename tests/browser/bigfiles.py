# Helpers for the browser tests with big files: random files, sha256 per step (of a file here and of
# the page's saved out.bin), the RSS of Chromium's renderers. Invariant: no fixtures and no tests here.
from __future__ import annotations

import hashlib
import os
from pathlib import Path

MiB = 1 << 20
DIGEST_STEP = 16 * MiB
RSS_LIMIT = 200 * MiB
"""How much the renderers' RSS may grow over a big transfer (the page must not hold the file)."""

# The page reads out.bin back from its origin-private file system in steps (crypto.subtle has no
# incremental digest): the sha256 of every step, or null when the file is not there.
OPFS_DIGESTS = """async (step) => {
  let handle;
  try {
    handle = await (await navigator.storage.getDirectory()).getFileHandle("out.bin");
  } catch {
    return null;
  }
  const file = await handle.getFile();
  const digests = [];
  for (let at = 0; at < file.size; at += step) {
    const digest = await crypto.subtle.digest("SHA-256", await file.slice(at, at + step).arrayBuffer());
    digests.push(Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join(""));
  }
  return { size: file.size, digests };
}"""


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
