"""The RBAC samples (samples/scenarios/15-17) do what their descriptions promise, read through
`kvguard replay --json` as other tools read it."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

from kvguard.cli import main
from kvguard.replay import build_run, replay
from kvguard.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "samples" / "scenarios"


def sample(prefix: str) -> Path:
    [path] = SCENARIOS.glob(f"{prefix}-*.yaml")
    return path


def replayed(prefix: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    out = StringIO()
    assert main(["replay", str(sample(prefix)), "--json"], out=out) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    return lines[:-1], lines[-1]


def rules(record: dict[str, Any]) -> list[str]:
    return [f["rule"] for f in record["findings"]]


def actions(record: dict[str, Any]) -> dict[str, str]:
    return {a["handler"]: a["status"] for a in record["actions"]}


def test_a_secrets_user_grant_is_removed_and_the_own_delete_comes_back_self() -> None:
    events, summary = replayed("20")
    grant, own, _redelivered = events
    assert [e["outcome"] for e in events] == ["processed", "self", "duplicate"]
    [finding] = [f for f in grant["findings"] if f["rule"] == "KV-RBAC-01"]
    assert finding["severity"] == "critical"
    assert finding["evidence"]["role"] == "Key Vault Secrets User"
    assert "Microsoft.KeyVault/vaults/secrets/getSecret/action" in finding["evidence"]["dataActions"]
    assert actions(grant) == {"raise_defender_alert": "applied", "publish_detection": "applied",
                              "remove_role_assignment": "applied"}
    assert grant["vault"].endswith("/vaults/kv-orders-prod")
    assert grant["resource"].endswith("/roleAssignments/9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a")
    assert own["resource"] == grant["resource"]
    removed = summary["resources"][grant["resource"]]
    assert removed == {"exists": False, "config": None}
    # the assignment in the baseline is never touched
    [kept] = [v for k, v in summary["resources"].items() if k != grant["resource"]]
    assert kept["exists"] is True


def test_an_inherited_grant_is_judged_for_every_vault_it_covers() -> None:
    run = replay(build_run(load_scenario(sample("21"))))
    grant, reader, own = (o.to_json() for o in run.outcomes)
    assert grant["vault"] is None and grant["resource"].endswith("/resourceGroups/rg-billing/providers/"
                                                                 "Microsoft.Authorization/roleAssignments/"
                                                                 "3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f")
    [finding] = [f for f in grant["findings"] if f["rule"] == "KV-RBAC-01"]
    assert [v.rsplit("/", 1)[-1] for v in finding["evidence"]["vaults"]] == ["kv-billing-keys", "kv-billing-prod"]
    assert actions(grant)["remove_role_assignment"] == "applied"
    assessed = {key.split("|")[0].rsplit("/", 1)[-1] for key in run.world.assessments}
    assert assessed == {"kv-billing-keys", "kv-billing-prod"}
    assert "KV-RBAC-01" not in rules(reader) and "remove_role_assignment" not in actions(reader)
    assert own["outcome"] == "self"


def test_a_privileged_role_is_alerted_but_left_and_a_short_lived_grant_is_a_cover_up() -> None:
    events, summary = replayed("22")
    owner, grant, removal = events
    assert "KV-RBAC-02" in rules(owner) and owner["vault"] is None
    assert actions(owner)["raise_defender_alert"] == "applied"
    assert actions(owner)["remove_role_assignment"] == "skipped"
    assert summary["resources"][owner["resource"]]["exists"] is True
    assert "KV-RBAC-01" in rules(grant) and actions(grant)["remove_role_assignment"] == "skipped"
    assert rules(removal) == ["KV-RBAC-03"]
    assert actions(removal) == {"raise_defender_alert": "applied", "publish_detection": "applied"}


def test_kvguard_s_own_assignment_removed_is_critical(tmp_path: Path) -> None:
    scenario = {
        "vaults": [json.loads(json.dumps(load_scenario(sample("22")).scenario.vaults[0]))],
        "resources": [{
            "id": "/subscriptions/5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a/providers/Microsoft.Authorization"
                  "/roleAssignments/7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0e",
            "type": "Microsoft.Authorization/roleAssignments",
            "properties": {"roleDefinitionId": "/subscriptions/5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a/providers/"
                                               "Microsoft.Authorization/roleDefinitions/"
                                               "f58310d9-a9f6-439a-9e8d-f62e7b41a168",
                           "principalId": "5ca1ab1e-0000-4000-8000-00000000c0de", "principalType": "ServicePrincipal",
                           "scope": "/subscriptions/5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a"},
        }],
    }
    assignment_id = scenario["resources"][0]["id"]
    scenario["steps"] = [{"delete": assignment_id}, {"event": {
        "id": "own-removed", "eventType": "Microsoft.Resources.ResourceDeleteSuccess", "subject": assignment_id,
        "eventTime": "2026-11-27T12:00:00Z",
        "data": {"resourceUri": assignment_id, "operationName": "Microsoft.Authorization/roleAssignments/delete",
                 "claims": {"oid": "1d2e3f4a-5b6c-4d7e-8f8a-9b0c1d2e3f4a"}}}}]
    path = tmp_path / "own.json"
    path.write_text(json.dumps(scenario), encoding="utf-8")
    out = StringIO()
    assert main(["replay", str(path), "--json"], out=out) == 0
    record = json.loads(out.getvalue().splitlines()[0])
    [finding] = [f for f in record["findings"] if f["rule"] == "KV-RBAC-04"]
    assert finding["severity"] == "critical" and finding["evidence"]["removed"] is True


SUB = "/subscriptions/5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a"
CUSTOM = f"{SUB}/providers/Microsoft.Authorization/roleDefinitions/c0c0a000-1111-4222-8333-444455556666"


def _custom_role(data_actions: list[str]) -> dict[str, Any]:
    return {"id": CUSTOM, "type": "Microsoft.Authorization/roleDefinitions",
            "properties": {"roleName": "hr operator", "type": "CustomRole", "assignableScopes": [SUB],
                           "permissions": [{"actions": ["*/read"], "dataActions": data_actions}]}}


def _event(event_id: str, resource_id: str, operation: str) -> dict[str, Any]:
    return {"id": event_id, "eventType": "Microsoft.Resources.ResourceWriteSuccess", "subject": resource_id,
            "eventTime": "2026-11-27T12:00:00Z",
            "data": {"resourceUri": resource_id, "operationName": operation,
                     "claims": {"oid": "1d2e3f4a-5b6c-4d7e-8f8a-9b0c1d2e3f4a"}}}


def test_a_custom_role_is_read_to_judge_its_assignment_and_its_widening_is_found(tmp_path: Path) -> None:
    vault = load_scenario(sample("22")).scenario.vaults[0]
    assignment = {"id": f"{vault['id']}/providers/Microsoft.Authorization/roleAssignments/"
                        "8b9c0d1e-2f3a-4b4c-9d5e-6f7a8b9c0d1f",
                  "type": "Microsoft.Authorization/roleAssignments",
                  "properties": {"roleDefinitionId": CUSTOM, "principalId": "a7b8c9d0-e1f2-4a3b-8c4d-5e6f7a8b9c0d",
                                 "scope": vault["id"]}}
    metadata_only = ["Microsoft.KeyVault/vaults/secrets/readMetadata/action"]
    path = tmp_path / "custom.json"
    path.write_text(json.dumps({
        "vaults": [vault], "resources": [_custom_role(metadata_only)],
        "steps": [
            {"write": assignment},
            {"event": _event("assigned", assignment["id"], "Microsoft.Authorization/roleAssignments/write")},
            {"write": _custom_role([*metadata_only, "Microsoft.KeyVault/vaults/secrets/*"])},
            {"event": _event("widened", CUSTOM, "Microsoft.Authorization/roleDefinitions/write")},
        ],
    }), encoding="utf-8")
    out = StringIO()
    assert main(["replay", str(path), "--json"], out=out) == 0
    assigned, widened = (json.loads(line) for line in out.getvalue().splitlines()[:2])
    [finding] = [f for f in assigned["findings"] if f["rule"] == "KV-RBAC-01"]
    assert finding["severity"] == "high" and finding["evidence"]["role"] == "hr operator"  # metadata: not critical
    [finding] = [f for f in widened["findings"] if f["rule"] == "KV-RBAC-05"]
    assert "Microsoft.KeyVault/vaults/secrets/getSecret/action" in finding["evidence"]["gainedDataActions"]
    assert finding["evidence"]["vaults"] == [vault["id"]]


def test_a_crypto_service_release_user_grant_is_critical_and_removed(tmp_path: Path) -> None:
    """Scenario 20 with the added assignment's role swapped for Key Vault Crypto Service Release
    User: releasing a key hands over its private material, so the grant is critical data access."""
    text = sample("20").read_text()
    added = text.index("  - write:")  # only the added assignment changes role; the baseline's stays
    swapped = text[:added] + text[added:].replace("4633458b-17de-408a-b874-0445c86b69e6",
                                                  "08bbd89e-9f13-488c-ac41-acfcb10c90ab", 1)
    (tmp_path / "release.yaml").write_text(swapped)
    out = StringIO()
    assert main(["replay", str(tmp_path / "release.yaml"), "--json"], out=out) == 0
    grant = json.loads(out.getvalue().splitlines()[0])

    [finding] = [f for f in grant["findings"] if f["rule"] == "KV-RBAC-01"]
    assert finding["severity"] == "critical"
    assert finding["evidence"]["role"] == "Key Vault Crypto Service Release User"
    assert finding["evidence"]["dataActions"] == ["Microsoft.KeyVault/vaults/keys/release/action"]
    assert actions(grant)["remove_role_assignment"] == "applied"
