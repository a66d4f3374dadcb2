"""Audit-log rules (KV-LOG-*): a vault's diagnostic settings switched off, and vaults whose audit
logs go nowhere.

Before reading a vault's secrets an intruder blinds the defenders: without a diagnostic setting
that sends the `AuditEvent` category (or the `audit` / `allLogs` group) somewhere, no data-plane
access reaches the SIEM. Metrics are no audit trail, so changes to them are never a finding.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from detectors.coverage import audit_log_gap
from kvguard.detection import Case, Context, Hit, rule
from kvguard.ids import vault_key
from kvguard.intents import RestoreResource

DIAGNOSTIC_SETTINGS = "microsoft.insights/diagnosticsettings"
# Where a diagnostic setting can send logs (the REST names of its destination properties).
DESTINATION_KEYS = ("workspaceId", "storageAccountId", "eventHubAuthorizationRuleId", "marketplacePartnerId")
AUDIT_CATEGORY = "auditevent"
AUDIT_GROUPS = ("audit", "alllogs")


def _properties(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    properties = doc.get("properties")
    return properties if isinstance(properties, Mapping) else {}


def sends_audit_logs(setting: Mapping[str, Any]) -> bool:
    """Whether the setting has the vault's audit logs enabled (by category or category group)."""
    for entry in _properties(setting).get("logs") or []:
        if not isinstance(entry, Mapping) or entry.get("enabled") is not True:
            continue
        if str(entry.get("category") or "").lower() == AUDIT_CATEGORY:
            return True
        if str(entry.get("categoryGroup") or "").lower() in AUDIT_GROUPS:
            return True
    return False


def log_destinations(setting: Mapping[str, Any]) -> list[str]:
    """The destinations the setting sends to, as lower-cased resource ids (an event hub named by
    its authorization rule and hub name)."""
    properties = _properties(setting)
    found = []
    for key in DESTINATION_KEYS:
        value = properties.get(key)
        if isinstance(value, str) and value.strip():
            hub = properties.get("eventHubName") if key == "eventHubAuthorizationRuleId" else None
            found.append(vault_key(value) + (f"|{str(hub).lower()}" if hub else ""))
    return found


def is_allowed_destination(destination: str, allowed: Sequence[str]) -> bool:
    """Empty `allowed` admits every destination; an event hub is allowed by its rule id alone."""
    return not allowed or destination.split("|", 1)[0] in {vault_key(a) for a in allowed}


def moved_outside(before: Mapping[str, Any], after: Mapping[str, Any], allowed: Sequence[str]) -> list[str]:
    """The destinations `after` sends to that `before` did not and that the policy does not
    allow. With `allowed` empty kvguard cannot tell the SOC's workspace from an intruder's, so the
    baseline's destinations (accepted at onboarding or from an approved caller) are the allowed
    set: any other destination is a move away from them."""
    known = log_destinations(before)
    return [d for d in log_destinations(after) if d not in known and (not allowed or not is_allowed_destination(
        d, allowed))]


def restore_refusal(before: Mapping[str, Any], allowed: Sequence[str]) -> str:
    """Why the baseline's copy of a setting must not be PUT back: it sends to a destination
    outside a non-empty `allowed_log_destinations` (a baseline accepted before the list was set,
    or poisoned); empty when it may be. A restore never writes a value outside the policy."""
    outside = [d for d in log_destinations(before) if not is_allowed_destination(d, allowed)]
    if not outside:
        return ""
    return (f"not restored: the baseline sends audit logs to {', '.join(outside)}, outside "
            "allowed_log_destinations (alert only)")


def _setting_evidence(setting: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if setting is None:
        return None
    return {"auditLogs": sends_audit_logs(setting), "destinations": log_destinations(setting)}


def _audit_logs_cut_cases() -> list[Case]:
    from detectors.cases import FOREIGN_WORKSPACE, OTHER_WORKSPACE, WORKSPACE, diagnostic_setting

    allowed = {"allowed_log_destinations": [WORKSPACE, OTHER_WORKSPACE]}
    return [
        Case("audit setting deleted", fires=True, before=diagnostic_setting(), after=None,
             restore=(RestoreResource(diagnostic_setting()["id"], "Microsoft.Insights/diagnosticSettings",
                                      diagnostic_setting()["properties"]),)),
        Case("audit group disabled", fires=True, before=diagnostic_setting(),
             after=diagnostic_setting(logs=({"categoryGroup": "audit", "enabled": False},))),
        Case("AuditEvent category removed", fires=True,
             before=diagnostic_setting(logs=({"category": "AuditEvent", "enabled": True},)),
             after=diagnostic_setting(logs=({"category": "AzurePolicyEvaluationDetails", "enabled": True},))),
        Case("destination moved outside allowed_log_destinations", fires=True, before=diagnostic_setting(),
             after=diagnostic_setting(workspaceId=FOREIGN_WORKSPACE), policy=allowed),
        Case("near miss: metrics switched off only", fires=False, before=diagnostic_setting(),
             after=diagnostic_setting(metrics_enabled=False)),
        Case("near miss: a new extra diagnostic setting", fires=False, before=None,
             after=diagnostic_setting(name="siem-copy", workspaceId=FOREIGN_WORKSPACE)),
        Case("near miss: destination moved inside allowed_log_destinations", fires=False,
             before=diagnostic_setting(), after=diagnostic_setting(workspaceId=OTHER_WORKSPACE), policy=allowed),
        Case("destination moved away from the baseline's while allowed_log_destinations is empty", fires=True,
             before=diagnostic_setting(), after=diagnostic_setting(workspaceId=FOREIGN_WORKSPACE),
             restore=(RestoreResource(diagnostic_setting()["id"], "Microsoft.Insights/diagnosticSettings",
                                      diagnostic_setting()["properties"]),)),
        Case("near miss: categories changed, destination kept, allowed_log_destinations empty", fires=False,
             before=diagnostic_setting(), after=diagnostic_setting(logs=({"categoryGroup": "allLogs",
                                                                          "enabled": True},))),
        Case("near miss: a metrics-only setting deleted", fires=False,
             before=diagnostic_setting(name="metrics", logs=()), after=None),
        Case("near miss: allLogs replaces the audit group", fires=False, before=diagnostic_setting(),
             after=diagnostic_setting(logs=({"categoryGroup": "allLogs", "enabled": True},))),
    ]


@rule(
    "KV-LOG-01",
    title="Vault audit logging switched off",
    severity="high",
    mitre=("T1562.008",),
    kind="diff",
    remediation="restore_diagnostic_setting",
    cases=_audit_logs_cut_cases,
)
def audit_logs_cut(ctx: Context) -> Iterator[Hit]:
    """A diagnostic setting that sent the vault's audit logs was deleted, stopped sending them, or
    now sends them to a destination outside `allowed_log_destinations` (with the list empty: to
    any destination the baseline did not send to): the usual first move before reading secrets
    unseen (deleting or disabling audit logs fires whatever the destination). The restore intent
    is refused when the baseline itself names a destination outside a non-empty list."""
    state = ctx.resource
    if state is None or state.change.type.lower() != DIAGNOSTIC_SETTINGS or state.before is None:
        return
    before, after = state.before, state.after
    if not sends_audit_logs(before):
        return  # it carried no audit trail: nothing was switched off
    evidence = {"setting": state.change.id, "before": _setting_evidence(before), "after": _setting_evidence(after)}
    allowed = ctx.policy.allowed_log_destinations
    refused = restore_refusal(before, allowed)
    restore = tuple(replace(intent, refused=refused) for intent in RestoreResource.baseline_of(state))
    if refused:
        evidence["restoreRefused"] = refused
    if after is None:
        yield Hit(evidence=evidence, detail="diagnostic setting deleted", restore=restore)
    elif not sends_audit_logs(after):
        yield Hit(evidence=evidence, detail="audit logs disabled", restore=restore)
    else:
        outside = moved_outside(before, after, allowed)
        if outside or not log_destinations(after):
            detail = ("audit logs sent outside allowed_log_destinations" if allowed
                      else "audit logs sent away from the baseline's destination")
            yield Hit(evidence={**evidence, "outside": outside}, detail=detail, restore=restore)


def _audit_logs_nowhere_cases() -> list[Case]:
    from detectors.cases import FOREIGN_WORKSPACE, WORKSPACE, diagnostic_setting

    return [
        Case("no diagnostic setting at all", fires=True, sweep=()),
        Case("only a metrics setting", fires=True, sweep=(diagnostic_setting(name="metrics", logs=()),)),
        Case("audit logs only to a destination not allowed", fires=True,
             sweep=(diagnostic_setting(workspaceId=FOREIGN_WORKSPACE),),
             policy={"allowed_log_destinations": [WORKSPACE]}),
        Case("near miss: audit logs to the SOC workspace", fires=False, sweep=(diagnostic_setting(),)),
        Case("near miss: one of two settings sends audit logs", fires=False,
             sweep=(diagnostic_setting(name="metrics", logs=()), diagnostic_setting())),
        Case("near miss: not a sweep", fires=False, before=None, after=None),
    ]


@rule(
    "KV-LOG-02",
    title="Vault audit logs go nowhere",
    severity="medium",
    mitre=("T1562.008",),
    kind="sweep",
    cases=_audit_logs_nowhere_cases,
)
def audit_logs_nowhere(ctx: Context) -> Iterator[Hit]:
    """A protected vault none of whose diagnostic settings sends its audit logs (to an allowed
    destination, when `allowed_log_destinations` is set): reads of its secrets leave no trail.
    Judged by a sweep, which lists all of the vault's settings; one event sees only one."""
    if ctx.sweep is None:
        return
    settings = ctx.sweep.of_type("Microsoft.Insights/diagnosticSettings")
    gap = audit_log_gap(settings, ctx.policy.allowed_log_destinations)
    if gap is not None:
        yield Hit(evidence={"vault": ctx.sweep.vault.id, **gap})
