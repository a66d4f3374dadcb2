"""Azure Policy rules (KV-POL-*): the policies that keep vaults hardened, switched off around one.

A Deny policy on Key Vault ("vaults should have purge protection", "firewall should be enabled")
refuses the very change an attacker wants next. Two ways round it leave the vault untouched: an
exemption over the vault's resource group, or the assignment itself switched to `DoNotEnforce`,
deleted, or told to leave the vault out (`notScopes`). Both arrive as changes to a resource of
their own at a scope covering the vault (`ctx.resource`, with the covered vaults).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kvguard.azure_policy import (
    POLICY_ASSIGNMENTS_TYPE,
    POLICY_EXEMPTIONS_TYPE,
    enforcement_mode,
    excluding_scopes,
    exemption_applies,
    expires_on,
    not_scopes,
    properties_of,
    widenings,
)
from kvguard.detection import Case, Context, Hit, rule
from kvguard.intents import DeletePolicyExemption, PolicyExemptionRef, RestoreResource
from kvguard.resources import ResourceState

EXEMPTIONS = POLICY_EXEMPTIONS_TYPE.lower()
ASSIGNMENTS = POLICY_ASSIGNMENTS_TYPE.lower()


def _state(ctx: Context, resource_type: str) -> ResourceState | None:
    state = ctx.resource
    if state is None or state.change.type.lower() != resource_type or not state.vaults:
        return None
    return state


def _approved(ctx: Context) -> bool:
    """A successful change by an approved caller (the team's policy pipeline) is the intended one."""
    return ctx.event.succeeded and bool(set(ctx.policy.approved_callers) & ctx.event.caller.ids())


# --- KV-POL-01 -----------------------------------------------------------------------------------


def _exemption_cases() -> list[Case]:
    from detectors.cases import (
        APP_TEAM,
        INTRUDER,
        POLICY_ASSIGNMENT_ID,
        RESOURCE_GROUP_ID,
        SUBSCRIPTION_ID,
        VAULT_ID,
        exemption,
    )

    kind = {"type": POLICY_EXEMPTIONS_TYPE}
    created = exemption()
    ref = PolicyExemptionRef(created["id"].lower(), POLICY_ASSIGNMENT_ID.lower(), RESOURCE_GROUP_ID.lower(), "waiver")
    storage_only = [{"name": "storage",
                     "selectors": [{"kind": "resourceType", "in": ["Microsoft.Storage/storageAccounts"]}]}]
    intruder = {"caller": {"object_id": INTRUDER}}
    return [
        Case("exemption created on the vault's resource group", fires=True, event=intruder,
             resource={**kind, "after": created}, restore=(DeletePolicyExemption(ref),)),
        Case("exemption created on the vault itself, never expiring", fires=True, event=intruder,
             resource={**kind, "after": exemption(scope=VAULT_ID, expires=None)}),
        Case("expiry pushed out a year", fires=True, event=intruder,
             resource={**kind, "before": exemption(), "after": exemption(expires="2027-12-31T00:00:00Z")},
             restore=(RestoreResource(created["id"], POLICY_EXEMPTIONS_TYPE, created["properties"]),)),
        Case("expiry removed", fires=True, event=intruder,
             resource={**kind, "before": exemption(), "after": exemption(expires=None)}),
        Case("one definition reference widened to the whole initiative", fires=True, event=intruder,
             resource={**kind, "before": exemption(references=("purgeProtection",)), "after": exemption()}),
        Case("re-scoped from storage accounts to every resource", fires=True, event=intruder,
             resource={**kind, "before": exemption(selectors=storage_only), "after": exemption()}),
        Case("exemption on the subscription (its scope is above the vault)", fires=True, event=intruder,
             resource={**kind, "after": exemption(scope=SUBSCRIPTION_ID)}),
        Case("near miss: created by the approved policy pipeline", fires=False,
             event={"caller": {"object_id": APP_TEAM}}, policy={"approved_callers": [APP_TEAM]},
             resource={**kind, "after": created}),
        Case("near miss: exemption for storage accounts only", fires=False, event=intruder,
             resource={**kind, "after": exemption(selectors=storage_only)}),
        Case("near miss: expiry brought forward", fires=False, event=intruder,
             resource={**kind, "before": exemption(), "after": exemption(expires="2026-12-01T00:00:00Z")}),
        Case("near miss: only the display name changed", fires=False, event=intruder,
             resource={**kind, "before": exemption(), "after": {**created, "properties": {
                 **created["properties"], "displayName": "payments migration (Q4)"}}}),
        Case("near miss: exemption removed", fires=False, event=intruder,
             resource={**kind, "before": created, "after": None}),
        Case("near miss: scope covers no protected vault", fires=False, event=intruder,
             resource={**kind, "after": created, "vaults": []}),
    ]


def _exemption_change(state: ResourceState, ctx: Context) -> tuple[str, list[str], list[str]] | None:
    """What happened to the exemption over the covered vaults: (change, reasons, vaults) or None."""
    before, after = state.before, state.after
    assert after is not None
    reaches = [v for v in state.vaults if exemption_applies(after, v)]
    if not reaches:
        return None
    if before is None:
        return "created", [], [v.id for v in reaches]
    newly = [v.id for v in reaches if not exemption_applies(before, v)]
    if newly:
        return "re-scoped", ["resource selectors now reach the vault"], newly
    grown = widenings(before, after)
    return ("widened", grown, [v.id for v in reaches]) if grown else None


def _expiry(doc: Any) -> str | None:
    moment = expires_on(doc)
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


@rule(
    "KV-POL-01",
    title="Policy exemption over a protected vault created or widened",
    severity="high",
    mitre=("T1562.001",),
    kind="diff",
    remediation="remove_policy_exemption",
    remediate_by_default=False,
    cases=_exemption_cases,
)
def policy_exemption_widened(ctx: Context) -> Iterator[Hit]:
    """An exemption lifts an assignment's Deny and Audit over everything at its scope: created on
    the vault's resource group (or re-scoped onto it, or widened: more definitions, a later expiry
    or none, another assignment), it lets through the change the policy would have refused. Only
    a caller in `approved_callers` makes exemptions unremarked. Removing one needs
    `policyExemptions/delete` (putting the old copy back, `/write`): opt-in."""
    state = _state(ctx, EXEMPTIONS)
    if state is None or state.after is None or _approved(ctx):
        return
    found = _exemption_change(state, ctx)
    if found is None:
        return
    change, reasons, vaults = found
    properties = properties_of(state.after)
    evidence = {
        "exemptionId": state.change.id,
        "scope": state.change.scope,
        "change": change,
        "policyAssignmentId": properties.get("policyAssignmentId"),
        "exemptionCategory": properties.get("exemptionCategory"),
        "policyDefinitionReferenceIds": list(properties.get("policyDefinitionReferenceIds") or []),
        "expiresOn": {"before": _expiry(state.before), "after": _expiry(state.after)},
        "reasons": reasons,
        "vaults": vaults,
    }
    if state.before is not None:
        yield Hit(evidence=evidence, detail=f"exemption {change}: " + "; ".join(reasons),
                  restore=RestoreResource.baseline_of(state))
        return
    ref = PolicyExemptionRef(state.change.id.lower(), str(properties.get("policyAssignmentId") or "").lower(),
                             state.change.scope.lower(), str(properties.get("exemptionCategory") or "").lower())
    yield Hit(evidence=evidence, detail="exemption created", restore=(DeletePolicyExemption(ref),))


# --- KV-POL-02 -----------------------------------------------------------------------------------


def _assignment_cases() -> list[Case]:
    from detectors.cases import KEY_VAULT_INITIATIVE_ID, RESOURCE_GROUP_ID, SUBSCRIPTION_ID, VAULT_ID, policy_assignment

    kind = {"type": POLICY_ASSIGNMENTS_TYPE, "names_key_vault": True}
    enforced = policy_assignment()
    other_group = f"{SUBSCRIPTION_ID}/resourceGroups/rg-sandbox"
    return [
        Case("set to DoNotEnforce", fires=True,
             resource={**kind, "before": enforced, "after": policy_assignment("DoNotEnforce")},
             restore=(RestoreResource(enforced["id"], POLICY_ASSIGNMENTS_TYPE,
                                      {"enforcementMode": "Default", "notScopes": []}),)),
        Case("vault's resource group added to notScopes", fires=True,
             resource={**kind, "before": enforced, "after": policy_assignment(not_scopes=(RESOURCE_GROUP_ID,))}),
        Case("the vault itself added to notScopes (spelled in lower case)", fires=True,
             resource={**kind, "before": enforced, "after": policy_assignment(not_scopes=(VAULT_ID.lower(),))}),
        Case("assignment deleted", fires=True, resource={**kind, "before": enforced, "after": None}),
        Case("initiative with a Key Vault member set to DoNotEnforce", fires=True,
             resource={**kind, "before": policy_assignment(definition=KEY_VAULT_INITIATIVE_ID),
                       "after": policy_assignment("DoNotEnforce", definition=KEY_VAULT_INITIATIVE_ID)}),
        Case("near miss: the policy names no Key Vault type or alias", fires=False,
             resource={**kind, "names_key_vault": False, "before": enforced,
                       "after": policy_assignment("DoNotEnforce")}),
        Case("near miss: another resource group added to notScopes", fires=False,
             resource={**kind, "before": enforced, "after": policy_assignment(not_scopes=(other_group,))}),
        Case("near miss: the vault was already in notScopes", fires=False,
             resource={**kind, "before": policy_assignment(not_scopes=(RESOURCE_GROUP_ID,)), "after": None}),
        Case("near miss: DoNotEnforce switched back to Default", fires=False,
             resource={**kind, "before": policy_assignment("DoNotEnforce"), "after": enforced}),
        Case("near miss: a new assignment", fires=False, resource={**kind, "after": enforced}),
        Case("near miss: the definition could not be read", fires=False,
             resource={**kind, "names_key_vault": None, "before": enforced, "after": None}),
    ]


def _loosened(state: ResourceState, vault_id: str) -> list[str]:
    """How the assignment stopped applying to the vault: deleted, not enforced, left out."""
    before, after = state.before, state.after
    if after is None:
        return ["deleted"]
    reasons = []
    if enforcement_mode(before).lower() != "donotenforce" and enforcement_mode(after).lower() == "donotenforce":
        reasons.append("enforcementMode set to DoNotEnforce")
    if excluding_scopes(after, vault_id):
        reasons.append("vault left out by notScopes " + ", ".join(excluding_scopes(after, vault_id)))
    return reasons


@rule(
    "KV-POL-02",
    title="Key Vault policy assignment over a protected vault deleted, not enforced or scoped out",
    severity="high",
    mitre=("T1562.001",),
    kind="diff",
    remediation="restore_policy_assignment",
    remediate_by_default=False,
    cases=_assignment_cases,
)
def policy_assignment_loosened(ctx: Context) -> Iterator[Hit]:
    """An assignment whose policy names Key Vault (a `type` condition or a `Microsoft.KeyVault`
    alias, in the definition or any member of its set) is the control that keeps the vaults it
    covers hardened. Deleted, set to `DoNotEnforce`, or given the vault (or a scope above it) in
    `notScopes`, it no longer refuses or reports what it was assigned for. Judged for the vaults it
    covered before the change. Restoring `enforcementMode` and `notScopes` needs
    `policyAssignments/write` (opt-in); a deleted assignment is never re-created (alert only)."""
    state = _state(ctx, ASSIGNMENTS)
    if state is None or state.before is None or state.names_key_vault is not True:
        return
    covered = [v for v in state.vaults if not excluding_scopes(state.before, v.id)]
    loosened = {v.id: _loosened(state, v.id) for v in covered}
    vaults = [vault_id for vault_id, reasons in loosened.items() if reasons]
    if not vaults:
        return
    reasons = list(dict.fromkeys(r for vault_id in vaults for r in loosened[vault_id]))
    properties = properties_of(state.current)
    evidence = {
        "assignmentId": state.change.id,
        "scope": state.change.scope,
        "policyDefinitionId": properties.get("policyDefinitionId"),
        "enforcementMode": {"before": enforcement_mode(state.before),
                            "after": enforcement_mode(state.after) if state.after is not None else None},
        "notScopes": {"before": not_scopes(state.before),
                      "after": not_scopes(state.after) if state.after is not None else None},
        "reasons": reasons,
        "vaults": vaults,
    }
    restore = RestoreResource(state.change.id, state.change.type, {
        "enforcementMode": enforcement_mode(state.before), "notScopes": not_scopes(state.before)},
        refused="a deleted policy assignment is never re-created: alert only" if state.after is None else "")
    yield Hit(evidence=evidence, detail="; ".join(reasons), restore=(restore,))
