"""remove_role_assignment: delete exactly the role assignment that was added, nothing else.

The plan names the assignment by id with the principal, role and scope the finding saw; the runner
re-reads it just before deleting and deletes only while all three still match (an id reused for
another grant is left alone). Never an assignment the baseline has, never one of kvguard's own:
the finding's rules only fire on assignments the baseline lacks, and own ones are checked here again.
"""

from __future__ import annotations

from remediation.base import Operation, PlanInput, RoleAssignmentRef, handler

REMOVED_RULES = ("KV-RBAC-01", "KV-RBAC-02")


@handler("remove_role_assignment", kind="remediation", permission="Microsoft.Authorization/roleAssignments/delete")
def remove_role_assignment(data: PlanInput) -> list[Operation]:
    """Delete the added assignment (KV-RBAC-01, and KV-RBAC-02 when the rule opts in); with a
    baseline copy of it, or no current copy, there is nothing to remove."""
    state = data.resource
    if state is None or state.before is not None or state.after is None:
        return []
    properties = state.after.get("properties") or {}
    target = RoleAssignmentRef(
        id=state.change.id,
        principal_id=str(properties.get("principalId") or "").lower(),
        role_definition_id=str(properties.get("roleDefinitionId") or "").lower(),
        scope=state.change.scope.lower(),
    )
    if not target.principal_id or not target.role_definition_id:
        return []
    rules = tuple(sorted({f.rule for f in data.findings} & set(REMOVED_RULES)))
    role = data.findings[0].evidence.get("role") if data.findings else None
    return [Operation(
        handler="remove_role_assignment", kind="delete_role_assignment", vault_id=state.change.id,
        description=f"delete role assignment {state.change.id.rsplit('/', 1)[-1]} ({role or 'role'} for "
                    f"{target.principal_id} at {state.change.scope})",
        target=target, before=dict(state.after), rules=rules,
    )]
