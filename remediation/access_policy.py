"""revert_access_policy: take back exactly what was granted, nothing else.

A targeted `accessPolicies/remove` per principal, never a whole-list replace: a replace would also
drop any legitimate grant that landed between our read and our write.
"""

from __future__ import annotations

from kvguard.vault import AccessPolicy, diff
from remediation.base import Operation, PlanInput, handler

REVERTED_RULES = ("KV-AP-01", "KV-AP-02")


def _describe(entry: AccessPolicy) -> str:
    perms = "; ".join(f"{c}:{','.join(sorted(p))}" for c, p in sorted(entry.permissions.items()) if p)
    return f"remove {perms} for {entry.principal.describe()}"


@handler("revert_access_policy", kind="remediation", permission="Microsoft.KeyVault/vaults/accessPolicies/write")
def revert_access_policy(data: PlanInput) -> list[Operation]:
    """Remove the principals a change added (KV-AP-01) and the permissions it added to existing
    principals (KV-AP-02), comparing against the baseline; with no baseline there is nothing to
    revert to."""
    if data.before is None or data.after is None:
        return []
    change = diff(data.before, data.after)
    fired = {f.rule for f in data.findings}
    flagged = {str(f.evidence.get("objectId", "")).lower() for f in data.findings if f.rule == "KV-AP-01"}
    removals: dict[str, dict[str, frozenset[str]]] = {}
    principals = {}
    if "KV-AP-01" in fired:
        for entry in change.added_policies:
            if not flagged - {""} or entry.principal.object_id in flagged:
                principals[entry.principal.key] = entry.principal
                removals[entry.principal.key] = {c: p for c, p in entry.permissions.items() if p}
    if "KV-AP-02" in fired:
        for widened in change.widened:
            principals[widened.principal.key] = widened.principal
            perms = removals.setdefault(widened.principal.key, {})
            perms[widened.category] = perms.get(widened.category, frozenset()) | widened.added
    operations = []
    for key, perms in removals.items():
        if not perms:
            continue
        entry = AccessPolicy(principal=principals[key], permissions=perms)
        current = data.after.policy_for(key)
        operations.append(
            Operation(
                handler="revert_access_policy",
                kind="remove_access_policy",
                vault_id=data.after.id,
                description=f"{_describe(entry)} on {data.after.name}",
                target=entry,
                before=current.to_arm() if current else None,
                rules=tuple(sorted(fired & set(REVERTED_RULES))),
            )
        )
    return operations
