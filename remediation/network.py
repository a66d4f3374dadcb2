"""restore_network: close the firewall again, touching only what the change opened.

It restores only values the baseline actually had: the rules build their `RestoreField` intents
from the baseline's own values, and none where it had none. A baseline without
`publicNetworkAccess` or without a firewall (`networkAcls` absent: every network allowed) was open
by acceptance; inventing `Disabled` or `Deny` for it would lock out whoever relies on that access.
Such a part is left alone, and when nothing is left to restore no operation is planned. A change
that dropped `networkAcls` altogether (ARM then admits every network) gets the baseline's rule set
back as it was, explicit values and rules included: there is nothing of the change's own in it to
keep."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from kvguard.intents import RemoveListEntry, RestoreField
from kvguard.vault import VaultConfig, normalise_cidr
from remediation.base import Operation, PlanInput, handler, patch_operation

ACLS = "networkAcls"


def _entry_value(name: str, entry: Mapping[str, Any]) -> str:
    """An entry of `networkAcls.<name>` as a RemoveListEntry names it: an IP rule by its CIDR
    normalised, a virtual-network rule by its subnet id lower-cased."""
    return normalise_cidr(entry.get("value")) if name == "ipRules" else str(entry.get("id", "")).lower()


def _baseline_entries(name: str, baseline: VaultConfig) -> frozenset[str]:
    """The baseline's own entries of a list, in the same form: never removed."""
    return baseline.ip_rules if name == "ipRules" else baseline.virtual_network_rules


def _acls(config: VaultConfig) -> dict[str, Any]:
    acls = (config.raw.get("properties") or {}).get(ACLS) or {}
    return copy.deepcopy(dict(acls))


@handler("restore_network", kind="remediation", permission="Microsoft.KeyVault/vaults/write",
         accepts=(RestoreField, RemoveListEntry))
def restore_network(data: PlanInput) -> list[Operation]:
    """PATCH publicNetworkAccess and the changed parts of networkAcls back to the baseline values
    the findings' intents carry. The IP and subnet rules that were added are removed one by one;
    rules added at the same time by someone else and not flagged stay, and so do unrelated ACL
    settings."""
    if data.before is None or data.after is None:
        return []
    fields = [intent for _, intent in data.restores(RestoreField)]
    entries = [intent for _, intent in data.restores(RemoveListEntry)]
    patch: dict[str, Any] = {f.path: f.value for f in fields if "." not in f.path}
    dropped = not (data.after.raw.get("properties") or {}).get(ACLS)
    acls = _acls(data.before) if dropped else _acls(data.after)
    touched = False
    for field in fields:
        if field.path.startswith(ACLS + "."):
            acls[field.path.removeprefix(ACLS + ".")] = field.value
            touched = True
    for name in dict.fromkeys(e.path.removeprefix(ACLS + ".") for e in entries):
        drop = {e.value for e in entries if e.path == f"{ACLS}.{name}"} - _baseline_entries(name, data.before)
        acls[name] = [entry for entry in acls.get(name, []) if _entry_value(name, entry) not in drop]
        touched = True
    if touched:
        patch[ACLS] = acls
    if not patch:
        return []
    description = f"patch {', '.join(sorted(patch))} of {data.after.name} back to the baseline"
    return [patch_operation("restore_network", data.after, patch, description, data.rules)]
