"""Turning a rule's `Case` into what the rule sees: the normalised event and the `Context`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from detectors.cases import NOW, OPERATOR, TENANT, VAULT_ID, vault
from kvguard.detection import Case, Context, History
from kvguard.events import Caller, VaultEvent
from kvguard.ids import parse_vault_ref
from kvguard.policy import Policy
from kvguard.resources import ResourceChange, ResourceState, Sweep, is_vault_type, resource_type_of
from kvguard.roles import builtin_role, role_from_arm
from kvguard.vault import VaultConfig, diff


def make_event(overrides: Mapping[str, Any]) -> VaultEvent:
    """A normalised event: a successful vaults/write by OPERATOR unless `overrides` say otherwise.

    Keys: kind, operation, event_type, status, succeeded, time, vault_id, and caller (a dict of
    `Caller` fields, merged over the default caller).
    """
    caller = {"object_id": OPERATOR, "upn": "ops@contoso.example", "tenant_id": TENANT, "ip": "10.20.30.40"}
    caller.update(overrides.get("caller", {}))
    kind = overrides.get("kind", "write")
    operation = overrides.get("operation", {
        "write": "Microsoft.KeyVault/vaults/write",
        "access_policy": "Microsoft.KeyVault/vaults/accessPolicies/write",
        "delete": "Microsoft.KeyVault/vaults/delete",
        "purge": "Microsoft.KeyVault/locations/deletedVaults/purge/action",
    }.get(kind, "Microsoft.KeyVault/vaults/write"))
    succeeded = overrides.get("succeeded", True)
    return VaultEvent(
        id=overrides.get("id", "evt-case"),
        event_type=overrides.get(
            "event_type",
            "Microsoft.Resources.ResourceWriteSuccess" if succeeded else "Microsoft.Resources.ResourceWriteFailure",
        ),
        schema="eventgrid",
        subject=overrides.get("vault_id", VAULT_ID),
        time=overrides.get("time", NOW),
        vault=parse_vault_ref(overrides.get("vault_id", VAULT_ID)),
        operation=operation,
        kind=kind,
        access_policy_action=overrides.get("access_policy_action"),
        status="Succeeded" if succeeded else "Failed",
        succeeded=succeeded,
        caller=Caller(**caller),
        correlation_id="corr-case",
        tenant_id=TENANT,
        raw={},
    )


def make_resource_state(spec: Mapping[str, Any]) -> ResourceState:
    """A resource case's state. Keys: `id`, `type` (default: a role assignment), `action` (default
    write), `before`/`after` (ARM JSON or None), `vaults` (the covered vaults' ARM JSON; default
    the default vault with RBAC authorization on), `role` (a custom role's definition JSON;
    default: the built-in role the assignment or eligibility request names), for a deny setting
    `rights` (handler → action; default: those of the handlers the default policy runs) and, for a
    policy assignment, `names_key_vault` (whether its definition names Key Vault; default None: not read)."""
    from detectors.cases import vault
    from detectors.deny import DENY_SETTINGS
    from kvguard.catalog import remediation_rights

    before, after = spec.get("before"), spec.get("after")
    current = after if after is not None else before
    resource_id = spec.get("id") or (current or {}).get("id") or f"{VAULT_ID}/providers/Microsoft.Authorization/x"
    change = ResourceChange(resource_id, spec.get("type", "Microsoft.Authorization/roleAssignments"),
                            spec.get("action", "write" if after is not None else "delete"))
    definition = ((current or {}).get("properties") or {}).get("roleDefinitionId", "")
    role = role_from_arm(spec["role"]) if spec.get("role") else builtin_role(definition) if definition else None
    vaults = tuple(VaultConfig.from_arm(v) for v in spec.get("vaults", [vault(enableRbacAuthorization=True)]))
    rights = spec.get("rights", remediation_rights(Policy()) if change.type.lower() in DENY_SETTINGS else {})
    return ResourceState(change, before, after, vaults, role, rights, names_key_vault=spec.get("names_key_vault"))


def make_context(case: Case) -> Context:
    """The context a rule sees for a case: configurations parsed, diff computed, policy merged; for
    a role-assignment case (`resource`), the resource state it names; for a case on another resource,
    that resource over the default vault; for a sweep, the default vault (or `after`) and the
    resources the sweep read."""
    if case.resource is not None:
        state = make_resource_state(case.resource)
        event = replace(make_event({"kind": "other", "operation": state.change.operation, **case.event}),
                        resource=state.change)
        return Context(event=event, before=None, after=None, diff=None,
                       policy=Policy().merged(dict(case.policy)), history=History(**case.history),
                       now=case.event.get("time") or NOW, resource=state)
    document = case.after if case.after is not None else case.before
    if document is not None and not is_vault_type(resource_type_of(document)):
        return _resource_context(case, document)
    if case.sweep is not None:
        return Context(event=make_event(case.event), before=None, after=None, diff=None,
                       policy=Policy().merged(dict(case.policy)), history=History(**case.history),
                       now=case.event.get("time") or NOW,
                       sweep=Sweep(VaultConfig.from_arm(case.after or vault()), tuple(case.sweep)))
    before = VaultConfig.from_arm(case.before) if case.before is not None else None
    after = VaultConfig.from_arm(case.after) if case.after is not None else None
    return Context(
        event=make_event(case.event),
        before=before,
        after=after,
        diff=diff(before, after) if before is not None and after is not None else None,
        policy=Policy().merged(dict(case.policy)),
        history=History(**case.history),
        now=case.event.get("time") or NOW,
        baseline_deleted=case.baseline_deleted,
    )


def _resource_context(case: Case, document: Mapping[str, Any]) -> Context:
    change = ResourceChange(str(document["id"]), resource_type_of(document),
                            "write" if case.after is not None else "delete")
    state = ResourceState(change, case.before, case.after, (VaultConfig.from_arm(vault()),))
    return Context(event=make_event({"vault_id": change.id, **case.event}), before=None, after=None, diff=None,
                   policy=Policy().merged(dict(case.policy)), history=History(**case.history),
                   now=case.event.get("time") or NOW, resource=state)
