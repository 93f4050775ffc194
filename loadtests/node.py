# The Node piping-server, the benchmarks' reference: installed with npm on demand, started on a free port.
# Invariant: one pinned version (harness.NODE_VERSION); npm has a deadline; node runs the server directly.
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from harness import (  # type: ignore[import-not-found]
    HOST,
    NODE,
    NODE_VERSION,
    BenchError,
    Server,
    free_port,
    start_listening,
)

NPM_DEADLINE = 600.0
NODE_PACKAGE = "piping-server"
DEFAULT_NODE_DIR = Path.home() / ".cache" / "pipe-relay-bench" / "node"


def ensure_node_server(node_dir: Path) -> Path:
    """Install piping-server@NODE_VERSION with npm into node_dir unless already there; return its entry."""
    pkg_dir = node_dir / "node_modules" / NODE_PACKAGE
    pkg_json = pkg_dir / "package.json"
    installed = None
    if pkg_json.exists():
        m = re.search(r'"version"\s*:\s*"([^"]+)"', pkg_json.read_text())
        installed = m.group(1) if m else None
    if installed != NODE_VERSION:
        npm = shutil.which("npm")
        if npm is None:
            raise BenchError("npm not found; install Node.js >= 18 or pass --no-node")
        node_dir.mkdir(parents=True, exist_ok=True)
        cmd = [npm, "install", "--no-audit", "--no-fund", "--prefix", str(node_dir)]
        cmd.append(f"{NODE_PACKAGE}@{NODE_VERSION}")
        print(f"# installing: {shlex.join(cmd)}", flush=True)
        try:
            subprocess.run(cmd, check=True, timeout=NPM_DEADLINE, stdin=subprocess.DEVNULL)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise BenchError(f"npm install failed: {exc}") from exc
    # Its bin is a node script (dist/src/index.js), run with node directly: we measure the server itself.
    entry = pkg_dir / "dist" / "src" / "index.js"
    if not entry.exists():
        raise BenchError(f"{entry} is missing; remove {node_dir} and retry")
    return entry


def start_node(workdir: Path, node_dir: Path, extra: Sequence[str] = ()) -> Server:
    """Start the Node piping-server (installed on demand) on a free HTTP port; return once it listens."""
    entry = ensure_node_server(node_dir)
    node = shutil.which("node")
    if node is None:
        raise BenchError("node not found; install Node.js >= 18 or pass --no-node")
    port = free_port()
    cmd = [node, str(entry), "--host", HOST, "--http-port", str(port), *extra]
    return start_listening(NODE, cmd, port, workdir)
