"""restore_settings and enable_purge_protection: vault flags back to what they were."""

from __future__ import annotations

from typing import Any

from kvguard.intents import EnablePurgeProtection, RestoreField
from remediation.base import Operation, PlanInput, handler, patch_operation


@handler("restore_settings", kind="remediation", permission="Microsoft.KeyVault/vaults/write",
         accepts=(RestoreField,))
def restore_settings(data: PlanInput) -> list[Operation]:
    """PATCH the vault flags the findings' intents name (enableRbacAuthorization, the enabledFor*
    switches) back to their baseline values."""
    if data.before is None or data.after is None:
        return []
    patch: dict[str, Any] = {field.path: field.value for _, field in data.restores(RestoreField)}
    if not patch:
        return []
    settings = ", ".join(f"{k}={str(v).lower()}" for k, v in sorted(patch.items()))
    return [patch_operation("restore_settings", data.after, patch, f"set {settings} on {data.after.name}",
                            data.rules)]


@handler(
    "enable_purge_protection", kind="remediation", permission="Microsoft.KeyVault/vaults/write", irreversible=True,
    accepts=(EnablePurgeProtection,),
)
def enable_purge_protection(data: PlanInput) -> list[Operation]:
    """Turn purge protection on. It can never be turned off again, so this runs only when the
    policy opts in (`rules: {KV-PROT-01: {remediate: true}}`)."""
    if data.after is None or data.after.enable_purge_protection is True \
            or not data.restores(EnablePurgeProtection):
        return []
    description = f"set enablePurgeProtection=true on {data.after.name} (irreversible)"
    return [patch_operation("enable_purge_protection", data.after, {"enablePurgeProtection": True}, description,
                            data.rules)]
