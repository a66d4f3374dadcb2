"""The StateStore contract against SQLite, in memory and in a file, plus what only a file can show."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from kvguard.adapters.sqlite import SQLiteStateStore
from tests.contract.statestore_contract import LEASE, T0, VAULT, StateStoreContract, vault_config


class TestInMemory(StateStoreContract):
    @pytest.fixture
    def store(self) -> Iterator[SQLiteStateStore]:
        store = SQLiteStateStore()
        yield store
        store.close()


class TestFile(StateStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SQLiteStateStore]:
        store = SQLiteStateStore(tmp_path / "state.db")
        yield store
        store.close()


def test_two_stores_on_one_file_share_claims_and_baselines(tmp_path: Path) -> None:
    one = SQLiteStateStore(tmp_path / "state.db")
    two = SQLiteStateStore(str(tmp_path / "state.db"))
    try:
        assert one.claim("evt-1", T0, LEASE) == "claimed"
        assert two.claim("evt-1", T0, LEASE) == "in_progress"
        one.complete("evt-1", T0)
        assert two.claim("evt-1", T0, LEASE) == "duplicate"
        etag = two.put_baseline(VAULT, vault_config(), None, now=T0)
        baseline = one.get_baseline(VAULT.lower())
        assert baseline is not None
        assert baseline.etag == etag
    finally:
        one.close()
        two.close()


def test_state_survives_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    first = SQLiteStateStore(path)
    first.put_baseline(VAULT, vault_config(policies=3), None, now=T0)
    first.add_mark("remediations", VAULT, "evt-1", T0)
    first.close()
    reopened = SQLiteStateStore(path)
    try:
        baseline = reopened.get_baseline(VAULT)
        assert baseline is not None
        assert baseline.config == vault_config(policies=3)
        assert reopened.marks_since("remediations", VAULT, T0) == [("evt-1", T0)]
    finally:
        reopened.close()


def test_a_file_database_uses_the_write_ahead_log(tmp_path: Path) -> None:
    SQLiteStateStore(tmp_path / "state.db").close()
    with closing(sqlite3.connect(tmp_path / "state.db")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_batch_that_fails_leaves_nothing_behind(tmp_path: Path) -> None:
    store = SQLiteStateStore(tmp_path / "state.db")
    with pytest.raises(RuntimeError), store.batch():
        store.claim("evt-1", T0, LEASE)
        store.add_mark("grants", VAULT, "principal:a|", T0)
        raise RuntimeError("the event failed half way")
    assert store.claim("evt-1", T0, LEASE) == "claimed"  # the claim was rolled back too
    assert store.marks_since("grants", VAULT, T0) == []
