"""Handlers that put the resources beside a vault back: its diagnostic setting, a lock over it,
its subscription's Defender plan, and a private endpoint connection rejected.

Each plans one PUT from the resource's baseline (what kvguard last accepted) and its current JSON;
the shared runner re-reads the resource before it writes and skips the PUT when the resource
already says what the PUT would, so a retry or a duplicate event does nothing twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvguard.intents import RejectConnection, RestoreResource
from remediation.base import Operation, PlanInput, handler, put_resource_operation

# Read-only properties ARM returns on a GET and ignores (or refuses) on a PUT.
READ_ONLY = frozenset({"provisioningstate"})


def _writable(properties: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (properties or {}).items() if k.lower() not in READ_ONLY}


def _restore(data: PlanInput, handler_id: str, what: str) -> list[Operation]:
    """PUT each resource the intents name back with the baseline's properties (the `type` says
    which kind of resource the gateway writes)."""
    state = data.resource
    if state is None:
        return []
    operations = []
    for _, intent in data.restores(RestoreResource):
        if intent.refused:
            continue  # the baseline names a value outside the policy: never written (the flow says why)
        document = {"type": intent.resource_type, "properties": _writable(intent.properties)}
        name = intent.resource_id.rsplit("/", 1)[-1]
        operations.append(put_resource_operation(handler_id, intent.resource_id, document, state.after,
                                                 f"put {what} {name} back as the baseline had it", data.rules))
    return operations


# The vault's own diagnostic settings only (not those of every resource type of the subscription).
@handler("restore_diagnostic_setting", kind="remediation",
         permission="Microsoft.KeyVault/vaults/providers/Microsoft.Insights/diagnosticSettings/write",
         accepts=(RestoreResource,))
def restore_diagnostic_setting(data: PlanInput) -> list[Operation]:
    """PUT the vault's diagnostic setting back as the baseline had it: deleted, it is created again;
    its audit logs switched off or sent elsewhere, its logs, metrics and destinations are restored.
    Never a destination outside `allowed_log_destinations`: such a restore is refused (alert only)."""
    return _restore(data, "restore_diagnostic_setting", "diagnostic setting")


@handler("restore_lock", kind="remediation", permission="Microsoft.Authorization/locks/write",
         accepts=(RestoreResource,))
def restore_lock(data: PlanInput) -> list[Operation]:
    """PUT the lock back with the baseline's level and notes. Opt-in (`rules: {KV-LOCK-01:
    {remediate: true}}`): writing locks is an Owner-level right the deployment does not grant."""
    return _restore(data, "restore_lock", "lock")


@handler("restore_defender_plan", kind="remediation", permission="Microsoft.Security/pricings/write",
         accepts=(RestoreResource,))
def restore_defender_plan(data: PlanInput) -> list[Operation]:
    """Set the `KeyVaults` pricing back to the baseline's tier and sub-plan. Opt-in (`rules:
    {KV-DEF-02: {remediate: true}}`): it needs Security Admin, which the deployment does not grant."""
    state = data.resource
    if state is None:
        return []
    operations = []
    for _, intent in data.restores(RestoreResource):
        properties = intent.properties
        plan = {k: properties[k] for k in ("pricingTier", "subPlan") if properties.get(k) is not None}
        document = {"type": intent.resource_type, "properties": plan}
        description = f"set the KeyVaults pricing back to {plan.get('pricingTier')}" + (
            f" ({properties['subPlan']})" if properties.get("subPlan") else "")
        operations.append(put_resource_operation("restore_defender_plan", intent.resource_id, document, state.after,
                                                 description, data.rules))
    return operations


@handler("reject_private_endpoint", kind="remediation",
         permission="Microsoft.KeyVault/vaults/privateEndpointConnections/write", accepts=(RejectConnection,))
def reject_private_endpoint(data: PlanInput) -> list[Operation]:
    """Set the private endpoint connection's state to Rejected, with the reason in its description;
    the endpoint keeps existing in its owner's subscription, but no longer reaches the vault."""
    state = data.resource
    rejections = data.restores(RejectConnection)
    if state is None or state.after is None or not rejections:
        return []
    finding, intent = rejections[0]
    reason = f"Rejected by kvguard ({finding.rule}): {intent.reason}"
    properties = _writable(state.after.get("properties"))
    properties["privateLinkServiceConnectionState"] = {"status": "Rejected", "description": reason,
                                                       "actionsRequired": "None"}
    name = intent.connection_id.rsplit("/", 1)[-1]
    document = {"type": state.change.type, "properties": properties}
    return [put_resource_operation("reject_private_endpoint", intent.connection_id, document, state.after,
                                   f"reject private endpoint connection {name}", data.rules)]
