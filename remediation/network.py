"""restore_network: close the firewall again, touching only what the change opened.

It restores only values the baseline actually had. A baseline without `publicNetworkAccess` or
without a firewall (`networkAcls` absent: every network allowed) was open by acceptance; inventing
`Disabled` or `Deny` for it would lock out whoever relies on that access. Such a part is left
alone, and when nothing is left to restore no operation is planned. A change that dropped
`networkAcls` altogether (ARM then admits every network) gets the baseline's rule set back as it
was, explicit values and rules included: there is nothing of the change's own in it to keep."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from kvguard.vault import VaultConfig, diff, normalise_cidr
from remediation.base import Operation, PlanInput, handler, patch_operation

NETWORK_RULES = ("KV-NET-01", "KV-NET-02", "KV-NET-03", "KV-NET-04", "KV-NET-05")


def _acls(config: VaultConfig) -> dict[str, Any]:
    acls = config.raw.get("properties", {}).get("networkAcls") or {}
    return copy.deepcopy(dict(acls))


def _had(mapping: Mapping[str, Any], name: str) -> str | None:
    """The baseline's own value of a setting, or None when it had none to restore."""
    value = mapping.get(name)
    return value if isinstance(value, str) and value.strip() else None


@handler("restore_network", kind="remediation", permission="Microsoft.KeyVault/vaults/write")
def restore_network(data: PlanInput) -> list[Operation]:
    """PATCH publicNetworkAccess and the changed parts of networkAcls back to the baseline values.
    The IP and subnet rules that were added are removed one by one; rules added at the same time by
    someone else and not flagged stay, and so do unrelated ACL settings."""
    if data.before is None or data.after is None:
        return []
    fired = {f.rule for f in data.findings}
    change = diff(data.before, data.after)
    patch: dict[str, Any] = {}
    public_access = _had(data.before.raw.get("properties") or {}, "publicNetworkAccess")
    if "KV-NET-01" in fired and "public_network_access" in change.settings and public_access is not None:
        patch["publicNetworkAccess"] = public_access
    baseline_acls = _acls(data.before)
    dropped = not data.after.raw.get("properties", {}).get("networkAcls")
    acls = copy.deepcopy(baseline_acls) if dropped else _acls(data.after)
    touched = False
    default_action = _had(baseline_acls, "defaultAction")
    if "KV-NET-02" in fired and "default_action" in change.settings and default_action is not None:
        acls["defaultAction"] = default_action
        touched = True
    bypass = _had(baseline_acls, "bypass")
    if "KV-NET-04" in fired and "bypass" in change.settings and bypass is not None:
        acls["bypass"] = bypass
        touched = True
    if "KV-NET-03" in fired and change.ip_rules_added:
        flagged = {normalise_cidr(f.evidence.get("ipRule")) for f in data.findings if f.rule == "KV-NET-03"} - {""}
        drop = {r for r in change.ip_rules_added if not flagged or r in flagged}
        acls["ipRules"] = [r for r in acls.get("ipRules", []) if normalise_cidr(r.get("value")) not in drop]
        touched = True
    if "KV-NET-05" in fired and change.vnet_rules_added:
        flagged_subnets = {str(f.evidence.get("subnetId", "")).lower() for f in data.findings
                           if f.rule == "KV-NET-05"} - {""}
        drop = {s for s in change.vnet_rules_added if not flagged_subnets or s in flagged_subnets}
        rules = acls.get("virtualNetworkRules", [])
        acls["virtualNetworkRules"] = [r for r in rules if str(r.get("id", "")).lower() not in drop]
        touched = True
    if touched:
        patch["networkAcls"] = acls
    if not patch:
        return []
    description = f"patch {', '.join(sorted(patch))} of {data.after.name} back to the baseline"
    return [patch_operation("restore_network", data.after, patch, description, fired & set(NETWORK_RULES))]
