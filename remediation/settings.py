"""restore_settings and enable_purge_protection: vault flags back to what they were."""

from __future__ import annotations

from typing import Any

from remediation.base import Operation, PlanInput, handler

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
    after_props = data.after.raw.get("properties", {})
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
    return [
        Operation(
            handler="restore_settings",
            kind="patch",
            vault_id=data.after.id,
            description=f"set {settings} on {data.after.name}",
            target=patch,
            before={k: after_props.get(k) for k in patch},
            rules=tuple(sorted(fired & set(RESTORED))),
        )
    ]


@handler(
    "enable_purge_protection", kind="remediation", permission="Microsoft.KeyVault/vaults/write", irreversible=True
)
def enable_purge_protection(data: PlanInput) -> list[Operation]:
    """Turn purge protection on. It can never be turned off again, so this runs only when the
    policy opts in (`rules: {KV-PROT-01: {remediate: true}}`)."""
    if data.after is None or data.after.enable_purge_protection is True:
        return []
    return [
        Operation(
            handler="enable_purge_protection",
            kind="patch",
            vault_id=data.after.id,
            description=f"set enablePurgeProtection=true on {data.after.name} (irreversible)",
            target={"enablePurgeProtection": True},
            before={"enablePurgeProtection": data.after.raw.get("properties", {}).get("enablePurgeProtection")},
            rules=("KV-PROT-01",),
        )
    ]
