"""ArmResourceGateway through the real SDK pipeline against the HTTPS ARM fake: the resources
beside a vault read, written, deleted and listed as ARM JSON, and failures classed by the one
transient/permanent rule."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from detectors.cases import SUBSCRIPTION, VAULT_ID, diagnostic_setting, endpoint_connection, lock, pricing
from kvguard.adapters.resources import ArmResourceGateway
from kvguard.ports import PermanentError, TransientError
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake

RESOURCE_GROUP = VAULT_ID.split("/providers/")[0]


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake() as running:
        yield running


@pytest.fixture
def gateway(fake: ArmFake, tmp_path: Path) -> Iterator[ArmResourceGateway]:
    gw = ArmResourceGateway(FakeCredential(), endpoint=fake.base_url,
                            connection_verify=str(fake.write_ca_bundle(tmp_path / "ca.pem")),
                            retry_total=1, retry_backoff_factor=0.01, retry_backoff_max=0.05)
    yield gw
    gw.close()


def test_get_put_delete_of_a_diagnostic_setting(fake: ArmFake, gateway: ArmResourceGateway) -> None:
    setting = diagnostic_setting()
    assert gateway.get(setting["id"]) is None  # 404 ResourceNotFound: not there
    written = gateway.put(setting["id"], {"type": setting["type"], "properties": setting["properties"]})
    assert written["properties"] == setting["properties"]
    [put] = fake.requests_to("PUT", r"/diagnosticSettings/audit$")
    assert put.param("api-version") == "2021-05-01-preview" and set(put.json) == {"properties"}
    assert gateway.get(setting["id"]) == written
    assert gateway.delete(setting["id"]) is True
    assert gateway.delete(setting["id"]) is False  # 204: already gone


def test_listing_at_a_vault_scope(fake: ArmFake, gateway: ArmResourceGateway) -> None:
    for doc in (diagnostic_setting(), lock(scope=RESOURCE_GROUP), lock(name="vault-lock"), endpoint_connection(),
                pricing()):
        fake.add_resource(doc)
    assert [d["name"] for d in gateway.list_at_scope(VAULT_ID, "Microsoft.Insights/diagnosticSettings")] == ["audit"]
    locks = gateway.list_at_scope(VAULT_ID, "Microsoft.Authorization/locks")
    assert sorted(d["name"] for d in locks) == ["do-not-delete", "vault-lock"]  # inherited from the group too
    assert fake.requests_to("GET", r"/locks$")[0].param("$filter") == "atScope()"
    [connection] = gateway.list_at_scope(VAULT_ID, "Microsoft.KeyVault/vaults/privateEndpointConnections")
    assert connection["properties"]["privateLinkServiceConnectionState"]["status"] == "Approved"
    [plan] = gateway.list_at_scope(VAULT_ID, "Microsoft.Security/pricings")
    assert plan["id"].endswith(f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Security/pricings/KeyVaults")


def test_throttling_is_transient_and_a_refusal_permanent(fake: ArmFake, gateway: ArmResourceGateway) -> None:
    setting = diagnostic_setting()
    fake.inject("GET", r"/diagnosticSettings/audit$", status=503, times=5,
                body={"error": {"code": "ServiceUnavailable", "message": "later"}})
    with pytest.raises(TransientError):
        gateway.get(setting["id"])
    fake.inject("PUT", r"/diagnosticSettings/audit$", status=403,
                body={"error": {"code": "AuthorizationFailed", "message": "no write"}})
    with pytest.raises(PermanentError, match="AuthorizationFailed"):
        gateway.put(setting["id"], {"properties": setting["properties"]})


def test_a_type_it_does_not_read_is_a_permanent_failure(gateway: ArmResourceGateway) -> None:
    with pytest.raises(PermanentError, match="no reader"):
        gateway.get(f"{VAULT_ID}/providers/Microsoft.Authorization/roleAssignments/0b1c2d3e")
