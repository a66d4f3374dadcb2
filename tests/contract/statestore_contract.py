"""The StateStore contract: what every implementation of kvguard.ports.StateStore must do.

Subclass `StateStoreContract` in a test module (named `Test…`) and provide a function-scoped
`store` fixture that yields a fresh, empty store. The suite must pass unchanged against every
store: SQLite, Azure Table Storage, and whatever comes next.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from kvguard.ports import (
    AuditRecord,
    ConcurrencyError,
    MarkQuery,
    OwnWrite,
    RejectedPayload,
    StateStore,
    TransientError,
)

T0 = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)

VAULT = (
    "/subscriptions/0b1f6471-1bf0-4dda-aec3-111122223333/resourceGroups/rg-prod"
    "/providers/Microsoft.KeyVault/vaults/kv-prod"
)
VAULT_OTHER_CASE = VAULT.lower() + "/"
OTHER_VAULT = VAULT.replace("kv-prod", "kv-dev")
ACCESS_POLICY_WRITE = "Microsoft.KeyVault/vaults/accessPolicies/write"
# Client request ids kvguard's writes carry (`kvguard.client_request`).
NONCE, OTHER_NONCE, THIRD_NONCE = ("5f0c1e7a-3b2d-4c6e-9a8f-1d2e3f4a5b6c", "a9b8c7d6-e5f4-4a3b-8c2d-1e0f9a8b7c6d",
                                   "0d1c2b3a-4f5e-4d6c-8b7a-9f8e7d6c5b4a")
VAULT_WRITE = "Microsoft.KeyVault/vaults/write"
LATER = T0 + timedelta(days=2)  # the end of a ledger window that every entry of the tests lies within

KEY_PERMISSIONS = [
    "get", "list", "update", "create", "import", "delete", "recover", "backup", "restore", "decrypt",
    "encrypt", "unwrapKey", "wrapKey", "verify", "sign", "purge", "release", "rotate", "getrotationpolicy",
    "setrotationpolicy",
]
SECRET_PERMISSIONS = ["get", "list", "set", "delete", "recover", "backup", "restore", "purge"]
CERTIFICATE_PERMISSIONS = [
    "get", "list", "update", "create", "import", "delete", "recover", "backup", "restore", "managecontacts",
    "manageissuers", "getissuers", "listissuers", "setissuers", "deleteissuers", "purge",
]
STORAGE_PERMISSIONS = [
    "get", "list", "delete", "set", "update", "regeneratekey", "recover", "purge", "backup", "restore", "setsas",
    "listsas", "getsas", "deletesas",
]


def vault_config(vault_id: str = VAULT, policies: int = 2, seed: int = 7) -> dict[str, Any]:
    """An ARM GET body of a vault with `policies` access-policy entries, each granting a lot."""
    rng = random.Random(seed)
    tenant = str(uuid.UUID(int=rng.getrandbits(128)))

    def some(permissions: list[str]) -> list[str]:
        return rng.sample(permissions, rng.randint(len(permissions) // 2, len(permissions)))

    entries = [
        {
            "tenantId": tenant,
            "objectId": str(uuid.UUID(int=rng.getrandbits(128))),
            "permissions": {
                "keys": some(KEY_PERMISSIONS),
                "secrets": some(SECRET_PERMISSIONS),
                "certificates": some(CERTIFICATE_PERMISSIONS),
                "storage": some(STORAGE_PERMISSIONS),
            },
        }
        for _ in range(policies)
    ]
    return {
        "id": vault_id,
        "name": vault_id.rsplit("/", 1)[-1],
        "type": "Microsoft.KeyVault/vaults",
        "location": "westeurope",
        "tags": {"owner": "Zoë Müller", "site": "東京", "criticality": "high"},
        "properties": {
            "tenantId": tenant,
            "sku": {"family": "A", "name": "premium"},
            "accessPolicies": entries,
            "enableSoftDelete": True,
            "softDeleteRetentionInDays": 90,
            "enablePurgeProtection": None,
            "enableRbacAuthorization": False,
            "publicNetworkAccess": "Disabled",
            "networkAcls": {
                "bypass": "None",
                "defaultAction": "Deny",
                "ipRules": [{"value": "203.0.113.0/24"}],
                "virtualNetworkRules": [],
            },
            "vaultUri": "https://kv-prod.vault.azure.net/",
            "provisioningState": "Succeeded",
        },
    }


def run_together(count: int, action: Callable[[], object]) -> list[object]:
    """Run `action` on `count` threads released at the same moment; every result (or exception)."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def worker(index: int) -> None:
        barrier.wait()
        try:
            results[index] = action()
        except Exception as error:  # the caller inspects what each thread got
            results[index] = error

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


class StateStoreContract:
    """Every StateStore passes these. Subclasses provide the `store` fixture."""

    @pytest.fixture
    def store(self) -> StateStore:
        raise NotImplementedError("a contract subclass provides a fresh `store` fixture")

    # Batches

    def test_writes_in_a_batch_are_read_back_inside_and_after_it(self, store: StateStore) -> None:
        with store.batch():
            store.claim("evt-1", T0, LEASE)
            etag = store.put_baseline(VAULT, {"id": VAULT}, None, now=T0)
            store.add_mark("grants", VAULT, "principal:a|", T0)
            baseline = store.get_baseline(VAULT)
            assert baseline is not None and baseline.etag == etag
            store.complete("evt-1", T0)
        assert store.claim("evt-1", T0, LEASE) == "duplicate"
        assert [m for m, _ in store.marks_since("grants", VAULT, T0)] == ["principal:a|"]

    def test_an_error_inside_a_batch_propagates_and_the_store_stays_usable(self, store: StateStore) -> None:
        with pytest.raises(RuntimeError, match="midway"), store.batch():
            store.claim("evt-1", T0, LEASE)
            raise RuntimeError("midway")
        store.release("evt-1")
        assert store.claim("evt-1", T0, LEASE) == "claimed"

    # Event claims

    def test_first_claim_is_claimed(self, store: StateStore) -> None:
        assert store.claim("evt-1", T0, LEASE) == "claimed"

    def test_claim_while_the_lease_is_held_is_in_progress(self, store: StateStore) -> None:
        store.claim("evt-1", T0, LEASE)
        assert store.claim("evt-1", T0, LEASE) == "in_progress"
        assert store.claim("evt-1", T0 + LEASE - timedelta(seconds=1), LEASE) == "in_progress"

    def test_claim_after_the_lease_expired_takes_over(self, store: StateStore) -> None:
        store.claim("evt-1", T0, LEASE)
        assert store.claim("evt-1", T0 + LEASE, LEASE) == "claimed"
        # The takeover holds a fresh lease of its own.
        assert store.claim("evt-1", T0 + LEASE + timedelta(minutes=1), LEASE) == "in_progress"
        assert store.claim("evt-1", T0 + 2 * LEASE, LEASE) == "claimed"

    def test_completed_event_is_a_duplicate_forever(self, store: StateStore) -> None:
        store.claim("evt-1", T0, LEASE)
        store.complete("evt-1", T0 + timedelta(seconds=3))
        assert store.claim("evt-1", T0 + timedelta(seconds=4), LEASE) == "duplicate"
        assert store.claim("evt-1", T0 + timedelta(days=30), LEASE) == "duplicate"

    def test_complete_without_a_claim_still_marks_the_event_done(self, store: StateStore) -> None:
        store.complete("evt-1", T0)
        assert store.claim("evt-1", T0, LEASE) == "duplicate"

    def test_release_lets_a_redelivery_claim_at_once(self, store: StateStore) -> None:
        store.claim("evt-1", T0, LEASE)
        store.release("evt-1")
        assert store.claim("evt-1", T0 + timedelta(seconds=1), LEASE) == "claimed"

    def test_release_does_not_undo_a_completed_event(self, store: StateStore) -> None:
        store.claim("evt-1", T0, LEASE)
        store.complete("evt-1", T0)
        store.release("evt-1")
        assert store.claim("evt-1", T0, LEASE) == "duplicate"

    def test_release_of_an_unknown_event_is_harmless(self, store: StateStore) -> None:
        store.release("never-seen")
        assert store.claim("never-seen", T0, LEASE) == "claimed"

    def test_claims_are_per_event(self, store: StateStore) -> None:
        store.claim("evt-1", T0, LEASE)
        store.complete("evt-1", T0)
        assert store.claim("evt-2", T0, LEASE) == "claimed"
        assert store.claim("EVT-1", T0, LEASE) == "claimed"

    def test_event_ids_with_any_characters_are_claimable(self, store: StateStore) -> None:
        odd = "a/b\\c#d?e 'f' %g\t" + "x" * 600
        assert store.claim(odd, T0, LEASE) == "claimed"
        store.complete(odd, T0)
        assert store.claim(odd, T0, LEASE) == "duplicate"
        assert store.claim(odd[:-1], T0, LEASE) == "claimed"

    def test_concurrent_claims_have_exactly_one_winner(self, store: StateStore) -> None:
        results = run_together(8, lambda: store.claim("evt-race", T0, LEASE))
        assert Counter(results) == {"claimed": 1, "in_progress": 7}

    def test_concurrent_takeovers_of_an_expired_lease_have_exactly_one_winner(self, store: StateStore) -> None:
        store.claim("evt-race", T0, LEASE)
        results = run_together(8, lambda: store.claim("evt-race", T0 + 2 * LEASE, LEASE))
        assert Counter(results) == {"claimed": 1, "in_progress": 7}

    # Fenced claims: an owner whose lease was taken over changes nothing

    def test_a_takeover_fences_out_the_earlier_owner(self, store: StateStore) -> None:
        assert store.claim("evt-1", T0, LEASE, owner="a") == "claimed"
        assert store.claim("evt-1", T0 + LEASE, LEASE, owner="b") == "claimed"  # a's lease ran out
        assert store.renew("evt-1", "a", T0 + LEASE, LEASE) is False
        assert store.release("evt-1", "a") is False
        assert store.complete("evt-1", T0 + LEASE, "a") is False
        # Nothing changed: b still holds its lease, and the event is not done.
        assert store.claim("evt-1", T0 + LEASE + timedelta(seconds=1), LEASE, owner="c") == "in_progress"
        assert store.complete("evt-1", T0 + LEASE + timedelta(seconds=2), "b") is True
        assert store.claim("evt-1", T0 + 3 * LEASE, LEASE, owner="c") == "duplicate"

    def test_an_earlier_owners_release_leaves_the_new_owners_claim(self, store: StateStore) -> None:
        store.claim("evt-1", T0, LEASE, owner="a")
        store.claim("evt-1", T0 + LEASE, LEASE, owner="b")
        assert store.release("evt-1", "a") is False
        assert store.claim("evt-1", T0 + LEASE + timedelta(seconds=1), LEASE, owner="c") == "in_progress"
        assert store.release("evt-1", "b") is True
        assert store.claim("evt-1", T0 + LEASE + timedelta(seconds=2), LEASE, owner="c") == "claimed"

    def test_the_owner_renews_its_lease(self, store: StateStore) -> None:
        store.claim("evt-1", T0, LEASE, owner="a")
        assert store.renew("evt-1", "a", T0 + LEASE - timedelta(seconds=1), LEASE) is True
        assert store.claim("evt-1", T0 + LEASE, LEASE, owner="b") == "in_progress"
        assert store.claim("evt-1", T0 + 2 * LEASE, LEASE, owner="b") == "claimed"

    def test_a_done_or_unknown_claim_cannot_be_renewed_completed_or_released_by_owner(
        self, store: StateStore
    ) -> None:
        assert store.renew("never-seen", "a", T0, LEASE) is False
        assert store.complete("never-seen", T0, "a") is False
        assert store.claim("never-seen", T0, LEASE, owner="b") == "claimed"
        store.claim("evt-1", T0, LEASE, owner="a")
        assert store.complete("evt-1", T0, "a") is True
        assert store.renew("evt-1", "a", T0, LEASE) is False
        assert store.release("evt-1", "a") is False
        assert store.complete("evt-1", T0, "a") is False
        assert store.claim("evt-1", T0 + 2 * LEASE, LEASE, owner="c") == "duplicate"

    def test_renew_each_extends_every_lease_of_the_owner(self, store: StateStore) -> None:
        store.claim("evt-1", T0, LEASE, owner="a")
        store.claim("vault-lease:kv", T0, LEASE, owner="a")
        assert store.renew_each(["evt-1", "vault-lease:kv"], "a", T0 + LEASE - timedelta(seconds=1), LEASE) is True
        for claim_id in ("evt-1", "vault-lease:kv"):
            assert store.claim(claim_id, T0 + LEASE, LEASE, owner="b") == "in_progress"
            assert store.claim(claim_id, T0 + 2 * LEASE, LEASE, owner="b") == "claimed"

    def test_renew_each_changes_nothing_unless_the_owner_holds_every_lease(self, store: StateStore) -> None:
        store.claim("evt-1", T0, LEASE, owner="a")
        store.claim("vault-lease:kv", T0, LEASE, owner="b")
        assert store.renew_each(["evt-1", "vault-lease:kv"], "a", T0 + timedelta(minutes=4), LEASE) is False
        assert store.renew_each(["evt-1", "never-seen"], "a", T0 + timedelta(minutes=4), LEASE) is False
        assert store.claim("evt-1", T0 + LEASE, LEASE, owner="c") == "claimed"  # a's lease was not extended

    def test_claim_beside_takes_the_event_and_the_lease_while_the_lease_is_free(self, store: StateStore) -> None:
        assert store.claim_beside("evt-1", "vault-lease:kv", T0, LEASE, "a") == ("claimed", True)
        assert store.claim_beside("evt-2", "vault-lease:kv", T0, LEASE, "b") == ("claimed", False)  # a holds it
        assert store.claim_beside("evt-1", "vault-lease:kv", T0, LEASE, "c") == ("in_progress", False)
        assert store.renew_each(["evt-1", "vault-lease:kv"], "a", T0 + timedelta(seconds=1), LEASE) is True
        assert store.complete("evt-1", T0 + timedelta(seconds=2), "a", releasing=["vault-lease:kv"]) is True
        assert store.claim_beside("evt-1", "vault-lease:kv", T0 + timedelta(seconds=3), LEASE, "c") == (
            "duplicate", False)
        assert store.claim("vault-lease:kv", T0 + timedelta(seconds=3), LEASE, owner="b") == "claimed"

    def test_claim_beside_of_an_event_not_claimed_leaves_the_vaults_lease_free(self, store: StateStore) -> None:
        lock = "vault-lease:kv"
        assert store.claim("evt-1", T0, LEASE, owner="a", beside=lock) == "claimed"  # held, its vault free
        assert store.claim_beside("evt-1", lock, T0, LEASE, "c") == ("in_progress", False)
        assert store.claim(lock, T0, LEASE, owner="b") == "claimed"  # c kept no lease
        assert store.complete("evt-1", T0, "a") is True
        assert store.complete("evt-0", T0, "b", releasing=[lock]) is False  # b holds no evt-0
        assert store.release(lock, "b") is True
        assert store.claim_beside("evt-1", lock, T0, LEASE, "d") == ("duplicate", False)
        assert store.claim(lock, T0, LEASE, owner="e") == "claimed"  # nor did d

    def test_a_batch_whose_claims_were_taken_over_writes_nothing(self, store: StateStore) -> None:
        """The record of an attempt another owner took over, written the way the flow writes it
        (renewal, records, completion in one batch, a refusal raised), leaves no trace, whether the
        refusal comes at the renewal, at the completion or at the batch's end."""
        lock = "vault-lease:kv"
        assert store.claim_beside("evt-1", lock, T0, LEASE, "a") == ("claimed", True)
        late = T0 + LEASE + timedelta(seconds=1)
        assert store.claim_beside("evt-1", lock, late, LEASE, "b") == ("claimed", True)
        for completing in (True, False):
            with pytest.raises(TransientError), store.batch():
                if not store.renew_each(["evt-1", lock], "a", late, LEASE):
                    raise TransientError("taken over")
                store.append_audit(AuditRecord("evt-1", VAULT, late, {"outcome": "processed"}, attempt="a"))
                if completing and not store.complete("evt-1", late, "a", releasing=[lock]):
                    raise TransientError("taken over")
            assert not store.audited("evt-1", VAULT, "a")
        assert store.complete("evt-1", late, "b", releasing=[lock]) is True
        assert store.claim(lock, late, LEASE, owner="c") == "claimed"

    def test_claim_beside_takes_over_an_expired_lease_with_a_new_event(self, store: StateStore) -> None:
        assert store.claim_beside("evt-1", "vault-lease:kv", T0, LEASE, "a") == ("claimed", True)
        late = T0 + LEASE + timedelta(seconds=1)
        assert store.claim_beside("evt-2", "vault-lease:kv", late, LEASE, "b") == ("claimed", True)
        assert store.renew("vault-lease:kv", "a", late, LEASE) is False
        assert store.complete("evt-2", late, "b", releasing=["vault-lease:kv"]) is True

    def test_a_completion_lets_go_of_the_leases_released_with_it(self, store: StateStore) -> None:
        store.claim("evt-1", T0, LEASE, owner="a")
        store.claim("vault-lease:kv", T0, LEASE, owner="a")
        assert store.complete("evt-1", T0 + timedelta(seconds=1), "a", releasing=["vault-lease:kv"]) is True
        assert store.claim("evt-1", T0 + timedelta(seconds=2), LEASE, owner="b") == "duplicate"
        # Let go of: claimable at once, and the earlier owner holds it no more.
        assert store.renew("vault-lease:kv", "a", T0 + timedelta(seconds=2), LEASE) is False
        assert store.release("vault-lease:kv", "a") is False
        assert store.claim("vault-lease:kv", T0 + timedelta(seconds=2), LEASE, owner="b") == "claimed"
        assert store.claim("vault-lease:kv", T0 + timedelta(seconds=3), LEASE, owner="c") == "in_progress"

    def test_a_completion_changes_nothing_unless_the_owner_holds_every_lease_it_releases(
        self, store: StateStore
    ) -> None:
        store.claim("evt-1", T0, LEASE, owner="a")
        store.claim("vault-lease:kv", T0, LEASE, owner="b")  # taken over by b
        assert store.complete("evt-1", T0 + timedelta(seconds=1), "a", releasing=["vault-lease:kv"]) is False
        assert store.claim("vault-lease:kv", T0 + timedelta(seconds=2), LEASE, owner="c") == "in_progress"
        assert store.complete("evt-1", T0 + timedelta(seconds=2), "a") is True  # the event was not done

    def test_a_claim_beside_the_vaults_lease_is_a_claim_like_any(self, store: StateStore) -> None:
        """An event's claim kept beside its vault's lease: claimed once, renewed and completed with
        the lease, a duplicate afterwards; another owner's lease stops its completion."""
        lock = "vault-lease:kv"
        assert store.claim("evt-1", T0, LEASE, owner="a", beside=lock) == "claimed"
        assert store.claim("evt-1", T0, LEASE, owner="b", beside=lock) == "in_progress"
        assert store.claim(lock, T0, LEASE, owner="a") == "claimed"
        assert store.renew_each(["evt-1", lock], "a", T0 + LEASE - timedelta(seconds=1), LEASE) is True
        assert store.claim("evt-1", T0 + LEASE, LEASE, owner="b", beside=lock) == "in_progress"
        assert store.complete("evt-1", T0 + LEASE, "a", releasing=[lock]) is True
        assert store.claim("evt-1", T0 + LEASE, LEASE, owner="b", beside=lock) == "duplicate"
        assert store.claim(lock, T0 + LEASE, LEASE, owner="b") == "claimed"
        assert store.claim("evt-2", T0 + LEASE, LEASE, owner="c", beside=lock) == "claimed"
        assert store.complete("evt-2", T0 + LEASE, "c", releasing=[lock]) is False  # b holds the lease
        assert store.renew_each(["evt-2", lock], "c", T0 + LEASE, LEASE) is False
        assert store.release("evt-2", "c") is True
        assert store.claim("evt-2", T0 + LEASE, LEASE, owner="d", beside=lock) == "claimed"

    def test_a_claim_beside_a_lease_taken_over_after_it_ran_out(self, store: StateStore) -> None:
        lock = "vault-lease:kv"
        store.claim("evt-1", T0, LEASE, owner="a", beside=lock)
        store.claim(lock, T0, LEASE, owner="a")
        late = T0 + LEASE + timedelta(seconds=1)
        assert store.claim("evt-1", late, LEASE, owner="b", beside=lock) == "claimed"
        assert store.claim(lock, late, LEASE, owner="b") == "claimed"
        assert store.renew_each(["evt-1", lock], "a", late, LEASE) is False
        assert store.complete("evt-1", late, "a", releasing=[lock]) is False
        assert store.complete("evt-1", late, "b", releasing=[lock]) is True
        assert store.claim(lock, late, LEASE, owner="c") == "claimed"

    def test_a_lease_let_go_of_is_held_by_nobody_even_an_empty_owner(self, store: StateStore) -> None:
        store.claim("evt-1", T0, LEASE, owner="a")
        store.claim("vault-lease:kv", T0, LEASE, owner="a")
        store.complete("evt-1", T0, "a", releasing=["vault-lease:kv"])
        assert store.renew("vault-lease:kv", "", T0, LEASE) is False
        assert store.complete("vault-lease:kv", T0, "") is False
        assert store.claim("vault-lease:kv", T0, LEASE) == "claimed"

    def test_concurrent_claims_of_a_lease_let_go_of_have_exactly_one_winner(self, store: StateStore) -> None:
        store.claim("evt-1", T0, LEASE, owner="a")
        store.claim("vault-lease:kv", T0, LEASE, owner="a")
        store.complete("evt-1", T0, "a", releasing=["vault-lease:kv"])
        results = run_together(8, lambda: store.claim("vault-lease:kv", T0 + timedelta(seconds=1), LEASE, "b"))
        assert Counter(results) == {"claimed": 1, "in_progress": 7}

    def test_concurrent_completes_by_two_owners_have_one_winner(self, store: StateStore) -> None:
        store.claim("evt-1", T0, LEASE, owner="a")
        store.claim("evt-1", T0 + LEASE, LEASE, owner="b")
        owners = iter(["a", "b"] * 4)
        lock = threading.Lock()

        def complete() -> bool:
            with lock:
                owner = next(owners)
            return store.complete("evt-1", T0 + LEASE, owner)

        assert Counter(run_together(8, complete))[True] == 1

    # Write-ahead actions

    def test_an_intended_action_is_pending_until_finished(self, store: StateStore) -> None:
        intent = {"operations": [{"kind": "remove_access_policy", "target": {"objectId": "x"}}], "note": "Zoë"}
        store.begin_action("evt-1", "revert_access_policy", intent, T0)
        store.begin_action("evt-2", "restore_network", {"operations": []}, T0)
        [pending] = store.pending_actions("evt-1")
        assert (pending.scope, pending.handler, pending.intent, pending.at) == (
            "evt-1", "revert_access_policy", intent, T0,
        )
        store.begin_action("evt-1", "revert_access_policy", {"operations": [], "attempt": 2}, T0 + LEASE)
        assert [p.intent for p in store.pending_actions("evt-1")] == [{"operations": [], "attempt": 2}]
        store.finish_action("evt-1", "revert_access_policy")
        store.finish_action("evt-1", "revert_access_policy")
        assert store.pending_actions("evt-1") == []
        assert [p.handler for p in store.pending_actions("evt-2")] == ["restore_network"]

    def test_a_large_intent_round_trips(self, store: StateStore) -> None:
        intent = {"before": vault_config(policies=1024, seed=11)}
        store.begin_action("a/b#c?", "revert_access_policy", intent, T0)
        assert [p.intent for p in store.pending_actions("a/b#c?")] == [intent]

    # Outbox

    def test_outbox_items_wait_until_dropped(self, store: StateStore) -> None:
        store.put_outbox("notify_webhook|alert|kv|KV-AP-01|evt-1", {"alert": {"rule": "KV-AP-01"}}, T0)
        store.put_outbox("notify_webhook|alert|kv|KV-AP-03|evt-1", {"alert": {"rule": "KV-AP-03"}}, T0)
        store.put_outbox("notify_webhook|alert|kv|KV-AP-01|evt-1", {"alert": {"rule": "KV-AP-01"}, "n": 2},
                         T0 + LEASE)
        items = store.list_outbox()
        assert [(i.key.split("|")[3], i.at) for i in items] == [("KV-AP-01", T0), ("KV-AP-03", T0)]
        assert items[0].item == {"alert": {"rule": "KV-AP-01"}, "n": 2}
        store.drop_outbox(items[0].key)
        store.drop_outbox(items[0].key)
        assert [i.key for i in store.list_outbox()] == [items[1].key]

    # Retention

    def test_prune_forgets_old_records_and_keeps_current_state(self, store: StateStore) -> None:
        old, new, cutoff = T0, T0 + timedelta(days=100), T0 + timedelta(days=10)
        for at, suffix in ((old, "old"), (new, "new")):
            store.claim(f"done-{suffix}", at, LEASE, owner="a")
            store.complete(f"done-{suffix}", at, "a")
            store.append_audit(AuditRecord(f"evt-{suffix}", VAULT, at, {"n": suffix}))
            store.record_rejected(RejectedPayload(f"bad {suffix}", "x", at))
            store.add_mark("caller_writes", "caller-1", suffix, at)
            store.begin_action(f"evt-{suffix}", "revert_access_policy", {"n": suffix}, at)
            store.put_outbox(f"key-{suffix}", {"n": suffix}, at)
        store.claim("held", cutoff - timedelta(seconds=1), LEASE, owner="a")  # unfinished, lease still running
        etag = store.put_baseline(VAULT, vault_config(), None, now=old)
        store.open_finding(VAULT, "KV-AP-03", {"n": 1}, old)

        removed = store.prune(cutoff)

        assert removed == 6  # one of each kind
        assert [r.event_id for r in store.list_audit()] == ["evt-new"]
        assert [r.reason for r in store.list_rejected()] == ["bad new"]
        assert [m for m, _ in store.marks_since("caller_writes", "caller-1", old)] == ["new"]
        assert store.pending_actions("evt-old") == [] and len(store.pending_actions("evt-new")) == 1
        assert [i.key for i in store.list_outbox()] == ["key-new"]
        assert store.claim("done-new", new, LEASE, owner="b") == "duplicate"
        assert store.claim("held", cutoff, LEASE, owner="b") == "in_progress"
        baseline = store.get_baseline(VAULT)
        assert baseline is not None and baseline.etag == etag
        assert [f.rule for f in store.open_findings(VAULT)] == ["KV-AP-03"]
        assert store.prune(cutoff) == 0

    # Baselines

    def test_no_baseline_for_an_unknown_vault(self, store: StateStore) -> None:
        assert store.get_baseline(VAULT) is None
        assert store.list_baselines() == []

    def test_create_then_read_a_baseline(self, store: StateStore) -> None:
        config = vault_config()
        etag = store.put_baseline(VAULT, config, None, now=T0)
        baseline = store.get_baseline(VAULT)
        assert baseline is not None
        assert baseline.vault_id == VAULT
        assert baseline.config == config
        assert baseline.etag == etag
        assert baseline.deleted is False
        assert baseline.updated == T0

    def test_a_resource_beside_the_vaults_has_its_baseline_under_its_own_id(self, store: StateStore) -> None:
        """One role assignment at subscription scope covers many vaults and is stored once."""
        assignment = ("/subscriptions/0b1f6471-1bf0-4dda-aec3-111122223333/providers/Microsoft.Authorization"
                      "/roleAssignments/0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e")
        doc = {"id": assignment, "type": "Microsoft.Authorization/roleAssignments",
               "properties": {"principalId": "p", "roleDefinitionId": "r", "scope": assignment.split("/providers")[0]}}
        store.put_baseline(VAULT, vault_config(), None, now=T0)
        etag = store.put_baseline(assignment, doc, None, now=T0)
        stored = store.get_baseline(assignment.upper().replace("/SUBSCRIPTIONS/", "/subscriptions/"))
        assert stored is not None and stored.config == doc and stored.vault_id == assignment
        store.put_baseline(assignment, doc, etag, deleted=True, now=T0)
        listed = {b.vault_id: b.deleted for b in store.list_baselines()}
        assert listed == {VAULT: False, assignment: True}

    def test_update_with_the_current_etag(self, store: StateStore) -> None:
        first = store.put_baseline(VAULT, vault_config(seed=1), None, now=T0)
        changed = vault_config(seed=2)
        second = store.put_baseline(VAULT, changed, first, now=T0 + timedelta(minutes=1))
        assert second != first
        baseline = store.get_baseline(VAULT)
        assert baseline is not None
        assert (baseline.config, baseline.etag, baseline.updated) == (changed, second, T0 + timedelta(minutes=1))

    def test_update_with_a_stale_etag_fails_and_changes_nothing(self, store: StateStore) -> None:
        first = store.put_baseline(VAULT, vault_config(seed=1), None, now=T0)
        second = store.put_baseline(VAULT, vault_config(seed=2), first, now=T0)
        with pytest.raises(ConcurrencyError):
            store.put_baseline(VAULT, vault_config(seed=3), first, now=T0)
        baseline = store.get_baseline(VAULT)
        assert baseline is not None
        assert (baseline.config, baseline.etag) == (vault_config(seed=2), second)

    def test_update_with_a_made_up_etag_fails(self, store: StateStore) -> None:
        store.put_baseline(VAULT, vault_config(), None, now=T0)
        with pytest.raises(ConcurrencyError):
            store.put_baseline(VAULT, vault_config(seed=3), 'W/"not-an-etag"', now=T0)

    def test_update_of_a_missing_baseline_fails(self, store: StateStore) -> None:
        with pytest.raises(ConcurrencyError):
            store.put_baseline(VAULT, vault_config(), 'W/"anything"', now=T0)
        assert store.get_baseline(VAULT) is None

    def test_create_when_one_exists_fails_and_changes_nothing(self, store: StateStore) -> None:
        etag = store.put_baseline(VAULT, vault_config(seed=1), None, now=T0)
        with pytest.raises(ConcurrencyError):
            store.put_baseline(VAULT, vault_config(seed=2), None, now=T0)
        baseline = store.get_baseline(VAULT)
        assert baseline is not None
        assert (baseline.config, baseline.etag) == (vault_config(seed=1), etag)

    def test_concurrent_writers_with_the_same_etag_have_exactly_one_winner(self, store: StateStore) -> None:
        etag = store.put_baseline(VAULT, vault_config(seed=1), None, now=T0)
        seeds = iter(range(100, 108))
        lock = threading.Lock()

        def write() -> str:
            with lock:
                seed = next(seeds)
            return store.put_baseline(VAULT, vault_config(seed=seed), etag, now=T0)

        results = run_together(8, write)
        winners = [result for result in results if isinstance(result, str)]
        assert len(winners) == 1
        assert all(isinstance(result, ConcurrencyError) for result in results if not isinstance(result, str))
        baseline = store.get_baseline(VAULT)
        assert baseline is not None
        assert baseline.etag == winners[0]

    def test_vault_ids_compare_case_insensitively(self, store: StateStore) -> None:
        etag = store.put_baseline(VAULT, vault_config(), None, now=T0)
        baseline = store.get_baseline(VAULT_OTHER_CASE)
        assert baseline is not None
        assert baseline.vault_id == VAULT  # the spelling it was written with, for display
        with pytest.raises(ConcurrencyError):
            store.put_baseline(VAULT.upper(), vault_config(seed=2), None, now=T0)
        store.put_baseline(VAULT_OTHER_CASE, vault_config(seed=2), etag, now=T0)
        baseline = store.get_baseline(VAULT)
        assert baseline is not None
        assert baseline.config == vault_config(seed=2)
        assert len(store.list_baselines()) == 1

    def test_deleted_flag_round_trips(self, store: StateStore) -> None:
        etag = store.put_baseline(VAULT, vault_config(), None, now=T0)
        etag = store.put_baseline(VAULT, vault_config(), etag, deleted=True, now=T0)
        baseline = store.get_baseline(VAULT)
        assert baseline is not None
        assert baseline.deleted is True
        store.put_baseline(VAULT, vault_config(), etag, now=T0)
        baseline = store.get_baseline(VAULT)
        assert baseline is not None
        assert baseline.deleted is False

    def test_a_deleted_vault_can_be_baselined_with_an_empty_config(self, store: StateStore) -> None:
        store.put_baseline(VAULT, {}, None, deleted=True, now=T0)
        baseline = store.get_baseline(VAULT)
        assert baseline is not None
        assert (baseline.config, baseline.deleted) == ({}, True)

    def test_list_baselines_returns_every_vault(self, store: StateStore) -> None:
        store.put_baseline(VAULT, vault_config(VAULT), None, now=T0)
        store.put_baseline(OTHER_VAULT, vault_config(OTHER_VAULT), None, deleted=True, now=T0)
        listed = {baseline.vault_id: baseline for baseline in store.list_baselines()}
        assert set(listed) == {VAULT, OTHER_VAULT}
        assert listed[VAULT].config == vault_config(VAULT)
        assert listed[OTHER_VAULT].deleted is True
        for vault_id, baseline in listed.items():
            current = store.get_baseline(vault_id)
            assert current is not None
            assert baseline.etag == current.etag

    def test_a_vault_with_1024_access_policies_round_trips_exactly(self, store: StateStore) -> None:
        config = vault_config(policies=1024, seed=1024)
        assert len(json.dumps(config)) > 512 * 1024  # far beyond one 64 KiB property
        etag = store.put_baseline(VAULT, config, None, now=T0)
        baseline = store.get_baseline(VAULT)
        assert baseline is not None
        assert baseline.config == config
        assert len(baseline.config["properties"]["accessPolicies"]) == 1024
        # and it can be replaced by a small one again (nothing of the large one is left behind)
        store.put_baseline(VAULT, vault_config(policies=1), etag, now=T0)
        baseline = store.get_baseline(VAULT)
        assert baseline is not None
        assert baseline.config == vault_config(policies=1)

    def test_updated_defaults_to_an_aware_time(self, store: StateStore) -> None:
        store.put_baseline(VAULT, vault_config(), None)
        baseline = store.get_baseline(VAULT)
        assert baseline is not None
        assert baseline.updated is not None
        assert baseline.updated.utcoffset() == timedelta(0)

    # Audit records

    def test_audit_records_append_and_list_oldest_first(self, store: StateStore) -> None:
        later = AuditRecord("evt-2", VAULT, T0 + timedelta(seconds=5), {"outcome": "duplicate"})
        first = AuditRecord(
            "evt-1", VAULT, T0,
            {"outcome": "processed", "risk": 95, "findings": [{"rule": "KV-AP-01", "evidence": {"added": ["x"]}}],
             "actions": [{"handler": "revert_access_policy", "status": "applied"}], "note": "Zoë ✓"},
        )
        store.append_audit(later)
        store.append_audit(first)
        assert store.list_audit() == [first, later]

    def test_audit_filters_by_vault_case_insensitively(self, store: StateStore) -> None:
        mine = AuditRecord("evt-1", VAULT, T0, {"outcome": "processed"})
        other = AuditRecord("evt-2", OTHER_VAULT, T0 + timedelta(seconds=1), {"outcome": "processed"})
        no_vault = AuditRecord("evt-3", None, T0 + timedelta(seconds=2), {"outcome": "rejected"})
        for record in (mine, other, no_vault):
            store.append_audit(record)
        assert store.list_audit(VAULT_OTHER_CASE) == [mine]
        assert store.list_audit(OTHER_VAULT.upper()) == [other]
        assert store.list_audit() == [mine, other, no_vault]
        assert store.list_audit("/subscriptions/x/resourceGroups/y/providers/Microsoft.KeyVault/vaults/z") == []

    def test_audit_keeps_a_large_outcome(self, store: StateStore) -> None:
        config = vault_config(policies=1024, seed=5)
        record = AuditRecord("evt-1", VAULT, T0, {"before": config, "after": vault_config(policies=1024, seed=6)})
        store.append_audit(record)
        assert store.list_audit(VAULT) == [record]

    def test_audit_appends_every_record_even_for_the_same_event(self, store: StateStore) -> None:
        store.append_audit(AuditRecord("evt-1", VAULT, T0, {"attempt": 1}))
        store.append_audit(AuditRecord("evt-1", VAULT, T0 + timedelta(seconds=1), {"attempt": 2}))
        assert [record.outcome["attempt"] for record in store.list_audit(VAULT)] == [1, 2]

    def test_audited_says_whether_an_event_has_a_record_for_the_vault(self, store: StateStore) -> None:
        store.append_audit(AuditRecord("evt-1", VAULT, T0, {}))
        store.append_audit(AuditRecord("evt-2", None, T0, {}))
        assert store.audited("evt-1", VAULT_OTHER_CASE) is True
        assert store.audited("evt-1", OTHER_VAULT) is False
        assert store.audited("evt-3", VAULT) is False
        assert store.audited("evt-2", None) is True
        assert store.audited("evt-1", None) is False

    def test_audited_by_an_attempt_matches_the_record_that_attempt_wrote(self, store: StateStore) -> None:
        store.append_audit(AuditRecord("evt-1", VAULT, T0, {}, attempt="attempt-1"))
        store.append_audit(AuditRecord("evt-2", VAULT, T0, {}))
        assert store.audited("evt-1", VAULT, "attempt-1") is True
        assert store.audited("evt-1", VAULT, "attempt-2") is False  # a later attempt's intent
        assert store.audited("evt-1", VAULT) is True
        assert store.audited("evt-2", VAULT, "attempt-1") is False

    # Rejected payloads

    def test_rejected_payloads_are_kept_verbatim(self, store: StateStore) -> None:
        not_json = RejectedPayload("not JSON: Expecting value at line 1 column 1", "<html>oops</html>", T0)
        no_vault = RejectedPayload(
            "missing vault id", '{"id": "e-1", "subject": "/a/b\\\\c#d?e"}', T0 + timedelta(seconds=1), event_id="e-1"
        )
        store.record_rejected(no_vault)
        store.record_rejected(not_json)
        assert store.list_rejected() == [not_json, no_vault]

    def test_a_300_kb_raw_payload_round_trips(self, store: StateStore) -> None:
        rng = random.Random(300)
        raw = json.dumps([{"id": str(uuid.UUID(int=rng.getrandbits(128))), "blob": rng.randbytes(96).hex()}
                          for _ in range(1300)])
        assert len(raw) > 300_000
        rejected = RejectedPayload("wrong shape: expected an object", raw, T0, event_id=None)
        store.record_rejected(rejected)
        assert store.list_rejected() == [rejected]

    def test_a_raw_payload_that_does_not_compress_round_trips(self, store: StateStore) -> None:
        raw = base64.b64encode(random.Random(2).randbytes(1_500_000)).decode() + " ünïcödé ✓"
        rejected = RejectedPayload("not JSON", raw, T0)
        store.record_rejected(rejected)
        assert store.list_rejected() == [rejected]

    # Open findings

    def test_open_refresh_and_close_a_finding(self, store: StateStore) -> None:
        first = {"rule": "KV-NET-01", "severity": "high", "evidence": {"before": "Disabled", "after": "Enabled"}}
        assert store.open_finding(VAULT, "KV-NET-01", first, T0) is True
        refreshed = {**first, "score": 80}
        assert store.open_finding(VAULT_OTHER_CASE, "KV-NET-01", refreshed, T0 + timedelta(minutes=3)) is False
        [finding] = store.open_findings(VAULT)
        assert (finding.rule, finding.finding, finding.opened) == ("KV-NET-01", refreshed, T0)
        assert finding.vault_id.lower().rstrip("/") == VAULT.lower()
        assert store.close_finding(VAULT.upper(), "KV-NET-01") is True
        assert store.close_finding(VAULT, "KV-NET-01") is False
        assert store.open_findings(VAULT) == []
        assert store.open_finding(VAULT, "KV-NET-01", first, T0 + timedelta(hours=1)) is True
        [finding] = store.open_findings(VAULT)
        assert finding.opened == T0 + timedelta(hours=1)

    def test_findings_are_one_per_vault_and_rule(self, store: StateStore) -> None:
        store.open_finding(VAULT, "KV-AP-03", {"n": 1}, T0)
        store.open_finding(VAULT, "KV-PROT-01", {"n": 2}, T0)
        store.open_finding(OTHER_VAULT, "KV-AP-03", {"n": 3}, T0)
        assert sorted((f.rule, f.finding["n"]) for f in store.open_findings(VAULT)) == [
            ("KV-AP-03", 1), ("KV-PROT-01", 2),
        ]
        assert store.close_finding(VAULT, "KV-AP-03") is True
        assert [f.rule for f in store.open_findings(VAULT)] == ["KV-PROT-01"]
        assert [f.finding for f in store.open_findings(OTHER_VAULT)] == [{"n": 3}]

    def test_close_of_a_finding_never_opened_is_false(self, store: StateStore) -> None:
        assert store.close_finding(VAULT, "KV-AP-01") is False

    def test_a_finding_with_large_evidence_round_trips(self, store: StateStore) -> None:
        evidence = {"accessPolicies": vault_config(policies=1024, seed=9)["properties"]["accessPolicies"]}
        assert store.open_finding(VAULT, "KV-AP-03", evidence, T0) is True
        [finding] = store.open_findings(VAULT)
        assert finding.finding == evidence

    def test_a_finding_naming_its_baseline_by_etag_round_trips_and_refreshes_as_it_was_read(
        self, store: StateStore
    ) -> None:
        config = vault_config(policies=64, seed=3)
        written = {"rule": "KV-NET-01", "evidence": {"after": "Allow"}, "callerNamed": True,
                   "baseline": {"etag": "etag-1", "config": config}}
        assert store.open_finding(VAULT, "KV-NET-01", written, T0) is True
        [first] = store.open_findings(VAULT_OTHER_CASE)
        assert first.finding == written
        # The pipeline refreshes a finding with the baseline it read back (`Pipeline._open`).
        refreshed = {**first.finding, "evidence": {"after": "Deny"}}
        assert store.open_finding(VAULT, "KV-NET-01", refreshed, T0 + timedelta(minutes=1)) is False
        [again] = store.open_findings(VAULT)
        assert again.finding == {**written, "evidence": {"after": "Deny"}}
        assert again.finding["baseline"]["config"] == config
        assert again.opened == T0

    def test_findings_naming_one_baseline_keep_it_until_the_last_of_them_closes(self, store: StateStore) -> None:
        config = vault_config(policies=4, seed=4)
        for rule in ("KV-NET-01", "KV-NET-02"):
            store.open_finding(VAULT, rule, {"rule": rule, "baseline": {"etag": "etag-1", "config": config}}, T0)
        store.open_finding(OTHER_VAULT, "KV-NET-01", {"baseline": {"etag": "etag-1", "config": {"other": 1}}}, T0)
        assert store.close_finding(VAULT, "KV-NET-01") is True
        store.prune(T0 + timedelta(days=365))
        [left] = store.open_findings(VAULT)
        assert left.finding["baseline"] == {"etag": "etag-1", "config": config}
        [other] = store.open_findings(OTHER_VAULT)
        assert other.finding["baseline"]["config"] == {"other": 1}
        assert store.close_finding(VAULT, "KV-NET-02") is True
        store.prune(T0 + timedelta(days=365))
        # Opened again later against the same baseline: its configuration is written afresh.
        store.open_finding(VAULT, "KV-NET-01", {"baseline": {"etag": "etag-1", "config": config}},
                           T0 + timedelta(days=366))
        [reopened] = store.open_findings(VAULT)
        assert reopened.finding["baseline"]["config"] == config

    def test_a_finding_whose_baseline_names_no_etag_keeps_its_document(self, store: StateStore) -> None:
        written = {"rule": "KV-RBAC-01", "baseline": {"config": {"id": "/x", "properties": {"scope": "/y"}}}}
        store.open_finding(VAULT, "KV-RBAC-01", written, T0)
        [finding] = store.open_findings(VAULT)
        assert finding.finding == written

    # Marks

    def test_marks_since_includes_the_window_edge_and_orders_oldest_first(self, store: StateStore) -> None:
        for member, minutes in (("kv-c", 9), ("kv-a", 1), ("kv-b", 5), ("kv-old", -1)):
            store.add_mark("caller-vaults", "caller-1", member, T0 + timedelta(minutes=minutes))
        assert store.marks_since("caller-vaults", "caller-1", T0 + timedelta(minutes=1)) == [
            ("kv-a", T0 + timedelta(minutes=1)),
            ("kv-b", T0 + timedelta(minutes=5)),
            ("kv-c", T0 + timedelta(minutes=9)),
        ]
        assert store.marks_since("caller-vaults", "caller-1", T0 + timedelta(minutes=1, microseconds=1)) == [
            ("kv-b", T0 + timedelta(minutes=5)),
            ("kv-c", T0 + timedelta(minutes=9)),
        ]
        assert store.marks_since("caller-vaults", "caller-1", T0 + timedelta(minutes=10)) == []

    def test_add_mark_is_idempotent_per_member_and_time(self, store: StateStore) -> None:
        store.add_mark("remediations", VAULT, "evt-1", T0)
        store.add_mark("remediations", VAULT, "evt-1", T0)
        store.add_mark("remediations", VAULT, "evt-1", T0 + timedelta(seconds=1))
        store.add_mark("remediations", VAULT, "evt-2", T0)
        assert sorted(store.marks_since("remediations", VAULT, T0)) == [
            ("evt-1", T0), ("evt-1", T0 + timedelta(seconds=1)), ("evt-2", T0),
        ]

    def test_marks_are_separate_per_series_and_key(self, store: StateStore) -> None:
        store.add_mark("caller-vaults", "caller-1", "kv-a", T0)
        store.add_mark("caller-failures", "caller-1", "kv-b", T0)
        store.add_mark("caller-vaults", "caller-2", "kv-c", T0)
        assert store.marks_since("caller-vaults", "caller-1", T0) == [("kv-a", T0)]
        assert store.marks_since("caller-failures", "caller-1", T0) == [("kv-b", T0)]
        assert store.marks_since("caller-vaults", "caller-3", T0) == []

    def test_marks_since_each_answers_every_query_in_its_order_as_marks_since_would(self, store: StateStore) -> None:
        for member, minutes in (("kv-c", 9), ("kv-a", 1), ("kv-b", 5)):
            store.add_mark("caller-vaults", "caller-1", member, T0 + timedelta(minutes=minutes))
        store.add_mark("grants", VAULT, "principal:a|", T0)
        store.add_mark("caller-vaults", "caller-2", "kv-z", T0)
        queries = [
            MarkQuery("grants", VAULT_OTHER_CASE, T0),
            MarkQuery("caller-vaults", "caller-1", T0 + timedelta(minutes=5)),
            MarkQuery("caller-vaults", "caller-3", T0),
            MarkQuery("caller-vaults", "caller-1", T0),  # the same series and key again, a wider window
        ]
        answers = store.marks_since_each(queries)
        assert answers == [store.marks_since(*query) for query in queries]
        assert answers == [
            [("principal:a|", T0)],
            [("kv-b", T0 + timedelta(minutes=5)), ("kv-c", T0 + timedelta(minutes=9))],
            [],
            [("kv-a", T0 + timedelta(minutes=1)), ("kv-b", T0 + timedelta(minutes=5)),
             ("kv-c", T0 + timedelta(minutes=9))],
        ]
        assert store.marks_since_each([]) == []

    def test_load_reads_what_the_reads_one_by_one_read(self, store: StateStore) -> None:
        """`load` is the one read of a vault event: the baseline, the open findings, the intents of
        the vault's scope and the marks asked for, as each read would give them, and only the
        vault's (another vault's state, another scope's intents are not in it)."""
        store.put_baseline(VAULT, vault_config(policies=3, seed=1), None, now=T0)
        store.put_baseline(OTHER_VAULT, vault_config(policies=2, seed=2), None, now=T0)
        store.open_finding(VAULT, "KV-AP-01", {"evidence": {"principal": "p-1"}}, T0)
        store.open_finding(OTHER_VAULT, "KV-NET-01", {"evidence": {}}, T0)
        store.begin_action("kv-scope", "revert_access_policy", {"event_id": "evt-1", "operations": []}, T0)
        store.begin_action("other-scope", "restore_network", {"event_id": "evt-2", "operations": []}, T0)
        store.add_mark("grants", VAULT, "principal:a|", T0)
        store.add_mark("caller_vaults", "caller-1", "kv-a", T0 + timedelta(minutes=1))
        queries = [MarkQuery("grants", VAULT_OTHER_CASE, T0), MarkQuery("caller_vaults", "caller-1", T0),
                   MarkQuery("remediations", VAULT, T0)]
        state = store.load(VAULT_OTHER_CASE, "kv-scope", queries)
        assert state.baseline == store.get_baseline(VAULT)
        assert state.baseline is not None and state.baseline.config == vault_config(policies=3, seed=1)
        assert state.findings == store.open_findings(VAULT) and [f.rule for f in state.findings] == ["KV-AP-01"]
        assert state.pending == store.pending_actions("kv-scope")
        assert [p.handler for p in state.pending] == ["revert_access_policy"]
        assert state.marks == store.marks_since_each(queries)
        assert state.marks == [[("principal:a|", T0)], [("kv-a", T0 + timedelta(minutes=1))], []]

    def test_load_orders_what_it_reads_as_the_reads_one_by_one_do(self, store: StateStore) -> None:
        store.put_baseline(VAULT, vault_config(policies=2, seed=3), None, now=T0)
        for rule in ("KV-NET-01", "KV-AP-01", "KV-DIAG-01"):
            store.open_finding(VAULT, rule, {"evidence": {"rule": rule}}, T0)
        for handler in ("restore_network", "revert_access_policy"):
            store.begin_action("kv-scope", handler, {"event_id": f"evt-{handler}", "operations": []}, T0)
        for member, at in (("evt-b", T0), ("evt-a", T0), ("evt-c", T0 - timedelta(minutes=1))):
            store.add_mark("remediations", VAULT, member, at)
        for minute in (3, 1, 2):
            store.add_mark("caller_vaults", "caller-1", f"kv-{minute}", T0 + timedelta(minutes=minute))
        queries = [MarkQuery("remediations", VAULT, T0 - timedelta(hours=1)),
                   MarkQuery("caller_vaults", "caller-1", T0 + timedelta(minutes=2))]
        state = store.load(VAULT, "kv-scope", queries)
        assert [f.rule for f in state.findings] == ["KV-AP-01", "KV-DIAG-01", "KV-NET-01"]
        assert state.findings == store.open_findings(VAULT)
        assert [p.handler for p in state.pending] == ["restore_network", "revert_access_policy"]
        assert state.pending == store.pending_actions("kv-scope")
        assert state.marks == store.marks_since_each(queries)
        assert state.marks[0][0][0] == "evt-c"  # oldest first
        assert state.marks[1] == [("kv-2", T0 + timedelta(minutes=2)), ("kv-3", T0 + timedelta(minutes=3))]

    def test_load_answers_more_series_of_marks_than_one_statement_takes(self, store: StateStore) -> None:
        for index in range(120):
            store.add_mark("grants", f"vault-{index}", f"principal:{index}|", T0)
        queries = [MarkQuery("grants", f"vault-{index}", T0) for index in range(120)]
        assert store.load(VAULT, "kv-scope", queries).marks == [[(f"principal:{index}|", T0)] for index in range(120)]

    def test_load_of_a_vault_nothing_is_known_of(self, store: StateStore) -> None:
        state = store.load(VAULT, "kv-scope", [])
        assert (state.baseline, state.findings, state.pending, state.marks) == (None, [], [], [])

    def test_marks_since_each_answers_many_queries(self, store: StateStore) -> None:
        for index in range(150):
            store.add_mark("grants", f"vault-{index}", f"principal:{index}|", T0)
        answers = store.marks_since_each([MarkQuery("grants", f"vault-{index}", T0) for index in range(150)])
        assert answers == [[(f"principal:{index}|", T0)] for index in range(150)]

    def test_mark_keys_that_are_resource_ids_compare_case_insensitively(self, store: StateStore) -> None:
        store.add_mark("remediations", VAULT, "evt-1", T0)
        store.add_mark("remediations", VAULT_OTHER_CASE, "evt-1", T0)
        assert store.marks_since("remediations", VAULT.upper(), T0 - timedelta(minutes=1)) == [("evt-1", T0)]

    def test_marks_with_odd_characters_round_trip(self, store: StateStore) -> None:
        member = "/subscriptions/x/resourceGroups/y/providers/Microsoft.KeyVault/vaults/z#?\\'"
        store.add_mark("series/with#odd?chars", "live.com#user@example.com", member, T0)
        assert store.marks_since("series/with#odd?chars", "LIVE.com#user@example.com", T0) == [(member, T0)]

    # Times

    def test_times_come_back_aware_and_in_utc(self, store: StateStore) -> None:
        berlin = timezone(timedelta(hours=1))
        local = datetime(2026, 11, 27, 11, 0, 0, 123456, tzinfo=berlin)  # T0 + 0.123456 s
        store.put_baseline(VAULT, vault_config(), None, now=local)
        store.append_audit(AuditRecord("evt-1", VAULT, local, {}))
        store.record_rejected(RejectedPayload("bad", "x", local))
        store.open_finding(VAULT, "KV-AP-01", {}, local)
        store.add_mark("s", "k", "m", local)
        baseline = store.get_baseline(VAULT)
        assert baseline is not None
        times = [
            baseline.updated,
            store.list_audit()[0].at,
            store.list_rejected()[0].at,
            store.open_findings(VAULT)[0].opened,
            store.marks_since("s", "k", T0)[0][1],
        ]
        for moment in times:
            assert moment == T0 + timedelta(microseconds=123456)
            assert moment is not None and moment.utcoffset() == timedelta(0)

    def test_mark_windows_compare_instants_not_wall_clocks(self, store: StateStore) -> None:
        store.add_mark("s", "k", "m", T0)
        an_hour_east = timezone(timedelta(hours=1))
        assert store.marks_since("s", "k", T0.astimezone(an_hour_east)) == [("m", T0)]
        assert store.marks_since("s", "k", (T0 + timedelta(seconds=1)).astimezone(an_hour_east)) == []

    def test_naive_times_are_refused(self, store: StateStore) -> None:
        naive = datetime(2026, 11, 27, 10, 0, 0)
        with pytest.raises(ValueError, match="naive"):
            store.claim("evt-1", naive, LEASE)
        with pytest.raises(ValueError, match="naive"):
            store.add_mark("s", "k", "m", naive)
        with pytest.raises(ValueError, match="naive"):
            store.append_audit(AuditRecord("evt-1", VAULT, naive, {}))
        assert store.claim("evt-1", T0, LEASE) == "claimed"
        assert store.list_audit() == []

    # The ledger of own writes: an entry is matched by the nonce its write carried, nothing else

    def test_an_own_write_matches_its_entry_by_its_nonce_case_insensitively(self, store: StateStore) -> None:
        store.record_own_write(OwnWrite(VAULT, ACCESS_POLICY_WRITE, NONCE, T0, "evt-0", "attempt-0"))
        assert store.match_own_write(VAULT_OTHER_CASE, ACCESS_POLICY_WRITE.lower(), NONCE, since=T0, until=LATER)

    def test_an_event_without_its_entry_does_not_match(self, store: StateStore) -> None:
        store.record_own_write(OwnWrite(VAULT, ACCESS_POLICY_WRITE, NONCE, T0))
        assert not store.match_own_write(OTHER_VAULT, ACCESS_POLICY_WRITE, NONCE, since=T0, until=LATER)
        assert not store.match_own_write(VAULT, VAULT_WRITE, NONCE, since=T0, until=LATER)
        assert not store.match_own_write(VAULT, ACCESS_POLICY_WRITE, OTHER_NONCE, since=T0, until=LATER)

    def test_an_open_entry_never_covers_a_write_without_its_nonce(self, store: StateStore) -> None:
        """The attack of a refused revert: its entry stays, and the next unplanned write by the
        identity to that vault, with a request id of its own, is not kvguard's."""
        store.record_own_write(OwnWrite(VAULT, ACCESS_POLICY_WRITE, NONCE, T0, "evt-0", "attempt-0"))
        assert not store.match_own_write(VAULT, ACCESS_POLICY_WRITE, OTHER_NONCE, since=T0, until=LATER)
        assert store.match_own_write(VAULT, ACCESS_POLICY_WRITE, NONCE, since=T0, until=LATER)

    def test_an_entry_made_after_the_window_does_not_match(self, store: StateStore) -> None:
        """An event from before kvguard planned its write cannot be that write's."""
        store.record_own_write(OwnWrite(VAULT, VAULT_WRITE, NONCE, T0))
        assert not store.match_own_write(VAULT, VAULT_WRITE, NONCE, since=T0 - timedelta(days=1),
                                         until=T0 - timedelta(microseconds=1))
        assert store.match_own_write(VAULT, VAULT_WRITE, NONCE, since=T0 - timedelta(days=1), until=T0)

    def test_an_entry_older_than_the_window_does_not_match(self, store: StateStore) -> None:
        store.record_own_write(OwnWrite(VAULT, VAULT_WRITE, NONCE, T0))
        assert not store.match_own_write(VAULT, VAULT_WRITE, NONCE, since=T0 + timedelta(microseconds=1), until=LATER)
        assert store.match_own_write(VAULT, VAULT_WRITE, NONCE, since=T0, until=LATER)

    def test_every_event_of_the_write_matches_its_entry(self, store: StateStore) -> None:
        """A redelivery, and ARM's second event of the same write, carry the same nonce."""
        store.record_own_write(OwnWrite(VAULT, ACCESS_POLICY_WRITE, NONCE, T0))
        for _ in range(3):
            assert store.match_own_write(VAULT, ACCESS_POLICY_WRITE, NONCE, since=T0, until=LATER)

    def test_two_entries_cover_two_writes_and_no_third(self, store: StateStore) -> None:
        store.record_own_write(OwnWrite(VAULT, ACCESS_POLICY_WRITE, NONCE, T0))
        store.record_own_write(OwnWrite(VAULT, ACCESS_POLICY_WRITE, OTHER_NONCE, T0))
        assert store.match_own_write(VAULT, ACCESS_POLICY_WRITE, NONCE, since=T0, until=LATER)
        assert store.match_own_write(VAULT, ACCESS_POLICY_WRITE, OTHER_NONCE, since=T0, until=LATER)
        assert not store.match_own_write(VAULT, ACCESS_POLICY_WRITE, THIRD_NONCE, since=T0, until=LATER)

    def test_a_voided_entry_matches_nothing(self, store: StateStore) -> None:
        """The write it was noted for failed (throttled, ScopeLocked, refused): no event is its."""
        failed = OwnWrite(VAULT, ACCESS_POLICY_WRITE, NONCE, T0, "evt-0", "attempt-0")
        store.record_own_write(failed)
        store.record_own_write(OwnWrite(VAULT, ACCESS_POLICY_WRITE, OTHER_NONCE, T0, "evt-0", "attempt-1"))
        store.void_own_write(failed)
        assert not store.match_own_write(VAULT, ACCESS_POLICY_WRITE, NONCE, since=T0, until=LATER)
        assert store.match_own_write(VAULT, ACCESS_POLICY_WRITE, OTHER_NONCE, since=T0, until=LATER)
        store.void_own_write(failed)  # idempotent
        store.void_own_write(OwnWrite(OTHER_VAULT, VAULT_WRITE, THIRD_NONCE, T0))  # no such entry: nothing happens

    def test_prune_drops_only_entries_older_than_the_cutoff(self, store: StateStore) -> None:
        store.record_own_write(OwnWrite(VAULT, VAULT_WRITE, NONCE, T0))
        store.record_own_write(OwnWrite(OTHER_VAULT, VAULT_WRITE, OTHER_NONCE, T0 + timedelta(hours=1)))
        assert store.prune_own_writes(T0 + timedelta(minutes=30)) == 1
        assert not store.match_own_write(VAULT, VAULT_WRITE, NONCE, since=T0 - timedelta(days=1), until=LATER)
        assert store.match_own_write(OTHER_VAULT, VAULT_WRITE, OTHER_NONCE, since=T0 - timedelta(days=1),
                                     until=LATER)
        assert store.prune_own_writes(T0 + timedelta(minutes=30)) == 0
