"""Paths that laundered a change into the baseline (issue 19, items 1, 5 and 6a), each as a
scenario run through `kvguard replay --json`, the way an operator would reproduce it: a change is
accepted only when an approved caller made it, or kvguard judged it within policy and alerted
where the policy says."""

from __future__ import annotations

import copy
import json
from io import StringIO
from pathlib import Path
from typing import Any

from kvguard.cli import main

SUB = "4a5b6c7d-8e9f-4a0b-9c1d-2e3f4a5b6c7d"
TENANT = "5b6c7d8e-9f0a-4b1c-8d2e-3f4a5b6c7d8e"
KV = f"/subscriptions/{SUB}/resourceGroups/rg-pay/providers/Microsoft.KeyVault/vaults/kv-pay"
TEAM = "6c7d8e9f-0a1b-4c2d-9e3f-4a5b6c7d8e9f"
INTRUDER = "7d8e9f0a-1b2c-4d3e-8f4a-5b6c7d8e9f0a"
PIPELINE = "8e9f0a1b-2c3d-4e4f-9a5b-6c7d8e9f0a1b"
VAULT_WRITE = "Microsoft.KeyVault/vaults/write"
POLICY_WRITE = "Microsoft.KeyVault/vaults/accessPolicies/write"


def grant(principal: str, *secrets: str) -> dict[str, Any]:
    return {"tenantId": TENANT, "objectId": principal, "permissions": {"secrets": list(secrets)}}


def vault(*policies: dict[str, Any], tags: dict[str, str] | None = None,
          default_action: str = "Deny") -> dict[str, Any]:
    return {
        "id": KV, "name": "kv-pay", "type": "Microsoft.KeyVault/vaults", "location": "westeurope",
        "tags": {"owner": "payments", **(tags or {})},
        "properties": {
            "tenantId": TENANT, "sku": {"family": "A", "name": "standard"},
            "accessPolicies": [grant(TEAM, "Get"), *copy.deepcopy(list(policies))],
            "enableRbacAuthorization": False, "enableSoftDelete": True, "softDeleteRetentionInDays": 90,
            "enablePurgeProtection": True, "publicNetworkAccess": "Disabled",
            "networkAcls": {"defaultAction": default_action, "bypass": "None", "ipRules": []},
        },
    }


def event(event_id: str, caller: str, operation: str, at: str, method: str = "PUT") -> dict[str, Any]:
    uri = f"{KV}/accessPolicies/add" if operation == POLICY_WRITE else KV
    return {
        "id": event_id, "topic": f"/subscriptions/{SUB}", "subject": uri,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess", "eventTime": at, "dataVersion": "2",
        "data": {"resourceUri": uri, "operationName": operation, "status": "Succeeded",
                 "claims": {"oid": caller, "tid": TENANT}, "httpRequest": {"method": method},
                 "subscriptionId": SUB, "tenantId": TENANT},
    }


def replayed(tmp_path: Path, scenario: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps({"clock": "2026-11-27T10:00:00Z", **scenario}), encoding="utf-8")
    out = StringIO()
    assert main(["replay", str(path), "--json"], out=out) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    return lines[:-1], lines[-1]


def statuses(record: dict[str, Any]) -> dict[str, str]:
    return {a["handler"]: a["status"] for a in record["actions"]}


def rules(record: dict[str, Any]) -> set[str]:
    return {f["rule"] for f in record["findings"]}


def principals(summary: dict[str, Any]) -> set[str]:
    config = summary["vaults"][KV]["config"]
    return {p["objectId"] for p in config["properties"]["accessPolicies"]}


def test_two_step_steering_tag_move_with_no_approved_callers_is_alerted_and_the_grant_reverted(
    tmp_path: Path
) -> None:
    """Item 1: a tag-only write `kvguard-mode: observe` by a caller nobody approved is alerted
    (KV-TAG-01) and not accepted; the same caller's next rogue grant is judged in the baseline's
    mode (remediate): alerted and reverted."""
    observe = {"kvguard-mode": "observe"}
    events, summary = replayed(tmp_path, {
        "policy": {"mode": "remediate"}, "vaults": [vault()],
        "steps": [
            {"write": vault(tags=observe)},
            {"event": event("e1", INTRUDER, VAULT_WRITE, "2026-11-27T10:00:01Z")},
            {"advance": "PT5M"},
            {"write": vault(grant(INTRUDER, "Get", "List"), tags=observe)},
            {"event": event("e2", INTRUDER, POLICY_WRITE, "2026-11-27T10:05:01Z")},
        ],
    })
    retag, rogue = (e for e in events if e["event_id"] in ("e1", "e2"))
    assert "KV-TAG-01" in rules(retag)
    assert statuses(retag)["raise_defender_alert"] == "applied", "a steering-tag move is never silent"
    assert "KV-AP-01" in rules(rogue)
    assert statuses(rogue)["raise_defender_alert"] == "applied"
    assert statuses(rogue)["revert_access_policy"] == "applied"
    assert INTRUDER not in principals(summary)


def test_the_change_the_circuit_breaker_let_through_is_reverted_once_its_window_has_passed(tmp_path: Path) -> None:
    """Item 5: after three reverts within the window the fourth grant is alert-only, and must not
    become the baseline: the next event after the window reverts it."""
    rogue = grant(INTRUDER, "Get", "List")
    steps: list[dict[str, Any]] = []
    for n in range(4):
        steps += [{"write": vault(rogue)}, {"event": event(f"g{n}", INTRUDER, POLICY_WRITE,
                                                           f"2026-11-27T10:{10 * n:02d}:01Z")},
                  {"advance": "PT10M"}]
    steps += [{"advance": "PT1H"},
              {"write": vault(rogue, tags={"owner": "payments-team"})},
              {"event": event("later", TEAM, VAULT_WRITE, "2026-11-27T11:40:01Z", method="PATCH")}]
    events, summary = replayed(tmp_path, {
        "policy": {"mode": "remediate", "circuit_breaker": {"max_remediations": 3, "window": "PT1H"}},
        "vaults": [vault()], "steps": steps,
    })
    by_id = {e["event_id"]: e for e in events}
    assert [statuses(by_id[f"g{n}"])["revert_access_policy"] for n in range(4)] == [
        "applied", "applied", "applied", "skipped"]
    assert "circuit breaker" in next(a["detail"] for a in by_id["g3"]["actions"]
                                     if a["handler"] == "revert_access_policy")
    assert statuses(by_id["g3"])["raise_defender_alert"] == "applied"
    later = by_id["later"]
    assert "KV-AP-01" in rules(later)
    assert statuses(later)["revert_access_policy"] == "applied"
    assert INTRUDER not in principals(summary)


def test_the_circuit_breakers_change_is_reverted_by_the_reconcile_timer_after_the_window(tmp_path: Path) -> None:
    rogue = grant(INTRUDER, "Get", "List")
    steps: list[dict[str, Any]] = []
    for n in range(4):
        steps += [{"write": vault(rogue)}, {"event": event(f"g{n}", INTRUDER, POLICY_WRITE,
                                                           f"2026-11-27T10:{10 * n:02d}:01Z")},
                  {"advance": "PT10M"}]
    events, summary = replayed(tmp_path, {
        "policy": {"mode": "remediate", "circuit_breaker": {"max_remediations": 3, "window": "PT1H"}},
        "vaults": [vault()], "steps": [*steps, {"advance": "PT1H"}, {"reconcile": {}}],
    })
    reconciled = [e for e in events if str(e["event_id"]).startswith("reconcile:")]
    assert reconciled and statuses(reconciled[0])["revert_access_policy"] == "applied"
    assert INTRUDER not in principals(summary)


def test_a_rogue_grant_just_before_an_approved_patch_is_not_accepted_in_the_pipelines_name(tmp_path: Path) -> None:
    """Item 6a: the intruder grants, the approved pipeline PATCHes the vault seconds later, and
    the pipeline's event is delivered first. Only what a PATCH can have written (not the access
    policies) is accepted; the grant's own event then finds it against the old baseline and
    reverts it."""
    rogue = grant(INTRUDER, "Get", "List")
    events, summary = replayed(tmp_path, {
        "policy": {"mode": "remediate", "approved_callers": [PIPELINE]}, "vaults": [vault()],
        "steps": [
            {"write": vault(rogue, tags={"release": "42"})},
            {"events": [event("pipeline", PIPELINE, VAULT_WRITE, "2026-11-27T10:00:03Z", method="PATCH"),
                        event("intruder", INTRUDER, POLICY_WRITE, "2026-11-27T10:00:01Z")]},
        ],
    })
    by_id = {e["event_id"]: e for e in events}
    assert "revert_access_policy" not in statuses(by_id["pipeline"]) or (
        statuses(by_id["pipeline"])["revert_access_policy"] == "skipped")
    assert "KV-AP-01" in rules(by_id["intruder"])
    assert statuses(by_id["intruder"])["revert_access_policy"] == "applied"
    assert INTRUDER not in principals(summary)
    assert summary["vaults"][KV]["config"]["tags"]["release"] == "42"  # the pipeline's own change stays


def test_a_network_change_just_before_an_approved_access_policy_write_is_not_accepted(tmp_path: Path) -> None:
    """An `accessPolicies/write` changes access policies only: a firewall opened by someone else
    just before it is judged by its own event against the old baseline."""
    events, summary = replayed(tmp_path, {
        "policy": {"mode": "remediate", "approved_callers": [PIPELINE]}, "vaults": [vault()],
        "steps": [
            {"write": vault(grant(PIPELINE, "Get"), default_action="Allow")},
            {"events": [event("pipeline", PIPELINE, POLICY_WRITE, "2026-11-27T10:00:03Z"),
                        event("intruder", INTRUDER, VAULT_WRITE, "2026-11-27T10:00:01Z", method="PATCH")]},
        ],
    })
    by_id = {e["event_id"]: e for e in events}
    assert "KV-NET-02" in rules(by_id["intruder"])
    assert statuses(by_id["intruder"])["restore_network"] == "applied"
    config = summary["vaults"][KV]["config"]
    assert config["properties"]["networkAcls"]["defaultAction"] == "Deny"
    assert PIPELINE in principals(summary)  # the approved grant stays
