"""Managed HSMs (vaults of kind `hsm`) and keys through ARM, with the real azure-mgmt-keyvault
client against the HTTPS ARM fake: the gateways read them as raw ARM JSON, the pipeline built by
`runtime.build` judges them from raw Event Grid JSON, and `kvguard baseline` seeds them."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from detectors.cases import (
    FOREIGN_SUBSCRIPTION,
    HSM_ID,
    INTRUDER,
    KEY_ID,
    SUBSCRIPTION,
    TENANT,
    VAULT_ID,
    managed_hsm,
    vault,
    vault_key_doc,
)
from kvguard import runtime
from kvguard.adapters.arm import ArmVaultGateway
from kvguard.adapters.resources import ArmResourceGateway
from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.cli import main
from kvguard.decision import HSM_ALERT_ONLY
from kvguard.pipeline import Pipeline
from kvguard.ports import PermanentError
from kvguard.settings import Settings
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake, cli_environment

HSM_CONNECTION = f"{HSM_ID}/privateEndpointConnections/pe-build"


def hsm_connection(status: str) -> dict[str, Any]:
    network = f"/subscriptions/{FOREIGN_SUBSCRIPTION}/resourceGroups/rg-x/providers/Microsoft.Network"
    endpoint = f"{network}/privateEndpoints/pe"
    return {"id": HSM_CONNECTION, "name": "pe-build",
            "type": "Microsoft.KeyVault/managedHSMs/privateEndpointConnections",
            "properties": {"privateEndpoint": {"id": endpoint},
                           "privateLinkServiceConnectionState": {"status": status, "description": ""}}}


def event(event_id: str, resource_uri: str, operation: str) -> str:
    """A ResourceWriteSuccess as Event Grid delivers it (the events use `resourcegroups`)."""
    uri = resource_uri.replace("resourceGroups", "resourcegroups")
    return json.dumps({
        "id": event_id, "topic": f"/subscriptions/{SUBSCRIPTION}", "subject": uri,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess", "eventTime": "2026-11-25T10:00:01.500Z",
        "dataVersion": "2", "metadataVersion": "1",
        "data": {"claims": {"http://schemas.microsoft.com/identity/claims/objectidentifier": INTRUDER,
                            "http://schemas.microsoft.com/identity/claims/tenantid": TENANT},
                 "correlationId": f"corr-{event_id}", "resourceUri": uri, "operationName": operation,
                 "status": "Succeeded", "subscriptionId": SUBSCRIPTION, "tenantId": TENANT},
    })


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake() as running:
        running.add_vault(managed_hsm())
        running.add_vault(vault())
        running.add_resource(vault_key_doc())
        running.add_resource(hsm_connection("Pending"))
        yield running


@pytest.fixture
def ca_bundle(fake: ArmFake, tmp_path: Path) -> Path:
    return fake.write_ca_bundle(tmp_path / "ca.pem")


@pytest.fixture
def vaults(fake: ArmFake, ca_bundle: Path) -> Iterator[ArmVaultGateway]:
    gateway = ArmVaultGateway(FakeCredential(), endpoint=fake.base_url, connection_verify=str(ca_bundle),
                              retry_total=1, retry_backoff_factor=0.01, retry_backoff_max=0.05)
    yield gateway
    gateway.close()


@pytest.fixture
def resources(fake: ArmFake, ca_bundle: Path) -> Iterator[ArmResourceGateway]:
    gateway = ArmResourceGateway(FakeCredential(), endpoint=fake.base_url, connection_verify=str(ca_bundle),
                                 retry_total=1, retry_backoff_factor=0.01, retry_backoff_max=0.05)
    yield gateway
    gateway.close()


def built(fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **policy: Any) -> Pipeline:
    """The production composition (remediate mode, Defender on) over the fake, every resource baselined."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake.write_ca_bundle(tmp_path / "ca.pem")))
    settings = Settings(mode="remediate", state_backend="sqlite", sqlite_path=str(tmp_path / "state.db"),
                        arm_endpoint=fake.base_url, defender=True)
    pipeline = runtime.build(settings, credential=FakeCredential())
    if policy:
        pipeline.policy = pipeline.policy.merged(policy)
    for doc in (managed_hsm(), vault()):
        pipeline.store.put_baseline(doc["id"], doc, None)
    for doc in (vault_key_doc(), hsm_connection("Pending")):
        pipeline.store.put_baseline(doc["id"], doc, None)
    return pipeline


# ---- the gateways ------------------------------------------------------------------------------


def test_a_managed_hsm_is_read_through_managed_hsms_as_a_vault_of_kind_hsm(
    vaults: ArmVaultGateway, fake: ArmFake
) -> None:
    config = vaults.get(HSM_ID.replace("resourceGroups", "resourcegroups"))
    assert config is not None and config.kind == "hsm" and config.id == HSM_ID
    assert (config.sku_name, config.public_network_access, config.default_action) == ("standard_b1", "disabled", "deny")
    assert (config.enable_soft_delete, config.enable_purge_protection, config.access_policies) == (True, True, ())
    assert config.raw["properties"]["regions"][0]["name"] == "westeurope"  # what no SDK model is asked for
    (request,) = fake.requests_to("GET", r"/managedHSMs/hsm-payments$")
    assert request.param("api-version")
    assert vaults.get(HSM_ID.replace("hsm-payments", "hsm-gone")) is None


def test_listing_a_subscription_gives_its_vaults_and_its_managed_hsms(vaults: ArmVaultGateway) -> None:
    listed = vaults.list_vaults(SUBSCRIPTION)
    assert sorted((v.kind, v.id) for v in listed) == [("hsm", HSM_ID), ("vault", VAULT_ID)]


def test_an_hsm_update_waits_for_the_long_running_patch(vaults: ArmVaultGateway, fake: ArmFake) -> None:
    fake.vault(HSM_ID)  # present
    with fake._lock:
        fake.vaults[HSM_ID.lower()]["properties"]["publicNetworkAccess"] = "Enabled"
    after = vaults.update(HSM_ID, {"publicNetworkAccess": "Disabled"})
    assert after.public_network_access == "disabled"
    (patch,) = fake.requests_to("PATCH", r"/managedHSMs/hsm-payments$")
    assert patch.json == {"properties": {"publicNetworkAccess": "Disabled"}}


def test_keys_are_read_and_listed_through_the_keys_operations(resources: ArmResourceGateway, fake: ArmFake) -> None:
    key = resources.get(KEY_ID.replace("resourceGroups", "resourcegroups"))
    assert key is not None and key["properties"]["rotationPolicy"] == vault_key_doc()["properties"]["rotationPolicy"]
    assert [k["id"] for k in resources.list_at_scope(VAULT_ID, "Microsoft.KeyVault/vaults/keys")] == [KEY_ID]
    assert resources.get(KEY_ID + "-gone") is None
    assert fake.requests_to("GET", r"/vaults/kv-payments/keys/cmk-payments$")[0].param("api-version")
    with pytest.raises(PermanentError, match="never writes keys"):
        resources.put(KEY_ID, vault_key_doc(rotation=None))


def test_an_hsm_s_private_endpoint_connections_are_listed_at_the_hsm(resources: ArmResourceGateway) -> None:
    listed = resources.list_at_scope(HSM_ID, "Microsoft.KeyVault/managedHSMs/privateEndpointConnections")
    assert [c["id"] for c in listed] == [HSM_CONNECTION]
    assert resources.get(HSM_CONNECTION) == hsm_connection("Pending")


# ---- through the pipeline ----------------------------------------------------------------------


def test_an_hsm_opened_to_the_internet_is_alerted_and_not_written(
    fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = built(fake, tmp_path, monkeypatch)
    fake.add_vault(managed_hsm(publicNetworkAccess="Enabled"))
    [outcome] = pipeline.handle(event("evt-hsm-1", HSM_ID, "Microsoft.KeyVault/managedHSMs/write"))
    assert outcome.outcome == "processed" and outcome.vault == HSM_ID
    assert "KV-NET-01" in {f.rule for f in outcome.findings}
    actions = {a.handler: a for a in outcome.actions}
    assert actions["raise_defender_alert"].status == "applied"
    assert actions["restore_network"].status == "skipped" and actions["restore_network"].detail == HSM_ALERT_ONLY
    assert fake.requests_to("PATCH", r"/managedHSMs/") == []
    assert fake.vault(HSM_ID)["properties"]["publicNetworkAccess"] == "Enabled"


def test_an_opted_in_rule_reverts_an_hsm_through_its_patch(
    fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = built(fake, tmp_path, monkeypatch, rules={"KV-NET-01": {"remediate": True}})
    fake.add_vault(managed_hsm(publicNetworkAccess="Enabled"))
    [outcome] = pipeline.handle(event("evt-hsm-2", HSM_ID, "Microsoft.KeyVault/managedHSMs/write"))
    assert {a.handler: a.status for a in outcome.actions}["restore_network"] == "applied"
    assert fake.vault(HSM_ID)["properties"]["publicNetworkAccess"] == "Disabled"


def test_a_foreign_endpoint_approved_on_an_hsm_is_kv_pe_01(
    fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = built(fake, tmp_path, monkeypatch)
    fake.add_resource(hsm_connection("Approved"))
    [outcome] = pipeline.handle(event("evt-hsm-3", HSM_CONNECTION,
                                      "Microsoft.KeyVault/managedHSMs/privateEndpointConnections/write"))
    assert "KV-PE-01" in {f.rule for f in outcome.findings}
    assert {a.handler: a.status for a in outcome.actions}["reject_private_endpoint"] == "skipped"
    assert fake.requests_to("PUT", r"/privateEndpointConnections/") == []


def test_an_unread_hsm_property_changed_is_kv_drift_01(
    fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = built(fake, tmp_path, monkeypatch)
    regions = [{"name": "westeurope", "isPrimary": True}, {"name": "eastus2", "isPrimary": False}]
    fake.add_vault(managed_hsm(regions=regions, provisioningState="Updating"))
    [outcome] = pipeline.handle(event("evt-hsm-4", HSM_ID, "Microsoft.KeyVault/managedHSMs/write"))
    [drift] = [f for f in outcome.findings if f.rule == "KV-DRIFT-01"]
    assert drift.evidence["properties"] == [
        {"property": "properties.regions", "before": managed_hsm()["properties"]["regions"], "after": regions}]


def test_hsms_are_ignored_when_not_protected(fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = built(fake, tmp_path, monkeypatch, protect_managed_hsms=False)
    fake.add_vault(managed_hsm(publicNetworkAccess="Enabled"))
    [outcome] = pipeline.handle(event("evt-hsm-5", HSM_ID, "Microsoft.KeyVault/managedHSMs/write"))
    assert outcome.outcome == "ignored" and "protect_managed_hsms" in outcome.reason
    assert fake.requests_to("GET", r"/managedHSMs/") == []


def test_a_key_that_stops_rotating_through_arm_is_kv_key_01(
    fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = built(fake, tmp_path, monkeypatch)
    fake.add_resource(vault_key_doc(rotation=None, exportable=True))
    [outcome] = pipeline.handle(event("evt-key-1", KEY_ID, "Microsoft.KeyVault/vaults/keys/write"))
    assert outcome.vault == VAULT_ID and outcome.resource == KEY_ID
    keys = [(f.severity, f.title) for f in outcome.findings if f.rule == "KV-KEY-01"]
    assert keys == [("medium", "Key rotation, expiry or release loosened: rotation policy removed"),
                    ("high", "Key rotation, expiry or release loosened: key made exportable")]
    assert not [a for a in outcome.actions if a.handler not in ("raise_defender_alert",)]
    assert fake.requests_to("PUT", r"/keys/") == []


# ---- kvguard baseline --------------------------------------------------------------------------


def test_baseline_seeds_hsms_their_connections_and_the_vaults_keys(
    fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_db = cli_environment(fake, tmp_path, monkeypatch)
    out = io.StringIO()
    assert main(["baseline", "--subscription", SUBSCRIPTION], out, credential=FakeCredential()) == 0
    seeded = {b.vault_id: b.config for b in SQLiteStateStore(str(state_db)).list_baselines()}
    assert {HSM_ID, VAULT_ID, KEY_ID, HSM_CONNECTION} <= set(seeded)
    assert seeded[KEY_ID] == vault_key_doc() and seeded[HSM_ID] == copy.deepcopy(managed_hsm())
