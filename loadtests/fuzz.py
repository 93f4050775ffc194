# Coverage-guided fuzzing (atheris) of the sans-IO parsers: targets, heads, header policy, chunked, forms.
# Invariant: bounded (--seconds, --max-len); a crash = any error but PipeError/FramingError, or a bad header.
"""Usage:

    make fuzz ARGS="--seconds 300"
    .venv/bin/python -m loadtests.fuzz --seconds 60 [libFuzzer flags, e.g. a corpus folder]

Each input's first byte picks a parser; the rest is its input (split at input-chosen points for
the incremental parsers). Anything but the parser's own rejection, a header value with a control
character, a script-capable Content-Type or a decoder that reports impossible spans is a crash:
libFuzzer stops and writes the input to `crash-<sha1>` (rerun it: `python -m loadtests.fuzz FILE`).
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from pipe_relay.core import forms, framing, headers, heads, paths
    from pipe_relay.core.routing import Request
    from pipe_relay.errors import ErrorCode, PipeError

from tests.fuzzing import CTL, script_capable

MAX_N = 256


def _target(data: atheris.FuzzedDataProvider) -> None:
    raw = data.ConsumeBytes(data.remaining_bytes()).decode("latin-1")
    try:
        target = paths.parse_target(raw, max_path_length=64)
        paths.parse_n(target, max_receivers=MAX_N)
    except PipeError as error:
        assert "\n" not in error.message and "\r" not in error.message, error
        return
    assert target.key.startswith("/") and len(target.key) <= 64, target


def _head(data: atheris.FuzzedDataProvider) -> None:
    version = data.ConsumeUnicodeNoSurrogates(4)
    lines = data.ConsumeIntInRange(0, 200)
    pairs = [
        (data.ConsumeUnicodeNoSurrogates(20).lower(), data.ConsumeUnicodeNoSurrogates(30)) for _ in range(4)
    ]
    raw = data.ConsumeBytes(data.remaining_bytes())
    folded = heads.has_obs_fold(raw)
    assert folded == heads.has_obs_fold(memoryview(raw))
    with contextlib.suppress(PipeError):
        heads.check_head(Request("PUT", "/x", tuple(pairs), version), header_lines=lines, folded=folded)


def _policy(data: atheris.FuzzedDataProvider) -> None:
    def text() -> str | None:
        return (
            data.ConsumeBytes(data.ConsumeIntInRange(0, 120)).decode("latin-1")
            if data.ConsumeBool()
            else None
        )

    names = ["content-type", "content-disposition", "content-length", "transfer-encoding", "x-piping"]
    pairs = [(data.PickValueInList(names), text() or "") for _ in range(data.ConsumeIntInRange(0, 6))]
    part = (text(), text()) if data.ConsumeBool() else None
    info = headers.body_info(pairs, multipart_part=part)
    download = data.PickValueInList([None, True, False])
    filename = data.ConsumeUnicodeNoSurrogates(60) if data.ConsumeBool() else None
    out = headers.receiver_headers(
        info, origin=text(), download=download, filename=filename, framing_headers=[("Content-Length", "1")]
    )
    for name, value in out:
        assert CTL.search(value) is None, (name, value)
        value.encode("latin-1")
    assert not script_capable(info.content_type.split(";", 1)[0]), info.content_type
    head = framing.render_head("1.1", 200, out)
    assert head.count(b"\r\n") == len(out) + 2 and head.count(b"\n") == head.count(b"\r\n"), head


def _pieces(data: atheris.FuzzedDataProvider) -> list[bytes]:
    cuts = [data.ConsumeIntInRange(1, 64) for _ in range(data.ConsumeIntInRange(0, 8))]
    body = data.ConsumeBytes(data.remaining_bytes())
    pieces, at = [], 0
    for size in cuts:
        pieces.append(body[at : at + size])
        at += size
    return [*pieces, body[at:]]


def _chunked(data: atheris.FuzzedDataProvider) -> None:
    decoder = framing.ChunkedDecoder()
    try:
        for piece in _pieces(data):
            if decoder.done:
                return
            spans, consumed = decoder.feed(piece)
            assert 0 <= consumed <= len(piece) and (consumed == len(piece) or decoder.done)
            assert all(0 <= a < b <= consumed for a, b in spans), (spans, consumed)
    except framing.FramingError:
        pass


def _form(data: atheris.FuzzedDataProvider) -> None:
    content_type = "multipart/form-data; " + data.ConsumeBytes(data.ConsumeIntInRange(0, 80)).decode(
        "latin-1"
    )
    try:
        extractor = forms.FormExtractor(content_type)
        for piece in _pieces(data):
            extractor.feed(piece)
        extractor.end()
    except PipeError as error:
        assert error.code is ErrorCode.INVALID_UPLOAD, error


PARSERS = [_target, _head, _policy, _chunked, _form]


def one_input(raw: bytes) -> None:
    data = atheris.FuzzedDataProvider(raw)
    PARSERS[data.ConsumeIntInRange(0, len(PARSERS) - 1)](data)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=60, help="stop after this long (default 60)")
    parser.add_argument("--max-len", type=int, default=4096, help="largest input in bytes (default 4096)")
    args, libfuzzer = parser.parse_known_args()
    flags = [f"-max_total_time={args.seconds}", f"-max_len={args.max_len}", "-rss_limit_mb=1024"]
    atheris.Setup([sys.argv[0], *flags, *libfuzzer], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
