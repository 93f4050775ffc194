# Fuzz tests (hypothesis) of the body parsers: the chunked decoder and the multipart form extractor.
# Invariant: valid input split anywhere decodes exactly; broken input fails only with the parser's own error.
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipe_relay.core.forms import FormEvent, FormExtractor, PartData, PartEnd, PartStart
from pipe_relay.core.framing import ChunkedDecoder, Data, FramingError
from pipe_relay.errors import ErrorCode, PipeError
from tests.chunked_feeds import feed_pieces, wire_of
from tests.form_bodies import normalize
from tests.fuzzing import Chunked, Form, chunked_bodies, cuts, forms, fuzz_settings

AFTER = b"GET /next HTTP/1.1\r\n\r\n"
_KINDS = st.sampled_from([bytes, bytearray, memoryview])

# --- the chunked decoder ------------------------------------------------------------------------------


@fuzz_settings(130)
@given(st.data(), chunked_bodies(), _KINDS)
def test_a_valid_chunked_body_split_anywhere_decodes_to_its_payload(
    data: st.DataObject, chunked: Chunked, kind: type[Data]
) -> None:
    pieces = data.draw(cuts(chunked.body + AFTER))
    payload, leftover = feed_pieces(ChunkedDecoder(), [kind(piece) for piece in pieces])
    assert (payload, leftover) == (chunked.payload, AFTER)


@fuzz_settings(130)
@given(st.data(), chunked_bodies())
def test_a_valid_chunked_body_is_done_exactly_at_its_last_byte(data: st.DataObject, chunked: Chunked) -> None:
    cut = data.draw(st.integers(0, len(chunked.body) - 1))
    decoder = ChunkedDecoder()
    for piece in data.draw(cuts(chunked.body[:cut])):
        decoder.feed(piece)
        assert not decoder.done
    assert decoder.feed(chunked.body[cut:] + AFTER)[1] == len(chunked.body) - cut
    assert decoder.done


@fuzz_settings(130)
@given(st.data(), chunked_bodies())
def test_the_wire_a_chunked_receiver_gets_is_canonical_and_the_senders_own_when_minimal(
    data: st.DataObject, chunked: Chunked
) -> None:
    wire, decoder = wire_of(data.draw(cuts(chunked.body)))
    assert decoder.done
    if chunked.minimal:
        assert wire == chunked.body  # the sender's own bytes, whatever the reads were
    again = ChunkedDecoder()
    assert feed_pieces(again, [wire]) == (chunked.payload, b"")
    assert again.done
    assert wire_of([wire])[0] == wire  # canonical: no extension, no trailer; a decoder passes it on as it is


def _mutate(data: st.DataObject, body: bytes) -> bytes:
    """One random edit: a byte replaced, inserted or deleted, or a cut."""
    at = data.draw(st.integers(0, len(body)))
    edit = data.draw(st.sampled_from(["replace", "insert", "delete", "cut"]))
    byte = bytes([data.draw(st.sampled_from([0, 9, 10, 13, 32, 48, 59, 70, 103, 255]))])
    if edit == "replace":
        return body[:at] + byte + body[at + 1 :]
    if edit == "insert":
        return body[:at] + byte + body[at:]
    return body[:at] + body[at + 1 :] if edit == "delete" else body[:at]


def _feed_checked(decoder: ChunkedDecoder, piece: Data) -> int:
    """Feed one piece; check the spans and count the decoder reports; return the payload bytes."""
    spans, consumed = decoder.feed(piece)
    assert 0 <= consumed <= len(piece)
    assert consumed == len(piece) or decoder.done
    last = 0
    for start, stop in spans:
        assert last <= start < stop <= consumed
        last = stop
    return sum(stop - start for start, stop in spans)


@fuzz_settings(200)
@given(st.data(), st.one_of(st.binary(max_size=300), chunked_bodies().map(lambda c: c.body)), _KINDS)
def test_broken_chunked_framing_raises_framing_error_or_needs_more_data(
    data: st.DataObject, body: bytes, kind: type[Data]
) -> None:
    garbled = _mutate(data, body) if data.draw(st.booleans()) else body
    decoder = ChunkedDecoder()
    moved = 0
    try:
        for piece in data.draw(cuts(garbled)):
            if decoder.done:
                break
            moved += _feed_checked(decoder, kind(piece))
    except FramingError:
        assert not decoder.done
        return
    assert moved <= len(garbled)


@fuzz_settings(130)
@given(
    st.data(),
    st.binary(min_size=1, max_size=100),
    st.sampled_from([b"x", b"\n", b"5", b"\r", b";"]),
    chunked_bodies(),
)
def test_a_chunk_longer_than_its_size_is_a_framing_error(
    data: st.DataObject, chunk: bytes, extra: bytes, rest: Chunked
) -> None:
    broken = b"%x\r\n" % len(chunk) + chunk + extra + b"\r\n" + rest.body
    decoder = ChunkedDecoder()
    try:
        for piece in data.draw(cuts(broken)):
            decoder.feed(piece)
    except FramingError:
        return
    raise AssertionError(f"accepted {broken!r}")


# --- the multipart form extractor ------------------------------------------------------------------------


def expected_events(form: Form) -> list[FormEvent]:
    part = form.content
    assert part is not None
    start = PartStart(part.content_type, part.disposition)
    return [start, PartData(part.value), PartEnd()] if part.value else [start, PartEnd()]


def extract(content_type: str, pieces: list[bytes]) -> list[FormEvent]:
    extractor = FormExtractor(content_type)
    events: list[FormEvent] = []
    for piece in pieces:
        events += extractor.feed(piece)
    events += extractor.end()
    return normalize(events)


@fuzz_settings(130)
@given(st.data(), forms())
def test_a_form_split_anywhere_gives_the_same_events_as_whole(data: st.DataObject, form: Form) -> None:
    whole = extract(form.content_type, [form.body])
    assert whole == expected_events(form)
    assert extract(form.content_type, data.draw(cuts(form.body, max_cuts=12))) == whole


def _invalid_upload(content_type: str, pieces: list[bytes]) -> PipeError | None:
    """None if the form was accepted; the PipeError if not (any other exception fails the test)."""
    try:
        extract(content_type, pieces)
    except PipeError as error:
        assert error.code is ErrorCode.INVALID_UPLOAD and error.status == 400, error
        assert "\n" not in error.message
        return error
    return None


@fuzz_settings(100)
@given(st.data(), forms())
def test_a_form_cut_before_its_closing_boundary_is_an_invalid_upload(data: st.DataObject, form: Form) -> None:
    cut = data.draw(st.integers(0, form.closed_at - 1))
    assert _invalid_upload(form.content_type, data.draw(cuts(form.body[:cut]))) is not None


@fuzz_settings(100)
@given(st.data(), forms(), st.sampled_from(["x", "-", "--", "0"]))
def test_a_form_under_another_boundary_is_an_invalid_upload(
    data: st.DataObject, form: Form, odd: str
) -> None:
    declared = data.draw(st.sampled_from([form.boundary + odd, odd + form.boundary, form.boundary[:-1]]))
    if not declared or declared == form.boundary:
        return
    content_type = f'multipart/form-data; boundary="{declared}"'
    assert _invalid_upload(content_type, data.draw(cuts(form.body))) is not None


@fuzz_settings(130)
@given(
    st.data(),
    forms(max_parts=2, max_value=40),
    st.one_of(
        st.none(),
        st.text(st.characters(max_codepoint=0xFF), max_size=40).map(lambda v: "multipart/form-data; " + v),
    ),
)
def test_a_garbled_form_is_accepted_or_an_invalid_upload_never_another_error(
    data: st.DataObject, form: Form, content_type: str | None
) -> None:
    body = form.body
    for _ in range(data.draw(st.integers(1, 3))):
        body = _mutate(data, body)
    _invalid_upload(content_type or form.content_type, data.draw(cuts(body)))
