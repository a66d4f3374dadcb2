"""VaultConfig from ARM JSON (case-normalised, absent kept apart from false) and diff()."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kvguard.vault import AccessPolicy, Principal, VaultConfig, VaultDiff, diff, normalise_cidr

SUB = "0e9d8c7b-6a5f-4e4d-8c3b-2a1f0e9d8c7b"
TENANT = "7f6e5d4c-3b2a-4190-8f7e-6d5c4b3a2f1e"
FOREIGN = "1122aabb-3344-4ccd-8eef-5566778899aa"
VAULT_ID = f"/subscriptions/{SUB}/resourceGroups/rg-billing/providers/Microsoft.KeyVault/vaults/kv-billing"
WEB = "3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f"
BATCH = "9f8e7d6c-5b4a-4392-8180-7f6e5d4c3b2a"
ROGUE = "deadbeef-1234-4567-89ab-cdef01234567"
BROKER_APP = "6a7b8c9d-0e1f-4a2b-9c3d-4e5f6a7b8c9d"


def entry(object_id: str, application_id: str | None = None, tenant: str = TENANT,
          **perms: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = {"tenantId": tenant, "objectId": object_id, "permissions": perms}
    if application_id is not None:
        body["applicationId"] = application_id
    return body


def arm(policies: list[dict[str, Any]] | None = None, acls: dict[str, Any] | None = None,
        **props: Any) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "tenantId": TENANT,
        "sku": {"family": "A", "name": "standard"},
        "accessPolicies": policies if policies is not None else [entry(WEB, secrets=["get"])],
        "enableRbacAuthorization": False,
        "enableSoftDelete": True,
        "softDeleteRetentionInDays": 90,
        "enablePurgeProtection": True,
        "publicNetworkAccess": "Disabled",
        "networkAcls": acls if acls is not None else {"defaultAction": "Deny", "bypass": "None", "ipRules": [],
                                                     "virtualNetworkRules": []},
    }
    for name, value in props.items():
        if value is None:
            properties.pop(name, None)
        else:
            properties[name] = value
    return {"id": VAULT_ID, "name": "kv-billing", "location": "WestEurope", "tags": {"Owner": "billing"},
            "properties": properties}


def config(*args: Any, **kwargs: Any) -> VaultConfig:
    return VaultConfig.from_arm(arm(*args, **kwargs))


# --- from_arm ---------------------------------------------------------------------------------


def test_values_are_case_normalised() -> None:
    shouty = arm(policies=[entry(WEB.upper(), tenant=TENANT.upper(), Secrets=["Get", "LIST"], keys=[" WrapKey "])],
                 sku={"family": "A", "name": "Standard"}, publicNetworkAccess="Enabled",
                 acls={"DefaultAction": "Allow", "Bypass": "AzureServices"})
    vault = VaultConfig.from_arm(shouty)
    assert vault.sku_name == "standard"
    assert vault.tenant_id == TENANT
    assert vault.location == "westeurope"
    assert vault.public_network_access == "enabled"
    assert (vault.default_action, vault.bypass) == ("allow", "azureservices")
    [policy] = vault.access_policies
    assert policy.principal == Principal(WEB, None, TENANT)
    assert policy.get("secrets") == {"get", "list"}
    assert policy.get("keys") == {"wrapkey"}
    assert policy.get("certificates") == frozenset()


def test_the_same_vault_in_other_case_is_equal_and_has_no_diff() -> None:
    lower = config(policies=[entry(WEB, secrets=["get"], keys=["unwrapKey"])])
    upper = VaultConfig.from_arm(arm(policies=[entry(WEB.upper(), secrets=["Get"], keys=["UnwrapKey"])],
                                     sku={"name": "Standard"}, publicNetworkAccess="disabled"))
    assert diff(lower, upper).empty
    assert diff(upper, lower).empty


def test_property_names_are_read_case_insensitively() -> None:
    doc = arm()
    doc["properties"]["EnableRbacAuthorization"] = doc["properties"].pop("enableRbacAuthorization")
    doc["Properties"] = doc.pop("properties")
    doc["properties_unrelated"] = 1
    vault = VaultConfig.from_arm(doc)
    assert vault.enable_rbac_authorization is False
    assert vault.soft_delete_retention_days == 90


def test_absent_settings_are_the_api_default_or_none_never_false() -> None:
    vault = config(enableRbacAuthorization=None, enablePurgeProtection=None, enableSoftDelete=None,
                   softDeleteRetentionInDays=None, publicNetworkAccess=None, acls={})
    assert vault.enable_rbac_authorization is None
    assert vault.enable_purge_protection is None
    assert vault.enabled_for_deployment is None
    # The API specification's defaults (kvguard.vault_spec).
    assert vault.public_network_access == "enabled"
    assert (vault.default_action, vault.bypass) == ("allow", "azureservices")
    explicit = config(enableRbacAuthorization=False, enablePurgeProtection=False)
    assert explicit.enable_rbac_authorization is False and explicit.enable_purge_protection is False
    change = diff(vault, explicit)
    assert change.changed("enable_rbac_authorization") == (None, False)
    assert change.changed("enable_purge_protection") == (None, False)


def test_booleans_and_numbers_as_strings() -> None:
    vault = config(enablePurgeProtection="True", enabledForDeployment="false", softDeleteRetentionInDays="30",
                   enableSoftDelete="maybe")
    assert vault.enable_purge_protection is True
    assert vault.enabled_for_deployment is False
    assert vault.soft_delete_retention_days == 30
    assert vault.enable_soft_delete is True  # not a boolean: the 2019-09-01+ default (on)


def test_ip_rules_are_normalised_to_cidr() -> None:
    vault = config(acls={"ipRules": [{"value": "203.0.113.7"}, {"value": "198.51.100.0/24"},
                                     {"value": " 192.0.2.1/32 "}, {"value": ""}, {"notValue": "x"}, "junk"]})
    assert vault.ip_rules == {"203.0.113.7/32", "198.51.100.0/24", "192.0.2.1/32"}
    same = config(acls={"ipRules": [{"value": "203.0.113.7/32"}, {"value": "198.51.100.0/24"},
                                    {"value": "192.0.2.1"}]})
    assert diff(vault, same).ip_rules_added == frozenset()
    assert diff(vault, same).ip_rules_removed == frozenset()


def test_virtual_network_rules_are_lower_cased_ids() -> None:
    subnet = f"/subscriptions/{SUB}/resourceGroups/rg-net/providers/Microsoft.Network/virtualNetworks/vn/subnets/App"
    vault = config(acls={"virtualNetworkRules": [{"id": subnet, "ignoreMissingVnetServiceEndpoint": False}]})
    assert vault.virtual_network_rules == {subnet.lower()}


def test_tags_are_looked_up_case_insensitively() -> None:
    vault = config()
    assert vault.tag("owner") == "billing"
    assert vault.tag("OWNER") == "billing"
    assert vault.tag("cost-centre") is None


def test_the_id_drops_a_trailing_slash_and_the_key_is_case_insensitive() -> None:
    doc = arm()
    doc["id"] = VAULT_ID.replace("resourceGroups", "resourcegroups") + "/"
    vault = VaultConfig.from_arm(doc)
    assert vault.id == VAULT_ID.replace("resourceGroups", "resourcegroups")
    assert vault.key == VAULT_ID.lower()


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([], "vault"),
        ({"name": "kv"}, "vault.id"),
        ({"id": "  "}, "vault.id"),
        ({"id": VAULT_ID, "properties": ["tenantId"]}, "vault.properties"),
        ({"id": VAULT_ID, "properties": {"accessPolicies": {"objectId": WEB}}}, "vault.properties.accessPolicies"),
    ],
)
def test_what_is_not_a_vault_is_refused_naming_the_field(doc: Any, field: str) -> None:
    with pytest.raises(ValueError) as error:
        VaultConfig.from_arm(doc)
    assert str(error.value).split(":", 1)[0] == field


def test_access_policy_round_trips_through_arm() -> None:
    policy = AccessPolicy.from_arm(entry(WEB, BROKER_APP, secrets=["Get"], keys=[]))
    assert policy.to_arm() == {"tenantId": TENANT, "objectId": WEB, "applicationId": BROKER_APP,
                               "permissions": {"secrets": ["get"]}}
    again = AccessPolicy.from_arm(policy.to_arm())
    assert again.principal == policy.principal
    assert again.to_arm() == policy.to_arm()


# --- diff ---------------------------------------------------------------------------------------


def test_added_and_removed_principals() -> None:
    before = config(policies=[entry(WEB, secrets=["get"]), entry(BATCH, keys=["get"])])
    after = config(policies=[entry(WEB, secrets=["get"]), entry(ROGUE, secrets=["get", "list"])])
    change = diff(before, after)
    assert [p.principal.object_id for p in change.added_policies] == [ROGUE]
    assert change.added_policies[0].get("secrets") == {"get", "list"}
    assert [p.principal.object_id for p in change.removed_policies] == [BATCH]
    assert change.permission_changes == ()
    assert not change.empty


def test_widened_and_narrowed_are_per_category() -> None:
    before = config(policies=[entry(WEB, secrets=["get", "list"], keys=["get"])])
    after = config(policies=[entry(WEB, secrets=["get"], keys=["get", "decrypt"], certificates=["import"])])
    change = diff(before, after)
    widened = {(c.category, c.added) for c in change.widened}
    narrowed = {(c.category, c.removed) for c in change.narrowed}
    assert widened == {("keys", frozenset({"decrypt"})), ("certificates", frozenset({"import"}))}
    assert narrowed == {("secrets", frozenset({"list"}))}
    assert change.added_policies == () and change.removed_policies == ()


def test_one_category_can_widen_and_narrow_at_once() -> None:
    change = diff(config(policies=[entry(WEB, secrets=["get"])]), config(policies=[entry(WEB, secrets=["list"])]))
    [both] = change.permission_changes
    assert (both.added, both.removed) == ({"list"}, {"get"})
    assert change.widened == change.narrowed == (both,)


def test_compound_identities_are_distinct_principals() -> None:
    before = config(policies=[entry(WEB, secrets=["get"])])
    after = config(policies=[entry(WEB, secrets=["get"]), entry(WEB, BROKER_APP, secrets=["get", "list"])])
    change = diff(before, after)
    [added] = change.added_policies
    assert added.principal.object_id == WEB
    assert added.principal.application_id == BROKER_APP
    assert added.principal.key != Principal(WEB).key
    assert change.permission_changes == ()
    assert "via application" in added.principal.describe()


def test_application_id_in_other_case_is_the_same_compound_identity() -> None:
    before = config(policies=[entry(WEB, BROKER_APP, secrets=["get"])])
    after = config(policies=[entry(WEB.upper(), BROKER_APP.upper(), secrets=["GET"])])
    assert diff(before, after).empty


def test_settings_changes_carry_before_and_after() -> None:
    before = config()
    after = config(enableRbacAuthorization=True, softDeleteRetentionInDays=7, publicNetworkAccess="Enabled",
                   sku={"name": "Premium"}, tenantId=FOREIGN, enabledForDiskEncryption=True,
                   acls={"defaultAction": "Allow", "bypass": "AzureServices"})
    change = diff(before, after)
    assert change.settings == {
        "tenant_id": (TENANT, FOREIGN),
        "sku_name": ("standard", "premium"),
        "enable_rbac_authorization": (False, True),
        "soft_delete_retention_days": (90, 7),
        "enabled_for_disk_encryption": (None, True),
        "public_network_access": ("disabled", "enabled"),
        "default_action": ("deny", "allow"),
        "bypass": ("none", "azureservices"),
    }
    assert change.changed("enable_soft_delete") is None


def test_ip_and_vnet_rules_added_and_removed() -> None:
    subnet_a = f"/subscriptions/{SUB}/resourceGroups/rg-net/providers/Microsoft.Network/virtualNetworks/vn/subnets/a"
    subnet_b = f"/subscriptions/{FOREIGN}/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/x/subnets/b"
    before = config(acls={"ipRules": [{"value": "203.0.113.7"}], "virtualNetworkRules": [{"id": subnet_a}]})
    after = config(acls={"ipRules": [{"value": "0.0.0.0/0"}], "virtualNetworkRules": [{"id": subnet_b.upper()}]})
    change = diff(before, after)
    assert change.ip_rules_added == {"0.0.0.0/0"}
    assert change.ip_rules_removed == {"203.0.113.7/32"}
    assert change.vnet_rules_added == {subnet_b.lower()}
    assert change.vnet_rules_removed == {subnet_a.lower()}
    assert not change.empty


def test_identical_configurations_have_an_empty_diff() -> None:
    assert diff(config(), config()).empty
    assert VaultDiff().empty


def test_grant_marks_pair_with_the_revoke_marks_of_the_undo() -> None:
    before = config(policies=[entry(WEB, secrets=["get"])])
    granted = config(policies=[entry(WEB, secrets=["get", "list"]), entry(ROGUE, BROKER_APP, keys=["decrypt"])])
    grant = diff(before, granted)
    undo = diff(granted, before)
    assert sorted(grant.grant_marks()) == sorted(undo.revoke_marks())
    assert set(grant.grant_marks()) == {
        f"principal:{ROGUE}|{BROKER_APP}",
        f"permission:{WEB}|:secrets:list",
    }
    assert grant.revoke_marks() == []
    assert undo.grant_marks() == []


def test_grant_marks_list_every_added_permission_in_order() -> None:
    change = diff(config(policies=[entry(WEB)]), config(policies=[entry(WEB, secrets=["list", "get"])]))
    assert change.grant_marks() == [f"permission:{WEB}|:secrets:get", f"permission:{WEB}|:secrets:list"]


def test_diff_does_not_depend_on_the_raw_document() -> None:
    doc = arm()
    noisy = copy.deepcopy(doc)
    noisy["properties"]["vaultUri"] = "https://kv-billing.vault.azure.net/"
    noisy["properties"]["provisioningState"] = "Succeeded"
    noisy["systemData"] = {"lastModifiedBy": "someone"}
    assert diff(VaultConfig.from_arm(doc), VaultConfig.from_arm(noisy)).empty
    assert VaultConfig.from_arm(doc) == VaultConfig.from_arm(noisy)


# --- normalise_cidr -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1.2.3.4", "1.2.3.4/32"),
        (" 203.0.113.7 ", "203.0.113.7/32"),
        ("198.51.100.0/24", "198.51.100.0/24"),
        ("2001:db8::7", "2001:db8::7/128"),
        ("2001:DB8:0:0::7", "2001:db8::7/128"),
        ("2001:db8::/48", "2001:db8::/48"),
    ],
    ids=["ipv4 address", "ipv4 address with spaces", "ipv4 range", "ipv6 address", "ipv6 other spelling",
         "ipv6 range"],
)
def test_addresses_and_ranges_become_their_network(value: str, expected: str) -> None:
    assert normalise_cidr(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("10.0.0.5/24", "10.0.0.0/24"), ("2001:db8::7/64", "2001:db8::/64")],
    ids=["ipv4", "ipv6"],
)
def test_host_bits_are_cleared(value: str, expected: str) -> None:
    assert normalise_cidr(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(" not-an-ip ", "not-an-ip"), ("300.1.2.3", "300.1.2.3"), ("10.0.0.0/33", "10.0.0.0/33"),
     ("", ""), ("   ", ""), (None, ""), (42, "")],
    ids=["word", "octet out of range", "prefix too long", "empty", "blank", "none", "not text"],
)
def test_what_does_not_parse_is_kept_as_written(value: Any, expected: str) -> None:
    assert normalise_cidr(value) == expected


def test_an_ipv6_address_is_one_host_not_a_range() -> None:
    vault = config(acls={"ipRules": [{"value": "2001:db8::7"}, {"value": "2001:db8::7/128"}]})
    assert vault.ip_rules == {"2001:db8::7/128"}
    broad = config(acls={"ipRules": [{"value": "2001:db8::/32"}]})
    assert diff(vault, broad).ip_rules_added == {"2001:db8::/32"}
    assert diff(vault, broad).ip_rules_removed == {"2001:db8::7/128"}


def test_an_unparseable_rule_still_reaches_the_diff() -> None:
    change = diff(config(), config(acls={"ipRules": [{"value": " any "}]}))
    assert change.ip_rules_added == {"any"}
