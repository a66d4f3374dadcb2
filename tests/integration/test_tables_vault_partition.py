"""A vault's state as one partition on Table Storage: one query reads it, one entity-group
transaction writes what an event changed, a refused transaction is written one by one, and a
store the earlier layout (one table per concern) wrote is read on and moved a vault at a time."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from kvguard.adapters.tables import TablesStateStore
from kvguard.ids import vault_key
from kvguard.ports import AuditRecord, MarkQuery, RejectedPayload, TransientError, vault_lease
from tests.contract.statestore_contract import LEASE, T0, VAULT, vault_config
from tests.integration.azurite import Counted

KEY = vault_key(VAULT)
LOCK = vault_lease(KEY)
CALLER = "5c4b3a29-1807-4f6e-9d5c-4b3a29180716"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _marks(at: Any = T0) -> list[MarkQuery]:
    return [MarkQuery("grants", KEY, at - timedelta(hours=1)),
            MarkQuery("caller_writes", f"{KEY}|{CALLER}", T0 - timedelta(days=90))]


def test_an_events_claims_state_and_records_cost_one_request_each(counted: Counted, other: TablesStateStore) -> None:
    """The event's claim and its vault's lease in one transaction, the vault's state in one
    query, and everything the event wrote (renewal, finding, mark, baseline, audit record,
    completion and the lease let go of) in one more."""
    store = counted.store
    store.put_baseline(VAULT, vault_config(policies=2), None, now=T0)
    store.marks_since("caller_writes", f"{KEY}|{CALLER}", T0)  # a warm worker has looked for the earlier layout
    start = len(counted.requests)
    assert store.claim_beside("evt-1", LOCK, T0, LEASE, "a") == ("claimed", True)
    state = store.load(VAULT, KEY, _marks())
    assert state.baseline is not None and state.findings == [] and state.pending == []
    with store.batch():
        assert store.renew_each(["evt-1", LOCK], "a", T0 + timedelta(seconds=1), LEASE) is True
        store.open_finding(VAULT, "KV-AP-01", {"evidence": {"principal": "p-1"}}, T0)
        store.add_mark("grants", KEY, "principal:p-1|", T0)
        store.add_mark("caller_writes", f"{KEY}|{CALLER}", "evt-1", T0)
        etag = store.put_baseline(VAULT, vault_config(policies=3), state.baseline.etag, now=T0)
        store.append_audit(AuditRecord("evt-1", VAULT, T0, {"outcome": "processed"}, attempt="a"))
        assert store.complete("evt-1", T0 + timedelta(seconds=2), "a", releasing=[LOCK]) is True
    assert [request.rsplit("/", 1)[-1] for request in counted.requests[start:]] == [
        "$batch", f"{counted.prefix}vault()", "$batch"]

    seen = other.load(VAULT, KEY, _marks())
    assert seen.baseline is not None and seen.baseline.etag == etag
    assert seen.baseline.config == vault_config(policies=3)
    assert [f.rule for f in seen.findings] == ["KV-AP-01"]
    assert seen.marks == [[("principal:p-1|", T0)], [("evt-1", T0)]]
    assert other.audited("evt-1", VAULT, "a") is True
    assert other.claim("evt-1", T0 + LEASE, LEASE, owner="b", beside=LOCK) == "duplicate"
    assert other.claim(LOCK, T0 + timedelta(seconds=3), LEASE, owner="b") == "claimed"  # let go of


def test_a_redelivery_is_told_apart_with_one_read(counted: Counted) -> None:
    store = counted.store
    assert store.claim_beside("evt-1", LOCK, T0, LEASE, "a") == ("claimed", True)
    assert store.complete("evt-1", T0, "a", releasing=[LOCK]) is True
    start = len(counted.requests)
    assert store.claim_beside("evt-1", LOCK, T0 + timedelta(seconds=1), LEASE, "b") == ("duplicate", False)
    assert len(counted.since(start)) == 2  # the refused transaction, the claim read


def test_an_event_of_a_vault_another_attempt_holds_gets_its_claim_and_not_the_lease(
    counted: Counted, other: TablesStateStore
) -> None:
    assert other.claim_beside("evt-1", LOCK, T0, LEASE, "a") == ("claimed", True)
    assert counted.store.claim_beside("evt-2", LOCK, T0, LEASE, "b") == ("claimed", False)
    assert counted.store.claim(LOCK, T0, LEASE, "b") == "in_progress"
    assert other.complete("evt-1", T0, "a", releasing=[LOCK]) is True
    assert counted.store.claim(LOCK, T0, LEASE, "b") == "claimed"


def test_a_batch_that_ends_with_an_error_writes_nothing(counted: Counted, other: TablesStateStore) -> None:
    store = counted.store
    assert store.claim_beside("evt-1", LOCK, T0, LEASE, "a") == ("claimed", True)
    store.load(VAULT, KEY, _marks())
    start = len(counted.requests)
    with pytest.raises(RuntimeError, match="midway"), store.batch():
        store.renew_each(["evt-1", LOCK], "a", T0, LEASE)
        store.open_finding(VAULT, "KV-AP-01", {"evidence": {}}, T0)
        store.append_audit(AuditRecord("evt-1", VAULT, T0, {"outcome": "processed"}))
        store.complete("evt-1", T0, "a", releasing=[LOCK])
        raise RuntimeError("midway")
    assert counted.since(start) == []
    assert other.open_findings(VAULT) == [] and other.list_audit(VAULT) == []
    assert other.claim("evt-1", T0, LEASE, owner="b", beside=LOCK) == "in_progress"  # still a's


def test_a_batch_whose_claims_were_taken_over_writes_nothing_and_stops(
    counted: Counted, other: TablesStateStore
) -> None:
    store = counted.store
    assert store.claim_beside("evt-1", LOCK, T0, LEASE, "a") == ("claimed", True)
    store.load(VAULT, KEY, _marks())
    late = T0 + LEASE + timedelta(seconds=1)
    assert other.claim("evt-1", late, LEASE, owner="b", beside=LOCK) == "claimed"
    assert other.claim(LOCK, late, LEASE, owner="b") == "claimed"
    with pytest.raises(TransientError, match="taken over"), store.batch():
        assert store.renew_each(["evt-1", LOCK], "a", late, LEASE) is True  # the transaction decides
        store.open_finding(VAULT, "KV-AP-01", {"evidence": {}}, late)
        store.append_audit(AuditRecord("evt-1", VAULT, late, {"outcome": "processed"}))
        store.complete("evt-1", late, "a", releasing=[LOCK])
    assert other.open_findings(VAULT) == [] and other.list_audit(VAULT) == []
    assert other.complete("evt-1", late, "b", releasing=[LOCK]) is True


def test_a_transaction_refused_for_an_entity_changed_meanwhile_is_written_one_by_one(
    counted: Counted, other: TablesStateStore
) -> None:
    """The store read the open finding; another instance refreshed it since, so the transaction
    that would replace it with the ETag read is refused as a whole, and its writes are then made
    one by one: the finding refreshed as it is stored now, the record, the completion."""
    store = counted.store
    store.open_finding(VAULT, "KV-AP-01", {"evidence": {"principal": "p-1"}}, T0)
    assert store.claim_beside("evt-1", LOCK, T0, LEASE, "a") == ("claimed", True)
    store.load(VAULT, KEY, _marks())
    other.open_findings(VAULT)
    other.open_finding(VAULT, "KV-AP-01", {"evidence": {"principal": "p-2"}}, T0 + timedelta(seconds=1))
    start = len(counted.requests)
    with store.batch():
        store.renew_each(["evt-1", LOCK], "a", T0 + timedelta(seconds=2), LEASE)
        store.open_finding(VAULT, "KV-AP-01", {"evidence": {"principal": "p-3"}}, T0 + timedelta(seconds=2))
        store.append_audit(AuditRecord("evt-1", VAULT, T0, {"outcome": "processed"}))
        store.complete("evt-1", T0 + timedelta(seconds=3), "a", releasing=[LOCK])
    assert counted.requests[start].endswith("/$batch") and len(counted.since(start)) > 2  # refused, then one by one
    [finding] = other.open_findings(VAULT)
    assert finding.finding == {"evidence": {"principal": "p-3"}} and finding.opened == T0
    assert [r.event_id for r in other.list_audit(VAULT)] == ["evt-1"]
    assert other.claim("evt-1", T0 + LEASE, LEASE, owner="b", beside=LOCK) == "duplicate"


# The earlier layout, as it was written: one table per concern, keyed by digests.

def _write_earlier_layout(service: TableServiceClient, prefix: str, store: TablesStateStore) -> dict[str, Any]:
    """A vault's baseline, open finding, intent, marks and audit record, and a second vault's
    baseline, as the earlier layout kept them."""
    partition = _digest(KEY)
    tables = {name: service.create_table_if_not_exists(prefix + name)
              for name in ("baselines", "findings", "intents", "marks", "audit")}
    written = tables["baselines"].create_entity({
        "PartitionKey": partition, "RowKey": "baseline", "vault_id": VAULT, "deleted": False,
        "updated": "2026-11-27T09:00:00.000000Z", **store._pack(vault_config(policies=2))})
    second = VAULT[:-2] + "-2"
    tables["baselines"].create_entity({
        "PartitionKey": _digest(vault_key(second)), "RowKey": "baseline", "vault_id": second, "deleted": False,
        "updated": "2026-11-27T09:00:00.000000Z", **store._pack(vault_config(second))})
    tables["findings"].create_entity({
        "PartitionKey": partition, "RowKey": _digest("KV-AP-01"), "vault_id": VAULT, "rule": "KV-AP-01",
        "opened": "2026-11-27T09:30:00.000000Z", **store._pack({"evidence": {"principal": "p-0"}})})
    tables["intents"].create_entity({
        "PartitionKey": partition, "RowKey": _digest("revert_access_policy"), "scope": KEY,
        "handler": "revert_access_policy", "at": "2026-11-27T09:40:00.000000Z",
        **store._pack({"event_id": "evt-0"})})
    for series, key, member, at in (("grants", KEY, "principal:p-0|", "2026-11-27T09:30:00.000000Z"),
                                    ("caller_writes", f"{KEY}|{CALLER}", "evt-0", "2026-11-20T09:00:00.000000Z")):
        tables["marks"].create_entity({"PartitionKey": _digest(f"{series}\n{vault_key(key)}"),
                                       "RowKey": f"{at}-{_digest(member)}", "member": member})
    tables["audit"].create_entity({
        "PartitionKey": partition, "RowKey": "2026-11-27T09:30:00.000000Z-0-old", "at": "2026-11-27T09:30:00.000000Z",
        "event_id": "evt-0",
        **store._pack({"event_id": "evt-0", "vault_id": VAULT, "outcome": {"outcome": "processed"}})})
    return {"etag": str(written["etag"]), "second": second}


def test_a_store_the_earlier_layout_wrote_is_read_on_and_moved_a_vault_at_a_time(
    azurite_connection_string: str, table_prefix: str, service: TableServiceClient, other: TablesStateStore
) -> None:
    store = TablesStateStore.from_connection_string(azurite_connection_string, table_prefix=table_prefix)
    earlier = _write_earlier_layout(service, table_prefix, store)

    assert [b.vault_id for b in store.list_baselines()] == sorted([VAULT, earlier["second"]], key=vault_key)
    state = store.load(VAULT, KEY, _marks(T0))
    assert state.baseline is not None and state.baseline.etag == earlier["etag"]
    assert state.baseline.config == vault_config(policies=2)
    assert [(f.rule, f.finding) for f in state.findings] == [("KV-AP-01", {"evidence": {"principal": "p-0"}})]
    assert [(p.handler, p.intent) for p in state.pending] == [("revert_access_policy", {"event_id": "evt-0"})]
    grants, first_writes = state.marks
    assert [member for member, _ in grants] == ["principal:p-0|"]
    assert [member for member, _ in first_writes] == ["evt-0"]  # read where the earlier layout keeps it
    assert [r.event_id for r in store.list_audit(VAULT)] == ["evt-0"]
    assert store.audited("evt-0", VAULT) is True

    # Moved: the baseline read is the one written on, with the version it was read with, and the
    # earlier tables' copy is not read over what was written since, by this instance or another.
    store.put_baseline(VAULT, vault_config(policies=3), state.baseline.etag, now=T0)
    store.close_finding(VAULT, "KV-AP-01")
    store.finish_action(KEY, "revert_access_policy")
    assert other.open_findings(VAULT) == [] and other.pending_actions(KEY) == []
    baseline = other.get_baseline(VAULT)
    assert baseline is not None and baseline.config == vault_config(policies=3)
    moved = other.load(VAULT, KEY, _marks(T0))
    assert moved.baseline is not None and moved.baseline.config == vault_config(policies=3)
    assert moved.findings == [] and moved.pending == []
    assert [member for member, _ in moved.marks[0]] == ["principal:p-0|"]
    assert [b.config for b in store.list_baselines() if b.vault_id == VAULT] == [vault_config(policies=3)]

    # The second vault, never read by an event, moves when a sweep first reads its findings.
    second = earlier["second"]
    assert other.open_findings(second) == []
    service.delete_table(table_prefix + "baselines")  # what is left there is no longer read
    fresh = TablesStateStore.from_connection_string(azurite_connection_string, table_prefix=table_prefix)
    moved_second = fresh.get_baseline(second)
    assert moved_second is not None and moved_second.config == vault_config(second)
    fresh.close()
    store.close()


def test_the_writes_after_one_that_cannot_join_the_transaction_still_land(
    counted: Counted, other: TablesStateStore
) -> None:
    """A finding this store never read is closed on its own (it must be read first), which sends
    what the batch held back before it; the writes after it still go out when the batch ends."""
    store = counted.store
    other.open_finding(VAULT, "KV-AP-01", {"evidence": {}}, T0)
    assert store.claim_beside("evt-1", LOCK, T0, LEASE, "a") == ("claimed", True)
    with store.batch():
        store.renew_each(["evt-1", LOCK], "a", T0 + timedelta(seconds=1), LEASE)
        assert store.close_finding(VAULT, "KV-AP-01") is True
        store.append_audit(AuditRecord("evt-1", VAULT, T0, {"outcome": "processed"}))
        store.complete("evt-1", T0 + timedelta(seconds=2), "a", releasing=[LOCK])
    assert other.open_findings(VAULT) == []
    assert [r.event_id for r in other.list_audit(VAULT)] == ["evt-1"]
    assert other.claim("evt-1", T0 + LEASE, LEASE, owner="b", beside=LOCK) == "duplicate"


def test_a_listing_is_remembered_whole_even_when_the_memory_fills_up_meanwhile(
    counted: Counted, other: TablesStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store forgets what it saw once it holds `REMEMBERED_REFS` entities; a listing that
    fills it must not leave the partition marked as read whole without its rows, or a batch
    would take the findings it lists for gone and close none of them."""
    monkeypatch.setattr("kvguard.adapters.tables.REMEMBERED_REFS", 2)
    store = counted.store
    rules = ["KV-AP-01", "KV-AP-03", "KV-NET-01"]
    for rule in rules:
        other.open_finding(VAULT, rule, {"evidence": {}}, T0)
    assert store.claim_beside("evt-1", LOCK, T0, LEASE, "a") == ("claimed", True)
    assert [f.rule for f in store.load(VAULT, KEY, _marks()).findings] == rules
    with store.batch():
        store.renew_each(["evt-1", LOCK], "a", T0 + timedelta(seconds=1), LEASE)
        for rule in rules:
            store.close_finding(VAULT, rule)
        store.complete("evt-1", T0 + timedelta(seconds=2), "a", releasing=[LOCK])
    assert other.open_findings(VAULT) == []


def test_a_batch_replayed_after_part_of_it_was_sent_writes_nothing_once_its_claims_were_taken_over(
    counted: Counted, other: TablesStateStore
) -> None:
    """A rejected payload sends what the batch held back (the renewal) before it is written;
    the claims are then taken over, so the rest of the batch is refused, and replaying it one
    by one stops at the fence before the finding and the record are written."""
    store = counted.store
    assert store.claim_beside("evt-1", LOCK, T0, LEASE, "a") == ("claimed", True)
    store.load(VAULT, KEY, _marks())
    late = T0 + 3 * LEASE
    with pytest.raises(TransientError, match="taken over"), store.batch():
        store.renew_each(["evt-1", LOCK], "a", T0 + timedelta(seconds=1), LEASE)
        store.record_rejected(RejectedPayload("permanent failure: refused", "{}", T0, "evt-1"))
        assert other.claim("evt-1", late, LEASE, owner="b", beside=LOCK) == "claimed"
        assert other.claim(LOCK, late, LEASE, owner="b") == "claimed"
        store.open_finding(VAULT, "KV-AP-01", {"evidence": {}}, T0)
        store.append_audit(AuditRecord("evt-1", VAULT, T0, {"outcome": "rejected"}))
        store.complete("evt-1", T0 + timedelta(seconds=2), "a", releasing=[LOCK])
    assert other.open_findings(VAULT) == [] and other.list_audit(VAULT) == []


def test_an_earlier_layout_without_the_tables_a_read_would_look_in_reads_as_empty(
    azurite_connection_string: str, table_prefix: str, service: TableServiceClient
) -> None:
    """The earlier layout made each table on first use: an account may hold its baselines but
    no ledger or audit table; reading them is reading nothing, not a refusal."""
    service.create_table(table_prefix + "baselines")
    store = TablesStateStore.from_connection_string(azurite_connection_string, table_prefix=table_prefix)
    operation = "microsoft.keyvault/vaults/accesspolicies/write"
    assert store.match_own_write(VAULT, operation, "nonce", since=T0, until=T0 + LEASE) is False
    assert store.audited("evt-1", VAULT) is False
    assert store.list_audit(VAULT) == [] and store.list_audit() == []
    assert store.marks_since("caller_writes", f"{KEY}|{CALLER}", T0) == []
    assert store.prune(T0) == 0
    store.close()


def test_a_vault_the_earlier_layout_kept_findings_of_but_no_baseline_is_moved(
    azurite_connection_string: str, table_prefix: str, service: TableServiceClient, other: TablesStateStore
) -> None:
    store = TablesStateStore.from_connection_string(azurite_connection_string, table_prefix=table_prefix)
    _write_earlier_layout(service, table_prefix, store)
    service.get_table_client(table_prefix + "baselines").delete_entity(_digest(KEY), "baseline")
    state = store.load(VAULT, KEY, _marks(T0))
    assert state.baseline is None
    assert [f.rule for f in state.findings] == ["KV-AP-01"]
    assert [p.handler for p in state.pending] == ["revert_access_policy"]
    store.close_finding(VAULT, "KV-AP-01")
    assert other.load(VAULT, KEY, _marks(T0)).findings == []  # moved once: not read over again
    store.close()
