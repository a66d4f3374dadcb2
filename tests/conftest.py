"""What every test shares: a console width that does not depend on the terminal pytest runs in.

rich takes the width from `COLUMNS` before the terminal's size, so the tables the commands print
are laid out the same in a terminal, under CI and with output captured. Tests of the width itself
set their own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _console_width(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("COLUMNS", "200")
    yield
