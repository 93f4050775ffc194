# Tests for the catalogue of status lines a sender reads: the exact texts docs/protocol.md promises.
from __future__ import annotations

import pytest

from pipe_relay.core import status
from pipe_relay.errors import TransferFailure


def test_the_lines_of_a_fan_out() -> None:
    assert [
        status.waiting(3),
        status.connected(1, 3),
        status.still_waiting(3),
        status.streaming(3),
        status.UPLOAD_COMPLETE,
        status.TRANSFER_COMPLETE,
    ] == [
        "[INFO] Waiting for 3 receiver(s) to connect...",
        "[INFO] 1 of 3 receiver(s) connected.",
        "[INFO] Still waiting for 3 receiver(s)...",
        "[INFO] Streaming to 3 receiver(s)...",
        "[INFO] Upload complete.",
        "[INFO] Transfer complete.",
    ]


def test_warnings_and_errors() -> None:
    assert status.receiver_dropped(2) == "[WARN] A receiver disconnected; streaming to 2 receiver(s)."
    assert status.timed_out_waiting(1) == "[ERROR] Timed out waiting for 1 receiver(s)."


@pytest.mark.parametrize(
    ("failure", "detail", "line"),
    [
        (TransferFailure.SENDER_IDLE, "", "[ERROR] Timed out: the sender sent nothing for too long."),
        (
            TransferFailure.BAD_FRAMING,
            "invalid chunk size",
            "[ERROR] Malformed request body: invalid chunk size.",
        ),
        (TransferFailure.BAD_UPLOAD, "[ERROR] Invalid upload: cut.", "[ERROR] Invalid upload: cut."),
        (TransferFailure.RECEIVERS_GONE, "", "[ERROR] All receivers disconnected."),
        (TransferFailure.SENDER_GONE, "", "[ERROR] The sender disconnected before the end of its body."),
    ],
)
def test_every_failure_has_its_line(failure: TransferFailure, detail: str, line: str) -> None:
    assert status.transfer_failed(failure, detail) == line
