# The README and the documents beside it, held to the code: commands parse, paths exist, links resolve.
# Invariant: each check reads the documents and asks the project itself (its parser, its files), not a copy.
from __future__ import annotations

import contextlib
import io
import re
import shlex
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from loadtests.readme_table import PERFORMANCE, README, generated, runs, slug, with_block
from pipe_relay.__main__ import parse_args
from pipe_relay.cli_help import ADMIN_TOKEN_ENV
from tests.cli_process import ROOT

PROTOCOL = ROOT / "docs" / "protocol.md"
DOCS = [
    README,
    ROOT / "CONTRIBUTING.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "loadtests" / "README.md",
]
MAX_README_LINES = 260
"""A newcomer reads the README in five minutes; behaviour in detail and history live in docs/."""

_BLOCK = re.compile(r"^```(\S*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_SHELLS = {"sh", "console", "shell", "bash"}
_SPAN = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6} +(.+?) *$", re.MULTILINE)
_REPO_FILE = (".py", ".md", ".c", ".toml", ".html", ".js", ".css", ".cfg")
_NOT_REPO = {"mutants", "build", "dist"}
_NEEDS = ["--enable-https", "--crt-path", "cert.pem", "--key-path", "key.pem", "--unix", "relay.sock"]
"""Flags the others may need beside them (--https-port, --unix-mode): a valid base for every flag."""
TOKEN = "a-token-as-a-reader-has-one-0123"
"""The admin token a reader has made (`--admin-port` needs one): in the environment, and in the file a
command names with `--admin-token-file` (the reader's own file: a real one stands in for it)."""


def _blocks(text: str) -> list[tuple[str, str]]:
    """The fenced code blocks: (language, body)."""
    return [(m.group(1), m.group(2)) for m in _BLOCK.finditer(text)]


def _prose(text: str) -> str:
    """The text without its code blocks (a `# comment` in a block is no heading)."""
    return _BLOCK.sub("", text)


def _shell_lines(text: str) -> Iterator[str]:
    """Each command line of the shell blocks (continuations joined; a console block's `$ ` lines only),
    and each inline code span of the prose that gives a flag (`pipe-relay 0.1.0` is an answer)."""
    for language, body in _blocks(text):
        if language not in _SHELLS:
            continue
        for line in body.replace("\\\n", " ").splitlines():
            if language == "console":
                if not line.startswith("$ "):
                    continue  # output
                line = line[2:]
            yield line
    yield from (span for span in _SPAN.findall(_prose(text)) if " --" in span)


def _simple_commands(line: str) -> Iterator[list[str]]:
    """The words of each simple command of a shell line (split at pipes, `;`, `&&`, `||`), comments out."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words: list[str] = []
    for token in lexer:
        if token and set(token) <= set("();<>|&"):
            if words:
                yield words
            words = []
        else:
            words.append(token)
    if words:
        yield words


def server_commands(text: str) -> Iterator[tuple[str, list[str]]]:
    """(the line, pipe-relay's flags) for each way the docs start the server: `pipe-relay ...`
    (any path to it), `python -m pipe_relay ...`, `make run ARGS="..."`, `docker run ... pipe-relay ...`."""
    for line in _shell_lines(text):
        if not re.search(r"pipe-relay|pipe_relay|make run", line):
            continue
        try:
            commands = list(_simple_commands(line))
        except ValueError:
            continue  # not a shell line (a JSON span, a quote in prose)
        for words in commands:
            flags = _server_flags(words)
            if flags is not None:
                yield line, flags


def _server_flags(words: list[str]) -> list[str] | None:
    program = words[0]
    if program == "pipe-relay" or program.endswith("/pipe-relay"):
        return words[1:]
    if Path(program).name.startswith("python") and words[1:3] == ["-m", "pipe_relay"]:
        return words[3:]
    if words[:2] == ["make", "run"]:
        args = [w.removeprefix("ARGS=") for w in words[2:] if w.startswith("ARGS=")]
        return shlex.split(args[0]) if args else []
    if words[:2] == ["docker", "run"] and "pipe-relay" in words[2:]:
        flags = words[words.index("pipe-relay") + 1 :]
        return flags or None  # none: the image's own CMD (tests/test_dockerfile.py checks it)
    return None


def _with_a_token_file(flags: Sequence[str], token_file: Path) -> list[str]:
    """`flags` with the file of each `--admin-token-file` (the reader's) replaced by `token_file`."""
    given = list(flags)
    for index, flag in enumerate(given):
        if flag.startswith("--admin-token-file="):
            given[index] = f"--admin-token-file={token_file}"
        elif flag == "--admin-token-file" and index + 1 < len(given):
            given[index + 1] = str(token_file)
    return given


def _parse_failure(flags: Sequence[str]) -> str | None:
    """None if the server's own parser takes `flags`, else what it said."""
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
            parse_args(list(flags))
    except SystemExit as exc:
        if exc.code == 0 and {"--help", "-h", "--version"} & set(flags):
            return None
        return said.getvalue().strip() or f"exit {exc.code}"
    return None


def test_every_server_command_in_the_docs_parses(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each as its reader runs it: with an admin token made (TOKEN)."""
    monkeypatch.setenv(ADMIN_TOKEN_ENV, TOKEN)
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    found = {doc: list(server_commands(doc.read_text())) for doc in DOCS}
    assert len(found[README]) >= 4, f"too few server commands found in the README: {found[README]}"
    failures = [
        f"{doc.relative_to(ROOT)}: {line!r}: {why}"
        for doc, commands in found.items()
        for line, flags in commands
        if (why := _parse_failure(_with_a_token_file(flags, token_file)))
    ]
    assert not failures, "\n".join(failures)


def test_a_made_up_flag_is_caught() -> None:
    """The check itself: an invented flag in a command is found and refused."""
    text = '```sh\nmake run ARGS="--http-port 9000 --max-reciever 16"\n```\n'
    (line, flags) = next(server_commands(text))
    assert _parse_failure(flags) is not None, line


def test_an_admin_listener_without_a_usable_token_is_caught(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The check gives a token only as a reader has one: the listener with none, or with a short one,
    is still refused, and the token file stood in for must exist."""
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    assert _parse_failure(["--admin-port", "9180"]) is not None
    monkeypatch.setenv(ADMIN_TOKEN_ENV, "short")
    assert _parse_failure(["--admin-port", "9180"]) is not None
    monkeypatch.setenv(ADMIN_TOKEN_ENV, TOKEN)
    assert _parse_failure(["--admin-port", "9180"]) is None
    flags = ["--admin-port", "9180", "--admin-token-file", "/etc/pipe-relay/admin-token"]
    assert _parse_failure(_with_a_token_file(flags, tmp_path / "missing")) is not None


def _tables(text: str) -> Iterator[list[list[str]]]:
    """Each Markdown table of the prose: its rows (the header first, the |---| line left out) as cells."""
    table: list[list[str]] = []
    for line in [*_prose(text).splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not all(set(c) <= set("-: ") for c in cells):
                table.append(cells)
        elif table:
            yield table
            table = []


def flag_rows(text: str) -> Iterator[tuple[list[str], str]]:
    """(flags, default) for each row of a table with a `flag` and a `default` column."""
    for header, *rows in _tables(text):
        if "flag" in header and "default" in header:
            flag, default = header.index("flag"), header.index("default")
            for row in rows:
                yield re.findall(r"`(--[\w-]+)`", row[flag]), row[default].strip("`")


def _help() -> str:
    said = io.StringIO()
    with contextlib.redirect_stdout(said), contextlib.suppress(SystemExit):
        parse_args(["--help"])
    return said.getvalue()


def test_every_flag_in_a_flag_table_exists_with_the_default_it_states() -> None:
    """A stated default changes nothing when given: `--pending-ttl 300` is the server without it."""
    known = set(re.findall(r"--[a-z][\w-]*", _help()))
    base = parse_args(_NEEDS)
    rows = [
        (doc, flags, default) for doc in (README, PROTOCOL) for flags, default in flag_rows(doc.read_text())
    ]
    assert len(rows) >= 20, "the flag tables were not found"
    for doc, flags, default in rows:
        assert flags, f"{doc.name}: a flag table row names no flag"
        for flag in flags:
            assert flag in known, f"{doc.name}: {flag} is not a flag of pipe-relay"
        if default in ("off", "none"):
            continue
        assert len(flags) == 1, f"{doc.name}: {flags} share a default"
        assert parse_args([*_NEEDS, flags[0], default]) == base, (
            f"{doc.name}: {flags[0]} {default} is no default"
        )


def test_the_readme_has_the_two_set_up_commands_and_ci_runs_the_tests() -> None:
    section = README.read_text().split("\n## Set up\n", 1)[1].split("\n## ", 1)[0]
    assert [body.strip() for _, body in _blocks(section)] == ["make run", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text().splitlines()


def named_paths(text: str) -> Iterator[str]:
    """Repository paths named in code (spans and blocks): `loadtests/bench.py`, `tests/core/`,
    `tests/core/test_fuzz_*.py`; a path under a top-level directory, or a relative file of a source
    kind. Not URLs, absolute paths, `./mydir`, `.venv/...` (made by make) or `~/...`."""
    top = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")} - _NOT_REPO
    top.add(".ci")
    code = [body for _, body in _blocks(text)] + _SPAN.findall(_prose(text))
    for token in re.findall(r"[\w.*/-]+", "\n".join(code)):
        if "/" not in token or token.startswith(("/", "./", "../", "~")):
            continue
        if token.split("/")[0] in top or token.endswith(_REPO_FILE):
            yield token


def test_every_repository_path_the_docs_name_exists() -> None:
    named = {doc: set(named_paths(doc.read_text())) for doc in DOCS}
    assert "pipe_relay/core/forms.py" in named[PROTOCOL], "the paths in code were not found"
    missing = [
        f"{doc.relative_to(ROOT)}: {path}"
        for doc, paths in named.items()
        for path in sorted(paths)
        if not (any(ROOT.glob(path)) if "*" in path else (ROOT / path).exists())
    ]
    assert not missing, "\n".join(missing)


def test_a_missing_path_is_caught() -> None:
    assert list(named_paths("Run `loadtests/no_such_bench.py`, then `tests/core/`.")) == [
        "loadtests/no_such_bench.py",
        "tests/core/",
    ]


def anchors(text: str) -> set[str]:
    """The anchors GitHub makes for a document's headings (a repeated one gets -1, -2...)."""
    seen: dict[str, int] = {}
    found = set()
    for heading in _HEADING.findall(_prose(text)):
        anchor = slug(heading)
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def test_every_relative_link_resolves_to_a_file_and_its_anchor() -> None:
    broken = []
    for doc in DOCS:
        for target in _LINK.findall(_prose(doc.read_text())):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            linked = (doc.parent / path).resolve() if path else doc
            if not linked.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and anchor not in anchors(linked.read_text()):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_readme_stays_a_short_guide() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines: move detail to docs/"


def test_the_readme_performance_table_is_the_newest_run() -> None:
    readme = README.read_text()
    assert with_block(readme, generated(PERFORMANCE.read_text())) == readme, (
        "README.md's performance table is not docs/performance.md's newest: "
        "run .venv/bin/python loadtests/readme_table.py --write"
    )


def test_the_performance_runs_are_dated_newest_first_each_with_its_command() -> None:
    found = runs(PERFORMANCE.read_text())
    assert len(found) >= 10
    dates = [run.date for run in found]
    assert dates == sorted(dates, reverse=True), f"runs out of order: {dates}"
    assert len({run.anchor for run in found}) == len(found), "two runs share a title"
    for run in found:
        assert run.command or "Command not recorded" in run.body, f"{run.heading}: no command"
