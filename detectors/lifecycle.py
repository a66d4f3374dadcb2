"""Lifecycle rules (KV-LIFE-*): vaults deleted, purged and recovered."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kvguard.detection import Case, Context, Hit, rule


def _event_evidence(ctx: Context) -> dict[str, Any]:
    """The envelope facts a lifecycle finding rests on: what was done, to which vault, by whom, when."""
    event = ctx.event
    return {
        "operation": event.operation,
        "status": event.status,
        "vaultId": event.vault.id if event.vault is not None else None,
        "caller": event.caller.describe(),
        "callerId": event.caller.id,
        "time": event.time.isoformat() if event.time is not None else None,
        "eventId": event.id,
    }


def _vault_deleted_cases() -> list[Case]:
    from detectors.cases import DELETED_VAULT_ID, vault

    return [
        Case("vault deleted", fires=True, before=vault(), after=None, event={"kind": "delete"}),
        Case("unprotected vault deleted", fires=True,
             before=vault(enablePurgeProtection=None), after=None, event={"kind": "delete"}),
        Case("failed delete", fires=False, before=vault(), after=vault(), event={"kind": "delete", "succeeded": False}),
        Case("an ordinary write", fires=False, before=vault(), after=vault(), event={"kind": "write"}),
        Case("a purge is KV-LIFE-02's", fires=False, before=None, after=None,
             event={"kind": "purge", "vault_id": DELETED_VAULT_ID}),
    ]


@rule(
    "KV-LIFE-01",
    title="Vault deleted",
    severity="high",
    mitre=("T1485",),
    kind="event",
    cases=_vault_deleted_cases,
)
def vault_deleted(ctx: Context) -> Iterator[Hit]:
    """Deleting a vault stops every application that depends on it and is the first half of
    destroying its material for good; the evidence says whether purge protection still stands in
    the way (from the last configuration kvguard accepted)."""
    if ctx.event.kind == "delete" and ctx.event.succeeded:
        yield Hit(evidence={
            **_event_evidence(ctx),
            "enablePurgeProtection": ctx.before.enable_purge_protection if ctx.before is not None else None,
            "softDeleteRetentionInDays": ctx.before.soft_delete_retention_days if ctx.before is not None else None,
        })


def _vault_purged_cases() -> list[Case]:
    from detectors.cases import DELETED_VAULT_ID, vault

    return [
        Case("deleted vault purged", fires=True, before=None, after=None,
             event={"kind": "purge", "vault_id": DELETED_VAULT_ID}),
        Case("purge named by the vault id", fires=True, before=vault(), after=None, event={"kind": "purge"}),
        Case("failed purge (purge protection held)", fires=False, before=None, after=None,
             event={"kind": "purge", "vault_id": DELETED_VAULT_ID, "succeeded": False}),
        Case("a delete is only KV-LIFE-01's", fires=False, before=vault(), after=None, event={"kind": "delete"}),
    ]


@rule(
    "KV-LIFE-02",
    title="Deleted vault purged",
    severity="critical",
    mitre=("T1485", "T1490"),
    kind="event",
    cases=_vault_purged_cases,
)
def vault_purged(ctx: Context) -> Iterator[Hit]:
    """A purge destroys a soft-deleted vault with every key, secret and certificate version in it,
    beyond any recovery: data destruction and the removal of the way back in one call."""
    if ctx.event.kind == "purge" and ctx.event.succeeded:
        yield Hit(evidence=_event_evidence(ctx))


def _vault_recovered_cases() -> list[Case]:
    from detectors.cases import INTRUDER, grant, vault, with_grants

    return [
        Case("vault seen again after kvguard saw it deleted", fires=True,
             before=with_grants(grant(INTRUDER, secrets=["get"])), after=with_grants(grant(INTRUDER, secrets=["get"])),
             baseline_deleted=True),
        Case("first sight of a vault created in recover mode", fires=True,
             before=None, after=vault(createMode="Recover")),
        Case("an ordinary write", fires=False, before=vault(), after=vault()),
        Case("new vault in default mode", fires=False, before=None, after=vault(createMode="default")),
        Case("recover mode already in the baseline", fires=False,
             before=vault(createMode="recover"), after=vault(createMode="recover", enabledForDeployment=True)),
        Case("still deleted: purge after delete", fires=False, before=vault(), after=None,
             baseline_deleted=True, event={"kind": "purge"}),
    ]


@rule(
    "KV-LIFE-03",
    title="Deleted vault recovered",
    severity="medium",
    mitre=("T1098",),
    kind="event/diff",
    cases=_vault_recovered_cases,
)
def vault_recovered(ctx: Context) -> Iterator[Hit]:
    """Recovering a soft-deleted vault brings back its old access policies as they were at deletion,
    including grants the team has since forgotten or revoked elsewhere: a way to regain access
    without a visible grant. Fires on the first sight of the recovered vault, not on every later
    write that still reports createMode recover."""
    after = ctx.after
    if after is None:
        return
    recover_mode = after.create_mode == "recover" and (ctx.before is None or ctx.before.create_mode != "recover")
    if recover_mode or ctx.baseline_deleted:
        yield Hit(evidence={
            **_event_evidence(ctx),
            "createMode": after.create_mode,
            "baselineDeleted": ctx.baseline_deleted,
            "accessPolicies": sorted(entry.principal.describe() for entry in after.access_policies),
        })
