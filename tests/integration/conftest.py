"""Fixtures of the integration tests, one section per local service."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.data.tables import TableServiceClient

from kvguard.adapters.tables import TablesStateStore
from tests.integration.azurite import Azurite, Counted, running_azurite

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
def counted(azurite_connection_string: str, table_prefix: str) -> Iterator[Counted]:
    """A Tables store on this test's tables that notes every request it sends."""
    counted = Counted(azurite_connection_string, table_prefix)
    yield counted
    counted.store.close()


@pytest.fixture
def other(azurite_connection_string: str, table_prefix: str) -> Iterator[TablesStateStore]:
    """Another instance on the same tables: what another worker sees and writes."""
    store = TablesStateStore.from_connection_string(azurite_connection_string, table_prefix=table_prefix)
    yield store
    store.close()


@pytest.fixture
def service(azurite_connection_string: str) -> Iterator[TableServiceClient]:
    """The Table service itself, to look at (or write) entities as they are stored."""
    client = TableServiceClient.from_connection_string(azurite_connection_string)
    yield client
    client.close()


@pytest.fixture
def own_azurite(tmp_path: Path) -> Iterator[Azurite]:
    """An azurite-table for one test alone, free to be stopped halfway."""
    with running_azurite(tmp_path) as service:
        yield service

