"""ArmVaultGateway: the real azure-mgmt-keyvault client against the local HTTPS ARM fake."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError

from kvguard.adapters.arm import ArmVaultGateway, VaultNotFoundError
from kvguard.ports import PermanentError, TransientError
from kvguard.vault import AccessPolicy, Principal
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake

SUB = "6f1c0a52-7d3e-4b8a-9e21-5c4d3b2a1f00"
OTHER_SUB = "0b7e4d21-95a3-4c6f-8d12-3e9f8a7b6c54"
TENANT = "4e3d2c1b-aa90-4f8e-b7d6-112233445566"
OWNER = "c0ffee00-1111-4222-8333-444455556666"
ROGUE = "badc0de0-7777-4888-9999-aaaabbbbcccc"
VAULT_ID = f"/subscriptions/{SUB}/resourceGroups/rg-payments/providers/Microsoft.KeyVault/vaults/kv-payments-01"
VAULT_PATH = r"/vaults/kv-payments-01$"


def vault_doc(vault_id: str = VAULT_ID, **properties: Any) -> dict[str, Any]:
    """An ARM GET body of our own making, with a field kvguard does not know about."""
    doc: dict[str, Any] = {
        "id": vault_id,
        "name": vault_id.rsplit("/", 1)[-1],
        "type": "Microsoft.KeyVault/vaults",
        "location": "northeurope",
        "tags": {"criticality": "high"},
        "systemData": {"lastModifiedBy": "pipeline@example.org", "lastModifiedByType": "User"},
        "properties": {
            "tenantId": TENANT,
            "sku": {"family": "A", "name": "premium"},
            "accessPolicies": [
                {"tenantId": TENANT, "objectId": OWNER, "permissions": {"keys": ["Get", "WrapKey", "UnwrapKey"]}},
                {
                    "tenantId": TENANT,
                    "objectId": ROGUE,
                    "permissions": {"secrets": ["Get", "List", "Set"], "keys": ["all"]},
                },
            ],
            "enableRbacAuthorization": False,
            "enableSoftDelete": True,
            "softDeleteRetentionInDays": 90,
            "enablePurgeProtection": True,
            "publicNetworkAccess": "Enabled",
            "networkAcls": {"defaultAction": "Allow", "bypass": "AzureServices", "ipRules": [{"value": "0.0.0.0/0"}]},
            "vaultUri": "https://kv-payments-01.vault.azure.net/",
            "provisioningState": "Succeeded",
            "hsmPoolResourceId": "not-known-to-kvguard",
        },
    }
    doc["properties"].update(properties)
    return doc


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake(page_size=2) as running:
        running.add_vault(vault_doc())
        yield running


@pytest.fixture
def ca_bundle(fake: ArmFake, tmp_path: Path) -> Path:
    return fake.write_ca_bundle(tmp_path / "ca.pem")


@pytest.fixture
def credential() -> FakeCredential:
    return FakeCredential()


@pytest.fixture
def gateway(fake: ArmFake, ca_bundle: Path, credential: FakeCredential) -> Iterator[ArmVaultGateway]:
    gw = ArmVaultGateway(
        credential, endpoint=fake.base_url, connection_verify=str(ca_bundle),
        retry_total=2, retry_backoff_factor=0.01, retry_backoff_max=0.05,
    )
    yield gw
    gw.close()


# ---- get -------------------------------------------------------------------------------------


def test_get_parses_the_raw_arm_json(gateway: ArmVaultGateway, fake: ArmFake, credential: FakeCredential) -> None:
    config = gateway.get(VAULT_ID)

    assert config is not None
    assert config.id == VAULT_ID
    assert config.tenant_id == TENANT
    assert config.sku_name == "premium"
    assert config.enable_rbac_authorization is False
    assert config.soft_delete_retention_days == 90
    assert config.ip_rules == frozenset({"0.0.0.0/0"})
    assert config.tag("Criticality") == "high"
    rogue = config.policy_for(f"{ROGUE}|")
    assert rogue is not None and rogue.get("secrets") == frozenset({"get", "list", "set"})
    # The exact ARM body: camelCase names, and fields no SDK model knows survive.
    assert config.raw["properties"]["hsmPoolResourceId"] == "not-known-to-kvguard"
    assert config.raw["systemData"]["lastModifiedBy"] == "pipeline@example.org"
    assert "access_policies" not in config.raw["properties"]

    (request,) = fake.requests_to("GET", VAULT_PATH)
    assert request.param("api-version")
    assert request.headers["authorization"] == "Bearer fake-token"
    assert ("https://management.azure.com/.default",) in credential.scopes


@pytest.mark.parametrize(
    "spelling",
    [
        VAULT_ID.lower(),
        VAULT_ID.upper().replace("/SUBSCRIPTIONS/", "/subscriptions/"),
        VAULT_ID.replace("resourceGroups", "resourcegroups") + "/",
        VAULT_ID + "/accessPolicies/add",
    ],
    ids=["lower", "upper", "resourcegroups-trailing-slash", "sub-resource"],
)
def test_get_finds_the_vault_whatever_the_spelling(gateway: ArmVaultGateway, spelling: str) -> None:
    config = gateway.get(spelling)

    assert config is not None
    assert config.key == VAULT_ID.lower()
    assert config.name == "kv-payments-01"


def test_get_of_a_missing_vault_is_none(gateway: ArmVaultGateway, fake: ArmFake) -> None:
    fake.delete_vault(VAULT_ID)

    assert gateway.get(VAULT_ID) is None
    assert len(fake.requests_to("GET", VAULT_PATH)) == 1


def test_get_rejects_an_id_that_is_not_a_vault(gateway: ArmVaultGateway, fake: ArmFake) -> None:
    with pytest.raises(ValueError, match="not a Key Vault resource id"):
        gateway.get(f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sa1")
    assert fake.requests == []


# ---- update ----------------------------------------------------------------------------------


def test_update_patches_only_the_given_properties(gateway: ArmVaultGateway, fake: ArmFake) -> None:
    acls = {"defaultAction": "Deny", "bypass": "None", "ipRules": [], "virtualNetworkRules": []}

    config = gateway.update(VAULT_ID, {"publicNetworkAccess": "Disabled", "networkAcls": acls})

    assert config.public_network_access == "disabled"
    assert config.default_action == "deny"
    assert config.bypass == "none"
    assert config.ip_rules == frozenset()
    assert len(config.access_policies) == 2  # untouched by the PATCH
    (request,) = fake.requests_to("PATCH", VAULT_PATH)
    assert request.json == {"properties": {"publicNetworkAccess": "Disabled", "networkAcls": acls}}
    assert request.headers["content-type"].startswith("application/json")
    assert fake.vault(VAULT_ID)["properties"]["publicNetworkAccess"] == "Disabled"


def test_update_restores_a_setting(gateway: ArmVaultGateway, fake: ArmFake) -> None:
    config = gateway.update(VAULT_ID.lower(), {"enableRbacAuthorization": True})

    assert config.enable_rbac_authorization is True
    assert fake.vault(VAULT_ID)["properties"]["enableRbacAuthorization"] is True


def test_update_of_a_missing_vault_raises_not_found(gateway: ArmVaultGateway, fake: ArmFake) -> None:
    fake.delete_vault(VAULT_ID)

    with pytest.raises(VaultNotFoundError, match="kv-payments-01"):
        gateway.update(VAULT_ID, {"publicNetworkAccess": "Disabled"})


# ---- remove_access_policy --------------------------------------------------------------------


def _rogue_entry(**permissions: set[str]) -> AccessPolicy:
    return AccessPolicy(
        principal=Principal(object_id=ROGUE, tenant_id=TENANT),
        permissions={category: frozenset(perms) for category, perms in permissions.items()},
    )


def test_remove_access_policy_removes_exactly_the_entry(gateway: ArmVaultGateway, fake: ArmFake) -> None:
    entry = _rogue_entry(secrets={"get", "list", "set"}, keys={"all"})

    config = gateway.remove_access_policy(VAULT_ID, entry)

    assert config.policy_for(f"{ROGUE}|") is None
    owner = config.policy_for(f"{OWNER}|")
    assert owner is not None and owner.get("keys") == frozenset({"get", "wrapkey", "unwrapkey"})
    (request,) = fake.requests_to("PUT", r"/accessPolicies/remove$")
    assert request.path.endswith("/vaults/kv-payments-01/accessPolicies/remove")
    assert request.json == {
        "properties": {
            "accessPolicies": [
                {
                    "tenantId": TENANT,
                    "objectId": ROGUE,
                    "permissions": {"secrets": ["get", "list", "set"], "keys": ["all"]},
                }
            ]
        }
    }
    # The whole list is never replaced.
    assert fake.requests_to("PUT", r"/accessPolicies/replace$") == []
    assert fake.requests_to("PATCH", VAULT_PATH) == []


def test_remove_access_policy_leaves_the_other_permissions(gateway: ArmVaultGateway, fake: ArmFake) -> None:
    config = gateway.remove_access_policy(VAULT_ID, _rogue_entry(secrets={"list"}))

    rogue = config.policy_for(f"{ROGUE}|")
    assert rogue is not None
    assert rogue.get("secrets") == frozenset({"get", "set"})
    assert rogue.get("keys") == frozenset({"all"})


def test_remove_access_policy_fills_in_the_vault_tenant(gateway: ArmVaultGateway, fake: ArmFake) -> None:
    entry = AccessPolicy(principal=Principal(object_id=ROGUE), permissions={"keys": frozenset({"all"})})

    gateway.remove_access_policy(VAULT_ID, entry)

    (request,) = fake.requests_to("PUT", r"/accessPolicies/remove$")
    assert request.json["properties"]["accessPolicies"][0]["tenantId"] == TENANT


def test_remove_nothing_writes_nothing(gateway: ArmVaultGateway, fake: ArmFake) -> None:
    config = gateway.remove_access_policy(VAULT_ID, _rogue_entry())

    assert config.policy_for(f"{ROGUE}|") is not None
    assert fake.requests_to("PUT", r"/accessPolicies/") == []


def test_remove_from_a_deleted_vault_raises_not_found(gateway: ArmVaultGateway, fake: ArmFake) -> None:
    fake.before("PUT", r"/accessPolicies/remove$", lambda: fake.delete_vault(VAULT_ID))

    with pytest.raises(VaultNotFoundError):
        gateway.remove_access_policy(VAULT_ID, _rogue_entry(keys={"all"}))


def test_vault_deleted_right_after_the_remove(gateway: ArmVaultGateway, fake: ArmFake) -> None:
    fake.before("GET", VAULT_PATH, lambda: fake.delete_vault(VAULT_ID))

    with pytest.raises(VaultNotFoundError, match="disappeared"):
        gateway.remove_access_policy(VAULT_ID, _rogue_entry(keys={"all"}))
    assert len(fake.requests_to("PUT", r"/accessPolicies/remove$")) == 1


# ---- list_vaults -----------------------------------------------------------------------------


def test_list_vaults_follows_next_links(gateway: ArmVaultGateway, fake: ArmFake) -> None:
    ids = [VAULT_ID.replace("kv-payments-01", f"kv-app-{n:02d}") for n in range(4)]
    for vault_id in ids:
        fake.add_vault(vault_doc(vault_id))
    fake.add_vault(vault_doc(VAULT_ID.replace(SUB, OTHER_SUB).replace("kv-payments-01", "kv-elsewhere")))

    configs = gateway.list_vaults(SUB)

    assert [c.id for c in configs] == [VAULT_ID, *ids]
    pages = fake.requests_to("GET", r"/providers/Microsoft.KeyVault/vaults$")
    assert [p.param("$skiptoken") for p in pages] == [None, "2", "4"]
    assert all(p.param("api-version") == pages[0].param("api-version") for p in pages)
    # What the SDK's models hand back keeps ARM's names and unknown fields.
    assert configs[0].raw["properties"]["hsmPoolResourceId"] == "not-known-to-kvguard"
    assert configs[0].access_policies == gateway.get(VAULT_ID).access_policies  # type: ignore[union-attr]
    # ... exactly as ARM sent them: the REST (camelCase) document, not the SDK's attribute names.
    assert configs[0].raw == fake.vault(VAULT_ID)
    assert configs[0].tenant_id == TENANT.lower() and len(configs[0].access_policies) == 2




def test_list_vaults_of_an_empty_subscription(gateway: ArmVaultGateway) -> None:
    assert gateway.list_vaults("7a6b5c4d-0000-4000-8000-000000000001") == []


# ---- throttling, failures, transport -------------------------------------------------------


def test_throttled_get_is_retried_after_retry_after(gateway: ArmVaultGateway, fake: ArmFake) -> None:
    fake.inject(
        "GET", VAULT_PATH, status=429, headers={"Retry-After": "1"},
        body={"error": {"code": "TooManyRequests", "message": "Slow down."}},
    )

    config = gateway.get(VAULT_ID)

    assert config is not None and config.name == "kv-payments-01"
    assert len(fake.requests_to("GET", VAULT_PATH)) == 2


def test_persistent_500_becomes_a_transient_error(gateway: ArmVaultGateway, fake: ArmFake) -> None:
    fake.inject("GET", VAULT_PATH, status=500, body={"error": {"code": "InternalServerError", "message": "x"}},
                times=10)

    with pytest.raises(TransientError, match="HTTP 500 InternalServerError"):
        gateway.get(VAULT_ID)
    assert len(fake.requests_to("GET", VAULT_PATH)) == 3  # the first try and retry_total=2 retries


@pytest.mark.parametrize("status", [409, 429, 503])
def test_failed_patch_becomes_a_transient_error(gateway: ArmVaultGateway, fake: ArmFake, status: int) -> None:
    fake.inject("PATCH", VAULT_PATH, status=status, body={"error": {"code": "Busy", "message": "later"}}, times=10)

    with pytest.raises(TransientError, match=f"HTTP {status}"):
        gateway.update(VAULT_ID, {"publicNetworkAccess": "Disabled"})
    assert fake.vault(VAULT_ID)["properties"]["publicNetworkAccess"] == "Enabled"


def test_forbidden_is_permanent(gateway: ArmVaultGateway, fake: ArmFake) -> None:
    fake.inject("PUT", r"/accessPolicies/remove$", status=403,
                body={"error": {"code": "AuthorizationFailed", "message": "no vaults/accessPolicies/write"}})

    with pytest.raises(PermanentError, match="HTTP 403 AuthorizationFailed") as caught:
        gateway.remove_access_policy(VAULT_ID, _rogue_entry(keys={"all"}))
    assert isinstance(caught.value.__cause__, HttpResponseError)
    assert caught.value.__cause__.status_code == 403
    assert fake.vault(VAULT_ID)["properties"]["accessPolicies"][1]["objectId"] == ROGUE


def test_unreachable_arm_is_transient(ca_bundle: Path) -> None:
    with arm_fake() as stopped:
        endpoint = stopped.base_url
    gw = ArmVaultGateway(FakeCredential(), endpoint=endpoint, connection_verify=str(ca_bundle),
                         retry_total=1, retry_backoff_factor=0.01, retry_backoff_max=0.05)

    with pytest.raises(TransientError) as caught:
        gw.get(VAULT_ID)
    assert isinstance(caught.value.__cause__, ServiceRequestError)


def test_tls_is_verified(fake: ArmFake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    untrusting = ArmVaultGateway(FakeCredential(), endpoint=fake.base_url, retry_total=0)

    with pytest.raises(TransientError) as caught:
        untrusting.get(VAULT_ID)
    assert isinstance(caught.value.__cause__, ServiceRequestError)
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value.__cause__)
    assert fake.requests == []


def test_ca_bundle_from_the_environment_is_honoured(
    fake: ArmFake, ca_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_bundle))
    gw = ArmVaultGateway(FakeCredential(), endpoint=fake.base_url)

    assert gw.get(VAULT_ID) is not None


def test_one_client_per_subscription(gateway: ArmVaultGateway) -> None:
    assert gateway.client(SUB) is gateway.client(SUB.upper())
    assert gateway.client(OTHER_SUB) is not gateway.client(SUB)


def test_clients_are_made_on_first_use_without_a_request(fake: ArmFake, ca_bundle: Path) -> None:
    gw = ArmVaultGateway(FakeCredential(), endpoint=fake.base_url, connection_verify=str(ca_bundle))

    gw.client(SUB)

    assert SUB.upper() in gw._clients and OTHER_SUB not in gw._clients
    assert fake.requests == []


def test_a_vault_in_another_subscription_uses_that_subscription(gateway: ArmVaultGateway, fake: ArmFake) -> None:
    other = copy.deepcopy(vault_doc(VAULT_ID.replace(SUB, OTHER_SUB)))
    fake.add_vault(other)

    config = gateway.get(other["id"])

    assert config is not None and config.id == other["id"]
    (request,) = fake.requests_to("GET", VAULT_PATH)[-1:]
    assert OTHER_SUB in request.path


def test_importing_the_adapter_does_not_load_the_sdk() -> None:
    code = (
        "import sys, kvguard.adapters.arm, kvguard.adapters.defender, kvguard.adapters.eventgrid, "
        "kvguard.adapters.webhook; "
        "print(sorted(m for m in sys.modules if m.startswith(('azure.mgmt', 'azure.eventgrid', 'requests'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert result.stdout.strip() == "[]"
