"""Risk (bands, bounded and itemised context points) and the decision the policy allows."""

from __future__ import annotations

from typing import Any

import pytest

from kvguard.decision import Decision, decide, effective_mode, is_excluded, remediable
from kvguard.detection import SEVERITY_SCORE, Finding, severity_for_risk
from kvguard.events import VaultEvent
from kvguard.policy import Policy, Severity
from kvguard.risk import MAX_CONTEXT, assess
from kvguard.vault import VaultConfig
from tests.cases import make_event

SUB = "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d"
TENANT = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f"
FOREIGN_TENANT = "0f0e0d0c-0b0a-4909-8807-060504030201"
VAULT_ID = f"/subscriptions/{SUB}/resourceGroups/rg-shop/providers/Microsoft.KeyVault/vaults/kv-shop"
DEPLOYER = "aaaa1111-2222-4333-8444-555566667777"
STRANGER = "bbbb1111-2222-4333-8444-555566667777"


def vault(tags: dict[str, str] | None = None, tenant: str = TENANT) -> VaultConfig:
    return VaultConfig.from_arm({"id": VAULT_ID, "name": "kv-shop", "tags": tags or {},
                                 "properties": {"tenantId": tenant, "accessPolicies": []}})


def finding(rule: str = "KV-AP-01", severity: Severity = "high", remediation: str | None = "revert_access_policy"
            ) -> Finding:
    return Finding(rule=rule, title=f"{rule} title", severity=severity, score=SEVERITY_SCORE[severity],
                   evidence={"x": 1}, mitre=("T1098",), remediation=remediation)


def event(caller: str = STRANGER, tenant: str = TENANT, **overrides: Any) -> VaultEvent:
    return make_event({"vault_id": VAULT_ID, "caller": {"object_id": caller, "tenant_id": tenant,
                                                        "upn": None}, **overrides})


# --- risk ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("risk", "band"),
    [(100, "critical"), (90, "critical"), (89, "high"), (70, "high"), (69, "medium"), (40, "medium"),
     (39, "low"), (1, "low"), (0, "none")],
)
def test_severity_bands(risk: int, band: str) -> None:
    assert severity_for_risk(risk) == band


def test_no_findings_means_no_risk_whoever_the_caller() -> None:
    policy = Policy(approved_callers=[DEPLOYER])
    risk = assess([], event(tenant=FOREIGN_TENANT), vault({"criticality": "high"}), policy)
    assert (risk.value, risk.severity, risk.explanation) == (0, "none", ())


def test_risk_is_the_highest_finding_score() -> None:
    findings = [finding("KV-ID-04", "low"), finding("KV-NET-01", "high"), finding("KV-AP-03", "medium")]
    risk = assess(findings, event(), vault(), Policy())
    assert risk.value == SEVERITY_SCORE["high"]
    assert risk.severity == "high"
    assert risk.explanation == (f"KV-NET-01 scores {SEVERITY_SCORE['high']} (high)",)


def test_each_context_point_is_itemised_with_its_reason() -> None:
    critical = assess([finding(severity="medium")], event(), vault({"Criticality": "High"}), Policy())
    assert critical.value == SEVERITY_SCORE["medium"] + 10
    assert critical.explanation[1] == "+10 vault tagged criticality=high"
    unapproved = assess([finding(severity="medium")], event(), vault(), Policy(approved_callers=[DEPLOYER]))
    assert unapproved.value == SEVERITY_SCORE["medium"] + 10
    assert unapproved.explanation[1].startswith("+10 caller ") and "not an approved caller" in unapproved.explanation[1]
    foreign = assess([finding(severity="medium")], event(tenant=FOREIGN_TENANT), vault(), Policy())
    assert foreign.value == SEVERITY_SCORE["medium"] + 10
    assert FOREIGN_TENANT in foreign.explanation[1]


def test_context_points_are_bounded() -> None:
    policy = Policy(approved_callers=[DEPLOYER])
    risk = assess([finding(severity="low")], event(tenant=FOREIGN_TENANT), vault({"criticality": "high"}), policy)
    assert risk.value == SEVERITY_SCORE["low"] + MAX_CONTEXT
    added = [line for line in risk.explanation if line.startswith("+")]
    assert sum(int(line.split()[0]) for line in added) == MAX_CONTEXT == 20
    assert len(risk.explanation) == 1 + len(added)


def test_risk_never_exceeds_100() -> None:
    policy = Policy(approved_callers=[DEPLOYER])
    risk = assess([finding(severity="critical")], event(tenant=FOREIGN_TENANT), vault({"criticality": "high"}), policy)
    assert risk.value == 100
    assert risk.severity == "critical"


def test_no_context_for_an_approved_caller_of_the_vaults_tenant() -> None:
    policy = Policy(approved_callers=[DEPLOYER])
    risk = assess([finding(severity="medium")], event(caller=DEPLOYER), vault({"criticality": "low"}), policy)
    assert risk.value == SEVERITY_SCORE["medium"]
    assert len(risk.explanation) == 1


def test_the_event_tenant_stands_in_for_a_vault_that_is_gone() -> None:
    risk = assess([finding("KV-LIFE-01")], event(tenant=FOREIGN_TENANT), None, Policy())
    assert risk.value == SEVERITY_SCORE["high"] + 10


# --- decision ----------------------------------------------------------------------------------


def run(policy: Policy, *, risk: int = 95, findings: list[Finding] | None = None, tags: dict[str, str] | None = None,
        caller: str = STRANGER, recent: int = 0, vault_id: str = VAULT_ID, name: str = "kv-shop") -> Decision:
    return decide(policy=policy, event=event(caller=caller), vault=vault(tags), vault_id=vault_id, vault_name=name,
                  findings=[finding()] if findings is None else findings, risk=risk, recent_remediations=recent)


def test_no_finding_no_action() -> None:
    decision = run(Policy(mode="remediate"), findings=[])
    assert (decision.alert, decision.remediate) == (False, False)


def test_observe_mode_records_only() -> None:
    decision = run(Policy(mode="observe"), risk=100)
    assert (decision.mode, decision.alert, decision.remediate) == ("observe", False, False)
    assert "observe" in decision.alert_reason


@pytest.mark.parametrize(("risk", "alert"), [(40, True), (39, False), (100, True)])
def test_alert_mode_alerts_at_the_threshold_and_never_remediates(risk: int, alert: bool) -> None:
    decision = run(Policy(), risk=risk)
    assert decision.mode == "alert"
    assert decision.alert is alert
    assert decision.remediate is False
    assert decision.remediate_reason == "alert mode does not remediate"


@pytest.mark.parametrize(("risk", "alert", "remediate"), [(30, False, False), (69, True, False), (70, True, True)])
def test_remediate_mode_thresholds(risk: int, alert: bool, remediate: bool) -> None:
    decision = run(Policy(mode="remediate"), risk=risk)
    assert (decision.alert, decision.remediate) == (alert, remediate)


def test_custom_thresholds() -> None:
    policy = Policy(mode="remediate", alert_threshold=80, remediate_threshold=90)
    assert (run(policy, risk=75).alert, run(policy, risk=85).remediate, run(policy, risk=90).remediate) == \
        (False, False, True)


@pytest.mark.parametrize(
    ("tags", "mode"),
    [
        ({"kvguard-mode": "remediate"}, "remediate"),
        ({"KVGuard-Mode": "Observe"}, "observe"),
        ({"KVGUARD-MODE": " alert "}, "alert"),
        ({"kvguard-mode": "off"}, "remediate"),
        ({"kvguard_mode": "observe"}, "remediate"),
        ({}, "remediate"),
    ],
)
def test_the_mode_tag_overrides_the_policy_mode(tags: dict[str, str], mode: str) -> None:
    assert effective_mode(Policy(mode="remediate"), vault(tags)) == mode
    assert run(Policy(mode="remediate"), tags=tags).mode == mode


def test_a_vault_tagged_remediate_is_remediated_under_an_alert_policy() -> None:
    decision = run(Policy(mode="alert"), tags={"Kvguard-Mode": "remediate"})
    assert decision.remediate is True
    assert effective_mode(Policy(mode="observe"), None) == "observe"


def test_approved_callers_alert_but_are_never_remediated() -> None:
    policy = Policy(mode="remediate", approved_callers=[DEPLOYER.upper()])
    decision = run(policy, caller=DEPLOYER)
    assert decision.alert is True
    assert decision.remediate is False
    assert decision.remediate_reason == "approved caller: change accepted"
    assert run(policy, caller=STRANGER).remediate is True


def test_approved_by_upn() -> None:
    policy = Policy(mode="remediate", approved_callers=["Release@Shop.example"])
    found = decide(policy=policy, event=make_event({"vault_id": VAULT_ID, "caller": {"object_id": STRANGER,
                                                                                     "upn": "release@shop.example"}}),
                   vault=vault(), vault_id=VAULT_ID, vault_name="kv-shop", findings=[finding()], risk=95,
                   recent_remediations=0)
    assert found.remediate is False


@pytest.mark.parametrize(
    "pattern",
    [
        VAULT_ID,
        VAULT_ID.upper(),
        VAULT_ID.replace("resourceGroups", "resourcegroups") + "/",
        "kv-shop",
        "KV-SH*",
        "kv-*",
        f"/subscriptions/{SUB}/resourcegroups/rg-shop/*",
    ],
)
def test_excluded_vaults_by_id_and_glob(pattern: str) -> None:
    policy = Policy(mode="remediate", excluded_vaults=[pattern])
    assert is_excluded(policy, VAULT_ID, "kv-shop")
    decision = run(policy)
    assert decision.remediate is False
    assert decision.remediate_reason == "vault excluded by policy"
    assert decision.alert is True


@pytest.mark.parametrize("pattern", ["kv-shop-2", "kv-shop?", VAULT_ID + "-2", "/subscriptions/*/rg-other/*"])
def test_vaults_not_matching_are_not_excluded(pattern: str) -> None:
    assert not is_excluded(Policy(excluded_vaults=[pattern]), VAULT_ID, "kv-shop")


def test_circuit_breaker_alerts_instead_of_remediating() -> None:
    policy = Policy(mode="remediate", circuit_breaker={"max_remediations": 2})  # type: ignore[arg-type]
    assert run(policy, recent=1).remediate is True
    tripped = run(policy, recent=2)
    assert (tripped.alert, tripped.remediate) == (True, False)
    assert tripped.remediate_reason.startswith("circuit breaker: 2 remediations")


def test_an_open_circuit_breaker_does_not_raise_alerts_below_the_alert_threshold() -> None:
    policy = Policy(mode="remediate", circuit_breaker={"max_remediations": 1})  # type: ignore[arg-type]
    quiet = run(policy, risk=20, recent=5)
    assert (quiet.alert, quiet.remediate) == (False, False)


def test_dry_run_is_carried_into_the_decision() -> None:
    decision = run(Policy(mode="remediate", dry_run=True))
    assert decision.remediate is True and decision.dry_run is True
    assert run(Policy(mode="remediate")).dry_run is False


def test_opt_in_rules_are_remediable_only_when_the_policy_says_so() -> None:
    purge = finding("KV-PROT-01", "medium", "enable_purge_protection")
    rogue = finding("KV-AP-01", "critical", "revert_access_policy")
    alert_only = finding("KV-ID-01", "medium", None)
    assert remediable([purge, rogue, alert_only], Policy()) == [rogue]
    opted_in = Policy(rules={"KV-PROT-01": {"remediate": True}})  # type: ignore[dict-item]
    assert remediable([purge, rogue, alert_only], opted_in) == [purge, rogue]
    opted_out = Policy(rules={"KV-AP-01": {"remediate": False}})  # type: ignore[dict-item]
    assert remediable([purge, rogue], opted_out) == []


def test_unknown_rules_are_never_remediable() -> None:
    assert remediable([finding("KV-XX-01")], Policy()) == []


def test_a_remediation_below_the_alert_threshold_still_alerts_first() -> None:
    decision = run(Policy(mode="remediate", alert_threshold=80, remediate_threshold=50), risk=60)
    assert decision.remediate and decision.alert
    assert decision.alert_reason.startswith("remediating")


@pytest.mark.parametrize(("overrides", "why"), [
    ({"succeeded": False}, "the operation failed"),
    ({"caller": {"object_id": None, "upn": None, "ip": None, "tenant_id": None}}, "names no caller"),
])
def test_a_change_nobody_can_be_held_to_is_not_remediated_while_callers_are_approved(
    overrides: dict[str, Any], why: str
) -> None:
    policy = Policy(mode="remediate", approved_callers=["a0a0a0a0-0000-4000-8000-000000000000"])
    decision = decide(policy=policy, event=make_event(overrides), vault=vault(), vault_id=vault().id,
                      vault_name=vault().name, findings=[finding()], risk=95, recent_remediations=0)
    assert decision.alert and not decision.remediate
    assert why in decision.remediate_reason
