"""restore_settings and enable_purge_protection: vault flags back to what they were."""

from __future__ import annotations

from typing import Any

from remediation.base import Operation, PlanInput, handler, patch_operation

# Rule -> the ARM properties it restores.
RESTORED = {
    "KV-PROT-03": ("enableRbacAuthorization",),
    "KV-PROT-04": ("enabledForDeployment", "enabledForTemplateDeployment", "enabledForDiskEncryption"),
}
# ARM property -> its normalised VaultConfig attribute (ARM JSON may say "true"/"False" as text).
_ATTRIBUTE = {
    "enableRbacAuthorization": "enable_rbac_authorization",
    "enabledForDeployment": "enabled_for_deployment",
    "enabledForTemplateDeployment": "enabled_for_template_deployment",
    "enabledForDiskEncryption": "enabled_for_disk_encryption",
}


@handler("restore_settings", kind="remediation", permission="Microsoft.KeyVault/vaults/write")
def restore_settings(data: PlanInput) -> list[Operation]:
    """PATCH enableRbacAuthorization and the enabledFor* flags that a flagged change altered back
    to their baseline values (absent in the baseline means off)."""
    if data.before is None or data.after is None:
        return []
    fired = {f.rule for f in data.findings}
    patch: dict[str, Any] = {}
    for rule, names in RESTORED.items():
        if rule not in fired:
            continue
        for name in names:
            old = bool(getattr(data.before, _ATTRIBUTE[name]))
            if bool(getattr(data.after, _ATTRIBUTE[name])) != old:
                patch[name] = old
    if not patch:
        return []
    settings = ", ".join(f"{k}={str(v).lower()}" for k, v in sorted(patch.items()))
    return [patch_operation("restore_settings", data.after, patch, f"set {settings} on {data.after.name}",
                            fired & set(RESTORED))]


@handler(
    "enable_purge_protection", kind="remediation", permission="Microsoft.KeyVault/vaults/write", irreversible=True
)
def enable_purge_protection(data: PlanInput) -> list[Operation]:
    """Turn purge protection on. It can never be turned off again, so this runs only when the
    policy opts in (`rules: {KV-PROT-01: {remediate: true}}`)."""
    if data.after is None or data.after.enable_purge_protection is True:
        return []
    description = f"set enablePurgeProtection=true on {data.after.name} (irreversible)"
    return [patch_operation("enable_purge_protection", data.after, {"enablePurgeProtection": True}, description,
                            ["KV-PROT-01"])]
