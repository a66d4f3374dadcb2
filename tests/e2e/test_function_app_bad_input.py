"""Input that can never succeed, delivered to the Functions app the way the worker decodes it, with
every adapter real (ARM on the local HTTPS fake, state in Azurite): nothing raises into the host,
and every such event is recorded with the reason and its raw payload."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvguard import runtime
from kvguard.pipeline import Pipeline
from kvguard.settings import Settings
from tests.e2e.test_function_app import INTRUDER, ROGUE_GRANT, VAULT_ID, deliver, event_json, vault_doc
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake
from tests.integration.azurite import running_azurite

EVENT_ID = "c0d1e2f3-a4b5-4c6d-8e7f-901a2b3c4d5e"
DEEP = "[" * 100_000 + "]" * 100_000
VAULT_PATH = r"/vaults/kv-billing-eu$"


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake() as running:
        running.add_vault(vault_doc(copy.deepcopy(ROGUE_GRANT)))
        yield running


@pytest.fixture
def installed(fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake.write_ca_bundle(tmp_path / "ca.pem")))
    with running_azurite(tmp_path) as azurite:
        settings = Settings(state_backend="tables", tables_connection=azurite.connection_string,
                            arm_endpoint=fake.base_url)
        pipeline = runtime.build(settings, credential=FakeCredential())
        pipeline.store.put_baseline(VAULT_ID, vault_doc(), None, now=pipeline.clock.now())
        runtime.install(pipeline)
        yield pipeline
        runtime.install(None)


@pytest.mark.parametrize("field", ["claims", "httpRequest"])
def test_json_text_nested_too_deeply_in_a_field_is_rejected_naming_it(
    installed: Pipeline, fake: ArmFake, field: str
) -> None:
    delivery = json.loads(event_json(EVENT_ID, INTRUDER))
    delivery["data"][field] = DEEP

    deliver(json.dumps(delivery))

    (rejected,) = installed.store.list_rejected()
    assert rejected.reason.startswith(f"data.{field}: ")
    assert "nested too deeply" in rejected.reason
    assert rejected.event_id == EVENT_ID
    assert json.loads(rejected.raw)["data"][field] == DEEP
    assert fake.requests == []  # rejected before anything is read


@pytest.mark.parametrize(("body", "headers", "names"), [
    (b"<html><body>Service temporarily moved</body></html>", {"Content-Type": "text/html"}, "not JSON"),
    ([1, 2], {}, "a JSON list, not an object"),
], ids=["html", "array"])
def test_arm_answering_200_with_a_body_that_is_no_object_is_recorded(
    installed: Pipeline, fake: ArmFake, body: object, headers: dict[str, str], names: str
) -> None:
    fake.inject("GET", VAULT_PATH, status=200, body=body, headers=headers)

    deliver(event_json(EVENT_ID, INTRUDER))

    (rejected,) = installed.store.list_rejected()
    assert rejected.reason.startswith("permanent failure: ") and names in rejected.reason
    assert rejected.event_id == EVENT_ID
    assert json.loads(rejected.raw)["id"] == EVENT_ID
    # Acknowledged: Event Grid's redelivery is a duplicate, and ARM is not asked again.
    reads = len(fake.requests_to("GET", VAULT_PATH))
    deliver(event_json(EVENT_ID, INTRUDER))
    assert len(fake.requests_to("GET", VAULT_PATH)) == reads == 1
    assert installed.handle(event_json(EVENT_ID, INTRUDER))[0].outcome == "duplicate"


def test_arm_refusing_the_read_is_recorded_not_raised(installed: Pipeline, fake: ArmFake) -> None:
    fake.inject("GET", VAULT_PATH, status=403,
                body={"error": {"code": "AuthorizationFailed", "message": "no Microsoft.KeyVault/vaults/read"}})

    deliver(event_json(EVENT_ID, INTRUDER))

    (rejected,) = installed.store.list_rejected()
    assert "HTTP 403 AuthorizationFailed: no Microsoft.KeyVault/vaults/read" in rejected.reason
    assert installed.handle(event_json(EVENT_ID, INTRUDER))[0].outcome == "duplicate"
