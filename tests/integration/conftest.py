"""Fixtures of the integration tests, one section per local service."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

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

