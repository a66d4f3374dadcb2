"""azure.yaml, main.parameters.json and the postdeploy hook agree with main.bicep."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import yaml

from tests.infra.bicep_tree import INFRA, ROOT, Tree


def azure_yaml() -> dict:
    return yaml.safe_load((ROOT / "azure.yaml").read_text())


def test_azure_yaml_service_and_infra() -> None:
    config = azure_yaml()
    assert config["name"] == "kvguard"
    service = config["services"]["api"]
    assert {k: service[k] for k in ("project", "language", "host")} == {"project": ".", "language": "python",
                                                                       "host": "function"}
    assert set(service) <= {"project", "language", "host", "hooks"}
    assert config["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}


def test_postdeploy_hooks_exist_and_run_the_second_phase() -> None:
    hooks = azure_yaml()["hooks"]["postdeploy"]
    posix, windows = ROOT / hooks["posix"]["run"], ROOT / hooks["windows"]["run"]
    assert posix.is_file() and os.access(posix, os.X_OK), posix
    assert windows.is_file(), windows
    for script in (posix, windows):
        text = script.read_text()
        assert "azd env set KVGUARD_DEPLOY_EVENT_SUBSCRIPTION true" in text, script.name
        assert "azd provision --no-prompt" in text, script.name
        assert "on_vault_event" in text, script.name


def test_parameters_file_matches_main(trees: dict[str, Tree]) -> None:
    declared = trees["main.bicep"]["parameters"]
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(given) <= set(declared), f"unknown parameters: {sorted(set(given) - set(declared))}"
    required = {name for name, p in declared.items() if p["default"] is None}
    assert required <= set(given), f"required parameters not given: {sorted(required - set(given))}"
    assert given["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert given["location"]["value"] == "${AZURE_LOCATION}"
    assert given["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"
    # The hook's switch is the template's second-phase parameter, off by default.
    assert given["deployEventSubscription"]["value"] == "${KVGUARD_DEPLOY_EVENT_SUBSCRIPTION=false}"
    assert given["mode"]["value"] == "${KVGUARD_MODE=alert}"


def test_outputs_the_hooks_read_exist(trees: dict[str, Tree]) -> None:
    outputs = set(trees["main.bicep"]["outputs"])
    used = set()
    for script in (path for path in (INFRA / "hooks").iterdir() if path.is_file()):
        used |= set(re.findall(r"\b((?:AZURE|KVGUARD)_[A-Z_]+)\b", script.read_text()))
    # Variables the hooks read that the deployment does not output are azd's or the user's own.
    own = {"KVGUARD_DEPLOY_EVENT_SUBSCRIPTION", "KVGUARD_FUNCTION_WAIT_ATTEMPTS", "KVGUARD_PACKAGE_PYTHON"}
    assert used - own <= outputs, f"hooks read outputs that main.bicep lacks: {sorted(used - own - outputs)}"
    assert {"AZURE_FUNCTION_APP_NAME", "AZURE_RESOURCE_GROUP", "KVGUARD_EVENT_SUBSCRIPTION_DEPLOYED"} <= used


def _azd_substitute(value: str, env: dict[str, str]) -> object:
    """What azd makes of an array or object parameter given as `"${NAME=default}"`: the variable
    (or the default) substituted into the string, then read as JSON (azd's bicep provider)."""
    match = re.fullmatch(r"\$\{([A-Z_]+)=(.*)\}", value)
    assert match, value
    name, default = match.groups()
    return json.loads(env.get(name, default))


def test_azd_env_values_set_the_subscriptions_the_resource_groups_and_the_system_topics(
    trees: dict[str, Tree],
) -> None:
    declared = trees["main.bicep"]["parameters"]
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    wired = {"protectedSubscriptionIds": ("KVGUARD_PROTECTED_SUBSCRIPTION_IDS", list, ["0b1c2d3e-0000-4000-8000-1"]),
             "remediationResourceGroups": ("KVGUARD_REMEDIATION_RESOURCE_GROUPS", dict, {"0b1c": ["rg-a"]}),
             "existingSystemTopics": ("KVGUARD_EXISTING_SYSTEM_TOPICS", dict, {"0b1c": {"resourceGroup": "rg",
                                                                                        "name": "topic"}})}
    for parameter, (variable, kind, example) in wired.items():
        value = given[parameter]["value"]
        assert value.startswith(f"${{{variable}="), parameter
        default = _azd_substitute(value, {})
        assert isinstance(default, kind) and not default, parameter  # unset: the template's own default
        assert declared[parameter]["type"] == kind.__name__.replace("list", "array").replace("dict", "object")
        assert _azd_substitute(value, {variable: json.dumps(example)}) == example


def test_postdeploy_without_the_azure_cli_fails_clearly_and_creates_nothing(tmp_path: Path) -> None:
    """Without `az` the hook cannot tell that on_vault_event is indexed: an event subscription made
    then is refused (or points at nothing), so the hook stops before `azd provision`."""
    import subprocess

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "azd-calls"
    azd = bin_dir / "azd"
    azd.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    azd.chmod(0o755)
    hook = ROOT / azure_yaml()["hooks"]["postdeploy"]["posix"]["run"]
    env = {"PATH": str(bin_dir), "AZURE_FUNCTION_APP_NAME": "func-kvguard", "AZURE_RESOURCE_GROUP": "rg-kvguard"}
    result = subprocess.run(["/bin/sh", str(hook)], env=env, capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 1
    assert "the Azure CLI (az) is needed" in result.stderr and "azd hooks run postdeploy" in result.stderr
    assert not calls.exists()  # neither `azd env set` nor `azd provision` ran
    windows = (ROOT / azure_yaml()["hooks"]["postdeploy"]["windows"]["run"]).read_text()
    assert "the Azure CLI (az) is needed" in windows and "Get-Command az" in windows
