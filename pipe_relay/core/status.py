# Every line a sender can read on its status stream ([INFO], [WARN], [ERROR]), each text in one place.
# Invariant: a line is one line of text without its newline; the transport frames and ends the stream.
from __future__ import annotations

from ..errors import TransferFailure


def waiting(n: int) -> str:
    return f"[INFO] Waiting for {n} receiver(s) to connect..."


def still_waiting(n: int) -> str:
    return f"[INFO] Still waiting for {n} receiver(s)..."


def connected(count: int, n: int) -> str:
    return f"[INFO] {count} of {n} receiver(s) connected."


def streaming(n: int) -> str:
    return f"[INFO] Streaming to {n} receiver(s)..."


UPLOAD_COMPLETE = "[INFO] Upload complete."
TRANSFER_COMPLETE = "[INFO] Transfer complete."


def receiver_dropped(alive: int) -> str:
    return f"[WARN] A receiver disconnected; streaming to {alive} receiver(s)."


def timed_out_waiting(n: int) -> str:
    return f"[ERROR] Timed out waiting for {n} receiver(s)."


def transfer_failed(failure: TransferFailure, detail: str) -> str:
    """Why a transfer stopped, for a sender that is still there; built from the failure's own
    text (the one receivers read in their 502), so each reason is written once."""
    if failure is TransferFailure.BAD_UPLOAD:
        return detail  # the form's own PipeError line, `[ERROR] Invalid upload: ...`
    if failure is TransferFailure.BAD_FRAMING:
        return f"[ERROR] Malformed request body: {detail}."
    if failure is TransferFailure.SENDER_IDLE:
        return f"[ERROR] Timed out: {failure.value}."
    return f"[ERROR] {failure.value[0].upper()}{failure.value[1:]}."
