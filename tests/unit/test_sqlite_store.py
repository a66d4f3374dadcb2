"""The StateStore contract against SQLite, in memory and in a file, plus what only a file can show."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvguard.adapters.compact_audit import audit_document
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
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
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
        assert db.execute("SELECT event_id, done, lease_until, claimed_at, owner FROM claims ORDER BY event_id"
                          ).fetchall() == [("evt-1", 1, 0, None, ""), ("evt-2", 1, 0, None, "")]


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


def test_an_instant_is_ticked_once_and_the_same_in_any_zone() -> None:
    from datetime import UTC, timezone

    from kvguard.adapters import sqlite as adapter

    store = SQLiteStateStore(":memory:")
    at = datetime(2026, 11, 27, 10, 0, 0, 1, tzinfo=UTC)
    before = adapter._tick.cache_info()
    store.claim("evt-1", at, LEASE, "owner-1")
    store.renew_each(("evt-1",), "owner-1", at, LEASE)
    store.complete("evt-1", at, "owner-1")
    after = adapter._tick.cache_info()
    assert after.hits - before.hits >= 2, "the claim's time and lease end, ticked again by renewal and completion"
    in_paris = at.astimezone(timezone(timedelta(hours=1)))
    assert adapter._tick(in_paris) == adapter._tick(at) == 1_795_773_600_000_001
    assert adapter._untick(adapter._tick(in_paris)) == at
    with pytest.raises(ValueError, match="naive datetime"):
        adapter._tick(at.replace(tzinfo=None))
    with pytest.raises(ValueError, match="naive datetime"):  # a refusal is never kept
        adapter._tick(at.replace(tzinfo=None))


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


# A file as kvguard wrote it at version 1, before times were kept as ticks and per-event ids
# packed: every table exactly as that version created it.
SCHEMA_BEFORE_INTEGER_TIMES = """
CREATE TABLE claims (
    event_id     TEXT PRIMARY KEY,
    done         INTEGER NOT NULL,
    lease_until  TEXT NOT NULL,
    claimed_at   TEXT NOT NULL,
    completed_at TEXT,
    owner        TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE TABLE baselines (
    vault_key TEXT PRIMARY KEY,
    vault_id  TEXT NOT NULL,
    config    TEXT NOT NULL,
    etag      TEXT NOT NULL,
    deleted   INTEGER NOT NULL,
    updated   TEXT NOT NULL
);
CREATE TABLE audit (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT NOT NULL,
    vault_digest BLOB,
    vault_id     TEXT,
    at           TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    attempt      TEXT
);
CREATE INDEX audit_by_vault ON audit (vault_digest, at);
CREATE TABLE rejected (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    reason   TEXT NOT NULL,
    raw      TEXT NOT NULL,
    at       TEXT NOT NULL,
    event_id TEXT
);
CREATE TABLE findings (
    vault_key     TEXT NOT NULL,
    rule          TEXT NOT NULL,
    vault_id      TEXT NOT NULL,
    finding       TEXT NOT NULL,
    opened        TEXT NOT NULL,
    baseline_etag TEXT,
    PRIMARY KEY (vault_key, rule)
);
CREATE TABLE found_against (
    vault_key TEXT NOT NULL,
    etag      TEXT NOT NULL,
    config    BLOB NOT NULL,
    at        TEXT NOT NULL,
    PRIMARY KEY (vault_key, etag)
);
CREATE TABLE marks (
    series TEXT NOT NULL,
    key    BLOB NOT NULL,
    member TEXT NOT NULL,
    at     TEXT NOT NULL,
    PRIMARY KEY (series, key, at, member)
) WITHOUT ROWID;
CREATE INDEX audit_by_time ON audit (at);
CREATE INDEX rejected_by_time ON rejected (at);
CREATE TABLE intents (
    scope   TEXT NOT NULL,
    handler TEXT NOT NULL,
    intent  TEXT NOT NULL,
    at      TEXT NOT NULL,
    PRIMARY KEY (scope, handler)
);
CREATE TABLE outbox (
    key  TEXT PRIMARY KEY,
    item TEXT NOT NULL,
    at   TEXT NOT NULL
);
CREATE TABLE own_writes (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    resource_key   TEXT NOT NULL,
    resource_id    TEXT NOT NULL,
    operation      TEXT NOT NULL,
    at             TEXT NOT NULL,
    event_id       TEXT,
    request_id     TEXT,
    attempt        TEXT,
    voided         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX own_writes_by_resource ON own_writes (resource_key, operation, at);
CREATE INDEX own_writes_by_request ON own_writes (request_id);
CREATE INDEX own_writes_by_time ON own_writes (at);
"""
EVENT = "5f0c1d2e-3a4b-4c5d-8e6f-7a8b9c0d1e2f"
ATTEMPT = "9e8d7c6b5a4f43e2a1b0c9d8e7f6a5b4"
CALLER = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
VAULT_MEMBER = "00ff13a7c0de4b21"


def digest(key: str) -> bytes:
    return hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest()


def write_file_before_integer_times(path: Path) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.executescript(SCHEMA_BEFORE_INTEGER_TIMES)
        db.execute("INSERT INTO claims VALUES (?, 1, '', ?, ?, '')", (EVENT, stamp(T0), stamp(T0)))
        db.execute("INSERT INTO claims VALUES ('evt-held', 0, ?, ?, NULL, 'owner-b')", (stamp(T0 + LEASE), stamp(T0)))
        db.execute("INSERT INTO baselines VALUES (?, ?, ?, 'etag-1', 0, ?)",
                   (vault_key(VAULT), VAULT, json.dumps(vault_config(policies=2)), stamp(T0)))
        db.execute("INSERT INTO audit (seq, event_id, vault_digest, at, outcome, attempt) VALUES (41, ?, ?, ?, ?, ?)",
                   (EVENT, digest(vault_key(VAULT)), stamp(T0), audit_document(VAULT, {"outcome": "processed"}),
                    ATTEMPT))
        for series, key, member in (("caller_vaults", CALLER, VAULT_MEMBER),
                                    ("caller_writes", f"{vault_key(VAULT)}|{CALLER}", EVENT),
                                    ("grants", vault_key(VAULT), "principal:a|")):
            db.execute("INSERT INTO marks VALUES (?, ?, ?, ?)", (series, digest(key), member, stamp(T0)))
        db.execute("INSERT INTO intents VALUES (?, 'revert_access_policy', '{\"plan\": 1}', ?)",
                   (vault_key(VAULT), stamp(T0)))
        db.execute("INSERT INTO own_writes (resource_key, resource_id, operation, at, event_id, request_id, attempt)"
                   " VALUES (?, ?, ?, ?, ?, 'nonce-1', ?)",
                   (vault_key(VAULT), VAULT, POLICY_WRITE, stamp(T0), EVENT, ATTEMPT))
        db.execute("PRAGMA user_version = 1")
        db.commit()


def test_a_file_written_before_integer_times_is_upgraded_on_open_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    write_file_before_integer_times(path)
    store = SQLiteStateStore(path)
    try:
        assert store.claim(EVENT, T0 + timedelta(hours=1), LEASE, "owner-c") == "duplicate"
        assert store.claim("evt-held", T0 + timedelta(minutes=1), LEASE, "owner-c") == "in_progress"
        assert store.renew("evt-held", "owner-b", T0 + timedelta(minutes=1), LEASE) is True
        baseline = store.get_baseline(VAULT)
        assert baseline is not None and (baseline.config, baseline.updated) == (vault_config(policies=2), T0)
        assert store.list_audit(VAULT) == [AuditRecord(EVENT, VAULT, T0, {"outcome": "processed"})]
        assert store.audited(EVENT, VAULT, ATTEMPT) is True
        assert store.marks_since_each([
            MarkQuery("caller_vaults", CALLER, T0), MarkQuery("caller_writes", f"{VAULT}|{CALLER}", T0),
            MarkQuery("grants", VAULT, T0)]) == [[(VAULT_MEMBER, T0)], [(EVENT, T0)], [("principal:a|", T0)]]
        [pending] = store.pending_actions(vault_key(VAULT))
        assert (pending.intent, pending.at) == ({"plan": 1}, T0)
        assert store.match_own_write(VAULT, POLICY_WRITE, "nonce-1", since=T0, until=T0 + timedelta(seconds=1))
        store.append_audit(AuditRecord("evt-new", VAULT, T0 + timedelta(seconds=1), {"outcome": "processed"}))
    finally:
        store.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
        assert db.execute("SELECT typeof(event_id), typeof(lease_until), typeof(claimed_at), typeof(completed_at)"
                          " FROM claims ORDER BY done").fetchall() == [
            ("text", "integer", "integer", "null"), ("blob", "integer", "null", "integer")]
        assert db.execute("SELECT seq, typeof(event_id), typeof(at), typeof(attempt) FROM audit ORDER BY seq"
                          ).fetchall() == [(41, "blob", "integer", "blob"), (42, "text", "integer", "null")]
        assert {row for row in db.execute("SELECT typeof(member), typeof(at) FROM marks")} == {
            ("blob", "integer"), ("text", "integer")}
        names = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        assert {"audit_by_vault", "audit_by_time", "own_writes_by_request"} <= names
        assert not [name for name in names if name.endswith("_before_integer_times")]
    reopened = SQLiteStateStore(path)  # opening the upgraded file again changes nothing
    try:
        assert [r.event_id for r in reopened.list_audit(VAULT)] == [EVENT, "evt-new"]
        assert reopened.prune(T0 + timedelta(days=1)) == 8  # two claims, two records, three marks, the intent
    finally:
        reopened.close()


@given(st.one_of(st.text(), st.uuids().map(str), st.uuids().map(lambda u: u.hex), st.binary().map(bytes.hex),
                 st.uuids().map(lambda u: str(u).upper())))
def test_a_packed_id_is_read_back_exactly(text: str) -> None:
    """Whatever an event, an attempt or a mark names is read back as written: a packed form for
    the usual spellings, the text itself for any other (an upper-case UUID is not packed: it
    would come back lower-case)."""
    from kvguard.adapters import sqlite as adapter

    packed = adapter._packed(text)
    assert adapter._unpacked(packed) == text
    assert isinstance(packed, str) or len(packed) <= len(text) // 2 + 1


def test_per_event_ids_and_times_are_kept_compact(tmp_path: Path) -> None:
    store = SQLiteStateStore(tmp_path / "state.db")
    try:
        store.claim(EVENT, T0, LEASE, ATTEMPT)
        store.complete(EVENT, T0, ATTEMPT)
        store.append_audit(AuditRecord(EVENT, VAULT, T0, {"outcome": "processed"}, attempt=ATTEMPT))
        store.add_mark("caller_writes", f"{VAULT}|{CALLER}", EVENT, T0)
        assert store.marks_since("caller_writes", f"{VAULT}|{CALLER}", T0) == [(EVENT, T0)]
        assert store.audited(EVENT, VAULT, ATTEMPT) is True
    finally:
        store.close()
    with closing(sqlite3.connect(tmp_path / "state.db")) as db:
        assert db.execute("SELECT length(event_id), typeof(completed_at) FROM claims").fetchall() == [(17, "integer")]
        assert db.execute("SELECT length(event_id), length(attempt), typeof(at) FROM audit").fetchall() == [
            (17, 17, "integer")]
        assert db.execute("SELECT length(member), typeof(at) FROM marks").fetchall() == [(17, "integer")]
