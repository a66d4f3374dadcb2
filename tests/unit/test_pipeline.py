"""The pipeline end to end, in the simulated world with the SQLite state store."""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from detectors.cases import (
    APP_TEAM,
    FOREIGN_SUBSCRIPTION,
    INTRUDER,
    OPERATOR,
    SUBSCRIPTION,
    TENANT,
    VAULT_ID,
    acls,
    grant,
    subnet,
    vault,
)
from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.detection import assessment_name
from kvguard.ids import vault_key
from kvguard.outcome import Outcome
from kvguard.pipeline import Pipeline
from kvguard.policy import Policy
from kvguard.ports import Alert, TransientError
from kvguard.sim import SIM_IDENTITY, SimClock, SimDefender, SimTopic, SimVaultGateway, World
from kvguard.vault import AccessPolicy, VaultConfig

START = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
DEPLOYER = "d3d3d3d3-0000-4000-8000-00000000d3d3"  # the team's deployment pipeline
ROGUE_CALLER = "0badc0de-1111-4222-8333-444455556666"
AP_WRITE = "Microsoft.KeyVault/vaults/accessPolicies/write"
VAULT_WRITE = "Microsoft.KeyVault/vaults/write"


class Env:
    """A simulated world, a state store and a pipeline wired like replay wires them."""

    def __init__(self, mode: str = "remediate", gateway: Any = None, baselined: bool = True,
                 start: dict[str, Any] | None = None, **policy: Any) -> None:
        self.world = World(clock=SimClock(START))
        self.store = SQLiteStateStore(":memory:")
        self.policy = Policy(mode=mode, own_principal_ids=[SIM_IDENTITY], **policy)  # type: ignore[arg-type]
        self.sim = SimVaultGateway(self.world)
        self.calls: list[str] = []
        self.pipeline = Pipeline(
            gateway=gateway(self) if gateway is not None else self.sim,
            store=self.store,
            policy=self.policy,
            sinks={"raise_defender_alert": SimDefender(self.world), "publish_detection": SimTopic(self.world)},
            clock=self.world.clock,
        )
        self.world.put(start or vault())
        if baselined:
            self.store.put_baseline(VAULT_ID, start or vault(), None, now=START)
        self.count = 0

    def change(self, doc: dict[str, Any], caller: str = ROGUE_CALLER, operation: str = AP_WRITE,
               suffix: str = "/accessPolicies/add", event_id: str | None = None) -> Outcome:
        """The world changes, and Event Grid delivers the event for it."""
        self.world.put(doc)
        return self.deliver(event(caller, operation, suffix, event_id or self.next_id()))

    def deliver(self, raw: Any) -> Outcome:
        [outcome] = self.pipeline.handle(raw)
        return outcome

    def next_id(self) -> str:
        self.count += 1
        return f"evt-{self.count:04d}"

    def own_writes(self) -> list[Outcome]:
        return [o for raw in self.world.take_emitted() for o in self.pipeline.handle(raw)]

    def current(self) -> VaultConfig:
        config = self.sim.get(VAULT_ID)
        assert config is not None
        return config

    def baseline(self) -> VaultConfig:
        stored = self.store.get_baseline(VAULT_ID)
        assert stored is not None
        return VaultConfig.from_arm(stored.config)

    def assessment(self, rule: str) -> str | None:
        entry = self.world.assessments.get(f"{vault_key(VAULT_ID)}|{assessment_name(rule)}")
        return entry["status"] if entry else None


def event(caller: str, operation: str = AP_WRITE, suffix: str = "", event_id: str = "evt-x",
          event_type: str = "Microsoft.Resources.ResourceWriteSuccess", resource: str = VAULT_ID) -> dict[str, Any]:
    uri = resource + suffix
    return {
        "id": event_id,
        "topic": f"/subscriptions/{SUBSCRIPTION}",
        "subject": uri,
        "eventType": event_type,
        "eventTime": "2026-06-01T09:00:00Z",
        "dataVersion": "2",
        "data": {
            "authorization": {"scope": uri, "action": operation, "evidence": {"principalId": caller}},
            "claims": {"oid": caller, "tid": TENANT},
            "httpRequest": {"clientIpAddress": "10.1.2.3"},
            "resourceUri": uri,
            "operationName": operation,
            "status": "Succeeded" if event_type.endswith("Success") else "Failed",
            "subscriptionId": SUBSCRIPTION,
            "tenantId": TENANT,
        },
    }


def principals(config: VaultConfig) -> dict[str, dict[str, list[str]]]:
    return {p.principal.object_id: {c: sorted(v) for c, v in p.permissions.items() if v}
            for p in config.access_policies}


def statuses(outcome: Outcome) -> dict[str, str]:
    return {a.handler: a.status for a in outcome.actions if not a.detail.startswith("resolved")}


ROGUE_GRANT = grant(INTRUDER, secrets=["get", "list"])
TEAM = grant(APP_TEAM, secrets=["get"], keys=["get", "wrapKey", "unwrapKey"])
OPERATOR_GRANT = grant(OPERATOR, certificates=["get"])


# --- remediation ------------------------------------------------------------------------------------


def test_a_rogue_grant_is_reverted_and_the_other_principals_stay() -> None:
    env = Env(start=vault(accessPolicies=[TEAM, OPERATOR_GRANT]))
    outcome = env.change(vault(accessPolicies=[TEAM, OPERATOR_GRANT, ROGUE_GRANT]))
    assert outcome.outcome == "processed"
    assert "KV-AP-01" in {f.rule for f in outcome.findings}
    assert statuses(outcome)["revert_access_policy"] == "applied"
    assert principals(env.current()) == {
        APP_TEAM: {"keys": ["get", "unwrapkey", "wrapkey"], "secrets": ["get"]},
        OPERATOR: {"certificates": ["get"]},
    }
    assert principals(env.baseline()) == principals(env.current())


def test_a_widened_grant_loses_only_the_added_permissions() -> None:
    env = Env()
    widened = grant(APP_TEAM, secrets=["get", "list", "delete"], keys=["get", "wrapKey", "unwrapKey"])
    outcome = env.change(vault(accessPolicies=[widened]), suffix="/accessPolicies/replace")
    assert "KV-AP-02" in {f.rule for f in outcome.findings}
    assert statuses(outcome)["revert_access_policy"] == "applied"
    assert principals(env.current()) == {APP_TEAM: {"keys": ["get", "unwrapkey", "wrapkey"], "secrets": ["get"]}}


def test_alerts_are_raised_before_remediation_while_the_grant_still_stands() -> None:
    env = Env()
    seen: list[tuple[str, bool]] = []

    class Witness:
        def raise_alert(self, alert: Alert) -> str:
            seen.append((alert.rule, INTRUDER in principals(env.current())))
            return "seen"

        def resolve(self, vault_id: str, rule: str) -> str:
            return "resolved"

    env.pipeline.sinks["notify_webhook"] = Witness()
    outcome = env.change(vault(accessPolicies=[TEAM, ROGUE_GRANT]))
    handlers = [a.handler for a in outcome.actions]
    assert handlers.index("raise_defender_alert") < handlers.index("revert_access_policy")
    assert handlers.index("publish_detection") < handlers.index("revert_access_policy")
    assert handlers.index("notify_webhook") < handlers.index("revert_access_policy")
    assert ("KV-AP-01", True) in seen
    assert INTRUDER not in principals(env.current())


def test_sinks_that_answer_in_process_are_called_on_the_pipeline_thread() -> None:
    env = Env()
    threads: list[str] = []

    class InProcess:
        answers_in_process = True

        def __init__(self, fails: bool) -> None:
            self.fails = fails

        def raise_alert(self, alert: Alert) -> str:
            threads.append(threading.current_thread().name)
            if self.fails:
                raise RuntimeError("the sink broke")
            return "seen"

        def resolve(self, vault_id: str, rule: str) -> str:
            return "resolved"

    env.pipeline.sinks["raise_defender_alert"] = InProcess(fails=False)
    env.pipeline.sinks["publish_detection"] = InProcess(fails=False)
    outcome = env.change(vault(accessPolicies=[TEAM, ROGUE_GRANT]))
    assert statuses(outcome)["revert_access_policy"] == "applied"
    assert set(threads) == {threading.current_thread().name}
    env.world.take_emitted()
    # One sink without the mark: every alert goes through the pool, as before.
    threads.clear()
    env.pipeline.sinks["publish_detection"] = SimTopic(env.world)
    env.pipeline.sinks["notify_webhook"] = type("Pooled", (), {"raise_alert": lambda self, a: threads.append(
        threading.current_thread().name) or "seen", "resolve": lambda self, v, r: "resolved"})()
    env.change(vault(accessPolicies=[TEAM, ROGUE_GRANT]), event_id="evt-pooled")
    assert threads and threading.current_thread().name not in threads
    env.world.take_emitted()
    # An in-process sink that raises is recorded failed, as through the pool, and the revert is still applied.
    del env.pipeline.sinks["notify_webhook"]
    env.pipeline.sinks["raise_defender_alert"] = InProcess(fails=True)
    env.pipeline.sinks["publish_detection"] = InProcess(fails=False)
    outcome = env.change(vault(accessPolicies=[TEAM, ROGUE_GRANT]), event_id="evt-raises")
    assert statuses(outcome)["raise_defender_alert"] == "failed"
    assert statuses(outcome)["revert_access_policy"] == "applied"
    assert INTRUDER not in principals(env.current())


def test_our_own_write_comes_back_as_self() -> None:
    env = Env()
    env.change(vault(accessPolicies=[TEAM, ROGUE_GRANT]))
    own = env.own_writes()
    assert [o.outcome for o in own] == ["self"]
    assert SIM_IDENTITY in own[0].reason
    assert not own[0].findings and not own[0].actions
    assert env.world.take_emitted() == []


def test_a_redelivered_event_is_a_duplicate_and_does_nothing() -> None:
    env = Env()
    first = env.change(vault(accessPolicies=[TEAM, ROGUE_GRANT]), event_id="evt-redeliver")
    assert first.outcome == "processed"
    env.world.take_emitted()
    env.world.put(vault(accessPolicies=[TEAM, ROGUE_GRANT]))  # the grant is back, yet the event is the old one
    again = env.deliver(event(ROGUE_CALLER, suffix="/accessPolicies/add", event_id="evt-redeliver"))
    assert (again.outcome, again.actions) == ("duplicate", ())
    assert INTRUDER in principals(env.current())


def test_a_transient_failure_releases_the_claim_so_a_redelivery_is_processed() -> None:
    class FlakyGateway:
        def __init__(self, env: Env) -> None:
            self.inner = env.sim
            self.failures = 1

        def get(self, vault_id: str) -> VaultConfig | None:
            if self.failures:
                self.failures -= 1
                raise TransientError("ARM answered 503")
            return self.inner.get(vault_id)

        def update(self, vault_id: str, properties: Mapping[str, Any]) -> VaultConfig:
            return self.inner.update(vault_id, properties)

        def remove_access_policy(self, vault_id: str, entry: AccessPolicy) -> VaultConfig:
            return self.inner.remove_access_policy(vault_id, entry)

        def list_vaults(self, subscription_id: str) -> list[VaultConfig]:
            return self.inner.list_vaults(subscription_id)

    env = Env(gateway=FlakyGateway)
    env.world.put(vault(accessPolicies=[TEAM, ROGUE_GRANT]))
    raw = event(ROGUE_CALLER, suffix="/accessPolicies/add", event_id="evt-flaky")
    with pytest.raises(TransientError, match="503"):
        env.pipeline.handle(raw)
    retried = env.deliver(raw)
    assert retried.outcome == "processed"
    assert statuses(retried)["revert_access_policy"] == "applied"
    assert INTRUDER not in principals(env.current())


class ForbiddenGateway:
    """Reads work; every write is refused as ARM refuses a caller without the role."""

    def __init__(self, env: Env) -> None:
        self.inner = env.sim

    def get(self, vault_id: str) -> VaultConfig | None:
        return self.inner.get(vault_id)

    def update(self, vault_id: str, properties: Mapping[str, Any]) -> VaultConfig:
        raise PermissionError("AuthorizationFailed")

    def remove_access_policy(self, vault_id: str, entry: AccessPolicy) -> VaultConfig:
        raise PermissionError("AuthorizationFailed")

    def list_vaults(self, subscription_id: str) -> list[VaultConfig]:
        return self.inner.list_vaults(subscription_id)


def test_a_failed_remediation_keeps_the_baseline_and_the_alert() -> None:
    env = Env(gateway=ForbiddenGateway)
    outcome = env.change(vault(accessPolicies=[TEAM, ROGUE_GRANT]))
    revert = next(a for a in outcome.actions if a.handler == "revert_access_policy")
    assert revert.status == "failed"
    assert "PermissionError: AuthorizationFailed" in revert.detail
    assert env.assessment("KV-AP-01") == "Unhealthy"
    assert INTRUDER not in principals(env.baseline())
    assert "KV-AP-01" in {f.rule for f in env.store.open_findings(VAULT_ID)}
    again = env.deliver(event(OPERATOR, VAULT_WRITE, event_id="evt-next"))
    assert "KV-AP-01" in {f.rule for f in again.findings}
    assert env.assessment("KV-AP-01") == "Unhealthy"


def test_dry_run_plans_and_leaves_the_vault_alone() -> None:
    env = Env(dry_run=True)
    outcome = env.change(vault(accessPolicies=[TEAM, ROGUE_GRANT]))
    assert statuses(outcome)["revert_access_policy"] == "planned"
    assert INTRUDER in principals(env.current())
    assert env.world.take_emitted() == []


# --- modes -----------------------------------------------------------------------------------------


def test_alert_mode_alerts_and_never_changes_the_vault() -> None:
    env = Env(mode="alert")
    changed = vault(accessPolicies=[TEAM, ROGUE_GRANT], publicNetworkAccess="Enabled")
    outcome = env.change(changed)
    assert statuses(outcome)["raise_defender_alert"] == "applied"
    assert statuses(outcome)["revert_access_policy"] == "skipped"
    assert statuses(outcome)["restore_network"] == "skipped"
    assert env.world.vaults[vault_key(VAULT_ID)] == changed
    assert env.world.take_emitted() == []
    assert env.assessment("KV-AP-01") == "Unhealthy"


def test_observe_mode_records_without_alerting() -> None:
    env = Env(mode="observe")
    outcome = env.change(vault(accessPolicies=[TEAM, ROGUE_GRANT]))
    assert outcome.findings
    assert {a.status for a in outcome.actions} == {"skipped"}
    assert env.world.assessments == {}
    assert env.world.published == []
    assert INTRUDER in principals(env.current())
    assert env.store.list_audit(VAULT_ID)[-1].outcome["findings"]


def test_an_approved_caller_changes_the_baseline_without_remediation() -> None:
    env = Env(approved_callers=[DEPLOYER])
    accepted = vault(accessPolicies=[TEAM, grant(OPERATOR, secrets=["get"])])
    outcome = env.change(accepted, caller=DEPLOYER)
    assert statuses(outcome).get("revert_access_policy") == "skipped"
    assert OPERATOR in principals(env.current())
    assert OPERATOR in principals(env.baseline())


def test_the_baseline_tag_can_switch_a_vault_to_observe() -> None:
    env = Env(start=vault(tags={"KvGuard-Mode": "observe"}))
    outcome = env.change(vault(tags={"KvGuard-Mode": "observe"}, accessPolicies=[TEAM, ROGUE_GRANT]))
    assert {a.status for a in outcome.actions} == {"skipped"}
    assert INTRUDER in principals(env.current())


def test_a_mode_tag_in_the_change_itself_does_not_switch_kvguard_off() -> None:
    env = Env()
    outcome = env.change(vault(tags={"kvguard-mode": "observe"}, accessPolicies=[TEAM, ROGUE_GRANT]))
    assert statuses(outcome)["revert_access_policy"] == "applied"
    assert INTRUDER not in principals(env.current())
    # the tag stays on the vault, but the accepted baseline keeps steering by the old (absent) tag
    assert env.current().tag("kvguard-mode") == "observe"
    assert env.baseline().tag("kvguard-mode") is None
    again = env.change(vault(tags={"kvguard-mode": "observe"}, accessPolicies=[TEAM, ROGUE_GRANT]))
    assert statuses(again)["revert_access_policy"] == "applied"


def test_an_approved_caller_may_change_the_mode_tag() -> None:
    env = Env(approved_callers=[DEPLOYER])
    env.change(vault(tags={"kvguard-mode": "alert"}), caller=DEPLOYER, operation=VAULT_WRITE, suffix="")
    assert env.baseline().tag("kvguard-mode") == "alert"
    outcome = env.change(vault(tags={"kvguard-mode": "alert"}, accessPolicies=[TEAM, ROGUE_GRANT]))
    assert statuses(outcome)["revert_access_policy"] == "skipped"


def test_a_failed_write_by_an_approved_caller_does_not_accept_someone_elses_change() -> None:
    env = Env(approved_callers=[DEPLOYER])
    env.world.put(vault(accessPolicies=[TEAM, ROGUE_GRANT]))  # the intruder's event is still on its way
    failed = env.deliver(event(DEPLOYER, VAULT_WRITE, event_id="evt-failed",
                               event_type="Microsoft.Resources.ResourceWriteFailure"))
    assert statuses(failed).get("revert_access_policy") == "skipped"
    assert INTRUDER not in principals(env.baseline())  # not accepted in the approved caller's name
    late = env.deliver(event(ROGUE_CALLER, AP_WRITE, "/accessPolicies/add", "evt-intruder"))
    assert statuses(late)["revert_access_policy"] == "applied"
    assert INTRUDER not in principals(env.current())


def test_a_callerless_event_leaves_the_decision_to_the_event_that_names_the_caller() -> None:
    env = Env(approved_callers=[DEPLOYER])
    cmk = grant(OPERATOR, keys=["get", "wrapKey", "unwrapKey"])
    env.world.put(vault(accessPolicies=[TEAM, cmk]))
    changed = {
        "id": "vapc-1", "topic": VAULT_ID, "subject": "kv-payments",
        "eventType": "Microsoft.KeyVault.VaultAccessPolicyChanged", "eventTime": "2026-06-01T09:00:00Z",
        "dataVersion": "1", "data": {"Id": None, "VaultName": "kv-payments", "ObjectType": "Vault"},
    }
    first = env.deliver(changed)
    assert statuses(first).get("revert_access_policy") == "skipped"
    assert OPERATOR in principals(env.current())
    approved = env.deliver(event(DEPLOYER, AP_WRITE, "/accessPolicies/add", "evt-deployer"))
    assert statuses(approved).get("revert_access_policy") == "skipped"
    assert OPERATOR in principals(env.baseline())  # accepted by the event that named the approved caller


# --- open findings --------------------------------------------------------------------------------


def test_remediated_findings_are_closed_and_defender_turns_healthy() -> None:
    env = Env()
    outcome = env.change(vault(accessPolicies=[TEAM, ROGUE_GRANT]))
    assert not [a for a in outcome.actions if a.detail.startswith("resolved")]  # never counted as alerts
    resolved = list(outcome.resolutions)
    assert {a.handler for a in resolved} == {"raise_defender_alert", "publish_detection"}
    assert "KV-AP-01" in resolved[0].rules
    assert env.assessment("KV-AP-01") == "Healthy"
    assert "KV-AP-01" not in {f.rule for f in env.store.open_findings(VAULT_ID)}
    assert any(p["type"] == "kvguard.detection.resolved" and p["subject"] == "KV-AP-01" for p in env.world.published)


def test_an_alerted_diff_finding_closes_when_the_team_puts_the_vault_back() -> None:
    env = Env(mode="alert")
    off = env.change(vault(enableRbacAuthorization=False), caller=OPERATOR, operation=VAULT_WRITE, suffix="")
    assert "KV-PROT-03" not in {f.rule for f in off.findings}  # the default vault has RBAC off already
    env = Env(mode="alert", start=vault(enableRbacAuthorization=True))
    switched = env.change(vault(enableRbacAuthorization=False), caller=OPERATOR, operation=VAULT_WRITE, suffix="")
    assert "KV-PROT-03" in {f.rule for f in switched.findings}
    env.world.clock.advance(timedelta(minutes=30))
    unrelated = env.change(vault(enableRbacAuthorization=False, tags={"owner": "x"}), caller=OPERATOR,
                           operation=VAULT_WRITE, suffix="")
    assert "KV-PROT-03" in {f.rule for f in env.store.open_findings(VAULT_ID)}  # still switched off
    assert not [r for r in unrelated.resolutions if "KV-PROT-03" in r.rules]
    back = env.change(vault(enableRbacAuthorization=True), caller=OPERATOR, operation=VAULT_WRITE, suffix="")
    assert "KV-PROT-03" not in {f.rule for f in env.store.open_findings(VAULT_ID)}
    assert any("KV-PROT-03" in r.rules for r in back.resolutions)
    assert env.assessment("KV-PROT-03") == "Healthy"


def test_a_posture_finding_closes_when_someone_puts_the_condition_right() -> None:
    env = Env(mode="alert")
    opened = env.change(vault(publicNetworkAccess="Enabled", networkAcls=acls(default_action="Allow")),
                        operation=VAULT_WRITE, suffix="")
    assert {"KV-NET-01", "KV-NET-02"} <= {f.rule for f in opened.findings}
    assert env.assessment("KV-NET-01") == "Unhealthy"
    closed = env.change(vault(), caller=OPERATOR, operation=VAULT_WRITE, suffix="")
    assert not {"KV-NET-01", "KV-NET-02"} & {f.rule for f in closed.findings}
    assert (env.assessment("KV-NET-01"), env.assessment("KV-NET-02")) == ("Healthy", "Healthy")
    assert not {"KV-NET-01", "KV-NET-02"} & {f.rule for f in env.store.open_findings(VAULT_ID)}


def test_network_opened_to_the_internet_is_closed_again() -> None:
    env = Env()
    outcome = env.change(vault(publicNetworkAccess="Enabled", networkAcls=acls("Allow", ip_rules=("0.0.0.0/0",))),
                         operation=VAULT_WRITE, suffix="")
    assert statuses(outcome)["restore_network"] == "applied"
    current = env.current()
    assert (current.public_network_access, current.default_action, current.ip_rules) == ("disabled", "deny",
                                                                                         frozenset())


def test_only_the_flagged_subnet_is_removed_from_the_firewall() -> None:
    env = Env(remediate_threshold=50)
    own, foreign = subnet(name="snet-batch"), subnet(FOREIGN_SUBSCRIPTION, vnet="vnet-x", name="snet-x")
    outcome = env.change(vault(networkAcls=acls(subnets=(own, foreign))), operation=VAULT_WRITE, suffix="")
    assert [f.rule for f in outcome.findings if f.rule.startswith("KV-NET")] == ["KV-NET-05"]
    assert statuses(outcome)["restore_network"] == "applied"
    assert env.current().virtual_network_rules == {own.lower()}


@pytest.mark.parametrize(("on", "off"), [(True, False), ("true", "False")], ids=["booleans", "text"])
def test_rbac_switched_off_is_switched_back_on(on: Any, off: Any) -> None:
    env = Env(start=vault(enableRbacAuthorization=on))
    outcome = env.change(vault(enableRbacAuthorization=off), operation=VAULT_WRITE, suffix="")
    assert "KV-PROT-03" in {f.rule for f in outcome.findings}
    assert statuses(outcome)["restore_settings"] == "applied"
    assert env.current().enable_rbac_authorization is True
    assert env.baseline().enable_rbac_authorization is True


# --- baselines and lifecycle ----------------------------------------------------------------------


def test_first_sight_records_a_baseline() -> None:
    env = Env(baselined=False)
    first = env.deliver(event(OPERATOR, VAULT_WRITE, event_id="evt-first"))
    assert first.outcome == "processed"
    assert not {"KV-AP-01", "KV-AP-02"} & {f.rule for f in first.findings}
    stored = env.store.get_baseline(VAULT_ID)
    assert stored is not None and stored.deleted is False
    assert stored.config == vault()
    quiet = env.deliver(event(OPERATOR, VAULT_WRITE, event_id="evt-second"))
    assert not quiet.findings
    assert quiet.reason == "no finding: the change is within policy"


def test_the_baseline_is_rewritten_only_when_what_it_is_compared_on_changes() -> None:
    env = Env(mode="alert")
    stored = env.store.get_baseline(VAULT_ID)
    assert stored is not None
    env.change(vault(tags={"owner": "payments"}), caller=OPERATOR, operation=VAULT_WRITE, suffix="")
    untouched = env.store.get_baseline(VAULT_ID)
    assert untouched is not None and untouched.etag == stored.etag  # a tag is not a security setting
    env.change(vault(tags={"owner": "payments"}, publicNetworkAccess="Enabled"), caller=OPERATOR,
               operation=VAULT_WRITE, suffix="")
    accepted = env.store.get_baseline(VAULT_ID)
    assert accepted is not None and accepted.etag != stored.etag
    assert accepted.config["properties"]["publicNetworkAccess"] == "Enabled"


def test_delete_marks_the_baseline_deleted_and_a_recreate_fires_kv_life_03() -> None:
    env = Env()
    env.world.delete(VAULT_ID)
    deleted = env.deliver(event(ROGUE_CALLER, "Microsoft.KeyVault/vaults/delete", event_id="evt-delete",
                                event_type="Microsoft.Resources.ResourceDeleteSuccess"))
    assert "KV-LIFE-01" in {f.rule for f in deleted.findings}
    stored = env.store.get_baseline(VAULT_ID)
    assert stored is not None and stored.deleted is True
    assert stored.config == vault()
    env.world.clock.advance(timedelta(minutes=30))
    recreated = env.change(vault(accessPolicies=[TEAM, ROGUE_GRANT]), operation=VAULT_WRITE, suffix="")
    rules = {f.rule for f in recreated.findings}
    assert "KV-LIFE-03" in rules
    stored = env.store.get_baseline(VAULT_ID)
    assert stored is not None and stored.deleted is False


def test_a_purge_is_critical() -> None:
    env = Env()
    deleted_id = (f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.KeyVault/locations/westeurope"
                  "/deletedVaults/kv-payments")
    outcome = env.deliver(event(ROGUE_CALLER, "Microsoft.KeyVault/locations/deletedVaults/purge/action",
                                event_id="evt-purge", event_type="Microsoft.Resources.ResourceActionSuccess",
                                resource=deleted_id))
    assert "KV-LIFE-02" in {f.rule for f in outcome.findings}
    assert outcome.severity == "critical"
    assert outcome.vault == deleted_id  # never deleted while kvguard watched: only the event's id is known


def test_a_purge_is_reported_under_the_id_of_the_vault_that_was_deleted() -> None:
    env = Env()
    env.world.delete(VAULT_ID)
    env.deliver(event(ROGUE_CALLER, "Microsoft.KeyVault/vaults/delete", event_id="evt-delete",
                      event_type="Microsoft.Resources.ResourceDeleteSuccess"))
    deleted_id = (f"/subscriptions/{SUBSCRIPTION.upper()}/providers/Microsoft.KeyVault/locations/westeurope"
                  "/deletedVaults/KV-PAYMENTS")
    outcome = env.deliver(event(ROGUE_CALLER, "Microsoft.KeyVault/locations/deletedVaults/purge/action",
                                event_id="evt-purge", event_type="Microsoft.Resources.ResourceActionSuccess",
                                resource=deleted_id))
    assert "KV-LIFE-02" in {f.rule for f in outcome.findings}
    assert outcome.vault == VAULT_ID


# --- records ---------------------------------------------------------------------------------------


def test_the_audit_record_holds_before_and_after_of_every_action() -> None:
    env = Env()
    env.change(vault(accessPolicies=[TEAM, ROGUE_GRANT]), event_id="evt-audited")
    [record] = [r for r in env.store.list_audit(VAULT_ID) if r.event_id == "evt-audited"]
    revert = next(a for a in record.outcome["actions"] if a["handler"] == "revert_access_policy")
    assert revert["status"] == "applied"
    assert revert["before"] == [{"tenantId": TENANT, "objectId": INTRUDER, "permissions": {"secrets": ["get", "list"]}}]
    assert revert["after"] == [None]
    assert revert["rules"] == ["KV-AP-01"]
    assert record.outcome["explanation"]
    assert record.outcome["findings"][0]["evidence"]


def test_rejected_payloads_are_recorded_with_the_raw_text() -> None:
    env = Env()
    bad = event(ROGUE_CALLER, event_id="evt-bad")
    del bad["data"]["resourceUri"]
    outcomes = env.pipeline.handle([bad, "not an object"])
    assert [o.outcome for o in outcomes] == ["rejected", "rejected"]
    assert outcomes[0].reason.startswith("data.resourceUri")
    text = env.pipeline.handle(b"{broken")
    assert text[0].outcome == "rejected"
    stored = env.store.list_rejected()
    assert [r.event_id for r in stored] == ["evt-bad", None, None]
    assert stored[0].reason == outcomes[0].reason
    assert '"evt-bad"' in stored[0].raw
    assert stored[2].raw == "{broken"


def test_events_that_are_not_vault_changes_are_ignored() -> None:
    env = Env()
    snapshot = copy.deepcopy(env.world.vaults)
    storage = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st1"
    ignored = env.deliver(event(ROGUE_CALLER, "Microsoft.Storage/storageAccounts/write", resource=storage,
                                event_id="evt-storage"))
    assert ignored.outcome == "ignored"
    other = env.deliver(event(ROGUE_CALLER, "Microsoft.KeyVault/vaults/deploy/action", event_id="evt-deploy",
                              event_type="Microsoft.Resources.ResourceActionSuccess"))
    assert (other.outcome, other.vault) == ("ignored", VAULT_ID)
    assert env.world.vaults == snapshot
    assert env.store.list_audit() == []


@pytest.mark.parametrize(("rules", "status", "protected"),
                         [({}, "skipped", None), ({"KV-PROT-01": {"remediate": True}}, "applied", True)],
                         ids=["default", "opted in"])
def test_purge_protection_is_switched_on_only_when_the_policy_opts_in(rules: dict[str, Any], status: str,
                                                                    protected: bool | None) -> None:
    env = Env(baselined=False, start=vault(enablePurgeProtection=None), rules=rules, remediate_threshold=50)
    outcome = env.deliver(event(OPERATOR, VAULT_WRITE, event_id="evt-new-vault"))
    assert "KV-PROT-01" in {f.rule for f in outcome.findings}
    assert statuses(outcome)["enable_purge_protection"] == status
    assert env.current().enable_purge_protection is protected
    assert env.assessment("KV-PROT-01") == ("Healthy" if protected else "Unhealthy")


def test_the_circuit_breaker_stops_fighting_after_the_configured_number_of_reverts() -> None:
    env = Env(circuit_breaker={"max_remediations": 2, "window": "PT1H"})
    results = []
    for _ in range(3):
        outcome = env.change(vault(accessPolicies=[TEAM, ROGUE_GRANT]))
        env.own_writes()
        results.append(statuses(outcome)["revert_access_policy"])
        env.world.clock.advance(timedelta(minutes=5))
    assert results == ["applied", "applied", "skipped"]
    assert INTRUDER in principals(env.current())
    assert env.assessment("KV-AP-01") == "Unhealthy"
    env.world.clock.advance(timedelta(hours=1))
    env.world.put(vault(accessPolicies=[TEAM]))
    env.deliver(event(OPERATOR, AP_WRITE, "/accessPolicies/remove", env.next_id()))
    again = env.change(vault(accessPolicies=[TEAM, ROGUE_GRANT]))
    assert statuses(again)["revert_access_policy"] == "applied"
