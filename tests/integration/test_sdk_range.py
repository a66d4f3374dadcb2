"""The Azure SDKs under test lie inside the ranges requirements.txt declares. `make test` runs the
adapter tests twice: with the newest versions the ranges admit (.venv), and with the lowest
(KVGUARD_SDK_FLOOR_RUN set: each SDK must then be exactly at its declared floor)."""

from __future__ import annotations

import os
import re
from importlib.metadata import version
from pathlib import Path

import pytest

SDKS = ("azure-mgmt-keyvault", "azure-mgmt-security", "azure-eventgrid", "azure-data-tables", "azure-mgmt-monitor",
        "azure-mgmt-authorization", "azure-mgmt-resource-deploymentstacks",
        "azure-mgmt-resource", "azure-mgmt-eventgrid")
REQUIREMENTS = (Path(__file__).parents[2] / "requirements.txt").read_text()


def release(text: str) -> tuple[int, int, int]:
    major, minor, patch = ([int(part) for part in text.split(".")[:3]] + [0, 0])[:3]
    return major, minor, patch


@pytest.mark.parametrize("sdk", SDKS)
def test_the_installed_sdk_is_inside_its_declared_range(sdk: str) -> None:
    found = re.search(rf"^{sdk}>=([\d.]+),<([\d.]+)$", REQUIREMENTS, re.M)
    assert found is not None, f"requirements.txt declares no range for {sdk}"
    installed, low, high = release(version(sdk)), release(found[1]), release(found[2])
    assert low <= installed < high
    if os.environ.get("KVGUARD_SDK_FLOOR_RUN"):
        assert installed == low, f"the floor run has {sdk} {version(sdk)}, not {found[1]}"
