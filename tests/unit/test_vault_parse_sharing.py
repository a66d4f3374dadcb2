"""Access-policy lists parsed once per content and shared: the same answers as a fresh parse,
and a cache bounded by bytes."""

from __future__ import annotations

import copy

import pytest

from detectors.access_policy import (
    _ByEntry,
    _ByList,
    _foreign,
    _foreign_entries,
    _over_broad,
    _over_broad_entries,
    _over_broad_entry,
)
from kvguard import vault
from kvguard.policy import Policy
from kvguard.vault import AccessPolicy, VaultConfig, diff
from tests.unit.test_vault import BATCH, ROGUE, WEB, arm, entry


def test_a_vault_whose_policies_did_not_change_shares_its_parsed_entries() -> None:
    first = arm([entry(WEB, secrets=["Get"]), entry(BATCH, keys=["get", "unwrapKey"])])
    retagged = copy.deepcopy(first)
    retagged["tags"] = {"touched": "1"}
    before, after = VaultConfig.from_arm(first), VaultConfig.from_arm(retagged)
    assert after.access_policies is before.access_policies
    assert diff(before, after).empty


def test_a_changed_list_is_parsed_again_and_diffed_as_before() -> None:
    first = arm([entry(WEB, secrets=["Get"])])
    changed = copy.deepcopy(first)
    changed["properties"]["accessPolicies"].append(entry(ROGUE, secrets=["get", "list"]))
    changed["properties"]["accessPolicies"][0]["permissions"]["secrets"].append("List")
    before, after = VaultConfig.from_arm(first), VaultConfig.from_arm(changed)
    assert after.access_policies is not before.access_policies
    change = diff(before, after)
    assert [p.principal.object_id for p in change.added_policies] == [ROGUE]
    assert [(c.principal.object_id, c.category, c.added) for c in change.permission_changes] == [
        (WEB, "secrets", frozenset({"list"}))]


def test_shared_entries_equal_a_fresh_parse() -> None:
    doc = arm([entry(WEB, secrets=["Get", "LIST"], keys=["all"]), entry(BATCH, application_id=ROGUE, keys=["Get"])])
    VaultConfig.from_arm(doc)
    shared = VaultConfig.from_arm(copy.deepcopy(doc)).access_policies
    fresh = tuple(AccessPolicy.from_arm(p) for p in doc["properties"]["accessPolicies"])
    assert shared == fresh


def test_a_list_that_is_no_json_is_parsed_without_the_cache() -> None:
    doc = arm([entry(WEB, secrets=["get"])])
    doc["properties"]["accessPolicies"][0]["note"] = object()  # not serialisable: parsed as it is
    assert [p.principal.object_id for p in VaultConfig.from_arm(doc).access_policies] == [WEB]


def test_a_tuple_of_permissions_is_not_taken_for_the_list_it_spells() -> None:
    as_list = arm([entry(WEB, secrets=["get", "list"])])
    as_tuple = copy.deepcopy(as_list)
    as_tuple["properties"]["accessPolicies"][0]["permissions"]["secrets"] = ("get", "list")
    assert VaultConfig.from_arm(as_list).access_policies[0].get("secrets") == {"get", "list"}
    assert VaultConfig.from_arm(as_tuple).access_policies[0].get("secrets") == frozenset()


def test_the_cache_is_bounded_by_the_bytes_of_the_lists_it_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vault, "PARSED_POLICY_TEXT_BYTES", 2_000)
    for number in range(50):
        VaultConfig.from_arm(arm([entry(f"{number:08x}-0000-4000-8000-000000000000", secrets=["get"])]))
    held = sum(len(content) for content in vault._parsed_policies)
    assert held == vault._parsed_policies_bytes
    assert 0 < held <= 2_000


def test_over_broad_answers_are_reused_for_one_list_and_recomputed_for_another() -> None:
    policy = Policy()
    broad = VaultConfig.from_arm(arm([entry(ROGUE, secrets=["get", "list"])]))
    assert _over_broad(broad, policy) is _over_broad(broad, policy)
    assert _over_broad(broad, policy) == _over_broad_entries(broad.access_policies)
    narrow = VaultConfig.from_arm(arm([entry(ROGUE, secrets=["get"])]))
    assert _over_broad(narrow, policy) == {}
    assert ROGUE in next(iter(_over_broad(broad, policy)))


def test_answers_by_list_keep_no_more_entries_than_their_bound_and_count_what_they_hold() -> None:
    answers = _ByList(limit=10)
    computed: list[int] = []
    kept = []
    for number in range(8):
        grants = [entry(f"{number:04x}{j:04x}-0000-4000-8000-000000000000", secrets=["get"]) for j in range(3)]
        config = VaultConfig.from_arm(arm(grants))
        kept.append(config)
        answers.answer(config.access_policies, None, lambda entries: (computed.append(len(entries)), {})[1])
        assert 0 < answers.held <= 10
        assert answers.held == 3 * len(answers)
    assert len(computed) == 8
    latest = kept[-1].access_policies
    answers.answer(latest, None, lambda entries: (computed.append(len(entries)), {})[1])
    assert len(computed) == 8  # the newest list is still held
    answers.answer(latest, "beside", lambda entries: (computed.append(len(entries)), {})[1])
    assert len(computed) == 9  # another value beside the list is another answer
    assert answers.held == 3 * len(answers) <= 10


def test_foreign_principal_answers_are_reused_for_one_list_and_one_vault_tenant() -> None:
    policy = Policy()
    foreign = arm([entry(ROGUE, secrets=["get"])])
    foreign["properties"]["accessPolicies"][0]["tenantId"] = "11111111-2222-4333-8444-555555555555"
    first, second = VaultConfig.from_arm(foreign), VaultConfig.from_arm(copy.deepcopy(foreign))
    assert first.access_policies is second.access_policies
    assert _foreign(first, policy) is _foreign(second, policy)
    assert _foreign(first, policy) == _foreign_entries(first.access_policies, first.tenant_id)
    moved = copy.deepcopy(foreign)
    moved["properties"]["tenantId"] = "11111111-2222-4333-8444-555555555555"  # the vault moved to that tenant
    assert _foreign(VaultConfig.from_arm(moved), policy) == {}
    assert ROGUE in next(iter(_foreign(first, policy)))


def test_a_changed_list_shares_the_parsed_entries_it_kept() -> None:
    first = arm([entry(WEB, secrets=["Get"]), entry(BATCH, keys=["get", "unwrapKey"])])
    changed = copy.deepcopy(first)
    changed["properties"]["accessPolicies"].append(entry(ROGUE, secrets=["get", "list"]))
    changed["properties"]["accessPolicies"][1]["permissions"]["keys"].append("list")
    before, after = VaultConfig.from_arm(first), VaultConfig.from_arm(changed)
    assert after.access_policies[0] is before.access_policies[0]
    assert after.access_policies[1] is not before.access_policies[1]
    assert after.access_policies == tuple(AccessPolicy.from_arm(p) for p in changed["properties"]["accessPolicies"])


def test_the_parsed_entries_are_bounded_by_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vault, "PARSED_ENTRIES", 3)
    for number in range(10):
        VaultConfig.from_arm(arm([entry(f"{number:08x}-0000-4000-8000-000000000000", secrets=["get"]),
                                  entry(WEB, secrets=[f"s{number}"])]))
    assert len(vault._parsed_entries) == 3


def test_a_list_changed_in_one_entry_is_judged_over_broad_again_in_that_entry_only() -> None:
    grants = [entry(f"{number:08x}-0000-4000-8000-000000000000", secrets=["get", "list"]) for number in range(6)]
    first = arm(grants)
    changed = copy.deepcopy(first)
    changed["properties"]["accessPolicies"][2]["permissions"]["secrets"] = ["get"]
    before, after = VaultConfig.from_arm(first), VaultConfig.from_arm(changed)
    judged: list[AccessPolicy] = []
    answers = _ByEntry(limit=100, compute=lambda one: (judged.append(one), _over_broad_entry(one))[1])
    found_before = {e.principal.key: answers.answer(e) for e in before.access_policies}
    assert len(judged) == 6
    found_after = {e.principal.key: answers.answer(e) for e in after.access_policies}
    assert judged[6:] == [after.access_policies[2]]  # the one entry whose content changed
    assert found_after == {e.principal.key: _over_broad_entry(e) for e in after.access_policies}
    assert found_before[after.access_policies[2].principal.key] is not None
    assert found_after[after.access_policies[2].principal.key] is None
    assert _over_broad_entries(after.access_policies) == {
        k: v for k, v in found_after.items() if v is not None}


def test_answers_by_entry_keep_no_more_entries_than_their_bound() -> None:
    answers = _ByEntry(limit=4, compute=_over_broad_entry)
    kept = [AccessPolicy.from_arm(entry(f"{number:08x}-0000-4000-8000-000000000000", secrets=["all"]))
            for number in range(10)]
    for one in kept:
        assert answers.answer(one) == _over_broad_entry(one)
        assert len(answers) <= 4
    assert len(answers) == 4
