"""What one delivery costs in requests, counted at the HTTPS fake of ARM, Defender and an Event Grid
topic: a reverted access-policy grant reads ARM at most twice (the read that found it, and the
state the targeted remove left) and writes it once; every CloudEvent of a delivery goes out in
one POST."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kvguard.adapters.arm import ArmVaultGateway
from kvguard.adapters.defender import DefenderAlertSink
from kvguard.adapters.eventgrid import DETECTION_TYPE, RESOLVED_TYPE, EventGridAlertSink
from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.pipeline import Pipeline
from kvguard.policy import Policy
from kvguard.ports import AlertSink
from tests.integration.armfake import ArmFake, FakeCredential, Recorded, arm_fake
from tests.integration.test_faults import OWNER, ROGUE, ROGUE_GRANT, VAULT_ID, event, vault_doc

TOPIC_KEY = "topic-key-for-round-trips"
VAULT_PATH = re.compile(r"/providers/Microsoft\.KeyVault/vaults/kv-orders-01(/accessPolicies/\w+)?$", re.IGNORECASE)
EVENTS = r"^/api/events$"


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake(eventgrid_key=TOPIC_KEY) as running:
        running.add_vault(vault_doc(copy.deepcopy(ROGUE_GRANT)))  # the world after the rogue write
        yield running


@pytest.fixture
def ca_bundle(fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    bundle = str(fake.write_ca_bundle(tmp_path / "ca.pem"))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", bundle)  # the Event Grid publisher takes no transport options
    return bundle


@pytest.fixture
def pipeline_for(fake: ArmFake, ca_bundle: str, tmp_path: Path) -> Iterator[Callable[[str], Pipeline]]:
    gateway = ArmVaultGateway(FakeCredential(), endpoint=fake.base_url, connection_verify=ca_bundle)
    store = SQLiteStateStore(tmp_path / "state.db")

    def build(mode: str) -> Pipeline:
        sinks: dict[str, AlertSink] = {
            "raise_defender_alert": DefenderAlertSink(FakeCredential(), endpoint=fake.base_url,
                                                      connection_verify=ca_bundle),
            "publish_detection": EventGridAlertSink(f"{fake.base_url}/api/events", TOPIC_KEY),
        }
        pipeline = Pipeline(gateway=gateway, store=store, policy=Policy.model_validate({"mode": mode}), sinks=sinks)
        store.put_baseline(VAULT_ID, vault_doc(), None, now=pipeline.clock.now())
        return pipeline

    yield build
    store.close()
    gateway.close()


def vault_requests(fake: ArmFake, method: str) -> list[Recorded]:
    return [r for r in fake.requests if r.method == method and VAULT_PATH.search(r.path)]


def test_a_reverted_access_policy_grant_costs_at_most_two_arm_reads_and_one_write(
    fake: ArmFake, pipeline_for: Callable[[str], Pipeline]
) -> None:
    pipeline = pipeline_for("remediate")

    (outcome,) = pipeline.handle(event("c0000000-0000-4000-8000-000000000001"))

    (revert,) = [a for a in outcome.actions if a.handler == "revert_access_policy"]
    assert revert.status == "applied"
    assert [p["objectId"] for p in fake.vault(VAULT_ID)["properties"]["accessPolicies"]] == [OWNER]
    reads = vault_requests(fake, "GET")
    writes = [r for r in fake.requests if r.method in ("PUT", "PATCH", "DELETE") and VAULT_PATH.search(r.path)]
    assert len(reads) <= 2, [r.path for r in reads]
    assert [r.path.rsplit("/", 1)[-1] for r in writes] == ["remove"]
    # The baseline is the state after the revert, as that one read of it showed.
    baseline = pipeline.store.get_baseline(VAULT_ID)
    assert baseline is not None
    assert [p["objectId"] for p in baseline.config["properties"]["accessPolicies"]] == [OWNER]


def test_every_detection_of_a_delivery_goes_out_in_one_event_grid_post(
    fake: ArmFake, pipeline_for: Callable[[str], Pipeline]
) -> None:
    pipeline = pipeline_for("alert")

    (outcome,) = pipeline.handle(event("c0000000-0000-4000-8000-000000000002"))

    rules = {f.rule for f in outcome.findings}
    assert len(rules) >= 2  # a grant of secrets get + list by an unknown caller: several findings
    (post,) = fake.requests_to("POST", EVENTS)
    assert {e["type"] for e in post.json} == {DETECTION_TYPE}
    assert sorted(e["subject"] for e in post.json) == sorted(rules)
    assert len(fake.requests_to("PUT", r"/providers/Microsoft\.Security/assessments/")) == len(rules)


def test_a_reverted_grant_publishes_its_detections_in_one_post_and_its_resolutions_in_another(
    fake: ArmFake, pipeline_for: Callable[[str], Pipeline]
) -> None:
    """The detections go out before the revert's answer is known; the resolutions it brings once
    it has landed: one POST each."""
    pipeline = pipeline_for("remediate")

    (outcome,) = pipeline.handle(event("c0000000-0000-4000-8000-000000000003"))

    assert ROGUE not in [p["objectId"] for p in fake.vault(VAULT_ID)["properties"]["accessPolicies"]]
    detections, resolutions = fake.requests_to("POST", EVENTS)
    assert {e["type"] for e in detections.json} == {DETECTION_TYPE}
    assert len(detections.json) == len(outcome.findings)
    assert {e["type"] for e in resolutions.json} == {RESOLVED_TYPE}
    assert {e["subject"] for e in resolutions.json} >= {"KV-AP-01"}
