"""Lock rules (KV-LOCK-*): a management lock covering a vault removed or weakened.

A `CanNotDelete` lock is what stands between a stolen Contributor token and a deleted vault; a
`ReadOnly` lock also stops configuration changes. Locks apply from any covering scope (the vault,
its resource group, its subscription).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from kvguard.detection import Case, Context, Hit, rule
from kvguard.intents import RestoreResource

LOCKS = "microsoft.authorization/locks"
# Lock levels by the protection they give.
LEVEL_STRENGTH = {"cannotdelete": 1, "readonly": 2}


def lock_level(lock: Mapping[str, Any] | None) -> str | None:
    """The lock's level as ARM spells it, or None when there is no lock."""
    if lock is None:
        return None
    properties = lock.get("properties")
    level = properties.get("level") if isinstance(properties, Mapping) else None
    return str(level) if level is not None else None


def _lock_weakened_cases() -> list[Case]:
    from detectors.cases import VAULT_ID, lock

    resource_group = VAULT_ID.split("/providers/")[0]
    return [
        Case("vault lock removed", fires=True, before=lock(), after=None,
             restore=(RestoreResource(lock()["id"], "Microsoft.Authorization/locks", lock()["properties"]),)),
        Case("resource group lock removed", fires=True, before=lock(scope=resource_group), after=None),
        Case("ReadOnly weakened to CanNotDelete", fires=True, before=lock("ReadOnly"), after=lock("CanNotDelete")),
        Case("near miss: a new lock", fires=False, before=None, after=lock()),
        Case("near miss: CanNotDelete strengthened to ReadOnly", fires=False,
             before=lock("CanNotDelete"), after=lock("ReadOnly")),
        Case("near miss: only the notes changed", fires=False, before=lock(), after=lock(notes="owned by payments")),
    ]


@rule(
    "KV-LOCK-01",
    title="Lock covering a vault removed or weakened",
    severity="medium",
    mitre=("T1485",),
    kind="diff",
    remediation="restore_lock",
    remediate_by_default=False,
    cases=_lock_weakened_cases,
)
def lock_weakened(ctx: Context) -> Iterator[Hit]:
    """A lock over a protected vault was deleted, or a ReadOnly lock became CanNotDelete: the vault
    can now be deleted (or reconfigured) by anyone with write rights. Putting a lock back needs
    `Microsoft.Authorization/locks/write`, an Owner-level right, so its remediation is opt-in."""
    state = ctx.resource
    if state is None or state.change.type.lower() != LOCKS or state.before is None:
        return
    was, now = lock_level(state.before), lock_level(state.after)
    evidence = {"lock": state.change.id, "scope": state.change.scope, "before": was, "after": now}
    if state.after is None:
        yield Hit(evidence=evidence, detail="lock removed", restore=RestoreResource.baseline_of(state))
    elif LEVEL_STRENGTH.get(str(now).lower(), 0) < LEVEL_STRENGTH.get(str(was).lower(), 0):
        yield Hit(evidence=evidence, detail=f"lock weakened from {was} to {now}",
                  restore=RestoreResource.baseline_of(state))
