"""revert_access_policy compares after expanding `all`: a narrowing is never reverted, `["all"]`
and the full list are one grant, and a widening to `all` is undone without taking away a
permission the baseline had (ARM's remove matches names literally, `all` included)."""

from __future__ import annotations

from detectors.cases import APP_TEAM, INTRUDER, grant, vault, with_grants
from kvguard.vault_spec import PERMISSIONS
from tests.unit.test_pipeline import Env, statuses

ALL_OF_IT = vault(accessPolicies=[grant(APP_TEAM, keys=["all"], secrets=["all"])])
CMK = vault(accessPolicies=[grant(APP_TEAM, keys=["get", "wrapKey", "unwrapKey"], secrets=["get"])])


def rules(outcome: object) -> set[str]:
    return {f.rule for f in outcome.findings}  # type: ignore[attr-defined]


def test_all_narrowed_to_a_subset_is_no_widening_and_nothing_is_removed() -> None:
    env = Env(start=ALL_OF_IT)
    outcome = env.change(CMK, suffix="/accessPolicies/replace")
    assert "KV-AP-02" not in rules(outcome)
    assert "revert_access_policy" not in statuses(outcome)
    entry = env.current().policy_for(f"{APP_TEAM}|")
    assert entry is not None
    assert (entry.get("keys"), entry.get("secrets")) == ({"get", "wrapkey", "unwrapkey"}, {"get"})


def test_all_replaced_by_the_explicit_full_list_is_no_change() -> None:
    env = Env(start=ALL_OF_IT)
    spelled_out = vault(accessPolicies=[grant(APP_TEAM, keys=list(PERMISSIONS["keys"]),
                                              secrets=[p.upper() for p in PERMISSIONS["secrets"]])])
    outcome = env.change(spelled_out, suffix="/accessPolicies/replace")
    assert not {"KV-AP-02", "KV-AP-03"} & rules(outcome)
    assert "revert_access_policy" not in statuses(outcome)


def test_a_widening_to_all_is_reverted_to_exactly_the_baseline_permissions() -> None:
    env = Env(start=CMK)
    widened = vault(accessPolicies=[grant(APP_TEAM, keys=["All"], secrets=["get"])])
    outcome = env.change(widened)
    assert "KV-AP-02" in rules(outcome)
    assert statuses(outcome)["revert_access_policy"] == "applied"
    entry = env.current().policy_for(f"{APP_TEAM}|")
    assert entry is not None
    assert entry.effective("keys") == {"get", "wrapkey", "unwrapkey"}
    assert entry.effective("secrets") == {"get"}
    kinds = [e["data"]["resourceUri"].rsplit("/", 1)[-1] for e in env.world.take_emitted()]
    assert kinds == ["add", "remove"]  # the baseline's names go in before `all` comes out


def test_a_new_principal_with_all_is_removed_entirely() -> None:
    env = Env()
    outcome = env.change(with_grants(grant(INTRUDER, keys=["all"], storage=["ALL"])))
    assert "KV-AP-01" in rules(outcome)
    assert statuses(outcome)["revert_access_policy"] == "applied"
    assert env.current().policy_for(f"{INTRUDER}|") is None
    assert env.current().policy_for(f"{APP_TEAM}|") is not None
