"""The subtle edges of the access-policy, protection and lifecycle rules, beyond their case tables:
window boundaries, one finding per fact, and the exact evidence each rule reports."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from detectors.cases import APP_TEAM, INTRUDER, NOW, OPERATOR, OTHER_TENANT, grant, granted_marks, vault, with_grants
from kvguard.catalog import RULES
from kvguard.detection import Case, Hit, detect_all
from tests.cases import make_context

BEFORE_GRANT = with_grants(grant(OPERATOR, secrets=["get"]))
AFTER_GRANT = with_grants(grant(OPERATOR, secrets=["get", "list"]), grant(INTRUDER, secrets=["get"]))


def hits(rule_id: str, **case: Any) -> list[Hit]:
    return list(RULES[rule_id].detect(make_context(Case(name=rule_id, fires=True, **case))))


def cover_up(granted_ago: timedelta, after: Mapping[str, Any] = BEFORE_GRANT, window: str = "PT10M") -> list[Hit]:
    history = {"recent_grants": granted_marks(BEFORE_GRANT, AFTER_GRANT, NOW - granted_ago)}
    return hits("KV-AP-05", before=AFTER_GRANT, after=after, history=history,
                policy={"history": {"grant_window": window}})


def test_cover_up_fires_at_the_window_edge_and_not_a_second_later() -> None:
    assert cover_up(timedelta(minutes=10))
    assert not cover_up(timedelta(minutes=10, seconds=1))


def test_cover_up_gives_one_hit_per_principal_with_every_mark() -> None:
    found = {hit.evidence["objectId"]: hit.evidence for hit in cover_up(timedelta(minutes=2))}
    assert set(found) == {OPERATOR, INTRUDER}
    assert found[INTRUDER]["marks"] == [f"principal:{INTRUDER}|"]
    assert found[OPERATOR]["marks"] == [f"permission:{OPERATOR}|:secrets:list"]
    assert found[INTRUDER]["granted"] == {f"principal:{INTRUDER}|": (NOW - timedelta(minutes=2)).isoformat()}
    assert found[INTRUDER]["removed"] == NOW.isoformat()
    assert found[INTRUDER]["windowSeconds"] == 600


def test_cover_up_pairs_a_widening_with_the_later_removal_of_the_whole_principal() -> None:
    found = cover_up(timedelta(minutes=2), after=with_grants(grant(INTRUDER, secrets=["get"])))
    assert [hit.evidence["marks"] for hit in found] == [[f"permission:{OPERATOR}|:secrets:list"]]


def test_widening_reports_added_before_and_after() -> None:
    widened = grant(APP_TEAM, secrets=["Get", "List"], keys=["get", "wrapKey", "unwrapKey"])
    [hit] = hits("KV-AP-02", before=vault(), after=vault(accessPolicies=[widened]))
    assert hit.evidence == {
        "objectId": APP_TEAM, "applicationId": None, "category": "secrets",
        "added": ["list"], "before": ["get"], "after": ["get", "list"],
    }


def test_over_broad_fires_only_for_the_principal_that_is_new_to_it() -> None:
    broad = grant(OPERATOR, secrets=["all"])
    found = hits("KV-AP-03", before=with_grants(broad),
                 after=with_grants(broad, grant(INTRUDER, keys=["purge"], secrets=["get", "list"])))
    assert [(h.evidence["objectId"], h.evidence["reasons"]) for h in found] == [
        (INTRUDER, ["keys: purge", "secrets: get + list"]),
    ]


def test_foreign_compound_identity_names_both_reasons() -> None:
    [hit] = hits("KV-AP-04", before=vault(),
                 after=with_grants(grant(OPERATOR, tenant=OTHER_TENANT, application_id=INTRUDER, secrets=["get"])))
    assert hit.evidence["reasons"] == ["other tenant", "compound identity"]
    assert hit.evidence["tenantId"] == OTHER_TENANT
    assert hit.evidence["applicationId"] == INTRUDER


def test_retention_cut_below_the_minimum_is_one_finding_with_both_facts() -> None:
    [hit] = hits("KV-PROT-02", before=vault(), after=vault(softDeleteRetentionInDays=7))
    assert hit.evidence == {
        "softDeleteRetentionInDays": {"before": 90, "after": 7}, "minimum": 90, "reduced": True, "belowMinimum": True,
    }


def test_retention_cut_already_below_the_minimum_still_fires_as_a_reduction() -> None:
    [hit] = hits("KV-PROT-02", before=vault(softDeleteRetentionInDays=30), after=vault(softDeleteRetentionInDays=7))
    assert (hit.evidence["reduced"], hit.evidence["belowMinimum"]) == (True, False)


def test_soft_delete_off_and_retention_cut_are_two_findings() -> None:
    found = hits("KV-PROT-02", before=vault(), after=vault(enableSoftDelete=False, softDeleteRetentionInDays=7))
    assert sorted(h.detail or "" for h in found) == ["retention 7 days", "soft delete disabled"]


def test_each_platform_flag_is_its_own_hit_naming_the_arm_property() -> None:
    flags: dict[str, Any] = dict.fromkeys(
        ("enabledForDeployment", "enabledForTemplateDeployment", "enabledForDiskEncryption"), True
    )
    found = hits("KV-PROT-04", before=vault(), after=vault(**flags))
    assert sorted(h.evidence["property"] for h in found) == [
        "enabledForDeployment", "enabledForDiskEncryption", "enabledForTemplateDeployment",
    ]
    assert all(h.evidence["before"] is False and h.evidence["after"] is True for h in found)


def test_purge_protection_remediation_is_opt_in_only() -> None:
    rule = RULES["KV-PROT-01"]
    assert (rule.remediation, rule.remediate_by_default) == ("enable_purge_protection", False)
    assert RULES["KV-PROT-03"].remediate_by_default is True


def test_recovered_vault_lists_the_access_policies_that_came_back() -> None:
    [hit] = hits("KV-LIFE-03", before=vault(), after=with_grants(grant(INTRUDER, secrets=["get"])),
                 baseline_deleted=True)
    assert hit.evidence["accessPolicies"] == sorted([APP_TEAM, INTRUDER])
    assert hit.evidence["baselineDeleted"] is True


def test_delete_finding_carries_the_caller_and_purge_protection_state() -> None:
    [finding] = [
        f for f in detect_all(make_context(Case("delete", fires=True, before=vault(enablePurgeProtection=None),
                                                 event={"kind": "delete", "caller": {"object_id": INTRUDER}})), RULES)
        if f.rule == "KV-LIFE-01"
    ]
    assert finding.severity == "high"
    assert finding.evidence["callerId"] == INTRUDER
    assert finding.evidence["enablePurgeProtection"] is None
    assert finding.evidence["operation"] == "Microsoft.KeyVault/vaults/delete"
