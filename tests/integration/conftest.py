"""Fixtures of the integration tests, one section per local service."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.armfake import ArmFake
from tests.integration.azurite import Azurite, running_azurite

# --- Azure Table Storage (Azurite) ------------------------------------------------------------


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """One azurite-table for the whole run; tests keep apart by using their own table prefix."""
    with running_azurite(tmp_path_factory.mktemp("azurite")) as service:
        yield service


@pytest.fixture
def azurite_connection_string(azurite: Azurite) -> str:
    return azurite.connection_string


@pytest.fixture
def table_prefix() -> str:
    """A table-name prefix of this test's own: tables are cheap, and tests stay independent."""
    return "t" + uuid.uuid4().hex[:16]


@pytest.fixture
def own_azurite(tmp_path: Path) -> Iterator[Azurite]:
    """An azurite-table for one test alone, free to be stopped halfway."""
    with running_azurite(tmp_path) as service:
        yield service


# --- the command line on real adapters --------------------------------------------------------


def cli_environment(fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: str) -> Path:
    """The environment of an operator's shell that runs `kvguard` against the ARM fake: no other
    KVGUARD_* setting leaks in, the fake's CA is trusted, state is a SQLite file (its path is
    returned), and `settings` are set as KVGUARD_<NAME>."""
    for name in list(os.environ):
        if name.startswith("KVGUARD_"):
            monkeypatch.delenv(name)
    path = tmp_path / "state" / "kvguard.db"
    monkeypatch.setenv("KVGUARD_STATE_BACKEND", "sqlite")
    monkeypatch.setenv("KVGUARD_SQLITE_PATH", str(path))
    monkeypatch.setenv("KVGUARD_ARM_ENDPOINT", fake.base_url)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake.write_ca_bundle(tmp_path / "ca.pem")))
    for name, value in settings.items():
        monkeypatch.setenv(f"KVGUARD_{name.upper()}", value)
    return path
