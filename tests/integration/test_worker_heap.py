"""The Functions worker's pipeline: built once, on real adapters, and what it holds frozen out of
the cyclic collector's sight (full collections then walk only what events leave behind)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvguard import runtime


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("KVGUARD_SQLITE_PATH", str(tmp_path / "state.db"))
    monkeypatch.setenv("KVGUARD_STATE_BACKEND", "sqlite")
    runtime.install(None)
    gc.unfreeze()
    try:
        yield
    finally:
        runtime.install(None)
        gc.unfreeze()


def test_the_worker_pipeline_is_built_once_and_frozen_with_everything_built_before_it(worker: None) -> None:
    assert gc.get_freeze_count() == 0
    pipeline = runtime.current()
    assert gc.get_freeze_count() > 0
    tracked = gc.get_objects()  # the collector's generations; frozen objects are not among them
    assert not any(o is pipeline for o in tracked)
    assert not any(o is pipeline.store for o in tracked)
    assert runtime.current() is pipeline
