"""remove_role_assignment: delete exactly the role assignment that was added, nothing else.

The plan names the assignment by id with the principal, role and scope the finding saw; the runner
re-reads it just before deleting and deletes only while all three still match (an id reused for
another grant is left alone). Never an assignment the baseline has, never one of kvguard's own:
the rules build the intent only for an assignment the baseline lacks that is not kvguard's, and
an assignment the baseline has is checked here again.
"""

from __future__ import annotations

from kvguard.intents import DeleteRoleAssignment, RoleAssignmentRef
from remediation.base import Operation, PlanInput, handler


@handler("remove_role_assignment", kind="remediation", permission="Microsoft.Authorization/roleAssignments/delete",
         accepts=(DeleteRoleAssignment,))
def remove_role_assignment(data: PlanInput) -> list[Operation]:
    """Delete the added assignment (KV-RBAC-01, and KV-RBAC-02 when the rule opts in), once however
    many findings name it; with a baseline copy of it, or no current copy, there is nothing to remove."""
    state = data.resource
    if state is None or state.before is not None or state.after is None:
        return []
    deletes: dict[RoleAssignmentRef, DeleteRoleAssignment] = {}
    for _, intent in data.restores(DeleteRoleAssignment):
        deletes.setdefault(intent.assignment, intent)
    return [Operation(
        handler="remove_role_assignment", kind="delete_role_assignment", vault_id=target.id,
        description=f"delete role assignment {target.id.rsplit('/', 1)[-1]} ({intent.role or 'role'} for "
                    f"{target.principal_id} at {state.change.scope})",
        target=target, before=dict(state.after), rules=tuple(data.rules),
    ) for target, intent in deletes.items()]
