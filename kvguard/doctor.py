"""`kvguard doctor`'s judgements: is a subscription protected? Each check is a pure function of
what was read (the reads are the entry command's, through the adapters) and gives a `Check`: what
is wrong, and the exact command that fixes it.

The event subscription is judged by `kvguard.deployment` (the reconcile timer's KV-SELF-02 check),
the Defender plan and the audit logs by `detectors.coverage` (KV-DEF-01, KV-LOG-02): one copy of
each rule.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from detectors.coverage import audit_log_gap, defender_plan_gap
from detectors.deny import covers_vault, deny_blocks
from kvguard.azure_policy import enforcement_mode, excluding_scopes, properties_of
from kvguard.deployment import Delivery, event_subscription_problems, is_event_subscription
from kvguard.ids import vault_key

REDEPLOY = "azd provision   # or: az deployment sub create --location <region> --template-file infra/main.bicep " \
           "--parameters infra/main.parameters.json"
SECURITY_ADMIN = "Security Admin"
# The reads kvguard's identity makes beside its handlers' writes: vaults (every event, the
# reconcile timer) and its own event subscription (the KV-SELF-02 check).
READS = ("Microsoft.KeyVault/vaults/read", "Microsoft.EventGrid/systemTopics/eventSubscriptions/read")
ASSESSMENT_WRITE = "Microsoft.Security/assessments/write"
# The role that grants each need, for the fixing command (infra/modules/rbac-subscription.bicep).
GRANTED_BY = {
    "microsoft.keyvault/vaults/read": "Reader",
    "microsoft.eventgrid/systemtopics/eventsubscriptions/read": "Reader",
    ASSESSMENT_WRITE.lower(): "Security Assessment Contributor",
    "microsoft.authorization/roleassignments/delete": "Role Based Access Control Administrator",
}
REMEDIATOR = "kvguard remediator (<environment>)"


@dataclass(frozen=True)
class Check:
    """One finding of the doctor: `ok`, or what is wrong and the command that fixes it."""

    subscription: str
    check: str
    ok: bool
    detail: str
    fix: str | None = None
    rule: str | None = None
    resource: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"subscription": self.subscription, "check": self.check, "ok": self.ok, "detail": self.detail,
                "fix": self.fix, "rule": self.rule, "resource": self.resource}


def defender_check(subscription: str, pricing: Mapping[str, Any] | None) -> Check:
    gap = defender_plan_gap(pricing)
    if gap is None:
        sub_plan = ((pricing or {}).get("properties") or {}).get("subPlan")
        return Check(subscription, "defender", True, f"Defender for Key Vault: Standard ({sub_plan or 'no sub-plan'})")
    return Check(
        subscription, "defender", False,
        f"Defender for Key Vault is {gap['pricingTier'] or 'not set'}, not Standard: no threat detection on the vaults",
        f"kvguard doctor --subscription {subscription} --enable-defender   # or: az security pricing create "
        f"--name KeyVaults --tier Standard --subplan PerKeyVault --subscription {subscription} "
        f"(needs the {SECURITY_ADMIN} role)",
        rule="KV-DEF-01", resource=f"/subscriptions/{subscription}/providers/Microsoft.Security/pricings/KeyVaults",
    )


def own_event_subscriptions(subscription: str, own_resource_ids: Iterable[str]) -> list[str]:
    """kvguard's own event subscriptions (policy `own_resource_ids`) in one subscription."""
    prefix = f"/subscriptions/{subscription.lower()}/"
    return [r for r in own_resource_ids if is_event_subscription(r) and vault_key(r).startswith(prefix)]


def event_subscription_check(subscription: str, resource_id: str | None, body: Mapping[str, Any] | None,
                             delivery: Delivery, operations: Sequence[str]) -> Check:
    """`resource_id` None: the settings name no event subscription of kvguard in this subscription;
    `delivery` is where kvguard deployed its events to go (`kvguard.deployment.delivery_of`),
    `operations` what this subscription was deployed to pass (`kvguard.deployment.deployed_operations`)."""
    if resource_id is None:
        return Check(subscription, "event subscription", False,
                     "KVGUARD_OWN_RESOURCE_IDS names no event subscription of kvguard in this subscription: "
                     "either it was never deployed here or the app setting lacks it", REDEPLOY)
    problems = event_subscription_problems(body, delivery, operations)
    if not problems:
        return Check(subscription, "event subscription", True, "as kvguard deploys it: every event type and "
                     f"the {len(operations)} operations it is deployed to pass to kvguard's own function, "
                     "retried for 24 hours, dead letters kept",
                     resource=resource_id)
    return Check(subscription, "event subscription", False, "; ".join(problems), REDEPLOY, rule="KV-SELF-02",
                 resource=resource_id)


def needed_actions(remediation_permissions: Iterable[str], defender: bool) -> list[str]:
    """What kvguard's identity must be allowed to do: its reads, each remediation handler's
    declared permission, and writing Defender assessments when that sink is on."""
    needed = {*READS, *(p for p in remediation_permissions if p.lower().startswith("microsoft."))}
    if defender:
        needed.add(ASSESSMENT_WRITE)
    return sorted(needed, key=str.lower)


def granted(definition: Mapping[str, Any], action: str) -> bool:
    """Whether a role definition (its ARM JSON) allows `action`: some permission block lists it
    (wildcards as ARM reads them) and does not take it away in its notActions."""
    for block in (definition.get("properties") or {}).get("permissions") or []:
        allowed = [str(a).lower() for a in block.get("actions") or []]
        denied = [str(a).lower() for a in block.get("notActions") or []]
        if any(fnmatch.fnmatchcase(action.lower(), a) for a in allowed) and not any(
                fnmatch.fnmatchcase(action.lower(), d) for d in denied):
            return True
    return False


def role_check(
    subscription: str, principal_ids: Sequence[str], definitions: Sequence[Mapping[str, Any]], needed: Sequence[str]
) -> Check:
    """`definitions`: the role definitions of every assignment of kvguard's identity that covers
    the subscription."""
    if not principal_ids:
        return Check(subscription, "role assignments", False,
                     "KVGUARD_OWN_PRINCIPAL_IDS is not set: kvguard's identity is unknown", REDEPLOY)
    missing = [action for action in needed if not any(granted(d, action) for d in definitions)]
    if not missing:
        roles = sorted({str((d.get("properties") or {}).get("roleName") or d.get("name")) for d in definitions})
        return Check(subscription, "role assignments", True, f"{', '.join(roles)} grant what the handlers need")
    principal = principal_ids[0]
    fixes = sorted({GRANTED_BY.get(action.lower(), REMEDIATOR) for action in missing})
    commands = "; ".join(
        f"az role assignment create --assignee-object-id {principal} --assignee-principal-type ServicePrincipal "
        f"--role \"{role}\" --scope /subscriptions/{subscription}" for role in fixes
    )
    return Check(subscription, "role assignments", False,
                 f"kvguard's identity {principal} may not: {', '.join(missing)}", f"{REDEPLOY}; or {commands}")


def audit_log_checks(
    subscription: str, vault_settings: Mapping[str, Sequence[Mapping[str, Any]]], allowed: Sequence[str] = ()
) -> list[Check]:
    """One failed check per vault whose audit logs go nowhere (KV-LOG-02), or one passed check."""
    failed = []
    for vault_id, settings in vault_settings.items():
        gap = audit_log_gap(settings, allowed)
        if gap is not None:
            failed.append(Check(
                subscription, "audit logs", False, f"{vault_id.rsplit('/', 1)[-1]}: {gap['found']}",
                f"az monitor diagnostic-settings create --name kvguard-audit --resource {vault_id} "
                "--workspace <Log Analytics workspace id> --logs '[{\"categoryGroup\":\"audit\",\"enabled\":true}]'",
                rule="KV-LOG-02", resource=vault_id,
            ))
    if failed:
        return failed
    return [Check(subscription, "audit logs", True, f"all {len(vault_settings)} vault(s) send their audit logs")]


def deny_setting_checks(subscription: str, vault_denies: Mapping[str, Sequence[Mapping[str, Any]]],
                        rights: Mapping[str, str], own_ids: Sequence[str]) -> list[Check]:
    """The deny settings (deny assignments, deployment stacks' deny settings; their ARM JSON as
    listed at each vault) that cover each vault: one failed check per vault where one takes from
    kvguard's identity an action a handler the policy runs needs (KV-DENY-01, the same judgement),
    else one passed check naming what covers the vaults."""
    failed, covering = [], 0
    for vault_id, denies in vault_denies.items():
        over = [d for d in denies if covers_vault(d, vault_id)]
        covering += len(over)
        blocking = {str(d.get("id")): deny_blocks(d, vault_id, rights, own_ids) for d in over}
        blocking = {deny_id: taken for deny_id, taken in blocking.items() if taken}
        if not blocking:
            continue
        found = "; ".join(f"{deny_id} denies {', '.join(f'{h} ({a})' for h, a in sorted(taken.items()))}"
                          for deny_id, taken in blocking.items())
        failed.append(Check(
            subscription, "deny settings", False,
            f"{vault_id.rsplit('/', 1)[-1]}: {found}: those reverts fail with 403",
            "have the deny's owner exclude kvguard's identity (a stack: denySettings.excludedPrincipals, e.g. "
            f"az stack group create … --deny-settings-excluded-principals {' '.join(own_ids) or '<principal id>'}; "
            "a deny assignment: its excludePrincipals, set by the stack or managed application that made it)",
            rule="KV-DENY-01", resource=vault_id,
        ))
    if failed:
        return failed
    return [Check(subscription, "deny settings", True,
                  f"{covering} deny setting(s) cover the {len(vault_denies)} vault(s); none takes an action "
                  "kvguard's handlers need")]


# One policy assignment over a vault, and whether its definition (or a member of its set) names Key
# Vault (None: the definition could not be read).
CoveringAssignment = tuple[Mapping[str, Any], bool | None]


def policy_assignment_checks(subscription: str,
                             vault_assignments: Mapping[str, Sequence[CoveringAssignment]]) -> list[Check]:
    """One check per vault naming the policy assignments that cover it: the Key Vault ones first
    (enforced or not), then the others. Failed when a Key Vault assignment over the vault is not
    enforced or leaves the vault out by `notScopes` (what KV-POL-02 alerts on when it happens)."""
    checks = []
    for vault_id, covering in vault_assignments.items():
        name = vault_id.rsplit("/", 1)[-1]
        key_vault, weak, others = [], [], []
        for assignment, names_key_vault in covering:
            label = str(assignment.get("name") or str(assignment.get("id", "")).rsplit("/", 1)[-1])
            if names_key_vault is not True:
                others.append(label if names_key_vault is False else f"{label} (definition unreadable)")
                continue
            left_out = excluding_scopes(assignment, vault_id)
            if enforcement_mode(assignment).lower() == "donotenforce":
                weak.append((assignment, label, "not enforced (DoNotEnforce)"))
            elif left_out:
                weak.append((assignment, label, "leaves the vault out (notScopes " + ", ".join(left_out) + ")"))
            else:
                key_vault.append(f"{label} (enforced)")
        found = "; ".join(filter(None, [
            "Key Vault policy: " + ", ".join(key_vault + [f"{label} {why}" for _, label, why in weak])
            if key_vault or weak else "no Key Vault policy assignment covers it",
            "other: " + ", ".join(others) if others else ""]))
        if not weak:
            checks.append(Check(subscription, "policy assignments", True, f"{name}: {found}", resource=vault_id))
            continue
        fixes = [f"az policy assignment update --name {label} --scope {properties_of(a).get('scope') or '<scope>'} "
                 + ("--enforcement-mode Default" if "DoNotEnforce" in why else "--not-scopes <without the vault>")
                 for a, label, why in weak]
        checks.append(Check(subscription, "policy assignments", False, f"{name}: {found}", "; ".join(fixes),
                            rule="KV-POL-02", resource=vault_id))
    return checks or [Check(subscription, "policy assignments", True, "no vaults")]


def state_check(error: str | None, backend: str) -> Check:
    if error is None:
        return Check("*", "state store", True, f"{backend} state store reachable")
    fix = ("set KVGUARD_TABLES_CONNECTION or AzureWebJobsStorage__tableServiceUri, and grant the identity "
           "\"Storage Table Data Contributor\" on the storage account (azd provision does both)"
           if backend == "tables" else "check KVGUARD_SQLITE_PATH: its directory must be writable")
    return Check("*", "state store", False, f"{backend} state store unreachable: {error}", fix)


Unreadable = Literal["cannot sign in", "refused", "no answer", "failed"]


def no_state_check(path: str) -> Check:
    """The SQLite state file is not there: nothing has been recorded where the settings point."""
    return Check("*", "state store", False,
                 f"no sqlite state file at {path}: kvguard has recorded nothing there (no baseline to compare with)",
                 "kvguard baseline --subscription <id>   # seeds it; or point KVGUARD_SQLITE_PATH at the state "
                 "file, or KVGUARD_STATE_BACKEND=tables with KVGUARD_TABLES_CONNECTION at the app's store")


def unreadable_check(subscription: str, check: str, error: str, why: Unreadable = "failed",
                     role: str | None = None) -> Check:
    """A check whose reads failed, saying which of three things happened: nobody could sign in
    (no role or retry helps), ARM refused the signed-in identity (the role that reads, or `role`
    when the read named it), or ARM did not answer (try again); "failed" for any other refusal."""
    role = role or ("Security Reader" if check == "defender" else "Reader")
    grant = (f"run the doctor as someone with {role} on the subscription: az role assignment create "
             f"--assignee <your object id> --role \"{role}\" --scope /subscriptions/{subscription}")
    if why == "cannot sign in":
        return Check(subscription, check, False, f"cannot sign in: {error}",
                     "az login   # or set AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET")
    if why == "refused":
        extra = " (Security Admin to --enable-defender)" if check == "defender" and role != SECURITY_ADMIN else ""
        return Check(subscription, check, False, f"signed in but refused (needs {role}): {error}", grant + extra)
    if why == "no answer":
        return Check(subscription, check, False, f"ARM did not answer: {error}",
                     "try again when ARM answers (KVGUARD_ARM_ENDPOINT names the endpoint)")
    return Check(subscription, check, False, f"could not be checked: {error}", grant)


def all_well(checks: Iterable[Check]) -> bool:
    return all(check.ok for check in checks)
