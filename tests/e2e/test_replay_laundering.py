"""Paths that would launder a change into the baseline, replayed against the simulated world: an
audit-log destination moved away from the baseline's, a poisoned restore, a role assignment on one
secret that IaC re-PUTs unchanged, and past (Activity Log) events judged against today's state."""

from __future__ import annotations

import copy
import json
from io import StringIO
from pathlib import Path
from typing import Any

from kvguard.cli import main
from kvguard.replay import build_run, replay
from kvguard.scenario import load_scenario
from tests.activity_records import record
from tests.e2e.test_replay_resources import INTRUDER, KV, OPERATOR, SECRETS_USER, TENANT, assignment, event, vault

SOC = f"/subscriptions/{KV.split('/')[2]}/resourceGroups/rg-soc/providers/Microsoft.OperationalInsights/workspaces/soc"
ATTACKER = ("/subscriptions/5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b/resourceGroups/rg-x/providers/"
            "Microsoft.OperationalInsights/workspaces/drop")
SETTING = f"{KV}/providers/Microsoft.Insights/diagnosticSettings/audit"
DIAG_WRITE = "Microsoft.Insights/diagnosticSettings/write"
DIAG_DELETE = "Microsoft.Insights/diagnosticSettings/delete"


def setting(workspace: str = SOC) -> dict[str, Any]:
    return {"id": SETTING, "name": "audit", "type": "Microsoft.Insights/diagnosticSettings",
            "properties": {"workspaceId": workspace, "logs": [{"categoryGroup": "audit", "enabled": True}],
                           "metrics": []}}


def run(tmp_path: Path, scenario: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
    """The records of the replay (sweeps left out) and the run, whose world and store the tests read."""
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps({"name": "laundering", "clock": "2026-11-27T10:00:00Z", **scenario}), encoding="utf-8")
    done = replay(build_run(load_scenario(path)))
    lines = [o.to_json() for o in done.outcomes]
    return [r for r in lines if not str(r["event_id"]).startswith("sweep:")], done


def statuses(line: dict[str, Any]) -> dict[str, str]:
    return {a["handler"]: a["status"] for a in line["actions"]}


# --- item: a poisoned baseline is restored ---------------------------------------------------------


def test_audit_logs_redirected_with_an_empty_allow_list_fire_and_do_not_become_the_baseline(tmp_path: Path) -> None:
    lines, done = run(tmp_path, {
        "policy": {"mode": "alert"}, "vaults": [vault(KV)], "resources": [setting()],
        "steps": [{"write": setting(ATTACKER)}, {"event": event("redirect", SETTING, DIAG_WRITE)}],
    })
    [redirect] = lines
    [finding] = [f for f in redirect["findings"] if f["rule"] == "KV-LOG-01"]
    assert finding["evidence"]["outside"] == [ATTACKER.lower()]
    assert statuses(redirect)["raise_defender_alert"] == "applied"
    kept = done.pipeline.store.get_baseline(SETTING)
    assert kept is not None and kept.config["properties"]["workspaceId"] == SOC  # not the attacker's


def test_after_a_redirect_a_deleted_setting_is_restored_to_the_accepted_destination(tmp_path: Path) -> None:
    """The redirect is alerted (alert mode: not reverted). The team then switches to remediate,
    and the SOC deletes the redirected setting: it is put back with the SOC's workspace, never
    the attacker's."""
    _, done = run(tmp_path, {
        "policy": {"mode": "alert"}, "vaults": [vault(KV)], "resources": [setting()],
        "steps": [{"write": setting(ATTACKER)}, {"event": event("redirect", SETTING, DIAG_WRITE)}],
    })
    pipeline = done.pipeline
    pipeline.policy = pipeline.policy.model_copy(update={"mode": "remediate"})
    done.world.delete_resource(SETTING)
    [deleted] = [o.to_json() for o in pipeline.handle(event("soc-deletes", SETTING, DIAG_DELETE, caller=OPERATOR))]
    assert statuses(deleted)["restore_diagnostic_setting"] == "applied"
    assert done.world.resources[SETTING.lower()]["properties"]["workspaceId"] == SOC


def test_a_restore_never_puts_back_a_destination_outside_allowed_log_destinations(tmp_path: Path) -> None:
    """The baseline (accepted before the list was set) sends to the attacker's workspace: its
    delete is alerted, the restore refused with the reason, and nothing is written."""
    lines, done = run(tmp_path, {
        "policy": {"mode": "remediate", "allowed_log_destinations": [SOC]}, "vaults": [vault(KV)],
        "resources": [setting(ATTACKER)],
        "steps": [{"delete": SETTING}, {"event": event("deleted", SETTING, DIAG_DELETE)}],
    })
    deleted = next(line for line in lines if line["event_id"] == "deleted")
    [restore] = [a for a in deleted["actions"] if a["handler"] == "restore_diagnostic_setting"]
    assert restore["status"] == "skipped" and "outside allowed_log_destinations" in restore["detail"]
    assert statuses(deleted)["raise_defender_alert"] == "applied"  # alert only
    assert SETTING.lower() not in done.world.resources  # no PUT of the attacker's destination
    assert done.world.take_emitted() == []


# --- item: role assignments below a vault are seeded ------------------------------------------------


SECRET_SCOPE = f"{KV}/secrets/db-password"
OLD = assignment(SECRET_SCOPE, "3e4f5a6b-7c8d-4e9f-8a0b-1c2d3e4f5a6b", principal=OPERATOR)
NEW = assignment(SECRET_SCOPE, "4f5a6b7c-8d9e-4f0a-9b1c-2d3e4f5a6b7c")
WRITE = "Microsoft.Authorization/roleAssignments/write"


def test_a_re_put_of_an_assignment_on_one_secret_seeded_by_reconcile_is_not_deleted(tmp_path: Path) -> None:
    """The vault is first seen by a reconcile (not baselined), with a long-standing assignment on
    one of its secrets: the seeding lists it, so IaC's unchanged re-PUT is no new grant; a
    genuinely new one on the same secret is still deleted."""
    lines, done = run(tmp_path, {
        "policy": {"mode": "remediate"}, "baselined": False, "vaults": [vault(KV)], "resources": [OLD],
        "steps": [{"reconcile": {}}, {"reconcile": {}},
                  {"event": event("iac-re-put", OLD["id"], WRITE, caller=OPERATOR)},
                  {"write": NEW}, {"event": event("new-grant", NEW["id"], WRITE)}],
    })
    re_put = next(line for line in lines if line["event_id"] == "iac-re-put")
    assert not [f for f in re_put["findings"] if f["rule"].startswith("KV-RBAC")]  # only the caller's rules
    assert statuses(re_put).get("remove_role_assignment") != "applied"
    assert OLD["id"].lower() in done.world.resources
    new = next(line for line in lines if line["event_id"] == "new-grant")
    assert "KV-RBAC-01" in {f["rule"] for f in new["findings"]}
    assert statuses(new)["remove_role_assignment"] == "applied"
    assert NEW["id"].lower() not in done.world.resources


# --- items: backfill through replay, and past approved events -----------------------------------------


def _vault_with(*extra: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(vault(KV))
    doc["properties"]["enableRbacAuthorization"] = False
    doc["properties"]["accessPolicies"] = [
        {"tenantId": TENANT, "objectId": OPERATOR, "permissions": {"secrets": ["get"]}}, *extra]
    return doc


ROGUE = {"tenantId": TENANT, "objectId": INTRUDER, "permissions": {"secrets": ["get", "list"]}}


def test_the_activity_step_never_remediates_and_says_so(tmp_path: Path) -> None:
    grant = record("grant", "Microsoft.KeyVault/vaults/accessPolicies/write", "Succeeded", "2026-11-20T10:00:00Z",
                   resource=f"{KV}/accessPolicies/add", caller=INTRUDER, tenant=TENANT)
    lines, done = run(tmp_path, {
        "policy": {"mode": "remediate"}, "vaults": [_vault_with()],
        "steps": [{"write": _vault_with(ROGUE)}, {"activity": [grant]}],
    })
    [past] = lines
    assert "KV-AP-01" in {f["rule"] for f in past["findings"]}
    assert statuses(past)["revert_access_policy"] == "planned"
    assert "(dry run)" in past["reason"] and "alert-only" in past["reason"]
    vault_now = done.world.vaults[KV.lower()]
    assert INTRUDER in {p["objectId"] for p in vault_now["properties"]["accessPolicies"]}  # nothing reverted
    assert done.world.take_emitted() == []  # no write reached the world


def test_a_past_approved_event_does_not_accept_a_rogue_change_present_today(tmp_path: Path) -> None:
    """The approved pipeline wrote the vault ten days ago; the intruder's grant is there today.
    Backfill of the pipeline's event must not accept the grant: the baseline stays, and the
    intruder's live event is then still remediated."""
    approved = record("pipeline", "Microsoft.KeyVault/vaults/write", "Succeeded", "2026-11-17T10:00:00Z",
                      resource=KV, caller=OPERATOR, tenant=TENANT)
    rogue_event = {**event("rogue", KV, "Microsoft.KeyVault/vaults/accessPolicies/write")}
    lines, done = run(tmp_path, {
        "policy": {"mode": "remediate", "approved_callers": [OPERATOR]}, "vaults": [_vault_with()],
        "steps": [{"write": _vault_with(ROGUE)}, {"activity": [approved]}, {"event": rogue_event}],
    })
    past, live = lines[0], next(line for line in lines if line["event_id"] == "rogue")
    assert "not accepted" in past["reason"]
    baseline = done.pipeline.store.get_baseline(KV)
    assert baseline is not None
    assert INTRUDER not in {p["objectId"] for p in baseline.config["properties"]["accessPolicies"]}
    assert statuses(live)["revert_access_policy"] == "applied"


def test_a_cover_up_whose_assignment_is_gone_is_found_from_the_request_bodies(tmp_path: Path) -> None:
    gone = assignment(KV, "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d")
    body = json.dumps({"properties": {"roleDefinitionId": SECRETS_USER, "principalId": INTRUDER,
                                      "principalType": "User"}})
    records = [
        record("ra-started", WRITE, "Started", "2026-11-20T10:00:00Z", resource=gone["id"], correlation="c-ra",
               properties={"requestbody": body}),
        record("ra-succeeded", WRITE, "Succeeded", "2026-11-20T10:00:01Z", resource=gone["id"], correlation="c-ra"),
        record("ra-deleted", "Microsoft.Authorization/roleAssignments/delete", "Succeeded", "2026-11-20T10:04:00Z",
               resource=gone["id"], correlation="c-del"),
    ]
    lines, done = run(tmp_path, {"policy": {"mode": "remediate"}, "vaults": [vault(KV)],
                                 "steps": [{"activity": records}]})
    written, deleted = lines
    assert "KV-RBAC-01" in {f["rule"] for f in written["findings"]}
    [cover_up] = [f for f in deleted["findings"] if f["rule"] == "KV-RBAC-03"]
    assert cover_up["evidence"]["principalId"] == INTRUDER
    assert done.world.take_emitted() == []


def test_the_replay_cli_prints_a_past_event_as_a_dry_run(tmp_path: Path) -> None:
    grant = record("grant", "Microsoft.KeyVault/vaults/accessPolicies/write", "Succeeded", "2026-11-20T10:00:00Z",
                   resource=f"{KV}/accessPolicies/add", caller=INTRUDER, tenant=TENANT)
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"name": "past", "policy": {"mode": "remediate"}, "vaults": [_vault_with()],
                                "steps": [{"write": _vault_with(ROGUE)}, {"activity": [grant]}]}), encoding="utf-8")
    out = StringIO()
    assert main(["replay", str(path), "--json"], out=out) == 0
    first = json.loads(out.getvalue().splitlines()[0])
    assert first["outcome"] == "processed" and "(dry run)" in first["reason"]
