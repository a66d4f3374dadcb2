"""What a protected subscription and its vaults need beyond their own configuration: Defender for
Key Vault on (KV-DEF-01) and every vault's audit logs going somewhere (KV-LOG-02). Both are sweep
judgements, read beyond the changed resource: `kvguard doctor` reports them today; the reconcile
sweep judges the same way. Each function returns the evidence when the gap is there, None when not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

STANDARD = "standard"
# What counts as the audit logs: the AuditEvent category, or a category group that holds it.
AUDIT_CATEGORIES = frozenset({"auditevent"})
AUDIT_GROUPS = frozenset({"audit", "alllogs"})
# The destinations a diagnostic setting may send to (REST names of its properties).
DESTINATIONS = ("workspaceId", "storageAccountId", "eventHubAuthorizationRuleId")


def defender_plan_gap(pricing: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The evidence when the `KeyVaults` pricing (its ARM JSON; None: there is none) is not the
    Standard tier: Free, or no plan at all, leaves Key Vault without Defender's threat detection."""
    properties = (pricing or {}).get("properties") or {}
    tier = properties.get("pricingTier")
    if isinstance(tier, str) and tier.strip().lower() == STANDARD:
        return None
    return {"pricing": (pricing or {}).get("id") or "KeyVaults", "pricingTier": tier,
            "subPlan": properties.get("subPlan"), "expected": "Standard"}


def audit_destinations(setting: Mapping[str, Any]) -> list[str]:
    """Where one diagnostic setting sends its audit logs: its destinations when it has an enabled
    AuditEvent (or `audit` / `allLogs` group) entry, else none."""
    properties = setting.get("properties") or {}
    logs = properties.get("logs") or []
    sends_audit = any(
        isinstance(entry, Mapping) and entry.get("enabled") is True
        and (str(entry.get("category") or "").lower() in AUDIT_CATEGORIES
             or str(entry.get("categoryGroup") or "").lower() in AUDIT_GROUPS)
        for entry in logs
    )
    if not sends_audit:
        return []
    return [str(properties[name]) for name in DESTINATIONS if properties.get(name)]


def audit_log_gap(
    settings: Sequence[Mapping[str, Any]], allowed_destinations: Sequence[str] = ()
) -> Mapping[str, Any] | None:
    """The evidence when no diagnostic setting sends the vault's audit logs to a workspace, storage
    account or event hub (one of `allowed_destinations` when that list is not empty; compared
    case-insensitively)."""
    allowed = {d.lower() for d in allowed_destinations}
    sending = {
        str(setting.get("name") or setting.get("id") or "?"): destinations
        for setting in settings
        if (destinations := [d for d in audit_destinations(setting) if not allowed or d.lower() in allowed])
    }
    if sending:
        return None
    evidence: dict[str, Any] = {"diagnostic_settings": sorted(str(s.get("name") or s.get("id") or "?")
                                                              for s in settings)}
    if allowed:
        evidence["allowed_destinations"] = sorted(allowed_destinations)
    evidence["found"] = ("no diagnostic setting" if not settings
                         else "no diagnostic setting sends AuditEvent (or the audit / allLogs group) "
                              + ("to an allowed destination" if allowed else "anywhere"))
    return evidence
