"""The shared action runner against the simulated world: idempotency, dry run, failures recorded."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kvguard.actions import ActionRunner, WrittenFor
from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.ports import Alert, OwnWrite, TransientError
from kvguard.sim import SimClock, SimDefender, SimVaultGateway, World
from kvguard.vault import AccessPolicy, Principal, VaultConfig
from remediation.base import Operation

SUB = "3e2d1c0b-9a8f-4e7d-8c6b-5a4f3e2d1c0b"
TENANT = "77665544-3322-4110-8ffe-ddccbbaa9988"
VAULT_ID = f"/subscriptions/{SUB}/resourceGroups/rg-hr/providers/Microsoft.KeyVault/vaults/kv-hr"
PAYROLL = "12121212-3434-4565-8787-909090909090"
ROGUE = "abababab-cdcd-4efe-8f0f-121212121212"


def vault_doc() -> dict[str, Any]:
    return {
        "id": VAULT_ID,
        "name": "kv-hr",
        "location": "northeurope",
        "properties": {
            "tenantId": TENANT,
            "sku": {"family": "A", "name": "standard"},
            "accessPolicies": [
                {"tenantId": TENANT, "objectId": PAYROLL, "permissions": {"secrets": ["get"]}},
                {"tenantId": TENANT, "objectId": ROGUE, "permissions": {"secrets": ["Get", "List"], "keys": ["get"]}},
            ],
            "enableRbacAuthorization": False,
            "enabledForDeployment": True,
            "publicNetworkAccess": "Enabled",
        },
    }


@pytest.fixture
def world() -> World:
    world = World(clock=SimClock(datetime(2026, 5, 4, 12, 0, tzinfo=UTC)))
    world.put(vault_doc())
    return world


def current(world: World) -> VaultConfig:
    config = SimVaultGateway(world).get(VAULT_ID)
    assert config is not None
    return config


def removal(object_id: str, before: Any = None, **perms: set[str]) -> Operation:
    entry = AccessPolicy(Principal(object_id, None, TENANT), {c: frozenset(p) for c, p in perms.items()})
    return Operation("revert_access_policy", "remove_access_policy", VAULT_ID, f"remove {perms} for {object_id}",
                     entry, before=before, rules=("KV-AP-01",))


def patch(**props: Any) -> Operation:
    return Operation("restore_settings", "patch", VAULT_ID, f"set {props}", props, rules=("KV-PROT-04",))


def alert(rule: str) -> Alert:
    return Alert(VAULT_ID, rule, "title", "high", 75, 80, {"k": "v"}, ("T1098",), "evt-1", "someone",
                 datetime(2026, 5, 4, 12, 0, tzinfo=UTC))


# --- applying ------------------------------------------------------------------------------------


def test_a_removal_is_applied_and_recorded_with_before_and_after(world: World) -> None:
    runner = ActionRunner(SimVaultGateway(world), {})
    entry = current(world).policy_for(f"{ROGUE}|")
    assert entry is not None
    op = removal(ROGUE, before=entry.to_arm(), secrets={"get", "list"})
    result = runner.run("revert_access_policy", [op], dry_run=False, current=current(world))
    assert result.status == "applied"
    assert result.rules == ("KV-AP-01",)
    left = current(world).policy_for(f"{ROGUE}|")
    assert left is not None
    assert (left.get("keys"), left.get("secrets")) == ({"get"}, frozenset())
    assert result.before == [{"tenantId": TENANT, "objectId": ROGUE,
                              "permissions": {"keys": ["get"], "secrets": ["get", "list"]}}]
    assert result.after == [{"tenantId": TENANT, "objectId": ROGUE, "permissions": {"keys": ["get"]}}]
    assert current(world).policy_for(f"{PAYROLL}|") is not None
    audit = result.to_audit()
    assert audit["status"] == "applied" and audit["before"] == result.before and audit["after"] == result.after


def test_a_patch_is_applied(world: World) -> None:
    runner = ActionRunner(SimVaultGateway(world), {})
    result = runner.run("restore_settings", [patch(enabledForDeployment=False, enableRbacAuthorization=True)],
                        dry_run=False, current=current(world))
    assert result.status == "applied"
    assert result.after == [{"enabledForDeployment": False, "enableRbacAuthorization": True}]
    after = current(world)
    assert (after.enabled_for_deployment, after.enable_rbac_authorization) == (False, True)
    assert [e["data"]["operationName"] for e in world.take_emitted()] == ["Microsoft.KeyVault/vaults/write"]


# --- idempotency -----------------------------------------------------------------------------------


def test_an_operation_already_satisfied_is_skipped(world: World) -> None:
    runner = ActionRunner(SimVaultGateway(world), {})
    ops = [removal(ROGUE, secrets={"get", "list"}, keys={"get"}), patch(enabledForDeployment=False)]
    first = runner.run("h", ops, dry_run=False, current=current(world))
    assert first.status == "applied"
    world.take_emitted()
    snapshot = copy.deepcopy(world.vaults)
    again = runner.run("h", ops, dry_run=False, current=current(world))
    assert again.status == "skipped"
    assert again.detail == "already in the desired state"
    assert world.vaults == snapshot
    assert world.take_emitted() == []


def test_a_removal_for_a_principal_that_is_gone_is_skipped(world: World) -> None:
    runner = ActionRunner(SimVaultGateway(world), {})
    result = runner.run("h", [removal("99999999-0000-4000-8000-000000000000", secrets={"get"})], dry_run=False,
                        current=current(world))
    assert (result.status, result.detail) == ("skipped", "already in the desired state")


def test_nothing_to_do_on_a_vault_that_is_gone(world: World) -> None:
    runner = ActionRunner(SimVaultGateway(world), {})
    result = runner.run("h", [removal(ROGUE, secrets={"get"}), patch(enabledForDeployment=False)], dry_run=False,
                        current=None)
    assert result.status == "skipped"


def test_a_partially_satisfied_removal_applies_only_the_remainder(world: World) -> None:
    gateway = RecordingGateway(SimVaultGateway(world))
    runner = ActionRunner(gateway, {})
    result = runner.run("h", [removal(ROGUE, secrets={"get", "list", "set"}, certificates={"get"})], dry_run=False,
                        current=current(world))
    assert result.status == "applied"
    [(_, entry)] = gateway.removed
    assert entry.permissions == {"secrets": {"get", "list"}}


def test_a_partially_satisfied_patch_applies_only_the_remainder(world: World) -> None:
    gateway = RecordingGateway(SimVaultGateway(world))
    runner = ActionRunner(gateway, {})
    result = runner.run("h", [patch(enableRbacAuthorization=False, publicNetworkAccess="Disabled")], dry_run=False,
                        current=current(world))
    assert result.status == "applied"
    assert gateway.patched == [(VAULT_ID, {"publicNetworkAccess": "Disabled"})]
    assert result.after == [{"publicNetworkAccess": "Disabled"}]


# --- dry run --------------------------------------------------------------------------------------------


def test_dry_run_plans_and_changes_nothing(world: World) -> None:
    snapshot = copy.deepcopy(world.vaults)
    runner = ActionRunner(SimVaultGateway(world), {})
    ops = [removal(ROGUE, secrets={"list"}), patch(publicNetworkAccess="Disabled")]
    result = runner.run("h", ops, dry_run=True, current=current(world))
    assert result.status == "planned"
    assert result.detail == f"{ops[0].description}; {ops[1].description}"
    assert world.vaults == snapshot
    assert world.emitted == []


def test_dry_run_of_a_satisfied_operation_is_skipped(world: World) -> None:
    runner = ActionRunner(SimVaultGateway(world), {})
    result = runner.run("h", [patch(enabledForDeployment=True)], dry_run=True, current=current(world))
    assert result.status == "skipped"


# --- failures ------------------------------------------------------------------------------------------


class RecordingGateway:
    """A VaultGateway that passes calls on to another and remembers them."""

    def __init__(self, inner: SimVaultGateway) -> None:
        self.inner = inner
        self.removed: list[tuple[str, AccessPolicy]] = []
        self.patched: list[tuple[str, dict[str, Any]]] = []

    def get(self, vault_id: str) -> VaultConfig | None:
        return self.inner.get(vault_id)

    def update(self, vault_id: str, properties: Mapping[str, Any]) -> VaultConfig:
        self.patched.append((vault_id, dict(properties)))
        return self.inner.update(vault_id, properties)

    def remove_access_policy(self, vault_id: str, entry: AccessPolicy) -> VaultConfig:
        self.removed.append((vault_id, entry))
        return self.inner.remove_access_policy(vault_id, entry)

    def list_vaults(self, subscription_id: str) -> list[VaultConfig]:
        return self.inner.list_vaults(subscription_id)


class FailingGateway:
    """A VaultGateway whose writes fail with the given error (reads still work)."""

    def __init__(self, inner: SimVaultGateway, error: Exception, fail_after: int = 0) -> None:
        self.inner = inner
        self.error = error
        self.fail_after = fail_after
        self.writes = 0

    def get(self, vault_id: str) -> VaultConfig | None:
        return self.inner.get(vault_id)

    def _write(self) -> None:
        self.writes += 1
        if self.writes > self.fail_after:
            raise self.error

    def update(self, vault_id: str, properties: Mapping[str, Any]) -> VaultConfig:
        self._write()
        return self.inner.update(vault_id, properties)

    def remove_access_policy(self, vault_id: str, entry: AccessPolicy) -> VaultConfig:
        self._write()
        return self.inner.remove_access_policy(vault_id, entry)

    def list_vaults(self, subscription_id: str) -> list[VaultConfig]:
        return self.inner.list_vaults(subscription_id)


def test_a_failing_gateway_gives_failed_with_the_error(world: World) -> None:
    gateway = FailingGateway(SimVaultGateway(world), PermissionError("AuthorizationFailed: no vaults/write"))
    result = ActionRunner(gateway, {}).run("h", [patch(enabledForDeployment=False)], dry_run=False,
                                           current=current(world))
    assert result.status == "failed"
    assert "PermissionError: AuthorizationFailed: no vaults/write" in result.detail
    assert result.transient is False
    assert current(world).enabled_for_deployment is True


def test_a_failure_midway_names_what_was_done_and_where_it_stopped(world: World) -> None:
    gateway = FailingGateway(SimVaultGateway(world), RuntimeError("conflict"), fail_after=1)
    ops = [removal(ROGUE, secrets={"list"}), patch(enabledForDeployment=False)]
    result = ActionRunner(gateway, {}).run("h", ops, dry_run=False, current=current(world))
    assert result.status == "failed"
    assert result.detail.startswith(ops[0].description + "; failed at " + repr(ops[1].description))
    assert result.detail.endswith("RuntimeError: conflict")
    assert len(result.after) == 1


def test_transient_errors_are_flagged(world: World) -> None:
    gateway = FailingGateway(SimVaultGateway(world), TransientError("429 Too Many Requests"))
    result = ActionRunner(gateway, {}).run("h", [removal(ROGUE, secrets={"get"})], dry_run=False,
                                           current=current(world))
    assert result.status == "failed"
    assert result.transient is True
    assert "TransientError: 429 Too Many Requests" in result.detail


# --- alerts ------------------------------------------------------------------------------------------------


class BrokenSink:
    def raise_alert(self, alert: Alert) -> str:
        raise TransientError("defender unavailable")

    def resolve(self, vault_id: str, rule: str) -> str:
        raise TransientError("defender unavailable")


def test_alerts_go_to_the_handlers_sink(world: World) -> None:
    runner = ActionRunner(SimVaultGateway(world), {"raise_defender_alert": SimDefender(world)})
    ops = [Operation("raise_defender_alert", "alert", VAULT_ID, f"{r} (high)", alert(r), rules=(r,))
           for r in ("KV-AP-01", "KV-NET-01")]
    result = runner.run("raise_defender_alert", ops, dry_run=False, current=current(world))
    assert result.status == "applied"
    assert result.rules == ("KV-AP-01", "KV-NET-01")
    assert sorted(a["rule"] for a in world.assessments.values()) == ["KV-AP-01", "KV-NET-01"]
    assert {a["status"] for a in world.assessments.values()} == {"Unhealthy"}
    resolved = runner.run("raise_defender_alert",
                          [Operation("raise_defender_alert", "resolve", VAULT_ID, "resolved", alert("KV-AP-01"))],
                          dry_run=False, current=current(world))
    assert resolved.status == "applied"
    assert {a["rule"]: a["status"] for a in world.assessments.values()} == {"KV-AP-01": "Healthy",
                                                                            "KV-NET-01": "Unhealthy"}


def test_a_failing_sink_is_failed_and_transient(world: World) -> None:
    runner = ActionRunner(SimVaultGateway(world), {"publish_detection": BrokenSink()})
    op = Operation("publish_detection", "alert", VAULT_ID, "KV-AP-01 (high)", alert("KV-AP-01"))
    result = runner.run("publish_detection", [op], dry_run=False, current=current(world))
    assert (result.status, result.transient) == ("failed", True)
    assert "defender unavailable" in result.detail


class SideBySideSink:
    """A sink of independent calls that counts how often it is asked whether it is one."""

    def __init__(self) -> None:
        self.asked = 0
        self.raised: list[str] = []

    @property
    def parallel_calls(self) -> int:
        self.asked += 1
        return 4

    def raise_alert(self, alert: Alert) -> str:
        self.raised.append(alert.rule)
        return alert.rule

    def resolve(self, vault_id: str, rule: str) -> str:
        return rule


def test_a_sinks_shape_is_asked_once_and_its_calls_still_go_side_by_side(world: World) -> None:
    """isinstance against a runtime-checkable protocol walks its members on every call: the
    runner asks each sink once what it is (the protocol check reads `parallel_calls` once) and
    then only reads how many calls it takes at once, once per delivery."""
    sink = SideBySideSink()
    runner = ActionRunner(SimVaultGateway(world), {"raise_defender_alert": sink})
    for _ in range(3):
        ops = [Operation("raise_defender_alert", "alert", VAULT_ID, f"{r} (high)", alert(r), rules=(r,))
               for r in ("KV-AP-01", "KV-NET-01")]
        assert runner.run("raise_defender_alert", ops, dry_run=False, current=current(world)).status == "applied"
    assert sorted(sink.raised) == ["KV-AP-01", "KV-AP-01", "KV-AP-01", "KV-NET-01", "KV-NET-01", "KV-NET-01"]
    assert sink.asked == 1 + 3


# --- the ledger of own writes -------------------------------------------------------------------


class NotingLedger(SQLiteStateStore):
    """The embedded store as a ledger, keeping what was noted in it."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.noted: list[OwnWrite] = []

    def record_own_write(self, entry: OwnWrite) -> None:
        self.noted.append(entry)
        super().record_own_write(entry)


def test_a_write_noted_ahead_carries_the_nonce_of_its_entry_and_is_not_noted_again(world: World) -> None:
    """The write-ahead intent's write carries the ledger entries of the writes to come: the
    write is sent with the entry's nonce (its event then matches it), and no second entry is made."""
    ledger = NotingLedger()
    runner = ActionRunner(SimVaultGateway(world), {}, ledger=ledger, now=world.clock.now)
    op = removal(ROGUE, secrets={"get", "list"}, keys={"get"})
    written_for = WrittenFor("evt-1", "attempt-1")
    ahead = runner.note_ahead([op, patch(publicNetworkAccess="Disabled")], written_for)
    assert [entry.operation for entry in ahead] == ["Microsoft.KeyVault/vaults/accessPolicies/write",
                                                   "Microsoft.KeyVault/vaults/write"]
    ledger.record_own_write(ahead[0])
    world.take_emitted()

    result = runner.run("revert_access_policy", [op], dry_run=False, current=current(world),
                        written_for=WrittenFor("evt-1", "attempt-1", (ahead[0],)))

    assert result.status == "applied"
    assert ledger.noted == [ahead[0]]
    [echo] = world.take_emitted()
    assert echo["data"]["httpRequest"]["clientRequestId"] == ahead[0].request_id
    assert ledger.match_own_write(VAULT_ID, ahead[0].operation, ahead[0].request_id,
                                  since=world.clock.now() - timedelta(minutes=1), until=world.clock.now())


def test_a_write_without_an_entry_noted_ahead_notes_its_own(world: World) -> None:
    ledger = NotingLedger()
    runner = ActionRunner(SimVaultGateway(world), {}, ledger=ledger, now=world.clock.now)
    op = removal(ROGUE, secrets={"get", "list"}, keys={"get"})
    result = runner.run("revert_access_policy", [op], dry_run=False, current=current(world),
                        written_for=WrittenFor("evt-1", "attempt-1"))
    assert result.status == "applied"
    [entry] = ledger.noted
    [echo] = world.take_emitted()
    assert echo["data"]["httpRequest"]["clientRequestId"] == entry.request_id
