"""The StateStore on Azure Table Storage (Azurite locally and in tests).

- Layout: one table, `{prefix}vault`, holds every vault's state in a partition of its own (32 hex
  digits of the SHA-256 of its `vault_key`): its lease (`lease`) and the claims of its events (`c|…`), its
  baseline (`baseline`), open findings (`f|…`) and the configurations they were found against
  (`a|…`, `kvguard.adapters.found_against`), write-ahead intents (`i|…`), history marks
  (`m|series-and-key|time-member`: a mark keyed by a vault, or by a vault and a caller, in the
  vault's partition; one keyed by a caller in the caller's), audit records (`t|…`) and the
  ledger of own writes (`o|…`). One event of a vault reads its state with one query of its
  partition (and one of its caller's) and writes what it changed with one entity-group
  transaction (`batch`, `kvguard.adapters.table_unit`). Other tables: `{prefix}claims` (events
  that name no vault), `rejected`, `outbox`, and `chunks` for values too large to sit inline,
  each created on first use. A store written by an earlier layout (one table per concern) is
  read on: a vault's state moves to its partition the first time an event of it is read
  (`_migrate`).
- Keys: PartitionKey and RowKey may not hold `/`, `\\`, `#`, `?` (all common in resource ids and
  event ids), so ids are encoded as SHA-256 hex digests; the original id stays in a property
  for people to read, except what grows with every event: an audit record names its vault in
  its document only, a mark keeps its member, a finished claim its event id.
- Concurrency: claims are deduplicated by `create_entity` (409 when the claim exists), an expired
  lease is taken over and baselines are replaced with the entity's ETag and
  `MatchConditions.IfNotModified` (412 when someone wrote first). A claim carries its owner's
  token: renew, complete and release write it back with the ETag of the store's own last write of
  it (read again first when there is none, or when that write was refused), so an owner whose
  lease was taken over changes nothing, without a read before every write. A baseline's
  `Baseline.etag` is a version the store writes with it (`version`), so a batch can name the
  next one before the transaction carrying it is sent.
- Size: a property holds 64 KiB and an entity 1 MiB, and a vault may carry 1024 access policies.
  An audit record's outcome is one property, deflated against the audit dictionary
  (`compact_audit`, as on SQLite) while it fits one; larger ones as below. Large values (vault
  configs, audit outcomes, raw payloads, finding evidence) are stored as JSON, zlib-compressed
  and split into binary properties of at most 60,000 bytes. Up to twelve chunks sit in the
  entity itself; anything larger goes to the `chunks` table under a fresh reference written
  *before* the entity that points at it, so a conditional write stays one atomic request.
- Errors: unreachable storage, 5xx and 429 (after the SDK's own retries) raise
  `kvguard.ports.TransientError`, chained to the Azure error; a refusal (403, 400) raises
  `kvguard.ports.PermanentError` (the rule is in `azure_clients`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, ParamSpec, TypeVar

from azure.core import MatchConditions
from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential, TokenCredential
from azure.core.exceptions import AzureError, HttpResponseError
from azure.data.tables import TableClient, TableEntity, TableServiceClient, UpdateMode

from kvguard.adapters import found_against
from kvguard.adapters.azure_clients import azure_errors
from kvguard.adapters.compact_audit import audit_document, audit_fields
from kvguard.adapters.table_unit import Unit, Write, fits
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
    leased,
)

log = logging.getLogger(__name__)

CHUNK_BYTES = 60_000  # below the 64 KiB limit of one property
INLINE_CHUNKS = 12  # 720,000 bytes: well inside the 1 MiB limit of one entity, with room for the rest
DISPLAY_CHARS = 1_000  # readable copies of long texts; the full text is in the compressed document
BESIDE_ROW_DIGITS = 32  # 128 bits of the event id's digest name its claim within its vault's lease partition
REMEMBERED_REFS = 10_000  # entities whose chunks' reference a store remembers (`_saw`)
LOAD_THREADS = 8  # one per query of `load` for a vault event with every series of marks
_ROUNDS = 8  # rounds of a read-then-conditional-write before giving up under contention

_PREFIX_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,53}$")

P = ParamSpec("P")
R = TypeVar("R")


def _status(error: HttpResponseError) -> int | None:
    return error.status_code


def _table_transient(status: int | None) -> bool:
    """Throttling and server errors; a 409 here is an insert conflict, which callers decide on."""
    return status is not None and (status >= 500 or status == 429)


def _transient(method: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(method)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        with azure_errors(f"table storage ({method.__name__})", _table_transient):
            return method(*args, **kwargs)

    return guarded


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: the state store takes timezone-aware times only")
    return moment.astimezone(UTC)


def _stamp(moment: datetime) -> str:
    """Fixed-width UTC text (`2026-11-27T10:00:00.000000Z`): text order is time order."""
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


STAMP_CHARS = len("2026-01-01T00:00:00.000000Z")  # `_stamp`'s fixed width


def _unstamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


PARTITION_DIGITS = 32  # of a key's SHA-256 naming its partition: 128 bits, in every row it holds


def _vault_partition(vault_id: str) -> str:
    return _digest(vault_key(vault_id))[:PARTITION_DIGITS]


def _legacy_partition(vault_id: str) -> str:
    """A vault's partition in the tables of the earlier layout: its key's whole digest."""
    return _digest(vault_key(vault_id))


VAULTS = "vault"  # the table of one partition per vault (or resource, or caller)
LEASE_ROW, BASELINE_ROW = "lease", "baseline"
MOVED_ROW = "moved"  # a vault's partition that the earlier layout's state was moved into (`_migrate`)
CLAIM, FINDING, AGAINST, INTENT, MARK, AUDIT, OWN = "c|", "f|", "a|", "i|", "m|", "t|", "o|"
_END = "~"  # sorts after every character a RowKey here holds after its prefix
KEY_DIGITS = 16  # of a series and key's digest in a mark's RowKey: the partition already names the vault
KEPT_BEHIND = ("caller_writes",)  # series of marks a store of the earlier layout is still read for (`_migrate`)


def _starting(prefix: str, since: str = "") -> str:
    """An OData filter for the RowKeys that start with `prefix`, from `prefix + since` on (the
    keys are hex digits, stamps and series names: no quote to escape)."""
    return f"(RowKey ge '{prefix}{since}' and RowKey lt '{prefix}{_END}')"


def _key_partition(key: str) -> str:
    """The partition the state under `key` is kept in: a vault's (or resource's) for a key that
    is one or starts with one (`vault|caller`), the key's own otherwise (a caller's)."""
    return _vault_partition(key.split("|", 1)[0])


def _mark_prefix(series: str, key: str) -> str:
    """A series under one key: 64 bits of their digest (series names and keys hold any character)."""
    tag = _digest(series + "\n" + vault_key(key))[:KEY_DIGITS]
    return f"{MARK}{tag}|"


def _claim_place(event_id: str, beside: str | None) -> tuple[str, str, str]:
    """(table, partition, row) of a claim: a vault's lease, and a claim beside it, in the vault's
    partition (written with the vault's records); any other claim in the claims table."""
    vault = leased(event_id)
    if vault is not None:
        return VAULTS, _vault_partition(vault), LEASE_ROW
    held = leased(beside) if beside is not None else None
    if held is not None:
        return VAULTS, _vault_partition(held), CLAIM + _digest(event_id)[:BESIDE_ROW_DIGITS]
    if beside is not None:
        return "claims", _digest(beside), _digest(event_id)[:BESIDE_ROW_DIGITS]
    return "claims", _digest(event_id), "claim"


def _sequence(at: datetime) -> str:
    """A RowKey that sorts by time, then by when it was written, and never collides."""
    return f"{_stamp(at)}-{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"


def _audit_time(entity: Mapping[str, Any]) -> str:
    """An audit record's stamp: the start of its RowKey's `_sequence` in the vaults' table (a
    record written there before keeps an `at` too, the same stamp), its `at` in the earlier
    layout's table, whose RowKeys are not read for it."""
    row = entity["RowKey"]
    return row[len(AUDIT):len(AUDIT) + STAMP_CHARS] if row.startswith(AUDIT) else entity["at"]


def _json_default(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _encode(document: object) -> bytes:
    return json.dumps(document, default=_json_default, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _is(error: HttpResponseError, *statuses: int) -> bool:
    return _status(error) in statuses


@dataclass(frozen=True)
class _Seen:
    """What a store remembers of an entity it read or wrote (`TablesStateStore._saw`)."""

    doc_ref: str | None  # where its spilled chunks are; None: inline
    etag: str | None
    opened: str | None = None  # an open finding's time of opening
    version: str | None = None  # a baseline's (`Baseline.etag`)


@dataclass(frozen=True)
class _Claim:
    """A claim's properties and the ETag they were written or read with; `read` when they come
    from a read of the stored claim rather than from this store's own last write."""

    event_id: str
    entity: dict[str, Any]
    etag: str
    read: bool = False
    table: str = "claims"


def _finished(claim: _Claim) -> _Claim:
    """A claim as it is kept once its event is done: its keys (the owner's token and the lease
    only fence an unfinished claim; the readable event id, kept on an unfinished claim for whoever
    looks at one in progress, is in the event's audit record), to be written over the claim with
    its ETag. The RowKey's 128 bits of the event id's digest are what a redelivery is told by."""
    kept: dict[str, Any] = {name: claim.entity[name] for name in ("PartitionKey", "RowKey")}
    return _Claim(claim.event_id, kept, claim.etag, claim.read, claim.table)


def _claim_entity(event_id: str, partition: str, row: str, *, now: datetime, lease: timedelta,
                  owner: str) -> dict[str, Any]:
    """An unfinished claim of `owner`'s, leased from `now` for `lease`."""
    return {"PartitionKey": partition, "RowKey": row, "event_id": event_id[:DISPLAY_CHARS], "done": False,
            "claimed_at": _stamp(now), "lease_until": _stamp(now + lease), "owner": owner}


def _fenced_update(entity: dict[str, Any], etag: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A transaction's replace of `entity`, only while it is as written with `etag`."""
    return "update", entity, {"mode": UpdateMode.REPLACE, "etag": etag,
                              "match_condition": MatchConditions.IfNotModified}


def _fenced_delete(entity: dict[str, Any], etag: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A transaction's delete of `entity`, only while it is as written with `etag`."""
    return "delete", entity, {"etag": etag, "match_condition": MatchConditions.IfNotModified}


class _Read(NamedTuple):
    """What `_read_partitions` found: the entities by partition, the marks by query."""

    entities: dict[str, list[TableEntity]]
    marks: list[list[tuple[str, datetime]]]


def _one_partition(claims: Sequence[_Claim]) -> bool:
    return len({(claim.table, claim.entity["PartitionKey"]) for claim in claims}) == 1


class TablesStateStore:
    """kvguard.ports.StateStore on Azure Table Storage."""

    def __init__(
        self,
        endpoint: str,
        credential: TokenCredential | AzureNamedKeyCredential | AzureSasCredential,
        *,
        table_prefix: str = "kvguard",
        **client_options: Any,
    ) -> None:
        """`client_options` go to the TableServiceClient (e.g. `retry_total`, `connection_timeout`)."""
        self._setup(TableServiceClient(endpoint, credential=credential, **client_options), table_prefix)

    @classmethod
    def from_connection_string(
        cls, connection_string: str, table_prefix: str = "kvguard", **client_options: Any
    ) -> TablesStateStore:
        store = cls.__new__(cls)
        store._setup(TableServiceClient.from_connection_string(connection_string, **client_options), table_prefix)
        return store

    def _setup(self, service: TableServiceClient, table_prefix: str) -> None:
        if not _PREFIX_RE.match(table_prefix):
            raise ValueError(f"table prefix {table_prefix!r}: a letter, then letters and digits, at most 54 in all")
        self._service = service
        self._prefix = table_prefix
        self._tables: dict[str, TableClient] = {}
        self._held: dict[str, _Claim] = {}  # claims as this store last wrote them (`_hold`)
        self._where: dict[str, tuple[str, str, str]] = {}  # where the claims this store made are (`claim`)
        self._readers: ThreadPoolExecutor | None = None  # `load`'s queries side by side
        self._refs: dict[tuple[str, str, str], _Seen] = {}  # `_saw`
        self._whole: set[tuple[str, str]] = set()  # partitions read whole (`_listed`)
        self._lock = threading.Lock()
        self._local = threading.local()  # the batch a thread is in (`batch`)
        self._legacy: bool | None = None  # whether the tables of the earlier layout exist (`_migrate`)
        self._here: set[str] = set()  # partitions known to hold their vault's state in this layout (`_migrate`)

    def __repr__(self) -> str:
        return f"TablesStateStore({self._service.url!r}, table_prefix={self._prefix!r})"

    def close(self) -> None:
        if self._readers is not None:
            self._readers.shutdown(wait=True)
        self._service.close()

    @_transient
    def load(self, vault_id: str, scope: str, marks: Sequence[MarkQuery]) -> VaultState:
        """The vault's partition in one query (its baseline, open findings, intents and the marks
        kept under it) and each other partition a series of marks is kept in (a caller's) in one
        query of its own, side by side: one round trip's wait for the event's whole state."""
        self._flush()
        partition, intents = _vault_partition(vault_id), _vault_partition(scope)
        rows: dict[str, list[str]] = {partition: [BASELINE_ROW, MOVED_ROW, FINDING]}
        rows.setdefault(intents, []).append(INTENT)
        read = self._read_partitions(rows, marks)
        if not any(entity["RowKey"] in (BASELINE_ROW, MOVED_ROW) for entity in read.entities[partition]) \
                and self._migrate(vault_id, missing=True):
            read = self._read_partitions(rows, marks)
        found = read.entities[partition]
        baseline = next((entity for entity in found if entity["RowKey"] == BASELINE_ROW), None)
        if baseline is not None or any(entity["RowKey"] == MOVED_ROW for entity in found):
            self._moved(partition)
        self._listed("baselines", partition, [baseline] if baseline is not None else [])
        findings = self._findings(vault_id, partition, [e for e in found if e["RowKey"].startswith(FINDING)])
        pending = self._intents(scope, intents, [e for e in read.entities[intents] if e["RowKey"].startswith(INTENT)])
        return VaultState(self._baseline(baseline) if baseline is not None else None, findings, pending, read.marks)

    def _table(self, concern: str) -> TableClient:
        """The concern's table, created the first time this store touches it."""
        with self._lock:
            table = self._tables.get(concern)
            if table is None:
                name = self._prefix + concern
                try:
                    self._service.create_table(name)
                except HttpResponseError as error:
                    if not _is(error, 409):
                        raise
                table = self._service.get_table_client(name)
                self._tables[concern] = table
            return table

    def _get(self, concern: str, partition: str, row: str) -> TableEntity | None:
        return _entity(self._table(concern), partition, row)

    # Large values: compressed, chunked, spilled to the chunks table when they do not fit inline.

    def _pack(self, document: object) -> dict[str, Any]:
        """Properties holding `document`; chunks that do not fit inline are written now."""
        packed = zlib.compress(_encode(document), 6)
        chunks = [packed[start : start + CHUNK_BYTES] for start in range(0, len(packed), CHUNK_BYTES)]
        properties: dict[str, Any] = {"doc_chunks": len(chunks), "doc_encoding": "json+zlib"}
        if len(chunks) <= INLINE_CHUNKS:
            properties.update({f"doc_{index}": chunk for index, chunk in enumerate(chunks)})
            return properties
        ref = uuid.uuid4().hex
        table = self._table("chunks")
        for index, chunk in enumerate(chunks):
            table.upsert_entity({"PartitionKey": ref, "RowKey": f"{index:06d}", "data": chunk})
        properties["doc_ref"] = ref
        return properties

    def _unpack(self, entity: Mapping[str, Any]) -> Any:
        count = int(entity["doc_chunks"])
        ref = entity.get("doc_ref")
        if ref is None:
            packed = b"".join(entity[f"doc_{index}"] for index in range(count))
        else:
            rows = self._table("chunks").query_entities("PartitionKey eq @ref", parameters={"ref": ref})
            chunks = sorted(rows, key=lambda row: row["RowKey"])
            if len(chunks) != count:
                raise RuntimeError(f"stored document {ref} has {len(chunks)} of its {count} chunks")
            packed = b"".join(chunk["data"] for chunk in chunks)
        return json.loads(zlib.decompress(packed).decode("utf-8"))

    def _discard(self, properties: Mapping[str, Any] | None) -> None:
        """Drop the spilled chunks `properties` refer to. Best effort: leftovers are only wasted space."""
        ref = properties.get("doc_ref") if properties else None
        if not ref:
            return
        table = self._table("chunks")
        try:
            for row in table.query_entities("PartitionKey eq @ref", parameters={"ref": ref}, select=["RowKey"]):
                table.delete_entity(ref, row["RowKey"])
        except AzureError as error:
            log.warning("could not remove the chunks of replaced document %s: %s", ref, error)

    def _saw(self, concern: str, entity: Mapping[str, Any], etag: str | None) -> None:
        """Remember where an entity this store just read or wrote keeps its spilled chunks (None:
        inline) and its ETag, so that replacing or deleting it needs no read first to find them.
        Only the chunks depend on it: a write another instance made meanwhile at worst leaves its
        chunks behind, wasted space (as `_discard` allows), never a wrong entity."""
        with self._lock:
            self._remember(concern, [(entity, etag)])

    def _listed(self, concern: str, partition: str, entities: Sequence[TableEntity]) -> None:
        """The concern's whole part of the partition was just read (`entities`): each is
        remembered as `_saw` would, and the partition as read whole, in one step, so that a
        clearing of the memory in between cannot leave a partition "read whole" without its rows."""
        with self._lock:
            self._remember(concern, [(entity, str(entity.metadata["etag"])) for entity in entities])
            self._whole.add((concern, partition))

    def _remember(self, concern: str, seen: Sequence[tuple[Mapping[str, Any], str | None]]) -> None:
        """`_saw` of each (entity, ETag), under the store's lock; the memory starts afresh first
        when they would fill it."""
        if len(self._refs) + len(seen) > REMEMBERED_REFS:
            self._refs.clear()
            self._whole.clear()
        for entity, etag in seen:
            self._refs[(concern, entity["PartitionKey"], entity["RowKey"])] = _Seen(
                entity.get("doc_ref"), etag, entity.get("opened"), entity.get("version") or etag)

    def _listed_without(self, concern: str, partition: str, row: str) -> bool:
        """Whether the partition was read whole and held no such entity then. A batch then makes
        it rather than replacing it, and needs no read to find the chunks of one that was not
        there; one made since by another instance makes the batch's transaction refused (the
        writes are then made one by one, reading what they must)."""
        with self._lock:
            return (concern, partition) in self._whole and (concern, partition, row) not in self._refs

    def _seen(self, concern: str, partition: str, row: str, *, pop: bool = False) -> _Seen | None:
        """What `_saw` remembers of an entity: its chunks' reference and its ETag; None when nothing."""
        with self._lock:
            key = (concern, partition, row)
            return self._refs.pop(key, None) if pop else self._refs.get(key)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """The writes made inside are held back and go out when it ends, as one entity-group
        transaction per partition (`table_unit`): an event's records, its claims' renewal and
        completion with them, in one request to its vault's partition. Nothing is written when
        it ends with an exception. A read inside, or a write that cannot join a transaction,
        first sends what was held back, so the order of writes is kept (the claim completed
        last) and the batch reads its own writes."""
        if self._unit() is not None:  # inside another: its writes go out with the outer one's
            yield
            return
        unit = Unit()
        self._local.unit = unit
        try:
            yield
        except BaseException:
            self._local.unit = None
            for write in unit.writes:
                self._drop_spilled(write)
            raise
        self._local.unit = None
        self._commit(unit)

    def _unit(self) -> Unit | None:
        unit: Unit | None = getattr(self._local, "unit", None)
        return unit

    def _flush(self) -> None:
        """Send what the batch held back so far (see `batch`)."""
        unit = self._unit()
        if unit is not None and unit.writes:
            held_back, unit.writes = unit.writes, []  # the batch goes on with what comes after
            self._commit(Unit(held_back))

    @_transient
    def _commit(self, unit: Unit) -> None:
        """Each partition's writes in one transaction; when Table Storage refuses one as a whole
        (nothing of it was written), that partition's writes and those of the partitions after
        it are made one by one, as outside a batch (`table_unit`)."""
        transactions = unit.transactions()
        for index, (concern, _, operations, writes) in enumerate(transactions):
            if operations and fits(operations):
                try:
                    answers = self._table(concern).submit_transaction(operations)
                except HttpResponseError as error:
                    if _table_transient(_status(error)):
                        raise
                    log.info("transaction of %d writes refused (%s): writing them one by one", len(operations),
                             error.status_code)
                else:
                    metadata = {operation[1]["RowKey"]: answer for operation, answer in zip(operations, answers,
                                                                                          strict=False)}
                    for write in writes:
                        if write.then is not None:
                            write.then(metadata.get(write.row, {}))
                    continue
            elif not operations:
                continue
            try:
                for _, _, _, later in transactions[index:]:
                    for fence in [write.fence for write in later if write.fence is not None]:
                        fence()  # a taken-over attempt writes nothing of this partition
                    for write in later:
                        self._drop_spilled(write)
                        if write.replay is not None:
                            write.replay()
            except ConcurrencyError as error:  # a baseline another instance moved meanwhile
                raise TransientError(f"written concurrently; retry: {error}") from error
            return

    def _drop_spilled(self, write: Write) -> None:
        for document in write.spilled:
            self._discard(document)

    # Event claims

    @_transient
    def claim(
        self, event_id: str, now: datetime, lease: timedelta, owner: str = "", *, beside: str | None = None
    ) -> ClaimResult:
        """A claim `beside` another is a row of that claim's partition, so that the two are renewed
        and completed in one entity-group transaction."""
        self._flush()
        return self._claim(event_id, now, lease, owner, beside=beside)

    def _claim(
        self, event_id: str, now: datetime, lease: timedelta, owner: str, *, beside: str | None, made: bool = False
    ) -> ClaimResult:
        """`made`: the claim's row is known to be there (a write of it was just refused), so the
        first round reads it instead of trying to make it."""
        at = _stamp(now)
        concern, partition, row = _claim_place(event_id, beside)
        self._locate(event_id, (concern, partition, row))
        entity = _claim_entity(event_id, partition, row, now=now, lease=lease, owner=owner)
        table = self._table(concern)
        for attempt in range(_ROUNDS):
            try:
                if not (made and attempt == 0):
                    self._hold(event_id, entity, table.create_entity(entity), concern)
                    return "claimed"
            except HttpResponseError as error:
                if not _is(error, 409):
                    raise
            current = self._get(concern, partition, row)
            if current is None:  # released in between: claim afresh
                continue
            if current.get("done"):
                return "duplicate"
            if current["lease_until"] > at:
                return "in_progress"
            try:
                written = table.update_entity(
                    entity, mode=UpdateMode.REPLACE, etag=current.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
                self._hold(event_id, entity, written, concern)
                return "claimed"
            except HttpResponseError as error:
                if not _is(error, 404, 412):
                    raise
        return "in_progress"

    @_transient
    def claim_beside(
        self, event_id: str, lease_id: str, now: datetime, lease: timedelta, owner: str
    ) -> tuple[ClaimResult, bool]:
        """A vault's lease is a row of its partition: an event claimed beside it and the lease,
        both made afresh (the lease's row is deleted when it is let go of), are one transaction.
        When either row is there already (a redelivery, a lease held or left to expire), the
        transaction changes nothing and each is claimed on its own."""
        self._flush()
        concern, partition, row = _claim_place(event_id, lease_id)
        held_at = _claim_place(lease_id, None)
        if concern == VAULTS and held_at[:2] == (VAULTS, partition):
            entities = [(claim_id, _claim_entity(claim_id, partition, claim_row, now=now, lease=lease, owner=owner))
                        for claim_id, claim_row in ((event_id, row), (lease_id, held_at[2]))]
            try:
                written = self._table(VAULTS).submit_transaction([("create", entity) for _, entity in entities])
            except HttpResponseError as error:
                if not _is(error, 409):
                    raise
                if getattr(error, "index", None) == 0:  # the event's claim is there: a redelivery
                    claimed = self._claim(event_id, now, lease, owner, beside=lease_id, made=True)
                    return claimed, claimed == "claimed" and self.claim(lease_id, now, lease, owner) == "claimed"
            else:
                for (claim_id, entity), metadata in zip(entities, written, strict=True):
                    self._locate(claim_id, (VAULTS, partition, str(entity["RowKey"])))
                    self._hold(claim_id, entity, metadata, VAULTS)
                return "claimed", True
        claimed = self.claim(event_id, now, lease, owner, beside=lease_id)
        return claimed, claimed == "claimed" and self.claim(lease_id, now, lease, owner) == "claimed"

    def _locate(self, event_id: str, place: tuple[str, str, str]) -> None:
        """Remember where this store made the claim of `event_id` (`_location`)."""
        with self._lock:
            if len(self._where) >= REMEMBERED_REFS:
                self._where.clear()
            self._where[event_id] = place

    def _hold(self, event_id: str, entity: Mapping[str, Any], written: Mapping[str, Any], table: str) -> None:
        """Remember a claim as this store last wrote it, with the ETag the write returned: renewing,
        completing or letting go of it then needs no read first. The fence is unchanged: each of
        those writes is conditional on that ETag, which any other write of the claim (a takeover)
        changes."""
        with self._lock:
            self._held[event_id] = _Claim(event_id, dict(entity), str(written["etag"]), table=table)

    def _forget(self, event_id: str) -> None:
        with self._lock:
            self._held.pop(event_id, None)

    def _location(self, event_id: str) -> tuple[str, str, str]:
        """Where the claim of `event_id` is: beside another when this store claimed it so."""
        with self._lock:
            return self._where.get(event_id) or _claim_place(event_id, None)

    def _owned_claim(self, event_id: str, owner: str | None, *, fresh: bool = False) -> _Claim | None:
        """The unfinished claim of `event_id` when `owner` holds it (any owner when None): as this
        store last wrote it when it did and `fresh` is not asked for, else as read."""
        if not fresh and owner is not None:
            with self._lock:
                held = self._held.get(event_id)
            if held is not None and held.entity.get("owner", "") == owner and not held.entity.get("done"):
                return held
        concern, partition, row = self._location(event_id)
        current = self._get(concern, partition, row)
        if current is None or current.get("done"):
            return None
        if owner is not None and current.get("owner", "") != owner:
            return None
        return _Claim(event_id, dict(current), str(current.metadata["etag"]), read=True, table=concern)

    def _fenced(self, event_ids: Sequence[str], owner: str, write: Callable[[list[_Claim]], bool]) -> bool:
        """`write` of `owner`'s claims of `event_ids`, each fenced by its ETag. Tried first with the
        claims as this store last wrote them; when that fails (taken over, or written meanwhile by
        another store of this owner's), once more with the claims as read, so only the stored claim
        decides."""
        for fresh in (False, True):
            held = [self._owned_claim(event_id, owner, fresh=fresh) for event_id in dict.fromkeys(event_ids)]
            if any(claim is None for claim in held):
                return False
            if write([claim for claim in held if claim is not None]):
                return True
            if all(claim is not None and claim.read for claim in held):
                return False  # every claim was read just now: the fence itself refused
        return False

    def _replace_claim(self, current: _Claim, changes: Mapping[str, Any]) -> bool:
        """Write the claim back only if nobody touched it since it was read (the fence)."""
        entity = {**current.entity, **changes}
        try:
            written = self._table(current.table).update_entity(
                entity, mode=UpdateMode.REPLACE, etag=current.etag, match_condition=MatchConditions.IfNotModified,
            )
        except HttpResponseError as error:
            if not _is(error, 404, 412):
                raise
            self._forget(current.event_id)
            return False
        self._hold(current.event_id, entity, written, current.table)
        return True

    @_transient
    def renew(self, event_id: str, owner: str, now: datetime, lease: timedelta) -> bool:
        return self.renew_each((event_id,), owner, now, lease)

    def _together(self, held: list[_Claim], changes: Mapping[str, Any] | None, dropped: Sequence[_Claim] = ()) -> bool:
        """`changes` to every claim of `held` and `dropped` deleted, in one entity-group transaction
        (they share a partition), each fenced by its ETag: all of it, or nothing when one of them
        was touched since (False)."""
        operations: list[Any] = [_fenced_update({**claim.entity, **(changes or {})}, claim.etag) for claim in held]
        operations += [_fenced_delete(claim.entity, claim.etag) for claim in dropped]
        for claim in (*held, *dropped):
            self._forget(claim.event_id)
        try:
            written = self._table(held[0].table).submit_transaction(operations)
        except HttpResponseError as error:
            if not _is(error, 404, 412):
                raise
            return False
        for claim, metadata in zip(held, written, strict=False):
            self._hold(claim.event_id, {**claim.entity, **(changes or {})}, metadata, claim.table)
        return True

    @_transient
    def renew_each(self, event_ids: Sequence[str], owner: str, now: datetime, lease: timedelta) -> bool:
        """Every claim checked before any is written; claims kept beside each other in one
        transaction, the others each in a write of its own, each fenced by its ETag. In a batch,
        claims of a vault's partition this store holds are renewed with the batch's other writes
        (True: the transaction is fenced by their ETags, and a refusal stops the batch then)."""
        unit, held = self._unit(), self._vault_claims(event_ids, owner)
        if unit is not None and held is not None:
            until = _stamp(now + lease)
            for index, claim in enumerate(held):
                entity = {**claim.entity, "lease_until": until}
                unit.add(Write(VAULTS, entity["PartitionKey"], entity["RowKey"], _fenced_update(entity, claim.etag),
                               replay=None if index else functools.partial(self._renewed, event_ids, owner, now, lease),
                               then=functools.partial(self._hold_written, claim.event_id, entity),
                               fence=None if index else functools.partial(self._still_held, event_ids, owner)))
            return True
        self._flush()
        return self._renew_each(event_ids, owner, now, lease)

    def _still_held(self, event_ids: Sequence[str], owner: str) -> None:
        """Raise unless `owner` holds every claim of `event_ids` as they are stored now."""
        for event_id in dict.fromkeys(event_ids):
            if self._owned_claim(event_id, owner, fresh=True) is None:
                raise TransientError(f"event {event_id}: the claim was taken over by another instance")

    def _renewed(self, event_ids: Sequence[str], owner: str, now: datetime, lease: timedelta) -> None:
        if not self._renew_each(event_ids, owner, now, lease):
            raise TransientError(f"claims {', '.join(event_ids)}: taken over by another instance")

    def _vault_claims(self, event_ids: Sequence[str], owner: str) -> list[_Claim] | None:
        """`owner`'s claims of `event_ids` as this store last wrote them, when it holds them all
        in one vault's partition; else None (a batch then writes them on their own)."""
        with self._lock:
            held = [self._held.get(event_id) for event_id in dict.fromkeys(event_ids)]
        if any(claim is None or claim.table != VAULTS or claim.entity.get("owner", "") != owner
               or claim.entity.get("done") for claim in held):
            return None
        claims = [claim for claim in held if claim is not None]
        return claims if _one_partition(claims) else None

    def _hold_written(self, event_id: str, entity: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        if "etag" in metadata:  # written as renewed (not let go of later in the same batch)
            self._hold(event_id, entity, metadata, VAULTS)

    def _renew_each(self, event_ids: Sequence[str], owner: str, now: datetime, lease: timedelta) -> bool:
        until = _stamp(now + lease)

        def renew(held: list[_Claim]) -> bool:
            if len(held) > 1 and _one_partition(held):
                return self._together(held, {"lease_until": until})
            return all([self._replace_claim(claim, {"lease_until": until}) for claim in held])

        return self._fenced(event_ids, owner, renew)

    @_transient
    def complete(
        self, event_id: str, now: datetime, owner: str | None = None, *, releasing: Sequence[str] = ()
    ) -> bool:
        """The leases are let go of first, then the event completes, each write fenced by its
        ETag: a lease another attempt took over stops the completion (False), as a lease read and
        found taken over would, without a read before every write. A lease let go of ahead of a
        completion that then fails was this attempt's, which gives up the vault anyway. In a
        batch, claims of a vault's partition this store holds complete with the batch's other
        writes (as `renew_each`)."""
        unit = self._unit()
        held = self._vault_claims([event_id, *releasing], owner) if owner is not None and unit is not None else None
        if unit is not None and held is not None and owner is not None:
            current, *let_go = held
            finished = {**_finished(current).entity, "done": True, "completed_at": _stamp(now)}
            unit.add(Write(VAULTS, finished["PartitionKey"], finished["RowKey"],
                           _fenced_update(finished, current.etag),
                           replay=functools.partial(self._completed, event_id, now, owner, releasing),
                           then=lambda _: self._let_go(event_id),
                           fence=functools.partial(self._still_held, [event_id, *releasing], owner)))
            for claim in let_go:
                unit.add(Write(VAULTS, claim.entity["PartitionKey"], claim.entity["RowKey"],
                               _fenced_delete(claim.entity, claim.etag), replay=None,
                               then=functools.partial(lambda lease_id, _: self._forget(lease_id), claim.event_id)))
            return True
        self._flush()
        return self._complete(event_id, now, owner, releasing=releasing)

    def _completed(self, event_id: str, now: datetime, owner: str, releasing: Sequence[str]) -> None:
        if not self._complete(event_id, now, owner, releasing=releasing):
            raise TransientError(f"event {event_id}: the claim was taken over by another instance")

    def _let_go(self, event_id: str) -> None:
        self._forget(event_id)
        with self._lock:
            self._where.pop(event_id, None)

    def _complete(
        self, event_id: str, now: datetime, owner: str | None = None, *, releasing: Sequence[str] = ()
    ) -> bool:
        if owner is not None:
            leases = [lease_id for lease_id in dict.fromkeys(releasing) if lease_id != event_id]

            def finish(held: list[_Claim]) -> bool:
                current, *let_go = held
                current = _finished(current)
                if let_go and _one_partition(held):
                    return self._together([current], {"done": True, "completed_at": _stamp(now)}, let_go)
                if not all([self._drop_claim(claim) for claim in let_go]):
                    return False
                return self._replace_claim(current, {"done": True, "completed_at": _stamp(now)})

            done = self._fenced([event_id, *leases], owner, finish)
            if done:
                self._let_go(event_id)
            else:
                self._forget(event_id)
            return done
        concern, partition, row = self._location(event_id)
        self._table(concern).upsert_entity(
            {
                "PartitionKey": partition,
                "RowKey": row,
                "done": True,
                "completed_at": _stamp(now),
            },
            mode=UpdateMode.MERGE,
        )
        self._forget(event_id)
        for lease_id in releasing:
            self.release(lease_id)
        return True

    @_transient
    def release(self, event_id: str, owner: str | None = None) -> bool:
        self._flush()
        if owner is None:
            current = self._owned_claim(event_id, None)
            return current is not None and self._drop_claim(current)
        return self._fenced([event_id], owner, lambda held: self._drop_claim(held[0]))

    def _drop_claim(self, current: _Claim) -> bool:
        """Delete the claim only if nobody touched it since it was read (the fence)."""
        self._forget(current.event_id)
        try:
            self._table(current.table).delete_entity(
                current.entity["PartitionKey"], current.entity["RowKey"], etag=current.etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except HttpResponseError as error:
            if not _is(error, 404, 412):  # completed or taken over meanwhile: not ours to drop any more
                raise
            return False
        return True

    # Baselines

    @_transient
    def get_baseline(self, vault_id: str) -> Baseline | None:
        self._flush()
        partition = _vault_partition(vault_id)
        entity = self._get(VAULTS, partition, BASELINE_ROW)
        if entity is None and self._migrate(vault_id):
            entity = self._get(VAULTS, partition, BASELINE_ROW)
        if entity is None:
            return None
        self._saw("baselines", entity, entity.metadata["etag"])
        return self._baseline(entity)

    @_transient
    def put_baseline(
        self, vault_id: str, config: Mapping[str, Any], etag: str | None, *, deleted: bool = False,
        now: datetime | None = None,
    ) -> str:
        """`etag` is the version the baseline was read with (`Baseline.etag`); the write is fenced
        by the entity's own ETag as last seen with that version. In a batch, a baseline this store
        read (or saw missing) is written with the batch's other writes: its new version is named
        here, ahead of the transaction that carries it."""
        partition = _vault_partition(vault_id)
        seen = self._seen("baselines", partition, BASELINE_ROW)
        unit = self._unit()
        known = (seen is not None and seen.version == etag) if etag is not None else \
            self._listed_without("baselines", partition, BASELINE_ROW)
        if unit is not None and known:
            version = uuid.uuid4().hex
            document = self._pack(config)
            entity = self._baseline_entity(vault_id, partition, version, deleted=deleted, now=now, document=document)
            operation: tuple[str, dict[str, Any], dict[str, Any]] = (
                _fenced_update(entity, str(seen.etag)) if etag is not None and seen is not None
                else ("create", entity, {}))
            previous = {"doc_ref": seen.doc_ref} if seen is not None else None
            unit.add(Write(VAULTS, partition, BASELINE_ROW, operation,
                           replay=functools.partial(self._put_baseline, vault_id, config, etag, deleted, now),
                           then=functools.partial(self._baseline_written, entity, previous),
                           spilled=[document]))
            return version
        self._flush()
        return self._put_baseline(vault_id, config, etag, deleted, now)

    def _baseline_written(self, entity: Mapping[str, Any], previous: Mapping[str, Any] | None,
                          metadata: Mapping[str, Any]) -> None:
        self._discard(previous)
        self._saw("baselines", entity, metadata.get("etag"))

    @staticmethod
    def _baseline_entity(vault_id: str, partition: str, version: str, *, deleted: bool, now: datetime | None,
                         document: Mapping[str, Any]) -> dict[str, Any]:
        return {"PartitionKey": partition, "RowKey": BASELINE_ROW, "vault_id": vault_id, "deleted": deleted,
                "updated": _stamp(now if now is not None else datetime.now(UTC)), "version": version, **document}

    def _put_baseline(self, vault_id: str, config: Mapping[str, Any], etag: str | None, deleted: bool,
                      now: datetime | None) -> str:
        partition = _vault_partition(vault_id)
        table = self._table(VAULTS)
        previous: Mapping[str, Any] | None = None
        stored_etag: str | None = None
        seen = self._seen("baselines", partition, BASELINE_ROW)
        if etag is not None and seen is not None and seen.version == etag:
            previous, stored_etag = {"doc_ref": seen.doc_ref}, seen.etag  # as last read: fenced by its ETag
        elif etag is not None:
            previous = self._get(VAULTS, partition, BASELINE_ROW)
            if previous is None or (previous.get("version") or str(previous.metadata["etag"])) != etag:
                raise ConcurrencyError(f"baseline of {vault_id} was changed or removed (etag {etag} is stale)")
            stored_etag = str(previous.metadata["etag"])
        version = uuid.uuid4().hex
        document = self._pack(config)
        entity = self._baseline_entity(vault_id, partition, version, deleted=deleted, now=now, document=document)
        try:
            if stored_etag is None:
                metadata = table.create_entity(entity)
            else:
                metadata = table.update_entity(
                    entity, mode=UpdateMode.REPLACE, etag=stored_etag, match_condition=MatchConditions.IfNotModified
                )
        except HttpResponseError as error:
            self._discard(document)
            if _is(error, 409):
                raise ConcurrencyError(f"baseline of {vault_id} already exists") from error
            if _is(error, 404, 412):
                stale = f"baseline of {vault_id} was changed or removed (etag {etag} is stale)"
                raise ConcurrencyError(stale) from error
            raise
        self._discard(previous)
        self._saw("baselines", entity, metadata["etag"])
        return version

    @_transient
    def list_baselines(self) -> list[Baseline]:
        self._flush()
        found = {vault_key(entity["vault_id"]): self._baseline(entity) for entity in self._table(VAULTS).query_entities(
            f"RowKey eq '{BASELINE_ROW}'")}
        if self._has_legacy():  # vaults no event has read since the layout changed
            for entity in self._legacy_rows("baselines", None):
                if vault_key(entity["vault_id"]) not in found:
                    found[vault_key(entity["vault_id"])] = self._baseline(entity)
        return sorted(found.values(), key=lambda baseline: vault_key(baseline.vault_id))

    def _baseline(self, entity: TableEntity) -> Baseline:
        return Baseline(
            vault_id=entity["vault_id"],
            config=self._unpack(entity),
            etag=str(entity.get("version") or entity.metadata["etag"]),
            deleted=bool(entity.get("deleted")),
            updated=_unstamp(entity["updated"]),
        )

    # Audit trail and rejected payloads

    @_transient
    def append_audit(self, record: AuditRecord) -> None:
        """A vault's record in its partition (in a batch, with the event's other writes)."""
        partition = _vault_partition(record.vault_id) if record.vault_id is not None else "no-vault"
        entity: dict[str, Any] = {
            "PartitionKey": partition,
            "RowKey": AUDIT + _sequence(record.at),  # its time: read from here, not kept twice
            "event_id": record.event_id[:DISPLAY_CHARS],
        }
        compact = audit_document(record.vault_id, record.outcome, record.event_id)
        spilled: list[Mapping[str, Any]] = []
        if len(record.event_id) <= DISPLAY_CHARS and len(compact) <= CHUNK_BYTES:
            entity["audit"] = compact  # one property, deflated against the audit dictionary
        else:
            document = self._pack({"event_id": record.event_id, "vault_id": record.vault_id,
                                   "outcome": record.outcome})
            entity.update(document)
            spilled.append(document)
        if record.attempt is not None:
            entity["attempt"] = record.attempt
        self._plain_write(entity, "create", spilled)

    def _plain_write(self, entity: dict[str, Any], kind: str, spilled: Sequence[Mapping[str, Any]] = ()) -> None:
        """A write to the vaults' table that needs nothing read first (`kind`: a fresh row's
        "create", or an "upsert" replacing whatever is there): held back in a batch, else made now."""
        table = self._table(VAULTS)
        options: dict[str, Any] = {} if kind == "create" else {"mode": UpdateMode.REPLACE}
        made = functools.partial(table.create_entity if kind == "create" else table.upsert_entity, entity, **options)
        unit = self._unit()
        if unit is None:
            made()
            return
        unit.add(Write(VAULTS, entity["PartitionKey"], entity["RowKey"], (kind, entity, options), replay=made,
                       spilled=list(spilled)))

    @_transient
    def list_audit(self, vault_id: str | None = None) -> list[AuditRecord]:
        self._flush()
        audit = _starting(AUDIT)
        if vault_id is None:
            entities = list(self._table(VAULTS).query_entities(audit))
        else:
            entities = list(self._table(VAULTS).query_entities(
                f"PartitionKey eq @pk and {audit}", parameters={"pk": _vault_partition(vault_id)}))
        if self._has_legacy():  # written before the layout changed
            entities += (self._legacy_rows("audit", None) if vault_id is None
                         else self._legacy_query("audit", _legacy_partition(vault_id)))
        records = []
        timed = sorted(((_audit_time(entity), entity["RowKey"].removeprefix(AUDIT), entity) for entity in entities),
                       key=lambda item: item[:2])
        for at, _, entity in timed:
            if "audit" in entity:
                event_id = entity["event_id"]
                vault, outcome = audit_fields(None, entity["audit"], event_id)
            else:
                document = self._unpack(entity)
                event_id, vault, outcome = document["event_id"], document["vault_id"], document["outcome"]
            records.append(AuditRecord(event_id=event_id, vault_id=vault, at=_unstamp(at), outcome=outcome))
        return records

    @_transient
    def audited(self, event_id: str, vault_id: str | None, attempt: str | None = None) -> bool:
        self._flush()
        partition = _vault_partition(vault_id) if vault_id is not None else "no-vault"
        parameters = {"pk": partition, "event": event_id[:DISPLAY_CHARS]}
        query = "PartitionKey eq @pk and event_id eq @event"
        if attempt is not None:
            query += " and attempt eq @attempt"
            parameters["attempt"] = attempt
        entities = self._table(VAULTS).query_entities(f"{query} and {_starting(AUDIT)}", parameters=parameters,
                                                      select=["event_id"], results_per_page=1)
        if next(iter(entities), None) is not None:
            return True
        if not self._has_legacy():
            return False
        earlier = {**parameters, "pk": _legacy_partition(vault_id) if vault_id is not None else "no-vault"}
        return bool(self._legacy_rows("audit", query, earlier, select=["event_id"]))

    @_transient
    def record_rejected(self, rejected: RejectedPayload) -> None:
        self._flush()  # after what the batch held back (the claims' renewal that fences it)
        at = _stamp(rejected.at)
        entity: dict[str, Any] = {
            "PartitionKey": at[:7],  # one partition per month
            "RowKey": _sequence(rejected.at),
            "at": at,
            "reason": rejected.reason[:DISPLAY_CHARS],
            **self._pack({"reason": rejected.reason, "raw": rejected.raw, "event_id": rejected.event_id}),
        }
        if rejected.event_id is not None:
            entity["event_id"] = rejected.event_id[:DISPLAY_CHARS]
        self._table("rejected").create_entity(entity)

    @_transient
    def list_rejected(self) -> list[RejectedPayload]:
        self._flush()
        payloads = []
        for entity in sorted(self._table("rejected").list_entities(), key=lambda entity: entity["RowKey"]):
            document = self._unpack(entity)
            payloads.append(
                RejectedPayload(
                    reason=document["reason"], raw=document["raw"], at=_unstamp(entity["at"]),
                    event_id=document["event_id"],
                )
            )
        return payloads

    # Open findings

    @_transient
    def open_finding(self, vault_id: str, rule: str, finding: Mapping[str, Any], now: datetime) -> bool:
        """In a batch, a finding this store read (or saw missing) is written with the batch's
        other writes: refreshed keeping when it was opened, or opened."""
        opened = _stamp(now)
        partition, row = _vault_partition(vault_id), FINDING + _digest(rule)
        split = found_against.split(vault_key(vault_id), finding)
        seen = self._seen("findings", partition, row)
        refreshed_as = seen if seen is not None and seen.etag is not None and seen.opened is not None else None
        unit = self._unit()
        if unit is not None and (refreshed_as is not None or self._listed_without("findings", partition, row)):
            spilled: list[Mapping[str, Any]] = []
            if split.etag is not None and split.config is not None:
                kept = self._found_against_entity(partition, split.etag, split.config, opened)
                spilled.append(kept)
                unit.add(Write(VAULTS, partition, kept["RowKey"], ("upsert", kept, {"mode": UpdateMode.MERGE}),
                               replay=None))
            document = self._pack(split.finding)
            spilled.append(document)
            entity = self._finding_entity(vault_id, rule, partition, row, etag=split.etag, document=document)
            if refreshed_as is not None and refreshed_as.etag is not None:
                refreshed = {**entity, "opened": refreshed_as.opened}
                previous: Mapping[str, Any] | None = {"doc_ref": refreshed_as.doc_ref}
                operation = _fenced_update(refreshed, refreshed_as.etag)
            else:
                refreshed, previous = {**entity, "opened": opened}, None
                operation = ("create", refreshed, {})
            unit.add(Write(VAULTS, partition, row, operation,
                           replay=functools.partial(self._open_finding, vault_id, rule, finding, now),
                           then=functools.partial(self._finding_written, refreshed, previous), spilled=spilled))
            return seen is None
        self._flush()
        return self._open_finding(vault_id, rule, finding, now)

    def _finding_written(self, entity: Mapping[str, Any], previous: Mapping[str, Any] | None,
                         metadata: Mapping[str, Any]) -> None:
        self._discard(previous)
        self._saw("findings", entity, metadata.get("etag"))

    @staticmethod
    def _finding_entity(vault_id: str, rule: str, partition: str, row: str, *, etag: str | None,
                        document: Mapping[str, Any]) -> dict[str, Any]:
        entity = {"PartitionKey": partition, "RowKey": row, "vault_id": vault_id, "rule": rule, **document}
        if etag is not None:
            entity["baseline_etag"] = etag
        return entity

    def _open_finding(self, vault_id: str, rule: str, finding: Mapping[str, Any], now: datetime) -> bool:
        opened = _stamp(now)
        partition, row = _vault_partition(vault_id), FINDING + _digest(rule)
        split = found_against.split(vault_key(vault_id), finding)
        if split.etag is not None and split.config is not None:  # before the finding naming it
            self._table(VAULTS).upsert_entity(self._found_against_entity(partition, split.etag, split.config, opened),
                                              mode=UpdateMode.MERGE)
        table = self._table(VAULTS)
        document = self._pack(split.finding)
        entity = self._finding_entity(vault_id, rule, partition, row, etag=split.etag, document=document)
        try:
            seen = self._seen("findings", partition, row, pop=True)
            if seen is not None and seen.etag is not None and seen.opened is not None \
                    and self._refresh_finding(entity, seen.opened, seen.etag):
                self._discard({"doc_ref": seen.doc_ref})
                return False
            for _ in range(_ROUNDS):
                try:
                    created = {**entity, "opened": opened}
                    self._saw("findings", created, table.create_entity(created).get("etag"))
                    return True
                except HttpResponseError as error:
                    if not _is(error, 409):
                        raise
                current = self._get(VAULTS, partition, row)
                if current is None:  # closed in between: open afresh
                    continue
                if not self._refresh_finding(entity, current["opened"], str(current.metadata["etag"])):
                    continue
                self._discard(current)
                return False
        except BaseException:
            self._discard(document)
            raise
        self._discard(document)
        raise TransientError(f"finding {rule} of {vault_id} kept changing under {_ROUNDS} attempts to write it")

    def _refresh_finding(self, entity: Mapping[str, Any], opened: str, etag: str) -> bool:
        """Replace an open finding, keeping when it was opened, only if it is still as read (`etag`);
        False when it was refreshed or closed meanwhile."""
        refreshed = {**entity, "opened": opened}
        try:
            written = self._table(VAULTS).update_entity(
                refreshed, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified)
        except HttpResponseError as error:
            if not _is(error, 404, 412):
                raise
            return False
        self._saw("findings", refreshed, written.get("etag"))
        return True

    def _found_against_entity(self, partition: str, etag: str, config: Mapping[str, Any], at: str) -> dict[str, Any]:
        """The configuration findings of this vault name by `etag`, with a fresh `at` that keeps
        retention from removing it while a finding is being opened against it. An ETag names one
        content, so one stored before holds the same: it is merged over, never read first."""
        return {"PartitionKey": partition, "RowKey": AGAINST + _digest(etag), "baseline_etag": etag, "at": at,
                **self._pack(config)}

    def _found_against_loader(self, partition: str, etag: str) -> Callable[[], Mapping[str, Any]]:
        def load() -> Mapping[str, Any]:
            entity = self._get(VAULTS, partition, AGAINST + _digest(etag))
            if entity is None:
                raise RuntimeError(f"the baseline {etag} an open finding was found against is not stored")
            stored: Mapping[str, Any] = self._unpack(entity)
            return stored

        return _transient(load)

    @_transient
    def close_finding(self, vault_id: str, rule: str) -> bool:
        """The configuration a closed finding named stays until retention removes it (see `prune`):
        removing it here could race with a finding being opened against it. In a batch, a finding
        this store read is closed with the batch's other writes (one it saw missing needs none)."""
        partition, row = _vault_partition(vault_id), FINDING + _digest(rule)
        unit = self._unit()
        seen = self._seen("findings", partition, row)
        if unit is not None and seen is not None and seen.etag is not None:
            keys = {"PartitionKey": partition, "RowKey": row}
            unit.add(Write(VAULTS, partition, row, _fenced_delete(keys, seen.etag),
                           replay=functools.partial(self._close_finding, vault_id, rule),
                           then=functools.partial(self._forgotten, "findings", partition, row, seen)))
            return True
        if unit is not None and self._listed_without("findings", partition, row):
            return False
        self._flush()
        return self._close_finding(vault_id, rule)

    def _forgotten(self, concern: str, partition: str, row: str, seen: _Seen, _: Mapping[str, Any]) -> None:
        """An entity a batch deleted: forgotten, and the chunks it spilled dropped."""
        self._seen(concern, partition, row, pop=True)
        self._discard({"doc_ref": seen.doc_ref})

    def _close_finding(self, vault_id: str, rule: str) -> bool:
        partition, row = _vault_partition(vault_id), FINDING + _digest(rule)
        seen = self._seen("findings", partition, row, pop=True)
        if seen is not None and seen.etag is not None and self._delete_finding(partition, row, seen.etag):
            self._discard({"doc_ref": seen.doc_ref})
            return True
        for _ in range(_ROUNDS):
            current = self._get(VAULTS, partition, row)
            if current is None:
                return False
            if not self._delete_finding(partition, row, str(current.metadata["etag"])):
                continue  # refreshed meanwhile: read it again
            self._discard(current)
            return True
        raise TransientError(f"finding {rule} of {vault_id} kept changing under {_ROUNDS} attempts to close it")

    def _delete_finding(self, partition: str, row: str, etag: str) -> bool:
        """Delete an open finding only if it is still as read (`etag`); False when it was refreshed."""
        try:
            self._table(VAULTS).delete_entity(
                partition, row, etag=etag, match_condition=MatchConditions.IfNotModified)
        except HttpResponseError as error:
            if not _is(error, 412):
                raise
            return False
        return True

    @_transient
    def open_findings(self, vault_id: str) -> list[OpenFinding]:
        return self._findings(vault_id, _vault_partition(vault_id), self._listing(vault_id, FINDING))

    def _listing(self, key: str, prefix: str) -> list[TableEntity]:
        """The rows of `key`'s partition whose RowKeys start with `prefix`, read after what a batch
        held back and once the vault's state has moved from the earlier layout."""
        self._flush()
        self._migrate(key)
        return list(self._table(VAULTS).query_entities(f"PartitionKey eq @pk and {_starting(prefix)}",
                                                       parameters={"pk": _vault_partition(key)}))

    def _findings(self, vault_id: str, partition: str, entities: Sequence[TableEntity]) -> list[OpenFinding]:
        """The open findings of a listing of the vault's partition (remembered as read whole)."""
        key = vault_key(vault_id)
        self._listed("findings", partition, entities)
        findings = []
        for entity in entities:
            finding = self._unpack(entity)
            etag = entity.get("baseline_etag")
            if etag is not None:
                finding = found_against.joined(key, finding, self._found_against_loader(partition, etag))
            findings.append(OpenFinding(vault_id=entity["vault_id"], rule=entity["rule"], finding=finding,
                                        opened=_unstamp(entity["opened"])))
        return sorted(findings, key=lambda finding: finding.rule)

    # Marks for history rules and the circuit breaker

    @_transient
    def add_mark(self, series: str, key: str, member: str, at: datetime) -> None:
        """In the partition of the vault `key` names (a caller's own for a caller's key); in a
        batch, with the batch's other writes."""
        entity = {
            "PartitionKey": _key_partition(key),
            # the mark's time is in its RowKey, right after the series and key; 64 bits of the
            # member's digest tell marks of one instant apart
            "RowKey": f"{_mark_prefix(series, key)}{_stamp(at)}-{_digest(member)[:KEY_DIGITS]}",
            "member": member,
        }
        self._plain_write(entity, "upsert")

    @_transient
    def marks_since(self, series: str, key: str, since: datetime) -> list[tuple[str, datetime]]:
        return self.marks_since_each([MarkQuery(series, key, since)])[0]

    @_transient
    def marks_since_each(self, queries: Sequence[MarkQuery]) -> list[list[tuple[str, datetime]]]:
        """One query per partition the series are kept in (a vault's, a caller's), side by side."""
        self._flush()
        return self._read_partitions({}, queries).marks

    def _read_partitions(self, rows: Mapping[str, Sequence[str]], marks: Sequence[MarkQuery]) -> _Read:
        """The entities of each partition whose RowKeys start with one of `rows[partition]`, and
        the `marks` asked for, with one query per partition, the queries side by side."""
        filters: dict[str, list[str]] = {partition: [_starting(prefix) if prefix.endswith("|") else
                                                     f"RowKey eq '{prefix}'" for prefix in prefixes]
                                         for partition, prefixes in rows.items()}
        for query in marks:
            filters.setdefault(_key_partition(query.key), []).append(
                _starting(_mark_prefix(query.series, query.key), _stamp(query.since)))
        table = self._table(VAULTS)

        def read(partition: str) -> list[TableEntity]:
            return list(table.query_entities(f"PartitionKey eq @pk and ({' or '.join(filters[partition])})",
                                             parameters={"pk": partition}))

        if len(filters) == 1:
            entities = {partition: read(partition) for partition in filters}
        else:
            futures = {partition: self._pool().submit(read, partition) for partition in filters}
            entities = {partition: future.result() for partition, future in futures.items()}
        answers = []
        for query in marks:
            prefix, since = _mark_prefix(query.series, query.key), _stamp(query.since)
            found = [(entity["member"], _unstamp(entity["RowKey"][len(prefix):len(prefix) + STAMP_CHARS]))
                     for entity in entities[_key_partition(query.key)]
                     if entity["RowKey"].startswith(prefix) and entity["RowKey"][len(prefix):] >= since]
            if not found and query.series in KEPT_BEHIND:
                found = self._first_writes(query)
            answers.append(sorted(found, key=lambda mark: (mark[1], mark[0])))
        return _Read(entities, answers)

    def _first_writes(self, query: MarkQuery) -> list[tuple[str, datetime]]:
        """A series `_migrate` leaves behind, as the earlier layout keeps it (none when there is none)."""
        if not self._has_legacy():
            return []
        entities = self._legacy_rows(
            "marks", "PartitionKey eq @pk and RowKey ge @since", select=["member", "RowKey"],
            parameters={"pk": _digest(f"{query.series}\n{vault_key(query.key)}"), "since": _stamp(query.since)})
        return [(entity["member"], _unstamp(entity["RowKey"][:STAMP_CHARS])) for entity in entities]

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._readers is None:
                self._readers = ThreadPoolExecutor(max_workers=LOAD_THREADS, thread_name_prefix="kvguard-tables")
            return self._readers

    # Write-ahead actions

    @_transient
    def begin_action(self, scope: str, handler: str, intent: Mapping[str, Any], now: datetime) -> None:
        """In a batch, an intent this store read (or saw missing) is written with the batch's
        other writes (the claims' renewal that fences it among them)."""
        partition, row = _vault_partition(scope), INTENT + _digest(handler)
        seen = self._seen("intents", partition, row)
        unit = self._unit()
        if unit is not None and (seen is not None or self._listed_without("intents", partition, row)):
            document = self._pack(intent)
            entity = self._intent_entity(scope, handler, partition, row, now=now, document=document)
            previous = {"doc_ref": seen.doc_ref} if seen is not None else None
            unit.add(Write(VAULTS, partition, row, ("upsert", entity, {"mode": UpdateMode.REPLACE}),
                           replay=functools.partial(self._begin_action, scope, handler, intent, now),
                           then=functools.partial(self._intent_written, entity, previous), spilled=[document]))
            return
        self._flush()
        self._begin_action(scope, handler, intent, now)

    @staticmethod
    def _intent_entity(scope: str, handler: str, partition: str, row: str, *, now: datetime,
                       document: Mapping[str, Any]) -> dict[str, Any]:
        return {"PartitionKey": partition, "RowKey": row, "scope": scope[:DISPLAY_CHARS], "handler": handler,
                "at": _stamp(now), **document}

    def _intent_written(self, entity: Mapping[str, Any], previous: Mapping[str, Any] | None,
                        metadata: Mapping[str, Any]) -> None:
        self._saw("intents", entity, metadata.get("etag"))
        self._discard(previous)

    def _begin_action(self, scope: str, handler: str, intent: Mapping[str, Any], now: datetime) -> None:
        partition, row = _vault_partition(scope), INTENT + _digest(handler)
        seen = self._seen("intents", partition, row)
        previous: Mapping[str, Any] | None = {"doc_ref": seen.doc_ref} if seen is not None else None
        if seen is None and not self._listed_without("intents", partition, row):
            previous = self._get(VAULTS, partition, row)
        entity = self._intent_entity(scope, handler, partition, row, now=now, document=self._pack(intent))
        written = self._table(VAULTS).upsert_entity(entity, mode=UpdateMode.REPLACE)
        self._intent_written(entity, previous, written)

    @_transient
    def pending_actions(self, scope: str) -> list[PendingAction]:
        return self._intents(scope, _vault_partition(scope), self._listing(scope, INTENT))

    def _intents(self, scope: str, partition: str, entities: Sequence[TableEntity]) -> list[PendingAction]:
        """The intents of a listing of the scope's partition (remembered as read whole)."""
        self._listed("intents", partition, entities)
        actions = [PendingAction(scope, entity["handler"], self._unpack(entity), _unstamp(entity["at"]))
                   for entity in entities]
        return sorted(actions, key=lambda action: action.handler)

    @_transient
    def finish_action(self, scope: str, handler: str) -> None:
        partition, row = _vault_partition(scope), INTENT + _digest(handler)
        unit = self._unit()
        seen = self._seen("intents", partition, row)
        if unit is not None and seen is not None:
            unit.add(Write(VAULTS, partition, row, ("delete", {"PartitionKey": partition, "RowKey": row}, {}),
                           replay=functools.partial(self._delete, "intents", partition, row, table=VAULTS),
                           then=functools.partial(self._forgotten, "intents", partition, row, seen)))
            return
        if unit is not None and self._listed_without("intents", partition, row):
            return
        self._flush()
        self._delete("intents", partition, row, table=VAULTS)

    def _delete(self, concern: str, partition: str, row: str, *, table: str) -> None:
        seen = self._seen(concern, partition, row, pop=True)
        current = {"doc_ref": seen.doc_ref} if seen is not None else self._get(table, partition, row)
        if current is None:
            return
        try:
            self._table(table).delete_entity(partition, row)
        except HttpResponseError as error:
            if not _is(error, 404):
                raise
        self._discard(current)

    # Outbox

    @_transient
    def put_outbox(self, key: str, item: Mapping[str, Any], now: datetime) -> None:
        self._flush()
        row = _digest(key)
        previous = self._get("outbox", "outbox", row)
        at = previous["at"] if previous is not None else _stamp(now)
        self._table("outbox").upsert_entity(
            {"PartitionKey": "outbox", "RowKey": row, "key": key[:DISPLAY_CHARS], "at": at,
             **self._pack({"key": key, "item": item})},
            mode=UpdateMode.REPLACE,
        )
        self._discard(previous)

    @_transient
    def list_outbox(self) -> list[OutboxItem]:
        self._flush()
        items = []
        for entity in self._table("outbox").query_entities("PartitionKey eq 'outbox'"):
            document = self._unpack(entity)
            items.append(OutboxItem(document["key"], document["item"], _unstamp(entity["at"])))
        return sorted(items, key=lambda item: (item.at, item.key))

    @_transient
    def drop_outbox(self, key: str) -> None:
        self._flush()
        self._delete("outbox", "outbox", _digest(key), table="outbox")

    # Retention

    @_transient
    def prune(self, older_than: datetime) -> int:
        """A filtered scan per table, deleting what it finds one entity at a time (Table Storage
        batches only within one partition); a failure part way leaves the rest for the next run."""
        self._flush()
        cutoff = _stamp(older_than)
        finished = "( done eq true and completed_at lt @cutoff ) or ( done eq false and lease_until lt @cutoff )"
        filters = {
            "claims": finished,
            VAULTS: f"{finished} or ( RowKey ge '{AUDIT}' and RowKey lt @audit_cutoff )"
                    f" or ( {_starting(INTENT)} and at lt @cutoff )",
            "rejected": "at lt @cutoff",
            "outbox": "at lt @cutoff",
        }
        parameters = {"cutoff": cutoff, "audit_cutoff": AUDIT + cutoff}  # an audit record's time starts its RowKey
        removed = 0
        for concern, query in filters.items():
            table = self._table(concern)
            removed += self._delete_found(table, list(table.query_entities(query, parameters=parameters)))
        marks = self._table(VAULTS).query_entities(_starting(MARK), select=["PartitionKey", "RowKey"])
        stale = [mark for mark in marks if mark["RowKey"].rsplit("|", 1)[1][:STAMP_CHARS] < cutoff]
        removed += self._delete_found(self._table(VAULTS), stale) + self._prune_found_against(cutoff)
        for concern, query in (("audit", "at lt @cutoff"), ("marks", "RowKey lt @cutoff"),
                               ("intents", "at lt @cutoff")):
            removed += self._prune_legacy(concern, query, cutoff)
        return removed

    def _prune_legacy(self, concern: str, query: str, cutoff: str) -> int:
        """Retention over a table of the earlier layout, while there is one."""
        if not self._has_legacy():
            return 0
        return self._delete_found(self._legacy_table(concern), self._legacy_rows(concern, query, {"cutoff": cutoff}))

    def _delete_found(self, table: TableClient, entities: Sequence[TableEntity]) -> int:
        removed = 0
        for entity in entities:
            try:
                table.delete_entity(entity["PartitionKey"], entity["RowKey"])
            except HttpResponseError as error:
                if not _is(error, 404):
                    raise
                continue
            self._discard(entity)
            removed += 1
        return removed

    def _prune_found_against(self, cutoff: str) -> int:
        """Configurations older than `cutoff` that no open finding names. Each is deleted only as
        it was read (its ETag): one touched meanwhile by a finding opened against it stays."""
        table, removed = self._table(VAULTS), 0
        for entity in list(table.query_entities(f"{_starting(AGAINST)} and at lt @cutoff",
                                                parameters={"cutoff": cutoff},
                                                select=["PartitionKey", "RowKey", "baseline_etag", "doc_ref"])):
            named = table.query_entities(
                f"PartitionKey eq @pk and {_starting(FINDING)} and baseline_etag eq @etag",
                parameters={"pk": entity["PartitionKey"], "etag": entity["baseline_etag"]}, select=["RowKey"],
                results_per_page=1,
            )
            if next(iter(named), None) is not None:
                continue
            try:
                table.delete_entity(entity["PartitionKey"], entity["RowKey"], etag=entity.metadata["etag"],
                                    match_condition=MatchConditions.IfNotModified)
            except HttpResponseError as error:
                if not _is(error, 404, 412):
                    raise
                continue
            self._discard(entity)
            removed += 1
        return removed

    # The ledger of own writes: in the partition of the resource written, rows by operation and time.

    @staticmethod
    def _own_write_prefix(operation: str) -> str:
        return f"{OWN}{_digest(operation.strip().lower())[:KEY_DIGITS]}|"

    @_transient
    def record_own_write(self, entry: OwnWrite) -> None:
        """In a batch, with its other writes (a write-ahead intent's ledger entries)."""
        entity: dict[str, Any] = {
            "PartitionKey": _vault_partition(entry.resource_id),
            "RowKey": self._own_write_prefix(entry.operation) + _sequence(entry.at),
            "resource_id": entry.resource_id[:DISPLAY_CHARS],
            "operation": entry.operation.strip().lower(),
            "at": _stamp(entry.at),
            "request": entry.request_id,
            # Event ids are kept as digests: whole, whatever their length.
            "written_for": _digest(entry.event_id) if entry.event_id else "",
            "attempt": entry.attempt or "",
            "voided": False,
        }
        self._plain_write(entity, "create")

    @_transient
    def match_own_write(
        self, resource_id: str, operation: str, request_id: str, *, since: datetime, until: datetime,
    ) -> bool:
        self._flush()
        # RowKeys carry the entry's stamp after the prefix: `until` + "~" sorts after every key of that instant.
        prefix = self._own_write_prefix(operation)
        window = {"pk": _vault_partition(resource_id), "since": prefix + _stamp(since),
                  "until": prefix + _stamp(until) + _END, "request": request_id}
        entries = self._table(VAULTS).query_entities(
            "PartitionKey eq @pk and RowKey ge @since and RowKey lt @until and request eq @request",
            parameters=window, select=["voided"])
        if any(not entry.get("voided") for entry in entries):
            return True
        if not self._has_legacy():
            return False
        legacy = {**window, "pk": _legacy_own_write_partition(resource_id, operation), "since": _stamp(since),
                  "until": _stamp(until) + _END}
        written_before = self._legacy_rows(
            "ownwrites", "PartitionKey eq @pk and RowKey ge @since and RowKey lt @until and request eq @request",
            legacy, select=["voided"])
        return any(not entry.get("voided") for entry in written_before)

    @_transient
    def void_own_write(self, entry: OwnWrite) -> None:
        self._flush()
        table = self._table(VAULTS)
        found = table.query_entities(
            f"PartitionKey eq @pk and {_starting(self._own_write_prefix(entry.operation))} and request eq @request",
            parameters={"pk": _vault_partition(entry.resource_id), "request": entry.request_id},
            select=["PartitionKey", "RowKey"])
        for row in found:
            try:
                table.update_entity({"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"], "voided": True},
                                    mode=UpdateMode.MERGE)
            except HttpResponseError as error:
                if not _is(error, 404):  # pruned meanwhile: nothing left to match
                    raise

    @_transient
    def prune_own_writes(self, older_than: datetime) -> int:
        self._flush()
        table = self._table(VAULTS)
        stale = list(table.query_entities(f"{_starting(OWN)} and at lt @cutoff",
                                          parameters={"cutoff": _stamp(older_than)},
                                          select=["PartitionKey", "RowKey"]))
        return self._delete_found(table, stale) + self._prune_legacy("ownwrites", "at lt @cutoff", _stamp(older_than))

    # The earlier layout: one table per concern. Read on, and moved a vault at a time.

    def _has_legacy(self) -> bool:
        """Whether this account holds tables of the earlier layout (asked once per store)."""
        if self._legacy is None:
            name = self._prefix + "baselines"
            self._legacy = any(True for _ in self._service.query_tables("TableName eq @name",
                                                                        parameters={"name": name}))
        return self._legacy

    def _legacy_table(self, concern: str) -> TableClient:
        return self._service.get_table_client(self._prefix + concern)

    def _legacy_get(self, concern: str, partition: str, row: str) -> TableEntity | None:
        return _entity(self._legacy_table(concern), partition, row)  # its table gone is none there either

    def _legacy_query(self, concern: str, partition: str) -> list[TableEntity]:
        return self._legacy_rows(concern, "PartitionKey eq @pk", {"pk": partition})

    def _legacy_rows(self, concern: str, query: str | None, parameters: Mapping[str, Any] | None = None,
                     **options: Any) -> list[TableEntity]:
        """The rows of a table of the earlier layout that `query` selects (all with None); none
        when that table was never made (the earlier layout made each on first use)."""
        table = self._legacy_table(concern)
        try:
            rows = table.list_entities(**options) if query is None else table.query_entities(
                query, parameters=dict(parameters or {}), **options)
            return list(rows)
        except HttpResponseError as error:
            if _is(error, 404):
                return []
            raise

    def _migrate(self, vault_id: str, *, missing: bool = False) -> bool:
        """Move a vault's state from the earlier layout to its partition: its baseline (its
        version is the ETag it had, which the configurations its findings name are keyed by), open
        findings and those configurations, intents, and the marks the history rules and the circuit
        breaker count under the vault (a vault without a baseline can have findings and intents
        too). A `moved` row, written last, says it is done (a crash part way moves it again; every
        copy is an upsert); a vault with a baseline here needs no move either. The earlier tables
        keep their copy; a caller's marks stay behind (the burst windows they count are minutes
        long), and so does a caller's first write of a vault (`caller_writes`), read there while the
        vault has none here (`_first_writes`). True when anything was moved.

        Only a vault not moved yet is moved (`missing`: the caller just read its partition and
        found neither row): the earlier tables' copy is never read over this layout's. A vault
        event moves its vault under the vault's lease; the baseline is written only if none is
        there, so two instances moving one vault leave one baseline."""
        if not self._has_legacy():
            return False
        partition = _vault_partition(vault_id)
        with self._lock:
            if partition in self._here:
                return False
        if not missing and any(True for _ in self._table(VAULTS).query_entities(
                f"PartitionKey eq @pk and (RowKey eq '{BASELINE_ROW}' or RowKey eq '{MOVED_ROW}')",
                parameters={"pk": partition}, select=["RowKey"])):
            self._moved(partition)
            return False
        earlier = _legacy_partition(vault_id)
        table = self._table(VAULTS)
        moved = 0
        for concern, prefix in (("findings", FINDING), ("foundagainst", AGAINST), ("intents", INTENT)):
            for entity in self._legacy_query(concern, earlier):
                table.upsert_entity({**entity, "PartitionKey": partition, "RowKey": prefix + entity["RowKey"]},
                                    mode=UpdateMode.REPLACE)
                moved += 1
        key = vault_key(vault_id)
        for series in ("grants", "remediations"):
            for mark in self._legacy_query("marks", _digest(f"{series}\n{key}")):
                table.upsert_entity({"PartitionKey": partition, "RowKey": _mark_prefix(series, key) + mark["RowKey"],
                                     "member": mark["member"]}, mode=UpdateMode.REPLACE)
                moved += 1
        baseline = self._legacy_get("baselines", earlier, "baseline")
        if baseline is not None:
            moved += 1
            try:
                table.create_entity({**baseline, "PartitionKey": partition,
                                     "version": str(baseline.get("version") or baseline.metadata["etag"])})
            except HttpResponseError as error:
                if not _is(error, 409):  # 409: moved (or written) by another instance meanwhile; that one stands
                    raise
        table.upsert_entity({"PartitionKey": partition, "RowKey": MOVED_ROW, "rows": moved}, mode=UpdateMode.REPLACE)
        self._moved(partition)
        return moved > 0

    def _moved(self, partition: str) -> None:
        with self._lock:
            if len(self._here) >= REMEMBERED_REFS:
                self._here.clear()
            self._here.add(partition)


def _entity(table: TableClient, partition: str, row: str) -> TableEntity | None:
    try:
        return table.get_entity(partition, row)
    except HttpResponseError as error:
        if _is(error, 404):
            return None
        raise


def _legacy_own_write_partition(resource_id: str, operation: str) -> str:
    return _digest(f"{vault_key(resource_id)}\n{operation.strip().lower()}")
