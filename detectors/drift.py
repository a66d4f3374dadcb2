"""Drift rules (KV-DRIFT-*): a property of a protected vault that no rule reads changed.

Key Vault and Managed HSM API versions keep adding properties (regions, security domain settings,
new network switches). A change to one that no rule judges would otherwise pass in silence; this
rule names it, with its values before and after, so a person can judge it and a rule can follow.
What the rules read is the table `kvguard.vault.READ_PROPERTIES` (tests/unit/test_drift.py holds
every rule to it over its cases).
"""

from __future__ import annotations

from collections.abc import Iterator

from kvguard.detection import Case, Context, Hit, rule
from kvguard.vault import unread_changes


def _drift_cases() -> list[Case]:
    from detectors.cases import managed_hsm, vault

    return [
        Case("a property no rule reads appears", fires=True, before=vault(),
             after=vault(enableNewFeature=True)),
        Case("an HSM gains a region", fires=True, before=managed_hsm(),
             after=managed_hsm(regions=[{"name": "westeurope", "isPrimary": True},
                                        {"name": "eastus2", "isPrimary": False}])),
        Case("an HSM's initial administrators changed", fires=True, before=managed_hsm(),
             after=managed_hsm(initialAdminObjectIds=["e7d6c5b4-a392-4817-9605-f4e3d2c1b0a9"])),
        Case("a new member of networkAcls", fires=True, before=vault(),
             after=vault(networkAcls={"defaultAction": "Deny", "bypass": "None", "ipRules": [],
                                      "virtualNetworkRules": [], "ipv6Rules": [{"value": "2001:db8::/32"}]})),
        Case("near miss: a property a rule reads changed", fires=False, before=vault(),
             after=vault(publicNetworkAccess="Enabled")),
        Case("near miss: ARM's own status moved", fires=False, before=vault(),
             after=vault(provisioningState="RegisteringDns")),
        Case("near miss: only the spelling of a property's name differs", fires=False, before=vault(),
             after={**vault(), "properties": {("EnablePurgeProtection" if k == "enablePurgeProtection" else k): v
                                              for k, v in vault()["properties"].items()}}),
        Case("near miss: first sight of a vault", fires=False, before=None, after=vault(enableNewFeature=True)),
        Case("near miss: an HSM's security domain activated", fires=False,
             before=managed_hsm(securityDomainProperties={"activationStatus": "NotActivated"}),
             after=managed_hsm()),
    ]


@rule(
    "KV-DRIFT-01",
    title="Vault property no rule reads changed",
    severity="low",
    mitre=("T1562",),
    kind="diff",
    cases=_drift_cases,
)
def unread_property_changed(ctx: Context) -> Iterator[Hit]:
    """A property of a protected vault (or Managed HSM) changed that no rule reads, typically one a
    newer API version added: named with its values before and after, so that nothing about a
    vault changes silently. What ARM sets itself (status, URIs, write stamps) is left out."""
    if ctx.before is None or ctx.after is None:
        return
    changed = unread_changes(ctx.before, ctx.after)
    if changed:
        yield Hit(evidence={"properties": [{"property": path, "before": was, "after": now}
                                           for path, (was, now) in changed.items()]},
                  detail=", ".join(changed))
