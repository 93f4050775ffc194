# The error types' own data, pinned: a TransferError keeps why and what on its attributes.
# Invariant: pure and sync; every assertion is an exact value.
from __future__ import annotations

import pytest

from pipe_relay.errors import TransferError, TransferFailure


@pytest.mark.parametrize("failure", list(TransferFailure))
def test_transfer_error_keeps_its_failure_and_detail(failure: TransferFailure) -> None:
    error = TransferError(failure, "at byte 12")
    assert error.failure is failure
    assert error.detail == "at byte 12"
    assert str(error) == f"{failure.value}: at byte 12"
    assert repr(error) == f"TransferError({failure.name}, 'at byte 12')"


def test_transfer_error_detail_defaults_to_empty() -> None:
    error = TransferError(TransferFailure.SENDER_IDLE)
    assert error.failure is TransferFailure.SENDER_IDLE
    assert error.detail == ""
    assert str(error) == "the sender sent nothing for too long"
    assert repr(error) == "TransferError(SENDER_IDLE, '')"
