"""kvguard's own identity and deployment in the pipeline: own writes are `self` only when the
ledger planned them (and cost no read), anything else by the identity raises KV-SELF-01, and a
change to kvguard's own deployment raises KV-SELF-02 whatever the mode."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from detectors.cases import EVENT_SUBSCRIPTION_ID, FUNCTION_APP_ID, VAULT_ID, vault
from kvguard import runtime
from kvguard.deployment import (
    APP_CONFIG_WRITE,
    APP_DELETE,
    APP_STOP,
    APP_WRITE,
    EVENT_SUBSCRIPTION_DELETE,
    SYSTEM_TOPIC_DELETE,
)
from kvguard.flow.own import own_resource_ids
from kvguard.settings import Settings
from kvguard.sim import SIM_IDENTITY, SimVaultGateway, World
from kvguard.vault import VaultConfig
from tests.integration.armfake import FakeCredential
from tests.unit.test_pipeline import AP_WRITE, ROGUE_GRANT, START, TEAM, Env, event


class CountingGateway(SimVaultGateway):
    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.reads = 0

    def get(self, vault_id: str) -> VaultConfig | None:
        self.reads += 1
        return super().get(vault_id)


def reverted(env: Env) -> list[dict[str, Any]]:
    """A rogue grant, reverted; the own-write events the revert came back as (not yet delivered)."""
    outcome = env.change(vault(accessPolicies=[TEAM, ROGUE_GRANT]))
    assert {a.handler: a.status for a in outcome.actions}["revert_access_policy"] == "applied"
    emitted = env.world.take_emitted()
    assert len(emitted) == 1
    return emitted


def own_event(event_id: str, minutes_after_start: int = 0, correlation: str = "corr-other") -> dict[str, Any]:
    raw = event(SIM_IDENTITY, AP_WRITE, "/accessPolicies/add", event_id)
    raw["eventTime"] = (START + timedelta(minutes=minutes_after_start)).isoformat().replace("+00:00", "Z")
    raw["data"]["correlationId"] = correlation
    return raw


def test_a_planned_own_write_is_self_and_costs_no_read() -> None:
    env = Env(gateway=lambda e: CountingGateway(e.world), start=vault(accessPolicies=[TEAM]))
    gateway = env.pipeline.gateway
    assert isinstance(gateway, CountingGateway)
    (follow_up,) = reverted(env)
    reads = gateway.reads

    outcome = env.deliver(follow_up)

    assert outcome.outcome == "self" and outcome.findings == ()
    assert gateway.reads == reads


def test_arms_second_event_of_the_same_write_is_self_too_but_a_write_reusing_its_correlation_id_is_not() -> None:
    """Every event of the write carries the nonce kvguard sent with it; a write of the identity
    that carries the correlation id of kvguard's write, but not its nonce, is someone else's."""
    env = Env(start=vault(accessPolicies=[TEAM]))
    (follow_up,) = reverted(env)
    assert follow_up["data"]["httpRequest"]["clientRequestId"]
    assert env.deliver(follow_up).outcome == "self"
    second = {**follow_up, "id": "evt-second-report-of-the-same-write"}
    assert env.deliver(second).outcome == "self", "same nonce: the same write"
    reused = {**follow_up, "id": "evt-reused-correlation",
              "data": {**follow_up["data"], "httpRequest": {"clientRequestId": "chosen-by-the-caller"}}}
    outcome = env.deliver(reused)
    assert outcome.outcome == "processed", "a correlation id alone never matches"
    assert "KV-SELF-01" in {f.rule for f in outcome.findings}
    without = {**follow_up, "id": "evt-no-request-id", "data": {k: v for k, v in follow_up["data"].items()
                                                                 if k != "httpRequest"}}
    assert "KV-SELF-01" in {f.rule for f in env.deliver(without).findings}


def test_an_own_write_whose_entry_is_older_than_minutes_is_not_self() -> None:
    """The nonce is matched within minutes of its entry (the write follows it at once): an event
    dated later than that is no event of the write, whatever it carries."""
    env = Env(start=vault(accessPolicies=[TEAM]))
    (follow_up,) = reverted(env)
    late = {**follow_up, "id": "evt-late",
            "eventTime": (START + timedelta(minutes=30)).isoformat().replace("+00:00", "Z")}
    assert "KV-SELF-01" in {f.rule for f in env.deliver(late).findings}
    assert env.deliver(follow_up).outcome == "self"


def test_a_dead_lettered_own_write_redriven_days_later_is_still_self() -> None:
    env = Env(start=vault(accessPolicies=[TEAM]))
    (follow_up,) = reverted(env)

    env.world.clock.advance(timedelta(days=3))  # judged by when ARM made the write, not by delivery

    assert env.deliver(follow_up).outcome == "self"


def test_an_unplanned_write_by_the_identity_is_processed_with_kv_self_01() -> None:
    env = Env(gateway=lambda e: CountingGateway(e.world), start=vault(accessPolicies=[TEAM]))
    env.world.put(vault(accessPolicies=[TEAM, ROGUE_GRANT]))

    outcome = env.deliver(own_event("evt-unplanned"))

    assert outcome.outcome == "processed"
    assert {"KV-SELF-01", "KV-AP-01"} <= {f.rule for f in outcome.findings}
    gateway = env.pipeline.gateway
    assert isinstance(gateway, CountingGateway) and gateway.reads >= 1
    assert env.assessment("KV-SELF-01") == "Unhealthy"
    assert ROGUE_GRANT["objectId"] not in {p.principal.object_id for p in env.current().access_policies}
    # The revert kvguard made in answer is its own planned write again.
    assert [o.outcome for o in env.own_writes()] == ["self"]


def test_an_event_from_before_kvguard_planned_its_write_does_not_take_the_entry() -> None:
    env = Env(start=vault(accessPolicies=[TEAM]))
    env.world.clock.advance(timedelta(hours=1))
    (follow_up,) = reverted(env)

    earlier = env.deliver(own_event("evt-earlier", minutes_after_start=10))

    assert "KV-SELF-01" in {f.rule for f in earlier.findings}
    assert env.deliver(follow_up).outcome == "self", "the entry was left for the write it was noted for"


def test_a_change_to_kvguards_deployment_alerts_in_observe_mode_and_is_claimed_once() -> None:
    env = Env(mode="observe", own_resource_ids=[EVENT_SUBSCRIPTION_ID, FUNCTION_APP_ID])
    deleted = event("e7d6c5b4-a392-4817-9605-f4e3d2c1b0a9", EVENT_SUBSCRIPTION_DELETE, event_id="evt-es-deleted",
                    event_type="Microsoft.Resources.ResourceDeleteSuccess", resource=EVENT_SUBSCRIPTION_ID.lower())

    outcome = env.deliver(deleted)

    assert (outcome.outcome, outcome.vault, outcome.resource) == ("processed", None, EVENT_SUBSCRIPTION_ID)
    assert [f.rule for f in outcome.findings] == ["KV-SELF-02"]
    assert {a.handler: a.status for a in outcome.actions} == {"raise_defender_alert": "applied",
                                                             "publish_detection": "applied"}
    keys = list(outcome.to_json())
    assert keys[keys.index("vault") + 1] == "resource"  # every record: the resource right after the vault
    assert [f.rule for f in env.store.open_findings(EVENT_SUBSCRIPTION_ID)] == ["KV-SELF-02"]
    again = env.deliver(deleted)
    assert (again.outcome, again.resource) == ("duplicate", EVENT_SUBSCRIPTION_ID)
    # The same operation on a resource that is not kvguard's is no vault change: ignored.
    other = event("x", EVENT_SUBSCRIPTION_DELETE, event_id="evt-other",
                  resource=EVENT_SUBSCRIPTION_ID.replace("kvguard-prod", "someone-elses"))
    assert env.deliver(other).outcome == "ignored"
    assert VAULT_ID not in {r.vault_id for r in env.store.list_audit()}


def test_an_own_identity_event_dated_year_1_or_9999_is_judged_not_overflowed() -> None:
    env = Env(start=vault(accessPolicies=[TEAM]))
    reverted(env)
    for moment in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"):
        raw = own_event(f"evt-dated-{moment[:4]}")
        raw["eventTime"] = moment
        outcome = env.deliver(raw)
        assert outcome.outcome == "processed"
        assert "KV-SELF-01" in {f.rule for f in outcome.findings}


def test_stopping_deleting_or_writing_kvguards_app_and_deleting_its_topic_raise_kv_self_02() -> None:
    env = Env(mode="observe", own_resource_ids=[EVENT_SUBSCRIPTION_ID, FUNCTION_APP_ID])
    topic = EVENT_SUBSCRIPTION_ID.split("/eventSubscriptions/")[0]
    changes = [(APP_WRITE, FUNCTION_APP_ID, FUNCTION_APP_ID, "Microsoft.Resources.ResourceWriteSuccess"),
               (APP_STOP, FUNCTION_APP_ID, FUNCTION_APP_ID, "Microsoft.Resources.ResourceActionSuccess"),
               (APP_DELETE, FUNCTION_APP_ID, FUNCTION_APP_ID, "Microsoft.Resources.ResourceDeleteSuccess"),
               (SYSTEM_TOPIC_DELETE, topic, EVENT_SUBSCRIPTION_ID, "Microsoft.Resources.ResourceDeleteSuccess")]
    for index, (operation, subject, owned, event_type) in enumerate(changes):
        outcome = env.deliver(event("e7d6c5b4-a392-4817-9605-f4e3d2c1b0a9", operation, event_id=f"evt-own-{index}",
                                    event_type=event_type, resource=subject))
        assert (outcome.outcome, outcome.resource) == ("processed", owned), operation
        assert [f.rule for f in outcome.findings] == ["KV-SELF-02"], operation


def test_clearing_the_own_resource_ids_and_restarting_still_judges_the_change_that_cleared_them(
    tmp_path: Path
) -> None:
    """The ids are remembered in the state store when the app is built; the app built again with the
    setting cleared still knows them, so the app-settings write that cleared it raises KV-SELF-02."""
    state = str(tmp_path / "state.db")
    configured = Settings(state_backend="sqlite", sqlite_path=state, own_resource_ids=[EVENT_SUBSCRIPTION_ID,
                                                                                       FUNCTION_APP_ID])
    runtime.build(configured, credential=FakeCredential()).store.close()
    restarted = runtime.build(Settings(state_backend="sqlite", sqlite_path=state, own_resource_ids=[]),
                              credential=FakeCredential())
    assert restarted.policy.own_resource_ids == []
    cleared = event("e7d6c5b4-a392-4817-9605-f4e3d2c1b0a9", APP_CONFIG_WRITE, event_id="evt-cleared",
                    resource=f"{FUNCTION_APP_ID}/config/appsettings")

    (outcome,) = restarted.handle(json.dumps(cleared))

    assert (outcome.outcome, outcome.resource) == ("processed", FUNCTION_APP_ID)
    assert [f.rule for f in outcome.findings] == ["KV-SELF-02"]
    assert own_resource_ids(restarted) == [EVENT_SUBSCRIPTION_ID, FUNCTION_APP_ID]
