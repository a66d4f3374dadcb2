"""Policy `suppressions`: a live one holds its rule back on matching vaults and says so; an expired
one holds nothing back and is reported; a suppression without expiry or reason is refused."""

from __future__ import annotations

from datetime import timedelta
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
