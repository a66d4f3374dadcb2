"""Protection rules (KV-PROT-*): the settings that keep a vault's contents recoverable and its access model intact."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from kvguard.detection import Case, Context, Hit, newly_true, rule
from kvguard.intents import EnablePurgeProtection, RestoreField
from kvguard.vault import VaultConfig

if TYPE_CHECKING:
    from kvguard.policy import Policy

# The `enabledFor*` switches: VaultConfig attribute -> ARM property, and who they let in.
PLATFORM_ACCESS: dict[str, str] = {
    "enabled_for_deployment": "enabledForDeployment",
    "enabled_for_template_deployment": "enabledForTemplateDeployment",
    "enabled_for_disk_encryption": "enabledForDiskEncryption",
}


def _without_purge_protection(config: VaultConfig, policy: Policy) -> dict[str, dict[str, Any]]:
    if config.enable_purge_protection is True:
        return {}
    return {"enablePurgeProtection": {"enablePurgeProtection": config.enable_purge_protection}}


def _purge_protection_off_cases() -> list[Case]:
    from detectors.cases import vault

    return [
        Case("new vault without purge protection", fires=True,
             before=None, after=vault(enablePurgeProtection=None), restore=(EnablePurgeProtection(),)),
        Case("new vault with purge protection explicitly off", fires=True,
             before=None, after=vault(enablePurgeProtection=False)),
        Case("new vault with purge protection (string true)", fires=False,
             before=None, after=vault(enablePurgeProtection="True")),
        Case("already unprotected in the baseline", fires=False,
             before=vault(enablePurgeProtection=None),
             after=vault(enablePurgeProtection=None, enabledForDeployment=True)),
        Case("purge protection switched on", fires=False,
             before=vault(enablePurgeProtection=None), after=vault()),
    ]


@rule(
    "KV-PROT-01",
    title="Purge protection not enabled",
    severity="medium",
    mitre=("T1490",),
    kind="posture",
    remediation="enable_purge_protection",
    remediate_by_default=False,
    cases=_purge_protection_off_cases,
)
def purge_protection_off(ctx: Context) -> Iterable[Hit]:
    """Without purge protection, whoever can delete the vault can also purge it, and every key,
    secret and certificate is gone for good: the ransom step. Remediation is opt-in only, because
    purge protection can never be switched off again once on."""
    return (Hit(evidence=hit.evidence, restore=(EnablePurgeProtection(),))
            for hit in newly_true(ctx, _without_purge_protection))


def _soft_delete_off(config: VaultConfig, policy: Policy) -> dict[str, dict[str, Any]]:
    # Absent is not off: vaults created before soft delete became mandatory carry no value at all.
    return {"softDelete": {"enableSoftDelete": False}} if config.enable_soft_delete is False else {}


def _retention_below_minimum(config: VaultConfig, policy: Policy) -> dict[str, dict[str, Any]]:
    days = config.soft_delete_retention_days
    if days is None or days >= policy.min_retention_days:
        return {}
    return {"retention": {"softDeleteRetentionInDays": days, "minimum": policy.min_retention_days}}


def _soft_delete_weakened_cases() -> list[Case]:
    from detectors.cases import vault

    return [
        Case("soft delete switched off", fires=True, before=vault(), after=vault(enableSoftDelete=False)),
        Case("retention cut to 7 days", fires=True, before=vault(), after=vault(softDeleteRetentionInDays=7)),
        Case("retention reduced while still above a lower minimum", fires=True,
             before=vault(), after=vault(softDeleteRetentionInDays=60), policy={"min_retention_days": 30}),
        Case("new vault with a short retention", fires=True,
             before=None, after=vault(softDeleteRetentionInDays=14)),
        Case("soft delete absent is not off", fires=False, before=vault(), after=vault(enableSoftDelete=None)),
        Case("retention raised", fires=False,
             before=vault(softDeleteRetentionInDays=7), after=vault(softDeleteRetentionInDays=30),
             policy={"min_retention_days": 7}),
        Case("retention at the minimum on a new vault", fires=False,
             before=None, after=vault(softDeleteRetentionInDays=30), policy={"min_retention_days": 30}),
        Case("short retention already in the baseline", fires=False,
             before=vault(softDeleteRetentionInDays=14), after=vault(softDeleteRetentionInDays="14")),
    ]


@rule(
    "KV-PROT-02",
    title="Soft delete weakened",
    severity="medium",
    mitre=("T1490",),
    kind="diff/posture",
    cases=_soft_delete_weakened_cases,
)
def soft_delete_weakened(ctx: Context) -> Iterator[Hit]:
    """Soft delete and its retention are the window in which a deleted vault or secret can still be
    recovered; switching it off or shortening the window prepares a destructive attack. A cut that
    is also below the policy minimum is one finding, with both facts in its evidence."""
    yield from (Hit(evidence=hit.evidence, detail="soft delete disabled") for hit in newly_true(ctx, _soft_delete_off))
    before_days = ctx.before.soft_delete_retention_days if ctx.before is not None else None
    after_days = ctx.after.soft_delete_retention_days if ctx.after is not None else None
    reduced = before_days is not None and after_days is not None and after_days < before_days
    below_minimum = bool(list(newly_true(ctx, _retention_below_minimum)))
    if reduced or below_minimum:
        yield Hit(
            evidence={
                "softDeleteRetentionInDays": {"before": before_days, "after": after_days},
                "minimum": ctx.policy.min_retention_days,
                "reduced": reduced,
                "belowMinimum": below_minimum,
            },
            detail=f"retention {after_days} days",
        )


def _rbac_switched_off_cases() -> list[Case]:
    from detectors.cases import vault

    return [
        Case("RBAC mode turned off", fires=True,
             before=vault(enableRbacAuthorization=True), after=vault(enableRbacAuthorization=False),
             restore=(RestoreField("enableRbacAuthorization", True),)),
        Case("RBAC mode turned off, values as strings", fires=True,
             before=vault(enableRbacAuthorization="True"), after=vault(enableRbacAuthorization="false")),
        Case("absent to off is no switch", fires=False,
             before=vault(enableRbacAuthorization=None), after=vault(enableRbacAuthorization=False)),
        Case("RBAC mode turned on", fires=False,
             before=vault(enableRbacAuthorization=False), after=vault(enableRbacAuthorization=True)),
        Case("first sight has no baseline to compare", fires=False,
             before=None, after=vault(enableRbacAuthorization=False)),
    ]


@rule(
    "KV-PROT-03",
    title="RBAC authorization switched off",
    severity="critical",
    mitre=("T1098", "T1548"),
    kind="diff",
    remediation="restore_settings",
    cases=_rbac_switched_off_cases,
)
def rbac_switched_off(ctx: Context) -> Iterator[Hit]:
    """With RBAC authorization off, the vault's access policies decide data access again, and
    anyone holding `vaults/write` (Contributor) can grant themselves every secret: a privilege
    escalation in one property."""
    change = ctx.diff.changed("enable_rbac_authorization") if ctx.diff is not None else None
    if change == (True, False):
        yield Hit(evidence={"property": "enableRbacAuthorization", "before": True, "after": False},
                  restore=(RestoreField("enableRbacAuthorization", True),))


def _platform_access_enabled_cases() -> list[Case]:
    from detectors.cases import vault

    return [
        Case("VM deployment may read secrets", fires=True, before=vault(), after=vault(enabledForDeployment=True),
             restore=(RestoreField("enabledForDeployment", False),)),
        Case("one switch on and another off: only the one turned on goes back", fires=True,
             before=vault(enabledForTemplateDeployment=True), after=vault(enabledForDiskEncryption=True),
             restore=(RestoreField("enabledForDiskEncryption", False),)),
        Case("template and disk encryption, from absent", fires=True,
             before=vault(enabledForTemplateDeployment=None, enabledForDiskEncryption=None),
             after=vault(enabledForTemplateDeployment=True, enabledForDiskEncryption="true")),
        Case("switched off", fires=False,
             before=vault(enabledForDeployment=True), after=vault(enabledForDeployment=False)),
        Case("already on in the baseline", fires=False,
             before=vault(enabledForDiskEncryption=True), after=vault(enabledForDiskEncryption="True")),
        Case("first sight has no baseline to compare", fires=False,
             before=None, after=vault(enabledForTemplateDeployment=True)),
    ]


@rule(
    "KV-PROT-04",
    title="Azure platform access to secrets enabled",
    severity="medium",
    mitre=("T1555.006",),
    kind="diff",
    remediation="restore_settings",
    cases=_platform_access_enabled_cases,
)
def platform_access_enabled(ctx: Context) -> Iterator[Hit]:
    """The `enabledFor*` switches let Azure itself fetch secrets on a deployer's behalf: VMs
    (certificates as VM secrets), ARM templates (`reference()` of any secret) and Azure Disk
    Encryption. Each is a path to the vault's secrets that bypasses its access policies."""
    if ctx.diff is None or ctx.before is None or ctx.after is None:
        return
    for attribute, arm_name in PLATFORM_ACCESS.items():
        change = ctx.diff.changed(attribute)
        if change is not None and change[0] is not True and change[1] is True:
            yield Hit(evidence={"property": arm_name, "before": change[0], "after": True}, detail=arm_name,
                      restore=_platform_access_restored(ctx.before, ctx.after))


def _platform_access_restored(before: VaultConfig, after: VaultConfig) -> tuple[RestoreField, ...]:
    """Every `enabledFor*` switch the change turned on, back off (absent in the baseline means
    off). A switch turned off in the same change stays off: a revert only takes away what was
    added, never gives Azure's platform back a path to the secrets someone just closed."""
    return tuple(RestoreField(arm_name, False) for attribute, arm_name in PLATFORM_ACCESS.items()
                 if getattr(after, attribute) is True and getattr(before, attribute) is not True)


def _tenant_or_sku_changed_cases() -> list[Case]:
    from detectors.cases import OTHER_TENANT, TENANT, vault

    return [
        Case("moved to another tenant", fires=True, before=vault(), after=vault(tenantId=OTHER_TENANT)),
        Case("premium downgraded to standard", fires=True,
             before=vault(sku={"family": "A", "name": "Premium"}),
             after=vault(sku={"family": "A", "name": "standard"})),
        Case("tenant id in other case", fires=False,
             before=vault(), after=vault(tenantId=TENANT.upper())),
        Case("standard upgraded to premium", fires=False,
             before=vault(), after=vault(sku={"family": "A", "name": "premium"})),
        Case("first sight has no baseline to compare", fires=False,
             before=None, after=vault(tenantId=OTHER_TENANT)),
    ]


@rule(
    "KV-PROT-05",
    title="Vault tenant changed or SKU downgraded",
    severity="high",
    mitre=("T1537",),
    kind="diff",
    cases=_tenant_or_sku_changed_cases,
)
def tenant_or_sku_changed(ctx: Context) -> Iterator[Hit]:
    """Moving a vault to another tenant hands it to another directory's admins (and drops every
    access policy's meaning); a premium-to-standard downgrade moves keys out of HSM protection.
    Neither happens in normal operation."""
    if ctx.diff is None:
        return
    tenant = ctx.diff.changed("tenant_id")
    if tenant is not None and tenant[0] is not None and tenant[1] is not None:
        yield Hit(evidence={"property": "tenantId", "before": tenant[0], "after": tenant[1]}, detail="tenant changed")
    sku = ctx.diff.changed("sku_name")
    if sku == ("premium", "standard"):
        yield Hit(evidence={"property": "sku.name", "before": sku[0], "after": sku[1]}, detail="SKU downgraded")
