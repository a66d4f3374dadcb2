"""Handlers that put the resources beside a vault back: its diagnostic setting, a lock over it,
its subscription's Defender plan, and a private endpoint connection rejected.

Each plans one PUT from the resource's baseline (what kvguard last accepted) and its current JSON;
the shared runner re-reads the resource before it writes and skips the PUT when the resource
already says what the PUT would, so a retry or a duplicate event does nothing twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from remediation.base import Operation, PlanInput, handler, put_resource_operation

# Read-only properties ARM returns on a GET and ignores (or refuses) on a PUT.
READ_ONLY = frozenset({"provisioningstate"})


def _writable(properties: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (properties or {}).items() if k.lower() not in READ_ONLY}


def _restore(data: PlanInput, handler_id: str, rule_id: str, what: str) -> list[Operation]:
    """PUT the resource's properties back as its baseline had them (the `type` says which kind of
    resource the gateway writes)."""
    state = data.resource
    if state is None or state.before is None or rule_id not in {f.rule for f in data.findings}:
        return []
    document = {"type": state.change.type, "properties": _writable(state.before.get("properties"))}
    name = state.change.id.rsplit("/", 1)[-1]
    return [put_resource_operation(handler_id, state.change.id, document, state.after,
                                   f"put {what} {name} back as the baseline had it", [rule_id])]


@handler("restore_diagnostic_setting", kind="remediation", permission="Microsoft.Insights/diagnosticSettings/write")
def restore_diagnostic_setting(data: PlanInput) -> list[Operation]:
    """PUT the vault's diagnostic setting back as the baseline had it: deleted, it is created again;
    its audit logs switched off or sent elsewhere, its logs, metrics and destinations are restored."""
    return _restore(data, "restore_diagnostic_setting", "KV-LOG-01", "diagnostic setting")


@handler("restore_lock", kind="remediation", permission="Microsoft.Authorization/locks/write")
def restore_lock(data: PlanInput) -> list[Operation]:
    """PUT the lock back with the baseline's level and notes. Opt-in (`rules: {KV-LOCK-01:
    {remediate: true}}`): writing locks is an Owner-level right the deployment does not grant."""
    return _restore(data, "restore_lock", "KV-LOCK-01", "lock")


@handler("restore_defender_plan", kind="remediation", permission="Microsoft.Security/pricings/write")
def restore_defender_plan(data: PlanInput) -> list[Operation]:
    """Set the `KeyVaults` pricing back to the baseline's tier and sub-plan. Opt-in (`rules:
    {KV-DEF-02: {remediate: true}}`): it needs Security Admin, which the deployment does not grant."""
    state = data.resource
    if state is None or state.before is None or "KV-DEF-02" not in {f.rule for f in data.findings}:
        return []
    properties = state.before.get("properties") or {}
    plan = {k: properties[k] for k in ("pricingTier", "subPlan") if properties.get(k) is not None}
    document = {"type": state.change.type, "properties": plan}
    description = f"set the KeyVaults pricing back to {plan.get('pricingTier')}" + (
        f" ({properties['subPlan']})" if properties.get("subPlan") else "")
    return [put_resource_operation("restore_defender_plan", state.change.id, document, state.after, description,
                                   ["KV-DEF-02"])]


@handler("reject_private_endpoint", kind="remediation",
         permission="Microsoft.KeyVault/vaults/privateEndpointConnections/write")
def reject_private_endpoint(data: PlanInput) -> list[Operation]:
    """Set the private endpoint connection's state to Rejected, with the reason in its description;
    the endpoint keeps existing in its owner's subscription, but no longer reaches the vault."""
    state = data.resource
    findings = [f for f in data.findings if f.rule == "KV-PE-01"]
    if state is None or state.after is None or not findings:
        return []
    subscription = findings[0].evidence.get("subscription")
    reason = f"Rejected by kvguard (KV-PE-01): endpoint subscription {subscription} is not allowed"
    properties = _writable(state.after.get("properties"))
    properties["privateLinkServiceConnectionState"] = {"status": "Rejected", "description": reason,
                                                       "actionsRequired": "None"}
    name = state.change.id.rsplit("/", 1)[-1]
    document = {"type": state.change.type, "properties": properties}
    return [put_resource_operation("reject_private_endpoint", state.change.id, document, state.after,
                                   f"reject private endpoint connection {name}", ["KV-PE-01"])]
