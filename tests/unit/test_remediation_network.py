"""restore_network puts back only what the baseline had: a vault accepted open stays reachable,
and the firewall rules it removes are matched whatever their spelling (IPv4 or IPv6)."""

from __future__ import annotations

from typing import Any

from detectors.cases import VAULT_ID, acls, vault
from kvguard.catalog import RULES
from kvguard.detection import Case, Finding, detect_all
from kvguard.vault import VaultConfig
from remediation.base import Operation, PlanInput
from remediation.network import restore_network
from tests.cases import make_context
from tests.unit.test_pipeline import VAULT_WRITE, Env, statuses

# A vault whose accepted state is open: no firewall, public network access never set (ARM's
# default is Enabled).
OPEN = vault(publicNetworkAccess=None, networkAcls=None)


def findings(before: dict[str, Any], after: dict[str, Any], **policy: Any) -> list[Finding]:
    ctx = make_context(Case(name="restore", fires=True, before=before, after=after, policy=policy))
    return [f for f in detect_all(ctx, RULES) if f.remediation == "restore_network"]


def plan(before: dict[str, Any], after: dict[str, Any], **policy: Any) -> tuple[list[str], list[Operation]]:
    found = findings(before, after, **policy)
    operations = restore_network(PlanInput(found, VaultConfig.from_arm(before), VaultConfig.from_arm(after)))
    return sorted({f.rule for f in found}), operations


def patch(operation: Operation) -> dict[str, Any]:
    assert operation.kind == "patch"
    assert isinstance(operation.target, dict)
    return operation.target


def ip_values(target: dict[str, Any]) -> list[str]:
    return [r["value"] for r in target["networkAcls"]["ipRules"]]


def test_an_open_baseline_gets_no_invented_default_action() -> None:
    # Absent networkAcls already means Allow (ARM's default): spelling it out changes nothing.
    rules, operations = plan(OPEN, vault(publicNetworkAccess=None, networkAcls={"defaultAction": "Allow"}))
    assert rules == []
    assert operations == []


def test_an_open_baseline_gets_no_invented_public_network_access() -> None:
    rules, operations = plan(OPEN, vault(publicNetworkAccess="Enabled", networkAcls=None))
    assert rules == []
    assert operations == []


def test_a_closed_baseline_is_restored_to_its_own_values() -> None:
    after = vault(publicNetworkAccess="Enabled", networkAcls=acls(default_action="Allow"))
    rules, [operation] = plan(vault(), after)
    assert rules == ["KV-NET-01", "KV-NET-02"]
    target = patch(operation)
    assert target["publicNetworkAccess"] == "Disabled"
    assert target["networkAcls"]["defaultAction"] == "Deny"
    assert operation.before == {"publicNetworkAccess": "Enabled", "networkAcls": after["properties"]["networkAcls"]}


def test_the_baseline_spelling_is_what_goes_back() -> None:
    before = vault(publicNetworkAccess="disabled", networkAcls=acls(default_action="deny"))
    _, [operation] = plan(before, vault(publicNetworkAccess="Enabled", networkAcls=acls(default_action="Allow")))
    target = patch(operation)
    assert (target["publicNetworkAccess"], target["networkAcls"]["defaultAction"]) == ("disabled", "deny")


def test_an_added_rule_is_removed_but_an_open_default_action_stays_open() -> None:
    after = vault(publicNetworkAccess=None, networkAcls={"defaultAction": "Allow", "ipRules": [{"value": "0.0.0.0/0"}]})
    rules, [operation] = plan(OPEN, after)
    assert rules == ["KV-NET-03"]
    target = patch(operation)
    assert "publicNetworkAccess" not in target
    assert target["networkAcls"] == {"defaultAction": "Allow", "ipRules": []}


def test_a_flagged_ipv6_address_is_removed_and_an_unflagged_ipv4_address_stays() -> None:
    after = vault(networkAcls=acls(ip_rules=("2001:DB8::7", "203.0.113.9")))
    rules, [operation] = plan(vault(), after, allowed_ip_rules=["203.0.113.0/24"])
    assert rules == ["KV-NET-03"]
    assert ip_values(patch(operation)) == ["203.0.113.9"]


def test_a_rule_with_host_bits_is_matched_to_its_network() -> None:
    after = vault(networkAcls=acls(ip_rules=("198.51.7.9/16", "2001:db8::/32")))
    rules, [operation] = plan(vault(), after)
    assert rules == ["KV-NET-03"]
    assert ip_values(patch(operation)) == []


def test_the_pipeline_leaves_a_vault_accepted_open_reachable() -> None:
    env = Env(start=OPEN)
    changed = vault(publicNetworkAccess="Enabled", networkAcls={"defaultAction": "Allow"})
    outcome = env.change(changed, operation=VAULT_WRITE, suffix="")
    # Spelling out ARM's defaults (Enabled, Allow) is no change of an open vault: nothing fires.
    assert not {"KV-NET-01", "KV-NET-02"} & {f.rule for f in outcome.findings}
    assert "restore_network" not in statuses(outcome)
    current = env.current()
    assert (current.public_network_access, current.default_action) == ("enabled", "allow")
    assert env.world.take_emitted() == []
    assert current.id == VAULT_ID


def test_a_dropped_firewall_gets_the_baseline_rule_set_back() -> None:
    before = vault(networkAcls=acls(ip_rules=("203.0.113.0/24",)))
    rules, [operation] = plan(before, vault(networkAcls=None))
    assert rules == ["KV-NET-02", "KV-NET-04"]
    assert patch(operation) == {"networkAcls": before["properties"]["networkAcls"]}


def test_public_access_dropped_is_disabled_again() -> None:
    rules, [operation] = plan(vault(), vault(publicNetworkAccess=None))
    assert rules == ["KV-NET-01"]
    assert patch(operation) == {"publicNetworkAccess": "Disabled"}
