"""Policy (and scenario) files are read strictly: a key given twice, an empty file, /dev/null, a
truncated JSON object, a second YAML document, anything but one mapping and a file over the size
limit are each refused with one line naming the file; the threshold rule is stated once; the
published JSON Schema is the model's and current."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import jsonschema
import pytest
import yaml

from kvguard.cli import main, policy_schema
from kvguard.policy import MAX_POLICY_BYTES, Policy, PolicyError, load_policy
from kvguard.scenario import ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_POLICY = ROOT / "samples" / "policy.example.yaml"

REFUSED = [
    ("a key twice in YAML", "policy.yaml", "mode: alert\nmode: remediate\n",
     "not valid YAML (found duplicate key 'mode' at line 2 column 1)"),
    ("a nested key twice", "policy.yaml", "history:\n  grant_window: PT10M\n  grant_window: PT1M\n",
     "found duplicate key 'grant_window'"),
    ("a key twice in JSON", "policy.json", '{"mode": "alert", "mode": "remediate"}',
     "not valid JSON (found duplicate key 'mode')"),
    ("an empty file", "policy.yaml", "", "empty: a policy file holds one mapping of keys"),
    ("only white space", "policy.yaml", "  \n\n", "empty: a policy file holds one mapping of keys"),
    ("only comments", "policy.yaml", "# mode: remediate\n", "empty (only comments)"),
    ("a truncated JSON object", "policy.json", '{"mode": "alert", "dry_run"', "not valid JSON ("),
    ("two YAML documents", "policy.yaml", "mode: alert\n---\nmode: remediate\n",
     "holds 2 YAML documents (separated by ---): a policy file is one"),
    ("a list", "policy.yaml", "- mode: alert\n", "holds a list, not a mapping of policy keys"),
    ("a string", "policy.yaml", "remediate\n", "holds a string, not a mapping of policy keys"),
    ("a JSON array", "policy.json", "[]", "holds a list, not a mapping of policy keys"),
]


@pytest.mark.parametrize(("name", "text", "problem"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_a_policy_file_that_is_not_one_mapping_of_unique_keys_is_refused_in_one_line(
    tmp_path: Path, name: str, text: str, problem: str
) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")

    with pytest.raises(PolicyError) as refused:
        load_policy(path)

    message = str(refused.value)
    assert message.startswith(f"{path}: ") and problem in message
    assert "\n" not in message


def test_dev_null_is_not_a_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "/dev/null"], io.StringIO()) == 2
    assert capsys.readouterr().err.splitlines() == [
        "kvguard: /dev/null: not a regular file (a device such as /dev/null, a FIFO or a directory): a policy "
        "file is a YAML or JSON file"]


def test_a_policy_over_the_size_limit_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    # Not YAML at all from its first line: a parser would report that, the size check comes first.
    path.write_text("mode: [\n" + "x" * (MAX_POLICY_BYTES + 1), encoding="utf-8")

    started = time.perf_counter()
    with pytest.raises(PolicyError) as refused:
        load_policy(path)

    assert str(refused.value) == f"{path}: 1.0 MiB, over the 1.0 MiB a policy file may be"
    assert time.perf_counter() - started < 1
    path.write_text("mode: alert\n" + "#" * (MAX_POLICY_BYTES - 20) + "\n", encoding="utf-8")
    assert load_policy(path).mode == "alert"  # just under the limit is read


def test_a_scenario_with_a_key_twice_in_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "scenario.json"
    path.write_text('{"name": "a", "baselined": false, "baselined": true, "steps": []}', encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"scenario\.json: not valid JSON \(found duplicate key 'baselined'\)$"):
        load_scenario(path)


def test_remediate_threshold_may_be_below_alert_threshold_in_sample_readme_and_validator(tmp_path: Path) -> None:
    """The rule decided once: a remediated change is always alerted too (decision.decide), so
    remediate_threshold below alert_threshold is allowed; the sample and the README say so."""
    sample = SAMPLE_POLICY.read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "remediate_threshold may be below alert_threshold" in sample
    assert "may not be below" not in sample
    assert "may be below `alert_threshold`" in readme
    swapped = tmp_path / "swapped.yaml"
    swapped.write_text(sample.replace("alert_threshold: 40", "alert_threshold: 80"), encoding="utf-8")
    policy = load_policy(swapped)
    assert (policy.alert_threshold, policy.remediate_threshold) == (80, 70)


def test_policy_schema_json_is_the_generated_one() -> None:
    out = io.StringIO()
    assert main(["schema"], out) == 0
    committed = (ROOT / "policy.schema.json").read_text(encoding="utf-8")
    assert out.getvalue() == committed, "policy.schema.json is out of date with the policy model: run `make docs`"
    assert json.loads(committed) == policy_schema()


def test_the_schema_checks_what_the_validator_checks() -> None:
    schema = policy_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    check = jsonschema.Draft202012Validator(schema)
    sample = json.loads(json.dumps(yaml.safe_load(SAMPLE_POLICY.read_text(encoding="utf-8")), default=str))
    assert list(check.iter_errors(sample)) == []
    assert set(schema["properties"]) == set(Policy.model_fields)
    for bad in ({"mode": "fix"}, {"modee": "alert"}, {"alert_threshold": 101}, {"rules": {"KV-AP-99": {}}}):
        assert list(check.iter_errors(bad)), bad
