"""The policy file: the README's defaults, strict validation whose errors name the file and field."""

from __future__ import annotations

from datetime import time, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from kvguard.policy import ChangeWindow, Policy, PolicyError, load_policy, parse_duration, policy_from_data


def test_defaults_are_the_ones_design_md_documents() -> None:
    policy = Policy()
    assert policy.mode == "alert"
    assert policy.dry_run is False
    assert (policy.alert_threshold, policy.remediate_threshold) == (40, 70)
    assert policy.own_principal_ids == []
    assert policy.approved_callers == []
    assert policy.allowed_networks == []
    assert policy.allowed_ip_rules == []
    assert policy.min_ip_prefix == 24
    assert policy.allowed_subnet_subscriptions == []
    assert policy.change_windows == []
    assert policy.excluded_vaults == []
    assert policy.history.grant_window == timedelta(minutes=10)
    assert policy.history.burst_window == timedelta(minutes=5)
    assert policy.history.burst_threshold == 5
    assert policy.circuit_breaker.max_remediations == 3
    assert policy.circuit_breaker.window == timedelta(hours=1)
    assert policy.rules == {}


def test_the_documented_example_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "mode: remediate\n"
        "dry_run: true\n"
        "alert_threshold: 30\n"
        "remediate_threshold: 80\n"
        "own_principal_ids: ['AB12CD34-0000-4000-8000-00000000FEED']\n"
        "approved_callers: [' 5f5f5f5f-1111-4222-8333-444444444444 ']\n"
        "allowed_networks: [10.40.0.0/16, 192.0.2.10]\n"
        "allowed_ip_rules: [198.51.100.0/24]\n"
        "min_ip_prefix: 28\n"
        "change_windows: [{days: [Mon, tuesday], start: '08:00', end: '18:00', timezone: Europe/Berlin}]\n"
        "excluded_vaults: ['kv-sandbox-*']\n"
        "history: {grant_window: PT15M, burst_window: PT2M, burst_threshold: 4}\n"
        "circuit_breaker: {max_remediations: 2, window: P1D}\n"
        "rules:\n"
        "  KV-AP-03: {enabled: true, severity: high, remediate: false}\n",
        encoding="utf-8",
    )
    policy = load_policy(path)
    assert policy.mode == "remediate" and policy.dry_run is True
    assert policy.own_principal_ids == ["ab12cd34-0000-4000-8000-00000000feed"]
    assert policy.approved_callers == ["5f5f5f5f-1111-4222-8333-444444444444"]
    assert policy.allowed_networks == ["10.40.0.0/16", "192.0.2.10/32"]
    assert policy.change_windows == [ChangeWindow(days=["mon", "tue"], start=time(8), end=time(18),
                                                  timezone="Europe/Berlin")]
    assert policy.history.grant_window == timedelta(minutes=15)
    assert policy.circuit_breaker.window == timedelta(days=1)
    assert policy.rule("KV-AP-03").severity == "high"
    assert policy.rule("KV-AP-03").remediate is False
    assert policy.rule("KV-AP-01").enabled is True and policy.rule("KV-AP-01").remediate is None


def test_json_is_a_valid_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text('{"mode": "observe", "circuit_breaker": {"window": "PT30M"}}', encoding="utf-8")
    policy = load_policy(path)
    assert policy.mode == "observe"
    assert policy.circuit_breaker.window == timedelta(minutes=30)


def test_an_empty_mapping_is_the_default_policy(tmp_path: Path) -> None:
    path = tmp_path / "defaults.yaml"
    path.write_text("{}  # every setting at its default\n", encoding="utf-8")
    assert load_policy(path) == Policy()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT5M", timedelta(minutes=5)),
        ("PT1H", timedelta(hours=1)),
        ("P1D", timedelta(days=1)),
        ("PT1H30M", timedelta(hours=1, minutes=30)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("PT45S", timedelta(seconds=45)),
        ("PT0.5M", timedelta(seconds=30)),
        ("pt10m", timedelta(minutes=10)),
        (" PT5M ", timedelta(minutes=5)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "P", "PT", "5M", "PT5", "P1W", "PT-5M", "1 hour", "P1H"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="ISO 8601 duration"):
        parse_duration(text)


def test_a_bad_duration_in_the_policy_names_the_field() -> None:
    with pytest.raises(PolicyError) as error:
        policy_from_data({"history": {"burst_window": "five minutes"}}, "p.yaml")
    assert "history.burst_window" in str(error.value)
    assert "ISO 8601" in str(error.value)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"mode": "alert", "dryrun": True}, "dryrun"),
        ({"history": {"grant_windw": "PT5M"}}, "history.grant_windw"),
        ({"circuit_breaker": {"max": 2}}, "circuit_breaker.max"),
        ({"rules": {"KV-AP-03": {"enable": False}}}, "rules.KV-AP-03.enable"),
        ({"change_windows": [{"days": ["mon"], "start": "08:00", "end": "18:00", "tz": "UTC"}]},
         "change_windows.0.tz"),
    ],
)
def test_unknown_keys_are_refused_naming_the_key(data: dict[str, Any], field: str) -> None:
    with pytest.raises(PolicyError) as error:
        policy_from_data(data, "team-policy.yaml")
    message = str(error.value)
    assert message.startswith("team-policy.yaml: invalid policy")
    assert f"  {field}: unknown key" in message


@pytest.mark.parametrize("cidr", ["10.0.0.0/33", "300.1.1.1", "corp-network", ""])
def test_bad_cidrs_are_refused(cidr: str) -> None:
    for key in ("allowed_networks", "allowed_ip_rules"):
        with pytest.raises(PolicyError) as error:
            policy_from_data({key: ["10.1.0.0/16", cidr]}, "p.yaml")
        assert f"{key}: " in str(error.value)
        assert repr(cidr) in str(error.value)


def test_cidrs_are_normalised() -> None:
    policy = Policy(allowed_ip_rules=["203.0.113.9/24", " 198.51.100.7 "])
    assert policy.allowed_ip_rules == ["203.0.113.0/24", "198.51.100.7/32"]


def test_a_bad_timezone_is_refused() -> None:
    window = {"days": ["sat"], "start": "10:00", "end": "12:00", "timezone": "Europe/Atlantis"}
    with pytest.raises(PolicyError) as error:
        policy_from_data({"change_windows": [window]}, "p.yaml")
    assert "change_windows.0.timezone" in str(error.value)
    assert "Europe/Atlantis" in str(error.value)


def test_a_bad_day_is_refused() -> None:
    with pytest.raises(ValidationError):
        ChangeWindow(days=["someday"], start=time(8), end=time(9))  # type: ignore[list-item]


def test_remediate_threshold_may_be_below_alert_threshold() -> None:
    # the README allows it; the decision then alerts whenever it remediates (see test_risk_decision)
    policy = policy_from_data({"alert_threshold": 60, "remediate_threshold": 50}, "p.yaml")
    assert (policy.alert_threshold, policy.remediate_threshold) == (60, 50)


@pytest.mark.parametrize(("key", "value"), [("alert_threshold", 101), ("remediate_threshold", -1),
                                            ("min_ip_prefix", 33), ("mode", "loud"), ("dry_run", "sometimes")])
def test_out_of_range_values_name_the_field(key: str, value: Any) -> None:
    with pytest.raises(PolicyError) as error:
        policy_from_data({key: value}, "p.yaml")
    assert f"\n  {key}: " in str(error.value)


def test_an_unknown_rule_id_is_refused() -> None:
    with pytest.raises(PolicyError) as error:
        policy_from_data({"rules": {"KV-AP-99": {"enabled": False}}}, "p.yaml")
    assert "KV-AP-99" in str(error.value)
    assert "rules" in str(error.value)


def test_load_policy_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    with pytest.raises(PolicyError, match=r"absent\.yaml: cannot read policy file"):
        load_policy(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("mode: [alert\n", encoding="utf-8")
    with pytest.raises(PolicyError, match=r"broken\.yaml: not valid YAML"):
        load_policy(broken)
    listed = tmp_path / "listed.yaml"
    listed.write_text("- mode: alert\n", encoding="utf-8")
    with pytest.raises(PolicyError, match=r"listed\.yaml: holds a list, not a mapping of policy keys"):
        load_policy(listed)
    typo = tmp_path / "typo.yaml"
    typo.write_text("mode: remediate\ncircuit_breaker: {window: soon}\n", encoding="utf-8")
    with pytest.raises(PolicyError) as error:
        load_policy(typo)
    assert str(error.value).startswith(f"{typo}: invalid policy")
    assert "circuit_breaker.window" in str(error.value)


def test_merged_lays_overrides_over_the_policy() -> None:
    base = Policy(mode="remediate", approved_callers=["c0c0c0c0-0000-4000-8000-000000000001"],
                  history={"grant_window": "PT20M", "burst_threshold": 7},  # type: ignore[arg-type]
                  rules={"KV-AP-03": {"severity": "high"}})  # type: ignore[dict-item]
    merged = base.merged({"dry_run": True, "history": {"burst_window": "PT1M"},
                          "rules": {"KV-PROT-01": {"remediate": True}}})
    assert merged.mode == "remediate" and merged.dry_run is True
    assert merged.approved_callers == base.approved_callers
    assert merged.history.grant_window == timedelta(minutes=20)
    assert merged.history.burst_threshold == 7
    assert merged.history.burst_window == timedelta(minutes=1)
    assert merged.rule("KV-AP-03").severity == "high"
    assert merged.rule("KV-PROT-01").remediate is True
    assert base.dry_run is False and base.rules.keys() == {"KV-AP-03"}


def test_merged_validates_the_result() -> None:
    with pytest.raises(ValidationError):
        Policy().merged({"remediate_threshold": 101})
    with pytest.raises(ValidationError):
        Policy().merged({"history": {"burst_threshold": 1}})


def test_policy_from_data_merges_over_a_base() -> None:
    base = Policy(mode="observe", min_ip_prefix=16)
    policy = policy_from_data({"dry_run": True}, "scenario.yaml", base=base)
    assert (policy.mode, policy.min_ip_prefix, policy.dry_run) == ("observe", 16, True)
    with pytest.raises(PolicyError, match=r"scenario\.yaml: invalid policy"):
        policy_from_data({"modes": "alert"}, "scenario.yaml", base=base)


def test_the_policy_is_frozen() -> None:
    policy = Policy()
    with pytest.raises(ValidationError):
        policy.mode = "remediate"  # type: ignore[misc]
