"""The writes of one `TablesStateStore.batch()`: held back, then sent as one entity-group
transaction per partition, so that an event's records (its claim and its vault's lease renewed
and completed, its findings, marks, baseline, intents and audit record, all in its vault's
partition) cost one request instead of one each.

Each write is kept twice: as the operation the transaction carries, and as the same write made
on its own (`replay`, what the store does outside a batch). A transaction Table Storage refuses
as a whole (an entity changed meanwhile, one the store believed gone that is there, a lease
taken over) changes nothing, so the writes are then made one by one the way they are outside a
batch: they read what they must, retry what they may, and stop the event where a fence refuses;
the claims a partition's writes are fenced by are checked before any of them is made.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_OPERATIONS = 100  # Table Storage's limit for one entity-group transaction
MAX_BYTES = 3_500_000  # below its 4 MiB limit for the request, with room for the framing


@dataclass
class Write:
    """One write of a batch: `operation` as `TableClient.submit_transaction` takes it, `replay`
    the same write made on its own, `then` what the store notes once it is written (with the
    metadata the transaction returned for it), `spilled` the documents whose chunks were written
    ahead for it (dropped again when the write is replayed or abandoned)."""

    table: str
    partition: str
    row: str
    operation: tuple[str, dict[str, Any], dict[str, Any]]
    replay: Callable[[], object] | None  # None: another write of the batch replays it
    then: Callable[[Mapping[str, Any]], None] | None = None
    spilled: list[Mapping[str, Any]] = field(default_factory=list)
    fence: Callable[[], None] | None = None  # a claim's write: raises when the claims it writes are held no more


@dataclass
class Unit:
    """The writes of one batch, in the order they were made."""

    writes: list[Write] = field(default_factory=list)

    def add(self, write: Write) -> None:
        self.writes.append(write)

    def transactions(self) -> list[tuple[str, str, list[tuple[str, dict[str, Any], dict[str, Any]]], list[Write]]]:
        """(table, partition, operations, writes) per partition: a partition without a fenced
        write first, the fenced ones last, so a partition's writes land only after every other
        partition's did and a fence that refuses stops everything after it. Several writes of one
        entity become one operation (a transaction touches an entity once): the last of them,
        fenced by the ETag the first one named."""
        groups: dict[tuple[str, str], list[Write]] = {}
        for write in self.writes:
            groups.setdefault((write.table, write.partition), []).append(write)
        ordered = sorted(groups.items(), key=lambda item: any(w.fence is not None for w in item[1]))
        return [(table, partition, _operations(writes), writes) for (table, partition), writes in ordered]


def _operations(writes: list[Write]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    by_row: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {}
    for write in writes:
        kind, entity, options = write.operation
        earlier = by_row.get(write.row)
        if earlier is not None:
            if earlier[0] == "create":
                if kind == "delete":
                    del by_row[write.row]  # made and let go of within the batch: nothing to write
                    continue
                kind, options = "create", {}
            elif "etag" in earlier[2]:
                options = {**options, "etag": earlier[2]["etag"], "match_condition": earlier[2]["match_condition"]}
        by_row[write.row] = (kind, entity, options)
    return list(by_row.values())


def fits(operations: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> bool:
    """Whether one transaction can carry `operations` (Table Storage's limits on count and size),
    each property counted as the request spells it: a binary value in base64, a text in JSON."""
    size = sum(1_024 + sum(_spelled(value) for value in entity.values()) for _, entity, _ in operations)
    return len(operations) <= MAX_OPERATIONS and size <= MAX_BYTES


def _spelled(value: Any) -> int:
    if isinstance(value, bytes):
        return (len(value) + 2) // 3 * 4
    if isinstance(value, str):
        return len(value) if value.isascii() else len(json.dumps(value))
    return 0
