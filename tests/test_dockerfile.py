# The Dockerfile held to the code with no Docker engine: its user, entry point, flags, ports, health check.
# Invariant: every fact is read from the Dockerfile and checked against pipe_relay itself, never a copy.
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import sys
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio
from packaging.specifiers import SpecifierSet

from pipe_relay.__main__ import parse_args
from pipe_relay.config import HTTPS_PORT, Config
from pipe_relay.core.paths import API_PREFIX, Reserved
from pipe_relay.core.routing import Decision, Request, ServePage, route
from pipe_relay.errors import PipeError
from tests.cli_process import ROOT, cli_server

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
_URL = re.compile(r"https?://[^\s'\"]+")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    """Upper-case: RUN, CMD, ..."""
    text: str
    """The arguments, continuation lines joined."""

    @property
    def exec_form(self) -> bool:
        return _json_words(self.text) is not None

    @property
    def words(self) -> list[str]:
        """The JSON array, or the shell form split as sh would split it."""
        words = _json_words(self.text)
        return words if words is not None else shlex.split(self.text)


def _json_words(text: str) -> list[str] | None:
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None  # (Docker too runs a malformed array in the shell form)
    if isinstance(value, list) and all(isinstance(word, str) for word in value):
        return value
    return None


def parse(source: str) -> list[Instruction]:
    """Dockerfile lines -> instructions: `#` comment lines dropped (inside a continuation too), a line
    ending in a backslash continued on the next."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in source.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # (an empty line inside a continuation too, as Docker does)
        continued = line.endswith("\\")
        pending += (line[:-1] if continued else line) + " "
        if not continued:
            keyword, _, rest = pending.strip().partition(" ")
            instructions.append(Instruction(keyword.upper(), rest.strip()))
            pending = ""
    assert not pending, "the Dockerfile ends inside a continuation"
    return instructions


def dockerfile() -> list[Instruction]:
    return parse(DOCKERFILE.read_text())


def last(keyword: str) -> Instruction:
    """The instruction that counts (Docker keeps the last USER, CMD, ENTRYPOINT, ...)."""
    found = [each for each in dockerfile() if each.keyword == keyword]
    assert found, f"the Dockerfile has no {keyword}"
    return found[-1]


def cmd_config() -> Config:
    """What the server is started with: the CMD's flags through the real command line parser."""
    cmd = last("CMD")
    assert cmd.exec_form, "CMD in the shell form would run `/bin/sh -c` as pipe-relay's arguments"
    config, _ = parse_args(cmd.words)
    return config


def healthcheck() -> tuple[dict[str, str], list[str]]:
    """HEALTHCHECK's --options and the argv Docker runs (the shell form goes through /bin/sh -c)."""
    text = last("HEALTHCHECK").text
    options: dict[str, str] = {}
    while text.startswith("--"):
        option, _, text = text.partition(" ")
        name, _, value = option[2:].partition("=")
        options[name] = value
        text = text.lstrip()
    keyword, _, command = text.partition(" ")
    assert keyword.upper() == "CMD", f"HEALTHCHECK {keyword}: no check is run"
    check = Instruction("CMD", command.strip())
    return options, check.words if check.exec_form else ["/bin/sh", "-c", check.text]


def health_url() -> str:
    _, argv = healthcheck()
    urls: list[str] = [url for word in argv for url in _URL.findall(word)]
    assert len(urls) == 1, f"the health check should ask one URL, it has {urls}"
    return urls[0]


def _route(target: str) -> Decision:
    """What the server does with `GET target` (the CMD's limits: the defaults)."""
    config = cmd_config()
    request = Request("GET", target, ())
    return route(request, max_path_length=config.max_path_length, max_receivers=config.max_receivers)


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a Docker duration: {duration!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def test_parser_reads_both_forms_and_continuations() -> None:
    source = """# a comment
run echo 'a b' \\
    # a comment inside the continuation

    && echo c
CMD ["--x", "1 2"]
ENTRYPOINT [not json
"""
    run, cmd, entrypoint = parse(source)
    assert (run.keyword, run.words) == ("RUN", ["echo", "a b", "&&", "echo", "c"]) and not run.exec_form
    assert cmd.words == ["--x", "1 2"] and cmd.exec_form
    assert entrypoint.words == ["[not", "json"] and not entrypoint.exec_form


def test_base_image_is_a_slim_python_the_package_supports() -> None:
    image = last("FROM").words[0]
    name, _, tag = image.partition(":")
    assert name == "python" and tag.endswith("-slim"), image
    version = tag.removesuffix("-slim")
    assert version in SpecifierSet(PYPROJECT["project"]["requires-python"]), image


def test_user_is_not_root_and_is_made_in_the_image() -> None:
    instructions = dockerfile()
    user = last("USER")
    name, _, group = user.words[0].partition(":")
    assert name not in ("root", "0") and group not in ("root", "0"), f"USER {user.text}"
    # `useradd [options] NAME` (the last word of its command), or `useradd --uid N` for a USER N
    made_by = re.compile(rf"\buseradd\b[^;&|]*(\s{re.escape(name)}\s*($|[;&|])|--uid[= ]{re.escape(name)}\s)")
    made = [
        index
        for index, each in enumerate(instructions)
        if each.keyword == "RUN" and made_by.search(each.text)
    ]
    assert made, f"no RUN useradd makes the user {name!r}"
    assert made[0] < instructions.index(user), "USER names a user made only after it"


def test_entrypoint_is_the_console_script() -> None:
    entrypoint = last("ENTRYPOINT")
    assert entrypoint.exec_form, "a shell-form ENTRYPOINT makes /bin/sh PID 1: it drops the CMD and SIGTERM"
    assert entrypoint.words == ["pipe-relay"]
    target = PYPROJECT["project"]["scripts"][entrypoint.words[0]]
    module, _, function = target.partition(":")
    assert callable(getattr(import_module(module), function)), target


def test_cmd_flags_parse_with_the_real_parser() -> None:
    config = cmd_config()  # a renamed or removed flag exits here (SystemExit 2)
    assert config.http, "the CMD turns the plain listener off: the health check has nothing to ask"


def test_expose_lists_the_cmd_port_and_the_https_port() -> None:
    exposed = {
        int(port.split("/")[0]) for each in dockerfile() if each.keyword == "EXPOSE" for port in each.words
    }
    assert {cmd_config().port, HTTPS_PORT} <= exposed, f"EXPOSE {sorted(exposed)}"


def test_stopsignal_is_sigterm() -> None:
    assert stop_signal() is signal.SIGTERM, last("STOPSIGNAL").text


def test_healthcheck_asks_the_health_route_on_the_cmd_port() -> None:
    url = urlsplit(health_url())
    assert url.scheme == "http" and url.hostname == "127.0.0.1", url.geturl()
    assert url.port == cmd_config().port, f"the health check asks port {url.port}, the CMD listens elsewhere"
    decision = _route(url.path + (f"?{url.query}" if url.query else ""))
    assert isinstance(decision, ServePage) and decision.page is Reserved.HEALTH, decision


def test_healthcheck_timing_is_sane() -> None:
    options, argv = healthcheck()
    interval = _seconds(options.get("interval", "30s"))
    timeout = _seconds(options.get("timeout", "30s"))
    assert 1 <= timeout < interval <= 300, options
    client = re.search(r"timeout=(\d+(?:\.\d+)?)", " ".join(argv))
    assert client is None or float(client[1]) < timeout, "the client must give up before Docker kills it"


def _with_port(argv: list[str], port: int) -> list[str]:
    """The health check's command against 127.0.0.1:`port`, with this interpreter for `python`."""
    netloc = urlsplit(health_url()).netloc
    swapped = [word.replace(f"//{netloc}/", f"//127.0.0.1:{port}/") for word in argv]
    return [sys.executable if swapped[0] in ("python", "python3") else swapped[0], *swapped[1:]]


def _cmd_with_port_0() -> list[str]:
    words = list(last("CMD").words)
    for index, word in enumerate(words):
        if word == "--http-port":
            return [*words[: index + 1], "0", *words[index + 2 :]]
        if word.startswith("--http-port="):
            return [*words[:index], "--http-port=0", *words[index + 1 :]]
    return [*words, "--http-port", "0"]  # (the CMD relies on the default port)


def stop_signal() -> signal.Signals:
    value = last("STOPSIGNAL").words[0]
    return signal.Signals(int(value)) if value.isdigit() else signal.Signals[value.upper()]


@asynccontextmanager
async def cmd_server() -> AsyncIterator[tuple[trio.Process, int]]:
    """`python -m pipe_relay` with the CMD's flags, on a free port instead of the fixed one."""
    async with cli_server(*_cmd_with_port_0()) as (process, line):
        found = re.search(r"listening on http://\S+:(\d+)", line)
        assert found, line
        yield process, int(found[1])


async def _run_check(argv: list[str]) -> int:
    result = await trio.run_process(argv, check=False, capture_stdout=True, capture_stderr=True)
    return result.returncode


async def test_healthcheck_command_passes_against_a_running_server() -> None:
    _, argv = healthcheck()
    with trio.fail_after(30):
        async with cmd_server() as (_, port):
            assert await _run_check(_with_port(argv, port)) == 0
            # An error status is unhealthy too (a draining server answers its health with 503):
            # the health path without the API prefix is the server's own 404.
            with pytest.raises(PipeError):
                _route(Reserved.HEALTH.value)
            wrong = [word.replace(API_PREFIX + Reserved.HEALTH.value, Reserved.HEALTH.value) for word in argv]
            assert await _run_check(_with_port(wrong, port)) == 1


async def test_healthcheck_command_fails_against_a_closed_port() -> None:
    _, argv = healthcheck()
    with socket.socket() as closed, trio.fail_after(30):
        closed.bind(("127.0.0.1", 0))  # bound, never listening: refused, and no one else takes it
        assert await _run_check(_with_port(argv, closed.getsockname()[1])) == 1


async def test_stop_signal_drains_the_server_and_exits_0() -> None:
    """In the container pipe-relay is PID 1, which a signal with no handler does not stop at all."""
    _, argv = healthcheck()
    with trio.fail_after(30):
        async with cmd_server() as (process, port):
            # The address line comes just before the signal handler is set (no checkpoint between):
            # a served request shows the main task has got past it.
            assert await _run_check(_with_port(argv, port)) == 0
            process.send_signal(stop_signal())
            assert await process.wait() == 0, "killed by the signal rather than drained"


def test_readme_docker_commands_use_real_flags() -> None:
    """The README's `docker run` lines: their pipe-relay flags parse, and they publish what they listen on."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Docker\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    runs = [shlex.split(line) for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    runs = [words for words in runs if words[:2] == ["docker", "run"]]
    assert len(runs) >= 2, "the README shows no docker run (plain and HTTPS)"
    for words in runs:
        image = words.index("pipe-relay")
        flags = words[image + 1 :] or last("CMD").words
        config, _ = parse_args(flags)
        published = {int(words[i + 1].split(":")[-1]) for i, word in enumerate(words[:image]) if word == "-p"}
        listening = {config.port} | ({config.https_port} if config.https_port is not None else set())
        assert published == listening, f"{shlex.join(words)}: publishes {published}, listens on {listening}"


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore's rule: the last pattern matching the path or one of its parents decides."""
    parents = [str(Path(*Path(path).parts[:n])) for n in range(1, len(Path(path).parts) + 1)]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").strip("/")
        regex = "".join(
            {"**/": "(.*/)?", "/**": "(/.*)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                token, re.escape(token)
            )
            for token in re.findall(r"\*\*/|/\*\*|\*\*|\*|\?|[^*?]", glob)
        )
        if any(re.fullmatch(regex, parent) for parent in parents):
            ignored = not negated
    return ignored


def _copy(source: Path, to: Path, patterns: list[str]) -> None:
    """COPY of one context path: a dir's contents into `to`, symlinks kept as symlinks."""
    if _ignored(str(source.relative_to(ROOT)), patterns):
        return
    if source.is_symlink():
        to.parent.mkdir(parents=True, exist_ok=True)
        to.symlink_to(os.readlink(source))
    elif source.is_dir():
        for child in sorted(source.iterdir()):
            _copy(child, to / child.name, patterns)
    else:
        to.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, to)


def test_build_context_carries_the_package_and_its_static_files(tmp_path: Path) -> None:
    """The COPYs, done here as Docker does them (the context filtered by .dockerignore, symlinks kept):
    the dir `pip install .` runs in has the project, and pipe_relay/static resolves inside it."""
    lines = DOCKERIGNORE.read_text().splitlines() if DOCKERIGNORE.exists() else []
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    workdir = Path("/")
    install_dir = None
    for each in dockerfile():
        if each.keyword == "WORKDIR":
            workdir = workdir / each.words[0]
        elif each.keyword == "COPY" and not any(word.startswith("--from") for word in each.words):
            *sources, dest = (word for word in each.words if not word.startswith("--"))
            into = tmp_path / (workdir / dest).relative_to("/")
            for source in sources:
                base = ROOT / source
                to = into / base.name if base.is_file() and (dest.endswith("/") or len(sources) > 1) else into
                _copy(base, to, patterns)
        elif each.keyword == "RUN" and re.search(r"\bpip install --no-cache-dir \.(\s|$)", each.text):
            install_dir = tmp_path / workdir.relative_to("/")
            break
    assert install_dir is not None, "no RUN pip install --no-cache-dir . (from the copied project)"
    assert (install_dir / "pyproject.toml").is_file()
    assert (install_dir / PYPROJECT["project"]["readme"]).is_file()
    static = (install_dir / "pipe_relay" / "static").resolve()
    assert static.is_relative_to(tmp_path), f"pipe_relay/static points out of the build dir: {static}"
    wanted = {path.name for path in (ROOT / "static").iterdir()}
    assert wanted and {path.name for path in static.iterdir()} == wanted
    assert not list(install_dir.rglob("__pycache__")), ".dockerignore lets caches into the image"
    for unwanted in (".git/HEAD", ".venv/bin/python", "pipe_relay/core/__pycache__"):
        assert _ignored(unwanted, patterns), f"the build context carries {unwanted}"
