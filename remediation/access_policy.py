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

from kvguard.intents import RevokePermissions
from kvguard.vault import AccessPolicy, Principal
from kvguard.vault_spec import ALL, spelled
from remediation.base import Operation, OperationKind, PlanInput, handler

Permissions = dict[str, frozenset[str]]


def _describe(verb: str, entry: AccessPolicy) -> str:
    perms = "; ".join(f"{c}:{','.join(sorted(p))}" for c, p in sorted(entry.permissions.items()) if p)
    return f"{verb} {perms} for {entry.principal.describe()}"


def _undo(current: AccessPolicy, baseline: AccessPolicy | None, revoked: frozenset[str],
          category: str) -> tuple[frozenset[str], frozenset[str]]:
    """(names to add, names to remove) that take one category of the current entry back to what it
    granted without `revoked`. Only what the entry grants now and the baseline did not is taken:
    nothing the baseline had is ever removed, whatever the intent says."""
    granted = current.effective(category)
    revoked &= granted - (baseline.effective(category) if baseline is not None else frozenset())
    if not revoked:
        return frozenset(), frozenset()
    written = current.get(category)
    if ALL not in written:
        return frozenset(), revoked
    kept = granted - revoked
    return frozenset(spelled(p) for p in kept - written), frozenset({ALL}) | (written - kept - {ALL})


@handler("revert_access_policy", kind="remediation", permission="Microsoft.KeyVault/vaults/accessPolicies/write",
         accepts=(RevokePermissions,))
def revert_access_policy(data: PlanInput) -> list[Operation]:
    """Take back the permissions the findings' intents name (a new principal's grant, what an
    existing principal gained), as far as the current entry still grants them and the baseline
    did not; a narrowed grant has nothing to revert. With no baseline there is nothing to revert to."""
    if data.before is None or data.after is None:
        return []
    principals: dict[str, Principal] = {}
    revoked: dict[str, Permissions] = {}
    for _, intent in data.restores(RevokePermissions):
        key = intent.principal.key
        principals.setdefault(key, intent.principal)
        for category, names in intent.permissions.items():
            revoked.setdefault(key, {})[category] = revoked.get(key, {}).get(category, frozenset()) | names
    operations = []
    for key, principal in principals.items():
        current = data.after.policy_for(key)
        if current is None:
            continue
        additions: Permissions = {}
        removals: Permissions = {}
        for category, names in revoked[key].items():
            add, remove = _undo(current, data.before.policy_for(key), names, category)
            if add:
                additions[category] = add
            if remove:
                removals[category] = remove
        steps: tuple[tuple[OperationKind, str, Permissions], ...] = (
            ("add_access_policy", "add", additions),
            ("remove_access_policy", "remove", removals),
        )
        for kind, verb, perms in steps:
            if perms:
                operations.append(_operation(kind, verb, AccessPolicy(principal, perms), current, data))
    return operations


def _operation(kind: OperationKind, verb: str, entry: AccessPolicy, current: AccessPolicy,
               data: PlanInput) -> Operation:
    assert data.after is not None
    return Operation(
        handler="revert_access_policy",
        kind=kind,
        vault_id=data.after.id,
        description=f"{_describe(verb, entry)} on {data.after.name}",
        target=entry,
        before=current.to_arm(),
        rules=tuple(data.rules),
    )
