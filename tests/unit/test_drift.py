"""KV-DRIFT-01 counts what the rules read: `kvguard.vault.READ_PROPERTIES` names, for each field of
VaultConfig, the ARM paths it is parsed from. These invariants keep that table true: every field is
in it, every path it names really feeds its field, and every field a rule reads over its cases is
one of them, so a new rule (or a new field) cannot leave a property it reads counted as unread."""

from __future__ import annotations

import copy
from dataclasses import fields, replace
from typing import Any

import pytest

from detectors.cases import managed_hsm, vault
from kvguard.catalog import RULES
from kvguard.detection import Case, Rule
from kvguard.resources import is_vault_type, resource_type_of
from kvguard.vault import READ_PROPERTIES, VaultConfig, unread_changes
from tests.cases import make_context

# Not configuration: the identity of the document, and what is derived from it or kept beside it.
NOT_SETTINGS = {"id", "name", "raw", "memo"}
# A value each declared path is set to, differing from the default documents' value.
CHANGED: dict[str, Any] = {
    "location": "eastus2",
    "tags": {"owner": "someone else"},
    "properties.tenantId": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
    "properties.sku.name": "premium",
    "sku.name": "Custom_B32",
    "properties.accessPolicies": [],
    "properties.enableRbacAuthorization": True,
    "properties.enableSoftDelete": False,
    "properties.softDeleteRetentionInDays": 7,
    "properties.enablePurgeProtection": False,
    "properties.enabledForDeployment": True,
    "properties.enabledForTemplateDeployment": True,
    "properties.enabledForDiskEncryption": True,
    "properties.publicNetworkAccess": "Enabled",
    "properties.networkAcls.defaultAction": "Allow",
    "properties.networkAcls.bypass": "AzureServices",
    "properties.networkAcls.ipRules": [{"value": "203.0.113.0/24"}],
    "properties.networkAcls.virtualNetworkRules": [{"id": "/subscriptions/x/virtualNetworks/v/subnets/s"}],
    "properties.createMode": "recover",
}
CONFIG_FIELDS = frozenset(f.name for f in fields(VaultConfig))
VAULT_CASES = [(r, c) for r in RULES.values() for c in r.cases
               if any(d is not None and is_vault_type(resource_type_of(d)) for d in (c.before, c.after))
               and c.resource is None and c.sweep is None]


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node = changed
    for name in parents:
        node = node.setdefault(name, {})
    node[last] = value
    return changed


def test_every_field_of_a_vault_configuration_is_declared() -> None:
    settings = {f.name for f in fields(VaultConfig)} - NOT_SETTINGS
    assert settings == set(READ_PROPERTIES), sorted(settings ^ set(READ_PROPERTIES))


def test_every_declared_path_has_a_changed_value_here() -> None:
    declared = {path for paths in READ_PROPERTIES.values() for path in paths}
    assert declared == set(CHANGED), sorted(declared ^ set(CHANGED))


@pytest.mark.parametrize(("field", "path"), [(f, p) for f, paths in READ_PROPERTIES.items() for p in paths])
def test_each_declared_path_feeds_its_field(field: str, path: str) -> None:
    """Changing the document at the path changes the parsed field: the path is really what the
    field is read from (an HSM's SKU sits beside its properties, a vault's inside them)."""
    base = managed_hsm() if path == "sku.name" else vault()
    before, after = VaultConfig.from_arm(base), VaultConfig.from_arm(_set(base, path, CHANGED[path]))
    assert getattr(before, field) != getattr(after, field)
    assert unread_changes(before, after) == {}


def _watched(config: VaultConfig | None, seen: set[str]) -> VaultConfig | None:
    """The same configuration, noting in `seen` every field a rule reads of it."""
    if config is None:
        return None

    class Watched(VaultConfig):
        def __getattribute__(self, name: str) -> Any:
            if name in CONFIG_FIELDS:
                seen.add(name)
            return super().__getattribute__(name)

    return Watched(**{f.name: getattr(config, f.name) for f in fields(config)})


@pytest.mark.parametrize(("checked", "case"), VAULT_CASES, ids=[f"{r.id}: {c.name}" for r, c in VAULT_CASES])
def test_a_rule_reads_of_a_vault_only_declared_fields(checked: Rule, case: Case) -> None:
    ctx = make_context(case)
    seen: set[str] = set()
    watched = replace(ctx, before=_watched(ctx.before, seen), after=_watched(ctx.after, seen))
    list(checked.detect(watched))
    if checked.id == "KV-DRIFT-01":
        return  # it reads the raw documents on purpose: what is not declared
    assert seen - NOT_SETTINGS <= set(READ_PROPERTIES)
    # A rule that reads the raw document reads it only at declared paths (a restore's baseline value).
    if "raw" in seen:
        assert checked.id.startswith("KV-NET-"), f"{checked.id} reads the raw document: declare what it reads"


@pytest.mark.parametrize(("checked", "case"), [(r, c) for r, c in VAULT_CASES if r.id != "KV-DRIFT-01"],
                         ids=[f"{r.id}: {c.name}" for r, c in VAULT_CASES if r.id != "KV-DRIFT-01"])
def test_drift_is_quiet_on_the_changes_other_rules_judge(checked: Rule, case: Case) -> None:
    """Every change the other vault rules' cases make is to a property some rule reads."""
    ctx = make_context(case)
    if ctx.before is not None and ctx.after is not None:
        assert unread_changes(ctx.before, ctx.after) == {}, f"{checked.id} {case.name!r}"


def test_an_unread_property_is_reported_by_its_path_as_arm_spells_it() -> None:
    before = VaultConfig.from_arm(vault())
    after = VaultConfig.from_arm(vault(networkAcls={"defaultAction": "Deny", "bypass": "None", "ipRules": [],
                                                    "virtualNetworkRules": [], "ipv6Rules": ["2001:db8::/32"]},
                                       newSwitch="On", provisioningState="Updating"))
    assert unread_changes(before, after) == {"properties.networkAcls.ipv6Rules": (None, ["2001:db8::/32"]),
                                             "properties.newSwitch": (None, "On")}
    assert unread_changes(after, before) == {"properties.networkAcls.ipv6Rules": (["2001:db8::/32"], None),
                                             "properties.newSwitch": ("On", None)}


class _NeverCompared(list):  # type: ignore[type-arg]
    """An access-policy list that fails when compared whole."""

    def __eq__(self, other: object) -> bool:
        raise AssertionError("the access policies were compared whole")

    __ne__ = __eq__  # type: ignore[assignment]
    __hash__ = None  # type: ignore[assignment]


def test_the_read_properties_are_passed_over_not_compared() -> None:
    """`properties` is walked member by member without comparing it whole first: a large vault's
    access policies (read by the rules, so never drift) would otherwise be compared on every event."""
    doc = vault(newSwitch="Off")
    before = VaultConfig.from_arm(doc)
    changed = copy.deepcopy(doc)
    changed["properties"]["accessPolicies"] = _NeverCompared(doc["properties"]["accessPolicies"])
    changed["properties"]["newSwitch"] = "On"
    assert unread_changes(before, VaultConfig.from_arm(changed)) == {"properties.newSwitch": ("Off", "On")}
