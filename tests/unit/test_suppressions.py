"""Policy `suppressions`: a live one holds its rule back on matching vaults (a role assignment's
finding when it matches every vault the assignment covers) and says so; an expired one holds
nothing back and is reported; a suppression without expiry or reason is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kvguard.cli import main
from kvguard.policy import PolicyError, policy_from_data
from tests.unit.test_pipeline import OPERATOR_GRANT, ROGUE_GRANT, START, TEAM, Env, statuses, vault


def suppression(rule: str = "KV-AP-01", vault_pattern: str = "kv-payments", days: float = 7,
                reason: str = "CHG-4711: vendor onboarding, grant removed by Friday") -> dict[str, Any]:
    return {"rule": rule, "vault": vault_pattern, "until": (START + timedelta(days=days)).isoformat(), "reason": reason}


def rogue_grant(**policy: Any) -> Any:
    env = Env(start=vault(accessPolicies=[TEAM, OPERATOR_GRANT]), **policy)
    return env.change(vault(accessPolicies=[TEAM, OPERATOR_GRANT, ROGUE_GRANT]))


def test_without_suppression_the_grant_is_reverted() -> None:
    outcome = rogue_grant()
    assert "KV-AP-01" in {f.rule for f in outcome.findings}
    assert statuses(outcome)["revert_access_policy"] == "applied"


def test_a_live_suppression_holds_the_rule_back_and_the_reason_says_why() -> None:
    outcome = rogue_grant(suppressions=[suppression()])
    assert "KV-AP-01" not in {f.rule for f in outcome.findings}
    assert "revert_access_policy" not in statuses(outcome)
    assert "KV-AP-01 suppressed until 2026-06-08T09:00:00+00:00: CHG-4711: vendor onboarding" in outcome.reason
    # the other rules the grant fires still stand
    assert "KV-AP-03" in {f.rule for f in outcome.findings}


def test_a_suppression_for_another_vault_or_rule_changes_nothing() -> None:
    outcome = rogue_grant(suppressions=[suppression(vault_pattern="kv-other-*"), suppression(rule="KV-NET-01")])
    assert "KV-AP-01" in {f.rule for f in outcome.findings}
    assert statuses(outcome)["revert_access_policy"] == "applied"
    assert "suppress" not in outcome.reason


def test_an_expired_suppression_is_ignored_and_reported() -> None:
    outcome = rogue_grant(suppressions=[suppression(days=-1)])
    assert "KV-AP-01" in {f.rule for f in outcome.findings}
    assert statuses(outcome)["revert_access_policy"] == "applied"
    assert "suppression of KV-AP-01 for kv-payments expired 2026-05-31T09:00:00+00:00: ignored" in outcome.reason


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"until": None}, "suppressions.0.until", "Field required"),
    ({"until": "2026-12-31T00:00:00"}, "suppressions.0.until", "timezone info"),
    ({"reason": "  "}, "suppressions.0.reason", "needs a reason"),
    ({"rule": "KV-XX-99"}, "suppressions.0.rule", "unknown rule id 'KV-XX-99'"),
])
def test_a_suppression_needs_an_expiry_a_reason_and_a_known_rule(change: dict[str, Any], field: str,
                                                                  message: str) -> None:
    """(None: the key left out.)"""
    entry = {k: v for k, v in {**suppression(), **change}.items() if v is not None}
    with pytest.raises(PolicyError) as raised:
        policy_from_data({"suppressions": [entry]}, "policy.yaml")
    assert field in str(raised.value) and message in str(raised.value)


def test_validate_reports_expired_suppressions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "suppressions:\n"
        "  - {rule: KV-NET-02, vault: kv-legacy-*, until: '2020-01-31T00:00:00Z', reason: migration to private link}\n"
        "  - {rule: KV-AP-03, vault: kv-build, until: '2999-01-01T00:00:00Z', reason: build agents enumerate}\n"
    )
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "suppression of KV-NET-02 for kv-legacy-* expired 2020-01-31T00:00:00+00:00 and is ignored" in out
    assert "KV-AP-03" not in out


# A role assignment beside the vaults: the same suppressions hold its findings back.

def replayed_grant(prefix: str, *suppressions: dict[str, Any]) -> dict[str, Any]:
    """The first outcome of an RBAC sample replayed with these suppressions in its policy."""
    from kvguard.replay import build_run, replay
    from kvguard.scenario import load_scenario
    from tests.e2e.test_replay_rbac import sample

    base = policy_from_data({"suppressions": list(suppressions)}, "test policy")
    return replay(build_run(load_scenario(sample(prefix), base_policy=base))).outcomes[0].to_json()


def rbac_suppression(vault_pattern: str, days: float = 30) -> dict[str, Any]:
    until = datetime(2026, 11, 27, tzinfo=UTC) + timedelta(days=days)  # the RBAC samples run on that day
    return {"rule": "KV-RBAC-01", "vault": vault_pattern, "until": until.isoformat(), "reason": "CHG-5120: migration"}


def test_a_suppression_holds_back_a_role_assignment_finding_on_its_vault() -> None:
    held = replayed_grant("20", rbac_suppression("kv-orders-*"))
    assert "KV-RBAC-01" not in {f["rule"] for f in held["findings"]}
    assert "remove_role_assignment" not in {a["handler"] for a in held["actions"]}
    assert "KV-RBAC-01 suppressed until 2026-12-27T00:00:00+00:00: CHG-5120: migration" in held["reason"]
    assert "KV-RBAC-01" in {f["rule"] for f in replayed_grant("20")["findings"]}


def test_an_inherited_assignment_is_held_back_only_when_every_vault_it_covers_is() -> None:
    one = replayed_grant("21", rbac_suppression("kv-billing-keys"))
    assert "KV-RBAC-01" in {f["rule"] for f in one["findings"]} and "suppress" not in one["reason"]
    both = replayed_grant("21", rbac_suppression("kv-billing-keys"), rbac_suppression("kv-billing-prod"))
    assert "KV-RBAC-01" in {f["rule"] for f in both["findings"]}  # neither matches both vaults
    matching_both = replayed_grant("21", rbac_suppression("kv-billing-*"))
    assert "KV-RBAC-01" not in {f["rule"] for f in matching_both["findings"]}
    assert "KV-RBAC-01 suppressed until" in matching_both["reason"]


def test_an_expired_suppression_of_a_role_assignment_is_ignored_and_reported() -> None:
    expired = replayed_grant("20", rbac_suppression("kv-orders-*", days=-1))
    assert "KV-RBAC-01" in {f["rule"] for f in expired["findings"]}
    assert {a["handler"]: a["status"] for a in expired["actions"]}["remove_role_assignment"] == "applied"
    assert "suppression of KV-RBAC-01 for kv-orders-* expired 2026-11-26T00:00:00+00:00: ignored" in expired["reason"]
