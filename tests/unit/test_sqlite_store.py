"""The StateStore contract against SQLite, in memory and in a file, plus what only a file can show."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.ids import vault_key
from kvguard.ports import AuditRecord, MarkQuery, OwnWrite
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


# A file as kvguard wrote it before the compact shapes (PRAGMA user_version 0): the tables whose
# shape changed, with their indexes, exactly as that version created them.
SCHEMA_BEFORE_COMPACT_SHAPES = """
CREATE TABLE claims (
    event_id     TEXT PRIMARY KEY,
    done         INTEGER NOT NULL,
    lease_until  TEXT NOT NULL,
    claimed_at   TEXT NOT NULL,
    completed_at TEXT,
    owner        TEXT NOT NULL DEFAULT ''
);
CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id  TEXT NOT NULL,
    vault_key TEXT,
    vault_id  TEXT,
    at        TEXT NOT NULL,
    outcome   TEXT NOT NULL
);
CREATE INDEX audit_by_vault ON audit (vault_key, at);
CREATE INDEX audit_by_time ON audit (at);
CREATE TABLE marks (
    series TEXT NOT NULL,
    key    TEXT NOT NULL,
    member TEXT NOT NULL,
    at     TEXT NOT NULL,
    PRIMARY KEY (series, key, member, at)
);
CREATE INDEX marks_by_time ON marks (series, key, at);
CREATE INDEX marks_by_age ON marks (at);
CREATE TABLE findings (
    vault_key TEXT NOT NULL,
    rule      TEXT NOT NULL,
    vault_id  TEXT NOT NULL,
    finding   TEXT NOT NULL,
    opened    TEXT NOT NULL,
    PRIMARY KEY (vault_key, rule)
);
"""
# An open finding as that version wrote it: the baseline it was found against embedded.
FINDING_BEFORE_COMPACT_SHAPES = {
    "rule": "KV-NET-01", "evidence": {"after": "Allow"}, "callerNamed": True,
    "baseline": {"etag": "etag-old", "config": vault_config(policies=3, seed=2)},
}


def stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def write_file_before_compact_shapes(path: Path, *, with_owner: bool = True) -> None:
    schema = SCHEMA_BEFORE_COMPACT_SHAPES
    if not with_owner:  # the oldest files: claims before they carried an owner token
        schema = schema.replace(",\n    owner        TEXT NOT NULL DEFAULT ''", "")
    owner = ", owner" if with_owner else ""
    with closing(sqlite3.connect(path)) as db:
        db.executescript(schema)
        db.execute(f"INSERT INTO claims (event_id, done, lease_until, claimed_at, completed_at{owner}) VALUES"
                   f" ('evt-done', 1, ?, ?, ?{', ?' if with_owner else ''})",
                   (stamp(T0 + LEASE), stamp(T0), stamp(T0), *(("owner-a",) if with_owner else ())))
        db.execute(f"INSERT INTO claims (event_id, done, lease_until, claimed_at{owner}) VALUES"
                   f" ('evt-held', 0, ?, ?{', ?' if with_owner else ''})",
                   (stamp(T0 + LEASE), stamp(T0), *(("owner-b",) if with_owner else ())))
        outcome = json.dumps({"outcome": "processed", "actions": [{"handler": "revert_access_policy",
                              "status": "applied", "before": {"permissions": ["get"]}, "after": None}]})
        db.execute("INSERT INTO audit (event_id, vault_key, vault_id, at, outcome) VALUES ('evt-done', ?, ?, ?, ?)",
                   (vault_key(VAULT), VAULT, stamp(T0), outcome))
        db.execute("INSERT INTO marks (series, key, member, at) VALUES ('grants', ?, 'principal:a|', ?)",
                   (vault_key(VAULT), stamp(T0)))
        db.execute("INSERT INTO marks (series, key, member, at) VALUES ('caller_writes', ?, 'evt-done', ?)",
                   (f"{vault_key(VAULT)}|caller-1", stamp(T0)))
        db.execute("INSERT INTO findings (vault_key, rule, vault_id, finding, opened) VALUES (?, 'KV-NET-01', ?, ?, ?)",
                   (vault_key(VAULT), VAULT, json.dumps(FINDING_BEFORE_COMPACT_SHAPES), stamp(T0)))
        db.commit()


@pytest.mark.parametrize("with_owner", [True, False], ids=["owner-column", "before-owner-tokens"])
def test_a_file_written_before_the_compact_shapes_is_upgraded_on_open_and_loses_nothing(
    tmp_path: Path, with_owner: bool
) -> None:
    path = tmp_path / "state.db"
    write_file_before_compact_shapes(path, with_owner=with_owner)
    store = SQLiteStateStore(path)
    try:
        assert store.claim("evt-done", T0 + timedelta(hours=1), LEASE, "owner-c") == "duplicate"
        assert store.claim("evt-held", T0 + timedelta(minutes=1), LEASE, "owner-c") == "in_progress"
        if with_owner:
            assert store.renew("evt-held", "owner-b", T0 + timedelta(minutes=1), LEASE) is True
        [record] = store.list_audit(VAULT.upper())
        assert (record.event_id, record.vault_id, record.at) == ("evt-done", VAULT, T0)
        assert record.outcome["actions"][0]["before"] == {"permissions": ["get"]}
        assert store.audited("evt-done", VAULT) is True
        assert store.marks_since("grants", VAULT, T0) == [("principal:a|", T0)]
        assert store.marks_since_each([MarkQuery("caller_writes", f"{VAULT}|caller-1", T0)]) == [[("evt-done", T0)]]
        [finding] = store.open_findings(VAULT)
        assert (finding.finding, finding.opened) == (FINDING_BEFORE_COMPACT_SHAPES, T0)
        store.append_audit(AuditRecord("evt-new", VAULT, T0 + timedelta(seconds=1), {"outcome": "processed"}))
        assert [r.event_id for r in store.list_audit(VAULT)] == ["evt-done", "evt-new"]
        assert store.prune(T0 + timedelta(days=1)) == 6  # two claims, two audit records, two marks
    finally:
        store.close()
    reopened = SQLiteStateStore(path)
    try:  # the old finding is current state: kept by retention, and refreshed into the new shape
        [finding] = reopened.open_findings(VAULT)
        assert reopened.open_finding(VAULT, "KV-NET-01", finding.finding, T0 + timedelta(days=2)) is False
        [refreshed] = reopened.open_findings(VAULT)
        assert refreshed.finding == FINDING_BEFORE_COMPACT_SHAPES
    finally:
        reopened.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
        assert db.execute("SELECT baseline_etag FROM findings").fetchall() == [("etag-old",)]
        names = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        assert "audit_by_vault" in names and not names & {"marks_by_time", "marks_by_age"}


def test_opening_an_upgraded_file_again_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    write_file_before_compact_shapes(path)
    SQLiteStateStore(path).close()
    again = SQLiteStateStore(path)
    try:
        assert [r.event_id for r in again.list_audit(VAULT)] == ["evt-done"]
        assert again.marks_since("grants", VAULT, T0) == [("principal:a|", T0)]
        assert again.claim("evt-done", T0, LEASE, "owner-c") == "duplicate"
    finally:
        again.close()


def test_a_finished_claim_keeps_no_owner_token_or_lease(tmp_path: Path) -> None:
    """Only the fence of an unfinished claim reads them; a finished claim is kept for its id alone."""
    store = SQLiteStateStore(tmp_path / "state.db")
    try:
        store.claim("evt-1", T0, LEASE, "owner-a")
        assert store.complete("evt-1", T0, "owner-a") is True
        store.complete("evt-2", T0)
    finally:
        store.close()
    with closing(sqlite3.connect(tmp_path / "state.db")) as db:
        assert db.execute("SELECT event_id, done, lease_until, owner FROM claims ORDER BY event_id").fetchall() == [
            ("evt-1", 1, "", ""), ("evt-2", 1, "", ""),
        ]


def test_audit_rows_are_compact_and_name_no_vault_in_clear(tmp_path: Path) -> None:
    outcome = {"event_id": "evt-1", "outcome": "processed", "reason": "no finding: the change is within policy",
               "vault": VAULT, "resource": VAULT, "risk": 0, "severity": "none", "findings": [], "actions": [],
               "explanation": [], "resolutions": []}
    store = SQLiteStateStore(tmp_path / "state.db")
    try:
        store.append_audit(AuditRecord("evt-1", VAULT, T0, outcome))
        assert store.list_audit(VAULT) == [AuditRecord("evt-1", VAULT, T0, outcome)]
    finally:
        store.close()
    with closing(sqlite3.connect(tmp_path / "state.db")) as db:
        (stored, vault_column), = db.execute("SELECT outcome, vault_id FROM audit").fetchall()
    assert vault_column is None and isinstance(stored, bytes)
    assert len(stored) < len(json.dumps(outcome)) / 3


def test_findings_name_their_baseline_and_its_configuration_is_written_once(tmp_path: Path) -> None:
    config = vault_config(policies=64, seed=3)
    store = SQLiteStateStore(tmp_path / "state.db")
    written: list[str] = []
    try:
        for rule in ("KV-NET-01", "KV-NET-02"):
            store.open_finding(VAULT, rule, {"rule": rule, "baseline": {"etag": "etag-1", "config": config}}, T0)
        store._db.set_trace_callback(written.append)
        for finding in store.open_findings(VAULT):  # refreshed as the pipeline does, with what it read
            store.open_finding(VAULT, finding.rule, finding.finding, T0 + timedelta(minutes=1))
        store._db.set_trace_callback(None)
    finally:
        store.close()
    assert not [sql for sql in written if "found_against" in sql]  # neither read nor written again
    with closing(sqlite3.connect(tmp_path / "state.db")) as db:
        rows = db.execute("SELECT finding, baseline_etag FROM findings").fetchall()
        kept = db.execute("SELECT vault_key, etag FROM found_against").fetchall()
    assert [etag for _, etag in rows] == ["etag-1", "etag-1"]
    assert all(len(finding) < 200 for finding, _ in rows)  # the configuration is not in the finding
    assert kept == [(vault_key(VAULT), "etag-1")]


# The ledger of own writes as kvguard kept it before entries carried their write's nonce: an entry
# was consumed by the first event of the identity for its resource and operation, whose event id
# and correlation id it then kept.
LEDGER_BEFORE_NONCES = """
CREATE TABLE own_writes (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    resource_key   TEXT NOT NULL,
    resource_id    TEXT NOT NULL,
    operation      TEXT NOT NULL,
    at             TEXT NOT NULL,
    event_id       TEXT,
    correlation_id TEXT
);
CREATE INDEX own_writes_by_resource ON own_writes (resource_key, operation, at);
CREATE INDEX own_writes_by_time ON own_writes (at);
"""
POLICY_WRITE = "microsoft.keyvault/vaults/accesspolicies/write"


def test_a_ledger_written_before_nonces_is_upgraded_and_its_entries_match_nothing(tmp_path: Path) -> None:
    """An open entry of the old shape would stand for any next write of the identity: after the
    upgrade it matches no event, while entries noted from then on match by their nonce."""
    path = tmp_path / "state.db"
    with closing(sqlite3.connect(path)) as db:
        db.executescript(LEDGER_BEFORE_NONCES)
        db.execute("INSERT INTO own_writes (resource_key, resource_id, operation, at) VALUES (?, ?, ?, ?)",
                   (vault_key(VAULT), VAULT, POLICY_WRITE, stamp(T0)))
        db.execute("INSERT INTO own_writes (resource_key, resource_id, operation, at, event_id, correlation_id)"
                   " VALUES (?, ?, ?, ?, 'evt-old', 'corr-old')", (vault_key(VAULT), VAULT, POLICY_WRITE, stamp(T0)))
        db.commit()
    store = SQLiteStateStore(path)
    try:
        later = T0 + timedelta(minutes=5)
        for old in ("evt-old", "corr-old", ""):
            assert not store.match_own_write(VAULT, POLICY_WRITE, old, since=T0, until=later)
        store.record_own_write(OwnWrite(VAULT, POLICY_WRITE, "nonce-1", T0, "evt-new", "attempt-1"))
        assert store.match_own_write(VAULT, POLICY_WRITE, "nonce-1", since=T0, until=later)
        assert store.prune_own_writes(T0 + timedelta(seconds=1)) == 3
    finally:
        store.close()
    SQLiteStateStore(path).close()  # opening the upgraded file again changes nothing


def test_an_instant_is_stamped_once_and_spelled_the_same_in_any_zone() -> None:
    from datetime import UTC, timezone

    from kvguard.adapters import sqlite as adapter

    store = SQLiteStateStore(":memory:")
    at = datetime(2026, 11, 27, 10, 0, 0, 1, tzinfo=UTC)
    before = adapter._stamp.cache_info()
    store.claim("evt-1", at, LEASE, "owner-1")
    store.renew_each(("evt-1",), "owner-1", at, LEASE)
    store.complete("evt-1", at, "owner-1")
    after = adapter._stamp.cache_info()
    assert after.hits - before.hits >= 2, "the claim's time and lease end, stamped again by renewal and completion"
    in_paris = at.astimezone(timezone(timedelta(hours=1)))
    assert adapter._stamp(in_paris) == adapter._stamp(at) == "2026-11-27T10:00:00.000001Z"
    with pytest.raises(ValueError, match="naive datetime"):
        adapter._stamp(at.replace(tzinfo=None))
    with pytest.raises(ValueError, match="naive datetime"):  # a refusal is never kept
        adapter._stamp(at.replace(tzinfo=None))


def test_an_audit_written_before_records_named_their_attempt_gains_the_column(tmp_path: Path) -> None:
    """A file whose audit has no attempt column opens, keeps its records (found by event alone)
    and records attempts from then on."""
    path = tmp_path / "state.db"
    store = SQLiteStateStore(path)
    store.append_audit(AuditRecord("evt-old", VAULT, T0, {}))
    store.close()
    with closing(sqlite3.connect(path)) as db:
        db.execute("ALTER TABLE audit DROP COLUMN attempt")
        db.commit()
    store = SQLiteStateStore(path)
    try:
        assert store.audited("evt-old", VAULT) is True
        assert store.audited("evt-old", VAULT, "attempt-1") is False
        store.append_audit(AuditRecord("evt-new", VAULT, T0, {}, attempt="attempt-1"))
        assert store.audited("evt-new", VAULT, "attempt-1") is True
    finally:
        store.close()


def test_marks_are_kept_once_and_an_older_files_index_of_their_age_is_dropped(tmp_path: Path) -> None:
    """A mark is all key: an index on its time held every mark a second time. Retention still
    finds the old ones."""
    path = tmp_path / "state.db"
    SQLiteStateStore(path).close()
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE INDEX marks_by_age ON marks (at)")
        db.commit()
    store = SQLiteStateStore(path)
    try:
        store.add_mark("grants", VAULT, "principal:a|", T0)
        store.add_mark("grants", VAULT, "principal:b|", T0 + timedelta(days=2))
        assert store.prune(T0 + timedelta(days=1)) == 1
        assert store.marks_since("grants", VAULT, T0) == [("principal:b|", T0 + timedelta(days=2))]
    finally:
        store.close()
    with closing(sqlite3.connect(path)) as db:
        indexes = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'"
                                                " AND tbl_name = 'marks'")]
    assert indexes == []
