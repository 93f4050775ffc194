# Builds the C reference relay (cref.c) with cc into a cache folder named by the source's sha256.
# Invariant: standard library only, no loadtests import (the benchmark and the tests both import it).
"""``build_cref()`` returns the path of a binary of this checkout's ``loadtests/cref.c``, compiled with
``cc -O2 -Wall -Werror`` on first use into ``~/.cache/pipe-relay-bench/cref-<sha256[:16]>/cref``; a
changed source gets a new folder. No binary is committed."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).resolve().with_name("cref.c")
DEFAULT_CACHE = Path.home() / ".cache" / "pipe-relay-bench"
CC_FLAGS = ("-O2", "-Wall", "-Werror")
CC_DEADLINE = 120.0


class CrefBuildError(Exception):
    """No C compiler, or cref.c did not compile."""


def compiler() -> str | None:
    """The C compiler to use: $CC if set, else ``cc`` on PATH; None if there is none."""
    return shutil.which(os.environ.get("CC", "cc"))


def build_cref(cache: Path = DEFAULT_CACHE) -> Path:
    """Compile cref.c unless a binary of this exact source is cached; return the binary's path."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    binary = cache / f"cref-{digest}" / "cref"
    if binary.exists():
        return binary
    cc = compiler()
    if cc is None:
        raise CrefBuildError("no C compiler (cc) found; install one (apt-get install gcc) or pass --no-cref")
    binary.parent.mkdir(parents=True, exist_ok=True)
    # Compile beside the target and rename: a concurrent or interrupted build leaves no half binary.
    fd, tmp = tempfile.mkstemp(dir=binary.parent, prefix=".cref-")
    os.close(fd)
    try:
        cmd = [cc, *CC_FLAGS, "-o", tmp, str(SOURCE)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=CC_DEADLINE, check=False)
        except subprocess.TimeoutExpired as exc:
            raise CrefBuildError(f"{cc} took more than {CC_DEADLINE:g} s") from exc
        if done.returncode != 0:
            raise CrefBuildError(f"{' '.join(cmd)} failed:\n{done.stderr.strip()}")
        os.replace(tmp, binary)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return binary
