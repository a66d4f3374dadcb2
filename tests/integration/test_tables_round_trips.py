"""Round trips to Table Storage: an event's claims, intents and baseline written without a read
first, and the fence across two instances that makes those reads unnecessary."""

from __future__ import annotations

import json
import random
import zlib
from datetime import timedelta

import pytest
from azure.data.tables import TableServiceClient

from kvguard.adapters.tables import TablesStateStore
from kvguard.ports import AuditRecord, ConcurrencyError
from tests.contract.statestore_contract import LEASE, T0, VAULT, vault_config
from tests.integration.azurite import Counted

LOCK = "vault-lease:kv"


def test_an_attempt_renews_and_completes_its_claims_without_reading_them_first(counted: Counted) -> None:
    store = counted.store
    assert store.claim("evt-1", T0, LEASE, owner="a") == "claimed"
    assert store.claim(LOCK, T0, LEASE, owner="a") == "claimed"
    start = len(counted.methods)
    assert store.renew_each(["evt-1", LOCK], "a", T0 + timedelta(seconds=5), LEASE) is True
    assert store.renew_each(["evt-1", LOCK], "a", T0 + timedelta(seconds=9), LEASE) is True
    assert store.complete("evt-1", T0 + timedelta(seconds=10), "a", releasing=[LOCK]) is True
    assert "GET" not in counted.since(start)
    assert len(counted.since(start)) == 6  # two renewals of two claims, one lease let go of, one completion


def test_an_attempt_whose_claims_another_instance_took_over_changes_nothing(
    counted: Counted, other: TablesStateStore
) -> None:
    store = counted.store
    store.claim("evt-1", T0, LEASE, owner="a")
    store.claim(LOCK, T0, LEASE, owner="a")
    late = T0 + LEASE + timedelta(seconds=1)
    assert other.claim("evt-1", late, LEASE, owner="b") == "claimed"
    assert other.claim(LOCK, late, LEASE, owner="b") == "claimed"
    assert store.renew_each(["evt-1", LOCK], "a", late, LEASE) is False
    assert store.complete("evt-1", late, "a", releasing=[LOCK]) is False
    assert store.release(LOCK, "a") is False
    assert other.claim(LOCK, late + timedelta(seconds=1), LEASE, owner="c") == "in_progress"
    assert other.complete("evt-1", late + timedelta(seconds=2), "b", releasing=[LOCK]) is True
    assert other.claim("evt-1", late + timedelta(seconds=3), LEASE, owner="c") == "duplicate"


def test_a_lease_taken_over_stops_the_completion_that_would_let_go_of_it(
    counted: Counted, other: TablesStateStore
) -> None:
    """The event's claim is still this attempt's; its vault's lease is not: the event stays
    unfinished and the lease stays with the attempt that took it over."""
    store = counted.store
    store.claim("evt-1", T0, LEASE + LEASE, owner="a")
    store.claim(LOCK, T0, LEASE, owner="a")
    late = T0 + LEASE + timedelta(seconds=1)
    assert other.claim(LOCK, late, LEASE, owner="b") == "claimed"
    assert store.complete("evt-1", late, "a", releasing=[LOCK]) is False
    assert other.claim(LOCK, late + timedelta(seconds=1), LEASE, owner="c") == "in_progress"
    assert other.claim("evt-1", late + timedelta(seconds=1), LEASE, owner="c") == "in_progress"
    assert store.complete("evt-1", late + timedelta(seconds=2), "a") is True


def test_a_claim_written_by_another_instance_of_the_same_owner_is_read_again(
    counted: Counted, other: TablesStateStore
) -> None:
    """Only the stored claim decides: a write this store did not make (here the same owner's,
    through another instance) makes its remembered ETag stale, and the claim is read again."""
    store = counted.store
    store.claim("evt-1", T0, LEASE, owner="a")
    assert other.renew("evt-1", "a", T0 + timedelta(seconds=5), LEASE) is True
    assert store.renew("evt-1", "a", T0 + timedelta(seconds=6), LEASE) is True
    assert store.complete("evt-1", T0 + timedelta(seconds=7), "a") is True
    assert other.claim("evt-1", T0 + timedelta(seconds=8), LEASE, owner="b") == "duplicate"


NOISE = random.Random(2).randbytes(900_000).hex()  # compresses to more than fits in one entity


def test_an_intent_read_or_written_is_replaced_and_finished_without_reading_it_first(
    counted: Counted, service: TableServiceClient, table_prefix: str
) -> None:
    store = counted.store
    chunks = service.get_table_client(table_prefix + "chunks")
    store.begin_action("kv", "revert_access_policy", {"event_id": "evt-1", "noise": NOISE}, T0)
    assert len(list(chunks.list_entities())) > 0  # spilled
    start = len(counted.methods)
    store.begin_action("kv", "revert_access_policy", {"event_id": "evt-1", "noise": NOISE[::-1]}, T0)
    assert [p.intent["noise"] for p in store.pending_actions("kv")] == [NOISE[::-1]]
    store.finish_action("kv", "revert_access_policy")
    assert store.pending_actions("kv") == []
    assert list(chunks.list_entities()) == []  # the replaced and the finished intent's chunks are gone
    intents = f"{table_prefix}intents(PartitionKey="  # one intent, by its keys
    assert not [r for r in counted.requests[start:] if r.startswith("GET") and intents in r]


def test_a_baseline_read_is_replaced_without_reading_it_again(counted: Counted, other: TablesStateStore) -> None:
    store = counted.store
    store.put_baseline(VAULT, vault_config(policies=1), None, now=T0)
    baseline = store.get_baseline(VAULT)
    assert baseline is not None
    start = len(counted.methods)
    store.put_baseline(VAULT, vault_config(policies=2), baseline.etag, now=T0)
    assert counted.since(start) == ["PUT"]


def test_a_baseline_another_instance_moved_is_not_replaced_with_the_etag_read_before(
    counted: Counted, other: TablesStateStore
) -> None:
    store = counted.store
    store.put_baseline(VAULT, vault_config(policies=1), None, now=T0)
    baseline = store.get_baseline(VAULT)
    assert baseline is not None
    other.put_baseline(VAULT, vault_config(policies=3), baseline.etag, now=T0)
    with pytest.raises(ConcurrencyError):
        store.put_baseline(VAULT, vault_config(policies=2), baseline.etag, now=T0)
    moved = other.get_baseline(VAULT)
    assert moved is not None and moved.config == vault_config(policies=3)


def test_an_open_finding_read_is_refreshed_and_closed_without_reading_it_again(
    counted: Counted, table_prefix: str
) -> None:
    store = counted.store
    assert store.open_finding(VAULT, "KV-AP-01", {"evidence": {"principal": "p-1"}}, T0) is True
    [read] = store.open_findings(VAULT)
    start = len(counted.methods)
    assert store.open_finding(VAULT, "KV-AP-01", {"evidence": {"principal": "p-2"}}, T0 + LEASE) is False
    assert store.close_finding(VAULT, "KV-AP-01") is True
    assert counted.since(start) == ["PUT", "DELETE"]
    assert store.open_findings(VAULT) == [] and read.opened == T0


def test_a_finding_another_instance_refreshed_or_closed_is_written_as_it_is_stored(
    counted: Counted, other: TablesStateStore
) -> None:
    store = counted.store
    store.open_finding(VAULT, "KV-AP-01", {"evidence": {"principal": "p-1"}}, T0)
    store.open_findings(VAULT)
    other.open_finding(VAULT, "KV-AP-01", {"evidence": {"principal": "p-2"}}, T0 + LEASE)
    assert store.open_finding(VAULT, "KV-AP-01", {"evidence": {"principal": "p-3"}}, T0 + 2 * LEASE) is False
    [refreshed] = other.open_findings(VAULT)
    assert refreshed.opened == T0 and refreshed.finding == {"evidence": {"principal": "p-3"}}
    store.open_findings(VAULT)
    assert other.close_finding(VAULT, "KV-AP-01") is True
    assert store.open_finding(VAULT, "KV-AP-01", {"evidence": {"principal": "p-4"}}, T0 + 3 * LEASE) is True
    [reopened] = other.open_findings(VAULT)
    assert reopened.opened == T0 + 3 * LEASE


def test_an_event_claimed_beside_its_vaults_lease_is_renewed_and_completed_in_one_request_each(
    counted: Counted, other: TablesStateStore
) -> None:
    store = counted.store
    assert store.claim("evt-1", T0, LEASE, owner="a", beside=LOCK) == "claimed"
    assert store.claim(LOCK, T0, LEASE, owner="a") == "claimed"
    assert other.claim("evt-1", T0, LEASE, owner="b", beside=LOCK) == "in_progress"  # a redelivery elsewhere
    start = len(counted.methods)
    assert store.renew_each(["evt-1", LOCK], "a", T0 + timedelta(seconds=5), LEASE) is True
    assert store.complete("evt-1", T0 + timedelta(seconds=6), "a", releasing=[LOCK]) is True
    assert len(counted.since(start)) == 2  # one transaction each
    assert other.claim("evt-1", T0 + timedelta(seconds=7), LEASE, owner="b", beside=LOCK) == "duplicate"
    assert other.claim(LOCK, T0 + timedelta(seconds=7), LEASE, owner="b") == "claimed"


def test_a_transaction_of_claims_one_of_which_was_taken_over_changes_none_of_them(
    counted: Counted, other: TablesStateStore
) -> None:
    store = counted.store
    store.claim("evt-1", T0, LEASE + LEASE, owner="a", beside=LOCK)
    store.claim(LOCK, T0, LEASE, owner="a")
    late = T0 + LEASE + timedelta(seconds=1)
    assert other.claim(LOCK, late, LEASE, owner="b") == "claimed"
    assert store.renew_each(["evt-1", LOCK], "a", late, LEASE) is False
    assert store.complete("evt-1", late, "a", releasing=[LOCK]) is False
    assert other.claim("evt-1", late, LEASE, owner="c", beside=LOCK) == "in_progress"  # not done, still a's
    assert other.claim(LOCK, late, LEASE, owner="c") == "in_progress"  # still b's
    assert store.complete("evt-1", late, "a") is True


def test_an_intent_of_a_scope_listed_without_it_is_written_without_reading_it_first(
    counted: Counted, table_prefix: str
) -> None:
    store = counted.store
    assert store.pending_actions("kv") == []
    start = len(counted.methods)
    store.begin_action("kv", "revert_access_policy", {"event_id": "evt-1"}, T0)
    assert counted.since(start) == ["PUT"]
    assert [p.handler for p in store.pending_actions("kv")] == ["revert_access_policy"]


def test_what_grows_with_every_event_keeps_no_readable_copies(
    counted: Counted, service: TableServiceClient, table_prefix: str
) -> None:
    """A finished claim, a mark and an audit record are kept with what is read of them alone: each
    is written for every event, and a readable copy of a resource id doubles it."""
    store = counted.store
    store.claim("evt-1", T0, LEASE, owner="a", beside=LOCK)
    store.claim(LOCK, T0, LEASE, owner="a")
    assert store.complete("evt-1", T0, "a", releasing=[LOCK]) is True
    store.add_mark("caller_writes", f"{VAULT}|caller-1", "evt-1", T0)
    store.append_audit(AuditRecord("evt-1", VAULT, T0, {"outcome": "processed"}, attempt="a"))
    rows = list(service.get_table_client(table_prefix + "vault").list_entities())

    def properties(prefix: str) -> set[str]:
        [entity] = [row for row in rows if row["RowKey"].startswith(prefix)]
        return set(entity) - {"PartitionKey", "RowKey"}

    assert properties("c|") == {"done", "completed_at"}  # a redelivery is told by its RowKey
    assert properties("m|") == {"member"}  # its time is in its RowKey
    assert properties("t|") == {"event_id", "attempt", "audit"}  # one compact document; its time in its RowKey
    [record] = store.list_audit(VAULT)
    assert (record.event_id, record.vault_id, record.outcome) == ("evt-1", VAULT, {"outcome": "processed"})
    assert store.claim("evt-1", T0 + LEASE, LEASE, owner="b", beside=LOCK) == "duplicate"
    assert store.marks_since("caller_writes", f"{VAULT}|caller-1", T0) == [("evt-1", T0)]
    assert store.audited("evt-1", VAULT, "a") is True


def test_an_audit_record_written_before_the_compact_document_reads_as_written(
    counted: Counted, service: TableServiceClient, table_prefix: str
) -> None:
    store = counted.store
    store.append_audit(AuditRecord("evt-new", VAULT, T0 + LEASE, {"outcome": "processed"}))
    document = {"event_id": "evt-old", "vault_id": VAULT, "outcome": {"outcome": "duplicate"}}
    table = service.get_table_client(table_prefix + "vault")
    [new] = table.list_entities()
    table.create_entity({"PartitionKey": new["PartitionKey"], "RowKey": "t|2026-11-27T10:00:00.000000Z-0-old",
                         "at": "2026-11-27T10:00:00.000000Z", "event_id": "evt-old", "vault_id": VAULT,
                         "doc_chunks": 1, "doc_encoding": "json+zlib",
                         "doc_0": zlib.compress(json.dumps(document).encode())})
    assert [(r.event_id, r.vault_id, r.outcome) for r in store.list_audit(VAULT)] == [
        ("evt-old", VAULT, {"outcome": "duplicate"}), ("evt-new", VAULT, {"outcome": "processed"})]


def test_an_audit_record_that_keeps_its_time_twice_reads_and_ages_as_one_that_does_not(
    counted: Counted, service: TableServiceClient, table_prefix: str
) -> None:
    """A record written before its time was read from its RowKey alone (with `at` beside it) is
    listed in time order among the newer ones and pruned by the same retention."""
    store = counted.store
    store.append_audit(AuditRecord("evt-new", VAULT, T0 + 2 * LEASE, {"outcome": "processed"}))
    table = service.get_table_client(table_prefix + "vault")
    [new] = table.list_entities()
    assert "at" not in new
    earlier = T0 + LEASE
    stamp = earlier.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    older = {name: value for name, value in new.items() if name not in ("RowKey", "event_id")}
    table.create_entity({**older, "RowKey": f"t|{stamp}-0-old", "at": stamp, "event_id": "evt-old"})
    assert [(r.event_id, r.at) for r in store.list_audit(VAULT)] == [("evt-old", earlier),
                                                                     ("evt-new", T0 + 2 * LEASE)]
    assert store.prune(T0 + LEASE + timedelta(microseconds=1)) == 1
    assert [r.event_id for r in store.list_audit(VAULT)] == ["evt-new"]
    assert store.prune(T0 + 3 * LEASE) == 1
    assert store.list_audit(VAULT) == []
