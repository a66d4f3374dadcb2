"""azure.yaml, main.parameters.json and the postdeploy hook agree with main.bicep."""

from __future__ import annotations

import json
import os
import re

import yaml

from tests.infra.bicep_tree import INFRA, ROOT, Tree


def azure_yaml() -> dict:
    return yaml.safe_load((ROOT / "azure.yaml").read_text())


def test_azure_yaml_service_and_infra() -> None:
    config = azure_yaml()
    assert config["name"] == "kvguard"
    assert config["services"]["api"] == {"project": ".", "language": "python", "host": "function"}
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
    for script in (INFRA / "hooks").iterdir():
        used |= set(re.findall(r"\b((?:AZURE|KVGUARD)_[A-Z_]+)\b", script.read_text()))
    # Variables the hooks read that the deployment does not output are azd's or the user's own.
    own = {"KVGUARD_DEPLOY_EVENT_SUBSCRIPTION", "KVGUARD_FUNCTION_WAIT_ATTEMPTS"}
    assert used - own <= outputs, f"hooks read outputs that main.bicep lacks: {sorted(used - own - outputs)}"
    assert {"AZURE_FUNCTION_APP_NAME", "AZURE_RESOURCE_GROUP", "KVGUARD_EVENT_SUBSCRIPTION_DEPLOYED"} <= used
