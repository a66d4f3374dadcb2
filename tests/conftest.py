"""What every test shares: a console width that does not depend on the terminal pytest runs in.

rich takes the width from `COLUMNS` before the terminal's size, so the tables the commands print
are laid out the same in a terminal, under CI and with output captured. Tests of the width itself
set their own.

Property tests draw the same examples on every run (`derandomize`), so a run of `make test` passes
or fails on the code alone; `HYPOTHESIS_PROFILE=explore` draws new examples to look for new cases."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(autouse=True)
def _console_width(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("COLUMNS", "200")
    yield
