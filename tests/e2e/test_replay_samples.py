"""Every sample scenario, replayed through the CLI, does what its description promises.

The samples are the project's demo and documentation, so these tests pin their behaviour and the
`--json` output format (README, "Scenarios and `kvguard replay`") that other tools read.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvguard.cli import main
from kvguard.ids import vault_key
from kvguard.replay import ReplayRun, build_run, replay
from kvguard.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "samples" / "scenarios"
SAMPLES = sorted(SCENARIOS.glob("*.yaml"))

EVENT_KEYS = {"event_id", "outcome", "reason", "vault", "resource", "risk", "severity", "findings", "actions"}
FINDING_KEYS = {"rule", "severity", "score", "title", "evidence"}
ACTION_KEYS = {"handler", "status", "detail"}
OUTCOMES = {"processed", "duplicate", "ignored", "rejected", "self"}
SEVERITIES = {"none", "low", "medium", "high", "critical"}
STATUSES = {"applied", "planned", "skipped", "failed"}
ALERT_HANDLERS = {"raise_defender_alert", "publish_detection"}
REMEDIATION_HANDLERS = {"revert_access_policy", "restore_network", "restore_settings", "enable_purge_protection",
                        "restore_diagnostic_setting", "reject_private_endpoint", "restore_lock",
                        "restore_defender_plan", "remove_policy_exemption", "restore_policy_assignment",
                        "remove_perimeter_rule_source", "remove_event_subscription"}


# --- helpers ---------------------------------------------------------------------------------


def sample(prefix: str) -> Path:
    [path] = [p for p in SAMPLES if p.name.startswith(f"{prefix}-")]
    return path


@functools.cache
def _replay_text(path: Path) -> str:
    out = StringIO()
    assert main(["replay", str(path), "--json"], out=out) == 0
    return out.getvalue()


def replayed(prefix: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The event lines and the summary line of one sample's `replay --json`."""
    lines = [json.loads(line) for line in _replay_text(sample(prefix)).splitlines()]
    return lines[:-1], lines[-1]


def run_world(prefix: str) -> ReplayRun:
    """The same sample through build_run/replay, to look at the simulated world afterwards."""
    return replay(build_run(load_scenario(sample(prefix))))


def source(prefix: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(sample(prefix).read_text(encoding="utf-8"))
    return data


def original(prefix: str, name: str) -> dict[str, Any]:
    [doc] = [v for v in source(prefix)["vaults"] if v["name"] == name]
    return doc


def rules(event: dict[str, Any]) -> set[str]:
    return {f["rule"] for f in event["findings"]}


def actions(event: dict[str, Any], handler: str) -> list[dict[str, Any]]:
    return [a for a in event["actions"] if a["handler"] == handler]


def by_id(events: list[dict[str, Any]], event_id: str) -> dict[str, Any]:
    [event] = [e for e in events if e["event_id"] == event_id]
    return event


def final_config(summary: dict[str, Any], vault_id: str) -> dict[str, Any] | None:
    config: dict[str, Any] | None = summary["vaults"][vault_id]["config"]
    return config


def remediations(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [a for e in events for a in e["actions"] if a["handler"] in REMEDIATION_HANDLERS]


# --- the set of samples and the output format --------------------------------------------------


def test_the_samples_cover_every_documented_scenario() -> None:
    numbers = sorted(p.name.split("-", 1)[0] for p in SAMPLES)
    assert numbers == [f"{n:02d}" for n in range(1, 30)]


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_sample_has_a_name_and_a_description(path: Path) -> None:
    loaded = load_scenario(path)
    assert loaded.scenario.name != "unnamed scenario"
    assert loaded.scenario.description is not None and len(loaded.scenario.description) > 100


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_json_output_has_exactly_the_documented_keys(path: Path) -> None:
    events, summary = replayed(path.name.split("-", 1)[0])
    assert events, "a sample delivers at least one event"
    for event in events:
        # Every record names the changed resource right after the vault (the vault itself for a
        # vault's change; kvguard's own deployment or a resource beside a vault otherwise).
        assert set(event) == EVENT_KEYS
        assert list(event)[list(event).index("vault") + 1] == "resource"
        assert event["outcome"] in OUTCOMES
        assert event["severity"] in SEVERITIES
        assert isinstance(event["reason"], str) and event["reason"]
        assert isinstance(event["risk"], int) and 0 <= event["risk"] <= 100
        assert (event["risk"] == 0) == (event["severity"] == "none")
        for finding in event["findings"]:
            assert set(finding) == FINDING_KEYS
            assert finding["severity"] in SEVERITIES - {"none"}
            assert isinstance(finding["evidence"], dict) and finding["evidence"]
        for action in event["actions"]:
            assert set(action) == ACTION_KEYS
            assert action["status"] in STATUSES
        if event["outcome"] != "processed":
            assert event["findings"] == [] and event["actions"] == []
    assert set(summary) == {"summary", "vaults", "resources"}
    assert set(summary["summary"]) == {"events", "outcomes", "findings", "actions"}
    totals = summary["summary"]
    assert totals["events"] == len(events)
    assert sum(totals["outcomes"].values()) == len(events)
    assert totals["findings"] == _count(f["rule"] for e in events for f in e["findings"])
    assert totals["actions"] == _count_actions(a for e in events for a in e["actions"])
    for vault_id, entry in summary["vaults"].items():
        assert vault_id.startswith("/subscriptions/")
        assert entry["exists"] == (entry["config"] is not None)
        assert entry["scenarios"] == [load_scenario(path).scenario.name]
        assert entry["actions"] == _count_actions(a for e in events if e["vault"] == vault_id for a in e["actions"])


def _count(items: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def _count_actions(actions: Any) -> dict[str, dict[str, int]]:
    """Actions counted as the summary counts them: by handler, then by status."""
    counts: dict[str, dict[str, int]] = {}
    for action in actions:
        by_status = counts.setdefault(action["handler"], {})
        by_status[action["status"]] = by_status.get(action["status"], 0) + 1
    return counts


def test_vault_in_outcomes_is_the_vault_resource_id() -> None:
    events, _ = replayed("02")
    vault_id = original("02", "kv-orders-prod")["id"]
    assert [e["vault"] for e in events] == [vault_id, vault_id]


def test_installed_command_replays_every_sample_as_json_lines() -> None:
    command = Path(sys.executable).with_name("kvguard")
    result = subprocess.run(
        [str(command), "replay", *map(str, SAMPLES), "--json"],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(isinstance(line, dict) for line in lines)
    *events, summary = lines
    assert all(set(e) == EVENT_KEYS for e in events)
    assert summary["summary"]["events"] == len(events) == sum(len(replayed(p.name[:2])[0]) for p in SAMPLES)
    scenarios = {name for entry in summary["vaults"].values() for name in entry["scenarios"]}
    assert scenarios == {load_scenario(p).scenario.name for p in SAMPLES if load_scenario(p).scenario.vaults}


def test_summary_counts_actions_by_handler_then_status() -> None:
    events, summary = replayed("01")
    vault_id = original("01", "kv-payments-prod")["id"]
    assert summary["summary"]["actions"]["revert_access_policy"] == {"applied": 1}
    assert summary["vaults"][vault_id]["actions"]["revert_access_policy"] == {"applied": 1}
    assert set(summary["summary"]["actions"]) == {a["handler"] for e in events for a in e["actions"]}


def test_readable_summary_line_names_each_handler_with_its_statuses() -> None:
    _, summary = replayed("01")
    totals = summary["summary"]["actions"]
    expected = "; ".join(
        f"{handler} " + " ".join(f"{status} {count}" for status, count in sorted(totals[handler].items()))
        for handler in sorted(totals)
    )
    assert "revert_access_policy applied 1" in expected
    out = StringIO()
    assert main(["replay", str(sample("01"))], out=out) == 0
    text = " ".join(out.getvalue().split())
    assert f"actions: {expected}" in text


def _write_scenario(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_scenarios_sharing_a_vault_are_merged_in_the_summary(tmp_path: Path) -> None:
    """Two runs of sample 01 (the second then deletes the vault) and a third file that only lists
    the vault, its id spelled in lower case: one summary entry, counts added up, the last end state."""
    base = source("01")
    vault_id = original("01", "kv-payments-prod")["id"]
    first = _write_scenario(tmp_path / "first.json", {**base, "name": "first run"})
    second = _write_scenario(tmp_path / "second.json", {
        **base, "name": "second run", "steps": [*base["steps"], {"delete": vault_id}],
    })
    quiet_vault = {**original("01", "kv-payments-prod"), "id": vault_id.lower()}
    third = _write_scenario(tmp_path / "third.json", {"name": "only listed", "vaults": [quiet_vault], "steps": []})
    out = StringIO()
    assert main(["replay", str(first), str(second), "--json"], out=out) == 0
    *events, summary = [json.loads(line) for line in out.getvalue().splitlines()]
    one_events, one_summary = replayed("01")
    assert len(events) == 2 * len(one_events)
    [entry] = summary["vaults"].values()
    single = one_summary["vaults"][vault_id]
    assert list(summary["vaults"]) == [vault_id]
    assert entry["scenarios"] == ["first run", "second run"]
    assert "scenario" not in entry
    assert entry["events"] == 2 * single["events"] == len(events)
    assert entry["findings"] == {rule: 2 * count for rule, count in single["findings"].items()}
    assert entry["actions"] == {
        handler: {status: 2 * count for status, count in statuses.items()}
        for handler, statuses in single["actions"].items()
    }
    assert entry["actions"]["revert_access_policy"] == {"applied": 2}
    assert summary["summary"]["actions"] == entry["actions"]
    # The end state is the second run's: the vault was deleted.
    assert single["exists"] is True
    assert (entry["exists"], entry["config"]) == (False, None)

    out = StringIO()
    assert main(["replay", str(first), str(second), str(third), "--json"], out=out) == 0
    summary = json.loads(out.getvalue().splitlines()[-1])
    [(reported_id, entry)] = summary["vaults"].items()
    assert reported_id == vault_id
    assert entry["scenarios"] == ["first run", "second run", "only listed"]
    assert entry["events"] == len(events)
    assert entry["exists"] is True
    assert entry["config"]["id"] == vault_id.lower()
    assert entry["open_findings"] == []


# --- 01 rogue access policy ---------------------------------------------------------------------


def test_01_rogue_grant_is_removed_and_the_revert_is_self() -> None:
    events, summary = replayed("01")
    grant, own = events
    assert grant["outcome"] == "processed"
    assert {"KV-AP-01", "KV-AP-03", "KV-ID-03"} <= rules(grant)
    assert grant["severity"] == "critical"
    [revert] = actions(grant, "revert_access_policy")
    assert revert["status"] == "applied"
    assert "d4e5f6a7-b8c9-4d0e-8f1a-2b3c4d5e6f70" in revert["detail"]
    assert own["outcome"] == "self" and own["vault"] == grant["vault"]
    vault = original("01", "kv-payments-prod")
    assert final_config(summary, vault["id"]) == vault


# --- 02 firewall opened -----------------------------------------------------------------------------


def test_02_firewall_is_closed_again() -> None:
    events, summary = replayed("02")
    opened, own = events
    assert {"KV-NET-01", "KV-NET-02", "KV-NET-03"} <= rules(opened)
    assert not rules(opened) & {"KV-NET-04", "KV-NET-05", "KV-AP-01"}
    [ip_rule] = [f for f in opened["findings"] if f["rule"] == "KV-NET-03"]
    assert ip_rule["evidence"]["ipRule"] == "0.0.0.0/0"
    assert [a["status"] for a in actions(opened, "restore_network")] == ["applied"]
    assert {a["handler"] for a in opened["actions"] if a["status"] == "applied"} >= ALERT_HANDLERS
    assert own["outcome"] == "self"
    vault = original("02", "kv-orders-prod")
    assert final_config(summary, vault["id"]) == vault
    assert summary["vaults"][vault["id"]]["open_findings"] == ["KV-ID-05"]


def test_02_alerts_go_out_before_the_remediation() -> None:
    events, _ = replayed("02")
    handlers = [a["handler"] for a in events[0]["actions"]]
    assert handlers.index("restore_network") > max(handlers.index(h) for h in ALERT_HANDLERS)


# --- 03 RBAC switched off ---------------------------------------------------------------------------


def test_03_rbac_and_template_deployment_are_restored() -> None:
    events, summary = replayed("03")
    change, own = events
    assert {"KV-PROT-03", "KV-PROT-04"} <= rules(change)
    [rbac] = [f for f in change["findings"] if f["rule"] == "KV-PROT-03"]
    assert rbac["severity"] == "critical" and rbac["evidence"] == {
        "property": "enableRbacAuthorization", "before": True, "after": False}
    assert change["severity"] == "critical"
    [restore] = actions(change, "restore_settings")
    assert restore["status"] == "applied"
    assert "enableRbacAuthorization=true" in restore["detail"]
    assert "enabledForTemplateDeployment=false" in restore["detail"]
    assert own["outcome"] == "self"
    vault = original("03", "kv-hr-payroll")
    assert final_config(summary, vault["id"]) == vault


# --- 04 CloudEvents, alert mode -------------------------------------------------------------------


def test_04_cloudevent_widening_alerts_without_remediation() -> None:
    events, summary = replayed("04")
    [event] = events
    envelope = source("04")["steps"][1]["event"]
    assert envelope["specversion"] == "1.0" and "eventType" not in envelope
    assert event["event_id"] == envelope["id"] and event["outcome"] == "processed"
    assert "KV-AP-02" in rules(event)
    assert not rules(event) & {"KV-AP-01", "KV-AP-03"}
    [widened] = [f for f in event["findings"] if f["rule"] == "KV-AP-02"]
    assert widened["evidence"]["added"] == ["decrypt", "sign"]
    assert {a["handler"]: a["status"] for a in event["actions"]} == {
        "raise_defender_alert": "applied", "publish_detection": "applied", "revert_access_policy": "skipped"}
    assert "alert mode does not remediate" in actions(event, "revert_access_policy")[0]["detail"]
    vault_id = original("04", "kv-billing-cmk")["id"]
    written = source("04")["steps"][0]["write"]
    assert final_config(summary, vault_id) == written
    assert "KV-AP-02" in summary["vaults"][vault_id]["open_findings"]


# --- 05 duplicate delivery -------------------------------------------------------------------------


def test_05_duplicates_are_reported_and_do_nothing() -> None:
    events, summary = replayed("05")
    first = "f1a3c5e7-9b2d-4f6a-8c0e-1a3c5e7b9d24"
    twin = "a4c6e8b0-2d4f-4a6c-9e8b-0d2f4a6c8e17"
    assert [(e["event_id"] == first, e["outcome"]) for e in events] == [
        (True, "processed"), (True, "duplicate"), (False, "self"), (False, "processed"), (True, "duplicate")]
    assert events[3]["event_id"] == twin
    for duplicate in (events[1], events[4]):
        assert duplicate["reason"] == "event already processed"
        assert vault_key(duplicate["vault"]) == vault_key(events[0]["vault"])
    assert "KV-AP-01" in rules(events[0])
    assert events[3]["findings"] == [] and remediations(events[3:]) == []
    assert [a["status"] for a in remediations(events)] == ["applied"]
    vault = original("05", "kv-crm-prod")
    assert final_config(summary, vault["id"]) == vault


def test_05_one_write_reported_twice_shares_the_correlation_id() -> None:
    steps = source("05")["steps"]
    first, twin = steps[1]["events"][0], steps[2]["event"]
    assert first["id"] != twin["id"]
    assert first["data"]["correlationId"] == twin["data"]["correlationId"]


# --- 06 approved pipeline -----------------------------------------------------------------------


def test_06_approved_cmk_grant_is_accepted_and_not_refired() -> None:
    events, summary = replayed("06")
    grant, later = events
    assert [e["outcome"] for e in events] == ["processed", "processed"]
    assert "KV-AP-01" in rules(grant)
    assert not rules(grant) & {"KV-AP-03", "KV-ID-01"}
    [revert] = actions(grant, "revert_access_policy")
    assert revert["status"] == "skipped" and "approved caller" in revert["detail"]
    assert later["findings"] == [] and remediations(events) == [a for a in remediations(events) if a is revert]
    vault_id = original("06", "kv-platform-cmk")["id"]
    policies = final_config(summary, vault_id)["properties"]["accessPolicies"]  # type: ignore[index]
    assert {p["objectId"] for p in policies} == {
        "1b3d5f7a-9c1e-4b3d-8f7a-9c1e3b5d7f80", "8f0a2c4e-6a8c-4f0a-a2c4-e6a8c0e2a4d9"}
    assert "self" not in summary["summary"]["outcomes"]


# --- 07 malformed and foreign input -------------------------------------------------------------


def test_07_foreign_events_are_ignored_with_reasons() -> None:
    events, _ = replayed("07")
    ignored = {e["event_id"]: e["reason"] for e in events if e["outcome"] == "ignored"}
    assert ignored == {
        "2c4e6a8c-0e2a-4c4e-8a8c-0e2a4c6e8a01": "event type Microsoft.Storage.BlobCreated does not concern a Key Vault",
        "3d5f7b9d-1f3b-4d5f-9b9d-1f3b5d7f9b14":
            "operation Microsoft.Storage/storageAccounts/write does not concern a Key Vault",
        "8c0e2a4c-6e8a-4c0e-a4c6-e8a0c2e4a657":
            "event type Microsoft.KeyVault.SecretNewVersionCreated is not a vault configuration change",
        "9d1f3b5d-7f9b-4d1f-b5d7-f9b1d3f5b768":
            "operation Microsoft.KeyVault/vaults/secrets/write is not a vault change kvguard handles",
    }


def test_07_bad_input_is_rejected_with_the_field_named() -> None:
    events, summary = replayed("07")
    rejected = [e for e in events if e["outcome"] == "rejected"]
    reasons = [e["reason"] for e in rejected]
    assert len(rejected) == 7
    assert "subject: field required" in reasons
    assert "data.resourceUri: field required" in reasons
    assert any(r.startswith("id: field required") and "eventType: field required" in r for r in reasons)
    assert "event: expected a JSON object, got int" in reasons
    assert any(r.startswith("payload: not valid JSON") for r in reasons)
    assert "payload: an empty batch holds no event" in reasons
    assert any(r.startswith("eventTime:") for r in reasons)
    assert summary["summary"]["outcomes"] == {"ignored": 4, "rejected": 7, "processed": 1}


def test_07_a_mixed_batch_processes_the_good_event() -> None:
    events, _ = replayed("07")
    good = by_id(events, "3b5d7f9b-1d3f-4b5d-af9b-1d3f5b7d9fa2")
    bad = by_id(events, "5d7f9b1d-3f5b-4d7f-9b1d-3f5b7d9f1bc4")
    assert good["outcome"] == "processed" and bad["outcome"] == "rejected"
    assert events.index(good) == events.index(bad) - 1 == len(events) - 2


def test_07_rejected_payloads_are_stored_raw() -> None:
    run = run_world("07")
    stored = run.pipeline.store.list_rejected()
    assert len(stored) == 7
    raws = [r.raw for r in stored]
    assert "42" in raws and "{}" in raws and "[]" in raws
    assert "<html><body>502 Bad Gateway</body></html>" in raws
    assert any("yesterday afternoon" in raw for raw in raws)
    with_ids = {r.event_id for r in stored if r.event_id}
    assert "2a4c6e8a-0c2e-4a4c-8e8a-0c2e4a6c8e91" in with_ids


# --- 08 deleted and purged by a guest -------------------------------------------------------------


def test_08_delete_and_purge_by_a_guest() -> None:
    events, summary = replayed("08")
    deleted, purged = events
    vault_id = original("08", "kv-analytics-legacy")["id"]
    assert deleted["vault"] == vault_id
    assert {"KV-LIFE-01", "KV-ID-02"} <= rules(deleted) and "KV-LIFE-02" not in rules(deleted)
    assert {"KV-LIFE-02", "KV-ID-02"} <= rules(purged) and "KV-LIFE-01" not in rules(purged)
    [purge] = [f for f in purged["findings"] if f["rule"] == "KV-LIFE-02"]
    assert purge["severity"] == "critical" and purged["severity"] == "critical"
    assert purged["vault"] == vault_id  # the purge names the deleted vault; reported under the vault's id
    assert list(summary["vaults"]) == [vault_id]
    for event in events:
        [guest] = [f for f in event["findings"] if f["rule"] == "KV-ID-02"]
        assert "guest account (#EXT# in the UPN)" in guest["evidence"]["reasons"]
        assert "#EXT#" in guest["evidence"]["caller"]["upn"]
        assert {a["handler"] for a in event["actions"]} == ALERT_HANDLERS
        assert {a["status"] for a in event["actions"]} == {"applied"}
        assert all(a["detail"].startswith("KV-") for a in event["actions"][:2])
    assert summary["vaults"][vault_id]["exists"] is False


# --- 09 cover-up and burst ----------------------------------------------------------------------


def test_09_grant_removed_within_minutes_is_a_cover_up() -> None:
    events, _ = replayed("09")
    granted, removed = events[:2]
    assert "KV-AP-01" in rules(granted) and "KV-AP-05" not in rules(granted)
    assert rules(removed) == {"KV-AP-05"}
    [cover_up] = removed["findings"]
    assert cover_up["evidence"]["objectId"] == "6c8e0a2c-4e6a-4c8e-a0a2-c4e6a8c0e2f7"
    assert cover_up["evidence"]["windowSeconds"] == 600
    assert remediations(events) and {a["status"] for a in remediations(events)} == {"skipped"}


def test_09_only_the_fifth_vault_in_the_window_fires_the_burst_rule() -> None:
    events, _ = replayed("09")
    burst = events[2:]
    assert len(burst) == 5 and len({e["vault"] for e in burst}) == 5
    assert ["KV-ID-06" in rules(e) for e in burst] == [False, False, False, False, True]
    assert all("KV-AP-01" in rules(e) for e in burst)
    [finding] = [f for f in burst[-1]["findings"] if f["rule"] == "KV-ID-06"]
    assert finding["evidence"]["vaults"] == 5 and finding["evidence"]["vaultThreshold"] == 5


# --- 10 dry run and the observe tag ---------------------------------------------------------------


def test_10_dry_run_plans_and_leaves_the_vault_open() -> None:
    events, summary = replayed("10")
    search, sandbox = events
    [plan] = actions(search, "restore_network")
    assert plan["status"] == "planned" and "publicNetworkAccess" in plan["detail"]
    assert "self" not in summary["summary"]["outcomes"]
    assert "applied" not in {a["status"] for a in remediations(events)}
    for name in ("kv-search-prod", "kv-sandbox-dev"):
        config = final_config(summary, original("10", name)["id"])
        assert config is not None and config["properties"]["publicNetworkAccess"] == "Enabled"
    assert "KV-NET-01" in rules(sandbox)


def test_10_observe_tag_records_without_alerting() -> None:
    events, _ = replayed("10")
    sandbox = events[1]
    assert sandbox["outcome"] == "processed" and "KV-NET-01" in rules(sandbox)
    assert sandbox["actions"] and {a["status"] for a in sandbox["actions"]} == {"skipped"}
    assert "observe mode" in sandbox["reason"]
    run = run_world("10")
    alerted = {key.split("|")[0] for key in run.world.assessments}
    assert alerted == {original("10", "kv-search-prod")["id"].lower()}
    assert all("kv-sandbox-dev" not in p["source"] for p in run.world.published)


# --- 11 circuit breaker -------------------------------------------------------------------------


def test_11_circuit_breaker_alerts_instead_of_a_fourth_revert() -> None:
    events, summary = replayed("11")
    assert [e["outcome"] for e in events] == ["processed", "self"] * 3 + ["processed"]
    processed = [e for e in events if e["outcome"] == "processed"]
    assert all("KV-AP-01" in rules(e) for e in processed)
    reverts = [actions(e, "revert_access_policy") for e in processed]
    assert [[a["status"] for a in r] for r in reverts] == [["applied"]] * 3 + [["skipped"]]
    assert reverts[-1][0]["detail"].startswith("circuit breaker: 3 remediations")
    assert {a["status"] for a in processed[-1]["actions"] if a["handler"] in ALERT_HANDLERS} == {"applied"}
    vault_id = original("11", "kv-reports-prod")["id"]
    policies = final_config(summary, vault_id)["properties"]["accessPolicies"]  # type: ignore[index]
    assert "4f6b8d0f-2b4d-4f6b-9d0f-2b4d6f8b0d16" in {p["objectId"] for p in policies}


def test_12_an_unplanned_write_by_kvguards_identity_is_processed_and_raises_kv_self_01() -> None:
    events, summary = replayed("12")
    intruding, follow_up = events
    assert intruding["outcome"] == "processed"
    assert {"KV-SELF-01", "KV-AP-01"} <= rules(intruding)
    (self_01,) = [f for f in intruding["findings"] if f["rule"] == "KV-SELF-01"]
    assert self_01["severity"] == "critical"
    assert self_01["evidence"]["ownIdentity"] == "5ca1ab1e-0000-4000-8000-00000000c0de"
    assert [a["status"] for a in actions(intruding, "revert_access_policy")] == ["applied"]
    # The revert was noted in the ledger before it was made: its own event is "self".
    assert follow_up["outcome"] == "self" and follow_up["findings"] == []
    vault_id = original("12", "kv-hr-prod")["id"]
    config = final_config(summary, vault_id)
    assert config is not None
    assert [p["objectId"] for p in config["properties"]["accessPolicies"]] == ["3a5c7e9b-2d4f-4a6c-8e0b-1d3f5a7c9e2b"]


def test_13_changes_to_kvguards_own_deployment_raise_kv_self_02_under_the_resource() -> None:
    events, summary = replayed("13")
    settings, filter_edit, redeploy = events
    own = source("13")["policy"]["own_resource_ids"]
    assert [e["resource"] for e in events] == [own[1], own[0], own[0]]
    assert [e["vault"] for e in events] == [None, None, None]
    for changed in (settings, filter_edit):
        assert rules(changed) == {"KV-SELF-02"}
        assert changed["severity"] == "critical"
        # Alerted whatever the mode and threshold; never remediated.
        assert {a["handler"]: a["status"] for a in changed["actions"]} == {
            "raise_defender_alert": "applied", "publish_detection": "applied"}
    assert settings["findings"][0]["evidence"]["operation"] == "Microsoft.Web/sites/config/write"
    assert redeploy["findings"] == [] and "approved caller" in redeploy["reason"]
    assert summary["vaults"] == {}


def test_14_an_activity_log_grant_is_judged_once_from_its_final_record() -> None:
    events, summary = replayed("14")
    records = source("14")["steps"][1]["activity"]
    finals = [r["eventDataId"] for r in records if r["status"]["value"] == "Succeeded"]
    assert [e["event_id"] for e in events] == finals  # Started records collapse into the Succeeded ones
    grant, assignment = events
    assert {"KV-AP-01", "KV-ID-02"} <= rules(grant)
    assert grant["severity"] == "critical"
    # The role assignment is judged under its own id; the simulated world holds no such assignment
    # any more, so it is judged as the record's request body asked for it: a data role the baseline lacks.
    assert assignment["outcome"] == "processed" and "/roleAssignments/" in assignment["resource"]
    assert {"KV-RBAC-01", "KV-ID-02"} <= rules(assignment)
    # A past event is a dry run: alerted, never remediated.
    assert all("(dry run)" in e["reason"] for e in events)
    assert summary["summary"]["findings"]["KV-AP-01"] == 1


# --- 23, 24: deny settings and PIM eligibility -------------------------------------------------


def test_23_a_stack_denying_kvguards_writes_is_critical_on_its_own_event_and_an_exclusion_is_quiet() -> None:
    events, summary = replayed("23")
    stack, excluded = events
    (deny,) = [f for f in stack["findings"] if f["rule"] == "KV-DENY-01"]
    assert (stack["severity"], deny["severity"]) == ("critical", "critical")
    assert stack["vault"] is None and stack["resource"].endswith("/deploymentStacks/billing-baseline")
    assert deny["evidence"]["kind"] == "deployment stack"
    blocked = {b["handler"]: b["action"] for b in deny["evidence"]["blocked"]}
    assert blocked["restore_network"] == "Microsoft.KeyVault/vaults/write"
    assert "remove_role_assignment" not in blocked  # the stack manages no role assignment
    assert [a["status"] for a in actions(stack, "raise_defender_alert")] == ["applied"]
    assert remediations(events) == []  # nothing to revert: the deny came first
    assert "KV-DENY-01" not in rules(excluded)
    assert summary["summary"]["findings"]["KV-DENY-01"] == 1


def test_24_eligibility_for_secrets_officer_is_critical_and_reader_is_a_near_miss() -> None:
    events, _ = replayed("24")
    officer, reader = events
    (eligible,) = [f for f in officer["findings"] if f["rule"] == "KV-PIM-01"]
    assert eligible["severity"] == "critical"
    assert eligible["evidence"]["role"] == "Key Vault Secrets Officer"
    assert eligible["evidence"]["requestType"] == "AdminAssign"
    assert officer["vault"].endswith("/vaults/kv-billing-prod")
    assert "KV-PIM-01" not in rules(reader)


# --- 25 Managed HSM, 26 a key through ARM -------------------------------------------------------


def test_25_an_opened_hsm_is_alerted_never_written_then_drift_and_purge() -> None:
    events, summary = replayed("25")
    opened, approved, region, deleted, purged = events
    hsm_id = original("25", "hsm-payroll")["id"]
    assert [e["vault"] for e in events] == [hsm_id] * 5
    assert {"KV-NET-01", "KV-NET-02"} <= rules(opened) and rules(approved) == {"KV-PE-01"}
    for event in (opened, approved):
        assert {a["handler"]: a["status"] for a in event["actions"] if a["handler"] in ALERT_HANDLERS} == {
            "raise_defender_alert": "applied", "publish_detection": "applied"}
        [held] = [a for a in event["actions"] if a["handler"] in REMEDIATION_HANDLERS]
        assert held["status"] == "skipped" and "Managed HSM" in held["detail"]
    assert {a["status"] for a in remediations(events)} == {"skipped"}  # the HSM is never written
    [drift] = region["findings"]
    assert drift["rule"] == "KV-DRIFT-01" and [p["property"] for p in drift["evidence"]["properties"]] == [
        "properties.regions"]
    assert "KV-LIFE-01" in rules(deleted) and "KV-LIFE-02" in rules(purged)
    assert summary["vaults"][hsm_id]["exists"] is False


def test_26_a_key_loosened_through_arm_is_kv_key_01_alert_only() -> None:
    events, _ = replayed("26")
    dropped, released, disabled = events
    key_id = source("26")["resources"][0]["id"]
    assert [e["resource"] for e in events] == [key_id] * 3
    details = [f["title"].split(": ", 1)[1] for f in dropped["findings"] if f["rule"] == "KV-KEY-01"]
    assert details == ["rotate action dropped", "expiry pushed out"]
    assert [(f["severity"], f["title"].split(": ", 1)[1]) for f in released["findings"]] == [
        ("high", "release policy changed"), ("high", "key made exportable")]
    assert disabled["findings"] == [] and remediations(events) == []


def test_28_a_range_added_at_the_perimeter_is_taken_out_and_an_association_left_enforced_is_alerted() -> None:
    """The access rule was never read before: the vault's perimeter configuration maps it to the
    vault and says it admitted 10.20.0.0/16 only, so the revert leaves exactly that."""
    events, summary = replayed("28")
    rule_event, own, association = events
    assert [f["rule"] for f in rule_event["findings"] if f["rule"].startswith("KV-NSP")] == ["KV-NSP-01"]
    [nsp] = [f for f in rule_event["findings"] if f["rule"] == "KV-NSP-01"]
    assert nsp["evidence"]["addedPrefixes"] == ["0.0.0.0/0"]
    assert nsp["evidence"]["vaults"] == [v for v in summary["vaults"] if v.endswith("/kv-hr-edge")]
    assert [(a["handler"], a["status"]) for a in remediations([rule_event])] == [
        ("remove_perimeter_rule_source", "applied")]
    assert own["outcome"] == "self"
    [rule] = [r for k, r in summary["resources"].items() if k.lower().endswith("/accessrules/allow-corp")]
    assert rule["config"]["properties"]["addressPrefixes"] == ["10.20.0.0/16"]
    assert "KV-NSP-01" in [f["rule"] for f in association["findings"]]
    assert [(a["handler"], a["status"]) for a in remediations([association])] == [
        ("remove_perimeter_rule_source", "skipped")]


def test_29_a_foreign_webhook_on_the_vaults_topic_is_deleted_and_the_subscription_topic_is_ignored() -> None:
    events, summary = replayed("29")
    feed, own, elsewhere = events
    [finding] = [f for f in feed["findings"] if f["rule"] == "KV-EG-01"]
    assert finding["evidence"]["destination"] == {"endpointType": "WebHook", "webhook": "collector.attacker.example"}
    assert [(a["handler"], a["status"]) for a in remediations([feed])] == [("remove_event_subscription", "applied")]
    assert own["outcome"] == "self"
    [gone] = [r for k, r in summary["resources"].items() if k.lower().endswith("/eventsubscriptions/secret-feed")]
    assert gone["exists"] is False
    assert elsewhere["outcome"] == "ignored" and elsewhere["findings"] == []
    assert elsewhere["reason"].endswith("/systemTopics/sub-events carries no known vault's events")
