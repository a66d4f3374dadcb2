"""Replay of tampering beside the vault (DESIGN.md, "Beyond the vault resource"): the samples
15-19 pinned through `kvguard replay --json`, and the sweep (`reconcile: {}`) in scenarios of
their own."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

from detectors.cases import (
    FOREIGN_WORKSPACE,
    KEY_VAULT_POLICY_RULE,
    RESOURCE_GROUP_ID,
    VAULT_ID,
    WORKSPACE,
    diagnostic_setting,
    endpoint_connection,
    exemption,
    lock,
    policy_assignment,
    policy_definition,
    pricing,
    vault,
)
from kvguard.cli import main
from kvguard.replay import build_run, replay
from kvguard.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "scenarios"
INTRUDER = "e7d6c5b4-a392-4817-9605-f4e3d2c1b0a9"


def replayed(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    out = StringIO()
    assert main(["replay", str(path), "--json"], out=out) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    return lines[:-1], lines[-1]


def sample(prefix: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    [path] = SAMPLES.glob(f"{prefix}-*.yaml")
    return replayed(path)


def scenario(tmp_path: Path, data: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return replayed(path)


def rules(record: dict[str, Any]) -> set[str]:
    return {f["rule"] for f in record["findings"]}


def statuses(record: dict[str, Any]) -> dict[str, str]:
    return {a["handler"]: a["status"] for a in record["actions"]}


def resource_event(event_id: str, resource_id: str, operation: str, caller: str = INTRUDER,
                   event_type: str = "Microsoft.Resources.ResourceWriteSuccess") -> dict[str, Any]:
    sub = resource_id.split("/")[2]
    return {"id": event_id, "topic": f"/subscriptions/{sub}", "subject": resource_id, "eventType": event_type,
            "eventTime": "2026-11-27T10:00:05Z", "dataVersion": "2",
            "data": {"resourceUri": resource_id, "operationName": operation, "status": "Succeeded",
                     "claims": {"oid": caller}, "subscriptionId": sub}}


# --- the samples ------------------------------------------------------------------------------


def test_deleted_diagnostic_setting_is_put_back_and_comes_back_as_self() -> None:
    events, summary = sample("15")
    deleted, own, metrics_only = events
    assert "KV-LOG-01" in rules(deleted) and statuses(deleted)["restore_diagnostic_setting"] == "applied"
    [finding] = [f for f in deleted["findings"] if f["rule"] == "KV-LOG-01"]
    assert finding["severity"] == "high" and finding["evidence"]["after"] is None
    assert own["outcome"] == "self" and own["resource"] == deleted["resource"]
    assert "KV-LOG-01" not in rules(metrics_only)
    [setting] = [v for k, v in summary["resources"].items() if k.endswith("/diagnosticSettings/to-soc")]
    assert setting["exists"] is True
    assert setting["config"]["properties"]["logs"] == [{"categoryGroup": "audit", "enabled": True}]
    assert not any(str(e["event_id"]).startswith("sweep:") for e in events)  # audit logs flow, plan on


def test_removed_lock_is_restored_only_because_the_policy_opts_in() -> None:
    events, summary = sample("16")
    removed, own, strengthened = events
    assert removed["vault"] is None and "KV-LOCK-01" in rules(removed)
    [finding] = [f for f in removed["findings"] if f["rule"] == "KV-LOCK-01"]
    assert finding["evidence"]["vaults"] and finding["evidence"]["before"] == "CanNotDelete"
    assert statuses(removed)["restore_lock"] == "applied"
    assert own["outcome"] == "self"
    assert rules(strengthened) == set()
    [entry] = summary["resources"].values()
    assert entry["config"]["properties"]["level"] == "ReadOnly"


def test_policy_exemption_is_deleted_and_the_assignment_enforced_again_because_the_policy_opts_in() -> None:
    events, summary = sample("27")
    exempted, own_delete, loosened, own_write, storage_only = events
    [exemption] = [f for f in exempted["findings"] if f["rule"] == "KV-POL-01"]
    assert exempted["vault"] is None and exemption["evidence"]["change"] == "created"
    assert [v.rsplit("/", 1)[-1] for v in exemption["evidence"]["vaults"]] == ["kv-orders"]
    assert statuses(exempted)["remove_policy_exemption"] == "applied"
    [assignment] = [f for f in loosened["findings"] if f["rule"] == "KV-POL-02"]
    assert assignment["evidence"]["reasons"] == ["enforcementMode set to DoNotEnforce"]
    assert statuses(loosened)["restore_policy_assignment"] == "applied"
    assert [own_delete["outcome"], own_write["outcome"]] == ["self", "self"]
    assert "KV-POL-01" not in rules(storage_only) and "remove_policy_exemption" not in statuses(storage_only)
    final = {k.rsplit("/", 1)[-1]: v for k, v in summary["resources"].items()}
    assert final["orders-hotfix"]["exists"] is False
    assert final["kv-deletion-protection"]["config"]["properties"]["enforcementMode"] == "Default"
    assert final["orders-storage-migration"]["exists"] is True


def test_foreign_private_endpoint_is_rejected_and_pending_or_own_ones_are_quiet() -> None:
    events, summary = sample("17")
    approved, own, pending, own_subscription = events
    assert "KV-PE-01" in rules(approved) and statuses(approved)["reject_private_endpoint"] == "applied"
    assert own["outcome"] == "self"
    assert "KV-PE-01" not in rules(pending) | rules(own_subscription)
    states = {k.rsplit("/", 1)[-1]: v["config"]["properties"]["privateLinkServiceConnectionState"]
              for k, v in summary["resources"].items()}
    assert states["pe-partner"]["status"] == "Rejected" and "KV-PE-01" in states["pe-partner"]["description"]
    assert states["pe-partner-2"]["status"] == "Pending" and states["pe-app"]["status"] == "Approved"


def test_defender_plan_switched_off_is_critical_and_the_sweep_finds_it_off() -> None:
    events, summary = sample("18")
    switched, swept = events
    [finding] = [f for f in switched["findings"] if f["rule"] == "KV-DEF-02"]
    assert finding["severity"] == "critical" and switched["severity"] == "critical"
    assert statuses(switched)["restore_defender_plan"] == "skipped"  # opt-in, and alert mode
    assert swept["event_id"].startswith("sweep:") and rules(swept) == {"KV-DEF-01"}
    assert statuses(swept)["raise_defender_alert"] == "applied"
    [plan] = [v for k, v in summary["resources"].items() if k.endswith("/pricings/KeyVaults")]
    assert plan["config"]["properties"]["pricingTier"] == "Free"


def test_steering_tag_moved_by_an_unapproved_caller_is_reported_and_not_accepted() -> None:
    events, _ = sample("19")
    attempt, approved = events
    assert {"KV-TAG-01", "KV-ID-01"} <= rules(attempt)
    [finding] = [f for f in attempt["findings"] if f["rule"] == "KV-TAG-01"]
    assert finding["evidence"]["tags"] == {"kvguard-mode": {"before": None, "after": "observe"}}
    assert "KV-TAG-01" not in rules(approved)
    [path] = SAMPLES.glob("19-*.yaml")
    run = replay(build_run(load_scenario(path)))
    [baseline] = run.pipeline.store.list_baselines()
    assert baseline.config["tags"] == {"owner": "treasury", "criticality": "high"}  # observe never accepted


# --- sweeps and handlers in scenarios of their own ----------------------------------------------


def test_a_sweep_opens_once_and_resolves_when_the_audit_logs_flow_again(tmp_path: Path) -> None:
    setting = diagnostic_setting()
    events, _ = scenario(tmp_path, {
        "vaults": [vault()], "resources": [pricing()],
        "steps": [{"reconcile": {}}, {"reconcile": {}}, {"write": setting}, {"reconcile": {}}],
    })
    sweeps = [e for e in events if str(e["event_id"]).startswith("sweep:")]
    opened, resolved = sweeps
    assert rules(opened) == {"KV-LOG-02"} and opened["vault"] == VAULT_ID
    assert rules(resolved) == set() and "resolved KV-LOG-02" in resolved["reason"]


def test_audit_logs_to_a_destination_not_allowed_count_as_nowhere(tmp_path: Path) -> None:
    events, _ = scenario(tmp_path, {
        "policy": {"allowed_log_destinations": [WORKSPACE]},
        "vaults": [vault()], "resources": [pricing(), diagnostic_setting(workspaceId=FOREIGN_WORKSPACE)],
        "steps": [{"reconcile": {}}],
    })
    [swept] = events
    assert rules(swept) == {"KV-LOG-02"}


def test_a_delete_event_for_a_setting_already_back_is_quiet(tmp_path: Path) -> None:
    """The event has no body: the setting is read when the event arrives, and it is there again."""
    setting = diagnostic_setting()
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps({"policy": {"mode": "remediate"}, "vaults": [vault()], "resources": [setting],
                                "steps": [{"delete": setting["id"]}]}), encoding="utf-8")
    run = replay(build_run(load_scenario(path)))
    run.world.put_resource(setting)  # put back before the event arrives
    [outcome] = run.pipeline.handle(resource_event(
        "evt-del", setting["id"], "Microsoft.Insights/diagnosticSettings/delete",
        event_type="Microsoft.Resources.ResourceDeleteSuccess"))
    assert "KV-LOG-01" not in {f.rule for f in outcome.findings}  # read now: it is there, as the baseline had it
    assert run.world.take_emitted() == []


def test_an_opted_in_defender_plan_is_set_back(tmp_path: Path) -> None:
    plan = pricing()
    events, summary = scenario(tmp_path, {
        "policy": {"mode": "remediate", "rules": {"KV-DEF-02": {"remediate": True}}},
        "vaults": [vault()], "resources": [plan],
        "steps": [{"write": pricing("Free", None)},
                  {"event": resource_event("evt-plan", plan["id"], "Microsoft.Security/pricings/write")}],
    })
    switched, own = events
    assert statuses(switched)["restore_defender_plan"] == "applied" and own["outcome"] == "self"
    assert summary["resources"][plan["id"]]["config"]["properties"] == {"pricingTier": "Standard",
                                                                          "subPlan": "PerKeyVault"}


def test_a_weakened_lock_without_opt_in_is_alert_only(tmp_path: Path) -> None:
    held = lock("ReadOnly")
    events, summary = scenario(tmp_path, {
        "policy": {"mode": "remediate", "remediate_threshold": 40},
        "vaults": [vault()], "resources": [held],
        "steps": [{"write": lock("CanNotDelete")},
                  {"event": resource_event("evt-lock", held["id"], "Microsoft.Authorization/locks/write")}],
    })
    [weakened] = events
    assert "KV-LOCK-01" in rules(weakened)
    [action] = [a for a in weakened["actions"] if a["handler"] == "restore_lock"]
    assert action["status"] == "skipped" and "opt-in" in action["detail"]
    assert summary["resources"][held["id"]]["config"]["properties"]["level"] == "CanNotDelete"


def test_an_approved_foreign_connection_in_dry_run_is_only_planned(tmp_path: Path) -> None:
    connection = endpoint_connection("Approved", "c0ffee00-1234-4abc-9def-0123456789ab")
    events, summary = scenario(tmp_path, {
        "policy": {"mode": "remediate", "dry_run": True}, "vaults": [vault()],
        "steps": [{"write": connection},
                  {"event": resource_event("evt-pe", connection["id"],
                                           "Microsoft.KeyVault/vaults/privateEndpointConnections/write")}],
    })
    [approved] = events
    assert statuses(approved)["reject_private_endpoint"] == "planned"
    state = summary["resources"][connection["id"]]["config"]["properties"]["privateLinkServiceConnectionState"]
    assert state["status"] == "Approved"


def test_the_reconcile_finds_an_exemption_and_a_loosened_assignment_no_event_brought(tmp_path: Path) -> None:
    """Exemptions and assignments are listed at each vault by the sweep: one created while events
    were lost, and the Key Vault assignment given the vault's resource group in notScopes, are both
    judged; an assignment in the baseline that did not change is not."""
    events, summary = scenario(tmp_path, {
        "name": "policy changes whose events were lost",
        "vaults": [vault()],
        "resources": [policy_definition(KEY_VAULT_POLICY_RULE), policy_assignment(),
                      policy_assignment(name="kv-firewall")],
        "steps": [
            {"write": exemption(expires=None)},
            {"write": policy_assignment(not_scopes=(RESOURCE_GROUP_ID,))},
            {"reconcile": {}},
        ],
    })
    judged = {e["resource"].rsplit("/", 1)[-1]: e for e in events if e["findings"] and e["resource"] != VAULT_ID}
    assert set(judged) == {"payments-waiver", "kv-deletion-protection"}  # (the vault's own sweep aside)
    assert "KV-POL-01" in rules(judged["payments-waiver"])
    [loosened] = [f for f in judged["kv-deletion-protection"]["findings"] if f["rule"] == "KV-POL-02"]
    assert loosened["evidence"]["notScopes"] == {"before": [], "after": [RESOURCE_GROUP_ID]}
    assert loosened["evidence"]["vaults"] == [VAULT_ID]
    # alert mode: nothing is written back
    assert summary["resources"][exemption()["id"]]["exists"] is True
