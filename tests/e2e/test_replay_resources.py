"""Replay of changes to resources beside the vaults (DESIGN.md's extended scenario format):
`resources:`, `write`/`delete` of any resource, `reconcile: {}`, `resource` in each record and
`resources` in the summary, read through `kvguard replay --json` as other tools read it."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

from kvguard.cli import main
from kvguard.client_request import new_request_id, sending
from kvguard.ports import OwnWrite
from kvguard.replay import build_run, replay
from kvguard.scenario import load_scenario

SUB = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
OTHER_SUB = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
TENANT = "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
RG = f"/subscriptions/{SUB}/resourceGroups/rg-data"
KV = f"{RG}/providers/Microsoft.KeyVault/vaults/kv-data"
KV2 = f"{RG}/providers/Microsoft.KeyVault/vaults/kv-data2"
OPERATOR = "2b3c4d5e-6f70-4a81-9b2c-3d4e5f6a7b8c"
INTRUDER = "7e8f9a0b-1c2d-4e3f-8a4b-5c6d7e8f9a0b"
SECRETS_USER = (f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions"
                "/4633458b-17de-408a-b874-0445c86b69e6")
MG = "/providers/Microsoft.Management/managementGroups/mg-root"


def vault(resource_id: str) -> dict[str, Any]:
    return {
        "id": resource_id, "name": resource_id.rsplit("/", 1)[-1], "type": "Microsoft.KeyVault/vaults",
        "location": "westeurope",
        "properties": {
            "tenantId": TENANT, "sku": {"family": "A", "name": "standard"}, "enableRbacAuthorization": True,
            "enableSoftDelete": True, "softDeleteRetentionInDays": 90, "enablePurgeProtection": True,
            "publicNetworkAccess": "Disabled", "networkAcls": {"defaultAction": "Deny", "bypass": "None"},
        },
    }


def assignment(scope: str, name: str, principal: str = INTRUDER) -> dict[str, Any]:
    return {
        "id": f"{scope}/providers/Microsoft.Authorization/roleAssignments/{name}", "name": name,
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": {"roleDefinitionId": SECRETS_USER, "principalId": principal, "principalType": "User",
                       "scope": scope},
    }


def event(event_id: str, resource_id: str, operation: str, caller: str = INTRUDER,
          event_type: str = "Microsoft.Resources.ResourceWriteSuccess") -> dict[str, Any]:
    sub = resource_id.split("/")[2] if resource_id.startswith("/subscriptions/") else SUB
    return {
        "id": event_id, "topic": f"/subscriptions/{sub}", "subject": resource_id, "eventType": event_type,
        "eventTime": "2026-11-27T10:00:05Z", "dataVersion": "2",
        "data": {"resourceUri": resource_id, "operationName": operation, "status": "Succeeded",
                 "claims": {"oid": caller, "tid": TENANT}, "subscriptionId": sub, "tenantId": TENANT},
    }


def replayed(tmp_path: Path, scenario: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The records of the replay and its summary. A `reconcile: {}` step also sweeps, and these
    vaults send their audit logs nowhere (KV-LOG-02): the sweep's records are left out here, and
    tested in test_replay_adjacent.py."""
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario), encoding="utf-8")
    out = StringIO()
    assert main(["replay", str(path), "--json"], out=out) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    return [r for r in lines[:-1] if not str(r["event_id"]).startswith("sweep:")], lines[-1]


WRITE = "Microsoft.Authorization/roleAssignments/write"
DELETE = "Microsoft.Authorization/roleAssignments/delete"
APPROVED = {"approved_callers": [OPERATOR]}


def test_an_assignment_on_a_vault_is_judged_with_its_id_as_the_resource(tmp_path: Path) -> None:
    grant = assignment(KV, "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e")
    events, summary = replayed(tmp_path, {
        "policy": APPROVED, "vaults": [vault(KV)],
        "steps": [{"write": grant}, {"event": event("e1", grant["id"], WRITE)}],
    })
    [record] = events
    assert list(record)[list(record).index("vault") + 1] == "resource"  # right after the vault, as for every record
    assert record["outcome"] == "processed" and record["vault"] == KV and record["resource"] == grant["id"]
    # unapproved, first write, and Secrets User over the vault
    assert [f["rule"] for f in record["findings"]] == ["KV-ID-01", "KV-ID-05", "KV-RBAC-01"]
    assert summary["resources"] == {grant["id"]: {"exists": True, "config": grant}}
    assert summary["vaults"][KV]["events"] == 1


def test_a_vault_event_names_the_vault_as_its_resource(tmp_path: Path) -> None:
    events, _ = replayed(tmp_path, {
        "vaults": [vault(KV)], "steps": [{"event": event("e1", KV, "Microsoft.KeyVault/vaults/write")}],
    })
    assert events[0]["vault"] == KV and events[0]["resource"] == KV


def test_a_subscription_scope_covers_every_vault_under_it_and_lists_them(tmp_path: Path) -> None:
    grant = assignment(f"/subscriptions/{SUB}", "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f")
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps({
        "policy": APPROVED, "vaults": [vault(KV), vault(KV2)],
        "steps": [{"write": grant}, {"event": event("e1", grant["id"], WRITE)}],
    }), encoding="utf-8")
    run = replay(build_run(load_scenario(path)))
    [outcome] = run.outcomes
    record = outcome.to_json()
    assert record["vault"] is None and record["resource"] == grant["id"]
    assert record["findings"][0]["evidence"]["vaults"] == [KV, KV2]
    # Defender: one assessment per covered vault x rule
    assert len(run.world.assessments) == 2 * len(record["findings"])
    assert {k.split("|")[0] for k in run.world.assessments} == {KV.lower(), KV2.lower()}


def test_a_scope_covering_no_known_vault_is_ignored_with_the_reason(tmp_path: Path) -> None:
    elsewhere = assignment(f"/subscriptions/{OTHER_SUB}", "2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a")
    sibling = assignment(f"{RG}/providers/Microsoft.KeyVault/vaults/kv-dat", "3e4f5a6b-7c8d-4e9f-8a0b-1c2d3e4f5a6b")
    events, _ = replayed(tmp_path, {
        "policy": APPROVED, "vaults": [vault(KV)],
        "steps": [{"events": [event("e1", elsewhere["id"], WRITE), event("e2", sibling["id"], WRITE)]}],
    })
    assert [e["outcome"] for e in events] == ["ignored", "ignored"]
    assert events[0]["reason"] == f"scope /subscriptions/{OTHER_SUB} covers no vault kvguard knows"
    assert events[0]["resource"] == elsewhere["id"] and events[0]["vault"] is None
    assert "covers no vault" in events[1]["reason"]


def test_a_delete_updates_the_baseline_and_the_summary_and_a_redelivery_is_a_duplicate(tmp_path: Path) -> None:
    grant = assignment(KV, "4f5a6b7c-8d9e-4f0a-9b1c-2d3e4f5a6b7c", principal=OPERATOR)
    deleted = event("e1", grant["id"], DELETE, caller=OPERATOR, event_type="Microsoft.Resources.ResourceDeleteSuccess")
    events, summary = replayed(tmp_path, {
        "policy": APPROVED, "vaults": [vault(KV)], "resources": [grant],
        "steps": [{"delete": grant["id"]}, {"events": [deleted, deleted]}],
    })
    assert [e["outcome"] for e in events] == ["processed", "duplicate"]
    assert [f["rule"] for f in events[0]["findings"]] == ["KV-ID-05"]  # approved, but a first write
    assert summary["resources"] == {grant["id"]: {"exists": False, "config": None}}


def test_own_delete_of_a_resource_comes_back_as_self_when_the_ledger_planned_it(tmp_path: Path) -> None:
    grant = assignment(KV, "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d")
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps({"vaults": [vault(KV)], "resources": [grant]}), encoding="utf-8")
    run = build_run(load_scenario(path))
    assert run.pipeline.resources is not None
    # noted ahead, as the runner notes each write it makes (the ledger of own writes), and sent
    # with the nonce the entry holds
    nonce = new_request_id()
    run.pipeline.store.record_own_write(OwnWrite(grant["id"], DELETE, nonce, run.pipeline.clock.now()))
    with sending(nonce):
        assert run.pipeline.resources.delete(grant["id"]) is True
        assert run.pipeline.resources.delete(grant["id"]) is False  # already gone: nothing emitted
    [emitted] = run.world.take_emitted()
    assert emitted["eventType"] == "Microsoft.Resources.ResourceDeleteSuccess"
    assert emitted["data"]["operationName"] == DELETE
    assert emitted["data"]["httpRequest"] == {"clientRequestId": nonce}
    [outcome] = run.pipeline.handle(emitted)
    assert outcome.outcome == "self" and outcome.resource == grant["id"]
    del emitted["data"]["httpRequest"]  # the same delete without kvguard's nonce is not kvguard's
    emitted["id"] = "another-delivery"
    [outcome] = run.pipeline.handle(emitted)
    assert outcome.outcome == "processed" and "KV-SELF-01" in {f.rule for f in outcome.findings}


def test_reconcile_catches_a_missed_write_and_a_management_group_assignment(tmp_path: Path) -> None:
    missed = assignment(KV, "6b7c8d9e-0f1a-4b2c-9d3e-4f5a6b7c8d9e")
    inherited = assignment(MG, "7c8d9e0f-1a2b-4c3d-8e4f-5a6b7c8d9e0f")
    events, summary = replayed(tmp_path, {
        "vaults": [vault(KV)],
        "steps": [{"write": missed}, {"write": inherited}, {"reconcile": {}}, {"reconcile": {}}],
    })
    assert sorted(e["resource"] for e in events) == sorted([missed["id"], inherited["id"]])
    assert all(e["outcome"] == "processed" and e["event_id"].startswith("reconcile:") for e in events)
    assert {e["resource"]: e["vault"] for e in events} == {missed["id"]: KV, inherited["id"]: None}
    assert summary["resources"][inherited["id"]]["exists"] is True


def test_reconcile_catches_a_missed_delete_and_seeds_resources_of_a_vault_first_seen(tmp_path: Path) -> None:
    gone = assignment(KV, "8d9e0f1a-2b3c-4d4e-9f5a-6b7c8d9e0f1a", principal=OPERATOR)
    fresh = assignment(KV2, "9e0f1a2b-3c4d-4e5f-8a6b-7c8d9e0f1a2b")
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps({
        "vaults": [vault(KV)], "resources": [gone],
        "steps": [{"delete": gone["id"]}, {"write": vault(KV2)}, {"write": fresh}, {"reconcile": {}}],
    }), encoding="utf-8")
    run = replay(build_run(load_scenario(path)))
    by_resource = {o.to_json()["resource"]: o for o in run.outcomes if not str(o.event_id).startswith("sweep:")}
    assert by_resource[gone["id"]].outcome == "processed"
    assert by_resource[KV2].reason == "reconciliation: baseline seeded"
    assert fresh["id"] not in by_resource  # first sight of its vault: seeded, not judged
    seeded = run.pipeline.store.get_baseline(fresh["id"])
    assert seeded is not None and seeded.config == fresh
    stored = run.pipeline.store.get_baseline(gone["id"])
    assert stored is not None and stored.deleted


def test_an_unchanged_world_reconciles_to_nothing(tmp_path: Path) -> None:
    grant = assignment(f"/subscriptions/{SUB}", "0f1a2b3c-4d5e-4f6a-9b7c-8d9e0f1a2b3c")
    events, _ = replayed(tmp_path, {"vaults": [vault(KV)], "resources": [grant], "steps": [{"reconcile": {}}]})
    assert events == []


def test_an_own_identity_delete_nobody_planned_raises_kv_self_01(tmp_path: Path) -> None:
    grant = assignment(KV, "6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d")
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps({"vaults": [vault(KV)], "resources": [grant]}), encoding="utf-8")
    run = build_run(load_scenario(path))
    assert run.pipeline.resources is not None
    run.pipeline.resources.delete(grant["id"])  # with kvguard's identity, but no ledger entry
    [outcome] = run.pipeline.handle(run.world.take_emitted()[0])
    assert outcome.outcome == "processed" and "KV-SELF-01" in {f.rule for f in outcome.findings}
