"""The command line: the rule catalog, policy validation, and refusal of invalid scenario files.

Exit status is part of the contract (README, "Command line"): 0 after a replay or a valid policy, 2 for an
invalid scenario or policy file, with the file, the field or step, and the reason on stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest

from kvguard.cli import main
from tests.contract import catalog as contract

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_POLICY = ROOT / "samples" / "policy.example.yaml"
SAMPLE = ROOT / "samples" / "scenarios" / "01-rogue-access-policy.yaml"

SUBSCRIPTION = "0d6c2e8a-4b1f-4c3d-9e7a-5f8b2c1d4e6a"
VAULT_ID = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-cli/providers/Microsoft.KeyVault/vaults/kv-cli"


def run(*argv: str) -> tuple[int, str]:
    out = StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


# --- rules --------------------------------------------------------------------------------------


def test_rules_json_lists_exactly_the_documented_rules() -> None:
    code, text = run("rules", "--json")
    assert code == 0
    catalog = json.loads(text)
    assert [entry["id"] for entry in catalog] == list(contract.RULES)
    for entry in catalog:
        assert entry["severity"] in {"low", "medium", "high", "critical"}
        assert entry["mitre"] and all(t.startswith("T1") for t in entry["mitre"])
        assert entry["title"] and entry["rationale"]


def test_rules_json_carries_the_documented_severities_and_handlers() -> None:
    catalog = {entry["id"]: entry for entry in json.loads(run("rules", "--json")[1])}
    assert catalog["KV-PROT-03"]["severity"] == "critical"
    assert catalog["KV-LIFE-02"]["severity"] == "critical"
    assert catalog["KV-ID-04"]["severity"] == "low"
    assert catalog["KV-AP-01"]["remediation"] == "revert_access_policy"
    assert catalog["KV-NET-01"]["remediation"] == "restore_network"
    assert catalog["KV-PROT-03"]["remediation"] == "restore_settings"
    assert catalog["KV-ID-01"]["remediation"] is None


def test_rules_table_names_every_rule() -> None:
    code, text = run("rules")
    assert code == 0
    assert "kvguard rule catalog" in text
    for rule_id in contract.RULES:
        assert rule_id in text


# --- validate -----------------------------------------------------------------------------------


def test_example_policy_is_valid() -> None:
    code, text = run("validate", str(EXAMPLE_POLICY))
    assert code == 0
    assert text.startswith(f"{EXAMPLE_POLICY}: valid policy (mode alert")


def test_example_policy_documents_every_policy_key() -> None:
    text = EXAMPLE_POLICY.read_text(encoding="utf-8")
    for key in ("mode", "dry_run", "alert_threshold", "remediate_threshold", "own_principal_ids",
                "approved_callers", "allowed_networks", "allowed_ip_rules", "min_ip_prefix",
                "allowed_subnet_subscriptions", "change_windows", "excluded_vaults", "history",
                "grant_window", "burst_window", "burst_threshold", "circuit_breaker", "max_remediations",
                "window", "rules", "suppressions"):
        assert f"\n{key}:" in text or f"\n  {key}:" in text, key


def test_example_policy_replays_under_a_sample() -> None:
    code, text = run("replay", str(SAMPLE), "--policy", str(EXAMPLE_POLICY), "--json")
    assert code == 0
    *events, summary = [json.loads(line) for line in text.splitlines()]
    assert summary["summary"]["events"] == len(events) == 2
    # the sample's own policy (remediate) is laid over the file's (alert)
    assert any(a["handler"] == "revert_access_policy" and a["status"] == "applied" for a in events[0]["actions"])


INVALID_POLICIES = [
    ("unknown key", "mode: alert\nalert_treshold: 50\n", "alert_treshold", "unknown key"),
    ("bad mode", "mode: block\n", "mode", "'observe', 'alert' or 'remediate'"),
    ("bad CIDR", "allowed_networks: [10.0.0.0/8, 10.0.0.0/33]\n", "allowed_networks", "'10.0.0.0/33'"),
    ("threshold out of range", "alert_threshold: 80\nremediate_threshold: 160\n", "remediate_threshold",
     "less than or equal to 100"),
    ("unknown rule", "rules: {KV-XX-99: {enabled: false}}\n", "rules", "KV-XX-99"),
    ("bad duration", "circuit_breaker: {window: one hour}\n", "circuit_breaker.window", "ISO 8601"),
    ("unknown time zone", 'change_windows: [{days: [mon], start: "08:00", end: "18:00", timezone: Mars/Olympus}]\n',
     "change_windows.0.timezone", "Mars/Olympus"),
]


@pytest.mark.parametrize(("text", "field", "problem"), [p[1:] for p in INVALID_POLICIES],
                         ids=[p[0] for p in INVALID_POLICIES])
def test_invalid_policy_exits_2_naming_the_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, field: str, problem: str
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    code, out = run("validate", str(path))
    err = capsys.readouterr().err
    assert code == 2 and out == ""
    assert f"{path}: invalid policy" in err
    assert field in err and problem in err


def test_invalid_policy_under_replay_exits_2_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("mode: block\n", encoding="utf-8")
    code, out = run("replay", str(SAMPLE), "--policy", str(path), "--json")
    assert code == 2 and out == ""
    assert str(path) in capsys.readouterr().err


def test_missing_policy_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run("validate", str(tmp_path / "absent.yaml"))
    assert code == 2
    assert f"{tmp_path / 'absent.yaml'}: cannot read policy file" in capsys.readouterr().err


def test_installed_command_validates_with_exit_codes(tmp_path: Path) -> None:
    command = str(Path(sys.executable).with_name("kvguard"))
    good = subprocess.run([command, "validate", str(EXAMPLE_POLICY)], capture_output=True, text=True, check=False)
    assert good.returncode == 0 and "valid policy" in good.stdout
    bad_path = tmp_path / "bad.yaml"
    bad_path.write_text("remediate_threshold: -10\n", encoding="utf-8")
    bad = subprocess.run([command, "validate", str(bad_path)], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and bad.stdout == ""
    assert str(bad_path) in bad.stderr and "remediate_threshold" in bad.stderr


# --- invalid scenarios --------------------------------------------------------------------------

VAULT = (f"{{id: {VAULT_ID}, name: kv-cli, type: Microsoft.KeyVault/vaults, "
         "properties: {tenantId: 3c2b1a09-8f7e-4d6c-9b5a-4e3d2c1b0a9f, publicNetworkAccess: Disabled}}")
INVALID_SCENARIOS = [
    ("step with two keys", f"steps:\n  - advance: PT1M\n  - {{advance: PT1M, delete: {VAULT_ID}}}\n",
     "step 2", "exactly one key"),
    ("unknown step", "steps:\n  - advance: PT1M\n  - wait: PT1M\n", "step 2", "unknown step 'wait'"),
    ("bad duration", "steps:\n  - advance: 5 minutes\n", "step 1 (advance)", "not an ISO 8601 duration"),
    ("clock going back", "steps:\n  - advance: PT0S\n", "step 1 (advance)", "only moves forward"),
    ("write without an id", "steps:\n  - advance: PT1M\n  - write: {name: kv-x, properties: {}}\n",
     "step 2 (write)", "vault.id"),
    ("write of a storage account",
     f"steps:\n  - write: {{id: /subscriptions/{SUBSCRIPTION}/resourceGroups/rg-cli/providers/"
     "Microsoft.Storage/storageAccounts/stcli01, properties: {}}\n",
     "step 1 (write)", "is not the resource id of a Key Vault"),
    ("write that is a list", "steps:\n  - write: [1, 2]\n", "step 1 (write)", "expected a JSON object"),
    ("delete of a sub-resource", f"steps:\n  - delete: {VAULT_ID}/accessPolicies/add\n",
     "step 1 (delete)", "expected a vault's resource id or another resource's"),
    ("events that are not a list", "steps:\n  - events: {id: one}\n", "step 1 (events)", "expected a list"),
    ("a vault that is not one", f"vaults:\n  - {{id: /subscriptions/{SUBSCRIPTION}}}\n",
     "vaults[0]", "is not the resource id of a Key Vault"),
    ("invalid policy", "policy: {mode: panic}\n", "policy", "mode"),
    ("a key given twice", "name: first\nname: second\n", "not valid YAML", "duplicate key 'name'"),
    ("not YAML", "steps: [advance: PT1M\n", "not valid YAML", ""),
    ("not a mapping", "- advance: PT1M\n", "holds a list, not a mapping of scenario keys", ""),
]


@pytest.mark.parametrize(("text", "where", "problem"), [s[1:] for s in INVALID_SCENARIOS],
                         ids=[s[0] for s in INVALID_SCENARIOS])
def test_invalid_scenario_exits_2_naming_the_file_and_the_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, where: str, problem: str
) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_text(f"name: invalid\n{text}" if not text.startswith(("name", "-")) else text, encoding="utf-8")
    code, out = run("replay", str(path), "--json")
    err = capsys.readouterr().err
    assert code == 2 and out == ""
    assert err.startswith(f"kvguard: {path}: ")
    assert where in err and problem in err


def test_one_invalid_scenario_stops_the_whole_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nsteps:\n  - wait: PT1M\n", encoding="utf-8")
    code, out = run("replay", str(SAMPLE), str(path), "--json")
    assert code == 2 and out == ""
    assert f"{path}: step 1" in capsys.readouterr().err


def test_a_valid_scenario_in_json_replays_too(tmp_path: Path) -> None:
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps({"name": "json scenario", "vaults": [], "steps": [{"event": 42}]}), encoding="utf-8")
    code, text = run("replay", str(path), "--json")
    assert code == 0
    event, summary = [json.loads(line) for line in text.splitlines()]
    assert event["outcome"] == "rejected" and summary["summary"]["outcomes"] == {"rejected": 1}


def test_readable_replay_shows_each_event_and_the_totals() -> None:
    code, text = run("replay", str(SAMPLE))
    assert code == 0
    assert "rogue access policy added from an unknown IP" in text
    assert "processed" in text and "self" in text and "revert_access_policy" in text
    assert "2 events: processed 1, self 1" in text


def test_keys_beyond_the_scenario_format_are_ignored_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "annotated.yaml"
    path.write_text("name: annotated\nexpect: {outcomes: [processed]}\nsteps:\n  - advance: PT1M\n",
                    encoding="utf-8")
    code, out = run("replay", str(path), "--json")
    err = capsys.readouterr().err
    assert code == 0
    assert json.loads(out.splitlines()[-1])["summary"]["events"] == 0
    assert f"kvguard: {path}: ignored key(s) expect" in err


def test_alerts_file_is_a_sink_of_its_own_beside_the_detection_topic(tmp_path: Path) -> None:
    alerts = tmp_path / "alerts.jsonl"
    code, text = run("replay", str(SAMPLE), "--json", "--alerts", str(alerts))
    assert code == 0
    first = json.loads(text.splitlines()[0])
    handlers = {a["handler"]: a for a in first["actions"]}
    assert handlers["write_alerts_file"]["status"] == "applied"
    # the simulated Event Grid topic still receives the detections: the file no longer replaces it
    without = json.loads(run("replay", str(SAMPLE), "--json")[1].splitlines()[0])
    assert [a for a in without["actions"] if a["handler"] == "publish_detection"] == [handlers["publish_detection"]]
    written = [json.loads(line) for line in alerts.read_text(encoding="utf-8").splitlines()]
    assert {line["rule"] for line in written} == {f["rule"] for f in first["findings"]}
