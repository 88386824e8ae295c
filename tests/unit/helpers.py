"""Assertions shared by the unit tests."""

from __future__ import annotations

import pytest


def assert_error(error_type: type[Exception], call, message: str, field: str | None) -> None:
    """``call()`` raises ``error_type`` whose text is exactly ``message`` and whose ``.field`` is ``field``."""
    with pytest.raises(error_type) as ei:
        call()
    assert str(ei.value) == message
    assert ei.value.field == field
