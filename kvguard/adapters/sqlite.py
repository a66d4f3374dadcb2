"""The StateStore on SQLite: shared state for local runs, replay and tests.

One file (or `:memory:`) holds every concern in its own table. A store object owns one
connection guarded by a lock, so threads of one process may share it; several store objects (or
processes) on the same file coordinate through SQLite's own locking — every read-modify-write runs
in a `BEGIN IMMEDIATE` transaction. Vault ids are stored under `vault_key` and keep their spelling
for display. Times are stored as microseconds since the epoch in UTC (`_tick`), which sort like
the times themselves.

What grows with every event is kept compact: audit outcomes deflated against a preset dictionary
(`kvguard.adapters.compact_audit`); mark keys (with their series) and the audit's vault keys as
16-byte digests (they are looked up, never listed); event ids, attempt tokens and mark members in
their usual spellings as their bytes (`_packed`); marks without an index of their age (retention
scans them); claims without a rowid, and finished ones without owner, lease or claim time.
Open findings name the configuration they were found against by ETag (`found_against`). A file
written before these shapes is upgraded when a store opens it (`PRAGMA user_version`).
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from kvguard.adapters import found_against
from kvguard.adapters.compact_audit import audit_document, audit_fields
from kvguard.ids import vault_key
from kvguard.ports import (
    AuditRecord,
    Baseline,
    ClaimResult,
    ConcurrencyError,
    MarkQuery,
    OpenFinding,
    OutboxItem,
    OwnWrite,
    PendingAction,
    RejectedPayload,
    TransientError,
    VaultState,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS claims (
    event_id     BLOB PRIMARY KEY,
    done         INTEGER NOT NULL,
    lease_until  INTEGER NOT NULL,
    claimed_at   INTEGER,
    completed_at INTEGER,
    owner        TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS baselines (
    vault_key TEXT PRIMARY KEY,
    vault_id  TEXT NOT NULL,
    config    TEXT NOT NULL,
    etag      TEXT NOT NULL,
    deleted   INTEGER NOT NULL,
    updated   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     BLOB NOT NULL,
    vault_digest BLOB,
    vault_id     TEXT,
    at           INTEGER NOT NULL,
    outcome      TEXT NOT NULL,
    attempt      BLOB
);
CREATE INDEX IF NOT EXISTS audit_by_vault ON audit (vault_digest, at);
CREATE TABLE IF NOT EXISTS rejected (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    reason   TEXT NOT NULL,
    raw      TEXT NOT NULL,
    at       INTEGER NOT NULL,
    event_id TEXT
);
CREATE TABLE IF NOT EXISTS findings (
    vault_key     TEXT NOT NULL,
    rule          TEXT NOT NULL,
    vault_id      TEXT NOT NULL,
    finding       TEXT NOT NULL,
    opened        INTEGER NOT NULL,
    baseline_etag TEXT,
    PRIMARY KEY (vault_key, rule)
);
CREATE TABLE IF NOT EXISTS found_against (
    vault_key TEXT NOT NULL,
    etag      TEXT NOT NULL,
    config    BLOB NOT NULL,
    at        INTEGER NOT NULL,
    PRIMARY KEY (vault_key, etag)
);
CREATE TABLE IF NOT EXISTS marks (
    key    BLOB NOT NULL,
    member BLOB NOT NULL,
    at     INTEGER NOT NULL,
    PRIMARY KEY (key, at, member)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS audit_by_time ON audit (at);
CREATE INDEX IF NOT EXISTS rejected_by_time ON rejected (at);
CREATE TABLE IF NOT EXISTS intents (
    scope   TEXT NOT NULL,
    handler TEXT NOT NULL,
    intent  TEXT NOT NULL,
    at      INTEGER NOT NULL,
    PRIMARY KEY (scope, handler)
);
CREATE TABLE IF NOT EXISTS outbox (
    key  TEXT PRIMARY KEY,
    item TEXT NOT NULL,
    at   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS own_writes (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    resource_key   TEXT NOT NULL,
    resource_id    TEXT NOT NULL,
    operation      TEXT NOT NULL,
    at             INTEGER NOT NULL,
    event_id       TEXT,
    request_id     TEXT,
    attempt        TEXT,
    voided         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS own_writes_by_resource ON own_writes (resource_key, operation, at);
CREATE INDEX IF NOT EXISTS own_writes_by_request ON own_writes (request_id);
CREATE INDEX IF NOT EXISTS own_writes_by_time ON own_writes (at);
"""


# PRAGMA user_version of a file in today's shapes; an older file is upgraded when a store opens
# it. Files of version 0 were written before the compact shapes: claims with a rowid (and, the
# oldest, without an owner column), mark keys and audit vault keys as text
# (`_upgrade_to_compact_shapes`). Files of version 1 keep their times as text and their event
# ids, attempt tokens and mark members as text (`_upgrade_to_integer_times`).
_COMPACT_SHAPES = 1
_INTEGER_TIMES = 2

# The columns `_upgrade_to_integer_times` converts: times, and ids kept for every event.
_TIME_COLUMNS = {
    "claims": ("lease_until", "claimed_at", "completed_at"), "baselines": ("updated",), "audit": ("at",),
    "rejected": ("at",), "findings": ("opened",), "found_against": ("at",), "marks": ("at",), "intents": ("at",),
    "outbox": ("at",), "own_writes": ("at",),
}
_PACKED_COLUMNS = {"claims": ("event_id",), "audit": ("event_id", "attempt"), "marks": ("member",)}


def _key_digest(key: str) -> bytes:
    """What mark keys and the audit's vault keys are stored as: 16 bytes where a vault id is about
    130 characters. Keys are only looked up, never listed, so their text is not needed back."""
    return hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest()


def _mark_key(series: str, key_digest: bytes) -> bytes:
    """A mark's series and key as one 16-byte digest: both are only ever looked up together (and
    retention finds marks by age alone), so the series' name need not be kept in every mark."""
    return hashlib.blake2b(series.encode("utf-8") + b"\x00" + key_digest, digest_size=16).digest()


def _series_key(series: str, key: str) -> bytes:
    """What a mark of `series` under `key` is kept and looked up by."""
    return _mark_key(series, _key_digest(vault_key(key)))


def _with_upgrade_functions(db: sqlite3.Connection) -> None:
    """The conversions the upgrades call from their statements."""
    db.create_function("kvguard_key_digest", 1, _key_digest, deterministic=True)
    db.create_function("kvguard_mark_key", 2, _mark_key, deterministic=True)
    db.create_function("kvguard_ticked", 1, _ticked, deterministic=True)
    db.create_function("kvguard_packed", 1, _packed_column, deterministic=True)


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    """The column names `table` has in this file (what an upgrade adds depends on them)."""
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def _upgrade_to_compact_shapes(db: sqlite3.Connection) -> None:
    """A file of version 0 in today's shapes, in the caller's transaction: claims without a rowid
    (finished ones without their owner token and lease), mark keys and audit vault keys as
    digests, findings with a column for the ETag they name. Open findings, baselines and the
    audit's outcomes are kept as they are: audit rows in the old text shape and findings that embed
    their baseline are read as they are (`compact_audit.audit_fields`, `found_against`)."""
    owner = "owner" if "owner" in _columns(db, "claims") else "''"
    db.execute("ALTER TABLE claims RENAME TO claims_before_compact")
    db.execute(_statement("claims"))
    db.execute(
        "INSERT INTO claims (event_id, done, lease_until, claimed_at, completed_at, owner)"
        " SELECT event_id, done, CASE WHEN done THEN '' ELSE lease_until END, claimed_at, completed_at,"
        f" CASE WHEN done THEN '' ELSE {owner} END FROM claims_before_compact"
    )
    db.execute("DROP TABLE claims_before_compact")
    if _has_table(db, "marks"):
        db.execute("DROP INDEX IF EXISTS marks_by_time")
        db.execute("DROP INDEX IF EXISTS marks_by_age")
        db.execute("ALTER TABLE marks RENAME TO marks_before_compact")
        db.execute(_statement("marks"))
        db.execute("INSERT OR IGNORE INTO marks (key, member, at)"
                   " SELECT kvguard_mark_key(series, kvguard_key_digest(key)), member, at FROM marks_before_compact")
        db.execute("DROP TABLE marks_before_compact")
    if _has_table(db, "findings"):
        db.execute("ALTER TABLE findings ADD COLUMN baseline_etag TEXT")
    if _has_table(db, "audit"):
        db.execute("ALTER TABLE audit RENAME COLUMN vault_key TO vault_digest")
        db.execute("UPDATE audit SET vault_digest = kvguard_key_digest(vault_digest) WHERE vault_digest IS NOT NULL")


def _upgrade_own_writes(db: sqlite3.Connection) -> None:
    """A ledger written before entries carried their write's nonce: its entries gain the columns
    (empty, so they match nothing) and lose the id of the event that consumed them, which the
    `event_id` column now holds the event an entry was written for in place of."""
    if not _has_table(db, "own_writes"):
        return
    if "request_id" in _columns(db, "own_writes"):
        return
    db.execute("ALTER TABLE own_writes ADD COLUMN request_id TEXT")
    db.execute("ALTER TABLE own_writes ADD COLUMN attempt TEXT")
    db.execute("ALTER TABLE own_writes ADD COLUMN voided INTEGER NOT NULL DEFAULT 0")
    db.execute("UPDATE own_writes SET event_id = NULL")


def _upgrade_to_integer_times(db: sqlite3.Connection) -> None:
    """A file of version 1 (or one just upgraded from 0) in today's shapes, in the caller's
    transaction: every table the file has is written again under today's statement, its times as
    ticks and its per-event ids packed (the declared types change, and a column declared as text
    would keep a number as text). Its indexes go with the old table and are made again by the
    schema; an audit keeps its sequence numbers. A mark's series goes into its key's digest."""
    for table in _TIME_COLUMNS:
        if not _has_table(db, table):
            continue
        kept = _columns(db, table)
        db.execute(f"ALTER TABLE {table} RENAME TO {table}_before_integer_times")
        db.execute(_statement(table))
        columns = [column for column in _columns(db, table) if column in kept]

        def converted(column: str, table: str = table, kept: set[str] = kept) -> str:
            if column in _TIME_COLUMNS[table]:
                return f"kvguard_ticked({column})"
            if (table, column) == ("marks", "key") and "series" in kept:
                return "kvguard_mark_key(series, key)"
            return f"kvguard_packed({column})" if column in _PACKED_COLUMNS.get(table, ()) else column

        db.execute(f"INSERT INTO {table} ({', '.join(columns)})"
                   f" SELECT {', '.join(map(converted, columns))} FROM {table}_before_integer_times")
        db.execute(f"DROP TABLE {table}_before_integer_times")
    if _has_table(db, "claims"):
        db.execute("UPDATE claims SET claimed_at = NULL WHERE done = 1")


def _upgrade_audit(db: sqlite3.Connection) -> None:
    """An audit written before records named the attempt that wrote them gains the column (empty:
    an intent left behind by such a record is judged by its event alone, as it was written)."""
    if _has_table(db, "audit") and "attempt" not in _columns(db, "audit"):
        db.execute("ALTER TABLE audit ADD COLUMN attempt TEXT")


def _statement(table: str) -> str:
    """The CREATE TABLE statement of `table` in `_SCHEMA`."""
    start = _SCHEMA.index(f"CREATE TABLE IF NOT EXISTS {table} (")
    return _SCHEMA[start:_SCHEMA.index(";\n", start)]


# A stored configuration that no open finding names (what closing and retention remove).
_UNNAMED = ("NOT EXISTS (SELECT 1 FROM findings WHERE findings.vault_key = found_against.vault_key"
            " AND findings.baseline_etag = found_against.etag)")
_ZERO = timedelta(0)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_UUID_FORM, _HEX_FORM = b"\x01", b"\x02"
_LOWER_HEX = re.compile("[0-9a-f]+")
_UUID_TEXT = re.compile("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ROUNDS = 8  # claims attempted again when the row went away between the attempt and its read
_COMPOUND_BRANCHES = 100  # SELECTs per UNION ALL, well inside SQLite's limit of 500
_FIRST_MARKS = 3  # `load`'s part of the rows answering its first series of marks


# A claim's upsert: a new row, or an unfinished claim whose lease has run out taken over.
_TAKE_OVER = ("ON CONFLICT (event_id) DO UPDATE SET lease_until = excluded.lease_until,"
              " claimed_at = excluded.claimed_at, owner = excluded.owner"
              " WHERE claims.done = 0 AND claims.lease_until <= excluded.claimed_at")


class _Renewal(NamedTuple):
    """A renewal of `owner`'s claims of `ids` until `until` (ticks), deferred to its batch's end."""

    ids: tuple[str, ...]
    owner: str
    until: int


def _held_by_owner(count: int) -> str:
    """The unfinished claims of `count` ids, when one owner holds every one of them: the
    uncorrelated count is computed once, before any row changes, so a statement with this
    condition changes all of them or none."""
    marks = ", ".join("?" * count)
    held = "owner = ? AND done = 0 AND lease_until <> 0"  # no lease: let go of, held by nobody
    return (f"event_id IN ({marks}) AND {held}"
            f" AND (SELECT COUNT(*) FROM claims WHERE event_id IN ({marks}) AND {held}) = {count}")


def _held_by_owner_params(ids: tuple[str, ...], owner: str) -> tuple[str | bytes, ...]:
    keys = tuple(_packed(event_id) for event_id in ids)
    return (*keys, owner, *keys, owner)


def _utc(moment: datetime) -> datetime:
    offset = moment.utcoffset()
    if offset == _ZERO:  # already UTC (whichever tzinfo object says so)
        return moment
    if offset is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: the state store takes timezone-aware times only")
    return moment.astimezone(UTC)


@lru_cache(maxsize=256)
def _tick(moment: datetime) -> int:
    """Microseconds since the epoch in UTC: eight bytes where the text of the instant took 27, in
    the order of the instants. Kept per instant: one event stamps the same few (its time, its
    leases' end, its history windows) about ten times, and an instant spelled in another zone is
    equal, and hashes equal, to its UTC self."""
    return (_utc(moment) - _EPOCH) // _MICROSECOND


def _untick(ticks: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ticks)


@lru_cache(maxsize=256)
def _packed(text: str) -> str | bytes:
    """An id as it is kept where one is kept for every event (claims, audit records, marks): a
    UUID in its usual spelling (an Event Grid event id) as its 16 bytes and lower-case hex of
    even length (an attempt token, a vault's digest in a caller's marks) as its bytes, each behind
    a byte naming the form; any other text as it is. `_unpacked` gives the text back exactly.
    Kept per id: one event packs its id for its claim, its renewal, its completion and its record."""
    if _UUID_TEXT.fullmatch(text):
        return _UUID_FORM + bytes.fromhex(text.replace("-", ""))
    if text and not len(text) % 2 and _LOWER_HEX.fullmatch(text):
        return _HEX_FORM + bytes.fromhex(text)
    return text


def _unpacked(value: str | bytes) -> str:
    if isinstance(value, str):
        return value
    form, digits = value[:1], value[1:].hex()
    if form == _UUID_FORM and len(digits) == 32:
        return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
    if form == _HEX_FORM:
        return digits
    raise ValueError(f"stored id in an unknown form (first byte {form!r})")


def _ticked(value: str | int | None) -> int | None:
    """A time as an earlier file kept it (fixed-width UTC text, `2026-11-27T10:00:00.000000Z`; an
    empty lease as '') in today's ticks: the upgrade's conversion, called by SQLite."""
    if not isinstance(value, str):
        return value
    return _tick(datetime.fromisoformat(value)) if value else 0


def _packed_column(value: str | bytes | None) -> str | bytes | None:
    """An id an earlier file kept as text, packed (the upgrade's conversion, called by SQLite)."""
    return _packed(value) if isinstance(value, str) else value


def _json_default(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _to_json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, default=_json_default, ensure_ascii=False, separators=(",", ":"))


def _decoded_on_use(text: str) -> found_against.ReadOnFirstUse:
    """A stored JSON object decoded on first use (a baseline's configuration, a finding)."""
    return found_against.ReadOnFirstUse(partial(json.loads, text))


def _numbered_marks(queries: Sequence[MarkQuery], first: int) -> tuple[Any, ...]:
    """The parameters of one UNION ALL branch per series of marks (`?` its number, from `first`,
    then its key and the start of its window), in the order of `queries`."""
    return tuple(value for number, query in enumerate(queries, first)
                 for value in (number, _series_key(query.series, query.key), _tick(query.since)))


def _pending(scope: str, row: tuple[Any, ...]) -> PendingAction:
    """A pending action from its intents row: handler, intent, time written."""
    handler, intent, at = row
    return PendingAction(scope, handler, json.loads(intent), _untick(at))


class SQLiteStateStore:
    """kvguard.ports.StateStore on one SQLite database (`:memory:` by default)."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self._path = str(path)
        self._lock = threading.RLock()
        self._deferred: _Renewal | None = None  # a batch's renewal, made at its end or by the completion (`renew_each`)
        self._db = sqlite3.connect(self._path, timeout=30.0, isolation_level=None, check_same_thread=False)
        with self._lock:
            if self._path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            with self._transaction() as db:  # one opener at a time upgrades a file; the others find it done
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version < _INTEGER_TIMES:
                    _with_upgrade_functions(db)
                if version < _COMPACT_SHAPES and _has_table(db, "claims"):
                    _upgrade_to_compact_shapes(db)
                _upgrade_own_writes(db)
                _upgrade_audit(db)
                db.execute("DROP INDEX IF EXISTS marks_by_age")  # see `prune`
                if version < _INTEGER_TIMES:
                    _upgrade_to_integer_times(db)
                for statement in _SCHEMA.split(";\n"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {_INTEGER_TIMES}")

    def __repr__(self) -> str:
        return f"SQLiteStateStore({self._path!r})"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken before the first read so check-then-write cannot race.
        Inside a batch it is part of the batch's transaction."""
        with self._lock:
            if self._db.in_transaction:
                yield self._db
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._settle_renewal()
            except BaseException:
                self._deferred = None
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """Statements that are each atomic on their own, run back to back by this store's threads."""
        with self._lock:
            yield self._db

    @contextmanager
    def batch(self) -> Iterator[None]:
        """The writes of one event in one transaction: all of them or none (and one commit, not
        one per write)."""
        with self._transaction():
            yield

    def load(self, vault_id: str, scope: str, marks: Sequence[MarkQuery]) -> VaultState:
        """One SELECT: the baseline, the open findings, the intents and each series of marks as
        branches of one UNION ALL (each on its table's key), its rows told apart by their `part`
        (0 the baseline, 1 findings, 2 intents, 3 on the marks of each query in turn) and ordered as
        the reads one by one order them."""
        if len(marks) > _COMPOUND_BRANCHES:  # more series than one statement takes: the reads one by one
            with self._lock:
                return VaultState(self.get_baseline(vault_id), self.open_findings(vault_id),
                                  self.pending_actions(scope), self.marks_since_each(marks))
        key = vault_key(vault_id)
        sql = " UNION ALL ".join((
            "SELECT 0 AS part, vault_id AS a, config AS b, etag, deleted, updated FROM baselines WHERE vault_key = ?",
            "SELECT 1, rule, vault_id, finding, opened, baseline_etag FROM findings WHERE vault_key = ?",
            "SELECT 2, handler, intent, at, NULL, NULL FROM intents WHERE scope = ?",
            *("SELECT ?, at, member, NULL, NULL, NULL FROM marks WHERE key = ? AND at >= ?" for _ in marks),
        ))
        params = (key, key, scope, *_numbered_marks(marks, _FIRST_MARKS))
        baseline: Baseline | None = None
        findings: list[OpenFinding] = []
        pending: list[PendingAction] = []
        answers: list[list[tuple[str, datetime]]] = [[] for _ in marks]
        for part, a, b, c, d, e in self._query(f"{sql} ORDER BY part, a, b", params):
            if part == 0:
                baseline = self._baseline((a, b, c, d, e))
            elif part == 1:
                findings.append(self._finding(key, (b, a, c, d, e)))
            elif part == 2:
                pending.append(_pending(scope, (a, b, c)))
            else:
                answers[part - _FIRST_MARKS].append((_unpacked(b), _untick(a)))
        return VaultState(baseline, findings, pending, answers)

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _write(self, sql: str, params: tuple[Any, ...]) -> int:
        """One statement, atomic on its own (autocommit): no explicit transaction needed."""
        with self._lock:
            return self._db.execute(sql, params).rowcount

    # Event claims

    def claim(
        self, event_id: str, now: datetime, lease: timedelta, owner: str = "", *, beside: str | None = None
    ) -> ClaimResult:
        """One atomic statement claims a new event or takes over an expired lease (a claim let go
        of with a completion keeps its row with no lease, expired at once); only a refusal
        reads the row again, to tell a duplicate from an event in progress. `beside` changes
        nothing here: every claim is a row of one table, and one statement writes several."""
        at = _tick(now)
        until = _tick(now + lease)
        key = _packed(event_id)
        for _ in range(_ROUNDS):
            with self._lock:
                self._settle_renewal()
                taken = self._write(
                    "INSERT INTO claims (event_id, done, lease_until, claimed_at, owner)"
                    f" VALUES (?, 0, ?, ?, ?) {_TAKE_OVER}",
                    (key, until, at, owner),
                )
            if taken == 1:
                return "claimed"
            row = self._query("SELECT done FROM claims WHERE event_id = ?", (key,))
            if row:
                return "duplicate" if row[0][0] else "in_progress"
            # released in between: claim afresh
        return "in_progress"

    def claim_beside(
        self, event_id: str, lease_id: str, now: datetime, lease: timedelta, owner: str
    ) -> tuple[ClaimResult, bool]:
        """One statement tries both claims (`claim`'s upsert with two rows, the rows it took
        returned); a lease taken for an event that was not claimed is let go of again, and only
        then is the event's row read, to tell a duplicate from an event in progress."""
        at, until = _tick(now), _tick(now + lease)
        key, lock = _packed(event_id), _packed(lease_id)
        with self._lock:
            self._settle_renewal()
            taken = {row[0] for row in self._db.execute(
                "INSERT INTO claims (event_id, done, lease_until, claimed_at, owner)"
                " VALUES (?, 0, ?, ?, ?), (?, 0, ?, ?, ?)"
                f" {_TAKE_OVER} RETURNING event_id",
                (key, until, at, owner, lock, until, at, owner),
            ).fetchall()}
        if key in taken:
            return "claimed", lock in taken
        if lock in taken:
            self.release(lease_id, owner)
        row = self._query("SELECT done FROM claims WHERE event_id = ?", (key,))
        if row:
            return ("duplicate" if row[0][0] else "in_progress"), False
        claimed = self.claim(event_id, now, lease, owner, beside=lease_id)  # released in between: afresh
        return claimed, claimed == "claimed" and self.claim(lease_id, now, lease, owner) == "claimed"

    def renew(self, event_id: str, owner: str, now: datetime, lease: timedelta) -> bool:
        return self.renew_each((event_id,), owner, now, lease)

    def renew_each(self, event_ids: Sequence[str], owner: str, now: datetime, lease: timedelta) -> bool:
        """Inside a batch the renewal is made when the batch ends, or not at all when the batch
        completes the claims it renews (the completion is fenced the same way): either way the
        whole batch is written only while `owner` held every claim, and raises TransientError
        (nothing written) when it did not. Outside a batch: one statement, now."""
        renewal = _Renewal(tuple(dict.fromkeys(event_ids)), owner, _tick(now + lease))
        with self._lock:
            if self._db.in_transaction:
                self._settle_renewal()
                self._deferred = renewal
                return True
            return self._renewed(renewal)

    def _renewed(self, renewal: _Renewal) -> bool:
        return self._write(
            f"UPDATE claims SET lease_until = ? WHERE {_held_by_owner(len(renewal.ids))}",
            (renewal.until, *_held_by_owner_params(renewal.ids, renewal.owner)),
        ) == len(renewal.ids)

    def _settle_renewal(self) -> None:
        """Make the renewal a batch deferred (`renew_each`) before anything else writes claims."""
        renewal, self._deferred = self._deferred, None
        if renewal is not None and not self._renewed(renewal):
            raise TransientError(f"claims {', '.join(renewal.ids)}: taken over by another instance")

    def complete(
        self, event_id: str, now: datetime, owner: str | None = None, *, releasing: Sequence[str] = ()
    ) -> bool:
        at = _tick(now)
        if owner is not None:
            # One statement completes the event and lets go of the leases released with it. A
            # finished claim needs no lease, owner or claim time any more (only a fence of
            # unfinished ones reads them); a claim let go of keeps its row with an expired lease,
            # which the next claim takes over in one statement.
            ids = tuple(dict.fromkeys((event_id, *releasing)))
            key = _packed(event_id)
            with self._lock:
                renewal = self._deferred
                if renewal is None or renewal.owner != owner or not set(renewal.ids) <= set(ids):
                    self._settle_renewal()
                done = self._write(
                    "UPDATE claims SET done = (event_id = ?),"
                    " completed_at = CASE WHEN event_id = ? THEN ? ELSE completed_at END,"
                    " claimed_at = CASE WHEN event_id = ? THEN NULL ELSE claimed_at END, lease_until = 0, owner = ''"
                    f" WHERE {_held_by_owner(len(ids))}",
                    (key, key, at, key, *_held_by_owner_params(ids, owner)),
                ) == len(ids)
                if done:
                    self._deferred = None  # the completion was fenced as the renewal would have been
                return done
        with self._lock:
            self._settle_renewal()
            self._write(
                "INSERT INTO claims (event_id, done, lease_until, completed_at) VALUES (?, 1, 0, ?)"
                " ON CONFLICT (event_id) DO UPDATE SET done = 1, completed_at = excluded.completed_at,"
                " claimed_at = NULL, lease_until = 0, owner = ''",
                (_packed(event_id), at),
            )
        for lease_id in releasing:
            self.release(lease_id)
        return True

    def release(self, event_id: str, owner: str | None = None) -> bool:
        with self._lock:
            self._settle_renewal()
            if owner is not None:
                return self._write(
                    "DELETE FROM claims WHERE event_id = ? AND owner = ? AND done = 0 AND lease_until <> 0",
                    (_packed(event_id), owner),
                ) == 1
            return self._write("DELETE FROM claims WHERE event_id = ? AND done = 0", (_packed(event_id),)) == 1

    # Baselines

    def get_baseline(self, vault_id: str) -> Baseline | None:
        rows = self._query(
            "SELECT vault_id, config, etag, deleted, updated FROM baselines WHERE vault_key = ?", (vault_key(vault_id),)
        )
        return self._baseline(rows[0]) if rows else None

    def put_baseline(
        self, vault_id: str, config: Mapping[str, Any], etag: str | None, *, deleted: bool = False,
        now: datetime | None = None,
    ) -> str:
        updated = _tick(now if now is not None else datetime.now(UTC))
        document = _to_json(config)
        new_etag = uuid.uuid4().hex
        key = vault_key(vault_id)
        # Each write is one conditional statement: the compare and the swap are a single atomic step.
        if etag is None:
            written = self._write(
                "INSERT INTO baselines (vault_key, vault_id, config, etag, deleted, updated)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (vault_key) DO NOTHING",
                (key, vault_id, document, new_etag, int(deleted), updated),
            )
            if written != 1:
                self._refused(f"baseline of {vault_id} already exists")
        else:
            written = self._write(
                "UPDATE baselines SET vault_id = ?, config = ?, etag = ?, deleted = ?, updated = ?"
                " WHERE vault_key = ? AND etag = ?",
                (vault_id, document, new_etag, int(deleted), updated, key, etag),
            )
            if written != 1:
                self._refused(f"baseline of {vault_id} was changed or removed (etag {etag} is stale)")
        return new_etag

    def _refused(self, why: str) -> NoReturn:
        """ConcurrencyError, unless the write was refused because the batch's attempt was taken
        over (its deferred renewal refused: TransientError, as the renewal made first would have)."""
        with self._lock:
            self._settle_renewal()
        raise ConcurrencyError(why)

    def list_baselines(self) -> list[Baseline]:
        rows = self._query("SELECT vault_id, config, etag, deleted, updated FROM baselines ORDER BY vault_key")
        return [self._baseline(row) for row in rows]

    @staticmethod
    def _baseline(row: tuple[Any, ...]) -> Baseline:
        vault_id, config, etag, deleted, updated = row
        return Baseline(
            vault_id=vault_id, config=_decoded_on_use(config), etag=etag, deleted=bool(deleted),
            updated=_untick(updated),
        )

    # Audit trail and rejected payloads

    def append_audit(self, record: AuditRecord) -> None:
        digest = _key_digest(vault_key(record.vault_id)) if record.vault_id is not None else None
        document = audit_document(record.vault_id, record.outcome, record.event_id)
        self._write(
            "INSERT INTO audit (event_id, vault_digest, at, outcome, attempt) VALUES (?, ?, ?, ?, ?)",
            (_packed(record.event_id), digest, _tick(record.at), document,
             None if record.attempt is None else _packed(record.attempt)),
        )

    def list_audit(self, vault_id: str | None = None) -> list[AuditRecord]:
        columns = "SELECT event_id, vault_id, at, outcome FROM audit"
        if vault_id is None:
            rows = self._query(f"{columns} ORDER BY at, seq")
        else:
            key = vault_key(vault_id)
            rows = self._query(f"{columns} WHERE vault_digest = ? ORDER BY at, seq", (_key_digest(key),))
        records = []
        for packed, vault_column, at, stored in rows:
            event_id = _unpacked(packed)
            vault, outcome = audit_fields(vault_column, stored, event_id)
            if vault_id is None or (vault is not None and vault_key(vault) == key):  # never another vault's
                records.append(AuditRecord(event_id=event_id, vault_id=vault, at=_untick(at), outcome=outcome))
        return records

    def audited(self, event_id: str, vault_id: str | None, attempt: str | None = None) -> bool:
        digest = _key_digest(vault_key(vault_id)) if vault_id is not None else None
        by_attempt, attempts = (" AND attempt = ?", (_packed(attempt),)) if attempt is not None else ("", ())
        return bool(self._query(f"SELECT 1 FROM audit WHERE vault_digest IS ? AND event_id = ?{by_attempt} LIMIT 1",
                                (digest, _packed(event_id), *attempts)))

    def record_rejected(self, rejected: RejectedPayload) -> None:
        self._write(
            "INSERT INTO rejected (reason, raw, at, event_id) VALUES (?, ?, ?, ?)",
            (rejected.reason, rejected.raw, _tick(rejected.at), rejected.event_id),
        )

    def list_rejected(self) -> list[RejectedPayload]:
        rows = self._query("SELECT reason, raw, at, event_id FROM rejected ORDER BY at, seq")
        return [
            RejectedPayload(reason=reason, raw=raw, at=_untick(at), event_id=event_id)
            for reason, raw, at, event_id in rows
        ]

    # Open findings

    def open_finding(self, vault_id: str, rule: str, finding: Mapping[str, Any], now: datetime) -> bool:
        key = vault_key(vault_id)
        row = found_against.split(key, finding)
        document = _to_json(row.finding)
        opened = _tick(now)
        # The configuration and the finding naming it: both or neither.
        with self._transaction() if row.config is not None else self._locked() as db:
            if row.etag is not None and row.config is not None:
                db.execute(
                    "INSERT INTO found_against (vault_key, etag, config, at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (vault_key, etag) DO UPDATE SET at = excluded.at",
                    (key, row.etag, zlib.compress(_to_json(row.config).encode("utf-8")), opened),
                )
            inserted = db.execute(
                "INSERT INTO findings (vault_key, rule, vault_id, finding, opened, baseline_etag)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (vault_key, rule) DO NOTHING",
                (key, rule, vault_id, document, opened, row.etag),
            ).rowcount
            if inserted == 1:
                return True
            # Already open: refresh it, keeping the time it was first opened.
            db.execute(
                "UPDATE findings SET finding = ?, vault_id = ?, baseline_etag = ? WHERE vault_key = ? AND rule = ?",
                (document, vault_id, row.etag, key, rule),
            )
            return False

    def close_finding(self, vault_id: str, rule: str) -> bool:
        key = vault_key(vault_id)
        with self._transaction() as db:
            named = db.execute("SELECT baseline_etag FROM findings WHERE vault_key = ? AND rule = ?",
                               (key, rule)).fetchone()
            if named is None:
                return False
            db.execute("DELETE FROM findings WHERE vault_key = ? AND rule = ?", (key, rule))
            if named[0] is not None:  # a configuration no open finding names any more goes with the last one
                db.execute(f"DELETE FROM found_against WHERE vault_key = ? AND etag = ? AND {_UNNAMED}",
                           (key, named[0]))
            return True

    def open_findings(self, vault_id: str) -> list[OpenFinding]:
        key = vault_key(vault_id)
        rows = self._query(
            "SELECT vault_id, rule, finding, opened, baseline_etag FROM findings WHERE vault_key = ? ORDER BY rule",
            (key,),
        )
        return [self._finding(key, row) for row in rows]

    def _finding(self, key: str, row: tuple[Any, ...]) -> OpenFinding:
        """An open finding from its row: vault id, rule, record, time opened, baseline ETag."""
        vault, rule, finding, opened, etag = row
        return OpenFinding(
            vault_id=vault, rule=rule, opened=_untick(opened),
            finding=_decoded_on_use(finding) if etag is None
            else found_against.joined(key, json.loads(finding), self._found_against_loader(key, etag)),
        )

    def _found_against_loader(self, key: str, etag: str) -> Callable[[], Mapping[str, Any]]:
        def load() -> Mapping[str, Any]:
            rows = self._query("SELECT config FROM found_against WHERE vault_key = ? AND etag = ?", (key, etag))
            if not rows:
                raise RuntimeError(f"the baseline {etag} an open finding of {key} was found against is not stored")
            loaded: dict[str, Any] = json.loads(zlib.decompress(rows[0][0]))
            return loaded

        return load

    # Marks for history rules and the circuit breaker

    def add_mark(self, series: str, key: str, member: str, at: datetime) -> None:
        self._write(
            "INSERT INTO marks (key, member, at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (_series_key(series, key), _packed(member), _tick(at)),
        )

    def marks_since(self, series: str, key: str, since: datetime) -> list[tuple[str, datetime]]:
        rows = self._query(
            "SELECT member, at FROM marks WHERE key = ? AND at >= ? ORDER BY at, member",
            (_series_key(series, key), _tick(since)),
        )
        return [(_unpacked(member), _untick(at)) for member, at in rows]

    def marks_since_each(self, queries: Sequence[MarkQuery]) -> list[list[tuple[str, datetime]]]:
        """One SELECT whose UNION ALL branches each use the (key, at) primary key; rows carry the
        number of the query they answer."""
        answers: list[list[tuple[str, datetime]]] = [[] for _ in queries]
        for start in range(0, len(queries), _COMPOUND_BRANCHES):
            part = queries[start:start + _COMPOUND_BRANCHES]
            sql = " UNION ALL ".join(
                "SELECT ? AS query, member, at FROM marks WHERE key = ? AND at >= ?" for _ in part
            )
            params = _numbered_marks(part, start)
            for number, member, at in self._query(f"{sql} ORDER BY query, at, member", params):
                answers[number].append((_unpacked(member), _untick(at)))
        return answers

    # Write-ahead actions

    def begin_action(self, scope: str, handler: str, intent: Mapping[str, Any], now: datetime) -> None:
        self._write(
            "INSERT INTO intents (scope, handler, intent, at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (scope, handler) DO UPDATE SET intent = excluded.intent, at = excluded.at",
            (scope, handler, _to_json(intent), _tick(now)),
        )

    def pending_actions(self, scope: str) -> list[PendingAction]:
        rows = self._query(
            "SELECT handler, intent, at FROM intents WHERE scope = ? ORDER BY handler", (scope,)
        )
        return [_pending(scope, row) for row in rows]

    def finish_action(self, scope: str, handler: str) -> None:
        self._write("DELETE FROM intents WHERE scope = ? AND handler = ?", (scope, handler))

    # Outbox

    def put_outbox(self, key: str, item: Mapping[str, Any], now: datetime) -> None:
        self._write(
            "INSERT INTO outbox (key, item, at) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET item = excluded.item",
            (key, _to_json(item), _tick(now)),
        )

    def list_outbox(self) -> list[OutboxItem]:
        rows = self._query("SELECT key, item, at FROM outbox ORDER BY at, key")
        return [OutboxItem(key, json.loads(item), _untick(at)) for key, item, at in rows]

    def drop_outbox(self, key: str) -> None:
        self._write("DELETE FROM outbox WHERE key = ?", (key,))

    # Retention

    def prune(self, older_than: datetime) -> int:
        """One short transaction per table, so other writers are never held off for long. Marks are
        found by age with a scan of their table: an index on their time would hold each mark a
        second time (a mark is all key), about half the bytes a retained event costs, for a
        statement the reconcile timer runs once an hour."""
        cutoff = _tick(older_than)
        statements = (
            "DELETE FROM claims WHERE done = 1 AND completed_at < ?",
            "DELETE FROM claims WHERE done = 0 AND lease_until < ?",
            "DELETE FROM audit WHERE at < ?",
            "DELETE FROM rejected WHERE at < ?",
            "DELETE FROM marks WHERE at < ?",
            "DELETE FROM intents WHERE at < ?",
            "DELETE FROM outbox WHERE at < ?",
            f"DELETE FROM found_against WHERE at < ? AND {_UNNAMED}",
        )
        return sum(self._write(sql, (cutoff,)) for sql in statements)

    # The ledger of own writes

    def record_own_write(self, entry: OwnWrite) -> None:
        self._write(
            "INSERT INTO own_writes (resource_key, resource_id, operation, at, request_id, event_id, attempt)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (vault_key(entry.resource_id), entry.resource_id, entry.operation.strip().lower(), _tick(entry.at),
             entry.request_id, entry.event_id, entry.attempt),
        )

    def match_own_write(
        self, resource_id: str, operation: str, request_id: str, *, since: datetime, until: datetime,
    ) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM own_writes WHERE request_id = ? AND resource_key = ? AND operation = ?"
                " AND at >= ? AND at <= ? AND voided = 0 LIMIT 1",
                (request_id, vault_key(resource_id), operation.strip().lower(), _tick(since), _tick(until)),
            ).fetchone()
        return row is not None

    def void_own_write(self, entry: OwnWrite) -> None:
        self._write("UPDATE own_writes SET voided = 1 WHERE request_id = ?", (entry.request_id,))

    def prune_own_writes(self, older_than: datetime) -> int:
        return self._write("DELETE FROM own_writes WHERE at < ?", (_tick(older_than),))
