"""Handlers that undo what a caller did to Azure Policy around a vault: an exemption removed (or
put back as it was), a Key Vault policy assignment enforced again.

Both are opt-in (`rules: {KV-POL-01: {remediate: true}}`, `{KV-POL-02: …}`): writing exemptions
and assignments are rights the deployment does not grant (README, "Opt-in rights"). The runner
re-reads the resource before it writes: an exemption is deleted only while it still exempts the
same assignment at the same scope in the same category, and a PUT is skipped when the resource
already says what it would; every write is noted in the ledger first, like every other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvguard.intents import DeletePolicyExemption, PolicyExemptionRef, RestoreResource
from remediation.base import Operation, PlanInput, handler, put_resource_operation

# What ARM returns on an assignment's GET that a PUT does not take.
_READ_ONLY = frozenset({"id", "name", "type", "etag", "systemdata"})


@handler("remove_policy_exemption", kind="remediation",
         permission="Microsoft.Authorization/policyExemptions/delete",
         accepts=(DeletePolicyExemption, RestoreResource))
def remove_policy_exemption(data: PlanInput) -> list[Operation]:
    """Delete the exemption that was added, once however many findings name it; an exemption
    that was widened or re-scoped is put back as the baseline had it (a PUT: `policyExemptions/write`)."""
    state = data.resource
    if state is None or state.after is None:
        return []
    operations: list[Operation] = []
    deletes: dict[PolicyExemptionRef, DeletePolicyExemption] = {}
    for _, intent in data.restores(DeletePolicyExemption):
        if state.before is None:  # never one the baseline has
            deletes.setdefault(intent.exemption, intent)
    operations += [Operation(
        handler="remove_policy_exemption", kind="delete_policy_exemption", vault_id=ref.id,
        description=f"delete policy exemption {ref.id.rsplit('/', 1)[-1]} (from {ref.policy_assignment_id} "
                    f"at {ref.scope})",
        target=ref, before=dict(state.after), rules=tuple(data.rules),
    ) for ref in deletes]
    for _, restore in data.restores(RestoreResource):
        document = {"type": restore.resource_type, "properties": dict(restore.properties)}
        name = restore.resource_id.rsplit("/", 1)[-1]
        operations.append(put_resource_operation("remove_policy_exemption", restore.resource_id, document,
                                                 state.after, f"put policy exemption {name} back as the baseline "
                                                              "had it", data.rules))
    return operations


def _assignment_body(current: Mapping[str, Any], restored: Mapping[str, Any]) -> dict[str, Any]:
    """The current assignment with the baseline's `enforcementMode` and `notScopes`: its definition,
    parameters, identity and location stay what they are (a PUT replaces the whole assignment)."""
    body = {k: v for k, v in current.items() if k.lower() not in _READ_ONLY}
    identity = body.get("identity")
    if isinstance(identity, Mapping):  # the principal and tenant ids are ARM's to set
        body["identity"] = {k: v for k, v in identity.items() if k not in ("principalId", "tenantId")}
    properties = dict(current.get("properties") or {})
    properties.update({k: restored[k] for k in ("enforcementMode", "notScopes") if k in restored})
    return {**body, "type": current.get("type") or "Microsoft.Authorization/policyAssignments",
            "properties": properties}


@handler("restore_policy_assignment", kind="remediation",
         permission="Microsoft.Authorization/policyAssignments/write", accepts=(RestoreResource,))
def restore_policy_assignment(data: PlanInput) -> list[Operation]:
    """Put the baseline's `enforcementMode` and `notScopes` back on the assignment, nothing else;
    a deleted assignment is not re-created (its rule marks that intent refused)."""
    state = data.resource
    if state is None or state.after is None:
        return []
    operations = []
    for _, intent in data.restores(RestoreResource):
        if intent.refused:
            continue  # a deleted assignment: the flow records why nothing is written
        properties = state.after.get("properties") or {}
        wanted = {k: intent.properties[k] for k in ("enforcementMode", "notScopes") if k in intent.properties}
        if all(properties.get(k) == v for k, v in wanted.items()):
            continue  # already as the baseline had it
        name = intent.resource_id.rsplit("/", 1)[-1]
        operations.append(put_resource_operation(
            "restore_policy_assignment", intent.resource_id, _assignment_body(state.after, wanted), state.after,
            f"set policy assignment {name} back to enforcementMode {wanted.get('enforcementMode')} and notScopes "
            f"{wanted.get('notScopes')}", data.rules))
    return operations
