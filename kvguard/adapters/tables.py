"""The StateStore on Azure Table Storage (Azurite locally and in tests).

One table per concern — `{prefix}claims`, `baselines`, `audit`, `rejected`, `findings`,
`foundagainst` (the configurations open findings name by ETag: `kvguard.adapters.found_against`),
`marks`, `intents`, `outbox`, `ownwrites` (the ledger of own writes), and `chunks` for values too
large to sit inline — each created on first use.

- Keys: PartitionKey and RowKey may not hold `/`, `\\`, `#`, `?` (all common in resource ids and
  event ids), so ids are encoded as the SHA-256 hex of their `vault_key` (or of the id itself for
  event ids and rule ids); the original id stays in a property for people to read, except what
  grows with every event: an audit record names its vault in its document only, a mark keeps
  its member and time, a finished claim its event id.
- Concurrency: claims are deduplicated by `create_entity` (409 when the claim exists), an expired
  lease is taken over and baselines are replaced with the entity's ETag and
  `MatchConditions.IfNotModified` (412 when someone wrote first). A claim carries its owner's
  token: renew, complete and release write it back with the ETag of the store's own last write of
  it (read again first when there is none, or when that write was refused), so an owner whose
  lease was taken over changes nothing, without a read before every write.
- Size: a property holds 64 KiB and an entity 1 MiB, and a vault may carry 1024 access policies.
  An audit record's outcome is one property, deflated against the audit dictionary
  (`compact_audit`, as on SQLite) while it fits one; records written before, and larger ones, as
  below. Large values (vault configs, audit outcomes, raw payloads, finding evidence) are stored as JSON,
  zlib-compressed and split into binary properties of at most 60,000 bytes. Up to twelve chunks
  sit in the entity itself; anything larger goes to the `chunks` table under a fresh reference
  written *before* the entity that points at it, so a conditional write stays one atomic request.
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
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from azure.core import MatchConditions
from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential, TokenCredential
from azure.core.exceptions import AzureError, HttpResponseError
from azure.data.tables import TableClient, TableEntity, TableServiceClient, UpdateMode

from kvguard.adapters import found_against
from kvguard.adapters.azure_clients import azure_errors
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


def _vault_partition(vault_id: str) -> str:
    return _digest(vault_key(vault_id))


def _sequence(at: datetime) -> str:
    """A RowKey that sorts by time, then by when it was written, and never collides."""
    return f"{_stamp(at)}-{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"


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


@dataclass(frozen=True)
class _Claim:
    """A claim's properties and the ETag they were written or read with; `read` when they come
    from a read of the stored claim rather than from this store's own last write."""

    event_id: str
    entity: dict[str, Any]
    etag: str
    read: bool = False


def _finished(claim: _Claim) -> _Claim:
    """A claim as it is kept once its event is done: its keys and event id (the owner's token and
    the lease only fence an unfinished claim), to be written over the claim with its ETag."""
    kept: dict[str, Any] = {name: claim.entity[name] for name in ("PartitionKey", "RowKey", "event_id")
                            if name in claim.entity}
    return _Claim(claim.event_id, kept, claim.etag, claim.read)


def _one_partition(claims: Sequence[_Claim]) -> bool:
    return len({claim.entity["PartitionKey"] for claim in claims}) == 1


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
        self._where: dict[str, tuple[str, str]] = {}  # where the claims this store made are (`claim`)
        self._readers: ThreadPoolExecutor | None = None  # `load`'s queries side by side
        self._refs: dict[tuple[str, str, str], _Seen] = {}  # `_saw`
        self._whole: set[tuple[str, str]] = set()  # partitions read whole (`_listed`)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TablesStateStore({self._service.url!r}, table_prefix={self._prefix!r})"

    def close(self) -> None:
        if self._readers is not None:
            self._readers.shutdown(wait=True)
        self._service.close()

    def load(self, vault_id: str, scope: str, marks: Sequence[MarkQuery]) -> VaultState:
        """The baseline, the open findings, the intents and every series of marks live in
        partitions of their own, which no one request reads: their queries go out side by side,
        so the event waits for about one round trip instead of one per query."""
        with self._lock:
            if self._readers is None:
                self._readers = ThreadPoolExecutor(max_workers=LOAD_THREADS, thread_name_prefix="kvguard-tables")
            readers = self._readers
        baseline = readers.submit(self.get_baseline, vault_id)
        findings = readers.submit(self.open_findings, vault_id)
        pending = readers.submit(self.pending_actions, scope)
        answers: list[Future[list[tuple[str, datetime]]]] = [
            readers.submit(self.marks_since, query.series, query.key, query.since) for query in marks]
        return VaultState(baseline.result(), findings.result(), pending.result(), [a.result() for a in answers])

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
        try:
            return self._table(concern).get_entity(partition, row)
        except HttpResponseError as error:
            if _is(error, 404):
                return None
            raise

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
            if len(self._refs) >= REMEMBERED_REFS:
                self._refs.clear()
                self._whole.clear()
            self._refs[(concern, entity["PartitionKey"], entity["RowKey"])] = _Seen(
                entity.get("doc_ref"), etag, entity.get("opened"))

    def _listed(self, concern: str, partition: str) -> None:
        """The whole partition was just read: every entity of it is now one `_saw` remembers."""
        with self._lock:
            self._whole.add((concern, partition))

    def _listed_without(self, concern: str, partition: str, row: str) -> bool:
        """Whether the partition was read whole and held no such entity then: a replace needs no
        read to find the chunks of one that was not there (one written since by another instance
        at worst leaves its chunks behind)."""
        with self._lock:
            return (concern, partition) in self._whole and (concern, partition, row) not in self._refs

    def _seen(self, concern: str, partition: str, row: str, *, pop: bool = False) -> _Seen | None:
        """What `_saw` remembers of an entity: its chunks' reference and its ETag; None when nothing."""
        with self._lock:
            key = (concern, partition, row)
            return self._refs.pop(key, None) if pop else self._refs.get(key)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Table Storage has no transaction across tables: each write stands on its own, and the
        pipeline's order of writes (the claim completed last) keeps a retried event safe."""
        yield

    # Event claims

    @_transient
    def claim(
        self, event_id: str, now: datetime, lease: timedelta, owner: str = "", *, beside: str | None = None
    ) -> ClaimResult:
        """A claim `beside` another is a row of that claim's partition, so that the two are renewed
        and completed in one entity-group transaction."""
        at = _stamp(now)
        partition, row = ((_digest(beside), _digest(event_id)[:BESIDE_ROW_DIGITS]) if beside is not None
                          else (_digest(event_id), "claim"))
        with self._lock:
            if len(self._where) >= REMEMBERED_REFS:
                self._where.clear()
            self._where[event_id] = (partition, row)
        entity = {
            "PartitionKey": partition,
            "RowKey": row,
            "event_id": event_id[:DISPLAY_CHARS],
            "done": False,
            "claimed_at": at,
            "lease_until": _stamp(now + lease),
            "owner": owner,
        }
        table = self._table("claims")
        for _ in range(_ROUNDS):
            try:
                self._hold(event_id, entity, table.create_entity(entity))
                return "claimed"
            except HttpResponseError as error:
                if not _is(error, 409):
                    raise
            current = self._get("claims", partition, row)
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
                self._hold(event_id, entity, written)
                return "claimed"
            except HttpResponseError as error:
                if not _is(error, 404, 412):
                    raise
        return "in_progress"

    def _hold(self, event_id: str, entity: Mapping[str, Any], written: Mapping[str, Any]) -> None:
        """Remember a claim as this store last wrote it, with the ETag the write returned: renewing,
        completing or letting go of it then needs no read first. The fence is unchanged: each of
        those writes is conditional on that ETag, which any other write of the claim (a takeover)
        changes."""
        with self._lock:
            self._held[event_id] = _Claim(event_id, dict(entity), str(written["etag"]))

    def _forget(self, event_id: str) -> None:
        with self._lock:
            self._held.pop(event_id, None)

    def _location(self, event_id: str) -> tuple[str, str]:
        """Where the claim of `event_id` is: beside another when this store claimed it so."""
        with self._lock:
            return self._where.get(event_id) or (_digest(event_id), "claim")

    def _owned_claim(self, event_id: str, owner: str | None, *, fresh: bool = False) -> _Claim | None:
        """The unfinished claim of `event_id` when `owner` holds it (any owner when None): as this
        store last wrote it when it did and `fresh` is not asked for, else as read."""
        if not fresh and owner is not None:
            with self._lock:
                held = self._held.get(event_id)
            if held is not None and held.entity.get("owner", "") == owner and not held.entity.get("done"):
                return held
        current = self._get("claims", *self._location(event_id))
        if current is None or current.get("done"):
            return None
        if owner is not None and current.get("owner", "") != owner:
            return None
        return _Claim(event_id, dict(current), str(current.metadata["etag"]), read=True)

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
            written = self._table("claims").update_entity(
                entity, mode=UpdateMode.REPLACE, etag=current.etag, match_condition=MatchConditions.IfNotModified,
            )
        except HttpResponseError as error:
            if not _is(error, 404, 412):
                raise
            self._forget(current.event_id)
            return False
        self._hold(current.event_id, entity, written)
        return True

    @_transient
    def renew(self, event_id: str, owner: str, now: datetime, lease: timedelta) -> bool:
        return self.renew_each((event_id,), owner, now, lease)

    def _together(self, held: list[_Claim], changes: Mapping[str, Any] | None, dropped: Sequence[_Claim] = ()) -> bool:
        """`changes` to every claim of `held` and `dropped` deleted, in one entity-group transaction
        (they share a partition), each fenced by its ETag: all of it, or nothing when one of them
        was touched since (False)."""
        operations: list[Any] = [
            ("update", {**claim.entity, **(changes or {})},
             {"mode": UpdateMode.REPLACE, "etag": claim.etag, "match_condition": MatchConditions.IfNotModified})
            for claim in held]
        operations += [("delete", claim.entity, {"etag": claim.etag, "match_condition": MatchConditions.IfNotModified})
                       for claim in dropped]
        for claim in (*held, *dropped):
            self._forget(claim.event_id)
        try:
            written = self._table("claims").submit_transaction(operations)
        except HttpResponseError as error:
            if not _is(error, 404, 412):
                raise
            return False
        for claim, metadata in zip(held, written, strict=False):
            self._hold(claim.event_id, {**claim.entity, **(changes or {})}, metadata)
        return True

    @_transient
    def renew_each(self, event_ids: Sequence[str], owner: str, now: datetime, lease: timedelta) -> bool:
        """Every claim checked before any is written; claims kept beside each other in one
        transaction, the others each in a write of its own, each fenced by its ETag."""
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
        completion that then fails was this attempt's, which gives up the vault anyway."""
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
            self._forget(event_id)
            if done:
                with self._lock:
                    self._where.pop(event_id, None)
            return done
        self._table("claims").upsert_entity(
            {
                "PartitionKey": _digest(event_id),
                "RowKey": "claim",
                "event_id": event_id[:DISPLAY_CHARS],
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
        if owner is None:
            current = self._owned_claim(event_id, None)
            return current is not None and self._drop_claim(current)
        return self._fenced([event_id], owner, lambda held: self._drop_claim(held[0]))

    def _drop_claim(self, current: _Claim) -> bool:
        """Delete the claim only if nobody touched it since it was read (the fence)."""
        self._forget(current.event_id)
        try:
            self._table("claims").delete_entity(
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
        entity = self._get("baselines", _vault_partition(vault_id), "baseline")
        if entity is None:
            return None
        self._saw("baselines", entity, entity.metadata["etag"])
        return self._baseline(entity)

    @_transient
    def put_baseline(
        self, vault_id: str, config: Mapping[str, Any], etag: str | None, *, deleted: bool = False,
        now: datetime | None = None,
    ) -> str:
        updated = _stamp(now if now is not None else datetime.now(UTC))
        partition = _vault_partition(vault_id)
        table = self._table("baselines")
        previous: Mapping[str, Any] | None = None
        seen = self._seen("baselines", partition, "baseline")
        if etag is not None and seen is not None and seen.etag == etag:
            previous = {"doc_ref": seen.doc_ref}  # the baseline as last read: the write is fenced by `etag`
        elif etag is not None:
            previous = self._get("baselines", partition, "baseline")
            if previous is None:
                raise ConcurrencyError(f"baseline of {vault_id} does not exist (etag {etag} is stale)")
        document = self._pack(config)
        entity = {
            "PartitionKey": partition, "RowKey": "baseline", "vault_id": vault_id, "deleted": deleted,
            "updated": updated, **document,
        }
        try:
            if etag is None:
                metadata = table.create_entity(entity)
            else:
                metadata = table.update_entity(
                    entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
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
        return str(metadata["etag"])

    @_transient
    def list_baselines(self) -> list[Baseline]:
        baselines = [self._baseline(entity) for entity in self._table("baselines").list_entities()]
        return sorted(baselines, key=lambda baseline: vault_key(baseline.vault_id))

    def _baseline(self, entity: TableEntity) -> Baseline:
        return Baseline(
            vault_id=entity["vault_id"],
            config=self._unpack(entity),
            etag=str(entity.metadata["etag"]),
            deleted=bool(entity.get("deleted")),
            updated=_unstamp(entity["updated"]),
        )

    # Audit trail and rejected payloads

    @_transient
    def append_audit(self, record: AuditRecord) -> None:
        partition = _vault_partition(record.vault_id) if record.vault_id is not None else "no-vault"
        entity: dict[str, Any] = {
            "PartitionKey": partition,
            "RowKey": _sequence(record.at),
            "at": _stamp(record.at),
            "event_id": record.event_id[:DISPLAY_CHARS],
        }
        compact = audit_document(record.vault_id, record.outcome)
        if len(record.event_id) <= DISPLAY_CHARS and len(compact) <= CHUNK_BYTES:
            entity["audit"] = compact  # one property, deflated against the audit dictionary
        else:
            entity.update(self._pack({"event_id": record.event_id, "vault_id": record.vault_id,
                                      "outcome": record.outcome}))
        if record.attempt is not None:
            entity["attempt"] = record.attempt
        self._table("audit").create_entity(entity)

    @_transient
    def list_audit(self, vault_id: str | None = None) -> list[AuditRecord]:
        table = self._table("audit")
        if vault_id is None:
            entities = table.list_entities()
        else:
            entities = table.query_entities("PartitionKey eq @pk", parameters={"pk": _vault_partition(vault_id)})
        records = []
        for entity in sorted(entities, key=lambda entity: entity["RowKey"]):
            if "audit" in entity:
                vault, outcome = audit_fields(None, entity["audit"])
                event_id = entity["event_id"]
            else:
                document = self._unpack(entity)
                event_id, vault, outcome = document["event_id"], document["vault_id"], document["outcome"]
            records.append(AuditRecord(event_id=event_id, vault_id=vault, at=_unstamp(entity["at"]), outcome=outcome))
        return records

    @_transient
    def audited(self, event_id: str, vault_id: str | None, attempt: str | None = None) -> bool:
        partition = _vault_partition(vault_id) if vault_id is not None else "no-vault"
        parameters = {"pk": partition, "event": event_id[:DISPLAY_CHARS]}
        query = "PartitionKey eq @pk and event_id eq @event"
        if attempt is not None:
            query += " and attempt eq @attempt"
            parameters["attempt"] = attempt
        entities = self._table("audit").query_entities(
            query, parameters=parameters, select=["event_id"], results_per_page=1,
        )
        return next(iter(entities), None) is not None

    @_transient
    def record_rejected(self, rejected: RejectedPayload) -> None:
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
        opened = _stamp(now)
        partition, row = _vault_partition(vault_id), _digest(rule)
        split = found_against.split(vault_key(vault_id), finding)
        if split.etag is not None and split.config is not None:
            self._keep_found_against(partition, split.etag, split.config, opened)  # before the finding naming it
        table = self._table("findings")
        document = self._pack(split.finding)
        entity = {"PartitionKey": partition, "RowKey": row, "vault_id": vault_id, "rule": rule, **document}
        if split.etag is not None:
            entity["baseline_etag"] = split.etag
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
                current = self._get("findings", partition, row)
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
            written = self._table("findings").update_entity(
                refreshed, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified)
        except HttpResponseError as error:
            if not _is(error, 404, 412):
                raise
            return False
        self._saw("findings", refreshed, written.get("etag"))
        return True

    def _keep_found_against(self, partition: str, etag: str, config: Mapping[str, Any], at: str) -> None:
        """Store (or touch) the configuration findings of this vault name by `etag`: a fresh `at`
        keeps retention from removing it while a finding is being opened against it."""
        row = _digest(etag)
        previous = self._get("foundagainst", partition, row)
        self._table("foundagainst").upsert_entity(
            {"PartitionKey": partition, "RowKey": row, "baseline_etag": etag, "at": at, **self._pack(config)},
            mode=UpdateMode.REPLACE,
        )
        self._discard(previous)

    def _found_against_loader(self, partition: str, etag: str) -> Callable[[], Mapping[str, Any]]:
        def load() -> Mapping[str, Any]:
            entity = self._get("foundagainst", partition, _digest(etag))
            if entity is None:
                raise RuntimeError(f"the baseline {etag} an open finding was found against is not stored")
            stored: Mapping[str, Any] = self._unpack(entity)
            return stored

        return _transient(load)

    @_transient
    def close_finding(self, vault_id: str, rule: str) -> bool:
        """The configuration a closed finding named stays until retention removes it (see `prune`):
        removing it here could race with a finding being opened against it."""
        partition, row = _vault_partition(vault_id), _digest(rule)
        seen = self._seen("findings", partition, row, pop=True)
        if seen is not None and seen.etag is not None and self._delete_finding(partition, row, seen.etag):
            self._discard({"doc_ref": seen.doc_ref})
            return True
        for _ in range(_ROUNDS):
            current = self._get("findings", partition, row)
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
            self._table("findings").delete_entity(
                partition, row, etag=etag, match_condition=MatchConditions.IfNotModified)
        except HttpResponseError as error:
            if not _is(error, 412):
                raise
            return False
        return True

    @_transient
    def open_findings(self, vault_id: str) -> list[OpenFinding]:
        partition, key = _vault_partition(vault_id), vault_key(vault_id)
        entities = self._table("findings").query_entities("PartitionKey eq @pk", parameters={"pk": partition})
        findings = []
        for entity in entities:
            self._saw("findings", entity, entity.metadata["etag"])
            finding = self._unpack(entity)
            etag = entity.get("baseline_etag")
            if etag is not None:
                finding = found_against.joined(key, finding, self._found_against_loader(partition, etag))
            findings.append(OpenFinding(vault_id=entity["vault_id"], rule=entity["rule"], finding=finding,
                                        opened=_unstamp(entity["opened"])))
        return sorted(findings, key=lambda finding: finding.rule)

    # Marks for history rules and the circuit breaker

    @staticmethod
    def _mark_partition(series: str, key: str) -> str:
        return _digest(f"{series}\n{vault_key(key)}")

    @_transient
    def add_mark(self, series: str, key: str, member: str, at: datetime) -> None:
        stamp = _stamp(at)
        self._table("marks").upsert_entity(
            {
                "PartitionKey": self._mark_partition(series, key),
                "RowKey": f"{stamp}-{_digest(member)}",  # the mark's time is the RowKey's first STAMP_CHARS
                "member": member,
            },
            mode=UpdateMode.REPLACE,
        )

    @_transient
    def marks_since(self, series: str, key: str, since: datetime) -> list[tuple[str, datetime]]:
        entities = self._table("marks").query_entities(
            "PartitionKey eq @pk and RowKey ge @since",
            parameters={"pk": self._mark_partition(series, key), "since": _stamp(since)},
            select=["member", "RowKey"],
        )
        marks = [(entity["member"], _unstamp(entity["RowKey"][:STAMP_CHARS])) for entity in entities]
        return sorted(marks, key=lambda mark: (mark[1], mark[0]))

    def marks_since_each(self, queries: Sequence[MarkQuery]) -> list[list[tuple[str, datetime]]]:
        """A query per series and key: each is one partition, and one request across partitions
        would be a scan of the table."""
        return [self.marks_since(query.series, query.key, query.since) for query in queries]

    # Write-ahead actions

    @_transient
    def begin_action(self, scope: str, handler: str, intent: Mapping[str, Any], now: datetime) -> None:
        partition, row = _digest(scope), _digest(handler)
        seen = self._seen("intents", partition, row)
        previous: Mapping[str, Any] | None = {"doc_ref": seen.doc_ref} if seen is not None else None
        if seen is None and not self._listed_without("intents", partition, row):
            previous = self._get("intents", partition, row)
        entity = {"PartitionKey": partition, "RowKey": row, "scope": scope[:DISPLAY_CHARS], "handler": handler,
                  "at": _stamp(now), **self._pack(intent)}
        written = self._table("intents").upsert_entity(entity, mode=UpdateMode.REPLACE)
        self._saw("intents", entity, written.get("etag"))
        self._discard(previous)

    @_transient
    def pending_actions(self, scope: str) -> list[PendingAction]:
        entities = self._table("intents").query_entities(
            "PartitionKey eq @pk", parameters={"pk": _digest(scope)}
        )
        actions = []
        for entity in entities:
            self._saw("intents", entity, entity.metadata["etag"])
            actions.append(PendingAction(scope, entity["handler"], self._unpack(entity), _unstamp(entity["at"])))
        self._listed("intents", _digest(scope))
        return sorted(actions, key=lambda action: action.handler)

    @_transient
    def finish_action(self, scope: str, handler: str) -> None:
        self._delete("intents", _digest(scope), _digest(handler))

    def _delete(self, concern: str, partition: str, row: str) -> None:
        seen = self._seen(concern, partition, row, pop=True)
        current = {"doc_ref": seen.doc_ref} if seen is not None else self._get(concern, partition, row)
        if current is None:
            return
        try:
            self._table(concern).delete_entity(partition, row)
        except HttpResponseError as error:
            if not _is(error, 404):
                raise
        self._discard(current)

    # Outbox

    @_transient
    def put_outbox(self, key: str, item: Mapping[str, Any], now: datetime) -> None:
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
        items = []
        for entity in self._table("outbox").query_entities("PartitionKey eq 'outbox'"):
            document = self._unpack(entity)
            items.append(OutboxItem(document["key"], document["item"], _unstamp(entity["at"])))
        return sorted(items, key=lambda item: (item.at, item.key))

    @_transient
    def drop_outbox(self, key: str) -> None:
        self._delete("outbox", "outbox", _digest(key))

    # Retention

    @_transient
    def prune(self, older_than: datetime) -> int:
        """A filtered scan per table, deleting what it finds one entity at a time (Table Storage
        batches only within one partition); a failure part way leaves the rest for the next run."""
        cutoff = _stamp(older_than)
        filters = {
            "claims": "( done eq true and completed_at lt @cutoff ) or ( done eq false and lease_until lt @cutoff )",
            "audit": "at lt @cutoff",
            "rejected": "at lt @cutoff",
            "marks": "RowKey lt @cutoff",  # a mark's RowKey starts with its time
            "intents": "at lt @cutoff",
            "outbox": "at lt @cutoff",
        }
        removed = 0
        for concern, query in filters.items():
            table = self._table(concern)
            for entity in list(table.query_entities(query, parameters={"cutoff": cutoff})):
                try:
                    table.delete_entity(entity["PartitionKey"], entity["RowKey"])
                except HttpResponseError as error:
                    if not _is(error, 404):
                        raise
                    continue
                self._discard(entity)
                removed += 1
        return removed + self._prune_found_against(cutoff)

    def _prune_found_against(self, cutoff: str) -> int:
        """Configurations older than `cutoff` that no open finding names. Each is deleted only as
        it was read (its ETag): one touched meanwhile by a finding opened against it stays."""
        table, removed = self._table("foundagainst"), 0
        for entity in list(table.query_entities("at lt @cutoff", parameters={"cutoff": cutoff},
                                                select=["PartitionKey", "RowKey", "baseline_etag", "doc_ref"])):
            named = self._table("findings").query_entities(
                "PartitionKey eq @pk and baseline_etag eq @etag",
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

    # The ledger of own writes: one partition per resource and operation, rows in time order.

    @staticmethod
    def _own_write_partition(resource_id: str, operation: str) -> str:
        return _digest(f"{vault_key(resource_id)}\n{operation.strip().lower()}")

    @_transient
    def record_own_write(self, entry: OwnWrite) -> None:
        self._table("ownwrites").create_entity(
            {
                "PartitionKey": self._own_write_partition(entry.resource_id, entry.operation),
                "RowKey": _sequence(entry.at),
                "resource_id": entry.resource_id[:DISPLAY_CHARS],
                "operation": entry.operation.strip().lower(),
                "at": _stamp(entry.at),
                "request": entry.request_id,
                # Event ids are kept as digests: whole, whatever their length.
                "written_for": _digest(entry.event_id) if entry.event_id else "",
                "attempt": entry.attempt or "",
                "voided": False,
            }
        )

    @_transient
    def match_own_write(
        self, resource_id: str, operation: str, request_id: str, *, since: datetime, until: datetime,
    ) -> bool:
        # RowKeys start with the entry's stamp: `until` + "~" sorts after every key of that instant.
        window = {"pk": self._own_write_partition(resource_id, operation), "since": _stamp(since),
                  "until": _stamp(until) + "~", "request": request_id}
        entries = self._table("ownwrites").query_entities(
            "PartitionKey eq @pk and RowKey ge @since and RowKey lt @until and request eq @request",
            parameters=window, select=["voided"])
        return any(not entry.get("voided") for entry in entries)

    @_transient
    def void_own_write(self, entry: OwnWrite) -> None:
        table = self._table("ownwrites")
        found = table.query_entities(
            "PartitionKey eq @pk and request eq @request",
            parameters={"pk": self._own_write_partition(entry.resource_id, entry.operation),
                        "request": entry.request_id},
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
        table = self._table("ownwrites")
        stale = table.query_entities("at lt @cutoff", parameters={"cutoff": _stamp(older_than)},
                                     select=["PartitionKey", "RowKey"])
        dropped = 0
        for entity in stale:
            try:
                table.delete_entity(entity["PartitionKey"], entity["RowKey"])
            except HttpResponseError as error:
                if not _is(error, 404):
                    raise
                continue
            dropped += 1
        return dropped
