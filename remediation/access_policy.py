"""revert_access_policy: take back exactly what was granted, nothing else.

A targeted `accessPolicies/remove` per principal, never a whole-list replace: a replace would also
drop any legitimate grant that landed between our read and our write.

ARM's remove takes the names it is given out of the stored list, literally: removing `wrapKey`
from an entry that holds `["all"]` removes nothing, and removing `all` removes every key
permission. So when a change widened a grant to `all`, the permissions the baseline had are first
added explicitly (`accessPolicies/add`, so the principal never loses them, not even between the
two writes), and then `all` and the other added names are removed.
"""

from __future__ import annotations

from kvguard.vault import PERMISSION_CATEGORIES, AccessPolicy, Principal, diff
from kvguard.vault_spec import ALL, spelled
from remediation.base import Operation, OperationKind, PlanInput, handler

REVERTED_RULES = ("KV-AP-01", "KV-AP-02")
Permissions = dict[str, frozenset[str]]


def _describe(verb: str, entry: AccessPolicy) -> str:
    perms = "; ".join(f"{c}:{','.join(sorted(p))}" for c, p in sorted(entry.permissions.items()) if p)
    return f"{verb} {perms} for {entry.principal.describe()}"


def _narrowing(before: AccessPolicy, after: AccessPolicy, category: str) -> tuple[frozenset[str], frozenset[str]]:
    """(names to add, names to remove) that take one category of `after` back to what `before`
    granted there, where `after` widened it; nothing for a category that was not widened."""
    added = after.effective(category) - before.effective(category)
    if not added:
        return frozenset(), frozenset()
    written = after.get(category)
    if ALL not in written:
        return frozenset(), added
    kept = after.effective(category) & before.effective(category)
    return frozenset(spelled(p) for p in kept - written), frozenset({ALL}) | (written - kept - {ALL})


@handler("revert_access_policy", kind="remediation", permission="Microsoft.KeyVault/vaults/accessPolicies/write")
def revert_access_policy(data: PlanInput) -> list[Operation]:
    """Remove the principals a change added (KV-AP-01) and the permissions it added to existing
    principals (KV-AP-02), comparing against the baseline after expanding `all`; a narrowed grant
    has nothing to revert, and no permission the baseline had is ever removed. With no baseline
    there is nothing to revert to."""
    if data.before is None or data.after is None:
        return []
    change = diff(data.before, data.after)
    fired = {f.rule for f in data.findings}
    flagged = {str(f.evidence.get("objectId", "")).lower() for f in data.findings if f.rule == "KV-AP-01"}
    additions: dict[str, Permissions] = {}
    removals: dict[str, Permissions] = {}
    principals: dict[str, Principal] = {}
    if "KV-AP-01" in fired:
        for entry in change.added_policies:
            if not flagged - {""} or entry.principal.object_id in flagged:
                principals[entry.principal.key] = entry.principal
                removals[entry.principal.key] = {c: p for c, p in entry.permissions.items() if p}
    if "KV-AP-02" in fired:
        for widened in {c.principal.key: c.principal for c in change.widened}.values():
            old, new = data.before.policy_for(widened.key), data.after.policy_for(widened.key)
            if old is None or new is None:
                continue
            principals[widened.key] = new.principal
            for category in PERMISSION_CATEGORIES:
                add, remove = _narrowing(old, new, category)
                if add:
                    additions.setdefault(widened.key, {})[category] = add
                if remove:
                    removals.setdefault(widened.key, {})[category] = remove
    rules = tuple(sorted(fired & set(REVERTED_RULES)))
    operations = []
    for key, principal in principals.items():
        current = data.after.policy_for(key)
        steps: tuple[tuple[OperationKind, str, Permissions | None], ...] = (
            ("add_access_policy", "add", additions.get(key)),
            ("remove_access_policy", "remove", removals.get(key)),
        )
        for kind, verb, perms in steps:
            if perms:
                operations.append(_operation(kind, verb, AccessPolicy(principal, perms), current, data, rules))
    return operations


def _operation(kind: OperationKind, verb: str, entry: AccessPolicy, current: AccessPolicy | None,
               data: PlanInput, rules: tuple[str, ...]) -> Operation:
    assert data.after is not None
    return Operation(
        handler="revert_access_policy",
        kind=kind,
        vault_id=data.after.id,
        description=f"{_describe(verb, entry)} on {data.after.name}",
        target=entry,
        before=current.to_arm() if current else None,
        rules=rules,
    )

